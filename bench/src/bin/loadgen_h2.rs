//! Closed-loop echo load over HTTP/2 WebSockets (RFC 8441) or, for comparison, the same client
//! over HTTP/1.1: C WebSockets, each with one S-byte binary message in flight, all on one
//! current-thread tokio runtime using wsx's own client side (the engine's `client_upgraded`
//! handshake through hyper's HTTP/2 client, or `wsx::handshake` over TCP). With `--http 2` all
//! C WebSockets share `--h2-connections` HTTP/2 connections (default 1), as a browser's would.
//!
//! ```text
//! loadgen-h2 --port 9001 --http 2 --connections 100 --size 20 --warmup 0.5 --duration 2 [--label NAME]
//! ```
//!
//! Prints one JSON object: messages/s, latency percentiles in microseconds, errors. The client
//! is wsx itself (not the raw epoll `loadgen`), so its figures compare HTTP/2 with HTTP/1.1 on
//! the same client, not with `loadgen`'s.

use std::{
    cell::RefCell,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use wsx::{Config, Message, WebSocket, proto::Connection};
use wsx_bench::{arg, arg_or};

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 connection to the server (prior knowledge).
async fn h2_connection(port: u16) -> Sender {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
    tokio::task::spawn_local(conn);
    send
}

/// A WebSocket over `send` (extended CONNECT).
async fn h2_websocket(send: &mut Sender, port: u16) -> WebSocket<TokioIo<hyper::upgrade::Upgraded>> {
    let target = http::Request::builder()
        .uri(format!("http://127.0.0.1:{port}/"))
        .version(http::Version::HTTP_2)
        .body(())
        .expect("request");
    let now = std::time::Instant::now();
    let (mut conn, head) =
        Connection::client_upgraded(&Config::default(), &target, wsx::proto::OsSeededRng::new(), now).expect("client");
    let (parts, ()) = head.into_parts();
    let mut request = http::Request::from_parts(parts, Empty::new());
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = send.send_request(request).await.expect("CONNECT");
    assert_eq!(response.status(), http::StatusCode::OK, "extended CONNECT refused");
    let upgraded = hyper::upgrade::on(&mut response).await.expect("upgrade");
    let (parts, _) = response.into_parts();
    conn.receive_response(http::Response::from_parts(parts, ()), std::time::Instant::now());
    assert!(matches!(conn.next_event(), Some(wsx::proto::Event::Opened(_))), "not opened");
    WebSocket::from_connection(TokioIo::new(upgraded), conn)
}

/// A WebSocket over its own TCP connection (HTTP/1.1).
async fn h1_websocket(port: u16) -> WebSocket<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let request = http::Request::builder().uri(format!("ws://127.0.0.1:{port}/")).body(()).expect("request");
    wsx::handshake(tcp, &request, &Config::default()).await.expect("handshake").0
}

/// Echo `payload` on `ws` until `end`, recording latencies after `measure_from`.
async fn drive<S>(mut ws: WebSocket<S>, payload: Bytes, measure_from: Instant, end: Instant, stats: Rc<RefCell<Stats>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while Instant::now() < end {
        let start = Instant::now();
        if ws.send(Message::Binary(payload.clone())).await.is_err() {
            stats.borrow_mut().errors += 1;
            return;
        }
        match ws.recv().await {
            Ok(Some(Message::Binary(echo))) if echo.len() == payload.len() => {}
            _ => {
                stats.borrow_mut().errors += 1;
                return;
            }
        }
        if start >= measure_from {
            let mut stats = stats.borrow_mut();
            stats.messages += 1;
            let _ = stats.latency.record(start.elapsed().as_micros() as u64);
        }
    }
    let _ = ws.close(wsx::CloseCode::NORMAL, "").await;
}

struct Stats {
    messages: u64,
    errors: u64,
    latency: Histogram<u64>,
}

fn main() {
    let port: u16 = arg_or("port", 9001);
    let http: u8 = arg_or("http", 2);
    let connections: usize = arg_or("connections", 100);
    let h2_connections: usize = arg_or("h2-connections", 1);
    let size: usize = arg_or("size", 20);
    let warmup: f64 = arg_or("warmup", 0.5);
    let duration: f64 = arg_or("duration", 2.0);
    let label = arg("label").unwrap_or_else(|| format!("h{http}"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let stats = Rc::new(RefCell::new(Stats {
        messages: 0,
        errors: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    }));
    local.block_on(&runtime, async {
        let payload = Bytes::from(vec![0x5a; size]);
        let mut sockets_h2 = Vec::new();
        let mut sockets_h1 = Vec::new();
        if http == 2 {
            let mut senders = Vec::new();
            for _ in 0..h2_connections.max(1) {
                senders.push(h2_connection(port).await);
            }
            for i in 0..connections {
                let n = senders.len();
                sockets_h2.push(h2_websocket(&mut senders[i % n], port).await);
            }
        } else {
            for _ in 0..connections {
                sockets_h1.push(h1_websocket(port).await);
            }
        }
        let measure_from = Instant::now() + Duration::from_secs_f64(warmup);
        let end = measure_from + Duration::from_secs_f64(duration);
        let mut tasks = Vec::new();
        for ws in sockets_h2 {
            tasks.push(tokio::task::spawn_local(drive(ws, payload.clone(), measure_from, end, stats.clone())));
        }
        for ws in sockets_h1 {
            tasks.push(tokio::task::spawn_local(drive(ws, payload.clone(), measure_from, end, stats.clone())));
        }
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    });
    let stats = stats.borrow();
    let h = &stats.latency;
    println!(
        "{{\"label\":\"{label}\",\"http\":{http},\"connections\":{connections},\"h2_connections\":{h2_connections},\
         \"size\":{size},\"messages\":{},\"msgs_per_s\":{:.0},\"latency_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}},\"errors\":{}}}",
        stats.messages,
        stats.messages as f64 / duration,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        stats.errors
    );
}
