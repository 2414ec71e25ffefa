//! Work and memory spent decoding are bounded by the bytes present, not by sizes or
//! counts the input declares (issue 11, defects 4 and 5).
//!
//! Allocation is measured with a counting global allocator (per thread, so the tests of
//! this binary may run in parallel): peak bytes held during one decode are deterministic.
//! CPU is measured where zeroing, which no allocator sees, is the cost: the fastest of a
//! few runs against a bound some hundred times what the fixed decoder needs.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use loggate_records::{decode_batches, decode_records, DecodeOptions, RecordError};

// ------------------------------------------------------------------ counting allocator

struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = CURRENT.try_with(|c| {
        let now = c.get() + delta;
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new blocks coexist while the bytes are copied.
        account(new_size as isize);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        account(-(layout.size() as isize));
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes this thread held at once during
/// it, above what it held before.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

/// The fastest of `runs` runs of `f`.
fn fastest(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn opts(max_decompressed_bytes: usize) -> DecodeOptions {
    DecodeOptions {
        max_decompressed_bytes,
        max_records: 1_000_000,
        allow_zstd: true,
    }
}

const LZ4: i16 = 3;
const SNAPPY: i16 = 2;
const ZSTD: i16 = 4;

// ------------------------------------------------------------------ LZ4

/// An LZ4 frame with a 4 MiB block maximum made of `blocks` compressed blocks of two
/// bytes each (a token announcing one literal, and the literal): `blocks` bytes of output.
fn lz4_tiny_blocks(blocks: usize) -> Vec<u8> {
    let descriptor = [0x60u8, 0x70]; // version 01, independent blocks; 4 MiB blocks
    let mut f = vec![0x04, 0x22, 0x4d, 0x18];
    f.extend(descriptor);
    f.push((xxhash_rust::xxh32::xxh32(&descriptor, 0) >> 8) as u8);
    for i in 0..blocks {
        f.extend(2u32.to_le_bytes());
        f.extend([0x10, b'a' + (i % 26) as u8]);
    }
    f.extend(0u32.to_le_bytes());
    f
}

#[test]
fn lz4_tiny_blocks_cost_cpu_in_proportion_to_their_bytes() {
    // 10,000 blocks, 60 KB: zeroing a 4 MiB block's room for each cost ~0.5 s here; the
    // work the bytes call for is well under a millisecond.
    let frame = lz4_tiny_blocks(10_000);
    let batch = Bytes::from(v2_batch(LZ4, 1, 0, &frame));
    let opts = opts(64 << 20);
    let decoded = decode_batches(batch.clone(), &opts).expect("a valid frame decodes");
    assert_eq!(decoded[0].data_len(), 10_000);
    let took = fastest(3, || drop(decode_batches(batch.clone(), &opts)));
    assert!(took < Duration::from_millis(50), "60 KB of LZ4 blocks took {took:?}");
}

#[test]
fn lz4_small_block_does_not_allocate_the_frame_block_maximum() {
    // Seven 2-byte blocks: the bytes of one (smallest possible) record.
    let frame = lz4_tiny_blocks(7);
    let batch = Bytes::from(v2_batch(LZ4, 1, 0, &frame));
    let (result, peak) = peak_bytes(|| decode_batches(batch.clone(), &opts(64 << 20)));
    assert_eq!(result.expect("decodes")[0].data_len(), 7);
    assert!(peak < 64 << 10, "2-byte LZ4 blocks held {peak} bytes");
}

#[test]
fn lz4_frame_declaring_a_huge_content_size_reserves_only_what_its_bytes_can_hold() {
    // Content size 60 MiB (within the limit), one 2-byte block.
    let descriptor = {
        let mut d = vec![0x68u8, 0x70];
        d.extend((60u64 << 20).to_le_bytes());
        d
    };
    let mut frame = vec![0x04, 0x22, 0x4d, 0x18];
    frame.extend(&descriptor);
    frame.push((xxhash_rust::xxh32::xxh32(&descriptor, 0) >> 8) as u8);
    frame.extend(2u32.to_le_bytes());
    frame.extend([0x10, b'a']);
    frame.extend(0u32.to_le_bytes());
    let batch = Bytes::from(v2_batch(LZ4, 1, 0, &frame));
    let (result, peak) = peak_bytes(|| decode_batches(batch.clone(), &opts(64 << 20)));
    assert!(matches!(result, Err(RecordError::Corrupt(_))), "{result:?}");
    assert!(peak < 64 << 10, "a 34-byte LZ4 frame held {peak} bytes");
}

// ------------------------------------------------------------------ snappy

/// A raw snappy block whose preamble declares `declared` bytes, followed by one literal.
fn snappy_liar(declared: u32) -> Vec<u8> {
    let mut b = vec![];
    let mut n = declared;
    while n >= 0x80 {
        b.push(n as u8 | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
    b.extend([0x00, b'x']); // a 1-byte literal
    b
}

#[test]
fn snappy_declared_length_is_not_allocated_before_the_bytes_back_it() {
    // Within the limit (64 MiB) but far beyond what 7 bytes can decode to.
    let raw = snappy_liar(60 << 20);
    let mut xerial = b"\x82SNAPPY\x00".to_vec();
    xerial.extend(1i32.to_be_bytes());
    xerial.extend(1i32.to_be_bytes());
    xerial.extend((raw.len() as i32).to_be_bytes());
    xerial.extend(&raw);
    for blob in [raw, xerial] {
        let batch = Bytes::from(v2_batch(SNAPPY, 1, 0, &blob));
        let (result, peak) = peak_bytes(|| decode_batches(batch.clone(), &opts(64 << 20)));
        assert!(result.is_err());
        assert!(peak < 64 << 10, "a {}-byte snappy batch held {peak} bytes", batch.len());
        // Also inside a magic-1 wrapper message.
        let wrapper = Bytes::from(legacy_message(1, 2, 0, None, Some(&blob)));
        let (result, peak) = peak_bytes(|| decode_batches(wrapper.clone(), &opts(64 << 20)));
        assert!(result.is_err());
        assert!(peak < 64 << 10, "a snappy wrapper message held {peak} bytes");
    }
}

#[test]
fn honest_snappy_still_decodes() {
    let data: Vec<u8> = (0..100_000).map(|i| b"abcdefgh"[i % 8]).collect();
    let blob = snap::raw::Encoder::new().compress_vec(&data).unwrap();
    let records = [v2_record(0, None, Some(&data))].concat();
    let blob_records = snap::raw::Encoder::new().compress_vec(&records).unwrap();
    assert!(blob.len() * 22 > data.len());
    let batch = Bytes::from(v2_batch(SNAPPY, 1, 0, &blob_records));
    let got = decode_records(batch, &opts(64 << 20)).expect("decodes");
    assert_eq!(got[0].records[0].value.as_deref(), Some(&data[..]));
}

// ------------------------------------------------------------------ zstd

/// A zstd frame without content size whose window descriptor asks for 2^`window_log`
/// bytes, holding one raw block of `data`.
fn zstd_frame(window_log: u8, data: &[u8]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0x00); // no content size, not single segment, no checksum, no dictionary
    f.push((window_log - 10) << 3);
    let header = 1 | ((data.len() as u32) << 3); // last block, raw
    f.extend(&header.to_le_bytes()[..3]);
    f.extend(data);
    f
}

#[test]
fn zstd_frame_cannot_ask_for_a_window_beyond_the_limit() {
    let records = v2_record(0, None, Some(b"hello"));
    let opts = opts(1 << 20);
    // An 8 MiB window is what any client writes; it decodes.
    let ok = Bytes::from(v2_batch(ZSTD, 1, 0, &zstd_frame(23, &records)));
    let got = decode_records(ok, &opts).expect("8 MiB window decodes");
    assert_eq!(got[0].records[0].value.as_deref(), Some(&b"hello"[..]));
    // 128 MiB of window (libzstd's default cap) for a 1 MiB limit and 20 bytes of data.
    let bomb = Bytes::from(v2_batch(ZSTD, 1, 0, &zstd_frame(27, &records)));
    let result = decode_records(bomb, &opts);
    assert!(matches!(result, Err(RecordError::Corrupt(_))), "{result:?}");
    // 2 GiB: never.
    let bomb = Bytes::from(v2_batch(ZSTD, 1, 0, &zstd_frame(31, &records)));
    assert!(decode_records(bomb, &DecodeOptions::default()).is_err());
}

// ------------------------------------------------------------------ counts

#[test]
fn v2_record_count_must_be_backed_by_bytes() {
    // One real record, a declared count of a million (within max_records).
    let count = 1_000_000;
    let batch = Bytes::from(v2_batch(0, count, 0, &v2_record(0, None, Some(b"x"))));
    match decode_batches(batch, &opts(64 << 20)) {
        Err(RecordError::Corrupt(_)) => {}
        Ok(b) => panic!(
            "a {}-byte record section accepted with record_count() = {}",
            b[0].data_len(),
            b[0].record_count()
        ),
        Err(e) => panic!("unexpected error {e}"),
    }
    // The same through a compressed section.
    let blob = lz4_flex::frame::FrameEncoder::new(Vec::new());
    let blob = {
        use std::io::Write;
        let mut enc = blob;
        enc.write_all(&v2_record(0, None, Some(b"x"))).unwrap();
        enc.finish().unwrap()
    };
    let batch = Bytes::from(v2_batch(LZ4, count, 0, &blob));
    assert!(matches!(decode_batches(batch, &opts(64 << 20)), Err(RecordError::Corrupt(_))));
}

#[test]
fn decoding_many_records_holds_memory_proportional_to_them() {
    // 20,000 empty records: the owned records take memory, but in proportion.
    let n = 20_000;
    let blob: Vec<u8> = (0..n).flat_map(|i| v2_record(i, None, None)).collect();
    let batch = Bytes::from(v2_batch(0, n as i32, 0, &blob));
    let (result, peak) = peak_bytes(|| decode_records(batch.clone(), &opts(64 << 20)));
    assert_eq!(result.expect("decodes")[0].records.len(), n as usize);
    let per_record = std::mem::size_of::<loggate_records::Record>();
    assert!(peak <= 2 * n as usize * per_record + (64 << 10), "{peak} bytes for {n} records");
}
