//! Plain counters and snapshots the backends keep for monitoring. Storage knows nothing of
//! metrics libraries: the gateway reads these and exports them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of [`LatencyHistogram`]'s buckets: fsyncs of an SSD take tens of
/// microseconds to milliseconds, of a busy or network disk up to seconds.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.5, 10.0,
];

/// A fixed-bucket latency histogram updated with relaxed atomics (lock-free, bounded).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// What a [`LatencyHistogram`] holds at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at most that)`, cumulative, [`LATENCY_BOUNDS`] order.
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The cumulative buckets, count and sum now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BOUNDS.len());
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            total += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((*bound, total));
        }
        total += self.buckets[LATENCY_BOUNDS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count: total,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// What one stream (logstore) of the local logstore holds and lost to retention, summed
/// over its open shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream.
    pub stream: crate::StreamId,
    /// Disk space its segment files take (allocated blocks).
    pub disk_bytes: u64,
    /// Segments retention deleted since start.
    pub retention_deleted_segments: u64,
    /// Bytes of those segments.
    pub retention_deleted_bytes: u64,
    /// Shards whose last write failed (or that refuse writes after a failed fsync).
    pub failing_shards: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_everything() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        let at_4ms = s.buckets.iter().find(|(b, _)| *b == 0.004).unwrap().1;
        assert_eq!(at_4ms, 2);
        assert_eq!(s.buckets.last().unwrap().1, 2);
        assert!((s.sum_seconds - 20.00305).abs() < 1e-6);
    }
}
