//! The local logstore against real files in a temporary directory.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use loggate_storage::local::{LocalStore, LocalStoreOptions};
use loggate_storage::{Durability, EntryBatch, LogEntry, LogStorage, StorageError, StreamId};

/// The entries as a batch to append (with no size limit of its own).
fn entry_batch(entries: impl IntoIterator<Item = LogEntry>) -> EntryBatch {
    let mut batch = EntryBatch::new(usize::MAX);
    for e in entries {
        batch.push(&e).unwrap();
    }
    batch
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

/// A small entry tagged with `(writer, seq)` in its fields.
fn tagged(writer: u64, seq: u64) -> LogEntry {
    LogEntry {
        event_time_ms: 1_700_000_000_000 + seq as i64,
        arrival_time_ms: 1_700_000_000_500,
        source: b(b"127.0.0.1:53211"),
        key: Some(Bytes::from(format!("k{writer}"))),
        headers: vec![],
        fields: vec![
            (b(b"writer"), Bytes::from(writer.to_string())),
            (b(b"seq"), Bytes::from(seq.to_string())),
        ],
        tag: None,
    }
}

/// Appends `tagged(0, i)` for each `i` to shard 0, one synced request each.
async fn append_each(store: &LocalStore, s: &StreamId, seqs: std::ops::Range<u64>) {
    for i in seqs {
        store
            .append(s, 0, entry_batch([tagged(0, i)]), Durability::Synced)
            .await
            .unwrap();
    }
}

fn tag_of(e: &LogEntry) -> (u64, u64) {
    let num = |i: usize| -> u64 {
        std::str::from_utf8(&e.fields[i].1)
            .unwrap()
            .parse()
            .unwrap()
    };
    (num(0), num(1))
}

fn stream() -> StreamId {
    StreamId::new("proj", "app-logs")
}

fn segment(dir: &Path, s: &StreamId, shard: u32) -> PathBuf {
    dir.join("logstores")
        .join(&s.project)
        .join(&s.logstore)
        .join(format!("shard-{shard}"))
        .join("00000000000000000000.log")
}

fn open(dir: &Path) -> LocalStore {
    LocalStore::open(dir, LocalStoreOptions::default()).unwrap()
}

#[tokio::test]
async fn round_trip_every_field_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = stream();
    let entries = vec![
        LogEntry {
            event_time_ms: -1,
            arrival_time_ms: i64::MAX,
            source: b(b"[::1]:9092"),
            key: None,
            headers: vec![
                (b(b"trace"), Some(b(b"a"))),
                (b(b"trace"), Some(b(b"b"))),
                (b(b"trace"), None),
                (b(b""), Some(b(b""))),
            ],
            fields: vec![
                (b(b"msg"), b(b"hello \xff\xfe world")),
                (b(b"\xc3\x28bad-utf8-name"), b(b"\x00\x01\x02")),
                (b(b"msg"), b(b"")),
            ],
            tag: None,
        },
        LogEntry {
            event_time_ms: 0,
            arrival_time_ms: 0,
            source: b(b""),
            key: Some(b(b"")),
            headers: vec![],
            fields: vec![],
            tag: None,
        },
        LogEntry {
            event_time_ms: i64::MIN,
            arrival_time_ms: 5,
            source: b(b"10.0.0.1:1"),
            key: Some(Bytes::from(vec![0xffu8; 3000])),
            headers: vec![(b(b"\xff"), None)],
            fields: vec![(b(b"big"), Bytes::from(vec![b'x'; 200_000]))],
            tag: None,
        },
    ];
    let ack = store
        .append(&s, 0, entry_batch(entries.clone()), Durability::Synced)
        .await
        .unwrap();
    assert_eq!((ack.base_offset, ack.count), (0, 3));

    let logs = store.read(&s, 0, 0, 100).await.unwrap();
    assert_eq!(logs.len(), 3);
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(log.offset, i as u64);
        assert_eq!(log.entry, entries[i]);
    }
    // Partial reads, reads past the end, of absent shards and streams.
    let logs = store.read(&s, 0, 1, 1).await.unwrap();
    assert_eq!((logs.len(), logs[0].offset), (1, 1));
    assert_eq!(logs[0].entry, entries[1]);
    assert!(store.read(&s, 0, 3, 10).await.unwrap().is_empty());
    assert!(store.read(&s, 0, 0, 0).await.unwrap().is_empty());
    assert!(store.read(&s, 7, 0, 10).await.unwrap().is_empty());
    assert!(store
        .read(&StreamId::new("proj", "other"), 0, 0, 10)
        .await
        .unwrap()
        .is_empty());
    // Reading an absent shard does not create it.
    assert!(!segment(dir.path(), &s, 7).parent().unwrap().exists());

    // The same after a restart.
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    let logs = store.read(&s, 0, 0, 100).await.unwrap();
    let got: Vec<_> = logs.into_iter().map(|l| l.entry).collect();
    assert_eq!(got, entries);
}

