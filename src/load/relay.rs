//! Relay latency: N sessions paired into active calls send payloads carrying their
//! send time; the figure is send→receive (client engine → server → partner's engine,
//! all through the in-tool proxy) over a window of steady traffic, on the server as
//! started (run it once per store to see what a store adds).

use super::fleet::{fleet_finish, outcome, run_prefix, Fleet};
use super::links::Links;
use super::report::RelayLatencyReport;
use super::session::Phase;
use super::settings::Settings;
use super::stats;
use super::target::{Server, ServerSpec};
use std::io;

/// Steady traffic between paired sessions for `settings.relay_window`; every payload's
/// send→receive time. `store` names the server's store in the report.
pub async fn relay_latency(
    spec: &ServerSpec,
    settings: &Settings,
    store: &str,
) -> io::Result<RelayLatencyReport> {
    let server = Server::start(spec).await?;
    let result = relay_on(&server, settings, store).await;
    server.stop().await;
    result
}

async fn relay_on(
    server: &Server,
    settings: &Settings,
    store: &str,
) -> io::Result<RelayLatencyReport> {
    let proxy = Links::start(server.addr, settings).await?;
    let path = server.path.clone();
    let url = |idx| proxy.url_for(idx, &path);
    let mut fleet = match Fleet::launch(url, settings, &run_prefix("rl")).await {
        Ok(f) => f,
        Err(e) => {
            proxy.shutdown().await;
            return Err(e);
        }
    };
    let n = fleet.n;
    tokio::time::sleep(settings.settle).await;
    fleet.set(Phase::Send);
    tokio::time::sleep(settings.relay_window).await;
    let drained = fleet.quiesce(settings.drain_timeout).await;
    let (results, _) = fleet_finish(fleet).await;
    proxy.shutdown().await;
    let o = outcome(&results);
    let samples: Vec<f64> = results
        .iter()
        .flat_map(|r| r.relay_us.iter().map(|us| f64::from(*us) / 1000.0))
        .collect();
    Ok(RelayLatencyReport {
        store: store.to_owned(),
        sessions: n,
        rate_per_session: settings.rate,
        window_ms: settings.relay_window.as_millis() as u64,
        latency: stats::summarize(&samples),
        msgs_sent: o.sent,
        drained,
        msgs_lost: o.lost,
        msgs_doubled: o.doubled,
    })
}
