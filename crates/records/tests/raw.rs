//! `decode_batches` and the lazily parsed records of a `RawBatch`: the same records and the
//! same refusals as `decode_records`, the record-level ones reported while iterating.

mod common;

use bytes::Bytes;
use common::*;
use loggate_records::{
    decode_batches, decode_records, Batch, DecodeOptions, RawBatch, Record, RecordError, RecordRef,
};

/// Every record of every batch, or the first error, as `decode_records` would give them.
fn iterate(batches: &[RawBatch]) -> Result<Vec<Vec<Record>>, RecordError> {
    batches
        .iter()
        .map(|b| b.records().map(|r| r.map(|r| owned(&r))).collect())
        .collect()
}

fn owned(r: &RecordRef<'_>) -> Record {
    Record {
        timestamp_ms: r.timestamp_ms,
        key: r.key.map(Bytes::copy_from_slice),
        value: r.value.map(Bytes::copy_from_slice),
        headers: r
            .headers
            .clone()
            .map(|(k, v)| loggate_records::Header {
                key: Bytes::copy_from_slice(k),
                value: v.map(Bytes::copy_from_slice),
            })
            .collect(),
    }
}

/// Decodes `data` both ways and checks they agree: the same records, or both refusing.
fn agree(data: &[u8], opts: &DecodeOptions) {
    let eager = decode_records(Bytes::copy_from_slice(data), opts);
    let lazy = decode_batches(Bytes::copy_from_slice(data), opts).and_then(|batches| {
        let records = iterate(&batches)?;
        Ok((batches, records))
    });
    match (eager, lazy) {
        (Ok(eager), Ok((batches, records))) => {
            assert_eq!(eager.len(), batches.len());
            for ((e, b), r) in eager.iter().zip(&batches).zip(records) {
                assert_eq!(e.info, b.info);
                assert_eq!(e.records.len(), b.record_count());
                assert_eq!(e.records, r);
            }
        }
        (Err(_), Err(_)) => {}
        (eager, lazy) => panic!(
            "decode_records: {:?}, decode_batches: {:?}",
            eager.map(|b| b.len()),
            lazy.map(|(b, _)| b.len())
        ),
    }
}

#[test]
fn fixtures_give_the_same_records_both_ways() {
    for fx in fixtures() {
        let file = fx["file"].as_str().unwrap();
        let data = load(file);
        let batches = decode_batches(data.clone(), &DecodeOptions::default()).unwrap();
        let eager: Vec<Batch> = decode_records(data.clone(), &DecodeOptions::default()).unwrap();
        assert_eq!(
            iterate(&batches).unwrap(),
            eager.into_iter().map(|b| b.records).collect::<Vec<_>>(),
            "{file}"
        );
        agree(&data, &DecodeOptions::default());
    }
}

#[test]
fn headers_and_keys_are_slices_of_the_batch() {
    let body = v2_record_body(
        3,
        0,
        Some(b"k"),
        Some(b"v"),
        &[(b"h1", Some(b"a")), (b"h1", None)],
    );
    let data = Bytes::from(v2_batch(0, 1, 1000, &with_length(body)));
    let batches = decode_batches(data.clone(), &DecodeOptions::default()).unwrap();
    let range = data.as_ptr_range();
    let r = batches[0].records().next().unwrap().unwrap();
    assert_eq!(r.timestamp_ms, Some(1003));
    assert!(range.contains(&r.key.unwrap().as_ptr()) && range.contains(&r.value.unwrap().as_ptr()));
    let headers: Vec<_> = r.headers.clone().collect();
    assert_eq!(
        headers,
        vec![(&b"h1"[..], Some(&b"a"[..])), (&b"h1"[..], None)]
    );
    assert_eq!(r.headers.len(), 2);
    assert!(range.contains(&headers[0].0.as_ptr()));
}

