//! `holdfast-load`: the numbers users choose a signaling layer by, measured with the
//! real client engine (through the native driver) against a real `holdfast-server`.
//!
//! Three figures, each bounded in count and time and run on 127.0.0.1 only:
//! - [`storm`]: N sessions paired into active calls with a steady stream of relayed
//!   payloads; every link is dropped at once ([`DropMode`]: clean close, reset,
//!   half-open) and the tool measures how many sessions recover, how fast, and whether
//!   any payload or call was lost or doubled. It also reads the server's resident
//!   memory per idle session and the heartbeat traffic per session.
//! - [`dead_link`]: every link is black-holed (nothing passes, nothing closes); how long
//!   until the client and the server notice.
//! - [`resume_latency`]: one session loses its link again and again; the time from the
//!   link coming back (the browser's `online` event) to `resumed`.
//!
//! Links run through a small TCP proxy inside the tool ([`proxy`]), which is how links
//! are dropped. The server is a `holdfast-server` child process started for each run
//! (so its memory can be read from `/proc`), or an external one on loopback
//! ([`ServerSpec::Target`]).

pub mod cli;
pub mod proxy;
mod session;
pub mod stats;
pub mod target;
pub mod worker;

pub use proxy::{Action, Proxy, Traffic};
pub use stats::Summary;
pub use target::{Server, ServerSpec};
pub use worker::RemoteProxy;

use crate::engine::client::{ClientConfig, Event};
use crate::native::{now_ms, NativeClient};
use serde::Serialize;
use session::{Note, Phase, SessionResult, SessionSpec, Shared};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
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
}

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
            ..Self::default()
        }
    }
}

/// Times from the drop until a share of all sessions had resumed with nothing lost
/// (None: that share never got there).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResumeTimes {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p100_ms: Option<f64>,
}

/// One resume storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub mode: DropMode,
    pub sessions: usize,
    pub calls: usize,
    pub rate_per_session: f64,
    /// Proxy connections dropped at once.
    pub links_dropped: usize,
    /// Sessions that resumed with nothing lost (`Resumed { recovered: true }`).
    pub recovered: usize,
    pub recovered_fraction: f64,
    /// Sessions that came back as a new session (state rebuilt, `recovered: false`).
    pub sessions_lost: usize,
    pub resume: ResumeTimes,
    pub msgs_sent: u64,
    pub msgs_delivered: u64,
    /// Every payload sent had arrived before the drain timeout. When false, `msgs_lost`
    /// counts payloads still missing at that moment.
    pub drained: bool,
    pub msgs_lost: u64,
    pub msgs_doubled: u64,
    pub msgs_reordered: u64,
    /// Calls not active at both ends at the end of the run.
    pub calls_lost: usize,
    /// Calls beyond one per pair (in the engines' maps or the server's gauge).
    pub duplicate_calls: usize,
    /// Sessions that never got into their call during setup.
    pub setup_failures: usize,
    pub server_rss_baseline_bytes: Option<u64>,
    pub server_rss_idle_bytes: Option<u64>,
    pub server_rss_per_session_bytes: Option<f64>,
    /// This tool's memory per session (client engine, driver and proxy), over its
    /// memory before its first run.
    pub tool_rss_per_session_bytes: Option<f64>,
    /// WebSocket bytes (TCP payload, both directions) per idle session per minute.
    pub heartbeat_bytes_per_session_per_min: f64,
    /// Writes (about one TCP segment each) per idle session per minute.
    pub heartbeat_writes_per_session_per_min: f64,
    pub server_resumes: Option<u64>,
    pub server_resume_failures: Option<u64>,
    pub server_superseded: Option<u64>,
    pub server_dead_links: Option<u64>,
    /// Server CPU time from the drop until every session resumed.
    pub server_cpu_ms_during_resume: Option<f64>,
    /// CPU time of this tool (clients and proxies) over the same window.
    pub tool_cpu_ms_during_resume: Option<f64>,
    /// Wall time of that window (from the drop until every session resumed, or the
    /// resume timeout).
    pub resume_wall_ms: u64,
    /// Kernel `ListenOverflows` during the resume (SYNs dropped by full accept queues).
    pub listen_overflows: Option<u64>,
    pub slowest_upstream_connect_ms: f64,
    /// Server sockets still open at the end (the server's file descriptors).
    pub server_fds_end: Option<usize>,
    pub server_connections_end: Option<f64>,
    pub session_errors: u64,
    pub error_samples: Vec<String>,
    pub setup_ms: u64,
    pub total_ms: u64,
}

/// Dead-link detection.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLinkReport {
    pub sessions: usize,
    pub rate_per_session: f64,
    /// Time from the black hole until each client's engine declared the link dead.
    pub client: Option<Summary>,
    pub client_noticed: usize,
    /// Time until the server closed each dead link (from `holdfast_dead_links_total`,
    /// polled every `poll_ms`).
    pub server_median_ms: Option<f64>,
    pub server_max_ms: Option<f64>,
    pub server_noticed: usize,
    pub poll_ms: u64,
}

