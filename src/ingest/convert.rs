//! Turning decoded Kafka records into logs, written straight into an [`EntryBatch`]: the
//! raw `content` field, or the top-level members of a JSON value.

use std::fmt;

use loggate_records::RecordRef;
use loggate_storage::{EntryBatch, EntryWriter, FieldWriter, StorageError};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::catalog::ValueFormat;

/// Name of the field holding a raw record value.
pub use loggate_storage::CONTENT_FIELD as CONTENT;

/// What every log of one produced batch shares.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext<'a> {
    pub arrival_time_ms: i64,
    /// Client address text.
    pub source: &'a [u8],
    /// Tag of the batch's first log (see [`super::producers::ProducerTag`]).
    pub tag: Option<&'a [u8]>,
}

/// How many logs, and how many encoded bytes of them, one batch's records may become: a
/// `.json` array fans one record out into a log per element, so the record count alone
/// does not bound the work or the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    pub max_logs: usize,
    pub max_bytes: usize,
}

impl OutputLimits {
    /// No limit beyond the storage's per-log size.
    pub const NONE: Self = Self { max_logs: usize::MAX, max_bytes: usize::MAX };

    /// Whether another log may be started in `out`.
    fn check(&self, out: &EntryBatch) -> Result<(), ConvertError> {
        if out.len() >= self.max_logs {
            return Err(ConvertError::TooManyLogs(self.max_logs));
        }
        if out.bytes_len() >= self.max_bytes {
            return Err(ConvertError::TooManyBytes(self.max_bytes));
        }
        Ok(())
    }
}

/// Why records could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// One log does not fit the storage.
    #[error(transparent)]
    Log(#[from] StorageError),
    #[error("the records make more than {0} logs")]
    TooManyLogs(usize),
    #[error("the records' logs take more than {0} bytes")]
    TooManyBytes(usize),
}

/// Counts of what conversion did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConvertStats {
    /// Values on a `.json` topic that were not a JSON object or array of objects,
    /// stored whole in `content`.
    pub json_fallbacks: u64,
    /// Bytes of the record values converted (as produced, uncompressed).
    pub value_bytes: u64,
}

/// Converts the records of one batch into logs, reusing its buffers from record to record.
///
/// Each log gets the event time (the producer's timestamp if it is not negative, else
/// the arrival time), arrival time, source, key and headers of its record, and fields:
/// none for a null value; `content` = the value on a raw topic; on a `.json` topic the
/// members of an object in order (repeated names kept, strings unescaped, other values
/// as their JSON text), one log per object of an array of objects, and `content` for
/// anything else (counted in [`ConvertStats::json_fallbacks`]).
pub struct Converter<'a> {
    format: ValueFormat,
    ctx: BatchContext<'a>,
    limits: OutputLimits,
    scratch: Scratch,
    stats: ConvertStats,
}

/// Buffers for JSON text that is not in the record as it is stored.
#[derive(Default)]
struct Scratch {
    /// An object member's name that had escapes.
    name: String,
    /// A string value that had escapes.
    value: String,
}

impl<'a> Converter<'a> {
    pub fn new(format: ValueFormat, ctx: BatchContext<'a>) -> Self {
        Self { format, ctx, limits: OutputLimits::NONE, scratch: Scratch::default(), stats: ConvertStats::default() }
    }

    /// The same converter, refusing to write more than `limits` into a batch.
    pub fn with_limits(mut self, limits: OutputLimits) -> Self {
        self.limits = limits;
        self
    }

    /// What conversion did so far.
    pub fn stats(&self) -> ConvertStats {
        self.stats
    }

    /// Appends the logs of `record` to `out`: one log, or one per object of a JSON array.
    /// Fails when a log is larger than `out` allows, or the logs exceed the limits.
    pub fn push_logs(&mut self, record: &RecordRef<'_>, out: &mut EntryBatch) -> Result<(), ConvertError> {
        self.limits.check(out)?;
        let Some(value) = record.value else {
            let tag = first_tag(&self.ctx, out);
            return Ok(begin_log(&self.ctx, record, out).finish_with_tag(tag)?);
        };
        self.stats.value_bytes += value.len() as u64;
        if self.format == ValueFormat::Json {
            if self.push_json_logs(record, value, out)? {
                return Ok(());
            }
            self.stats.json_fallbacks += 1;
        }
        let tag = first_tag(&self.ctx, out);
        let mut log = begin_log(&self.ctx, record, out).fields();
        log.content(value);
        Ok(log.finish_with_tag(tag)?)
    }

