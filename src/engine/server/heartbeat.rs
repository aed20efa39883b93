//! Dead-link detection: a socket silent for the heartbeat timeout is closed and its
//! session detached (the client pings every interval, so a live link is never that
//! quiet). The watchdog is [`crate::engine::liveness`], shared with the client engine;
//! the server only listens, it never pings.

use super::{CloseReason, ConnId, ServerEngine, Timer};
use crate::engine::liveness::Liveness;
use crate::engine::store::Store;

impl<S: Store> ServerEngine<S> {
    /// The watchdog of a socket that opened at `now`.
    pub(super) fn new_liveness(&self, now: u64) -> Liveness {
        let mut liveness = Liveness::new(
            self.config.heartbeat_interval_ms,
            self.config.heartbeat_timeout_ms,
        );
        liveness.heard(now);
        liveness
    }

    /// Watch a socket that just got a welcome for silence.
    pub(super) fn schedule_heartbeat(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            self.schedule(c.liveness.dead_at(), Timer::Heartbeat(conn));
        }
    }

    /// A socket silent for the heartbeat timeout is dead; otherwise look again when it
    /// would be.
    pub(super) fn heartbeat_due(&mut self, conn: ConnId, now: u64) {
        if let Some(c) = self.conns.get(&conn) {
            if c.liveness.is_dead(now) {
                self.metrics.dead_links += 1;
                self.close_conn(conn, CloseReason::DeadLink, now);
            } else {
                self.schedule(c.liveness.dead_at(), Timer::Heartbeat(conn));
            }
        }
    }
}
