//! Grace windows: a dropped participant's deadline is announced, reconnection within it
//! keeps the call, passing it ends the call; per-kind windows outlive the session.

use crate::common::sim::{Net, Sim};
use crate::helpers::{
    ended, ended_at, establish, has, interpreter_config, is_active, send, server_call, signals,
};
use holdfast::engine::client::{ConnectionState, Event};
use holdfast::protocol::*;
use serde_json::json;

#[test]
fn grace_window_announces_deadline_and_reconnection() {
    let mut sim = Sim::new(7);
    sim.default_delay_ms = 0;
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(1_000);
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    let (_, e) = sim
        .find_event(b, |e| matches!(e, Event::ParticipantDisconnected { .. }))
        .expect("peer is told at once");
    match e {
        Event::ParticipantDisconnected {
            call,
            user,
            deadline,
            remaining_ms,
        } => {
            assert_eq!(call, id);
            assert_eq!(user, "alice");
            assert_eq!(deadline, t_drop + 60_000);
            assert_eq!(remaining_ms, 60_000);
        }
        _ => unreachable!(),
    }
    let c = sim.nodes[b].engine.call_info(&id).unwrap();
    assert_eq!(c.peer_link, LinkState::Reconnecting);
    assert_eq!(c.peer_deadline, Some(t_drop + 60_000));
    sim.advance(42_000);
    assert!(is_active(&sim, b, &id));
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(6_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(10);
    assert!(has(&sim, b, |e| matches!(e,
        Event::ParticipantReconnected { call, user } if call == &id && user == "alice")));
    let c = sim.nodes[b].engine.call_info(&id).unwrap();
    assert_eq!(c.peer_link, LinkState::Connected);
    assert_eq!(c.peer_deadline, None);
    sim.advance(120_000);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
}

#[test]
fn grace_window_passing_ends_with_reconnect_failed_at_both_ends() {
    let mut sim = Sim::new(8);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.run_to(t_drop + 59_990);
    assert!(is_active(&sim, b, &id));
    assert!(server_call(&sim, &id).is_some());
    sim.run_to(t_drop + 60_100);
    let (t_end, reason) = ended_at(&sim, b, &id).expect("peer sees the end");
    assert_eq!(reason, EndReason::ReconnectFailed);
    assert!(t_end >= t_drop + 60_000 && t_end <= t_drop + 60_100);
    assert!(server_call(&sim, &id).is_none());
    // Alice, still trying, learns why when she gets through.
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ReconnectFailed]);
    assert!(has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
    assert!(sim.stored(a).is_empty());
}

#[test]
fn per_kind_grace_window_of_five_minutes_on_a_simulated_clock() {
    let wall = std::time::Instant::now();
    let mut sim = Sim::with_config(interpreter_config(), 9);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, Some("interpreter"));
    assert_eq!(
        sim.nodes[b].engine.call_info(&id).unwrap().grace_ms,
        300_000
    );
    sim.set_net(a, Net::Blackhole);
    let t0 = sim.now;
    assert!(sim.run_until(6_000, |s| has(s, b, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    ))));
    let (t_seen, e) = sim
        .find_event(b, |e| matches!(e, Event::ParticipantDisconnected { .. }))
        .unwrap();
    let Event::ParticipantDisconnected {
        deadline,
        remaining_ms,
        ..
    } = e
    else {
        unreachable!()
    };
    // The 5-minute window, as this page's clock sees it: exact up to the link delay
    // (the clock offset is estimated within half a round trip).
    assert!(
        (299_900..=300_000).contains(&remaining_ms),
        "remaining {remaining_ms}"
    );
    // The server noticed the silence within the heartbeat timeout.
    assert!(t_seen - t0 <= 5_000);
    sim.run_to(deadline - 1_000); // 4 min 59 s
    assert!(is_active(&sim, b, &id));
    assert!(ended(&sim, b, &id).is_empty());
    sim.run_to(deadline + 100);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
    let (t_end, _) = ended_at(&sim, b, &id).unwrap();
    assert!(t_end >= deadline && t_end < deadline + 100);
    assert!(
        wall.elapsed().as_millis() < 3_000,
        "a 5-minute window must take milliseconds, took {:?}",
        wall.elapsed()
    );
}

#[test]
fn long_window_call_survives_session_expiry_by_automatic_rejoin() {
    // Away for 4 min 50 s: the session (60 s resume window) is gone, the interpreter
    // call (5 min) is not. The page gets back into it by itself with its token.
    let mut sim = Sim::with_config(interpreter_config(), 10);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, Some("interpreter"));
    let token_before = sim.stored(a)[0].token.clone();
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.run_to(t_drop + 290_000);
    assert_eq!(
        sim.state(a),
        ConnectionState::Reconnecting,
        "never gives up"
    );
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(6_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(100);
    assert!(has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert!(has(&sim, a, |e| matches!(e,
        Event::CallStarted { call, rejoined: true } if call.id == id)));
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    assert_ne!(sim.stored(a)[0].token, token_before);
    assert!(has(&sim, b, |e| matches!(
        e,
        Event::ParticipantReconnected { .. }
    )));
    sim.advance(400_000);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    send(&mut sim, b, &id, json!("welcome back"));
    sim.advance(100);
    assert_eq!(signals(&sim, a, &id), vec![json!("welcome back")]);
}
