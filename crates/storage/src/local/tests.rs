//! Tests that need the internals: injected write and sync failures.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::*;
use crate::{AppendChain, LogEntry};

fn entry(i: u64) -> LogEntry {
    LogEntry {
        event_time_ms: i as i64,
        arrival_time_ms: i as i64 + 1,
        source: Bytes::from_static(b"127.0.0.1:9"),
        key: None,
        headers: vec![],
        fields: vec![(Bytes::from_static(b"n"), Bytes::from(i.to_string()))],
        tag: None,
    }
}

fn batch(entries: impl IntoIterator<Item = LogEntry>) -> EntryBatch {
    let mut batch = EntryBatch::new(usize::MAX);
    for e in entries {
        batch.push(&e).unwrap();
    }
    batch
}

fn segment(dir: &Path, s: &StreamId) -> PathBuf {
    dir.join("logstores")
        .join(&s.project)
        .join(&s.logstore)
        .join("shard-0")
        .join("00000000000000000000.log")
}

/// A store whose shard 0 of `p/l` holds `first` (synced), with that segment's length and
/// the open shard, for injecting faults into it.
async fn store_holding(
    dir: &Path,
    opts: LocalStoreOptions,
    first: Vec<LogEntry>,
) -> (LocalStore, StreamId, u64, Arc<Shard>) {
    let s = StreamId::new("p", "l");
    let store = LocalStore::open(dir, opts).unwrap();
    store
        .append(&s, 0, batch(first), Durability::Synced)
        .await
        .unwrap();
    let shard = store.shard(&s, 0, false).await.unwrap().unwrap();
    // The end of the data (a direct write pads the file further, to a block boundary).
    let good_len = shard.core.view().last().unwrap().len;
    assert!(fs::metadata(segment(dir, &s)).unwrap().len() >= good_len);
    (store, s, good_len, shard)
}

async fn fails_then_recovers(inject: impl Fn(&Shard), durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, good_len, shard) = store_holding(
        dir.path(),
        LocalStoreOptions::default(),
        (0..3).map(entry).collect(),
    )
    .await;
    inject(&shard);
    let err = store
        .append(&s, 0, batch((3..8).map(entry)), durability)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Io(_)), "{err:?}");
    assert_eq!(
        fs::metadata(segment(dir.path(), &s)).unwrap().len(),
        good_len
    );
    assert_eq!(store.read(&s, 0, 0, 100).await.unwrap().len(), 3);
    assert_eq!(store.stats().failed_groups, 1);

    // The failed offsets are reused: nothing of them was acknowledged.
    let ack = store
        .append(&s, 0, batch([entry(100)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 3);
    store.close().await.unwrap();
    drop(store);

    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    let logs = store.read(&s, 0, 0, 100).await.unwrap();
    assert_eq!(logs.len(), 4);
    assert_eq!(logs[3].entry, entry(100));
}

#[tokio::test]
async fn torn_write_is_truncated_and_reported() {
    fails_then_recovers(
        |s| s.core.faults.fail_writes.store(1, Ordering::SeqCst),
        Durability::Written,
    )
    .await;
}

#[tokio::test]
async fn failed_sync_rejects_group_and_truncates() {
    fails_then_recovers(
        |s| s.core.faults.fail_syncs.store(1, Ordering::SeqCst),
        Durability::Synced,
    )
    .await;
}

#[tokio::test]
async fn failed_sync_fails_written_requests_of_the_same_group_and_cuts_what_was_not_synced() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    // No flush policy: nothing is synced unless asked for.
    let opts = LocalStoreOptions {
        flush_interval: None,
        ..Default::default()
    };
    let store = Arc::new(LocalStore::open(dir.path(), opts.clone()).unwrap());
    store
        .append(&s, 0, batch([entry(0)]), Durability::Written)
        .await
        .unwrap();
    let shard = store.shard(&s, 0, false).await.unwrap().unwrap();
    // Queue both back to back so the writer most likely drains them as one group.
    let tx = shard.sender().unwrap();
    shard.core.faults.fail_syncs.store(1, Ordering::SeqCst);
    let (r1, rx1) = oneshot::channel();
    let (r2, rx2) = oneshot::channel();
    let permit1 = tx.reserve().await.unwrap();
    let permit2 = tx.reserve().await.unwrap();
    permit1.send(Request::Append {
        batch: checked_batch(batch([entry(1)]), 1 << 20).unwrap(),
        durability: Durability::Written,
        reply: r1,
    });
    permit2.send(Request::Append {
        batch: checked_batch(batch([entry(2)]), 1 << 20).unwrap(),
        durability: Durability::Synced,
        reply: r2,
    });
    drop(tx);
    let (a, b) = (rx1.await.unwrap(), rx2.await.unwrap());
    // Either they were one group (both fail) or the Written one went first alone (succeeds,
    // and the Synced one fails alone); never a Synced ack.
    assert!(b.is_err());
    if let Ok(ack) = a {
        assert_eq!(ack.base_offset, 1);
    }
    // The failed fsync may have lost any page written since the last good one: the shard
    // was reopened from disk without them (none was synced here), and goes on from there.
    assert!(store.read(&s, 0, 0, 10).await.unwrap().is_empty());
    let ack = store
        .append(&s, 0, batch([entry(3)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 0);
    store.close().await.unwrap();
    drop(store);
    let store = LocalStore::open(dir.path(), opts).unwrap();
    let logs = store.read(&s, 0, 0, 10).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!((logs[0].offset, &logs[0].entry), (0, &entry(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_that_stays_full_is_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let store = LocalStore::open_with(
        dir.path(),
        LocalStoreOptions {
            queue_depth: 1,
            ..Default::default()
        },
        std::time::Duration::from_millis(200),
    )
    .unwrap();
    let store = Arc::new(store);
    store
        .append(&s, 0, batch([entry(0)]), Durability::Written)
        .await
        .unwrap();
    let shard = store.shard(&s, 0, false).await.unwrap().unwrap();
    let tx = shard.sender().unwrap();
    shard.core.faults.stall.store(true, Ordering::SeqCst);

    let spawn_append = |i| spawn_synced_append(&store, &s, i);
    // The first is taken by the (stalled) writer, the second fills the queue.
    let first = spawn_append(1);
    while !shard.core.faults.stalling.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let second = spawn_append(2);
    while tx.capacity() != 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let err = store
        .append(&s, 0, batch([entry(3)]), Durability::Written)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Overloaded), "{err:?}");

    shard.core.faults.stall.store(false, Ordering::SeqCst);
    let a = first.await.unwrap().unwrap();
    let b = second.await.unwrap().unwrap();
    assert_eq!((a.base_offset, b.base_offset), (1, 2));
}

#[tokio::test]
async fn failed_cut_after_a_torn_write_heals_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, good_len, shard) = store_holding(
        dir.path(),
        LocalStoreOptions::default(),
        (0..3).map(entry).collect(),
    )
    .await;
    // A torn write whose cut fails, and fails once more on the next try.
    shard.core.faults.fail_writes.store(1, Ordering::SeqCst);
    shard.core.faults.fail_truncates.store(2, Ordering::SeqCst);
    let append = |i: u64| store.append(&s, 0, batch([entry(i)]), Durability::Synced);
    assert!(append(10).await.is_err());
    // Half a group is in the file, but no reader sees it.
    assert!(fs::metadata(segment(dir.path(), &s)).unwrap().len() > good_len);
    assert_eq!(store.read(&s, 0, 0, 100).await.unwrap().len(), 3);
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.read(&s, 0, 0, 100).await.unwrap().len(), 3);
    // The next write retries the cut, which fails again: refused, nothing written.
    let err = append(11).await.unwrap_err();
    assert!(
        err.to_string().contains("injected truncate failure"),
        "{err}"
    );
    // Then it works: the cut succeeds before the write, offsets continue without a gap.
    assert_eq!(append(12).await.unwrap().base_offset, 3);
    let logs = store.read(&s, 0, 0, 100).await.unwrap();
    assert_eq!(logs.len(), 4);
    assert_eq!(logs[3].entry, entry(12));
    assert_eq!(reader.read(&s, 0, 0, 100).await.unwrap().len(), 4);
    store.close().await.unwrap();
    drop(store);
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    assert_eq!(store.read(&s, 0, 0, 100).await.unwrap().len(), 4);
}

