//! Reading frames back from segment files with positional reads, seeking via the index (to
//! a frame, then inside a block to the offset).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::codec::{self, FrameHeader, FRAME_HEADER_LEN};
use super::segment::SegmentState;
use crate::{EntryBatch, Packed, StoredLog, Unpack};

/// Reads a file through one buffer of positional reads, never past `end`.
pub(crate) struct ChunkReader<'a> {
    file: &'a File,
    end: u64,
    chunk: usize,
    buf: Bytes,
    buf_pos: u64,
}

impl<'a> ChunkReader<'a> {
    /// A reader of `file` up to byte `end`, reading `chunk` bytes at a time (more for big frames).
    pub(crate) fn new(file: &'a File, end: u64, chunk: usize) -> Self {
        ChunkReader {
            file,
            end,
            chunk,
            buf: Bytes::new(),
            buf_pos: 0,
        }
    }

    /// Bytes `pos..pos + len`; `UnexpectedEof` when they are not all before `end` or the file
    /// turned out shorter.
    pub(crate) fn get(&mut self, pos: u64, len: usize) -> io::Result<Bytes> {
        let want_end = pos
            .checked_add(len as u64)
            .filter(|&e| e <= self.end)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let buf_end = self.buf_pos + self.buf.len() as u64;
        if pos < self.buf_pos || want_end > buf_end {
            let read_len = (len.max(self.chunk) as u64).min(self.end - pos) as usize;
            let mut v = vec![0u8; read_len];
            self.file.read_exact_at(&mut v, pos)?;
            self.buf = Bytes::from(v);
            self.buf_pos = pos;
        }
        let start = (pos - self.buf_pos) as usize;
        Ok(self.buf.slice(start..start + len))
    }

    /// The frame header at `pos`.
    pub(crate) fn header(&mut self, pos: u64) -> io::Result<FrameHeader> {
        let b = self.get(pos, FRAME_HEADER_LEN)?;
        let mut a = [0u8; FRAME_HEADER_LEN];
        a.copy_from_slice(&b);
        Ok(FrameHeader::parse(&a))
    }
}

/// Which logs of one shard a [`LocalStore::query`](super::LocalStore::query) returns. All
/// bounds are inclusive; times are event times (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadQuery {
    /// First offset to look at (earlier offsets deleted by retention are skipped).
    pub from_offset: u64,
    /// Last offset to look at.
    pub to_offset: Option<u64>,
    /// Only logs with an event time at or after this.
    pub from_time_ms: Option<i64>,
    /// Only logs with an event time at or before this.
    pub to_time_ms: Option<i64>,
    /// Most logs to return.
    pub max_entries: usize,
}

impl ReadQuery {
    /// Up to `max_entries` logs from `from_offset` on, no other bounds.
    pub fn from_offset(from_offset: u64, max_entries: usize) -> Self {
        ReadQuery {
            from_offset,
            to_offset: None,
            from_time_ms: None,
            to_time_ms: None,
            max_entries,
        }
    }

    fn time_bounds(&self) -> Option<(i64, i64)> {
        (self.from_time_ms.is_some() || self.to_time_ms.is_some()).then(|| {
            (
                self.from_time_ms.unwrap_or(i64::MIN),
                self.to_time_ms.unwrap_or(i64::MAX),
            )
        })
    }
}

/// Result of a query: the logs found, and where to go on.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBatch {
    /// Matching logs in offset order.
    pub logs: Vec<StoredLog>,
    /// Offset to continue from: every offset before it was looked at (or skipped via the
    /// index). A query stops early after scanning a bounded amount, so a batch may be empty
    /// while `next_offset < end_offset`.
    pub next_offset: u64,
    /// First offset still stored in the shard.
    pub start_offset: u64,
    /// Offset after the last stored log, when the query started.
    pub end_offset: u64,
    /// Logs read from disk at or after the query's offset to answer (index lookups skip
    /// the rest; logs of a block before that offset are read but not counted).
    pub frames_scanned: u64,
}

impl ReadBatch {
    /// Whether nothing is left to look at: the end of the shard (so far) or past `to_offset`.
    pub fn is_done(&self, q: &ReadQuery) -> bool {
        self.next_offset >= self.end_offset || q.to_offset.is_some_and(|t| self.next_offset > t)
    }
}

