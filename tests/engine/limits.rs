//! Session limits per identity.

use crate::common::sim::{Net, Sim};
use crate::helpers::{conn_errors, ended, has, hello, in_call, is_active};
use holdfast::engine::client::{ClientConfig, ConnectionState, Event};
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
    assert_eq!(sim.store().sessions_of("alice"), &[s1.clone(), s2.clone()]);
    assert_eq!(sim.state(tab1), ConnectionState::Connected);
    assert_eq!(sim.state(tab2), ConnectionState::Connected);
    // Another identity is not affected by Alice's limit.
    sim.online("bob");

    // A page that died (its session waits out its resume window) does not lock the
    // user out: the oldest detached session makes room for the new one.
    sim.set_net(tab1, Net::Blackhole);
    sim.advance(6_000);
    assert!(sim.store().session(&s1).unwrap().conn.is_none());
    let tab3 = sim.online("alice");
    let s3 = sim.nodes[tab3].engine.session_id().unwrap().to_owned();
    assert_eq!(sim.store().sessions_of("alice"), &[s2, s3]);
    assert!(sim.store().session(&s1).is_none());
}

#[test]
fn a_page_that_leaves_releases_its_session_at_once_and_its_call_waits_for_a_rejoin() {
    let (mut sim, a, b, id) = in_call(51);
    let old = sim.nodes[b].engine.session_id().unwrap().to_owned();
    // Bob's page unloads (not into the back/forward cache): `leave`, then it is gone.
    sim.act(b, |e, now| e.handle_unload(now));
    let t = sim.now;
    assert!(sim.run_until(1_000, |s| s.store().session(&old).is_none()));
    assert!(
        sim.now - t < 100,
        "forgotten as the frame lands, not after the window"
    );
    assert!(sim.store().sessions_of("bob").is_empty());
    // The page is gone (a fresh one starts from its storage, not connected yet).
    sim.reload(b, true);
    sim.advance(100);
    // Not a hang-up: the call waits for Bob, and Alice is told how long.
    assert!(ended(&sim, a, &id).is_empty());
    assert!(is_active(&sim, a, &id));
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    )));
    // The reloaded page rejoins the same call from its record.
    sim.connect(b);
    sim.act(b, |e, now| e.rejoin(&id, now)).unwrap();
    assert!(sim.run_until(5_000, |s| is_active(s, b, &id)));
    assert_eq!(sim.store().sessions_of("bob").len(), 1);
}

#[test]
fn a_new_session_from_a_tab_supersedes_that_tabs_detached_session_only() {
    let mut sim = Sim::new(52);
    let tab = |id: &str| {
        let mut config = ClientConfig::new("alice");
        config.tab = Some(id.into());
        config
    };
    let one = sim.add_with(tab("tab-1"));
    sim.connect(one);
    let two = sim.add_with(tab("tab-2"));
    sim.connect(two);
    let s1 = sim.nodes[one].engine.session_id().unwrap().to_owned();
    let s2 = sim.nodes[two].engine.session_id().unwrap().to_owned();

    // Tab 1 reloads and its `leave` never reaches the server: its socket just closes,
    // leaving a detached session; the reloaded page's new session replaces it at once.
    sim.reload(one, false);
    assert!(sim.store().session(&s1).unwrap().conn.is_none());
    sim.connect(one);
    let s1b = sim.nodes[one].engine.session_id().unwrap().to_owned();
    assert!(sim.store().session(&s1).is_none(), "superseded");
    assert_eq!(sim.store().sessions_of("alice"), &[s2.clone(), s1b]);

    // A duplicated tab carries the same id while the first is live: both stay.
    let copy = sim.add_with(tab("tab-2"));
    sim.connect(copy);
    assert_eq!(sim.state(two), ConnectionState::Connected);
    assert!(sim.store().session(&s2).unwrap().conn.is_some());
    assert_eq!(sim.store().sessions_of("alice").len(), 3);
}
