//! The engine over plain blocking `std::net`, no async runtime: an echo server that serves
//! one client at a time. It shows the whole sans-I/O contract in one loop, in the crate
//! documentation's order: take events (which parses what was read), write what `transmit`
//! holds and honour `wants_shutdown`, then block in a read no longer than `deadline`.
//!
//! `cargo run -p wsx-proto --example sans_io_blocking` (listens on 127.0.0.1:9002, env `PORT`)

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use bytes::Buf;
use wsx_proto::{Accept, Config, Connection, Event};

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "9002".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    println!("echo server on ws://{}", listener.local_addr()?);
    for stream in listener.incoming() {
        if let Err(e) = serve(stream?) {
            eprintln!("connection error: {e}");
        }
    }
    Ok(())
}

fn serve(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut conn = Connection::server(&Config::default(), Instant::now()).map_err(std::io::Error::other)?;
    let mut buf = vec![0; 16 << 10];
    let mut shut = false;
    loop {
        // Events first: taking them parses what was read, and answers pings and closes.
        while let Some(event) = conn.next_event() {
            match event {
                Event::Request(_) => conn.accept(&Accept::new()).map_err(std::io::Error::other)?,
                Event::Message(m) => conn.send(m).map_err(std::io::Error::other)?,
                Event::Closed(reason) => {
                    println!("closed: {reason}");
                    return Ok(());
                }
                _ => {}
            }
        }
        // Transmits: write everything queued, then half-close if asked.
        while conn.transmit().has_remaining() {
            let n = tcp.write(conn.transmit().chunk())?;
            conn.transmit().advance(n);
        }
        if conn.wants_shutdown() && !shut {
            let _ = tcp.shutdown(Shutdown::Write);
            shut = true;
        }
        // Timers: block in read no longer than the next deadline.
        let wait = conn.deadline().map(|d| d.saturating_duration_since(Instant::now()));
        tcp.set_read_timeout(wait.map(|w| w.max(Duration::from_millis(1))))?;
        match tcp.read(&mut buf) {
            Ok(0) => conn.receive_eof(Instant::now()),
            Ok(n) => conn.receive(&buf[..n], Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                conn.handle_timeout(Instant::now())
            }
            Err(e) => return Err(e),
        }
    }
}