#[tokio::test]
async fn failed_cut_heals_on_a_tick_without_writes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalStoreOptions {
        flush_interval: Some(std::time::Duration::from_millis(20)),
        ..Default::default()
    };
    let (store, s, good_len, shard) = store_holding(dir.path(), opts, vec![entry(0)]).await;
    shard.core.faults.fail_writes.store(1, Ordering::SeqCst);
    shard.core.faults.fail_truncates.store(1, Ordering::SeqCst);
    assert!(store
        .append(&s, 0, batch([entry(1)]), Durability::Synced)
        .await
        .is_err());
    wait_until("torn bytes never cut", || fs::metadata(segment(dir.path(), &s)).unwrap().len() == good_len).await;
}

/// Polls `done` until it holds; fails with `never` after 10 s.
async fn wait_until(never: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{never}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_failed_write_makes_the_store_unwritable_until_a_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, _, shard) = store_holding(dir.path(), LocalStoreOptions::default(), vec![entry(0)]).await;
    assert!(store.writable());
    let fsyncs = store.fsync_seconds().count;
    assert!(fsyncs >= 1, "the synced append was timed");
    let writes = store.write_seconds().count;
    assert!(writes >= 1, "its write was timed");
    let stats = store.stream_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].stream.clone(), stats[0].failing_shards), (s.clone(), 0));
    assert!(stats[0].disk_bytes > 0);
    shard.core.faults.fail_writes.store(1, Ordering::SeqCst);
    assert!(store.append(&s, 0, batch([entry(1)]), Durability::Synced).await.is_err());
    assert!(!store.writable());
    assert_eq!(store.stream_stats()[0].failing_shards, 1);
    // An injected failure is no full disk: ticks do not clear it, the next write does.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!store.writable());
    store.append(&s, 0, batch([entry(2)]), Durability::Synced).await.unwrap();
    assert!(store.writable());
    assert_eq!(store.stream_stats()[0].failing_shards, 0);
    assert!(store.fsync_seconds().count > fsyncs);
    // The failed write is not timed; the good one is.
    assert_eq!(store.write_seconds().count, writes + 1);
}

/// The offsets and entries a shard holds.
async fn held(store: &LocalStore, s: &StreamId) -> Vec<(u64, LogEntry)> {
    let logs = store.read(s, 0, 0, 1000).await.unwrap();
    logs.into_iter().map(|l| (l.offset, l.entry)).collect()
}

/// Appends `entry(i)` to shard 0 of `s` as Synced in a task of its own.
fn spawn_synced_append(
    store: &Arc<LocalStore>,
    s: &StreamId,
    i: u64,
) -> tokio::task::JoinHandle<Result<crate::AppendAck, StorageError>> {
    let (store, s) = (store.clone(), s.clone());
    tokio::spawn(async move { store.append(&s, 0, batch([entry(i)]), Durability::Synced).await })
}