#[tokio::test]
async fn file_format_is_one_block_frame_per_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = stream();
    store
        .append(
            &s,
            3,
            entry_batch([tagged(1, 1), tagged(1, 2)]),
            Durability::Synced,
        )
        .await
        .unwrap();
    store.close().await.unwrap();
    let data = fs::read(segment(dir.path(), &s, 3)).unwrap();
    // `u32 payload_len | u32 crc32c(payload) | payload`, the payload a block: version 3,
    // u64 base offset, u32 count, then each log as `u32 len | version-2 payload` whose
    // offset is its position in the block.
    let len = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().unwrap());
    let block = &data[8..8 + len];
    assert_eq!(8 + len, data.len());
    assert_eq!(crc32c::crc32c(block), crc);
    assert_eq!(block[0], 3, "block version byte");
    assert_eq!(u64::from_le_bytes(block[1..9].try_into().unwrap()), 0, "base offset");
    assert_eq!(u32::from_le_bytes(block[9..13].try_into().unwrap()), 2, "count");
    let mut pos = 13;
    for expected_position in 0..2u64 {
        let len = u32::from_le_bytes(block[pos..pos + 4].try_into().unwrap()) as usize;
        let payload = &block[pos + 4..pos + 4 + len];
        assert_eq!(payload[0], 2, "log version byte");
        // no tag: the payload ends with a null length
        assert_eq!(&payload[len - 4..], &u32::MAX.to_le_bytes());
        assert_eq!(
            u64::from_le_bytes(payload[1..9].try_into().unwrap()),
            expected_position
        );
        pos += 4 + len;
    }
    assert_eq!(pos, block.len());
}

#[tokio::test]
async fn tags_round_trip_and_offsets_report_the_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = stream();
    assert_eq!(store.offsets(&s, 0).await.unwrap(), (0, 0));
    let mut first = tagged(1, 1);
    first.tag = Some(Bytes::from_static(b"\x00marker"));
    store
        .append(
            &s,
            0,
            entry_batch([first.clone(), tagged(1, 2)]),
            Durability::Synced,
        )
        .await
        .unwrap();
    assert_eq!(store.offsets(&s, 0).await.unwrap(), (0, 2));
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    let logs = store.read(&s, 0, 0, 10).await.unwrap();
    assert_eq!(logs[0].entry, first);
    assert_eq!(logs[1].entry.tag, None);
    assert_eq!(store.offsets(&s, 0).await.unwrap(), (0, 2));
}

