//! The local logstore: append-only segment files per shard on a local disk.
//!
//! Layout: `<data_dir>/logstores/<project>/<logstore>/shard-<n>/<20-digit base offset>.log`,
//! a new segment started when the current one reaches [`LocalStoreOptions::segment_bytes`] or
//! [`LocalStoreOptions::segment_age`]; each sealed segment gets an index file (`.index`) with
//! the file position and event-time range of every block of entries. Each entry is framed as
//! `u32 LE payload_len | u32 LE crc32c(payload) | payload`, the payload being a versioned
//! binary encoding of the offset and the [`LogEntry`](crate::LogEntry).
//!
//! Each shard has one writer thread fed by a bounded queue; it drains all queued requests,
//! reserves their disk space, writes them with one `write` (direct I/O where the
//! filesystem allows it, see `direct.rs`), and issues one `fdatasync` for
//! the group when any of them asked for [`Durability::Synced`] (group commit) or the flush
//! policy says so. A failed group is cut off the file before anything else is written, so
//! readers never see it. A failed fsync is fatal for the shard until the writer reopened it
//! from disk, cut back to the last good fsync (see `shard.rs`). Retention deletes whole
//! sealed segments, never the active one.

mod buffers;
pub(crate) mod codec;
mod direct;
mod index;
mod paths;
mod read;
mod recovery;
mod segment;
mod shard;

#[doc(hidden)]
pub use codec::bench as codec_bench;
pub use paths::create_dir_durable;
pub use read::{ReadBatch, ReadQuery};

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, OnceCell};

use crate::{AppendTicket, Durability, EntryBatch, LogStorage, StorageError, StoredLog, StreamId, Unpack};
use shard::{Counters, EncodedBatch, Request, Shard, WriterConfig};

/// How long an append or flush waits for room in a full shard queue before failing with
/// [`StorageError::Overloaded`].
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest [`LocalStoreOptions::max_entry_bytes`] the segment format can hold (1 GiB).
pub const MAX_ENTRY_BYTES_LIMIT: usize = codec::MAX_PAYLOAD_LEN;

/// Options of a writable [`LocalStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStoreOptions {
    /// Largest encoded entry accepted (bytes); larger ones fail with
    /// [`StorageError::EntryTooLarge`], a permanent error (the entry can never be stored).
    /// Capped at [`MAX_ENTRY_BYTES_LIMIT`].
    pub max_entry_bytes: usize,
    /// Capacity of each shard's bounded request queue, in requests.
    pub queue_depth: usize,
    /// A new segment is started once the current one holds this many bytes.
    pub segment_bytes: u64,
    /// ...or once it is this old (and not empty).
    pub segment_age: Duration,
    /// [`Durability::Written`] data is fsynced at most this long after it was written.
    pub flush_interval: Option<Duration>,
    /// ...or as soon as this many bytes of it are waiting.
    pub flush_bytes: Option<u64>,
    /// Options of particular streams; others get [`StreamOptions::default`].
    pub streams: HashMap<StreamId, StreamOptions>,
    /// Write segments with direct I/O (`O_DIRECT`) where the filesystem allows it, instead
    /// of through the page cache.
    pub direct_io: bool,
    /// Whether batches take packed logs ([`EntryBatch::pack`]) once the store has an
    /// [`Unpack`] ([`set_unpacker`](LocalStore::set_unpacker)); packed blocks already
    /// stored are read either way.
    pub packed_batches: bool,
}

impl Default for LocalStoreOptions {
    fn default() -> Self {
        LocalStoreOptions {
            max_entry_bytes: 1 << 20,
            queue_depth: 256,
            segment_bytes: 256 << 20,
            segment_age: Duration::from_secs(3600),
            flush_interval: Some(Duration::from_secs(1)),
            flush_bytes: Some(1 << 20),
            streams: HashMap::new(),
            direct_io: true,
            packed_batches: true,
        }
    }
}

/// Options of one stream (applied to each of its shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// Sealed segments whose newest entry arrived longer ago than this are deleted.
    pub retention_age: Option<Duration>,
    /// The oldest sealed segments of a shard are deleted while the shard holds more bytes.
    pub retention_bytes_per_shard: Option<u64>,
}

