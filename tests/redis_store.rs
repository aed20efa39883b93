//! The Redis store against a throwaway redis-server: what is written reloads as the
//! same records, replay buffers are appended and trimmed in place, windows become
//! expiries, deletions delete, and a write that failed is repaired by the next one.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::redis::RedisServer;
use holdfast::engine::reliable::{Inbox, Outbox};
use holdfast::engine::server::ServerConfig;
use holdfast::engine::store::{Call, MemoryStore, Session, Slot, Store, Tombstone};
use holdfast::protocol::{CallState, EndReason, LinkState, Peer, ServerMsg};
use holdfast::server::store::redis::{
    call_key, replay_key, session_key, user_key, RedisStore, Windows,
};
use redis::AsyncCommands;
use std::time::Duration;

const T0: u64 = 1_700_000_000_000;

fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        name: format!("{id} name"),
    }
}

fn session(id: &str, user: &str) -> Session {
    Session {
        id: id.into(),
        user: peer(user),
        secret_hash: [3; 32],
        prev_secret_hash: Some([4; 32]),
        conn: Some(7),
        detached_at: None,
        outbox: Outbox::new(),
        inbox: Inbox::new(),
        overflowed: false,
        presence: true,
        tab: None,
        call_waiting: false,
        created_at: T0,
        queued: 0,
    }
}

fn call(id: &str) -> Call {
    let slot = |user: &str, sid: &str| Slot {
        user: peer(user),
        session: Some(sid.into()),
        token_hash: Some([9; 32]),
        link: LinkState::Connected,
        deadline: None,
    };
    Call {
        id: id.into(),
        kind: Some("support".into()),
        state: CallState::Active,
        caller: slot("alice", "sa"),
        callee: slot("bob", "sb"),
        grace_ms: 60_000,
        ring_deadline: None,
        caller_detached_at: None,
        metadata: Some(serde_json::json!({"ticket": 42})),
        created_at: T0,
    }
}

fn push(store: &mut MemoryStore, sid: &str, text: &str) {
    let s = store.session_mut(sid).unwrap();
    let ack = s.inbox.last_seq();
    s.outbox.push(
        ack,
        ServerMsg::Signal {
            call: "c1".into(),
            from: "bob".into(),
            payload: serde_json::json!({ "text": text }),
        },
    );
}

fn ack(store: &mut MemoryStore, sid: &str, upto: u64) {
    store.session_mut(sid).unwrap().outbox.take_ack(upto);
}

fn windows() -> Windows {
    Windows::from_config(&ServerConfig::default())
}

async fn connect(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(&redis.url(), windows(), Duration::from_secs(1))
        .await
        .unwrap()
}

async fn commit(redis: &mut RedisStore, store: &MemoryStore) {
    redis.write(store, store.take_changes()).await.unwrap();
}

async fn reload(url: &str) -> MemoryStore {
    let mut fresh = RedisStore::connect(url, windows(), Duration::from_secs(1))
        .await
        .unwrap();
    MemoryStore::from_records(fresh.load().await.unwrap(), true).0
}

#[tokio::test]
async fn records_written_reload_as_the_same_records() {
    let server = RedisServer::start();
    let mut redis = connect(&server).await;
    let mut store = MemoryStore::with_change_tracking(true);
    store.put_session(session("sa", "alice"));
    store.put_session(session("sb", "bob"));
    store.put_call(call("c1"));
    store.set_chosen_status("carol", holdfast::protocol::PresenceStatus::Busy);
    store.add_tombstone(
        "alice",
        Tombstone {
            call: "c0".into(),
            reason: EndReason::Declined,
            at: T0,
        },
    );
    for i in 0..5 {
        push(&mut store, "sa", &format!("m{i}"));
    }
    commit(&mut redis, &store).await;
    assert_eq!(reload(&server.url()).await.records(), store.records());

    // Acknowledged messages leave, new ones join: the list follows in place.
    ack(&mut store, "sa", 3);
    push(&mut store, "sa", "m5");
    for seq in 1..=11 {
        store.session_mut("sa").unwrap().inbox.accept(seq);
    }
    commit(&mut redis, &store).await;
    let reloaded = reload(&server.url()).await;
    assert_eq!(reloaded.records(), store.records());
    let seqs: Vec<u64> = reloaded
        .session("sa")
        .unwrap()
        .outbox
        .replay()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(redis.durable_in_seq("sa"), 11);

    // Everything acknowledged: the list key goes away.
    ack(&mut store, "sa", 6);
    commit(&mut redis, &store).await;
    let mut conn = server.connection().await;
    assert!(!conn.exists::<_, bool>(replay_key("sa")).await.unwrap());
    assert_eq!(reload(&server.url()).await.records(), store.records());

    // Deletions delete.
    store.take_call("c1");
    store.take_session("sb");
    commit(&mut redis, &store).await;
    for key in [call_key("c1"), session_key("sb"), user_key("bob")] {
        assert!(
            !conn.exists::<_, bool>(&key).await.unwrap(),
            "{key} left behind"
        );
    }
    assert_eq!(reload(&server.url()).await.records(), store.records());
}

