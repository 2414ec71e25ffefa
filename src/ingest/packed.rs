//! A raw topic's records kept as the client sent them: the Kafka record batches of one
//! partition, once every record is checked, become one packed block of the local logstore
//! (see `loggate_storage::PackedLogs`) instead of a log written field by field, and reads
//! turn them back into the same logs that conversion makes ([`Unpacker`]).
//!
//! The packed bytes (packing [`KAFKA_RECORDS`]): `u32 LE` the record data's size after
//! decompression, then the record batches (magic 2) as produced, compressed as they came.
//! That size bounds the decompression of a read as the limits bounded it when the records
//! arrived, whatever the configuration says by then.

use bytes::Bytes;
use loggate_records::{decode_batches, DecodeOptions, RawBatch};
use loggate_storage::{EntryBatch, Packed, PackedLogs, StorageError, Unpack};

use super::catalog::ValueFormat;
use super::convert::{self, BatchContext, ConvertError, ConvertStats, Converter, OutputLimits};
use super::{RecordFailure, WriteError};

/// The packing name of Kafka record batches (magic 2) of a raw topic.
pub const KAFKA_RECORDS: u8 = 1;

/// The packing name of Kafka record batches (magic 2) of a `.json` topic, converted as a
/// logstore without JSON options converts them (options a logstore gets later do not
/// change how they read).
pub const KAFKA_JSON_RECORDS: u8 = 2;

/// Bytes before the record batches in the packed bytes.
const PREFIX_LEN: usize = 4;

/// Whether `batches` can be kept packed: all magic 2 (older message sets are converted),
/// their record data's size fitting the prefix.
pub(crate) fn packable(batches: &[RawBatch]) -> bool {
    !batches.is_empty()
        && batches.iter().all(|b| b.info.magic == 2)
        && batches.iter().map(RawBatch::data_len).sum::<usize>() <= u32::MAX as usize
}

/// The packing of record batches of a topic in `format`.
fn packing(format: ValueFormat) -> u8 {
    match format {
        ValueFormat::Raw => KAFKA_RECORDS,
        ValueFormat::Json => KAFKA_JSON_RECORDS,
    }
}

/// Room a batch needs for `records` packed.
pub(crate) fn capacity(records: &[u8], ctx: &BatchContext<'_>) -> usize {
    records.len() + 128 + ctx.source.len() + ctx.tag.map_or(0, <[u8]>::len)
}

/// Checks every record of `batches` (decoded from `records`) as `converter` would convert
/// them, with the limits of `limits` and `out`, and makes `out` them packed. Fails as
/// conversion fails: on the first record that breaks the format or makes a log larger
/// than `out` allows, or when the logs are more than `limits` allow. `Ok(None)`, with `out`
/// left as it was, when a record's logs cannot be told without converting it (see
/// [`Converter::measure_log`]): the batches are then converted instead.
pub(crate) fn pack(
    batches: &[RawBatch],
    records: &[u8],
    mut converter: Converter<'_>,
    limits: OutputLimits,
    out: &mut EntryBatch,
) -> Result<Option<ConvertStats>, WriteError> {
    let ctx = converter.context();
    let (mut count, mut largest) = (0usize, 0usize);
    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    let limit = out.max_entry_bytes();
    for batch in batches {
        for (index, record) in (0u32..).zip(batch.records()) {
            let record = record.map_err(|e| WriteError::Record { index, failure: RecordFailure::Invalid(e) })?;
            if count >= limits.max_logs {
                return Err(WriteError::Oversized(ConvertError::TooManyLogs(limits.max_logs)));
            }
            let tag = if count == 0 { ctx.tag } else { None };
            let Some(len) = converter.measure_log(&record, tag) else {
                return Ok(None);
            };
            let time = convert::event_time(&ctx, &record);
            min_time = min_time.min(time);
            max_time = max_time.max(time);
            if len > limit {
                let e = StorageError::EntryTooLarge { size: len, limit };
                return Err(WriteError::Record { index, failure: RecordFailure::TooLarge(e) });
            }
            largest = largest.max(len);
            count += 1;
        }
    }
    if records.len() + PREFIX_LEN > limits.max_bytes {
        return Err(WriteError::Oversized(ConvertError::TooManyBytes(limits.max_bytes)));
    }
    let decompressed: usize = batches.iter().map(RawBatch::data_len).sum();
    let prefix = u32::try_from(decompressed).unwrap_or(u32::MAX).to_le_bytes(); // `packable`
    let count = u32::try_from(count).map_err(|_| WriteError::Oversized(ConvertError::TooManyLogs(limits.max_logs)))?;
    out.pack(&PackedLogs {
        packing: packing(converter.format()),
        count,
        min_event_time_ms: min_time,
        max_event_time_ms: max_time,
        arrival_time_ms: ctx.arrival_time_ms,
        source: ctx.source,
        tag: ctx.tag,
        largest_entry_bytes: largest,
        bytes: &[&prefix, records],
    })?;
    Ok(Some(converter.stats()))
}

