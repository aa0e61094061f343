//! Raw TCP echo on plain epoll (`mio`), with no WebSocket framing and no handshake: the ceiling
//! of the loopback path that the WebSocket servers are measured against (issue 7).
//!
//! One thread, edge-triggered readiness. Every byte read is written straight back; what the
//! socket does not take is kept per connection and written on the next writable event (reads
//! pause meanwhile, so a slow reader gets back-pressure). An idle connection holds no buffer:
//! only the socket and an empty `Vec`. Drive it with `loadgen --raw`, which sends the same
//! masked frames as against a WebSocket server and expects its own bytes back.
//!
//! ```text
//! echo-raw --port 9001
//! ```

use std::io::{self, Read, Write};

use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
};
use wsx_bench::listen_addr;

const LISTENER: Token = Token(usize::MAX);
/// The shared read buffer: one read takes at most this much.
const READ_CHUNK: usize = 64 * 1024;

struct Conn {
    tcp: TcpStream,
    /// Bytes read but not yet written back (empty unless the socket's send buffer filled).
    pending: Vec<u8>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("echo-raw: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let mut listener = TcpListener::bind(listen_addr())?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    // Connections by token; freed slots are reused.
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in &events {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut tcp, _)) => {
                            tcp.set_nodelay(true)?;
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(&mut tcp, Token(i), Interest::READABLE | Interest::WRITABLE)?;
                            conns[i] = Some(Conn { tcp, pending: Vec::new() });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // Out of descriptors and the like: leave the rest in the backlog.
                        Err(e) => {
                            eprintln!("echo-raw: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else { continue };
            if !serve(c, &mut buf) {
                if let Some(mut c) = conns[i].take() {
                    let _ = poll.registry().deregister(&mut c.tcp);
                }
                free.push(i);
            }
        }
    }
}

/// Flush what is pending, then read and echo until the socket runs dry (edge-triggered) or its
/// send buffer fills. Returns false once the connection is finished.
fn serve(c: &mut Conn, buf: &mut [u8]) -> bool {
    match flush(&mut c.tcp, &mut c.pending) {
        Ok(true) => {}
        Ok(false) => return true,
        Err(_) => return false,
    }
    loop {
        match c.tcp.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                let mut off = 0;
                while off < n {
                    match c.tcp.write(&buf[off..n]) {
                        Ok(0) => return false,
                        Ok(w) => off += w,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Keep the rest and stop reading until the socket drains.
                            c.pending.extend_from_slice(&buf[off..n]);
                            return true;
                        }
                        Err(_) => return false,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Write out `pending`; `Ok(true)` once it is empty (its memory released).
fn flush(tcp: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    let mut off = 0;
    while off < pending.len() {
        match tcp.write(&pending[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pending.drain(..off);
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    *pending = Vec::new();
    Ok(true)
}
