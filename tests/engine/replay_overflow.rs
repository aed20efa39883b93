//! A replay buffer overflow loses the session, and the call survives by rejoin.

use crate::common::sim::{Net, Sim};
use crate::helpers::{ended, establish, has, holder, is_active, send, signals};
use holdfast::engine::client::{ConnectionState, Event};
use holdfast::engine::server::ServerConfig;
use serde_json::json;

#[test]
fn replay_buffer_overflow_loses_the_session_but_the_call_survives_by_rejoin() {
    let config = ServerConfig {
        replay_buffer: 8,
        ..ServerConfig::default()
    };
    let mut sim = Sim::with_config(config, 29);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    let old_session = sim.nodes[a].engine.session_id().unwrap().to_owned();
    let token_before = sim.stored(a)[0].token.clone();
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    for i in 0..20 {
        send(&mut sim, b, &id, json!(i));
    }
    sim.advance(2_000);
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(200);
    let w = sim.welcomes(a).pop().unwrap();
    assert!(!w.resumed, "an overflowed session cannot be resumed");
    assert!(w.snapshot.is_some());
    assert_ne!(w.session, old_session);
    assert!(has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: false }
    )));
    // The page took its call back with its stored token.
    assert!(has(&sim, a, |e| matches!(e,
        Event::CallStarted { call, rejoined: true } if call.id == id)));
    assert!(ended(&sim, a, &id).is_empty());
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    assert_ne!(sim.stored(a)[0].token, token_before);
    assert_eq!(
        holder(&sim, &id, "alice").as_deref(),
        sim.nodes[a].engine.session_id()
    );
    assert!(has(&sim, b, |e| matches!(
        e,
        Event::ParticipantReconnected { .. }
    )));
    send(&mut sim, b, &id, json!("after"));
    send(&mut sim, a, &id, json!("back"));
    sim.advance(100);
    assert_eq!(signals(&sim, a, &id).last(), Some(&json!("after")));
    assert_eq!(signals(&sim, b, &id), vec![json!("back")]);
}
