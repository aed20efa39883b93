//! Dead-link detection: every link is black-holed (nothing passes, nothing closes, and
//! so do the reconnects); how long until each client's engine and the server notice.

use super::fleet::{io_err, run_prefix, Fleet};
use super::links::Links;
use super::proxy::Action;
use super::report::DeadLinkReport;
use super::session::Phase;
use super::settings::Settings;
use super::stats::{self, kth};
use super::target::{metric, Server, ServerSpec};
use crate::native::now_ms;
use std::io;
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

/// Black-holes every link of `settings.sessions` paired sessions (nothing passes,
/// nothing closes, and so do the reconnects) and measures when each side notices.
pub async fn dead_link(spec: &ServerSpec, settings: &Settings) -> io::Result<DeadLinkReport> {
    let server = Server::start(spec).await?;
    let result = dead_link_on(&server, settings).await;
    server.stop().await;
    result
}

/// How often the server's `/metrics` is read while waiting for it to notice.
const POLL: Duration = Duration::from_millis(20);

async fn dead_link_on(server: &Server, settings: &Settings) -> io::Result<DeadLinkReport> {
    let proxy = Links::start(server.addr, settings).await?;
    let path = server.path.clone();
    let url = |idx| proxy.url_for(idx, &path);
    let mut fleet = match Fleet::launch(url, settings, &run_prefix("dl")).await {
        Ok(f) => f,
        Err(e) => {
            proxy.shutdown().await;
            return Err(e);
        }
    };
    let n = fleet.n;
    fleet.set(Phase::Send);
    tokio::time::sleep(settings.warmup).await;
    let dead_before = server
        .metrics()
        .await
        .ok()
        .and_then(|m| metric(&m, "holdfast_dead_links_total"))
        .ok_or_else(|| io_err("the server's /metrics has no holdfast_dead_links_total"))?;
    fleet.absorb_pending();
    let t0 = now_ms();
    fleet.tally.since = t0;
    proxy.set_blackhole_new(true).await;
    proxy.apply_all(Action::Blackhole).await;
    let deadline = TokioInstant::now() + settings.resume_timeout;
    let mut server_times: Vec<f64> = Vec::new();
    while TokioInstant::now() < deadline {
        fleet.absorb_pending();
        if let Ok(m) = server.metrics().await {
            let at = now_ms();
            let dead = metric(&m, "holdfast_dead_links_total").unwrap_or(dead_before) - dead_before;
            while (server_times.len() as f64) < dead {
                server_times.push(at.saturating_sub(t0) as f64);
            }
        }
        if fleet.tally.disconnected_count >= n && server_times.len() >= n {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    fleet.absorb_pending();
    let client: Vec<f64> = fleet
        .tally
        .disconnected
        .iter()
        .flatten()
        .map(|at| at.saturating_sub(t0) as f64)
        .collect();
    let report = DeadLinkReport {
        sessions: n,
        rate_per_session: settings.rate,
        client: stats::summarize(&client),
        client_noticed: client.len(),
        server_median_ms: kth(&server_times, n.div_ceil(2)),
        server_max_ms: if server_times.len() >= n {
            kth(&server_times, n)
        } else {
            None
        },
        server_noticed: server_times.len().min(n),
        poll_ms: POLL.as_millis() as u64,
    };
    fleet.finish().await;
    proxy.shutdown().await;
    Ok(report)
}
