//! The client engine fed arbitrary server frames (built to look like the server's, plus
//! raw text), link opens and closes, app commands and clock steps. After every step:
//! - never two calls with one peer in the active-call map;
//! - no server message is handled twice: a relayed payload reaches the app once per
//!   session, however often the server frame carrying it is replayed;
//! - the engine never asks to be woken in the past after handling a timeout.
#![no_main]

use arbitrary::Arbitrary;
use holdfast::engine::client::{ClientConfig, ClientEngine, Event, Io, LinkId};
use holdfast::engine::server::ServerConfig;
use holdfast::protocol::*;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::collections::HashSet;

const PEERS: [&str; 3] = ["ben", "cat", "dan"];
const ME: &str = "ann";

#[derive(Arbitrary, Debug)]
enum Seq {
    Next,
    Same,
    Back(u8),
    Any(u16),
}

#[derive(Arbitrary, Debug)]
enum Body {
    CallCreated { call: u8, peer: u8, active: bool, existing: bool, outgoing: bool },
    IncomingCall { call: u8, peer: u8 },
    CallStarted { call: u8, peer: u8, rejoined: bool },
    ParticipantDisconnected { call: u8, peer: u8, ms: u16 },
    ParticipantReconnected { call: u8, peer: u8 },
    CallEnded { call: u8, reason: u8 },
    CallMoved { call: u8 },
    Signal { call: u8, peer: u8 },
    PresenceChanged { peer: u8, busy: bool },
    Error { code: u8, re: u8 },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open,
    Close,
    /// A welcome: new session (false) or resumed (true), with `last_seq`.
    Welcome { resumed: bool, same_session: bool, last_seq: u8, calls: Vec<(u8, u8, bool)> },
    Msg { seq: Seq, ack: u8, body: Body },
    Ack(u16),
    Pong(u16),
    Error { code: u8, fatal: bool },
    Raw(String),
    Wait(u16),
    LongWait(u8),
    Call(u8),
    Accept(u8),
    Decline(u8),
    Hangup(u8),
    Send(u8),
    Rejoin(u8),
    Online(bool),
    Reconnect,
    Wake,
}

const CODES: [ErrorCode; 8] = [
    ErrorCode::BadSequence,
    ErrorCode::SessionLost,
    ErrorCode::Superseded,
    ErrorCode::ServerShutdown,
    ErrorCode::AuthFailed,
    ErrorCode::RateLimited,
    ErrorCode::UnknownCall,
    ErrorCode::PeerOffline,
];

struct World {
    engine: ClientEngine,
    now: u64,
    link: Option<LinkId>,
    session: u64,
    /// Server seq of the next message.
    server_seq: u64,
    /// Signals the app saw, by (session, server seq).
    signals: HashSet<(u64, u64)>,
}

fn call_id(k: u8) -> CallId {
    format!("c{}", k % 6)
}

fn peer(k: u8) -> Peer {
    let id = PEERS[usize::from(k) % PEERS.len()];
    Peer {
        id: id.into(),
        name: id.to_uppercase(),
    }
}

fn me() -> Peer {
    Peer {
        id: ME.into(),
        name: "Ann".into(),
    }
}

fn info(call: u8, other: u8, state: CallState, outgoing: bool) -> CallInfo {
    let us = ParticipantInfo {
        user: me(),
        link: LinkState::Connected,
        deadline: None,
    };
    let them = ParticipantInfo {
        user: peer(other),
        link: if state == CallState::Ringing {
            LinkState::Pending
        } else {
            LinkState::Connected
        },
        deadline: None,
    };
    let (caller, callee) = if outgoing { (us, them) } else { (them, us) };
    CallInfo {
        id: call_id(call),
        kind: None,
        state,
        caller,
        callee,
        grace_ms: 60_000,
        ring_deadline: None,
        metadata: None,
        held_here: true,
    }
}

impl World {
    fn frame(&mut self, frame: ServerFrame) {
        let Some(link) = self.link else { return };
        // Through the decoder, as the driver does.
        let text = encode(&frame);
        match decode_server(&text, usize::MAX) {
            Ok(f) => self.engine.handle_frame(link, f, self.now),
            Err(bad) => self.engine.handle_bad_frame(link, bad, self.now),
        }
    }

