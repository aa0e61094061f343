//! Issue 16: pending handshakes cannot lock out a good client. 10,000 clients (the default
//! connection cap of `wsx serve`, which runs on `wsx::Server`) connect and send their upgrade
//! request one byte per second, reconnecting whenever the server drops them, so that the cap
//! stays full of handshakes that will not finish. A well-behaved client must still connect and
//! echo. Before the fix it was answered 503: the cap counted pending handshakes like open
//! connections.
//!
//! The server is a child process, so that its 10,000 sockets and the clients' 10,000 fit the
//! machine's 20,000-descriptor limit (one process could not hold both sides).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{bounded, raise_fd_limit, serve, within};
use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet};
use wsx::{ClientBuilder, CloseCode, Message};

/// Slow clients: `wsx serve`'s default `--max-connections`.
const SLOW_CLIENTS: usize = 10_000;

/// Slow clients started at once, and the pause between batches (the listen backlog is finite).
const CONNECT_BATCH: usize = 250;

/// A valid upgrade request, sent one byte per second.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// One slow client: connect, send the request a byte a second, and reconnect when dropped,
/// until `stop`. Counts its live connections in `live`.
async fn slow_client(port: u16, stop: Arc<AtomicBool>, live: Arc<AtomicUsize>, evicted: Arc<AtomicUsize>) {
    // Bounded: the test ends well within this many reconnections.
    for _ in 0..1_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        live.fetch_add(1, Ordering::Relaxed);
        for next in 0..REQUEST.len() - 1 {
            if stop.load(Ordering::Relaxed) || tcp.write_all(&REQUEST[next..next + 1]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        live.fetch_sub(1, Ordering::Relaxed);
        evicted.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pending_handshakes_do_not_lock_out_a_good_client() {
    bounded(async {
        // The child inherits the raised limit.
        raise_fd_limit(SLOW_CLIENTS as u64 + 2_000);
        let (_server, port) = serve(&["--echo", "--quiet"]).await;

        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut slow = JoinSet::new();
        for _ in 0..SLOW_CLIENTS.div_ceil(CONNECT_BATCH) {
            for _ in 0..CONNECT_BATCH {
                slow.spawn(slow_client(port, stop.clone(), live.clone(), dropped.clone()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Until the cap is full: every slow client connected.
        within("the slow clients to fill the cap", async {
            while live.load(Ordering::Relaxed) < SLOW_CLIENTS {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        // Let the server accept the last of them.
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!(
            "{} slow clients connected, {} dropped so far",
            live.load(Ordering::Relaxed),
            dropped.load(Ordering::Relaxed)
        );

        let url = format!("ws://127.0.0.1:{port}/");
        for round in 0..3 {
            let (mut ws, _) = within("a good client to connect", ClientBuilder::new(&url).connect())
                .await
                .unwrap_or_else(|e| panic!("round {round}: a good client was kept out: {e}"));
            let text = format!("still served {round}");
            ws.send(text.as_str()).await.expect("send");
            within("the echo", async {
                loop {
                    match ws.recv().await.expect("recv") {
                        Some(Message::Text(echo)) if echo.as_str() == text => break,
                        Some(_) => {}
                        None => panic!("the connection ended before the echo"),
                    }
                }
            })
            .await;
            ws.close(CloseCode::NORMAL, "").await.expect("close");
        }
        eprintln!("slow clients dropped by the server: {}", dropped.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        slow.abort_all();
    })
    .await;
}
