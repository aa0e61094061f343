//! The tokio driver over in-memory pipes: backpressure, timers (with tokio's paused clock),
//! split halves and fragmented sends. No sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use wsx::{CloseCode, Config, Frame, Message, WebSocket};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A connected client and server over a pipe of `capacity` bytes.
async fn pair(capacity: usize, client: Config, server: Config) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (a, b) = duplex(capacity);
    let request = http::Request::get("ws://x/").body(()).unwrap();
    let (client, server) =
        tokio::join!(wsx::handshake(a, &request, &client), wsx::accept_with(b, &server, |_| Ok(wsx::Accept::new())));
    (client.unwrap().0, server.unwrap())
}

/// A server whose peer is raw bytes the test controls.
async fn raw_peer(config: Config) -> (WebSocket<DuplexStream>, DuplexStream) {
    let (mut raw, b) = duplex(1 << 16);
    raw.write_all(REQUEST).await.unwrap();
    let server = wsx::accept_with(b, &config, |_| Ok(wsx::Accept::new())).await.unwrap();
    let mut head = vec![0; 129];
    raw.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"));
    (server, raw)
}

#[tokio::test]
async fn send_waits_when_the_peer_does_not_read() {
    let high = 64 << 10;
    let (mut client, _server) = pair(4096, Config::default().write_high_water(high), Config::default()).await;
    let message = Message::binary(vec![7u8; 1024]);
    let mut sent = 0;
    loop {
        // `feed` queues without waiting for the write; it waits only past the high-water mark.
        match tokio::time::timeout(Duration::from_millis(200), client.feed(message.clone())).await {
            Ok(result) => result.unwrap(),
            Err(_) => break,
        }
        sent += 1;
        assert!(sent < 10_000, "send never waited");
    }
    // It stopped once the queue passed the high-water mark, with at most one message more.
    assert!(client.buffered_amount() <= high + 1024 + 14, "{}", client.buffered_amount());
    assert!(sent * 1024 >= high, "waited too early: {sent} messages");
}

#[tokio::test(start_paused = true)]
async fn unanswered_keepalive_fails_with_1011() {
    let config = Config::default().ping_interval(Some(Duration::from_secs(5))).pong_timeout(Duration::from_secs(3));
    let (mut server, mut raw) = raw_peer(config).await;
    let started = tokio::time::Instant::now();
    let error = server.recv().await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(error.close_code(), Some(CloseCode::INTERNAL));
    assert_eq!(started.elapsed(), Duration::from_secs(8));
    // The peer got a ping, then a close 1011.
    let mut bytes = vec![0; 64];
    let n = raw.read(&mut bytes).await.unwrap();
    assert_eq!(bytes[0], 0x89, "ping first: {:x?}", &bytes[..n]);
    let close = &bytes[2 + usize::from(bytes[1])..];
    assert_eq!(&close[..4], &[0x88, close[1], 0x03, 0xF3], "then close 1011");
}

#[tokio::test(start_paused = true)]
async fn answered_keepalive_keeps_the_connection_open() {
    let config = Config::default().ping_interval(Some(Duration::from_secs(5))).pong_timeout(Duration::from_secs(3));
    let (mut client, mut server) = pair(1 << 16, Config::default(), config).await;
    // The client answers pings as it reads; a minute passes.
    let reader = tokio::spawn(async move {
        let mut pongs = 0;
        while let Ok(Some(message)) = client.recv().await {
            if let Message::Ping(_) = message {
                pongs += 1;
            }
        }
        pongs
    });
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match server.recv().await {
                Ok(Some(Message::Pong(_))) => {}
                other => return other,
            }
        }
    })
    .await;
    assert!(result.is_err(), "still open after a minute: {result:?}");
    server.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(reader.await.unwrap() >= 11);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_with_1001() {
    let (mut server, _raw) = raw_peer(Config::default().idle_timeout(Some(Duration::from_secs(30)))).await;
    let error = server.recv().await.unwrap_err();
    assert_eq!(error.close_code(), Some(CloseCode::AWAY));
}

#[tokio::test(start_paused = true)]
async fn close_completes_against_a_silent_peer_after_the_close_timeout() {
    let (mut server, _raw) = raw_peer(Config::default().close_timeout(Duration::from_secs(4))).await;
    let started = tokio::time::Instant::now();
    server.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(4));
}

