//! SASL/PLAIN authentication: SaslAuthenticate (key 36) v0-v2 after a v1 handshake, and
//! the raw token frame after a v0 handshake.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tracing::{info, warn};

use super::errors::code;
use super::sasl_handshake::close_after;
use super::{respond, AuthState, Broker, Reply, RequestHeader, Session};
use crate::ingest::auth::{AuthError, KeyStore, Principal};
use crate::metrics::AuthResult;

/// Answers SaslAuthenticate: success with an empty token and no session lifetime (no
/// re-authentication), or SASL_AUTHENTICATION_FAILED and a closed connection.
pub async fn handle(broker: &Broker, session: &mut Session, header: &RequestHeader, mut body: Bytes) -> Reply {
    if !(0..=2).contains(&header.api_version) {
        return Reply::Close(format!("unsupported SaslAuthenticate version {}", header.api_version));
    }
    // Every count and length checked against the bytes present before decoding.
    if let Err(e) = super::wire::check(super::api_key::SASL_AUTHENTICATE, header.api_version, &body) {
        return Reply::Close(format!("malformed SaslAuthenticate: {e}"));
    }
    let request = match SaslAuthenticateRequest::decode(&mut body, header.api_version) {
        Ok(r) => r,
        Err(e) => return Reply::Close(format!("malformed SaslAuthenticate: {e}")),
    };
    match authenticate(broker, session, &request.auth_bytes).await {
        Ok(()) => respond(header, &SaslAuthenticateResponse::default().with_error_code(code::NONE)),
        Err(e) => {
            let message = format!("Authentication failed: {e}");
            let response = SaslAuthenticateResponse::default()
                .with_error_code(code::SASL_AUTHENTICATION_FAILED)
                .with_error_message(Some(StrBytes::from_string(message)));
            close_after(respond(header, &response), "SASL authentication failed")
        }
    }
}

/// Handles the raw PLAIN token that follows SaslHandshake v0: success is an empty
/// token (a zero length prefix), failure a closed connection.
pub async fn handle_raw_token(broker: &Broker, session: &mut Session, token: Bytes) -> Reply {
    match authenticate(broker, session, &token).await {
        Ok(()) => Reply::Frame(Bytes::new()),
        Err(_) => Reply::Close("SASL authentication failed (raw token)".into()),
    }
}

/// Verifies a PLAIN token; on failure waits the configured delay (slowing guessing)
/// and logs the attempt without the secret.
async fn authenticate(broker: &Broker, session: &mut Session, token: &[u8]) -> Result<(), AuthError> {
    let (result, key_id) = broker.ingest.keys().authenticate_plain(token);
    broker.metrics.authentication(auth_result(&result, key_id.is_some()));
    match result {
        Ok(principal) => {
            if let Some(reason) = sni_mismatch(broker, session, &principal) {
                // The connection may authenticate, but it will see no topics (UNKNOWN_TOPIC).
                warn!(peer = %session.peer, project = %principal.project, %reason, "SNI names another project");
                session.sni_conflict = true;
            }
            info!(peer = %session.peer, project = %principal.project, key_id = principal.key_id.as_deref().unwrap_or("-"), "authenticated");
            session.auth = AuthState::Authenticated(principal);
            Ok(())
        }
        Err(e) => {
            // Peer text goes in as `&str` fields, which the log format escapes.
            let user = KeyStore::plain_username(token).map(|u| &u[..u.floor_char_boundary(128)]);
            warn!(peer = %session.peer, username = user.unwrap_or("-"), key_id = key_id.as_deref().unwrap_or("-"),
                reason = %e, "SASL authentication failed");
            tokio::time::sleep(Duration::from_millis(broker.limits().auth_failure_delay_ms)).await;
            Err(e)
        }
    }
}

/// The metric label of an outcome (the client is told no more than "failed").
fn auth_result(result: &Result<Principal, AuthError>, known_key: bool) -> AuthResult {
    match result {
        Ok(_) => AuthResult::Success,
        Err(AuthError::Malformed | AuthError::AuthzidMismatch | AuthError::PasswordFormat) => AuthResult::Malformed,
        Err(AuthError::BadCredentials) if known_key => AuthResult::BadSecret,
        Err(AuthError::BadCredentials) => AuthResult::UnknownKey,
        Err(AuthError::ProjectNotAllowed) => AuthResult::NotAllowed,
    }
}

fn sni_mismatch(broker: &Broker, session: &Session, principal: &Principal) -> Option<String> {
    let sni_project = broker.ingest.sni_project(session.sni.as_deref()?)?;
    (sni_project != principal.project).then(|| format!("SNI project {sni_project}"))
}
