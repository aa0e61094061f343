//! [`WebSocket`]: a [`Connection`] driven over any `AsyncRead + AsyncWrite`.

use std::{
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll},
};

use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use wsx_proto::{CloseCode, CloseReason, Connection, Frame, Message, MessageRef, Replies};

use crate::{
    driver::{Driver, Own},
    error::{Error, Result},
};

/// A WebSocket connection over `S` (a `TcpStream`, a TLS stream, or anything
/// `AsyncRead + AsyncWrite + Unpin`).
///
/// Read with [`recv`](Self::recv) or as a [`Stream`] of [`Message`]s; write with
/// [`send`](Self::send) or as a [`Sink`]. Pings are answered and the closing handshake is
/// run for you; the stream ends (`None`) after a clean close and yields an [`Error`] when the
/// connection fails. [`split`](Self::split) gives a reader and a writer for two tasks.
pub struct WebSocket<S> {
    driver: Driver<S>,
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket").field("conn", &self.driver.conn).finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wrap a connection whose handshake is done (or will be done by the driver).
    pub(crate) fn from_driver(driver: Driver<S>) -> Self {
        Self { driver }
    }

    /// Have the connection close itself with 1001 when `watch` fires (a server's shutdown).
    #[cfg(feature = "server")]
    pub(crate) fn close_on(&mut self, watch: crate::shutdown::Watch) {
        self.driver.close_on(watch);
    }

    /// Count this connection in the server metrics from now on: a server accepted it.
    #[cfg(feature = "hyper")]
    pub(crate) fn count_as_accepted(&mut self) {
        self.driver.metrics.open();
    }

    /// Drive an engine [`Connection`] whose opening handshake has completed over `io`.
    ///
    /// For custom handshakes; [`accept`](crate::accept) and [`connect`](crate::connect) are
    /// the usual way in.
    pub fn from_connection(io: S, conn: Connection) -> Self {
        Self::from_driver(Driver::new(io, conn))
    }