/// Closes `store` (and lets go of `shard`), opens `dir` again and returns what it holds.
async fn held_after_restart<S: std::borrow::Borrow<LocalStore>>(
    store: S,
    shard: Option<Arc<Shard>>,
    dir: &Path,
    opts: LocalStoreOptions,
    s: &StreamId,
) -> Vec<(u64, LogEntry)> {
    store.borrow().close().await.unwrap();
    drop((store, shard));
    held(&LocalStore::open(dir, opts).unwrap(), s).await
}

fn expected(entries: impl IntoIterator<Item = u64>) -> Vec<(u64, LogEntry)> {
    entries
        .into_iter()
        .enumerate()
        .map(|(offset, i)| (offset as u64, entry(i)))
        .collect()
}

/// The segment files of shard 0 of `s`, sorted.
fn segment_files(dir: &Path, s: &StreamId) -> Vec<String> {
    let shard_dir = segment(dir, s).parent().unwrap().to_owned();
    let mut names: Vec<String> = fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_acknowledges_nothing_until_the_shard_is_reopened_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalStoreOptions {
        flush_interval: None,
        ..Default::default()
    };
    let (store, s, good_len, shard) =
        store_holding(dir.path(), opts.clone(), (0..3).map(entry).collect()).await;
    let store = Arc::new(store);
    // acks=1 data: written, never synced.
    let ack = store
        .append(&s, 0, batch([entry(3), entry(4)]), Durability::Written)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 3);

    // The next fsync fails; it waits until a second request is queued behind it.
    let tx = shard.sender().unwrap();
    shard.core.faults.fail_syncs.store(1, Ordering::SeqCst);
    shard.core.faults.stall_sync.store(true, Ordering::SeqCst);
    let spawn_append = |i| spawn_synced_append(&store, &s, i);
    let first = spawn_append(5);
    while !shard.core.faults.syncing.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let pending = spawn_append(6);
    while tx.capacity() == tx.max_capacity() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    drop(tx);
    shard.core.faults.stall_sync.store(false, Ordering::SeqCst);
    let (a, b) = (first.await.unwrap(), pending.await.unwrap());
    assert!(a.is_err(), "acknowledged although its fsync failed: {a:?}");
    assert!(
        b.is_err(),
        "acknowledged after a failed fsync, before the shard was reopened: {b:?}"
    );
    assert_eq!(store.stats().fsyncs, 1, "the failed fsync was retried");

    // Reopened from disk: what the last good fsync covered, nothing written after it.
    assert_eq!(held(&store, &s).await, expected(0..3));
    assert_eq!(
        fs::metadata(segment(dir.path(), &s)).unwrap().len(),
        good_len
    );
    // And it works again, offsets going on from there.
    let ack = store
        .append(&s, 0, batch([entry(7)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 3);
    assert_eq!(held(&store, &s).await, expected([0, 1, 2, 7]));
    assert_eq!(held_after_restart(store, Some(shard), dir.path(), opts, &s).await, expected([0, 1, 2, 7]));
}

#[tokio::test]
async fn failed_directory_fsync_of_a_roll_is_fatal_for_the_shard_too() {
    let dir = tempfile::tempdir().unwrap();
    // Every append rolls the segment the previous one wrote.
    let opts = LocalStoreOptions {
        segment_bytes: 1,
        flush_interval: None,
        ..Default::default()
    };
    let (store, s, _, shard) =
        store_holding(dir.path(), opts.clone(), (0..3).map(entry).collect()).await;
    shard.core.faults.fail_dir_syncs.store(1, Ordering::SeqCst);
    let refused = store
        .append(&s, 0, batch([entry(3)]), Durability::Synced)
        .await;
    assert!(
        refused.is_err(),
        "acknowledged after the directory fsync failed: {refused:?}"
    );
    assert_eq!(held(&store, &s).await, expected(0..3));
    assert_eq!(segment_files(dir.path(), &s), ["00000000000000000000.log"]);
    let ack = store
        .append(&s, 0, batch([entry(4)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 3);
    assert_eq!(
        segment_files(dir.path(), &s),
        ["00000000000000000000.log", "00000000000000000003.log"]
    );
    assert_eq!(held_after_restart(store, Some(shard), dir.path(), opts, &s).await, expected([0, 1, 2, 4]));
}

#[tokio::test]
async fn failed_roll_leaves_no_segment_that_hides_offsets_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalStoreOptions {
        segment_bytes: 1,
        flush_interval: None,
        ..Default::default()
    };
    let (store, s, _, shard) =
        store_holding(dir.path(), opts.clone(), (0..3).map(entry).collect()).await;
    // The new segment file is created, then opening it again fails (EMFILE): the shard
    // writes on in its current segment.
    shard
        .core
        .faults
        .fail_roll_after_create
        .store(1, Ordering::SeqCst);
    let ack = store
        .append(&s, 0, batch([entry(3)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 3);
    assert_eq!(segment_files(dir.path(), &s), ["00000000000000000000.log"]);
    store.close().await.unwrap();
    drop(store);
    drop(shard);

    // After a restart every entry is read at its offset, and new ones go on after them.
    let store = LocalStore::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(held(&store, &s).await, expected(0..4));
    let ack = store
        .append(&s, 0, batch([entry(4)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 4);
    assert_eq!(held(&store, &s).await, expected(0..5));
    assert_eq!(held_after_restart(store, None, dir.path(), opts, &s).await, expected(0..5));
}

#[tokio::test]
async fn created_directories_are_fsynced() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = std::path::absolute(tmp.path()).unwrap();
    let data = tmp.join("a").join("data");
    let store = LocalStore::open(&data, LocalStoreOptions::default()).unwrap();
    let s = StreamId::new("p", "l");
    store
        .append(&s, 0, batch([entry(0)]), Durability::Synced)
        .await
        .unwrap();
    let synced = paths::synced::under(&tmp);
    let root = data.join("logstores");
    // The directory holding each created directory (and the lock file), and the shard
    // directory holding the segment.
    for dir in [
        tmp.clone(),
        tmp.join("a"),
        data.clone(),
        root.clone(),
        root.join("p"),
        root.join("p").join("l"),
        root.join("p").join("l").join("shard-0"),
    ] {
        assert!(
            synced.contains(&dir),
            "{} was not fsynced: {synced:?}",
            dir.display()
        );
    }
}

#[tokio::test]
async fn after_a_failed_append_of_a_chain_its_later_appends_are_refused_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, _, shard) = store_holding(dir.path(), LocalStoreOptions::default(), vec![entry(0)]).await;
    let chain = AppendChain::new();
    let chained = |i: u64, chain: &AppendChain| {
        let mut b = batch([entry(i)]);
        b.set_chain(chain.clone());
        b
    };
    assert_eq!(store.append(&s, 0, chained(1, &chain), Durability::Synced).await.unwrap().base_offset, 1);
    shard.core.faults.fail_writes.store(1, Ordering::SeqCst);
    assert!(store.append(&s, 0, chained(2, &chain), Durability::Synced).await.is_err());
    assert!(chain.is_broken());
    // The disk works again, but the chain's next append would leave a hole where 2 failed.
    let err = store.append(&s, 0, chained(3, &chain), Durability::Synced).await.unwrap_err();
    assert!(err.to_string().contains("an earlier append of its chain failed"), "{err}");
    // A new chain, and appends of none, are written.
    let fresh = AppendChain::new();
    assert_eq!(store.append(&s, 0, chained(4, &fresh), Durability::Synced).await.unwrap().base_offset, 2);
    assert_eq!(store.append(&s, 0, batch([entry(5)]), Durability::Written).await.unwrap().base_offset, 3);
    let kept: Vec<u64> = held(&store, &s).await.into_iter().map(|(_, e)| e.event_time_ms as u64).collect();
    assert_eq!(kept, [0, 1, 4, 5]);
    assert!(!fresh.is_broken());
}

/// All of shard 0 of `s`, read from offset `from` on in queries of `max` logs each.
async fn read_all_from(store: &LocalStore, s: &StreamId, from: u64, max: usize) -> Vec<(u64, LogEntry)> {
    let mut got = Vec::new();
    let mut q = ReadQuery::from_offset(from, max);
    loop {
        let b = store.query(s, 0, q).await.unwrap();
        let done = b.is_done(&q);
        got.extend(b.logs.into_iter().map(|l| (l.offset, l.entry)));
        if done {
            break;
        }
        q.from_offset = b.next_offset;
    }
    got
}

/// The frames of a segment file: (position, payload length, first payload byte).
fn frames_of(path: &Path) -> Vec<(usize, usize, u8)> {
    let data = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break; // direct-write padding
        }
        out.push((pos, len, data[pos + 8]));
        pos += 8 + len;
    }
    out
}

#[tokio::test]
async fn an_append_is_one_block_frame_readable_from_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    store.append(&s, 0, batch((0..7).map(entry)), Durability::Synced).await.unwrap();
    store.append(&s, 0, batch((7..8).map(entry)), Durability::Written).await.unwrap();
    store.append(&s, 0, batch((8..20).map(entry)), Durability::Synced).await.unwrap();
    let all = expected(0..20);
    for from in 0..21u64 {
        for max in [1, 3, 100] {
            assert_eq!(read_all_from(&store, &s, from, max).await, all[from as usize..], "from {from}, max {max}");
        }
    }
    // Bounded by offsets, from inside a block to inside another.
    let mut q = ReadQuery::from_offset(3, 100);
    q.to_offset = Some(9);
    let b = store.query(&s, 0, q).await.unwrap();
    assert_eq!(b.logs.iter().map(|l| l.offset).collect::<Vec<_>>(), (3..10).collect::<Vec<_>>());
    assert!(b.is_done(&q));
    // A time window inside a block.
    let mut q = ReadQuery::from_offset(0, 100);
    q.from_time_ms = Some(2);
    q.to_time_ms = Some(4);
    let b = store.query(&s, 0, q).await.unwrap();
    assert_eq!(b.logs.iter().map(|l| l.offset).collect::<Vec<_>>(), vec![2, 3, 4]);
    store.close().await.unwrap();
    drop(store);
    let frames = frames_of(&segment(dir.path(), &s));
    assert_eq!(frames.iter().map(|f| f.2).collect::<Vec<_>>(), vec![codec::BLOCK_VERSION; 3]);
    // The same after a restart (recovery's scan) and through the read-only mode.
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    assert_eq!(read_all_from(&store, &s, 5, 4).await, all[5..]);
    let ack = store.append(&s, 0, batch([entry(20)]), Durability::Synced).await.unwrap();
    assert_eq!(ack.base_offset, 20);
    store.close().await.unwrap();
    drop(store);
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    assert_eq!(read_all_from(&reader, &s, 13, 2).await, expected(0..21)[13..]);
}

