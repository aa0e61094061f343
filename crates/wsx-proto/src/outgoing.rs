//! The bytes waiting to be written to the peer: the write queue, and the view of it that
//! [`Connection::transmit`](crate::Connection::transmit) hands out.

use std::{collections::VecDeque, io::IoSlice};

use bytes::{Buf, Bytes};

use crate::buf::{Buffer, MAX_CLASS};

/// Bytes to write to the peer, as a [`Buf`] of chunks: from
/// [`Connection::transmit`](crate::Connection::transmit).
///
/// Write them with [`Buf::chunks_vectored`] and a vectored write (or [`Buf::chunk`] and a
/// plain one), then [`Buf::advance`] by what was written; what is left stays queued for the next
/// call. Small frames sit copied one after another in one buffer, so that a burst of them goes
/// out in one write; large payloads are their own chunks, queued without a copy.
#[derive(Debug)]
pub struct Outgoing<'a>(pub(crate) Option<&'a mut WriteQueue>);

impl Buf for Outgoing<'_> {
    fn remaining(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len)
    }

    fn chunk(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |q| q.chunk())
    }

    fn chunks_vectored<'b>(&'b self, dst: &mut [IoSlice<'b>]) -> usize {
        self.0.as_ref().map_or(0, |q| q.chunks_vectored(dst))
    }

    fn advance(&mut self, cnt: usize) {
        match self.0.as_mut() {
            Some(q) => q.advance(cnt),
            None => assert!(cnt == 0, "advance past the end of Outgoing"),
        }
    }
}

/// What [`WriteQueue::append`] frames: a payload shared with its owner (a large one is queued
/// by reference), lent with its owner (a large one is queued by a new reference, a small one
/// copied without touching the reference count, which other threads may be touching too), or
/// borrowed for the call (copied).
pub(crate) enum Payload<'p> {
    Shared(Bytes),
    Lent(&'p Bytes),
    Borrowed(&'p [u8]),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Shared(b) => b,
            Payload::Lent(b) => b,
            Payload::Borrowed(b) => b,
        }
    }
}

/// Payloads at least this long, shared and unmasked, are queued by reference instead of copied.
///
/// Copying a few KiB costs less than the extra `iovec` and the per-chunk bookkeeping of a
/// vectored write (measured with the end-to-end benchmark at 1 KiB).
pub(crate) const COPY_THRESHOLD: usize = 4096;

/// The largest write tail a connection keeps while it waits for the rest of a frame.
const KEEP_WHILE_BUSY: usize = 16 << 10;

/// The write queue: chunks queued by reference, then a growable tail that small frames are
/// copied into.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    /// Chunks in order, all before `tail`. Boxed on purpose: only payloads of `COPY_THRESHOLD`
    /// bytes or more use it, so every connection keeps a pointer instead of the queue's 32 bytes.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Bytes>>>,
    /// The last, growable chunk.
    tail: Buffer,
    /// Total bytes in `queue` and `tail`.
    len: usize,
    /// The most the tail held since it was last allocated: the size to allocate next time, so
    /// that a burst of replies does not grow the tail (and copy it) step by step every time.
    tail_peak: u32,
    /// Bytes written out since the queue was created (wrapping): how the send deadline sees
    /// whether the peer is taking anything.
    written: u64,
}

impl WriteQueue {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes written out so far (wrapping).
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Append one frame: its encoded `head`, then `payload`, masked with `mask` if given.
    ///
    /// This is the one place that chooses how a frame is queued: a shared, unmasked payload of
    /// [`COPY_THRESHOLD`] bytes or more is queued by reference after its header; anything else
    /// is copied into the tail with its header in one reservation (masked while it is there). A
    /// frame framed in advance (`head` empty, `payload` the whole frame) follows the same rule.
    #[inline(always)]
    pub(crate) fn append(&mut self, head: &[u8], payload: Payload<'_>, mask: Option<[u8; 4]>) {
        let by_reference = mask.is_none() && payload.len() >= COPY_THRESHOLD;
        match payload {
            Payload::Shared(bytes) if by_reference => self.push_frame(head, bytes),
            Payload::Lent(bytes) if by_reference => self.push_frame(head, bytes.clone()),
            payload => {
                let start = self.tail.bytes.len() + head.len();
                self.copy(head, &payload);
                if let Some(key) = mask {
                    crate::mask::apply_mask(&mut self.tail.bytes[start..], key, 0);
                }
            }
        }
    }

    /// Queue `head` (copied into the tail) and then `payload` by reference.
    fn push_frame(&mut self, head: &[u8], payload: Bytes) {
        if !head.is_empty() {
            self.copy(head, &[]);
        }
        self.push_shared(payload);
    }

