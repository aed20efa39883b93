//! The server loses its state mid-call (a crash or restart with the in-memory store):
//! neither person cancelled anything, so both ends say the server lost the call.

use crate::common::sim::{Net, Sim, C};
use crate::helpers::{ended, establish, in_call_alone};
use holdfast::engine::client::{ClientConfig, ConnectionState, Event};
use holdfast::engine::server::{DevAuth, ServerConfig, ServerEngine};
use holdfast::engine::store::MemoryStore;
use holdfast::engine::SplitMix;
use holdfast::protocol::*;

/// The server process dies with every socket, and a fresh one (empty store) takes its
/// place; the pages reconnect to it.
fn crash_and_restart(sim: &mut Sim, pages: &[C], config: ServerConfig) {
    for &c in pages {
        sim.set_net(c, Net::Refuse);
        sim.drop_link(c);
    }
    sim.server = ServerEngine::new(
        config,
        MemoryStore::new(),
        Box::new(DevAuth),
        Box::new(SplitMix(99)),
    );
    sim.advance(500);
    for &c in pages {
        sim.set_net(c, Net::Up);
    }
    let ok = sim.run_until(15_000, |s| {
        pages
            .iter()
            .all(|&c| s.state(c) == ConnectionState::Connected)
    });
    assert!(ok, "pages reconnected to the new server");
}

#[test]
fn a_server_that_lost_its_state_ends_the_call_server_lost_at_both_ends() {
    let (mut sim, a, b, id) = in_call_alone(141);
    crash_and_restart(&mut sim, &[a, b], ServerConfig::default());
    sim.advance(100);
    for c in [a, b] {
        assert_eq!(ended(&sim, c, &id), vec![EndReason::ServerLost], "page {c}");
        assert_eq!(sim.nodes[c].engine.calls().count(), 0);
        assert!(sim.stored(c).is_empty(), "no record left to offer");
        assert!(!sim.events(c).iter().any(|e| matches!(
            e,
            Event::RejoinAvailable { .. } | Event::RejoinExpired { .. }
        )));
    }
}

#[test]
fn away_longer_than_the_window_is_reconnect_failed_not_server_lost() {
    // The page was away past its call's window and past the server's memory of the
    // end (a page that keeps retrying for a long time): the call ended without it,
    // which is not the server's fault.
    let mut sim = Sim::one_process(142);
    let mut config = ClientConfig::new("alice");
    config.give_up_after_ms = 3_600_000;
    let a = sim.add_with(config);
    sim.connect(a);
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    sim.advance(200_000);
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
    assert!(ended(&sim, a, &id).is_empty(), "still retrying");
    sim.set_net(a, Net::Up);
    sim.act(a, |e, now| e.reconnect(now));
    assert!(sim.run_until(10_000, |s| s.state(a) == ConnectionState::Connected));
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ReconnectFailed]);
}
