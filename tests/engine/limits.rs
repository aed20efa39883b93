//! Session limits per identity.

use crate::common::sim::{Net, Sim};
use crate::helpers::{conn_errors, hello};
use holdfast::engine::client::ConnectionState;
use holdfast::engine::server::ServerConfig;
use holdfast::engine::store::Store;
use holdfast::protocol::*;

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
