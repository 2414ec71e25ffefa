//! Pure decoding of the record bytes a Kafka producer puts in a Produce request.
//!
//! Handles message sets of magic 0 and 1 (Kafka 0.8 to 0.10, CRC-32 IEEE, compressed
//! wrapper messages holding nested sets) and record batches of magic 2 (Kafka 0.11+,
//! CRC-32C, varint records with headers), with every codec Kafka clients write:
//! gzip, snappy (raw and xerial framing), lz4 frame (including the broken header
//! checksum of magic 0) and zstd.
//!
//! This crate knows nothing of sockets, requests, storage or authentication: it turns
//! bytes into records or a [`RecordError`], never panics on input, and bounds every
//! allocation by [`DecodeOptions`]. Record keys, values and header values are zero-copy
//! slices of the input (or of the one decompressed buffer of a batch).
//!
//! [`decode_batches`] checks and decompresses each batch and leaves its records to be
//! parsed while iterating ([`RawBatch::records`]), as borrowed [`RecordRef`]s: no
//! allocation or reference count per record. [`decode_records`] builds owned [`Record`]s.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod codec;
mod error;
mod legacy;
mod raw;
mod varint;

use bytes::{Bytes, BytesMut};

pub use error::RecordError;
pub use raw::{Headers, RawBatch, RecordRef, Records};
use varint::Reader;

/// The codec of a message set wrapper or record batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Codec 0.
    None,
    /// Codec 1: gzip, possibly several members.
    Gzip,
    /// Codec 2: snappy, xerial-framed or one raw block.
    Snappy,
    /// Codec 3: LZ4 frame.
    Lz4,
    /// Codec 4: zstd (magic 2 only).
    Zstd,
}

impl Compression {
    /// The codec for attribute bits 0-2, or `None` for the invalid codecs 5-7.
    fn from_attributes(attributes: u16) -> Option<Self> {
        match attributes & 0x07 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Limits applied while decoding one Produce partition.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Most bytes decompression may produce, per batch and in total for one call.
    pub max_decompressed_bytes: usize,
    /// Most records one call may return.
    pub max_records: usize,
    /// Whether zstd (codec 4) is accepted.
    pub allow_zstd: bool,
}

impl Default for DecodeOptions {
    /// 64 MiB, one million records, zstd allowed.
    fn default() -> Self {
        DecodeOptions {
            max_decompressed_bytes: 64 << 20,
            max_records: 1_000_000,
            allow_zstd: true,
        }
    }
}

/// A record header (magic 2 only). Keys may repeat and need not be UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Header key.
    pub key: Bytes,
    /// Header value, `None` if null.
    pub value: Option<Bytes>,
}

/// One record as the producer wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Producer timestamp in ms; `None` for magic 0 or when the producer sent -1.
    pub timestamp_ms: Option<i64>,
    /// Key, `None` if null.
    pub key: Option<Bytes>,
    /// Value, `None` if null.
    pub value: Option<Bytes>,
    /// Headers in wire order (always empty for magic 0/1).
    pub headers: Vec<Header>,
}

/// What the producer declared about a batch. For magic 0/1 the producer fields are -1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// 0, 1 or 2.
    pub magic: u8,
    /// Codec of the batch or wrapper message.
    pub compression: Compression,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Record count minus one.
    pub last_offset_delta: i32,
    /// Attribute bit 4 (magic 2).
    pub transactional: bool,
    /// Attribute bit 5 (magic 2): a control batch.
    pub control: bool,
}

/// One record batch (magic 2), or one top-level message of a message set (magic 0/1):
/// a compressed wrapper gives all its inner records, a plain message one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Batch-level fields.
    pub info: BatchInfo,
    /// The records, in order.
    pub records: Vec<Record>,
}