    /// Writes the logs of a JSON object or array of objects; `false` (nothing written) when
    /// `value` is anything else.
    fn push_json_logs(&mut self, record: &RecordRef<'_>, value: &[u8], out: &mut EntryBatch) -> Result<bool, ConvertError> {
        let ctx = &self.ctx;
        let limits = self.limits;
        let scratch = &mut self.scratch;
        // JSON that parses is UTF-8 (bytes above 0x7f can only be inside strings, which
        // must be UTF-8): checking it all at once spares the parser checking every string.
        let Ok(value) = std::str::from_utf8(value) else {
            return Ok(false);
        };
        match value.bytes().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {
                let tag = first_tag(ctx, out);
                let mut log = begin_log(ctx, record, out).fields();
                let mut de = serde_json::Deserializer::from_str(value);
                let parsed = ObjectFields { log: &mut log, scratch }.deserialize(&mut de).and_then(|()| de.end());
                match parsed {
                    Ok(()) => Ok(log.finish_with_tag(tag).map(|()| true)?),
                    // Dropping the unfinished log removes it.
                    Err(_) => Ok(false),
                }
            }
            Some(b'[') => {
                let mut too_large = None;
                let written = out.all_or_nothing(|out| {
                    let mut de = serde_json::Deserializer::from_str(value);
                    let objects = ObjectLogs(ObjectSink { ctx, limits, record, out, scratch, too_large: &mut too_large });
                    match objects.deserialize(&mut de).and_then(|n| de.end().map(|()| n)) {
                        Ok(n) if n > 0 => Ok(()),
                        _ => Err(()),
                    }
                });
                match (written, too_large) {
                    (_, Some(e)) => Err(e),
                    (written, None) => Ok(written.is_ok()),
                }
            }
            _ => Ok(false),
        }
    }
}

/// Starts the log of `record` in `out`, with its headers written.
fn begin_log<'b>(ctx: &BatchContext<'_>, record: &RecordRef<'_>, out: &'b mut EntryBatch) -> EntryWriter<'b> {
    let event_time_ms = match record.timestamp_ms {
        Some(ts) if ts >= 0 => ts,
        _ => ctx.arrival_time_ms,
    };
    let mut log = out.begin(event_time_ms, ctx.arrival_time_ms, ctx.source, record.key);
    for (key, value) in record.headers.clone() {
        log.header(key, value);
    }
    log
}

/// The tag for the next log written to `out`: the batch's tag if it is the first.
fn first_tag<'a>(ctx: &BatchContext<'a>, out: &EntryBatch) -> Option<&'a [u8]> {
    if out.is_empty() {
        ctx.tag
    } else {
        None
    }
}

/// Writes the members of one JSON object as fields of `log`.
struct ObjectFields<'w, 'b> {
    log: &'w mut FieldWriter<'b>,
    scratch: &'w mut Scratch,
}

impl<'de> DeserializeSeed<'de> for ObjectFields<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectFields<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(name) = map.next_key_seed(NameSeed(&mut self.scratch.name))? {
            let value: &'de RawValue = map.next_value()?;
            let name = match name {
                Name::Borrowed(name) => name,
                Name::InScratch => &self.scratch.name,
            };
            self.log.field(name.as_bytes(), field_text(value.get(), &mut self.scratch.value).as_bytes());
        }
        Ok(())
    }
}

/// A member's value as stored: a string's text (unescaped), or any other value's JSON text.
fn field_text<'x>(json: &'x str, scratch: &'x mut String) -> &'x str {
    match json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner,
        Some(_) => {
            scratch.clear();
            let mut de = serde_json::Deserializer::from_str(json);
            match de.deserialize_str(StringInto(scratch)).and_then(|()| de.end()) {
                Ok(()) => scratch,
                Err(_) => json,
            }
        }
        None => json,
    }
}

