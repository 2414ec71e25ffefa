//! Record -> log conversion (`loggate::ingest::convert::push_logs`) for a raw topic and a
//! `.json` topic, and decode + convert of one lz4 record batch (the server's CPU path from
//! Produce partition bytes to log entries, without TLS, framing and storage).
//!
//! `cargo bench -p loggate --bench convert`; time per iteration / 1,000 = per record.

#[path = "../crates/records/tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::Write;

use bytes::Bytes;
use common::{v2_batch, v2_record_body, with_length, Rng};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loggate::ingest::catalog::ValueFormat;
use loggate::ingest::convert::{push_logs, BatchContext, ConvertStats};
use loggate_records::{decode_records, DecodeOptions, Record};

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

fn records(values: &[Vec<u8>]) -> Vec<Record> {
    values
        .iter()
        .map(|v| Record { timestamp_ms: Some(1_700_000_000_000), key: None, value: Some(Bytes::copy_from_slice(v)), headers: vec![] })
        .collect()
}

fn lz4_batch(values: &[Vec<u8>]) -> Bytes {
    let mut blob = Vec::new();
    for (i, v) in values.iter().enumerate() {
        blob.extend(with_length(v2_record_body(i as i64, i as i64, None, Some(v), &[])));
    }
    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
    e.write_all(&blob).unwrap();
    Bytes::from(v2_batch(3, values.len() as i32, 1_700_000_000_000, &e.finish().unwrap()))
}

fn convert(records: Vec<Record>, format: ValueFormat, ctx: &BatchContext) -> Vec<loggate_storage::LogEntry> {
    let mut out = Vec::with_capacity(records.len());
    let mut stats = ConvertStats::default();
    for r in records {
        push_logs(r, format, ctx, &mut out, &mut stats);
    }
    assert_eq!(stats.json_fallbacks, 0);
    out
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let ctx = BatchContext { arrival_time_ms: 1_700_000_000_500, source: Bytes::from_static(b"127.0.0.1:53122") };
    let raw = lines(&mut rng);
    let json = objects(&mut rng);

    let mut g = c.benchmark_group("convert");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for (name, values, format) in [("raw", &raw, ValueFormat::Raw), ("json", &json, ValueFormat::Json)] {
        let recs = records(values);
        g.bench_function(name, |b| {
            b.iter_batched(|| recs.clone(), |r| convert(r, format, &ctx), BatchSize::SmallInput)
        });
    }
    g.finish();

    let opts = DecodeOptions::default();
    let mut g = c.benchmark_group("decode+convert");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for (name, values, format) in [("raw-lz4", &raw, ValueFormat::Raw), ("json-lz4", &json, ValueFormat::Json)] {
        let input = lz4_batch(values);
        g.bench_function(name, |b| {
            b.iter(|| {
                let batches = decode_records(black_box(input.clone()), &opts).unwrap();
                let recs = batches.into_iter().flat_map(|b| b.records).collect();
                convert(recs, format, &ctx)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
