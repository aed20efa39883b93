//! Where the server keeps its state: in memory (the embedded default) or in Redis.
//!
//! The engine always works on a [`MemoryStore`](crate::engine::store::MemoryStore); with
//! Redis, the driver writes the records it changed after every batch of inputs and
//! releases the batch's outputs only once Redis answered (see `super::actor`).

pub mod redis;

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the store can take writes, for `/readyz` and `/healthz`. The memory store
/// always can.
#[derive(Debug)]
pub struct StoreHealth {
    ready: AtomicBool,
}

impl StoreHealth {
    pub fn new(ready: bool) -> Self {
        Self {
            ready: AtomicBool::new(ready),
        }
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
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

/// What `/metrics` shows about a durable store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Batches written, by upper bound of their latency (cumulative counts are made
    /// when rendering); the last slot counts those above every bound.
    pub write_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub write_seconds_sum: f64,
    pub writes: u64,
    /// Records written (sessions, calls and users; a deletion counts).
    pub records_written: u64,
    pub errors: u64,
    /// Milliseconds the start-up load took.
    pub load_ms: u64,
    pub records_loaded: u64,
    /// The last write (or the connection) failed and has not succeeded since.
    pub unavailable: bool,
}

impl StoreStats {
    pub fn observe_write(&mut self, seconds: f64, records: usize) {
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.write_buckets[slot] += 1;
        self.write_seconds_sum += seconds;
        self.writes += 1;
        self.records_written += records as u64;
    }

    /// Prometheus text format 0.0.4.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP holdfast_store_write_seconds Time to write one batch of changes to the store (MULTI/EXEC).\n# TYPE holdfast_store_write_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.write_buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "holdfast_store_write_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.write_buckets[LATENCY_BUCKETS.len()];
        let _ = writeln!(
            out,
            "holdfast_store_write_seconds_bucket{{le=\"+Inf\"}} {cumulative}\nholdfast_store_write_seconds_sum {}\nholdfast_store_write_seconds_count {}",
            self.write_seconds_sum, self.writes
        );
        for (name, kind, help, value) in [
            (
                "holdfast_store_records_written_total",
                "counter",
                "Records written to the store (a deletion counts).",
                self.records_written,
            ),
            (
                "holdfast_store_errors_total",
                "counter",
                "Failed store writes and connection attempts.",
                self.errors,
            ),
            (
                "holdfast_store_load_milliseconds",
                "gauge",
                "How long loading the state took at start.",
                self.load_ms,
            ),
            (
                "holdfast_store_records_loaded",
                "gauge",
                "Records loaded at start.",
                self.records_loaded,
            ),
            (
                "holdfast_store_unavailable",
                "gauge",
                "1 while the store cannot be written (nothing durable is acknowledged).",
                u64::from(self.unavailable),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
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
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.contains("holdfast_store_write_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(out.contains("holdfast_store_write_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(out.contains("holdfast_store_write_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("holdfast_store_write_seconds_count 3\n"));
        assert!(out.contains("holdfast_store_records_written_total 4\n"));
    }
}
