//! Sparse in-memory index of a segment: offset -> file position of that offset's frame.

/// A new point is added once this many entries passed since the last one...
const INDEX_EVERY_ENTRIES: u64 = 4096;
/// ...or once this many bytes did.
const INDEX_EVERY_BYTES: u64 = 1 << 20;

/// Points `(offset, position)` in increasing order; the first is always the segment start.
#[derive(Debug, Clone)]
pub(crate) struct SparseIndex {
    points: Vec<(u64, u64)>,
}

impl SparseIndex {
    /// An index of a segment whose first frame (at position 0) has offset `base_offset`.
    pub(crate) fn new(base_offset: u64) -> Self {
        SparseIndex {
            points: vec![(base_offset, 0)],
        }
    }

    /// The last point.
    pub(crate) fn last(&self) -> (u64, u64) {
        // `points` is never empty: `new` adds the start and nothing removes it.
        self.points.last().copied().unwrap_or((0, 0))
    }

    /// Records that the frame of `offset` starts at `position`, keeping it if it is far
    /// enough from the last point.
    pub(crate) fn observe(&mut self, offset: u64, position: u64) {
        if let Some(p) = next_point(self.last(), offset, position) {
            self.points.push(p);
        }
    }

    /// Adds points computed elsewhere (with [`next_point`]) in order.
    pub(crate) fn extend(&mut self, points: &[(u64, u64)]) {
        self.points.extend_from_slice(points);
    }

    /// The nearest point at or before `offset`.
    pub(crate) fn lookup(&self, offset: u64) -> (u64, u64) {
        let i = self.points.partition_point(|&(o, _)| o <= offset);
        self.points[i.saturating_sub(1)]
    }
}

/// The point to add after `last` for a frame of `offset` at `position`, if any.
pub(crate) fn next_point(last: (u64, u64), offset: u64, position: u64) -> Option<(u64, u64)> {
    let (lo, lp) = last;
    (offset >= lo + INDEX_EVERY_ENTRIES || position >= lp + INDEX_EVERY_BYTES)
        .then_some((offset, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_nearest_point_at_or_before() {
        let mut ix = SparseIndex::new(0);
        for o in 0..10_000u64 {
            ix.observe(o, o * 10);
        }
        assert_eq!(ix.lookup(0), (0, 0));
        assert_eq!(ix.lookup(4095), (0, 0));
        assert_eq!(ix.lookup(4096), (4096, 40960));
        assert_eq!(ix.lookup(9999), (8192, 81920));
        let mut ix = SparseIndex::new(0);
        ix.observe(1, 2 << 20);
        assert_eq!(ix.lookup(5), (1, 2 << 20));
    }
}
