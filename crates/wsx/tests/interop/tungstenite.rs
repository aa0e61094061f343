//! Interop with tokio-tungstenite, both directions, ws:// and wss://. tungstenite has no
//! permessage-deflate, so our server runs with deflate enabled (it must then not negotiate it)
//! and without.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    task::JoinHandle,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{
            CloseFrame,
            frame::{
                Frame, FrameHeader,
                coding::{CloseCode, Control, Data, OpCode},
            },
        },
    },
};

use crate::{
    STEP_TIMEOUT, TEST_TIMEOUT,
    certs::TestCert,
    echo_server::{EchoServer, Host, server_config},
    scenario::{
        LONG_REASON, PEER_CLIENT_STEPS, PING_PAYLOAD, Results, SCENARIO_STEPS, UTF8_TEXT, assert_server_saw_scenario,
        client_scenario, compare, random_bytes, tcp,
    },
    within,
};

fn describe(m: &Message) -> String {
    match m {
        Message::Text(t) if t.len() <= 64 => format!("Text({:?})", t.as_str()),
        Message::Text(t) => format!("Text({} bytes)", t.len()),
        Message::Binary(b) => format!("Binary({} bytes)", b.len()),
        other => format!("{other:?}"),
    }
}

/// The next text/binary message, skipping pongs.
async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Result<Message, String> {
    loop {
        match ws.next().await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Pong(_) | Message::Ping(_))) => {}
            Some(Ok(m)) => return Err(format!("expected a data message, got {}", describe(&m))),
            Some(Err(e)) => return Err(format!("read failed: {e}")),
            None => return Err("the connection ended".into()),
        }
    }
}

/// Send `message` (or `frames`) and check the echo: same type, same payload.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    frames: Vec<Message>,
    expected: Message,
) -> Result<(), String> {
    for frame in frames {
        ws.feed(frame).await.map_err(|e| format!("send: {e}"))?;
    }
    ws.flush().await.map_err(|e| format!("flush: {e}"))?;
    let got = next_data(ws).await?;
    if got.is_text() != expected.is_text() {
        return Err(format!("sent {}, got {}", describe(&expected), describe(&got)));
    }
    compare(&describe(&expected), &expected.into_data(), &got.into_data())
}

fn one(m: Message) -> (Vec<Message>, Message) {
    (vec![m.clone()], m)
}

/// A raw data frame; tungstenite masks it as a client.
fn frame(payload: impl Into<Bytes>, opcode: Data, fin: bool) -> Message {
    Message::Frame(Frame::message(payload.into(), OpCode::Data(opcode), fin))
}

/// The tungstenite client scenario against an echo server.
async fn tungstenite_scenario<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) -> Results {
    let mut r = Results::default();
    let bin: Vec<u8> = (0..=255u8).collect();
    let cases: Vec<(&'static str, (Vec<Message>, Message))> = vec![
        ("text", one(Message::text("hello wsx"))),
        ("binary", one(Message::binary(bin))),
        ("empty_text", one(Message::text(""))),
        ("empty_binary", one(Message::binary(Bytes::new()))),
        ("size_125", one(Message::binary(random_bytes(125, 1)))),
        ("size_126", one(Message::binary(random_bytes(126, 2)))),
        ("size_65535", one(Message::binary(random_bytes(65535, 3)))),
        ("size_65536", one(Message::binary(random_bytes(65536, 4)))),
        ("size_16mib", one(Message::binary(random_bytes(16 << 20, 5)))),
        ("utf8_text", one(Message::text(UTF8_TEXT))),
        (
            "fragmented",
            (
                vec![
                    frame("frag", Data::Text, false),
                    frame("ment", Data::Continue, false),
                    frame("ed ✓", Data::Continue, true),
                ],
                Message::text("fragmented ✓"),
            ),
        ),
        (
            "fragmented_binary",
            (
                vec![
                    frame(random_bytes(1000, 6), Data::Binary, false),
                    frame(Bytes::new(), Data::Continue, false),
                    frame(random_bytes(70000, 7), Data::Continue, true),
                ],
                Message::binary([random_bytes(1000, 6), random_bytes(70000, 7)].concat()),
            ),
        ),
    ];
    for (name, (frames, expected)) in cases {
        r.run(name, echo(&mut ws, frames, expected)).await;
    }
    r.run("ping", async {
        ws.send(Message::Ping(Bytes::from_static(PING_PAYLOAD))).await.map_err(|e| format!("send ping: {e}"))?;
        match ws.next().await {
            Some(Ok(Message::Pong(p))) if p == PING_PAYLOAD => Ok(()),
            other => Err(format!("expected a pong with {PING_PAYLOAD:?}, got {other:?}")),
        }
    })
    .await;
    r.run("close", async {
        let ours = CloseFrame { code: CloseCode::from(4001), reason: "bye".into() };
        ws.close(Some(ours.clone())).await.map_err(|e| format!("send close: {e}"))?;
        let answer = match ws.next().await {
            Some(Ok(Message::Close(frame))) => frame,
            other => return Err(format!("expected the server's close frame, got {other:?}")),
        };
        if answer.as_ref() != Some(&ours) {
            return Err(format!("the server answered {answer:?}, expected 4001 \"bye\""));
        }
        // The server then closes TCP: the stream ends.
        match ws.next().await {
            None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => Ok(()),
            other => Err(format!("after the close, got {other:?}")),
        }
    })
    .await;
    r
}

