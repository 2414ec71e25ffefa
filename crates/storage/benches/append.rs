//! `LocalStore::append` of 1,000-entry batches (200-byte `content`, like one decoded Produce
//! partition), with `Written` (acks=1) and `Synced` (acks=-1, one fdatasync per group); the
//! entries come already encoded in an `EntryBatch`, whose building is measured apart
//! (`encode/push` from `LogEntry`s, `encode/writer` from byte slices as the gateway does).
//!
//! `seal/old` and `seal/new` compare what the shard writer does to a request before writing
//! it: one-log frames as before (offset and a CRC-32C per ~290 B frame) against one block
//! frame (its header, then one CRC-32C over the block).
//!
//! `cargo bench -p loggate-storage --bench append`; time per iteration / 1,000 = per entry.
//! Writes a few GB into a temp dir that is removed afterwards.

use std::time::Duration;

use bytes::Bytes;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loggate_storage::local::{codec_bench, LocalStore, LocalStoreOptions};
use loggate_storage::{Durability, EntryBatch, LogEntry, LogStorage, StreamId};

const ENTRIES: usize = 1000;

fn entries() -> Vec<LogEntry> {
    (0..ENTRIES)
        .map(|i| {
            let mut content = format!("2026-11-23T20:26:57.{:03}Z INFO [checkout-3] GET /api/v1/orders status=200 seq={i}", i % 1000);
            while content.len() < 200 {
                content.push_str(" request completed");
            }
            content.truncate(200);
            LogEntry {
                event_time_ms: 1_700_000_000_000 + i as i64,
                arrival_time_ms: 1_700_000_000_500,
                source: Bytes::from_static(b"127.0.0.1:53122"),
                key: None,
                headers: Vec::new(),
                fields: vec![(Bytes::from_static(b"content"), Bytes::from(content))],
                tag: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    let stream = StreamId::new("bench", "append");
    let entries = entries();
    let batch = EntryBatch::from_entries(&entries, usize::MAX).unwrap();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(ENTRIES as u64));
    g.bench_function("push", |b| {
        b.iter(|| EntryBatch::from_entries(black_box(&entries), 1 << 20).unwrap())
    });
    g.bench_function("writer", |b| {
        b.iter(|| {
            let mut out = EntryBatch::with_capacity(1 << 20, batch.bytes_len());
            for e in black_box(&entries) {
                let mut w = out
                    .begin(e.event_time_ms, e.arrival_time_ms, &e.source, None)
                    .fields();
                w.field(&e.fields[0].0, &e.fields[0].1);
                w.finish().unwrap();
            }
            out
        })
    });
    g.finish();

    let block = codec_bench::unsealed_block(batch.clone());
    let old = codec_bench::unsealed_old_frames(&block);
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Elements(ENTRIES as u64));
    // Sealing again in place is the same work; the buffer stays in the cache, as the
    // writer's does right after the converter wrote it.
    let mut frames = old.clone();
    g.bench_function("old", |b| {
        b.iter(|| assert_eq!(codec_bench::seal_old_frames(black_box(&mut frames), 7), ENTRIES as u64))
    });
    let mut frame = block.clone();
    g.bench_function("new", |b| {
        b.iter(|| assert!(codec_bench::seal_new_block(black_box(&mut frame), 7, ENTRIES as u32)))
    });
    let crc_of = |data: &[u8], chunk: usize| data.chunks(chunk).fold(0u32, |a, c| a ^ crc32c::crc32c(c));
    g.bench_function("crc-290B-pieces", |b| b.iter(|| crc_of(black_box(&block), 290)));
    g.bench_function("crc-whole", |b| b.iter(|| crc_of(black_box(&block), usize::MAX)));
    g.finish();

    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(ENTRIES as u64));
    g.measurement_time(Duration::from_secs(4));
    for (name, durability) in [
        ("written", Durability::Written),
        ("synced", Durability::Synced),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || batch.clone(),
                |e| {
                    rt.block_on(store.append(&stream, 0, e, durability))
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    rt.block_on(store.close()).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
