//! The server engine's state, behind a store interface.
//!
//! The engine reads and writes sessions and calls only through [`Store`]. The embedded
//! default is [`MemoryStore`]. A persistent store (Redis) implements the same trait as a
//! write-through cache: it answers reads from memory, loads on a miss, and writes the
//! records the engine touched when [`Store::commit`] is called at the end of every
//! engine input. The engine logic does not change between stores.

use super::reliable::{Inbox, Outbox};
use crate::protocol::{
    CallId, CallState, EndReason, LinkState, Peer, PresenceStatus, ServerMsg, SessionId, UserId,
};
use std::collections::HashMap;

/// A session: what survives a socket drop.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub user: Peer,
    /// SHA-256 of the current resume secret.
    pub secret_hash: [u8; 32],
    /// SHA-256 of the secret the last resume presented, still accepted until the client
    /// shows it received the rotated one (its first frame after that welcome): a welcome
    /// lost with its socket must not lose the session.
    pub prev_secret_hash: Option<[u8; 32]>,
    /// The socket currently attached, if any.
    pub conn: Option<u64>,
    /// When the socket went away (the resume window runs from here).
    pub detached_at: Option<u64>,
    /// What the server sent in this session: the last sequence number, and what the
    /// client has not acknowledged yet (for replay), each with the client sequence
    /// acknowledged when it was first sent, sent again with it on replay, so that an
    /// acknowledgement never arrives before the answer it covers.
    pub outbox: Outbox<ServerMsg>,
    /// The highest client sequence handled.
    pub inbox: Inbox,
    /// The replay buffer overflowed: the session can no longer be resumed.
    pub overflowed: bool,
    pub presence: bool,
    pub call_waiting: bool,
    pub created_at: u64,
}

/// One side of a call.
#[derive(Debug, Clone)]
pub struct Slot {
    pub user: Peer,
    /// The session holding this side (None: ringing callee, or waiting for a rejoin
    /// after its session expired).
    pub session: Option<SessionId>,
    /// SHA-256 of the current rejoin token (active calls only).
    pub token_hash: Option<[u8; 32]>,
    pub link: LinkState,
    /// End of the grace window while `link` is `Reconnecting`.
    pub deadline: Option<u64>,
}

/// A call.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: CallId,
    pub kind: Option<String>,
    pub state: CallState,
    pub caller: Slot,
    pub callee: Slot,
    pub grace_ms: u64,
    pub ring_deadline: Option<u64>,
    /// The caller's link dropped while ringing, at this time.
    pub caller_detached_at: Option<u64>,
    pub metadata: Option<serde_json::Value>,
    pub created_at: u64,
}

impl Call {
    /// The slot of `user`, if a participant.
    pub fn slot_of(&self, user: &str) -> Option<&Slot> {
        if self.caller.user.id == user {
            Some(&self.caller)
        } else if self.callee.user.id == user {
            Some(&self.callee)
        } else {
            None
        }
    }

    pub fn slot_of_mut(&mut self, user: &str) -> Option<&mut Slot> {
        if self.caller.user.id == user {
            Some(&mut self.caller)
        } else if self.callee.user.id == user {
            Some(&mut self.callee)
        } else {
            None
        }
    }

    /// The slot of the participant who is not `user`.
    pub fn other_of(&self, user: &str) -> &Slot {
        if self.caller.user.id == user {
            &self.callee
        } else {
            &self.caller
        }
    }

    pub fn slots(&self) -> [&Slot; 2] {
        [&self.caller, &self.callee]
    }
}

/// A call that ended recently, remembered so a returning page learns why.
#[derive(Debug, Clone)]
pub struct Tombstone {
    pub call: CallId,
    pub reason: EndReason,
    pub at: u64,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub sessions: usize,
    pub sessions_detached: usize,
    pub calls_ringing: usize,
    pub calls_active: usize,
    pub users_online: usize,
}

/// Where the server engine keeps its state. See the module documentation.
pub trait Store: Send {
    fn session(&self, id: &str) -> Option<&Session>;
    fn session_mut(&mut self, id: &str) -> Option<&mut Session>;
    fn put_session(&mut self, session: Session);
    fn take_session(&mut self, id: &str) -> Option<Session>;
    /// Sessions of one identity, oldest first.
    fn sessions_of(&self, user: &str) -> &[SessionId];
    fn session_ids(&self) -> Vec<SessionId>;

    fn call(&self, id: &str) -> Option<&Call>;
    fn call_mut(&mut self, id: &str) -> Option<&mut Call>;
    fn put_call(&mut self, call: Call);
    fn take_call(&mut self, id: &str) -> Option<Call>;
    /// Calls (not ended) that `user` takes part in.
    fn calls_of(&self, user: &str) -> &[CallId];
    /// The call (not ended) between two identities, in either direction.
    fn call_between(&self, a: &str, b: &str) -> Option<&CallId>;
    fn call_ids(&self) -> Vec<CallId>;

    /// The status a user chose (`available` / `busy`); default available.
    fn chosen_status(&self, user: &str) -> PresenceStatus;
    fn set_chosen_status(&mut self, user: &str, status: PresenceStatus);
    /// Every identity with at least one session.
    fn online_users(&self) -> Vec<Peer>;

    fn add_tombstone(&mut self, user: &str, stone: Tombstone);
    fn tombstones(&self, user: &str) -> Vec<Tombstone>;
    /// Forget tombstones older than `before`; true when some remain.
    fn prune_tombstones(&mut self, before: u64) -> bool;

    fn counts(&self) -> StoreCounts;
    /// Called once at the end of every engine input.
    fn commit(&mut self) {}
    /// True when the state outlives the process (then a shutdown keeps calls).
    fn durable(&self) -> bool {
        false
    }
}

