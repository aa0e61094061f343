//! Metrics (feature `metrics`): a scripted session against a real server with the Prometheus
//! recorder installed, then the exact values in the rendered `/metrics` text.
//!
//! One test in this binary: the recorder is global to the process.

use std::time::Duration;

use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use wsx::{Accept, ClientBuilder, CloseCode, Config, Message, Proxy, Reject, Server};

#[tokio::test]
async fn a_scripted_session_gives_exact_values() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap();
    wsx::metrics::enable();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .on_request(|request| match request.path() {
            "/forbidden" => Err(Reject::status(StatusCode::FORBIDDEN)),
            _ => Ok(Accept::new()),
        })
        .from_listener(listener);
    let stop = server.shutdown_handle();
    tokio::spawn(server.serve(|mut ws, info| async move {
        if info.path() == "/policy" {
            return ws.close(CloseCode::POLICY, "go away").await;
        }
        if info.path() == "/each" {
            // The borrowed receive path: messages and replies counted in the driver's tally.
            while ws
                .recv_each(|message, replies| {
                    let _ = replies.send(message);
                })
                .await?
                .is_some()
            {}
            return Ok(());
        }
        while let Some(message) = ws.recv().await? {
            if message.is_data() {
                ws.send(message).await?;
            }
        }
        Ok(())
    }));
    // No permessage-deflate: the wire bytes are then exact.
    let client = |path: &str| {
        ClientBuilder::new(format!("ws://{addr}{path}")).proxy(Proxy::none()).config(Config::default().deflate(None))
    };

    // 1. Three texts and two binaries echoed, then the client closes with 1000.
    let (mut ws, _) = client("/echo").connect().await.unwrap();
    for message in [
        Message::text("a"),
        Message::text("bb"),
        Message::text("ccc"),
        Message::binary(vec![1u8; 4]),
        Message::binary(vec![2u8; 5]),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(message));
    }
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    while ws.recv().await.unwrap().is_some() {}

    // 2. Refused by the application: 403.
    let e = client("/forbidden").connect().await.unwrap_err();
    assert_eq!(e.http_status(), Some(StatusCode::FORBIDDEN));

    // 3. A broken upgrade request (no Sec-WebSocket-Key): 400 from the engine.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request =
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    // The server waits for our end of TCP before it counts the failure (lingering close).
    drop(tcp);

    // 4. The server closes with 1008.
    let (mut ws, _) = client("/policy").connect().await.unwrap();
    while let Ok(Some(_)) = ws.recv().await {}
    assert_eq!(ws.close_reason().unwrap().code(), CloseCode::POLICY);

    // 5. Echoed through `recv_each`: a text and a binary, then the client closes with 1000.
    let (mut ws, _) = client("/each").connect().await.unwrap();
    for message in [Message::text("e"), Message::binary(vec![9u8; 2])] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(message));
    }
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    while ws.recv().await.unwrap().is_some() {}

    // 6. The client goes away without a close frame: 1006.
    let (ws, _) = client("/echo").connect().await.unwrap();
    drop(ws);

    // Until every server connection has ended (bounded).
    let mut text = String::new();
    for _ in 0..200 {
        text = prometheus.render();
        let ended = text.contains("wsx_connections_active 0") && text.contains("code_class=\"abnormal\"");
        if ended && text.contains("status=\"400\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{text}");
    let mut values: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter(|l| !l.contains("_seconds{quantile") && !l.contains("_seconds_sum"))
        .collect();
    values.sort_unstable();
    // Wire bytes (client frames are masked: 4 more bytes each):
    //   in:  data 1+2+3+4+5 = 15 payload + 5 × (2 + 4) headers = 45; the close frame (code
    //        1000) 2 + 4 + 2 = 8; the policy connection's close echo (code and reason)
    //        2 + 4 + 2 + 7 = 15; through recv_each, 1 + 2 + 2 × 6 = 15 and its close 8.
    //        Total 91.
    //   out: data 15 + 5 × 2 = 25; the close echo 2 + 2 = 4; the policy close 2 + 2 + 7 = 11;
    //        through recv_each 3 + 2 × 2 = 7 and its close echo 4. Total 51.
    let expected = [
        "wsx_bytes_received_total 91",
        "wsx_bytes_sent_total 51",
        "wsx_closes_total{code_class=\"abnormal\",initiator=\"remote\"} 1",
        "wsx_closes_total{code_class=\"normal\",initiator=\"remote\"} 2",
        "wsx_closes_total{code_class=\"policy\",initiator=\"local\"} 1",
        "wsx_connection_duration_seconds_count 4",
        "wsx_connections_accepted_total 4",
        "wsx_connections_active 0",
        // Nothing compressed here (no permessage-deflate), no keep-alive pings, no topics.
        "wsx_deflate_bytes_total{direction=\"received\",form=\"compressed\"} 0",
        "wsx_deflate_bytes_total{direction=\"received\",form=\"uncompressed\"} 0",
        "wsx_deflate_bytes_total{direction=\"sent\",form=\"compressed\"} 0",
        "wsx_deflate_bytes_total{direction=\"sent\",form=\"uncompressed\"} 0",
        "wsx_handshake_duration_seconds_count 4",
        "wsx_handshakes_failed_total{reason=\"bad_request\",status=\"400\"} 1",
        "wsx_handshakes_failed_total{reason=\"rejected\",status=\"403\"} 1",
        "wsx_messages_received_total{kind=\"binary\"} 3",
        "wsx_messages_received_total{kind=\"text\"} 4",
        "wsx_messages_sent_total{kind=\"binary\"} 3",
        "wsx_messages_sent_total{kind=\"text\"} 4",
        "wsx_ping_rtt_seconds_count 0",
        "wsx_pubsub_subscriptions 0",
        "wsx_pubsub_topics 0",
    ];
    assert_eq!(values, expected, "{text}");
    stop.shutdown();
}
