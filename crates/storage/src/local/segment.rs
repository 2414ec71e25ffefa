//! Segments of a shard: listing them, what readers see of each, and the index file written
//! when a segment is sealed.
//!
//! Index file `<base>.index`: `b"LGIX" | u32 version | u64 segment_len | u64 next_offset |
//! i64 max_arrival_ms | u32 block_count | blocks (u64 offset, u64 pos, i64 min_time,
//! i64 max_time) | u32 crc32c` of everything before it, all little-endian. It is only
//! trusted when `segment_len` matches the segment file; otherwise the segment is scanned.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{Block, SparseIndex};
use super::paths;
use super::recovery::{self, Tail};

const INDEX_MAGIC: &[u8; 4] = b"LGIX";
const INDEX_VERSION: u32 = 1;
const INDEX_HEADER_LEN: usize = 4 + 4 + 8 + 8 + 8 + 4;
const BLOCK_LEN: usize = 32;
/// Index files larger than this are not read (a 1 GiB segment needs well under 1 MiB).
const MAX_INDEX_FILE: u64 = 64 << 20;

/// What readers may see of one segment: only complete entries (synced, when asked).
#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    /// Offset of the first entry (also the file name).
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// End of valid data.
    pub len: u64,
    /// Offset after the last valid entry.
    pub next_offset: u64,
    pub index: Arc<SparseIndex>,
    /// Largest arrival time of its entries (`i64::MIN` when empty).
    pub max_arrival_ms: i64,
    /// Read-only mode: whether the segment was followed by another when last looked at, so
    /// that it will not grow any more.
    pub sealed: bool,
}

impl SegmentState {
    /// An empty segment starting at `base`.
    pub(crate) fn empty(base: u64, path: PathBuf, file: Arc<File>) -> Self {
        SegmentState {
            base,
            path,
            file,
            len: 0,
            next_offset: base,
            index: Arc::new(SparseIndex::new(base)),
            max_arrival_ms: i64::MIN,
            sealed: false,
        }
    }

    /// Takes in whatever complete frames follow `len` in the file (up to `file_len`); when the
    /// file got shorter than `len` (its writer cut it), rescans from the last block kept.
    /// Returns what stopped the scan.
    pub(crate) fn extend_to(&mut self, file_len: u64) -> io::Result<Tail> {
        if file_len == self.len {
            return Ok(Tail::Clean);
        }
        let index = Arc::make_mut(&mut self.index);
        if file_len < self.len {
            // Rescan the cut block from its start; its times may stay wider than needed.
            let b = index.cut(file_len);
            self.len = b.pos;
            self.next_offset = b.offset;
        }
        let scanned = recovery::scan(&self.file, file_len, self.len, self.next_offset, index)?;
        self.len = scanned.valid_len;
        self.next_offset = scanned.next_offset;
        self.max_arrival_ms = self.max_arrival_ms.max(scanned.max_arrival_ms);
        Ok(scanned.tail)
    }

    /// Loads the segment's index file, or scans the whole segment when there is none that
    /// matches it. For segments that are followed by another (never written again).
    pub(crate) fn load_sealed(&mut self, rewrite_index: bool) -> io::Result<()> {
        let file_len = self.file.metadata()?.len();
        let ix_path = index_path(&self.path);
        if let Some(loaded) = read_index(&ix_path, file_len) {
            self.len = file_len;
            self.next_offset = loaded.next_offset;
            self.max_arrival_ms = loaded.max_arrival_ms;
            self.index = Arc::new(loaded.index);
            self.sealed = true;
            return Ok(());
        }
        *self = SegmentState::empty(self.base, self.path.clone(), self.file.clone());
        let tail = self.extend_to(file_len)?;
        if tail != Tail::Clean {
            tracing::warn!(path = %self.path.display(), ?tail, valid_len = self.len,
                next_offset = self.next_offset,
                "sealed logstore segment has unreadable bytes after its last valid entry; they are skipped");
        }
        self.sealed = true;
        if rewrite_index {
            if let Err(e) = write_index(self) {
                tracing::warn!(path = %ix_path.display(), error = %e, "could not write segment index");
            }
        }
        Ok(())
    }
}

