//! One node of a cluster: a server engine over its cache, run in transactions that the
//! shared store takes or refuses (see the module documentation of [`super`]).

use super::{next_deadline, Committed, Fresh, NodeNo, Txn, Write};
use crate::engine::server::{ByeOutcome, ConnId, Output, ServerEngine};
use crate::engine::store::{MemoryStore, RecordKey, Store};
use crate::protocol::{BadFrame, ClientFrame, ServerMsg, SessionId, UserId};
use std::collections::VecDeque;
use std::net::IpAddr;

/// An input waiting for its transaction.
#[derive(Debug, Clone)]
enum Input {
    Open(ConnId, Option<IpAddr>),
    Frame(ConnId, ClientFrame),
    BadFrame(ConnId, BadFrame),
    Close(ConnId),
    Timeout,
    Queued(SessionId, Vec<(u64, ServerMsg)>),
    NodeLost(NodeNo, Vec<SessionId>),
    Due(RecordKey),
    Presence(UserId),
    Shutdown,
    Bye {
        ticket: u64,
        token: String,
        session: String,
        secret: String,
    },
}

/// One node of a cluster. Feed it inputs (`handle_*`); take [`ClusterNode::poll_txn`]
/// to the shared store and hand its answer to [`ClusterNode::handle_committed`]; drain
/// [`ClusterNode::poll_output`] (released only once their transaction was taken).
pub struct ClusterNode {
    engine: ServerEngine<MemoryStore>,
    no: NodeNo,
    next_conn: ConnId,
    pending: VecDeque<Input>,
    /// The inputs of the transaction the shared store has not answered yet.
    in_flight: Option<Vec<Input>>,
    /// Records to put in the cache before the next transaction.
    fresh: Vec<Fresh>,
    out: VecDeque<Output>,
    /// Logout answers of the transaction in flight, and those released.
    byes_tentative: Vec<(u64, ByeOutcome)>,
    byes: VecDeque<(u64, ByeOutcome)>,
    next_ticket: u64,
    /// Transactions taken and refused (and run again), for `/metrics`.
    txns: TxnCounts,
    /// The last [`Txn::seq`] handed out.
    txn_seq: u64,
    /// At most this many inputs go into one transaction: halved when one is refused
    /// (a large transaction is more likely to read something another node changes),
    /// doubled when one is taken.
    batch_limit: usize,
}

/// How this node's transactions fared at the shared store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnCounts {
    /// Taken: their writes are in the store.
    pub taken: u64,
    /// Refused because a record read had changed; undone and run again.
    pub refused: u64,
}

/// The most inputs one transaction takes.
const MAX_BATCH: usize = 4_096;

impl ClusterNode {
    /// Node `no` (from the shared store's [`super::MemoryLedger::join`]) over `engine`,
    /// whose store must track changes ([`MemoryStore::with_change_tracking`]).
    pub fn new(mut engine: ServerEngine<MemoryStore>, no: NodeNo) -> Self {
        engine.join_cluster(no);
        Self {
            engine,
            no,
            next_conn: (no << 40) + 1,
            pending: VecDeque::new(),
            in_flight: None,
            fresh: Vec::new(),
            out: VecDeque::new(),
            byes_tentative: Vec::new(),
            byes: VecDeque::new(),
            next_ticket: 1,
            txns: TxnCounts::default(),
            txn_seq: 0,
            batch_limit: MAX_BATCH,
        }
    }

    pub fn no(&self) -> NodeNo {
        self.no
    }

    pub fn txns(&self) -> TxnCounts {
        self.txns
    }

    pub fn engine(&self) -> &ServerEngine<MemoryStore> {
        &self.engine
    }

