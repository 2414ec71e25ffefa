//! Message sets of magic 0 (Kafka 0.8-0.9) and magic 1 (Kafka 0.10).
//!
//! ```text
//! offset int64, size int32, crc uint32 (CRC-32 IEEE of magic..end), magic int8,
//! attributes int8, [timestamp int64 if magic 1], key int32-prefixed, value int32-prefixed
//! ```
//! A message with codec != 0 is a wrapper whose value is a compressed inner message
//! set of the same magic, whose messages must be uncompressed.

use bytes::Bytes;

use crate::raw::{Body, RawBatch};
use crate::varint::Reader;
use crate::{next_entry, BatchInfo, Budget, Compression, Record, RecordError};

/// One parsed message (CRC verified).
struct Message {
    magic: u8,
    compression: Compression,
    record: Record,
}

/// Decodes one top-level entry of magic 0 or 1 into a batch (records and all: these are
/// rare, so they are not parsed lazily like magic 2).
pub(crate) fn decode(entry: Bytes, budget: &mut Budget) -> Result<RawBatch, RecordError> {
    let outer = parse(entry)?;
    let records = if outer.compression == Compression::None {
        budget.take_records(1)?;
        vec![outer.record]
    } else {
        let compressed = outer
            .record
            .value
            .ok_or_else(|| RecordError::invalid("compressed wrapper message has a null value"))?;
        let inner = budget.decompress(outer.compression, outer.magic, &compressed)?;
        decode_inner(inner, outer.magic, budget)?
    };
    let last_offset_delta = i32::try_from(records.len() - 1)
        .map_err(|_| RecordError::invalid("too many messages in one wrapper"))?;
    Ok(RawBatch {
        info: BatchInfo {
            magic: outer.magic,
            compression: outer.compression,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            last_offset_delta,
            transactional: false,
            control: false,
        },
        body: Body::Legacy(records),
    })
}

/// Decodes the decompressed message set of a wrapper.
fn decode_inner(set: Bytes, magic: u8, budget: &mut Budget) -> Result<Vec<Record>, RecordError> {
    let mut r = Reader::new(&set);
    let mut records = Vec::new();
    while !r.is_empty() {
        let message = parse(set.slice_ref(next_entry(&mut r)?))?;
        if message.magic != magic {
            return Err(RecordError::invalid(format!(
                "inner message of magic {} in a wrapper of magic {magic}",
                message.magic
            )));
        }
        if message.compression != Compression::None {
            return Err(RecordError::invalid(
                "compressed wrapper holds a compressed inner message",
            ));
        }
        budget.take_records(1)?;
        records.push(message.record);
    }
    if records.is_empty() {
        return Err(RecordError::invalid("compressed wrapper holds no messages"));
    }
    Ok(records)
}

/// Parses one entry (offset, size and message), checking its CRC and that its fields
/// fill it exactly.
fn parse(entry: Bytes) -> Result<Message, RecordError> {
    let mut r = Reader::new(&entry);
    r.i64("offset")?;
    r.i32("message size")?; // already checked by `next_entry`
    let crc = r.u32("crc")?;
    let actual = crc32fast::hash(r.rest());
    if crc != actual {
        return Err(RecordError::corrupt(format!(
            "message CRC mismatch: stored {crc:#010x}, computed {actual:#010x}"
        )));
    }
    let magic = r.u8("magic")?;
    let attributes = r.u8("attributes")?;
    let compression = match Compression::from_attributes(attributes.into()) {
        Some(Compression::Zstd) => {
            return Err(RecordError::invalid(format!(
                "zstd in a message of magic {magic}"
            )))
        }
        Some(c) => c,
        None => {
            return Err(RecordError::invalid(format!(
                "unknown codec {}",
                attributes & 0x07
            )))
        }
    };
    let timestamp_ms = match magic {
        0 => None,
        1 => Some(r.i64("timestamp")?).filter(|&t| t != -1),
        m => return Err(RecordError::invalid(format!("unknown magic {m}"))),
    };
    let key = r.i32_bytes("key")?.map(|k| entry.slice_ref(k));
    let value = r.i32_bytes("value")?.map(|v| entry.slice_ref(v));
    if !r.is_empty() {
        return Err(RecordError::corrupt(format!(
            "{} bytes after the message value",
            r.remaining()
        )));
    }
    Ok(Message {
        magic,
        compression,
        record: Record {
            timestamp_ms,
            key,
            value,
            headers: Vec::new(),
        },
    })
}
