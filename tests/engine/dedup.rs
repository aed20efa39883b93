//! One call at a time: a second invite between the same people returns the existing
//! call, glare gives one call, a callee already in a call answers busy.

use crate::common::sim::Sim;
use crate::helpers::{ended, establish, has, is_active, send, server_call, signals, wait_incoming};
use holdfast::engine::client::{CallPhase, ClientError, Event};
use holdfast::engine::store::Store;
use holdfast::protocol::*;
use serde_json::json;

#[test]
fn second_invite_between_the_same_people_returns_the_existing_call() {
    let mut sim = Sim::new(18);
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    // The page itself refuses a duplicate.
    assert_eq!(
        sim.act(a, |e, now| e.call("bob", None, None, now)),
        Err(ClientError::AlreadyInCall { call: id.clone() })
    );
    // A second page of alice that does not know: the server answers with the call.
    let a2 = sim.online("alice");
    let re = sim
        .act(a2, |e, now| e.call("bob", None, None, now))
        .unwrap();
    sim.advance(100);
    assert!(has(&sim, a2, |e| matches!(e,
        Event::OutgoingCall { re: r, call, existing: true } if *r == re && call.id == id)));
    // Still one ringing call, offered once to bob.
    let incoming = sim
        .events(b)
        .iter()
        .filter(|e| matches!(e, Event::IncomingCall { .. }))
        .count();
    assert_eq!(incoming, 1);
    assert_eq!(sim.store().call_between("alice", "bob"), Some(&id));
    assert_eq!(sim.store().call_ids().len(), 1);
    sim.act(b, |e, now| e.accept(&id, now)).unwrap();
    sim.advance(100);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    // Bob calling alice back while in the call is the same call again.
    assert_eq!(
        sim.act(b, |e, now| e.call("alice", None, None, now)),
        Err(ClientError::AlreadyInCall { call: id.clone() })
    );
    let b2 = sim.online("bob");
    sim.act(b2, |e, now| e.call("alice", None, None, now))
        .unwrap();
    sim.advance(100);
    assert!(has(&sim, b2, |e| matches!(e,
        Event::OutgoingCall { call, existing: true, .. } if call.id == id)));
    assert_eq!(sim.store().call_ids().len(), 1);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
}

#[test]
fn glare_gives_exactly_one_active_call() {
    let mut sim = Sim::new(19);
    sim.default_delay_ms = 50;
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    sim.act(b, |e, now| e.call("alice", None, None, now))
        .unwrap();
    sim.advance(1_000);
    assert_eq!(sim.store().call_ids().len(), 1);
    let id = sim.store().call_between("alice", "bob").cloned().unwrap();
    assert_eq!(server_call(&sim, &id).unwrap().state, CallState::Active);
    for c in [a, b] {
        let calls: Vec<_> = sim.nodes[c].engine.calls().cloned().collect();
        assert_eq!(calls.len(), 1, "{c}: {calls:?}");
        assert_eq!(calls[0].id, id);
        assert_eq!(calls[0].phase, CallPhase::Active);
        assert!(has(
            &sim,
            c,
            |e| matches!(e, Event::CallStarted { call, .. } if call.id == id)
        ));
        assert!(ended(&sim, c, &id).is_empty());
    }
    send(&mut sim, a, &id, json!("glare ok"));
    sim.advance(200);
    assert_eq!(signals(&sim, b, &id), vec![json!("glare ok")]);
}

#[test]
fn callee_in_another_call_answers_busy() {
    let mut sim = Sim::new(20);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let c = sim.online("carol");
    let ab = establish(&mut sim, a, b, None);
    let re = sim.act(c, |e, now| e.call("bob", None, None, now)).unwrap();
    sim.advance(100);
    let id = sim
        .events(c)
        .into_iter()
        .find_map(|e| match e {
            Event::OutgoingCall { re: r, call, .. } if r == re => Some(call.id),
            _ => None,
        })
        .expect("the invite is answered");
    assert_eq!(ended(&sim, c, &id), vec![EndReason::Busy]);
    assert_eq!(sim.nodes[c].engine.calls().count(), 0);
    assert!(!has(
        &sim,
        b,
        |e| matches!(e, Event::IncomingCall { call } if call.id == id)
    ));
    assert!(is_active(&sim, a, &ab) && is_active(&sim, b, &ab));
    assert_eq!(sim.store().call_between("carol", "bob"), None);
    // Once bob is free, carol gets through.
    sim.act(a, |e, now| e.hangup(&ab, now)).unwrap();
    sim.advance(100);
    let call = establish(&mut sim, c, b, None);
    assert!(is_active(&sim, c, &call));
}
