//! A sans-I/O WebSocket protocol engine: RFC 6455 and RFC 7692 (permessage-deflate), both roles.
//!
//! [`Connection`] knows nothing of sockets, clocks or runtimes. Bytes read from the peer go in
//! through [`Connection::receive`]; after every call the I/O layer drains, in this order:
//!
//! 1. [`Connection::transmit`]: bytes to write to the peer (a [`bytes::Buf`] of chunks, ready
//!    for a vectored write);
//! 2. [`Connection::wants_shutdown`]: once everything is written, half-close the socket;
//! 3. [`Connection::deadline`]: when to call [`Connection::handle_timeout`] next;
//! 4. [`Connection::next_event`]: what happened ([`Event`]): messages, pings, the close.
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

mod config;
mod connection;
mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod message;
mod outgoing;
mod pool;
mod rng;
pub mod utf8;

pub use config::{Config, ConfigError};
pub use connection::{ClientError, CloseReason, Connection, Drained, Event, Replies};
pub use deflate::DeflateConfig;
pub use error::{HandshakeError, ProtocolError, SendError};
pub use frame::{CloseCode, Frame, OpCode};
pub use handshake::{Accept, Request, Response};
pub use message::{CloseFrame, Message, MessageRef, Utf8Bytes};
pub use outgoing::Outgoing;
pub use rng::{MaskRng, OsSeededRng};

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent the opening handshake; masks its frames.
    Client,
    /// Answered the opening handshake; its frames are not masked.
    Server,
}
