//! The engines on a simulated clock: one scenario per test, each asserting what a user
//! would notice (events, call states, end reasons, deadlines). Nothing sleeps.

mod common;

use common::sim::{Net, Sim, C};
use holdfast::engine::client::{
    CallPhase, ClientError, ConnectionState, Event, Io, RejoinRecord, RejoinWithdrawn, StorageOp,
    REJOIN_RECORD_VERSION,
};
use holdfast::engine::server::{CloseReason, Output, ServerConfig};
use holdfast::engine::store::Store;
use holdfast::protocol::*;
use serde_json::json;

// ------------------------------------------------------------------ helpers

/// `a` calls `b`, `b` accepts; both see the call active. Returns the call id.
fn establish(sim: &mut Sim, a: C, b: C, kind: Option<&str>) -> CallId {
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

fn wait_incoming(sim: &mut Sim, b: C) -> CallId {
    let ok = sim.run_until(1_000, |s| incoming_of(s, b).is_some());
    assert!(ok, "no incoming call at {b}");
    incoming_of(sim, b).unwrap()
}

/// A ringing incoming call in the page's call map.
fn incoming_of(sim: &Sim, c: C) -> Option<CallId> {
    sim.nodes[c]
        .engine
        .calls()
        .find(|c| c.phase == CallPhase::Incoming)
        .map(|c| c.id.clone())
}

fn is_active(sim: &Sim, c: C, id: &str) -> bool {
    sim.nodes[c]
        .engine
        .call_info(id)
        .is_some_and(|c| c.phase == CallPhase::Active)
}

fn ended(sim: &Sim, c: C, id: &str) -> Vec<EndReason> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::CallEnded { call, reason } if call == id => Some(reason),
            _ => None,
        })
        .collect()
}

fn ended_at(sim: &Sim, c: C, id: &str) -> Option<(u64, EndReason)> {
    sim.find_event(
        c,
        |e| matches!(e, Event::CallEnded { call, .. } if call == id),
    )
    .map(|(t, e)| match e {
        Event::CallEnded { reason, .. } => (t, reason),
        _ => unreachable!(),
    })
}

fn signals(sim: &Sim, c: C, id: &str) -> Vec<serde_json::Value> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Signal { call, payload, .. } if call == id => Some(payload),
            _ => None,
        })
        .collect()
}

fn errors(sim: &Sim, c: C) -> Vec<ErrorCode> {
    sim.events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Error { code, .. } => Some(code),
            _ => None,
        })
        .collect()
}

fn has(sim: &Sim, c: C, f: impl Fn(&Event) -> bool) -> bool {
    sim.events(c).iter().any(f)
}

fn send(sim: &mut Sim, c: C, id: &str, payload: serde_json::Value) {
    sim.act(c, |e, now| e.send(id, payload, now)).expect("send");
}

fn server_call(sim: &Sim, id: &str) -> Option<holdfast::engine::store::Call> {
    sim.server.store().call(id).cloned()
}

/// The session holding `user`'s side of a call on the server.
fn holder(sim: &Sim, id: &str, user: &str) -> Option<String> {
    server_call(sim, id)
        .and_then(|c| c.slot_of(user).cloned())
        .and_then(|s| s.session)
}

fn hello(token: &str, resume: Option<Resume>) -> String {
    encode(&ClientFrame::Hello(Hello {
        v: PROTOCOL_VERSION,
        token: token.into(),
        resume,
        presence: false,
        call_waiting: false,
    }))
}

fn msg(seq: u64, body: ClientMsg) -> String {
    encode(&ClientFrame::Msg { seq, ack: 0, body })
}

fn welcome_of(frames: &[ServerFrame]) -> Welcome {
    frames
        .iter()
        .find_map(|f| match f {
            ServerFrame::Welcome(w) => Some((**w).clone()),
            _ => None,
        })
        .expect("a welcome")
}

fn msg_errors(frames: &[ServerFrame]) -> Vec<(ErrorCode, Option<u64>)> {
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

fn conn_errors(frames: &[ServerFrame]) -> Vec<(ErrorCode, bool)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Error(e) => Some((e.code, e.fatal)),
            _ => None,
        })
        .collect()
}

