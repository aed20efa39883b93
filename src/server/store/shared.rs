//! The cluster's shared store in Redis: what [`crate::engine::cluster::MemoryLedger`]
//! does in memory, one script per operation, so that any number of server processes
//! on one Redis serve as one (see [`crate::engine::cluster`] for the design).
//!
//! # Keys
//!
//! The records are those of the single-process store ([`super::redis`]): one JSON
//! string per session, call and user, a session's unacknowledged messages in a list
//! `…:out`. Next to each record:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<record>:v` | string | the record's version, from `<ns>version` (one counter for all, never reused) |
//! | `{s:…}:node` | string | the number of the node holding the session's socket |
//! | `{s:…}:q`, `{s:…}:qn` | list, counter | the session's delivery queue (`<no> <message JSON>`, oldest first) and the last number handed out |
//! | `{s:…}:ovf` | string | the queue overflowed: the session can no longer be resumed |
//! | `<ns>nodes` | sorted set | live nodes by lease end (ms) |
//! | `<ns>node:<no>:sessions` | set | sessions attached to a node (for whoever claims it when it dies) |
//! | `<ns>timers` | sorted set | records by their next deadline (ms) |
//! | `<ns>node-seq` | counter | the last node number handed out |
//! | `<ns>node:<no>:txn` | string | the last transaction of a node taken (or fenced after its answer was lost), an hour long |
//! | `<ns>online` | set | identities with at least one session (a node starts with their records) |
//! | `<ns>calls` | set | the keys of calls not ended (for the cluster's `/metrics`) |
//!
//! What a node must hear of (a session moved away, messages queued for a session it
//! holds, an identity's record changed: presence) goes into the set
//! `<ns>node:<no>:notes` (`m <session>`, `q <session>`, `p <user>`), and
//! an empty message on the pub/sub channel `<ns>node:<no>` rings its bell. The set is
//! the mailbox, so a note is never lost while a subscription reconnects; the node also
//! looks at it now and then without the bell.

