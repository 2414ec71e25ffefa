//! The shard writer threads run at nice -5 where the process may lower a nice value. In a
//! test binary of its own, so that no other test's writer threads are around.

use std::fs;

use loggate_storage::local::{LocalStore, LocalStoreOptions};
use loggate_storage::{Durability, EntryBatch, LogEntry, LogStorage, StreamId};

#[tokio::test]
async fn writer_threads_run_at_a_higher_priority_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
    let s = StreamId::new("p", "l");
    for shard in 0..2 {
        let mut batch = EntryBatch::new(1 << 20);
        batch.push(&LogEntry {
            event_time_ms: 1,
            arrival_time_ms: 1,
            source: bytes::Bytes::from_static(b"127.0.0.1:1"),
            key: None,
            headers: vec![],
            fields: vec![],
            tag: None,
        })
        .unwrap();
        // Answered by the writer thread, so it has set its priority by then.
        store.append(&s, shard, batch, Durability::Written).await.unwrap();
    }
    let mut nices = Vec::new();
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let comm = fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.starts_with("loggate-wr") {
            let stat = fs::read_to_string(task.join("stat")).unwrap();
            // Field 19 of stat(5), the 17th after the parenthesised command name.
            let rest = stat.rsplit(')').next().unwrap();
            nices.push(rest.split_whitespace().nth(16).unwrap().parse::<i32>().unwrap());
        }
    }
    // Lowering a nice value needs CAP_SYS_NICE; without it writers keep the default 0.
    // SAFETY: a plain system call on a scratch thread of this test.
    let privileged = std::thread::spawn(|| unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -1) } == 0)
        .join()
        .unwrap();
    let want = if privileged { -5 } else { 0 };
    assert_eq!(nices, vec![want, want], "one writer per shard");
    store.close().await.unwrap();
}
