//! Buffers of encoded entries, handed back by the shard writers once their bytes are
//! written and taken again for the entries of the next batches ([`LocalStore::new_batch`]).
//!
//! Why: a batch of a large request is a buffer of a megabyte or more. Freed after its write
//! and allocated again for the next request, it lands in memory the allocator gave back to
//! the kernel in between, so every one of its pages is faulted in and zeroed again (on a VM
//! whose host reclaims free guest memory, each such page also costs the host a fault; see
//! BENCHMARKS.md). A buffer kept here is memory already in place.
//!
//! What is kept is bounded by constants, whatever passes through: at most [`KEPT`] buffers
//! of [`MIN_KEPT`] to [`MAX_KEPT`] bytes of capacity, the last ones given back (so they
//! follow the sizes of the batches written now). A taken buffer is at most twice the room
//! asked for, so reuse never more than doubles what a batch holds.
//!
//! [`LocalStore::new_batch`]: crate::LogStorage::new_batch

use std::sync::{Mutex, MutexGuard};

/// Most buffers kept at any time (for the whole store, whatever its number of shards).
pub(crate) const KEPT: usize = 8;
/// Smaller buffers are neither kept nor taken from here (the allocator reuses those well).
pub(crate) const MIN_KEPT: usize = 64 << 10;
/// Larger buffers are freed after use.
pub(crate) const MAX_KEPT: usize = 4 << 20;
/// New buffers of at least [`MIN_KEPT`] get their room rounded up to a multiple of this (but
/// at most doubled), so that the next batch of about the same size finds one that fits.
const ROUND: usize = 256 << 10;

/// The kept buffers (empty, of their full capacity).
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    kept: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    fn kept(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for at least `want` bytes and at most twice it: the
    /// smallest kept one that fits, else a new one.
    pub(crate) fn take(&self, want: usize) -> Vec<u8> {
        if !(MIN_KEPT..=MAX_KEPT).contains(&want) {
            return Vec::with_capacity(want);
        }
        let fits = |b: &Vec<u8>| b.capacity() >= want && b.capacity() / 2 <= want;
        {
            let mut kept = self.kept();
            let best = (0..kept.len()).filter(|&i| fits(&kept[i])).min_by_key(|&i| kept[i].capacity());
            if let Some(i) = best {
                return kept.swap_remove(i);
            }
        }
        Vec::with_capacity(want.next_multiple_of(ROUND).min(2 * want).min(MAX_KEPT))
    }

    /// Keeps `buf` (emptied) for a later [`take`](Self::take) if its size is one kept; when
    /// [`KEPT`] are kept already, the one kept longest is freed for it, so that what is kept
    /// follows the sizes of the batches now written. Other sizes are freed.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if !(MIN_KEPT..=MAX_KEPT).contains(&buf.capacity()) {
            return;
        }
        buf.clear();
        let mut kept = self.kept();
        let oldest = (kept.len() >= KEPT).then(|| kept.remove(0));
        kept.push(buf);
        drop(kept);
        drop(oldest);
    }

    /// Buffers kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.kept().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_when_it_fits() {
        let buffers = Buffers::default();
        let mut buf = buffers.take(300_000);
        assert!(buf.capacity() >= 300_000);
        buf.extend_from_slice(&[7; 1000]);
        let at = buf.as_ptr();
        buffers.give(buf);
        assert_eq!(buffers.len(), 1);
        let again = buffers.take(290_000);
        assert_eq!(again.as_ptr(), at, "the kept buffer is reused");
        assert!(again.is_empty());
        assert_eq!(buffers.len(), 0);
    }

    #[test]
    fn no_buffer_more_than_twice_the_room_asked_for() {
        let buffers = Buffers::default();
        buffers.give(Vec::with_capacity(MAX_KEPT));
        let small = buffers.take(MIN_KEPT);
        assert!(small.capacity() < MAX_KEPT);
        assert!(small.capacity() <= 2 * MIN_KEPT, "a new buffer is not rounded past twice the room");
        assert_eq!(buffers.len(), 1, "the large buffer stays kept");
        assert_eq!(buffers.take(MAX_KEPT / 2).capacity(), MAX_KEPT);
    }

    #[test]
    fn what_is_kept_stays_bounded() {
        let buffers = Buffers::default();
        buffers.give(Vec::with_capacity(MAX_KEPT + 1));
        buffers.give(Vec::with_capacity(MIN_KEPT - 1));
        assert_eq!(buffers.len(), 0, "too large and too small buffers are freed");
        for i in 0..3 * KEPT {
            buffers.give(Vec::with_capacity(MIN_KEPT + i * 4096));
        }
        assert_eq!(buffers.len(), KEPT);
        // The last ones given are those kept.
        let oldest = buffers.kept().iter().map(Vec::capacity).min().unwrap();
        assert_eq!(oldest, MIN_KEPT + 2 * KEPT * 4096);
        // Room outside the kept sizes is never taken from the kept buffers.
        assert_eq!(buffers.take(10).capacity(), 10);
        assert_eq!(buffers.take(MAX_KEPT + 1).capacity(), MAX_KEPT + 1);
        assert_eq!(buffers.len(), KEPT);
    }
}