#[tokio::test]
async fn split_halves_work_in_separate_tasks() {
    let (client, mut server) = pair(1 << 16, Config::default(), Config::default()).await;
    let echo = tokio::spawn(async move {
        while let Some(message) = server.recv().await.unwrap() {
            if message.is_data() {
                server.send(message).await.unwrap();
            }
        }
    });
    let (mut reader, mut writer) = client.split();
    let writing = tokio::spawn(async move {
        for i in 0..200 {
            writer.send(format!("message {i}")).await.unwrap();
        }
        writer
    });
    for i in 0..200 {
        let message = reader.recv().await.unwrap().unwrap();
        assert_eq!(message.as_text(), Some(format!("message {i}").as_str()));
    }
    let mut writer = writing.await.unwrap();
    writer.close(CloseCode::NORMAL, "done").await.unwrap();
    // The reader sees the echo of our close, then the end.
    assert!(matches!(reader.recv().await.unwrap(), Some(Message::Close(Some(f))) if f.code == CloseCode::NORMAL));
    assert!(reader.recv().await.unwrap().is_none());
    echo.await.unwrap();
    let ws = reader.unsplit(writer).unwrap();
    assert!(ws.close_reason().unwrap().is_clean());
}

#[tokio::test]
async fn fragmented_send_arrives_whole() {
    let (mut client, mut server) = pair(1 << 16, Config::default(), Config::default()).await;
    client.send_frame(Frame::text("hel", false)).await.unwrap();
    client.ping("between").await.unwrap();
    client.send_frame(Frame::continuation("", false)).await.unwrap();
    client.send_frame(Frame::continuation("lo", true)).await.unwrap();
    assert_eq!(server.recv().await.unwrap(), Some(Message::Ping("between".into())));
    assert_eq!(server.recv().await.unwrap(), Some(Message::text("hello")));
    assert!(client.send_frame(Frame::continuation("x", true)).await.is_err(), "no message open");
}

#[tokio::test]
async fn peer_protocol_error_is_reported_with_its_close_code() {
    let (mut server, mut raw) = raw_peer(Config::default()).await;
    // An unmasked frame from a client.
    raw.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let error = server.recv().await.unwrap_err();
    assert!(error.is_protocol());
    assert_eq!(error.close_code(), Some(CloseCode::PROTOCOL));
    let mut close = [0; 4];
    raw.read_exact(&mut close).await.unwrap();
    assert_eq!(&close[..1], &[0x88]);
    assert_eq!(&close[2..4], &1002u16.to_be_bytes());
}

#[tokio::test]
async fn sending_after_close_is_an_error_not_a_panic() {
    let (mut client, mut server) = pair(1 << 16, Config::default(), Config::default()).await;
    let closing = tokio::spawn(async move { while server.recv().await.unwrap().is_some() {} });
    client.close(CloseCode::NORMAL, "").await.unwrap();
    let error = client.send("late").await.unwrap_err();
    assert!(error.is_closed(), "{error}");
    closing.await.unwrap();
}

#[tokio::test]
async fn compression_can_be_chosen_per_message() {
    let deflate = Config::default().deflate(Some(wsx::DeflateConfig::default()));
    let (mut client, mut server) = pair(1 << 16, deflate.clone(), deflate).await;
    assert!(client.is_compressed() && server.is_compressed());
    let text = "abc".repeat(1000);
    // Over the threshold but sent plain, and under it but compressed: both arrive intact.
    client.send_compressed(text.as_str(), false).await.unwrap();
    client.send_compressed("tiny", true).await.unwrap();
    assert_eq!(server.recv().await.unwrap(), Some(Message::text(text)));
    assert_eq!(server.recv().await.unwrap(), Some(Message::text("tiny")));
}

