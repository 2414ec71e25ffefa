//! Entry framing and binary encoding of logs: the one owner of the on-disk format.
//!
//! A segment is frames back to back. Frame: `u32 LE payload_len | u32 LE crc32c(payload) |
//! payload`; the first payload byte tells what it holds:
//! - version 3, a **block**: the logs of one append request, written and acknowledged as
//!   one unit under one checksum (what this code writes):
//!   ```text
//!   u8  version = 3
//!   u64 base_offset      (the offset of its first log)
//!   u32 count            (at least 1)
//!   count times: u32 log_len | log payload (version 2, below)
//!   ```
//!   nothing may follow the last log. Inside a block a log payload's `offset` is its
//!   position in the block (0, 1, ...), so that a batch is complete before the writer knows
//!   where it goes: sealing writes only the block header and one checksum, it does not walk
//!   the logs. A log's offset is `base_offset` plus that position.
//! - version 1 or 2: one log per frame (written by earlier versions, still read; a segment
//!   may hold such frames followed by blocks).
//! - version 5, a **packed block**: the logs of one append request kept in the form their
//!   writer packed them in (the gateway keeps a raw topic's Kafka record batches as the
//!   client sent them, once checked), under one checksum. Storage does not read the packed
//!   bytes: reads hand them to the store's [`Unpack`](crate::Unpack), which gives the logs
//!   back; recovery and the index use the header:
//!   ```text
//!   u8  version = 5
//!   u64 base_offset, u32 count       (as in a block, at the same places)
//!   i64 min_time, i64 max_time       (event times of its logs)
//!   i64 arrival_time_ms              (of every log)
//!   u8  packing                      (the writer's name for the form)
//!   bytes source, nbytes tag         (of every log; the tag is its first log's)
//!   the packed bytes, to the end (at least one)
//!   ```
//! - version 4, **padding**: no logs, any bytes (zeros as written). The shard writer ends a
//!   large direct write with one so that the data ends on a [`BLOCK`](super::direct::BLOCK)
//!   boundary and the next write needs no partial block in front of it (no staging copy,
//!   see `direct.rs`). Readers and recovery skip it; it takes no offset.
//!
//! Log payload (version 2; version 1 is the same without the trailing tag), all integers
//! little-endian:
//! ```text
//! u8  version = 2
//! u64 offset
//! i64 event_time_ms
//! i64 arrival_time_ms
//! bytes source
//! nbytes key
//! u32 header_count, then per header: bytes key, nbytes value
//! u32 field_count,  then per field:  bytes name, bytes value
//! nbytes tag
//! ```
//! where `bytes` is `u32 len | len bytes` and `nbytes` is the same with `len = u32::MAX`
//! meaning null.
//!
//! An [`EntryBatch`](crate::EntryBatch) of the local encoding is one unsealed block:
//! [`BLOCK_HEADER_LEN`] bytes of placeholders (payload length, checksum, version, base
//! offset, count), then each log as [`FrameBuilder`] writes it (`u32 log_len | payload`).
//! The shard writer takes the buffer as it is (no copy for the first request of a group)
//! and [`seal_block`] fills in the base offset, the count, the length and the one checksum.

use bytes::Bytes;

use crate::LogEntry;

/// Bytes of the frame header (`payload_len`, `crc`).
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Payload version of a block frame.
pub(crate) const BLOCK_VERSION: u8 = 3;
/// Payload version of a padding frame.
pub(crate) const PAD_VERSION: u8 = 4;
/// Payload version of a packed block.
pub(crate) const PACKED_VERSION: u8 = 5;
/// Smallest padding frame: its header and version byte.
pub(crate) const MIN_PAD_LEN: usize = FRAME_HEADER_LEN + 1;
/// Bytes of a block before its first log: frame header, version, base offset, count.
pub(crate) const BLOCK_HEADER_LEN: usize = FRAME_HEADER_LEN + BLOCK_HEAD_LEN;
/// Bytes of a block's payload before its first log: version, base offset, count.
const BLOCK_HEAD_LEN: usize = 1 + 8 + 4;
/// Bytes before each log's payload inside a block (its length).
pub(crate) const LOG_HEADER_LEN: usize = 4;
/// Log payload format version written by this code.
pub(crate) const PAYLOAD_VERSION: u8 = 2;
/// Oldest payload version still read (no tag).
const PAYLOAD_VERSION_V1: u8 = 1;
/// Position of the offset inside the payload (right after the version byte).
const OFFSET_POS: usize = 1;
/// Position of the event and arrival times inside the payload (after the offset).
const TIMES_POS: usize = OFFSET_POS + 8;
/// Largest payload any frame may claim; larger lengths are treated as corruption.
pub(crate) const MAX_PAYLOAD_LEN: usize = 1 << 30;
/// Length value that marks a null `nbytes`.
const NULL_LEN: u32 = u32::MAX;

/// Why a payload failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("payload truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown payload version {0}")]
    Version(u8),
    #[error("{0} trailing bytes after payload")]
    Trailing(usize),
    #[error("packed block {0}")]
    Packed(&'static str),
}