#[derive(Debug, Default)]
struct UserEntry {
    peer: Option<Peer>,
    sessions: Vec<SessionId>,
    calls: Vec<CallId>,
    status: Option<PresenceStatus>,
    tombstones: Vec<Tombstone>,
}

impl UserEntry {
    fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.calls.is_empty()
            && self.status.is_none()
            && self.tombstones.is_empty()
    }
}

/// The embedded in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: HashMap<SessionId, Session>,
    calls: HashMap<CallId, Call>,
    users: HashMap<UserId, UserEntry>,
    pairs: HashMap<(UserId, UserId), CallId>,
}

const MAX_TOMBSTONES_PER_USER: usize = 16;

fn pair_key(a: &str, b: &str) -> (UserId, UserId) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn user_mut(&mut self, user: &str) -> &mut UserEntry {
        self.users.entry(user.to_owned()).or_default()
    }

    fn gc_user(&mut self, user: &str) {
        if self.users.get(user).is_some_and(UserEntry::is_empty) {
            self.users.remove(user);
        }
    }
}

impl Store for MemoryStore {
    fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    fn session_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.sessions.get_mut(id)
    }

    fn put_session(&mut self, session: Session) {
        let entry = self.user_mut(&session.user.id);
        entry.peer = Some(session.user.clone());
        if !entry.sessions.contains(&session.id) {
            entry.sessions.push(session.id.clone());
        }
        self.sessions.insert(session.id.clone(), session);
    }

    fn take_session(&mut self, id: &str) -> Option<Session> {
        let session = self.sessions.remove(id)?;
        let user = session.user.id.clone();
        self.user_mut(&user).sessions.retain(|s| s != id);
        self.gc_user(&user);
        Some(session)
    }

    fn sessions_of(&self, user: &str) -> &[SessionId] {
        self.users.get(user).map_or(&[], |u| &u.sessions)
    }

    fn session_ids(&self) -> Vec<SessionId> {
        self.sessions.keys().cloned().collect()
    }

    fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    fn call_mut(&mut self, id: &str) -> Option<&mut Call> {
        self.calls.get_mut(id)
    }

    fn put_call(&mut self, call: Call) {
        for user in [&call.caller.user.id, &call.callee.user.id] {
            let entry = self.users.entry(user.clone()).or_default();
            if !entry.calls.contains(&call.id) {
                entry.calls.push(call.id.clone());
            }
        }
        self.pairs.insert(
            pair_key(&call.caller.user.id, &call.callee.user.id),
            call.id.clone(),
        );
        self.calls.insert(call.id.clone(), call);
    }

    fn take_call(&mut self, id: &str) -> Option<Call> {
        let call = self.calls.remove(id)?;
        let key = pair_key(&call.caller.user.id, &call.callee.user.id);
        if self.pairs.get(&key).is_some_and(|c| c == id) {
            self.pairs.remove(&key);
        }
        for user in [&call.caller.user.id, &call.callee.user.id] {
            self.user_mut(user).calls.retain(|c| c != id);
            self.gc_user(user);
        }
        Some(call)
    }

    fn calls_of(&self, user: &str) -> &[CallId] {
        self.users.get(user).map_or(&[], |u| &u.calls)
    }

    fn call_between(&self, a: &str, b: &str) -> Option<&CallId> {
        self.pairs.get(&pair_key(a, b))
    }

    fn call_ids(&self) -> Vec<CallId> {
        self.calls.keys().cloned().collect()
    }

    fn chosen_status(&self, user: &str) -> PresenceStatus {
        self.users
            .get(user)
            .and_then(|u| u.status)
            .unwrap_or(PresenceStatus::Available)
    }

    fn set_chosen_status(&mut self, user: &str, status: PresenceStatus) {
        self.user_mut(user).status = match status {
            PresenceStatus::Available => None,
            other => Some(other),
        };
        self.gc_user(user);
    }

    fn online_users(&self) -> Vec<Peer> {
        self.users
            .values()
            .filter(|u| !u.sessions.is_empty())
            .filter_map(|u| u.peer.clone())
            .collect()
    }

    fn add_tombstone(&mut self, user: &str, stone: Tombstone) {
        let list = &mut self.user_mut(user).tombstones;
        list.push(stone);
        if list.len() > MAX_TOMBSTONES_PER_USER {
            list.remove(0);
        }
    }

    fn tombstones(&self, user: &str) -> Vec<Tombstone> {
        self.users
            .get(user)
            .map(|u| u.tombstones.clone())
            .unwrap_or_default()
    }

    fn prune_tombstones(&mut self, before: u64) -> bool {
        let mut emptied = Vec::new();
        let mut remain = false;
        for (id, u) in self.users.iter_mut() {
            u.tombstones.retain(|t| t.at >= before);
            remain |= !u.tombstones.is_empty();
            if u.is_empty() {
                emptied.push(id.clone());
            }
        }
        for id in emptied {
            self.users.remove(&id);
        }
        remain
    }

    fn counts(&self) -> StoreCounts {
        let mut c = StoreCounts {
            sessions: self.sessions.len(),
            ..Default::default()
        };
        c.sessions_detached = self.sessions.values().filter(|s| s.conn.is_none()).count();
        for call in self.calls.values() {
            match call.state {
                CallState::Ringing => c.calls_ringing += 1,
                CallState::Active => c.calls_active += 1,
                CallState::Ended => {}
            }
        }
        c.users_online = self
            .users
            .values()
            .filter(|u| !u.sessions.is_empty())
            .count();
        c
    }
}
