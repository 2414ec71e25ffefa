//! Coalesced inserts: appends from every connection are gathered into one INSERT per
//! window, and each append is answered once the insert holding it has succeeded.
//!
//! Each insert has a random insert id, in every row and as the statement's `query_id`.
//! When its outcome is unknown (no answer, an error answer), the insert is not simply sent
//! again: first the store asks ClickHouse whether the statement is still running (a query
//! id runs at most once at a time, so a resent insert cannot overlap it), then which of the
//! insert's rows exist, and only the missing ones are sent again, under the same id. An
//! insert that certainly did not run (no connection could be made, and nothing was sent
//! before) fails its appends at once with [`StorageError::Unavailable`]: nothing is stored,
//! and the producers retry. While an insert whose outcome is unknown waits for ClickHouse to
//! answer its checks, the appends that arrive meanwhile are failed the same way instead of
//! queueing behind it (their producers would otherwise hear nothing until ClickHouse is back
//! or their request times out, and a non-idempotent producer's retry after a timeout is
//! stored twice).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::http::{quote, HttpError};
use super::rows::{self, BatchColumns};
use super::{ClickHouseStats, Shared};
use crate::{AppendAck, EntryBatch, StorageError, StreamId};

/// One append waiting for its insert.
pub(crate) struct Pending {
    pub stream: StreamId,
    pub shard: u32,
    pub retention_hours: u32,
    pub batch_id: u64,
    pub entries: EntryBatch,
    pub reply: oneshot::Sender<Result<AppendAck, StorageError>>,
    /// When it was queued: an append still not in an insert after `enqueue_timeout` (the
    /// inserts before it are stuck) fails instead, so its producer's retry is not raced by
    /// a late insert of the same logs.
    pub queued_at: Instant,
    /// The append's share of the pending-bytes budget, released when it is answered.
    pub _permit: OwnedSemaphorePermit,
}

/// Batch ids: unique across nodes and ordered by time to the second, so that reading a
/// logstore by offset follows the order logs arrived in whichever node took them. An id is
/// `second << 32 | node << 24 | n`, where `n` counts this node's logs within that second;
/// a batch's logs are `id..id + count` and never cross into the next slot: when a second's
/// 16 M slots are used up, the node moves on to the next second's (and stays ahead of the
/// clock until it catches up), so ids never repeat, across restarts too unless a node took
/// more than 16 M logs a second.
pub(crate) struct BatchIds {
    node: u64,
    last: AtomicU64,
}

const SLOT_BITS: u32 = 24;
/// Where the second starts in an id.
pub(crate) const SECOND_SHIFT: u32 = 32;
const SLOT_LOGS: u64 = 1 << SLOT_BITS;

impl BatchIds {
    pub(crate) fn new(node_id: u16) -> Self {
        BatchIds { node: u64::from(node_id & 0xff) << SLOT_BITS, last: AtomicU64::new(0) }
    }

    /// The id of a batch of `count` logs (its logs are `id..id + count`; `count` is at most
    /// 16 M, a larger batch gets a slot to itself).
    pub(crate) fn next(&self, count: u32) -> u64 {
        let count = u64::from(count).min(SLOT_LOGS);
        let second = (crate::now_ms().max(0) as u64 / 1000) & ((1 << 31) - 1);
        // `last` is the next free (second, n) as `second << 32 | n`.
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let from = last.max(second << SECOND_SHIFT);
            let (mut s, mut n) = (from >> SECOND_SHIFT, from & ((1 << SECOND_SHIFT) - 1));
            if n + count > SLOT_LOGS {
                s += 1;
                n = 0;
            }
            let next = (s << SECOND_SHIFT) | (n + count);
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (s << SECOND_SHIFT) | self.node | n,
                Err(seen) => last = seen,
            }
        }
    }
}

