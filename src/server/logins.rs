//! Connections per client address that have not finished authentication (TLS handshake
//! and SASL).
//!
//! Every connection takes one of `max_connections` slots at accept, and one that never
//! logs in keeps it until `auth_timeout_secs`. Without a bound per address, one host
//! opening connections it never authenticates could hold every slot and lock every
//! other producer out; with it, that host holds at most `max_unauthenticated_per_ip`
//! slots, and an address's count drops as soon as a connection authenticates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts of unauthenticated connections by client address (an entry exists only while
/// its count is above zero, so the map is bounded by the open connections).
#[derive(Debug)]
pub struct PendingLogins {
    max_per_ip: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One unauthenticated connection of an address; dropping it (at authentication or
/// close) gives the address's slot back.
#[derive(Debug)]
pub struct PendingLogin {
    owner: Arc<PendingLogins>,
    ip: IpAddr,
}

impl PendingLogins {
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self { max_per_ip, counts: Mutex::new(HashMap::new()) })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Plain counter updates: a poisoned lock holds consistent data.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one more unauthenticated connection from `ip`, or None when the address
    /// already has `max_per_ip` (IPv4-mapped IPv6 addresses count as their IPv4 address).
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<PendingLogin> {
        let ip = ip.to_canonical();
        let mut counts = self.counts();
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            if *count == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(PendingLogin { owner: self.clone(), ip })
    }

    /// Unauthenticated connections of `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts().get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_is_bounded_and_slots_come_back() {
        let logins = PendingLogins::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let first = logins.try_take(a).unwrap();
        let _second = logins.try_take(a).unwrap();
        assert!(logins.try_take(a).is_none());
        // Another address is not affected, and a mapped address counts as its IPv4 one.
        let other = logins.try_take(b).unwrap();
        assert_eq!(logins.count("10.0.0.2".parse().unwrap()), 1);
        drop(first);
        assert!(logins.try_take(a).is_some());
        drop(other);
        assert_eq!(logins.counts().len(), 1);
        let none = PendingLogins::new(0);
        assert!(none.try_take(a).is_none());
        assert!(none.counts().is_empty());
    }
}
