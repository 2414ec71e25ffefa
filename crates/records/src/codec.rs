//! Decompression of Kafka codecs with a hard output cap.
//!
//! Every decoder is read through [`read_capped`] or checks its output against the limit
//! as it goes, so a decompression bomb stops after `limit + 1` bytes of output and never
//! allocates much beyond `limit`. No work or allocation is sized by a length the input
//! declares without the input's bytes backing it: snappy's declared length is checked
//! against what the block can hold, LZ4 blocks get room for what they can produce (not
//! the frame's block maximum), and a zstd frame's window is capped by the limit.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};

use crate::{Compression, Spare};

/// Why a decompression failed.
pub(crate) enum Failure {
    /// The output would exceed the limit.
    TooLarge,
    /// The input is not valid data for the codec.
    Corrupt(String),
}

/// Decompresses `data` written with `codec` inside a message of `magic`, producing at
/// most `limit` bytes. `Compression::None` returns `data` itself; lz4 decodes into a
/// buffer from `spare` when it has one.
pub(crate) fn decompress(
    codec: Compression,
    magic: u8,
    data: &Bytes,
    limit: usize,
    spare: &mut Spare,
) -> Result<Bytes, Failure> {
    let input = &data[..];
    let out = match codec {
        Compression::None => return Ok(data.clone()),
        Compression::Gzip => {
            read_capped(flate2::read::MultiGzDecoder::new(input), limit, input.len()).map(Bytes::from)
        }
        Compression::Snappy => snappy(input, limit).map(Bytes::from),
        Compression::Lz4 => lz4(input, magic, limit, spare.take()).map(BytesMut::freeze),
        Compression::Zstd => zstd(input, limit).map(Bytes::from),
    };
    out.map_err(|f| match f {
        Failure::Corrupt(msg) => Failure::Corrupt(format!("{codec:?}: {msg}")),
        too_large => too_large,
    })
}

/// Smallest window (as a power of two) a zstd frame may ask for whatever the limit: 8 MiB,
/// above what Kafka clients write by default (librdkafka and zstd-jni at level 3 use 2 MiB).
const ZSTD_MIN_WINDOW_LOG: u32 = 23;
/// Largest window a zstd frame may ask for: libzstd's own default cap (128 MiB).
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// The largest zstd window accepted with a decompression limit of `limit`: the window is
/// history the decoder allocates up front, so a frame may not ask for more than the
/// output it is allowed to produce (but at least 2^[`ZSTD_MIN_WINDOW_LOG`]).
pub(crate) fn zstd_window_log_max(limit: usize) -> u32 {
    let log = usize::BITS - limit.saturating_sub(1).leading_zeros();
    log.clamp(ZSTD_MIN_WINDOW_LOG, ZSTD_MAX_WINDOW_LOG)
}

/// Zstd, streamed through [`read_capped`], with the window a frame may declare bounded by
/// [`zstd_window_log_max`] so a few header bytes cannot reserve a large history buffer.
fn zstd(input: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
    let corrupt = |e: io::Error| Failure::Corrupt(e.to_string());
    let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
    decoder.window_log_max(zstd_window_log_max(limit)).map_err(corrupt)?;
    read_capped(decoder, limit, input.len())
}

/// Reads `reader` to its end, failing once more than `limit` bytes come out.
///
/// The buffer starts near `hint` and doubles, but never beyond `limit + 1` bytes.
fn read_capped(mut reader: impl Read, limit: usize, hint: usize) -> Result<Vec<u8>, Failure> {
    let cap = limit.saturating_add(1);
    let mut out = vec![0u8; hint.saturating_mul(4).clamp(1024, 1 << 20).min(cap)];
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if filled >= cap {
                return Err(Failure::TooLarge);
            }
            out.resize(filled.saturating_mul(2).min(cap), 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Corrupt(e.to_string())),
        }
    }
    if filled > limit {
        return Err(Failure::TooLarge);
    }
    out.truncate(filled);
    Ok(out)
}

/// The 8-byte magic of snappy-java's (xerial) block stream.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic plus two int32 versions, which (like snappy-java) we ignore.
const XERIAL_HEADER_LEN: usize = 16;

/// Snappy: xerial framing when it starts with the xerial magic, else one raw block.
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    if data.len() >= XERIAL_HEADER_LEN && data.starts_with(XERIAL_MAGIC) {
        let mut rest = &data[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| Failure::Corrupt("truncated xerial block length".into()))?;
            let len = usize::try_from(i32::from_be_bytes(*len))
                .map_err(|_| Failure::Corrupt("negative xerial block length".into()))?;
            if len > tail.len() {
                return Err(Failure::Corrupt("truncated xerial block".into()));
            }
            let (block, tail) = tail.split_at(len);
            snappy_block(block, &mut out, limit)?;
            rest = tail;
        }
    } else {
        snappy_block(data, &mut out, limit)?;
    }
    Ok(out)
}