/// One log of an unsealed block being written at the end of a buffer (after the block's
/// header, see the module docs), part by part in payload order: [`begin`](Self::begin),
/// headers, [`end_headers`](Self::end_headers), fields, [`end`](Self::end). `log_len` starts
/// as a zero placeholder; `end` fills it in, and the counts.
///
/// The builder does not own the buffer: the caller passes the same one to every call, writes
/// nothing else into it meanwhile, and abandons a frame by truncating the buffer back to
/// [`start`](Self::start).
#[derive(Debug)]
pub(crate) struct FrameBuilder {
    /// Where the log's length is.
    start: usize,
    /// Where the count of the current list (headers, then fields) is.
    count_at: usize,
    /// Items written to the current list.
    count: usize,
    /// Whether the headers are done and fields are being written.
    in_fields: bool,
}

impl FrameBuilder {
    /// Writes the length placeholder, the fixed part (`offset`: the log's position in its
    /// block), `source` and `key`.
    #[inline]
    pub(crate) fn begin(
        out: &mut Vec<u8>,
        offset: u64,
        event_time_ms: i64,
        arrival_time_ms: i64,
        source: &[u8],
        key: Option<&[u8]>,
    ) -> Self {
        let start = out.len();
        // Length, version, offset and times at once.
        let mut fixed = [0; LOG_HEADER_LEN + TIMES_POS + 16];
        fixed[LOG_HEADER_LEN] = PAYLOAD_VERSION;
        fixed[LOG_HEADER_LEN + OFFSET_POS..LOG_HEADER_LEN + TIMES_POS]
            .copy_from_slice(&offset.to_le_bytes());
        let times = &mut fixed[LOG_HEADER_LEN + TIMES_POS..];
        times[..8].copy_from_slice(&event_time_ms.to_le_bytes());
        times[8..].copy_from_slice(&arrival_time_ms.to_le_bytes());
        out.extend_from_slice(&fixed);
        put_bytes(out, source);
        put_nbytes(out, key);
        let count_at = put_count_placeholder(out);
        FrameBuilder {
            start,
            count_at,
            count: 0,
            in_fields: false,
        }
    }

    /// Where the log (its length) starts in the buffer.
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// Replaces the event time written by [`begin`](Self::begin).
    #[inline]
    pub(crate) fn set_event_time(&self, out: &mut [u8], event_time_ms: i64) {
        let at = self.start + LOG_HEADER_LEN + TIMES_POS;
        out[at..at + 8].copy_from_slice(&event_time_ms.to_le_bytes());
    }

    /// Appends one header (only before [`end_headers`](Self::end_headers)).
    #[inline]
    pub(crate) fn header(&mut self, out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
        debug_assert!(!self.in_fields);
        put_bytes(out, key);
        put_nbytes(out, value);
        self.count += 1;
    }

    /// Closes the header list and opens the field list; does nothing the second time.
    #[inline]
    pub(crate) fn end_headers(&mut self, out: &mut Vec<u8>) {
        if !self.in_fields {
            self.close_list(out);
            self.count_at = put_count_placeholder(out);
            self.in_fields = true;
        }
    }

    /// Appends one field (only after [`end_headers`](Self::end_headers)).
    #[inline]
    pub(crate) fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        debug_assert!(self.in_fields);
        put_bytes(out, name);
        put_bytes(out, value);
        self.count += 1;
    }

    /// Writes `tag`, completes the counts and `log_len`, and returns the payload's length;
    /// or, when the payload would be longer than `limit` (at most [`MAX_PAYLOAD_LEN`]),
    /// returns `Err(payload length)` and leaves the log unfinished.
    #[inline]
    pub(crate) fn end(
        &mut self,
        out: &mut Vec<u8>,
        tag: Option<&[u8]>,
        limit: usize,
    ) -> Result<usize, usize> {
        debug_assert!(limit <= MAX_PAYLOAD_LEN);
        let tag_len = 4 + tag.map_or(0, <[u8]>::len);
        // With no fields yet, the list still to write is an empty field count.
        let rest = if self.in_fields { 0 } else { 4 };
        let payload_len = out.len() - self.start - LOG_HEADER_LEN + rest + tag_len;
        if payload_len > limit {
            return Err(payload_len);
        }
        self.end_headers(out);
        self.close_list(out);
        put_nbytes(out, tag);
        // Within `limit`, so it fits a u32, and so does each count (8 bytes per item at least).
        out[self.start..self.start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        debug_assert_eq!(out.len() - self.start, LOG_HEADER_LEN + payload_len);
        Ok(payload_len)
    }

    /// Writes the current list's count into its placeholder.
    #[inline]
    fn close_list(&mut self, out: &mut [u8]) {
        let count = u32::try_from(self.count).unwrap_or(u32::MAX);
        out[self.count_at..self.count_at + 4].copy_from_slice(&count.to_le_bytes());
        self.count = 0;
    }
}

/// Appends a zero `u32` to be filled in later; returns its position.
#[inline]
fn put_count_placeholder(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    at
}