/// Bytes read per positional read when reading logs.
const READ_CHUNK: usize = 256 * 1024;
/// A query stops after scanning this many logs...
const SCAN_MAX_FRAMES: u64 = 1 << 17;
/// ...or this many bytes.
const SCAN_MAX_BYTES: u64 = 64 << 20;

/// What remains of a query's scanning allowance.
#[derive(Debug)]
pub(crate) struct Budget {
    frames: u64,
    bytes: u64,
    pub scanned: u64,
}

impl Budget {
    pub(crate) fn new() -> Self {
        Budget {
            frames: SCAN_MAX_FRAMES,
            bytes: SCAN_MAX_BYTES,
            scanned: 0,
        }
    }
}

/// Why [`read_segment`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Everything of the segment from the cursor on was looked at.
    EndOfSegment,
    /// Enough logs, scanned enough, or past `to_offset`.
    Done,
}

/// Whether the log at `offset` (at or after the cursor, `bytes` long) may be looked at:
/// false when the query is done with it (past `to_offset`, which moves the cursor there,
/// enough logs, or its scanning allowance spent); true takes it from the allowance.
fn admit(offset: u64, cursor: &mut u64, q: &ReadQuery, out: &[StoredLog], budget: &mut Budget, bytes: u64) -> bool {
    if q.to_offset.is_some_and(|t| offset > t) {
        *cursor = (*cursor).max(offset);
        return false;
    }
    if out.len() >= q.max_entries || budget.frames == 0 || budget.bytes == 0 {
        return false;
    }
    budget.frames -= 1;
    budget.bytes = budget.bytes.saturating_sub(bytes);
    budget.scanned += 1;
    true
}

/// The packed block a shard's last query stopped inside (its segment, position, checksum and
/// length, and the block its logs make), so that the next query, which goes on from there,
/// does not unpack it again: at most one block per shard, let go once a read passes its end.
#[derive(Debug, Default)]
pub(crate) struct Unpacked(Option<((u64, u64, u32, usize), Bytes)>);

impl Unpacked {
    /// The block of the packed frame `key`, unpacked from `payload` unless it is the one held.
    fn get(&mut self, key: (u64, u64, u32, usize), payload: &Bytes, unpacker: Option<&dyn Unpack>) -> Result<Bytes, String> {
        if let Some((k, block)) = &self.0 {
            if *k == key {
                return Ok(block.clone());
            }
        }
        let block = unpack(payload, unpacker)?;
        self.0 = Some((key, block.clone()));
        Ok(block)
    }
}

/// The logs of a packed block's payload, by `unpacker`: the payload of the block they make.
fn unpack(payload: &Bytes, unpacker: Option<&dyn Unpack>) -> Result<Bytes, String> {
    let frame = codec::packed(payload).map_err(|e| e.to_string())?;
    let unpacker = unpacker.ok_or("packed logs, and nothing to read them with was given to the store")?;
    let packed = Packed {
        packing: frame.packing,
        count: u32::try_from(frame.summary.count).unwrap_or(u32::MAX),
        arrival_time_ms: frame.summary.max_arrival,
        source: frame.source,
        tag: frame.tag,
        bytes: payload.slice(frame.bytes_at..),
    };
    let mut logs = EntryBatch::new(usize::MAX);
    unpacker.unpack(&packed, &mut logs)?;
    logs.into_block()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the packed block gave no log".to_string())
}

