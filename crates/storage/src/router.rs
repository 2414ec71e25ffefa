//! [`Router`]: streams stored by different backends behind one [`LogStorage`].

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{AppendTicket, Durability, EntryBatch, LogStorage, MarkedBatch, StorageError, StoredLog, StreamId};

/// Sends each stream to its backend: the one named for it, else the default.
pub struct Router {
    default: Arc<dyn LogStorage>,
    /// Replaced whole when the streams change ([`Router::set_routes`]).
    streams: ArcSwap<HashMap<StreamId, Arc<dyn LogStorage>>>,
    /// Every distinct backend, for flush and close.
    backends: Vec<Arc<dyn LogStorage>>,
}

/// A route to a backend the router was not built with.
#[derive(Debug, thiserror::Error)]
#[error("logstore {0} is routed to a storage backend that was not opened at start")]
pub struct UnknownBackend(pub StreamId);

impl Router {
    /// A router sending every stream to `default`, except those in `streams`. `more` are
    /// further backends that later routes may name.
    pub fn new(
        default: Arc<dyn LogStorage>,
        streams: HashMap<StreamId, Arc<dyn LogStorage>>,
        more: impl IntoIterator<Item = Arc<dyn LogStorage>>,
    ) -> Self {
        let mut backends = vec![default.clone()];
        for b in streams.values().cloned().chain(more) {
            if !backends.iter().any(|known| Arc::ptr_eq(known, &b)) {
                backends.push(b);
            }
        }
        Router { default, streams: ArcSwap::from_pointee(streams), backends }
    }

    /// The backend of `stream`.
    pub fn backend(&self, stream: &StreamId) -> Arc<dyn LogStorage> {
        self.streams.load().get(stream).cloned().unwrap_or_else(|| self.default.clone())
    }

    /// Replaces the routes (streams not named go to the default); each must name a backend
    /// the router was built with, or nothing changes.
    pub fn set_routes(&self, streams: HashMap<StreamId, Arc<dyn LogStorage>>) -> Result<(), UnknownBackend> {
        for (stream, backend) in &streams {
            if !self.backends.iter().any(|known| Arc::ptr_eq(known, backend)) {
                return Err(UnknownBackend(stream.clone()));
            }
        }
        self.streams.store(Arc::new(streams));
        Ok(())
    }
}

#[async_trait::async_trait]
impl LogStorage for Router {
    fn new_batch(&self, stream: &StreamId, capacity: usize) -> EntryBatch {
        self.backend(stream).new_batch(stream, capacity)
    }

    fn packs(&self, stream: &StreamId) -> bool {
        self.backend(stream).packs(stream)
    }

    async fn submit(
        &self,
        stream: &StreamId,
        shard: u32,
        entries: EntryBatch,
        durability: Durability,
    ) -> Result<AppendTicket, StorageError> {
        self.backend(stream).submit(stream, shard, entries, durability).await
    }

    fn max_entry_bytes(&self) -> usize {
        self.backends.iter().map(|b| b.max_entry_bytes()).min().unwrap_or(0)
    }

    async fn read(
        &self,
        stream: &StreamId,
        shard: u32,
        from_offset: u64,
        max_entries: usize,
    ) -> Result<Vec<StoredLog>, StorageError> {
        self.backend(stream).read(stream, shard, from_offset, max_entries).await
    }

    async fn offsets(&self, stream: &StreamId, shard: u32) -> Result<(u64, u64), StorageError> {
        self.backend(stream).offsets(stream, shard).await
    }

    async fn producer_batches(
        &self,
        stream: &StreamId,
        shards: u32,
        newest: u64,
        producer: Option<i64>,
    ) -> Result<Vec<MarkedBatch>, StorageError> {
        self.backend(stream).producer_batches(stream, shards, newest, producer).await
    }

    fn is_shared(&self, stream: &StreamId) -> bool {
        self.backend(stream).is_shared(stream)
    }

    fn keeps_chains(&self, stream: &StreamId) -> bool {
        self.backend(stream).keeps_chains(stream)
    }

    fn writable(&self) -> bool {
        self.backends.iter().all(|b| b.writable())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        for b in &self.backends {
            b.flush().await?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), StorageError> {
        let mut first_error = None;
        for b in &self.backends {
            if let Err(e) = b.close().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
