//! Arbitrary sequences of operations on a client/server `Pair` whose bytes are shuttled
//! between them after every operation (a side's write shutdown reaches the other as EOF).
//!
//! Asserts: no panic; every command returns exactly the documented `Ok`/`Err` (local misuse is
//! an `Err`, never a panic); each side writes a valid frame stream; and, until raw bytes are
//! injected with `Receive`, each side receives exactly the messages (and, without keep-alive,
//! the pings) the other sent, in order, every close frame received is the one the peer sent,
//! and no side fails except by a timeout or EOF the operations caused. At the end (timeouts
//! and EOF) both sides are finished with one `Event::Closed`, with documented close codes.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsx_fuzz::{Expected, MAX_FRAME_SIZE, MAX_MESSAGE_SIZE, Pair, deflate_config, is_benign, small_config};
use wsx_proto::{Accept, CloseCode, Connection, Event, Frame, Message, OpCode, SendError};

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Setup {
    deflate: bool,
    no_context_takeover: bool,
    low_threshold: bool,
    keepalive: bool,
    idle_timeout: bool,
    client_auto_pong: bool,
    server_auto_pong: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Side {
    Client,
    Server,
}

impl Side {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Text(String),
    Binary(Vec<u8>),
    /// `kib` KiB (mod 200) plus `fill` bytes, all `fill`: over the deflate threshold and the
    /// copy threshold, under `max_frame_size`.
    Large {
        text: bool,
        kib: u8,
        fill: u8,
    },
}

impl Payload {
    fn message(self) -> Message {
        match self {
            Self::Text(s) => Message::Text(s.into()),
            Self::Binary(b) => Message::Binary(b.into()),
            Self::Large { text, kib, fill } => {
                let len = usize::from(kib % 200) * 1024 + usize::from(fill);
                if text {
                    Message::Text("abcdefghijklmnopqrstuvwxyz".repeat(len / 26 + 1)[..len].into())
                } else {
                    Message::Binary(vec![fill; len].into())
                }
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Receive { side: Side, bytes: Vec<u8> },
    Send { side: Side, payload: Payload, compress: Option<bool> },
    SendFrame { side: Side, fin: bool, opcode: u8, payload: Payload },
    Ping { side: Side, payload: Vec<u8>, via_send: bool },
    Pong { side: Side, payload: Vec<u8> },
    Close { side: Side, code: u16, reason: String, via_send: bool },
    Timeout { advance_ms: u16 },
    Eof { side: Side },
    Accept { side: Side },
}

/// The harness's view of what should happen.
#[derive(Default)]
struct Model {
    /// Raw bytes were injected: from then on only "no panic" and the local contracts hold.
    tainted: bool,
    /// Keep-alive pings are on, so pings are not tracked.
    keepalive: bool,
    /// What each side should receive next (messages, and pings unless `keepalive`).
    expect: [Expected<Message>; 2],
    /// The fragmented message each side is sending: whether it is text, and its bytes so far.
    sending: [Option<(bool, Vec<u8>)>; 2],
}

impl Model {
    fn taint(&mut self) {
        self.tainted = true;
        self.expect.iter_mut().for_each(Expected::clear);
    }

    fn on_event(&mut self, side: usize, event: &Event) {
        if self.tainted {
            return;
        }
        match event {
            Event::Message(message) => self.expect[side].check(message),
            Event::Ping(payload) if !self.keepalive => self.expect[side].check(&Message::Ping(payload.clone())),
            Event::Closed(reason) => {
                if let Some(error) = &reason.error {
                    assert!(is_benign(error), "side {side} failed untampered: {error:?}");
                }
            }
            _ => {}
        }
    }
}

fn opcode(bits: u8) -> OpCode {
    [OpCode::Continuation, OpCode::Text, OpCode::Binary, OpCode::Close, OpCode::Ping, OpCode::Pong]
        [usize::from(bits % 6)]
}

/// Apply one command and check its result against the documented contract.
fn apply(op: Op, pair: &mut Pair, model: &mut Model) {
    let now = pair.clock.now;
    match op {
        Op::Receive { side, bytes } => {
            model.taint();
            pair.side(side.index()).receive(&bytes, now);
        }
        Op::Send { side, payload, compress } => {
            let i = side.index();
            let message = payload.message();
            let conn = pair.side(i);
            let open = conn.is_open();
            let result = match compress {
                Some(c) => conn.send_compressed(message.clone(), c),
                None => conn.send(message.clone()),
            };
            match (open, model.sending[i].is_some()) {
                (true, false) => {
                    result.expect("send on an open connection");
                    model.expect[1 - i].push(message);
                }
                (true, true) => assert_eq!(result, Err(SendError::InvalidFragment)),
                (false, _) => assert_eq!(result, Err(SendError::Closed)),
            }
        }
        Op::SendFrame { side, fin, opcode: bits, payload } => {
            let i = side.index();
            let opcode = opcode(bits);
            let text = match (opcode, &model.sending[i]) {
                (OpCode::Continuation, Some((text, _))) => *text,
                (op, _) => op == OpCode::Text,
            };
            let payload = match payload.message() {
                Message::Text(t) => t.into_bytes(),
                // ASCII, so the length stays under `max_frame_size` (a lossy conversion could
                // triple it).
                Message::Binary(b) if text => b.iter().map(|c| c & 0x7F).collect::<Vec<u8>>().into(),
                Message::Binary(b) => b,
                _ => unreachable!(),
            };
            let conn = pair.side(i);
            let open = conn.is_open();
            let result = conn.send_frame(Frame { fin, opcode, payload: payload.clone() });
            let fits = matches!(
                (opcode, &model.sending[i]),
                (OpCode::Text | OpCode::Binary, None) | (OpCode::Continuation, Some(_))
            );
            if !open {
                assert_eq!(result, Err(SendError::Closed));
                return;
            }
            if !fits {
                assert_eq!(result, Err(SendError::InvalidFragment));
                return;
            }
            result.expect("a fitting frame on an open connection");
            assert!(payload.len() <= MAX_FRAME_SIZE, "the harness made a frame over the peer's limit");
            let (text, mut data) = model.sending[i].take().unwrap_or((text, Vec::new()));
            data.extend_from_slice(&payload);
            if data.len() > MAX_MESSAGE_SIZE {
                // The peer will rightly fail with 1009: not what this check is about.
                model.taint();
            }
            if !fin {
                model.sending[i] = Some((text, data));
            } else if !model.tainted {
                let message = if text {
                    Message::Text(String::from_utf8(data).expect("whole characters").into())
                } else {
                    Message::Binary(data.into())
                };
                model.expect[1 - i].push(message);
            }
        }
        Op::Ping { side, payload, via_send } => {
            let i = side.index();
            let conn = pair.side(i);
            let open = conn.is_open();
            let payload = Bytes::from(payload);
            let result = if via_send { conn.send(Message::Ping(payload.clone())) } else { conn.ping(payload.clone()) };
            check_control(open, payload.len(), result);
            if open && payload.len() <= 125 && !model.keepalive {
                model.expect[1 - i].push(Message::Ping(payload));
            }
        }
        Op::Pong { side, payload } => {
            let conn = pair.side(side.index());
            let open = conn.is_open();
            let len = payload.len();
            check_control(open, len, conn.pong(payload.into()));
        }
        Op::Close { side, code, reason, via_send } => {
            let conn = pair.side(side.index());
            let code = CloseCode(code);
            let valid = reason.len() <= 123
                && if code == CloseCode::NO_STATUS { reason.is_empty() } else { code.is_sendable() };
            let was_open = conn.is_open();
            let result = if via_send {
                let frame = (code != CloseCode::NO_STATUS).then(|| wsx_proto::CloseFrame::new(code, reason.as_str()));
                if code == CloseCode::NO_STATUS && !reason.is_empty() {
                    // Not expressible as a `Message::Close`.
                    return;
                }
                conn.send(Message::Close(frame))
            } else {
                conn.close(code, &reason, now)
            };
            assert_eq!(result.is_ok(), valid, "close({code:?}, {} bytes): {result:?}", reason.len());
            if valid && was_open {
                assert!(!conn.is_open());
                assert!(conn.close_reason().is_some_and(|r| r.sent.is_some()));
            }
        }
        Op::Timeout { advance_ms } => {
            pair.clock.advance(Duration::from_millis(u64::from(advance_ms)));
            let now = pair.clock.now;
            pair.client.handle_timeout(now);
            pair.server.handle_timeout(now);
        }
        Op::Eof { side } => pair.side(side.index()).receive_eof(now),
        Op::Accept { side } => {
            let conn = pair.side(side.index());
            assert_eq!(conn.accept(&Accept::new()), Err(SendError::InvalidState));
            let response = http::Response::builder().status(403).body(Bytes::new()).unwrap();
            assert_eq!(conn.reject(response), Err(SendError::InvalidState));
        }
    }
}

fn check_control(open: bool, len: usize, result: Result<(), SendError>) {
    match (open, len <= 125) {
        (true, true) => result.expect("a control frame on an open connection"),
        (false, _) => assert_eq!(result, Err(SendError::Closed)),
        (true, false) => assert_eq!(result, Err(SendError::ControlTooLong)),
    }
}

/// Untampered: a close frame a side received is the one the other sent.
fn check_closes(pair: &mut Pair, model: &Model) {
    if model.tainted {
        return;
    }
    let reasons = [pair.client.close_reason(), pair.server.close_reason()];
    for i in 0..2 {
        let (Some(mine), Some(theirs)) = (&reasons[i], &reasons[1 - i]) else { continue };
        if let Some(received) = &mine.received {
            assert_eq!(Some(received), theirs.sent.as_ref(), "side {i} received another close");
        }
        for reason in [mine, theirs] {
            if let Some(error) = &reason.error {
                assert!(is_benign(error), "failed untampered: {error:?}");
            }
        }
    }
}

fn side_config(setup: &Setup, auto_pong: bool) -> wsx_proto::Config {
    let mut config = small_config().auto_pong(auto_pong);
    if setup.deflate {
        let mut deflate = deflate_config(setup.no_context_takeover);
        if setup.low_threshold {
            deflate = deflate.threshold(0);
        }
        config = config.deflate(Some(deflate));
    }
    if setup.keepalive {
        config = config.ping_interval(Some(Duration::from_secs(5))).pong_timeout(Duration::from_secs(3));
    }
    if setup.idle_timeout {
        config = config.idle_timeout(Some(Duration::from_secs(30)));
    }
    config
}

fuzz_target!(|input: Input| {
    let Input { setup, ops } = input;
    let client = side_config(&setup, setup.client_auto_pong);
    let server = side_config(&setup, setup.server_auto_pong);
    let mut pair = Pair::new(&client, &server);
    assert_eq!(pair.client.is_compressed(), setup.deflate);
    let mut model = Model { keepalive: setup.keepalive, ..Model::default() };
    for op in ops.into_iter().take(256) {
        apply(op, &mut pair, &mut model);
        pair.drive(|side, _: &mut Connection, event| model.on_event(side, event));
        check_closes(&mut pair, &model);
    }
    // The end: every timer, then EOF both ways.
    for _ in 0..2 {
        pair.clock.advance(Duration::from_secs(3600));
        let now = pair.clock.now;
        pair.client.handle_timeout(now);
        pair.server.handle_timeout(now);
        pair.drive(|side, _: &mut Connection, event| model.on_event(side, event));
    }
    let now = pair.clock.now;
    pair.client.receive_eof(now);
    pair.server.receive_eof(now);
    pair.drive(|side, _: &mut Connection, event| model.on_event(side, event));
    check_closes(&mut pair, &model);
    for i in 0..2 {
        assert!(pair.side(i).is_finished(), "side {i} not finished");
        assert!(pair.events[i].closed.is_some(), "side {i} without Event::Closed");
        assert!(pair.side(i).deadline().is_none());
    }
    if !model.tainted {
        for (i, expect) in model.expect.iter().enumerate() {
            assert!(expect.is_empty(), "side {i} never received what was sent");
        }
    }
});