/// Longest wait between attempts of an insert whose outcome is unknown.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Gathers appends into inserts until the queue closes; then inserts what is left.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let opts = &shared.opts;
    let expired = |p: &Pending| p.queued_at.elapsed() > opts.enqueue_timeout;
    while let Some(first) = rx.recv().await {
        if expired(&first) {
            fail_expired(&shared, first);
            continue;
        }
        let window_end = tokio::time::Instant::now() + opts.insert_window;
        let (mut rows, mut bytes) = (first.entries.len(), first.entries.bytes_len());
        let mut group = vec![first];
        while rows < opts.insert_max_rows && bytes < opts.insert_max_bytes {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(p) if expired(&p) => fail_expired(&shared, p),
                    Some(p) => {
                        rows += p.entries.len();
                        bytes += p.entries.bytes_len();
                        group.push(p);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(window_end) => break,
            }
        }
        insert_group(&shared, group, &mut rx).await;
    }
}

/// The statement of an insert (the data is the body).
fn insert_statement(target: &str) -> String {
    let columns: Vec<&str> = rows::BATCH_COLUMNS.iter().chain(rows::ROW_COLUMNS).copied().collect();
    format!("INSERT INTO {target} ({}) FORMAT RowBinary", columns.join(", "))
}

/// The body of an insert: every row of `group` whose (batch id, position) `keep` accepts.
fn insert_body(
    shared: &Shared,
    group: &[Pending],
    insert_id: u64,
    mut keep: impl FnMut(u64, u32) -> bool,
) -> (Vec<u8>, usize) {
    let size: usize = group.iter().map(|p| p.entries.bytes_len() + p.entries.len() * 96).sum();
    let mut body = Vec::with_capacity(size);
    let mut written = 0;
    for p in group {
        let mark = p.entries.producer();
        let shared_columns = BatchColumns {
            project: &p.stream.project,
            logstore: &p.stream.logstore,
            shard: p.shard,
            retention_hours: p.retention_hours,
            node_id: shared.opts.node_id,
            insert_id,
            batch_id: p.batch_id,
            producer_id: mark.map_or(-1, |m| m.producer_id),
            producer_epoch: mark.map_or(-1, |m| m.epoch),
            producer_lane: mark.map_or(0, |m| m.lane),
            sequence_first: mark.map_or(-1, |m| m.first_seq),
            sequence_last: mark.map_or(-1, |m| m.last_seq),
        };
        written += rows::write_insert_rows(&mut body, &shared_columns, p.entries.bytes(), |pos| keep(p.batch_id, pos));
    }
    (body, written)
}

/// What is known of an insert's rows.
enum Outcome {
    /// Certainly not stored (nothing was ever sent, or a check found none).
    NotStored,
    /// Some or all may be stored: check before sending again.
    Unknown,
}

