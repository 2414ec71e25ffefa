//! `loggate logs`: reading stored logs for people and scripts.
//!
//! Logs are rendered as one JSON object each (or a table row): meta fields use SLS-style
//! double-underscore names; a log's own fields follow. Values that are not UTF-8 are written
//! as `{"base64": "..."}`. Shards are merged by event time; `--from`/`--to` seek with the
//! segment indexes rather than reading from the start.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use loggate_storage::clickhouse::ClickHouseStore;
use loggate_storage::local::{LocalStore, ReadBatch, ReadQuery};
use loggate_storage::StorageError;
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

/// Where a `--from`/`--to` bound lies: at an offset (of every shard) or at an event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Offset(u64),
    /// Milliseconds since the Unix epoch.
    Time(i64),
}

/// Parses a bound: digits are an offset; otherwise a time: `now`, `-15m`/`now-15m` (units
/// `ms`, `s`, `m`, `h`, `d`), `@<epoch ms>`, or `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM]`
/// (UTC when no zone is given; a space may stand for the `T`).
pub fn parse_bound(text: &str, now_ms: i64) -> Result<Bound, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is neither an offset nor a time (e.g. 2024-05-01T12:00:00Z, -15m, @1714564800000)");
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Bound::Offset).map_err(|_| bad());
    }
    if let Some(ms) = t.strip_prefix('@') {
        return ms.parse().map(Bound::Time).map_err(|_| bad());
    }
    if t == "now" {
        return Ok(Bound::Time(now_ms));
    }
    if let Some(ago) = t.strip_prefix("now-").or_else(|| t.strip_prefix('-')) {
        let split = ago.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = ago.split_at(split);
        let n: i64 = n.parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        return n.checked_mul(unit_ms).map(|d| Bound::Time(now_ms - d)).ok_or_else(bad);
    }
    parse_datetime(t).map(Bound::Time).ok_or_else(bad)
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH:MM]` to ms since the epoch.
fn parse_datetime(t: &str) -> Option<i64> {
    let num = |s: &str| -> Option<i64> { (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())? };
    let (date, rest) = t.split_at(t.find(['T', ' ']).unwrap_or(t.len()));
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let rest = rest.get(1..).unwrap_or("");
    let (clock, zone_ms) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, z) = rest.split_at(i);
        let (zh, zm) = z[1..].split_once(':')?;
        let off = (num(zh)? * 60 + num(zm)?) * 60_000;
        (c, if z.starts_with('-') { -off } else { off })
    } else {
        (rest, 0)
    };
    let (mut h, mut mi, mut s, mut ms) = (0, 0, 0, 0);
    if !clock.is_empty() {
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut p = hms.split(':');
        h = num(p.next()?)?;
        mi = num(p.next()?)?;
        s = p.next().map(num).unwrap_or(Some(0))?;
        if p.next().is_some() || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        if !frac.is_empty() {
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            ms = num(&digits)?;
            num(frac)?;
        }
    }
    let days = days_from_civil(y, mo, da);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms - zone_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.fffZ` of ms since the epoch.
pub fn format_time(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// One `--where` condition on a field of the printed log (meta fields included).
#[derive(Debug, Clone)]
pub enum Where {
    /// `field=value`: the field's text equals the value.
    Equals(String, String),
    /// `field~regex`: the regex matches somewhere in the field's text.
    Matches(String, regex::Regex),
}

impl Where {
    /// Parses `field=value` or `field~regex` (whichever sign comes first).
    pub fn parse(text: &str) -> Result<Self, String> {
        let at = text.find(['=', '~']).filter(|&i| i > 0).ok_or_else(|| {
            format!("--where {text:?}: expected field=value or field~regex")
        })?;
        let (field, value) = (text[..at].to_string(), &text[at + 1..]);
        if text.as_bytes()[at] == b'=' {
            return Ok(Where::Equals(field, value.to_string()));
        }
        // Bounded compiled size: a pattern cannot make the reader allocate without limit.
        let re = regex::RegexBuilder::new(value)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("--where {text:?}: {e}"))?;
        Ok(Where::Matches(field, re))
    }

    /// Whether the log (as [`to_json`] renders it) satisfies the condition.
    pub fn matches(&self, log: &Value) -> bool {
        let (Where::Equals(field, _) | Where::Matches(field, _)) = self;
        let Some(value) = log.get(field.as_str()) else { return false };
        let text = match value {
            Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
            other => std::borrow::Cow::Owned(other.to_string()),
        };
        match self {
            Where::Equals(_, want) => text == want.as_str(),
            Where::Matches(_, re) => re.is_match(&text),
        }
    }
}

