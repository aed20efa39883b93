//! Small statistics over millisecond samples.

use serde::Serialize;

/// Median, tail and extremes of a set of durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The nearest-rank `q` quantile (0 < q <= 1) of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Sorts a copy of `samples` and summarises it (None when empty).
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    Some(Summary {
        count: s.len(),
        min_ms: s[0],
        median_ms: quantile(&s, 0.5)?,
        p99_ms: quantile(&s, 0.99)?,
        max_ms: s[s.len() - 1],
    })
}

/// The `k`-th (1-based) of sorted samples: with samples as the times at which each of
/// N sessions got somewhere, the time at which `k` of them had (None: fewer did).
pub fn kth(sorted: &[f64], k: usize) -> Option<f64> {
    if k == 0 || k > sorted.len() {
        None
    } else {
        Some(sorted[k - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[7.0], 0.5), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min_ms, s.median_ms, s.max_ms), (1.0, 2.0, 3.0));
    }
}
