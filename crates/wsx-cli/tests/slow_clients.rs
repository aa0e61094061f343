//! Issue 16, failure 1: clients that send their request slowly must not lock others out of
//! `wsx serve`. 1,500 clients each send their upgrade request one byte per second (it would
//! take them over two minutes to finish it) while a normal client connects and echoes, and
//! another fetches the demo page over plain HTTP. `wsx serve` bounds handshakes in progress
//! the way `wsx::Server` does, by the connection cap (10,000 by default) and the handshake
//! timeout, so neither has to wait.

mod common;

use std::time::Duration;

use common::{bounded, http, raise_fd_limit, serve, within};
use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet};
use wsx::{ClientBuilder, CloseCode, Message};

/// How many slow clients; `MAX_PENDING` (1,024) of the old `wsx serve` fell at about 1,030.
const SLOW_CLIENTS: usize = 1_500;

/// Slow clients connecting at once.
const CONNECT_BATCH: usize = 50;

/// A valid upgrade request, sent one byte per second.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_lock_out_the_others() {
    bounded(async {
        raise_fd_limit(SLOW_CLIENTS as u64 + 1_000);
        let (_server, port) = serve(&["--echo", "--quiet"]).await;

        // Each slow client connects and sends its first byte.
        let mut slow = Vec::with_capacity(SLOW_CLIENTS);
        for _ in 0..SLOW_CLIENTS.div_ceil(CONNECT_BATCH) {
            let mut batch = JoinSet::new();
            for _ in 0..CONNECT_BATCH.min(SLOW_CLIENTS - slow.len()) {
                batch.spawn(async move {
                    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("a slow client connects");
                    tcp.write_all(&REQUEST[..1]).await.expect("the first byte");
                    tcp
                });
            }
            slow.extend(within("a batch of slow clients to connect", batch.join_all()).await);
        }
        // Then one more byte each second, for as long as the test runs (at most the request's
        // length in seconds). A client the server dropped fails to write; it is left alone.
        let dribble = tokio::spawn(async move {
            for next in 1..REQUEST.len() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for tcp in &mut slow {
                    let _ = tcp.write_all(&REQUEST[next..next + 1]).await;
                }
            }
        });
        // Let the server accept them all.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let url = format!("ws://127.0.0.1:{port}/");
        let (mut ws, _) = within("a normal client to connect", ClientBuilder::new(&url).connect())
            .await
            .expect("a normal client gets in despite the slow ones");
        ws.send("still served").await.expect("send");
        within("the echo", async {
            loop {
                match ws.recv().await.expect("recv") {
                    Some(Message::Text(text)) if text.as_str() == "still served" => break,
                    Some(_) => {}
                    None => panic!("the connection ended before the echo"),
                }
            }
        })
        .await;
        ws.close(CloseCode::NORMAL, "").await.expect("close");

        let page = http(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "the demo page: {page:.200}");
        dribble.abort();
    })
    .await;
}