/// Single-session resume latency.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeLatencyReport {
    pub iterations: usize,
    /// From the link coming back (`online`) to `resumed`.
    pub latency: Option<Summary>,
    pub recovered: usize,
    pub msgs_sent: u64,
    pub msgs_lost: u64,
    pub msgs_doubled: u64,
    /// Errors either client was told of (e.g. `rate-limited`).
    pub errors: usize,
    pub error_samples: Vec<String>,
}

/// Where the numbers were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = (now_ms() / 86_400_000) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Raises the open-files limit to at least `want` (the hard limit too, when allowed).
/// Returns the soft limit in force afterwards.
// `rlim_t` is u64 on Linux but not on every Unix.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit(want: u64) -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid resource and a valid pointer.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 0;
            }
            let want = want as libc::rlim_t;
            if lim.rlim_max < want {
                let raised = libc::rlimit {
                    rlim_cur: want,
                    rlim_max: want,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    return want as u64;
                }
            }
            let cur = lim.rlim_max.min(want.max(lim.rlim_cur));
            let set = libc::rlimit {
                rlim_cur: cur,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &set) == 0 {
                return cur as u64;
            }
            lim.rlim_cur as u64
        }
    }
    #[cfg(not(unix))]
    {
        want
    }
}

/// File descriptors a run of `sessions` needs: a client socket and two proxy sockets
/// per session in this process, twice over while half-open links linger, plus slack.
pub fn fds_needed(sessions: usize) -> u64 {
    (sessions as u64) * 6 + 1_024
}

fn tool_rss() -> Option<u64> {
    target::proc_rss_bytes("/proc/self/status")
}

/// This process's memory before its first fleet (or whenever first asked), so that
/// later runs (which reuse memory the allocator kept) still measure what a session
/// costs.
pub fn tool_rss_baseline() -> Option<u64> {
    static BASE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BASE.get_or_init(tool_rss)
}

fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// A short random-enough prefix so identities never collide with another run against
/// the same server.
fn run_prefix(kind: &str) -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    format!("{kind}{}", crate::engine::hex(&b))
}

// ------------------------------------------------------------------ the links

/// The proxies between the sessions and the server: one in this process, or shards in
/// worker processes (session `i` uses shard `i % count`).
enum Links {
    Local(Proxy),
    Remote(Vec<RemoteProxy>),
}

impl Links {
    async fn start(upstream: std::net::SocketAddr, settings: &Settings) -> io::Result<Links> {
        match &settings.proxy_workers {
            None => Ok(Links::Local(Proxy::start(upstream).await?)),
            Some(w) => {
                let mut shards = Vec::with_capacity(w.count.max(1));
                for _ in 0..w.count.max(1) {
                    shards.push(RemoteProxy::start(&w.bin, upstream).await?);
                }
                Ok(Links::Remote(shards))
            }
        }
    }

    fn url_for(&self, idx: usize, path: &str) -> String {
        let addr = match self {
            Links::Local(p) => p.addr(),
            Links::Remote(shards) => shards[idx % shards.len()].addr(),
        };
        format!("ws://{addr}{path}")
    }

    /// Applies `action` to every link at once (all shards in parallel).
    async fn apply_all(&self, action: Action) -> usize {
        match self {
            Links::Local(p) => p.apply_all(action),
            Links::Remote(shards) => {
                let asks = shards.iter().map(|s| s.apply_all(action));
                futures_util::future::join_all(asks)
                    .await
                    .into_iter()
                    .map(|r| r.unwrap_or(0))
                    .sum()
            }
        }
    }

    async fn set_blackhole_new(&self, on: bool) {
        match self {
            Links::Local(p) => p.set_blackhole_new(on),
            Links::Remote(shards) => {
                let asks = shards.iter().map(|s| s.set_blackhole_new(on));
                futures_util::future::join_all(asks).await;
            }
        }
    }

    async fn traffic(&self) -> Traffic {
        match self {
            Links::Local(p) => p.traffic(),
            Links::Remote(shards) => {
                let mut sum = Traffic::default();
                for s in shards {
                    if let Ok(t) = s.traffic().await {
                        sum.bytes_up += t.bytes_up;
                        sum.bytes_down += t.bytes_down;
                        sum.chunks_up += t.chunks_up;
                        sum.chunks_down += t.chunks_down;
                    }
                }
                sum
            }
        }
    }

    async fn slowest_upstream_connect(&self) -> Duration {
        match self {
            Links::Local(p) => p.slowest_upstream_connect(),
            Links::Remote(shards) => {
                let mut max = Duration::ZERO;
                for s in shards {
                    max = max.max(s.slowest_upstream_connect().await.unwrap_or_default());
                }
                max
            }
        }
    }

    /// CPU time of this process plus the proxy workers.
    fn tool_cpu(&self) -> Option<Duration> {
        let own = target::proc_cpu_time("/proc/self/stat")?;
        let workers = match self {
            Links::Local(_) => Duration::ZERO,
            Links::Remote(shards) => shards
                .iter()
                .filter_map(|s| target::proc_cpu_time(&format!("/proc/{}/stat", s.pid())))
                .sum(),
        };
        Some(own + workers)
    }

