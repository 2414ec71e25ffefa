//! RowBinary encoding of logs for ClickHouse inserts.
//!
//! An [`EntryBatch`](crate::EntryBatch) of [`Encoding::Rows`](crate::Encoding::Rows) holds,
//! per log, `u32 LE body length | body`, where the body is the log's own columns in
//! [`ROW_COLUMNS`] order. What a whole batch shares (stream, shard, batch id, producer mark)
//! is not in the body: [`write_insert_rows`] writes it before each body, with the log's
//! position, when the insert is assembled. RowBinary: integers little-endian, `String` as
//! LEB128 length and bytes, `DateTime` as UInt32 seconds, `Nullable(T)` as a 0 byte and T
//! or a 1 byte, `Array(T)` as LEB128 count and elements.

/// Columns written per batch (before each row body), in insert order.
pub const BATCH_COLUMNS: &[&str] = &[
    "project",
    "logstore",
    "shard",
    "retention_hours",
    "node_id",
    "insert_id",
    "batch_id",
    "producer_id",
    "producer_epoch",
    "producer_lane",
    "sequence_first",
    "sequence_last",
    "position",
];

/// Columns of the row body, in insert order.
pub const ROW_COLUMNS: &[&str] = &[
    "event_time",
    "event_time_ms",
    "arrival_time",
    "arrival_time_ms",
    "client",
    "key",
    "header_keys",
    "header_values",
    "content",
    "field_names",
    "field_values",
];

/// Bytes of the body length before each row.
pub(crate) const ROW_HEADER_LEN: usize = 4;

/// Lists of the row being written: they are written to the body once their counts are
/// known (the headers when the content or the end comes, the fields at the end). Kept in
/// the batch and reused from row to row. The content is written straight to the body.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowScratch {
    header_keys: Vec<u8>,
    header_values: Vec<u8>,
    headers: usize,
    field_names: Vec<u8>,
    field_values: Vec<u8>,
    fields: usize,
}

impl RowScratch {
    /// Bytes of the lists held for the row being written.
    pub(crate) fn pending_len(&self) -> usize {
        self.header_keys.len() + self.header_values.len() + self.field_names.len() + self.field_values.len()
    }

    fn clear(&mut self) {
        self.header_keys.clear();
        self.header_values.clear();
        self.headers = 0;
        self.field_names.clear();
        self.field_values.clear();
        self.fields = 0;
    }
}

/// One row being written at the end of a batch's buffer.
#[derive(Debug)]
pub(crate) struct RowBuilder {
    start: usize,
    /// The header lists are in the body.
    headers_written: bool,
    /// The content is in the body.
    content_written: bool,
}

impl RowBuilder {
    /// Writes the length placeholder and the row's fixed columns.
    #[inline]
    pub(crate) fn begin(
        out: &mut Vec<u8>,
        scratch: &mut RowScratch,
        event_time_ms: i64,
        arrival_time_ms: i64,
        source: &[u8],
        key: Option<&[u8]>,
    ) -> Self {
        scratch.clear();
        let start = out.len();
        out.extend_from_slice(&[0; ROW_HEADER_LEN]);
        out.extend_from_slice(&date_time(event_time_ms).to_le_bytes());
        out.extend_from_slice(&event_time_ms.to_le_bytes());
        out.extend_from_slice(&date_time(arrival_time_ms).to_le_bytes());
        out.extend_from_slice(&arrival_time_ms.to_le_bytes());
        put_string(out, source);
        put_nullable(out, key);
        RowBuilder { start, headers_written: false, content_written: false }
    }

    /// Where the row starts in the buffer.
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// Replaces the event time columns written by [`begin`](Self::begin).
    #[inline]
    pub(crate) fn set_event_time(&self, out: &mut [u8], event_time_ms: i64) {
        let at = self.start + ROW_HEADER_LEN;
        out[at..at + 4].copy_from_slice(&date_time(event_time_ms).to_le_bytes());
        out[at + 4..at + 12].copy_from_slice(&event_time_ms.to_le_bytes());
    }

    /// Adds a header (before the content).
    #[inline]
    pub(crate) fn header(&mut self, scratch: &mut RowScratch, key: &[u8], value: Option<&[u8]>) {
        debug_assert!(!self.headers_written);
        put_string(&mut scratch.header_keys, key);
        put_nullable(&mut scratch.header_values, value);
        scratch.headers += 1;
    }

    #[inline]
    pub(crate) fn field(&mut self, scratch: &mut RowScratch, name: &[u8], value: &[u8]) {
        put_string(&mut scratch.field_names, name);
        put_string(&mut scratch.field_values, value);
        scratch.fields += 1;
    }

