//! The topic model: projects, their logstores, and how a Kafka topic name maps to one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use loggate_storage::StreamId;
use sha2::{Digest, Sha256};

use std::time::Duration;

use tokio::sync::Mutex;

use super::convert::{JsonOptions, TimeFallback};
use super::producers::{PartitionProducers, ProducerTurns};
use crate::config::{Limits, ProjectConfig, Routing};

/// Suffix that asks for each record value to be parsed as JSON.
pub const JSON_SUFFIX: &str = ".json";

/// One logstore, as configured, plus its round-robin position.
#[derive(Debug)]
pub struct Logstore {
    pub project: String,
    pub name: String,
    pub shards: u32,
    pub routing: Routing,
    /// Stable non-zero id of the raw topic `L` for Metadata v10+ (derived from the
    /// names); also what places the logstore's shard leaders in a cluster, for both topics.
    pub topic_id: [u8; 16],
    /// Stable non-zero id of the JSON topic `L.json`, distinct from `topic_id`.
    pub json_topic_id: [u8; 16],
    /// The storage stream this logstore writes to.
    pub stream: StreamId,
    /// How its `.json` topic's values become logs (event time, flattening).
    pub json: JsonOptions,
    /// Idempotent producer state per topic name and partition, as the client numbers its
    /// sequences: `L` and `L.json` are two topics to a client, and the partition is the
    /// one it chose (which differs from the shard under round-robin routing). See
    /// [`Logstore::producers`].
    /// Shared with the logstore's next version when a reload changes only its options.
    producers: Arc<Vec<Mutex<PartitionProducers>>>,
    /// Whose turn it is to write, per producer, in each of `producers`' partitions (shared
    /// with the next version like `producers`, so a producer's batches stay one at a time
    /// across a reload).
    turns: Arc<Vec<ProducerTurns>>,
    /// What has been written to the logstore since start (exported as metrics).
    pub counters: Arc<LogstoreCounters>,
    next_shard: Arc<AtomicU32>,
}

/// Totals of one logstore since start, counted once per write (not per record).
#[derive(Debug, Default)]
pub struct LogstoreCounters {
    logs: AtomicU64,
    value_bytes: AtomicU64,
    json_fallbacks: AtomicU64,
    event_time_fallbacks: [AtomicU64; TimeFallback::ALL.len()],
}

impl LogstoreCounters {
    /// Counts one write of `logs` logs from `value_bytes` bytes of record values,
    /// `json_fallbacks` of them stored raw because they were not JSON objects.
    pub fn add(&self, logs: u64, value_bytes: u64, json_fallbacks: u64) {
        self.logs.fetch_add(logs, Ordering::Relaxed);
        self.value_bytes.fetch_add(value_bytes, Ordering::Relaxed);
        if json_fallbacks > 0 {
            self.json_fallbacks.fetch_add(json_fallbacks, Ordering::Relaxed);
        }
    }
    /// Logs stored.
    pub fn logs(&self) -> u64 {
        self.logs.load(Ordering::Relaxed)
    }
    /// Bytes of the record values stored (uncompressed).
    pub fn value_bytes(&self) -> u64 {
        self.value_bytes.load(Ordering::Relaxed)
    }
    /// Records of a `.json` topic stored raw.
    pub fn json_fallbacks(&self) -> u64 {
        self.json_fallbacks.load(Ordering::Relaxed)
    }
    /// Counts logs that got the record timestamp although a time field is configured, by
    /// [`TimeFallback`] index.
    pub fn add_event_time_fallbacks(&self, fallbacks: &[u64; TimeFallback::ALL.len()]) {
        for (total, &n) in self.event_time_fallbacks.iter().zip(fallbacks) {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
    /// Logs of a `.json` topic that got the record timestamp for `why`.
    pub fn event_time_fallbacks(&self, why: TimeFallback) -> u64 {
        self.event_time_fallbacks[why as usize].load(Ordering::Relaxed)
    }
}

impl Logstore {
    /// The idempotent producer state of topic `format` (`L` or `L.json`), `partition`.
    pub fn producers(&self, format: ValueFormat, partition: i32) -> Option<&Mutex<PartitionProducers>> {
        self.producers.get(self.lane_index(format, partition)?)
    }

    /// The producers' turns to write on topic `format`, `partition` (see [`ProducerTurns`]).
    pub fn producer_turns(&self, format: ValueFormat, partition: i32) -> Option<&ProducerTurns> {
        self.turns.get(self.lane_index(format, partition)?)
    }

    fn lane_index(&self, format: ValueFormat, partition: i32) -> Option<usize> {
        let partition = u32::try_from(partition).ok().filter(|p| *p < self.shards)?;
        Some((u32::from(format.code()) * self.shards + partition) as usize)
    }

    /// The shard a batch sent to `partition` is stored in, or None if the partition
    /// does not exist.
    pub fn route(&self, partition: i32) -> Option<u32> {
        let partition = u32::try_from(partition).ok().filter(|p| *p < self.shards)?;
        Some(match self.routing {
            Routing::Partition => partition,
            Routing::RoundRobin => self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards,
        })
    }
}

/// How a topic's record values become log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// The value is stored whole in the field `content`.
    Raw,
    /// The value is parsed as JSON (topic name ends in `.json`).
    Json,
}

impl ValueFormat {
    /// The format's number where one is stored: 0 for `L`, 1 for `L.json`.
    pub fn code(self) -> u8 {
        match self {
            ValueFormat::Raw => 0,
            ValueFormat::Json => 1,
        }
    }

