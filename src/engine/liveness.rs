//! The heartbeat watchdog shared by both engines.
//!
//! A socket can look open long after the path under it died (a laptop lid, a NAT
//! rebinding, a proxy that stopped forwarding). So each side watches when it last heard
//! anything from the peer: silence for a whole `timeout` means the link is dead. The
//! client also makes sure the peer hears from it: after `interval` without sending, it
//! pings (the server answers every ping, so a live link is never silent for long). It
//! also probes with a ping after `interval` without *hearing* anything, even while it is
//! busy sending: a server holding its acknowledgements (its store is slow or away) still
//! answers pings at once, and that answer is what keeps a busy link from being declared
//! dead.
//!
//! Plain data on the engines' simulated clock: `now` is handed in, nothing is read.

/// What the watchdog says about a link at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing heard for a whole timeout: treat the link as dead.
    Dead,
    /// Alive, and nothing sent for an interval: send a ping.
    PingDue,
    /// Alive; nothing to do yet.
    Alive,
}

/// When the peer was last heard from and this side last sent, against the heartbeat
/// timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    interval_ms: u64,
    timeout_ms: u64,
    last_heard: u64,
    last_sent: u64,
    /// When the last ping went out.
    last_ping: u64,
}

impl Liveness {
    /// Ping after `interval_ms` without sending; dead after `timeout_ms` without hearing.
    pub fn new(interval_ms: u64, timeout_ms: u64) -> Self {
        Self {
            interval_ms,
            timeout_ms,
            last_heard: 0,
            last_sent: 0,
            last_ping: 0,
        }
    }

    /// Adopt the peer's timers (the client takes the server's from its welcome).
    pub fn set_timers(&mut self, interval_ms: u64, timeout_ms: u64) {
        self.interval_ms = interval_ms;
        self.timeout_ms = timeout_ms;
    }

    /// Something (anything) arrived from the peer at `now`; a new link counts as heard
    /// at its start.
    pub fn heard(&mut self, now: u64) {
        self.last_heard = now;
    }

    /// This side sent something at `now`.
    pub fn sent(&mut self, now: u64) {
        self.last_sent = now;
    }

    /// This side sent a ping at `now`.
    pub fn pinged(&mut self, now: u64) {
        self.last_sent = now;
        self.last_ping = now;
    }

