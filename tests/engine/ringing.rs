//! A ringing call: no answer ends it, the caller vanishing withdraws it, a caller back
//! within the ring detach grace keeps it ringing.

use crate::common::sim::{Net, Sim};
use crate::helpers::{ended, ended_at, is_active, server_call, wait_incoming};
use holdfast::engine::client::ConnectionState;
use holdfast::protocol::*;

#[test]
fn unanswered_call_ends_no_answer_at_both_ends() {
    let mut sim = Sim::new(21);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let t0 = sim.now;
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    let ring_deadline = sim.nodes[b].engine.call_info(&id).unwrap().ring_deadline;
    assert!(ring_deadline.is_some_and(|d| d >= t0 + 30_000 && d <= t0 + 30_100));
    sim.run_to(t0 + 29_900);
    assert!(ended(&sim, a, &id).is_empty() && ended(&sim, b, &id).is_empty());
    sim.run_to(t0 + 30_200);
    for c in [a, b] {
        let (t, reason) = ended_at(&sim, c, &id).expect("ended");
        assert_eq!(reason, EndReason::NoAnswer);
        assert!(t >= t0 + 30_000);
        assert_eq!(sim.nodes[c].engine.calls().count(), 0);
    }
    assert!(server_call(&sim, &id).is_none());
}

#[test]
fn caller_vanishing_while_ringing_withdraws_the_incoming_call() {
    let mut sim = Sim::new(22);
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.run_to(t_drop + 4_900);
    assert!(
        ended(&sim, b, &id).is_empty(),
        "a short blip keeps it ringing"
    );
    sim.run_to(t_drop + 5_200);
    let (t, reason) = ended_at(&sim, b, &id).expect("withdrawn");
    assert_eq!(reason, EndReason::Cancelled);
    assert!(t >= t_drop + 5_000);
    assert_eq!(sim.nodes[b].engine.calls().count(), 0);
    // Alice, back within her resume window, learns the same.
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(100);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Cancelled]);
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
}

#[test]
fn caller_back_within_ring_detach_grace_keeps_ringing() {
    let mut sim = Sim::new(23);
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    sim.drop_link(a);
    sim.advance(10_000);
    assert!(ended(&sim, b, &id).is_empty());
    sim.act(b, |e, now| e.accept(&id, now)).unwrap();
    sim.advance(100);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
}
