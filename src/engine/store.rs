//! The server engine's state, behind a store interface.
//!
//! The engine reads and writes sessions and calls only through [`Store`]. The embedded
//! default is [`MemoryStore`]. A persistent store (Redis) implements the same trait as a
//! write-through cache: it answers reads from memory, loads on a miss, and writes the
//! records the engine touched when [`Store::commit`] is called at the end of every
//! engine input. The engine logic does not change between stores.
//!
//! The Redis store (`crate::server::store`) is built the second way round: the engine
//! always works on a [`MemoryStore`], which can track what changed
//! ([`MemoryStore::with_change_tracking`], [`MemoryStore::take_changes`]), and the
//! driver writes those records after every batch of inputs, before it releases the
//! batch's outputs. At start it loads every record ([`Records`]) and rebuilds the
//! memory store from them ([`MemoryStore::from_records`]). The engine stays
//! synchronous, and every read is a memory read.

use super::reliable::{Inbox, Outbox};
use crate::protocol::{
    CallId, CallState, EndReason, LinkState, Peer, PresenceStatus, ServerMsg, SessionId, UserId,
};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Serializes a session's outbox as its last sequence number (see `Session::outbox`).
mod outbox_last_seq {
    use super::{Outbox, ServerMsg};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(outbox: &Outbox<ServerMsg>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(outbox.last_seq())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Outbox<ServerMsg>, D::Error> {
        let last_seq = u64::deserialize(d)?;
        Ok(Outbox::from_parts(last_seq, []))
    }
}

/// A session: what survives a socket drop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub user: Peer,
    /// SHA-256 of the current resume secret.
    pub secret_hash: [u8; 32],
    /// SHA-256 of the secret the last resume presented, still accepted until the client
    /// shows it received the rotated one (its first frame after that welcome): a welcome
    /// lost with its socket must not lose the session.
    pub prev_secret_hash: Option<[u8; 32]>,
    /// The socket currently attached, if any. Socket ids are local to one process: a
    /// session loaded with one set was attached when its process stopped.
    pub conn: Option<u64>,
    /// When the socket went away (the resume window runs from here).
    pub detached_at: Option<u64>,
    /// What the server sent in this session: the last sequence number, and what the
    /// client has not acknowledged yet (for replay), each with the client sequence
    /// acknowledged when it was first sent, sent again with it on replay, so that an
    /// acknowledgement never arrives before the answer it covers.
    /// Serialized as its last sequence number only: a durable store keeps the
    /// unacknowledged messages as a list of their own and appends to it instead of
    /// rewriting it on every message.
    #[serde(with = "outbox_last_seq")]
    pub outbox: Outbox<ServerMsg>,
    /// The highest client sequence handled.
    pub inbox: Inbox,
    /// The replay buffer overflowed: the session can no longer be resumed.
    pub overflowed: bool,
    pub presence: bool,
    /// The browser tab the session was opened from ([`crate::protocol::Hello::tab`]).
    #[serde(default)]
    pub tab: Option<String>,
    pub call_waiting: bool,
    pub created_at: u64,
    /// In a cluster: the last entry of the session's delivery queue (messages other
    /// processes sent it) already taken into the outbox. Taken in the same transaction
    /// that sequences them, so each is delivered once.
    #[serde(default)]
    pub queued: u64,
}

/// One side of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub user: Peer,
    /// The session holding this side (None: ringing callee, or waiting for a rejoin
    /// after its session expired).
    pub session: Option<SessionId>,
    /// SHA-256 of the current rejoin token (active calls only).
    pub token_hash: Option<[u8; 32]>,
    pub link: LinkState,
    /// End of the grace window while `link` is `Reconnecting`.
    pub deadline: Option<u64>,
}

/// A call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: CallId,
    pub kind: Option<String>,
    pub state: CallState,
    pub caller: Slot,
    pub callee: Slot,
    pub grace_ms: u64,
    pub ring_deadline: Option<u64>,
    /// The caller's link dropped while ringing, at this time.
    pub caller_detached_at: Option<u64>,
    pub metadata: Option<serde_json::Value>,
    pub created_at: u64,
}

