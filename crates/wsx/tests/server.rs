//! `wsx::Server` over real sockets on 127.0.0.1: greeting and echo, the connection cap,
//! graceful shutdown, the handshake callback and timeout, plain HTTP on the same port, and
//! split halves.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{self, http};
use wsx::{Accept, CloseCode, Config, ConnectionInfo, Message, Server, ShutdownHandle, WebSocket, server::Builder};

/// Every test gives up after this long.
const TEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Run `test` under [`TEST_TIMEOUT`].
async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out")
}

/// A running server: its address, its shutdown handle and the task running `serve`.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    task: JoinHandle<wsx::Result<()>>,
}

impl Running {
    /// Shut down and wait for `serve` to return.
    async fn stop(self) {
        self.handle.shutdown();
        self.task.await.expect("serve panicked").expect("serve failed");
    }
}

async fn start<H, F>(builder: Builder, handler: H) -> Running
where
    H: Fn(WebSocket<TcpStream>, ConnectionInfo) -> F + Send + Sync + 'static,
    F: Future<Output = wsx::Result<()>> + Send + 'static,
{
    let server = builder.bind("127.0.0.1:0").await.expect("bind");
    let addr = server.local_addr().expect("local_addr");
    let handle = server.shutdown_handle();
    let task = tokio::spawn(server.serve(handler));
    Running { addr, handle, task }
}

/// An upgrade request for `path` on `addr`.
fn request(addr: SocketAddr, path: &str) -> http::request::Builder {
    http::Request::builder().uri(format!("ws://{addr}{path}"))
}

/// Connect a wsx client.
async fn connect(
    addr: SocketAddr,
    request: http::request::Builder,
) -> wsx::Result<(WebSocket<TcpStream>, wsx::Response)> {
    let tcp = TcpStream::connect(addr).await?;
    wsx::handshake(tcp, &request.body(()).expect("request"), &Config::default()).await
}

