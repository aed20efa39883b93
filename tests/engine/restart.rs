//! A server restart over durable state, on the simulated clock: the new engine is
//! rebuilt from the records (`ServerEngine::restore`) and every window keeps its
//! deadline.

use crate::common::sim::Net;
use crate::helpers::*;
use holdfast::engine::client::Event;
use holdfast::protocol::*;
use serde_json::json;

#[test]
fn attached_sessions_resume_the_same_call_and_nothing_in_flight_is_lost_or_doubled() {
    let (mut sim, a, b, id) = in_call(91);
    for n in 0..5 {
        send(&mut sim, a, &id, json!({ "a": n }));
        send(&mut sim, b, &id, json!({ "b": n }));
    }
    // Dies with those messages on the wire.
    sim.restart_server();
    assert!(sim.run_until(10_000, |s| {
        signals(s, b, &id).len() == 6 && signals(s, a, &id).len() == 5
    }));
    let got_b: Vec<_> = signals(&sim, b, &id);
    assert_eq!(
        got_b,
        std::iter::once(json!("before"))
            .chain((0..5).map(|n| json!({ "a": n })))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        signals(&sim, a, &id),
        (0..5).map(|n| json!({ "b": n })).collect::<Vec<_>>()
    );
    for c in [a, b] {
        assert!(has(&sim, c, |e| matches!(
            e,
            Event::Resumed { recovered: true }
        )));
        assert!(!has(&sim, c, |e| matches!(e, Event::SessionLost { .. })));
        assert!(ended(&sim, c, &id).is_empty());
    }
    sim.advance(100_000);
    assert!(
        ended(&sim, a, &id).is_empty(),
        "the call outlives its grace window"
    );
    send(&mut sim, a, &id, json!("after"));
    sim.advance(100);
    assert_eq!(signals(&sim, b, &id).last(), Some(&json!("after")));
}

#[test]
fn a_grace_window_running_at_the_restart_ends_the_call_at_its_original_deadline() {
    let (mut sim, a, b, id) = in_call(92);
    sim.set_net(b, Net::Refuse);
    sim.drop_link(b);
    let deadline = server_call(&sim, &id)
        .and_then(|c| c.callee.deadline.or(c.caller.deadline))
        .expect("bob's grace window runs");
    sim.advance(20_000);
    sim.restart_server();
    assert!(sim.run_until(60_000, |s| !ended(s, a, &id).is_empty()));
    let (at, reason) = ended_at(&sim, a, &id).unwrap();
    assert_eq!(reason, EndReason::ReconnectFailed);
    assert!(
        at >= deadline && at <= deadline + 50,
        "ended at {at}, deadline {deadline}"
    );
}

/// Socket ids belong to a process. A restarted server numbers its sockets from 1 again,
/// and the driver opens the first of them before it drains what the restore produced;
/// a message the restore addressed to a socket id of the previous process would reach
/// whoever holds that id now: a stranger, before their welcome.
#[test]
fn nothing_the_restore_produces_reaches_a_socket_of_the_new_process() {
    use holdfast::engine::server::{DevAuth, Output, ServerEngine};
    use holdfast::engine::store::MemoryStore;
    use holdfast::engine::SplitMix;

    let (sim, ..) = in_call(93);
    let now = sim.now;
    let (store, vanished) = MemoryStore::from_records(sim.store().records(), false);
    let mut server = ServerEngine::restore(
        sim.config().clone(),
        store,
        vanished,
        Box::new(DevAuth),
        Box::new(SplitMix(7)),
        now,
    );
    let fresh: Vec<_> = (0..4).map(|_| server.handle_open_from(None, now)).collect();
    let mut leaked = Vec::new();
    while let Some(out) = server.poll_output() {
        if let Output::Send { conn, frame } = out {
            if fresh.contains(&conn) {
                leaked.push((conn, frame));
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "frames for the old process's sockets went to new ones: {leaked:?}"
    );
}
