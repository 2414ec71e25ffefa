//! The configuration file (TOML) and its defaults.
//!
//! Every setting has a default so that `loggate serve` runs with no file at all; the
//! shipped `config/loggate.toml` adds the demo project, logstore and access key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loggate_storage::local::{LocalStoreOptions, StreamOptions, MAX_ENTRY_BYTES_LIMIT};
use loggate_storage::StreamId;
use serde::Deserialize;

pub mod env;
pub use env::{Env, EnvError};

/// Whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding the local logstore and the generated development certificates.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// This node's id (0-255): the broker id in Metadata, and part of every producer id,
    /// so nodes sharing storage must each have their own.
    #[serde(default = "one_i32")]
    pub node_id: i32,
    /// Kafka listeners; one SASL_SSL listener on 127.0.0.1:10012 when empty.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub storage: StorageConfig,
    /// The ClickHouse backend (used by logstores whose backend is `clickhouse`).
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    /// The gateway nodes sharing one storage (none: this node alone).
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
}

/// Security protocol of a listener, named as Kafka clients name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether the listener wraps connections in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    /// Whether clients must authenticate with SASL/PLAIN before producing.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One Kafka listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind, e.g. `127.0.0.1:10012`.
    pub bind: SocketAddr,
    /// `host:port` that Metadata tells clients to dial; defaults to the bind address.
    #[serde(default)]
    pub advertised: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: SecurityProtocol,
    /// For PLAINTEXT and SSL listeners (no SASL, trusted networks only): the project
    /// every connection writes to, with access to all of its logstores.
    #[serde(default)]
    pub project: Option<String>,
    /// `required` (SSL listeners only): each client presents a certificate signed by
    /// `[tls] client_ca`, which names the project and access key it writes as (mutual TLS,
    /// see [`ClientAuth`]); no `project` then. Default `none`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client certificate signed by `[tls] client_ca` is required; it names the project
    /// (`loggate://<project>/<AccessKeyId>` URI SAN, else subject O) and the access key
    /// (else subject CN), whose grants apply as for a SASL login.
    Required,
}

/// TLS material. Missing files are generated (a development CA and server certificate)
/// when `generate` is true.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM); default `<data_dir>/tls/server.pem`.
    pub cert: Option<PathBuf>,
    /// Server private key (PEM); default `<data_dir>/tls/server.key`.
    pub key: Option<PathBuf>,
    /// Generate a development CA and certificate when the files do not exist.
    #[serde(default = "yes")]
    pub generate: bool,
    /// CA certificates (PEM, one or more) that sign the client certificates of listeners
    /// with `client_auth = "required"`; reloaded when the file changes.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { cert: None, key: None, generate: true, client_ca: None }
    }
}