impl Call {
    /// The slot of `user`, if a participant.
    pub fn slot_of(&self, user: &str) -> Option<&Slot> {
        if self.caller.user.id == user {
            Some(&self.caller)
        } else if self.callee.user.id == user {
            Some(&self.callee)
        } else {
            None
        }
    }

    pub fn slot_of_mut(&mut self, user: &str) -> Option<&mut Slot> {
        if self.caller.user.id == user {
            Some(&mut self.caller)
        } else if self.callee.user.id == user {
            Some(&mut self.callee)
        } else {
            None
        }
    }

    /// The slot of the participant who is not `user`.
    pub fn other_of(&self, user: &str) -> &Slot {
        if self.caller.user.id == user {
            &self.callee
        } else {
            &self.caller
        }
    }

    pub fn slots(&self) -> [&Slot; 2] {
        [&self.caller, &self.callee]
    }
}

/// A call that ended recently, remembered so a returning page learns why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub call: CallId,
    pub reason: EndReason,
    pub at: u64,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub sessions: usize,
    pub sessions_detached: usize,
    pub calls_ringing: usize,
    pub calls_active: usize,
    pub users_online: usize,
}

/// Where the server engine keeps its state. See the module documentation.
pub trait Store: Send {
    fn session(&self, id: &str) -> Option<&Session>;
    fn session_mut(&mut self, id: &str) -> Option<&mut Session>;
    fn put_session(&mut self, session: Session);
    fn take_session(&mut self, id: &str) -> Option<Session>;
    /// A session as the cache has it, without counting as a read of a cluster
    /// transaction: only for routing a message, never for a decision.
    fn peek_session(&self, id: &str) -> Option<&Session> {
        self.session(id)
    }
    /// Sessions of one identity, oldest first.
    fn sessions_of(&self, user: &str) -> &[SessionId];
    fn session_ids(&self) -> Vec<SessionId>;

    fn call(&self, id: &str) -> Option<&Call>;
    fn call_mut(&mut self, id: &str) -> Option<&mut Call>;
    fn put_call(&mut self, call: Call);
    fn take_call(&mut self, id: &str) -> Option<Call>;
    /// Calls (not ended) that `user` takes part in.
    fn calls_of(&self, user: &str) -> &[CallId];
    /// The call (not ended) between two identities, in either direction.
    fn call_between(&self, a: &str, b: &str) -> Option<&CallId>;
    fn call_ids(&self) -> Vec<CallId>;

    /// The status a user chose (`available` / `busy`); default available.
    fn chosen_status(&self, user: &str) -> PresenceStatus;
    fn set_chosen_status(&mut self, user: &str, status: PresenceStatus);
    /// Every identity with at least one session.
    fn online_users(&self) -> Vec<Peer>;
    /// An identity's record as the cache has it, without counting as a read of a
    /// cluster transaction: for presence, which is advisory (a change is pushed again
    /// when the next one comes) and would otherwise make every watcher's transaction
    /// depend on every user.
    fn peek_user(&self, user: &str) -> Option<&UserRecord>;

    fn add_tombstone(&mut self, user: &str, stone: Tombstone);
    fn tombstones(&self, user: &str) -> Vec<Tombstone>;
    /// Forget tombstones older than `before`; true when some remain.
    fn prune_tombstones(&mut self, before: u64) -> bool;

    fn counts(&self) -> StoreCounts;
    /// Called once at the end of every engine input.
    fn commit(&mut self) {}
    /// True when the state outlives the process (then a shutdown keeps calls).
    fn durable(&self) -> bool {
        false
    }
}

/// What the store keeps per identity: its sessions and calls (indexes, oldest first),
/// its chosen presence status and its recent tombstones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub peer: Option<Peer>,
    pub sessions: Vec<SessionId>,
    pub calls: Vec<CallId>,
    pub status: Option<PresenceStatus>,
    pub tombstones: Vec<Tombstone>,
}

