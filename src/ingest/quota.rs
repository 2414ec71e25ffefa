//! Produce quotas: bytes (and requests) per second per project and per access key, and the
//! throttle time a principal over its quota is slowed by.
//!
//! The measure follows Kafka's client quotas: what a principal sends is recorded in
//! samples of one second each, the rate is the total over the last `window + 1` samples
//! divided by the time they cover (at least `window` seconds, so a principal idle until
//! now may send up to `window` seconds' worth at once), and a principal whose rate is
//! above its quota is throttled for `(rate - quota) / quota * covered time` (the time after
//! which its rate over the window would be back at the quota, had it sent nothing more),
//! capped at `max_throttle_ms`. Everything is recorded, throttled or not: a throttled
//! request is still served, only later.
//!
//! Memory is one entry per configured project or key with a quota, never per name a peer
//! sends. [`Quotas::update`] swaps in a new configuration (on reload); the measured rates
//! of projects and keys that keep a quota carry over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::Config;

use super::auth::Principal;

/// Length of one sample (Kafka's `quota.window.size.seconds` is 1).
const SAMPLE_MS: u64 = 1000;

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

/// A rate measured over a ring of one-second samples (pure: time is passed in, as
/// milliseconds since any fixed point).
#[derive(Debug, Clone)]
pub struct Rate {
    /// `(sample start in ms, total recorded in it)`; a sample whose start is more than
    /// the ring's span ago counts for nothing.
    samples: Vec<(u64, f64)>,
}

impl Rate {
    /// A rate over `window` seconds: `window + 1` samples (the current one is partial).
    pub fn new(window_secs: u32) -> Self {
        let n = window_secs.max(1) as usize + 1;
        Self { samples: vec![(u64::MAX, 0.0); n] }
    }

    fn span_ms(&self) -> u64 {
        self.samples.len() as u64 * SAMPLE_MS
    }

    fn is_live(&self, start: u64, now_ms: u64) -> bool {
        start != u64::MAX && now_ms.saturating_sub(start) < self.span_ms()
    }

    /// Adds `value` at `now_ms`.
    pub fn record(&mut self, value: f64, now_ms: u64) {
        let second = now_ms / SAMPLE_MS;
        let n = self.samples.len() as u64;
        let start = second * SAMPLE_MS;
        let slot = &mut self.samples[(second % n) as usize];
        if slot.0 != start {
            *slot = (start, 0.0);
        }
        slot.1 += value;
    }

    /// The total recorded at `now_ms` in the samples still in the window, and the time
    /// (ms) it is measured over; the rate per second is their quotient times 1000.
    pub fn measure(&self, now_ms: u64) -> (f64, u64) {
        let mut total = 0.0;
        let mut oldest = now_ms;
        for &(start, value) in &self.samples {
            if self.is_live(start, now_ms) {
                total += value;
                oldest = oldest.min(start);
            }
        }
        // At least the whole window but the current sample, as Kafka's Rate does, so the
        // first requests after a quiet time are not measured over a few milliseconds.
        let floor = self.span_ms() - SAMPLE_MS;
        (total, now_ms.saturating_sub(oldest).max(floor).max(1))
    }

    /// The rate per second at `now_ms`.
    pub fn rate(&self, now_ms: u64) -> f64 {
        let (total, covered) = self.measure(now_ms);
        total * 1000.0 / covered as f64
    }

    /// How long (ms) to throttle at `now_ms` for a quota of `quota` per second: zero while
    /// the rate is within it, else `(rate - quota) / quota * covered`, which is how long
    /// until the total would be `quota` per second of the time covered.
    pub fn throttle_ms(&self, quota: f64, now_ms: u64) -> u64 {
        if quota <= 0.0 || !quota.is_finite() {
            return 0;
        }
        let (total, covered) = self.measure(now_ms);
        let ms = (total * 1000.0 / quota - covered as f64).round();
        if ms <= 0.0 {
            0
        } else if ms >= u64::MAX as f64 {
            u64::MAX
        } else {
            ms as u64
        }
    }
}

/// What one project or access key has sent, against its limit.
#[derive(Debug)]
struct Meter {
    limit: Limit,
    bytes: Rate,
    requests: Rate,
}

impl Meter {
    fn new(limit: Limit, window_secs: u32) -> Self {
        Self { limit, bytes: Rate::new(window_secs), requests: Rate::new(window_secs) }
    }

    /// Records one request of `bytes` and returns its throttle time (ms, uncapped).
    fn record(&mut self, bytes: u64, now_ms: u64) -> u64 {
        let mut throttle = 0;
        if let Some(q) = self.limit.bytes_per_sec {
            self.bytes.record(bytes as f64, now_ms);
            throttle = throttle.max(self.bytes.throttle_ms(q, now_ms));
        }
        if let Some(q) = self.limit.requests_per_sec {
            self.requests.record(1.0, now_ms);
            throttle = throttle.max(self.requests.throttle_ms(q, now_ms));
        }
        throttle
    }
}

