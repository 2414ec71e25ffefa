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

use crate::varint::Reader;
use crate::{Batch, BatchInfo, Budget, Compression, Header, Record, RecordError};

/// Size of the batch header, up to and including recordCount.
const HEADER_LEN: usize = 61;
/// Smallest possible encoded record: length, attributes, timestampDelta, offsetDelta,
/// key length, value length and header count, one byte each.
const MIN_RECORD_LEN: usize = 7;

const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// Decodes one magic-2 record batch (`entry` spans baseOffset to the batch's end).
pub(crate) fn decode(entry: Bytes, budget: &mut Budget) -> Result<Batch, RecordError> {
    if entry.len() < HEADER_LEN {
        return Err(RecordError::corrupt(format!(
            "record batch of {} bytes is shorter than its {HEADER_LEN}-byte header",
            entry.len()
        )));
    }
    let mut r = Reader::new(entry);
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

    let blob = r.bytes(r.remaining(), "records")?;
    let data = budget.decompress(compression, 2, &blob)?;
    let records = decode_records(data, count, base_timestamp)?;
    Ok(Batch {
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
        records,
    })
}

/// Decodes exactly `count` records filling `data` exactly.
fn decode_records(
    data: Bytes,
    count: usize,
    base_timestamp: i64,
) -> Result<Vec<Record>, RecordError> {
    // Bound the allocation by what the bytes could hold, not by the declared count.
    let mut records = Vec::with_capacity(count.min(data.len() / MIN_RECORD_LEN));
    let mut r = Reader::new(data);
    for _ in 0..count {
        let len = r.varint("record length")?;
        let len = usize::try_from(len)
            .map_err(|_| RecordError::corrupt(format!("negative record length {len}")))?;
        let mut body = Reader::new(r.bytes(len, "record")?);
        records.push(decode_record(&mut body, base_timestamp)?);
        if !body.is_empty() {
            return Err(RecordError::corrupt(format!(
                "{} bytes left inside a record after its headers",
                body.remaining()
            )));
        }
    }
    if !r.is_empty() {
        return Err(RecordError::corrupt(format!(
            "{} bytes after the last of {count} records",
            r.remaining()
        )));
    }
    Ok(records)
}

fn decode_record(r: &mut Reader, base_timestamp: i64) -> Result<Record, RecordError> {
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
    // Each header takes at least two bytes (key length and value length).
    let mut headers = Vec::with_capacity(count.min(r.remaining() / 2));
    for _ in 0..count {
        let key = r
            .varint_bytes("header key")?
            .ok_or_else(|| RecordError::invalid("null header key"))?;
        let value = r.varint_bytes("header value")?;
        headers.push(Header { key, value });
    }
    Ok(Record {
        timestamp_ms,
        key,
        value,
        headers,
    })
}