    /// The format of a [`code`](Self::code), if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ValueFormat::Raw),
            1 => Some(ValueFormat::Json),
            _ => None,
        }
    }
}

/// A topic resolved to its logstore.
#[derive(Debug, Clone)]
pub struct Topic {
    pub logstore: Arc<Logstore>,
    pub format: ValueFormat,
}

/// All projects and logstores. A catalog is read-only; a configuration reload builds a
/// new one ([`Catalog::rebuild`]) that keeps the unchanged logstores, with their producer
/// state and counters.
#[derive(Debug, Default)]
pub struct Catalog {
    projects: HashMap<String, HashMap<String, Arc<Logstore>>>,
}

impl Catalog {
    /// Builds the catalog from configuration (validated already).
    pub fn from_config(projects: &[ProjectConfig], limits: &Limits) -> Self {
        Catalog::default().rebuild(projects, limits)
    }

    /// The catalog of a new configuration: a logstore whose shards and routing did not
    /// change keeps this catalog's idempotent producer state, counters and round-robin
    /// position (it is this catalog's own if its `.json` options did not change either);
    /// others are new.
    pub fn rebuild(&self, projects: &[ProjectConfig], limits: &Limits) -> Self {
        let expiry = Duration::from_secs(limits.producer_expiry_secs);
        let projects = projects
            .iter()
            .map(|p| {
                let stores = p
                    .logstores
                    .iter()
                    .map(|l| {
                        let json = JsonOptions::from_config(l);
                        let kept = self
                            .projects
                            .get(&p.name)
                            .and_then(|stores| stores.get(&l.name))
                            .filter(|old| old.shards == l.shards && old.routing == l.routing);
                        if let Some(old) = kept {
                            if old.json == json {
                                return (l.name.clone(), old.clone());
                            }
                            let store = Logstore {
                                project: old.project.clone(),
                                name: old.name.clone(),
                                shards: old.shards,
                                routing: old.routing,
                                topic_id: old.topic_id,
                                json_topic_id: old.json_topic_id,
                                stream: old.stream.clone(),
                                json,
                                producers: old.producers.clone(),
                                turns: old.turns.clone(),
                                counters: old.counters.clone(),
                                next_shard: old.next_shard.clone(),
                            };
                            return (l.name.clone(), Arc::new(store));
                        }
                        let store = Logstore {
                            project: p.name.clone(),
                            name: l.name.clone(),
                            shards: l.shards,
                            routing: l.routing,
                            topic_id: topic_id(&p.name, &l.name, ValueFormat::Raw),
                            json_topic_id: topic_id(&p.name, &l.name, ValueFormat::Json),
                            stream: StreamId { project: p.name.clone(), logstore: l.name.clone() },
                            json,
                            producers: Arc::new(
                                (0..2 * l.shards)
                                    .map(|_| Mutex::new(PartitionProducers::new(limits.max_producers_per_partition, expiry)))
                                    .collect(),
                            ),
                            turns: Arc::new((0..2 * l.shards).map(|_| ProducerTurns::default()).collect()),
                            counters: Arc::default(),
                            next_shard: Arc::default(),
                        };
                        (l.name.clone(), Arc::new(store))
                    })
                    .collect();
                (p.name.clone(), stores)
            })
            .collect();
        Self { projects }
    }

    /// Whether a project of that name exists.
    pub fn has_project(&self, project: &str) -> bool {
        self.projects.contains_key(project)
    }

