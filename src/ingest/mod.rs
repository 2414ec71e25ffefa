//! Ingest: who may write where, which shard a batch goes to, and writing its logs.
//!
//! The Kafka handlers call [`Ingest::resolve`] for each topic and [`Ingest::start_write`] for
//! each partition's records; this layer knows projects, logstores, shards and the
//! storage trait, but nothing of the Kafka wire format.

pub mod auth;
pub mod catalog;
pub mod convert;
mod json_scan;
pub mod packed;
pub mod producers;
pub mod quota;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use loggate_records::{RawBatch, RecordError};
use loggate_storage::{Durability, EntryBatch, LogStorage, StorageError};

use auth::{KeyStore, Principal};
use producers::{ProducerIdAllocator, ProducerTag, SequenceCheck, WrittenBatch};
use catalog::{Catalog, Logstore, Topic};
use convert::{BatchContext, ConvertError, ConvertStats, Converter, OutputLimits};

/// Why a topic cannot be written by a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    /// No such project or logstore (or the connection's SNI names another project).
    UnknownTopic,
    /// The access key may not write this logstore.
    NotAuthorized,
}

/// Where one partition's logs were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub shard: u32,
    /// Offset of the first log in the shard (-1 when there were no records).
    pub base_offset: i64,
    pub logs: usize,
    /// The shard's first retained offset, when the storage knows it cheaply (see
    /// [`loggate_storage::AppendAck::start_offset`]).
    pub start_offset: Option<u64>,
}

/// The idempotence fields of a batch (producer id >= 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The batch's sequence numbers were refused (or it is an old duplicate).
    #[error("sequence check: {0:?}")]
    Sequence(SequenceCheck),
    /// One record of a batch failed: which (its index in its batch, Kafka's
    /// `batch_index`), and why. The whole partition is refused; nothing of it is stored.
    #[error("record {index} of its batch: {failure}")]
    Record { index: u32, failure: RecordFailure },
    /// The records make more logs, or larger ones, than one batch may.
    #[error("{0}")]
    Oversized(ConvertError),
    /// The task writing the logs ended without an answer (it panicked or the runtime is
    /// shutting down).
    #[error("write task ended without an answer: {0}")]
    Aborted(String),
}

/// Why one record failed (see [`WriteError::Record`]).
#[derive(Debug, thiserror::Error)]
pub enum RecordFailure {
    /// It breaks the record format (bad lengths, varints, headers).
    #[error("{0}")]
    Invalid(RecordError),
    /// A log made of it is larger than the storage holds.
    #[error("{0}")]
    TooLarge(StorageError),
}

