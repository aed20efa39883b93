//! The real server on port 0, driven by native clients running the real client engine.
//! Short windows come from configuration, so these take seconds, not minutes.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

#[path = "common/native.rs"]
mod native_steps;
use holdfast::engine::client::{
    ClientConfig, ConnectionState, Event, RejoinRecord, RejoinWithdrawn,
};
use holdfast::engine::server::ServerConfig;
use holdfast::native::NativeClient;
use holdfast::protocol::{EndReason, ErrorCode};
use holdfast::server::{run, AuthMode, RunConfig};
use native_steps::{active_call, connected, fast};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(engine: ServerConfig) -> Self {
        Self::start_with(RunConfig {
            engine,
            ..RunConfig::dev()
        })
        .await
    }

    async fn start_with(config: RunConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(listener, config, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn client(&self, token: &str) -> NativeClient {
        self.client_with(token, vec![])
    }

    fn client_with(&self, token: &str, records: Vec<RejoinRecord>) -> NativeClient {
        let mut config = ClientConfig::new(token);
        config.backoff_base_ms = 50;
        config.backoff_max_ms = 400;
        config.connect_timeout_ms = 2_000;
        NativeClient::start(&self.url(), config, records)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http(self.addr, "GET", path).await
    }

    async fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
            .trim()
            .parse()
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// A minimal HTTP/1.1 client (no extra dependency for three endpoints).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with_body(addr, method, path, "").await
}

async fn http_with_body(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let len = body.len();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n{body}");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn send(c: &NativeClient, call: &str, n: u64) {
    let call = call.to_owned();
    c.with(move |e, now| e.send(&call, json!({ "n": n }), now))
        .await
        .unwrap();
}

/// Collects `count` signals and returns their `n`s in arrival order.
async fn signals(c: &mut NativeClient, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < count {
        let n = c
            .expect(WAIT, |e| match e {
                Event::Signal { payload, .. } => payload["n"].as_u64(),
                _ => None,
            })
            .await
            .unwrap_or_else(|seen| panic!("got {got:?}, then nothing; saw {seen:?}"));
        got.push(n);
    }
    got
}

async fn ended(c: &mut NativeClient, call: &str) -> EndReason {
    c.expect(Duration::from_secs(10), |e| match e {
        Event::CallEnded {
            call: id, reason, ..
        } if id == call => Some(*reason),
        _ => None,
    })
    .await
    .unwrap_or_else(|seen| panic!("call {call} never ended; saw {seen:?}"))
}

#[tokio::test]
async fn health_and_metrics_and_one_socket_per_client() {
    let server = TestServer::start(fast()).await;
    assert_eq!(server.get("/healthz").await, (200, "ok".into()));
    let mut a = server.client("alice");
    let mut b = server.client("bob");
    connected(&mut a, WAIT).await;
    connected(&mut b, WAIT).await;
    // Many commands, one socket each.
    for _ in 0..5 {
        a.with(|e, now| e.set_status(holdfast::protocol::PresenceStatus::Available, now))
            .await
            .unwrap();
    }
    assert_eq!(server.metric("holdfast_connections").await, 2);
    assert_eq!(server.metric("holdfast_sessions").await, 2);
    assert_eq!(server.metric("holdfast_connections_opened_total").await, 2);
    server.stop().await;
}

#[tokio::test]
async fn drop_and_resume_replays_both_ways_exactly_once() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;

    // The link dies abruptly; both sides keep sending during the gap.
    alice.kill_link();
    for n in 1..=5 {
        send(&alice, &call, n).await;
        send(&bob, &call, 100 + n).await;
    }
    alice
        .expect(WAIT, |e| {
            matches!(e, Event::Resumed { recovered: true }).then_some(())
        })
        .await
        .unwrap();
    assert_eq!(signals(&mut bob, 5).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(signals(&mut alice, 5).await, vec![101, 102, 103, 104, 105]);
    // Nothing doubled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!alice
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Signal { .. })));
    assert!(!bob
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Signal { .. })));
    assert_eq!(server.metric("holdfast_resumes_total").await, 1);
    assert_eq!(server.metric("holdfast_calls{state=\"active\"}").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn half_open_link_is_noticed_and_superseded() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;

    // Nothing passes either way, and neither socket closes.
    alice.freeze_link();
    let frozen_at = std::time::Instant::now();
    for n in 1..=3 {
        send(&bob, &call, n).await;
        send(&alice, &call, 10 + n).await;
    }
    alice
        .expect(WAIT, |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await
        .unwrap();
    let noticed = frozen_at.elapsed();
    assert!(
        noticed < Duration::from_millis(1_500),
        "dead link noticed after {noticed:?}"
    );
    alice
        .expect(WAIT, |e| {
            matches!(e, Event::Resumed { recovered: true }).then_some(())
        })
        .await
        .unwrap();
    assert_eq!(signals(&mut alice, 3).await, vec![1, 2, 3]);
    assert_eq!(signals(&mut bob, 3).await, vec![11, 12, 13]);
    // Either the server noticed the silence first or the resume superseded the
    // half-open socket; both mean the old socket can never deliver again.
    let superseded = server.metric("holdfast_superseded_total").await;
    let dead = server.metric("holdfast_dead_links_total").await;
    assert!(
        superseded + dead >= 1,
        "old socket neither superseded nor declared dead"
    );
    assert_eq!(server.metric("holdfast_connections").await, 2);
    server.stop().await;
}

#[tokio::test]
async fn closed_tab_rejoins_the_same_call_with_a_rotated_token() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let records = alice.records().await;
    assert_eq!(
        records.len(),
        1,
        "a rejoin record is stored when the call starts"
    );
    let old_token = records[0].token.clone();

    alice.close_tab().await;
    let (deadline, remaining) = bob
        .expect(WAIT, |e| match e {
            Event::ParticipantDisconnected {
                user,
                deadline,
                remaining_ms,
                ..
            } if user == "alice" => Some((*deadline, *remaining_ms)),
            _ => None,
        })
        .await
        .unwrap();
    // The 4-s window, seen through a clock offset estimated within half a round trip.
    assert!(
        remaining <= 4_100 && remaining > 2_000,
        "remaining {remaining}"
    );
    assert!(deadline > holdfast::native::now_ms());

    // The reloaded page finds the record and is offered the call.
    let mut alice2 = server.client_with("alice", records.clone());
    let offer = alice2
        .expect(WAIT, |e| match e {
            Event::RejoinAvailable { offer } => Some(offer.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(offer.call, call);
    assert_eq!(offer.peer.id, "bob");
    let first = alice2
        .expect(WAIT, |e| match e {
            Event::RejoinCountdown { remaining_ms, .. } => Some(*remaining_ms),
            _ => None,
        })
        .await
        .unwrap();
    let second = alice2
        .expect(WAIT, |e| match e {
            Event::RejoinCountdown { remaining_ms, .. } => Some(*remaining_ms),
            _ => None,
        })
        .await
        .unwrap();
    assert!(second < first, "countdown goes down: {first} then {second}");

    let c = call.clone();
    alice2.with(move |e, now| e.rejoin(&c, now)).await.unwrap();
    let rejoined = alice2
        .expect(WAIT, |e| match e {
            Event::CallStarted {
                call,
                rejoined: true,
            } => Some(call.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(rejoined.id, call, "same call, not a new one");
    assert_eq!(rejoined.peer.id, "bob");
    bob.expect(WAIT, |e| {
        matches!(e, Event::ParticipantReconnected { .. }).then_some(())
    })
    .await
    .unwrap();
    let new_records = alice2.records().await;
    assert_eq!(new_records.len(), 1);
    assert_ne!(new_records[0].token, old_token, "token rotated on rejoin");

    // Media signalling works again both ways.
    send(&alice2, &call, 1).await;
    send(&bob, &call, 2).await;
    assert_eq!(signals(&mut bob, 1).await, vec![1]);
    assert_eq!(signals(&mut alice2, 1).await, vec![2]);

    // The spent token, replayed from another page, is refused and changes nothing. The
    // call is live on alice2, so the refusal says it is held elsewhere.
    let mut thief = server.client_with("alice", records);
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
    send(&bob, &call, 3).await;
    assert_eq!(
        signals(&mut alice2, 1).await,
        vec![3],
        "the rejoined page still holds the call"
    );
    assert_eq!(server.metric("holdfast_rejoins_total").await, 1);
    assert_eq!(server.metric("holdfast_rejoins_denied_total").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn window_passes_call_ends_reconnect_failed_and_no_prompt() {
    let server = TestServer::start(ServerConfig {
        default_grace_ms: 1_000,
        ..fast()
    })
    .await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let records = alice.records().await;
    alice.close_tab().await;
    assert_eq!(ended(&mut bob, &call).await, EndReason::ReconnectFailed);

    // A page opened afterwards is not offered the call.
    let mut alice2 = server.client_with("alice", records);
    connected(&mut alice2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = alice2.drain_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::RejoinAvailable { .. })),
        "no prompt after the window: {events:?}"
    );
    assert!(alice2.records().await.is_empty(), "the record is removed");
    assert!(alice2
        .with(|e, now| e.pending_rejoins(now))
        .await
        .is_empty());
    server.stop().await;
}

#[tokio::test]
async fn hangup_during_window_clears_the_rejoin() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let records = alice.records().await;
    alice.close_tab().await;
    bob.expect(WAIT, |e| {
        matches!(e, Event::ParticipantDisconnected { .. }).then_some(())
    })
    .await
    .unwrap();
    let c = call.clone();
    bob.with(move |e, now| e.hangup(&c, now)).await.unwrap();
    assert_eq!(ended(&mut bob, &call).await, EndReason::Hangup);
    let mut alice2 = server.client_with("alice", records);
    assert_eq!(ended(&mut alice2, &call).await, EndReason::Hangup);
    assert!(alice2
        .with(|e, now| e.pending_rejoins(now))
        .await
        .is_empty());
    assert!(alice2.records().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn second_session_takes_the_call_and_the_first_is_told_it_moved() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let records = alice.records().await;

    let mut tab2 = server.client_with("alice", records);
    connected(&mut tab2, WAIT).await;
    // Live in the first tab: not offered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tab2.with(|e, now| e.pending_rejoins(now)).await.is_empty());
    let c = call.clone();
    tab2.with(move |e, now| e.rejoin(&c, now)).await.unwrap();
    tab2.expect(WAIT, |e| {
        matches!(e, Event::CallStarted { rejoined: true, .. }).then_some(())
    })
    .await
    .unwrap();
    let moved = alice
        .expect(WAIT, |e| match e {
            Event::CallMoved { call } => Some(call.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(moved, call);
    assert!(alice.with(|e, _| e.calls().count()).await == 0);
    // The first tab drops and resumes: it must not take the call back.
    alice.kill_link();
    alice
        .expect(WAIT, |e| matches!(e, Event::Resumed { .. }).then_some(()))
        .await
        .unwrap();
    send(&bob, &call, 7).await;
    assert_eq!(signals(&mut tab2, 1).await, vec![7]);
    assert_eq!(server.metric("holdfast_rejoins_total").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn duplicates_busy_and_glare_give_one_call() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let mut carol = server.client("carol");
    connected(&mut alice, WAIT).await;
    connected(&mut bob, WAIT).await;
    connected(&mut carol, WAIT).await;

    // Crossed invites at the same moment: one call, active.
    let (ra, rb) = tokio::join!(
        alice.with(|e, now| e.call("bob", None, None, now)),
        bob.with(|e, now| e.call("alice", None, None, now)),
    );
    ra.unwrap();
    rb.unwrap();
    let a_call = alice
        .expect(WAIT, |e| match e {
            Event::CallStarted { call, .. } => Some(call.id.clone()),
            _ => None,
        })
        .await
        .unwrap();
    let b_call = bob
        .expect(WAIT, |e| match e {
            Event::CallStarted { call, .. } => Some(call.id.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(a_call, b_call);
    assert_eq!(server.metric("holdfast_calls{state=\"active\"}").await, 1);
    assert_eq!(server.metric("holdfast_calls_created_total").await, 1);

    // Calling again is refused locally (the client keeps the active-call map)...
    let again = alice.with(|e, now| e.call("bob", None, None, now)).await;
    assert!(matches!(
        again,
        Err(holdfast::engine::client::ClientError::AlreadyInCall { .. })
    ));

    // ... and Bob is busy for Carol.
    carol
        .with(|e, now| e.call("bob", None, None, now))
        .await
        .unwrap();
    let reason = carol
        .expect(WAIT, |e| match e {
            Event::CallEnded { reason, .. } => Some(*reason),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, EndReason::Busy);
    assert_eq!(server.metric("holdfast_calls{state=\"active\"}").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn ring_timeout_and_vanished_caller() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    connected(&mut alice, WAIT).await;
    connected(&mut bob, WAIT).await;

    alice
        .with(|e, now| e.call("bob", None, None, now))
        .await
        .unwrap();
    let call = bob
        .expect(WAIT, |e| match e {
            Event::IncomingCall { call } => Some(call.id.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(ended(&mut alice, &call).await, EndReason::NoAnswer);
    assert_eq!(ended(&mut bob, &call).await, EndReason::NoAnswer);

    // The caller's page closes while ringing: the incoming call is withdrawn.
    alice
        .with(|e, now| e.call("bob", None, None, now))
        .await
        .unwrap();
    let call = bob
        .expect(WAIT, |e| match e {
            Event::IncomingCall { call } => Some(call.id.clone()),
            _ => None,
        })
        .await
        .unwrap();
    alice.close_tab().await;
    assert_eq!(ended(&mut bob, &call).await, EndReason::Cancelled);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_error_codes_and_changes_nothing() {
    let server = TestServer::start(ServerConfig {
        max_frame_bytes: 2_048,
        ..fast()
    })
    .await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let mut mallory = server.client("mallory");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    connected(&mut mallory, WAIT).await;

    async fn error_code(c: &mut NativeClient) -> ErrorCode {
        c.expect(WAIT, |e| match e {
            Event::Error { code, .. } => Some(*code),
            _ => None,
        })
        .await
        .unwrap()
    }

    alice.send_raw("this is not json");
    assert_eq!(error_code(&mut alice).await, ErrorCode::BadFrame);
    alice.send_raw(format!(
        r#"{{"t":"ping","ack":0,"pad":"{}"}}"#,
        "x".repeat(4_000)
    ));
    assert_eq!(error_code(&mut alice).await, ErrorCode::FrameTooLarge);
    alice.send_raw(r#"{"t":"teleport"}"#);
    assert_eq!(error_code(&mut alice).await, ErrorCode::UnknownMessage);

    // Someone else's call: no signal, no hangup, no rejoin.
    let c = call.clone();
    let code = {
        // Mallory's engine does not know the call, so craft the messages by hand.
        mallory.send_raw(format!(
            r#"{{"t":"msg","seq":1,"ack":0,"body":{{"type":"hangup","call":"{c}"}}}}"#
        ));
        error_code(&mut mallory).await
    };
    assert_eq!(code, ErrorCode::NotParticipant);
    mallory.send_raw(format!(
        r#"{{"t":"msg","seq":2,"ack":0,"body":{{"type":"rejoin","call":"{c}","token":"{}"}}}}"#,
        "0".repeat(64)
    ));
    assert_eq!(error_code(&mut mallory).await, ErrorCode::RejoinDenied);
    mallory.send_raw(r#"{"t":"msg","seq":3,"ack":0,"body":{"type":"launch"}}"#);
    assert_eq!(error_code(&mut mallory).await, ErrorCode::UnknownMessage);

    // The call is untouched.
    send(&alice, &call, 1).await;
    assert_eq!(signals(&mut bob, 1).await, vec![1]);
    assert_eq!(server.metric("holdfast_calls{state=\"active\"}").await, 1);
    assert_eq!(server.metric("holdfast_rejoins_total").await, 0);

    // A flood is rate limited and then cut off; the call survives.
    for i in 0..400 {
        mallory.send_raw(format!(r#"{{"t":"ping","ack":{i}}}"#));
    }
    let code = mallory
        .expect(WAIT, |e| match e {
            Event::Error {
                code: ErrorCode::RateLimited,
                ..
            } => Some(ErrorCode::RateLimited),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(code, ErrorCode::RateLimited);
    mallory
        .expect(WAIT, |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await
        .unwrap();
    send(&bob, &call, 2).await;
    assert_eq!(signals(&mut alice, 1).await, vec![2]);
    server.stop().await;
}

#[tokio::test]
async fn jwt_auth_refuses_forged_and_expired_tokens_but_resumes_past_expiry() {
    let secret = "test-secret-of-at-least-32-bytes";
    let server = TestServer::start_with(RunConfig {
        engine: fast(),
        auth: AuthMode::Jwt(secret.into()),
        ..RunConfig::dev()
    })
    .await;
    let signer = holdfast::server::auth::JwtAuth::new(secret);
    let forger = holdfast::server::auth::JwtAuth::new("a-guess-that-is-also-32-bytes-long");
    let now_s = holdfast::native::now_ms() / 1000;

    let mut forged = server.client(&forger.sign("alice", "Alice", now_s + 60));
    let code = forged
        .expect(WAIT, |e| match e {
            Event::AuthFailed { code, .. } => Some(*code),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(code, ErrorCode::AuthFailed);
    assert_eq!(
        forged.with(|e, _| e.state()).await,
        ConnectionState::AuthFailed
    );

    let mut expired = server.client(&signer.sign("alice", "Alice", now_s - 10));
    let code = expired
        .expect(WAIT, |e| match e {
            Event::AuthFailed { code, .. } => Some(*code),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(code, ErrorCode::TokenExpired);

    let mut dev_style = server.client("alice");
    let code = dev_style
        .expect(WAIT, |e| match e {
            Event::AuthFailed { code, .. } => Some(*code),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(code, ErrorCode::AuthFailed);

    // A token that expires mid-session does not stop a resume.
    let mut alice = server.client(&signer.sign("alice", "Alice", now_s + 2));
    let user = alice
        .expect(WAIT, |e| match e {
            Event::Connected { user, .. } => Some(user.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(user.name, "Alice");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    alice.kill_link();
    alice
        .expect(WAIT, |e| {
            matches!(e, Event::Resumed { recovered: true }).then_some(())
        })
        .await
        .unwrap();
    assert_eq!(server.metric("holdfast_auth_failures_total").await, 3);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_and_ends_calls() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    server.stop().await;
    assert_eq!(ended(&mut alice, &call).await, EndReason::ServerShutdown);
    assert_eq!(ended(&mut bob, &call).await, EndReason::ServerShutdown);
    alice
        .expect(WAIT, |e| {
            matches!(
                e,
                Event::Error {
                    code: ErrorCode::ServerShutdown,
                    ..
                }
            )
            .then_some(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn test_hook_drops_links_and_clients_resume() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let (status, body) = http(server.addr, "POST", "/test/drop?user=alice").await;
    assert_eq!((status, body.as_str()), (200, "1"));
    bob.expect(WAIT, |e| {
        matches!(e, Event::ParticipantDisconnected { .. }).then_some(())
    })
    .await
    .unwrap();
    alice
        .expect(WAIT, |e| {
            matches!(e, Event::Resumed { recovered: true }).then_some(())
        })
        .await
        .unwrap();
    bob.expect(WAIT, |e| {
        matches!(e, Event::ParticipantReconnected { .. }).then_some(())
    })
    .await
    .unwrap();
    send(&bob, &call, 9).await;
    assert_eq!(signals(&mut alice, 1).await, vec![9]);
    server.stop().await;
}

/// The logout fallback over HTTP (`POST /ws/bye`, what `sendBeacon` sends): a proof that
/// fails changes nothing and says so; a copy that arrives after the socket's `bye` finds
/// the session gone and is not an error (the browser would log a 4xx on the console).
#[tokio::test]
async fn logout_over_http_refuses_a_bad_proof_and_takes_a_second_copy_quietly() {
    let server = TestServer::start(fast()).await;
    let mut alice = server.client("alice");
    let mut bob = server.client("bob");
    let call = active_call(&mut alice, &mut bob, WAIT).await;
    let session = alice.with(|e, _| e.session_id().unwrap().to_owned()).await;
    let bye = |token: &str, secret: &str| {
        json!({ "token": token, "session": session, "secret": secret }).to_string()
    };

    let (status, _) = http_with_body(server.addr, "POST", "/ws/bye", "not json").await;
    assert_eq!(status, 400);
    let wrong = "00".repeat(32);
    for token in ["alice", "bob"] {
        let (status, _) = http_with_body(server.addr, "POST", "/ws/bye", &bye(token, &wrong)).await;
        assert_eq!(status, 403, "{token}: a wrong secret is refused");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bob.drain_events()
            .iter()
            .all(|e| !matches!(e, Event::CallEnded { .. })),
        "a refused logout ends nothing"
    );

    // The real logout: the socket carries it; the page's HTTP copy comes second.
    let goodbye = alice
        .with(|e, now| {
            e.logout(now);
            e.poll_goodbye()
        })
        .await
        .expect("a logout on a live socket also hands over an HTTP copy");
    let ended = bob
        .expect(WAIT, |e| match e {
            Event::CallEnded {
                call: c, reason, ..
            } if *c == call => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(ended, Ok(EndReason::Hangup));
    let (status, _) = http_with_body(
        server.addr,
        "POST",
        "/ws/bye",
        &bye(&goodbye.token, &goodbye.secret),
    )
    .await;
    assert_eq!(status, 204, "logging out twice is not an error");
    server.stop().await;
}

/// Issue 15 item 2: a plain GET of the socket URL is Holdfast's probe answer (readable
/// cross-origin); a native client tells a server that is down, a wrong path and a
/// refused token apart, each within a second.
#[tokio::test]
async fn connection_failures_say_why() {
    use holdfast::engine::client::{ConnectionFailure, FailureReason};
    let server = TestServer::start(fast()).await;

    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nOrigin: http://elsewhere.example\r\nConnection: close\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(head.contains("x-holdfast-protocol: 1"), "{head}");
    assert!(
        head.contains("access-control-expose-headers: x-holdfast-protocol"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        json,
        json!({"holdfast": 1, "protocol": holdfast::protocol::PROTOCOL_VERSION})
    );

    async fn first_failure(c: &mut NativeClient) -> (u64, ConnectionFailure) {
        c.expect(WAIT, |e| match e {
            Event::ConnectionFailed(f) => Some(f.clone()),
            _ => None,
        })
        .await
        .map(|f| (holdfast::native::now_ms() - f.at, f))
        .unwrap_or_else(|seen| panic!("no connection-failed; saw {seen:?}"))
    }
    let config = || {
        let mut config = ClientConfig::new("alice");
        config.backoff_base_ms = 50;
        config.backoff_max_ms = 400;
        config
    };

    // A wrong path on a real server: not found.
    let url = format!("ws://{}/nope", server.addr);
    let mut wrong = NativeClient::start(&url, config(), vec![]);
    let (late, f) = first_failure(&mut wrong).await;
    assert_eq!(f.reason, FailureReason::NotFound, "{f:?}");
    assert!(f.message.contains("404"), "{}", f.message);
    assert!(f.will_retry && f.next_attempt_at.is_some());
    assert!(late < 1_000, "{late} ms");

    // Nothing listening: unreachable.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = free.local_addr().unwrap();
    drop(free);
    let mut down = NativeClient::start(&format!("ws://{dead}/ws"), config(), vec![]);
    let (late, f) = first_failure(&mut down).await;
    assert_eq!(f.reason, FailureReason::Unreachable, "{f:?}");
    assert!(f.will_retry && f.next_attempt_at.is_some());
    assert!(late < 1_000, "{late} ms");
    server.stop().await;

    // A refused token: auth-failed with the server's code, no retry.
    let secret = "test-secret-of-at-least-32-bytes";
    let jwt = TestServer::start_with(RunConfig {
        engine: fast(),
        auth: AuthMode::Jwt(secret.into()),
        ..RunConfig::dev()
    })
    .await;
    let mut refused = jwt.client("alice");
    let (late, f) = first_failure(&mut refused).await;
    assert_eq!(f.reason, FailureReason::AuthFailed, "{f:?}");
    assert_eq!(f.code, Some(ErrorCode::AuthFailed));
    assert!(!f.will_retry);
    assert_eq!(f.next_attempt_at, None);
    assert!(late < 1_000, "{late} ms");
    jwt.stop().await;
}
