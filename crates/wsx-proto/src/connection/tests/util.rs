//! The test harness: frame builders, a connection driven as the crate documentation says, a
//! client and a server core connected by buffers on a fake clock, and assertions on what was
//! sent.

use std::{
    collections::VecDeque,
    ops::{Deref, DerefMut},
    time::{Duration, Instant},
};

use bytes::Buf;

use crate::{Accept, CloseCode, Config, Connection, Event, Message, OpCode, frame::Header, mask::apply_mask};

pub(super) const REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The length of the server's 101 answer to [`REQUEST`].
pub(super) const RESPONSE_LEN: usize = 129;

/// A frame as a peer would send it; `opcode` may be a reserved value.
pub(super) fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        fin,
        rsv,
        opcode: OpCode::from_bits(opcode).unwrap_or(OpCode::Binary),
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0; 14];
    let n = header.encode(&mut head);
    let mut out = head[..n].to_vec();
    out[0] = (out[0] & 0xF0) | opcode;
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A masked frame from a client.
pub(super) fn cframe(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, Some([1, 2, 3, 4]), payload)
}

/// A decoded frame: (fin, rsv, opcode, unmasked payload).
pub(super) type Sent = (bool, u8, OpCode, Vec<u8>);

/// Decode every frame in `bytes`, unmasking; panics on a partial frame at the end.
pub(super) fn frames(mut bytes: &[u8]) -> Vec<Sent> {
    let mut out = Vec::new();
    while let Some((h, n)) = Header::decode(bytes).unwrap() {
        let len = h.payload_len as usize;
        let mut payload = bytes[n..n + len].to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut payload, key, 0);
        }
        out.push((h.fin, h.rsv, h.opcode, payload));
        bytes = &bytes[n + len..];
    }
    assert!(bytes.is_empty(), "trailing partial frame");
    out
}

/// Take everything a connection wants to write.
pub(super) fn drain(conn: &mut Connection) -> Vec<u8> {
    let mut out = conn.transmit();
    out.copy_to_bytes(out.remaining()).to_vec()
}

/// Assert that exactly these whole, uncompressed frames were queued to send, and take them.
pub(super) fn assert_sent(conn: &mut Connection, want: &[(OpCode, &[u8])]) {
    let sent = frames(&drain(conn));
    let want: Vec<Sent> = want.iter().map(|(op, p)| (true, 0, *op, p.to_vec())).collect();
    assert_eq!(sent, want);
}

/// A connection driven as the crate documentation says: after every input, its events are
/// taken (which parses what arrived, and may queue pongs and closes) before anything else is
/// looked at. The events wait here for the test to read them.
pub(super) struct Side {
    pub(super) conn: Connection,
    taken: VecDeque<Event>,
}

impl Side {
    pub(super) fn new(conn: Connection) -> Self {
        Self { conn, taken: VecDeque::new() }
    }

    /// Feed bytes, then take events.
    pub(super) fn receive(&mut self, bytes: &[u8], now: Instant) {
        self.conn.receive(bytes, now);
        self.settle();
    }

    /// The peer's EOF, then take events.
    pub(super) fn receive_eof(&mut self, now: Instant) {
        self.conn.receive_eof(now);
        self.settle();
    }

    /// Run due timers, then take events.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.settle();
    }

    /// Take every event the connection has.
    pub(super) fn settle(&mut self) {
        while let Some(event) = self.conn.next_event() {
            self.taken.push_back(event);
        }
    }

    pub(super) fn next_event(&mut self) -> Option<Event> {
        self.settle();
        self.taken.pop_front()
    }
}