/// (a) The tungstenite client scenario against our echo server.
async fn tungstenite_client_to_wsx(server_deflate: bool, tls: bool) {
    tungstenite_client_to(Host::Native, server_deflate, tls).await;
}

/// (a) The tungstenite client scenario against our echo server on `host`.
pub(crate) async fn tungstenite_client_to(host: Host, server_deflate: bool, tls: bool) {
    let cert = tls.then(TestCert::generate);
    let server = EchoServer::start_on(host, server_config(server_deflate), cert.as_ref()).await;
    let url = server.url(tls);
    let results = match &cert {
        None => {
            let tcp = tcp(server.port()).await;
            let (ws, _) = within("tungstenite handshake", STEP_TIMEOUT, tokio_tungstenite::client_async(&url, tcp))
                .await
                .expect("tungstenite handshake with the wsx server");
            tungstenite_scenario(ws).await
        }
        Some(cert) => {
            let io = within("TLS connect", STEP_TIMEOUT, cert.connect(server.port())).await;
            let (ws, _) = within("tungstenite handshake", STEP_TIMEOUT, tokio_tungstenite::client_async(&url, io))
                .await
                .expect("tungstenite handshake with the wsx server over TLS");
            tungstenite_scenario(ws).await
        }
    };
    // The same steps the Node and Python client scenarios report.
    results.assert_all_ok("tungstenite client against the wsx server", PEER_CLIENT_STEPS);
    let logs = server.settle().await;
    assert_server_saw_scenario(&logs, "tungstenite client", false);
    assert_eq!(logs[0].echoed, 12, "messages our server echoed");
}

#[tokio::test]
async fn tungstenite_client_to_wsx_server() {
    within("tungstenite client → wsx server", TEST_TIMEOUT, tungstenite_client_to_wsx(false, false)).await;
}

#[tokio::test]
async fn tungstenite_client_to_wsx_server_deflate_enabled() {
    within("tungstenite client → wsx server (deflate enabled)", TEST_TIMEOUT, tungstenite_client_to_wsx(true, false))
        .await;
}

#[tokio::test]
async fn tungstenite_client_to_wsx_server_tls() {
    within("tungstenite client → wsx server over wss://", TEST_TIMEOUT, tungstenite_client_to_wsx(true, true)).await;
}

/// A raw masked close frame with `body` (tungstenite refuses to send invalid codes itself).
fn raw_close(body: Vec<u8>) -> Message {
    let header = FrameHeader { opcode: OpCode::Control(Control::Close), ..FrameHeader::default() };
    Message::Frame(Frame::from_payload(header, body.into()))
}

