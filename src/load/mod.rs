//! `holdfast-load`: the numbers users choose a signaling layer by, measured with the
//! real client engine (through the native driver) against a real `holdfast-server`.
//!
//! Three figures, each bounded in count and time and run on 127.0.0.1 only:
//! - [`storm()`]: N sessions paired into active calls with a steady stream of relayed
//!   payloads; every link is dropped at once ([`DropMode`]: clean close, reset,
//!   half-open) and the tool measures how many sessions recover, how fast, and whether
//!   any payload or call was lost or doubled. It also reads the server's resident
//!   memory per idle session and the heartbeat traffic per session.
//! - [`dead_link()`]: every link is black-holed (nothing passes, nothing closes); how
//!   long until the client and the server notice.
//! - [`resume_latency`]: one session loses its link again and again; the time from the
//!   link coming back (the browser's `online` event) to `resumed`.
//! - [`restart()`]: N sessions in calls with traffic, on a server with a durable store;
//!   the server process is killed (or SIGTERMed) and started again on the same port;
//!   the time from the new process listening to every session resumed, and whether
//!   anything was lost or doubled.
//! - [`relay_latency`]: send→receive time of payloads between paired sessions, run
//!   once per store to see what the store adds.
//!
//! Links run through a small TCP proxy inside the tool ([`proxy`]), which is how links
//! are dropped. The server is a `holdfast-server` child process started for each run
//! (so its memory can be read from `/proc`), or an external one on loopback
//! ([`ServerSpec::Target`]).
//!
//! A fourth, [`chaos()`], is a soak under random faults counted by an oracle.
//!
//! One file per part: the figures ([`storm`](mod@storm), [`dead_link`](mod@dead_link),
//! [`resume`]), the paired sessions they drive (`fleet`, over `links`), what the
//! run measured and how it is printed ([`report`]), and what is read from the host
//! ([`host`]: `/proc`, the open-files limit, the date).

pub mod chaos;
pub mod cli;
pub mod dead_link;
mod fleet;
pub mod host;
pub mod hostile;
mod links;
mod nodes;
pub mod proxy;
pub mod relay;
pub mod report;
pub mod restart;
pub mod resume;
mod session;
pub mod settings;
pub mod stats;
pub mod storm;
pub mod target;
pub mod worker;

pub use chaos::{chaos, ChaosReport, ChaosSettings};
pub use dead_link::dead_link;
pub use host::{fds_needed, raise_nofile_limit, today, tool_rss_baseline, Machine};
pub use proxy::{Action, Proxy, Traffic};
pub use relay::{relay_latency, relay_latency_across};
pub use report::{
    DeadLinkReport, Delivery, RelayLatencyReport, Report, RestartReport, ResumeLatencyReport,
    ResumeTimes, StormReport, TargetCheck,
};
pub use restart::{restart, rolling_restart, RestartSignal};
pub use resume::resume_latency;
pub use settings::{ProxyWorkers, Settings};
pub use stats::Summary;
pub use storm::{storm, storm_across, DropMode};
pub use target::{Server, ServerSpec};
pub use worker::RemoteProxy;