impl Deref for Side {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Side {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Every event a driven connection has taken.
pub(super) fn events(side: &mut Side) -> Vec<Event> {
    std::iter::from_fn(|| side.next_event()).collect()
}

/// The message in an event.
pub(super) fn message(event: &Event) -> &Message {
    match event {
        Event::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// An open server connection with the handshake response taken.
pub(super) fn open_server(config: Config) -> (Side, Instant) {
    let now = Instant::now();
    let mut server = Side::new(Connection::server(&config, now).unwrap());
    server.receive(REQUEST, now);
    let Some(Event::Request(req)) = server.next_event() else { panic!("no request") };
    assert_eq!(req.path(), "/chat");
    server.accept(&Accept::new()).unwrap();
    let response = drain(&mut server);
    assert!(response.starts_with(b"HTTP/1.1 101"));
    assert_eq!(response.len(), RESPONSE_LEN);
    (server, now)
}

/// Assert that the connection failed with `code`: a close frame with it was sent, the TCP
/// connection is to be closed, and the failure is reported.
pub(super) fn assert_failing(side: &mut Side, code: CloseCode) {
    side.settle();
    let sent = frames(&drain(side));
    let close = sent.iter().find(|f| f.2 == OpCode::Close).expect("a close frame was sent");
    assert_eq!(u16::from_be_bytes([close.3[0], close.3[1]]), code.0, "close code sent");
    assert!(side.wants_shutdown(), "fails by closing the connection");
    let reason = side.close_reason().expect("close reason");
    assert_eq!(reason.error.as_ref().map(|e| e.close_code()), Some(code), "{reason}");
}

/// Deterministic masks for the client.
pub(super) fn counter_rng() -> impl FnMut(&mut [u8]) + Send + 'static {
    let mut n = 0u8;
    move |dest: &mut [u8]| {
        for b in dest {
            n = n.wrapping_add(37);
            *b = n;
        }
    }
}

/// A client and a server core connected by buffers, on a fake clock.
pub(super) struct Pair {
    pub(super) client: Side,
    pub(super) server: Side,
    pub(super) now: Instant,
}

impl Pair {
    /// An open pair: the handshake done and its events taken.
    pub(super) fn new(client: Config, server: Config) -> Self {
        let now = Instant::now();
        let request = http::Request::get("ws://example.com/chat").body(()).unwrap();
        let client = Side::new(Connection::client(&client, &request, counter_rng(), now).unwrap());
        let server = Side::new(Connection::server(&server, now).unwrap());
        let mut pair = Self { client, server, now };
        pair.drive();
        let Some(Event::Request(_)) = pair.server.next_event() else { panic!("no request") };
        pair.server.accept(&Accept::new()).unwrap();
        pair.drive();
        let Some(Event::Opened(_)) = pair.client.next_event() else { panic!("not opened") };
        pair
    }

    /// Shuttle bytes both ways until neither side has anything to write. (A half-close is not
    /// passed on: tests that want the peer's EOF give it.)
    pub(super) fn drive(&mut self) {
        loop {
            let c = drain(&mut self.client);
            let s = drain(&mut self.server);
            if !c.is_empty() {
                self.server.receive(&c, self.now);
            }
            if !s.is_empty() {
                self.client.receive(&s, self.now);
            }
            if c.is_empty() && s.is_empty() {
                break;
            }
        }
    }

    /// Move the fake clock to the next deadline of either side, run both sides' timers, and
    /// drive. Returns the time moved to, or `None` if neither side has a deadline.
    pub(super) fn advance(&mut self) -> Option<Instant> {
        let next = [self.client.deadline(), self.server.deadline()].into_iter().flatten().min()?;
        self.now = self.now.max(next);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.drive();
        Some(self.now)
    }

    /// Advance the clock deadline by deadline up to `by` from now, driving at each.
    pub(super) fn advance_by(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(next) = [self.client.deadline(), self.server.deadline()].into_iter().flatten().min() {
            if next > end {
                break;
            }
            self.advance();
        }
        self.now = end;
    }

    pub(super) fn server_events(&mut self) -> Vec<Event> {
        events(&mut self.server)
    }

    pub(super) fn client_events(&mut self) -> Vec<Event> {
        events(&mut self.client)
    }
}
