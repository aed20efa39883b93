//! The server processes a figure runs against, and the links in front of them.
//!
//! One process ([`Nodes::one`]), or several on one Redis (`--nodes K`,
//! [`Nodes::start`]): each started with `--cluster`, and in front of them one set of
//! links per node whose new connections go to that node first and to the next ones
//! when it does not answer, as a load balancer would. Session `i` comes in through node
//! `i % K`'s links, so the two people of a call (sessions `2j`, `2j + 1`) are on
//! different processes. What a figure reads of "the server" (memory, CPU, counters) is
//! summed over the processes.

use super::host::{self, Who};
use super::links::Links;
use super::proxy::{Action, Traffic};
use super::restart::has_store;
use super::settings::Settings;
use super::target::{metric, Server, ServerSpec};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

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

/// `url` naming the next database of the same Redis: a figure that runs one process
/// and then a cluster on one Redis puts the cluster there, since one database serves
/// one kind of server (`hf:layout`).
pub(super) fn next_database(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let host_from = base.find("://").map_or(0, |i| i + 3);
    let (head, db) = match base[host_from..].find('/') {
        Some(i) => {
            let (head, path) = base.split_at(host_from + i);
            (head, path[1..].parse::<u32>().unwrap_or(0))
        }
        None => (base, 0),
    };
    match query {
        Some(q) => format!("{head}/{}?{q}", db + 1),
        None => format!("{head}/{}", db + 1),
    }
}

impl Nodes {
    /// One process of `spec` (not a cluster node) and the links in front of it.
    pub async fn one(spec: &ServerSpec, settings: &Settings) -> io::Result<Nodes> {
        let server = Server::start(spec).await?;
        Self::over(vec![server], settings).await
    }

    /// One process of `spec` with no proxy in front: its sessions break their own
    /// sockets (a storm's drops; see [`Links::Direct`]).
    pub async fn direct(spec: &ServerSpec) -> io::Result<Nodes> {
        let server = Server::start(spec).await?;
        Ok(Nodes {
            links: vec![Links::Direct(server.addr)],
            path: server.path.clone(),
            servers: vec![server],
        })
    }

    /// True when the sessions break their own sockets (no proxy).
    pub fn direct_links(&self) -> bool {
        self.links.iter().all(|l| matches!(l, Links::Direct(_)))
    }

    /// Starts `k` processes of `spec` (which must name a Redis store) as cluster nodes,
    /// and their links.
    pub async fn start(spec: &ServerSpec, k: usize, settings: &Settings) -> io::Result<Nodes> {
        if !has_store(spec) {
            return Err(io::Error::other(
                "--nodes needs a Redis store: pass --store redis://127.0.0.1:PORT",
            ));
        }
        let spec = cluster_spec(spec);
        let mut servers = Vec::with_capacity(k);
        for _ in 0..k {
            servers.push(Server::start(&spec).await?);
        }
        Self::over(servers, settings).await
    }

    async fn over(servers: Vec<Server>, settings: &Settings) -> io::Result<Nodes> {
        let k = servers.len();
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let mut links = Vec::with_capacity(k);
        for i in 0..k {
            let order: Vec<SocketAddr> = (0..k).map(|j| addrs[(i + j) % k]).collect();
            match Links::start_to(&order, settings).await {
                Ok(l) => links.push(l),
                Err(e) => {
                    for l in links {
                        l.shutdown().await;
                    }
                    for s in servers {
                        s.stop().await;
                    }
                    return Err(e);
                }
            }
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

    pub fn path(&self) -> &str {
        &self.path
    }

    /// True when every process is a child of this tool (not `--target`).
    pub fn own(&self) -> bool {
        self.servers.iter().all(|s| s.pid().is_some())
    }

    /// Resident memory of every process together.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.servers.iter().map(Server::rss_bytes).sum()
    }

    /// CPU time of every process together.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.servers.iter().map(Server::cpu_time).sum()
    }

    /// Open file descriptors of every process together.
    pub fn fd_count(&self) -> Option<usize> {
        self.servers.iter().map(Server::fd_count).sum()
    }

    /// Every process's `/metrics`, each series summed over them (counters and the
    /// per-process gauges add up; the `holdfast_cluster_*` view is the same on every
    /// node, so it is taken from the first).
    pub async fn metrics(&self) -> io::Result<HashMap<String, f64>> {
        let mut sum: HashMap<String, f64> = HashMap::new();
        for (i, server) in self.servers.iter().enumerate() {
            for (name, value) in server.metrics().await? {
                if name.starts_with("holdfast_cluster_") && i > 0 {
                    continue;
                }
                *sum.entry(name).or_default() += value;
            }
        }
        Ok(sum)
    }

    /// Calls not ended in `m`: on a cluster, all of them in Redis; on one process, its
    /// active calls.
    pub fn calls_in(&self, m: &HashMap<String, f64>) -> Option<f64> {
        if self.servers.len() > 1 {
            metric(m, "holdfast_cluster_calls")
        } else {
            metric(m, "holdfast_calls{state=\"active\"}")
        }
    }

    /// Applies `action` to every link at once.
    pub async fn apply_all(&self, action: Action) -> usize {
        let asks = self.links.iter().map(|l| l.apply_all(action));
        futures_util::future::join_all(asks).await.into_iter().sum()
    }

    pub async fn traffic(&self) -> Traffic {
        let mut sum = Traffic::default();
        for l in &self.links {
            sum.add(&l.traffic().await);
        }
        sum
    }

    pub async fn slowest_upstream_connect(&self) -> Duration {
        let mut max = Duration::ZERO;
        for l in &self.links {
            max = max.max(l.slowest_upstream_connect().await);
        }
        max
    }

    /// CPU time of this process plus every proxy worker.
    pub fn tool_cpu(&self) -> Option<Duration> {
        let workers: Duration = self.links.iter().map(Links::workers_cpu).sum();
        Some(host::cpu_time(Who::ThisTool)? + workers)
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

#[cfg(test)]
mod tests {
    use super::next_database;

    #[test]
    fn the_next_database_of_a_redis_url() {
        assert_eq!(
            next_database("redis://127.0.0.1:7000"),
            "redis://127.0.0.1:7000/1"
        );
        assert_eq!(next_database("redis://h:1/3"), "redis://h:1/4");
        assert_eq!(next_database("redis://:pw@h:1/"), "redis://:pw@h:1/1");
        assert_eq!(
            next_database("redis://h:1/2?protocol=resp3"),
            "redis://h:1/3?protocol=resp3"
        );
    }
}
