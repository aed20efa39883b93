//! Sequenced delivery within a session: every server message is numbered, kept until
//! the client acknowledges it (for replay after a resume), and every client message is
//! handled once, in order.

use super::{ConnId, Output, ServerEngine};
use crate::engine::store::Store;
use crate::protocol::{ClientFrame, ErrorBody, ErrorCode, ServerFrame, ServerMsg};

impl<S: Store> ServerEngine<S> {
    /// Appends a sequenced message to a session: buffered for replay, and sent at once
    /// when a socket is attached.
    pub(super) fn push(&mut self, sid: &str, body: ServerMsg) {
        let limit = self.config.replay_buffer;
        let Some(s) = self.store.session_mut(sid) else {
            return;
        };
        s.out_seq += 1;
        let seq = s.out_seq;
        let ack = s.in_seq;
        let conn = s.conn;
        if s.unacked.len() >= limit {
            // The peer of this session is not acknowledging: the buffer can no longer
            // guarantee replay, so the next resume starts a new session.
            s.overflowed = true;
            s.unacked.clear();
        }
        if !s.overflowed {
            s.unacked.push_back((seq, ack, body.clone()));
        }
        if let Some(conn) = conn {
            self.send(conn, ServerFrame::Msg { seq, ack, body });
        }
    }

    pub(super) fn push_error(
        &mut self,
        sid: &str,
        code: ErrorCode,
        message: &str,
        re: Option<u64>,
    ) {
        self.metrics.count_error(code);
        self.push(
            sid,
            ServerMsg::Error(ErrorBody {
                code,
                message: message.into(),
                re,
                fatal: false,
            }),
        );
    }

    /// The client handled everything up to `ack`: forget it.
    pub(super) fn take_ack(&mut self, sid: &str, ack: u64) {
        if let Some(s) = self.store.session_mut(sid) {
            while s.unacked.front().is_some_and(|(seq, _, _)| *seq <= ack) {
                s.unacked.pop_front();
            }
        }
    }

    /// Checks a client seq. Runs `handle` for a new in-order message (after recording it
    /// as handled); drops duplicates; a gap is fatal.
    pub(super) fn accept_seq(
        &mut self,
        conn: ConnId,
        sid: &str,
        seq: u64,
        now: u64,
        handle: impl FnOnce(&mut Self, u64),
    ) {
        let Some(last) = self.store.session(sid).map(|s| s.in_seq) else {
            return;
        };
        if seq <= last {
            // Already handled: a replay after resume. Acknowledge again.
            self.send(conn, ServerFrame::Ack { ack: last });
            return;
        }
        if seq != last + 1 {
            self.fatal(
                conn,
                ErrorCode::BadSequence,
                format!("expected seq {}, got {seq}", last + 1),
                now,
            );
            return;
        }
        if let Some(s) = self.store.session_mut(sid) {
            s.in_seq = seq;
        }
        let mark = self.out.len();
        handle(self, seq);
        // Acknowledge at once unless a message to this socket carried the ack.
        let carried = self.out.iter().skip(mark).any(
            |o| matches!(o, Output::Send { conn: c, frame: ServerFrame::Msg { .. } } if *c == conn),
        );
        if !carried && self.conns.contains_key(&conn) {
            self.send(conn, ServerFrame::Ack { ack: seq });
        }
    }

    /// A frame over the socket's budget. A refused sequenced message still counts as
    /// handled so that the sequence stays gap-free; it changed nothing.
    pub(super) fn refused_frame(&mut self, conn: ConnId, sid: &str, frame: ClientFrame, now: u64) {
        if let ClientFrame::Msg { seq, ack, .. } = frame {
            self.take_ack(sid, ack);
            self.accept_seq(conn, sid, seq, now, |engine, _| {
                engine.push_error(
                    sid,
                    ErrorCode::RateLimited,
                    "too many messages; this one was dropped",
                    Some(seq),
                );
            });
        }
    }
}
