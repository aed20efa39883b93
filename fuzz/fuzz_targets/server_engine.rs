//! The server engine fed arbitrary interleavings of frames from several sockets and
//! sessions, with clock steps. Structure-aware: frames are built from the sessions,
//! calls, secrets and rejoin tokens the engine handed out, so they get past the front
//! door, with wrong sequence numbers, stale secrets, foreign calls and raw text mixed
//! in. After every step the invariants must hold:
//! - never two calls (not ended) between one pair of people;
//! - every call's two slots agree with the store's indexes (each participant lists the
//!   call, the pair finds it, the slots are two different people, a slot's session is
//!   that person's);
//! - no client message is handled twice: a relayed payload reaches the other side under
//!   one server sequence number only, however often its frame is replayed.
#![no_main]

use arbitrary::Arbitrary;
use holdfast::engine::server::{ConnId, DevAuth, Output, ServerConfig, ServerEngine};
use holdfast::engine::store::{MemoryStore, Store};
use holdfast::engine::SplitMix;
use holdfast::protocol::*;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];

#[derive(Arbitrary, Debug)]
enum Seq {
    Next,
    Same,
    Back(u8),
    Any(u16),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Invite(u8),
    Accept(u8),
    Decline(u8, bool),
    Cancel(u8),
    Hangup(u8),
    Signal(u8),
    /// Rejoin call k with its real token (true) or a made-up one.
    Rejoin(u8, bool),
    SetStatus(bool),
    Unknown,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open,
    Close(u8),
    /// A new session for user u (resume: None), or a resume of welcome w (true: with
    /// its current secret; false: a stale or made-up one).
    Hello {
        conn: u8,
        user: u8,
        resume: Option<(u8, bool)>,
        presence: bool,
        call_waiting: bool,
        tab: Option<u8>,
    },
    Msg {
        conn: u8,
        seq: Seq,
        ack: u8,
        body: Body,
    },
    Ack(u8, u16),
    Ping(u8, u16),
    Bye(u8),
    Raw(u8, String),
    Wait(u16),
    LongWait(u8),
    DropLinksOf(u8),
}

#[derive(Default)]
struct ConnState {
    id: ConnId,
    session: Option<SessionId>,
    user: Option<UserId>,
    seq: u64,
    /// Highest server seq seen on this socket (for acks).
    server_seq: u64,
}

struct World {
    engine: ServerEngine<MemoryStore>,
    now: u64,
    conns: Vec<ConnState>,
    /// Sessions handed out: (session, current secret, last secret).
    welcomes: Vec<(SessionId, String, String)>,
    calls: Vec<CallId>,
    tokens: HashMap<(CallId, UserId), String>,
    /// Relayed payload (sender session, client seq) -> (recipient session, server seq).
    relayed: HashMap<(String, u64), (SessionId, u64)>,
}

impl World {
    fn conn(&mut self, k: u8) -> Option<&mut ConnState> {
        let n = self.conns.len();
        (n > 0).then(|| &mut self.conns[usize::from(k) % n])
    }

    fn call(&self, k: u8) -> CallId {
        if self.calls.is_empty() {
            return "no-such-call".into();
        }
        self.calls[usize::from(k) % self.calls.len()].clone()
    }