/// Largest frame accepted before SASL authentication completes (Kafka's
/// `sasl.server.max.receive.size` is 512 KiB too).
pub const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// Bounds on what one client can make the server hold or do.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest Kafka request frame accepted; larger frames close the connection.
    pub max_request_bytes: usize,
    /// Request bytes all authenticated connections together may hold at once (received
    /// but not yet answered). A connection takes budget in small chunks as its request's
    /// bytes arrive, never for what a frame only declares; one that finds the budget
    /// spent waits (up to `request_timeout_secs`) before reading more.
    pub max_inflight_bytes: usize,
    /// Request bytes all connections that have not finished SASL authentication may hold
    /// together: a separate pool, so they can never take the producers' budget.
    pub max_unauthenticated_inflight_bytes: usize,
    /// A request must arrive completely (and find budget) within this long of its first
    /// byte, or the connection is closed (slowloris); separate from `idle_timeout_secs`.
    pub request_timeout_secs: u64,
    /// Largest record batch (compressed, as sent) accepted; larger gets MESSAGE_TOO_LARGE.
    pub max_batch_bytes: usize,
    /// Largest decompressed size of one batch; more is a decompression bomb (CORRUPT_MESSAGE).
    pub max_decompressed_batch_bytes: usize,
    /// Most records in one partition's data of a Produce request, and most logs they may
    /// become (a `.json` array is one log per element).
    pub max_records_per_batch: usize,
    /// Most bytes the logs of one partition's data may take once converted; more gets
    /// MESSAGE_TOO_LARGE.
    pub max_converted_batch_bytes: usize,
    /// Converted logs all requests together may hold until storage has written them;
    /// decoding waits while it is spent.
    pub max_decoded_inflight_bytes: usize,
    /// Threads that decompress, decode and convert Produce data (0: one per core).
    pub decode_threads: usize,
    /// Requests one connection may have read and not yet answered (a Produce waiting for
    /// storage does not stop the next from being read and started); answers go out in order.
    pub max_pipelined_requests: usize,
    /// ...as long as those requests hold fewer bytes than this (one more request, up to
    /// `max_request_bytes`, may then still be read).
    pub max_pipelined_bytes: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout_secs: u64,
    /// Time a client has from connecting to finishing SASL authentication (and TLS).
    pub auth_timeout_secs: u64,
    /// Most simultaneously open client connections; more are refused at accept. Lowered
    /// at start (with a warning) to what RLIMIT_NOFILE leaves after `reserved_fds`.
    pub max_connections: usize,
    /// Connections from one client address that have not finished TLS and SASL
    /// authentication; more are refused at accept, so one host cannot hold every
    /// connection slot with logins it never completes.
    pub max_unauthenticated_per_ip: usize,
    /// File descriptors kept free for everything but Kafka connections (segment files
    /// opened after start, the HTTP endpoint, TLS files); a connection that would eat
    /// into them is refused at accept.
    pub reserved_fds: usize,
    /// Delay before answering a failed authentication.
    pub auth_failure_delay_ms: u64,
    /// Idempotent producers whose sequence state is kept per partition; beyond this the
    /// one idle longest is forgotten.
    pub max_producers_per_partition: usize,
    /// An idempotent producer's state is dropped after this long without a write.
    pub producer_expiry_secs: u64,
    /// At start, producer state is rebuilt from this many newest logs of each shard.
    pub producer_recovery_entries: u64,
    /// Quotas (`quota_bytes_per_sec`, `quota_requests_per_sec`) allow bursts of this many
    /// seconds' worth: a producer idle that long may send that much at once before it is
    /// throttled (Kafka's quota window is 10-11 s).
    pub quota_burst_secs: u64,
    /// Longest a Produce request over quota is throttled (ms); a producer whose single
    /// requests take longer than this at its quota can exceed the quota.
    pub max_throttle_ms: u64,
    /// On SIGTERM/SIGINT, connections get this long to be answered what they sent before
    /// they are closed (storage is flushed after). Below Kubernetes' default grace period.
    pub shutdown_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 100 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_unauthenticated_inflight_bytes: 8 * 1024 * 1024,
            request_timeout_secs: 30,
            max_batch_bytes: 8 * 1024 * 1024,
            max_decompressed_batch_bytes: 64 * 1024 * 1024,
            max_records_per_batch: 1_000_000,
            max_converted_batch_bytes: 128 * 1024 * 1024,
            max_decoded_inflight_bytes: 256 * 1024 * 1024,
            decode_threads: 0,
            max_pipelined_requests: 32,
            max_pipelined_bytes: 16 * 1024 * 1024,
            idle_timeout_secs: 600,
            auth_timeout_secs: 10,
            max_connections: 10_000,
            max_unauthenticated_per_ip: 256,
            reserved_fds: 256,
            auth_failure_delay_ms: 500,
            max_producers_per_partition: 10_000,
            producer_expiry_secs: 86_400,
            producer_recovery_entries: 100_000,
            quota_burst_secs: 10,
            max_throttle_ms: 5000,
            shutdown_timeout_secs: 25,
        }
    }
}

/// The local logstore's segment files and how often acks=1 data is synced.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// A shard starts a new segment file once the current one holds this many bytes.
    pub segment_bytes: u64,
    /// ...or once the current one is this old (ms). Retention deletes whole segments, so
    /// this bounds how long data outlives `retention_hours`.
    pub segment_ms: u64,
    /// acks=1 (and acks=0) data is fsynced at most this long after it was written (ms);
    /// 0 leaves it to the OS.
    pub flush_interval_ms: u64,
    /// ...or as soon as this many bytes of it wait in a shard (and no fsync of the shard is
    /// in progress); 0 means no byte limit. Small fsyncs keep the device's write cache
    /// short, and so the stall every write sees while the device flushes it.
    pub flush_bytes: u64,
    /// Write segments with direct I/O (bypassing the page cache) where the filesystem
    /// allows it; false writes through the page cache.
    pub direct_io: bool,
    /// Raw topics and `.json` topics of logstores without JSON options: keep the client's
    /// record batches (magic 2) as they came, once every record is checked, instead of one
    /// encoded log per record (fewer bytes to write, and no conversion until a read); false
    /// stores every log encoded. What was stored either way stays readable.
    pub keep_record_batches: bool,
    /// Largest log stored, encoded (a record's value, key and headers plus about 50 bytes);
    /// a record that makes a larger log gets MESSAGE_TOO_LARGE.
    /// 1024..=[`MAX_ENTRY_BYTES_LIMIT`] (1 GiB).
    pub max_log_bytes: usize,
    /// Where logstores that do not name a backend (nor does their project) are stored.
    pub backend: Backend,
}

