//! Presence: who is online and whether they are available, for sessions that asked.

use super::{refuse, Handled, ServerEngine};
use crate::engine::store::Store;
use crate::protocol::*;

impl<S: Store> ServerEngine<S> {
    /// Offline without sessions, busy in a call, else what the user chose.
    fn status_of(&self, user: &str) -> PresenceStatus {
        if self.store.sessions_of(user).is_empty() {
            PresenceStatus::Offline
        } else if !self.store.calls_of(user).is_empty() {
            PresenceStatus::Busy
        } else {
            self.store.chosen_status(user)
        }
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

    /// Tells every attached watcher the current status of `user`.
    pub(super) fn broadcast_presence(&mut self, user: &str) {
        if self.watchers.is_empty() {
            return;
        }
        let peer = self
            .store
            .sessions_of(user)
            .first()
            .and_then(|s| self.store.session(s))
            .map(|s| s.user.clone())
            .unwrap_or_else(|| Peer {
                id: user.to_owned(),
                name: user.to_owned(),
            });
        let entry = PresenceEntry {
            user: peer,
            status: self.status_of(user),
        };
        let mut watchers: Vec<SessionId> = self.watchers.iter().cloned().collect();
        watchers.sort();
        for w in watchers {
            // Detached watchers get a full list when they resume instead of a backlog.
            let attached = self.store.session(&w).is_some_and(|s| s.conn.is_some());
            if attached {
                self.push(
                    &w,
                    ServerMsg::PresenceChanged {
                        entry: entry.clone(),
                    },
                );
            }
        }
    }

    /// `set-status`: available or busy (offline is not a choice).
    pub(super) fn set_status(&mut self, user: &Peer, status: PresenceStatus) -> Handled {
        if status == PresenceStatus::Offline {
            return refuse(
                ErrorCode::InvalidArgument,
                "status must be available or busy",
            );
        }
        self.store.set_chosen_status(&user.id, status);
        self.broadcast_presence(&user.id);
        Ok(())
    }
}
