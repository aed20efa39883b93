//! Found by the chaos soak: a caller reloads while the call rings, the callee accepts
//! before the ring-detach grace runs out, and the caller's new page (which has no
//! rejoin token: the call had none while it rang) invites the same person again. It
//! used to be told `existing: true` about an active call it did not hold, while the
//! server kept relaying the callee's payloads into the dead page's session until the
//! grace window ended the call `reconnect-failed`. The new page now takes the call.

use crate::common::sim::Sim;
use crate::helpers::{ended, has, holder, is_active, send, signals, wait_incoming};
use holdfast::engine::client::Event;
use serde_json::json;

#[test]
fn a_caller_who_reloads_while_ringing_and_invites_again_takes_the_accepted_call() {
    let mut sim = Sim::new(1207);
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now))
        .expect("invite");
    let id = wait_incoming(&mut sim, b);

    // Alice's page reloads while it rings: the new page has no record of the call.
    sim.reload(a, false);
    sim.connect(a);
    assert!(sim.stored(a).is_empty());
    // Bob accepts: the call is active, with Alice's side away.
    sim.act(b, |e, now| e.accept(&id, now)).expect("accept");
    sim.advance(200);
    assert!(is_active(&sim, b, &id));
    assert!(has(&sim, b, |e| matches!(e,
        Event::ParticipantDisconnected { call, .. } if call == &id)));

    // Alice calls Bob again from the new page: she gets the same call, live here.
    sim.act(a, |e, now| e.call("bob", None, None, now))
        .expect("invite again");
    sim.advance(200);
    assert!(is_active(&sim, a, &id), "the new page holds the call");
    assert_eq!(
        holder(&sim, &id, "alice").as_deref(),
        sim.nodes[a].engine.session_id()
    );
    assert_eq!(
        sim.stored(a).len(),
        1,
        "the new page can rejoin after a reload"
    );
    assert!(has(&sim, b, |e| matches!(e,
        Event::ParticipantReconnected { call, .. } if call == &id)));

    // Bob's payloads reach the new page, and the grace window no longer ends the call.
    send(&mut sim, b, &id, json!({ "n": 1 }));
    sim.advance(200);
    assert_eq!(signals(&sim, a, &id), vec![json!({ "n": 1 })]);
    sim.advance(70_000);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    assert!(ended(&sim, a, &id).is_empty() && ended(&sim, b, &id).is_empty());
}

#[test]
fn a_repeat_invite_does_not_take_a_call_another_live_tab_holds() {
    let mut sim = Sim::new(1208);
    let a0 = sim.online("alice");
    let a1 = sim.online("alice");
    let b = sim.online("bob");
    let id = crate::helpers::establish(&mut sim, a0, b, None);
    sim.act(a1, |e, now| e.call("bob", None, None, now))
        .expect("invite from the other tab");
    sim.advance(200);
    assert!(is_active(&sim, a0, &id), "the live tab keeps the call");
    assert!(!is_active(&sim, a1, &id));
    assert_eq!(
        holder(&sim, &id, "alice").as_deref(),
        sim.nodes[a0].engine.session_id()
    );
}
