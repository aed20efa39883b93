//! The server engine: sessions, calls, grace windows, rejoin tokens, dedup, presence.
//!
//! Sans-IO: the driver reports sockets opening ([`ServerEngine::handle_open`]), frames
//! ([`ServerEngine::handle_frame`] / [`ServerEngine::handle_bad_frame`]), sockets closing
//! ([`ServerEngine::handle_close`]) and time passing ([`ServerEngine::handle_timeout`]),
//! and drains [`ServerEngine::poll_output`] (frames to send, sockets to close) and
//! [`ServerEngine::poll_timeout`] (when to call `handle_timeout` next). Every input takes
//! `now` in epoch milliseconds.
//!
//! One file per behaviour, each an `impl ServerEngine` block over the state here:
//! `session.rs` (hello, new sessions, the per-identity limit, expiry, bye), `resume.rs`,
//! `delivery.rs` (sequenced messages, acks, replay buffer), `heartbeat.rs` (dead-link
//! detection), `call.rs` (invite, accept, decline, hang-up, relay, end), `dedup.rs`
//! (second and crossed invites, busy), `grace.rs` (dropped links and their windows),
//! `rejoin.rs` (rejoin tokens), `presence.rs`, `rate_limit.rs` (the per-socket budget),
//! `auth.rs`, `config.rs`, `metrics.rs`.

mod auth;
mod call;
mod cluster;
mod config;
mod dedup;
mod delivery;
mod grace;
mod heartbeat;
mod metrics;
mod presence;
mod rate_limit;
mod rejoin;
mod restore;
mod resume;
mod session;

pub use auth::{AuthError, Authenticator, DevAuth};
pub use cluster::{node_of_conn, NodeNo};
use cluster::{ClusterPart, EngineTxn};
pub use config::ServerConfig;
pub use metrics::Metrics;
use rate_limit::{AllBudgets, RejoinKey};
pub use rate_limit::{Charge, RateLimit, TokenBucket};

use super::liveness::Liveness;
use super::store::{Store, StoreCounts};
use super::{hex, Entropy, TimerQueue};
use crate::protocol::*;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;

/// A socket's ping budget (`Conn::pings`).
const PINGS_PER_SEC: f64 = 5.0;
const PING_BURST: u32 = 20;

/// How often budgets that are full again are forgotten.
const BUDGET_PRUNE_MS: u64 = 60_000;

/// A socket, numbered by the engine.
pub type ConnId = u64;

/// What a logout over HTTP ([`ServerEngine::handle_bye_request`]) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeOutcome {
    /// The session was proven and ended, with its calls.
    Ended,
    /// No such session (already ended by the socket's `bye`, or expired): nothing to do.
    /// Logging out twice is not an error.
    AlreadyGone,
    /// The token or the secret does not prove the session: nothing changed.
    Refused,
}

/// What the driver must do.
#[allow(clippy::large_enum_variant)] // see ServerFrame
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this frame on this socket.
    Send { conn: ConnId, frame: ServerFrame },
    /// Close this socket (after sending what was queued before it). The engine has
    /// already forgotten it; a later `handle_close` for it is ignored.
    Close { conn: ConnId, reason: CloseReason },
}

/// Why the engine closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A fatal error was sent just before.
    Error(ErrorCode),
    /// Nothing arrived for a heartbeat timeout.
    DeadLink,
    /// The client logged out (`bye`) or its page went away (`leave`).
    Bye,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Heartbeat(ConnId),
    Hello(ConnId),
    SessionExpiry(SessionId),
    Ring(CallId),
    RingDetach(CallId),
    Grace(CallId),
    Tombstones,
    /// Coalesced presence changes go out.
    PresenceFlush,
    /// Budgets that are full again are forgotten.
    BudgetPrune,
}

#[derive(Debug, Clone)]
struct Conn {
    session: Option<SessionId>,
    /// When the client was last heard from.
    liveness: Liveness,
    /// The client's IP, for per-IP budgets (`None`: exempt or unknown).
    ip: Option<IpAddr>,
    /// This socket's message budget.
    budget: TokenBucket,
    /// The budget started from what the identity left behind (done at the first
    /// charge after the hello).
    inherited: bool,
    /// Pings, apart from messages: a client pings once per heartbeat interval at
    /// most, so only a ping flood ever meets this one.
    pings: TokenBucket,
}