    /// Resolves a topic name (`logstore` or `logstore.json`) within a project.
    pub fn topic(&self, project: &str, topic: &str) -> Option<Topic> {
        let stores = self.projects.get(project)?;
        if let Some(store) = stores.get(topic) {
            return Some(Topic { logstore: store.clone(), format: ValueFormat::Raw });
        }
        let base = topic.strip_suffix(JSON_SUFFIX)?;
        let store = stores.get(base)?;
        Some(Topic { logstore: store.clone(), format: ValueFormat::Json })
    }

    /// Resolves a Metadata v10+ topic id within a project: the topic's name and what it
    /// resolves to. Scans the project's logstores (bounded by configuration).
    pub fn topic_by_id(&self, project: &str, id: &[u8; 16]) -> Option<(String, Topic)> {
        let stores = self.projects.get(project)?;
        stores.values().find_map(|store| {
            let format = if store.topic_id == *id {
                ValueFormat::Raw
            } else if store.json_topic_id == *id {
                ValueFormat::Json
            } else {
                return None;
            };
            let name = match format {
                ValueFormat::Raw => store.name.clone(),
                ValueFormat::Json => format!("{}{JSON_SUFFIX}", store.name),
            };
            Some((name, Topic { logstore: store.clone(), format }))
        })
    }

    /// Every logstore of every project.
    pub fn all_logstores(&self) -> impl Iterator<Item = &Arc<Logstore>> {
        self.projects.values().flat_map(|stores| stores.values())
    }