/// The header placeholders of an unsealed block, written before its first log.
pub(crate) fn begin_block(out: &mut Vec<u8>) {
    let mut head = [0u8; BLOCK_HEADER_LEN];
    head[FRAME_HEADER_LEN] = BLOCK_VERSION;
    out.extend_from_slice(&head);
}

/// What a frame holds, as sealing or validation finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameSummary {
    /// Logs in the frame.
    pub count: u64,
    /// Smallest and largest event time of its logs.
    pub min_time: i64,
    pub max_time: i64,
    /// Largest arrival time of its logs.
    pub max_arrival: i64,
}

impl FrameSummary {
    /// Of no log yet.
    pub(crate) fn new() -> Self {
        FrameSummary {
            count: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
            max_arrival: i64::MIN,
        }
    }

    /// Adds a log with these times.
    #[inline]
    pub(crate) fn add(&mut self, event_time_ms: i64, arrival_time_ms: i64) {
        self.count += 1;
        self.min_time = self.min_time.min(event_time_ms);
        self.max_time = self.max_time.max(event_time_ms);
        self.max_arrival = self.max_arrival.max(arrival_time_ms);
    }
}

/// Seals an unsealed block that is all of `block` (as an `EntryBatch` of `count` logs built
/// it): writes `base_offset`, the count, the payload length and the checksum (computed once,
/// last, over the whole payload). The logs are not walked. `None` (nothing written) when
/// the block's payload would be longer than [`MAX_PAYLOAD_LEN`] (nothing reads such a frame
/// back) or it holds no log.
pub(crate) fn seal_block(block: &mut [u8], base_offset: u64, count: u32) -> Option<()> {
    let payload_len = block.len().checked_sub(FRAME_HEADER_LEN)?;
    if payload_len > MAX_PAYLOAD_LEN || block.len() <= BLOCK_HEADER_LEN || count == 0 {
        return None;
    }
    debug_assert!(matches!(block[FRAME_HEADER_LEN], BLOCK_VERSION | PACKED_VERSION));
    let head = &mut block[FRAME_HEADER_LEN + 1..BLOCK_HEADER_LEN];
    head[..8].copy_from_slice(&base_offset.to_le_bytes());
    head[8..].copy_from_slice(&count.to_le_bytes());
    block[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    let crc = crc32c::crc32c(&block[FRAME_HEADER_LEN..]);
    block[4..8].copy_from_slice(&crc.to_le_bytes());
    Some(())
}

/// Writes `count` into the header of an unsealed block (to read it back before sealing).
pub(crate) fn set_block_count(block: &mut [u8], count: u32) {
    block[BLOCK_HEADER_LEN - 4..BLOCK_HEADER_LEN].copy_from_slice(&count.to_le_bytes());
}

/// The start of a frame, from the first bytes of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Logs in it.
    pub count: u64,
    /// A block's base offset (`None`: a one-log frame, whose offset is in its payload).
    pub base_offset: Option<u64>,
    /// Whether it is a packed block (its logs are read with an [`Unpack`](crate::Unpack)).
    pub packed: bool,
}

