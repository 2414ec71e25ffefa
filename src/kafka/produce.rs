//! Produce (key 0) v0-v9: decode each partition's records, write them, answer per
//! partition in the error codes the client's era understands.
//!
//! Request bodies of every version are parsed by [`super::produce_request`] with counts
//! bounded by the bytes present; the records bytes stay zero-copy slices of the frame.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;
use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use loggate_records::{decode_batches_with, Compression, DecodeOptions, RawBatch, RecordError, Spare};
use loggate_storage::Durability;
use tracing::{debug, warn};

use super::errors::{code, ProduceError};
use super::pool::{RequestJobs, INLINE_OUTPUT_BYTES};
use super::{respond, Broker, Reply, RequestHeader, Session};
use crate::ingest::auth::Principal;
use crate::ingest::producers::{last_seq, SequenceCheck};
use crate::ingest::convert::OutputLimits;
use crate::ingest::{Converted, ProducerBatch, RecordFailure, ResolveError, WriteError, WriteHandle};

/// Highest Produce version served (v9 is the first flexible one).
pub const MAX_VERSION: i16 = 9;

/// One partition's data: its index and record bytes.
type PartitionData = (i32, Option<Bytes>);

/// A Produce request, whatever its version.
struct Request {
    acks: i16,
    /// How long the client waits for the write (bounds the wait for storage).
    timeout_ms: i32,
    transactional: bool,
    topics: Vec<(String, Vec<PartitionData>)>,
}

/// Outcome of one partition.
struct PartitionResult {
    index: i32,
    error: i16,
    base_offset: i64,
    /// The shard's first retained offset; -1 on errors and when the storage does not know.
    log_start_offset: i64,
    /// v8+: why the partition failed, for the client's log.
    error_message: Option<String>,
    /// v8+: the record that made it fail (its index in the batch) and why.
    record_error: Option<(i32, String)>,
}

/// Why a partition was refused: the error, the reason (logged, and told to v8+ clients)
/// and, when one record caused it, that record's index in its batch.
struct Refusal {
    error: ProduceError,
    why: String,
    record: Option<u32>,
}

impl From<(ProduceError, String)> for Refusal {
    fn from((error, why): (ProduceError, String)) -> Self {
        Self { error, why, record: None }
    }
}

/// Longest reason sent to a client in `error_message` (the log line keeps it whole).
const MAX_ERROR_MESSAGE: usize = 512;

impl Refusal {
    /// What the client is told: the reason, except for faults of the gateway's own storage,
    /// whose details are for its operator's log.
    fn client_message(&self) -> String {
        let text = match self.error {
            ProduceError::StorageError => "the gateway could not store the records (see its log); retry",
            _ => self.why.as_str(),
        };
        text[..text.floor_char_boundary(MAX_ERROR_MESSAGE)].to_string()
    }
}

/// First Produce version whose clients throttle themselves (KIP-219): they are answered
/// at once with the throttle time and hold off for it; older ones get the answer late.
const CLIENT_THROTTLES_FROM: i16 = 6;

