//! The session: the welcome that resumes it (re-sending what the server has not
//! handled) or starts a new one (rebuilding calls and rejoin offers from the server's
//! snapshot), and the exactly-once flow of application messages within it.

use super::{CallPhase, ClientEngine, ClientError, Event, RejoinWithdrawn, Timer};
use super::{ConnectionState, LinkPhase};
use crate::engine::reliable::{Inbox, Outbox};
use crate::engine::vec_map::VecMap;
use crate::protocol::*;
use std::collections::VecDeque;

#[derive(Debug)]
pub(super) struct SessionState {
    pub(super) id: SessionId,
    pub(super) secret: String,
    pub(super) user: Peer,
}

/// What an in-flight request was, for matching its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    Invite(UserId),
    Rejoin(CallId),
    /// An invite that timed out (the app was told `timeout`): a late call is cancelled.
    Abandoned,
    Other,
}

/// Application messages on their way: ours sequenced (waiting for acks) or still
/// waiting for a session, the server's handled so far, and the requests that may still
/// get an answer.
#[derive(Debug)]
pub(super) struct Delivery {
    /// Our sequenced messages not yet acknowledged by the server.
    pub(super) outbox: Outbox<ClientMsg>,
    /// The last server message handled.
    pub(super) inbox: Inbox,
    /// Accepted by a command but not yet sequenced (no session was ready), by request id.
    pub(super) pending: VecDeque<(u64, ClientMsg)>,
    /// Request ids: what commands return and what `re` in events refers to. Unlike
    /// seqs they never restart, so an answer always finds its request.
    next_request: u64,
    /// Sent messages that may still get an answer: seq → (request id, what it was).
    pub(super) requests: VecMap<u64, (u64, Request)>,
    /// When each unanswered invite times out: request id → local epoch ms.
    pub(super) invite_deadlines: VecMap<u64, u64>,
    /// The frame limit of the last welcome (the config's until then).
    pub(super) max_frame_bytes: Option<usize>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            outbox: Outbox::new(),
            inbox: Inbox::new(),
            pending: VecDeque::new(),
            next_request: 1,
            requests: VecMap::new(),
            invite_deadlines: VecMap::new(),
            max_frame_bytes: None,
        }
    }
}

impl Delivery {
    /// A new request id.
    pub(super) fn next_request_id(&mut self) -> u64 {
        let req = self.next_request;
        self.next_request += 1;
        req
    }

    /// Messages waiting for acknowledgement (sent or queued).
    pub(super) fn unacked_len(&self) -> usize {
        self.outbox.len() + self.pending.len()
    }
}

/// What the `msg` frame around a message adds at most (with the largest `seq` and `ack`).
const MSG_ENVELOPE_BYTES: usize = r#"{"t":"msg","seq":,"ack":,"body":}"#.len() + 2 * 20;