/// Appends a padding frame to `out` that makes `end + out.len()` a multiple of `block`
/// (`end`: where `out` will start in the file); nothing when it already is one. The frame
/// is at least [`MIN_PAD_LEN`] bytes, so it may reach to the boundary after the next.
pub(crate) fn pad_to(out: &mut Vec<u8>, end: u64, block: usize) {
    let at = (end + out.len() as u64) % block as u64;
    if at == 0 {
        return;
    }
    let mut gap = block - at as usize;
    if gap < MIN_PAD_LEN {
        gap += block;
    }
    let start = out.len();
    out.resize(start + gap, 0);
    let frame = &mut out[start..];
    frame[FRAME_HEADER_LEN] = PAD_VERSION;
    let crc = crc32c::crc32c(&frame[FRAME_HEADER_LEN..]);
    frame[..4].copy_from_slice(&((gap - FRAME_HEADER_LEN) as u32).to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Payload bytes [`frame_head`] looks at (fewer when the payload is shorter).
pub(crate) const FRAME_HEAD_PEEK: usize = BLOCK_HEAD_LEN;

/// What a frame holds, from the first [`FRAME_HEAD_PEEK`] bytes of its payload (or the
/// whole payload when shorter); `None` when they cannot start a valid payload.
pub(crate) fn frame_head(head: &[u8]) -> Option<FrameHead> {
    match *head.first()? {
        PAYLOAD_VERSION_V1..=PAYLOAD_VERSION => Some(FrameHead {
            count: 1,
            base_offset: None,
            packed: false,
        }),
        PAD_VERSION => Some(FrameHead {
            count: 0,
            base_offset: None,
            packed: false,
        }),
        version @ (BLOCK_VERSION | PACKED_VERSION) => {
            let base = u64::from_le_bytes(head.get(1..9)?.try_into().ok()?);
            let count = u64::from(u32::from_le_bytes(head.get(9..13)?.try_into().ok()?));
            (count > 0).then_some(FrameHead {
                count,
                base_offset: Some(base),
                packed: version == PACKED_VERSION,
            })
        }
        _ => None,
    }
}

/// The logs of a frame's payload, as ranges of it: the whole payload for a one-log frame,
/// each inner log of a block. Ends with an error when the block's layout is broken (a
/// length past the end, more or fewer logs than its count, or bytes after them); the logs
/// themselves are not checked.
pub(crate) fn logs(payload: &[u8]) -> Logs<'_> {
    let (block, left) = match payload.first() {
        Some(&BLOCK_VERSION) => (
            true,
            payload
                .get(9..BLOCK_HEAD_LEN)
                .map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Some(&PAD_VERSION) => (false, 0),
        _ => (false, 1),
    };
    Logs {
        payload,
        pos: if block { BLOCK_HEAD_LEN } else { 0 },
        left,
        block,
        failed: false,
    }
}

/// Iterator of [`logs`].
pub(crate) struct Logs<'a> {
    payload: &'a [u8],
    pos: usize,
    /// Logs still to come.
    left: u32,
    block: bool,
    failed: bool,
}

impl Iterator for Logs<'_> {
    type Item = Result<std::ops::Range<usize>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let len = self.payload.len();
        let err = |this: &mut Self, e| {
            this.failed = true;
            Some(Err(e))
        };
        if !self.block {
            if self.left == 0 {
                return None;
            }
            self.left = 0;
            return Some(Ok(0..len));
        }
        if self.left == 0 {
            if len < BLOCK_HEAD_LEN {
                return err(self, CodecError::Truncated(len));
            }
            if self.pos == BLOCK_HEAD_LEN {
                // A block holds at least one log.
                return err(self, CodecError::Truncated(BLOCK_HEAD_LEN));
            }
            if self.pos != len {
                return err(self, CodecError::Trailing(len - self.pos));
            }
            self.failed = true;
            return None;
        }
        let Some(log_len) = self
            .payload
            .get(self.pos..self.pos + LOG_HEADER_LEN)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            return err(self, CodecError::Truncated(self.pos));
        };
        let start = self.pos + LOG_HEADER_LEN;
        let Some(end) = start.checked_add(log_len).filter(|&e| e <= len) else {
            return err(self, CodecError::Truncated(self.pos));
        };
        self.left -= 1;
        self.pos = end;
        Some(Ok(start..end))
    }
}

/// Checks every log of a frame's payload (a one-log frame or a block), whose first log must
/// have `first_offset` and the others the offsets after it, without building entries.
pub(crate) fn validate_frame(payload: &[u8], first_offset: u64) -> Result<FrameSummary, String> {
    let head = frame_head(&payload[..payload.len().min(FRAME_HEAD_PEEK)])
        .ok_or_else(|| "unknown or truncated frame start".to_string())?;
    if let Some(base) = head.base_offset {
        if base != first_offset {
            return Err(format!("block of offset {base}, expected {first_offset}"));
        }
    }
    if head.packed {
        return packed(payload).map(|p| p.summary).map_err(|e| format!("packed block: {e}"));
    }
    let mut summary = FrameSummary::new();
    for range in logs(payload) {
        let range = range.map_err(|e| format!("block: {e}"))?;
        let at = range.start;
        let m = validate(&payload[range]).map_err(|e| format!("log at payload byte {at}: {e}"))?;
        // Inside a block, a log's offset is its position in it.
        let want = if head.base_offset.is_some() { summary.count } else { first_offset };
        if m.offset != want {
            return Err(format!("offset {} at payload byte {at}, expected {want}", m.offset));
        }
        summary.add(m.event_time_ms, m.arrival_time_ms);
    }
    Ok(summary)
}

/// Bytes of a packed block's payload before its source: the block's head, the times and
/// the packing.
const PACKED_HEAD_LEN: usize = BLOCK_HEAD_LEN + 8 + 8 + 8 + 1;

/// Writes a packed block that is all of `out` (empty before): placeholders for the frame
/// header, base offset and count (as [`seal_block`] fills in), then `p`'s header and bytes.
pub(crate) fn write_packed(out: &mut Vec<u8>, p: &crate::PackedLogs<'_>) {
    debug_assert!(out.is_empty());
    out.reserve(BLOCK_HEADER_LEN + PACKED_HEAD_LEN - BLOCK_HEAD_LEN + 8 + p.source.len() + p.tag.map_or(0, <[u8]>::len) + p.bytes.iter().map(|b| b.len()).sum::<usize>());
    let mut head = [0u8; FRAME_HEADER_LEN + PACKED_HEAD_LEN];
    head[FRAME_HEADER_LEN] = PACKED_VERSION;
    let times = &mut head[BLOCK_HEADER_LEN..];
    times[..8].copy_from_slice(&p.min_event_time_ms.to_le_bytes());
    times[8..16].copy_from_slice(&p.max_event_time_ms.to_le_bytes());
    times[16..24].copy_from_slice(&p.arrival_time_ms.to_le_bytes());
    times[24] = p.packing;
    out.extend_from_slice(&head);
    put_bytes(out, p.source);
    put_nbytes(out, p.tag);
    for part in p.bytes {
        out.extend_from_slice(part);
    }
}

