//! Fetch (key 1): listed in ApiVersions only because librdkafka derives message format
//! v2 (Fetch 4) and zstd (Fetch 10) from it. loggate serves no consumers: every Fetch
//! gets a well-formed, empty response (with UNSUPPORTED_VERSION where the version has a
//! top-level error code), never a hang.

use bytes::{BufMut, BytesMut};

use super::errors::code;
use super::{Reply, RequestHeader};

/// Answers Fetch v0-v11 with no data.
pub fn handle(header: &RequestHeader) -> Reply {
    let version = header.api_version;
    if !(0..=11).contains(&version) {
        return Reply::Close(format!("unsupported Fetch version {version}"));
    }
    let mut buf = BytesMut::with_capacity(20);
    buf.put_i32(header.correlation_id);
    if version >= 1 {
        buf.put_i32(0); // throttle_time_ms
    }
    if version >= 7 {
        buf.put_i16(code::UNSUPPORTED_VERSION);
        buf.put_i32(0); // session_id
    }
    buf.put_i32(0); // no topics
    Reply::Frame(buf.freeze())
}
