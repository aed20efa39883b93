//! The Holdfast wire protocol. **This module's documentation is the specification.**
//!
//! # Transport
//!
//! One WebSocket per page, JSON **text** frames only (a binary frame is a `bad-frame`
//! error). Every frame is a JSON object whose `"t"` field names its kind. A frame larger
//! than the server's announced limit ([`Limits::max_frame_bytes`], default 16 KiB) is
//! answered with `frame-too-large` and dropped without changing any state.
//!
//! # Sessions
//!
//! The first client frame on every socket is [`ClientFrame::Hello`]. The server answers
//! with [`ServerFrame::Welcome`] (or with a fatal [`ServerFrame::Error`] and a close).
//! A welcome opens or resumes a *session*: the unit that survives socket drops. A session
//! is identified by [`SessionId`] and proven by a resume secret that the server rotates in
//! every welcome. The secret a resume presented stays valid only until the client's
//! first frame after that welcome (proof that the new secret arrived; a welcome lost with
//! its socket must not lose the session); after that an old secret is never accepted.
//!
//! # Sequencing and exactly-once delivery
//!
//! Application messages travel inside [`ClientFrame::Msg`] / [`ServerFrame::Msg`]. Each
//! side numbers the messages it sends `1, 2, 3, …` with no gaps; the counters never
//! reset inside a session (they restart at 1 only in a new session). Each side
//! acknowledges the highest sequence number it has *handled* with an `ack` field: on
//! every `msg`, `ack` and heartbeat frame. A sender keeps every message until it is
//! acknowledged.
//!
//! On resume, the hello carries the last server sequence the client handled and the
//! welcome carries the last client sequence the server handled. Each side then re-sends,
//! in order, exactly the messages the other has not handled. A receiver drops any `msg`
//! whose `seq` is not greater than the last it handled (a duplicate), so a message is
//! handled exactly once however often the link drops inside the resume window. A `seq`
//! that skips ahead is a protocol violation (`bad-sequence`, fatal).
//!
//! If the session cannot be resumed (unknown, expired, or the server's replay buffer
//! overflowed while the client was away), the welcome says `resumed: false`, carries a
//! fresh session and a full [`Snapshot`] of the user's calls, and both counters start
//! again at 1. The client's unacknowledged messages of the lost session are not
//! re-sent (the server may have handled them); the app is told the session was lost.
//!
//! # Heartbeats and dead links
//!
//! The welcome announces [`Timers::heartbeat_interval_ms`] and
//! [`Timers::heartbeat_timeout_ms`]. The client sends [`ClientFrame::Ping`] whenever it
//! has sent nothing for one interval; the server answers every ping at once with
//! [`ServerFrame::Pong`]. Either side that has received nothing for one timeout
//! declares the link dead and closes it: the client then reconnects and resumes, the
//! server detaches the session and starts its resume window. Defaults: interval 1.5 s,
//! timeout 4.5 s, so a silently dead link is noticed within 4.5 s.
//!
//! # Calls
//!
//! A call has exactly two participants, the *caller* and the *callee*, each an identity.
//! States: `ringing` → `active` → `ended` (or `ringing` → `ended`). The server is the
//! authority and prevents duplicates: a second invite between the same two people (in
//! either direction) returns the existing call; two people inviting each other at once
//! get one call (the second invite accepts the first); a callee already in a call with
//! someone else ends the new call with `busy` unless one of the callee's sessions
//! declared [`Hello::call_waiting`].
//!
//! While ringing, the incoming call is offered to every session of the callee; the one
//! that accepts holds the call and the others are told [`ServerMsg::CallMoved`]. A caller
//! whose link drops while ringing withdraws the call (`cancelled`) unless it resumes
//! within [`Timers::ring_detach_grace_ms`]; an unanswered call ends `no-answer` at
//! [`Timers::ring_timeout_ms`].
//!
//! When an active participant's link drops, the call is *not* ended: the other side
//! gets [`ServerMsg::ParticipantDisconnected`] with the absolute deadline (server epoch
//! milliseconds) and the remaining milliseconds, then either
//! [`ServerMsg::ParticipantReconnected`] or [`ServerMsg::CallEnded`] with
//! `reconnect-failed` when the deadline passes. The window length (grace) depends on the
//! call's `kind` and is announced in [`CallInfo::grace_ms`] and [`Timers::grace_ms`].
//!
//! # Rejoin tokens
//!
//! When a call becomes active (and again after every rejoin) each participant receives a
//! [`ServerMsg::CallStarted`] with a rejoin token: 32 bytes from a CSPRNG,
//! hex-encoded (64 characters), bound to that call and that identity, stored only as a SHA-256 hash
//! on the server and compared in constant time. A page that lost its session (reload,
//! crash, closed tab) opens a new session and sends [`ClientMsg::Rejoin`]; on success it
//! receives a new `call-started` with a *new* token (the old one is spent). A rejoin while
//! another session of the same identity holds the call moves the call: the old session
//! gets [`ServerMsg::CallMoved`].
//!
//! # Server restarts
//!
//! A server whose state is durable (`--store redis://…`) keeps every session, call,
//! rejoin token and replay buffer across a restart, and acknowledges nothing (no `ack`,
//! no message, no welcome) before its effects are stored. What a client holds
//! unacknowledged is therefore exactly what it must re-send, whenever the server died.
//!
//! - **Graceful restart** (SIGTERM): the server stops accepting, stores what is left,
//!   sends every socket the fatal error `server-restarting` and closes it. The client
//!   reconnects at once and resumes; while the new process is not listening yet, it
//!   retries at its base backoff delay (with jitter), without growing it, for
//!   [`RESTART_FAST_RETRY_MS`]. Calls do not end: the other side may see
//!   `participant-disconnected` then `participant-reconnected` (the new process counts
//!   the sessions attached at the restart as dropped when it starts, so every grace
//!   window starts afresh then).
//! - **Crash** (SIGKILL, OOM): the sockets reset; clients retry with backoff and resume
//!   when a process is back. Grace windows that were running keep their deadlines.
//! - Either way the resume answers `resumed: true`, with the same session, calls and
//!   tokens, and replay restores exactly-once delivery in both directions.
//!
//! A server whose state is in memory ends every call with `server-shutdown` at SIGTERM
//! and sends `server-shutdown` (not `server-restarting`): its sessions do not survive.
//! A client that comes back to a server that lost its state gets `resumed: false`, and
//! a call missing from the new session's snapshot without a recorded end reason is
//! reported ended `server-shutdown` (the server went away), never `cancelled`.
//!
//! # Probing the socket URL
//!
//! A browser's WebSocket cannot see why an upgrade failed: a server that is down and a
//! URL where no Holdfast server listens both end in a bare `close`. So a client whose
//! socket failed before the welcome may send a plain HTTP `GET` to the socket URL (the
//! same URL with `http(s)://`, no upgrade headers). A Holdfast server answers it with
//! status [`PROBE_STATUS`] (426 Upgrade Required), `Access-Control-Allow-Origin: *` (a
//! page of any origin may read it; it tells only what is below) and a JSON body,
//! [`ProbeAnswer`]: `{"holdfast":1,"protocol":1}`; the protocol version is also in the
//! [`PROBE_HEADER`] header (exposed to cross-origin reads), so a page can tell without
//! reading the body. A refused upgrade (an origin the server does not allow) gets the
//! same mark with status 403. Any other answer (a 404, an HTML page)
//! means no Holdfast endpoint at that URL; no answer at all means unreachable.
//!
//! # Errors
//!
//! Errors carry a stable, machine-readable [`ErrorCode`]. An error answering a sequenced
//! client message arrives as [`ServerMsg::Error`] with `re` set to that message's `seq`;
//! the message counts as handled (it is acknowledged) but changed nothing. Connection
//! errors arrive as [`ServerFrame::Error`]; when `fatal` is true the server closes the
//! socket right after it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// After `server-restarting`, how long a client keeps retrying at its base backoff
/// delay instead of backing off further (the new process is expected within this).
pub const RESTART_FAST_RETRY_MS: u64 = 30_000;

