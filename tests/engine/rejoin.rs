//! Rejoin after a reload: offers with countdowns, tokens bound to identity and call, no
//! rejoin into an ended call, expiry, decline, and moving a call to a second live session.

use crate::common::sim::{Net, Sim, C};
use crate::helpers::{
    ended, errors, establish, has, hello, holder, is_active, msg, msg_errors, send, signals,
};
use holdfast::engine::client::{
    ClientError, ConnectionState, Event, RejoinRecord, RejoinWithdrawn, StorageOp,
    REJOIN_RECORD_VERSION,
};
use holdfast::protocol::*;
use serde_json::json;

fn offers(sim: &Sim, c: C) -> Vec<holdfast::engine::client::RejoinOffer> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::RejoinAvailable { offer } => Some(offer),
            _ => None,
        })
        .collect()
}

fn countdowns(sim: &Sim, c: C, id: &str) -> Vec<(u64, u64)> {
    sim.nodes[c]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::RejoinCountdown { call, remaining_ms } if call == id => {
                Some((*t, *remaining_ms))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn reload_offers_rejoin_with_countdown_and_rejoins_the_same_call() {
    let mut sim = Sim::new(11);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(7_000);
    let old = sim.stored(a);
    assert_eq!(old.len(), 1);
    let old_token = old[0].token.clone();

    let t_reload = sim.now;
    sim.take_events(a);
    sim.reload(a, false);
    sim.connect(a);
    // The new page offers the call with a deadline a minute after the drop.
    let offer = offers(&sim, a).pop().expect("offered");
    assert_eq!(offer.call, id);
    assert_eq!(offer.peer.id, "bob");
    assert!(offer.deadline >= t_reload + 59_000 && offer.deadline <= t_reload + 60_100);
    assert!(has(&sim, a, |e| matches!(e, Event::Connected { .. })));
    assert_eq!(sim.nodes[a].engine.calls().count(), 0, "not rejoined yet");
    assert!(has(&sim, b, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    )));

    sim.advance(3_500);
    let ticks = countdowns(&sim, a, &id);
    assert!(ticks.len() >= 3, "ticks: {ticks:?}");
    for w in ticks.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 1_000, "once per second: {ticks:?}");
        assert!(w[1].1 < w[0].1, "decreasing: {ticks:?}");
    }
    let pending = sim.nodes[a].engine.pending_rejoins(sim.now);
    assert_eq!(pending.len(), 1);

    sim.act(a, |e, now| e.rejoin(&id, now)).unwrap();
    sim.advance(100);
    assert!(has(&sim, a, |e| matches!(e,
        Event::CallStarted { call, rejoined: true } if call.id == id && call.peer.id == "bob")));
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    assert_eq!(sim.nodes[a].engine.calls().count(), 1);
    assert!(has(&sim, b, |e| matches!(e,
        Event::ParticipantReconnected { call, user } if call == &id && user == "alice")));
    let new_token = sim.stored(a)[0].token.clone();
    assert_ne!(new_token, old_token, "a rejoin issues a new token");
    assert!(sim.nodes[a].engine.pending_rejoins(sim.now).is_empty());
    // No more countdown once rejoined.
    let n = countdowns(&sim, a, &id).len();
    sim.advance(5_000);
    assert_eq!(countdowns(&sim, a, &id).len(), n);

    send(&mut sim, a, &id, json!("hi again"));
    send(&mut sim, b, &id, json!("hello"));
    sim.advance(100);
    assert_eq!(signals(&sim, b, &id), vec![json!("hi again")]);
    assert_eq!(signals(&sim, a, &id), vec![json!("hello")]);

    // The spent token, replayed from another page of alice, changes nothing: that page
    // is told the call goes on in her live session (it may offer to move it there with
    // the current token), and keeps its storage, which in one browser is the holder's.
    let a2 = sim.add("alice");
    let mut stale = old[0].clone();
    stale.deadline = sim.now + 30_000;
    stale.token = old_token;
    let now = sim.now;
    sim.client(a2).load_rejoin_records(vec![stale], now);
    sim.connect(a2);
    let holder_before = holder(&sim, &id, "alice");
    sim.act(a2, |e, now| e.rejoin(&id, now)).unwrap();
    sim.advance(100);
    assert_eq!(errors(&sim, a2), vec![ErrorCode::HeldElsewhere]);
    assert!(has(&sim, a2, |e| matches!(
        e,
        Event::RejoinWithdrawn {
            why: RejoinWithdrawn::HeldElsewhere,
            ..
        }
    )));
    assert!(!sim.nodes[a2]
        .storage_ops
        .iter()
        .any(|(_, op)| matches!(op, StorageOp::Remove(_))));
    assert_eq!(holder(&sim, &id, "alice"), holder_before);
    assert!(!has(&sim, a, |e| matches!(e, Event::CallMoved { .. })));
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
}

