//! WebSockets inside hyper and axum (`wsx::hyper`, `wsx::axum`), in process over loopback:
//! an axum 0.8 app on `axum::serve` and on `wsx::hyper::Server`, HTTP/1.1 and HTTP/2
//! (extended CONNECT, RFC 8441, through hyper's own HTTP/2 client), the fast path, pipelined
//! first frames, bad requests, the origin check, flow control with a stalled stream, and
//! shutdown. The third-party peers (Node, Python, tungstenite, Chromium, Python `h2`) are in
//! the `interop` test binary.
//!
//! Every wait is bounded by [`within`]; the server reports what it saw through a channel.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::State,
    response::Response,
    routing::{any, get},
};
use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use wsx::{CloseCode, CloseReason, Config, DeflateConfig, Message, WebSocket, axum::WebSocketUpgrade, hyper::Io};

const STEP: Duration = Duration::from_secs(20);

/// Await `fut`, failing the test with `what` if it takes longer than `limit`.
async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// What the server saw of one WebSocket.
#[derive(Debug)]
struct Seen {
    path: String,
    version: Version,
    fast_path: bool,
    compressed: bool,
    echoed: usize,
    /// Bytes still queued when the handler reported.
    buffered: usize,
    close: Option<CloseReason>,
}

/// The test app: `/ws` echoes (any method: GET over HTTP/1.1, CONNECT over HTTP/2),
/// `/ws-get` is the same on a `get` route, `/same-origin` checks the origin, `/stall`
/// accepts and never reads.
fn app(seen: mpsc::UnboundedSender<Seen>) -> Router {
    Router::new()
        .route("/ws", any(echo))
        .route("/ws-get", get(echo))
        .route("/same-origin", any(same_origin))
        .route("/flood", any(flood))
        .route("/", get(|| async { "page" }))
        .with_state(seen)
}

fn deflate() -> Config {
    Config::default().deflate(Some(DeflateConfig::default()))
}

async fn echo(State(seen): State<mpsc::UnboundedSender<Seen>>, upgrade: WebSocketUpgrade) -> Response {
    let path = upgrade.request().path().to_owned();
    upgrade.config(deflate()).on_upgrade(move |ws| echo_loop(ws, path, seen))
}

async fn same_origin(State(seen): State<mpsc::UnboundedSender<Seen>>, upgrade: WebSocketUpgrade) -> Response {
    let path = upgrade.request().path().to_owned();
    upgrade.same_origin().on_upgrade(move |ws| echo_loop(ws, path, seen))
}

/// The write queue of `/flood`, in bytes.
const FLOOD_HIGH_WATER: usize = 256 * 1024;

/// The size of `/flood`'s messages.
const FLOOD_MESSAGE: usize = 16 * 1024;

/// Send 16 KiB messages until a send has waited 1 s (the peer does not read), report the bytes
/// sent (as `echoed`) and the bytes queued, and hold the connection.
async fn flood(State(seen): State<mpsc::UnboundedSender<Seen>>, upgrade: WebSocketUpgrade) -> Response {
    let config = Config::default().write_high_water(FLOOD_HIGH_WATER);
    upgrade.config(config).on_upgrade(move |mut ws| async move {
        let message = Message::binary(vec![7u8; FLOOD_MESSAGE]);
        let mut sent = 0;
        // Bounded: 64 MiB, far past any window.
        for _ in 0..4096 {
            match tokio::time::timeout(Duration::from_secs(1), ws.send(message.clone())).await {
                Ok(Ok(())) => sent += FLOOD_MESSAGE,
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let version = ws.get_ref().http_version();
        let _ = seen.send(Seen {
            path: "/flood".into(),
            version,
            fast_path: false,
            compressed: false,
            echoed: sent,
            buffered: ws.buffered_amount(),
            close: None,
        });
        // Hold the stalled WebSocket until the peer goes away.
        let _ = tokio::time::timeout(Duration::from_secs(60), ws.recv()).await;
    })
}

async fn echo_loop(mut ws: WebSocket<Io>, path: String, seen: mpsc::UnboundedSender<Seen>) {
    let version = ws.get_ref().http_version();
    let fast_path = ws.get_ref().tcp_stream().is_some();
    let compressed = ws.is_compressed();
    let mut echoed = 0;
    while let Ok(Some(message)) = ws.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            if ws.send(message).await.is_err() {
                break;
            }
            echoed += 1;
        }
    }
    let _ = seen.send(Seen { path, version, fast_path, compressed, echoed, buffered: 0, close: ws.close_reason() });
}

