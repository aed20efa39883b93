//! The two pure engines. Neither reads a clock, touches a socket or storage: drivers
//! hand in inputs with the current time (`now`, epoch milliseconds) and drain outputs.

pub mod client;
pub mod cluster;
pub mod liveness;
pub mod reliable;
pub mod server;
pub mod store;
pub mod vec_map;

use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Random bytes. The server driver uses the operating system's CSPRNG; tests use a
/// seeded generator so that runs repeat.
pub trait Entropy: Send {
    fn fill(&mut self, buf: &mut [u8]);
}

/// A small deterministic generator (SplitMix64). Used for backoff jitter in the client
/// engine (which needs no secrecy) and as a seeded [`Entropy`] in tests. Never used for
/// tokens in a real server.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Entropy for SplitMix {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of a secret's text form: what the server stores instead of the secret.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time comparison of a presented secret against a stored hash.
pub fn secret_matches(presented: &str, stored: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    secret_hash(presented).ct_eq(stored).into()
}

/// A min-queue of deadlines with lazy cancellation: entries are checked against the
/// real state when they fire, so rescheduling never needs to find and remove the old
/// entry (the quinn-proto habit of "timers are hints").
#[derive(Debug)]
pub struct TimerQueue<K: Ord> {
    heap: BinaryHeap<Reverse<(u64, K)>>,
}

impl<K: Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Clone> TimerQueue<K> {
    pub fn schedule(&mut self, at: u64, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_hash() {
        let h = secret_hash("abc");
        assert!(secret_matches("abc", &h));
        assert!(!secret_matches("abd", &h));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn timers_pop_in_order_and_only_when_due() {
        let mut q = TimerQueue::default();
        q.schedule(30, "c");
        q.schedule(10, "a");
        q.schedule(20, "b");
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(25), Some((10, "a")));
        assert_eq!(q.pop_due(25), Some((20, "b")));
        assert_eq!(q.pop_due(25), None);
    }
}
