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
use super::{respond, Reply, RequestHeader};

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

/// Answers ApiVersions. The request body carries only the client's name and version,
/// which are not needed, so it is not parsed (and never rejected).
pub fn handle(header: &RequestHeader, _body: &Bytes) -> Reply {
    if !(0..=MAX_VERSION).contains(&header.api_version) {
        return unsupported_version(header);
    }
    let api_keys = ADVERTISED
        .iter()
        .map(|&(key, min, max)| ApiVersion::default().with_api_key(key).with_min_version(min).with_max_version(max))
        .collect();
    // No optional tagged fields: librdkafka 2.0.2 cannot parse a v3 response carrying them.
    let body = ApiVersionsResponse::default().with_error_code(code::NONE).with_api_keys(api_keys);
    respond(header, &body)
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