#[tokio::test]
async fn a_written_batch_lends_its_buffer_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    let big = |i: u64| LogEntry { fields: vec![(Bytes::from_static(b"n"), Bytes::from(format!("{i:0>1000}")))], ..entry(i) };
    let fill = |range: std::ops::Range<u64>| {
        let mut b = store.new_batch(&s, 300_000);
        for i in range {
            b.push(&big(i)).unwrap();
        }
        b
    };
    let first = fill(0..200);
    let at = first.bytes_ptr();
    store.append(&s, 0, first, Durability::Synced).await.unwrap();
    wait_until("the writer gives the buffer back", || store.inner.buffers.len() == 1).await;
    let second = fill(200..300);
    assert_eq!(second.bytes_ptr(), at, "the written batch's buffer is reused");
    assert_eq!(store.inner.buffers.len(), 0);
    store.append(&s, 0, second, Durability::Synced).await.unwrap();
    // What the reused buffer held before is not stored again: each log once, in order.
    let held = read_all_from(&store, &s, 0, 1000).await;
    let want: Vec<(u64, LogEntry)> = (0..300).map(|i| (i, big(i))).collect();
    assert_eq!(held, want);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_segment_of_old_frames_stays_readable_and_takes_blocks_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let path = segment(dir.path(), &s);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Five one-log frames as earlier versions wrote them.
    let mut old = Vec::new();
    for i in 0..5 {
        let mut frames = codec::bench::unsealed_old_frames(&batch([entry(i)]).into_bytes());
        codec::bench::seal_old_frames(&mut frames, i);
        old.extend_from_slice(&frames);
    }
    fs::write(&path, &old).unwrap();
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    assert_eq!(read_all_from(&store, &s, 0, 100).await, expected(0..5));
    let ack = store.append(&s, 0, batch((5..9).map(entry)), Durability::Synced).await.unwrap();
    assert_eq!(ack.base_offset, 5);
    store.append(&s, 0, batch((9..12).map(entry)), Durability::Synced).await.unwrap();
    let all = expected(0..12);
    for from in 0..12u64 {
        assert_eq!(read_all_from(&store, &s, from, 2).await, all[from as usize..], "from {from}");
    }
    store.close().await.unwrap();
    drop(store);
    let kinds: Vec<u8> = frames_of(&path).iter().map(|f| f.2).collect();
    assert_eq!(kinds, vec![2, 2, 2, 2, 2, codec::BLOCK_VERSION, codec::BLOCK_VERSION]);
    // Recovered after a restart, and read by the read-only mode.
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    for from in [0, 4, 5, 6, 11] {
        assert_eq!(read_all_from(&store, &s, from, 3).await, all[from as usize..], "from {from}");
    }
    store.close().await.unwrap();
    drop(store);
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    assert_eq!(read_all_from(&reader, &s, 3, 100).await, all[3..]);
}

