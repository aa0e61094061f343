//! The client scenario wsx runs against each peer's echo server (every message size, UTF-8,
//! fragments, ping, close), the data it sends, and what our echo server must have seen of a
//! peer's own client scenario.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use wsx::{
    CloseCode, CloseFrame, Config, Message, WebSocket,
    proto::{Connection, Event, Frame, OsSeededRng},
};

use crate::{
    STEP_TIMEOUT,
    certs::TestCert,
    echo_server::{ConnLog, server_config},
    within,
};

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// `len` pseudo-random bytes from `seed`: incompressible, so deflate cannot shorten an echo.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Bytes {
    Bytes::from(wsx_testkit::Rng::new(seed).bytes(len))
}

/// A text with 1-, 2-, 3- and 4-byte UTF-8 sequences, U+FFFD and U+10FFFF.
pub(crate) const UTF8_TEXT: &str =
    "wsx: héllo wörld — Ελληνικά, русский, 中文, 日本語, 한국어, 🦀🎉 \u{FFFD} \u{10FFFF}";

/// Where two payloads first differ, for failure messages that do not dump 16 MiB.
pub(crate) fn compare(what: &str, sent: &[u8], got: &[u8]) -> Result<(), String> {
    if sent == got {
        return Ok(());
    }
    let first = sent.iter().zip(got).position(|(a, b)| a != b).unwrap_or(sent.len().min(got.len()));
    Err(format!(
        "{what}: payload mismatch: sent {} bytes, got {} bytes, first difference at byte {first}",
        sent.len(),
        got.len()
    ))
}