/// Inserts `group` and answers its appends. While its outcome is being checked and
/// ClickHouse does not answer the checks, appends arriving on `rx` are failed at once
/// (nothing of them was sent, so the producers may retry) instead of waiting behind it.
async fn insert_group(shared: &Shared, group: Vec<Pending>, rx: &mut mpsc::UnboundedReceiver<Pending>) {
    let insert_id = loop {
        let id: u64 = rand::random();
        if id != 0 {
            break id;
        }
    };
    let query_id = format!("loggate-{insert_id:016x}");
    let statement = insert_statement(&shared.target);
    let total: usize = group.iter().map(|p| p.entries.len()).sum();
    let (min_arrival, max_arrival) = arrival_range(&group);
    let started = Instant::now();
    let (body, _) = insert_body(shared, &group, insert_id, |_, _| true);
    let mut body = Bytes::from(body);
    let mut outcome = Outcome::NotStored;
    let mut backoff = Duration::from_millis(100);
    let mut url = 0usize;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let params = [("query_id", query_id.as_str()), ("insert_distributed_sync", "1")];
        match shared.client.insert(url, &statement, &params, body.clone()).await {
            Ok(_) => {
                tracing::debug!(rows = total, attempt, elapsed_ms = started.elapsed().as_millis() as u64, "ClickHouse insert");
                return answer_all(shared, group, Ok(()));
            }
            Err(e @ HttpError::NotSent { .. }) if matches!(outcome, Outcome::NotStored) => {
                // Nothing of this insert reached any server: fail fast, nothing is stored.
                tracing::warn!(error = %e, rows = total, "ClickHouse unreachable; the insert's producers get a retriable error");
                return answer_all(shared, group, Err(e.to_string()));
            }
            Err(e) => {
                ClickHouseStats::add(&shared.stats.insert_errors, 1);
                shared.stats.failing.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, rows = total, attempt, "ClickHouse insert failed; checking what it stored before retrying");
                if !matches!(e, HttpError::NotSent { .. }) {
                    outcome = Outcome::Unknown;
                }
            }
        }
        // Outcome unknown: find out what is stored, then send only what is missing.
        let mut unreachable = false;
        loop {
            pause(shared, backoff, if unreachable { Some(&mut *rx) } else { None }).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            ClickHouseStats::add(&shared.stats.checks, 1);
            match stored_rows(shared, url, &query_id, insert_id, min_arrival, max_arrival).await {
                Ok(Stored::Running) => {
                    unreachable = false;
                    continue;
                }
                Ok(Stored::Rows(present)) => {
                    if present.len() >= total {
                        tracing::info!(rows = total, attempt, "ClickHouse insert found complete on check");
                        return answer_all(shared, group, Ok(()));
                    }
                    if present.is_empty() {
                        outcome = Outcome::NotStored;
                    }
                    let (missing, n) =
                        insert_body(shared, &group, insert_id, |batch, pos| !present.contains(&(batch, pos)));
                    tracing::info!(stored = present.len(), resending = n, "ClickHouse insert checked");
                    body = Bytes::from(missing);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "ClickHouse insert check failed; trying the next URL");
                    url += 1;
                    unreachable = true;
                }
            }
        }
        // An insert known to have stored nothing may fail its producers instead of waiting.
        if matches!(outcome, Outcome::NotStored) && started.elapsed() > shared.opts.endpoint.timeout {
            return answer_all(shared, group, Err("ClickHouse inserts keep failing".into()));
        }
    }
}

/// Waits `wait`; meanwhile every append arriving on `fail` (if given) is answered with
/// [`StorageError::Unavailable`] at once: ClickHouse does not answer, and the insert being
/// checked holds the queue.
async fn pause(shared: &Shared, wait: Duration, fail: Option<&mut mpsc::UnboundedReceiver<Pending>>) {
    let until = tokio::time::Instant::now() + wait;
    let Some(rx) = fail else {
        return tokio::time::sleep_until(until).await;
    };
    let mut failed = 0usize;
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(p) => {
                    failed += 1;
                    ClickHouseStats::add(&shared.stats.appends_failed, 1);
                    let _ = p.reply.send(Err(StorageError::Unavailable(
                        "ClickHouse does not answer (an earlier insert is being checked)".into(),
                    )));
                }
                // The queue is closed and empty: only this insert is left to finish.
                None => {
                    tokio::time::sleep_until(until).await;
                    break;
                }
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    if failed > 0 {
        tracing::warn!(appends = failed, "ClickHouse does not answer; new appends get a retriable error meanwhile");
    }
}

/// What a check found of an insert.
enum Stored {
    /// The statement is still running on the server.
    Running,
    /// (batch id, position) of its stored rows.
    Rows(HashSet<(u64, u32)>),
}

