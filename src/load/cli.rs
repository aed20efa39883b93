//! Command line of `holdfast-load`.

use super::chaos::{chaos, ChaosReport, ChaosSettings};
use super::{
    dead_link, relay_latency, relay_latency_across, restart, resume_latency, rolling_restart,
    storm, storm_across, today, DropMode, Machine, ProxyWorkers, Report, RestartSignal, ServerSpec,
    Settings,
};
use clap::{Parser, Subcommand};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// `holdfast-load`: resume storms, dead-link detection, resume latency and memory per
/// session, measured with the real client engine against a real `holdfast-server`
/// on 127.0.0.1. Every run is bounded in count and time and stops by itself.
#[derive(Debug, Clone, Parser)]
#[command(name = "holdfast-load", version, about)]
pub struct Cli {
    /// Which figure to measure (default: all of them).
    #[command(subcommand)]
    pub figure: Option<Figure>,

    /// Sessions (paired into calls) for the storm and dead-link figures (default 1000),
    /// or people in the chaos soak (default 200).
    #[arg(long, short = 'n', global = true)]
    pub sessions: Option<usize>,

    /// Drop modes for the storm (comma-separated; default: all three).
    #[arg(long, global = true, value_enum, value_delimiter = ',')]
    pub mode: Vec<DropMode>,

    /// Relayed payloads per second per session while traffic flows.
    #[arg(long, global = true, default_value_t = 0.2)]
    pub rate: f64,

    /// Extra bytes of padding in every payload.
    #[arg(long, global = true, default_value_t = 0)]
    pub pad: usize,

    /// Drops in the single-session resume figure.
    #[arg(long, global = true, default_value_t = 200)]
    pub iterations: usize,

    /// Quiet window over which heartbeat traffic is measured.
    #[arg(long, global = true, default_value = "6s", value_parser = parse_duration)]
    pub idle_window: Duration,

    /// Longest wait for every session to resume (storm) or notice (dead link).
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    pub resume_timeout: Duration,

    /// Hard limit on the whole invocation.
    #[arg(long, global = true, default_value = "30m", value_parser = parse_duration)]
    pub max_time: Duration,

    /// Load a running server instead of starting one per run: `ws://127.0.0.1:PORT/ws`
    /// (loopback only; it must run with `--dev`). Its memory is then not measured.
    #[arg(long, global = true)]
    pub target: Option<String>,

    /// The store the started server keeps sessions in, passed to it as `--store`
    /// (default: its in-memory store). `restart` needs a durable one:
    /// `redis://127.0.0.1:PORT`; `scripts/redis.sh CMD` runs CMD next to a throwaway
    /// redis-server and exports its URL as HOLDFAST_TEST_REDIS.
    #[arg(long, global = true)]
    pub store: Option<String>,

    /// Steady-traffic window of the relay latency figure.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub relay_window: Duration,

    /// The `holdfast-server` binary to start (default: the one next to this tool).
    #[arg(long, global = true)]
    pub server_bin: Option<PathBuf>,

    /// Proxy worker processes (default: as many as the open-files limit requires, 0
    /// for small runs, which keep the proxy in this process).
    #[arg(long, global = true)]
    pub proxy_workers: Option<usize>,

    /// Storms: drop the links in a TCP proxy between the clients and the server (a
    /// middlebox breaking them) instead of at the clients' own sockets. The proxy's
    /// second TCP hop costs about as much CPU as the server. A cluster storm (`--nodes`
    /// above 1) always goes through it, as its load balancer.
    #[arg(long, global = true)]
    pub drops_in_proxy: bool,

    /// An extra flag for the started server (repeatable), e.g.
    /// `--server-arg=--heartbeat-timeout=3s`.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// Hostile clients flooding the server during each storm (each its own identity,
    /// straight to the server, reconnecting when closed).
    #[arg(long, global = true, default_value_t = 0)]
    pub hostile: usize,

