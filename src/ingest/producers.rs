//! Idempotent producers: producer ids, and per (producer, partition) sequence tracking so
//! that a retried batch is answered with its original offset instead of stored twice.
//!
//! The rules follow the Kafka broker: per producer and partition keep the epoch and the
//! last five batches' sequence ranges (clients keep at most five requests in flight).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loggate_storage::{AppendChain, ProducerMark};
pub use loggate_storage::PRODUCER_TAG_LEN as TAG_LEN;

use super::catalog::ValueFormat;

/// Batches remembered per producer and partition.
pub const BATCHES_KEPT: usize = 5;

/// One written idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    /// Offset the client was given for the batch's first record.
    pub base_offset: i64,
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Next in sequence (or the first of a new epoch): write it, then [`PartitionProducers::record`].
    Append,
    /// Already written: answer success with the original offset, write nothing.
    Duplicate { base_offset: i64 },
    /// Older than every remembered batch of this epoch: a duplicate whose offset is gone
    /// (DUPLICATE_SEQUENCE_NUMBER, which clients treat as success).
    OldDuplicate,
    /// A gap or a reordering (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrder,
    /// The epoch is older than the known one: the producer was fenced (INVALID_PRODUCER_EPOCH).
    StaleEpoch,
    /// Not decidable yet: the same batch is queued and not yet confirmed (a retry of it), or
    /// a queued batch of the producer failed and others are still queued behind it. Wait
    /// for [`PartitionProducers::settled`] and check again.
    InFlight,
    /// No state for this producer and a sequence other than 0 (UNKNOWN_PRODUCER_ID).
    UnknownProducer,
}

#[derive(Debug)]
struct ProducerState {
    epoch: i16,
    /// The last batches, in sequence order: written ones and, after them, those queued in
    /// storage and not yet confirmed.
    batches: VecDeque<Kept>,
    last_used: Instant,
    /// The cluster membership this state was last confirmed under (see
    /// [`PartitionProducers::confirmed_under`]).
    membership: u64,
    /// The chain the producer's batches are queued on (see [`PartitionProducers::begin`]).
    chain: AppendChain,
}

/// One remembered batch.
#[derive(Debug, Clone, Copy)]
struct Kept {
    batch: WrittenBatch,
    /// Queued in storage, not yet confirmed (its `base_offset` is not known yet).
    in_flight: bool,
}

impl ProducerState {
    fn new(epoch: i16, now: Instant) -> Self {
        ProducerState {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_KEPT),
            last_used: now,
            membership: 0,
            chain: AppendChain::new(),
        }
    }

    fn in_flight(&self, first_seq: i32, last_seq: i32) -> Option<usize> {
        self.batches.iter().position(|k| k.in_flight && k.batch.first_seq == first_seq && k.batch.last_seq == last_seq)
    }
}

/// Sequence state of every producer writing one partition, bounded in size and expiring
/// with inactivity.
#[derive(Debug)]
pub struct PartitionProducers {
    producers: HashMap<i64, ProducerState>,
    max_producers: usize,
    expiry: Duration,
    /// When expired producers were last dropped (a full pass, so not on every write).
    last_sweep: Option<Instant>,
    /// Woken whenever a queued batch is confirmed or fails (see [`SequenceCheck::InFlight`]).
    settled: Arc<tokio::sync::Notify>,
}

