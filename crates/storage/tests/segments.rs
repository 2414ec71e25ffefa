//! Segments, rolling, index files, retention, the flush policy and index-driven queries.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use loggate_storage::local::{LocalStore, LocalStoreOptions, ReadQuery, StreamOptions};
use loggate_storage::{Durability, EntryBatch, LogEntry, LogStorage, StreamId};

/// The entries as a batch to append (with no size limit of its own).
fn entry_batch(entries: impl IntoIterator<Item = LogEntry>) -> EntryBatch {
    let mut batch = EntryBatch::new(usize::MAX);
    for e in entries {
        batch.push(&e).unwrap();
    }
    batch
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An entry numbered `n` with the given event and arrival times.
fn entry(n: u64, event: i64, arrival: i64) -> LogEntry {
    LogEntry {
        event_time_ms: event,
        arrival_time_ms: arrival,
        source: Bytes::from_static(b"127.0.0.1:1"),
        key: None,
        headers: vec![],
        fields: vec![(Bytes::from_static(b"n"), Bytes::from(n.to_string()))],
        tag: None,
    }
}

fn n_of(e: &LogEntry) -> u64 {
    std::str::from_utf8(&e.fields[0].1)
        .unwrap()
        .parse()
        .unwrap()
}

fn stream() -> StreamId {
    StreamId::new("p", "l")
}

fn shard_dir(dir: &Path) -> PathBuf {
    dir.join("logstores/p/l/shard-0")
}

/// Sorted file names in the shard directory.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(shard_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn small_segments() -> LocalStoreOptions {
    LocalStoreOptions {
        segment_bytes: 4096,
        ..Default::default()
    }
}

/// Appends `count` entries numbered from `first`, `per_batch` at a time.
async fn fill(
    store: &LocalStore,
    first: u64,
    count: u64,
    per_batch: u64,
    event: impl Fn(u64) -> i64,
    arrival: i64,
) {
    let mut n = first;
    while n < first + count {
        let end = (n + per_batch).min(first + count);
        let batch = (n..end).map(|i| entry(i, event(i), arrival));
        let ack = store
            .append(&stream(), 0, entry_batch(batch), Durability::Written)
            .await
            .unwrap();
        assert_eq!(ack.base_offset, n);
        n = end;
    }
}

async fn all(store: &LocalStore) -> Vec<u64> {
    store
        .read(&stream(), 0, 0, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l.offset, n_of(&l.entry));
            l.offset
        })
        .collect()
}

#[tokio::test]
async fn segments_roll_by_size_and_reads_cross_them_before_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), small_segments()).unwrap();
    fill(&store, 0, 1000, 7, |i| i as i64, now_ms()).await;
    let st = store.stats();
    assert!(st.segments_rolled >= 10, "{st:?}");
    let names = files(dir.path());
    let logs: Vec<_> = names.iter().filter(|n| n.ends_with(".log")).collect();
    let indexes: Vec<_> = names.iter().filter(|n| n.ends_with(".index")).collect();
    assert_eq!(logs.len() as u64, st.segments_rolled + 1);
    // Every sealed segment has its index; the active one has none.
    assert_eq!(indexes.len(), logs.len() - 1, "{names:?}");
    assert_eq!(all(&store).await, (0..1000).collect::<Vec<_>>());
    // Reads that start inside, at the edge of, and past segments.
    for from in [0, 1, 6, 7, 500, 998, 999, 1000, 5000] {
        let got: Vec<u64> = store
            .read(&stream(), 0, from, 3)
            .await
            .unwrap()
            .iter()
            .map(|l| l.offset)
            .collect();
        assert_eq!(
            got,
            (from..(from + 3).min(1000)).collect::<Vec<_>>(),
            "from {from}"
        );
    }
    store.close().await.unwrap();
    drop(store);

    // Reopened: sealed segments come from their index files (one removed: rebuilt by a scan).
    let second_index = shard_dir(dir.path()).join(indexes[1]);
    fs::remove_file(&second_index).unwrap();
    let store = LocalStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(all(&store).await, (0..1000).collect::<Vec<_>>());
    assert!(second_index.exists(), "index rebuilt on open");
    let ack = store
        .append(
            &stream(),
            0,
            entry_batch([entry(1000, 0, now_ms())]),
            Durability::Synced,
        )
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 1000);
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    assert_eq!(
        reader
            .read(&stream(), 0, 0, usize::MAX)
            .await
            .unwrap()
            .len(),
        1001
    );
}