#[test]
fn rejoin_tokens_of_other_identities_and_calls_are_refused() {
    let mut sim = Sim::new(12);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let c = sim.online("carol");
    let d = sim.online("dave");
    let ab = establish(&mut sim, a, b, None);
    let cd = establish(&mut sim, c, d, None);
    let alice_token = sim.stored(a)[0].token.clone();

    // Carol presents alice's token for alice's call.
    let raw = sim.open_raw();
    sim.raw_send(raw, &hello("carol", None));
    sim.raw_send(
        raw,
        &msg(
            1,
            ClientMsg::Rejoin {
                call: ab.clone(),
                token: alice_token.clone(),
            },
        ),
    );
    assert_eq!(
        msg_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::RejoinDenied, Some(1))]
    );
    // Alice presents her token for carol's call.
    let raw = sim.open_raw();
    sim.raw_send(raw, &hello("alice", None));
    sim.raw_send(
        raw,
        &msg(
            1,
            ClientMsg::Rejoin {
                call: cd.clone(),
                token: alice_token.clone(),
            },
        ),
    );
    assert_eq!(
        msg_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::RejoinDenied, Some(1))]
    );
    // A forged token for her own call, which her live session holds: refused, and she
    // is told where the call is (her own snapshot says as much).
    sim.raw_send(
        raw,
        &msg(
            2,
            ClientMsg::Rejoin {
                call: ab.clone(),
                token: "00".repeat(32),
            },
        ),
    );
    assert_eq!(
        msg_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::HeldElsewhere, Some(2))]
    );
    sim.advance(100);
    // Nothing moved: each call is still held by its own sessions.
    for (call, x, y) in [(&ab, a, b), (&cd, c, d)] {
        assert!(is_active(&sim, x, call) && is_active(&sim, y, call));
        assert!(!has(&sim, x, |e| matches!(e, Event::CallMoved { .. })));
        assert!(!has(&sim, y, |e| matches!(
            e,
            Event::ParticipantReconnected { .. }
        )));
    }
    assert_eq!(
        holder(&sim, &ab, "alice").as_deref(),
        sim.nodes[a].engine.session_id()
    );
    // And alice's real token still works afterwards (nothing was spent).
    let a2 = sim.add("alice");
    let rec = sim.stored(a)[0].clone();
    let now = sim.now;
    sim.client(a2).load_rejoin_records(vec![rec], now);
    sim.connect(a2);
    sim.act(a2, |e, now| e.rejoin(&ab, now)).unwrap();
    sim.advance(100);
    assert!(is_active(&sim, a2, &ab));

    // A page of carol that finds alice's record in a shared browser drops it.
    let c2 = sim.add("carol");
    let now = sim.now;
    let foreign = sim.stored(a2)[0].clone();
    sim.client(c2).load_rejoin_records(vec![foreign], now);
    sim.connect(c2);
    assert!(sim.stored(c2).is_empty());
    assert_eq!(
        sim.act(c2, |e, now| e.rejoin(&ab, now)),
        Err(ClientError::NoRejoin)
    );
}

