//! Several server engines sharing one store: any node accepts any socket, a session
//! resumes on any node, and the store is the only authority.
//!
//! Sans-IO, like the engines: a [`ClusterNode`] wraps one [`ServerEngine`] over a
//! [`MemoryStore`] that serves as its cache of the shared store, and speaks to the
//! shared store in [`Txn`]s, whose answers the driver hands back. [`MemoryLedger`] is
//! the shared store in memory, for the simulations and as the reference the Redis
//! implementation follows.
//!
//! # Optimistic transactions
//!
//! A node runs the inputs that arrived (frames, closes, timers, deliveries) against its
//! cache, as one transaction. The engine notes every record it read with the version
//! the cache had ([`MemoryStore::begin_txn`]), and keeps everything it changed
//! undoable (records, sockets, timers, outputs). The node then sends the shared store
//! a [`Txn`]: those reads, the records written, and messages for sessions held by other
//! nodes. The store takes it only if every record read still has the version read,
//! atomically; then the node releases the transaction's outputs. Otherwise the store
//! answers with the current values of the records that changed; the node undoes the
//! transaction, puts those values in its cache and runs the same inputs again.
//!
//! A record the cache never had counts as read at version 0 (absent), so a cold cache
//! is a cache like any other: the first transaction that needs a record another node
//! wrote is refused once and runs again with it. Versions come from one counter of the
//! shared store and are never reused, so a record deleted and written again never
//! looks unchanged.
//!
//! So every decision of the engine (the second invite between two people returns the
//! existing call, crossed invites make one call, busy, accept against cancel, rejoin
//! tokens used once) holds across nodes as it holds in one process: it was made on
//! records that were current when it committed. The engine stays as it is.
//!
//! # Sessions on other nodes
//!
//! A socket id carries its node's number ([`node_of_conn`]), so a session record names
//! the node holding it. Only that node writes a session while it holds it. A message
//! for a session held elsewhere (or by nobody: detached) is not written into its
//! outbox but appended to the session's delivery queue in the shared store, without
//! reading the session (so relaying both ways at once never conflicts). The node
//! holding the session is told ([`Note::Queued`]), takes the entries into the outbox
//! in order and records the last one taken in the session, in one transaction: each is
//! delivered once. A node that attaches a session (a resume) is told of its queue.
//!
//! Presence is cluster-wide: every node hears of every identity whose record another
//! node changed ([`Note::Presence`]), refreshes it and tells its own watchers of a
//! status that changed. Presence reads the cache without making a transaction depend
//! on it (it is advisory, and would otherwise tie every watcher to every user).
//!
//! A resume on another node rewrites the session with the new socket. The node that
//! held it is told ([`Note::Moved`]), refreshes the record and closes its socket as
//! superseded, without detaching anything.
//!
//! # Nodes that die, and timers
//!
//! Each node holds a lease in the shared store and renews it. A node whose lease
//! expired is claimed by one live node ([`MemoryLedger::claim_lost`]), which detaches
//! the dead node's sessions as if their links dropped: grace windows start and the
//! other side is told.
//!
//! Every record with a deadline (a resume window, a grace window, a ring timeout)
//! has it in the shared store's timer set, written with the record. Each node arms its
//! own timers as before; a deadline that passed and that nobody acted on (its node
//! died) is claimed by a live node ([`MemoryLedger::claim_due`]). Whoever fires it,
//! the handler checks the record and the commit checks its version, so it takes effect
//! once.

mod deadline;
mod ledger;
mod node;

pub use deadline::next_deadline;
pub use ledger::{MemoryLedger, Queue};
pub use node::{ClusterNode, TxnCounts};

pub use crate::engine::server::{node_of_conn, NodeNo};
use crate::engine::store::{Record, RecordKey};
use crate::protocol::{ServerMsg, SessionId, UserId};

#[cfg(doc)]
use crate::engine::{server::ServerEngine, store::MemoryStore};

/// One record a transaction writes: its new value (`None`: deleted) and its next
/// deadline, for the shared store's timer set.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub key: RecordKey,
    pub value: Option<Record>,
    pub deadline: Option<u64>,
}

/// What a node asks the shared store to take, atomically, if every read still holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    pub node: NodeNo,
    /// This node's count of transactions offered, from 1: the store keeps the last one
    /// it took per node, so that a node whose answer was lost can ask whether it was
    /// taken ([`MemoryLedger::fence`]).
    pub seq: u64,
    /// Every record read (and every record written: a write reads first), with the
    /// version the node's cache had (0: absent).
    pub reads: Vec<(RecordKey, u64)>,
    pub writes: Vec<Write>,
    /// Messages for the delivery queues of sessions held by other nodes (or by none),
    /// in order.
    pub deliveries: Vec<(SessionId, ServerMsg)>,
    /// Sessions held here that this transaction pushed messages to directly, each
    /// with the last queue entry it has taken: the store takes the transaction only if
    /// nothing waits in their queues, or a message another node sent earlier would
    /// arrive after one sent later.
    pub direct: Vec<(SessionId, u64)>,
}

impl Txn {
    /// What to fetch after the answer to this transaction was lost: the records it
    /// wrote when the store had taken it (`applied`), or those it read when not.
    pub fn keys_to_fetch(&self, applied: bool) -> Vec<RecordKey> {
        if applied {
            self.writes.iter().map(|w| w.key.clone()).collect()
        } else {
            self.reads.iter().map(|(k, _)| k.clone()).collect()
        }
    }

    /// Nothing to check or write: the node commits it without asking.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
            && self.writes.is_empty()
            && self.deliveries.is_empty()
            && self.direct.is_empty()
    }
}

/// A record as the shared store has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Fresh {
    pub key: RecordKey,
    /// 0 when the store has no such record.
    pub version: u64,
    pub value: Option<Record>,
}

/// The shared store's answer to a [`Txn`].
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// Taken: the new version of every record written (0 for a deletion).
    Taken(Vec<(RecordKey, u64)>),
    /// Refused: a record read changed (here are the current values of those that
    /// did), or a session pushed to directly has entries waiting in its queue (here
    /// they are: they go first when the transaction runs again).
    Refused(Vec<Fresh>, Vec<(SessionId, Queue)>),
}

/// What the shared store tells a node after another node's transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Note {
    /// A session this node holds was rewritten by another node (resumed there, or
    /// ended): fetch it, and the node closes its socket if it no longer holds it.
    Moved(SessionId),
    /// The delivery queue of a session this node holds has entries: read them and hand
    /// them to [`ClusterNode::handle_queued`].
    Queued(SessionId),
    /// Another node changed this identity's record: fetch it, and hand it to
    /// [`ClusterNode::handle_presence`] (watchers here may need to hear of a status).
    Presence(UserId),
}
