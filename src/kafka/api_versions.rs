//! ApiVersions (key 18): which APIs and versions this gateway answers.
//!
//! The list is what real clients need, not only what is served: librdkafka enables
//! message format v2 only if Fetch 4 is listed, zstd only with Fetch 10, LZ4 only with
//! FindCoordinator 0, and (before 2.11.1) any codec only if Produce starts at 0. Fetch and
//! FindCoordinator are answered with well-formed error responses.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

use super::api_key::*;
use super::errors::code;
use super::session::escape_client_text;
use super::{respond, Reply, RequestHeader, Session};

/// Highest ApiVersions version answered in its own format.
pub const MAX_VERSION: i16 = 3;

/// `(api_key, min, max)` advertised to every client.
pub const ADVERTISED: &[(i16, i16, i16)] = &[
    (PRODUCE, 0, super::produce::MAX_VERSION),
    (FETCH, 0, 11),
    (METADATA, 0, super::metadata::MAX_VERSION),
    (FIND_COORDINATOR, 0, 3),
    (SASL_HANDSHAKE, 0, 1),
    (API_VERSIONS, 0, MAX_VERSION),
    (SASL_AUTHENTICATE, 0, 2),
    (INIT_PRODUCER_ID, 0, super::init_producer_id::MAX_VERSION),
];

/// Whether `version` of `api_key` is one this gateway answers.
pub fn is_supported(api_key: i16, version: i16) -> bool {
    ADVERTISED.iter().any(|&(k, min, max)| k == api_key && (min..=max).contains(&version))
}

/// Answers ApiVersions. The request body (v3+) carries only the client's software name
/// and version: they are kept in the session for log lines when they parse, and never a
/// reason to reject the request.
pub fn handle(header: &RequestHeader, body: &Bytes, session: &mut Session) -> Reply {
    if !(0..=MAX_VERSION).contains(&header.api_version) {
        return unsupported_version(header);
    }
    if header.api_version >= 3 {
        if let Some((name, version)) = client_software(body) {
            session.client.software_name = Some(escape_client_text(name));
            session.client.software_version = Some(escape_client_text(version));
        }
    }
    let api_keys = ADVERTISED
        .iter()
        .map(|&(key, min, max)| ApiVersion::default().with_api_key(key).with_min_version(min).with_max_version(max))
        .collect();
    // No optional tagged fields: librdkafka 2.0.2 cannot parse a v3 response carrying them.
    let body = ApiVersionsResponse::default().with_error_code(code::NONE).with_api_keys(api_keys);
    respond(header, &body)
}

/// `client_software_name` and `client_software_version` of a v3 body: two COMPACT_STRINGs
/// (unsigned varint length + 1, then the bytes), then tagged fields, which are not needed.
/// None when the body does not hold them.
fn client_software(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = compact_string(body)?;
    let (version, _) = compact_string(rest)?;
    Some((name, version))
}

/// One COMPACT_STRING off the front of `buf` (null strings count as absent).
fn compact_string(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    let mut used = 0;
    for (i, b) in buf.iter().enumerate().take(5) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            used = i + 1;
            break;
        }
    }
    if used == 0 || len == 0 {
        return None;
    }
    let len = usize::try_from(len - 1).ok()?;
    let rest = &buf[used..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// A request version above ours: a v0-format body with UNSUPPORTED_VERSION and our
/// ApiVersions range, so the client retries with a version we know.
fn unsupported_version(header: &RequestHeader) -> Reply {
    let mut buf = BytesMut::with_capacity(16);
    buf.put_i32(header.correlation_id);
    buf.put_i16(code::UNSUPPORTED_VERSION);
    buf.put_i32(1);
    buf.put_i16(API_VERSIONS);
    buf.put_i16(0);
    buf.put_i16(MAX_VERSION);
    Reply::Frame(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_software_is_read_from_a_v3_body() {
        let body = b"\x0blibrdkafka\x072.16.0\x00";
        assert_eq!(client_software(body), Some((&b"librdkafka"[..], &b"2.16.0"[..])));
    }

    #[test]
    fn truncated_or_null_strings_give_nothing() {
        assert_eq!(client_software(b"\x0blibrd"), None);
        assert_eq!(client_software(b"\x00\x01"), None);
        assert_eq!(client_software(b""), None);
        assert_eq!(client_software(b"\xff\xff\xff\xff\xff\xff"), None);
    }

    #[test]
    fn peer_text_is_escaped_and_cut() {
        assert_eq!(escape_client_text(b"evil\nname=\"x\""), "evil\\nname=\\\"x\\\"");
        assert_eq!(escape_client_text(&[b'a'; 200]).len(), super::super::session::MAX_CLIENT_TEXT);
    }
}