/// Appends a JSON string's unescaped text to a buffer.
struct StringInto<'s>(&'s mut String);

impl Visitor<'_> for StringInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

/// An object member's name: in the input, or (when it had escapes) unescaped in a scratch
/// buffer.
enum Name<'de> {
    Borrowed(&'de str),
    InScratch,
}

/// Reads a member name, copying it to the scratch buffer only when it had escapes.
struct NameSeed<'s>(&'s mut String);

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = Name<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Name<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
        Ok(Name::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(Name::InScratch)
    }
}

/// What writing the logs of one record's JSON objects needs, and where they go.
struct ObjectSink<'s, 'c> {
    ctx: &'c BatchContext<'c>,
    limits: OutputLimits,
    record: &'c RecordRef<'c>,
    out: &'s mut EntryBatch,
    scratch: &'s mut Scratch,
    /// Set when a log did not fit or the limits were reached (the parse is then stopped
    /// with an error).
    too_large: &'s mut Option<ConvertError>,
}

impl<'c> ObjectSink<'_, 'c> {
    /// The same sink, borrowed for one element.
    fn reborrow(&mut self) -> ObjectSink<'_, 'c> {
        ObjectSink {
            ctx: self.ctx,
            limits: self.limits,
            record: self.record,
            out: &mut *self.out,
            scratch: &mut *self.scratch,
            too_large: &mut *self.too_large,
        }
    }
}

/// Writes one log per object of a JSON array; the number of logs, or an error as soon as
/// an element is not an object (or its log does not fit).
struct ObjectLogs<'s, 'c>(ObjectSink<'s, 'c>);

impl<'de> DeserializeSeed<'de> for ObjectLogs<'_, '_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ObjectLogs<'_, '_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of JSON objects")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<usize, S::Error> {
        let ObjectLogs(mut sink) = self;
        let mut logs = 0;
        while seq.next_element_seed(ObjectLog(sink.reborrow()))?.is_some() {
            logs += 1;
        }
        Ok(logs)
    }
}

/// Writes one element of an array, which must be an object, as one log.
struct ObjectLog<'s, 'c>(ObjectSink<'s, 'c>);

impl<'de> DeserializeSeed<'de> for ObjectLog<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let ObjectLog(sink) = self;
        if let Err(e) = sink.limits.check(sink.out) {
            *sink.too_large = Some(e);
            return Err(de::Error::custom("output limits reached"));
        }
        let tag = first_tag(sink.ctx, sink.out);
        let mut log = begin_log(sink.ctx, sink.record, sink.out).fields();
        // On an error the unfinished log is dropped, so removed.
        d.deserialize_map(ObjectFields { log: &mut log, scratch: sink.scratch })?;
        log.finish_with_tag(tag).map_err(|e| {
            *sink.too_large = Some(e.into());
            de::Error::custom("log too large")
        })
    }
}

