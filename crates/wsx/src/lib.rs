//! WebSockets for tokio: a server, a client, TLS and split halves, over the sans-I/O
//! [`wsx_proto`] engine.
//!
//! ```no_run
//! # async fn run() -> wsx::Result<()> {
//! use wsx::Message;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let (tcp, _) = listener.accept().await?;
//! let mut ws = wsx::accept(tcp).await?;
//! ws.send("ho!").await?;
//! while let Some(message) = ws.recv().await? {
//!     if let Message::Text(text) = message {
//!         println!("Received message => {text}");
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "client")]
mod client;
mod driver;
mod error;
mod handshake;
#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(any(feature = "client", feature = "__tls"))]
mod io;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
#[cfg(feature = "client")]
mod proxy;
#[cfg(feature = "pubsub")]
pub mod pubsub;
#[cfg(feature = "client")]
mod reconnect;
#[cfg(feature = "server")]
pub mod server;
mod shutdown;
mod split;
mod stream;
#[cfg(feature = "__tls")]
pub mod tls;

#[cfg(feature = "client")]
pub use client::{ClientBuilder, MaybeTlsStream, connect};
pub use error::{Error, Result};
pub use handshake::{Reject, accept, accept_with, handshake};
#[cfg(feature = "client")]
pub use proxy::Proxy;
#[cfg(feature = "client")]
pub use reconnect::{Backoff, Jitter, Outbox, Reconnecting, Retry};
#[cfg(feature = "server")]
pub use server::{ConnectionInfo, Server, ShutdownHandle};
pub use split::{WsReader, WsWriter};
pub use stream::WebSocket;
pub use wsx_proto::{
    Accept, CloseCode, CloseFrame, CloseReason, Config, DeflateConfig, Frame, Message, MessageRef, Replies, Request,
    Response, Utf8Bytes,
};

/// The engine crate, for lower-level use.
pub use wsx_proto as proto;
