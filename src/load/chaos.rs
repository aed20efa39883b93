//! `holdfast-load chaos`: a soak under random faults, with an oracle.
//!
//! N people, each the real client engine over the native driver behind its own proxy
//! (so its link alone can be broken), act at random from one seed: invite a partner
//! (double and crossed invites happen by themselves, as both sides of a pair pick
//! invites), invite a stranger (busy), accept, decline, ignore (no-answer), cancel,
//! hang up, change presence, send numbered payloads in every active call, lose the link
//! (clean close, reset, half-open, black hole of 2–8 s, latency spike of 0.3–2.5 s for 2–8 s) or reload the tab (the engine
//! is thrown away and a new one starts from its rejoin records and rejoins).
//!
//! Every person writes what it saw into one [`Ledger`]. After the run, faults stop,
//! ringing calls are withdrawn and the system is given a bounded settle time; then the
//! oracle counts ([`ChaosReport`]):
//! - `calls_lost`: calls that ended for a reason neither participant chose
//!   (`reconnect-failed`, `server-shutdown`, `call-moved`): every fault here is shorter
//!   than the grace window and every reload rejoins, so both always came back in time;
//! - `duplicate_calls`: a person's active-call map holding two calls with one peer, or
//!   the two people of a pair holding different calls with each other at the end;
//! - `stuck_calls`: a call that one side still holds after the other ended it, plus
//!   calls the server still counts that no pair of people holds;
//! - `messages_lost` / `messages_doubled`: per call and sender, every payload the
//!   server accepted arrives exactly once and in order (one arriving after a higher
//!   number counts as lost). Payloads whose fate a reload made unknowable (still in the
//!   thrown-away engine's outbox, or relayed to the thrown-away page) are not owed, and
//!   neither are those relayed to a session that a rejoin then took the call over from
//!   (`call-started` with `rejoined: true`): the server does not move them.
//!
//! Restarts (`--restarts K`) are spread evenly over the run, SIGKILL and SIGTERM
//! alternating; they need a durable store (`--store redis://…`) for calls to outlive
//! them. `--nodes` above 1 needs several server processes.

use super::proxy::{Action, Proxy};
use super::restart::RestartSignal;
use super::target::{metric, Server, ServerSpec};
use crate::engine::client::{CallPhase, ClientConfig, Event, RejoinRecord};
use crate::engine::SplitMix;
use crate::native::NativeClient;
use crate::protocol::{CallId, EndReason, PresenceStatus};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a chaos run is asked to do.
#[derive(Debug, Clone)]
pub struct ChaosSettings {
    pub sessions: usize,
    pub duration: Duration,
    pub restarts: usize,
    pub store: Option<String>,
    pub nodes: usize,
    pub seed: u64,
    /// Longest wait, after the run, for links, calls and payloads to settle.
    pub settle: Duration,
}

impl ChaosSettings {
    /// Refuses what this build cannot do, with a message saying why.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes > 1 {
            return Err(format!(
                "--nodes {}: the server runs as a single process in this build; \
                 several nodes need a shared durable store and node routing",
                self.nodes
            ));
        }
        if self.restarts > 0 && self.store.is_none() {
            return Err(format!(
                "--restarts {}: a restart keeps calls only with a durable store; \
                 pass --store redis://…",
                self.restarts
            ));
        }
        if self.sessions < 2 {
            return Err("--sessions must be at least 2".into());
        }
        Ok(())
    }
}

/// The oracle's counts. The field names are the report's contract.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ChaosReport {
    pub seed: u64,
    pub sessions: usize,
    pub duration_s: u64,
    pub calls_started: u64,
    pub messages_sent: u64,
    pub server_restarts: u64,
    pub calls_lost: u64,
    pub duplicate_calls: u64,
    pub stuck_calls: u64,
    pub messages_lost: u64,
    pub messages_doubled: u64,
    pub ends_by_reason: BTreeMap<String, u64>,
    /// Calls a page left by reloading before the server could know (while they rang,
    /// so with no rejoin token yet, or with its own end still unsent) and did not take
    /// back: not counted as lost or stuck (see [`Ledger::abandoned`]).
    pub calls_abandoned_by_reload: u64,
    /// Errors the server reported outside any request (e.g. `bad-frame`), by code:
    /// not counted by the oracle (what they cost shows in the five counts).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Faults injected, by kind (link faults and reloads).
    pub faults: BTreeMap<String, u64>,
    /// A few examples of what the oracle counted, to start a diagnosis from.
    pub samples: Vec<String>,
}