impl ClientEngine {
    /// Invites whose answer is overdue fail with `timeout`: one not yet sent is
    /// dropped (never sent); a sent one is marked so that its late call is cancelled.
    pub(super) fn request_timeouts(&mut self, now: u64) {
        let due: Vec<u64> = self
            .delivery
            .invite_deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(req, _)| *req)
            .collect();
        for req in due {
            self.delivery.invite_deadlines.remove(&req);
            self.delivery.pending.retain(|(r, _)| *r != req);
            for (r, request) in self.delivery.requests.values_mut() {
                if *r == req {
                    *request = Request::Abandoned;
                }
            }
            self.events.push_back(Event::Error {
                code: ErrorCode::Timeout,
                message: format!(
                    "no answer from the server within {} ms",
                    self.config.request_timeout_ms
                ),
                re: Some(req),
            });
        }
    }

    /// Queue an application message: sent at once when a session is ready, otherwise
    /// held unsequenced until one is (so a message never sent is never ambiguous after
    /// a session loss). Returns its request id.
    pub(super) fn enqueue(&mut self, msg: ClientMsg, now: u64) -> Result<u64, ClientError> {
        if self.unacked_len() >= self.config.max_unacked {
            return Err(ClientError::BufferFull);
        }
        // The server drops an oversized frame without an answer (it cannot tell whose
        // request it was), so such a message must never be queued.
        let max = self
            .delivery
            .max_frame_bytes
            .unwrap_or(self.config.max_frame_bytes);
        let bytes = (self.config.json_bytes)(&msg) + MSG_ENVELOPE_BYTES;
        if bytes > max {
            return Err(ClientError::FrameTooLarge { bytes, max });
        }
        let req = self.delivery.next_request_id();
        if matches!(msg, ClientMsg::Invite { .. }) {
            let at = now + self.config.request_timeout_ms;
            self.delivery.invite_deadlines.insert(req, at);
            self.timers.schedule(at, Timer::Request);
        }
        if self.ready() {
            self.send_sequenced(req, msg, now);
        } else {
            self.delivery.pending.push_back((req, msg));
        }
        Ok(req)
    }

    pub(super) fn send_sequenced(&mut self, req: u64, msg: ClientMsg, now: u64) -> u64 {
        let ack = self.delivery.inbox.last_seq();
        let seq = self.delivery.outbox.push(ack, msg.clone());
        let request = match &msg {
            ClientMsg::Invite { peer, .. } => Request::Invite(peer.clone()),
            ClientMsg::Rejoin { call, .. } => Request::Rejoin(call.clone()),
            _ => Request::Other,
        };
        self.delivery.requests.insert(seq, (req, request));
        self.transmit.push_back(ClientFrame::Msg {
            seq,
            ack,
            body: msg,
        });
        self.liveness.sent(now);
        seq
    }

    /// Send what was queued while no session was ready.
    pub(super) fn flush_pending(&mut self, now: u64) {
        let pending: Vec<(u64, ClientMsg)> = self.delivery.pending.drain(..).collect();
        for (req, msg) in pending {
            self.send_sequenced(req, msg, now);
        }
    }

    pub(super) fn take_ack(&mut self, ack: u64) {
        self.delivery.outbox.take_ack(ack);
        // Handled requests that expect no answer are done; invites and rejoins wait for
        // theirs (which arrive before or with the ack that covers them).
        self.delivery
            .requests
            .retain(|seq, (_, r)| *seq > ack || *r != Request::Other);
    }

    pub(super) fn local_time(&self, server_ms: u64) -> u64 {
        (server_ms as i64 - self.clock_offset).max(0) as u64
    }

    pub(super) fn welcome(&mut self, w: Welcome, now: u64) {
        let Some((link, _)) = self.link else {
            return;
        };
        self.link = Some((link, LinkPhase::Ready));
        self.clear_failure();
        // The server read its clock somewhere between our hello and this welcome: the
        // midpoint keeps the error within half a round trip, so both sides count down
        // to (nearly) the same instant.
        let midpoint = self.hello_sent_at.min(now) + now.saturating_sub(self.hello_sent_at) / 2;
        self.clock_offset = w.now as i64 - midpoint as i64;
        self.liveness.set_timers(
            w.timers.heartbeat_interval_ms,
            w.timers.heartbeat_timeout_ms,
        );
        self.delivery.max_frame_bytes = Some(w.limits.max_frame_bytes);
        let had_session = self.session.is_some();
        let resumed = w.resumed && self.session.as_ref().is_some_and(|s| s.id == w.session);
        self.session = Some(SessionState {
            id: w.session,
            secret: w.secret,
            user: w.user.clone(),
        });
        self.state = ConnectionState::Connected;
        self.backoff.attempt = 0;
        self.down_since = None;
        let away_since = self.lost_at.take();
        self.next_attempt_at = None;
        if resumed {
            // Re-send exactly what the server has not handled, in order. (Only the
            // resend buffer is trimmed here: answers to handled requests may still be in
            // the server's replay that follows, and need their request records.)
            // Replayed with the current ack rather than the original one: the server
            // matches nothing to our acks, and the current one is what it has already
            // trimmed its own replay to.
            self.delivery.outbox.take_ack(w.last_seq);
            let ack = self.delivery.inbox.last_seq();
            for u in self.delivery.outbox.replay() {
                self.transmit.push_back(ClientFrame::Msg {
                    seq: u.seq,
                    ack,
                    body: u.msg.clone(),
                });
            }
            self.events.push_back(Event::Resumed { recovered: true });
        } else {
            let unconfirmed = self.delivery.outbox.len();
            // Requests the server never confirmed will get no answer now.
            let lost = std::mem::take(&mut self.delivery.requests);
            for (_, (req, request)) in lost {
                self.delivery.invite_deadlines.remove(&req);
                if matches!(request, Request::Invite(_) | Request::Rejoin(_)) {
                    self.events.push_back(Event::Error {
                        code: ErrorCode::SessionLost,
                        message: "the session was lost before the server confirmed this request"
                            .into(),
                        re: Some(req),
                    });
                }
            }
            // A new session numbers from one both ways.
            self.delivery.outbox = Outbox::new();
            self.delivery.inbox = Inbox::new();
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
            self.transmit.push_back(ClientFrame::Ack {
                ack: self.delivery.inbox.last_seq(),
            });
        }
        self.liveness.sent(now);
        self.timers.schedule(now + 1, Timer::Heartbeat);
        if !self.rejoins.records.is_empty() {
            self.refresh_records(now);
            self.timers
                .schedule(now + self.config.rejoin_refresh_ms, Timer::Refresh);
        }
    }

    /// Rebuild the active-call map and rejoin offers from a snapshot (a new session).
    /// `away_since`: when the link was lost (None for a first session).
    pub(super) fn reconcile(
        &mut self,
        me: &Peer,
        snap: Snapshot,
        away_since: Option<u64>,
        now: u64,
    ) {
        // Records of another identity (a shared browser) are not ours to use.
        let foreign: Vec<CallId> = self
            .rejoins
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
            self.replace_presence(snap.presence.clone());
        }
        let by_id: VecMap<&str, &CallInfo> =
            snap.calls.iter().map(|c| (c.id.as_str(), c)).collect();
        // Calls this page had.
        let known: Vec<CallId> = self.calls.keys().cloned().collect();
        for id in known {
            match by_id.get(id.as_str()) {
                Some(info) if info.state == CallState::Active => {
                    let mine = my_slot(info, &me.id);
                    if mine.is_some_and(|p| p.link == LinkState::Reconnecting)
                        && self.rejoins.records.contains_key(&id)
                    {
                        // Our old session lost it but it waits for us: take it back.
                        let token = self.rejoins.records[&id].token.clone();
                        self.rejoins.auto_rejoins.insert(id.clone(), ());
                        let req = self.delivery.next_request_id();
                        self.delivery.pending.push_back((
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
            .rejoins
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
                            self.confirm_waiting(&id, deadline, now);
                        }
                        _ => {
                            // Live in another tab or device: keep the token for an explicit
                            // takeover, but do not offer it.
                            self.rejoins.unconfirmed.remove(&id);
                            if self.rejoins.offers.remove(&id).is_some() {
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
                    let was_offered = self.rejoins.offers.remove(&id).is_some();
                    let Some(r) = self.rejoins.records.get(&id).cloned() else {
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
                let req = self.delivery.next_request_id();
                self.delivery.pending.push_back((
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
                if self.busy_for(&call) {
                    // As for an `incoming-call`: answered busy, never a second call
                    // with one person (or a second call at all without call waiting).
                    let req = self.delivery.next_request_id();
                    self.delivery.pending.push_back((
                        req,
                        ClientMsg::Decline {
                            call: info.id.clone(),
                            busy: true,
                        },
                    ));
                    continue;
                }
                self.calls.insert(info.id.clone(), call.clone());
                self.events.push_back(Event::IncomingCall { call });
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