    async fn shutdown(self) {
        match self {
            Links::Local(p) => p.shutdown().await,
            Links::Remote(shards) => {
                futures_util::future::join_all(shards.into_iter().map(RemoteProxy::shutdown)).await;
            }
        }
    }
}

// ------------------------------------------------------------------ the fleet

/// What the coordinator has heard from the sessions.
struct Tally {
    connected: usize,
    started: usize,
    quiet: usize,
    /// Only events at or after this local epoch ms count as resumes/disconnects.
    since: u64,
    resumed: Vec<Option<(u64, bool)>>,
    disconnected: Vec<Option<u64>>,
    resumed_count: usize,
    disconnected_count: usize,
}

impl Tally {
    fn absorb(&mut self, note: Note) {
        match note {
            Note::Connected => self.connected += 1,
            Note::CallStarted => self.started += 1,
            Note::Quiet => self.quiet += 1,
            Note::Resumed { idx, at, recovered } => {
                if at >= self.since && self.resumed[idx].is_none() {
                    self.resumed[idx] = Some((at, recovered));
                    self.resumed_count += 1;
                }
            }
            Note::Disconnected { idx, at } => {
                if at >= self.since && self.disconnected[idx].is_none() {
                    self.disconnected[idx] = Some(at);
                    self.disconnected_count += 1;
                }
            }
        }
    }
}

/// N sessions in pairs, driven through phases.
struct Fleet {
    n: usize,
    phase: watch::Sender<Phase>,
    notes: mpsc::UnboundedReceiver<Note>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<SessionResult>>,
    tally: Tally,
}

impl Fleet {
    /// Starts `settings.sessions` (even) sessions against `url` in batches and waits
    /// until they are connected and paired into active calls.
    async fn launch(
        url: impl Fn(usize) -> String,
        settings: &Settings,
        prefix: &str,
    ) -> io::Result<Fleet> {
        let n = settings.sessions.max(2).div_ceil(2) * 2;
        let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            phase: phase_rx,
            notes: notes_tx,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            in_order: (0..n).map(|_| AtomicU64::new(0)).collect(),
            rate: settings.rate,
            pad: "x".repeat(settings.pad_bytes),
        });
        let mut fleet = Fleet {
            n,
            phase: phase_tx,
            notes: notes_rx,
            shared,
            tasks: Vec::with_capacity(n),
            tally: Tally {
                connected: 0,
                started: 0,
                quiet: 0,
                since: u64::MAX,
                resumed: vec![None; n],
                disconnected: vec![None; n],
                resumed_count: 0,
                disconnected_count: 0,
            },
        };
        let deadline = TokioInstant::now() + settings.setup_timeout;
        let batch = settings.batch.max(2);
        let mut started = 0;
        while started < n {
            let end = (started + batch).min(n);
            for idx in started..end {
                let spec = SessionSpec {
                    idx,
                    user: format!("{prefix}-{idx}"),
                    peer: format!("{prefix}-{}", idx ^ 1),
                    caller: idx % 2 == 0,
                    url: url(idx),
                };
                fleet
                    .tasks
                    .push(tokio::spawn(session::run(spec, fleet.shared.clone())));
            }
            started = end;
            if !fleet.wait(deadline, |t| t.connected >= end).await {
                return Err(io_err(format!(
                    "only {} of {end} sessions connected within the setup timeout",
                    fleet.tally.connected
                )));
            }
        }
        fleet.set(Phase::Pair);
        if !fleet.wait(deadline, |t| t.started >= n).await {
            return Err(io_err(format!(
                "only {} of {n} sessions got into their call within the setup timeout",
                fleet.tally.started
            )));
        }
        fleet.set(Phase::Idle);
        Ok(fleet)
    }

    fn set(&self, phase: Phase) {
        let _ = self.phase.send(phase);
    }

    /// Absorbs notes until `done` holds (true) or `until` passes (false).
    async fn wait(&mut self, until: TokioInstant, done: impl Fn(&Tally) -> bool) -> bool {
        loop {
            while let Ok(note) = self.notes.try_recv() {
                self.tally.absorb(note);
            }
            if done(&self.tally) {
                return true;
            }
            match tokio::time::timeout_at(until, self.notes.recv()).await {
                Ok(Some(note)) => self.tally.absorb(note),
                Ok(None) => return done(&self.tally),
                Err(_) => return false,
            }
        }
    }

    /// Absorbs whatever notes are waiting.
    fn absorb_pending(&mut self) {
        while let Ok(note) = self.notes.try_recv() {
            self.tally.absorb(note);
        }
    }

    /// Stops sending and waits until every payload sent has arrived (or `timeout`).
    async fn quiesce(&mut self, timeout: Duration) -> bool {
        self.set(Phase::Quiet);
        let deadline = TokioInstant::now() + timeout;
        let n = self.n;
        if !self.wait(deadline, |t| t.quiet >= n).await {
            return false;
        }
        loop {
            let complete = (0..n).all(|i| {
                self.shared.in_order[i].load(Ordering::Relaxed)
                    >= self.shared.sent[i ^ 1].load(Ordering::Relaxed)
            });
            if complete {
                return true;
            }
            if TokioInstant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.absorb_pending();
        }
    }

    /// Stops every session and collects what each saw.
    async fn finish(mut self) -> Vec<SessionResult> {
        self.set(Phase::Stop);
        let mut results = Vec::with_capacity(self.n);
        for task in self.tasks.drain(..) {
            let r = match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(r)) => r,
                _ => SessionResult {
                    setup_failed: true,
                    ..SessionResult::default()
                },
            };
            results.push(r);
        }
        results
    }
}

