//! A call from invite to hang-up: ringing, accept, signals both ways, hang-up ends both ends.

use crate::common::sim::{Sim, C};
use crate::helpers::{ended, establish, send, server_call, signals};
use holdfast::engine::client::{CallPhase, Event};
use holdfast::engine::store::Store;
use holdfast::protocol::*;
use serde_json::json;

#[test]
fn call_accept_signal_both_ways_and_hangup_ends_both() {
    let mut sim = Sim::new(1);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);

    let started = |s: &Sim, c: C| {
        s.events(c).into_iter().any(|e| {
            matches!(e, Event::CallStarted { call, rejoined: false }
                if call.id == id && call.phase == CallPhase::Active)
        })
    };
    assert!(started(&sim, a) && started(&sim, b));
    assert_eq!(sim.nodes[a].engine.call_info(&id).unwrap().peer.id, "bob");
    assert_eq!(sim.nodes[b].engine.call_info(&id).unwrap().peer.id, "alice");
    // Both pages stored a rejoin token for the call.
    assert_eq!(sim.stored(a).len(), 1);
    assert_eq!(sim.stored(b).len(), 1);

    send(&mut sim, a, &id, json!({"sdp": "offer"}));
    send(&mut sim, b, &id, json!({"sdp": "answer"}));
    sim.advance(100);
    assert_eq!(signals(&sim, b, &id), vec![json!({"sdp": "offer"})]);
    assert_eq!(signals(&sim, a, &id), vec![json!({"sdp": "answer"})]);

    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(100);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Hangup]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Hangup]);
    assert!(server_call(&sim, &id).is_none());
    assert_eq!(sim.store().call_between("alice", "bob"), None);
    assert!(sim.stored(a).is_empty() && sim.stored(b).is_empty());
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
}