    /// Messages per second each hostile client sends.
    #[arg(long, global = true, default_value_t = 200)]
    pub hostile_rate: u32,

    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The figures.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Figure {
    /// Drop every link at once and measure the resume (per drop mode), server memory
    /// per idle session and heartbeat traffic.
    ///
    /// With `--nodes K` (and `--store redis://…`): K processes on the Redis
    /// (`--cluster`), the two people of every call on different ones; every link to
    /// every process is dropped at once and each session may resume on any of them.
    Storm {
        /// Server processes on the store (above 1: a cluster).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// Black-hole every link and measure when client and server notice.
    DeadLink,
    /// Time from a single session's link coming back to `resumed`.
    Resume,
    /// Kill (or SIGTERM) the server under N sessions in calls with traffic and start a
    /// new one on the same port; time from the new process listening to every session
    /// resumed, payloads lost/doubled. Needs `--store redis://…`. Not part of `all`.
    ///
    /// With `--nodes K`: K processes on the Redis (`--cluster`), the two people of
    /// every call on different ones; each process in turn is stopped and started again
    /// (a rolling restart) while its sessions resume on the others.
    Restart {
        /// How the old process is stopped.
        #[arg(long, value_enum, default_value = "both")]
        signal: SignalChoice,
        /// Server processes on the store (above 1: a rolling restart of a cluster).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// Relay latency (send → partner's engine) with the memory store, and with
    /// `--store` when given. Not part of `all`.
    Relay {
        /// Server processes on the store for a second figure across processes (the two
        /// people of every call on different ones); needs `--store`, and runs on the
        /// next database of that Redis (`/1` for `/0`).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// Resume, dead link and storm.
    All,
    /// A soak under random faults, reloads and call churn, counted by an oracle
    /// (calls lost, duplicate, stuck; payloads lost, doubled). Not part of `all`.
    Chaos(ChaosArgs),
    /// Internal: serve a proxy shard for another holdfast-load (commands on stdin).
    #[command(hide = true)]
    ProxyWorker {
        /// Where to forward: the first that accepts each connection.
        #[arg(long, value_delimiter = ',', required = true)]
        upstream: Vec<std::net::SocketAddr>,
    },
}

/// Flags of the chaos soak.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ChaosArgs {
    /// How long random actions and faults go on (then the settle time follows).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Server restarts spread over the run (SIGKILL and SIGTERM alternating); needs a
    /// durable store.
    #[arg(long, default_value_t = 0)]
    pub restarts: usize,
    /// The store the started server keeps its state in, e.g. `redis://127.0.0.1:6400`.
    #[arg(long)]
    pub store: Option<String>,
    /// Server processes (only 1 in this build).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Seed of every random choice (printed; the same seed repeats the run's choices).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Longest wait after the run for links, calls and payloads to settle.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// Which restarts to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignalChoice {
    Kill,
    Term,
    /// SIGKILL, then SIGTERM in a second run.
    Both,
}

impl SignalChoice {
    pub fn signals(self) -> &'static [RestartSignal] {
        match self {
            SignalChoice::Kill => &[RestartSignal::Kill],
            SignalChoice::Term => &[RestartSignal::Term],
            SignalChoice::Both => &[RestartSignal::Kill, RestartSignal::Term],
        }
    }
}

/// A duration flag: `1500ms`, `6s`, `30m`, `1h` (or any other humantime duration), or a
/// bare number of milliseconds, as the server's flags take them.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration: {e}"))
}

impl Cli {
    /// Sessions asked for, or the figure's default.
    pub fn sessions(&self) -> usize {
        match (&self.sessions, &self.figure) {
            (Some(n), _) => *n,
            (None, Some(Figure::Chaos(_))) => 200,
            (None, _) => 1_000,
        }
    }

