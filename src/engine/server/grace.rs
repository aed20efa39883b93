//! Grace windows: a participant whose link drops keeps their side of the call until a
//! deadline; the other side is told the deadline, then that they are back or that the
//! call ended `reconnect-failed`.

use super::{ServerEngine, Timer};
use crate::engine::store::Store;
use crate::protocol::*;

impl<S: Store> ServerEngine<S> {
    /// The socket of a session went away: start the resume window and the grace
    /// windows of its calls.
    pub(super) fn detach(&mut self, sid: &str, now: u64) {
        let Some(s) = self.store.session_mut(sid) else {
            return;
        };
        s.conn = None;
        s.detached_at = Some(now);
        let user = s.user.id.clone();
        self.schedule(
            now + self.config.resume_window_ms,
            Timer::SessionExpiry(sid.to_owned()),
        );
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        for id in calls {
            let Some(call) = self.store.call_mut(&id) else {
                continue;
            };
            let state = call.state;
            let Some(slot) = call.slot_of_mut(&user) else {
                continue;
            };
            if slot.session.as_deref() != Some(sid) {
                continue;
            }
            match state {
                CallState::Active => self.start_grace(&id, &user, now),
                CallState::Ringing => {
                    if call.caller.user.id == user {
                        call.caller_detached_at = Some(now);
                        self.schedule(
                            now + self.config.ring_detach_grace_ms,
                            Timer::RingDetach(id.clone()),
                        );
                    }
                }
                CallState::Ended => {}
            }
        }
    }

    /// `user`'s side of an active call lost its session: unless its window already
    /// runs, mark it reconnecting until now + grace, arm the timer, and tell the other
    /// side the deadline.
    pub(super) fn start_grace(&mut self, call_id: &str, user: &str, now: u64) {
        let Some(call) = self.store.call_mut(call_id) else {
            return;
        };
        let grace = call.grace_ms;
        let Some(slot) = call.slot_of_mut(user) else {
            return;
        };
        if slot.link == LinkState::Reconnecting {
            return;
        }
        let deadline = now + grace;
        slot.link = LinkState::Reconnecting;
        slot.deadline = Some(deadline);
        self.schedule(deadline, Timer::Grace(call_id.to_owned()));
        let other = self
            .store
            .call(call_id)
            .and_then(|c| c.other_of(user).session.clone());
        if let Some(other) = other {
            self.push(
                &other,
                ServerMsg::ParticipantDisconnected {
                    call: call_id.to_owned(),
                    user: user.to_owned(),
                    deadline,
                    remaining_ms: grace,
                },
            );
        }
    }

    /// A detached session resumed: its calls are connected again.
    pub(super) fn reattach_calls(&mut self, sid: &str, _now: u64) {
        let Some(user) = self.store.session(sid).map(|s| s.user.id.clone()) else {
            return;
        };
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        for id in calls {
            let Some(call) = self.store.call_mut(&id) else {
                continue;
            };
            if call.caller.user.id == user && call.caller.session.as_deref() == Some(sid) {
                call.caller_detached_at = None;
            }
            let Some(slot) = call.slot_of_mut(&user) else {
                continue;
            };
            if slot.session.as_deref() == Some(sid) && slot.link == LinkState::Reconnecting {
                slot.link = LinkState::Connected;
                slot.deadline = None;
                self.notify_reconnected(&id, &user);
            }
        }
    }

    /// Tells the other side of `call` that `user` is back.
    pub(super) fn notify_reconnected(&mut self, call: &str, user: &str) {
        let other = self
            .store
            .call(call)
            .and_then(|c| c.other_of(user).session.clone());
        if let Some(other) = other {
            self.push(
                &other,
                ServerMsg::ParticipantReconnected {
                    call: call.to_owned(),
                    user: user.to_owned(),
                },
            );
        }
    }

    /// A caller whose link dropped while ringing and did not come back in time
    /// withdraws the call.
    pub(super) fn ring_detach_due(&mut self, id: &str, now: u64) {
        let grace = self.config.ring_detach_grace_ms;
        let due = self.store.call(id).is_some_and(|c| {
            c.state == CallState::Ringing
                && c.caller_detached_at.is_some_and(|at| now >= at + grace)
        });
        if due {
            self.end_call(id, EndReason::Cancelled, now);
        }
    }

    /// A participant still reconnecting at their deadline ends the call.
    pub(super) fn grace_due(&mut self, id: &str, now: u64) {
        let failed = self.store.call(id).is_some_and(|c| {
            c.state == CallState::Active
                && c.slots().iter().any(|s| {
                    s.link == LinkState::Reconnecting && s.deadline.is_some_and(|d| now >= d)
                })
        });
        if failed {
            self.end_call(id, EndReason::ReconnectFailed, now);
        }
    }
}
