//! The server engine: sessions, calls, grace windows, rejoin tokens, dedup, presence.
//!
//! Sans-IO: the driver reports sockets opening ([`ServerEngine::handle_open`]), frames
//! ([`ServerEngine::handle_frame`] / [`ServerEngine::handle_bad_frame`]), sockets closing
//! ([`ServerEngine::handle_close`]) and time passing ([`ServerEngine::handle_timeout`]),
//! and drains [`ServerEngine::poll_output`] (frames to send, sockets to close) and
//! [`ServerEngine::poll_timeout`] (when to call `handle_timeout` next). Every input takes
//! `now` in epoch milliseconds.

use super::store::{Call, Session, Slot, Store, StoreCounts, Tombstone};
use super::{hex, secret_hash, secret_matches, Entropy, TimerQueue};
use crate::protocol::*;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// A socket, numbered by the engine.
pub type ConnId = u64;

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
    /// The client logged out.
    Bye,
}

/// Result of checking a hello's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Malformed token or bad signature.
    Invalid(String),
    /// The token's expiry has passed.
    Expired,
}

/// Checks the token in a hello. `check_expiry` is false for a resume: a session outlives
/// the token that opened it.
pub trait Authenticator: Send {
    fn authenticate(&self, token: &str, now_ms: u64, check_expiry: bool)
        -> Result<Peer, AuthError>;
}

/// Server settings (all durations in milliseconds).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub resume_window_ms: u64,
    pub default_grace_ms: u64,
    pub grace_by_kind: BTreeMap<String, u64>,
    pub ring_timeout_ms: u64,
    pub ring_detach_grace_ms: u64,
    /// Messages kept per session for replay; past this the session cannot be resumed.
    pub replay_buffer: usize,
    pub max_frame_bytes: usize,
    pub max_msgs_per_sec: u32,
    pub burst: u32,
    /// Refused frames tolerated per burst window before the socket is closed.
    pub max_violations: u32,
    pub max_sessions_per_user: usize,
    pub max_metadata_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1_500,
            heartbeat_timeout_ms: 4_500,
            resume_window_ms: 60_000,
            default_grace_ms: 60_000,
            grace_by_kind: BTreeMap::new(),
            ring_timeout_ms: 30_000,
            ring_detach_grace_ms: 5_000,
            replay_buffer: 1_024,
            max_frame_bytes: 16 * 1024,
            max_msgs_per_sec: 50,
            burst: 200,
            max_violations: 20,
            max_sessions_per_user: 8,
            max_metadata_bytes: 2_048,
        }
    }
}

impl ServerConfig {
    pub fn grace_for(&self, kind: Option<&str>) -> u64 {
        kind.and_then(|k| self.grace_by_kind.get(k).copied())
            .unwrap_or(self.default_grace_ms)
    }

    fn longest_grace(&self) -> u64 {
        self.grace_by_kind
            .values()
            .copied()
            .chain([self.default_grace_ms, self.resume_window_ms])
            .max()
            .unwrap_or(0)
    }

    pub fn timers(&self) -> Timers {
        Timers {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            resume_window_ms: self.resume_window_ms,
            default_grace_ms: self.default_grace_ms,
            grace_ms: self.grace_by_kind.clone(),
            ring_timeout_ms: self.ring_timeout_ms,
            ring_detach_grace_ms: self.ring_detach_grace_ms,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_msgs_per_sec: self.max_msgs_per_sec,
            burst: self.burst,
        }
    }
}

/// Counters since start. Gauges come from [`ServerEngine::counts`].
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub connections_opened: u64,
    pub sessions_created: u64,
    pub resumes: u64,
    pub resume_failures: u64,
    pub superseded: u64,
    pub rejoins: u64,
    pub rejoins_denied: u64,
    pub calls_created: u64,
    pub dedups: u64,
    pub glare_merges: u64,
    pub ends: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub frames_in: u64,
    pub msgs_relayed: u64,
    pub dead_links: u64,
    pub auth_failures: u64,
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
}

#[derive(Debug)]
struct Conn {
    session: Option<SessionId>,
    last_rx: u64,
    tokens: f64,
    refill_at: u64,
    violations: u32,
}