/// Message and call outcomes over all pairs.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    delivered: u64,
    lost: u64,
    doubled: u64,
    reordered: u64,
    calls_lost: usize,
    duplicate_calls: usize,
    setup_failures: usize,
    errors: u64,
    samples: Vec<String>,
    sessions_lost: usize,
}

fn outcome(results: &[SessionResult]) -> Outcome {
    let mut o = Outcome::default();
    for (i, r) in results.iter().enumerate() {
        let peer_sent = results.get(i ^ 1).map_or(0, |p| p.sent);
        o.sent += r.sent;
        for n in 0..peer_sent as usize {
            match r.counts.get(n).copied().unwrap_or(0) {
                0 => o.lost += 1,
                c => {
                    o.delivered += 1;
                    o.doubled += u64::from(c - 1);
                }
            }
        }
        // Anything numbered past what the partner sent would be invented.
        o.doubled += r
            .counts
            .iter()
            .skip(peer_sent as usize)
            .map(|c| u64::from(*c))
            .sum::<u64>();
        o.reordered += r.reordered;
        o.errors += r.errors;
        if r.session_lost > 0 {
            o.sessions_lost += 1;
        }
        if r.setup_failed {
            o.setup_failures += 1;
        }
        for s in &r.error_samples {
            if o.samples.len() < 5 && !o.samples.contains(s) {
                o.samples.push(s.clone());
            }
        }
        if i % 2 == 0 {
            let p = results.get(i + 1);
            let ok = r.call_ok && p.is_some_and(|p| p.call_ok);
            if !ok {
                o.calls_lost += 1;
            }
            let most = r.calls_in_map.max(p.map_or(0, |p| p.calls_in_map));
            o.duplicate_calls += most.saturating_sub(1);
        }
    }
    o
}

fn metric(m: &HashMap<String, f64>, name: &str) -> Option<f64> {
    m.get(name).copied()
}

fn delta(
    before: &Option<HashMap<String, f64>>,
    after: &Option<HashMap<String, f64>>,
    name: &str,
) -> Option<u64> {
    let b = metric(before.as_ref()?, name)?;
    let a = metric(after.as_ref()?, name)?;
    Some((a - b).max(0.0) as u64)
}

/// The time at which the `k`-th (1-based) sample arrived, from sorted samples.
fn kth(sorted: &[f64], k: usize) -> Option<f64> {
    if k == 0 || k > sorted.len() {
        None
    } else {
        Some(sorted[k - 1])
    }
}

// ---------------------------------------------------------------- the figures

/// Drops every link of `settings.sessions` paired sessions at once and measures the
/// resume. See the module documentation.
pub async fn storm(
    spec: &ServerSpec,
    settings: &Settings,
    mode: DropMode,
) -> io::Result<StormReport> {
    let started = Instant::now();
    let server = Server::start(spec).await?;
    let result = storm_on(&server, settings, mode, started).await;
    server.stop().await;
    result
}

