#![allow(dead_code)]

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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

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
    // Where: the frames of the code under test (the bound is disarmed, so capturing and
    // formatting may allocate).
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let mut shown = 0;
    for line in bt.lines() {
        let l = line.trim();
        let ours = ["loggate", "kafka_protocol", "snap::", "lzzzz", "flate2", "miniz", "zstd"]
            .iter()
            .any(|k| l.contains(k));
        if ours && !l.contains("loggate_fuzz") && !l.contains("harness::") && !l.starts_with("at ") {
            let _ = writeln!(std::io::stderr(), "loggate-fuzz:   in {l}");
            shown += 1;
            if shown == 6 {
                break;
            }
        }
    }
    std::process::abort();
}

static BOUND: AtomicUsize = AtomicUsize::new(0);

/// Allocations of at least this size are "huge" in [`skip_huge`] mode.
static HUGE: AtomicUsize = AtomicUsize::new(1 << 30);
static SKIP_HUGE: AtomicBool = AtomicBool::new(false);
/// Huge allocations let through in [`skip_huge`] mode.
pub static HUGE_SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Fuzzing aid, never used by the replay test: from now on an allocation of `threshold`
/// bytes or more is neither counted nor refused but served by an unreserved anonymous mapping
/// (`MAP_NORESERVE`), so that the fuzzer can explore past a known defect whose symptom is
/// reserving capacity from a wire count (the decoder then fails on the missing elements
/// and frees it). Smaller over-allocations still abort. Call before any huge allocation.
pub fn skip_huge(threshold: usize) {
    HUGE.store(threshold.max(1 << 20), Relaxed);
    SKIP_HUGE.store(true, Relaxed);
}

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE.load(Relaxed) && layout.align() <= 4096 && SKIP_HUGE.load(Relaxed)
}

extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
}

fn map_huge(size: usize) -> *mut u8 {
    const PROT_READ_WRITE: i32 = 0x1 | 0x2;
    const MAP_PRIVATE_ANONYMOUS_NORESERVE: i32 = 0x02 | 0x20 | 0x4000;
    HUGE_SKIPPED.fetch_add(1, Relaxed);
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let p = unsafe { mmap(std::ptr::null_mut(), size, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS_NORESERVE, -1, 0) };
    if p as isize == -1 {
        std::ptr::null_mut()
    } else {
        p
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            return map_huge(layout.size());
        }
        self.grow(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            return map_huge(layout.size()); // anonymous mappings are zeroed
        }
        self.grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `ptr` came from `map_huge` with this size.
            unsafe { munmap(ptr, layout.size()) };
            return;
        }
        unsafe { System.dealloc(ptr, layout) };
        self.shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if is_huge(&layout) || is_huge(&new_layout) {
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are valid for the smaller of the two sizes.
                unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
                unsafe { self.dealloc(ptr, layout) };
            }
            return new;
        }
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