/// The ingest service shared by all connections.
pub struct Ingest {
    /// Swapped whole by a configuration reload ([`Ingest::reload`]); a request works with
    /// the catalog and keys it loaded at its start.
    catalog: ArcSwap<Catalog>,
    keys: ArcSwap<KeyStore>,
    storage: Arc<dyn LogStorage>,
    producer_ids: ProducerIdAllocator,
    /// Grows whenever the cluster's live nodes change (None: no cluster).
    membership: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Ingest {
    pub fn new(catalog: Catalog, keys: KeyStore, storage: Arc<dyn LogStorage>, node_id: i32) -> Self {
        Self {
            catalog: ArcSwap::from_pointee(catalog),
            keys: ArcSwap::from_pointee(keys),
            storage,
            producer_ids: ProducerIdAllocator::new(node_id),
            membership: None,
        }
    }

    /// The same service in a cluster whose live set changes bump `membership`: partition
    /// leaders then move between nodes, and a producer this node knows may have written
    /// through another since, so its state is reloaded from shared storage before its
    /// next batch here is decided.
    pub fn with_membership(mut self, membership: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// A new idempotent producer id.
    pub fn new_producer_id(&self) -> i64 {
        self.producer_ids.next()
    }

    /// The access keys, for SASL authentication.
    pub fn keys(&self) -> Arc<KeyStore> {
        self.keys.load_full()
    }

    /// The catalog of projects and logstores.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Replaces the projects, logstores and access keys (a configuration reload): requests
    /// that start from now on see the new ones; one already started finishes with the old.
    pub fn reload(&self, catalog: Catalog, keys: KeyStore) {
        self.catalog.store(Arc::new(catalog));
        self.keys.store(Arc::new(keys));
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn LogStorage> {
        &self.storage
    }

    /// The project named by a TLS server name `project.rest.of.host`, if that first
    /// label is a configured project.
    pub fn sni_project<'a>(&self, sni: &'a str) -> Option<&'a str> {
        let (first, rest) = sni.split_once('.')?;
        (!rest.is_empty() && self.catalog.load().has_project(first)).then_some(first)
    }

    /// Resolves a topic for a principal: the logstore, or why it cannot be written.
    pub fn resolve(&self, principal: &Principal, topic: &str) -> Result<Topic, ResolveError> {
        let resolved = self.catalog.load().topic(&principal.project, topic).ok_or(ResolveError::UnknownTopic)?;
        if !self.keys.load().may_write(principal, &resolved.logstore.name) {
            return Err(ResolveError::NotAuthorized);
        }
        Ok(resolved)
    }

    /// Converts one partition's batches into logs (CPU work: run it off the async workers
    /// for anything large). A record that fails its checks, or logs beyond `limits`, fail
    /// the partition, and nothing is stored. The first log of an idempotent batch carries
    /// its producer tag. `records` are the bytes `batches` were decoded from: a raw topic's
    /// record batches are kept as they are where storage [packs](LogStorage::packs) them
    /// (see [`packed`]), and converted otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn convert(
        &self,
        topic: &Topic,
        partition: i32,
        batches: &[RawBatch],
        records: &[u8],
        source: &[u8],
        producer: Option<ProducerBatch>,
        limits: OutputLimits,
    ) -> Result<Converted, WriteError> {
        /// Bytes a log takes beyond its record's data, roughly: frame, times, lengths and
        /// counts, the `content` name.
        const LOG_OVERHEAD: usize = 80;
        let tag = producer.map(|p| ProducerTag {
            producer_id: p.producer_id,
            epoch: p.epoch,
            format: topic.format,
            partition,
            first_seq: p.first_seq,
            last_seq: p.last_seq,
        });
        let tag_bytes = tag.map(|t| t.encode());
        let ctx = BatchContext { arrival_time_ms: now_ms(), source, tag: tag_bytes.as_ref().map(|t| &t[..]) };
        let stream = &topic.logstore.stream;
        let converter = || Converter::new(topic.format, ctx).with_limits(limits).with_json_options(&topic.logstore.json);
        if converter().measures() && packed::packable(batches) && self.storage.packs(stream) {
            // Kept as the client sent them (see `packed`), once every record is checked.
            let mut logs = self.storage.new_batch(stream, packed::capacity(records, &ctx));
            if let Some(tag) = &tag {
                logs.set_producer(tag.mark());
            }
            if let Some(stats) = packed::pack(batches, records, converter(), limits, &mut logs)? {
                return Ok(Converted { topic: topic.clone(), partition, logs, stats, producer });
            }
            // A `.json` array: converted.
        }
        // A guess from the batch headers, so capped by what the bytes present can hold.
        let capacity: usize = batches
            .iter()
            .map(|b| {
                let guess = b.data_len().saturating_add(b.record_count().saturating_mul(LOG_OVERHEAD + source.len()));
                guess.min(b.data_len().saturating_mul(16).saturating_add(4096))
            })
            .fold(0usize, usize::saturating_add)
            .min(limits.max_bytes);
        let mut logs = self.storage.new_batch(&topic.logstore.stream, capacity);
        if let Some(tag) = &tag {
            logs.set_producer(tag.mark());
        }
        let mut converter = converter();
        for batch in batches {
            for (index, record) in (0u32..).zip(batch.records()) {
                let record = record.map_err(|e| WriteError::Record { index, failure: RecordFailure::Invalid(e) })?;
                converter.push_logs(&record, &mut logs).map_err(|e| match e {
                    ConvertError::Log(e) => WriteError::Record { index, failure: RecordFailure::TooLarge(e) },
                    limit => WriteError::Oversized(limit),
                })?;
            }
        }
        Ok(Converted { topic: topic.clone(), partition, logs, stats: converter.stats(), producer })
    }

