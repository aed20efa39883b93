//! Bad input from a client: oversized, malformed, unknown, early, repeated, out-of-order and
//! flooding frames are refused with their codes, and the session and its call survive.

use crate::helpers::{
    assert_intact, conn_errors, errors, has, hello, in_call, msg, msg_errors, server_call, signals,
    welcome_of,
};
use holdfast::engine::client::{ConnectionState, Event};
use holdfast::engine::store::Store;
use holdfast::protocol::*;
use serde_json::json;

#[test]
fn oversized_and_malformed_frames_are_refused_without_changing_state() {
    let (mut sim, a, b, id) = in_call(30);
    let conn = sim.conn_of(a);
    let big = format!(r#"{{"t":"ping","ack":0,"pad":"{}"}}"#, "x".repeat(17_000));
    sim.inject(a, &big);
    sim.inject(a, "not json at all");
    sim.inject(a, r#"{"t":"msg","seq":"one"}"#);
    sim.inject(a, r#"[1,2,3]"#);
    sim.advance(100);
    assert_eq!(
        errors(&sim, a),
        vec![
            ErrorCode::FrameTooLarge,
            ErrorCode::BadFrame,
            ErrorCode::BadFrame,
            ErrorCode::BadFrame
        ]
    );
    assert_intact(&mut sim, a, b, &id, conn);
    // The engine's own entry point too.
    let conn = conn.unwrap();
    sim.server_bad_frame(conn, BadFrame::Binary);
    sim.advance(100);
    assert_eq!(errors(&sim, a).last(), Some(&ErrorCode::BadFrame));
    assert_intact(&mut sim, a, b, &id, Some(conn));
}

#[test]
fn unknown_frame_and_message_types_are_answered_unknown_message() {
    let (mut sim, a, b, id) = in_call(31);
    let conn = sim.conn_of(a);
    sim.inject(a, r#"{"t":"teleport","to":"mars"}"#);
    sim.advance(100);
    assert_eq!(errors(&sim, a), vec![ErrorCode::UnknownMessage]);
    assert_intact(&mut sim, a, b, &id, conn);

    // A sequenced message of an unknown type counts as handled: the next seq follows.
    let raw = sim.open_raw();
    sim.raw_send(raw, &hello("alice", None));
    sim.raw_take(raw);
    sim.raw_send(
        raw,
        r#"{"t":"msg","seq":1,"ack":0,"body":{"type":"warp","x":1}}"#,
    );
    assert_eq!(
        msg_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::UnknownMessage, Some(1))]
    );
    sim.raw_send(
        raw,
        &msg(
            2,
            ClientMsg::Hangup {
                call: "nope".into(),
            },
        ),
    );
    assert_eq!(
        msg_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::UnknownCall, Some(2))]
    );
    // Someone else's call cannot be touched.
    let carol = sim.open_raw();
    sim.raw_send(carol, &hello("carol", None));
    sim.raw_send(carol, &msg(1, ClientMsg::Hangup { call: id.clone() }));
    sim.raw_send(
        carol,
        &msg(
            2,
            ClientMsg::Signal {
                call: id.clone(),
                payload: json!("spoof"),
            },
        ),
    );
    assert_eq!(
        msg_errors(&sim.raw_take(carol)),
        vec![
            (ErrorCode::NotParticipant, Some(1)),
            (ErrorCode::NotParticipant, Some(2))
        ]
    );
    let conn = sim.conn_of(a);
    assert_intact(&mut sim, a, b, &id, conn);
    assert!(!signals(&sim, b, &id).contains(&json!("spoof")));
}

#[test]
fn frame_before_hello_is_fatal_not_authenticated() {
    let (mut sim, a, b, id) = in_call(32);
    let raw = sim.open_raw();
    sim.raw_send(raw, &encode(&ClientFrame::Ping { ack: 0 }));
    assert_eq!(
        conn_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::NotAuthenticated, true)]
    );
    assert!(sim.raw_is_closed(raw));
    let raw = sim.open_raw();
    sim.raw_send(raw, &msg(1, ClientMsg::Hangup { call: id.clone() }));
    assert_eq!(
        conn_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::NotAuthenticated, true)]
    );
    assert!(sim.raw_is_closed(raw));
    // Garbage first is fatal too.
    let raw = sim.open_raw();
    sim.raw_send(raw, "garbage");
    assert_eq!(
        conn_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::BadFrame, true)]
    );
    // A socket that never says hello is closed after the timeout.
    let silent = sim.open_raw();
    sim.advance(5_000);
    assert_eq!(
        conn_errors(&sim.raw_take(silent)),
        vec![(ErrorCode::HelloTimeout, true)]
    );
    assert!(sim.raw_is_closed(silent));
    let conn = sim.conn_of(a);
    assert_intact(&mut sim, a, b, &id, conn);
}