/// Most bytes one byte of a snappy block can decode to: a 3-byte copy element (tag and
/// 2-byte offset) yields at most 64 bytes, every other element less per byte.
const SNAPPY_MAX_RATIO: usize = 22;

/// Appends one raw snappy block to `out`, checking its declared length first: against
/// the limit, and against what the block's bytes could possibly hold, so the output
/// buffer is never sized by a length the bytes cannot back.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
    let n = snap::raw::decompress_len(block).map_err(|e| Failure::Corrupt(e.to_string()))?;
    let start = out.len();
    if n > limit - start {
        return Err(Failure::TooLarge);
    }
    if n > block.len().saturating_mul(SNAPPY_MAX_RATIO) {
        return Err(Failure::Corrupt(format!(
            "snappy block of {} bytes declares {n} bytes, more than it can hold",
            block.len()
        )));
    }
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| Failure::Corrupt(e.to_string()))?;
    if written != n {
        return Err(Failure::Corrupt(
            "snappy block shorter than declared".into(),
        ));
    }
    Ok(())
}

/// Little-endian magic of an LZ4 frame.
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
/// How far back a block of a linked-block frame may refer (the LZ4 window).
const LZ4_WINDOW: usize = 64 * 1024;

/// Frame descriptor flags (FLG).
const FLG_VERSION_MASK: u8 = 0xc0;
const FLG_VERSION_01: u8 = 0x40;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_DICT_ID: u8 = 0x01;
/// Block size field: the high bit marks a block stored uncompressed.
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;
/// Most bytes one byte of an LZ4 block can decode to: a match length grows by 255 per
/// extension byte, and every other part of a sequence yields less per byte.
const LZ4_MAX_RATIO: usize = 255;

