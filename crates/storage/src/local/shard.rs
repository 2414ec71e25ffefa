//! One shard: its segments, the view readers see, and its writer thread (group commit,
//! flush policy, segment rolling, retention).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::buffers::Buffers;
use super::codec;
use super::direct::{self, DirectFile};
use super::index::SparseIndex;
use super::paths;
use super::read::{read_segment, Budget, ReadBatch, ReadQuery, Stop, Unpacked};
use super::recovery;
use super::segment::{self, SegmentState};
use super::StreamOptions;
use crate::{AppendAck, AppendChain, Durability, StorageError};

/// Counters shared by all shards of a store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub append_requests: AtomicU64,
    pub appended_entries: AtomicU64,
    pub synced_requests: AtomicU64,
    pub writes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub failed_groups: AtomicU64,
    pub segments_rolled: AtomicU64,
    pub segments_deleted: AtomicU64,
    /// How long segment fsyncs took.
    pub fsync_latency: crate::stats::LatencyHistogram,
    /// How long each group's write took (reserving its disk space and writing it).
    pub write_latency: crate::stats::LatencyHistogram,
}

/// What one shard reports for monitoring.
#[derive(Debug, Default)]
pub(crate) struct ShardStats {
    /// Its last write failed, or it refuses writes until reopened after a failed fsync;
    /// cleared when a write succeeds again (or the reopen does).
    pub failing: std::sync::atomic::AtomicBool,
    /// Segments retention deleted, and their bytes.
    pub retention_segments: AtomicU64,
    pub retention_bytes: AtomicU64,
}

/// Entries encoded by the appender, offsets and checksum still to be filled in.
pub(crate) struct EncodedBatch {
    /// One unsealed block frame (empty when there are no entries).
    pub bytes: Vec<u8>,
    /// Number of logs in it.
    pub count: u32,
    /// Their times, for the index.
    pub summary: codec::FrameSummary,
    /// The chain of appends it belongs to: refused unwritten once the chain broke.
    pub chain: Option<AppendChain>,
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
    /// Time passed: apply the flush interval, roll by age, retention, retry a failed cut.
    Tick,
}

/// What a shard writer needs to know about its limits and policies.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub queue_depth: usize,
    pub segment_bytes: u64,
    pub segment_age: Duration,
    pub flush_interval: Option<Duration>,
    pub flush_bytes: Option<u64>,
    /// The stream's retention, shared by its shards and replaced by
    /// [`LocalStore::set_stream_options`](super::LocalStore::set_stream_options).
    pub retention: Arc<ArcSwap<StreamOptions>>,
    /// Write with direct I/O where the filesystem allows it.
    pub direct_io: bool,
}

/// Test-only fault injection: how many upcoming operations fail.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail_writes: std::sync::atomic::AtomicU32,
    /// Fsyncs of segment files.
    pub fail_syncs: std::sync::atomic::AtomicU32,
    /// Fsyncs of the shard directory (rolls, retention).
    pub fail_dir_syncs: std::sync::atomic::AtomicU32,
    pub fail_truncates: std::sync::atomic::AtomicU32,
    /// A roll fails right after it created the new segment file (as EMFILE would when
    /// opening it a second time for direct writes).
    pub fail_roll_after_create: std::sync::atomic::AtomicU32,
    /// While set, a segment fsync waits before it runs (and `syncing` is set meanwhile).
    pub stall_sync: std::sync::atomic::AtomicBool,
    pub syncing: std::sync::atomic::AtomicBool,
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
    pub dir: PathBuf,
    /// Segments in offset order; the last one is the one written to.
    view: Mutex<Vec<SegmentState>>,
    pub stats: ShardStats,
    #[cfg(test)]
    pub faults: Faults,
}

impl Core {
    fn new(dir: PathBuf, segments: Vec<SegmentState>) -> Self {
        Core {
            dir,
            view: Mutex::new(segments),
            stats: ShardStats::default(),
            #[cfg(test)]
            faults: Faults::default(),
        }
    }

    pub(crate) fn view(&self) -> MutexGuard<'_, Vec<SegmentState>> {
        // A poisoned lock only means a panic elsewhere; the view itself is always consistent.
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Disk space the shard's segment files take (allocated blocks; fstat, no reads).
    pub(crate) fn disk_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let files: Vec<Arc<File>> = self.view().iter().map(|s| s.file.clone()).collect();
        files
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.blocks().saturating_mul(512))
            .sum()
    }

    fn set_failing(&self, failing: bool) {
        self.stats.failing.store(failing, Ordering::Relaxed);
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
    /// The writer, built by `open_writable` and moved to its thread by `start_writer`.
    pending: Mutex<Option<Writer>>,
    /// The packed block the last query stopped inside, for the next one, which goes on there.
    unpacked: Mutex<Unpacked>,
}

