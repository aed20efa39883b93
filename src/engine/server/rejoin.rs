//! Rejoin tokens: 32 random bytes per participant of an active call, kept only as a
//! hash, compared in constant time, single use (rotated on every rejoin), bound to the
//! call and the identity. A page that lost its session takes its call back with one.

use super::{refuse, Handled, ServerEngine};
use crate::engine::store::{Slot, Store};
use crate::engine::{secret_hash, secret_matches};
use crate::protocol::*;

/// A rejoin token as handed out, and the hash the server keeps instead.
pub(super) struct RejoinToken {
    pub(super) token: String,
    pub(super) hash: [u8; 32],
}

/// Whether `token` is the current rejoin token of `slot`.
fn token_matches(slot: &Slot, token: &str) -> bool {
    slot.token_hash
        .as_ref()
        .is_some_and(|h| secret_matches(token, h))
}

impl<S: Store> ServerEngine<S> {
    /// A fresh token from the engine's entropy.
    pub(super) fn issue_rejoin_token(&mut self) -> RejoinToken {
        let token = self.random_hex(32);
        let hash = secret_hash(&token);
        RejoinToken { token, hash }
    }

    /// `user`'s session `sid` takes back its side of `call_id` with `token`. The token
    /// is rotated; a previous holder learns the call moved; the other side learns the
    /// participant is back (and renegotiates media).
    pub(super) fn rejoin(
        &mut self,
        sid: &str,
        user: &Peer,
        call_id: &str,
        token: &str,
        now: u64,
    ) -> Handled {
        let denied = |engine: &mut Self, why: &str| {
            engine.metrics.rejoins_denied += 1;
            refuse(ErrorCode::RejoinDenied, why)
        };
        if !self.charge_rejoin(sid, &user.id, now) {
            self.metrics.rejoins_denied += 1;
            return refuse(
                ErrorCode::RateLimited,
                "too many rejoin attempts; wait a minute",
            );
        }
        let Some(c) = self.store.call(call_id) else {
            self.metrics.rejoins_denied += 1;
            return refuse(ErrorCode::UnknownCall, "no such call (it may have ended)");
        };
        let Some(slot) = c.slot_of(&user.id) else {
            return denied(self, "this call is not yours");
        };
        if c.state != CallState::Active {
            return denied(self, "only an active call can be rejoined");
        }
        if !token_matches(slot, token) {
            // The usual way to get here: two tabs (or devices) of this person rejoined
            // with one token and the other one won. Say so, so that this one can offer
            // to move the call (with the token the winner now holds).
            let live_elsewhere = slot
                .session
                .as_deref()
                .filter(|holder| *holder != sid)
                .and_then(|holder| self.store.session(holder))
                .is_some_and(|s| s.conn.is_some());
            if live_elsewhere {
                self.metrics.rejoins_denied += 1;
                return refuse(
                    ErrorCode::HeldElsewhere,
                    "another tab or device of yours holds this call now",
                );
            }
            return denied(self, "the rejoin token is wrong or already used");
        }
        let previous = slot.session.clone();
        let rotated = self.issue_rejoin_token();
        {
            let c = self.store.call_mut(call_id).expect("checked");
            let slot = c.slot_of_mut(&user.id).expect("checked");
            slot.session = Some(sid.to_owned());
            slot.token_hash = Some(rotated.hash);
            slot.link = LinkState::Connected;
            slot.deadline = None;
        }
        self.metrics.rejoins += 1;
        if let Some(prev) = previous.filter(|p| p != sid) {
            self.push(
                &prev,
                ServerMsg::CallMoved {
                    call: call_id.to_owned(),
                },
            );
        }
        let info = self.info_for(call_id, sid);
        self.push(
            sid,
            ServerMsg::CallStarted {
                call: Box::new(info),
                rejoin_token: rotated.token,
                rejoined: true,
            },
        );
        // Tell the other side in every case: a fresh page needs fresh media
        // negotiation even when the previous holder never dropped.
        self.notify_reconnected(call_id, &user.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(token_hash: Option<[u8; 32]>) -> Slot {
        Slot {
            user: Peer {
                id: "alice".into(),
                name: "alice".into(),
            },
            session: None,
            token_hash,
            link: LinkState::Reconnecting,
            deadline: None,
        }
    }

    #[test]
    fn only_the_current_token_matches() {
        let current = slot(Some(secret_hash("t-2")));
        assert!(token_matches(&current, "t-2"));
        assert!(!token_matches(&current, "t-1"));
        assert!(!token_matches(&current, ""));
        // A ringing side has no token yet: nothing matches.
        assert!(!token_matches(&slot(None), ""));
    }
}
