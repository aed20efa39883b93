//! Server configuration from flags and environment (`HOLDFAST_*`).

use super::{JwtRules, NetLimits};
use crate::engine::server::ServerConfig;
use clap::Parser;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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

    /// Sustained messages per second per socket; a reconnect starts from what the
    /// identity's previous socket left, so it refills nothing.
    #[arg(long, env = "HOLDFAST_MAX_MSGS_PER_SEC", default_value_t = 50)]
    pub max_msgs_per_sec: u32,

    /// Burst of messages allowed above the sustained rate.
    #[arg(long, env = "HOLDFAST_BURST", default_value_t = 200)]
    pub burst: u32,

    /// Hellos per second from one client IP, before authentication.
    #[arg(long, env = "HOLDFAST_MAX_HELLOS_PER_SEC_PER_IP", default_value_t = 50)]
    pub max_hellos_per_sec_per_ip: u32,

    /// Burst of hellos allowed from one client IP.
    #[arg(long, env = "HOLDFAST_HELLO_BURST_PER_IP", default_value_t = 500)]
    pub hello_burst_per_ip: u32,

    /// Rejoin attempts per minute per identity.
    #[arg(long, env = "HOLDFAST_MAX_REJOINS_PER_MIN", default_value_t = 10)]
    pub max_rejoins_per_min: u32,

    /// Rejoin attempts per minute per client IP.
    #[arg(
        long,
        env = "HOLDFAST_MAX_REJOINS_PER_MIN_PER_IP",
        default_value_t = 60
    )]
    pub max_rejoins_per_min_per_ip: u32,

    /// Presence changes within this window reach watchers as one push (0: at once).
    #[arg(long, env = "HOLDFAST_PRESENCE_COALESCE", default_value = "200ms", value_parser = parse_duration_ms)]
    pub presence_coalesce: u64,

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

    /// This process's name among the processes sharing one Redis (default: the host
    /// name and the listening port). One process holds the store at a time; the others
    /// stand by and take over when it stops or dies. A process restarted under the
    /// same name takes over from its predecessor at once.
    #[arg(long, env = "HOLDFAST_NODE")]
    pub node: Option<String>,

    /// Serve the Redis store together with every other process started with
    /// `--cluster` on it: all of them active, a session resumes on any of them, a call's
    /// two people may be on different ones (put any load balancer in front). Without
    /// it, one process serves a Redis store at a time and the others stand by. With
    /// `--cluster`, `--lease-ttl` is how soon a process that died is noticed.
    #[arg(long, env = "HOLDFAST_CLUSTER")]
    pub cluster: bool,

    /// How long the store's lease outlives a process that died without releasing it:
    /// how long a standby waits before it takes over (`3s`).
    #[arg(long, env = "HOLDFAST_LEASE_TTL", default_value = "3s", value_parser = parse_duration_ms)]
    pub lease_ttl: u64,

    /// Log format: `pretty` or `json`.
    #[arg(long, env = "HOLDFAST_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,

    /// Required `aud` claim of JWTs (unset: `aud` is not checked).
    #[arg(long, env = "HOLDFAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim of JWTs (unset: `iss` is not checked).
    #[arg(long, env = "HOLDFAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Longest validity a JWT may have (`exp` − `iat`, or `exp` − now), e.g. `24h`.
    #[arg(long, env = "HOLDFAST_JWT_MAX_LIFETIME", value_parser = parse_duration_ms)]
    pub jwt_max_lifetime: Option<u64>,

    /// Clock skew forgiven on a JWT's `exp` and `nbf`.
    #[arg(long, env = "HOLDFAST_JWT_LEEWAY", default_value = "5s", value_parser = parse_duration_ms)]
    pub jwt_leeway: u64,

    /// A connection must send its HTTP request headers within this long.
    #[arg(long, env = "HOLDFAST_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration_ms)]
    pub header_read_timeout: u64,

    /// Open connections at most (0: the open-files limit minus headroom).
    #[arg(long, env = "HOLDFAST_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Open connections per client IP at most (0: no per-IP limit).
    #[arg(long, env = "HOLDFAST_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Addresses exempt from the per-IP limits: where a local reverse proxy connects from.
    #[arg(long, env = "HOLDFAST_PER_IP_EXEMPT", default_value = "127.0.0.1,::1", value_parser = parse_ips)]
    pub per_ip_exempt: IpList,

    /// Origins allowed to open the WebSocket, comma-separated
    /// (`https://app.example,https://www.app.example`; unset: any origin).
    #[arg(long, env = "HOLDFAST_ALLOWED_ORIGINS", value_parser = parse_origins)]
    pub allowed_origins: Option<OriginList>,

    /// Serve `/metrics` (and `/healthz`) on this address instead of the main one.
    #[arg(long, env = "HOLDFAST_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Client IPs, for `--per-ip-exempt`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(pub Vec<IpAddr>);