use super::redis::{Keys, Windows};
use crate::engine::cluster::{Committed, Fresh, NodeNo, Note, Queue, Txn};
use crate::engine::reliable::{Outbox, Unacked};
use crate::engine::server::node_of_conn;
use crate::engine::store::{Call, Record, RecordKey, Session, UserRecord};
use crate::protocol::{ServerMsg, SessionId};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Takes a transaction if every record it read has the version read. ARGV: the
/// transaction (JSON), the namespace, the queue limit. Answers `{1, key, version, …}`
/// for the records written, or `{0, key, version, value, out, overflowed, …}` with the
/// current values of the records that changed.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = cjson.decode(ARGV[1])
local ns = ARGV[2]
local limit = tonumber(ARGV[3])
local null = cjson.null
local function ver(k) return tonumber(redis.call('GET', k .. ':v') or '0') end
-- A transaction its node was told was not taken (FENCE) never is.
local last_txn = ns .. 'node:' .. t.node .. ':txn'
if tonumber(redis.call('GET', last_txn) or '0') >= t.seq then return {2} end
local changed = {}
for _, r in ipairs(t.reads) do
  if ver(r[1]) ~= r[2] then changed[#changed + 1] = r[1] end
end
local waiting = {}
for _, d in ipairs(t.direct) do
  local last = redis.call('LINDEX', d[1] .. ':q', -1)
  if last and tonumber(string.match(last, '^(%d+) ')) > d[3] then
    waiting[#waiting + 1] = d[2]
    waiting[#waiting + 1] = redis.call('LRANGE', d[1] .. ':q', 0, -1)
  end
end
if #changed > 0 or #waiting > 0 then
  local recs = {}
  for _, k in ipairs(changed) do
    recs[#recs + 1] = k
    recs[#recs + 1] = tostring(ver(k))
    recs[#recs + 1] = redis.call('GET', k) or ''
    recs[#recs + 1] = redis.call('LRANGE', k .. ':out', 0, -1)
    recs[#recs + 1] = redis.call('EXISTS', k .. ':ovf')
  end
  return {0, recs, waiting}
end
local function note(holder, kind, sid)
  redis.call('SADD', ns .. 'node:' .. holder .. ':notes', kind .. ' ' .. sid)
  redis.call('PUBLISH', ns .. 'node:' .. holder, '')
end
local me = tostring(t.node)
local others = nil
-- Every other live node hears of every identity whose record changed (presence).
local function presence(uid)
  if others == nil then others = redis.call('ZRANGE', ns .. 'nodes', 0, -1) end
  for _, n in ipairs(others) do
    if n ~= me then note(n, 'p', uid) end
  end
end
local written = {1}
for _, w in ipairs(t.writes) do
  local k = w.k
  local before = false
  if w.sid ~= null then before = redis.call('GET', k .. ':node') end
  if w.v ~= null then
    local v = redis.call('INCR', ns .. 'version')
    if w.px ~= null then
      redis.call('SET', k, w.v, 'PXAT', w.px)
      redis.call('SET', k .. ':v', v, 'PXAT', w.px)
    else
      redis.call('SET', k, w.v)
      redis.call('SET', k .. ':v', v)
    end
    if w.sid ~= null then
      local out = k .. ':out'
      redis.call('DEL', out)
      for i = 1, #w.out, 512 do
        redis.call('RPUSH', out, unpack(w.out, i, math.min(i + 511, #w.out)))
      end
      local holder = false
      if w.holder ~= null then holder = tostring(w.holder) end
      if holder then redis.call('SET', k .. ':node', holder) else redis.call('DEL', k .. ':node') end
      if before and before ~= holder then redis.call('SREM', ns .. 'node:' .. before .. ':sessions', w.sid) end
      if holder then redis.call('SADD', ns .. 'node:' .. holder .. ':sessions', w.sid) end
      local q = k .. ':q'
      while true do
        local head = redis.call('LINDEX', q, 0)
        if not head then break end
        local no = tonumber(string.match(head, '^(%d+) '))
        if no > w.queued then break end
        redis.call('LPOP', q)
      end
      for _, key in ipairs({out, k .. ':node', q, k .. ':qn', k .. ':ovf'}) do
        if w.px ~= null then redis.call('PEXPIREAT', key, w.px) else redis.call('PERSIST', key) end
      end
      if before and before ~= me and before ~= holder then note(before, 'm', w.sid) end
      if holder and redis.call('LLEN', q) > 0 then note(holder, 'q', w.sid) end
    end
    if w.dl ~= null then redis.call('ZADD', ns .. 'timers', w.dl, k) else redis.call('ZREM', ns .. 'timers', k) end
    if w.call then
      if w.live then redis.call('SADD', ns .. 'calls', k) else redis.call('SREM', ns .. 'calls', k) end
    end
    if w.uid ~= null then
      if w.online then redis.call('SADD', ns .. 'online', w.uid) else redis.call('SREM', ns .. 'online', w.uid) end
      presence(w.uid)
    end
    written[#written + 1] = k
    written[#written + 1] = tostring(v)
  else
    redis.call('DEL', k, k .. ':v', k .. ':out', k .. ':node', k .. ':q', k .. ':qn', k .. ':ovf')
    redis.call('ZREM', ns .. 'timers', k)
    if w.call then redis.call('SREM', ns .. 'calls', k) end
    if w.uid ~= null then
      redis.call('SREM', ns .. 'online', w.uid)
      presence(w.uid)
    end
    if before then
      redis.call('SREM', ns .. 'node:' .. before .. ':sessions', w.sid)
      if before ~= me then note(before, 'm', w.sid) end
    end
    written[#written + 1] = k
    written[#written + 1] = '0'
  end
end
for _, d in ipairs(t.deliver) do
  local k, sid, msg = d[1], d[2], d[3]
  if redis.call('EXISTS', k) == 1 then
    local no = redis.call('INCR', k .. ':qn')
    local q = k .. ':q'
    if redis.call('LLEN', q) < limit then
      redis.call('RPUSH', q, no .. ' ' .. msg)
    else
      -- Nobody takes them: the session can no longer promise replay.
      redis.call('DEL', q, k .. ':out')
      redis.call('SET', k .. ':ovf', '1')
      redis.call('SET', k .. ':v', redis.call('INCR', ns .. 'version'), 'KEEPTTL')
    end
    local expires = redis.call('PEXPIRETIME', k)
    for _, key in ipairs({q, k .. ':qn', k .. ':ovf'}) do
      if expires > 0 then redis.call('PEXPIREAT', key, expires) end
    end
    local holder = redis.call('GET', k .. ':node')
    if holder then note(holder, 'q', sid) end
  end
end
-- Last, so that a script that failed halfway never counts as taken.
redis.call('SET', last_txn, t.seq, 'PX', 3600000)
return written
",
    )
});

/// Whether a node's transaction was taken (1), and if not (0), that it never will be.
/// KEYS[1]: the node's last transaction taken. ARGV[1]: the transaction's seq.
static FENCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if last == seq then return 1 end
if seq > last then redis.call('SET', KEYS[1], seq, 'PX', 3600000) end
return 0
",
    )
});

/// The current values of records. KEYS: the records. Answers `{version, value, out,
/// overflowed}` per key.
static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, k in ipairs(KEYS) do
  out[#out + 1] = redis.call('GET', k .. ':v') or '0'
  out[#out + 1] = redis.call('GET', k) or ''
  out[#out + 1] = redis.call('LRANGE', k .. ':out', 0, -1)
  out[#out + 1] = redis.call('EXISTS', k .. ':ovf')
end
return out
",
    )
});

/// Renews a node's lease unless it was declared dead. KEYS[1]: the nodes set. ARGV:
/// the node, the lease end.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
",
    )
});

/// Claims the nodes whose lease ended before ARGV[1] (each by one caller only), with
/// the sessions still attached to them. KEYS[1]: the nodes set. ARGV[2]: namespace.
/// Answers `{node, count, session…, node, count, …}`.
static CLAIM_LOST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])) do
  if redis.call('ZREM', KEYS[1], n) == 1 then
    local set = ARGV[2] .. 'node:' .. n .. ':sessions'
    local sessions = redis.call('SMEMBERS', set)
    redis.call('DEL', set, ARGV[2] .. 'node:' .. n .. ':notes')
    out[#out + 1] = n
    out[#out + 1] = #sessions
    for _, s in ipairs(sessions) do out[#out + 1] = s end
  end
end
return out
",
    )
});

/// Claims up to 256 records whose deadline is at or before ARGV[1], for ARGV[2] ms.
/// KEYS[1]: the timer set.
static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 256)
for _, k in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), k)
end
return due
",
    )
});