/// A store whose shard 0 holds a block of `entry(0..3)`, then a block of `entry(3..8)`
/// (closed); returns the segment path and where the second block starts.
async fn two_blocks(dir: &Path) -> (StreamId, PathBuf, usize) {
    let s = StreamId::new("p", "l");
    let store = LocalStore::open(dir, LocalStoreOptions::default()).unwrap();
    store.append(&s, 0, batch((0..3).map(entry)), Durability::Synced).await.unwrap();
    store.append(&s, 0, batch((3..8).map(entry)), Durability::Synced).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let path = segment(dir, &s);
    let frames = frames_of(&path);
    assert_eq!(frames.len(), 2);
    // Without the padding of direct writes.
    let end = frames[1].0 + 8 + frames[1].1;
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(end as u64).unwrap();
    (s, path, frames[1].0)
}

#[tokio::test]
async fn a_torn_block_at_the_tail_is_cut_whole_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path, second) = two_blocks(dir.path()).await;
    let len = fs::metadata(&path).unwrap().len() as usize;
    // Torn anywhere inside the second block (its first logs may be complete in the file).
    for cut in [second + 3, second + 20, (second + len) / 2, len - 1] {
        let data = fs::read(&path).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let p2 = segment(d2.path(), &s);
        fs::create_dir_all(p2.parent().unwrap()).unwrap();
        fs::write(&p2, &data[..cut]).unwrap();
        let store = LocalStore::open(d2.path(), LocalStoreOptions::default()).unwrap();
        assert_eq!(read_all_from(&store, &s, 0, 100).await, expected(0..3), "cut at {cut}");
        assert_eq!(fs::metadata(&p2).unwrap().len() as usize, second, "cut at {cut}");
        let ack = store.append(&s, 0, batch([entry(50)]), Durability::Synced).await.unwrap();
        assert_eq!(ack.base_offset, 3);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_bit_flip_inside_a_block_is_detected_and_the_block_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path, second) = two_blocks(dir.path()).await;
    let mut data = fs::read(&path).unwrap();
    // In the content of a log in the middle of the second block: still well formed.
    let at = second + (data.len() - second) / 2;
    data[at] ^= 0x01;
    fs::write(&path, &data).unwrap();
    // The read-only mode sees the block as not (yet) valid, and only what precedes it.
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    assert_eq!(read_all_from(&reader, &s, 0, 100).await, expected(0..3));
    drop(reader);
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    assert_eq!(read_all_from(&store, &s, 0, 100).await, expected(0..3));
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, second);
    let ack = store.append(&s, 0, batch([entry(9)]), Durability::Synced).await.unwrap();
    assert_eq!(ack.base_offset, 3);
}

#[tokio::test]
async fn the_log_size_limit_is_still_per_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let one = batch([entry(0)]).largest_entry_bytes();
    let opts = LocalStoreOptions { max_entry_bytes: one + 8, ..Default::default() };
    let store = LocalStore::open(dir.path(), opts).unwrap();
    // A block far larger than the limit, of logs within it.
    let ack = store.append(&s, 0, batch((0..100).map(entry)), Durability::Synced).await.unwrap();
    assert_eq!(ack.count, 100);
    let big = LogEntry { fields: vec![(Bytes::from_static(b"n"), Bytes::from(vec![b'x'; 100]))], ..entry(1) };
    let err = store.append(&s, 0, batch([big]), Durability::Synced).await.unwrap_err();
    assert!(matches!(err, StorageError::EntryTooLarge { .. }), "{err:?}");
}

