//! Turning decoded Kafka records into log entries: the raw `content` field, or the
//! top-level keys of a JSON value.

use std::borrow::Cow;

use bytes::Bytes;
use loggate_records::Record;
use loggate_storage::LogEntry;
use serde_json::value::RawValue;

use super::catalog::ValueFormat;

/// Name of the field holding a raw record value.
pub const CONTENT: &str = "content";

/// What every log of one produced batch shares.
pub struct BatchContext {
    pub arrival_time_ms: i64,
    pub source: Bytes,
}

/// Counts of what conversion did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConvertStats {
    /// Values on a `.json` topic that were not a JSON object or array of objects,
    /// stored whole in `content`.
    pub json_fallbacks: u64,
}

/// Appends the logs for `record` to `out`: one log, or one per element of a JSON array.
pub fn push_logs(record: Record, format: ValueFormat, ctx: &BatchContext, out: &mut Vec<LogEntry>, stats: &mut ConvertStats) {
    let event_time_ms = match record.timestamp_ms {
        Some(ts) if ts >= 0 => ts,
        _ => ctx.arrival_time_ms,
    };
    let headers = record.headers.into_iter().map(|h| (h.key, h.value)).collect();
    let base = LogEntry {
        event_time_ms,
        arrival_time_ms: ctx.arrival_time_ms,
        source: ctx.source.clone(),
        key: record.key,
        headers,
        fields: Vec::new(),
        tag: None,
    };
    let Some(value) = record.value else {
        out.push(base);
        return;
    };
    match format {
        ValueFormat::Raw => out.push(with_content(base, value)),
        ValueFormat::Json => match json_logs(&value) {
            Some(objects) if !objects.is_empty() => {
                out.extend(objects.into_iter().map(|fields| LogEntry { fields, ..base.clone() }));
            }
            _ => {
                stats.json_fallbacks += 1;
                out.push(with_content(base, value));
            }
        },
    }
}

fn with_content(mut entry: LogEntry, value: Bytes) -> LogEntry {
    entry.fields.push((Bytes::from_static(CONTENT.as_bytes()), value));
    entry
}

type Fields = Vec<(Bytes, Bytes)>;

/// Parses a JSON object (one log) or an array of objects (one log each). None when the
/// value is anything else, including an array holding a non-object. Field names and
/// string values without escapes are zero-copy slices of `value`.
fn json_logs(value: &Bytes) -> Option<Vec<Fields>> {
    let first = value.iter().find(|b| !b.is_ascii_whitespace())?;
    match first {
        b'{' => {
            let object: RawObject<'_> = serde_json::from_slice(value).ok()?;
            Some(vec![object.into_fields(value)])
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_slice(value).ok()?;
            items
                .into_iter()
                .map(|item| serde_json::from_str::<RawObject<'_>>(item.get()).ok().map(|o| o.into_fields(value)))
                .collect()
        }
        _ => None,
    }
}

/// A JSON object's members in order (repeated keys are all kept), values unparsed.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    /// The fields: strings as their text, any other value as its JSON text.
    fn into_fields(self, value: &Bytes) -> Fields {
        let text = |s: &str| -> Bytes {
            // Borrowed text lies inside `value`: slice it instead of copying.
            let inside = value.as_ptr_range().contains(&s.as_ptr()) && !s.is_empty();
            if inside {
                value.slice_ref(s.as_bytes())
            } else {
                Bytes::copy_from_slice(s.as_bytes())
            }
        };
        self.0
            .into_iter()
            .map(|(name, raw)| {
                let json = raw.get();
                let field = match json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
                    Some(inner) if !inner.contains('\\') => text(inner),
                    Some(_) => match serde_json::from_str::<String>(json) {
                        Ok(unescaped) => Bytes::from(unescaped),
                        Err(_) => text(json),
                    },
                    None => text(json),
                };
                (text(&name), field)
            })
            .collect()
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Members<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    members.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(RawObject(members))
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BatchContext {
        BatchContext { arrival_time_ms: 1000, source: Bytes::from_static(b"127.0.0.1:1") }
    }

    fn record(value: &[u8]) -> Record {
        Record { timestamp_ms: Some(5), key: None, value: Some(Bytes::copy_from_slice(value)), headers: vec![] }
    }

    fn fields(e: &LogEntry) -> Vec<(String, String)> {
        e.fields
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    fn convert(value: &[u8], format: ValueFormat) -> (Vec<LogEntry>, ConvertStats) {
        let mut out = Vec::new();
        let mut stats = ConvertStats::default();
        push_logs(record(value), format, &ctx(), &mut out, &mut stats);
        (out, stats)
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
    fn json_fields_without_escapes_share_the_record_memory() {
        let value = Bytes::from_static(br#"{"level":"info","n":42}"#);
        let fields = json_logs(&value).unwrap().remove(0);
        let inside = |b: &Bytes| value.as_ptr_range().contains(&b.as_ptr());
        assert!(fields.iter().all(|(k, v)| inside(k) && inside(v)));
        assert_eq!(&fields[0].1[..], b"info");
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
        let mut out = Vec::new();
        let mut r = record(b"x");
        r.timestamp_ms = None;
        push_logs(r, ValueFormat::Raw, &ctx(), &mut out, &mut ConvertStats::default());
        assert_eq!(out[0].event_time_ms, 1000);
    }
}