    /// The next message: text, binary, ping, pong, or the peer's close. `Ok(None)` once the
    /// connection has ended cleanly; an error if it failed.
    ///
    /// Pings are answered automatically (unless `auto_pong` is off) before they are returned.
    //
    // `recv`, `send`, `feed` and `flush` are plain functions returning small futures rather
    // than `async fn`s, which would keep a second copy of their arguments: a handler's future
    // embeds theirs, and that future is most of an idle connection's memory.
    pub fn recv(&mut self) -> impl Future<Output = Result<Option<Message>>> + '_ {
        poll_fn(|cx| self.driver.poll_message(&mut Own, cx).map(Option::transpose))
    }

    /// Hand every text and binary message to `handle` as it is parsed, borrowed from the read
    /// buffer, with [`Replies`] to answer it; return the next message of another kind: a ping
    /// (already answered), a pong or the peer's close, or `Ok(None)` once the connection has
    /// ended cleanly, an error if it failed.
    ///
    /// This is the fast way to serve a connection whose handler does not need to wait (an
    /// echo, a game tick, a trading feed): nothing is allocated or reference-counted per
    /// message, replies are framed straight into the write queue, and all the messages of one
    /// read are answered with one write. A handler that must `await` uses [`recv`](Self::recv)
    /// instead. Handling stops while the write queue is over `write_high_water`, until the
    /// socket takes it. Cancel-safe: a message is handled whole or not at all, and replies
    /// already queued go out with the next write.
    ///
    /// ```no_run
    /// # async fn serve(mut ws: wsx::WebSocket<tokio::net::TcpStream>) -> wsx::Result<()> {
    /// // Echo everything until the peer closes.
    /// while ws.recv_each(|message, replies| { let _ = replies.send(message); }).await?.is_some() {}
    /// # Ok(()) }
    /// ```
    pub fn recv_each<F>(&mut self, mut handle: F) -> impl Future<Output = Result<Option<Message>>>
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
    {
        poll_fn(move |cx| self.driver.poll_each(&mut Own, cx, &mut handle).map(Option::transpose))
    }

    /// Send a message and write it out. Waits while the write queue is over
    /// `write_high_water`.
    pub fn send(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<()>> + '_ {
        let mut message = Some(message.into());
        poll_fn(move |cx| self.driver.poll_send(cx, &mut message))
    }

    /// Queue a message without writing it yet: several fed messages go out in one write at
    /// the next [`flush`](Self::flush), `send`, or `recv`.
    pub fn feed(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<()>> + '_ {
        let mut message = Some(message.into());
        poll_fn(move |cx| self.driver.poll_feed(cx, &mut message))
    }

    /// Write out everything queued.
    pub fn flush(&mut self) -> impl Future<Output = Result<()>> + '_ {
        poll_fn(|cx| self.driver.poll_flush(cx))
    }

    /// Send a text or binary message choosing whether to compress it, overriding the
    /// permessage-deflate threshold: `false` for data known not to compress (images, already
    /// compressed files), `true` for a small message worth compressing. Ignored when the
    /// extension was not negotiated.
    pub async fn send_compressed(&mut self, message: impl Into<Message>, compress: bool) -> Result<()> {
        poll_fn(|cx| self.driver.poll_ready(cx)).await?;
        self.driver.start_send_compressed(message.into(), compress)?;
        self.flush().await
    }

    /// Send one frame of a message streamed in fragments, and write it out: a text or binary
    /// frame with `fin` false starts the message, continuations follow, `fin` ends it (see
    /// [`Connection::send_frame`]). Other messages cannot be sent until it ends; pings can.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<()> {
        poll_fn(|cx| self.driver.poll_ready(cx)).await?;
        self.driver.start_send_frame(frame)?;
        self.flush().await
    }

    /// Close with `code` and `reason` and wait for the closing handshake to finish (up to
    /// `close_timeout`). Messages that arrive meanwhile are dropped; to read them, send
    /// [`Message::Close`] and keep calling `recv` until it returns `None`.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.driver.start_close(code, reason)?;
        poll_fn(|cx| self.driver.poll_close(&mut Own, cx)).await
    }

    /// Send a ping and write it out.
    pub async fn ping(&mut self, payload: impl Into<bytes::Bytes>) -> Result<()> {
        self.send(Message::Ping(payload.into())).await
    }

    /// Bytes queued but not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.driver.conn.buffered_amount()
    }

    /// Whether another message has already arrived and `recv` will return it without waiting.
    pub fn has_pending_messages(&mut self) -> bool {
        self.driver.conn.has_pending_events()
    }

    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.driver.conn.protocol()
    }

    /// Whether permessage-deflate is on.
    pub fn is_compressed(&self) -> bool {
        self.driver.conn.is_compressed()
    }

    /// How the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.driver.conn.close_reason()
    }

    /// The engine, for inspection.
    pub fn connection(&self) -> &Connection {
        &self.driver.conn
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.driver.io
    }

    /// Run `f` on the driver (the split halves have the same accessors, over their lock).
    #[cfg(feature = "pubsub")]
    pub(crate) fn driver_ref<R>(&self, f: impl FnOnce(&Driver<S>) -> R) -> R {
        f(&self.driver)
    }

    /// Run `f` on the driver, mutably.
    #[cfg(feature = "pubsub")]
    pub(crate) fn driver_mut<R>(&mut self, f: impl FnOnce(&mut Driver<S>) -> R) -> R {
        f(&mut self.driver)
    }

    /// The driver, for the split halves (see `split.rs`, which also defines
    /// [`split`](Self::split)).
    pub(crate) fn into_driver(self) -> Driver<S> {
        self.driver
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().driver.poll_message(&mut Own, cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().driver.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        self.get_mut().driver.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().driver.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().driver.poll_close(&mut Own, cx)
    }
}
