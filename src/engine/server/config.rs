//! Server settings: the timers announced in every welcome and the limits enforced.

use super::rate_limit::{AllBudgets, Budgets, RateLimit};
use crate::protocol::{Limits, Timers};
use std::collections::BTreeMap;

/// Server settings (all durations in milliseconds).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub resume_window_ms: u64,
    pub default_grace_ms: u64,
    pub grace_by_kind: BTreeMap<String, u64>,
    pub ring_timeout_ms: u64,
    pub ring_detach_grace_ms: u64,
    /// Messages kept per session for replay; past this the session cannot be resumed.
    pub replay_buffer: usize,
    pub max_frame_bytes: usize,
    pub max_msgs_per_sec: u32,
    pub burst: u32,
    /// Refused frames tolerated per burst window before the socket is closed.
    pub max_violations: u32,
    pub max_sessions_per_user: usize,
    pub max_metadata_bytes: usize,
    /// Hellos per second from one client IP (before authentication), and their burst.
    pub max_hellos_per_sec_per_ip: u32,
    pub hello_burst_per_ip: u32,
    /// Rejoin attempts per minute (also the burst) per identity, and per client IP.
    pub max_rejoins_per_min: u32,
    pub max_rejoins_per_min_per_ip: u32,
    /// Presence changes within this window reach watchers as one push of the final
    /// status (0: at once).
    pub presence_coalesce_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1_500,
            heartbeat_timeout_ms: 4_500,
            resume_window_ms: 60_000,
            default_grace_ms: 60_000,
            grace_by_kind: BTreeMap::new(),
            ring_timeout_ms: 30_000,
            ring_detach_grace_ms: 5_000,
            replay_buffer: 1_024,
            max_frame_bytes: 16 * 1024,
            max_msgs_per_sec: 50,
            burst: 200,
            max_violations: 20,
            max_sessions_per_user: 8,
            max_metadata_bytes: 2_048,
            max_hellos_per_sec_per_ip: 50,
            hello_burst_per_ip: 500,
            max_rejoins_per_min: 10,
            max_rejoins_per_min_per_ip: 60,
            presence_coalesce_ms: 200,
        }
    }
}

impl ServerConfig {
    pub fn grace_for(&self, kind: Option<&str>) -> u64 {
        kind.and_then(|k| self.grace_by_kind.get(k).copied())
            .unwrap_or(self.default_grace_ms)
    }

    /// The longest any record of an ended call can still matter: the longest grace
    /// window or the resume window, whichever is longer.
    pub fn longest_grace(&self) -> u64 {
        self.grace_by_kind
            .values()
            .copied()
            .chain([self.default_grace_ms, self.resume_window_ms])
            .max()
            .unwrap_or(0)
    }

    pub fn timers(&self) -> Timers {
        Timers {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            resume_window_ms: self.resume_window_ms,
            default_grace_ms: self.default_grace_ms,
            grace_ms: self.grace_by_kind.clone(),
            ring_timeout_ms: self.ring_timeout_ms,
            ring_detach_grace_ms: self.ring_detach_grace_ms,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_msgs_per_sec: self.max_msgs_per_sec,
            burst: self.burst,
        }
    }

    /// The message budget of one identity (shared by its sessions).
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_sec: f64::from(self.max_msgs_per_sec),
            burst: self.burst,
            max_violations: self.max_violations,
        }
    }

    /// Every budget, empty.
    pub(super) fn budgets(&self) -> AllBudgets {
        let per_min = |n: u32| RateLimit {
            per_sec: f64::from(n) / 60.0,
            burst: n,
            // A refused rejoin or hello never closes a socket by itself.
            max_violations: u32::MAX,
        };
        AllBudgets {
            messages: Budgets::new(self.rate_limit()),
            hellos: Budgets::new(RateLimit {
                per_sec: f64::from(self.max_hellos_per_sec_per_ip),
                burst: self.hello_burst_per_ip,
                max_violations: u32::MAX,
            }),
            rejoins_by_user: Budgets::new(per_min(self.max_rejoins_per_min)),
            rejoins_by_ip: Budgets::new(per_min(self.max_rejoins_per_min_per_ip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_by_kind_overrides_the_default_and_the_longest_window_counts_resume() {
        let mut config = ServerConfig {
            default_grace_ms: 10_000,
            resume_window_ms: 20_000,
            ..ServerConfig::default()
        };
        config.grace_by_kind.insert("interpreter".into(), 300_000);
        assert_eq!(config.grace_for(Some("interpreter")), 300_000);
        assert_eq!(config.grace_for(Some("support")), 10_000);
        assert_eq!(config.grace_for(None), 10_000);
        assert_eq!(config.longest_grace(), 300_000);
        config.grace_by_kind.clear();
        assert_eq!(config.longest_grace(), 20_000);
    }
}