/// tungstenite sends a close `body`; our server must answer with `expected`.
async fn close_case(body: Vec<u8>, expected: u16) -> Result<(), String> {
    let server = EchoServer::start(server_config(false), None).await;
    let tcp = tcp(server.port()).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(server.url(false), tcp).await.map_err(|e| format!("handshake: {e}"))?;
    ws.send(raw_close(body)).await.map_err(|e| format!("send the raw close: {e}"))?;
    let answer = match ws.next().await {
        Some(Ok(Message::Close(frame))) => frame,
        other => return Err(format!("expected our server's close frame, got {other:?}")),
    };
    let code = answer.as_ref().map_or(1005, |f| u16::from(f.code));
    // Drive tungstenite on so that it writes its answer and sees the TCP close.
    // tokio-tungstenite ends its stream at the close frame: drop it to close TCP.
    drop(ws);
    let logs = server.settle().await;
    let sent = logs.first().and_then(|l| l.close_reason.as_ref()).and_then(|r| r.sent.clone());
    if code != expected || sent.as_ref().map(|f| f.code.0) != Some(expected) {
        return Err(format!("our server answered {answer:?} (its record: {sent:?}), expected {expected}"));
    }
    Ok(())
}

fn close_body(code: u16, reason: &str) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason.as_bytes()].concat()
}

#[tokio::test]
async fn tungstenite_close_codes_to_wsx_server() {
    within("tungstenite close codes", TEST_TIMEOUT, async {
        let cases: Vec<(String, Vec<u8>, u16)> = vec![
            ("4002 \"hi\"".into(), close_body(4002, "hi"), 4002),
            ("empty".into(), vec![], 1005),
            ("1005".into(), close_body(1005, ""), 1002),
            ("1006".into(), close_body(1006, ""), 1002),
            ("999".into(), close_body(999, ""), 1002),
            ("5000".into(), close_body(5000, ""), 1002),
            ("one byte".into(), vec![0x03], 1002),
            ("4000 + invalid UTF-8".into(), close_body(4000, "\u{0}").into_iter().chain([0xff, 0xfe]).collect(), 1007),
            ("4000 + 124-byte reason".into(), close_body(4000, LONG_REASON), 1002),
        ];
        let mut failures = Vec::new();
        for (name, body, expected) in cases {
            if let Err(e) = close_case(body, expected).await {
                failures.push(format!("close {name}: {e}"));
            }
        }
        assert!(failures.is_empty(), "{} close case(s) failed:\n  {}", failures.len(), failures.join("\n  "));
    })
    .await;
}

// (b) The wsx client scenario against a tungstenite echo server.

/// A tokio-tungstenite echo server on 127.0.0.1:0 (over TLS with `cert`), aborted on drop.
struct TungsteniteServer {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for TungsteniteServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo_loop<S: AsyncRead + AsyncWrite + Unpin>(io: S) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(io).await else { return };
    while let Some(Ok(m)) = ws.next().await {
        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
            break;
        }
    }
}

async fn tungstenite_server(cert: Option<&TestCert>) -> TungsteniteServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let acceptor = cert.map(|c| tokio_rustls::TlsAcceptor::from(c.server_config()));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).ok();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => echo_loop(tcp).await,
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            echo_loop(tls).await
                        }
                    }
                }
            });
        }
    });
    TungsteniteServer { port, task }
}

async fn wsx_client_to_tungstenite(deflate: bool, tls: bool) {
    let cert = tls.then(TestCert::generate);
    let server = tungstenite_server(cert.as_ref()).await;
    let (results, compressed) = client_scenario(server.port, cert.as_ref(), deflate).await;
    results.assert_all_ok("wsx client against the tungstenite echo server", SCENARIO_STEPS);
    assert!(!compressed, "tungstenite has no permessage-deflate, yet the wsx client says it was negotiated");
}

#[tokio::test]
async fn wsx_client_to_tungstenite_server() {
    within("wsx client → tungstenite server", TEST_TIMEOUT, wsx_client_to_tungstenite(false, false)).await;
}

#[tokio::test]
async fn wsx_client_offering_deflate_to_tungstenite_server() {
    within("wsx client (deflate offered) → tungstenite server", TEST_TIMEOUT, wsx_client_to_tungstenite(true, false))
        .await;
}

#[tokio::test]
async fn wsx_client_to_tungstenite_server_tls() {
    within("wsx client → tungstenite server over wss://", TEST_TIMEOUT, wsx_client_to_tungstenite(false, true)).await;
}
