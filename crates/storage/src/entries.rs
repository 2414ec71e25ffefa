//! [`EntryBatch`]: logs encoded as they are converted, ready for a storage backend.
//!
//! A batch is written in the encoding of the backend that will store it (the backend makes
//! it: [`LogStorage::new_batch`](crate::LogStorage::new_batch)), so no backend decodes
//! another's format and nothing is encoded twice:
//! - [`Encoding::Frames`]: the local logstore's unsealed block frame (a block header, then
//!   each log with its length; see `local/codec.rs`, the one owner of the format), appended
//!   by [`LocalStore`](crate::local::LocalStore) as it is;
//! - [`Encoding::Rows`]: ClickHouse RowBinary rows of the per-log columns (see
//!   `clickhouse/rows.rs`), which the ClickHouse backend splices into one insert body.

use std::fmt;

use bytes::Bytes;

use crate::clickhouse::rows::{RowBuilder, RowScratch};
use crate::local::codec::{self, FrameBuilder, MAX_PAYLOAD_LEN};
use crate::{AppendChain, LogEntry, PackedLogs, ProducerMark, StorageError};

/// Name of the field that holds a log's raw content (the whole record value).
pub const CONTENT_FIELD: &str = "content";

/// How the entries of a batch are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Local logstore frames.
    Frames,
    /// ClickHouse RowBinary rows.
    Rows,
}

/// Logs to append, already encoded, built entry by entry without an allocation per entry.
///
/// Write an entry with [`begin`](Self::begin): its headers on the returned [`EntryWriter`],
/// then its fields on the [`FieldWriter`] of [`EntryWriter::fields`], then `finish`. An
/// entry that is not finished (its writer dropped or abandoned), or whose payload exceeds
/// the batch's `max_entry_bytes`, leaves no trace in the batch.
#[derive(Clone)]
pub struct EntryBatch {
    /// Frames: one unsealed block (its header is written with the first entry begun, so an
    /// empty batch has no bytes). Rows: length-prefixed rows.
    bytes: Vec<u8>,
    /// Finished entries in `bytes`.
    count: usize,
    /// Payload limit of one entry.
    max_entry_bytes: usize,
    /// Payload length of the largest entry in `bytes`.
    largest_payload: usize,
    /// Frames: count and times of the finished entries, for the writer's index.
    summary: codec::FrameSummary,
    /// How the entries are encoded; `Rows` has its buffers for lists still being written.
    rows: Option<Box<RowScratch>>,
    /// The idempotent producer batch these logs are, if any.
    producer: Option<ProducerMark>,
    /// The chain of appends this batch belongs to, if any.
    chain: Option<AppendChain>,
    /// Whether [`pack`](Self::pack) may be used (the backend can read packed logs back).
    packable: bool,
    /// Whether `bytes` is a packed block (no entry may be begun in it).
    packed: bool,
}

impl EntryBatch {
    /// An empty batch whose entries' payloads may be up to `max_entry_bytes` long (capped at
    /// 1 GiB).
    pub fn new(max_entry_bytes: usize) -> Self {
        Self::with_capacity(max_entry_bytes, 0)
    }

    /// [`new`](Self::new) with room for `bytes` encoded bytes.
    pub fn with_capacity(max_entry_bytes: usize, bytes: usize) -> Self {
        EntryBatch {
            bytes: Vec::with_capacity(bytes),
            count: 0,
            max_entry_bytes: max_entry_bytes.min(MAX_PAYLOAD_LEN),
            largest_payload: 0,
            summary: codec::FrameSummary::new(),
            rows: None,
            producer: None,
            chain: None,
            packable: false,
            packed: false,
        }
    }

    /// An empty batch of frames written into `buffer` (emptied first): a buffer the
    /// backend keeps for reuse; `packable`: [`pack`](Self::pack) may be used.
    pub(crate) fn frames_in(mut buffer: Vec<u8>, max_entry_bytes: usize, packable: bool) -> Self {
        buffer.clear();
        EntryBatch { bytes: buffer, packable, ..Self::new(max_entry_bytes) }
    }