/// The server engine. See the module documentation.
pub struct ServerEngine<S: Store> {
    config: ServerConfig,
    store: S,
    auth: Box<dyn Authenticator>,
    entropy: Box<dyn Entropy>,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    /// Sessions that asked for presence.
    watchers: HashSet<SessionId>,
    timers: TimerQueue<Timer>,
    out: VecDeque<Output>,
    metrics: Metrics,
    shutting_down: bool,
    /// A tombstone prune is scheduled (one at a time: each prune scans every user).
    prune_armed: bool,
}

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
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                session: None,
                last_rx: now,
                tokens: f64::from(self.config.burst),
                refill_at: now,
                violations: 0,
            },
        );
        self.metrics.connections_opened += 1;
        self.timers
            .schedule(now + self.config.heartbeat_timeout_ms, Timer::Hello(id));
        id
    }

    /// A socket closed or failed. Its session (if any) is detached and its resume
    /// window starts.
    pub fn handle_close(&mut self, conn: ConnId, now: u64) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(sid) = c.session {
                self.detach(&sid, now);
            }
        }
        self.store.commit();
    }

    /// Text frame for which decoding failed (too large, not JSON, binary).
    pub fn handle_bad_frame(&mut self, conn: ConnId, bad: BadFrame, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_rx = now;
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
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_rx = now;
        self.metrics.frames_in += 1;
        let session = c.session.clone();
        match (session, frame) {
            (None, ClientFrame::Hello(hello)) => self.hello(conn, hello, now),
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
                if !self.charge(conn, now) {
                    // A refused sequenced message still counts as handled so that the
                    // sequence stays gap-free; it changed nothing.
                    if let ClientFrame::Msg { seq, ack, .. } = frame {
                        self.take_ack(&sid, ack);
                        self.accept_seq(conn, &sid, seq, now, |engine, _| {
                            engine.push_error(
                                &sid,
                                ErrorCode::RateLimited,
                                "too many messages; this one was dropped",
                                Some(seq),
                            );
                        });
                    }
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
        while let Some((_, timer)) = self.timers.pop_due(now) {
            self.fire(timer, now);
        }
        self.store.commit();
    }

    /// Graceful shutdown: unless the store is durable, every call ends with
    /// `server-shutdown` at both ends; then every socket gets a fatal `server-shutdown`
    /// error and is closed.
    pub fn shutdown(&mut self, now: u64) {
        self.shutting_down = true;
        if !self.store.durable() {
            for id in self.store.call_ids() {
                self.end_call(&id, EndReason::ServerShutdown, now);
            }
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send(
                conn,
                ServerFrame::Error(ErrorBody {
                    code: ErrorCode::ServerShutdown,
                    message: "the server is shutting down; reconnect shortly".into(),
                    re: None,
                    fatal: true,
                }),
            );
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::Error(ErrorCode::ServerShutdown),
            });
        }
        self.conns.clear();
        self.timers.clear();
        self.store.commit();
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

    /// Token bucket per socket. Returns false (and answers) when the frame must be
    /// refused; closes the socket when refusals persist.
    fn charge(&mut self, conn: ConnId, now: u64) -> bool {
        let rate = f64::from(self.config.max_msgs_per_sec);
        let burst = f64::from(self.config.burst);
        let max_violations = self.config.max_violations;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let elapsed = now.saturating_sub(c.refill_at) as f64 / 1000.0;
        c.refill_at = now;
        c.tokens = (c.tokens + elapsed * rate).min(burst);
        if c.tokens >= 1.0 {
            c.tokens -= 1.0;
            if c.tokens >= burst / 2.0 {
                c.violations = 0;
            }
            return true;
        }
        c.violations += 1;
        let violations = c.violations;
        if violations > max_violations {
            self.fatal(
                conn,
                ErrorCode::RateLimited,
                "message flood; closing the socket",
                now,
            );
        }
        false
    }

    fn random_hex(&mut self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.entropy.fill(&mut buf);
        hex(&buf)
    }

    fn send(&mut self, conn: ConnId, frame: ServerFrame) {
        self.out.push_back(Output::Send { conn, frame });
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
        *self.metrics.errors.entry(code.as_str()).or_default() += 1;
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
        if let Some(c) = self.conns.remove(&conn) {
            self.out.push_back(Output::Close { conn, reason });
            if let Some(sid) = c.session {
                self.detach(&sid, now);
            }
        }
    }

    /// Appends a sequenced message to a session: buffered for replay, and sent at once
    /// when a socket is attached.
    fn push(&mut self, sid: &str, body: ServerMsg) {
        let limit = self.config.replay_buffer;
        let Some(s) = self.store.session_mut(sid) else {
            return;
        };
        s.out_seq += 1;
        let seq = s.out_seq;
        let ack = s.in_seq;
        let conn = s.conn;
        if s.unacked.len() >= limit {
            // The peer of this session is not acknowledging: the buffer can no longer
            // guarantee replay, so the next resume starts a new session.
            s.overflowed = true;
            s.unacked.clear();
        }
        if !s.overflowed {
            s.unacked.push_back((seq, ack, body.clone()));
        }
        if let Some(conn) = conn {
            self.send(conn, ServerFrame::Msg { seq, ack, body });
        }
    }

    fn push_error(&mut self, sid: &str, code: ErrorCode, message: &str, re: Option<u64>) {
        *self.metrics.errors.entry(code.as_str()).or_default() += 1;
        self.push(
            sid,
            ServerMsg::Error(ErrorBody {
                code,
                message: message.into(),
                re,
                fatal: false,
            }),
        );
    }

    fn take_ack(&mut self, sid: &str, ack: u64) {
        if let Some(s) = self.store.session_mut(sid) {
            while s.unacked.front().is_some_and(|(seq, _, _)| *seq <= ack) {
                s.unacked.pop_front();
            }
        }
    }

    /// Checks a client seq. Runs `handle` for a new in-order message (after recording it
    /// as handled); drops duplicates; a gap is fatal.
    fn accept_seq(
        &mut self,
        conn: ConnId,
        sid: &str,
        seq: u64,
        now: u64,
        handle: impl FnOnce(&mut Self, u64),
    ) {
        let Some(last) = self.store.session(sid).map(|s| s.in_seq) else {
            return;
        };
        if seq <= last {
            // Already handled: a replay after resume. Acknowledge again.
            self.send(conn, ServerFrame::Ack { ack: last });
            return;
        }
        if seq != last + 1 {
            self.fatal(
                conn,
                ErrorCode::BadSequence,
                format!("expected seq {}, got {seq}", last + 1),
                now,
            );
            return;
        }
        if let Some(s) = self.store.session_mut(sid) {
            s.in_seq = seq;
        }
        let mark = self.out.len();
        handle(self, seq);
        // Acknowledge at once unless a message to this socket carried the ack.
        let carried = self.out.iter().skip(mark).any(
            |o| matches!(o, Output::Send { conn: c, frame: ServerFrame::Msg { .. } } if *c == conn),
        );
        if !carried && self.conns.contains_key(&conn) {
            self.send(conn, ServerFrame::Ack { ack: seq });
        }
    }

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
                let ack = self.store.session(&sid).map_or(0, |s| s.in_seq);
                self.send(conn, ServerFrame::Pong { ack });
            }
            ClientFrame::Bye => self.bye(conn, &sid, now),
            ClientFrame::Unknown => self.conn_error(
                conn,
                ErrorCode::UnknownMessage,
                "unknown frame type",
                None,
                false,
            ),
        }
    }

    // ------------------------------------------------------------ sessions

    fn hello(&mut self, conn: ConnId, hello: Hello, now: u64) {
        if hello.v != PROTOCOL_VERSION {
            self.fatal(
                conn,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported (this server speaks {PROTOCOL_VERSION})",
                    hello.v
                ),
                now,
            );
            return;
        }
        if self.shutting_down {
            self.fatal(
                conn,
                ErrorCode::ServerShutdown,
                "the server is shutting down",
                now,
            );
            return;
        }
        if let Some(resume) = &hello.resume {
            match self.auth.authenticate(&hello.token, now, false) {
                Ok(user) => {
                    if self.try_resume(conn, &user, resume, now) {
                        return;
                    }
                    self.metrics.resume_failures += 1;
                }
                Err(AuthError::Expired) => {}
                Err(AuthError::Invalid(why)) => {
                    self.metrics.auth_failures += 1;
                    self.fatal(conn, ErrorCode::AuthFailed, why, now);
                    return;
                }
            }
        }
        let user = match self.auth.authenticate(&hello.token, now, true) {
            Ok(user) => user,
            Err(AuthError::Expired) => {
                self.metrics.auth_failures += 1;
                self.fatal(conn, ErrorCode::TokenExpired, "the token has expired", now);
                return;
            }
            Err(AuthError::Invalid(why)) => {
                self.metrics.auth_failures += 1;
                self.fatal(conn, ErrorCode::AuthFailed, why, now);
                return;
            }
        };
        self.new_session(conn, user, &hello, now);
    }

    fn try_resume(&mut self, conn: ConnId, user: &Peer, r: &Resume, now: u64) -> bool {
        let window = self.config.resume_window_ms;
        let ok = self.store.session(&r.session).is_some_and(|s| {
            s.user.id == user.id
                && (secret_matches(&r.secret, &s.secret_hash)
                    | s.prev_secret_hash.is_some_and(|h| secret_matches(&r.secret, &h)))
                && !s.overflowed
                && s.detached_at.is_none_or(|at| now < at + window)
                && r.last_seq <= s.out_seq
                // Everything after last_seq must still be in the buffer.
                && s.unacked.front().map_or(r.last_seq == s.out_seq, |(first, _, _)| *first <= r.last_seq + 1)
        });
        if !ok {
            return false;
        }
        let secret = self.random_hex(32);
        let sid = r.session.clone();
        let (old_conn, was_detached) = {
            let s = self.store.session_mut(&sid).expect("checked above");
            let old = s.conn.replace(conn);
            let was_detached = s.detached_at.take().is_some();
            // The presented secret stays valid until this welcome is known to have
            // arrived (see `Session::prev_secret_hash`).
            s.prev_secret_hash = Some(secret_hash(&r.secret));
            s.secret_hash = secret_hash(&secret);
            while s
                .unacked
                .front()
                .is_some_and(|(seq, _, _)| *seq <= r.last_seq)
            {
                s.unacked.pop_front();
            }
            (old, was_detached)
        };
        if let Some(old) = old_conn {
            // Half-open: the old socket still looked alive. It must never deliver
            // anything for this session again.
            self.metrics.superseded += 1;
            if let Some(c) = self.conns.get_mut(&old) {
                c.session = None;
            }
            self.conn_error(
                old,
                ErrorCode::Superseded,
                "this session was resumed on another socket",
                None,
                true,
            );
            self.conns.remove(&old);
            self.out.push_back(Output::Close {
                conn: old,
                reason: CloseReason::Error(ErrorCode::Superseded),
            });
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid.clone());
        }
        self.metrics.resumes += 1;
        let s = self.store.session(&sid).expect("exists");
        let welcome = Welcome {
            session: sid.clone(),
            secret,
            resumed: true,
            last_seq: s.in_seq,
            user: s.user.clone(),
            timers: self.config.timers(),
            limits: self.config.limits(),
            now,
            snapshot: None,
        };
        // Each replayed message carries the ack it was first sent with: the client
        // matches an answer to its request before the ack that covers the request.
        let replay: Vec<(u64, u64, ServerMsg)> = s.unacked.iter().cloned().collect();
        let presence = s.presence;
        self.send(conn, ServerFrame::Welcome(Box::new(welcome)));
        for (seq, ack, body) in replay {
            self.send(conn, ServerFrame::Msg { seq, ack, body });
        }
        self.schedule_heartbeat(conn, now);
        if was_detached {
            self.reattach_calls(&sid, now);
        }
        if presence {
            // Presence changes are not buffered for detached sessions; refresh.
            let entries = self.presence_list();
            self.push(&sid, ServerMsg::Presence { entries });
        }
        true
    }

    fn new_session(&mut self, conn: ConnId, user: Peer, hello: &Hello, now: u64) {
        let existing: Vec<SessionId> = self.store.sessions_of(&user.id).to_vec();
        if existing.len() >= self.config.max_sessions_per_user {
            // Make room by forgetting the oldest detached session (a reloaded page's
            // leftover); refuse if every session is live.
            let oldest_detached = existing.iter().find(|s| {
                self.store
                    .session(s)
                    .is_some_and(|sess| sess.conn.is_none())
            });
            match oldest_detached.cloned() {
                Some(old) => self.expire_session(&old, now),
                None => {
                    self.fatal(
                        conn,
                        ErrorCode::TooManySessions,
                        format!(
                            "at most {} sessions per user",
                            self.config.max_sessions_per_user
                        ),
                        now,
                    );
                    return;
                }
            }
        }
        let was_online = !self.store.sessions_of(&user.id).is_empty();
        let sid = self.random_hex(16);
        let secret = self.random_hex(32);
        self.store.put_session(Session {
            id: sid.clone(),
            user: user.clone(),
            secret_hash: secret_hash(&secret),
            prev_secret_hash: None,
            conn: Some(conn),
            detached_at: None,
            out_seq: 0,
            in_seq: 0,
            unacked: VecDeque::new(),
            overflowed: false,
            presence: hello.presence,
            call_waiting: hello.call_waiting,
            created_at: now,
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid.clone());
        }
        self.metrics.sessions_created += 1;
        if hello.presence {
            self.watchers.insert(sid.clone());
        }
        let snapshot = self.snapshot_for(&sid, &user.id, hello.presence, now);
        self.send(
            conn,
            ServerFrame::Welcome(Box::new(Welcome {
                session: sid,
                secret,
                resumed: false,
                last_seq: 0,
                user: user.clone(),
                timers: self.config.timers(),
                limits: self.config.limits(),
                now,
                snapshot: Some(snapshot),
            })),
        );
        self.schedule_heartbeat(conn, now);
        if !was_online {
            self.broadcast_presence(&user.id);
        }
    }

    fn snapshot_for(&self, sid: &str, user: &str, presence: bool, now: u64) -> Snapshot {
        // Stones outlive their window until the next prune; only recent ones count.
        let recent = now.saturating_sub(self.config.longest_grace());
        let calls = self
            .store
            .calls_of(user)
            .iter()
            .filter_map(|c| self.store.call(c))
            .map(|c| self.describe(c, sid))
            .collect();
        let ended = self
            .store
            .tombstones(user)
            .into_iter()
            .filter(|t| t.at >= recent)
            .map(|t| EndedCall {
                call: t.call,
                reason: t.reason,
            })
            .collect();
        Snapshot {
            calls,
            presence: if presence {
                self.presence_list()
            } else {
                Vec::new()
            },
            ended,
        }
    }

    fn schedule_heartbeat(&mut self, conn: ConnId, now: u64) {
        self.timers.schedule(
            now + self.config.heartbeat_timeout_ms,
            Timer::Heartbeat(conn),
        );
    }

    /// The socket of a session went away: start the resume window and the grace
    /// windows of its calls.
    fn detach(&mut self, sid: &str, now: u64) {
        let Some(s) = self.store.session_mut(sid) else {
            return;
        };
        s.conn = None;
        s.detached_at = Some(now);
        let user = s.user.id.clone();
        self.timers.schedule(
            now + self.config.resume_window_ms,
            Timer::SessionExpiry(sid.to_owned()),
        );
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        for id in calls {
            let Some(call) = self.store.call_mut(&id) else {
                continue;
            };
            let state = call.state;
            let Some(slot) = call.slot_of_mut(&user) else {
                continue;
            };
            if slot.session.as_deref() != Some(sid) {
                continue;
            }
            match state {
                CallState::Active => self.start_grace(&id, &user, now),
                CallState::Ringing => {
                    if call.caller.user.id == user {
                        call.caller_detached_at = Some(now);
                        self.timers.schedule(
                            now + self.config.ring_detach_grace_ms,
                            Timer::RingDetach(id.clone()),
                        );
                    }
                }
                CallState::Ended => {}
            }
        }
    }

    /// `user`'s side of an active call lost its session: unless its window already
    /// runs, mark it reconnecting until now + grace, arm the timer, and tell the other
    /// side the deadline.
    fn start_grace(&mut self, call_id: &str, user: &str, now: u64) {
        let Some(call) = self.store.call_mut(call_id) else {
            return;
        };
        let grace = call.grace_ms;
        let Some(slot) = call.slot_of_mut(user) else {
            return;
        };
        if slot.link == LinkState::Reconnecting {
            return;
        }
        let deadline = now + grace;
        slot.link = LinkState::Reconnecting;
        slot.deadline = Some(deadline);
        self.timers
            .schedule(deadline, Timer::Grace(call_id.to_owned()));
        let other = self
            .store
            .call(call_id)
            .and_then(|c| c.other_of(user).session.clone());
        if let Some(other) = other {
            self.push(
                &other,
                ServerMsg::ParticipantDisconnected {
                    call: call_id.to_owned(),
                    user: user.to_owned(),
                    deadline,
                    remaining_ms: grace,
                },
            );
        }
    }

    /// A detached session resumed: its calls are connected again.
    fn reattach_calls(&mut self, sid: &str, _now: u64) {
        let Some(user) = self.store.session(sid).map(|s| s.user.id.clone()) else {
            return;
        };
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        for id in calls {
            let Some(call) = self.store.call_mut(&id) else {
                continue;
            };
            if call.caller.user.id == user && call.caller.session.as_deref() == Some(sid) {
                call.caller_detached_at = None;
            }
            let Some(slot) = call.slot_of_mut(&user) else {
                continue;
            };
            if slot.session.as_deref() == Some(sid) && slot.link == LinkState::Reconnecting {
                slot.link = LinkState::Connected;
                slot.deadline = None;
                self.notify_reconnected(&id, &user);
            }
        }
    }

    fn notify_reconnected(&mut self, call: &str, user: &str) {
        let other = self
            .store
            .call(call)
            .and_then(|c| c.other_of(user).session.clone());
        if let Some(other) = other {
            self.push(
                &other,
                ServerMsg::ParticipantReconnected {
                    call: call.to_owned(),
                    user: user.to_owned(),
                },
            );
        }
    }

    /// The resume window passed (or room was needed): forget the session. Calls it held
    /// keep waiting for a rejoin until their grace deadline.
    fn expire_session(&mut self, sid: &str, now: u64) {
        let Some(session) = self.store.take_session(sid) else {
            return;
        };
        if let Some(conn) = session.conn {
            self.close_conn(conn, CloseReason::DeadLink, now);
        }
        self.watchers.remove(sid);
        let user = session.user.id;
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        let mut withdraw = Vec::new();
        for id in calls {
            let Some(call) = self.store.call_mut(&id) else {
                continue;
            };
            let state = call.state;
            let is_caller = call.caller.user.id == user;
            let Some(slot) = call.slot_of_mut(&user) else {
                continue;
            };
            if slot.session.as_deref() != Some(sid) {
                continue;
            }
            slot.session = None;
            if state == CallState::Ringing && is_caller {
                withdraw.push(id);
            } else if state == CallState::Active {
                // Evicted while still attached: the window starts now.
                self.start_grace(&id, &user, now);
            }
        }
        for id in withdraw {
            self.end_call(&id, EndReason::Cancelled, now);
        }
        if self.store.sessions_of(&user).is_empty() {
            self.broadcast_presence(&user);
        }
    }

    fn bye(&mut self, conn: ConnId, sid: &str, now: u64) {
        let Some(user) = self.store.session(sid).map(|s| s.user.id.clone()) else {
            return;
        };
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        for id in calls {
            let held = self.store.call(&id).and_then(|c| {
                let slot = c.slot_of(&user)?;
                let holds = slot.session.as_deref() == Some(sid);
                // A ringing incoming call is offered to every session; if this was the
                // user's last session, logging out declines it.
                let last_offer = c.state == CallState::Ringing
                    && c.callee.user.id == user
                    && self.store.sessions_of(&user).len() == 1;
                Some((c.state, holds || last_offer, c.caller.user.id == user))
            });
            if let Some((state, true, is_caller)) = held {
                let reason = match (state, is_caller) {
                    (CallState::Ringing, true) => EndReason::Cancelled,
                    (CallState::Ringing, false) => EndReason::Declined,
                    _ => EndReason::Hangup,
                };
                self.end_call(&id, reason, now);
            }
        }
        self.conns.remove(&conn);
        self.out.push_back(Output::Close {
            conn,
            reason: CloseReason::Bye,
        });
        if let Some(s) = self.store.session_mut(sid) {
            s.conn = None;
        }
        self.expire_session(sid, now);
    }

    // --------------------------------------------------------------- timers

    fn fire(&mut self, timer: Timer, now: u64) {
        match timer {
            Timer::Hello(conn) => {
                if self.conns.get(&conn).is_some_and(|c| c.session.is_none()) {
                    self.fatal(conn, ErrorCode::HelloTimeout, "no hello in time", now);
                }
            }
            Timer::Heartbeat(conn) => {
                let timeout = self.config.heartbeat_timeout_ms;
                if let Some(c) = self.conns.get(&conn) {
                    let due = c.last_rx + timeout;
                    if now >= due {
                        self.metrics.dead_links += 1;
                        self.close_conn(conn, CloseReason::DeadLink, now);
                    } else {
                        self.timers.schedule(due, Timer::Heartbeat(conn));
                    }
                }
            }
            Timer::SessionExpiry(sid) => {
                let window = self.config.resume_window_ms;
                let expired = self.store.session(&sid).is_some_and(|s| {
                    s.conn.is_none() && s.detached_at.is_some_and(|at| now >= at + window)
                });
                if expired {
                    self.expire_session(&sid, now);
                }
            }
            Timer::Ring(id) => {
                let due = self.store.call(&id).is_some_and(|c| {
                    c.state == CallState::Ringing && c.ring_deadline.is_some_and(|d| now >= d)
                });
                if due {
                    self.end_call(&id, EndReason::NoAnswer, now);
                }
            }
            Timer::RingDetach(id) => {
                let grace = self.config.ring_detach_grace_ms;
                let due = self.store.call(&id).is_some_and(|c| {
                    c.state == CallState::Ringing
                        && c.caller_detached_at.is_some_and(|at| now >= at + grace)
                });
                if due {
                    self.end_call(&id, EndReason::Cancelled, now);
                }
            }
            Timer::Grace(id) => {
                let failed = self.store.call(&id).is_some_and(|c| {
                    c.state == CallState::Active
                        && c.slots().iter().any(|s| {
                            s.link == LinkState::Reconnecting
                                && s.deadline.is_some_and(|d| now >= d)
                        })
                });
                if failed {
                    self.end_call(&id, EndReason::ReconnectFailed, now);
                }
            }
            Timer::Tombstones => {
                self.prune_armed = false;
                let longest = self.config.longest_grace();
                if self.store.prune_tombstones(now.saturating_sub(longest)) {
                    self.arm_prune(now);
                }
            }
        }
    }

    // ----------------------------------------------------------------- calls

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
            } => self.invite(sid, &user, seq, peer, kind, metadata, now),
            ClientMsg::Accept { call } => self.accept(sid, &user, &call, now),
            ClientMsg::Decline { call, busy } => {
                let c = self.participant_call(&user.id, &call)?;
                if c.callee.user.id != user.id {
                    return refuse(ErrorCode::InvalidState, "only the callee can decline");
                }
                // This session's own accept made it active while the decline was on its
                // way: the user saw a ringing call and declined it, so it ends declined.
                let crossed_own_accept =
                    c.state == CallState::Active && c.callee.session.as_deref() == Some(sid);
                if c.state != CallState::Ringing && !crossed_own_accept {
                    return refuse(ErrorCode::InvalidState, "the call is not ringing");
                }
                let reason = if busy {
                    EndReason::Busy
                } else {
                    EndReason::Declined
                };
                self.end_call(&call, reason, now);
                Ok(())
            }
            ClientMsg::Cancel { call } => {
                let c = self.participant_call(&user.id, &call)?;
                if c.caller.user.id != user.id {
                    return refuse(ErrorCode::InvalidState, "only the caller can cancel");
                }
                // Answered while the cancel was on its way: the caller never saw it
                // active, so it ends cancelled at both ends.
                let crossed_answer =
                    c.state == CallState::Active && c.caller.session.as_deref() == Some(sid);
                if c.state != CallState::Ringing && !crossed_answer {
                    return refuse(ErrorCode::InvalidState, "the call is not ringing");
                }
                self.end_call(&call, EndReason::Cancelled, now);
                Ok(())
            }
            ClientMsg::Hangup { call } => {
                let c = self.participant_call(&user.id, &call)?;
                let reason = match c.state {
                    CallState::Ringing if c.caller.user.id == user.id => EndReason::Cancelled,
                    CallState::Ringing => EndReason::Declined,
                    _ => EndReason::Hangup,
                };
                self.end_call(&call, reason, now);
                Ok(())
            }
            ClientMsg::Signal { call, payload } => self.signal(sid, &user, &call, payload),
            ClientMsg::Rejoin { call, token } => self.rejoin(sid, &user, &call, &token),
            ClientMsg::SetStatus { status } => {
                if status == PresenceStatus::Offline {
                    return refuse(
                        ErrorCode::InvalidArgument,
                        "status must be available or busy",
                    );
                }
                self.store.set_chosen_status(&user.id, status);
                self.broadcast_presence(&user.id);
                Ok(())
            }
            ClientMsg::Unknown => refuse(ErrorCode::UnknownMessage, "unknown message type"),
        }
    }

    fn participant_call(&self, user: &str, call: &str) -> Result<&Call, (ErrorCode, String)> {
        let c = self
            .store
            .call(call)
            .ok_or((ErrorCode::UnknownCall, format!("no call {call}")))?;
        if c.slot_of(user).is_none() {
            return Err((
                ErrorCode::NotParticipant,
                "you are not a participant of this call".into(),
            ));
        }
        Ok(c)
    }

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        sid: &str,
        user: &Peer,
        seq: u64,
        peer: UserId,
        kind: Option<String>,
        metadata: Option<serde_json::Value>,
        now: u64,
    ) -> Handled {
        if peer == user.id {
            return refuse(ErrorCode::SelfCall, "you cannot call yourself");
        }
        if peer.is_empty() || peer.len() > 256 {
            return refuse(ErrorCode::InvalidArgument, "peer must be 1 to 256 bytes");
        }
        if kind.as_ref().is_some_and(|k| k.is_empty() || k.len() > 64) {
            return refuse(ErrorCode::InvalidArgument, "kind must be 1 to 64 bytes");
        }
        if let Some(m) = &metadata {
            let size = serde_json::to_string(m).map_or(usize::MAX, |s| s.len());
            if size > self.config.max_metadata_bytes {
                return refuse(
                    ErrorCode::InvalidArgument,
                    format!(
                        "metadata is {size} bytes; at most {} allowed",
                        self.config.max_metadata_bytes
                    ),
                );
            }
        }
        if let Some(existing) = self.store.call_between(&user.id, &peer).cloned() {
            self.metrics.dedups += 1;
            let glare = self
                .store
                .call(&existing)
                .is_some_and(|c| c.state == CallState::Ringing && c.callee.user.id == user.id);
            if glare {
                // Both called each other: this invite answers the other one.
                self.metrics.glare_merges += 1;
                let info = self.info_for(&existing, sid);
                self.push(
                    sid,
                    ServerMsg::CallCreated {
                        re: seq,
                        call: info,
                        existing: true,
                    },
                );
                return self.accept(sid, user, &existing, now);
            }
            let info = self.info_for(&existing, sid);
            self.push(
                sid,
                ServerMsg::CallCreated {
                    re: seq,
                    call: info,
                    existing: true,
                },
            );
            return Ok(());
        }
        let callee_sessions: Vec<SessionId> = self.store.sessions_of(&peer).to_vec();
        let callee_peer = callee_sessions
            .first()
            .and_then(|s| self.store.session(s))
            .map(|s| s.user.clone());
        let Some(callee_peer) = callee_peer else {
            return refuse(ErrorCode::PeerOffline, format!("{peer} is not online"));
        };
        let id = self.random_hex(12);
        let grace = self.config.grace_for(kind.as_deref());
        let call = Call {
            id: id.clone(),
            kind,
            state: CallState::Ringing,
            caller: Slot {
                user: user.clone(),
                session: Some(sid.to_owned()),
                token_hash: None,
                link: LinkState::Connected,
                deadline: None,
            },
            callee: Slot {
                user: callee_peer,
                session: None,
                token_hash: None,
                link: LinkState::Pending,
                deadline: None,
            },
            grace_ms: grace,
            ring_deadline: Some(now + self.config.ring_timeout_ms),
            caller_detached_at: None,
            metadata,
            created_at: now,
        };
        self.metrics.calls_created += 1;
        let busy = !self.store.calls_of(&peer).is_empty()
            && !callee_sessions
                .iter()
                .any(|s| self.store.session(s).is_some_and(|s| s.call_waiting));
        if busy {
            let info = self.describe(&call, sid);
            self.push(
                sid,
                ServerMsg::CallCreated {
                    re: seq,
                    call: info,
                    existing: false,
                },
            );
            self.push(
                sid,
                ServerMsg::CallEnded {
                    call: id.clone(),
                    reason: EndReason::Busy,
                },
            );
            self.count_end(EndReason::Busy);
            self.store.add_tombstone(
                &user.id,
                Tombstone {
                    call: id,
                    reason: EndReason::Busy,
                    at: now,
                },
            );
            return Ok(());
        }
        self.timers
            .schedule(now + self.config.ring_timeout_ms, Timer::Ring(id.clone()));
        self.store.put_call(call);
        let info = self.info_for(&id, sid);
        self.push(
            sid,
            ServerMsg::CallCreated {
                re: seq,
                call: info,
                existing: false,
            },
        );
        for callee_sid in callee_sessions {
            let info = self.info_for(&id, &callee_sid);
            self.push(&callee_sid, ServerMsg::IncomingCall { call: info });
        }
        self.broadcast_presence(&user.id);
        self.broadcast_presence(&peer);
        Ok(())
    }

    fn accept(&mut self, sid: &str, user: &Peer, call_id: &str, now: u64) -> Handled {
        let c = self.participant_call(&user.id, call_id)?;
        if c.callee.user.id != user.id {
            return refuse(ErrorCode::InvalidState, "only the callee can accept");
        }
        if c.state != CallState::Ringing {
            return refuse(ErrorCode::InvalidState, "the call is not ringing");
        }
        let caller_detached = c.caller_detached_at.is_some();
        let caller_user = c.caller.user.id.clone();
        let grace = c.grace_ms;
        let caller_token = self.random_hex(32);
        let callee_token = self.random_hex(32);
        {
            let c = self.store.call_mut(call_id).expect("checked");
            c.state = CallState::Active;
            c.ring_deadline = None;
            c.callee.session = Some(sid.to_owned());
            c.callee.link = LinkState::Connected;
            c.callee.token_hash = Some(secret_hash(&callee_token));
            c.caller.token_hash = Some(secret_hash(&caller_token));
            if caller_detached {
                // The caller's link dropped while ringing and has not come back yet:
                // the grace window applies from now.
                c.caller_detached_at = None;
                c.caller.link = LinkState::Reconnecting;
                c.caller.deadline = Some(now + grace);
            }
        }
        if caller_detached {
            self.timers
                .schedule(now + grace, Timer::Grace(call_id.to_owned()));
        }
        let caller_sid = self
            .store
            .call(call_id)
            .and_then(|c| c.caller.session.clone());
        if let Some(caller_sid) = &caller_sid {
            let info = self.info_for(call_id, caller_sid);
            self.push(
                caller_sid,
                ServerMsg::CallStarted {
                    call: info,
                    rejoin_token: caller_token,
                    rejoined: false,
                },
            );
        }
        let info = self.info_for(call_id, sid);
        self.push(
            sid,
            ServerMsg::CallStarted {
                call: info,
                rejoin_token: callee_token,
                rejoined: false,
            },
        );
        if caller_detached {
            self.push(
                sid,
                ServerMsg::ParticipantDisconnected {
                    call: call_id.to_owned(),
                    user: caller_user,
                    deadline: now + grace,
                    remaining_ms: grace,
                },
            );
        }
        // The incoming call was offered to every session of the callee; the others
        // learn that it is held elsewhere now.
        let others: Vec<SessionId> = self
            .store
            .sessions_of(&user.id)
            .iter()
            .filter(|s| s.as_str() != sid)
            .cloned()
            .collect();
        for other in others {
            self.push(
                &other,
                ServerMsg::CallMoved {
                    call: call_id.to_owned(),
                },
            );
        }
        Ok(())
    }

    fn signal(
        &mut self,
        sid: &str,
        user: &Peer,
        call_id: &str,
        payload: serde_json::Value,
    ) -> Handled {
        let c = self.participant_call(&user.id, call_id)?;
        if c.state != CallState::Active {
            return refuse(ErrorCode::InvalidState, "the call is not active");
        }
        let mine = c.slot_of(&user.id).expect("participant");
        if mine.session.as_deref() != Some(sid) {
            return refuse(
                ErrorCode::InvalidState,
                "another session holds this call; rejoin to take it",
            );
        }
        let Some(target) = c.other_of(&user.id).session.clone() else {
            return refuse(
                ErrorCode::PeerOffline,
                "the other participant is away; the payload was not delivered",
            );
        };
        self.metrics.msgs_relayed += 1;
        self.push(
            &target,
            ServerMsg::Signal {
                call: call_id.to_owned(),
                from: user.id.clone(),
                payload,
            },
        );
        Ok(())
    }

    fn rejoin(&mut self, sid: &str, user: &Peer, call_id: &str, token: &str) -> Handled {
        let denied = |engine: &mut Self, why: &str| {
            engine.metrics.rejoins_denied += 1;
            refuse(ErrorCode::RejoinDenied, why)
        };
        let Some(c) = self.store.call(call_id) else {
            self.metrics.rejoins_denied += 1;
            return refuse(ErrorCode::UnknownCall, "no such call (it may have ended)");
        };
        let Some(slot) = c.slot_of(&user.id) else {
            return denied(self, "this call is not yours");
        };
        if c.state != CallState::Active {
            return denied(self, "only an active call can be rejoined");
        }
        let valid = slot
            .token_hash
            .as_ref()
            .is_some_and(|h| secret_matches(token, h));
        if !valid {
            // The usual way to get here: two tabs (or devices) of this person rejoined
            // with one token and the other one won. Say so, so that this one can offer
            // to move the call (with the token the winner now holds).
            let live_elsewhere = slot
                .session
                .as_deref()
                .filter(|holder| *holder != sid)
                .and_then(|holder| self.store.session(holder))
                .is_some_and(|s| s.conn.is_some());
            if live_elsewhere {
                self.metrics.rejoins_denied += 1;
                return refuse(
                    ErrorCode::HeldElsewhere,
                    "another tab or device of yours holds this call now",
                );
            }
            return denied(self, "the rejoin token is wrong or already used");
        }
        let previous = slot.session.clone();
        let new_token = self.random_hex(32);
        {
            let c = self.store.call_mut(call_id).expect("checked");
            let slot = c.slot_of_mut(&user.id).expect("checked");
            slot.session = Some(sid.to_owned());
            slot.token_hash = Some(secret_hash(&new_token));
            slot.link = LinkState::Connected;
            slot.deadline = None;
        }
        self.metrics.rejoins += 1;
        if let Some(prev) = previous.filter(|p| p != sid) {
            self.push(
                &prev,
                ServerMsg::CallMoved {
                    call: call_id.to_owned(),
                },
            );
        }
        let info = self.info_for(call_id, sid);
        self.push(
            sid,
            ServerMsg::CallStarted {
                call: info,
                rejoin_token: new_token,
                rejoined: true,
            },
        );
        // Tell the other side in every case: a fresh page needs fresh media
        // negotiation even when the previous holder never dropped.
        self.notify_reconnected(call_id, &user.id);
        Ok(())
    }

    fn count_end(&mut self, reason: EndReason) {
        *self.metrics.ends.entry(reason.as_str()).or_default() += 1;
    }

    /// Ends a call at both ends with one reason and forgets it.
    fn end_call(&mut self, call_id: &str, reason: EndReason, now: u64) {
        let Some(call) = self.store.take_call(call_id) else {
            return;
        };
        self.count_end(reason);
        // Every session of both identities hears it: the holders, a ringing callee's
        // other tabs, and a reloaded page that is showing a rejoin prompt for it.
        let mut targets: Vec<SessionId> = Vec::new();
        for slot in call.slots() {
            targets.extend(self.store.sessions_of(&slot.user.id).iter().cloned());
            self.store.add_tombstone(
                &slot.user.id,
                Tombstone {
                    call: call.id.clone(),
                    reason,
                    at: now,
                },
            );
        }
        targets.sort();
        targets.dedup();
        for t in targets {
            self.push(
                &t,
                ServerMsg::CallEnded {
                    call: call.id.clone(),
                    reason,
                },
            );
        }
        self.arm_prune(now);
        if !self.shutting_down {
            self.broadcast_presence(&call.caller.user.id);
            self.broadcast_presence(&call.callee.user.id);
        }
    }

    fn info_for(&self, call_id: &str, sid: &str) -> CallInfo {
        let call = self
            .store
            .call(call_id)
            .expect("caller checked the call exists");
        self.describe(call, sid)
    }

    fn arm_prune(&mut self, now: u64) {
        if !self.prune_armed {
            self.prune_armed = true;
            self.timers
                .schedule(now + self.config.longest_grace(), Timer::Tombstones);
        }
    }

    /// A call as seen by one session.
    fn describe(&self, call: &Call, sid: &str) -> CallInfo {
        let part = |s: &Slot| ParticipantInfo {
            user: s.user.clone(),
            link: s.link,
            deadline: s.deadline,
        };
        CallInfo {
            id: call.id.clone(),
            kind: call.kind.clone(),
            state: call.state,
            caller: part(&call.caller),
            callee: part(&call.callee),
            grace_ms: call.grace_ms,
            ring_deadline: call.ring_deadline,
            metadata: call.metadata.clone(),
            held_here: call
                .slots()
                .iter()
                .any(|s| s.session.as_deref() == Some(sid)),
        }
    }

    // -------------------------------------------------------------- presence

    fn status_of(&self, user: &str) -> PresenceStatus {
        if self.store.sessions_of(user).is_empty() {
            PresenceStatus::Offline
        } else if !self.store.calls_of(user).is_empty() {
            PresenceStatus::Busy
        } else {
            self.store.chosen_status(user)
        }
    }

    fn presence_list(&self) -> Vec<PresenceEntry> {
        let mut list: Vec<PresenceEntry> = self
            .store
            .online_users()
            .into_iter()
            .map(|user| PresenceEntry {
                status: self.status_of(&user.id),
                user,
            })
            .collect();
        list.sort_by(|a, b| a.user.id.cmp(&b.user.id));
        list
    }

    fn broadcast_presence(&mut self, user: &str) {
        if self.watchers.is_empty() {
            return;
        }
        let peer = self
            .store
            .sessions_of(user)
            .first()
            .and_then(|s| self.store.session(s))
            .map(|s| s.user.clone())
            .unwrap_or_else(|| Peer {
                id: user.to_owned(),
                name: user.to_owned(),
            });
        let entry = PresenceEntry {
            user: peer,
            status: self.status_of(user),
        };
        let mut watchers: Vec<SessionId> = self.watchers.iter().cloned().collect();
        watchers.sort();
        for w in watchers {
            // Detached watchers get a full list when they resume instead of a backlog.
            let attached = self.store.session(&w).is_some_and(|s| s.conn.is_some());
            if attached {
                self.push(
                    &w,
                    ServerMsg::PresenceChanged {
                        entry: entry.clone(),
                    },
                );
            }
        }
    }
}

/// `--dev` mode: the token *is* the identity (`alice`, or `alice:Alice Smith` to set a
/// display name). Anyone can be anyone: for local use only, and the server says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevAuth;

impl Authenticator for DevAuth {
    fn authenticate(
        &self,
        token: &str,
        _now_ms: u64,
        _check_expiry: bool,
    ) -> Result<Peer, AuthError> {
        let (id, name) = token.split_once(':').unwrap_or((token, token));
        let valid = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        if !valid {
            return Err(AuthError::Invalid(
                "dev identity must be 1-128 characters of [A-Za-z0-9-_.@]".into(),
            ));
        }
        if name.is_empty() || name.len() > 128 {
            return Err(AuthError::Invalid(
                "display name must be 1-128 bytes".into(),
            ));
        }
        Ok(Peer {
            id: id.to_owned(),
            name: name.to_owned(),
        })
    }
}
