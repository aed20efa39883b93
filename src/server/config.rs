//! Server configuration from flags and environment (`HOLDFAST_*`).

use crate::engine::server::ServerConfig;
use clap::Parser;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `holdfast-server`: the Holdfast signaling server.
#[derive(Debug, Clone, Parser)]
#[command(name = "holdfast-server", version, about)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "HOLDFAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Accept bare identities as tokens (`alice` or `alice:Alice`). INSECURE: local use only.
    #[arg(long, env = "HOLDFAST_DEV")]
    pub dev: bool,

    /// HMAC-SHA256 secret shared with the app's backend, which signs the JWTs.
    #[arg(long, env = "HOLDFAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Heartbeat interval (e.g. `1500ms`, `2s`).
    #[arg(long, env = "HOLDFAST_HEARTBEAT_INTERVAL", default_value = "1500ms", value_parser = parse_duration_ms)]
    pub heartbeat_interval: u64,

    /// Silence after which a link is dead.
    #[arg(long, env = "HOLDFAST_HEARTBEAT_TIMEOUT", default_value = "4500ms", value_parser = parse_duration_ms)]
    pub heartbeat_timeout: u64,

    /// How long a dropped session can be resumed.
    #[arg(long, env = "HOLDFAST_RESUME_WINDOW", default_value = "60s", value_parser = parse_duration_ms)]
    pub resume_window: u64,

    /// Grace window of calls without a kind.
    #[arg(long, env = "HOLDFAST_GRACE", default_value = "60s", value_parser = parse_duration_ms)]
    pub grace: u64,

    /// Grace windows per call kind: `support=60s,interpreter=5m`.
    #[arg(long, env = "HOLDFAST_GRACE_KINDS", default_value = "", value_parser = parse_kinds)]
    pub grace_kinds: KindWindows,

    /// Unanswered calls end `no-answer` after this long.
    #[arg(long, env = "HOLDFAST_RING_TIMEOUT", default_value = "30s", value_parser = parse_duration_ms)]
    pub ring_timeout: u64,

    /// A ringing call whose caller dropped is withdrawn after this long.
    #[arg(long, env = "HOLDFAST_RING_DETACH_GRACE", default_value = "5s", value_parser = parse_duration_ms)]
    pub ring_detach_grace: u64,

    /// Messages kept per session for replay.
    #[arg(long, env = "HOLDFAST_REPLAY_BUFFER", default_value_t = 1024)]
    pub replay_buffer: usize,

    /// Largest accepted frame, in bytes.
    #[arg(long, env = "HOLDFAST_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,

    /// Sustained messages per second per socket.
    #[arg(long, env = "HOLDFAST_MAX_MSGS_PER_SEC", default_value_t = 50)]
    pub max_msgs_per_sec: u32,

    /// Burst of messages allowed above the sustained rate.
    #[arg(long, env = "HOLDFAST_BURST", default_value_t = 200)]
    pub burst: u32,

    /// Sessions one identity may hold at once.
    #[arg(long, env = "HOLDFAST_MAX_SESSIONS_PER_USER", default_value_t = 8)]
    pub max_sessions_per_user: usize,

    /// Directory served at `/` (the demo page and the built npm package).
    #[arg(long, env = "HOLDFAST_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Enable `POST /test/drop?user=ID` (drops a user's sockets). For test suites only.
    #[arg(long, env = "HOLDFAST_TEST_HOOKS")]
    pub test_hooks: bool,

    /// Where the state lives: `memory` (lost when the process ends) or
    /// `redis://HOST:PORT[/DB]` (sessions and calls survive restarts).
    #[arg(long, env = "HOLDFAST_STORE", default_value = "memory")]
    pub store: crate::server::store::StoreSpec,

    /// Log format: `pretty` or `json`.
    #[arg(long, env = "HOLDFAST_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}

/// Grace windows by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindWindows(pub BTreeMap<String, u64>);

/// `1500ms`, `60s`, `5m`, `1h`, or a bare number of milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 1500ms, 60s, 5m)"))?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}` (use ms, s, m or h)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// `support=60s,interpreter=5m`.
pub fn parse_kinds(s: &str) -> Result<KindWindows, String> {
    let mut map = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, dur) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` should look like kind=60s"))?;
        let kind = kind.trim();
        if kind.is_empty() || kind.len() > 64 {
            return Err(format!("bad call kind `{kind}`"));
        }
        map.insert(kind.to_owned(), parse_duration_ms(dur)?);
    }
    Ok(KindWindows(map))
}

impl Cli {
    /// The engine's settings.
    pub fn engine_config(&self) -> ServerConfig {
        ServerConfig {
            heartbeat_interval_ms: self.heartbeat_interval,
            heartbeat_timeout_ms: self.heartbeat_timeout,
            resume_window_ms: self.resume_window,
            default_grace_ms: self.grace,
            grace_by_kind: self.grace_kinds.0.clone(),
            ring_timeout_ms: self.ring_timeout,
            ring_detach_grace_ms: self.ring_detach_grace,
            replay_buffer: self.replay_buffer,
            max_frame_bytes: self.max_frame_bytes,
            max_msgs_per_sec: self.max_msgs_per_sec,
            burst: self.burst,
            max_sessions_per_user: self.max_sessions_per_user,
            ..ServerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("1500ms"), Ok(1500));
        assert_eq!(parse_duration_ms("60s"), Ok(60_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert!(parse_duration_ms("5 parsecs").is_err());
        assert!(parse_duration_ms("").is_err());
    }

    #[test]
    fn kinds_parse() {
        let k = parse_kinds("support=60s, interpreter=5m").unwrap();
        assert_eq!(k.0["support"], 60_000);
        assert_eq!(k.0["interpreter"], 300_000);
        assert!(parse_kinds("support").is_err());
        assert_eq!(parse_kinds("").unwrap(), KindWindows::default());
    }
}
