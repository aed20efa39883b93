//! Calls: invite, accept, decline, cancel, hang-up, the relay of signals, the one way
//! a call ends, and how a call is described to a session.

use super::{refuse, Handled, ServerEngine, Timer};
use crate::engine::store::{Call, Slot, Store, Tombstone};
use crate::protocol::*;

/// An invite as the client sent it.
pub(super) struct Invite {
    pub(super) peer: UserId,
    pub(super) kind: Option<String>,
    pub(super) metadata: Option<serde_json::Value>,
}

/// Whether a decline from session `sid` still applies: the call rings, or this
/// session's own accept made it active while the decline was on its way (the user saw
/// a ringing call and declined it, so it ends declined).
fn declinable(call: &Call, sid: &str) -> bool {
    call.state == CallState::Ringing
        || (call.state == CallState::Active && call.callee.session.as_deref() == Some(sid))
}

/// Whether a cancel from session `sid` still applies: the call rings, or it was
/// answered while the cancel was on its way (the caller never saw it active, so it ends
/// cancelled at both ends).
fn cancellable(call: &Call, sid: &str) -> bool {
    call.state == CallState::Ringing
        || (call.state == CallState::Active && call.caller.session.as_deref() == Some(sid))
}

/// A hang-up of a ringing call is the caller cancelling or the callee declining.
fn hangup_reason(call: &Call, user: &str) -> EndReason {
    match call.state {
        CallState::Ringing if call.caller.user.id == user => EndReason::Cancelled,
        CallState::Ringing => EndReason::Declined,
        _ => EndReason::Hangup,
    }
}