/// A packed block's payload, parsed (the packed bytes not looked at).
pub(crate) struct PackedFrame<'a> {
    pub summary: FrameSummary,
    pub packing: u8,
    pub source: &'a [u8],
    pub tag: Option<&'a [u8]>,
    /// Where the packed bytes start in the payload (they go to its end).
    pub bytes_at: usize,
}

/// Parses a packed block's payload: its header must be whole, with a count of at least one,
/// times in order and at least one packed byte after it.
pub(crate) fn packed(payload: &[u8]) -> Result<PackedFrame<'_>, CodecError> {
    let mut c = Cursor { buf: payload, pos: 0 };
    let [version] = c.array()?;
    if version != PACKED_VERSION {
        return Err(CodecError::Version(version));
    }
    let _base = u64::from_le_bytes(c.array()?);
    let count = c.u32()?;
    let min_time = i64::from_le_bytes(c.array()?);
    let max_time = i64::from_le_bytes(c.array()?);
    let arrival = i64::from_le_bytes(c.array()?);
    let [packing] = c.array()?;
    if count == 0 {
        return Err(CodecError::Packed("of no log"));
    }
    if min_time > max_time {
        return Err(CodecError::Packed("with its times out of order"));
    }
    let source_len = c.u32()? as usize;
    let source_at = c.pos;
    c.take(source_len)?;
    let tag_at = c.pos;
    let tag = match c.u32()? {
        NULL_LEN => None,
        len => {
            c.take(len as usize)?;
            Some(&payload[tag_at + 4..c.pos])
        }
    };
    if c.remaining() == 0 {
        return Err(CodecError::Packed("without packed bytes"));
    }
    Ok(PackedFrame {
        summary: FrameSummary { count: u64::from(count), min_time, max_time, max_arrival: arrival },
        packing,
        source: &payload[source_at..source_at + source_len],
        tag,
        bytes_at: c.pos,
    })
}

/// Bytes of a log payload besides its parts: the fixed part, then the length or count of
/// source, key, headers, fields and tag. Each header and field adds two lengths
/// ([`LENGTH_LEN`] each) and its bytes.
pub(crate) const PAYLOAD_FIXED_LEN: usize = TIMES_POS + 16 + 5 * LENGTH_LEN;
/// Bytes of a length (or count) in a log payload.
pub(crate) const LENGTH_LEN: usize = 4;

/// Parsed frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHeader {
    pub payload_len: usize,
    pub crc: u32,
}

impl FrameHeader {
    /// Parses the 8 header bytes.
    pub(crate) fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            payload_len: read_u32(b, 0) as usize,
            crc: read_u32(b, 4),
        }
    }

    /// Whether the claimed length is possible at all.
    pub(crate) fn plausible(&self) -> bool {
        self.payload_len > 0 && self.payload_len <= MAX_PAYLOAD_LEN
    }

    /// Whole frame length.
    pub(crate) fn frame_len(&self) -> u64 {
        (FRAME_HEADER_LEN + self.payload_len) as u64
    }
}

/// Whether `payload` matches the checksum.
pub(crate) fn checksum_ok(payload: &[u8], crc: u32) -> bool {
    crc32c::crc32c(payload) == crc
}

/// Decodes a payload into its offset and entry; slices share `payload`'s memory.
pub(crate) fn decode(payload: &Bytes) -> Result<(u64, LogEntry), CodecError> {
    let mut c = Cursor {
        buf: payload,
        pos: 0,
    };
    let (version, offset, event_time_ms, arrival_time_ms) = c.fixed_part()?;
    let source = c.bytes()?;
    let key = c.nbytes()?;
    let n = c.u32()? as usize;
    // Each header takes at least 8 bytes: never reserve more than could be there.
    let mut headers = Vec::with_capacity(n.min(c.remaining() / 8));
    for _ in 0..n {
        let k = c.bytes()?;
        let v = c.nbytes()?;
        headers.push((k, v));
    }
    let n = c.u32()? as usize;
    let mut fields = Vec::with_capacity(n.min(c.remaining() / 8));
    for _ in 0..n {
        let k = c.bytes()?;
        let v = c.bytes()?;
        fields.push((k, v));
    }
    let tag = if version >= PAYLOAD_VERSION {
        c.nbytes()?
    } else {
        None
    };
    c.finish()?;
    Ok((
        offset,
        LogEntry {
            event_time_ms,
            arrival_time_ms,
            source,
            key,
            headers,
            fields,
            tag,
        },
    ))
}

/// Offset and times of a frame, as validation finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameMeta {
    pub offset: u64,
    pub event_time_ms: i64,
    pub arrival_time_ms: i64,
}

/// Event and arrival time of a log payload (version 1 or 2), read without
/// decoding the rest; `None` when the payload is too short.
pub(crate) fn times(payload: &[u8]) -> Option<(i64, i64)> {
    let t = |at: usize| -> Option<i64> {
        let b: [u8; 8] = payload.get(at..at + 8)?.try_into().ok()?;
        Some(i64::from_le_bytes(b))
    };
    Some((t(TIMES_POS)?, t(TIMES_POS + 8)?))
}

