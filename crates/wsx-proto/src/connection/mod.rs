//! The connection: one state machine for the opening handshake, frames and the close.
//!
//! | module | what it holds |
//! |---|---|
//! | `mod.rs` | [`Connection`], its states, inputs and outputs |
//! | `handshake.rs` | the opening handshake (§4): reading it, `accept`, `reject` |
//! | `recv.rs` | the one frame reader (every §5 rule), message assembly, control frames |
//! | `drain.rs` | borrowed receive: `drain_messages` and [`Replies`] |
//! | `send.rs` | the commands that send, and the one frame writer |
//! | `close.rs` | the closing handshake and failing (§7), [`CloseReason`] |
//! | `timer.rs` | deadlines: handshake, keep-alive, pong, idle, close |
//! | `buffers.rs` | the memory economy: the work state, its per-thread cache, read sizing |
//! | `event.rs` | [`Event`] and its queue |

mod buffers;
mod close;
mod drain;
mod event;
mod handshake;
mod recv;
mod send;
#[cfg(test)]
mod tests;
mod timer;

pub use self::{
    close::CloseReason,
    drain::{DrainCounts, Drained, Replies},
    event::Event,
};

use std::{fmt, sync::Arc, time::Instant};

use bytes::BytesMut;

use self::{
    buffers::{ReadSize, Work},
    close::Closing,
    handshake::{Handshake, Session},
    send::OutMessage,
    timer::Timers,
};
use crate::{
    Config, ConfigError, HandshakeError, MaskRng, Role, deflate, deflate::Deflate, handshake::client,
    outgoing::Outgoing,
};

/// The connection state (RFC 6455 §4, §7).
///
/// ```text
///  server: Handshake ──request──▶ AwaitAccept ──accept──▶ Open
///          Handshake, AwaitAccept ──bad request, reject──▶ AwaitingEof
///  client: Handshake ──101──▶ Open
///          Handshake ──other status──▶ Refused ──body read──▶ Finished
///
///  Open ──close()──▶ CloseSent ──peer's close──▶ AwaitingEof
///  Open ──peer's close (echoed)────────────────▶ AwaitingEof
///  Open, CloseSent ──peer fault (close code sent)──▶ AwaitingEof
///  AwaitingEof ──EOF, or close timeout──▶ Finished   (Event::Closed)
///  any ──EOF, handshake or pong timeout──▶ Finished
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    AwaitAccept,
    Refused,
    Open,
    CloseSent,
    /// The close is decided (both close frames crossed, or the connection failed or was
    /// refused): waiting for the TCP connection to end.
    AwaitingEof,
    Finished,
}