impl<S: Store> ServerEngine<S> {
    /// Refuses an invite that is malformed before looking at anyone's state.
    fn check_invite(&self, user: &Peer, invite: &Invite) -> Handled {
        let peer = &invite.peer;
        if *peer == user.id {
            return refuse(ErrorCode::SelfCall, "you cannot call yourself");
        }
        if peer.is_empty() || peer.len() > 256 {
            return refuse(ErrorCode::InvalidArgument, "peer must be 1 to 256 bytes");
        }
        if invite
            .kind
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 64)
        {
            return refuse(ErrorCode::InvalidArgument, "kind must be 1 to 64 bytes");
        }
        if !invite.kind.as_deref().is_none_or(is_displayable) || !is_displayable(peer) {
            return refuse(
                ErrorCode::InvalidArgument,
                "peer and kind may not contain control characters or bidi overrides",
            );
        }
        if let Some(m) = &invite.metadata {
            let size = serde_json::to_string(m).map_or(usize::MAX, |s| s.len());
            if size > self.config.max_metadata_bytes {
                return refuse(
                    ErrorCode::InvalidArgument,
                    format!(
                        "metadata is {size} bytes; at most {} allowed",
                        self.config.max_metadata_bytes
                    ),
                );
            }
        }
        Ok(())
    }

    /// `invite`: a new ringing call, unless the two already share one (see
    /// [`super::dedup`]) or the callee is offline or busy.
    pub(super) fn invite(
        &mut self,
        sid: &str,
        user: &Peer,
        seq: u64,
        invite: Invite,
        now: u64,
    ) -> Handled {
        self.check_invite(user, &invite)?;
        if let Some(existing) = self.store.call_between(&user.id, &invite.peer).cloned() {
            return self.answer_repeat_invite(sid, user, seq, &existing, now);
        }
        let callee_sessions: Vec<SessionId> = self.store.sessions_of(&invite.peer).to_vec();
        let callee = callee_sessions
            .first()
            .and_then(|s| self.store.session(s))
            .map(|s| s.user.clone());
        let Some(callee) = callee else {
            return refuse(
                ErrorCode::PeerOffline,
                format!("{} is not online", invite.peer),
            );
        };
        let call = self.new_ringing_call(sid, user, callee, invite, now);
        self.metrics.calls_created += 1;
        if self.is_busy(&call.callee.user.id, &callee_sessions) {
            self.end_busy(sid, user, seq, call, now);
        } else {
            self.ring(sid, seq, call, &callee_sessions, now);
        }
        Ok(())
    }

    fn new_ringing_call(
        &mut self,
        sid: &str,
        caller: &Peer,
        callee: Peer,
        invite: Invite,
        now: u64,
    ) -> Call {
        let id = self.random_hex(12);
        let grace = self.config.grace_for(invite.kind.as_deref());
        Call {
            id,
            kind: invite.kind,
            state: CallState::Ringing,
            caller: Slot {
                user: caller.clone(),
                session: Some(sid.to_owned()),
                token_hash: None,
                link: LinkState::Connected,
                deadline: None,
            },
            callee: Slot {
                user: callee,
                session: None,
                token_hash: None,
                link: LinkState::Pending,
                deadline: None,
            },
            grace_ms: grace,
            ring_deadline: Some(now + self.config.ring_timeout_ms),
            caller_detached_at: None,
            metadata: invite.metadata,
            created_at: now,
        }
    }

    /// Stores a new call and offers it to every session of the callee.
    fn ring(&mut self, sid: &str, seq: u64, call: Call, callee_sessions: &[SessionId], now: u64) {
        let id = call.id.clone();
        let caller = call.caller.user.id.clone();
        let callee = call.callee.user.id.clone();
        self.schedule(now + self.config.ring_timeout_ms, Timer::Ring(id.clone()));
        self.store.put_call(call);
        let info = self.info_for(&id, sid);
        self.push(
            sid,
            ServerMsg::CallCreated {
                re: seq,
                call: Box::new(info),
                existing: false,
            },
        );
        for callee_sid in callee_sessions {
            let info = self.info_for(&id, callee_sid);
            self.push(
                callee_sid,
                ServerMsg::IncomingCall {
                    call: Box::new(info),
                },
            );
        }
        self.broadcast_presence(&caller, now);
        self.broadcast_presence(&callee, now);
    }

    /// `accept`: the call becomes active on this session; both sides get their rejoin
    /// tokens; the callee's other sessions learn it is held elsewhere.
    pub(super) fn accept(&mut self, sid: &str, user: &Peer, call_id: &str, now: u64) -> Handled {
        let c = self.participant_call(&user.id, call_id)?;
        if c.callee.user.id != user.id {
            return refuse(ErrorCode::InvalidState, "only the callee can accept");
        }
        if c.state != CallState::Ringing {
            return refuse(ErrorCode::InvalidState, "the call is not ringing");
        }
        let caller_detached = c.caller_detached_at.is_some();
        let caller_user = c.caller.user.id.clone();
        let grace = c.grace_ms;
        let caller_token = self.issue_rejoin_token();
        let callee_token = self.issue_rejoin_token();
        {
            let c = self.store.call_mut(call_id).expect("checked");
            c.state = CallState::Active;
            c.ring_deadline = None;
            c.callee.session = Some(sid.to_owned());
            c.callee.link = LinkState::Connected;
            c.callee.token_hash = Some(callee_token.hash);
            c.caller.token_hash = Some(caller_token.hash);
            if caller_detached {
                // The caller's link dropped while ringing and has not come back yet:
                // the grace window applies from now.
                c.caller_detached_at = None;
                c.caller.link = LinkState::Reconnecting;
                c.caller.deadline = Some(now + grace);
            }
        }
        if caller_detached {
            self.schedule(now + grace, Timer::Grace(call_id.to_owned()));
        }
        let caller_sid = self
            .store
            .call(call_id)
            .and_then(|c| c.caller.session.clone());
        if let Some(caller_sid) = &caller_sid {
            let info = self.info_for(call_id, caller_sid);
            self.push(
                caller_sid,
                ServerMsg::CallStarted {
                    call: Box::new(info),
                    rejoin_token: caller_token.token,
                    rejoined: false,
                },
            );
        }
        let info = self.info_for(call_id, sid);
        self.push(
            sid,
            ServerMsg::CallStarted {
                call: Box::new(info),
                rejoin_token: callee_token.token,
                rejoined: false,
            },
        );
        if caller_detached {
            self.push(
                sid,
                ServerMsg::ParticipantDisconnected {
                    call: call_id.to_owned(),
                    user: caller_user,
                    deadline: now + grace,
                    remaining_ms: grace,
                },
            );
        }
        // The incoming call was offered to every session of the callee; the others
        // learn that it is held elsewhere now.
        let others: Vec<SessionId> = self
            .store
            .sessions_of(&user.id)
            .iter()
            .filter(|s| s.as_str() != sid)
            .cloned()
            .collect();
        for other in others {
            self.push(
                &other,
                ServerMsg::CallMoved {
                    call: call_id.to_owned(),
                },
            );
        }
        Ok(())
    }

    /// `decline` (or `busy` from a callee who cannot take it).
    pub(super) fn decline(
        &mut self,
        sid: &str,
        user: &Peer,
        call: &str,
        busy: bool,
        now: u64,
    ) -> Handled {
        let c = self.participant_call(&user.id, call)?;
        if c.callee.user.id != user.id {
            return refuse(ErrorCode::InvalidState, "only the callee can decline");
        }
        if !declinable(c, sid) {
            return refuse(ErrorCode::InvalidState, "the call is not ringing");
        }
        let reason = if busy {
            EndReason::Busy
        } else {
            EndReason::Declined
        };
        self.end_call(call, reason, now);
        Ok(())
    }

    /// `cancel`: the caller withdraws a ringing call.
    pub(super) fn cancel(&mut self, sid: &str, user: &Peer, call: &str, now: u64) -> Handled {
        let c = self.participant_call(&user.id, call)?;
        if c.caller.user.id != user.id {
            return refuse(ErrorCode::InvalidState, "only the caller can cancel");
        }
        if !cancellable(c, sid) {
            return refuse(ErrorCode::InvalidState, "the call is not ringing");
        }
        self.end_call(call, EndReason::Cancelled, now);
        Ok(())
    }

    /// `hangup`: ends the call whatever its state.
    pub(super) fn hangup(&mut self, user: &Peer, call: &str, now: u64) -> Handled {
        let c = self.participant_call(&user.id, call)?;
        let reason = hangup_reason(c, &user.id);
        self.end_call(call, reason, now);
        Ok(())
    }

    /// `signal`: relays an application payload to the other side of an active call.
    pub(super) fn signal(
        &mut self,
        sid: &str,
        user: &Peer,
        call_id: &str,
        payload: serde_json::Value,
    ) -> Handled {
        let c = self.participant_call(&user.id, call_id)?;
        if c.state != CallState::Active {
            return refuse(ErrorCode::InvalidState, "the call is not active");
        }
        let mine = c.slot_of(&user.id).expect("participant");
        if mine.session.as_deref() != Some(sid) {
            return refuse(
                ErrorCode::InvalidState,
                "another session holds this call; rejoin to take it",
            );
        }
        let Some(target) = c.other_of(&user.id).session.clone() else {
            return refuse(
                ErrorCode::PeerOffline,
                "the other participant is away; the payload was not delivered",
            );
        };
        self.metrics.msgs_relayed += 1;
        self.push(
            &target,
            ServerMsg::Signal {
                call: call_id.to_owned(),
                from: user.id.clone(),
                payload,
            },
        );
        Ok(())
    }

    fn participant_call(&self, user: &str, call: &str) -> Result<&Call, (ErrorCode, String)> {
        let c = self
            .store
            .call(call)
            .ok_or((ErrorCode::UnknownCall, format!("no call {call}")))?;
        if c.slot_of(user).is_none() {
            return Err((
                ErrorCode::NotParticipant,
                "you are not a participant of this call".into(),
            ));
        }
        Ok(c)
    }

    /// Ends a call at both ends with one reason and forgets it.
    pub(super) fn end_call(&mut self, call_id: &str, reason: EndReason, now: u64) {
        let Some(call) = self.store.take_call(call_id) else {
            return;
        };
        self.metrics.count_end(reason);
        // Every session of both identities hears it: the holders, a ringing callee's
        // other tabs, and a reloaded page that is showing a rejoin prompt for it.
        let mut targets: Vec<SessionId> = Vec::new();
        for slot in call.slots() {
            targets.extend(self.store.sessions_of(&slot.user.id).iter().cloned());
            self.store.add_tombstone(
                &slot.user.id,
                Tombstone {
                    call: call.id.clone(),
                    reason,
                    at: now,
                },
            );
        }
        targets.sort();
        targets.dedup();
        for t in targets {
            self.push(
                &t,
                ServerMsg::CallEnded {
                    call: call.id.clone(),
                    reason,
                },
            );
        }
        self.arm_prune(now);
        if !self.shutting_down {
            self.broadcast_presence(&call.caller.user.id, now);
            self.broadcast_presence(&call.callee.user.id, now);
        }
    }

    /// A stored call as seen by one session.
    pub(super) fn info_for(&self, call_id: &str, sid: &str) -> CallInfo {
        let call = self
            .store
            .call(call_id)
            .expect("caller checked the call exists");
        self.describe(call, sid)
    }

    /// A call as seen by one session.
    pub(super) fn describe(&self, call: &Call, sid: &str) -> CallInfo {
        let part = |s: &Slot| ParticipantInfo {
            user: s.user.clone(),
            link: s.link,
            deadline: s.deadline,
        };
        CallInfo {
            id: call.id.clone(),
            kind: call.kind.clone(),
            state: call.state,
            caller: part(&call.caller),
            callee: part(&call.callee),
            grace_ms: call.grace_ms,
            ring_deadline: call.ring_deadline,
            metadata: call.metadata.clone(),
            held_here: call
                .slots()
                .iter()
                .any(|s| s.session.as_deref() == Some(sid)),
        }
    }

    /// Schedules a tombstone prune unless one is already due.
    pub(super) fn arm_prune(&mut self, now: u64) {
        if !self.prune_armed {
            self.prune_armed = true;
            self.schedule(now + self.config.longest_grace(), Timer::Tombstones);
        }
    }

    /// Nobody answered in time.
    pub(super) fn ring_due(&mut self, id: &str, now: u64) {
        let due = self.store.call(id).is_some_and(|c| {
            c.state == CallState::Ringing && c.ring_deadline.is_some_and(|d| now >= d)
        });
        if due {
            self.end_call(id, EndReason::NoAnswer, now);
        }
    }

    /// Forgets tombstones past every window; looks again while some remain.
    pub(super) fn prune_due(&mut self, now: u64) {
        self.prune_armed = false;
        let longest = self.config.longest_grace();
        if self.store.prune_tombstones(now.saturating_sub(longest)) {
            self.arm_prune(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(state: CallState, caller_session: Option<&str>, callee_session: Option<&str>) -> Call {
        let slot = |user: &str, session: Option<&str>| Slot {
            user: Peer {
                id: user.into(),
                name: user.into(),
            },
            session: session.map(str::to_owned),
            token_hash: None,
            link: LinkState::Connected,
            deadline: None,
        };
        Call {
            id: "c1".into(),
            kind: None,
            state,
            caller: slot("alice", caller_session),
            callee: slot("bob", callee_session),
            grace_ms: 60_000,
            ring_deadline: None,
            caller_detached_at: None,
            metadata: None,
            created_at: 0,
        }
    }

    #[test]
    fn a_decline_crossing_the_same_sessions_accept_still_declines() {
        let accepted_here = call(CallState::Active, Some("a1"), Some("b1"));
        assert!(declinable(&accepted_here, "b1"));
        // Accepted on another tab: this tab's decline is too late.
        assert!(!declinable(&accepted_here, "b2"));
        assert!(declinable(
            &call(CallState::Ringing, Some("a1"), None),
            "b2"
        ));
    }

    #[test]
    fn a_cancel_crossing_the_answer_still_cancels_but_only_from_the_calling_session() {
        let answered = call(CallState::Active, Some("a1"), Some("b1"));
        assert!(cancellable(&answered, "a1"));
        assert!(!cancellable(&answered, "a2"));
        assert!(cancellable(
            &call(CallState::Ringing, Some("a1"), None),
            "a2"
        ));
    }

    #[test]
    fn hanging_up_a_ringing_call_cancels_or_declines_it() {
        let ringing = call(CallState::Ringing, Some("a1"), None);
        assert_eq!(hangup_reason(&ringing, "alice"), EndReason::Cancelled);
        assert_eq!(hangup_reason(&ringing, "bob"), EndReason::Declined);
        let active = call(CallState::Active, Some("a1"), Some("b1"));
        assert_eq!(hangup_reason(&active, "alice"), EndReason::Hangup);
        assert_eq!(hangup_reason(&active, "bob"), EndReason::Hangup);
    }
}
