//! Turning decoded Kafka records into logs, written straight into an [`EntryBatch`]: the
//! raw `content` field, or the members of a JSON value (nested objects flattened into
//! dotted names down to a configured depth), with the event time optionally taken from a
//! member (see [`JsonOptions`]).

use std::fmt;

use loggate_records::RecordRef;
use loggate_storage::{EntryBatch, EntryWriter, FieldWriter, StorageError};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::catalog::ValueFormat;
use super::json_scan;
use crate::config::{LogstoreConfig, TIME_FIELD_AUTO};

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
    /// Logs of a `.json` topic with a time field configured that got the record
    /// timestamp instead, by [`TimeFallback`] (its index).
    pub event_time_fallbacks: [u64; TimeFallback::ALL.len()],
}

/// How the objects of a logstore's `.json` topic become logs, beyond their top-level
/// members (from the logstore's configuration; the default changes nothing).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonOptions {
    /// Where the event time comes from; None: the record timestamp.
    pub time: Option<EventTimeOptions>,
    /// Nested objects down to this depth become dotted field names (0: none).
    pub flatten_depth: u32,
}

/// The event time of a log taken from one of its members.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTimeOptions {
    pub field: TimeField,
    pub format: TimeFormat,
    /// A time more than this before the arrival time is not used.
    pub window_past_ms: i64,
    /// A time more than this after the arrival time is not used.
    pub window_future_ms: i64,
}

/// Which member holds the event time.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeField {
    /// The first of [`AUTO_TIME_FIELDS`] present (in that order of preference).
    Auto,
    /// The member of this name (dotted for a flattened one).
    Named(String),
}

/// Fields tried by [`TimeField::Auto`], most preferred first.
pub const AUTO_TIME_FIELDS: [&str; 6] = ["@timestamp", "timestamp", "time", "date", "creation_time", "start_time"];

/// How the time member's value is read.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeFormat {
    /// A number (or a string of one) is epoch seconds, milliseconds, microseconds or
    /// nanoseconds by its count of integer digits (up to 11, 12 to 14, 15 to 17, more); a
    /// string is RFC 3339 or ISO 8601 (`T` or space, optional fraction, zone `Z`, `±hh:mm`
    /// or `±hhmm`, none meaning UTC).
    Auto,
    Rfc3339,
    /// A number (or a string of one) in this unit since the epoch, fraction allowed.
    Epoch(EpochUnit),
    /// A strftime pattern (chrono's); without a zone in it the time is UTC.
    Strftime(String),
}

/// Unit of an epoch time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl EpochUnit {
    /// Power of ten from this unit to milliseconds.
    fn to_ms_exponent(self) -> i32 {
        match self {
            EpochUnit::Seconds => 3,
            EpochUnit::Millis => 0,
            EpochUnit::Micros => -3,
            EpochUnit::Nanos => -6,
        }
    }
}

/// Why a log's event time is its record timestamp although a time field is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFallback {
    /// No such member (or the value is not a JSON object).
    Missing,
    /// The member's value is not a time in the configured format.
    Unparsable,
    /// The time is outside the configured window around the arrival time.
    OutOfWindow,
}

impl TimeFallback {
    pub const ALL: [TimeFallback; 3] = [TimeFallback::Missing, TimeFallback::Unparsable, TimeFallback::OutOfWindow];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TimeFallback::Missing => "missing",
            TimeFallback::Unparsable => "unparsable",
            TimeFallback::OutOfWindow => "out_of_window",
        }
    }
}

/// Default [`EventTimeOptions::window_past_ms`], in hours: a week.
pub const DEFAULT_WINDOW_PAST_HOURS: f64 = 168.0;
/// Default [`EventTimeOptions::window_future_ms`], in hours.
pub const DEFAULT_WINDOW_FUTURE_HOURS: f64 = 1.0;

impl JsonOptions {
    /// No time field, no flattening.
    pub const NONE: JsonOptions = JsonOptions { time: None, flatten_depth: 0 };

    /// The options of a logstore's configuration (validated already).
    pub fn from_config(store: &LogstoreConfig) -> Self {
        let hours_ms = |h: f64| (h * 3_600_000.0) as i64;
        let time = store.time_field.as_ref().map(|field| EventTimeOptions {
            field: if field == TIME_FIELD_AUTO { TimeField::Auto } else { TimeField::Named(field.clone()) },
            format: match store.time_format.as_deref() {
                None | Some("auto") => TimeFormat::Auto,
                Some("rfc3339") => TimeFormat::Rfc3339,
                Some("epoch_s") => TimeFormat::Epoch(EpochUnit::Seconds),
                Some("epoch_ms") => TimeFormat::Epoch(EpochUnit::Millis),
                Some("epoch_us") => TimeFormat::Epoch(EpochUnit::Micros),
                Some("epoch_ns") => TimeFormat::Epoch(EpochUnit::Nanos),
                Some(pattern) => TimeFormat::Strftime(pattern.to_string()),
            },
            window_past_ms: hours_ms(store.time_window_past_hours.unwrap_or(DEFAULT_WINDOW_PAST_HOURS)),
            window_future_ms: hours_ms(store.time_window_future_hours.unwrap_or(DEFAULT_WINDOW_FUTURE_HOURS)),
        });
        JsonOptions { time, flatten_depth: store.flatten_depth }
    }

