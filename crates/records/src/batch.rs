//! Record batches of magic 2 (Kafka 0.11+).
//!
//! ```text
//!  0 baseOffset int64        8 batchLength int32     12 partitionLeaderEpoch int32
//! 16 magic int8             17 crc uint32 (CRC-32C of attributes..end)
//! 21 attributes int16       23 lastOffsetDelta int32 27 baseTimestamp int64
//! 35 maxTimestamp int64     43 producerId int64      51 producerEpoch int16
//! 53 baseSequence int32     57 recordCount int32     61 records (compressed as one blob)
//! ```
//! Each record: `length varint, attributes int8, timestampDelta varlong, offsetDelta
//! varint, key, value, headerCount varint, headers`, lengths as zigzag varints with -1
//! for null.

use bytes::Bytes;

use crate::raw::{Body, Headers, RawBatch, RecordRef};
use crate::varint::Reader;
use crate::{BatchInfo, Budget, Compression, RecordError};

/// Size of the batch header, up to and including recordCount.
const HEADER_LEN: usize = 61;

/// Smallest possible encoded record: length, attributes, timestampDelta, offsetDelta,
/// key length, value length and header count, one byte each.
pub(crate) const MIN_RECORD_LEN: usize = 7;

const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// Checks and decompresses one magic-2 record batch (`entry` spans baseOffset to the
/// batch's end); its records are parsed as they are iterated.
pub(crate) fn decode(entry: Bytes, budget: &mut Budget) -> Result<RawBatch, RecordError> {
    if entry.len() < HEADER_LEN {
        return Err(RecordError::corrupt(format!(
            "record batch of {} bytes is shorter than its {HEADER_LEN}-byte header",
            entry.len()
        )));
    }
    let mut r = Reader::new(&entry);
    r.i64("base offset")?; // ignored: the broker assigns offsets
    r.i32("batch length")?; // already checked by `next_entry`
    r.i32("partition leader epoch")?;
    r.u8("magic")?;
    let crc = r.u32("crc")?;
    let actual = crc32c::crc32c(r.rest());
    if crc != actual {
        return Err(RecordError::corrupt(format!(
            "record batch CRC mismatch: stored {crc:#010x}, computed {actual:#010x}"
        )));
    }

    let attributes = r.i16("attributes")?;
    let compression = Compression::from_attributes(attributes as u16)
        .ok_or_else(|| RecordError::invalid(format!("unknown codec {}", attributes & 0x07)))?;
    let last_offset_delta = r.i32("last offset delta")?;
    let base_timestamp = r.i64("base timestamp")?;
    r.i64("max timestamp")?;
    let producer_id = r.i64("producer id")?;
    let producer_epoch = r.i16("producer epoch")?;
    let base_sequence = r.i32("base sequence")?;
    let count = r.i32("record count")?;

    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| RecordError::invalid(format!("record count {count} is not positive")))?;
    if i64::from(last_offset_delta) + 1 != count as i64 {
        return Err(RecordError::invalid(format!(
            "last offset delta {last_offset_delta} does not match record count {count}"
        )));
    }
    budget.take_records(count)?;

    let data = budget.decompress(compression, 2, &entry.slice(HEADER_LEN..))?;
    // Whoever sizes buffers by `record_count()` relies on it being backed by bytes.
    if count > data.len() / MIN_RECORD_LEN {
        return Err(RecordError::corrupt(format!(
            "record count {count} cannot fit in {} bytes of records",
            data.len()
        )));
    }
    Ok(RawBatch {
        info: BatchInfo {
            magic: 2,
            compression,
            producer_id,
            producer_epoch,
            base_sequence,
            last_offset_delta,
            transactional: attributes & TRANSACTIONAL_BIT != 0,
            control: attributes & CONTROL_BIT != 0,
        },
        body: Body::V2 {
            data,
            count,
            base_timestamp,
        },
    })
}

/// The records of a batch, parsed one by one from its (decompressed) records section.
///
/// Yields exactly `count` records filling the section exactly, or stops after the first
/// error: a record that is damaged, or bytes left after the last one.
#[derive(Debug, Clone)]
pub(crate) struct V2Records<'a> {
    r: Reader<'a>,
    /// Records still to read.
    left: usize,
    count: usize,
    base_timestamp: i64,
    /// Whether the end or an error was reported.
    done: bool,
}

impl<'a> V2Records<'a> {
    pub(crate) fn new(data: &'a [u8], count: usize, base_timestamp: i64) -> Self {
        V2Records {
            r: Reader::new(data),
            left: count,
            count,
            base_timestamp,
            done: false,
        }
    }

    /// Records not yet yielded.
    pub(crate) fn left(&self) -> usize {
        self.left
    }

    fn record(&mut self) -> Result<RecordRef<'a>, RecordError> {
        let len = self.r.varint("record length")?;
        let len = usize::try_from(len)
            .map_err(|_| RecordError::corrupt(format!("negative record length {len}")))?;
        let mut body = Reader::new(self.r.bytes(len, "record")?);
        let record = decode_record(&mut body, self.base_timestamp)?;
        if !body.is_empty() {
            return Err(RecordError::corrupt(format!(
                "{} bytes left inside a record after its headers",
                body.remaining()
            )));
        }
        Ok(record)
    }
}

impl<'a> Iterator for V2Records<'a> {
    type Item = Result<RecordRef<'a>, RecordError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.left == 0 {
            self.done = true;
            return (!self.r.is_empty()).then(|| {
                Err(RecordError::corrupt(format!(
                    "{} bytes after the last of {} records",
                    self.r.remaining(),
                    self.count
                )))
            });
        }
        self.left -= 1;
        let record = self.record();
        self.done = record.is_err();
        Some(record)
    }
}

fn decode_record<'a>(
    r: &mut Reader<'a>,
    base_timestamp: i64,
) -> Result<RecordRef<'a>, RecordError> {
    r.u8("record attributes")?;
    let delta = r.varlong("timestamp delta")?;
    r.varint("offset delta")?;
    let timestamp_ms = if base_timestamp == -1 {
        None
    } else {
        Some(
            base_timestamp
                .checked_add(delta)
                .ok_or_else(|| RecordError::corrupt("timestamp delta overflows"))?,
        )
    };
    let key = r.varint_bytes("record key")?;
    let value = r.varint_bytes("record value")?;
    let count = r.varint("header count")?;
    let count = usize::try_from(count)
        .map_err(|_| RecordError::invalid(format!("negative header count {count}")))?;
    // Checked here, read again (infallibly) by whoever iterates them.
    let headers = r.rest();
    for _ in 0..count {
        r.varint_bytes("header key")?
            .ok_or_else(|| RecordError::invalid("null header key"))?;
        r.varint_bytes("header value")?;
    }
    let headers = &headers[..headers.len() - r.remaining()];
    Ok(RecordRef {
        timestamp_ms,
        key,
        value,
        headers: Headers::new(headers, count),
    })
}

/// Reads the next header of a list [`decode_record`] checked; `None` at its end.
pub(crate) fn next_header<'a>(r: &mut Reader<'a>) -> Option<(&'a [u8], Option<&'a [u8]>)> {
    let key = r.varint_bytes("header key").ok()??;
    let value = r.varint_bytes("header value").ok()?;
    Some((key, value))
}
