//! Resuming a session after a dropped or half-open link: gap messages exactly once and
//! in order, secret rotation, superseded sockets, a welcome lost with its socket.

use crate::common::sim::{Net, Sim};
use crate::helpers::{
    assert_intact, establish, has, hello, holder, is_active, send, signals, welcome_of,
};
use holdfast::engine::client::{ConnectionState, Event};
use holdfast::engine::server::{CloseReason, Output};
use holdfast::engine::store::Store;
use holdfast::protocol::*;
use serde_json::json;

#[test]
fn link_drop_and_resume_delivers_gap_messages_exactly_once_in_order() {
    let mut sim = Sim::new(2);
    sim.default_delay_ms = 40;
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(2_000);

    // Messages in flight when the socket dies are lost with it.
    for i in 0..3 {
        send(&mut sim, a, &id, json!({"a": i}));
        send(&mut sim, b, &id, json!({"b": i}));
    }
    sim.advance(20);
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    // During the gap both sides keep talking.
    for i in 3..6 {
        send(&mut sim, a, &id, json!({"a": i}));
        send(&mut sim, b, &id, json!({"b": i}));
    }
    sim.advance(3_000);
    assert!(has(&sim, b, |e| matches!(e,
        Event::ParticipantDisconnected { call, user, .. } if call == &id && user == "alice")));
    for i in 6..8 {
        send(&mut sim, a, &id, json!({"a": i}));
        send(&mut sim, b, &id, json!({"b": i}));
    }
    sim.set_net(a, Net::Up);
    let back = sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected);
    assert!(back);
    sim.advance(1_000);

    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    assert!(!has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert!(has(&sim, b, |e| matches!(e,
        Event::ParticipantReconnected { call, user } if call == &id && user == "alice")));
    let want_a: Vec<_> = (0..8).map(|i| json!({"b": i})).collect();
    let want_b: Vec<_> = (0..8).map(|i| json!({"a": i})).collect();
    assert_eq!(signals(&sim, a, &id), want_a);
    assert_eq!(signals(&sim, b, &id), want_b);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    assert_eq!(sim.nodes[a].engine.unacked_len(), 0);
}

#[test]
fn lost_acks_cause_replays_that_are_dropped_as_duplicates() {
    // A socket that dies after the server handled messages but before its acks arrive:
    // the client re-sends them on resume and the server must not relay them twice.
    let mut sim = Sim::new(3);
    sim.default_delay_ms = 30;
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    for i in 0..4 {
        send(&mut sim, a, &id, json!(i));
    }
    // Let the frames reach the server (30 ms) but not the acks back (60 ms).
    sim.advance(45);
    sim.half_open(a);
    let back = sim.run_until(10_000, |s| {
        s.state(a) == ConnectionState::Connected
            && s.events(a)
                .iter()
                .any(|e| matches!(e, Event::Resumed { .. }))
    });
    assert!(back);
    sim.advance(1_000);
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    assert_eq!(
        signals(&sim, b, &id),
        (0..4).map(|i| json!(i)).collect::<Vec<_>>()
    );
}

#[test]
fn resume_secret_rotates_and_an_old_secret_gets_a_new_session() {
    let mut sim = Sim::new(4);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.drop_link(a);
    assert!(sim.run_until(5_000, |s| s.state(a) == ConnectionState::Connected));
    let welcomes = sim.welcomes(a);
    assert_eq!(welcomes.len(), 2);
    let (first, second) = (&welcomes[0], &welcomes[1]);
    assert!(!first.resumed && second.resumed);
    assert_eq!(first.session, second.session);
    assert_ne!(first.secret, second.secret, "the secret must rotate");
    let sid = first.session.clone();
    // The client confirms the welcome at once; from then on the old secret is dead.
    sim.advance(20);
    assert!(sim
        .store()
        .session(&sid)
        .unwrap()
        .prev_secret_hash
        .is_none());

    // An attacker (or a stale tab) replays the first secret.
    let raw = sim.open_raw();
    sim.raw_send(
        raw,
        &hello(
            "alice",
            Some(Resume {
                session: sid.clone(),
                secret: first.secret.clone(),
                last_seq: 0,
            }),
        ),
    );
    let w = welcome_of(&sim.raw_take(raw));
    assert!(!w.resumed);
    assert_ne!(w.session, sid);
    assert_eq!(w.last_seq, 0);
    let snap = w.snapshot.expect("a new session carries a snapshot");
    assert_eq!(snap.calls.len(), 1);
    assert!(!snap.calls[0].held_here);

    // The original session is untouched: same socket, same call, traffic flows.
    let conn = sim.conn_of(a).unwrap();
    assert_eq!(sim.session_of_conn(conn), Some(sid.clone()));
    assert_eq!(holder(&sim, &id, "alice"), Some(sid.clone()));
    send(&mut sim, a, &id, json!("still here"));
    sim.advance(100);
    assert_eq!(signals(&sim, b, &id), vec![json!("still here")]);
    assert_eq!(sim.state(a), ConnectionState::Connected);

    // The current secret is what works (taking the session over).
    let last_seq = sim.store().session(&sid).unwrap().outbox.last_seq();
    let raw2 = sim.open_raw();
    sim.raw_send(
        raw2,
        &hello(
            "alice",
            Some(Resume {
                session: sid.clone(),
                secret: second.secret.clone(),
                last_seq,
            }),
        ),
    );
    let w2 = welcome_of(&sim.raw_take(raw2));
    assert!(w2.resumed);
    assert_eq!(w2.session, sid);
}

