//! A sans-I/O WebSocket protocol engine: RFC 6455 and RFC 7692 (permessage-deflate), both roles.
//!
//! [`Connection`] knows nothing of sockets, clocks or runtimes. Drive it with one loop, the same
//! one the repository's `docs/sans-io.md` explains and `examples/sans_io_blocking.rs` and the
//! `wsx` crate follow:
//!
//! 1. **Input.** Feed what you read with [`Connection::receive`] (or read straight into
//!    [`Connection::read_buffer`], then call [`Connection::receive_buffered`]), the end of the
//!    stream with [`Connection::receive_eof`], and the clock with
//!    [`Connection::handle_timeout`] once [`Connection::deadline`] has passed. Inputs buffer
//!    bytes and run timers; they do not parse.
//! 2. **Events.** Take [`Connection::next_event`] until it returns `None`, answering each as
//!    you take it (or call [`Connection::drain_messages`] first, to get data messages borrowed,
//!    and repeat both until neither has anything). Taking events is what parses what arrived:
//!    it answers pings, echoes the peer's close and fails the connection on a bad frame, all of
//!    which queue bytes to send. So it comes before step 3.
//! 3. **Transmit.** Write out [`Connection::transmit`] (a [`bytes::Buf`] of chunks, ready for
//!    a vectored write); once it is empty and [`Connection::wants_shutdown`] says so,
//!    half-close the socket.
//! 4. **Wait** until the socket is readable (or writable, while bytes are left to write), or
//!    until [`Connection::deadline`], then go to 1.
//!
//! Commands ([`Connection::send`], [`Connection::close`], …) can be called at any time; what
//! they queue goes out at step 3. A driver that follows this loop never blocks in a read with a
//! pong or a close echo unsent (`connection/tests/contract.rs` checks it on random input).
//!
//! Time comes in as `now` on every input, randomness (the client's masking keys) from an
//! injected [`MaskRng`], and every peer fault becomes a close code instead of an `Err` or a
//! panic. That makes every rule testable without a network and the engine fuzzable.
//!
//! ```
//! use std::time::Instant;
//! use wsx_proto::{Config, Connection, Event, Message, OpCode};
//!
//! let now = Instant::now();
//! let mut server = Connection::server(&Config::default(), now).unwrap();
//! server.receive(
//!     b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!       Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!       Sec-WebSocket-Version: 13\r\n\r\n",
//!     now,
//! );
//! let Some(Event::Request(request)) = server.next_event() else { panic!() };
//! assert_eq!(request.path(), "/chat");
//! server.accept(&wsx_proto::Accept::new()).unwrap();
//! // ... write `server.transmit()` to the socket: the 101 response.
//! ```

#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod buf;
mod close_code;
mod config;
mod connection;
mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod message;
mod outgoing;
mod prepared;
mod rng;
pub mod utf8;

pub use close_code::CloseCode;
pub use config::Config;
pub use connection::{ClientError, CloseReason, Connection, DrainCounts, Drained, Event, Replies};
pub use deflate::{DeflateConfig, DeflateStats};
pub use error::{ConfigError, HandshakeError, ProtocolError, SendError};
pub use frame::{Frame, OpCode};
pub use handshake::{Accept, Request, Response};
pub use message::{CloseFrame, Message, MessageRef, Utf8Bytes};
pub use outgoing::Outgoing;
pub use prepared::Prepared;
pub use rng::{MaskRng, OsSeededRng};

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent the opening handshake; masks its frames.
    Client,
    /// Answered the opening handshake; its frames are not masked.
    Server,
}
