//! The server-wide memory budget (issue 16): slow senders each send a large message in
//! fragments against a budget that covers a small part of them. The heap stays under the budget
//! plus the per-connection allowances, some senders are failed with 1013, and well-behaved
//! clients keep echoing meanwhile. Once on `wsx::Server`, once on `wsx::hyper::Server` with
//! senders and good clients over HTTP/1.1 and HTTP/2.
//!
//! Scaled down ten times from the figures to fit CI time (6 MiB messages for 60 MiB,
//! a 51.2 MiB budget for 512 MiB, a 6.4 MiB message limit for 64 MiB): the ratio of the
//! budget to what the senders ask for is the same, 100 × 6 MiB = 600 MiB against 51.2 MiB.
//! The hyper run is scaled down once more (30 senders against 16 MiB, about the same ratio).
//!
//! Heap bytes are counted by a global allocator over the whole process (the server and the
//! clients alike): nextest runs each test in a process of its own. The HTTP/1.1 slow senders
//! write one frame buffer shared by all of them, so they add nearly nothing of their own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};
use wsx::{ClientBuilder, Config, Frame, Message, Server, WebSocket};

#[path = "../examples/shared/echo.rs"]
mod shared;

#[global_allocator]
static ALLOCATOR: wsx_testkit::CountingAlloc = wsx_testkit::CountingAlloc;

const MIB: usize = 1 << 20;
const SENDERS: usize = 100;
/// Each sender's message: `FRAMES` fragments of `FRAME` bytes.
const FRAME: usize = 256 << 10;
const FRAMES: usize = 24;
const BUDGET: usize = 512 * MIB / 10;
const MAX_MESSAGE: usize = 64 * MIB / 10;
/// What each connection may hold without charging the budget (`shutdown::ALLOWANCE`).
const ALLOWANCE: usize = 128 << 10;
/// The clients, the runtime, the good clients' traffic, tasks and sockets.
const SLACK: usize = 16 * MIB;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked binary or continuation frame of `FRAME` zeros (mask key 0: the payload goes as is).
fn frame(opcode: u8, fin: bool) -> Bytes {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    out.extend_from_slice(&(FRAME as u64).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.resize(out.len() + FRAME, 0);
    out.into()
}

/// One slow sender over HTTP/1.1: its message a fragment every 20 ms, then the close code the
/// server sent, if any.
async fn slow_sender(port: u16, frames: Arc<[Bytes; 3]>) -> Option<u16> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    tcp.write_all(REQUEST).await.ok()?;
    // The response head, whatever its headers (hyper adds a date): up to the blank line.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && head.len() < 1024 {
        head.push(tcp.read_u8().await.ok()?);
    }
    for i in 0..FRAMES {
        let frame = match i {
            0 => &frames[0],
            i if i == FRAMES - 1 => &frames[2],
            _ => &frames[1],
        };
        if tcp.write_all(frame).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server's answer: an echo (the whole message got in) or a close frame.
    let mut first = [0; 4];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut first)).await.ok()?.ok()?;
    (first[0] == 0x88).then(|| u16::from_be_bytes([first[2], first[3]]))
}

/// One slow sender over HTTP/2 (an extended CONNECT stream of a connection of its own), with
/// wsx's client: the same message as [`slow_sender`], then how the connection ended: the close
/// code the server sent, 1006 if the stream ended without one, `None` for an echo.
///
/// 1006: a server WebSocket failed over HTTP/2 ends its stream soon after its close frame, and
/// when the client is still sending (busy on a loaded machine) the stream is reset before the
/// client has read the close (found by this test; see the report of branch budget3).
async fn slow_sender_h2(port: u16) -> Option<u16> {
    let builder = ClientBuilder::new(format!("ws://127.0.0.1:{port}/"));
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(20), builder.connect_http2()).await.ok()?.ok()?;
    let payload = Bytes::from(vec![0; FRAME]);
    for i in 0..FRAMES {
        let frame = match i {
            0 => Frame::binary(payload.clone(), false),
            i => Frame::continuation(payload.clone(), i == FRAMES - 1),
        };
        match tokio::time::timeout(Duration::from_secs(10), ws.send_frame(frame)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server's answer: an echo, or a close (`recv` answers it and ends).
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.recv().await {
                Ok(Some(message)) if message.is_data() => return false,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return true,
            }
        }
    });
    let closed = answer.await.ok()?;
    closed.then(|| ws.close_reason().map(|reason| reason.code().0)).flatten()
}

