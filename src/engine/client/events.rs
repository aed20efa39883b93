//! What the client engine tells the app.

use super::failure::ConnectionFailure;
use super::rejoin::{RejoinOffer, RejoinWithdrawn};
use super::types::ClientCall;
use crate::protocol::*;
use serde::Serialize;

/// Something the app should know. Serialises to the JS event objects
/// (`{ type: "call-ended", call, reason }`, fields in camelCase).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(
    all(test, not(target_arch = "wasm32")),
    derive(ts_rs::TS),
    ts(rename = "HoldfastEvent")
)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// Trying to open the first session.
    Connecting {
        attempt: u32,
    },
    /// Trying to get back after a drop.
    Reconnecting {
        attempt: u32,
    },
    /// The first session is open.
    Connected {
        session: SessionId,
        user: Peer,
    },
    /// Back after a drop: `recovered` is true when the session resumed with nothing
    /// lost; false when the server started a new session (see `SessionLost`).
    Resumed {
        recovered: bool,
    },
    /// The link dropped. `next_attempt_at` is local epoch ms (None: offline or gave up).
    Disconnected {
        next_attempt_at: Option<u64>,
    },
    /// The session could not be resumed; `unconfirmed` messages the server may or may
    /// not have handled were dropped, and state was rebuilt from the server's snapshot.
    SessionLost {
        unconfirmed: usize,
    },
    /// A connection attempt failed before the server's welcome, and why. Every such
    /// attempt is reported once, within about a second (see
    /// [`super::ClientConfig::probe_timeout_ms`]).
    ConnectionFailed(ConnectionFailure),
    Offline,
    GaveUp,
    AuthFailed {
        code: ErrorCode,
        message: String,
    },
    LoggedOut,
    Presence {
        entries: Vec<PresenceEntry>,
    },
    PresenceChanged {
        entry: PresenceEntry,
    },
    /// Our invite (`re` = the seq returned by `call()`) created a call, or found the
    /// existing one.
    OutgoingCall {
        re: u64,
        call: ClientCall,
        existing: bool,
    },
    IncomingCall {
        call: ClientCall,
    },
    CallStarted {
        call: ClientCall,
        rejoined: bool,
    },
    ParticipantDisconnected {
        call: CallId,
        user: UserId,
        deadline: u64,
        remaining_ms: u64,
    },
    ParticipantReconnected {
        call: CallId,
        user: UserId,
    },
    /// The call ended. `peer` is the other person, also for a call this page knew only
    /// from its rejoin record (it ended while the page was away).
    CallEnded {
        call: CallId,
        reason: EndReason,
        peer: Peer,
    },
    CallMoved {
        call: CallId,
    },
    Signal {
        call: CallId,
        from: UserId,
        #[cfg_attr(all(test, not(target_arch = "wasm32")), ts(type = "unknown"))]
        payload: serde_json::Value,
    },
    RejoinAvailable {
        offer: RejoinOffer,
    },
    RejoinCountdown {
        call: CallId,
        remaining_ms: u64,
    },
    RejoinExpired {
        call: CallId,
    },
    RejoinWithdrawn {
        call: CallId,
        why: RejoinWithdrawn,
    },
    /// A request was refused (`re` = its seq) or the server reported a problem.
    Error {
        code: ErrorCode,
        message: String,
        re: Option<u64>,
    },
}
