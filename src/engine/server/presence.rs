//! Presence: who is online and whether they are available, for sessions that asked.

use super::{refuse, Handled, ServerEngine, Timer};
use crate::engine::store::Store;
use crate::protocol::*;

impl<S: Store> ServerEngine<S> {
    /// Offline without sessions, busy in a call, else what the user chose.
    fn status_of(&self, user: &str) -> PresenceStatus {
        match self.store.peek_user(user) {
            None => PresenceStatus::Offline,
            Some(u) if u.sessions.is_empty() => PresenceStatus::Offline,
            Some(u) if !u.calls.is_empty() => PresenceStatus::Busy,
            Some(u) => u.status.unwrap_or(PresenceStatus::Available),
        }
    }

    /// Another node changed `user`'s record (in a cluster): watchers here hear of it
    /// as of any change of status.
    pub fn handle_presence_changed(&mut self, user: &str, now: u64) {
        self.broadcast_presence(user, now);
        self.store.commit();
    }

    /// Everyone online, by identity.
    pub(super) fn presence_list(&self) -> Vec<PresenceEntry> {
        let mut list: Vec<PresenceEntry> = self
            .store
            .online_users()
            .into_iter()
            .map(|user| PresenceEntry {
                status: self.status_of(&user.id),
                user,
            })
            .collect();
        list.sort_by(|a, b| a.user.id.cmp(&b.user.id));
        list
    }

    /// The status of `user` may have changed: watchers hear of it once the coalescing
    /// window passes, and only if it differs from what they were last told. So a
    /// repeated `set-status` costs them nothing, and a flapping one one push per window.
    pub(super) fn broadcast_presence(&mut self, user: &str, now: u64) {
        if self.watchers.is_empty() {
            // Nobody to tell; whoever starts watching gets the full list.
            self.clear_presence_sent();
            self.presence_dirty.clear();
            return;
        }
        self.presence_dirty.insert(user.to_owned());
        if self.config.presence_coalesce_ms == 0 {
            self.presence_flush_due();
        } else if !self.presence_flush_armed {
            self.presence_flush_armed = true;
            self.schedule(now + self.config.presence_coalesce_ms, Timer::PresenceFlush);
        }
    }

    /// Sends every changed status to every attached watcher.
    pub(super) fn presence_flush_due(&mut self) {
        self.presence_flush_armed = false;
        let dirty = std::mem::take(&mut self.presence_dirty);
        if self.watchers.is_empty() {
            self.clear_presence_sent();
            return;
        }
        let mut entries = Vec::new();
        for user in dirty {
            let status = self.status_of(&user);
            let last = self.presence_sent.get(&user).copied();
            if last == Some(status) || (last.is_none() && status == PresenceStatus::Offline) {
                continue;
            }
            self.journal_presence_sent(&user);
            if status == PresenceStatus::Offline {
                self.presence_sent.remove(&user);
            } else {
                self.presence_sent.insert(user.clone(), status);
            }
            let peer = self
                .store
                .peek_user(&user)
                .and_then(|u| u.peer.clone())
                .unwrap_or_else(|| Peer {
                    id: user.clone(),
                    name: user.clone(),
                });
            entries.push(PresenceEntry { user: peer, status });
        }
        if entries.is_empty() {
            return;
        }
        let mut watchers: Vec<SessionId> = self.watchers.iter().cloned().collect();
        watchers.sort();
        for w in watchers {
            // Detached watchers get a full list when they resume instead of a backlog.
            let attached = self.store.session(&w).is_some_and(|s| s.conn.is_some());
            if attached {
                for entry in &entries {
                    self.push(
                        &w,
                        ServerMsg::PresenceChanged {
                            entry: entry.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Forgets what watchers were told (noted for a cluster transaction's undo).
    fn clear_presence_sent(&mut self) {
        if self.txn.is_some() {
            let users: Vec<UserId> = self.presence_sent.keys().cloned().collect();
            for user in users {
                self.journal_presence_sent(&user);
            }
        }
        self.presence_sent.clear();
    }

    /// `set-status`: available or busy (offline is not a choice).
    pub(super) fn set_status(&mut self, user: &Peer, status: PresenceStatus, now: u64) -> Handled {
        if status == PresenceStatus::Offline {
            return refuse(
                ErrorCode::InvalidArgument,
                "status must be available or busy",
            );
        }
        self.store.set_chosen_status(&user.id, status);
        self.broadcast_presence(&user.id, now);
        Ok(())
    }
}
