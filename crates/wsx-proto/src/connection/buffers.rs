//! The memory economy: what a connection holds only while it has bytes in hand, the per-thread
//! cache it comes from, and how reads are sized.
//!
//! The read buffer, the frame half read, the message being assembled, the events not yet taken
//! and the write queue live in one [`Work`] box. A connection takes one from its thread's cache
//! when input arrives or output is queued, and hands it back, buffers attached and emptied, when
//! it goes idle ([`Connection::release_buffers`]): an idle connection holds one empty pointer
//! instead, and waking up is one cache step (`crates/wsx/tests/idle_memory.rs` measures what
//! that saves, `docs/performance.md` what it costs).

use std::{cell::RefCell, time::Instant};

use bytes::BytesMut;

use super::{Connection, event::Events, recv::Incoming};
use crate::{frame::MAX_HEADER_LEN, outgoing::WriteQueue};

/// What a busy connection holds: everything between the socket and the application.
#[derive(Debug, Default)]
pub(super) struct Work {
    pub(super) incoming: Incoming,
    pub(super) events: Events,
    pub(super) outgoing: WriteQueue,
    /// Since when the write queue has been over `write_high_water` without the peer taking
    /// from it: the send deadline's clock, kept here so that an idle connection does not carry
    /// it (see `timer.rs`).
    pub(super) stall: Option<Stall>,
}

/// The send deadline's clock: when the write queue was found over the high-water mark, and
/// what the peer had taken by then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stall {
    /// When the wait began.
    pub(super) since: Instant,
    /// [`WriteQueue::written`] then.
    pub(super) written: u64,
    /// How far the queue was over the mark then.
    pub(super) excess: usize,
}

/// How many idle work boxes one thread keeps for the next connections that wake up, with their
/// buffers: at most 8 × 2 buffers of at most 64 KiB each (`buf::MAX_CLASS`).
const CACHED: usize = 8;

thread_local! {
    // Boxes on purpose: the cache hands out allocations, so that taking one allocates nothing.
    #[allow(clippy::vec_box)]
    static CACHE: RefCell<Vec<Box<Work>>> = const { RefCell::new(Vec::new()) };
}

/// The work state in `slot`, taken from the thread's cache (or allocated) if there is none.
#[inline]
pub(super) fn work(slot: &mut Option<Box<Work>>) -> &mut Work {
    slot.get_or_insert_with(|| CACHE.try_with(|c| c.borrow_mut().pop()).ok().flatten().unwrap_or_default())
}

/// How much to read at once. Reads are sized for the frame in progress, or for a frame like the
/// last one, and between frames adapt to the traffic: a read that fills all the space it was
/// offered (more is waiting, as when a peer pipelines) doubles the next, a short one halves it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadSize {
    /// The size of the last whole frame taken, capped at `LAST_FRAME_MAX`.
    last_frame: u32,
    /// The adaptive size between frames, from `read_buffer_size` up to `BURST_MAX`.
    burst: u32,
}

/// The most an adaptive read between frames grows to.
const BURST_MAX: usize = 64 << 10;
/// The most a read is sized for ahead of data, from the last frame's size.
const LAST_FRAME_MAX: usize = 256 << 10;

impl ReadSize {
    pub(super) fn new(read_buffer_size: usize) -> Self {
        // At most `BURST_MAX`: fits a `u32`.
        Self { last_frame: 0, burst: read_buffer_size.min(BURST_MAX) as u32 }
    }

    /// The adaptive read size between frames.
    #[cfg(test)]
    pub(super) fn burst(&self) -> usize {
        self.burst as usize
    }

    /// A whole frame of `len` bytes was taken: size the next reads for one like it.
    #[inline]
    pub(super) fn took(&mut self, len: usize) {
        // At most `LAST_FRAME_MAX`: fits a `u32`.
        self.last_frame = len.min(LAST_FRAME_MAX) as u32;
    }
}

