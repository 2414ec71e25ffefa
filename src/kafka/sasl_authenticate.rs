//! SASL authentication: SaslAuthenticate (key 36) v0-v2 after a v1 handshake, and the
//! raw token frames after a v0 handshake. PLAIN is one token; SCRAM two (client-first,
//! client-final), each answered with a server message.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tracing::{info, warn};

use super::errors::code;
use super::sasl_handshake::close_after;
use super::{respond, AuthState, Broker, Reply, RequestHeader, Session};
use crate::ingest::auth::{AuthError, KeyStore, Principal, ScramFailure};
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
    match step(broker, session, &request.auth_bytes).await {
        Ok(token) => respond(header, &SaslAuthenticateResponse::default().with_error_code(code::NONE).with_auth_bytes(token)),
        Err((e, server_final)) => {
            let message = format!("Authentication failed: {e}");
            let response = SaslAuthenticateResponse::default()
                .with_error_code(code::SASL_AUTHENTICATION_FAILED)
                .with_error_message(Some(StrBytes::from_string(message)))
                .with_auth_bytes(server_final.map(Bytes::from).unwrap_or_default());
            close_after(respond(header, &response), "SASL authentication failed")
        }
    }
}

/// Handles a raw token after SaslHandshake v0 (the PLAIN token, or a SCRAM client
/// message): success is the server's token (empty for PLAIN: a zero length prefix; the
/// server-first or server-final message for SCRAM), failure a closed connection.
pub async fn handle_raw_token(broker: &Broker, session: &mut Session, token: Bytes) -> Reply {
    match step(broker, session, &token).await {
        Ok(token) => Reply::Frame(token),
        // As Kafka does, a failed raw exchange is closed without an answer.
        Err(_) => Reply::Close("SASL authentication failed (raw token)".into()),
    }
}

/// One client token, in SaslAuthenticate or raw: the PLAIN token, or a SCRAM message. The
/// server's token to send, or why the login failed (with SCRAM's `e=` server-final
/// message where there is one).
async fn step(broker: &Broker, session: &mut Session, token: &[u8]) -> Result<Bytes, (AuthError, Option<Vec<u8>>)> {
    if matches!(session.auth, AuthState::AwaitAuthenticate | AuthState::AwaitRawToken) {
        authenticate(broker, session, token).await.map(|()| Bytes::new()).map_err(|e| (e, None))
    } else {
        scram_step(broker, session, token).await
    }
}

/// One SCRAM message: the client-first gives the server-first message, the client-final
/// the server-final one and the principal. A failure gives the `e=` server-final message
/// where RFC 5802 has one; it is logged, counted and delayed like a PLAIN failure.
async fn scram_step(broker: &Broker, session: &mut Session, token: &[u8]) -> Result<Bytes, (AuthError, Option<Vec<u8>>)> {
    match std::mem::replace(&mut session.auth, AuthState::AwaitHandshake) {
        AuthState::ScramFirst { raw, start } => {
            let mechanism = start.mechanism;
            match broker.ingest.keys().scram_start(mechanism, token) {
                Ok((login, server_first)) => {
                    session.auth = AuthState::ScramFinal { raw, login: Box::new(login) };
                    Ok(Bytes::from(server_first))
                }
                Err(failure) => {
                    let user = scram_username(token);
                    Err((scram_failed(broker, session, mechanism.name(), user.as_deref(), failure).await, None))
                }
            }
        }
        AuthState::ScramFinal { login, .. } => {
            let user = login.username().to_string();
            let mechanism = login.mechanism().name();
            match login.finish(token) {
                Ok((principal, server_final)) => {
                    broker.metrics.authentication(AuthResult::Success);
                    logged_in(broker, session, principal, mechanism);
                    Ok(Bytes::from(server_final))
                }
                Err(failure) => {
                    let server_final = failure.server_final.clone();
                    Err((scram_failed(broker, session, mechanism, Some(&user), failure).await, server_final))
                }
            }
        }
        // The dispatcher sends only SCRAM states here.
        other => {
            session.auth = other;
            Err((AuthError::Malformed, None))
        }
    }
}