/// Reads packed records back as the logs conversion makes of them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unpacker;

impl Unpack for Unpacker {
    fn unpack(&self, p: &Packed<'_>, out: &mut EntryBatch) -> Result<(), String> {
        let format = match p.packing {
            KAFKA_RECORDS => ValueFormat::Raw,
            KAFKA_JSON_RECORDS => ValueFormat::Json,
            other => return Err(format!("unknown packing {other}")),
        };
        let Some(prefix) = p.bytes.get(..PREFIX_LEN) else {
            return Err("packed records without their size".into());
        };
        let decompressed = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let opts = DecodeOptions {
            max_decompressed_bytes: decompressed,
            max_records: p.count as usize,
            allow_zstd: true,
        };
        let records: Bytes = p.bytes.slice(PREFIX_LEN..);
        let batches = decode_batches(records, &opts).map_err(|e| format!("packed records: {e}"))?;
        let ctx = BatchContext { arrival_time_ms: p.arrival_time_ms, source: p.source, tag: p.tag };
        let mut converter = Converter::new(format, ctx);
        for batch in &batches {
            for record in batch.records() {
                let record = record.map_err(|e| format!("packed records: {e}"))?;
                converter.push_logs(&record, out).map_err(|e| format!("packed records: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use loggate_records::decode_batches;
    use loggate_storage::local::{LocalStore, LocalStoreOptions};
    use loggate_storage::{Durability, LogEntry, LogStorage, StreamId};

    use super::*;
    use crate::ingest::convert::{wire, JsonOptions};

    const SOURCE: &[u8] = b"127.0.0.1:1";

    fn options() -> DecodeOptions {
        DecodeOptions { max_decompressed_bytes: 64 << 20, max_records: 1 << 20, allow_zstd: true }
    }

    fn raw(ctx: BatchContext<'_>) -> Converter<'_> {
        Converter::new(ValueFormat::Raw, ctx)
    }

    /// What conversion makes of `batches`.
    fn converted(batches: &[RawBatch], ctx: BatchContext<'_>) -> Vec<LogEntry> {
        converted_as(ValueFormat::Raw, batches, ctx)
    }

    fn converted_as(format: ValueFormat, batches: &[RawBatch], ctx: BatchContext<'_>) -> Vec<LogEntry> {
        let mut out = EntryBatch::new(4 << 20);
        let mut converter = Converter::new(format, ctx);
        for b in batches {
            for r in b.records() {
                converter.push_logs(&r.unwrap(), &mut out).unwrap();
            }
        }
        out.into_entries().unwrap()
    }

    fn store(dir: &std::path::Path, max_entry_bytes: usize) -> LocalStore {
        let store = LocalStore::open(dir, LocalStoreOptions { max_entry_bytes, ..Default::default() }).unwrap();
        store.set_unpacker(Arc::new(Unpacker));
        store
    }

    #[tokio::test]
    async fn every_record_batch_fixture_reads_back_as_the_logs_conversion_makes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 4 << 20);
        let s = StreamId::new("p", "l");
        let mut want = Vec::new();
        let mut packed_files = 0;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/records/tests/fixtures");
        let mut files: Vec<String> = std::fs::read_dir(&fixtures)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".bin"))
            .collect();
        files.sort();
        for name in &files {
            let data = Bytes::from(std::fs::read(fixtures.join(name)).unwrap());
            let Ok(batches) = decode_batches(data.clone(), &options()) else {
                continue;
            };
            if !packable(&batches) {
                assert!(!name.starts_with("v2_"), "{name}");
                continue;
            }
            packed_files += 1;
            // Some with a tag, which only the first log carries.
            let tag = (packed_files % 2 == 0).then_some(&b"tag"[..]);
            let ctx = BatchContext { arrival_time_ms: 1000 + packed_files, source: SOURCE, tag };
            let mut logs = store.new_batch(&s, capacity(&data, &ctx));
            let stats = pack(&batches, &data, raw(ctx), OutputLimits::NONE, &mut logs).unwrap().unwrap();
            let expected = converted(&batches, ctx);
            assert_eq!(logs.len(), expected.len(), "{name}");
            let values: usize = expected.iter().flat_map(|e| &e.fields).map(|(_, v)| v.len()).sum();
            assert_eq!(stats.value_bytes, values as u64, "{name}");
            // Kept as the client sent them: the block holds the records as they came.
            assert!(logs.bytes_len() < data.len() + 128, "{name}");
            store.append(&s, 0, logs, Durability::Synced).await.unwrap();
            want.extend(expected);
        }
        assert!(packed_files >= 15, "{packed_files}");
        let got: Vec<LogEntry> = store.read(&s, 0, 0, usize::MAX).await.unwrap().into_iter().map(|l| l.entry).collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the logs read back differ from the ones conversion makes");
        // And after a restart (recovery scans the packed blocks).
        store.close().await.unwrap();
        drop(store);
        let store = self::store(dir.path(), 4 << 20);
        let ack = store.append(&s, 0, EntryBatch::from_entries(&want[..1], 4 << 20).unwrap(), Durability::Synced).await.unwrap();
        assert_eq!(ack.base_offset, want.len() as u64);
        let got = store.read(&s, 0, 0, usize::MAX).await.unwrap();
        assert_eq!(got.len(), want.len() + 1);
        assert!(got.iter().zip(&want).all(|(g, w)| g.entry == *w));
    }

    #[test]
    fn packing_refuses_what_conversion_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("p", "l");
        let ctx = BatchContext { arrival_time_ms: 1, source: SOURCE, tag: None };
        let records: Vec<u8> = (0..3).flat_map(|i| wire::v2_record(i, None, Some(&[b'x'; 2000][..i as usize * 900]))).collect();
        let data = Bytes::from(wire::v2_batch(0, 3, 0, &records));
        let batches = decode_batches(data.clone(), &options()).unwrap();
        // The third record's log (1,800 bytes of value) is over a 1,024-byte limit, the
        // second's (900) is not.
        let small = store(dir.path(), 1024);
        let mut logs = small.new_batch(&s, 1 << 16);
        let err = pack(&batches, &data, raw(ctx), OutputLimits::NONE, &mut logs).unwrap_err();
        assert!(matches!(err, WriteError::Record { index: 2, failure: RecordFailure::TooLarge(_) }), "{err:?}");
        // The same as conversion says.
        let mut out = EntryBatch::new(1024);
        let mut converter = Converter::new(ValueFormat::Raw, ctx);
        let results: Vec<bool> = batches[0].records().map(|r| converter.push_logs(&r.unwrap(), &mut out).is_ok()).collect();
        assert_eq!(results, [true, true, false]);
        assert!(logs.can_pack(), "nothing was packed");
        let max_logs = OutputLimits { max_logs: 2, max_bytes: usize::MAX };
        let err = pack(&batches, &data, raw(ctx), max_logs, &mut logs).unwrap_err();
        assert!(matches!(err, WriteError::Oversized(ConvertError::TooManyLogs(2))), "{err:?}");
        let max_bytes = OutputLimits { max_logs: 10, max_bytes: 100 };
        let mut logs = store(tempfile::tempdir().unwrap().path(), 1 << 20).new_batch(&s, 1 << 16);
        let err = pack(&batches, &data, raw(ctx), max_bytes, &mut logs).unwrap_err();
        assert!(matches!(err, WriteError::Oversized(ConvertError::TooManyBytes(100))), "{err:?}");
    }

    /// `.json` values of every shape the fast path tells apart, with and without keys and
    /// headers.
    const JSON_VALUES: [&[u8]; 16] = [
        br#"{"level":"info","msg":"started","n":3}"#,
        br#"  {"nested":{"a":[1,2,{"b":null}]},"t":true,"f":false,"x":-1.5e3}  "#,
        br#"{"esc\u0041ped":"line\nbreak \"quoted\" \u00e9","plain":"\\"}"#,
        br#"{}"#,
        b"{\"unicode\":\"caf\xc3\xa9\",\"emoji\":\"\xf0\x9f\x98\x80\"}",
        br#"{"repeated":1,"repeated":2}"#,
        br#""a string""#,
        br#"42"#,
        br#"null"#,
        br#"{"unterminated":"#,
        br#"{"bad escape":"\x"}"#,
        br#"{"trailing":1} x"#,
        b"{\"control\":\"a\x01b\"}",
        b"\xff\xfe not UTF-8",
        b"",
        b"   ",
    ];

    fn json_records() -> Vec<u8> {
        let mut records = Vec::new();
        for (i, value) in JSON_VALUES.iter().enumerate() {
            let key = (i % 2 == 1).then_some(&b"a key"[..]);
            let headers: &[(&[u8], Option<&[u8]>)] = if i % 3 == 0 { &[(b"h", Some(b"v")), (b"null", None)] } else { &[] };
            records.extend(wire::with_length(wire::v2_record_body(i as i64, i as i64, key, Some(value), headers)));
        }
        records.extend(wire::v2_record(JSON_VALUES.len() as i64, None, None));
        records
    }

    #[test]
    fn a_measured_json_log_is_as_long_as_the_one_conversion_writes() {
        let data = Bytes::from(wire::v2_batch(0, JSON_VALUES.len() as i32 + 1, 7, &json_records()));
        let batches = decode_batches(data, &options()).unwrap();
        let ctx = BatchContext { arrival_time_ms: 1, source: SOURCE, tag: Some(b"a tag") };
        let mut measuring = Converter::new(ValueFormat::Json, ctx);
        let mut converting = Converter::new(ValueFormat::Json, ctx);
        for (i, record) in batches[0].records().enumerate() {
            let record = record.unwrap();
            let tag = (i % 2 == 0).then_some(&b"a tag"[..]);
            let mut out = EntryBatch::new(1 << 20);
            if tag.is_none() {
                // Only the batch's first log carries the tag: another one goes first.
                out.begin(0, 0, b"", None).finish().unwrap();
            }
            converting.push_logs(&record, &mut out).unwrap();
            let written = out.into_entries().unwrap().pop().unwrap();
            let one = EntryBatch::from_entries(std::slice::from_ref(&written), 1 << 20).unwrap();
            assert_eq!(measuring.measure_log(&record, tag), Some(one.largest_entry_bytes()), "record {i}");
            assert_eq!(written.tag.as_deref(), tag, "record {i}");
        }
        assert_eq!(measuring.stats(), converting.stats());
        assert_eq!(measuring.stats().json_fallbacks, 10);
        // An array may make any number of logs: not measured.
        let array = wire::v2_record(0, None, Some(br#" [{"a":1},{"b":2}]"#));
        let batches = decode_batches(Bytes::from(wire::v2_batch(0, 1, 7, &array)), &options()).unwrap();
        let record = batches[0].records().next().unwrap().unwrap();
        assert_eq!(measuring.measure_log(&record, None), None);
        // Nor are logs of a logstore with JSON options.
        let options = JsonOptions { flatten_depth: 1, ..JsonOptions::default() };
        let with_options = Converter::new(ValueFormat::Json, ctx).with_json_options(&options);
        assert!(!with_options.measures() && Converter::new(ValueFormat::Json, ctx).measures());
    }

    #[tokio::test]
    async fn json_records_read_back_packed_as_the_logs_conversion_makes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 4 << 20);
        let s = StreamId::new("p", "l");
        let records = json_records();
        let data = Bytes::from(wire::v2_batch(0, JSON_VALUES.len() as i32 + 1, 7, &records));
        let batches = decode_batches(data.clone(), &options()).unwrap();
        let ctx = BatchContext { arrival_time_ms: 1, source: SOURCE, tag: Some(b"a tag") };
        let mut logs = store.new_batch(&s, capacity(&data, &ctx));
        let stats = pack(&batches, &data, Converter::new(ValueFormat::Json, ctx), OutputLimits::NONE, &mut logs).unwrap().unwrap();
        let want = converted_as(ValueFormat::Json, &batches, ctx);
        assert_eq!(logs.len(), want.len());
        assert_eq!(stats.json_fallbacks, 10);
        assert!(logs.bytes_len() < data.len() + 128);
        store.append(&s, 0, logs, Durability::Synced).await.unwrap();
        let got: Vec<LogEntry> = store.read(&s, 0, 0, usize::MAX).await.unwrap().into_iter().map(|l| l.entry).collect();
        assert!(got == want, "the logs read back differ from the ones conversion makes");
        let first: Vec<(&[u8], &[u8])> = got[0].fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        assert_eq!(first, [(&b"level"[..], &b"info"[..]), (b"msg", b"started"), (b"n", b"3")]);

        // A batch with an array is converted instead (one log per object): `out` is left
        // as it was.
        let mut records = records;
        records.extend(wire::v2_record(JSON_VALUES.len() as i64 + 1, None, Some(br#"[{"a":1},{"b":2}]"#)));
        let data = Bytes::from(wire::v2_batch(0, JSON_VALUES.len() as i32 + 2, 7, &records));
        let batches = decode_batches(data.clone(), &options()).unwrap();
        let mut logs = store.new_batch(&s, capacity(&data, &ctx));
        assert!(pack(&batches, &data, Converter::new(ValueFormat::Json, ctx), OutputLimits::NONE, &mut logs).unwrap().is_none());
        assert!(logs.is_empty() && logs.can_pack());
    }

    #[test]
    fn measured_logs_agree_with_written_ones_on_mutated_json() {
        let seeds: [&[u8]; 3] = [
            br#"{"ts":"2026-11-23T20:01:02.003Z","level":"INFO","n":-12.5e3,"ok":true,"tags":["a","b"],"m":{"x":null}}"#,
            br#"{"msg":"say \"hi\"\\ now \u00e9","esc\u0041":"","zero":0,"arr":[],"obj":{}}"#,
            br#" [{"a":1},{"b":"x"}] "#,
        ];
        let alphabet = b"{}[]:,\"\\ \t\n0123456789-+.eEtrufalsn/bux\x01\x7f\xc3\xa9\xff";
        let ctx = BatchContext { arrival_time_ms: 1, source: SOURCE, tag: None };
        let (mut measured, mut arrays) = (0, 0);
        for value in crate::ingest::json_scan::tests::mutations(&seeds, alphabet, 4, 20_000) {
            let record = wire::v2_record(0, None, Some(&value));
            let batches = decode_batches(Bytes::from(wire::v2_batch(0, 1, 7, &record)), &options()).unwrap();
            let record = batches[0].records().next().unwrap().unwrap();
            let mut measuring = Converter::new(ValueFormat::Json, ctx);
            let mut converting = Converter::new(ValueFormat::Json, ctx);
            let mut out = EntryBatch::new(1 << 20);
            converting.push_logs(&record, &mut out).unwrap();
            match measuring.measure_log(&record, None) {
                Some(len) => {
                    measured += 1;
                    let logs = out.into_entries().unwrap();
                    assert_eq!(logs.len(), 1, "{value:?}");
                    let one = EntryBatch::from_entries(&logs, 1 << 20).unwrap();
                    assert_eq!(len, one.largest_entry_bytes(), "{value:?}");
                    assert_eq!(measuring.stats(), converting.stats(), "{value:?}");
                }
                None => {
                    arrays += 1;
                    let first = value.iter().find(|b| !b.is_ascii_whitespace());
                    assert_eq!(first, Some(&b'['), "{value:?}");
                }
            }
        }
        assert!(measured > 10_000 && arrays > 3_000, "{measured} measured, {arrays} arrays");
    }
}

