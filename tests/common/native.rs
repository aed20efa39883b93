//! Native clients (the real client engine over the native driver) against a real
//! server: the steps every such test starts with.

#![allow(dead_code)] // each test binary uses a different part

use holdfast::engine::client::Event;
use holdfast::engine::server::ServerConfig;
use holdfast::native::NativeClient;
use holdfast::protocol::CallId;
use std::time::Duration;

/// Waits for the client's first session.
pub async fn connected(c: &mut NativeClient, wait: Duration) {
    c.expect(wait, |e| matches!(e, Event::Connected { .. }).then_some(()))
        .await
        .unwrap_or_else(|seen| panic!("never connected; saw {seen:?}"));
}

/// Alice calls Bob, Bob accepts, both see the same call start; returns its id.
pub async fn active_call(
    alice: &mut NativeClient,
    bob: &mut NativeClient,
    wait: Duration,
) -> CallId {
    connected(alice, wait).await;
    connected(bob, wait).await;
    alice
        .with(|e, now| e.call("bob", None, None, now))
        .await
        .unwrap();
    let call = bob
        .expect(wait, |e| match e {
            Event::IncomingCall { call } => Some(call.id.clone()),
            _ => None,
        })
        .await
        .unwrap();
    let c2 = call.clone();
    bob.with(move |e, now| e.accept(&c2, now)).await.unwrap();
    for c in [&mut *alice, &mut *bob] {
        let started = c
            .expect(wait, |e| match e {
                Event::CallStarted { call, .. } => Some(call.id.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(started, call);
    }
    call
}

/// Fast timers: dead links (and a socket that never says hello) noticed in 0.9 s,
/// windows of a few seconds.
pub fn fast() -> ServerConfig {
    ServerConfig {
        heartbeat_interval_ms: 300,
        heartbeat_timeout_ms: 900,
        resume_window_ms: 5_000,
        default_grace_ms: 4_000,
        ring_timeout_ms: 3_000,
        ring_detach_grace_ms: 700,
        ..ServerConfig::default()
    }
}
