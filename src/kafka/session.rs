//! Per-connection protocol state: where the client is in SASL, and who it is.

use std::net::SocketAddr;

use crate::ingest::auth::scram::ServerStart;
use crate::ingest::auth::{Principal, ScramLogin};

/// Authentication state of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// SASL listener, nothing sent yet: ApiVersions and SaslHandshake are allowed.
    AwaitHandshake,
    /// After SaslHandshake v0: the next frame is a raw PLAIN token, not a request.
    AwaitRawToken,
    /// After SaslHandshake v1: the next request must be SaslAuthenticate.
    AwaitAuthenticate,
    /// Authenticated (or a listener without SASL bound to a project): may produce.
    Authenticated(Principal),
    /// SASL/SCRAM chosen: awaiting the client-first message, as a raw frame after
    /// SaslHandshake v0 (`raw`), else in SaslAuthenticate.
    ScramFirst { raw: bool, start: ServerStart },
    /// SASL/SCRAM: the server-first message was sent, awaiting the client-final message.
    ScramFinal { raw: bool, login: Box<ScramLogin> },
}

impl AuthState {
    /// Short name for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AwaitHandshake => "awaiting SaslHandshake",
            Self::AwaitRawToken => "awaiting raw SASL token",
            Self::AwaitAuthenticate => "awaiting SaslAuthenticate",
            Self::Authenticated(_) => "authenticated",
            Self::ScramFirst { .. } => "awaiting SCRAM client-first message",
            Self::ScramFinal { .. } => "awaiting SCRAM client-final message",
        }
    }

    /// Whether the next frame is a raw SASL token (after SaslHandshake v0), not a request.
    pub fn expects_raw_token(&self) -> bool {
        matches!(self, Self::AwaitRawToken | Self::ScramFirst { raw: true, .. } | Self::ScramFinal { raw: true, .. })
    }

    /// Whether the next request must be SaslAuthenticate (after SaslHandshake v1).
    pub fn expects_authenticate(&self) -> bool {
        matches!(self, Self::AwaitAuthenticate | Self::ScramFirst { raw: false, .. } | Self::ScramFinal { raw: false, .. })
    }
}

/// Where this connection came in: what Metadata should advertise.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub host: String,
    pub port: u16,
    /// The listener's security protocol (which of a cluster node's addresses to advertise).
    pub protocol: crate::config::SecurityProtocol,
}

/// The protocol state of one client connection.
#[derive(Debug)]
pub struct Session {
    pub peer: SocketAddr,
    /// `peer` as text, stored with every log written by this connection.
    pub source: bytes::Bytes,
    pub auth: AuthState,
    /// Whether this listener runs SASL (SaslHandshake is refused otherwise).
    pub sasl_enabled: bool,
    /// The TLS server name the client asked for, if any.
    pub sni: Option<String>,
    /// The SNI name's project differs from the authenticated one: no topic is visible.
    pub sni_conflict: bool,
    pub advertised: Advertised,
    /// Over quota: the next request is not read before this (see `kafka::produce`).
    pub throttled_until: Option<tokio::time::Instant>,
    /// What the client said it is, for log lines.
    pub client: ClientInfo,
}

/// What a client says of itself: peer strings, stored escaped and cut to
/// [`MAX_CLIENT_TEXT`] characters, so they can go into log lines as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// `client_software_name` of ApiVersions v3+ (e.g. "librdkafka", "confluent-kafka-python").
    pub software_name: Option<String>,
    /// `client_software_version` of ApiVersions v3+.
    pub software_version: Option<String>,
    /// The `client_id` of the connection's first request header that had one.
    pub client_id: Option<String>,
}

/// Characters of a client's text kept for logs (Kafka brokers allow 64 for software names).
pub const MAX_CLIENT_TEXT: usize = 64;

/// `text` cut to [`MAX_CLIENT_TEXT`] characters and escaped (control characters, quotes,
/// backslashes and non-ASCII as Rust escapes), safe in any log format.
pub fn escape_client_text(text: &[u8]) -> String {
    String::from_utf8_lossy(text).chars().take(MAX_CLIENT_TEXT).flat_map(char::escape_default).collect()
}

impl Session {
    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.auth {
            AuthState::Authenticated(p) => Some(p),
            _ => None,
        }
    }

    /// The host name Metadata advertises: the SNI name the client used (so hostname
    /// verification keeps passing on reconnect) or the listener's advertised host.
    pub fn advertised_host(&self) -> &str {
        match &self.sni {
            Some(name) => name,
            None => &self.advertised.host,
        }
    }
}
