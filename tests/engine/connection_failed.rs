//! Connection failures say why (issue 15 item 2): every attempt that ends before the
//! server's welcome is reported once as `connection-failed`, within a second, with a
//! reason (unreachable, not-found, auth-failed, version, timeout), whether the client
//! retries and when; the snapshot keeps it until the next welcome.

use crate::common::sim::{Net, Sim, C};
use crate::helpers::opens;
use holdfast::engine::client::{
    ClientConfig, ConnectionFailure, ConnectionState, Event, FailureReason, Io, ProbeResult,
};
use holdfast::protocol::*;

/// Every `connection-failed` of a page, with when it was emitted.
fn failures(sim: &Sim, c: C) -> Vec<(u64, ConnectionFailure)> {
    sim.nodes[c]
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::ConnectionFailed(f) => Some((*t, f.clone())),
            _ => None,
        })
        .collect()
}

fn probes(sim: &Sim, c: C) -> usize {
    sim.nodes[c]
        .io_log
        .iter()
        .filter(|(_, io)| matches!(io, Io::Probe(_)))
        .count()
}

/// A page whose first attempts go to `net`.
fn page_on(sim: &mut Sim, token: &str, net: Net) -> C {
    let c = sim.add(token);
    sim.set_net(c, net);
    sim.act(c, |e, now| e.connect(now));
    c
}

#[test]
fn a_server_that_is_down_is_reported_unreachable_with_the_next_attempt() {
    let mut sim = Sim::new(1);
    let a = page_on(&mut sim, "alice", Net::Refuse);
    sim.advance(3_000);
    let opened = opens(&sim, a);
    let failed = failures(&sim, a);
    assert!(failed.len() >= 3, "{failed:?}");
    // One report per attempt, each within a second of its attempt failing.
    assert_eq!(failed.len(), opened.len().min(failed.len()));
    for ((t, f), open) in failed.iter().zip(&opened) {
        assert_eq!(f.reason, FailureReason::Unreachable, "{f:?}");
        assert_eq!(f.code, None);
        assert_eq!(f.at, *open, "the attempt failed as it opened");
        assert!(
            *t - f.at <= 1_000,
            "reported {} ms after the failure",
            t - f.at
        );
        assert!(f.will_retry);
        let next = f.next_attempt_at.expect("a retry is scheduled");
        assert!(next > f.at && next <= f.at + 5_000, "{f:?}");
    }
    assert_eq!(failed[0].1.attempt, 1);
    assert_eq!(failed[1].1.attempt, 2);
    // The next attempt went when the report said it would.
    assert_eq!(Some(opened[1]), failed[0].1.next_attempt_at);
    assert_eq!(sim.state(a), ConnectionState::Connecting);
    assert_eq!(
        sim.client(a).last_failure(),
        Some(&failed.last().unwrap().1)
    );

    // The server comes back: connected, and the failure is cleared.
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(6_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(sim.client(a).last_failure(), None);
}

#[test]
fn a_url_without_holdfast_is_not_found_and_retries_continue() {
    let mut sim = Sim::new(2);
    let a = page_on(&mut sim, "alice", Net::NotFound);
    sim.advance(1_500);
    let failed = failures(&sim, a);
    assert!(failed.len() >= 2, "{failed:?}");
    for (t, f) in &failed {
        assert_eq!(f.reason, FailureReason::NotFound, "{f:?}");
        assert!(f.message.contains("404"), "{}", f.message);
        assert!(*t - f.at <= 1_000);
        assert!(f.will_retry && f.next_attempt_at.is_some());
    }
    assert_eq!(probes(&sim, a), failed.len());
    assert_eq!(sim.state(a), ConnectionState::Connecting);
}

#[test]
fn a_probe_that_never_answers_is_reported_unreachable_after_the_probe_timeout() {
    let mut sim = Sim::new(3);
    let a = sim.add("alice");
    sim.set_net(a, Net::Refuse);
    sim.nodes[a].probe_answer = Some((0, None));
    let t0 = sim.now;
    sim.act(a, |e, now| e.connect(now));
    assert_eq!(failures(&sim, a), []);
    // The first retry (about 250 ms later) fails too; the first probe still has not
    // answered, so it is reported when the second failure comes, and the second one
    // when its own probe time runs out.
    sim.advance(2_000);
    let failed = failures(&sim, a);
    assert!(!failed.is_empty());
    assert_eq!(failed[0].1.at, t0);
    assert_eq!(failed[0].1.reason, FailureReason::Unreachable);
    assert!(failed[0].0 - t0 <= 800, "{}", failed[0].0 - t0);
    let last = failed.last().unwrap();
    assert!(last.0 - last.1.at <= 800);
}

#[test]
fn a_late_probe_answer_is_ignored() {
    let mut sim = Sim::new(4);
    let mut config = ClientConfig::new("alice");
    // Only one attempt inside the test: the next waits 10 s.
    config.backoff_base_ms = 20_000;
    config.backoff_max_ms = 20_000;
    let a = sim.add_with(config);
    sim.set_net(a, Net::NotFound);
    sim.nodes[a].probe_answer = Some((3_000, Some(ProbeResult::NotHoldfast { status: Some(404) })));
    let t0 = sim.now;
    sim.act(a, |e, now| e.connect(now));
    sim.advance(5_000);
    let failed = failures(&sim, a);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        failed[0].0,
        t0 + 800,
        "reported when the probe time ran out"
    );
    assert_eq!(failed[0].1.reason, FailureReason::Unreachable);
}

