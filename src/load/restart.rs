//! The server restart: N sessions paired into active calls with relayed numbered
//! payloads, on a server with a durable store (`--store redis://…`). The server process
//! is killed ([`RestartSignal::Kill`]: SIGKILL, nothing said) or asked to stop
//! ([`RestartSignal::Term`]: SIGTERM, clients told `server-restarting`), and a new one
//! is started on the same port. The figure is the time from the new process listening
//! (its listening line) until 50/99/100% of the sessions resumed with nothing lost, and
//! whether any payload or call was lost or doubled.

use super::fleet::{fleet_finish, outcome, run_prefix, Fleet};
use super::links::Links;
use super::nodes::{cluster_spec, Nodes};
use super::report::{RestartReport, ResumeTimes, RollingReport, RollingStep};
use super::session::Phase;
use super::settings::Settings;
use super::storm::resume_times;
use super::target::{metric, Server, ServerSpec};
use crate::native::now_ms;
use serde::Serialize;
use std::io;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

/// How the old server process is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RestartSignal {
    /// SIGKILL: the process vanishes; clients see their sockets close.
    Kill,
    /// SIGTERM: graceful stop; clients are told `server-restarting` first.
    Term,
}

impl RestartSignal {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartSignal::Kill => "kill",
            RestartSignal::Term => "term",
        }
    }

    pub(super) fn number(self) -> i32 {
        match self {
            RestartSignal::Kill => libc::SIGKILL,
            RestartSignal::Term => libc::SIGTERM,
        }
    }
}

/// Longest wait for the old process to exit after the signal (then it is killed).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// True when the server flags name a durable store (a restart loses everything else).
pub fn has_store(spec: &ServerSpec) -> bool {
    match spec {
        ServerSpec::Spawn { args, .. } => args
            .iter()
            .any(|a| a == "--store" || a.starts_with("--store=")),
        ServerSpec::Target { .. } => false,
    }
}

/// Restarts the server under `settings.sessions` paired sessions. See the
/// [module documentation](self).
pub async fn restart(
    spec: &ServerSpec,
    settings: &Settings,
    signal: RestartSignal,
) -> io::Result<RestartReport> {
    if !matches!(spec, ServerSpec::Spawn { .. }) {
        return Err(io::Error::other(
            "restart needs a server the tool starts (not --target)",
        ));
    }
    if !has_store(spec) {
        return Err(io::Error::other(
            "restart needs a durable store: pass --store redis://127.0.0.1:PORT \
             (scripts/redis.sh starts a throwaway one and exports HOLDFAST_TEST_REDIS)",
        ));
    }
    let started = Instant::now();
    let old = Server::start(spec).await?;
    let proxy = Links::start(old.addr, settings).await?;
    let result = restart_on(spec, old, &proxy, settings, signal, started).await;
    proxy.shutdown().await;
    result
}

async fn restart_on(
    spec: &ServerSpec,
    mut old: Server,
    proxy: &Links,
    settings: &Settings,
    signal: RestartSignal,
    started: Instant,
) -> io::Result<RestartReport> {
    let path = old.path.clone();
    let addr = old.addr;
    let url = |idx| proxy.url_for(idx, &path);
    let mut fleet = Fleet::launch(url, settings, &run_prefix("rs")).await?;
    let n = fleet.n;
    let setup_ms = started.elapsed().as_millis() as u64;
    tokio::time::sleep(settings.settle).await;

    fleet.set(Phase::Send);
    tokio::time::sleep(settings.warmup).await;
    // Calls the store held before (earlier runs on the same Redis leave theirs until
    // their resume window ends) are not this run's duplicates.
    let before = old.metrics().await.ok();
    fleet.absorb_pending();
    let signal_at = now_ms();
    fleet.tally.since = signal_at;
    let exit = old.signal_and_wait(signal.number(), EXIT_TIMEOUT).await;
    let exited_at = now_ms();
    drop(old);
    // The new process takes over the port (the server binds with SO_REUSEADDR).
    let new = Server::start_on(spec, addr).await?;
    let listening_at = new.listening_at_ms;
    let deadline = TokioInstant::now() + settings.resume_timeout;
    fleet.wait(deadline, |t| t.resumed_count >= n).await;
    tokio::time::sleep(settings.after).await;
    let drained = fleet.quiesce(settings.drain_timeout).await;
    let after = new.metrics().await.ok();
    let results = fleet_finish(fleet).await;
    new.stop().await;

    let (times, recovered) = resume_times(&results.1, listening_at);
    let early = results
        .1
        .iter()
        .flatten()
        .filter(|(at, _)| *at < listening_at)
        .count();
    let o = outcome(&results.0);
    let active = |m: &Option<std::collections::HashMap<String, f64>>| {
        m.as_ref()
            .and_then(|m| metric(m, "holdfast_calls{state=\"active\"}"))
            .unwrap_or(0.0) as usize
    };
    let server_excess = active(&after).saturating_sub(active(&before).max(n / 2));
    Ok(RestartReport {
        signal,
        sessions: n,
        calls: n / 2,
        rate_per_session: settings.rate,
        old_exit_ms: exit.map(|d| d.as_millis() as u64),
        down_ms: listening_at.saturating_sub(signal_at),
        restart_ms: listening_at.saturating_sub(exited_at),
        recovered,
        recovered_fraction: recovered as f64 / n as f64,
        resumed_before_listening: early,
        resume: ResumeTimes::of(&times, n),
        delivery: o.delivery(drained, server_excess),
        server_resumes: after
            .as_ref()
            .and_then(|m| metric(m, "holdfast_resumes_total"))
            .map(|v| v as u64),
        server_resume_failures: after
            .as_ref()
            .and_then(|m| metric(m, "holdfast_resume_failures_total"))
            .map(|v| v as u64),
        session_errors: o.errors,
        error_samples: o.samples,
        setup_ms,
        total_ms: started.elapsed().as_millis() as u64,
    })
}

