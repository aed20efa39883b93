//! Rebuilding the engine over state a durable store kept across a restart.
//!
//! Timers are not state of their own: every one is an absolute deadline inside a
//! record (a session's `detached_at` + the resume window, a slot's grace `deadline`, a
//! call's `ring_deadline` and `caller_detached_at`, tombstones' `at`), so the timer
//! queue is rebuilt from the records and a window that was running keeps its deadline.
//! A deadline that passed while no server ran fires at the first `handle_timeout`.

use super::{Authenticator, Entropy};
use super::{ServerConfig, ServerEngine, Timer};
use crate::engine::store::{Store, Tombstone};
use crate::protocol::{CallId, CallState, EndReason, LinkState, ServerMsg, SessionId, UserId};

impl<S: Store> ServerEngine<S> {
    /// An engine over `store` as loaded at start, at time `now`.
    ///
    /// - Sessions that had a socket when the previous process stopped are dropped now:
    ///   their resume windows start, and so do the grace windows of their calls (the
    ///   other side is told), exactly as if their links had dropped at `now`. Socket ids
    ///   belonged to the previous process and are forgotten.
    /// - Every other window is re-armed at its recorded deadline.
    /// - `vanished` (from [`MemoryStore::from_records`](crate::engine::store::MemoryStore::from_records)):
    ///   calls a user's record listed but that expired from the store while no server
    ///   ran. Their windows had passed, so they end `reconnect-failed` for that user.
    pub fn restore(
        config: ServerConfig,
        store: S,
        vanished: Vec<(UserId, CallId)>,
        auth: Box<dyn Authenticator>,
        entropy: Box<dyn Entropy>,
        now: u64,
    ) -> Self {
        let mut engine = Self::new(config, store, auth, entropy);
        let mut sessions: Vec<SessionId> = engine.store.session_ids();
        sessions.sort();
        let mut attached = Vec::new();
        for sid in &sessions {
            let Some(s) = engine.store.session(sid) else {
                continue;
            };
            if s.presence {
                engine.watchers.insert(sid.clone());
            }
            match (s.conn, s.detached_at) {
                (Some(_), _) => attached.push(sid.clone()),
                (None, Some(at)) => engine.timers.schedule(
                    at + engine.config.resume_window_ms,
                    Timer::SessionExpiry(sid.clone()),
                ),
                (None, None) => {}
            }
        }
        let mut calls: Vec<CallId> = engine.store.call_ids();
        calls.sort();
        for id in calls {
            let Some(c) = engine.store.call(&id) else {
                continue;
            };
            let mut due = Vec::new();
            match c.state {
                CallState::Ringing => {
                    if let Some(at) = c.ring_deadline {
                        due.push((at, Timer::Ring(id.clone())));
                    }
                    if let Some(at) = c.caller_detached_at {
                        due.push((
                            at + engine.config.ring_detach_grace_ms,
                            Timer::RingDetach(id.clone()),
                        ));
                    }
                }
                CallState::Active => {
                    for slot in c.slots() {
                        if let (LinkState::Reconnecting, Some(at)) = (slot.link, slot.deadline) {
                            due.push((at, Timer::Grace(id.clone())));
                        }
                    }
                }
                CallState::Ended => {}
            }
            for (at, timer) in due {
                engine.timers.schedule(at, timer);
            }
        }
        for sid in attached {
            engine.detach(&sid, now);
        }
        for (user, call) in vanished {
            let reason = EndReason::ReconnectFailed;
            engine.metrics.count_end(reason);
            engine.store.add_tombstone(
                &user,
                Tombstone {
                    call: call.clone(),
                    reason,
                    at: now,
                },
            );
            let targets: Vec<SessionId> = engine.store.sessions_of(&user).to_vec();
            for t in targets {
                engine.push(
                    &t,
                    ServerMsg::CallEnded {
                        call: call.clone(),
                        reason,
                    },
                );
            }
        }
        // Tombstones were loaded too: prune them when their window passes.
        engine.arm_prune(now);
        engine.store.commit();
        engine
    }
}