impl Connection {
    /// The work state, taken from the thread's cache if the connection holds none.
    #[inline]
    pub(super) fn work(&mut self) -> &mut Work {
        work(&mut self.work)
    }

    /// The buffer the I/O layer may read into directly, to save the copy `receive` makes;
    /// call [`receive_buffered`](Self::receive_buffered) after appending to it.
    ///
    /// Its spare capacity is at least `read_buffer_size`; enough for a frame as large as the
    /// last one, so that a stream of equal frames takes one read each; and enough for the rest
    /// of a frame being received, up to twice what has arrived of it (so a peer cannot make it
    /// allocate a frame's declared length without sending it). The size also adapts: a read
    /// that fills all the space offered doubles the next one (up to 64 KiB), so a peer that
    /// pipelines many small frames is drained in few reads.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        let floor = self.config.read_buffer_size;
        let size = self.sizing;
        let incoming = &mut work(&mut self.work).incoming;
        let len = incoming.buf.bytes.len();
        let adaptive = (size.last_frame as usize + MAX_HEADER_LEN).max(size.burst as usize);
        let want = match incoming.missing() {
            Some(missing) => (missing + MAX_HEADER_LEN).min(len.max(floor) * 2).max(adaptive),
            None => adaptive,
        }
        .max(floor);
        incoming.buf.reserve(want);
        // What a partial frame holds is bounded by the frame limit; a length past `u32` is
        // simply not measured.
        incoming.offered = u32::try_from(len).ok();
        &mut incoming.buf.bytes
    }

    /// Process bytes the I/O layer appended to [`read_buffer`](Self::read_buffer): like
    /// [`receive`](Self::receive) without the copy.
    pub fn receive_buffered(&mut self, now: std::time::Instant) {
        let reading = self.is_reading();
        if let Some(incoming) = self.work.as_deref_mut().map(|w| &mut w.incoming) {
            if let Some(offered) = incoming.offered.take() {
                let buf = &incoming.buf.bytes;
                // A read that filled all the space it was offered leaves the buffer full.
                let filled = buf.len() == buf.capacity();
                let got = buf.len().saturating_sub(offered as usize);
                let min = self.config.read_buffer_size.min(BURST_MAX) as u32;
                let burst = &mut self.sizing.burst;
                if filled {
                    *burst = (*burst * 2).min(BURST_MAX as u32);
                } else if got < *burst as usize / 4 {
                    *burst = (*burst / 2).max(min);
                }
            }
            if !reading {
                // RFC 6455 §5.5.1: what arrives after the closing handshake is discarded.
                incoming.discard();
            }
        }
        self.observe(now);
        self.received(now);
    }

    /// Release the read buffer, the write queue and the event queue if they hold nothing: call
    /// when the connection goes idle, so that an idle connection holds no buffers. Once all of
    /// them are empty (and no message is half received), the work state that holds them goes
    /// back to a per-thread cache, buffers attached, for the next connection to wake up on this
    /// thread: an idle connection is then about 90 bytes.
    pub fn release_buffers(&mut self) {
        let Some(w) = self.work.as_deref_mut() else { return };
        if let Some(deflate) = self.deflate.as_mut() {
            deflate.scratch = BytesMut::new();
        }
        w.events.release();
        let idle = w.incoming.buf.bytes.is_empty() && !w.incoming.is_mid_message() && w.events.is_empty();
        if idle && w.outgoing.recycle() {
            w.incoming.recycle();
            w.stall = None;
            // Invariant: `work` was just found to be `Some`.
            let w = self.work.take().expect("work state");
            let _ = CACHE.try_with(|c| {
                let mut cache = c.borrow_mut();
                if cache.len() < CACHED {
                    cache.push(w);
                }
            });
            return;
        }
        // Still busy (a partial frame, or bytes the socket has not taken): hold no more than that.
        if w.incoming.buf.bytes.is_empty() && !w.incoming.is_mid_message() {
            w.incoming.buf.free();
        }
        w.outgoing.release();
    }
}
