//! SaslHandshake (key 17) v0 and v1: the client names its mechanism.
//!
//! v0 is followed by raw length-prefixed tokens (Kafka 0.10 clients, kafka-python 2.0, old
//! sarama, ruby-kafka); v1 by SaslAuthenticate requests. PLAIN takes one token, SCRAM two.

use bytes::Bytes;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::errors::code;
use crate::ingest::auth::scram::{Mechanism, ServerStart};
use super::{respond, AuthState, Reply, RequestHeader, Session};

/// Answers SaslHandshake and moves the session to the matching token state.
pub fn handle(session: &mut Session, header: &RequestHeader, mut body: Bytes) -> Reply {
    if !(0..=1).contains(&header.api_version) {
        return Reply::Close(format!("unsupported SaslHandshake version {}", header.api_version));
    }
    // Every count and length checked against the bytes present before decoding.
    if let Err(e) = super::wire::check(super::api_key::SASL_HANDSHAKE, header.api_version, &body) {
        return Reply::Close(format!("malformed SaslHandshake: {e}"));
    }
    let request = match SaslHandshakeRequest::decode(&mut body, header.api_version) {
        Ok(r) => r,
        Err(e) => return Reply::Close(format!("malformed SaslHandshake: {e}")),
    };
    let mechanisms = std::iter::once("PLAIN").chain(Mechanism::ALL.map(Mechanism::name));
    let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms.map(StrBytes::from_static_str).collect());
    if !session.sasl_enabled || session.auth != AuthState::AwaitHandshake {
        let reply = respond(header, &response.with_error_code(code::ILLEGAL_SASL_STATE));
        return close_after(reply, "SaslHandshake on a listener without SASL or after authentication");
    }
    let raw = header.api_version == 0;
    session.auth = match request.mechanism.as_str() {
        "PLAIN" if raw => AuthState::AwaitRawToken,
        "PLAIN" => AuthState::AwaitAuthenticate,
        name => match Mechanism::from_name(name) {
            Some(m) => AuthState::ScramFirst { raw, start: ServerStart::new(m) },
            None => {
                let reply = respond(header, &response.with_error_code(code::UNSUPPORTED_SASL_MECHANISM));
                let name = super::session::escape_client_text(name.as_bytes());
                return close_after(reply, &format!("unsupported SASL mechanism \"{name}\""));
            }
        },
    };
    respond(header, &response.with_error_code(code::NONE))
}

/// Turns a response into "send it, then close".
pub fn close_after(reply: Reply, reason: &str) -> Reply {
    match reply {
        Reply::Frame(frame) => Reply::FrameThenClose(frame, reason.to_string()),
        other => other,
    }
}
