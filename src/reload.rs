//! Configuration reload without a restart: on SIGHUP, and when the configuration file or
//! a TLS file it names changes on disk.
//!
//! A new configuration is loaded and validated the way the server loaded its first one.
//! If anything is wrong with it, nothing changes and a log line says why. Otherwise these
//! take effect at once, without dropping a connection: projects and logstores (unchanged
//! logstores keep their idempotent producer state), access keys and their grants (a key
//! removed, or given another secret, stops working for new requests on connections
//! already authenticated with it), limits, quotas, retention, and the TLS certificate and
//! client CA (new connections get the new ones). Settings that need sockets, threads or
//! storage opened again (listeners, data dir, node id, storage and ClickHouse settings,
//! cluster, metrics endpoint, and the limits that size shared pools) keep their running
//! values, with a warning naming them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use loggate_storage::clickhouse::ClickHouseStore;
use loggate_storage::local::LocalStore;
use loggate_storage::{LogStorage, Router, StreamId};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Backend, Config, Limits};
use crate::ingest::auth::KeyStore;
use crate::kafka::Broker;
use crate::server::tls::{Certificates, TlsError};

/// Why a new configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, parsed or validated.
    #[error("{0}")]
    Load(String),
    #[error("access keys: {0}")]
    Keys(String),
    #[error("TLS certificate: {0}")]
    Tls(#[from] TlsError),
    /// A logstore names a backend this process did not open at start.
    #[error("{0}: restart loggate to store logstores there")]
    Backend(#[from] loggate_storage::UnknownBackend),
}

/// The storage backends a reload may route logstores to.
pub struct Stores {
    pub router: Arc<Router>,
    pub local: Arc<LocalStore>,
    pub clickhouse: Option<Arc<ClickHouseStore>>,
}

impl Stores {
    /// The backend of every logstore of `config` that is not stored locally.
    pub fn routes(&self, config: &Config) -> Result<HashMap<StreamId, Arc<dyn LogStorage>>, ReloadError> {
        let mut routes = HashMap::new();
        for project in &config.projects {
            for store in &project.logstores {
                if config.backend_of(project, store) != Backend::Clickhouse {
                    continue;
                }
                let stream = StreamId::new(&project.name, &store.name);
                let Some(ch) = &self.clickhouse else {
                    return Err(loggate_storage::UnknownBackend(stream).into());
                };
                let ch: Arc<dyn LogStorage> = ch.clone();
                routes.insert(stream, ch);
            }
        }
        Ok(routes)
    }
}

/// What a reload replaces, and the configuration in force.
pub struct Reloader {
    /// Loads the configuration as the server did at start (file, environment, flags).
    load: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
    current: Config,
    broker: Arc<Broker>,
    certificates: Option<Certificates>,
    stores: Stores,
}

/// What changed in a reload that was applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub logstores: usize,
    pub access_keys: usize,
    /// Settings whose change needs a restart (their running values stay).
    pub needs_restart: Vec<&'static str>,
}

impl Reloader {
    pub fn new(
        load: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
        current: Config,
        broker: Arc<Broker>,
        certificates: Option<Certificates>,
        stores: Stores,
    ) -> Self {
        Self { load, current, broker, certificates, stores }
    }

    /// Loads the configuration again and applies it, or changes nothing.
    pub fn reload(&mut self) -> Result<Applied, ReloadError> {
        let mut new = (self.load)().map_err(ReloadError::Load)?;
        let needs_restart = needs_restart(&self.current, &new);
        // From here on `new` says what will run: the settings a reload does not apply keep
        // their running values (and the next reload compares with those).
        keep_running_values(&self.current, &mut new);
        let keys = KeyStore::from_config(&new.access_keys).map_err(ReloadError::Keys)?;
        let routes = self.stores.routes(&new)?;
        if let Some(certs) = &self.certificates {
            let (cert, key) = (new.cert_path(), new.key_path());
            certs.replace(crate::server::tls_files(&new, &cert, &key))?;
        }
        // Everything that can fail has been checked: apply.
        self.stores.router.set_routes(routes)?;
        self.stores.local.set_stream_options(&new.stream_options());
        let ingest = &self.broker.ingest;
        let catalog = ingest.catalog().rebuild(&new.projects, &new.limits);
        ingest.reload(catalog, keys);
        self.broker.limits.store(Arc::new(new.limits.clone()));
        self.broker.quotas.update(&new);
        let applied = Applied {
            logstores: new.projects.iter().map(|p| p.logstores.len()).sum(),
            access_keys: new.access_keys.len(),
            needs_restart,
        };
        self.current = new;
        Ok(applied)
    }

