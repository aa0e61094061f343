//! The driver: a [`Connection`] and the socket it runs over, driven in the engine's order
//! (events, writes, timers, reads; see the `wsx_proto` crate documentation). [`WebSocket`]
//! owns one; split halves share one, the reader bringing its own read half.
//!
//! [`WebSocket`]: crate::WebSocket

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf},
    time::Sleep,
};
use wsx_proto::{CloseCode, CloseReason, Connection, Drained, Event, Frame, Message, SendError};

#[cfg(feature = "pubsub")]
use crate::pubsub::Subscriber;
use crate::{
    error::{Error, Result},
    shutdown::Watch,
};

/// Without the `pubsub` feature a driver never has a subscriber: this type has no values, so
/// `Option<Subscriber>` takes no room and the calls below compile to nothing.
#[cfg(not(feature = "pubsub"))]
pub(crate) enum Subscriber {}

#[cfg(not(feature = "pubsub"))]
impl Subscriber {
    fn pull(&self, _: &mut Connection) -> Option<(CloseCode, String)> {
        match *self {}
    }

    fn written(&self, _: usize) {
        match *self {}
    }

    fn wait(&self, _: &std::task::Waker, _: bool) -> bool {
        match *self {}
    }
}

/// The current time, from tokio's clock so that paused-time tests can move it.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// How far the connection is from its end, as the driver sees it.
#[derive(Debug)]
enum End {
    /// Reading and writing.
    Running,
    /// Our side of the socket is shut (the engine asked for it after the close or a failure, or
    /// the socket failed): what remains is reading until the engine's `Event::Closed`.
    WriteShut {
        /// The socket's error, if it failed, to report after the events queued before it.
        error: Option<io::Error>,
        /// The engine's failure was reported already (see `Driver::early_failure`).
        reported: bool,
    },
    /// `Event::Closed` was taken: the stream is over.
    Done {
        /// The socket's error, still to report once.
        error: Option<io::Error>,
        reported: bool,
    },
}

/// Where a driver's bytes come from: its own stream ([`Own`]), or the read half a split reader
/// owns.
pub(crate) trait Source<S> {
    /// Read once into `buf`, as [`tokio_util::io::poll_read_buf`] does.
    fn poll_read(&mut self, io: &mut S, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;
}

/// A driver reading from its own stream.
pub(crate) struct Own;

impl<S: AsyncRead + Unpin> Source<S> for Own {
    fn poll_read(&mut self, io: &mut S, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
    }
}

impl<S: AsyncRead> Source<WriteHalf<S>> for ReadHalf<S> {
    fn poll_read(&mut self, _: &mut WriteHalf<S>, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }
}

/// The socket (or its write half), the engine, the timer and the close signal.
pub(crate) struct Driver<S> {
    pub(crate) io: S,
    pub(crate) conn: Connection,
    sleep: Option<Pin<Box<Sleep>>>,
    end: End,
    /// A close signal someone installed (the server's shutdown): when it fires, the connection
    /// closes itself with 1001 (going away).
    close_on: Option<Watch>,
    /// The connection's membership of a hub, once it subscribed to a topic.
    pub(crate) subscriber: Option<Subscriber>,
    /// Counters for the `metrics` feature (nothing without it).
    pub(crate) metrics: crate::metrics::Counters,
}

impl<S> Driver<S> {
    pub(crate) fn new(io: S, conn: Connection) -> Self {
        let metrics = crate::metrics::Counters::new();
        Self { io, conn, sleep: None, end: End::Running, close_on: None, subscriber: None, metrics }
    }

    /// Close with 1001 once `watch` fires.
    #[cfg(feature = "server")]
    pub(crate) fn close_on(&mut self, watch: Watch) {
        self.close_on = Some(watch);
    }

    /// The same driver over another stream (split halves taken apart or put together).
    pub(crate) fn map_io<T>(self, f: impl FnOnce(S) -> T) -> Driver<T> {
        let Self { io, conn, sleep, end, close_on, subscriber, metrics } = self;
        Driver { io: f(io), conn, sleep, end, close_on, subscriber, metrics }
    }

    /// Whether the stream is over.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.end, End::Done { .. })
    }
}