/// The quotas of one configuration.
#[derive(Debug, Default)]
struct QuotaSet {
    projects: HashMap<String, Arc<Mutex<Meter>>>,
    keys: HashMap<String, Arc<Mutex<Meter>>>,
    window_secs: u32,
    max_throttle_ms: u64,
}

impl QuotaSet {
    /// The quotas of `config`, keeping the measured rates `old` has for the same names
    /// (with the same window).
    fn build(config: &Config, old: Option<&QuotaSet>) -> Self {
        let window_secs = u32::try_from(config.limits.quota_window_secs).unwrap_or(u32::MAX).max(1);
        let keep = |old: Option<&HashMap<String, Arc<Mutex<Meter>>>>, name: &str, limit: Limit| {
            let previous = old.and_then(|m| m.get(name)).and_then(|m| m.lock().ok().map(|m| (m.bytes.clone(), m.requests.clone())));
            let mut meter = Meter::new(limit, window_secs);
            if let Some((bytes, requests)) = previous.filter(|(b, _)| b.samples.len() == meter.bytes.samples.len()) {
                meter.bytes = bytes;
                meter.requests = requests;
            }
            Arc::new(Mutex::new(meter))
        };
        let mut projects = HashMap::new();
        for p in &config.projects {
            let limit = Limit { bytes_per_sec: p.quota_bytes_per_sec.map(|b| b as f64), requests_per_sec: p.quota_requests_per_sec };
            if limit.is_set() {
                projects.insert(p.name.clone(), keep(old.map(|o| &o.projects), &p.name, limit));
            }
        }
        let mut keys = HashMap::new();
        for k in &config.access_keys {
            let limit = Limit { bytes_per_sec: k.quota_bytes_per_sec.map(|b| b as f64), requests_per_sec: k.quota_requests_per_sec };
            if limit.is_set() {
                keys.insert(k.id.clone(), keep(old.map(|o| &o.keys), &k.id, limit));
            }
        }
        Self { projects, keys, window_secs, max_throttle_ms: config.limits.max_throttle_ms }
    }

    /// Records a request against the principal's project and key; the throttle time is the
    /// larger of theirs (the stricter quota wins), capped.
    fn record(&self, principal: &Principal, bytes: u64, now_ms: u64) -> u64 {
        let project = self.projects.get(&principal.project);
        let key = principal.key_id.as_ref().and_then(|k| self.keys.get(k));
        let mut throttle = 0;
        for meter in project.into_iter().chain(key) {
            // A poisoned lock (a panic elsewhere while it was held) leaves the meter usable.
            let mut meter = meter.lock().unwrap_or_else(|e| e.into_inner());
            throttle = throttle.max(meter.record(bytes, now_ms));
        }
        throttle.min(self.max_throttle_ms)
    }
}

/// The produce quotas of the running configuration, shared by every connection.
#[derive(Debug)]
pub struct Quotas {
    set: RwLock<Arc<QuotaSet>>,
    /// Time zero of the meters.
    epoch: Instant,
}

impl Quotas {
    /// The quotas of `config`.
    pub fn new(config: &Config) -> Self {
        Self { set: RwLock::new(Arc::new(QuotaSet::build(config, None))), epoch: Instant::now() }
    }