#[tokio::test]
async fn windows_become_expiries_and_unbounded_records_have_none() {
    let server = RedisServer::start();
    let mut redis = connect(&server).await;
    let now = holdfast::server::now_ms();
    let w = windows();
    let mut store = MemoryStore::with_change_tracking(true);
    store.put_session(session("sa", "alice"));
    push(&mut store, "sa", "hello");
    store.put_call(call("c1"));
    commit(&mut redis, &store).await;
    let mut conn = server.connection().await;
    for key in [
        session_key("sa"),
        replay_key("sa"),
        call_key("c1"),
        user_key("alice"),
    ] {
        assert_eq!(
            conn.pttl::<_, i64>(&key).await.unwrap(),
            -1,
            "{key} must not expire"
        );
    }

    // The socket goes away and the grace window of the call starts.
    {
        let s = store.session_mut("sa").unwrap();
        s.conn = None;
        s.detached_at = Some(now);
    }
    {
        let c = store.call_mut("c1").unwrap();
        c.caller.link = LinkState::Reconnecting;
        c.caller.deadline = Some(now + 60_000);
    }
    commit(&mut redis, &store).await;
    let ttl = |expected: u64| {
        move |got: i64| {
            let expected = expected as i64 - holdfast::server::now_ms() as i64;
            // PTTL was read before `now_ms()` here, so it may be a little larger.
            (expected - 500..=expected + 2_000).contains(&got)
        }
    };
    let session_ttl = conn.pttl::<_, i64>(session_key("sa")).await.unwrap();
    assert!(
        ttl(now + w.resume_window_ms + w.slack_ms)(session_ttl),
        "{session_ttl}"
    );
    let list_ttl = conn.pttl::<_, i64>(replay_key("sa")).await.unwrap();
    assert!(
        ttl(now + w.resume_window_ms + w.slack_ms)(list_ttl),
        "{list_ttl}"
    );
    let call_ttl = conn.pttl::<_, i64>(call_key("c1")).await.unwrap();
    assert!(ttl(now + 60_000 + w.slack_ms)(call_ttl), "{call_ttl}");

    // Back again: nothing bounds them any more.
    {
        let s = store.session_mut("sa").unwrap();
        s.conn = Some(9);
        s.detached_at = None;
        let c = store.call_mut("c1").unwrap();
        c.caller.link = LinkState::Connected;
        c.caller.deadline = None;
    }
    commit(&mut redis, &store).await;
    for key in [session_key("sa"), replay_key("sa"), call_key("c1")] {
        assert_eq!(
            conn.pttl::<_, i64>(&key).await.unwrap(),
            -1,
            "{key} must not expire"
        );
    }

    // A user with only tombstones lives as long as they count.
    store.take_call("c1");
    store.take_session("sa");
    store.add_tombstone(
        "alice",
        Tombstone {
            call: "c1".into(),
            reason: EndReason::Hangup,
            at: now,
        },
    );
    commit(&mut redis, &store).await;
    let user_ttl = conn.pttl::<_, i64>(user_key("alice")).await.unwrap();
    assert!(ttl(now + w.slack_ms)(user_ttl), "{user_ttl}");
}

