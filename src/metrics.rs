//! Prometheus metrics: what the gateway counts, and their text exposition.
//!
//! Handlers update the metrics here as they go (a counter or histogram per request, never
//! per record); per-logstore totals are plain atomics of the ingest layer and storage
//! stats (the storage crate's plain counters and snapshots), read at scrape time by the
//! collectors below. The process metrics (`process_*`, unprefixed as Prometheus names them)
//! are read from `/proc/self` at scrape time. `server::http` serves [`Metrics::encode`] on
//! `/metrics`, and [`Metrics::readiness`] on `/readyz`.
//!
//! The endpoint starts before storage is recovered: what is only known once the gateway
//! runs (the catalog, the stores, the budgets) is attached later with [`Metrics::attach`]
//! and friends, and exported from then on.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::ingest::Ingest;
use loggate_storage::clickhouse::ClickHouseStore;
use loggate_storage::local::LocalStore;
use loggate_storage::stats::HistogramSnapshot;
use loggate_storage::LogStorage;

/// One label: a name and a value from a fixed set (never text a client sent).
type Label = [(&'static str, &'static str); 1];

/// Labels of a produce error: the error, and the configured project and logstore (or
/// [`UNKNOWN`]), so the label values are bounded by the configuration.
type ProduceLabels = [(&'static str, String); 3];

/// The project/logstore label of a name not in the configuration.
pub const UNKNOWN: &str = "_unknown";

/// Upper bounds (seconds) of the request duration buckets: 1 ms apart up to 10 ms, where
/// produce latency targets lie, coarser beyond.
const DURATION_BUCKETS: [f64; 25] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.0125, 0.015, 0.02, 0.025,
    0.03, 0.04, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why a SASL authentication failed, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Success,
    /// The token or password is not in the expected format.
    Malformed,
    /// No such access key.
    UnknownKey,
    /// The key exists, the secret is wrong.
    BadSecret,
    /// The key may not write to the project it named.
    NotAllowed,
    /// The key has no credential for the SCRAM mechanism the client chose.
    NoCredential,
}

impl AuthResult {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSecret => "bad_secret",
            Self::NotAllowed => "not_allowed",
            Self::NoCredential => "no_credential",
        }
    }
}

/// How a client certificate login (mutual TLS) ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertAuthResult {
    Success,
    /// The client sent no certificate.
    NoCertificate,
    /// Its chain did not verify against `[tls] client_ca` (issuer, validity, usage).
    BadCertificate,
    /// It names no project and access key (or not in the documented form).
    NoIdentity,
    /// The access key it names is not configured.
    UnknownKey,
    /// The key may not write to the project it names.
    NotAllowed,
    /// The project it names is not configured.
    UnknownProject,
}

impl CertAuthResult {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::NoCertificate => "no_certificate",
            Self::BadCertificate => "bad_certificate",
            Self::NoIdentity => "no_identity",
            Self::UnknownKey => "unknown_key",
            Self::NotAllowed => "not_allowed",
            Self::UnknownProject => "unknown_project",
        }
    }
}

/// Where the gateway is in its life, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Recovering storage, binding listeners.
    Starting = 0,
    /// Taking Kafka clients.
    Serving = 1,
    /// Draining connections before exit.
    ShuttingDown = 2,
}

