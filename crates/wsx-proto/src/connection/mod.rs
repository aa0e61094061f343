//! The connection: one state machine for the opening handshake, frames and the close.
//!
//! Inputs are [`Connection::receive`], [`Connection::receive_eof`] and
//! [`Connection::handle_timeout`]; they never fail, because every peer fault becomes a close
//! code. Commands ([`Connection::send`], [`Connection::ping`], [`Connection::close`], …) fail
//! only on local misuse. After each call, drain the outputs in order: [`Connection::transmit`],
//! [`Connection::wants_shutdown`], [`Connection::deadline`], [`Connection::next_event`].

mod drain;
mod recv;
mod send;
#[cfg(test)]
mod tests;

pub use drain::{Drained, Replies};

use std::{collections::VecDeque, fmt, sync::Arc, time::Instant};

use bytes::{Bytes, BytesMut};
use http::StatusCode;

use crate::{
    CloseCode, CloseFrame, Config, ConfigError, HandshakeError, MaskRng, OpCode, ProtocolError, Request, Response,
    Role,
    deflate::{self, Deflate},
    frame::{Header, MAX_HEADER_LEN},
    handshake::client,
    outgoing::Outgoing,
    pool,
    utf8::Validator,
};

/// The most an adaptive read between frames grows to (see [`Connection::read_buffer`]).
const READ_SIZE_MAX: usize = 64 << 10;
/// `read_base` when no read is outstanding.
const NO_READ: u32 = u32::MAX;

/// What happened on a connection, in the order it happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Server: a complete, valid upgrade request. Answer it with [`Connection::accept`] or
    /// [`Connection::reject`]; frames are not read until then.
    Request(Box<Request>),
    /// Client: the server accepted the handshake; the connection is open.
    Opened(Box<Response>),
    /// A whole text or binary message.
    Message(crate::Message),
    /// A ping. It has already been answered unless `auto_pong` is off.
    Ping(Bytes),
    /// A pong, solicited or not.
    Pong(Bytes),
    /// The peer's close frame arrived. The echo has been queued; the connection finishes
    /// with [`Event::Closed`] once the TCP connection ends.
    Closing(CloseFrame),
    /// The connection is over: drop the socket once `transmit` is drained. The last event.
    /// (Boxed: it comes once, and keeps every other event small to move.)
    Closed(Box<CloseReason>),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The close frame the peer sent, if one arrived.
    pub received: Option<CloseFrame>,
    /// The close frame we sent, if any.
    pub sent: Option<CloseFrame>,
    /// Why the connection failed, if it did; `None` after a complete closing handshake.
    pub error: Option<ProtocolError>,
}

impl CloseReason {
    /// The WebSocket Connection Close Code of RFC 6455 §7.1.5: the code in the peer's close
    /// frame; else the code of the failure; else 1006 (abnormal closure).
    pub fn code(&self) -> CloseCode {
        match (&self.received, &self.error) {
            (Some(frame), _) => frame.code,
            (None, Some(e)) => e.close_code(),
            (None, None) => CloseCode::ABNORMAL,
        }
    }

    /// Whether the closing handshake completed: both close frames crossed and no failure.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.received.is_some() && self.sent.is_some()
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error, &self.received) {
            (Some(e), _) => write!(f, "connection failed: {e}"),
            (None, Some(frame)) => write!(f, "closed by peer with {frame}"),
            (None, None) => write!(f, "closed"),
        }
    }
}

/// The connection state (RFC 6455 §4, §7).
///
/// ```text
///  server: Handshake ──request──▶ AwaitAccept ──accept──▶ Open
///          Handshake/AwaitAccept ──bad request, reject──▶ Closed
///  client: Handshake ──101──▶ Open
///          Handshake ──other status──▶ Refused ──body read──▶ Closed
///
///  Open ──close()──▶ CloseSent ──peer's close──▶ Closed
///  Open ──peer's close (echoed)───────────────▶ Closed
///  Open, CloseSent ──peer fault (close code sent)──▶ Closed
///  Closed ──EOF, or close timeout──▶ Finished   (Event::Closed)
///  any ──EOF──▶ Finished
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    AwaitAccept,
    Refused,
    Open,
    CloseSent,
    Closed,
    Finished,
}

