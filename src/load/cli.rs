//! Command line of `holdfast-load`.

use super::{
    dead_link, resume_latency, storm, today, DropMode, Machine, Report, ServerSpec, Settings,
};
use crate::server::config::parse_duration_ms;
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

    /// Sessions (paired into calls) for the storm and dead-link figures.
    #[arg(long, short = 'n', global = true, default_value_t = 1_000)]
    pub sessions: usize,

    /// Drop modes for the storm (comma-separated; default: all three).
    #[arg(long, global = true, value_enum, value_delimiter = ',')]
    pub mode: Vec<DropMode>,

    /// Relayed payloads per second per session while traffic flows.
    #[arg(long, global = true, default_value_t = 1.0)]
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

    /// The `holdfast-server` binary to start (default: the one next to this tool).
    #[arg(long, global = true)]
    pub server_bin: Option<PathBuf>,

    /// An extra flag for the started server (repeatable), e.g.
    /// `--server-arg=--heartbeat-timeout=3s`.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Figure {
    /// Drop every link at once and measure the resume (per drop mode), server memory
    /// per idle session and heartbeat traffic.
    Storm,
    /// Black-hole every link and measure when client and server notice.
    DeadLink,
    /// Time from a single session's link coming back to `resumed`.
    Resume,
    /// All of the above.
    All,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_ms(s).map(Duration::from_millis)
}

impl Cli {
    pub fn server_spec(&self) -> ServerSpec {
        match &self.target {
            Some(url) => ServerSpec::Target { url: url.clone() },
            None => ServerSpec::Spawn {
                bin: self
                    .server_bin
                    .clone()
                    .unwrap_or_else(ServerSpec::sibling_binary),
                args: self.server_args.clone(),
            },
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            sessions: self.sessions,
            rate: self.rate,
            pad_bytes: self.pad,
            idle_window: self.idle_window,
            resume_timeout: self.resume_timeout,
            iterations: self.iterations.max(1),
            ..Settings::default()
        }
    }

    /// The figures asked for, each run once; progress goes to stderr.
    pub async fn run(&self) -> io::Result<Report> {
        let spec = self.server_spec();
        let settings = self.settings();
        let figure = self.figure.unwrap_or(Figure::All);
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
            targets: Vec::new(),
        };
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
        if matches!(figure, Figure::Storm | Figure::All) {
            for mode in modes {
                eprintln!(
                    "holdfast-load: resume storm, {} sessions, {} drop…",
                    settings.sessions,
                    mode.as_str()
                );
                report.storms.push(storm(&spec, &settings, mode).await?);
            }
        }
        report.check_targets();
        Ok(report)
    }
}
