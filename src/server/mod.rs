//! The network side: listeners, TLS, connection limits and graceful shutdown.

pub mod budget;
pub mod connection;
pub mod fds;
pub mod frames;
pub mod http;
pub mod log_limit;
pub mod logins;
pub mod mtls;
pub mod quickack;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config::{ClientAuth, Config, ListenerConfig};
use crate::ingest::auth::Principal;
use crate::kafka::session::Advertised;
use crate::kafka::{AuthState, Broker, Session};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// A bound listener with what it needs to serve connections.
struct Listener {
    tcp: TcpListener,
    config: ListenerConfig,
    tls: Option<tls::Certificates>,
    advertised: Advertised,
}

/// Binds every configured listener; returns them with their actual local addresses.
async fn bind(config: &Config, certificates: Option<&tls::Certificates>) -> Result<Vec<Listener>, ServerError> {
    let needs_tls = config.listeners.iter().any(|l| l.protocol.uses_tls());
    let (cert, key) = (config.cert_path(), config.key_path());
    let loaded;
    let certificates = match certificates {
        Some(c) => Some(c),
        None if needs_tls => {
            loaded = tls::Certificates::load(tls_files(config, &cert, &key))?;
            Some(&loaded)
        }
        None => None,
    };
    let needs_client_ca = config.listeners.iter().any(|l| l.client_auth == ClientAuth::Required);
    if needs_client_ca && !certificates.is_some_and(tls::Certificates::verifies_clients) {
        return Err(ServerError::Tls(tls::TlsError::Invalid(
            "listeners require client certificates but no [tls] client_ca is loaded".into(),
        )));
    }
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let tcp = TcpListener::bind(l.bind).await.map_err(|source| ServerError::Bind { addr: l.bind, source })?;
        let local = tcp.local_addr().map_err(|source| ServerError::Bind { addr: l.bind, source })?;
        let (host, port) = match &l.advertised {
            Some(text) => parse_host_port(text).unwrap_or((local.ip().to_string(), local.port())),
            None => (local.ip().to_string(), local.port()),
        };
        let tls = if l.protocol.uses_tls() { certificates.cloned() } else { None };
        listeners.push(Listener { tcp, config: l.clone(), tls, advertised: Advertised { host, port, protocol: l.protocol } });
    }
    Ok(listeners)
}

/// The TLS files a configuration names (`cert` and `key` are its paths of them).
pub fn tls_files<'a>(config: &'a Config, cert: &'a std::path::Path, key: &'a std::path::Path) -> tls::TlsFiles<'a> {
    tls::TlsFiles { cert, key, client_ca: config.tls.client_ca.as_deref() }
}

/// Runs the gateway until `shutdown` resolves, then shuts down gracefully: the listeners
/// close (new connections are refused), `/readyz` turns 503, every request already read
/// is answered and each connection closed once it has its answers; connections still open
/// after `shutdown_timeout_secs` are dropped. Storage is the caller's to flush after. TLS
/// listeners serve `certificates` (loaded from the configuration when None).
pub async fn run(
    config: Config,
    broker: Arc<Broker>,
    certificates: Option<tls::Certificates>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let listeners = bind(&config, certificates.as_ref()).await?;
    for l in &listeners {
        info!(bind = %l.config.bind, advertised = %format!("{}:{}", l.advertised.host, l.advertised.port),
            protocol = ?l.config.protocol, "listening");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // The HTTP endpoint runs from the process's start (see `main`); readiness is told here.
    let (max_connections, fd_budget) = connection_limit(&config);
    let slots = Arc::new(Semaphore::new(max_connections));
    let budgets = Arc::new(connection::Budgets::new(&config.limits));
    broker.metrics.attach_inflight(inflight_source(&config.limits, &budgets, &broker));
    let pending_logins = logins::PendingLogins::new(config.limits.max_unauthenticated_per_ip);
    let refusal_logs = Arc::new(RefusalLogs::default());
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        let limits = AcceptLimits {
            slots: slots.clone(),
            logins: pending_logins.clone(),
            refusal_logs: refusal_logs.clone(),
            max_connections,
            lowered_by_fds: max_connections < config.limits.max_connections,
            fd_budget,
        };
        accept_loops.spawn(accept_loop(listener, broker.clone(), limits, budgets.clone(), stop_rx.clone()));
    }
    broker.metrics.set_phase(crate::metrics::Phase::Serving);
    shutdown.await;
    // The limits in force now (a reload may have changed them).
    let deadline = Duration::from_secs(broker.limits().shutdown_timeout_secs);
    let open = |slots: &Semaphore| max_connections - slots.available_permits();
    info!(connections = open(&slots), shutdown_timeout_secs = deadline.as_secs(),
        "shutting down: no new connections; answering the requests already read");
    broker.metrics.set_phase(crate::metrics::Phase::ShuttingDown);
    let _ = stop_tx.send(true);
    let drain = async { while accept_loops.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        warn!(connections = open(&slots), shutdown_timeout_secs = deadline.as_secs(),
            "connections still open at the shutdown deadline; dropping them (their unanswered requests are not acknowledged)");
        // Dropping the accept loops drops their connections.
        accept_loops.shutdown().await;
    } else {
        info!("every connection answered and closed");
    }
    Ok(())
}

