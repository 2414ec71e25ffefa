//! Appending to a segment with direct I/O (`O_DIRECT`): the bytes go from one reused,
//! block-aligned buffer to the device, not through the page cache.
//!
//! Why: a buffered write copies every byte into page-cache pages that the kernel must find,
//! account and later write back; on a VM whose free memory the host reclaims, each of those
//! fresh pages also costs a host fault. Direct writes cost the writer thread a small fraction
//! of that (see BENCHMARKS.md), keep the page cache free for readers, and an acknowledged
//! write has reached the device rather than only the kernel.
//!
//! Direct I/O writes whole aligned blocks, so every write starts at the block boundary at or
//! before the end of the data, re-writes the partial block found there (kept from the last
//! write, or read back) and pads its own end with zeros to the next boundary. The file may
//! therefore end in fewer than [`BLOCK`] zero bytes after the last frame: scans treat such a
//! zero tail as the clean end of the data ([`is_padding`]), and the writer cuts it off when
//! it seals a segment or stops.
//!
//! That costs a copy of every write into the staging buffer. A large write avoids it: the
//! shard writer ends it with a padding frame (`codec::pad_to`) so the data ends on a block
//! boundary, and a write that starts on a boundary, is whole blocks long and sits at an
//! aligned address goes to the device from the caller's buffer. The converter's buffers of
//! that size start on page boundaries with mimalloc (seen, not promised: one that does not
//! is copied as before).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of direct writes: offsets, lengths and the buffer address. 4 KiB covers the
/// logical block size of common disks (512 B or 4 KiB).
pub(crate) const BLOCK: usize = 4096;

/// Whether `tail` (the bytes from `pos` to the end of a file of `file_len` bytes) is the
/// zero padding a direct write leaves after the last frame.
pub(crate) fn is_padding(pos: u64, file_len: u64, tail: &[u8]) -> bool {
    file_len.is_multiple_of(BLOCK as u64)
        && file_len - pos < BLOCK as u64
        && tail.len() as u64 == file_len - pos
        && tail.iter().all(|&b| b == 0)
}

/// A segment file opened for direct writes, with the state that makes appends aligned.
pub(crate) struct DirectFile {
    file: File,
    /// Reused buffer; the aligned region starts at its first [`BLOCK`] boundary.
    staging: Vec<u8>,
    /// The partial last block of the data as of the last write: (its file position, bytes).
    tail: Option<(u64, Vec<u8>)>,
}

/// Staging buffers larger than this are freed after a write instead of kept.
const MAX_IDLE_STAGING: usize = 8 << 20;

impl DirectFile {
    /// Opens `path` for direct writes; `Ok(None)` when its filesystem does not do direct I/O.
    pub(crate) fn open(path: &Path) -> io::Result<Option<Self>> {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => Ok(Some(DirectFile {
                file,
                staging: Vec::new(),
                tail: None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `data` at `at`, where `at` is the end of the valid data in the file and
    /// `buffered` is a normal handle of the same file (to read back a partial block that is
    /// not remembered). Afterwards the file holds `data` at `at`, followed by zeros up to the
    /// next block boundary.
    pub(crate) fn write_at(&mut self, buffered: &File, data: &[u8], at: u64) -> io::Result<()> {
        if at.is_multiple_of(BLOCK as u64)
            && data.len().is_multiple_of(BLOCK)
            && (data.as_ptr() as usize).is_multiple_of(BLOCK)
        {
            // Whole aligned blocks at an aligned address (a write the shard writer padded
            // to a boundary, after another such write): straight from the caller's buffer.
            self.tail = None;
            self.file.write_all_at(data, at)?;
            self.tail = Some((at + data.len() as u64, Vec::new()));
            return Ok(());
        }
        let start = at - at % BLOCK as u64;
        let head_len = (at - start) as usize;
        let total = head_len + data.len();
        let padded = total.div_ceil(BLOCK) * BLOCK;
        if self.staging.len() < padded + BLOCK {
            self.staging.resize(padded + BLOCK, 0);
        }
        let align = self.staging.as_ptr().align_offset(BLOCK).min(BLOCK);
        let region = &mut self.staging[align..align + padded];
        match &self.tail {
            Some((pos, bytes)) if *pos == start && bytes.len() == head_len => {
                region[..head_len].copy_from_slice(bytes)
            }
            _ => buffered.read_exact_at(&mut region[..head_len], start)?,
        }
        region[head_len..total].copy_from_slice(data);
        region[total..].fill(0);
        // Forget the remembered block until this write is known to have happened.
        self.tail = None;
        self.file.write_all_at(region, start)?;

        let end = at + data.len() as u64;
        let tail_start = end - end % BLOCK as u64;
        let from = (tail_start - start) as usize;
        self.tail = Some((tail_start, region[from..total].to_vec()));
        if self.staging.capacity() > MAX_IDLE_STAGING {
            self.staging = Vec::new();
        }
        Ok(())
    }

    /// Forgets the remembered partial block (after the file was cut or written otherwise).
    pub(crate) fn forget_tail(&mut self) {
        self.tail = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_land_where_buffered_writes_would_and_pad_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let Some(mut direct) = DirectFile::open(&path).unwrap() else {
            eprintln!("skipped: the temp dir's filesystem does not do direct I/O");
            return;
        };
        let mut expected = Vec::new();
        // Sizes that start and end inside blocks, on boundaries and across several blocks.
        for (i, n) in [1usize, 4095, 4096, 10_000, 3, 8192, 777].into_iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8 | 1).collect();
            if i == 4 {
                // A lost memory of the tail block: it is read back from the file.
                direct.forget_tail();
            }
            direct.write_at(&buffered, &data, expected.len() as u64).unwrap();
            expected.extend_from_slice(&data);
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk.len() % BLOCK, 0);
            assert_eq!(&on_disk[..expected.len()], &expected[..], "after write {i}");
            let pad = &on_disk[expected.len()..];
            assert!(is_padding(expected.len() as u64, on_disk.len() as u64, pad));
        }
    }

    #[test]
    fn whole_aligned_blocks_are_written_without_the_staging_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let buffered = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let Some(mut direct) = DirectFile::open(&path).unwrap() else {
            eprintln!("skipped: the temp dir's filesystem does not do direct I/O");
            return;
        };
        let mut buf = vec![0u8; 4 * BLOCK];
        let align = buf.as_ptr().align_offset(BLOCK);
        let aligned = &mut buf[align..align + 2 * BLOCK];
        for (i, b) in aligned.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        direct.write_at(&buffered, aligned, 0).unwrap();
        direct.write_at(&buffered, aligned, 2 * BLOCK as u64).unwrap();
        assert_eq!(direct.staging.capacity(), 0, "aligned writes went through the staging buffer");
        // An unaligned one after them still lands right, through the staging buffer.
        direct.write_at(&buffered, b"tail", 4 * BLOCK as u64).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        let mut want = [&aligned[..], &aligned[..], b"tail"].concat();
        assert_eq!(&on_disk[..want.len()], &want[..]);
        want.resize(5 * BLOCK, 0);
        assert_eq!(on_disk, want);
    }

    #[test]
    fn padding_is_only_a_short_zero_run_to_a_block_boundary() {
        assert!(is_padding(4000, 4096, &[0; 96]));
        assert!(!is_padding(4000, 4096, &[0, 0, 1]));
        assert!(!is_padding(4000, 4096, &[0; 95]));
        assert!(!is_padding(4000, 4100, &[0; 100]));
        assert!(!is_padding(0, 8192, &[0; 8192]));
    }
}