impl UserRecord {
    fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.calls.is_empty()
            && self.status.is_none()
            && self.tombstones.is_empty()
    }
}

/// The records that changed (or went away: then the store no longer has them) since
/// the last [`MemoryStore::take_changes`]. Ids only: the driver reads the current
/// records from the store when it writes them, so a record touched by many inputs is
/// written once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub sessions: BTreeSet<SessionId>,
    pub calls: BTreeSet<CallId>,
    pub users: BTreeSet<UserId>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.calls.is_empty() && self.users.is_empty()
    }

    /// Adds `other`'s ids (changes not yet written accumulate).
    pub fn merge(&mut self, other: Changes) {
        self.sessions.extend(other.sessions);
        self.calls.extend(other.calls);
        self.users.extend(other.users);
    }
}

/// Everything a durable store held, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records {
    pub sessions: Vec<Session>,
    pub calls: Vec<Call>,
    pub users: Vec<(UserId, UserRecord)>,
}

/// The name of one record, as a cluster's shared store versions it (see
/// [`crate::engine::cluster`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    Session(SessionId),
    Call(CallId),
    User(UserId),
}

/// One record's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Session(Session),
    Call(Call),
    User(UserRecord),
}

/// What one transaction of a cluster node did to its cache (see
/// [`MemoryStore::begin_txn`]): every record it read, with the version the cache had,
/// and the value every record it changed had before.
#[derive(Debug, Default)]
struct StoreTxn {
    reads: BTreeMap<RecordKey, u64>,
    before: HashMap<RecordKey, Option<Record>>,
}

/// The embedded in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Boxed, as the calls and users: a table keeps room for more entries than it holds, and
    /// that room is a pointer each instead of a whole record (idle sessions are most
    /// of a server's memory).
    sessions: HashMap<SessionId, Box<Session>>,
    calls: HashMap<CallId, Box<Call>>,
    users: HashMap<UserId, Box<UserRecord>>,
    pairs: HashMap<(UserId, UserId), CallId>,
    /// `Some` when a driver persists the changes. A cell because the driver reads them
    /// through the engine's shared borrow of its store, between two inputs.
    changes: Option<RefCell<Changes>>,
    durable: bool,
    /// The version of every cached record in a cluster's shared store (absent: the
    /// record was not there when last seen; see [`crate::engine::cluster`]).
    versions: HashMap<RecordKey, u64>,
    /// `Some` while a cluster node's transaction runs. A cell because reads go through
    /// shared borrows.
    txn: Option<RefCell<StoreTxn>>,
}

const MAX_TOMBSTONES_PER_USER: usize = 16;

