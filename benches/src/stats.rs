//! Latency samples and their summary: percentiles by nearest rank, throughput.

use std::time::Duration;

use serde::Serialize;

/// The latencies of one operation, one per timed call.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    nanos: Vec<u64>,
    wall: Option<Duration>,
}

impl Samples {
    /// Room for `n` calls.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(n),
            wall: None,
        }
    }

    /// Records one call.
    pub fn record(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// For concurrent calls: the wall-clock time they took together, which then
    /// defines the throughput instead of the sum of the latencies.
    pub fn set_wall(&mut self, wall: Duration) {
        self.wall = Some(wall);
    }

    /// Adds the calls of `other` (another task of the same concurrent operation).
    pub fn extend(&mut self, other: &Samples) {
        self.nanos.extend_from_slice(&other.nanos);
    }

    /// How many calls were recorded.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether no call was recorded.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The summary, or `None` when nothing was recorded. `units` is how many
    /// operations one call carried out (1, or e.g. 8 for a group of 8 appends in one
    /// transaction): throughput counts operations, latencies stay per call.
    pub fn summary(&self, units: usize) -> Option<Summary> {
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let p50 = percentile(&sorted, 50)?;
        let p99 = percentile(&sorted, 99)?;
        let spent = match self.wall {
            Some(wall) => wall.as_secs_f64(),
            None => sorted.iter().map(|&n| n as f64).sum::<f64>() / 1e9,
        };
        let operations = (sorted.len() * units.max(1)) as f64;
        let max = sorted.last().copied().unwrap_or_default();
        Some(Summary {
            n: sorted.len(),
            p50_us: p50 as f64 / 1e3,
            p99_us: p99 as f64 / 1e3,
            max_us: max as f64 / 1e3,
            throughput_per_s: if spent > 0.0 { operations / spent } else { 0.0 },
        })
    }
}

/// The `p`-th percentile (0 < p ≤ 100) of ascending `sorted` values by nearest rank:
/// the smallest value such that at least `p` % of the values are at most it, i.e.
/// the value of rank ⌈p·n/100⌉ (1-based). `None` for no values.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (p.min(100) as usize * n).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// What one operation measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Timed calls.
    pub n: usize,
    /// Median latency of a call, in microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency of a call, in microseconds.
    pub p99_us: f64,
    /// The slowest call, in microseconds (in the JSON only).
    pub max_us: f64,
    /// Operations per second: the calls' operations divided by the time spent in
    /// them (their summed latencies, or the wall-clock time for concurrent calls).
    pub throughput_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 99), Some(99));
        assert_eq!(percentile(&values, 100), Some(100));
        assert_eq!(percentile(&values, 1), Some(1));
        // Ranks round up: 50 % of 5 values is rank 3.
        assert_eq!(percentile(&[10, 20, 30, 40, 50], 50), Some(30));
        // 99 % of 10 values is rank 10, the largest.
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99), Some(10));
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn summary_units_and_wall_clock() {
        let mut samples = Samples::default();
        for micros in [10, 20, 30, 40] {
            samples.record(Duration::from_micros(micros));
        }
        let s = samples.summary(1).unwrap();
        assert_eq!(s.n, 4);
        assert!((s.p50_us - 20.0).abs() < 1e-9);
        assert!((s.p99_us - 40.0).abs() < 1e-9);
        assert!((s.max_us - 40.0).abs() < 1e-9);
        // 4 calls in 100 µs.
        assert!((s.throughput_per_s - 40_000.0).abs() < 1e-6);
        // 8 operations per call.
        assert!((samples.summary(8).unwrap().throughput_per_s - 320_000.0).abs() < 1e-3);
        samples.set_wall(Duration::from_micros(50));
        assert!((samples.summary(1).unwrap().throughput_per_s - 80_000.0).abs() < 1e-6);
        assert!(Samples::default().summary(1).is_none());
    }
}
