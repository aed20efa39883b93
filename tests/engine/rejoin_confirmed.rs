//! A stored rejoin record is offered only once the server confirmed that the call waits
//! for this person: nothing flashes for a call that ended meanwhile (one notice naming
//! the peer and the reason instead) or that the server does not know.

use crate::common::sim::{Net, Sim, C};
use crate::helpers::establish;
use holdfast::engine::client::{Event, RejoinRecord, REJOIN_RECORD_VERSION};
use holdfast::protocol::*;

/// What a person would notice about a stored call: prompts and notices.
fn notices(sim: &Sim, c: C) -> Vec<Event> {
    sim.events(c)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::CallEnded { .. }
                    | Event::RejoinAvailable { .. }
                    | Event::RejoinWithdrawn { .. }
                    | Event::RejoinExpired { .. }
                    | Event::RejoinCountdown { .. }
            )
        })
        .collect()
}

fn record(call: &str, deadline: u64) -> RejoinRecord {
    RejoinRecord {
        v: REJOIN_RECORD_VERSION,
        call: call.into(),
        user: "alice".into(),
        token: "ab".repeat(32),
        peer: Peer {
            id: "bob".into(),
            name: "Bob".into(),
        },
        kind: None,
        grace_ms: 60_000,
        deadline,
        clock_offset: 0,
    }
}

#[test]
fn nothing_is_offered_before_the_server_confirms() {
    let mut sim = Sim::new(161);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.reload(a, false);
    sim.set_net(a, Net::Blackhole);
    sim.act(a, |e, now| e.connect(now));
    sim.advance(20_000);
    assert!(notices(&sim, a).is_empty(), "{:?}", notices(&sim, a));
    assert!(sim.nodes[a].engine.pending_rejoins(sim.now).is_empty());
    sim.set_net(a, Net::Up);
    sim.act(a, |e, now| e.reconnect(now));
    sim.advance(2_000);
    let (t_offer, _) = sim
        .find_event(
            a,
            |e| matches!(e, Event::RejoinAvailable { offer } if offer.call == id),
        )
        .expect("offered once the server confirmed");
    let (t_connected, _) = sim
        .find_event(a, |e| matches!(e, Event::Connected { .. }))
        .unwrap();
    assert!(t_offer >= t_connected);
}

#[test]
fn a_call_that_ended_while_away_is_one_notice_naming_the_peer() {
    let mut sim = Sim::new(162);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.reload(a, false);
    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(1_000);
    sim.connect(a);
    sim.advance(3_000);
    let seen = notices(&sim, a);
    assert!(
        matches!(&seen[..], [Event::CallEnded { call, reason: EndReason::Hangup, peer }]
            if call == &id && peer.id == "bob"),
        "{seen:?}"
    );
    assert!(sim.stored(a).is_empty());
}

#[test]
fn a_record_the_server_does_not_know_is_never_offered() {
    let mut sim = Sim::new(163);
    let a = sim.add("alice");
    let _b = sim.online("bob");
    let now = sim.now;
    // Inside its window by its own clock (the server lost the call), and long past it.
    let lost = record("c0ffee0000000000000000aa", now + 30_000);
    let old = record("c0ffee0000000000000000bb", now - 3_600_000);
    for r in [&lost, &old] {
        sim.nodes[a].stored.insert(r.call.clone(), r.clone());
    }
    sim.client(a)
        .load_rejoin_records(vec![lost.clone(), old.clone()], now);
    sim.connect(a);
    sim.advance(3_000);
    let seen = notices(&sim, a);
    assert!(
        matches!(&seen[..], [Event::CallEnded { call, reason: EndReason::ServerLost, peer }]
            if call == &lost.call && peer.name == "Bob"),
        "{seen:?}"
    );
    assert!(sim.stored(a).is_empty(), "both records are gone");
}
