//! The send deadline over real sockets: a peer that never reads (a small receive buffer, so the
//! kernel soon stops taking our bytes) is failed after `send_timeout` with 1008 and what was
//! queued for it is freed; a peer that reads slowly but keeps reading is not failed.
//!
//! Heap figures come from a counting allocator over the whole process: nextest runs each test
//! in a process of its own.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};
use wsx::{CloseCode, Config, Message, WebSocket};

#[global_allocator]
static ALLOCATOR: wsx_testkit::CountingAlloc = wsx_testkit::CountingAlloc;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

const HIGH_WATER: usize = 64 << 10;
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
const MESSAGE: usize = 16 << 10;

/// A server connection on loopback with small socket buffers, and its raw client, handshake
/// done: the client has read the 101 response and nothing else.
async fn connect(client_rcvbuf: u32) -> (WebSocket<TcpStream>, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    // Accepted sockets inherit the listener's buffer sizes.
    socket.set_send_buffer_size(8 << 10).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener: TcpListener = socket.listen(8).unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(client_rcvbuf).unwrap();
    let mut client = client.connect(addr).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let config = Config::default().write_high_water(HIGH_WATER).send_timeout(Some(SEND_TIMEOUT));
    let server = wsx::accept_with(stream, &config, |_| Ok(wsx::Accept::new())).await.unwrap();
    let mut head = vec![0; 129];
    client.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"));
    (server, client)
}

#[tokio::test]
async fn a_peer_that_never_reads_is_failed_with_1008_and_its_memory_freed() {
    let (mut server, mut client) = connect(4096).await;
    let baseline = wsx_testkit::process().held;
    let mut blocked_at = None;
    let mut peak = 0;
    let error = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..100_000 {
            // A fresh buffer each time, so that the queue holds distinct allocations. `feed`
            // queues past the mark and waits there (`send` would wait for the queue to empty,
            // under the mark, where the deadline does not apply).
            let send = server.feed(Message::binary(vec![7u8; MESSAGE]));
            tokio::pin!(send);
            let before = Instant::now();
            // Measure once the socket has stopped taking bytes and the queue is over the mark.
            let result = tokio::select! {
                result = &mut send => result,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    blocked_at.get_or_insert(before);
                    peak = peak.max(wsx_testkit::process().held.saturating_sub(baseline));
                    send.await
                }
            };
            if let Err(e) = result {
                return e;
            }
        }
        panic!("the send deadline never fired");
    })
    .await
    .expect("failed within 30 s");
    let waited = blocked_at.expect("sending blocked").elapsed();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(error.close_code(), Some(CloseCode::POLICY), "{error}");
    // The deadline's clock starts in the first `feed` that waits (the driver polls its timer
    // there), so not before it began.
    assert!(waited >= SEND_TIMEOUT, "failed after {waited:?}");
    let held = wsx_testkit::process().held.saturating_sub(baseline);
    eprintln!("heap over the baseline: {peak} bytes while blocked, {held} after the failure");
    assert!(peak >= HIGH_WATER, "the queue held {peak} bytes: the peer was not blocked");
    assert!(held < 8 << 10, "{held} bytes still held after the failure (peak {peak})");

    // The socket is closed without waiting for the peer: reading what the kernel still holds
    // ends in EOF (or a reset), not in a wait.
    drop(server);
    let mut buf = vec![0; 64 << 10];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the server did not close the socket");
}

#[tokio::test]
async fn a_slow_peer_that_keeps_reading_is_not_failed() {
    let (mut server, mut client) = connect(32 << 10).await;
    // The peer takes up to 16 KiB every 100 ms (about 160 KiB/s at most), far under what the
    // server offers, so the server's queue stays over the mark; but it takes more than
    // `HIGH_WATER` per `SEND_TIMEOUT`.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 16 << 10];
        let mut total = 0usize;
        for _ in 0..10_000 {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        total
    });
    let start = Instant::now();
    let mut sent = 0usize;
    let mut blocked = 0;
    while start.elapsed() < 4 * SEND_TIMEOUT {
        let send = server.feed(Message::binary(vec![7u8; MESSAGE]));
        tokio::pin!(send);
        let result = tokio::select! {
            result = &mut send => result,
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                blocked += 1;
                send.await
            }
        };
        result.expect("a peer that keeps reading is not failed");
        sent += MESSAGE;
    }
    assert!(blocked > 0, "the server was never blocked: the test did not test anything");
    assert!(sent > 4 * HIGH_WATER, "sent only {sent} bytes");
    drop(server);
    let received = reader.await.unwrap();
    eprintln!("sent {sent} bytes over {:?}, blocked {blocked} times; the peer read {received}", start.elapsed());
}