/// The protocol version this build speaks. A hello with another version gets the fatal
/// error `unsupported-version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The HTTP status of a Holdfast server's answer to a plain `GET` of its socket URL
/// (see [Probing the socket URL](self#probing-the-socket-url)).
pub const PROBE_STATUS: u16 = 426;

/// The header of a Holdfast server's probe answer that carries its [`PROTOCOL_VERSION`].
pub const PROBE_HEADER: &str = "x-holdfast-protocol";

/// The body of a Holdfast server's answer to a plain `GET` of its socket URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    /// Always 1: marks the answer as Holdfast's.
    pub holdfast: u32,
    /// The [`PROTOCOL_VERSION`] the server speaks.
    pub protocol: u32,
}

impl ProbeAnswer {
    /// This build's answer.
    pub fn this_build() -> Self {
        Self {
            holdfast: 1,
            protocol: PROTOCOL_VERSION,
        }
    }
}

/// A user's identity as asserted by the app's backend (the JWT `sub`).
pub type UserId = String;
/// A session id: 32 lowercase hex characters chosen by the server.
pub type SessionId = String;
/// A call id: 24 lowercase hex characters chosen by the server.
pub type CallId = String;

/// Frames a client sends. Tagged by `"t"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum ClientFrame {
    /// Must be the first frame on every socket; any other frame first is
    /// `not-authenticated` (fatal). A second hello on the same socket is
    /// `already-authenticated`.
    Hello(Hello),
    /// A sequenced application message.
    Msg {
        /// This message's sequence number (1-based, consecutive within the session).
        seq: u64,
        /// Highest server sequence the client has handled.
        ack: u64,
        /// The message.
        body: ClientMsg,
    },
    /// A bare acknowledgement: highest server sequence handled.
    Ack { ack: u64 },
    /// Heartbeat, sent when the client has sent nothing for one heartbeat interval.
    /// The server answers with `pong`.
    Ping { ack: u64 },
    /// End the session now (logout): the server ends the user's calls held by this
    /// session with `hangup` and forgets the session; no resume is possible. The server
    /// answers [`ServerFrame::Bye`] once that is done, then closes the socket; a page
    /// waits for it before it goes away.
    ///
    /// When the socket cannot carry it (the link is down, or no answer comes), the page
    /// sends the same logout over HTTP instead: `POST <socket URL>/bye` (e.g.
    /// `/ws/bye`), a body of JSON text `{"token", "session", "secret"}` (the token of the
    /// hello, the session id and its latest resume secret, proof as for a resume),
    /// fit for `navigator.sendBeacon` while the page unloads. The answer is `204` when
    /// the session was ended or was already gone (the socket's `bye` got there first),
    /// `403` when the proof failed (nothing changes), `400` for a body that is not that.
    Bye,
    /// The page is going away (closed, reloaded, navigated off; not into the
    /// back/forward cache): the server forgets the session now instead of keeping it
    /// detached for the resume window. Unlike `bye` no call ends: each waits for a
    /// rejoin (from the page's rejoin record) for its grace window, as after a dropped
    /// link.
    Leave,
    /// Any unrecognised `"t"`: answered with `unknown-message`, nothing else happens.
    #[serde(other)]
    #[cfg_attr(all(test, not(target_arch = "wasm32")), ts(skip))]
    Unknown,
}