/// A short description of a message.
pub(crate) fn describe(message: &Message) -> String {
    match message {
        Message::Text(t) if t.len() <= 64 => format!("Text({:?})", t.as_str()),
        Message::Text(t) => format!("Text({} bytes)", t.len()),
        Message::Binary(b) => format!("Binary({} bytes)", b.len()),
        Message::Ping(p) => format!("Ping({p:?})"),
        Message::Pong(p) => format!("Pong({p:?})"),
        Message::Close(c) => format!("Close({c:?})"),
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// Client configs: permessage-deflate offered or not.
pub(crate) fn client_config(deflate: bool) -> Config {
    server_config(deflate)
}

/// The upgrade request for `url`.
pub(crate) fn request(url: &str) -> http::Request<()> {
    http::Request::builder().uri(url).body(()).expect("a valid request")
}

/// The step names of [`run_scenario`], in order.
pub(crate) const SCENARIO_STEPS: &[&str] = &[
    "text",
    "binary",
    "empty_text",
    "empty_binary",
    "size_125",
    "size_126",
    "size_65535",
    "size_65536",
    "size_16mib",
    "utf8_text",
    "ping",
    "fragmented",
    "fragmented_binary",
    "fragmented_compressible",
    "close",
];

/// A close reason of 124 bytes: one over the limit.
pub(crate) const LONG_REASON: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// The ping payload, with bytes that are not UTF-8.
pub(crate) const PING_PAYLOAD: &[u8] = b"wsx-ping-\x00\x01\xfe\xff";

/// Each step's outcome, by name, in the order of [`SCENARIO_STEPS`].
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) steps: BTreeMap<&'static str, Result<(), String>>,
    pub(crate) timings: Vec<(&'static str, Duration)>,
}

impl Results {
    pub(crate) async fn run(&mut self, name: &'static str, fut: impl Future<Output = Result<(), String>>) {
        let start = Instant::now();
        let result = match tokio::time::timeout(STEP_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("timeout after {STEP_TIMEOUT:?}")),
        };
        self.timings.push((name, start.elapsed()));
        self.steps.insert(name, result);
    }

    /// Fail naming every step that is not ok, or missing.
    pub(crate) fn assert_all_ok(&self, peer: &str, steps: &[&str]) {
        let failures: Vec<String> = steps
            .iter()
            .filter_map(|step| match self.steps.get(step) {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(format!("step `{step}`: {e}")),
                None => Some(format!("step `{step}`: not run")),
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{peer}: {} step(s) failed:\n  {}\n(timings: {:?})",
            failures.len(),
            failures.join("\n  "),
            self.timings
        );
    }
}

/// The next text/binary message (pongs skipped), as an error text when it does not come.
async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Result<Message, String> {
    loop {
        match ws.recv().await {
            Ok(Some(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Ok(Some(Message::Pong(_) | Message::Ping(_))) => {}
            Ok(Some(m)) => return Err(format!("expected a data message, got {}", describe(&m))),
            Ok(None) => return Err(format!("connection ended ({:?})", ws.close_reason())),
            Err(e) => return Err(format!("recv failed: {e} ({:?})", ws.close_reason())),
        }
    }
}

/// Send `message` and check that the echo has the same type and payload.
pub(crate) async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    message: Message,
) -> Result<(), String> {
    let sent = describe(&message);
    let is_text = matches!(message, Message::Text(_));
    let payload = Bytes::copy_from_slice(message.as_payload());
    ws.send(message).await.map_err(|e| format!("send {sent}: {e}"))?;
    let got = next_data(ws).await.map_err(|e| format!("after sending {sent}: {e}"))?;
    if matches!(got, Message::Text(_)) != is_text {
        return Err(format!("sent {sent}, got {}", describe(&got)));
    }
    compare(&sent, &payload, got.as_payload())
}

/// Run the scenario on a connection from `open_ws`; the 16 MiB step gets a connection of its
/// own from `open_ws`, and the fragmented steps raw ones from `open_raw` (the handshake driven
/// on the engine, so that frames can be queued with `send_frame`). Records each step.
pub(crate) async fn run_scenario<S, W, FW, S2, R, F>(open_ws: W, open_raw: R) -> Results
where
    S: AsyncRead + AsyncWrite + Unpin,
    W: Fn() -> FW,
    FW: Future<Output = WebSocket<S>>,
    S2: AsyncRead + AsyncWrite + Unpin,
    R: Fn() -> F,
    F: Future<Output = (S2, Connection)>,
{
    let mut ws = open_ws().await;
    let mut r = Results::default();
    r.run("text", echo(&mut ws, Message::text("hello wsx"))).await;
    r.run("binary", echo(&mut ws, Message::binary((0..=255u8).collect::<Vec<u8>>()))).await;
    r.run("empty_text", echo(&mut ws, Message::text(""))).await;
    r.run("empty_binary", echo(&mut ws, Message::binary(Bytes::new()))).await;
    for (name, len) in [("size_125", 125), ("size_126", 126), ("size_65535", 65535), ("size_65536", 65536)] {
        r.run(name, echo(&mut ws, Message::binary(random_bytes(len, len as u64)))).await;
    }
    // On a connection of its own, so that a failure here does not hide the later steps.
    r.run("size_16mib", async {
        let mut big = open_ws().await;
        echo(&mut big, Message::binary(random_bytes(16 << 20, 16))).await?;
        big.close(CloseCode::NORMAL, "").await.map_err(|e| format!("close after the 16 MiB echo: {e}"))
    })
    .await;
    r.run("utf8_text", echo(&mut ws, Message::text(UTF8_TEXT))).await;
    r.run("ping", ping(&mut ws)).await;
    r.run("fragmented", fragmented(&open_raw, Fragments::Text)).await;
    r.run("fragmented_binary", fragmented(&open_raw, Fragments::Binary)).await;
    r.run("fragmented_compressible", fragmented(&open_raw, Fragments::Compressible)).await;
    r.run("close", close(&mut ws)).await;
    r
}

/// Ping with [`PING_PAYLOAD`]; the peer must pong the same payload.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Result<(), String> {
    ws.ping(Bytes::from_static(PING_PAYLOAD)).await.map_err(|e| format!("send ping: {e}"))?;
    match ws.recv().await {
        Ok(Some(Message::Pong(p))) if p == PING_PAYLOAD => Ok(()),
        Ok(Some(Message::Pong(p))) => Err(format!("pong with payload {p:?}, expected {PING_PAYLOAD:?}")),
        Ok(Some(m)) => Err(format!("expected a pong, got {}", describe(&m))),
        Ok(None) => Err("connection ended before the pong".into()),
        Err(e) => Err(format!("recv failed before the pong: {e}")),
    }
}

/// Close with 4001 "bye": the peer must answer 4001 "bye" and the closing handshake must be clean.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Result<(), String> {
    let ours = CloseFrame::new(CloseCode(4001), "bye");
    ws.send(Message::Close(Some(ours.clone()))).await.map_err(|e| format!("send close: {e}"))?;
    let mut echo = None;
    loop {
        match ws.recv().await {
            Ok(Some(Message::Close(frame))) => echo = Some(frame),
            Ok(Some(m)) => return Err(format!("after our close, got {}", describe(&m))),
            Ok(None) => break,
            Err(e) => return Err(format!("closing handshake failed: {e}; reason {:?}", ws.close_reason())),
        }
    }
    match echo {
        Some(Some(frame)) if frame == ours => {}
        Some(frame) => return Err(format!("the peer answered {frame:?}, expected 4001 \"bye\"")),
        None => return Err(format!("the stream ended without the peer's close frame ({:?})", ws.close_reason())),
    }
    let reason = ws.close_reason().ok_or("no close reason after the end")?;
    if !reason.is_clean() || reason.code() != CloseCode(4001) {
        return Err(format!("unclean close: {reason:?}"));
    }
    Ok(())
}

