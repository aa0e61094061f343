//! What one connection holds while a peer sends it a message at the limit, uncompressed: at
//! most `max_message_size` for the message being assembled and `max_frame_size` for the read
//! buffer (plus, between frames, room for a next frame as large as the last one, at most
//! 256 KiB), plus small change (issue 16's bound; `deflate_bomb.rs` checks the compressed case,
//! and `docs/security.md` gives the whole formula).
//!
//! Heap bytes are counted by `wsx_testkit::CountingAlloc` on the test's own thread (the engine
//! runs on it), as the sizes requested: a buffer's whole capacity counts, touched or not.

use std::time::Instant;

use bytes::Buf;
use wsx_proto::{Accept, Config, Connection, Event, Message};
use wsx_testkit::{CountingAlloc, measure};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const MIB: usize = 1 << 20;
/// The read buffer's smallest classes, the event queue, and the engine's small allocations.
const SLACK: usize = 64 << 10;
/// The room the read buffer keeps, between frames, for a next frame as large as the last one.
const NEXT_FRAME: usize = 256 << 10;

/// A masked frame header (key 0, so the payload goes as is) for `len` bytes.
fn header(b0: u8, len: usize) -> Vec<u8> {
    let mut out = vec![b0, 0x80 | 127];
    out.extend_from_slice(&(len as u64).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out
}

fn open_server(config: &Config) -> Connection {
    let now = Instant::now();
    let mut server = Connection::server(config, now).expect("a valid config");
    server.receive(
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        now,
    );
    assert!(matches!(server.next_event(), Some(Event::Request(_))));
    server.accept(&Accept::new()).expect("accept");
    let mut out = server.transmit();
    let n = out.remaining();
    out.advance(n);
    server
}

/// Feed `bytes` as a socket driver does (into `read_buffer`, at most 64 KiB a read), taking
/// events after each read; returns the sizes of the messages received.
fn read_all(conn: &mut Connection, bytes: &[u8]) -> Vec<usize> {
    read_in(conn, bytes, 64 << 10)
}

/// [`read_all`] with reads of at most `most` bytes.
fn read_in(conn: &mut Connection, mut bytes: &[u8], most: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while !bytes.is_empty() {
        let buf = conn.read_buffer();
        let n = (buf.capacity() - buf.len()).min(most).min(bytes.len());
        assert!(n > 0, "read_buffer offered no room");
        buf.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        conn.receive_buffered(Instant::now());
        while let Some(event) = conn.next_event() {
            if let Event::Message(Message::Binary(data)) = event {
                sizes.push(data.len());
            }
        }
    }
    sizes
}

/// A message of exactly `limit` bytes: a first fragment of `first` bytes, then fragments of
/// `piece` bytes.
fn fragmented(limit: usize, first: usize, piece: usize) -> Vec<u8> {
    let mut bytes = header(0x02, first);
    bytes.resize(bytes.len() + first, 7);
    let mut total = first;
    while total < limit {
        let len = piece.min(limit - total);
        total += len;
        bytes.extend_from_slice(&header(if total == limit { 0x80 } else { 0x00 }, len));
        bytes.resize(bytes.len() + len, 7);
    }
    bytes
}

/// A fragmented message at the limit, whatever size its first fragment: growing the message
/// buffer by doubling from that size used to reach up to twice the limit (1.78 times the
/// default 64 MiB limit with a 12 MiB first fragment).
#[test]
fn a_fragmented_message_at_the_limit_holds_at_most_the_limit_and_a_frame() {
    let (limit, frame) = (8 * MIB, 2 * MIB);
    let config = Config::default().max_message_size(limit).max_frame_size(frame);
    for first in [MIB, 1_572_864, 1_835_008, frame] {
        let mut server = open_server(&config);
        let bytes = fragmented(limit, first, 256 << 10);
        let (sizes, usage) = measure(|| read_all(&mut server, &bytes));
        assert_eq!(sizes, [limit], "first fragment {first}");
        let bound = limit + frame + NEXT_FRAME + SLACK;
        assert!(
            usage.peak <= bound,
            "a {limit}-byte message whose first fragment is {first} bytes held {} bytes, {} over \
             max_message_size + max_frame_size",
            usage.peak,
            usage.peak.saturating_sub(limit + frame),
        );
    }
}

/// One frame at the frame limit: the read buffer holds the frame, and the message is the
/// frame's bytes (shared, not copied).
#[test]
fn a_frame_at_the_limit_holds_about_the_frame() {
    let frame = 8 * MIB;
    let config = Config::default().max_message_size(frame).max_frame_size(frame);
    let mut server = open_server(&config);
    let mut bytes = header(0x82, frame);
    bytes.resize(bytes.len() + frame, 7);
    let (sizes, usage) = measure(|| read_all(&mut server, &bytes));
    assert_eq!(sizes, [frame]);
    // The read buffer grows with what arrives, never past the frame.
    let bound = frame + SLACK;
    assert!(usage.peak <= bound, "an {frame}-byte frame held {} bytes", usage.peak);
}

/// Frames of every size up to the limit, read 64 KiB at a time or as much as the buffer offers
/// (a socket with the whole frame waiting): the read buffer holds the frame once, plus at most
/// one read's room. Its capacity used to double past 64 KiB, so a frame just over a power of
/// three times 64 KiB (and its header) was held nearly twice.
#[test]
fn the_read_buffer_holds_a_frame_once() {
    let limit = 16 * MIB;
    let config = Config::default().max_message_size(limit).max_frame_size(limit);
    // Sizes 5/4 apart, the limit, and each just past 3^k x 64 KiB.
    let mut frames: Vec<usize> =
        std::iter::successors(Some((64 << 10) + 1), |f| Some(f * 5 / 4)).take_while(|&f| f < limit).collect();
    frames.push(limit);
    frames.extend(std::iter::successors(Some(3 << 16), |f| Some(f * 3)).take_while(|&f| f < limit).map(|f| f + 1));
    for frame in frames {
        for most in [64 << 10, usize::MAX] {
            let mut server = open_server(&config);
            let mut bytes = header(0x82, frame);
            bytes.resize(bytes.len() + frame, 7);
            let (sizes, usage) = measure(|| read_in(&mut server, &bytes, most));
            assert_eq!(sizes, [frame]);
            let bound = frame + SLACK;
            assert!(
                usage.peak <= bound,
                "a {frame}-byte frame read {most} bytes at a time held {} bytes ({:.2} x the frame)",
                usage.peak,
                usage.peak as f64 / frame as f64,
            );
        }
    }
}
