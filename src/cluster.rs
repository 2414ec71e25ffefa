//! Gateway nodes sharing one storage: which are live, and which leads each partition.
//!
//! Every node checks every other's `/readyz` (the metrics endpoint) each
//! `health_interval_ms`; a node that has not answered for `down_after_ms` is left out of
//! Metadata until it answers again. This node is always listed. Leadership is spread over
//! the live nodes, each logstore's partitions dealt out from its own starting node, so
//! clients spread their connections; any node accepts writes for any partition (the
//! storage is shared), so a client with an older Metadata is never refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use tokio::sync::watch;

use crate::config::{Config, SecurityProtocol};

/// One node as configured.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: i32,
    /// Where its `/readyz` is.
    health: (String, u16),
    /// Where clients reach its listeners, by protocol.
    advertised: HashMap<SecurityProtocol, (String, u16)>,
}

impl Node {
    /// The address clients reach it at over `protocol`.
    pub fn advertised(&self, protocol: SecurityProtocol) -> Option<(&str, u16)> {
        self.advertised.get(&protocol).map(|(h, p)| (h.as_str(), *p))
    }
}

/// The cluster view of one node.
#[derive(Debug)]
pub struct Cluster {
    self_id: i32,
    /// Sorted by id.
    nodes: Vec<Node>,
    /// Per node (same order): when its `/readyz` last answered 200, in ms since `started`
    /// (-1: never).
    last_ok: Vec<AtomicI64>,
    /// Per node (same order): whether the previous check found it live, so that a change
    /// either way is logged once (a node that refuses connections fails its check at once,
    /// so "recent before the check, not after it" would almost never catch it going down).
    listed: Vec<AtomicBool>,
    /// Bumped whenever a node joins or leaves the live set: partition leaders may have
    /// moved, so what this node remembers of idempotent producers may be stale.
    membership: Arc<AtomicU64>,
    started: Instant,
    interval: Duration,
    down_after: Duration,
}

impl Cluster {
    /// The cluster of a validated configuration; None without a `[cluster]`.
    pub fn from_config(config: &Config) -> Option<Arc<Self>> {
        let c = &config.cluster;
        if c.nodes.is_empty() {
            return None;
        }
        let split = |a: &str| crate::server::parse_host_port(a);
        let mut nodes: Vec<Node> = c
            .nodes
            .iter()
            .map(|n| Node {
                id: n.id,
                health: split(&n.health).unwrap_or_default(),
                advertised: n.advertised.iter().filter_map(|(proto, a)| Some((*proto, split(a)?))).collect(),
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        let last_ok = nodes.iter().map(|_| AtomicI64::new(-1)).collect();
        let listed = nodes.iter().map(|_| AtomicBool::new(false)).collect();
        Some(Arc::new(Cluster {
            self_id: config.node_id,
            nodes,
            last_ok,
            listed,
            membership: Arc::default(),
            started: Instant::now(),
            interval: Duration::from_millis(c.health_interval_ms),
            down_after: Duration::from_millis(c.down_after_ms),
        }))
    }

    /// The live nodes (this one always), by id.
    pub fn live(&self) -> Vec<&Node> {
        self.nodes
            .iter()
            .zip(&self.last_ok)
            .filter(|(n, ok)| n.id == self.self_id || self.is_recent(ok.load(Ordering::Relaxed)))
            .map(|(n, _)| n)
            .collect()
    }

    /// A counter that grows whenever the live set changes (see [`Ingest::with_membership`](crate::ingest::Ingest::with_membership)).
    pub fn membership(&self) -> Arc<AtomicU64> {
        self.membership.clone()
    }

    /// The leader of `partition` of the logstore with `topic_id`, among `live` (by id).
    pub fn leader(live: &[&Node], topic_id: &[u8; 16], partition: i32) -> i32 {
        if live.is_empty() {
            return -1;
        }
        let start = u32::from_be_bytes([topic_id[0], topic_id[1], topic_id[2], topic_id[3]]) as usize;
        live[(start + partition.max(0) as usize) % live.len()].id
    }

    /// Checks the other nodes until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let this = &*self;
            let nodes = this.nodes.iter().zip(this.last_ok.iter().zip(&this.listed));
            let checks = nodes.filter(|(n, _)| n.id != this.self_id).map(|(node, (ok, listed))| {
                let timeout = this.interval;
                async move {
                    let was_live = listed.load(Ordering::Relaxed);
                    let ready = tokio::time::timeout(timeout, ready(&node.health.0, node.health.1)).await;
                    match ready {
                        Ok(Ok(())) => {
                            ok.store(this.started.elapsed().as_millis() as i64, Ordering::Relaxed);
                            if !was_live {
                                tracing::info!(node = node.id, "cluster node is up");
                            }
                        }
                        Ok(Err(why)) if was_live => tracing::debug!(node = node.id, why, "cluster node did not answer"),
                        Err(_) if was_live => tracing::debug!(node = node.id, "cluster node did not answer in time"),
                        _ => {}
                    }
                    let live = this.is_recent(ok.load(Ordering::Relaxed));
                    listed.store(live, Ordering::Relaxed);
                    if live != was_live {
                        this.membership.fetch_add(1, Ordering::Relaxed);
                    }
                    if was_live && !live {
                        tracing::warn!(node = node.id, down_after_ms = this.down_after.as_millis() as u64,
                            "cluster node is down: left out of Metadata until it answers again");
                    }
                }
            });
            futures_util::future::join_all(checks).await;
        }
    }

    fn is_recent(&self, ok: i64) -> bool {
        ok >= 0 && self.started.elapsed().as_millis() as i64 - ok <= self.down_after.as_millis() as i64
    }
}

/// Whether `http://host:port/readyz?scope=serving` answers 200: whether the node takes
/// clients (started, not shutting down), whatever its storage says. The storage nodes
/// share fails for all of them at once, and moving partition leaders then (while inserts
/// are in doubt) would only make idempotent producers' retries harder to recognise. A
/// node that ignores the query answers its `/readyz`.
async fn ready(host: &str, port: u16) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(crate::server::http::SERVING_PATH)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string());
    driver.abort();
    match response?.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("/readyz answered {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i32) -> Node {
        Node { id, health: ("127.0.0.1".into(), 1), advertised: HashMap::new() }
    }

    #[test]
    fn leaders_spread_over_the_live_nodes() {
        let nodes = [node(1), node(2), node(3)];
        let live: Vec<&Node> = nodes.iter().collect();
        let id = [0u8; 16];
        let leaders: Vec<i32> = (0..6).map(|p| Cluster::leader(&live, &id, p)).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        let two: Vec<&Node> = vec![&nodes[0], &nodes[2]];
        assert!((0..6).all(|p| Cluster::leader(&two, &id, p) != 2));
        let mut other = [0u8; 16];
        other[3] = 1;
        assert_eq!(Cluster::leader(&live, &other, 0), 2);
    }
}
