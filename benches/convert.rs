//! Record -> log conversion (`loggate::ingest::convert::Converter`) for a raw topic and a
//! `.json` topic: parsing the records of an already decoded (uncompressed) batch and writing
//! their logs, encoded for storage, into an `EntryBatch`; and decode + convert of one lz4
//! record batch (the server's CPU path from Produce partition bytes to logs ready for the
//! shard writer, without TLS, framing and the write itself); and the checks packing makes
//! instead of conversion (`Converter::measure_log`).
//!
//! `cargo bench -p loggate --bench convert`; time per iteration / 1,000 = per record.

#[path = "../crates/records/tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::Write;

use bytes::Bytes;
use common::{v2_batch, v2_record_body, with_length, Rng};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loggate::ingest::catalog::ValueFormat;
use loggate::ingest::convert::{BatchContext, Converter, EventTimeOptions, JsonOptions, TimeField, TimeFormat};
use loggate_records::{decode_batches, DecodeOptions, RawBatch};
use loggate_storage::EntryBatch;

const RECORDS: usize = 1000;
const SIZE: usize = 200;

fn pad(mut s: String, size: usize, rng: &mut Rng) -> String {
    const WORDS: &[&str] = &["request", "completed", "user", "session", "cache", "miss", "upstream", "retry"];
    while s.len() < size {
        s.push(' ');
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s.truncate(size);
    s
}

/// 200-byte log lines.
fn lines(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| {
            let r = rng.next();
            pad(format!("2026-11-23T20:26:{:02}.{:03}Z INFO [checkout-{}] GET /api/v1/orders status=200 trace={r:016x} seq={i}", r % 60, r % 1000, r % 16), SIZE, rng)
                .into_bytes()
        })
        .collect()
}

/// 200-byte JSON objects of 8 fields, as loadgen sends them.
fn objects(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| {
            let r = rng.next();
            let head = format!(
                r#"{{"ts":"2026-11-23T20:26:{:02}.{:03}Z","level":"INFO","service":"checkout","host":"web-{:02}","trace_id":"{r:016x}","status":200,"latency_ms":{}.{},"msg":"GET /api/v1/orders seq={i}"#,
                r % 60, r % 1000, r % 16, r % 900, r % 10
            );
            let mut s = pad(head, SIZE - 2, rng);
            s.push_str("\"}");
            assert!(serde_json::from_str::<serde_json::Value>(&s).is_ok(), "{s}");
            s.into_bytes()
        })
        .collect()
}

/// One record batch of `values`, compressed with `codec` (0 none, 3 lz4).
fn batch(values: &[Vec<u8>], codec: i16) -> Bytes {
    let mut blob = Vec::new();
    for (i, v) in values.iter().enumerate() {
        blob.extend(with_length(v2_record_body(i as i64, i as i64, None, Some(v), &[])));
    }
    if codec == 3 {
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(&blob).unwrap();
        blob = e.finish().unwrap();
    }
    Bytes::from(v2_batch(codec, values.len() as i32, 1_700_000_000_000, &blob))
}

/// The logs of `batches`, as `Ingest` converts them (buffer sized the same way).
fn convert(batches: &[RawBatch], format: ValueFormat, ctx: BatchContext<'_>) -> EntryBatch {
    convert_with(batches, format, ctx, &JsonOptions::NONE)
}

/// [`convert`] with a logstore's `.json` options.
/// The sum of the logs' sizes as packing measures them.
fn measure(batches: &[RawBatch], format: ValueFormat, ctx: BatchContext<'_>) -> usize {
    let mut converter = Converter::new(format, ctx);
    batches.iter().flat_map(RawBatch::records).map(|r| converter.measure_log(&r.unwrap(), None).unwrap()).sum()
}

fn convert_with(batches: &[RawBatch], format: ValueFormat, ctx: BatchContext<'_>, options: &JsonOptions) -> EntryBatch {
    let capacity = batches.iter().map(|b| b.data_len() + b.record_count() * (80 + ctx.source.len())).sum();
    let mut out = EntryBatch::with_capacity(1 << 20, capacity);
    let mut converter = Converter::new(format, ctx).with_json_options(options);
    for batch in batches {
        for record in batch.records() {
            converter.push_logs(&record.unwrap(), &mut out).unwrap();
        }
    }
    assert_eq!(converter.stats().json_fallbacks, 0);
    out
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let ctx = BatchContext { arrival_time_ms: 1_700_000_000_500, source: b"127.0.0.1:53122", tag: None };
    let raw = lines(&mut rng);
    let json = objects(&mut rng);
    let opts = DecodeOptions::default();

    let mut g = c.benchmark_group("convert");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for (name, values, format) in [("raw", &raw, ValueFormat::Raw), ("json", &json, ValueFormat::Json)] {
        let batches = decode_batches(batch(values, 0), &opts).unwrap();
        assert_eq!(convert(&batches, format, ctx).len(), RECORDS);
        g.bench_function(name, |b| b.iter(|| convert(black_box(&batches), format, ctx)));
    }
    // What packing does per record instead (`Converter::measure_log`): the checks and each
    // log's size, nothing written.
    for (name, values, format) in [("raw-measure", &raw, ValueFormat::Raw), ("json-measure", &json, ValueFormat::Json)] {
        let batches = decode_batches(batch(values, 0), &opts).unwrap();
        let logs = convert(&batches, format, ctx).into_entries().unwrap();
        let sizes = logs.iter().map(|l| EntryBatch::from_entries(std::slice::from_ref(l), 1 << 20).unwrap().largest_entry_bytes());
        assert_eq!(measure(&batches, format, ctx), sizes.sum::<usize>());
        g.bench_function(name, |b| b.iter(|| measure(black_box(&batches), format, ctx)));
    }
    // The event time from the objects' `ts` (RFC 3339), every log within the window.
    let timed = JsonOptions {
        time: Some(EventTimeOptions {
            field: TimeField::Named("ts".into()),
            format: TimeFormat::Auto,
            window_past_ms: 3_600_000,
            window_future_ms: 3_600_000,
        }),
        flatten_depth: 0,
    };
    let late = BatchContext { arrival_time_ms: 1_795_465_800_000, ..ctx };
    let batches = decode_batches(batch(&json, 0), &opts).unwrap();
    let logs = convert_with(&batches, ValueFormat::Json, late, &timed).into_entries().unwrap();
    assert!(logs.iter().all(|l| l.event_time_ms != l.arrival_time_ms && l.event_time_ms > 1_795_465_000_000));
    g.bench_function("json-event-time", |b| b.iter(|| convert_with(black_box(&batches), ValueFormat::Json, late, &timed)));
    g.finish();

    let mut g = c.benchmark_group("decode+convert");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for (name, values, format) in [("raw-lz4", &raw, ValueFormat::Raw), ("json-lz4", &json, ValueFormat::Json)] {
        let input = batch(values, 3);
        g.bench_function(name, |b| {
            b.iter(|| {
                let batches = decode_batches(black_box(input.clone()), &opts).unwrap();
                convert(&batches, format, ctx)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