#[tokio::test]
async fn a_failed_write_is_repaired_by_the_next_one_without_doubling_the_replay_buffer() {
    let mut server = RedisServer::start_with(true);
    let mut redis = connect(&server).await;
    let mut store = MemoryStore::with_change_tracking(true);
    store.put_session(session("sa", "alice"));
    push(&mut store, "sa", "m0");
    push(&mut store, "sa", "m1");
    commit(&mut redis, &store).await;

    server.stop();
    push(&mut store, "sa", "m2");
    let changes = store.take_changes();
    let failed = redis.write(&store, changes.clone()).await;
    assert!(failed.is_err(), "a write to a stopped Redis must fail");

    server.resume();
    push(&mut store, "sa", "m3");
    let mut pending = changes;
    pending.merge(store.take_changes());
    // The connection comes back in the background; retry as the actor does.
    let mut written = false;
    for _ in 0..50 {
        if redis.write(&store, pending.clone()).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "the store did not reconnect");
    let reloaded = reload(&server.url()).await;
    let seqs: Vec<u64> = reloaded
        .session("sa")
        .unwrap()
        .outbox
        .replay()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(reloaded.records(), store.records());
}

/// One process writes a store at a time (`holdfast::server::store::lease`): a process
/// whose lease lapsed and went to another one writes nothing more, not even a batch it
/// built before, and learns who holds the store now. A node restarted under the same
/// name takes its predecessor's lease over at once, and fences the predecessor.
#[tokio::test]
async fn a_process_that_lost_the_store_lease_writes_nothing() {
    use holdfast::server::store::lease::{fenced_by, holder_node, Acquired, Lease};
    use holdfast::server::store::redis::RedisStoreError;
    let server = RedisServer::start();
    let probe = connect(&server).await;
    let key = probe.lease_key();
    let mut conn = probe.connection();
    let ttl = Duration::from_millis(300);
    let old = Lease::new(key.clone(), "node-a", ttl, "token-a1");
    assert_eq!(old.acquire(&mut conn).await.unwrap(), Acquired::Held);
    let mut writer = connect(&server).await.with_lease(old.clone());
    let mut store = MemoryStore::with_change_tracking(true);
    store.put_session(session("sa", "alice"));
    push(&mut store, "sa", "first");
    commit(&mut writer, &store).await;
    let written = reload(&server.url()).await.records();

    // Held: another node only learns who holds it.
    let new = Lease::new(key.clone(), "node-b", ttl, "token-b1");
    match new.acquire(&mut conn).await.unwrap() {
        Acquired::HeldBy(value) => assert_eq!(holder_node(&value), "node-a"),
        Acquired::Held => panic!("node-b took a lease node-a holds"),
    }
    // node-a stalls past its lease; node-b takes the store over.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(new.acquire(&mut conn).await.unwrap(), Acquired::Held);

    // node-a wakes and writes what it handled meanwhile: refused, nothing lands.
    push(&mut store, "sa", "after the takeover");
    store.put_session(session("sc", "carol"));
    let refused = writer.write(&store, store.take_changes()).await;
    match refused {
        Err(RedisStoreError::Redis(e)) => {
            assert_eq!(fenced_by(&e).as_deref(), Some("node-b"), "{e}")
        }
        other => panic!("a write without the lease was not refused: {other:?}"),
    }
    assert_eq!(reload(&server.url()).await.records(), written);
    match old.renew(&mut conn).await.unwrap() {
        Acquired::HeldBy(value) => assert_eq!(holder_node(&value), "node-b"),
        Acquired::Held => panic!("node-a renewed a lease node-b holds"),
    }

    // node-b restarted (a new run, the same node name) takes over from itself at once.
    let restarted = Lease::new(key, "node-b", ttl, "token-b2");
    assert_eq!(restarted.acquire(&mut conn).await.unwrap(), Acquired::Held);
    let mut predecessor = connect(&server).await.with_lease(new);
    let mut other = MemoryStore::with_change_tracking(true);
    other.put_session(session("sd", "dave"));
    assert!(predecessor
        .write(&other, other.take_changes())
        .await
        .is_err_and(
            |e| matches!(&e, RedisStoreError::Redis(e) if fenced_by(e).as_deref() == Some("node-b"))
        ));
    assert_eq!(reload(&server.url()).await.records(), written);
}
