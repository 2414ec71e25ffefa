//! InitProducerId (key 22) v0-v5: a fresh producer id for idempotent producers.
//! Transactions are not served: a transactional id gets
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, so transactional producers fail at start with
//! a clear error instead of later.

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::Decodable;
use tracing::{info, warn};

use super::errors::code;
use super::{respond, Broker, Reply, RequestHeader, Session};

/// Highest InitProducerId version answered.
pub const MAX_VERSION: i16 = 5;

/// Answers InitProducerId.
pub fn handle(broker: &Broker, session: &Session, header: &RequestHeader, mut body: Bytes) -> Reply {
    if !(0..=MAX_VERSION).contains(&header.api_version) {
        return Reply::Close(format!("unsupported InitProducerId version {}", header.api_version));
    }
    // Every count and length checked against the bytes present before decoding.
    if let Err(e) = super::wire::check(super::api_key::INIT_PRODUCER_ID, header.api_version, &body) {
        return Reply::Close(format!("malformed InitProducerId: {e}"));
    }
    let request = match InitProducerIdRequest::decode(&mut body, header.api_version) {
        Ok(r) => r,
        Err(e) => return Reply::Close(format!("malformed InitProducerId: {e}")),
    };
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if request.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty()) {
        warn!(peer = %session.peer, "transactional producer refused: loggate does not serve transactions");
        return respond(header, &response.with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
    }
    // Like Kafka for producers without a transactional id: always a fresh id, epoch 0
    // (also when the client re-initialises after an error).
    let (producer_id, epoch) = (broker.ingest.new_producer_id(), 0);
    info!(peer = %session.peer, producer_id, epoch, "idempotent producer initialised");
    respond(
        header,
        &response.with_error_code(code::NONE).with_producer_id(ProducerId(producer_id)).with_producer_epoch(epoch),
    )
}
