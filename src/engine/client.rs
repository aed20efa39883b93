//! The client engine: what runs in the browser (through the wasm driver) and in the
//! native client driver used by tests and the load tool.
//!
//! Sans-IO. The driver feeds:
//! - socket life: [`ClientEngine::handle_open`], [`ClientEngine::handle_frame`],
//!   [`ClientEngine::handle_bad_frame`], [`ClientEngine::handle_closed`], each tagged with
//!   the [`LinkId`] the engine asked for, so late events of an abandoned socket are ignored;
//! - time: [`ClientEngine::handle_timeout`];
//! - the page: [`ClientEngine::handle_online`], [`ClientEngine::handle_wake`] (visible /
//!   pageshow), [`ClientEngine::handle_pagehide`];
//! - stored rejoin records at start-up: [`ClientEngine::load_rejoin_records`];
//! - the app's commands: [`ClientEngine::call`], [`ClientEngine::accept`], …
//!
//! and drains [`ClientEngine::poll_io`] (open/close a socket), [`ClientEngine::poll_transmit`]
//! (frames for the current socket), [`ClientEngine::poll_event`] (for the app),
//! [`ClientEngine::poll_storage`] (rejoin records to write or delete) and
//! [`ClientEngine::poll_timeout`].
//!
//! Time is epoch milliseconds handed in by the driver (`Date.now()` in the browser), so
//! rejoin deadlines written to storage stay meaningful after a reload.

use super::{SplitMix, TimerQueue};
use crate::protocol::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

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

/// A rejoin record: what a page keeps in storage to get back into a call after a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinRecord {
    /// Record format version.
    pub v: u32,
    pub call: CallId,
    /// The identity that owns it (records of another identity are foreign).
    pub user: UserId,
    pub token: String,
    pub peer: Peer,
    pub kind: Option<String>,
    pub grace_ms: u64,
    /// Local epoch ms after which the server will have given up on this slot (an
    /// estimate until the server confirms it).
    pub deadline: u64,
    /// Server clock minus this page's clock when the record was written, so that
    /// `deadline + clock_offset` is the deadline on the server's clock: a page whose
    /// clock jumped since can still tell whether the window was open (records of older
    /// versions have 0).
    #[serde(default)]
    pub clock_offset: i64,
}

/// Current format of [`RejoinRecord`].
pub const REJOIN_RECORD_VERSION: u32 = 1;

/// A storage change the driver must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOp {
    Put(RejoinRecord),
    Remove(CallId),
}

/// A rejoin the app may offer to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejoinOffer {
    pub call: CallId,
    pub peer: Peer,
    pub kind: Option<String>,
    /// Local epoch ms.
    pub deadline: u64,
    pub remaining_ms: u64,
}

/// Why a rejoin offer went away without the user choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejoinWithdrawn {
    /// The call ended while we were away (see the call-ended event's reason).
    CallEnded,
    /// Another tab or device holds the call live.
    HeldElsewhere,
    /// The app declined it.
    Declined,
    /// The server refused the token.
    Denied,
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

/// Something the app should know. Serialises to the JS event objects
/// (`{ type: "call-ended", call, reason }`, fields in camelCase).
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// What an in-flight request was, for matching its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Invite(UserId),
    Rejoin(CallId),
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Attempt,
    ConnectTimeout,
    Heartbeat,
    Countdown,
    Refresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkPhase {
    /// Asked the driver to open it.
    Opening,
    /// Open, hello sent, waiting for the welcome.
    Hello,
    /// Welcomed: application traffic flows.
    Ready,
}

#[derive(Debug)]
struct SessionState {
    id: SessionId,
    secret: String,
    user: Peer,
}

/// The client engine. See the module documentation.
pub struct ClientEngine {
    config: ClientConfig,
    state: ConnectionState,
    /// The socket in use and its phase.
    link: Option<(LinkId, LinkPhase)>,
    next_link: LinkId,
    session: Option<SessionState>,
    /// Sequence of our last sent message, and the last server message handled.
    out_seq: u64,
    in_seq: u64,
    /// Sent and not yet acknowledged, by seq.
    unacked: VecDeque<(u64, ClientMsg)>,
    /// Accepted by a command but not yet sequenced (no session was ready), by request id.
    pending: VecDeque<(u64, ClientMsg)>,
    /// Request ids: what commands return and what `re` in events refers to. Unlike
    /// seqs they never restart, so an answer always finds its request.
    next_request: u64,
    /// Sent messages that may still get an answer: seq → (request id, what it was).
    requests: BTreeMap<u64, (u64, Request)>,
    calls: BTreeMap<CallId, ClientCall>,
    /// Rejoin records this page holds (its own calls and ones loaded from storage).
    records: BTreeMap<CallId, RejoinRecord>,
    /// Records offered to the app (loaded from storage, not held elsewhere).
    offers: BTreeMap<CallId, ()>,
    /// Records loaded from storage that no server snapshot has confirmed yet: never
    /// offered (the call may have ended, or the server may not know it) and never
    /// judged expired by this page's clock (it may have jumped) until the server speaks.
    unconfirmed: BTreeMap<CallId, ()>,
    /// Calls another tab of this origin holds (reported by the driver).
    held_by_other_tab: BTreeMap<CallId, ()>,
    /// Rejoins sent automatically after a session loss.
    auto_rejoins: BTreeMap<CallId, ()>,
    /// Calls this page ended by its own command (most recent last): late server news
    /// about them (answers that crossed the hang-up) must not bring them back.
    ended_here: VecDeque<CallId>,
    presence: BTreeMap<UserId, PresenceEntry>,
    online: bool,
    attempt: u32,
    /// When the link was lost (for giving up; restarts with a manual reconnect).
    down_since: Option<u64>,
    /// When the session's link was lost, whatever happened since: at the next welcome,
    /// a call that the server forgot tells whether its window passed meanwhile.
    lost_at: Option<u64>,
    next_attempt_at: Option<u64>,
    last_rx: u64,
    last_tx: u64,
    heartbeat_interval: u64,
    heartbeat_timeout: u64,
    /// Server clock minus local clock, from the last welcome.
    clock_offset: i64,
    /// When the current link's hello was sent (to estimate the clock offset).
    hello_sent_at: u64,
    timers: TimerQueue<Timer>,
    io: VecDeque<Io>,
    transmit: VecDeque<ClientFrame>,
    events: VecDeque<Event>,
    storage: VecDeque<StorageOp>,
    rng: SplitMix,
}