impl ChaosReport {
    /// The five counts that must be zero.
    pub fn violations(&self) -> u64 {
        self.calls_lost
            + self.duplicate_calls
            + self.stuck_calls
            + self.messages_lost
            + self.messages_doubled
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "chaos soak: seed {}, {} sessions, {} s\n",
            self.seed, self.sessions, self.duration_s
        );
        let rows: [(&str, u64); 8] = [
            ("calls_started", self.calls_started),
            ("messages_sent", self.messages_sent),
            ("server_restarts", self.server_restarts),
            ("calls_lost", self.calls_lost),
            ("duplicate_calls", self.duplicate_calls),
            ("stuck_calls", self.stuck_calls),
            ("messages_lost", self.messages_lost),
            ("messages_doubled", self.messages_doubled),
        ];
        for (k, v) in rows {
            s += &format!("  {k:<18} {v}\n");
        }
        s += &format!(
            "  (calls a reload left before the server knew, not owed: {})\n",
            self.calls_abandoned_by_reload
        );
        if !self.errors_by_code.is_empty() {
            s += "  errors outside requests (not counted):\n";
            for (k, v) in &self.errors_by_code {
                s += &format!("    {k:<16} {v}\n");
            }
        }
        s += "  ends by reason:\n";
        for (k, v) in &self.ends_by_reason {
            s += &format!("    {k:<16} {v}\n");
        }
        s += "  faults injected:\n";
        for (k, v) in &self.faults {
            s += &format!("    {k:<16} {v}\n");
        }
        for x in &self.samples {
            s += &format!("  sample: {x}\n");
        }
        s
    }
}

/// Per call and sender: what was sent, what the server refused, what arrived.
#[derive(Debug, Default)]
struct Stream {
    sent: u64,
    refused: HashSet<u64>,
    /// Numbers whose delivery a reload made unknowable.
    uncertain: HashSet<u64>,
    counts: HashMap<u64, u32>,
    highest: u64,
    reordered: u64,
}

/// One call as the people saw it.
#[derive(Debug, Default)]
struct CallView {
    /// Who took part (user ids), and whether each saw it active.
    people: BTreeMap<usize, bool>,
    /// The end each person saw (an end reason's wire name, or `call-moved`).
    ends: BTreeMap<usize, &'static str>,
    /// When someone first saw it (ms into the run).
    first_seen_ms: Option<u128>,
    /// Its two people, as the first to see it named them.
    pair: Option<(usize, usize)>,
}

/// What everyone saw, written as it happens.
#[derive(Default)]
struct Ledger {
    calls: HashMap<CallId, CallView>,
    streams: HashMap<(CallId, usize), Stream>,
    duplicates: u64,
    faults: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
    sessions_lost: u64,
    /// Per call: what each person did and saw with it, in order (to explain a count).
    history: HashMap<CallId, Vec<String>>,
    /// Per person: link-level happenings (faults, reloads, resumes, session losses).
    person_log: HashMap<usize, Vec<String>>,
    /// When the run started (history times are relative to it).
    start: Option<Instant>,
    /// (call, person): the person's page was reloaded and the new page does not hold
    /// the call (yet): what the peer sends meanwhile goes to the dead page.
    away: HashSet<(CallId, usize)>,
    /// (call, person): the person ended the call (hang-up, cancel, decline). A page
    /// drops what arrives for a call it ended, so the peer's payloads that had not
    /// arrived by then (crossing the end, e.g. both queued during an outage) and any
    /// sent after are not owed.
    ended_by: HashSet<(CallId, usize)>,
    /// (call, person): reloaded while the call rang, so the new page has no rejoin
    /// token for it (a ringing call has none), or soon after ending it while messages
    /// were unacknowledged (the end may have died in the old page's outbox). Unless
    /// that page takes it back by inviting the same person again, the call ends
    /// `reconnect-failed` (or `cancelled`) when the server's window runs out: the
    /// page never came back to it.
    abandoned: HashSet<(CallId, usize)>,
    /// Per person: when (ms into the run) a page was reloaded with requests still
    /// unacknowledged. An invite among them may have become a call the new page never
    /// learns of: crossed with the peer's invite, the server starts it at once, and the
    /// peer relays into the dead page's session.
    blind_reloads: HashMap<usize, Vec<u128>>,
}

impl Ledger {
    fn sample(&mut self, s: String) {
        if self.samples.len() < 8 {
            self.samples.push(s);
        }
    }

    fn ms(&self) -> u128 {
        self.start.map_or(0, |t| t.elapsed().as_millis())
    }

    /// Notes what happened to one call.
    fn note(&mut self, call: &str, who: usize, generation: u64, what: String) {
        let line = format!("{:>6} ms  {who}/g{generation}  {what}", self.ms());
        let h = self.history.entry(call.to_owned()).or_default();
        if h.len() < 400 {
            h.push(line);
        }
    }

    /// Notes what happened to one person's link or page.
    fn note_person(&mut self, who: usize, generation: u64, what: String) {
        let line = format!("{:>6} ms  {who}/g{generation}  {what}", self.ms());
        let h = self.person_log.entry(who).or_default();
        if h.len() < 2_000 {
            h.push(line);
        }
    }

    /// The history of one call and of both people's links, for a diagnosis.
    fn explain(&self, call: &str) -> String {
        let mut s = format!("history of call {call}:\n");
        for line in self.history.get(call).into_iter().flatten() {
            s += &format!("  {line}\n");
        }
        if let Some(v) = self.calls.get(call) {
            for p in v.people.keys() {
                s += &format!(" person {p}:\n");
                for line in self.person_log.get(p).into_iter().flatten() {
                    s += &format!("  {line}\n");
                }
            }
        }
        s
    }
}

