//! A counting global allocator for the fuzz targets and their replay test.
//!
//! It tracks the bytes currently allocated by all threads and the peak since the last
//! [`begin`]. While a limit is armed, an allocation that would take the live bytes above
//! it prints one line to stderr and aborts the process, before the memory is asked for:
//! libFuzzer saves the input as a crash, and the replay test's child process dies with
//! the file it was running named in its output. Aborting at the allocation (rather than
//! checking afterwards) also catches the sizes taken from wire counts that would
//! otherwise fail or exhaust the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counted.
pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Live bytes the current input may reach (`usize::MAX`: unarmed).
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static BASELINE: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    #[inline]
    fn grow(&self, by: usize) {
        let now = CURRENT.fetch_add(by, Relaxed).saturating_add(by);
        PEAK.fetch_max(now, Relaxed);
        let limit = LIMIT.load(Relaxed);
        if now > limit {
            over_limit(by, now);
        }
    }

    #[inline]
    fn shrink(&self, by: usize) {
        CURRENT.fetch_sub(by, Relaxed);
    }
}

#[cold]
fn over_limit(asked: usize, now: usize) -> ! {
    // Disarm first: the report below must not recurse into this check.
    LIMIT.store(usize::MAX, Relaxed);
    let base = BASELINE.load(Relaxed);
    let _ = writeln!(
        std::io::stderr(),
        "loggate-fuzz: ALLOCATION BOUND EXCEEDED: an allocation of {asked} bytes would make \
         the input's live allocations {} bytes, over its bound of {} bytes",
        now.saturating_sub(base),
        BOUND.load(Relaxed),
    );
    std::process::abort();
}

static BOUND: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.grow(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        self.shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            self.grow(new_size - layout.size());
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if new_size < layout.size() {
            self.shrink(layout.size() - new_size);
        }
        p
    }
}

/// Starts measuring one input: peak reset, and (if armed) at most `bound` bytes more than
/// are live now may be allocated until [`end`].
pub fn begin(bound: usize, armed: bool) {
    let now = CURRENT.load(Relaxed);
    BASELINE.store(now, Relaxed);
    BOUND.store(bound, Relaxed);
    PEAK.store(now, Relaxed);
    LIMIT.store(if armed { now.saturating_add(bound) } else { usize::MAX }, Relaxed);
}

/// Stops measuring; returns the peak of live bytes above the baseline during the input.
pub fn end() -> usize {
    LIMIT.store(usize::MAX, Relaxed);
    PEAK.load(Relaxed).saturating_sub(BASELINE.load(Relaxed))
}
