//! The two halves of a split [`WebSocket`](crate::WebSocket): a reader and a writer that can
//! live in different tasks.
//!
//! The reader owns the read half of the stream (`tokio::io::split`, so TLS streams split too)
//! and reads with nothing else held but the engine. The write half stays with the engine in the
//! state both halves share: whatever the reader parses may make the connection owe the peer a
//! pong or the close echo, and those must go out even while the writer is idle, so the reader
//! writes them itself when the writer is not writing. Data messages go out from the writer with
//! one short lock per call, as on the unsplit `WebSocket` (`docs/performance.md` compares them).

use std::{
    future::poll_fn,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use wsx_proto::{CloseCode, CloseFrame, CloseReason, Frame, Message, MessageRef, Replies};

use crate::{
    driver::Driver,
    error::{Error, Result},
    stream::WebSocket,
};

/// The state the halves share: the engine, the write half, the timer.
type Shared<S> = Arc<Mutex<Halves<S>>>;

struct Halves<S> {
    driver: Driver<WriteHalf<S>>,
    /// The writer's task, waiting for the write queue to drain. The socket keeps one write
    /// waker, which the reader takes over whenever it writes a pong or the close echo, so the
    /// reader wakes the writer once the queue is under its high-water mark again.
    writer: Option<Waker>,
}

impl<S> Halves<S> {
    /// Run one of the writer's polls; remember its task if it has to wait.
    fn poll_writer<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Driver<WriteHalf<S>>, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        let polled = f(&mut self.driver, cx);
        if polled.is_pending() && !self.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.writer = Some(cx.waker().clone());
        }
        polled
    }

    /// Run one of the reader's polls; wake the writer if the write queue has room now.
    fn poll_reader<R>(&mut self, f: impl FnOnce(&mut Driver<WriteHalf<S>>) -> Poll<R>) -> Poll<R> {
        let polled = f(&mut self.driver);
        if self.writer.is_some()
            && !self.driver.conn.is_write_blocked()
            && let Some(writer) = self.writer.take()
        {
            writer.wake();
        }
        polled
    }
}

fn lock<S>(shared: &Shared<S>) -> MutexGuard<'_, Halves<S>> {
    // A panic while holding the lock leaves the driver in a consistent state (every method
    // finishes its state change before it can panic), so a poisoned lock is still usable.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Split into a reader and a writer that can live in different tasks.
    ///
    /// The reader owns the read half of the stream and reads without waiting for the writer.
    /// The writer's half is shared with the engine, because what the reader owes the peer (a
    /// pong, the close echo) must go out even while the writer is idle: the reader writes it
    /// when the writer is not writing. Each half takes a short, uncontended lock per operation.
    pub fn split(self) -> (WsReader<S>, WsWriter<S>) {
        let mut read = None;
        let driver = self.into_driver().map_io(|io| {
            let (r, w) = tokio::io::split(io);
            read = Some(r);
            w
        });
        // Invariant: `map_io` called the closure.
        let read = read.expect("split the stream");
        let shared = Arc::new(Mutex::new(Halves { driver, writer: None }));
        (WsReader { read, shared: shared.clone() }, WsWriter { shared })
    }
}

/// The reading half of a split [`WebSocket`]: a [`Stream`] of messages.
///
/// It also writes what the connection owes the peer (pongs, the close echo), so keep polling
/// it for as long as the connection lives.
pub struct WsReader<S> {
    read: ReadHalf<S>,
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
    pub fn recv(&mut self) -> impl Future<Output = Result<Option<Message>>> + '_ {
        poll_fn(|cx| lock(&self.shared).poll_reader(|d| d.poll_message(&mut self.read, cx)).map(Option::transpose))
    }

    /// Hand every text and binary message to `handle`, borrowed, with [`Replies`] to answer
    /// it; return the next message of another kind. See [`WebSocket::recv_each`]: the replies
    /// go out through the shared writing side, in order with the writer's messages.
    pub fn recv_each<F>(&mut self, mut handle: F) -> impl Future<Output = Result<Option<Message>>>
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
    {
        poll_fn(move |cx| {
            let read = &mut self.read;
            lock(&self.shared).poll_reader(|d| d.poll_each(read, cx, &mut handle)).map(Option::transpose)
        })
    }

    /// Whether another message has already arrived and `recv` will return it without waiting.
    pub fn has_pending_messages(&mut self) -> bool {
        lock(&self.shared).driver.conn.has_pending_events()
    }

    /// How the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared).driver.conn.close_reason()
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
        let Self { read, shared } = self;
        match Arc::try_unwrap(shared) {
            Ok(mutex) => {
                let driver = mutex.into_inner().unwrap_or_else(|p| p.into_inner()).driver;
                Ok(WebSocket::from_driver(driver.map_io(|write| read.unsplit(write))))
            }
            // Invariant: the writer was dropped just above and the halves are the only owners.
            Err(_) => unreachable!("both halves were given back"),
        }
    }
}

