//! Entry framing and binary encoding of one log.
//!
//! Frame: `u32 LE payload_len | u32 LE crc32c(payload) | payload`.
//!
//! Payload (version 2; version 1 is the same without the trailing tag), all integers
//! little-endian:
//! ```text
//! u8  version = 1
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

use bytes::Bytes;

use crate::LogEntry;

/// Bytes of the frame header (`payload_len`, `crc`).
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Payload format version written by this code.
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
}

/// One unsealed frame being written at the end of a buffer, part by part in payload order:
/// [`begin`](Self::begin), headers, [`end_headers`](Self::end_headers), fields,
/// [`end`](Self::end). `payload_len`, the offset and the checksum start as zero
/// placeholders; `end` fills in `payload_len` and the counts, [`seal_frame`] the rest.
///
/// The builder does not own the buffer: the caller passes the same one to every call, writes
/// nothing else into it meanwhile, and abandons a frame by truncating the buffer back to
/// [`start`](Self::start).
#[derive(Debug)]
pub(crate) struct FrameBuilder {
    /// Where the frame header is.
    start: usize,
    /// Where the count of the current list (headers, then fields) is.
    count_at: usize,
    /// Items written to the current list.
    count: usize,
    /// Whether the headers are done and fields are being written.
    in_fields: bool,
}

impl FrameBuilder {
    /// Writes the frame header placeholders, the fixed part, `source` and `key`.
    #[inline]
    pub(crate) fn begin(
        out: &mut Vec<u8>,
        event_time_ms: i64,
        arrival_time_ms: i64,
        source: &[u8],
        key: Option<&[u8]>,
    ) -> Self {
        let start = out.len();
        // Frame header, version, offset and times at once.
        let mut fixed = [0; FRAME_HEADER_LEN + TIMES_POS + 16];
        fixed[FRAME_HEADER_LEN] = PAYLOAD_VERSION;
        let times = &mut fixed[FRAME_HEADER_LEN + TIMES_POS..];
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

    /// Where the frame starts in the buffer.
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// Replaces the event time written by [`begin`](Self::begin).
    #[inline]
    pub(crate) fn set_event_time(&self, out: &mut [u8], event_time_ms: i64) {
        let at = self.start + FRAME_HEADER_LEN + TIMES_POS;
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

    /// Writes `tag`, completes the counts and `payload_len`, and returns the payload's
    /// length; or, when the payload would be longer than `limit` (at most
    /// [`MAX_PAYLOAD_LEN`]), returns `Err(payload length)` and leaves the frame unfinished.
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
        let payload_len = out.len() - self.start - FRAME_HEADER_LEN + rest + tag_len;
        if payload_len > limit {
            return Err(payload_len);
        }
        self.end_headers(out);
        self.close_list(out);
        put_nbytes(out, tag);
        // Within `limit`, so it fits a u32, and so does each count (8 bytes per item at least).
        out[self.start..self.start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        debug_assert_eq!(out.len() - self.start, FRAME_HEADER_LEN + payload_len);
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

/// Writes `offset` and the checksum into an unsealed frame starting at `frame[0]`;
/// returns the frame's total length.
pub(crate) fn seal_frame(frame: &mut [u8], offset: u64) -> usize {
    let len = read_u32(frame, 0) as usize;
    let end = FRAME_HEADER_LEN + len;
    let payload = &mut frame[FRAME_HEADER_LEN..end];
    payload[OFFSET_POS..OFFSET_POS + 8].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(payload);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    end
}

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

/// Event and arrival time of a payload written by this code (version 1), read without
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn framed(entry: &LogEntry, offset: u64) -> Vec<u8> {
        let mut batch = crate::EntryBatch::new(MAX_PAYLOAD_LEN);
        batch.push(entry).unwrap();
        let mut buf = batch.into_bytes();
        assert_eq!(seal_frame(&mut buf, offset), buf.len());
        buf
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
