//! Reading frames back from a segment file with positional reads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::codec::{self, FrameHeader, FRAME_HEADER_LEN};
use crate::StoredLog;

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

/// Where a read starts and ends: a known frame boundary and the end of valid data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadPlan {
    /// Offset of the frame at `start_pos`.
    pub start_offset: u64,
    /// A frame boundary at or before the wanted offset.
    pub start_pos: u64,
    /// End of validated data.
    pub end: u64,
}

/// Bytes read per positional read when reading logs.
const READ_CHUNK: usize = 256 * 1024;

/// Reads up to `max` logs from `from` on, within `plan`. A frame that does not match what
/// recovery validated is an `Err(description)`.
pub(crate) fn read_range(
    file: &File,
    plan: ReadPlan,
    from: u64,
    max: usize,
) -> Result<Vec<StoredLog>, String> {
    let mut r = ChunkReader::new(file, plan.end, READ_CHUNK);
    let mut out = Vec::new();
    let mut pos = plan.start_pos;
    let mut offset = plan.start_offset;
    while pos < plan.end && out.len() < max {
        let h = r
            .header(pos)
            .map_err(|e| format!("frame header at byte {pos}: {e}"))?;
        if !h.plausible() || pos + h.frame_len() > plan.end {
            return Err(format!("bad frame length {} at byte {pos}", h.payload_len));
        }
        if offset >= from {
            let payload = r
                .get(pos + FRAME_HEADER_LEN as u64, h.payload_len)
                .map_err(|e| format!("frame at byte {pos}: {e}"))?;
            if !codec::checksum_ok(&payload, h.crc) {
                return Err(format!("checksum mismatch at byte {pos}"));
            }
            let (got, entry) =
                codec::decode(&payload).map_err(|e| format!("frame at byte {pos}: {e}"))?;
            if got != offset {
                return Err(format!("offset {got} at byte {pos}, expected {offset}"));
            }
            out.push(StoredLog { offset, entry });
        }
        pos += h.frame_len();
        offset += 1;
    }
    Ok(out)
}
