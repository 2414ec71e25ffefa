//! Scanning a segment: validate every frame (each log of a block), find where valid data ends.

use std::fs::File;
use std::io;
use std::path::Path;

use super::codec::{self, FRAME_HEADER_LEN};
use super::direct;
use super::index::SparseIndex;
use super::read::ChunkReader;

/// Bytes read per positional read while scanning.
const SCAN_CHUNK: usize = 1 << 20;

/// What follows the last valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing: the file ends right after it.
    Clean,
    /// A frame that is not complete yet (torn write, or one still being written).
    Incomplete,
    /// A complete frame that fails validation.
    Corrupt(String),
}

/// Result of a scan.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// End of the last valid frame.
    pub valid_len: u64,
    /// Offset the next frame would get.
    pub next_offset: u64,
    /// Largest arrival time seen (`i64::MIN` when no frame was scanned).
    pub max_arrival_ms: i64,
    /// What stopped the scan.
    pub tail: Tail,
}

/// Validates frames of `file` from `pos` (a frame boundary whose frame has `offset`) up to
/// `file_len`, adding them to `index`. Never fails on bad data, only on I/O errors.
pub(crate) fn scan(
    file: &File,
    file_len: u64,
    mut pos: u64,
    mut offset: u64,
    index: &mut SparseIndex,
) -> io::Result<Scanned> {
    let mut r = ChunkReader::new(file, file_len, SCAN_CHUNK);
    let mut max_arrival_ms = i64::MIN;
    let tail = loop {
        if pos >= file_len {
            break Tail::Clean;
        }
        if file_len - pos < FRAME_HEADER_LEN as u64 {
            break Tail::Incomplete;
        }
        let h = match r.header(pos) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Tail::Incomplete,
            Err(e) => return Err(e),
        };
        if !h.plausible() {
            if h.payload_len == 0 && direct::is_padding(pos, file_len, &r.get(pos, (file_len - pos) as usize)?) {
                // The zeros a direct write pads its last block with: the data ends here.
                break Tail::Clean;
            }
            break Tail::Corrupt(format!(
                "implausible frame length {} at byte {pos}",
                h.payload_len
            ));
        }
        if file_len - pos < h.frame_len() {
            break Tail::Incomplete;
        }
        let payload = match r.get(pos + FRAME_HEADER_LEN as u64, h.payload_len) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Tail::Incomplete,
            Err(e) => return Err(e),
        };
        if !codec::checksum_ok(&payload, h.crc) {
            break Tail::Corrupt(format!("checksum mismatch at byte {pos}"));
        }
        // A block is validated whole: a bad log in it cuts the whole block, which was written
        // and acknowledged as one unit.
        match codec::validate_frame(&payload, offset) {
            Ok(m) if m.count == 0 => {} // padding
            Ok(m) => {
                index.observe_frame(offset, pos, m.min_time, m.max_time);
                max_arrival_ms = max_arrival_ms.max(m.max_arrival);
                offset += m.count;
            }
            Err(e) => break Tail::Corrupt(format!("undecodable frame at byte {pos}: {e}")),
        }
        pos += h.frame_len();
    };
    Ok(Scanned {
        valid_len: pos,
        next_offset: offset,
        max_arrival_ms,
        tail,
    })
}

/// Writer-side recovery of the last segment of a shard, whose first frame has `base_offset`:
/// scans it and truncates anything after the last valid frame, logging what was cut.
pub(crate) fn recover(
    path: &Path,
    file: &File,
    base_offset: u64,
) -> io::Result<(Scanned, SparseIndex)> {
    let file_len = file.metadata()?.len();
    let mut index = SparseIndex::new(base_offset);
    let scanned = scan(file, file_len, 0, base_offset, &mut index)?;
    if scanned.valid_len < file_len {
        let cut = file_len - scanned.valid_len;
        if scanned.tail == Tail::Clean {
            // What follows the data is the zero padding of a direct write: nothing lost.
            tracing::debug!(path = %path.display(), bytes_cut = cut, "cutting the zero padding of a direct write");
        } else {
            tracing::warn!(
                path = %path.display(),
                bytes_cut = cut,
                valid_len = scanned.valid_len,
                next_offset = scanned.next_offset,
                tail = ?scanned.tail,
                "logstore recovery: truncating {cut} bytes after the last valid entry; the next entry gets offset {}",
                scanned.next_offset
            );
        }
        file.set_len(scanned.valid_len)?;
        file.sync_all()?;
    }
    Ok((scanned, index))
}