/// A store whose flush policy fsyncs 20 ms after a write, with shard 0 of `p/l` holding
/// `entry(0)` (synced).
async fn store_with_policy_sync(dir: &Path) -> (LocalStore, StreamId, u64, Arc<Shard>) {
    let opts = LocalStoreOptions {
        flush_interval: Some(std::time::Duration::from_millis(20)),
        ..Default::default()
    };
    store_holding(dir, opts, vec![entry(0)]).await
}

/// [`store_with_policy_sync`] after `entry(1)` was written, its policy fsync started and
/// stalled (until `stall_sync` is cleared).
async fn stalled_policy_sync(dir: &Path) -> (LocalStore, StreamId, Arc<Shard>) {
    let (store, s, _, shard) = store_with_policy_sync(dir).await;
    shard.core.faults.stall_sync.store(true, Ordering::SeqCst);
    store.append(&s, 0, batch([entry(1)]), Durability::Written).await.unwrap();
    wait_until("no policy fsync started", || shard.core.faults.syncing.load(Ordering::SeqCst)).await;
    (store, s, shard)
}

#[tokio::test]
async fn a_slow_policy_fsync_does_not_hold_up_the_writes_queued_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, shard) = stalled_policy_sync(dir.path()).await;
    // Written appends are answered meanwhile.
    let mut acks = Vec::new();
    for i in 2..5 {
        let append = store.append(&s, 0, batch([entry(i)]), Durability::Written);
        match tokio::time::timeout(std::time::Duration::from_secs(5), append).await {
            Ok(ack) => acks.push(ack.unwrap().base_offset),
            Err(_) => break,
        }
    }
    if acks.len() < 3 {
        // Let the writer go before failing, so the store can close.
        shard.core.faults.stall_sync.store(false, Ordering::SeqCst);
        panic!("a written append waited for the policy fsync (answered: {acks:?})");
    }
    assert_eq!(acks, [2, 3, 4]);
    // A synced one waits for it (and then for its own).
    let synced = tokio::spawn({
        let store = Arc::new(store);
        let s = s.clone();
        async move {
            let r = store.append(&s, 0, batch([entry(5)]), Durability::Synced).await;
            (r, store)
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!synced.is_finished(), "synced before the policy fsync ended");
    shard.core.faults.stall_sync.store(false, Ordering::SeqCst);
    let (r, store) = synced.await.unwrap();
    assert_eq!(r.unwrap().base_offset, 5);
    assert_eq!(held(&store, &s).await.len(), 6);
}

#[tokio::test]
async fn a_failed_policy_fsync_cuts_the_shard_back_to_its_last_good_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, good_len, shard) = store_with_policy_sync(dir.path()).await;
    shard.core.faults.fail_syncs.store(1, Ordering::SeqCst);
    store.append(&s, 0, batch([entry(1)]), Durability::Written).await.unwrap();
    // The policy's fsync fails in the background; the next request finds the fault, and the
    // shard reopens from disk without what that fsync was to cover (as a power loss would).
    wait_until("no policy fsync ran", || shard.core.faults.fail_syncs.load(Ordering::SeqCst) == 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let ack = store.append(&s, 0, batch([entry(2)]), Durability::Synced).await.unwrap();
    assert_eq!(ack.base_offset, 1, "entry 1 was not cut off");
    let kept: Vec<i64> = held(&store, &s).await.into_iter().map(|(_, e)| e.event_time_ms).collect();
    assert_eq!(kept, [0, 2]);
    assert!(fs::metadata(segment(dir.path(), &s)).unwrap().len() >= good_len);
}

#[tokio::test]
async fn a_flush_waits_for_the_policy_fsync_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, shard) = stalled_policy_sync(dir.path()).await;
    // Nothing was written since that fsync started, but entry 1 is durable only once it ends.
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), store.flush()).await;
    shard.core.faults.stall_sync.store(false, Ordering::SeqCst);
    assert!(early.is_err(), "flushed while the fsync covering entry 1 was still running");
    store.flush().await.unwrap();
    assert_eq!(held(&store, &s).await.len(), 2);
}

/// An entry of about 3 KiB, so that a few dozen make a group large enough to be padded.
fn big_entry(i: u64) -> LogEntry {
    let mut e = entry(i);
    e.fields.push((Bytes::from_static(b"body"), Bytes::from(vec![b'a' + (i % 26) as u8; 3000])));
    e
}

#[tokio::test]
async fn large_direct_writes_end_in_padding_frames_that_readers_and_recovery_skip() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    // Large (padded), small (not padded, so the next large one starts inside a block), large.
    let sizes = [60u64, 3, 61, 45, 1];
    let mut n = 0;
    for (i, &count) in sizes.iter().enumerate() {
        let durability = if i % 2 == 0 { Durability::Written } else { Durability::Synced };
        let ack = store.append(&s, 0, batch((n..n + count).map(big_entry)), durability).await.unwrap();
        assert_eq!(ack.base_offset, n);
        n += count;
    }
    let data_len = store.shard(&s, 0, false).await.unwrap().unwrap().core.view().last().unwrap().len;
    let want: Vec<(u64, LogEntry)> = (0..n).map(|i| (i, big_entry(i))).collect();
    for from in [0, 1, 59, 60, 62, 63, 100, 123, 124, 169, 170] {
        assert_eq!(read_all_from(&store, &s, from, 7).await, want[from as usize..], "from {from}");
    }
    store.close().await.unwrap();
    drop(store);
    let path = segment(dir.path(), &s);
    let frames = frames_of(&path);
    let kinds: Vec<u8> = frames.iter().map(|f| f.2).collect();
    let file_len = fs::metadata(&path).unwrap().len();
    let probe = dir.path().join("probe");
    fs::write(&probe, b"").unwrap();
    if direct::DirectFile::open(&probe).unwrap().is_some() {
        // Direct I/O: each large group is followed by padding up to a block boundary.
        let (b, p) = (codec::BLOCK_VERSION, codec::PAD_VERSION);
        assert_eq!(kinds, vec![b, p, b, b, p, b, p, b], "frames {frames:?}");
        for (i, f) in frames.iter().enumerate() {
            if f.2 == p {
                assert_eq!((f.0 + 8 + f.1) % direct::BLOCK, 0, "padding frame {i} ends off a block boundary");
            }
        }
    } else {
        eprintln!("the temp dir's filesystem does not do direct I/O: no padding to check");
        assert!(kinds.iter().all(|&k| k == codec::BLOCK_VERSION));
    }
    assert!(data_len <= file_len);
    // After a restart (recovery's scan) appends continue at the next offset, and the
    // read-only mode reads the same.
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    assert_eq!(read_all_from(&store, &s, 0, 1000).await, want);
    let ack = store.append(&s, 0, batch([big_entry(n)]), Durability::Synced).await.unwrap();
    assert_eq!(ack.base_offset, n);
    store.close().await.unwrap();
    drop(store);
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    let all: Vec<(u64, LogEntry)> = (0..=n).map(|i| (i, big_entry(i))).collect();
    assert_eq!(read_all_from(&reader, &s, 61, 5).await, all[61..]);
}