/// Path of the index file of a segment file.
pub(crate) fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("index")
}

/// Base offsets of the segments in a shard directory, in order (empty when it is missing).
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut bases = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(base) = name.to_str().and_then(paths::parse_segment_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Contents of a trusted index file.
struct LoadedIndex {
    next_offset: u64,
    max_arrival_ms: i64,
    index: SparseIndex,
}

fn read_index(path: &Path, segment_len: u64) -> Option<LoadedIndex> {
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len > MAX_INDEX_FILE || len < (INDEX_HEADER_LEN + 4) as u64 {
        return None;
    }
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, 0).ok()?;
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
    };
    if &body[..4] != INDEX_MAGIC || u32_at(4)? != INDEX_VERSION || u64_at(8)? != segment_len {
        return None;
    }
    let next_offset = u64_at(16)?;
    let max_arrival_ms = u64_at(24)? as i64;
    let count = u32_at(32)? as usize;
    if body.len() != INDEX_HEADER_LEN + count.checked_mul(BLOCK_LEN)? {
        return None;
    }
    let mut blocks = Vec::with_capacity(count);
    for i in 0..count {
        let at = INDEX_HEADER_LEN + i * BLOCK_LEN;
        blocks.push(Block {
            offset: u64_at(at)?,
            pos: u64_at(at + 8)?,
            min_time: u64_at(at + 16)? as i64,
            max_time: u64_at(at + 24)? as i64,
        });
    }
    let index = SparseIndex::from_blocks(blocks)?;
    let last = index.blocks().last()?;
    if last.offset >= next_offset || last.pos >= segment_len {
        return None;
    }
    Some(LoadedIndex {
        next_offset,
        max_arrival_ms,
        index,
    })
}

/// Writes a segment's index file atomically (temporary file, fsync, rename, directory fsync).
pub(crate) fn write_index(seg: &SegmentState) -> io::Result<()> {
    let blocks = seg.index.blocks();
    let mut data = Vec::with_capacity(INDEX_HEADER_LEN + blocks.len() * BLOCK_LEN + 4);
    data.extend_from_slice(INDEX_MAGIC);
    data.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    data.extend_from_slice(&seg.len.to_le_bytes());
    data.extend_from_slice(&seg.next_offset.to_le_bytes());
    data.extend_from_slice(&seg.max_arrival_ms.to_le_bytes());
    data.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    for b in blocks {
        data.extend_from_slice(&b.offset.to_le_bytes());
        data.extend_from_slice(&b.pos.to_le_bytes());
        data.extend_from_slice(&b.min_time.to_le_bytes());
        data.extend_from_slice(&b.max_time.to_le_bytes());
    }
    let crc = crc32c::crc32c(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    let path = index_path(&seg.path);
    let tmp = path.with_extension("index.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&data)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    if let Some(dir) = path.parent() {
        paths::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_file_round_trip_and_rejects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(paths::segment_file_name(10));
        let file = Arc::new(File::create(&path).unwrap());
        let mut seg = SegmentState::empty(10, path.clone(), file);
        let ix = Arc::make_mut(&mut seg.index);
        for o in 10..9000u64 {
            ix.observe(o, (o - 10) * 100, o as i64);
        }
        seg.len = 8990 * 100;
        seg.next_offset = 9000;
        seg.max_arrival_ms = 77;
        write_index(&seg).unwrap();
        let loaded = read_index(&index_path(&path), seg.len).unwrap();
        assert_eq!(loaded.index, *seg.index);
        assert_eq!((loaded.next_offset, loaded.max_arrival_ms), (9000, 77));
        assert!(read_index(&index_path(&path), seg.len + 1).is_none());
        let mut data = fs::read(index_path(&path)).unwrap();
        data[40] ^= 1;
        fs::write(index_path(&path), &data).unwrap();
        assert!(read_index(&index_path(&path), seg.len).is_none());
    }
}
