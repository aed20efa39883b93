//! A logout reaches the server before the page goes away: the `bye` on the socket is
//! answered, and when the socket cannot carry it the page's HTTP fallback does. Either
//! way the other person sees `hangup` at once, not a reconnection window.

use crate::common::sim::{Net, Sim, C};
use crate::helpers::{ended, has, in_call, server_call};
use holdfast::engine::client::Event;
use holdfast::engine::server::ByeOutcome;
use holdfast::engine::store::Store;
use holdfast::protocol::*;

/// `b` learnt that the call ended with `hangup` within `ms` of `since`, and was never
/// told `a` merely dropped; `a`'s session is gone from the server.
fn hung_up_at_once(sim: &Sim, a: C, b: C, id: &str, since: u64, ms: u64) {
    assert_eq!(ended(sim, b, id), vec![EndReason::Hangup]);
    let (t, _) = sim
        .find_event(b, |e| matches!(e, Event::CallEnded { .. }))
        .unwrap();
    assert!(t - since <= ms, "ended {} ms after the logout", t - since);
    assert!(!has(sim, b, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    )));
    assert!(server_call(sim, id).is_none());
    assert!(sim.store().sessions_of(&sim.id(a)).is_empty());
}

#[test]
fn the_bye_on_a_live_socket_is_answered_and_needs_no_fallback() {
    let (mut sim, a, b, id) = in_call(191);
    let t = sim.now;
    sim.act(a, |e, now| e.logout(now));
    assert!(sim.nodes[a].engine.logout_pending());
    sim.advance(50);
    assert!(!sim.nodes[a].engine.logout_pending(), "the server answered");
    assert!(sim.nodes[a]
        .received
        .iter()
        .any(|(_, f)| *f == ServerFrame::Bye));
    hung_up_at_once(&sim, a, b, &id, t, 50);
    sim.advance(10_000);
    assert!(
        sim.nodes[a].goodbyes.len() <= 1,
        "the HTTP copy goes out once, and ends nothing more"
    );
}

#[test]
fn a_bye_the_server_never_hears_goes_by_http_at_once() {
    let (mut sim, a, b, id) = in_call(192);
    sim.half_open(a); // the socket looks open; nothing gets through any more
    let t = sim.now;
    sim.act(a, |e, now| e.logout(now));
    sim.advance(2_000);
    assert_eq!(sim.nodes[a].goodbyes.len(), 1);
    assert_eq!(
        sim.nodes[a].goodbyes[0].1,
        ByeOutcome::Ended,
        "the server took the proof"
    );
    hung_up_at_once(&sim, a, b, &id, t, 50);
    assert!(
        !sim.nodes[a].engine.logout_pending(),
        "gave up on the socket"
    );
    assert_eq!(sim.nodes[a].goodbyes.len(), 1, "one HTTP copy only");
}

#[test]
fn a_page_hidden_while_its_bye_waits_has_sent_the_fallback() {
    let (mut sim, a, b, id) = in_call(193);
    sim.half_open(a);
    let t = sim.now;
    sim.act(a, |e, now| e.logout(now));
    sim.act(a, |e, now| e.handle_pagehide(now));
    assert_eq!(sim.nodes[a].goodbyes.len(), 1, "sent before the page goes");
    sim.advance(50);
    hung_up_at_once(&sim, a, b, &id, t, 50);
}

#[test]
fn a_logout_while_reconnecting_goes_by_http_at_once() {
    let (mut sim, a, b, id) = in_call(194);
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    let t = sim.now;
    sim.act(a, |e, now| e.logout(now));
    assert_eq!(sim.nodes[a].goodbyes.len(), 1);
    sim.advance(50);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Hangup]);
    let (at, _) = sim
        .find_event(b, |e| matches!(e, Event::CallEnded { .. }))
        .unwrap();
    assert!(at - t <= 50);
    assert!(server_call(&sim, &id).is_none());
}

#[test]
fn a_fallback_without_the_right_secret_changes_nothing() {
    let (mut sim, a, b, id) = in_call(195);
    let session = sim.nodes[a].engine.session_id().unwrap().to_owned();
    for token in ["alice", "bob"] {
        assert_eq!(
            sim.bye_request(token, &session, &"00".repeat(32)),
            ByeOutcome::Refused
        );
    }
    sim.advance(100);
    assert!(ended(&sim, b, &id).is_empty());
    assert!(server_call(&sim, &id).is_some());
    assert!(sim.nodes[a].engine.session_id().is_some());
}

#[test]
fn a_second_copy_of_the_logout_finds_it_done_and_is_not_an_error() {
    // A page sends its `bye` on the socket and over HTTP at once; whichever arrives
    // second must not look like a failure (a browser logs a 4xx as a console error).
    let (mut sim, a, b, id) = in_call(196);
    let t = sim.now;
    sim.act(a, |e, now| e.logout(now));
    sim.advance(50);
    hung_up_at_once(&sim, a, b, &id, t, 50);
    let (_, first, g) = sim.nodes[a].goodbyes[0].clone();
    assert_eq!(first, ByeOutcome::Ended);
    let (session, secret) = (g.session.clone(), g.secret.clone());
    assert_eq!(
        sim.bye_request(&g.token, &session, &secret),
        ByeOutcome::AlreadyGone
    );
    // A wrong token for a session that is gone is still refused.
    assert_eq!(sim.bye_request("", &session, &secret), ByeOutcome::Refused);
    sim.advance(1_000);
    assert_eq!(
        ended(&sim, b, &id),
        vec![EndReason::Hangup],
        "nothing more ended"
    );
}
