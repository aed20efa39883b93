//! The client engine: what runs in the browser (through the wasm driver) and in the
//! native client driver used by tests and the load tool.
//!
//! Sans-IO. The driver feeds:
//! - socket life: [`ClientEngine::handle_open`], [`ClientEngine::handle_frame`],
//!   [`ClientEngine::handle_bad_frame`], [`ClientEngine::handle_close`], each tagged with
//!   the [`LinkId`] the engine asked for, so late events of an abandoned socket are ignored;
//! - the answer to an HTTP probe of a failed attempt: [`ClientEngine::handle_probe_result`];
//! - time: [`ClientEngine::handle_timeout`];
//! - the page: [`ClientEngine::handle_online`], [`ClientEngine::handle_wake`] (visible /
//!   pageshow), [`ClientEngine::handle_pagehide`];
//! - stored rejoin records at start-up: [`ClientEngine::load_rejoin_records`];
//! - the app's commands: [`ClientEngine::call`], [`ClientEngine::accept`], …
//!
//! and drains [`ClientEngine::poll_io`] (open/close a socket, probe a failed one), [`ClientEngine::poll_transmit`]
//! (frames for the current socket), [`ClientEngine::poll_event`] (for the app),
//! [`ClientEngine::poll_storage`] (rejoin records to write or delete) and
//! [`ClientEngine::poll_timeout`].
//!
//! Time is epoch milliseconds handed in by the driver (`Date.now()` in the browser), so
//! rejoin deadlines written to storage stay meaningful after a reload.
//!
//! One file per behaviour: `link.rs` (the socket's life, reconnecting, the heartbeat),
//! `backoff.rs` (when the next attempt goes), `failure.rs` (why an attempt failed), `session.rs` (hello, welcome, resume or a
//! new session reconciled from the server's snapshot, and the exactly-once message
//! flow), `calls.rs` (the active-call map and the commands on it), `rejoin.rs` (rejoin
//! records, offers and their countdown) and `presence.rs`. Public types live in
//! `types.rs` and `events.rs` and are re-exported here.

mod backoff;
mod calls;
mod events;
mod failure;
mod link;
mod logout;
mod presence;
mod rejoin;
mod session;
mod types;

pub use events::Event;
pub use failure::{ConnectionFailure, FailureReason, ProbeResult};
pub use logout::Goodbye;
pub use rejoin::{RejoinOffer, RejoinRecord, RejoinWithdrawn, REJOIN_RECORD_VERSION};
pub use types::{
    CallPhase, ClientCall, ClientConfig, ClientError, ClientSnapshot, ConnectionState, Io, LinkId,
    StorageOp,
};

use super::liveness::Liveness;
use super::TimerQueue;
use crate::engine::vec_map::VecMap;
use crate::protocol::*;
use backoff::Backoff;
use link::LinkPhase;
use rejoin::Rejoins;
use session::{Delivery, SessionState};
use std::collections::VecDeque;

/// What a scheduled deadline is for. Timers are hints: each is checked against the
/// state when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Attempt,
    ConnectTimeout,
    Heartbeat,
    Countdown,
    Refresh,
    /// The server's answer to a logout's `bye` is due.
    ByeAnswer,
    /// An invite's answer is due.
    Request,
    /// The driver's probe of a failed attempt is due.
    Probe,
}

/// The client engine. See the module documentation.
pub struct ClientEngine {
    config: ClientConfig,
    state: ConnectionState,
    /// The socket in use and its phase.
    link: Option<(LinkId, LinkPhase)>,
    next_link: LinkId,
    online: bool,
    /// When the link was lost (for giving up; restarts with a manual reconnect).
    down_since: Option<u64>,
    /// When the session's link was lost, whatever happened since: at the next welcome,
    /// a call that the server forgot tells whether its window passed meanwhile.
    lost_at: Option<u64>,
    next_attempt_at: Option<u64>,
    backoff: Backoff,
    /// Heartbeat watchdog of the current link.
    liveness: Liveness,
    session: Option<SessionState>,
    /// Server clock minus local clock, from the last welcome.
    clock_offset: i64,
    /// When the current link's hello was sent (to estimate the clock offset).
    hello_sent_at: u64,
    /// Application messages on their way, both directions.
    delivery: Delivery,
    calls: VecMap<CallId, ClientCall>,
    /// Calls this page ended by its own command (most recent last): late server news
    /// about them (answers that crossed the hang-up) must not bring them back.
    ended_here: VecDeque<CallId>,
    rejoins: Rejoins,
    logout: logout::Logout,
    presence: VecMap<UserId, PresenceEntry>,
    /// A failed attempt waiting for the driver's HTTP probe.
    probe: Option<failure::PendingProbe>,
    /// The last failed attempt, until the next welcome.
    last_failure: Option<ConnectionFailure>,
    timers: TimerQueue<Timer>,
    io: VecDeque<Io>,
    transmit: VecDeque<ClientFrame>,
    events: VecDeque<Event>,
    storage: VecDeque<StorageOp>,
}