    fn send(&mut self, k: u8, frame: ClientFrame) {
        let now = self.now;
        let Some(c) = self.conn(k) else { return };
        let id = c.id;
        let text = encode(&frame);
        self.engine.handle_text(id, &text, now);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Open => {
                let id = self.engine.handle_open(self.now);
                self.conns.push(ConnState {
                    id,
                    ..ConnState::default()
                });
            }
            Op::Close(k) => {
                let now = self.now;
                if let Some(c) = self.conn(k) {
                    let id = c.id;
                    self.engine.handle_close(id, now);
                }
            }
            Op::Hello {
                conn,
                user,
                resume,
                presence,
                call_waiting,
                tab,
            } => {
                let resume = resume.and_then(|(w, good)| {
                    let n = self.welcomes.len();
                    (n > 0).then(|| {
                        let (session, secret, old) = &self.welcomes[usize::from(w) % n];
                        Resume {
                            session: session.clone(),
                            secret: if good { secret.clone() } else { old.clone() },
                            last_seq: 0,
                        }
                    })
                });
                let hello = Hello {
                    v: PROTOCOL_VERSION,
                    token: USERS[usize::from(user) % USERS.len()].into(),
                    resume,
                    presence,
                    call_waiting,
                    // A tab id lets the server find a session by tab after a lost
                    // resume; two users' worth of tabs make that path reachable.
                    tab: tab.map(|t| format!("tab-{}", t % 2)),
                };
                self.send(conn, ClientFrame::Hello(hello));
            }
            Op::Msg {
                conn,
                seq,
                ack,
                body,
            } => {
                let Some(c) = self.conn(conn) else { return };
                let seq = match seq {
                    Seq::Next => c.seq + 1,
                    Seq::Same => c.seq,
                    Seq::Back(d) => c.seq.saturating_sub(u64::from(d)),
                    Seq::Any(n) => u64::from(n),
                };
                c.seq = c.seq.max(seq);
                let ack = c.server_seq.saturating_sub(u64::from(ack));
                let sender = c.session.clone().unwrap_or_default();
                let user = c.user.clone().unwrap_or_default();
                let body = match body {
                    Body::Invite(u) => ClientMsg::Invite {
                        peer: USERS[usize::from(u) % USERS.len()].into(),
                        kind: None,
                        metadata: None,
                    },
                    Body::Accept(k) => ClientMsg::Accept { call: self.call(k) },
                    Body::Decline(k, busy) => ClientMsg::Decline {
                        call: self.call(k),
                        busy,
                    },
                    Body::Cancel(k) => ClientMsg::Cancel { call: self.call(k) },
                    Body::Hangup(k) => ClientMsg::Hangup { call: self.call(k) },
                    Body::Signal(k) => ClientMsg::Signal {
                        call: self.call(k),
                        payload: json!({ "s": sender, "q": seq }),
                    },
                    Body::Rejoin(k, real) => {
                        let call = self.call(k);
                        let token = if real {
                            self.tokens
                                .get(&(call.clone(), user))
                                .cloned()
                                .unwrap_or_default()
                        } else {
                            "forged".into()
                        };
                        ClientMsg::Rejoin { call, token }
                    }
                    Body::SetStatus(busy) => ClientMsg::SetStatus {
                        status: if busy {
                            PresenceStatus::Busy
                        } else {
                            PresenceStatus::Available
                        },
                    },
                    Body::Unknown => ClientMsg::Unknown,
                };
                self.send(conn, ClientFrame::Msg { seq, ack, body });
            }
            Op::Ack(k, a) => {
                let ack = self.conn(k).map_or(0, |c| c.server_seq.min(u64::from(a)));
                self.send(k, ClientFrame::Ack { ack });
            }
            Op::Ping(k, a) => {
                let ack = self.conn(k).map_or(0, |c| c.server_seq.min(u64::from(a)));
                self.send(k, ClientFrame::Ping { ack });
            }
            Op::Bye(k) => self.send(k, ClientFrame::Bye),
            Op::Raw(k, text) => {
                let now = self.now;
                if let Some(c) = self.conn(k) {
                    let id = c.id;
                    self.engine.handle_text(id, &text, now);
                }
            }
            Op::Wait(ms) => self.advance(u64::from(ms)),
            Op::LongWait(s) => self.advance(u64::from(s) * 1_000),
            Op::DropLinksOf(u) => {
                let user = USERS[usize::from(u) % USERS.len()];
                self.engine.drop_links_of(user, self.now);
            }
        }
        self.drain();
    }

    /// Runs every timer due up to `now + ms`, in order.
    fn advance(&mut self, ms: u64) {
        let until = self.now + ms;
        while let Some(at) = self.engine.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            self.drain();
            self.check();
        }
        self.now = until;
        self.engine.handle_timeout(self.now);
    }

    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            let Output::Send { conn, frame } = out else {
                continue;
            };
            let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) else {
                continue;
            };
            match frame {
                ServerFrame::Welcome(w) => {
                    c.session = Some(w.session.clone());
                    c.user = Some(w.user.id.clone());
                    c.server_seq = 0;
                    c.seq = w.last_seq;
                    match self.welcomes.iter_mut().find(|x| x.0 == w.session) {
                        Some(x) => {
                            x.2 = std::mem::replace(&mut x.1, w.secret.clone());
                        }
                        None => self
                            .welcomes
                            .push((w.session.clone(), w.secret.clone(), "stale".into())),
                    }
                }
                ServerFrame::Msg { seq, body, .. } => {
                    c.server_seq = c.server_seq.max(seq);
                    let me = c.user.clone().unwrap_or_default();
                    let session = c.session.clone().unwrap_or_default();
                    match body {
                        ServerMsg::CallCreated { call, .. } | ServerMsg::IncomingCall { call } => {
                            if !self.calls.contains(&call.id) {
                                self.calls.push(call.id);
                            }
                        }
                        ServerMsg::CallStarted {
                            call, rejoin_token, ..
                        } => {
                            if !self.calls.contains(&call.id) {
                                self.calls.push(call.id.clone());
                            }
                            self.tokens.insert((call.id, me), rejoin_token);
                        }
                        ServerMsg::Signal { payload, .. } => {
                            let key = (
                                payload["s"].as_str().unwrap_or_default().to_owned(),
                                payload["q"].as_u64().unwrap_or_default(),
                            );
                            let here = (session, seq);
                            if let Some(first) = self.relayed.get(&key) {
                                assert_eq!(
                                    first, &here,
                                    "client message {key:?} was handled twice"
                                );
                            } else {
                                self.relayed.insert(key, here);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    fn check(&self) {
        let store = self.engine.store();
        let mut pairs: BTreeMap<(String, String), Vec<CallId>> = BTreeMap::new();
        for id in store.call_ids() {
            let Some(call) = store.call(&id) else {
                panic!("call {id} is listed but cannot be read");
            };
            if call.state == CallState::Ended {
                continue;
            }
            let (a, b) = (&call.caller.user.id, &call.callee.user.id);
            assert_ne!(a, b, "call {id} has the same person in both slots");
            let pair = if a < b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            pairs.entry(pair).or_default().push(id.clone());
            for slot in call.slots() {
                assert!(
                    store.calls_of(&slot.user.id).contains(&id),
                    "call {id} is not listed for its participant {}",
                    slot.user.id
                );
                if let Some(s) = &slot.session {
                    if let Some(session) = store.session(s) {
                        assert_eq!(
                            session.user.id, slot.user.id,
                            "call {id}: a slot is held by another person's session"
                        );
                    }
                }
            }
            assert_eq!(
                store.call_between(a, b),
                Some(&id),
                "the pair index does not find call {id}"
            );
        }
        for (pair, calls) in pairs {
            assert!(
                calls.len() <= 1,
                "two live calls between {pair:?}: {calls:?}"
            );
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut world = World {
        engine: ServerEngine::new(
            ServerConfig::default(),
            MemoryStore::new(),
            Box::new(DevAuth),
            Box::new(SplitMix(7)),
        ),
        now: 1_000_000,
        conns: Vec::new(),
        welcomes: Vec::new(),
        calls: Vec::new(),
        tokens: HashMap::new(),
        relayed: HashMap::new(),
    };
    for op in ops.into_iter().take(400) {
        world.apply(op);
        world.check();
    }
});