#[cfg(test)]
#[path = "../../crates/records/tests/common/mod.rs"]
mod wire;

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use loggate_records::{decode_batches, DecodeOptions, Headers};
    use loggate_storage::LogEntry;

    use super::*;

    fn ctx() -> BatchContext<'static> {
        BatchContext { arrival_time_ms: 1000, source: b"127.0.0.1:1", tag: None }
    }

    fn record(value: &[u8]) -> RecordRef<'_> {
        RecordRef { timestamp_ms: Some(5), key: None, value: Some(value), headers: Headers::default() }
    }

    /// The logs of `records`, converted with `ctx` into a batch of at most `max_entry_bytes`
    /// per log, and the conversion's stats; or the first error.
    fn convert_all(
        records: &[RecordRef<'_>],
        format: ValueFormat,
        ctx: BatchContext<'_>,
        max_entry_bytes: usize,
    ) -> Result<(Vec<LogEntry>, ConvertStats), ConvertError> {
        let mut out = EntryBatch::new(max_entry_bytes);
        let mut converter = Converter::new(format, ctx);
        for r in records {
            converter.push_logs(r, &mut out)?;
        }
        Ok((out.into_entries()?, converter.stats()))
    }

    fn fields(e: &LogEntry) -> Vec<(String, String)> {
        e.fields
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    fn convert(value: &[u8], format: ValueFormat) -> (Vec<LogEntry>, ConvertStats) {
        convert_all(&[record(value)], format, ctx(), 1 << 20).unwrap()
    }

    #[test]
    fn raw_value_goes_to_content() {
        let (logs, _) = convert(b"hello {\"x\":1}", ValueFormat::Raw);
        assert_eq!(fields(&logs[0]), vec![("content".into(), "hello {\"x\":1}".into())]);
        assert_eq!(logs[0].event_time_ms, 5);
    }

    #[test]
    fn json_object_keys_become_fields_in_order() {
        let (logs, stats) =
            convert(br#"{"b":"x\"y","a":1.5,"n":{"k":[1,2]},"z":null,"t":true}"#, ValueFormat::Json);
        assert_eq!(
            fields(&logs[0]),
            vec![
                ("b".into(), "x\"y".into()),
                ("a".into(), "1.5".into()),
                ("n".into(), r#"{"k":[1,2]}"#.into()),
                ("z".into(), "null".into()),
                ("t".into(), "true".into()),
            ]
        );
        assert_eq!(stats.json_fallbacks, 0);
    }

    #[test]
    fn json_escapes_and_repeated_keys() {
        let (logs, _) = convert(br#"{"a\u00e9":"x\ny","a":1,"a":"2"}"#, ValueFormat::Json);
        assert_eq!(
            fields(&logs[0]),
            vec![("a\u{e9}".into(), "x\ny".into()), ("a".into(), "1".into()), ("a".into(), "2".into())]
        );
    }

    #[test]
    fn json_fields_without_escapes_are_written_from_the_record() {
        let value = br#"{"level":"info","n":42}"#;
        let mut out = EntryBatch::new(1 << 20);
        let mut converter = Converter::new(ValueFormat::Json, ctx());
        converter.push_logs(&record(value), &mut out).unwrap();
        // Nothing went through the scratch buffers.
        assert!(converter.scratch.name.is_empty() && converter.scratch.value.is_empty());
        let logs = out.into_entries().unwrap();
        assert_eq!(&logs[0].fields[0].1[..], b"info");
    }

    #[test]
    fn json_array_of_objects_is_one_log_each() {
        let (logs, _) = convert(br#"[{"v":1},{"v":2}]"#, ValueFormat::Json);
        assert_eq!(logs.len(), 2);
        assert_eq!(fields(&logs[1]), vec![("v".into(), "2".into())]);
    }

    #[test]
    fn other_json_is_kept_whole_and_counted() {
        for v in [&b"42"[..], b"[1,2]", b"not json", b"{broken", b"[]"] {
            let (logs, stats) = convert(v, ValueFormat::Json);
            assert_eq!(logs.len(), 1, "{v:?}");
            assert_eq!(fields(&logs[0]), vec![("content".into(), String::from_utf8_lossy(v).into_owned())]);
            assert_eq!(stats.json_fallbacks, 1);
        }
    }

    #[test]
    fn missing_timestamp_uses_arrival_time() {
        let mut r = record(b"x");
        r.timestamp_ms = None;
        let (out, _) = convert_all(&[r], ValueFormat::Raw, ctx(), 1 << 20).unwrap();
        assert_eq!(out[0].event_time_ms, 1000);
    }

    #[test]
    fn key_headers_source_and_times_go_to_every_log() {
        let headers: &[(&[u8], Option<&[u8]>)] = &[(b"h", Some(b"1")), (b"h", None)];
        let body = wire::v2_record_body(-1000, 0, Some(b"k"), Some(br#"[{"a":1},{"b":2}]"#), headers);
        let data = Bytes::from(wire::v2_batch(0, 1, 0, &wire::with_length(body)));
        let batches = decode_batches(data, &DecodeOptions::default()).unwrap();
        let r = batches[0].records().next().unwrap().unwrap();
        for format in [ValueFormat::Raw, ValueFormat::Json] {
            let (logs, _) = convert_all(std::slice::from_ref(&r), format, ctx(), 1 << 20).unwrap();
            assert_eq!(logs.len(), if format == ValueFormat::Json { 2 } else { 1 });
            for log in &logs {
                // A negative producer timestamp means none: the arrival time is used.
                assert_eq!((log.event_time_ms, log.arrival_time_ms), (1000, 1000));
                assert_eq!(&log.source[..], b"127.0.0.1:1");
                assert_eq!(log.key.as_deref(), Some(&b"k"[..]));
                let hs: Vec<_> = log.headers.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
                assert_eq!(hs, headers);
            }
        }
    }

    #[test]
    fn null_value_is_a_log_without_fields() {
        let r = RecordRef { value: None, ..record(b"") };
        for format in [ValueFormat::Raw, ValueFormat::Json] {
            let (logs, stats) = convert_all(std::slice::from_ref(&r), format, ctx(), 1 << 20).unwrap();
            assert_eq!(logs.len(), 1);
            assert!(logs[0].fields.is_empty());
            assert_eq!(stats.json_fallbacks, 0);
        }
    }

    #[test]
    fn only_the_first_log_is_tagged_even_after_a_json_fallback() {
        let tagged = BatchContext { tag: Some(b"T"), ..ctx() };
        // The array's first object is written, then undone when the second element is not
        // an object: the fallback log is the batch's first and gets the tag.
        let records = [record(br#"[{"a":1}, 2]"#), record(br#"[{"a":1},{"b":2}]"#), record(b"x")];
        let (logs, stats) = convert_all(&records, ValueFormat::Json, tagged, 1 << 20).unwrap();
        assert_eq!(stats.json_fallbacks, 2);
        let tags: Vec<_> = logs.iter().map(|l| l.tag.as_deref()).collect();
        assert_eq!(tags, vec![Some(&b"T"[..]), None, None, None]);
        assert_eq!(fields(&logs[0]), vec![("content".into(), r#"[{"a":1}, 2]"#.into())]);
        assert_eq!(fields(&logs[2]), vec![("b".into(), "2".into())]);
    }

    #[test]
    fn a_log_too_large_fails_the_conversion() {
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(300));
        for value in [big.clone(), format!("[{big}]"), "y".repeat(300)] {
            for format in [ValueFormat::Raw, ValueFormat::Json] {
                let r = convert_all(&[record(value.as_bytes())], format, ctx(), 256);
                assert!(
                    matches!(r, Err(ConvertError::Log(StorageError::EntryTooLarge { limit: 256, .. }))),
                    "{value} {format:?}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn a_json_array_fanning_out_stops_at_the_output_limits() {
        // 3 bytes of input per log: the record count (1) says nothing of the work.
        let value = format!("[{}{{}}]", "{},".repeat(9_999));
        let convert = |limits| {
            let mut out = EntryBatch::new(1 << 20);
            let mut converter = Converter::new(ValueFormat::Json, ctx()).with_limits(limits);
            converter.push_logs(&record(value.as_bytes()), &mut out).map(|()| out)
        };
        assert_eq!(convert(OutputLimits::NONE).unwrap().len(), 10_000);
        let r = convert(OutputLimits { max_logs: 1000, max_bytes: usize::MAX });
        assert!(matches!(r, Err(ConvertError::TooManyLogs(1000))), "{r:?}");
        let r = convert(OutputLimits { max_logs: usize::MAX, max_bytes: 10_000 });
        assert!(matches!(r, Err(ConvertError::TooManyBytes(10_000))), "{r:?}");
        // Raw records are counted the same way, before each log.
        let mut out = EntryBatch::new(1 << 20);
        let mut converter = Converter::new(ValueFormat::Raw, ctx()).with_limits(OutputLimits { max_logs: 2, max_bytes: usize::MAX });
        converter.push_logs(&record(b"a"), &mut out).unwrap();
        converter.push_logs(&record(b"b"), &mut out).unwrap();
        assert!(matches!(converter.push_logs(&record(b"c"), &mut out), Err(ConvertError::TooManyLogs(2))));
    }
}
