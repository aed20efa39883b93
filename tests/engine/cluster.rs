//! Several server nodes over one shared store: a call whose two people are on different
//! nodes, a node that dies or is restarted, crossed invites on two nodes, a grace
//! window whose node died. Each page is routed to a node by hand, as a load balancer
//! that knows nothing of sessions might.

use crate::common::cluster::LEASE_MS;
use crate::common::sim::{Net, Sim, C};
use crate::helpers::{ended, ended_at, establish, has, holder, is_active, send, signals};
use holdfast::engine::client::{ConnectionState, Event};
use holdfast::engine::cluster::node_of_conn;
use holdfast::engine::server::ServerConfig;
use holdfast::engine::store::Store;
use holdfast::protocol::*;
use serde_json::{json, Value};

/// `nodes` nodes, and one page per name, each on the node given.
fn cluster(nodes: usize, pages: &[(&str, usize)], seed: u64) -> (Sim, Vec<C>) {
    let mut sim = Sim::cluster(ServerConfig::default(), nodes, seed);
    let pages = pages
        .iter()
        .map(|(name, node)| {
            let c = sim.add(name);
            sim.nodes[c].route = Some(*node);
            sim.connect(c);
            c
        })
        .collect();
    (sim, pages)
}

/// The node (by number) holding a page's socket.
fn node_of(sim: &Sim, c: C) -> u64 {
    node_of_conn(sim.conn_of(c).expect("connected"))
}

fn numbers(n: std::ops::Range<u64>, tag: &str) -> Vec<Value> {
    n.map(|i| json!(format!("{tag}{i}"))).collect()
}

#[test]
fn a_call_across_two_nodes_relays_both_ways_exactly_once_and_in_order() {
    let (mut sim, p) = cluster(2, &[("alice", 0), ("bob", 1)], 501);
    let (a, b) = (p[0], p[1]);
    assert_ne!(node_of(&sim, a), node_of(&sim, b));
    let id = establish(&mut sim, a, b, None);
    for i in 0..50 {
        send(&mut sim, a, &id, json!(format!("a{i}")));
        send(&mut sim, b, &id, json!(format!("b{i}")));
        if i % 7 == 0 {
            sim.advance(3);
        }
    }
    sim.advance(500);
    assert_eq!(signals(&sim, b, &id), numbers(0..50, "a"));
    assert_eq!(signals(&sim, a, &id), numbers(0..50, "b"));
    // The nodes had to agree on the call through the store.
    assert!(sim.cluster.as_ref().unwrap().ledger.taken() > 0);
}

#[test]
fn crossed_invites_on_two_nodes_make_one_active_call() {
    let (mut sim, p) = cluster(2, &[("alice", 0), ("bob", 1)], 502);
    let (a, b) = (p[0], p[1]);
    sim.default_delay_ms = 40;
    sim.act(a, |e, now| e.call("bob", None, None, now)).unwrap();
    sim.act(b, |e, now| e.call("alice", None, None, now))
        .unwrap();
    sim.advance(1_000);
    assert_eq!(sim.store().call_ids().len(), 1);
    let id = sim.store().call_between("alice", "bob").cloned().unwrap();
    for c in [a, b] {
        let calls: Vec<_> = sim.nodes[c].engine.calls().map(|c| c.id.clone()).collect();
        assert_eq!(calls, vec![id.clone()], "page {c}");
        assert!(is_active(&sim, c, &id));
    }
}

#[test]
fn the_second_invite_on_another_node_returns_the_same_call() {
    // Alice has two tabs, on two nodes; both call Bob.
    let (mut sim, p) = cluster(3, &[("alice", 0), ("alice", 1), ("bob", 2)], 503);
    sim.act(p[0], |e, now| e.call("bob", None, None, now))
        .unwrap();
    sim.act(p[1], |e, now| e.call("bob", None, None, now))
        .unwrap();
    sim.advance(500);
    assert_eq!(sim.store().call_ids().len(), 1);
    let id = sim.store().call_ids()[0].clone();
    for c in [p[0], p[1]] {
        assert!(has(&sim, c, |e| matches!(
            e,
            Event::OutgoingCall { call, .. } if call.id == id
        )));
    }
}

#[test]
fn the_people_of_a_killed_node_resume_the_same_call_on_another_node() {
    let (mut sim, p) = cluster(2, &[("alice", 0), ("bob", 1)], 504);
    let (a, b) = (p[0], p[1]);
    let id = establish(&mut sim, a, b, None);
    let session = sim.nodes[a].engine.session_id().unwrap().to_owned();
    send(&mut sim, b, &id, json!("before"));
    sim.advance(100);
    // The load balancer sends Alice's next socket to the node that is left.
    sim.nodes[a].route = None;
    sim.kill_node(0);
    // Messages sent while Alice is away wait for her in the store.
    send(&mut sim, b, &id, json!("while-away"));
    assert!(sim.run_until(5_000, |s| s.state(a) == ConnectionState::Connected));
    sim.advance(200);
    assert_eq!(node_of(&sim, a), node_of(&sim, b));
    let w = sim.welcomes(a).pop().unwrap();
    assert!(w.resumed, "the session resumed on the other node");
    assert_eq!(w.session, session);
    assert_eq!(
        signals(&sim, a, &id),
        vec![json!("before"), json!("while-away")]
    );
    assert!(is_active(&sim, a, &id) && is_active(&sim, b, &id));
    // The dead node's lease ends; nothing it held is left to detach: Alice was back
    // before anyone noticed, so Bob never saw her drop.
    sim.advance(LEASE_MS + 1_000);
    assert!(!has(&sim, b, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    )));
    assert!(ended(&sim, a, &id).is_empty() && ended(&sim, b, &id).is_empty());
    send(&mut sim, a, &id, json!("after"));
    sim.advance(100);
    assert_eq!(signals(&sim, b, &id).last(), Some(&json!("after")));
    assert_eq!(holder(&sim, &id, "alice"), Some(session));
}

