//! Decompression of Kafka codecs with a hard output cap.
//!
//! Every decoder is read through [`read_capped`], so a decompression bomb stops after
//! `limit + 1` bytes of output and never allocates much beyond `limit`.

use std::io::{self, Read};

use bytes::Bytes;

use crate::Compression;

/// Why a decompression failed.
pub(crate) enum Failure {
    /// The output would exceed the limit.
    TooLarge,
    /// The input is not valid data for the codec.
    Corrupt(String),
}

/// Decompresses `data` written with `codec` inside a message of `magic`, producing at
/// most `limit` bytes. `Compression::None` returns `data` itself.
pub(crate) fn decompress(
    codec: Compression,
    magic: u8,
    data: &Bytes,
    limit: usize,
) -> Result<Bytes, Failure> {
    let input = &data[..];
    let out = match codec {
        Compression::None => return Ok(data.clone()),
        Compression::Gzip => {
            read_capped(flate2::read::MultiGzDecoder::new(input), limit, input.len())
        }
        Compression::Snappy => snappy(input, limit),
        Compression::Lz4 => lz4(input, magic, limit),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(input)
            .map_err(|e| Failure::Corrupt(e.to_string()))
            .and_then(|d| read_capped(d, limit, input.len())),
    };
    out.map(Bytes::from).map_err(|f| match f {
        Failure::Corrupt(msg) => Failure::Corrupt(format!("{codec:?}: {msg}")),
        too_large => too_large,
    })
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

/// Appends one raw snappy block to `out`, checking its declared length first.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Failure> {
    let n = snap::raw::decompress_len(block).map_err(|e| Failure::Corrupt(e.to_string()))?;
    let start = out.len();
    if n > limit - start {
        return Err(Failure::TooLarge);
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

/// LZ4 frame. For magic 0 the header checksum is first recomputed (see
/// [`fix_lz4_header_checksum`]); the rest of the frame is streamed without copying.
fn lz4(data: &[u8], magic: u8, limit: usize) -> Result<Vec<u8>, Failure> {
    match (magic, fix_lz4_header_checksum(data)) {
        (0, Some((header, rest))) => {
            let reader = io::Cursor::new(header).chain(rest);
            read_capped(
                lz4_flex::frame::FrameDecoder::new(reader),
                limit,
                data.len(),
            )
        }
        _ => read_capped(lz4_flex::frame::FrameDecoder::new(data), limit, data.len()),
    }
}

/// Splits an LZ4 frame into a copy of its header with a correct header checksum, and
/// the bytes after the header.
///
/// Kafka 0.8.2-0.9 (KAFKA-3160), and librdkafka and kafka-python when writing magic 0,
/// hash the 4 magic bytes too, so the checksum byte is wrong in such messages; the Java
/// broker skips the check for magic 0. The correct value is the second byte of
/// xxh32(FLG..end of descriptor, seed 0). Returns `None` if this is no LZ4 frame
/// header, leaving the decoder to report it.
fn fix_lz4_header_checksum(data: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    const FLG_CONTENT_SIZE: u8 = 0x08;
    const FLG_DICT_ID: u8 = 0x01;
    if !data.starts_with(&LZ4_MAGIC) {
        return None;
    }
    let flg = *data.get(4)?;
    let descriptor_len = 2
        + if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 }
        + if flg & FLG_DICT_ID != 0 { 4 } else { 0 };
    let checksum_at = 4 + descriptor_len;
    let descriptor = data.get(4..checksum_at)?;
    let checksum = (xxhash_rust::xxh32::xxh32(descriptor, 0) >> 8) as u8;
    let mut header = data.get(..=checksum_at)?.to_vec();
    header[checksum_at] = checksum;
    Some((header, &data[checksum_at + 1..]))
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

    #[test]
    fn lz4_header_fix_ignores_non_frames() {
        assert!(fix_lz4_header_checksum(b"").is_none());
        assert!(fix_lz4_header_checksum(&LZ4_MAGIC).is_none());
        assert!(fix_lz4_header_checksum(&[0x04, 0x22, 0x4d, 0x18, 0x68, 0x40]).is_none());
    }
}