/// A frame whose header has been read and whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: Header,
    /// Payload bytes at the front of the read buffer already unmasked (and validated).
    done: usize,
    /// Whether this frame's payload is plain text to validate as it arrives.
    validate: bool,
}

/// Events waiting for the application. Parsing stops at the first event (see `read_frames`), so
/// there is nearly always at most one: it is kept inline, and only the rare extra ones (a close
/// and the end, say) go to a queue, which is freed when the connection goes idle.
#[derive(Debug, Default)]
struct Events {
    first: Option<Event>,
    // Boxed on purpose: a pointer inline instead of the queue's 32 bytes, in every connection.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Event>>>,
}

impl Events {
    fn push_back(&mut self, event: Event) {
        match &mut self.rest {
            Some(rest) => rest.push_back(event),
            None if self.first.is_none() => self.first = Some(event),
            None => self.rest = Some(Box::new(VecDeque::from([event]))),
        }
    }

    /// `first`, when set, is older than everything in `rest`: it is only filled when both are
    /// empty.
    fn pop_front(&mut self) -> Option<Event> {
        self.first.take().or_else(|| self.rest.as_mut()?.pop_front())
    }

    fn front(&self) -> Option<&Event> {
        self.first.as_ref().or_else(|| self.rest.as_ref()?.front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|r| r.is_empty())
    }

    fn release(&mut self) {
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
    }
}

/// What a connection holds only while it has bytes or events in hand: the read buffer and the
/// frame being read, the events not yet taken and the write queue. Taken from a per-thread cache
/// when input arrives or output is queued, and handed back with its (cleared) buffers when the
/// connection goes idle, so that an idle connection carries one pointer instead of this
/// (`tests/idle_memory.rs` in the tokio crate measures what that saves) and a connection waking
/// up gets state and buffers in one step.
#[derive(Debug)]
struct Busy {
    rbuf: BytesMut,
    /// The size class of `rbuf` if it came from the buffer cache and can go back; 0 if not.
    rbuf_class: u32,
    /// The read buffer's length when `read_buffer` last offered it; `NO_READ` when no read is
    /// outstanding.
    read_base: u32,
    /// The frame being received when it is split across reads.
    frame: Option<InFrame>,
    /// Validates text frames that arrive in pieces, and fragmented text messages.
    utf8: Validator,
    events: Events,
    out: Outgoing,
}

impl Default for Busy {
    fn default() -> Self {
        Self {
            rbuf: BytesMut::new(),
            rbuf_class: 0,
            read_base: NO_READ,
            frame: None,
            utf8: Validator::new(),
            events: Events::default(),
            out: Outgoing::default(),
        }
    }
}

/// How many idle `Busy` boxes one thread keeps, with their buffers, for the next connections that
/// wake up: at most 8 × 2 buffers of at most `pool::MAX_CLASS` (64 KiB) each.
const BUSY_CACHED: usize = 8;

thread_local! {
    // Boxes on purpose: the cache hands out allocations, so that taking one allocates nothing.
    #[allow(clippy::vec_box)]
    static BUSY_CACHE: std::cell::RefCell<Vec<Box<Busy>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The busy state in `slot`, taken from the thread's cache (or allocated) if there is none.
#[inline]
fn busy(slot: &mut Option<Box<Busy>>) -> &mut Busy {
    slot.get_or_insert_with(|| BUSY_CACHE.try_with(|c| c.borrow_mut().pop()).ok().flatten().unwrap_or_default())
}

/// Hand an idle connection's busy state (its buffers cleared) to the thread's cache; past
/// `BUSY_CACHED`, it is freed.
fn give_busy(mut b: Box<Busy>) {
    b.read_base = NO_READ;
    b.utf8.reset();
    let _ = BUSY_CACHE.try_with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() < BUSY_CACHED {
            cache.push(b);
        }
    });
}