    /// Whether the batch can take packed logs: it is empty and its backend reads them back
    /// (see [`LogStorage::packs`](crate::LogStorage::packs)).
    pub fn can_pack(&self) -> bool {
        self.packable && self.bytes.is_empty() && self.rows.is_none()
    }

    /// Makes the batch the packed logs `p` (see [`PackedLogs`]), in place of entries written
    /// one by one; nothing may be added after them. Fails, leaving the batch as it was, when
    /// it [cannot take them](Self::can_pack), when they hold no log or no bytes, or when a
    /// log of them or the whole is larger than allowed.
    pub fn pack(&mut self, p: &PackedLogs<'_>) -> Result<(), StorageError> {
        if !self.can_pack() || p.count == 0 || p.bytes.iter().all(|b| b.is_empty()) || p.min_event_time_ms > p.max_event_time_ms {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "packed logs need an empty batch of a backend that reads them, at least one log and one byte",
            )));
        }
        if p.largest_entry_bytes > self.max_entry_bytes {
            return Err(StorageError::EntryTooLarge { size: p.largest_entry_bytes, limit: self.max_entry_bytes });
        }
        codec::write_packed(&mut self.bytes, p);
        let payload_len = self.bytes.len() - codec::FRAME_HEADER_LEN;
        if payload_len > MAX_PAYLOAD_LEN {
            self.bytes.clear();
            return Err(StorageError::EntryTooLarge { size: payload_len, limit: MAX_PAYLOAD_LEN });
        }
        self.count = p.count as usize;
        self.largest_payload = p.largest_entry_bytes;
        self.summary = codec::FrameSummary {
            count: u64::from(p.count),
            min_time: p.min_event_time_ms,
            max_time: p.max_event_time_ms,
            max_arrival: p.arrival_time_ms,
        };
        self.packed = true;
        Ok(())
    }

    /// The payload length of an entry of these parts' lengths (`headers`: key and value,
    /// `fields`: name and value), as the limit on one entry counts it.
    pub fn entry_len(
        source: usize,
        key: Option<usize>,
        headers: impl IntoIterator<Item = (usize, Option<usize>)>,
        fields: impl IntoIterator<Item = (usize, usize)>,
        tag: Option<usize>,
    ) -> usize {
        let headers: usize = headers.into_iter().map(|(k, v)| Self::field_len(k, v.unwrap_or(0))).sum();
        let fields: usize = fields.into_iter().map(|(n, v)| Self::field_len(n, v)).sum();
        codec::PAYLOAD_FIXED_LEN + source + key.unwrap_or(0) + headers + fields + tag.unwrap_or(0)
    }

    /// What one field (or header) of these lengths adds to [`Self::entry_len`].
    #[inline]
    pub fn field_len(name: usize, value: usize) -> usize {
        2 * codec::LENGTH_LEN + name + value
    }

    /// The payload limit of one entry.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// An empty batch in `encoding`, with room for `bytes` encoded bytes.
    pub fn with_encoding(encoding: Encoding, max_entry_bytes: usize, bytes: usize) -> Self {
        let mut batch = Self::with_capacity(max_entry_bytes, bytes);
        if encoding == Encoding::Rows {
            batch.rows = Some(Box::default());
        }
        batch
    }

    /// How the entries are encoded.
    pub fn encoding(&self) -> Encoding {
        if self.rows.is_some() {
            Encoding::Rows
        } else {
            Encoding::Frames
        }
    }

    /// Marks the batch as one idempotent producer's batch (the backend stores the mark with
    /// the logs, so that the producer's sequence state can be rebuilt from storage).
    pub fn set_producer(&mut self, mark: ProducerMark) {
        self.producer = Some(mark);
    }

    /// The producer mark set with [`set_producer`](Self::set_producer).
    pub fn producer(&self) -> Option<&ProducerMark> {
        self.producer.as_ref()
    }

    /// Makes the batch an append of `chain` (see [`AppendChain`]).
    pub fn set_chain(&mut self, chain: AppendChain) {
        self.chain = Some(chain);
    }

    /// The chain set with [`set_chain`](Self::set_chain).
    pub fn chain(&self) -> Option<&AppendChain> {
        self.chain.as_ref()
    }

    /// A batch of `entries` (for tests and callers holding [`LogEntry`]s).
    pub fn from_entries<'e>(
        entries: impl IntoIterator<Item = &'e LogEntry>,
        max_entry_bytes: usize,
    ) -> Result<Self, StorageError> {
        let mut batch = Self::new(max_entry_bytes);
        for entry in entries {
            batch.push(entry)?;
        }
        Ok(batch)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the encoded entries in bytes.
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// Where the encoded bytes are in memory (tests of buffer reuse).
    #[cfg(test)]
    pub(crate) fn bytes_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    /// Payload length of the largest entry (0 when empty), to check against a backend's limit.
    pub fn largest_entry_bytes(&self) -> usize {
        self.largest_payload
    }

    /// Starts an entry; it is added by the writer's `finish`.
    #[inline]
    pub fn begin(
        &mut self,
        event_time_ms: i64,
        arrival_time_ms: i64,
        source: &[u8],
        key: Option<&[u8]>,
    ) -> EntryWriter<'_> {
        assert!(!self.packed, "an entry begun in a batch of packed logs");
        let undo = self.bytes.len();
        let encoder = match &mut self.rows {
            None => Encoder::Frame({
                if undo == 0 {
                    codec::begin_block(&mut self.bytes);
                }
                FrameBuilder::begin(
                &mut self.bytes,
                // Its position in the block.
                self.count as u64,
                event_time_ms,
                arrival_time_ms,
                source,
                key,
            )
            }),
            Some(scratch) => Encoder::Row(RowBuilder::begin(
                &mut self.bytes,
                scratch,
                event_time_ms,
                arrival_time_ms,
                source,
                key,
            )),
        };
        EntryWriter(Frame {
            batch: self,
            encoder,
            undo,
            finished: false,
        })
    }

    /// Adds a copy of `entry`.
    pub fn push(&mut self, entry: &LogEntry) -> Result<(), StorageError> {
        let mut w = self.begin(
            entry.event_time_ms,
            entry.arrival_time_ms,
            &entry.source,
            entry.key.as_deref(),
        );
        for (key, value) in &entry.headers {
            w.header(key, value.as_deref());
        }
        let mut w = w.fields();
        for (name, value) in &entry.fields {
            w.field(name, value);
        }
        w.finish_with_tag(entry.tag.as_deref())
    }

    /// Runs `write` on this batch and, if it fails, removes every entry it added.
    pub fn all_or_nothing<T, E>(
        &mut self,
        write: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        let (len, count, largest, summary, packed) =
            (self.bytes.len(), self.count, self.largest_payload, self.summary, self.packed);
        let result = write(self);
        if result.is_err() {
            self.bytes.truncate(len);
            self.count = count;
            self.largest_payload = largest;
            self.summary = summary;
            self.packed = packed;
        }
        result
    }

    /// Decodes the entries (sharing one buffer, no copy of their bytes); only a batch of
    /// [`Encoding::Frames`] can be read back this way.
    pub fn into_entries(self) -> Result<Vec<LogEntry>, StorageError> {
        let mut entries = Vec::with_capacity(self.count);
        let Some(block) = self.into_block()? else {
            return Ok(entries);
        };
        for range in codec::logs(&block) {
            let range = range.map_err(|e| StorageError::Corrupt(format!("entry batch: {e}")))?;
            let (_, entry) = codec::decode(&block.slice(range))
                .map_err(|e| StorageError::Corrupt(format!("entry batch: {e}")))?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The payload of the block the entries are, its count filled in (a block as a reader
    /// finds it, at base offset 0); `None` when there are none. Only a batch of
    /// [`Encoding::Frames`] entries written one by one is one.
    pub(crate) fn into_block(self) -> Result<Option<Bytes>, StorageError> {
        if self.rows.is_some() {
            return Err(StorageError::Corrupt("rows are not decoded back into entries".into()));
        }
        if self.packed {
            return Err(StorageError::Corrupt("packed logs are read back by their store".into()));
        }
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let mut bytes = self.bytes;
        // The count of an unsealed block is a placeholder still.
        codec::set_block_count(&mut bytes, u32::try_from(self.count).unwrap_or(u32::MAX));
        Ok(Some(Bytes::from(bytes).slice(codec::FRAME_HEADER_LEN..)))
    }

    /// The encoded entries (an unsealed block for a shard writer, or length-prefixed rows).
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Frames: how many entries and their times (for the writer's index).
    pub(crate) fn frame_summary(&self) -> codec::FrameSummary {
        self.summary
    }

    /// The encoded entries, borrowed.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for EntryBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryBatch")
            .field("len", &self.count)
            .field("bytes_len", &self.bytes.len())
            .field("max_entry_bytes", &self.max_entry_bytes)
            .finish()
    }
}

/// The entry being written, in its batch's encoding.
enum Encoder {
    Frame(FrameBuilder),
    Row(RowBuilder),
}

/// An entry being written into its batch; dropped unfinished, it is removed again.
struct Frame<'b> {
    batch: &'b mut EntryBatch,
    encoder: Encoder,
    /// Length of the batch's bytes before the entry (and the block header it brought).
    undo: usize,
    /// Whether the entry was added to the batch.
    finished: bool,
}

/// An entry's encoder with the buffers it writes to.
enum Parts<'a> {
    Frame(&'a mut FrameBuilder, &'a mut Vec<u8>),
    Row(&'a mut RowBuilder, &'a mut Vec<u8>, &'a mut RowScratch),
}

impl Frame<'_> {
    /// The encoder and its buffers (a row encoder exists only in a row batch).
    #[inline]
    fn parts(&mut self) -> Parts<'_> {
        let batch = &mut *self.batch;
        match (&mut self.encoder, &mut batch.rows) {
            (Encoder::Frame(f), _) => Parts::Frame(f, &mut batch.bytes),
            (Encoder::Row(r), Some(scratch)) => Parts::Row(r, &mut batch.bytes, scratch),
            (Encoder::Row(_), None) => unreachable!("a row encoder exists only in a row batch"),
        }
    }

    #[inline]
    fn header(&mut self, key: &[u8], value: Option<&[u8]>) {
        match self.parts() {
            Parts::Frame(f, out) => f.header(out, key, value),
            Parts::Row(r, _, scratch) => r.header(scratch, key, value),
        }
    }

    #[inline]
    fn end_headers(&mut self) {
        if let Parts::Frame(f, out) = self.parts() {
            f.end_headers(out);
        }
    }

    #[inline]
    fn field(&mut self, name: &[u8], value: &[u8]) {
        match self.parts() {
            Parts::Frame(f, out) => f.field(out, name, value),
            Parts::Row(r, _, scratch) => r.field(scratch, name, value),
        }
    }

    #[inline]
    fn content(&mut self, value: &[u8]) {
        match self.parts() {
            Parts::Frame(f, out) => f.field(out, CONTENT_FIELD.as_bytes(), value),
            Parts::Row(r, out, scratch) => r.content(out, scratch, value),
        }
    }

    /// Whether the entry written so far is larger than the batch allows (it would be
    /// refused by `finish`).
    fn over_limit(&self) -> bool {
        let pending = match (&self.encoder, &self.batch.rows) {
            (Encoder::Row(_), Some(scratch)) => scratch.pending_len(),
            _ => 0,
        };
        self.batch.bytes.len() - self.start() + pending > self.batch.max_entry_bytes
    }

    #[inline]
    fn set_event_time(&mut self, event_time_ms: i64) {
        let out = &mut self.batch.bytes;
        match &self.encoder {
            Encoder::Frame(f) => f.set_event_time(out, event_time_ms),
            Encoder::Row(r) => r.set_event_time(out, event_time_ms),
        }
    }

    #[inline]
    fn start(&self) -> usize {
        match &self.encoder {
            Encoder::Frame(f) => f.start(),
            Encoder::Row(r) => r.start(),
        }
    }

    #[inline]
    fn finish(mut self, tag: Option<&[u8]>) -> Result<(), StorageError> {
        let limit = self.batch.max_entry_bytes;
        let ended = match self.parts() {
            Parts::Frame(f, out) => f.end(out, tag, limit),
            // A row's producer mark is the batch's, not a tag.
            Parts::Row(r, out, scratch) => r.end(out, scratch, limit),
        };
        let batch = &mut *self.batch;
        let payload_len = ended
            .map_err(|size| StorageError::EntryTooLarge {
                size,
                limit: batch.max_entry_bytes,
            })?;
        if let Encoder::Frame(f) = &self.encoder {
            // The log was just written: its times are in the cache.
            let log = &batch.bytes[f.start() + codec::LOG_HEADER_LEN..];
            let (event, arrival) = codec::times(log).unwrap_or((0, 0));
            batch.summary.add(event, arrival);
        }
        batch.count += 1;
        batch.largest_payload = batch.largest_payload.max(payload_len);
        self.finished = true;
        Ok(())
    }
}