#[test]
fn another_protocol_version_stops_retrying() {
    let mut sim = Sim::new(5);
    let a = sim.add("alice");
    sim.set_net(a, Net::Refuse);
    sim.nodes[a].probe_answer = Some((10, Some(ProbeResult::Holdfast { protocol: 99 })));
    sim.act(a, |e, now| e.connect(now));
    sim.advance(30_000);
    let failed = failures(&sim, a);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let f = &failed[0].1;
    assert_eq!(f.reason, FailureReason::Version);
    assert!(!f.will_retry);
    assert_eq!(f.next_attempt_at, None);
    assert_eq!(sim.state(a), ConnectionState::AuthFailed);
    assert_eq!(
        opens(&sim, a).len(),
        1,
        "no attempt after the version answer"
    );
    assert_eq!(sim.client(a).next_attempt_at(), None);
}

#[test]
fn a_refused_token_is_auth_failed_with_the_servers_code_and_no_retry() {
    let mut sim = Sim::new(6);
    let a = page_on(&mut sim, "not a valid identity!", Net::Up);
    sim.advance(10_000);
    let failed = failures(&sim, a);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (t, f) = &failed[0];
    assert_eq!(f.reason, FailureReason::AuthFailed);
    assert_eq!(f.code, Some(ErrorCode::AuthFailed));
    assert!(!f.will_retry);
    assert_eq!(f.next_attempt_at, None);
    assert!(*t - f.at <= 1_000);
    assert_eq!(sim.state(a), ConnectionState::AuthFailed);
    assert_eq!(probes(&sim, a), 0, "the server said why: nothing to probe");
    assert_eq!(opens(&sim, a).len(), 1);
    // A new token connects and clears the failure.
    sim.act(a, |e, now| e.set_token("alice", now));
    assert!(sim.run_until(2_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(sim.client(a).last_failure(), None);
}

#[test]
fn a_socket_that_never_opens_is_a_timeout_at_the_connect_timeout() {
    let mut sim = Sim::new(7);
    let a = sim.add("alice");
    sim.set_net(a, Net::Blackhole);
    let t0 = sim.now;
    sim.act(a, |e, now| e.connect(now));
    sim.advance(5_500);
    let failed = failures(&sim, a);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (t, f) = &failed[0];
    assert_eq!(f.reason, FailureReason::Timeout);
    assert_eq!(*t, t0 + 5_000);
    assert_eq!(f.at, t0 + 5_000);
    assert!(f.will_retry && f.next_attempt_at.is_some());
    assert!(f.message.contains("5000 ms"), "{}", f.message);
}

#[test]
fn a_failed_reconnect_is_reported_at_once_without_a_probe() {
    let mut sim = Sim::new(8);
    let a = sim.online("alice");
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.advance(2_000);
    let failed = failures(&sim, a);
    assert!(failed.len() >= 2, "{failed:?}");
    assert_eq!(failed[0].1.at, t_drop);
    for (t, f) in &failed {
        assert_eq!(*t, f.at, "reported as it failed");
        assert_eq!(f.reason, FailureReason::Unreachable);
        assert!(f.will_retry);
    }
    assert_eq!(probes(&sim, a), 0);
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    // The link dropping itself is not a failed attempt: only the attempts are reported.
    assert_eq!(failed.len(), opens(&sim, a).len() - 1);
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(6_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(sim.client(a).last_failure(), None);
}

#[test]
fn a_probe_still_out_when_the_welcome_comes_is_reported_before_connected() {
    let mut sim = Sim::new(9);
    let a = sim.add("alice");
    sim.set_net(a, Net::Refuse);
    sim.nodes[a].probe_answer = Some((0, None));
    let t0 = sim.now;
    sim.act(a, |e, now| e.connect(now));
    // The server is back before the probe could answer; the retry connects.
    sim.set_net(a, Net::Up);
    assert!(sim.run_until(700, |s| s.state(a) == ConnectionState::Connected));
    let events = sim.events(a);
    let failed = events
        .iter()
        .position(|ev| matches!(ev, Event::ConnectionFailed(f) if f.at == t0));
    let connected = events
        .iter()
        .position(|ev| matches!(ev, Event::Connected { .. }));
    assert!(failed.is_some() && failed < connected, "{events:?}");
    assert_eq!(failures(&sim, a).len(), 1);
    assert_eq!(sim.client(a).last_failure(), None);
    // Nothing more comes of the old probe.
    sim.advance(2_000);
    assert_eq!(failures(&sim, a).len(), 1);
}