/// A fragmented or compressed message being assembled.
#[derive(Debug)]
struct InMessage {
    text: bool,
    compressed: bool,
    fragments: usize,
    data: BytesMut,
}

/// A fragmented message being sent with `send_frame`.
#[derive(Debug, Clone, Copy)]
struct OutMessage {
    compressed: bool,
}

/// What only some connections use, boxed so that the others carry a pointer: a server with
/// neither keep-alive, idle timeout nor subprotocol never allocates it.
#[derive(Default)]
struct Extras {
    /// Client: the masking keys' source.
    rng: Option<Box<dyn MaskRng>>,
    /// The subprotocol agreed in the handshake.
    protocol: Option<Box<str>>,
    /// Keep-alive: when to send the next ping, and when its pong is due.
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    ping_counter: u32,
    /// With an idle timeout: when something last arrived.
    last_received: Option<Instant>,
}

/// What only the opening handshake needs: allocated with the connection and dropped when the
/// handshake ends, so that an open connection does not carry it.
#[derive(Debug)]
struct Handshake {
    /// When the handshake times out.
    deadline: Instant,
    /// Client: what the response must match.
    pending_client: Option<client::Pending>,
    /// Server: the request waiting for `accept` or `reject`.
    pending_request: Option<Box<Request>>,
    /// Server: the permessage-deflate parameters agreed and the header answering the offer.
    pending_deflate: Option<(deflate::Params, String)>,
    /// Client: the refused (non-101) response whose body is being read.
    refused: Option<RefusedResponse>,
}

/// The closing handshake and how the connection ended: allocated by the first close frame,
/// failure or close timer, so that an open connection does not carry it.
#[derive(Debug, Default)]
struct Closing {
    sent: Option<CloseFrame>,
    received: Option<CloseFrame>,
    error: Option<ProtocolError>,
    deadline: Option<Instant>,
}

/// A server client response (non-101) being read.
#[derive(Debug)]
struct RefusedResponse {
    status: StatusCode,
    headers: Box<http::HeaderMap>,
    body: Vec<u8>,
    /// Body bytes still expected, if the response said.
    remaining: Option<usize>,
}

/// One WebSocket connection, client or server, without I/O.
///
/// See the [crate documentation](crate) for how to drive it.
pub struct Connection {
    role: Role,
    state: State,
    /// Shared by the connections of a server (see [`Connection::server_shared`]).
    config: Arc<Config>,
    /// The most recent `now` passed in.
    now: Instant,

    /// The read buffer, the events and the write queue: only while the connection has bytes or
    /// events in hand (see [`Busy`]).
    busy: Option<Box<Busy>>,

    // Receiving.
    /// Boxed: only fragmented or compressed messages need it.
    message: Option<Box<InMessage>>,

    // Sending.
    out_message: Option<OutMessage>,
    deflate: Option<Box<Deflate>>,

    // Handshake.
    handshake: Option<Box<Handshake>>,

    // Closing.
    closing: Option<Box<Closing>>,
    shutdown: bool,

    // Timers.
    /// A close was sent by a command that had no `now`: arm the close timer at the next input.
    close_timer_pending: bool,
    /// Keep-alive and idle timers, the client's RNG and the subprotocol: only when used.
    extras: Option<Box<Extras>>,
    /// The size of the last complete frame, capped: how much to read at once next.
    read_hint: u32,
    /// Adaptive read size between frames: doubled when a read fills all the space it was
    /// offered (more is waiting, as when a peer pipelines), halved when reads come back small.
    read_size: u32,
    /// `drain_messages` has been called: leave data frames to it.
    drains: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("buffered_in", &self.busy.as_ref().map_or(0, |b| b.rbuf.len()))
            .field("buffered_out", &self.buffered_amount())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A client connection: validates `config`, writes the upgrade request for `request`
    /// into [`transmit`](Self::transmit), and waits for the server's answer.
    ///
    /// `request` carries the URI (`ws://`, `wss://`, `http://` or `https://`) and any extra
    /// headers; offer subprotocols with `Sec-WebSocket-Protocol` headers. `rng` supplies the
    /// handshake key and the masking keys; use [`OsSeededRng`](crate::OsSeededRng).
    pub fn client(
        config: &Config,
        request: &http::Request<()>,
        mut rng: impl MaskRng,
        now: Instant,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let mut conn = Self::new(Role::Client, Arc::new(config.clone()), now);
        let mut key = [0; 16];
        rng.fill(&mut key);
        let offer = config.deflate.as_ref().map(deflate::client_offer);
        let mut head = BytesMut::new();
        let pending = client::write_request(request, key, offer.as_deref(), &mut head)?;
        conn.transmit().extend(&head);
        if let Some(handshake) = conn.handshake.as_mut() {
            handshake.pending_client = Some(pending);
        }
        conn.extras_mut().rng = Some(Box::new(rng));
        Ok(conn)
    }

