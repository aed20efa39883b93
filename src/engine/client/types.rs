//! The client engine's public types, except its events (see `events.rs`) and the
//! rejoin records (see `rejoin.rs`).

use super::failure::ConnectionFailure;
use super::rejoin::{RejoinOffer, RejoinRecord};
use crate::protocol::*;
use serde::{Deserialize, Serialize};

/// Identifies one socket the engine asked the driver to open.
pub type LinkId = u64;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The token sent in every hello.
    pub token: String,
    /// Ask the server for presence.
    pub presence: bool,
    /// Accept a second incoming call while in a call.
    pub call_waiting: bool,
    /// Backoff: the second attempt waits about this long, doubling up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Stop retrying after this long without a link, unless a call window is still open.
    pub give_up_after_ms: u64,
    /// How long to wait for a socket to open and the welcome to arrive.
    pub connect_timeout_ms: u64,
    /// How long the driver's HTTP probe of a failed attempt ([`Io::Probe`]) may take
    /// before the failure is reported as `unreachable` anyway.
    pub probe_timeout_ms: u64,
    /// Heartbeat timers used until a welcome announces the server's.
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// Rewrite rejoin records this often while connected, so a crashed page's estimate of
    /// its deadline stays close.
    pub rejoin_refresh_ms: u64,
    /// Most messages waiting for acknowledgement (sent or not yet sent).
    pub max_unacked: usize,
    /// An invite with no answer after this long fails with `timeout` (a late answer is
    /// cancelled), so the app's promise settles whatever the server or the network does.
    pub request_timeout_ms: u64,
    /// The frame limit used until a welcome announces the server's.
    pub max_frame_bytes: usize,
    /// The length of a message's JSON text, as the driver will send it. Native builds
    /// count `serde_json`'s output; the browser driver counts `JSON.stringify`'s (so the
    /// wasm build carries no JSON serializer).
    pub json_bytes: fn(&ClientMsg) -> usize,
    /// Seed for backoff jitter.
    pub seed: u64,
    /// Who the token says we are, if the driver can tell before the server confirms
    /// (a dev identity, or a JWT's unverified `sub`). Stored rejoin records of anyone
    /// else (a shared computer) are then never offered, not even before the welcome.
    pub identity_hint: Option<UserId>,
    /// This browser tab's id ([`crate::protocol::Hello::tab`]), if the driver has one.
    pub tab: Option<String>,
}

impl ClientConfig {
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            presence: false,
            call_waiting: false,
            backoff_base_ms: 250,
            backoff_max_ms: 5_000,
            give_up_after_ms: 120_000,
            connect_timeout_ms: 5_000,
            probe_timeout_ms: 800,
            heartbeat_interval_ms: 1_500,
            heartbeat_timeout_ms: 4_500,
            rejoin_refresh_ms: 5_000,
            max_unacked: 1_024,
            request_timeout_ms: 15_000,
            max_frame_bytes: 16 * 1024,
            json_bytes,
            seed: 0x5eed,
            identity_hint: None,
            tab: None,
        }
    }
}

/// [`ClientConfig::json_bytes`] of native builds.
#[cfg(not(target_arch = "wasm32"))]
fn json_bytes(msg: &ClientMsg) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, msg).map_or(usize::MAX, |()| count.0)
}

/// [`ClientConfig::json_bytes`] of the wasm build until the browser driver sets its
/// own: no size check.
#[cfg(target_arch = "wasm32")]
fn json_bytes(_: &ClientMsg) -> usize {
    0
}

/// The connection state the app sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionState {
    /// `connect()` not called yet.
    Idle,
    /// Opening the first session.
    Connecting,
    /// A session is open.
    Connected,
    /// The link dropped; retrying (see `next_attempt_at`).
    Reconnecting,
    /// The browser is offline; no attempts until it is back.
    Offline,
    /// Retrying stopped (no call window open); `reconnect()` starts again.
    GaveUp,
    /// The server refused the token; a new token is needed.
    AuthFailed,
    /// `logout()` was called.
    LoggedOut,
}

/// IO the driver must perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Open a WebSocket and report it with this link id.
    Open(LinkId),
    /// Close this socket. No more events for it are needed.
    Close(LinkId),
    /// This socket failed before the server's welcome: find out over HTTP why (see
    /// [`super::ProbeResult`]) and report it with
    /// [`super::ClientEngine::handle_probe_result`].
    Probe(LinkId),
}

/// A storage change the driver must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOp {
    Put(RejoinRecord),
    Remove(CallId),
}

/// This page's role and view of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum CallPhase {
    /// We invited; the peer's phone is ringing.
    Outgoing,
    /// The peer invited us; we have not answered.
    Incoming,
    Active,
}