/// The opening frame of a socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The app backend's signed token (HS256 JWT with `sub`, `name`, `exp`), or a bare
    /// identity when the server runs in `--dev` mode. `exp` is checked only when a
    /// session is created, never at resume: a user mid-call is not cut off because a
    /// token expired during a Wi-Fi drop.
    pub token: String,
    /// Present to resume an existing session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// Receive presence (who is online) for this session.
    #[serde(default)]
    pub presence: bool,
    /// Accept incoming calls while already in a call (call waiting). Otherwise a second
    /// caller gets `busy`.
    #[serde(default)]
    pub call_waiting: bool,
    /// The browser tab's own id (kept in its sessionStorage, so it outlives a reload),
    /// at most [`MAX_TAB_ID_LEN`] bytes. A new session from a tab supersedes that tab's
    /// detached session (a reloaded page whose `leave` was lost) instead of leaving it
    /// to the resume window. A live session with the same id (a duplicated tab copies
    /// sessionStorage) is left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tab: Option<String>,
}

/// The longest [`Hello::tab`] the server honours (a longer one is ignored).
pub const MAX_TAB_ID_LEN: usize = 64;

/// Proof that the client owns a session it wants to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct Resume {
    /// The session to resume.
    pub session: SessionId,
    /// The resume secret from the most recent welcome of that session.
    pub secret: String,
    /// Highest server sequence the client has handled.
    pub last_seq: u64,
}