/// Reads the in-flight budgets for the metrics: `(pool, held, limit)` of the authenticated
/// and unauthenticated request pools and of the decoded-output budget.
fn inflight_source(
    limits: &crate::config::Limits,
    budgets: &Arc<connection::Budgets>,
    broker: &Arc<Broker>,
) -> crate::metrics::InflightSource {
    let (budgets, broker) = (Arc::downgrade(budgets), Arc::downgrade(broker));
    let (auth, unauth, decoded) =
        (limits.max_inflight_bytes, limits.max_unauthenticated_inflight_bytes, limits.max_decoded_inflight_bytes);
    let held = |limit: usize, free: usize| limit.saturating_sub(free) as u64;
    Box::new(move || {
        let mut out = Vec::with_capacity(3);
        if let Some(b) = budgets.upgrade() {
            out.push(("authenticated", held(auth, b.inflight.free()), auth as u64));
            out.push(("unauthenticated", held(unauth, b.unauthenticated.free()), unauth as u64));
        }
        if let Some(broker) = broker.upgrade() {
            out.push(("decoded", held(decoded, broker.pool.pending_free_bytes()), decoded as u64));
        }
        out
    })
}

/// `max_connections`, lowered to what the file-descriptor limit leaves for connections
/// beside the descriptors open now (storage, listeners, runtime) and `reserved_fds`.
fn connection_limit(config: &Config) -> (usize, Option<fds::FdBudget>) {
    let wanted = config.limits.max_connections;
    let limit = match fds::nofile_limit() {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot read RLIMIT_NOFILE; connections are limited by max_connections only");
            return (wanted, None);
        }
    };
    let budget = fds::FdBudget {
        limit: usize::try_from(limit.soft).unwrap_or(usize::MAX),
        reserved: config.limits.reserved_fds,
    };
    let open = fds::open_descriptors().unwrap_or(0);
    let allowed = budget.connections_allowed(open);
    if wanted > allowed {
        warn!(max_connections = wanted, allowed, nofile_soft_limit = limit.soft, open_descriptors = open,
            reserved_fds = budget.reserved,
            "max_connections is more than the file-descriptor limit allows; lowered to what fits");
    }
    let max = wanted.min(allowed).max(1);
    info!(max_connections = max, nofile_soft_limit = limit.soft, open_descriptors = open, "connection limit");
    (max, Some(budget))
}

/// The log-line bounds of the refusals at accept, one per kind.
#[derive(Debug, Default)]
struct RefusalLogs {
    fds: log_limit::LogLimit,
    connections: log_limit::LogLimit,
    per_address: log_limit::LogLimit,
}

/// What an accept loop checks before taking a connection.
struct AcceptLimits {
    slots: Arc<Semaphore>,
    /// Unauthenticated connections per client address (shared by every listener).
    logins: Arc<logins::PendingLogins>,
    /// How often each kind of refusal may be logged (shared by every listener).
    refusal_logs: Arc<RefusalLogs>,
    max_connections: usize,
    /// Whether `max_connections` is lower than configured because of RLIMIT_NOFILE.
    lowered_by_fds: bool,
    fd_budget: Option<fds::FdBudget>,
}

