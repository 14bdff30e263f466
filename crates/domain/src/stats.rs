//! Statistics of oversight: rates, Wilson intervals and percentiles. Pure arithmetic over counts
//! and samples the store gathers.

use serde::Serialize;

/// A proportion with its 95% Wilson score interval: honest at small counts and near 0 or 1, where
/// the normal approximation fails.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Proportion {
    pub successes: u64,
    pub trials: u64,
    /// `None` with no trials: no evidence is not 0%.
    pub rate: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

pub fn proportion(successes: u64, trials: u64) -> Proportion {
    if trials == 0 {
        return Proportion {
            successes,
            trials,
            rate: None,
            low: None,
            high: None,
        };
    }
    let (low, high) = wilson(successes, trials, Z95);
    Proportion {
        successes,
        trials,
        rate: Some(successes as f64 / trials as f64),
        low: Some(low),
        high: Some(high),
    }
}

/// The Wilson score interval for `successes` out of `trials` at normal quantile `z`.
pub fn wilson(successes: u64, trials: u64, z: f64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = (successes.min(trials)) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n) + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The `q` quantile (0..=1) of `samples` by nearest rank; `None` when empty.
pub fn percentile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
    samples.get(rank.saturating_sub(1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn wilson_matches_known_values() {
        // 8 of 10: Wilson 95% interval is about [0.490, 0.943].
        let (lo, hi) = wilson(8, 10, Z95);
        assert!(close(lo, 0.4902) && close(hi, 0.9433), "{lo} {hi}");
        // 0 of 10 still has a non-zero upper bound.
        let (lo, hi) = wilson(0, 10, Z95);
        assert!(lo == 0.0 && close(hi, 0.2775), "{hi}");
        let p = proportion(0, 0);
        assert_eq!(p.rate, None);
        let p = proportion(95, 100);
        assert_eq!(p.rate, Some(0.95));
        assert!(p.low.unwrap() < 0.95 && p.high.unwrap() > 0.95);
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(50.0));
        assert_eq!(percentile(&mut v, 0.95), Some(95.0));
        assert_eq!(percentile(&mut v, 1.0), Some(100.0));
        assert_eq!(percentile(&mut [], 0.5), None);
        assert_eq!(percentile(&mut [3.0], 0.95), Some(3.0));
    }
}
