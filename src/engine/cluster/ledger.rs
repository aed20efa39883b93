//! The shared store in memory: what the cluster's nodes agree through. The simulations
//! run nodes over it; the Redis store does the same in one script per transaction.

use super::{Committed, Fresh, NodeNo, Note, Txn};
use crate::engine::server::node_of_conn;
use crate::engine::store::{Record, RecordKey};
use crate::protocol::{ServerMsg, SessionId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// A session's delivery queue: messages other nodes sent it, numbered in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Queue {
    /// The number the next entry gets.
    next: u64,
    pub entries: VecDeque<(u64, ServerMsg)>,
}

/// The shared store in memory. See the module documentation of [`super`].
#[derive(Debug)]
pub struct MemoryLedger {
    records: HashMap<RecordKey, (u64, Record)>,
    /// The last version handed out (one counter for every record).
    version: u64,
    queues: HashMap<SessionId, Queue>,
    /// At most this many entries wait in a queue (the replay buffer's size).
    queue_limit: usize,
    /// The timer set: each record's next deadline.
    deadlines: HashMap<RecordKey, u64>,
    /// Live nodes and when their leases end.
    leases: BTreeMap<NodeNo, u64>,
    next_node: NodeNo,
    notes: BTreeMap<NodeNo, BTreeSet<Note>>,
    /// Per node, the last [`Txn::seq`] taken or fenced: a transaction with one at or
    /// below it is not taken.
    last_txn: HashMap<NodeNo, u64>,
    /// Transactions taken and refused, for tests and figures.
    pub taken: u64,
    pub refused: u64,
}

impl MemoryLedger {
    pub fn new(queue_limit: usize) -> Self {
        Self {
            records: HashMap::new(),
            version: 0,
            queues: HashMap::new(),
            queue_limit,
            deadlines: HashMap::new(),
            leases: BTreeMap::new(),
            next_node: 1,
            notes: BTreeMap::new(),
            last_txn: HashMap::new(),
            taken: 0,
            refused: 0,
        }
    }

    /// A new node joins: its number (never reused) and a lease until `until`.
    pub fn join(&mut self, until: u64) -> NodeNo {
        let no = self.next_node;
        self.next_node += 1;
        self.leases.insert(no, until);
        no
    }

    /// A node renews its lease. False when it had already been declared dead (it must
    /// stop: its sessions were detached).
    pub fn renew(&mut self, node: NodeNo, until: u64) -> bool {
        match self.leases.get_mut(&node) {
            Some(lease) => {
                *lease = (*lease).max(until);
                true
            }
            None => false,
        }
    }

    /// A node stopped renewing: its lease ends at `at` (a test's way to kill a node).
    pub fn end_lease(&mut self, node: NodeNo, at: u64) {
        if let Some(lease) = self.leases.get_mut(&node) {
            *lease = at;
        }
    }

    /// When something will next be there to claim: a lease ending, or a deadline
    /// passing by `margin` ms (claimed with [`MemoryLedger::claim_due`] at
    /// `now - margin`).
    pub fn next_claim(&self, margin: u64) -> Option<u64> {
        let leases = self
            .leases
            .values()
            .filter(|u| **u < u64::MAX)
            .map(|u| u + 1);
        let deadlines = self.deadlines.values().map(|at| at + margin);
        leases.chain(deadlines).min()
    }

    /// A node leaves cleanly (its sessions were handed on or detached by itself).
    pub fn leave(&mut self, node: NodeNo) {
        self.leases.remove(&node);
        self.notes.remove(&node);
    }

    /// Nodes whose lease ended before `now`, each claimed by the caller alone, with the
    /// sessions still attached to them.
    pub fn claim_lost(&mut self, now: u64) -> Vec<(NodeNo, Vec<SessionId>)> {
        let lost: Vec<NodeNo> = self
            .leases
            .iter()
            .filter(|(_, until)| **until < now)
            .map(|(n, _)| *n)
            .collect();
        lost.into_iter()
            .map(|node| {
                self.leases.remove(&node);
                self.notes.remove(&node);
                let mut sessions: Vec<SessionId> = self
                    .records
                    .values()
                    .filter_map(|(_, r)| match r {
                        Record::Session(s) if s.conn.map(node_of_conn) == Some(node) => {
                            Some(s.id.clone())
                        }
                        _ => None,
                    })
                    .collect();
                sessions.sort();
                (node, sessions)
            })
            .collect()
    }

    /// Records whose deadline is at or before `now`, claimed for `claim_ms` (another
    /// node claims them again after that, should the claimer die first).
    pub fn claim_due(&mut self, now: u64, claim_ms: u64) -> Vec<RecordKey> {
        let mut due: Vec<RecordKey> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        due.sort();
        for key in &due {
            self.deadlines.insert(key.clone(), now + claim_ms);
        }
        due
    }

    /// What the store holds for `keys`.
    pub fn fetch(&self, keys: &[RecordKey]) -> Vec<Fresh> {
        keys.iter().map(|k| self.fresh(k)).collect()
    }

    fn fresh(&self, key: &RecordKey) -> Fresh {
        match self.records.get(key) {
            Some((version, value)) => Fresh {
                key: key.clone(),
                version: *version,
                value: Some(value.clone()),
            },
            None => Fresh {
                key: key.clone(),
                version: 0,
                value: None,
            },
        }
    }

    /// The delivery queue of a session (empty when it has none).
    pub fn queue(&self, sid: &str) -> Queue {
        self.queues.get(sid).cloned().unwrap_or_default()
    }

    /// What other nodes' transactions left for `node` since the last call.
    pub fn take_notes(&mut self, node: NodeNo) -> Vec<Note> {
        self.notes
            .remove(&node)
            .map(|n| n.into_iter().collect())
            .unwrap_or_default()
    }

