//! Two real `holdfast-server` processes on one throwaway Redis, behind a load balancer
//! that knows nothing of sessions: one holds the store, the other stands by (not
//! ready, refusing sockets) and takes over when the first stops gracefully, dies or
//! stalls past its lease. Native clients in a call with traffic both ways resume on
//! the new holder: the same call, every message exactly once and in order. A holder
//! that stalled and wakes up after the takeover exits instead of writing.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::native::active_call;
use common::process::{
    assert_exactly_once, client_at, collect, exchange, http_status, send, Balancer, Seen,
    ServerProcess, WAIT,
};
use common::redis::RedisServer;
use std::time::{Duration, Instant};

/// The lease's time to live here: how long a standby waits for a holder that died.
const LEASE_TTL: Duration = Duration::from_secs(1);

fn node(redis: &RedisServer, name: &str) -> ServerProcess {
    ServerProcess::start_with(redis, &["--node", name, "--lease-ttl", "1s"])
}

/// Waits until `server` answers `/readyz` with 200; how long that took.
async fn ready(server: &ServerProcess, within: Duration) -> Duration {
    let started = Instant::now();
    while server.get("/readyz").await != 200 {
        assert!(
            started.elapsed() < within,
            "port {} not ready after {within:?}",
            server.port
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM: the holder tells its clients to reconnect and releases the lease.
    Term,
    /// SIGKILL: the lease expires.
    Kill,
    /// SIGSTOP past the lease, then SIGCONT after the takeover.
    Stall,
}

/// A call through the balancer with traffic both ways; the holder stopped at message
/// 15 while both sides keep sending. Returns how long the standby took to be ready.
async fn failover(stop: Stop) -> Duration {
    let redis = RedisServer::start();
    let mut a = node(&redis, "node-a");
    ready(&a, WAIT).await;
    let mut b = node(&redis, "node-b");
    // The standby: not ready, and it refuses sockets (so nobody's session starts on a
    // process that cannot write it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.get("/readyz").await, 503, "the standby says it is ready");
    let upgrade = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    assert_eq!(http_status(b.port, "/ws", &upgrade).await, 503);
    // A scrape gets an answer at once, not a request that hangs until the takeover.
    assert_eq!(b.get("/metrics").await, 503);
    assert_eq!(http_status(a.port, "/ws", &upgrade).await, 101);

    let lb = Balancer::start(vec![a.port, b.port]).await;
    let mut alice = client_at(&lb.url(), "alice", vec![]);
    let mut bob = client_at(&lb.url(), "bob", vec![]);
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    const N: u64 = 40;
    let (seen_a, seen_b, took) = exchange(&mut alice, &mut bob, &call, N, 15, async || {
        let stopped = Instant::now();
        match stop {
            Stop::Term => a.terminate(),
            Stop::Kill => a.kill(),
            Stop::Stall => a.pause(),
        }
        ready(&b, WAIT).await;
        stopped.elapsed()
    })
    .await;
    let label = format!("{stop:?}, standby ready after {took:?}");
    eprintln!("{label}");
    assert_exactly_once(&seen_a, &seen_b, N, &label);

    if let Stop::Stall = stop {
        // The stalled holder wakes after the takeover: it finds the lease gone and
        // exits (status 1) rather than write what it still holds.
        a.resume();
        let status = a
            .wait_exit(LEASE_TTL * 4)
            .expect("the stalled holder kept running after losing the store");
        assert_eq!(status.code(), Some(1), "{status:?}");
    }

    // Still the same call afterwards, both ways, on node-b.
    send(&alice, &call, 7_777).await;
    send(&bob, &call, 8_888).await;
    let (mut after_a, mut after_b) = (Seen::default(), Seen::default());
    collect(&mut bob, &mut after_b, 1).await;
    collect(&mut alice, &mut after_a, 1).await;
    assert_eq!(after_b.signals, [7_777], "{label}");
    assert_eq!(after_a.signals, [8_888], "{label}");
    assert_eq!(b.get("/readyz").await, 200);
    b.terminate();
    took
}

#[tokio::test]
async fn a_standby_takes_over_at_a_graceful_stop_and_the_call_goes_on() {
    let took = failover(Stop::Term).await;
    // Released at shutdown: the standby does not wait for the lease to expire.
    assert!(took < LEASE_TTL, "standby ready {took:?} after SIGTERM");
}

#[tokio::test]
async fn a_standby_takes_over_when_the_holder_dies_and_the_call_goes_on() {
    let took = failover(Stop::Kill).await;
    assert!(
        took >= LEASE_TTL / 2,
        "took over {took:?} after SIGKILL, before the lease could expire"
    );
}

#[tokio::test]
async fn a_holder_that_stalled_past_its_lease_exits_and_the_call_goes_on_elsewhere() {
    failover(Stop::Stall).await;
}

/// Two processes never both serve: started together, exactly one becomes ready. The
/// standby stops at once when told to (it has nothing to flush).
#[tokio::test]
async fn of_two_processes_started_together_one_serves() {
    let redis = RedisServer::start();
    let mut a = node(&redis, "node-a");
    let mut b = node(&redis, "node-b");
    let started = Instant::now();
    loop {
        let (ra, rb) = (a.get("/readyz").await, b.get("/readyz").await);
        assert!(!(ra == 200 && rb == 200), "both processes serve one store");
        if ra == 200 || rb == 200 {
            break;
        }
        assert!(started.elapsed() < WAIT, "neither became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And it stays that way past several renewals.
    for _ in 0..10 {
        let (ra, rb) = (a.get("/readyz").await, b.get("/readyz").await);
        assert_eq!(
            [ra, rb].iter().filter(|s| **s == 200).count(),
            1,
            "{ra} {rb}"
        );
        tokio::time::sleep(LEASE_TTL / 4).await;
    }
    let (standby, holder) = if a.get("/readyz").await == 200 {
        (&mut b, &a)
    } else {
        (&mut a, &b)
    };
    standby.send_signal(libc::SIGTERM);
    let status = standby
        .wait_exit(Duration::from_secs(2))
        .expect("a standby kept running after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(holder.get("/readyz").await, 200);
}