    fn peer_call(&self, k: u8) -> Option<CallId> {
        let calls: Vec<_> = self.engine.calls().map(|c| c.id.clone()).collect();
        (!calls.is_empty()).then(|| calls[usize::from(k) % calls.len()].clone())
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Open => {
                if let Some(link) = self.engine.current_link() {
                    self.link = Some(link);
                    self.engine.handle_open(link, now);
                }
            }
            Op::Close => {
                if let Some(link) = self.link.take() {
                    self.engine.handle_close(link, now);
                }
            }
            Op::Welcome {
                resumed,
                same_session,
                last_seq,
                calls,
            } => {
                if !(resumed && same_session) {
                    self.session += 1;
                    self.server_seq = 1;
                }
                let config = ServerConfig::default();
                let snapshot = (!resumed).then(|| Snapshot {
                    calls: calls
                        .into_iter()
                        .take(4)
                        .map(|(c, p, active)| {
                            let state = if active {
                                CallState::Active
                            } else {
                                CallState::Ringing
                            };
                            info(c, p, state, c % 2 == 0)
                        })
                        .collect(),
                    presence: Vec::new(),
                    ended: Vec::new(),
                });
                let welcome = Welcome {
                    session: format!("s{}", self.session),
                    secret: "secret".into(),
                    resumed,
                    last_seq: u64::from(last_seq),
                    user: me(),
                    timers: config.timers(),
                    limits: config.limits(),
                    now,
                    snapshot,
                };
                self.frame(ServerFrame::Welcome(Box::new(welcome)));
            }
            Op::Msg { seq, ack, body } => {
                let seq = match seq {
                    Seq::Next => {
                        self.server_seq += 1;
                        self.server_seq - 1
                    }
                    Seq::Same => self.server_seq.saturating_sub(1),
                    Seq::Back(d) => self.server_seq.saturating_sub(u64::from(d)),
                    Seq::Any(n) => u64::from(n),
                };
                let body = match body {
                    Body::CallCreated {
                        call,
                        peer,
                        active,
                        existing,
                        outgoing,
                    } => {
                        let state = if active {
                            CallState::Active
                        } else {
                            CallState::Ringing
                        };
                        ServerMsg::CallCreated {
                            re: u64::from(call % 4),
                            call: Box::new(info(call, peer, state, outgoing)),
                            existing,
                        }
                    }
                    Body::IncomingCall { call, peer } => ServerMsg::IncomingCall {
                        call: Box::new(info(call, peer, CallState::Ringing, false)),
                    },
                    Body::CallStarted {
                        call,
                        peer,
                        rejoined,
                    } => ServerMsg::CallStarted {
                        call: Box::new(info(call, peer, CallState::Active, call % 2 == 0)),
                        rejoin_token: format!("t{call}"),
                        rejoined,
                    },
                    Body::ParticipantDisconnected { call, peer: p, ms } => {
                        ServerMsg::ParticipantDisconnected {
                            call: call_id(call),
                            user: peer(p).id,
                            deadline: now + u64::from(ms),
                            remaining_ms: u64::from(ms),
                        }
                    }
                    Body::ParticipantReconnected { call, peer: p } => {
                        ServerMsg::ParticipantReconnected {
                            call: call_id(call),
                            user: peer(p).id,
                        }
                    }
                    Body::CallEnded { call, reason } => ServerMsg::CallEnded {
                        call: call_id(call),
                        reason: EndReason::ALL[usize::from(reason) % EndReason::ALL.len()],
                    },
                    Body::CallMoved { call } => ServerMsg::CallMoved {
                        call: call_id(call),
                    },
                    Body::Signal { call, peer: p } => ServerMsg::Signal {
                        call: call_id(call),
                        from: peer(p).id,
                        payload: json!({ "s": self.session, "q": seq }),
                    },
                    Body::PresenceChanged { peer: p, busy } => ServerMsg::PresenceChanged {
                        entry: PresenceEntry {
                            user: peer(p),
                            status: if busy {
                                PresenceStatus::Busy
                            } else {
                                PresenceStatus::Available
                            },
                        },
                    },
                    Body::Error { code, re } => ServerMsg::Error(ErrorBody {
                        code: CODES[usize::from(code) % CODES.len()],
                        message: "fuzz".into(),
                        re: Some(u64::from(re)),
                        fatal: false,
                    }),
                };
                self.frame(ServerFrame::Msg {
                    seq,
                    ack: u64::from(ack),
                    body,
                });
            }
            Op::Ack(a) => self.frame(ServerFrame::Ack { ack: u64::from(a) }),
            Op::Pong(a) => self.frame(ServerFrame::Pong { ack: u64::from(a) }),
            Op::Error { code, fatal } => self.frame(ServerFrame::Error(ErrorBody {
                code: CODES[usize::from(code) % CODES.len()],
                message: "fuzz".into(),
                re: None,
                fatal,
            })),
            Op::Raw(text) => {
                if let Some(link) = self.link {
                    match decode_server(&text, 64 * 1024) {
                        Ok(f) => self.engine.handle_frame(link, f, now),
                        Err(bad) => self.engine.handle_bad_frame(link, bad, now),
                    }
                }
            }
            Op::Wait(ms) => self.advance(u64::from(ms)),
            Op::LongWait(s) => self.advance(u64::from(s) * 1_000),
            Op::Call(p) => {
                let _ = self.engine.call(&peer(p).id, None, None, now);
            }
            Op::Accept(k) => {
                if let Some(c) = self.peer_call(k) {
                    let _ = self.engine.accept(&c, now);
                }
            }
            Op::Decline(k) => {
                if let Some(c) = self.peer_call(k) {
                    let _ = self.engine.decline(&c, now);
                }
            }
            Op::Hangup(k) => {
                if let Some(c) = self.peer_call(k) {
                    let _ = self.engine.hangup(&c, now);
                }
            }
            Op::Send(k) => {
                if let Some(c) = self.peer_call(k) {
                    let _ = self.engine.send(&c, json!({ "app": k }), now);
                }
            }
            Op::Rejoin(k) => {
                let _ = self.engine.rejoin(&call_id(k), now);
            }
            Op::Online(on) => self.engine.handle_online(on, now),
            Op::Reconnect => self.engine.reconnect(now),
            Op::Wake => self.engine.handle_wake(now),
        }
        self.drain();
    }

    fn advance(&mut self, ms: u64) {
        let until = self.now + ms;
        while let Some(at) = self.engine.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            self.drain();
            if let Some(next) = self.engine.poll_timeout() {
                assert!(
                    next > self.now,
                    "after a timeout at {} the engine asks to wake at {next} again",
                    self.now
                );
            }
            self.check();
        }
        self.now = until;
    }

    fn drain(&mut self) {
        while let Some(io) = self.engine.poll_io() {
            if let Io::Close(id) = io {
                if self.link == Some(id) {
                    self.link = None;
                }
            }
        }
        while self.engine.poll_transmit().is_some() {}
        while self.engine.poll_storage().is_some() {}
        while let Some(ev) = self.engine.poll_event() {
            if let Event::Signal { payload, .. } = ev {
                let (Some(s), Some(q)) = (payload["s"].as_u64(), payload["q"].as_u64()) else {
                    continue;
                };
                assert!(
                    self.signals.insert((s, q)),
                    "server message {q} of session {s} was handled twice"
                );
            }
        }
    }

    fn check(&self) {
        let mut peers = HashSet::new();
        for c in self.engine.calls() {
            assert!(
                peers.insert(c.peer.id.clone()),
                "two calls with {} in the active-call map",
                c.peer.id
            );
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let now = 1_000_000;
    let mut config = ClientConfig::new(ME);
    config.seed = 3;
    let mut engine = ClientEngine::new(config);
    engine.connect(now);
    let mut world = World {
        engine,
        now,
        link: None,
        session: 0,
        server_seq: 1,
        signals: HashSet::new(),
    };
    world.drain();
    for op in ops.into_iter().take(400) {
        world.apply(op);
        world.check();
    }
});