/// How often the housekeeper wakes writers at most (and at least, when the flush interval is shorter).
const MAX_TICK: Duration = Duration::from_secs(1);
const MIN_TICK: Duration = Duration::from_millis(10);

/// Counters of a [`LocalStore`] since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalStoreStats {
    /// Append requests processed by writers (including failed ones).
    pub append_requests: u64,
    /// Entries successfully appended.
    pub appended_entries: u64,
    /// Append requests that asked for [`Durability::Synced`].
    pub synced_requests: u64,
    /// `write` calls issued (one per group with data).
    pub writes: u64,
    /// `fdatasync` calls issued (at most one per group).
    pub fsyncs: u64,
    /// Groups whose write or sync failed.
    pub failed_groups: u64,
    /// Segments sealed and replaced by a new one.
    pub segments_rolled: u64,
    /// Segments deleted by retention.
    pub segments_deleted: u64,
}

/// The local logstore. See the [module docs](self).
///
/// After [`close`](LogStorage::close) appends and reads fail with [`StorageError::Closed`];
/// dropping without closing also drains, syncs and joins the writers (blocking briefly).
pub struct LocalStore {
    inner: Arc<Inner>,
}

type ShardKey = (StreamId, u32);
type ShardCell = Arc<OnceCell<Arc<Shard>>>;

struct Registry {
    closed: bool,
    shards: HashMap<ShardKey, ShardCell>,
}

struct Inner {
    /// `<data_dir>/logstores`.
    root: PathBuf,
    opts: LocalStoreOptions,
    /// Each stream's options, shared with its open shards (seeded from `opts.streams`).
    stream_options: Mutex<HashMap<StreamId, Arc<ArcSwap<StreamOptions>>>>,
    read_only: bool,
    registry: Mutex<Registry>,
    stats: Arc<Counters>,
    /// Buffers of written batches, for the entries of the next ones (`buffers.rs`).
    buffers: Arc<buffers::Buffers>,
    /// How long to wait for room in a full queue ([`ENQUEUE_TIMEOUT`]; shorter in tests).
    enqueue_timeout: Duration,
    /// What reads packed logs back (set once; without it batches cannot take them, and a
    /// read of a packed block fails).
    unpacker: std::sync::OnceLock<Arc<dyn Unpack>>,
    /// Dropping it stops the housekeeper thread.
    housekeeper: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    /// Held while the store may write: one writer per data dir.
    _lock: Option<File>,
}

/// Why a shard could not be had.
enum OpenError {
    /// It has no file yet (and the caller did not ask to create it).
    Absent,
    Storage(StorageError),
}

impl From<StorageError> for OpenError {
    fn from(e: StorageError) -> Self {
        OpenError::Storage(e)
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Storage(e.into())
    }
}

impl LocalStore {
    /// Opens (creating if needed) a data dir for writing. Shards are recovered lazily on first
    /// use. Fails if another `LocalStore` holds the data dir for writing.
    pub fn open(data_dir: &Path, opts: LocalStoreOptions) -> Result<Self, StorageError> {
        Self::open_with(data_dir, opts, ENQUEUE_TIMEOUT)
    }

