//! The client engine's public types, except its events (see `events.rs`) and the
//! rejoin records (see `rejoin.rs`).

use super::rejoin::RejoinRecord;
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
    /// Heartbeat timers used until a welcome announces the server's.
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// Rewrite rejoin records this often while connected, so a crashed page's estimate of
    /// its deadline stays close.
    pub rejoin_refresh_ms: u64,
    /// Most messages waiting for acknowledgement (sent or not yet sent).
    pub max_unacked: usize,
    /// Seed for backoff jitter.
    pub seed: u64,
    /// Who the token says we are, if the driver can tell before the server confirms
    /// (a dev identity, or a JWT's unverified `sub`). Stored rejoin records of anyone
    /// else (a shared computer) are then never offered, not even before the welcome.
    pub identity_hint: Option<UserId>,
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
            heartbeat_interval_ms: 1_500,
            heartbeat_timeout_ms: 4_500,
            rejoin_refresh_ms: 5_000,
            max_unacked: 1_024,
            seed: 0x5eed,
            identity_hint: None,
        }
    }
}

/// The connection state the app sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A storage change the driver must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOp {
    Put(RejoinRecord),
    Remove(CallId),
}

/// This page's role and view of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A call in the active-call map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCall {
    pub id: CallId,
    pub phase: CallPhase,
    pub peer: Peer,
    pub kind: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub grace_ms: u64,
    /// The peer's link as last reported.
    pub peer_link: LinkState,
    /// Local epoch ms when the peer's grace window closes (while reconnecting).
    pub peer_deadline: Option<u64>,
    /// Local epoch ms when a ringing call ends unanswered.
    pub ring_deadline: Option<u64>,
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
            ClientError::NoRejoin => f.write_str("no rejoin is available for this call"),
            ClientError::InvalidArgument(why) => f.write_str(why),
        }
    }
}
