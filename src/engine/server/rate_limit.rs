//! The per-socket message budget: a token bucket that refills continuously, plus a
//! count of refused frames so that a socket that keeps flooding is closed.

/// The budget of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_sec: u32,
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

/// Token bucket of one socket, on the clock handed in (epoch ms).
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

    /// Takes one token for a frame that arrived at `now`.
    pub fn charge(&mut self, limit: &RateLimit, now: u64) -> Charge {
        let rate = f64::from(limit.per_sec);
        let burst = f64::from(limit.burst);
        let elapsed = now.saturating_sub(self.refill_at) as f64 / 1000.0;
        self.refill_at = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_sec: 10,
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
}
