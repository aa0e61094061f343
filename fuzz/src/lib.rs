//! Shared pieces of the `wsx-proto` fuzz targets: the stepped input format, a fake clock, a
//! fixed RNG, output and event draining with their invariants, and a client/server [`Pair`].
//!
//! Everything here uses the public API of `wsx-proto` only.

use std::{
    collections::VecDeque,
    io::IoSlice,
    time::{Duration, Instant},
};

use bytes::Buf;
use wsx_proto::{Accept, CloseCode, CloseReason, Config, Connection, DeflateConfig, Event, MaskRng, ProtocolError};

/// The limits the connection targets run with: small, so that a memory bug shows up well
/// under libFuzzer's `-rss_limit_mb`.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;
/// See [`MAX_MESSAGE_SIZE`].
pub const MAX_FRAME_SIZE: usize = 256 << 10;
/// `transmit` must never hold more than this after one input (and its replies).
pub const TRANSMIT_BOUND: usize = MAX_FRAME_SIZE + (1 << 20);

/// A config with the fuzzing limits.
pub fn small_config() -> Config {
    Config::default().max_message_size(MAX_MESSAGE_SIZE).max_frame_size(MAX_FRAME_SIZE)
}

/// The client's RNG: a fixed sequence, so a run is a pure function of its input (the handshake
/// key, and therefore the accept digest, is the same in every run).
pub fn fixed_rng() -> impl MaskRng {
    let mut n: u8 = 0;
    move |dest: &mut [u8]| {
        for b in dest {
            *b = n;
            n = n.wrapping_mul(31).wrapping_add(7);
        }
    }
}

/// The URI every fuzzed client connects to.
pub const CLIENT_URI: &str = "ws://example.com/chat";

/// A valid upgrade request head, with `extra` header lines (each ending in CRLF) added.
pub fn request(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// permessage-deflate offers `server_conn` picks from (two flag bits).
pub const DEFLATE_OFFERS: [&str; 4] = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9, permessage-deflate",
];

/// What to do after feeding one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Advance the clock by this much and call `handle_timeout`.
    Tick(Duration),
    /// Call `receive_eof`.
    Eof,
}

/// One step of a stepped input: feed `len` bytes, then do `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How many bytes to feed (fewer if the data runs out).
    pub len: usize,
    /// What to do after.
    pub action: Action,
}

impl Step {
    /// Decode a step byte: the low 6 bits give the chunk length, the top 2 the action.
    pub fn from_byte(b: u8) -> Self {
        let v = usize::from(b & 0x3F);
        let len = if v < 32 { v + 1 } else { 64 << ((v - 32) / 2) };
        let action = match b >> 6 {
            0 => Action::None,
            1 => Action::Tick(Duration::from_secs(1)),
            2 => Action::Tick(Duration::from_secs(7)),
            _ => Action::Eof,
        };
        Self { len, action }
    }

    /// The step byte that feeds the rest of the data at once (2 MiB) and does nothing else.
    pub const WHOLE: u8 = 0x3F;
}

/// A stepped input: `[flags, n, step bytes (n % 16 of them), data...]`.
///
/// The data is fed in chunks whose lengths, and the actions between them, cycle through the
/// steps; with no steps it is fed in one piece. Keeping the protocol bytes raw at the end
/// keeps them easy for the fuzzer to mutate and for `examples/seeds.rs` to write.
#[derive(Debug, Clone, Copy)]
pub struct Stepped<'a> {
    /// Target-specific configuration bits.
    pub flags: u8,
    steps: &'a [u8],
    /// The bytes to feed.
    pub data: &'a [u8],
}

impl<'a> Stepped<'a> {
    /// Split an input into flags, steps and data.
    pub fn parse(input: &'a [u8]) -> Self {
        let flags = input.first().copied().unwrap_or(0);
        let rest = input.get(1..).unwrap_or(&[]);
        let n = rest.first().map_or(0, |n| usize::from(n % 16)).min(rest.len().saturating_sub(1));
        let rest = rest.get(1..).unwrap_or(&[]);
        Self { flags, steps: &rest[..n], data: &rest[n..] }
    }

