//! Relay latency: N sessions paired into active calls send payloads carrying their
//! send time; the figure is send→receive (client engine → server → partner's engine,
//! all through the in-tool proxy) over a window of steady traffic, on the server as
//! started (run it once per store to see what a store adds).

use super::fleet::{fleet_finish, outcome, run_prefix, Fleet};
use super::links::Links;
use super::nodes::Nodes;
use super::report::HoldFigures;
use super::report::RelayLatencyReport;
use super::session::Phase;
use super::settings::Settings;
use super::stats;
use super::target::{delta, Server, ServerSpec};
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
    let result = relay_via(
        |idx| proxy.url_for(idx, &path),
        Some(server),
        settings,
        store,
    )
    .await;
    proxy.shutdown().await;
    result
}

/// The same across `k` server processes on one Redis (`--nodes`): the two people of
/// every call are on different processes.
pub async fn relay_latency_across(
    spec: &ServerSpec,
    settings: &Settings,
    store: &str,
    k: usize,
) -> io::Result<RelayLatencyReport> {
    let nodes = Nodes::start(spec, k, settings).await?;
    let label = format!("{store}, {k} processes");
    let result = relay_via(|idx| nodes.url_for(idx), None, settings, &label).await;
    nodes.shutdown().await;
    result
}

/// Relay latency of sessions connecting to `url(i)`; `server`: whose store-hold
/// figures to read (one process).
async fn relay_via(
    url: impl Fn(usize) -> String,
    server: Option<&Server>,
    settings: &Settings,
    store: &str,
) -> io::Result<RelayLatencyReport> {
    let mut fleet = Fleet::launch(url, settings, &run_prefix("rl")).await?;
    let n = fleet.n;
    tokio::time::sleep(settings.settle).await;
    let before = match server {
        Some(s) => s.metrics().await.ok(),
        None => None,
    };
    fleet.set(Phase::Send);
    tokio::time::sleep(settings.relay_window).await;
    let after = match server {
        Some(s) => s.metrics().await.ok(),
        None => None,
    };
    let drained = fleet.quiesce(settings.drain_timeout).await;
    let (results, _) = fleet_finish(fleet).await;
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
        server_hold: hold_during(&before, &after),
    })
}

/// What the server's own histograms say about the store during the window (None with
/// the memory store, which holds nothing): how long outputs waited for their writes
/// (the store's share of the latency, without the load tool's scheduling on the same
/// cores), and how long the writes themselves took.
fn hold_during(
    before: &Option<std::collections::HashMap<String, f64>>,
    after: &Option<std::collections::HashMap<String, f64>>,
) -> Option<HoldFigures> {
    let hold = histogram_during(before, after, "holdfast_store_hold_seconds")?;
    let write = histogram_during(before, after, "holdfast_store_write_seconds");
    Some(HoldFigures {
        outputs: hold.count,
        within_2ms: hold.share_within(2.0),
        p99_le_ms: hold.p99_le_ms(),
        writes: write.as_ref().map_or(0, |w| w.count),
        write_p99_le_ms: write.as_ref().and_then(Window::p99_le_ms),
    })
}

/// One histogram's growth over a window: (upper bound in ms, observations within it),
/// in the server's own buckets.
struct Window {
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl Window {
    fn share_within(&self, ms: f64) -> f64 {
        let within = self
            .buckets
            .iter()
            .filter(|(bound, _)| *bound <= ms + 1e-9)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        within as f64 / self.count as f64
    }

    /// The bound of the bucket holding the 99th percentile.
    fn p99_le_ms(&self) -> Option<f64> {
        self.buckets
            .iter()
            .find(|(_, n)| *n as f64 >= 0.99 * self.count as f64)
            .map(|(bound, _)| *bound)
    }
}

fn histogram_during(
    before: &Option<std::collections::HashMap<String, f64>>,
    after: &Option<std::collections::HashMap<String, f64>>,
    name: &str,
) -> Option<Window> {
    let count = delta(before, after, &format!("{name}_count"))?;
    if count == 0 {
        return None;
    }
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, u64)> = after
        .as_ref()?
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = le.parse::<f64>().ok().filter(|b| b.is_finite())?;
            Some((bound * 1000.0, delta(before, after, k).unwrap_or(0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(Window { count, buckets })
}