#[test]
fn record_errors_come_while_iterating_and_end_it() {
    let good = v2_record(0, None, Some(b"x"));
    let mut null_header_key = v2_record_body(1, 1, None, None, &[]);
    null_header_key.pop();
    put_varint(&mut null_header_key, 1);
    put_varint(&mut null_header_key, -1);
    put_varint(&mut null_header_key, -1);
    let mut longer = v2_record_body(1, 1, None, Some(b"y"), &[]);
    longer.push(0);
    let overflow = v2_record_body(i64::MAX, 1, None, None, &[]);
    type Expect = fn(&RecordError) -> bool;
    let corrupt: Expect = |e| matches!(e, RecordError::Corrupt(_));
    let invalid: Expect = |e| matches!(e, RecordError::Invalid(_));
    let cases: [(&str, Vec<u8>, i32, i64, Expect); 5] = [
        (
            "null header key",
            [good.clone(), with_length(null_header_key)].concat(),
            2,
            0,
            invalid,
        ),
        (
            "record longer than its fields",
            [good.clone(), with_length(longer)].concat(),
            2,
            0,
            corrupt,
        ),
        (
            "timestamp overflow",
            [good.clone(), with_length(overflow)].concat(),
            2,
            1,
            corrupt,
        ),
        // Long enough for two records (a shorter section is refused up front).
        (
            "one record of two",
            v2_record(0, None, Some(b"0123456789")),
            2,
            0,
            corrupt,
        ),
        (
            "trailing byte",
            [good.clone(), vec![0]].concat(),
            1,
            0,
            corrupt,
        ),
    ];
    for (what, blob, count, base_timestamp, expect) in cases {
        let data = Bytes::from(v2_batch(0, count, base_timestamp, &blob));
        let batches = decode_batches(data.clone(), &DecodeOptions::default())
            .unwrap_or_else(|e| panic!("{what}: refused before iterating: {e}"));
        let mut records = batches[0].records();
        let first = records.next().unwrap();
        assert!(first.is_ok(), "{what}: first record: {first:?}");
        match records.next() {
            Some(Err(e)) => assert!(expect(&e), "{what}: {e:?}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(records.next().is_none(), "{what}: goes on after an error");
        assert!(
            decode_records(data, &DecodeOptions::default()).is_err(),
            "{what}"
        );
    }
}

#[test]
fn batch_level_checks_and_limits_come_from_decode_batches() {
    let one = v2_record(0, None, Some(b"x"));
    let opts = DecodeOptions {
        max_records: 1,
        ..DecodeOptions::default()
    };
    let two = [v2_batch(0, 1, 0, &one), v2_batch(0, 1, 0, &one)].concat();
    assert!(matches!(
        decode_batches(Bytes::from(two), &opts),
        Err(RecordError::TooManyRecords { limit: 1 })
    ));
    let mut bad_crc = v2_batch(0, 1, 0, &one);
    *bad_crc.last_mut().unwrap() ^= 1;
    assert!(matches!(
        decode_batches(Bytes::from(bad_crc), &opts),
        Err(RecordError::Corrupt(_))
    ));
    assert!(decode_batches(Bytes::new(), &opts).unwrap().is_empty());
}

#[test]
fn legacy_messages_come_out_the_same_way() {
    let inner: Vec<u8> = [
        legacy_message(1, 0, 7, Some(b"k"), Some(b"a")),
        legacy_message(1, 0, -1, None, None),
    ]
    .concat();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &inner).unwrap();
    let data = legacy_message(1, 1, 7, None, Some(&gz.finish().unwrap()));
    let batches = decode_batches(Bytes::from(data.clone()), &DecodeOptions::default()).unwrap();
    assert_eq!(batches[0].record_count(), 2);
    let records: Vec<_> = batches[0].records().map(Result::unwrap).collect();
    assert_eq!(
        (records[0].timestamp_ms, records[0].key, records[0].value),
        (Some(7), Some(&b"k"[..]), Some(&b"a"[..]))
    );
    assert_eq!(
        (records[1].timestamp_ms, records[1].key, records[1].value),
        (None, None, None)
    );
    assert_eq!(records[0].headers.len(), 0);
    agree(&data, &DecodeOptions::default());
}

#[test]
fn mutated_fixtures_decode_the_same_both_ways() {
    let opts = DecodeOptions {
        max_decompressed_bytes: 4 << 20,
        max_records: 50_000,
        allow_zstd: true,
    };
    let mut rng = Rng(0x1a2b_3c4d_5e6f_7081);
    for fx in fixtures() {
        let original = load(fx["file"].as_str().unwrap());
        let rounds = if original.len() > 20_000 { 20 } else { 200 };
        for _ in 0..rounds {
            let mut data = original.to_vec();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(data.len());
                match rng.below(3) {
                    0 => data[i] ^= 1 << rng.below(8),
                    1 => data[i] = rng.next() as u8,
                    _ => data.truncate(i.max(1)),
                }
            }
            // Fix the CRC of a single magic-2 batch so the damage reaches its records.
            if data.len() >= 61 && data[16] == 2 && rng.below(4) != 0 {
                let end = data.len();
                data[8..12].copy_from_slice(&((end - 12) as i32).to_be_bytes());
                fix_v2_crc(&mut data);
            }
            agree(&data, &opts);
        }
    }
}
