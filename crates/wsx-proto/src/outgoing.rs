//! The queue of bytes waiting to be written to the peer.

use std::{collections::VecDeque, io::IoSlice};

use bytes::{Buf, Bytes, BytesMut};

use crate::pool;

/// Bytes waiting to be written, as a [`Buf`] of chunks.
///
/// Small frames are copied into one contiguous tail so that many of them go out in one
/// write; large payloads are queued as their own chunk without a copy. Write with
/// [`Buf::chunks_vectored`] and a vectored write, then [`Buf::advance`] by what was written.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Chunks in order, all before `tail`. Boxed on purpose: only payloads of `COPY_THRESHOLD`
    /// bytes or more use it, so every connection keeps a pointer instead of the queue's 32 bytes.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Bytes>>>,
    /// The last, growable chunk.
    tail: BytesMut,
    /// Total bytes in `queue` and `tail`.
    len: usize,
    /// The size class of `tail` if it came from the buffer cache and can go back; 0 if not.
    tail_class: u32,
    /// The most the tail held since it was last taken: the size to take next time, so that a
    /// burst of replies does not grow the tail (and copy it) step by step every time.
    tail_peak: u32,
}

/// Payloads at least this long are queued by reference instead of copied.
///
/// Copying a few KiB costs less than the extra `iovec` and the per-chunk bookkeeping of a
/// vectored write (measured with the end-to-end benchmark at 1 KiB).
pub(crate) const COPY_THRESHOLD: usize = 4096;

impl Outgoing {
    /// Append bytes by copying them into the tail.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.tail_mut(bytes.len()).extend_from_slice(bytes);
        self.commit_tail(bytes.len());
    }

    /// Append a payload: copied if small, queued by reference if large.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if bytes.len() < COPY_THRESHOLD {
            self.extend(&bytes);
            return;
        }
        if !self.tail.is_empty() {
            let head = self.tail.split().freeze();
            self.queue.get_or_insert_default().push_back(head);
        }
        self.len += bytes.len();
        self.queue.get_or_insert_default().push_back(bytes);
    }

    /// Append a frame: its encoded header `head`, then `payload`, both copied into the tail with
    /// one reservation.
    #[inline(always)]
    pub(crate) fn extend_frame(&mut self, head: &[u8], payload: &[u8]) {
        let n = head.len() + payload.len();
        let tail = self.tail_mut(n);
        let spare = &mut tail.spare_capacity_mut()[..n];
        // SAFETY: `spare` is `n` writable bytes (`tail_mut` made the room; the slice is checked):
        // `head`, then `payload` right after it, `head.len() + payload.len() == n`; a `&mut` and
        // a `&` cannot overlap.
        unsafe {
            let dst = spare.as_mut_ptr().cast::<u8>();
            std::ptr::copy_nonoverlapping(head.as_ptr(), dst, head.len());
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(head.len()), payload.len());
        }
        // SAFETY: the `n` bytes after the current length were just written.
        unsafe { tail.set_len(tail.len() + n) };
        self.commit_tail(n);
    }

    /// The tail with room for `additional` more bytes, to encode into directly; call
    /// [`commit_tail`](Self::commit_tail) after. An empty tail comes from the buffer cache.
    #[inline]
    pub(crate) fn tail_mut(&mut self, additional: usize) -> &mut BytesMut {
        if self.tail.capacity() - self.tail.len() < additional {
            self.grow_tail(additional);
        }
        &mut self.tail
    }

    #[inline(never)]
    fn grow_tail(&mut self, additional: usize) {
        if self.tail.capacity() == 0 && self.tail_class == 0 {
            (self.tail, self.tail_class) = pool::take(additional.max(self.tail_peak as usize));
            self.tail_peak = 0;
        } else {
            pool::reserve(&mut self.tail, &mut self.tail_class, additional);
        }
    }

    /// Account for `n` bytes written straight into [`tail_mut`](Self::tail_mut).
    #[inline]
    pub(crate) fn commit_tail(&mut self, n: usize) {
        self.len += n;
        // At most `MAX_CLASS`: fits a `u32`.
        self.tail_peak = self.tail_peak.max(self.tail.len().min(pool::MAX_CLASS) as u32);
    }

    /// When nothing is queued, give the tail's allocation back to the buffer cache and drop
    /// the queue's.
    pub(crate) fn release(&mut self) {
        if self.len != 0 {
            return;
        }
        // The tail's `capacity` does not count the bytes already written out (`advance`), so a
        // tail written out in full reports 0 while it still holds its allocation: hand it back
        // whatever it reports (`give` drops what it cannot keep).
        pool::give(std::mem::take(&mut self.tail), std::mem::take(&mut self.tail_class));
        self.queue = None;
    }
}

impl Outgoing {
    /// When nothing is queued, keep the tail's allocation for reuse in place (see
    /// [`pool::keep`]) and drop the queue's.
    pub(crate) fn recycle(&mut self) {
        if self.len == 0 {
            pool::keep(&mut self.tail, &mut self.tail_class);
            self.queue = None;
        }
    }
}

impl Buf for Outgoing {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.queue.as_ref().and_then(|q| q.front()) {
            Some(b) => b,
            None => &self.tail,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let queued = self.queue.iter().flat_map(|q| q.iter());
        for chunk in queued.map(|b| &b[..]).chain(std::iter::once(&self.tail[..])) {
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
        while cnt > 0 {
            match self.queue.as_mut().and_then(|q| q.front_mut()) {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    // Invariant: `front_mut` just found an element.
                    self.queue.as_mut().and_then(|q| q.pop_front());
                }
                Some(front) => {
                    front.advance(cnt);
                    break;
                }
                None => {
                    self.tail.advance(cnt);
                    break;
                }
            }
        }
        if self.len == 0 {
            // Reuse the tail's allocation from its start.
            self.tail.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_copied_and_queued_chunks() {
        let mut out = Outgoing::default();
        out.extend(b"ab");
        out.push(Bytes::from(vec![b'x'; 5000]));
        out.extend(b"cd");
        out.push(Bytes::from_static(b"ef"));
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
}
