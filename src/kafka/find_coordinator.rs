//! FindCoordinator (key 10): listed because librdkafka enables LZ4 only when it is.
//! There are no consumer groups or transactions here, so the answer is always an error:
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED for transactions (so transactional producers
//! fail fast), COORDINATOR_NOT_AVAILABLE otherwise.

use bytes::Bytes;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::errors::code;
use super::{respond, Reply, RequestHeader};

/// Answers FindCoordinator v0-v3 with an error.
pub fn handle(header: &RequestHeader, mut body: Bytes) -> Reply {
    if !(0..=3).contains(&header.api_version) {
        return Reply::Close(format!("unsupported FindCoordinator version {}", header.api_version));
    }
    // Every count and length checked against the bytes present before decoding.
    if let Err(e) = super::wire::check(super::api_key::FIND_COORDINATOR, header.api_version, &body) {
        return Reply::Close(format!("malformed FindCoordinator: {e}"));
    }
    let request = match FindCoordinatorRequest::decode(&mut body, header.api_version) {
        Ok(r) => r,
        Err(e) => return Reply::Close(format!("malformed FindCoordinator: {e}")),
    };
    let (error, message) = if request.key_type == 1 {
        (code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "loggate does not serve transactions")
    } else {
        (code::COORDINATOR_NOT_AVAILABLE, "loggate serves producers only")
    };
    let response = FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_error_message(Some(StrBytes::from_static_str(message)))
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    respond(header, &response)
}
