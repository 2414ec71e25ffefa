//! Helpers shared by the integration tests: fixture loading, the manifest, and a
//! minimal encoder used to build the malformed inputs real clients never write.

#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use loggate_records::{BatchInfo, Compression, Header, Record};
use serde_json::Value;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn load(name: &str) -> Bytes {
    let path = fixtures_dir().join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

pub fn manifest() -> Value {
    let text =
        std::fs::read_to_string(fixtures_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// Every fixture entry of the manifest.
pub fn fixtures() -> Vec<Value> {
    manifest()["fixtures"]
        .as_array()
        .expect("fixtures array")
        .clone()
}

/// The bytes `(i * 31 + 7) % 251` the generator uses for large values.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A manifest byte string: null, {"text"}, {"hex"} or {"pattern": n}.
pub fn spec_bytes(v: &Value) -> Option<Bytes> {
    if v.is_null() {
        return None;
    }
    let bytes = if let Some(t) = v.get("text") {
        t.as_str().expect("text").as_bytes().to_vec()
    } else if let Some(h) = v.get("hex") {
        unhex(h.as_str().expect("hex"))
    } else if let Some(n) = v.get("pattern") {
        pattern(n.as_u64().expect("pattern length") as usize)
    } else {
        panic!("unknown byte spec {v}")
    };
    Some(Bytes::from(bytes))
}

pub fn compression(name: &str) -> Compression {
    match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => panic!("unknown codec {other}"),
    }
}

pub fn expected_info(b: &Value) -> BatchInfo {
    let int = |k: &str| b[k].as_i64().unwrap_or_else(|| panic!("batch field {k}"));
    BatchInfo {
        magic: int("magic") as u8,
        compression: compression(b["compression"].as_str().expect("compression")),
        producer_id: int("producer_id"),
        producer_epoch: int("producer_epoch") as i16,
        base_sequence: int("base_sequence") as i32,
        last_offset_delta: int("last_offset_delta") as i32,
        transactional: b["transactional"].as_bool().expect("transactional"),
        control: b["control"].as_bool().expect("control"),
    }
}

pub fn expected_records(b: &Value) -> Vec<Record> {
    if let Some(t) = b.get("records_template") {
        let count = t["count"].as_u64().expect("count");
        let base = t["timestamp_base"].as_i64().expect("timestamp_base");
        let step = t["timestamp_step"].as_i64().expect("timestamp_step");
        let key = t["key"].as_str().expect("key");
        let value = t["value"].as_str().expect("value");
        return (0..count)
            .map(|i| Record {
                timestamp_ms: Some(base + i as i64 * step),
                key: Some(Bytes::from(key.replace("{i}", &i.to_string()))),
                value: Some(Bytes::from(value.replace("{i}", &i.to_string()))),
                headers: vec![],
            })
            .collect();
    }
    b["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| Record {
            timestamp_ms: r["timestamp"].as_i64(),
            key: spec_bytes(&r["key"]),
            value: spec_bytes(&r["value"]),
            headers: r["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| Header {
                    key: spec_bytes(&h["key"]).expect("header key"),
                    value: spec_bytes(&h["value"]),
                })
                .collect(),
        })
        .collect()
}

/// Byte ranges `[start, end)` of the top-level entries of a well-formed payload.
pub fn entry_bounds(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut pos = 0;
    while pos < data.len() {
        let size = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
        out.push((pos, pos + 12 + size));
        pos += 12 + size;
    }
    out
}

// ------------------------------------------------------------------ test encoder

pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_varbytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// The body of one magic-2 record (everything after its length varint).
pub fn v2_record_body(
    ts_delta: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) -> Vec<u8> {
    let mut body = vec![0u8];
    put_varint(&mut body, ts_delta);
    put_varint(&mut body, offset_delta);
    put_varbytes(&mut body, key);
    put_varbytes(&mut body, value);
    put_varint(&mut body, headers.len() as i64);
    for (k, v) in headers {
        put_varbytes(&mut body, Some(k));
        put_varbytes(&mut body, *v);
    }
    body
}

/// A length-prefixed magic-2 record.
pub fn v2_record(offset_delta: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
    with_length(v2_record_body(0, offset_delta, key, value, &[]))
}

pub fn with_length(body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![];
    put_varint(&mut out, body.len() as i64);
    out.extend(body);
    out
}

/// A magic-2 batch around an already encoded (maybe compressed) records blob.
pub fn v2_batch(attributes: i16, count: i32, base_timestamp: i64, blob: &[u8]) -> Vec<u8> {
    let mut b = vec![];
    b.extend(0i64.to_be_bytes());
    b.extend(((49 + blob.len()) as i32).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend([0; 4]);
    b.extend(attributes.to_be_bytes());
    b.extend((count - 1).to_be_bytes());
    b.extend(base_timestamp.to_be_bytes());
    b.extend(base_timestamp.to_be_bytes());
    b.extend((-1i64).to_be_bytes());
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend(count.to_be_bytes());
    b.extend_from_slice(blob);
    fix_v2_crc(&mut b);
    b
}

/// Recomputes the CRC-32C of the magic-2 batch starting at `b[0]`.
pub fn fix_v2_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// One magic-0/1 entry (offset, size, CRC-32, message).
pub fn legacy_message(
    magic: u8,
    attributes: u8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = vec![magic, attributes];
    if magic == 1 {
        m.extend(timestamp.to_be_bytes());
    }
    for field in [key, value] {
        match field {
            None => m.extend((-1i32).to_be_bytes()),
            Some(b) => {
                m.extend((b.len() as i32).to_be_bytes());
                m.extend_from_slice(b);
            }
        }
    }
    let mut out = vec![];
    out.extend(0i64.to_be_bytes());
    out.extend(((4 + m.len()) as i32).to_be_bytes());
    out.extend(crc32fast::hash(&m).to_be_bytes());
    out.extend(m);
    out
}

/// Recomputes the CRC-32 of the magic-0/1 entry starting at `b[0]`.
pub fn fix_legacy_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[16..]);
    b[12..16].copy_from_slice(&crc.to_be_bytes());
}

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
