//! Prometheus text exposition (OpenMetrics, by `prometheus-client`) of the engine's
//! counters and gauges and the listener's.

use crate::engine::server::Metrics;
use crate::engine::store::StoreCounts;
use crate::protocol::EndReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What `/metrics` shows: counters since start plus gauges sampled now.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub counters: Metrics,
    pub counts: StoreCounts,
    pub connections: usize,
    /// With a durable store: its write latency, errors and start-up load.
    pub store: Option<crate::server::store::StoreStats>,
    /// On a cluster node: what the whole cluster holds, read from Redis.
    pub cluster: Option<crate::server::store::shared::ClusterCounts>,
    /// On a cluster node: how its transactions fared at Redis.
    pub txns: Option<crate::engine::cluster::TxnCounts>,
}

/// The listener's own counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenerCounters {
    pub refused_global: u64,
    pub refused_per_ip: u64,
    pub max_connections: u64,
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labelled = Family<Vec<(String, String)>, Counter>;

fn gauge(reg: &mut Registry, name: &str, help: &str, value: usize) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    reg.register(name, help, g);
}

/// `name` without `_total`: the encoder adds it to counters.
fn counter(reg: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    reg.register(name, help, c);
}

fn label(key: &str, value: &str) -> Vec<(String, String)> {
    vec![(key.to_owned(), value.to_owned())]
}

/// A counter per value of the label `key`. `name` without `_total`.
fn labelled<'a>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    key: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let family = Labelled::default();
    for (value, n) in values {
        family.get_or_create(&label(key, value)).inc_by(n);
    }
    reg.register(name, help, family);
}

/// Renders the text format. Help texts get their final period from the encoder.
pub fn render(m: &MetricsSnapshot, listener: &ListenerCounters) -> String {
    let c = &m.counters;
    let mut reg = Registry::default();
    gauge(
        &mut reg,
        "holdfast_connections",
        "Open WebSocket connections",
        m.connections,
    );
    gauge(
        &mut reg,
        "holdfast_sessions",
        "Sessions (attached or within their resume window)",
        m.counts.sessions,
    );
    gauge(
        &mut reg,
        "holdfast_sessions_detached",
        "Sessions waiting for a resume",
        m.counts.sessions_detached,
    );
    gauge(
        &mut reg,
        "holdfast_users_online",
        "Identities with at least one session",
        m.counts.users_online,
    );
    let calls = Family::<Vec<(String, String)>, Gauge>::default();
    calls
        .get_or_create(&label("state", "ringing"))
        .set(m.counts.calls_ringing as i64);
    calls
        .get_or_create(&label("state", "active"))
        .set(m.counts.calls_active as i64);
    reg.register("holdfast_calls", "Calls by state", calls);
    gauge(
        &mut reg,
        "holdfast_max_connections",
        "Connection cap of the listener",
        listener.max_connections as usize,
    );
    for (name, help, value) in [
        (
            "holdfast_connections_opened",
            "WebSocket connections accepted",
            c.connections_opened,
        ),
        (
            "holdfast_sessions_created",
            "New sessions",
            c.sessions_created,
        ),
        (
            "holdfast_resumes",
            "Sessions resumed after a drop",
            c.resumes,
        ),
        (
            "holdfast_resume_failures",
            "Resume attempts answered with a new session",
            c.resume_failures,
        ),
        (
            "holdfast_superseded",
            "Half-open sockets closed because their session resumed elsewhere",
            c.superseded,
        ),
        ("holdfast_rejoins", "Calls rejoined with a token", c.rejoins),
        (
            "holdfast_rejoins_denied",
            "Rejoins refused",
            c.rejoins_denied,
        ),
        ("holdfast_calls_created", "Calls created", c.calls_created),
        (
            "holdfast_dedups",
            "Invites answered with an existing call",
            c.dedups,
        ),
        (
            "holdfast_glare_merges",
            "Crossed invites merged into one call",
            c.glare_merges,
        ),
        (
            "holdfast_dead_links",
            "Links closed for heartbeat silence",
            c.dead_links,
        ),
        (
            "holdfast_auth_failures",
            "Hellos refused for their token",
            c.auth_failures,
        ),
        ("holdfast_frames_in", "Frames received", c.frames_in),
        (
            "holdfast_signals_relayed",
            "Signal payloads relayed",
            c.msgs_relayed,
        ),
    ] {
        counter(&mut reg, name, help, value);
    }
    labelled(
        &mut reg,
        "holdfast_connections_refused",
        "TCP connections over a connection cap (served only /healthz, or closed)",
        "cap",
        [
            ("global", listener.refused_global),
            ("per-ip", listener.refused_per_ip),
        ],
    );
    labelled(
        &mut reg,
        "holdfast_call_ends",
        "Calls ended, by reason",
        "reason",
        EndReason::ALL
            .iter()
            .map(|r| (r.as_str(), c.ends.get(r.as_str()).copied().unwrap_or(0))),
    );
    labelled(
        &mut reg,
        "holdfast_errors",
        "Errors answered, by code",
        "code",
        c.errors.iter().map(|(code, n)| (*code, *n)),
    );
    if let Some(store) = &m.store {
        store.register(&mut reg);
    }
    if let Some(txns) = &m.txns {
        labelled(
            &mut reg,
            "holdfast_txns",
            "Transactions this process offered to the shared store, by outcome (a refused one read a record another process had changed, and ran again)",
            "outcome",
            [("taken", txns.taken), ("refused", txns.refused)],
        );
    }
    if let Some(cluster) = &m.cluster {
        gauge(
            &mut reg,
            "holdfast_cluster_nodes",
            "Processes of the cluster with a live lease",
            cluster.nodes,
        );
        gauge(
            &mut reg,
            "holdfast_cluster_sessions_attached",
            "Sessions attached to a socket on some process of the cluster",
            cluster.sessions_attached,
        );
        gauge(
            &mut reg,
            "holdfast_cluster_calls",
            "Calls (ringing or active) in the cluster's store",
            cluster.calls,
        );
        gauge(
            &mut reg,
            "holdfast_cluster_users_online",
            "Identities with at least one session in the cluster",
            cluster.users_online,
        );
    }
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}