async fn accept_loop(
    listener: Listener,
    broker: Arc<Broker>,
    limits: AcceptLimits,
    budgets: Arc<connection::Budgets>,
    mut stop: watch::Receiver<bool>,
) {
    use std::os::fd::AsRawFd;
    let mut connections = JoinSet::new();
    while let Some((stream, peer)) = next_connection(&listener.tcp, &mut stop).await {
        // Reap finished connection tasks so the set stays bounded by live connections.
        while connections.try_join_next().is_some() {}
        let logs = &limits.refusal_logs;
        if let Some(budget) = limits.fd_budget.filter(|b| b.exhausted_by(stream.as_raw_fd())) {
            if let Some(left_out) = logs.fds.allow() {
                warn!(%peer, descriptor = stream.as_raw_fd(), nofile_soft_limit = budget.limit,
                    reserved_fds = budget.reserved, similar_lines_left_out = left_out,
                    "file descriptor budget nearly exhausted; refusing connection");
            }
            broker.metrics.connection_refused();
            continue;
        }
        let Ok(permit) = limits.slots.clone().try_acquire_owned() else {
            match logs.connections.allow() {
                Some(left_out) if limits.lowered_by_fds => warn!(%peer, max_connections = limits.max_connections,
                    similar_lines_left_out = left_out,
                    "max_connections reached (lowered to fit the file descriptor limit); refusing connection"),
                Some(left_out) => warn!(%peer, max_connections = limits.max_connections,
                    similar_lines_left_out = left_out, "max_connections reached; refusing connection"),
                None => {}
            }
            broker.metrics.connection_refused();
            continue;
        };
        // Until it authenticates (TLS and SASL), a connection also counts for its address.
        let needs_login = listener.tls.is_some() || listener.config.protocol.uses_sasl();
        let login = match needs_login.then(|| limits.logins.try_take(peer.ip())) {
            Some(None) => {
                if let Some(left_out) = logs.per_address.allow() {
                    warn!(%peer, max_unauthenticated_per_ip = broker.limits().max_unauthenticated_per_ip,
                        similar_lines_left_out = left_out,
                        "too many unauthenticated connections from this address; refusing connection");
                }
                broker.metrics.connection_refused();
                continue;
            }
            Some(Some(login)) => Some(login),
            None => None,
        };
        let tls = match listener.tls.as_ref().map(|c| c.acceptor(listener.config.client_auth)) {
            Some(None) => {
                // Never served without the client certificate check it requires.
                warn!(%peer, "no [tls] client_ca loaded for a listener that requires client certificates; refusing connection");
                broker.metrics.connection_refused();
                continue;
            }
            Some(Some(acceptor)) => Some(acceptor),
            None => None,
        };
        let open = broker.metrics.connection_opened();
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let config = listener.config.clone();
        let advertised = listener.advertised.clone();
        let stop = stop.clone();
        let budgets = budgets.clone();
        connections.spawn(async move {
            handle(stream, peer, &broker, tls, &config, advertised, &budgets, login, stop).await;
            drop((open, permit));
        });
    }
    // Closed now, so that clients are refused (and retry elsewhere, or later) rather than
    // wait in the backlog while open connections are answered.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The next accepted connection, or None once `stop` changes. A failed accept (such as
/// running out of file descriptors) is logged and retried after a pause.
pub(crate) async fn next_connection(
    tcp: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = stop.changed() => return None,
        };
        match accepted {
            Ok(pair) => return Some(pair),
            Err(e) => {
                warn!(listener = ?tcp.local_addr().ok(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Broker,
    tls: Option<TlsAcceptor>,
    config: &ListenerConfig,
    advertised: Advertised,
    budgets: &connection::Budgets,
    login: Option<logins::PendingLogin>,
    mut stop: watch::Receiver<bool>,
) {
    let auth_deadline = Instant::now() + Duration::from_secs(broker.limits().auth_timeout_secs);
    let auth = match &config.project {
        Some(project) if !config.protocol.uses_sasl() => {
            AuthState::Authenticated(Principal { project: project.clone(), key_id: None, credential: None })
        }
        _ => AuthState::AwaitHandshake,
    };
    let mut session = Session {
        peer,
        source: bytes::Bytes::from(peer.to_string()),
        auth,
        sasl_enabled: config.protocol.uses_sasl(),
        sni: None,
        sni_conflict: false,
        throttled_until: None,
        advertised,
        client: Default::default(),
    };
    let opened = std::time::Instant::now();
    let listener = connection::protocol_label(config.protocol);
    info!(%peer, listener, bind = %config.bind, "connection opened");
    let on_close = |session: &Session, summary: &connection::Summary| log_close(session, config, opened.elapsed(), summary);
    let failed = |reason: &str, abnormal: bool| connection::Summary { reason: reason.into(), abnormal, ..Default::default() };
    let stream = quickack::QuickAckStream::new(stream);
    match tls {
        None => connection::serve(stream, broker, &mut session, auth_deadline, budgets, login, stop, &on_close).await,
        Some(acceptor) => {
            // A shutdown does not wait for a handshake: no request has been read yet.
            let stopping = async {
                if stop.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let accepted = tokio::select! {
                accepted = tokio::time::timeout_at(auth_deadline, acceptor.accept(stream)) => accepted,
                () = stopping => {
                    on_close(&session, &failed("server shutting down during the TLS handshake", false));
                    return;
                }
            };
            match accepted {
                Ok(Ok(mut tls_stream)) => {
                    session.sni = tls_stream.get_ref().1.server_name().map(str::to_string);
                    if config.client_auth == ClientAuth::Required {
                        if let Err(reason) = certificate_login(broker, &mut session, tls_stream.get_ref().1.peer_certificates()) {
                            tokio::time::sleep(Duration::from_millis(broker.limits().auth_failure_delay_ms)).await;
                            on_close(&session, &failed(&reason, true));
                            let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncWriteExt::shutdown(&mut tls_stream)).await;
                            return;
                        }
                    }
                    connection::serve(tls_stream, broker, &mut session, auth_deadline, budgets, login, stop, &on_close).await
                }
                // Port probes and health checks connect and leave.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    on_close(&session, &failed("connection closed before the TLS handshake", false))
                }
                Ok(Err(e)) => {
                    broker.metrics.tls_handshake_failed();
                    let reason = match config.client_auth {
                        ClientAuth::Required => refused_certificate(broker, &e),
                        ClientAuth::None => None,
                    };
                    let reason = reason.unwrap_or_else(|| format!("TLS handshake failed: {e}"));
                    on_close(&session, &failed(&reason, true))
                }
                Err(_) => {
                    broker.metrics.tls_handshake_failed();
                    on_close(&session, &failed("TLS handshake not completed in time", true))
                }
            }
        }
    }
}

/// Logs in the client of a listener that requires client certificates as the project and
/// access key its verified certificate names (see [`mtls`]); on failure, counts and logs
/// why, and returns the connection's close reason.
fn certificate_login(
    broker: &Broker,
    session: &mut Session,
    chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Result<(), String> {
    let end_entity = chain.and_then(<[_]>::first);
    let fingerprint = end_entity.map_or_else(|| "-".to_string(), |c| mtls::fingerprint(c));
    let catalog = broker.ingest.catalog();
    let result = match end_entity {
        Some(cert) => mtls::login(&broker.ingest.keys(), |p| catalog.has_project(p), cert),
        None => Err(mtls::CertLoginError::NoCertificate),
    };
    match result {
        Ok(principal) => {
            broker.metrics.certificate_authentication(crate::metrics::CertAuthResult::Success);
            let sni_project = session.sni.as_deref().and_then(|sni| broker.ingest.sni_project(sni));
            if let Some(sni_project) = sni_project.filter(|p| *p != principal.project) {
                // As for SASL: it may log in, but it will see no topics (UNKNOWN_TOPIC).
                warn!(peer = %session.peer, project = %principal.project, sni_project, "SNI names another project");
                session.sni_conflict = true;
            }
            info!(peer = %session.peer, project = %principal.project, key_id = principal.key_id.as_deref().unwrap_or("-"),
                certificate_sha256 = %fingerprint, "authenticated by client certificate");
            session.auth = AuthState::Authenticated(principal);
            Ok(())
        }
        Err(e) => {
            broker.metrics.certificate_authentication(e.result());
            // The reason's certificate text is escaped (see `mtls`).
            warn!(peer = %session.peer, certificate_sha256 = %fingerprint, reason = %e, "client certificate refused");
            Err(format!("client certificate refused: {e}"))
        }
    }
}

/// The close reason of a handshake that failed on the client's certificate (counted as a
/// refused certificate), or None for any other handshake failure.
fn refused_certificate(broker: &Broker, error: &std::io::Error) -> Option<String> {
    use crate::metrics::CertAuthResult;
    let (result, reason) = match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::NoCertificatesPresented => {
            // Clients send none when they have none of a CA the server names (its client_ca).
            (CertAuthResult::NoCertificate, "no client certificate (or none signed by a CA of [tls] client_ca)".to_string())
        }
        rustls::Error::InvalidCertificate(e) => (CertAuthResult::BadCertificate, format!("invalid client certificate: {e}")),
        _ => return None,
    };
    broker.metrics.certificate_authentication(result);
    Some(format!("client certificate refused during the TLS handshake: {reason}"))
}

/// The one line logged when a connection ends: who it was (never a secret: the access key
/// id, not its secret), what it did, and why it ended. Client text is stored escaped.
fn log_close(session: &Session, config: &ListenerConfig, duration: Duration, summary: &connection::Summary) {
    let principal = session.principal();
    let project = principal.map_or("-", |p| p.project.as_str());
    let key_id = principal.and_then(|p| p.key_id.as_deref()).unwrap_or("-");
    let client = &session.client;
    let name = client.software_name.as_deref().unwrap_or("-");
    let version = client.software_version.as_deref().unwrap_or("-");
    let client_id = client.client_id.as_deref().unwrap_or("-");
    macro_rules! close_line {
        ($level:ident) => {
            tracing::$level!(peer = %session.peer, listener = connection::protocol_label(config.protocol), bind = %config.bind,
                project, key_id, client_software_name = name, client_software_version = version, client_id,
                state = session.auth.name(), duration_secs = duration.as_secs_f64(), requests = summary.requests,
                bytes_received = summary.bytes_received, bytes_sent = summary.bytes_sent,
                reason = summary.reason.as_str(), "connection closed")
        };
    }
    if summary.abnormal {
        close_line!(warn);
    } else {
        close_line!(info);
    }
}