    /// Starts writing converted logs to `shard`. An idempotent batch is first checked
    /// against the producer's sequence state for its topic and partition: a retry of a
    /// written batch gets its original offset and is not stored again.
    ///
    /// The write runs to its end in a task of its own, even if the caller stops waiting (a
    /// Produce answered with REQUEST_TIMED_OUT): the logs land and the producer's state
    /// records them, so the client's retry of that batch is answered as a duplicate
    /// instead of stored a second time. `hold` is kept until then (the budget the logs'
    /// memory was counted in). [`WriteHandle::queued`] tells when the logs are queued in
    /// storage, so that a connection can start the write of its next request knowing that
    /// storage keeps them in order.
    pub fn start_write<H: Send + 'static>(
        &self,
        converted: Converted,
        shard: u32,
        durability: Durability,
        hold: H,
    ) -> WriteHandle {
        let storage = self.storage.clone();
        let membership = self.membership.as_ref().map_or(0, |m| m.load(std::sync::atomic::Ordering::Relaxed));
        let Converted { topic, partition, logs, stats, producer } = converted;
        let (queued_tx, queued) = tokio::sync::oneshot::channel();
        let write = async move {
            let _hold = hold;
            let logstore = &topic.logstore;
            let Some(p) = producer else {
                let ticket = submit(&*storage, logstore, shard, logs, durability).await;
                let _ = queued_tx.send(());
                return Ok(acknowledged(logstore, shard, ticket?, stats).await?);
            };
            let (Some(state), Some(turns)) =
                (logstore.producers(topic.format, partition), logstore.producer_turns(topic.format, partition))
            else {
                return Err(WriteError::Sequence(SequenceCheck::UnknownProducer));
            };
            // Held while the batch is checked and queued, so that this producer's batches on
            // the topic-partition are checked and queued in order; other producers' batches
            // are written meanwhile (the state itself is locked only briefly). Where storage
            // keeps chains, the turn passes on once the batch is queued: the next one is
            // queued on the same chain before this one is stored, and storage refuses it
            // should this one fail. Elsewhere it is held until the batch is stored.
            let turn = turns.take(p.producer_id).await;
            let (mut check, unsure) = loop {
                let state = state.lock().await;
                let check = state.check(p.producer_id, p.epoch, p.first_seq, p.last_seq);
                if check == SequenceCheck::InFlight {
                    // A retry of a batch still queued, or a failed chain not yet settled.
                    let settled = state.settled();
                    let settled = settled.notified();
                    drop(state);
                    settled.await;
                    continue;
                }
            // On storage other nodes write too, the producer may have written this
            // partition through another node (it moved after a node died or Metadata
            // changed): what this node knows is then missing or stale. Its batches are in
            // the storage, so that is asked before anything is decided from no state or
            // refused as out of order.
            // So is the state of a producer last confirmed before the cluster's live nodes
            // changed (a partition led elsewhere meanwhile may have come back).
                let unsure = !state.knows(p.producer_id)
                    || state.confirmed_under(p.producer_id) != Some(membership)
                    || matches!(check, SequenceCheck::OutOfOrder | SequenceCheck::UnknownProducer);
                break (check, unsure);
            };
            if storage.is_shared(&logstore.stream) && unsure {
                let lane = ProducerTag::lane(topic.format, partition);
                let stored = storage
                    .producer_batches(&logstore.stream, logstore.shards, producers::BATCHES_KEPT as u64, Some(p.producer_id))
                    .await?;
                let mut batches: Vec<_> = stored.iter().filter(|b| b.mark.lane == lane).collect();
                batches.sort_by_key(|b| (b.mark.epoch, b.arrival_time_ms, b.mark.first_seq));
                let batches = batches.into_iter().map(|b| {
                    let written = WrittenBatch {
                        first_seq: b.mark.first_seq,
                        last_seq: b.mark.last_seq,
                        base_offset: b.base_offset as i64,
                    };
                    (b.mark.epoch, written)
                });
                let mut state = state.lock().await;
                state.reload(p.producer_id, batches, std::time::Instant::now());
                state.confirm(p.producer_id, membership);
                check = state.check(p.producer_id, p.epoch, p.first_seq, p.last_seq);
            }
            match check {
                SequenceCheck::Append => {
                    let now = std::time::Instant::now();
                    let mut logs = logs;
                    logs.set_chain(state.lock().await.begin(p.producer_id, p.epoch, p.first_seq, p.last_seq, now));
                    let queued = submit(&*storage, logstore, shard, logs, durability).await;
                    let _ = queued_tx.send(());
                    let queued = match queued {
                        Ok(queued) => queued,
                        Err(e) => {
                            // Nothing was queued: forgotten before the next batch is checked.
                            state.lock().await.failed(p.producer_id, p.first_seq, p.last_seq);
                            return Err(e.into());
                        }
                    };
                    if storage.keeps_chains(&logstore.stream) {
                        drop(turn);
                    }
                    let written = acknowledged(logstore, shard, queued, stats).await;
                    let mut state = state.lock().await;
                    match &written {
                        Ok(w) => {
                            state.written(p.producer_id, p.first_seq, p.last_seq, w.base_offset);
                            state.confirm(p.producer_id, membership);
                        }
                        Err(_) => state.failed(p.producer_id, p.first_seq, p.last_seq),
                    }
                    Ok(written?)
                }
                SequenceCheck::Duplicate { base_offset } => {
                    // Retries are rare: the local logstore is asked where the shard starts
                    // (shared storage would cost a query, and acknowledges none either).
                    let start_offset = if storage.is_shared(&logstore.stream) {
                        None
                    } else {
                        storage.offsets(&logstore.stream, shard).await.ok().map(|(start, _)| start)
                    };
                    Ok(Written { shard, base_offset, logs: 0, start_offset })
                }
                refused => Err(WriteError::Sequence(refused)),
            }
        };
        WriteHandle { queued, done: tokio::spawn(write) }
    }
}