    /// Sets the content (once; a second value is ignored).
    #[inline]
    pub(crate) fn content(&mut self, out: &mut Vec<u8>, scratch: &RowScratch, value: &[u8]) {
        self.write_headers(out, scratch);
        if !self.content_written {
            put_string(out, value);
            self.content_written = true;
        }
    }

    /// Writes the header lists to the body, once.
    #[inline]
    fn write_headers(&mut self, out: &mut Vec<u8>, scratch: &RowScratch) {
        if !self.headers_written {
            put_leb128(out, scratch.headers as u64);
            out.extend_from_slice(&scratch.header_keys);
            put_leb128(out, scratch.headers as u64);
            out.extend_from_slice(&scratch.header_values);
            self.headers_written = true;
        }
    }

    /// Writes the lists and the content, and the body length; returns the body's length, or
    /// `Err(length)` (leaving the row unfinished) when it would be longer than `limit`.
    #[inline]
    pub(crate) fn end(&mut self, out: &mut Vec<u8>, scratch: &RowScratch, limit: usize) -> Result<usize, usize> {
        let headers = if self.headers_written {
            0
        } else {
            2 * leb128_len(scratch.headers as u64) + scratch.header_keys.len() + scratch.header_values.len()
        };
        let content = usize::from(!self.content_written);
        let fields = 2 * leb128_len(scratch.fields as u64) + scratch.field_names.len() + scratch.field_values.len();
        let body_len = out.len() - self.start - ROW_HEADER_LEN + headers + content + fields;
        if body_len > limit || u32::try_from(body_len).is_err() {
            return Err(body_len);
        }
        self.write_headers(out, scratch);
        if !self.content_written {
            put_string(out, b"");
            self.content_written = true;
        }
        put_leb128(out, scratch.fields as u64);
        out.extend_from_slice(&scratch.field_names);
        put_leb128(out, scratch.fields as u64);
        out.extend_from_slice(&scratch.field_values);
        out[self.start..self.start + ROW_HEADER_LEN].copy_from_slice(&(body_len as u32).to_le_bytes());
        debug_assert_eq!(out.len() - self.start, ROW_HEADER_LEN + body_len);
        Ok(body_len)
    }
}

/// What every row of one appended batch shares, in [`BATCH_COLUMNS`] order.
#[derive(Debug, Clone)]
pub struct BatchColumns<'a> {
    pub project: &'a str,
    pub logstore: &'a str,
    pub shard: u32,
    pub retention_hours: u32,
    pub node_id: u16,
    pub insert_id: u64,
    pub batch_id: u64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub producer_lane: u32,
    pub sequence_first: i32,
    pub sequence_last: i32,
}

impl BatchColumns<'_> {
    /// The shared columns' bytes (everything but `position`).
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.project.len() + self.logstore.len());
        put_string(&mut b, self.project.as_bytes());
        put_string(&mut b, self.logstore.as_bytes());
        b.extend_from_slice(&self.shard.to_le_bytes());
        b.extend_from_slice(&self.retention_hours.to_le_bytes());
        b.extend_from_slice(&self.node_id.to_le_bytes());
        b.extend_from_slice(&self.insert_id.to_le_bytes());
        b.extend_from_slice(&self.batch_id.to_le_bytes());
        b.extend_from_slice(&self.producer_id.to_le_bytes());
        b.extend_from_slice(&self.producer_epoch.to_le_bytes());
        b.extend_from_slice(&self.producer_lane.to_le_bytes());
        b.extend_from_slice(&self.sequence_first.to_le_bytes());
        b.extend_from_slice(&self.sequence_last.to_le_bytes());
        b
    }
}

/// Appends the insert rows of one batch to `out`: the shared columns, the row's position,
/// its body, for every row in `rows` whose position `keep` accepts. Returns the rows written.
pub(crate) fn write_insert_rows(
    out: &mut Vec<u8>,
    shared: &BatchColumns<'_>,
    rows: &[u8],
    mut keep: impl FnMut(u32) -> bool,
) -> usize {
    let prefix = shared.encode();
    let mut pos = 0;
    let mut position = 0u32;
    let mut written = 0;
    while let Some(header) = rows.get(pos..pos + ROW_HEADER_LEN) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let body = &rows[pos + ROW_HEADER_LEN..pos + ROW_HEADER_LEN + len];
        if keep(position) {
            out.extend_from_slice(&prefix);
            out.extend_from_slice(&position.to_le_bytes());
            out.extend_from_slice(body);
            written += 1;
        }
        pos += ROW_HEADER_LEN + len;
        position += 1;
    }
    written
}

/// Reads RowBinary values (of query answers).
pub struct RowReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A RowBinary answer that ended early or held a bad length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("RowBinary data truncated at byte {0}")]
pub struct Truncated(pub usize);

