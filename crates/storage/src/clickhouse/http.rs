//! A small ClickHouse HTTP client: one POST per statement, pooled keep-alive connections,
//! optional TLS, and errors typed by whether the statement can have run.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

/// Longest answer body read (query results the gateway asks for are small; `loggate logs`
/// pages through larger ones).
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Why a statement failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// No connection could be made: the statement was not sent, so it did not run.
    #[error("cannot connect to {url}: {why}")]
    NotSent { url: String, why: String },
    /// Sent, then no complete answer (connection lost, timed out): it may have run.
    #[error("no answer from {url}: {why}")]
    NoAnswer { url: String, why: String },
    /// ClickHouse answered with an error (it may have run in part, for an insert).
    #[error("ClickHouse at {url} answered {status}: {text}")]
    Server { url: String, status: u16, text: String },
    /// Misconfiguration: bad URL, unreadable CA.
    #[error("{0}")]
    Config(String),
}

/// How to reach and log in to ClickHouse.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URLs (`http://host:8123` or `https://...`), tried in turn.
    pub urls: Vec<String>,
    pub user: String,
    pub password: String,
    /// PEM file of the CA that signs the servers' certificates (https).
    pub ca_file: Option<std::path::PathBuf>,
    /// Longest a statement may take, answer included.
    pub timeout: Duration,
}

type Body = Full<Bytes>;

/// A client for one [`Endpoint`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    urls: Vec<String>,
    authorization: String,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("urls", &self.inner.urls).finish_non_exhaustive()
    }
}

impl Client {
    /// A client; checks the URLs and loads the CA.
    pub fn new(endpoint: &Endpoint) -> Result<Self, HttpError> {
        if endpoint.urls.is_empty() {
            return Err(HttpError::Config("no ClickHouse URL configured".into()));
        }
        let mut urls = Vec::new();
        for url in &endpoint.urls {
            let parsed: http::Uri = url.parse().map_err(|e| HttpError::Config(format!("ClickHouse URL {url:?}: {e}")))?;
            match parsed.scheme_str() {
                Some("http") | Some("https") if parsed.host().is_some() => {}
                _ => return Err(HttpError::Config(format!("ClickHouse URL {url:?}: want http://host:port or https://host:port"))),
            }
            urls.push(url.trim_end_matches('/').to_string());
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &endpoint.ca_file {
            let pem = std::fs::read(path).map_err(|e| HttpError::Config(format!("ClickHouse CA {}: {e}", path.display())))?;
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| HttpError::Config(format!("ClickHouse CA {}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| HttpError::Config(format!("ClickHouse CA {}: {e}", path.display())))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(endpoint.timeout.min(Duration::from_secs(5))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = HyperClient::builder(TokioExecutor::new())
            // Below ClickHouse's keep_alive_timeout (3 s by default), so that a pooled
            // connection is not reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(8)
            .build(connector);
        use base64::Engine as _;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", endpoint.user, endpoint.password));
        Ok(Client {
            inner: Arc::new(Inner { http, urls, authorization: format!("Basic {credentials}"), timeout: endpoint.timeout }),
        })
    }

    /// Number of configured URLs.
    pub fn url_count(&self) -> usize {
        self.inner.urls.len()
    }

    /// The `n`-th URL (modulo their number).
    pub fn url(&self, n: usize) -> &str {
        &self.inner.urls[n % self.inner.urls.len()]
    }

    /// Runs `sql` (in the body) on URL `n`; returns the answer text.
    pub async fn query(&self, n: usize, sql: &str, params: &[(&str, &str)]) -> Result<Bytes, HttpError> {
        self.post(n, params, Bytes::copy_from_slice(sql.as_bytes())).await
    }

    /// Runs the statement in `query` (in the URL) with `body` as its data on URL `n`.
    pub async fn insert(&self, n: usize, query: &str, params: &[(&str, &str)], body: Bytes) -> Result<Bytes, HttpError> {
        let mut all = Vec::with_capacity(params.len() + 1);
        all.push(("query", query));
        all.extend_from_slice(params);
        self.post(n, &all, body).await
    }

    async fn post(&self, n: usize, params: &[(&str, &str)], body: Bytes) -> Result<Bytes, HttpError> {
        let base = self.url(n);
        let mut uri = format!("{base}/");
        for (i, (k, v)) in params.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            percent_encode(&mut uri, k);
            uri.push('=');
            percent_encode(&mut uri, v);
        }
        let request = http::Request::post(uri)
            .header(http::header::AUTHORIZATION, &self.inner.authorization)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body))
            .map_err(|e| HttpError::Config(e.to_string()))?;
        let url = base.to_string();
        let exchange = async {
            let response = self.inner.http.request(request).await.map_err(|e| {
                let why = error_chain(&e);
                if e.is_connect() {
                    HttpError::NotSent { url: url.clone(), why }
                } else {
                    HttpError::NoAnswer { url: url.clone(), why }
                }
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError::NoAnswer { url: url.clone(), why: e.to_string() })?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(2000)]).trim().to_string();
                Err(HttpError::Server { url: url.clone(), status: status.as_u16(), text })
            }
        };
        match tokio::time::timeout(self.inner.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::NoAnswer { url, why: format!("no answer within {:?}", self.inner.timeout) }),
        }
    }
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Appends `s` percent-encoded for a URL query component.
fn percent_encode(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// `s` as a ClickHouse string literal.
pub fn quote(s: &str) -> String {
    enclose(s, '\'')
}

/// `name` as a ClickHouse identifier (back-quoted).
pub fn ident(name: &str) -> String {
    enclose(name, '`')
}

/// `s` between two `mark`s, with `mark` and backslashes escaped by a backslash.
fn enclose(s: &str, mark: char) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push(mark);
    for c in s.chars() {
        if c == mark || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push(mark);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_are_escaped() {
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(ident("lo`gs"), "`lo\\`gs`");
        let mut s = String::new();
        percent_encode(&mut s, "INSERT INTO t FORMAT RowBinary&x=1");
        assert_eq!(s, "INSERT%20INTO%20t%20FORMAT%20RowBinary%26x%3D1");
    }
}
