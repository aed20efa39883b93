//! The next deadline of a record, for the shared store's timer set: when something may
//! be due for it even if the node that armed the timer is gone.

use crate::engine::server::ServerConfig;
use crate::engine::store::Record;
use crate::protocol::{CallState, LinkState};

/// When the engine next has something to do for `record` (epoch ms), if ever: a
/// detached session's resume window, a ringing call's ring timeout or its caller's
/// detach grace, an active call's earliest grace deadline, a user's oldest tombstone
/// past every window.
pub fn next_deadline(record: &Record, config: &ServerConfig) -> Option<u64> {
    match record {
        Record::Session(s) => match (s.conn, s.detached_at) {
            (None, Some(at)) => Some(at + config.resume_window_ms),
            _ => None,
        },
        Record::Call(c) => match c.state {
            CallState::Ringing => {
                let detach = c
                    .caller_detached_at
                    .map(|at| at + config.ring_detach_grace_ms);
                c.ring_deadline.into_iter().chain(detach).min()
            }
            CallState::Active => c
                .slots()
                .iter()
                .filter(|s| s.link == LinkState::Reconnecting)
                .filter_map(|s| s.deadline)
                .min(),
            CallState::Ended => None,
        },
        Record::User(u) => u
            .tombstones
            .iter()
            .map(|t| t.at + config.longest_grace())
            .min(),
    }
}
