//! The server's state in Redis.
//!
//! # Keys
//!
//! Every record is one key, named with a hash tag so that a record and its parts stay
//! in one Redis Cluster slot (and so that several processes can later lock, watch and
//! script one record at a time):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `hf:{s:<session>}` | string (JSON) | a session without its replay buffer: identity, resume-secret hashes, both sequence counters, the socket it had (process-local: loaded as dropped), when it detached, presence choices |
//! | `hf:{s:<session>}:out` | list (JSON `{seq, ack, msg}`) | the session's unacknowledged messages, oldest first: appended (`RPUSH`) and trimmed (`LTRIM`) instead of rewritten |
//! | `hf:{c:<call>}` | string (JSON) | a call: state, kind, metadata, both slots (identity, session, rejoin-token hash, link, grace deadline), ring deadline |
//! | `hf:{u:<user>}` | string (JSON) | an identity: its sessions and calls (indexes), chosen presence status, recent tombstones |
//! | `hf:writer` | string | the lease of the one process that writes the store: `<token> <node>`, expiring unless renewed (see [`super::lease`]) |
//!
//! User ids are escaped (`%`, `{`, `}` and anything outside printable ASCII as `%XX`)
//! so that no id can end a hash tag early.
//!
//! Timers are not keys: each is an absolute deadline inside the record it belongs to
//! (`detached_at` + resume window, a slot's grace `deadline`, `ring_deadline`,
//! `caller_detached_at` + ring-detach grace, a tombstone's `at` + the longest window),
//! and the engine re-arms them from the records when it is rebuilt.
//!
//! # Writes
//!
//! One batch of changes is one `MULTI … EXEC`, or, for a server (which holds the
//! store's lease, `<ns>writer`: see [`super::lease`]), one script that checks the lease
//! and then runs the same commands: either every record of the batch is written or
//! none is. Every key whose life a window bounds gets an absolute expiry
//! (`SET … PXAT`, `PEXPIREAT`) at its deadline plus a slack of the longest window, so a
//! server that was down past a deadline still finds the record and ends the call with
//! the right reason, and Redis never keeps dead state for long. What no window bounds (a
//! session with a socket, a call with both people connected, a user with sessions or
//! calls or a chosen status) has no expiry (`SET` without `PXAT`, `PERSIST`).

use super::lease::Lease;
use crate::engine::reliable::{Outbox, Unacked};
use crate::engine::server::ServerConfig;
use crate::engine::store::{Call, Changes, MemoryStore, Records, Session, Store, UserRecord};
use crate::protocol::{CallState, ServerMsg, SessionId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Pipeline, RedisError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Why the Redis store failed.
#[derive(Debug)]
pub enum RedisStoreError {
    /// Could not reach Redis (or it answered with an error).
    Redis(RedisError),
    /// A record is not what this version writes.
    Corrupt { key: String, why: String },
}

impl std::fmt::Display for RedisStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisStoreError::Redis(e) => write!(f, "redis: {e}"),
            RedisStoreError::Corrupt { key, why } => write!(f, "record {key}: {why}"),
        }
    }
}

impl std::error::Error for RedisStoreError {}

impl From<RedisError> for RedisStoreError {
    fn from(e: RedisError) -> Self {
        RedisStoreError::Redis(e)
    }
}

/// The windows that bound record lifetimes (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub resume_window_ms: u64,
    pub ring_detach_grace_ms: u64,
    /// How long a record outlives its deadline (the longest window): room for a
    /// server that was down at the deadline to still act on it.
    pub slack_ms: u64,
    /// Added to every expiry: Redis's clock minus the engine's (0 for a server; tests
    /// on a simulated clock that runs years behind set it).
    pub clock_offset_ms: u64,
}

impl Windows {
    pub fn from_config(config: &ServerConfig) -> Self {
        let longest = config
            .grace_by_kind
            .values()
            .copied()
            .chain([config.default_grace_ms, config.resume_window_ms])
            .max()
            .unwrap_or(0);
        Self {
            resume_window_ms: config.resume_window_ms,
            ring_detach_grace_ms: config.ring_detach_grace_ms,
            slack_ms: longest,
            clock_offset_ms: 0,
        }
    }

