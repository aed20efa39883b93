//! No duplicate calls: a second invite between the same two people returns the call
//! they already share, crossed invites (glare) become one call, and an invite to
//! someone already in a call without call waiting ends at once as `busy`.
//!
//! The decisions are plain functions of the state so that they can be tested alone;
//! the engine methods below carry them out.

use super::{Handled, ServerEngine};
use crate::engine::store::{Call, Store, Tombstone};
use crate::protocol::{CallState, EndReason, LinkState, Peer, ServerMsg, SessionId};

/// What an invite means when the two people already share a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepeatInvite {
    /// The inviter called again (a retry, another tab): answer with the same call.
    SameCall,
    /// The other person's invite to the inviter is still ringing: both called each
    /// other at once, so this invite accepts that call.
    Crossed,
}

/// Classifies an invite from `inviter` while `existing` joins the same two people.
pub(super) fn repeat_invite(existing: &Call, inviter: &str) -> RepeatInvite {
    if existing.state == CallState::Ringing && existing.callee.user.id == inviter {
        RepeatInvite::Crossed
    } else {
        RepeatInvite::SameCall
    }
}

/// A callee is busy when already in a call (ringing or active) and none of their
/// sessions accepts a second one (`call_waiting` in its hello).
pub(super) fn callee_busy(
    callee_in_a_call: bool,
    call_waiting: impl IntoIterator<Item = bool>,
) -> bool {
    callee_in_a_call && !call_waiting.into_iter().any(|waiting| waiting)
}

impl<S: Store> ServerEngine<S> {
    /// Answers an invite between two people who already share `existing`.
    pub(super) fn answer_repeat_invite(
        &mut self,
        sid: &str,
        user: &Peer,
        seq: u64,
        existing: &str,
        now: u64,
    ) -> Handled {
        self.metrics.dedups += 1;
        let repeat = self
            .store
            .call(existing)
            .map_or(RepeatInvite::SameCall, |c| repeat_invite(c, &user.id));
        if repeat == RepeatInvite::Crossed {
            self.metrics.glare_merges += 1;
        }
        let claimed = self.claim_abandoned_side(sid, user, existing);
        let info = self.info_for(existing, sid);
        self.push(
            sid,
            ServerMsg::CallCreated {
                re: seq,
                call: Box::new(info),
                existing: true,
            },
        );
        if let Some(token) = claimed {
            let info = self.info_for(existing, sid);
            self.push(
                sid,
                ServerMsg::CallStarted {
                    call: Box::new(info),
                    rejoin_token: token,
                    rejoined: true,
                },
            );
            self.notify_reconnected(existing, &user.id);
        }
        match repeat {
            RepeatInvite::Crossed => self.accept(sid, user, existing, now),
            RepeatInvite::SameCall => Ok(()),
        }
    }

    /// A page that was reloaded (or closed) while its call rang comes back without a
    /// rejoin token: the call had none yet. When it invites the same person again and
    /// its side of the call is still held by a session with no live socket (the old
    /// page, which will never come back), this session takes that side: a ringing call
    /// rings on for it, an active one (the callee accepted meanwhile) continues here
    /// with a fresh token (returned) instead of relaying into the dead session until
    /// the grace window ends it. A side held by a live tab is left alone (tabs do not
    /// fight; an explicit rejoin moves a call).
    fn claim_abandoned_side(&mut self, sid: &str, user: &Peer, call_id: &str) -> Option<String> {
        let c = self.store.call(call_id)?;
        let slot = c.slot_of(&user.id)?;
        let holder = slot.session.clone()?;
        if holder == sid {
            return None;
        }
        if self
            .store
            .session(&holder)
            .is_some_and(|s| s.conn.is_some())
        {
            return None;
        }
        // Should the old session resume after all (a dropped link, not a closed page),
        // it hears that the call moved here.
        let moved = ServerMsg::CallMoved {
            call: call_id.to_owned(),
        };
        match c.state {
            CallState::Ringing if c.caller.user.id == user.id => {
                let c = self.store.call_mut(call_id)?;
                c.caller.session = Some(sid.to_owned());
                c.caller.link = LinkState::Connected;
                c.caller_detached_at = None;
                self.push(&holder, moved);
                None
            }
            CallState::Active => {
                let token = self.issue_rejoin_token();
                let c = self.store.call_mut(call_id)?;
                let slot = c.slot_of_mut(&user.id)?;
                slot.session = Some(sid.to_owned());
                slot.token_hash = Some(token.hash);
                slot.link = LinkState::Connected;
                slot.deadline = None;
                self.metrics.rejoins += 1;
                self.push(&holder, moved);
                Some(token.token)
            }
            _ => None,
        }
    }

    /// Whether the callee, reached through `callee_sessions`, is busy.
    pub(super) fn is_busy(&self, callee: &str, callee_sessions: &[SessionId]) -> bool {
        callee_busy(
            !self.store.calls_of(callee).is_empty(),
            callee_sessions
                .iter()
                .map(|s| self.store.session(s).is_some_and(|s| s.call_waiting)),
        )
    }

    /// The callee is busy: the caller learns of the call and its end in one go. The
    /// call is never stored and the callee hears nothing.
    pub(super) fn end_busy(&mut self, sid: &str, user: &Peer, seq: u64, call: Call, now: u64) {
        let info = self.describe(&call, sid);
        self.push(
            sid,
            ServerMsg::CallCreated {
                re: seq,
                call: Box::new(info),
                existing: false,
            },
        );
        self.push(
            sid,
            ServerMsg::CallEnded {
                call: call.id.clone(),
                reason: EndReason::Busy,
            },
        );
        self.metrics.count_end(EndReason::Busy);
        self.store.add_tombstone(
            &user.id,
            Tombstone {
                call: call.id,
                reason: EndReason::Busy,
                at: now,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::Slot;

    fn peer(id: &str) -> Peer {
        Peer {
            id: id.into(),
            name: id.into(),
        }
    }

    fn call(caller: &str, callee: &str, state: CallState) -> Call {
        let slot = |user: &str| Slot {
            user: peer(user),
            session: None,
            token_hash: None,
            link: LinkState::Connected,
            deadline: None,
        };
        Call {
            id: "c1".into(),
            kind: None,
            state,
            caller: slot(caller),
            callee: slot(callee),
            grace_ms: 60_000,
            ring_deadline: None,
            caller_detached_at: None,
            metadata: None,
            created_at: 0,
        }
    }

    #[test]
    fn inviting_back_someone_whose_invite_still_rings_is_a_crossed_invite() {
        let ringing = call("alice", "bob", CallState::Ringing);
        assert_eq!(repeat_invite(&ringing, "bob"), RepeatInvite::Crossed);
    }

    #[test]
    fn the_caller_inviting_again_gets_the_same_call() {
        let ringing = call("alice", "bob", CallState::Ringing);
        assert_eq!(repeat_invite(&ringing, "alice"), RepeatInvite::SameCall);
    }

    #[test]
    fn an_invite_into_an_active_call_is_never_crossed_whoever_sends_it() {
        let active = call("alice", "bob", CallState::Active);
        assert_eq!(repeat_invite(&active, "bob"), RepeatInvite::SameCall);
        assert_eq!(repeat_invite(&active, "alice"), RepeatInvite::SameCall);
    }

    #[test]
    fn busy_needs_a_call_and_no_session_with_call_waiting() {
        assert!(!callee_busy(false, [false, false]));
        assert!(callee_busy(true, [false, false]));
        assert!(callee_busy(true, []));
        assert!(!callee_busy(true, [false, true]));
    }
}