async fn storm_on(
    server: &Server,
    settings: &Settings,
    mode: DropMode,
    started: Instant,
) -> io::Result<StormReport> {
    // Let the child finish starting before its baseline is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = server.rss_bytes();
    let tool_base = tool_rss_baseline();
    let proxy = Links::start(server.addr, settings).await?;
    let path = server.path.clone();
    let url = |idx| proxy.url_for(idx, &path);
    let mut fleet = match Fleet::launch(url, settings, &run_prefix("st")).await {
        Ok(f) => f,
        Err(e) => {
            proxy.shutdown().await;
            return Err(e);
        }
    };
    let n = fleet.n;
    let setup_ms = started.elapsed().as_millis() as u64;

    // Idle: memory and heartbeat traffic.
    tokio::time::sleep(settings.settle).await;
    let rss_idle = server.rss_bytes();
    let tool_idle = tool_rss();
    let t0 = proxy.traffic().await;
    let w0 = Instant::now();
    tokio::time::sleep(settings.idle_window).await;
    let idle = proxy.traffic().await.since(&t0);
    let minutes = w0.elapsed().as_secs_f64() / 60.0;
    let per_min = |v: u64| v as f64 / n as f64 / minutes;

    // Traffic, then the drop.
    fleet.set(Phase::Send);
    tokio::time::sleep(settings.warmup).await;
    let before = server.metrics().await.ok();
    let netstat_before = target::tcp_ext_counters();
    let cpu_before = server.cpu_time();
    let tool_cpu_before = proxy.tool_cpu();
    fleet.absorb_pending();
    let drop_at = now_ms();
    fleet.tally.since = drop_at;
    let links_dropped = proxy.apply_all(mode.action()).await;
    let resume_deadline = TokioInstant::now() + settings.resume_timeout;
    fleet.wait(resume_deadline, |t| t.resumed_count >= n).await;
    let cpu_after = server.cpu_time();
    let tool_cpu_after = proxy.tool_cpu();
    let resume_wall = Duration::from_millis(now_ms().saturating_sub(drop_at));
    let netstat_after = target::tcp_ext_counters();
    tokio::time::sleep(settings.after).await;
    let drained = fleet.quiesce(settings.drain_timeout).await;
    let after = server.metrics().await.ok();
    let server_fds_end = server.fd_count();
    let results = fleet_finish(fleet).await;

    let (times, recovered) = resume_times(&results.1, drop_at);
    let o = outcome(&results.0);
    let server_active = after
        .as_ref()
        .and_then(|m| metric(m, "holdfast_calls{state=\"active\"}"))
        .unwrap_or(0.0) as usize;
    let own_server = server.pid().is_some();
    let server_excess = if own_server {
        server_active.saturating_sub(n / 2)
    } else {
        0
    };
    let overflow = match (
        netstat_before.get("ListenOverflows"),
        netstat_after.get("ListenOverflows"),
    ) {
        (Some(b), Some(a)) => Some(a.saturating_sub(*b)),
        _ => None,
    };
    let report = StormReport {
        mode,
        sessions: n,
        calls: n / 2,
        rate_per_session: settings.rate,
        links_dropped,
        recovered,
        recovered_fraction: recovered as f64 / n as f64,
        sessions_lost: o.sessions_lost,
        resume: ResumeTimes {
            p50_ms: kth(&times, n.div_ceil(2)),
            p99_ms: kth(&times, (n * 99).div_ceil(100)),
            p100_ms: kth(&times, n),
        },
        msgs_sent: o.sent,
        msgs_delivered: o.delivered,
        drained,
        msgs_lost: o.lost,
        msgs_doubled: o.doubled,
        msgs_reordered: o.reordered,
        calls_lost: o.calls_lost,
        duplicate_calls: o.duplicate_calls.max(server_excess),
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
        server_cpu_ms_during_resume: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64() * 1000.0),
            _ => None,
        },
        tool_cpu_ms_during_resume: match (tool_cpu_before, tool_cpu_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64() * 1000.0),
            _ => None,
        },
        resume_wall_ms: resume_wall.as_millis() as u64,
        listen_overflows: overflow,
        slowest_upstream_connect_ms: proxy.slowest_upstream_connect().await.as_secs_f64() * 1000.0,
        server_fds_end,
        server_connections_end: after
            .as_ref()
            .and_then(|m| metric(m, "holdfast_connections")),
        session_errors: o.errors,
        error_samples: o.samples,
        setup_ms,
        total_ms: started.elapsed().as_millis() as u64,
    };
    proxy.shutdown().await;
    Ok(report)
}

/// Stops the fleet; returns the session results and the resume tally.
async fn fleet_finish(mut fleet: Fleet) -> (Vec<SessionResult>, Vec<Option<(u64, bool)>>) {
    fleet.absorb_pending();
    let resumed = std::mem::take(&mut fleet.tally.resumed);
    (fleet.finish().await, resumed)
}

/// Sorted times (ms after the drop) of sessions that resumed with nothing lost, and how
/// many did.
fn resume_times(resumed: &[Option<(u64, bool)>], drop_at: u64) -> (Vec<f64>, usize) {
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

/// Black-holes every link of `settings.sessions` paired sessions (nothing passes,
/// nothing closes, and so do the reconnects) and measures when each side notices.
pub async fn dead_link(spec: &ServerSpec, settings: &Settings) -> io::Result<DeadLinkReport> {
    let server = Server::start(spec).await?;
    let result = dead_link_on(&server, settings).await;
    server.stop().await;
    result
}

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

/// One pair in a call; one side's link is reset again and again while both keep
/// sending. Measures the time from the link coming back (the engine's `online` input,
/// as the browser's `online` event) to `resumed`.
pub async fn resume_latency(
    spec: &ServerSpec,
    settings: &Settings,
) -> io::Result<ResumeLatencyReport> {
    let server = Server::start(spec).await?;
    let result = resume_latency_on(&server, settings).await;
    server.stop().await;
    result
}

/// Payloads received by one client, by number, and errors it was told of.
#[derive(Default)]
struct Received {
    counts: Vec<u32>,
    errors: Vec<String>,
}

impl Received {
    fn note(&mut self, ev: &Event) {
        match ev {
            Event::Signal { payload, .. } => {
                if let Some(n) = payload.get("n").and_then(|n| n.as_u64()) {
                    let i = (n as usize).saturating_sub(1);
                    if self.counts.len() <= i {
                        self.counts.resize(i + 1, 0);
                    }
                    self.counts[i] += 1;
                }
            }
            Event::Error { code, message, .. } => {
                self.errors.push(format!("{}: {message}", code.as_str()));
            }
            _ => {}
        }
    }

    fn complete(&self, sent: u64) -> bool {
        self.counts.len() as u64 >= sent && self.counts.iter().take(sent as usize).all(|c| *c > 0)
    }

    fn lost_doubled(&self, sent: u64) -> (u64, u64) {
        let lost = (0..sent as usize)
            .filter(|i| self.counts.get(*i).copied().unwrap_or(0) == 0)
            .count() as u64;
        let doubled = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if (i as u64) < sent {
                    u64::from(c.saturating_sub(1))
                } else {
                    u64::from(*c)
                }
            })
            .sum();
        (lost, doubled)
    }
}