    /// Build an input (for seeds).
    pub fn encode(flags: u8, steps: &[u8], data: &[u8]) -> Vec<u8> {
        assert!(steps.len() < 16);
        let mut out = vec![flags, steps.len() as u8];
        out.extend_from_slice(steps);
        out.extend_from_slice(data);
        out
    }

    /// The chunks and what to do after each.
    pub fn chunks(&self) -> impl Iterator<Item = (&'a [u8], Action)> + 'a {
        let steps = self.steps;
        let mut data = self.data;
        let mut i = 0;
        std::iter::from_fn(move || {
            if data.is_empty() {
                return None;
            }
            let step = match steps {
                [] => Step { len: data.len(), action: Action::None },
                _ => Step::from_byte(steps[i % steps.len()]),
            };
            i += 1;
            let (chunk, rest) = data.split_at(step.len.min(data.len()));
            data = rest;
            Some((chunk, step.action))
        })
    }

    /// Whether the flag bit `bit` is set.
    pub fn flag(&self, bit: u8) -> bool {
        self.flags & (1 << bit) != 0
    }
}

/// Drain `transmit` as an I/O layer would (vectored, in pieces), checking the `Buf`
/// contract, and return the bytes.
pub fn drain(conn: &mut Connection) -> Vec<u8> {
    let buffered = conn.buffered_amount();
    let mut out = conn.transmit();
    let total = out.remaining();
    assert_eq!(buffered, total, "buffered_amount disagrees with transmit().remaining()");
    assert!(total < TRANSMIT_BOUND, "transmit holds {total} bytes");
    let mut bytes = Vec::with_capacity(total);
    while out.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 3];
        let n = out.chunks_vectored(&mut slices);
        assert!(n > 0, "chunks_vectored gave nothing with {} bytes left", out.remaining());
        assert_eq!(out.chunk(), &slices[0][..], "chunk() is not the first vectored chunk");
        // Write "part" of what was offered, as a short write would.
        let mut written = 0;
        for s in &slices[..n] {
            assert!(!s.is_empty(), "empty vectored chunk");
            bytes.extend_from_slice(s);
            written += s.len();
        }
        assert!(written <= out.remaining());
        out.advance(written);
    }
    assert_eq!(bytes.len(), total);
    assert_eq!(conn.buffered_amount(), 0);
    bytes
}

/// Whether `code` is one a failure may be reported with (the documented set of
/// `ProtocolError::close_code`).
pub fn is_documented_failure_code(code: CloseCode) -> bool {
    matches!(code.0, 1000..=1003 | 1006 | 1007 | 1009 | 1011)
}

/// Check a final close reason: a failure carries a documented code, and a sent close frame a
/// sendable one.
pub fn check_reason(reason: &CloseReason) {
    if let Some(error) = &reason.error {
        let code = error.close_code();
        assert!(is_documented_failure_code(code), "{error:?} reports undocumented code {code:?}");
    }
    if let Some(sent) = &reason.sent {
        assert!(
            sent.code == CloseCode::NO_STATUS || sent.code.is_sendable(),
            "sent a close frame with code {:?}",
            sent.code
        );
        assert!(sent.reason.len() <= 123, "sent a close reason of {} bytes", sent.reason.len());
    }
    if let Some(received) = &reason.received {
        assert!(received.code == CloseCode::NO_STATUS || received.code.is_sendable());
    }
}

/// Tracks the events of one connection: nothing after `Closed`, `Closed` exactly once.
#[derive(Debug, Default)]
pub struct Events {
    /// The `Closed` event's reason, once it came.
    pub closed: Option<CloseReason>,
}

impl Events {
    /// Take every event, passing each to `f` (which may send on `conn`). Checks that nothing
    /// follows `Closed`.
    pub fn drain(&mut self, conn: &mut Connection, mut f: impl FnMut(&mut Connection, &Event)) {
        // Bounded: a misbehaving connection that produced events forever would otherwise hang
        // the fuzzer instead of failing it.
        for _ in 0..1_000_000 {
            let Some(event) = conn.next_event() else { return };
            assert!(self.closed.is_none(), "event after Closed: {event:?}");
            if let Event::Closed(reason) = &event {
                assert!(conn.is_finished(), "Closed but not finished");
                check_reason(reason);
                self.closed = Some((**reason).clone());
            }
            f(conn, &event);
        }
        panic!("a million events from one input");
    }