/// Sequenced application messages from the client. Tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// Call `peer`. Answered by [`ServerMsg::CallCreated`] with `re` = this message's
    /// seq (the existing call if the two already share one), or an error
    /// (`self-call`, `peer-offline`).
    Invite {
        peer: UserId,
        /// Call kind: selects the grace window (e.g. `support`, `interpreter`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        /// Opaque app data shown to the callee (at most 2 KiB serialised).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<serde_json::Value>,
    },
    /// Accept a ringing incoming call.
    Accept { call: CallId },
    /// Decline a ringing incoming call. `busy: true` ends it with `busy` instead of
    /// `declined` (the client answers a second incoming call this way). If this
    /// session's own accept made the call active while the decline was on its way, the
    /// call still ends `declined`.
    Decline {
        call: CallId,
        #[serde(default)]
        busy: bool,
    },
    /// Withdraw an outgoing call that is still ringing (`cancelled`). If it was answered
    /// while the cancel was on its way, it still ends `cancelled` at both ends (the
    /// caller never saw it active).
    Cancel { call: CallId },
    /// End an active call (`hangup`). On a ringing call: the caller cancels, the callee
    /// declines.
    Hangup { call: CallId },
    /// Relay an opaque payload (SDP, ICE candidates, app data) to the other participant
    /// of an active call. At most [`Limits::max_frame_bytes`] in total.
    Signal {
        call: CallId,
        payload: serde_json::Value,
    },
    /// Take back a call after losing the session that held it (reload, crash, another
    /// tab or device). Answered with [`ServerMsg::CallStarted`] carrying a new token, or
    /// `rejoin-denied` / `unknown-call`, or `held-elsewhere` when the token is spent and
    /// another live session of the same identity holds the call (it rejoined first).
    Rejoin { call: CallId, token: String },
    /// Set the presence status shown to others (`available` or `busy`).
    SetStatus { status: PresenceStatus },
    /// Anything else: answered with `unknown-message`.
    #[serde(other)]
    #[cfg_attr(all(test, not(target_arch = "wasm32")), ts(skip))]
    Unknown,
}

/// Frames the server sends. Tagged by `"t"`.
// Call descriptions make `msg` frames a few hundred bytes; they are moved once into a
// send queue, so boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum ServerFrame {
    /// Answer to a hello (boxed: it is much larger than the frames that stream).
    Welcome(Box<Welcome>),
    /// A sequenced application message.
    Msg {
        seq: u64,
        /// Highest client sequence the server has handled.
        ack: u64,
        body: ServerMsg,
    },
    /// A bare acknowledgement.
    Ack { ack: u64 },
    /// Answer to a ping.
    Pong { ack: u64 },
    /// A connection-level error; the socket is closed after it when `fatal`.
    Error(ErrorBody),
    /// Answer to the client's [`ClientFrame::Bye`]: the session's calls have ended and
    /// the session is gone. The socket closes right after.
    Bye,
}