/// Opens a segment file for reading (and writing).
fn open_file(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(write).open(path)
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Shard {
    /// A shard of the read-only mode: `None` when it has no segment; refreshed on every read.
    pub(crate) fn open_read_only(dir: PathBuf) -> io::Result<Option<Self>> {
        if segment::list(&dir)?.is_empty() {
            return Ok(None);
        }
        let shard = Shard {
            core: Arc::new(Core::new(dir, Vec::new())),
            read_only: true,
            writer: Mutex::new(None),
            pending: Mutex::new(None),
            unpacked: Mutex::default(),
        };
        shard.refresh()?;
        Ok(Some(shard))
    }

    /// A writable shard of at least one segment: loads the sealed segments (their index
    /// files, or a scan), recovers the last one (cutting a torn tail); `start_writer` must follow.
    pub(crate) fn open_writable(
        dir: PathBuf,
        mut cfg: WriterConfig,
        stats: Arc<Counters>,
        buffers: Arc<Buffers>,
    ) -> io::Result<Self> {
        let loaded = load(&dir, &mut cfg)?;
        let writer = Writer {
            core: Arc::new(Core::new(dir, loaded.segments)),
            stats,
            active: loaded.active,
            sealed: loaded.sealed,
            next_offset: loaded.next_offset,
            dirty: false,
            dirty_bytes: 0,
            dirty_since: None,
            restore_to: None,
            fault: None,
            preallocate: true,
            last_retention: None,
            roll_retry_at: None,
            buf: Vec::new(),
            buffers,
            out_of_space: false,
            background_sync: None,
            sync_thread: None,
            cfg,
        };
        Ok(Shard {
            core: writer.core.clone(),
            read_only: false,
            writer: Mutex::new(None),
            pending: Mutex::new(Some(writer)),
            unpacked: Mutex::default(),
        })
    }

    /// Spawns the writer thread of a shard from `open_writable`.
    pub(crate) fn start_writer(&self) -> io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut writer) = pending.take() else {
            return Ok(());
        };
        let (tx, rx) = mpsc::channel(writer.cfg.queue_depth.max(1));
        let name = format!(
            "loggate-wr-{}",
            self.core
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        // Apply retention right away rather than only at the first tick.
        writer.enforce_retention();
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

    /// Answers a query (blocking).
    pub(crate) fn query(&self, q: &ReadQuery, unpacker: Option<&dyn crate::Unpack>) -> Result<ReadBatch, StorageError> {
        if self.read_only {
            self.refresh()?;
        }
        let (start_offset, end_offset) = {
            let v = self.core.view();
            (
                v.first().map_or(0, |s| s.base),
                v.last().map_or(0, |s| s.next_offset),
            )
        };
        let mut out = Vec::new();
        let mut budget = Budget::new();
        let mut cursor = q.from_offset.max(start_offset);
        let mut retried = false;
        loop {
            let Some(seg) = pick(&self.core.view(), cursor) else {
                break;
            };
            let (at, found) = (cursor, out.len());
            // Queries running side by side do not wait for each other's: all but one unpack anew.
            let mut own = Unpacked::default();
            let mut held = self.unpacked.try_lock().ok();
            let unpacked = held.as_deref_mut().unwrap_or(&mut own);
            let read = read_segment(&seg, &mut cursor, q, &mut out, &mut budget, unpacker, unpacked);
            drop(held);
            match read {
                Ok(Stop::EndOfSegment) => {}
                Ok(Stop::Done) => break,
                // The writer process may have cut and rewritten the tail (after a failed
                // write, or in its recovery): look at that segment again, once, from where
                // this look started (what it found is found again).
                Err(_) if self.read_only && !retried => {
                    retried = true;
                    cursor = at;
                    out.truncate(found);
                    self.rescan(seg.base)?;
                }
                Err(e) => {
                    return Err(StorageError::Corrupt(format!(
                        "{}: {e}",
                        seg.path.display()
                    )))
                }
            }
        }
        Ok(ReadBatch {
            logs: out,
            next_offset: cursor,
            start_offset,
            end_offset,
            frames_scanned: budget.scanned,
        })
    }

    /// Read-only mode: takes in segments created and deleted, and complete frames appended,
    /// by the writing process since the last look.
    fn refresh(&self) -> io::Result<()> {
        let bases = segment::list(&self.core.dir)?;
        let mut v = self.core.view();
        v.retain(|s| bases.binary_search(&s.base).is_ok());
        for &base in &bases {
            if v.iter().any(|s| s.base == base) {
                continue;
            }
            let path = self.core.dir.join(paths::segment_file_name(base));
            match open_file(&path, false) {
                Ok(f) => v.push(SegmentState::empty(base, path, Arc::new(f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        v.sort_by_key(|s| s.base);
        let n = v.len();
        for (i, s) in v.iter_mut().enumerate() {
            if s.sealed {
                continue;
            }
            if i + 1 < n {
                s.load_sealed(false)?;
            } else {
                let len = s.file.metadata()?.len();
                s.extend_to(len)?;
            }
        }
        Ok(())
    }

    /// Read-only mode: forgets what was known of one segment and reads it again.
    fn rescan(&self, base: u64) -> io::Result<()> {
        let mut v = self.core.view();
        if let Some(s) = v.iter_mut().find(|s| s.base == base) {
            let sealed = s.sealed;
            *s = SegmentState::empty(s.base, s.path.clone(), s.file.clone());
            if sealed {
                s.load_sealed(false)?;
            } else {
                let len = s.file.metadata()?.len();
                s.extend_to(len)?;
            }
        }
        Ok(())
    }
}

/// A writable shard as found on disk.
struct Loaded {
    /// Every segment, for readers.
    segments: Vec<SegmentState>,
    /// All but the last, for retention.
    sealed: VecDeque<Sealed>,
    /// The last one, recovered and synced.
    active: Active,
    next_offset: u64,
}

/// Loads a shard directory of at least one segment for writing: removes what failed rolls
/// left, loads the sealed segments (their index files, or a scan), recovers the last one
/// (cutting a torn tail) and fsyncs it, so that all it holds is durable.
fn load(dir: &Path, cfg: &mut WriterConfig) -> io::Result<Loaded> {
    let bases = drop_failed_rolls(dir, segment::list(dir)?)?;
    let mut segments: Vec<SegmentState> = Vec::with_capacity(bases.len());
    let mut sealed = VecDeque::new();
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(paths::segment_file_name(base));
        let last = i + 1 == bases.len();
        let file = open_file(&path, last)?;
        let mut st = SegmentState::empty(base, path, Arc::new(file));
        if last {
            let (scanned, index) = recovery::recover(&st.path, &st.file, base)?;
            st.len = scanned.valid_len;
            st.next_offset = scanned.next_offset;
            st.max_arrival_ms = scanned.max_arrival_ms;
            st.index = Arc::new(index);
        } else {
            st.load_sealed(true)?;
            sealed.push_back(Sealed::of(&st));
        }
        if let Some(prev) = segments.last() {
            if prev.next_offset != base {
                tracing::warn!(dir = %dir.display(), previous_end = prev.next_offset, next_base = base,
                    "logstore segments do not line up; offsets between them cannot be read");
            }
        }
        segments.push(st);
    }
    let Some(last) = segments.last().cloned() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no segment", dir.display()),
        ));
    };
    // What the last process wrote may still be in the page cache only: a later failure cuts
    // back to what is known to be on disk, so make all of it so now.
    last.file.sync_data()?;
    let created = last
        .file
        .metadata()
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .unwrap_or_else(|_| SystemTime::now());
    let direct = open_direct(cfg, &last.path)?;
    Ok(Loaded {
        active: Active {
            base: last.base,
            path: last.path.clone(),
            file: last.file.clone(),
            direct,
            len: last.len,
            durable_len: last.len,
            index: (*last.index).clone(),
            max_arrival_ms: last.max_arrival_ms,
            created,
        },
        next_offset: last.next_offset,
        segments,
        sealed,
    })
}

/// Removes the empty segment files a failed roll can leave behind (created, then the roll
/// failed and the shard wrote on in the previous segment): after a restart their base offset
/// would hide the entries the previous segment went on to take, and new entries would get
/// those offsets again. An empty segment is one only when it is not the last (a segment is
/// only followed by another once it holds entries), or when it is the last and the previous
/// segment ends past its base. Returns the bases that remain.
fn drop_failed_rolls(dir: &Path, mut bases: Vec<u64>) -> io::Result<Vec<u64>> {
    let path_of = |base: u64| dir.join(paths::segment_file_name(base));
    let is_empty = |base: u64| fs::metadata(path_of(base)).map(|m| m.len() == 0);
    let mut removed = Vec::new();
    let mut i = 0;
    while i + 1 < bases.len() {
        if is_empty(bases[i])? {
            removed.push(bases.remove(i));
        } else {
            i += 1;
        }
    }
    if let [.., prev, last] = bases[..] {
        if is_empty(last)? {
            let path = path_of(prev);
            let file = open_file(&path, false)?;
            let mut st = SegmentState::empty(prev, path, Arc::new(file));
            st.load_sealed(false)?;
            if st.next_offset > last {
                removed.push(last);
                bases.pop();
            }
        }
    }
    for &base in &removed {
        let path = path_of(base);
        tracing::warn!(path = %path.display(),
            "removing an empty segment left by a failed roll (its offsets belong to the previous segment)");
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        drop(fs::remove_file(segment::index_path(&path)));
    }
    if !removed.is_empty() {
        paths::sync_dir(dir)?;
    }
    Ok(bases)
}

/// The segment holding `cursor`, or the first one after it (offsets deleted by retention, or
/// a gap); `None` at the end.
fn pick(segments: &[SegmentState], cursor: u64) -> Option<SegmentState> {
    let i = segments.partition_point(|s| s.base <= cursor);
    if i == 0 {
        return segments.first().cloned();
    }
    let s = &segments[i - 1];
    if cursor < s.next_offset {
        return Some(s.clone());
    }
    segments.get(i).cloned()
}

/// Groups at least this large end with a padding frame on a block boundary, so that their
/// direct writes need no staging copy; it costs them at most a block of disk space
/// (under 4 % here, under 1 % at the 1 MiB requests of librdkafka's defaults).
const ZERO_COPY_MIN_BYTES: usize = 128 * 1024;
/// Retention is checked at most this often (and after every roll).
const RETENTION_EVERY: Duration = Duration::from_secs(1);
/// Bytes a failing shard reserves at a tick to see whether writes would find room again.
const PROBE_BYTES: u64 = 64 * 1024;

/// A roll that failed is tried again after this long.
const ROLL_RETRY: Duration = Duration::from_secs(1);

/// The segment being written.
struct Active {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    /// The same file opened for direct writes (`None`: buffered writes through `file`).
    direct: Option<DirectFile>,
    /// End of data in the file (written, maybe not yet synced). With direct writes the file
    /// may go on with up to a block of zero padding.
    len: u64,
    /// End of the data the last successful fsync covered: all that is known to be on disk.
    durable_len: u64,
    index: SparseIndex,
    max_arrival_ms: i64,
    created: SystemTime,
}

/// What the writer remembers of a sealed segment, for retention.
struct Sealed {
    base: u64,
    path: PathBuf,
    len: u64,
    max_arrival_ms: i64,
}

impl Sealed {
    fn of(s: &SegmentState) -> Self {
        Sealed {
            base: s.base,
            path: s.path.clone(),
            len: s.len,
            max_arrival_ms: s.max_arrival_ms,
        }
    }
}

/// The writer thread's state.
struct Writer {
    core: Arc<Core>,
    stats: Arc<Counters>,
    cfg: WriterConfig,
    active: Active,
    /// Oldest first.
    sealed: VecDeque<Sealed>,
    next_offset: u64,
    /// Written since the last sync.
    dirty: bool,
    dirty_bytes: u64,
    dirty_since: Option<Instant>,
    /// After a failed group whose bytes could not be cut off: the length to cut back to
    /// before anything else is written (retried on every group and tick).
    restore_to: Option<u64>,
    /// Set when an fsync failed (of the segment or the directory): the kernel may have
    /// dropped the dirty pages, and a later fsync could succeed without them ("fsyncgate").
    /// Nothing is acknowledged until the shard was reopened from disk (`reopen`).
    fault: Option<(io::ErrorKind, String)>,
    /// Whether to reserve disk space before writing (off when the filesystem cannot).
    preallocate: bool,
    last_retention: Option<Instant>,
    roll_retry_at: Option<Instant>,
    /// The group being written; empty between groups (its buffer is given back to `buffers`).
    buf: Vec<u8>,
    /// Where written batches' buffers go back, for the entries of the next ones.
    buffers: Arc<Buffers>,
    /// The last failed write found the filesystem full (ENOSPC, EDQUOT): ticks check
    /// whether there is room again (`probe_space`).
    out_of_space: bool,
    /// The flush policy's fsync of the active segment in progress on the sync thread (at
    /// most one at a time, so that the writes queued meanwhile do not wait for it): where
    /// the segment's data ended when it started, durable once it succeeds.
    background_sync: Option<u64>,
    /// The shard's sync thread, started at its first policy fsync.
    sync_thread: Option<SyncThread>,
}

/// The thread that runs a shard's flush-policy fsyncs, one at a time: it takes a descriptor
/// of the segment to sync and answers with the outcome and how long the fsync took. It ends
/// when the writer drops `jobs`.
struct SyncThread {
    jobs: std::sync::mpsc::Sender<File>,
    done: std::sync::mpsc::Receiver<(io::Result<()>, Duration)>,
}

impl SyncThread {
    fn start(core: Arc<Core>) -> io::Result<SyncThread> {
        let (jobs, todo) = std::sync::mpsc::channel::<File>();
        let (answer, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("loggate-sync".into())
            .spawn(move || {
                for file in todo {
                    let started = Instant::now();
                    let outcome = core.file_sync(&file);
                    if answer.send((outcome, started.elapsed())).is_err() {
                        return;
                    }
                }
            })?;
        Ok(SyncThread { jobs, done })
    }
}

/// Reply due to one request of a group.
enum Due {
    /// An append's reply, and its chain, broken if the append fails.
    Append(oneshot::Sender<Result<AppendAck, StorageError>>, AppendAck, Option<AppendChain>),
    Flush(oneshot::Sender<Result<(), StorageError>>),
}

impl Due {
    /// The reply due to a request that is refused without being written (none for a tick).
    fn refused(req: Request, stats: &Counters) -> Option<Due> {
        match req {
            Request::Append { reply, batch, .. } => {
                stats.append_requests.fetch_add(1, Ordering::Relaxed);
                Some(Due::Append(
                    reply,
                    AppendAck {
                        base_offset: 0,
                        count: 0,
                        start_offset: None,
                    },
                    batch.chain,
                ))
            }
            Request::Flush { reply } => Some(Due::Flush(reply)),
            Request::Tick => None,
        }
    }

    fn fail(self, e: &io::Error) {
        let err = || StorageError::Io(io::Error::new(e.kind(), e.to_string()));
        // A requester that gave up no longer listens; nothing to do about it.
        match self {
            Due::Append(tx, _, chain) => {
                if let Some(chain) = chain {
                    chain.mark_broken();
                }
                drop(tx.send(Err(err())))
            }
            Due::Flush(tx) => drop(tx.send(Err(err()))),
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) -> io::Result<()> {
        raise_priority(&self.core.dir);
        let mut group = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            #[cfg(test)]
            while self.core.faults.stall.load(Ordering::SeqCst) {
                self.core.faults.stalling.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // Bounded by the queue's capacity plus what arrives meanwhile; cap it anyway.
            while group.len() < 4 * self.cfg.queue_depth.max(1) {
                match rx.try_recv() {
                    Ok(more) => group.push(more),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group, &mut rx);
            self.buffers.give(std::mem::take(&mut self.buf));
        }
        // Every sender is gone: the store is closing or dropped. Leave nothing unsynced.
        self.settle_background_sync(true);
        if self.fault.is_some() {
            self.reopen()?;
        }
        if self.restore_to.is_none() && self.cut_padding()? {
            self.dirty = true;
        }
        if self.dirty && self.restore_to.is_none() {
            self.sync_active(self.active.len)?;
        }
        Ok(())
    }

    /// Writes a drained group with one write and at most one sync, then replies to each.
    fn commit_group(&mut self, group: &mut Vec<Request>, rx: &mut mpsc::Receiver<Request>) {
        self.settle_background_sync(false);
        if let Err(e) = self.reopen() {
            let e = io::Error::new(
                e.kind(),
                format!("logstore shard not yet reopened after a failed fsync: {e}"),
            );
            self.refuse(group, &e);
            return;
        }
        if let Err(e) = self.retry_restore() {
            self.refuse(group, &e);
            return;
        }
        if group.iter().all(|r| matches!(r, Request::Tick)) {
            self.probe_space();
        }
        self.maybe_roll();
        if self.fault.is_some() {
            // The roll's fsync failed: nothing of this group is written.
            let dues = group
                .drain(..)
                .filter_map(|r| Due::refused(r, &self.stats))
                .collect();
            self.on_fault(dues, rx);
            return;
        }

        let start_len = self.active.len;
        let mark = self.active.index.mark();
        let max_arrival_before = self.active.max_arrival_ms;
        let mut next = self.next_offset;
        let mut dues = Vec::with_capacity(group.len());
        let mut need_sync = false;
        let mut entries = 0u64;
        self.buf.clear();
        // The group's bytes, and room for the padding frame that may end them.
        let room = group
            .iter()
            .map(|r| match r {
                Request::Append { batch, .. } => batch.bytes.len(),
                _ => 0,
            })
            .fold(2 * direct::BLOCK, usize::saturating_add);
        for req in group.drain(..) {
            match req {
                Request::Append {
                    batch,
                    durability,
                    reply,
                } => {
                    if batch.chain.as_ref().is_some_and(AppendChain::is_broken) {
                        // An earlier append of its chain failed: writing this one would
                        // leave a hole in what is stored of the chain.
                        self.stats.append_requests.fetch_add(1, Ordering::Relaxed);
                        let ack = AppendAck { base_offset: 0, count: 0, start_offset: None };
                        Due::Append(reply, ack, batch.chain).fail(&io::Error::other(
                            "not written: an earlier append of its chain failed",
                        ));
                        continue;
                    }
                    let at = self.buf.len();
                    if batch.count > 0 {
                        if at == 0 && batch.bytes.capacity() >= room {
                            // The group's first request, and the whole group fits in its
                            // buffer: take it rather than copy it.
                            let empty = std::mem::replace(&mut self.buf, batch.bytes);
                            self.buffers.give(empty);
                        } else {
                            if at == 0 && self.buf.capacity() < room {
                                let small = std::mem::replace(&mut self.buf, self.buffers.take(room));
                                self.buffers.give(small);
                            }
                            self.buf.extend_from_slice(&batch.bytes);
                            self.buffers.give(batch.bytes);
                        }
                        // One block frame per request: its header, then one checksum.
                        if codec::seal_block(&mut self.buf[at..], next, batch.count).is_none() {
                            self.buf.truncate(at);
                            self.stats.append_requests.fetch_add(1, Ordering::Relaxed);
                            let ack = AppendAck { base_offset: 0, count: 0, start_offset: None };
                            Due::Append(reply, ack, batch.chain).fail(&io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "append request too large for one block frame",
                            ));
                            continue;
                        }
                        let sealed = batch.summary;
                        debug_assert_eq!(sealed.count, u64::from(batch.count));
                        self.active.index.observe_frame(
                            next,
                            start_len + at as u64,
                            sealed.min_time,
                            sealed.max_time,
                        );
                        self.active.max_arrival_ms = self.active.max_arrival_ms.max(sealed.max_arrival);
                    }
                    let ack = AppendAck {
                        base_offset: next,
                        count: batch.count,
                        start_offset: None,
                    };
                    next += u64::from(batch.count);
                    if durability == Durability::Synced {
                        need_sync = true;
                        self.stats.synced_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    entries += u64::from(batch.count);
                    self.stats.append_requests.fetch_add(1, Ordering::Relaxed);
                    dues.push(Due::Append(reply, ack, batch.chain));
                }
                Request::Flush { reply } => {
                    need_sync = true;
                    dues.push(Due::Flush(reply));
                }
                Request::Tick => {}
            }
        }
        if self.active.direct.is_some() && self.buf.len() >= ZERO_COPY_MIN_BYTES {
            // Ends the group on a block boundary, so that this write and the next large one
            // can go to the device without a staging copy (`direct.rs`).
            codec::pad_to(&mut self.buf, start_len, direct::BLOCK);
        }
        // The flush policy for data nobody asked to sync: fsynced in the background, so
        // that the requests queued meanwhile are written without waiting for it.
        let pending = self.dirty_bytes + self.buf.len() as u64;
        let policy_due = self
            .cfg
            .flush_bytes
            .is_some_and(|b| pending > 0 && pending >= b)
            || self
                .cfg
                .flush_interval
                .zip(self.dirty_since)
                .is_some_and(|(every, since)| since.elapsed() >= every);

        match self.write_and_sync(start_len, need_sync) {
            Ok(()) => {
                if policy_due && !need_sync && self.dirty {
                    self.start_background_sync(start_len + self.buf.len() as u64);
                }
                if !self.buf.is_empty() {
                    self.core.set_failing(false);
                }
                self.active.len = start_len + self.buf.len() as u64;
                self.next_offset = next;
                self.stats
                    .appended_entries
                    .fetch_add(entries, Ordering::Relaxed);
                if !self.buf.is_empty() {
                    self.publish();
                }
                // Retention runs on this thread too: the first segment stays while these
                // acknowledgements go out.
                let start_offset = self.core.view().first().map(|s| s.base);
                for due in dues {
                    match due {
                        Due::Append(tx, ack, _) => drop(tx.send(Ok(AppendAck { start_offset, ..ack }))),
                        Due::Flush(tx) => drop(tx.send(Ok(()))),
                    }
                }
            }
            Err(_) if self.fault.is_some() => {
                self.core.set_failing(true);
                self.stats.failed_groups.fetch_add(1, Ordering::Relaxed);
                self.active.index.rollback(mark);
                self.active.max_arrival_ms = max_arrival_before;
                self.on_fault(dues, rx);
            }
            Err(e) => {
                self.core.set_failing(true);
                self.out_of_space = matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
                self.stats.failed_groups.fetch_add(1, Ordering::Relaxed);
                self.active.index.rollback(mark);
                self.active.max_arrival_ms = max_arrival_before;
                if !dues.is_empty() || !self.buf.is_empty() {
                    tracing::error!(dir = %self.core.dir.display(), error = %e,
                        "logstore write failed; group rejected");
                } else {
                    tracing::warn!(dir = %self.core.dir.display(), error = %e,
                        "logstore background fsync failed; retried at the next tick");
                }
                if !self.buf.is_empty() {
                    self.restore(start_len);
                }
                for due in dues {
                    due.fail(&e);
                }
            }
        }
        if self
            .last_retention
            .is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
        {
            self.enforce_retention();
            if self.fault.is_some() {
                self.on_fault(Vec::new(), rx);
            }
        }
    }

    /// While the shard counts as failing after a write that found the disk full and no
    /// one writes, checks at each tick whether a write would find room now, by reserving
    /// [`PROBE_BYTES`] past the data (blocks the next write uses), so that readiness
    /// recovers without waiting for a client's write. Without preallocation, the next
    /// successful write tells.
    fn probe_space(&mut self) {
        if !self.out_of_space || !self.core.stats.failing.load(Ordering::Relaxed) || self.fault.is_some() || self.restore_to.is_some() {
            return;
        }
        if self.preallocate && preallocate(&self.active.file, self.active.len, PROBE_BYTES).is_ok() {
            tracing::info!(dir = %self.core.dir.display(), "logstore shard has room to write again");
            self.out_of_space = false;
            self.core.set_failing(false);
        }
    }

    /// Fails every request of `group` with `e`, writing nothing.
    fn refuse(&mut self, group: &mut Vec<Request>, e: &io::Error) {
        let mut any = false;
        for req in group.drain(..) {
            if let Some(due) = Due::refused(req, &self.stats) {
                due.fail(e);
                any = true;
            }
        }
        if any {
            self.core.set_failing(true);
            self.stats.failed_groups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// After a failed fsync: fails `dues` and every request already queued, reopens the
    /// shard from disk, and only then replies, so that whatever a requester sends after
    /// its error is taken by the reopened shard.
    fn on_fault(&mut self, mut dues: Vec<Due>, rx: &mut mpsc::Receiver<Request>) {
        let Some((kind, why)) = self.fault.clone() else {
            return;
        };
        // Bounded by the queue's capacity plus what arrives meanwhile; cap it anyway.
        let cap = dues.len() + 4 * self.cfg.queue_depth.max(1);
        while dues.len() < cap {
            match rx.try_recv() {
                Ok(req) => dues.extend(Due::refused(req, &self.stats)),
                Err(_) => break,
            }
        }
        if let Err(e) = self.reopen() {
            tracing::error!(dir = %self.core.dir.display(), error = %e,
                "could not reopen the shard after a failed fsync; it refuses writes until that succeeds (retried every tick)");
        }
        let e = io::Error::new(
            kind,
            format!("{why}; nothing since the last good fsync was acknowledged as synced"),
        );
        for due in dues {
            due.fail(&e);
        }
    }

    /// Records a failed fsync (see `fault`).
    fn set_fault(&mut self, what: &str, e: &io::Error) {
        self.core.set_failing(true);
        tracing::error!(dir = %self.core.dir.display(), error = %e,
            "logstore {what} failed; the shard acknowledges nothing until it is reopened from disk");
        self.fault
            .get_or_insert_with(|| (e.kind(), format!("logstore {what} failed: {e}")));
    }

    /// Fsyncs the active segment, whose data ends at `len`; a failure is a fault.
    fn sync_active(&mut self, len: u64) -> io::Result<()> {
        // The data a background fsync covers is part of what this one must cover; and after
        // a failed fsync no later one may be believed.
        self.await_background_sync()?;
        let started = Instant::now();
        let synced = self.core.file_sync(&self.active.file);
        self.stats.fsync_latency.observe(started.elapsed());
        if let Err(e) = synced {
            self.set_fault("fsync", &e);
            return Err(e);
        }
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.dirty = false;
        self.dirty_bytes = 0;
        self.dirty_since = None;
        self.active.durable_len = len;
        Ok(())
    }

    /// Starts the flush policy's fsync of the active segment, whose data ends at `len`, on the
    /// shard's sync thread (unless one is running already: the next policy turn takes what
    /// this one misses). Until it is known to have succeeded, nothing it covers counts as
    /// durable (`durable_len`); a failure is a fault, found at the next group or tick.
    fn start_background_sync(&mut self, len: u64) {
        if self.background_sync.is_some() {
            return;
        }
        let queued = self.active.file.try_clone().and_then(|file| {
            let thread = match self.sync_thread.take() {
                Some(thread) => thread,
                None => SyncThread::start(self.core.clone())?,
            };
            thread.jobs.send(file).map_err(|_| io::Error::other("the sync thread has ended"))?;
            self.sync_thread = Some(thread);
            Ok(())
        });
        if let Err(e) = queued {
            // No descriptor or thread to spare: the policy sync runs here instead.
            tracing::warn!(dir = %self.core.dir.display(), error = %e, "background fsync not started; syncing inline");
            let _ = self.sync_active(len);
            return;
        }
        self.dirty = false;
        self.dirty_bytes = 0;
        self.dirty_since = None;
        self.background_sync = Some(len);
    }

    /// Takes the outcome of the background fsync, if it has one (waiting for it when
    /// `wait`): success makes what it covered durable, failure is a fault.
    fn settle_background_sync(&mut self, wait: bool) {
        let Some(len) = self.background_sync else {
            return;
        };
        let answer = match &self.sync_thread {
            Some(thread) if wait => thread.done.recv().ok(),
            Some(thread) => match thread.done.try_recv() {
                Ok(answer) => Some(answer),
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            },
            None => None,
        };
        self.background_sync = None;
        let Some((outcome, took)) = answer else {
            // Its fsync may or may not have happened: nothing it covered counts as durable.
            self.sync_thread = None;
            self.set_fault("fsync", &io::Error::other("the sync thread ended without an answer"));
            return;
        };
        self.stats.fsync_latency.observe(took);
        match outcome {
            Ok(()) => {
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.active.durable_len = self.active.durable_len.max(len);
            }
            Err(e) => self.set_fault("fsync", &e),
        }
    }

    /// Waits for the background fsync, if one runs; an error if it failed, or if the shard
    /// has a fault already (no later fsync may be believed then).
    fn await_background_sync(&mut self) -> io::Result<()> {
        self.settle_background_sync(true);
        match &self.fault {
            Some((kind, why)) => Err(io::Error::new(*kind, why.clone())),
            None => Ok(()),
        }
    }

    /// Fsyncs the shard directory; a failure is a fault.
    fn sync_dir(&mut self) -> io::Result<()> {
        if let Err(e) = self.core.dir_sync() {
            self.set_fault("directory fsync", &e);
            return Err(e);
        }
        Ok(())
    }

    /// After a fault: cuts the active segment back to what the last good fsync covered,
    /// through a new descriptor, and loads the shard again from disk as at start (re-scanning
    /// the tail). Whatever was written since that fsync is not known to be on disk, so it is
    /// dropped, as a crash would drop it; no request was told it was synced. No-op without a fault.
    fn reopen(&mut self) -> io::Result<()> {
        if self.fault.is_none() {
            return Ok(());
        }
        // Its thread holds a descriptor of the segment about to be cut, and its outcome
        // tells how much of it is durable.
        self.settle_background_sync(true);
        let keep = self.active.durable_len;
        let entries_before = self.next_offset;
        let cut_bytes = {
            let file = open_file(&self.active.path, true)?;
            let len = file.metadata()?.len();
            if len > keep {
                file.set_len(keep)?;
            }
            file.sync_all()?;
            len.saturating_sub(keep)
        };
        self.core.dir_sync()?;
        let loaded = load(&self.core.dir, &mut self.cfg)?;
        *self.core.view() = loaded.segments;
        self.active = loaded.active;
        self.sealed = loaded.sealed;
        self.next_offset = loaded.next_offset;
        self.dirty = false;
        self.dirty_bytes = 0;
        self.dirty_since = None;
        self.restore_to = None;
        self.roll_retry_at = None;
        self.last_retention = None;
        self.fault = None;
        self.core.set_failing(false);
        tracing::warn!(dir = %self.core.dir.display(), bytes_cut = cut_bytes,
            entries_cut = entries_before.saturating_sub(self.next_offset), next_offset = self.next_offset,
            "logstore shard reopened from disk after a failed fsync; writing again");
        Ok(())
    }

    /// Shows readers what the last group added to the active segment.
    fn publish(&self) {
        let mut v = self.core.view();
        if let Some(seg) = v.last_mut().filter(|s| s.base == self.active.base) {
            seg.len = self.active.len;
            seg.next_offset = self.next_offset;
            seg.max_arrival_ms = self.active.max_arrival_ms;
            Arc::make_mut(&mut seg.index).catch_up(&self.active.index);
        }
    }

    fn write_and_sync(&mut self, at: u64, need_sync: bool) -> io::Result<()> {
        if !self.buf.is_empty() {
            let started = Instant::now();
            self.reserve(at, self.buf.len() as u64)?;
            self.dirty = true;
            self.dirty_bytes += self.buf.len() as u64;
            self.dirty_since.get_or_insert_with(Instant::now);
            #[cfg(test)]
            if Faults::take(&self.core.faults.fail_writes) {
                // A torn write: half the group reaches the file.
                let half = &self.buf[..self.buf.len() / 2];
                self.active.file.write_all_at(half, at)?;
                return Err(io::Error::other("injected write failure"));
            }
            self.write_at(at)?;
            self.stats.write_latency.observe(started.elapsed());
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
        }
        if need_sync && self.dirty {
            self.sync_active(at + self.buf.len() as u64)?;
        } else if need_sync {
            // Nothing new since the background fsync started: it is the one to wait for.
            self.await_background_sync()?;
        }
        Ok(())
    }

    /// Writes the group buffer at `at`: a direct write when the segment has one, else buffered.
    fn write_at(&mut self, at: u64) -> io::Result<()> {
        let Some(direct) = self.active.direct.as_mut() else {
            return self.active.file.write_all_at(&self.buf, at);
        };
        match direct.write_at(&self.active.file, &self.buf, at) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(dir = %self.core.dir.display(), error = %e,
                    "direct write refused; writing through the page cache from now on");
                self.cfg.direct_io = false;
                self.active.direct = None;
                self.active.file.write_all_at(&self.buf, at)
            }
            other => other,
        }
    }

    /// Cuts the zero padding of direct writes off the active segment; whether there was any.
    fn cut_padding(&mut self) -> io::Result<bool> {
        if self.active.direct.is_none() || self.active.file.metadata()?.len() <= self.active.len {
            return Ok(false);
        }
        self.active.file.set_len(self.active.len)?;
        if let Some(d) = self.active.direct.as_mut() {
            d.forget_tail();
        }
        Ok(true)
    }

    /// Reserves the disk blocks of `at..at + len` without changing the file size, so that a
    /// full disk fails the group before any byte of it is written.
    fn reserve(&mut self, at: u64, len: u64) -> io::Result<()> {
        if !self.preallocate {
            return Ok(());
        }
        match preallocate(&self.active.file, at, len) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
                ) =>
            {
                tracing::info!(dir = %self.core.dir.display(), "filesystem cannot preallocate; writing without");
                self.preallocate = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Cuts the active segment back to `len` after a failed group; when that fails too, no
    /// write happens until a later attempt (next group or tick) succeeds.
    fn restore(&mut self, len: u64) {
        self.restore_to = Some(len);
        if let Err(e) = self.retry_restore() {
            tracing::error!(dir = %self.core.dir.display(), error = %e,
                "could not cut off a failed write; the shard refuses writes until that succeeds (retried every tick)");
        }
    }

    fn retry_restore(&mut self) -> io::Result<()> {
        let Some(len) = self.restore_to else {
            return Ok(());
        };
        #[cfg(test)]
        if Faults::take(&self.core.faults.fail_truncates) {
            return Err(io::Error::other("injected truncate failure"));
        }
        if let Some(d) = self.active.direct.as_mut() {
            d.forget_tail();
        }
        self.active.file.set_len(len)?;
        if self.restore_to.is_some() {
            tracing::info!(dir = %self.core.dir.display(), len, "cut off a failed write; writing again");
        }
        self.restore_to = None;
        Ok(())
    }

    /// Starts a new segment when the active one is full or old enough.
    fn maybe_roll(&mut self) {
        if self.active.len == 0 || self.roll_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let full = self.active.len >= self.cfg.segment_bytes;
        let old = self
            .active
            .created
            .elapsed()
            .is_ok_and(|age| age >= self.cfg.segment_age);
        if !(full || old) {
            return;
        }
        match self.roll() {
            Ok(()) => {
                self.roll_retry_at = None;
                self.last_retention = None;
            }
            // A failed fsync is a fault, handled by the caller.
            Err(_) if self.fault.is_some() => {}
            Err(e) => {
                tracing::warn!(dir = %self.core.dir.display(), error = %e,
                    "could not start a new segment; writing on in the current one");
                self.roll_retry_at = Some(Instant::now() + ROLL_RETRY);
            }
        }
    }

    /// Seals the active segment (synced, index written) and starts the next one.
    fn roll(&mut self) -> io::Result<()> {
        self.await_background_sync()?;
        if self.cut_padding()? {
            self.dirty = true;
        }
        if self.dirty {
            self.sync_active(self.active.len)?;
        }
        let sealed_state = {
            let v = self.core.view();
            v.last().filter(|s| s.base == self.active.base).cloned()
        };
        if let Some(st) = &sealed_state {
            if let Err(e) = segment::write_index(st) {
                tracing::warn!(path = %st.path.display(), error = %e,
                    "could not write the segment index; it is rebuilt by a scan when needed");
            }
        }
        let base = self.next_offset;
        let path = self.core.dir.join(paths::segment_file_name(base));
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            // Left by an earlier attempt whose directory sync failed.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let f = open_file(&path, true)?;
                f.set_len(0)?;
                f
            }
            Err(e) => return Err(e),
        };
        // From here on a failure must not leave the new file behind: after a restart its base
        // offset would hide the entries the current segment goes on to take.
        let direct = match self.open_new_segment(&path) {
            Ok(direct) => direct,
            Err(e) => {
                drop(file);
                if let Err(e) = fs::remove_file(&path).and_then(|()| self.core.dir_sync()) {
                    tracing::error!(path = %path.display(), error = %e,
                        "could not remove the new segment of a failed roll; the next start removes it");
                }
                return Err(e);
            }
        };
        let file = Arc::new(file);
        let old = std::mem::replace(
            &mut self.active,
            Active {
                base,
                path: path.clone(),
                file: file.clone(),
                direct,
                len: 0,
                durable_len: 0,
                index: SparseIndex::new(base),
                max_arrival_ms: i64::MIN,
                created: SystemTime::now(),
            },
        );
        self.sealed.push_back(Sealed {
            base: old.base,
            path: old.path,
            len: old.len,
            max_arrival_ms: old.max_arrival_ms,
        });
        self.core.view().push(SegmentState::empty(base, path, file));
        self.stats.segments_rolled.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(dir = %self.core.dir.display(), base, "started a new segment");
        Ok(())
    }

    /// Makes a just created segment file's name durable and opens it for direct writes.
    fn open_new_segment(&mut self, path: &Path) -> io::Result<Option<DirectFile>> {
        self.sync_dir()?;
        #[cfg(test)]
        if Faults::take(&self.core.faults.fail_roll_after_create) {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        open_direct(&mut self.cfg, path)
    }

    /// Deletes the oldest sealed segments while they are older than the retention age or the
    /// shard is larger than the retention size. Never the active segment.
    fn enforce_retention(&mut self) {
        self.last_retention = Some(Instant::now());
        let retention = **self.cfg.retention.load();
        if retention == StreamOptions::default() {
            return;
        }
        let oldest_kept = retention.retention_age.map(|a| now_ms().saturating_sub(a.as_millis() as i64));
        let mut total: u64 = self.sealed.iter().map(|s| s.len).sum::<u64>() + self.active.len;
        let mut deleted = false;
        while let Some(s) = self.sealed.front() {
            let expired = oldest_kept.is_some_and(|t| s.max_arrival_ms < t);
            let too_big = retention.retention_bytes_per_shard.is_some_and(|b| total > b);
            if !(expired || too_big) {
                break;
            }
            match fs::remove_file(&s.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %s.path.display(), error = %e, "could not delete an expired segment");
                    break;
                }
            }
            drop(fs::remove_file(segment::index_path(&s.path)));
            let base = s.base;
            self.core.view().retain(|v| v.base != base);
            tracing::info!(path = %s.path.display(), bytes = s.len, expired, too_big, "retention deleted a segment");
            total -= s.len;
            self.core.stats.retention_segments.fetch_add(1, Ordering::Relaxed);
            self.core.stats.retention_bytes.fetch_add(s.len, Ordering::Relaxed);
            self.sealed.pop_front();
            self.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
            deleted = true;
        }
        if deleted {
            // A failure is a fault like any failed fsync (`set_fault` logs it).
            drop(self.sync_dir());
        }
    }
}

impl Core {
    /// `fdatasync` of a segment file.
    fn file_sync(&self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        {
            while self.faults.stall_sync.load(Ordering::SeqCst) {
                self.faults.syncing.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if Faults::take(&self.faults.fail_syncs) {
                return Err(io::Error::other("injected sync failure"));
            }
        }
        file.sync_data()
    }

    /// Fsync of the shard directory.
    fn dir_sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if Faults::take(&self.faults.fail_dir_syncs) {
            return Err(io::Error::other("injected directory sync failure"));
        }
        paths::sync_dir(&self.dir)
    }
}

/// Nice value of writer threads. Every acknowledgement of a shard waits on its writer, which
/// needs little CPU; when the cores are busy decoding, a writer that waits its turn for a CPU
/// delays every producer of the shard (measured: half-load p99 latency about halved).
const WRITER_NICE: libc::c_int = -5;

/// Gives the calling writer thread [`WRITER_NICE`]; without the privilege for it
/// (CAP_SYS_NICE) the thread keeps the default priority.
fn raise_priority(dir: &Path) {
    // SAFETY: a plain system call; `who` 0 with PRIO_PROCESS means the calling thread on Linux.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, WRITER_NICE) };
    if r != 0 {
        tracing::debug!(dir = %dir.display(), error = %io::Error::last_os_error(),
            "could not raise the writer thread's priority; it keeps the default");
    }
}

/// The direct-write handle of a segment, when configured and the filesystem allows it.
/// A filesystem without direct I/O turns it off for the shard's later segments too.
fn open_direct(cfg: &mut WriterConfig, path: &Path) -> io::Result<Option<DirectFile>> {
    if !cfg.direct_io {
        return Ok(None);
    }
    let direct = DirectFile::open(path)?;
    if direct.is_none() {
        tracing::info!(path = %path.display(), "filesystem has no direct I/O; writing through the page cache");
        cfg.direct_io = false;
    }
    Ok(direct)
}

/// `fallocate(FALLOC_FL_KEEP_SIZE)`: allocates blocks for `at..at + len`, size unchanged.
fn preallocate(file: &File, at: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(len)) = (libc::off_t::try_from(at), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut last = io::Error::from(io::ErrorKind::Interrupted);
    // Retried only when a signal interrupted it, a bounded number of times.
    for _ in 0..16 {
        // SAFETY: a plain system call on a file descriptor this `File` owns.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, at, len) };
        if r == 0 {
            return Ok(());
        }
        last = io::Error::last_os_error();
        if last.kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    Err(last)
}