/// Gateway nodes that share one storage: every live node is listed in Metadata and leads
/// some of every logstore's partitions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Every node, this one (`node_id`) included; empty: no cluster.
    pub nodes: Vec<ClusterNode>,
    /// How often each node asks every other for its `/readyz` (ms).
    pub health_interval_ms: u64,
    /// A node that has not answered `/readyz` for this long is left out of Metadata (ms).
    pub down_after_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { nodes: Vec::new(), health_interval_ms: 1000, down_after_ms: 3000 }
    }
}

/// One gateway node of a cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    /// Its `node_id`.
    pub id: i32,
    /// Its `[metrics] bind` address (`host:port`), where the others check `/readyz`.
    pub health: String,
    /// The address clients reach each of its listeners at, by security protocol, e.g.
    /// `{ SASL_SSL = "gw1.example.com:10012" }`.
    pub advertised: HashMap<SecurityProtocol, String>,
}

/// A storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The local logstore under `data_dir` (one node).
    #[default]
    Local,
    /// The ClickHouse of the `[clickhouse]` section (shared by any number of nodes).
    Clickhouse,
}

/// Where the ClickHouse backend inserts, and how it batches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP(S) URLs of ClickHouse servers (e.g. `http://127.0.0.1:8123`); an insert or query
    /// that cannot reach one tries the next.
    pub urls: Vec<String>,
    pub database: String,
    /// The table logs are inserted into (a MergeTree table, or a Distributed table over one
    /// on every shard of a cluster).
    pub table: String,
    pub user: String,
    pub password: String,
    /// CA certificate (PEM) for `https://` URLs.
    pub ca_file: Option<PathBuf>,
    /// Create the database and table at start when absent (turn off for a Distributed
    /// target created by hand).
    pub create_tables: bool,
    /// One insert holds at most this many rows...
    pub insert_max_rows: usize,
    /// ...and this many bytes of RowBinary...
    pub insert_max_bytes: usize,
    /// ...and waits at most this long (ms) for more Produce requests after the first.
    pub insert_window_ms: u64,
    /// Logs waiting for an insert take at most this many bytes; beyond it producers wait,
    /// then get a retriable error.
    pub max_pending_bytes: usize,
    /// Longest one statement may take (s).
    pub timeout_secs: u64,
    /// With a Distributed `table`: the HTTP URL of every shard (each replica of it, for
    /// replicated tables) whose `retention_table` holds the partitions retention drops.
    pub retention_urls: Vec<String>,
    /// The local table on each of `retention_urls` (default: `table`).
    pub retention_table: Option<String>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            database: "loggate".into(),
            table: "logs".into(),
            user: "default".into(),
            password: String::new(),
            ca_file: None,
            create_tables: true,
            insert_max_rows: 100_000,
            insert_max_bytes: 16 << 20,
            insert_window_ms: 200,
            max_pending_bytes: 64 << 20,
            timeout_secs: 10,
            retention_urls: Vec::new(),
            retention_table: None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: 3_600_000,
            flush_interval_ms: 1000,
            flush_bytes: 1 << 20,
            direct_io: true,
            keep_record_batches: true,
            max_log_bytes: 1024 * 1024,
            backend: Backend::Local,
        }
    }
}

/// The HTTP endpoint for Prometheus metrics and health checks.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `/metrics`, `/healthz` and `/readyz` on, e.g. `127.0.0.1:9644`;
    /// no endpoint when absent.
    pub bind: Option<SocketAddr>,
}

/// Reloading the configuration while running (SIGHUP reloads it too).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// How often the configuration file and the TLS files are checked for changes; 0: only
    /// on SIGHUP.
    pub watch_interval_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch_interval_ms: 1000 }
    }
}

/// The server's own log lines (on stderr).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` (text lines) or `json` (one JSON object per line); `--log-format` and
    /// `LOGGATE_LOG_FORMAT` override it. Which lines: `RUST_LOG` (default `info`).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// A project: a namespace of logstores, the SASL username.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    /// Backend of this project's logstores (default: `[storage] backend`).
    #[serde(default)]
    pub storage: Option<Backend>,
    #[serde(default)]
    pub logstores: Vec<LogstoreConfig>,
    /// Produce quota: bytes per second of Produce requests (as received) by this project,
    /// all its keys together; over it, its requests are throttled, never refused.
    #[serde(default)]
    pub quota_bytes_per_sec: Option<u64>,
    /// Produce quota: Produce requests per second by this project, all its keys together.
    #[serde(default)]
    pub quota_requests_per_sec: Option<f64>,
}