fn opens(sim: &Sim, c: C) -> Vec<u64> {
    sim.nodes[c]
        .io_log
        .iter()
        .filter(|(_, io)| matches!(io, Io::Open(_)))
        .map(|(t, _)| *t)
        .collect()
}

fn interpreter_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.grace_by_kind.insert("interpreter".into(), 300_000);
    config
}

// ------------------------------------------------------------ basic call

#[test]
fn call_accept_signal_both_ways_and_hangup_ends_both() {
    let mut sim = Sim::new(1);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);

    let started = |s: &Sim, c: C| {
        s.events(c).into_iter().any(|e| {
            matches!(e, Event::CallStarted { call, rejoined: false }
                if call.id == id && call.phase == CallPhase::Active)
        })
    };
    assert!(started(&sim, a) && started(&sim, b));
    assert_eq!(sim.nodes[a].engine.call_info(&id).unwrap().peer.id, "bob");
    assert_eq!(sim.nodes[b].engine.call_info(&id).unwrap().peer.id, "alice");
    // Both pages stored a rejoin token for the call.
    assert_eq!(sim.stored(a).len(), 1);
    assert_eq!(sim.stored(b).len(), 1);

    send(&mut sim, a, &id, json!({"sdp": "offer"}));
    send(&mut sim, b, &id, json!({"sdp": "answer"}));
    sim.advance(100);
    assert_eq!(signals(&sim, b, &id), vec![json!({"sdp": "offer"})]);
    assert_eq!(signals(&sim, a, &id), vec![json!({"sdp": "answer"})]);

    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(100);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Hangup]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Hangup]);
    assert!(server_call(&sim, &id).is_none());
    assert_eq!(sim.server.store().call_between("alice", "bob"), None);
    assert!(sim.stored(a).is_empty() && sim.stored(b).is_empty());
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
}

// ----------------------------------------------------------------- resume

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
        .server
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
    assert_eq!(sim.server.session_of_conn(conn), Some(&sid));
    assert_eq!(holder(&sim, &id, "alice"), Some(sid.clone()));
    send(&mut sim, a, &id, json!("still here"));
    sim.advance(100);
    assert_eq!(signals(&sim, b, &id), vec![json!("still here")]);
    assert_eq!(sim.state(a), ConnectionState::Connected);

    // The current secret is what works (taking the session over).
    let last_seq = sim.server.store().session(&sid).unwrap().outbox.last_seq();
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

// ---------------------------------------------------------- grace windows

#[test]
fn grace_window_announces_deadline_and_reconnection() {
    let mut sim = Sim::new(7);
    sim.default_delay_ms = 0;
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.advance(1_000);
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    let (_, e) = sim
        .find_event(b, |e| matches!(e, Event::ParticipantDisconnected { .. }))
        .expect("peer is told at once");
    match e {
        Event::ParticipantDisconnected {
            call,
            user,
            deadline,
            remaining_ms,
        } => {
            assert_eq!(call, id);
            assert_eq!(user, "alice");
            assert_eq!(deadline, t_drop + 60_000);
            assert_eq!(remaining_ms, 60_000);
        }
        _ => unreachable!(),
    }
    let c = sim.nodes[b].engine.call_info(&id).unwrap();
    assert_eq!(c.peer_link, LinkState::Reconnecting);
    assert_eq!(c.peer_deadline, Some(t_drop + 60_000));
    sim.advance(42_000);
    assert!(is_active(&sim, b, &id));
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(6_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(10);
    assert!(has(&sim, b, |e| matches!(e,
        Event::ParticipantReconnected { call, user } if call == &id && user == "alice")));
    let c = sim.nodes[b].engine.call_info(&id).unwrap();
    assert_eq!(c.peer_link, LinkState::Connected);
    assert_eq!(c.peer_deadline, None);
    sim.advance(120_000);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
}

#[test]
fn grace_window_passing_ends_with_reconnect_failed_at_both_ends() {
    let mut sim = Sim::new(8);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.run_to(t_drop + 59_990);
    assert!(is_active(&sim, b, &id));
    assert!(server_call(&sim, &id).is_some());
    sim.run_to(t_drop + 60_100);
    let (t_end, reason) = ended_at(&sim, b, &id).expect("peer sees the end");
    assert_eq!(reason, EndReason::ReconnectFailed);
    assert!(t_end >= t_drop + 60_000 && t_end <= t_drop + 60_100);
    assert!(server_call(&sim, &id).is_none());
    // Alice, still trying, learns why when she gets through.
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ReconnectFailed]);
    assert!(has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
    assert!(sim.stored(a).is_empty());
}

