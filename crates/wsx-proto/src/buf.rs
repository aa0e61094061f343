//! Byte buffers sized in power-of-two classes.
//!
//! A connection's read buffer and write tail come and go with its work state (see
//! `connection/buffers.rs`), which goes back to a per-thread cache whenever the connection goes
//! idle, buffers attached. Sizing every buffer to a class, and keeping it at exactly its class,
//! makes a buffer left behind by one connection the right size for the next one to take it.

use bytes::BytesMut;

/// The smallest buffer size handed out.
pub(crate) const MIN_CLASS: usize = 4 << 10;
/// The largest buffer a connection keeps for reuse when it goes idle; larger ones are freed.
pub(crate) const MAX_CLASS: usize = 64 << 10;

/// A buffer and its size class: the capacity it was allocated with, when it is reusable
/// (0 for buffers larger than [`MAX_CLASS`], which are freed when emptied).
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    pub(crate) bytes: BytesMut,
    class: u32,
}

impl Buffer {
    /// Make room for `additional` more bytes, keeping a classed buffer at exactly its class:
    /// space already consumed is reclaimed in place when that is enough, otherwise the contents
    /// move to a buffer of a larger class.
    #[inline]
    pub(crate) fn reserve(&mut self, additional: usize) {
        if self.bytes.capacity() - self.bytes.len() < additional {
            self.grow(additional);
        }
    }

    #[inline(never)]
    fn grow(&mut self, additional: usize) {
        if self.class != 0 && self.bytes.try_reclaim(additional) {
            return;
        }
        let min = self.bytes.len() + additional;
        if min > MAX_CLASS {
            // Exactly what was asked for: `BytesMut::reserve` doubles the allocation, so a frame
            // that a growth step came just short of was held up to twice (2.03 x measured; the
            // callers already grow their requests geometrically). Through a `Vec` so that the
            // allocator can resize in place (`realloc`, `mremap` for large blocks); a buffer a
            // payload still shares is copied out, as `reserve` would.
            let mut vec = Vec::from(std::mem::take(&mut self.bytes));
            vec.reserve_exact(additional);
            // Collecting a `Vec`'s own iterator takes over its allocation (no copy).
            let start = vec.as_ptr();
            self.bytes = vec.into_iter().collect();
            debug_assert_eq!(self.bytes.as_ptr(), start, "the allocation was copied");
            self.class = 0;
            return;
        }
        let class = min.max(MIN_CLASS).next_power_of_two();
        let mut bigger = BytesMut::with_capacity(class);
        bigger.extend_from_slice(&self.bytes);
        self.bytes = bigger;
        // At most `MAX_CLASS`: fits a `u32`.
        self.class = class as u32;
    }

    /// The buffer's size class: its allocation's size, or 0 if it is not a classed buffer.
    pub(crate) fn class(&self) -> usize {
        self.class as usize
    }

    /// Empty the buffer and keep its allocation for reuse if it is whole and unshared again
    /// (no payload handed out still refers to it) and of a class; otherwise free it. Returns
    /// whether it was kept.
    pub(crate) fn recycle(&mut self) -> bool {
        let class = self.class as usize;
        self.bytes.clear();
        // `try_reclaim` moves the view back to the start of the allocation if nothing else
        // references it.
        let kept = class != 0 && self.bytes.try_reclaim(class) && self.bytes.capacity() == class;
        if !kept {
            *self = Self::default();
        }
        kept
    }

    /// Free the allocation.
    pub(crate) fn free(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_class_and_reclaims_in_place() {
        let mut buf = Buffer::default();
        buf.reserve(100);
        assert_eq!(buf.bytes.capacity(), MIN_CLASS);
        buf.bytes.extend_from_slice(&[7; 3000]);
        drop(buf.bytes.split_to(2000));
        // Fits once the consumed front is reclaimed: same class, contents kept.
        buf.reserve(3000);
        assert_eq!(buf.class as usize, MIN_CLASS);
        assert!(buf.bytes.capacity() - buf.bytes.len() >= 3000);
        assert_eq!(&buf.bytes[..], &[7; 1000][..]);
        // Does not fit: the next class, contents kept.
        buf.reserve(MIN_CLASS);
        assert_eq!(buf.class as usize, 2 * MIN_CLASS);
        assert_eq!(buf.bytes.capacity(), 2 * MIN_CLASS);
        assert_eq!(&buf.bytes[..], &[7; 1000][..]);
    }

    #[test]
    fn a_buffer_shared_with_a_payload_is_not_kept() {
        let mut buf = Buffer::default();
        buf.reserve(10);
        buf.bytes.extend_from_slice(b"hello");
        let payload = buf.bytes.split_to(5).freeze();
        assert!(!buf.recycle());
        assert_eq!(buf.bytes.capacity(), 0);
        assert_eq!(&payload[..], b"hello");
    }

    #[test]
    fn an_unshared_buffer_is_kept_whole() {
        let mut buf = Buffer::default();
        buf.reserve(10);
        let start = buf.bytes.as_ptr();
        buf.bytes.extend_from_slice(b"hello");
        drop(buf.bytes.split_to(5).freeze());
        assert!(buf.recycle());
        assert_eq!(buf.bytes.as_ptr(), start);
        assert_eq!(buf.bytes.capacity(), MIN_CLASS);
    }

    #[test]
    fn large_buffers_grow_to_exactly_what_is_asked() {
        let mut buf = Buffer::default();
        buf.reserve(MAX_CLASS);
        buf.bytes.extend_from_slice(&[7; MAX_CLASS]);
        drop(buf.bytes.split_to(1000));
        buf.reserve(3 * MAX_CLASS);
        assert_eq!(buf.class, 0);
        // The consumed front is dropped, and nothing is allocated past the request.
        assert_eq!(buf.bytes.capacity(), 4 * MAX_CLASS - 1000);
        buf.bytes.extend_from_slice(&[8; 3 * MAX_CLASS]);
        assert_eq!(&buf.bytes[..MAX_CLASS - 1000], &[7; MAX_CLASS - 1000][..]);
        // Shared with a payload: copied out, the payload keeps its bytes.
        let payload = buf.bytes.split_to(10).freeze();
        buf.reserve(MAX_CLASS);
        assert_eq!(buf.bytes.capacity(), buf.bytes.len() + MAX_CLASS);
        assert_eq!(&payload[..], &[7; 10][..]);
        assert_eq!(buf.bytes[buf.bytes.len() - 1], 8);
    }

    #[test]
    fn large_buffers_are_not_kept() {
        let mut buf = Buffer::default();
        buf.reserve(MAX_CLASS + 1);
        assert_eq!(buf.class, 0);
        assert!(!buf.recycle());
        assert_eq!(buf.bytes.capacity(), 0);
    }
}