/// Checks that a payload is well formed without building the entry.
pub(crate) fn validate(payload: &[u8]) -> Result<FrameMeta, CodecError> {
    let mut c = Cursor {
        buf: payload,
        pos: 0,
    };
    let (version, offset, event_time_ms, arrival_time_ms) = c.fixed_part()?;
    c.skip_bytes(false)?;
    c.skip_bytes(true)?;
    for _ in 0..c.u32()? {
        c.skip_bytes(false)?;
        c.skip_bytes(true)?;
    }
    for _ in 0..c.u32()? {
        c.skip_bytes(false)?;
        c.skip_bytes(false)?;
    }
    if version >= PAYLOAD_VERSION {
        c.skip_bytes(true)?;
    }
    c.finish()?;
    Ok(FrameMeta {
        offset,
        event_time_ms,
        arrival_time_ms,
    })
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

#[inline]
fn put_nbytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => put_bytes(out, b),
        None => out.extend_from_slice(&NULL_LEN.to_le_bytes()),
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Bounds-checked reader over a payload.
struct Cursor<'a, B: ?Sized + AsRef<[u8]>> {
    buf: &'a B,
    pos: usize,
}

impl<B: ?Sized + AsRef<[u8]>> Cursor<'_, B> {
    fn remaining(&self) -> usize {
        self.buf.as_ref().len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        let buf = self.buf.as_ref();
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= buf.len())
            .ok_or(CodecError::Truncated(self.pos))?;
        let s = &buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn fixed_part(&mut self) -> Result<(u8, u64, i64, i64), CodecError> {
        let [version] = self.array()?;
        if !(PAYLOAD_VERSION_V1..=PAYLOAD_VERSION).contains(&version) {
            return Err(CodecError::Version(version));
        }
        let offset = u64::from_le_bytes(self.array()?);
        let event = i64::from_le_bytes(self.array()?);
        let arrival = i64::from_le_bytes(self.array()?);
        Ok((version, offset, event, arrival))
    }

    /// Skips one `bytes` (or `nbytes` when `nullable`).
    fn skip_bytes(&mut self, nullable: bool) -> Result<(), CodecError> {
        let len = self.u32()?;
        if !(nullable && len == NULL_LEN) {
            self.take(len as usize)?;
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

impl Cursor<'_, Bytes> {
    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..self.pos))
    }

    fn nbytes(&mut self) -> Result<Option<Bytes>, CodecError> {
        let start = self.pos;
        if self.u32()? == NULL_LEN {
            return Ok(None);
        }
        self.pos = start;
        self.bytes().map(Some)
    }
}


/// The earlier one-log frames, for tests and benchmarks (old data must stay readable and
/// appendable; the seal of old and new is measured side by side). Not a stable API.
#[doc(hidden)]
pub mod bench {
    use super::{read_u32, seal_block, BLOCK_HEADER_LEN, FRAME_HEADER_LEN, LOG_HEADER_LEN, OFFSET_POS};

