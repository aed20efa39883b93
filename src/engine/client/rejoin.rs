//! Rejoin records: what a page keeps in storage to get back into a call after a
//! reload or a lost session, the offers made to the app from them (with a countdown to
//! their deadline), and taking a call back.

use super::CallPhase;
use super::{ClientEngine, ClientError, Event, StorageOp, Timer};
use crate::protocol::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rejoin record: what a page keeps in storage to get back into a call after a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinRecord {
    /// Record format version.
    pub v: u32,
    pub call: CallId,
    /// The identity that owns it (records of another identity are foreign).
    pub user: UserId,
    pub token: String,
    pub peer: Peer,
    pub kind: Option<String>,
    pub grace_ms: u64,
    /// Local epoch ms after which the server will have given up on this slot (an
    /// estimate until the server confirms it).
    pub deadline: u64,
    /// Server clock minus this page's clock when the record was written, so that
    /// `deadline + clock_offset` is the deadline on the server's clock: a page whose
    /// clock jumped since can still tell whether the window was open (records of older
    /// versions have 0).
    #[serde(default)]
    pub clock_offset: i64,
}

/// Current format of [`RejoinRecord`].
pub const REJOIN_RECORD_VERSION: u32 = 1;

/// A rejoin the app may offer to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct RejoinOffer {
    /// The call's id.
    pub call: CallId,
    /// The other person, who is waiting.
    pub peer: Peer,
    /// The app's call kind, or `null`.
    pub kind: Option<String>,
    /// When the window closes (local epoch ms, from the server's deadline).
    pub deadline: u64,
    /// Milliseconds left to rejoin.
    pub remaining_ms: u64,
}

/// Why a rejoin offer went away without the user choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(test, not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum RejoinWithdrawn {
    /// The call ended while we were away (see the call-ended event's reason).
    CallEnded,
    /// Another tab or device holds the call live.
    HeldElsewhere,
    /// The app declined it.
    Declined,
    /// The server refused the token.
    Denied,
}

/// The rejoin records this page holds and what it does with them.
#[derive(Debug, Default)]
pub(super) struct Rejoins {
    /// Rejoin records this page holds (its own calls and ones loaded from storage).
    pub(super) records: BTreeMap<CallId, RejoinRecord>,
    /// Records offered to the app (loaded from storage, not held elsewhere).
    pub(super) offers: BTreeMap<CallId, ()>,
    /// Records loaded from storage that no server snapshot has confirmed yet: never
    /// offered (the call may have ended, or the server may not know it) and never
    /// judged expired by this page's clock (it may have jumped) until the server speaks.
    pub(super) unconfirmed: BTreeMap<CallId, ()>,
    /// Calls another tab of this origin holds (reported by the driver).
    pub(super) held_by_other_tab: BTreeMap<CallId, ()>,
    /// Rejoins sent automatically after a session loss.
    pub(super) auto_rejoins: BTreeMap<CallId, ()>,
}

impl ClientEngine {
    /// Another tab of this origin holds (or released) a live call.
    pub fn set_held_by_other_tab(&mut self, call: &str, held: bool, now: u64) {
        if held {
            self.rejoins.held_by_other_tab.insert(call.to_owned(), ());
            if self.rejoins.offers.remove(call).is_some() {
                self.events.push_back(Event::RejoinWithdrawn {
                    call: call.to_owned(),
                    why: RejoinWithdrawn::HeldElsewhere,
                });
            }
        } else if self.rejoins.held_by_other_tab.remove(call).is_some() {
            // The other tab let go (closed or crashed): offer it here (once the server
            // has confirmed the call).
            if self.rejoins.records.contains_key(call) && !self.calls.contains_key(call) {
                self.offer(call, now);
            }
        }
    }