/// Which fragmented message to send.
#[derive(Clone, Copy, Debug)]
enum Fragments {
    /// "frag" + "men" + "ted 🦀" as text (three frames).
    Text,
    /// 0..=99 + empty + 100..=199 as binary (three frames, the middle one empty).
    Binary,
    /// Four 4 KiB text frames of a repetitive text: compressed as one message with deflate.
    Compressible,
}

/// Send one fragmented message over a fresh connection, check that it comes back whole, and
/// close. `WebSocket` cannot send frames, so the frames are queued on the engine right after
/// the handshake, before the connection is handed to a `WebSocket`.
async fn fragmented<R, F, S>(open_raw: &R, kind: Fragments) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Fn() -> F,
    F: Future<Output = (S, Connection)>,
{
    let (io, mut conn) = open_raw().await;
    let (frames, expected) = match kind {
        Fragments::Text => (
            vec![Frame::text("frag", false), Frame::continuation("men", false), Frame::continuation("ted 🦀", true)],
            Message::text("fragmented 🦀"),
        ),
        Fragments::Binary => {
            let all: Vec<u8> = (0..200u8).collect();
            (
                vec![
                    Frame::binary(all[..100].to_vec(), false),
                    Frame::continuation(Bytes::new(), false),
                    Frame::continuation(all[100..].to_vec(), true),
                ],
                Message::binary(all),
            )
        }
        Fragments::Compressible => {
            let part = "wsx fragmented and compressible; ".repeat(128);
            let parts: Vec<Frame> =
                (0..4)
                    .map(|i| {
                        if i == 0 {
                            Frame::text(part.clone(), false)
                        } else {
                            Frame::continuation(part.clone(), i == 3)
                        }
                    })
                    .collect();
            (parts, Message::text(part.repeat(4)))
        }
    };
    for frame in frames {
        conn.send_frame(frame).map_err(|e| format!("send_frame: {e}"))?;
    }
    let mut ws = WebSocket::from_connection(io, conn);
    ws.flush().await.map_err(|e| format!("flush the fragments: {e}"))?;
    let got = next_data(&mut ws).await?;
    if matches!(got, Message::Text(_)) != matches!(expected, Message::Text(_)) {
        return Err(format!("sent {:?} fragmented, got {}", kind, describe(&got)));
    }
    compare(&format!("{kind:?} fragments"), expected.as_payload(), got.as_payload())?;
    ws.close(CloseCode::NORMAL, "").await.map_err(|e| format!("close: {e}"))?;
    Ok(())
}

