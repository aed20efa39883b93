//! The socket's life: opening, the hello, reconnecting after a drop (or giving up),
//! the browser going offline and coming back, the page waking, the heartbeat that
//! finds a dead link, and fatal errors from the server.

use super::{CallPhase, ConnectionState, FailureReason};
use super::{ClientEngine, Event, Io, LinkId, Timer};
use crate::engine::liveness::Check;
use crate::engine::reliable::Received;
use crate::protocol::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkPhase {
    /// Asked the driver to open it.
    Opening,
    /// Open, hello sent, waiting for the welcome.
    Hello,
    /// Welcomed: application traffic flows.
    Ready,
}

impl ClientEngine {
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
                self.backoff.attempt = 0;
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
        // A logout still waiting for its answer must not be lost with the page.
        if !self.logout.fallback_sent {
            self.bye_by_other_means(now);
        }
        if self.state == ConnectionState::Connected {
            self.refresh_records(now);
        }
    }

    /// The page is going away for good (unload, not the back/forward cache): write
    /// fresh rejoin deadlines and tell the server to forget the session now (`leave`:
    /// no call ends, each waits for a rejoin). No timer is armed any more; the driver
    /// closes the socket once the frame is on it, and the page is gone.
    pub fn handle_unload(&mut self, now: u64) {
        self.handle_pagehide(now);
        if self.link.is_some_and(|(_, p)| p == LinkPhase::Ready) {
            self.transmit.push_back(ClientFrame::Leave);
        }
        self.timers.clear();
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
            self.backoff.attempt = 0;
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
                self.backoff.attempt = 0;
                self.down_since = Some(now);
                self.abandon_link();
                self.attempt_now(now);
            }
        }
    }

    // ----------------------------------------------------------- link input

    /// The socket for `link` opened.
    pub fn handle_open(&mut self, link: LinkId, now: u64) {
        if self.link != Some((link, LinkPhase::Opening)) {
            return;
        }
        self.link = Some((link, LinkPhase::Hello));
        self.liveness.heard(now);
        let resume = self.session.as_ref().map(|s| Resume {
            session: s.id.clone(),
            secret: s.secret.clone(),
            last_seq: self.delivery.inbox.last_seq(),
        });
        self.transmit.push_back(ClientFrame::Hello(Hello {
            v: PROTOCOL_VERSION,
            token: self.config.token.clone(),
            resume,
            presence: self.config.presence,
            call_waiting: self.config.call_waiting,
            tab: self.config.tab.clone(),
        }));
        self.liveness.sent(now);
        self.hello_sent_at = now;
    }

    /// The socket for `link` closed or failed.
    pub fn handle_close(&mut self, link: LinkId, now: u64) {
        if self.link.map(|(id, _)| id) != Some(link) {
            return;
        }
        if self.logout_pending() {
            return self.bye_link_gone();
        }
        let before_welcome = self.link.is_some_and(|(_, p)| p != LinkPhase::Ready);
        let attempting = matches!(
            self.state,
            ConnectionState::Connecting | ConnectionState::Reconnecting
        );
        let attempt = self.backoff.attempt;
        self.link = None;
        self.link_lost(now);
        if before_welcome && attempting {
            self.attempt_failed(link, attempt, now);
        }
    }

    /// A frame that could not be decoded arrived on `link`.
    pub fn handle_bad_frame(&mut self, link: LinkId, bad: BadFrame, now: u64) {
        if self.link.map(|(id, _)| id) != Some(link) {
            return;
        }
        self.liveness.heard(now);
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
        self.liveness.heard(now);
        if self.state == ConnectionState::LoggedOut {
            // Only the answer to the logout's `bye` matters now.
            if frame == ServerFrame::Bye {
                self.bye_answered();
            }
            return;
        }
        match frame {
            ServerFrame::Bye => {}
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
                match self.delivery.inbox.accept(seq) {
                    Received::New => {}
                    Received::Duplicate => {
                        self.take_ack(ack);
                        return; // replayed duplicate
                    }
                    Received::Gap { expected } => {
                        // A gap cannot happen on an ordered socket; start over with a
                        // resume.
                        self.events.push_back(Event::Error {
                            code: ErrorCode::BadSequence,
                            message: format!("expected seq {expected}, got {seq}"),
                            re: None,
                        });
                        self.abandon_link();
                        self.link_lost(now);
                        return;
                    }
                }
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
                    self.transmit.push_back(ClientFrame::Ack {
                        ack: self.delivery.inbox.last_seq(),
                    });
                    self.liveness.sent(now);
                }
            }
            ServerFrame::Ack { ack } | ServerFrame::Pong { ack } => self.take_ack(ack),
        }
    }

    // ------------------------------------------------------------ internals

    pub(super) fn ready(&self) -> bool {
        self.link.is_some_and(|(_, p)| p == LinkPhase::Ready)
    }

    pub(super) fn attempt_now(&mut self, now: u64) {
        if !self.online {
            self.state = ConnectionState::Offline;
            self.next_attempt_at = None;
            self.events.push_back(Event::Offline);
            return;
        }
        self.next_attempt_at = Some(now);
        self.open_link(now);
    }

    pub(super) fn open_link(&mut self, now: u64) {
        if self.link.is_some() {
            return;
        }
        let id = self.next_link;
        self.next_link += 1;
        self.link = Some((id, LinkPhase::Opening));
        self.next_attempt_at = None;
        self.liveness.heard(now);
        self.backoff.attempt += 1;
        self.io.push_back(Io::Open(id));
        self.events.push_back(if self.session.is_some() {
            Event::Reconnecting {
                attempt: self.backoff.attempt,
            }
        } else {
            Event::Connecting {
                attempt: self.backoff.attempt,
            }
        });
        self.timers
            .schedule(now + self.config.connect_timeout_ms, Timer::ConnectTimeout);
    }

    pub(super) fn abandon_link(&mut self) {
        if let Some((id, _)) = self.link.take() {
            self.io.push_back(Io::Close(id));
        }
        self.transmit.clear();
    }

    /// A call window is open while a call of ours or an offered rejoin has time left.
    pub(super) fn call_window_open(&self, now: u64) -> bool {
        let since = self.down_since.unwrap_or(now);
        self.calls
            .values()
            .any(|c| c.phase == CallPhase::Active && since + c.grace_ms > now)
            || self.rejoins.records.values().any(|r| r.deadline > now)
    }

    /// The link is gone (closed, dead, or refused): schedule the next attempt.
    pub(super) fn link_lost(&mut self, now: u64) {
        self.transmit.clear();
        match self.state {
            ConnectionState::LoggedOut | ConnectionState::AuthFailed | ConnectionState::GaveUp => {
                return
            }
            ConnectionState::Connected => {
                self.state = ConnectionState::Reconnecting;
                self.backoff.attempt = 0;
                self.down_since = Some(now);
                self.lost_at = Some(now);
                // Our own slot's window started about when the server last heard us.
                self.refresh_records(self.liveness.last_heard().min(now));
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
        let at = now + self.backoff.delay_at(now);
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

    pub(super) fn send_ping(&mut self, now: u64) {
        if self.ready() {
            self.transmit.push_back(ClientFrame::Ping {
                ack: self.delivery.inbox.last_seq(),
            });
            self.liveness.pinged(now);
        }
    }

    pub(super) fn heartbeat(&mut self, now: u64) {
        if !self.ready() {
            return;
        }
        match self.liveness.check(now) {
            Check::Dead => {
                // Silence for a whole timeout: the link is dead even if the socket says
                // open.
                self.abandon_link();
                self.link_lost(now);
                return;
            }
            Check::PingDue => self.send_ping(now),
            Check::Alive => {}
        }
        self.timers
            .schedule(self.liveness.next_check(now), Timer::Heartbeat);
    }

    pub(super) fn server_error(&mut self, e: ErrorBody, now: u64) {
        let code = e.code;
        if !e.fatal {
            self.events.push_back(Event::Error {
                code,
                message: e.message,
                re: e.re,
            });
            return;
        }
        let before_welcome = !self.ready();
        let attempt = self.backoff.attempt;
        let refusal = before_welcome.then(|| e.message.clone());
        self.abandon_link();
        match code {
            ErrorCode::AuthFailed | ErrorCode::TokenExpired | ErrorCode::UnsupportedVersion => {
                self.state = ConnectionState::AuthFailed;
                self.next_attempt_at = None;
                self.events.push_back(Event::AuthFailed {
                    code,
                    message: e.message.clone(),
                });
                let reason = if code == ErrorCode::UnsupportedVersion {
                    FailureReason::Version
                } else {
                    FailureReason::AuthFailed
                };
                self.attempt_refused(reason, Some(code), e.message, attempt, now);
                return;
            }
            ErrorCode::ServerRestarting => {
                // The server keeps our session and is coming straight back: resume at
                // once, and keep retrying briskly until the new process listens.
                self.events.push_back(Event::Error {
                    code,
                    message: e.message,
                    re: None,
                });
                self.backoff
                    .hold_short_until(now + crate::protocol::RESTART_FAST_RETRY_MS);
                self.link_lost(now);
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
                if self.state == ConnectionState::Connected || self.backoff.attempt == 0 {
                    self.link_lost(now);
                    // A server that is going away or refusing us should not be hit at once.
                    if self.backoff.attempt == 0 {
                        self.backoff.attempt = 1;
                    }
                } else {
                    self.link_lost(now);
                }
            }
        }
        if let Some(message) = refusal {
            self.attempt_refused(FailureReason::Refused, Some(code), message, attempt, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ClientConfig;
    use super::*;

    fn drain_io(e: &mut ClientEngine) -> Vec<Io> {
        std::iter::from_fn(|| e.poll_io()).collect()
    }

    fn drain_events(e: &mut ClientEngine) -> Vec<Event> {
        std::iter::from_fn(|| e.poll_event()).collect()
    }

    #[test]
    fn a_socket_that_never_opens_is_abandoned_and_retried_after_backoff() {
        let mut config = ClientConfig::new("t");
        config.connect_timeout_ms = 5_000;
        let mut e = ClientEngine::new(config);
        e.connect(0);
        assert_eq!(drain_io(&mut e), [Io::Open(1)]);
        assert_eq!(drain_events(&mut e), [Event::Connecting { attempt: 1 }]);
        assert_eq!(e.poll_timeout(), Some(5_000));
        e.handle_timeout(5_000);
        assert_eq!(drain_io(&mut e), [Io::Close(1)]);
        let events = drain_events(&mut e);
        let Some(&Event::Disconnected {
            next_attempt_at: Some(at),
        }) = events.first()
        else {
            panic!("{events:?}");
        };
        // Second attempt: about backoff_base_ms later (equal jitter).
        assert!((5_125..=5_250).contains(&at), "{at}");
        assert_eq!(e.state(), ConnectionState::Connecting);
        // A late open of the abandoned socket is ignored.
        e.handle_open(1, 5_001);
        assert_eq!(e.poll_transmit(), None);
        e.handle_timeout(at);
        assert_eq!(drain_io(&mut e), [Io::Open(2)]);
        assert_eq!(drain_events(&mut e), [Event::Connecting { attempt: 2 }]);
    }

    #[test]
    fn going_offline_stops_attempts_until_the_browser_is_back() {
        let mut e = ClientEngine::new(ClientConfig::new("t"));
        e.connect(0);
        drain_io(&mut e);
        drain_events(&mut e);
        e.handle_online(false, 10);
        assert_eq!(drain_io(&mut e), [Io::Close(1)]);
        assert_eq!(drain_events(&mut e), [Event::Offline]);
        assert_eq!(e.state(), ConnectionState::Offline);
        assert_eq!(e.next_attempt_at(), None);
        // Nothing is attempted while offline, whatever the timers say.
        e.handle_timeout(60_000);
        assert_eq!(drain_io(&mut e), []);
        e.handle_online(true, 60_001);
        assert_eq!(drain_io(&mut e), [Io::Open(2)]);
        assert_eq!(e.state(), ConnectionState::Connecting);
    }
}
