//! The server-wide memory budget (issue 16): 100 slow senders each send a large message in
//! fragments against a budget that covers a small part of them. The heap stays under the budget
//! plus the per-connection allowances, some senders are failed with 1013, and well-behaved
//! clients keep echoing meanwhile.
//!
//! Scaled down ten times from the figures to fit CI time (6 MiB messages for 60 MiB,
//! a 51.2 MiB budget for 512 MiB, a 6.4 MiB message limit for 64 MiB): the ratio of the
//! budget to what the senders ask for is the same, 100 × 6 MiB = 600 MiB against 51.2 MiB.
//!
//! Heap bytes are counted by a global allocator over the whole process (the server and the
//! clients alike): nextest runs this test in a process of its own. The slow senders write one
//! frame buffer shared by all of them, so they add nearly nothing of their own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};
use wsx::{ClientBuilder, Config, Message, Server};

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

/// One slow sender: its message a fragment every 20 ms, then the close code the server sent,
/// if any.
async fn slow_sender(port: u16, frames: Arc<[Bytes; 3]>) -> Option<u16> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    tcp.write_all(REQUEST).await.ok()?;
    let mut head = vec![0; 129];
    tcp.read_exact(&mut head).await.ok()?;
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
        let (mut ws, _) = ClientBuilder::new(format!("ws://127.0.0.1:{port}/")).connect().await.unwrap();
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = wsx_testkit::process().held;
    let before = echoed.load(Ordering::Relaxed);

    let mut senders = JoinSet::new();
    for _ in 0..SENDERS {
        senders.spawn(slow_sender(port, frames.clone()));
    }
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
    let again = codes.iter().filter(|c| **c == Some(1013)).count();
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