impl<'a> RowReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        RowReader { bytes, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(Truncated(self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let mut b = [0; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    pub fn i64(&mut self) -> Result<i64, Truncated> {
        Ok(i64::from_le_bytes(self.fixed()?))
    }

    fn leb128(&mut self) -> Result<u64, Truncated> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Truncated(self.pos))
    }

    pub fn string(&mut self) -> Result<bytes::Bytes, Truncated> {
        let len = usize::try_from(self.leb128()?).map_err(|_| Truncated(self.pos))?;
        Ok(bytes::Bytes::copy_from_slice(self.take(len)?))
    }

    pub fn nullable_string(&mut self) -> Result<Option<bytes::Bytes>, Truncated> {
        match self.take(1)?[0] {
            0 => self.string().map(Some),
            _ => Ok(None),
        }
    }

    /// An array; its count is checked against the bytes left (each element takes one at least).
    pub fn array<T>(&mut self, mut element: impl FnMut(&mut Self) -> Result<T, Truncated>) -> Result<Vec<T>, Truncated> {
        let count = usize::try_from(self.leb128()?).map_err(|_| Truncated(self.pos))?;
        if count > self.bytes.len() - self.pos {
            return Err(Truncated(self.pos));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(out)
    }
}

/// The arrival time (ms) of the first row of a batch's rows.
pub(crate) fn first_arrival_ms(rows: &[u8]) -> Option<i64> {
    // Body: event_time u32, event_time_ms i64, arrival_time u32, arrival_time_ms i64.
    let at = ROW_HEADER_LEN + 4 + 8 + 4;
    rows.get(at..at + 8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Milliseconds since the epoch as a `DateTime` (UInt32 seconds), clamped to its range.
fn date_time(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

#[inline]
fn put_leb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn leb128_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub(crate) fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_leb128(out, s.len() as u64);
    out.extend_from_slice(s);
}

#[inline]
fn put_nullable(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        None => out.push(1),
        Some(s) => {
            out.push(0);
            put_string(out, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntryBatch, Encoding};

    #[test]
    fn leb128_lengths_match_the_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_leb128(&mut b, v);
            assert_eq!(b.len(), leb128_len(v), "{v}");
        }
    }

    #[test]
    fn a_row_is_its_columns_in_order() {
        let mut batch = EntryBatch::with_encoding(Encoding::Rows, 1 << 20, 0);
        let mut w = batch.begin(1_500, 2_000, b"1.2.3.4:5", Some(b"k"));
        w.header(b"h", None);
        let mut w = w.fields();
        w.field(b"a", b"1");
        w.finish().unwrap();
        let mut w = batch.begin(-5, 2_000, b"s", None).fields();
        w.content(b"raw");
        w.finish_with_tag(Some(b"ignored")).unwrap();
        assert_eq!(batch.len(), 2);
        let bytes = batch.bytes();
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let mut want = Vec::new();
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&1_500i64.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&2_000i64.to_le_bytes());
        want.extend_from_slice(b"\x091.2.3.4:5");
        want.extend_from_slice(b"\x00\x01k");
        want.extend_from_slice(b"\x01\x01h\x01\x01");
        want.extend_from_slice(b"\x00");
        want.extend_from_slice(b"\x01\x01a\x01\x011");
        assert_eq!(&bytes[4..4 + len], &want[..]);
        // A time before the epoch is clamped to 0 for the DateTime column.
        assert_eq!(&bytes[8 + len..12 + len], &0u32.to_le_bytes());
        let mut out = Vec::new();
        let shared = BatchColumns {
            project: "p", logstore: "l", shard: 1, retention_hours: 0, node_id: 3, insert_id: 9, batch_id: 100,
            producer_id: -1, producer_epoch: -1, producer_lane: 0, sequence_first: -1, sequence_last: -1,
        };
        assert_eq!(write_insert_rows(&mut out, &shared, bytes, |p| p == 1), 1);
        let prefix = shared.encode();
        assert_eq!(&out[..prefix.len()], &prefix[..]);
        assert_eq!(&out[prefix.len()..prefix.len() + 4], &1u32.to_le_bytes());
    }

    #[test]
    fn a_row_too_large_is_refused_and_removed() {
        let mut batch = EntryBatch::with_encoding(Encoding::Rows, 64, 0);
        let mut w = batch.begin(0, 0, b"s", None).fields();
        w.content(&[b'x'; 100]);
        assert!(matches!(w.finish(), Err(crate::StorageError::EntryTooLarge { limit: 64, .. })));
        assert!(batch.is_empty() && batch.bytes_len() == 0);
    }
}