/// The app on `axum::serve` at 127.0.0.1:0, with what its WebSockets saw.
async fn axum_serve() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(tx)).await });
    (addr, rx)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("the server's report of a WebSocket", STEP, rx.recv()).await.expect("the server is running")
}

/// Echo `n` messages of each kind on `ws` and close it normally.
async fn echo_and_close<S>(ws: &mut WebSocket<S>, n: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for i in 0..n {
        let message = if i % 2 == 0 { Message::text(format!("hello {i}")) } else { Message::binary(vec![i as u8; i]) };
        within("send", STEP, ws.send(message.clone())).await.expect("send");
        let echo = within("the echo", STEP, ws.recv()).await.expect("recv").expect("an echo");
        assert_eq!(echo, message);
    }
    within("close", STEP, ws.close(CloseCode::NORMAL, "done")).await.expect("clean close");
}

#[tokio::test]
async fn wsx_client_through_axum_serve_takes_the_fast_path() {
    let (addr, mut seen) = axum_serve().await;
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = within("connect", STEP, wsx::ClientBuilder::new(&url).config(deflate()).connect())
        .await
        .expect("connect through axum");
    assert!(ws.is_compressed(), "permessage-deflate negotiated");
    echo_and_close(&mut ws, 50).await;
    let seen = next_seen(&mut seen).await;
    assert_eq!(seen.version, Version::HTTP_11);
    assert!(seen.fast_path, "under axum::serve over TCP the WebSocket runs on the TcpStream: {seen:?}");
    assert!(seen.compressed);
    assert_eq!(seen.echoed, 50);
    assert!(seen.close.expect("closed").is_clean());
}

