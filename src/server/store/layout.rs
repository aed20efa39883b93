//! Which kind of server a Redis database serves, so that the two never mix.
//!
//! Without `--cluster`, one process at a time writes the database (the others wait as
//! standbys, [`super::lease`]) in the single-writer format of [`super::redis`]; with
//! `--cluster`, every process writes it through the commit scripts of [`super::shared`],
//! with versions, delivery queues and leases per node. Each format would read the
//! other's records wrongly, so the first process to use a database writes which one it
//! holds under `<ns>layout`, and a process of the other kind refuses to start there.
//! The mark is never removed: the state stays in that format for as long as it lives.

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use std::sync::LazyLock;

/// How the processes on one database share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One writer at a time, standbys waiting for its lease (no `--cluster`).
    OneWriter,
    /// Every process writes, through versioned transactions (`--cluster`).
    Cluster,
}

impl Layout {
    fn mark(self) -> &'static str {
        match self {
            Layout::OneWriter => "one-writer",
            Layout::Cluster => "cluster",
        }
    }

    fn of(mark: &str) -> Option<Layout> {
        [Layout::OneWriter, Layout::Cluster]
            .into_iter()
            .find(|l| l.mark() == mark)
    }

    /// How a process of this layout is started.
    fn started(self) -> &'static str {
        match self {
            Layout::OneWriter => "without --cluster",
            Layout::Cluster => "with --cluster",
        }
    }
}

/// Why a process may not use a database.
#[derive(Debug)]
pub enum LayoutError {
    Redis(RedisError),
    /// The database holds the state of the other kind of server (or of a layout this
    /// build does not know: the mark as found).
    Taken(String),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::Redis(e) => write!(f, "redis: {e}"),
            LayoutError::Taken(why) => f.write_str(why),
        }
    }
}

impl From<RedisError> for LayoutError {
    fn from(e: RedisError) -> Self {
        LayoutError::Redis(e)
    }
}

/// Marks the database as `layout`'s when nothing marked it yet; returns the mark found.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
",
    )
});

/// Claims the database under namespace `ns` for `layout`, or says why it cannot be
/// used: the first process marks it, every later one must be of the same kind.
pub async fn claim(
    conn: &mut ConnectionManager,
    ns: &str,
    layout: Layout,
) -> Result<(), LayoutError> {
    let found: String = CLAIM
        .key(format!("{ns}layout"))
        .arg(layout.mark())
        .invoke_async(conn)
        .await?;
    if found == layout.mark() {
        return Ok(());
    }
    let holder = match Layout::of(&found) {
        Some(other) => format!("servers started {}", other.started()),
        None => format!("a layout this build does not know ({found:?})"),
    };
    Err(LayoutError::Taken(format!(
        "this Redis database holds the state of {holder}, and this process was started {}: \
         every process on one database must be started the same way. Use another database \
         for this one (redis://HOST:PORT/N), or FLUSHDB this one to start afresh",
        layout.started()
    )))
}
