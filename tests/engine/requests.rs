//! Every request settles: a message the server would drop unanswered (over its frame
//! limit) is refused at once, and an invite with no answer times out on its own.

use crate::common::sim::{Net, Sim};
use crate::helpers::{ended, errors, in_call, incoming_of, signals};
use holdfast::engine::client::{ClientError, ConnectionState, Event};
use holdfast::engine::server::ServerConfig;
use holdfast::protocol::*;
use serde_json::json;

/// The request-timeout error for `re`, if the page saw one, and when.
fn timed_out_at(sim: &Sim, c: usize, re: u64) -> Option<u64> {
    sim.find_event(
        c,
        |e| matches!(e, Event::Error { code: ErrorCode::Timeout, re: Some(r), .. } if *r == re),
    )
    .map(|(at, _)| at)
}

#[test]
fn a_message_over_the_announced_frame_limit_is_refused_at_once_and_the_session_goes_on() {
    let mut sim = Sim::with_config(
        ServerConfig {
            max_frame_bytes: 4_096,
            ..ServerConfig::default()
        },
        71,
    );
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = crate::helpers::establish(&mut sim, a, b, None);
    // 6 KB fits the client's default (16 KiB) but not what this server announced.
    let big = json!("x".repeat(6_000));
    let refused = sim.act(a, |e, now| e.send(&id, big, now));
    assert!(
        matches!(refused, Err(ClientError::FrameTooLarge { max: 4_096, bytes }) if bytes > 6_000),
        "{refused:?}"
    );
    // Nothing was queued: the next message is delivered and the sequence is intact.
    let small = json!("y".repeat(3_000));
    sim.act(a, |e, now| e.send(&id, small.clone(), now))
        .expect("a message under the limit is sent");
    sim.advance(500);
    assert_eq!(signals(&sim, b, &id), vec![small]);
    assert_eq!(sim.client(a).unacked_len(), 0);
    assert!(errors(&sim, a).is_empty(), "{:?}", errors(&sim, a));
    assert_eq!(sim.state(a), ConnectionState::Connected);
    // Invites are measured too (their metadata is the app's).
    let huge = Some(json!({ "notes": "z".repeat(5_000) }));
    let refused = sim.act(a, |e, now| e.call("nobody", None, huge, now));
    assert!(
        matches!(refused, Err(ClientError::FrameTooLarge { .. })),
        "{refused:?}"
    );
}

#[test]
fn an_invite_queued_while_offline_times_out_and_is_never_sent() {
    let mut sim = Sim::new(72);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let peer = sim.id(b);
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    sim.advance(100);
    let t0 = sim.now;
    let re = sim
        .act(a, |e, now| e.call(&peer, None, None, now))
        .expect("queued");
    sim.advance(16_000);
    let at = timed_out_at(&sim, a, re).expect("the invite timed out");
    assert!(at - t0 <= 15_000, "timed out after {} ms", at - t0);
    // Back online: the dropped invite never rings at Bob.
    sim.set_net(a, Net::Up);
    sim.act(a, |e, now| e.reconnect(now));
    sim.advance(3_000);
    assert_eq!(sim.state(a), ConnectionState::Connected);
    assert_eq!(incoming_of(&sim, b), None);
    assert_eq!(sim.client(a).calls().count(), 0);
}

#[test]
fn a_sent_invite_without_an_answer_times_out_and_its_late_call_is_cancelled() {
    let (mut sim, a, b, _) = in_call(73);
    let c = sim.online("carol");
    let peer = sim.id(c);
    // The invite leaves on a link that has silently died.
    sim.set_net(a, Net::Blackhole);
    let t0 = sim.now;
    let re = sim
        .act(a, |e, now| e.call(&peer, None, None, now))
        .expect("sent");
    sim.advance(15_500);
    let at = timed_out_at(&sim, a, re).expect("the invite timed out");
    assert!(at - t0 <= 15_000, "timed out after {} ms", at - t0);
    assert!(!crate::helpers::has(
        &sim,
        a,
        |e| matches!(e, Event::OutgoingCall { re: r, .. } if *r == re)
    ));
    // The network comes back and the session resumes: the server handles the replayed
    // invite, and the page takes back the call the app was told had failed.
    sim.set_net(a, Net::Up);
    sim.act(a, |e, now| e.reconnect(now));
    sim.advance(3_000);
    assert_eq!(sim.state(a), ConnectionState::Connected);
    assert!(!crate::helpers::has(
        &sim,
        a,
        |e| matches!(e, Event::OutgoingCall { re: r, .. } if *r == re)
    ));
    assert_eq!(
        sim.client(a).calls().filter(|k| k.peer.id == peer).count(),
        0
    );
    assert_eq!(
        incoming_of(&sim, c),
        None,
        "the late call still rings at Carol"
    );
    let late: Vec<_> = sim
        .events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::IncomingCall { call } => Some(call.id),
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 1, "the replayed invite reached Carol once");
    for id in late {
        assert_eq!(ended(&sim, c, &id), vec![EndReason::Cancelled]);
    }
    assert_eq!(sim.state(b), ConnectionState::Connected);
}

#[test]
fn an_answered_invite_does_not_time_out() {
    let (mut sim, a, _, _) = in_call(74);
    let c = sim.online("carol");
    let peer = sim.id(c);
    let re = sim
        .act(a, |e, now| e.call(&peer, None, None, now))
        .expect("sent");
    sim.advance(20_000);
    assert!(crate::helpers::has(
        &sim,
        a,
        |e| matches!(e, Event::OutgoingCall { re: r, .. } if *r == re)
    ));
    assert_eq!(timed_out_at(&sim, a, re), None);
}
