//! A byte budget for request frames that follows the bytes actually received.
//!
//! A connection takes budget a chunk at a time as its frame's bytes arrive, and holds it
//! until the request is answered. Taking budget incrementally has a trap: two connections
//! each holding part of a large frame, each waiting for the other's budget, would wait
//! forever. So a chunk that leaves its frame unfinished is granted only when afterwards
//! every unfinished frame can still be finished one after another (the banker's
//! algorithm: in order of the bytes each still needs, each fits in what is free plus what
//! the ones before it give back). A chunk that finishes its frame never makes the budget
//! unsafe, so small requests wait only while the budget is really spent, and never behind
//! a large one (no FIFO queue). A frame's declared size matters only as the claim the
//! safety check uses; it reserves nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

/// The budget was not granted before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("in-flight budget not available in time")]
pub struct Starved;

pub struct Budget {
    state: Mutex<State>,
    released: Notify,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Bytes held by frames read completely (they need nothing more).
    done: usize,
    /// Frames read in part that hold budget: (bytes still needed, claim id) -> bytes held.
    partial: BTreeMap<(usize, u64), usize>,
    next_id: u64,
}

impl State {
    /// Whether every unfinished frame can be finished in turn.
    fn safe(&self) -> bool {
        let mut avail = self.free + self.done;
        match self.partial.last_key_value() {
            None => return true,
            Some(((need, _), _)) if *need <= avail => return true,
            _ => {}
        }
        for (&(need, _), &held) in &self.partial {
            if need > avail {
                return false;
            }
            avail += held;
        }
        true
    }
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Self { state: Mutex::new(State { free: bytes, ..State::default() }), released: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few counters updated without panicking code in between.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes free now (for tests and logs).
    pub fn free(&self) -> usize {
        self.lock().free
    }

    /// A claim for one frame of `want` bytes; it holds nothing until [`Claim::grow`].
    pub fn claim(&self, want: usize) -> Claim<'_> {
        let mut st = self.lock();
        st.next_id += 1;
        Claim { budget: self, id: st.next_id, held: 0, need: want }
    }
}

/// Budget held for one frame; given back when dropped.
pub struct Claim<'a> {
    budget: &'a Budget,
    id: u64,
    held: usize,
    need: usize,
}

impl Claim<'_> {
    /// Bytes this claim holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes `bytes` more (at most what the frame still needs), waiting until that is
    /// free and safe, or until `deadline`.
    pub async fn grow(&mut self, bytes: usize, deadline: Instant) -> Result<(), Starved> {
        let bytes = bytes.min(self.need);
        if bytes == 0 {
            return Ok(());
        }
        loop {
            let released = self.budget.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.try_grow(bytes) {
                return Ok(());
            }
            timeout_at(deadline, released).await.map_err(|_| Starved)?;
        }
    }

    fn try_grow(&mut self, bytes: usize) -> bool {
        let mut st = self.budget.lock();
        if st.free < bytes {
            return false;
        }
        let (held, need) = (self.held + bytes, self.need - bytes);
        let old = (self.held > 0).then(|| st.partial.remove(&(self.need, self.id))).flatten();
        st.free -= bytes;
        if need == 0 {
            st.done += held;
        } else {
            st.partial.insert((need, self.id), held);
            if !st.safe() {
                st.partial.remove(&(need, self.id));
                if let Some(h) = old {
                    st.partial.insert((self.need, self.id), h);
                }
                st.free += bytes;
                return false;
            }
        }
        self.held = held;
        self.need = need;
        true
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.held == 0 {
            return;
        }
        {
            let mut st = self.budget.lock();
            if self.need == 0 {
                st.done -= self.held;
            } else {
                st.partial.remove(&(self.need, self.id));
            }
            st.free += self.held;
        }
        self.budget.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn declared_sizes_reserve_nothing_and_small_frames_do_not_queue_behind_large() {
        let b = Budget::new(1000);
        let mut big: Vec<_> = (0..5).map(|_| b.claim(900)).collect();
        for c in &mut big {
            c.grow(10, soon()).await.unwrap();
        }
        assert_eq!(b.free(), 950);
        let mut small = b.claim(500);
        small.grow(500, soon()).await.unwrap();
        assert_eq!(b.free(), 450);
        drop(small);
        drop(big);
        assert_eq!(b.free(), 1000);
    }

    #[tokio::test]
    async fn two_partial_frames_cannot_deadlock() {
        let b = Budget::new(1000);
        let mut a = b.claim(900);
        a.grow(800, soon()).await.unwrap();
        let mut c = b.claim(500);
        // 200 are free: c may take 64 (a can still finish), not 128 (then neither could).
        c.grow(64, soon()).await.unwrap();
        assert!(c.grow(64, soon()).await.is_err());
        assert_eq!(c.held(), 64);
        a.grow(100, soon()).await.unwrap();
        assert_eq!(b.free(), 36);
        drop(c);
        // a is complete: a small frame that fits still goes ahead
        let mut d = b.claim(100);
        d.grow(100, soon()).await.unwrap();
        drop((a, d));
        let mut c = b.claim(500);
        c.grow(500, soon()).await.unwrap();
        assert_eq!(b.free(), 500);
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_a_release() {
        let b = std::sync::Arc::new(Budget::new(100));
        let mut a = b.claim(100);
        a.grow(100, soon()).await.unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let mut c = b2.claim(60);
            c.grow(60, Instant::now() + Duration::from_secs(5)).await.map(|_| c.held())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert_eq!(waiter.await.unwrap().unwrap(), 60);
        assert_eq!(b.free(), 100);
    }
}