impl Drop for Frame<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.finished {
            let undo = self.undo;
            self.batch.bytes.truncate(undo);
        }
    }
}

/// Writes the headers of an entry begun with [`EntryBatch::begin`].
#[must_use = "the entry is only added by `finish`"]
pub struct EntryWriter<'b>(Frame<'b>);

impl<'b> EntryWriter<'b> {
    /// Adds a header (`None`: a null value). Keys may repeat.
    #[inline]
    pub fn header(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.0.header(key, value);
    }

    /// Ends the headers; the entry's fields follow.
    #[inline]
    pub fn fields(mut self) -> FieldWriter<'b> {
        self.0.end_headers();
        FieldWriter(self.0)
    }

    /// Adds the entry, without fields or tag; fails with [`StorageError::EntryTooLarge`]
    /// (and removes it) when it is larger than the batch allows.
    #[inline]
    pub fn finish(self) -> Result<(), StorageError> {
        self.fields().finish()
    }

    /// [`finish`](Self::finish) with a tag (see [`LogEntry::tag`]).
    #[inline]
    pub fn finish_with_tag(self, tag: Option<&[u8]>) -> Result<(), StorageError> {
        self.fields().finish_with_tag(tag)
    }

    /// Removes the entry from the batch (as dropping the writer does).
    pub fn abandon(self) {}
}