/// Opens or resumes a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct Welcome {
    pub session: SessionId,
    /// The resume secret for the *next* resume (rotated on every welcome).
    pub secret: String,
    /// True when the session named in the hello was resumed; false when this is a new
    /// session (then `snapshot` is present).
    pub resumed: bool,
    /// Highest client sequence the server has handled in this session (0 when new).
    pub last_seq: u64,
    /// The authenticated user.
    pub user: Peer,
    /// Timers the client must use.
    pub timers: Timers,
    /// Limits the server enforces.
    pub limits: Limits,
    /// Server clock (epoch ms) when the welcome was sent, to translate deadlines.
    pub now: u64,
    /// Full state on a non-resumed welcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

/// Timers announced in the welcome. Both sides use them so they agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct Timers {
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// How long a detached session can be resumed.
    pub resume_window_ms: u64,
    /// Grace window of calls without a kind.
    pub default_grace_ms: u64,
    /// Grace windows by call kind.
    pub grace_ms: BTreeMap<String, u64>,
    /// Unanswered calls end `no-answer` after this long.
    pub ring_timeout_ms: u64,
    /// A ringing call whose caller's link dropped is withdrawn after this long.
    pub ring_detach_grace_ms: u64,
}

/// Limits announced in the welcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct Limits {
    pub max_frame_bytes: usize,
    /// Sustained messages per second per session (bursts allowed up to `burst`).
    pub max_msgs_per_sec: u32,
    pub burst: u32,
}

/// Everything a client needs after a non-resumed welcome.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct Snapshot {
    /// The user's calls that have not ended, including calls held by other sessions
    /// of the same identity (`held_here: false`) and calls whose participant slot is
    /// waiting for a rejoin.
    pub calls: Vec<CallInfo>,
    /// Who is online (only when the hello asked for presence).
    pub presence: Vec<PresenceEntry>,
    /// Calls of this user that ended recently (within the longest grace window), so a
    /// page that kept a rejoin record learns why the call is gone.
    #[serde(default)]
    pub ended: Vec<EndedCall>,
}

/// A call that has ended, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct EndedCall {
    pub call: CallId,
    pub reason: EndReason,
}

/// An identity with its display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct Peer {
    /// The stable identity (the token's `sub`).
    pub id: UserId,
    /// The display name (the token's `name`).
    pub name: String,
}

/// The state of a call as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    Ringing,
    Active,
    Ended,
}

/// The link state of one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// A live session holds this participant's side.
    Connected,
    /// Waiting for the participant to resume or rejoin, until `deadline`.
    Reconnecting,
    /// Callee of a ringing call: not yet answered.
    Pending,
}

/// One side of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct ParticipantInfo {
    pub user: Peer,
    pub link: LinkState,
    /// Server epoch ms when a `reconnecting` participant's window closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
}

/// A call as described to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct CallInfo {
    pub id: CallId,
    pub kind: Option<String>,
    pub state: CallState,
    pub caller: ParticipantInfo,
    pub callee: ParticipantInfo,
    /// The grace window of this call.
    pub grace_ms: u64,
    /// Server epoch ms when a ringing call ends `no-answer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_deadline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// True when the receiving session holds this call (it is the caller's session, or
    /// the callee's session that accepted). False for a call held by another session of
    /// the same identity, or a slot waiting for a rejoin.
    pub held_here: bool,
}

/// Presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum PresenceStatus {
    Available,
    Busy,
    Offline,
}

/// Who is online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct PresenceEntry {
    /// Who.
    pub user: Peer,
    /// Whether they are online, and whether in a call.
    pub status: PresenceStatus,
}