    fn expire_at(&self, deadline: u64) -> u64 {
        deadline + self.slack_ms + self.clock_offset_ms
    }

    /// Epoch ms after which Redis may forget the session; None while a socket holds it.
    pub fn session_expiry(&self, s: &Session) -> Option<u64> {
        if s.conn.is_some() {
            return None;
        }
        s.detached_at
            .map(|at| self.expire_at(at + self.resume_window_ms))
    }

    /// Epoch ms after which Redis may forget the call; None while nothing bounds it.
    pub fn call_expiry(&self, c: &Call) -> Option<u64> {
        let deadline = match c.state {
            CallState::Ringing => {
                let detach = c
                    .caller_detached_at
                    .map(|at| at + self.ring_detach_grace_ms);
                c.ring_deadline.into_iter().chain(detach).max()
            }
            // The call ends at the first grace deadline that passes.
            CallState::Active => c.slots().iter().filter_map(|s| s.deadline).min(),
            CallState::Ended => None,
        };
        deadline.map(|d| self.expire_at(d))
    }

    /// A user record with only tombstones lives as long as its newest one counts.
    pub fn user_expiry(&self, u: &UserRecord) -> Option<u64> {
        if !u.sessions.is_empty() || !u.calls.is_empty() || u.status.is_some() {
            return None;
        }
        u.tombstones.iter().map(|t| self.expire_at(t.at)).max()
    }
}

/// Escapes an id for use inside a hash tag.
fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'{' | b'}') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The prefix of every key a server writes (see [`RedisStore::with_namespace`]).
pub const DEFAULT_NAMESPACE: &str = "hf:";

/// Key names under one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    ns: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            ns: DEFAULT_NAMESPACE.into(),
        }
    }
}

impl Keys {
    pub fn session(&self, id: &str) -> String {
        format!("{}{{s:{}}}", self.ns, escape(id))
    }

    pub fn replay(&self, id: &str) -> String {
        format!("{}{{s:{}}}:out", self.ns, escape(id))
    }

    pub fn call(&self, id: &str) -> String {
        format!("{}{{c:{}}}", self.ns, escape(id))
    }

    pub fn user(&self, id: &str) -> String {
        format!("{}{{u:{}}}", self.ns, escape(id))
    }

    /// Keys under namespace `ns` (see [`RedisStore::with_namespace`]).
    pub fn with_namespace(ns: &str) -> Self {
        Self { ns: ns.to_owned() }
    }

    /// The namespace every key starts with.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The record a key names (the key of a session, call or user itself).
    pub fn parse(&self, key: &str) -> Option<crate::engine::store::RecordKey> {
        use crate::engine::store::RecordKey;
        let tagged = key
            .strip_prefix(&self.ns)?
            .strip_prefix('{')?
            .strip_suffix('}')?;
        let (kind, id) = tagged.split_once(':')?;
        let id = unescape(id)?;
        match kind {
            "s" => Some(RecordKey::Session(id)),
            "c" => Some(RecordKey::Call(id)),
            "u" => Some(RecordKey::User(id)),
            _ => None,
        }
    }
}

