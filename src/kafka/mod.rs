//! Kafka protocol handlers: one module per API, a session per connection.
//!
//! The server hands every complete frame to [`dispatch`], which parses the request
//! header, enforces the SASL state machine and calls the handler of that API. Handlers
//! return a [`Reply`]: a response frame, nothing (acks=0), or an instruction to close.

pub mod api_versions;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
pub mod header;
pub mod init_producer_id;
pub mod metadata;
pub mod pool;
pub mod produce;
pub mod produce_request;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod session;
pub mod wire;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::Encodable;
use tracing::{debug, warn};

use crate::config::Limits;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
pub use header::RequestHeader;
pub use session::{AuthState, Session};

/// Kafka API keys loggate answers.
pub mod api_key {
    pub const PRODUCE: i16 = 0;
    pub const FETCH: i16 = 1;
    pub const METADATA: i16 = 3;
    pub const FIND_COORDINATOR: i16 = 10;
    pub const SASL_HANDSHAKE: i16 = 17;
    pub const INIT_PRODUCER_ID: i16 = 22;
    pub const API_VERSIONS: i16 = 18;
    pub const SASL_AUTHENTICATE: i16 = 36;
}

/// Shared state every handler needs: the ingest service, the limits and the metrics.
pub struct Broker {
    pub ingest: Arc<Ingest>,
    /// Swapped by a configuration reload: a connection takes the limits of its start, a
    /// Produce request those of its own start (see [`Broker::limits`]).
    pub limits: arc_swap::ArcSwap<Limits>,
    pub metrics: Arc<Metrics>,
    /// Where Produce data is decompressed, decoded and converted, and the budget of its
    /// output until written.
    pub pool: pool::DecodePool,
    /// The node id this gateway reports in Metadata.
    pub node_id: i32,
    /// The nodes sharing this node's storage, when it is one of a cluster: Metadata lists
    /// the live ones and spreads partition leadership over them.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Produce quotas per project and access key; `update` them on a config reload.
    pub quotas: Arc<crate::ingest::quota::Quotas>,
}

impl Broker {
    /// The limits in force now.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }
}

/// What the connection should do after a request.
pub enum Reply {
    /// Write this frame (without the size prefix).
    Frame(Bytes),
    /// Write nothing (acks=0 Produce).
    Nothing,
    /// Write this frame, then close the connection for `reason`.
    FrameThenClose(Bytes, String),
    /// Close the connection without writing for `reason`.
    Close(String),
    /// The reply once this resolves (a Produce waiting for storage); the connection may
    /// read and start its next requests meanwhile, and writes replies in request order.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + 'static>>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Frame(b) => f.debug_tuple("Frame").field(&b.len()).finish(),
            Reply::Nothing => f.write_str("Nothing"),
            Reply::FrameThenClose(b, why) => f.debug_tuple("FrameThenClose").field(&b.len()).field(why).finish(),
            Reply::Close(why) => f.debug_tuple("Close").field(why).finish(),
            Reply::Later(_) => f.write_str("Later"),
        }
    }
}

/// The name of the API a frame asks for, for metrics: one of a fixed set, never text
/// from the frame.
pub fn api_name(session: &Session, frame: &[u8]) -> &'static str {
    if session.auth.expects_raw_token() {
        return "SaslAuthenticate";
    }
    match frame.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) {
        Some(api_key::PRODUCE) => "Produce",
        Some(api_key::FETCH) => "Fetch",
        Some(api_key::METADATA) => "Metadata",
        Some(api_key::FIND_COORDINATOR) => "FindCoordinator",
        Some(api_key::SASL_HANDSHAKE) => "SaslHandshake",
        Some(api_key::INIT_PRODUCER_ID) => "InitProducerId",
        Some(api_key::API_VERSIONS) => "ApiVersions",
        Some(api_key::SASL_AUTHENTICATE) => "SaslAuthenticate",
        _ => "other",
    }
}

/// Handles one complete request frame (the bytes after the size prefix).
pub async fn dispatch(broker: &Broker, session: &mut Session, frame: Bytes) -> Reply {
    if session.auth.expects_raw_token() {
        return sasl_authenticate::handle_raw_token(broker, session, frame).await;
    }
    let mut body = frame;
    let header = match RequestHeader::parse(&mut body) {
        Ok(h) => h,
        Err(e) => {
            let why = if matches!(session.auth, AuthState::AwaitHandshake) {
                format!("garbage before SASL authentication: {e}")
            } else {
                format!("bad request header: {e}")
            };
            return Reply::Close(why);
        }
    };
    if session.client.client_id.is_none() {
        session.client.client_id = header.client_id.as_deref().map(|id| session::escape_client_text(id.as_bytes()));
    }
    debug!(peer = %session.peer, api_key = header.api_key, version = header.api_version,
        correlation_id = header.correlation_id, "request");

    // Before authentication only ApiVersions and the SASL requests are allowed.
    match (&session.auth, header.api_key) {
        (AuthState::Authenticated(_), _) => {}
        (AuthState::AwaitHandshake, api_key::API_VERSIONS | api_key::SASL_HANDSHAKE) => {}
        (state, api_key::SASL_AUTHENTICATE) if state.expects_authenticate() => {}
        (state, key) => {
            return Reply::Close(format!(
                "request api_key {key} not allowed before SASL authentication completes (state {})",
                state.name()
            ));
        }
        #[allow(unreachable_patterns)]
        _ => {}
    }

    match header.api_key {
        api_key::API_VERSIONS => api_versions::handle(&header, &body, session),
        api_key::SASL_HANDSHAKE => sasl_handshake::handle(session, &header, body),
        api_key::SASL_AUTHENTICATE => sasl_authenticate::handle(broker, session, &header, body).await,
        api_key::METADATA => metadata::handle(broker, session, &header, body),
        api_key::PRODUCE => produce::handle(broker, session, &header, body).await,
        api_key::FETCH => fetch::handle(&header),
        api_key::FIND_COORDINATOR => find_coordinator::handle(&header, body),
        api_key::INIT_PRODUCER_ID => init_producer_id::handle(broker, session, &header, body),
        other => {
            warn!(peer = %session.peer, api_key = other, version = header.api_version,
                client_id = header.client_id.as_deref().unwrap_or(""), "unsupported API; closing");
            Reply::Close(format!("unsupported api_key {other}"))
        }
    }
}

/// Encodes `body` as a response frame to `header` with the given response header version.
pub fn encode_response<T: Encodable>(header: &RequestHeader, header_version: i16, body: &T) -> Reply {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(header.correlation_id);
    if header_version >= 1 {
        buf.put_u8(0); // no tagged fields
    }
    match body.encode(&mut buf, header.api_version) {
        Ok(()) => Reply::Frame(buf.freeze()),
        Err(e) => Reply::Close(format!(
            "cannot encode response to api_key {} v{}: {e}",
            header.api_key, header.api_version
        )),
    }
}

/// The response header version for a request (ApiVersions always uses v0).
pub fn response_header_version(header: &RequestHeader) -> i16 {
    match kafka_protocol::messages::ApiKey::try_from(header.api_key) {
        Ok(kafka_protocol::messages::ApiKey::ApiVersions) | Err(_) => 0,
        Ok(key) => key.response_header_version(header.api_version),
    }
}

/// Encodes a response with the header version the API and version call for.
pub fn respond<T: Encodable>(header: &RequestHeader, body: &T) -> Reply {
    encode_response(header, response_header_version(header), body)
}