    /// Rank of a member named `name` as the time field (lower is preferred), if it is one.
    #[inline]
    fn time_rank(&self, name: &str) -> Option<u8> {
        match &self.time.as_ref()?.field {
            TimeField::Auto => AUTO_TIME_FIELDS.iter().position(|f| *f == name).map(|p| p as u8),
            TimeField::Named(field) => (field == name).then_some(0),
        }
    }
}

impl EventTimeOptions {
    /// The event time from the time member's JSON text `found`, or why there is none.
    fn resolve(&self, found: Option<&str>, arrival_time_ms: i64, scratch: &mut String) -> Result<i64, TimeFallback> {
        let json = found.ok_or(TimeFallback::Missing)?;
        let ms = parse_time(json, &self.format, scratch).ok_or(TimeFallback::Unparsable)?;
        let earliest = arrival_time_ms.saturating_sub(self.window_past_ms);
        let latest = arrival_time_ms.saturating_add(self.window_future_ms);
        if (earliest..=latest).contains(&ms) {
            Ok(ms)
        } else {
            Err(TimeFallback::OutOfWindow)
        }
    }
}

/// Milliseconds since the epoch of a member's JSON text in `format`.
fn parse_time(json: &str, format: &TimeFormat, scratch: &mut String) -> Option<i64> {
    let quoted = json.starts_with('"');
    let text = if quoted { field_text(json, scratch) } else { json };
    if !quoted && !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    match format {
        TimeFormat::Auto => match parse_decimal(text) {
            Some((mantissa, exponent)) => epoch_ms(mantissa, exponent, unit_by_magnitude(mantissa, exponent)),
            None if quoted => parse_iso8601(text),
            None => None,
        },
        TimeFormat::Rfc3339 if quoted => chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis()),
        TimeFormat::Rfc3339 => None,
        TimeFormat::Epoch(unit) => parse_decimal(text).and_then(|(m, e)| epoch_ms(m, e, *unit)),
        TimeFormat::Strftime(pattern) => parse_strftime(text, pattern),
    }
}

/// A decimal number's digits and power of ten (`12.5e1` is (125, 0)); at most 38 digits.
fn parse_decimal(text: &str) -> Option<(i128, i32)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (number, exp) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i32>().ok().filter(|e| e.abs() <= 40)?),
        None => (rest, 0),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() || int.len() + frac.len() > 38 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut mantissa: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa * 10 + i128::from(b - b'0');
    }
    Some((if negative { -mantissa } else { mantissa }, exp - frac.len() as i32))
}

/// The unit of an epoch number by its count of integer digits.
fn unit_by_magnitude(mantissa: i128, exponent: i32) -> EpochUnit {
    let digits = mantissa.unsigned_abs().checked_ilog10().map_or(0, |d| d as i32 + 1);
    match digits + exponent {
        ..=11 => EpochUnit::Seconds,
        12..=14 => EpochUnit::Millis,
        15..=17 => EpochUnit::Micros,
        _ => EpochUnit::Nanos,
    }
}

/// `mantissa × 10^exponent` units as whole milliseconds (rounded down), if it fits.
fn epoch_ms(mantissa: i128, exponent: i32, unit: EpochUnit) -> Option<i64> {
    let exp = exponent + unit.to_ms_exponent();
    let ms = if exp >= 0 {
        mantissa.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else {
        match 10i128.checked_pow(exp.unsigned_abs()) {
            Some(div) => mantissa.div_euclid(div),
            None => mantissa.signum().min(0),
        }
    };
    i64::try_from(ms).ok()
}

/// RFC 3339, or the ISO 8601 forms agents write that it does not take.
fn parse_iso8601(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    const ZONED: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"];
    const UTC: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
    ZONED
        .iter()
        .find_map(|f| chrono::DateTime::parse_from_str(text, f).ok().map(|t| t.timestamp_millis()))
        .or_else(|| UTC.iter().find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok()).map(|t| t.and_utc().timestamp_millis()))
}

/// A strftime pattern's time; UTC when the pattern has no zone.
fn parse_strftime(text: &str, pattern: &str) -> Option<i64> {
    match chrono::DateTime::parse_from_str(text, pattern) {
        Ok(t) => Some(t.timestamp_millis()),
        Err(_) => chrono::NaiveDateTime::parse_from_str(text, pattern).ok().map(|t| t.and_utc().timestamp_millis()),
    }
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
    options: &'a JsonOptions,
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
    /// The dotted name of the nested object being flattened.
    path: String,
    /// The open brackets of the value `json_scan` is walking.
    stack: Vec<u8>,
}