/// How often [`PartitionProducers::record`] sweeps out expired producers.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// `seq + 1` with Kafka's wrap from i32::MAX to 0.
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Last sequence of a batch of `count` records starting at `first` (wrapping).
pub fn last_seq(first: i32, count: i32) -> i32 {
    let last = i64::from(first) + i64::from(count) - 1;
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

impl PartitionProducers {
    pub fn new(max_producers: usize, expiry: Duration) -> Self {
        Self {
            producers: HashMap::new(),
            max_producers: max_producers.max(1),
            expiry,
            last_sweep: None,
            settled: Arc::default(),
        }
    }

    /// Decides what to do with a batch `first_seq..=last_seq` from `producer_id`/`epoch`.
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SequenceCheck {
        let Some(state) = self.producers.get(&producer_id) else {
            return if first_seq == 0 { SequenceCheck::Append } else { SequenceCheck::UnknownProducer };
        };
        if epoch < state.epoch {
            return SequenceCheck::StaleEpoch;
        }
        if epoch > state.epoch {
            // Clients bump the epoch themselves and restart sequences at 0.
            return if first_seq == 0 { SequenceCheck::Append } else { SequenceCheck::OutOfOrder };
        }
        if let Some(k) = state.batches.iter().find(|k| k.batch.first_seq == first_seq && k.batch.last_seq == last_seq) {
            return if k.in_flight {
                SequenceCheck::InFlight
            } else {
                SequenceCheck::Duplicate { base_offset: k.batch.base_offset }
            };
        }
        if state.chain.is_broken() && state.batches.iter().any(|k| k.in_flight) {
            // Storage refuses the rest of the broken chain: once those answers are in, the
            // state says again which sequence comes next.
            return SequenceCheck::InFlight;
        }
        match (state.batches.front(), state.batches.back()) {
            (_, Some(last)) if first_seq == next_seq(last.batch.last_seq) => SequenceCheck::Append,
            (Some(oldest), Some(last))
                if first_seq < oldest.batch.first_seq && oldest.batch.first_seq <= last.batch.last_seq =>
            {
                SequenceCheck::OldDuplicate
            }
            (None, None) if first_seq == 0 => SequenceCheck::Append,
            _ => SequenceCheck::OutOfOrder,
        }
    }

    /// What wakes when a queued batch is confirmed ([`written`](Self::written)) or fails
    /// ([`failed`](Self::failed)), for a caller told [`SequenceCheck::InFlight`]. Take its
    /// `notified()` before letting go of the state's lock.
    pub fn settled(&self) -> Arc<tokio::sync::Notify> {
        self.settled.clone()
    }

    /// Notes a batch that [`check`](Self::check) said to [`SequenceCheck::Append`] as queued
    /// in storage; returns the [`AppendChain`] to queue it on. The producer's next batch
    /// can be checked and queued before this one is confirmed: storage refuses it should
    /// this one fail, so what is stored never skips a sequence. Then
    /// [`written`](Self::written) or [`failed`](Self::failed) settles it.
    pub fn begin(&mut self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32, now: Instant) -> AppendChain {
        let batch = WrittenBatch { first_seq, last_seq, base_offset: -1 };
        let state = self.remember(producer_id, epoch, Kept { batch, in_flight: true }, now);
        if state.chain.is_broken() {
            // Nothing of the broken chain is in flight any more (`check` waits for that).
            state.chain = AppendChain::new();
        }
        state.chain.clone()
    }

    /// Confirms a batch noted by [`begin`](Self::begin): stored at `base_offset`.
    pub fn written(&mut self, producer_id: i64, first_seq: i32, last_seq: i32, base_offset: i64) {
        if let Some(state) = self.producers.get_mut(&producer_id) {
            if let Some(at) = state.in_flight(first_seq, last_seq) {
                state.batches[at] = Kept { batch: WrittenBatch { first_seq, last_seq, base_offset }, in_flight: false };
            }
        }
        self.settled.notify_waiters();
    }

    /// Forgets a batch noted by [`begin`](Self::begin) that was not stored. Those queued
    /// after it on its chain fail too, each forgetting itself.
    pub fn failed(&mut self, producer_id: i64, first_seq: i32, last_seq: i32) {
        if let Some(state) = self.producers.get_mut(&producer_id) {
            if let Some(at) = state.in_flight(first_seq, last_seq) {
                state.batches.remove(at);
            }
        }
        self.settled.notify_waiters();
    }

    /// Remembers a batch known to be written (after a restart, or as another node wrote it).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: WrittenBatch, now: Instant) {
        self.remember(producer_id, epoch, Kept { batch, in_flight: false }, now);
    }

    fn remember(&mut self, producer_id: i64, epoch: i16, kept: Kept, now: Instant) -> &mut ProducerState {
        if self.last_sweep.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY) {
            self.expire(now);
        }
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= self.max_producers {
            // Full: forget the producer idle the longest.
            if let Some(oldest) = self.producers.iter().min_by_key(|(_, s)| s.last_used).map(|(id, _)| *id) {
                self.producers.remove(&oldest);
            }
        }
        let state = self.producers.entry(producer_id).or_insert_with(|| ProducerState::new(epoch, now));
        if epoch != state.epoch {
            // A new epoch restarts the sequences: what is still queued of the old one no
            // longer decides anything.
            *state = ProducerState { membership: state.membership, ..ProducerState::new(epoch, now) };
        }
        if state.batches.len() == BATCHES_KEPT {
            state.batches.pop_front();
        }
        state.batches.push_back(kept);
        state.last_used = now;
        state
    }

    /// Drops producers idle for longer than the expiry.
    pub fn expire(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        let expiry = self.expiry;
        self.producers.retain(|_, s| now.saturating_duration_since(s.last_used) <= expiry);
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Whether `producer_id` is tracked.
    pub fn knows(&self, producer_id: i64) -> bool {
        self.producers.contains_key(&producer_id)
    }

    /// The cluster membership under which `producer_id`'s state was last written or
    /// reloaded here (0 when never set).
    pub fn confirmed_under(&self, producer_id: i64) -> Option<u64> {
        self.producers.get(&producer_id).map(|s| s.membership)
    }

    /// Notes that `producer_id`'s state is current under `membership`.
    pub fn confirm(&mut self, producer_id: i64, membership: u64) {
        if let Some(s) = self.producers.get_mut(&producer_id) {
            s.membership = membership;
        }
    }

    /// Replaces what is known of `producer_id` with `batches` (epoch and batch, in the order
    /// they were written), e.g. as another node wrote them to shared storage.
    pub fn reload(&mut self, producer_id: i64, batches: impl IntoIterator<Item = (i16, WrittenBatch)>, now: Instant) {
        self.producers.remove(&producer_id);
        for (epoch, batch) in batches {
            self.record(producer_id, epoch, batch, now);
        }
    }
}

