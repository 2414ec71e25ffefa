//! Each shard's first retained offset, as ClickHouse last said, for appends to report
//! (`AppendAck::start_offset`) without waiting for a query.
//!
//! Rows leave only when retention drops a whole partition (at most every
//! `retention_interval`, on any node), so the value is asked again in the background once
//! it is older than that, or at the next append while there is none (an empty shard). The table is ordered by
//! logstore and event time, so the question reads the logstore's offset columns: once per
//! interval per shard written, never on an append's path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Shared;
use crate::StreamId;

/// What is known of one shard.
#[derive(Debug, Default)]
struct Known {
    /// The first retained offset; None for an empty shard or before the first answer.
    start: Option<u64>,
    asked_at: Option<Instant>,
    /// A question is under way (at most one per shard).
    asking: bool,
}

/// The start offsets of the shards appended to (one entry per shard, so as many as the
/// configuration has).
#[derive(Debug, Default)]
pub(crate) struct StartOffsets(Mutex<HashMap<(StreamId, u32), Known>>);

impl StartOffsets {
    fn map(&self) -> MutexGuard<'_, HashMap<(StreamId, u32), Known>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    /// The last known first retained offset of `shard` of `stream`; asks ClickHouse again
    /// in the background when the answer is older than `retention_interval` (or missing).
    pub(crate) fn start_offset(self: &Arc<Self>, stream: &StreamId, shard: u32) -> Option<u64> {
        let mut map = self.starts.map();
        let known = map.entry((stream.clone(), shard)).or_default();
        // An empty shard (or one not answered for yet) is asked at its next append again:
        // its first rows are what the answer was waiting for.
        let stale = known.start.is_none() || known.asked_at.is_none_or(|at| at.elapsed() >= self.opts.retention_interval);
        if stale && !known.asking {
            known.asking = true;
            let (shared, stream) = (self.clone(), stream.clone());
            tokio::spawn(async move {
                let answer = shared.offsets(&stream, shard).await;
                let mut map = shared.starts.map();
                let known = map.entry((stream, shard)).or_default();
                known.asking = false;
                known.asked_at = Some(Instant::now());
                match answer {
                    Ok((_, 0)) => known.start = None,
                    Ok((start, _)) => known.start = Some(start),
                    // Kept as it was; asked again after the interval.
                    Err(e) => tracing::debug!(error = %e, "ClickHouse: cannot read a shard's first offset"),
                }
            });
        }
        known.start
    }
}