/// `127.0.0.1,::1`; empty for none.
pub fn parse_ips(s: &str) -> Result<IpList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|_| format!("`{p}` is not an IP address")))
        .collect::<Result<_, _>>()
        .map(IpList)
}

/// Allowed `Origin` header values, for `--allowed-origins`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginList(pub Vec<String>);

/// `https://app.example,http://localhost:5173`.
pub fn parse_origins(s: &str) -> Result<OriginList, String> {
    let list: Vec<String> = s
        .split(',')
        .map(|p| p.trim().trim_end_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if let Some(bad) = list
        .iter()
        .find(|o| !(o.starts_with("https://") || o.starts_with("http://")))
    {
        return Err(format!("`{bad}` is not an origin (scheme://host[:port])"));
    }
    Ok(OriginList(list))
}

/// Grace windows by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindWindows(pub BTreeMap<String, u64>);

/// `1500ms`, `60s`, `5m`, `1h`, `1h 30m` (humantime's syntax), or a bare number of
/// milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("`{s}` is too long"));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration (try 1500ms, 60s, 5m): {e}"))?;
    u64::try_from(d.as_millis()).map_err(|_| format!("`{s}` is too long"))
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
    /// What a JWT must satisfy besides its signature.
    pub fn jwt_rules(&self) -> JwtRules {
        JwtRules {
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            max_lifetime_ms: self.jwt_max_lifetime,
            leeway_ms: self.jwt_leeway,
        }
    }

    /// The store lease's settings.
    pub fn lease(&self) -> crate::server::store::lease::LeaseConfig {
        crate::server::store::lease::LeaseConfig {
            node: self.node.clone(),
            ttl: Duration::from_millis(self.lease_ttl.max(1)),
        }
    }

    /// The listener's limits.
    pub fn net_limits(&self) -> NetLimits {
        NetLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            per_ip_exempt: self.per_ip_exempt.0.clone(),
            allowed_origins: self.allowed_origins.clone().map(|o| o.0),
        }
    }

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
            max_hellos_per_sec_per_ip: self.max_hellos_per_sec_per_ip,
            hello_burst_per_ip: self.hello_burst_per_ip,
            max_rejoins_per_min: self.max_rejoins_per_min,
            max_rejoins_per_min_per_ip: self.max_rejoins_per_min_per_ip,
            presence_coalesce_ms: self.presence_coalesce,
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
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1m 30s"), Ok(90_000));
    }

    #[test]
    fn lists_parse() {
        assert_eq!(
            parse_ips("127.0.0.1, ::1").unwrap().0,
            vec![
                IpAddr::from([127, 0, 0, 1]),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(parse_ips("").unwrap(), IpList::default());
        assert!(parse_ips("localhost").is_err());
        assert_eq!(
            parse_origins("https://a.example/, http://localhost:5173")
                .unwrap()
                .0,
            vec!["https://a.example", "http://localhost:5173"]
        );
        assert!(parse_origins("a.example").is_err());
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
