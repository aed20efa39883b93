//! Scenario helpers shared by the behaviour modules: set up calls, wait for them, and
//! read what each page saw (events, end reasons, signals, errors) and the raw frames.

use crate::common::sim::{Sim, C};
use holdfast::engine::client::{CallPhase, ConnectionState, Event, Io};
use holdfast::engine::server::ServerConfig;
use holdfast::engine::store::Store;
use holdfast::protocol::*;
use serde_json::json;

/// `a` calls `b`, `b` accepts; both see the call active. Returns the call id.
pub fn establish(sim: &mut Sim, a: C, b: C, kind: Option<&str>) -> CallId {
    let peer = sim.id(b);
    let kind = kind.map(str::to_owned);
    sim.act(a, |e, now| e.call(&peer, kind, None, now))
        .expect("invite");
    let id = wait_incoming(sim, b);
    sim.act(b, |e, now| e.accept(&id, now)).expect("accept");
    let ok = sim.run_until(1_000, |s| {
        is_active(s, a, &id) && is_active(s, b, &id) && !s.events(a).is_empty()
    });
    assert!(ok, "call {id} did not become active at both ends");
    id
}

pub fn wait_incoming(sim: &mut Sim, b: C) -> CallId {
    let ok = sim.run_until(1_000, |s| incoming_of(s, b).is_some());
    assert!(ok, "no incoming call at {b}");
    incoming_of(sim, b).unwrap()
}

/// A ringing incoming call in the page's call map.
pub fn incoming_of(sim: &Sim, c: C) -> Option<CallId> {
    sim.nodes[c]
        .engine
        .calls()
        .find(|c| c.phase == CallPhase::Incoming)
        .map(|c| c.id.clone())
}

pub fn is_active(sim: &Sim, c: C, id: &str) -> bool {
    sim.nodes[c]
        .engine
        .call_info(id)
        .is_some_and(|c| c.phase == CallPhase::Active)
}

pub fn ended(sim: &Sim, c: C, id: &str) -> Vec<EndReason> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::CallEnded { call, reason, .. } if call == id => Some(reason),
            _ => None,
        })
        .collect()
}

pub fn ended_at(sim: &Sim, c: C, id: &str) -> Option<(u64, EndReason)> {
    sim.find_event(
        c,
        |e| matches!(e, Event::CallEnded { call, .. } if call == id),
    )
    .map(|(t, e)| match e {
        Event::CallEnded { reason, .. } => (t, reason),
        _ => unreachable!(),
    })
}

pub fn signals(sim: &Sim, c: C, id: &str) -> Vec<serde_json::Value> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Signal { call, payload, .. } if call == id => Some(payload),
            _ => None,
        })
        .collect()
}

pub fn errors(sim: &Sim, c: C) -> Vec<ErrorCode> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Error { code, .. } => Some(code),
            _ => None,
        })
        .collect()
}

pub fn has(sim: &Sim, c: C, f: impl Fn(&Event) -> bool) -> bool {
    sim.events(c).iter().any(f)
}

pub fn send(sim: &mut Sim, c: C, id: &str, payload: serde_json::Value) {
    sim.act(c, |e, now| e.send(id, payload, now)).expect("send");
}

pub fn server_call(sim: &Sim, id: &str) -> Option<holdfast::engine::store::Call> {
    sim.store().call(id).cloned()
}

/// The session holding `user`'s side of a call on the server.
pub fn holder(sim: &Sim, id: &str, user: &str) -> Option<String> {
    server_call(sim, id)
        .and_then(|c| c.slot_of(user).cloned())
        .and_then(|s| s.session)
}

pub fn hello(token: &str, resume: Option<Resume>) -> String {
    encode(&ClientFrame::Hello(Hello {
        v: PROTOCOL_VERSION,
        token: token.into(),
        resume,
        presence: false,
        call_waiting: false,
        tab: None,
    }))
}

pub fn msg(seq: u64, body: ClientMsg) -> String {
    encode(&ClientFrame::Msg { seq, ack: 0, body })
}

pub fn welcome_of(frames: &[ServerFrame]) -> Welcome {
    frames
        .iter()
        .find_map(|f| match f {
            ServerFrame::Welcome(w) => Some((**w).clone()),
            _ => None,
        })
        .expect("a welcome")
}

pub fn msg_errors(frames: &[ServerFrame]) -> Vec<(ErrorCode, Option<u64>)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Msg {
                body: ServerMsg::Error(e),
                ..
            } => Some((e.code, e.re)),
            _ => None,
        })
        .collect()
}

pub fn conn_errors(frames: &[ServerFrame]) -> Vec<(ErrorCode, bool)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Error(e) => Some((e.code, e.fatal)),
            _ => None,
        })
        .collect()
}

pub fn opens(sim: &Sim, c: C) -> Vec<u64> {
    sim.nodes[c]
        .io_log
        .iter()
        .filter(|(_, io)| matches!(io, Io::Open(_)))
        .map(|(t, _)| *t)
        .collect()
}

pub fn interpreter_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.grace_by_kind.insert("interpreter".into(), 300_000);
    config
}

/// Alice and bob in a call; returns (sim, a, b, call).
pub fn in_call(seed: u64) -> (Sim, C, C, CallId) {
    in_call_on(Sim::new(seed))
}

/// [`in_call`] on one server process, whatever the suite runs on.
pub fn in_call_alone(seed: u64) -> (Sim, C, C, CallId) {
    in_call_on(Sim::one_process(seed))
}

fn in_call_on(mut sim: Sim) -> (Sim, C, C, CallId) {
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    send(&mut sim, a, &id, json!("before"));
    sim.advance(100);
    (sim, a, b, id)
}

/// Nothing changed: same socket and session, call active, sequences in step, traffic
/// flows both ways.
pub fn assert_intact(sim: &mut Sim, a: C, b: C, id: &str, conn: Option<u64>) {
    let sid = sim.nodes[a].engine.session_id().unwrap().to_owned();
    if let Some(conn) = conn {
        assert_eq!(sim.conn_of(a), Some(conn));
        assert_eq!(sim.session_of_conn(conn), Some(sid.clone()));
    }
    assert_eq!(sim.state(a), ConnectionState::Connected);
    assert!(is_active(sim, a, id) && is_active(sim, b, id));
    assert_eq!(holder(sim, id, "alice"), Some(sid.clone()));
    let before_a = signals(sim, a, id).len();
    let before_b = signals(sim, b, id).len();
    send(sim, a, id, json!("ping-a"));
    send(sim, b, id, json!("ping-b"));
    sim.advance(200);
    assert_eq!(signals(sim, b, id).len(), before_b + 1);
    assert_eq!(signals(sim, a, id).len(), before_a + 1);
    assert_eq!(signals(sim, b, id).last(), Some(&json!("ping-a")));
    assert_eq!(signals(sim, a, id).last(), Some(&json!("ping-b")));
    assert_eq!(
        sim.nodes[a].engine.unacked_len(),
        0,
        "everything acknowledged"
    );
    assert!(sim.store().session(&sid).unwrap().outbox.is_empty());
}