impl CallPhase {
    /// Why a call in this phase ends when its user ends it: cancelled while ringing
    /// out, declined while ringing in, hung up when active.
    pub fn ended_by_user(self) -> EndReason {
        match self {
            CallPhase::Outgoing => EndReason::Cancelled,
            CallPhase::Incoming => EndReason::Declined,
            CallPhase::Active => EndReason::Hangup,
        }
    }
}

/// A call in this page's active-call map. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    all(test, not(target_arch = "wasm32")),
    derive(ts_rs::TS),
    ts(rename = "Call")
)]
#[serde(rename_all = "camelCase")]
pub struct ClientCall {
    /// The call's id (the same at both ends).
    pub id: CallId,
    /// `outgoing`: ringing at the peer; `incoming`: ringing here; `active`: connected.
    pub phase: CallPhase,
    /// The other person.
    pub peer: Peer,
    /// The app's call kind from the invite (it picks the grace window), or `null`.
    pub kind: Option<String>,
    /// The app's JSON data from the invite (`null` when none was given).
    #[cfg_attr(all(test, not(target_arch = "wasm32")), ts(type = "unknown"))]
    pub metadata: Option<serde_json::Value>,
    /// How long either side may be away before the call ends `reconnect-failed`.
    pub grace_ms: u64,
    /// The peer's link as last reported.
    pub peer_link: LinkState,
    /// Local epoch ms when the peer's grace window closes (while reconnecting).
    pub peer_deadline: Option<u64>,
    /// Local epoch ms when a ringing call ends unanswered.
    pub ring_deadline: Option<u64>,
}

/// What the browser driver hands to JavaScript as the client's state (the facade adds
/// `pendingRejoin` and freezes it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ClientSnapshot {
    /// The connection's state.
    pub state: ConnectionState,
    /// Who this page is, once connected.
    pub user: Option<Peer>,
    /// The session's id, once connected.
    pub session: Option<SessionId>,
    /// Epoch ms of the next connection attempt while reconnecting.
    pub next_attempt_at: Option<u64>,
    /// This page's calls: ringing and active.
    pub calls: Vec<ClientCall>,
    /// Who is online (with `presence: true`).
    pub presence: Vec<PresenceEntry>,
    /// Calls this page may rejoin, soonest deadline first.
    pub pending_rejoins: Vec<RejoinOffer>,
    /// The last failed connection attempt (as in its `connection-failed` event), until
    /// the next welcome.
    pub last_failure: Option<ConnectionFailure>,
    /// When the snapshot was taken (epoch ms).
    pub now: u64,
}

/// Why a command was refused locally (nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// `logout()` was called; connect again with a new engine.
    LoggedOut,
    /// There is already a call with this peer.
    AlreadyInCall {
        call: CallId,
    },
    /// An invite to this peer is on its way.
    InvitePending,
    UnknownCall,
    /// The call is not in a state that allows this.
    InvalidState(&'static str),
    /// Too many messages waiting for acknowledgement.
    BufferFull,
    /// The message would exceed the frame limit the server announced (it would drop it
    /// unanswered).
    FrameTooLarge {
        bytes: usize,
        max: usize,
    },
    /// No rejoin record for this call.
    NoRejoin,
    InvalidArgument(&'static str),
}

impl ClientError {
    /// A stable machine-readable code for the JS side.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::LoggedOut => "logged-out",
            ClientError::AlreadyInCall { .. } => "already-in-call",
            ClientError::InvitePending => "invite-pending",
            ClientError::UnknownCall => "unknown-call",
            ClientError::InvalidState(_) => "invalid-state",
            ClientError::BufferFull => "buffer-full",
            ClientError::FrameTooLarge { .. } => "frame-too-large",
            ClientError::NoRejoin => "no-rejoin",
            ClientError::InvalidArgument(_) => "invalid-argument",
        }
    }
}

impl core::fmt::Display for ClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClientError::LoggedOut => f.write_str("logged out"),
            ClientError::AlreadyInCall { call } => {
                write!(f, "already in call {call} with this peer")
            }
            ClientError::InvitePending => f.write_str("an invite to this peer is already pending"),
            ClientError::UnknownCall => f.write_str("no such call"),
            ClientError::InvalidState(why) => f.write_str(why),
            ClientError::BufferFull => f.write_str("too many unacknowledged messages"),
            ClientError::FrameTooLarge { bytes, max } => write!(
                f,
                "the message is about {bytes} bytes; the server accepts frames of at most {max}"
            ),
            ClientError::NoRejoin => f.write_str("no rejoin is available for this call"),
            ClientError::InvalidArgument(why) => f.write_str(why),
        }
    }
}
