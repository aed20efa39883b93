//! When the next connection attempt goes: at once for the first, then exponential
//! backoff with equal jitter, so a storm of clients dropped together spreads out.

use crate::engine::SplitMix;

/// The retry schedule of one engine.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    /// Attempts made since the last success (0: the next one goes at once).
    pub(super) attempt: u32,
    /// The second attempt waits about this long, doubling up to `max_ms`.
    base_ms: u64,
    max_ms: u64,
    /// Jitter only: no secrecy needed.
    rng: SplitMix,
    /// After `server-restarting`, until this time retries do not back off past the
    /// second attempt's delay: the server is coming back, not overloaded.
    hold_until: Option<u64>,
}

impl Backoff {
    pub(super) fn new(base_ms: u64, max_ms: u64, seed: u64) -> Self {
        Self {
            attempt: 0,
            base_ms,
            max_ms,
            rng: SplitMix(seed),
            hold_until: None,
        }
    }

    /// Until `until`, keep every retry at about the base delay (see `hold_until`).
    pub(super) fn hold_short_until(&mut self, until: u64) {
        self.hold_until = Some(until);
    }

    /// [`Backoff::delay`], held short while a server restart is expected.
    pub(super) fn delay_at(&mut self, now: u64) -> u64 {
        if self.hold_until.is_some_and(|t| now < t) && self.attempt > 1 {
            let attempt = std::mem::replace(&mut self.attempt, 1);
            let d = self.delay();
            self.attempt = attempt;
            return d;
        }
        self.delay()
    }

    /// How long to wait before the next attempt, given the attempts made so far.
    pub(super) fn delay(&mut self) -> u64 {
        if self.attempt == 0 {
            return 0;
        }
        let exp = self.attempt.saturating_sub(1).min(20);
        let cap = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        // Equal jitter: half fixed, half random, so a storm of clients spreads out but
        // nobody waits much longer than the schedule.
        let half = cap / 2;
        half + (self.rng.next_f64() * half as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(b: &mut Backoff, attempts: std::ops::RangeInclusive<u32>) -> Vec<u64> {
        attempts
            .map(|a| {
                b.attempt = a;
                b.delay()
            })
            .collect()
    }

    #[test]
    fn after_a_restart_notice_retries_stay_at_the_base_delay_until_the_hold_ends() {
        let mut b = Backoff::new(250, 5_000, 9);
        b.hold_short_until(10_000);
        for attempt in 2..=8 {
            b.attempt = attempt;
            let d = b.delay_at(5_000);
            assert!((125..=250).contains(&d), "attempt {attempt}: {d}");
        }
        b.attempt = 8;
        assert!(
            b.delay_at(10_000) >= 2_500,
            "the hold is over: back off again"
        );
    }

    #[test]
    fn the_first_attempt_goes_at_once() {
        let mut b = Backoff::new(250, 5_000, 1);
        assert_eq!(b.delay(), 0);
        assert_eq!(b.delay(), 0);
    }

    #[test]
    fn delays_double_within_equal_jitter_and_stop_at_the_cap() {
        let mut b = Backoff::new(250, 5_000, 7);
        for (i, d) in delays(&mut b, 1..=12).into_iter().enumerate() {
            let cap = (250u64 << i).min(5_000);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {}: {d} not in [{}, {cap}]",
                i + 1,
                cap / 2
            );
        }
    }

    #[test]
    fn huge_attempt_counts_neither_overflow_nor_pass_the_cap() {
        let mut b = Backoff::new(u64::MAX / 2, 60_000, 3);
        for a in [21, 64, 1_000, u32::MAX] {
            b.attempt = a;
            let d = b.delay();
            assert!((30_000..=60_000).contains(&d), "attempt {a}: {d}");
        }
    }

    #[test]
    fn jitter_repeats_per_seed_and_differs_between_seeds() {
        let run = |seed| delays(&mut Backoff::new(250, 5_000, seed), 1..=8);
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        // Clients dropped together do not all retry at one instant.
        let fifth: Vec<u64> = (0..20)
            .map(|seed| {
                let mut b = Backoff::new(250, 5_000, seed);
                b.attempt = 5;
                b.delay()
            })
            .collect();
        let distinct: std::collections::BTreeSet<u64> = fifth.iter().copied().collect();
        assert!(distinct.len() > 10, "{fifth:?}");
    }
}
