//! The resume storm: N sessions paired into active calls with a steady stream of
//! relayed payloads; every link is dropped at once ([`DropMode`]) and the figure is how
//! many sessions recover, how fast, and whether any payload or call was lost or
//! doubled. Before the drop it reads the server's resident memory per idle session and
//! the heartbeat traffic per session.
//!
//! One process: each client breaks its own socket ([`crate::native::LinkBreak`]), from
//! one of 16 loopback addresses; with `--drops-in-proxy`, and always for a cluster, a
//! TCP proxy between the clients and the servers breaks the links in the middle.

use super::fleet::{fleet_finish, outcome, run_prefix, Fleet};
use super::host::{self, Who};
use super::hostile::Hostile;
use super::nodes::Nodes;
use super::proxy::Action;
use super::report::{ResumeTimes, StormReport};
use super::session::Phase;
use super::settings::Settings;
use super::target::{delta, metric, ServerSpec};
use crate::native::{now_ms, LinkBreak};
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

/// How every link is dropped in a resume storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DropMode {
    /// Both sides see a clean TCP close (FIN).
    Clean,
    /// Both sides see a reset (RST).
    Reset,
    /// The client's side is reset; the server's side stays open and silent, so the
    /// server learns of the drop only from the resume itself (or its heartbeat timeout).
    HalfOpen,
}

impl DropMode {
    pub const ALL: [DropMode; 3] = [DropMode::Clean, DropMode::Reset, DropMode::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            DropMode::Clean => "clean",
            DropMode::Reset => "reset",
            DropMode::HalfOpen => "half-open",
        }
    }

    fn action(self) -> Action {
        match self {
            DropMode::Clean => Action::Close,
            DropMode::Reset => Action::Reset,
            DropMode::HalfOpen => Action::HalfOpen,
        }
    }

    /// The same drop made by the client at its own socket.
    fn link_break(self) -> LinkBreak {
        match self {
            DropMode::Clean => LinkBreak::Close,
            DropMode::Reset => LinkBreak::Reset,
            DropMode::HalfOpen => LinkBreak::HalfOpen,
        }
    }
}

/// The loopback addresses a storm without the proxy spreads its clients over (see
/// [`Settings::client_sources`]); the server it starts exempts them from its per-IP
/// limits, as it does 127.0.0.1. A running server (`--target`) gets its clients from
/// 127.0.0.1 only.
fn client_sources() -> Vec<IpAddr> {
    (1..=16).map(|i| IpAddr::from([127, 0, 1, i])).collect()
}

/// Drops every link of `settings.sessions` paired sessions at once and measures the
/// resume. See the [module documentation](self).
pub async fn storm(
    spec: &ServerSpec,
    settings: &Settings,
    mode: DropMode,
) -> io::Result<StormReport> {
    let started = Instant::now();
    let (nodes, settings) = match spec {
        _ if settings.drops_in_proxy => (Nodes::one(spec, settings).await?, settings.clone()),
        // A `--server-arg=--per-ip-exempt=…` of the user's own is kept, with the
        // clients on 127.0.0.1.
        ServerSpec::Spawn { bin, args }
            if !args.iter().any(|a| a.starts_with("--per-ip-exempt")) =>
        {
            let sources = client_sources();
            // The server's own exemptions (127.0.0.1, ::1), and the clients' addresses.
            let exempt = crate::server::NetLimits::default()
                .per_ip_exempt
                .iter()
                .chain(&sources)
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut args = args.clone();
            args.push(format!("--per-ip-exempt={exempt}"));
            let spec = ServerSpec::Spawn {
                bin: bin.clone(),
                args,
            };
            let settings = Settings {
                client_sources: sources,
                ..settings.clone()
            };
            (Nodes::direct(&spec).await?, settings)
        }
        _ => (Nodes::direct(spec).await?, settings.clone()),
    };
    let result = storm_on(&nodes, &settings, mode, started).await;
    nodes.shutdown().await;
    result
}

/// The same storm over `k` processes on one Redis (`storm --nodes K`): sessions spread
/// over them, the two people of every call on different ones; every link to every
/// process is dropped at once, and each session may come back on any process.
pub async fn storm_across(
    spec: &ServerSpec,
    settings: &Settings,
    mode: DropMode,
    k: usize,
) -> io::Result<StormReport> {
    let started = Instant::now();
    let nodes = Nodes::start(spec, k, settings).await?;
    let result = storm_on(&nodes, settings, mode, started).await;
    nodes.shutdown().await;
    result
}