    /// Rejoin records found in storage at start-up. Malformed ones are removed; another
    /// identity's (by `identity_hint`, or once the welcome says who we are) are ignored
    /// and left alone. The rest wait for the server: the first snapshot offers the calls
    /// that still wait for us (with the server's deadline), reports the ones that ended
    /// meanwhile (one `call-ended` naming the peer) and drops the rest. Nothing is
    /// offered, or judged expired by this page's clock, before that.
    pub fn load_rejoin_records(&mut self, records: Vec<RejoinRecord>, _now: u64) {
        for r in records {
            if r.v != REJOIN_RECORD_VERSION || r.token.len() != 64 || r.call.is_empty() {
                self.storage.push_back(StorageOp::Remove(r.call));
                continue;
            }
            let foreign = self
                .config
                .identity_hint
                .as_ref()
                .is_some_and(|me| *me != r.user);
            if foreign {
                continue; // another identity's record: neither offered nor deleted
            }
            if self.calls.contains_key(&r.call) {
                continue;
            }
            let call = r.call.clone();
            self.rejoins.records.insert(call.clone(), r);
            self.rejoins.unconfirmed.insert(call, ());
        }
    }

    /// The server says the call waits for us until `deadline` (local epoch ms): offer
    /// it, unless another tab holds it. An offer already on screen keeps the earlier
    /// deadline: a countdown never goes up.
    pub(super) fn confirm_waiting(&mut self, call: &str, deadline: Option<u64>, now: u64) {
        let offered = self.rejoins.offers.contains_key(call);
        let offset = self.clock_offset;
        self.rejoins.unconfirmed.remove(call);
        let Some(r) = self.rejoins.records.get_mut(call) else {
            return;
        };
        if let Some(d) = deadline {
            r.deadline = if offered { r.deadline.min(d) } else { d };
        }
        r.clock_offset = offset;
        self.storage.push_back(StorageOp::Put(r.clone()));
        if !self.rejoins.held_by_other_tab.contains_key(call) && !offered {
            self.offer(call, now);
        }
    }

    /// Take back a call this identity holds a rejoin token for (offered after a reload,
    /// or held by another tab or device, which is told the call moved).
    pub fn rejoin(&mut self, call: &str, now: u64) -> Result<u64, ClientError> {
        self.check_usable()?;
        let token = self
            .rejoins
            .records
            .get(call)
            .map(|r| r.token.clone())
            .ok_or(ClientError::NoRejoin)?;
        self.rejoins.offers.remove(call);
        self.enqueue(
            ClientMsg::Rejoin {
                call: call.to_owned(),
                token,
            },
            now,
        )
    }

    /// The user does not want the offered call back. The record is deleted; the call
    /// itself ends on the server when its window passes.
    pub fn decline_rejoin(&mut self, call: &str) -> Result<(), ClientError> {
        if self.rejoins.records.remove(call).is_none() {
            return Err(ClientError::NoRejoin);
        }
        self.rejoins.offers.remove(call);
        self.storage.push_back(StorageOp::Remove(call.to_owned()));
        self.events.push_back(Event::RejoinWithdrawn {
            call: call.to_owned(),
            why: RejoinWithdrawn::Declined,
        });
        Ok(())
    }

    /// A refused rejoin: the record is useless (wrong token, or the call is gone), or
    /// another tab or device of ours took the call first.
    pub(super) fn rejoin_refused(&mut self, call: CallId, code: ErrorCode) {
        if code == ErrorCode::HeldElsewhere {
            return self.rejoin_lost_to_another_session(call);
        }
        if !matches!(code, ErrorCode::RejoinDenied | ErrorCode::UnknownCall) {
            return;
        }
        let auto = self.rejoins.auto_rejoins.remove(&call).is_some();
        if auto || self.calls.contains_key(&call) {
            self.end_local(&call, EndReason::ReconnectFailed);
        } else {
            self.forget_record(&call);
            self.events.push_back(Event::RejoinWithdrawn {
                call,
                why: RejoinWithdrawn::Denied,
            });
        }
    }

