//! [`WebSocket`]: a [`Connection`] driven over any `AsyncRead + AsyncWrite`.

use std::{
    future::poll_fn,
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker, ready},
};

use bytes::Buf;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Sleep,
};
use wsx_proto::{
    CloseCode, CloseFrame, CloseReason, Connection, Drained, Event, Frame, Message, MessageRef, Replies, SendError,
};

use crate::error::{Error, Result};

/// The current time, from tokio's clock so that paused-time tests can move it.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// The socket, the engine and the timer, driven in quinn's order: events, writes, timers,
/// reads. Owned by a [`WebSocket`], or shared by its split halves.
pub(crate) struct Driver<S> {
    pub(crate) io: S,
    pub(crate) conn: Connection,
    sleep: Option<Pin<Box<Sleep>>>,
    shutdown_done: bool,
    /// A socket error that ended the connection; reported once.
    io_error: Option<io::Error>,
    /// Set once the stream has ended (after `Event::Closed`, or an I/O error).
    done: bool,
    /// The writer half waiting for the queue to drain, when split.
    writer_waker: Option<Waker>,
    /// The connection's failure has been handed to the application already.
    failure_reported: bool,
    /// Server shutdown: when it fires, the connection closes itself with 1001.
    #[cfg(feature = "server")]
    away: Option<crate::server::Away>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(io: S, conn: Connection) -> Self {
        Self {
            io,
            conn,
            sleep: None,
            shutdown_done: false,
            io_error: None,
            done: false,
            writer_waker: None,
            failure_reported: false,
            #[cfg(feature = "server")]
            away: None,
        }
    }

    /// Server shutdown hook: once `away` fires, start the closing handshake with 1001 (once),
    /// then keep driving it as usual. `cx` registers for the signal; without it, only look.
    /// Returns whether it fired in this call.
    #[cfg(feature = "server")]
    fn poll_away(&mut self, cx: Option<&mut Context<'_>>) -> bool {
        let Some(away) = &mut self.away else { return false };
        let fired = match cx {
            Some(cx) => away.poll_fired(cx),
            None => away.is_fired(),
        };
        if fired {
            // Wake the task registered for the signal (the reader, when split) to write the close.
            if let Some(away) = self.away.take() {
                away.wake();
            }
            if !self.done && self.conn.is_open() {
                // Cannot fail: the connection is open and 1001 is a sendable code.
                let _ = self.conn.close(CloseCode::AWAY, "server shutting down", now());
            }
        }
        fired
    }

    /// Write what the engine has queued, and half-close when it asks. `Ready(Ok)` once the
    /// queue is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wrote = false;
        let result = loop {
            // Checked first: an idle connection's `transmit` would take state it does not need.
            if self.conn.buffered_amount() == 0 {
                break Poll::Ready(Ok(()));
            }
            let out = self.conn.transmit();
            let io = Pin::new(&mut self.io);
            // One slice goes out with a plain write (`send` on a socket), which costs the
            // kernel less than `writev`.
            let polled = if out.chunk().len() < out.remaining() && io.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = out.chunks_vectored(&mut slices);
                io.poll_write_vectored(cx, &slices[..n])
            } else {
                io.poll_write(cx, out.chunk())
            };
            match polled {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.conn.transmit().advance(n);
                    wrote = true;
                }
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if wrote && let Some(w) = self.writer_waker.take() {
            w.wake();
        }
        ready!(result)?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        if self.conn.wants_shutdown() && !self.shutdown_done {
            // The peer may already have reset the connection; the close is done either way.
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
            self.shutdown_done = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Run the engine's timers. `Ready` when one fired (the caller loops), `Pending` with the
    /// waker registered otherwise.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.conn.deadline() else {
            self.sleep = None;
            return Poll::Pending;
        };
        let current = now();
        if deadline <= current {
            self.conn.handle_timeout(current);
            return Poll::Ready(());
        }
        let at = tokio::time::Instant::from_std(deadline);
        match &mut self.sleep {
            Some(sleep) if sleep.deadline() == at => {}
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        // Invariant: set just above.
        let sleep = self.sleep.as_mut().expect("sleep armed");
        ready!(sleep.as_mut().poll(cx));
        self.conn.handle_timeout(now());
        Poll::Ready(())
    }

