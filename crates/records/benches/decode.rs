//! Decoding throughput: `decode_batches` and iterating every record (`<group>/<codec>`), and
//! `decode_records` building owned records (`<group>/<codec>-owned`), and `decode_batches_with`
//! recycling its buffers as the server's decode threads do (`<group>/<codec>-reused`), for record batch v2
//! with every codec and message sets v0/v1 plain and in compressed wrappers. Inputs (1,000
//! records of 200-byte log lines) are built here with the test encoder and the codec crates.
//!
//! `cargo bench -p loggate-records --bench decode`; time per iteration / 1,000 = per record.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::Write;

use bytes::Bytes;
use common::{legacy_message, put_varint, v2_batch, v2_record_body, with_length, Rng};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loggate_records::{decode_batches, decode_batches_with, decode_records, DecodeOptions, RawBatch, Spare};

const RECORDS: usize = 1000;
const SIZE: usize = 200;
const WORDS: &[&str] = &[
    "request", "completed", "user", "session", "cache", "miss", "upstream", "timeout", "retry",
    "order", "payment", "queued", "handler", "db", "query", "took", "rows", "connection",
];

/// `n` log lines of exactly `size` bytes, varied like real logs (so codecs see a realistic ratio).
pub fn log_lines(n: usize, size: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed);
    (0..n)
        .map(|i| {
            let r = rng.next();
            let mut s = format!(
                "2026-11-23T20:{:02}:{:02}.{:03}Z {} [checkout-{}] GET /api/v1/orders status={} bytes={} dur_ms={} trace={:016x} seq={i}",
                r % 60, (r >> 6) % 60, (r >> 12) % 1000,
                ["INFO", "WARN", "DEBUG", "ERROR"][(r >> 22) as usize % 4],
                (r >> 28) % 16, if (r >> 38).is_multiple_of(10) { 503 } else { 200 },
                (r >> 40) % 50000, (r >> 50) % 900, rng.next()
            );
            while s.len() < size {
                s.push(' ');
                s.push_str(WORDS[rng.below(WORDS.len())]);
            }
            s.truncate(size);
            s.into_bytes()
        })
        .collect()
}

fn compress(codec: u8, data: &[u8]) -> Vec<u8> {
    match codec {
        0 => data.to_vec(),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        2 => snap::raw::Encoder::new().compress_vec(data).unwrap(),
        3 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        4 => zstd::encode_all(data, 3).unwrap(),
        _ => unreachable!(),
    }
}

/// One record batch (magic 2) of `values`, compressed with `codec` (attribute bits).
pub fn v2(values: &[Vec<u8>], codec: u8) -> Bytes {
    let mut blob = Vec::new();
    for (i, v) in values.iter().enumerate() {
        blob.extend(with_length(v2_record_body(i as i64, i as i64, None, Some(v), &[])));
    }
    Bytes::from(v2_batch(codec.into(), values.len() as i32, 1_700_000_000_000, &compress(codec, &blob)))
}

/// A message set of `magic` 0/1: plain messages, or one compressed wrapper around them.
fn legacy(values: &[Vec<u8>], magic: u8, codec: u8) -> Bytes {
    let mut set = Vec::new();
    for v in values {
        set.extend(legacy_message(magic, 0, 1_700_000_000_000, None, Some(v)));
    }
    if codec == 0 {
        return Bytes::from(set);
    }
    Bytes::from(legacy_message(magic, codec, 1_700_000_000_000, None, Some(&compress(codec, &set))))
}

const CODECS: [(&str, u8); 5] = [("none", 0), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)];

/// Reads every record of `batches` as a consumer would (all lengths, so nothing is skipped).
fn read_all(batches: &[RawBatch]) -> usize {
    let mut n = 0;
    for batch in batches {
        for record in batch.records() {
            let r = record.unwrap();
            n += r.value.map_or(0, <[u8]>::len) + r.key.map_or(0, <[u8]>::len);
            n += r.headers.map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len)).sum::<usize>();
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let values = log_lines(RECORDS, SIZE);
    let opts = DecodeOptions::default();
    let mut run = |group: &str, name: &str, input: Bytes| {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(RECORDS as u64));
        let n = decode_records(input.clone(), &opts).unwrap().iter().map(|b| b.records.len()).sum::<usize>();
        assert_eq!(n, RECORDS, "{group}/{name}");
        g.bench_function(name, |b| {
            b.iter(|| read_all(&decode_batches(black_box(input.clone()), &opts).unwrap()))
        });
        let mut spare = Spare::default();
        g.bench_function(format!("{name}-reused"), |b| {
            b.iter(|| {
                let batches = decode_batches_with(black_box(input.clone()), &opts, &mut spare).unwrap();
                let n = read_all(&batches);
                spare.recycle(batches);
                n
            })
        });
        g.bench_function(format!("{name}-owned"), |b| {
            b.iter(|| decode_records(black_box(input.clone()), &opts).unwrap())
        });
        g.finish();
    };
    for (name, codec) in CODECS {
        run("v2", name, v2(&values, codec));
    }
    for magic in [0u8, 1] {
        for (name, codec) in CODECS.iter().filter(|(_, c)| *c != 4) {
            run(&format!("v{magic}"), name, legacy(&values, magic, *codec));
        }
    }
    // Varint-heavy small records: 1,000 records of 20 bytes with a key and a header.
    let mut blob = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let body = v2_record_body(i as i64, i as i64, Some(b"key"), Some(&value[..20]), &[(b"h", Some(b"v"))]);
        put_varint(&mut blob, body.len() as i64);
        blob.extend(body);
    }
    run("v2", "none-20B-key-header", Bytes::from(v2_batch(0, RECORDS as i32, 1_700_000_000_000, &blob)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