#[test]
fn a_resume_on_another_node_closes_the_half_open_socket_as_superseded() {
    let (mut sim, p) = cluster(2, &[("alice", 0), ("bob", 1)], 505);
    let (a, b) = (p[0], p[1]);
    let id = establish(&mut sim, a, b, None);
    let old = sim.conn_of(a).unwrap();
    // Alice's socket dies silently; her page notices first and comes back through
    // the other node, while node 0 still thinks the old socket is open.
    sim.half_open(a);
    sim.nodes[a].route = Some(1);
    assert!(sim.run_until(10_000, |s| s
        .conn_of(a)
        .is_some_and(|c| c != old && s.state(a) == ConnectionState::Connected)));
    sim.advance(100);
    assert!(sim.welcomes(a).pop().unwrap().resumed);
    let superseded = sim.server_log.iter().any(
        |(_, o)| matches!(o, holdfast::engine::server::Output::Close { conn, .. } if *conn == old),
    );
    assert!(superseded, "node 0 closed the old socket");
    assert_eq!(sim.session_of_conn(old), None);
    send(&mut sim, b, &id, json!("x"));
    sim.advance(100);
    assert_eq!(signals(&sim, a, &id), vec![json!("x")]);
}

#[test]
fn a_grace_window_armed_on_a_node_that_died_ends_the_call_once_at_its_deadline() {
    let (mut sim, p) = cluster(2, &[("alice", 0), ("bob", 1)], 506);
    let (a, b) = (p[0], p[1]);
    let id = establish(&mut sim, a, b, None);
    // Bob goes away for good; node 1 starts his grace window, then dies.
    sim.set_net(b, Net::Refuse);
    sim.drop_link(b);
    let deadline = sim
        .store()
        .call(&id)
        .and_then(|c| c.callee.deadline)
        .expect("bob's grace window runs");
    sim.kill_node(1);
    assert!(sim.run_until(120_000, |s| !ended(s, a, &id).is_empty()));
    let (at, reason) = ended_at(&sim, a, &id).unwrap();
    assert_eq!(reason, EndReason::ReconnectFailed);
    assert!(
        at >= deadline && at <= deadline + 50,
        "ended at {at}, deadline {deadline}"
    );
    sim.advance(10_000);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ReconnectFailed]);
}

#[test]
fn a_dead_node_is_noticed_and_the_other_side_told() {
    let (mut sim, p) = cluster(2, &[("alice", 0), ("bob", 1)], 507);
    let (a, b) = (p[0], p[1]);
    let id = establish(&mut sim, a, b, None);
    // Bob's node dies and Bob cannot reach any other: only the lease tells.
    sim.set_net(b, Net::Refuse);
    let t = sim.now;
    sim.kill_node(1);
    assert!(sim.run_until(LEASE_MS + 500, |s| has(s, a, |e| matches!(
        e,
        Event::ParticipantDisconnected { .. }
    ))));
    assert!(sim.now - t <= LEASE_MS + 100, "noticed within the lease");
    assert!(
        is_active(&sim, a, &id),
        "the call waits for Bob's grace window"
    );
    // Bob comes back (to the live node) and resumes: the call goes on.
    sim.set_net(b, Net::Up);
    assert!(sim.run_until(10_000, |s| s.state(b) == ConnectionState::Connected));
    sim.advance(200);
    assert!(sim.welcomes(b).pop().unwrap().resumed);
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::ParticipantReconnected { .. }
    )));
    assert!(ended(&sim, a, &id).is_empty());
}