#[tokio::test]
async fn torn_tail_of_the_last_segment_is_cut_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LocalStore::open(dir.path(), small_segments()).unwrap();
        fill(&store, 0, 300, 5, |i| i as i64, now_ms()).await;
        store.close().await.unwrap();
    }
    let last = files(dir.path())
        .into_iter()
        .rfind(|n| n.ends_with(".log"))
        .unwrap();
    let last_base: u64 = last.trim_end_matches(".log").parse().unwrap();
    let path = shard_dir(dir.path()).join(&last);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    // The last append (a block of 5) is cut whole: it was written as one unit.
    let store = LocalStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(all(&store).await, (0..295).collect::<Vec<_>>());
    assert!(last_base <= 295);
    let ack = store
        .append(
            &stream(),
            0,
            entry_batch([entry(295, 0, now_ms())]),
            Durability::Synced,
        )
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 295);
}

#[tokio::test]
async fn segments_roll_by_age_even_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalStoreOptions {
        segment_age: Duration::from_millis(100),
        flush_interval: Some(Duration::from_millis(20)),
        ..Default::default()
    };
    let store = LocalStore::open(dir.path(), opts).unwrap();
    fill(&store, 0, 3, 3, |i| i as i64, now_ms()).await;
    assert_eq!(store.stats().segments_rolled, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().segments_rolled == 0 {
        assert!(std::time::Instant::now() < deadline, "no roll by age");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An empty active segment is never rolled again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stats().segments_rolled, 1);
    assert_eq!(
        files(dir.path())
            .iter()
            .filter(|n| n.ends_with(".log"))
            .count(),
        2
    );
    fill(&store, 3, 2, 1, |i| i as i64, now_ms()).await;
    assert_eq!(all(&store).await, (0..5).collect::<Vec<_>>());
}

fn retention(age: Option<Duration>, bytes: Option<u64>) -> LocalStoreOptions {
    LocalStoreOptions {
        segment_bytes: 4096,
        flush_interval: Some(Duration::from_millis(20)),
        streams: HashMap::from([(
            stream(),
            StreamOptions {
                retention_age: age,
                retention_bytes_per_shard: bytes,
            },
        )]),
        ..Default::default()
    }
}

fn shard_bytes(dir: &Path) -> u64 {
    files(dir)
        .iter()
        .filter(|n| n.ends_with(".log"))
        .map(|n| fs::metadata(shard_dir(dir).join(n)).unwrap().len())
        .sum()
}

#[tokio::test]
async fn retention_by_size_deletes_oldest_whole_segments_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), retention(None, Some(20_000))).unwrap();
    fill(&store, 0, 3000, 10, |i| i as i64, now_ms()).await;
    // Retention runs at least every second; wait for the tick.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let kept = all(&store).await;
    let first = kept[0];
    assert!(first > 0, "nothing deleted");
    assert_eq!(
        kept,
        (first..3000).collect::<Vec<_>>(),
        "what is kept is gapless up to the end"
    );
    let bytes = shard_bytes(dir.path());
    assert!(bytes <= 20_000, "{bytes} bytes kept");
    assert!(
        bytes > 20_000 - 4096 - 200,
        "deleted more than needed: {bytes}"
    );
    assert!(store.stats().segments_deleted > 0);
    // Every remaining segment starts where its file name says, and indexes went with their segments.
    let names = files(dir.path());
    let logs = names.iter().filter(|n| n.ends_with(".log")).count();
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".index")).count(),
        logs - 1
    );
    let first_name = names.iter().find(|n| n.ends_with(".log")).unwrap();
    assert_eq!(
        first_name.trim_end_matches(".log").parse::<u64>().unwrap(),
        first
    );

    // A reader that starts at 0 starts at the first kept offset; a limit below the active
    // segment's size still keeps the active segment.
    let batch = store
        .query(&stream(), 0, ReadQuery::from_offset(0, 1))
        .await
        .unwrap();
    assert_eq!((batch.start_offset, batch.logs[0].offset), (first, first));
    store.close().await.unwrap();
    drop(store);
    let store = LocalStore::open(dir.path(), retention(None, Some(1))).unwrap();
    store
        .append(
            &stream(),
            0,
            entry_batch([entry(3000, 0, now_ms())]),
            Durability::Synced,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let kept = all(&store).await;
    assert_eq!(*kept.last().unwrap(), 3000);
    assert_eq!(
        files(dir.path())
            .iter()
            .filter(|n| n.ends_with(".log"))
            .count(),
        1
    );
}