impl ClientEngine {
    pub fn new(config: ClientConfig) -> Self {
        let seed = config.seed;
        Self {
            heartbeat_interval: config.heartbeat_interval_ms,
            heartbeat_timeout: config.heartbeat_timeout_ms,
            config,
            state: ConnectionState::Idle,
            link: None,
            next_link: 1,
            session: None,
            out_seq: 0,
            in_seq: 0,
            unacked: VecDeque::new(),
            pending: VecDeque::new(),
            next_request: 1,
            requests: BTreeMap::new(),
            calls: BTreeMap::new(),
            records: BTreeMap::new(),
            offers: BTreeMap::new(),
            unconfirmed: BTreeMap::new(),
            held_by_other_tab: BTreeMap::new(),
            auto_rejoins: BTreeMap::new(),
            ended_here: VecDeque::new(),
            presence: BTreeMap::new(),
            online: true,
            attempt: 0,
            down_since: None,
            lost_at: None,
            next_attempt_at: None,
            last_rx: 0,
            last_tx: 0,
            clock_offset: 0,
            hello_sent_at: 0,
            timers: TimerQueue::default(),
            io: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            storage: VecDeque::new(),
            rng: SplitMix(seed),
        }
    }

    // ------------------------------------------------------------- accessors

    pub fn state(&self) -> ConnectionState {
        self.state
    }