/// Takes a node's notes. KEYS[1]: its notes set.
static TAKE_NOTES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local notes = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return notes
",
    )
});

/// One record written, as the commit script reads it.
#[derive(Serialize)]
struct WireWrite {
    k: String,
    /// The record's JSON (`None`: delete it).
    v: Option<String>,
    /// Sessions: the id, the unacknowledged messages, the node holding the socket, the
    /// last queue entry taken.
    sid: Option<SessionId>,
    out: Vec<String>,
    holder: Option<NodeNo>,
    queued: u64,
    /// Users: the id, and whether it has sessions (the set of who is online).
    uid: Option<String>,
    online: bool,
    /// Calls: whether it is one, and whether it has not ended (the set of calls).
    call: bool,
    live: bool,
    /// Absolute expiry (ms) and next deadline.
    px: Option<u64>,
    dl: Option<u64>,
}

#[derive(Serialize)]
struct WireTxn {
    node: NodeNo,
    seq: u64,
    reads: Vec<(String, u64)>,
    writes: Vec<WireWrite>,
    deliver: Vec<(String, SessionId, String)>,
    /// Sessions pushed to directly: key, id, last queue entry taken.
    direct: Vec<(String, SessionId, u64)>,
}

/// A user record as stored (the same shape as the single-process store's).
#[derive(Serialize, Deserialize)]
struct StoredUser {
    id: String,
    #[serde(flatten)]
    record: UserRecord,
}

/// What the whole cluster holds, for every node's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    pub nodes: usize,
    pub sessions_attached: usize,
    pub calls: usize,
    pub users_online: usize,
}

