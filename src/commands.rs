//! `loggate check-config` and `loggate health`: the operator's commands that look at a
//! configuration or a running gateway without serving.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use loggate::config::{env, protocol_name, Backend, ClientAuth, Config, ConfigError, LogFormat, Routing};
use loggate::ingest::auth::{KeyStore, SecretHash};
use loggate::server::tls;

/// Loads `path` as `serve` would (environment included), checks what `serve` checks before
/// it binds (TLS files readable and valid, access keys), and describes what it would serve.
/// Returns the description, or the first error.
pub fn check_config(path: &Path, env: &env::Env, demo_key: (&str, &str)) -> Result<String, String> {
    let config = Config::load_with_env(path, env).map_err(|e| match e {
        ConfigError::Env(_) | ConfigError::Invalid(_) => format!("{}: {e}", path.display()),
        e => e.to_string(),
    })?;
    let mut warnings = Vec::new();
    let mut out = String::new();
    let _ = writeln!(out, "configuration {}: valid", path.display());
    let overrides = env::overrides_set(env);
    if !overrides.is_empty() {
        let _ = writeln!(out, "environment overrides: {}", overrides.join(", "));
    }
    let _ = writeln!(out, "data_dir: {}", config.data_dir.display());
    let _ = writeln!(out, "node_id: {}", config.node_id);

    let _ = writeln!(out, "listeners:");
    for l in &config.listeners {
        let advertised = l.advertised.clone().unwrap_or_else(|| l.bind.to_string());
        let access = match (&l.project, l.protocol.uses_sasl()) {
            _ if l.client_auth == ClientAuth::Required => {
                "client certificates (mutual TLS): project and access key named by the certificate".to_string()
            }
            (_, true) => "SASL/PLAIN access keys".to_string(),
            (Some(p), false) => format!("no authentication, writes to project {p}"),
            (None, false) => unreachable!("validated: a listener without SASL names a project"),
        };
        let _ = writeln!(
            out,
            "  {} bind {} advertised {advertised} ({access}{})",
            protocol_name(l.protocol),
            l.bind,
            if l.protocol.uses_tls() { ", TLS" } else { "" }
        );
        if !l.protocol.uses_sasl() && l.client_auth == ClientAuth::None {
            warnings.push(format!(
                "listener {} ({}) takes logs without authentication: trusted networks only",
                l.bind,
                protocol_name(l.protocol)
            ));
        }
        let advertised_ip = loggate::server::parse_host_port(&advertised).and_then(|(h, _)| h.parse::<IpAddr>().ok());
        if l.bind.ip().is_unspecified() && advertised_ip.is_some_and(|ip| ip.is_loopback()) {
            warnings.push(format!(
                "listener {} listens on every interface but advertises {advertised}: remote clients are sent to their own loopback",
                l.bind
            ));
        }
    }

    if config.listeners.iter().any(|l| l.protocol.uses_tls()) {
        let (cert, key) = (config.cert_path(), config.key_path());
        if cert.exists() {
            tls::server_config(&cert, &key).map_err(|e| format!("{}: TLS: {e}", path.display()))?;
            let _ = writeln!(out, "tls: certificate {}, key {}", cert.display(), key.display());
        } else if config.tls.generate {
            let _ = writeln!(
                out,
                "tls: {} does not exist; a development CA and certificate (for {}) would be generated next to it",
                cert.display(),
                dev_cert_hosts(&config).join(", ")
            );
            warnings.push("TLS uses a generated development certificate: configure [tls] cert and key for real use".into());
        } else {
            return Err(format!(
                "{}: TLS certificate {} does not exist (and [tls] generate is false)",
                path.display(),
                cert.display()
            ));
        }
    }
    check_client_ca(&config, &mut out).map_err(|e| format!("{}: TLS: {e}", path.display()))?;
    match config.metrics.bind {
        Some(addr) => {
            let _ = writeln!(out, "metrics: http://{addr}/metrics (health: /healthz, /readyz)");
        }
        None => {
            let _ = writeln!(out, "metrics: off (no /metrics, /healthz or /readyz; `loggate health` cannot check)");
        }
    }
    let format = match config.log.format {
        LogFormat::Human => "human",
        LogFormat::Json => "json",
    };
    let _ = writeln!(out, "log format: {format}");

    let backend_name = |b: Backend| match b {
        Backend::Local => "local",
        Backend::Clickhouse => "clickhouse",
    };
    let _ = writeln!(out, "projects:");
    if config.projects.is_empty() {
        let _ = writeln!(out, "  (none)");
        warnings.push("no projects: there is nothing to write to".into());
    }
    for project in &config.projects {
        let _ = writeln!(out, "  {}{}", project.name, quota(project.quota_bytes_per_sec, project.quota_requests_per_sec));
        for store in &project.logstores {
            let mut retention = Vec::new();
            if let Some(h) = store.retention_hours {
                retention.push(format!("{h} hours"));
            }
            if let Some(b) = store.retention_bytes {
                retention.push(format!("{b} bytes"));
            }
            let retention = if retention.is_empty() { "kept forever".to_string() } else { retention.join(" or ") };
            let mut json = String::new();
            if let Some(field) = &store.time_field {
                let format = store.time_format.as_deref().unwrap_or("auto");
                json += &format!(", event time from field {field:?} ({format})");
            }
            if store.flatten_depth > 0 {
                json += &format!(", flatten depth {}", store.flatten_depth);
            }
            let _ = writeln!(
                out,
                "    logstore {}: {} shard{}, routing {}, retention {retention}, backend {}{json}",
                store.name,
                store.shards,
                if store.shards == 1 { "" } else { "s" },
                match store.routing {
                    Routing::RoundRobin => "round_robin",
                    Routing::Partition => "partition",
                },
                backend_name(config.backend_of(project, store))
            );
        }
    }
    if config.uses_clickhouse() {
        let ch = &config.clickhouse;
        let urls: Vec<String> = ch.urls.iter().map(|u| without_userinfo(u)).collect();
        let _ = writeln!(out, "clickhouse: {} table {}.{} as user {}", urls.join(", "), ch.database, ch.table, ch.user);
    }

    let keys = KeyStore::from_config(&config.access_keys).map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = writeln!(out, "access keys:");
    if config.access_keys.is_empty() {
        let _ = writeln!(out, "  (none)");
        if config.listeners.iter().any(|l| l.protocol.uses_sasl()) {
            warnings.push("no access keys: no client can log in on the SASL listeners".into());
        }
    }
    for key in &config.access_keys {
        let mut writes = Vec::new();
        for project in &config.projects {
            for store in &project.logstores {
                if keys.grants_cover(&key.id, &project.name, &store.name) {
                    writes.push(format!("{}/{}", project.name, store.name));
                }
            }
        }
        let writes = if writes.is_empty() { "no configured logstore".to_string() } else { writes.join(", ") };
        let _ = writeln!(
            out,
            "  {}: allow {} (writes {writes}){}",
            key.id,
            key.allow.join(", "),
            quota(key.quota_bytes_per_sec, key.quota_requests_per_sec)
        );
        let _ = writeln!(out, "    SASL mechanisms: {}", keys.mechanisms(&key.id).join(", "));
        let is_demo = key.id == demo_key.0
            && SecretHash::parse(&key.secret_hash).is_ok_and(|h| h.verify(demo_key.1));
        if is_demo {
            warnings.push(format!("access key {} is the demo key with its published secret: replace it (loggate keygen)", key.id));
        }
    }

    let _ = writeln!(out, "limits:");
    let limits = toml::to_string(&config.limits).map_err(|e| e.to_string())?;
    for line in limits.lines() {
        let _ = writeln!(out, "  {line}");
    }
    if !warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    Ok(out)
}