async fn storm_on(
    nodes: &Nodes,
    settings: &Settings,
    mode: DropMode,
    started: Instant,
) -> io::Result<StormReport> {
    // Let the children finish starting before their baseline is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = nodes.rss_bytes();
    let tool_base = host::tool_rss_baseline();
    let mut fleet = Fleet::launch(|idx| nodes.url_for(idx), settings, &run_prefix("st")).await?;
    let n = fleet.n;
    let setup_ms = started.elapsed().as_millis() as u64;

    // Idle: memory and heartbeat traffic.
    tokio::time::sleep(settings.settle).await;
    let rss_idle = nodes.rss_bytes();
    let tool_idle = host::rss_bytes(Who::ThisTool);
    let t0 = nodes.traffic().await;
    let w0 = Instant::now();
    tokio::time::sleep(settings.idle_window).await;
    let idle = nodes.traffic().await.since(&t0);
    let minutes = w0.elapsed().as_secs_f64() / 60.0;
    let per_min = |v: u64| v as f64 / n as f64 / minutes;

    // Traffic (and the hostile clients, if any), then the drop.
    let hostile = (settings.hostile > 0).then(|| {
        Hostile::start(
            nodes.servers[0].addr,
            nodes.path(),
            settings.hostile,
            settings.hostile_rate,
        )
    });
    fleet.set(Phase::Send);
    // The first half of the warm-up settles the traffic; the second is the baseline.
    tokio::time::sleep(settings.warmup / 2).await;
    let steady_from = (Instant::now(), nodes.cpu_time());
    tokio::time::sleep(settings.warmup / 2).await;
    let before = nodes.metrics().await.ok();
    let overflows_before = host::listen_overflows();
    let cpu_before = nodes.cpu_time();
    let tool_cpu_before = nodes.tool_cpu();
    let server_cpu_ms_per_s_steady = match (steady_from.1, cpu_before) {
        (Some(b), Some(a)) => Some(
            a.saturating_sub(b).as_secs_f64() * 1000.0
                / steady_from.0.elapsed().as_secs_f64().max(1e-3),
        ),
        _ => None,
    };
    fleet.absorb_pending();
    let drop_at = now_ms();
    fleet.tally.since = drop_at;
    let links_dropped = if nodes.direct_links() {
        fleet.break_links(mode.link_break())
    } else {
        nodes.apply_all(mode.action()).await
    };
    let resume_deadline = TokioInstant::now() + settings.resume_timeout;
    fleet.wait(resume_deadline, |t| t.resumed_count >= n).await;
    let cpu_after = nodes.cpu_time();
    let tool_cpu_after = nodes.tool_cpu();
    let resume_wall = Duration::from_millis(now_ms().saturating_sub(drop_at));
    let overflows_after = host::listen_overflows();
    tokio::time::sleep(settings.after).await;
    let drained = fleet.quiesce(settings.drain_timeout).await;
    let hostile = match hostile {
        Some(h) => Some(h.stop().await),
        None => None,
    };
    let after = nodes.metrics().await.ok();
    let server_fds_end = nodes.fd_count();
    let results = fleet_finish(fleet).await;

    let (times, recovered) = resume_times(&results.1, drop_at);
    let o = outcome(&results.0);
    // Calls the store held before (earlier runs on the same Redis leave theirs until
    // their resume window ends) are not this run's duplicates.
    let calls = |m: &Option<HashMap<String, f64>>| {
        m.as_ref().and_then(|m| nodes.calls_in(m)).unwrap_or(0.0) as usize
    };
    let server_excess = if nodes.own() {
        calls(&after).saturating_sub(calls(&before).max(n / 2))
    } else {
        0
    };
    let overflow = match (overflows_before, overflows_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let report = StormReport {
        mode,
        nodes: nodes.servers.len(),
        sessions: n,
        calls: n / 2,
        rate_per_session: settings.rate,
        links_dropped,
        drops_at: if nodes.direct_links() {
            "clients"
        } else {
            "proxy"
        },
        recovered,
        recovered_fraction: recovered as f64 / n as f64,
        resume: ResumeTimes::of(&times, n),
        delivery: o.delivery(drained, server_excess),
        setup_failures: o.setup_failures,
        server_rss_baseline_bytes: rss_base,
        server_rss_idle_bytes: rss_idle,
        server_rss_per_session_bytes: match (rss_base, rss_idle) {
            (Some(b), Some(i)) => Some(i.saturating_sub(b) as f64 / n as f64),
            _ => None,
        },
        tool_rss_per_session_bytes: match (tool_base, tool_idle) {
            (Some(b), Some(i)) => Some(i.saturating_sub(b) as f64 / n as f64),
            _ => None,
        },
        heartbeat_bytes_per_session_per_min: per_min(idle.bytes()),
        heartbeat_writes_per_session_per_min: per_min(idle.chunks()),
        server_resumes: delta(&before, &after, "holdfast_resumes_total"),
        server_resume_failures: delta(&before, &after, "holdfast_resume_failures_total"),
        server_superseded: delta(&before, &after, "holdfast_superseded_total"),
        server_dead_links: delta(&before, &after, "holdfast_dead_links_total"),
        server_txns_taken: delta(&before, &after, "holdfast_txns_total{outcome=\"taken\"}"),
        server_txns_refused: delta(&before, &after, "holdfast_txns_total{outcome=\"refused\"}"),
        server_cpu_ms_during_resume: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64() * 1000.0),
            _ => None,
        },
        tool_cpu_ms_during_resume: match (tool_cpu_before, tool_cpu_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64() * 1000.0),
            _ => None,
        },
        server_cpu_ms_per_s_steady,
        resume_wall_ms: resume_wall.as_millis() as u64,
        listen_overflows: overflow,
        slowest_upstream_connect_ms: nodes.slowest_upstream_connect().await.as_secs_f64() * 1000.0,
        server_fds_end,
        server_connections_end: after
            .as_ref()
            .and_then(|m| metric(m, "holdfast_connections")),
        session_errors: o.errors,
        error_samples: o.samples,
        setup_ms,
        total_ms: started.elapsed().as_millis() as u64,
        hostile,
    };
    Ok(report)
}

/// Sorted times (ms after the drop) of sessions that resumed with nothing lost, and how
/// many did.
pub(super) fn resume_times(resumed: &[Option<(u64, bool)>], drop_at: u64) -> (Vec<f64>, usize) {
    let mut times: Vec<f64> = resumed
        .iter()
        .flatten()
        .filter(|(_, recovered)| *recovered)
        .map(|(at, _)| at.saturating_sub(drop_at) as f64)
        .collect();
    times.sort_by(f64::total_cmp);
    let n = times.len();
    (times, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_times_count_only_recovered_after_the_drop() {
        let (t, n) = resume_times(&[Some((1_100, true)), Some((1_050, false)), None], 1_000);
        assert_eq!((t, n), (vec![100.0], 1));
    }
}