impl<'a> Converter<'a> {
    pub fn new(format: ValueFormat, ctx: BatchContext<'a>) -> Self {
        Self {
            format,
            ctx,
            limits: OutputLimits::NONE,
            options: &JsonOptions::NONE,
            scratch: Scratch::default(),
            stats: ConvertStats::default(),
        }
    }

    /// The same converter, with the logstore's options for `.json` topics.
    pub fn with_json_options(mut self, options: &'a JsonOptions) -> Self {
        self.options = options;
        self
    }

    /// The same converter, refusing to write more than `limits` into a batch.
    pub fn with_limits(mut self, limits: OutputLimits) -> Self {
        self.limits = limits;
        self
    }

    /// What every log of the batch shares.
    pub(crate) fn context(&self) -> BatchContext<'a> {
        self.ctx
    }

    /// How record values become fields.
    pub(crate) fn format(&self) -> ValueFormat {
        self.format
    }

    /// What conversion did so far.
    pub fn stats(&self) -> ConvertStats {
        self.stats
    }

    /// Appends the logs of `record` to `out`: one log, or one per object of a JSON array.
    /// Fails when a log is larger than `out` allows, or the logs exceed the limits.
    pub fn push_logs(&mut self, record: &RecordRef<'_>, out: &mut EntryBatch) -> Result<(), ConvertError> {
        self.limits.check(out)?;
        let timed = self.format == ValueFormat::Json && self.options.time.is_some();
        let Some(value) = record.value else {
            let tag = first_tag(&self.ctx, out);
            begin_log(&self.ctx, record, out).finish_with_tag(tag)?;
            if timed {
                self.stats.event_time_fallbacks[TimeFallback::Missing as usize] += 1;
            }
            return Ok(());
        };
        self.stats.value_bytes += value.len() as u64;
        if self.format == ValueFormat::Json {
            if self.push_json_logs(record, value, out)? {
                return Ok(());
            }
            self.stats.json_fallbacks += 1;
            if timed {
                self.stats.event_time_fallbacks[TimeFallback::Missing as usize] += 1;
            }
        }
        let tag = first_tag(&self.ctx, out);
        let mut log = begin_log(&self.ctx, record, out).fields();
        log.content(value);
        Ok(log.finish_with_tag(tag)?)
    }

    /// Whether [`Self::measure_log`] can tell every record's log: a raw topic, or a `.json`
    /// topic of a logstore without JSON options.
    pub fn measures(&self) -> bool {
        self.format == ValueFormat::Raw || (self.options.time.is_none() && self.options.flatten_depth == 0)
    }

    /// The log [`Self::push_logs`] would append for `record` with `tag`, measured instead of
    /// written: its payload length as [`EntryBatch::entry_len`] counts it, with the stats
    /// counted as `push_logs` counts them. `None` when the record's value is a JSON array
    /// (one log per object, or none), or when the converter does not [measure](Self::measures).
    pub fn measure_log(&mut self, record: &RecordRef<'_>, tag: Option<&[u8]>) -> Option<usize> {
        if !self.measures() {
            return None;
        }
        let headers = record.headers.clone().map(|(k, v)| (k.len(), v.map(<[u8]>::len)));
        let fixed = |fields: Option<(usize, usize)>| {
            EntryBatch::entry_len(self.ctx.source.len(), record.key.map(<[u8]>::len), headers, fields, tag.map(<[u8]>::len))
        };
        let Some(value) = record.value else {
            return Some(fixed(None));
        };
        if self.format == ValueFormat::Json {
            // As `push_json_logs` decides, on the same bytes.
            if let Ok(text) = std::str::from_utf8(value) {
                match text.bytes().find(|b| !b.is_ascii_whitespace()) {
                    Some(b'[') => return None,
                    Some(b'{') => {
                        let mut fields = 0;
                        let walked = top_level_fields(text, &mut self.scratch, |name, text| {
                            fields += EntryBatch::field_len(name.len(), text.len());
                        });
                        if walked.is_ok() {
                            self.stats.value_bytes += value.len() as u64;
                            return Some(fixed(None) + fields);
                        }
                    }
                    _ => {}
                }
            }
            self.stats.json_fallbacks += 1;
        }
        self.stats.value_bytes += value.len() as u64;
        Some(fixed(Some((CONTENT.len(), value.len()))))
    }

    /// Writes the logs of a JSON object or array of objects; `false` (nothing written) when
    /// `value` is anything else.
    fn push_json_logs(&mut self, record: &RecordRef<'_>, value: &[u8], out: &mut EntryBatch) -> Result<bool, ConvertError> {
        let ctx = &self.ctx;
        let limits = self.limits;
        let options = self.options;
        let scratch = &mut self.scratch;
        let mut fallbacks = [0; TimeFallback::ALL.len()];
        // JSON that parses is UTF-8 (bytes above 0x7f can only be inside strings, which
        // must be UTF-8): checking it all at once spares the parser checking every string.
        let Ok(value) = std::str::from_utf8(value) else {
            return Ok(false);
        };
        match value.bytes().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') if options.time.is_none() && options.flatten_depth == 0 => {
                // The fast path, for logstores without options: top-level members as they
                // are, found in one pass (`json_scan`, which validates as serde_json does).
                let tag = first_tag(ctx, out);
                let mut log = begin_log(ctx, record, out).fields();
                match top_level_fields(value, scratch, |name, text| log.field(name, text)) {
                    Ok(()) => {
                        log.finish_with_tag(tag)?;
                        Ok(true)
                    }
                    // Dropping the unfinished log removes it.
                    Err(json_scan::Invalid) => Ok(false),
                }
            }
            Some(b'{') => {
                let tag = first_tag(ctx, out);
                let mut log = begin_log(ctx, record, out).fields();
                let mut de = serde_json::Deserializer::from_str(value);
                let parsed = ObjectFields { log: &mut log, scratch, options, ctx, fallbacks: &mut fallbacks }
                    .deserialize(&mut de)
                    .and_then(|()| de.end());
                match parsed {
                    Ok(()) => {
                        log.finish_with_tag(tag)?;
                        self.stats.add_time_fallbacks(&fallbacks);
                        Ok(true)
                    }
                    // Dropping the unfinished log removes it.
                    Err(_) => Ok(false),
                }
            }
            Some(b'[') => {
                let mut too_large = None;
                let written = out.all_or_nothing(|out| {
                    let mut de = serde_json::Deserializer::from_str(value);
                    let sink =
                        ObjectSink { ctx, limits, options, record, out, scratch, fallbacks: &mut fallbacks, too_large: &mut too_large };
                    let objects = ObjectLogs(sink);
                    match objects.deserialize(&mut de).and_then(|n| de.end().map(|()| n)) {
                        Ok(n) if n > 0 => Ok(()),
                        _ => Err(()),
                    }
                });
                match (written, too_large) {
                    (_, Some(e)) => Err(e),
                    (Ok(()), None) => {
                        self.stats.add_time_fallbacks(&fallbacks);
                        Ok(true)
                    }
                    (Err(()), None) => Ok(false),
                }
            }
            _ => Ok(false),
        }
    }
}

