//! Budgets: token buckets that refill continuously, plus a count of refused frames so
//! that a client that keeps flooding is closed. A socket's message budget is its own
//! while it lives (so one tab's flood does not silence another tab), but it starts
//! from the most depleted budget its identity left behind, so reconnecting refills
//! nothing. Rejoin attempts are budgeted per identity and per client IP, hellos per
//! client IP. Acks and pings are never charged: they answer the server's own traffic.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// A budget's size and refill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Bucket size: how many frames may arrive at once after a quiet spell.
    pub burst: u32,
    /// Refused frames tolerated before the socket is closed. The count starts over
    /// once the bucket is back to half full.
    pub max_violations: u32,
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Within budget: handle it.
    Allowed,
    /// Over budget: refuse it, keep the socket.
    Refused,
    /// Over budget once too often: refuse it and close the socket.
    Flood,
}

/// Token bucket, on the clock handed in (epoch ms).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    refill_at: u64,
    violations: u32,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(limit: &RateLimit, now: u64) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            refill_at: now,
            violations: 0,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: u64) {
        let elapsed = now.saturating_sub(self.refill_at) as f64 / 1000.0;
        self.refill_at = now;
        self.tokens = (self.tokens + elapsed * limit.per_sec).min(f64::from(limit.burst));
    }

    /// Takes one token for a frame that arrived at `now`.
    pub fn charge(&mut self, limit: &RateLimit, now: u64) -> Charge {
        let burst = f64::from(limit.burst);
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            if self.tokens >= burst / 2.0 {
                self.violations = 0;
            }
            return Charge::Allowed;
        }
        self.violations += 1;
        if self.violations > limit.max_violations {
            Charge::Flood
        } else {
            Charge::Refused
        }
    }

    /// Tokens it would hold at `now`.
    pub fn tokens_at(&self, limit: &RateLimit, now: u64) -> f64 {
        let elapsed = now.saturating_sub(self.refill_at) as f64 / 1000.0;
        (self.tokens + elapsed * limit.per_sec).min(f64::from(limit.burst))
    }

    /// Whichever of the two holds fewer tokens at `now`.
    pub fn more_depleted(&self, other: &TokenBucket, limit: &RateLimit, now: u64) -> Self {
        if other.tokens_at(limit, now) < self.tokens_at(limit, now) {
            other.clone()
        } else {
            self.clone()
        }
    }

    /// Full again at `now`: the same as no bucket at all, so it can be forgotten.
    pub fn is_full(&self, limit: &RateLimit, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.refill_at) as f64 / 1000.0;
        self.tokens + elapsed * limit.per_sec >= f64::from(limit.burst)
    }
}

