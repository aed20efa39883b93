//! Rejoin records are judged by the server's clock: a page whose clock jumped while it
//! was closed, or was always off, is offered the call with the server's countdown.

use crate::common::sim::{Sim, C};
use crate::helpers::{establish, has, is_active};
use holdfast::engine::client::{Event, RejoinOffer};

const TEN_MINUTES: i64 = 600_000;

fn offers(sim: &Sim, c: C) -> Vec<RejoinOffer> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::RejoinAvailable { offer } => Some(offer),
            _ => None,
        })
        .collect()
}

/// The other side's view of the window: the deadline on the simulation's clock.
fn peer_deadline(sim: &Sim, b: C) -> u64 {
    sim.events(b)
        .into_iter()
        .filter_map(|e| match e {
            Event::ParticipantDisconnected { deadline, .. } => Some(deadline),
            _ => None,
        })
        .next_back()
        .expect("the other side was told")
}

/// `a`'s page was reloaded; it connects and must be offered the call with the
/// server's deadline (on its own clock), then rejoin it.
fn offered_by_the_servers_clock_and_rejoined(sim: &mut Sim, a: C, b: C, id: &str) {
    sim.connect(a);
    sim.advance(100);
    let offer = offers(sim, a).pop().expect("the call is offered");
    assert_eq!(offer.call, id);
    let skew = sim.nodes[a].clock_skew;
    let expected = (peer_deadline(sim, b) as i64 + skew) as u64;
    assert!(
        offer.deadline.abs_diff(expected) <= 50,
        "deadline {} vs the server's {expected}",
        offer.deadline
    );
    assert!(
        offer.remaining_ms <= 60_000 && offer.remaining_ms > 55_000,
        "{offer:?}"
    );
    sim.act(a, |e, now| e.rejoin(id, now)).expect("rejoin");
    sim.advance(100);
    assert!(has(sim, a, |e| matches!(e,
        Event::CallStarted { call, rejoined: true } if call.id == id)));
    assert!(is_active(sim, a, id) && is_active(sim, b, id));
}

#[test]
fn a_clock_that_jumped_ahead_while_closed_still_gets_the_offer() {
    let mut sim = Sim::new(151);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(2_000);
    sim.reload(a, false);
    // While the page was closed its clock moved 10 minutes ahead: by that clock the
    // stored deadline passed long ago, by the server's it did not.
    sim.nodes[a].clock_skew = TEN_MINUTES;
    let records = sim.stored(a);
    let now = sim.nodes[a].local(sim.now);
    sim.client(a).load_rejoin_records(records, now);
    assert_eq!(
        sim.stored(a).len(),
        1,
        "not deleted by the page's own clock"
    );
    offered_by_the_servers_clock_and_rejoined(&mut sim, a, b, &id);
}

#[test]
fn a_clock_that_jumped_back_is_not_offered_ten_extra_minutes() {
    let mut sim = Sim::new(152);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.reload(a, false);
    sim.nodes[a].clock_skew = -TEN_MINUTES;
    let records = sim.stored(a);
    let now = sim.nodes[a].local(sim.now);
    sim.client(a).load_rejoin_records(records, now);
    offered_by_the_servers_clock_and_rejoined(&mut sim, a, b, &id);
}

#[test]
fn a_clock_that_was_always_ten_minutes_ahead_keeps_working() {
    let mut sim = Sim::new(153);
    let a = sim.add("alice");
    sim.nodes[a].clock_skew = TEN_MINUTES;
    sim.connect(a);
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(3_000);
    sim.reload(a, false);
    offered_by_the_servers_clock_and_rejoined(&mut sim, a, b, &id);
}