/// Passes each top-level member of the JSON object `value` to `field` as a log of a
/// logstore without JSON options stores it: the name unescaped, a string value's text
/// unescaped, any other value's JSON text. Fails (after passing the members before the
/// error) when `value` is not a valid JSON object.
fn top_level_fields(value: &str, scratch: &mut Scratch, mut field: impl FnMut(&[u8], &[u8])) -> Result<(), json_scan::Invalid> {
    let Scratch { name: name_buf, value: value_buf, stack, .. } = scratch;
    json_scan::members(value, stack, |m| {
        let name = if m.name_escaped {
            name_buf.clear();
            let mut de = serde_json::Deserializer::from_slice(m.name_json);
            de.deserialize_str(StringInto(name_buf)).map_err(|_| json_scan::Invalid)?;
            name_buf.as_bytes()
        } else {
            m.name_inner()
        };
        // A value that starts with a quote is a whole string, quotes included (the walk
        // checked it), so its last byte need not be looked at.
        let text = match m.value.first() {
            Some(b'"') if !m.value_escaped => &m.value[1..m.value.len() - 1],
            Some(b'"') => {
                // Unescaped as `field_text` does, and kept as JSON text when that fails (a
                // lone surrogate, which the walk accepts as serde_json's skipping does).
                value_buf.clear();
                let mut de = serde_json::Deserializer::from_slice(m.value);
                match de.deserialize_str(StringInto(value_buf)) {
                    Ok(()) => value_buf.as_bytes(),
                    Err(_) => m.value,
                }
            }
            _ => m.value,
        };
        field(name, text);
        Ok(())
    })
}

/// Starts the log of `record` in `out`, with its headers written.
fn begin_log<'b>(ctx: &BatchContext<'_>, record: &RecordRef<'_>, out: &'b mut EntryBatch) -> EntryWriter<'b> {
    let mut log = out.begin(event_time(ctx, record), ctx.arrival_time_ms, ctx.source, record.key);
    for (key, value) in record.headers.clone() {
        log.header(key, value);
    }
    log
}

/// The event time a record's log gets before any found in its value: the record's
/// timestamp, or the arrival time when it has none.
pub(crate) fn event_time(ctx: &BatchContext<'_>, record: &RecordRef<'_>) -> i64 {
    match record.timestamp_ms {
        Some(ts) if ts >= 0 => ts,
        _ => ctx.arrival_time_ms,
    }
}

/// The tag for the next log written to `out`: the batch's tag if it is the first.
fn first_tag<'a>(ctx: &BatchContext<'a>, out: &EntryBatch) -> Option<&'a [u8]> {
    if out.is_empty() {
        ctx.tag
    } else {
        None
    }
}

impl ConvertStats {
    fn add_time_fallbacks(&mut self, fallbacks: &[u64; TimeFallback::ALL.len()]) {
        for (total, n) in self.event_time_fallbacks.iter_mut().zip(fallbacks) {
            *total += n;
        }
    }
}

