//! Several server processes on one Redis (`--nodes K`): each started with `--cluster`,
//! and in front of them one set of links per node whose new connections go to that
//! node first and to the next ones when it does not answer, as a load balancer would.
//! Session `i` comes in through node `i % K`'s links, so the two people of a call
//! (sessions `2j`, `2j + 1`) are on different processes.

use super::links::Links;
use super::settings::Settings;
use super::target::{Server, ServerSpec};
use std::io;
use std::net::SocketAddr;

/// How soon a process that died is noticed by the others (`--lease-ttl`).
const LEASE: &str = "3s";

pub(super) struct Nodes {
    pub servers: Vec<Server>,
    links: Vec<Links>,
    path: String,
}

/// `spec` as a node of a cluster.
pub(super) fn cluster_spec(spec: &ServerSpec) -> ServerSpec {
    match spec {
        ServerSpec::Spawn { bin, args } => {
            let mut args = args.clone();
            args.extend(["--cluster".into(), "--lease-ttl".into(), LEASE.into()]);
            ServerSpec::Spawn {
                bin: bin.clone(),
                args,
            }
        }
        other => other.clone(),
    }
}

impl Nodes {
    /// Starts `k` processes of `spec` (which must name a Redis store) and their links.
    pub async fn start(spec: &ServerSpec, k: usize, settings: &Settings) -> io::Result<Nodes> {
        let spec = cluster_spec(spec);
        let mut servers = Vec::with_capacity(k);
        for _ in 0..k {
            servers.push(Server::start(&spec).await?);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let mut links = Vec::with_capacity(k);
        for i in 0..k {
            let order: Vec<SocketAddr> = (0..k).map(|j| addrs[(i + j) % k]).collect();
            links.push(Links::start_to(&order, settings).await?);
        }
        let path = servers[0].path.clone();
        Ok(Nodes {
            servers,
            links,
            path,
        })
    }

    /// The URL session `idx` connects to.
    pub fn url_for(&self, idx: usize) -> String {
        let k = self.links.len();
        self.links[idx % k].url_for(idx / k, &self.path)
    }

    pub async fn shutdown(self) {
        for links in self.links {
            links.shutdown().await;
        }
        for server in self.servers {
            server.stop().await;
        }
    }
}