/// Buckets by key, created full on first use and forgotten once full again.
#[derive(Debug)]
pub struct Budgets<K> {
    limit: RateLimit,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq + Clone> Budgets<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
        }
    }

    pub fn charge(&mut self, key: &K, now: u64) -> Charge {
        let limit = self.limit;
        match self.buckets.get_mut(key) {
            Some(b) => b.charge(&limit, now),
            None => {
                let mut b = TokenBucket::full(&limit, now);
                let charge = b.charge(&limit, now);
                self.buckets.insert(key.clone(), b);
                charge
            }
        }
    }

    /// The bucket kept for `key`, if any.
    pub fn get(&self, key: &K) -> Option<&TokenBucket> {
        self.buckets.get(key)
    }

    /// Keeps the more depleted of `bucket` and what is kept for `key`.
    pub fn carry(&mut self, key: &K, bucket: &TokenBucket, now: u64) {
        let limit = self.limit;
        match self.buckets.get_mut(key) {
            Some(kept) => *kept = kept.more_depleted(bucket, &limit, now),
            None => {
                self.buckets.insert(key.clone(), bucket.clone());
            }
        }
    }

    /// Forgets buckets that are full again.
    pub fn prune(&mut self, now: u64) {
        let limit = self.limit;
        self.buckets.retain(|_, b| !b.is_full(&limit, now));
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Who a rejoin attempt is counted against: the identity and the client IP both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RejoinKey {
    User(String),
    Ip(IpAddr),
}

/// Every budget the engine keeps.
#[derive(Debug)]
pub struct AllBudgets {
    /// The most depleted message budget of each identity's sockets: where its next
    /// socket starts.
    pub messages: Budgets<String>,
    /// Hellos, per client IP.
    pub hellos: Budgets<IpAddr>,
    /// Rejoin attempts, per identity.
    pub rejoins_by_user: Budgets<RejoinKey>,
    /// Rejoin attempts, per client IP.
    pub rejoins_by_ip: Budgets<RejoinKey>,
}

impl AllBudgets {
    pub fn prune(&mut self, now: u64) {
        self.messages.prune(now);
        self.hellos.prune(now);
        self.rejoins_by_user.prune(now);
        self.rejoins_by_ip.prune(now);
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.hellos.is_empty()
            && self.rejoins_by_user.is_empty()
            && self.rejoins_by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_sec: 10.0,
        burst: 4,
        max_violations: 2,
    };

    fn charge_n(bucket: &mut TokenBucket, n: usize, now: u64) -> Vec<Charge> {
        (0..n).map(|_| bucket.charge(&LIMIT, now)).collect()
    }

    #[test]
    fn a_full_bucket_allows_one_burst_then_refuses() {
        let mut bucket = TokenBucket::full(&LIMIT, 1_000);
        assert_eq!(charge_n(&mut bucket, 4, 1_000), vec![Charge::Allowed; 4]);
        assert_eq!(bucket.charge(&LIMIT, 1_000), Charge::Refused);
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate_and_never_past_the_burst() {
        let patient = RateLimit {
            max_violations: 100,
            ..LIMIT
        };
        let mut bucket = TokenBucket::full(&patient, 0);
        for _ in 0..4 {
            bucket.charge(&patient, 0);
        }
        // 10 per second: one token every 100 ms.
        assert_eq!(bucket.charge(&patient, 99), Charge::Refused);
        assert_eq!(bucket.charge(&patient, 100), Charge::Allowed);
        assert_eq!(bucket.charge(&patient, 100), Charge::Refused);
        // A refused frame costs nothing: the half token from 150 ms counts at 200 ms.
        assert_eq!(bucket.charge(&patient, 150), Charge::Refused);
        assert_eq!(bucket.charge(&patient, 200), Charge::Allowed);
        // A long quiet spell refills to the burst size, not beyond it.
        let allowed = (0..10)
            .filter(|_| bucket.charge(&patient, 60_000) == Charge::Allowed)
            .count();
        assert_eq!(allowed, 4);
    }

    #[test]
    fn persistent_refusals_become_a_flood() {
        let mut bucket = TokenBucket::full(&LIMIT, 0);
        charge_n(&mut bucket, 4, 0);
        assert_eq!(
            charge_n(&mut bucket, 3, 0),
            vec![Charge::Refused, Charge::Refused, Charge::Flood]
        );
        assert_eq!(bucket.charge(&LIMIT, 0), Charge::Flood);
    }

    #[test]
    fn refusals_are_forgiven_once_the_bucket_is_half_full_again() {
        let mut bucket = TokenBucket::full(&LIMIT, 0);
        charge_n(&mut bucket, 4, 0);
        assert_eq!(charge_n(&mut bucket, 2, 0), vec![Charge::Refused; 2]);
        // 300 ms later: 3 tokens, one spent, 2 left = half the burst: forgiven.
        assert_eq!(bucket.charge(&LIMIT, 300), Charge::Allowed);
        charge_n(&mut bucket, 2, 300);
        assert_eq!(charge_n(&mut bucket, 2, 300), vec![Charge::Refused; 2]);
        assert_eq!(bucket.charge(&LIMIT, 300), Charge::Flood);
    }

    #[test]
    fn a_clock_that_steps_back_adds_nothing() {
        let mut bucket = TokenBucket::full(&LIMIT, 10_000);
        charge_n(&mut bucket, 4, 10_000);
        assert_eq!(bucket.charge(&LIMIT, 5_000), Charge::Refused);
    }

    #[test]
    fn budgets_are_per_key_and_forgotten_once_full() {
        let mut budgets = Budgets::new(LIMIT);
        for _ in 0..4 {
            assert_eq!(budgets.charge(&"mallory", 0), Charge::Allowed);
        }
        assert_eq!(budgets.charge(&"mallory", 0), Charge::Refused);
        // Another key has its own bucket.
        assert_eq!(budgets.charge(&"alice", 0), Charge::Allowed);
        budgets.prune(100);
        assert!(!budgets.is_empty());
        // 400 ms at 10/s refills both.
        budgets.prune(400);
        assert!(budgets.is_empty());
    }

    #[test]
    fn the_more_depleted_bucket_is_carried() {
        let mut budgets = Budgets::new(LIMIT);
        let mut flooded = TokenBucket::full(&LIMIT, 0);
        charge_n(&mut flooded, 6, 0);
        budgets.carry(&"mallory", &TokenBucket::full(&LIMIT, 0), 0);
        budgets.carry(&"mallory", &flooded, 0);
        budgets.carry(&"mallory", &TokenBucket::full(&LIMIT, 0), 0);
        // A new socket starting from what is kept has nothing to spend.
        let mut next = budgets.get(&"mallory").unwrap().clone();
        assert_eq!(next.charge(&LIMIT, 0), Charge::Flood);
    }

    #[test]
    fn fractional_rates_refill_slowly() {
        let per_min = RateLimit {
            per_sec: 2.0 / 60.0,
            burst: 2,
            max_violations: 100,
        };
        let mut b = TokenBucket::full(&per_min, 0);
        assert_eq!(b.charge(&per_min, 0), Charge::Allowed);
        assert_eq!(b.charge(&per_min, 0), Charge::Allowed);
        assert_eq!(b.charge(&per_min, 29_000), Charge::Refused);
        assert_eq!(b.charge(&per_min, 30_000), Charge::Allowed);
    }
}
