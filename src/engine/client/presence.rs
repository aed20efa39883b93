//! Presence: who is online, as the server reports it, and our own status.

use super::{ClientEngine, ClientError, Event};
use crate::protocol::*;

impl ClientEngine {
    pub fn presence(&self) -> impl Iterator<Item = &PresenceEntry> {
        self.presence.values()
    }

    pub fn set_status(&mut self, status: PresenceStatus, now: u64) -> Result<u64, ClientError> {
        if status == PresenceStatus::Offline {
            return Err(ClientError::InvalidArgument(
                "status must be available or busy",
            ));
        }
        self.enqueue(ClientMsg::SetStatus { status }, now)
    }

    /// The server's full list (a welcome's snapshot or a presence message).
    pub(super) fn replace_presence(&mut self, entries: Vec<PresenceEntry>) {
        self.presence = entries
            .iter()
            .map(|e| (e.user.id.clone(), e.clone()))
            .collect();
        self.events.push_back(Event::Presence { entries });
    }

    /// One entry changed; offline entries leave the list.
    pub(super) fn presence_changed(&mut self, entry: PresenceEntry) {
        if entry.status == PresenceStatus::Offline {
            self.presence.remove(&entry.user.id);
        } else {
            self.presence.insert(entry.user.id.clone(), entry.clone());
        }
        self.events.push_back(Event::PresenceChanged { entry });
    }
}