/// Reads back the packed logs of the tests: `u64` numbers, each the log `entry(n)` with the
/// source, arrival time and tag of its packed block.
struct Numbers;

/// The packing [`Numbers`] reads.
const NUMBERS: u8 = 9;

impl crate::Unpack for Numbers {
    fn unpack(&self, p: &crate::Packed<'_>, out: &mut EntryBatch) -> Result<(), String> {
        if p.packing != NUMBERS {
            return Err(format!("unknown packing {}", p.packing));
        }
        for (i, n) in p.bytes.chunks(8).enumerate() {
            let n = u64::from_le_bytes(n.try_into().map_err(|_| "a partial number")?);
            let tag = (i == 0).then_some(p.tag).flatten();
            out.push(&packed_entry(n, p.arrival_time_ms, p.source, tag)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn packed_entry(n: u64, arrival: i64, source: &[u8], tag: Option<&[u8]>) -> LogEntry {
    LogEntry {
        arrival_time_ms: arrival,
        source: Bytes::copy_from_slice(source),
        tag: tag.map(Bytes::copy_from_slice),
        ..entry(n)
    }
}

const PACKED_SOURCE: &[u8] = b"10.0.0.2:7";

/// A batch of `store` holding `numbers` packed (arrival time 1000, tag `t` on the first).
fn packed(store: &LocalStore, s: &StreamId, numbers: std::ops::Range<u64>) -> EntryBatch {
    let mut b = store.new_batch(s, 64);
    assert!(b.can_pack());
    let bytes: Vec<u8> = numbers.clone().flat_map(u64::to_le_bytes).collect();
    b.pack(&crate::PackedLogs {
        packing: NUMBERS,
        count: (numbers.end - numbers.start) as u32,
        min_event_time_ms: numbers.start as i64,
        max_event_time_ms: numbers.end as i64 - 1,
        arrival_time_ms: 1000,
        source: PACKED_SOURCE,
        tag: Some(b"t"),
        largest_entry_bytes: 100,
        bytes: &[&bytes],
    })
    .unwrap();
    assert!(!b.can_pack());
    assert_eq!(b.len() as u64, numbers.end - numbers.start);
    b
}

fn packed_store(dir: &Path) -> LocalStore {
    let store = LocalStore::open(dir, LocalStoreOptions::default()).unwrap();
    assert!(store.set_unpacker(Arc::new(Numbers)));
    store
}

/// What a shard holding frames 0..3, packed 3..10, frames 10..12 and packed 12..20 reads back.
fn mixed_expected() -> Vec<(u64, LogEntry)> {
    (0..20)
        .map(|n| match n {
            3 | 12 => (n, packed_entry(n, 1000, PACKED_SOURCE, Some(b"t"))),
            3..10 | 12..20 => (n, packed_entry(n, 1000, PACKED_SOURCE, None)),
            _ => (n, entry(n)),
        })
        .collect()
}

async fn append_mixed(store: &LocalStore, s: &StreamId) {
    store.append(s, 0, batch((0..3).map(entry)), Durability::Synced).await.unwrap();
    store.append(s, 0, packed(store, s, 3..10), Durability::Written).await.unwrap();
    store.append(s, 0, batch((10..12).map(entry)), Durability::Written).await.unwrap();
    let ack = store.append(s, 0, packed(store, s, 12..20), Durability::Synced).await.unwrap();
    assert_eq!((ack.base_offset, ack.count), (12, 8));
}

#[tokio::test]
async fn packed_logs_are_one_frame_read_back_through_the_unpacker_from_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let store = packed_store(dir.path());
    append_mixed(&store, &s).await;
    let all = mixed_expected();
    for from in 0..21u64 {
        for max in [1, 3, 100] {
            assert_eq!(read_all_from(&store, &s, from, max).await, all[from as usize..], "from {from}, max {max}");
        }
    }
    // A time window and an offset bound inside packed blocks.
    let mut q = ReadQuery::from_offset(0, 100);
    q.from_time_ms = Some(5);
    q.to_time_ms = Some(13);
    q.to_offset = Some(12);
    let b = store.query(&s, 0, q).await.unwrap();
    assert_eq!(b.logs.iter().map(|l| l.offset).collect::<Vec<_>>(), (5..13).collect::<Vec<_>>());
    store.close().await.unwrap();
    drop(store);
    let frames = frames_of(&segment(dir.path(), &s));
    let kinds = [codec::BLOCK_VERSION, codec::PACKED_VERSION];
    assert_eq!(frames.iter().map(|f| f.2).collect::<Vec<_>>(), [kinds, kinds].concat());
    // The same after a restart (recovery's scan) and through the read-only mode.
    let store = packed_store(dir.path());
    assert_eq!(read_all_from(&store, &s, 4, 5).await, all[4..]);
    let ack = store.append(&s, 0, batch([entry(20)]), Durability::Synced).await.unwrap();
    assert_eq!(ack.base_offset, 20);
    store.close().await.unwrap();
    drop(store);
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    // Without an unpacker, what precedes the first packed block reads, and then an error.
    assert_eq!(reader.read(&s, 0, 0, 3).await.unwrap().len(), 3);
    let err = reader.read(&s, 0, 0, 4).await.unwrap_err();
    assert!(err.to_string().contains("nothing to read them with"), "{err}");
    assert!(reader.set_unpacker(Arc::new(Numbers)));
    assert!(!reader.set_unpacker(Arc::new(Numbers)));
    let mut want = all;
    want.push((20, entry(20)));
    assert_eq!(read_all_from(&reader, &s, 11, 2).await, want[11..]);
}

#[tokio::test]
async fn only_a_store_with_an_unpacker_makes_batches_that_take_packed_logs() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let store = LocalStore::open(dir.path(), LocalStoreOptions { max_entry_bytes: 1000, ..Default::default() }).unwrap();
    assert!(!store.packs(&s));
    let mut b = store.new_batch(&s, 64);
    assert!(!b.can_pack());
    let logs = crate::PackedLogs {
        packing: NUMBERS,
        count: 1,
        min_event_time_ms: 0,
        max_event_time_ms: 0,
        arrival_time_ms: 1,
        source: b"",
        tag: None,
        largest_entry_bytes: 1000,
        bytes: &[&[0; 8]],
    };
    assert!(matches!(b.pack(&logs), Err(StorageError::Io(_))));
    assert!(b.is_empty() && b.bytes_len() == 0);
    assert!(EntryBatch::new(1000).pack(&logs).is_err(), "a batch not made by the store");
    store.set_unpacker(Arc::new(Numbers));
    assert!(store.packs(&s));
    let mut b = store.new_batch(&s, 64);
    let too_large = crate::PackedLogs { largest_entry_bytes: 1001, ..logs };
    assert!(matches!(b.pack(&too_large), Err(StorageError::EntryTooLarge { size: 1001, limit: 1000 })));
    assert!(matches!(b.pack(&crate::PackedLogs { count: 0, ..logs }), Err(StorageError::Io(_))));
    assert!(b.can_pack(), "a refused pack leaves the batch empty");
    b.pack(&logs).unwrap();
    assert!(b.into_entries().is_err(), "packed logs are read back by the store only");
    // A batch with entries written one by one takes no packed logs.
    let mut b = store.new_batch(&s, 64);
    b.push(&entry(1)).unwrap();
    assert!(!b.can_pack() && b.pack(&logs).is_err());
}

#[tokio::test]
async fn a_torn_packed_block_at_the_tail_is_cut_whole_and_an_unpacker_that_miscounts_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let store = packed_store(dir.path());
    store.append(&s, 0, batch((0..3).map(entry)), Durability::Synced).await.unwrap();
    store.append(&s, 0, packed(&store, &s, 3..10), Durability::Synced).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let path = segment(dir.path(), &s);
    let frames = frames_of(&path);
    let (second, end) = (frames[1].0, frames[1].0 + 8 + frames[1].1);
    let data = fs::read(&path).unwrap();
    for cut in [second + 5, second + 40, end - 1] {
        fs::write(&path, &data[..cut]).unwrap();
        let store = packed_store(dir.path());
        assert_eq!(read_all_from(&store, &s, 0, 100).await, expected(0..3), "cut at {cut}");
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, second, "cut at {cut}");
        store.close().await.unwrap();
    }
    fs::write(&path, &data[..end]).unwrap();