    fn open_with(
        data_dir: &Path,
        opts: LocalStoreOptions,
        enqueue_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let root = data_dir.join(paths::LOGSTORES_DIR);
        // The data dir and `logstores/` must survive a crash as soon as shards go in them.
        paths::create_dir_durable(&root)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join(paths::LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "data dir {} is already open for writing by another logstore",
                        data_dir.display()
                    ),
                )))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        // The data dir's entries (`logstores/`, the lock file) and the data dir itself, also
        // when an earlier start created them and then failed to sync them.
        paths::sync_dir(data_dir)?;
        paths::sync_dir(paths::parent_dir(data_dir))?;
        let opts = LocalStoreOptions {
            max_entry_bytes: opts.max_entry_bytes.min(codec::MAX_PAYLOAD_LEN),
            queue_depth: opts.queue_depth.max(1),
            segment_bytes: opts.segment_bytes.max(1),
            ..opts
        };
        let tick = opts
            .flush_interval
            .map_or(MAX_TICK, |i| i.clamp(MIN_TICK, MAX_TICK));
        let mut store = Self::with(root, opts, false, Some(lock));
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.enqueue_timeout = enqueue_timeout;
        }
        store.start_housekeeper(tick)?;
        Ok(store)
    }

    /// Starts the thread that wakes every writer every `tick` (flush interval, segment age,
    /// retention, retrying a failed cut), so that they act even when no one writes.
    fn start_housekeeper(&self, tick: Duration) -> Result<(), StorageError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let weak = Arc::downgrade(&self.inner);
        let thread = std::thread::Builder::new()
            .name("loggate-housekeeper".into())
            .spawn(move || loop {
                match stopped.recv_timeout(tick) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                for shard in inner.open_shards() {
                    if let Some(tx) = shard.sender() {
                        // A full queue means a busy writer, which applies its policies anyway.
                        drop(tx.try_send(Request::Tick));
                    }
                }
            })?;
        *self.inner.housekeeper_slot() = Some((stop, thread));
        Ok(())
    }

    /// Opens a data dir for reading only, e.g. while a server writes to it. Never truncates or
    /// writes; a partial tail entry is simply "not yet there"; appends fail.
    pub fn open_read_only(data_dir: &Path) -> Result<Self, StorageError> {
        if !data_dir.is_dir() {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("data dir {} does not exist", data_dir.display()),
            )));
        }
        let root = data_dir.join(paths::LOGSTORES_DIR);
        Ok(Self::with(root, LocalStoreOptions::default(), true, None))
    }

    fn with(root: PathBuf, opts: LocalStoreOptions, read_only: bool, lock: Option<File>) -> Self {
        LocalStore {
            inner: Arc::new(Inner {
                root,
                opts,
                stream_options: Mutex::new(HashMap::new()),
                read_only,
                registry: Mutex::new(Registry {
                    closed: false,
                    shards: HashMap::new(),
                }),
                stats: Arc::new(Counters::default()),
                buffers: Arc::default(),
                enqueue_timeout: ENQUEUE_TIMEOUT,
                unpacker: std::sync::OnceLock::new(),
                housekeeper: Mutex::new(None),
                _lock: lock,
            }),
        }
    }

    /// Replaces the options of the streams named (a configuration reload); their open
    /// shards apply the new retention at their next retention pass (within a few seconds).
    /// Streams not named keep theirs.
    pub fn set_stream_options(&self, streams: &HashMap<StreamId, StreamOptions>) {
        for (stream, options) in streams {
            self.inner.stream_options(stream).store(Arc::new(*options));
        }
    }

    /// Counters since open (group commit shows as `fsyncs < synced_requests`).
    pub fn stats(&self) -> LocalStoreStats {
        let c = &self.inner.stats;
        LocalStoreStats {
            append_requests: c.append_requests.load(Ordering::Relaxed),
            appended_entries: c.appended_entries.load(Ordering::Relaxed),
            synced_requests: c.synced_requests.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            failed_groups: c.failed_groups.load(Ordering::Relaxed),
            segments_rolled: c.segments_rolled.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
        }
    }

    /// What each stream with an open shard holds on disk and lost to retention.
    pub fn stream_stats(&self) -> Vec<crate::stats::StreamStats> {
        let shards: Vec<(StreamId, Arc<Shard>)> = self
            .inner
            .registry()
            .shards
            .iter()
            .filter_map(|((stream, _), cell)| cell.get().map(|s| (stream.clone(), s.clone())))
            .collect();
        let mut out: Vec<crate::stats::StreamStats> = Vec::new();
        for (stream, shard) in shards {
            let i = match out.iter().position(|s| s.stream == stream) {
                Some(i) => i,
                None => {
                    out.push(crate::stats::StreamStats {
                        stream,
                        disk_bytes: 0,
                        retention_deleted_segments: 0,
                        retention_deleted_bytes: 0,
                        failing_shards: 0,
                    });
                    out.len() - 1
                }
            };
            let s = &shard.core.stats;
            let entry = &mut out[i];
            entry.disk_bytes += shard.core.disk_bytes();
            entry.retention_deleted_segments += s.retention_segments.load(Ordering::Relaxed);
            entry.retention_deleted_bytes += s.retention_bytes.load(Ordering::Relaxed);
            entry.failing_shards += u32::from(s.failing.load(Ordering::Relaxed));
        }
        out
    }

    /// How long segment fsyncs took since open.
    pub fn fsync_seconds(&self) -> crate::stats::HistogramSnapshot {
        self.inner.stats.fsync_latency.snapshot()
    }

    /// How long the writes of groups took since open (reserving their disk space and
    /// writing them; a direct write waits for the device).
    pub fn write_seconds(&self) -> crate::stats::HistogramSnapshot {
        self.inner.stats.write_latency.snapshot()
    }

    /// Opens the existing shards `0..shards` of a stream now rather than at first use, so
    /// that a server recovers them (and applies retention) as it starts.
    pub async fn open_stream(&self, stream: &StreamId, shards: u32) -> Result<(), StorageError> {
        for shard in 0..shards {
            self.shard(stream, shard, false).await?;
        }
        Ok(())
    }

    /// Gives the store what reads packed logs back (see [`Unpack`]); from then on its
    /// batches can take packed logs. Only the first call counts: `false` for a later one.
    pub fn set_unpacker(&self, unpacker: Arc<dyn Unpack>) -> bool {
        self.inner.unpacker.set(unpacker).is_ok()
    }

    /// Reads one shard's logs matching `q`, seeking with the segment indexes. Reading an
    /// absent shard gives an empty batch.
    pub async fn query(
        &self,
        stream: &StreamId,
        shard: u32,
        q: ReadQuery,
    ) -> Result<ReadBatch, StorageError> {
        let Some(shard) = self.shard(stream, shard, false).await? else {
            return Ok(ReadBatch {
                logs: Vec::new(),
                next_offset: q.from_offset,
                start_offset: 0,
                end_offset: 0,
                frames_scanned: 0,
            });
        };
        let unpacker = self.inner.unpacker.get().cloned();
        tokio::task::spawn_blocking(move || shard.query(&q, unpacker.as_deref()))
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))?
    }

    /// The open shard, opening (and for a writer, recovering) it on first use. `Ok(None)` when
    /// it has no file and `create` is false.
    async fn shard(
        &self,
        stream: &StreamId,
        shard: u32,
        create: bool,
    ) -> Result<Option<Arc<Shard>>, StorageError> {
        let key = (stream.clone(), shard);
        let known = {
            let reg = self.inner.registry();
            if reg.closed {
                return Err(StorageError::Closed);
            }
            reg.shards.get(&key).cloned()
        };
        // An open shard (the path of every append after the first) needs no path work.
        if let Some(open) = known.as_ref().and_then(|cell| cell.get()) {
            return Ok(Some(open.clone()));
        }
        // Validates the names before anything is registered for them.
        let dir = paths::shard_dir(&self.inner.root, stream, shard)?;
        let cell = {
            let mut reg = self.inner.registry();
            if reg.closed {
                return Err(StorageError::Closed);
            }
            reg.shards.entry(key).or_default().clone()
        };
        let inner = self.inner.clone();
        let stream = stream.clone();
        let opened = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || inner.open_shard(&stream, dir, create))
                    .await
                    .map_err(|e| OpenError::Storage(io::Error::other(e).into()))?
            })
            .await;
        match opened {
            Ok(s) => Ok(Some(s.clone())),
            Err(OpenError::Absent) => Ok(None),
            Err(OpenError::Storage(e)) => Err(e),
        }
    }
}

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn housekeeper_slot(
        &self,
    ) -> MutexGuard<'_, Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>> {
        self.housekeeper.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The options of a stream, shared by its shards.
    fn stream_options(&self, stream: &StreamId) -> Arc<ArcSwap<StreamOptions>> {
        let mut all = self.stream_options.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(stream.clone())
            .or_insert_with(|| Arc::new(ArcSwap::from_pointee(self.opts.streams.get(stream).copied().unwrap_or_default())))
            .clone()
    }

    /// The writer settings of one stream's shards.
    fn writer_config(&self, stream: &StreamId) -> WriterConfig {
        WriterConfig {
            queue_depth: self.opts.queue_depth,
            segment_bytes: self.opts.segment_bytes,
            segment_age: self.opts.segment_age,
            flush_interval: self.opts.flush_interval,
            flush_bytes: self.opts.flush_bytes,
            retention: self.stream_options(stream),
            direct_io: self.opts.direct_io,
        }
    }

    /// Opens one shard (blocking): recovery and writer thread for a writer, a lazily refreshed
    /// view for a reader.
    fn open_shard(
        &self,
        stream: &StreamId,
        dir: PathBuf,
        create: bool,
    ) -> Result<Arc<Shard>, OpenError> {
        if self.read_only {
            return match Shard::open_read_only(dir)? {
                Some(s) => Ok(Arc::new(s)),
                None => Err(OpenError::Absent),
            };
        }
        if segment::list(&dir)?.is_empty() {
            if !create {
                return Err(OpenError::Absent);
            }
            self.create_segment(&dir, &dir.join(paths::segment_file_name(0)))?;
        }
        let shard = Shard::open_writable(dir, self.writer_config(stream), self.stats.clone(), self.buffers.clone())?;
        // Checked under the registry lock so `close` either sees this shard or it never starts.
        let reg = self.registry();
        if reg.closed {
            return Err(StorageError::Closed.into());
        }
        shard.start_writer()?;
        drop(reg);
        Ok(Arc::new(shard))
    }

    /// Creates a new segment file and makes its directory entries durable.
    fn create_segment(&self, dir: &Path, path: &Path) -> io::Result<File> {
        paths::create_dir_durable(dir)?;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().read(true).write(true).open(path)?
            }
            Err(e) => return Err(e),
        };
        let mut d = dir;
        loop {
            paths::sync_dir(d)?;
            if d == self.root {
                break;
            }
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        Ok(file)
    }

    fn check_open(&self) -> Result<(), StorageError> {
        if self.registry().closed {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    /// The shards whose writer was started (blocking no one).
    fn open_shards(&self) -> Vec<Arc<Shard>> {
        self.registry()
            .shards
            .values()
            .filter_map(|c| c.get().cloned())
            .collect()
    }
}

impl Drop for Inner {
    /// Stops writers the store was dropped without closing: they drain their queues, sync and
    /// exit; this waits for them so the data-dir lock is released only afterwards.
    fn drop(&mut self) {
        // Stops the housekeeper (it exits at its next tick; not joined: it may be this thread).
        drop(self.housekeeper_slot().take());
        let shards: Vec<_> = self
            .registry()
            .shards
            .values()
            .filter_map(|c| c.get().cloned())
            .collect();
        for shard in shards {
            if let Some(w) = shard.take_writer() {
                drop(w.tx);
                match w.thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "logstore final sync failed"),
                    Err(_) => tracing::error!("logstore writer thread panicked"),
                }
            }
        }
    }
}

