//! Produce quotas: bytes (and requests) per second per project and per access key, and the
//! throttle time a principal over its quota is slowed by.
//!
//! Each quota is metered with a token bucket, as Kafka meters its controller mutation
//! quota (KIP-599): the bucket holds up to `quota_burst_secs` seconds' worth of the quota
//! and refills at the quota; every Produce request takes its size (or 1, for a request
//! quota) from it, throttled or not, and a request that leaves it in debt is throttled for
//! the time the refill takes to pay the debt back, i.e. `debt / quota`. So a producer idle
//! for a while may send a burst at once, and one that sends again as soon as its throttle
//! has passed gets its quota exactly (Kafka's sampled rate of client quotas swings by a
//! third around it as its samples age out). A debt deeper than `max_throttle_ms` worth is
//! forgiven, so the throttle time never exceeds that cap and an earlier flood is not
//! paid for long after.
//!
//! Memory is one entry per configured project or key with a quota, never per name a peer
//! sends. [`Quotas::update`] swaps in a new configuration (on reload); the buckets of
//! projects and keys that keep a quota carry over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::Config;

use super::auth::Principal;

/// The limits of one project or access key; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limit {
    pub bytes_per_sec: Option<f64>,
    pub requests_per_sec: Option<f64>,
}

impl Limit {
    fn is_set(&self) -> bool {
        self.bytes_per_sec.is_some() || self.requests_per_sec.is_some()
    }
}

/// How a bucket fills and how deep it may go (pure data, shared by every bucket of a
/// configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Seconds of the quota a full bucket holds.
    pub burst_secs: f64,
    /// Longest throttle (ms): the deepest debt is this long's refill.
    pub max_throttle_ms: u64,
}

/// A token bucket (pure: time is passed in, as milliseconds since any fixed point).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// What may still be taken; negative is a debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at_ms: u64,
}

impl Bucket {
    /// A full bucket for `rate` per second at `now_ms`.
    pub fn full(rate: f64, shape: Shape, now_ms: u64) -> Self {
        Self { tokens: rate * shape.burst_secs, at_ms: now_ms }
    }

    /// Takes `amount` at `now_ms` from a bucket refilling at `rate` per second; returns the
    /// throttle time (ms): zero unless that leaves it in debt, else the time the refill
    /// takes to pay the debt.
    pub fn take(&mut self, amount: f64, rate: f64, shape: Shape, now_ms: u64) -> u64 {
        if !(rate.is_finite() && rate > 0.0) {
            return 0;
        }
        // Calls may come in slightly out of time order from different threads.
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        let capacity = rate * shape.burst_secs;
        let deepest = -rate * shape.max_throttle_ms as f64 / 1000.0;
        self.tokens = ((self.tokens + rate * elapsed as f64 / 1000.0).min(capacity) - amount).max(deepest);
        if self.tokens >= 0.0 {
            return 0;
        }
        let ms = (-self.tokens * 1000.0 / rate).round();
        (ms as u64).min(shape.max_throttle_ms)
    }

    /// Keeps what is left for a new rate and shape: no more than the new capacity, no
    /// deeper than the new cap.
    fn refit(self, rate: f64, shape: Shape) -> Self {
        let tokens = self.tokens.min(rate * shape.burst_secs).max(-rate * shape.max_throttle_ms as f64 / 1000.0);
        Self { tokens, at_ms: self.at_ms }
    }
}

/// The buckets of one project or access key.
#[derive(Debug)]
struct Meter {
    limit: Limit,
    bytes: Bucket,
    requests: Bucket,
}

impl Meter {
    /// Full buckets for `limit`, or what `old` had left, refitted.
    fn new(limit: Limit, shape: Shape, old: Option<&Meter>, now_ms: u64) -> Self {
        let bucket = |rate: Option<f64>, old: Option<Bucket>| {
            let rate = rate.unwrap_or(0.0);
            old.map_or_else(|| Bucket::full(rate, shape, now_ms), |b| b.refit(rate, shape))
        };
        let old_bytes = old.filter(|m| m.limit.bytes_per_sec.is_some()).map(|m| m.bytes);
        let old_requests = old.filter(|m| m.limit.requests_per_sec.is_some()).map(|m| m.requests);
        Self {
            limit,
            bytes: bucket(limit.bytes_per_sec, old_bytes),
            requests: bucket(limit.requests_per_sec, old_requests),
        }
    }

