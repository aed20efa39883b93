//! Several real `holdfast-server --cluster` processes on one throwaway Redis, with
//! native clients: a call whose two people are on different processes, a process
//! SIGKILLed under traffic (its people reconnect to another, as a load balancer sends
//! them, and resume the same call), crossed invites on two processes, a grace window
//! armed on a process that dies, a rolling restart of every process.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::native::{active_call, connected};
use common::process::{
    assert_delivered, client_at, collect, exchange, note, send, Balancer, Seen, ServerProcess,
    GRACE_MS, WAIT,
};
use common::redis::RedisServer;
use holdfast::engine::client::Event;
use holdfast::engine::SplitMix;
use holdfast::native::{now_ms, NativeClient};
use holdfast::protocol::EndReason;
use std::time::Duration;

/// Flags of every process here: one cluster, dead processes noticed within 1 s.
const CLUSTER: &[&str] = &["--cluster", "--lease-ttl", "1s"];

fn node(redis: &RedisServer) -> ServerProcess {
    ServerProcess::start_with(redis, CLUSTER)
}

/// A client that reaches the cluster through a balancer preferring `first`, then the
/// others in order (the first one whose `/readyz` answers).
async fn client_via(backends: Vec<u16>, token: &str) -> (NativeClient, Balancer) {
    let balancer = Balancer::start(backends).await;
    (client_at(&balancer.url(), token, vec![]), balancer)
}

