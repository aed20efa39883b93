//! Logout and server shutdown end calls at both ends and leave nothing to reconnect to.

use crate::helpers::{ended, errors, has, in_call, in_call_alone, opens, server_call};
use holdfast::engine::client::{ClientError, ConnectionState, Event};
use holdfast::engine::server::{CloseReason, Output};
use holdfast::engine::store::Store;
use holdfast::protocol::*;

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
    assert!(sim.store().sessions_of("alice").is_empty());
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
    let (mut sim, a, b, id) = in_call_alone(37);
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
    assert!(sim.store().call_ids().is_empty());
}
