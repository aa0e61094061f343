//! `wsx serve` over TLS + HTTP/2: its WebSockets as extended CONNECTs (RFC 8441) from wsx's own
//! HTTP/2 client (`ClientBuilder::connect_http2`), in every mode, with the metrics, the backlog
//! limit and the shutdown. The browser over HTTP/2 is in `browser.rs`.

mod common;

use common::{
    DevCert, bounded, http, next_close, next_text, port_in, run_wsx, serve, serve_tls, talk_in_batches, within,
};
use wsx::{ClientBuilder, CloseCode, Message, WebSocket, hyper::Io};

/// A WebSocket to `path` over HTTP/2, trusting the server's development certificate `cert`.
async fn h2(port: u16, path: &str, cert: &DevCert) -> WebSocket<Io> {
    h2_with(ClientBuilder::new(format!("wss://localhost:{port}{path}")), cert).await
}

/// A WebSocket over HTTP/2 from `builder`, trusting `cert`.
async fn h2_with(builder: ClientBuilder, cert: &DevCert) -> WebSocket<Io> {
    let builder = builder.root_certificates_pem_file(&cert.path);
    let (ws, _) = within("connect over HTTP/2", builder.connect_http2()).await.expect("HTTP/2 connect");
    assert_eq!(ws.get_ref().http_version(), http::Version::HTTP_2);
    ws
}