/// Echo every data message back.
async fn echo(mut ws: WebSocket<TcpStream>) -> wsx::Result<()> {
    while let Some(message) = ws.recv().await? {
        if message.is_data() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn greets_and_echoes() {
    bounded(async {
        let server = start(Server::builder(), |mut ws, info| async move {
            ws.send("ho!").await?;
            ws.send(format!("{}?{}", info.path(), info.query().unwrap_or(""))).await?;
            echo(ws).await
        })
        .await;

        let (mut ws, _) = connect(server.addr, request(server.addr, "/chat?room=1")).await.expect("connect");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("ho!")));
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("/chat?room=1")));
        ws.send("hello").await.expect("send");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("hello")));
        ws.send(Message::binary(vec![1, 2, 3])).await.expect("send");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::binary(vec![1, 2, 3])));
        ws.close(CloseCode::NORMAL, "bye").await.expect("close");

        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn answers_503_over_the_connection_cap() {
    bounded(async {
        let server = start(Server::builder().max_connections(2), |ws, _| echo(ws)).await;

        let (mut first, _) = connect(server.addr, request(server.addr, "/")).await.expect("first");
        let (mut second, _) = connect(server.addr, request(server.addr, "/")).await.expect("second");

        // The third is refused with 503 and Retry-After, and never reaches the handler.
        let tcp = TcpStream::connect(server.addr).await.expect("tcp");
        match tokio_tungstenite::client_async(format!("ws://{}/", server.addr), tcp).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
                assert!(response.headers().contains_key(http::header::RETRY_AFTER));
            }
            other => panic!("expected 503, got {:?}", other.map(|(_, r)| r.status())),
        }
        let refused = connect(server.addr, request(server.addr, "/")).await.expect_err("over the cap");
        assert_eq!(refused.http_status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));

        // The two open ones still work.
        second.send("still here").await.expect("send");
        assert_eq!(second.recv().await.expect("recv"), Some(Message::text("still here")));

        // Once one closes (and its handler ends), a new client gets in.
        first.close(CloseCode::NORMAL, "").await.expect("close");
        let (mut third, _) = loop {
            match connect(server.addr, request(server.addr, "/")).await {
                Ok(open) => break open,
                Err(e) if e.http_status() == Some(http::StatusCode::SERVICE_UNAVAILABLE) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("connect failed: {e}"),
            }
        };
        third.send("in").await.expect("send");
        assert_eq!(third.recv().await.expect("recv"), Some(Message::text("in")));

        // Clients that are not polled cannot answer the shutdown's close: hang up instead.
        drop((second, third));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_with_1001_and_cuts_off_after_the_timeout() {
    bounded(async {
        let shutdown_timeout = Duration::from_millis(500);
        let server = start(Server::builder().shutdown_timeout(shutdown_timeout), |ws, _| echo(ws)).await;

        // A client that answers the close, and one that never reads.
        let (mut polite, _) = connect(server.addr, request(server.addr, "/")).await.expect("connect");
        let (mut deaf, _) = connect(server.addr, request(server.addr, "/")).await.expect("connect");
        polite.send("ping").await.expect("send");
        assert_eq!(polite.recv().await.expect("recv"), Some(Message::text("ping")));
        let polite = tokio::spawn(async move {
            let mut close = None;
            while let Some(message) = polite.recv().await.expect("clean close") {
                if let Message::Close(frame) = message {
                    close = frame.map(|f| f.code);
                }
            }
            close
        });

        let started = Instant::now();
        server.stop().await;
        let took = started.elapsed();

        assert_eq!(polite.await.expect("polite client"), Some(CloseCode::AWAY));
        assert!(took >= shutdown_timeout, "serve returned before the deaf client timed out: {took:?}");
        assert!(took < shutdown_timeout + Duration::from_secs(2), "serve took {took:?}");

        // The deaf client finds the close frame, then a socket the server has already dropped.
        let mut saw_away = false;
        loop {
            match deaf.recv().await {
                Ok(Some(Message::Close(frame))) => saw_away = frame.is_some_and(|f| f.code == CloseCode::AWAY),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        assert!(saw_away, "the deaf client was sent close 1001");
    })
    .await;
}

#[tokio::test]
async fn stops_accepting_on_shutdown() {
    bounded(async {
        let server = start(Server::builder(), |ws, _| echo(ws)).await;
        let addr = server.addr;
        server.stop().await;
        assert!(TcpStream::connect(addr).await.is_err(), "the listener was closed");
    })
    .await;
}

#[tokio::test]
async fn on_request_rejects_a_bad_origin_and_chooses_a_subprotocol() {
    bounded(async {
        let builder = Server::builder().on_request(|req| {
            if req.origin() != Some("https://good.example") {
                let mut response = http::Response::new(Bytes::from_static(b"bad origin\n"));
                *response.status_mut() = http::StatusCode::FORBIDDEN;
                return Err(response.into());
            }
            let mut accept = Accept::new();
            if req.protocols().iter().any(|p| p == "chat") {
                accept = accept.protocol("chat");
            }
            Ok(accept)
        });
        let server = start(builder, |mut ws, info| async move {
            let protocol = ws.protocol().unwrap_or("none").to_owned();
            ws.send(format!("{protocol} from {}", info.origin().unwrap_or("?"))).await?;
            echo(ws).await
        })
        .await;

        let bad = request(server.addr, "/").header("Origin", "https://evil.example");
        let refused = connect(server.addr, bad).await.expect_err("bad origin");
        assert_eq!(refused.http_status(), Some(http::StatusCode::FORBIDDEN));

        let good = request(server.addr, "/")
            .header("Origin", "https://good.example")
            .header("Sec-WebSocket-Protocol", "superchat, chat");
        let (mut ws, response) = connect(server.addr, good).await.expect("good origin");
        assert_eq!(response.protocol(), Some("chat"));
        assert_eq!(ws.protocol(), Some("chat"));
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("chat from https://good.example")));
        ws.close(CloseCode::NORMAL, "").await.expect("close");

        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn drops_a_client_that_sends_half_a_request() {
    bounded(async {
        let timeout = Duration::from_millis(200);
        let config = Config::default().handshake_timeout(timeout);
        let server = start(Server::builder().config(config), |ws, _| echo(ws)).await;

        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        let started = Instant::now();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n").await.expect("write");
        let mut rest = Vec::new();
        // The server gives up: the connection ends (EOF, or a reset).
        let _ = tcp.read_to_end(&mut rest).await;
        let took = started.elapsed();
        assert!(took >= timeout - Duration::from_millis(20), "dropped too early: {took:?}");
        assert!(took < timeout + Duration::from_secs(2), "dropped too late: {took:?}");
        assert!(!rest.starts_with(b"HTTP/1.1 101"), "no upgrade for half a request");

        // The server still serves others.
        let (mut ws, _) = connect(server.addr, request(server.addr, "/")).await.expect("connect");
        ws.send("after").await.expect("send");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("after")));
        ws.close(CloseCode::NORMAL, "").await.expect("close");

        server.stop().await;
    })
    .await;
}

/// Send a raw HTTP request and read the whole response (the server closes after it).
async fn http_exchange(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write the request");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read the response");
    String::from_utf8(response).expect("a UTF-8 response")
}

