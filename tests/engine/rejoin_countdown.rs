//! The rejoin countdown of a crashed page starts from the server's deadline (not the
//! page's last estimate) and never goes up.

use crate::common::sim::Sim;
use crate::helpers::establish;
use holdfast::engine::client::{Event, StorageOp};

#[test]
fn the_first_figure_is_the_servers_and_the_countdown_never_increases() {
    let mut sim = Sim::new(171);
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, None);
    // The page rewrites its record's deadline every 5 s; it crashes just before the
    // next rewrite, so its stored estimate is 4.5 s early. Its socket closes with it.
    sim.advance(6_000);
    let last_put = sim.nodes[a]
        .storage_ops
        .iter()
        .filter(|(_, op)| matches!(op, StorageOp::Put(_)))
        .map(|(t, _)| *t)
        .next_back()
        .unwrap();
    sim.run_to(last_put + 4_500);
    let conn = sim.conn_of(a).expect("connected");
    sim.reload(a, true);
    sim.server_close(conn);
    sim.advance(100);
    let server_deadline = sim
        .events(b)
        .into_iter()
        .find_map(|e| match e {
            Event::ParticipantDisconnected { deadline, .. } => Some(deadline),
            _ => None,
        })
        .unwrap();
    assert!(
        sim.stored(a)[0].deadline + 4_000 < server_deadline,
        "estimate is early"
    );

    sim.connect(a);
    sim.advance(5_000);
    let mut shown: Vec<(u64, u64)> = Vec::new(); // (time, deadline implied)
    for (t, e) in &sim.nodes[a].events {
        match e {
            Event::RejoinAvailable { offer } if offer.call == id => {
                shown.push((*t, *t + offer.remaining_ms))
            }
            Event::RejoinCountdown { call, remaining_ms } if *call == id => {
                shown.push((*t, *t + remaining_ms))
            }
            _ => {}
        }
    }
    assert!(shown.len() >= 4, "{shown:?}");
    assert!(
        shown[0].1.abs_diff(server_deadline) <= 50,
        "first figure {shown:?} vs the server's deadline {server_deadline}"
    );
    for w in shown.windows(2) {
        assert!(w[1].1 <= w[0].1, "the countdown went up: {shown:?}");
    }
}
