//! Reconnect backoff: immediate then jittered exponential up to the cap, nothing while
//! offline, giving up only when no call window is open.

use crate::common::sim::{Net, Sim};
use crate::helpers::{ended, establish, has, interpreter_config, opens};
use holdfast::engine::client::{ConnectionState, Event};
use holdfast::protocol::*;

#[test]
fn backoff_is_immediate_then_jittered_exponential_up_to_the_cap() {
    let mut sim = Sim::new(24);
    let a = sim.online("alice");
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.advance(60_000);
    let times: Vec<u64> = opens(&sim, a)
        .into_iter()
        .filter(|t| *t >= t_drop)
        .collect();
    assert_eq!(times[0], t_drop, "first retry is immediate");
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 12, "{gaps:?}");
    for (k, gap) in gaps.iter().enumerate() {
        let cap = (250u64 << k.min(20)).min(5_000);
        assert!(
            *gap >= cap / 2 && *gap <= cap,
            "retry {k} after {gap} ms, expected {}..={cap}: {gaps:?}",
            cap / 2
        );
    }
    let capped: Vec<u64> = gaps.iter().skip(6).copied().collect();
    assert!(
        capped.iter().any(|g| *g != capped[0]),
        "jittered: {capped:?}"
    );
    assert!(has(&sim, a, |e| matches!(
        e,
        Event::Disconnected {
            next_attempt_at: Some(_)
        }
    )));
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    // Another client's jitter differs (a storm spreads out).
    let mut sim2 = Sim::new(25);
    let x = sim2.online("xavier");
    sim2.set_net(x, Net::Refuse);
    let t2 = sim2.now;
    sim2.drop_link(x);
    sim2.advance(60_000);
    let times2: Vec<u64> = opens(&sim2, x)
        .into_iter()
        .filter(|t| *t >= t2)
        .map(|t| t - t2)
        .collect();
    let rel: Vec<u64> = times.iter().map(|t| t - t_drop).collect();
    assert_ne!(rel, times2);
}

#[test]
fn no_attempts_while_offline_and_immediate_ones_on_online_and_wake() {
    let mut sim = Sim::new(26);
    let a = sim.online("alice");
    sim.set_net(a, Net::Refuse);
    sim.drop_link(a);
    sim.advance(20_000);
    sim.act(a, |e, now| e.handle_online(false, now));
    assert_eq!(sim.state(a), ConnectionState::Offline);
    assert!(has(&sim, a, |e| matches!(e, Event::Offline)));
    let before = opens(&sim, a).len();
    let t_off = sim.now;
    sim.advance(120_000);
    assert_eq!(opens(&sim, a).len(), before, "no attempt while offline");
    assert_eq!(sim.state(a), ConnectionState::Offline);
    assert_eq!(sim.nodes[a].engine.next_attempt_at(), None);
    assert!(sim.now >= t_off + 120_000);

    sim.act(a, |e, now| e.handle_online(true, now));
    assert_eq!(*opens(&sim, a).last().unwrap(), sim.now, "online: at once");
    // Still refused; wait into a long backoff, then wake the page.
    sim.advance(7_000);
    let n = opens(&sim, a).len();
    let next = sim.nodes[a].engine.next_attempt_at().unwrap();
    assert!(next > sim.now);
    sim.act(a, |e, now| e.handle_wake(now));
    assert_eq!(opens(&sim, a).len(), n + 1);
    assert_eq!(*opens(&sim, a).last().unwrap(), sim.now, "wake: at once");
    // Back online for real: connected (resumed) right away.
    sim.set_net(a, Net::Up);
    let t_wake = sim.now;
    sim.act(a, |e, now| e.handle_wake(now));
    sim.advance(50);
    assert_eq!(*opens(&sim, a).last().unwrap(), t_wake);
    assert_eq!(sim.state(a), ConnectionState::Connected);
    assert!(has(&sim, a, |e| matches!(e, Event::Resumed { .. })));
}

#[test]
fn offline_from_the_start_makes_no_attempt() {
    let mut sim = Sim::new(27);
    let a = sim.add("alice");
    sim.act(a, |e, now| e.handle_online(false, now));
    sim.act(a, |e, now| e.connect(now));
    sim.advance(30_000);
    assert!(opens(&sim, a).is_empty());
    assert_eq!(sim.state(a), ConnectionState::Offline);
    sim.act(a, |e, now| e.handle_online(true, now));
    sim.advance(100);
    assert_eq!(sim.state(a), ConnectionState::Connected);
}

#[test]
fn gives_up_without_a_call_window_but_not_while_one_is_open() {
    // No call: gives up after give_up_after_ms.
    let mut sim = Sim::with_config(interpreter_config(), 28);
    let idle = sim.online("ivan");
    sim.set_net(idle, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(idle);
    assert!(sim.run_until(200_000, |s| s.state(idle) == ConnectionState::GaveUp));
    let (t_gave_up, _) = sim
        .find_event(idle, |e| matches!(e, Event::GaveUp))
        .unwrap();
    assert!(t_gave_up >= t_drop + 120_000 && t_gave_up <= t_drop + 126_000);
    let n = opens(&sim, idle).len();
    sim.advance(60_000);
    assert_eq!(opens(&sim, idle).len(), n, "no attempts after giving up");
    // reconnect() by hand starts again.
    sim.set_net(idle, Net::Up);
    sim.act(idle, |e, now| e.reconnect(now));
    sim.advance(100);
    assert_eq!(sim.state(idle), ConnectionState::Connected);

    // In a 5-minute call: keeps trying for the whole window.
    let a = sim.online("alice");
    let b = sim.online("bob");
    let id = establish(&mut sim, a, b, Some("interpreter"));
    sim.set_net(a, Net::Refuse);
    let t_drop = sim.now;
    sim.drop_link(a);
    sim.run_to(t_drop + 295_000);
    assert_eq!(sim.state(a), ConnectionState::Reconnecting);
    let late = opens(&sim, a)
        .into_iter()
        .filter(|t| *t > t_drop + 290_000)
        .count();
    assert!(late >= 1, "still trying near the end of the window");
    assert!(sim.run_until(20_000, |s| s.state(a) == ConnectionState::GaveUp));
    let (t_gave_up, _) = sim.find_event(a, |e| matches!(e, Event::GaveUp)).unwrap();
    assert!(t_gave_up >= t_drop + 300_000);
    // The window is over: no call is left hanging in the page.
    assert_eq!(ended(&sim, b, &id), vec![EndReason::ReconnectFailed]);
    assert_eq!(ended(&sim, a, &id), vec![EndReason::ReconnectFailed]);
    assert_eq!(sim.nodes[a].engine.calls().count(), 0);
}
