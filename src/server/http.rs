//! The HTTP endpoint for operations: `/metrics` (Prometheus), `/healthz` (the process
//! serves: 200 from the moment it started, before storage recovery) and `/readyz` (it takes
//! Kafka clients: storage recovered, listeners bound, storage can write, not shutting down;
//! with `?scope=serving`, without the storage check, as cluster nodes ask it of each other).
//!
//! One request per connection (no keep-alive), at most [`MAX_CONNECTIONS`] at once, and
//! each connection gets [`CONNECTION_TIMEOUT`] in all, so a scraper cannot hold the
//! server's resources.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// Most HTTP connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// Time one HTTP connection may take from accept to its response written.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Content type of the OpenMetrics text `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What cluster nodes ask each other: `/readyz` without the storage check (see `cluster`).
pub const SERVING_PATH: &str = "/readyz?scope=serving";

/// What the endpoint reports.
pub struct HttpState {
    /// The metrics, and the readiness they know of.
    pub metrics: Arc<Metrics>,
}

/// Binds the endpoint's address (before anything else starts, so `/healthz` answers from
/// the first moment).
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, super::ServerError> {
    TcpListener::bind(addr).await.map_err(|source| super::ServerError::Bind { addr, source })
}

/// Serves the endpoint on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    while let Some((stream, peer)) = super::next_connection(&listener, &mut stop).await {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "too many HTTP connections; refusing one");
            continue;
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &request)) }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(CONNECTION_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection failed"),
                Err(_) => debug!(%peer, "HTTP connection timed out"),
            }
            drop(permit);
        });
    }
    connections.shutdown().await;
}

/// The response to one request.
fn respond(state: &HttpState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match request.uri().path() {
        "/metrics" => match state.metrics.encode() {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                response
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if request.uri().query() == Some("scope=serving") => match state.metrics.serving() {
            Ok(()) => text(StatusCode::OK, "serving\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not serving: {why}\n")),
        },
        "/readyz" => match state.metrics.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