/// Hands `entries` to a writer as they are, enforcing the size limit.
fn checked_batch(entries: EntryBatch, limit: usize) -> Result<EncodedBatch, StorageError> {
    if entries.encoding() != crate::Encoding::Frames {
        return Err(StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the local logstore appends frame-encoded batches only",
        )));
    }
    let size = entries.largest_entry_bytes();
    if size > limit {
        return Err(StorageError::EntryTooLarge { size, limit });
    }
    let count = u32::try_from(entries.len()).map_err(|_| StorageError::EntryTooLarge {
        size: entries.len(),
        limit: u32::MAX as usize,
    })?;
    let chain = entries.chain().cloned();
    Ok(EncodedBatch {
        summary: entries.frame_summary(),
        bytes: entries.into_bytes(),
        count,
        chain,
    })
}

/// Queues a request, waiting up to `timeout` for room.
async fn enqueue(
    tx: &mpsc::Sender<Request>,
    req: Request,
    timeout: Duration,
) -> Result<(), StorageError> {
    match tx.try_send(req) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed(_)) => Err(StorageError::Closed),
        Err(TrySendError::Full(req)) => match tokio::time::timeout(timeout, tx.send(req)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StorageError::Closed),
            Err(_) => Err(StorageError::Overloaded),
        },
    }
}

