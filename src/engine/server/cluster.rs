//! The engine as one node of a cluster (see [`crate::engine::cluster`]): socket ids that
//! name their node, messages to sessions held elsewhere handed over as deliveries, and
//! transactions that can be undone when the shared store refuses them.

use super::{CloseReason, Conn, ConnId, Metrics, Output, ServerEngine, Timer};
use crate::engine::store::{MemoryStore, Record, RecordKey, Store};
use crate::protocol::{ErrorCode, PresenceStatus, ServerMsg, SessionId, UserId};
use std::collections::{BTreeSet, HashMap};

/// A node's number in its cluster, handed out by the shared store (never reused).
pub type NodeNo = u64;

/// Socket ids carry their node's number above this many bits, so that a session's
/// socket names the node that holds it (node 0: a process on its own).
const NODE_SHIFT: u32 = 40;

/// The node that opened a socket.
pub fn node_of_conn(conn: ConnId) -> NodeNo {
    conn >> NODE_SHIFT
}

/// What a node engine knows about its cluster.
#[derive(Debug)]
pub(super) struct ClusterPart {
    /// Messages for sessions whose socket is not on this node, in the order pushed,
    /// for the shared store's delivery queues (taken with the transaction).
    deliveries: Vec<(SessionId, ServerMsg)>,
    /// Sessions held here that got a message pushed straight into their outbox, other
    /// than entries of their own queue.
    direct: BTreeSet<SessionId>,
    /// Entries of a queue are being taken: those pushes are the queue's own order.
    taking_queue: bool,
}

/// What a running transaction changed outside the store.
#[derive(Debug)]
pub(super) struct EngineTxn {
    out_len: usize,
    deliveries_len: usize,
    metrics: Metrics,
    next_conn: ConnId,
    /// Sockets as they were before the transaction first changed them.
    pub(super) conns: HashMap<ConnId, Option<Box<Conn>>>,
    pub(super) watchers: HashMap<SessionId, bool>,
    /// Timers armed in the transaction: they join the queue when it commits.
    pub(super) timers_added: Vec<(u64, Timer)>,
    /// Timers that fired in it: they go back into the queue if it is undone.
    pub(super) timers_fired: Vec<(u64, Timer)>,
    flags: [bool; 4],
    pub(super) presence_sent: HashMap<UserId, Option<PresenceStatus>>,
    presence_dirty: BTreeSet<UserId>,
}

impl<S: Store> ServerEngine<S> {
    /// Notes a socket's state before a transaction first changes it.
    pub(super) fn journal_conn(&mut self, conn: ConnId) {
        if let Some(txn) = self.txn.as_mut() {
            txn.conns
                .entry(conn)
                .or_insert_with(|| self.conns.get(&conn).cloned());
        }
    }

    /// Notes the status last sent to watchers before a transaction first changes it.
    pub(super) fn journal_presence_sent(&mut self, user: &str) {
        if let Some(txn) = self.txn.as_mut() {
            txn.presence_sent
                .entry(user.to_owned())
                .or_insert_with(|| self.presence_sent.get(user).copied());
        }
    }

    /// Whether `sid` is attached to a socket of this engine. Reads the cache without
    /// counting as a read of a transaction: it only routes a message (a session this
    /// node holds is the node's to write, and a write to it is checked at commit).
    pub(super) fn attached_here(&self, sid: &str) -> bool {
        self.store
            .peek_session(sid)
            .and_then(|s| s.conn)
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.session.as_deref() == Some(sid))
    }

    /// In a cluster, a message for a session not attached here goes to the session's
    /// delivery queue instead of its outbox; returns false then.
    pub(super) fn deliver_here(&mut self, sid: &str, body: &ServerMsg) -> bool {
        if self.cluster.is_none() {
            return true;
        }
        let here = self.attached_here(sid);
        if let Some(part) = self.cluster.as_mut() {
            if here {
                if !part.taking_queue {
                    part.direct.insert(sid.to_owned());
                }
            } else {
                part.deliveries.push((sid.to_owned(), body.clone()));
            }
        }
        here
    }
}

impl ServerEngine<MemoryStore> {
    /// Makes this engine node `node` of a cluster: its socket ids carry the number, and
    /// messages for sessions held elsewhere become deliveries. Call before any input.
    pub fn join_cluster(&mut self, node: NodeNo) {
        self.next_conn = (node << NODE_SHIFT) + 1;
        self.cluster = Some(ClusterPart {
            deliveries: Vec::new(),
            direct: BTreeSet::new(),
            taking_queue: false,
        });
    }

    /// Starts a transaction (see [`crate::engine::cluster`]): until it commits or is
    /// undone, the engine notes what it reads and keeps what it changes undoable.
    pub fn begin_txn(&mut self) {
        self.store.begin_txn();
        self.txn = Some(EngineTxn {
            out_len: self.out.len(),
            deliveries_len: self.cluster.as_ref().map_or(0, |c| c.deliveries.len()),
            metrics: self.metrics.clone(),
            next_conn: self.next_conn,
            conns: HashMap::new(),
            watchers: HashMap::new(),
            timers_added: Vec::new(),
            timers_fired: Vec::new(),
            flags: [
                self.shutting_down,
                self.prune_armed,
                self.budget_prune_armed,
                self.presence_flush_armed,
            ],
            presence_sent: HashMap::new(),
            presence_dirty: self.presence_dirty.clone(),
        });
    }

    /// Puts a record in the cache as the shared store has it (see
    /// [`MemoryStore::install`]).
    pub fn install(&mut self, key: RecordKey, version: u64, value: Option<Record>) {
        self.store.install(key, version, value);
    }