/// Handles a Produce request.
///
/// Its size is recorded against the principal's quotas ([`crate::ingest::quota`]); over
/// them, the answer carries the throttle time, and as Kafka brokers do the connection
/// reads nothing more until it has passed (`Session::throttled_until`), and clients older
/// than KIP-219 (v0-v5) also get their answer that much later. Nothing is refused.
pub async fn handle(broker: &Broker, session_mut: &mut Session, header: &RequestHeader, body: Bytes) -> Reply {
    let session: &Session = session_mut;
    let version = header.api_version;
    if !(0..=MAX_VERSION).contains(&version) {
        return Reply::Close(format!("unsupported Produce version {version}"));
    }
    let size = body.len() as u64;
    let request = match parse(version, body) {
        Ok(r) => r,
        Err(e) => return Reply::Close(format!("malformed Produce v{version} request: {e}")),
    };
    let Some(principal) = session.principal() else {
        return Reply::Close("Produce before authentication".into());
    };
    let throttle = broker.quotas.record(principal, size);
    if !throttle.is_zero() {
        broker.metrics.quota_throttled(&principal.project, throttle);
        debug!(peer = %session.peer, project = principal.project.as_str(), throttle_ms = throttle.as_millis() as u64,
            "over quota: throttled");
    }
    let throttled_until = tokio::time::Instant::now() + throttle;
    let durability = match (request.acks, version) {
        (0 | 1, _) => Ok(Durability::Written),
        (-1, _) => Ok(Durability::Synced),
        // Kafka 0.8 accepted acks > 1 and treated it as "all".
        (n, 0) if n > 1 => Ok(Durability::Synced),
        _ => Err(ProduceError::InvalidRequiredAcks),
    };
    let blanket_error = match durability {
        Err(e) => Some(e),
        Ok(_) if request.transactional => Some(ProduceError::TransactionsNotSupported),
        Ok(_) => None,
    };
    let durability = durability.unwrap_or(Durability::Written);
    // Storage gets at least a second, whatever the client asked for.
    let deadline = Duration::from_millis(request.timeout_ms.max(1000) as u64);

    let deadline_at = tokio::time::Instant::now() + deadline;
    let timed_out = move || Refusal::from((ProduceError::Timeout, format!("storage did not answer within {deadline:?}")));

    // First every partition is decoded, converted and queued in storage, in this request's
    // turn on the connection; the answer then waits for storage (`Reply::Later`), while the
    // connection goes on with its next request.
    let jobs = broker.pool.request_jobs();
    let mut started = Vec::with_capacity(request.topics.len());
    for (topic_name, partitions) in request.topics {
        let writes = partitions.into_iter().map(|(index, records)| {
            let topic_name = &topic_name;
            let jobs = &jobs;
            async move {
                let write = match blanket_error {
                    Some(e) => Err(Refusal::from((e, "request-level error".to_string()))),
                    None => {
                        let write =
                            write_partition(broker, session, principal, version, topic_name, index, records, durability, jobs);
                        tokio::time::timeout_at(deadline_at, write).await.unwrap_or_else(|_| Err(timed_out()))
                    }
                };
                (index, write)
            }
        });
        let writes = join_all(writes).await;
        // The configured logstore the topic names, for the error metric's labels.
        let store = broker.ingest.catalog().topic(&principal.project, &topic_name).map(|t| t.logstore);
        started.push((topic_name, writes, store));
    }

    let (metrics, peer, header, acks) = (broker.metrics.clone(), session.peer, header.clone(), request.acks);
    if !throttle.is_zero() {
        // The connection's next request waits until then (Kafka mutes the channel).
        session_mut.throttled_until = Some(throttled_until);
    }
    let throttle_ms = i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX);
    Reply::Later(Box::pin(async move {
        let mut results = Vec::with_capacity(started.len());
        let mut failures = 0usize;
        for (topic_name, writes, store) in started {
            let outcomes = writes.into_iter().map(|(index, write)| {
                let metrics = &metrics;
                let topic_name = &topic_name;
                let store = store.as_deref().map(|s| (s.project.as_str(), s.name.as_str()));
                async move {
                    let outcome = match write {
                        Ok(handle) => match tokio::time::timeout_at(deadline_at, handle.done()).await {
                            Ok(written) => written.map_err(write_error).inspect(|w| {
                                debug!(%peer, topic = topic_name.as_str(), partition = index, shard = w.shard, logs = w.logs,
                                    base_offset = w.base_offset, "stored");
                            }),
                            Err(_) => Err(timed_out()),
                        },
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(w) => PartitionResult {
                            index,
                            error: code::NONE,
                            base_offset: w.base_offset,
                            log_start_offset: w.start_offset.and_then(|o| i64::try_from(o).ok()).unwrap_or(-1),
                            error_message: None,
                            record_error: None,
                        },
                        Err(refusal) => {
                            let e = refusal.error;
                            log_failure(&peer, topic_name, index, e, &refusal.why);
                            metrics.produce_error(e.name(), store);
                            let message = refusal.client_message();
                            PartitionResult {
                                index,
                                error: e.code_for(version),
                                base_offset: -1,
                                log_start_offset: -1,
                                record_error: refusal.record.map(|r| (r as i32, message.clone())),
                                error_message: Some(message),
                            }
                        }
                    }
                }
            });
            let partition_results = join_all(outcomes).await;
            failures += partition_results.iter().filter(|r| r.error != code::NONE).count();
            results.push((topic_name, partition_results));
        }
        if acks == 0 {
            // acks=0 clients read no response; on failure close so they refresh and notice.
            return if failures > 0 {
                Reply::Close(format!("{failures} partition(s) failed in an acks=0 Produce"))
            } else {
                Reply::Nothing
            };
        }
        if version < CLIENT_THROTTLES_FROM {
            tokio::time::sleep_until(throttled_until).await;
        }
        encode(&header, results, throttle_ms)
    }))
}

