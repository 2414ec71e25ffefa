//! One shard: its segment file, the view readers see, and its writer thread (group commit).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::codec;
use super::index::{next_point, SparseIndex};
use super::read::{read_range, ReadPlan};
use super::recovery;
use crate::{AppendAck, Durability, StorageError, StoredLog};

/// Counters shared by all shards of a store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub append_requests: AtomicU64,
    pub appended_entries: AtomicU64,
    pub synced_requests: AtomicU64,
    pub writes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub failed_groups: AtomicU64,
}

/// Entries encoded by the appender, offsets and checksums still to be filled in.
pub(crate) struct EncodedBatch {
    /// Unsealed frames back to back.
    pub bytes: Vec<u8>,
    /// Number of frames.
    pub count: u32,
}

/// A request to a shard writer.
pub(crate) enum Request {
    /// Append a batch; reply once it is as durable as asked.
    Append {
        batch: EncodedBatch,
        durability: Durability,
        reply: oneshot::Sender<Result<AppendAck, StorageError>>,
    },
    /// Sync everything written so far.
    Flush {
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

/// What readers may see of a segment: only data that is complete (and synced, when its
/// writer was asked to sync).
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// End of valid data.
    pub len: u64,
    /// Offset of the next entry.
    pub next_offset: u64,
    /// Sparse index of `0..len`.
    pub index: SparseIndex,
}

impl View {
    fn empty(base_offset: u64) -> Self {
        View {
            len: 0,
            next_offset: base_offset,
            index: SparseIndex::new(base_offset),
        }
    }
}

/// Test-only fault injection: how many upcoming writes / syncs fail.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail_writes: std::sync::atomic::AtomicU32,
    pub fail_syncs: std::sync::atomic::AtomicU32,
    /// While set, the writer waits before committing its next group.
    pub stall: std::sync::atomic::AtomicBool,
    /// Set while the writer holds a group back because of `stall`.
    pub stalling: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl Faults {
    fn take(counter: &std::sync::atomic::AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The state a shard's readers and writer share.
pub(crate) struct Core {
    pub path: PathBuf,
    pub file: File,
    base_offset: u64,
    view: Mutex<View>,
    #[cfg(test)]
    pub faults: Faults,
}

impl Core {
    fn view(&self) -> MutexGuard<'_, View> {
        // A poisoned lock only means a panic elsewhere; the view itself is always consistent.
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to a running writer thread.
pub(crate) struct WriterHandle {
    pub tx: mpsc::Sender<Request>,
    pub thread: JoinHandle<io::Result<()>>,
}

/// One open shard.
pub(crate) struct Shard {
    pub core: Arc<Core>,
    read_only: bool,
    writer: Mutex<Option<WriterHandle>>,
}

impl Shard {
    /// A shard of the read-only mode: its view is refreshed from the file on every read.
    pub(crate) fn read_only(path: PathBuf, file: File, base_offset: u64) -> Self {
        Shard {
            core: Arc::new(Core {
                path,
                file,
                base_offset,
                view: Mutex::new(View::empty(base_offset)),
                #[cfg(test)]
                faults: Faults::default(),
            }),
            read_only: true,
            writer: Mutex::new(None),
        }
    }

    /// A writable shard whose file was just recovered; `start_writer` must follow.
    pub(crate) fn recovered(path: PathBuf, file: File, base_offset: u64) -> io::Result<Self> {
        let (scanned, index) = recovery::recover(&path, &file, base_offset)?;
        Ok(Shard {
            core: Arc::new(Core {
                path,
                file,
                base_offset,
                view: Mutex::new(View {
                    len: scanned.valid_len,
                    next_offset: scanned.next_offset,
                    index,
                }),
                #[cfg(test)]
                faults: Faults::default(),
            }),
            read_only: false,
            writer: Mutex::new(None),
        })
    }

    /// Spawns the writer thread, fed by a queue of `queue_depth` requests.
    pub(crate) fn start_writer(&self, queue_depth: usize, stats: Arc<Counters>) -> io::Result<()> {
        let (tx, rx) = mpsc::channel(queue_depth.max(1));
        let view = self.core.view().clone();
        let writer = Writer {
            core: self.core.clone(),
            stats,
            len: view.len,
            next_offset: view.next_offset,
            last_point: view.index.last(),
            dirty: false,
            poisoned: None,
            buf: Vec::new(),
        };
        let name = format!(
            "loggate-wr-{}",
            self.core
                .path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || writer.run(rx))?;
        *self.writer_slot() = Some(WriterHandle { tx, thread });
        Ok(())
    }

    fn writer_slot(&self) -> MutexGuard<'_, Option<WriterHandle>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sender to the writer, unless it was stopped.
    pub(crate) fn sender(&self) -> Option<mpsc::Sender<Request>> {
        self.writer_slot().as_ref().map(|w| w.tx.clone())
    }

    /// Takes the writer out, so it can be stopped (drop `tx`) and joined.
    pub(crate) fn take_writer(&self) -> Option<WriterHandle> {
        self.writer_slot().take()
    }

    /// Reads up to `max` logs from offset `from` (blocking).
    pub(crate) fn read(&self, from: u64, max: usize) -> Result<Vec<StoredLog>, StorageError> {
        if self.read_only {
            self.refresh()?;
        }
        match self.read_once(from, max) {
            Ok(logs) => Ok(logs),
            // The writer process may have truncated and rewritten the tail (after a failed
            // write, or in its recovery): forget what we knew and look again.
            Err(_) if self.read_only => {
                *self.core.view() = View::empty(self.core.base_offset);
                self.refresh()?;
                self.read_once(from, max).map_err(StorageError::Corrupt)
            }
            Err(e) => Err(StorageError::Corrupt(format!(
                "{}: {e}",
                self.core.path.display()
            ))),
        }
    }

    fn read_once(&self, from: u64, max: usize) -> Result<Vec<StoredLog>, String> {
        let plan = {
            let v = self.core.view();
            if from >= v.next_offset || max == 0 {
                return Ok(Vec::new());
            }
            let (start_offset, start_pos) = v.index.lookup(from);
            ReadPlan {
                start_offset,
                start_pos,
                end: v.len,
            }
        };
        read_range(&self.core.file, plan, from, max)
    }

    /// Read-only mode: takes in whatever complete frames another process appended since.
    fn refresh(&self) -> io::Result<()> {
        let mut v = self.core.view();
        let file_len = self.core.file.metadata()?.len();
        if file_len < v.len {
            *v = View::empty(self.core.base_offset);
        }
        if file_len > v.len {
            let (pos, offset) = (v.len, v.next_offset);
            let scanned = recovery::scan(&self.core.file, file_len, pos, offset, &mut v.index)?;
            v.len = scanned.valid_len;
            v.next_offset = scanned.next_offset;
        }
        Ok(())
    }
}

/// Group buffers larger than this are freed after use rather than kept for the next group.
const MAX_IDLE_BUF: usize = 4 << 20;

/// The writer thread's state.
struct Writer {
    core: Arc<Core>,
    stats: Arc<Counters>,
    /// End of data in the file (written, maybe not yet synced).
    len: u64,
    next_offset: u64,
    last_point: (u64, u64),
    /// Written since the last sync.
    dirty: bool,
    /// Set when the file could not be restored after a failure; every later request fails.
    poisoned: Option<String>,
    buf: Vec<u8>,
}

/// Reply due to one request of a group.
enum Due {
    Append(oneshot::Sender<Result<AppendAck, StorageError>>, AppendAck),
    Flush(oneshot::Sender<Result<(), StorageError>>),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) -> io::Result<()> {
        let mut group = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            #[cfg(test)]
            while self.core.faults.stall.load(Ordering::SeqCst) {
                self.core.faults.stalling.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            self.commit_group(&mut group);
            if self.buf.capacity() > MAX_IDLE_BUF {
                self.buf = Vec::new();
            }
        }
        // Every sender is gone: the store is closing or dropped. Leave nothing unsynced.
        if self.dirty && self.poisoned.is_none() {
            self.core.file.sync_data()?;
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes a drained group with one write and at most one sync, then replies to each.
    fn commit_group(&mut self, group: &mut Vec<Request>) {
        let start_len = self.len;
        let mut next = self.next_offset;
        let mut last_point = self.last_point;
        let mut points = Vec::new();
        let mut dues = Vec::with_capacity(group.len());
        let mut need_sync = false;
        let mut entries = 0u64;
        self.buf.clear();
        for req in group.drain(..) {
            match req {
                Request::Append {
                    batch,
                    durability,
                    reply,
                } => {
                    let ack = AppendAck {
                        base_offset: next,
                        count: batch.count,
                    };
                    let at = self.buf.len();
                    self.buf.extend_from_slice(&batch.bytes);
                    let mut p = at;
                    while p < self.buf.len() {
                        let pos = start_len + p as u64;
                        if let Some(pt) = next_point(last_point, next, pos) {
                            points.push(pt);
                            last_point = pt;
                        }
                        p += codec::seal_frame(&mut self.buf[p..], next);
                        next += 1;
                    }
                    if durability == Durability::Synced {
                        need_sync = true;
                        self.stats.synced_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    entries += u64::from(batch.count);
                    dues.push(Due::Append(reply, ack));
                }
                Request::Flush { reply } => {
                    need_sync = true;
                    dues.push(Due::Flush(reply));
                }
            }
        }
        self.stats.append_requests.fetch_add(
            dues.iter().filter(|d| matches!(d, Due::Append(..))).count() as u64,
            Ordering::Relaxed,
        );

        let result = match &self.poisoned {
            Some(reason) => Err(io::Error::other(reason.clone())),
            None => self.write_and_sync(start_len, need_sync),
        };
        match result {
            Ok(()) => {
                self.len = start_len + self.buf.len() as u64;
                self.next_offset = next;
                self.last_point = last_point;
                self.stats
                    .appended_entries
                    .fetch_add(entries, Ordering::Relaxed);
                {
                    let mut v = self.core.view();
                    v.len = self.len;
                    v.next_offset = next;
                    v.index.extend(&points);
                }
                for due in dues {
                    // A requester that gave up no longer listens; nothing to do about it.
                    match due {
                        Due::Append(tx, ack) => drop(tx.send(Ok(ack))),
                        Due::Flush(tx) => drop(tx.send(Ok(()))),
                    }
                }
            }
            Err(e) => {
                self.stats.failed_groups.fetch_add(1, Ordering::Relaxed);
                if self.poisoned.is_none() {
                    tracing::error!(path = %self.core.path.display(), error = %e, "logstore write failed; group rejected");
                    self.restore(start_len);
                }
                for due in dues {
                    let err = || StorageError::Io(io::Error::new(e.kind(), e.to_string()));
                    match due {
                        Due::Append(tx, _) => drop(tx.send(Err(err()))),
                        Due::Flush(tx) => drop(tx.send(Err(err()))),
                    }
                }
            }
        }
    }

    fn write_and_sync(&mut self, at: u64, need_sync: bool) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.dirty = true;
            #[cfg(test)]
            if Faults::take(&self.core.faults.fail_writes) {
                // A torn write: half the group reaches the file.
                let half = &self.buf[..self.buf.len() / 2];
                self.core.file.write_all_at(half, at)?;
                return Err(io::Error::other("injected write failure"));
            }
            self.core.file.write_all_at(&self.buf, at)?;
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
        }
        if need_sync && self.dirty {
            #[cfg(test)]
            if Faults::take(&self.core.faults.fail_syncs) {
                return Err(io::Error::other("injected sync failure"));
            }
            self.core.file.sync_data()?;
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.dirty = false;
        }
        Ok(())
    }

    /// Cuts the file back to `len` after a failed group; poisons the shard if that fails too,
    /// since later writes could otherwise leave stale frames behind them.
    fn restore(&mut self, len: u64) {
        if let Err(e) = self.core.file.set_len(len) {
            let reason = format!(
                "{}: could not truncate to {len} after a failed write: {e}",
                self.core.path.display()
            );
            tracing::error!("{reason}; shard refuses writes until restarted");
            self.poisoned = Some(reason);
        }
    }
}