#[test]
fn rejoin_after_the_call_ended_is_unknown_call() {
    let mut sim = Sim::new(13);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    let record = sim.stored(a)[0].clone();
    sim.reload(a, true); // crashed; the server has not noticed yet
    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(100);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Hangup]);

    let raw = sim.open_raw();
    sim.raw_send(raw, &hello("alice", None));
    sim.raw_send(
        raw,
        &msg(
            1,
            ClientMsg::Rejoin {
                call: id.clone(),
                token: record.token.clone(),
            },
        ),
    );
    assert_eq!(
        msg_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::UnknownCall, Some(1))]
    );

    // The reloaded page learns why the call is gone, once and with the person's name,
    // instead of offering it (not even for a moment).
    sim.take_events(a);
    sim.connect(a);
    sim.advance(100);
    let notices: Vec<Event> = sim
        .events(a)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::CallEnded { .. }
                    | Event::RejoinAvailable { .. }
                    | Event::RejoinWithdrawn { .. }
                    | Event::RejoinExpired { .. }
            )
        })
        .collect();
    assert!(
        matches!(&notices[..], [Event::CallEnded { call, reason: EndReason::Hangup, peer }]
            if call == &id && peer.id == "bob"),
        "{notices:?}"
    );
    assert!(sim.stored(a).is_empty());
    assert!(sim.nodes[a].engine.pending_rejoins(sim.now).is_empty());
}

#[test]
fn expired_record_is_not_offered() {
    let mut sim = Sim::new(14);
    let a = sim.add("alice");
    let now = sim.now;
    let record = RejoinRecord {
        v: REJOIN_RECORD_VERSION,
        call: "c0ffee0000000000000000aa".into(),
        user: "alice".into(),
        token: "ab".repeat(32),
        peer: Peer {
            id: "bob".into(),
            name: "bob".into(),
        },
        kind: None,
        grace_ms: 60_000,
        deadline: now - 1,
        clock_offset: 0,
    };
    sim.nodes[a]
        .stored
        .insert(record.call.clone(), record.clone());
    sim.client(a).load_rejoin_records(vec![record.clone()], now);
    sim.connect(a);
    sim.advance(3_000);
    assert!(offers(&sim, a).is_empty());
    assert!(countdowns(&sim, a, &record.call).is_empty());
    assert!(sim.stored(a).is_empty(), "the expired record is deleted");
    assert!(sim.nodes[a].engine.pending_rejoins(sim.now).is_empty());
}

#[test]
fn offer_expires_when_its_countdown_reaches_zero() {
    let mut sim = Sim::new(15);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    // A page reloaded without a network offers nothing (the server has not said the
    // call waits) and keeps its record for the server to judge: once back, it hears
    // that the window passed.
    sim.set_net(a, Net::Refuse);
    sim.reload(a, false);
    sim.act(a, |e, now| e.connect(now));
    sim.advance(65_000);
    assert!(offers(&sim, a).is_empty());
    assert!(countdowns(&sim, a, &id).is_empty());
    assert_eq!(sim.stored(a).len(), 1, "kept until the server speaks");
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
    sim.set_net(a, Net::Up);
    sim.act(a, |e, now| e.reconnect(now));
    assert!(sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ReconnectFailed]);
    assert!(sim.stored(a).is_empty());
    assert!(sim.nodes[a].engine.pending_rejoins(sim.now).is_empty());

    // Connected, the page hears the server's verdict for the same instant.
    let c = sim.online("carol");
    let d = sim.online("dave");
    let id = establish(&mut sim, c, d, None);
    sim.reload(c, false);
    sim.connect(c);
    let deadline = offers(&sim, c)[0].deadline;
    sim.run_to(deadline + 1_100);
    let gone = sim.events(c).into_iter().any(|e| match e {
        Event::RejoinExpired { call } => call == id,
        Event::CallEnded { call, reason, .. } => call == id && reason == EndReason::ReconnectFailed,
        _ => false,
    });
    assert!(gone, "{:?}", sim.events(c));
    assert!(sim.stored(c).is_empty());
    assert!(sim.nodes[c].engine.pending_rejoins(sim.now).is_empty());
    assert_eq!(ended(&sim, d, &id), vec![EndReason::ReconnectFailed]);
}

