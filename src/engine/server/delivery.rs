//! Sequenced delivery within a session: every server message is numbered, kept until
//! the client acknowledges it (for replay after a resume), and every client message is
//! handled once, in order. The bookkeeping is [`crate::engine::reliable`], shared with
//! the client engine; this file decides what the server does with its verdicts.

use super::{ConnId, Output, ServerEngine};
use crate::engine::reliable::Received;
use crate::engine::store::Store;
use crate::protocol::{ClientFrame, ErrorBody, ErrorCode, ServerFrame, ServerMsg};

impl<S: Store> ServerEngine<S> {
    /// Appends a sequenced message to a session: buffered for replay, and sent at once
    /// when a socket is attached.
    pub(super) fn push(&mut self, sid: &str, body: ServerMsg) {
        if !self.deliver_here(sid, &body) {
            return;
        }
        let limit = self.config.replay_buffer;
        let Some(s) = self.store.session_mut(sid) else {
            return;
        };
        let ack = s.inbox.last_seq();
        let conn = s.conn;
        if s.outbox.len() >= limit {
            // The peer of this session is not acknowledging: the buffer can no longer
            // guarantee replay, so the next resume starts a new session.
            s.overflowed = true;
            s.outbox.clear();
        }
        let seq = if s.overflowed {
            s.outbox.push_unbuffered()
        } else {
            s.outbox.push(ack, body.clone())
        };
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
            s.outbox.take_ack(ack);
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
        let Some(s) = self.store.session_mut(sid) else {
            return;
        };
        match s.inbox.accept(seq) {
            Received::New => {}
            // Both answer the socket, which a flood refusing this very frame may have
            // closed a moment ago (see `ServerEngine::charge`): then there is nobody to
            // answer.
            Received::Duplicate => {
                // Already handled: a replay after resume. Acknowledge again.
                let ack = s.inbox.last_seq();
                if self.conns.contains_key(&conn) {
                    self.send(conn, ServerFrame::Ack { ack });
                }
                return;
            }
            Received::Gap { expected } => {
                if self.conns.contains_key(&conn) {
                    self.fatal(
                        conn,
                        ErrorCode::BadSequence,
                        format!("expected seq {expected}, got {seq}"),
                        now,
                    );
                }
                return;
            }
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