/// The borrowed receive path (`recv_each`) echoing: every data message reaches the handler in
/// order, whatever its size or framing, and the other kinds come back to the caller.
#[tokio::test]
async fn recv_each_echoes_everything_in_order_and_returns_control_messages() {
    let (client, mut server) = pair(1 << 16, Config::default(), Config::default()).await;
    let echo = tokio::spawn(async move {
        let mut handled = 0usize;
        let mut returned = Vec::new();
        loop {
            let handler = |m: wsx::MessageRef<'_>, r: &mut wsx::Replies<'_>| {
                handled += 1;
                r.send(m).unwrap();
            };
            match server.recv_each(handler).await.unwrap() {
                Some(other) => returned.push(other),
                None => break,
            }
        }
        (handled, returned)
    });
    // Write from one task while this one reads the echoes: they are far larger than the pipe.
    let (mut reader, mut writer) = client.split();
    let sender = tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 0..200usize {
            let message = match i % 4 {
                0 => Message::text(format!("text {i}")),
                1 => Message::binary(vec![i as u8; i * 7]),
                2 => Message::binary(vec![i as u8; 70_000 + i]),
                _ => Message::text("é".repeat(i)),
            };
            writer.feed(message.clone()).await.unwrap();
            sent.push(message);
            if i % 50 == 0 {
                writer.feed(Message::Ping(bytes::Bytes::from(format!("p{i}")))).await.unwrap();
            }
        }
        writer.send_frame(Frame::text("frag", false)).await.unwrap();
        writer.send_frame(Frame::continuation("mented", true)).await.unwrap();
        sent.push(Message::text("fragmented"));
        writer.flush().await.unwrap();
        (writer, sent)
    });
    let mut got = Vec::new();
    let mut pongs = 0;
    while got.len() < 201 {
        match reader.recv().await.unwrap().unwrap() {
            Message::Pong(_) => pongs += 1,
            m => got.push(m),
        }
    }
    let (writer, sent) = sender.await.unwrap();
    assert!(got == sent, "echoes differ from what was sent");
    let mut client = reader.unsplit(writer).unwrap();
    client.close(CloseCode::NORMAL, "done").await.unwrap();
    let (handled, returned) = echo.await.unwrap();
    assert_eq!(handled, sent.len());
    assert_eq!(pongs, 4);
    let kinds: Vec<String> = returned.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        kinds,
        [
            "<ping, 2 bytes>",
            "<ping, 3 bytes>",
            "<ping, 4 bytes>",
            "<ping, 4 bytes>",
            "<close 1000 (normal closure): \"done\">"
        ]
    );
}

#[tokio::test]
async fn recv_each_stops_handling_while_the_peer_does_not_read() {
    let high = 32 << 10;
    let (mut client, mut server) = pair(4096, Config::default(), Config::default().write_high_water(high)).await;
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = handled.clone();
    let echo = tokio::spawn(async move {
        let handler = move |m: wsx::MessageRef<'_>, r: &mut wsx::Replies<'_>| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            r.send(m).unwrap();
        };
        let result = server.recv_each(handler).await;
        (result.map(|m| m.is_some()), server.buffered_amount())
    });
    // 4,000 messages of 1 KiB, and the client never reads the echoes.
    let message = Message::binary(vec![1u8; 1024]);
    let writer = tokio::spawn(async move {
        for _ in 0..4000 {
            if client.send(message.clone()).await.is_err() {
                break;
            }
        }
        client
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled_at = handled.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handled.load(std::sync::atomic::Ordering::Relaxed), stalled_at, "still handling");
    assert!(stalled_at < 4000, "never stopped: {stalled_at}");
    assert!(stalled_at * 1024 >= high, "stopped before the mark: {stalled_at}");
    echo.abort();
    writer.abort();
}

