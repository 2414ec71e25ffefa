//! Producer marks: what an idempotent producer's batch is stored with, so that its
//! sequence state can be rebuilt from storage (after a restart, or on another node).

use crate::{LogStorage, StorageError, StreamId};

/// An idempotent producer's batch: who wrote it, in which sequence lane, which sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerMark {
    pub producer_id: i64,
    pub epoch: i16,
    /// The writer's sequence lane within the stream (the gateway: the topic variant in the
    /// top 8 bits, the partition below); producers number their batches per lane.
    pub lane: u32,
    pub first_seq: i32,
    pub last_seq: i32,
}

/// A stored batch's mark, with where it was stored and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedBatch {
    pub mark: ProducerMark,
    /// Offset (or batch id) of the batch's first log, as its append returned it.
    pub base_offset: u64,
    pub arrival_time_ms: i64,
}

/// Version of the tag bytes (version 1 did not have the lane's top byte; not read back).
const TAG_VERSION: u8 = 2;
/// Length of an encoded tag.
pub const TAG_LEN: usize = 1 + 8 + 2 + 1 + 4 + 4 + 4;

impl ProducerMark {
    /// The mark as entry tag bytes (how the local logstore keeps it, on the batch's first
    /// log): version, producer id, epoch, lane's top byte, lane's low 24 bits as an i32,
    /// first and last sequence, big-endian.
    pub fn to_tag(&self) -> [u8; TAG_LEN] {
        let mut b = [0; TAG_LEN];
        b[0] = TAG_VERSION;
        b[1..9].copy_from_slice(&self.producer_id.to_be_bytes());
        b[9..11].copy_from_slice(&self.epoch.to_be_bytes());
        b[11] = (self.lane >> 24) as u8;
        b[12..16].copy_from_slice(&((self.lane & 0x00ff_ffff) as i32).to_be_bytes());
        b[16..20].copy_from_slice(&self.first_seq.to_be_bytes());
        b[20..24].copy_from_slice(&self.last_seq.to_be_bytes());
        b
    }

    /// Parses [`to_tag`](Self::to_tag) bytes; None for anything else.
    pub fn from_tag(b: &[u8]) -> Option<Self> {
        let b: &[u8; TAG_LEN] = b.try_into().ok()?;
        if b[0] != TAG_VERSION {
            return None;
        }
        let i32_at = |at: usize| i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let low = u32::try_from(i32_at(12)).ok().filter(|l| *l <= 0x00ff_ffff)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[1..9]);
        Some(Self {
            producer_id: i64::from_be_bytes(id),
            epoch: i16::from_be_bytes([b[9], b[10]]),
            lane: (u32::from(b[11]) << 24) | low,
            first_seq: i32_at(16),
            last_seq: i32_at(20),
        })
    }
}

/// [`LogStorage::producer_batches`] for a backend that keeps marks as entry tags: reads the
/// newest `newest` logs of every shard.
pub(crate) async fn scan_tags<S: LogStorage + ?Sized>(
    storage: &S,
    stream: &StreamId,
    shards: u32,
    newest: u64,
    producer: Option<i64>,
) -> Result<Vec<MarkedBatch>, StorageError> {
    let mut found = Vec::new();
    for shard in 0..shards {
        let (start, end) = storage.offsets(stream, shard).await?;
        let mut from = end.saturating_sub(newest).max(start);
        while from < end {
            let logs = storage.read(stream, shard, from, 10_000).await?;
            let Some(last) = logs.last() else { break };
            from = last.offset + 1;
            for log in &logs {
                let Some(mark) = log.entry.tag.as_deref().and_then(ProducerMark::from_tag) else {
                    continue;
                };
                if producer.is_none_or(|p| p == mark.producer_id) {
                    found.push(MarkedBatch { mark, base_offset: log.offset, arrival_time_ms: log.entry.arrival_time_ms });
                }
            }
        }
    }
    found.sort_by_key(|b| b.arrival_time_ms);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_others_are_not_marks() {
        let mark = ProducerMark { producer_id: 1 << 40, epoch: 3, lane: (1 << 24) | 7, first_seq: 5, last_seq: 9 };
        assert_eq!(ProducerMark::from_tag(&mark.to_tag()), Some(mark));
        let mut v1 = mark.to_tag();
        v1[0] = 1;
        assert_eq!(ProducerMark::from_tag(&v1), None);
        assert_eq!(ProducerMark::from_tag(b"short"), None);
    }
}