#[test]
fn per_kind_grace_window_of_five_minutes_on_a_simulated_clock() {
    let wall = std::time::Instant::now();
    let mut sim = Sim::with_config(interpreter_config(), 9);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, Some("interpreter"));
    assert_eq!(
        sim.nodes[b].engine.call_info(&id).unwrap().grace_ms,
        300_000
    );
    sim.set_net(a, Net::Blackhole);
    let t0 = sim.now;
    assert!(sim.run_until(6_000, |s| has(s, b, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    ))));
    let (t_seen, e) = sim
        .find_event(b, |e| matches!(e, Event::ParticipantDisconnected { .. }))
        .unwrap();
    let Event::ParticipantDisconnected {
        deadline,
        remaining_ms,
        ..
    } = e
    else {
        unreachable!()
    };
    // The 5-minute window, as this page's clock sees it: exact up to the link delay
    // (the clock offset is estimated within half a round trip).
    assert!(
        (299_900..=300_000).contains(&remaining_ms),
        "remaining {remaining_ms}"
    );
    // The server noticed the silence within the heartbeat timeout.
    assert!(t_seen - t0 <= 5_000);
    sim.run_to(deadline - 1_000); // 4 min 59 s
    assert!(is_active(&sim, b, &id));
    assert!(ended(&sim, b, &id).is_empty());
    sim.run_to(deadline + 100);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
    let (t_end, _) = ended_at(&sim, b, &id).unwrap();
    assert!(t_end >= deadline && t_end < deadline + 100);
    assert!(
        wall.elapsed().as_millis() < 3_000,
        "a 5-minute window must take milliseconds, took {:?}",
        wall.elapsed()
    );
}

