//! Log storage: the [`LogStorage`] trait, the durable local logstore and ClickHouse.
//! Storage knows nothing of Kafka; it stores [`LogEntry`]s in numbered shards of a stream,
//! appended as [`EntryBatch`]es encoded for the backend that stores them.

use bytes::Bytes;

mod chain;
pub mod clickhouse;
mod entries;
pub mod local;
mod marks;
mod packed;
mod router;
pub mod stats;

pub use chain::AppendChain;
pub use entries::{Encoding, EntryBatch, EntryWriter, FieldWriter, CONTENT_FIELD};
pub use marks::{MarkedBatch, ProducerMark, TAG_LEN as PRODUCER_TAG_LEN};
pub use packed::{Packed, PackedLogs, Unpack};
pub use router::{Router, UnknownBackend};

/// A log stream: one logstore of one project.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    /// Project name (one path component on disk).
    pub project: String,
    /// Logstore name within the project (one path component on disk).
    pub logstore: String,
}

impl StreamId {
    /// Builds a stream id from its two names.
    pub fn new(project: impl Into<String>, logstore: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            logstore: logstore.into(),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.project, self.logstore)
    }
}

/// One log to store. Field names/values, key, header keys/values are opaque bytes (usually UTF-8).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Time the event happened (producer timestamp), ms since the Unix epoch.
    pub event_time_ms: i64,
    /// Time the gateway received it, ms since the Unix epoch.
    pub arrival_time_ms: i64,
    /// Client address text, e.g. "127.0.0.1:53211".
    pub source: Bytes,
    /// Record key, if any.
    pub key: Option<Bytes>,
    /// Headers in order; keys may repeat, values may be null.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// `(name, value)` pairs in order.
    pub fields: Vec<(Bytes, Bytes)>,
    /// Opaque bytes the writer keeps with the entry for its own bookkeeping (the gateway
    /// marks the first log of an idempotent producer's batch, to recognise a retried batch
    /// after a restart); not part of the log's content.
    pub tag: Option<Bytes>,
}

/// A log read back from storage, with its offset in the shard.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    /// Offset of the log within its shard.
    pub offset: u64,
    /// The log itself.
    pub entry: LogEntry,
}

/// How durable an append must be before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Reached the OS (write(2) done).
    Written,
    /// Fsync'd to stable storage.
    Synced,
}

/// Acknowledgement of one append: `count` logs at offsets `base_offset..base_offset + count`.
///
/// What an offset is depends on the backend: the local logstore numbers each shard's logs
/// gaplessly from 0; ClickHouse gives each appended batch an id (unique across nodes, growing
/// with time), stored with every row, and its logs are `id + position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// Offset (or batch id) given to the first appended log.
    pub base_offset: u64,
    /// Number of logs appended.
    pub count: u32,
    /// The shard's first retained offset when they were appended, if the backend knows it
    /// without waiting: the local logstore's writer does; ClickHouse gives the last answer to
    /// a question asked in the background (None until the first).
    pub start_offset: Option<u64>,
}

/// The answer to a [`LogStorage::submit`]: resolves once the entries are stored (or failed).
pub type AppendTicket = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AppendAck, StorageError>> + Send>>;

/// A ticket for a reply channel: a dropped sender means the storage closed.
pub(crate) fn ticket(rx: tokio::sync::oneshot::Receiver<Result<AppendAck, StorageError>>) -> AppendTicket {
    Box::pin(async move { rx.await.map_err(|_| StorageError::Closed)? })
}

/// Errors of a [`LogStorage`].
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O error; invalid stream names ([`InvalidName`], kind `InvalidInput`) and appends to a
    /// read-only store (kind `ReadOnlyFilesystem`) are reported this way too.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The storage was closed.
    #[error("storage is closed")]
    Closed,
    /// Stored data failed validation.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// One entry encodes to more bytes than allowed.
    #[error("entry of {size} bytes exceeds the limit of {limit} bytes")]
    EntryTooLarge {
        /// Encoded size of the entry.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The bounded queue was full and the request could not wait any longer.
    #[error("storage is overloaded")]
    Overloaded,
    /// The storage service cannot be reached or refused the write; nothing was stored and
    /// a retry later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    /// The [`InvalidName`] behind this error, when a stream name was rejected.
    pub fn invalid_name(&self) -> Option<&InvalidName> {
        match self {
            StorageError::Io(e) => e.get_ref().and_then(|inner| inner.downcast_ref()),
            _ => None,
        }
    }
}