/// Whose turn it is to write, per producer of one partition: a producer's batches are
/// checked, written and recorded one after another (its sequence state is only correct
/// so), while different producers of the partition write at the same time and share the
/// storage's group commits. Holds an entry only for producers with a batch in progress.
#[derive(Debug, Default)]
pub struct ProducerTurns {
    turns: std::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

/// One producer's turn on a partition (see [`ProducerTurns::take`]); ends when dropped.
pub struct Turn<'a> {
    turns: &'a ProducerTurns,
    producer_id: i64,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl ProducerTurns {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<tokio::sync::Mutex<()>>>> {
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `producer_id`'s earlier batches on this partition are done.
    pub async fn take(&self, producer_id: i64) -> Turn<'_> {
        let lock = self.map().entry(producer_id).or_default().clone();
        Turn { turns: self, producer_id, guard: Some(lock.lock_owned().await) }
    }

    /// Producers with a batch in progress or waiting.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no producer has a batch in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.turns.map();
        // Nobody else holds or waits for it (clones are taken under the map's lock).
        if map.get(&self.producer_id).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            map.remove(&self.producer_id);
        }
    }
}

/// What the first log of an idempotent batch carries in its storage tag, so producer
/// state can be rebuilt from the data after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerTag {
    pub producer_id: i64,
    pub epoch: i16,
    /// The topic the client wrote: `L` or `L.json` (each has its own sequences).
    pub format: ValueFormat,
    /// The partition the client wrote (not the shard).
    pub partition: i32,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl ProducerTag {
    /// The storage's view of the tag: the lane is the topic's format code in the top byte
    /// and the partition below (partitions are < 2^24).
    pub fn mark(&self) -> ProducerMark {
        ProducerMark {
            producer_id: self.producer_id,
            epoch: self.epoch,
            lane: Self::lane(self.format, self.partition),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
        }
    }

    /// The storage lane of topic `format`'s `partition`.
    pub fn lane(format: ValueFormat, partition: i32) -> u32 {
        (u32::from(format.code()) << 24) | (partition as u32 & 0x00ff_ffff)
    }

    /// The tag of a stored mark; None when its lane names no topic format.
    pub fn from_mark(m: &ProducerMark) -> Option<Self> {
        Some(Self {
            producer_id: m.producer_id,
            epoch: m.epoch,
            format: ValueFormat::from_code((m.lane >> 24) as u8)?,
            partition: (m.lane & 0x00ff_ffff) as i32,
            first_seq: m.first_seq,
            last_seq: m.last_seq,
        })
    }

    /// The tag's bytes on the batch's first log (see [`ProducerMark::to_tag`]).
    pub fn encode(&self) -> [u8; TAG_LEN] {
        self.mark().to_tag()
    }

    /// Parses a tag written by [`encode`](Self::encode); None for anything else.
    pub fn decode(b: &[u8]) -> Option<Self> {
        Self::from_mark(&ProducerMark::from_tag(b)?)
    }
}