#[test]
fn long_window_call_survives_session_expiry_by_automatic_rejoin() {
    // Away for 4 min 50 s: the session (60 s resume window) is gone, the interpreter
    // call (5 min) is not. The page gets back into it by itself with its token.
    let mut sim = Sim::with_config(interpreter_config(), 10);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, Some("interpreter"));
    let token_before = sim.stored(a)[0].token.clone();
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.run_to(t_drop + 290_000);
    assert_eq!(
        sim.state(a),
        ConnectionState::Reconnecting,
        "never gives up"
    );
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(6_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(100);
    assert!(has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert!(has(&sim, a, |e| matches!(e,
        Event::CallStarted { call, rejoined: true } if call.id == id)));
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    assert_ne!(sim.stored(a)[0].token, token_before);
    assert!(has(&sim, b, |e| matches!(
        e,
        Event::ParticipantReconnected { .. }
    )));
    sim.advance(400_000);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    send(&mut sim, b, &id, json!("welcome back"));
    sim.advance(100);
    assert_eq!(signals(&sim, a, &id), vec![json!("welcome back")]);
}

// ---------------------------------------------------------------- rejoin

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

    // The spent token, replayed from another page of alice, changes nothing.
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
    assert_eq!(errors(&sim, a2), vec![ErrorCode::RejoinDenied]);
    assert!(has(&sim, a2, |e| matches!(
        e,
        Event::RejoinWithdrawn {
            why: RejoinWithdrawn::Denied,
            ..
        }
    )));
    assert!(sim.stored(a2).is_empty());
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
    // A forged token for her own call.
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
        vec![(ErrorCode::RejoinDenied, Some(2))]
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

    // The reloaded page learns why the call is gone instead of offering it.
    sim.take_events(a);
    sim.connect(a);
    sim.advance(100);
    assert!(has(&sim, a, |e| matches!(e,
        Event::CallEnded { call, reason: EndReason::Hangup } if call == &id)));
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::RejoinWithdrawn {
            why: RejoinWithdrawn::CallEnded,
            ..
        }
    )));
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
    // A page reloaded without a network: only its own countdown can end the offer.
    sim.set_net(a, Net::Refuse);
    sim.reload(a, false);
    sim.act(a, |e, now| e.connect(now));
    let deadline = offers(&sim, a)[0].deadline;
    sim.run_to(deadline + 1_100);
    assert!(has(
        &sim,
        a,
        |e| matches!(e, Event::RejoinExpired { call } if call == &id)
    ));
    assert!(sim.stored(a).is_empty());
    assert!(sim.nodes[a].engine.pending_rejoins(sim.now).is_empty());
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
    let last = countdowns(&sim, a, &id).last().copied().unwrap();
    assert!(last.1 <= 1_000);
    let n = countdowns(&sim, a, &id).len();
    sim.advance(5_000);
    assert_eq!(countdowns(&sim, a, &id).len(), n);

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
        Event::CallEnded { call, reason } => call == id && reason == EndReason::ReconnectFailed,
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
    // Live elsewhere: not offered (withdrawn once the server said so).
    assert!(sim.nodes[a2].engine.pending_rejoins(sim.now).is_empty());
    assert!(has(&sim, a2, |e| matches!(
        e,
        Event::RejoinWithdrawn {
            why: RejoinWithdrawn::HeldElsewhere,
            ..
        }
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

// ----------------------------------------------------------------- dedup

#[test]
fn second_invite_between_the_same_people_returns_the_existing_call() {
    let mut sim = Sim::new(18);
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    // The page itself refuses a duplicate.
    assert_eq!(
        sim.act(a, |e, now| e.call("bob", None, None, now)),
        Err(ClientError::AlreadyInCall { call: id.clone() })
    );
    // A second page of alice that does not know: the server answers with the call.
    let a2 = sim.online("alice");
    let re = sim
        .act(a2, |e, now| e.call("bob", None, None, now))
        .unwrap();
    sim.advance(100);
    assert!(has(&sim, a2, |e| matches!(e,
        Event::OutgoingCall { re: r, call, existing: true } if *r == re && call.id == id)));
    // Still one ringing call, offered once to bob.
    let incoming = sim
        .events(b)
        .iter()
        .filter(|e| matches!(e, Event::IncomingCall { .. }))
        .count();
    assert_eq!(incoming, 1);
    assert_eq!(sim.server.store().call_between("alice", "bob"), Some(&id));
    assert_eq!(sim.server.store().call_ids().len(), 1);
    sim.act(b, |e, now| e.accept(&id, now)).unwrap();
    sim.advance(100);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    // Bob calling alice back while in the call is the same call again.
    assert_eq!(
        sim.act(b, |e, now| e.call("alice", None, None, now)),
        Err(ClientError::AlreadyInCall { call: id.clone() })
    );
    let b2 = sim.online("bob");
    sim.act(b2, |e, now| e.call("alice", None, None, now))
        .unwrap();
    sim.advance(100);
    assert!(has(&sim, b2, |e| matches!(e,
        Event::OutgoingCall { call, existing: true, .. } if call.id == id)));
    assert_eq!(sim.server.store().call_ids().len(), 1);
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
}

#[test]
fn glare_gives_exactly_one_active_call() {
    let mut sim = Sim::new(19);
    sim.default_delay_ms = 50;
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    sim.act(b, |e, now| e.call("alice", None, None, now))
        .unwrap();
    sim.advance(1_000);
    assert_eq!(sim.server.store().call_ids().len(), 1);
    let id = sim
        .server
        .store()
        .call_between("alice", "bob")
        .cloned()
        .unwrap();
    assert_eq!(server_call(&sim, &id).unwrap().state, CallState::Active);
    for c in [a, b] {
        let calls: Vec<_> = sim.nodes[c].engine.calls().cloned().collect();
        assert_eq!(calls.len(), 1, "{c}: {calls:?}");
        assert_eq!(calls[0].id, id);
        assert_eq!(calls[0].phase, CallPhase::Active);
        assert!(has(
            &sim,
            c,
            |e| matches!(e, Event::CallStarted { call, .. } if call.id == id)
        ));
        assert!(ended(&sim, c, &id).is_empty());
    }
    send(&mut sim, a, &id, json!("glare ok"));
    sim.advance(200);
    assert_eq!(signals(&sim, b, &id), vec![json!("glare ok")]);
}

#[test]
fn callee_in_another_call_answers_busy() {
    let mut sim = Sim::new(20);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let c = sim.online("carol");
    let ab = establish(&mut sim, a, b, None);
    let re = sim.act(c, |e, now| e.call("bob", None, None, now)).unwrap();
    sim.advance(100);
    let id = sim
        .events(c)
        .into_iter()
        .find_map(|e| match e {
            Event::OutgoingCall { re: r, call, .. } if r == re => Some(call.id),
            _ => None,
        })
        .expect("the invite is answered");
    assert_eq!(ended(&sim, c, &id), vec![EndReason::Busy]);
    assert_eq!(sim.nodes[c].engine.calls().count(), 0);
    assert!(!has(
        &sim,
        b,
        |e| matches!(e, Event::IncomingCall { call } if call.id == id)
    ));
    assert!(is_active(&sim, a, &ab) && is_active(&sim, b, &ab));
    assert_eq!(sim.server.store().call_between("carol", "bob"), None);
    // Once bob is free, carol gets through.
    sim.act(a, |e, now| e.hangup(&ab, now)).unwrap();
    sim.advance(100);
    let call = establish(&mut sim, c, b, None);
    assert!(is_active(&sim, c, &call));
}

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

// ---------------------------------------------------------------- backoff

#[test]
fn backoff_is_immediate_then_jittered_exponential_up_to_the_cap() {
    let mut sim = Sim::new(24);
    let a = sim.online("alice");
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.advance(60_000);
    let times: Vec<u64> = opens(&sim, a)
        .into_iter()
        .filter(|t| *t >= t_drop)
        .collect();
    assert_eq!(times[0], t_drop, "first retry is immediate");
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 12, "{gaps:?}");
    for (k, gap) in gaps.iter().enumerate() {
        let cap = (250u64 << k.min(20)).min(5_000);
        assert!(
            *gap >= cap / 2 && *gap <= cap,
            "retry {k} after {gap} ms, expected {}..={cap}: {gaps:?}",
            cap / 2
        );
    }
    let capped: Vec<u64> = gaps.iter().skip(6).copied().collect();
    assert!(
        capped.iter().any(|g| *g != capped[0]),
        "jittered: {capped:?}"
    );
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Disconnected {
            next_attempt_at: Some(_)
        }
    )));
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    // Another client's jitter differs (a storm spreads out).
    let mut sim2 = Sim::new(25);
    let x = sim2.online("xavier");
    sim2.set_net(x, Net::Refuse);
    let t2 = sim2.now;
    sim2.drop_link(x);
    sim2.advance(60_000);
    let times2: Vec<u64> = opens(&sim2, x)
        .into_iter()
        .filter(|t| *t >= t2)
        .map(|t| t - t2)
        .collect();
    let rel: Vec<u64> = times.iter().map(|t| t - t_drop).collect();
    assert_ne!(rel, times2);
}