/// Bytes held against an in-flight budget: `(pool, held, limit)`.
pub type InflightReading = (&'static str, u64, u64);

/// Reads the in-flight budgets at scrape time.
pub type InflightSource = Box<dyn Fn() -> Vec<InflightReading> + Send + Sync>;

/// What is attached once the gateway has started.
#[derive(Default)]
struct Sources {
    ingest: OnceLock<Arc<Ingest>>,
    storage: OnceLock<Arc<dyn LogStorage>>,
    local: OnceLock<Arc<LocalStore>>,
    clickhouse: OnceLock<Arc<ClickHouseStore>>,
    inflight: OnceLock<InflightSource>,
    phase: AtomicU8,
}

/// Every metric the gateway exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    sources: Arc<Sources>,
    connections_open: Gauge,
    connections_accepted: Counter,
    connections_refused: Counter,
    requests: Family<Label, Counter>,
    request_duration: Family<Label, Histogram>,
    request_read: Family<Label, Histogram>,
    produce_errors: Family<ProduceLabels, Counter>,
    authentications: Family<Label, Counter>,
    received_bytes: Family<Label, Counter>,
    decompressed_bytes: Family<Label, Counter>,
    tls_handshake_failures: Counter,
    certificate_authentications: Family<Label, Counter>,
    quota_throttled: Family<[(&'static str, String); 1], Counter<f64, std::sync::atomic::AtomicU64>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric; the per-logstore and storage series appear once
    /// [`attach`](Self::attach)ed.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let sources = Arc::new(Sources::default());
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("loggate");
        registry.register("build", "Version of the running loggate", Info::new([("version", env!("CARGO_PKG_VERSION"))]));
        let connections_open = Gauge::default();
        registry.register("connections_open", "Client connections currently open", connections_open.clone());
        let connections_accepted = Counter::default();
        registry.register("connections_accepted", "Client connections accepted", connections_accepted.clone());
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections refused because max_connections were open",
            connections_refused.clone(),
        );
        let requests = Family::default();
        registry.register("requests", "Kafka requests handled, by API", requests.clone());
        let histograms = || Family::<Label, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let request_duration = histograms();
        registry.register(
            "request_duration_seconds",
            "Time from a Kafka request fully read to its response written (the latency the gateway \
             adds, as Kafka's TotalTimeMs), by API",
            request_duration.clone(),
        );
        let request_read = histograms();
        registry.register(
            "request_read_seconds",
            "Time from a Kafka request's first bytes read to its last (the client sending it, the \
             server reading and decrypting it), by API",
            request_read.clone(),
        );
        let produce_errors = Family::default();
        registry.register(
            "produce_partition_errors",
            "Partitions of Produce requests answered with an error, by error, project and logstore \
             (names not configured count as _unknown)",
            produce_errors.clone(),
        );
        let authentications = Family::default();
        registry.register(
            "sasl_authentications",
            "SASL authentications (PLAIN and SCRAM), by result: success, or why it failed (malformed, \
             unknown_key, bad_secret, not_allowed, no_credential: the key has no SCRAM credential)",
            authentications.clone(),
        );
        let received_bytes = Family::default();
        registry.register(
            "received_bytes",
            "Bytes of Kafka requests received (frames with their size prefix, after TLS), by listener protocol",
            received_bytes.clone(),
        );
        let decompressed_bytes = Family::default();
        registry.register(
            "decompressed_bytes",
            "Bytes record batches decompressed to, by compression codec",
            decompressed_bytes.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or did not complete in time",
            tls_handshake_failures.clone(),
        );
        let certificate_authentications = Family::default();
        registry.register(
            "tls_client_authentications",
            "Client certificate logins on listeners with client_auth = required, by result: success, or why \
             it failed (no_certificate, bad_certificate, no_identity, unknown_key, not_allowed, unknown_project)",
            certificate_authentications.clone(),
        );
        let quota_throttled = Family::default();
        registry.register(
            "quota_throttled_seconds",
            "Throttle time given to Produce requests over a quota, by project",
            quota_throttled.clone(),
        );
        registry.register_collector(Box::new(StateCollector { sources: sources.clone() }));
        Self {
            registry: root,
            sources,
            connections_open,
            connections_accepted,
            connections_refused,
            requests,
            request_duration,
            request_read,
            produce_errors,
            authentications,
            received_bytes,
            decompressed_bytes,
            tls_handshake_failures,
            certificate_authentications,
            quota_throttled,
        }
    }

    /// Attaches the ingest service (per-logstore totals) and the storage (`/readyz`
    /// asks whether it can write).
    pub fn attach(&self, ingest: Arc<Ingest>, storage: Arc<dyn LogStorage>) {
        let _ = self.sources.ingest.set(ingest);
        let _ = self.sources.storage.set(storage);
    }

    /// Exports what the local logstore did (`loggate_logstore_*`, `loggate_storage_fsync_seconds`).
    pub fn attach_local(&self, store: Arc<LocalStore>) {
        let _ = self.sources.local.set(store);
    }

    /// Exports what the ClickHouse backend did (`loggate_clickhouse_*`), read at scrape time.
    pub fn attach_clickhouse(&self, store: Arc<ClickHouseStore>) {
        let _ = self.sources.clickhouse.set(store);
    }

    /// Exports the in-flight budgets (`loggate_inflight_bytes`, `loggate_inflight_limit_bytes`).
    pub fn attach_inflight(&self, source: InflightSource) {
        let _ = self.sources.inflight.set(source);
    }

    /// Moves the gateway to `phase` (for `/readyz`).
    pub fn set_phase(&self, phase: Phase) {
        self.sources.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// `Ok` when the gateway takes clients and storage can write; else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        self.sources.readiness()
    }

    /// `Ok` when the gateway takes clients (started, not shutting down), whatever storage
    /// says; else why not.
    pub fn serving(&self) -> Result<(), &'static str> {
        match self.sources.phase() {
            Phase::Starting => Err("starting: storage is being recovered"),
            Phase::ShuttingDown => Err("shutting down"),
            Phase::Serving => Ok(()),
        }
    }

    /// A connection was accepted; the returned guard counts it open until dropped.
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_accepted.inc();
        self.connections_open.inc();
        OpenConnection(self.clone())
    }

    /// A connection was refused at accept.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A request of `api` took `read` from its first bytes to its last, then `handled`
    /// until its response was written.
    pub fn request_handled(&self, api: &'static str, read: Duration, handled: Duration) {
        let label = [("api", api)];
        self.requests.get_or_create(&label).inc();
        self.request_read.get_or_create(&label).observe(read.as_secs_f64());
        self.request_duration.get_or_create(&label).observe(handled.as_secs_f64());
    }

    /// A Produce partition was answered with `error`; `store` is the configured
    /// `(project, logstore)` it was for, None when the topic names none.
    pub fn produce_error(&self, error: &'static str, store: Option<(&str, &str)>) {
        let (project, logstore) = store.unwrap_or((UNKNOWN, UNKNOWN));
        let labels = [("error", error.to_string()), ("project", project.to_string()), ("logstore", logstore.to_string())];
        self.produce_errors.get_or_create(&labels).inc();
    }

    /// A SASL authentication ended with `result`.
    pub fn authentication(&self, result: AuthResult) {
        self.authentications.get_or_create(&[("result", result.label())]).inc();
    }

    /// `bytes` of Kafka requests arrived on a listener of `protocol`.
    pub fn received(&self, protocol: &'static str, bytes: u64) {
        self.received_bytes.get_or_create(&[("protocol", protocol)]).inc_by(bytes);
    }

    /// Record batches compressed with `codec` decompressed to `bytes`.
    pub fn decompressed(&self, codec: &'static str, bytes: u64) {
        if bytes > 0 {
            self.decompressed_bytes.get_or_create(&[("codec", codec)]).inc_by(bytes);
        }
    }

    /// A Produce request of `project` (a configured one) was throttled for `time`.
    pub fn quota_throttled(&self, project: &str, time: Duration) {
        self.quota_throttled.get_or_create(&[("project", project.to_string())]).inc_by(time.as_secs_f64());
    }

    /// A TLS handshake failed or timed out.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// A client certificate login ended with `result`.
    pub fn certificate_authentication(&self, result: CertAuthResult) {
        self.certificate_authentications.get_or_create(&[("result", result.label())]).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Sources {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Serving,
            2 => Phase::ShuttingDown,
            _ => Phase::Starting,
        }
    }

    fn readiness(&self) -> Result<(), &'static str> {
        match self.phase() {
            Phase::Starting => Err("starting: storage is being recovered"),
            Phase::ShuttingDown => Err("shutting down"),
            Phase::Serving => match self.storage.get() {
                Some(storage) if !storage.writable() => Err("storage cannot write (disk full, a failed shard or ClickHouse unreachable)"),
                _ => Ok(()),
            },
        }
    }
}

