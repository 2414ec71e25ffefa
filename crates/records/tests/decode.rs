//! Decoding of the kafka-python fixtures (see fixtures/generate.py) and of malformed
//! inputs derived from them or built by the small encoder in `common`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;

use bytes::Bytes;
use common::*;
use loggate_records::{
    decode_records, peek_format, Batch, Compression, DecodeOptions, RecordError,
};

fn decode(data: &[u8]) -> Result<Vec<Batch>, RecordError> {
    decode_records(Bytes::copy_from_slice(data), &DecodeOptions::default())
}

fn with_limit(bytes: usize) -> DecodeOptions {
    DecodeOptions {
        max_decompressed_bytes: bytes,
        ..DecodeOptions::default()
    }
}

#[track_caller]
fn assert_corrupt(r: Result<Vec<Batch>, RecordError>, what: &str) {
    match r {
        Err(RecordError::Corrupt(_)) => {}
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid(r: Result<Vec<Batch>, RecordError>, what: &str) {
    match r {
        Err(RecordError::Invalid(_)) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

// ------------------------------------------------------------------ fixtures

#[test]
fn fixtures_decode_to_the_manifest() {
    for fx in fixtures() {
        let file = fx["file"].as_str().unwrap();
        let data = load(file);
        let batches = decode_records(data, &DecodeOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let expected = fx["batches"].as_array().unwrap();
        assert_eq!(batches.len(), expected.len(), "{file}: batch count");
        for (i, (got, want)) in batches.iter().zip(expected).enumerate() {
            assert_eq!(got.info, expected_info(want), "{file} batch {i}");
            let records = expected_records(want);
            assert_eq!(
                got.records.len(),
                records.len(),
                "{file} batch {i}: record count"
            );
            for (j, (g, w)) in got.records.iter().zip(&records).enumerate() {
                assert_eq!(g, w, "{file} batch {i} record {j}");
            }
        }
    }
}

#[test]
fn manifest_covers_every_fixture_file_and_codec() {
    let listed: BTreeSet<String> = fixtures()
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_owned())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    assert_eq!(listed, on_disk);

    let mut seen = BTreeSet::new();
    for fx in fixtures() {
        for b in fx["batches"].as_array().unwrap() {
            seen.insert((
                b["magic"].as_u64().unwrap(),
                b["compression"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for magic in 0..=2u64 {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            if codec == "zstd" && magic < 2 {
                continue;
            }
            assert!(
                seen.contains(&(magic, codec.to_owned())),
                "no fixture for magic {magic} {codec}"
            );
        }
    }
}

/// The value of the single wrapper message in a magic-0/1 fixture.
fn wrapper_value(data: &[u8]) -> &[u8] {
    let magic = data[16];
    let key_at = if magic == 0 { 18 } else { 26 };
    assert_eq!(
        &data[key_at..key_at + 4],
        &(-1i32).to_be_bytes(),
        "wrapper key is null"
    );
    &data[key_at + 8..]
}

fn lz4_header_checksum(frame: &[u8]) -> (u8, u8) {
    let flg = frame[4];
    let end = 6 + if flg & 0x08 != 0 { 8 } else { 0 } + if flg & 0x01 != 0 { 4 } else { 0 };
    let correct = (xxhash_rust::xxh32::xxh32(&frame[4..end], 0) >> 8) as u8;
    (frame[end], correct)
}

#[test]
fn lz4_magic0_fixtures_carry_the_kafka_3160_header_checksum() {
    for file in ["m0_lz4.bin", "m0_big_lz4.bin"] {
        let (stored, correct) = lz4_header_checksum(wrapper_value(&load(file)));
        assert_ne!(stored, correct, "{file}: the fix-up path is not exercised");
    }
    let (stored, correct) = lz4_header_checksum(wrapper_value(&load("m1_lz4.bin")));
    assert_eq!(stored, correct, "m1_lz4.bin");
    let (stored, correct) = lz4_header_checksum(&load("v2_lz4.bin")[61..]);
    assert_eq!(stored, correct, "v2_lz4.bin");
}

#[test]
fn lz4_broken_header_checksum_is_only_forgiven_for_magic_0() {
    let frame = wrapper_value(&load("m0_lz4.bin")).to_vec();
    let m1 = legacy_message(1, 3, 0, None, Some(&frame));
    assert_corrupt(decode(&m1), "magic 1 wrapper with the magic-0 LZ4 checksum");
    let m0 = legacy_message(0, 3, 0, None, Some(&frame));
    assert!(decode(&m0).is_ok());
}

#[test]
fn snappy_fixtures_use_both_framings() {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    for (file, xerial) in [
        ("m0_snappy.bin", true),
        ("m1_snappy.bin", true),
        ("m1_many_snappy.bin", true),
        ("m0_snappy_raw.bin", false),
        ("m1_snappy_raw.bin", false),
    ] {
        assert_eq!(
            wrapper_value(&load(file)).starts_with(XERIAL),
            xerial,
            "{file}"
        );
    }
    for (file, xerial) in [
        ("v2_snappy.bin", true),
        ("v2_big_snappy.bin", true),
        ("v2_snappy_raw.bin", false),
    ] {
        assert_eq!(load(file)[61..].starts_with(XERIAL), xerial, "{file}");
    }
    // The big value spans many 32 KiB xerial blocks.
    let blob = &load("v2_big_snappy.bin")[61 + 16..];
    let mut blocks = 0;
    let mut rest = blob;
    while !rest.is_empty() {
        let n = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        rest = &rest[4 + n..];
        blocks += 1;
    }
    assert!(blocks > 1, "only {blocks} xerial block");
}

#[test]
fn gzip_fixtures_with_two_members_have_two_members() {
    for (data, blob) in [
        (load("m1_gzip_two_members.bin"), None),
        (load("v2_gzip_two_members.bin"), Some(61)),
    ] {
        let gz = match blob {
            Some(at) => &data[at..],
            None => wrapper_value(&data),
        };
        let members = gz.windows(3).filter(|w| w == &[0x1f, 0x8b, 0x08]).count();
        assert!(members >= 2, "expected two gzip members");
    }
}

#[test]
fn peek_format_reads_the_first_entry() {
    for fx in fixtures() {
        let file = fx["file"].as_str().unwrap();
        let first = &fx["batches"][0];
        let want = (
            first["magic"].as_u64().unwrap() as u8,
            compression(first["compression"].as_str().unwrap()),
        );
        assert_eq!(peek_format(&load(file)), Some(want), "{file}");
    }
    assert_eq!(peek_format(&[]), None);
    assert_eq!(peek_format(&load("v2_gzip.bin")[..22]), None);
    assert_eq!(peek_format(&load("m1_gzip.bin")[..17]), None);
    assert_eq!(
        peek_format(&load("m1_gzip.bin")[..18]),
        Some((1, Compression::Gzip))
    );
}

#[test]
fn empty_input_gives_no_batches() {
    assert!(decode(&[]).unwrap().is_empty());
}

#[test]
fn values_are_zero_copy_slices_of_the_input() {
    let data = load("v2_none.bin");
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let batches = decode_records(data.clone(), &DecodeOptions::default()).unwrap();
    for r in &batches[0].records {
        for b in [&r.key, &r.value]
            .into_iter()
            .flatten()
            .filter(|b| !b.is_empty())
        {
            assert!(
                range.contains(&(b.as_ptr() as usize)),
                "a copied key or value"
            );
        }
        for h in &r.headers {
            assert!(
                h.key.is_empty() || range.contains(&(h.key.as_ptr() as usize)),
                "a copied header key"
            );
        }
    }
}

// ------------------------------------------------------------------ damage

/// Positions to probe in `n` bytes: all of them for small inputs, else about 300.
fn probe_positions(start: usize, end: usize) -> impl Iterator<Item = usize> {
    let step = ((end - start) / 300).max(1);
    (start..end).step_by(step).chain(end.checked_sub(1))
}

#[test]
fn a_flipped_byte_is_a_crc_error() {
    for fx in fixtures() {
        let file = fx["file"].as_str().unwrap();
        let data = load(file);
        let (_, end) = entry_bounds(&data)[0];
        // From the CRC on, every byte of the first entry is covered by its CRC.
        for pos in probe_positions(17, end) {
            let mut bad = data.to_vec();
            bad[pos] ^= 0x10;
            assert_corrupt(decode(&bad), &format!("{file} flipped at {pos}"));
        }
    }
}

#[test]
fn a_truncated_payload_is_corrupt() {
    for fx in fixtures() {
        let file = fx["file"].as_str().unwrap();
        let data = load(file);
        let bounds = entry_bounds(&data);
        for len in probe_positions(1, data.len()).filter(|&l| l < data.len()) {
            let got = decode(&data[..len]);
            match bounds.iter().position(|&(_, end)| end == len) {
                // Cut exactly between entries: the entries before it decode.
                Some(i) => assert_eq!(got.unwrap().len(), i + 1, "{file} cut at {len}"),
                None => assert_corrupt(got, &format!("{file} cut at {len}")),
            }
        }
    }
}

#[test]
fn trailing_bytes_are_corrupt() {
    for file in ["m0_none.bin", "m1_gzip.bin", "v2_none.bin", "v2_zstd.bin"] {
        for extra in [&[0u8][..], &[0; 11], &[0; 12], &[0xff; 40]] {
            let mut data = load(file).to_vec();
            data.extend_from_slice(extra);
            assert_corrupt(decode(&data), &format!("{file} + {} bytes", extra.len()));
        }
    }
}

// ------------------------------------------------------------------ limits

const MIB: usize = 1 << 20;

/// 16 records of a 1 MiB zero value: 16 MiB that compress to almost nothing.
fn bomb_records() -> Vec<u8> {
    let zeros = vec![0u8; MIB];
    (0..16)
        .flat_map(|i| v2_record(i, None, Some(&zeros)))
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn lz4(data: &[u8]) -> Vec<u8> {
    let mut e = lz4_flex::frame::FrameEncoder::new(vec![]);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn snappy_raw(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).unwrap()
}

fn snappy_xerial(data: &[u8]) -> Vec<u8> {
    let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for chunk in data.chunks(32 * 1024) {
        let block = snappy_raw(chunk);
        out.extend((block.len() as i32).to_be_bytes());
        out.extend(block);
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

#[test]
fn decompression_bombs_stop_at_the_limit() {
    let records = bomb_records();
    type Compress = fn(&[u8]) -> Vec<u8>;
    let codecs: [(i16, &str, Compress); 5] = [
        (1, "gzip", gzip),
        (2, "snappy xerial", snappy_xerial),
        (2, "snappy raw", snappy_raw),
        (3, "lz4", lz4),
        (4, "zstd", zstd),
    ];
    for (codec, name, compress) in codecs {
        let batch = v2_batch(codec, 16, 0, &compress(&records));
        assert!(
            batch.len() < MIB,
            "{name}: the bomb is not small ({} bytes)",
            batch.len()
        );
        let small = decode_records(Bytes::from(batch.clone()), &with_limit(MIB));
        assert!(
            matches!(small, Err(RecordError::DecompressedTooLarge { limit: MIB })),
            "{name}: {small:?}"
        );
        // Just under the output size still fails; exactly the size succeeds.
        let under = decode_records(Bytes::from(batch.clone()), &with_limit(records.len() - 1));
        assert!(
            matches!(under, Err(RecordError::DecompressedTooLarge { .. })),
            "{name}: {under:?}"
        );
        let ok = decode_records(Bytes::from(batch), &with_limit(records.len())).unwrap();
        assert_eq!(ok[0].records.len(), 16, "{name}");
        assert!(
            ok[0]
                .records
                .iter()
                .all(|r| r.value.as_ref().unwrap().len() == MIB),
            "{name}"
        );
    }
}

#[test]
fn legacy_decompression_bombs_stop_at_the_limit() {
    let zeros = vec![0u8; MIB];
    let inner: Vec<u8> = (0..16)
        .flat_map(|_| legacy_message(1, 0, 5, None, Some(&zeros)))
        .collect();
    for (codec, compressed) in [
        (1u8, gzip(&inner)),
        (2, snappy_xerial(&inner)),
        (3, lz4(&inner)),
    ] {
        let wrapper = legacy_message(1, codec, 5, None, Some(&compressed));
        let small = decode_records(Bytes::from(wrapper.clone()), &with_limit(MIB));
        assert!(
            matches!(small, Err(RecordError::DecompressedTooLarge { limit: MIB })),
            "codec {codec}: {small:?}"
        );
        let ok = decode_records(Bytes::from(wrapper), &with_limit(inner.len())).unwrap();
        assert_eq!(ok[0].records.len(), 16, "codec {codec}");
    }
}

#[test]
fn the_decompressed_budget_covers_the_whole_call() {
    let one = v2_batch(
        1,
        1,
        0,
        &gzip(&v2_record(0, None, Some(&vec![7u8; 600 * 1024]))),
    );
    let two = [one.clone(), one.clone()].concat();
    assert!(decode_records(Bytes::from(one), &with_limit(MIB)).is_ok());
    let r = decode_records(Bytes::from(two), &with_limit(MIB));
    assert!(
        matches!(r, Err(RecordError::DecompressedTooLarge { limit: MIB })),
        "{r:?}"
    );
}

#[test]
fn zstd_can_be_refused() {
    let opts = DecodeOptions {
        allow_zstd: false,
        ..DecodeOptions::default()
    };
    for file in ["v2_zstd.bin", "v2_many_zstd.bin"] {
        let r = decode_records(load(file), &opts);
        assert!(
            matches!(
                r,
                Err(RecordError::UnsupportedCompression(Compression::Zstd))
            ),
            "{file}: {r:?}"
        );
    }
    // Refused before decompressing: garbage behind a valid CRC gives the same error.
    let garbage = v2_batch(4, 1, 0, b"not zstd at all");
    let r = decode_records(Bytes::from(garbage.clone()), &opts);
    assert!(
        matches!(
            r,
            Err(RecordError::UnsupportedCompression(Compression::Zstd))
        ),
        "{r:?}"
    );
    assert_corrupt(decode(&garbage), "garbage zstd");
    // Other codecs are unaffected.
    assert!(decode_records(load("v2_gzip.bin"), &opts).is_ok());
}

#[test]
fn too_many_records() {
    for (file, count) in [
        ("v2_many_none.bin", 10_000),
        ("v2_many_zstd.bin", 10_000),
        ("m1_many_snappy.bin", 3000),
        ("m0_none.bin", 30),
    ] {
        let at = |max_records| {
            decode_records(
                load(file),
                &DecodeOptions {
                    max_records,
                    ..DecodeOptions::default()
                },
            )
        };
        let r = at(count - 1);
        assert!(
            matches!(r, Err(RecordError::TooManyRecords { limit }) if limit == count - 1),
            "{file}: {r:?}"
        );
        assert!(at(count).is_ok(), "{file}");
    }
    // Counted across batches.
    let r = decode_records(
        load("v2_two_batches.bin"),
        &DecodeOptions {
            max_records: 20,
            ..DecodeOptions::default()
        },
    );
    assert!(
        matches!(r, Err(RecordError::TooManyRecords { limit: 20 })),
        "{r:?}"
    );
}

// ------------------------------------------------------------------ semantics

#[test]
fn base_offset_and_leader_epoch_are_ignored() {
    let mut data = load("v2_none.bin").to_vec();
    data[..8].copy_from_slice(&12345i64.to_be_bytes());
    data[12..16].copy_from_slice(&7i32.to_be_bytes());
    assert_eq!(
        decode(&data).unwrap(),
        decode(&load("v2_none.bin")).unwrap()
    );
    let mut m0 = load("m0_none.bin").to_vec();
    m0[..8].copy_from_slice(&999i64.to_be_bytes());
    assert_eq!(decode(&m0).unwrap(), decode(&load("m0_none.bin")).unwrap());
}

#[test]
fn control_and_transactional_bits_are_reported() {
    let mut data = load("v2_none.bin").to_vec();
    data[22] |= 0x30;
    fix_v2_crc(&mut data);
    let info = &decode(&data).unwrap()[0].info;
    assert!(info.transactional && info.control);
    let info = &decode(&load("v2_transactional.bin")).unwrap()[0].info;
    assert!(info.transactional && !info.control);
    assert_eq!(
        (info.producer_id, info.producer_epoch, info.base_sequence),
        (4242, 7, 100)
    );
}

#[test]
fn no_base_timestamp_means_no_timestamps() {
    let records: Vec<u8> = [
        v2_record(0, Some(b"a"), None),
        v2_record(1, None, Some(b"b")),
    ]
    .concat();
    let batch = decode(&v2_batch(0, 2, -1, &records)).unwrap();
    assert!(batch[0].records.iter().all(|r| r.timestamp_ms.is_none()));
    let batch = decode(&v2_batch(0, 2, 1000, &records)).unwrap();
    assert!(batch[0]
        .records
        .iter()
        .all(|r| r.timestamp_ms == Some(1000)));
}

#[test]
fn invalid_record_batches() {
    let one = v2_record(0, None, Some(b"x"));
    let data = v2_batch(0, 1, 0, &one);
    assert!(decode(&data).is_ok());
    for codec in 5..=7 {
        assert_invalid(
            decode(&v2_batch(codec, 1, 0, &one)),
            &format!("codec {codec}"),
        );
    }
    // lastOffsetDelta does not match the count.
    let mut bad = data.clone();
    bad[23..27].copy_from_slice(&5i32.to_be_bytes());
    fix_v2_crc(&mut bad);
    assert_invalid(decode(&bad), "lastOffsetDelta 5 for one record");
    for count in [0i32, -1, i32::MIN] {
        let mut bad = data.clone();
        bad[57..61].copy_from_slice(&count.to_be_bytes());
        bad[23..27].copy_from_slice(&count.wrapping_sub(1).to_be_bytes());
        fix_v2_crc(&mut bad);
        assert_invalid(decode(&bad), &format!("record count {count}"));
    }
    let mut bad = data.clone();
    bad[16] = 3;
    assert_invalid(decode(&bad), "magic 3");
    // A negative header count, and a null header key.
    let mut body = v2_record_body(0, 0, None, None, &[]);
    body.pop();
    put_varint(&mut body, -2);
    assert_invalid(
        decode(&v2_batch(0, 1, 0, &with_length(body))),
        "negative header count",
    );
    let mut body = v2_record_body(0, 0, None, None, &[]);
    body.pop();
    put_varint(&mut body, 1);
    put_varint(&mut body, -1);
    put_varint(&mut body, -1);
    assert_invalid(
        decode(&v2_batch(0, 1, 0, &with_length(body))),
        "null header key",
    );
}

#[test]
fn corrupt_record_batches() {
    let one = v2_record_body(0, 0, Some(b"k"), Some(b"v"), &[(b"h", None)]);
    // A record length one byte longer or shorter than its fields.
    let mut longer = one.clone();
    longer.push(0);
    assert_corrupt(
        decode(&v2_batch(0, 1, 0, &with_length(longer))),
        "record longer than its fields",
    );
    let shorter = &one[..one.len() - 1];
    let mut blob = with_length(shorter.to_vec());
    blob.push(0);
    assert_corrupt(
        decode(&v2_batch(0, 1, 0, &blob)),
        "record shorter than its fields",
    );
    // Bytes after the last record; fewer records than counted.
    let mut blob = with_length(one.clone());
    blob.push(0);
    assert_corrupt(
        decode(&v2_batch(0, 1, 0, &blob)),
        "trailing byte after the records",
    );
    assert_corrupt(
        decode(&v2_batch(0, 2, 0, &with_length(one.clone()))),
        "one record of two",
    );
    // An overlong varint, a key longer than the record, a negative record length.
    let mut body = vec![0u8];
    body.extend([0x80; 11]);
    assert_corrupt(
        decode(&v2_batch(0, 1, 0, &with_length(body))),
        "overlong timestamp varint",
    );
    let mut body = vec![0u8, 0, 0];
    put_varint(&mut body, 100);
    assert_corrupt(
        decode(&v2_batch(0, 1, 0, &with_length(body))),
        "key past the record",
    );
    let mut blob = vec![];
    put_varint(&mut blob, -3);
    assert_corrupt(decode(&v2_batch(0, 1, 0, &blob)), "negative record length");
    // Timestamp overflow.
    let body = v2_record_body(i64::MAX, 0, None, None, &[]);
    assert_corrupt(
        decode(&v2_batch(0, 1, 1, &with_length(body))),
        "timestamp overflow",
    );
    // A batch length below the header size.
    let mut short = v2_batch(0, 1, 0, &with_length(one));
    short[8..12].copy_from_slice(&40i32.to_be_bytes());
    assert_corrupt(decode(&short[..52]), "batch length 40");
    // Undecodable compressed data behind a valid CRC.
    for codec in 1..=4 {
        assert_corrupt(
            decode(&v2_batch(codec, 1, 0, b"\x00\x01garbage, not compressed")),
            &format!("codec {codec}"),
        );
    }
}

#[test]
fn invalid_message_sets() {
    let plain = legacy_message(1, 0, 1, None, Some(b"inner"));
    assert!(decode(&plain).is_ok());
    assert_invalid(
        decode(&legacy_message(1, 4, 1, None, Some(&zstd(&plain)))),
        "zstd in magic 1",
    );
    for codec in 5..=7 {
        assert_invalid(
            decode(&legacy_message(0, codec, 0, None, Some(b"x"))),
            &format!("codec {codec}"),
        );
    }
    // A compressed inner message.
    let nested = legacy_message(1, 1, 1, None, Some(&gzip(&plain)));
    assert_invalid(
        decode(&legacy_message(1, 1, 1, None, Some(&gzip(&nested)))),
        "compressed inner message",
    );
    // Inner magic differs from the wrapper's.
    let inner0 = legacy_message(0, 0, 0, None, Some(b"inner"));
    assert_invalid(
        decode(&legacy_message(1, 1, 1, None, Some(&gzip(&inner0)))),
        "magic 0 inside magic 1",
    );
    // Empty inner set; null wrapper value.
    assert_invalid(
        decode(&legacy_message(1, 1, 1, None, Some(&gzip(b"")))),
        "empty wrapper",
    );
    assert_invalid(
        decode(&legacy_message(1, 1, 1, None, None)),
        "null wrapper value",
    );
}

#[test]
fn corrupt_message_sets() {
    let inner = legacy_message(1, 0, 1, None, Some(b"inner"));
    // An inner CRC is verified.
    let mut bad_inner = inner.clone();
    *bad_inner.last_mut().unwrap() ^= 1;
    assert_corrupt(
        decode(&legacy_message(1, 1, 1, None, Some(&gzip(&bad_inner)))),
        "inner CRC",
    );
    // A truncated inner message.
    assert_corrupt(
        decode(&legacy_message(
            1,
            1,
            1,
            None,
            Some(&gzip(&inner[..inner.len() - 1])),
        )),
        "truncated inner",
    );
    // Bytes after the value, inside the message.
    let mut extra = inner.clone();
    extra.push(0);
    let size = (extra.len() - 12) as i32;
    extra[8..12].copy_from_slice(&size.to_be_bytes());
    fix_legacy_crc(&mut extra);
    assert_corrupt(decode(&extra), "byte after the value");
    // A key length past the message; a negative size.
    let mut bad = legacy_message(0, 0, 0, Some(b"k"), None);
    bad[18..22].copy_from_slice(&50i32.to_be_bytes());
    fix_legacy_crc(&mut bad);
    assert_corrupt(decode(&bad), "key past the message");
    let mut bad = inner.clone();
    bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    assert_corrupt(decode(&bad), "negative size");
}

// ------------------------------------------------------------------ reused buffers

/// Each record of `batches` as owned values (timestamp, key, value, headers).
type Owned = (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn owned_records(batches: &[loggate_records::RawBatch]) -> Vec<Vec<Owned>> {
    batches
        .iter()
        .map(|b| {
            b.records()
                .map(|r| {
                    let r = r.unwrap();
                    let headers = r.headers.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
                    (r.timestamp_ms, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), headers)
                })
                .collect()
        })
        .collect()
}

#[test]
fn decoding_into_recycled_buffers_gives_the_same_records() {
    use loggate_records::{decode_batches, decode_batches_with, Spare};
    let opts = DecodeOptions::default();
    let mut files: Vec<String> = fixtures().iter().map(|f| f["file"].as_str().unwrap().to_string()).collect();
    // Large outputs first, then small ones decoded into their leftovers, and back.
    files.sort_by_key(|f| std::cmp::Reverse(f.contains("big")));
    let mut spare = Spare::default();
    let mut recycled = 0;
    for file in files.iter().chain(files.iter().rev()) {
        let fresh = decode_batches(load(file), &opts).unwrap();
        let reused = decode_batches_with(load(file), &opts, &mut spare).unwrap();
        assert_eq!(owned_records(&reused), owned_records(&fresh), "{file}");
        let before = spare.len();
        spare.recycle(reused);
        recycled += spare.len().saturating_sub(before);
    }
    assert!(recycled > 0, "no buffer was ever kept");
    assert!(spare.len() <= loggate_records::SPARE_BUFFERS);
}

#[test]
fn a_buffer_still_referred_to_is_not_recycled() {
    use loggate_records::{decode_batches_with, Spare};
    let mut spare = Spare::default();
    let batches = decode_batches_with(load("v2_lz4.bin"), &DecodeOptions::default(), &mut spare).unwrap();
    let kept = batches.clone();
    spare.recycle(batches);
    assert!(spare.is_empty(), "a buffer the clone still reads was recycled");
    let before = owned_records(&kept);
    spare.recycle(kept);
    assert_eq!(spare.len(), 1);
    assert!(!before.is_empty());
}
