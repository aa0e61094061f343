//! The `echo_server` example on one current-thread runtime per core instead of one
//! multi-thread runtime: each thread binds the same port with `SO_REUSEPORT` and runs its own
//! `wsx::Server`; the kernel spreads new connections across the listeners. A connection then
//! stays on one thread, with no work stealing and no cross-thread wake-ups (about 9 % fewer
//! instructions per echoed message in the closed-loop benchmark; see docs/performance.md).
//!
//! ```sh
//! THREADS=2 cargo run --release -p wsx --example echo_per_core   # ws://127.0.0.1:9001
//! ```
//!
//! `THREADS` defaults to the CPUs this process may run on. Ctrl-C closes every connection with
//! 1001 on every thread. Linux and the BSDs only (`SO_REUSEPORT`).

use std::net::SocketAddr;

use tokio::{net::TcpSocket, sync::watch};
use wsx::Server;

#[path = "shared/echo.rs"]
mod shared;

fn main() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001u16);
    let addr: SocketAddr = format!("{host}:{port}").parse().map_err(std::io::Error::other)?;
    let threads = match std::env::var("THREADS").ok().and_then(|t| t.parse().ok()) {
        Some(n) => n,
        None => std::thread::available_parallelism()?.get(),
    };

    // One shutdown signal for every thread, raised by Ctrl-C on the main thread.
    let (stop, stopped) = watch::channel(false);
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let stopped = stopped.clone();
            std::thread::Builder::new().name(format!("wsx-{i}")).spawn(move || serve_one(addr, stopped))
        })
        .collect::<Result<_, _>>()?;
    println!("Echoing on ws://{addr} with {threads} threads");

    let signal = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    signal.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    let _ = stop.send(true);
    for worker in workers {
        // A worker that panicked has already printed why.
        let _ = worker.join();
    }
    Ok(())
}

/// One thread: a current-thread runtime serving its own listener on the shared port.
fn serve_one(addr: SocketAddr, mut stopped: watch::Receiver<bool>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseport(true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let server = Server::builder().config(shared::server_config()).from_listener(listener);
        let handler = |ws, _info| shared::echo(ws);
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        server.serve_with_shutdown(handler, shutdown).await.map_err(std::io::Error::other)
    })
}