    /// End the run: time out every deadline, feed EOF, and check the connection finished with
    /// exactly one `Closed`. Returns the bytes written meanwhile.
    pub fn finish(&mut self, conn: &mut Connection, clock: &mut Clock) -> Vec<u8> {
        let mut written = drain(conn);
        self.drain(conn, |_, _| {});
        // Past every timer the targets configure (close, handshake, pong, idle); twice, as a
        // timeout may start the closing handshake and so arm the close timer.
        for _ in 0..2 {
            clock.advance(Duration::from_secs(3600));
            conn.handle_timeout(clock.now);
            written.extend(drain(conn));
            self.drain(conn, |_, _| {});
        }
        conn.receive_eof(clock.now);
        written.extend(drain(conn));
        self.drain(conn, |_, _| {});
        clock.advance(Duration::from_secs(3600));
        conn.handle_timeout(clock.now);
        written.extend(drain(conn));
        self.drain(conn, |_, _| {});
        assert!(conn.is_finished(), "not finished after EOF");
        assert!(self.closed.is_some(), "finished without Event::Closed");
        assert!(conn.next_event().is_none());
        assert!(conn.deadline().is_none(), "a deadline after the end: {:?}", conn.deadline());
        assert!(!conn.can_receive() && !conn.is_open());
        written
    }
}

/// A fake clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The current time.
    pub now: Instant,
}

impl Clock {
    /// Start at the real now (only differences matter).
    pub fn new() -> Self {
        Self { now: Instant::now() }
    }

    /// Move forward.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Errors an untampered connection may still end with: timeouts and EOFs the operations
/// caused, never a protocol fault.
pub fn is_benign(error: &ProtocolError) -> bool {
    matches!(
        error,
        ProtocolError::UnexpectedEof
            | ProtocolError::CloseTimeout
            | ProtocolError::PongTimeout
            | ProtocolError::IdleTimeout
            | ProtocolError::Handshake(_)
    )
}

/// The default deflate settings, or ones with no context takeover either way.
pub fn deflate_config(no_context_takeover: bool) -> DeflateConfig {
    let config = DeflateConfig::default();
    if no_context_takeover { config.server_no_context_takeover(true).client_no_context_takeover(true) } else { config }
}

/// A client and a server connection wired back to back, with a fake clock: bytes one writes
/// are delivered to the other, and a side's write shutdown reaches the other as EOF.
pub struct Pair {
    /// The client (index 0 in [`Pair::side`]).
    pub client: Connection,
    /// The server (index 1).
    pub server: Connection,
    /// The clock both share.
    pub clock: Clock,
    /// Whether each side's EOF has been delivered to the other (by side index).
    pub eof_sent: [bool; 2],
    /// Each side's event log.
    pub events: [Events; 2],
    /// Checks of what each side writes after the handshake.
    pub wire: [WireCheck; 2],
}

impl Pair {
    /// Connect and complete the handshake.
    pub fn new(client: &Config, server: &Config) -> Self {
        let clock = Clock::new();
        let request = http::Request::get(CLIENT_URI).body(()).expect("a valid request");
        let client = Connection::client(client, &request, fixed_rng(), clock.now).expect("client");
        let server = Connection::server(server, clock.now).expect("server");
        let wire = [WireCheck::new(true, false), WireCheck::new(false, false)];
        let mut pair = Self { client, server, clock, eof_sent: [false; 2], events: Default::default(), wire };
        let c = drain(&mut pair.client);
        pair.server.receive(&c, pair.clock.now);
        let Some(Event::Request(_)) = pair.server.next_event() else { panic!("no request") };
        pair.server.accept(&Accept::new()).expect("accept");
        let s = drain(&mut pair.server);
        pair.client.receive(&s, pair.clock.now);
        let Some(Event::Opened(_)) = pair.client.next_event() else { panic!("not opened") };
        assert_eq!(pair.client.is_compressed(), pair.server.is_compressed());
        let compressed = pair.client.is_compressed();
        pair.wire = [WireCheck::new(true, compressed), WireCheck::new(false, compressed)];
        pair
    }

