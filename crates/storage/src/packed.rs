//! Packed logs: the logs of one append kept in a form their writer chose (the gateway keeps
//! a raw topic's Kafka record batches as the client sent them, once checked) instead of
//! encoded log by log. Storage does not read the packed bytes; it stores them with what
//! every log of them shares and what its index needs, and reads them back through the
//! [`Unpack`] the store was given.

use bytes::Bytes;

use crate::EntryBatch;

/// The logs of one append, packed: what [`EntryBatch::pack`](crate::EntryBatch::pack) stores.
#[derive(Debug, Clone, Copy)]
pub struct PackedLogs<'a> {
    /// The writer's name for the form of `bytes` (given back to [`Unpack`]).
    pub packing: u8,
    /// Logs they hold (at least one).
    pub count: u32,
    /// Smallest and largest event time of those logs.
    pub min_event_time_ms: i64,
    pub max_event_time_ms: i64,
    /// Arrival time of every log.
    pub arrival_time_ms: i64,
    /// Client address text of every log.
    pub source: &'a [u8],
    /// The first log's tag (see [`LogEntry::tag`]).
    pub tag: Option<&'a [u8]>,
    /// Payload length of the largest log as one-log encoding would hold it (see
    /// [`EntryBatch::entry_len`](crate::EntryBatch::entry_len)), checked against the limit on one log.
    pub largest_entry_bytes: usize,
    /// The packed logs, in parts stored one after the other (at least one byte in all).
    pub bytes: &'a [&'a [u8]],
}

/// Packed logs read back, for [`Unpack::unpack`].
#[derive(Debug, Clone)]
pub struct Packed<'a> {
    pub packing: u8,
    /// Logs the writer said they hold; unpacking must give exactly these many.
    pub count: u32,
    pub arrival_time_ms: i64,
    pub source: &'a [u8],
    pub tag: Option<&'a [u8]>,
    /// The packed bytes, as stored.
    pub bytes: Bytes,
}

/// Turns packed logs back into logs, for reads of a store that holds them.
pub trait Unpack: Send + Sync {
    /// Writes the logs of `packed` into `out` (an empty batch that takes any number of
    /// logs of any size), in order; an error says why they cannot be (an unknown packing,
    /// or bytes that do not decode). The store reads the logs it wants out of `out`, so a
    /// read holds them encoded, not as [`LogEntry`](crate::LogEntry)s.
    fn unpack(&self, packed: &Packed<'_>, out: &mut EntryBatch) -> Result<(), String>;
}
