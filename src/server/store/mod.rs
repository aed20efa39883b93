//! Where the server keeps its state: in memory (the embedded default) or in Redis.
//!
//! The engine always works on a [`MemoryStore`](crate::engine::store::MemoryStore); with
//! Redis, the driver writes the records it changed after every batch of inputs and
//! releases the batch's outputs only once Redis answered (see `super::actor`).

pub mod layout;
pub mod lease;
pub mod redis;
pub mod shared;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a standby answers (503) to `/readyz`, `/healthz`, `/metrics` and WebSocket
/// upgrades: one text, so a load balancer's log reads the same whichever it probed.
pub const STANDBY_ANSWER: &str = "standby: another process holds the store";

/// Whether the store can take writes, for `/readyz` and `/healthz`. The memory store
/// always can.
#[derive(Debug)]
pub struct StoreHealth {
    ready: AtomicBool,
    /// Another process holds the store ([`lease`]): this one waits and refuses sockets.
    standby: AtomicBool,
}

impl StoreHealth {
    pub fn new(ready: bool) -> Self {
        Self {
            ready: AtomicBool::new(ready),
            standby: AtomicBool::new(false),
        }
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn standby(&self) -> bool {
        self.standby.load(Ordering::Relaxed)
    }

    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }
}

/// `--store`: `memory`, or `redis://HOST:PORT[/DB]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSpec {
    #[default]
    Memory,
    /// A Redis URL (`redis://` or `rediss://`).
    Redis(String),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "memory" {
            Ok(StoreSpec::Memory)
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            ::redis::Client::open(s).map_err(|e| format!("bad Redis URL `{s}`: {e}"))?;
            Ok(StoreSpec::Redis(s.to_owned()))
        } else {
            Err(format!(
                "unknown store `{s}`: use `memory` or `redis://HOST:PORT[/DB]`"
            ))
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Redis(url) => f.write_str(url),
        }
    }
}

/// Upper bounds (seconds) of the write-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// What `/metrics` shows about a durable store. Cloning shares the histogram (it is
/// reference-counted), so a snapshot taken for `/metrics` sees every write so far.
#[derive(Debug, Clone)]
pub struct StoreStats {
    /// Time to write one batch (one fenced script), in seconds.
    pub write_seconds: Histogram,
    /// How long an output (a welcome, an acknowledgement, a message) waited for the
    /// writes it depends on, in seconds: the latency the store adds.
    pub hold_seconds: Histogram,
    /// Records written (sessions, calls and users; a deletion counts).
    pub records_written: u64,
    pub errors: u64,
    /// Milliseconds the start-up load took.
    pub load_ms: u64,
    pub records_loaded: u64,
    /// The last write (or the connection) failed and has not succeeded since.
    pub unavailable: bool,
}

impl Default for StoreStats {
    fn default() -> Self {
        Self {
            write_seconds: Histogram::new(LATENCY_BUCKETS),
            hold_seconds: Histogram::new(LATENCY_BUCKETS),
            records_written: 0,
            errors: 0,
            load_ms: 0,
            records_loaded: 0,
            unavailable: false,
        }
    }
}

impl StoreStats {
    pub fn observe_write(&mut self, seconds: f64, records: usize) {
        self.write_seconds.observe(seconds);
        self.records_written += records as u64;
    }

    /// Adds the store's metrics to `/metrics`' registry.
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "holdfast_store_write_seconds",
            "Time to write one batch of changes to the store (one atomic script)",
            self.write_seconds.clone(),
        );
        reg.register(
            "holdfast_store_hold_seconds",
            "Time a welcome, acknowledgement or message waited for the store writes it depends on (nothing is sent before what it tells is durable)",
            self.hold_seconds.clone(),
        );
        for (name, help, value) in [
            (
                "holdfast_store_records_written",
                "Records written to the store (a deletion counts)",
                self.records_written,
            ),
            (
                "holdfast_store_errors",
                "Failed store writes and connection attempts",
                self.errors,
            ),
        ] {
            let c = Counter::<u64>::default();
            c.inc_by(value);
            reg.register(name, help, c);
        }
        for (name, help, value) in [
            (
                "holdfast_store_load_milliseconds",
                "How long loading the state took at start",
                self.load_ms,
            ),
            (
                "holdfast_store_records_loaded",
                "Records loaded at start",
                self.records_loaded,
            ),
            (
                "holdfast_store_unavailable",
                "1 while the store cannot be written (nothing durable is acknowledged)",
                u64::from(self.unavailable),
            ),
        ] {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            reg.register(name, help, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_parse() {
        assert_eq!("memory".parse(), Ok(StoreSpec::Memory));
        assert_eq!(
            "redis://127.0.0.1:6390/2".parse(),
            Ok(StoreSpec::Redis("redis://127.0.0.1:6390/2".into()))
        );
        assert!("postgres://x".parse::<StoreSpec>().is_err());
        assert!("redis://".parse::<StoreSpec>().is_err());
    }

    #[test]
    fn the_histogram_renders_cumulative_buckets() {
        let mut s = StoreStats::default();
        s.observe_write(0.0003, 2);
        s.observe_write(0.003, 1);
        s.observe_write(3.0, 1);
        let mut reg = Registry::default();
        s.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("holdfast_store_write_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(out.contains("holdfast_store_write_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(out.contains("holdfast_store_write_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("holdfast_store_write_seconds_count 3\n"));
        assert!(out.contains("holdfast_store_records_written_total 4\n"));
    }
}