/// A well-behaved client: echoes small messages every 10 ms until `stop`, each echo counted.
fn good_client<S>(
    good: &mut JoinSet<()>,
    mut ws: WebSocket<S>,
    c: usize,
    stop: &Arc<AtomicBool>,
    echoed: &Arc<AtomicUsize>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stop, echoed) = (stop.clone(), echoed.clone());
    good.spawn(async move {
        for i in 0..100_000u32 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let text = format!("client {c} message {i}");
            ws.send(text.as_str()).await.expect("a good client can send");
            // Generous: a debug build on 2 cores can take seconds per echo while 100 senders flood it;
            // `during > 0` below is what says the good clients were not shut out.
            let echo = tokio::time::timeout(Duration::from_secs(40), ws.recv()).await.expect("an echo in time");
            match echo.expect("a good client keeps its connection") {
                Some(Message::Text(t)) => assert_eq!(t.as_str(), text),
                other => panic!("unexpected {other:?}"),
            }
            echoed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// What a flood did: the peak heap over the baseline, each sender's label and close code, and
/// the good clients' echoes while the senders ran.
struct Flood {
    peak: usize,
    codes: Vec<(&'static str, Option<u16>)>,
    during: usize,
}

impl Flood {
    /// The senders labelled `label` that ended with `code`.
    fn ended(&self, label: &str, code: u16) -> usize {
        self.codes.iter().filter(|(l, c)| *l == label && *c == Some(code)).count()
    }
}

/// Let the good clients (already spawned into `good`) echo a while, take the heap baseline,
/// start the senders with `spawn`, follow the heap until they finish, then stop the good
/// clients.
async fn flood<F>(mut good: JoinSet<()>, stop: Arc<AtomicBool>, echoed: Arc<AtomicUsize>, spawn: F) -> Flood
where
    F: FnOnce(&mut JoinSet<(&'static str, Option<u16>)>),
{
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = wsx_testkit::process().held;
    let before = echoed.load(Ordering::Relaxed);
    let mut senders = JoinSet::new();
    spawn(&mut senders);
    let mut peak = 0;
    let codes = tokio::time::timeout(Duration::from_secs(45), async {
        let mut codes = Vec::new();
        loop {
            tokio::select! {
                joined = senders.join_next() => match joined {
                    Some(code) => codes.push(code.unwrap()),
                    None => break codes,
                },
                () = tokio::time::sleep(Duration::from_millis(5)) => {
                    peak = peak.max(wsx_testkit::process().held.saturating_sub(baseline));
                }
            }
        }
    })
    .await
    .expect("the senders finish within 45 s");
    let peak = peak.max(wsx_testkit::process().peak.saturating_sub(baseline));
    let during = echoed.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = good.join_next().await {
        joined.expect("a good client kept echoing");
    }
    Flood { peak, codes, during }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_held_to_the_budget_while_others_keep_echoing() {
    let config = Config::default().max_message_size(MAX_MESSAGE);
    let server = Server::builder().config(config).memory_budget(Some(BUDGET)).bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(server.serve(|ws, _| shared::echo(ws)));
    let frames = Arc::new([frame(2, false), frame(0, false), frame(0, true)]);

    // Good clients connect first, then echo throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicUsize::new(0));
    let mut good = JoinSet::new();
    for c in 0..4 {
        let (ws, _) = ClientBuilder::new(format!("ws://127.0.0.1:{port}/")).connect().await.unwrap();
        good_client(&mut good, ws, c, &stop, &echoed);
    }
    let Flood { peak, codes, during } = flood(good, stop, echoed, |senders| {
        for _ in 0..SENDERS {
            let frames = frames.clone();
            senders.spawn(async move { ("h1", slow_sender(port, frames).await) });
        }
    })
    .await;
    let again = codes.iter().filter(|(_, c)| *c == Some(1013)).count();
    // A connection is charged before each read for what it holds then; the read and the frame
    // it completes can add up to a frame (and a doubling of the message buffer) before the next
    // charge, on every connection growing at that moment.
    let bound = BUDGET + SENDERS * (ALLOWANCE + FRAME) + SLACK;
    eprintln!(
        "peak heap over the baseline {} MiB (bound {} MiB, budget {} MiB, asked for {} MiB); \
         {again} of {SENDERS} senders got 1013, {} another outcome; {during} echoes meanwhile",
        peak / MIB,
        bound / MIB,
        BUDGET / MIB,
        SENDERS * FRAME * FRAMES / MIB,
        SENDERS - again
    );
    assert!(peak <= bound, "peak {peak} over the bound {bound}");
    assert!(again > 0, "no sender got 1013: {codes:?}");
    assert!(during > 0, "the good clients echoed nothing while the senders ran");
}

/// The hyper run's senders over HTTP/1.1 and over HTTP/2, and its budget.
const H1_SENDERS: usize = 20;
const H2_SENDERS: usize = 10;
const HYPER_BUDGET: usize = 16 * MIB;
/// What an HTTP/2 sender adds that the budget does not cover: the server's receive window of
/// its connection (hyper's default, 1 MiB), the client's send buffer (hyper's client default,
/// 1 MiB) and the masked copy of the frame being sent.
const H2_EXTRA: usize = 2 * MIB + FRAME;

/// An echo service for `wsx::hyper::Server`: upgrades any request (HTTP/1.1 or HTTP/2) with
/// `config` and echoes.
async fn hyper_echo(
    mut request: http::Request<hyper::body::Incoming>,
    config: Arc<Config>,
) -> Result<http::Response<Empty<Bytes>>, std::convert::Infallible> {
    match wsx::hyper::upgrade(&mut request, &config) {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                if let Ok(ws) = upgrade.await {
                    let _ = shared::echo(ws).await;
                }
            });
            Ok(response)
        }
        Err(reject) => Ok(reject.into_response().map(|_| Empty::new())),
    }
}

/// The same flood on `wsx::hyper::Server` (the server of `wsx serve --tls`, and of any hyper or
/// axum app hosting wsx): senders and good clients over HTTP/1.1 and HTTP/2 (cleartext, prior
/// knowledge) against one budget. Senders over both versions get 1013.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_server_holds_http1_and_http2_websockets_to_the_budget() {
    let config = Arc::new(Config::default().max_message_size(MAX_MESSAGE));
    let server = wsx::hyper::Server::builder().memory_budget(Some(HYPER_BUDGET)).bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let service = hyper::service::service_fn(move |request| hyper_echo(request, config.clone()));
    tokio::spawn(server.serve(service));
    let frames = Arc::new([frame(2, false), frame(0, false), frame(0, true)]);

    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicUsize::new(0));
    let mut good = JoinSet::new();
    for c in 0..2 {
        let builder = ClientBuilder::new(format!("ws://127.0.0.1:{port}/"));
        let (ws, _) = builder.connect().await.unwrap();
        good_client(&mut good, ws, c, &stop, &echoed);
        let (ws, _) = builder.connect_http2().await.unwrap();
        good_client(&mut good, ws, c + 2, &stop, &echoed);
    }
    let flood = flood(good, stop, echoed, |senders| {
        for i in 0..H1_SENDERS + H2_SENDERS {
            let frames = frames.clone();
            senders.spawn(async move {
                if i % 3 == 2 { ("h2", slow_sender_h2(port).await) } else { ("h1", slow_sender(port, frames).await) }
            });
        }
    })
    .await;
    let (h1, h2) = (flood.ended("h1", 1013), flood.ended("h2", 1013));
    let h2_reset = flood.ended("h2", 1006);
    let bound = HYPER_BUDGET + H1_SENDERS * (ALLOWANCE + FRAME) + H2_SENDERS * (ALLOWANCE + FRAME + H2_EXTRA) + SLACK;
    eprintln!(
        "peak heap over the baseline {} MiB (bound {} MiB, budget {} MiB, asked for {} MiB); 1013 for \
         {h1} of {H1_SENDERS} HTTP/1.1 and {h2} of {H2_SENDERS} HTTP/2 senders ({h2_reset} more cut off \
         without the close); {} echoes meanwhile",
        flood.peak / MIB,
        bound / MIB,
        HYPER_BUDGET / MIB,
        (H1_SENDERS + H2_SENDERS) * FRAME * FRAMES / MIB,
        flood.during
    );
    assert!(flood.peak <= bound, "peak {} over the bound {bound}", flood.peak);
    assert!(h1 > 0, "no HTTP/1.1 sender got 1013: {:?}", flood.codes);
    // Cut off before its message got in, with or without the 1013 reaching it: the budget
    // stopped it (nothing else ends a sender's stream here; without the budget all are echoed).
    // Still lenient, though a dropped HTTP/2 `wsx::hyper::Io` now lingers (H2_LINGER, 2 s) for
    // the client to end its stream: with `h2_reset == 0` required, 3 of 11 runs failed (2, 3
    // and 7 of 10 senders got 1013, the rest 1006; those runs took 13-14 s on a machine busy
    // with a soak, against 1-3 s for the passing ones). The sender reads only after its last
    // frame, and the server, after failing it, reads on for the close timeout (10 s here) before
    // it drops the stream and lingers: a sender slowed down past both sees its stream reset.
    // The close timeout is also why this test does not exercise the linger: with the linger
    // disabled 4 of 4 runs still had no reset; with the server's close timeout at 100 ms, 3 of 3
    // runs had no reset with the linger and 8-10 of 10 resets without it.
    assert!(h2 + h2_reset > 0, "no HTTP/2 sender was stopped by the budget: {:?}", flood.codes);
    assert!(flood.during > 0, "the good clients echoed nothing while the senders ran");
}