/// The client handshake driven on the engine by hand, leaving the connection open and the
/// engine ready for `send_frame`.
pub(crate) async fn open_raw<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    url: &str,
    config: &Config,
) -> (S, Connection) {
    let mut conn =
        Connection::client(config, &request(url), OsSeededRng::new(), Instant::now()).expect("client connection");
    loop {
        while conn.transmit().has_remaining() {
            let chunk = conn.transmit().chunk().to_vec();
            io.write_all(&chunk).await.expect("write the handshake");
            conn.transmit().advance(chunk.len());
        }
        io.flush().await.expect("flush the handshake");
        while let Some(event) = conn.next_event() {
            match event {
                Event::Opened(_) => return (io, conn),
                Event::Closed(reason) => panic!("handshake failed: {reason:?}"),
                _ => {}
            }
        }
        let n = io.read_buf(conn.read_buffer()).await.expect("read the handshake response");
        if n == 0 {
            conn.receive_eof(Instant::now());
        } else {
            conn.receive_buffered(Instant::now());
        }
    }
}

/// Connect over TCP to `127.0.0.1:port`.
pub(crate) async fn tcp(port: u16) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("TCP connect to the peer");
    tcp.set_nodelay(true).ok();
    tcp
}

/// Run the wsx client scenario against an echo server at `port`, over TLS (trusting only the
/// test CA) when `cert` is set, connecting with [`wsx::ClientBuilder`]. Returns the results
/// and whether permessage-deflate was negotiated.
pub(crate) async fn client_scenario(port: u16, cert: Option<&TestCert>, deflate: bool) -> (Results, bool) {
    let config = client_config(deflate);
    let url = format!("{}://127.0.0.1:{port}/", if cert.is_some() { "wss" } else { "ws" });
    let mut builder = wsx::ClientBuilder::new(&url).config(config.clone());
    if let Some(cert) = cert {
        builder = builder.root_certificates_pem(&cert.ca_pem);
    }
    let compressed = Arc::new(Mutex::new(None));
    let open_ws = || async {
        let (ws, _) = within("wsx::ClientBuilder::connect", STEP_TIMEOUT, builder.connect())
            .await
            .unwrap_or_else(|e| panic!("wsx client cannot connect to {url}: {e}"));
        compressed.lock().unwrap().get_or_insert(ws.is_compressed());
        ws
    };
    let results = match cert {
        None => run_scenario(open_ws, || async { open_raw(tcp(port).await, &url, &config).await }).await,
        Some(cert) => run_scenario(open_ws, || async { open_raw(cert.connect(port).await, &url, &config).await }).await,
    };
    let compressed = compressed.lock().unwrap().expect("connected at least once");
    (results, compressed)
}

/// The steps every peer client scenario (Node `ws`, Python `websockets`) reports.
pub(crate) const PEER_CLIENT_STEPS: &[&str] = &[
    "text",
    "binary",
    "empty_text",
    "empty_binary",
    "size_125",
    "size_126",
    "size_65535",
    "size_65536",
    "size_16mib",
    "utf8_text",
    "fragmented",
    "fragmented_binary",
    "ping",
    "close",
];

/// Check the echo server's view of a finished peer scenario: one connection, deflate as
/// expected, the peer's 4001 "bye" close received, a clean end.
pub(crate) fn assert_server_saw_scenario(logs: &[ConnLog], peer: &str, deflate: bool) {
    assert_eq!(logs.len(), 1, "{peer}: expected one connection, saw {logs:#?}");
    let log = &logs[0];
    assert_eq!(log.compressed, deflate, "{peer}: permessage-deflate negotiated on our side: {log:?}");
    assert!(log.error.is_none(), "{peer}: the echo connection failed: {log:?}");
    assert_eq!(
        log.peer_close,
        Some(Some(CloseFrame::new(CloseCode(4001), "bye"))),
        "{peer}: the close frame our server received"
    );
    let reason = log.close_reason.as_ref().expect("a close reason");
    assert!(reason.is_clean(), "{peer}: our server's close was not clean: {reason:?}");
    assert_eq!(reason.sent, Some(CloseFrame::new(CloseCode(4001), "bye")), "{peer}: the close frame our server echoed");
}