/// Counts the cluster's nodes, attached sessions, calls and identities online.
/// ARGV[1]: the namespace.
static COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ns = ARGV[1]
local nodes = redis.call('ZRANGE', ns .. 'nodes', 0, -1)
local attached = 0
for _, n in ipairs(nodes) do
  attached = attached + redis.call('SCARD', ns .. 'node:' .. n .. ':sessions')
end
return {#nodes, attached, redis.call('SCARD', ns .. 'calls'), redis.call('SCARD', ns .. 'online')}
",
    )
});

/// Why a shared-store operation failed.
#[derive(Debug)]
pub enum SharedError {
    Redis(RedisError),
    /// An answer or a record is not what this version writes.
    Corrupt(String),
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SharedError::Redis(e) => write!(f, "redis: {e}"),
            SharedError::Corrupt(why) => write!(f, "shared store: {why}"),
        }
    }
}

impl std::error::Error for SharedError {}

impl From<RedisError> for SharedError {
    fn from(e: RedisError) -> Self {
        SharedError::Redis(e)
    }
}

/// The cluster's shared store in Redis. Cheap to clone (one multiplexed connection).
#[derive(Clone)]
pub struct RedisLedger {
    conn: ConnectionManager,
    keys: Keys,
    windows: Windows,
    queue_limit: usize,
}

impl RedisLedger {
    pub fn new(conn: ConnectionManager, keys: Keys, windows: Windows, queue_limit: usize) -> Self {
        Self {
            conn,
            keys,
            windows,
            queue_limit,
        }
    }

    /// The pub/sub channel on which node `no` hears what others did to its sessions.
    pub fn channel(&self, no: NodeNo) -> String {
        format!("{}node:{no}", self.keys.ns())
    }

    fn nodes_key(&self) -> String {
        format!("{}nodes", self.keys.ns())
    }

    fn key(&self, key: &RecordKey) -> String {
        match key {
            RecordKey::Session(id) => self.keys.session(id),
            RecordKey::Call(id) => self.keys.call(id),
            RecordKey::User(id) => self.keys.user(id),
        }
    }

    /// A new node number (never reused), with a lease until `until` (epoch ms).
    pub async fn join(&mut self, until: u64) -> Result<NodeNo, SharedError> {
        let no: NodeNo = redis::cmd("INCR")
            .arg(format!("{}node-seq", self.keys.ns()))
            .query_async(&mut self.conn)
            .await?;
        let _: () = redis::cmd("ZADD")
            .arg(self.nodes_key())
            .arg(until)
            .arg(no)
            .query_async(&mut self.conn)
            .await?;
        Ok(no)
    }

    /// Renews the lease; false when the node was declared dead meanwhile.
    pub async fn renew(&mut self, no: NodeNo, until: u64) -> Result<bool, SharedError> {
        let renewed: i64 = RENEW
            .key(self.nodes_key())
            .arg(no)
            .arg(until)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(renewed == 1)
    }