#[test]
fn decline_rejoin_removes_the_record_and_the_call_ends_at_its_deadline() {
    let mut sim = Sim::new(16);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    let t_drop = sim.now;
    sim.reload(a, false);
    sim.connect(a);
    assert_eq!(offers(&sim, a).len(), 1);
    sim.client(a).decline_rejoin(&id).unwrap();
    sim.settle();
    assert!(has(&sim, a, |e| matches!(e,
        Event::RejoinWithdrawn { call, why: RejoinWithdrawn::Declined } if call == &id)));
    assert!(sim.stored(a).is_empty());
    assert!(sim.nodes[a]
        .storage_ops
        .iter()
        .any(|(_, op)| *op == StorageOp::Remove(id.clone())));
    assert!(sim.nodes[a].engine.pending_rejoins(sim.now).is_empty());
    assert_eq!(
        sim.act(a, |e, now| e.rejoin(&id, now)),
        Err(ClientError::NoRejoin)
    );
    let n = countdowns(&sim, a, &id).len();
    sim.run_to(t_drop + 61_000);
    assert_eq!(
        countdowns(&sim, a, &id).len(),
        n,
        "no countdown after declining"
    );
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
}

#[test]
fn rejoin_from_a_second_live_session_moves_the_call() {
    let mut sim = Sim::new(17);
    let a1 = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a1, b, None);
    // A second tab (or device) of alice with the same stored record.
    let a2 = sim.add("alice");
    let rec = sim.stored(a1)[0].clone();
    let now = sim.now;
    sim.client(a2).load_rejoin_records(vec![rec], now);
    sim.connect(a2);
    sim.advance(100);
    // Live elsewhere: not offered, not even before the server said so.
    assert!(sim.nodes[a2].engine.pending_rejoins(sim.now).is_empty());
    assert!(!has(&sim, a2, |e| matches!(
        e,
        Event::RejoinAvailable { .. } | Event::RejoinWithdrawn { .. }
    )));

    sim.act(a2, |e, now| e.rejoin(&id, now)).unwrap();
    sim.advance(100);
    assert!(has(&sim, a2, |e| matches!(e,
        Event::CallStarted { call, rejoined: true } if call.id == id)));
    assert!(has(
        &sim,
        a1,
        |e| matches!(e, Event::CallMoved { call } if call == &id)
    ));
    assert_eq!(sim.nodes[a1].engine.calls().count(), 0);
    // The evicted tab forgets the call but leaves storage alone: in one browser the
    // stored record is now the new holder's. What it may keep is the spent token.
    assert!(sim.nodes[a1].engine.rejoin_token(&id).is_none());
    let current = sim.nodes[a2].engine.rejoin_token(&id).unwrap().to_owned();
    assert!(sim.stored(a1).iter().all(|r| r.token != current));
    assert_eq!(
        holder(&sim, &id, "alice").as_deref(),
        sim.nodes[a2].engine.session_id()
    );
    // The evicted tab does not take it back on its own, even across a reconnect.
    sim.drop_link(a1);
    sim.advance(30_000);
    assert_eq!(sim.nodes[a1].engine.calls().count(), 0);
    assert_eq!(
        holder(&sim, &id, "alice").as_deref(),
        sim.nodes[a2].engine.session_id()
    );
    assert!(!has(&sim, a2, |e| matches!(e, Event::CallMoved { .. })));
    send(&mut sim, b, &id, json!("to the new tab"));
    sim.advance(100);
    assert_eq!(signals(&sim, a2, &id), vec![json!("to the new tab")]);
    assert!(signals(&sim, a1, &id).is_empty());
    assert!(is_active(&sim, a2, &id) && is_active(&sim, b, &id));
}