/// The server engine. See the module documentation.
pub struct ServerEngine<S: Store> {
    config: ServerConfig,
    store: S,
    auth: Box<dyn Authenticator>,
    entropy: Box<dyn Entropy>,
    /// Boxed, so the table's spare room is a pointer per entry.
    conns: HashMap<ConnId, Box<Conn>>,
    next_conn: ConnId,
    /// Sessions that asked for presence.
    watchers: HashSet<SessionId>,
    timers: TimerQueue<Timer>,
    out: VecDeque<Output>,
    metrics: Metrics,
    shutting_down: bool,
    /// A tombstone prune is scheduled (one at a time: each prune scans every user).
    prune_armed: bool,
    /// Rate budgets per identity and per IP.
    budgets: AllBudgets,
    /// A budget prune is scheduled.
    budget_prune_armed: bool,
    /// The status last sent to watchers, per identity (cleared while nobody watches).
    presence_sent: HashMap<UserId, PresenceStatus>,
    /// Identities whose status may have changed since the last flush.
    presence_dirty: BTreeSet<UserId>,
    presence_flush_armed: bool,
    /// `Some` when this engine is one node of a cluster ([`crate::engine::cluster`]).
    cluster: Option<ClusterPart>,
    /// `Some` while a cluster transaction runs: what it changed outside the store, so
    /// that a refused one can be undone.
    txn: Option<EngineTxn>,
}

/// The outcome of one client message: `Err` is answered with a non-fatal error.
type Handled = Result<(), (ErrorCode, String)>;

fn refuse(code: ErrorCode, msg: impl Into<String>) -> Handled {
    Err((code, msg.into()))
}

impl<S: Store> ServerEngine<S> {
    pub fn new(
        config: ServerConfig,
        store: S,
        auth: Box<dyn Authenticator>,
        entropy: Box<dyn Entropy>,
    ) -> Self {
        let budgets = config.budgets();
        Self {
            config,
            store,
            auth,
            entropy,
            conns: HashMap::new(),
            next_conn: 1,
            watchers: HashSet::new(),
            timers: TimerQueue::default(),
            out: VecDeque::new(),
            metrics: Metrics::default(),
            shutting_down: false,
            prune_armed: false,
            budgets,
            budget_prune_armed: false,
            presence_sent: HashMap::new(),
            presence_dirty: BTreeSet::new(),
            presence_flush_armed: false,
            cluster: None,
            txn: None,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn counts(&self) -> StoreCounts {
        self.store.counts()
    }

    /// Open sockets (authenticated or not).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The session attached to a socket, if it said hello.
    pub fn session_of_conn(&self, conn: ConnId) -> Option<&SessionId> {
        self.conns.get(&conn).and_then(|c| c.session.as_ref())
    }

    /// Sockets of one identity (for test hooks that drop a user's link).
    pub fn conns_of_user(&self, user: &str) -> Vec<ConnId> {
        self.store
            .sessions_of(user)
            .iter()
            .filter_map(|s| self.store.session(s).and_then(|s| s.conn))
            .collect()
    }

    // ---------------------------------------------------------------- outputs

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    // ----------------------------------------------------------------- inputs

    /// A socket opened. Returns its id; the client must say hello within the heartbeat
    /// timeout.
    pub fn handle_open(&mut self, now: u64) -> ConnId {
        self.handle_open_from(None, now)
    }

    /// A socket opened from `ip` (`None` where per-IP limits do not apply).
    pub fn handle_open_from(&mut self, ip: Option<IpAddr>, now: u64) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.handle_open_as(id, ip, now);
        id
    }

    /// A socket opened, numbered by the driver: a cluster node hands out its socket ids
    /// itself (see [`crate::engine::cluster::ClusterNode::handle_open`]), since inputs
    /// wait while a transaction is in flight.
    pub fn handle_open_as(&mut self, id: ConnId, ip: Option<IpAddr>, now: u64) {
        self.journal_conn(id);
        self.conns.insert(
            id,
            Box::new(Conn {
                session: None,
                liveness: self.new_liveness(now),
                ip,
                budget: TokenBucket::full(&self.config.rate_limit(), now),
                inherited: false,
                pings: TokenBucket::full(&self.ping_limit(), now),
            }),
        );
        self.metrics.connections_opened += 1;
        self.schedule(now + self.config.heartbeat_timeout_ms, Timer::Hello(id));
    }

    /// A socket closed or failed. Its session (if any) is detached and its resume
    /// window starts.
    pub fn handle_close(&mut self, conn: ConnId, now: u64) {
        if let Some(c) = self.conn_remove(conn) {
            if let Some(sid) = c.session {
                self.detach_conn(&sid, conn, now);
            }
        }
        self.store.commit();
    }

    /// Text frame for which decoding failed (too large, not JSON, binary).
    pub fn handle_bad_frame(&mut self, conn: ConnId, bad: BadFrame, now: u64) {
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        c.liveness.heard(now);
        let authed = c.session.is_some();
        self.metrics.frames_in += 1;
        if !authed {
            // Nothing useful can come from a socket that opens with garbage.
            self.fatal(conn, bad.code(), bad.message(), now);
        } else if self.charge(conn, now) {
            self.conn_error(conn, bad.code(), bad.message(), None, false);
        }
        self.store.commit();
    }

    /// Convenience for drivers holding text: decode (enforcing the frame limit) and
    /// hand over.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: u64) {
        match decode_client(text, self.config.max_frame_bytes) {
            Ok(frame) => self.handle_frame(conn, frame, now),
            Err(bad) => self.handle_bad_frame(conn, bad, now),
        }
    }

