//! Calls survive a server restart: the real `holdfast-server` process on a throwaway
//! Redis, native clients running the real client engine. The server is SIGKILLed at
//! random instants (messages in flight) or SIGTERMed, and started again on the same
//! port; Redis itself is stopped for 5 s mid-call.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::native::{active_call, connected};
use common::process::{
    assert_exactly_once, collect, exchange, note, send, Seen, ServerProcess, WAIT,
};
use common::redis::RedisServer;
use holdfast::engine::client::{Event, RejoinWithdrawn};
use holdfast::engine::SplitMix;
use holdfast::native::now_ms;
use holdfast::protocol::EndReason;
use std::time::Duration;

#[derive(Clone, Copy)]
enum Stop {
    Kill,
    Term,
}

/// A call with traffic both ways; the server stopped at a random message and started
/// again after a random pause while both sides keep sending.
async fn restart_under_traffic(seed: u64, stop: Stop) {
    let redis = RedisServer::start();
    let mut server = ServerProcess::start(&redis);
    let mut alice = server.client("alice", vec![]);
    let mut bob = server.client("bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let mut rng = SplitMix(seed);
    const N: u64 = 60;
    let stop_at = 5 + rng.next_u64() % 50;
    let pause_ms = rng.next_u64() % 400;
    let (seen_a, seen_b, ()) = exchange(&mut alice, &mut bob, &call, N, stop_at, async || {
        match stop {
            Stop::Kill => server.kill(),
            Stop::Term => server.terminate(),
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        server.spawn();
    })
    .await;
    let label = format!("seed {seed}, stopped at {stop_at}, down {pause_ms} ms");
    assert_exactly_once(&seen_a, &seen_b, N, &label);
    // Still the same call afterwards, both ways.
    send(&alice, &call, 7_777).await;
    let mut after = Seen::default();
    collect(&mut bob, &mut after, 1).await;
    assert_eq!(after.signals, [7_777]);
}

#[tokio::test]
async fn sigkill_at_random_instants_loses_and_doubles_nothing() {
    for seed in 1..=4 {
        restart_under_traffic(seed, Stop::Kill).await;
    }
}

#[tokio::test]
async fn sigterm_restart_resumes_everyone_at_once_and_loses_nothing() {
    for seed in 11..=12 {
        restart_under_traffic(seed, Stop::Term).await;
    }
}

#[tokio::test]
async fn a_grace_window_running_at_the_kill_ends_at_its_original_deadline() {
    let redis = RedisServer::start();
    let mut server = ServerProcess::start(&redis);
    let mut alice = server.client("alice", vec![]);
    let mut bob = server.client("bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    bob.close_tab().await;
    let deadline = alice
        .expect(WAIT, |e| match e {
            Event::ParticipantDisconnected { user, deadline, .. } if user == "bob" => {
                Some(*deadline)
            }
            _ => None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.spawn();
    let ended_at = alice
        .expect(WAIT, |e| match e {
            Event::CallEnded {
                call: c, reason, ..
            } if *c == call => Some((now_ms(), *reason)),
            _ => None,
        })
        .await
        .unwrap_or_else(|seen| panic!("the call never ended; saw {seen:?}"));
    assert_eq!(ended_at.1, EndReason::ReconnectFailed);
    // `deadline` is in alice's clock (the engine maps server time); the same machine.
    assert!(
        ended_at.0 + 300 >= deadline && ended_at.0 <= deadline + 1_500,
        "ended at {} for a deadline of {deadline}",
        ended_at.0
    );
}

#[tokio::test]
async fn a_rejoin_token_issued_before_the_restart_works_after_it_once() {
    let redis = RedisServer::start();
    let mut server = ServerProcess::start(&redis);
    let mut alice = server.client("alice", vec![]);
    let mut bob = server.client("bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let records = alice.records().await;
    assert_eq!(records.len(), 1);
    alice.close_tab().await;
    bob.expect(WAIT, |e| {
        matches!(e, Event::ParticipantDisconnected { .. }).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    server.spawn();

    let mut alice2 = server.client("alice", records.clone());
    alice2
        .expect(WAIT, |e| match e {
            Event::RejoinAvailable { offer } if offer.call == call => Some(()),
            _ => None,
        })
        .await
        .unwrap_or_else(|seen| panic!("no rejoin offer after the restart; saw {seen:?}"));
    let c = call.clone();
    alice2.with(move |e, now| e.rejoin(&c, now)).await.unwrap();
    let rejoined = alice2
        .expect(WAIT, |e| match e {
            Event::CallStarted {
                rejoined: true,
                call,
            } => Some(call.id.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(rejoined, call, "the same call");
    send(&bob, &call, 5).await;
    let mut seen = Seen::default();
    collect(&mut alice2, &mut seen, 1).await;
    assert_eq!(seen.signals, [5]);

    // Spent: the same token from another page is refused. The call is live on
    // alice2, so the refusal says so (it is held elsewhere) and nothing moves.
    let mut thief = server.client("alice", records);
    connected(&mut thief, WAIT).await;
    let c = call.clone();
    thief.with(move |e, now| e.rejoin(&c, now)).await.unwrap();
    thief
        .expect(WAIT, |e| {
            matches!(
                e,
                Event::RejoinWithdrawn {
                    why: RejoinWithdrawn::HeldElsewhere,
                    ..
                }
            )
            .then_some(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_away_for_5_s_mid_call_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start_with(true);
    let mut server = ServerProcess::start(&redis);
    let mut alice = server.client("alice", vec![]);
    let mut bob = server.client("bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    assert_eq!(server.get("/readyz").await, 200);
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
    for n in 1..=10 {
        send(&alice, &call, n).await;
    }
    collect(&mut bob, &mut seen_b, 10).await;

    redis.stop();
    let down_at = std::time::Instant::now();
    for n in 11..=30 {
        send(&alice, &call, n).await;
        send(&bob, &call, 1_000 + n).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing of that is durable, so nothing of it is acknowledged or delivered.
    assert_eq!(server.get("/readyz").await, 503);
    assert_eq!(server.get("/healthz").await, 503);
    let unacked = alice.with(|e, _| e.unacked_len()).await;
    assert!(unacked >= 20, "alice had {unacked} unacknowledged messages");
    for ev in bob.drain_events() {
        note(&mut seen_b, ev);
    }
    assert_eq!(
        seen_b.signals.len(),
        10,
        "delivered while Redis was away: {seen_b:?}"
    );
    // Clients keep their links: pongs go on while Redis is away.
    assert!(alice
        .drain_events()
        .iter()
        .all(|e| !matches!(e, Event::Disconnected { .. })));

    // The server dies while Redis is away: what it handled but did not store is
    // re-sent by the clients to the next process.
    server.kill();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down_at.elapsed())).await;
    redis.resume();
    server.spawn();
    collect(&mut bob, &mut seen_b, 30).await;
    collect(&mut alice, &mut seen_a, 20).await;
    assert_eq!(seen_b.signals, (1..=30).collect::<Vec<_>>());
    assert_eq!(seen_a.signals, (1_011..=1_030).collect::<Vec<_>>());
    assert!(!seen_a.lost && !seen_b.lost);
    assert_eq!(server.get("/readyz").await, 200);
}

#[tokio::test]
async fn redis_away_and_back_releases_what_was_held_without_a_restart() {
    let mut redis = RedisServer::start_with(true);
    let server = ServerProcess::start(&redis);
    let mut alice = server.client("alice", vec![]);
    let mut bob = server.client("bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    redis.stop();
    for n in 1..=20 {
        send(&alice, &call, n).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen_b = Seen::default();
    for ev in bob.drain_events() {
        note(&mut seen_b, ev);
    }
    assert!(seen_b.signals.is_empty(), "released before it was durable");
    redis.resume();
    collect(&mut bob, &mut seen_b, 20).await;
    assert_eq!(seen_b.signals, (1..=20).collect::<Vec<_>>());
    assert!(!seen_b.lost);
    let mut ready = false;
    for _ in 0..50 {
        if server.get("/readyz").await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz never recovered");
}
