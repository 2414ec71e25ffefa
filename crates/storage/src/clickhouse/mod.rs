//! ClickHouse as log storage: any number of gateway nodes insert into one ClickHouse
//! (a server or a cluster's Distributed table) over HTTP.
//!
//! Batches are RowBinary rows from the start (`rows.rs`). Appends from every connection
//! are coalesced into one insert per time window (`insert.rs`), bounded by rows and bytes;
//! an append is acknowledged only once the insert holding it succeeded. An insert whose
//! outcome is unknown (connection lost, timeout, error answer) is checked by its insert id
//! before it is retried, and only its missing rows are sent again, so a retry never stores
//! a log twice. Retention drops expired partitions (`schema.rs`).

mod http;
mod insert;
pub mod rows;
pub mod schema;
mod starts;

pub use http::{Client, Endpoint, HttpError};

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{
    AppendAck, AppendTicket, Durability, Encoding, EntryBatch, LogEntry, LogStorage, MarkedBatch, ProducerMark, StorageError,
    StoredLog, StreamId,
};
use crate::local::{ReadBatch, ReadQuery};
use http::{ident, quote};
use insert::{BatchIds, Pending};

/// How long closing the store waits for pending inserts.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a [`ClickHouseStore`].
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    pub endpoint: Endpoint,
    pub database: String,
    pub table: String,
    /// Create the database and table if absent (off when the target is a Distributed table
    /// the operator made).
    pub create_tables: bool,
    /// This gateway node (in batch ids and rows).
    pub node_id: u16,
    /// Largest encoded row accepted.
    pub max_entry_bytes: usize,
    /// An insert holds at most this many rows...
    pub insert_max_rows: usize,
    /// ...and this many bytes...
    pub insert_max_bytes: usize,
    /// ...and waits at most this long for more appends after the first.
    pub insert_window: Duration,
    /// Appends waiting for an insert hold at most this many bytes in all; beyond it an
    /// append waits for room (at most `enqueue_timeout`, then [`StorageError::Overloaded`]).
    pub max_pending_bytes: usize,
    pub enqueue_timeout: Duration,
    /// Retention in hours per stream (0 or absent: kept forever).
    pub retention_hours: HashMap<StreamId, u32>,
    /// How often expired partitions are looked for.
    pub retention_interval: Duration,
    /// Where retention drops partitions when the target is not where they are (a
    /// Distributed table): every shard's URL and its local table. None: the target.
    pub retention: Option<RetentionTarget>,
    /// Producer marks older than this (by arrival) are not looked at: the gateway forgets
    /// idempotent producers idle that long anyway, and the bound lets ClickHouse read only
    /// the partitions of that time.
    pub producer_lookback: Duration,
}

impl ClickHouseOptions {
    /// Options with the defaults for everything but where to connect.
    pub fn new(endpoint: Endpoint, database: impl Into<String>, table: impl Into<String>) -> Self {
        ClickHouseOptions {
            endpoint,
            database: database.into(),
            table: table.into(),
            create_tables: true,
            node_id: 0,
            max_entry_bytes: 1 << 20,
            insert_max_rows: 100_000,
            insert_max_bytes: 16 << 20,
            insert_window: Duration::from_millis(200),
            max_pending_bytes: 64 << 20,
            enqueue_timeout: Duration::from_secs(5),
            retention_hours: HashMap::new(),
            retention_interval: Duration::from_secs(600),
            producer_lookback: Duration::from_secs(86_400),
            retention: None,
        }
    }
}

/// What the ClickHouse backend did since start (for metrics).
#[derive(Debug, Default)]
pub struct ClickHouseStats {
    /// INSERT statements that succeeded (a check that found a whole insert stored counts).
    pub inserts: AtomicU64,
    /// Rows those inserts stored.
    pub rows: AtomicU64,
    /// INSERT attempts that failed (each retry counts).
    pub insert_errors: AtomicU64,
    /// Checks of an insert whose outcome was unknown.
    pub checks: AtomicU64,
    /// Appends answered with an error (nothing of them stored).
    pub appends_failed: AtomicU64,
    /// The last insert stored nothing (ClickHouse unreachable or refusing); cleared by the
    /// next insert that succeeds.
    pub failing: std::sync::atomic::AtomicBool,
}