impl<S: AsyncWrite + Unpin> Driver<S> {
    /// The close signal: once it fires, start the closing handshake with 1001 (once), then keep
    /// driving it as usual. `cx` registers for the signal; without it, only look. Returns
    /// whether it fired in this call.
    fn poll_close_signal(&mut self, cx: Option<&mut Context<'_>>) -> bool {
        let Some(watch) = &mut self.close_on else { return false };
        let fired = match cx {
            Some(cx) => watch.poll_fired(cx),
            None => watch.is_fired(),
        };
        if fired {
            // Wake the task registered for the signal (the reader, when split) to write the close.
            if let Some(watch) = self.close_on.take() {
                watch.wake();
            }
            if !self.is_done() && self.conn.is_open() {
                // Cannot fail: the connection is open and 1001 is a sendable code.
                let _ = self.conn.close(CloseCode::AWAY, "server shutting down", now());
                self.metrics.closing();
            }
        }
        fired
    }

    /// Write what the engine has queued, and half-close when it asks. `Ready(Ok)` once the
    /// queue is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wrote = false;
        let result = loop {
            self.pull_published();
            let out = self.conn.transmit();
            if !out.has_remaining() {
                break Poll::Ready(Ok(()));
            }
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
                    self.metrics.wrote(n);
                    wrote = true;
                }
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if wrote && let Some(subscriber) = &self.subscriber {
            subscriber.written(self.conn.buffered_amount());
        }
        ready!(result)?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        if self.conn.wants_shutdown() && matches!(self.end, End::Running) {
            // The peer may already have reset the connection; the close is done either way.
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
            self.end = End::WriteShut { error: None, reported: false };
        }
        Poll::Ready(Ok(()))
    }

    /// Move what was published to the connection's topics into its write queue (while under
    /// the high-water mark); close it with 1008 if it went over its hub's limit, or with 1012
    /// if messages of its topics were lost between nodes.
    fn pull_published(&mut self) {
        let Some(subscriber) = &self.subscriber else { return };
        if let Some((code, reason)) = subscriber.pull(&mut self.conn) {
            // Cannot fail: 1008 and 1012 are sendable codes and the reasons are short; a close
            // already under way is left as it is.
            let _ = self.start_close(code, &reason);
        }
    }

    /// About to wait: have publishers wake this task. Returns whether there is something to
    /// do first (then do not wait): frames to pull while the write queue has room, or an
    /// overflow to close for.
    fn wait_published(&mut self, cx: &Context<'_>) -> bool {
        let blocked = self.conn.is_write_blocked();
        self.subscriber.as_ref().is_some_and(|s| s.wait(cx.waker(), blocked))
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

    /// Charge the server's memory budget (if the connection belongs to a server with one) for
    /// what the connection holds before reading more; past the budget, fail the connection with
    /// 1013, which frees what it was receiving. Returns whether it is within the budget.
    #[inline]
    fn charge_memory(&mut self) -> bool {
        let Some(watch) = &mut self.close_on else { return true };
        if watch.charge(self.conn.memory_held()) {
            return true;
        }
        self.conn.fail_overloaded(now());
        // Release what was freed.
        watch.charge(self.conn.memory_held());
        false
    }

    /// Read once into the engine's buffer.
    fn poll_read_in(&mut self, src: &mut impl Source<S>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let buf = self.conn.read_buffer();
        let n = ready!(src.poll_read(&mut self.io, cx, buf))?;
        self.metrics.read(n, &mut self.conn);
        if n == 0 {
            self.conn.receive_eof(now());
        } else {
            self.conn.receive_buffered(now());
        }
        Poll::Ready(Ok(()))
    }

    /// Drive the connection until it has an event, or it ends (`None`).
    pub(crate) fn poll_event(&mut self, src: &mut impl Source<S>, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        self.poll_event_with(src, cx, &mut |_| Drained::All)
    }

    /// [`poll_event`](Self::poll_event), calling `drain` on everything received before events
    /// are taken: with [`Connection::drain_messages`] inside, data messages never come out as
    /// events. When `drain` stops at the write queue's high-water mark, the queue is written
    /// out before anything else is read or taken.
    fn poll_event_with<D>(
        &mut self,
        src: &mut impl Source<S>,
        cx: &mut Context<'_>,
        drain: &mut D,
    ) -> Poll<Option<Result<Event>>>
    where
        D: FnMut(&mut Connection) -> Drained,
    {
        // Only look here; register for the signal when about to wait.
        self.poll_close_signal(None);
        loop {
            if let End::Done { error, .. } = &mut self.end {
                return Poll::Ready(error.take().map(|e| Err(e.into())));
            }
            let blocked = drain(&mut self.conn) == Drained::WriteBlocked;
            if !blocked && let Some(event) = self.conn.next_event() {
                match &event {
                    Event::Message(message) => self.metrics.received(message),
                    Event::Closed(reason) => {
                        self.metrics.closed(reason, &mut self.conn);
                        // Flush the last bytes and shut down; errors no longer matter.
                        let _ = self.poll_write_out(cx);
                        let (error, reported) = match std::mem::replace(&mut self.end, End::Running) {
                            End::WriteShut { error, reported } | End::Done { error, reported } => (error, reported),
                            End::Running => (None, false),
                        };
                        self.end = End::Done { error, reported };
                        // Leave every topic now rather than when the stream is dropped.
                        self.subscriber = None;
                    }
                    // What a control frame made the connection owe the peer (a pong, the close
                    // echo) goes out now, not whenever the application polls next.
                    _ => {
                        if let Poll::Ready(Err(e)) = self.poll_write_out(cx) {
                            self.io_failed(e);
                        }
                    }
                }
                return Poll::Ready(Some(Ok(event)));
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
                if self.poll_close_signal(Some(cx)) {
                    continue;
                }
                // Published frames wait for the socket too; an overflow does not.
                if self.wait_published(cx) {
                    continue;
                }
                return Poll::Pending;
            }
            if !self.charge_memory() {
                continue;
            }
            match self.poll_read_in(src, cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => {
                    self.io_failed(e);
                    continue;
                }
                Poll::Pending => {
                    if self.poll_close_signal(Some(cx)) || self.wait_published(cx) {
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
        match &mut self.end {
            End::Running => {
                let error = (!closed_by_peer).then_some(e);
                self.end = End::WriteShut { error, reported: false };
            }
            End::WriteShut { error, .. } => {
                if !closed_by_peer && error.is_none() {
                    *error = Some(e);
                }
            }
            End::Done { .. } => {}
        }
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
    pub(crate) fn poll_message(
        &mut self,
        src: &mut impl Source<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message>>> {
        self.poll_message_with(src, cx, &mut |_| Drained::All)
    }

    /// [`poll_message`](Self::poll_message), with data messages handed to `handle` borrowed
    /// instead of returned (see [`WebSocket::recv_each`](crate::WebSocket::recv_each)).
    pub(crate) fn poll_each<F>(
        &mut self,
        src: &mut impl Source<S>,
        cx: &mut Context<'_>,
        handle: &mut F,
    ) -> Poll<Option<Result<Message>>>
    where
        F: FnMut(wsx_proto::MessageRef<'_>, &mut wsx_proto::Replies<'_>),
    {
        // Without the feature: the drain without counts.
        if !cfg!(feature = "metrics") {
            return self.poll_message_with(src, cx, &mut |conn: &mut Connection| conn.drain_messages(&mut *handle));
        }
        // With it, counted or not, one path: a few instructions per batch for a connection not
        // counted, where a second copy of the whole loop made the two differ by more than
        // the counting (in code layout; docs/performance.md, "The cost of metrics").
        let mut counts = wsx_proto::DrainCounts::default();
        let polled = self.poll_message_with(src, cx, &mut |conn: &mut Connection| {
            conn.drain_messages_counted(&mut *handle, &mut counts)
        });
        self.metrics.drained(&counts);
        polled
    }

    fn poll_message_with<D>(
        &mut self,
        src: &mut impl Source<S>,
        cx: &mut Context<'_>,
        drain: &mut D,
    ) -> Poll<Option<Result<Message>>>
    where
        D: FnMut(&mut Connection) -> Drained,
    {
        loop {
            let Poll::Ready(event) = self.poll_event_with(src, cx, drain) else {
                return match self.early_failure() {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => Poll::Pending,
                };
            };
            match event {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(Event::Closed(reason))) => {
                    let End::Done { error, reported } = &mut self.end else { unreachable!("Closed ends the stream") };
                    if let Some(e) = error.take() {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    if *reported {
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
        let End::WriteShut { reported, .. } = &mut self.end else { return None };
        if *reported || self.conn.buffered_amount() > 0 {
            return None;
        }
        let error = self.conn.close_reason()?.error?;
        *reported = true;
        close_error(CloseReason { received: None, sent: None, error: Some(error) })
    }

    /// Wait until the write queue is under the high-water mark.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.is_done() {
            return Poll::Ready(Err(SendError::Closed.into()));
        }
        // Only look: in split halves the reader's task is the one registered for the signal.
        let _ = self.poll_close_signal(None);
        while self.conn.is_write_blocked() {
            match self.poll_write_out(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                Poll::Pending => {
                    // A peer that takes nothing meets the send deadline here too.
                    if self.conn.is_write_blocked() && self.poll_timer(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if self.conn.is_finished() {
                        return Poll::Ready(Err(self.send_failure()));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// What a sender meets when the engine ended the connection while it waited (the send
    /// deadline): the engine's failure.
    fn send_failure(&self) -> Error {
        match self.conn.close_reason().and_then(|r| r.error) {
            Some(e) => e.into(),
            None => SendError::Closed.into(),
        }
    }

    /// Queue `message` once the write queue is under the high-water mark: the body of every
    /// `feed`. `message` is taken when it is queued.
    pub(crate) fn poll_feed(&mut self, cx: &mut Context<'_>, message: &mut Option<Message>) -> Poll<Result<()>> {
        ready!(self.poll_ready(cx))?;
        // Invariant: a `feed` future is done once it has queued its message, and a future is
        // not polled again after it returned `Ready`.
        let message = message.take().expect("feed polled after completion");
        Poll::Ready(self.start_send(message))
    }

    /// Queue `message` (as [`poll_feed`](Self::poll_feed)), then write everything out: the body
    /// of every `send`.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>, message: &mut Option<Message>) -> Poll<Result<()>> {
        if message.is_some() {
            ready!(self.poll_feed(cx, message))?;
        }
        self.poll_flush(cx)
    }

    /// Queue a message (a close starts the closing handshake).
    pub(crate) fn start_send(&mut self, message: Message) -> Result<()> {
        if self.is_done() {
            return Err(SendError::Closed.into());
        }
        if let Message::Close(frame) = message {
            let (code, reason) = match &frame {
                Some(f) => (f.code, f.reason.as_str()),
                None => (CloseCode::NO_STATUS, ""),
            };
            self.metrics.closing();
            return Ok(self.conn.close(code, reason, now())?);
        }
        self.metrics.sent(&message);
        Ok(self.conn.send(message)?)
    }

    /// Queue a text or binary message, choosing whether to compress it.
    pub(crate) fn start_send_compressed(&mut self, message: Message, compress: bool) -> Result<()> {
        if self.is_done() {
            return Err(SendError::Closed.into());
        }
        self.metrics.sent(&message);
        Ok(self.conn.send_compressed(message, compress)?)
    }

    /// Queue one frame of a fragmented message.
    pub(crate) fn start_send_frame(&mut self, frame: Frame) -> Result<()> {
        if self.is_done() {
            return Err(SendError::Closed.into());
        }
        Ok(self.conn.send_frame(frame)?)
    }

    /// Start the closing handshake with `code` and `reason`, unless it started already.
    pub(crate) fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        if !self.is_done() && self.conn.is_open() {
            self.metrics.closing();
            self.conn.close(code, reason, now())?;
        }
        Ok(())
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Pending: the socket wakes this task (when split, the reader may take the socket's
        // write waker over; it then wakes the writer, see `split.rs`).
        let result = loop {
            match self.poll_write_out(cx) {
                Poll::Ready(result) => break result,
                // Past the high-water mark a peer that takes nothing meets the send deadline.
                Poll::Pending if !self.conn.is_write_blocked() || self.poll_timer(cx).is_pending() => {
                    return Poll::Pending;
                }
                Poll::Pending if self.conn.is_finished() => return Poll::Ready(Err(self.send_failure())),
                Poll::Pending => {}
            }
        };
        match result {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) if self.is_done() => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(self.fail_io(e))),
        }
    }

    /// Close with 1000 (unless a close was already sent) and drive the closing handshake to
    /// its end, discarding what still arrives.
    pub(crate) fn poll_close(&mut self, src: &mut impl Source<S>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.start_close(CloseCode::NORMAL, "")?;
        loop {
            match ready!(self.poll_event(src, cx)) {
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
