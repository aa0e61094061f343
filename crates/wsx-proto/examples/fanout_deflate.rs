//! What a publish costs with permessage-deflate, per delivery, in the engine alone: `CONNS`
//! server connections that negotiated permessage-deflate (with context takeover, as browsers
//! and Node `ws` ask by default) each get `MESSAGES` price ticks of about `SIZE` bytes of JSON.
//!
//! - `MODE=shared`: one [`Prepared`] per tick, `send_prepared` to every connection: compressed
//!   once, without context, that frame shared by all (what `wsx::pubsub` does);
//! - `MODE=each`: `send` per connection: compressed once per connection, with its context;
//! - `MODE=plain`: `send_compressed(.., false)` per connection: not compressed.
//!
//! Prints the wire bytes per delivery and the time per delivery. The time is noisy on a
//! shared machine: count instructions with callgrind over two `MESSAGES` values and take the
//! difference (docs/performance.md, "Topics").
//!
//! `MODE=shared CONNS=100 MESSAGES=1000 SIZE=256 cargo run --release -p wsx-proto --example fanout_deflate`

use std::time::Instant;

use bytes::Buf;
use wsx_proto::{Accept, Config, Connection, DeflateConfig, Event, Message, Prepared};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Tick `i`: a JSON object of about `size` bytes whose fields change from tick to tick.
fn tick(i: usize, size: usize) -> String {
    let mut text = format!(
        "{{\"type\":\"tick\",\"symbol\":\"WSX-{}\",\"seq\":{i},\"bid\":{}.{:02},\"ask\":{}.{:02},\"volume\":{}",
        i % 7,
        100 + i % 13,
        i % 100,
        101 + i % 13,
        (i * 7) % 100,
        (i * 7919) % 100_000
    );
    let mut n = 0;
    while text.len() + 1 < size {
        text.push_str(&format!(",\"level{n}\":[{},{}]", 100 + (i + n) % 17, (i * 31 + n) % 1000));
        n += 1;
    }
    text.push('}');
    text
}

fn main() {
    let (conns, messages, size) = (env("CONNS", 100), env("MESSAGES", 1000), env("SIZE", 256));
    let mode = std::env::var("MODE").unwrap_or_else(|_| "shared".into());
    let now = Instant::now();
    let config = Config::default().deflate(Some(DeflateConfig::default()));
    let mut connections: Vec<Connection> = (0..conns)
        .map(|_| {
            let mut conn = Connection::server(&config, now).expect("valid config");
            conn.receive(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                  Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
                now,
            );
            let Some(Event::Request(_)) = conn.next_event() else { panic!("no request") };
            conn.accept(&Accept::new()).expect("accept");
            assert!(conn.is_compressed(), "permessage-deflate negotiated");
            drain(&mut conn);
            conn
        })
        .collect();

    let started = Instant::now();
    let mut wire = 0usize;
    for i in 0..messages {
        let text = tick(i, size);
        match mode.as_str() {
            "shared" => {
                let prepared = Prepared::text(text);
                for conn in &mut connections {
                    conn.send_prepared(&prepared).expect("open");
                    wire += drain(conn);
                }
            }
            "each" => {
                for conn in &mut connections {
                    conn.send(Message::text(text.clone())).expect("open");
                    wire += drain(conn);
                }
            }
            "plain" => {
                for conn in &mut connections {
                    conn.send_compressed(Message::text(text.clone()), false).expect("open");
                    wire += drain(conn);
                }
            }
            other => panic!("MODE must be shared, each or plain, not {other}"),
        }
    }
    let elapsed = started.elapsed();
    let deliveries = conns * messages;
    println!(
        "mode={mode} conns={conns} messages={messages} size={} deliveries={deliveries} wire_bytes_per_delivery={:.1} ns_per_delivery={:.0}",
        tick(0, size).len(),
        wire as f64 / deliveries as f64,
        elapsed.as_nanos() as f64 / deliveries as f64
    );
}

/// Take everything queued for the socket, as a driver's write would; the bytes taken.
fn drain(conn: &mut Connection) -> usize {
    let mut n = 0;
    loop {
        let mut out = conn.transmit();
        let len = out.remaining();
        if len == 0 {
            return n;
        }
        out.advance(len);
        n += len;
    }
}