    /// A server connection: validates `config` and waits for the client's request, which is
    /// reported as [`Event::Request`].
    pub fn server(config: &Config, now: Instant) -> Result<Self, ConfigError> {
        Self::server_shared(Arc::new(config.clone()), now)
    }

    /// Like [`server`](Self::server), but sharing `config` with other connections instead of
    /// holding a copy: a server with many connections keeps one `Config` for all of them.
    pub fn server_shared(config: Arc<Config>, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::new(Role::Server, config, now))
    }

    fn new(role: Role, config: Arc<Config>, now: Instant) -> Self {
        let handshake = Handshake {
            deadline: now + config.handshake_timeout,
            pending_client: None,
            pending_request: None,
            pending_deflate: None,
            refused: None,
        };
        // Adapts between `read_buffer_size` and `READ_SIZE_MAX`; a larger configured size still
        // applies, as the floor in `read_buffer`.
        let read_size = config.read_buffer_size.min(READ_SIZE_MAX) as u32;
        // The idle timer counts from the start until something arrives.
        let extras = config.idle_timeout.map(|_| Box::new(Extras { last_received: Some(now), ..Extras::default() }));
        Self {
            role,
            state: State::Handshake,
            config,
            now,
            busy: None,
            message: None,
            out_message: None,
            deflate: None,
            handshake: Some(Box::new(handshake)),
            closing: None,
            shutdown: false,
            close_timer_pending: false,
            extras,
            read_hint: 0,
            read_size,
            drains: false,
        }
    }

    // Getters.

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the opening handshake has completed and the close has not started.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether messages can still arrive: open, or closing from our side only.
    pub fn can_receive(&self) -> bool {
        matches!(self.state, State::Open | State::CloseSent)
    }

    /// Whether [`Event::Closed`] has been queued: nothing more will happen.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.extras.as_ref()?.protocol.as_deref()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// How the connection ended, or is ending: available once a close frame has crossed or
    /// the connection failed.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let closing = self.closing.as_deref()?;
        if closing.sent.is_none() && closing.received.is_none() && closing.error.is_none() {
            return None;
        }
        Some(CloseReason {
            received: closing.received.clone(),
            sent: closing.sent.clone(),
            error: closing.error.clone(),
        })
    }

    /// Bytes queued to write.
    pub fn buffered_amount(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| bytes::Buf::remaining(&b.out))
    }

    /// Whether the write queue is past `write_high_water`: senders should wait for it to drain.
    pub fn is_write_blocked(&self) -> bool {
        self.buffered_amount() > self.config.write_high_water
    }

    // Outputs.

    /// Bytes to write to the peer. Write them (vectored if you like) and
    /// [`advance`](bytes::Buf::advance) by what was written.
    pub fn transmit(&mut self) -> &mut Outgoing {
        &mut busy(&mut self.busy).out
    }

    /// Whether the I/O layer should half-close the connection (shutdown its write side) once
    /// [`transmit`](Self::transmit) is empty.
    ///
    /// RFC 6455 §7.1.1: the server closes the TCP connection first once the closing handshake
    /// is done; a client waits for that, up to `close_timeout`. After a failure either side
    /// closes at once (§7.1.7).
    pub fn wants_shutdown(&self) -> bool {
        self.shutdown
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        if self.close_timer_pending {
            // Ask to be called at once so the close timer can be armed with a real `now`.
            return Some(self.now);
        }
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        match self.state {
            State::Handshake | State::AwaitAccept | State::Refused => {
                consider(self.handshake.as_ref().map(|h| h.deadline))
            }
            State::Open => {
                if let Some(extras) = &self.extras {
                    consider(extras.next_ping);
                    consider(extras.pong_deadline);
                    consider(self.config.idle_timeout.zip(extras.last_received).map(|(d, t)| t + d));
                }
            }
            State::CloseSent | State::Closed => consider(self.closing.as_ref().and_then(|c| c.deadline)),
            State::Finished => {}
        }
        deadline
    }

    /// Whether [`next_event`](Self::next_event) has something to return.
    ///
    /// May parse more of what was already received to find out.
    pub fn has_pending_events(&mut self) -> bool {
        if self.events_empty() {
            self.parse_more();
        }
        !self.events_empty()
    }

    /// The next event, if any. Events stop after [`Event::Closed`].
    ///
    /// Frames are parsed as events are taken, one event ahead: a message is handed to the
    /// application before the frames behind it are looked at. So the replies the application
    /// sends to it go out before a close that a later, bad frame would cause (the conformance
    /// suite's strict order), and pongs for pings later in the same read follow them too.
    pub fn next_event(&mut self) -> Option<Event> {
        if self.events_empty() {
            self.parse_more();
        }
        self.busy.as_mut()?.events.pop_front()
    }

    /// Whether no event is waiting.
    fn events_empty(&self) -> bool {
        self.busy.as_ref().is_none_or(|b| b.events.is_empty())
    }

    /// Queue an event.
    fn push_event(&mut self, event: Event) {
        busy(&mut self.busy).events.push_back(event);
    }

    /// Parse frames still waiting in the read buffer.
    fn parse_more(&mut self) {
        if matches!(self.state, State::Open | State::CloseSent)
            && self.busy.as_ref().is_some_and(|b| !b.rbuf.is_empty())
        {
            self.process();
        }
    }

    // Inputs.

    /// Feed bytes read from the peer.
    pub fn receive(&mut self, data: &[u8], now: Instant) {
        if matches!(self.state, State::Closed | State::Finished) {
            self.observe(now);
            return;
        }
        busy(&mut self.busy).rbuf.extend_from_slice(data);
        self.receive_buffered(now);
    }

    /// The buffer the I/O layer may read into directly, to save the copy `receive` makes;
    /// call [`receive_buffered`](Self::receive_buffered) after appending to it.
    ///
    /// Its spare capacity is at least `read_buffer_size`, and enough for the rest of the frame
    /// being received (up to twice what has arrived, so a peer cannot make it allocate a
    /// frame's declared length without sending it), or for a frame as large as the last one,
    /// so that a stream of equal frames takes one read each. Between frames the size also
    /// adapts: a read that fills all the space offered doubles the next one (up to 64 KiB),
    /// so a peer that pipelines many small frames is drained in few reads.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        let b = busy(&mut self.busy);
        let want = match &b.frame {
            Some(frame) => {
                let rest = (frame.header.payload_len as usize).saturating_sub(b.rbuf.len()) + MAX_HEADER_LEN;
                rest.min(b.rbuf.len().max(self.config.read_buffer_size) * 2)
            }
            None => (self.read_hint as usize + MAX_HEADER_LEN).max(self.read_size as usize),
        }
        .max(self.config.read_buffer_size);
        pool::reserve(&mut b.rbuf, &mut b.rbuf_class, want);
        // What a partial frame holds is bounded by the frame limit (a `usize` < 4 GiB here or
        // the read is simply not measured).
        b.read_base = u32::try_from(b.rbuf.len()).unwrap_or(NO_READ);
        &mut b.rbuf
    }

    /// Process bytes the I/O layer appended to [`read_buffer`](Self::read_buffer).
    pub fn receive_buffered(&mut self, now: Instant) {
        if let Some(b) = self.busy.as_deref_mut().filter(|b| b.read_base != NO_READ) {
            // A read that filled all the space it was offered leaves the buffer full.
            let filled = b.rbuf.len() == b.rbuf.capacity();
            let got = b.rbuf.len().saturating_sub(b.read_base as usize);
            let min = self.config.read_buffer_size.min(READ_SIZE_MAX) as u32;
            if filled {
                self.read_size = (self.read_size * 2).min(READ_SIZE_MAX as u32);
            } else if got < self.read_size as usize / 4 {
                self.read_size = (self.read_size / 2).max(min);
            }
            b.read_base = NO_READ;
        }
        self.observe(now);
        if let Some(extras) = self.extras.as_mut().filter(|_| self.config.idle_timeout.is_some()) {
            extras.last_received = Some(now);
        }
        // A connection drained with `drain_messages` takes its data frames there, borrowed:
        // parsing one here would make it an owned event. (It is parsed by the drain that follows
        // this input; everything else is parsed now as usual.)
        let front = self.busy.as_ref().and_then(|b| b.rbuf.first().copied());
        if !(self.drains && self.can_receive() && matches!(front, Some(0x81 | 0x82))) {
            self.process();
        }
    }

    /// The peer closed its side of the TCP connection (read returned 0 bytes).
    pub fn receive_eof(&mut self, now: Instant) {
        self.observe(now);
        match self.state {
            State::Finished => return,
            State::Handshake | State::AwaitAccept => {
                self.closing_mut().error.get_or_insert(HandshakeError::UnexpectedEof.into());
            }
            State::Refused => self.finish_refused(),
            State::Open | State::CloseSent => {
                self.closing_mut().error.get_or_insert(ProtocolError::UnexpectedEof);
            }
            State::Closed => {}
        }
        self.shutdown = true;
        self.finish();
    }

    /// Run the timers that are due at `now`: handshake, keep-alive ping, pong, idle and close
    /// timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        match self.state {
            State::Handshake | State::AwaitAccept | State::Refused => {
                if self.handshake.as_ref().is_some_and(|h| now >= h.deadline) {
                    if self.state == State::Refused {
                        self.finish_refused();
                    } else {
                        self.closing_mut().error.get_or_insert(HandshakeError::Timeout.into());
                    }
                    self.shutdown = true;
                    self.finish();
                }
            }
            State::Open => {
                // A peer that answers nothing will not answer a close either: send it, and end
                // without waiting out the close timeout.
                let extras = self.extras.as_deref();
                if extras.and_then(|e| e.pong_deadline).is_some_and(|t| now >= t) {
                    self.fail(ProtocolError::PongTimeout);
                    self.finish();
                    return;
                }
                let last = extras.and_then(|e| e.last_received);
                if self.config.idle_timeout.zip(last).is_some_and(|(d, t)| now >= t + d) {
                    self.fail(ProtocolError::IdleTimeout);
                    self.finish();
                    return;
                }
                if extras.and_then(|e| e.next_ping).is_some_and(|t| now >= t) {
                    self.send_keepalive_ping(now);
                }
            }
            State::CloseSent | State::Closed => {
                if self.closing.as_ref().and_then(|c| c.deadline).is_some_and(|t| now >= t) {
                    if self.state == State::CloseSent {
                        self.closing_mut().error.get_or_insert(ProtocolError::CloseTimeout);
                    }
                    self.shutdown = true;
                    self.finish();
                }
            }
            State::Finished => {}
        }
    }

    /// Release the read buffer, the write buffer and the event queue if they hold nothing: call
    /// when the connection goes idle, so that an idle connection holds no buffers. Once all of
    /// them are empty (and no fragmented message is half received), the state that holds them
    /// goes back to a per-thread cache too: an idle connection is then about 90 bytes.
    pub fn release_buffers(&mut self) {
        let Some(b) = self.busy.as_deref_mut() else { return };
        if let Some(deflate) = self.deflate.as_mut() {
            deflate.scratch = BytesMut::new();
        }
        b.events.release();
        // A fragmented message keeps its text validator's state across frames.
        let idle = b.rbuf.is_empty()
            && b.frame.is_none()
            && b.events.is_empty()
            && bytes::Buf::remaining(&b.out) == 0
            && self.message.is_none();
        if idle {
            // The buffers stay with the state they belong to: the next connection to wake up on
            // this thread takes all of it with one step.
            pool::keep(&mut b.rbuf, &mut b.rbuf_class);
            b.out.recycle();
            // Invariant: `busy` was just checked to be `Some`.
            give_busy(self.busy.take().expect("busy state"));
            return;
        }
        // Still busy (a partial frame, or bytes the socket has not taken): hold no more than that.
        // As for the write tail, `capacity` may be 0 while the buffer is still allocated.
        if b.rbuf.is_empty() && b.frame.is_none() {
            pool::give(std::mem::take(&mut b.rbuf), std::mem::take(&mut b.rbuf_class));
        }
        b.out.release();
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_default()
    }

    /// Record the time of an input and arm a close timer a command left pending.
    fn observe(&mut self, now: Instant) {
        self.now = now;
        if self.close_timer_pending {
            self.close_timer_pending = false;
            self.closing_mut().deadline = Some(now + self.config.close_timeout);
        }
    }

    /// The closing state, created on first use.
    fn closing_mut(&mut self) -> &mut Closing {
        self.closing.get_or_insert_with(Box::default)
    }

    /// Fail the connection (RFC 6455 §7.1.7): send a close frame with the fault's code if
    /// none was sent yet, stop reading, and close the TCP connection.
    fn fail(&mut self, error: ProtocolError) {
        if self.state == State::Open {
            let code = error.close_code();
            if code.is_sendable() {
                let reason = short_reason(&error);
                self.send_close_frame(Some(CloseFrame::new(code, reason.as_str())));
            }
        }
        self.closing_mut().error.get_or_insert(error);
        self.enter_closed();
        self.shutdown = true;
    }

    /// Both close frames have crossed, or the connection failed: wait for the TCP close.
    fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.message = None;
        if let Some(b) = self.busy.as_deref_mut() {
            b.frame = None;
            b.rbuf.clear();
        }
        self.handshake = None;
        self.closing_mut().deadline = Some(self.now + self.config.close_timeout);
        self.close_timer_pending = false;
        if self.role == Role::Server {
            self.shutdown = true;
        }
    }

    /// Queue [`Event::Closed`]; nothing happens after it.
    fn finish(&mut self) {
        if self.state == State::Finished {
            return;
        }
        self.state = State::Finished;
        if let Some(b) = self.busy.as_deref_mut() {
            pool::give(std::mem::take(&mut b.rbuf), std::mem::take(&mut b.rbuf_class));
            b.frame = None;
        }
        self.handshake = None;
        self.message = None;
        let closing = self.closing_mut();
        let reason = CloseReason {
            received: closing.received.clone(),
            sent: closing.sent.clone(),
            error: closing.error.clone(),
        };
        self.push_event(Event::Closed(Box::new(reason)));
    }

    fn finish_refused(&mut self) {
        if let Some(r) = self.handshake.as_mut().and_then(|h| h.refused.take()) {
            self.closing_mut()
                .error
                .get_or_insert(HandshakeError::Refused { status: r.status, headers: r.headers, body: r.body }.into());
        }
    }
}

/// The reason sent in a close frame for a failure: the error's text, cut at a character
/// boundary to fit the 123 bytes a close reason may have.
fn short_reason(error: &ProtocolError) -> String {
    let mut text = error.to_string();
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Why [`Connection::client`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The request cannot be sent (bad URI scheme, no host, …).
    #[error(transparent)]
    Request(#[from] HandshakeError),
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Connection>();
    let _ = OpCode::Text;
}