/// Writes the members of one JSON object as fields of `log` (flattening nested objects
/// and setting the event time as `options` say).
struct ObjectFields<'w, 'b> {
    log: &'w mut FieldWriter<'b>,
    scratch: &'w mut Scratch,
    options: &'w JsonOptions,
    ctx: &'w BatchContext<'w>,
    /// Where a log that gets the record timestamp is counted.
    fallbacks: &'w mut [u64; TimeFallback::ALL.len()],
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
        if self.options.time.is_none() && self.options.flatten_depth == 0 {
            // The fast path, for logstores without options: top-level members as they are.
            while let Some(name) = map.next_key_seed(NameSeed(&mut self.scratch.name))? {
                let value: &'de RawValue = map.next_value()?;
                let name = match name {
                    Name::Borrowed(name) => name,
                    Name::InScratch => &self.scratch.name,
                };
                self.log.field(name.as_bytes(), field_text(value.get(), &mut self.scratch.value).as_bytes());
            }
            return Ok(());
        }
        let mut members = Members { log: self.log, scratch: self.scratch, options: self.options, time: None };
        members.scratch.path.clear();
        members.write(&mut map, 0)?;
        if let Some(time) = &self.options.time {
            let found = members.time.map(|(_, json)| json);
            match time.resolve(found, self.ctx.arrival_time_ms, &mut members.scratch.value) {
                Ok(ms) => members.log.set_event_time(ms),
                Err(why) => self.fallbacks[why as usize] += 1,
            }
        }
        Ok(())
    }
}

/// Writes an object's members, and those of its nested objects, as fields.
struct Members<'w, 'b, 'de> {
    log: &'w mut FieldWriter<'b>,
    scratch: &'w mut Scratch,
    options: &'w JsonOptions,
    /// The most preferred time member seen: its rank and JSON text.
    time: Option<(u8, &'de str)>,
}

impl<'de> Members<'_, '_, 'de> {
    /// Writes the members of `map`, an object `depth` levels below the top whose dotted
    /// name is `scratch.path`; the number of members.
    fn write<M: MapAccess<'de>>(&mut self, map: &mut M, depth: u32) -> Result<usize, M::Error> {
        let mut count = 0;
        while let Some(name) = map.next_key_seed(NameSeed(&mut self.scratch.name))? {
            let value: &'de RawValue = map.next_value()?;
            count += 1;
            let name = match name {
                Name::Borrowed(name) => name,
                Name::InScratch => &self.scratch.name,
            };
            let json = value.get();
            let flatten = depth < self.options.flatten_depth && json.starts_with('{');
            if depth == 0 && !flatten {
                // A top-level member as it is.
                note_time(self.options, &mut self.time, name, json);
                self.log.field(name.as_bytes(), field_text(json, &mut self.scratch.value).as_bytes());
                continue;
            }
            let parent = self.scratch.path.len();
            if parent > 0 {
                self.scratch.path.push('.');
            }
            self.scratch.path.push_str(name);
            let written = if flatten {
                // Parsed a second time (at most `flatten_depth` times in all): the member
                // is known to be valid JSON.
                let mut de = serde_json::Deserializer::from_str(json);
                let inner = de.deserialize_map(NestedMembers { members: &mut *self, depth: depth + 1 });
                inner.map_err(de::Error::custom)?
            } else {
                0
            };
            if written == 0 {
                // A leaf, or an empty object (kept as its text).
                let full = &self.scratch.path;
                note_time(self.options, &mut self.time, full, json);
                self.log.field(full.as_bytes(), field_text(json, &mut self.scratch.value).as_bytes());
                // Dotted names repeat their prefixes, so the fields can be larger than the
                // value: stop as soon as they are more than a log may be (the value is then
                // stored whole in `content`).
                if self.log.over_limit() {
                    return Err(de::Error::custom("flattened log too large"));
                }
            }
            self.scratch.path.truncate(parent);
        }
        Ok(count)
    }
}

/// Remembers `json` in `time` if a member of that name is the preferred time field so far.
#[inline]
fn note_time<'de>(options: &JsonOptions, time: &mut Option<(u8, &'de str)>, name: &str, json: &'de str) {
    if options.time.is_none() {
        return;
    }
    if let Some(rank) = options.time_rank(name) {
        if time.is_none_or(|(best, _)| rank < best) {
            *time = Some((rank, json));
        }
    }
}

/// Writes a nested object's members (see [`Members::write`]).
struct NestedMembers<'m, 'w, 'b, 'de> {
    members: &'m mut Members<'w, 'b, 'de>,
    depth: u32,
}

impl<'de> Visitor<'de> for NestedMembers<'_, '_, '_, 'de> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<usize, M::Error> {
        self.members.write(&mut map, self.depth)
    }
}