/// A plain-HTTP handler: a page at `/`, the client's address at `/peer`, 404 elsewhere.
async fn page(request: http::Request<()>, peer: SocketAddr) -> http::Response<Bytes> {
    let (status, body) = match request.uri().path() {
        "/" => (http::StatusCode::OK, Bytes::from_static(b"<p>page</p>\n")),
        "/peer" => (http::StatusCode::OK, Bytes::from(format!("{} {peer}\n", request.method()))),
        _ => (http::StatusCode::NOT_FOUND, Bytes::from_static(b"not here\n")),
    };
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html"));
    response
}

#[tokio::test]
async fn on_http_answers_plain_requests_on_the_websocket_port() {
    bounded(async {
        let server = start(Server::builder().on_http(page), |ws, _| echo(ws)).await;

        let get = http_exchange(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(
            get,
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nContent-Length: 12\r\nConnection: close\r\n\r\n<p>page</p>\n"
        );
        // HEAD: what GET gets, without the body.
        let head = http_exchange(server.addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(head, get.strip_suffix("<p>page</p>\n").unwrap());
        // The handler sees the method and the client's address; HTTP/1.0 needs no Host.
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        let local = tcp.local_addr().expect("local_addr");
        tcp.write_all(b"GET /peer HTTP/1.0\r\n\r\n").await.expect("write");
        let mut peer = String::new();
        tcp.read_to_string(&mut peer).await.expect("read");
        assert!(peer.ends_with(&format!("\r\n\r\nGET {local}\n")), "{peer}");
        let missing = http_exchange(server.addr, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n") && missing.ends_with("not here\n"), "{missing}");

        // What the engine refuses never reaches the handler.
        let post = http_exchange(server.addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("\r\nallow: GET, HEAD\r\n"), "{post}");
        let body = http_exchange(server.addr, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").await;
        assert!(body.starts_with("HTTP/1.1 400 ") && body.contains("request has a body"), "{body}");
        let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
        assert!(http_exchange(server.addr, &huge).await.starts_with("HTTP/1.1 431 "));

        // WebSocket on the same port, as before.
        let (mut ws, _) = connect(server.addr, request(server.addr, "/")).await.expect("connect");
        ws.send("both").await.expect("send");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("both")));
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn without_on_http_plain_requests_are_refused() {
    bounded(async {
        let server = start(Server::builder(), |ws, _| echo(ws)).await;
        let get = http_exchange(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(get.starts_with("HTTP/1.1 400 ") && get.contains("missing Upgrade: websocket"), "{get}");
        let head = http_exchange(server.addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 405 ") && head.contains("\r\nAllow: GET\r\n"), "{head}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn plain_requests_count_against_the_connection_cap() {
    bounded(async {
        let server = start(Server::builder().max_connections(1).on_http(page), |ws, _| echo(ws)).await;
        let (mut ws, _) = connect(server.addr, request(server.addr, "/")).await.expect("connect");
        let get = http_exchange(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(get.starts_with("HTTP/1.1 503 ") && get.contains("\r\nretry-after: 1\r\n"), "{get}");
        let head = http_exchange(server.addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 503 ") && head.ends_with("\r\n\r\n"), "{head}");
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        // Once the WebSocket is gone, the page is served again.
        let served = loop {
            let get = http_exchange(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if !get.starts_with("HTTP/1.1 503 ") {
                break get;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(served.starts_with("HTTP/1.1 200 OK\r\n"), "{served}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_slow_http_handler_is_cut_off_at_the_handshake_timeout() {
    bounded(async {
        let timeout = Duration::from_millis(200);
        let builder = Server::builder().config(Config::default().handshake_timeout(timeout)).on_http(|_, _| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            http::Response::new(Bytes::from_static(b"too late\n"))
        });
        let server = start(builder, |ws, _| echo(ws)).await;
        let started = Instant::now();
        let response = http_exchange(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(response, "", "no response after the timeout");
        let took = started.elapsed();
        assert!(took >= timeout - Duration::from_millis(20) && took < timeout + Duration::from_secs(2), "{took:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_informational_status_becomes_500() {
    bounded(async {
        let builder = Server::builder().on_http(|_, _| async {
            let mut response = http::Response::new(Bytes::new());
            *response.status_mut() = http::StatusCode::CONTINUE;
            response
        });
        let server = start(builder, |ws, _| echo(ws)).await;
        let response = http_exchange(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{response}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn split_reader_answers_pings_while_the_writer_idles() {
    bounded(async {
        let server = start(Server::builder(), |ws, _| async move {
            let (mut reader, mut writer) = ws.split();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            // The writer sends once, then sits idle until the reader is done.
            let writer_task = tokio::spawn(async move {
                writer.send("from the writer").await?;
                let _ = done_rx.await;
                Ok::<_, wsx::Error>(writer)
            });
            let mut result = Ok(());
            loop {
                match reader.recv().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let _ = done_tx.send(());
            let writer = writer_task.await.map_err(|e| std::io::Error::other(e.to_string()))??;
            assert!(reader.is_pair_of(&writer));
            result
        })
        .await;

        let tcp = TcpStream::connect(server.addr).await.expect("tcp");
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://{}/", server.addr), tcp).await.expect("connect");
        match ws.next().await {
            Some(Ok(tungstenite::Message::Text(text))) => {
                assert_eq!(text.as_str(), "from the writer")
            }
            other => panic!("expected the writer's message, got {other:?}"),
        }
        for round in 0..3u8 {
            let payload = Bytes::from(vec![round; 4]);
            ws.send(tungstenite::Message::Ping(payload.clone())).await.expect("ping");
            match ws.next().await {
                Some(Ok(tungstenite::Message::Pong(pong))) => assert_eq!(pong, payload),
                other => panic!("expected a pong, got {other:?}"),
            }
        }
        ws.close(None).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
        // The server waits for the TCP close that ends the closing handshake.
        drop(ws);

        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn serves_wss_with_tls() {
    bounded(async {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let cert_pem = certified.cert.pem();
        let tls = wsx::tls::ServerTls::from_pem(&cert_pem, certified.signing_key.serialize_pem()).expect("tls");
        let server = Server::builder().tls(tls).bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("local_addr");
        let handle = server.shutdown_handle();
        let task = tokio::spawn(server.serve(|mut ws, _| async move {
            ws.send("ho!").await?;
            while let Some(message) = ws.recv().await? {
                if message.is_data() {
                    ws.send(message).await?;
                }
            }
            Ok(())
        }));

        let (mut ws, _) = wsx::ClientBuilder::new(format!("wss://{addr}/"))
            .root_certificates_pem(&cert_pem)
            .connect()
            .await
            .expect("wss connect");
        assert!(ws.get_ref().is_tls());
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("ho!")));
        ws.send("secret").await.expect("send");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("secret")));
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        drop(ws);

        // A plain-text client is not answered in the clear.
        let plain = connect(addr, request(addr, "/")).await;
        assert!(plain.is_err(), "plain ws:// on a wss:// server");

        handle.shutdown();
        task.await.expect("serve panicked").expect("serve failed");
    })
    .await;
}