fn pair_key(a: &str, b: &str) -> (UserId, UserId) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that records which sessions, calls and users change, for a driver that
    /// persists them ([`MemoryStore::take_changes`]). `durable`: the records outlive the
    /// process, so a graceful shutdown keeps calls ([`Store::durable`]).
    pub fn with_change_tracking(durable: bool) -> Self {
        Self {
            changes: Some(RefCell::default()),
            durable,
            ..Self::default()
        }
    }

    /// Rebuilds a store from loaded records, tracking changes (see
    /// [`MemoryStore::with_change_tracking`]). Sessions and calls are the authority:
    /// a user's index lists only those that exist (in the order the record kept),
    /// and one whose user record is missing is indexed anyway. Calls a user record
    /// lists that no longer exist (they expired while no server ran) are returned,
    /// for the engine to end.
    pub fn from_records(records: Records, durable: bool) -> (Self, Vec<(UserId, CallId)>) {
        let mut store = Self::with_change_tracking(durable);
        let mut vanished = Vec::new();
        let mut sessions: Vec<Session> = records.sessions;
        sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut calls: Vec<Call> = records.calls;
        calls.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let loaded_users = records.users.clone();
        let mut listed: HashMap<UserId, UserRecord> = records.users.into_iter().collect();
        for (user, record) in listed.iter_mut() {
            for call in &record.calls {
                if !calls.iter().any(|c| &c.id == call) {
                    vanished.push((user.clone(), call.clone()));
                }
            }
            record
                .sessions
                .retain(|s| sessions.iter().any(|x| &x.id == s));
            record.calls.retain(|c| calls.iter().any(|x| &x.id == c));
        }
        for (user, record) in listed {
            store.users.insert(user, Box::new(record));
        }
        for session in sessions {
            store.put_session(session);
        }
        for call in calls {
            store.put_call(call);
        }
        store.users.retain(|_, u| !u.is_empty());
        vanished.sort();
        // What was loaded is what the durable store has: nothing to write back, except
        // user records whose indexes listed what expired (or that are now empty).
        store.take_changes();
        let stale: Vec<UserId> = loaded_users
            .into_iter()
            .filter(|(id, before)| store.users.get(id).map(|u| &**u) != Some(before))
            .map(|(id, _)| id)
            .collect();
        store.note(|c| c.users.extend(stale));
        (store, vanished)
    }

    /// Every record, as a durable store would hold them (tests compare a reload with
    /// the live store).
    pub fn records(&self) -> Records {
        let mut records = Records {
            sessions: self.sessions.values().map(|s| (**s).clone()).collect(),
            calls: self.calls.values().map(|c| (**c).clone()).collect(),
            users: self
                .users
                .iter()
                .map(|(id, u)| (id.clone(), (**u).clone()))
                .collect(),
        };
        records.sessions.sort_by(|a, b| a.id.cmp(&b.id));
        records.calls.sort_by(|a, b| a.id.cmp(&b.id));
        records.users.sort_by(|a, b| a.0.cmp(&b.0));
        records
    }

    /// The user record of an identity, if the store has one.
    pub fn user(&self, id: &str) -> Option<&UserRecord> {
        self.users.get(id).map(|u| &**u)
    }

    /// The records changed since the last call (empty unless tracking).
    pub fn take_changes(&self) -> Changes {
        self.changes.as_ref().map(RefCell::take).unwrap_or_default()
    }

    fn note(&mut self, f: impl FnOnce(&mut Changes)) {
        if let Some(c) = self.changes.as_mut() {
            f(c.get_mut());
        }
    }

    // ------------------------------------------------ cluster transactions

    /// Starts a cluster node's transaction: from now on every record read is noted with
    /// the version the cache has, and every record changed keeps its value from before,
    /// until [`MemoryStore::commit_txn`] or [`MemoryStore::rollback_txn`].
    pub fn begin_txn(&mut self) {
        self.txn = Some(RefCell::default());
    }

    /// The records the running transaction read, with the versions they had.
    pub fn txn_reads(&self) -> Vec<(RecordKey, u64)> {
        self.txn.as_ref().map_or_else(Vec::new, |t| {
            t.borrow()
                .reads
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        })
    }

    /// The current value of a record (None: the cache does not have it).
    pub fn record(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Session(id) => self
                .sessions
                .get(id)
                .map(|s| Record::Session((**s).clone())),
            RecordKey::Call(id) => self.calls.get(id).map(|c| Record::Call((**c).clone())),
            RecordKey::User(id) => self.users.get(id).map(|u| Record::User((**u).clone())),
        }
    }

    /// The version of a cached record (0: absent when last seen).
    pub fn version(&self, key: &RecordKey) -> u64 {
        self.versions.get(key).copied().unwrap_or(0)
    }

    /// The shared store took the transaction: `written` are the new versions of the
    /// records it wrote (0 for a deletion).
    pub fn commit_txn(&mut self, written: &[(RecordKey, u64)]) {
        for (key, version) in written {
            self.set_version(key.clone(), *version);
        }
        self.txn = None;
    }

    /// The shared store refused the transaction: every record it changed is as before.
    pub fn rollback_txn(&mut self) {
        if let Some(txn) = self.txn.take() {
            for (key, value) in txn.into_inner().before {
                self.put_raw(key, value);
            }
        }
        self.take_changes();
    }

    /// Puts a record as the shared store has it at `version` (`None`: it has none),
    /// replacing what the cache had, without noting a change.
    pub fn install(&mut self, key: RecordKey, version: u64, value: Option<Record>) {
        self.set_version(key.clone(), version);
        self.put_raw(key, value);
    }

    fn set_version(&mut self, key: RecordKey, version: u64) {
        if version == 0 {
            self.versions.remove(&key);
        } else {
            self.versions.insert(key, version);
        }
    }

    /// Replaces one record as it is, keeping the pair index of calls in step.
    fn put_raw(&mut self, key: RecordKey, value: Option<Record>) {
        match (key, value) {
            (RecordKey::Session(id), Some(Record::Session(s))) => {
                self.sessions.insert(id, Box::new(s));
            }
            (RecordKey::Session(id), _) => {
                self.sessions.remove(&id);
            }
            (RecordKey::Call(id), value) => {
                if let Some(old) = self.calls.remove(&id) {
                    let key = pair_key(&old.caller.user.id, &old.callee.user.id);
                    if self.pairs.get(&key) == Some(&id) {
                        self.pairs.remove(&key);
                    }
                }
                if let Some(Record::Call(c)) = value {
                    self.pairs
                        .insert(pair_key(&c.caller.user.id, &c.callee.user.id), id.clone());
                    self.calls.insert(id, Box::new(c));
                }
            }
            (RecordKey::User(id), Some(Record::User(u))) => {
                self.users.insert(id, Box::new(u));
            }
            (RecordKey::User(id), _) => {
                self.users.remove(&id);
            }
        }
    }

    /// A read in a transaction: note the record and the version the cache has.
    fn read(&self, key: impl FnOnce() -> RecordKey) {
        if let Some(txn) = &self.txn {
            let key = key();
            let version = self.version(&key);
            txn.borrow_mut().reads.entry(key).or_insert(version);
        }
    }

    /// Before a change in a transaction: the record counts as read, and keeps its value
    /// from before for a rollback.
    fn touch(&mut self, key: impl FnOnce() -> RecordKey) {
        if self.txn.is_none() {
            return;
        }
        let key = key();
        let version = self.version(&key);
        let before = self.record(&key);
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let txn = txn.get_mut();
        txn.reads.entry(key.clone()).or_insert(version);
        txn.before.entry(key).or_insert(before);
    }

    fn user_mut(&mut self, user: &str) -> &mut UserRecord {
        self.touch(|| RecordKey::User(user.to_owned()));
        self.note(|c| {
            c.users.insert(user.to_owned());
        });
        self.users.entry(user.to_owned()).or_default()
    }

    fn gc_user(&mut self, user: &str) {
        if self.users.get(user).is_some_and(|u| u.is_empty()) {
            self.users.remove(user);
        }
    }
}

