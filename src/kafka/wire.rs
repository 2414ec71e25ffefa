//! A bounded reader of Kafka request bodies, classic and flexible (KIP-482) encodings.
//!
//! Every length and count is checked against the bytes that remain before anything is
//! sized by it: a string or bytes field must fit, and an array of `n` elements must have
//! at least `n x` its element's smallest encoding left. So no decoder built on it (nor any
//! `kafka-protocol` decoder run after [`check`]ing a body with it) reserves memory for
//! elements that are not there. Strings and bytes are zero-copy slices of the body.

use bytes::{Buf, Bytes};

/// Most tagged fields one section may carry. Requests of the versions served define at
/// most a handful of tags (none are sent by the clients seen); `kafka-protocol` keeps every
/// unknown one in a map, so an unbounded section would cost far more memory than bytes.
pub const MAX_TAGGED_FIELDS: u32 = 64;

/// Most topics one Metadata or Produce request may name, and most partition entries one
/// Produce request may carry (over all its topics). A gateway's projects have tens of
/// logstores of a few shards; each entry costs a response entry and, in Produce, a write
/// in flight, far more memory than its few bytes on the wire.
pub const MAX_REQUEST_ENTRIES: usize = 10_000;

/// Why a request body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{what}: {count} elements cannot fit in the {remaining} bytes left")]
    Count { what: &'static str, count: u64, remaining: usize },
    #[error("{what}: {len} bytes declared, {remaining} left")]
    Length { what: &'static str, len: u64, remaining: usize },
    #[error("{0}: invalid length {1}")]
    Negative(&'static str, i64),
    #[error("{0} is null")]
    Null(&'static str),
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("{0}: varint longer than 5 bytes")]
    Varint(&'static str),
    #[error("{what}: {count} entries, more than {MAX_REQUEST_ENTRIES}")]
    TooManyEntries { what: &'static str, count: usize },
    #[error("{0}: {1} tagged fields, more than {MAX_TAGGED_FIELDS}")]
    TooManyTaggedFields(&'static str, u32),
}

/// Reads a request body front to back. `flexible` selects compact strings, bytes and
/// arrays (unsigned varint lengths, plus one) and tagged-field sections.
pub struct Wire {
    buf: Bytes,
    flexible: bool,
}

impl Wire {
    pub fn new(buf: Bytes, flexible: bool) -> Self {
        Wire { buf, flexible }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    pub fn is_flexible(&self) -> bool {
        self.flexible
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            return Err(WireError::Truncated(what));
        }
        Ok(())
    }

    pub fn i8(&mut self, what: &'static str) -> Result<i8, WireError> {
        self.need(1, what)?;
        Ok(self.buf.get_i8())
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }

    /// Skips `n` fixed bytes (a UUID is 16).
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), WireError> {
        self.need(n, what)?;
        self.buf.advance(n);
        Ok(())
    }

    /// An unsigned varint of at most 5 bytes (32 bits).
    pub fn uvarint(&mut self, what: &'static str) -> Result<u32, WireError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.i8(what)? as u8;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Varint(what))
    }

    /// `len` bytes, checked against what remains.
    pub fn take(&mut self, len: u64, what: &'static str) -> Result<Bytes, WireError> {
        let remaining = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= remaining => Ok(self.buf.split_to(n)),
            _ => Err(WireError::Length { what, len, remaining }),
        }
    }

    /// A length prefix: int16 (strings) or int32 (bytes) classic, unsigned varint minus
    /// one flexible; `None` for null (-1, or 0 flexible).
    fn length(&mut self, wide: bool, what: &'static str) -> Result<Option<u64>, WireError> {
        if self.flexible {
            return Ok(self.uvarint(what)?.checked_sub(1).map(u64::from));
        }
        let n = if wide { i64::from(self.i32(what)?) } else { i64::from(self.i16(what)?) };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(WireError::Negative(what, n)),
            n => Ok(Some(n as u64)),
        }
    }

    /// A nullable string's bytes (UTF-8 not checked).
    pub fn nullable_string(&mut self, what: &'static str) -> Result<Option<Bytes>, WireError> {
        match self.length(false, what)? {
            None => Ok(None),
            Some(len) => self.take(len, what).map(Some),
        }
    }

    /// A non-null string, checked to be UTF-8.
    pub fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let raw = self.nullable_string(what)?.ok_or(WireError::Null(what))?;
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::Utf8(what))
    }

    /// Nullable bytes (int32 length classic).
    pub fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<Bytes>, WireError> {
        match self.length(true, what)? {
            None => Ok(None),
            Some(len) => self.take(len, what).map(Some),
        }
    }

    /// A nullable array's element count, which must fit in what remains given that every
    /// element takes at least `min_element` bytes.
    pub fn array_len(&mut self, min_element: usize, what: &'static str) -> Result<Option<usize>, WireError> {
        let Some(count) = self.length(true, what)? else {
            return Ok(None);
        };
        let remaining = self.remaining();
        if count > (remaining / min_element.max(1)) as u64 {
            return Err(WireError::Count { what, count, remaining });
        }
        Ok(Some(count as usize))
    }

    /// A non-null array's element count, as [`Wire::array_len`].
    pub fn array(&mut self, min_element: usize, what: &'static str) -> Result<usize, WireError> {
        self.array_len(min_element, what)?.ok_or(WireError::Null(what))
    }

    /// Skips a tagged-field section (flexible only; a no-op otherwise): a count, then tag,
    /// size and bytes each. At most [`MAX_TAGGED_FIELDS`], each at least 2 bytes.
    pub fn tagged_fields(&mut self, what: &'static str) -> Result<(), WireError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint(what)?;
        if count > MAX_TAGGED_FIELDS {
            return Err(WireError::TooManyTaggedFields(what, count));
        }
        let remaining = self.remaining();
        if u64::from(count) > (remaining / 2) as u64 {
            return Err(WireError::Count { what, count: count.into(), remaining });
        }
        for _ in 0..count {
            self.uvarint(what)?;
            let size = self.uvarint(what)?;
            self.take(size.into(), what)?;
        }
        Ok(())
    }
}