/// An LZ4 frame, decoded block by block straight into one output buffer, `out` (no
/// intermediate block buffer), linked blocks reading their history from the output itself.
/// `out` may be a buffer kept from an earlier decode: its old bytes are only overwritten,
/// never read, and they spare the zeroing of the room each block is decoded into.
///
/// The header checksum is checked except for magic 0: Kafka 0.8.2-0.9 (KAFKA-3160), and
/// librdkafka and kafka-python when writing magic 0, hash the 4 magic bytes too, and the
/// Java broker skips the check for magic 0. Block and content checksums are not verified:
/// the message or batch CRC around the compressed bytes already covers them.
fn lz4(data: &[u8], magic: u8, limit: usize, mut out: BytesMut) -> Result<BytesMut, Failure> {
    let corrupt = |why: &str| Failure::Corrupt(why.to_string());
    let rest = data
        .strip_prefix(&LZ4_MAGIC)
        .ok_or_else(|| corrupt("not an LZ4 frame (bad magic)"))?;
    let (&flg, rest) = rest.split_first().ok_or_else(|| corrupt("truncated frame header"))?;
    let (&bd, _) = rest.split_first().ok_or_else(|| corrupt("truncated frame header"))?;
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(corrupt("unsupported LZ4 frame version"));
    }
    if flg & FLG_DICT_ID != 0 {
        return Err(corrupt("LZ4 frames with a dictionary are not supported"));
    }
    let block_max = match (bd >> 4) & 0x07 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return Err(corrupt("invalid LZ4 block maximum size")),
    };
    let descriptor_len = 2 + if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 };
    let descriptor = data
        .get(4..4 + descriptor_len)
        .ok_or_else(|| corrupt("truncated frame header"))?;
    let &checksum = data
        .get(4 + descriptor_len)
        .ok_or_else(|| corrupt("truncated frame header"))?;
    if magic != 0 && checksum != (xxhash_rust::xxh32::xxh32(descriptor, 0) >> 8) as u8 {
        return Err(corrupt("LZ4 frame header checksum mismatch"));
    }
    let declared = (flg & FLG_CONTENT_SIZE != 0)
        .then(|| descriptor.get(2..10).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes))
        .flatten();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Failure::TooLarge);
    }
    let block_checksums = flg & FLG_BLOCK_CHECKSUM != 0;

    // What the frame can produce: bounded by the limit, and by what its bytes can hold
    // whatever the header declares.
    let most = data.len().saturating_mul(LZ4_MAX_RATIO).min(limit);
    let expected = declared.map_or(data.len().saturating_mul(4), |n| n as usize).min(most);
    // A kept buffer with room for at least half the guess is decoded into as it is: the
    // guess is only a guess (often above the output), and growing a kept buffer to it
    // would double its capacity, past what `Spare` keeps, for a frame that fits anyway.
    if out.capacity() < expected / 2 {
        out.reserve(expected.saturating_sub(out.len()));
    }
    // `out[..pos]` is the output so far; `out[pos..]` is initialized room (zeroed here, or
    // bytes of the buffer's earlier use), so the zeroing done over the whole frame is
    // bounded by its largest output plus one block's room, never by the number of blocks.
    // Decoding never reads room it has not written: a match reaching before the output so
    // far is refused as corrupt (liblz4's safe decoder, which never writes past the room it
    // is given either).
    let mut pos = 0;
    let mut rest = &data[4 + descriptor_len + 1..];
    loop {
        let (size, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated LZ4 block size"))?;
        let size = u32::from_le_bytes(*size);
        if size == 0 {
            rest = tail;
            break;
        }
        let len = (size & !BLOCK_UNCOMPRESSED) as usize;
        if len > tail.len() || len > block_max {
            return Err(corrupt("truncated or oversized LZ4 block"));
        }
        let (block, tail) = tail.split_at(len);
        if size & BLOCK_UNCOMPRESSED != 0 {
            if len > limit - pos {
                return Err(Failure::TooLarge);
            }
            match out.get_mut(pos..pos + len) {
                Some(room) => room.copy_from_slice(block),
                None => {
                    out.truncate(pos);
                    out.extend_from_slice(block);
                }
            }
            pos += len;
        } else {
            // Room for the most this block can produce: the frame's block maximum, what
            // its bytes can hold, and the limit (+1 to tell "exactly at the limit" from
            // "over it"), whichever is least.
            let possible = block_max.min(len.saturating_mul(LZ4_MAX_RATIO));
            let room = possible.min(limit - pos + 1);
            if out.len() < pos + room {
                out.resize(pos + room, 0);
            }
            let (history, free) = out.split_at_mut(pos);
            let window = &history[pos.saturating_sub(LZ4_WINDOW)..];
            // liblz4 (lzzzz): the window ends where the output goes on, so its fast
            // prefix mode applies; matches reaching before the window are refused.
            match lzzzz::lz4::decompress_with_dict(block, &mut free[..room], window) {
                Ok(n) if n <= limit - pos => pos += n,
                Ok(_) => return Err(Failure::TooLarge),
                Err(_) if room < possible => return Err(Failure::TooLarge),
                Err(e) => return Err(Failure::Corrupt(e.to_string())),
            }
        }
        rest = tail;
        if block_checksums {
            rest = rest
                .get(4..)
                .ok_or_else(|| corrupt("truncated LZ4 block checksum"))?;
        }
    }
    out.truncate(pos);
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        rest = rest
            .get(4..)
            .ok_or_else(|| corrupt("truncated LZ4 content checksum"))?;
    }
    if declared.is_some_and(|n| n != out.len() as u64) {
        return Err(corrupt("LZ4 frame content size does not match its blocks"));
    }
    if !rest.is_empty() {
        return Err(corrupt("bytes after the LZ4 frame"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capped_stops_at_limit() {
        let zeros = io::repeat(0).take(10_000);
        assert!(matches!(
            read_capped(zeros, 9_999, 10),
            Err(Failure::TooLarge)
        ));
        let zeros = io::repeat(0).take(10_000);
        assert_eq!(
            read_capped(zeros, 10_000, 10).ok().map(|v| v.len()),
            Some(10_000)
        );
        assert_eq!(
            read_capped(io::empty(), 0, 0).ok().map(|v| v.len()),
            Some(0)
        );
    }

    #[test]
    fn read_capped_never_over_allocates() {
        // An endless stream must not grow the buffer past limit + 1.
        struct Probe(usize);
        impl Read for Probe {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 = self.0.max(buf.len());
                Ok(buf.len())
            }
        }
        let mut probe = Probe(0);
        assert!(matches!(
            read_capped(&mut probe, 5000, 1),
            Err(Failure::TooLarge)
        ));
        assert!(probe.0 <= 5001);
    }

    #[test]
    fn raw_snappy_bomb_is_refused_before_allocating() {
        // A raw block whose varint preamble claims 1 GiB.
        let block = [0x80, 0x80, 0x80, 0x80, 0x04, 0x00];
        assert!(matches!(snappy(&block, 1 << 20), Err(Failure::TooLarge)));
    }

    fn lz4_frame(data: &[u8], info: lz4_flex::frame::FrameInfo) -> Vec<u8> {
        use std::io::Write;
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Log-like data that compresses, long enough for several blocks.
    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"GET /api/v1/orders status=200 "[i % 30] ^ ((i / 4099) as u8 & 1))
            .collect()
    }

    #[test]
    fn lz4_frames_of_every_layout_decode_like_the_reference_decoder() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameInfo};
        let random: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for data in [sample(300_000), sample(10), Vec::new(), random] {
            for mode in [BlockMode::Independent, BlockMode::Linked] {
                for (checksums, size) in [(false, None), (true, Some(data.len() as u64))] {
                    let info = FrameInfo::new()
                        .block_mode(mode)
                        .block_size(BlockSize::Max64KB)
                        .block_checksums(checksums)
                        .content_checksum(checksums)
                        .content_size(size);
                    let frame = lz4_frame(&data, info);
                    for magic in [0, 1, 2] {
                        let got = lz4(&frame, magic, 1 << 20, BytesMut::new()).ok();
                        assert_eq!(got.as_deref(), Some(&data[..]), "{mode:?} {checksums} magic {magic}");
                    }
                    // One byte short of the output is refused as too large, never truncated.
                    if !data.is_empty() {
                        assert!(matches!(lz4(&frame, 2, data.len() - 1, BytesMut::new()), Err(Failure::TooLarge)));
                    }
                }
            }
        }
    }

    #[test]
    fn lz4_header_checksum_is_checked_except_for_magic_0() {
        let mut frame = lz4_frame(&sample(1000), lz4_flex::frame::FrameInfo::new());
        frame[6] ^= 0xff; // the header checksum byte (no content size)
        assert!(matches!(lz4(&frame, 1, 1 << 20, BytesMut::new()), Err(Failure::Corrupt(_))));
        assert_eq!(lz4(&frame, 0, 1 << 20, BytesMut::new()).ok().as_deref(), Some(&sample(1000)[..]));
    }

    #[test]
    fn lz4_decodes_the_same_into_a_buffer_full_of_old_bytes() {
        let data = sample(300_000);
        let frame = lz4_frame(&data, lz4_flex::frame::FrameInfo::new());
        for old in [10, 100_000, 400_000] {
            let mut junk = BytesMut::from(&vec![0xA5; old][..]);
            junk.reserve(1000);
            let got = lz4(&frame, 1, 1 << 20, junk).ok().expect("decodes");
            assert_eq!(&got[..], &data[..], "old buffer of {old} bytes");
        }
    }

    #[test]
    fn lz4_decodes_into_a_kept_buffer_without_growing_it_to_the_guess() {
        // Incompressible data: the guess (4x the frame) is about 4x the output, above the
        // kept buffer's capacity, while the output and a block's room fit in it.
        let mut x = 0x2545_f491_u32;
        let data: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let frame = lz4_frame(&data, lz4_flex::frame::FrameInfo::new());
        assert!(frame.len() > data.len(), "incompressible");
        let mut kept = BytesMut::with_capacity(300_000);
        kept.extend_from_slice(&[0xA5; 200_000]);
        let got = lz4(&frame, 1, 1 << 20, kept).ok().expect("decodes");
        assert_eq!(&got[..], &data[..]);
        assert_eq!(got.capacity(), 300_000, "the kept buffer was not grown");
    }

    #[test]
    fn lz4_never_reads_old_bytes_of_a_reused_buffer_as_history() {
        // One block: a match of 4 bytes at offset 1, before any output exists, then 5
        // literals. The reused buffer holds bytes such a match would copy.
        let block = [0x00, 0x01, 0x00, 0x50, b'h', b'e', b'l', b'l', b'o'];
        let descriptor = [0x60, 0x40];
        let mut frame = LZ4_MAGIC.to_vec();
        frame.extend_from_slice(&descriptor);
        frame.push((xxhash_rust::xxh32::xxh32(&descriptor, 0) >> 8) as u8);
        frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
        frame.extend_from_slice(&block);
        frame.extend_from_slice(&0u32.to_le_bytes());
        for old in [BytesMut::new(), BytesMut::from(&b"secret of an earlier client"[..])] {
            assert!(matches!(lz4(&frame, 1, 1 << 20, old), Err(Failure::Corrupt(_))));
        }
    }

    #[test]
    fn lz4_garbage_and_truncations_are_errors_not_panics() {
        let frame = lz4_frame(&sample(100_000), lz4_flex::frame::FrameInfo::new());
        for cut in 0..frame.len() {
            assert!(lz4(&frame[..cut], 1, 1 << 20, BytesMut::new()).is_err(), "cut {cut}");
        }
        let mut x = 12345u32;
        for _ in 0..2000 {
            let mut f = frame.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let at = 7 + (x as usize >> 8) % (f.len() - 7);
                f[at] = (x >> 3) as u8;
            }
            drop(lz4(&f, 1, 1 << 20, BytesMut::new()));
        }
        assert!(lz4(b"", 1, 10, BytesMut::new()).is_err());
        assert!(lz4(&LZ4_MAGIC, 1, 10, BytesMut::new()).is_err());
        assert!(lz4(&[0x04, 0x22, 0x4d, 0x18, 0x68, 0x40], 1, 10, BytesMut::new()).is_err());
    }
}
