//! A small per-thread cache of empty buffers.
//!
//! A connection holds no read or write buffer while it is idle (see
//! [`Connection::release_buffers`](crate::Connection::release_buffers)). Without this cache a
//! connection that goes idle after every message, as in request/response traffic, would pay an
//! allocation and a free for each buffer and message. Here a connection going idle hands its
//! buffer back, and the next connection to wake up on the same thread takes it.
//!
//! Buffers come in a few power-of-two sizes and only whole, unshared ones come back: a buffer
//! still referenced by a payload the application holds is freed when that payload is.
//! The cache keeps at most [`MAX_CACHED`] buffers of at most [`MAX_CLASS`] bytes per thread.

use std::cell::RefCell;

use bytes::BytesMut;

/// The smallest buffer size handed out.
pub(crate) const MIN_CLASS: usize = 4 << 10;
/// The largest buffer size the cache keeps; larger requests are allocated and freed as usual.
pub(crate) const MAX_CLASS: usize = 64 << 10;
/// How many buffers one thread keeps at most (at most 512 KiB).
const MAX_CACHED: usize = 8;

thread_local! {
    static CACHE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least `min` bytes of capacity, and its size class: the capacity to
/// hand back to [`give`] (0 when the buffer is too large to cache).
pub(crate) fn take(min: usize) -> (BytesMut, u32) {
    if min > MAX_CLASS {
        return (BytesMut::with_capacity(min), 0);
    }
    let class = min.max(MIN_CLASS).next_power_of_two();
    let cached = CACHE
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            // The most recently returned fitting buffer: likely still in the CPU cache.
            let at = cache.iter().rposition(|b| b.capacity() >= class)?;
            Some(cache.swap_remove(at))
        })
        .ok()
        .flatten();
    // Classes are at most `MAX_CLASS`, so they fit a `u32`.
    match cached {
        Some(buf) => {
            let class = buf.capacity() as u32;
            (buf, class)
        }
        None => (BytesMut::with_capacity(class), class as u32),
    }
}

/// Make room for `additional` more bytes in `buf`, of size class `class` (0: not from the
/// cache), keeping a cached buffer's allocation exactly its class: space is reclaimed in
/// place when possible, otherwise the contents move to a larger buffer and the old one goes
/// back. Buffers not from the cache grow as usual.
pub(crate) fn reserve(buf: &mut BytesMut, class: &mut u32, additional: usize) {
    if buf.capacity() - buf.len() >= additional {
        return;
    }
    if *class == 0 && buf.capacity() > 0 {
        buf.reserve(additional);
        return;
    }
    if *class != 0 && buf.try_reclaim(additional) {
        return;
    }
    let (mut bigger, bigger_class) = take(buf.len() + additional);
    bigger.extend_from_slice(buf);
    let old = std::mem::replace(buf, bigger);
    give(old, std::mem::replace(class, bigger_class));
}

/// Keep a buffer [`take`] gave out, cleared, for reuse where it is: on the terms of [`give`]
/// (whole and unshared again); otherwise drop it, leaving `buf` empty and `class` 0.
pub(crate) fn keep(buf: &mut BytesMut, class: &mut u32) {
    let c = *class as usize;
    buf.clear();
    // `try_reclaim` moves the view back to the start of the allocation if nothing else
    // references it.
    if c == 0 || c > MAX_CLASS || !buf.try_reclaim(c) || buf.capacity() != c {
        *buf = BytesMut::new();
        *class = 0;
    }
}

/// Hand back a buffer [`take`] gave out with size class `class`. It is kept only if it holds
/// its whole allocation again, unshared; otherwise it is dropped.
pub(crate) fn give(mut buf: BytesMut, mut class: u32) {
    keep(&mut buf, &mut class);
    if class == 0 {
        return;
    }
    let _ = CACHE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() < MAX_CACHED {
            cache.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_a_returned_buffer() {
        let (buf, class) = take(100);
        assert_eq!(class as usize, MIN_CLASS);
        let ptr = buf.as_ptr();
        give(buf, class);
        let (again, class) = take(10);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(class as usize, MIN_CLASS);
        assert!(again.is_empty());
    }

    #[test]
    fn a_buffer_shared_with_a_payload_is_not_kept() {
        let (mut buf, class) = take(MIN_CLASS);
        buf.extend_from_slice(b"hello");
        let payload = buf.split_to(5).freeze();
        let ptr = buf.as_ptr();
        give(buf, class);
        let (other, _) = take(MIN_CLASS);
        assert_ne!(other.as_ptr(), ptr.wrapping_sub(5), "the payload's buffer was reused");
        assert_eq!(&payload[..], b"hello");
    }

    #[test]
    fn an_unshared_buffer_is_reclaimed_whole() {
        let (mut buf, class) = take(MIN_CLASS);
        let start = buf.as_ptr();
        buf.extend_from_slice(b"hello");
        drop(buf.split_to(5).freeze());
        give(buf, class);
        let (again, _) = take(MIN_CLASS);
        assert_eq!(again.as_ptr(), start);
        assert_eq!(again.capacity(), class as usize);
    }

    #[test]
    fn reserve_keeps_cached_buffers_at_their_class() {
        let (mut buf, mut class) = take(10);
        buf.extend_from_slice(&[7; 3000]);
        drop(buf.split_to(2000));
        // Fits once the consumed front is reclaimed: same allocation.
        let start = buf.as_ptr();
        reserve(&mut buf, &mut class, 3000);
        assert_eq!(class as usize, MIN_CLASS);
        assert!(buf.capacity() - buf.len() >= 3000);
        assert_eq!(&buf[..], &[7; 1000][..]);
        assert_ne!(buf.as_ptr(), start);
        // Does not fit: moves to the next class, contents kept.
        reserve(&mut buf, &mut class, MIN_CLASS);
        assert_eq!(class as usize, 2 * MIN_CLASS);
        assert_eq!(buf.capacity(), class as usize);
        assert_eq!(&buf[..], &[7; 1000][..]);
    }

    #[test]
    fn large_buffers_are_not_cached() {
        let (buf, class) = take(MAX_CLASS + 1);
        assert_eq!(class, 0);
        assert!(buf.capacity() > MAX_CLASS);
        give(buf, class);
        assert!(CACHE.with_borrow(|c| c.iter().all(|b| b.capacity() <= MAX_CLASS)));
    }
}
