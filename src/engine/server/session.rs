//! Sessions: the hello that opens one, the per-identity limit, expiry after the resume
//! window, and logout (`bye`).

use super::{AuthError, CloseReason, ConnId, Output, ServerEngine};
use crate::engine::reliable::{Inbox, Outbox};
use crate::engine::secret_hash;
use crate::engine::store::{Session, Store};
use crate::protocol::*;

impl<S: Store> ServerEngine<S> {
    /// The first frame of a socket: resume the session it names, or open a new one.
    pub(super) fn hello(&mut self, conn: ConnId, hello: Hello, now: u64) {
        if hello.v != PROTOCOL_VERSION {
            self.fatal(
                conn,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported (this server speaks {PROTOCOL_VERSION})",
                    hello.v
                ),
                now,
            );
            return;
        }
        if self.shutting_down {
            self.fatal(
                conn,
                ErrorCode::ServerShutdown,
                "the server is shutting down",
                now,
            );
            return;
        }
        if let Some(resume) = &hello.resume {
            match self.auth.authenticate(&hello.token, now, false) {
                Ok(user) => {
                    if self.try_resume(conn, &user, resume, now) {
                        return;
                    }
                    self.metrics.resume_failures += 1;
                }
                Err(AuthError::Expired) => {}
                Err(AuthError::Invalid(why)) => {
                    self.metrics.auth_failures += 1;
                    self.fatal(conn, ErrorCode::AuthFailed, why, now);
                    return;
                }
            }
        }
        let user = match self.auth.authenticate(&hello.token, now, true) {
            Ok(user) if !is_displayable(&user.id) || !is_displayable(&user.name) => {
                self.fatal(
                    conn,
                    ErrorCode::InvalidArgument,
                    "the identity and display name may not contain control characters or bidi overrides",
                    now,
                );
                return;
            }
            Ok(user) => user,
            Err(AuthError::Expired) => {
                self.metrics.auth_failures += 1;
                self.fatal(conn, ErrorCode::TokenExpired, "the token has expired", now);
                return;
            }
            Err(AuthError::Invalid(why)) => {
                self.metrics.auth_failures += 1;
                self.fatal(conn, ErrorCode::AuthFailed, why, now);
                return;
            }
        };
        self.new_session(conn, user, &hello, now);
    }

    /// The identity is at its session limit: make room by forgetting the oldest
    /// detached session (a reloaded page's leftover). False (and the socket closed)
    /// when every session is live.
    fn make_room_for_session(&mut self, conn: ConnId, user: &str, now: u64) -> bool {
        let existing: Vec<SessionId> = self.store.sessions_of(user).to_vec();
        if existing.len() < self.config.max_sessions_per_user {
            return true;
        }
        let oldest_detached = existing.iter().find(|s| {
            self.store
                .session(s)
                .is_some_and(|sess| sess.conn.is_none())
        });
        match oldest_detached.cloned() {
            Some(old) => {
                self.expire_session(&old, now);
                true
            }
            None => {
                self.fatal(
                    conn,
                    ErrorCode::TooManySessions,
                    format!(
                        "at most {} sessions per user",
                        self.config.max_sessions_per_user
                    ),
                    now,
                );
                false
            }
        }
    }

    /// A reload's new session supersedes its tab's detached leftover (whose `leave` was
    /// lost): forgotten now, not after the resume window.
    fn supersede_tab(&mut self, user: &str, tab: &str, now: u64) {
        let leftovers: Vec<SessionId> = self
            .store
            .sessions_of(user)
            .iter()
            .filter(|s| {
                self.store
                    .session(s)
                    .is_some_and(|sess| sess.conn.is_none() && sess.tab.as_deref() == Some(tab))
            })
            .cloned()
            .collect();
        for old in leftovers {
            self.expire_session(&old, now);
        }
    }

    fn new_session(&mut self, conn: ConnId, user: Peer, hello: &Hello, now: u64) {
        let tab = hello
            .tab
            .clone()
            .filter(|t| !t.is_empty() && t.len() <= MAX_TAB_ID_LEN);
        if let Some(tab) = &tab {
            self.supersede_tab(&user.id, tab, now);
        }
        if !self.make_room_for_session(conn, &user.id, now) {
            return;
        }
        let was_online = !self.store.sessions_of(&user.id).is_empty();
        let sid = self.random_hex(16);
        let secret = self.random_hex(32);
        self.store.put_session(Session {
            id: sid.clone(),
            user: user.clone(),
            secret_hash: secret_hash(&secret),
            prev_secret_hash: None,
            conn: Some(conn),
            detached_at: None,
            outbox: Outbox::new(),
            inbox: Inbox::new(),
            overflowed: false,
            presence: hello.presence,
            tab,
            call_waiting: hello.call_waiting,
            created_at: now,
            queued: 0,
        });
        if let Some(c) = self.conn_mut(conn) {
            c.session = Some(sid.clone());
        }
        self.metrics.sessions_created += 1;
        if hello.presence {
            self.set_watching(&sid, true);
        }
        let snapshot = self.snapshot_for(&sid, &user.id, hello.presence, now);
        self.send(
            conn,
            ServerFrame::Welcome(Box::new(Welcome {
                session: sid,
                secret,
                resumed: false,
                last_seq: 0,
                user: user.clone(),
                timers: self.config.timers(),
                limits: self.config.limits(),
                now,
                snapshot: Some(snapshot),
            })),
        );
        self.schedule_heartbeat(conn);
        if !was_online {
            self.broadcast_presence(&user.id, now);
        }
    }

    /// Everything a new session needs to show: the user's calls, presence if asked
    /// for, and calls that ended recently.
    fn snapshot_for(&self, sid: &str, user: &str, presence: bool, now: u64) -> Snapshot {
        // Stones outlive their window until the next prune; only recent ones count.
        let recent = now.saturating_sub(self.config.longest_grace());
        let calls = self
            .store
            .calls_of(user)
            .iter()
            .filter_map(|c| self.store.call(c))
            .map(|c| self.describe(c, sid))
            .collect();
        let ended = self
            .store
            .tombstones(user)
            .into_iter()
            .filter(|t| t.at >= recent)
            .map(|t| EndedCall {
                call: t.call,
                reason: t.reason,
            })
            .collect();
        Snapshot {
            calls,
            presence: if presence {
                self.presence_list()
            } else {
                Vec::new()
            },
            ended,
        }
    }

    /// The resume window passed (or room was needed): forget the session. Calls it held
    /// keep waiting for a rejoin until their grace deadline.
    pub(super) fn expire_session(&mut self, sid: &str, now: u64) {
        let Some(session) = self.store.take_session(sid) else {
            return;
        };
        if let Some(conn) = session.conn {
            self.close_conn(conn, CloseReason::DeadLink, now);
        }
        self.set_watching(sid, false);
        let user = session.user.id;
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        let mut withdraw = Vec::new();
        for id in calls {
            let Some(call) = self.store.call_mut(&id) else {
                continue;
            };
            let state = call.state;
            let is_caller = call.caller.user.id == user;
            let Some(slot) = call.slot_of_mut(&user) else {
                continue;
            };
            if slot.session.as_deref() != Some(sid) {
                continue;
            }
            slot.session = None;
            if state == CallState::Ringing && is_caller {
                withdraw.push(id);
            } else if state == CallState::Active {
                // Evicted while still attached: the window starts now.
                self.start_grace(&id, &user, now);
            }
        }
        for id in withdraw {
            self.end_call(&id, EndReason::Cancelled, now);
        }
        if self.store.sessions_of(&user).is_empty() {
            self.broadcast_presence(&user, now);
        }
    }

    /// Logout: the calls this session holds end, then the session is forgotten.
    pub(super) fn bye(&mut self, conn: ConnId, sid: &str, now: u64) {
        if self.end_session(sid, now) {
            self.answer_bye(conn);
        }
    }

    /// A logout that could not go over the socket (the page's fallback request, see
    /// [`ServerEngine::handle_bye_request`]): the same as a `bye`, and the session's
    /// socket, if one is still attached, is closed.
    pub(super) fn bye_without_socket(&mut self, sid: &str, now: u64) {
        let conn = self.store.session(sid).and_then(|s| s.conn);
        if self.end_session(sid, now) {
            // A socket that only lost its way up can still carry the answer down.
            if let Some(conn) = conn {
                self.answer_bye(conn);
            }
        }
    }

    /// The acknowledgement of a logout: the calls have ended and the session is gone,
    /// so the page may go away now (it waits for this before unloading); then the
    /// socket closes.
    fn answer_bye(&mut self, conn: ConnId) {
        if !self.conns.contains_key(&conn) {
            // Another node's socket (in a cluster): the shared store tells that node.
            return;
        }
        self.out.push_back(Output::Send {
            conn,
            frame: ServerFrame::Bye,
        });
        self.conn_remove(conn);
        self.out.push_back(Output::Close {
            conn,
            reason: CloseReason::Bye,
        });
    }

    /// Logout: ends the calls this session holds (and a ringing call offered to no
    /// other session of the user) and forgets the session. False if it is unknown.
    fn end_session(&mut self, sid: &str, now: u64) -> bool {
        let Some(user) = self.store.session(sid).map(|s| s.user.id.clone()) else {
            return false;
        };
        let calls: Vec<CallId> = self.store.calls_of(&user).to_vec();
        for id in calls {
            let held = self.store.call(&id).and_then(|c| {
                let slot = c.slot_of(&user)?;
                let holds = slot.session.as_deref() == Some(sid);
                // A ringing incoming call is offered to every session; if this was the
                // user's last session, logging out declines it.
                let last_offer = c.state == CallState::Ringing
                    && c.callee.user.id == user
                    && self.store.sessions_of(&user).len() == 1;
                Some((c.state, holds || last_offer, c.caller.user.id == user))
            });
            if let Some((state, true, is_caller)) = held {
                let reason = match (state, is_caller) {
                    (CallState::Ringing, true) => EndReason::Cancelled,
                    (CallState::Ringing, false) => EndReason::Declined,
                    _ => EndReason::Hangup,
                };
                self.end_call(&id, reason, now);
            }
        }
        if let Some(s) = self.store.session_mut(sid) {
            s.conn = None;
        }
        self.expire_session(sid, now);
        true
    }

    /// The page went away (`leave`): forget the session now. Its calls do not end: each
    /// waits for a rejoin for its grace window, as after a dropped link.
    pub(super) fn leave(&mut self, conn: ConnId, sid: &str, now: u64) {
        self.conn_remove(conn);
        self.out.push_back(Output::Close {
            conn,
            reason: CloseReason::Bye,
        });
        if let Some(s) = self.store.session_mut(sid) {
            s.conn = None;
        }
        self.expire_session(sid, now);
    }

    /// A socket that has not said hello in time is closed.
    pub(super) fn hello_due(&mut self, conn: ConnId, now: u64) {
        if self.conns.get(&conn).is_some_and(|c| c.session.is_none()) {
            self.fatal(conn, ErrorCode::HelloTimeout, "no hello in time", now);
        }
    }

    pub(super) fn session_expiry_due(&mut self, sid: &str, now: u64) {
        let window = self.config.resume_window_ms;
        let expired = self.store.session(sid).is_some_and(|s| {
            s.conn.is_none() && s.detached_at.is_some_and(|at| now >= at + window)
        });
        if expired {
            self.expire_session(sid, now);
        }
    }
}