/// One WebSocket connection, client or server, without I/O.
///
/// See the [crate documentation](crate) for how to drive it. Its methods fall in four groups:
/// getters; inputs, which bring bytes and time and never fail ([`receive`](Self::receive),
/// [`read_buffer`](Self::read_buffer) with [`receive_buffered`](Self::receive_buffered),
/// [`receive_eof`](Self::receive_eof), [`handle_timeout`](Self::handle_timeout)); commands,
/// which fail only on local misuse ([`send`](Self::send), [`send_frame`](Self::send_frame),
/// [`ping`](Self::ping), [`close`](Self::close), [`accept`](Self::accept), …); and outputs
/// ([`next_event`](Self::next_event) or [`drain_messages`](Self::drain_messages), then
/// [`transmit`](Self::transmit), [`wants_shutdown`](Self::wants_shutdown),
/// [`deadline`](Self::deadline)).
pub struct Connection {
    role: Role,
    state: State,
    /// The I/O layer should half-close the socket once `transmit` is empty.
    shutdown: bool,
    /// A close was sent by a command that had no `now`: arm the close timer at the next input.
    close_timer_pending: bool,
    /// The peer ended its side: effective once everything received before it is parsed.
    eof: bool,
    /// A fragmented message being sent.
    out_message: Option<OutMessage>,
    /// Shared by the connections of a server (see [`Connection::server_shared`]).
    config: Arc<Config>,
    /// The most recent `now` passed in.
    now: Instant,
    /// What the connection holds only while it has bytes in hand (see `buffers.rs`).
    work: Option<Box<Work>>,
    sizing: ReadSize,
    deflate: Option<Box<Deflate>>,
    handshake: Option<Box<Handshake>>,
    closing: Option<Box<Closing>>,
    timers: Option<Box<Timers>>,
    session: Option<Box<Session>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("buffered_in", &self.work.as_ref().map_or(0, |w| w.incoming.buf.bytes.len()))
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
        rng: impl MaskRng,
        now: Instant,
    ) -> Result<Self, ClientError> {
        let (mut conn, key, offer) = Self::new_client(config, rng, now)?;
        let mut head = BytesMut::new();
        let pending = client::write_request(request, key, offer.as_deref(), &mut head)?;
        conn.work().outgoing.extend(&head);
        conn.expect_response(pending);
        Ok(conn)
    }

    /// A client connection whose opening handshake another HTTP layer carries (hyper's client
    /// over HTTP/1.1 or HTTP/2, …): validates `config` and returns the request head for that
    /// layer to send. Give the response head to
    /// [`receive_response`](Self::receive_response), then feed the connection the stream's
    /// bytes as usual.
    ///
    /// `request` is as for [`client`](Self::client); its version picks the handshake. For
    /// HTTP/1.1 the head is the GET that `client` would write, with `Upgrade`, `Connection`,
    /// `Sec-WebSocket-Key` and `Sec-WebSocket-Version`. For HTTP/2 and later it is an extended
    /// CONNECT (RFC 8441 §4, RFC 9220) with an `http` or `https` URI and
    /// `Sec-WebSocket-Version`: the HTTP layer must add the `:protocol` pseudo-header,
    /// `websocket`, which `http::Request` has no field for. Both carry the
    /// permessage-deflate offer when [`Config::deflate`] is set. Nothing goes through
    /// [`transmit`](Self::transmit) until the connection is open.
    pub fn client_upgraded(
        config: &Config,
        request: &http::Request<()>,
        rng: impl MaskRng,
        now: Instant,
    ) -> Result<(Self, http::Request<()>), ClientError> {
        let (mut conn, key, offer) = Self::new_client(config, rng, now)?;
        let (head, pending) = client::upgrade_request(request, key, offer.as_deref())?;
        conn.expect_response(pending);
        Ok((conn, head))
    }

    /// A client connection waiting to send its request: the key for it, drawn from `rng`
    /// (which then makes the masking keys), and the permessage-deflate offer.
    fn new_client(
        config: &Config,
        mut rng: impl MaskRng,
        now: Instant,
    ) -> Result<(Self, [u8; 16], Option<String>), ConfigError> {
        config.validate()?;
        let mut conn = Self::new(Role::Client, Arc::new(config.clone()), now);
        let mut key = [0; 16];
        rng.fill(&mut key);
        conn.session.get_or_insert_default().rng = Some(Box::new(rng));
        Ok((conn, key, config.deflate.as_ref().map(deflate::client_offer)))
    }

    /// Client: the request is sent; the response must match `pending`.
    fn expect_response(&mut self, pending: client::Pending) {
        if let Some(handshake) = self.handshake.as_mut() {
            handshake.pending_client = Some(pending);
        }
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
        let mut conn = Self {
            role,
            state: State::Handshake,
            shutdown: false,
            close_timer_pending: false,
            eof: false,
            out_message: None,
            sizing: ReadSize::new(config.read_buffer_size),
            handshake: Some(Box::new(Handshake::new(now + config.handshake_timeout))),
            config,
            now,
            work: None,
            deflate: None,
            closing: None,
            timers: None,
            session: None,
        };
        conn.start_timers();
        conn
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
        self.session.as_ref()?.protocol.as_deref()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// The bytes permessage-deflate compressed and decompressed since this was last called
    /// (counted as messages are sent and as compressed frames are parsed), and zero them; `None`
    /// when nothing was counted, and always without permessage-deflate. For metrics: the
    /// compression ratio per direction.
    #[inline]
    pub fn take_deflate_stats(&mut self) -> Option<crate::DeflateStats> {
        let deflate = self.deflate.as_deref_mut()?;
        (!deflate.stats.is_empty()).then(|| std::mem::take(&mut deflate.stats))
    }

    // Inputs.

    /// Feed bytes read from the peer. They are parsed as events are taken
    /// ([`next_event`](Self::next_event), [`drain_messages`](Self::drain_messages)).
    pub fn receive(&mut self, data: &[u8], now: std::time::Instant) {
        if self.is_reading() {
            let buf = &mut self.work().incoming.buf;
            buf.reserve(data.len());
            buf.bytes.extend_from_slice(data);
        }
        self.observe(now);
        self.received(now);
    }

    /// The peer closed its side of the TCP connection (a read returned 0 bytes). It takes
    /// effect once everything received before it has been parsed, as events are taken.
    pub fn receive_eof(&mut self, now: Instant) {
        self.observe(now);
        self.eof = true;
    }

    // Outputs.

    /// The next event, if any. Events stop after [`Event::Closed`].
    ///
    /// Taking events parses what was received, one event ahead: a message is handed to the
    /// application before the frames behind it are looked at, so the replies the application
    /// sends to it go out before a close that a later, bad frame causes (the conformance
    /// suite's strict order). So taking an event can queue bytes to
    /// [`transmit`](Self::transmit) (a pong, a close echo, the close of a failure) and change
    /// [`wants_shutdown`](Self::wants_shutdown) and [`deadline`](Self::deadline): take events
    /// until `None` before reading those.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.work.as_mut().and_then(|w| w.events.pop_front()) {
                return Some(event);
            }
            if !self.parse_step() {
                return None;
            }
        }
    }

    /// Whether [`next_event`](Self::next_event) has something to return. Parses as far as
    /// needed to find out, with the same effects as `next_event`.
    pub fn has_pending_events(&mut self) -> bool {
        loop {
            if self.work.as_ref().is_some_and(|w| !w.events.is_empty()) {
                return true;
            }
            if !self.parse_step() {
                return false;
            }
        }
    }

    /// Bytes to write to the peer. Write them (vectored if you like) and
    /// [`advance`](bytes::Buf::advance) by what was written.
    ///
    /// May change after any command, any input, and taking events. Looking has no effect.
    pub fn transmit(&mut self) -> Outgoing<'_> {
        Outgoing(self.work.as_deref_mut().map(|w| &mut w.outgoing))
    }

    /// Whether the I/O layer should half-close the connection (shutdown its write side) once
    /// [`transmit`](Self::transmit) is empty.
    ///
    /// RFC 6455 §7.1.1: the server closes the TCP connection first once the closing handshake
    /// is done; a client waits for that, up to `close_timeout`. After a failure either side
    /// closes at once (§7.1.7). May change after any input or command, and after taking events.
    pub fn wants_shutdown(&self) -> bool {
        self.shutdown
    }

    /// Whether bytes from the peer are still wanted: not once the close is decided.
    fn is_reading(&self) -> bool {
        !matches!(self.state, State::AwaitingEof | State::Finished)
    }

    /// Queue an event.
    fn push_event(&mut self, event: Event) {
        self.work().events.push_back(event);
    }
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

// A connection moves between threads with its task.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Connection>();
};
