//! [`AppendChain`]: appends to one shard that are stored in order with no hole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Appends to one shard that belong together in order, such as one writer's consecutive
/// batches queued before the first is stored. Once one of them fails, every later append
/// queued with the same chain is refused without being written, so what is stored of a
/// chain is always a prefix of it: a writer can queue its next batch before the previous
/// one is confirmed and still never leave a hole by a failure in the middle. A chain that
/// broke stays broken; the writer starts a new one for what it sends after.
///
/// Only backends whose [`LogStorage::keeps_chains`](crate::LogStorage::keeps_chains) says so
/// honour it; the others ignore it.
#[derive(Debug, Clone, Default)]
pub struct AppendChain(Arc<AtomicBool>);

impl AppendChain {
    /// A new, unbroken chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an append of this chain failed.
    pub fn is_broken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Whether `other` is this same chain (not just another one in the same state).
    pub fn is(&self, other: &AppendChain) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Marks the chain broken: an append of it failed. Backends that keep chains do this
    /// themselves when they fail an append.
    pub fn mark_broken(&self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_breaks_for_all_its_clones_only() {
        let a = AppendChain::new();
        let clone = a.clone();
        let other = AppendChain::new();
        assert!(a.is(&clone) && !a.is(&other));
        clone.mark_broken();
        assert!(a.is_broken() && !other.is_broken());
    }
}