#[tokio::test]
async fn a_call_across_two_processes_relays_both_ways_exactly_once() {
    let redis = RedisServer::start();
    let (p1, p2) = (node(&redis), node(&redis));
    let mut alice = client_at(&p1.url(), "alice", vec![]);
    let mut bob = client_at(&p2.url(), "bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let (seen_a, seen_b, ()) = exchange(&mut alice, &mut bob, &call, 80, 80, async || {}).await;
    assert_delivered(&seen_a, &seen_b, 80, "no faults");
    assert_eq!(seen_a.resumed + seen_b.resumed, 0);
    // Each process shows its own socket, and the whole cluster's view from Redis.
    for p in [&p1, &p2] {
        assert_eq!(p.metric("holdfast_connections").await, Some(1.0));
        assert_eq!(p.metric("holdfast_cluster_nodes").await, Some(2.0));
        assert_eq!(
            p.metric("holdfast_cluster_sessions_attached").await,
            Some(2.0)
        );
        assert_eq!(p.metric("holdfast_cluster_calls").await, Some(1.0));
        assert_eq!(p.metric("holdfast_cluster_users_online").await, Some(2.0));
        let taken = p.metric("holdfast_txns_total{outcome=\"taken\"}").await;
        assert!(
            taken.is_some_and(|t| t >= 1.0),
            "each process counts the transactions Redis took: {taken:?}"
        );
        let refused = p.metric("holdfast_txns_total{outcome=\"refused\"}").await;
        assert!(refused.is_some(), "and those it refused");
    }
    // A hang-up on one process ends the call for the whole cluster.
    let id = call.clone();
    alice.with(move |e, now| e.hangup(&id, now)).await.unwrap();
    bob.expect(WAIT, |e| matches!(e, Event::CallEnded { .. }).then_some(()))
        .await
        .unwrap();
    assert_eq!(p2.metric("holdfast_cluster_calls").await, Some(0.0));
}

#[tokio::test]
async fn a_sigkilled_process_s_people_resume_the_same_call_on_another() {
    for seed in 1..=3u64 {
        let redis = RedisServer::start();
        let (mut p1, p2) = (node(&redis), node(&redis));
        let (mut alice, _lb_a) = client_via(vec![p1.port, p2.port], "alice").await;
        let (mut bob, _lb_b) = client_via(vec![p2.port, p1.port], "bob").await;
        let call = active_call(&mut alice, &mut bob, WAIT).await;
        let at = 5 + SplitMix(seed).next_u64() % 40;
        let (seen_a, seen_b, ()) =
            exchange(&mut alice, &mut bob, &call, 60, at, async || p1.kill()).await;
        let label = format!("seed {seed}, killed at {at}");
        assert_delivered(&seen_a, &seen_b, 60, &label);
        assert!(
            seen_a.resumed >= 1,
            "alice resumed on the other process: {label}"
        );
        send(&alice, &call, 9_999).await;
        let mut after = Seen::default();
        collect(&mut bob, &mut after, 1).await;
        assert_eq!(after.signals, [9_999], "{label}");
    }
}

#[tokio::test]
async fn crossed_invites_on_two_processes_make_one_call() {
    let redis = RedisServer::start();
    let (p1, p2) = (node(&redis), node(&redis));
    let mut alice = client_at(&p1.url(), "alice", vec![]);
    let mut bob = client_at(&p2.url(), "bob", vec![]);
    connected(&mut alice, WAIT).await;
    connected(&mut bob, WAIT).await;
    let (a, b) = tokio::join!(
        alice.with(|e, now| e.call("bob", None, None, now)),
        bob.with(|e, now| e.call("alice", None, None, now)),
    );
    a.unwrap();
    b.unwrap();
    let mut ids = Vec::new();
    for c in [&mut alice, &mut bob] {
        let started = c
            .expect(WAIT, |e| match e {
                Event::CallStarted { call, .. } => Some(call.id.clone()),
                _ => None,
            })
            .await
            .unwrap();
        ids.push(started);
    }
    let (id_a, id_b) = (ids[0].clone(), ids[1].clone());
    assert_eq!(id_a, id_b, "both see one call");
    let mut conn = redis.connection().await;
    let calls: Vec<String> = redis::cmd("KEYS")
        .arg("hf:{c:*}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
}

#[tokio::test]
async fn a_grace_window_armed_on_a_process_that_dies_ends_the_call_at_its_deadline() {
    let redis = RedisServer::start();
    let (p1, mut p2) = (node(&redis), node(&redis));
    let mut alice = client_at(&p1.url(), "alice", vec![]);
    let mut bob = client_at(&p2.url(), "bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    // Bob's page goes away; p2 arms his grace window, then dies.
    bob.close_tab().await;
    let deadline = alice
        .expect(WAIT, |e| match e {
            Event::ParticipantDisconnected { deadline, .. } => Some(*deadline),
            _ => None,
        })
        .await
        .unwrap();
    p2.kill();
    let (at, reason) = alice
        .expect(Duration::from_millis(GRACE_MS) + WAIT, |e| match e {
            Event::CallEnded {
                call: c, reason, ..
            } if *c == call => Some((now_ms(), *reason)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, EndReason::ReconnectFailed);
    assert!(
        at + 50 >= deadline && at <= deadline + 1_000,
        "ended at {at}, deadline {deadline}"
    );
    // Once: nothing else ends it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = alice
        .drain_events()
        .into_iter()
        .filter(|e| matches!(e, Event::CallEnded { .. }))
        .count();
    assert_eq!(again, 0);
    drop(p1);
}

#[tokio::test]
async fn a_rolling_restart_of_every_process_under_traffic_loses_nothing() {
    let redis = RedisServer::start();
    let (mut p1, mut p2) = (node(&redis), node(&redis));
    let (mut alice, _lb_a) = client_via(vec![p1.port, p2.port], "alice").await;
    let (mut bob, _lb_b) = client_via(vec![p2.port, p1.port], "bob").await;
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
    // SIGTERM one process at a time and start it again, with payloads flowing.
    for (round, p) in [&mut p1, &mut p2].into_iter().enumerate() {
        let (a, b, ()) = exchange(&mut alice, &mut bob, &call, 30, 10, async || {
            p.terminate();
            p.spawn();
        })
        .await;
        assert_delivered(&a, &b, 30, &format!("round {round}"));
        for (seen, part) in [(&mut seen_a, a), (&mut seen_b, b)] {
            seen.resumed += part.resumed;
        }
    }
    assert!(
        seen_a.resumed + seen_b.resumed >= 2,
        "both moved at least once"
    );
    for ev in alice.drain_events() {
        note(&mut seen_a, ev);
    }
    assert_eq!(seen_a.ended, None);
}

/// Waits until `p` answers `/readyz` (it has claimed the database and can serve).
async fn ready(p: &ServerProcess) {
    let started = std::time::Instant::now();
    while p.get("/readyz").await != 200 {
        assert!(started.elapsed() < WAIT, "the process never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `holdfast-server` on `redis` with `extra` flags, expecting it to refuse to
/// serve: its exit status and what it printed.
fn refused(redis: &RedisServer, extra: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast-server"))
        .args(["--dev", "--listen", "127.0.0.1:0", "--store", &redis.url()])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("holdfast-server starts");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            panic!("a server of the other kind kept running on the database");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

#[tokio::test]
async fn a_database_serves_one_kind_of_server_and_the_other_is_refused_at_start() {
    // A cluster's database: a process started without --cluster exits with the reason.
    let redis = RedisServer::start();
    let p1 = node(&redis);
    ready(&p1).await;
    let (status, err) = refused(&redis, &[]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("started with --cluster") && err.contains("another database"),
        "says why and what to do: {err}"
    );
    // ...and the cluster goes on serving, its state untouched.
    let mut alice = client_at(&p1.url(), "alice", vec![]);
    let mut bob = client_at(&p1.url(), "bob", vec![]);
    active_call(&mut alice, &mut bob, WAIT).await;
    assert_eq!(p1.get("/readyz").await, 200);

    // A single writer's database: a --cluster process exits with the reason.
    let other = RedisServer::start();
    let single = ServerProcess::start(&other);
    ready(&single).await;
    let (status, err) = refused(&other, CLUSTER);
    assert!(!status.success(), "{err}");
    assert!(err.contains("started without --cluster"), "{err}");
    assert_eq!(single.get("/readyz").await, 200);
}