#[test]
fn no_attempts_while_offline_and_immediate_ones_on_online_and_wake() {
    let mut sim = Sim::new(26);
    let a = sim.online("alice");
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    sim.advance(20_000);
    sim.act(a, |e, now| e.handle_online(false, now));
    assert_eq!(sim.state(a), ConnectionState::Offline);
    assert!(has(&sim, a, |e| matches!(e, Event::Offline)));
    let before = opens(&sim, a).len();
    let t_off = sim.now;
    sim.advance(120_000);
    assert_eq!(opens(&sim, a).len(), before, "no attempt while offline");
    assert_eq!(sim.state(a), ConnectionState::Offline);
    assert_eq!(sim.nodes[a].engine.next_attempt_at(), None);
    assert!(sim.now >= t_off + 120_000);

    sim.act(a, |e, now| e.handle_online(true, now));
    assert_eq!(*opens(&sim, a).last().unwrap(), sim.now, "online: at once");
    // Still refused; wait into a long backoff, then wake the page.
    sim.advance(7_000);
    let n = opens(&sim, a).len();
    let next = sim.nodes[a].engine.next_attempt_at().unwrap();
    assert!(next > sim.now);
    sim.act(a, |e, now| e.handle_wake(now));
    assert_eq!(opens(&sim, a).len(), n + 1);
    assert_eq!(*opens(&sim, a).last().unwrap(), sim.now, "wake: at once");
    // Back online for real: connected (resumed) right away.
    sim.set_net(a, Net::Up);
    let t_wake = sim.now;
    sim.act(a, |e, now| e.handle_wake(now));
    sim.advance(50);
    assert_eq!(*opens(&sim, a).last().unwrap(), t_wake);
    assert_eq!(sim.state(a), ConnectionState::Connected);
    assert!(has(&sim, a, |e| matches!(e, Event::Resumed { .. })));
}