    /// Every record (tests compare what nodes believe with it).
    pub fn records(&self) -> impl Iterator<Item = (&RecordKey, &Record)> {
        self.records.iter().map(|(k, (_, r))| (k, r))
    }

    fn note(&mut self, node: NodeNo, note: Note) {
        if self.leases.contains_key(&node) {
            self.notes.entry(node).or_default().insert(note);
        }
    }

    /// The node holding a session, by its record.
    fn holder(&self, sid: &str) -> Option<NodeNo> {
        match self.records.get(&RecordKey::Session(sid.to_owned())) {
            Some((_, Record::Session(s))) => s.conn.map(node_of_conn),
            _ => None,
        }
    }

    /// Whether node `no`'s transaction `seq` was taken, for a node whose answer was
    /// lost; when it was not, it never will be (a late arrival is refused), so the
    /// node may run it again.
    pub fn fence(&mut self, no: NodeNo, seq: u64) -> bool {
        let last = self.last_txn.entry(no).or_default();
        if *last == seq {
            return true;
        }
        *last = (*last).max(seq);
        false
    }

    /// Takes `txn` if every record it read is unchanged, atomically.
    pub fn commit(&mut self, txn: Txn) -> Committed {
        let last = self.last_txn.entry(txn.node).or_default();
        if txn.seq <= *last {
            // Fenced: its node was told it was not taken, and has run it again.
            self.refused += 1;
            return Committed::Refused(Vec::new(), Vec::new());
        }
        let changed: Vec<Fresh> = txn
            .reads
            .iter()
            .filter(|(key, version)| self.records.get(key).map_or(0, |(v, _)| *v) != *version)
            .map(|(key, _)| self.fresh(key))
            .collect();
        let waiting: Vec<(SessionId, Queue)> = txn
            .direct
            .iter()
            .filter_map(|(sid, taken)| {
                let q = self.queues.get(sid)?;
                q.entries
                    .back()
                    .is_some_and(|(no, _)| no > taken)
                    .then(|| (sid.clone(), q.clone()))
            })
            .collect();
        if !changed.is_empty() || !waiting.is_empty() {
            self.refused += 1;
            return Committed::Refused(changed, waiting);
        }
        self.taken += 1;
        self.last_txn.insert(txn.node, txn.seq);
        let mut written = Vec::with_capacity(txn.writes.len());
        for w in txn.writes {
            let holder_before = match &w.key {
                RecordKey::Session(sid) => self.holder(sid),
                _ => None,
            };
            let version = match w.value {
                Some(value) => {
                    self.version += 1;
                    self.records.insert(w.key.clone(), (self.version, value));
                    self.version
                }
                None => {
                    self.records.remove(&w.key);
                    0
                }
            };
            match w.deadline {
                Some(at) if version != 0 => self.deadlines.insert(w.key.clone(), at),
                _ => self.deadlines.remove(&w.key),
            };
            match &w.key {
                RecordKey::Session(sid) => self.session_written(sid, holder_before, txn.node),
                RecordKey::User(user) => {
                    let others: Vec<NodeNo> = self
                        .leases
                        .keys()
                        .copied()
                        .filter(|n| *n != txn.node)
                        .collect();
                    for n in others {
                        self.note(n, Note::Presence(user.clone()));
                    }
                }
                RecordKey::Call(_) => {}
            }
            written.push((w.key, version));
        }
        for (sid, msg) in txn.deliveries {
            self.enqueue(sid, msg);
        }
        Committed::Taken(written)
    }

    /// After a session record was written by `writer`: the queue loses what the
    /// session took; the node that held it hears if it no longer does; the node that
    /// holds it now hears of waiting entries.
    fn session_written(&mut self, sid: &str, before: Option<NodeNo>, writer: NodeNo) {
        let now_held = self.holder(sid);
        let taken = match self.records.get(&RecordKey::Session(sid.to_owned())) {
            Some((_, Record::Session(s))) => Some(s.queued),
            _ => None,
        };
        match taken {
            Some(taken) => {
                if let Some(q) = self.queues.get_mut(sid) {
                    while q.entries.front().is_some_and(|(no, _)| *no <= taken) {
                        q.entries.pop_front();
                    }
                }
            }
            None => {
                self.queues.remove(sid);
            }
        }
        if let Some(b) = before.filter(|b| *b != writer && Some(*b) != now_held) {
            self.note(b, Note::Moved(sid.to_owned()));
        }
        if let Some(holder) = now_held {
            if self.queues.get(sid).is_some_and(|q| !q.entries.is_empty()) {
                self.note(holder, Note::Queued(sid.to_owned()));
            }
        }
    }

    fn enqueue(&mut self, sid: SessionId, msg: ServerMsg) {
        let key = RecordKey::Session(sid.clone());
        if !self.records.contains_key(&key) {
            // Nobody to deliver to (the session ended): as a push to a missing session.
            return;
        }
        let limit = self.queue_limit;
        let q = self.queues.entry(sid.clone()).or_default();
        q.next += 1;
        if q.entries.len() < limit {
            q.entries.push_back((q.next, msg));
        } else {
            // Nobody takes the messages (the session is detached, or its node stalls):
            // the session can no longer promise replay, as when its outbox overflows,
            // so the next resume starts a new one. The record says so at once.
            q.entries.clear();
            if let Some((version, Record::Session(s))) = self.records.get_mut(&key) {
                s.overflowed = true;
                s.outbox.clear();
                self.version += 1;
                *version = self.version;
            }
        }
        if let Some(holder) = self.holder(&sid) {
            self.note(holder, Note::Queued(sid));
        }
    }
}