    /// The lease ends at `at` (a graceful stop: whoever did not resume elsewhere by
    /// then is detached by the node that claims this one).
    pub async fn end_lease(&mut self, no: NodeNo, at: u64) -> Result<(), SharedError> {
        let _: () = redis::cmd("ZADD")
            .arg(self.nodes_key())
            .arg("XX")
            .arg(at)
            .arg(no)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Nodes whose lease ended before `now`, each claimed by this caller alone, with
    /// the sessions still attached to them.
    pub async fn claim_lost(
        &mut self,
        now: u64,
    ) -> Result<Vec<(NodeNo, Vec<SessionId>)>, SharedError> {
        let flat: Vec<String> = CLAIM_LOST
            .key(self.nodes_key())
            .arg(now)
            .arg(self.keys.ns())
            .invoke_async(&mut self.conn)
            .await?;
        let mut out = Vec::new();
        let mut it = flat.into_iter();
        while let (Some(no), Some(count)) = (it.next(), it.next()) {
            let no = no.parse().map_err(|_| corrupt("a node number"))?;
            let count: usize = count.parse().map_err(|_| corrupt("a session count"))?;
            out.push((no, it.by_ref().take(count).collect()));
        }
        Ok(out)
    }

    /// Records whose deadline passed by `now`, claimed for `claim_ms`.
    pub async fn claim_due(
        &mut self,
        now: u64,
        claim_ms: u64,
    ) -> Result<Vec<RecordKey>, SharedError> {
        let keys: Vec<String> = CLAIM_DUE
            .key(format!("{}timers", self.keys.ns()))
            .arg(now)
            .arg(claim_ms)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(keys.iter().filter_map(|k| self.keys.parse(k)).collect())
    }

    /// Offers `txn`; the answer is what [`crate::engine::cluster::ClusterNode`] takes.
    pub async fn commit(&mut self, txn: &Txn) -> Result<Committed, SharedError> {
        let mut names: HashMap<String, RecordKey> = HashMap::new();
        let reads = txn
            .reads
            .iter()
            .map(|(key, version)| {
                let name = self.key(key);
                names.insert(name.clone(), key.clone());
                (name, *version)
            })
            .collect();
        let writes = txn.writes.iter().map(|w| self.wire_write(w)).collect();
        let deliver = txn
            .deliveries
            .iter()
            .map(|(sid, msg)| {
                let json = serde_json::to_string(msg).expect("a message serializes");
                (self.keys.session(sid), sid.clone(), json)
            })
            .collect();
        let direct = txn
            .direct
            .iter()
            .map(|(sid, taken)| (self.keys.session(sid), sid.clone(), *taken))
            .collect();
        let wire = WireTxn {
            node: txn.node,
            seq: txn.seq,
            reads,
            writes,
            deliver,
            direct,
        };
        let answer: Vec<Value> = COMMIT
            .arg(serde_json::to_string(&wire).expect("a transaction serializes"))
            .arg(self.keys.ns())
            .arg(self.queue_limit)
            .invoke_async(&mut self.conn)
            .await?;
        let mut it = answer.into_iter();
        let taken: i64 =
            redis::from_redis_value(&it.next().ok_or_else(|| corrupt("empty answer"))?)?;
        if taken == 1 {
            let mut written = Vec::new();
            while let (Some(name), Some(version)) = (it.next(), it.next()) {
                let name: String = redis::from_redis_value(&name)?;
                let version: String = redis::from_redis_value(&version)?;
                let key = self
                    .keys
                    .parse(&name)
                    .ok_or_else(|| corrupt("a written key"))?;
                written.push((key, version.parse().map_err(|_| corrupt("a version"))?));
            }
            return Ok(Committed::Taken(written));
        }
        if taken == 2 {
            // Fenced: nobody waits for this answer any more.
            return Ok(Committed::Refused(Vec::new(), Vec::new()));
        }
        let recs: Vec<Value> = match it.next() {
            Some(Value::Array(v)) => v,
            _ => return Err(corrupt("a refusal")),
        };
        let mut fresh = Vec::new();
        let mut recs = recs.into_iter();
        while let Some(name) = recs.next() {
            let name: String = redis::from_redis_value(&name)?;
            let key = names
                .get(&name)
                .cloned()
                .ok_or_else(|| corrupt("a changed key"))?;
            let parts: Vec<Value> = recs.by_ref().take(4).collect();
            fresh.push(self.decode(key, parts)?);
        }
        let waiting: Vec<Value> = match it.next() {
            Some(Value::Array(v)) => v,
            _ => Vec::new(),
        };
        let mut queues = Vec::new();
        let mut waiting = waiting.into_iter();
        while let (Some(sid), Some(entries)) = (waiting.next(), waiting.next()) {
            let sid: String = redis::from_redis_value(&sid)?;
            let entries: Vec<String> = redis::from_redis_value(&entries)?;
            queues.push((sid, parse_queue(entries)?));
        }
        Ok(Committed::Refused(fresh, queues))
    }

    /// Whether node `no`'s transaction `seq` was taken; when not, it never will be
    /// (see [`crate::engine::cluster::ClusterNode::handle_answer_lost`]).
    pub async fn fence(&mut self, no: NodeNo, seq: u64) -> Result<bool, SharedError> {
        let applied: i64 = FENCE
            .key(format!("{}node:{no}:txn", self.keys.ns()))
            .arg(seq)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(applied == 1)
    }

    /// What the shared store holds for `keys`.
    pub async fn fetch(&mut self, keys: &[RecordKey]) -> Result<Vec<Fresh>, SharedError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut script = FETCH.prepare_invoke();
        for key in keys {
            script.key(self.key(key));
        }
        let answer: Vec<Value> = script.invoke_async(&mut self.conn).await?;
        let mut it = answer.into_iter();
        let mut fresh = Vec::with_capacity(keys.len());
        for key in keys {
            let parts: Vec<Value> = it.by_ref().take(4).collect();
            fresh.push(self.decode(key.clone(), parts)?);
        }
        Ok(fresh)
    }