#[tokio::test]
async fn retention_by_age_uses_arrival_time_and_runs_without_writes() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600_000;
    {
        let store = LocalStore::open(dir.path(), small_segments()).unwrap();
        // 500 entries that arrived three hours ago, then 500 that arrived now.
        fill(&store, 0, 500, 10, |i| i as i64, now_ms() - 3 * hour).await;
        fill(&store, 500, 500, 10, |i| i as i64, now_ms()).await;
        store.close().await.unwrap();
    }
    let store = LocalStore::open(
        dir.path(),
        retention(Some(Duration::from_secs(2 * 3600)), None),
    )
    .unwrap();
    // Opening the shard (by a read) applies retention without any write.
    let first = all(&store).await[0];
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let kept = all(&store).await;
    assert!(
        kept[0] > 0 && kept[0] <= 500,
        "first kept {} (was {first})",
        kept[0]
    );
    assert_eq!(kept, (kept[0]..1000).collect::<Vec<_>>());
    assert!(store.stats().segments_deleted > 0);
}

#[tokio::test]
async fn flush_policy_syncs_written_data_by_bytes_and_by_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(
        dir.path(),
        LocalStoreOptions {
            flush_interval: None,
            flush_bytes: Some(2000),
            ..Default::default()
        },
    )
    .unwrap();
    fill(&store, 0, 5, 5, |i| i as i64, 0).await;
    assert_eq!(store.stats().fsyncs, 0, "under flush_bytes: not synced yet");
    fill(&store, 5, 50, 50, |i| i as i64, 0).await;
    // The policy's fsync runs in the background; it is counted once its outcome is taken
    // (at the next request or tick).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().fsyncs == 0 {
        assert!(std::time::Instant::now() < deadline, "over flush_bytes: never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.stats().fsyncs, 1, "over flush_bytes: synced once");
    store.close().await.unwrap();
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(
        dir.path(),
        LocalStoreOptions {
            flush_interval: Some(Duration::from_millis(50)),
            ..Default::default()
        },
    )
    .unwrap();
    fill(&store, 0, 5, 5, |i| i as i64, 0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().fsyncs == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "flush interval never synced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing new: no more syncs.
    let n = store.stats().fsyncs;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.stats().fsyncs, n);
}

#[tokio::test]
async fn time_queries_seek_with_the_index_across_segments() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalStoreOptions {
        segment_bytes: 2 << 20,
        ..Default::default()
    };
    let store = LocalStore::open(dir.path(), opts).unwrap();
    // Event time 1000 + n, except a late entry at n = 150_000 stamped with time 5.
    let time = |i: u64| if i == 150_000 { 5 } else { 1000 + i as i64 };
    fill(&store, 0, N, 5000, time, now_ms()).await;
    assert!(store.stats().segments_rolled >= 3);

    let q = |from_time: Option<i64>,
             to_time: Option<i64>,
             from_offset: u64,
             to_offset: Option<u64>| ReadQuery {
        from_offset,
        to_offset,
        from_time_ms: from_time,
        to_time_ms: to_time,
        max_entries: 10,
    };
    // Near the end: only the blocks that can hold it are read.
    let b = store
        .query(&stream(), 0, q(Some(1000 + 199_990), None, 0, None))
        .await
        .unwrap();
    let got: Vec<u64> = b.logs.iter().map(|l| l.offset).collect();
    assert_eq!(got, (199_990..200_000).collect::<Vec<_>>());
    assert!(
        b.frames_scanned < 2 * 4096 + 20,
        "scanned {} frames",
        b.frames_scanned
    );
    // A window in the middle, to_time inclusive.
    let b = store
        .query(
            &stream(),
            0,
            q(Some(1000 + 100_000), Some(1000 + 100_002), 0, None),
        )
        .await
        .unwrap();
    assert_eq!(
        b.logs.iter().map(|l| l.offset).collect::<Vec<_>>(),
        vec![100_000, 100_001, 100_002]
    );
    // The late entry is found by its own time, not by its position.
    let mut found = Vec::new();
    let mut qq = q(Some(0), Some(10), 0, None);
    loop {
        let b = store.query(&stream(), 0, qq).await.unwrap();
        found.extend(b.logs.iter().map(|l| l.offset));
        if b.is_done(&qq) {
            break;
        }
        qq.from_offset = b.next_offset;
    }
    assert_eq!(found, vec![150_000]);
    // Offsets and times together.
    let b = store
        .query(&stream(), 0, q(Some(0), None, 199_000, Some(199_004)))
        .await
        .unwrap();
    assert_eq!(b.logs.len(), 5);
    assert!(b.is_done(&q(Some(0), None, b.next_offset, Some(199_004))));
    // Seeking by offset reads only from the block holding it.
    let b = store
        .query(&stream(), 0, ReadQuery::from_offset(123_456, 3))
        .await
        .unwrap();
    assert_eq!(b.logs[0].offset, 123_456);
    assert!(b.frames_scanned <= 3);
    assert_eq!(b.end_offset, N);

    // The same through the read-only mode, which loads the index files.
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    let b = reader
        .query(&stream(), 0, q(Some(1000 + 199_990), None, 0, None))
        .await
        .unwrap();
    assert_eq!(b.logs.len(), 10);
    assert!(b.frames_scanned < 2 * 4096 + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_follows_rolls_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LocalStore::open(dir.path(), retention(None, Some(30_000))).unwrap();
    fill(&writer, 0, 10, 10, |i| i as i64, now_ms()).await;
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    let mut got = Vec::new();
    let mut next = 0;
    for round in 0..20u64 {
        fill(&writer, 10 + round * 200, 200, 20, |i| i as i64, now_ms()).await;
        loop {
            let b = reader
                .query(&stream(), 0, ReadQuery::from_offset(next, 1000))
                .await
                .unwrap();
            got.extend(b.logs.iter().map(|l| (l.offset, n_of(&l.entry))));
            let done = b.is_done(&ReadQuery::from_offset(next, 1000));
            next = b.next_offset;
            if done {
                break;
            }
        }
    }
    // Everything was seen in order (the reader kept up before retention deleted anything it
    // had not read), and the writer deleted segments meanwhile.
    assert_eq!(got.len(), 4010);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, &(o, n))| o == i as u64 && n == o));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(writer.stats().segments_deleted > 0);
    let b = reader
        .query(&stream(), 0, ReadQuery::from_offset(0, 1))
        .await
        .unwrap();
    assert!(b.start_offset > 0 && b.logs[0].offset == b.start_offset);
}

