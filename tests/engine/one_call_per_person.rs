//! A page never holds two calls with one person, whatever the server says. Both cases
//! were found by the `client_engine` fuzzer:
//! - a welcome snapshot listing two calls from one person still ringing for us put both
//!   in the active-call map. The `incoming-call` path answers a second call `busy`
//!   unless the app allows call waiting; the snapshot path now does the same, and never
//!   keeps two calls with one person even with call waiting;
//! - a `call-started`, or the answer to an invite, for one call while another call with
//!   the same person rang here kept both. The server gives a page a call with someone
//!   only when no other call with them is live, so the other one is over on the
//!   server: it ends here `server-lost`.

use holdfast::engine::client::{ClientConfig, ClientEngine, Event, Io};
use holdfast::engine::server::ServerConfig;
use holdfast::protocol::*;

fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        name: id.into(),
    }
}

fn ringing_for_me(id: &str, from: &str) -> CallInfo {
    CallInfo {
        id: id.into(),
        kind: None,
        state: CallState::Ringing,
        caller: ParticipantInfo {
            user: peer(from),
            link: LinkState::Connected,
            deadline: None,
        },
        callee: ParticipantInfo {
            user: peer("ann"),
            link: LinkState::Pending,
            deadline: None,
        },
        grace_ms: 60_000,
        ring_deadline: None,
        metadata: None,
        held_here: true,
    }
}

/// A page welcomed with a snapshot of `calls`; returns the engine and what it sent.
fn welcomed(call_waiting: bool, calls: Vec<CallInfo>) -> (ClientEngine, Vec<ClientFrame>) {
    let mut config = ClientConfig::new("ann");
    config.call_waiting = call_waiting;
    let mut e = ClientEngine::new(config);
    e.connect(1_000);
    let Some(Io::Open(link)) = e.poll_io() else {
        panic!("no socket asked for")
    };
    e.handle_open(link, 1_010);
    let server = ServerConfig::default();
    let welcome = Welcome {
        session: "s1".into(),
        secret: "secret".into(),
        resumed: false,
        last_seq: 0,
        user: peer("ann"),
        timers: server.timers(),
        limits: server.limits(),
        now: 1_020,
        snapshot: Some(Snapshot {
            calls,
            presence: Vec::new(),
            ended: Vec::new(),
        }),
    };
    e.handle_frame(link, ServerFrame::Welcome(Box::new(welcome)), 1_020);
    e.handle_timeout(1_030);
    let sent = std::iter::from_fn(|| e.poll_transmit()).collect();
    (e, sent)
}

fn declined_busy(sent: &[ClientFrame]) -> Vec<String> {
    sent.iter()
        .filter_map(|f| match f {
            ClientFrame::Msg {
                body: ClientMsg::Decline { call, busy: true },
                ..
            } => Some(call.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_snapshot_with_two_ringing_calls_from_one_person_offers_one_and_answers_busy() {
    for call_waiting in [false, true] {
        let (e, sent) = welcomed(
            call_waiting,
            vec![ringing_for_me("c1", "cat"), ringing_for_me("c2", "cat")],
        );
        let calls: Vec<&str> = e.calls().map(|c| c.id.as_str()).collect();
        assert_eq!(calls, ["c1"], "call waiting {call_waiting}");
        assert_eq!(declined_busy(&sent), ["c2"], "call waiting {call_waiting}");
    }
}

#[test]
fn without_call_waiting_a_second_ringing_call_in_the_snapshot_is_busy() {
    let (e, sent) = welcomed(
        false,
        vec![ringing_for_me("c1", "ben"), ringing_for_me("c2", "cat")],
    );
    assert_eq!(e.calls().count(), 1);
    assert_eq!(declined_busy(&sent), ["c2"]);
    // With call waiting both ring.
    let (e, sent) = welcomed(
        true,
        vec![ringing_for_me("c1", "ben"), ringing_for_me("c2", "cat")],
    );
    assert_eq!(e.calls().count(), 2);
    assert!(declined_busy(&sent).is_empty());
}

#[test]
fn a_call_started_with_someone_ends_the_other_call_with_them_here() {
    let (mut e, _) = welcomed(false, vec![ringing_for_me("c1", "cat")]);
    while e.poll_event().is_some() {}
    let link = e.current_link().expect("welcomed");
    let mut started = ringing_for_me("c2", "cat");
    started.state = CallState::Active;
    started.callee.link = LinkState::Connected;
    let body = ServerMsg::CallStarted {
        call: Box::new(started),
        rejoin_token: "token".into(),
        rejoined: false,
    };
    e.handle_frame(
        link,
        ServerFrame::Msg {
            seq: 1,
            ack: 0,
            body,
        },
        1_040,
    );
    let events = only_c2_is_left_and_c1_ended_server_lost(&mut e);
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, Event::CallStarted { call, .. } if call.id == "c2")),
        "{events:?}"
    );
}

#[test]
fn an_invite_answered_with_another_call_than_the_one_ringing_ends_that_one_here() {
    let (mut e, _) = welcomed(false, vec![]);
    let re = e
        .call("cat", None, None, 1_040)
        .expect("no call with cat yet");
    let link = e.current_link().expect("welcomed");
    let incoming = ServerMsg::IncomingCall {
        call: Box::new(ringing_for_me("c1", "cat")),
    };
    e.handle_frame(
        link,
        ServerFrame::Msg {
            seq: 1,
            ack: 0,
            body: incoming,
        },
        1_050,
    );
    assert_eq!(e.calls().count(), 1);
    while e.poll_event().is_some() {}
    let mut mine = ringing_for_me("c2", "cat");
    std::mem::swap(&mut mine.caller, &mut mine.callee);
    mine.caller.link = LinkState::Connected;
    mine.callee.link = LinkState::Pending;
    let answer = ServerMsg::CallCreated {
        re,
        call: Box::new(mine),
        existing: false,
    };
    e.handle_frame(
        link,
        ServerFrame::Msg {
            seq: 2,
            ack: re,
            body: answer,
        },
        1_060,
    );
    only_c2_is_left_and_c1_ended_server_lost(&mut e);
}

/// The page holds `c2` alone and told the app that `c1` ended `server-lost`; returns
/// the events.
fn only_c2_is_left_and_c1_ended_server_lost(e: &mut ClientEngine) -> Vec<Event> {
    let calls: Vec<&str> = e.calls().map(|c| c.id.as_str()).collect();
    assert_eq!(calls, ["c2"]);
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(
        events.iter().any(|ev| matches!(
            ev,
            Event::CallEnded { call, reason: EndReason::ServerLost, .. } if call == "c1"
        )),
        "{events:?}"
    );
    events
}