impl Store for MemoryStore {
    fn session(&self, id: &str) -> Option<&Session> {
        self.read(|| RecordKey::Session(id.to_owned()));
        self.sessions.get(id).map(|s| &**s)
    }

    fn peek_session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id).map(|s| &**s)
    }

    fn session_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.touch(|| RecordKey::Session(id.to_owned()));
        if self.sessions.contains_key(id) {
            self.note(|c| {
                c.sessions.insert(id.to_owned());
            });
        }
        self.sessions.get_mut(id).map(|s| &mut **s)
    }

    fn put_session(&mut self, session: Session) {
        self.touch(|| RecordKey::Session(session.id.clone()));
        self.note(|c| {
            c.sessions.insert(session.id.clone());
        });
        let entry = self.user_mut(&session.user.id);
        entry.peer = Some(session.user.clone());
        if !entry.sessions.contains(&session.id) {
            entry.sessions.push(session.id.clone());
        }
        self.sessions.insert(session.id.clone(), Box::new(session));
    }

    fn take_session(&mut self, id: &str) -> Option<Session> {
        self.touch(|| RecordKey::Session(id.to_owned()));
        let session = self.sessions.remove(id)?;
        self.note(|c| {
            c.sessions.insert(id.to_owned());
        });
        let user = session.user.id.clone();
        self.user_mut(&user).sessions.retain(|s| s != id);
        self.gc_user(&user);
        Some(*session)
    }

    fn sessions_of(&self, user: &str) -> &[SessionId] {
        self.read(|| RecordKey::User(user.to_owned()));
        self.users.get(user).map_or(&[], |u| &u.sessions)
    }

    fn session_ids(&self) -> Vec<SessionId> {
        self.sessions.keys().cloned().collect()
    }

    fn call(&self, id: &str) -> Option<&Call> {
        self.read(|| RecordKey::Call(id.to_owned()));
        self.calls.get(id).map(|c| &**c)
    }

    fn call_mut(&mut self, id: &str) -> Option<&mut Call> {
        self.touch(|| RecordKey::Call(id.to_owned()));
        if self.calls.contains_key(id) {
            self.note(|c| {
                c.calls.insert(id.to_owned());
            });
        }
        self.calls.get_mut(id).map(|c| &mut **c)
    }

    fn put_call(&mut self, call: Call) {
        self.touch(|| RecordKey::Call(call.id.clone()));
        self.note(|c| {
            c.calls.insert(call.id.clone());
        });
        for user in [&call.caller.user.id, &call.callee.user.id] {
            let entry = self.user_mut(user);
            if !entry.calls.contains(&call.id) {
                entry.calls.push(call.id.clone());
            }
        }
        self.pairs.insert(
            pair_key(&call.caller.user.id, &call.callee.user.id),
            call.id.clone(),
        );
        self.calls.insert(call.id.clone(), Box::new(call));
    }

    fn take_call(&mut self, id: &str) -> Option<Call> {
        self.touch(|| RecordKey::Call(id.to_owned()));
        let call = self.calls.remove(id)?;
        self.note(|c| {
            c.calls.insert(id.to_owned());
        });
        let key = pair_key(&call.caller.user.id, &call.callee.user.id);
        if self.pairs.get(&key).is_some_and(|c| c == id) {
            self.pairs.remove(&key);
        }
        for user in [&call.caller.user.id, &call.callee.user.id] {
            self.user_mut(user).calls.retain(|c| c != id);
            self.gc_user(user);
        }
        Some(*call)
    }

    fn calls_of(&self, user: &str) -> &[CallId] {
        self.read(|| RecordKey::User(user.to_owned()));
        self.users.get(user).map_or(&[], |u| &u.calls)
    }

    fn call_between(&self, a: &str, b: &str) -> Option<&CallId> {
        if self.txn.is_some() {
            // A cluster node's cache: the pair index knows only the calls cached, so
            // the user record, which lists every call, is the authority, and each call
            // it lists is read (one the cache lacks is fetched when the transaction is
            // refused).
            self.read(|| RecordKey::User(b.to_owned()));
            return self.calls_of(a).iter().find(|id| {
                self.read(|| RecordKey::Call((*id).clone()));
                self.calls.get(*id).is_some_and(|c| {
                    let (x, y) = (&c.caller.user.id, &c.callee.user.id);
                    (x == a && y == b) || (x == b && y == a)
                })
            });
        }
        self.pairs.get(&pair_key(a, b))
    }

    fn call_ids(&self) -> Vec<CallId> {
        self.calls.keys().cloned().collect()
    }

    fn chosen_status(&self, user: &str) -> PresenceStatus {
        self.read(|| RecordKey::User(user.to_owned()));
        self.users
            .get(user)
            .and_then(|u| u.status)
            .unwrap_or(PresenceStatus::Available)
    }

    fn set_chosen_status(&mut self, user: &str, status: PresenceStatus) {
        self.user_mut(user).status = match status {
            PresenceStatus::Available => None,
            other => Some(other),
        };
        self.gc_user(user);
    }

    fn peek_user(&self, user: &str) -> Option<&UserRecord> {
        self.users.get(user).map(|u| &**u)
    }

    fn online_users(&self) -> Vec<Peer> {
        self.users
            .values()
            .filter(|u| !u.sessions.is_empty())
            .filter_map(|u| u.peer.clone())
            .collect()
    }

    fn add_tombstone(&mut self, user: &str, stone: Tombstone) {
        let list = &mut self.user_mut(user).tombstones;
        list.push(stone);
        if list.len() > MAX_TOMBSTONES_PER_USER {
            list.remove(0);
        }
    }

    fn tombstones(&self, user: &str) -> Vec<Tombstone> {
        self.read(|| RecordKey::User(user.to_owned()));
        self.users
            .get(user)
            .map(|u| u.tombstones.clone())
            .unwrap_or_default()
    }

    fn prune_tombstones(&mut self, before: u64) -> bool {
        if self.txn.is_some() {
            let stale: Vec<UserId> = self
                .users
                .iter()
                .filter(|(_, u)| u.tombstones.iter().any(|t| t.at < before))
                .map(|(id, _)| id.clone())
                .collect();
            for id in stale {
                self.touch(|| RecordKey::User(id));
            }
        }
        let mut emptied = Vec::new();
        let mut changed = Vec::new();
        let mut remain = false;
        for (id, u) in self.users.iter_mut() {
            let had = u.tombstones.len();
            u.tombstones.retain(|t| t.at >= before);
            if u.tombstones.len() != had {
                changed.push(id.clone());
            }
            remain |= !u.tombstones.is_empty();
            if u.is_empty() {
                emptied.push(id.clone());
            }
        }
        for id in emptied {
            self.users.remove(&id);
        }
        self.note(|c| c.users.extend(changed));
        remain
    }

    fn durable(&self) -> bool {
        self.durable
    }

    fn counts(&self) -> StoreCounts {
        let mut c = StoreCounts {
            sessions: self.sessions.len(),
            ..Default::default()
        };
        c.sessions_detached = self.sessions.values().filter(|s| s.conn.is_none()).count();
        for call in self.calls.values() {
            match call.state {
                CallState::Ringing => c.calls_ringing += 1,
                CallState::Active => c.calls_active += 1,
                CallState::Ended => {}
            }
        }
        c.users_online = self
            .users
            .values()
            .filter(|u| !u.sessions.is_empty())
            .count();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> Peer {
        Peer {
            id: id.into(),
            name: id.into(),
        }
    }

    fn session(id: &str, user: &str, at: u64) -> Session {
        Session {
            id: id.into(),
            user: peer(user),
            secret_hash: [7; 32],
            prev_secret_hash: None,
            conn: Some(1),
            detached_at: None,
            outbox: Outbox::new(),
            inbox: Inbox::new(),
            overflowed: false,
            presence: false,
            tab: None,
            call_waiting: false,
            created_at: at,
            queued: 0,
        }
    }

    fn slot(user: &str, session: Option<&str>) -> Slot {
        Slot {
            user: peer(user),
            session: session.map(str::to_owned),
            token_hash: None,
            link: LinkState::Connected,
            deadline: None,
        }
    }

    fn call(id: &str, a: &str, b: &str) -> Call {
        Call {
            id: id.into(),
            kind: None,
            state: CallState::Active,
            caller: slot(a, Some("s1")),
            callee: slot(b, Some("s2")),
            grace_ms: 1_000,
            ring_deadline: None,
            caller_detached_at: None,
            metadata: None,
            created_at: 5,
        }
    }

    #[test]
    fn an_untracked_store_reports_no_changes() {
        let mut store = MemoryStore::new();
        store.put_session(session("s1", "alice", 1));
        assert!(store.take_changes().is_empty());
        assert!(!store.durable());
    }

    #[test]
    fn tracking_names_every_touched_record_once_and_then_forgets() {
        let mut store = MemoryStore::with_change_tracking(true);
        assert!(store.durable());
        store.put_session(session("s1", "alice", 1));
        store.put_session(session("s2", "bob", 2));
        store.put_call(call("c1", "alice", "bob"));
        let changes = store.take_changes();
        assert_eq!(changes.sessions, BTreeSet::from(["s1".into(), "s2".into()]));
        assert_eq!(changes.calls, BTreeSet::from(["c1".into()]));
        assert_eq!(
            changes.users,
            BTreeSet::from(["alice".into(), "bob".into()])
        );
        assert!(store.take_changes().is_empty());

        // Reads change nothing; a write through `_mut` names the record.
        let _ = store.session("s1");
        let _ = store.call("c1");
        assert!(store.take_changes().is_empty());
        store.session_mut("s1").unwrap().inbox.accept(1);
        store.call_mut("c1").unwrap().grace_ms = 9;
        let changes = store.take_changes();
        assert_eq!(changes.sessions, BTreeSet::from(["s1".into()]));
        assert_eq!(changes.calls, BTreeSet::from(["c1".into()]));
        assert!(changes.users.is_empty());

        // Deletions are changes too: the store no longer has the record.
        store.take_call("c1");
        store.take_session("s2");
        let changes = store.take_changes();
        assert!(changes.calls.contains("c1") && store.call("c1").is_none());
        assert!(changes.sessions.contains("s2") && store.session("s2").is_none());
        assert!(changes.users.contains("bob") && store.user("bob").is_none());

        store.add_tombstone(
            "alice",
            Tombstone {
                call: "c1".into(),
                reason: EndReason::Hangup,
                at: 10,
            },
        );
        assert_eq!(store.take_changes().users, BTreeSet::from(["alice".into()]));
        assert!(!store.prune_tombstones(11));
        assert_eq!(store.take_changes().users, BTreeSet::from(["alice".into()]));
    }

    #[test]
    fn a_store_rebuilt_from_its_records_is_the_same_store() {
        let mut store = MemoryStore::with_change_tracking(true);
        store.put_session(session("s1", "alice", 1));
        store.put_session(session("s3", "alice", 3));
        store.put_session(session("s2", "bob", 2));
        store.put_call(call("c1", "alice", "bob"));
        store.set_chosen_status("carol", PresenceStatus::Busy);
        let (rebuilt, vanished) = MemoryStore::from_records(store.records(), true);
        assert!(vanished.is_empty());
        assert_eq!(rebuilt.records(), store.records());
        assert_eq!(rebuilt.sessions_of("alice"), ["s1", "s3"]);
        assert_eq!(rebuilt.call_between("bob", "alice"), Some(&"c1".to_owned()));
        assert_eq!(rebuilt.chosen_status("carol"), PresenceStatus::Busy);
        assert!(rebuilt.take_changes().is_empty());
    }

    #[test]
    fn records_that_expired_are_left_out_of_the_indexes_and_vanished_calls_reported() {
        let mut store = MemoryStore::with_change_tracking(true);
        store.put_session(session("s1", "alice", 1));
        store.put_session(session("s2", "bob", 2));
        store.put_call(call("c1", "alice", "bob"));
        let mut records = store.records();
        records.calls.clear();
        records.sessions.retain(|s| s.id == "s1");
        let (rebuilt, vanished) = MemoryStore::from_records(records, true);
        assert_eq!(
            vanished,
            vec![
                ("alice".to_owned(), "c1".to_owned()),
                ("bob".to_owned(), "c1".to_owned())
            ]
        );
        assert!(rebuilt.calls_of("alice").is_empty());
        assert_eq!(rebuilt.call_between("alice", "bob"), None);
        assert_eq!(rebuilt.sessions_of("alice"), ["s1"]);
        assert!(rebuilt.user("bob").is_none());
        // Both user records must be written again (bob's deleted).
        assert_eq!(
            rebuilt.take_changes().users,
            BTreeSet::from(["alice".into(), "bob".into()])
        );
    }
}