/// A write started by [`Ingest::start_write`].
#[derive(Debug)]
pub struct WriteHandle {
    queued: tokio::sync::oneshot::Receiver<()>,
    done: tokio::task::JoinHandle<Result<Written, WriteError>>,
}

impl WriteHandle {
    /// Waits until the logs are queued in storage (writes queued one after another are
    /// stored in that order), or the write ended without queueing anything.
    pub async fn queued(&mut self) {
        let _ = (&mut self.queued).await;
    }

    /// Waits for the write's outcome.
    pub async fn done(self) -> Result<Written, WriteError> {
        self.done.await.map_err(|e| WriteError::Aborted(e.to_string()))?
    }
}

/// One partition's records converted into logs, ready for [`Ingest::start_write`].
#[derive(Debug)]
pub struct Converted {
    topic: Topic,
    partition: i32,
    logs: EntryBatch,
    stats: ConvertStats,
    producer: Option<ProducerBatch>,
}

impl Converted {
    /// Encoded size of the logs (what they hold in memory until written).
    pub fn bytes_len(&self) -> usize {
        self.logs.bytes_len()
    }
}

/// What a write waits on: nothing for no logs, else the storage's ticket.
enum Queued {
    Empty,
    Ticket(loggate_storage::AppendTicket),
}

/// Queues converted logs for `shard` of `logstore`.
async fn submit(
    storage: &dyn LogStorage,
    logstore: &Logstore,
    shard: u32,
    logs: EntryBatch,
    durability: Durability,
) -> Result<(Queued, usize), StorageError> {
    let count = logs.len();
    if count == 0 {
        return Ok((Queued::Empty, 0));
    }
    Ok((Queued::Ticket(storage.submit(&logstore.stream, shard, logs, durability).await?), count))
}

/// Waits for queued logs to be stored, and counts them.
async fn acknowledged(
    logstore: &Logstore,
    shard: u32,
    (queued, count): (Queued, usize),
    stats: ConvertStats,
) -> Result<Written, StorageError> {
    let Queued::Ticket(ticket) = queued else {
        return Ok(Written { shard, base_offset: -1, logs: 0, start_offset: None });
    };
    let ack = ticket.await?;
    logstore.counters.add(count as u64, stats.value_bytes, stats.json_fallbacks);
    logstore.counters.add_event_time_fallbacks(&stats.event_time_fallbacks);
    Ok(Written { shard, base_offset: ack.base_offset as i64, logs: count, start_offset: ack.start_offset })
}

impl Ingest {
    /// Rebuilds idempotent producer state from the producer tags in the newest
    /// `max_entries` logs of every shard; returns how many batches were found.
    pub async fn recover_producers(&self, max_entries: u64) -> Result<usize, StorageError> {
        let now_ms = now_ms();
        let now = std::time::Instant::now();
        let mut found = 0;
        for store in self.catalog.load_full().all_logstores() {
            // Shared storage is asked per producer when one is first seen (see `start_write`).
            if self.storage.is_shared(&store.stream) {
                continue;
            }
            let batches = self.storage.producer_batches(&store.stream, store.shards, max_entries, None).await?;
            let mut tags: Vec<(ProducerTag, i64, i64)> = batches
                .iter()
                .filter_map(|b| Some((ProducerTag::from_mark(&b.mark)?, b.base_offset as i64, b.arrival_time_ms)))
                .collect();
            // Replay in the order the batches were written: epoch, arrival, sequence.
            tags.sort_by_key(|(t, _, arrival)| (t.producer_id, t.partition, t.epoch, *arrival, t.first_seq));
            for (tag, offset, arrival_ms) in tags {
                let Some(state) = store.producers(tag.format, tag.partition) else {
                    continue;
                };
                let age = std::time::Duration::from_millis(now_ms.saturating_sub(arrival_ms).max(0) as u64);
                let seen = now.checked_sub(age).unwrap_or(now);
                let batch = WrittenBatch { first_seq: tag.first_seq, last_seq: tag.last_seq, base_offset: offset };
                state.lock().await.record(tag.producer_id, tag.epoch, batch, seen);
                found += 1;
            }
        }
        Ok(found)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