/// How `loggate logs` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// Aligned columns: time, shard, offset, source, then `field=value` pairs.
    Table,
}

/// Header line of the table format.
pub fn table_header() -> String {
    format!("{:<24}  {:>5}  {:>10}  {:<21}  FIELDS", "TIME", "SHARD", "OFFSET", "SOURCE")
}

/// One log as a table row (from its [`to_json`] form).
pub fn table_row(log: &Value) -> String {
    let get = |k: &str| log.get(k).cloned().unwrap_or(Value::Null);
    let plain = |v: &Value| match v {
        Value::String(s) => s.replace('\n', "\\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let time = get(meta::EVENT_TIME).as_i64().map(format_time).unwrap_or_default();
    let mut row = format!(
        "{time:<24}  {:>5}  {:>10}  {:<21}",
        plain(&get(meta::SHARD)),
        plain(&get(meta::OFFSET)),
        plain(&get(meta::SOURCE))
    );
    if let Value::Object(m) = log {
        let shown = [meta::OFFSET, meta::SHARD, meta::PROJECT, meta::LOGSTORE, meta::EVENT_TIME, meta::ARRIVAL_TIME, meta::SOURCE];
        for (k, v) in m.iter().filter(|(k, _)| !shown.contains(&k.as_str())) {
            row.push_str("  ");
            row.push_str(k);
            row.push('=');
            row.push_str(&plain(v));
        }
    }
    row
}

/// What `loggate logs` prints.
#[derive(Debug, Clone)]
pub struct LogsRequest {
    pub stream: StreamId,
    pub shards: Vec<u32>,
    pub from: Option<Bound>,
    pub to: Option<Bound>,
    pub wheres: Vec<Where>,
    pub limit: Option<u64>,
    pub follow: bool,
    pub format: Format,
}


/// A store `loggate logs` reads: the local logstore's files, or ClickHouse.
#[async_trait::async_trait]
pub trait LogSource: Sync {
    /// The logs of one shard that `q` selects, in offset order.
    async fn query(&self, stream: &StreamId, shard: u32, q: ReadQuery) -> Result<ReadBatch, StorageError>;

    /// How far below the last offset read a log may still appear later (0: offsets become
    /// visible in order). `--follow` reads that far back again on every poll and skips what
    /// it printed.
    fn follow_lag(&self) -> u64 {
        0
    }
}

#[async_trait::async_trait]
impl LogSource for LocalStore {
    async fn query(&self, stream: &StreamId, shard: u32, q: ReadQuery) -> Result<ReadBatch, StorageError> {
        LocalStore::query(self, stream, shard, q).await
    }
}

#[async_trait::async_trait]
impl LogSource for ClickHouseStore {
    async fn query(&self, stream: &StreamId, shard: u32, q: ReadQuery) -> Result<ReadBatch, StorageError> {
        ClickHouseStore::query(self, stream, shard, q).await
    }

    /// Offsets are batch ids that start with the second a node took the logs: another
    /// node's insert (its window, the clocks' difference) can land seconds after later ids.
    fn follow_lag(&self) -> u64 {
        ClickHouseStore::OFFSETS_PER_SECOND * 10
    }
}

/// Logs fetched from the store per query and shard (the most a shard cursor holds).
const BATCH: usize = 1000;
/// How long `--follow` waits before looking for new logs.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// One shard's position in a merged read.
struct Cursor {
    shard: u32,
    q: ReadQuery,
    buf: VecDeque<StoredLog>,
    /// Nothing more to read until the next poll.
    caught_up: bool,
    /// With a follow lag: offsets at or above `from_offset - lag` already printed.
    seen: std::collections::BTreeSet<u64>,
}

impl Cursor {
    /// Fetches until a log is buffered or the shard is caught up; each query advances.
    async fn fill<S: LogSource + ?Sized>(&mut self, store: &S, stream: &StreamId) -> Result<(), String> {
        while self.buf.is_empty() && !self.caught_up {
            let b = store.query(stream, self.shard, self.q).await.map_err(|e| e.to_string())?;
            let progressed = b.next_offset > self.q.from_offset || !b.logs.is_empty();
            self.caught_up = b.is_done(&self.q) || !progressed;
            self.q.from_offset = self.q.from_offset.max(b.next_offset);
            let seen = &self.seen;
            self.buf.extend(b.logs.into_iter().filter(|l| !seen.contains(&l.offset)));
        }
        Ok(())
    }

    /// Before a `--follow` poll: go back `lag` offsets (not before `start`), and forget
    /// what was printed below that.
    fn rewind(&mut self, lag: u64, start: u64) {
        if lag == 0 {
            return;
        }
        let low = self.q.from_offset.saturating_sub(lag).max(start);
        self.seen = self.seen.split_off(&low);
        self.q.from_offset = low;
    }

    fn past_to(&self) -> bool {
        self.q.to_offset.is_some_and(|t| self.q.from_offset > t)
    }
}

/// Prints the logs `req` asks for to `out`, shards merged by event time (each shard's own
/// order kept); returns how many were printed. With `follow`, polls for new logs until the
/// limit is reached or every shard is past an offset `--to`.
pub async fn print_logs<S: LogSource + ?Sized, W: Write>(store: &S, req: &LogsRequest, out: &mut W) -> Result<u64, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut q = ReadQuery::from_offset(0, BATCH);
    match req.from {
        Some(Bound::Offset(o)) => q.from_offset = o,
        Some(Bound::Time(t)) => q.from_time_ms = Some(t),
        None => {}
    }
    match req.to {
        Some(Bound::Offset(o)) => q.to_offset = Some(o),
        Some(Bound::Time(t)) => q.to_time_ms = Some(t),
        None => {}
    }
    let mut cursors: Vec<Cursor> =
        req.shards.iter().map(|&shard| Cursor { shard, q, buf: VecDeque::new(), caught_up: false, seen: Default::default() }).collect();
    let (lag, start) = (store.follow_lag(), q.from_offset);
    if req.format == Format::Table {
        writeln!(out, "{}", table_header()).map_err(io)?;
    }
    let mut printed = 0u64;
    if req.limit == Some(0) {
        return Ok(0);
    }
    loop {
        for c in cursors.iter_mut() {
            c.fill(store, &req.stream).await?;
        }
        let head = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buf.front().map(|l| ((l.entry.event_time_ms, c.shard, l.offset), i)))
            .min();
        let Some((_, i)) = head else {
            out.flush().map_err(io)?;
            if !req.follow || cursors.iter().all(Cursor::past_to) {
                return Ok(printed);
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            for c in cursors.iter_mut() {
                c.rewind(lag, start);
                c.caught_up = false;
            }
            continue;
        };
        let c = &mut cursors[i];
        let Some(log) = c.buf.pop_front() else { continue };
        if lag > 0 && req.follow {
            c.seen.insert(log.offset);
        }
        let value = to_json(&req.stream, c.shard, &log);
        if !req.wheres.iter().all(|w| w.matches(&value)) {
            continue;
        }
        match req.format {
            Format::Json => writeln!(out, "{value}"),
            Format::Table => writeln!(out, "{}", table_row(&value)),
        }
        .map_err(io)?;
        printed += 1;
        if req.limit.is_some_and(|l| printed >= l) {
            out.flush().map_err(io)?;
            return Ok(printed);
        }
        if req.follow && c.buf.is_empty() {
            out.flush().map_err(io)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loggate_storage::local::LocalStoreOptions;
    use loggate_storage::{Durability, EntryBatch, LogStorage};

    const NOW: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

    #[test]
    fn bounds() {
        assert_eq!(parse_bound("42", NOW), Ok(Bound::Offset(42)));
        assert_eq!(parse_bound("now", NOW), Ok(Bound::Time(NOW)));
        assert_eq!(parse_bound("-15m", NOW), Ok(Bound::Time(NOW - 900_000)));
        assert_eq!(parse_bound("now-2h", NOW), Ok(Bound::Time(NOW - 7_200_000)));
        assert_eq!(parse_bound("-1d", NOW), Ok(Bound::Time(NOW - 86_400_000)));
        assert_eq!(parse_bound("-500ms", NOW), Ok(Bound::Time(NOW - 500)));
        assert_eq!(parse_bound("@1700000000123", NOW), Ok(Bound::Time(1_700_000_000_123)));
        assert_eq!(parse_bound("2024-05-01T12:00:00Z", 0), Ok(Bound::Time(NOW)));
        assert_eq!(parse_bound("2024-05-01 12:00:00", 0), Ok(Bound::Time(NOW)));
        assert_eq!(parse_bound("2024-05-01T12:00", 0), Ok(Bound::Time(NOW)));
        assert_eq!(parse_bound("2024-05-01T14:00:00.250+02:00", 0), Ok(Bound::Time(NOW + 250)));
        assert_eq!(parse_bound("2024-05-01T11:30:00.5-00:30", 0), Ok(Bound::Time(NOW + 500)));
        assert_eq!(parse_bound("2024-05-01", 0), Ok(Bound::Time(NOW - 12 * 3_600_000)));
        assert_eq!(parse_bound("1970-01-01T00:00:00Z", 0), Ok(Bound::Time(0)));
        assert_eq!(parse_bound("1969-12-31T23:59:59.999Z", 0), Ok(Bound::Time(-1)));
        for bad in ["", "yesterday", "-5x", "2024-13-01", "2024-05-01T25:00", "12:00", "-", "2024-05-01T12:00:00.abc", "@x"] {
            assert!(parse_bound(bad, NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_formatting_round_trips() {
        for ms in [0, -1, NOW, NOW + 999, 951_782_400_000 /* 2000-02-29 */, 4_102_444_800_000] {
            let text = format_time(ms);
            assert_eq!(parse_bound(&text, 0), Ok(Bound::Time(ms)), "{text}");
        }
        assert_eq!(format_time(NOW + 7), "2024-05-01T12:00:00.007Z");
    }

    #[test]
    fn where_conditions() {
        let log = serde_json::json!({"__shard__": 1, "__source__": "10.0.0.1:5", "level": "ERROR", "msg": "disk full on /var"});
        let w = |t: &str| Where::parse(t).unwrap().matches(&log);
        assert!(w("level=ERROR") && !w("level=error") && !w("level=ERR"));
        assert!(w("__shard__=1") && !w("__shard__=2"));
        assert!(w("msg~disk\\s+full") && w("msg~^disk") && !w("msg~^full"));
        assert!(w("__source__~^10\\.") && !w("missing=x") && !w("missing~.*"));
        assert!(w("msg=disk full on /var"));
        // The first sign splits: a value may contain = and ~.
        let log2 = serde_json::json!({"q": "a=b~c"});
        assert!(Where::parse("q=a=b~c").unwrap().matches(&log2));
        assert!(Where::parse("noop").is_err() && Where::parse("=x").is_err() && Where::parse("f~(").is_err());
    }

    #[test]
    fn table_rows() {
        let log = serde_json::json!({"__offset__": 42, "__shard__": 0, "__project__": "p", "__logstore__": "l",
            "__time_ms__": NOW, "__arrival_time_ms__": NOW, "__source__": "127.0.0.1:1", "__key__": "k", "content": "a\nb"});
        let row = table_row(&log);
        assert!(row.starts_with("2024-05-01T12:00:00.000Z"), "{row}");
        assert!(row.contains("  42  127.0.0.1:1") && row.ends_with("__key__=k  content=a\\nb"), "{row}");
        assert!(!row.contains("__project__"));
    }

    /// One log, as a batch to append.
    fn entry(shard: u32, n: u64, t: i64) -> EntryBatch {
        let mut batch = EntryBatch::new(1 << 20);
        let mut log = batch.begin(t, t, b"s", None).fields();
        log.field(b"n", format!("{shard}-{n}").as_bytes());
        log.finish().unwrap();
        batch
    }

    async fn run(store: &LocalStore, f: impl FnOnce(&mut LogsRequest)) -> Vec<String> {
        let mut req = LogsRequest {
            stream: StreamId::new("p", "l"),
            shards: vec![0, 1, 2],
            from: None,
            to: None,
            wheres: vec![],
            limit: None,
            follow: false,
            format: Format::Json,
        };
        f(&mut req);
        let mut out = Vec::new();
        let n = print_logs(store, &req, &mut out).await.unwrap();
        let lines: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
        let json: Vec<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["n"].as_str().unwrap().to_string())
            .collect();
        if req.format == Format::Json {
            assert_eq!(n as usize, json.len());
            json
        } else {
            lines
        }
    }

    #[tokio::test]
    async fn merged_by_time_with_every_flag() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), LocalStoreOptions { segment_bytes: 2048, ..Default::default() }).unwrap();
        let s = StreamId::new("p", "l");
        // Shard k holds times k, k+3, k+6, ... so the merge interleaves them; shard 2 is empty.
        for shard in 0..2u32 {
            for n in 0..300u64 {
                let t = NOW + (n * 3 + u64::from(shard)) as i64;
                store.append(&s, shard, entry(shard, n, t), Durability::Written).await.unwrap();
            }
        }
        let all = run(&store, |_| {}).await;
        assert_eq!(all.len(), 600);
        assert_eq!(&all[..4], ["0-0", "1-0", "0-1", "1-1"]);
        assert_eq!(run(&store, |r| r.shards = vec![1]).await.len(), 300);
        assert_eq!(run(&store, |r| r.limit = Some(3)).await, ["0-0", "1-0", "0-1"]);
        // Offsets bound every shard.
        let got = run(&store, |r| {
            r.from = Some(Bound::Offset(298));
            r.to = Some(Bound::Offset(298));
        })
        .await;
        assert_eq!(got, ["0-298", "1-298"]);
        // Times: inclusive, seeking.
        let got = run(&store, |r| {
            r.from = Some(Bound::Time(NOW + 3 * 100));
            r.to = Some(Bound::Time(NOW + 3 * 101 + 1));
        })
        .await;
        assert_eq!(got, ["0-100", "1-100", "0-101", "1-101"]);
        let got = run(&store, |r| r.wheres = vec![Where::parse("n~^1-29[0-9]$").unwrap()]).await;
        assert_eq!(got.len(), 10);
        let got = run(&store, |r| {
            r.wheres = vec![Where::parse("n=0-5").unwrap()];
            r.limit = Some(5);
        })
        .await;
        assert_eq!(got, ["0-5"]);
        let rows = run(&store, |r| {
            r.format = Format::Table;
            r.limit = Some(2);
        })
        .await;
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("TIME") && rows[1].contains("n=0-0") && rows[2].contains("n=1-0"), "{rows:?}");

        // Follow: picks up what is appended later, stops at the limit.
        let store = std::sync::Arc::new(store);
        let writer = store.clone();
        let s2 = s.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            writer.append(&s2, 2, entry(2, 0, NOW), Durability::Written).await.unwrap();
        });
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            run(&store, |r| {
                r.follow = true;
                r.wheres = vec![Where::parse("n~^2-").unwrap()];
                r.limit = Some(1);
            }),
        )
        .await
        .expect("follow did not see the late log");
        late.await.unwrap();
        assert_eq!(got, ["2-0"]);
    }
}