#[test]
fn second_hello_is_already_authenticated_and_keeps_the_session() {
    let (mut sim, a, b, id) = in_call(33);
    let conn = sim.conn_of(a);
    sim.inject(a, &hello("bob", None));
    sim.advance(100);
    assert_eq!(errors(&sim, a), vec![ErrorCode::AlreadyAuthenticated]);
    assert_eq!(sim.nodes[a].engine.user().unwrap().id, "alice");
    assert_intact(&mut sim, a, b, &id, conn);
}

#[test]
fn sequence_gap_is_fatal_and_the_session_resumes_intact() {
    let (mut sim, a, b, id) = in_call(34);
    let sid = sim.nodes[a].engine.session_id().unwrap().to_owned();
    let in_seq = sim.store().session(&sid).unwrap().inbox.last_seq();
    sim.inject(a, &msg(in_seq + 5, ClientMsg::Hangup { call: id.clone() }));
    assert!(sim.run_until(1_000, |s| errors(s, a).contains(&ErrorCode::BadSequence)));
    // The skipped-ahead message was not handled.
    assert_eq!(sim.store().session(&sid).unwrap().inbox.last_seq(), in_seq);
    assert!(server_call(&sim, &id).is_some());
    assert!(
        sim.run_until(5_000, |s| s.state(a) == ConnectionState::Connected
            && s.welcomes(a).len() == 2)
    );
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    assert_eq!(sim.nodes[a].engine.session_id(), Some(sid.as_str()));
    assert_intact(&mut sim, a, b, &id, None);
}

#[test]
fn message_flood_is_rate_limited_then_closed() {
    let (mut sim, a, b, id) = in_call(35);
    let raw = sim.open_raw();
    sim.raw_send(raw, &hello("alice", None));
    let sid = welcome_of(&sim.raw_take(raw)).session;
    let burst = sim.config().burst as u64;
    let mut closed_at = None;
    for seq in 1..=burst + 100 {
        sim.raw_send(
            raw,
            &msg(
                seq,
                ClientMsg::SetStatus {
                    status: PresenceStatus::Available,
                },
            ),
        );
        if sim.raw_is_closed(raw) {
            closed_at = Some(seq);
            break;
        }
    }
    let frames = sim.raw_take(raw);
    let limited: Vec<u64> = msg_errors(&frames)
        .into_iter()
        .filter(|(c, _)| *c == ErrorCode::RateLimited)
        .map(|(_, re)| re.unwrap())
        .collect();
    assert_eq!(limited.first(), Some(&(burst + 1)), "the burst passes");
    assert!(limited.len() >= 10);
    assert_eq!(
        conn_errors(&frames),
        vec![(ErrorCode::RateLimited, true)],
        "then a fatal error"
    );
    let closed_at = closed_at.expect("the socket is closed");
    assert!(closed_at > burst + 1);
    // Refused messages count as handled: the sequence has no gap.
    assert_eq!(
        sim.store().session(&sid).unwrap().inbox.last_seq(),
        closed_at
    );
    // A refill over time lets the same identity talk again; the call was never touched.
    let conn = sim.conn_of(a);
    assert_intact(&mut sim, a, b, &id, conn);
}

/// Found by the `server_engine` fuzzer: the frame that made a flood close the socket
/// was still answered, on the socket just closed (an acknowledgement of a repeated
/// message, or a sequence error). Release builds dropped that frame; debug builds (the
/// tests, the browser suites) panicked in the engine and took the server down.
#[test]
fn a_flood_of_repeated_messages_closes_the_socket_and_answers_nothing_after() {
    let (mut sim, a, b, id) = in_call(36);
    let raw = sim.open_raw();
    sim.raw_send(raw, &hello("alice", None));
    let sid = welcome_of(&sim.raw_take(raw)).session;
    let status = ClientMsg::SetStatus {
        status: PresenceStatus::Available,
    };
    sim.raw_send(raw, &msg(1, status.clone()));
    let burst = sim.config().burst as u64;
    let mut closed = false;
    for _ in 0..burst + 100 {
        // The same message again and again: each is a duplicate, and each is charged.
        sim.raw_send(raw, &msg(1, status.clone()));
        if sim.raw_is_closed(raw) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a flood of repeats closes the socket");
    let frames = sim.raw_take(raw);
    assert_eq!(
        conn_errors(&frames).last(),
        Some(&(ErrorCode::RateLimited, true)),
        "the last word on the socket is the flood's fatal error"
    );
    assert_eq!(
        sim.store().session(&sid).unwrap().inbox.last_seq(),
        1,
        "the repeats were never handled again"
    );
    let conn = sim.conn_of(a);
    assert_intact(&mut sim, a, b, &id, conn);
}