#[tokio::test]
async fn empty_segments_left_by_failed_rolls_do_not_hide_offsets_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), small_segments()).unwrap();
    fill(&store, 0, 200, 10, |n| n as i64, now_ms()).await;
    store.close().await.unwrap();
    drop(store);
    let before = files(dir.path());
    let logs: Vec<String> = before
        .iter()
        .filter(|f| f.ends_with(".log"))
        .cloned()
        .collect();
    assert!(logs.len() >= 3, "{before:?}");
    // What a roll leaves when it fails after creating its file and the shard writes on in
    // the previous segment: an empty file named by an offset that segment went on to take,
    // in the middle and at the end.
    let base_of = |name: &str| name.trim_end_matches(".log").parse::<u64>().unwrap();
    let mid = base_of(&logs[1]) + 1;
    let last = base_of(&logs[logs.len() - 1]) + 1;
    for base in [mid, last] {
        fs::write(shard_dir(dir.path()).join(format!("{base:020}.log")), b"").unwrap();
    }

    let store = LocalStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(all(&store).await, (0..200).collect::<Vec<_>>());
    // A read starting at one of their offsets finds the entry there.
    for from in [mid, last] {
        let logs = store.read(&stream(), 0, from, 1).await.unwrap();
        assert_eq!(logs.iter().map(|l| l.offset).collect::<Vec<_>>(), [from]);
    }
    assert_eq!(
        files(dir.path()),
        before,
        "the empty segments were not removed"
    );
    let ack = store
        .append(
            &stream(),
            0,
            entry_batch([entry(200, 0, now_ms())]),
            Durability::Synced,
        )
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 200);
    assert_eq!(all(&store).await, (0..201).collect::<Vec<_>>());
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_empty_newest_segment_that_follows_on_is_kept() {
    // A roll that succeeded and wrote nothing yet: the normal case, kept as it is.
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), small_segments()).unwrap();
    fill(&store, 0, 50, 10, |n| n as i64, now_ms()).await;
    store.close().await.unwrap();
    drop(store);
    fs::write(shard_dir(dir.path()).join(format!("{:020}.log", 50)), b"").unwrap();
    let before = files(dir.path());
    let store = LocalStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(all(&store).await, (0..50).collect::<Vec<_>>());
    let ack = store
        .append(
            &stream(),
            0,
            entry_batch([entry(50, 0, now_ms())]),
            Durability::Synced,
        )
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 50);
    let logs = |names: Vec<String>| -> Vec<String> {
        names.into_iter().filter(|f| f.ends_with(".log")).collect()
    };
    assert_eq!(logs(files(dir.path())), logs(before));
    store.close().await.unwrap();
}