/// How a logstore spreads records over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Each produced batch goes to the next shard, whatever partition the client chose.
    #[default]
    RoundRobin,
    /// Partition p is written to shard p (keeps per-key order).
    Partition,
}

/// A logstore: the Kafka topic, with its shards as partitions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogstoreConfig {
    pub name: String,
    #[serde(default = "one")]
    pub shards: u32,
    #[serde(default)]
    pub routing: Routing,
    /// Logs older than this (by arrival time) are deleted, a whole segment at a time.
    #[serde(default)]
    pub retention_hours: Option<f64>,
    /// The oldest segments are deleted while the logstore (all its shards) holds more bytes.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// Backend of this logstore (default: its project's).
    #[serde(default)]
    pub storage: Option<Backend>,
    /// `.json` topics: the field whose value is the log's event time (a dotted name for a
    /// flattened member), or `"auto"` (see README, "Event time and nested fields"). None:
    /// the record timestamp.
    #[serde(default)]
    pub time_field: Option<String>,
    /// How that field's value is read: `auto` (default), `rfc3339`, `epoch_s`,
    /// `epoch_ms`, `epoch_us`, `epoch_ns`, or a strftime pattern (contains `%`).
    #[serde(default)]
    pub time_format: Option<String>,
    /// A field time more than this many hours before the arrival time is not used
    /// (default 168).
    #[serde(default)]
    pub time_window_past_hours: Option<f64>,
    /// A field time more than this many hours after the arrival time is not used
    /// (default 1).
    #[serde(default)]
    pub time_window_future_hours: Option<f64>,
    /// `.json` topics: nested objects down to this depth become dotted field names
    /// (0, the default: only top-level members are fields).
    #[serde(default)]
    pub flatten_depth: u32,
}

/// Name of the automatic [`LogstoreConfig::time_field`] mode.
pub const TIME_FIELD_AUTO: &str = "auto";
/// Largest [`LogstoreConfig::flatten_depth`].
pub const MAX_FLATTEN_DEPTH: u32 = 16;

impl LogstoreConfig {
    /// Checks the event time and flattening options.
    fn validate_event_time(&self, project: &str) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("logstore {project}/{}: {m}", self.name)));
        if self.time_field.as_deref().is_some_and(str::is_empty) {
            return invalid("time_field must not be empty".into());
        }
        let time_options = self.time_format.is_some()
            || self.time_window_past_hours.is_some()
            || self.time_window_future_hours.is_some();
        if self.time_field.is_none() && time_options {
            return invalid("time_format and time_window_*_hours need time_field".into());
        }
        if let Some(format) = &self.time_format {
            let named = ["auto", "rfc3339", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns"];
            let strftime_ok = format.contains('%')
                && !chrono::format::StrftimeItems::new(format).any(|i| matches!(i, chrono::format::Item::Error));
            if !named.contains(&format.as_str()) && !strftime_ok {
                return invalid(format!(
                    "time_format {format:?} is none of {} nor a valid strftime pattern",
                    named.join(", ")
                ));
            }
        }
        for (name, hours) in
            [("time_window_past_hours", self.time_window_past_hours), ("time_window_future_hours", self.time_window_future_hours)]
        {
            if hours.is_some_and(|h| !(h.is_finite() && h > 0.0 && h <= 1e6)) {
                return invalid(format!("{name} must be a positive number of hours"));
            }
        }
        if self.flatten_depth > MAX_FLATTEN_DEPTH {
            return invalid(format!("flatten_depth must be 0..={MAX_FLATTEN_DEPTH}"));
        }
        Ok(())
    }
}

/// An access key: id, hashed secret, and the `project/logstore` patterns it may write.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    pub id: String,
    /// `sha256:<salt hex>:<digest hex>` as printed by `loggate keygen`.
    pub secret_hash: String,
    /// Patterns `project/logstore`, each part a name or `*`; `project` alone means `project/*`.
    pub allow: Vec<String>,
    /// Produce quota: bytes per second of Produce requests (as received) by this key, in
    /// any project; over it, its requests are throttled, never refused.
    #[serde(default)]
    pub quota_bytes_per_sec: Option<u64>,
    /// Produce quota: Produce requests per second by this key, in any project.
    #[serde(default)]
    pub quota_requests_per_sec: Option<f64>,
    /// SASL/SCRAM-SHA-256 credential `<iterations>:<salt>:<stored key>:<server key>`
    /// (base64) as printed by `loggate keygen`; without it the key cannot use SCRAM-SHA-256.
    #[serde(default)]
    pub scram_sha256: Option<String>,
    /// The same for SASL/SCRAM-SHA-512.
    #[serde(default)]
    pub scram_sha512: Option<String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_protocol() -> SecurityProtocol {
    SecurityProtocol::SaslSsl
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn one_i32() -> i32 {
    1
}

/// Errors reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration in {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid configuration in {path}: {source}")]
    Reference { path: PathBuf, source: EnvError },
    #[error("invalid configuration: {0}")]
    Env(#[from] EnvError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            node_id: 1,
            listeners: Vec::new(),
            tls: TlsConfig::default(),
            limits: Limits::default(),
            storage: StorageConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            cluster: ClusterConfig::default(),
            metrics: MetricsConfig::default(),
            reload: ReloadConfig::default(),
            log: LogConfig::default(),
            projects: Vec::new(),
            access_keys: Vec::new(),
        }
    }
}

