//! `holdfast-load restart` (the library behind it) against the real `holdfast-server`
//! binary on a throwaway redis-server: 20 sessions in calls with traffic, the server
//! SIGKILLed (then, in a second run, SIGTERMed) and started again on the same port;
//! every session must resume with nothing lost or doubled. Keeps the benchmark's
//! restart figure working; the figures themselves are in the README.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::load::assert_nothing_lost;
use common::redis::RedisServer;
use holdfast::load::{self, RestartReport, RestartSignal, ServerSpec, Settings};
use std::time::Duration;

const SESSIONS: usize = 20;

async fn restart(redis: &RedisServer, signal: RestartSignal) -> RestartReport {
    load::raise_nofile_limit(load::fds_needed(SESSIONS * 3));
    let spec = ServerSpec::Spawn {
        bin: env!("CARGO_BIN_EXE_holdfast-server").into(),
        args: vec!["--store".into(), redis.url()],
    };
    let settings = Settings::quick(SESSIONS);
    let run = load::restart(&spec, &settings, signal);
    let r = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("{} restart took over 30 s", signal.as_str()))
        .unwrap_or_else(|e| panic!("{} restart failed: {e}", signal.as_str()));
    let show = format!("{r:#?}");
    assert_eq!(r.sessions, SESSIONS, "{show}");
    assert_eq!(r.recovered, SESSIONS, "100% resumed: {show}");
    assert!(r.resume.p100_ms.is_some(), "{show}");
    assert_nothing_lost(&r.delivery, &show);
    // No page is told anything it should not hear: an error here was a frame of someone
    // else's session arriving before the welcome.
    assert_eq!(r.session_errors, 0, "{show}");
    assert_eq!(
        r.server_resumes,
        Some(SESSIONS as u64),
        "the new process resumed every session: {show}"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_exactly_once_after_the_server_is_killed() {
    let redis = RedisServer::start();
    let r = restart(&redis, RestartSignal::Kill).await;
    assert!(r.old_exit_ms.is_some(), "SIGKILL ends the process: {r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_exactly_once_after_a_graceful_restart() {
    let redis = RedisServer::start();
    restart(&redis, RestartSignal::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_refuses_a_server_without_a_durable_store() {
    let spec = ServerSpec::Spawn {
        bin: env!("CARGO_BIN_EXE_holdfast-server").into(),
        args: vec![],
    };
    let err = load::restart(&spec, &Settings::quick(2), RestartSignal::Kill)
        .await
        .expect_err("a memory-store restart loses every session");
    assert!(err.to_string().contains("--store"), "{err}");
}

/// The relay figure on Redis reads the server's own hold times: how long each relayed
/// message (and acknowledgement) waited for its write, which is all the store adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_figure_on_redis_reads_the_servers_hold_times() {
    let redis = RedisServer::start();
    load::raise_nofile_limit(load::fds_needed(SESSIONS * 3));
    let spec = ServerSpec::Spawn {
        bin: env!("CARGO_BIN_EXE_holdfast-server").into(),
        args: vec!["--store".into(), redis.url()],
    };
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        load::relay_latency(&spec, &Settings::quick(SESSIONS), "redis"),
    )
    .await
    .expect("relay on Redis took over 30 s")
    .expect("relay latency figure");
    assert!(
        r.msgs_sent > 0 && r.msgs_lost == 0 && r.msgs_doubled == 0,
        "{r:#?}"
    );
    let hold = r.server_hold.expect("the server's hold histogram was read");
    // Every relayed message waits for its own write, and so does its acknowledgement.
    assert!(hold.outputs >= r.msgs_sent, "{r:#?}");
    assert!((0.0..=1.0).contains(&hold.within_2ms), "{r:#?}");
    assert!(hold.p99_le_ms.is_some(), "{r:#?}");
    // And the writes those outputs waited for, from the server's write histogram.
    assert!(hold.writes > 0 && hold.write_p99_le_ms.is_some(), "{r:#?}");
}
