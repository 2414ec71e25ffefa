//! Buffers of large request frames, reused once their requests are answered.
//!
//! Reading a large frame into a fresh buffer grows it as the bytes arrive, copying what is
//! there at each doubling, and the new memory page-faults on first touch. A buffer kept from
//! an answered frame has neither cost. The buffers are shared server-wide and bounded: at
//! most [`FRAME_BUFFERS`] are kept or lent out at any time, each of at most
//! [`FRAME_BUFFER_CAPACITY`] bytes. A lent buffer can be larger than the frame read into it
//! (the bytes a frame holds are counted against the in-flight budget as they arrive), so
//! this bound, not the clients, caps what reuse adds to memory: a client that declares a
//! large frame and sends it slowly holds at most one such buffer, and the others allocate
//! as they receive. Only authenticated connections borrow them.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use loggate_records::Spare;

/// Most buffers kept or lent out, server-wide.
pub const FRAME_BUFFERS: usize = 8;
/// Largest buffer (capacity) kept: a 1 MiB request (librdkafka's and the Java client's
/// default largest) grown by doubling fits.
pub const FRAME_BUFFER_CAPACITY: usize = 2 << 20;
/// Frames smaller than this are read into buffers of their own and never kept.
pub const MIN_FRAME: usize = 64 * 1024;

pub struct FrameBuffers {
    state: Mutex<State>,
}

struct State {
    kept: Spare,
    /// Kept buffers handed out whose frames are not yet given back.
    lent: usize,
}

/// An empty buffer for one frame, and the loan that counts it while it came from the kept
/// ones (none for a new buffer, the default).
#[derive(Default)]
pub struct FrameBuffer<'a> {
    pub buf: BytesMut,
    pub loan: Option<Loan<'a>>,
}

/// A kept buffer lent out: counted among the [`FRAME_BUFFERS`] until dropped, whether its
/// frame is given back or lost with its connection.
pub struct Loan<'a> {
    buffers: &'a FrameBuffers,
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        self.buffers.lock().lent -= 1;
    }
}

impl Default for FrameBuffers {
    fn default() -> Self {
        Self { state: Mutex::new(State { kept: Spare::new(FRAME_BUFFERS, FRAME_BUFFER_CAPACITY), lent: 0 }) }
    }
}

impl FrameBuffers {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A vector pushed and popped and a counter, without panicking code in between.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer for a frame of `want` bytes: a kept one if the frame is large and
    /// one is there, else a new one that grows as bytes arrive.
    pub fn take(&self, want: usize) -> FrameBuffer<'_> {
        if want >= MIN_FRAME {
            let mut st = self.lock();
            if !st.kept.is_empty() {
                st.lent += 1;
                let mut buf = st.kept.take();
                buf.clear();
                return FrameBuffer { buf, loan: Some(Loan { buffers: self }) };
            }
        }
        FrameBuffer::default()
    }

    /// Takes back the buffer of an answered frame with its loan, if it had one: it is kept
    /// if the frame is large, nothing else refers to its bytes any more and fewer than
    /// [`FRAME_BUFFERS`] are kept or lent; otherwise it is freed.
    pub fn give_back(&self, frame: Bytes, loan: Option<Loan<'_>>) {
        drop(loan);
        if frame.len() >= MIN_FRAME {
            let mut st = self.lock();
            if st.kept.len() + st.lent < FRAME_BUFFERS {
                st.kept.keep(frame);
            }
        }
    }

    /// Buffers kept and lent out now.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.kept.len(), st.lent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(buffers: &FrameBuffers, len: usize) -> (Bytes, Option<Loan<'_>>) {
        let FrameBuffer { mut buf, loan } = buffers.take(len);
        buf.extend_from_slice(&vec![7u8; len]);
        (buf.freeze(), loan)
    }

    #[test]
    fn an_answered_large_frame_lends_its_buffer_to_the_next() {
        let buffers = FrameBuffers::default();
        let (first, lent) = frame(&buffers, 1 << 20);
        assert!(lent.is_none());
        let address = first.as_ptr();
        buffers.give_back(first, lent);
        assert_eq!(buffers.counts(), (1, 0));
        let FrameBuffer { buf, loan } = buffers.take(300 << 10);
        assert!(loan.is_some() && buf.is_empty() && buf.capacity() >= 1 << 20);
        assert_eq!(buf.as_ptr(), address);
        assert_eq!(buffers.counts(), (0, 1));
        buffers.give_back(buf.freeze(), loan);
        // An empty frame is too small to keep; the lent count still goes down.
        assert_eq!(buffers.counts(), (0, 0));
        // So it does when a lent buffer is lost with its connection (a read that failed).
        let (large, none) = frame(&buffers, 100 << 10);
        buffers.give_back(large, none);
        let lost = buffers.take(100 << 10);
        assert_eq!(buffers.counts(), (0, 1));
        drop(lost);
        assert_eq!(buffers.counts(), (0, 0));
    }

    #[test]
    fn small_frames_referred_to_or_too_large_buffers_are_not_kept() {
        let buffers = FrameBuffers::default();
        let (small, lent) = frame(&buffers, 1000);
        buffers.give_back(small, lent);
        let (shared, lent) = frame(&buffers, 100 << 10);
        let still_used = shared.slice(10..20);
        buffers.give_back(shared, lent);
        let (huge, lent) = frame(&buffers, FRAME_BUFFER_CAPACITY + 1);
        buffers.give_back(huge, lent);
        assert_eq!(buffers.counts(), (0, 0));
        assert_eq!(&still_used[..], &[7u8; 10]);
        // A small frame never takes a kept buffer.
        let (large, lent) = frame(&buffers, 100 << 10);
        buffers.give_back(large, lent);
        assert!(buffers.take(1000).loan.is_none());
        assert_eq!(buffers.counts(), (1, 0));
    }

    #[test]
    fn kept_and_lent_buffers_together_stay_within_the_bound() {
        let buffers = FrameBuffers::default();
        // More large frames in flight at once than buffers are kept.
        let frames: Vec<_> = (0..3 * FRAME_BUFFERS).map(|_| frame(&buffers, 128 << 10)).collect();
        for (f, lent) in frames {
            buffers.give_back(f, lent);
        }
        assert_eq!(buffers.counts(), (FRAME_BUFFERS, 0));
        // Every kept buffer lent out (say to slow clients): frames answered meanwhile are
        // not kept on top of them.
        let lent: Vec<_> = (0..FRAME_BUFFERS).map(|_| frame(&buffers, 128 << 10)).collect();
        assert!(lent.iter().all(|(_, loan)| loan.is_some()));
        assert_eq!(buffers.counts(), (0, FRAME_BUFFERS));
        let (fresh, was_lent) = frame(&buffers, 128 << 10);
        assert!(was_lent.is_none());
        buffers.give_back(fresh, was_lent);
        assert_eq!(buffers.counts(), (0, FRAME_BUFFERS));
        for (f, lent) in lent {
            buffers.give_back(f, lent);
        }
        assert_eq!(buffers.counts(), (FRAME_BUFFERS, 0));
    }
}