#[test]
fn offline_from_the_start_makes_no_attempt() {
    let mut sim = Sim::new(27);
    let a = sim.add("alice");
    sim.act(a, |e, now| e.handle_online(false, now));
    sim.act(a, |e, now| e.connect(now));
    sim.advance(30_000);
    assert!(opens(&sim, a).is_empty());
    assert_eq!(sim.state(a), ConnectionState::Offline);
    sim.act(a, |e, now| e.handle_online(true, now));
    sim.advance(100);
    assert_eq!(sim.state(a), ConnectionState::Connected);
}

#[test]
fn gives_up_without_a_call_window_but_not_while_one_is_open() {
    // No call: gives up after give_up_after_ms.
    let mut sim = Sim::with_config(interpreter_config(), 28);
    let idle = sim.online("ivan");
    sim.set_net(idle, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(idle);
    assert!(sim.run_until(200_000, |s| s.state(idle) == ConnectionState::GaveUp));
    let (t_gave_up, _) = sim
        .find_event(idle, |e| matches!(e, Event::GaveUp))
        .unwrap();
    assert!(t_gave_up >= t_drop + 120_000 && t_gave_up <= t_drop + 126_000);
    let n = opens(&sim, idle).len();
    sim.advance(60_000);
    assert_eq!(opens(&sim, idle).len(), n, "no attempts after giving up");
    // reconnect() by hand starts again.
    sim.set_net(idle, Net::Up);
    sim.act(idle, |e, now| e.reconnect(now));
    sim.advance(100);
    assert_eq!(sim.state(idle), ConnectionState::Connected);

    // In a 5-minute call: keeps trying for the whole window.
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, Some("interpreter"));
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.run_to(t_drop + 295_000);
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    let late = opens(&sim, a)
        .into_iter()
        .filter(|t| *t > t_drop + 290_000)
        .count();
    assert!(late >= 1, "still trying near the end of the window");
    assert!(sim.run_until(20_000, |s| s.state(a) == ConnectionState::GaveUp));
    let (t_gave_up, _) = sim.find_event(a, |e| matches!(e, Event::GaveUp)).unwrap();
    assert!(t_gave_up >= t_drop + 300_000);
    // The window is over: no call is left hanging in the page.
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ReconnectFailed]);
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
}

// ------------------------------------------------------- replay overflow

#[test]
fn replay_buffer_overflow_loses_the_session_but_the_call_survives_by_rejoin() {
    let config = ServerConfig {
        replay_buffer: 8,
        ..ServerConfig::default()
    };
    let mut sim = Sim::with_config(config, 29);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    let old_session = sim.nodes[a].engine.session_id().unwrap().to_owned();
    let token_before = sim.stored(a)[0].token.clone();
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    for i in 0..20 {
        send(&mut sim, b, &id, json!(i));
    }
    sim.advance(2_000);
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(200);
    let w = sim.welcomes(a).pop().unwrap();
    assert!(!w.resumed, "an overflowed session cannot be resumed");
    assert!(w.snapshot.is_some());
    assert_ne!(w.session, old_session);
    assert!(has(&sim, a, |e| matches!(e, Event::SessionLost { .. })));
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: false }
    )));
    // The page took its call back with its stored token.
    assert!(has(&sim, a, |e| matches!(e,
        Event::CallStarted { call, rejoined: true } if call.id == id)));
    assert!(ended(&sim, a, &id).is_empty());
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    assert_ne!(sim.stored(a)[0].token, token_before);
    assert_eq!(
        holder(&sim, &id, "alice").as_deref(),
        sim.nodes[a].engine.session_id()
    );
    assert!(has(&sim, b, |e| matches!(
        e,
        Event::ParticipantReconnected { .. }
    )));
    send(&mut sim, b, &id, json!("after"));
    send(&mut sim, a, &id, json!("back"));
    sim.advance(100);
    assert_eq!(signals(&sim, a, &id).last(), Some(&json!("after")));
    assert_eq!(signals(&sim, b, &id), vec![json!("back")]);
}