/// Checks and decompresses every entry in `data` (a MessageSet of magic 0/1 entries,
/// magic-2 record batches, or a mix: dispatch on the magic byte at offset 16 of each
/// entry); the records of each batch are parsed and checked as [`RawBatch::records`]
/// iterates them.
///
/// Empty input gives no batches. A truncated last entry is an error, as is any
/// violation listed on [`RecordError`] that is not inside a magic-2 record. Base offsets
/// are ignored. The record and decompression limits cover the whole call.
pub fn decode_batches(data: Bytes, opts: &DecodeOptions) -> Result<Vec<RawBatch>, RecordError> {
    decode_batches_with(data, opts, &mut Spare::default())
}

/// [`decode_batches`], decompressing lz4 into buffers kept in `spare` by
/// [`Spare::recycle`], so a thread that decodes batch after batch neither allocates nor
/// zeroes a fresh output buffer for each.
pub fn decode_batches_with(
    data: Bytes,
    opts: &DecodeOptions,
    spare: &mut Spare,
) -> Result<Vec<RawBatch>, RecordError> {
    let mut batches = Vec::new();
    for_each_batch(data, opts, spare, |batch| {
        batches.push(batch);
        Ok(())
    })?;
    Ok(batches)
}

/// Decodes every entry in `data` as [`decode_batches`] does, and every record in them.
///
/// Empty input gives no batches. A truncated last entry is an error, as is any
/// violation listed on [`RecordError`]. Base offsets are ignored.
pub fn decode_records(data: Bytes, opts: &DecodeOptions) -> Result<Vec<Batch>, RecordError> {
    let mut batches = Vec::new();
    for_each_batch(data, opts, &mut Spare::default(), |batch| {
        batches.push(batch.into_batch()?);
        Ok(())
    })?;
    Ok(batches)
}

/// Checks and decompresses the entries of `data` one after the other, handing each to
/// `each` before going on to the next.
fn for_each_batch(
    data: Bytes,
    opts: &DecodeOptions,
    spare: &mut Spare,
    mut each: impl FnMut(RawBatch) -> Result<(), RecordError>,
) -> Result<(), RecordError> {
    let mut budget = Budget::new(opts, spare);
    let mut r = Reader::new(&data);
    while !r.is_empty() {
        let entry = data.slice_ref(next_entry(&mut r)?);
        let batch = match entry[MAGIC_OFFSET] {
            0 | 1 => legacy::decode(entry, &mut budget)?,
            2 => batch::decode(entry, &mut budget)?,
            m => return Err(RecordError::invalid(format!("unknown magic {m}"))),
        };
        each(batch)?;
    }
    Ok(())
}

/// Buffers whose bytes are no longer needed, kept for reuse: by the next decompression
/// (lz4) on the same thread, or by whoever keeps one (the server's request frames). It
/// keeps at most a set number of buffers of at most a set capacity each
/// ([`SPARE_BUFFERS`] of [`SPARE_CAPACITY`] by default), so what it holds is bounded
/// whatever passed through it.
#[derive(Debug)]
pub struct Spare {
    buffers: Vec<BytesMut>,
    max_buffers: usize,
    max_capacity: usize,
}

/// Most buffers a default [`Spare`] keeps.
pub const SPARE_BUFFERS: usize = 2;
/// Largest buffer (capacity) a default [`Spare`] keeps: a 1 MiB batch (librdkafka's
/// default `batch.size`) and the room of its last block fit.
pub const SPARE_CAPACITY: usize = 2 << 20;

impl Default for Spare {
    fn default() -> Self {
        Self::new(SPARE_BUFFERS, SPARE_CAPACITY)
    }
}

impl Spare {
    /// Keeps at most `max_buffers` buffers of at most `max_capacity` bytes each.
    pub fn new(max_buffers: usize, max_capacity: usize) -> Self {
        Self { buffers: Vec::new(), max_buffers, max_capacity }
    }

    /// Keeps the decompressed data of `batches` for reuse, where nothing else still refers
    /// to it and it is small enough; the rest is freed.
    pub fn recycle(&mut self, batches: Vec<RawBatch>) {
        for batch in batches {
            if self.buffers.len() == self.max_buffers {
                return;
            }
            if batch.info.compression == Compression::None {
                continue;
            }
            if let Some(data) = batch.into_data() {
                self.keep(data);
            }
        }
    }