/// The id [`escape`] made `escaped` from.
fn unescape(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut it = escaped.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

pub fn session_key(id: &str) -> String {
    Keys::default().session(id)
}

pub fn replay_key(id: &str) -> String {
    Keys::default().replay(id)
}

pub fn call_key(id: &str) -> String {
    Keys::default().call(id)
}

pub fn user_key(id: &str) -> String {
    Keys::default().user(id)
}

/// A user record as stored: the id goes inside, so loading needs no unescaping.
#[derive(Serialize, Deserialize)]
struct StoredUser<T> {
    id: String,
    #[serde(flatten)]
    record: T,
}

/// Seqs of the first and last entry of a replay list as written (`None`: empty).
type ListRange = Option<(u64, u64)>;

/// One atomic write's worth of changes, built from the store between two inputs and
/// written later (while the engine goes on).
pub struct Batch {
    pipe: Pipeline,
    /// Written only while this lease is ours (see [`super::lease`]).
    fence: Option<Lease>,
    /// The changes it writes (merged back into the next batch if it fails).
    pub changes: Changes,
    /// Records it writes (a deletion counts).
    pub records: usize,
    lists: Vec<(SessionId, Option<ListRange>)>,
    durable_in: Vec<(SessionId, Option<u64>)>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("changes", &self.changes)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Writes the batch; returns how long Redis took.
    pub async fn execute(&self, conn: &mut ConnectionManager) -> Result<Duration, RedisError> {
        let started = Instant::now();
        match &self.fence {
            None => self.pipe.query_async::<()>(conn).await?,
            Some(lease) => {
                lease
                    .fenced(self.pipe.cmd_iter())
                    .invoke_async::<()>(conn)
                    .await?
            }
        }
        Ok(started.elapsed())
    }
}

/// The Redis side of a durable store: builds batches from the engine's
/// [`MemoryStore`] and remembers what Redis holds (replay-list ranges, the last client
/// sequence each session has durably handled).
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    windows: Windows,
    /// What each replay list holds in Redis. Absent: unknown (never written, or a
    /// write failed without telling whether it applied), so the next write replaces
    /// the whole list.
    lists: HashMap<SessionId, ListRange>,
    /// The client sequence each session's durable record has handled: the most the
    /// server may acknowledge before the batch in flight is written.
    durable_in: HashMap<SessionId, u64>,
    /// Batches are fenced by this lease ([`RedisStore::with_lease`]).
    lease: Option<Lease>,
}