fn read_only_error() -> StorageError {
    StorageError::Io(io::Error::new(
        io::ErrorKind::ReadOnlyFilesystem,
        "logstore was opened read-only",
    ))
}

#[async_trait::async_trait]
impl LogStorage for LocalStore {
    fn new_batch(&self, stream: &StreamId, capacity: usize) -> EntryBatch {
        EntryBatch::frames_in(self.inner.buffers.take(capacity), self.max_entry_bytes(), self.packs(stream))
    }

    fn packs(&self, _stream: &StreamId) -> bool {
        self.inner.opts.packed_batches && self.inner.unpacker.get().is_some()
    }

    async fn submit(
        &self,
        stream: &StreamId,
        shard: u32,
        entries: EntryBatch,
        durability: Durability,
    ) -> Result<AppendTicket, StorageError> {
        self.inner.check_open()?;
        if self.inner.read_only {
            return Err(read_only_error());
        }
        let batch = checked_batch(entries, self.inner.opts.max_entry_bytes)?;
        let shard = self
            .shard(stream, shard, true)
            .await?
            .ok_or(StorageError::Closed)?;
        let tx = shard.sender().ok_or(StorageError::Closed)?;
        let (reply, rx) = oneshot::channel();
        enqueue(
            &tx,
            Request::Append {
                batch,
                durability,
                reply,
            },
            self.inner.enqueue_timeout,
        )
        .await?;
        drop(tx);
        Ok(crate::ticket(rx))
    }

