//! The active-call map: the app's commands on it (invite, accept, decline, hang up,
//! signal) and the server's news about calls.

use super::session::Request;
use super::{
    CallPhase, ClientCall, ClientEngine, ClientError, Event, RejoinRecord, RejoinWithdrawn,
    StorageOp,
};
use super::{Timer, REJOIN_RECORD_VERSION};
use crate::protocol::*;

impl ClientEngine {
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
            .delivery
            .requests
            .values()
            .any(|(_, r)| *r == Request::Invite(peer.to_owned()))
            || self
                .delivery
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

    pub(super) fn was_ended_here(&self, call: &str) -> bool {
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

    pub(super) fn client_call(&self, info: &CallInfo, phase: CallPhase) -> ClientCall {
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

    /// Whether an incoming call must be answered busy: another call is in the map and
    /// the app did not allow call waiting, or a call with the same person is (one call
    /// per pair, whatever the server says).
    pub(super) fn busy_for(&self, incoming: &ClientCall) -> bool {
        self.calls.values().any(|c| {
            c.id != incoming.id && (!self.config.call_waiting || c.peer.id == incoming.peer.id)
        })
    }

    pub(super) fn server_msg(&mut self, body: ServerMsg, now: u64) {
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
                self.delivery.requests.remove(&re);
            }
            return;
        }
        match body {
            ServerMsg::CallCreated { re, call, existing } => {
                let Some((re, request)) = self.delivery.requests.remove(&re) else {
                    return;
                };
                self.delivery.invite_deadlines.remove(&re);
                if request == Request::Abandoned {
                    // The app was told this invite timed out: take the call back.
                    if call.state != CallState::Ended && call.held_here {
                        let _ = self.enqueue(
                            ClientMsg::Cancel {
                                call: call.id.clone(),
                            },
                            now,
                        );
                        // Later news of it (an answer that crossed the cancel) is stale.
                        self.ended_here.push_back(call.id);
                        if self.ended_here.len() > 64 {
                            self.ended_here.pop_front();
                        }
                    }
                    return;
                }
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
                    self.end_other_calls_with(&c);
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
                let c = self.client_call(&call, CallPhase::Incoming);
                if self.busy_for(&c) {
                    // Already in (or being offered) a call: answer busy for the user.
                    let req = self.delivery.next_request_id();
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
                self.end_other_calls_with(&c);
                self.calls.insert(call.id.clone(), c.clone());
                self.rejoins.offers.remove(&call.id);
                self.rejoins.auto_rejoins.remove(&call.id);
                if rejoined {
                    self.delivery
                        .requests
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
                self.rejoins.records.insert(call.id.clone(), record.clone());
                self.rejoins.unconfirmed.remove(&call.id);
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
                } else if let Some(peer) = self.rejoins.records.get(&call).map(|r| r.peer.clone()) {
                    // A call this page only held a rejoin record for (a reload's
                    // prompt): the prompt goes away with the reason.
                    if self.rejoins.offers.contains_key(&call) {
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
                self.rejoins.auto_rejoins.remove(&call);
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
            ServerMsg::Presence { entries } => self.replace_presence(entries),
            ServerMsg::PresenceChanged { entry } => self.presence_changed(entry),
            ServerMsg::Error(e) => {
                let request = e.re.and_then(|seq| self.delivery.requests.remove(&seq));
                if let Some((req, _)) = &request {
                    self.delivery.invite_deadlines.remove(req);
                }
                match &request {
                    Some((_, Request::Rejoin(call))) => self.rejoin_refused(call.clone(), e.code),
                    // Already reported as `timeout`.
                    Some((_, Request::Abandoned)) => return,
                    _ => {}
                }
                self.events.push_back(Event::Error {
                    code: e.code,
                    message: e.message,
                    re: request.map(|(req, _)| req),
                });
            }
        }
    }

    /// Ends every call in the map here, each with the reason its phase calls for.
    pub(super) fn end_all_local(&mut self, reason: impl Fn(CallPhase) -> EndReason) {
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
    /// One call per pair: the server gives a page a call with someone only when no
    /// other call with them is live, so another call with that person still held here
    /// is over on the server, which cannot say how: it ends `server-lost`.
    fn end_other_calls_with(&mut self, call: &ClientCall) {
        let stale: Vec<CallId> = self
            .calls
            .values()
            .filter(|o| o.id != call.id && o.peer.id == call.peer.id)
            .map(|o| o.id.clone())
            .collect();
        for id in stale {
            self.end_local(&id, EndReason::ServerLost);
        }
    }

    pub(super) fn end_local(&mut self, call: &str, reason: EndReason) {
        if let Some(c) = self.calls.remove(call) {
            self.events.push_back(Event::CallEnded {
                call: call.to_owned(),
                reason,
                peer: c.peer,
            });
        }
        self.rejoins.offers.remove(call);
        self.forget_record(call);
    }
}
