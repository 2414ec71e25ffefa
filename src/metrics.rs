//! Prometheus metrics: what the gateway counts, and their text exposition.
//!
//! Handlers update the metrics here as they go (a counter or histogram per request, never
//! per record); per-logstore totals are plain atomics of the ingest layer, read at scrape
//! time by [`LogstoreCollector`]. `server::http` serves [`Metrics::encode`] on `/metrics`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::ingest::Ingest;

/// One label: a name and a value from a fixed set (never text a client sent).
type Label = [(&'static str, &'static str); 1];

/// Upper bounds (seconds) of the request duration buckets: 1 ms apart up to 10 ms, where
/// produce latency targets lie, coarser beyond.
const DURATION_BUCKETS: [f64; 25] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.0125, 0.015, 0.02, 0.025,
    0.03, 0.04, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the gateway exports, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections_accepted: Counter,
    connections_refused: Counter,
    requests: Family<Label, Counter>,
    request_duration: Family<Label, Histogram>,
    request_read: Family<Label, Histogram>,
    produce_errors: Family<Label, Counter>,
    authentications: Family<Label, Counter>,
    quota_throttled: Family<[(&'static str, String); 1], Counter<f64, std::sync::atomic::AtomicU64>>,
}

impl Metrics {
    /// Registers every metric; `ingest` supplies the per-logstore totals at scrape time.
    pub fn new(ingest: Arc<Ingest>) -> Self {
        let mut registry = Registry::with_prefix("loggate");
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
            "Partitions of Produce requests answered with an error, by error",
            produce_errors.clone(),
        );
        let authentications = Family::default();
        registry.register("sasl_authentications", "SASL/PLAIN authentications, by result", authentications.clone());
        registry.register_collector(Box::new(LogstoreCollector { ingest }));
        let quota_throttled = Family::default();
        registry.register(
            "quota_throttled_seconds",
            "Throttle time given to Produce requests over a quota, by project",
            quota_throttled.clone(),
        );
        Self {
            registry,
            connections_open,
            connections_accepted,
            connections_refused,
            requests,
            request_duration,
            request_read,
            produce_errors,
            authentications,
            quota_throttled,
        }
    }

    /// Exports what the ClickHouse backend did (`loggate_clickhouse_*`), read at scrape time.
    pub fn register_clickhouse(&mut self, store: Arc<loggate_storage::clickhouse::ClickHouseStore>) {
        self.registry.register_collector(Box::new(ClickHouseCollector { store }));
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

    /// A Produce partition was answered with `error`.
    pub fn produce_error(&self, error: &'static str) {
        self.produce_errors.get_or_create(&[("error", error)]).inc();
    }

    /// A SASL authentication succeeded or failed.
    pub fn authentication(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.authentications.get_or_create(&[("result", result)]).inc();
    }

    /// A Produce request of `project` (a configured one) was throttled for `time`.
    pub fn quota_throttled(&self, project: &str, time: Duration) {
        self.quota_throttled.get_or_create(&[("project", project.to_string())]).inc_by(time.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
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

/// Per-logstore totals, read from the catalog's counters at scrape time.
struct LogstoreCollector {
    ingest: Arc<Ingest>,
}

impl fmt::Debug for LogstoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogstoreCollector")
    }
}

impl Collector for LogstoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let logstores: Vec<_> = self.ingest.catalog().all_logstores().cloned().collect();
        type Read = fn(&crate::ingest::catalog::LogstoreCounters) -> u64;
        let series: [(&str, &str, Read); 3] = [
            ("logs_written", "Logs stored, by logstore", |c| c.logs()),
            ("value_bytes_written", "Bytes of the stored records' values (uncompressed), by logstore", |c| c.value_bytes()),
            ("json_fallbacks", "Records of a .json topic stored raw because the value was not a JSON object, by logstore", |c| {
                c.json_fallbacks()
            }),
        ];
        for (name, help, read) in series {
            let counter_type = ConstCounter::new(0u64).metric_type();
            let mut family = encoder.encode_descriptor(name, help, None, counter_type)?;
            for store in &logstores {
                let labels = [("project", store.project.as_str()), ("logstore", store.name.as_str())];
                ConstCounter::new(read(&store.counters)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The ClickHouse backend's totals and pending bytes, read at scrape time.
struct ClickHouseCollector {
    store: Arc<loggate_storage::clickhouse::ClickHouseStore>,
}

impl fmt::Debug for ClickHouseCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClickHouseCollector")
    }
}

impl Collector for ClickHouseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.store.stats();
        let counters = [
            ("clickhouse_inserts", "ClickHouse INSERTs that stored their rows", stats.inserts.load(Relaxed)),
            ("clickhouse_rows", "Rows those INSERTs stored", stats.rows.load(Relaxed)),
            ("clickhouse_insert_errors", "ClickHouse INSERT attempts that failed (each retry counts)", stats.insert_errors.load(Relaxed)),
            ("clickhouse_insert_checks", "Checks of an INSERT whose outcome was unknown, before it was retried", stats.checks.load(Relaxed)),
            ("clickhouse_appends_failed", "Produce partitions refused by the ClickHouse backend (nothing stored; clients retry)", stats.appends_failed.load(Relaxed)),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let pending = prometheus_client::metrics::gauge::ConstGauge::new(self.store.pending_bytes() as i64);
        pending.encode(encoder.encode_descriptor(
            "clickhouse_pending_bytes",
            "Bytes of logs waiting for a ClickHouse INSERT",
            None,
            pending.metric_type(),
        )?)?;
        Ok(())
    }
}