    /// What other nodes' transactions left for node `no` since the last call.
    pub async fn take_notes(&mut self, no: NodeNo) -> Result<Vec<Note>, SharedError> {
        let notes: Vec<String> = TAKE_NOTES
            .key(format!("{}node:{no}:notes", self.keys.ns()))
            .invoke_async(&mut self.conn)
            .await?;
        let mut out: Vec<Note> = notes
            .iter()
            .filter_map(|n| match n.split_once(' ')? {
                ("m", sid) => Some(Note::Moved(sid.to_owned())),
                ("q", sid) => Some(Note::Queued(sid.to_owned())),
                ("p", user) => Some(Note::Presence(user.to_owned())),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// When something will next be there to claim: a lease ending (ends of live
    /// nodes' leases move on as they renew), or a deadline passing.
    pub async fn next_claim(&mut self) -> Result<Option<u64>, SharedError> {
        let lease: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.nodes_key())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.conn)
            .await?;
        let timer: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{}timers", self.keys.ns()))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.conn)
            .await?;
        let lease = lease
            .first()
            .map(|(_, at)| *at)
            .filter(|at| *at < 1e18)
            .map(|at| at as u64 + 1);
        let timer = timer.first().map(|(_, at)| *at as u64);
        Ok(lease.into_iter().chain(timer).min())
    }

    /// What the whole cluster holds now.
    pub async fn counts(&mut self) -> Result<ClusterCounts, SharedError> {
        let [nodes, sessions_attached, calls, users_online]: [usize; 4] = COUNTS
            .arg(self.keys.ns())
            .invoke_async(&mut self.conn)
            .await?;
        Ok(ClusterCounts {
            nodes,
            sessions_attached,
            calls,
            users_online,
        })
    }

    /// The user records of everyone online (a node starts knowing them: presence is
    /// cluster-wide).
    pub async fn online(&mut self) -> Result<Vec<Fresh>, SharedError> {
        let users: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}online", self.keys.ns()))
            .query_async(&mut self.conn)
            .await?;
        let keys: Vec<RecordKey> = users.into_iter().map(RecordKey::User).collect();
        let mut fresh = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(256) {
            fresh.extend(self.fetch(chunk).await?);
        }
        Ok(fresh)
    }