/// The accessors `pubsub` uses, the same for both halves.
#[cfg(feature = "pubsub")]
macro_rules! driver_accessors {
    ($half:ident) => {
        impl<S> $half<S> {
            pub(crate) fn driver_ref<R>(&self, f: impl FnOnce(&Driver<WriteHalf<S>>) -> R) -> R {
                f(&lock(&self.shared).driver)
            }

            pub(crate) fn driver_mut<R>(&mut self, f: impl FnOnce(&mut Driver<WriteHalf<S>>) -> R) -> R {
                f(&mut lock(&self.shared).driver)
            }
        }
    };
}

#[cfg(feature = "pubsub")]
driver_accessors!(WsReader);
#[cfg(feature = "pubsub")]
driver_accessors!(WsWriter);

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriter<S> {
    /// Send a message and write it out; see [`WebSocket::send`].
    pub fn send(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<()>> + '_ {
        let mut message = Some(message.into());
        poll_fn(move |cx| lock(&self.shared).poll_writer(cx, |d, cx| d.poll_send(cx, &mut message)))
    }

    /// Queue a message without writing it yet; see [`WebSocket::feed`].
    pub fn feed(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<()>> + '_ {
        let mut message = Some(message.into());
        poll_fn(move |cx| lock(&self.shared).poll_writer(cx, |d, cx| d.poll_feed(cx, &mut message)))
    }

    /// Write out everything queued.
    pub fn flush(&mut self) -> impl Future<Output = Result<()>> + '_ {
        poll_fn(|cx| lock(&self.shared).poll_writer(cx, Driver::poll_flush))
    }

    /// Send a text or binary message choosing whether to compress it; see
    /// [`WebSocket::send_compressed`].
    pub async fn send_compressed(&mut self, message: impl Into<Message>, compress: bool) -> Result<()> {
        poll_fn(|cx| lock(&self.shared).poll_writer(cx, Driver::poll_ready)).await?;
        lock(&self.shared).driver.start_send_compressed(message.into(), compress)?;
        self.flush().await
    }

    /// Send one frame of a fragmented message; see [`WebSocket::send_frame`].
    pub async fn send_frame(&mut self, frame: Frame) -> Result<()> {
        poll_fn(|cx| lock(&self.shared).poll_writer(cx, Driver::poll_ready)).await?;
        lock(&self.shared).driver.start_send_frame(frame)?;
        self.flush().await
    }

    /// Send a ping and write it out.
    pub async fn ping(&mut self, payload: impl Into<bytes::Bytes>) -> Result<()> {
        self.send(Message::Ping(payload.into())).await
    }

    /// Send a close frame and write it out. The reader sees the peer's answer and then ends.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        let frame = CloseFrame::new(code, reason);
        self.send(Message::Close(Some(frame))).await
    }

    /// Bytes queued but not yet written.
    pub fn buffered_amount(&self) -> usize {
        lock(&self.shared).driver.conn.buffered_amount()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsReader<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let read = &mut this.read;
        lock(&this.shared).poll_reader(|d| d.poll_message(read, cx))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsWriter<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        lock(&self.shared).poll_writer(cx, Driver::poll_ready)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        lock(&self.shared).driver.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        lock(&self.shared).poll_writer(cx, Driver::poll_flush)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Send our close and flush it; the reader completes the handshake.
        let mut halves = lock(&self.shared);
        halves.driver.start_close(CloseCode::NORMAL, "")?;
        halves.poll_writer(cx, Driver::poll_flush)
    }
}