    /// The chaos soak (the `chaos` figure).
    pub async fn run_chaos(&self, args: &ChaosArgs) -> io::Result<ChaosReport> {
        let seed = args.seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            let _ = getrandom::getrandom(&mut b);
            u64::from_le_bytes(b) >> 12
        });
        let store = args.store.as_deref().or(self.store.as_deref());
        let spec = self.spec_with_store(store);
        let settings = ChaosSettings {
            sessions: self.sessions(),
            duration: args.duration,
            restarts: args.restarts,
            store: store.map(str::to_owned),
            nodes: args.nodes,
            seed,
            settle: args.settle,
        };
        chaos(&spec, &settings).await
    }

    pub fn server_spec(&self) -> ServerSpec {
        self.spec_with_store(self.store.as_deref())
    }

    /// The server to load, started with `store` (None: its in-memory store).
    pub fn spec_with_store(&self, store: Option<&str>) -> ServerSpec {
        match &self.target {
            Some(url) => ServerSpec::Target { url: url.clone() },
            None => {
                let mut args = self.server_args.clone();
                if let Some(store) = store {
                    args.extend(["--store".to_owned(), store.to_owned()]);
                }
                ServerSpec::Spawn {
                    bin: self
                        .server_bin
                        .clone()
                        .unwrap_or_else(ServerSpec::sibling_binary),
                    args,
                }
            }
        }
    }

    /// Proxy workers needed for `sessions` under an open-files limit of `limit`: each
    /// process should stay under 60% of it (a worker holds two sockets per session,
    /// three while half-open links linger).
    pub fn workers_needed(sessions: usize, limit: u64) -> usize {
        let in_process = super::fds_needed(sessions);
        if in_process <= limit * 6 / 10 {
            return 0;
        }
        let per_worker = (limit * 6 / 10).max(1);
        ((sessions as u64 * 3).div_ceil(per_worker) as usize).max(2)
    }

    /// The settings, given the open-files limit in force.
    pub fn settings(&self, nofile_limit: u64) -> Settings {
        let workers = self
            .proxy_workers
            .unwrap_or_else(|| Self::workers_needed(self.sessions(), nofile_limit));
        let proxy_workers = (workers > 0).then(|| ProxyWorkers {
            bin: std::env::current_exe().unwrap_or_else(|_| "holdfast-load".into()),
            count: workers,
        });
        Settings {
            sessions: self.sessions(),
            rate: self.rate,
            pad_bytes: self.pad,
            idle_window: self.idle_window,
            resume_timeout: self.resume_timeout,
            iterations: self.iterations.max(1),
            proxy_workers,
            drops_in_proxy: self.drops_in_proxy,
            hostile: self.hostile,
            hostile_rate: self.hostile_rate,
            relay_window: self.relay_window,
            ..Settings::default()
        }
    }

    /// The figures asked for, each run once; progress goes to stderr.
    pub async fn run(&self, nofile_limit: u64) -> io::Result<Report> {
        super::tool_rss_baseline();
        let spec = self.server_spec();
        let settings = self.settings(nofile_limit);
        let figure = self.figure.clone().unwrap_or(Figure::All);
        if let Figure::ProxyWorker { .. } | Figure::Chaos(_) = figure {
            return Err(io::Error::other(
                "proxy-worker and chaos are not figures of the report",
            ));
        }
        let modes = if self.mode.is_empty() {
            DropMode::ALL.to_vec()
        } else {
            self.mode.clone()
        };
        let mut report = Report {
            date: today(),
            machine: Machine::this(),
            server: match &spec {
                ServerSpec::Spawn { bin, args } => {
                    format!("{} (started per run) {}", bin.display(), args.join(" "))
                        .trim_end()
                        .to_owned()
                }
                ServerSpec::Target { url } => url.clone(),
            },
            storms: Vec::new(),
            dead_link: None,
            resume_latency: None,
            restarts: Vec::new(),
            rolling: Vec::new(),
            relay: Vec::new(),
            targets: Vec::new(),
        };
        if let Figure::Restart { signal, nodes } = figure {
            if self.store.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "restart needs --store redis://127.0.0.1:PORT (a durable store); \
                     `scripts/redis.sh sh -c 'holdfast-load restart --store \"$HOLDFAST_TEST_REDIS\"'` \
                     runs it next to a throwaway redis-server",
                ));
            }
            for &sig in signal.signals() {
                if nodes > 1 {
                    eprintln!(
                        "holdfast-load: rolling restart ({}) of {nodes} processes, {} sessions…",
                        sig.as_str(),
                        settings.sessions
                    );
                    report
                        .rolling
                        .push(rolling_restart(&spec, &settings, sig, nodes).await?);
                    continue;
                }
                eprintln!(
                    "holdfast-load: server restart ({}), {} sessions…",
                    sig.as_str(),
                    settings.sessions
                );
                report.restarts.push(restart(&spec, &settings, sig).await?);
            }
        }
        if let Figure::Relay { nodes } = figure {
            let mut stores = vec![None];
            if self.store.is_some() {
                stores.push(self.store.as_deref());
            }
            for store in stores {
                let name = store.unwrap_or("memory");
                eprintln!(
                    "holdfast-load: relay latency, {} sessions, store {name}…",
                    settings.sessions
                );
                let spec = self.spec_with_store(store);
                report
                    .relay
                    .push(relay_latency(&spec, &settings, name).await?);
            }
            if let (Some(store), true) = (self.store.as_deref(), nodes > 1) {
                // Next to the single process's figure: on a database of its own.
                let store = &super::nodes::next_database(store);
                eprintln!(
                    "holdfast-load: relay latency across {nodes} processes, {} sessions, store {store}…",
                    settings.sessions
                );
                let spec = self.spec_with_store(Some(store));
                report
                    .relay
                    .push(relay_latency_across(&spec, &settings, store, nodes).await?);
            }
        }
        if matches!(figure, Figure::Resume | Figure::All) {
            eprintln!(
                "holdfast-load: single-session resume latency ({} drops)…",
                settings.iterations
            );
            report.resume_latency = Some(resume_latency(&spec, &settings).await?);
        }
        if matches!(figure, Figure::DeadLink | Figure::All) {
            eprintln!(
                "holdfast-load: dead-link detection ({} sessions)…",
                settings.sessions
            );
            report.dead_link = Some(dead_link(&spec, &settings).await?);
        }
        // A one-process storm without `--drops-in-proxy` starts no proxy.
        let storm_only_direct =
            matches!(figure, Figure::Storm { nodes: 1 }) && !settings.drops_in_proxy;
        if let Some(w) = settings
            .proxy_workers
            .as_ref()
            .filter(|_| !storm_only_direct)
        {
            eprintln!(
                "holdfast-load: proxy in {} worker processes (open-files limit {nofile_limit})",
                w.count
            );
        }
        let storm_nodes = match figure {
            Figure::Storm { nodes } => Some(nodes),
            Figure::All => Some(1),
            _ => None,
        };
        if let Some(nodes) = storm_nodes {
            for mode in modes {
                eprintln!(
                    "holdfast-load: resume storm, {} sessions over {nodes} process(es), {} drop…",
                    settings.sessions,
                    mode.as_str()
                );
                let run = if nodes > 1 {
                    storm_across(&spec, &settings, mode, nodes).await?
                } else {
                    storm(&spec, &settings, mode).await?
                };
                report.storms.push(run);
            }
        }
        report.check_targets();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_bare_milliseconds() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("6s"), Ok(Duration::from_secs(6)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn chaos_takes_its_own_defaults() {
        let cli = Cli::try_parse_from(["holdfast-load", "chaos", "--seed", "7"]).unwrap();
        assert_eq!(cli.sessions(), 200);
        let Some(Figure::Chaos(args)) = &cli.figure else {
            panic!("not chaos: {:?}", cli.figure)
        };
        assert_eq!(args.duration, Duration::from_secs(60));
        assert_eq!(args.seed, Some(7));
        assert_eq!(args.nodes, 1);
        let storm = Cli::try_parse_from(["holdfast-load", "storm"]).unwrap();
        assert_eq!(storm.sessions(), 1_000);
    }

    #[test]
    fn chaos_refuses_what_this_build_cannot_do() {
        let base = ChaosSettings {
            sessions: 10,
            duration: Duration::from_secs(1),
            restarts: 0,
            store: None,
            nodes: 1,
            seed: 1,
            settle: Duration::from_secs(1),
        };
        assert!(base.check().is_ok());
        let nodes = ChaosSettings {
            nodes: 3,
            ..base.clone()
        };
        assert!(nodes.check().unwrap_err().contains("--nodes 3"));
        let restarts = ChaosSettings {
            restarts: 2,
            ..base.clone()
        };
        assert!(restarts.check().unwrap_err().contains("--store"));
        let on_redis = ChaosSettings {
            restarts: 2,
            store: Some("redis://127.0.0.1:1".into()),
            ..base
        };
        assert!(on_redis.check().is_ok());
    }

    #[test]
    fn the_default_durations_parse() {
        let cli = Cli::try_parse_from(["holdfast-load", "storm"]).unwrap();
        assert_eq!(cli.idle_window, Duration::from_secs(6));
        assert_eq!(cli.resume_timeout, Duration::from_secs(30));
        assert_eq!(cli.max_time, Duration::from_secs(1_800));
    }
}