/// Why a call ended. Every end reaches both participants with the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// A participant hung up (or logged out).
    Hangup,
    /// The callee declined.
    Declined,
    /// The caller withdrew while ringing, or vanished while ringing.
    Cancelled,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// The callee was already in a call.
    Busy,
    /// A participant did not come back within the grace window.
    ReconnectFailed,
    /// The server shut down and could not keep the call.
    ServerShutdown,
    /// **Client-side only, never sent by the server**: the server no longer knows the
    /// call and cannot say how it ended. A client whose session could not be resumed
    /// gets a snapshot that neither lists the call nor has it among the recently
    /// [`Snapshot::ended`] ones, while the call's window was still open: the server lost
    /// its state (a crash or restart with the in-memory store). Neither participant
    /// ended it; each client reports this reason on its own, so both ends agree.
    ServerLost,
}

impl EndReason {
    /// The wire name, e.g. `reconnect-failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::Declined => "declined",
            EndReason::Cancelled => "cancelled",
            EndReason::NoAnswer => "no-answer",
            EndReason::Busy => "busy",
            EndReason::ReconnectFailed => "reconnect-failed",
            EndReason::ServerShutdown => "server-shutdown",
            EndReason::ServerLost => "server-lost",
        }
    }

    /// Every reason the server sends, for metrics (not the client-side `server-lost`).
    pub const ALL: [EndReason; 7] = [
        EndReason::Hangup,
        EndReason::Declined,
        EndReason::Cancelled,
        EndReason::NoAnswer,
        EndReason::Busy,
        EndReason::ReconnectFailed,
        EndReason::ServerShutdown,
    ];
}

/// Sequenced application messages from the server. Tagged by `"type"`.
// A call's details are boxed (the JSON is the same): they are three times the size of any
// other variant, and every message a session keeps for replay, or has queued for its
// socket, would otherwise take that much room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// Answer to an invite (`re` = the invite's seq): the new call, or the existing call
    /// between the two people (then `existing: true`).
    CallCreated {
        re: u64,
        call: Box<CallInfo>,
        existing: bool,
    },
    /// Someone is calling this user.
    IncomingCall { call: Box<CallInfo> },
    /// The call became active, or this session rejoined it. Carries this participant's
    /// rejoin token (single use; store it for a reload).
    CallStarted {
        call: Box<CallInfo>,
        rejoin_token: String,
        /// True when this is the answer to a rejoin.
        rejoined: bool,
    },
    /// The other participant's link dropped; the call waits until `deadline`.
    ParticipantDisconnected {
        call: CallId,
        user: UserId,
        /// Server epoch ms.
        deadline: u64,
        /// Milliseconds from this message's creation to the deadline.
        remaining_ms: u64,
    },
    /// The other participant is back (resumed or rejoined).
    ParticipantReconnected { call: CallId, user: UserId },
    /// The call ended, for the given reason, at both ends.
    CallEnded { call: CallId, reason: EndReason },
    /// Another session of this identity took the call (or accepted it); this session
    /// no longer holds it and must not try to take it back on its own.
    CallMoved { call: CallId },
    /// A payload relayed from the other participant.
    Signal {
        call: CallId,
        from: UserId,
        payload: serde_json::Value,
    },
    /// Full presence list (sent after a resumed welcome when presence is on).
    Presence { entries: Vec<PresenceEntry> },
    /// One user's presence changed.
    PresenceChanged { entry: PresenceEntry },
    /// A sequenced client message (`re`) was refused; nothing changed.
    Error(ErrorBody),
}

/// An error with a stable code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// The client seq this answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<u64>,
    /// The socket will be closed.
    #[serde(default)]
    pub fatal: bool,
}