    /// Read once into the engine's buffer.
    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let buf = self.conn.read_buffer();
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf))?;
        if n == 0 {
            self.conn.receive_eof(now());
        } else {
            self.conn.receive_buffered(now());
        }
        Poll::Ready(Ok(()))
    }

    /// Drive the connection until it has an event, or it ends (`None`).
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        self.poll_event_with(cx, &mut |_| Drained::All)
    }

    /// [`poll_event`](Self::poll_event), calling `drain` on everything received before events
    /// are taken: with [`Connection::drain_messages`] inside, data messages never come out as
    /// events. When `drain` stops at the write queue's high-water mark, the queue is written
    /// out before anything else is read or taken.
    fn poll_event_with<D>(&mut self, cx: &mut Context<'_>, drain: &mut D) -> Poll<Option<Result<Event>>>
    where
        D: FnMut(&mut Connection) -> Drained,
    {
        // Only look here; register for the signal when about to wait.
        #[cfg(feature = "server")]
        self.poll_away(None);
        loop {
            let blocked = !self.done && drain(&mut self.conn) == Drained::WriteBlocked;
            if !blocked && let Some(event) = self.conn.next_event() {
                if let Event::Closed(_) = event {
                    self.done = true;
                    // Flush the last bytes and shut down; errors no longer matter.
                    let _ = self.poll_write_out(cx);
                }
                return Poll::Ready(Some(Ok(event)));
            }
            if self.done {
                return Poll::Ready(self.io_error.take().map(|e| Err(e.into())));
            }
            match self.poll_write_out(cx) {
                Poll::Ready(Err(e)) => {
                    self.io_failed(e);
                    continue;
                }
                // Written out, or at least under the mark again: hand out more.
                _ if blocked && !self.conn.is_write_blocked() => continue,
                _ => {}
            }
            if self.poll_timer(cx).is_ready() {
                continue;
            }
            if blocked {
                // Wait for the socket to take more (its waker is registered) before reading.
                #[cfg(feature = "server")]
                if self.poll_away(Some(cx)) {
                    continue;
                }
                return Poll::Pending;
            }
            match self.poll_read_in(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => {
                    self.io_failed(e);
                    continue;
                }
                Poll::Pending => {
                    #[cfg(feature = "server")]
                    if self.poll_away(Some(cx)) {
                        continue;
                    }
                    // Idle: hold no read buffer while waiting (kept if it holds data).
                    self.conn.release_buffers();
                    return Poll::Pending;
                }
            }
        }
    }

    /// The socket failed. Treat it as the end of the connection: events already queued are
    /// still delivered, then the error, unless the peer had already sent its close frame
    /// (a peer that resets the connection right after closing has still closed).
    fn io_failed(&mut self, e: io::Error) {
        let closed_by_peer = self.conn.close_reason().is_some_and(|r| r.received.is_some());
        if !closed_by_peer && self.io_error.is_none() {
            self.io_error = Some(e);
        }
        self.shutdown_done = true;
        self.conn.receive_eof(now());
    }

    /// A socket error on the sending side: end the connection, and report the error to the
    /// sender now (the reader sees it too).
    fn fail_io(&mut self, e: io::Error) -> Error {
        let report = io::Error::new(e.kind(), e.to_string());
        self.io_failed(e);
        report.into()
    }

    /// The next message: data, ping, pong or the peer's close; `None` once the connection has
    /// ended cleanly.
    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.poll_message_with(cx, &mut |_| Drained::All)
    }

    /// [`poll_message`](Self::poll_message), with data messages handed to `handle` borrowed
    /// instead of returned (see [`WebSocket::recv_each`]).
    pub(crate) fn poll_each<F>(&mut self, cx: &mut Context<'_>, handle: &mut F) -> Poll<Option<Result<Message>>>
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
    {
        self.poll_message_with(cx, &mut |conn: &mut Connection| conn.drain_messages(&mut *handle))
    }

    fn poll_message_with<D>(&mut self, cx: &mut Context<'_>, drain: &mut D) -> Poll<Option<Result<Message>>>
    where
        D: FnMut(&mut Connection) -> Drained,
    {
        loop {
            let Poll::Ready(event) = self.poll_event_with(cx, drain) else {
                return match self.early_failure() {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => Poll::Pending,
                };
            };
            match event {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(Event::Closed(reason))) => {
                    if let Some(e) = self.io_error.take() {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    if self.failure_reported {
                        continue;
                    }
                    if let Some(e) = close_error(*reason) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Ok(event)) => {
                    if let Some(item) = event_to_item(event) {
                        return Poll::Ready(Some(item));
                    }
                }
            }
        }
    }

    /// A failure to report now rather than when the connection finishes: once the engine has
    /// failed the connection and our close frame and half-close are written, the application
    /// learns at once, instead of after the peer's TCP close or the close timeout. Polling
    /// again keeps draining the connection to its end.
    fn early_failure(&mut self) -> Option<Error> {
        if self.failure_reported || self.conn.buffered_amount() > 0 || !self.shutdown_done {
            return None;
        }
        let error = self.conn.close_reason()?.error?;
        self.failure_reported = true;
        close_error(CloseReason { received: None, sent: None, error: Some(error) })
    }

    /// Wait until the write queue is under the high-water mark.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.done {
            return Poll::Ready(Err(SendError::Closed.into()));
        }
        // Only look: in split halves the reader's task is the one registered for the signal.
        #[cfg(feature = "server")]
        let _ = self.poll_away(None);
        while self.conn.is_write_blocked() {
            match self.poll_write_out(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                Poll::Pending => {
                    if self.conn.is_write_blocked() {
                        self.writer_waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn start_send(&mut self, message: Message) -> Result<()> {
        if self.done {
            return Err(SendError::Closed.into());
        }
        if let Message::Close(frame) = message {
            let (code, reason) = match &frame {
                Some(f) => (f.code, f.reason.as_str()),
                None => (CloseCode::NO_STATUS, ""),
            };
            return Ok(self.conn.close(code, reason, now())?);
        }
        Ok(self.conn.send(message)?)
    }

    pub(crate) fn start_send_compressed(&mut self, message: Message, compress: bool) -> Result<()> {
        if self.done {
            return Err(SendError::Closed.into());
        }
        Ok(self.conn.send_compressed(message, compress)?)
    }

    pub(crate) fn start_send_frame(&mut self, frame: Frame) -> Result<()> {
        if self.done {
            return Err(SendError::Closed.into());
        }
        Ok(self.conn.send_frame(frame)?)
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Poll::Ready(result) = self.poll_write_out(cx) else {
            // The socket keeps one write waker; when split, the reader may take it over by
            // writing a pong. Whoever writes next wakes this task (see `poll_write_out`).
            self.writer_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        match result {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) if self.done => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(self.fail_io(e))),
        }
    }

    /// Close with 1000 (unless a close was already sent) and drive the closing handshake to
    /// its end, discarding what still arrives.
    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if !self.done && self.conn.is_open() {
            self.conn.close(CloseCode::NORMAL, "", now())?;
        }
        loop {
            match ready!(self.poll_event(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) if e.is_io() => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(e)),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// What the stream yields for an event, if anything.
fn event_to_item(event: Event) -> Option<Result<Message>> {
    match event {
        Event::Message(m) => Some(Ok(m)),
        Event::Ping(p) => Some(Ok(Message::Ping(p))),
        Event::Pong(p) => Some(Ok(Message::Pong(p))),
        Event::Closing(frame) => {
            let frame = (frame.code != CloseCode::NO_STATUS).then_some(frame);
            Some(Ok(Message::Close(frame)))
        }
        Event::Closed(reason) => close_error(*reason).map(Err),
        _ => None,
    }
}

/// A failure worth reporting when the connection ends; `None` for a normal end.
fn close_error(reason: CloseReason) -> Option<Error> {
    match reason.error {
        // The peer closed TCP after its close frame without waiting for ours: done anyway.
        Some(wsx_proto::ProtocolError::UnexpectedEof) if reason.received.is_some() => None,
        Some(wsx_proto::ProtocolError::CloseTimeout) if reason.sent.is_some() => None,
        Some(e) => Some(e.into()),
        None => None,
    }
}

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

    /// Have the connection close itself with 1001 when the server shuts down.
    #[cfg(feature = "server")]
    pub(crate) fn set_away(&mut self, away: crate::server::Away) {
        self.driver.away = Some(away);
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
        poll_fn(|cx| self.driver.poll_message(cx).map(Option::transpose))
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
        poll_fn(move |cx| self.driver.poll_each(cx, &mut handle).map(Option::transpose))
    }

    /// Send a message and write it out. Waits while the write queue is over
    /// `write_high_water`.
    pub fn send(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<()>> + '_ {
        let message = message.into();
        async move {
            self.feed(message).await?;
            self.flush().await
        }
    }

    /// Queue a message without writing it yet: several fed messages go out in one write at
    /// the next [`flush`](Self::flush), `send`, or `recv`.
    pub fn feed(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<()>> + '_ {
        let mut message = Some(message.into());
        poll_fn(move |cx| {
            ready!(self.driver.poll_ready(cx))?;
            // Invariant: the future is done once it has sent the message, and a future is not
            // polled again after it returned `Ready`.
            let message = message.take().expect("feed polled after completion");
            Poll::Ready(self.driver.start_send(message))
        })
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
        if !self.driver.done && self.driver.conn.is_open() {
            self.driver.conn.close(code, reason, now())?;
        }
        poll_fn(|cx| self.driver.poll_close(cx)).await
    }

    /// Send a ping.
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

    /// Split into a reader and a writer that can live in different tasks.
    ///
    /// Both halves share the connection: pings are still answered and the closing handshake
    /// still runs while only the reader is polled, and the writer's close is completed by the
    /// reader. Each half takes a short, uncontended lock per operation.
    pub fn split(self) -> (WsReader<S>, WsWriter<S>) {
        let shared = Arc::new(Mutex::new(self.driver));
        (WsReader { shared: shared.clone() }, WsWriter { shared })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().driver.poll_message(cx)
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
        self.get_mut().driver.poll_close(cx)
    }
}

type Shared<S> = Arc<Mutex<Driver<S>>>;

fn lock<S>(shared: &Shared<S>) -> MutexGuard<'_, Driver<S>> {
    // A panic while holding the lock leaves the driver in a consistent state (every method
    // finishes its state change before it can panic), so a poisoned lock is still usable.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The reading half of a split [`WebSocket`]: a [`Stream`] of messages.
///
/// It also writes what the connection owes the peer (pongs, the close echo), so keep polling
/// it for as long as the connection lives.
pub struct WsReader<S> {
    shared: Shared<S>,
}

/// The writing half of a split [`WebSocket`]: a [`Sink`] of messages.
pub struct WsWriter<S> {
    shared: Shared<S>,
}

impl<S> std::fmt::Debug for WsReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader").finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for WsWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsWriter").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReader<S> {
    /// The next message; see [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        poll_fn(|cx| lock(&self.shared).poll_message(cx)).await.transpose()
    }

    /// Whether `other` is the writer split from the same connection.
    pub fn is_pair_of(&self, other: &WsWriter<S>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Put the halves back together.
    ///
    /// Fails, giving both back, if they come from different connections.
    pub fn unsplit(self, writer: WsWriter<S>) -> std::result::Result<WebSocket<S>, (Self, WsWriter<S>)> {
        if !self.is_pair_of(&writer) {
            return Err((self, writer));
        }
        drop(writer);
        match Arc::try_unwrap(self.shared) {
            Ok(mutex) => Ok(WebSocket { driver: mutex.into_inner().unwrap_or_else(|p| p.into_inner()) }),
            // Invariant: the writer was dropped just above and the halves are the only owners.
            Err(_) => unreachable!("both halves were given back"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriter<S> {
    /// Send a message and write it out; see [`WebSocket::send`].
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queue a message without writing it yet.
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        poll_fn(|cx| lock(&self.shared).poll_ready(cx)).await?;
        lock(&self.shared).start_send(message)
    }

    /// Write out everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| lock(&self.shared).poll_flush(cx)).await
    }

    /// Send one frame of a fragmented message; see [`WebSocket::send_frame`].
    pub async fn send_frame(&mut self, frame: Frame) -> Result<()> {
        poll_fn(|cx| lock(&self.shared).poll_ready(cx)).await?;
        lock(&self.shared).start_send_frame(frame)?;
        self.flush().await
    }

    /// Send a close frame and write it out. The reader sees the peer's answer and then ends.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        let frame = CloseFrame::new(code, reason);
        self.send(Message::Close(Some(frame))).await
    }

    /// Bytes queued but not yet written.
    pub fn buffered_amount(&self) -> usize {
        lock(&self.shared).conn.buffered_amount()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsReader<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        lock(&self.shared).poll_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsWriter<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        lock(&self.shared).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        lock(&self.shared).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        lock(&self.shared).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Send our close and flush it; the reader completes the handshake.
        let mut driver = lock(&self.shared);
        if !driver.done && driver.conn.is_open() {
            driver.conn.close(CloseCode::NORMAL, "", now())?;
        }
        driver.poll_flush(cx)
    }
}