    /// Keeps the buffer of `data` for reuse if nothing else refers to it, it is small
    /// enough and there is room; otherwise it is only dropped.
    pub fn keep(&mut self, data: Bytes) {
        if self.buffers.len() >= self.max_buffers {
            return;
        }
        if let Ok(buf) = data.try_into_mut() {
            if buf.capacity() <= self.max_capacity {
                self.buffers.push(buf);
            }
        }
    }

    /// A kept buffer (its old bytes still in it), or an empty one.
    pub fn take(&mut self) -> BytesMut {
        self.buffers.pop().unwrap_or_default()
    }

    /// Buffers kept now.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Whether no buffer is kept.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }
}

/// Cheap look at the first entry's magic and codec without decompressing.
///
/// `None` if `data` is too short to hold them, or the magic or codec is unknown.
pub fn peek_format(data: &[u8]) -> Option<(u8, Compression)> {
    let magic = *data.get(MAGIC_OFFSET)?;
    let attributes = match magic {
        0 | 1 => u16::from(*data.get(MAGIC_OFFSET + 1)?),
        2 => u16::from_be_bytes([*data.get(21)?, *data.get(22)?]),
        _ => return None,
    };
    Some((magic, Compression::from_attributes(attributes)?))
}

/// Offset (int64) + size (int32) before every entry of either format.
const LOG_OVERHEAD: usize = 12;
/// Where the magic byte sits in an entry of any format.
const MAGIC_OFFSET: usize = 16;

/// Splits the next entry (offset, size and `size` bytes) off `r`. The entry is at
/// least long enough to hold its magic byte.
fn next_entry<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], RecordError> {
    let size = match r.rest().get(8..LOG_OVERHEAD) {
        Some(&[a, b, c, d]) => i32::from_be_bytes([a, b, c, d]),
        _ => {
            return Err(RecordError::corrupt(format!(
                "truncated entry header: {} bytes left",
                r.remaining()
            )))
        }
    };
    match usize::try_from(size) {
        Ok(size) if size > MAGIC_OFFSET - LOG_OVERHEAD => r.bytes(LOG_OVERHEAD + size, "entry"),
        _ => Err(RecordError::corrupt(format!("entry size {size} too small"))),
    }
}

/// Limits shared by all entries of one [`decode_batches`] or [`decode_records`] call.
pub(crate) struct Budget<'a> {
    opts: &'a DecodeOptions,
    bytes_left: usize,
    records_left: usize,
    spare: &'a mut Spare,
}

impl<'a> Budget<'a> {
    fn new(opts: &'a DecodeOptions, spare: &'a mut Spare) -> Self {
        Budget {
            opts,
            spare,
            bytes_left: opts.max_decompressed_bytes,
            records_left: opts.max_records,
        }
    }

    /// Claims `n` more records.
    pub(crate) fn take_records(&mut self, n: usize) -> Result<(), RecordError> {
        self.records_left =
            self.records_left
                .checked_sub(n)
                .ok_or(RecordError::TooManyRecords {
                    limit: self.opts.max_records,
                })?;
        Ok(())
    }

    /// Decompresses `data`, charging its output to the byte budget.
    pub(crate) fn decompress(
        &mut self,
        codec: Compression,
        magic: u8,
        data: &Bytes,
    ) -> Result<Bytes, RecordError> {
        if codec == Compression::Zstd && !self.opts.allow_zstd {
            return Err(RecordError::UnsupportedCompression(codec));
        }
        let out = codec::decompress(codec, magic, data, self.bytes_left, self.spare).map_err(|f| match f {
            codec::Failure::TooLarge => RecordError::DecompressedTooLarge {
                limit: self.opts.max_decompressed_bytes,
            },
            codec::Failure::Corrupt(msg) => RecordError::Corrupt(msg),
        })?;
        if codec != Compression::None {
            self.bytes_left -= out.len();
        }
        Ok(out)
    }
}