    /// The logs of an unsealed block (an `EntryBatch`'s bytes) as unsealed one-log frames
    /// back to back, the way this code wrote them before blocks.
    pub fn unsealed_old_frames(block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() * 2);
        let mut pos = BLOCK_HEADER_LEN.min(block.len());
        while pos < block.len() {
            let len = read_u32(block, pos) as usize;
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&block[pos + LOG_HEADER_LEN..pos + LOG_HEADER_LEN + len]);
            pos += LOG_HEADER_LEN + len;
        }
        out
    }

    /// Seals one-log frames as the writer did before blocks (offset, then a checksum per
    /// frame); returns how many.
    pub fn seal_old_frames(frames: &mut [u8], first_offset: u64) -> u64 {
        let (mut p, mut n) = (0, 0);
        while p < frames.len() {
            let frame = &mut frames[p..];
            let len = read_u32(frame, 0) as usize;
            let end = FRAME_HEADER_LEN + len;
            let payload = &mut frame[FRAME_HEADER_LEN..end];
            payload[OFFSET_POS..OFFSET_POS + 8].copy_from_slice(&(first_offset + n).to_le_bytes());
            let (event, arrival) = super::times(payload).unwrap_or((0, 0));
            std::hint::black_box((event, arrival));
            let crc = crc32c::crc32c(payload);
            frame[4..8].copy_from_slice(&crc.to_le_bytes());
            p += end;
            n += 1;
        }
        n
    }

    /// The unsealed block of a batch of the local encoding, as the shard writer takes it.
    pub fn unsealed_block(batch: crate::EntryBatch) -> Vec<u8> {
        batch.into_bytes()
    }

    /// Seals an unsealed block of `count` logs as the writer does; whether it could.
    pub fn seal_new_block(block: &mut [u8], first_offset: u64, count: u32) -> bool {
        seal_block(block, first_offset, count).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_frames_end_on_the_boundary_and_hold_no_logs() {
        for (end, len) in [(0u64, 1usize), (0, 4095 - 8), (0, 4088), (4096, 4087), (100, 5000), (7, 0), (4096, 0)] {
            let mut out = vec![7u8; len];
            pad_to(&mut out, end, 4096);
            let total = end + out.len() as u64;
            assert!(total.is_multiple_of(4096), "end {end} len {len}");
            if (end + len as u64).is_multiple_of(4096) {
                assert_eq!(out.len(), len, "already on a boundary: nothing added");
                continue;
            }
            let frame = &out[len..];
            assert!(frame.len() >= MIN_PAD_LEN && frame.len() < 4096 + MIN_PAD_LEN);
            let h = FrameHeader::parse(frame[..FRAME_HEADER_LEN].try_into().unwrap());
            assert!(h.plausible());
            assert_eq!(h.frame_len(), frame.len() as u64);
            let payload = &frame[FRAME_HEADER_LEN..];
            assert!(checksum_ok(payload, h.crc));
            let head = frame_head(&payload[..payload.len().min(FRAME_HEAD_PEEK)]).unwrap();
            assert_eq!((head.count, head.base_offset), (0, None));
            assert_eq!(logs(payload).count(), 0);
            assert_eq!(validate_frame(payload, 42).unwrap().count, 0);
        }
    }

    fn sample() -> LogEntry {
        LogEntry {
            event_time_ms: -5,
            arrival_time_ms: 1_700_000_000_000,
            source: Bytes::from_static(b"127.0.0.1:1"),
            key: None,
            headers: vec![
                (Bytes::from_static(b"h"), None),
                (
                    Bytes::from_static(b"h"),
                    Some(Bytes::from_static(b"\xff\x00")),
                ),
            ],
            fields: vec![
                (Bytes::from_static(b"msg"), Bytes::from_static(b"")),
                (Bytes::from_static(b"\xc3\x28"), Bytes::from_static(b"v")),
            ],
            tag: None,
        }
    }

    /// An old one-log frame of `entry`.
    fn framed(entry: &LogEntry, offset: u64) -> Vec<u8> {
        let mut batch = crate::EntryBatch::new(MAX_PAYLOAD_LEN);
        batch.push(entry).unwrap();
        let mut buf = bench::unsealed_old_frames(&batch.into_bytes());
        assert_eq!(bench::seal_old_frames(&mut buf, offset), 1);
        buf
    }

    fn entries(n: usize) -> Vec<LogEntry> {
        (0..n)
            .map(|i| {
                let mut e = sample();
                e.event_time_ms = 100 - i as i64;
                e.arrival_time_ms = i as i64;
                e.fields.push((Bytes::from_static(b"i"), Bytes::from(i.to_string())));
                e.tag = (i == 1).then(|| Bytes::from_static(b"tag"));
                e
            })
            .collect()
    }

    /// A sealed block of `entries` starting at `offset`.
    fn block(entries: &[LogEntry], offset: u64) -> (Vec<u8>, FrameSummary) {
        let batch = crate::EntryBatch::from_entries(entries, MAX_PAYLOAD_LEN).unwrap();
        let summary = batch.frame_summary();
        let mut buf = batch.into_bytes();
        seal_block(&mut buf, offset, entries.len() as u32).unwrap();
        (buf, summary)
    }

    #[test]
    fn blocks_round_trip() {
        let es = entries(5);
        let (buf, summary) = block(&es, 40);
        assert_eq!(
            summary,
            FrameSummary { count: 5, min_time: 96, max_time: 100, max_arrival: 4 }
        );
        let h = FrameHeader::parse(buf[..8].try_into().unwrap());
        assert_eq!(h.frame_len() as usize, buf.len());
        let payload = Bytes::copy_from_slice(&buf[8..]);
        assert!(checksum_ok(&payload, h.crc));
        assert_eq!(payload[0], BLOCK_VERSION);
        assert_eq!(
            frame_head(&payload[..FRAME_HEAD_PEEK]),
            Some(FrameHead { count: 5, base_offset: Some(40), packed: false })
        );
        assert_eq!(validate_frame(&payload, 40), Ok(summary));
        assert!(validate_frame(&payload, 41).is_err());
        let decoded: Vec<(u64, LogEntry)> = logs(&payload)
            .map(|r| decode(&payload.slice(r.unwrap())).unwrap())
            .collect();
        // Inside a block, a log's offset field is its position in it.
        let want: Vec<(u64, LogEntry)> = es.into_iter().enumerate().map(|(i, e)| (i as u64, e)).collect();
        assert_eq!(decoded, want);
        // Per-log framing is 4 bytes instead of 8.
        let old: usize = want.iter().map(|(o, e)| framed(e, *o).len()).sum();
        assert_eq!(old + BLOCK_HEADER_LEN - buf.len(), 5 * 4);
        // A one-log frame is one log.
        let one = framed(&want[0].1, 7);
        assert_eq!(frame_head(&one[8..21]), Some(FrameHead { count: 1, base_offset: None, packed: false }));
        assert_eq!(logs(&one[8..]).map(Result::unwrap).collect::<Vec<_>>(), vec![0..one.len() - 8]);
        assert_eq!(validate_frame(&one[8..], 7).map(|s| s.count), Ok(1));
    }

    #[test]
    fn every_truncation_and_broken_layout_of_a_block_is_an_error() {
        let (buf, _) = block(&entries(3), 0);
        let payload = &buf[8..];
        for cut in 0..payload.len() {
            assert!(validate_frame(&payload[..cut], 0).is_err(), "cut {cut}");
        }
        // Trailing bytes, a count too large or too small, no log at all.
        let mut p = payload.to_vec();
        p.push(0);
        assert!(validate_frame(&p, 0).is_err());
        for count in [0u32, 2, 4, u32::MAX] {
            let mut p = payload.to_vec();
            p[9..13].copy_from_slice(&count.to_le_bytes());
            assert!(validate_frame(&p, 0).is_err(), "count {count}");
        }
        let head = |base: u64, count: u32| {
            let mut h = vec![BLOCK_VERSION];
            h.extend_from_slice(&base.to_le_bytes());
            h.extend_from_slice(&count.to_le_bytes());
            h
        };
        assert_eq!(frame_head(&head(0, 0)), None);
        assert_eq!(frame_head(&head(0, 1)[..12]), None);
        assert_eq!(frame_head(&[9, 1, 0, 0, 0]), None);
        assert!(validate_frame(&head(0, 0), 0).is_err());
        // A block inside a block is not a log.
        let mut nested = head(0, 1);
        nested.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        nested.extend_from_slice(payload);
        assert!(validate_frame(&nested, 0).is_err());
        // A huge log length or count is refused without allocating.
        let mut p = head(0, u32::MAX);
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(validate_frame(&p, 0).is_err());
        assert_eq!(logs(&p).count(), 1);
    }

    #[test]
    fn a_block_is_sealed_with_one_checksum_over_its_payload() {
        let (mut buf, _) = block(&entries(2), 9);
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[8..]));
        // Any bit flip in it is found.
        for at in [8, 9, 13, 20, buf.len() - 1] {
            buf[at] ^= 0x10;
            assert!(!checksum_ok(&buf[8..], crc), "byte {at}");
            buf[at] ^= 0x10;
        }
        // An empty block is not sealed.
        let mut empty = Vec::new();
        begin_block(&mut empty);
        assert_eq!(seal_block(&mut empty, 0, 0), None);
        assert_eq!(seal_block(&mut buf, 0, 0), None);
    }

    #[test]
    fn version_1_payloads_still_decode_without_a_tag() {
        let mut e = sample();
        e.tag = None;
        let mut frame = framed(&e, 7);
        // A version-1 payload is the same bytes without the trailing null tag.
        frame[8] = 1;
        frame.truncate(frame.len() - 4);
        let len = (frame.len() - FRAME_HEADER_LEN) as u32;
        frame[0..4].copy_from_slice(&len.to_le_bytes());
        let payload = Bytes::copy_from_slice(&frame[FRAME_HEADER_LEN..]);
        assert_eq!(decode(&payload).unwrap(), (7, e));
        assert!(validate(&payload).is_ok());
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let buf = framed(&e, 42);
        let h = FrameHeader::parse(buf[..8].try_into().unwrap());
        assert_eq!(h.frame_len() as usize, buf.len());
        let payload = Bytes::copy_from_slice(&buf[8..]);
        assert!(checksum_ok(&payload, h.crc));
        assert_eq!(validate(&payload).map(|m| m.offset), Ok(42));
        assert_eq!(times(&payload), Some((e.event_time_ms, e.arrival_time_ms)));
        assert_eq!(decode(&payload).unwrap(), (42, e));
    }

    #[test]
    fn every_truncation_and_bad_version_is_an_error() {
        let buf = framed(&sample(), 1);
        let payload = &buf[8..];
        for cut in 0..payload.len() {
            let p = Bytes::copy_from_slice(&payload[..cut]);
            assert!(validate(&p).is_err(), "cut {cut}");
            assert!(decode(&p).is_err(), "cut {cut}");
        }
        let mut p = payload.to_vec();
        p[0] = 9;
        assert_eq!(validate(&p).map(|m| m.offset), Err(CodecError::Version(9)));
        let mut p = payload.to_vec();
        p.push(0);
        assert_eq!(validate(&p).map(|m| m.offset), Err(CodecError::Trailing(1)));
    }

    #[test]
    fn huge_counts_do_not_allocate_or_panic() {
        let mut p = vec![PAYLOAD_VERSION];
        p.extend_from_slice(&[0u8; 24]);
        p.extend_from_slice(&0u32.to_le_bytes()); // source
        p.extend_from_slice(&NULL_LEN.to_le_bytes()); // key
        p.extend_from_slice(&u32::MAX.to_le_bytes()); // header count
        let p = Bytes::from(p);
        assert!(decode(&p).is_err());
        assert!(validate(&p).is_err());
    }
}