    /// A decoded frame from a socket.
    pub fn handle_frame(&mut self, conn: ConnId, frame: ClientFrame, now: u64) {
        self.journal_conn(conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.liveness.heard(now);
        self.metrics.frames_in += 1;
        let session = c.session.clone();
        match (session, frame) {
            (None, ClientFrame::Hello(hello)) => {
                if self.charge_hello(conn, now) {
                    self.hello(conn, hello, now);
                } else {
                    self.fatal(
                        conn,
                        ErrorCode::RateLimited,
                        "too many hellos from this address; retry shortly",
                        now,
                    );
                }
            }
            (None, _) => self.fatal(
                conn,
                ErrorCode::NotAuthenticated,
                "the first frame must be a hello",
                now,
            ),
            (Some(sid), frame) => {
                if !matches!(frame, ClientFrame::Hello(_)) {
                    // The client speaks after a welcome only: it has the new secret.
                    if let Some(s) = self.store.session_mut(&sid) {
                        s.prev_secret_hash = None;
                    }
                }
                // Acks answer the server's own traffic and pings keep the link: they
                // never count against the message budget, so what others send a
                // session can never get it rate-limited. Acks are free; a flood of
                // pings meets its own budget.
                let allowed = match frame {
                    ClientFrame::Ack { .. } => true,
                    ClientFrame::Ping { .. } => self.charge_ping(conn, now),
                    _ => self.charge(conn, now),
                };
                if !allowed {
                    self.refused_frame(conn, &sid, frame, now);
                    self.store.commit();
                    return;
                }
                self.session_frame(conn, sid, frame, now);
            }
        }
        self.store.commit();
    }

    /// Time passed: fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            if let Some(txn) = self.txn.as_mut() {
                txn.timers_fired.push((at, timer.clone()));
            }
            self.fire(timer, now);
        }
        self.store.commit();
    }

    /// Graceful shutdown: unless the store is durable, every call ends with
    /// `server-shutdown` at both ends; then every socket gets a fatal error and is
    /// closed: `server-restarting` with a durable store (the client resumes at once),
    /// `server-shutdown` otherwise.
    pub fn shutdown(&mut self, now: u64) {
        self.shutting_down = true;
        if !self.store.durable() {
            for id in self.store.call_ids() {
                self.end_call(&id, EndReason::ServerShutdown, now);
            }
        }
        // A durable store keeps the sessions: tell clients to come back at once.
        let (code, message) = if self.store.durable() {
            (
                ErrorCode::ServerRestarting,
                "the server is restarting and keeps your session; resume now",
            )
        } else {
            (
                ErrorCode::ServerShutdown,
                "the server is shutting down; reconnect shortly",
            )
        };
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.send(
                conn,
                ServerFrame::Error(ErrorBody {
                    code,
                    message: message.into(),
                    re: None,
                    fatal: true,
                }),
            );
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::Error(code),
            });
        }
        let open: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in open {
            self.journal_conn(id);
        }
        self.conns.clear();
        self.timers.clear();
        self.store.commit();
    }

    /// A logout delivered outside the socket: the page's fallback request when its
    /// socket could not carry the `bye` (see [`ClientFrame::Bye`]). It proves the session
    /// the way a resume does: the token names the session's identity (expiry is not
    /// checked) and the secret is its current (or just rotated) resume secret. Then the
    /// same happens as for a `bye`. Nothing changes unless the proof holds.
    pub fn handle_bye_request(
        &mut self,
        token: &str,
        session: &str,
        secret: &str,
        now: u64,
    ) -> ByeOutcome {
        let Ok(user) = self.auth.authenticate(token, now, false) else {
            return ByeOutcome::Refused;
        };
        let Some(s) = self.store.session(session) else {
            // The socket's `bye` got there first (a page sends both at once), or the
            // session expired: either way it is over, which is what was asked.
            return ByeOutcome::AlreadyGone;
        };
        let proven = s.user.id == user.id
            && (crate::engine::secret_matches(secret, &s.secret_hash)
                | s.prev_secret_hash
                    .is_some_and(|h| crate::engine::secret_matches(secret, &h)));
        if !proven {
            return ByeOutcome::Refused;
        }
        self.bye_without_socket(session, now);
        self.store.commit();
        ByeOutcome::Ended
    }

    /// Test and operations hook: close a user's sockets as if the network dropped them
    /// (the sessions detach and can resume).
    pub fn drop_links_of(&mut self, user: &str, now: u64) -> usize {
        let conns = self.conns_of_user(user);
        for &conn in &conns {
            self.close_conn(conn, CloseReason::DeadLink, now);
        }
        self.store.commit();
        conns.len()
    }

    // -------------------------------------------------------------- internals

    /// Takes one frame from the socket's budget, which started from the most depleted
    /// budget its identity left (so reconnecting refills nothing). Returns false when
    /// the frame must be refused; closes the socket when refusals persist.
    fn charge(&mut self, conn: ConnId, now: u64) -> bool {
        let limit = self.config.rate_limit();
        let Some(user) = self
            .conns
            .get(&conn)
            .and_then(|c| c.session.as_ref())
            .and_then(|sid| self.store.session(sid))
            .map(|s| s.user.id.clone())
        else {
            return false;
        };
        self.arm_budget_prune(now);
        self.journal_conn(conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if !c.inherited {
            c.inherited = true;
            if let Some(left) = self.budgets.messages.get(&user) {
                c.budget = c.budget.more_depleted(left, &limit, now);
            }
        }
        let charge = c.budget.charge(&limit, now);
        self.budgets.messages.carry(&user, &c.budget, now);
        match charge {
            Charge::Allowed => true,
            Charge::Refused => false,
            Charge::Flood => {
                self.fatal(
                    conn,
                    ErrorCode::RateLimited,
                    "message flood; closing the socket",
                    now,
                );
                false
            }
        }
    }

    /// What a socket may ping: far above the one ping per heartbeat interval a client
    /// sends.
    fn ping_limit(&self) -> RateLimit {
        RateLimit {
            per_sec: PINGS_PER_SEC,
            burst: PING_BURST,
            max_violations: self.config.max_violations,
        }
    }

    fn charge_ping(&mut self, conn: ConnId, now: u64) -> bool {
        let limit = self.ping_limit();
        let Some(c) = self.conn_mut(conn) else {
            return false;
        };
        match c.pings.charge(&limit, now) {
            Charge::Allowed => true,
            Charge::Refused => false,
            Charge::Flood => {
                self.fatal(
                    conn,
                    ErrorCode::RateLimited,
                    "ping flood; closing the socket",
                    now,
                );
                false
            }
        }
    }

    /// Takes one hello from the budget of the socket's IP.
    fn charge_hello(&mut self, conn: ConnId, now: u64) -> bool {
        let Some(ip) = self.conns.get(&conn).and_then(|c| c.ip) else {
            return true;
        };
        self.arm_budget_prune(now);
        self.budgets.hellos.charge(&ip, now) == Charge::Allowed
    }

    /// Takes one rejoin attempt from the budgets of the identity and of the socket's IP.
    fn charge_rejoin(&mut self, sid: &str, user: &str, now: u64) -> bool {
        let ip = self
            .store
            .session(sid)
            .and_then(|s| s.conn)
            .and_then(|conn| self.conns.get(&conn))
            .and_then(|c| c.ip);
        self.arm_budget_prune(now);
        let by_user = self
            .budgets
            .rejoins_by_user
            .charge(&RejoinKey::User(user.to_owned()), now);
        let by_ip = ip.map_or(Charge::Allowed, |ip| {
            self.budgets.rejoins_by_ip.charge(&RejoinKey::Ip(ip), now)
        });
        by_user == Charge::Allowed && by_ip == Charge::Allowed
    }

    fn arm_budget_prune(&mut self, now: u64) {
        if !self.budget_prune_armed {
            self.budget_prune_armed = true;
            self.schedule(now + BUDGET_PRUNE_MS, Timer::BudgetPrune);
        }
    }

    fn budget_prune_due(&mut self, now: u64) {
        self.budgets.prune(now);
        self.budget_prune_armed = false;
        if !self.budgets.is_empty() {
            self.arm_budget_prune(now);
        }
    }

    fn random_hex(&mut self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.entropy.fill(&mut buf);
        hex(&buf)
    }

    /// Queues `frame` for `conn`, if `conn` is an open socket of this engine; a frame
    /// for any other id is dropped, so it can never reach whoever gets that id later.
    fn send(&mut self, conn: ConnId, frame: ServerFrame) {
        if self.conns.contains_key(&conn) {
            self.out.push_back(Output::Send { conn, frame });
        } else {
            debug_assert!(false, "a frame for socket {conn}, which is not open");
        }
    }

    /// An unsequenced error on a socket.
    fn conn_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        re: Option<u64>,
        fatal: bool,
    ) {
        self.metrics.count_error(code);
        self.send(
            conn,
            ServerFrame::Error(ErrorBody {
                code,
                message: message.into(),
                re,
                fatal,
            }),
        );
    }

    /// Fatal error: tell, close, detach.
    fn fatal(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>, now: u64) {
        self.conn_error(conn, code, message, None, true);
        self.close_conn(conn, CloseReason::Error(code), now);
    }

    fn close_conn(&mut self, conn: ConnId, reason: CloseReason, now: u64) {
        if let Some(c) = self.conn_remove(conn) {
            self.out.push_back(Output::Close { conn, reason });
            if let Some(sid) = c.session {
                self.detach_conn(&sid, conn, now);
            }
        }
    }

    /// `conn` of session `sid` went away: the session detaches, unless it is attached
    /// to another socket by now (resumed elsewhere in a cluster).
    fn detach_conn(&mut self, sid: &str, conn: ConnId, now: u64) {
        if self
            .store
            .session(sid)
            .is_some_and(|s| s.conn == Some(conn))
        {
            self.detach(sid, now);
        }
    }

    /// A socket's state, about to change (noted for a cluster transaction's undo).
    fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.journal_conn(conn);
        self.conns.get_mut(&conn).map(|c| &mut **c)
    }

    /// A socket forgotten (noted for a cluster transaction's undo).
    fn conn_remove(&mut self, conn: ConnId) -> Option<Conn> {
        self.journal_conn(conn);
        self.conns.remove(&conn).map(|c| *c)
    }

    /// Arms a timer. In a cluster transaction it waits with the transaction's other
    /// effects and is dropped with them if the transaction is refused.
    fn schedule(&mut self, at: u64, timer: Timer) {
        match self.txn.as_mut() {
            Some(txn) => txn.timers_added.push((at, timer)),
            None => self.timers.schedule(at, timer),
        }
    }

    /// Whether a session watches presence (noted for a cluster transaction's undo).
    fn set_watching(&mut self, sid: &str, watching: bool) {
        if let Some(txn) = self.txn.as_mut() {
            txn.watchers
                .entry(sid.to_owned())
                .or_insert_with(|| self.watchers.contains(sid));
        }
        if watching {
            self.watchers.insert(sid.to_owned());
        } else {
            self.watchers.remove(sid);
        }
    }

    /// A frame of an authenticated socket, within its budget.
    fn session_frame(&mut self, conn: ConnId, sid: SessionId, frame: ClientFrame, now: u64) {
        match frame {
            ClientFrame::Hello(_) => self.conn_error(
                conn,
                ErrorCode::AlreadyAuthenticated,
                "this socket already said hello",
                None,
                false,
            ),
            ClientFrame::Msg { seq, ack, body } => {
                self.take_ack(&sid, ack);
                self.accept_seq(conn, &sid, seq, now, |engine, seq| {
                    if let Err((code, message)) = engine.message(&sid, seq, body, now) {
                        engine.push_error(&sid, code, &message, Some(seq));
                    }
                });
            }
            ClientFrame::Ack { ack } => self.take_ack(&sid, ack),
            ClientFrame::Ping { ack } => {
                self.take_ack(&sid, ack);
                let ack = self.store.session(&sid).map_or(0, |s| s.inbox.last_seq());
                self.send(conn, ServerFrame::Pong { ack });
            }
            ClientFrame::Bye => self.bye(conn, &sid, now),
            ClientFrame::Leave => self.leave(conn, &sid, now),
            ClientFrame::Unknown => self.conn_error(
                conn,
                ErrorCode::UnknownMessage,
                "unknown frame type",
                None,
                false,
            ),
        }
    }

    /// A sequenced client message, in order and new.
    fn message(&mut self, sid: &str, seq: u64, body: ClientMsg, now: u64) -> Handled {
        let user = self
            .store
            .session(sid)
            .map(|s| s.user.clone())
            .ok_or((ErrorCode::InvalidState, "no session".to_owned()))?;
        match body {
            ClientMsg::Invite {
                peer,
                kind,
                metadata,
            } => self.invite(
                sid,
                &user,
                seq,
                call::Invite {
                    peer,
                    kind,
                    metadata,
                },
                now,
            ),
            ClientMsg::Accept { call } => self.accept(sid, &user, &call, now),
            ClientMsg::Decline { call, busy } => self.decline(sid, &user, &call, busy, now),
            ClientMsg::Cancel { call } => self.cancel(sid, &user, &call, now),
            ClientMsg::Hangup { call } => self.hangup(&user, &call, now),
            ClientMsg::Signal { call, payload } => self.signal(sid, &user, &call, payload),
            ClientMsg::Rejoin { call, token } => self.rejoin(sid, &user, &call, &token, now),
            ClientMsg::SetStatus { status } => self.set_status(&user, status, now),
            ClientMsg::Unknown => refuse(ErrorCode::UnknownMessage, "unknown message type"),
        }
    }

    fn fire(&mut self, timer: Timer, now: u64) {
        match timer {
            Timer::Hello(conn) => self.hello_due(conn, now),
            Timer::Heartbeat(conn) => self.heartbeat_due(conn, now),
            Timer::SessionExpiry(sid) => self.session_expiry_due(&sid, now),
            Timer::Ring(id) => self.ring_due(&id, now),
            Timer::RingDetach(id) => self.ring_detach_due(&id, now),
            Timer::Grace(id) => self.grace_due(&id, now),
            Timer::Tombstones => self.prune_due(now),
            Timer::PresenceFlush => self.presence_flush_due(),
            Timer::BudgetPrune => self.budget_prune_due(now),
        }
    }
}