/// Walks a body of one of the non-Produce requests the server decodes with
/// `kafka-protocol`, checking every count, length and tagged-field section against the
/// bytes that remain, so that decoding it afterwards allocates only for what is there.
/// Trailing bytes are left alone, as `kafka-protocol` leaves them.
pub fn check(api_key: i16, version: i16, body: &Bytes) -> Result<(), WireError> {
    use super::api_key::*;
    let flexible = match api_key {
        METADATA => version >= 9,
        INIT_PRODUCER_ID => version >= 2,
        SASL_AUTHENTICATE => version >= 2,
        FIND_COORDINATOR => version >= 3,
        _ => false,
    };
    let mut w = Wire::new(body.clone(), flexible);
    match api_key {
        METADATA => {
            // Smallest topic: a UUID (v10+), an empty or null name, its tagged fields.
            let min_topic = if version >= 10 { 18 } else { 2 };
            let count = w.array_len(min_topic, "metadata topics")?.unwrap_or(0);
            if count > MAX_REQUEST_ENTRIES {
                return Err(WireError::TooManyEntries { what: "metadata topics", count });
            }
            for _ in 0..count {
                if version >= 10 {
                    w.skip(16, "topic id")?;
                }
                w.nullable_string("topic name")?;
                w.tagged_fields("topic tagged fields")?;
            }
            if version >= 4 {
                w.i8("allow_auto_topic_creation")?;
            }
            if (8..=10).contains(&version) {
                w.i8("include_cluster_authorized_operations")?;
            }
            if version >= 8 {
                w.i8("include_topic_authorized_operations")?;
            }
        }
        INIT_PRODUCER_ID => {
            w.nullable_string("transactional id")?;
            w.i32("transaction timeout")?;
            if version >= 3 {
                w.i64("producer id")?;
                w.i16("producer epoch")?;
            }
        }
        SASL_AUTHENTICATE => {
            w.nullable_bytes("auth bytes")?;
        }
        SASL_HANDSHAKE => {
            w.nullable_string("mechanism")?;
        }
        FIND_COORDINATOR => {
            w.nullable_string("key")?;
            if version >= 1 {
                w.i8("key type")?;
            }
        }
        _ => {}
    }
    w.tagged_fields("request tagged fields")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(bytes: &[u8], flexible: bool) -> Wire {
        Wire::new(Bytes::copy_from_slice(bytes), flexible)
    }

    #[test]
    fn counts_must_fit_in_the_bytes_left() {
        let mut w = wire(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0], false);
        assert!(matches!(w.array(4, "x"), Err(WireError::Count { count: 0x7fff_ffff, .. })));
        let mut w = wire(&[0, 0, 0, 1, 0, 0, 0, 0], false);
        assert_eq!(w.array(4, "x"), Ok(1));
        let mut w = wire(&[0, 0, 0, 2, 0, 0, 0, 0], false);
        assert!(w.array(4, "x").is_err());
        // Flexible: count + 1 as a varint; 0 is null.
        let mut w = wire(&[0xff, 0xff, 0xff, 0xff, 0x0f], true);
        assert!(matches!(w.array(1, "x"), Err(WireError::Count { .. })));
        let mut w = wire(&[0], true);
        assert_eq!(w.array_len(1, "x"), Ok(None));
        let mut w = wire(&[0xff, 0xff, 0xff, 0xff], false);
        assert_eq!(w.array_len(1, "x"), Ok(None));
        let mut w = wire(&[0xff, 0xff, 0xff, 0xfe], false);
        assert!(matches!(w.array_len(1, "x"), Err(WireError::Negative(..))));
    }

    #[test]
    fn lengths_must_fit() {
        assert!(wire(&[0x7f, 0xff, b'a'], false).nullable_string("s").is_err());
        assert!(wire(&[0x7f, 0xff, 0xff, 0xff, b'a'], false).nullable_bytes("b").is_err());
        assert!(wire(&[0xff, 0xff, 0xff, 0xff, 0x0f, b'a'], true).nullable_bytes("b").is_err());
        assert_eq!(wire(&[0, 1, b'a'], false).string("s"), Ok("a".into()));
        assert_eq!(wire(&[2, b'a'], true).string("s"), Ok("a".into()));
        assert_eq!(wire(&[0], true).string("s"), Err(WireError::Null("s")));
        assert_eq!(wire(&[2, 0xff], true).string("s"), Err(WireError::Utf8("s")));
        assert!(wire(&[0x80, 0x80, 0x80, 0x80, 0x80, 0], true).uvarint("v").is_err());
    }

    #[test]
    fn tagged_fields_are_bounded() {
        assert_eq!(wire(&[0], true).tagged_fields("t"), Ok(()));
        assert_eq!(wire(&[1, 7, 2, b'a', b'b'], true).tagged_fields("t"), Ok(()));
        assert!(wire(&[1, 7, 3, b'a', b'b'], true).tagged_fields("t").is_err());
        assert!(matches!(
            wire(&[0xff, 0xff, 0xff, 0xff, 0x0f], true).tagged_fields("t"),
            Err(WireError::TooManyTaggedFields(..))
        ));
        assert!(matches!(wire(&[3, 0, 0], true).tagged_fields("t"), Err(WireError::Count { .. })));
        // Classic encodings have none.
        assert_eq!(wire(&[], false).tagged_fields("t"), Ok(()));
    }

    #[test]
    fn check_refuses_metadata_count_bombs_and_accepts_real_requests() {
        use crate::kafka::api_key::*;
        // v1: topics count 0x7fffffff, nothing after.
        assert!(check(METADATA, 1, &Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff])).is_err());
        // v12: compact count 2^32-2, nothing after.
        assert!(check(METADATA, 12, &Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f])).is_err());
        // v0: 10,001 empty topic names, all there.
        let mut many = (10_001i32).to_be_bytes().to_vec();
        many.extend(vec![0u8; 2 * 10_001]);
        assert!(matches!(check(METADATA, 0, &Bytes::from(many)), Err(WireError::TooManyEntries { .. })));
        let mut ok = (10_000i32).to_be_bytes().to_vec();
        ok.extend(vec![0u8; 2 * 10_000]);
        assert_eq!(check(METADATA, 0, &Bytes::from(ok)), Ok(()));
        // v12, null topics, three booleans... (v12 has two) and no tagged fields.
        assert_eq!(check(METADATA, 12, &Bytes::from_static(&[0, 1, 0, 0])), Ok(()));
        // v4 with one topic "a".
        assert_eq!(check(METADATA, 4, &Bytes::from_static(&[0, 0, 0, 1, 0, 1, b'a', 1])), Ok(()));
        // SaslAuthenticate v2: a length far beyond the body, or a tagged-field bomb.
        assert!(check(SASL_AUTHENTICATE, 2, &Bytes::from_static(&[0xff, 0xff, 0xff, 0x7f, 0])).is_err());
        assert!(check(SASL_AUTHENTICATE, 2, &Bytes::from_static(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f])).is_err());
        assert_eq!(check(SASL_AUTHENTICATE, 2, &Bytes::from_static(&[3, b'a', b'b', 0])), Ok(()));
        assert_eq!(check(SASL_AUTHENTICATE, 0, &Bytes::from_static(&[0, 0, 0, 1, b'a'])), Ok(()));
    }
}
