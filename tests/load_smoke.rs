//! A small run of `holdfast-load` (the library behind the binary) against the real
//! `holdfast-server` binary: 50 sessions per drop mode must all recover with nothing
//! lost or doubled, and the dead-link and resume-latency figures must measure something.
//! Keeps the benchmark tool working; the figures themselves are in the README.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::load::assert_nothing_lost;
use holdfast::load::{self, DropMode, ProxyWorkers, ServerSpec, Settings, StormReport};

const SESSIONS: usize = 50;

fn server() -> ServerSpec {
    ServerSpec::Spawn {
        bin: env!("CARGO_BIN_EXE_holdfast-server").into(),
        args: vec![],
    }
}

async fn storm(mode: DropMode) -> StormReport {
    storm_with(mode, Settings::quick(SESSIONS)).await
}

async fn storm_with(mode: DropMode, settings: Settings) -> StormReport {
    load::raise_nofile_limit(load::fds_needed(SESSIONS * 3));
    let r = load::storm(&server(), &settings, mode)
        .await
        .unwrap_or_else(|e| panic!("{} storm failed: {e}", mode.as_str()));
    let show = format!("{r:#?}");
    assert_eq!(r.sessions, SESSIONS, "{show}");
    assert_eq!(r.links_dropped, SESSIONS, "every link was dropped: {show}");
    assert_eq!(r.recovered, SESSIONS, "100% recovered: {show}");
    assert!(r.resume.p100_ms.is_some(), "{show}");
    assert_nothing_lost(&r.delivery, &show);
    assert_eq!(r.server_resumes, Some(SESSIONS as u64), "{show}");
    assert!(r.server_rss_per_session_bytes.is_some(), "{show}");
    assert!(r.heartbeat_bytes_per_session_per_min > 0.0, "{show}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_clean_close_recovers_everything() {
    storm(DropMode::Clean).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_reset_recovers_everything() {
    storm(DropMode::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_half_open_recovers_everything() {
    let r = storm(DropMode::HalfOpen).await;
    // The server learned of each drop from the resume itself.
    assert_eq!(r.server_superseded, Some(SESSIONS as u64), "{r:#?}");
}

/// The drops made in the proxy, run in worker processes (as for 10,000 sessions under a
/// 20,000 open-files limit), instead of at the clients' own sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_through_proxy_worker_processes_recovers_everything() {
    let settings = Settings {
        proxy_workers: Some(ProxyWorkers {
            bin: env!("CARGO_BIN_EXE_holdfast-load").into(),
            count: 2,
        }),
        drops_in_proxy: true,
        ..Settings::quick(SESSIONS)
    };
    let r = storm_with(DropMode::HalfOpen, settings).await;
    assert_eq!(r.drops_at, "proxy", "{r:#?}");
    assert_eq!(r.server_superseded, Some(SESSIONS as u64), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_links_are_noticed_by_both_sides() {
    let spec = ServerSpec::Spawn {
        bin: env!("CARGO_BIN_EXE_holdfast-server").into(),
        // Short timers so the test is quick; the defaults are measured in the README.
        args: vec![
            "--heartbeat-interval=300ms".into(),
            "--heartbeat-timeout=900ms".into(),
        ],
    };
    let settings = Settings {
        sessions: 20,
        ..Settings::quick(20)
    };
    let r = load::dead_link(&spec, &settings).await.unwrap();
    let show = format!("{r:#?}");
    assert_eq!(r.client_noticed, 20, "{show}");
    assert_eq!(r.server_noticed, 20, "{show}");
    let client_max = r.client.map(|s| s.max_ms).unwrap();
    let server_max = r.server_max_ms.unwrap();
    // Never before the timeout's worth of silence can have passed since the last
    // frame (one interval), never much after the timeout.
    assert!((500.0..3_000.0).contains(&client_max), "{show}");
    assert!((500.0..3_000.0).contains(&server_max), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_resumes_replay_both_ways() {
    let r = load::resume_latency(&server(), &Settings::quick(2))
        .await
        .unwrap();
    let show = format!("{r:#?}");
    assert_eq!(r.recovered, r.iterations, "{show}");
    assert_eq!(r.msgs_sent, r.iterations as u64 * 4, "{show}");
    assert_eq!((r.msgs_lost, r.msgs_doubled), (0, 0), "{show}");
    assert!(r.latency.is_some_and(|s| s.count == r.iterations), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_latency_is_measured_on_every_payload() {
    load::raise_nofile_limit(load::fds_needed(SESSIONS * 3));
    let r = load::relay_latency(&server(), &Settings::quick(20), "memory")
        .await
        .expect("relay latency figure");
    let show = format!("{r:#?}");
    assert!(r.drained, "{show}");
    assert!(r.msgs_sent > 0, "{show}");
    assert_eq!((r.msgs_lost, r.msgs_doubled), (0, 0), "{show}");
    let latency = r.latency.expect("samples");
    assert_eq!(
        latency.count as u64, r.msgs_sent,
        "one sample per payload: {show}"
    );
    assert!(latency.p99_ms < 1_000.0, "{show}");
}