/// A rolling restart (`restart --nodes K`): `k` processes on one Redis, sessions spread
/// over them (the two people of a call on different ones), traffic flowing; each
/// process in turn is signalled and started again on its port. Its sessions reconnect
/// at once through their links to another process and resume there. The figure per
/// step is the time from the signal until every session the process held resumed;
/// nothing may be lost or doubled over the whole run.
pub async fn rolling_restart(
    spec: &ServerSpec,
    settings: &Settings,
    signal: RestartSignal,
    k: usize,
) -> io::Result<RollingReport> {
    let started = Instant::now();
    let mut nodes = Nodes::start(spec, k, settings).await?;
    let cluster = cluster_spec(spec);
    let fleet = Fleet::launch(|idx| nodes.url_for(idx), settings, &run_prefix("rr")).await;
    let mut fleet = match fleet {
        Ok(f) => f,
        Err(e) => {
            nodes.shutdown().await;
            return Err(e);
        }
    };
    let n = fleet.n;
    tokio::time::sleep(settings.settle).await;
    fleet.set(Phase::Send);
    tokio::time::sleep(settings.warmup).await;
    let mut steps = Vec::with_capacity(k);
    for node in 0..k {
        // A busy process may be slow to answer `/metrics`: ask a few times, and count
        // every session as its when it never answers.
        let mut on_node = None;
        for _ in 0..5 {
            on_node = nodes.servers[node]
                .metrics()
                .await
                .ok()
                .and_then(|m| metric(&m, "holdfast_connections"));
            if on_node.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let on_node = on_node.map_or(n, |c| c as usize);
        let signal_at = now_ms();
        fleet.rearm(signal_at);
        let exit = nodes.servers[node]
            .signal_and_wait(signal.number(), EXIT_TIMEOUT)
            .await;
        let addr = nodes.servers[node].addr;
        nodes.servers[node] = Server::start_on(&cluster, addr).await?;
        let deadline = TokioInstant::now() + settings.resume_timeout;
        fleet.wait(deadline, |t| t.resumed_count >= on_node).await;
        let (times, recovered) = resume_times(&fleet.rearm(now_ms()), signal_at);
        steps.push(RollingStep {
            node,
            sessions_on_node: on_node,
            recovered,
            resume: ResumeTimes::of(&times, on_node.max(1)),
            old_exit_ms: exit.map(|d| d.as_millis() as u64),
        });
        tokio::time::sleep(settings.after).await;
    }
    let drained = fleet.quiesce(settings.drain_timeout).await;
    let (results, _) = fleet_finish(fleet).await;
    nodes.shutdown().await;
    let o = outcome(&results);
    Ok(RollingReport {
        signal,
        nodes: k,
        sessions: n,
        calls: n / 2,
        rate_per_session: settings.rate,
        steps,
        delivery: o.delivery(drained, 0),
        total_ms: started.elapsed().as_millis() as u64,
    })
}