    /// Messages for sessions held elsewhere, pushed since the last call, and the
    /// sessions held here that were pushed to directly.
    pub fn take_deliveries(&mut self) -> (Vec<(SessionId, ServerMsg)>, BTreeSet<SessionId>) {
        self.cluster
            .as_mut()
            .map(|c| {
                (
                    std::mem::take(&mut c.deliveries),
                    std::mem::take(&mut c.direct),
                )
            })
            .unwrap_or_default()
    }

    /// The shared store took the transaction; `written`: the new versions of the
    /// records it wrote.
    pub fn commit_txn(&mut self, written: &[(RecordKey, u64)]) {
        self.store.commit_txn(written);
        if let Some(txn) = self.txn.take() {
            for (at, timer) in txn.timers_added {
                self.timers.schedule(at, timer);
            }
        }
    }

    /// The shared store refused the transaction: everything it did is undone, and its
    /// outputs are dropped (none was released).
    pub fn rollback_txn(&mut self) {
        self.store.rollback_txn();
        let Some(txn) = self.txn.take() else {
            return;
        };
        self.out.truncate(txn.out_len);
        if let Some(c) = self.cluster.as_mut() {
            c.deliveries.truncate(txn.deliveries_len);
            c.direct.clear();
        }
        self.metrics = txn.metrics;
        self.next_conn = txn.next_conn;
        for (id, conn) in txn.conns {
            match conn {
                Some(c) => {
                    self.conns.insert(id, c);
                }
                None => {
                    self.conns.remove(&id);
                }
            }
        }
        for (sid, watching) in txn.watchers {
            if watching {
                self.watchers.insert(sid);
            } else {
                self.watchers.remove(&sid);
            }
        }
        for (at, timer) in txn.timers_fired {
            self.timers.schedule(at, timer);
        }
        [
            self.shutting_down,
            self.prune_armed,
            self.budget_prune_armed,
            self.presence_flush_armed,
        ] = txn.flags;
        for (user, status) in txn.presence_sent {
            match status {
                Some(s) => self.presence_sent.insert(user, s),
                None => self.presence_sent.remove(&user),
            };
        }
        self.presence_dirty = txn.presence_dirty;
    }

    /// The store's value of a record changed under this node (it was refreshed after
    /// a refused transaction, or another node told it): a socket here that the session
    /// no longer names was superseded (resumed on another node) and closes; one whose
    /// session is gone (logged out on another node) gets the logout's answer and
    /// closes.
    pub fn reconcile_session(&mut self, sid: &str, conn: Option<ConnId>) {
        let Some(conn) = conn else {
            return;
        };
        if self
            .conns
            .get(&conn)
            .is_none_or(|c| c.session.as_deref() != Some(sid))
        {
            return;
        }
        let holds = self.store.peek_session(sid).and_then(|s| s.conn);
        if holds == Some(conn) {
            return;
        }
        self.journal_conn(conn);
        self.conns.remove(&conn);
        if holds.is_some() {
            self.metrics.superseded += 1;
            self.out.push_back(Output::Send {
                conn,
                frame: crate::protocol::ServerFrame::Error(crate::protocol::ErrorBody {
                    code: ErrorCode::Superseded,
                    message: "this session was resumed on another socket".into(),
                    re: None,
                    fatal: true,
                }),
            });
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::Error(ErrorCode::Superseded),
            });
        } else {
            // A session attached here can only end elsewhere by a logout over HTTP
            // (expiry and eviction take detached sessions only): its socket carries
            // the answer, as `bye_without_socket` does on one node.
            self.out.push_back(Output::Send {
                conn,
                frame: crate::protocol::ServerFrame::Bye,
            });
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::Bye,
            });
        }
    }

    /// Entries of `sid`'s delivery queue, numbered by the shared store, oldest first.
    /// Taken into the outbox (and sent) only by the node holding the session's socket,
    /// each once: the session records the last number taken.
    pub fn handle_queued(&mut self, sid: &str, entries: Vec<(u64, ServerMsg)>, _now: u64) {
        if !self.attached_here(sid) {
            // Moved or detached: whichever node attaches it next takes the queue.
            return;
        }
        let Some(taken) = self.store.session(sid).map(|s| s.queued) else {
            return;
        };
        let mut last = taken;
        if let Some(part) = self.cluster.as_mut() {
            part.taking_queue = true;
        }
        for (no, msg) in entries {
            if no <= last {
                continue;
            }
            last = no;
            self.push(sid, msg);
        }
        if let Some(part) = self.cluster.as_mut() {
            part.taking_queue = false;
        }
        if last != taken {
            if let Some(s) = self.store.session_mut(sid) {
                s.queued = last;
            }
        }
        self.store.commit();
    }

    /// Node `node` died (its lease in the shared store expired): `sessions` (loaded
    /// into the cache) that were attached to it detach now, as if their links had
    /// dropped: resume windows and grace windows start, the other side is told.
    pub fn handle_node_lost(&mut self, node: NodeNo, sessions: &[SessionId], now: u64) {
        for sid in sessions {
            let on_node = self
                .store
                .session(sid)
                .and_then(|s| s.conn)
                .is_some_and(|c| node_of_conn(c) == node);
            if on_node {
                self.detach(sid, now);
            }
        }
        self.store.commit();
    }

    /// A record's deadline passed and this node claimed it from the shared store's
    /// timer set (its own timer may be on a node that died): whatever is due now
    /// happens, once, as the handlers check the record.
    pub fn handle_record_due(&mut self, key: &RecordKey, now: u64) {
        match key {
            RecordKey::Session(sid) => self.session_expiry_due(sid, now),
            RecordKey::Call(id) => {
                self.ring_due(id, now);
                self.ring_detach_due(id, now);
                self.grace_due(id, now);
            }
            RecordKey::User(_) => self.prune_due(now),
        }
        self.store.commit();
    }
}