#[test]
fn a_rolling_restart_of_every_node_under_traffic_loses_nothing() {
    let names = [("ann", 0), ("ben", 1), ("cat", 1), ("dan", 0)];
    let (mut sim, p) = cluster(2, &names, 508);
    for page in &p {
        sim.nodes[*page].route = None;
    }
    let calls = [
        establish(&mut sim, p[0], p[1], None),
        establish(&mut sim, p[2], p[3], None),
    ];
    let pairs = [(p[0], p[1], &calls[0]), (p[2], p[3], &calls[1])];
    let mut sent = 0u64;
    let mut traffic = |sim: &mut Sim, rounds: u64| {
        for _ in 0..rounds {
            for (x, y, id) in pairs {
                send(sim, x, id, json!(sent));
                send(sim, y, id, json!(sent));
            }
            sent += 1;
            sim.advance(20);
        }
    };
    traffic(&mut sim, 10);
    for old in 0..2 {
        // SIGTERM one node at a time; a replacement joins; traffic never stops.
        sim.stop_node(old);
        sim.start_node();
        traffic(&mut sim, 25);
    }
    sim.advance(1_000);
    let expected: Vec<Value> = (0..sent).map(|i| json!(i)).collect();
    for (x, y, id) in pairs {
        assert_eq!(signals(&sim, x, id), expected, "page {x}");
        assert_eq!(signals(&sim, y, id), expected, "page {y}");
        for c in [x, y] {
            assert!(is_active(&sim, c, id));
            assert!(!has(&sim, c, |e| matches!(e, Event::SessionLost { .. })));
            assert_eq!(sim.state(c), ConnectionState::Connected);
        }
    }
    // Everyone resumed on the new nodes.
    let first_new = sim.cluster.as_ref().unwrap().no_of(2).unwrap();
    for c in p {
        assert!(node_of(&sim, c) >= first_new);
    }
}

/// The status a watching page shows for `user` (from its presence list).
fn shown(sim: &Sim, c: C, user: &str) -> Option<PresenceStatus> {
    sim.nodes[c]
        .engine
        .presence()
        .find(|e| e.user.id == user)
        .map(|e| e.status)
}

#[test]
fn presence_is_cluster_wide() {
    let mut sim = Sim::cluster(ServerConfig::default(), 2, 509);
    let mut watcher = holdfast::engine::client::ClientConfig::new("alice");
    watcher.presence = true;
    let a = sim.add_with(watcher);
    sim.nodes[a].route = Some(0);
    sim.connect(a);
    // Bob comes online on the other node: Alice sees him.
    let b = sim.add("bob");
    sim.nodes[b].route = Some(1);
    sim.connect(b);
    sim.advance(500);
    assert_eq!(shown(&sim, a, "bob"), Some(PresenceStatus::Available));
    sim.act(b, |e, now| e.set_status(PresenceStatus::Busy, now))
        .unwrap();
    sim.advance(500);
    assert_eq!(shown(&sim, a, "bob"), Some(PresenceStatus::Busy));
    // A watcher that arrives later, on either node, is given Bob in its first list.
    let mut late = holdfast::engine::client::ClientConfig::new("carol");
    late.presence = true;
    let c = sim.add_with(late);
    sim.nodes[c].route = Some(0);
    sim.connect(c);
    sim.advance(100);
    assert_eq!(shown(&sim, c, "bob"), Some(PresenceStatus::Busy));
    // Bob logs out on his node: everyone watching hears he is offline.
    sim.act(b, |e, now| e.logout(now));
    sim.advance(500);
    for w in [a, c] {
        assert_eq!(
            shown(&sim, w, "bob").unwrap_or(PresenceStatus::Offline),
            PresenceStatus::Offline
        );
    }
    // And when a node dies, its people stay listed until their sessions expire.
    let d = sim.add("dan");
    sim.nodes[d].route = Some(1);
    sim.connect(d);
    sim.advance(500);
    assert_eq!(shown(&sim, a, "dan"), Some(PresenceStatus::Available));
    sim.set_net(d, Net::Refuse);
    sim.kill_node(1);
    let window = sim.config().resume_window_ms;
    sim.advance(window + LEASE_MS + 1_000);
    assert_eq!(
        shown(&sim, a, "dan").unwrap_or(PresenceStatus::Offline),
        PresenceStatus::Offline
    );
}

#[test]
fn a_commit_whose_answer_was_lost_takes_effect_once_however_it_was_lost() {
    use crate::common::cluster::LostAnswer;
    for (i, lost) in [LostAnswer::Taken, LostAnswer::NotSent, LostAnswer::Late]
        .into_iter()
        .enumerate()
    {
        let mut sim = Sim::cluster(ServerConfig::default(), 2, 510 + i as u64);
        let (a, b) = (sim.add("alice"), sim.add("bob"));
        sim.nodes[a].route = Some(0);
        sim.nodes[b].route = Some(1);
        // Alice's hello: the answer to the commit that makes her session is lost.
        sim.cluster.as_mut().unwrap().lose_next_answer(lost);
        sim.connect(a);
        sim.connect(b);
        let store = sim.store();
        assert_eq!(
            store.sessions_of("alice").len(),
            1,
            "{lost:?}: one session, not one per run of the hello"
        );
        let events = sim.events(a);
        let welcomes = events
            .iter()
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count();
        assert_eq!(welcomes, 1, "{lost:?}: {events:?}");
        // A message whose commit's answer is lost arrives once.
        let id = establish(&mut sim, a, b, None);
        sim.cluster.as_mut().unwrap().lose_next_answer(lost);
        send(&mut sim, b, &id, json!("once"));
        send(&mut sim, b, &id, json!("twice?"));
        sim.advance(500);
        assert_eq!(
            signals(&sim, a, &id),
            vec![json!("once"), json!("twice?")],
            "{lost:?}"
        );
    }
}