/// Rooms over HTTP/2, an HTTP/1.1 client in the same room, the greeting, the log of the HTTP
/// version, and the metrics counting the HTTP/2 WebSockets.
#[tokio::test]
async fn rooms_over_http2() {
    bounded(async {
        let args = ["--rooms", "--greeting", "hi", "--metrics", "127.0.0.1:0"];
        let (server, port, cert) = serve_tls("serve-h2-rooms", &args).await;
        let line = server.stderr_line("the metrics address", |l| l.contains("metrics on http://")).await;
        let metrics_port = port_in(&line);
        let mut a1 = h2(port, "/room/a", &cert).await;
        let mut a2 = h2(port, "/room/a", &cert).await;
        let mut b = h2(port, "/room/b", &cert).await;
        let url = format!("wss://localhost:{port}/room/a");
        let (mut a3, _) =
            within("connect over HTTP/1.1", ClientBuilder::new(&url).root_certificates_pem_file(&cert.path).connect())
                .await
                .expect("HTTP/1.1 connect");
        for ws in [&mut a1, &mut a2, &mut b] {
            assert_eq!(next_text(ws).await, "hi");
        }
        assert_eq!(next_text(&mut a3).await, "hi");
        a1.send("in a").await.unwrap();
        b.send("in b").await.unwrap();
        assert_eq!(next_text(&mut a1).await, "in a", "the sender hears itself");
        assert_eq!(next_text(&mut a2).await, "in a");
        assert_eq!(next_text(&mut a3).await, "in a", "HTTP/1.1 and HTTP/2 clients share the room");
        assert_eq!(next_text(&mut b).await, "in b", "b hears only b");
        a3.send(Message::binary(vec![7u8; 3])).await.unwrap();
        assert_eq!(within("binary", a2.recv()).await.unwrap(), Some(Message::binary(vec![7u8; 3])));
        let line = server.stderr_line("the log of an HTTP/2 room join", |l| l.contains("/room/b")).await;
        assert!(line.contains("client connected") && line.contains("http=\"HTTP/2\""), "{line}");
        let line = server.stdout_line("the log of a room message", |l| l.contains("in b")).await;
        assert_eq!(line, "Received message => in b");
        // Refused like over HTTP/1.1: not a room.
        let builder =
            ClientBuilder::new(format!("wss://localhost:{port}/elsewhere")).root_certificates_pem_file(&cert.path);
        let refused = within("connect", builder.connect_http2()).await.expect_err("not a room");
        assert_eq!(refused.http_status(), Some(http::StatusCode::NOT_FOUND), "{refused}");

        for ws in [&mut a1, &mut a2, &mut b] {
            within("close", ws.close(CloseCode::NORMAL, "")).await.unwrap();
        }
        within("close", a3.close(CloseCode::NORMAL, "")).await.unwrap();
        let mut text = String::new();
        for _ in 0..100 {
            text = http(metrics_port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if text.contains("wsx_connections_active 0") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for line in [
            "wsx_connections_accepted_total 4",
            "wsx_connections_active 0",
            "wsx_messages_received_total{kind=\"text\"} 2",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    })
    .await;
}

/// A client whose HTTP/2 stream stops being read (its flow-control window runs out, then the
/// server's queue for it grows) is closed at `--max-backlog` with 1008, while the others go on.
#[tokio::test]
async fn backlog_limit_over_http2() {
    bounded(async {
        let args = ["--rooms", "--greeting", "hi", "--max-backlog", "256KiB", "--quiet"];
        let (_server, port, cert) = serve_tls("serve-h2-backlog", &args).await;
        // Without permessage-deflate, which would shrink the feed to nothing on the wire.
        let plain = || ClientBuilder::new(format!("wss://localhost:{port}/room/feed")).config(wsx::Config::default());
        let mut stalled = h2_with(plain(), &cert).await;
        assert_eq!(next_text(&mut stalled).await, "hi");
        let mut talker = h2_with(plain(), &cert).await;
        assert_eq!(next_text(&mut talker).await, "hi");
        // 8 MiB in 4 KiB messages, read back by the talker in batches: far past the stalled
        // client's HTTP/2 windows (hyper's client: 2 MiB per stream, 5 MiB per connection).
        let count = 2048;
        talk_in_batches(&mut talker, count).await;
        // The stalled client reads at last: what fitted, then the server's 1008.
        let mut received = 0;
        let close = loop {
            match within("the stalled client's messages", stalled.recv()).await {
                Ok(Some(Message::Binary(_))) => received += 1,
                Ok(Some(Message::Close(frame))) => break frame,
                other => panic!("expected messages then a close, got {other:?}"),
            }
        };
        let close = close.expect("a close frame");
        assert_eq!(close.code, CloseCode::POLICY);
        assert_eq!(close.reason.as_str(), format!("slow consumer: over {} bytes queued", 256 << 10));
        assert!(received < count, "it was cut off before the end ({received} received)");
    })
    .await;
}

/// `--memory-budget` over TLS, where `wsx::hyper::Server` serves: with a budget of 256 KiB a
/// 1 MiB message gets 1013 over HTTP/2 and over HTTP/1.1, while small messages echo.
#[tokio::test]
async fn memory_budget_over_tls() {
    bounded(async {
        let args = ["--echo", "--deflate", "off", "--memory-budget", "256KiB"];
        let (_server, port, cert) = serve_tls("serve-h2-budget", &args).await;
        let big = Message::binary(vec![7u8; 1 << 20]);
        let mut small = h2(port, "/", &cert).await;
        let mut over_h2 = h2(port, "/", &cert).await;
        small.send("small").await.unwrap();
        assert_eq!(next_text(&mut small).await, "small");
        over_h2.send(big.clone()).await.unwrap();
        assert_eq!(next_close(&mut over_h2).await, Some(CloseCode::AGAIN));
        let builder = ClientBuilder::new(format!("wss://localhost:{port}/")).root_certificates_pem_file(&cert.path);
        let (mut over_h1, _) = within("connect over HTTP/1.1", builder.connect()).await.expect("HTTP/1.1 connect");
        over_h1.send(big).await.unwrap();
        assert_eq!(next_close(&mut over_h1).await, Some(CloseCode::AGAIN));
        small.send("still here").await.unwrap();
        assert_eq!(next_text(&mut small).await, "still here");
    })
    .await;
}

/// Over TLS too, a client past `--max-connections` is answered 503 with `Retry-After` (over
/// HTTP/1.1 and HTTP/2), not dropped; the slot serves again once the first client has gone.
#[tokio::test]
async fn max_connections_answers_503_over_tls() {
    bounded(async {
        let (_server, port, cert) = serve_tls("serve-h2-cap", &["--max-connections", "1"]).await;
        let mut first = h2(port, "/", &cert).await;
        assert_eq!(next_text(&mut first).await, "ho!");
        let builder = || ClientBuilder::new(format!("wss://localhost:{port}/")).root_certificates_pem_file(&cert.path);
        let over_h1 = within("connect over HTTP/1.1", builder().connect()).await.expect_err("over the cap");
        let over_h2 = within("connect over HTTP/2", builder().connect_http2()).await.expect_err("over the cap");
        for error in [over_h1, over_h2] {
            assert_eq!(error.http_status().map(|s| s.as_u16()), Some(503), "{error}");
            assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(1)), "{error}");
        }
        first.close(CloseCode::NORMAL, "").await.unwrap();
        // The cap counts TCP connections: this one closes with its last WebSocket.
        drop(first);
        let mut retry = None;
        for _ in 0..50 {
            if let Ok((ws, _)) = builder().connect_http2().await {
                retry = Some(ws);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(next_text(retry.as_mut().expect("a slot frees up")).await, "ho!");
    })
    .await;
}

/// Echo mode over HTTP/2: 1,000 messages with permessage-deflate; then SIGTERM closes the
/// HTTP/2 WebSocket with 1001.
#[tokio::test]
async fn echo_then_sigterm_over_http2() {
    bounded(async {
        let (mut server, port, cert) = serve_tls("serve-h2-echo", &["--echo", "--quiet"]).await;
        let mut ws = h2(port, "/", &cert).await;
        assert!(ws.is_compressed(), "permessage-deflate agreed over HTTP/2");
        for i in 0..1_000 {
            let message = Message::text(format!("message {i}"));
            within("send", ws.send(message.clone())).await.unwrap();
            assert_eq!(within("the echo", ws.recv()).await.unwrap(), Some(message));
        }
        let reader = tokio::spawn(async move { next_close(&mut ws).await });
        let status = server.terminate().await;
        assert!(status.success(), "exit status {status:?}: {}", server.stderr_text());
        assert_eq!(within("the close", reader).await.unwrap(), Some(CloseCode::AWAY));
    })
    .await;
}

/// `wsx connect --http2` against `wsx serve --tls-self-signed`: the greeting and a message over
/// one HTTP/2 stream; against a cleartext (HTTP/1.1 only) `wsx serve`, a clear failure.
#[tokio::test]
async fn wsx_connect_http2() {
    bounded(async {
        let (server, port, cert) = serve_tls("serve-h2-connect", &[]).await;
        let url = format!("wss://localhost:{port}/");
        let run = run_wsx(&["connect", "--http2", "--ca", cert.path_str(), "--wait", "300ms", &url], "hey\n").await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(run.stdout.contains("< ho!"), "{}", run.stdout);
        let line = server.stdout_line("the server's log of the message", |l| l.contains("Received")).await;
        assert_eq!(line, "Received message => hey");
        let line = server.stderr_line("the log of the WebSocket", |l| l.contains("client connected")).await;
        assert!(line.contains("http=\"HTTP/2\""), "{line}");

        let (_plain, port) = serve(&[]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let run = run_wsx(&["connect", "--http2", "--connect-timeout", "2s", &url], "").await;
        assert_ne!(run.code, Some(0), "{}", run.stdout);
    })
    .await;
}