/// Writes the fields of an entry, after its headers.
#[must_use = "the entry is only added by `finish`"]
pub struct FieldWriter<'b>(Frame<'b>);

impl FieldWriter<'_> {
    /// Adds a field. Names may repeat.
    #[inline]
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.0.field(name, value);
    }

    /// Sets the log's raw content (the [`CONTENT_FIELD`] field; a column of its own in rows).
    #[inline]
    pub fn content(&mut self, value: &[u8]) {
        self.0.content(value);
    }

    /// Whether the entry written so far is already larger than the batch allows (its
    /// `finish` would fail), for a writer that would otherwise go on adding fields.
    pub fn over_limit(&self) -> bool {
        self.0.over_limit()
    }

    /// Replaces the event time given to [`EntryBatch::begin`] (for a time found among the
    /// fields).
    #[inline]
    pub fn set_event_time(&mut self, event_time_ms: i64) {
        self.0.set_event_time(event_time_ms);
    }

    /// Adds the entry, without tag; fails with [`StorageError::EntryTooLarge`] (and
    /// removes it) when it is larger than the batch allows.
    #[inline]
    pub fn finish(self) -> Result<(), StorageError> {
        self.0.finish(None)
    }

    /// [`finish`](Self::finish) with a tag (see [`LogEntry::tag`]).
    #[inline]
    pub fn finish_with_tag(self, tag: Option<&[u8]>) -> Result<(), StorageError> {
        self.0.finish(tag)
    }

    /// Removes the entry from the batch (as dropping the writer does).
    pub fn abandon(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    fn entry(n: u8) -> LogEntry {
        LogEntry {
            event_time_ms: i64::from(n),
            arrival_time_ms: -1,
            source: b(b"10.0.0.1:5"),
            key: n.is_multiple_of(2).then(|| Bytes::from(vec![n; 3])),
            headers: vec![(b(b"h"), None), (b(b"h"), Some(Bytes::from(vec![n])))],
            fields: vec![(b(b"content"), Bytes::from(vec![b'x'; usize::from(n)]))],
            tag: (n == 1).then(|| b(b"tag")),
        }
    }

    #[test]
    fn pushed_entries_decode_back() {
        let entries: Vec<LogEntry> = (0..5).map(entry).collect();
        let batch = EntryBatch::from_entries(&entries, 1 << 20).unwrap();
        assert_eq!(batch.len(), 5);
        assert!(!batch.is_empty());
        assert_eq!(batch.into_entries().unwrap(), entries);
        let empty = EntryBatch::new(10);
        assert!(empty.is_empty());
        assert_eq!(empty.bytes_len(), 0);
        assert_eq!(empty.into_entries().unwrap(), vec![]);
    }

    #[test]
    fn writer_matches_push_including_an_entry_without_fields() {
        let mut written = EntryBatch::new(1 << 20);
        let mut w = written.begin(7, 8, b"src", None);
        w.header(b"k", Some(b"v"));
        w.finish().unwrap();
        let mut w = written.begin(9, 10, b"src", Some(b"key")).fields();
        w.field(b"a", b"1");
        w.field(b"a", b"2");
        w.finish_with_tag(Some(b"t")).unwrap();
        let decoded = written.clone().into_entries().unwrap();
        let mut pushed = EntryBatch::new(1 << 20);
        for e in &decoded {
            pushed.push(e).unwrap();
        }
        assert_eq!(pushed.into_bytes(), written.into_bytes());
        assert_eq!(decoded[0].headers, vec![(b(b"k"), Some(b(b"v")))]);
        assert!(decoded[0].fields.is_empty() && decoded[0].tag.is_none());
        assert_eq!(decoded[1].fields.len(), 2);
        assert_eq!(decoded[1].tag.as_deref(), Some(&b"t"[..]));
    }

    #[test]
    fn the_event_time_can_be_replaced_while_writing_fields() {
        let mut frames = EntryBatch::new(1 << 20);
        let mut rows = EntryBatch::with_encoding(Encoding::Rows, 1 << 20, 0);
        for batch in [&mut frames, &mut rows] {
            batch.push(&entry(3)).unwrap();
            let mut w = batch.begin(7, 8, b"src", Some(b"k")).fields();
            w.field(b"a", b"1");
            w.set_event_time(1_700_000_123_456);
            w.field(b"b", b"2");
            w.finish().unwrap();
        }
        let decoded = frames.into_entries().unwrap();
        assert_eq!(decoded[0], entry(3));
        assert_eq!((decoded[1].event_time_ms, decoded[1].arrival_time_ms), (1_700_000_123_456, 8));
        assert_eq!(decoded[1].fields.len(), 2);
        // The row's event_time (seconds) and event_time_ms columns, after the first row.
        let bytes = rows.bytes();
        let first_len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let second = &bytes[4 + first_len..];
        assert_eq!(u32::from_le_bytes(second[4..8].try_into().unwrap()), 1_700_000_123);
        assert_eq!(i64::from_le_bytes(second[8..16].try_into().unwrap()), 1_700_000_123_456);
        assert_eq!(i64::from_le_bytes(second[20..28].try_into().unwrap()), 8);
    }

    #[test]
    fn over_limit_tells_before_finish() {
        for encoding in [Encoding::Frames, Encoding::Rows] {
            let mut batch = EntryBatch::with_encoding(encoding, 100, 0);
            batch.push(&entry(3)).unwrap();
            let mut w = batch.begin(0, 0, b"s", None).fields();
            w.field(b"a", &[0; 40]);
            assert!(!w.over_limit(), "{encoding:?}");
            w.field(b"b", &[0; 60]);
            assert!(w.over_limit(), "{encoding:?}");
            assert!(w.finish().is_err());
        }
    }

    #[test]
    fn unfinished_and_abandoned_entries_leave_nothing() {
        let mut batch = EntryBatch::new(1 << 20);
        batch.push(&entry(2)).unwrap();
        let before = batch.clone().into_bytes();
        let mut w = batch.begin(1, 2, b"s", None);
        w.header(b"h", None);
        drop(w);
        let mut w = batch.begin(1, 2, b"s", None).fields();
        w.field(b"f", b"v");
        w.abandon();
        batch.begin(1, 2, b"s", None).abandon();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.into_bytes(), before);
    }

    #[test]
    fn too_large_entries_are_refused_and_removed() {
        let mut batch = EntryBatch::new(100);
        batch.push(&entry(2)).unwrap();
        let len = batch.bytes_len();
        let largest = batch.largest_entry_bytes();
        let mut w = batch.begin(0, 0, b"s", None).fields();
        w.field(b"big", &[0; 200]);
        match w.finish() {
            Err(StorageError::EntryTooLarge { size, limit: 100 }) => assert!(size > 200),
            other => panic!("{other:?}"),
        }
        assert_eq!((batch.len(), batch.bytes_len()), (1, len));
        assert_eq!(batch.largest_entry_bytes(), largest);
        // The limit is on the payload: an entry of exactly the limit fits.
        let mut exact = EntryBatch::new(largest);
        exact.push(&entry(2)).unwrap();
        let mut under = EntryBatch::new(largest - 1);
        assert!(under.push(&entry(2)).is_err());
        assert!(under.is_empty() && under.bytes_len() == 0);
    }

    #[test]
    fn entry_len_is_the_payload_length_the_limit_counts() {
        for n in 0..6u8 {
            let e = entry(n);
            let batch = EntryBatch::from_entries([&e], 1 << 20).unwrap();
            let len = EntryBatch::entry_len(
                e.source.len(),
                e.key.as_ref().map(Bytes::len),
                e.headers.iter().map(|(k, v)| (k.len(), v.as_ref().map(Bytes::len))),
                e.fields.iter().map(|(k, v)| (k.len(), v.len())),
                e.tag.as_ref().map(Bytes::len),
            );
            assert_eq!(len, batch.largest_entry_bytes(), "entry {n}");
        }
    }

    #[test]
    fn all_or_nothing_removes_what_a_failed_write_added() {
        let mut batch = EntryBatch::new(1 << 20);
        batch.push(&entry(1)).unwrap();
        let before = batch.clone().into_bytes();
        let summary = batch.frame_summary();
        assert_eq!((summary.count, summary.min_time, summary.max_arrival), (1, 1, -1));
        let failed: Result<(), ()> = batch.all_or_nothing(|batch| {
            batch.push(&entry(4)).unwrap();
            batch.push(&entry(5)).unwrap();
            Err(())
        });
        assert!(failed.is_err());
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.frame_summary(), summary);
        assert_eq!(batch.largest_entry_bytes(), {
            let mut one = EntryBatch::new(1 << 20);
            one.push(&entry(1)).unwrap();
            one.largest_entry_bytes()
        });
        assert_eq!(batch.clone().into_bytes(), before);
        let kept: Result<(), ()> = batch.all_or_nothing(|batch| {
            batch.push(&entry(4)).unwrap();
            Ok(())
        });
        assert!(kept.is_ok());
        assert_eq!(batch.len(), 2);
    }
}