/// Stable machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not JSON, a binary frame, or a JSON shape that is not a frame.
    BadFrame,
    /// Larger than `max_frame_bytes`.
    FrameTooLarge,
    /// A frame or message type the server does not know.
    UnknownMessage,
    /// The hello's `v` is not supported (fatal).
    UnsupportedVersion,
    /// A frame before the hello (fatal).
    NotAuthenticated,
    /// A second hello on one socket.
    AlreadyAuthenticated,
    /// The token is malformed or its signature is wrong (fatal).
    AuthFailed,
    /// The token's `exp` has passed (fatal, new sessions only).
    TokenExpired,
    /// The identity already has the maximum number of sessions (fatal).
    TooManySessions,
    /// Too many messages; the message was dropped (fatal when it persists).
    RateLimited,
    /// A `seq` skipped ahead (fatal).
    BadSequence,
    /// Inviting yourself.
    SelfCall,
    /// The peer has no session.
    PeerOffline,
    /// No such call (or it has ended).
    UnknownCall,
    /// The call is not yours.
    NotParticipant,
    /// The action does not fit the call's state (e.g. accepting an active call).
    InvalidState,
    /// The rejoin token is wrong, spent, or not yours.
    RejoinDenied,
    /// A rejoin whose token is wrong or spent while another live session of the same
    /// identity holds the call: typically another tab or device rejoined first with the
    /// same token and got the rotated one. Nothing changed; a rejoin with the current
    /// token (e.g. from storage the tabs share) moves the call here.
    HeldElsewhere,
    /// A field is out of bounds (e.g. metadata too large).
    InvalidArgument,
    /// Another socket resumed this session; this one is closed (fatal).
    Superseded,
    /// The server is shutting down (fatal); reconnect later.
    ServerShutdown,
    /// The server is restarting and keeps every session and call (fatal for this
    /// socket only): reconnect and resume at once, without backoff. See
    /// [the module documentation](self#server-restarts).
    ServerRestarting,
    /// No hello arrived in time (fatal).
    HelloTimeout,
    /// Client-side only: the session was lost before the server confirmed the request
    /// (`re`); it may or may not have been handled.
    SessionLost,
    /// Client-side only: no answer to the request (`re`) arrived in time (see the
    /// client's `request_timeout_ms`); a late answer is undone (a late call is cancelled).
    Timeout,
}

impl ErrorCode {
    /// The wire name, e.g. `rejoin-denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad-frame",
            ErrorCode::FrameTooLarge => "frame-too-large",
            ErrorCode::UnknownMessage => "unknown-message",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::NotAuthenticated => "not-authenticated",
            ErrorCode::AlreadyAuthenticated => "already-authenticated",
            ErrorCode::AuthFailed => "auth-failed",
            ErrorCode::TokenExpired => "token-expired",
            ErrorCode::TooManySessions => "too-many-sessions",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::BadSequence => "bad-sequence",
            ErrorCode::SelfCall => "self-call",
            ErrorCode::PeerOffline => "peer-offline",
            ErrorCode::UnknownCall => "unknown-call",
            ErrorCode::NotParticipant => "not-participant",
            ErrorCode::InvalidState => "invalid-state",
            ErrorCode::RejoinDenied => "rejoin-denied",
            ErrorCode::HeldElsewhere => "held-elsewhere",
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::Superseded => "superseded",
            ErrorCode::ServerShutdown => "server-shutdown",
            ErrorCode::ServerRestarting => "server-restarting",
            ErrorCode::HelloTimeout => "hello-timeout",
            ErrorCode::SessionLost => "session-lost",
            ErrorCode::Timeout => "timeout",
        }
    }
}

/// Why a frame could not be decoded. Produced by the drivers' decoders and handed to
/// the engines, which decide the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum BadFrame {
    TooLarge { len: usize, max: usize },
    Binary,
    Malformed(String),
}

impl BadFrame {
    pub fn code(&self) -> ErrorCode {
        match self {
            BadFrame::TooLarge { .. } => ErrorCode::FrameTooLarge,
            BadFrame::Binary | BadFrame::Malformed(_) => ErrorCode::BadFrame,
        }
    }

    pub fn message(&self) -> String {
        match self {
            BadFrame::TooLarge { len, max } => {
                format!("frame of {len} bytes exceeds the limit of {max}")
            }
            BadFrame::Binary => "binary frames are not part of the protocol".into(),
            BadFrame::Malformed(why) => format!("malformed frame: {why}"),
        }
    }
}

