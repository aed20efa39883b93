//! What a run measured ([`Report`] and one report per figure), how each figure stands
//! against the product's targets, and the plain-text table. The JSON form is these
//! types serialized as they are (field names are part of the tool's output).

use super::host::Machine;
use super::stats::{kth, Summary};
use super::storm::DropMode;
use serde::Serialize;

/// Times from the drop until a share of all sessions had resumed with nothing lost
/// (None: that share never got there).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResumeTimes {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p100_ms: Option<f64>,
}

impl ResumeTimes {
    /// From the sorted times at which sessions resumed, out of `n` sessions in all.
    pub fn of(sorted: &[f64], n: usize) -> Self {
        Self {
            p50_ms: kth(sorted, n.div_ceil(2)),
            p99_ms: kth(sorted, (n * 99).div_ceil(100)),
            p100_ms: kth(sorted, n),
        }
    }
}

/// One resume storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub mode: DropMode,
    /// Server processes (above 1: cluster nodes on one Redis, `storm --nodes K`).
    pub nodes: usize,
    pub sessions: usize,
    pub calls: usize,
    pub rate_per_session: f64,
    /// Links dropped at once (at the clients: the sessions told to break theirs).
    pub links_dropped: usize,
    /// Where they were dropped: `clients` (each client broke its own socket) or
    /// `proxy` (a TCP proxy between the clients and the server).
    pub drops_at: &'static str,
    /// Sessions that resumed with nothing lost (`Resumed { recovered: true }`).
    pub recovered: usize,
    pub recovered_fraction: f64,
    /// Sessions that came back as a new session (state rebuilt, `recovered: false`).
    pub resume: ResumeTimes,
    #[serde(flatten)]
    pub delivery: Delivery,
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
    /// On a cluster: transactions Redis took and refused from the drop to the end.
    pub server_txns_taken: Option<u64>,
    pub server_txns_refused: Option<u64>,
    /// Server CPU time from the drop until every session resumed.
    pub server_cpu_ms_during_resume: Option<f64>,
    /// CPU time of this tool (clients and proxies) over the same window.
    pub tool_cpu_ms_during_resume: Option<f64>,
    /// Server CPU per second of wall time under the same sessions and traffic before
    /// the drop (heartbeats and payloads): the share of the resume window's CPU that
    /// the resumes themselves did not cause.
    pub server_cpu_ms_per_s_steady: Option<f64>,
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
    /// Hostile clients flooding the server from before the drop until the end.
    pub hostile: Option<super::hostile::HostileTally>,
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

/// What became of a run's payloads, calls and sessions, counted by the clients: the
/// same in every storm and restart report.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Delivery {
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
    /// Sessions that came back as a new session (state rebuilt, `recovered: false`).
    pub sessions_lost: usize,
}

/// One server restart under load (see [`restart`](super::restart())).
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    pub signal: super::restart::RestartSignal,
    pub sessions: usize,
    pub calls: usize,
    pub rate_per_session: f64,
    /// From the signal until the old process exited (None: it had to be killed).
    pub old_exit_ms: Option<u64>,
    /// From the signal until the new process was listening.
    pub down_ms: u64,
    /// From the old process's exit until the new one was listening.
    pub restart_ms: u64,
    /// Sessions that resumed with nothing lost (`Resumed { recovered: true }`).
    pub recovered: usize,
    pub recovered_fraction: f64,
    /// Resumes reported before the new process listened (against the old one while
    /// it stopped); their time counts as 0.
    pub resumed_before_listening: usize,
    /// From the new process listening until a share of the sessions had resumed.
    pub resume: ResumeTimes,
    #[serde(flatten)]
    pub delivery: Delivery,
    /// The new process's counters (it started from zero).
    pub server_resumes: Option<u64>,
    pub server_resume_failures: Option<u64>,
    pub session_errors: u64,
    pub error_samples: Vec<String>,
    pub setup_ms: u64,
    pub total_ms: u64,
}

/// A rolling restart of every server process of a cluster, one after another
/// (`restart --nodes K`), under paired sessions in calls with traffic.
#[derive(Debug, Clone, Serialize)]
pub struct RollingReport {
    pub signal: super::restart::RestartSignal,
    pub nodes: usize,
    pub sessions: usize,
    pub calls: usize,
    pub rate_per_session: f64,
    pub steps: Vec<RollingStep>,
    #[serde(flatten)]
    pub delivery: Delivery,
    pub total_ms: u64,
}

/// One process of a rolling restart: its sessions move to the others at once.
#[derive(Debug, Clone, Serialize)]
pub struct RollingStep {
    pub node: usize,
    /// Sockets the process held when it was signalled.
    pub sessions_on_node: usize,
    /// Of those, resumed (`recovered: true`) elsewhere.
    pub recovered: usize,
    /// From the signal until a share of the process's sessions resumed.
    pub resume: ResumeTimes,
    /// From the signal until the old process exited (None: it had to be killed).
    pub old_exit_ms: Option<u64>,
}