/// Decodes, checks and queues one partition's records in storage; returns the write, whose
/// outcome is the base offset. The decoding and conversion run in the broker's decode pool
/// (see [`super::pool`]).
#[allow(clippy::too_many_arguments)]
async fn write_partition(
    broker: &Broker,
    session: &Session,
    principal: &Principal,
    version: i16,
    topic_name: &str,
    partition: i32,
    records: Option<Bytes>,
    durability: Durability,
    jobs: &RequestJobs,
) -> Result<WriteHandle, Refusal> {
    let topic = if session.sni_conflict {
        Err(ResolveError::UnknownTopic)
    } else {
        broker.ingest.resolve(principal, topic_name)
    };
    let topic = topic.map_err(|e| match e {
        ResolveError::UnknownTopic => (ProduceError::UnknownTopicOrPartition, "no such logstore".to_string()),
        ResolveError::NotAuthorized => (ProduceError::TopicAuthorizationFailed, "access key may not write this logstore".to_string()),
    })?;
    let shard = topic
        .logstore
        .route(partition)
        .ok_or((ProduceError::UnknownTopicOrPartition, format!("no partition {partition}")))?;
    let records = records.unwrap_or_default();
    let limits = &*broker.limits();
    if records.len() > limits.max_batch_bytes {
        return Err(Refusal::from((
            ProduceError::MessageTooLarge,
            format!("{} bytes of records exceed max_batch_bytes {}", records.len(), limits.max_batch_bytes),
        )));
    }
    let options = DecodeOptions {
        max_decompressed_bytes: limits.max_decompressed_batch_bytes,
        max_records: limits.max_records_per_batch,
        // Every version carrying record batches v2 (v3+): sarama before 1.23 sends zstd in
        // v3. Kafka refuses it below v7 for old consumers; loggate has none. Message sets
        // v0/v1 have no zstd codec and are refused by the decoder whatever this says.
        allow_zstd: version >= 3,
    };
    let output = OutputLimits { max_logs: limits.max_records_per_batch, max_bytes: limits.max_converted_batch_bytes };
    let inline = largest_output(&records).is_some_and(|n| n <= INLINE_OUTPUT_BYTES);
    let (ingest, source, metrics) = (broker.ingest.clone(), session.source.clone(), broker.metrics.clone());
    // Batches are checked and decompressed, and their records converted, in one job.
    let job = move || {
        let batches = SPARE
            .with_borrow_mut(|spare| decode_batches_with(records.clone(), &options, spare))
            .map_err(|e| Refusal::from((record_error(&e), e.to_string())))?;
        for batch in batches.iter().filter(|b| b.info.compression != Compression::None) {
            metrics.decompressed(codec_name(batch.info.compression), batch.data_len() as u64);
        }
        let producer = producer_batch(&batches)?;
        check_batches(version, &batches)?;
        let converted = ingest.convert(&topic, partition, &batches, &records, &source, producer, output);
        SPARE.with_borrow_mut(|spare| spare.recycle(batches));
        converted.map_err(write_error)
    };
    let size = |r: &Result<Converted, _>| r.as_ref().map_or(0, Converted::bytes_len);
    let (converted, pending) = broker
        .pool
        .run(jobs, inline, job, size)
        .await
        .map_err(|e| Refusal::from((ProduceError::StorageError, e.to_string())))?;
    let mut write = broker.ingest.start_write(converted?, shard, durability, pending);
    write.queued().await;
    Ok(write)
}

thread_local! {
    /// Decompression buffers of this thread's last jobs (a decode thread, or an async
    /// worker for small ones), reused by its next: at most `SPARE_BUFFERS` x
    /// `SPARE_CAPACITY` bytes per thread.
    static SPARE: std::cell::RefCell<Spare> = std::cell::RefCell::new(Spare::default());
}