impl ClickHouseStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The tables retention works on, one per URL (e.g. each shard's local table).
#[derive(Debug, Clone)]
pub struct RetentionTarget {
    pub urls: Vec<String>,
    pub table: String,
}

/// The ClickHouse backend.
pub struct ClickHouseStore {
    inner: Arc<Shared>,
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    flusher: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    housekeeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the store's tasks share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) opts: ClickHouseOptions,
    /// `db`.`table`, quoted.
    pub(crate) target: String,
    /// Bytes of pending appends (permits are bytes, in KiB).
    pub(crate) pending: Arc<Semaphore>,
    /// The whole of `pending`, in KiB.
    pending_kib: usize,
    ids: BatchIds,
    pub(crate) stats: Arc<ClickHouseStats>,
    /// Each shard's first retained offset, for acknowledgements.
    starts: starts::StartOffsets,
}

impl ClickHouseStore {
    /// How many offsets (batch ids) one second of a node's logs spans: an id starts with its
    /// second (see `insert.rs`).
    pub const OFFSETS_PER_SECOND: u64 = 1 << insert::SECOND_SHIFT;

    /// Connects: checks that ClickHouse answers, creates the table if configured to, and
    /// starts the insert and retention tasks (on the current tokio runtime).
    pub async fn open(opts: ClickHouseOptions) -> Result<Self, StorageError> {
        let store = Self::connect(opts, true).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        *store.flusher.lock().await = Some(tokio::spawn(insert::run(store.inner.clone(), rx)));
        *store.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        *store.housekeeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::spawn(retention(store.inner.clone())));
        Ok(store)
    }

    /// Connects for reading only (`loggate logs`): creates nothing, appends fail.
    pub async fn open_read_only(opts: ClickHouseOptions) -> Result<Self, StorageError> {
        Self::connect(opts, false).await
    }

    async fn connect(opts: ClickHouseOptions, writer: bool) -> Result<Self, StorageError> {
        let client = Client::new(&opts.endpoint).map_err(unavailable)?;
        let target = format!("{}.{}", ident(&opts.database), ident(&opts.table));
        let mut last = None;
        let mut reachable = None;
        for n in 0..client.url_count() {
            match client.query(n, "SELECT version()", &[]).await {
                Ok(v) => {
                    reachable = Some((n, String::from_utf8_lossy(&v).trim().to_string()));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some((n, version)) = reachable else {
            return Err(unavailable(last.expect("at least one URL")));
        };
        tracing::info!(url = client.url(n), version = %version, table = %target, "ClickHouse reachable");
        if writer && opts.create_tables {
            for statement in schema::create_statements(&opts.database, &opts.table) {
                client.query(n, &statement, &[]).await.map_err(unavailable)?;
            }
        }
        // What the system tables say of the target (`table` is the column naming it).
        let about = |what: &str, system: &str, table: &str| {
            format!(
                "SELECT {what} FROM system.{system} WHERE database = {} AND {table} = {} FORMAT TabSeparated",
                quote(&opts.database),
                quote(&opts.table)
            )
        };
        // The table must have the columns inserts name.
        let columns = client.query(n, &about("name", "columns", "table"), &[]).await.map_err(unavailable)?;
        let columns = String::from_utf8_lossy(&columns);
        let have: Vec<&str> = columns.lines().collect();
        let missing: Vec<&str> =
            rows::BATCH_COLUMNS.iter().chain(rows::ROW_COLUMNS).copied().filter(|c| !have.contains(c)).collect();
        if !missing.is_empty() {
            return Err(StorageError::Unavailable(format!(
                "ClickHouse table {target} lacks the columns {} (see the DDL in README.md)",
                missing.join(", ")
            )));
        }
        let engine = client.query(n, &about("engine", "tables", "name"), &[]).await.map_err(unavailable)?;
        let distributed = String::from_utf8_lossy(&engine).trim() == "Distributed";
        if writer && distributed && opts.retention.is_none() && opts.retention_hours.values().any(|h| *h > 0) {
            tracing::warn!(table = %target, "the ClickHouse target is a Distributed table and [clickhouse] retention_urls is \
                not set: expired partitions, which are on the shards' local tables, are not dropped (README)");
        }
        let pending_kib = (opts.max_pending_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        let inner = Arc::new(Shared {
            client,
            target,
            pending: Arc::new(Semaphore::new(pending_kib)),
            pending_kib,
            ids: BatchIds::new(opts.node_id),
            stats: Arc::default(),
            starts: Default::default(),
            opts,
        });
        Ok(ClickHouseStore {
            inner,
            tx: std::sync::Mutex::new(None),
            flusher: tokio::sync::Mutex::new(None),
            housekeeper: std::sync::Mutex::new(None),
        })
    }

    /// The logs of one shard that `q` selects, in offset (batch id, position) order: what
    /// [`LocalStore::query`](crate::local::LocalStore::query) answers for the local logstore.
    pub async fn query(&self, stream: &StreamId, shard: u32, q: ReadQuery) -> Result<ReadBatch, StorageError> {
        let mut filter = format!(
            "project = {} AND logstore = {} AND shard = {shard} AND batch_id + position >= {}",
            quote(&stream.project),
            quote(&stream.logstore),
            q.from_offset
        );
        if let Some(to) = q.to_offset {
            filter.push_str(&format!(" AND batch_id + position <= {to}"));
        }
        if let Some(from) = q.from_time_ms {
            filter.push_str(&format!(" AND event_time >= toDateTime({}) AND event_time_ms >= {from}", from.div_euclid(1000).clamp(0, u32::MAX.into())));
        }
        if let Some(to) = q.to_time_ms {
            filter.push_str(&format!(" AND event_time <= toDateTime({}) AND event_time_ms <= {to}", to.div_euclid(1000).clamp(0, u32::MAX.into())));
        }
        let max = q.max_entries.max(1);
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM {} WHERE {filter} ORDER BY batch_id, position LIMIT {max} FORMAT RowBinary",
            self.inner.target
        );
        let logs = parse_logs(&self.select(&sql).await?)?;
        let next_offset = logs.last().map_or(q.from_offset, |l| l.offset + 1);
        // Fewer than asked for: nothing more (so far) after them.
        let end_offset = if logs.len() < max { next_offset } else { u64::MAX };
        Ok(ReadBatch { frames_scanned: logs.len() as u64, logs, next_offset, start_offset: 0, end_offset })
    }

    /// What the store did since start.
    pub fn stats(&self) -> Arc<ClickHouseStats> {
        self.inner.stats.clone()
    }

    /// Bytes of appends waiting for an insert (rounded to KiB).
    pub fn pending_bytes(&self) -> u64 {
        (self.inner.pending_kib.saturating_sub(self.inner.pending.available_permits()) as u64) * 1024
    }

    /// The client, for queries (`loggate logs`).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// `db`.`table` as quoted in statements.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Runs a SELECT on the first URL that answers.
    pub async fn select(&self, sql: &str) -> Result<bytes::Bytes, StorageError> {
        self.inner.select(sql).await
    }
}

impl Shared {
    /// The first retained offset of a shard and the one after its last (both 0 when empty).
    pub(crate) async fn offsets(&self, stream: &StreamId, shard: u32) -> Result<(u64, u64), StorageError> {
        let sql = format!(
            "SELECT min(batch_id + position), max(batch_id + position) + 1, count() FROM {} \
             WHERE project = {} AND logstore = {} AND shard = {shard} FORMAT TabSeparated",
            self.target,
            quote(&stream.project),
            quote(&stream.logstore)
        );
        let text = self.select(&sql).await?;
        let text = String::from_utf8_lossy(&text);
        let cols: Vec<u64> = text.split_whitespace().filter_map(|c| c.parse().ok()).collect();
        match cols[..] {
            [_, _, 0] => Ok((0, 0)),
            [min, end, _] => Ok((min, end)),
            _ => Err(StorageError::Corrupt(format!("ClickHouse offsets: {text:?}"))),
        }
    }

    /// Runs a SELECT on the first URL that answers.
    pub(crate) async fn select(&self, sql: &str) -> Result<bytes::Bytes, StorageError> {
        let mut last = None;
        for n in 0..self.client.url_count() {
            match self.client.query(n, sql, &[]).await {
                Ok(b) => return Ok(b),
                Err(e @ HttpError::Server { .. }) => return Err(unavailable(e)),
                Err(e) => last = Some(e),
            }
        }
        Err(unavailable(last.expect("at least one URL")))
    }
}

fn unavailable(e: HttpError) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

/// Drops expired partitions now and every `retention_interval`.
async fn retention(shared: Arc<Shared>) {
    let opts = &shared.opts;
    // Where the partitions are: the target itself, or (a Distributed target) the shards'
    // local tables at `retention_urls`, each asked and dropped on its own.
    let (client, table, everywhere) = match &opts.retention {
        None => (shared.client.clone(), opts.table.clone(), false),
        Some(r) => match Client::new(&Endpoint { urls: r.urls.clone(), ..opts.endpoint.clone() }) {
            Ok(c) => (c, r.table.clone(), true),
            Err(e) => {
                tracing::warn!(error = %e, "retention: bad retention_urls; expired partitions are not dropped");
                return;
            }
        },
    };
    let list = format!(
        "SELECT DISTINCT partition FROM system.parts WHERE active AND database = {} AND table = {} FORMAT TabSeparated",
        quote(&opts.database),
        quote(&table)
    );
    loop {
        for n in 0..client.url_count() {
            match client.query(n, &list, &[]).await {
                Ok(text) => {
                    let text = String::from_utf8_lossy(&text);
                    for p in schema::expired_partitions(text.lines(), crate::now_ms()) {
                        match client.query(n, &p.drop_statement(&opts.database, &table), &[]).await {
                            Ok(_) => tracing::info!(url = client.url(n), retention_hours = p.retention_hours, day = p.day,
                                "dropped an expired ClickHouse partition"),
                            Err(e) => tracing::warn!(error = %e, day = p.day, "cannot drop an expired ClickHouse partition"),
                        }
                    }
                    if !everywhere {
                        break;
                    }
                }
                Err(e) => tracing::debug!(url = client.url(n), error = %e, "retention: cannot list ClickHouse partitions"),
            }
        }
        tokio::time::sleep(opts.retention_interval).await;
    }
}

/// Columns a log query selects, in the order [`parse_logs`] reads them.
pub const LOG_COLUMNS: &str = "batch_id, position, event_time_ms, arrival_time_ms, client, key, header_keys, \
    header_values, field_names, field_values, content";

/// Parses the `FORMAT RowBinary` answer of a query selecting [`LOG_COLUMNS`].
pub fn parse_logs(bytes: &[u8]) -> Result<Vec<StoredLog>, StorageError> {
    let mut r = rows::RowReader::new(bytes);
    let mut out = Vec::new();
    let bad = |e| StorageError::Corrupt(format!("ClickHouse rows: {e}"));
    while !r.is_empty() {
        let batch_id = r.u64().map_err(bad)?;
        let position = r.u32().map_err(bad)?;
        let event_time_ms = r.i64().map_err(bad)?;
        let arrival_time_ms = r.i64().map_err(bad)?;
        let source = r.string().map_err(bad)?;
        let key = r.nullable_string().map_err(bad)?;
        let header_keys = r.array(|r| r.string()).map_err(bad)?;
        let header_values = r.array(|r| r.nullable_string()).map_err(bad)?;
        let names = r.array(|r| r.string()).map_err(bad)?;
        let values = r.array(|r| r.string()).map_err(bad)?;
        let content = r.string().map_err(bad)?;
        let mut fields: Vec<_> = names.into_iter().zip(values).collect();
        if fields.is_empty() && !content.is_empty() {
            fields.push((bytes::Bytes::from_static(crate::CONTENT_FIELD.as_bytes()), content));
        }
        out.push(StoredLog {
            offset: batch_id + u64::from(position),
            entry: LogEntry {
                event_time_ms,
                arrival_time_ms,
                source,
                key,
                headers: header_keys.into_iter().zip(header_values).collect(),
                fields,
                tag: None,
            },
        });
    }
    Ok(out)
}

/// Parses the TabSeparated answer of a producer-batch query.
fn parse_marks(text: &[u8]) -> Result<Vec<MarkedBatch>, StorageError> {
    let text = String::from_utf8_lossy(text);
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let bad = || StorageError::Corrupt(format!("ClickHouse producer row {line:?}"));
        let cols: Vec<&str> = line.split('\t').collect();
        let [id, epoch, lane, first, last, batch, arrival] = cols[..] else {
            return Err(bad());
        };
        found.push(MarkedBatch {
            mark: ProducerMark {
                producer_id: id.parse().map_err(|_| bad())?,
                epoch: epoch.parse().map_err(|_| bad())?,
                lane: lane.parse().map_err(|_| bad())?,
                first_seq: first.parse().map_err(|_| bad())?,
                last_seq: last.parse().map_err(|_| bad())?,
            },
            base_offset: batch.parse().map_err(|_| bad())?,
            arrival_time_ms: arrival.parse().map_err(|_| bad())?,
        });
    }
    found.sort_by_key(|b| (b.arrival_time_ms, b.base_offset));
    Ok(found)
}

#[async_trait::async_trait]
impl LogStorage for ClickHouseStore {
    fn new_batch(&self, _stream: &StreamId, capacity: usize) -> EntryBatch {
        EntryBatch::with_encoding(Encoding::Rows, self.inner.opts.max_entry_bytes, capacity)
    }

    async fn submit(
        &self,
        stream: &StreamId,
        shard: u32,
        entries: EntryBatch,
        _durability: Durability,
    ) -> Result<AppendTicket, StorageError> {
        if entries.encoding() != Encoding::Rows {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the ClickHouse store appends row-encoded batches only",
            )));
        }
        let limit = self.inner.opts.max_entry_bytes;
        if entries.largest_entry_bytes() > limit {
            return Err(StorageError::EntryTooLarge { size: entries.largest_entry_bytes(), limit });
        }
        let count = u32::try_from(entries.len()).map_err(|_| StorageError::Overloaded)?;
        if count == 0 {
            return Ok(Box::pin(std::future::ready(Ok(AppendAck { base_offset: 0, count: 0, start_offset: None }))));
        }
        // Its size in KiB, at most the whole budget (a batch larger than that waits for all).
        let kib = u32::try_from((entries.bytes_len() / 1024 + 1).min(self.inner.pending_kib)).unwrap_or(u32::MAX);
        let permit = tokio::time::timeout(self.inner.opts.enqueue_timeout, self.inner.pending.clone().acquire_many_owned(kib))
            .await
            .map_err(|_| StorageError::Overloaded)?
            .map_err(|_| StorageError::Closed)?;
        let batch_id = self.inner.ids.next(count);
        let retention_hours = self.inner.opts.retention_hours.get(stream).copied().unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            stream: stream.clone(),
            shard,
            retention_hours,
            batch_id,
            entries,
            reply,
            queued_at: std::time::Instant::now(),
            _permit: permit,
        };
        {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            tx.as_ref().ok_or(StorageError::Closed)?.send(pending).map_err(|_| StorageError::Closed)?;
        }
        let (shared, stream) = (self.inner.clone(), stream.clone());
        let ticket = crate::ticket(answer);
        Ok(Box::pin(async move {
            let ack = ticket.await?;
            Ok(AppendAck { start_offset: shared.start_offset(&stream, shard), ..ack })
        }))
    }

    fn writable(&self) -> bool {
        !self.inner.stats.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn max_entry_bytes(&self) -> usize {
        self.inner.opts.max_entry_bytes
    }

    async fn read(
        &self,
        stream: &StreamId,
        shard: u32,
        from_offset: u64,
        max_entries: usize,
    ) -> Result<Vec<StoredLog>, StorageError> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM {} WHERE project = {} AND logstore = {} AND shard = {shard} \
             AND batch_id + position >= {from_offset} ORDER BY batch_id, position LIMIT {max_entries} FORMAT RowBinary",
            self.inner.target,
            quote(&stream.project),
            quote(&stream.logstore)
        );
        parse_logs(&self.select(&sql).await?)
    }

    async fn offsets(&self, stream: &StreamId, shard: u32) -> Result<(u64, u64), StorageError> {
        self.inner.offsets(stream, shard).await
    }

    async fn producer_batches(
        &self,
        stream: &StreamId,
        _shards: u32,
        newest: u64,
        producer: Option<i64>,
    ) -> Result<Vec<MarkedBatch>, StorageError> {
        // The first row of each marked batch, the newest `newest` per producer and lane.
        let only = producer.map(|p| format!(" AND producer_id = {p}")).unwrap_or_default();
        let since = (crate::now_ms() - self.inner.opts.producer_lookback.as_millis() as i64).div_euclid(1000).max(0);
        let sql = format!(
            "SELECT producer_id, producer_epoch, producer_lane, sequence_first, sequence_last, batch_id, arrival_time_ms \
             FROM {} WHERE project = {} AND logstore = {} AND arrival_time >= toDateTime({since}) \
             AND producer_id >= 0 AND position = 0{only} \
             ORDER BY arrival_time_ms DESC, batch_id DESC LIMIT {newest} BY producer_id, producer_lane FORMAT TabSeparated",
            self.inner.target,
            quote(&stream.project),
            quote(&stream.logstore)
        );
        parse_marks(&self.select(&sql).await?)
    }

    fn is_shared(&self, _stream: &StreamId) -> bool {
        true
    }

    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), StorageError> {
        // Closing the queue lets the flusher insert what is pending and end.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.housekeeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
        if let Some(mut flusher) = self.flusher.lock().await.take() {
            // An insert that cannot finish (ClickHouse gone) must not hold the shutdown:
            // its producers were not acknowledged.
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut flusher).await.is_err() {
                tracing::warn!(secs = CLOSE_TIMEOUT.as_secs(), "ClickHouse inserts still pending at shutdown were abandoned (not acknowledged)");
                flusher.abort();
            }
        }
        Ok(())
    }
}