/// Relay latency on one store (see [`relay_latency`](super::relay_latency)).
#[derive(Debug, Clone, Serialize)]
pub struct RelayLatencyReport {
    /// `memory` or the store URL the server was started with.
    pub store: String,
    pub sessions: usize,
    pub rate_per_session: f64,
    pub window_ms: u64,
    /// Send→receive, every payload of the window.
    pub latency: Option<Summary>,
    pub msgs_sent: u64,
    pub drained: bool,
    pub msgs_lost: u64,
    pub msgs_doubled: u64,
    /// How long the server's outputs waited for the store in the window, from its own
    /// `holdfast_store_hold_seconds` (None: the memory store).
    pub server_hold: Option<HoldFigures>,
}

/// The server's hold times over a window (see [`RelayLatencyReport::server_hold`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HoldFigures {
    /// Outputs held for a write.
    pub outputs: u64,
    /// Share released within 2 ms.
    pub within_2ms: f64,
    /// Upper bound of the histogram bucket holding the 99th percentile (ms).
    pub p99_le_ms: Option<f64>,
    /// Store writes in the window, and the bound of the bucket holding their 99th
    /// percentile (ms): a hold much longer than its write waited before the write.
    pub writes: u64,
    pub write_p99_le_ms: Option<f64>,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub server: String,
    pub storms: Vec<StormReport>,
    pub dead_link: Option<DeadLinkReport>,
    pub resume_latency: Option<ResumeLatencyReport>,
    pub restarts: Vec<RestartReport>,
    /// Rolling restarts of a cluster (`restart --nodes K`).
    pub rolling: Vec<RollingReport>,
    pub relay: Vec<RelayLatencyReport>,
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
                && s.delivery.msgs_lost == 0
                && s.delivery.msgs_doubled == 0
                && s.delivery.calls_lost == 0
                && s.delivery.duplicate_calls == 0;
            t.push(TargetCheck {
                target: format!(
                    "{} sessions{}, {} drop: 100% recovered within 1 s, 0 lost, 0 doubled",
                    s.sessions,
                    if s.nodes > 1 {
                        format!(" over {} processes", s.nodes)
                    } else {
                        String::new()
                    },
                    s.mode.as_str()
                ),
                measured: format!(
                    "{:.2}% recovered, 100% at {}, {} lost, {} doubled, {} calls lost, {} duplicate calls",
                    s.recovered_fraction * 100.0,
                    ms(s.resume.p100_ms),
                    s.delivery.msgs_lost,
                    s.delivery.msgs_doubled,
                    s.delivery.calls_lost,
                    s.delivery.duplicate_calls
                ),
                met: Some(clean && s.resume.p100_ms.is_some_and(|p| p <= 1_000.0)),
            });
        }
        for r in &self.rolling {
            let clean = r.delivery.msgs_lost == 0
                && r.delivery.msgs_doubled == 0
                && r.delivery.calls_lost == 0
                && r.delivery.duplicate_calls == 0
                && r.delivery.sessions_lost == 0;
            let slowest = r
                .steps
                .iter()
                .map(|s| s.resume.p100_ms)
                .try_fold(0.0f64, |acc, p| p.map(|p| acc.max(p)));
            let all_back = r.steps.iter().all(|s| s.recovered >= s.sessions_on_node);
            t.push(TargetCheck {
                target: format!(
                    "rolling restart ({}) of {} processes, {} sessions: 100% resumed within 1 s of each restart, 0 calls lost, 0 lost, 0 doubled",
                    r.signal.as_str(),
                    r.nodes,
                    r.sessions
                ),
                measured: format!(
                    "slowest step 100% at {}, {} lost, {} doubled, {} calls lost",
                    ms(slowest),
                    r.delivery.msgs_lost,
                    r.delivery.msgs_doubled,
                    r.delivery.calls_lost
                ),
                met: Some(clean && all_back && slowest.is_some_and(|p| p <= 1_000.0)),
            });
        }
        for r in &self.restarts {
            let clean = r.recovered == r.sessions
                && r.delivery.msgs_lost == 0
                && r.delivery.msgs_doubled == 0
                && r.delivery.calls_lost == 0
                && r.delivery.duplicate_calls == 0;
            t.push(TargetCheck {
                target: format!(
                    "{} sessions, server restart ({}): 100% resumed within 1 s of the new process listening, 0 lost, 0 doubled",
                    r.sessions,
                    r.signal.as_str()
                ),
                measured: format!(
                    "{:.2}% resumed, 100% at {}, {} lost, {} doubled, {} calls lost",
                    r.recovered_fraction * 100.0,
                    ms(r.resume.p100_ms),
                    r.delivery.msgs_lost,
                    r.delivery.msgs_doubled,
                    r.delivery.calls_lost
                ),
                met: (r.sessions >= 1_000)
                    .then_some(clean && r.resume.p100_ms.is_some_and(|p| p <= 1_000.0)),
            });
        }
        if let (Some(mem), Some(other)) = (
            self.relay.iter().find(|r| r.store == "memory"),
            self.relay.iter().find(|r| r.store != "memory"),
        ) {
            let (m, o) = (
                mem.latency.map(|s| s.p99_ms),
                other.latency.map(|s| s.p99_ms),
            );
            let added = match (m, o) {
                (Some(m), Some(o)) => Some(o - m),
                _ => None,
            };
            // The store adds latency only by holding outputs until their writes are
            // done; the server's own histogram of that is the direct figure (two
            // end-to-end runs on shared cores also differ by scheduling). Without it,
            // the end-to-end difference decides.
            let hold = other.server_hold;
            t.push(TargetCheck {
                target: "relay latency p99 added by the store <= 2 ms".into(),
                measured: format!(
                    "p99 {} with memory, {} with {} ({} ms added end to end){}",
                    ms1(m),
                    ms1(o),
                    other.store,
                    added.map_or_else(|| "—".into(), |a| format!("{a:.2}")),
                    hold.map_or_else(String::new, |h| format!(
                        "; server hold p99 <= {}, {:.1}% within 2 ms",
                        h.p99_le_ms
                            .map_or_else(|| "over 1 s".into(), |v| format!("{v} ms")),
                        h.within_2ms * 100.0
                    )),
                ),
                met: Some(match hold {
                    Some(h) => h.p99_le_ms.is_some_and(|v| v <= 2.0),
                    None => added.is_some_and(|a| a <= 2.0),
                }),
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
                "{:>6} {:>5} {:>9} {:>10} {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>5} {:>9} {:>10}",
                "N",
                "procs",
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
                    "{:>6} {:>5} {:>9} {:>9.2}% {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>5} {:>9} {:>10.0}",
                    s.sessions,
                    s.nodes,
                    s.mode.as_str(),
                    s.recovered_fraction * 100.0,
                    ms(s.resume.p50_ms),
                    ms(s.resume.p99_ms),
                    ms(s.resume.p100_ms),
                    s.delivery.msgs_lost,
                    s.delivery.msgs_doubled,
                    s.delivery.calls_lost,
                    s.delivery.duplicate_calls,
                    s.server_rss_per_session_bytes
                        .map_or_else(|| "—".into(), |b| format!("{:.1}K", b / 1024.0)),
                    s.heartbeat_bytes_per_session_per_min,
                );
            }
            for s in &self.storms {
                let _ = writeln!(
                    out,
                    "  {} {} (dropped at the {}): {} msgs sent, {} delivered{}, {} reordered; server: {} resumes, {} resume failures, {} superseded, {} dead links; CPU during the {} ms resume: server {}, tool {}; listen overflows {}; slowest proxy→server connect {:.0} ms; server fds at the end {}; tool RSS/session {}",
                    s.sessions,
                    s.mode.as_str(),
                    s.drops_at,
                    s.delivery.msgs_sent,
                    s.delivery.msgs_delivered,
                    if s.delivery.drained {
                        ""
                    } else {
                        " (drain timed out)"
                    },
                    s.delivery.msgs_reordered,
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
                if let (Some(cpu), Some(steady)) =
                    (s.server_cpu_ms_during_resume, s.server_cpu_ms_per_s_steady)
                {
                    // Not subtracted from the window's CPU: while links are down,
                    // their heartbeats and payloads pause, so the baseline over the
                    // window is not known, only bounded by this rate.
                    let _ = writeln!(
                        out,
                        "    server CPU per resume {:.3} ms (all the server's CPU in the window); the same sessions and traffic without a drop cost it {:.0} ms of CPU per second",
                        cpu / s.sessions.max(1) as f64,
                        steady,
                    );
                }
                if let (Some(taken), Some(refused)) = (s.server_txns_taken, s.server_txns_refused) {
                    let _ = writeln!(
                        out,
                        "    cluster transactions from the drop to the end: {taken} taken, {refused} refused and run again",
                    );
                }
                if let Some(h) = &s.hostile {
                    let _ = writeln!(
                        out,
                        "    meanwhile {} hostile clients sent {} messages over {} connects",
                        h.clients, h.frames_sent, h.connects
                    );
                }
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
        if !self.restarts.is_empty() {
            let _ = writeln!(
                out,
                "\nServer restart (new process on the same port), times from the new process listening"
            );
            let _ = writeln!(
                out,
                "{:>6} {:>6} {:>8} {:>10} {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>5}",
                "N",
                "signal",
                "down",
                "recovered",
                "50%",
                "99%",
                "100%",
                "lost",
                "doubled",
                "calls-",
                "dup"
            );
            for r in &self.restarts {
                let _ = writeln!(
                    out,
                    "{:>6} {:>6} {:>8} {:>9.2}% {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>5}",
                    r.sessions,
                    r.signal.as_str(),
                    format!("{} ms", r.down_ms),
                    r.recovered_fraction * 100.0,
                    ms(r.resume.p50_ms),
                    ms(r.resume.p99_ms),
                    ms(r.resume.p100_ms),
                    r.delivery.msgs_lost,
                    r.delivery.msgs_doubled,
                    r.delivery.calls_lost,
                    r.delivery.duplicate_calls,
                );
            }
            for r in &self.restarts {
                let _ = writeln!(
                    out,
                    "  {} {}: old process exited after {}, new one listening {} ms later; {} msgs sent, {} delivered{}, {} reordered; {} sessions lost; new server: {} resumes, {} resume failures",
                    r.sessions,
                    r.signal.as_str(),
                    r.old_exit_ms.map_or_else(|| "— (killed)".into(), |v| format!("{v} ms")),
                    r.restart_ms,
                    r.delivery.msgs_sent,
                    r.delivery.msgs_delivered,
                    if r.delivery.drained { "" } else { " (drain timed out)" },
                    r.delivery.msgs_reordered,
                    r.delivery.sessions_lost,
                    opt(r.server_resumes),
                    opt(r.server_resume_failures),
                );
                if !r.error_samples.is_empty() {
                    let _ = writeln!(
                        out,
                        "    {} session errors, e.g. {}",
                        r.session_errors,
                        r.error_samples.join("; ")
                    );
                }
            }
        }
        for r in &self.rolling {
            let _ = writeln!(
                out,
                "\nRolling restart ({}) of {} processes on one Redis, {} sessions in {} calls, times from each signal",
                r.signal.as_str(),
                r.nodes,
                r.sessions,
                r.calls
            );
            let _ = writeln!(
                out,
                "{:>6} {:>9} {:>10} {:>8} {:>8} {:>8} {:>10}",
                "node", "sessions", "recovered", "50%", "99%", "100%", "old exit"
            );
            for s in &r.steps {
                let _ = writeln!(
                    out,
                    "{:>6} {:>9} {:>10} {:>8} {:>8} {:>8} {:>10}",
                    s.node,
                    s.sessions_on_node,
                    s.recovered,
                    ms(s.resume.p50_ms),
                    ms(s.resume.p99_ms),
                    ms(s.resume.p100_ms),
                    s.old_exit_ms
                        .map_or_else(|| "killed".into(), |v| format!("{v} ms")),
                );
            }
            let _ = writeln!(
                out,
                "  whole run: {} msgs sent, {} delivered{}, {} lost, {} doubled, {} reordered; {} calls lost, {} duplicate calls, {} sessions lost",
                r.delivery.msgs_sent,
                r.delivery.msgs_delivered,
                if r.delivery.drained { "" } else { " (drain timed out)" },
                r.delivery.msgs_lost,
                r.delivery.msgs_doubled,
                r.delivery.msgs_reordered,
                r.delivery.calls_lost,
                r.delivery.duplicate_calls,
                r.delivery.sessions_lost,
            );
        }
        if !self.relay.is_empty() {
            let _ = writeln!(out, "\nRelay latency (send → partner's engine)");
            for r in &self.relay {
                let _ = writeln!(
                    out,
                    "  {}: {} sessions, {} msgs/s each, {} ms: median {}  p99 {}  max {}  ({} msgs, {} lost, {} doubled{})",
                    r.store,
                    r.sessions,
                    r.rate_per_session,
                    r.window_ms,
                    ms1(r.latency.map(|s| s.median_ms)),
                    ms1(r.latency.map(|s| s.p99_ms)),
                    ms1(r.latency.map(|s| s.max_ms)),
                    r.msgs_sent,
                    r.msgs_lost,
                    r.msgs_doubled,
                    if r.drained { "" } else { ", drain timed out" },
                );
                if let Some(h) = r.server_hold {
                    let _ = writeln!(
                        out,
                        "    server: {} outputs waited for the store, {:.1}% released within 2 ms, p99 <= {}; {} writes, p99 <= {}",
                        h.outputs,
                        h.within_2ms * 100.0,
                        h.p99_le_ms.map_or_else(|| "over 1 s".into(), |v| format!("{v} ms")),
                        h.writes,
                        h.write_p99_le_ms.map_or_else(|| "—".into(), |v| format!("{v} ms")),
                    );
                }
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

fn ms1(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.2} ms"))
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}