    /// Every record (tests compare with it).
    pub async fn records(&mut self) -> Result<Vec<(RecordKey, Record)>, SharedError> {
        let mut keys: Vec<RecordKey> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}{{*", self.keys.ns()))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            keys.extend(batch.iter().filter_map(|k| self.keys.parse(k)));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let fresh = self.fetch(&keys).await?;
        Ok(fresh
            .into_iter()
            .filter_map(|f| f.value.map(|v| (f.key, v)))
            .collect())
    }

    /// Deletes every key under the namespace (tests).
    pub async fn clear(&mut self) -> Result<(), SharedError> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.keys.ns()))
            .query_async(&mut self.conn)
            .await?;
        for chunk in keys.chunks(512) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// A session's delivery queue.
    pub async fn queue(&mut self, sid: &str) -> Result<Queue, SharedError> {
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{}:q", self.keys.session(sid)))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn)
            .await?;
        parse_queue(entries)
    }

    fn wire_write(&self, w: &crate::engine::cluster::Write) -> WireWrite {
        let k = self.key(&w.key);
        let mut wire = WireWrite {
            k,
            v: None,
            sid: None,
            out: Vec::new(),
            holder: None,
            queued: 0,
            uid: None,
            online: false,
            call: matches!(w.key, RecordKey::Call(_)),
            live: false,
            px: None,
            dl: w.deadline,
        };
        match &w.key {
            RecordKey::Session(id) => wire.sid = Some(id.clone()),
            RecordKey::User(id) => wire.uid = Some(id.clone()),
            RecordKey::Call(_) => {}
        }
        match &w.value {
            None => {}
            Some(Record::Session(s)) => {
                wire.v = Some(serde_json::to_string(s).expect("a session serializes"));
                wire.out = s
                    .outbox
                    .replay()
                    .map(|e| serde_json::to_string(e).expect("a message serializes"))
                    .collect();
                wire.holder = s.conn.map(node_of_conn);
                wire.queued = s.queued;
                wire.px = self.windows.session_expiry(s);
            }
            Some(Record::Call(c)) => {
                wire.v = Some(serde_json::to_string(c).expect("a call serializes"));
                wire.px = self.windows.call_expiry(c);
                wire.live = c.state != crate::protocol::CallState::Ended;
            }
            Some(Record::User(u)) => {
                let id = match &w.key {
                    RecordKey::User(id) => id.clone(),
                    _ => String::new(),
                };
                let stored = StoredUser {
                    id,
                    record: u.clone(),
                };
                wire.v = Some(serde_json::to_string(&stored).expect("a user serializes"));
                wire.px = self.windows.user_expiry(u);
                wire.online = !u.sessions.is_empty();
            }
        }
        wire
    }

    /// A record from `{version, value, out, overflowed}`.
    fn decode(&self, key: RecordKey, parts: Vec<Value>) -> Result<Fresh, SharedError> {
        let [version, value, out, overflowed]: [Value; 4] =
            parts.try_into().map_err(|_| corrupt("a record answer"))?;
        let version: String = redis::from_redis_value(&version)?;
        let version: u64 = version.parse().map_err(|_| corrupt("a version"))?;
        let text: String = redis::from_redis_value(&value)?;
        if version == 0 || text.is_empty() {
            return Ok(Fresh {
                key,
                version: 0,
                value: None,
            });
        }
        let bad = |e: serde_json::Error| corrupt(&format!("{key:?}: {e}"));
        let value = match &key {
            RecordKey::Session(_) => {
                let mut s: Session = serde_json::from_str(&text).map_err(bad)?;
                let out: Vec<String> = redis::from_redis_value(&out)?;
                let unacked = out
                    .iter()
                    .map(|e| serde_json::from_str::<Unacked<ServerMsg>>(e))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                s.outbox = Outbox::from_parts(s.outbox.last_seq(), unacked);
                let overflowed: i64 = redis::from_redis_value(&overflowed)?;
                if overflowed == 1 && !s.overflowed {
                    s.overflowed = true;
                    s.outbox.clear();
                }
                Record::Session(s)
            }
            RecordKey::Call(_) => Record::Call(serde_json::from_str::<Call>(&text).map_err(bad)?),
            RecordKey::User(_) => Record::User(
                serde_json::from_str::<StoredUser>(&text)
                    .map_err(bad)?
                    .record,
            ),
        };
        Ok(Fresh {
            key,
            version,
            value: Some(value),
        })
    }
}

/// A delivery queue from its list entries (`<no> <message JSON>`).
fn parse_queue(entries: Vec<String>) -> Result<Queue, SharedError> {
    let mut queue = Queue::default();
    for entry in entries {
        let (no, json) = entry
            .split_once(' ')
            .ok_or_else(|| corrupt("a queue entry"))?;
        let no = no.parse().map_err(|_| corrupt("a queue number"))?;
        let msg = serde_json::from_str(json).map_err(|e| corrupt(&e.to_string()))?;
        queue.entries.push_back((no, msg));
    }
    Ok(queue)
}

fn corrupt(what: &str) -> SharedError {
    SharedError::Corrupt(format!("unexpected {what}"))
}
