//! `holdfast-load storm --nodes 2` and `restart --nodes 2` (the library behind them)
//! against two real `holdfast-server --cluster` processes on a throwaway redis-server,
//! the two people of every call on different processes: every session must resume
//! with nothing lost, doubled or reordered, and no call lost or doubled. Keeps the
//! cluster figures working; the figures themselves are in the README.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use clap::Parser as _;
use common::load::assert_nothing_lost;
use common::redis::RedisServer;
use holdfast::load::{self, DropMode, RestartSignal, ServerSpec, Settings};
use std::time::Duration;

const SESSIONS: usize = 40;

fn on(redis: &RedisServer) -> ServerSpec {
    load::raise_nofile_limit(load::fds_needed(SESSIONS * 3));
    ServerSpec::Spawn {
        bin: env!("CARGO_BIN_EXE_holdfast-server").into(),
        args: vec!["--store".into(), redis.url()],
    }
}

async fn storm(mode: DropMode) {
    let redis = RedisServer::start();
    let (spec, settings) = (on(&redis), Settings::quick(SESSIONS));
    let run = load::storm_across(&spec, &settings, mode, 2);
    let r = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{} storm took over 60 s", mode.as_str()))
        .unwrap_or_else(|e| panic!("{} storm failed: {e}", mode.as_str()));
    let show = format!("{r:#?}");
    assert_eq!((r.nodes, r.sessions), (2, SESSIONS), "{show}");
    assert_eq!(r.links_dropped, SESSIONS, "every link was dropped: {show}");
    assert_eq!(r.recovered, SESSIONS, "100% recovered: {show}");
    assert_nothing_lost(&r.delivery, &show);
    assert_eq!(r.session_errors, 0, "{show}");
    // Counters summed over both processes: every session resumed once, on one of them.
    assert_eq!(r.server_resumes, Some(SESSIONS as u64), "{show}");
    assert!(r.server_rss_per_session_bytes.is_some(), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_two_processes_resets_every_link_and_loses_nothing() {
    storm(DropMode::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_storm_over_two_processes_loses_nothing() {
    storm(DropMode::HalfOpen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_processes_loses_nothing() {
    let redis = RedisServer::start();
    let (spec, settings) = (on(&redis), Settings::quick(SESSIONS));
    let run = load::rolling_restart(&spec, &settings, RestartSignal::Kill, 2);
    let r = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("rolling restart took over 90 s")
        .expect("rolling restart failed");
    let show = format!("{r:#?}");
    assert_eq!(r.steps.len(), 2, "{show}");
    for step in &r.steps {
        assert!(
            step.sessions_on_node > 0,
            "each process held sessions: {show}"
        );
        assert_eq!(
            step.recovered, step.sessions_on_node,
            "every session of the stopped process resumed: {show}"
        );
    }
    assert_nothing_lost(&r.delivery, &show);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_figure_runs_one_process_and_then_a_cluster_on_one_redis() {
    // `holdfast-load relay --nodes 2 --store URL`: memory, one process on the Redis,
    // then two cluster processes (on the next database: one database serves one kind).
    let redis = RedisServer::start();
    load::raise_nofile_limit(load::fds_needed(SESSIONS * 3));
    let cli = load::cli::Cli::try_parse_from([
        "holdfast-load",
        "relay",
        "--nodes",
        "2",
        "-n",
        "20",
        "--rate",
        "4",
        "--relay-window",
        "2s",
        "--store",
        &redis.url(),
        "--server-bin",
        env!("CARGO_BIN_EXE_holdfast-server"),
    ])
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(90), cli.run(20_000))
        .await
        .expect("the relay figures took over 90 s")
        .expect("the relay figures");
    assert_eq!(report.relay.len(), 3, "{report:#?}");
    for r in &report.relay {
        assert!(r.latency.is_some(), "measured: {r:#?}");
        assert!(r.msgs_sent > 0 && r.drained, "{r:#?}");
        assert_eq!((r.msgs_lost, r.msgs_doubled), (0, 0), "{r:#?}");
    }
    assert!(
        report.relay[2].store.ends_with("/1, 2 processes"),
        "{report:#?}"
    );
}