    /// When the peer was last heard from.
    pub fn last_heard(&self) -> u64 {
        self.last_heard
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// The instant the link counts as dead unless something arrives before.
    pub fn dead_at(&self) -> u64 {
        self.last_heard + self.timeout_ms
    }

    /// The instant a ping is due: an interval after this side last sent anything, or
    /// an interval after it last heard anything (and pinged), whichever comes first.
    pub fn ping_at(&self) -> u64 {
        let probe = self.last_heard.max(self.last_ping) + self.interval_ms;
        (self.last_sent + self.interval_ms).min(probe)
    }

    pub fn is_dead(&self, now: u64) -> bool {
        now >= self.dead_at()
    }

    /// Dead beats a due ping: a dead link is not pinged.
    pub fn check(&self, now: u64) -> Check {
        if self.is_dead(now) {
            Check::Dead
        } else if now >= self.ping_at() {
            Check::PingDue
        } else {
            Check::Alive
        }
    }

    /// When to check again: the earlier of the ping and the death deadline, and always
    /// later than `now` (so a timer loop cannot spin on one instant).
    pub fn next_check(&self, now: u64) -> u64 {
        self.ping_at().min(self.dead_at()).max(now + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the client's loop on a simulated clock: at each check, ping if due, then
    /// come back at `next_check`. The peer answers every ping after `rtt` ms while
    /// `peer_alive(t)` holds. Returns ping times and the instant the link was declared
    /// dead (if before `until`).
    fn run(
        interval: u64,
        timeout: u64,
        rtt: u64,
        until: u64,
        peer_alive: impl Fn(u64) -> bool,
    ) -> (Vec<u64>, Option<u64>) {
        let mut l = Liveness::new(interval, timeout);
        l.heard(0);
        l.sent(0);
        let mut pings = Vec::new();
        let mut pongs: Vec<u64> = Vec::new();
        let mut now = 1;
        while now <= until {
            // Deliver answers due by now (in order).
            pongs.retain(|&at| {
                if at <= now {
                    l.heard(at);
                    false
                } else {
                    true
                }
            });
            match l.check(now) {
                Check::Dead => return (pings, Some(now)),
                Check::PingDue => {
                    pings.push(now);
                    l.pinged(now);
                    if peer_alive(now) {
                        pongs.push(now + rtt);
                    }
                }
                Check::Alive => {}
            }
            let next = l.next_check(now);
            // Wake earlier for an answer in flight, as a socket event would.
            now = pongs.iter().copied().min().map_or(next, |p| p.min(next));
        }
        (pings, None)
    }

    #[test]
    fn a_live_link_is_pinged_every_interval_and_never_declared_dead() {
        let (pings, dead) = run(1_500, 4_500, 40, 60_000, |_| true);
        assert_eq!(dead, None);
        assert_eq!(pings.len(), 40);
        assert!(pings.windows(2).all(|w| w[1] - w[0] == 1_500), "{pings:?}");
    }

    #[test]
    fn a_silent_peer_is_declared_dead_one_timeout_after_it_was_last_heard() {
        // The peer answers until t = 10 s, then the path dies.
        let (pings, dead) = run(1_500, 4_500, 40, 60_000, |t| t < 10_000);
        let last_answered = pings.iter().copied().filter(|&t| t < 10_000).max().unwrap();
        assert_eq!(dead, Some(last_answered + 40 + 4_500));
        // It kept pinging while waiting, but not after it gave up.
        assert!(pings.iter().any(|&t| t > 10_000));
        assert!(pings.iter().all(|&t| t < dead.unwrap()));
    }

    #[test]
    fn a_busy_sender_that_hears_nothing_probes_once_per_interval() {
        let mut l = Liveness::new(1_000, 3_000);
        l.heard(0);
        l.sent(0);
        // Sending every 100 ms: no ping while the peer answers…
        for t in (100..=900).step_by(100) {
            l.sent(t);
            assert_eq!(l.check(t), Check::Alive);
        }
        // …but an interval of silence from the peer asks for one, and only one.
        l.sent(1_000);
        assert_eq!(l.check(1_000), Check::PingDue);
        l.pinged(1_000);
        for t in (1_100..=1_900).step_by(100) {
            l.sent(t);
            assert_eq!(l.check(t), Check::Alive, "at {t}");
        }
        assert_eq!(l.check(2_000), Check::PingDue);
        // The answer arrives: quiet again until the peer is silent for an interval.
        l.pinged(2_000);
        l.heard(2_050);
        l.sent(2_100);
        assert_eq!(l.check(2_900), Check::Alive);
        assert_eq!(l.check(3_050), Check::PingDue);
    }

    #[test]
    fn dead_wins_over_a_due_ping() {
        let mut l = Liveness::new(1_000, 3_000);
        l.heard(0);
        l.sent(0);
        assert_eq!(l.check(999), Check::Alive);
        assert_eq!(l.check(1_000), Check::PingDue);
        assert_eq!(l.check(2_999), Check::PingDue);
        assert_eq!(l.check(3_000), Check::Dead);
        l.heard(2_500);
        assert_eq!(l.check(3_000), Check::PingDue);
        l.sent(3_000);
        assert_eq!(l.check(3_000), Check::Alive);
        assert_eq!(l.dead_at(), 5_500);
    }

    #[test]
    fn next_check_is_the_earlier_deadline_and_always_in_the_future() {
        let mut l = Liveness::new(1_500, 4_500);
        l.heard(1_000);
        l.sent(1_000);
        assert_eq!(l.next_check(1_000), 2_500);
        // Sending without hearing anything does not push the ping back: the silent
        // peer is probed (once), then the death deadline comes first.
        l.sent(5_000);
        assert_eq!(l.check(5_000), Check::PingDue);
        l.pinged(5_000);
        assert_eq!(l.next_check(5_000), 5_500);
        // Past both deadlines the next check is still strictly later than now.
        assert_eq!(l.next_check(9_000), 9_001);
    }

    #[test]
    fn adopted_timers_apply_to_the_next_check() {
        let mut l = Liveness::new(1_500, 4_500);
        l.heard(0);
        l.sent(0);
        l.set_timers(10_000, 30_000);
        assert_eq!((l.interval_ms(), l.timeout_ms()), (10_000, 30_000));
        assert_eq!(l.check(5_000), Check::Alive);
        assert!(!l.is_dead(29_999));
        assert!(l.is_dead(30_000));
    }
}