#[tokio::test]
async fn offsets_are_gapless_per_shard_and_independent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s1 = stream();
    let s2 = StreamId::new("proj", "audit");
    let batch = |n: u64| (0..n).map(|i| tagged(9, i)).collect::<Vec<_>>();

    let a = store
        .append(&s1, 0, entry_batch(batch(3)), Durability::Written)
        .await
        .unwrap();
    let b_ = store
        .append(&s1, 1, entry_batch(batch(2)), Durability::Written)
        .await
        .unwrap();
    let c = store
        .append(&s1, 0, entry_batch(batch(4)), Durability::Synced)
        .await
        .unwrap();
    let d = store
        .append(&s2, 0, entry_batch(batch(1)), Durability::Written)
        .await
        .unwrap();
    let e = store
        .append(&s1, 1, entry_batch(batch(1)), Durability::Written)
        .await
        .unwrap();
    let empty = store
        .append(&s1, 0, entry_batch([]), Durability::Written)
        .await
        .unwrap();
    let f = store
        .append(&s1, 0, entry_batch(batch(1)), Durability::Written)
        .await
        .unwrap();
    assert_eq!((a.base_offset, a.count), (0, 3));
    assert_eq!((b_.base_offset, b_.count), (0, 2));
    assert_eq!((c.base_offset, c.count), (3, 4));
    assert_eq!((d.base_offset, d.count), (0, 1));
    assert_eq!((e.base_offset, e.count), (2, 1));
    assert_eq!((empty.base_offset, empty.count), (7, 0));
    assert_eq!((f.base_offset, f.count), (7, 1));

    let offsets: Vec<u64> = store
        .read(&s1, 0, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|l| l.offset)
        .collect();
    assert_eq!(offsets, (0..8).collect::<Vec<_>>());
    assert_eq!(store.read(&s1, 1, 0, 100).await.unwrap().len(), 3);
    assert_eq!(store.read(&s2, 0, 0, 100).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_get_every_entry_exactly_once() {
    const TASKS: u64 = 50;
    const PER_TASK: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let s = stream();

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut seq = 0;
            let mut i = 0u64;
            while seq < PER_TASK {
                // Batches of 1..=4 entries, every third request Synced.
                let n = (1 + (t + i) % 4).min(PER_TASK - seq);
                let entries: Vec<_> = (seq..seq + n).map(|q| tagged(t, q)).collect();
                let durability = if i.is_multiple_of(3) {
                    Durability::Synced
                } else {
                    Durability::Written
                };
                let ack = store
                    .append(&s, 0, entry_batch(entries), durability)
                    .await
                    .unwrap();
                assert_eq!(ack.count as u64, n);
                acks.push((ack, seq));
                seq += n;
                i += 1;
            }
            acks
        }));
    }
    let mut expected_at = vec![None; (TASKS * PER_TASK) as usize];
    for (t, h) in handles.into_iter().enumerate() {
        for (ack, seq) in h.await.unwrap() {
            for k in 0..ack.count as u64 {
                let slot = &mut expected_at[(ack.base_offset + k) as usize];
                assert!(slot.is_none(), "offset {} acked twice", ack.base_offset + k);
                *slot = Some((t as u64, seq + k));
            }
        }
    }
    assert!(expected_at.iter().all(Option::is_some), "offsets have gaps");

    let logs = store.read(&s, 0, 0, usize::MAX).await.unwrap();
    assert_eq!(logs.len() as u64, TASKS * PER_TASK);
    let mut seen = HashSet::new();
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(log.offset, i as u64);
        let tag = tag_of(&log.entry);
        assert_eq!(Some(tag), expected_at[i]);
        assert!(seen.insert(tag));
    }
    // Each writer's entries are in its own order.
    let mut last = vec![None; TASKS as usize];
    for log in &logs {
        let (t, q) = tag_of(&log.entry);
        assert!(last[t as usize] < Some(q));
        last[t as usize] = Some(q);
    }
    let st = store.stats();
    assert_eq!(st.appended_entries, TASKS * PER_TASK);
    assert!(st.fsyncs <= st.synced_requests);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_serves_many_synced_requests_with_one_fsync() {
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let s = stream();
    // Open the shard first so every task races on the writer, not on recovery.
    store
        .append(&s, 0, entry_batch([]), Durability::Written)
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            for q in 0..PER_TASK {
                store
                    .append(&s, 0, entry_batch([tagged(t, q)]), Durability::Synced)
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let st = store.stats();
    eprintln!("group commit: {st:?}");
    assert_eq!(st.synced_requests, TASKS * PER_TASK);
    assert!(st.fsyncs >= 1);
    assert!(
        st.fsyncs < st.synced_requests,
        "no group commit: {} fsyncs for {} synced requests",
        st.fsyncs,
        st.synced_requests
    );
    assert!(st.writes < st.append_requests);
}

#[tokio::test]
async fn written_data_is_synced_by_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = stream();
    store
        .append(&s, 0, entry_batch([tagged(0, 0)]), Durability::Written)
        .await
        .unwrap();
    assert_eq!(store.stats().fsyncs, 0);
    store.flush().await.unwrap();
    assert_eq!(store.stats().fsyncs, 1);
    // Nothing new: no second fsync.
    store.flush().await.unwrap();
    assert_eq!(store.stats().fsyncs, 1);
}

