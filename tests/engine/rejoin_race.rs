//! Two tabs of one person press Rejoin at the same instant: one gets the call, the other
//! is told the call continues elsewhere (not a bare `rejoin-denied`) and can move it
//! there with the token the winner wrote to the storage both tabs share.

use crate::common::sim::Sim;
use crate::helpers::{ended, errors, establish, has, holder, is_active};
use holdfast::engine::client::{Event, RejoinWithdrawn};
use holdfast::protocol::*;

#[test]
fn the_loser_of_a_rejoin_race_is_told_the_call_is_held_elsewhere_and_can_move_it() {
    let mut sim = Sim::new(181);
    let a0 = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a0, b, None);
    // Alice's tab crashes; she opens two tabs, both with the crashed tab's record.
    let record = sim.stored(a0)[0].clone();
    sim.reload(a0, false);
    let tabs = [sim.add("alice"), sim.add("alice")];
    for t in tabs {
        let now = sim.now;
        sim.client(t).load_rejoin_records(vec![record.clone()], now);
        sim.connect(t);
    }
    sim.advance(100);
    for t in tabs {
        assert_eq!(sim.nodes[t].engine.pending_rejoins(sim.now).len(), 1);
    }

    // Both press Rejoin at the same instant (the second press comes after the first
    // tab's new record reached the storage they share: the prompt's token is used).
    let now = sim.now;
    sim.client(tabs[0]).rejoin(&id, now).expect("rejoin");
    sim.advance(50);
    let fresh = sim.stored(tabs[0])[0].clone();
    assert_ne!(fresh.token, record.token);
    sim.client(tabs[1]).handle_stored_record(fresh);
    let now = sim.now;
    sim.client(tabs[1]).rejoin(&id, now).expect("rejoin");
    sim.advance(100);
    let won: Vec<usize> = tabs
        .into_iter()
        .filter(|&t| is_active(&sim, t, &id))
        .collect();
    assert_eq!(won.len(), 1, "exactly one tab has the call");
    let (winner, loser) = if won[0] == tabs[0] {
        (tabs[0], tabs[1])
    } else {
        (tabs[1], tabs[0])
    };
    assert!(errors(&sim, loser).contains(&ErrorCode::HeldElsewhere));
    assert!(!errors(&sim, loser).contains(&ErrorCode::RejoinDenied));
    assert!(has(&sim, loser, |e| matches!(e,
        Event::RejoinWithdrawn { call, why: RejoinWithdrawn::HeldElsewhere } if call == &id)));
    assert!(ended(&sim, loser, &id).is_empty());
    assert!(
        !sim.nodes[loser].storage_ops.iter().any(
            |(_, op)| matches!(op, holdfast::engine::client::StorageOp::Remove(c) if c == &id)
        ),
        "the loser must not delete the record the winner now owns"
    );
    assert!(is_active(&sim, b, &id));

    // The winner's record reaches the loser through the storage they share; moving the
    // call there works and the winner is told it moved.
    let fresh = sim.stored(winner)[0].clone();
    sim.client(loser).handle_stored_record(fresh);
    let now = sim.now;
    sim.client(loser).rejoin(&id, now).expect("move here");
    sim.advance(100);
    assert!(is_active(&sim, loser, &id));
    assert!(has(
        &sim,
        winner,
        |e| matches!(e, Event::CallMoved { call } if call == &id)
    ));
    assert_eq!(
        holder(&sim, &id, "alice").as_deref(),
        sim.nodes[loser].engine.session_id()
    );
    assert!(is_active(&sim, b, &id));
}

#[test]
fn a_wrong_token_with_nobody_holding_the_call_is_still_rejoin_denied() {
    let mut sim = Sim::new(182);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    let mut record = sim.stored(a)[0].clone();
    record.token = "ab".repeat(32);
    sim.reload(a, false);
    let t = sim.add("alice");
    let now = sim.now;
    sim.client(t).load_rejoin_records(vec![record], now);
    sim.connect(t);
    sim.advance(100);
    let now = sim.now;
    sim.client(t).rejoin(&id, now).expect("rejoin");
    sim.advance(100);
    assert!(errors(&sim, t).contains(&ErrorCode::RejoinDenied));
    assert!(has(&sim, t, |e| matches!(
        e,
        Event::RejoinWithdrawn {
            why: RejoinWithdrawn::Denied,
            ..
        }
    )));
}
