//! Prometheus text exposition of the engine's counters and gauges.

use crate::engine::server::Metrics;
use crate::engine::store::StoreCounts;
use crate::protocol::EndReason;
use std::fmt::Write as _;

/// What `/metrics` shows: counters since start plus gauges sampled now.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub counters: Metrics,
    pub counts: StoreCounts,
    pub connections: usize,
    /// With a durable store: its write latency, errors and start-up load.
    pub store: Option<crate::server::store::StoreStats>,
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Renders Prometheus text format 0.0.4.
pub fn render(m: &MetricsSnapshot) -> String {
    let c = &m.counters;
    let mut out = String::with_capacity(2048);
    line(
        &mut out,
        "holdfast_connections",
        "gauge",
        "Open WebSocket connections.",
        m.connections as u64,
    );
    line(
        &mut out,
        "holdfast_sessions",
        "gauge",
        "Sessions (attached or within their resume window).",
        m.counts.sessions as u64,
    );
    line(
        &mut out,
        "holdfast_sessions_detached",
        "gauge",
        "Sessions waiting for a resume.",
        m.counts.sessions_detached as u64,
    );
    line(
        &mut out,
        "holdfast_users_online",
        "gauge",
        "Identities with at least one session.",
        m.counts.users_online as u64,
    );
    let _ = writeln!(
        out,
        "# HELP holdfast_calls Calls by state.\n# TYPE holdfast_calls gauge"
    );
    let _ = writeln!(
        out,
        "holdfast_calls{{state=\"ringing\"}} {}",
        m.counts.calls_ringing
    );
    let _ = writeln!(
        out,
        "holdfast_calls{{state=\"active\"}} {}",
        m.counts.calls_active
    );
    line(
        &mut out,
        "holdfast_connections_opened_total",
        "counter",
        "WebSocket connections accepted.",
        c.connections_opened,
    );
    line(
        &mut out,
        "holdfast_sessions_created_total",
        "counter",
        "New sessions.",
        c.sessions_created,
    );
    line(
        &mut out,
        "holdfast_resumes_total",
        "counter",
        "Sessions resumed after a drop.",
        c.resumes,
    );
    line(
        &mut out,
        "holdfast_resume_failures_total",
        "counter",
        "Resume attempts answered with a new session.",
        c.resume_failures,
    );
    line(
        &mut out,
        "holdfast_superseded_total",
        "counter",
        "Half-open sockets closed because their session resumed elsewhere.",
        c.superseded,
    );
    line(
        &mut out,
        "holdfast_rejoins_total",
        "counter",
        "Calls rejoined with a token.",
        c.rejoins,
    );
    line(
        &mut out,
        "holdfast_rejoins_denied_total",
        "counter",
        "Rejoins refused.",
        c.rejoins_denied,
    );
    line(
        &mut out,
        "holdfast_calls_created_total",
        "counter",
        "Calls created.",
        c.calls_created,
    );
    line(
        &mut out,
        "holdfast_dedups_total",
        "counter",
        "Invites answered with an existing call.",
        c.dedups,
    );
    line(
        &mut out,
        "holdfast_glare_merges_total",
        "counter",
        "Crossed invites merged into one call.",
        c.glare_merges,
    );
    line(
        &mut out,
        "holdfast_dead_links_total",
        "counter",
        "Links closed for heartbeat silence.",
        c.dead_links,
    );
    line(
        &mut out,
        "holdfast_auth_failures_total",
        "counter",
        "Hellos refused for their token.",
        c.auth_failures,
    );
    line(
        &mut out,
        "holdfast_frames_in_total",
        "counter",
        "Frames received.",
        c.frames_in,
    );
    line(
        &mut out,
        "holdfast_signals_relayed_total",
        "counter",
        "Signal payloads relayed.",
        c.msgs_relayed,
    );
    let _ = writeln!(out, "# HELP holdfast_call_ends_total Calls ended, by reason.\n# TYPE holdfast_call_ends_total counter");
    for r in EndReason::ALL {
        let n = c.ends.get(r.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "holdfast_call_ends_total{{reason=\"{}\"}} {n}",
            r.as_str()
        );
    }
    let _ = writeln!(out, "# HELP holdfast_errors_total Errors answered, by code.\n# TYPE holdfast_errors_total counter");
    for (code, n) in &c.errors {
        let _ = writeln!(out, "holdfast_errors_total{{code=\"{code}\"}} {n}");
    }
    if let Some(store) = &m.store {
        store.render(&mut out);
    }
    out
}
