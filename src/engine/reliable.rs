//! Exactly-once delivery over a sequence of sockets, shared by both engines.
//!
//! Each side numbers the application messages it sends (`seq` 1, 2, 3, … per session)
//! and keeps every one in its [`Outbox`] until the peer acknowledges it; on resume the
//! peer says what it has handled and the rest is re-sent in order. The receiving side's
//! [`Inbox`] remembers the highest `seq` handled, so a re-sent message is recognised as a
//! duplicate and a missing one as a gap (which an ordered socket can only produce by a
//! bug, so both engines treat it as fatal for the link).
//!
//! Plain data (`Clone + Debug`, no clock, no IO): the server keeps both inside its
//! stored session, and a persistent store serialises them.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One sent message waiting for acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unacked<M> {
    /// Its sequence number.
    pub seq: u64,
    /// The peer sequence this side acknowledged when the message was first sent. A
    /// replay can carry it again, so that an acknowledgement never reaches the peer
    /// before an answer it covers.
    pub ack: u64,
    pub msg: M,
}

/// The sending half: assigns sequence numbers and keeps what the peer has not
/// acknowledged yet, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox<M> {
    /// Sequence number of the last message sent (0: none yet).
    last_seq: u64,
    unacked: VecDeque<Unacked<M>>,
}

impl<M> Default for Outbox<M> {
    fn default() -> Self {
        Self {
            last_seq: 0,
            unacked: VecDeque::new(),
        }
    }
}

impl<M> Outbox<M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds an outbox from stored parts: the last sequence number sent and the
    /// unacknowledged messages, oldest first (a durable store keeps them apart).
    pub fn from_parts(last_seq: u64, unacked: impl IntoIterator<Item = Unacked<M>>) -> Self {
        Self {
            last_seq,
            unacked: unacked.into_iter().collect(),
        }
    }

    /// Numbers `msg` and keeps it until acknowledged. `ack` is what this side has
    /// handled of the peer's messages right now (sent along with it). Returns its seq.
    pub fn push(&mut self, ack: u64, msg: M) -> u64 {
        self.last_seq += 1;
        if self.unacked.capacity() == 0 {
            // Room for two: what a session usually has unacknowledged at once (an
            // invite's answer and the call's start), where the first push would take
            // four.
            self.unacked.reserve_exact(2);
        }
        self.unacked.push_back(Unacked {
            seq: self.last_seq,
            ack,
            msg,
        });
        self.last_seq
    }

    /// Numbers a message that is sent but not kept (the replay buffer was given up, so
    /// the session can no longer be resumed anyway). Returns its seq.
    pub fn push_unbuffered(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// The peer has handled everything up to `ack`: forget those messages. An ack
    /// older than one already taken (or beyond anything sent) changes nothing it
    /// should not. Returns how many messages were released.
    pub fn take_ack(&mut self, ack: u64) -> usize {
        let before = self.unacked.len();
        while self.unacked.front().is_some_and(|u| u.seq <= ack) {
            self.unacked.pop_front();
        }
        if self.unacked.is_empty() && before > 0 {
            // An idle session keeps nothing: the buffer's capacity (a few messages'
            // worth, over a kilobyte) would otherwise stay with every session a server
            // holds.
            self.unacked = VecDeque::new();
        }
        before - self.unacked.len()
    }

    /// What to re-send after a resume (call [`Outbox::take_ack`] with the peer's
    /// reported position first), oldest first, each with its original ack.
    pub fn replay(&self) -> impl Iterator<Item = &Unacked<M>> + '_ {
        self.unacked.iter()
    }

    /// Whether a peer that has handled everything up to `peer_last_seq` can resume:
    /// it claims nothing never sent, and everything after it is still kept.
    pub fn can_resume_from(&self, peer_last_seq: u64) -> bool {
        peer_last_seq <= self.last_seq
            && self
                .unacked
                .front()
                .map_or(peer_last_seq == self.last_seq, |u| {
                    u.seq <= peer_last_seq + 1
                })
    }

    /// Sequence number of the last message sent (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Messages waiting for acknowledgement.
    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }

    /// Drops every kept message but keeps numbering (a replay buffer given up).
    pub fn clear(&mut self) {
        self.unacked.clear();
    }
}

/// What [`Inbox::accept`] made of an incoming sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The next message in order: handle it (it is already recorded as handled).
    New,
    /// Already handled (a replay after resume): drop it, acknowledge again.
    Duplicate,
    /// Messages are missing before it: nothing was recorded.
    Gap { expected: u64 },
}

/// The receiving half: the highest peer sequence handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Inbox {
    last_seq: u64,
}

