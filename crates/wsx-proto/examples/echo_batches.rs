//! The engine's echo path with no I/O and no runtime, for counting instructions: a server
//! connection is fed `BATCHES` reads of `FRAMES` masked client frames of `SIZE` bytes each and
//! echoes every message through `drain_messages` (or, with `API=events`, through `next_event`
//! and `send`), draining `transmit` and releasing its buffers after each read, as the tokio
//! driver does. With `CHUNK=n`, the same bytes arrive in reads of `n` bytes instead, so that
//! frames are split across reads. Deterministic: under callgrind the same build gives the same
//! count every time, so `scripts/bench-instructions --engine` can compare builds to the
//! instruction.
//!
//! `BATCHES=1000 FRAMES=16 SIZE=20 cargo run --release -p wsx-proto --example echo_batches`

use std::time::Instant;

use bytes::Buf;
use wsx_proto::{Accept, Config, Connection, Event, mask::apply_mask};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (batches, frames, size) = (env("BATCHES", 1000), env("FRAMES", 16), env("SIZE", 20));
    let events = std::env::var("API").is_ok_and(|api| api == "events");
    let now = Instant::now();
    let mut conn = Connection::server(&Config::default(), now).expect("valid config");
    conn.receive(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        now,
    );
    let Some(Event::Request(_)) = conn.next_event() else { panic!("no request") };
    conn.accept(&Accept::new()).expect("accept");
    write_out(&mut conn);

    // One read's worth of binary frames, masked as a client sends them.
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut read = Vec::new();
    for i in 0..frames {
        read.push(0x82);
        match size {
            0..=125 => read.push(0x80 | size as u8),
            126..=65535 => {
                read.push(0x80 | 126);
                read.extend_from_slice(&(size as u16).to_be_bytes());
            }
            _ => {
                read.push(0x80 | 127);
                read.extend_from_slice(&(size as u64).to_be_bytes());
            }
        }
        read.extend_from_slice(&key);
        let start = read.len();
        read.extend((0..size).map(|j| (i + j) as u8));
        apply_mask(&mut read[start..], key, 0);
    }

    let chunk = env("CHUNK", read.len()).max(1);
    let total = batches * read.len();
    let (mut fed, mut echoed) = (0, 0usize);
    while fed < total {
        // The next `chunk` bytes of the stream of `batches` copies of `read`.
        let buf = conn.read_buffer();
        let end = (fed + chunk).min(total);
        while fed < end {
            let at = fed % read.len();
            let n = (read.len() - at).min(end - fed);
            buf.extend_from_slice(&read[at..at + n]);
            fed += n;
        }
        conn.receive_buffered(now);
        if events {
            while let Some(event) = conn.next_event() {
                if let Event::Message(m) = event {
                    echoed += 1;
                    conn.send(m).expect("open");
                }
            }
        } else {
            conn.drain_messages(|m, replies| {
                echoed += 1;
                let _ = replies.send(m);
            });
            while conn.next_event().is_some() {}
        }
        write_out(&mut conn);
        conn.release_buffers();
    }
    assert_eq!(echoed, batches * frames);
    println!("echoed {echoed} messages");
}

/// Take everything queued, as a socket that accepts it all would.
fn write_out(conn: &mut Connection) {
    #[allow(unused_mut)]
    let mut out = conn.transmit();
    let n = out.remaining();
    out.advance(n);
}