    pub fn user(&self) -> Option<&Peer> {
        self.session.as_ref().map(|s| &s.user)
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.id.as_str())
    }

    /// The active-call map.
    pub fn calls(&self) -> impl Iterator<Item = &ClientCall> {
        self.calls.values()
    }

    pub fn call_info(&self, id: &str) -> Option<&ClientCall> {
        self.calls.get(id)
    }

    pub fn presence(&self) -> impl Iterator<Item = &PresenceEntry> {
        self.presence.values()
    }

    /// Rejoins offered to the app, with remaining time at `now`.
    pub fn pending_rejoins(&self, now: u64) -> Vec<RejoinOffer> {
        self.offers
            .keys()
            .filter_map(|c| self.records.get(c))
            .map(|r| self.offer_of(r, now))
            .collect()
    }

    /// Local epoch ms of the next connection attempt while reconnecting.
    pub fn next_attempt_at(&self) -> Option<u64> {
        self.next_attempt_at
    }

    /// Messages waiting for acknowledgement (sent or queued).
    pub fn unacked_len(&self) -> usize {
        self.unacked.len() + self.pending.len()
    }

    /// The rejoin token this page holds for a call (tests and tooling).
    pub fn rejoin_token(&self, call: &str) -> Option<&str> {
        self.records.get(call).map(|r| r.token.as_str())
    }

    // --------------------------------------------------------------- outputs

    pub fn poll_io(&mut self) -> Option<Io> {
        self.io.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<ClientFrame> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_storage(&mut self) -> Option<StorageOp> {
        self.storage.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    /// The link the engine currently wants frames for.
    pub fn current_link(&self) -> Option<LinkId> {
        self.link.map(|(id, _)| id)
    }

    // ------------------------------------------------------------ page input

    /// Start connecting (idempotent).
    pub fn connect(&mut self, now: u64) {
        if self.state == ConnectionState::Idle {
            self.state = ConnectionState::Connecting;
            self.attempt_now(now);
        }
    }

    /// The browser went online or offline.
    pub fn handle_online(&mut self, online: bool, now: u64) {
        self.online = online;
        match (online, self.state) {
            (false, ConnectionState::Reconnecting | ConnectionState::Connecting) => {
                if self
                    .link
                    .is_some_and(|(_, phase)| phase != LinkPhase::Ready)
                {
                    self.abandon_link();
                }
                self.next_attempt_at = None;
                self.state = ConnectionState::Offline;
                self.events.push_back(Event::Offline);
            }
            (true, ConnectionState::Offline) => {
                self.state = if self.session.is_some() {
                    ConnectionState::Reconnecting
                } else {
                    ConnectionState::Connecting
                };
                self.attempt = 0;
                // Time spent offline made no attempt: the retry budget starts now.
                self.down_since = Some(now);
                self.attempt_now(now);
            }
            _ => {}
        }
    }

    /// The page became visible again (visibilitychange or pageshow): retry at once
    /// if waiting, or probe a link that may have died while the page slept.
    pub fn handle_wake(&mut self, now: u64) {
        match self.state {
            ConnectionState::Reconnecting | ConnectionState::Connecting
                if self.link.is_none() && self.online =>
            {
                self.attempt_now(now);
            }
            ConnectionState::Connected => self.send_ping(now),
            _ => {}
        }
    }

    /// The page is being hidden or unloaded: write fresh rejoin deadlines so a reload
    /// offers the right countdown. (Not a hang-up.)
    pub fn handle_pagehide(&mut self, now: u64) {
        if self.state == ConnectionState::Connected {
            self.refresh_records(now);
        }
    }

    /// Another tab of this origin holds (or released) a live call.
    pub fn set_held_by_other_tab(&mut self, call: &str, held: bool, now: u64) {
        if held {
            self.held_by_other_tab.insert(call.to_owned(), ());
            if self.offers.remove(call).is_some() {
                self.events.push_back(Event::RejoinWithdrawn {
                    call: call.to_owned(),
                    why: RejoinWithdrawn::HeldElsewhere,
                });
            }
        } else if self.held_by_other_tab.remove(call).is_some() {
            // The other tab let go (closed or crashed): offer it here. Its window
            // starts about now (the stored deadline is the other tab's old estimate).
            if self.calls.contains_key(call) {
                return;
            }
            if let Some(r) = self.records.get_mut(call) {
                r.deadline = r.deadline.max(now + r.grace_ms);
                self.offer(call, now);
            }
        }
    }

    /// Rejoin records found in storage at start-up. Malformed ones are removed; another
    /// identity's (by `identity_hint`, or once the welcome says who we are) are ignored
    /// and left alone. The rest wait for the server: the first snapshot offers the calls
    /// that still wait for us (with the server's deadline), reports the ones that ended
    /// meanwhile (one `call-ended` naming the peer) and drops the rest. Nothing is
    /// offered, or judged expired by this page's clock, before that.
    pub fn load_rejoin_records(&mut self, records: Vec<RejoinRecord>, _now: u64) {
        for r in records {
            if r.v != REJOIN_RECORD_VERSION || r.token.len() != 64 || r.call.is_empty() {
                self.storage.push_back(StorageOp::Remove(r.call));
                continue;
            }
            let foreign = self
                .config
                .identity_hint
                .as_ref()
                .is_some_and(|me| *me != r.user);
            if foreign {
                continue; // another identity's record: neither offered nor deleted
            }
            if self.calls.contains_key(&r.call) {
                continue;
            }
            let call = r.call.clone();
            self.records.insert(call.clone(), r);
            self.unconfirmed.insert(call, ());
        }
    }

    // ---------------------------------------------------------- app commands

    /// Invite `peer`. Returns the request number that `OutgoingCall { re }` and
    /// `Error { re }` will carry.
    pub fn call(
        &mut self,
        peer: &str,
        kind: Option<String>,
        metadata: Option<serde_json::Value>,
        now: u64,
    ) -> Result<u64, ClientError> {
        self.check_usable()?;
        if peer.is_empty() {
            return Err(ClientError::InvalidArgument("peer must not be empty"));
        }
        if let Some(c) = self.calls.values().find(|c| c.peer.id == peer) {
            return Err(ClientError::AlreadyInCall { call: c.id.clone() });
        }
        let pending_invite = self
            .requests
            .values()
            .any(|(_, r)| *r == Request::Invite(peer.to_owned()))
            || self
                .pending
                .iter()
                .any(|(_, m)| matches!(m, ClientMsg::Invite { peer: p, .. } if p == peer));
        if pending_invite {
            return Err(ClientError::InvitePending);
        }
        let re = self.enqueue(
            ClientMsg::Invite {
                peer: peer.to_owned(),
                kind,
                metadata,
            },
            now,
        )?;
        Ok(re)
    }

    pub fn accept(&mut self, call: &str, now: u64) -> Result<u64, ClientError> {
        self.expect_phase(
            call,
            CallPhase::Incoming,
            "only a ringing incoming call can be accepted",
        )?;
        self.enqueue(
            ClientMsg::Accept {
                call: call.to_owned(),
            },
            now,
        )
    }

    pub fn decline(&mut self, call: &str, now: u64) -> Result<u64, ClientError> {
        self.expect_phase(
            call,
            CallPhase::Incoming,
            "only a ringing incoming call can be declined",
        )?;
        self.enqueue(
            ClientMsg::Decline {
                call: call.to_owned(),
                busy: false,
            },
            now,
        )
    }

    /// End a call in any phase: cancel an outgoing one, decline an incoming one, hang
    /// up an active one. The call ends locally at once with its reason. The request says
    /// what the user saw (`cancel` / `decline` / `hangup`), so that a call answered while
    /// the request was on its way ends with the same reason at the other end.
    pub fn hangup(&mut self, call: &str, now: u64) -> Result<u64, ClientError> {
        self.check_usable()?;
        let phase = self.calls.get(call).ok_or(ClientError::UnknownCall)?.phase;
        let call = call.to_owned();
        let msg = match phase {
            CallPhase::Outgoing => ClientMsg::Cancel { call: call.clone() },
            CallPhase::Incoming => ClientMsg::Decline {
                call: call.clone(),
                busy: false,
            },
            CallPhase::Active => ClientMsg::Hangup { call: call.clone() },
        };
        let re = self.enqueue(msg, now)?;
        self.end_local(&call, phase.ended_by_user());
        self.ended_here.push_back(call);
        if self.ended_here.len() > 64 {
            self.ended_here.pop_front();
        }
        Ok(re)
    }

    fn was_ended_here(&self, call: &str) -> bool {
        self.ended_here.iter().any(|c| c == call)
    }

    /// Relay a payload to the other participant of an active call.
    pub fn send(
        &mut self,
        call: &str,
        payload: serde_json::Value,
        now: u64,
    ) -> Result<u64, ClientError> {
        self.expect_phase(call, CallPhase::Active, "signals need an active call")?;
        self.enqueue(
            ClientMsg::Signal {
                call: call.to_owned(),
                payload,
            },
            now,
        )
    }

    /// Take back a call this identity holds a rejoin token for (offered after a reload,
    /// or held by another tab or device, which is told the call moved).
    pub fn rejoin(&mut self, call: &str, now: u64) -> Result<u64, ClientError> {
        self.check_usable()?;
        let token = self
            .records
            .get(call)
            .map(|r| r.token.clone())
            .ok_or(ClientError::NoRejoin)?;
        self.offers.remove(call);
        self.enqueue(
            ClientMsg::Rejoin {
                call: call.to_owned(),
                token,
            },
            now,
        )
    }

    /// The user does not want the offered call back. The record is deleted; the call
    /// itself ends on the server when its window passes.
    pub fn decline_rejoin(&mut self, call: &str) -> Result<(), ClientError> {
        if self.records.remove(call).is_none() {
            return Err(ClientError::NoRejoin);
        }
        self.offers.remove(call);
        self.storage.push_back(StorageOp::Remove(call.to_owned()));
        self.events.push_back(Event::RejoinWithdrawn {
            call: call.to_owned(),
            why: RejoinWithdrawn::Declined,
        });
        Ok(())
    }

    pub fn set_status(&mut self, status: PresenceStatus, now: u64) -> Result<u64, ClientError> {
        if status == PresenceStatus::Offline {
            return Err(ClientError::InvalidArgument(
                "status must be available or busy",
            ));
        }
        self.enqueue(ClientMsg::SetStatus { status }, now)
    }

    /// Replace the token used for new sessions (after `AuthFailed`, or before expiry).
    pub fn set_token(&mut self, token: impl Into<String>, now: u64) {
        self.config.token = token.into();
        if self.state == ConnectionState::AuthFailed {
            self.state = if self.session.is_some() {
                ConnectionState::Reconnecting
            } else {
                ConnectionState::Connecting
            };
            self.attempt = 0;
            self.attempt_now(now);
        }
    }

    /// Try now, whatever the backoff says (or after giving up).
    pub fn reconnect(&mut self, now: u64) {
        match self.state {
            ConnectionState::Connected | ConnectionState::LoggedOut | ConnectionState::Idle => {}
            _ => {
                if self.state == ConnectionState::GaveUp || self.state == ConnectionState::Offline {
                    self.state = if self.session.is_some() {
                        ConnectionState::Reconnecting
                    } else {
                        ConnectionState::Connecting
                    };
                }
                self.attempt = 0;
                self.down_since = Some(now);
                self.abandon_link();
                self.attempt_now(now);
            }
        }
    }

    /// End the session: calls held here end with `hangup`, every rejoin record is
    /// deleted, the socket closes and nothing reconnects.
    pub fn logout(&mut self, _now: u64) {
        if self.state == ConnectionState::LoggedOut {
            return;
        }
        if self.link.is_some_and(|(_, p)| p == LinkPhase::Ready) {
            self.transmit.push_back(ClientFrame::Bye);
        }
        if let Some((id, _)) = self.link.take() {
            self.io.push_back(Io::Close(id));
        }
        // Logging out ends each call as the user's own hang-up would.
        self.end_all_local(CallPhase::ended_by_user);
        for call in std::mem::take(&mut self.records).into_keys() {
            self.storage.push_back(StorageOp::Remove(call));
        }
        self.offers.clear();
        self.unconfirmed.clear();
        self.pending.clear();
        self.unacked.clear();
        self.timers.clear();
        self.session = None;
        self.state = ConnectionState::LoggedOut;
        self.events.push_back(Event::LoggedOut);
    }

    // ----------------------------------------------------------- link input

    /// The socket for `link` opened.
    pub fn handle_open(&mut self, link: LinkId, now: u64) {
        if self.link != Some((link, LinkPhase::Opening)) {
            return;
        }
        self.link = Some((link, LinkPhase::Hello));
        self.last_rx = now;
        let resume = self.session.as_ref().map(|s| Resume {
            session: s.id.clone(),
            secret: s.secret.clone(),
            last_seq: self.in_seq,
        });
        self.transmit.push_back(ClientFrame::Hello(Hello {
            v: PROTOCOL_VERSION,
            token: self.config.token.clone(),
            resume,
            presence: self.config.presence,
            call_waiting: self.config.call_waiting,
        }));
        self.last_tx = now;
        self.hello_sent_at = now;
    }

    /// The socket for `link` closed or failed.
    pub fn handle_closed(&mut self, link: LinkId, now: u64) {
        if self.link.map(|(id, _)| id) != Some(link) {
            return;
        }
        self.link = None;
        self.link_lost(now);
    }

    /// A frame that could not be decoded arrived on `link`.
    pub fn handle_bad_frame(&mut self, link: LinkId, bad: BadFrame, now: u64) {
        if self.link.map(|(id, _)| id) != Some(link) {
            return;
        }
        self.last_rx = now;
        self.events.push_back(Event::Error {
            code: bad.code(),
            message: bad.message(),
            re: None,
        });
    }

    /// A frame arrived on `link`.
    pub fn handle_frame(&mut self, link: LinkId, frame: ServerFrame, now: u64) {
        let Some((id, phase)) = self.link else {
            return;
        };
        if id != link {
            return;
        }
        self.last_rx = now;
        match frame {
            ServerFrame::Welcome(w) if phase == LinkPhase::Hello => self.welcome(*w, now),
            ServerFrame::Error(e) => self.server_error(e, now),
            _ if phase != LinkPhase::Ready => {
                // Nothing but a welcome or an error is valid before the welcome.
                self.events.push_back(Event::Error {
                    code: ErrorCode::BadFrame,
                    message: "frame before welcome".into(),
                    re: None,
                });
            }
            ServerFrame::Welcome(_) => {}
            ServerFrame::Msg { seq, ack, body } => {
                if seq <= self.in_seq {
                    self.take_ack(ack);
                    return; // replayed duplicate
                }
                if seq != self.in_seq + 1 {
                    // A gap cannot happen on an ordered socket; start over with a resume.
                    self.events.push_back(Event::Error {
                        code: ErrorCode::BadSequence,
                        message: format!("expected seq {}, got {seq}", self.in_seq + 1),
                        re: None,
                    });
                    self.abandon_link();
                    self.link_lost(now);
                    return;
                }
                self.in_seq = seq;
                let before = self.transmit.len();
                // The body first: an answer and the ack covering its request arrive
                // together, and the answer needs the request's record.
                self.server_msg(body, now);
                self.take_ack(ack);
                let carried = self
                    .transmit
                    .iter()
                    .skip(before)
                    .any(|f| matches!(f, ClientFrame::Msg { .. }));
                if !carried {
                    self.transmit
                        .push_back(ClientFrame::Ack { ack: self.in_seq });
                    self.last_tx = now;
                }
            }
            ServerFrame::Ack { ack } | ServerFrame::Pong { ack } => self.take_ack(ack),
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Attempt => {
                    if self.next_attempt_at == Some(at) && self.link.is_none() {
                        self.open_link(now);
                    }
                }
                Timer::ConnectTimeout => {
                    if let Some((_, phase)) = self.link {
                        if phase != LinkPhase::Ready
                            && now >= self.last_rx + self.config.connect_timeout_ms
                        {
                            self.abandon_link();
                            self.link_lost(now);
                        }
                    }
                }
                Timer::Heartbeat => self.heartbeat(now),
                Timer::Countdown => self.countdown(now),
                Timer::Refresh => {
                    if self.state == ConnectionState::Connected && !self.records.is_empty() {
                        self.refresh_records(now);
                        self.timers
                            .schedule(now + self.config.rejoin_refresh_ms, Timer::Refresh);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ internals

    fn check_usable(&self) -> Result<(), ClientError> {
        if self.state == ConnectionState::LoggedOut {
            Err(ClientError::LoggedOut)
        } else {
            Ok(())
        }
    }

    fn expect_phase(
        &self,
        call: &str,
        phase: CallPhase,
        why: &'static str,
    ) -> Result<(), ClientError> {
        self.check_usable()?;
        let c = self.calls.get(call).ok_or(ClientError::UnknownCall)?;
        if c.phase != phase {
            return Err(ClientError::InvalidState(why));
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.link.is_some_and(|(_, p)| p == LinkPhase::Ready)
    }

    /// Queue an application message: sent at once when a session is ready, otherwise
    /// held unsequenced until one is (so a message never sent is never ambiguous after
    /// a session loss). Returns its request id.
    fn enqueue(&mut self, msg: ClientMsg, now: u64) -> Result<u64, ClientError> {
        if self.unacked_len() >= self.config.max_unacked {
            return Err(ClientError::BufferFull);
        }
        let req = self.next_request;
        self.next_request += 1;
        if self.ready() {
            self.send_sequenced(req, msg, now);
        } else {
            self.pending.push_back((req, msg));
        }
        Ok(req)
    }

    fn send_sequenced(&mut self, req: u64, msg: ClientMsg, now: u64) -> u64 {
        self.out_seq += 1;
        let seq = self.out_seq;
        let request = match &msg {
            ClientMsg::Invite { peer, .. } => Request::Invite(peer.clone()),
            ClientMsg::Rejoin { call, .. } => Request::Rejoin(call.clone()),
            _ => Request::Other,
        };
        self.requests.insert(seq, (req, request));
        self.transmit.push_back(ClientFrame::Msg {
            seq,
            ack: self.in_seq,
            body: msg.clone(),
        });
        self.unacked.push_back((seq, msg));
        self.last_tx = now;
        seq
    }

    /// Send what was queued while no session was ready.
    fn flush_pending(&mut self, now: u64) {
        let pending: Vec<(u64, ClientMsg)> = self.pending.drain(..).collect();
        for (req, msg) in pending {
            self.send_sequenced(req, msg, now);
        }
    }

    fn take_ack(&mut self, ack: u64) {
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= ack) {
            self.unacked.pop_front();
        }
        // Handled requests that expect no answer are done; invites and rejoins wait for
        // theirs (which arrive before or with the ack that covers them).
        self.requests
            .retain(|seq, (_, r)| *seq > ack || *r != Request::Other);
    }

    fn backoff_delay(&mut self) -> u64 {
        if self.attempt == 0 {
            return 0;
        }
        let exp = self.attempt.saturating_sub(1).min(20);
        let cap = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.backoff_max_ms);
        // Equal jitter: half fixed, half random, so a storm of clients spreads out but
        // nobody waits much longer than the schedule.
        let half = cap / 2;
        half + (self.rng.next_f64() * half as f64) as u64
    }

    fn attempt_now(&mut self, now: u64) {
        if !self.online {
            self.state = ConnectionState::Offline;
            self.next_attempt_at = None;
            self.events.push_back(Event::Offline);
            return;
        }
        self.next_attempt_at = Some(now);
        self.open_link(now);
    }

    fn open_link(&mut self, now: u64) {
        if self.link.is_some() {
            return;
        }
        let id = self.next_link;
        self.next_link += 1;
        self.link = Some((id, LinkPhase::Opening));
        self.next_attempt_at = None;
        self.last_rx = now;
        self.attempt += 1;
        self.io.push_back(Io::Open(id));
        self.events.push_back(if self.session.is_some() {
            Event::Reconnecting {
                attempt: self.attempt,
            }
        } else {
            Event::Connecting {
                attempt: self.attempt,
            }
        });
        self.timers
            .schedule(now + self.config.connect_timeout_ms, Timer::ConnectTimeout);
    }

    fn abandon_link(&mut self) {
        if let Some((id, _)) = self.link.take() {
            self.io.push_back(Io::Close(id));
        }
        self.transmit.clear();
    }

    /// A call window is open while a call of ours or an offered rejoin has time left.
    fn call_window_open(&self, now: u64) -> bool {
        let since = self.down_since.unwrap_or(now);
        self.calls
            .values()
            .any(|c| c.phase == CallPhase::Active && since + c.grace_ms > now)
            || self.records.values().any(|r| r.deadline > now)
    }

    /// The link is gone (closed, dead, or refused): schedule the next attempt.
    fn link_lost(&mut self, now: u64) {
        self.transmit.clear();
        match self.state {
            ConnectionState::LoggedOut | ConnectionState::AuthFailed | ConnectionState::GaveUp => {
                return
            }
            ConnectionState::Connected => {
                self.state = ConnectionState::Reconnecting;
                self.attempt = 0;
                self.down_since = Some(now);
                self.lost_at = Some(now);
                // Our own slot's window started about when the server last heard us.
                self.refresh_records(self.last_rx.min(now));
            }
            _ => {
                if self.down_since.is_none() {
                    self.down_since = Some(now);
                }
            }
        }
        if !self.online {
            self.state = ConnectionState::Offline;
            self.next_attempt_at = None;
            self.events.push_back(Event::Disconnected {
                next_attempt_at: None,
            });
            return;
        }
        let down_for = now.saturating_sub(self.down_since.unwrap_or(now));
        if down_for >= self.config.give_up_after_ms && !self.call_window_open(now) {
            self.state = ConnectionState::GaveUp;
            self.next_attempt_at = None;
            self.events.push_back(Event::Disconnected {
                next_attempt_at: None,
            });
            self.events.push_back(Event::GaveUp);
            // Every window has passed: the server has ended these calls, so they must
            // not stay in the map (no stuck states). Ringing ones ended long ago.
            self.end_all_local(|phase| match phase {
                CallPhase::Active => EndReason::ReconnectFailed,
                CallPhase::Outgoing => EndReason::Cancelled,
                CallPhase::Incoming => EndReason::NoAnswer,
            });
            return;
        }
        let at = now + self.backoff_delay();
        self.next_attempt_at = Some(at);
        self.events.push_back(Event::Disconnected {
            next_attempt_at: Some(at),
        });
        if at <= now {
            self.open_link(now);
        } else {
            self.timers.schedule(at, Timer::Attempt);
        }
    }

    fn send_ping(&mut self, now: u64) {
        if self.ready() {
            self.transmit
                .push_back(ClientFrame::Ping { ack: self.in_seq });
            self.last_tx = now;
        }
    }

    fn heartbeat(&mut self, now: u64) {
        if !self.ready() {
            return;
        }
        if now >= self.last_rx + self.heartbeat_timeout {
            // Silence for a whole timeout: the link is dead even if the socket says open.
            self.abandon_link();
            self.link_lost(now);
            return;
        }
        if now >= self.last_tx + self.heartbeat_interval {
            self.send_ping(now);
        }
        let next =
            (self.last_tx + self.heartbeat_interval).min(self.last_rx + self.heartbeat_timeout);
        self.timers.schedule(next.max(now + 1), Timer::Heartbeat);
    }

    fn server_error(&mut self, e: ErrorBody, now: u64) {
        let code = e.code;
        if !e.fatal {
            self.events.push_back(Event::Error {
                code,
                message: e.message,
                re: e.re,
            });
            return;
        }
        self.abandon_link();
        match code {
            ErrorCode::AuthFailed | ErrorCode::TokenExpired | ErrorCode::UnsupportedVersion => {
                self.state = ConnectionState::AuthFailed;
                self.next_attempt_at = None;
                self.events.push_back(Event::AuthFailed {
                    code,
                    message: e.message,
                });
            }
            ErrorCode::Superseded => {
                // Another socket took this session over; ours is stale.
                self.events.push_back(Event::Error {
                    code,
                    message: e.message,
                    re: None,
                });
                self.link_lost(now);
            }
            _ => {
                self.events.push_back(Event::Error {
                    code,
                    message: e.message,
                    re: None,
                });
                if self.state == ConnectionState::Connected || self.attempt == 0 {
                    self.link_lost(now);
                    // A server that is going away or refusing us should not be hit at once.
                    if self.attempt == 0 {
                        self.attempt = 1;
                    }
                } else {
                    self.link_lost(now);
                }
            }
        }
    }

    fn local_time(&self, server_ms: u64) -> u64 {
        (server_ms as i64 - self.clock_offset).max(0) as u64
    }

    fn welcome(&mut self, w: Welcome, now: u64) {
        let Some((link, _)) = self.link else {
            return;
        };
        self.link = Some((link, LinkPhase::Ready));
        // The server read its clock somewhere between our hello and this welcome: the
        // midpoint keeps the error within half a round trip, so both sides count down
        // to (nearly) the same instant.
        let midpoint = self.hello_sent_at.min(now) + now.saturating_sub(self.hello_sent_at) / 2;
        self.clock_offset = w.now as i64 - midpoint as i64;
        self.heartbeat_interval = w.timers.heartbeat_interval_ms;
        self.heartbeat_timeout = w.timers.heartbeat_timeout_ms;
        let had_session = self.session.is_some();
        let resumed = w.resumed && self.session.as_ref().is_some_and(|s| s.id == w.session);
        self.session = Some(SessionState {
            id: w.session,
            secret: w.secret,
            user: w.user.clone(),
        });
        self.state = ConnectionState::Connected;
        self.attempt = 0;
        self.down_since = None;
        let away_since = self.lost_at.take();
        self.next_attempt_at = None;
        if resumed {
            // Re-send exactly what the server has not handled, in order. (Only the
            // resend buffer is trimmed here: answers to handled requests may still be in
            // the server's replay that follows, and need their request records.)
            while self
                .unacked
                .front()
                .is_some_and(|(seq, _)| *seq <= w.last_seq)
            {
                self.unacked.pop_front();
            }
            let replay: Vec<(u64, ClientMsg)> = self.unacked.iter().cloned().collect();
            for (seq, body) in replay {
                self.transmit.push_back(ClientFrame::Msg {
                    seq,
                    ack: self.in_seq,
                    body,
                });
            }
            self.events.push_back(Event::Resumed { recovered: true });
        } else {
            let unconfirmed = self.unacked.len();
            self.unacked.clear();
            // Requests the server never confirmed will get no answer now.
            let lost = std::mem::take(&mut self.requests);
            for (_, (req, request)) in lost {
                if request != Request::Other {
                    self.events.push_back(Event::Error {
                        code: ErrorCode::SessionLost,
                        message: "the session was lost before the server confirmed this request"
                            .into(),
                        re: Some(req),
                    });
                }
            }
            self.out_seq = 0;
            self.in_seq = 0;
            if had_session {
                self.events.push_back(Event::SessionLost { unconfirmed });
                self.events.push_back(Event::Resumed { recovered: false });
            } else {
                self.events.push_back(Event::Connected {
                    session: self
                        .session
                        .as_ref()
                        .map(|s| s.id.clone())
                        .unwrap_or_default(),
                    user: w.user.clone(),
                });
            }
            self.reconcile(&w.user, w.snapshot.unwrap_or_default(), away_since, now);
        }
        self.flush_pending(now);
        if resumed && self.transmit.is_empty() {
            // Tell the server at once that the welcome (and its new secret) arrived, so
            // it stops accepting the previous secret.
            self.transmit
                .push_back(ClientFrame::Ack { ack: self.in_seq });
        }
        self.last_tx = now;
        self.timers.schedule(now + 1, Timer::Heartbeat);
        if !self.records.is_empty() {
            self.refresh_records(now);
            self.timers
                .schedule(now + self.config.rejoin_refresh_ms, Timer::Refresh);
        }
    }

    /// Rebuild the active-call map and rejoin offers from a snapshot (a new session).
    /// `away_since`: when the link was lost (None for a first session).
    fn reconcile(&mut self, me: &Peer, snap: Snapshot, away_since: Option<u64>, now: u64) {
        // Records of another identity (a shared browser) are not ours to use.
        let foreign: Vec<CallId> = self
            .records
            .values()
            .filter(|r| r.user != me.id)
            .map(|r| r.call.clone())
            .collect();
        for call in foreign {
            // Not ours to delete either: it is that person's record.
            self.drop_record_here(&call);
        }
        if !snap.presence.is_empty() || self.config.presence {
            self.presence = snap
                .presence
                .iter()
                .map(|e| (e.user.id.clone(), e.clone()))
                .collect();
            self.events.push_back(Event::Presence {
                entries: snap.presence.clone(),
            });
        }
        let by_id: BTreeMap<&str, &CallInfo> =
            snap.calls.iter().map(|c| (c.id.as_str(), c)).collect();
        // Calls this page had.
        let known: Vec<CallId> = self.calls.keys().cloned().collect();
        for id in known {
            match by_id.get(id.as_str()) {
                Some(info) if info.state == CallState::Active => {
                    let mine = my_slot(info, &me.id);
                    if mine.is_some_and(|p| p.link == LinkState::Reconnecting)
                        && self.records.contains_key(&id)
                    {
                        // Our old session lost it but it waits for us: take it back.
                        let token = self.records[&id].token.clone();
                        self.auto_rejoins.insert(id.clone(), ());
                        let req = self.next_request;
                        self.next_request += 1;
                        self.pending.push_back((
                            req,
                            ClientMsg::Rejoin {
                                call: id.clone(),
                                token,
                            },
                        ));
                    } else {
                        self.calls.remove(&id);
                        self.drop_record_here(&id);
                        self.events.push_back(Event::CallMoved { call: id });
                    }
                }
                Some(info) if info.state == CallState::Ringing && info.callee.user.id == me.id => {
                    // Still ringing for us: keep offering it.
                }
                _ => {
                    // Gone. The snapshot says why, unless the server no longer knows the
                    // call at all: then it lost its state (a restart without a durable
                    // store), and nobody cancelled anything.
                    let window_passed = self.calls.get(&id).is_some_and(|c| {
                        c.phase == CallPhase::Active
                            && away_since.is_some_and(|t| t + c.grace_ms <= now)
                    });
                    let reason = match snap.ended.iter().find(|e| e.call == id) {
                        Some(e) => e.reason,
                        // Away for longer than the window: it ended without us, long
                        // enough ago that the server forgot how.
                        None if window_passed => EndReason::ReconnectFailed,
                        None => EndReason::ServerLost,
                    };
                    self.end_local(&id, reason);
                }
            }
        }
        // Records loaded from storage (a reloaded page).
        let stored: Vec<CallId> = self
            .records
            .keys()
            .filter(|c| !self.calls.contains_key(*c))
            .cloned()
            .collect();
        for id in stored {
            match by_id.get(id.as_str()) {
                Some(info) if info.state == CallState::Active => {
                    let mine = my_slot(info, &me.id);
                    match mine {
                        Some(p) if p.link == LinkState::Reconnecting => {
                            // Confirmed: the call waits for us, until the server's deadline
                            // (on this page's clock as the welcome just measured it).
                            let deadline = p.deadline.map(|d| self.local_time(d));
                            let offered = self.offers.contains_key(&id);
                            let offset = self.clock_offset;
                            self.unconfirmed.remove(&id);
                            if let Some(r) = self.records.get_mut(&id) {
                                if let Some(d) = deadline {
                                    // A countdown on screen never goes up.
                                    r.deadline = if offered { r.deadline.min(d) } else { d };
                                }
                                r.clock_offset = offset;
                                let r = r.clone();
                                self.storage.push_back(StorageOp::Put(r));
                            }
                            if !self.held_by_other_tab.contains_key(&id) && !offered {
                                self.offer(&id, now);
                            }
                        }
                        _ => {
                            // Live in another tab or device: keep the token for an explicit
                            // takeover, but do not offer it.
                            self.unconfirmed.remove(&id);
                            if self.offers.remove(&id).is_some() {
                                self.events.push_back(Event::RejoinWithdrawn {
                                    call: id,
                                    why: RejoinWithdrawn::HeldElsewhere,
                                });
                            }
                        }
                    }
                }
                _ => {
                    let ended = snap.ended.iter().find(|e| e.call == id).map(|e| e.reason);
                    let was_offered = self.offers.remove(&id).is_some();
                    let Some(r) = self.records.get(&id).cloned() else {
                        continue;
                    };
                    self.forget_record(&id);
                    // The record's own deadline, on the server's clock: was the window
                    // still open when the server forgot the call?
                    let server_now = now as i64 + self.clock_offset;
                    let window_open = r.deadline as i64 + r.clock_offset > server_now;
                    match ended {
                        Some(reason) => {
                            if was_offered {
                                self.events.push_back(Event::RejoinWithdrawn {
                                    call: id.clone(),
                                    why: RejoinWithdrawn::CallEnded,
                                });
                            }
                            self.events.push_back(Event::CallEnded {
                                call: id,
                                reason,
                                peer: r.peer,
                            });
                        }
                        None if was_offered => {
                            self.events.push_back(Event::RejoinExpired { call: id })
                        }
                        // Never offered: the page learns once, with the person's name,
                        // that the server lost the call; a window that passed long ago
                        // needs no word.
                        None if window_open => self.events.push_back(Event::CallEnded {
                            call: id,
                            reason: EndReason::ServerLost,
                            peer: r.peer,
                        }),
                        None => {}
                    }
                }
            }
        }
        // Calls this page ended whose end the lost session may never have delivered.
        for info in snap.calls.iter() {
            if self.was_ended_here(&info.id) {
                let req = self.next_request;
                self.next_request += 1;
                self.pending.push_back((
                    req,
                    ClientMsg::Hangup {
                        call: info.id.clone(),
                    },
                ));
            }
        }
        // Incoming calls still ringing.
        for info in snap.calls.iter() {
            if info.state == CallState::Ringing
                && info.callee.user.id == me.id
                && !self.calls.contains_key(&info.id)
                && !self.was_ended_here(&info.id)
            {
                let call = self.client_call(info, CallPhase::Incoming);
                self.calls.insert(info.id.clone(), call.clone());
                self.events.push_back(Event::IncomingCall { call });
            }
        }
    }

    fn client_call(&self, info: &CallInfo, phase: CallPhase) -> ClientCall {
        let me = self.user().map(|u| u.id.as_str()).unwrap_or_default();
        let peer = if info.caller.user.id == me {
            &info.callee
        } else {
            &info.caller
        };
        ClientCall {
            id: info.id.clone(),
            phase,
            peer: peer.user.clone(),
            kind: info.kind.clone(),
            metadata: info.metadata.clone(),
            grace_ms: info.grace_ms,
            peer_link: peer.link,
            peer_deadline: peer.deadline.map(|d| self.local_time(d)),
            ring_deadline: info.ring_deadline.map(|d| self.local_time(d)),
        }
    }

    fn server_msg(&mut self, body: ServerMsg, now: u64) {
        // News that crossed this page's own hang-up: the call is over here.
        let about = match &body {
            ServerMsg::CallCreated { call, .. }
            | ServerMsg::IncomingCall { call }
            | ServerMsg::CallStarted { call, .. } => Some(call.id.as_str()),
            ServerMsg::ParticipantDisconnected { call, .. }
            | ServerMsg::ParticipantReconnected { call, .. }
            | ServerMsg::CallEnded { call, .. }
            | ServerMsg::CallMoved { call } => Some(call.as_str()),
            _ => None,
        };
        if about.is_some_and(|c| self.was_ended_here(c)) {
            if let ServerMsg::CallCreated { re, .. } = body {
                self.requests.remove(&re);
            }
            return;
        }
        match body {
            ServerMsg::CallCreated { re, call, existing } => {
                let Some((re, _)) = self.requests.remove(&re) else {
                    return;
                };
                let me = self.user().map(|u| u.id.clone()).unwrap_or_default();
                let phase = match call.state {
                    CallState::Active => CallPhase::Active,
                    _ if call.caller.user.id == me => CallPhase::Outgoing,
                    _ => CallPhase::Incoming,
                };
                let c = self.client_call(&call, phase);
                if call.state != CallState::Ended
                    && (call.held_here || phase == CallPhase::Incoming)
                {
                    self.calls
                        .entry(call.id.clone())
                        .or_insert_with(|| c.clone());
                }
                self.events.push_back(Event::OutgoingCall {
                    re,
                    call: c,
                    existing,
                });
            }
            ServerMsg::IncomingCall { call } => {
                let busy =
                    !self.config.call_waiting && self.calls.values().any(|c| c.id != call.id);
                let c = self.client_call(&call, CallPhase::Incoming);
                if busy {
                    // Already in (or being offered) a call: answer busy for the user.
                    let req = self.next_request;
                    self.next_request += 1;
                    self.send_sequenced(
                        req,
                        ClientMsg::Decline {
                            call: call.id.clone(),
                            busy: true,
                        },
                        now,
                    );
                    return;
                }
                self.calls.insert(call.id.clone(), c.clone());
                self.events.push_back(Event::IncomingCall { call: c });
            }
            ServerMsg::CallStarted {
                call,
                rejoin_token,
                rejoined,
            } => {
                let c = self.client_call(&call, CallPhase::Active);
                self.calls.insert(call.id.clone(), c.clone());
                self.offers.remove(&call.id);
                self.auto_rejoins.remove(&call.id);
                if rejoined {
                    self.requests
                        .retain(|_, (_, r)| *r != Request::Rejoin(call.id.clone()));
                }
                let record = RejoinRecord {
                    v: REJOIN_RECORD_VERSION,
                    call: call.id.clone(),
                    user: self.user().map(|u| u.id.clone()).unwrap_or_default(),
                    token: rejoin_token,
                    peer: c.peer.clone(),
                    kind: c.kind.clone(),
                    grace_ms: c.grace_ms,
                    deadline: now + c.grace_ms,
                    clock_offset: self.clock_offset,
                };
                self.records.insert(call.id.clone(), record.clone());
                self.unconfirmed.remove(&call.id);
                self.storage.push_back(StorageOp::Put(record));
                self.timers
                    .schedule(now + self.config.rejoin_refresh_ms, Timer::Refresh);
                self.events
                    .push_back(Event::CallStarted { call: c, rejoined });
            }
            ServerMsg::ParticipantDisconnected {
                call,
                user,
                deadline,
                ..
            } => {
                let local = self.local_time(deadline);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.peer_link = LinkState::Reconnecting;
                    c.peer_deadline = Some(local);
                }
                self.events.push_back(Event::ParticipantDisconnected {
                    call,
                    user,
                    deadline: local,
                    remaining_ms: local.saturating_sub(now),
                });
            }
            ServerMsg::ParticipantReconnected { call, user } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.peer_link = LinkState::Connected;
                    c.peer_deadline = None;
                }
                self.events
                    .push_back(Event::ParticipantReconnected { call, user });
            }
            ServerMsg::CallEnded { call, reason } => {
                if self.calls.contains_key(&call) {
                    self.end_local(&call, reason);
                } else if let Some(peer) = self.records.get(&call).map(|r| r.peer.clone()) {
                    // A call this page only held a rejoin record for (a reload's
                    // prompt): the prompt goes away with the reason.
                    if self.offers.contains_key(&call) {
                        self.events.push_back(Event::RejoinWithdrawn {
                            call: call.clone(),
                            why: RejoinWithdrawn::CallEnded,
                        });
                    }
                    self.forget_record(&call);
                    self.events
                        .push_back(Event::CallEnded { call, reason, peer });
                }
            }
            ServerMsg::CallMoved { call } => {
                // Taken by another tab or device: never try to take it back ourselves.
                self.calls.remove(&call);
                self.drop_record_here(&call);
                self.auto_rejoins.remove(&call);
                self.events.push_back(Event::CallMoved { call });
            }
            ServerMsg::Signal {
                call,
                from,
                payload,
            } => {
                self.events.push_back(Event::Signal {
                    call,
                    from,
                    payload,
                });
            }
            ServerMsg::Presence { entries } => {
                self.presence = entries
                    .iter()
                    .map(|e| (e.user.id.clone(), e.clone()))
                    .collect();
                self.events.push_back(Event::Presence { entries });
            }
            ServerMsg::PresenceChanged { entry } => {
                if entry.status == PresenceStatus::Offline {
                    self.presence.remove(&entry.user.id);
                } else {
                    self.presence.insert(entry.user.id.clone(), entry.clone());
                }
                self.events.push_back(Event::PresenceChanged { entry });
            }
            ServerMsg::Error(e) => {
                let request = e.re.and_then(|seq| self.requests.remove(&seq));
                if let Some((_, Request::Rejoin(call))) = &request {
                    self.rejoin_refused(call.clone(), e.code);
                }
                self.events.push_back(Event::Error {
                    code: e.code,
                    message: e.message,
                    re: request.map(|(req, _)| req),
                });
            }
        }
    }

    /// A refused rejoin: the record is useless (wrong token, or the call is gone).
    fn rejoin_refused(&mut self, call: CallId, code: ErrorCode) {
        if !matches!(code, ErrorCode::RejoinDenied | ErrorCode::UnknownCall) {
            return;
        }
        let auto = self.auto_rejoins.remove(&call).is_some();
        if auto || self.calls.contains_key(&call) {
            self.end_local(&call, EndReason::ReconnectFailed);
        } else {
            self.forget_record(&call);
            self.events.push_back(Event::RejoinWithdrawn {
                call,
                why: RejoinWithdrawn::Denied,
            });
        }
    }

    /// Ends every call in the map here, each with the reason its phase calls for.
    fn end_all_local(&mut self, reason: impl Fn(CallPhase) -> EndReason) {
        let calls: Vec<(CallId, CallPhase)> = self
            .calls
            .values()
            .map(|c| (c.id.clone(), c.phase))
            .collect();
        for (id, phase) in calls {
            self.end_local(&id, reason(phase));
        }
    }

    /// A call ends here: tell the app, drop the record.
    fn end_local(&mut self, call: &str, reason: EndReason) {
        if let Some(c) = self.calls.remove(call) {
            self.events.push_back(Event::CallEnded {
                call: call.to_owned(),
                reason,
                peer: c.peer,
            });
        }
        self.offers.remove(call);
        self.forget_record(call);
    }

    /// Forget a record in this page but leave storage alone: after `call-moved` (in
    /// the same browser the stored record is now the new holder's, with the rotated
    /// token, and deleting it would race that tab's write; on another device the stale
    /// record goes when the call ends or its token is refused), and for another
    /// identity's record (a shared browser).
    fn drop_record_here(&mut self, call: &str) {
        self.records.remove(call);
        self.offers.remove(call);
        self.unconfirmed.remove(call);
    }

    fn forget_record(&mut self, call: &str) {
        if self.records.remove(call).is_some() {
            self.storage.push_back(StorageOp::Remove(call.to_owned()));
        }
        self.offers.remove(call);
        self.unconfirmed.remove(call);
    }

    fn offer_of(&self, r: &RejoinRecord, now: u64) -> RejoinOffer {
        RejoinOffer {
            call: r.call.clone(),
            peer: r.peer.clone(),
            kind: r.kind.clone(),
            deadline: r.deadline,
            remaining_ms: r.deadline.saturating_sub(now),
        }
    }

    fn offer(&mut self, call: &str, now: u64) {
        if self.unconfirmed.contains_key(call) {
            return; // the server has not said the call waits for us
        }
        let Some(r) = self.records.get(call) else {
            return;
        };
        let offer = self.offer_of(r, now);
        self.offers.insert(call.to_owned(), ());
        self.events.push_back(Event::RejoinAvailable { offer });
        self.timers.schedule(now + 1_000, Timer::Countdown);
    }

    /// Once a second while offers exist: report remaining time, expire the past.
    fn countdown(&mut self, now: u64) {
        if self.offers.is_empty() {
            return;
        }
        let offered: Vec<CallId> = self.offers.keys().cloned().collect();
        for call in offered {
            let Some(deadline) = self.records.get(&call).map(|r| r.deadline) else {
                self.offers.remove(&call);
                continue;
            };
            if deadline <= now {
                self.forget_record(&call);
                self.events.push_back(Event::RejoinExpired { call });
            } else {
                self.events.push_back(Event::RejoinCountdown {
                    call,
                    remaining_ms: deadline - now,
                });
            }
        }
        if !self.offers.is_empty() {
            self.timers.schedule(now + 1_000, Timer::Countdown);
        }
    }

    /// Push every held call's record with a deadline measured from `seen` (the last time
    /// the server surely had us).
    fn refresh_records(&mut self, seen: u64) {
        let held: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| c.phase == CallPhase::Active)
            .map(|c| c.id.clone())
            .collect();
        for id in held {
            if let Some(r) = self.records.get_mut(&id) {
                r.deadline = seen + r.grace_ms;
                r.clock_offset = self.clock_offset;
                self.storage.push_back(StorageOp::Put(r.clone()));
            }
        }
    }
}

fn my_slot<'a>(info: &'a CallInfo, me: &str) -> Option<&'a ParticipantInfo> {
    if info.caller.user.id == me {
        Some(&info.caller)
    } else if info.callee.user.id == me {
        Some(&info.callee)
    } else {
        None
    }
}