/// True when `s` can be shown to another person as it is: no control characters
/// (newlines included) and no bidirectional overrides, embeddings, isolates or marks,
/// which can make a name read as something else ("alice\u{202E}kcab"). Identities,
/// display names and call kinds must pass it; the server answers `invalid-argument`
/// otherwise.
pub fn is_displayable(s: &str) -> bool {
    !s.chars().any(|c| {
        c.is_control()
            || matches!(
                c,
                '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            )
    })
}

#[cfg(not(target_arch = "wasm32"))]
mod json {
    use super::*;

    /// Decodes a client frame, enforcing the size limit before parsing.
    pub fn decode_client(text: &str, max_bytes: usize) -> Result<ClientFrame, BadFrame> {
        decode(text, max_bytes)
    }

    /// Decodes a server frame (native client driver).
    pub fn decode_server(text: &str, max_bytes: usize) -> Result<ServerFrame, BadFrame> {
        decode(text, max_bytes)
    }

    fn decode<T: serde::de::DeserializeOwned>(text: &str, max: usize) -> Result<T, BadFrame> {
        if text.len() > max {
            return Err(BadFrame::TooLarge {
                len: text.len(),
                max,
            });
        }
        serde_json::from_str(text).map_err(|e| BadFrame::Malformed(e.to_string()))
    }

    /// Encodes any frame as JSON text.
    pub fn encode<T: Serialize>(frame: &T) -> String {
        // Serialising these plain data types cannot fail (no maps with non-string keys,
        // no custom serialisers).
        serde_json::to_string(frame).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use json::{decode_client, decode_server, encode};

// Native only: ts-rs and serde_json's encoder are not in the wasm build (`wasm-pack
// test` compiles the unit tests for wasm32 too).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod ts_bindings;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for r in EndReason::ALL.into_iter().chain([EndReason::ServerLost]) {
            assert_eq!(encode(&r), format!("\"{}\"", r.as_str()));
        }
        for c in [
            ErrorCode::RejoinDenied,
            ErrorCode::FrameTooLarge,
            ErrorCode::HelloTimeout,
            ErrorCode::Timeout,
        ] {
            assert_eq!(encode(&c), format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn frames_have_a_stable_shape() {
        let f = ClientFrame::Msg {
            seq: 3,
            ack: 2,
            body: ClientMsg::Hangup { call: "c1".into() },
        };
        assert_eq!(
            encode(&f),
            r#"{"t":"msg","seq":3,"ack":2,"body":{"type":"hangup","call":"c1"}}"#
        );
        let back = decode_client(&encode(&f), 1000).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn unknown_types_decode_as_unknown() {
        assert_eq!(
            decode_client(r#"{"t":"teleport"}"#, 100).unwrap(),
            ClientFrame::Unknown
        );
        let f = decode_client(r#"{"t":"msg","seq":1,"ack":0,"body":{"type":"x"}}"#, 100).unwrap();
        assert!(matches!(
            f,
            ClientFrame::Msg {
                body: ClientMsg::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn control_and_bidi_characters_are_not_displayable() {
        assert!(is_displayable("Zoë Smith-Ngũgĩ 李"));
        for bad in [
            "a\nb",
            "a\u{0}b",
            "a\u{7}b",
            "a\u{202E}b",
            "a\u{2066}b",
            "a\u{200F}b",
        ] {
            assert!(!is_displayable(bad), "{bad:?}");
        }
    }

    #[test]
    fn bad_frames_are_classified() {
        assert_eq!(
            decode_client("{}", 100).unwrap_err().code(),
            ErrorCode::BadFrame
        );
        assert_eq!(
            decode_client("not json", 100).unwrap_err().code(),
            ErrorCode::BadFrame
        );
        let big = "x".repeat(101);
        assert_eq!(
            decode_client(&big, 100).unwrap_err(),
            BadFrame::TooLarge { len: 101, max: 100 }
        );
    }
}