    /// Switches to the quotas of a new configuration (reload): projects and keys that keep
    /// a quota keep what they were measured to send (unless the window changed); others
    /// start from nothing. Requests already throttled keep their delay.
    pub fn update(&self, config: &Config) {
        let old = self.current();
        let new = Arc::new(QuotaSet::build(config, Some(&old)));
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    fn current(&self) -> Arc<QuotaSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records one Produce request of `bytes` by `principal` now; returns how long to
    /// throttle it (zero when within its quotas or it has none).
    pub fn record(&self, principal: &Principal, bytes: u64) -> Duration {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.record_at(principal, bytes, now_ms)
    }

    /// [`Quotas::record`] at a given time (ms since the meters' time zero).
    pub fn record_at(&self, principal: &Principal, bytes: u64, now_ms: u64) -> Duration {
        let set = self.current();
        if set.projects.is_empty() && set.keys.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_millis(set.record(principal, bytes, now_ms))
    }

    /// The configured window (seconds), for tests and the banner.
    pub fn window_secs(&self) -> u32 {
        self.current().window_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(project: &str, key: Option<&str>) -> Principal {
        Principal { project: project.into(), key_id: key.map(Into::into) }
    }

    fn config(text: &str) -> Config {
        let mut c: Config = toml::from_str(text).unwrap();
        c.apply_defaults();
        c
    }

    const KEY_HASH: &str = "sha256:00:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_quiet_start_is_measured_over_the_whole_window() {
        let mut r = Rate::new(10);
        r.record(5000.0, 0);
        // 5000 bytes over the 10 s floor, not over 0 ms.
        assert_eq!(r.measure(0), (5000.0, 10_000));
        assert_eq!(r.rate(0), 500.0);
        assert_eq!(r.throttle_ms(1000.0, 0), 0);
        // 20000 more: 25000 over 10 s is 2500/s; back at 1000/s after 25 s, i.e. 15 s more.
        r.record(20_000.0, 0);
        assert_eq!(r.throttle_ms(1000.0, 0), 15_000);
    }

    #[test]
    fn the_rate_is_over_the_samples_still_in_the_window() {
        let mut r = Rate::new(2);
        // 3 samples of 1 s: 0..1000, 1000..2000, 2000..3000.
        r.record(300.0, 100);
        r.record(300.0, 1500);
        r.record(300.0, 2500);
        // 900 over 2.5 s of samples (floor 2 s).
        assert_eq!(r.measure(2600), (900.0, 2600));
        // At 3000 the first sample (started at 0) has left the 3 s ring.
        r.record(0.0, 3000);
        assert_eq!(r.measure(3000), (600.0, 2000));
        assert_eq!(r.rate(3000), 300.0);
        // Long after, nothing is left.
        assert_eq!(r.measure(60_000), (0.0, 2000));
    }

    #[test]
    fn a_producer_sending_as_fast_as_allowed_converges_to_its_quota() {
        // A client that sends 10 KB the moment its previous request's throttle has passed,
        // against 2000 B/s: over a long run it sends ~2000 B/s.
        let quota = 2000.0;
        let mut r = Rate::new(10);
        let mut now = 0u64;
        let mut sent = 0.0;
        let mut steady = None;
        while now < 200_000 {
            if now >= 50_000 && steady.is_none() {
                steady = Some((now, sent));
            }
            r.record(10_000.0, now);
            sent += 10_000.0;
            now += r.throttle_ms(quota, now).max(1);
        }
        let (t0, s0) = steady.unwrap();
        let rate = (sent - s0) * 1000.0 / (now - t0) as f64;
        assert!((rate / quota - 1.0).abs() < 0.1, "converged to {rate}");
    }

    #[test]
    fn the_stricter_of_project_and_key_wins_and_the_cap_applies() {
        let c = config(&format!(
            "[limits]\nquota_window_secs = 10\nmax_throttle_ms = 4000\n\
             [[projects]]\nname = \"p\"\nquota_bytes_per_sec = 1000\n\
             [[projects]]\nname = \"free\"\n\
             [[access_keys]]\nid = \"k\"\nsecret_hash = \"{KEY_HASH}\"\nallow = [\"*\"]\nquota_bytes_per_sec = 100\n\
             [[access_keys]]\nid = \"open\"\nsecret_hash = \"{KEY_HASH}\"\nallow = [\"*\"]\n"
        ));
        let q = Quotas::new(&c);
        // 2000 bytes over 10 s: 200/s, within p's 1000 but twice k's 100: 10 s, capped at 4.
        assert_eq!(q.record_at(&principal("p", Some("k")), 2000, 0), Duration::from_millis(4000));
        // The project alone has seen 2000 so far: still within.
        assert_eq!(q.record_at(&principal("p", Some("open")), 0, 0), Duration::ZERO);
        assert_eq!(q.record_at(&principal("p", None), 9000, 0), Duration::from_millis(1000));
        // No quota: never throttled; unknown names make no entries.
        assert_eq!(q.record_at(&principal("free", Some("open")), 1 << 40, 0), Duration::ZERO);
        assert_eq!(q.record_at(&principal("nobody", Some("nokey")), 1 << 40, 0), Duration::ZERO);
        assert_eq!((q.current().projects.len(), q.current().keys.len()), (1, 1));
    }

    #[test]
    fn requests_per_second() {
        let c = config("[[projects]]\nname = \"p\"\nquota_requests_per_sec = 1.0\n");
        let q = Quotas::new(&c);
        let p = principal("p", None);
        // Ten requests in 10 s are within 1/s; the eleventh at once is 10% over: 1 s.
        for _ in 0..10 {
            assert_eq!(q.record_at(&p, 1 << 30, 0), Duration::ZERO);
        }
        assert_eq!(q.record_at(&p, 0, 0), Duration::from_millis(1000));
    }

    #[test]
    fn an_update_keeps_the_measure_of_names_that_keep_a_quota() {
        let q = Quotas::new(&config("[[projects]]\nname = \"p\"\nquota_bytes_per_sec = 1000\n[[projects]]\nname = \"r\"\nquota_bytes_per_sec = 1000\n"));
        let (p, r) = (principal("p", None), principal("r", None));
        assert_eq!(q.record_at(&p, 10_000, 0), Duration::ZERO);
        assert_eq!(q.record_at(&r, 10_000, 0), Duration::ZERO);
        // p's quota halves: its 10000 bytes are now twice over; r loses its quota.
        q.update(&config("[[projects]]\nname = \"p\"\nquota_bytes_per_sec = 500\n[[projects]]\nname = \"r\"\n"));
        assert_eq!(q.record_at(&p, 0, 0), Duration::from_millis(5000));
        assert_eq!(q.record_at(&r, 1 << 40, 0), Duration::ZERO);
        // r gets a quota again: it starts from nothing.
        q.update(&config("[[projects]]\nname = \"r\"\nquota_bytes_per_sec = 500\n"));
        assert_eq!(q.record_at(&r, 5000, 0), Duration::ZERO);
        assert_eq!(q.record_at(&p, 1 << 40, 0), Duration::ZERO);
    }
}
