//! Request header parsing (v0 to v2), done by hand so that unknown APIs and versions
//! can still be answered or logged.

use bytes::{Buf, Bytes};

use super::wire::MAX_TAGGED_FIELDS;

/// A request header: which API, which version, and the id to echo back.
#[derive(Debug, Clone)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// A request header that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(pub &'static str);

impl RequestHeader {
    /// Parses the header from the front of `buf`, leaving the request body.
    pub fn parse(buf: &mut Bytes) -> Result<Self, HeaderError> {
        if buf.remaining() < 10 {
            return Err(HeaderError("request shorter than a header"));
        }
        let api_key = buf.get_i16();
        let api_version = buf.get_i16();
        let correlation_id = buf.get_i32();
        if !(0..=1000).contains(&api_key) || !(0..=100).contains(&api_version) {
            return Err(HeaderError("api key or version out of range"));
        }
        let len = buf.get_i16();
        let client_id = if len < 0 {
            None
        } else {
            let len = len as usize;
            if buf.remaining() < len {
                return Err(HeaderError("client id longer than the request"));
            }
            let raw = buf.split_to(len);
            Some(String::from_utf8_lossy(&raw).into_owned())
        };
        let header = Self { api_key, api_version, correlation_id, client_id };
        if header.is_flexible() {
            // An ApiVersions request of a version newer than ours is answered without
            // reading its body, so its header need not be well-formed past the client id.
            let lenient = header.api_key == 18 && header.api_version > crate::kafka::api_versions::MAX_VERSION;
            if skip_tagged_fields(buf).is_err() && !lenient {
                return Err(HeaderError("malformed tagged fields in the request header"));
            }
        }
        Ok(header)
    }

    /// Whether the request uses header v2 (flexible versions carry tagged fields).
    fn is_flexible(&self) -> bool {
        match kafka_protocol::messages::ApiKey::try_from(self.api_key) {
            // ApiVersions v3+ requests use header v2, but an unsupported version's
            // body is never parsed, so only its known versions matter here.
            Ok(key) => key.request_header_version(self.api_version) >= 2,
            Err(_) => false,
        }
    }
}

/// Skips a tagged-field section (unsigned varint count, then tag, size, bytes each): at
/// most [`MAX_TAGGED_FIELDS`], each at least the 2 bytes of its tag and size.
pub fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), HeaderError> {
    let count = read_uvarint(buf)?;
    if count > MAX_TAGGED_FIELDS || count as usize > buf.remaining() / 2 {
        return Err(HeaderError("more tagged fields than the request can hold"));
    }
    for _ in 0..count {
        let _tag = read_uvarint(buf)?;
        let size = read_uvarint(buf)? as usize;
        if buf.remaining() < size {
            return Err(HeaderError("tagged field longer than the request"));
        }
        buf.advance(size);
    }
    Ok(())
}

/// Reads an unsigned varint of at most 5 bytes.
pub fn read_uvarint(buf: &mut Bytes) -> Result<u32, HeaderError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        if !buf.has_remaining() {
            return Err(HeaderError("truncated varint"));
        }
        let b = buf.get_u8();
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HeaderError("varint too long"))
}
