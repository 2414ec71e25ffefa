//! Rendering stored logs for people and scripts: one JSON object per log.
//!
//! Meta fields use SLS-style double-underscore names; a log's own fields follow. Values
//! that are not UTF-8 are written as `{"base64": "..."}`.

use base64::Engine;
use bytes::Bytes;
use loggate_storage::{StoredLog, StreamId};
use serde_json::{Map, Value};

/// Meta field names, in output order.
pub mod meta {
    pub const OFFSET: &str = "__offset__";
    pub const SHARD: &str = "__shard__";
    pub const PROJECT: &str = "__project__";
    pub const LOGSTORE: &str = "__logstore__";
    pub const EVENT_TIME: &str = "__time_ms__";
    pub const ARRIVAL_TIME: &str = "__arrival_time_ms__";
    pub const SOURCE: &str = "__source__";
    pub const KEY: &str = "__key__";
    pub const HEADERS: &str = "__headers__";
}

fn text(bytes: &Bytes) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => {
            let mut m = Map::new();
            m.insert("base64".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)));
            Value::Object(m)
        }
    }
}

/// One stored log as a JSON object: meta fields, then the log's fields. A field whose
/// name collides with a meta field is written with a `_` prefix rather than dropped.
pub fn to_json(stream: &StreamId, shard: u32, log: &StoredLog) -> Value {
    let e = &log.entry;
    let mut m = Map::new();
    m.insert(meta::OFFSET.into(), log.offset.into());
    m.insert(meta::SHARD.into(), shard.into());
    m.insert(meta::PROJECT.into(), stream.project.clone().into());
    m.insert(meta::LOGSTORE.into(), stream.logstore.clone().into());
    m.insert(meta::EVENT_TIME.into(), e.event_time_ms.into());
    m.insert(meta::ARRIVAL_TIME.into(), e.arrival_time_ms.into());
    m.insert(meta::SOURCE.into(), text(&e.source));
    if let Some(key) = &e.key {
        m.insert(meta::KEY.into(), text(key));
    }
    if !e.headers.is_empty() {
        let headers = e
            .headers
            .iter()
            .map(|(k, v)| Value::Array(vec![text(k), v.as_ref().map(text).unwrap_or(Value::Null)]))
            .collect();
        m.insert(meta::HEADERS.into(), Value::Array(headers));
    }
    for (name, value) in &e.fields {
        let mut name = String::from_utf8_lossy(name).into_owned();
        while m.contains_key(&name) {
            name.insert(0, '_');
        }
        m.insert(name, text(value));
    }
    Value::Object(m)
}