    /// The files whose change triggers a reload: the configuration file and the TLS
    /// certificate and key (and client CA).
    fn watched(&self, config_path: Option<&Path>) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = config_path.map(Path::to_path_buf).into_iter().collect();
        if self.certificates.is_some() {
            files.push(self.current.cert_path());
            files.push(self.current.key_path());
            files.extend(self.current.tls.client_ca.clone());
        }
        files
    }

    /// Reloads on SIGHUP, and when a watched file changes (checked every `interval`, if
    /// given), until `stop` turns true.
    pub async fn run(mut self, config_path: Option<PathBuf>, interval: Option<Duration>, mut stop: watch::Receiver<bool>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; the configuration reloads only when its file changes");
                None
            }
        };
        // Each file's stamp as last read. It is taken before the file is loaded, so that a
        // file still being written when it is read changes again afterwards, and is read again.
        let mut seen = stamps(&self.watched(config_path.as_deref()));
        let mut tick = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = stop.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = tick.tick(), if interval.is_some() => "file changed",
            };
            let now = stamps(&self.watched(config_path.as_deref()));
            if why != "SIGHUP" && now == seen {
                continue;
            }
            seen = now;
            match self.reload() {
                Ok(applied) => {
                    info!(trigger = why, logstores = applied.logstores, access_keys = applied.access_keys, "configuration reloaded");
                    if !applied.needs_restart.is_empty() {
                        warn!(settings = %applied.needs_restart.join(", "),
                            "these settings changed but need a restart to take effect; their running values stay");
                    }
                }
                Err(e) => warn!(trigger = why, error = %one_line(&e.to_string()),
                    "configuration reload rejected; the running configuration stays"),
            }
            // The reload may watch other TLS files now: those are read as they are.
            let watched = self.watched(config_path.as_deref());
            if watched.len() != seen.len() || watched.iter().zip(&seen).any(|(w, (p, _))| w != p) {
                seen = stamps(&watched);
            }
        }
    }
}

/// A message of several lines (a TOML error shows the line in question) as one log line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

/// A file's path and what identifies its content cheaply: length, modification time and
/// inode (an editor or a Kubernetes ConfigMap replaces the file, which changes the inode).
type Stamp = (PathBuf, Option<(u64, SystemTime, u64)>);

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let stamp = std::fs::metadata(f).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.ino()));
            (f.clone(), stamp)
        })
        .collect()
}

/// The limits a reload applies: every per-request and per-connection limit of `new`; the
/// ones that size shared pools and producer state keep their running values.
fn live_limits(running: &Limits, new: &Limits) -> Limits {
    let mut l = new.clone();
    l.max_inflight_bytes = running.max_inflight_bytes;
    l.max_unauthenticated_inflight_bytes = running.max_unauthenticated_inflight_bytes;
    l.max_decoded_inflight_bytes = running.max_decoded_inflight_bytes;
    l.decode_threads = running.decode_threads;
    l.max_connections = running.max_connections;
    l.reserved_fds = running.reserved_fds;
    l.max_unauthenticated_per_ip = running.max_unauthenticated_per_ip;
    l.max_producers_per_partition = running.max_producers_per_partition;
    l.producer_expiry_secs = running.producer_expiry_secs;
    l.producer_recovery_entries = running.producer_recovery_entries;
    l
}

/// The settings that differ between `running` and `new` but need a restart.
fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("listeners", running.listeners != new.listeners);
    check("data_dir", running.data_dir != new.data_dir);
    check("node_id", running.node_id != new.node_id);
    check("tls.generate", running.tls.generate != new.tls.generate);
    check("storage", running.storage != new.storage);
    check("clickhouse", running.clickhouse != new.clickhouse);
    check("cluster", running.cluster != new.cluster);
    check("metrics", running.metrics != new.metrics);
    check("limits that size shared pools and producer state", live_limits(&running.limits, &new.limits) != new.limits);
    changed
}

/// Makes `new` say what keeps running: the settings a reload does not apply.
fn keep_running_values(running: &Config, new: &mut Config) {
    new.listeners = running.listeners.clone();
    new.data_dir = running.data_dir.clone();
    new.node_id = running.node_id;
    new.tls.generate = running.tls.generate;
    new.storage = running.storage.clone();
    new.clickhouse = running.clickhouse.clone();
    new.cluster = running.cluster.clone();
    new.metrics = running.metrics.clone();
    new.limits = live_limits(&running.limits, &new.limits);
}
