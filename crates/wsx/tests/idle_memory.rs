//! What an idle connection costs a `wsx::Server`: the heap bytes its connections hold once their
//! handshake is done (counted by a global allocator, so without the allocator's own overhead),
//! and the sizes of the engine and the socket wrapper, which make up most of each connection's
//! task.
//!
//! The budgets leave a little room above what is measured now; a change that breaks one should
//! say why the extra memory is worth it (the benchmark is `loadgen --idle`, see bench/README.md).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use wsx::{Server, WebSocket};

#[path = "../examples/shared/echo.rs"]
mod shared;

/// Heap bytes the server may hold per idle connection.
///
/// Measured at 711: the connection's task (384: tokio rounds it up to a multiple of 128, and
/// most of it is the handler's future holding the `WebSocket`), tokio's registration of the
/// socket (256), the server's `JoinSet` entry (56) and the connection's waker slot for the
/// shutdown (16, plus the table's spare room). The engine hands its read buffer, write queue and
/// events (its busy state) back to per-thread caches when idle, drops the handshake's state once
/// it is over, and allocates keep-alive, idle-timer and subprotocol state only when used. The
/// budget fails when the task grows by a 128-byte step.
///
/// The same with the `metrics` feature compiled in (its counters' pointer in the driver): the
/// split writer's waker left the driver for the halves' shared state, which paid for it.
const BUDGET_PER_CONNECTION: usize = 768;

/// Most bytes of a `Connection`: it is part of every connection's task, for its whole life.
/// With `WEBSOCKET_BUDGET`, it keeps the echo handler's task within 384 bytes.
const CONNECTION_BUDGET: usize = 96;

/// Most bytes of a `WebSocket<TcpStream>` (the engine, the socket and the driver's state).
const WEBSOCKET_BUDGET: usize = 208;

/// Connections opened before the baseline (warms up the runtime, the server's task set and
/// tokio's registration slabs), then after it.
const WARM_UP: usize = 50;
const MEASURED: usize = 200;

/// Counts every thread's allocations: the server's tokio workers are what is measured, so the
/// figure is process-wide (`wsx_testkit::process`). The binary's other test allocates next to
/// nothing, and nextest runs each test in a process of its own.
#[global_allocator]
static ALLOCATOR: wsx_testkit::CountingAlloc = wsx_testkit::CountingAlloc;

#[test]
fn engine_and_socket_stay_small() {
    let connection = size_of::<wsx::proto::Connection>();
    assert!(connection <= CONNECTION_BUDGET, "Connection is {connection} bytes, budget {CONNECTION_BUDGET}");
    let websocket = size_of::<WebSocket<tokio::net::TcpStream>>();
    eprintln!("sizes: connection {connection} websocket {websocket}");
    assert!(websocket <= WEBSOCKET_BUDGET, "WebSocket<TcpStream> is {websocket} bytes, budget {WEBSOCKET_BUDGET}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_little_memory() {
    // The server the benchmark measures (`examples/echo_server.rs`): its settings
    // (permessage-deflate accepted, though these clients do not offer it) and its echo loop.
    let server = Server::builder().config(shared::server_config()).bind("127.0.0.1:0").await.expect("bind");
    let addr = server.local_addr().expect("local_addr");
    let shutdown = server.shutdown_handle();
    let serving = tokio::spawn(server.serve(|ws, _info| shared::echo(ws)));

    let clients = Vec::with_capacity(WARM_UP + MEASURED);
    let clients = open(addr, clients, WARM_UP).await;
    let before = settled_live_bytes().await;
    let clients = open(addr, clients, MEASURED).await;
    let after = settled_live_bytes().await;
    let per_connection = after.saturating_sub(before) / MEASURED;
    eprintln!("{per_connection} heap bytes per idle connection (budget {BUDGET_PER_CONNECTION})");
    assert!(
        per_connection <= BUDGET_PER_CONNECTION,
        "{per_connection} heap bytes per idle connection, budget {BUDGET_PER_CONNECTION}"
    );

    drop(clients);
    shutdown.shutdown();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("shutdown timed out")
        .expect("serve panicked")
        .expect("serve failed");
}

/// Open `n` more connections to `addr` and complete their handshakes, with blocking sockets on
/// a thread of their own so that the client side allocates (almost) nothing on the heap.
async fn open(addr: SocketAddr, mut clients: Vec<TcpStream>, n: usize) -> Vec<TcpStream> {
    tokio::task::spawn_blocking(move || {
        for _ in 0..n {
            let mut tcp = TcpStream::connect(addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
            tcp.write_all(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .expect("write the request");
            let mut head = [0u8; 1024];
            let mut len = 0;
            while !head[..len].ends_with(b"\r\n\r\n") {
                let n = tcp.read(&mut head[len..]).expect("read the response");
                assert!(n > 0, "the server closed during the handshake");
                len += n;
            }
            assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head[..len]));
            clients.push(tcp);
        }
        clients
    })
    .await
    .expect("client thread panicked")
}

/// The live heap bytes once the server has settled (its connection tasks have finished the
/// handshake and gone idle): the count no longer changes over 50 ms.
async fn settled_live_bytes() -> usize {
    let mut last = wsx_testkit::process().held;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = wsx_testkit::process().held;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}