/// A project or logstore name that is unsafe as a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name {name:?}: {reason}")]
pub struct InvalidName {
    /// Which name: "project" or "logstore".
    pub what: &'static str,
    /// The rejected name.
    pub name: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl From<InvalidName> for StorageError {
    fn from(e: InvalidName) -> Self {
        StorageError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }
}

/// Where logs are stored: appends and reads per (stream, shard).
#[async_trait::async_trait]
pub trait LogStorage: Send + Sync {
    /// An empty batch for [`append`](Self::append) to `stream`, in the encoding of the
    /// backend that stores it, with room
    /// for `capacity` encoded bytes and its entries limited to
    /// [`max_entry_bytes`](Self::max_entry_bytes).
    fn new_batch(&self, _stream: &StreamId, capacity: usize) -> EntryBatch {
        EntryBatch::with_encoding(Encoding::Frames, self.max_entry_bytes(), capacity)
    }

    /// Queues entries for one shard and returns what answers when they are stored, with
    /// the offset of the first (see [`AppendAck`]) once they are as durable as `durability`
    /// asks. Entries submitted one after another are stored in that order. Fails with
    /// [`StorageError::EntryTooLarge`], queueing nothing, when an entry is larger than
    /// [`max_entry_bytes`](Self::max_entry_bytes).
    async fn submit(
        &self,
        stream: &StreamId,
        shard: u32,
        entries: EntryBatch,
        durability: Durability,
    ) -> Result<AppendTicket, StorageError>;

    /// [`submit`](Self::submit), then waits until the entries are stored.
    async fn append(
        &self,
        stream: &StreamId,
        shard: u32,
        entries: EntryBatch,
        durability: Durability,
    ) -> Result<AppendAck, StorageError> {
        self.submit(stream, shard, entries, durability).await?.await
    }

    /// The largest entry payload [`append`](Self::append) accepts: the limit to build an
    /// [`EntryBatch`] with.
    fn max_entry_bytes(&self) -> usize;

    /// Reads up to `max_entries` logs of one shard starting at `from_offset` (empty when none
    /// yet); offsets already deleted by retention are skipped.
    async fn read(
        &self,
        stream: &StreamId,
        shard: u32,
        from_offset: u64,
        max_entries: usize,
    ) -> Result<Vec<StoredLog>, StorageError>;

    /// The first retained offset of a shard and the offset its next append will get
    /// (both 0 for an empty or absent shard).
    async fn offsets(&self, stream: &StreamId, shard: u32) -> Result<(u64, u64), StorageError>;
    /// The producer-marked batches among the newest `newest` logs of each of the first
    /// `shards` shards (oldest first), to rebuild idempotent producers' state; with `producer`,
    /// only that producer's.
    async fn producer_batches(
        &self,
        stream: &StreamId,
        shards: u32,
        newest: u64,
        producer: Option<i64>,
    ) -> Result<Vec<MarkedBatch>, StorageError> {
        marks::scan_tags(self, stream, shards, newest, producer).await
    }

    /// Whether batches for `stream` ([`new_batch`](Self::new_batch)) may hold packed logs
    /// ([`EntryBatch::pack`]): the local logstore's do when it was given an [`Unpack`] to read
    /// them with.
    fn packs(&self, _stream: &StreamId) -> bool {
        false
    }

    /// Whether other processes (gateway nodes) may append to `stream` too, so that what one
    /// process remembers of it (idempotent producers' sequences) can be stale.
    fn is_shared(&self, _stream: &StreamId) -> bool {
        false
    }

    /// Whether appends to `stream` honour their batch's [`AppendChain`]: once an append of a
    /// chain fails, the later ones queued with it are refused unwritten.
    fn keeps_chains(&self, _stream: &StreamId) -> bool {
        false
    }

    /// Whether appends can be stored now, as far as the backend knows cheaply (no I/O): false
    /// while a shard refuses writes or its last write failed (disk full, failed fsync), or
    /// while ClickHouse could not store the last insert. For readiness checks.
    fn writable(&self) -> bool {
        true
    }

    /// Makes everything appended so far durable.
    async fn flush(&self) -> Result<(), StorageError>;

    /// Flushes, stops background work; later appends fail with Closed.
    async fn close(&self) -> Result<(), StorageError>;
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