    /// Append bytes that are not a frame (a handshake response), copied into the tail.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.copy(bytes, &[]);
    }

    /// Copy `head` then `payload` into the tail, with one reservation.
    #[inline(always)]
    fn copy(&mut self, head: &[u8], payload: &[u8]) {
        let n = head.len() + payload.len();
        if self.tail.bytes.capacity() - self.tail.bytes.len() < n {
            self.grow_tail(n);
        }
        let tail = &mut self.tail.bytes;
        let spare = &mut tail.spare_capacity_mut()[..n];
        // SAFETY: `spare` is `n` writable bytes (`grow_tail` made the room; the slice is
        // checked): `head`, then `payload` right after it, `head.len() + payload.len() == n`; a
        // `&mut` and a `&` cannot overlap.
        unsafe {
            let dst = spare.as_mut_ptr().cast::<u8>();
            std::ptr::copy_nonoverlapping(head.as_ptr(), dst, head.len());
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(head.len()), payload.len());
        }
        // SAFETY: the `n` bytes after the current length were just written.
        unsafe { tail.set_len(tail.len() + n) };
        self.len += n;
        // At most `MAX_CLASS`: fits a `u32`.
        self.tail_peak = self.tail_peak.max(tail.len().min(MAX_CLASS) as u32);
    }

    /// Make room for `n` more bytes in the tail. A tail with no allocation is sized for a burst
    /// like the last one, so that a burst of replies does not regrow it step by step.
    #[inline(never)]
    fn grow_tail(&mut self, n: usize) {
        let fresh = self.tail.bytes.capacity() == 0;
        self.tail.reserve(if fresh { n.max(self.tail_peak as usize) } else { n });
    }

    /// Queue a large payload as its own chunk, after what the tail holds.
    fn push_shared(&mut self, bytes: Bytes) {
        let queue = self.queue.get_or_insert_default();
        if !self.tail.bytes.is_empty() {
            queue.push_back(self.tail.bytes.split().freeze());
        }
        self.len += bytes.len();
        queue.push_back(bytes);
    }

    /// When nothing is queued, keep the tail's allocation for reuse (if whole and unshared) and
    /// drop the queue's. Returns whether the queue is empty.
    pub(crate) fn recycle(&mut self) -> bool {
        if self.len != 0 {
            return false;
        }
        self.tail.recycle();
        self.queue = None;
        true
    }

    /// When nothing is queued, drop the queue and free a large tail; a tail of at most
    /// `KEEP_WHILE_BUSY` bytes is kept for reuse. Called when the connection goes idle with a
    /// partial frame in hand: allocating its replies' buffer again at every read would cost a
    /// `malloc` and a `free` each time, while keeping a small one costs little.
    pub(crate) fn release(&mut self) {
        if self.len != 0 {
            return;
        }
        self.queue = None;
        if self.tail.class() > KEEP_WHILE_BUSY || !self.tail.recycle() {
            self.tail.free();
            self.tail_peak = 0;
        }
    }

    fn chunk(&self) -> &[u8] {
        match self.queue.as_ref().and_then(|q| q.front()) {
            Some(b) => b,
            None => &self.tail.bytes,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let queued = self.queue.iter().flat_map(|q| q.iter());
        for chunk in queued.map(|b| &b[..]).chain(std::iter::once(&self.tail.bytes[..])) {
            if n == dst.len() {
                break;
            }
            if !chunk.is_empty() {
                dst[n] = IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of Outgoing");
        self.len -= cnt;
        self.written = self.written.wrapping_add(cnt as u64);
        while cnt > 0 {
            match self.queue.as_mut().and_then(|q| q.front_mut()) {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.queue.as_mut().and_then(|q| q.pop_front());
                }
                Some(front) => {
                    front.advance(cnt);
                    break;
                }
                None => {
                    self.tail.bytes.advance(cnt);
                    break;
                }
            }
        }
        if self.len == 0 {
            // Reuse the tail's allocation from its start.
            self.tail.bytes.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_copied_and_queued_chunks() {
        let mut queue = WriteQueue::default();
        queue.append(b"ab", Payload::Borrowed(b""), None);
        queue.append(b"", Payload::Shared(Bytes::from(vec![b'x'; 5000])), None);
        queue.append(b"c", Payload::Borrowed(b"d"), None);
        queue.append(b"", Payload::Shared(Bytes::from_static(b"ef")), None);
        let mut out = Outgoing(Some(&mut queue));
        assert_eq!(out.remaining(), 5006);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = out.chunks_vectored(&mut slices);
        let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(&joined[..2], b"ab");
        assert_eq!(&joined[5002..], b"cdef");
        out.advance(1);
        assert_eq!(out.chunk(), b"b");
        out.advance(4500);
        assert_eq!(out.chunk().len(), 501);
        out.advance(503);
        assert_eq!(out.chunk(), b"ef");
        out.advance(2);
        assert_eq!(out.remaining(), 0);
    }

    #[test]
    fn masked_frames_are_copied_and_masked() {
        let mut queue = WriteQueue::default();
        let payload = Bytes::from(vec![0u8; COPY_THRESHOLD]);
        queue.append(&[0x82, 0xFE], Payload::Shared(payload), Some([1, 2, 3, 4]));
        let mut out = Outgoing(Some(&mut queue));
        assert_eq!(out.chunk().len(), 2 + COPY_THRESHOLD, "copied into the tail");
        assert_eq!(&out.chunk()[2..6], &[1, 2, 3, 4]);
        out.advance(2 + COPY_THRESHOLD);
    }

    #[test]
    fn an_empty_view_has_nothing() {
        let mut out = Outgoing(None);
        assert_eq!(out.remaining(), 0);
        assert!(out.chunk().is_empty());
        out.advance(0);
    }
}
