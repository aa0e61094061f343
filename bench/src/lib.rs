//! Shared bits of the echo benchmark binaries: argument parsing and socket setup.
//!
//! The servers (`echo-wsx`, `echo-tungstenite`, `echo-fastws`) differ only in the WebSocket
//! library; each uses the same multi-thread tokio runtime, binds 127.0.0.1, and sets
//! `TCP_NODELAY` on every accepted socket. See `bench/README.md`.

use std::net::SocketAddr;

/// The value of `--name VALUE` (or `--name=VALUE`) in the process arguments, if present.
pub fn arg(name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == flag {
            return args.next();
        }
        if let Some(v) = a.strip_prefix(&flag).and_then(|rest| rest.strip_prefix('=')) {
            return Some(v.to_owned());
        }
    }
    None
}

/// `--name` parsed as `T`, or `default` when absent; exits with a message when malformed.
pub fn arg_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match arg(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("invalid value for --{name}: {v:?}");
            std::process::exit(2)
        }),
    }
}

/// The address a server listens on: 127.0.0.1 and `--port` (default 9001).
pub fn listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], arg_or("port", 9001u16)))
}

/// The fastwebsockets echo of `echo-fastws` and `echo-axum-fastws`: once the upgrade completes,
/// echo each text or binary frame through a `FragmentCollector` (auto-close and auto-pong on)
/// until the peer closes.
pub async fn fastws_echo(fut: fastwebsockets::upgrade::UpgradeFut) -> Result<(), fastwebsockets::WebSocketError> {
    use fastwebsockets::OpCode;
    let mut ws = fastwebsockets::FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}