// -------------------------------------------------------------- bad input

/// Alice and bob in a call; returns (sim, a, b, call).
fn in_call(seed: u64) -> (Sim, C, C, CallId) {
    let mut sim = Sim::new(seed);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    send(&mut sim, a, &id, json!("before"));
    sim.advance(100);
    (sim, a, b, id)
}

/// Nothing changed: same socket and session, call active, sequences in step, traffic
/// flows both ways.
fn assert_intact(sim: &mut Sim, a: C, b: C, id: &str, conn: Option<u64>) {
    let sid = sim.nodes[a].engine.session_id().unwrap().to_owned();
    if let Some(conn) = conn {
        assert_eq!(sim.conn_of(a), Some(conn));
        assert_eq!(sim.server.session_of_conn(conn), Some(&sid));
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
    assert!(sim.server.store().session(&sid).unwrap().outbox.is_empty());
}

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
    let now = sim.now;
    sim.server.handle_bad_frame(conn, BadFrame::Binary, now);
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
    let in_seq = sim.server.store().session(&sid).unwrap().inbox.last_seq();
    sim.inject(a, &msg(in_seq + 5, ClientMsg::Hangup { call: id.clone() }));
    assert!(sim.run_until(1_000, |s| errors(s, a).contains(&ErrorCode::BadSequence)));
    // The skipped-ahead message was not handled.
    assert_eq!(
        sim.server.store().session(&sid).unwrap().inbox.last_seq(),
        in_seq
    );
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
    let burst = sim.server.config().burst as u64;
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
        sim.server.store().session(&sid).unwrap().inbox.last_seq(),
        closed_at
    );
    // A refill over time lets the same identity talk again; the call was never touched.
    let conn = sim.conn_of(a);
    assert_intact(&mut sim, a, b, &id, conn);
}

// ------------------------------------------------------ logout, shutdown

#[test]
fn logout_hangs_up_removes_records_and_never_reconnects() {
    let (mut sim, a, b, id) = in_call(36);
    assert_eq!(sim.stored(a).len(), 1);
    let t = sim.now;
    sim.act(a, |e, now| e.logout(now));
    sim.advance(100);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Hangup]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Hangup]);
    assert!(has(&sim, a, |e| matches!(e, Event::LoggedOut)));
    assert_eq!(sim.state(a), ConnectionState::LoggedOut);
    assert!(sim.stored(a).is_empty());
    assert!(sim.server.store().sessions_of("alice").is_empty());
    assert!(server_call(&sim, &id).is_none());
    assert!(sim.server_log.iter().any(|(_, o)| matches!(
        o,
        Output::Close {
            reason: CloseReason::Bye,
            ..
        }
    )));
    sim.advance(300_000);
    assert!(opens(&sim, a).iter().all(|o| *o < t), "no reconnect");
    assert_eq!(
        sim.act(a, |e, now| e.call("bob", None, None, now)),
        Err(ClientError::LoggedOut)
    );
    assert!(!has(&sim, b, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    )));
}

#[test]
fn shutdown_ends_calls_with_server_shutdown_at_both_ends() {
    let (mut sim, a, b, id) = in_call(37);
    let c = sim.online("carol");
    let now = sim.now;
    sim.server.shutdown(now);
    sim.advance(100);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ServerShutdown]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ServerShutdown]);
    for x in [a, b, c] {
        assert!(errors(&sim, x).contains(&ErrorCode::ServerShutdown), "{x}");
        assert_ne!(sim.state(x), ConnectionState::Connected);
        assert_eq!(sim.nodes[x].engine.calls().count(), 0);
    }
    assert!(sim.stored(a).is_empty() && sim.stored(b).is_empty());
    assert_eq!(sim.server.connection_count(), 0);
    sim.advance(10_000);
    assert!(sim.server.store().call_ids().is_empty());
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
    assert_eq!(sim.server.metrics().resumes, 1);
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