    /// Takes one request of `bytes`; returns its throttle time (ms).
    fn take(&mut self, bytes: u64, shape: Shape, now_ms: u64) -> u64 {
        let mut throttle = 0;
        if let Some(rate) = self.limit.bytes_per_sec {
            throttle = throttle.max(self.bytes.take(bytes as f64, rate, shape, now_ms));
        }
        if let Some(rate) = self.limit.requests_per_sec {
            throttle = throttle.max(self.requests.take(1.0, rate, shape, now_ms));
        }
        throttle
    }
}

type Meters = HashMap<String, Mutex<Meter>>;

/// The quotas of one configuration.
#[derive(Debug)]
struct QuotaSet {
    projects: Meters,
    keys: Meters,
    shape: Shape,
}

impl QuotaSet {
    /// The quotas of `config` at `now_ms`, keeping what the buckets of `old` have left for
    /// the same names.
    fn build(config: &Config, old: Option<&QuotaSet>, now_ms: u64) -> Self {
        let shape = Shape {
            burst_secs: config.limits.quota_burst_secs as f64,
            max_throttle_ms: config.limits.max_throttle_ms,
        };
        let meter = |old: Option<&Meters>, name: &str, limit: Limit| {
            let old = old.and_then(|m| m.get(name)).map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
            Mutex::new(Meter::new(limit, shape, old.as_deref(), now_ms))
        };
        let mut projects = HashMap::new();
        for p in &config.projects {
            let limit = Limit { bytes_per_sec: p.quota_bytes_per_sec.map(|b| b as f64), requests_per_sec: p.quota_requests_per_sec };
            if limit.is_set() {
                projects.insert(p.name.clone(), meter(old.map(|o| &o.projects), &p.name, limit));
            }
        }
        let mut keys = HashMap::new();
        for k in &config.access_keys {
            let limit = Limit { bytes_per_sec: k.quota_bytes_per_sec.map(|b| b as f64), requests_per_sec: k.quota_requests_per_sec };
            if limit.is_set() {
                keys.insert(k.id.clone(), meter(old.map(|o| &o.keys), &k.id, limit));
            }
        }
        Self { projects, keys, shape }
    }

    /// Takes a request from the principal's project's and key's buckets; the throttle time
    /// is the larger of theirs (the stricter quota wins).
    fn take(&self, principal: &Principal, bytes: u64, now_ms: u64) -> u64 {
        let project = self.projects.get(&principal.project);
        let key = principal.key_id.as_ref().and_then(|k| self.keys.get(k));
        let mut throttle = 0;
        for meter in project.into_iter().chain(key) {
            // A poisoned lock (a panic elsewhere while it was held) leaves the meter usable.
            let mut meter = meter.lock().unwrap_or_else(|e| e.into_inner());
            throttle = throttle.max(meter.take(bytes, self.shape, now_ms));
        }
        throttle
    }
}

/// The produce quotas of the running configuration, shared by every connection.
///
/// Built once from the configuration at start; on a reload, call [`Quotas::update`] with
/// the new (validated) configuration: the next Produce requests are metered by it.
#[derive(Debug)]
pub struct Quotas {
    set: RwLock<Arc<QuotaSet>>,
    /// Time zero of the buckets.
    epoch: Instant,
}

impl Quotas {
    /// The quotas of `config`.
    pub fn new(config: &Config) -> Self {
        Self { set: RwLock::new(Arc::new(QuotaSet::build(config, None, 0))), epoch: Instant::now() }
    }