#[test]
fn half_open_link_is_detected_within_5s_and_old_socket_is_superseded() {
    let mut sim = Sim::new(5);
    sim.default_delay_ms = 20;
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(3_000);
    let old_conn = sim.conn_of(a).unwrap();
    // Kill the link just after the server answered a ping, with the pong in flight:
    // the client heard last from the server before the server heard last from it, so
    // the client notices first and resumes while the server still holds the old socket.
    let mark = sim.server_log.len();
    let pong = sim.run_until(3_000, |s| {
        s.server_log[mark..].iter().any(|(_, o)| {
            matches!(o, Output::Send { conn, frame: ServerFrame::Pong { .. } } if *conn == old_conn)
        })
    });
    assert!(pong);
    let t0 = sim.now;
    sim.half_open(a);
    assert!(sim.run_until(10_000, |s| s
        .events(a)
        .iter()
        .any(|e| matches!(e, Event::Disconnected { .. }))));
    let (detected, _) = sim
        .find_event(a, |e| matches!(e, Event::Disconnected { .. }))
        .unwrap();
    assert!(
        detected - t0 <= 5_000,
        "dead link noticed after {} ms",
        detected - t0
    );
    assert!(sim.run_until(2_000, |s| s.state(a) == ConnectionState::Connected));
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    let superseded = sim.server_log.iter().any(|(_, o)| {
        matches!(o, Output::Close { conn, reason: CloseReason::Error(ErrorCode::Superseded) }
            if *conn == old_conn)
    });
    assert!(superseded, "the old socket must be closed as superseded");
    assert_ne!(sim.conn_of(a), Some(old_conn));
    // The server never detached the session, so the peer saw no blip.
    assert!(!has(&sim, b, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    )));
    send(&mut sim, b, &id, json!("after"));
    sim.advance(10_000);
    assert_eq!(signals(&sim, a, &id), vec![json!("after")]);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
}

#[test]
fn half_open_noticed_by_server_first_still_resumes() {
    let mut sim = Sim::new(6);
    sim.default_delay_ms = 20;
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(2_345);
    let t0 = sim.now;
    sim.half_open(a);
    assert!(sim.run_until(10_000, |s| s.state(a) != ConnectionState::Connected));
    assert!(sim.now - t0 <= 5_000);
    assert!(sim.run_until(5_000, |s| s.state(a) == ConnectionState::Connected));
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    send(&mut sim, a, &id, json!(1));
    sim.advance(1_000);
    assert_eq!(signals(&sim, b, &id), vec![json!(1)]);
}

#[test]
fn a_welcome_lost_with_its_socket_does_not_lose_the_session() {
    let mut sim = Sim::new(38);
    sim.default_delay_ms = 50;
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.drop_link(a);
    // The hello reaches the server (50 ms), which rotates the secret; the socket dies
    // before the welcome gets back (100 ms).
    sim.advance(70);
    assert_eq!(sim.metric(|m| m.resumes), 1);
    sim.drop_link(a);
    assert!(sim.run_until(5_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(sim.welcomes(a).len(), 2, "one welcome was lost");
    assert!(sim.welcomes(a)[1].resumed);
    assert!(!has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    assert_intact(&mut sim, a, b, &id, None);
}