// ------------------------------------------- races found by the property test

#[test]
fn cancel_crossing_the_answer_ends_cancelled_at_both_ends() {
    let mut sim = Sim::new(39);
    sim.default_delay_ms = 100;
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    sim.act(b, |e, now| e.accept(&id, now)).unwrap();
    // Alice gives up while bob's answer is on its way to her.
    sim.advance(50);
    sim.act(a, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(1_000);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Cancelled]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Cancelled]);
    assert!(
        !has(&sim, a, |e| matches!(e, Event::CallStarted { .. })),
        "a call this page cancelled does not come back"
    );
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
    assert_eq!(sim.nodes[b].engine.calls().count(), 0);
    assert!(server_call(&sim, &id).is_none());
    assert!(errors(&sim, a).is_empty() && errors(&sim, b).is_empty());
}

#[test]
fn decline_crossing_its_own_accept_ends_declined_at_both_ends() {
    let mut sim = Sim::new(40);
    sim.default_delay_ms = 100;
    let a = sim.online("alice");
    let b = sim.online("bob");
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    let id = wait_incoming(&mut sim, b);
    sim.act(b, |e, now| e.accept(&id, now)).unwrap();
    sim.advance(10);
    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    sim.advance(1_000);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Declined]);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::Declined]);
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
    assert_eq!(sim.nodes[b].engine.calls().count(), 0);
    assert!(
        server_call(&sim, &id).is_none(),
        "no call left active with nobody"
    );
}

#[test]
fn a_refusal_replayed_after_resume_still_names_its_request() {
    let mut sim = Sim::new(41);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.set_delay(a, 100, 150);
    sim.act(b, |e, now| e.hangup(&id, now)).unwrap();
    // Alice's signal crosses bob's hang-up; the server refuses it, and the socket dies
    // with the refusal still on its way.
    let re = sim
        .act(a, |e, now| e.send(&id, json!("late"), now))
        .unwrap();
    sim.advance(110);
    sim.drop_link(a);
    assert!(sim.run_until(5_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(1_000);
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Resumed { recovered: true }
    )));
    let refusals: Vec<Option<u64>> = sim
        .events(a)
        .into_iter()
        .filter_map(|e| match e {
            Event::Error {
                code: ErrorCode::UnknownCall,
                re,
                ..
            } => Some(re),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, vec![Some(re)]);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::Hangup]);
    assert!(signals(&sim, b, &id).is_empty());
}

#[test]
fn sessions_per_identity_are_limited_and_a_stale_one_makes_room() {
    let mut sim = Sim::with_config(
        ServerConfig {
            max_sessions_per_user: 2,
            ..ServerConfig::default()
        },
        41,
    );
    let tab1 = sim.online("alice");
    let tab2 = sim.online("alice");
    let s1 = sim.nodes[tab1].engine.session_id().unwrap().to_owned();
    let s2 = sim.nodes[tab2].engine.session_id().unwrap().to_owned();
    // A third live session is refused, with its code, and the two others are untouched.
    let raw = sim.open_raw();
    sim.raw_send(raw, &hello("alice", None));
    assert_eq!(
        conn_errors(&sim.raw_take(raw)),
        vec![(ErrorCode::TooManySessions, true)]
    );
    assert!(sim.raw_is_closed(raw));
    assert_eq!(
        sim.server.store().sessions_of("alice"),
        &[s1.clone(), s2.clone()]
    );
    assert_eq!(sim.state(tab1), ConnectionState::Connected);
    assert_eq!(sim.state(tab2), ConnectionState::Connected);
    // Another identity is not affected by Alice's limit.
    sim.online("bob");

    // A page that died (its session waits out its resume window) does not lock the
    // user out: the oldest detached session makes room for the new one.
    sim.set_net(tab1, Net::Blackhole);
    sim.advance(6_000);
    assert!(sim.server.store().session(&s1).unwrap().conn.is_none());
    let tab3 = sim.online("alice");
    let s3 = sim.nodes[tab3].engine.session_id().unwrap().to_owned();
    assert_eq!(sim.server.store().sessions_of("alice"), &[s2, s3]);
    assert!(sim.server.store().session(&s1).is_none());
}