/// Reads matching logs of one segment from `*cursor` on into `out`, advancing `*cursor` past
/// everything looked at. Blocks whose times cannot match are skipped without reading. A frame
/// that does not match what was validated before is an `Err(description)`.
pub(crate) fn read_segment(
    seg: &SegmentState,
    cursor: &mut u64,
    q: &ReadQuery,
    out: &mut Vec<StoredLog>,
    budget: &mut Budget,
    unpacker: Option<&dyn Unpack>,
    unpacked: &mut Unpacked,
) -> Result<Stop, String> {
    *cursor = (*cursor).max(seg.base);
    let times = q.time_bounds();
    let blocks = seg.index.blocks();
    let first = blocks
        .partition_point(|b| b.offset <= *cursor)
        .saturating_sub(1);
    let mut r = ChunkReader::new(&seg.file, seg.len, READ_CHUNK);
    for (i, b) in blocks.iter().enumerate().skip(first) {
        let (end_offset, end_pos) = blocks
            .get(i + 1)
            .map_or((seg.next_offset, seg.len), |n| (n.offset, n.pos));
        if let Some((from, to)) = times {
            if !b.may_hold(from, to) {
                *cursor = (*cursor).max(end_offset);
                continue;
            }
        }
        let (mut pos, mut offset) = (b.pos, b.offset);
        while pos < end_pos {
            if q.to_offset.is_some_and(|t| offset > t) {
                *cursor = (*cursor).max(offset);
                return Ok(Stop::Done);
            }
            if offset >= *cursor
                && (out.len() >= q.max_entries || budget.frames == 0 || budget.bytes == 0)
            {
                return Ok(Stop::Done);
            }
            let h = r
                .header(pos)
                .map_err(|e| format!("frame header at byte {pos}: {e}"))?;
            if !h.plausible() || pos + h.frame_len() > end_pos {
                return Err(format!("bad frame length {} at byte {pos}", h.payload_len));
            }
            let payload_pos = pos + FRAME_HEADER_LEN as u64;
            let head = r
                .get(payload_pos, h.payload_len.min(codec::FRAME_HEAD_PEEK))
                .map_err(|e| format!("frame at byte {pos}: {e}"))?;
            let fh = codec::frame_head(&head)
                .ok_or_else(|| format!("unknown frame kind at byte {pos}"))?;
            if fh.base_offset.is_some_and(|b| b != offset) {
                return Err(format!("block of offset {:?} at byte {pos}, expected {offset}", fh.base_offset));
            }
            // Inside a block a log's payload holds its position in the block.
            let frame_start = offset;
            let relative = fh.base_offset.is_some();
            let frame_end = offset.saturating_add(fh.count);
            if frame_end <= *cursor {
                // Every log of the frame is before the cursor: skipped unread.
                pos += h.frame_len();
                offset = frame_end;
                continue;
            }
            let payload = r
                .get(payload_pos, h.payload_len)
                .map_err(|e| format!("frame at byte {pos}: {e}"))?;
            if !codec::checksum_ok(&payload, h.crc) {
                return Err(format!("checksum mismatch at byte {pos}"));
            }
            // A packed block is read as the block its logs make.
            let payload = match fh.packed {
                true => unpacked
                    .get((seg.base, pos, h.crc, h.payload_len), &payload, unpacker)
                    .map_err(|e| format!("frame at byte {pos}: {e}"))?,
                false => payload,
            };
            if fh.packed && codec::frame_head(&payload).is_none_or(|h| h.count != fh.count) {
                return Err(format!("the packed block at byte {pos} did not give the {} logs of its count", fh.count));
            }
            for range in codec::logs(&payload) {
                let range = range.map_err(|e| format!("frame at byte {pos}: {e}"))?;
                if offset >= *cursor {
                    if !admit(offset, cursor, q, out, budget, (range.len() + codec::LOG_HEADER_LEN) as u64) {
                        return Ok(Stop::Done);
                    }
                    let log = payload.slice(range);
                    let wanted = match times {
                        Some((from, to)) => {
                            codec::times(&log).is_some_and(|(t, _)| from <= t && t <= to)
                        }
                        None => true,
                    };
                    if wanted {
                        let (got, entry) =
                            codec::decode(&log).map_err(|e| format!("frame at byte {pos}: {e}"))?;
                        let want = if relative { offset - frame_start } else { offset };
                        if got != want {
                            return Err(format!("offset {got} in frame at byte {pos}, expected {want}"));
                        }
                        out.push(StoredLog { offset, entry });
                    }
                    *cursor = offset + 1;
                }
                offset += 1;
            }
            if offset != frame_end {
                return Err(format!("frame at byte {pos} holds fewer logs than its count"));
            }
            if fh.packed {
                unpacked.0 = None;
            }
            pos += h.frame_len();
        }
        *cursor = (*cursor).max(end_offset);
    }
    *cursor = (*cursor).max(seg.next_offset);
    Ok(Stop::EndOfSegment)
}
