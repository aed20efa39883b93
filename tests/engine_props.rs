//! Property test: random schedules of calls, signals and link faults (all inside the
//! resume window) never lose, double or reorder a relayed message, never make two live
//! calls between one pair, and every call that ends, ends at both ends with one reason.
//!
//! `PROPTEST_CASES` changes the number of cases, `HOLDFAST_PROP_SEED` the seed.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

mod common;

use common::sim::{Net, Sim, C};
use holdfast::engine::client::{CallPhase, Event};
use holdfast::engine::server::ServerConfig;
use holdfast::engine::store::Store;
use holdfast::protocol::{CallId, CallState, EndReason};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::json;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

const NAMES: [&str; 4] = ["ann", "ben", "cat", "dan"];

#[derive(Debug, Clone)]
enum Op {
    Wait(u64),
    Invite(usize, usize),
    Accept(usize),
    /// Decline a ringing incoming call (ends when the server says so).
    Decline(usize),
    Hangup(usize, usize),
    /// Send `n` numbered signals on one of the active calls of any page.
    Send(usize, usize, u8),
    Drop(usize),
    HalfOpen(usize),
    Delay(usize, u64, u64),
    /// The client's network refuses (or swallows) everything for a while.
    Outage(usize, u64, bool),
    /// With several server nodes: one dies (SIGKILL), and a new one joins.
    KillNode(usize),
    /// With several server nodes: one stops (SIGTERM), and a new one joins.
    StopNode(usize),
}

fn action() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u64..3_000).prop_map(Op::Wait),
        4 => (0usize..4, 0usize..4).prop_map(|(a, b)| Op::Invite(a, b)),
        5 => (0usize..4).prop_map(Op::Accept),
        1 => (0usize..4).prop_map(Op::Decline),
        1 => (0usize..4, 0usize..4).prop_map(|(c, k)| Op::Hangup(c, k)),
        10 => (0usize..4, 0usize..4, 1u8..6).prop_map(|(c, k, n)| Op::Send(c, k, n)),
        1 => (0usize..4).prop_map(Op::Drop),
        1 => (0usize..4).prop_map(Op::HalfOpen),
        1 => (0usize..4, 0u64..300, 0u64..300).prop_map(|(c, u, d)| Op::Delay(c, u, d)),
        1 => (0usize..4, 500u64..20_000, any::<bool>()).prop_map(|(c, ms, b)| Op::Outage(c, ms, b)),
    ]
}

/// An action of a schedule over several server nodes: those of one process, and now
/// and then a node that dies or is restarted.
fn cluster_action() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => action(),
        1 => (0usize..4).prop_map(Op::KillNode),
        1 => (0usize..4).prop_map(Op::StopNode),
    ]
}

/// An action, then a short pause (zero for actions at the same instant).
fn op() -> impl Strategy<Value = Vec<Op>> {
    paused(action())
}

fn paused(action: impl Strategy<Value = Op>) -> impl Strategy<Value = Vec<Op>> {
    (action, prop_oneof![1 => Just(0u64), 3 => 1u64..400]).prop_map(|(a, gap)| {
        if gap == 0 {
            vec![a]
        } else {
            vec![a, Op::Wait(gap)]
        }
    })
}

/// A signal a client sent: (sender, call, number, request id).
type Sent = (C, CallId, u64, u64);

struct World {
    sim: Sim,
    n: usize,
    sent: Vec<Sent>,
    counters: BTreeMap<(C, CallId), u64>,
    restore: Vec<(u64, C)>,
    /// Calls a page ended by its own command: request id of the end request.
    own_ends: BTreeMap<(C, CallId), u64>,
}