impl Inbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies `seq`, recording it when it is the next one in order.
    pub fn accept(&mut self, seq: u64) -> Received {
        if seq <= self.last_seq {
            Received::Duplicate
        } else if seq != self.last_seq + 1 {
            Received::Gap {
                expected: self.last_seq + 1,
            }
        } else {
            self.last_seq = seq;
            Received::New
        }
    }

    /// The highest sequence handled: what this side acknowledges.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers `frames` (seq, msg) through an inbox, returning what was handled.
    fn deliver<'a>(inbox: &mut Inbox, frames: &[(u64, &'a str)]) -> Vec<&'a str> {
        let mut handled = Vec::new();
        for &(seq, msg) in frames {
            if inbox.accept(seq) == Received::New {
                handled.push(msg);
            }
        }
        handled
    }

    #[test]
    fn a_fully_acknowledged_outbox_holds_no_memory_and_still_counts_on() {
        let mut out = Outbox::new();
        for m in ["a", "b", "c", "d", "e"] {
            out.push(0, m);
        }
        assert_eq!(out.take_ack(3), 3);
        assert!(
            out.unacked.capacity() >= 2,
            "a partial ack keeps the buffer"
        );
        assert_eq!(out.take_ack(5), 2);
        assert_eq!(out.unacked.capacity(), 0);
        assert_eq!(out.push(0, "f"), 6);
        assert_eq!(out.replay().map(|u| u.msg).collect::<Vec<_>>(), ["f"]);
    }

    #[test]
    fn each_message_is_handled_once_and_in_order_across_a_resume() {
        let mut out = Outbox::new();
        let mut inbox = Inbox::new();
        let mut wire = Vec::new();
        for m in ["a", "b", "c"] {
            let seq = out.push(0, m);
            wire.push((seq, m));
        }
        // The first socket delivers a and b, then dies before the peer acks.
        let mut handled = deliver(&mut inbox, &wire[..2]);
        // Resume: the peer reports what it handled; the sender replays the rest, and a
        // sloppy driver delivers the whole buffer again.
        out.take_ack(0);
        let replay: Vec<(u64, &str)> = out.replay().map(|u| (u.seq, u.msg)).collect();
        assert_eq!(replay, wire);
        handled.extend(deliver(&mut inbox, &replay));
        assert_eq!(handled, ["a", "b", "c"]);
        assert_eq!(inbox.last_seq(), 3);
        // Acknowledged: nothing left to replay.
        assert_eq!(out.take_ack(inbox.last_seq()), 3);
        assert!(out.is_empty());
        assert_eq!(out.replay().count(), 0);
    }

    #[test]
    fn sequence_numbers_count_up_from_one() {
        let mut out = Outbox::new();
        assert_eq!(out.last_seq(), 0);
        assert_eq!(out.push(0, 'x'), 1);
        assert_eq!(out.push(0, 'y'), 2);
        assert_eq!(out.push_unbuffered(), 3);
        assert_eq!(out.push(0, 'z'), 4);
        assert_eq!(out.last_seq(), 4);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn acks_release_only_what_they_cover_and_stale_ones_are_harmless() {
        let mut out = Outbox::new();
        for m in 1..=5 {
            out.push(0, m);
        }
        assert_eq!(out.take_ack(2), 2);
        assert_eq!(out.len(), 3);
        // An older ack arriving late (reordered pong, replayed frame) releases nothing.
        assert_eq!(out.take_ack(1), 0);
        assert_eq!(out.take_ack(0), 0);
        assert_eq!(out.take_ack(2), 0);
        let left: Vec<i32> = out.replay().map(|u| u.msg).collect();
        assert_eq!(left, [3, 4, 5]);
        // Numbering is unaffected by acks.
        assert_eq!(out.push(0, 6), 6);
    }

    #[test]
    fn replay_carries_the_ack_each_message_was_first_sent_with() {
        let mut out = Outbox::new();
        out.push(0, "welcome-answer");
        out.push(7, "answer-to-7");
        out.push(9, "answer-to-9");
        out.take_ack(1);
        let replay: Vec<(u64, u64, &str)> = out.replay().map(|u| (u.seq, u.ack, u.msg)).collect();
        assert_eq!(replay, [(2, 7, "answer-to-7"), (3, 9, "answer-to-9")]);
    }

    #[test]
    fn duplicates_and_gaps_are_told_apart() {
        let mut inbox = Inbox::new();
        assert_eq!(inbox.accept(1), Received::New);
        assert_eq!(inbox.accept(2), Received::New);
        assert_eq!(inbox.accept(1), Received::Duplicate);
        assert_eq!(inbox.accept(2), Received::Duplicate);
        assert_eq!(inbox.accept(4), Received::Gap { expected: 3 });
        // A gap records nothing: the missing message is still the one expected.
        assert_eq!(inbox.last_seq(), 2);
        assert_eq!(inbox.accept(3), Received::New);
        assert_eq!(inbox.accept(4), Received::New);
        assert_eq!(inbox.last_seq(), 4);
    }

    #[test]
    fn a_fresh_inbox_expects_one() {
        let mut inbox = Inbox::new();
        assert_eq!(inbox.accept(0), Received::Duplicate);
        assert_eq!(inbox.accept(2), Received::Gap { expected: 1 });
        assert_eq!(inbox.accept(1), Received::New);
    }

    #[test]
    fn resume_is_possible_only_while_everything_after_the_peer_is_kept() {
        let mut out = Outbox::new();
        // Nothing sent: only a peer at 0 can resume.
        assert!(out.can_resume_from(0));
        assert!(!out.can_resume_from(1));
        for m in 1..=4 {
            out.push(0, m);
        }
        assert!(out.can_resume_from(0));
        assert!(out.can_resume_from(4));
        assert!(!out.can_resume_from(5), "claims a message never sent");
        out.take_ack(2);
        assert!(out.can_resume_from(2));
        assert!(out.can_resume_from(3));
        assert!(!out.can_resume_from(1), "message 2 is no longer kept");
        // A buffer given up cannot serve a peer that is behind.
        out.clear();
        out.push_unbuffered();
        assert!(!out.can_resume_from(4));
        assert!(out.can_resume_from(5));
    }
}