    async fn read(
        &self,
        stream: &StreamId,
        shard: u32,
        from_offset: u64,
        max_entries: usize,
    ) -> Result<Vec<StoredLog>, StorageError> {
        if max_entries == 0 {
            self.shard(stream, shard, false).await?;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut q = ReadQuery::from_offset(from_offset, max_entries);
        // A batch may stop early after a bounded scan; go on until enough or the end.
        loop {
            let batch = self.query(stream, shard, q).await?;
            let done =
                batch.is_done(&q) || (batch.logs.is_empty() && batch.next_offset == q.from_offset);
            q.from_offset = batch.next_offset;
            q.max_entries -= batch.logs.len();
            out.extend(batch.logs);
            if done || q.max_entries == 0 {
                return Ok(out);
            }
        }
    }

    fn keeps_chains(&self, _stream: &StreamId) -> bool {
        true
    }

    fn writable(&self) -> bool {
        self.inner
            .open_shards()
            .iter()
            .all(|s| !s.core.stats.failing.load(Ordering::Relaxed))
    }

    fn max_entry_bytes(&self) -> usize {
        self.inner.opts.max_entry_bytes
    }

    async fn offsets(&self, stream: &StreamId, shard: u32) -> Result<(u64, u64), StorageError> {
        // A query starting past every segment reads nothing and reports the bounds.
        let batch = self
            .query(stream, shard, ReadQuery::from_offset(u64::MAX, 0))
            .await?;
        Ok((batch.start_offset, batch.end_offset))
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let mut waits = Vec::new();
        for shard in self.inner.open_shards() {
            let Some(tx) = shard.sender() else { continue };
            let (reply, rx) = oneshot::channel();
            enqueue(&tx, Request::Flush { reply }, self.inner.enqueue_timeout).await?;
            waits.push(rx);
        }
        for rx in waits {
            rx.await.map_err(|_| StorageError::Closed)??;
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), StorageError> {
        let housekeeper = self.inner.housekeeper_slot().take();
        if let Some((stop, thread)) = housekeeper {
            drop(stop);
            drop(tokio::task::spawn_blocking(move || thread.join()).await);
        }
        let cells: Vec<ShardCell> = {
            let mut reg = self.inner.registry();
            reg.closed = true;
            reg.shards.values().cloned().collect()
        };
        let mut first_err = None;
        for cell in cells {
            // Waits for a shard being opened right now; never opens one.
            let opened = cell
                .get_or_try_init(|| async { Err(OpenError::Storage(StorageError::Closed)) })
                .await;
            let Ok(shard) = opened else { continue };
            let Some(w) = shard.take_writer() else {
                continue;
            };
            drop(w.tx);
            let joined = tokio::task::spawn_blocking(move || w.thread.join()).await;
            let err = match joined {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(e))) => StorageError::Io(e),
                Ok(Err(_)) => StorageError::Io(io::Error::other("logstore writer thread panicked")),
                Err(e) => StorageError::Io(io::Error::other(e)),
            };
            first_err.get_or_insert(err);
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
