//! Sizes and time bounds of a run, shared by every figure.

use std::path::PathBuf;
use std::time::Duration;

/// Sizes and time bounds of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sessions (rounded up to an even number: they are paired into calls).
    pub sessions: usize,
    /// Relayed payloads per second per session while traffic flows.
    pub rate: f64,
    /// Extra bytes in every payload.
    pub pad_bytes: usize,
    /// Sessions connecting at once while setting up.
    pub batch: usize,
    /// Quiet time after pairing before the server's memory is read.
    pub settle: Duration,
    /// Quiet window over which heartbeat traffic is measured.
    pub idle_window: Duration,
    /// Traffic before the drop.
    pub warmup: Duration,
    /// Traffic after every session resumed (or the resume timeout).
    pub after: Duration,
    /// Longest wait for sessions to resume (storm) or notice (dead link).
    pub resume_timeout: Duration,
    /// Longest wait for the last payloads to arrive at the end.
    pub drain_timeout: Duration,
    /// Longest wait for connecting and pairing.
    pub setup_timeout: Duration,
    /// Drops in the single-session resume latency figure.
    pub iterations: usize,
    /// Run the proxy in worker processes (for runs whose sockets do not fit in this
    /// process's open-files limit) instead of in this process.
    pub proxy_workers: Option<ProxyWorkers>,
    /// A one-process storm drops its links in a TCP proxy between the clients and the
    /// server instead of having each client break its own socket (the proxy's second
    /// TCP hop costs about as much CPU as the server; a cluster storm always uses it,
    /// as its load balancer).
    pub drops_in_proxy: bool,
    /// The loopback addresses the sessions' sockets are bound to, session `i` to
    /// `i % len` (empty: the kernel's choice, 127.0.0.1). A storm without the proxy
    /// spreads its clients over several, as real clients come from many addresses: from
    /// one, every new connection to the server made the kernel search a port space
    /// crowded with the half-open and closing sockets of the drop (40% of the tool's
    /// CPU in a half-open storm).
    pub client_sources: Vec<std::net::IpAddr>,
    /// Hostile clients flooding the server during the storm (0: none).
    pub hostile: usize,
    /// Messages per second each hostile client sends.
    pub hostile_rate: u32,
    /// Steady traffic over which the relay latency is measured.
    pub relay_window: Duration,
}

/// Proxy worker processes: `count` of `bin proxy-worker` (`bin` is a `holdfast-load`).
#[derive(Debug, Clone)]
pub struct ProxyWorkers {
    pub bin: PathBuf,
    pub count: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sessions: 1_000,
            rate: 0.2,
            pad_bytes: 0,
            batch: 500,
            settle: Duration::from_secs(1),
            idle_window: Duration::from_secs(6),
            warmup: Duration::from_secs(2),
            after: Duration::from_secs(2),
            resume_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(15),
            setup_timeout: Duration::from_secs(120),
            iterations: 200,
            proxy_workers: None,
            drops_in_proxy: false,
            client_sources: Vec::new(),
            hostile: 0,
            hostile_rate: 200,
            relay_window: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// Short windows for smoke tests (`sessions` sessions, about 5 s per storm).
    pub fn quick(sessions: usize) -> Self {
        Self {
            sessions,
            rate: 4.0,
            settle: Duration::from_millis(300),
            idle_window: Duration::from_millis(1_600),
            warmup: Duration::from_millis(700),
            after: Duration::from_millis(700),
            resume_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(30),
            iterations: 20,
            relay_window: Duration::from_secs(2),
            ..Self::default()
        }
    }
}
