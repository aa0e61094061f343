//! The README's bound on what one untrusted peer can make a connection hold, checked against
//! the worst case this test can construct: permessage-deflate negotiated, a compressed message
//! assembled to near `max_message_size` with its last frame all but one byte in the read
//! buffer (so the inflater is live), while the peer reads nothing and the application has
//! queued up to `write_high_water` plus one message, the first of them compressed (so the
//! compressor is live). Then the send deadline fires and everything is freed.
//!
//! Heap bytes are counted by `wsx_testkit::CountingAlloc` on the test's own thread, the thread
//! the engine runs on. Sizes are scaled down from the defaults (4 MiB messages, 1 MiB frames,
//! 256 KiB high-water mark) to keep the test fast; the formula is the same.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use wsx_proto::{Accept, CloseCode, Config, Connection, DeflateConfig, Event, Frame, Message, OpCode, OsSeededRng};
use wsx_testkit::{CountingAlloc, measure};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

const MAX_MESSAGE: usize = 4 * MIB;
const MAX_FRAME: usize = MIB;
const HIGH_WATER: usize = 256 * KIB;
/// The largest message the application sends.
const APP_MESSAGE: usize = 64 * KIB;
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The README's terms for the compression state (15-bit windows, `mem_level` 5).
const INFLATER: usize = 46 * KIB;
const COMPRESSOR: usize = 273 * KIB;
/// The room the read buffer keeps between frames for a next frame as large as the last one.
const NEXT_FRAME: usize = 256 * KIB;
/// The engine's small allocations (event queue, close state, boxes, frame headers).
const SLACK: usize = 64 * KIB;

/// The README's formula: what one connection can be made to hold.
fn bound() -> usize {
    // A frame (a compressed one may be 1/16 over the limit) and its header, and the room kept
    // for a next frame as large as the last one.
    let read_buffer = MAX_FRAME * 17 / 16 + 14 + NEXT_FRAME;
    let receiving = read_buffer + MAX_MESSAGE + INFLATER;
    // The write queue, plus the compressed copy of the message being sent.
    let sending = HIGH_WATER + APP_MESSAGE + COMPRESSOR + APP_MESSAGE;
    receiving + sending + SLACK
}

fn config() -> Config {
    Config::default()
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_FRAME)
        .write_high_water(HIGH_WATER)
        .send_timeout(Some(SEND_TIMEOUT))
        .deflate(Some(DeflateConfig::default()))
}

/// Everything `from` has to send.
fn take(from: &mut Connection) -> Vec<u8> {
    let mut out = from.transmit();
    out.copy_to_bytes(out.remaining()).to_vec()
}

/// Feed `bytes` as a socket driver does: into `read_buffer`, at most 64 KiB at a time, taking
/// events after each read.
fn read_all(conn: &mut Connection, mut bytes: &[u8], now: Instant) {
    while !bytes.is_empty() {
        let buf = conn.read_buffer();
        let n = (buf.capacity() - buf.len()).min(64 * KIB).min(bytes.len());
        assert!(n > 0, "read_buffer offered no room");
        buf.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        conn.receive_buffered(now);
        while let Some(event) = conn.next_event() {
            assert!(!matches!(event, Event::Closed(_)), "the connection ended early: {event:?}");
        }
    }
}

/// Incompressible bytes (xorshift).
fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn the_worst_case_stays_within_the_readme_formula_and_is_freed_at_the_send_deadline() {
    let now = Instant::now();
    let request = http::Request::builder().uri("ws://localhost/").body(()).unwrap();
    let mut client = Connection::client(&config(), &request, OsSeededRng::new(), now).unwrap();
    let mut server = Connection::server(&config(), now).unwrap();
    server.receive(&take(&mut client), now);
    assert!(matches!(server.next_event(), Some(Event::Request(_))));
    server.accept(&Accept::new()).unwrap();
    client.receive(&take(&mut server), now);
    assert!(matches!(client.next_event(), Some(Event::Opened(_))));
    assert!(server.is_compressed(), "permessage-deflate negotiated");

    // The peer's message, framed in advance: four compressed fragments of incompressible
    // bytes, just under the message limit; the last frame is held back by one byte.
    let piece = MAX_FRAME - 64 * KIB;
    let mut attack = Vec::new();
    for i in 0..4 {
        let opcode = if i == 0 { OpCode::Binary } else { OpCode::Continuation };
        client.send_frame(Frame { fin: i == 3, opcode, payload: noise(piece, i as u64 + 1) }).unwrap();
        attack.extend(take(&mut client));
    }
    attack.pop();

    let (reason, usage) = measure(|| {
        // The application: one compressed message, then plain ones until the queue is over
        // the mark (it respects backpressure, so it stops there).
        server.send_compressed(Message::Binary(Bytes::from(vec![b'a'; APP_MESSAGE])), true).unwrap();
        let mut seed = 100;
        while !server.is_write_blocked() {
            seed += 1;
            server.send_compressed(Message::Binary(noise(APP_MESSAGE, seed)), false).unwrap();
        }
        assert!(server.buffered_amount() <= HIGH_WATER + APP_MESSAGE + 64);
        // The peer sends its message and reads nothing.
        let ((), receiving) = measure(|| read_all(&mut server, &attack, now));
        eprintln!("queued {} KiB; receiving: {receiving:?}", server.buffered_amount() / KIB);
        // The send deadline: the clock starts at the next timer call, and runs out.
        assert_eq!(server.deadline(), Some(now));
        server.handle_timeout(now);
        server.handle_timeout(now + SEND_TIMEOUT);
        let mut reason = None;
        while let Some(event) = server.next_event() {
            if let Event::Closed(r) = event {
                reason = Some(r);
            }
        }
        server.release_buffers();
        reason.expect("the connection ended")
    });
    eprintln!(
        "peak {} KiB, bound {} KiB, retained after the send deadline {} bytes",
        usage.peak / KIB,
        bound() / KIB,
        usage.retained
    );
    assert_eq!(reason.code(), CloseCode::POLICY, "{reason}");
    assert!(usage.peak <= bound(), "peak {} over the bound {}", usage.peak, bound());
    // The case reached what the formula allows for: the message buffer and the write queue.
    assert!(usage.peak >= 3 * MAX_MESSAGE / 4 + HIGH_WATER, "peak {}: the worst case was not reached", usage.peak);
    assert!(usage.retained <= SLACK as isize, "{} bytes still held after the send deadline", usage.retained);
}
