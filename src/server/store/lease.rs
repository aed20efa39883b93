//! One writer per Redis: the lease that makes every other process on it a standby.
//!
//! Each process keeps the whole state in memory and writes the records it changed
//! (see [`super::redis`]). Two processes writing one Redis that way would overwrite
//! each other's records with stale copies and lose calls. Until several processes can
//! serve one Redis as equals, exactly one holds it:
//!
//! - The holder's lease is one key, `<ns>writer`, whose value names this run of the
//!   process and its node (`<random token> <node>`), with an expiry of the lease's
//!   time to live.
//!   The holder renews it every third of that time.
//! - Every batch the holder writes is one script that first checks the lease and
//!   writes nothing when another process holds it ([`FENCED`]). So a holder that
//!   stalled (a paused VM, a stopped process) past its lease and came back cannot
//!   overwrite what the new holder wrote: it learns it lost the store and exits, and
//!   its clients reconnect to the new holder and resume there.
//! - Any other process waits as a standby: not ready (`/readyz` 503) and refusing
//!   sockets, asking for the lease a few times per lease time. It takes over when the
//!   holder releases the lease at a graceful shutdown (within one poll) or when the
//!   lease expires because the holder died (within its time to live), then loads the
//!   state like a restarted server and serves.
//! - A process restarted under the same node name (a supervisor restarting it on the
//!   same host and port) takes its own node's lease over at once: a node runs once at a
//!   time, so the lease's holder is its own dead predecessor. This keeps a restart
//!   after SIGKILL as fast as before.

use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};
use std::sync::LazyLock;
use std::time::Duration;

/// The code of the error a fenced write answers with.
pub const FENCED: &str = "FENCED";

/// Takes the lease when it is free, ours, or our node's (a restarted node replaces its
/// predecessor); otherwise answers who holds it.
/// KEYS[1]: the lease. ARGV: our value, our node, the time to live.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
local space = v and string.find(v, ' ', 1, true)
if v == false or v == ARGV[1] or (space and string.sub(v, space + 1) == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return v
",
    )
});

/// Extends the lease while it is ours, takes it again if it lapsed with nobody taking
/// it, and otherwise answers who holds it. KEYS[1]: the lease. ARGV: our value, the time
/// to live.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return v
",
    )
});

/// Deletes the lease if it is ours. KEYS[1]: the lease. ARGV[1]: our value.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// Runs a batch of commands only while the lease is ours (taking it again if it lapsed
/// with nobody taking it). KEYS[1]: the lease. ARGV: our value, the time to live, then
/// each command as its number of arguments followed by them.
pub(crate) static FENCED_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif v ~= ARGV[1] then
  return redis.error_reply('FENCED ' .. v)
end
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 'OK'
",
    )
});

/// What `--node` and `--lease-ttl` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// This process's name among those sharing one Redis; `None`: the host name and
    /// the listening port.
    pub node: Option<String>,
    /// How long a lease outlives its holder: how long a standby waits after the
    /// holder died without releasing it.
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            node: None,
            ttl: Duration::from_secs(3),
        }
    }
}

/// Who holds the lease, as its value names it (the node, without the token).
pub fn holder_node(value: &str) -> &str {
    value.split_once(' ').map_or(value, |(_, node)| node)
}

/// Checks a node name: what host names and ports are made of, so that it reads the
/// same in the lease, in logs and in error replies.
pub fn check_node(node: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if node.is_empty() || node.len() > 128 || !node.chars().all(fine) {
        return Err(format!(
            "bad node name `{node}`: use 1 to 128 of A-Z a-z 0-9 . - _ :"
        ));
    }
    Ok(())
}

/// This process's lease on one Redis (held or wanted).
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    node: String,
    value: String,
    ttl_ms: u64,
}

/// The answer to asking for the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Held,
    /// Another node holds it (its value).
    HeldBy(String),
}

impl Lease {
    /// The lease `node` would hold on the key `key`, for one run of the process
    /// (`token`: random, without spaces).
    pub fn new(key: String, node: &str, ttl: Duration, token: &str) -> Self {
        Self {
            key,
            node: node.to_owned(),
            value: format!("{token} {node}"),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// How often a standby asks for the lease.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis((self.ttl_ms / 10).clamp(20, 250))
    }

    /// How often the holder renews it.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis((self.ttl_ms / 3).max(1))
    }

    pub async fn acquire(&self, conn: &mut ConnectionManager) -> Result<Acquired, RedisError> {
        let answer: Value = ACQUIRE
            .key(&self.key)
            .arg(&self.value)
            .arg(&self.node)
            .arg(self.ttl_ms)
            .invoke_async(conn)
            .await?;
        Ok(held_or_holder(answer))
    }

    /// `HeldBy`: the lease was lost to another process.
    pub async fn renew(&self, conn: &mut ConnectionManager) -> Result<Acquired, RedisError> {
        let answer: Value = RENEW
            .key(&self.key)
            .arg(&self.value)
            .arg(self.ttl_ms)
            .invoke_async(conn)
            .await?;
        Ok(held_or_holder(answer))
    }

    pub async fn release(&self, conn: &mut ConnectionManager) -> Result<(), RedisError> {
        RELEASE
            .key(&self.key)
            .arg(&self.value)
            .invoke_async::<i64>(conn)
            .await
            .map(drop)
    }

    /// The script invocation that runs `commands` only while the lease is ours.
    pub(crate) fn fenced<'a>(
        &self,
        commands: impl Iterator<Item = &'a redis::Cmd>,
    ) -> redis::ScriptInvocation<'static> {
        let mut call = FENCED_WRITE.prepare_invoke();
        call.key(&self.key).arg(&self.value).arg(self.ttl_ms);
        for cmd in commands {
            call.arg(cmd.args_iter().len());
            for arg in cmd.args_iter() {
                match arg {
                    redis::Arg::Simple(bytes) => call.arg(bytes),
                    // Cursors are for SCAN-like commands, which a batch never holds.
                    redis::Arg::Cursor => call.arg(0),
                };
            }
        }
        call
    }
}

fn held_or_holder(answer: Value) -> Acquired {
    match answer {
        Value::Int(1) => Acquired::Held,
        other => Acquired::HeldBy(
            redis::from_redis_value::<String>(&other).unwrap_or_else(|_| format!("{other:?}")),
        ),
    }
}

/// A write refused because another process holds the lease: that process's node.
pub fn fenced_by(e: &RedisError) -> Option<String> {
    if e.code() != Some(FENCED) {
        return None;
    }
    Some(holder_node(e.detail().unwrap_or_default().trim()).to_owned())
}

/// The default node name: the host name and the listening port.
pub fn default_node(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{port}")
}
