//! The queue of bytes waiting to be written to the peer.

use std::{collections::VecDeque, io::IoSlice};

use bytes::{Buf, Bytes, BytesMut};

/// Bytes waiting to be written, as a [`Buf`] of chunks.
///
/// Small frames are copied into one contiguous tail so that many of them go out in one
/// write; large payloads are queued as their own chunk without a copy. Write with
/// [`Buf::chunks_vectored`] and a vectored write, then [`Buf::advance`] by what was written.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Chunks in order, all before `tail`.
    queue: VecDeque<Bytes>,
    /// The last, growable chunk.
    tail: BytesMut,
    /// Total bytes in `queue` and `tail`.
    len: usize,
}

/// Payloads at least this long are queued by reference instead of copied.
///
/// Copying a few KiB costs less than the extra `iovec` and the per-chunk bookkeeping of a
/// vectored write (measured with the end-to-end benchmark at 1 KiB).
pub(crate) const COPY_THRESHOLD: usize = 4096;

impl Outgoing {
    /// Append bytes by copying them into the tail.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Append a payload: copied if small, queued by reference if large.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if bytes.len() < COPY_THRESHOLD {
            self.extend(&bytes);
            return;
        }
        if !self.tail.is_empty() {
            self.queue.push_back(self.tail.split().freeze());
        }
        self.len += bytes.len();
        self.queue.push_back(bytes);
    }

    /// The tail, to encode into directly; call [`commit_tail`](Self::commit_tail) after.
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Account for `n` bytes written straight into [`tail_mut`](Self::tail_mut).
    pub(crate) fn commit_tail(&mut self, n: usize) {
        self.len += n;
    }

    /// When nothing is queued, drop the queue's allocation, and the tail's unless it has room
    /// for at most `keep` bytes (0: drop it whatever its size).
    pub(crate) fn shrink(&mut self, keep: usize) {
        if self.len != 0 {
            return;
        }
        // The tail's `capacity` does not count the bytes already written out (`advance`), so a
        // tail written out in full reports 0 while it still holds its allocation.
        if keep == 0 || self.tail.capacity() > keep {
            self.tail = BytesMut::new();
        }
        if self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }
}

impl Buf for Outgoing {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.queue.front() {
            Some(b) => b,
            None => &self.tail,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in self.queue.iter().map(|b| &b[..]).chain(std::iter::once(&self.tail[..])) {
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
            match self.queue.front_mut() {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.queue.pop_front();
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