/// The request head and a masked text frame "first" in one write: the echo must come back.
#[tokio::test]
async fn first_frame_pipelined_with_the_request_is_echoed() {
    let (addr, mut seen) = axum_serve().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | 5]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"first".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&bytes).await.unwrap();

    // The 101, then the unmasked echo: 0x81 0x05 "first".
    let mut got = Vec::new();
    let expected_tail = b"\x81\x05first";
    within("the 101 and the echo", STEP, async {
        let mut buf = [0u8; 1024];
        while !got.ends_with(expected_tail) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "the RFC 6455 §1.3 accept digest: {text}");
    drop(tcp);
    let seen = next_seen(&mut seen).await;
    assert!(seen.fast_path);
    assert_eq!(seen.echoed, 1);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2: hyper's client with extended CONNECT (RFC 8441), prior knowledge over cleartext
// ---------------------------------------------------------------------------------------------

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 connection to `addr` (prior knowledge).
async fn h2_connect(addr: SocketAddr) -> H2Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = within(
        "the HTTP/2 handshake",
        STEP,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

/// An extended CONNECT for `path`: `:protocol` (if any), version 13, `extra` headers.
fn connect_request(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&'static str>,
    extra: &[(&str, &str)],
) -> http::Request<Empty<Bytes>> {
    let mut request = http::Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .version(Version::HTTP_2)
        .header("sec-websocket-version", "13");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Empty::new()).unwrap();
    if let Some(protocol) = protocol {
        request.extensions_mut().insert(hyper::ext::Protocol::from_static(protocol));
    }
    request
}

/// Open a WebSocket over `send` with the engine's HTTP/2 client handshake.
async fn h2_websocket(send: &mut H2Sender, addr: SocketAddr, path: &str, config: &Config) -> WebSocket<Upgraded> {
    let target =
        http::Request::builder().uri(format!("http://{addr}{path}")).version(Version::HTTP_2).body(()).unwrap();
    let (mut conn, head) =
        wsx::proto::Connection::client_upgraded(config, &target, wsx::proto::OsSeededRng::new(), now())
            .expect("client_upgraded");
    let (parts, ()) = head.into_parts();
    let mut request = http::Request::from_parts(parts, Empty::new());
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = within("the CONNECT response", STEP, send.send_request(request)).await.expect("send CONNECT");
    assert_eq!(response.status(), StatusCode::OK, "extended CONNECT answered 200");
    let upgraded = within("the upgrade", STEP, hyper::upgrade::on(&mut response)).await.expect("upgraded stream");
    let (parts, _) = response.into_parts();
    conn.receive_response(http::Response::from_parts(parts, ()), now());
    match conn.next_event() {
        Some(wsx::proto::Event::Opened(_)) => {}
        other => panic!("the handshake did not open the connection: {other:?}"),
    }
    WebSocket::from_connection(TokioIo::new(upgraded), conn)
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// The status of a request on `send`, and its body.
async fn status_of(send: &mut H2Sender, request: http::Request<Empty<Bytes>>) -> (StatusCode, String) {
    let response = within("the response", STEP, send.send_request(request)).await.expect("a response");
    let status = response.status();
    let body = within("the body", STEP, response.into_body().collect()).await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http2_extended_connect_through_axum_serve() {
    let (addr, mut seen) = axum_serve().await;
    let mut send = h2_connect(addr).await;
    // Two WebSockets and a plain request on the one HTTP/2 connection.
    let mut first = h2_websocket(&mut send, addr, "/ws", &deflate()).await;
    let mut second = h2_websocket(&mut send, addr, "/ws", &Config::default()).await;
    let page = http::Request::builder().uri(format!("http://{addr}/")).body(Empty::new()).unwrap();
    assert_eq!(status_of(&mut send, page).await, (StatusCode::OK, "page".into()));
    assert!(first.is_compressed());
    echo_and_close(&mut first, 200).await;
    echo_and_close(&mut second, 20).await;
    let mut reports = vec![next_seen(&mut seen).await, next_seen(&mut seen).await];
    reports.sort_by_key(|s| s.echoed);
    for seen in &reports {
        assert_eq!(seen.version, Version::HTTP_2, "{seen:?}");
        assert!(!seen.fast_path, "an HTTP/2 stream is not a TcpStream");
        assert!(seen.close.as_ref().is_some_and(CloseReason::is_clean), "{seen:?}");
    }
    assert_eq!((reports[0].echoed, reports[0].compressed), (20, false));
    assert_eq!((reports[1].echoed, reports[1].compressed), (200, true));
}

#[tokio::test]
async fn http2_bad_requests_are_refused_with_4xx() {
    let (addr, _seen) = axum_serve().await;
    let mut send = h2_connect(addr).await;
    type Case<'a> = (&'a str, Option<&'static str>, &'a [(&'a str, &'a str)], StatusCode);
    let cases: [Case<'_>; 4] = [
        ("/ws", Some("chat"), &[], StatusCode::BAD_REQUEST),
        ("/ws", Some("websocket"), &[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")], StatusCode::BAD_REQUEST),
        // A `get` route refuses the CONNECT of HTTP/2 before the extractor runs.
        ("/ws-get", Some("websocket"), &[], StatusCode::METHOD_NOT_ALLOWED),
        ("/ws", Some("websocket"), &[("sec-websocket-version", "8")], StatusCode::UPGRADE_REQUIRED),
    ];
    for (path, protocol, extra, expected) in cases {
        let mut request = connect_request(addr, path, protocol, extra);
        if extra.iter().any(|(name, _)| *name == "sec-websocket-version") {
            request.headers_mut().insert("sec-websocket-version", "8".parse().unwrap());
        }
        let (status, body) = status_of(&mut send, request).await;
        assert_eq!(status, expected, "{path} {protocol:?} {extra:?}: {body}");
    }
    // The connection is still fine.
    let mut ws = h2_websocket(&mut send, addr, "/ws", &Config::default()).await;
    echo_and_close(&mut ws, 2).await;
}

#[tokio::test]
async fn http1_bad_requests_are_refused_with_4xx() {
    let (addr, _seen) = axum_serve().await;
    let cases = [
        ("POST", "Upgrade: websocket\r\nConnection: Upgrade\r\n", "405"),
        ("GET", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", "400"),
        ("GET", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 7\r\n", "426"),
    ];
    for (method, headers, status) in cases {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let key = if headers.contains("Version: 13") { "" } else { "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" };
        let request = format!("{method} /ws HTTP/1.1\r\nHost: {addr}\r\n{headers}{key}Content-Length: 0\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 512];
        let n = within("the refusal", STEP, tcp.read(&mut head)).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{method} with {headers:?}: {head}");
    }
}

#[tokio::test]
async fn origin_check_refuses_other_sites_on_both_versions() {
    let (addr, mut seen) = axum_serve().await;
    // HTTP/1.1: another origin gets 403, the same origin opens.
    let client = |origin: &str| wsx::ClientBuilder::new(format!("ws://{addr}/same-origin")).origin(origin);
    let refused = within("connect", STEP, client("https://evil.example").connect()).await;
    assert_eq!(refused.expect_err("refused").http_status(), Some(StatusCode::FORBIDDEN));
    let (mut ws, _) = within("connect", STEP, client(&format!("http://{addr}")).connect()).await.unwrap();
    echo_and_close(&mut ws, 1).await;
    assert_eq!(next_seen(&mut seen).await.path, "/same-origin");
    // HTTP/2: the same, with `:authority` for the host.
    let mut send = h2_connect(addr).await;
    let evil = connect_request(addr, "/same-origin", Some("websocket"), &[("origin", "https://evil.example")]);
    assert_eq!(status_of(&mut send, evil).await.0, StatusCode::FORBIDDEN);
    let origin = format!("http://{addr}");
    let ours = connect_request(addr, "/same-origin", Some("websocket"), &[("origin", origin.as_str())]);
    assert_eq!(status_of(&mut send, ours).await.0, StatusCode::OK);
}

/// 100 WebSockets on one HTTP/2 connection, one of which never reads what the server sends
/// it: the others keep flowing, and what the server holds for the stalled one stays within the
/// client's stream window plus the configured write buffer.
#[tokio::test]
async fn http2_stalled_stream_does_not_block_the_others() {
    let (addr, mut seen) = axum_serve().await;
    let mut send = h2_connect(addr).await;
    // The server floods this one, which the client never reads, until its sends block.
    let _stalled = h2_websocket(&mut send, addr, "/flood", &Config::default()).await;
    let flood = next_seen(&mut seen).await;
    assert_eq!(flood.path, "/flood");
    let (sent, buffered) = (flood.echoed, flood.buffered);
    eprintln!("the server sent {sent} bytes to the stalled stream before blocking; {buffered} bytes queued");
    // hyper's client stream window (2 MiB) + the route's write_high_water (256 KiB) + a few
    // 16 KiB messages in flight in hyper's upgraded stream.
    assert!(sent <= (2 << 20) + FLOOD_HIGH_WATER + 4 * FLOOD_MESSAGE, "{sent}");
    assert!(buffered <= FLOOD_HIGH_WATER + FLOOD_MESSAGE, "{buffered}");
    let mut others = Vec::new();
    for _ in 0..99 {
        others.push(h2_websocket(&mut send, addr, "/ws", &Config::default()).await);
    }
    for ws in &mut others {
        echo_and_close(ws, 3).await;
    }
    for _ in 0..99 {
        let seen = next_seen(&mut seen).await;
        assert_eq!((seen.path.as_str(), seen.echoed, seen.version), ("/ws", 3, Version::HTTP_2));
    }
}

// ---------------------------------------------------------------------------------------------
// wsx::hyper::Server with a plain hyper service
// ---------------------------------------------------------------------------------------------

/// A hyper service that upgrades every request on any path and echoes.
async fn hyper_echo(
    mut request: http::Request<hyper::body::Incoming>,
    seen: mpsc::UnboundedSender<Seen>,
) -> Result<http::Response<Empty<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_owned();
    match wsx::hyper::upgrade(&mut request, &Config::default()) {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                if let Ok(ws) = upgrade.await {
                    echo_loop(ws, path, seen).await;
                }
            });
            Ok(response)
        }
        Err(reject) => Ok(reject.into_response().map(|_| Empty::new())),
    }
}

/// `hyper_echo` on a `wsx::hyper::Server` built by `builder`.
async fn hyper_server(
    builder: wsx::hyper::Builder,
) -> (SocketAddr, wsx::ShutdownHandle, tokio::task::JoinHandle<wsx::Result<()>>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let service = hyper::service::service_fn(move |request| hyper_echo(request, tx.clone()));
    (addr, handle, tokio::spawn(server.serve(service)), rx)
}

#[tokio::test]
async fn http2_plain_connect_is_refused_with_400() {
    let (addr, _handle, _task, _seen) = hyper_server(wsx::hyper::Server::builder()).await;
    let mut send = h2_connect(addr).await;
    // A CONNECT without `:protocol` asks for a tunnel, not a WebSocket.
    let plain = http::Request::builder()
        .method(Method::CONNECT)
        .uri(addr.to_string())
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    let (status, body) = status_of(&mut send, plain).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// Shutting the server down closes its WebSockets with 1001, over both versions, and
/// `serve` returns once they have ended.
#[tokio::test]
async fn shutdown_closes_upgraded_websockets_with_1001() {
    let builder = wsx::hyper::Server::builder().shutdown_timeout(Duration::from_secs(10));
    let (addr, handle, task, mut seen) = hyper_server(builder).await;
    let (mut h1, _) = within("connect", STEP, wsx::connect(&format!("ws://{addr}/one"))).await.unwrap();
    let mut send = h2_connect(addr).await;
    let mut h2 = h2_websocket(&mut send, addr, "/two", &Config::default()).await;
    // Both are open and echoing before the shutdown.
    within("h1 echo", STEP, h1.send("a")).await.unwrap();
    assert_eq!(within("h1 echo", STEP, h1.recv()).await.unwrap(), Some(Message::text("a")));
    within("h2 echo", STEP, h2.send("b")).await.unwrap();
    assert_eq!(within("h2 echo", STEP, h2.recv()).await.unwrap(), Some(Message::text("b")));
    handle.shutdown();
    for ws_close in [close_code_of(&mut h1).await, close_code_of(&mut h2).await] {
        assert_eq!(ws_close, Some(CloseCode::AWAY));
    }
    within("serve to return", STEP, task).await.unwrap().unwrap();
    let mut versions = vec![next_seen(&mut seen).await.version, next_seen(&mut seen).await.version];
    versions.sort();
    assert_eq!(versions, [Version::HTTP_11, Version::HTTP_2]);
}

/// Past `max_connections` a client is answered 503 with `Retry-After` and the connection is
/// closed (a keep-alive request too), over HTTP/1.1 and HTTP/2, instead of being dropped unanswered.
#[tokio::test]
async fn over_the_cap_is_answered_503() {
    let (addr, _handle, _task, _seen) = hyper_server(wsx::hyper::Server::builder().max_connections(1)).await;
    let (mut first, _) = within("connect", STEP, wsx::connect(&format!("ws://{addr}/one"))).await.unwrap();
    within("echo", STEP, first.send("a")).await.unwrap();
    assert_eq!(within("echo", STEP, first.recv()).await.unwrap(), Some(Message::text("a")));
    let raw = within("the 503 and the close", STEP, async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // Two requests in one write: only the first is answered before the connection closes.
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    })
    .await;
    assert!(raw.starts_with("HTTP/1.1 503 "), "{raw}");
    assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "one answer, then the connection closed: {raw}");
    assert!(raw.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"), "{raw}");
    let builder = wsx::ClientBuilder::new(format!("ws://{addr}/two"));
    let over_h1 = within("connect", STEP, builder.connect()).await.expect_err("over the cap");
    let over_h2 = within("connect over HTTP/2", STEP, builder.connect_http2()).await.expect_err("over the cap");
    for error in [over_h1, over_h2] {
        assert_eq!(error.http_status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{error}");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)), "{error}");
    }
}

/// The close code the server sent, once the stream has ended.
async fn close_code_of<S>(ws: &mut WebSocket<S>) -> Option<CloseCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within("the server's close", STEP, async { while let Ok(Some(_)) = ws.recv().await {} }).await;
    ws.close_reason().and_then(|reason| reason.received.map(|frame| frame.code))
}

/// With `connect_protocol(false)` the server does not announce extended CONNECT, so a client
/// does not even send one (hyper's client refuses), and HTTP/1.1 WebSockets still work.
#[tokio::test]
async fn connect_protocol_off_is_not_announced() {
    let (addr, _handle, _task, _seen) = hyper_server(wsx::hyper::Server::builder().connect_protocol(false)).await;
    let mut send = h2_connect(addr).await;
    let request = connect_request(addr, "/ws", Some("websocket"), &[]);
    let refused = within("the CONNECT", STEP, send.send_request(request)).await;
    assert!(refused.is_err(), "hyper's client sent an extended CONNECT the server did not announce: {refused:?}");
    let (mut ws, _) = within("connect", STEP, wsx::connect(&format!("ws://{addr}/ws"))).await.unwrap();
    echo_and_close(&mut ws, 2).await;
}

// ---------------------------------------------------------------------------------------------
// wsx's own HTTP/2 client (`ClientBuilder::connect_http2`)
// ---------------------------------------------------------------------------------------------

/// The axum app on `wsx::hyper::Server` built by `builder`.
async fn app_on_hyper_server(builder: wsx::hyper::Builder) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve_tower(app(tx)));
    (addr, rx)
}

/// A self-signed certificate for 127.0.0.1: the server's TLS and the PEM for the client.
fn certificate() -> (wsx::tls::ServerTls, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let cert = certified.cert.pem();
    let tls = wsx::tls::ServerTls::from_pem(&cert, certified.signing_key.serialize_pem()).expect("server TLS");
    (tls, cert)
}

/// Cleartext HTTP/2 with prior knowledge: the WebSocket is an extended CONNECT, deflate is
/// agreed through the engine, 1,000 messages echo, and the close ends the stream cleanly on
/// both sides (the server sees our close frame, then END_STREAM).
#[tokio::test]
async fn wsx_http2_client_echoes_over_h2c() {
    let (addr, mut seen) = app_on_hyper_server(wsx::hyper::Server::builder()).await;
    let builder = wsx::ClientBuilder::new(format!("ws://{addr}/ws"));
    let (mut ws, response) = within("connect over HTTP/2", STEP, builder.connect_http2()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(ws.get_ref().http_version(), Version::HTTP_2);
    assert!(ws.is_compressed(), "permessage-deflate not agreed: {:?}", response.headers());
    echo_and_close(&mut ws, 1_000).await;
    assert!(ws.close_reason().is_some_and(|r| r.is_clean()), "{:?}", ws.close_reason());
    let server = next_seen(&mut seen).await;
    assert_eq!((server.version, server.echoed, server.compressed), (Version::HTTP_2, 1_000, true), "{server:?}");
    assert!(server.close.as_ref().is_some_and(CloseReason::is_clean), "{server:?}");
}

/// Over TLS the client offers only `h2` by ALPN and checks the certificate as `connect` does.
#[tokio::test]
async fn wsx_http2_client_over_tls() {
    let (tls, cert) = certificate();
    let (addr, mut seen) = app_on_hyper_server(wsx::hyper::Server::builder().tls(tls)).await;
    let builder = wsx::ClientBuilder::new(format!("wss://127.0.0.1:{}/ws", addr.port())).root_certificates_pem(&cert);
    let (mut ws, _) = within("connect over TLS + HTTP/2", STEP, builder.connect_http2()).await.unwrap();
    echo_and_close(&mut ws, 10).await;
    let server = next_seen(&mut seen).await;
    assert_eq!((server.version, server.echoed), (Version::HTTP_2, 10), "{server:?}");
    assert!(server.close.as_ref().is_some_and(CloseReason::is_clean), "{server:?}");
}

/// A server that speaks HTTP/2 but did not announce the extended CONNECT gets no request: the
/// client fails with a handshake error that names the missing setting.
#[tokio::test]
async fn wsx_http2_client_needs_the_connect_protocol() {
    let (addr, _seen) = app_on_hyper_server(wsx::hyper::Server::builder().connect_protocol(false)).await;
    let builder = wsx::ClientBuilder::new(format!("ws://{addr}/ws"));
    let error = within("connect over HTTP/2", STEP, builder.connect_http2()).await.expect_err("no connect protocol");
    assert!(error.is_handshake(), "{error}");
    assert!(error.to_string().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"), "{error}");
}

/// A TLS server that does not agree to `h2` by ALPN: rustls servers refuse the TLS handshake
/// (alert `no_application_protocol`), others pick no protocol (a handshake error); either way
/// nothing is sent.
#[tokio::test]
async fn wsx_http2_client_needs_h2_by_alpn() {
    let (tls, cert) = certificate();
    let (addr, _seen) = app_on_hyper_server(wsx::hyper::Server::builder().tls(tls).http2(false)).await;
    let builder = wsx::ClientBuilder::new(format!("wss://127.0.0.1:{}/ws", addr.port())).root_certificates_pem(&cert);
    let error = within("connect over HTTP/2", STEP, builder.connect_http2()).await.expect_err("no h2");
    let message = error.to_string();
    assert!(message.contains("NoApplicationProtocol") || message.contains("ALPN"), "{error}");
}

/// A WebSocket over HTTP/2 that the server fails (here 1009, a message over its limit) while
/// the client is still sending: the client gets the close frame, not a reset stream. Dropping
/// the server's stream before the client ended it reset it, and the client's HTTP/2 layer
/// threw away the unread close (it saw 1006); now the dropped stream is read until the client
/// ends it. Ten clients at once, each sending on after its over-limit message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_failure_close_reaches_a_client_still_sending() {
    const LIMIT: usize = 16 * 1024;
    let server = wsx::hyper::Server::builder().bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let service = hyper::service::service_fn(|mut request: http::Request<hyper::body::Incoming>| async move {
        let config = Config::default().max_message_size(LIMIT);
        Ok::<_, std::convert::Infallible>(match wsx::hyper::upgrade(&mut request, &config) {
            Ok((response, upgrade)) => {
                tokio::spawn(async move {
                    let Ok(mut ws) = upgrade.await else { return };
                    while let Ok(Some(message)) = ws.recv().await {
                        if message.is_data() && ws.send(message).await.is_err() {
                            break;
                        }
                    }
                });
                response
            }
            Err(reject) => reject.into_response().map(|_| Empty::<Bytes>::new()),
        })
    });
    tokio::spawn(server.serve(service));

    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..10 {
        clients.spawn(async move {
            let builder = wsx::ClientBuilder::new(format!("ws://{addr}/")).proxy(wsx::Proxy::none());
            let (mut ws, _) = builder.connect_http2().await.unwrap();
            ws.send(Message::binary(vec![1u8; 4 * LIMIT])).await.unwrap();
            for _ in 0..200 {
                if ws.send(Message::binary(vec![2u8; 1024])).await.is_err() {
                    break;
                }
            }
            close_code_of(&mut ws).await
        });
    }
    let codes: Vec<Option<CloseCode>> = within("the clients", STEP, clients.join_all()).await;
    assert!(codes.iter().all(|code| *code == Some(CloseCode::TOO_BIG)), "{codes:?}");
}
