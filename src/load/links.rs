//! The proxies between the sessions and the server, through which links are dropped:
//! one in this process, or shards in worker processes; or none, for a storm whose
//! clients break their own sockets.

use super::host::{self, Who};
use super::proxy::{Action, Proxy, Traffic};
use super::settings::Settings;
use super::worker::RemoteProxy;
use std::io;
use std::time::Duration;

/// The proxies between the sessions and the server: one in this process, or shards in
/// worker processes (session `i` uses shard `i % count`).
pub(super) enum Links {
    Local(Proxy),
    Remote(Vec<RemoteProxy>),
    /// No proxy: the sessions connect to the server itself and break their own sockets
    /// ([`crate::native::NativeClient::break_link`]); nothing here can drop or
    /// blackhole a link, and the traffic is what the clients' sockets counted.
    Direct(std::net::SocketAddr),
}

impl Links {
    pub(super) async fn start(
        upstream: std::net::SocketAddr,
        settings: &Settings,
    ) -> io::Result<Links> {
        Self::start_to(&[upstream], settings).await
    }

    /// Links whose new connections go to the first of `upstreams` that accepts them.
    pub(super) async fn start_to(
        upstreams: &[std::net::SocketAddr],
        settings: &Settings,
    ) -> io::Result<Links> {
        match &settings.proxy_workers {
            None => Ok(Links::Local(Proxy::start_to(upstreams.to_vec()).await?)),
            Some(w) => {
                let mut shards = Vec::with_capacity(w.count.max(1));
                for _ in 0..w.count.max(1) {
                    shards.push(RemoteProxy::start(&w.bin, upstreams).await?);
                }
                Ok(Links::Remote(shards))
            }
        }
    }

    pub(super) fn url_for(&self, idx: usize, path: &str) -> String {
        let addr = match self {
            Links::Local(p) => p.addr(),
            Links::Remote(shards) => shards[idx % shards.len()].addr(),
            Links::Direct(addr) => *addr,
        };
        format!("ws://{addr}{path}")
    }

    /// Applies `action` to every link at once (all shards in parallel).
    pub(super) async fn apply_all(&self, action: Action) -> usize {
        match self {
            Links::Local(p) => p.apply_all(action),
            Links::Direct(_) => 0,
            Links::Remote(shards) => {
                let asks = shards.iter().map(|s| s.apply_all(action));
                futures_util::future::join_all(asks)
                    .await
                    .into_iter()
                    .map(|r| r.unwrap_or(0))
                    .sum()
            }
        }
    }

    pub(super) async fn set_blackhole_new(&self, on: bool) {
        match self {
            Links::Local(p) => p.set_blackhole_new(on),
            Links::Direct(_) => {}
            Links::Remote(shards) => {
                let asks = shards.iter().map(|s| s.set_blackhole_new(on));
                futures_util::future::join_all(asks).await;
            }
        }
    }

    pub(super) async fn traffic(&self) -> Traffic {
        match self {
            Links::Local(p) => p.traffic(),
            Links::Direct(_) => {
                let t = crate::native::socket_traffic();
                Traffic {
                    bytes_up: t.bytes_up,
                    bytes_down: t.bytes_down,
                    chunks_up: t.writes_up,
                    chunks_down: t.reads_down,
                }
            }
            Links::Remote(shards) => {
                let mut sum = Traffic::default();
                for s in shards {
                    if let Ok(t) = s.traffic().await {
                        sum.add(&t);
                    }
                }
                sum
            }
        }
    }

    pub(super) async fn slowest_upstream_connect(&self) -> Duration {
        match self {
            Links::Local(p) => p.slowest_upstream_connect(),
            Links::Direct(_) => Duration::ZERO,
            Links::Remote(shards) => {
                let mut max = Duration::ZERO;
                for s in shards {
                    max = max.max(s.slowest_upstream_connect().await.unwrap_or_default());
                }
                max
            }
        }
    }

    /// CPU time of the proxy workers alone.
    pub(super) fn workers_cpu(&self) -> Duration {
        match self {
            Links::Local(_) | Links::Direct(_) => Duration::ZERO,
            Links::Remote(shards) => shards
                .iter()
                .filter_map(|s| host::cpu_time(Who::Process(s.pid())))
                .sum(),
        }
    }

    pub(super) async fn shutdown(self) {
        match self {
            Links::Local(p) => p.shutdown().await,
            Links::Direct(_) => {}
            Links::Remote(shards) => {
                futures_util::future::join_all(shards.into_iter().map(RemoteProxy::shutdown)).await;
            }
        }
    }
}