impl RedisStore {
    /// Connects (failing at once when Redis cannot be reached; the caller retries).
    /// Operations time out after `timeout` so that an unreachable Redis is noticed.
    pub async fn connect(
        url: &str,
        windows: Windows,
        timeout: Duration,
    ) -> Result<Self, RedisStoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            // Reconnects happen in the background; the actor does its own backoff
            // between writes, so the manager need not retry for long.
            .set_number_of_retries(1)
            .set_factor(50)
            .set_max_delay(1_000);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            keys: Keys::default(),
            windows,
            lists: HashMap::new(),
            durable_in: HashMap::new(),
            lease: None,
        })
    }

    /// Every batch from now on is written only while `lease` is ours: one script that
    /// checks the lease first, instead of `MULTI … EXEC` (see [`super::lease`]).
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The namespace every key of this store starts with.
    pub fn ns(&self) -> &str {
        self.keys.ns()
    }

    /// The lease key under this store's namespace.
    pub fn lease_key(&self) -> String {
        format!("{}writer", self.keys.ns)
    }

    /// Keys under `ns` instead of [`DEFAULT_NAMESPACE`] (several deployments, or test
    /// runs, on one Redis). `ns` must not contain glob characters (`*?[]`).
    pub fn with_namespace(mut self, ns: &str) -> Self {
        self.keys = Keys { ns: ns.to_owned() };
        self
    }

    /// A handle to the connection for writing a batch from another task.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The highest client sequence of `session` that Redis has.
    pub fn durable_in_seq(&self, session: &str) -> u64 {
        self.durable_in.get(session).copied().unwrap_or(0)
    }

    /// Loads every record. Records that do not parse are skipped with a warning (a
    /// server that refuses to start over one bad record ends every call).
    pub async fn load(&mut self) -> Result<Records, RedisStoreError> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}{{*", self.keys.ns))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut records = Records::default();
        let mut sessions: Vec<Session> = Vec::new();
        for chunk in keys.chunks(512) {
            let mut pipe = redis::pipe();
            for key in chunk {
                if key.ends_with("}:out") {
                    pipe.cmd("LRANGE").arg(key).arg(0).arg(-1);
                } else {
                    pipe.cmd("GET").arg(key);
                }
            }
            let values: Vec<redis::Value> = pipe.query_async(&mut self.conn).await?;
            for (key, value) in chunk.iter().zip(values) {
                if key.ends_with("}:out") {
                    continue; // read below with its session
                }
                let Some(text) = redis::from_redis_value::<Option<String>>(&value)
                    .ok()
                    .flatten()
                else {
                    continue; // expired between SCAN and GET
                };
                let kind = key.strip_prefix(&self.keys.ns).unwrap_or(key);
                let parsed = if kind.starts_with("{s:") {
                    serde_json::from_str::<Session>(&text).map(|s| sessions.push(s))
                } else if kind.starts_with("{c:") {
                    serde_json::from_str::<Call>(&text).map(|c| records.calls.push(c))
                } else if kind.starts_with("{u:") {
                    serde_json::from_str::<StoredUser<UserRecord>>(&text)
                        .map(|u| records.users.push((u.id, u.record)))
                } else {
                    Ok(())
                };
                if let Err(e) = parsed {
                    tracing::warn!(%key, error = %e, "skipping a record that does not parse");
                }
            }
        }
        for chunk in sessions.chunks(512) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.cmd("LRANGE")
                    .arg(self.keys.replay(&s.id))
                    .arg(0)
                    .arg(-1);
            }
            let lists: Vec<Vec<String>> = pipe.query_async(&mut self.conn).await?;
            for (s, list) in chunk.iter().zip(lists) {
                let mut session = s.clone();
                let mut unacked = Vec::with_capacity(list.len());
                for entry in list {
                    match serde_json::from_str::<Unacked<ServerMsg>>(&entry) {
                        Ok(e) => unacked.push(e),
                        Err(e) => {
                            return Err(RedisStoreError::Corrupt {
                                key: self.keys.replay(&s.id),
                                why: e.to_string(),
                            })
                        }
                    }
                }
                let range = unacked
                    .first()
                    .zip(unacked.last())
                    .map(|(first, last)| (first.seq, last.seq));
                self.lists.insert(session.id.clone(), range);
                self.durable_in
                    .insert(session.id.clone(), session.inbox.last_seq());
                session.outbox = Outbox::from_parts(session.outbox.last_seq(), unacked);
                records.sessions.push(session);
            }
        }
        Ok(records)
    }

    /// Builds the batch that writes `changes` as `store` has them now.
    ///
    /// Batches may be pipelined: the replay-list ranges are taken to be what Redis
    /// holds once every batch built so far has applied (batches are written in order
    /// on one connection). A batch that fails makes the lists it touched unknown again
    /// ([`RedisStore::failed`]), and the next batch replaces them whole.
    pub fn build(&mut self, store: &MemoryStore, changes: Changes) -> Batch {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut lists = Vec::new();
        let mut durable_in = Vec::new();
        for id in &changes.sessions {
            let key = self.keys.session(id);
            let list = self.keys.replay(id);
            let Some(s) = store.session(id) else {
                pipe.del(&[key, list]).ignore();
                lists.push((id.clone(), None));
                durable_in.push((id.clone(), None));
                continue;
            };
            let expiry = self.windows.session_expiry(s);
            let json = serde_json::to_string(s).expect("a session serializes");
            let set = pipe.cmd("SET").arg(&key).arg(json);
            if let Some(at) = expiry {
                set.arg("PXAT").arg(at);
            }
            set.ignore();
            let range = s
                .outbox
                .replay()
                .next()
                .zip(s.outbox.replay().last())
                .map(|(first, last)| (first.seq, last.seq));
            let entry =
                |e: &Unacked<ServerMsg>| serde_json::to_string(e).expect("a message serializes");
            match (self.lists.get(id), range) {
                (Some(Some((lo, hi))), Some((new_lo, new_hi)))
                    if new_lo >= *lo && new_hi >= *hi && new_lo <= hi + 1 =>
                {
                    // The usual case: acknowledged entries leave the front, new ones
                    // join the back.
                    if new_lo > *lo {
                        pipe.ltrim(&list, (new_lo - lo) as isize, -1).ignore();
                    }
                    let fresh: Vec<String> = s
                        .outbox
                        .replay()
                        .filter(|e| e.seq > *hi)
                        .map(entry)
                        .collect();
                    if !fresh.is_empty() {
                        pipe.rpush(&list, fresh).ignore();
                    }
                }
                (Some(None), Some(_)) | (None, Some(_)) | (Some(Some(_)), Some(_)) => {
                    let all: Vec<String> = s.outbox.replay().map(entry).collect();
                    pipe.del(&list).ignore();
                    pipe.rpush(&list, all).ignore();
                }
                (_, None) => {
                    pipe.del(&list).ignore();
                }
            }
            if range.is_some() {
                match expiry {
                    Some(at) => pipe.cmd("PEXPIREAT").arg(&list).arg(at).ignore(),
                    None => pipe.persist(&list).ignore(),
                };
            }
            lists.push((id.clone(), Some(range)));
            durable_in.push((id.clone(), Some(s.inbox.last_seq())));
        }
        for id in &changes.calls {
            let key = self.keys.call(id);
            match store.call(id) {
                Some(c) => {
                    let json = serde_json::to_string(c).expect("a call serializes");
                    let set = pipe.cmd("SET").arg(&key).arg(json);
                    if let Some(at) = self.windows.call_expiry(c) {
                        set.arg("PXAT").arg(at);
                    }
                    set.ignore();
                }
                None => {
                    pipe.del(&key).ignore();
                }
            }
        }
        for id in &changes.users {
            let key = self.keys.user(id);
            match store.user(id) {
                Some(u) => {
                    let stored = StoredUser {
                        id: id.clone(),
                        record: u,
                    };
                    let json = serde_json::to_string(&stored).expect("a user serializes");
                    let set = pipe.cmd("SET").arg(&key).arg(json);
                    if let Some(at) = self.windows.user_expiry(u) {
                        set.arg("PXAT").arg(at);
                    }
                    set.ignore();
                }
                None => {
                    pipe.del(&key).ignore();
                }
            }
        }
        let records = changes.sessions.len() + changes.calls.len() + changes.users.len();
        for (id, range) in &lists {
            match range {
                Some(r) => self.lists.insert(id.clone(), *r),
                None => self.lists.remove(id),
            };
        }
        Batch {
            pipe,
            fence: self.lease.clone(),
            changes,
            records,
            lists,
            durable_in,
        }
    }

    /// Redis answered OK to `batch` (and to every batch before it): the client
    /// sequences it holds are durable.
    pub fn written(&mut self, batch: &Batch) {
        for (id, seq) in &batch.durable_in {
            match seq {
                Some(s) => self.durable_in.insert(id.clone(), *s),
                None => self.durable_in.remove(id),
            };
        }
    }

    /// `batch` failed, or a batch before it did: whether it applied is unknown, so the
    /// replay lists it touched are replaced whole next time.
    pub fn failed(&mut self, batch: &Batch) {
        for (id, _) in &batch.lists {
            self.lists.remove(id);
        }
    }

    /// Builds, writes and records one batch (for drivers that wait for each write).
    pub async fn write(
        &mut self,
        store: &MemoryStore,
        changes: Changes,
    ) -> Result<Duration, RedisStoreError> {
        let batch = self.build(store, changes);
        match batch.execute(&mut self.conn).await {
            Ok(took) => {
                self.written(&batch);
                Ok(took)
            }
            Err(e) => {
                self.failed(&batch);
                Err(e.into())
            }
        }
    }

    /// Deletes every Holdfast key (tests that reuse one Redis between runs).
    pub async fn clear(&mut self) -> Result<(), RedisStoreError> {
        let keys: Vec<String> = self.conn.keys(format!("{}{{*", self.keys.ns)).await?;
        if !keys.is_empty() {
            let _: () = self.conn.del(keys).await?;
        }
        self.lists.clear();
        self.durable_in.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_end_a_hash_tag() {
        assert_eq!(user_key("alice"), "hf:{u:alice}");
        assert_eq!(user_key("a}b{c%"), "hf:{u:a%7Db%7Bc%25}");
        assert_eq!(user_key("é"), "hf:{u:%C3%A9}");
        assert_eq!(replay_key("ab12"), "hf:{s:ab12}:out");
    }

    #[test]
    fn a_key_names_its_record_again() {
        use crate::engine::store::RecordKey;
        let keys = Keys::default();
        for id in ["alice", "a}b{c%", "é", "x:y"] {
            assert_eq!(keys.parse(&keys.user(id)), Some(RecordKey::User(id.into())));
            assert_eq!(keys.parse(&keys.call(id)), Some(RecordKey::Call(id.into())));
            assert_eq!(
                keys.parse(&keys.session(id)),
                Some(RecordKey::Session(id.into()))
            );
        }
        assert_eq!(keys.parse("hf:{s:ab}:out"), None);
        assert_eq!(keys.parse("other:{s:ab}"), None);
    }
}