    /// Gives one log fewer than its block holds.
    struct Short;
    impl crate::Unpack for Short {
        fn unpack(&self, p: &crate::Packed<'_>, out: &mut EntryBatch) -> Result<(), String> {
            let short = crate::Packed { bytes: p.bytes.slice(8..), ..p.clone() };
            Numbers.unpack(&short, out)
        }
    }
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    reader.set_unpacker(Arc::new(Short));
    let err = reader.read(&s, 0, 0, 100).await.unwrap_err();
    assert!(err.to_string().contains("did not give the 7 logs of its count"), "{err}");
}

#[tokio::test]
async fn a_query_going_on_inside_a_packed_block_does_not_unpack_it_again() {
    /// [`Numbers`], counting its unpacks.
    #[derive(Default)]
    struct Counted(std::sync::atomic::AtomicUsize);
    impl crate::Unpack for Counted {
        fn unpack(&self, p: &crate::Packed<'_>, out: &mut EntryBatch) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Numbers.unpack(p, out)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("p", "l");
    let counted = Arc::new(Counted::default());
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    assert!(store.set_unpacker(counted.clone()));
    append_mixed(&store, &s).await;
    let all = mixed_expected();
    // Two packed blocks, read a log or three a query: each is unpacked once.
    for max in [1, 3] {
        counted.0.store(0, Ordering::Relaxed);
        assert_eq!(read_all_from(&store, &s, 0, max).await, all, "max {max}");
        assert_eq!(counted.0.load(Ordering::Relaxed), 2, "max {max}");
    }
    // A read that passes a block's end lets it go: reading it again unpacks it again.
    counted.0.store(0, Ordering::Relaxed);
    assert_eq!(read_all_from(&store, &s, 3, 100).await, all[3..]);
    assert_eq!(read_all_from(&store, &s, 4, 100).await, all[4..]);
    assert_eq!(counted.0.load(Ordering::Relaxed), 4);
}
