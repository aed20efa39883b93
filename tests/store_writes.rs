//! What the real server writes to Redis while a call relays: a payload costs one write
//! (it is in the partner's replay list before it goes on the wire), and the partner's
//! acknowledgement of it none of its own: it joins the next write, or is written on
//! its own a moment later, so replay lists are still trimmed.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::native::active_call;
use common::process::{collect, send, Seen, ServerProcess, WAIT};
use common::redis::RedisServer;
use redis::AsyncCommands;
use std::time::{Duration, Instant};

/// Scripts Redis has run (every batch the server writes is one fenced script).
async fn scripts_run(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Entries in every replay list in Redis.
async fn replay_entries(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let keys: Vec<String> = conn.keys("hf:{s:*").await.unwrap();
    let mut entries = 0;
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        if kind == "list" {
            entries += conn.llen::<_, usize>(&key).await.unwrap();
        }
    }
    entries
}

#[tokio::test]
async fn an_acknowledgement_costs_no_write_of_its_own_and_is_still_written_soon() {
    let redis = RedisServer::start();
    let server = ServerProcess::start(&redis);
    let mut alice = server.client("alice", vec![]);
    let mut bob = server.client("bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let mut conn = redis.connection().await;

    const N: u64 = 40;
    let before = scripts_run(&mut conn).await;
    let mut seen = Seen::default();
    for n in 1..=N {
        send(&alice, &call, n).await;
        collect(&mut bob, &mut seen, n as usize).await;
    }
    let writes = scripts_run(&mut conn).await - before;
    assert_eq!(seen.signals, (1..=N).collect::<Vec<_>>());
    // One write per payload, and (a write per acknowledgement would make it 2 N) a few
    // for acknowledgements that found no payload's write to join.
    assert!(
        (N..N * 3 / 2).contains(&writes),
        "{writes} writes for {N} payloads relayed one at a time"
    );

    // Bob acknowledged every payload: soon no replay list holds any of them.
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = replay_entries(&mut conn).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "{left} acknowledged messages still in Redis replay lists after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn acknowledgements_lost_in_a_crash_replay_nothing_twice() {
    let redis = RedisServer::start();
    let mut server = ServerProcess::start(&redis);
    let mut alice = server.client("alice", vec![]);
    let mut bob = server.client("bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let mut conn = redis.connection().await;
    // Payloads until Redis still holds one Bob has (his acknowledgement not written
    // yet), then the server killed at once: the restarted one replays it.
    let mut seen = Seen::default();
    let mut n = 0;
    loop {
        n += 1;
        send(&alice, &call, n).await;
        collect(&mut bob, &mut seen, n as usize).await;
        if replay_entries(&mut conn).await > 0 {
            break;
        }
        assert!(n < 200, "every acknowledgement was written at once");
    }
    server.kill();
    server.spawn();
    send(&alice, &call, n + 1).await;
    collect(&mut bob, &mut seen, n as usize + 1).await;
    assert_eq!(seen.signals, (1..=n + 1).collect::<Vec<_>>());
    assert!(!seen.lost, "{seen:?}");
}