    /// Switches to the quotas of a new configuration (reload). Projects and keys that keep
    /// a quota keep what their buckets hold (no more than the new burst, no deeper than
    /// the new cap); others start with a full bucket. Requests already throttled keep
    /// their delay.
    pub fn update(&self, config: &Config) {
        self.update_at(config, self.now_ms());
    }

    /// [`Quotas::update`] at a given time (ms since the buckets' time zero).
    pub fn update_at(&self, config: &Config, now_ms: u64) {
        // Held for writing while the new set is built, so no request is metered by the old
        // set after its buckets were copied.
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        *set = Arc::new(QuotaSet::build(config, Some(&set), now_ms));
    }

    fn current(&self) -> Arc<QuotaSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes one Produce request of `bytes` by `principal` from its quotas now; returns how
    /// long to throttle it (zero when within its quotas or it has none).
    pub fn record(&self, principal: &Principal, bytes: u64) -> Duration {
        self.record_at(principal, bytes, self.now_ms())
    }

    /// [`Quotas::record`] at a given time (ms since the buckets' time zero).
    pub fn record_at(&self, principal: &Principal, bytes: u64, now_ms: u64) -> Duration {
        let set = self.current();
        if set.projects.is_empty() && set.keys.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_millis(set.take(principal, bytes, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(project: &str, key: Option<&str>) -> Principal {
        Principal { project: project.into(), key_id: key.map(Into::into), credential: None }
    }

    fn config(text: &str) -> Config {
        let mut c: Config = toml::from_str(text).unwrap();
        c.apply_defaults();
        c
    }

    const KEY_HASH: &str = "sha256:00:0000000000000000000000000000000000000000000000000000000000000000";
    const SHAPE: Shape = Shape { burst_secs: 10.0, max_throttle_ms: 5000 };

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_throttles_for_the_debt() {
        let mut b = Bucket::full(1000.0, SHAPE, 0);
        // Ten seconds' worth at once.
        assert_eq!(b.take(10_000.0, 1000.0, SHAPE, 0), 0);
        // 2500 more: a debt of 2.5 s.
        assert_eq!(b.take(2500.0, 1000.0, SHAPE, 0), 2500);
        // After those 2.5 s the debt is paid: 500 bytes more take 0.5 s.
        assert_eq!(b.take(500.0, 1000.0, SHAPE, 2500), 500);
        // Idle for a minute: full again, but never fuller than the burst.
        assert_eq!(b.take(10_000.0, 1000.0, SHAPE, 62_500), 0);
        assert_eq!(b.take(1.0, 1000.0, SHAPE, 62_500), 1);
    }

    #[test]
    fn debts_beyond_the_cap_are_forgiven() {
        let mut b = Bucket::full(1000.0, SHAPE, 0);
        assert_eq!(b.take(1e12, 1000.0, SHAPE, 0), 5000);
        // Once the capped throttle time has passed, the producer is even.
        assert_eq!(b.take(0.0, 1000.0, SHAPE, 5000), 0);
        // Out-of-order times do not refill.
        assert_eq!(b.take(1000.0, 1000.0, SHAPE, 4000), 1000);
        // No rate, no throttle.
        assert_eq!(b.take(1e12, 0.0, SHAPE, 6000), 0);
    }

    #[test]
    fn a_producer_sending_as_soon_as_allowed_gets_its_quota() {
        // A client that sends 10 KB the moment its previous request's throttle has passed,
        // against 2000 B/s: after its burst it sends 2000 B/s.
        let (quota, shape) = (2000.0, Shape { burst_secs: 3.0, max_throttle_ms: 10_000 });
        let mut b = Bucket::full(quota, shape, 0);
        let (mut now, mut sent, mut steady) = (0u64, 0.0, None);
        while now < 100_000 {
            if now >= 10_000 && steady.is_none() {
                steady = Some((now, sent));
            }
            sent += 10_000.0;
            now += b.take(10_000.0, quota, shape, now).max(1);
        }
        let (t0, s0) = steady.unwrap();
        let rate = (sent - s0) * 1000.0 / (now - t0) as f64;
        assert!((rate / quota - 1.0).abs() < 0.01, "converged to {rate}");
    }

    #[test]
    fn the_stricter_of_project_and_key_wins_and_the_cap_applies() {
        let c = config(&format!(
            "[limits]\nquota_burst_secs = 10\nmax_throttle_ms = 4000\n\
             [[projects]]\nname = \"p\"\nquota_bytes_per_sec = 1000\n\
             [[projects]]\nname = \"free\"\n\
             [[access_keys]]\nid = \"k\"\nsecret_hash = \"{KEY_HASH}\"\nallow = [\"*\"]\nquota_bytes_per_sec = 100\n\
             [[access_keys]]\nid = \"open\"\nsecret_hash = \"{KEY_HASH}\"\nallow = [\"*\"]\n"
        ));
        let q = Quotas::new(&c);
        // 2000 bytes: within p's 10 s burst of 10000, 1000 over k's of 1000: 10 s at
        // 100 B/s, capped at 4 s.
        assert_eq!(q.record_at(&principal("p", Some("k")), 2000, 0), Duration::from_millis(4000));
        // The project alone: 8000 left, so 9000 more is 1 s over.
        assert_eq!(q.record_at(&principal("p", Some("open")), 0, 0), Duration::ZERO);
        assert_eq!(q.record_at(&principal("p", None), 9000, 0), Duration::from_millis(1000));
        // No quota: never throttled; unknown names make no entries.
        assert_eq!(q.record_at(&principal("free", Some("open")), 1 << 40, 0), Duration::ZERO);
        assert_eq!(q.record_at(&principal("nobody", Some("nokey")), 1 << 40, 0), Duration::ZERO);
        assert_eq!((q.current().projects.len(), q.current().keys.len()), (1, 1));
    }

    #[test]
    fn requests_per_second() {
        let c = config("[limits]\nquota_burst_secs = 10\n[[projects]]\nname = \"p\"\nquota_requests_per_sec = 2.0\n");
        let q = Quotas::new(&c);
        let p = principal("p", None);
        // A burst of 20 requests, whatever their size; the 21st waits half a second.
        for _ in 0..20 {
            assert_eq!(q.record_at(&p, 1 << 30, 0), Duration::ZERO);
        }
        assert_eq!(q.record_at(&p, 0, 0), Duration::from_millis(500));
        assert_eq!(q.record_at(&p, 0, 500), Duration::from_millis(500));
    }

    #[test]
    fn an_update_keeps_what_the_buckets_hold_for_names_that_keep_a_quota() {
        let q = Quotas::new(&config(
            "[limits]\nquota_burst_secs = 10\n\
             [[projects]]\nname = \"p\"\nquota_bytes_per_sec = 1000\n[[projects]]\nname = \"r\"\nquota_bytes_per_sec = 1000\n",
        ));
        let (p, r) = (principal("p", None), principal("r", None));
        assert_eq!(q.record_at(&p, 10_000, 0), Duration::ZERO);
        assert_eq!(q.record_at(&r, 10_000, 0), Duration::ZERO);
        // p's quota halves: its bucket is still empty, 1000 bytes now take 2 s; r loses its
        // quota.
        q.update_at(&config("[limits]\nquota_burst_secs = 10\n[[projects]]\nname = \"p\"\nquota_bytes_per_sec = 500\n[[projects]]\nname = \"r\"\n"), 0);
        assert_eq!(q.record_at(&p, 1000, 0), Duration::from_millis(2000));
        assert_eq!(q.record_at(&r, 1 << 40, 0), Duration::ZERO);
        // r gets a quota again: it starts with a full bucket.
        q.update_at(&config("[limits]\nquota_burst_secs = 10\n[[projects]]\nname = \"r\"\nquota_bytes_per_sec = 500\n"), 0);
        assert_eq!(q.record_at(&r, 5000, 0), Duration::ZERO);
        assert_eq!(q.record_at(&r, 500, 0), Duration::from_millis(1000));
        assert_eq!(q.record_at(&p, 1 << 40, 0), Duration::ZERO);
    }
}