/// The call an event is about, if any.
fn call_of(ev: &Event) -> Option<&str> {
    Some(match ev {
        Event::OutgoingCall { call, .. }
        | Event::IncomingCall { call }
        | Event::CallStarted { call, .. } => &call.id,
        Event::ParticipantDisconnected { call, .. }
        | Event::ParticipantReconnected { call, .. }
        | Event::CallEnded { call, .. }
        | Event::CallMoved { call }
        | Event::RejoinCountdown { call, .. }
        | Event::RejoinExpired { call }
        | Event::RejoinWithdrawn { call, .. } => call,
        Event::RejoinAvailable { offer } => &offer.call,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Run,
    Settle,
    Stop,
}

struct Person {
    idx: usize,
    user: String,
    partner: usize,
    url: String,
    proxy: Proxy,
    rng: SplitMix,
    ledger: Arc<Mutex<Ledger>>,
    people: usize,
    prefix: String,
    /// How many times this person's tab was reloaded (the engine's generation).
    generation: u64,
    /// Calls this page ended itself (hang-up, cancel, decline), and when: a reload
    /// with unacknowledged messages may have thrown the end away before it was sent.
    local_ends: Vec<(CallId, Instant)>,
}

fn user_of(prefix: &str, idx: usize) -> String {
    format!("{prefix}-{idx}")
}

fn idx_of(prefix: &str, user: &str) -> Option<usize> {
    user.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

impl Person {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.next_f64() < p
    }

    fn pick(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn config(&self, generation: u64) -> ClientConfig {
        let mut config = ClientConfig::new(self.user.clone());
        config.seed = self.rng.0 ^ generation;
        config
    }

    fn fault(&self, what: &str) {
        let mut l = self.ledger.lock().expect("ledger");
        *l.faults.entry(what.into()).or_default() += 1;
        l.note_person(self.idx, self.generation, format!("fault: {what}"));
    }

    /// This page ended `call`: what the peer sent that has not arrived is not owed.
    fn ended_here(&self, call: &str) {
        let mut l = self.ledger.lock().expect("ledger");
        l.ended_by.insert((call.to_owned(), self.idx));
        let peer = l
            .calls
            .get(call)
            .and_then(|v| v.people.keys().find(|p| **p != self.idx).copied());
        if let Some(peer) = peer {
            if let Some(s) = l.streams.get_mut(&(call.to_owned(), peer)) {
                for n in 1..=s.sent {
                    if !s.counts.contains_key(&n) {
                        s.uncertain.insert(n);
                    }
                }
            }
        }
    }

    fn note(&self, call: &str, what: String) {
        self.ledger
            .lock()
            .expect("ledger")
            .note(call, self.idx, self.generation, what);
    }

    async fn run(mut self, mut stage: watch::Receiver<Stage>) -> NativeClient {
        let mut client = NativeClient::start(&self.url, self.config(0), Vec::new());
        // Numbered payload requests in flight: request seq -> (call, n).
        let mut requests: HashMap<u64, (CallId, u64)> = HashMap::new();
        let mut unblock_at: Option<Instant> = None;
        let mut delay_until: Option<Instant> = None;
        let mut next_act = Instant::now() + Duration::from_millis(200 + self.pick(800));
        let mut next_send = Instant::now() + Duration::from_millis(300);
        let mut reload = false;
        loop {
            if reload {
                reload = false;
                client = self.reload(client, &mut requests).await;
            }
            let now_stage = *stage.borrow_and_update();
            if now_stage == Stage::Stop {
                break;
            }
            let wake = [Some(next_act), Some(next_send), unblock_at, delay_until]
                .into_iter()
                .flatten()
                .min()
                .expect("two are always set");
            tokio::select! {
                ev = client.recv_event() => {
                    let Some((_, ev)) = ev else { break };
                    self.on_event(&client, &mut requests, ev, now_stage).await;
                }
                _ = stage.changed() => {
                    if *stage.borrow() == Stage::Settle {
                        self.proxy.set_blackhole_new(false);
                        unblock_at = None;
                        self.proxy.set_delay(Duration::ZERO);
                        delay_until = None;
                        self.withdraw_ringing(&client).await;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if unblock_at.is_some_and(|t| t <= now) {
                        self.proxy.set_blackhole_new(false);
                        unblock_at = None;
                    }
                    if delay_until.is_some_and(|t| t <= now) {
                        self.proxy.set_delay(Duration::ZERO);
                        delay_until = None;
                    }
                    if next_send <= now {
                        next_send = now + Duration::from_millis(250 + self.pick(500));
                        if now_stage == Stage::Run {
                            self.send_payloads(&client, &mut requests).await;
                        }
                    }
                    if next_act <= now {
                        next_act = now + Duration::from_millis(300 + self.pick(1_200));
                        if now_stage == Stage::Run {
                            reload = self.act(&client, &mut unblock_at, &mut delay_until).await;
                        }
                    }
                }
            }
        }
        client
    }

    /// One random action. True: reload the tab.
    async fn act(
        &mut self,
        client: &NativeClient,
        unblock_at: &mut Option<Instant>,
        delay_until: &mut Option<Instant>,
    ) -> bool {
        let calls: Vec<_> = client
            .with(|e, _| e.calls().map(|c| (c.id.clone(), c.phase)).collect())
            .await;
        let roll = self.pick(1_000);
        match roll {
            // A latency spike: 300 ms to 2.5 s on every write for 2 to 8 s, about one
            // every 60 s per person.
            0..=4 => {
                let ms = 300 + self.pick(2_200);
                self.proxy.set_delay(Duration::from_millis(ms));
                *delay_until =
                    Some(Instant::now() + Duration::from_millis(2_000 + self.pick(6_000)));
                self.fault("latency-spike");
                false
            }
            // Link faults: about one every 20 s per person.
            5..=19 => {
                let (action, what) = match self.pick(4) {
                    0 => (Action::Close, "close"),
                    1 => (Action::Reset, "reset"),
                    2 => (Action::HalfOpen, "half-open"),
                    _ => (Action::Blackhole, "black-hole"),
                };
                if action == Action::Blackhole {
                    self.proxy.set_blackhole_new(true);
                    *unblock_at =
                        Some(Instant::now() + Duration::from_millis(2_000 + self.pick(6_000)));
                }
                self.proxy.apply_all(action);
                self.fault(what);
                false
            }
            // A tab reload: about one every 60 s per person.
            20..=24 => {
                self.fault("reload");
                true
            }
            25..=44 => {
                let status = if self.chance(0.5) {
                    PresenceStatus::Busy
                } else {
                    PresenceStatus::Available
                };
                let _ = client.with(move |e, now| e.set_status(status, now)).await;
                false
            }
            _ => {
                for (id, phase) in calls.iter() {
                    let id = id.clone();
                    let id2 = id.clone();
                    match phase {
                        CallPhase::Incoming => {
                            let r = self.pick(10);
                            if r < 7 {
                                let r = client.with(move |e, now| e.accept(&id, now)).await;
                                self.note(&id2, format!("accept: {r:?}"));
                            } else if r < 9 {
                                let r = client.with(move |e, now| e.decline(&id, now)).await;
                                self.note(&id2, format!("decline: {r:?}"));
                                if r.is_ok() {
                                    self.ended_here(&id2);
                                }
                                self.local_ends.push((id2, Instant::now()));
                            } // else: let it ring out (no-answer)
                            return false;
                        }
                        CallPhase::Outgoing if self.chance(0.1) => {
                            let r = client.with(move |e, now| e.hangup(&id, now)).await;
                            self.note(&id2, format!("cancel: {r:?}"));
                            if r.is_ok() {
                                self.ended_here(&id2);
                            }
                            self.local_ends.push((id2, Instant::now()));
                            return false;
                        }
                        CallPhase::Active if self.chance(0.06) => {
                            let r = client.with(move |e, now| e.hangup(&id, now)).await;
                            self.note(&id2, format!("hang up: {r:?}"));
                            if r.is_ok() {
                                self.ended_here(&id2);
                            }
                            self.local_ends.push((id2, Instant::now()));
                            return false;
                        }
                        _ => {}
                    }
                }
                if calls.is_empty() && self.chance(0.5) {
                    let peer = if self.chance(0.9) {
                        self.partner
                    } else {
                        self.pick(self.people as u64) as usize
                    };
                    if peer != self.idx {
                        let who = peer;
                        let peer = user_of(&self.prefix, peer);
                        let r = client
                            .with(move |e, now| e.call(&peer, None, None, now))
                            .await;
                        let mut l = self.ledger.lock().expect("ledger");
                        l.note_person(self.idx, self.generation, format!("invite {who}: {r:?}"));
                    }
                }
                false
            }
        }
    }

    /// The engine is thrown away; a new one starts from the stored rejoin records.
    async fn reload(
        &mut self,
        client: NativeClient,
        requests: &mut HashMap<u64, (CallId, u64)>,
    ) -> NativeClient {
        let me = self.idx;
        let records: Vec<RejoinRecord> = client.records().await;
        let held: Vec<(CallId, String)> = client
            .with(|e, _| {
                e.calls()
                    .map(|c| (c.id.clone(), c.peer.id.clone()))
                    .collect()
            })
            .await;
        let unacked = client.with(|e, _| e.unacked_len()).await;
        client.close_tab().await;
        {
            let mut l = self.ledger.lock().expect("ledger");
            if unacked > 0 {
                let at = l.ms();
                l.blind_reloads.entry(me).or_default().push(at);
            }
            let calls: Vec<&str> = records.iter().map(|r| r.call.as_str()).collect();
            l.note_person(
                me,
                self.generation,
                format!("reload with records {calls:?}, {unacked} unacknowledged"),
            );
            for r in &records {
                l.note(&r.call, me, self.generation, "reload: record kept".into());
            }
            // Payloads still in the old engine's outbox may or may not have reached
            // the server (the newest `unacked` requests).
            let mut mine: Vec<(u64, (CallId, u64))> = requests.drain().collect();
            mine.sort_by_key(|(re, _)| *re);
            for (_, (call, n)) in mine.iter().rev().take(unacked) {
                if let Some(s) = l.streams.get_mut(&(call.clone(), me)) {
                    s.uncertain.insert(*n);
                }
            }
            // Payloads relayed to the old page may have died with it: the peer's
            // not yet seen, and (see `send_payloads`) what it sends until the new page
            // holds the call again.
            let mut calls: Vec<(CallId, String, bool)> = records
                .iter()
                .map(|r| (r.call.clone(), r.peer.id.clone(), true))
                .collect();
            for (call, peer) in held {
                if !calls.iter().any(|(c, _, _)| *c == call) {
                    calls.push((call, peer, false));
                }
            }
            // Ends this page sent lately that may still have been in its outbox: the
            // server (and the peer) may never hear them.
            self.local_ends
                .retain(|(_, at)| at.elapsed() < Duration::from_secs(30));
            if unacked > 0 {
                for (call, _) in &self.local_ends {
                    let peer = l
                        .calls
                        .get(call)
                        .and_then(|v| v.people.keys().find(|p| **p != me).copied());
                    if let Some(peer) = peer {
                        if !calls.iter().any(|(c, _, _)| c == call) {
                            calls.push((call.clone(), user_of(&self.prefix, peer), false));
                        }
                    }
                }
            }
            self.local_ends.clear();
            for (call, peer, recorded) in calls {
                let Some(peer) = idx_of(&self.prefix, &peer) else {
                    continue;
                };
                let s = l.streams.entry((call.clone(), peer)).or_default();
                for n in s.highest + 1..=s.sent {
                    s.uncertain.insert(n);
                }
                l.away.insert((call.clone(), me));
                if !recorded {
                    l.note(
                        &call,
                        me,
                        self.generation,
                        "reload: no record (it rang, or its end may not have been sent)".into(),
                    );
                    l.abandoned.insert((call, me));
                }
            }
        }
        self.generation += 1;
        NativeClient::start(&self.url, self.config(self.generation), records)
    }

    async fn send_payloads(
        &mut self,
        client: &NativeClient,
        requests: &mut HashMap<u64, (CallId, u64)>,
    ) {
        let active: Vec<(CallId, String)> = client
            .with(|e, _| {
                e.calls()
                    .filter(|c| c.phase == CallPhase::Active)
                    .map(|c| (c.id.clone(), c.peer.id.clone()))
                    .collect()
            })
            .await;
        for (call, peer) in active {
            let peer = idx_of(&self.prefix, &peer);
            let n = {
                let mut l = self.ledger.lock().expect("ledger");
                let s = l.streams.entry((call.clone(), self.idx)).or_default();
                s.sent + 1
            };
            let id = call.clone();
            let sent = client
                .with(move |e, now| e.send(&id, json!({ "n": n }), now))
                .await;
            let mut l = self.ledger.lock().expect("ledger");
            l.note(
                &call,
                self.idx,
                self.generation,
                format!("send {n}: {sent:?}"),
            );
            if let Ok(re) = sent {
                let away = peer.is_some_and(|p| {
                    l.away.contains(&(call.clone(), p)) || l.ended_by.contains(&(call.clone(), p))
                });
                let s = l.streams.entry((call.clone(), self.idx)).or_default();
                s.sent = n;
                if away {
                    s.uncertain.insert(n);
                }
                requests.insert(re, (call, n));
                if requests.len() > 512 {
                    // Old requests were answered long ago; keep the map small.
                    let oldest = *requests.keys().min().expect("not empty");
                    requests.remove(&oldest);
                }
            }
        }
    }

    async fn withdraw_ringing(&mut self, client: &NativeClient) {
        let _ = client
            .with(|e, now| {
                let ringing: Vec<_> = e
                    .calls()
                    .filter(|c| c.phase != CallPhase::Active)
                    .map(|c| c.id.clone())
                    .collect();
                for id in ringing {
                    let _ = e.hangup(&id, now);
                }
            })
            .await;
    }

    async fn on_event(
        &mut self,
        client: &NativeClient,
        requests: &mut HashMap<u64, (CallId, u64)>,
        ev: Event,
        stage: Stage,
    ) {
        let me = self.idx;
        {
            let mut l = self.ledger.lock().expect("ledger");
            let g = self.generation;
            match &ev {
                Event::Signal {
                    call,
                    from,
                    payload,
                } => {
                    let n = payload.get("n");
                    l.note(call, me, g, format!("got {n:?} from {from}"));
                }
                Event::Error {
                    re: Some(re), code, ..
                } => {
                    if let Some((call, n)) = requests.get(re) {
                        l.note(call, me, g, format!("send {n} refused: {code:?}"));
                    } else {
                        l.note_person(me, g, format!("{ev:?}"));
                    }
                }
                Event::Error { re: None, code, .. } => {
                    *l.errors.entry(code.as_str().to_owned()).or_default() += 1;
                    l.note_person(me, g, format!("{ev:?}"));
                }
                ev => match call_of(ev) {
                    Some(call) => {
                        let mut what = format!("{ev:?}");
                        what.truncate(300);
                        l.note(call, me, g, what);
                    }
                    None => {
                        if !matches!(ev, Event::Presence { .. } | Event::PresenceChanged { .. }) {
                            let mut what = format!("{ev:?}");
                            what.truncate(300);
                            l.note_person(me, g, what);
                        }
                    }
                },
            }
        }
        match ev {
            Event::RejoinAvailable { offer } => {
                let id = offer.call.clone();
                let _ = client.with(move |e, now| e.rejoin(&id, now)).await;
            }
            Event::IncomingCall { call } if stage != Stage::Run => {
                let id = call.id.clone();
                let _ = client.with(move |e, now| e.hangup(&id, now)).await;
                self.saw(&call.id, &call.peer.id, false);
            }
            Event::IncomingCall { call } | Event::OutgoingCall { call, .. } => {
                // An answer about a call held by another session is not this page's.
                let id = call.id.clone();
                let held = client.with(move |e, _| e.call_info(&id).is_some()).await;
                let active = call.phase == CallPhase::Active && held;
                self.saw(&call.id, &call.peer.id, active);
                self.check_duplicates(client, &call.peer.id).await;
            }
            Event::CallStarted { call, rejoined } => {
                {
                    let mut l = self.ledger.lock().expect("ledger");
                    l.away.remove(&(call.id.clone(), me));
                    l.abandoned.remove(&(call.id.clone(), me));
                    if rejoined {
                        // Back in the call: an end this person saw on an earlier page
                        // never reached the server when that page's hang-up died
                        // with it (reloaded with the hang-up unacknowledged), so the
                        // call lived on and the invite of the new page took it back.
                        if let Some(v) = l.calls.get_mut(&call.id) {
                            v.ends.remove(&me);
                        }
                        l.ended_by.remove(&(call.id.clone(), me));
                        // This session takes over a side another session held (a page
                        // since thrown away, or a session lost). What the peer relayed
                        // to that session and did not reach us is gone with it; the
                        // server does not move it. A reload while the call rang can
                        // leave such payloads that the reload itself could not mark:
                        // the page's invite was still unacknowledged, so it never knew
                        // the call.
                        if let Some(peer) = idx_of(&self.prefix, &call.peer.id) {
                            let s = l.streams.entry((call.id.clone(), peer)).or_default();
                            for n in 1..=s.sent {
                                if !s.counts.contains_key(&n) {
                                    s.uncertain.insert(n);
                                }
                            }
                        }
                    }
                }
                self.saw(&call.id, &call.peer.id, true);
                self.check_duplicates(client, &call.peer.id).await;
            }
            Event::CallEnded { call, reason, .. } => {
                let mut l = self.ledger.lock().expect("ledger");
                l.calls
                    .entry(call)
                    .or_default()
                    .ends
                    .insert(me, reason.as_str());
            }
            Event::CallMoved { call } => {
                let mut l = self.ledger.lock().expect("ledger");
                l.sample(format!("{} saw call {call} moved away", self.user));
                l.calls
                    .entry(call)
                    .or_default()
                    .ends
                    .insert(me, "call-moved");
            }
            Event::SessionLost { unconfirmed } => {
                let mut l = self.ledger.lock().expect("ledger");
                l.sessions_lost += 1;
                l.sample(format!(
                    "{} lost its session ({unconfirmed} unconfirmed)",
                    self.user
                ));
            }
            Event::Signal {
                call,
                from,
                payload,
            } => {
                let (Some(n), Some(sender)) = (
                    payload.get("n").and_then(|n| n.as_u64()),
                    idx_of(&self.prefix, &from),
                ) else {
                    return;
                };
                let mut l = self.ledger.lock().expect("ledger");
                let s = l.streams.entry((call, sender)).or_default();
                *s.counts.entry(n).or_default() += 1;
                if n < s.highest {
                    s.reordered += 1;
                }
                s.highest = s.highest.max(n);
            }
            Event::Error { re: Some(re), .. } => {
                if let Some((call, n)) = requests.remove(&re) {
                    let mut l = self.ledger.lock().expect("ledger");
                    if let Some(s) = l.streams.get_mut(&(call, me)) {
                        s.refused.insert(n);
                    }
                }
            }
            _ => {}
        }
    }

    fn saw(&self, call: &CallId, peer: &str, active: bool) {
        let mut l = self.ledger.lock().expect("ledger");
        let now = l.ms();
        let peer = idx_of(&self.prefix, peer);
        let v = l.calls.entry(call.clone()).or_default();
        v.first_seen_ms.get_or_insert(now);
        if let Some(peer) = peer {
            v.pair.get_or_insert((self.idx, peer));
        }
        let seen = v.people.entry(self.idx).or_default();
        *seen |= active;
    }

    async fn check_duplicates(&self, client: &NativeClient, peer: &str) {
        let peer = peer.to_owned();
        let with_peer: Vec<CallId> = client
            .with(move |e, _| {
                e.calls()
                    .filter(|c| c.peer.id == peer)
                    .map(|c| c.id.clone())
                    .collect()
            })
            .await;
        if with_peer.len() > 1 {
            let mut l = self.ledger.lock().expect("ledger");
            l.duplicates += 1;
            l.sample(format!(
                "{} holds two calls with one peer: {with_peer:?}",
                self.user
            ));
        }
    }
}

/// Runs the soak and counts.
pub async fn chaos(spec: &ServerSpec, settings: &ChaosSettings) -> io::Result<ChaosReport> {
    settings.check().map_err(io::Error::other)?;
    eprintln!(
        "holdfast-load chaos: seed {} ({} sessions, {:?}); rerun with --seed {} to repeat",
        settings.seed, settings.sessions, settings.duration, settings.seed
    );
    let mut server = Server::start(spec).await?;
    let prefix = super::fleet::run_prefix("chaos");
    let ledger = Arc::new(Mutex::new(Ledger {
        start: Some(Instant::now()),
        ..Ledger::default()
    }));
    let (stage_tx, stage_rx) = watch::channel(Stage::Run);
    let n = settings.sessions.div_ceil(2) * 2;
    let mut master = SplitMix(settings.seed);
    let mut tasks = Vec::with_capacity(n);
    for idx in 0..n {
        let proxy = Proxy::start(server.addr).await?;
        let url = proxy.ws_url(&server.path);
        let person = Person {
            idx,
            user: user_of(&prefix, idx),
            partner: idx ^ 1,
            url,
            proxy,
            rng: SplitMix(master.next_u64()),
            ledger: ledger.clone(),
            people: n,
            prefix: prefix.clone(),
            generation: 0,
            local_ends: Vec::new(),
        };
        tasks.push(tokio::spawn(person.run(stage_rx.clone())));
    }
    // Restarts spread evenly over the run, SIGKILL and SIGTERM alternating; the new
    // process takes over the port (the proxies connect to it) and the store.
    let run_start = Instant::now();
    let mut server_restarts = 0u64;
    for i in 0..settings.restarts {
        let at = settings
            .duration
            .mul_f64((i + 1) as f64 / (settings.restarts + 1) as f64);
        tokio::time::sleep_until(run_start + at).await;
        let signal = if i % 2 == 0 {
            RestartSignal::Kill
        } else {
            RestartSignal::Term
        };
        eprintln!(
            "holdfast-load chaos: restart {} of {} ({})",
            i + 1,
            settings.restarts,
            signal.as_str()
        );
        {
            let mut l = ledger.lock().expect("ledger");
            let line = format!("{:>6} ms  server restart ({})", l.ms(), signal.as_str());
            l.samples.push(line);
        }
        let addr = server.addr;
        let _ = server
            .signal_and_wait(signal.number(), Duration::from_secs(15))
            .await;
        drop(server);
        server = Server::start_on(spec, addr).await?;
        server_restarts += 1;
    }
    tokio::time::sleep_until(run_start + settings.duration).await;
    eprintln!("holdfast-load chaos: settling…");
    let _ = stage_tx.send(Stage::Settle);
    // Settle: wait until every owed payload arrived, or the bound.
    let settle_until = Instant::now() + settings.settle;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pending = owed_pending(&ledger.lock().expect("ledger"));
        if pending == 0 || Instant::now() >= settle_until {
            break;
        }
    }
    // A little more for the last ends to reach both sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = server.metrics().await.ok();
    let _ = stage_tx.send(Stage::Stop);
    let mut clients = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(20), t).await {
            clients.push(Some(c));
        } else {
            clients.push(None);
        }
    }
    // Final active-call maps: (call, peer) per person.
    let mut held: Vec<Vec<(CallId, String)>> = Vec::with_capacity(n);
    for c in &clients {
        let calls = match c {
            Some(c) => {
                c.with(|e, _| {
                    e.calls()
                        .map(|c| (c.id.clone(), c.peer.id.clone()))
                        .collect()
                })
                .await
            }
            None => Vec::new(),
        };
        held.push(calls);
    }
    let server_calls = metrics.as_ref().map(|m| {
        metric(m, "holdfast_calls{state=\"active\"}").unwrap_or(0.0)
            + metric(m, "holdfast_calls{state=\"ringing\"}").unwrap_or(0.0)
    });
    let mut report = {
        let l = ledger.lock().expect("ledger");
        let (report, bad) = tally(&l, &held, &prefix, server_calls);
        // The first few calls the oracle counted, with their histories, to start a
        // diagnosis from (a rerun with the same seed makes the same choices).
        for call in bad.iter().take(3) {
            eprintln!("{}", l.explain(call));
        }
        report
    };
    report.seed = settings.seed;
    report.server_restarts = server_restarts;
    report.sessions = n;
    report.duration_s = settings.duration.as_secs();
    for c in clients.into_iter().flatten() {
        c.close_tab().await;
    }
    server.stop().await;
    Ok(report)
}

/// Payloads owed and not yet arrived.
fn owed_pending(l: &Ledger) -> u64 {
    l.streams
        .values()
        .map(|s| {
            (1..=s.sent)
                .filter(|n| {
                    !s.refused.contains(n) && !s.uncertain.contains(n) && !s.counts.contains_key(n)
                })
                .count() as u64
        })
        .sum()
}

/// How long after a reload with unacknowledged requests a call they may have started
/// can first be seen by its other person (an answer crossing a restart takes seconds).
const BLIND_RELOAD_WINDOW_MS: u128 = 30_000;

fn tally(
    l: &Ledger,
    held: &[Vec<(CallId, String)>],
    prefix: &str,
    server_calls: Option<f64>,
) -> (ChaosReport, std::collections::BTreeSet<CallId>) {
    let mut bad = std::collections::BTreeSet::new();
    let mut r = ChaosReport {
        duplicate_calls: l.duplicates,
        faults: l.faults.clone(),
        errors_by_code: l.errors.clone(),
        samples: l.samples.clone(),
        ..ChaosReport::default()
    };
    let holds = |p: usize, call: &str| {
        held.get(p)
            .is_some_and(|h| h.iter().any(|(c, _)| c == call))
    };
    let mut samples = Vec::new();
    let abandoned = |id: &str, v: &CallView| {
        v.people
            .keys()
            .any(|p| l.abandoned.contains(&(id.to_owned(), *p)))
    };
    // Abandoned calls the server may still hold (until its window runs out).
    let mut abandoned_open = 0usize;
    for (id, v) in &l.calls {
        let both_active = v.people.values().filter(|a| **a).count() >= 2;
        if both_active {
            r.calls_started += 1;
        }
        if abandoned(id, v) {
            r.calls_abandoned_by_reload += 1;
            if v.ends.is_empty() {
                abandoned_open += 1;
            }
            if let Some(reason) = v.ends.values().next() {
                *r.ends_by_reason.entry((*reason).into()).or_default() += 1;
            }
            continue;
        }
        if let Some(reason) = v.ends.values().next() {
            *r.ends_by_reason.entry((*reason).into()).or_default() += 1;
            let unchosen = [
                EndReason::ReconnectFailed.as_str(),
                EndReason::ServerShutdown.as_str(),
                "call-moved",
            ];
            if unchosen.contains(reason) {
                r.calls_lost += 1;
                bad.insert(id.clone());
                samples.push(format!("call {id} lost: {reason}"));
            }
            // One side ended it; anyone who still holds it is stuck.
            if v.people.keys().any(|p| holds(*p, id)) {
                r.stuck_calls += 1;
                bad.insert(id.clone());
                samples.push(format!("call {id} ended ({reason}) but still held"));
            }
        }
    }
    // The pair holds different calls with each other.
    let mut pair_calls: HashMap<(usize, usize), HashSet<&str>> = HashMap::new();
    let mut held_by_both = 0usize;
    for (p, calls) in held.iter().enumerate() {
        for (call, peer) in calls {
            if let Some(q) = idx_of(prefix, peer) {
                pair_calls
                    .entry((p.min(q), p.max(q)))
                    .or_default()
                    .insert(call);
                if p < q && holds(q, call) {
                    held_by_both += 1;
                }
            }
        }
    }
    for ((a, b), calls) in &pair_calls {
        if calls.len() > 1 {
            r.duplicate_calls += calls.len() as u64 - 1;
            samples.push(format!("{a} and {b} hold {calls:?}"));
        }
    }
    for (p, calls) in held.iter().enumerate() {
        for (call, peer) in calls {
            let q = idx_of(prefix, peer);
            let left = l.calls.get(call).is_some_and(|v| abandoned(call, v));
            if q.is_some_and(|q| !holds(q, call)) && !left {
                bad.insert(call.clone());
            }
            if q.is_some_and(|q| !holds(q, call)) && !left && samples.len() < 12 {
                let ends = l
                    .calls
                    .get(call)
                    .map(|v| format!("{:?}, seen by {:?}", v.ends, v.people));
                samples.push(format!(
                    "{p} holds call {call} with {peer}, who does not (ends {})",
                    ends.unwrap_or_default()
                ));
            }
        }
    }
    if let Some(server) = server_calls {
        let extra = (server as usize).saturating_sub(held_by_both + abandoned_open) as u64;
        if extra > 0 {
            r.stuck_calls += extra;
            samples.push(format!(
                "the server holds {server} calls, both people hold {held_by_both}"
            ));
        }
    }
    // A call the recipient never saw on any page, started shortly after a reload of
    // theirs with requests unacknowledged: its invite died with the page (see
    // `Ledger::blind_reloads`), and what the peer sent went to the dead session.
    let never_known = |call: &str, sender: usize| {
        let Some(v) = l.calls.get(call) else {
            return false;
        };
        let Some(recipient) = v.pair.map(|(a, b)| if a == sender { b } else { a }) else {
            return false;
        };
        if v.people.contains_key(&recipient) {
            return false;
        }
        let first = v.first_seen_ms.unwrap_or(0);
        l.blind_reloads.get(&recipient).is_some_and(|at| {
            at.iter()
                .any(|t| *t <= first && first - *t <= BLIND_RELOAD_WINDOW_MS)
        })
    };
    for ((call, sender), s) in &l.streams {
        r.messages_sent += s.sent;
        let unknowable = never_known(call, *sender);
        if unknowable && s.counts.is_empty() {
            r.calls_abandoned_by_reload += 1;
        }
        for n in 1..=s.sent {
            let c = s.counts.get(&n).copied().unwrap_or(0);
            if c == 0 && !s.refused.contains(&n) && !s.uncertain.contains(&n) && !unknowable {
                r.messages_lost += 1;
                bad.insert(call.clone());
                if samples.len() < 12 {
                    let ends = l
                        .calls
                        .get(call)
                        .map(|v| format!("{:?}, seen by {:?}", v.ends, v.people));
                    samples.push(format!(
                        "payload {n} of {sender} in {call} lost (sent {}, highest arrived {}, \
                         {} refused, {} uncertain, ends {})",
                        s.sent,
                        s.highest,
                        s.refused.len(),
                        s.uncertain.len(),
                        ends.unwrap_or_default()
                    ));
                }
            }
            if c > 1 {
                r.messages_doubled += u64::from(c - 1);
            }
        }
        r.messages_lost += s.reordered;
        r.messages_doubled += s
            .counts
            .iter()
            .filter(|(n, _)| **n > s.sent)
            .map(|(_, c)| u64::from(*c))
            .sum::<u64>();
    }
    for x in samples.into_iter().take(8) {
        if r.samples.len() < 12 {
            r.samples.push(x);
        }
    }
    (r, bad)
}