    /// The connection of side `i` (0 client, 1 server).
    pub fn side(&mut self, i: usize) -> &mut Connection {
        if i == 0 { &mut self.client } else { &mut self.server }
    }

    /// Shuttle bytes both ways until neither side has anything to write, passing each event
    /// to `on_event(side, conn, event)`.
    pub fn drive(&mut self, mut on_event: impl FnMut(usize, &mut Connection, &Event)) {
        for _ in 0..10_000 {
            let mut progress = false;
            for from in 0..2 {
                let to = 1 - from;
                let bytes = drain(self.side(from));
                self.wire[from].feed(&bytes);
                if !bytes.is_empty() {
                    progress = true;
                    let now = self.clock.now;
                    self.side(to).receive(&bytes, now);
                }
                let shutdown = self.side(from).wants_shutdown();
                if shutdown && !self.eof_sent[from] {
                    self.eof_sent[from] = true;
                    progress = true;
                    let now = self.clock.now;
                    self.side(to).receive_eof(now);
                }
                for side in [to, from] {
                    let mut events = std::mem::take(&mut self.events[side]);
                    let before = events.closed.is_some();
                    events.drain(self.side(side), |conn, event| {
                        progress = true;
                        on_event(side, conn, event)
                    });
                    progress |= before != events.closed.is_some();
                    self.events[side] = events;
                }
            }
            if !progress {
                return;
            }
        }
        panic!("the pair never went quiet");
    }
}

/// A FIFO of what one side sent and the other should receive, checked while no raw bytes
/// were injected.
#[derive(Debug)]
pub struct Expected<T> {
    queue: VecDeque<T>,
}

impl<T> Default for Expected<T> {
    fn default() -> Self {
        Self { queue: VecDeque::new() }
    }
}

impl<T: PartialEq + std::fmt::Debug> Expected<T> {
    /// Record something sent.
    pub fn push(&mut self, item: T) {
        self.queue.push_back(item);
    }

    /// Check something received against the oldest thing sent.
    pub fn check(&mut self, got: &T) {
        match self.queue.pop_front() {
            Some(want) => assert_eq!(&want, got, "received something other than what was sent"),
            None => panic!("received {got:?}, which was never sent"),
        }
    }

    /// Forget everything (after raw bytes were injected).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

/// Checks the frames one side writes: each header decodes, masking matches the role, RSV1
/// only when deflate was negotiated, and nothing follows a close frame.
#[derive(Debug)]
pub struct WireCheck {
    buf: Vec<u8>,
    masked: bool,
    compressed: bool,
    closed: bool,
    /// Frames seen.
    pub frames: usize,
}

impl WireCheck {
    /// A checker for a client's (`masked`) or a server's frames.
    pub fn new(masked: bool, compressed: bool) -> Self {
        Self { buf: Vec::new(), masked, compressed, closed: false, frames: 0 }
    }

    /// Check the next bytes written.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let header = match wsx_proto::frame::Header::decode(&self.buf[at..]) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => panic!("wrote an invalid frame header: {e:?}"),
            };
            let (header, n) = header;
            let len = usize::try_from(header.payload_len).expect("a usize length");
            if self.buf.len() - at < n + len {
                break;
            }
            assert!(!self.closed, "wrote a frame after a close frame: {header:?}");
            assert_eq!(header.mask.is_some(), self.masked, "wrong masking: {header:?}");
            let rsv1 = wsx_proto::frame::RSV1;
            assert!(header.rsv & !rsv1 == 0, "reserved bits: {header:?}");
            assert!(header.rsv == 0 || self.compressed, "RSV1 without deflate: {header:?}");
            if header.opcode == wsx_proto::OpCode::Close {
                self.closed = true;
            }
            self.frames += 1;
            at += n + len;
        }
        self.buf.drain(..at);
    }
}

impl<T> Expected<T> {
    /// Whether everything sent has been received.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
