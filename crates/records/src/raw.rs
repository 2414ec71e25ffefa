//! The borrowing view of decoded entries: a [`RawBatch`] whose records are parsed as they
//! are iterated, each a [`RecordRef`] of slices into the batch's bytes.

use std::fmt;

use bytes::Bytes;

use crate::batch::{next_header, V2Records, MIN_RECORD_LEN};
use crate::varint::Reader;
use crate::{Batch, BatchInfo, Header, Record, RecordError};

/// One record batch (magic 2) or top-level message (magic 0/1), checked and decompressed,
/// its records not yet parsed (see [`crate::decode_batches`]).
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Batch-level fields.
    pub info: BatchInfo,
    pub(crate) body: Body,
}

/// Where the records of a [`RawBatch`] are.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Magic 2: the records section, decompressed, parsed on iteration.
    V2 {
        data: Bytes,
        /// Declared record count (> 0).
        count: usize,
        /// -1 when the producer set no timestamps.
        base_timestamp: i64,
    },
    /// Magic 0/1, rare: decoded up front.
    Legacy(Vec<Record>),
}

impl RawBatch {
    /// Number of records the batch declares (and, iterated without error, yields); never
    /// more than its record data could hold, so it may size buffers.
    pub fn record_count(&self) -> usize {
        match &self.body {
            Body::V2 { count, .. } => *count,
            Body::Legacy(records) => records.len(),
        }
    }

    /// The decompressed records section of a magic-2 batch.
    pub(crate) fn into_data(self) -> Option<Bytes> {
        match self.body {
            Body::V2 { data, .. } => Some(data),
            Body::Legacy(_) => None,
        }
    }

    /// Size of the record data (after decompression), for sizing buffers built from it.
    pub fn data_len(&self) -> usize {
        match &self.body {
            Body::V2 { data, .. } => data.len(),
            Body::Legacy(records) => records
                .iter()
                .map(|r| {
                    r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len)
                })
                .sum(),
        }
    }

    /// The records in order, parsed as they come. A record that fails a check yields its
    /// error and ends the iteration; so do bytes left after the last record.
    #[inline]
    pub fn records(&self) -> Records<'_> {
        Records(match &self.body {
            Body::V2 {
                data,
                count,
                base_timestamp,
            } => RecordsInner::V2(V2Records::new(data, *count, *base_timestamp)),
            Body::Legacy(records) => RecordsInner::Legacy(records.iter()),
        })
    }

    /// The batch with every record decoded, keys and values sharing the batch's bytes.
    pub(crate) fn into_batch(self) -> Result<Batch, RecordError> {
        let records = match self.body {
            Body::Legacy(records) => records,
            Body::V2 { .. } => self.shared_records()?,
        };
        Ok(Batch {
            info: self.info,
            records,
        })
    }

    /// The records of a magic-2 batch as [`Record`]s sharing its bytes.
    fn shared_records(&self) -> Result<Vec<Record>, RecordError> {
        let Body::V2 { data, .. } = &self.body else {
            return Ok(Vec::new());
        };
        let share = |s: &[u8]| data.slice_ref(s);
        let records = self.records();
        // Bound the allocation by what the bytes could hold, not by the declared count.
        let mut out = Vec::with_capacity(records.size_hint().0.min(data.len() / MIN_RECORD_LEN));
        for record in records {
            let record = record?;
            out.push(Record {
                timestamp_ms: record.timestamp_ms,
                key: record.key.map(share),
                value: record.value.map(share),
                headers: record
                    .headers
                    .map(|(key, value)| Header {
                        key: share(key),
                        value: value.map(share),
                    })
                    .collect(),
            });
        }
        Ok(out)
    }
}

/// Iterator over the records of a [`RawBatch`]; see [`RawBatch::records`].
#[derive(Debug, Clone)]
pub struct Records<'a>(RecordsInner<'a>);

#[derive(Debug, Clone)]
enum RecordsInner<'a> {
    V2(V2Records<'a>),
    Legacy(std::slice::Iter<'a, Record>),
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, RecordError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            RecordsInner::V2(records) => records.next(),
            RecordsInner::Legacy(records) => records.next().map(|r| {
                Ok(RecordRef {
                    timestamp_ms: r.timestamp_ms,
                    key: r.key.as_deref(),
                    value: r.value.as_deref(),
                    headers: Headers::default(),
                })
            }),
        }
    }

    /// At least the records not yet yielded (an error may come instead of any of them, and
    /// one more after them).
    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            RecordsInner::V2(records) => (records.left(), records.left().checked_add(1)),
            RecordsInner::Legacy(records) => records.size_hint(),
        }
    }
}

/// One record as the producer wrote it, borrowed from its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRef<'a> {
    /// Producer timestamp in ms; `None` for magic 0 or when the producer sent -1.
    pub timestamp_ms: Option<i64>,
    /// Key, `None` if null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` if null.
    pub value: Option<&'a [u8]>,
    /// Headers in wire order (none for magic 0/1), already checked.
    pub headers: Headers<'a>,
}

/// The headers of a [`RecordRef`]: `(key, value)` pairs, a `None` value being null. Keys
/// may repeat and need not be UTF-8.
#[derive(Clone)]
pub struct Headers<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> Headers<'a> {
    /// `count` headers encoded in `data`, which the record parser checked.
    pub(crate) fn new(data: &'a [u8], count: usize) -> Self {
        Headers {
            r: Reader::new(data),
            left: count,
        }
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let header = next_header(&mut self.r);
        if header.is_none() {
            // Cannot happen for checked bytes; end rather than repeat.
            self.left = 0;
        }
        header
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Headers<'_> {}

impl Default for Headers<'_> {
    /// No headers.
    fn default() -> Self {
        Headers::new(&[], 0)
    }
}

impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.clone().eq(other.clone())
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}