/// The `codec` label of the decompressed-bytes metric.
fn codec_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// The most bytes record data can decompress to, when it is one magic-2 batch: its size
/// times its codec's largest expansion (LZ4 255x, snappy as the decoder allows it 22x,
/// deflate 1032x). None when it is not bounded so: zstd (whose ratio has no useful bound),
/// more than one batch (a later one could be compressed), or message sets of magic 0/1,
/// which may carry compressed wrappers anywhere.
fn largest_output(records: &[u8]) -> Option<usize> {
    let one_batch = records
        .get(8..12)
        .map(|len| i32::from_be_bytes([len[0], len[1], len[2], len[3]]))
        .and_then(|len| usize::try_from(len).ok())
        .is_some_and(|len| len.checked_add(12) == Some(records.len()));
    let expansion = match (records.get(16), records.get(22)) {
        (None, _) | (Some(2), None) => 1,
        (Some(2), Some(_)) if !one_batch => return None,
        (Some(2), Some(attributes)) => match attributes & 0x07 {
            0 => 1,
            1 => 1032,
            2 => 22,
            3 => 255,
            _ => return None,
        },
        _ => return None,
    };
    records.len().checked_mul(expansion)
}

/// The Kafka error for a failed conversion or write.
fn write_error(e: WriteError) -> Refusal {
    let tuple = match e {
        WriteError::Record { index, failure } => {
            let error = match &failure {
                RecordFailure::Invalid(e) => record_error(e),
                RecordFailure::TooLarge(_) => ProduceError::MessageTooLarge,
            };
            let why = match failure {
                RecordFailure::TooLarge(e) => format!("record {index} too large to store ([storage] max_log_bytes): {e}"),
                RecordFailure::Invalid(e) => format!("record {index}: {e}"),
            };
            return Refusal { error, why, record: Some(index) };
        }
        // A log the storage can never hold: retrying cannot help.
        WriteError::Storage(e @ loggate_storage::StorageError::EntryTooLarge { .. }) => {
            (ProduceError::MessageTooLarge, format!("record too large to store ([storage] max_log_bytes): {e}"))
        }
        WriteError::Storage(e) => (ProduceError::StorageError, format!("storage: {e}")),
        WriteError::Sequence(check) => (sequence_error(check), format!("idempotent producer: {check:?}")),
        WriteError::Oversized(e) => (ProduceError::MessageTooLarge, e.to_string()),
        WriteError::Aborted(why) => (ProduceError::StorageError, why),
    };
    tuple.into()
}

/// Applies the rules the decoder leaves to the broker.
fn check_batches(version: i16, batches: &[RawBatch]) -> Result<(), (ProduceError, String)> {
    let invalid = |why: &str| (ProduceError::InvalidRecord, why.to_string());
    if version >= 3 && (batches.len() != 1 || batches[0].info.magic != 2) {
        return Err(invalid("Produce v3+ must carry exactly one record batch of magic 2"));
    }
    if batches.iter().any(|b| b.info.control) {
        return Err(invalid("control batches may not be produced"));
    }
    if batches.iter().any(|b| b.info.transactional) {
        return Err((ProduceError::TransactionsNotSupported, "transactional batch".into()));
    }
    Ok(())
}

/// The idempotence fields of a single magic-2 batch with a producer id.
fn producer_batch(batches: &[RawBatch]) -> Result<Option<ProducerBatch>, (ProduceError, String)> {
    let [batch] = batches else {
        return Ok(None);
    };
    let info = &batch.info;
    if info.magic != 2 || info.producer_id < 0 {
        return Ok(None);
    }
    if info.base_sequence < 0 || info.producer_epoch < 0 {
        return Err((ProduceError::InvalidRecord, "producer id without sequence or epoch".into()));
    }
    Ok(Some(ProducerBatch {
        producer_id: info.producer_id,
        epoch: info.producer_epoch,
        first_seq: info.base_sequence,
        last_seq: last_seq(info.base_sequence, info.last_offset_delta.saturating_add(1)),
    }))
}

fn sequence_error(check: SequenceCheck) -> ProduceError {
    match check {
        SequenceCheck::OldDuplicate => ProduceError::DuplicateSequence,
        SequenceCheck::StaleEpoch => ProduceError::InvalidProducerEpoch,
        SequenceCheck::UnknownProducer => ProduceError::UnknownProducerId,
        // Append, Duplicate and InFlight are settled by ingest, never refused.
        SequenceCheck::OutOfOrder | SequenceCheck::Append | SequenceCheck::Duplicate { .. } | SequenceCheck::InFlight => {
            ProduceError::OutOfOrderSequence
        }
    }
}