impl ClientEngine {
    pub fn new(config: ClientConfig) -> Self {
        Self {
            liveness: Liveness::new(config.heartbeat_interval_ms, config.heartbeat_timeout_ms),
            backoff: Backoff::new(config.backoff_base_ms, config.backoff_max_ms, config.seed),
            config,
            state: ConnectionState::Idle,
            link: None,
            next_link: 1,
            online: true,
            down_since: None,
            lost_at: None,
            next_attempt_at: None,
            session: None,
            clock_offset: 0,
            hello_sent_at: 0,
            delivery: Delivery::default(),
            calls: VecMap::new(),
            ended_here: VecDeque::new(),
            rejoins: Rejoins::default(),
            logout: logout::Logout::default(),
            presence: VecMap::new(),
            probe: None,
            last_failure: None,
            timers: TimerQueue::default(),
            io: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            storage: VecDeque::new(),
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

    /// Rejoins offered to the app, with remaining time at `now`.
    pub fn pending_rejoins(&self, now: u64) -> Vec<RejoinOffer> {
        self.rejoins
            .offers
            .keys()
            .filter_map(|c| self.rejoins.records.get(c))
            .map(|r| self.offer_of(r, now))
            .collect()
    }

    /// Local epoch ms of the next connection attempt while reconnecting.
    pub fn next_attempt_at(&self) -> Option<u64> {
        self.next_attempt_at
    }

    /// Messages waiting for acknowledgement (sent or queued).
    pub fn unacked_len(&self) -> usize {
        self.delivery.unacked_len()
    }

    /// The rejoin token this page holds for a call (tests and tooling).
    pub fn rejoin_token(&self, call: &str) -> Option<&str> {
        self.rejoins.records.get(call).map(|r| r.token.as_str())
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

    // ------------------------------------------------------------------ time

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
                        let due = self.liveness.last_heard() + self.config.connect_timeout_ms;
                        if phase != LinkPhase::Ready && now < due {
                            // Heard since the attempt began (the socket opened): the
                            // welcome gets its own timeout from then, so look again.
                            self.timers.schedule(due, Timer::ConnectTimeout);
                        } else if phase != LinkPhase::Ready {
                            let attempt = self.backoff.attempt;
                            self.abandon_link();
                            self.link_lost(now);
                            let waited = self.config.connect_timeout_ms;
                            let message = if phase == LinkPhase::Opening {
                                format!("the socket did not open within {waited} ms")
                            } else {
                                format!("the server's welcome did not arrive within {waited} ms")
                            };
                            self.attempt_refused(
                                FailureReason::Timeout,
                                None,
                                message,
                                attempt,
                                now,
                            );
                        }
                    }
                }
                Timer::Probe => self.probe_timed_out(now),
                Timer::Heartbeat => self.heartbeat(now),
                Timer::Countdown => self.countdown(now),
                Timer::ByeAnswer => self.bye_by_other_means(now),
                Timer::Request => self.request_timeouts(now),
                Timer::Refresh => {
                    if self.state == ConnectionState::Connected && !self.rejoins.records.is_empty()
                    {
                        self.refresh_records(now);
                        self.timers
                            .schedule(now + self.config.rejoin_refresh_ms, Timer::Refresh);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------- command checks

    pub(super) fn check_usable(&self) -> Result<(), ClientError> {
        if self.state == ConnectionState::LoggedOut {
            Err(ClientError::LoggedOut)
        } else {
            Ok(())
        }
    }

    pub(super) fn expect_phase(
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
}