    /// The logstores of a project, sorted by name.
    pub fn logstores(&self, project: &str) -> Vec<Arc<Logstore>> {
        let mut list: Vec<_> = self.projects.get(project).map(|s| s.values().cloned().collect()).unwrap_or_default();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

/// A stable, non-zero 16-byte id for a logstore's topic in `format`: the first 16 bytes
/// of SHA-256 over the project and logstore names (NUL-separated; names hold no NUL), and
/// for the JSON topic a further NUL and the format code. The raw topic's id is the one
/// earlier releases gave both topics, so it (and the cluster leader placement built on it)
/// does not change.
fn topic_id(project: &str, logstore: &str, format: ValueFormat) -> [u8; 16] {
    let mut hash = Sha256::new().chain_update(project).chain_update([0u8]).chain_update(logstore);
    if format != ValueFormat::Raw {
        hash.update([0u8, format.code()]);
    }
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    if id == [0u8; 16] {
        id[15] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogstoreConfig;

    /// A logstore of one shard and no options.
    fn store(name: &str) -> LogstoreConfig {
        toml::from_str(&format!("name = {name:?}")).unwrap()
    }

    fn catalog(routing: Routing) -> Catalog {
        Catalog::from_config(&[ProjectConfig {
            name: "demo".into(),
            storage: None,
            logstores: vec![LogstoreConfig { shards: 3, routing, ..store("app") }],
            quota_bytes_per_sec: None,
            quota_requests_per_sec: None,
        }], &Limits::default())
    }

    #[test]
    fn topics_resolve_with_and_without_json_suffix() {
        let c = catalog(Routing::RoundRobin);
        assert_eq!(c.topic("demo", "app").unwrap().format, ValueFormat::Raw);
        assert_eq!(c.topic("demo", "app.json").unwrap().format, ValueFormat::Json);
        assert!(c.topic("demo", "nope").is_none());
        assert!(c.topic("other", "app").is_none());
        assert_eq!(c.topic("demo", "app").unwrap().logstore.topic_id, topic_id("demo", "app", ValueFormat::Raw));
    }

    #[test]
    fn topic_ids_are_stable_distinct_per_format_and_resolve_back() {
        let raw = topic_id("demo", "app", ValueFormat::Raw);
        let json = topic_id("demo", "app", ValueFormat::Json);
        assert_ne!(raw, json);
        assert_ne!(raw, [0u8; 16]);
        assert_ne!(json, [0u8; 16]);
        // Derived from the names only: the same on every build, node and restart.
        assert_eq!(raw, topic_id("demo", "app", ValueFormat::Raw));
        assert_ne!(raw, topic_id("demo", "ap", ValueFormat::Raw));
        assert_ne!(raw, topic_id("other", "app", ValueFormat::Raw));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(topic_id("ab", "c", ValueFormat::Raw), topic_id("a", "bc", ValueFormat::Raw));
        // The raw id is SHA-256("demo\0app")[..16], as earlier releases gave it.
        let digest = Sha256::digest(b"demo\0app");
        assert_eq!(raw[..], digest[..16]);
        let c = catalog(Routing::RoundRobin);
        let store = c.topic("demo", "app").unwrap().logstore;
        assert_eq!((store.topic_id, store.json_topic_id), (raw, json));
        let (name, topic) = c.topic_by_id("demo", &json).unwrap();
        assert_eq!((name.as_str(), topic.format), ("app.json", ValueFormat::Json));
        let (name, topic) = c.topic_by_id("demo", &raw).unwrap();
        assert_eq!((name.as_str(), topic.format), ("app", ValueFormat::Raw));
        assert!(c.topic_by_id("other", &raw).is_none());
        assert!(c.topic_by_id("demo", &[0u8; 16]).is_none());
    }

    #[test]
    fn round_robin_spreads_and_partition_routing_pins() {
        let rr = catalog(Routing::RoundRobin).topic("demo", "app").unwrap().logstore;
        let shards: Vec<_> = (0..6).map(|_| rr.route(0).unwrap()).collect();
        assert_eq!(shards, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.route(3), None);
        assert_eq!(rr.route(-1), None);
        let pinned = catalog(Routing::Partition).topic("demo", "app").unwrap().logstore;
        assert_eq!((pinned.route(2), pinned.route(2)), (Some(2), Some(2)));
    }

    #[test]
    fn a_rebuild_keeps_unchanged_logstores_and_replaces_changed_ones() {
        let store = |name: &str, shards| LogstoreConfig { shards, routing: Routing::RoundRobin, ..store(name) };
        let project = |stores| ProjectConfig {
            name: "demo".into(),
            storage: None,
            logstores: stores,
            quota_bytes_per_sec: None,
            quota_requests_per_sec: None,
        };
        let old = Catalog::from_config(&[project(vec![store("app", 2), store("web", 1)])], &Limits::default());
        let new = old.rebuild(&[project(vec![store("app", 2), store("web", 3), store("db", 1)])], &Limits::default());
        let same = |a: &Catalog, b: &Catalog, name| {
            Arc::ptr_eq(&a.topic("demo", name).unwrap().logstore, &b.topic("demo", name).unwrap().logstore)
        };
        assert!(same(&old, &new, "app"));
        assert!(!same(&old, &new, "web"));
        assert_eq!(new.topic("demo", "web").unwrap().logstore.shards, 3);
        assert!(new.topic("demo", "db").is_some());
        let gone = new.rebuild(&[project(vec![store("db", 1)])], &Limits::default());
        assert!(gone.topic("demo", "app").is_none());
        assert!(same(&new, &gone, "db"));
    }

    #[test]
    fn a_rebuild_applies_changed_json_options_keeping_producer_state_and_counters() {
        let project = |store| ProjectConfig {
            name: "demo".into(),
            storage: None,
            logstores: vec![store],
            quota_bytes_per_sec: None,
            quota_requests_per_sec: None,
        };
        let plain = store("app");
        let timed = LogstoreConfig { time_field: Some("ts".into()), flatten_depth: 2, ..store("app") };
        let old = Catalog::from_config(&[project(plain.clone())], &Limits::default());
        let old_store = old.topic("demo", "app").unwrap().logstore;
        assert_eq!(old_store.json, JsonOptions::NONE);
        old_store.counters.add(3, 10, 0);
        let new = old.rebuild(&[project(timed.clone())], &Limits::default());
        let new_store = new.topic("demo", "app.json").unwrap().logstore;
        assert!(!Arc::ptr_eq(&old_store, &new_store));
        assert_eq!(new_store.json, JsonOptions::from_config(&timed));
        assert_eq!(new_store.json.flatten_depth, 2);
        assert!(Arc::ptr_eq(&old_store.counters, &new_store.counters));
        assert!(Arc::ptr_eq(&old_store.producers, &new_store.producers));
        assert_eq!(new_store.counters.logs(), 3);
        // The same options again: the same logstore.
        let again = new.rebuild(&[project(timed)], &Limits::default());
        assert!(Arc::ptr_eq(&new_store, &again.topic("demo", "app").unwrap().logstore));
        let back = again.rebuild(&[project(plain)], &Limits::default());
        assert_eq!(back.topic("demo", "app").unwrap().logstore.json, JsonOptions::NONE);
    }

    #[test]
    fn raw_and_json_topics_have_their_own_producer_state() {
        let store = catalog(Routing::RoundRobin).topic("demo", "app").unwrap().logstore;
        let raw = store.producers(ValueFormat::Raw, 2).unwrap() as *const _;
        let json = store.producers(ValueFormat::Json, 2).unwrap() as *const _;
        assert_ne!(raw, json);
        assert_ne!(raw, store.producers(ValueFormat::Raw, 1).unwrap() as *const _);
        assert!(store.producers(ValueFormat::Json, 3).is_none());
        assert!(store.producers(ValueFormat::Raw, -1).is_none());
    }
}