    /// Another session of ours rejoined the call first (two tabs pressing Rejoin at once):
    /// the call goes on there. The record stays (in one browser the stored one is now
    /// the winner's, with the current token; see [`ClientEngine::handle_stored_record`])
    /// so the app can offer to move the call here with [`ClientEngine::rejoin`].
    fn rejoin_lost_to_another_session(&mut self, call: CallId) {
        if self.rejoins.auto_rejoins.remove(&call).is_some() || self.calls.contains_key(&call) {
            self.calls.remove(&call);
            self.drop_record_here(&call);
            self.events.push_back(Event::CallMoved { call });
            return;
        }
        self.rejoins.offers.remove(&call);
        self.events.push_back(Event::RejoinWithdrawn {
            call,
            why: RejoinWithdrawn::HeldElsewhere,
        });
    }

    /// Another page of this origin wrote a rejoin record (the driver saw the storage
    /// change, or re-read it before a rejoin): a call this page neither holds nor offers
    /// takes the newer token, so moving it here presents the token the current holder
    /// got. An offered call keeps the token it was offered with: pressing Rejoin on a
    /// prompt never silently takes a call that another tab took meanwhile (the server
    /// answers `held-elsewhere`, and the app can offer the move). Records of another
    /// identity, or of a call this page holds, change nothing.
    pub fn handle_stored_record(&mut self, record: RejoinRecord) {
        if self.calls.contains_key(&record.call) || self.rejoins.offers.contains_key(&record.call) {
            return;
        }
        if let Some(r) = self.rejoins.records.get_mut(&record.call) {
            if r.user == record.user && record.token.len() == 64 {
                r.token = record.token;
            }
        }
    }

    /// Forget a record in this page but leave storage alone: after `call-moved` (in
    /// the same browser the stored record is now the new holder's, with the rotated
    /// token, and deleting it would race that tab's write; on another device the stale
    /// record goes when the call ends or its token is refused), and for another
    /// identity's record (a shared browser).
    pub(super) fn drop_record_here(&mut self, call: &str) {
        self.rejoins.records.remove(call);
        self.rejoins.offers.remove(call);
        self.rejoins.unconfirmed.remove(call);
    }

    pub(super) fn forget_record(&mut self, call: &str) {
        if self.rejoins.records.remove(call).is_some() {
            self.storage.push_back(StorageOp::Remove(call.to_owned()));
        }
        self.rejoins.offers.remove(call);
        self.rejoins.unconfirmed.remove(call);
    }

    pub(super) fn offer_of(&self, r: &RejoinRecord, now: u64) -> RejoinOffer {
        RejoinOffer {
            call: r.call.clone(),
            peer: r.peer.clone(),
            kind: r.kind.clone(),
            deadline: r.deadline,
            remaining_ms: r.deadline.saturating_sub(now),
        }
    }

    pub(super) fn offer(&mut self, call: &str, now: u64) {
        if self.rejoins.unconfirmed.contains_key(call) {
            return; // the server has not said the call waits for us
        }
        let Some(r) = self.rejoins.records.get(call) else {
            return;
        };
        let offer = self.offer_of(r, now);
        self.rejoins.offers.insert(call.to_owned(), ());
        self.events.push_back(Event::RejoinAvailable { offer });
        self.timers.schedule(now + 1_000, Timer::Countdown);
    }

    /// Once a second while offers exist: report remaining time, expire the past.
    pub(super) fn countdown(&mut self, now: u64) {
        if self.rejoins.offers.is_empty() {
            return;
        }
        let offered: Vec<CallId> = self.rejoins.offers.keys().cloned().collect();
        for call in offered {
            let Some(deadline) = self.rejoins.records.get(&call).map(|r| r.deadline) else {
                self.rejoins.offers.remove(&call);
                continue;
            };
            if deadline <= now {
                self.forget_record(&call);
                self.events.push_back(Event::RejoinExpired { call });
            } else {
                self.events.push_back(Event::RejoinCountdown {
                    call,
                    remaining_ms: deadline - now,
                });
            }
        }
        if !self.rejoins.offers.is_empty() {
            self.timers.schedule(now + 1_000, Timer::Countdown);
        }
    }