/// The username of a client-first message, for log lines (parsed loosely; peer text).
fn scram_username(token: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(token.get(..token.len().min(512))?).ok()?;
    let user = text.split(',').find_map(|a| a.strip_prefix("n="))?;
    Some(user.to_string())
}

async fn scram_failed(broker: &Broker, session: &Session, mechanism: &str, user: Option<&str>, failure: ScramFailure) -> AuthError {
    let ScramFailure { error, known_key, .. } = failure;
    broker.metrics.authentication(auth_result(&Err(error.clone()), known_key.is_some()));
    login_failed(broker, session, mechanism, user, known_key.as_deref(), &error).await;
    error
}

/// Logs a failed login without the secret (the username cut to 128 bytes; peer text goes
/// in as `&str` fields, which the log format escapes), then waits the configured delay,
/// slowing guessing.
async fn login_failed(broker: &Broker, session: &Session, mechanism: &str, user: Option<&str>, key_id: Option<&str>, error: &AuthError) {
    let user = user.map(|u| &u[..u.floor_char_boundary(128)]);
    warn!(peer = %session.peer, mechanism, username = user.unwrap_or("-"), key_id = key_id.unwrap_or("-"),
        reason = %error, "SASL authentication failed");
    tokio::time::sleep(Duration::from_millis(broker.limits().auth_failure_delay_ms)).await;
}

/// Records a successful login on the session.
fn logged_in(broker: &Broker, session: &mut Session, principal: Principal, mechanism: &str) {
    if let Some(reason) = sni_mismatch(broker, session, &principal) {
        // The connection may authenticate, but it will see no topics (UNKNOWN_TOPIC).
        warn!(peer = %session.peer, project = %principal.project, %reason, "SNI names another project");
        session.sni_conflict = true;
    }
    info!(peer = %session.peer, project = %principal.project, key_id = principal.key_id.as_deref().unwrap_or("-"),
        mechanism, "authenticated");
    session.auth = AuthState::Authenticated(principal);
}

/// Verifies a PLAIN token; on failure waits the configured delay (slowing guessing)
/// and logs the attempt without the secret.
async fn authenticate(broker: &Broker, session: &mut Session, token: &[u8]) -> Result<(), AuthError> {
    let (result, key_id) = broker.ingest.keys().authenticate_plain(token);
    broker.metrics.authentication(auth_result(&result, key_id.is_some()));
    match result {
        Ok(principal) => {
            logged_in(broker, session, principal, "PLAIN");
            Ok(())
        }
        Err(e) => {
            login_failed(broker, session, "PLAIN", KeyStore::plain_username(token), key_id.as_deref(), &e).await;
            Err(e)
        }
    }
}

/// The metric label of an outcome (the client is told no more than "failed").
fn auth_result(result: &Result<Principal, AuthError>, known_key: bool) -> AuthResult {
    match result {
        Ok(_) => AuthResult::Success,
        Err(
            AuthError::Malformed
            | AuthError::AuthzidMismatch
            | AuthError::PasswordFormat
            | AuthError::ScramUsername
            | AuthError::Scram(_),
        ) => AuthResult::Malformed,
        Err(AuthError::NoScramCredential(_)) => AuthResult::NoCredential,
        Err(AuthError::BadCredentials) if known_key => AuthResult::BadSecret,
        Err(AuthError::BadCredentials) => AuthResult::UnknownKey,
        Err(AuthError::ProjectNotAllowed) => AuthResult::NotAllowed,
    }
}

fn sni_mismatch(broker: &Broker, session: &Session, principal: &Principal) -> Option<String> {
    let sni_project = broker.ingest.sni_project(session.sni.as_deref()?)?;
    (sni_project != principal.project).then(|| format!("SNI project {sni_project}"))
}
