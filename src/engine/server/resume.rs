//! Resuming a session on a new socket: proof of the secret, rotation of it, closing a
//! half-open old socket, and replay of everything the client has not acknowledged.

use super::{CloseReason, ConnId, Output, ServerEngine};
use crate::engine::store::{Session, Store};
use crate::engine::{secret_hash, secret_matches};
use crate::protocol::*;

/// Whether `session` can be resumed by `user` presenting `r` at `now`.
fn resumable(session: &Session, user: &Peer, r: &Resume, window: u64, now: u64) -> bool {
    let s = session;
    s.user.id == user.id
        && (secret_matches(&r.secret, &s.secret_hash)
            | s.prev_secret_hash.is_some_and(|h| secret_matches(&r.secret, &h)))
        && !s.overflowed
        && s.detached_at.is_none_or(|at| now < at + window)
        // It claims nothing never sent, and everything after it is still kept.
        && s.outbox.can_resume_from(r.last_seq)
}

impl<S: Store> ServerEngine<S> {
    /// Resumes the session `r` names on `conn`. False when it cannot be resumed (the
    /// caller then opens a new session).
    pub(super) fn try_resume(&mut self, conn: ConnId, user: &Peer, r: &Resume, now: u64) -> bool {
        let window = self.config.resume_window_ms;
        let ok = self
            .store
            .session(&r.session)
            .is_some_and(|s| resumable(s, user, r, window, now));
        if !ok {
            return false;
        }
        let secret = self.random_hex(32);
        let sid = r.session.clone();
        let (old_conn, was_detached) = {
            let s = self.store.session_mut(&sid).expect("checked above");
            let old = s.conn.replace(conn);
            let was_detached = s.detached_at.take().is_some();
            // The presented secret stays valid until this welcome is known to have
            // arrived (see `Session::prev_secret_hash`).
            s.prev_secret_hash = Some(secret_hash(&r.secret));
            s.secret_hash = secret_hash(&secret);
            s.outbox.take_ack(r.last_seq);
            (old, was_detached)
        };
        // A socket of another node (resumed across a cluster) is that node's to close:
        // the shared store tells it.
        if let Some(old) = old_conn.filter(|c| self.conns.contains_key(c)) {
            self.supersede(old);
        }
        if let Some(c) = self.conn_mut(conn) {
            c.session = Some(sid.clone());
        }
        self.metrics.resumes += 1;
        let presence = self.welcome_back(conn, &sid, secret, now);
        self.schedule_heartbeat(conn);
        if was_detached {
            self.reattach_calls(&sid, now);
        }
        if presence {
            // Presence changes are not buffered for detached sessions; refresh.
            let entries = self.presence_list();
            self.push(&sid, ServerMsg::Presence { entries });
        }
        true
    }

    /// Half-open: the old socket still looked alive. It must never deliver anything for
    /// this session again.
    fn supersede(&mut self, old: ConnId) {
        self.metrics.superseded += 1;
        if let Some(c) = self.conn_mut(old) {
            c.session = None;
        }
        self.conn_error(
            old,
            ErrorCode::Superseded,
            "this session was resumed on another socket",
            None,
            true,
        );
        self.conn_remove(old);
        self.out.push_back(Output::Close {
            conn: old,
            reason: CloseReason::Error(ErrorCode::Superseded),
        });
    }

    /// Sends the resumed welcome and replays what the client has not acknowledged.
    /// Returns whether the session watches presence.
    fn welcome_back(&mut self, conn: ConnId, sid: &str, secret: String, now: u64) -> bool {
        let s = self.store.session(sid).expect("exists");
        let welcome = Welcome {
            session: sid.to_owned(),
            secret,
            resumed: true,
            last_seq: s.inbox.last_seq(),
            user: s.user.clone(),
            timers: self.config.timers(),
            limits: self.config.limits(),
            now,
            snapshot: None,
        };
        // Each replayed message carries the ack it was first sent with: the client
        // matches an answer to its request before the ack that covers the request.
        let replay: Vec<ServerFrame> = s
            .outbox
            .replay()
            .map(|u| ServerFrame::Msg {
                seq: u.seq,
                ack: u.ack,
                body: u.msg.clone(),
            })
            .collect();
        let presence = s.presence;
        self.send(conn, ServerFrame::Welcome(Box::new(welcome)));
        for frame in replay {
            self.send(conn, frame);
        }
        presence
    }
}
