//! Property-style checks that no input makes the decoder panic: random bytes, and
//! mutated fixtures whose CRCs are fixed up so the damage reaches the record parser
//! and the decompressors instead of stopping at the CRC check.

mod common;

use bytes::Bytes;
use common::*;
use loggate_records::{decode_records, DecodeOptions};

/// Small limits so mutated length fields cannot make a test slow.
fn opts() -> DecodeOptions {
    DecodeOptions {
        max_decompressed_bytes: 4 << 20,
        max_records: 50_000,
        allow_zstd: true,
    }
}

fn run(data: Vec<u8>) {
    let _ = decode_records(Bytes::from(data), &opts());
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..20_000 {
        let len = rng.below(200);
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make many inputs look like an entry so they get past the first checks.
        if len >= 17 && rng.below(2) == 0 {
            data[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
            data[16] = rng.below(3) as u8;
        }
        run(data);
    }
}

/// Fixes the CRC of every top-level entry whose size field still fits.
fn fix_crcs(data: &mut [u8]) {
    let mut pos = 0;
    while pos + 17 <= data.len() {
        let size = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap());
        let Ok(size) = usize::try_from(size) else {
            return;
        };
        let end = pos + 12 + size;
        if size < 9 || end > data.len() {
            return;
        }
        match data[pos + 16] {
            0 | 1 => fix_legacy_crc(&mut data[pos..end]),
            2 if size >= 49 => fix_v2_crc(&mut data[pos..end]),
            _ => return,
        }
        pos = end;
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(data.len());
        match rng.below(5) {
            0 => data[i] ^= 1 << rng.below(8),
            1 => data[i] = rng.next() as u8,
            2 => data[i] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)],
            3 => data.truncate(i.max(1)),
            _ => {
                let extra: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                data.splice(i..i, extra);
            }
        }
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Rng(0xdead_beef_0bad_f00d);
    for fx in fixtures() {
        let file = fx["file"].as_str().unwrap();
        let original = load(file);
        // The big fixtures are slow to re-check thousands of times in a debug build.
        let rounds = if original.len() > 20_000 { 40 } else { 600 };
        for _ in 0..rounds {
            let mut data = original.to_vec();
            mutate(&mut rng, &mut data);
            if rng.below(4) != 0 {
                fix_crcs(&mut data);
            }
            run(data);
        }
    }
}

#[test]
fn mutated_compressed_payloads_never_panic() {
    // Damage inside the compressed bytes, then a valid batch around them.
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for file in [
        "v2_gzip.bin",
        "v2_snappy.bin",
        "v2_snappy_raw.bin",
        "v2_lz4.bin",
        "v2_zstd.bin",
    ] {
        let original = load(file);
        let codec = i16::from(original[22] & 7);
        let count = i32::from_be_bytes(original[57..61].try_into().unwrap());
        for _ in 0..1500 {
            let mut blob = original[61..].to_vec();
            mutate(&mut rng, &mut blob);
            run(v2_batch(codec, count, 0, &blob));
        }
    }
    for file in [
        "m0_lz4.bin",
        "m1_gzip.bin",
        "m1_snappy.bin",
        "m0_snappy_raw.bin",
    ] {
        let original = load(file);
        let (magic, codec) = (original[16], original[17]);
        let at = if magic == 0 { 26 } else { 34 };
        for _ in 0..1500 {
            let mut value = original[at..].to_vec();
            mutate(&mut rng, &mut value);
            run(legacy_message(magic, codec, 0, None, Some(&value)));
        }
    }
}

#[test]
fn mutated_records_never_panic() {
    // Damage in uncompressed records, re-compressed so it passes the codec too.
    let mut rng = Rng(0xfeed_face_cafe_beef);
    let original = load("v2_none.bin");
    let count = i32::from_be_bytes(original[57..61].try_into().unwrap());
    for _ in 0..3000 {
        let mut records = original[61..].to_vec();
        mutate(&mut rng, &mut records);
        let (codec, blob) = match rng.below(3) {
            0 => (4, zstd::stream::encode_all(&records[..], 1).unwrap()),
            1 => (2, snap::raw::Encoder::new().compress_vec(&records).unwrap()),
            _ => (0, records),
        };
        run(v2_batch(codec, count, 0, &blob));
    }
}
