//! A `redis-server` of a test's own, on a free loopback port, killed by PID when dropped.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

/// A running `redis-server` (`$WSX_REDIS_SERVER`, else `/usr/bin/redis-server`; `bash
/// scripts/setup-peers` installs it), with no persistence, listening on 127.0.0.1 only.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Start one on a free port; panics (naming the setup script) if it cannot.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        Self::on(port)
    }

    /// Start one on `port` (to restart a killed one where its clients expect it).
    pub fn on(port: u16) -> Self {
        Self::on_with(port, &[])
    }

    /// Start one on a free port with more command-line options (e.g. `--tls-port`); it still
    /// answers `PING` in plain text on [`port`](Self::port).
    pub fn start_with(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        Self::on_with(port, args)
    }

    /// Start one on `port` with more command-line options (to restart one with its data
    /// directory, say).
    pub fn on_with(port: u16, extra: &[&str]) -> Self {
        let program = std::env::var("WSX_REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
        let child = Command::new(&program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} ({e}): run `bash scripts/setup-peers`"));
        let server = Self { port, child };
        for _ in 0..400 {
            if server.ping() {
                return server;
            }
            sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not answer PING on port {port} within 10 s");
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether it answers `PING` (or asks for a password).
    pub fn ping(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        // A server that requires a password answers "-NOAUTH …": up all the same.
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    }

    /// Kill it (SIGKILL) and wait for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