impl Config {
    /// Reads and validates a configuration file, with the process environment's `${VAR}`
    /// references and `LOGGATE_*` overrides (see [`env`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &env::process_env())
    }

    /// [`Config::load`] with the given environment.
    pub fn load_with_env(path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let text = env::expand_references(&text, env)
            .map_err(|source| ConfigError::Reference { path: path.to_owned(), source })?;
        let mut config: Config = toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        // Relative data directories are relative to the working directory, like the CLI flag.
        config.apply_defaults();
        env::apply_overrides(&mut config, env)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration without a file: the defaults and the environment's overrides.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        config.apply_defaults();
        env::apply_overrides(&mut config, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Fills in the default listener when none is configured.
    pub fn apply_defaults(&mut self) {
        if self.listeners.is_empty() {
            self.listeners.push(ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 10012)),
                advertised: None,
                protocol: SecurityProtocol::SaslSsl,
                project: None,
                client_auth: ClientAuth::None,
            });
        }
    }

    /// Checks the `[cluster]` section: this node in it, ids unique, every node reachable on
    /// every listener's protocol, and no logstore in the local logstore (one node's disk).
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if cluster.nodes.is_empty() {
            return Ok(());
        }
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !cluster.nodes.iter().any(|n| n.id == self.node_id) {
            return invalid(format!("[cluster] nodes does not list this node (node_id {})", self.node_id));
        }
        let mut ids = std::collections::HashSet::new();
        for node in &cluster.nodes {
            if !(0..=255).contains(&node.id) || !ids.insert(node.id) {
                return invalid(format!("[cluster] node id {} is out of 0..=255 or listed twice", node.id));
            }
            if crate::server::parse_host_port(&node.health).is_none() {
                return invalid(format!("[cluster] node {}: health {:?} is not host:port", node.id, node.health));
            }
            for listener in &self.listeners {
                match node.advertised.get(&listener.protocol) {
                    Some(a) if crate::server::parse_host_port(a).is_some() => {}
                    _ => {
                        return invalid(format!(
                            "[cluster] node {} needs an advertised host:port for {:?} (this node has such a listener)",
                            node.id, listener.protocol
                        ))
                    }
                }
            }
        }
        if cluster.health_interval_ms == 0 || cluster.down_after_ms < cluster.health_interval_ms {
            return invalid("[cluster] health_interval_ms must be positive and down_after_ms at least as long".into());
        }
        for project in &self.projects {
            for store in &project.logstores {
                if self.backend_of(project, store) == Backend::Local {
                    return invalid(format!(
                        "logstore {}/{} is in the local logstore, which one node alone can write: \
                         nodes of a [cluster] need shared storage (storage = \"clickhouse\")",
                        project.name, store.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the listeners with `client_auth = "required"`: SSL ones, without a `project`
    /// (the certificate names it), with a `[tls] client_ca` to verify certificates against.
    fn validate_client_auth(&self) -> Result<(), ConfigError> {
        for l in self.listeners.iter().filter(|l| l.client_auth == ClientAuth::Required) {
            let problem = if l.protocol != SecurityProtocol::Ssl {
                "client_auth = \"required\" is for SSL listeners (SASL listeners authenticate with SASL)"
            } else if l.project.is_some() {
                "with client_auth = \"required\" the client certificate names the project: remove `project`"
            } else if self.tls.client_ca.is_none() {
                "client_auth = \"required\" needs [tls] client_ca, the CA certificates that sign client certificates"
            } else {
                continue;
            };
            return Err(ConfigError::Invalid(format!("listener {}: {problem}", l.bind)));
        }
        Ok(())
    }

    /// Checks quotas: positive rates, a burst of 1..=3600 s, a throttle cap of 1..=300000 ms.
    fn validate_quotas(&self) -> Result<(), ConfigError> {
        let quotas = self.projects.iter().map(|p| ("project", &p.name, p.quota_bytes_per_sec, p.quota_requests_per_sec));
        let keys = self.access_keys.iter().map(|k| ("access key", &k.id, k.quota_bytes_per_sec, k.quota_requests_per_sec));
        for (what, name, bytes, requests) in quotas.chain(keys) {
            if bytes == Some(0) || requests.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(ConfigError::Invalid(format!(
                    "{what} {name:?}: quota_bytes_per_sec and quota_requests_per_sec must be positive (leave them out for no quota)"
                )));
            }
        }
        let l = &self.limits;
        if !(1..=3600).contains(&l.quota_burst_secs) || !(1..=300_000).contains(&l.max_throttle_ms) {
            return Err(ConfigError::Invalid(
                "quota_burst_secs must be 1..=3600 and max_throttle_ms 1..=300000".into(),
            ));
        }
        Ok(())
    }

    /// The backend a logstore is stored in: its own, else its project's, else the default.
    pub fn backend_of(&self, project: &ProjectConfig, store: &LogstoreConfig) -> Backend {
        store.storage.or(project.storage).unwrap_or(self.storage.backend)
    }

    /// Whether any logstore is stored in ClickHouse.
    pub fn uses_clickhouse(&self) -> bool {
        self.projects.iter().any(|p| p.logstores.iter().any(|l| self.backend_of(p, l) == Backend::Clickhouse))
    }

    /// Checks names, shard counts and limits for mistakes a user would want to hear about.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0..=255).contains(&self.node_id) {
            return Err(ConfigError::Invalid(format!("node_id {} must be 0..=255", self.node_id)));
        }
        let mut seen = std::collections::HashSet::new();
        for project in &self.projects {
            check_name("project", &project.name)?;
            if !seen.insert(&project.name) {
                return Err(ConfigError::Invalid(format!("project {:?} is defined twice", project.name)));
            }
            let mut stores = std::collections::HashSet::new();
            for store in &project.logstores {
                check_name("logstore", &store.name)?;
                if store.name.ends_with(".json") {
                    return Err(ConfigError::Invalid(format!(
                        "logstore {:?}: names may not end in .json (the suffix selects JSON parsing)",
                        store.name
                    )));
                }
                if !stores.insert(&store.name) {
                    return Err(ConfigError::Invalid(format!(
                        "logstore {:?} is defined twice in project {:?}",
                        store.name, project.name
                    )));
                }
                if store.shards == 0 || store.shards > 1024 {
                    return Err(ConfigError::Invalid(format!(
                        "logstore {}/{}: shards must be 1..=1024",
                        project.name, store.name
                    )));
                }
                if store.retention_hours.is_some_and(|h| !(h.is_finite() && h > 0.0 && h <= 1e6)) {
                    return Err(ConfigError::Invalid(format!(
                        "logstore {}/{}: retention_hours must be a positive number of hours",
                        project.name, store.name
                    )));
                }
                store.validate_event_time(&project.name)?;
                if store.retention_bytes == Some(0) {
                    return Err(ConfigError::Invalid(format!(
                        "logstore {}/{}: retention_bytes must be positive (leave it out for no limit)",
                        project.name, store.name
                    )));
                }
            }
        }
        let mut key_ids = std::collections::HashSet::new();
        for key in &self.access_keys {
            if !key_ids.insert(&key.id) {
                return Err(ConfigError::Invalid(format!("access key {:?} is defined twice", key.id)));
            }
            if key.id.is_empty() || key.id.contains('#') {
                return Err(ConfigError::Invalid(format!("access key id {:?} is empty or contains '#'", key.id)));
            }
            crate::ingest::auth::SecretHash::parse(&key.secret_hash).map_err(|e| {
                ConfigError::Invalid(format!("access key {}: {e}", key.id))
            })?;
        }
        self.validate_client_auth()?;
        let mut binds = std::collections::HashSet::new();
        for listener in &self.listeners {
            if listener.bind.port() != 0 && (!binds.insert(listener.bind) || self.metrics.bind == Some(listener.bind)) {
                return Err(ConfigError::Invalid(format!("address {} is bound twice (listeners, [metrics] bind)", listener.bind)));
            }
            match (&listener.project, listener.protocol.uses_sasl() || listener.client_auth == ClientAuth::Required) {
                (None, false) => {
                    return Err(ConfigError::Invalid(format!(
                        "listener {}: a listener without SASL needs `project = \"...\"`",
                        listener.bind
                    )))
                }
                (Some(p), _) if !self.projects.iter().any(|c| &c.name == p) => {
                    return Err(ConfigError::Invalid(format!("listener {}: unknown project {p:?}", listener.bind)))
                }
                _ => {}
            }
            if let Some(adv) = &listener.advertised {
                let (host, _) = crate::server::parse_host_port(adv).ok_or_else(|| {
                    ConfigError::Invalid(format!("advertised address {adv:?} is not host:port"))
                })?;
                if host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
                    return Err(ConfigError::Invalid(format!(
                        "listener {}: advertised address {adv:?} is not one a client can dial",
                        listener.bind
                    )));
                }
            } else if listener.bind.ip().is_unspecified() {
                // Metadata would send every client to 0.0.0.0, its own host.
                return Err(ConfigError::Invalid(format!(
                    "listener {} listens on every interface, so it needs `advertised = \"host:port\"`: \
                     the address clients reach it at (or LOGGATE_ADVERTISED, LOGGATE_ADVERTISED_{})",
                    listener.bind,
                    protocol_name(listener.protocol)
                )));
            }
        }
        let l = &self.limits;
        if l.max_request_bytes < 1024 || l.max_batch_bytes == 0 || l.max_decompressed_batch_bytes == 0 {
            return Err(ConfigError::Invalid("limits are too small".into()));
        }
        if l.max_inflight_bytes < l.max_request_bytes {
            return Err(ConfigError::Invalid(
                "max_inflight_bytes must be at least max_request_bytes (one request must fit)".into(),
            ));
        }
        if l.max_unauthenticated_inflight_bytes < l.max_request_bytes.min(MAX_UNAUTHENTICATED_FRAME) {
            return Err(ConfigError::Invalid(format!(
                "max_unauthenticated_inflight_bytes must be at least {} (one pre-authentication request must fit)",
                l.max_request_bytes.min(MAX_UNAUTHENTICATED_FRAME)
            )));
        }
        if l.request_timeout_secs == 0 || l.idle_timeout_secs == 0 || l.auth_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "request_timeout_secs, idle_timeout_secs and auth_timeout_secs must be at least 1".into(),
            ));
        }
        self.validate_quotas()?;
        let st = &self.storage;
        if !(4096..=1 << 30).contains(&st.segment_bytes) {
            return Err(ConfigError::Invalid("[storage] segment_bytes must be 4096..=1073741824".into()));
        }
        if st.segment_ms < 1000 {
            return Err(ConfigError::Invalid("[storage] segment_ms must be at least 1000".into()));
        }
        self.validate_cluster()?;
        let ch = &self.clickhouse;
        if self.uses_clickhouse() {
            if ch.urls.is_empty() {
                return Err(ConfigError::Invalid(
                    "logstores are stored in ClickHouse but [clickhouse] urls is empty".into(),
                ));
            }
            if ch.database.is_empty() || ch.table.is_empty() {
                return Err(ConfigError::Invalid("[clickhouse] database and table must not be empty".into()));
            }
            if ch.insert_max_rows == 0 || ch.insert_max_bytes < 4096 || ch.timeout_secs == 0 {
                return Err(ConfigError::Invalid(
                    "[clickhouse] insert_max_rows, insert_max_bytes (>= 4096) and timeout_secs must be positive".into(),
                ));
            }
            if ch.max_pending_bytes < ch.insert_max_bytes {
                return Err(ConfigError::Invalid(
                    "[clickhouse] max_pending_bytes must be at least insert_max_bytes".into(),
                ));
            }
        }
        if !(1024..=MAX_ENTRY_BYTES_LIMIT).contains(&st.max_log_bytes) {
            return Err(ConfigError::Invalid(format!(
                "[storage] max_log_bytes must be 1024..={MAX_ENTRY_BYTES_LIMIT}, not {}",
                st.max_log_bytes
            )));
        }
        Ok(())
    }

    /// What the local logstore needs to know: segment, flush and per-logstore retention
    /// settings (the size limit split evenly over the shards).
    pub fn local_store_options(&self) -> LocalStoreOptions {
        let st = &self.storage;
        let mut streams = self.stream_options();
        streams.retain(|_, options| *options != StreamOptions::default());
        LocalStoreOptions {
            segment_bytes: st.segment_bytes,
            segment_age: Duration::from_millis(st.segment_ms),
            flush_interval: (st.flush_interval_ms > 0).then(|| Duration::from_millis(st.flush_interval_ms)),
            flush_bytes: (st.flush_bytes > 0).then_some(st.flush_bytes),
            streams,
            direct_io: st.direct_io,
            packed_batches: st.keep_record_batches,
            max_entry_bytes: st.max_log_bytes,
            ..LocalStoreOptions::default()
        }
    }

    /// The local logstore's options of every configured logstore (retention; the size
    /// limit split evenly over the shards).
    pub fn stream_options(&self) -> HashMap<StreamId, StreamOptions> {
        let mut streams = HashMap::new();
        for project in &self.projects {
            for store in &project.logstores {
                let options = StreamOptions {
                    retention_age: store.retention_hours.map(|h| Duration::from_secs_f64(h * 3600.0)),
                    retention_bytes_per_shard: store.retention_bytes.map(|b| b.div_ceil(u64::from(store.shards.max(1)))),
                };
                streams.insert(StreamId::new(&project.name, &store.name), options);
            }
        }
        streams
    }

    /// Path of the server certificate chain.
    pub fn cert_path(&self) -> PathBuf {
        self.tls.cert.clone().unwrap_or_else(|| self.data_dir.join("tls/server.pem"))
    }
    /// Path of the server private key.
    pub fn key_path(&self) -> PathBuf {
        self.tls.key.clone().unwrap_or_else(|| self.data_dir.join("tls/server.key"))
    }
    /// Path of the development CA certificate written next to a generated server certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.cert_path().with_file_name("ca.pem")
    }
}