/// A member's value as stored: a string's text (unescaped), or any other value's JSON text.
fn field_text<'x>(json: &'x str, scratch: &'x mut String) -> &'x str {
    match json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
        // memchr's vector search: every string value is scanned for escapes.
        Some(inner) if memchr::memchr(b'\\', inner.as_bytes()).is_none() => inner,
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
    options: &'c JsonOptions,
    record: &'c RecordRef<'c>,
    out: &'s mut EntryBatch,
    scratch: &'s mut Scratch,
    fallbacks: &'s mut [u64; TimeFallback::ALL.len()],
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
            options: self.options,
            record: self.record,
            out: &mut *self.out,
            scratch: &mut *self.scratch,
            fallbacks: &mut *self.fallbacks,
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
        let fields =
            ObjectFields { log: &mut log, scratch: sink.scratch, options: sink.options, ctx: sink.ctx, fallbacks: sink.fallbacks };
        d.deserialize_map(fields)?;
        log.finish_with_tag(tag).map_err(|e| {
            *sink.too_large = Some(e.into());
            de::Error::custom("log too large")
        })
    }
}

#[cfg(test)]
#[path = "../../crates/records/tests/common/mod.rs"]
pub(super) mod wire;

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use crate::config::LogstoreConfig;
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

    /// 2026-11-30T10:11:12.345Z.
    const T: i64 = 1_796_033_472_345;

    fn timed(field: &str, format: Option<&str>, flatten_depth: u32) -> JsonOptions {
        let mut store: LogstoreConfig = toml::from_str("name = \"app\"").unwrap();
        store.time_field = Some(field.into());
        store.time_format = format.map(str::to_string);
        store.flatten_depth = flatten_depth;
        JsonOptions::from_config(&store)
    }

    /// Logs of `value` on a `.json` topic with `options`, arriving at [`T`].
    fn convert_with(value: &str, options: &JsonOptions) -> (Vec<LogEntry>, ConvertStats) {
        let ctx = BatchContext { arrival_time_ms: T, ..ctx() };
        let mut out = EntryBatch::new(1 << 20);
        let mut converter = Converter::new(ValueFormat::Json, ctx).with_json_options(options);
        converter.push_logs(&record(value.as_bytes()), &mut out).unwrap();
        (out.into_entries().unwrap(), converter.stats())
    }

    fn time_of(json: &str, format: &TimeFormat) -> Option<i64> {
        parse_time(json, format, &mut String::new())
    }

    #[test]
    fn times_in_the_formats_agents_write() {
        let auto = TimeFormat::Auto;
        for json in [
            r#""2026-11-30T10:11:12.345Z""#,
            r#""2026-11-30T10:11:12.345678912Z""#,
            r#""2026-11-30T11:11:12.345+01:00""#,
            r#""2026-11-30T11:11:12.345+0100""#,
            r#""2026-11-30 10:11:12.345Z""#,
            r#""2026-11-30T10:11:12.345""#,
            r#""2026-11-30 10:11:12.3456""#,
            "1796033472.345",
            "1796033472.3459",
            r#""1796033472.345""#,
            "1796033472345",
            "1796033472345678",
            "1796033472345678912",
            "1.796033472345e9",
        ] {
            assert_eq!(time_of(json, &auto), Some(T), "{json}");
        }
        assert_eq!(time_of("1796033472", &auto), Some(T - 345));
        assert_eq!(time_of(r#""2026-11-30T10:11:12Z""#, &auto), Some(T - 345));
        assert_eq!(time_of("0", &auto), Some(0));
        assert_eq!(time_of("-1.5", &auto), Some(-1500));
        // Explicit units override the magnitude.
        assert_eq!(time_of("1796033472", &TimeFormat::Epoch(EpochUnit::Millis)), Some(1_796_033_472));
        assert_eq!(time_of("1796033472345.9", &TimeFormat::Epoch(EpochUnit::Millis)), Some(T));
        assert_eq!(time_of("17960334723456", &TimeFormat::Epoch(EpochUnit::Seconds)), Some(17_960_334_723_456_000));
        assert_eq!(time_of("1796033472345678", &TimeFormat::Epoch(EpochUnit::Micros)), Some(T));
        assert_eq!(time_of("1796033472345678912", &TimeFormat::Epoch(EpochUnit::Nanos)), Some(T));
        assert_eq!(time_of(r#""2026-11-30T10:11:12.345Z""#, &TimeFormat::Rfc3339), Some(T));
        assert_eq!(time_of("1796033472", &TimeFormat::Rfc3339), None);
        let strftime = TimeFormat::Strftime("%d/%b/%Y:%H:%M:%S %z".into());
        assert_eq!(time_of(r#""30/Nov/2026:11:11:12 +0100""#, &strftime), Some(T - 345));
        let naive = TimeFormat::Strftime("%Y%m%d %H%M%S%.3f".into());
        assert_eq!(time_of(r#""20261130 101112.345""#, &naive), Some(T));
        for bad in [r#""yesterday""#, r#""""#, "true", "null", "{}", "[1]", r#""2026-13-30T10:11:12Z""#, "1e400", "99999999999999999999999999999999999999999"] {
            assert_eq!(time_of(bad, &auto), None, "{bad}");
        }
        assert_eq!(time_of(r#""30/Nov/2026""#, &strftime), None);
    }

    #[test]
    fn the_event_time_comes_from_the_time_field() {
        let value = r#"{"msg":"a","@timestamp":"2026-11-30T10:11:12.345Z","n":1}"#;
        let (logs, stats) = convert_with(value, &timed("@timestamp", None, 0));
        assert_eq!((logs[0].event_time_ms, logs[0].arrival_time_ms), (T, T));
        // The field stays a field.
        assert_eq!(fields(&logs[0])[1], ("@timestamp".into(), "2026-11-30T10:11:12.345Z".into()));
        assert_eq!(stats.event_time_fallbacks, [0, 0, 0]);
        // Without the option: the record timestamp, as before.
        let (logs, _) = convert_with(value, &JsonOptions::NONE);
        assert_eq!(logs[0].event_time_ms, 5);
    }

    #[test]
    fn auto_takes_the_most_preferred_time_field_present() {
        let options = timed("auto", None, 0);
        let value = r#"{"time":1796033000,"start_time":1796033472000,"timestamp":"2026-11-30T10:11:12.345Z"}"#;
        assert_eq!(convert_with(value, &options).0[0].event_time_ms, T);
        let value = r#"{"start_time":1796033472345,"date":1796033400.5}"#;
        assert_eq!(convert_with(value, &options).0[0].event_time_ms, 1_796_033_400_500);
        let value = r#"{"start_time":1796033472345}"#;
        assert_eq!(convert_with(value, &options).0[0].event_time_ms, T);
        // A named field is that one only, its first occurrence.
        let value = r#"{"@timestamp":"2026-11-30T10:11:12.345Z","ts":1796033400,"ts":1796033401}"#;
        assert_eq!(convert_with(value, &timed("ts", None, 0)).0[0].event_time_ms, 1_796_033_400_000);
    }

    #[test]
    fn missing_garbage_and_out_of_window_times_fall_back_and_are_counted() {
        let options = timed("time", None, 0);
        let hour = 3_600_000;
        for (value, why) in [
            (r#"{"msg":"x"}"#.to_string(), TimeFallback::Missing),
            (r#"{"time":"soon"}"#.to_string(), TimeFallback::Unparsable),
            (r#"{"time":true}"#.to_string(), TimeFallback::Unparsable),
            (format!(r#"{{"time":{}}}"#, T - 169 * hour), TimeFallback::OutOfWindow),
            (format!(r#"{{"time":{}}}"#, T + hour + 1), TimeFallback::OutOfWindow),
            ("not json".to_string(), TimeFallback::Missing),
        ] {
            let (logs, stats) = convert_with(&value, &options);
            assert_eq!(logs.len(), 1, "{value}");
            assert_eq!(logs[0].event_time_ms, 5, "{value}");
            let mut expected = [0; 3];
            expected[why as usize] = 1;
            assert_eq!(stats.event_time_fallbacks, expected, "{value}");
        }
        // The window's edges are inside it.
        for t in [T - 168 * hour, T + hour] {
            assert_eq!(convert_with(&format!(r#"{{"time":{t}}}"#), &options).0[0].event_time_ms, t);
        }
        let mut narrow: LogstoreConfig = toml::from_str("name = \"a\"\ntime_field = \"time\"\ntime_window_past_hours = 0.5").unwrap();
        narrow.time_window_future_hours = Some(48.0);
        let narrow = JsonOptions::from_config(&narrow);
        let (logs, stats) = convert_with(&format!(r#"{{"time":{}}}"#, T - hour), &narrow);
        assert_eq!((logs[0].event_time_ms, stats.event_time_fallbacks), (5, [0, 0, 1]));
        assert_eq!(convert_with(&format!(r#"{{"time":{}}}"#, T + 47 * hour), &narrow).0[0].event_time_ms, T + 47 * hour);
        // Raw topics never look for a time.
        let mut out = EntryBatch::new(1 << 20);
        let mut raw = Converter::new(ValueFormat::Raw, ctx()).with_json_options(&options);
        raw.push_logs(&record(b"{\"time\":1}"), &mut out).unwrap();
        assert_eq!(raw.stats().event_time_fallbacks, [0, 0, 0]);
    }

    #[test]
    fn each_object_of_an_array_has_its_own_time() {
        let value = r#"[{"time":1796033472.345,"v":1},{"v":2},{"time":1796033400}]"#;
        let (logs, stats) = convert_with(value, &timed("auto", None, 0));
        let times: Vec<_> = logs.iter().map(|l| l.event_time_ms).collect();
        assert_eq!(times, vec![T, 5, 1_796_033_400_000]);
        assert_eq!(stats.event_time_fallbacks, [1, 0, 0]);
        // An array undone (not all objects) counts once, as the one raw log it becomes.
        let (logs, stats) = convert_with(r#"[{"time":1796033472.345},2]"#, &timed("auto", None, 0));
        assert_eq!((logs.len(), stats.event_time_fallbacks, stats.json_fallbacks), (1, [1, 0, 0], 1));
    }

    #[test]
    fn nested_objects_flatten_down_to_the_depth() {
        let value = r#"{"log":{"message":"hi","dimensions":{"hostname":"h1","service":"s"}},"creation_time":1796033472,"meta":{"tenantId":"t","x\"y":{}},"tags":[{"a":1}],"e":{}}"#;
        let (logs, _) = convert_with(value, &timed("creation_time", None, 2));
        assert_eq!(logs[0].event_time_ms, T - 345);
        let f = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            fields(&logs[0]),
            f(&[
                ("log.message", "hi"),
                ("log.dimensions.hostname", "h1"),
                ("log.dimensions.service", "s"),
                ("creation_time", "1796033472"),
                ("meta.tenantId", "t"),
                ("meta.x\"y", "{}"),
                ("tags", r#"[{"a":1}]"#),
                ("e", "{}"),
            ])
        );
        let (logs, _) = convert_with(value, &timed("creation_time", None, 1));
        assert_eq!(fields(&logs[0])[1], ("log.dimensions".into(), r#"{"hostname":"h1","service":"s"}"#.into()));
        let (logs, _) = convert_with(value, &JsonOptions::NONE);
        assert_eq!(fields(&logs[0])[0].0, "log");
        // A nested time field by its dotted name.
        let value = r#"{"event":{"created":"2026-11-30T10:11:12.345Z"},"host":{"name":"web-1"}}"#;
        let (logs, stats) = convert_with(value, &timed("event.created", None, 1));
        assert_eq!((logs[0].event_time_ms, stats.event_time_fallbacks), (T, [0, 0, 0]));
        assert_eq!(fields(&logs[0])[1], ("host.name".into(), "web-1".into()));
        // Not flattened, the dotted name is not found.
        let (logs, stats) = convert_with(value, &timed("event.created", None, 0));
        assert_eq!((logs[0].event_time_ms, stats.event_time_fallbacks), (5, [1, 0, 0]));
    }

    #[test]
    fn flattening_stops_when_the_prefixes_make_the_log_too_large() {
        // 2000 one-byte members under a 1000-byte name: 2 MB flattened from 10 kB.
        let name = "k".repeat(1000);
        let members: Vec<String> = (0..2000).map(|i| format!(r#""{i}":1"#)).collect();
        let value = format!(r#"{{"{name}":{{{}}}}}"#, members.join(","));
        for wrapped in [value.clone(), format!("[{value}]")] {
            let ctx = BatchContext { arrival_time_ms: T, ..ctx() };
            let mut out = EntryBatch::new(64 * 1024);
            let options = timed("time", None, 1);
            let mut converter = Converter::new(ValueFormat::Json, ctx).with_json_options(&options);
            converter.push_logs(&record(wrapped.as_bytes()), &mut out).unwrap();
            assert!(out.bytes_len() < 2 * wrapped.len(), "{}", out.bytes_len());
            let logs = out.into_entries().unwrap();
            assert_eq!(fields(&logs[0]), vec![("content".into(), wrapped.clone())]);
            assert_eq!(converter.stats().json_fallbacks, 1);
        }
    }

    #[test]
    fn bad_time_and_flatten_settings_are_refused() {
        let config = |store: &str| {
            let c: crate::config::Config =
                toml::from_str(&format!("[[projects]]\nname = \"p\"\n[[projects.logstores]]\nname = \"a\"\n{store}")).unwrap();
            c.validate()
        };
        for good in [
            "time_field = \"auto\"\nflatten_depth = 16",
            "time_field = \"log.ts\"\ntime_format = \"epoch_us\"\ntime_window_past_hours = 0.5",
            "time_field = \"t\"\ntime_format = \"%Y%m%d %H%M%S\"\ntime_window_future_hours = 48",
        ] {
            assert!(config(good).is_ok(), "{good}");
        }
        for bad in [
            "time_field = \"\"",
            "time_field = \"t\"\ntime_format = \"epoch\"",
            "time_field = \"t\"\ntime_format = \"%Y-%Q\"",
            "time_field = \"t\"\ntime_window_past_hours = 0",
            "time_field = \"t\"\ntime_window_future_hours = -1",
            "flatten_depth = 17",
            "time_format = \"epoch_ms\"",
        ] {
            assert!(config(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_options_no_scratch_is_used() {
        let value = br#"{"a":{"b":1},"time":1796033472}"#;
        let mut out = EntryBatch::new(1 << 20);
        let mut converter = Converter::new(ValueFormat::Json, ctx());
        converter.push_logs(&record(value), &mut out).unwrap();
        let s = &converter.scratch;
        assert!(s.name.is_empty() && s.value.is_empty() && s.path.capacity() == 0);
        assert_eq!(out.into_entries().unwrap()[0].event_time_ms, 5);
    }
}