impl World {
    /// `n` pages, on one server process, or on `nodes` cluster nodes.
    fn new(n: usize, nodes: Option<usize>, seed: u64) -> Self {
        let mut sim = match nodes {
            Some(k) => {
                let mut sim = Sim::cluster(ServerConfig::default(), k, seed);
                // Notes reach their node a moment later, as over Redis: meanwhile the
                // node goes on handling its own sockets.
                if let Some(c) = sim.cluster.as_mut() {
                    c.note_delay_ms = 2;
                }
                sim
            }
            None => Sim::with_config(ServerConfig::default(), seed),
        };
        for name in NAMES.iter().take(n) {
            sim.online(name);
        }
        World {
            sim,
            n,
            sent: Vec::new(),
            counters: BTreeMap::new(),
            restore: Vec::new(),
            own_ends: BTreeMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.n;
        match *op {
            Op::Wait(ms) => {
                let until = self.sim.now + ms;
                while let Some(t) = self.sim.next_due().filter(|t| *t <= until) {
                    self.heal_due(t);
                    self.sim.run_to(t);
                    self.check_no_duplicates()?;
                }
                self.sim.run_to(until);
            }
            Op::Invite(a, b) => {
                let (a, b) = (a % n, b % n);
                if a != b {
                    let peer = self.sim.id(b);
                    // Refusals (already in a call with them, invite pending) are fine.
                    let _ = self.sim.act(a, |e, now| e.call(&peer, None, None, now));
                }
            }
            Op::Accept(k) => {
                // The k-th ringing incoming call of any page.
                let incoming = self.all_calls(Some(CallPhase::Incoming));
                if !incoming.is_empty() {
                    let (c, id) = incoming[k % incoming.len()].clone();
                    self.sim.act(c, |e, now| e.accept(&id, now)).unwrap();
                }
            }
            Op::Decline(k) => {
                let incoming = self.all_calls(Some(CallPhase::Incoming));
                if !incoming.is_empty() {
                    let (c, id) = incoming[k % incoming.len()].clone();
                    self.sim.act(c, |e, now| e.decline(&id, now)).unwrap();
                }
            }
            Op::Hangup(c, k) => {
                let calls = self.all_calls(None);
                if !calls.is_empty() {
                    let (c, id) = calls[(c * 4 + k) % calls.len()].clone();
                    let req = self.sim.act(c, |e, now| e.hangup(&id, now)).unwrap();
                    self.own_ends.insert((c, id), req);
                }
            }
            Op::Send(c, k, count) => {
                let calls = self.all_calls(Some(CallPhase::Active));
                if !calls.is_empty() {
                    let (c, id) = calls[(c * 4 + k) % calls.len()].clone();
                    for _ in 0..count {
                        let counter = self.counters.entry((c, id.clone())).or_default();
                        let num = *counter;
                        *counter += 1;
                        let payload = json!({ "n": num });
                        let req = self.sim.act(c, |e, now| e.send(&id, payload, now)).unwrap();
                        self.sent.push((c, id.clone(), num, req));
                    }
                }
            }
            Op::Drop(c) => self.sim.drop_link(c % n),
            Op::HalfOpen(c) => self.sim.half_open(c % n),
            Op::Delay(c, up, down) => self.sim.set_delay(c % n, up, down),
            Op::Outage(c, ms, swallow) => {
                let c = c % n;
                if self.sim.nodes[c].net == Net::Up {
                    if swallow {
                        self.sim.set_net(c, Net::Blackhole);
                    } else {
                        self.sim.set_net(c, Net::Refuse);
                        self.sim.drop_link(c);
                    }
                    self.restore.push((self.sim.now + ms, c));
                }
            }
            Op::KillNode(k) | Op::StopNode(k) => {
                let live: Vec<usize> = match &self.sim.cluster {
                    Some(cluster) => cluster.live().map(|(i, _)| i).collect(),
                    None => Vec::new(),
                };
                if !live.is_empty() {
                    let i = live[k % live.len()];
                    if matches!(op, Op::KillNode(_)) {
                        self.sim.kill_node(i);
                    } else {
                        self.sim.stop_node(i);
                    }
                    self.sim.start_node();
                }
            }
        }
        self.check_no_duplicates()
    }

    /// Networks whose outage is over come back before time `t` is run.
    fn heal_due(&mut self, t: u64) {
        let due: Vec<C> = self
            .restore
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, c)| *c)
            .collect();
        self.restore.retain(|(at, _)| *at > t);
        for c in due {
            self.sim.set_net(c, Net::Up);
        }
    }

    /// Calls in the pages' maps, in a given phase.
    fn all_calls(&self, phase: Option<CallPhase>) -> Vec<(C, CallId)> {
        (0..self.n)
            .flat_map(|c| {
                self.sim.nodes[c]
                    .engine
                    .calls()
                    .filter(|x| phase.is_none_or(|p| x.phase == p))
                    .map(move |x| (c, x.id.clone()))
            })
            .collect()
    }

    /// Never two live calls between one pair, on the server or in a page.
    fn check_no_duplicates(&self) -> Result<(), TestCaseError> {
        let store = self.sim.store();
        let mut pairs: BTreeMap<(String, String), Vec<CallId>> = BTreeMap::new();
        for id in store.call_ids() {
            let call = store.call(&id).unwrap();
            prop_assert_ne!(call.state, CallState::Ended);
            let (x, y) = (call.caller.user.id.clone(), call.callee.user.id.clone());
            let key = if x <= y { (x, y) } else { (y, x) };
            pairs.entry(key).or_default().push(id);
        }
        for ((x, y), ids) in &pairs {
            prop_assert_eq!(ids.len(), 1, "two live calls between {} and {}", x, y);
            prop_assert_eq!(store.call_between(x, y), Some(&ids[0]));
        }
        for c in 0..self.n {
            let mut peers = BTreeSet::new();
            for call in self.sim.nodes[c].engine.calls() {
                prop_assert!(
                    peers.insert(call.peer.id.clone()),
                    "page {} has two calls with {}",
                    c,
                    call.peer.id
                );
            }
        }
        Ok(())
    }

    /// Heal everything and let every window, timer and replay run out.
    fn settle(&mut self) {
        let restore: Vec<C> = self.restore.drain(..).map(|(_, c)| c).collect();
        for c in restore {
            self.sim.set_net(c, Net::Up);
        }
        for c in 0..self.n {
            self.sim.set_delay(c, 5, 5);
        }
        self.sim.advance(45_000);
    }

    fn check_final(&self) -> Result<(), TestCaseError> {
        self.check_no_duplicates()?;
        let sim = &self.sim;
        // Every page is back in its original session.
        for c in 0..self.n {
            let recovered_once = sim.nodes[c]
                .events
                .iter()
                .all(|(_, e)| !matches!(e, Event::SessionLost { .. }));
            prop_assert!(recovered_once, "page {} lost its session", c);
            prop_assert_eq!(
                sim.state(c),
                holdfast::engine::client::ConnectionState::Connected
            );
        }

        // Signals: delivered at most once and in order; exactly once unless refused.
        let mut delivered: BTreeMap<(CallId, C), Vec<u64>> = BTreeMap::new();
        let index: BTreeMap<String, C> = (0..self.n).map(|c| (sim.id(c), c)).collect();
        for c in 0..self.n {
            for (_, e) in &sim.nodes[c].events {
                if let Event::Signal {
                    call,
                    from,
                    payload,
                } = e
                {
                    let sender = index[from];
                    prop_assert_ne!(sender, c);
                    let num = payload["n"].as_u64().unwrap();
                    delivered
                        .entry((call.clone(), sender))
                        .or_default()
                        .push(num);
                }
            }
        }
        for ((call, sender), nums) in &delivered {
            prop_assert!(
                nums.windows(2).all(|w| w[0] < w[1]),
                "signals of {} on {} out of order or doubled: {:?}",
                sender,
                call,
                nums
            );
        }
        let refused: BTreeSet<(C, u64)> = (0..self.n)
            .flat_map(|c| {
                sim.nodes[c]
                    .events
                    .iter()
                    .filter_map(move |(_, e)| match e {
                        Event::Error { re: Some(re), .. } => Some((c, *re)),
                        _ => None,
                    })
            })
            .collect();
        for (sender, call, num, req) in &self.sent {
            let got = delivered
                .get(&(call.clone(), *sender))
                .is_some_and(|v| v.contains(num));
            let was_refused = refused.contains(&(*sender, *req));
            prop_assert!(
                got != was_refused,
                "signal {} of page {} on {}: delivered {}, refused {}",
                num,
                sender,
                call,
                got,
                was_refused
            );
        }

        // Calls: whoever knew a call sees it end once, with the reason the other end
        // sees; a call that has not ended is active at both ends.
        let mut known: BTreeMap<CallId, BTreeSet<C>> = BTreeMap::new();
        let mut ends: BTreeMap<CallId, BTreeMap<C, Vec<EndReason>>> = BTreeMap::new();
        for c in 0..self.n {
            for (_, e) in &sim.nodes[c].events {
                match e {
                    Event::OutgoingCall { call, .. }
                    | Event::IncomingCall { call }
                    | Event::CallStarted { call, .. } => {
                        known.entry(call.id.clone()).or_default().insert(c);
                    }
                    Event::CallEnded { call, reason, .. } => {
                        ends.entry(call.clone())
                            .or_default()
                            .entry(c)
                            .or_default()
                            .push(*reason);
                    }
                    _ => {}
                }
            }
        }
        for (id, pages) in &known {
            let live = sim.store().call(id).cloned();
            let end = ends.get(id).cloned().unwrap_or_default();
            match live {
                Some(call) => {
                    prop_assert_eq!(call.state, CallState::Active, "call {} still ringing", id);
                    prop_assert!(end.is_empty(), "live call {} ended at {:?}", id, end);
                    for user in [&call.caller.user.id, &call.callee.user.id] {
                        let c = index[user];
                        let here = sim.nodes[c].engine.call_info(id);
                        prop_assert!(
                            here.is_some_and(|x| x.phase == CallPhase::Active),
                            "live call {} not active at page {}",
                            id,
                            c
                        );
                    }
                }
                None => {
                    // A page that ended the call itself shows its own reason; it may
                    // differ only if the server refused that request because the call
                    // had already ended otherwise (both acted at once, or a timer won).
                    let reasons: BTreeSet<EndReason> = end
                        .iter()
                        .filter(|(c, _)| {
                            self.own_ends
                                .get(&(**c, id.clone()))
                                .is_none_or(|req| !refused.contains(&(**c, *req)))
                        })
                        .flat_map(|(_, r)| r.iter().copied())
                        .collect();
                    prop_assert!(
                        reasons.len() <= 1,
                        "call {} ended with {:?} (known to {:?}, own ends {:?})",
                        id,
                        end,
                        pages,
                        self.own_ends
                            .iter()
                            .filter(|((_, call), _)| call == id)
                            .collect::<Vec<_>>()
                    );
                    for c in pages {
                        let mine = end.get(c).cloned().unwrap_or_default();
                        prop_assert_eq!(
                            mine.len(),
                            1,
                            "page {} saw call {} end {:?} times (ends: {:?})",
                            c,
                            id,
                            mine,
                            end
                        );
                        prop_assert!(sim.nodes[*c].engine.call_info(id).is_none());
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the schedules exercised, summed over all cases.
#[derive(Debug, Default)]
struct Coverage {
    cases: usize,
    calls: u64,
    signals: usize,
    resumes: usize,
    ends: usize,
}

fn run_case(
    n: usize,
    nodes: Option<usize>,
    seed: u64,
    ops: &[Op],
    cov: &RefCell<Coverage>,
) -> Result<(), TestCaseError> {
    let mut world = World::new(n, nodes, seed);
    for op in ops {
        world.apply(op)?;
    }
    world.settle();
    world.check_final()?;
    let mut cov = cov.borrow_mut();
    cov.cases += 1;
    cov.calls += world.sim.metric(|m| m.calls_created);
    for c in 0..n {
        for e in world.sim.events(c) {
            match e {
                Event::Signal { .. } => cov.signals += 1,
                Event::Resumed { .. } => cov.resumes += 1,
                Event::CallEnded { .. } => cov.ends += 1,
                _ => {}
            }
        }
    }
    Ok(())
}

/// The runner's configuration: `PROPTEST_CASES` (else `default_cases`) cases from
/// `HOLDFAST_PROP_SEED` (else a fixed seed).
fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    let seed = std::env::var("HOLDFAST_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x401d_fa57);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2_000,
        ..Config::default()
    })
}

/// The schedules must actually exercise what the invariants are about.
fn assert_covered(cov: RefCell<Coverage>) {
    let cov = cov.into_inner();
    if std::env::var("PROP_STATS").is_ok() {
        eprintln!("{cov:?}");
    }
    assert!(cov.calls > cov.cases as u64, "{cov:?}");
    assert!(cov.signals > 10 * cov.cases, "{cov:?}");
    assert!(cov.resumes > cov.cases, "{cov:?}");
    assert!(cov.ends > cov.cases, "{cov:?}");
}

#[test]
fn random_schedules_keep_the_invariants() {
    let mut runner = runner(1024);
    let strategy = (
        2usize..=4,
        any::<u64>(),
        proptest::collection::vec(op(), 1..160),
    );
    let cov = RefCell::new(Coverage::default());
    let result = runner.run(&strategy, |(n, seed, ops)| {
        let ops: Vec<Op> = ops.into_iter().flatten().collect();
        run_case(n, None, seed, &ops, &cov)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_covered(cov);
}

/// The multi-process mode: two or three server nodes over one shared store, each new
/// socket to the next node (so every reconnect moves a session to another node), the
/// nodes' inputs interleaved, and now and then a node killed or restarted. The same
/// invariants hold.
#[test]
fn random_schedules_across_server_nodes_keep_the_invariants() {
    let mut runner = runner(256);
    let strategy = (
        2usize..=4,
        2usize..=3,
        any::<u64>(),
        proptest::collection::vec(paused(cluster_action()), 1..160),
    );
    let cov = RefCell::new(Coverage::default());
    let result = runner.run(&strategy, |(n, nodes, seed, ops)| {
        let ops: Vec<Op> = ops.into_iter().flatten().collect();
        run_case(n, Some(nodes), seed, &ops, &cov)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_covered(cov);
}