async fn stored_rows(
    shared: &Shared,
    url: usize,
    query_id: &str,
    insert_id: u64,
    min_arrival: i64,
    max_arrival: i64,
) -> Result<Stored, HttpError> {
    let running = shared
        .client
        .query(url, &format!("SELECT count() FROM system.processes WHERE query_id = {}", quote(query_id)), &[])
        .await?;
    if String::from_utf8_lossy(&running).trim() != "0" {
        return Ok(Stored::Running);
    }
    // The arrival range lets ClickHouse read only the partitions the rows can be in.
    let sql = format!(
        "SELECT batch_id, position FROM {} WHERE insert_id = {insert_id} \
         AND arrival_time >= toDateTime({}) AND arrival_time <= toDateTime({}) FORMAT TabSeparated",
        shared.target,
        (min_arrival.div_euclid(1000) - 1).max(0),
        max_arrival.div_euclid(1000) + 1
    );
    let text = shared.client.query(url, &sql, &[]).await?;
    let text = String::from_utf8_lossy(&text);
    let mut present = HashSet::new();
    for line in text.lines() {
        if let Some((b, p)) = line.split_once('\t') {
            if let (Ok(b), Ok(p)) = (b.parse(), p.parse()) {
                present.insert((b, p));
            }
        }
    }
    Ok(Stored::Rows(present))
}

/// The arrival times of the group's logs (from the first log of each batch: a batch's logs
/// share it).
fn arrival_range(group: &[Pending]) -> (i64, i64) {
    let mut range = (i64::MAX, i64::MIN);
    for p in group {
        if let Some(ms) = rows::first_arrival_ms(p.entries.bytes()) {
            range = (range.0.min(ms), range.1.max(ms));
        }
    }
    if range.0 > range.1 {
        (0, i64::MAX / 2)
    } else {
        range
    }
}

/// Answers an append that waited too long for its insert: nothing of it is stored.
fn fail_expired(shared: &Shared, p: Pending) {
    ClickHouseStats::add(&shared.stats.appends_failed, 1);
    let waited = p.queued_at.elapsed();
    tracing::warn!(waited_ms = waited.as_millis() as u64, logs = p.entries.len(),
        "an append waited too long for a ClickHouse insert (earlier inserts are stuck); its producer gets a retriable error");
    let _ = p.reply.send(Err(StorageError::Overloaded));
}

/// Answers every append of `group`: stored, or not stored because of `Err(why)`.
fn answer_all(shared: &Shared, group: Vec<Pending>, result: Result<(), String>) {
    let stats = &shared.stats;
    stats.failing.store(result.is_err(), std::sync::atomic::Ordering::Relaxed);
    match &result {
        Ok(()) => {
            ClickHouseStats::add(&stats.inserts, 1);
            ClickHouseStats::add(&stats.rows, group.iter().map(|p| p.entries.len() as u64).sum());
        }
        Err(_) => ClickHouseStats::add(&stats.appends_failed, group.len() as u64),
    }
    for p in group {
        let answer = match &result {
            Ok(()) => Ok(AppendAck { base_offset: p.batch_id, count: p.entries.len() as u32, start_offset: None }),
            Err(why) => Err(StorageError::Unavailable(why.clone())),
        };
        let _ = p.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_unique_across_nodes_and_ordered_by_second() {
        let (a, b) = (BatchIds::new(1), BatchIds::new(2));
        let mut ranges = Vec::new();
        for count in [1, 500, 70_000, 3] {
            for ids in [&a, &b] {
                let id = ids.next(count);
                ranges.push((id, id + u64::from(count)));
            }
        }
        ranges.sort();
        assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0), "{ranges:?}");
        // Within a node, later ids are larger; the second is in the top bits.
        let (x, y) = (a.next(1), a.next(1));
        assert!(y > x);
        let now_s = crate::now_ms() as u64 / 1000;
        assert!((x >> 32).abs_diff(now_s) <= 1);
        // A second's slots used up: the next batch takes the next second's, whole.
        let c = BatchIds::new(3);
        let first = c.next(SLOT_LOGS as u32 - 10);
        let second = c.next(20);
        assert_eq!(second >> 32, (first >> 32) + 1);
        assert_eq!(second & 0xff_ffff, 0);
        assert_eq!((second >> 24) & 0xff, 3);
    }
}
