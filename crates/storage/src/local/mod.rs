//! The local logstore: append-only segment files per shard on a local disk.
//!
//! Layout: `<data_dir>/logstores/<project>/<logstore>/shard-<n>/<20-digit base offset>.log`
//! (one segment per shard for now). Each entry is framed as
//! `u32 LE payload_len | u32 LE crc32c(payload) | payload`, the payload being a versioned
//! binary encoding of the offset and the [`LogEntry`]. Each shard has one writer thread fed by a bounded queue; it drains all queued
//! requests, writes them with one `write`, and issues one `fdatasync` for the group when any of
//! them asked for [`Durability::Synced`] (group commit).

mod codec;
mod index;
mod paths;
mod read;
mod recovery;
mod shard;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, OnceCell};

use crate::{AppendAck, Durability, LogEntry, LogStorage, StorageError, StoredLog, StreamId};
use shard::{Counters, EncodedBatch, Request, Shard};

/// How long an append or flush waits for room in a full shard queue before failing with
/// [`StorageError::Overloaded`].
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of a writable [`LocalStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStoreOptions {
    /// Largest encoded entry accepted (bytes); larger ones fail with
    /// [`StorageError::EntryTooLarge`]. Capped at 1 GiB.
    pub max_entry_bytes: usize,
    /// Capacity of each shard's bounded request queue, in requests.
    pub queue_depth: usize,
}

impl Default for LocalStoreOptions {
    fn default() -> Self {
        LocalStoreOptions {
            max_entry_bytes: 1 << 20,
            queue_depth: 256,
        }
    }
}

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
    read_only: bool,
    registry: Mutex<Registry>,
    stats: Arc<Counters>,
    /// How long to wait for room in a full queue ([`ENQUEUE_TIMEOUT`]; shorter in tests).
    enqueue_timeout: Duration,
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
        let root = data_dir.join(paths::LOGSTORES_DIR);
        fs::create_dir_all(&root)?;
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
        let opts = LocalStoreOptions {
            max_entry_bytes: opts.max_entry_bytes.min(codec::MAX_PAYLOAD_LEN),
            queue_depth: opts.queue_depth.max(1),
        };
        Ok(Self::with(root, opts, false, Some(lock)))
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
                read_only,
                registry: Mutex::new(Registry {
                    closed: false,
                    shards: HashMap::new(),
                }),
                stats: Arc::new(Counters::default()),
                enqueue_timeout: ENQUEUE_TIMEOUT,
                _lock: lock,
            }),
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
        }
    }

    /// The open shard, opening (and for a writer, recovering) it on first use. `Ok(None)` when
    /// it has no file and `create` is false.
    async fn shard(
        &self,
        stream: &StreamId,
        shard: u32,
        create: bool,
    ) -> Result<Option<Arc<Shard>>, StorageError> {
        let dir = paths::shard_dir(&self.inner.root, stream, shard)?;
        let cell = {
            let mut reg = self.inner.registry();
            if reg.closed {
                return Err(StorageError::Closed);
            }
            reg.shards
                .entry((stream.clone(), shard))
                .or_default()
                .clone()
        };
        let inner = self.inner.clone();
        let opened = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || inner.open_shard(dir, create))
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

    /// Opens one shard (blocking): recovery and writer thread for a writer, a lazily refreshed
    /// view for a reader.
    fn open_shard(&self, dir: PathBuf, create: bool) -> Result<Arc<Shard>, OpenError> {
        const BASE_OFFSET: u64 = 0;
        let path = dir.join(paths::segment_file_name(BASE_OFFSET));
        if self.read_only {
            return match File::open(&path) {
                Ok(file) => Ok(Arc::new(Shard::read_only(path, file, BASE_OFFSET))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenError::Absent),
                Err(e) => Err(e.into()),
            };
        }
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => {
                return Err(OpenError::Absent)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_segment(&dir, &path)?,
            Err(e) => return Err(e.into()),
        };
        let shard = Shard::recovered(path, file, BASE_OFFSET)?;
        // Checked under the registry lock so `close` either sees this shard or it never starts.
        let reg = self.registry();
        if reg.closed {
            return Err(StorageError::Closed.into());
        }
        shard.start_writer(self.opts.queue_depth, self.stats.clone())?;
        drop(reg);
        Ok(Arc::new(shard))
    }

    /// Creates a new segment file and makes its directory entries durable.
    fn create_segment(&self, dir: &Path, path: &Path) -> io::Result<File> {
        fs::create_dir_all(dir)?;
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

/// Encodes `entries` for a writer, enforcing the size limit.
fn encode_batch(entries: &[LogEntry], limit: usize) -> Result<EncodedBatch, StorageError> {
    let count = u32::try_from(entries.len()).map_err(|_| StorageError::EntryTooLarge {
        size: entries.len(),
        limit: u32::MAX as usize,
    })?;
    let mut sizes = Vec::with_capacity(entries.len());
    let mut total = 0usize;
    for e in entries {
        let size = codec::payload_len(e);
        if size > limit {
            return Err(StorageError::EntryTooLarge { size, limit });
        }
        total += codec::FRAME_HEADER_LEN + size;
        sizes.push(size);
    }
    let mut bytes = Vec::with_capacity(total);
    for (e, size) in entries.iter().zip(sizes) {
        codec::encode_unsealed(e, size, &mut bytes);
    }
    Ok(EncodedBatch { bytes, count })
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
    async fn append(
        &self,
        stream: &StreamId,
        shard: u32,
        entries: Vec<LogEntry>,
        durability: Durability,
    ) -> Result<AppendAck, StorageError> {
        self.inner.check_open()?;
        if self.inner.read_only {
            return Err(read_only_error());
        }
        paths::shard_dir(&self.inner.root, stream, shard)?;
        let batch = encode_batch(&entries, self.inner.opts.max_entry_bytes)?;
        drop(entries);
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
        rx.await.map_err(|_| StorageError::Closed)?
    }

    async fn read(
        &self,
        stream: &StreamId,
        shard: u32,
        from_offset: u64,
        max_entries: usize,
    ) -> Result<Vec<StoredLog>, StorageError> {
        let Some(shard) = self.shard(stream, shard, false).await? else {
            return Ok(Vec::new());
        };
        if max_entries == 0 {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || shard.read(from_offset, max_entries))
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))?
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