/// Hands out producer ids that are unique across restarts and across nodes: the
/// millisecond clock in the high bits, the node id and a counter below it, never going
/// backwards within a process.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    node_id: i64,
    last: AtomicI64,
}

const NODE_BITS: u32 = 8;
const COUNTER_BITS: u32 = 12;

impl ProducerIdAllocator {
    pub fn new(node_id: i32) -> Self {
        Self { node_id: i64::from(node_id) & ((1 << NODE_BITS) - 1), last: AtomicI64::new(0) }
    }

    /// A new producer id (always positive).
    pub fn next(&self) -> i64 {
        let now_ms = super::now_ms().max(0);
        let base = (now_ms << (NODE_BITS + COUNTER_BITS)) | (self.node_id << COUNTER_BITS);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            // Within one millisecond (or if the clock stepped back) count upwards in this
            // node's slots: skip to the next millisecond's slot block when needed.
            let candidate = if base > last {
                base
            } else if (last & ((1 << COUNTER_BITS) - 1)) < (1 << COUNTER_BITS) - 1 {
                last + 1
            } else {
                ((last >> (NODE_BITS + COUNTER_BITS)) + 1) << (NODE_BITS + COUNTER_BITS) | (self.node_id << COUNTER_BITS)
            };
            match self.last.compare_exchange_weak(last, candidate, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return candidate & i64::MAX,
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(first: i32, last: i32, offset: i64) -> WrittenBatch {
        WrittenBatch { first_seq: first, last_seq: last, base_offset: offset }
    }

    #[test]
    fn in_order_batches_append_and_retries_get_their_offsets() {
        let now = Instant::now();
        let mut p = PartitionProducers::new(100, Duration::from_secs(60));
        assert_eq!(p.check(7, 0, 0, 9), SequenceCheck::Append);
        p.record(7, 0, written(0, 9, 100), now);
        assert_eq!(p.check(7, 0, 10, 19), SequenceCheck::Append);
        p.record(7, 0, written(10, 19, 110), now);
        assert_eq!(p.check(7, 0, 0, 9), SequenceCheck::Duplicate { base_offset: 100 });
        assert_eq!(p.check(7, 0, 10, 19), SequenceCheck::Duplicate { base_offset: 110 });
        assert_eq!(p.check(7, 0, 25, 30), SequenceCheck::OutOfOrder);
        assert_eq!(p.check(7, 0, 5, 9), SequenceCheck::OutOfOrder);
    }

    #[test]
    fn queued_batches_are_followed_before_they_are_confirmed_and_a_retry_of_one_waits() {
        let now = Instant::now();
        let mut p = PartitionProducers::new(100, Duration::from_secs(60));
        let chain = p.begin(7, 0, 0, 9, now);
        // The next batch is checked against the queued one, on the same chain.
        assert_eq!(p.check(7, 0, 10, 19), SequenceCheck::Append);
        assert!(p.begin(7, 0, 10, 19, now).is(&chain));
        // A retry of a queued batch cannot be answered before it is confirmed.
        assert_eq!(p.check(7, 0, 0, 9), SequenceCheck::InFlight);
        // Confirmations may arrive in any order; the sequence order is kept.
        p.written(7, 10, 19, 110);
        p.written(7, 0, 9, 100);
        assert_eq!(p.check(7, 0, 0, 9), SequenceCheck::Duplicate { base_offset: 100 });
        assert_eq!(p.check(7, 0, 10, 19), SequenceCheck::Duplicate { base_offset: 110 });
        assert_eq!(p.check(7, 0, 20, 29), SequenceCheck::Append);
    }

    #[test]
    fn after_a_queued_batch_failed_nothing_new_is_queued_until_its_chain_has_settled() {
        let now = Instant::now();
        let mut p = PartitionProducers::new(100, Duration::from_secs(60));
        p.record(7, 0, written(0, 9, 100), now);
        let chain = p.begin(7, 0, 10, 19, now);
        assert!(p.begin(7, 0, 20, 29, now).is(&chain));
        // Storage failed 10..19 and breaks the chain (it then refuses 20..29 unwritten).
        chain.mark_broken();
        p.failed(7, 10, 19);
        // 20..29 is still queued: what comes next is not known yet.
        assert_eq!(p.check(7, 0, 10, 19), SequenceCheck::InFlight);
        assert_eq!(p.check(7, 0, 30, 39), SequenceCheck::InFlight);
        p.failed(7, 20, 29);
        // Settled: the client's retry of 10..19 goes on a new chain.
        assert_eq!(p.check(7, 0, 10, 19), SequenceCheck::Append);
        let fresh = p.begin(7, 0, 10, 19, now);
        assert!(!fresh.is(&chain) && !fresh.is_broken());
        assert_eq!(p.check(7, 0, 30, 39), SequenceCheck::OutOfOrder);
    }

    #[test]
    fn a_new_epoch_forgets_what_is_queued_of_the_old_one() {
        let now = Instant::now();
        let mut p = PartitionProducers::new(100, Duration::from_secs(60));
        let old = p.begin(7, 0, 0, 9, now);
        assert_eq!(p.check(7, 1, 0, 4), SequenceCheck::Append);
        assert!(!p.begin(7, 1, 0, 4, now).is(&old));
        p.written(7, 0, 9, 100);
        assert_eq!(p.check(7, 1, 0, 4), SequenceCheck::InFlight);
        assert_eq!(p.check(7, 0, 10, 19), SequenceCheck::StaleEpoch);
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let now = Instant::now();
        let mut p = PartitionProducers::new(100, Duration::from_secs(60));
        for i in 0..7 {
            p.record(1, 0, written(i * 10, i * 10 + 9, i64::from(i) * 10), now);
        }
        assert_eq!(p.check(1, 0, 20, 29), SequenceCheck::Duplicate { base_offset: 20 });
        assert_eq!(p.check(1, 0, 0, 9), SequenceCheck::OldDuplicate);
        assert_eq!(p.check(1, 0, 70, 79), SequenceCheck::Append);
    }

    #[test]
    fn epochs_fence_and_reset() {
        let now = Instant::now();
        let mut p = PartitionProducers::new(100, Duration::from_secs(60));
        p.record(1, 3, written(0, 4, 0), now);
        assert_eq!(p.check(1, 2, 5, 9), SequenceCheck::StaleEpoch);
        assert_eq!(p.check(1, 4, 5, 9), SequenceCheck::OutOfOrder);
        assert_eq!(p.check(1, 4, 0, 4), SequenceCheck::Append);
        p.record(1, 4, written(0, 4, 50), now);
        assert_eq!(p.check(1, 4, 0, 4), SequenceCheck::Duplicate { base_offset: 50 });
    }

    #[test]
    fn unknown_producers_must_start_at_zero() {
        let p = PartitionProducers::new(100, Duration::from_secs(60));
        assert_eq!(p.check(9, 0, 0, 0), SequenceCheck::Append);
        assert_eq!(p.check(9, 0, 5, 6), SequenceCheck::UnknownProducer);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let now = Instant::now();
        let mut p = PartitionProducers::new(100, Duration::from_secs(60));
        assert_eq!(last_seq(i32::MAX - 1, 4), 1);
        p.record(1, 0, written(i32::MAX - 1, i32::MAX, 0), now);
        assert_eq!(p.check(1, 0, 0, 3), SequenceCheck::Append);
    }

    #[test]
    fn state_is_bounded_and_expires() {
        let start = Instant::now();
        let mut p = PartitionProducers::new(2, Duration::from_secs(10));
        p.record(1, 0, written(0, 0, 0), start);
        p.record(2, 0, written(0, 0, 1), start + Duration::from_secs(1));
        p.record(3, 0, written(0, 0, 2), start + Duration::from_secs(2));
        assert_eq!(p.len(), 2);
        assert_eq!(p.check(1, 0, 1, 1), SequenceCheck::UnknownProducer);
        p.expire(start + Duration::from_secs(12));
        assert_eq!(p.len(), 1);
        p.expire(start + Duration::from_secs(13));
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn turns_serialize_one_producer_only_and_are_forgotten_when_done() {
        let turns = ProducerTurns::default();
        let first = turns.take(1).await;
        // Another producer's turn does not wait for producer 1's.
        let other = tokio::time::timeout(Duration::from_secs(5), turns.take(2)).await.expect("producer 2 waited");
        // Producer 1's next batch waits until its first is done.
        let next = turns.take(1);
        tokio::pin!(next);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut next).await.is_err());
        drop(first);
        let next = tokio::time::timeout(Duration::from_secs(5), next).await.expect("turn not passed on");
        assert_eq!(turns.len(), 2);
        drop((next, other));
        assert!(turns.is_empty());
    }

    #[test]
    fn tags_round_trip_and_reject_other_bytes() {
        for format in [ValueFormat::Raw, ValueFormat::Json] {
            let t = ProducerTag { producer_id: 1 << 40, epoch: 3, format, partition: 2, first_seq: i32::MAX - 1, last_seq: 1 };
            assert_eq!(ProducerTag::decode(&t.encode()), Some(t));
        }
        let t = ProducerTag { producer_id: 5, epoch: 0, format: ValueFormat::Json, partition: 0, first_seq: 0, last_seq: 0 };
        assert_eq!(ProducerTag::decode(b"short"), None);
        let mut other = t.encode().to_vec();
        other[0] = 9;
        assert_eq!(ProducerTag::decode(&other), None);
        let mut unknown_topic = t.encode();
        unknown_topic[11] = 7;
        assert_eq!(ProducerTag::decode(&unknown_topic), None);
        // A version 1 tag (no topic) is not read back.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&t.encode()[1..11]);
        v1.extend_from_slice(&t.encode()[12..]);
        assert_eq!(ProducerTag::decode(&v1), None);
    }

    #[test]
    fn producer_ids_are_unique_and_increasing() {
        let a = ProducerIdAllocator::new(1);
        let ids: Vec<i64> = (0..10_000).map(|_| a.next()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|&id| id > 0));
        let b = ProducerIdAllocator::new(2);
        let other = b.next();
        assert!(!ids.contains(&other));
    }
}
