//! Logging out: the calls end at both ends before the page goes away. The `bye` goes
//! over the socket and the engine waits (one heartbeat interval at most) for the
//! server's answer; the driver also delivers the same logout over HTTP ([`Goodbye`],
//! e.g. with `navigator.sendBeacon`, which survives an unload), at once: the socket may
//! have lost its way up without anyone knowing yet, or there is no ready socket.

use super::link::LinkPhase;
use super::{CallPhase, ClientEngine, ConnectionState, Event, Io, StorageOp, Timer};
use crate::protocol::*;

/// A logout the driver must deliver over HTTP: `POST <socket URL>/bye` with this as a
/// JSON text body (see [`ClientFrame::Bye`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Goodbye {
    /// The token of the hello (it names the identity).
    pub token: String,
    pub session: SessionId,
    /// The session's latest resume secret (the proof that it is ours).
    pub secret: String,
}

/// Where a logout stands.
#[derive(Debug, Default)]
pub(super) struct Logout {
    /// Sent `bye` on the socket, waiting for the server's answer; the fallback to use
    /// if it does not come.
    pub(super) awaiting: Option<Goodbye>,
    /// The fallback went out too: the answer may still come down the socket (a link
    /// that lost only its way up); the socket is left open for it until a second wait
    /// passes, because closing it first would tell the other side we merely dropped.
    pub(super) fallback_sent: bool,
    /// Logouts for the driver to deliver over HTTP.
    pub(super) goodbyes: std::collections::VecDeque<Goodbye>,
}

impl ClientEngine {
    /// End the session: calls end here at once (each as the user's own hang-up would)
    /// and at the other end as soon as the server hears it, every rejoin record is
    /// deleted, and nothing reconnects. See the module documentation for how the logout
    /// reaches the server; [`ClientEngine::logout_pending`] says when it has.
    pub fn logout(&mut self, now: u64) {
        if self.state == ConnectionState::LoggedOut {
            return;
        }
        let goodbye = self.session.as_ref().map(|s| Goodbye {
            token: self.config.token.clone(),
            session: s.id.clone(),
            secret: s.secret.clone(),
        });
        let ready = self.link.filter(|(_, p)| *p == LinkPhase::Ready);
        if let Some((id, _)) = self.link.take() {
            if ready.is_none() {
                self.io.push_back(Io::Close(id));
            }
        }
        // Logging out ends each call as the user's own hang-up would.
        self.end_all_local(CallPhase::ended_by_user);
        for call in std::mem::take(&mut self.rejoins.records).into_keys() {
            self.storage.push_back(StorageOp::Remove(call));
        }
        self.rejoins.offers.clear();
        self.rejoins.unconfirmed.clear();
        self.delivery.pending.clear();
        self.delivery.outbox.clear();
        self.timers.clear();
        self.session = None;
        self.state = ConnectionState::LoggedOut;
        // A failed attempt's probe no longer matters.
        self.probe = None;
        self.events.push_back(Event::LoggedOut);
        match (ready, goodbye) {
            (Some(link), Some(goodbye)) => {
                // The socket stays the engine's until the server answers.
                self.link = Some(link);
                self.transmit.push_back(ClientFrame::Bye);
                // The HTTP request goes out at once as well: a socket that still looks
                // open may have lost its way up, and waiting to find out would let the
                // server's dead-link timer tell the other side we merely dropped. The
                // server ends the session once; the later of the two finds it gone.
                self.logout.goodbyes.push_back(goodbye.clone());
                self.logout.fallback_sent = true;
                self.logout.awaiting = Some(goodbye);
                self.timers
                    .schedule(now + self.liveness.interval_ms(), Timer::ByeAnswer);
            }
            (None, Some(goodbye)) => self.logout.goodbyes.push_back(goodbye),
            (_, None) => {}
        }
    }

    /// True while a logout waits for the server's answer on the socket: a page that
    /// wants the other person told before it goes away waits until this is false (the
    /// answer came, or the logout was handed over for HTTP delivery).
    pub fn logout_pending(&self) -> bool {
        self.logout.awaiting.is_some()
    }

    /// A logout to deliver over HTTP (see [`Goodbye`]).
    pub fn poll_goodbye(&mut self) -> Option<Goodbye> {
        self.logout.goodbyes.pop_front()
    }

    /// The server answered the `bye`: the calls have ended at both ends.
    pub(super) fn bye_answered(&mut self) {
        self.logout.fallback_sent = false;
        if self.logout.awaiting.take().is_some() {
            if let Some((id, _)) = self.link.take() {
                self.io.push_back(Io::Close(id));
            }
        }
    }

    /// No answer came in time, or the page is going away: hand the logout over for
    /// HTTP delivery, and wait once more for the answer the server then sends down the
    /// socket. After that second wait, give up on the socket.
    pub(super) fn bye_by_other_means(&mut self, now: u64) {
        let Some(goodbye) = &self.logout.awaiting else {
            return;
        };
        if !self.logout.fallback_sent {
            self.logout.fallback_sent = true;
            self.logout.goodbyes.push_back(goodbye.clone());
            self.timers
                .schedule(now + self.liveness.interval_ms(), Timer::ByeAnswer);
        } else {
            self.bye_link_gone();
        }
    }

    /// The socket is gone (or given up on) before the server answered: make sure the
    /// fallback went out, and stop waiting.
    pub(super) fn bye_link_gone(&mut self) {
        if let Some(goodbye) = self.logout.awaiting.take() {
            if let Some((id, _)) = self.link.take() {
                self.io.push_back(Io::Close(id));
            }
            if !std::mem::take(&mut self.logout.fallback_sent) {
                self.logout.goodbyes.push_back(goodbye);
            }
        }
    }
}
