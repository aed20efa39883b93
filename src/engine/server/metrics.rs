//! Counters since start, for the driver's metrics endpoint.

use crate::protocol::{EndReason, ErrorCode};
use std::collections::BTreeMap;

/// Counters since start. Gauges come from [`super::ServerEngine::counts`].
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub connections_opened: u64,
    pub sessions_created: u64,
    pub resumes: u64,
    pub resume_failures: u64,
    pub superseded: u64,
    pub rejoins: u64,
    pub rejoins_denied: u64,
    pub calls_created: u64,
    pub dedups: u64,
    pub glare_merges: u64,
    pub ends: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub frames_in: u64,
    pub msgs_relayed: u64,
    pub dead_links: u64,
    pub auth_failures: u64,
}

impl Metrics {
    /// One more error answered with `code`.
    pub(super) fn count_error(&mut self, code: ErrorCode) {
        *self.errors.entry(code.as_str()).or_default() += 1;
    }

    /// One more call ended for `reason`.
    pub(super) fn count_end(&mut self, reason: EndReason) {
        *self.ends.entry(reason.as_str()).or_default() += 1;
    }
}
