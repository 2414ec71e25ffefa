//! Sparse index of a segment: blocks of consecutive entries, each with the file position of
//! its first frame and the range of event times inside it, for offset and time lookups. A
//! block starts at a frame; with block frames (many logs each) a lookup scans inside the
//! frame to reach an offset.

/// A new block starts once this many entries passed since the last one...
const INDEX_EVERY_ENTRIES: u64 = 4096;
/// ...or once this many bytes did.
const INDEX_EVERY_BYTES: u64 = 1 << 20;

/// One block: entries from `offset` up to the next block's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Offset of the block's first entry.
    pub offset: u64,
    /// File position of that entry's frame.
    pub pos: u64,
    /// Smallest event time in the block (`i64::MAX` while empty).
    pub min_time: i64,
    /// Largest event time in the block (`i64::MIN` while empty).
    pub max_time: i64,
}

impl Block {
    fn starting(offset: u64, pos: u64) -> Self {
        Block {
            offset,
            pos,
            min_time: i64::MAX,
            max_time: i64::MIN,
        }
    }

    /// Whether an entry of the block may have an event time in `from..=to`.
    pub(crate) fn may_hold(&self, from: i64, to: i64) -> bool {
        self.min_time <= to && self.max_time >= from
    }
}

/// Blocks in increasing order; the first always starts at the segment start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    blocks: Vec<Block>,
}

impl SparseIndex {
    /// An index of a segment whose first frame (at position 0) has offset `base_offset`.
    pub(crate) fn new(base_offset: u64) -> Self {
        SparseIndex {
            blocks: vec![Block::starting(base_offset, 0)],
        }
    }

    /// Rebuilds an index from stored blocks; `None` unless they are well ordered and start at 0.
    pub(crate) fn from_blocks(blocks: Vec<Block>) -> Option<Self> {
        let ok = blocks.first().is_some_and(|b| b.pos == 0)
            && blocks
                .windows(2)
                .all(|w| w[0].offset < w[1].offset && w[0].pos < w[1].pos);
        ok.then_some(SparseIndex { blocks })
    }

    /// The blocks, in order.
    pub(crate) fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    fn last_mut(&mut self) -> &mut Block {
        // `blocks` is never empty: every constructor makes at least one.
        let i = self.blocks.len() - 1;
        &mut self.blocks[i]
    }

    /// Records that the one-log frame of `offset`, with `event_time`, starts at `pos`.
    #[cfg(test)]
    pub(crate) fn observe(&mut self, offset: u64, pos: u64, event_time: i64) {
        self.observe_frame(offset, pos, event_time, event_time);
    }

    /// Records that a frame whose first log has `offset` starts at `pos`, its logs' event
    /// times within `min_time..=max_time`; opens a new block (at this frame: a block always
    /// starts at a frame, never inside one) when the last one is full.
    pub(crate) fn observe_frame(&mut self, offset: u64, pos: u64, min_time: i64, max_time: i64) {
        let last = *self.last_mut();
        if offset >= last.offset + INDEX_EVERY_ENTRIES || pos >= last.pos + INDEX_EVERY_BYTES {
            self.blocks.push(Block::starting(offset, pos));
        }
        let b = self.last_mut();
        b.min_time = b.min_time.min(min_time);
        b.max_time = b.max_time.max(max_time);
    }

    /// How many blocks there are (a mark for [`rollback`](Self::rollback)).
    pub(crate) fn mark(&self) -> (usize, Block) {
        (self.blocks.len(), self.blocks[self.blocks.len() - 1])
    }

    /// Forgets everything observed since `mark` was taken.
    pub(crate) fn rollback(&mut self, mark: (usize, Block)) {
        self.blocks.truncate(mark.0);
        *self.last_mut() = mark.1;
    }

    /// Makes `self` equal to `newer`, an index that only grew from it (copies the tail only).
    pub(crate) fn catch_up(&mut self, newer: &SparseIndex) {
        let keep = self.blocks.len().saturating_sub(1).min(newer.blocks.len());
        self.blocks.truncate(keep);
        self.blocks.extend_from_slice(&newer.blocks[keep..]);
    }

    /// Drops blocks that start at or after `len` (the segment was cut there); returns the
    /// block to rescan from. Times of the kept last block may be too wide, never too narrow.
    pub(crate) fn cut(&mut self, len: u64) -> Block {
        let keep = self.blocks.partition_point(|b| b.pos < len).max(1);
        self.blocks.truncate(keep);
        *self.last_mut()
    }

    /// The block holding `offset` (the first one when `offset` is before the segment).
    #[cfg(test)]
    pub(crate) fn lookup(&self, offset: u64) -> Block {
        let i = self.blocks.partition_point(|b| b.offset <= offset);
        self.blocks[i.saturating_sub(1)]
    }

    /// Smallest and largest event time in the segment.
    #[cfg(test)]
    pub(crate) fn time_range(&self) -> (i64, i64) {
        self.blocks
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), b| {
                (lo.min(b.min_time), hi.max(b.max_time))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_block_holding_an_offset() {
        let mut ix = SparseIndex::new(0);
        for o in 0..10_000u64 {
            ix.observe(o, o * 10, o as i64);
        }
        assert_eq!(ix.lookup(0).offset, 0);
        assert_eq!(ix.lookup(4095).offset, 0);
        assert_eq!((ix.lookup(4096).offset, ix.lookup(4096).pos), (4096, 40960));
        assert_eq!(ix.lookup(9999).offset, 8192);
        assert_eq!(
            (ix.blocks()[1].min_time, ix.blocks()[1].max_time),
            (4096, 8191)
        );
        assert_eq!(ix.time_range(), (0, 9999));
        let mut ix = SparseIndex::new(0);
        ix.observe(0, 0, 5);
        ix.observe(1, 2 << 20, 1);
        assert_eq!(ix.lookup(5).offset, 1);
        assert!(ix.blocks()[0].may_hold(5, 5) && !ix.blocks()[0].may_hold(6, 9));
    }

    #[test]
    fn rollback_cut_and_catch_up() {
        let mut ix = SparseIndex::new(0);
        for o in 0..5000u64 {
            ix.observe(o, o * 10, 7);
        }
        let before = ix.clone();
        let mark = ix.mark();
        for o in 5000..9000u64 {
            ix.observe(o, o * 10, 100);
        }
        let mut view = before.clone();
        view.catch_up(&ix);
        assert_eq!(view, ix);
        ix.rollback(mark);
        assert_eq!(ix, before);
        let b = ix.cut(40960);
        assert_eq!((b.offset, ix.blocks().len()), (0, 1));
        assert!(SparseIndex::from_blocks(vec![]).is_none());
        assert!(SparseIndex::from_blocks(view.blocks().to_vec()).is_some());
    }
}