    /// Push every held call's record with a deadline measured from `seen` (the last time
    /// the server surely had us).
    pub(super) fn refresh_records(&mut self, seen: u64) {
        let held: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| c.phase == CallPhase::Active)
            .map(|c| c.id.clone())
            .collect();
        for id in held {
            if let Some(r) = self.rejoins.records.get_mut(&id) {
                r.deadline = seen + r.grace_ms;
                r.clock_offset = self.clock_offset;
                self.storage.push_back(StorageOp::Put(r.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ClientConfig, Event, StorageOp};
    use super::*;

    const NOW: u64 = 1_000_000;

    fn record(call: &str, user: &str, deadline: u64) -> RejoinRecord {
        RejoinRecord {
            v: REJOIN_RECORD_VERSION,
            call: call.into(),
            user: user.into(),
            token: "a".repeat(64),
            peer: Peer {
                id: "bob".into(),
                name: "Bob".into(),
            },
            kind: None,
            grace_ms: 30_000,
            deadline,
            clock_offset: 0,
        }
    }

    /// Loads records and has the server confirm that each call waits for us (what the
    /// first snapshot does), with the record's own deadline.
    fn load_confirmed(e: &mut ClientEngine, records: Vec<RejoinRecord>, now: u64) {
        let waiting: Vec<(CallId, u64)> = records
            .iter()
            .map(|r| (r.call.clone(), r.deadline))
            .collect();
        e.load_rejoin_records(records, now);
        for (call, deadline) in waiting {
            e.confirm_waiting(&call, Some(deadline), now);
        }
    }

    fn engine_of(identity: &str) -> ClientEngine {
        let mut config = ClientConfig::new("token");
        config.identity_hint = Some(identity.into());
        ClientEngine::new(config)
    }

    fn drain(e: &mut ClientEngine) -> (Vec<Event>, Vec<StorageOp>) {
        let events = std::iter::from_fn(|| e.poll_event()).collect();
        let storage = std::iter::from_fn(|| e.poll_storage()).collect();
        (events, storage)
    }

    #[test]
    fn loading_offers_nothing_deletes_bad_records_and_leaves_foreign_ones() {
        let mut e = engine_of("alice");
        let mut old_format = record("c-old", "alice", NOW + 10_000);
        old_format.v = REJOIN_RECORD_VERSION + 1;
        let mut short_token = record("c-short", "alice", NOW + 10_000);
        short_token.token = "abc".into();
        e.load_rejoin_records(
            vec![
                record("c-live", "alice", NOW + 10_000),
                old_format,
                short_token,
                record("c-expired", "alice", NOW),
                record("c-bobs", "carol", NOW + 10_000),
            ],
            NOW,
        );
        let (events, storage) = drain(&mut e);
        assert_eq!(
            storage,
            [
                StorageOp::Remove("c-old".into()),
                StorageOp::Remove("c-short".into()),
            ],
            "another identity's record is neither used nor deleted; one that looks \
             expired by this page's clock waits for the server's verdict"
        );
        assert!(
            events.is_empty(),
            "nothing offered before the server confirms: {events:?}"
        );
        assert!(e.pending_rejoins(NOW).is_empty());
        assert!(e.rejoin_token("c-expired").is_some());
        assert_eq!(e.rejoin_token("c-bobs"), None);
        // The server confirms the live one: offered, with the time that is left.
        e.confirm_waiting("c-live", Some(NOW + 10_000), NOW);
        let (events, _) = drain(&mut e);
        assert!(matches!(
            &events[..],
            [Event::RejoinAvailable { offer }] if offer.call == "c-live" && offer.remaining_ms == 10_000
        ));
        let offers = e.pending_rejoins(NOW + 4_000);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].remaining_ms, 6_000);
    }

    #[test]
    fn a_confirmed_offer_never_gets_a_later_deadline() {
        let mut e = engine_of("alice");
        load_confirmed(&mut e, vec![record("c1", "alice", NOW + 10_000)], NOW);
        drain(&mut e);
        e.confirm_waiting("c1", Some(NOW + 14_000), NOW + 500);
        assert_eq!(e.pending_rejoins(NOW + 1_000)[0].remaining_ms, 9_000);
        e.confirm_waiting("c1", Some(NOW + 8_000), NOW + 1_000);
        assert_eq!(e.pending_rejoins(NOW + 1_000)[0].remaining_ms, 7_000);
    }

    #[test]
    fn the_countdown_ticks_each_second_and_expires_the_offer_at_its_deadline() {
        let mut e = engine_of("alice");
        load_confirmed(&mut e, vec![record("c1", "alice", NOW + 2_500)], NOW);
        drain(&mut e);
        let mut seen = Vec::new();
        while let Some(at) = e.poll_timeout() {
            e.handle_timeout(at);
            let (events, storage) = drain(&mut e);
            seen.push((at - NOW, events, storage));
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(
            seen[0].1,
            [Event::RejoinCountdown {
                call: "c1".into(),
                remaining_ms: 1_500
            }]
        );
        assert_eq!(seen[1].0, 2_000);
        assert_eq!(
            seen[1].1,
            [Event::RejoinCountdown {
                call: "c1".into(),
                remaining_ms: 500
            }]
        );
        assert_eq!(seen[2].0, 3_000);
        assert_eq!(seen[2].1, [Event::RejoinExpired { call: "c1".into() }]);
        assert_eq!(seen[2].2, [StorageOp::Remove("c1".into())]);
        assert!(e.pending_rejoins(NOW + 3_000).is_empty());
        assert_eq!(e.rejoin("c1", NOW + 3_000), Err(ClientError::NoRejoin));
    }

    #[test]
    fn a_call_held_by_another_tab_is_withdrawn_and_offered_again_when_released() {
        let mut e = engine_of("alice");
        load_confirmed(&mut e, vec![record("c1", "alice", NOW + 20_000)], NOW);
        drain(&mut e);
        e.set_held_by_other_tab("c1", true, NOW + 1);
        let (events, _) = drain(&mut e);
        assert_eq!(
            events,
            [Event::RejoinWithdrawn {
                call: "c1".into(),
                why: RejoinWithdrawn::HeldElsewhere
            }]
        );
        assert!(e.pending_rejoins(NOW + 1).is_empty());
        // The other tab closed: the offer comes back with the time that is left.
        e.set_held_by_other_tab("c1", false, NOW + 5_000);
        let (events, _) = drain(&mut e);
        assert!(matches!(
            &events[..],
            [Event::RejoinAvailable { offer }] if offer.remaining_ms == 15_000
        ));
    }

    #[test]
    fn declining_a_rejoin_deletes_its_record_once() {
        let mut e = engine_of("alice");
        load_confirmed(&mut e, vec![record("c1", "alice", NOW + 20_000)], NOW);
        drain(&mut e);
        assert_eq!(e.decline_rejoin("c1"), Ok(()));
        let (events, storage) = drain(&mut e);
        assert_eq!(storage, [StorageOp::Remove("c1".into())]);
        assert_eq!(
            events,
            [Event::RejoinWithdrawn {
                call: "c1".into(),
                why: RejoinWithdrawn::Declined
            }]
        );
        assert_eq!(e.decline_rejoin("c1"), Err(ClientError::NoRejoin));
        assert_eq!(e.rejoin("c1", NOW + 1), Err(ClientError::NoRejoin));
        // The countdown armed by the offer finds nothing left to report.
        e.handle_timeout(NOW + 1_000);
        assert_eq!(drain(&mut e), (vec![], vec![]));
    }
}