    /// A socket opened: its id now; the engine hears of it in the next transaction.
    pub fn handle_open(&mut self, ip: Option<IpAddr>) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.pending.push_back(Input::Open(id, ip));
        id
    }

    pub fn handle_frame(&mut self, conn: ConnId, frame: ClientFrame) {
        self.pending.push_back(Input::Frame(conn, frame));
    }

    pub fn handle_bad_frame(&mut self, conn: ConnId, bad: BadFrame) {
        self.pending.push_back(Input::BadFrame(conn, bad));
    }

    pub fn handle_close(&mut self, conn: ConnId) {
        self.pending.push_back(Input::Close(conn));
    }

    /// Time passed: the engine's due timers fire in the next transaction.
    pub fn handle_timeout(&mut self) {
        if !matches!(self.pending.back(), Some(Input::Timeout)) {
            self.pending.push_back(Input::Timeout);
        }
    }

    /// The shared store's delivery queue of `sid` (see [`super::Note::Queued`]).
    pub fn handle_queued(&mut self, sid: SessionId, queue: super::Queue) {
        self.pending
            .push_back(Input::Queued(sid, queue.entries.into_iter().collect()));
    }

    /// Node `node` died; `sessions` were attached to it.
    pub fn handle_node_lost(&mut self, node: NodeNo, sessions: Vec<SessionId>) {
        self.pending.push_back(Input::NodeLost(node, sessions));
    }

    /// A deadline this node claimed from the shared store's timer set.
    pub fn handle_due(&mut self, key: RecordKey) {
        self.pending.push_back(Input::Due(key));
    }

    /// Another node changed `user`'s record (refreshed with
    /// [`ClusterNode::handle_fresh`] first): watchers here hear of a changed status.
    pub fn handle_presence(&mut self, user: UserId) {
        self.pending.push_back(Input::Presence(user));
    }

    /// Graceful stop (SIGTERM): every socket is told `server-restarting` and closed;
    /// sessions and calls stay in the shared store, and the clients resume on other
    /// nodes at once.
    pub fn handle_shutdown(&mut self) {
        self.pending.push_back(Input::Shutdown);
    }

    /// A logout over HTTP: the answer comes from [`ClusterNode::poll_bye`] with this
    /// ticket, once its transaction was taken.
    pub fn handle_bye_request(&mut self, token: &str, session: &str, secret: &str) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.push_back(Input::Bye {
            ticket,
            token: token.to_owned(),
            session: session.to_owned(),
            secret: secret.to_owned(),
        });
        ticket
    }

    /// Records as the shared store has them (after a [`super::Note::Moved`]): put in
    /// the cache before the next transaction.
    pub fn handle_fresh(&mut self, fresh: Vec<Fresh>) {
        self.fresh.extend(fresh);
    }

    /// Whether inputs wait (or a transaction is in flight).
    pub fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.pending.is_empty() || !self.fresh.is_empty()
    }

    /// The next timer of the engine.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.engine.poll_timeout()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_bye(&mut self) -> Option<(u64, ByeOutcome)> {
        self.byes.pop_front()
    }

    /// Runs the waiting inputs as one transaction and returns what the shared store
    /// must take; `None` when nothing waits, a transaction is in flight, or the
    /// transaction needs nothing from the store (then it is done already).
    pub fn poll_txn(&mut self, now: u64) -> Option<Txn> {
        loop {
            if self.in_flight.is_some() {
                return None;
            }
            self.install_fresh();
            if self.pending.is_empty() {
                return None;
            }
            let take = self.pending.len().min(self.batch_limit);
            let inputs: Vec<Input> = self.pending.drain(..take).collect();
            self.engine.begin_txn();
            for input in &inputs {
                self.apply(input.clone(), now);
            }
            let txn = self.build_txn();
            if txn.is_empty() {
                self.engine.commit_txn(&[]);
                self.release();
                continue;
            }
            self.in_flight = Some(inputs);
            return Some(txn);
        }
    }

    /// The shared store's answer to the transaction from [`ClusterNode::poll_txn`].
    pub fn handle_committed(&mut self, answer: Committed) {
        let Some(inputs) = self.in_flight.take() else {
            return;
        };
        match answer {
            Committed::Taken(written) => {
                self.txns.taken += 1;
                self.engine.commit_txn(&written);
                self.release();
                self.batch_limit = (self.batch_limit * 2).min(MAX_BATCH);
            }
            Committed::Refused(fresh, waiting) => {
                self.txns.refused += 1;
                self.batch_limit = (self.batch_limit / 2).max(1);
                self.engine.rollback_txn();
                self.byes_tentative.clear();
                self.fresh.extend(fresh);
                for input in inputs.into_iter().rev() {
                    self.pending.push_front(input);
                }
                // What waited in the queues goes before anything pushed again.
                for (sid, queue) in waiting.into_iter().rev() {
                    self.pending
                        .push_front(Input::Queued(sid, queue.entries.into_iter().collect()));
                }
            }
        }
    }

    /// The answer to the transaction in flight was lost (the connection to the store
    /// failed, or the answer took too long), so whether it was taken is unknown until
    /// the store is asked with its [`Txn::seq`] (`fence`, which also makes sure it can
    /// no longer be taken later). `applied`: what the store said; `fresh`: the current
    /// values of [`Txn::keys_to_fetch`]. A transaction taken is committed here too, its
    /// outputs released, and the cache takes the store's values (another node may have
    /// written the records since); one not taken runs again on those values. Without
    /// this, the rerun of a `hello` whose first run was taken would make a second
    /// session.
    pub fn handle_answer_lost(&mut self, applied: bool, fresh: Vec<Fresh>) {
        if applied {
            let written = fresh.iter().map(|f| (f.key.clone(), f.version)).collect();
            self.handle_committed(Committed::Taken(written));
        } else {
            self.handle_committed(Committed::Refused(Vec::new(), Vec::new()));
        }
        self.fresh.extend(fresh);
    }

    fn release(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            self.out.push_back(out);
        }
        self.byes.extend(self.byes_tentative.drain(..));
    }

    fn install_fresh(&mut self) {
        for f in std::mem::take(&mut self.fresh) {
            let held = match &f.key {
                RecordKey::Session(sid) => Some((
                    sid.clone(),
                    self.engine.store().peek_session(sid).and_then(|s| s.conn),
                )),
                _ => None,
            };
            self.engine.install(f.key, f.version, f.value);
            if let Some((sid, conn)) = held {
                self.engine.reconcile_session(&sid, conn);
            }
        }
        // Sockets the refresh closed: their outputs go now (no transaction is open).
        while let Some(out) = self.engine.poll_output() {
            self.out.push_back(out);
        }
    }

    fn apply(&mut self, input: Input, now: u64) {
        let e = &mut self.engine;
        match input {
            Input::Open(conn, ip) => e.handle_open_as(conn, ip, now),
            Input::Frame(conn, frame) => e.handle_frame(conn, frame, now),
            Input::BadFrame(conn, bad) => e.handle_bad_frame(conn, bad, now),
            Input::Close(conn) => e.handle_close(conn, now),
            Input::Timeout => e.handle_timeout(now),
            Input::Queued(sid, entries) => e.handle_queued(&sid, entries, now),
            Input::NodeLost(node, sessions) => e.handle_node_lost(node, &sessions, now),
            Input::Due(key) => e.handle_record_due(&key, now),
            Input::Presence(user) => e.handle_presence_changed(&user, now),
            Input::Shutdown => e.shutdown(now),
            Input::Bye {
                ticket,
                token,
                session,
                secret,
            } => {
                let outcome = e.handle_bye_request(&token, &session, &secret, now);
                self.byes_tentative.push((ticket, outcome));
            }
        }
    }

    fn build_txn(&mut self) -> Txn {
        let config = self.engine.config();
        let store = self.engine.store();
        let changes = store.take_changes();
        let keys = changes
            .sessions
            .into_iter()
            .map(RecordKey::Session)
            .chain(changes.calls.into_iter().map(RecordKey::Call))
            .chain(changes.users.into_iter().map(RecordKey::User));
        let writes = keys
            .map(|key| {
                let value = store.record(&key);
                let deadline = value.as_ref().and_then(|v| next_deadline(v, config));
                Write {
                    key,
                    value,
                    deadline,
                }
            })
            .collect();
        let reads = store.txn_reads();
        let (deliveries, direct) = self.engine.take_deliveries();
        let direct = direct
            .into_iter()
            .filter_map(|sid| {
                let taken = self.engine.store().peek_session(&sid)?.queued;
                Some((sid, taken))
            })
            .collect();
        self.txn_seq += 1;
        Txn {
            node: self.no,
            seq: self.txn_seq,
            reads,
            writes,
            deliveries,
            direct,
        }
    }
}