#[tokio::test]
async fn restart_reads_everything_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    {
        let store = open(dir.path());
        append_each(&store, &s, 0..10).await;
        store
            .append(&s, 2, entry_batch([tagged(2, 0)]), Durability::Written)
            .await
            .unwrap();
        store.close().await.unwrap();
        let err = store
            .append(&s, 0, entry_batch([tagged(0, 99)]), Durability::Written)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Closed), "{err:?}");
        store.close().await.unwrap();
    }
    {
        let store = open(dir.path());
        let logs = store.read(&s, 0, 0, 100).await.unwrap();
        assert_eq!(logs.len(), 10);
        for (i, l) in logs.iter().enumerate() {
            assert_eq!(tag_of(&l.entry), (0, i as u64));
        }
        let ack = store
            .append(&s, 0, entry_batch([tagged(0, 10)]), Durability::Written)
            .await
            .unwrap();
        assert_eq!(ack.base_offset, 10);
        let ack = store
            .append(&s, 2, entry_batch([tagged(2, 1)]), Durability::Written)
            .await
            .unwrap();
        assert_eq!(ack.base_offset, 1);
        // Dropped without close: writers still drain and sync before the lock is released.
    }
    let store = open(dir.path());
    assert_eq!(store.read(&s, 0, 0, 100).await.unwrap().len(), 11);
    assert_eq!(store.read(&s, 2, 0, 100).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sparse_index_reads_from_anywhere_before_and_after_restart() {
    const N: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    let store = open(dir.path());
    let mut next = 0;
    while next < N {
        let entries: Vec<_> = (next..(next + 500).min(N)).map(|i| tagged(0, i)).collect();
        next += entries.len() as u64;
        store
            .append(&s, 0, entry_batch(entries), Durability::Written)
            .await
            .unwrap();
    }
    async fn check(store: &LocalStore, s: &StreamId) {
        for from in [0, 1, 4095, 4096, 4097, 8191, 8192, 9999] {
            let logs = store.read(s, 0, from, 3).await.unwrap();
            let want: Vec<u64> = (from..(from + 3).min(N)).collect();
            let got: Vec<u64> = logs.iter().map(|l| l.offset).collect();
            assert_eq!(got, want, "from {from}");
            for l in &logs {
                assert_eq!(tag_of(&l.entry), (0, l.offset));
            }
        }
    }
    check(&store, &s).await;
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    check(&store, &s).await;
}

/// Writes 10 entries, closes, lets `damage` change the segment, reopens: expects `survivors`
/// entries and the next append at offset `survivors`, with the file cut to match.
async fn recovers_after(damage: impl FnOnce(&Path, &[u64]), survivors: u64) {
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    let path = segment(dir.path(), &s, 0);
    {
        let store = open(dir.path());
        append_each(&store, &s, 0..10).await;
        store.close().await.unwrap();
    }
    let ends = frame_ends(&path);
    assert_eq!(ends.len(), 10);
    assert_eq!(
        ends[9],
        fs::metadata(&path).unwrap().len(),
        "a closed segment ends with its last entry (no padding)"
    );
    damage(&path, &ends);
    let store = open(dir.path());
    let logs = store.read(&s, 0, 0, 100).await.unwrap();
    assert_eq!(logs.len() as u64, survivors);
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(tag_of(&l.entry), (0, i as u64));
    }
    let keep = if survivors == 0 {
        0
    } else {
        ends[survivors as usize - 1]
    };
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        keep,
        "file cut to the last good entry"
    );
    let ack = store
        .append(&s, 0, entry_batch([tagged(0, 77)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, survivors);
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    let logs = store.read(&s, 0, 0, 100).await.unwrap();
    assert_eq!(logs.len() as u64, survivors + 1);
    assert_eq!(tag_of(&logs[survivors as usize].entry), (0, 77));
}

/// Where each frame of a segment file ends (`u32 LE payload_len | u32 crc | payload`).
fn frame_ends(path: &Path) -> Vec<u64> {
    let data = fs::read(path).unwrap();
    let mut ends = Vec::new();
    let mut pos = 0usize;
    while let Some(len) = data.get(pos..pos + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > data.len() {
            break;
        }
        pos += 8 + len;
        ends.push(pos as u64);
    }
    ends
}

fn truncate_to(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip_bit(path: &Path, at: u64) {
    let mut data = fs::read(path).unwrap();
    data[at as usize] ^= 0x10;
    fs::write(path, data).unwrap();
}

#[tokio::test]
async fn torn_tail_mid_payload_is_cut() {
    recovers_after(|p, ends| truncate_to(p, ends[9] - 5), 9).await;
}

#[tokio::test]
async fn torn_tail_mid_header_is_cut() {
    recovers_after(|p, ends| truncate_to(p, ends[8] + 3), 9).await;
}

#[tokio::test]
async fn zeroed_tail_is_cut() {
    recovers_after(
        |p, _| {
            let mut f = OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(&[0u8; 4096]).unwrap();
        },
        10,
    )
    .await;
}

#[tokio::test]
async fn bit_flipped_last_entry_is_cut() {
    // The very last byte: part of a field value, so only the checksum can tell.
    recovers_after(|p, ends| flip_bit(p, ends[9] - 1), 9).await;
}

#[tokio::test]
async fn bit_flipped_length_of_last_entry_is_cut() {
    recovers_after(|p, ends| flip_bit(p, ends[8] + 1), 9).await;
}

#[tokio::test]
async fn corrupt_middle_entry_cuts_from_there() {
    // A byte of entry 5's event time (frame header 8 + version 1 + offset 8).
    recovers_after(|p, ends| flip_bit(p, ends[4] + 18), 5).await;
}

#[tokio::test]
async fn empty_segment_file_recovers_to_zero() {
    recovers_after(|p, _| truncate_to(p, 0), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_follows_a_writer_and_never_writes() {
    const N: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    let writer = Arc::new(open(dir.path()));
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    // Nothing there yet.
    assert!(reader.read(&s, 0, 0, 10).await.unwrap().is_empty());

    let w = writer.clone();
    let ws = s.clone();
    let appender = tokio::spawn(async move {
        let mut i = 0;
        while i < N {
            let entries: Vec<_> = (i..i + 20).map(|q| tagged(0, q)).collect();
            w.append(&ws, 0, entry_batch(entries), Durability::Written)
                .await
                .unwrap();
            i += 20;
            if i.is_multiple_of(200) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (got.len() as u64) < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader stalled at {}",
            got.len()
        );
        let logs = reader.read(&s, 0, got.len() as u64, 300).await.unwrap();
        if logs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        got.extend(logs);
    }
    appender.await.unwrap();
    for (i, l) in got.iter().enumerate() {
        assert_eq!(l.offset, i as u64);
        assert_eq!(tag_of(&l.entry), (0, i as u64));
    }

    let err = reader
        .append(&s, 0, entry_batch([tagged(0, 0)]), Durability::Written)
        .await
        .unwrap_err();
    match err {
        StorageError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::ReadOnlyFilesystem),
        other => panic!("{other:?}"),
    }

    // A partial entry at the tail is "not yet there", and the reader leaves it alone.
    writer.close().await.unwrap();
    let path = segment(dir.path(), &s, 0);
    let good_len = fs::metadata(&path).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 5]).unwrap();
    let logs = reader.read(&s, 0, N - 5, 100).await.unwrap();
    assert_eq!(logs.len(), 5);
    assert!(reader.read(&s, 0, N, 100).await.unwrap().is_empty());
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len + 10);

    // A writer restarting truncates it; the reader carries on.
    drop(writer);
    let writer = open(dir.path());
    writer
        .append(&s, 0, entry_batch([tagged(0, N)]), Durability::Synced)
        .await
        .unwrap();
    let logs = reader.read(&s, 0, N, 100).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(tag_of(&logs[0].entry), (0, N));
}

#[tokio::test]
async fn oversize_entry_is_rejected_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(
        dir.path(),
        LocalStoreOptions {
            max_entry_bytes: 1024,
            ..Default::default()
        },
    )
    .unwrap();
    let s = stream();
    let mut big = tagged(0, 0);
    big.fields.push((b(b"blob"), Bytes::from(vec![0u8; 2000])));
    let err = store
        .append(&s, 0, entry_batch([tagged(0, 1), big]), Durability::Synced)
        .await
        .unwrap_err();
    match err {
        StorageError::EntryTooLarge { size, limit } => {
            assert!(size > 2000);
            assert_eq!(limit, 1024);
        }
        other => panic!("{other:?}"),
    }
    let ack = store
        .append(&s, 0, entry_batch([tagged(0, 1)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 0);
}

#[tokio::test]
async fn unsafe_names_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (project, logstore) in [
        ("..", "x"),
        ("p", ".."),
        ("a/b", "x"),
        ("", "x"),
        ("p", "a\0b"),
    ] {
        let s = StreamId::new(project, logstore);
        let err = store
            .append(&s, 0, entry_batch([tagged(0, 0)]), Durability::Written)
            .await
            .unwrap_err();
        let bad = err.invalid_name().unwrap_or_else(|| panic!("{err:?}"));
        assert!(bad.name == project || bad.name == logstore);
        assert!(
            matches!(&err, StorageError::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput)
        );
        assert!(store
            .read(&s, 0, 0, 1)
            .await
            .unwrap_err()
            .invalid_name()
            .is_some());
    }
    // Nothing was created outside (or inside) the logstores dir.
    let mut created: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    created.sort();
    assert_eq!(created, ["logstores", "logstores.lock"]);
    assert_eq!(
        fs::read_dir(dir.path().join("logstores")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn one_writer_per_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let err = LocalStore::open(dir.path(), LocalStoreOptions::default())
        .err()
        .expect("second writer must be refused");
    assert!(matches!(err, StorageError::Io(ref e) if e.kind() == std::io::ErrorKind::WouldBlock));
    assert!(LocalStore::open_read_only(dir.path()).is_ok());
    first.close().await.unwrap();
    drop(first);
    assert!(LocalStore::open(dir.path(), LocalStoreOptions::default()).is_ok());
    assert!(LocalStore::open_read_only(&dir.path().join("missing")).is_err());
}

/// Copies every file under `from` to `to` (a snapshot of a live store: what a crash leaves).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn direct_write_padding_reads_as_the_end_of_data_live_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    let store = open(dir.path());
    append_each(&store, &s, 0..10).await;
    let path = segment(dir.path(), &s, 0);
    let live_len = fs::metadata(&path).unwrap().len();
    let data_len = *frame_ends(&path).last().unwrap();
    // With direct I/O the live file is padded to a block; without it, it is not.
    assert!(live_len == data_len || (live_len.is_multiple_of(4096) && live_len > data_len));
    // A reader of the live store sees every entry and nothing more.
    let reader = LocalStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.read(&s, 0, 0, 100).await.unwrap().len(), 10);

    // What a crash leaves: the padded file. It recovers every entry, cut to the data.
    let crashed = dir.path().join("crashed");
    copy_tree(&dir.path().join("logstores"), &crashed.join("logstores"));
    store.close().await.unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), data_len);
    let store = open(&crashed);
    let logs = store.read(&s, 0, 0, 100).await.unwrap();
    let got: Vec<_> = logs.iter().map(|l| tag_of(&l.entry)).collect();
    assert_eq!(got, (0..10).map(|i| (0, i)).collect::<Vec<_>>());
    assert_eq!(fs::metadata(segment(&crashed, &s, 0)).unwrap().len(), data_len);
    let ack = store
        .append(&s, 0, entry_batch(vec![tagged(0, 10)]), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, 10);
}
