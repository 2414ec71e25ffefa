//! A bound on how many lines one kind of refusal may log.
//!
//! Connections refused at accept cost a client nothing but a SYN, so a storm of them could
//! otherwise write tens of thousands of identical lines a second. Each kind of refusal gets
//! [`LINES_PER_SECOND`] lines a second; the next line after a quiet spell says how many
//! were left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one kind of refusal may log per second.
pub const LINES_PER_SECOND: u32 = 10;

/// The window and counts of one kind of line.
#[derive(Debug)]
pub struct LogLimit {
    window: Mutex<(Instant, u32)>,
    suppressed: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self { window: Mutex::new((Instant::now(), 0)), suppressed: AtomicU64::new(0) }
    }
}

impl LogLimit {
    /// Whether a line may be logged now; if so, how many were left out before it.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= LINES_PER_SECOND {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        window.1 += 1;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_per_second_and_the_left_out_counted() {
        let limit = LogLimit::default();
        let start = Instant::now();
        let allowed = (0..1000).filter(|_| limit.allow_at(start).is_some()).count();
        assert_eq!(allowed, LINES_PER_SECOND as usize);
        assert_eq!(limit.allow_at(start + Duration::from_millis(1500)), Some(1000 - u64::from(LINES_PER_SECOND)));
        assert_eq!(limit.allow_at(start + Duration::from_millis(1600)), Some(0));
    }
}