fn record_error(e: &RecordError) -> ProduceError {
    match e {
        RecordError::Corrupt(_) | RecordError::DecompressedTooLarge { .. } => ProduceError::CorruptMessage,
        RecordError::Invalid(_) => ProduceError::InvalidRecord,
        RecordError::UnsupportedCompression(_) => ProduceError::UnsupportedCompression,
        RecordError::TooManyRecords { .. } => ProduceError::MessageTooLarge,
    }
}

fn log_failure(peer: &std::net::SocketAddr, topic: &str, partition: i32, error: ProduceError, why: &str) {
    match error {
        // Clients retry these forever (Filebeat): keep them out of the default log level.
        ProduceError::UnknownTopicOrPartition => {
            debug!(%peer, topic, partition, ?error, why, "produce refused")
        }
        _ => warn!(%peer, topic, partition, ?error, why, "produce refused"),
    }
}

/// Parses the request body of any served version, every count checked against the bytes
/// left (see [`super::produce_request`]).
fn parse(version: i16, body: Bytes) -> Result<Request, String> {
    let r = super::produce_request::parse(version, body).map_err(|e| e.to_string())?;
    Ok(Request { acks: r.acks, timeout_ms: r.timeout_ms, transactional: r.transactional, topics: r.topics })
}

/// Encodes the response in the request's version.
fn encode(header: &RequestHeader, results: Vec<(String, Vec<PartitionResult>)>, throttle_ms: i32) -> Reply {
    let version = header.api_version;
    if version >= 3 {
        let responses = results
            .into_iter()
            .map(|(name, partitions)| {
                let partition_responses = partitions
                    .into_iter()
                    .map(|p| {
                        // Fields a version does not have are left out by the encoder.
                        let record_errors = p
                            .record_error
                            .map(|(batch_index, message)| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(batch_index)
                                    .with_batch_index_error_message(Some(StrBytes::from_string(message)))
                            })
                            .into_iter()
                            .collect();
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(p.error)
                            .with_base_offset(p.base_offset)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(p.log_start_offset)
                            .with_record_errors(record_errors)
                            .with_error_message(p.error_message.map(StrBytes::from_string))
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_responses(partition_responses)
            })
            .collect();
        let response = ProduceResponse::default().with_responses(responses).with_throttle_time_ms(throttle_ms);
        return respond(header, &response);
    }
    // v0: [topic, [partition, error, base_offset]]; v1 adds throttle_time_ms at the end;
    // v2 adds log_append_time per partition.
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(header.correlation_id);
    buf.put_i32(results.len() as i32);
    for (name, partitions) in &results {
        buf.put_i16(name.len() as i16);
        buf.put_slice(name.as_bytes());
        buf.put_i32(partitions.len() as i32);
        for p in partitions {
            buf.put_i32(p.index);
            buf.put_i16(p.error);
            buf.put_i64(p.base_offset);
            if version >= 2 {
                buf.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        buf.put_i32(throttle_ms);
    }
    Reply::Frame(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::largest_output;

    /// A magic-2 batch header of `len` bytes in all with codec `codec`, then padding.
    fn batch(len: usize, codec: u8) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b[16] = 2;
        b[22] = codec;
        b
    }

    #[test]
    fn inline_bound_is_the_whole_data_times_its_codecs_expansion() {
        assert_eq!(largest_output(&batch(100, 0)), Some(100));
        assert_eq!(largest_output(&batch(100, 3)), Some(25_500));
        assert_eq!(largest_output(&batch(100, 1)), Some(103_200));
        assert_eq!(largest_output(&batch(100, 4)), None);
        // A second batch after an uncompressed first one may be compressed.
        let mut two = batch(100, 0);
        two.extend_from_slice(&batch(100, 1));
        assert_eq!(largest_output(&two), None);
        let mut v1 = batch(100, 0);
        v1[16] = 1;
        assert_eq!(largest_output(&v1), None);
        assert_eq!(largest_output(&[]), Some(0));
    }
}