/// Checks `[tls] client_ca` as `serve` loads it, and says which CA verifies client
/// certificates (the development CA may be generated at start, next to the server's).
fn check_client_ca(config: &Config, out: &mut String) -> Result<(), String> {
    let Some(ca) = &config.tls.client_ca else { return Ok(()) };
    let required = config.listeners.iter().any(|l| l.client_auth == ClientAuth::Required);
    let generated = *ca == config.ca_path() && config.tls.generate && !config.cert_path().exists();
    if generated {
        let _ = writeln!(out, "tls: client certificates verified by the development CA {} (generated at start)", ca.display());
    } else {
        let roots = tls::client_roots(ca).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "tls: client certificates verified by {} ({} CA certificate{})", ca.display(), roots.len(),
            if roots.len() == 1 { "" } else { "s" });
    }
    if !required {
        let _ = writeln!(out, "tls: (no listener has client_auth = \"required\": client_ca is not used)");
    }
    Ok(())
}

/// The names a generated development certificate is for: the usual local ones and every
/// listener's advertised host, the names clients verify.
pub fn dev_cert_hosts(config: &Config) -> Vec<String> {
    let mut hosts: Vec<String> = tls::DEV_HOSTS.iter().map(|s| s.to_string()).collect();
    for l in &config.listeners {
        if let Some((host, _)) = l.advertised.as_deref().and_then(loggate::server::parse_host_port) {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts
}

/// `, quota ...` of a project or key with a Produce quota; empty without one.
fn quota(bytes_per_sec: Option<u64>, requests_per_sec: Option<f64>) -> String {
    let mut parts = Vec::new();
    if let Some(b) = bytes_per_sec {
        parts.push(format!("{b} bytes/s"));
    }
    if let Some(r) = requests_per_sec {
        parts.push(format!("{r} requests/s"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" (quota {})", parts.join(", "))
    }
}

/// A URL without the `user:password@` part.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{path}"),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Where to reach an endpoint bound to `bind`: its loopback when it listens everywhere.
pub fn dial_address(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bind.port()),
        _ => bind,
    }
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("no answer from {addr} within {secs} s")]
    Timeout { addr: SocketAddr, secs: u64 },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("http://{addr}{path} answered {status}: {body}")]
    Status { addr: SocketAddr, path: &'static str, status: u16, body: String },
}

/// GETs `path` of the metrics endpoint at `addr`; Ok with its body on 200.
pub fn health(addr: SocketAddr, path: &'static str, timeout: Duration) -> Result<String, HealthError> {
    use http_body_util::{BodyExt, Empty};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|source| HealthError::Connect { addr, source })?;
    let check = async {
        let stream =
            tokio::net::TcpStream::connect(addr).await.map_err(|source| HealthError::Connect { addr, source })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .expect("a GET of a fixed path is a valid request");
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        // The endpoint's bodies are one short line; read at most a little of anything else.
        let body = http_body_util::Limited::new(response.into_body(), 4096).collect().await;
        let body = body.map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string()).unwrap_or_default();
        if status == 200 {
            Ok(body)
        } else {
            Err(HealthError::Status { addr, path, status, body: body.escape_debug().to_string() })
        }
    };
    rt.block_on(async {
        tokio::time::timeout(timeout, check).await.unwrap_or(Err(HealthError::Timeout { addr, secs: timeout.as_secs() }))
    })
}