/// Waits for the first event `pick` accepts, noting payloads on the way.
async fn await_event<T>(
    c: &mut NativeClient,
    rx: &mut Received,
    timeout: Duration,
    mut pick: impl FnMut(u64, &Event) -> Option<T>,
) -> io::Result<T> {
    let deadline = TokioInstant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, c.recv_event()).await {
            Ok(Some((at, ev))) => {
                rx.note(&ev);
                if let Some(t) = pick(at, &ev) {
                    return Ok(t);
                }
            }
            Ok(None) => return Err(io_err("client stopped")),
            Err(_) => return Err(io_err("timed out waiting for a client event")),
        }
    }
}

async fn send_n(c: &NativeClient, call: &str, n: u64) -> io::Result<()> {
    let call = call.to_owned();
    c.with(move |e, now| e.send(&call, serde_json::json!({ "n": n }), now))
        .await
        .map(|_| ())
        .map_err(|e| io_err(format!("send refused: {e}")))
}

/// Pause between two drops of the single-session figure.
const RESUME_GAP: Duration = Duration::from_millis(80);

async fn resume_latency_on(
    server: &Server,
    settings: &Settings,
) -> io::Result<ResumeLatencyReport> {
    const WAIT: Duration = Duration::from_secs(10);
    let proxy_a = Proxy::start(server.addr).await?;
    let proxy_b = Proxy::start(server.addr).await?;
    let prefix = run_prefix("rl");
    let (ua, ub) = (format!("{prefix}-a"), format!("{prefix}-b"));
    let mut a = NativeClient::start(
        &proxy_a.ws_url(&server.path),
        ClientConfig::new(ua.clone()),
        vec![],
    );
    let mut b = NativeClient::start(
        &proxy_b.ws_url(&server.path),
        ClientConfig::new(ub.clone()),
        vec![],
    );
    let (mut ra, mut rb) = (Received::default(), Received::default());
    for (c, r) in [(&mut a, &mut ra), (&mut b, &mut rb)] {
        await_event(c, r, WAIT, |_, e| {
            matches!(e, Event::Connected { .. }).then_some(())
        })
        .await?;
    }
    let peer = ub.clone();
    a.with(move |e, now| e.call(&peer, None, None, now))
        .await
        .map_err(|e| io_err(format!("invite refused: {e}")))?;
    let call = await_event(&mut b, &mut rb, WAIT, |_, e| match e {
        Event::IncomingCall { call } => Some(call.id.clone()),
        _ => None,
    })
    .await?;
    let id = call.clone();
    b.with(move |e, now| e.accept(&id, now))
        .await
        .map_err(|e| io_err(format!("accept refused: {e}")))?;
    for (c, r) in [(&mut a, &mut ra), (&mut b, &mut rb)] {
        await_event(c, r, WAIT, |_, e| {
            matches!(e, Event::CallStarted { .. }).then_some(())
        })
        .await?;
    }
    let (mut sent_a, mut sent_b) = (0u64, 0u64);
    let mut latencies = Vec::with_capacity(settings.iterations);
    let mut recovered = 0;
    for _ in 0..settings.iterations {
        // The network goes away: the browser says offline and the socket dies.
        a.with(|e, now| e.handle_online(false, now)).await;
        proxy_a.apply_all(Action::Reset);
        await_event(&mut a, &mut ra, WAIT, |_, e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await?;
        // Both keep talking meanwhile: replay both ways on resume.
        for _ in 0..2 {
            sent_b += 1;
            send_n(&b, &call, sent_b).await?;
            sent_a += 1;
            send_n(&a, &call, sent_a).await?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The network is back.
        let back = a
            .with(|e, now| {
                e.handle_online(true, now);
                now
            })
            .await;
        let (at, ok) = await_event(&mut a, &mut ra, WAIT, |at, e| match e {
            Event::Resumed { recovered } => Some((at, *recovered)),
            _ => None,
        })
        .await?;
        latencies.push(at.saturating_sub(back) as f64);
        if ok {
            recovered += 1;
        }
        // Stay well inside the server's per-socket rate limit (50 frames/s by default):
        // each round costs each side about four frames.
        tokio::time::sleep(RESUME_GAP).await;
    }
    // Everything sent must arrive.
    let deadline = TokioInstant::now() + settings.drain_timeout;
    loop {
        for ev in a.drain_events() {
            ra.note(&ev);
        }
        for ev in b.drain_events() {
            rb.note(&ev);
        }
        if (ra.complete(sent_b) && rb.complete(sent_a)) || TokioInstant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (lost_a, doubled_a) = ra.lost_doubled(sent_b);
    let (lost_b, doubled_b) = rb.lost_doubled(sent_a);
    let errors: Vec<String> = ra.errors.iter().chain(&rb.errors).cloned().collect();
    a.close_tab().await;
    b.close_tab().await;
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
    Ok(ResumeLatencyReport {
        iterations: settings.iterations,
        latency: stats::summarize(&latencies),
        recovered,
        msgs_sent: sent_a + sent_b,
        msgs_lost: lost_a + lost_b,
        msgs_doubled: doubled_a + doubled_b,
        errors: errors.len(),
        error_samples: errors.into_iter().take(3).collect(),
    })
}

// ------------------------------------------------------------------ reporting

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub server: String,
    pub storms: Vec<StormReport>,
    pub dead_link: Option<DeadLinkReport>,
    pub resume_latency: Option<ResumeLatencyReport>,
    pub targets: Vec<TargetCheck>,
}

/// Where a figure stands against the product's target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.0} ms"))
}

impl Report {
    /// Checks every figure against its target.
    pub fn check_targets(&mut self) {
        let mut t = Vec::new();
        if let Some(d) = &self.dead_link {
            let client_max = d.client.map(|s| s.max_ms);
            let worst = match (client_max, d.server_max_ms) {
                (Some(c), Some(s)) => Some(c.max(s)),
                _ => None,
            };
            t.push(TargetCheck {
                target: "dead link noticed <= 5 s, worst case, default settings".into(),
                measured: format!(
                    "client max {}, server max {} ({} sessions)",
                    ms(client_max),
                    ms(d.server_max_ms),
                    d.sessions
                ),
                met: Some(worst.is_some_and(|w| w <= 5_000.0)),
            });
        }
        if let Some(r) = &self.resume_latency {
            let p99 = r.latency.map(|s| s.p99_ms);
            t.push(TargetCheck {
                target: "single resume p99 <= 100 ms after the link returns".into(),
                measured: format!("p99 {} over {} resumes", ms(p99), r.iterations),
                met: Some(p99.is_some_and(|p| p <= 100.0)),
            });
        }
        for s in &self.storms {
            let clean = s.recovered == s.sessions
                && s.msgs_lost == 0
                && s.msgs_doubled == 0
                && s.calls_lost == 0
                && s.duplicate_calls == 0;
            t.push(TargetCheck {
                target: format!(
                    "{} sessions, {} drop: 100% recovered within 1 s, 0 lost, 0 doubled",
                    s.sessions,
                    s.mode.as_str()
                ),
                measured: format!(
                    "{:.2}% recovered, 100% at {}, {} lost, {} doubled, {} calls lost, {} duplicate calls",
                    s.recovered_fraction * 100.0,
                    ms(s.resume.p100_ms),
                    s.msgs_lost,
                    s.msgs_doubled,
                    s.calls_lost,
                    s.duplicate_calls
                ),
                met: Some(clean && s.resume.p100_ms.is_some_and(|p| p <= 1_000.0)),
            });
        }
        if let Some(s) = self
            .storms
            .iter()
            .filter(|s| s.server_rss_per_session_bytes.is_some())
            .max_by_key(|s| s.sessions)
        {
            let per = s.server_rss_per_session_bytes.unwrap_or(f64::NAN);
            t.push(TargetCheck {
                target: "<= 4 KB server RSS per idle session at 10,000 sessions".into(),
                measured: format!(
                    "{:.1} KiB per session at {} sessions",
                    per / 1024.0,
                    s.sessions
                ),
                met: (s.sessions >= 10_000).then_some(per <= 4_096.0),
            });
        }
        self.targets = t;
    }

    /// A plain-text table of every figure.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "holdfast-load {} — {} cores, {} GiB, {} (kernel {}); server: {}",
            self.date, m.cores, m.memory_gib, m.os, m.kernel, self.server
        );
        if !self.storms.is_empty() {
            let _ = writeln!(out, "\nResume storm (every link dropped at once)");
            let _ = writeln!(
                out,
                "{:>6} {:>9} {:>10} {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>5} {:>9} {:>10}",
                "N",
                "drop",
                "recovered",
                "50%",
                "99%",
                "100%",
                "lost",
                "doubled",
                "calls-",
                "dup",
                "RSS/sess",
                "hb B/min"
            );
            for s in &self.storms {
                let _ = writeln!(
                    out,
                    "{:>6} {:>9} {:>9.2}% {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>5} {:>9} {:>10.0}",
                    s.sessions,
                    s.mode.as_str(),
                    s.recovered_fraction * 100.0,
                    ms(s.resume.p50_ms),
                    ms(s.resume.p99_ms),
                    ms(s.resume.p100_ms),
                    s.msgs_lost,
                    s.msgs_doubled,
                    s.calls_lost,
                    s.duplicate_calls,
                    s.server_rss_per_session_bytes
                        .map_or_else(|| "—".into(), |b| format!("{:.1}K", b / 1024.0)),
                    s.heartbeat_bytes_per_session_per_min,
                );
            }
            for s in &self.storms {
                let _ = writeln!(
                    out,
                    "  {} {}: {} msgs sent, {} delivered{}, {} reordered; server: {} resumes, {} resume failures, {} superseded, {} dead links; CPU during the {} ms resume: server {}, tool {}; listen overflows {}; slowest proxy→server connect {:.0} ms; server fds at the end {}; tool RSS/session {}",
                    s.sessions,
                    s.mode.as_str(),
                    s.msgs_sent,
                    s.msgs_delivered,
                    if s.drained {
                        ""
                    } else {
                        " (drain timed out)"
                    },
                    s.msgs_reordered,
                    opt(s.server_resumes),
                    opt(s.server_resume_failures),
                    opt(s.server_superseded),
                    opt(s.server_dead_links),
                    s.resume_wall_ms,
                    ms(s.server_cpu_ms_during_resume),
                    ms(s.tool_cpu_ms_during_resume),
                    opt(s.listen_overflows),
                    s.slowest_upstream_connect_ms,
                    opt(s.server_fds_end),
                    s.tool_rss_per_session_bytes
                        .map_or_else(|| "—".into(), |b| format!("{:.1} KiB", b / 1024.0)),
                );
                if !s.error_samples.is_empty() {
                    let _ = writeln!(
                        out,
                        "    {} session errors, e.g. {}",
                        s.session_errors,
                        s.error_samples.join("; ")
                    );
                }
            }
        }
        if let Some(d) = &self.dead_link {
            let _ = writeln!(
                out,
                "\nDead-link detection (black hole), {} sessions, {} msgs/s each",
                d.sessions, d.rate_per_session
            );
            let _ = writeln!(
                out,
                "  client noticed: {}/{}  median {}  p99 {}  max {}",
                d.client_noticed,
                d.sessions,
                ms(d.client.map(|s| s.median_ms)),
                ms(d.client.map(|s| s.p99_ms)),
                ms(d.client.map(|s| s.max_ms)),
            );
            let _ = writeln!(
                out,
                "  server noticed: {}/{}  median {}  max {}  (metrics polled every {} ms)",
                d.server_noticed,
                d.sessions,
                ms(d.server_median_ms),
                ms(d.server_max_ms),
                d.poll_ms
            );
        }
        if let Some(r) = &self.resume_latency {
            let _ = writeln!(
                out,
                "\nSingle-session resume, link back → resumed, {} resumes",
                r.iterations
            );
            let _ =
                writeln!(
                out,
                "  median {}  p99 {}  max {}  recovered {}/{}  msgs {} sent, {} lost, {} doubled",
                r.latency.map_or_else(|| "—".into(), |s| format!("{:.1} ms", s.median_ms)),
                r.latency.map_or_else(|| "—".into(), |s| format!("{:.1} ms", s.p99_ms)),
                r.latency.map_or_else(|| "—".into(), |s| format!("{:.1} ms", s.max_ms)),
                r.recovered,
                r.iterations,
                r.msgs_sent,
                r.msgs_lost,
                r.msgs_doubled
            );
            if r.errors > 0 {
                let _ = writeln!(
                    out,
                    "  {} errors, e.g. {}",
                    r.errors,
                    r.error_samples.join("; ")
                );
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\nTargets");
            for t in &self.targets {
                let mark = match t.met {
                    Some(true) => "met   ",
                    Some(false) => "MISSED",
                    None => "n/a   ",
                };
                let _ = writeln!(out, "  [{mark}] {} — {}", t.target, t.measured);
            }
        }
        out
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counts_lost_doubled_and_calls() {
        let a = SessionResult {
            sent: 3,
            counts: vec![1, 1],
            call_ok: true,
            calls_in_map: 1,
            ..Default::default()
        };
        let b = SessionResult {
            sent: 2,
            counts: vec![1, 2, 1],
            call_ok: true,
            calls_in_map: 1,
            ..Default::default()
        };
        let o = outcome(&[a, b]);
        assert_eq!(o.sent, 5);
        assert_eq!(o.lost, 0);
        assert_eq!(o.doubled, 1);
        assert_eq!(o.delivered, 5);
        assert_eq!(o.calls_lost, 0);

        let a = SessionResult {
            sent: 2,
            counts: vec![0, 1],
            call_ok: true,
            calls_in_map: 2,
            ..Default::default()
        };
        let b = SessionResult {
            sent: 2,
            counts: vec![1],
            call_ok: false,
            calls_in_map: 1,
            ..Default::default()
        };
        let o = outcome(&[a, b]);
        assert_eq!(o.lost, 2);
        assert_eq!(o.calls_lost, 1);
        assert_eq!(o.duplicate_calls, 1);
    }

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }

    #[test]
    fn resume_times_count_only_recovered_after_the_drop() {
        let (t, n) = resume_times(&[Some((1_100, true)), Some((1_050, false)), None], 1_000);
        assert_eq!((t, n), (vec![100.0], 1));
    }
}