/// A protocol as Kafka clients and the `LOGGATE_*_<PROTOCOL>` variables spell it.
pub fn protocol_name(protocol: SecurityProtocol) -> &'static str {
    match protocol {
        SecurityProtocol::Plaintext => "PLAINTEXT",
        SecurityProtocol::Ssl => "SSL",
        SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
        SecurityProtocol::SaslSsl => "SASL_SSL",
    }
}

/// Whether `name` is a valid project or logstore name: what SLS allows (letters, digits,
/// `-`, `_`, `.`), 1-128 chars, not `.` or `..`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Checks a project or logstore name (see [`is_valid_name`]).
fn check_name(what: &str, name: &str) -> Result<(), ConfigError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{what} name {name:?} must be 1-128 letters, digits, '-', '_' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn storage_settings_reach_the_store_options() {
        let c = parse(
            "[storage]\nsegment_bytes = 65536\nsegment_ms = 60000\nflush_interval_ms = 0\nflush_bytes = 1000\n\
             max_log_bytes = 5000000\n\
             [[projects]]\nname = \"p\"\n\
             [[projects.logstores]]\nname = \"a\"\nshards = 3\nretention_hours = 0.5\nretention_bytes = 1000\n\
             [[projects.logstores]]\nname = \"b\"\nretention_hours = 24\n\
             [[projects.logstores]]\nname = \"c\"\n",
        )
        .unwrap();
        let o = c.local_store_options();
        assert_eq!(o.segment_bytes, 65536);
        assert_eq!(o.max_entry_bytes, 5_000_000);
        assert_eq!(o.segment_age, Duration::from_secs(60));
        assert_eq!((o.flush_interval, o.flush_bytes), (None, Some(1000)));
        let a = o.streams[&StreamId::new("p", "a")];
        assert_eq!(a.retention_age, Some(Duration::from_secs(1800)));
        assert_eq!(a.retention_bytes_per_shard, Some(334));
        let b = o.streams[&StreamId::new("p", "b")];
        assert_eq!((b.retention_age, b.retention_bytes_per_shard), (Some(Duration::from_secs(86400)), None));
        assert!(!o.streams.contains_key(&StreamId::new("p", "c")));

        let d = Config::default().local_store_options();
        assert_eq!((d.segment_bytes, d.flush_interval), (256 << 20, Some(Duration::from_secs(1))));
        assert_eq!(d.max_entry_bytes, 1 << 20);
        assert_eq!(d.flush_bytes, Some(1 << 20));
    }

    #[test]
    fn bad_storage_settings_are_refused() {
        for bad in [
            "[storage]\nsegment_bytes = 10\n",
            "[storage]\nsegment_ms = 5\n",
            "[storage]\nmax_log_bytes = 1023\n",
            "[storage]\nmax_log_bytes = 1073741825\n",
            "[storage]\nflush_every = 5\n",
            "[[projects]]\nname = \"p\"\n[[projects.logstores]]\nname = \"a\"\nretention_hours = 0\n",
            "[[projects]]\nname = \"p\"\n[[projects.logstores]]\nname = \"a\"\nretention_hours = -1\n",
            "[[projects]]\nname = \"p\"\n[[projects.logstores]]\nname = \"a\"\nretention_bytes = 0\n",
            "[[projects]]\nname = \"p\"\nquota_bytes_per_sec = 0\n",
            "[[projects]]\nname = \"p\"\nquota_requests_per_sec = -1.0\n",
            "[[projects]]\nname = \"p\"\nquota_requests_per_sec = nan\n",
            "[limits]\nquota_burst_secs = 0\n",
            "[limits]\nmax_throttle_ms = 0\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