/// Counts a connection as open while it lives.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// Encodes one counter series without labels.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one gauge series without labels.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A histogram read from a storage snapshot (cumulative buckets).
struct SnapshotHistogram(HistogramSnapshot);

impl fmt::Debug for SnapshotHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotHistogram")
    }
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // The encoder adds the buckets up itself: hand it each bucket's own count.
        let mut buckets = Vec::with_capacity(self.0.buckets.len() + 1);
        let mut below = 0u64;
        for &(bound, cumulative) in &self.0.buckets {
            buckets.push((bound, cumulative.saturating_sub(below)));
            below = cumulative;
        }
        buckets.push((f64::MAX, self.0.count.saturating_sub(below)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(self.0.sum_seconds, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Everything read at scrape time from what was attached: readiness, per-logstore totals,
/// storage stats, in-flight budgets.
struct StateCollector {
    sources: Arc<Sources>,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateCollector")
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.sources;
        gauge(&mut encoder, "ready", "1 while /readyz answers 200 (serving and storage can write), else 0", i64::from(s.readiness().is_ok()))?;
        if let Some(ingest) = s.ingest.get() {
            encode_logstores(&mut encoder, ingest)?;
        }
        if let Some(local) = s.local.get() {
            encode_local(&mut encoder, local)?;
        }
        if let Some(ch) = s.clickhouse.get() {
            encode_clickhouse(&mut encoder, ch)?;
        }
        if let Some(read) = s.inflight.get() {
            let readings = read();
            for (name, help, pick) in [
                ("inflight_bytes", "Bytes held against an in-flight budget now, by pool", 1usize),
                ("inflight_limit_bytes", "Size of each in-flight budget, by pool", 2),
            ] {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for r in &readings {
                    let value = if pick == 1 { r.1 } else { r.2 };
                    ConstGauge::new(value as i64).encode(family.encode_family(&[("pool", r.0)])?)?;
                }
            }
        }
        Ok(())
    }
}

/// Per-logstore totals, read from the catalog's counters.
fn encode_logstores(encoder: &mut DescriptorEncoder, ingest: &Ingest) -> Result<(), fmt::Error> {
    let logstores: Vec<_> = ingest.catalog().all_logstores().cloned().collect();
    type Read = fn(&crate::ingest::catalog::LogstoreCounters) -> u64;
    let series: [(&str, &str, Read); 3] = [
        ("logs_written", "Logs stored, by logstore", |c| c.logs()),
        ("value_bytes_written", "Bytes of the stored records' values (uncompressed), by logstore", |c| c.value_bytes()),
        ("json_fallbacks", "Records of a .json topic stored raw because the value was not a JSON object, by logstore", |c| {
            c.json_fallbacks()
        }),
    ];
    for (name, help, read) in series {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for store in &logstores {
            let labels = [("project", store.project.as_str()), ("logstore", store.name.as_str())];
            ConstCounter::new(read(&store.counters)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "event_time_fallbacks",
        "Logs of a .json topic with time_field set that got the record timestamp instead, by logstore and reason",
        None,
        MetricType::Counter,
    )?;
    for store in logstores.iter().filter(|s| s.json.time.is_some()) {
        for why in crate::ingest::convert::TimeFallback::ALL {
            let labels = [("project", store.project.as_str()), ("logstore", store.name.as_str()), ("reason", why.label())];
            ConstCounter::new(store.counters.event_time_fallbacks(why)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The local logstore's fsync latency and per-logstore disk use and retention.
fn encode_local(encoder: &mut DescriptorEncoder, local: &LocalStore) -> Result<(), fmt::Error> {
    SnapshotHistogram(local.fsync_seconds()).encode(encoder.encode_descriptor(
        "storage_fsync_seconds",
        "Time fdatasync of a local logstore segment took",
        None,
        MetricType::Histogram,
    )?)?;
    SnapshotHistogram(local.write_seconds()).encode(encoder.encode_descriptor(
        "storage_write_seconds",
        "Time a local logstore shard took to write one group of appends (reserving disk space and writing; a direct write waits for the device)",
        None,
        MetricType::Histogram,
    )?)?;
    let streams = local.stream_stats();
    type Read = fn(&loggate_storage::stats::StreamStats) -> u64;
    let series: [(&str, &str, MetricType, Read); 4] = [
        ("logstore_disk_bytes", "Disk space the logstore's segment files take (allocated blocks), by logstore", MetricType::Gauge, |s| s.disk_bytes),
        ("logstore_failing_shards", "Shards of the logstore whose last write failed (they make /readyz 503)", MetricType::Gauge, |s| {
            u64::from(s.failing_shards)
        }),
        ("retention_deleted_segments", "Segments retention deleted, by logstore", MetricType::Counter, |s| s.retention_deleted_segments),
        ("retention_deleted_bytes", "Bytes of the segments retention deleted, by logstore", MetricType::Counter, |s| s.retention_deleted_bytes),
    ];
    for (name, help, kind, read) in series {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for s in &streams {
            let labels = [("project", s.stream.project.as_str()), ("logstore", s.stream.logstore.as_str())];
            let value = read(s);
            if matches!(kind, MetricType::Counter) {
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            } else {
                ConstGauge::new(value as i64).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// The ClickHouse backend's totals and pending bytes.
fn encode_clickhouse(encoder: &mut DescriptorEncoder, store: &ClickHouseStore) -> Result<(), fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = store.stats();
    let counters = [
        ("clickhouse_inserts", "ClickHouse INSERTs that stored their rows", stats.inserts.load(Relaxed)),
        ("clickhouse_rows", "Rows those INSERTs stored", stats.rows.load(Relaxed)),
        ("clickhouse_insert_errors", "ClickHouse INSERT attempts that failed (each retry counts)", stats.insert_errors.load(Relaxed)),
        ("clickhouse_insert_checks", "Checks of an INSERT whose outcome was unknown, before it was retried", stats.checks.load(Relaxed)),
        ("clickhouse_appends_failed", "Produce partitions refused by the ClickHouse backend (nothing stored; clients retry)", stats.appends_failed.load(Relaxed)),
    ];
    for (name, help, value) in counters {
        counter(encoder, name, help, value)?;
    }
    gauge(encoder, "clickhouse_pending_bytes", "Bytes of logs waiting for a ClickHouse INSERT", store.pending_bytes() as i64)
}

/// The process's CPU time, memory, descriptors and start time, from `/proc/self`, with the
/// names Prometheus client libraries give them.
struct ProcessCollector;

impl fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProcessCollector")
    }
}

/// What `/proc/self/stat` says (the fields after the command name).
struct ProcStat {
    cpu_seconds: f64,
    threads: i64,
    start_time_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

fn proc_stat() -> Option<ProcStat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold anything: the fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let page = if page > 0 { page as u64 } else { 4096 };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))?;
    Some(ProcStat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)? as i64,
        start_time_seconds: boot as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page),
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        if let Some(stat) = proc_stat() {
            let cpu = ConstCounter::new(stat.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time the process spent, seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size, bytes", stat.resident_bytes as i64)?;
            gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size, bytes", stat.virtual_bytes as i64)?;
            gauge(&mut encoder, "process_threads", "Threads of the process", stat.threads)?;
            let start = ConstGauge::new(stat.start_time_seconds);
            start.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, seconds",
                None,
                start.metric_type(),
            )?)?;
        }
        // Bounded by RLIMIT_NOFILE: the directory lists the open descriptors.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(&mut encoder, "process_open_fds", "Open file descriptors", dir.count() as i64)?;
        }
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            let max = i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX);
            gauge(&mut encoder, "process_max_fds", "Most file descriptors the process may open (soft limit)", max)?;
        }
        Ok(())
    }
}