#[tokio::test]
async fn recv_each_reports_a_protocol_error_after_the_messages_before_it() {
    let (mut server, mut raw) = raw_peer(Config::default()).await;
    let mut input = Vec::new();
    for payload in [&b"one"[..], b"two", &[b'a', 0xFF]] {
        input.extend([0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
        input.extend(payload);
    }
    raw.write_all(&input).await.unwrap();
    let mut seen = Vec::new();
    let error = server
        .recv_each(|m, r| {
            seen.push(m.as_text().unwrap().to_owned());
            r.send_text("ok").unwrap();
        })
        .await
        .unwrap_err();
    assert_eq!(error.close_code(), Some(CloseCode::INVALID_DATA));
    assert_eq!(seen, ["one", "two"]);
    let mut out = vec![0; 8];
    raw.read_exact(&mut out).await.unwrap();
    assert_eq!(out, [0x81, 2, b'o', b'k', 0x81, 2, b'o', b'k'], "the replies went out before the close");
    let mut close = [0; 4];
    raw.read_exact(&mut close).await.unwrap();
    assert_eq!([close[0], close[2], close[3]], [0x88, 0x03, 0xEF], "then close 1007");
}

#[tokio::test]
async fn recv_each_handler_can_close_the_connection() {
    let (mut client, mut server) = pair(1 << 16, Config::default(), Config::default()).await;
    let task = tokio::spawn(async move {
        let mut results = Vec::new();
        while let Some(m) = server
            .recv_each(|m, r| {
                if m.as_text() == Some("quit") {
                    r.close(CloseCode(4001), "bye").unwrap();
                } else {
                    r.send(m).unwrap();
                }
            })
            .await
            .unwrap()
        {
            results.push(m);
        }
        results
    });
    client.send("hello").await.unwrap();
    client.send("quit").await.unwrap();
    assert_eq!(client.recv().await.unwrap(), Some(Message::text("hello")));
    let Some(Message::Close(Some(frame))) = client.recv().await.unwrap() else { panic!("no close") };
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode(4001), "bye"));
    assert_eq!(client.recv().await.unwrap(), None);
    let returned = task.await.unwrap();
    assert_eq!(returned, [Message::Close(Some(wsx::CloseFrame::new(CloseCode(4001), "bye")))]);
}

#[tokio::test]
async fn a_split_reader_answers_pings_while_the_writer_is_idle() {
    let (server, mut raw) = raw_peer(Config::default()).await;
    let (mut reader, _writer) = server.split();
    // A masked ping from the raw peer; the writer half is never polled.
    let key = [1, 2, 3, 4];
    let mut ping = vec![0x89, 0x80 | 4];
    ping.extend_from_slice(&key);
    ping.extend(b"ping".iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    raw.write_all(&ping).await.unwrap();
    assert_eq!(reader.recv().await.unwrap(), Some(Message::Ping("ping".into())));
    let mut pong = [0; 6];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut pong)).await.expect("pong sent").unwrap();
    assert_eq!(pong, [0x8A, 4, b'p', b'i', b'n', b'g']);
}

#[tokio::test]
async fn split_halves_have_the_whole_api() {
    let config = Config::default().deflate(Some(wsx::DeflateConfig::default()));
    let (client, server) = pair(1 << 16, config.clone(), config).await;
    let (mut reader, mut writer) = server.split();
    let (mut client_reader, mut client_writer) = client.split();
    let replies = tokio::spawn(async move {
        // The reader answers data messages in place, through the shared writing side.
        let mut handled = 0;
        let mut other = Vec::new();
        while let Some(message) = reader
            .recv_each(|m, r| {
                handled += 1;
                r.send_text(&format!("re: {}", m.as_text().unwrap_or("?"))).unwrap();
            })
            .await
            .unwrap()
        {
            other.push(message);
        }
        (handled, other)
    });
    writer.ping("from the writer").await.unwrap();
    writer.send_compressed(Message::text("x".repeat(5000)), true).await.unwrap();
    client_writer.send("hello").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match client_reader.recv().await.unwrap().unwrap() {
            Message::Pong(_) => {}
            m => got.push(m),
        }
    }
    assert_eq!(got[0], Message::Ping("from the writer".into()));
    assert_eq!(got[1], Message::text("x".repeat(5000)));
    assert_eq!(got[2], Message::text("re: hello"));
    client_writer.close(CloseCode::NORMAL, "").await.unwrap();
    while client_reader.recv().await.unwrap().is_some() {}
    let (handled, other) = replies.await.unwrap();
    assert_eq!(handled, 1);
    assert!(matches!(other.last(), Some(Message::Close(_))), "{other:?}");
}

#[tokio::test]
async fn after_a_clean_close_both_sides_end_without_waiting_for_the_close_timeout() {
    let config = Config::default().close_timeout(Duration::from_secs(30));
    let (mut client, mut server) = pair(1 << 16, config.clone(), config).await;
    let serving = tokio::spawn(async move {
        while server.recv().await.unwrap().is_some() {}
        server
    });
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
    // The client is still alive (not dropped): its socket must have been shut down for the
    // server to see the end before the 30 s close timeout.
    let server = tokio::time::timeout(Duration::from_secs(5), serving).await.expect("server ended").unwrap();
    assert!(server.close_reason().unwrap().is_clean());
    assert!(client.close_reason().unwrap().is_clean());
}
