//! Races found by the property test, each pinned as a scenario.

use crate::common::sim::Sim;
use crate::helpers::{ended, errors, establish, has, server_call, signals, wait_incoming};
use holdfast::engine::client::{ConnectionState, Event};
use holdfast::protocol::*;
use serde_json::json;

#[test]
fn cancel_crossing_the_answer_ends_cancelled_at_both_ends() {
    let mut sim = Sim::new(39);
    sim.default_delay_ms = 100;
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    sim.act(b, |e, now| e.accept(&id, now)).unwrap();
    // Alice gives up while bob's answer is on its way to her.
    sim.advance(50);
    sim.act(a, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(1_000);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Cancelled]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Cancelled]);
    assert!(
        !has(&sim, a, |e| matches!(e, Event::CallStarted { .. })),
        "a call this page cancelled does not come back"
    );
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
    assert_eq!(sim.nodes[b].engine.calls().count(), 0);
    assert!(server_call(&sim, &id).is_none());
    assert!(errors(&sim, a).is_empty() && errors(&sim, b).is_empty());
}

#[test]
fn decline_crossing_its_own_accept_ends_declined_at_both_ends() {
    let mut sim = Sim::new(40);
    sim.default_delay_ms = 100;
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    sim.act(b, |e, now| e.accept(&id, now)).unwrap();
    sim.advance(10);
    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(1_000);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Declined]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Declined]);
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
    assert_eq!(sim.nodes[b].engine.calls().count(), 0);
    assert!(
        server_call(&sim, &id).is_none(),
        "no call left active with nobody"
    );
}

#[test]
fn a_refusal_replayed_after_resume_still_names_its_request() {
    let mut sim = Sim::new(41);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.set_delay(a, 100, 150);
    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    // Alice's signal crosses bob's hang-up; the server refuses it, and the socket dies
    // with the refusal still on its way.
    let re = sim
        .act(a, |e, now| e.send(&id, json!("late"), now))
        .unwrap();
    sim.advance(110);
    sim.drop_link(a);
    assert!(sim.run_until(5_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(1_000);
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    let refusals: Vec<Option<u64>> = sim
        .events(a)
        .into_iter()
        .filter_map(|e| match e {
            Event::Error {
                code: ErrorCode::UnknownCall,
                re,
                ..
            } => Some(re),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, vec![Some(re)]);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Hangup]);
    assert!(signals(&sim, b, &id).is_empty());
}
