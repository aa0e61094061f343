//! Borrowed receive: data messages handed to a handler where they lie, with a way to answer them.
//!
//! `next_event` hands every message out as an owned [`Message`]: its payload is a reference
//! counted slice of the read buffer, moved through the event queue to the application, which
//! then copies it again to answer. [`Connection::drain_messages`] instead calls a handler with
//! each message borrowed from the read buffer and a [`Replies`] that frames answers straight
//! into the write queue. For small messages that removes everything but the parsing, the
//! unmasking and the copy of the answer (measured in `docs/performance.md`).

use bytes::Buf;

use super::{Connection, Event, State, buffers, close, recv::FrameRef, send::Writer};
use crate::{
    CloseCode, CloseFrame, Message, MessageRef, ProtocolError, SendError,
    frame::{MAX_CONTROL_PAYLOAD, OpCode},
    outgoing::Payload,
};

/// Why [`Connection::drain_messages`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drained {
    /// Every whole data message received so far was handed out. What remains is a partial
    /// frame, or an event of another kind: take events with
    /// [`next_event`](Connection::next_event), then drain again.
    All,
    /// The write queue passed `write_high_water`: write it out, then drain again before taking
    /// events (a data message may be next).
    WriteBlocked,
}

/// What [`Connection::drain_messages_counted`] handed out and what the handlers queued in
/// answer, added up over the calls it is passed to: for a driver's metrics, counted where the
/// engine parses each message rather than around every handler call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainCounts {
    /// Text and binary messages handed to the handler.
    pub received: [u32; 2],
    /// Text and binary messages the handler queued through [`Replies`].
    pub replied: [u32; 2],
}

/// How a drain counts: not at all, or into [`DrainCounts`]; resolved at compile time, so the
/// uncounted drain has no test for it.
trait Count {
    /// `received` messages (text, binary) handed out and `sent` replies queued.
    fn add(&mut self, received: [u32; 2], sent: [u32; 2]);
}

impl Count for () {
    #[inline(always)]
    fn add(&mut self, _: [u32; 2], _: [u32; 2]) {}
}

impl Count for DrainCounts {
    #[inline(always)]
    fn add(&mut self, received: [u32; 2], sent: [u32; 2]) {
        self.received[0] += received[0];
        self.received[1] += received[1];
        self.replied[0] += sent[0];
        self.replied[1] += sent[1];
    }
}

/// Answers to the message being handled, framed straight into the connection's write queue
/// (given to the handler of [`Connection::drain_messages`]). They go out with the next write,
/// after everything queued before them.
pub struct Replies<'a> {
    writer: Writer<'a>,
    /// Why sending is refused, if it is: not open, closing, or a fragmented message being sent
    /// with `send_frame`.
    refused: Option<SendError>,
    /// A close the handler asked for: started once it returns.
    close: Option<Option<CloseFrame>>,
    /// Text and binary messages queued through these replies, for metrics.
    sent: [u32; 2],
}

impl std::fmt::Debug for Replies<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies").field("buffered", &self.buffered_amount()).finish_non_exhaustive()
    }
}

impl Replies<'_> {
    /// Send a text or binary message, such as the one being handled (an echo). A large
    /// message that has its own buffer is queued without a copy.
    #[inline]
    pub fn send(&mut self, message: MessageRef<'_>) -> Result<(), SendError> {
        let opcode = if message.is_text() { OpCode::Text } else { OpCode::Binary };
        match message.shared() {
            Some(bytes) => self.send_data(opcode, Payload::Shared(bytes.clone())),
            None => self.send_data(opcode, Payload::Borrowed(message.as_bytes())),
        }
    }

    /// Send a text message.
    #[inline]
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(OpCode::Text, Payload::Borrowed(text.as_bytes()))
    }

    /// Send a binary message.
    #[inline]
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_data(OpCode::Binary, Payload::Borrowed(data))
    }

    /// Send an owned message of any kind, as [`Connection::send`] does; a close is started once
    /// the handler returns, as with [`close`](Self::close).
    pub fn send_message(&mut self, message: Message) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, Payload::Shared(text.into_bytes())),
            Message::Binary(data) => self.send_data(OpCode::Binary, Payload::Shared(data)),
            Message::Ping(data) => self.send_control(OpCode::Ping, &data),
            Message::Pong(data) => self.send_control(OpCode::Pong, &data),
            Message::Close(frame) => {
                close::check_close_frame(frame.as_ref())?;
                self.close_with(frame)
            }
        }
    }

    /// Start the closing handshake with `code` and a reason of at most 123 bytes, once the
    /// handler returns (see [`Connection::close`]). What the handler sends after this fails
    /// with [`SendError::Closed`]; messages already received are still handed out.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        let frame = close::close_frame(code, reason)?;
        self.close_with(frame)
    }

    /// How many text and binary messages these replies have queued so far, as
    /// `(text, binary)`: for a driver's metrics, which compares them before and after a
    /// handler runs. One `Replies` may serve several messages of a batch.
    pub fn sent(&self) -> (u32, u32) {
        (self.sent[0], self.sent[1])
    }

    /// Bytes queued to write, these replies included.
    pub fn buffered_amount(&self) -> usize {
        self.writer.out.len()
    }

    #[inline(always)]
    fn send_data(&mut self, opcode: OpCode, payload: Payload<'_>) -> Result<(), SendError> {
        if let Some(e) = self.refused {
            return Err(e);
        }
        self.writer.message(opcode, payload, None);
        self.sent[usize::from(opcode == OpCode::Binary)] += 1;
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        // A control frame may go out in the middle of a fragmented message.
        if let Some(e) = self.refused.filter(|e| *e != SendError::InvalidFragment) {
            return Err(e);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        self.writer.control(opcode, payload);
        Ok(())
    }

    fn close_with(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        match self.refused {
            None | Some(SendError::InvalidFragment) => {
                self.close = Some(frame);
                self.refused = Some(SendError::Closed);
                Ok(())
            }
            // Closing already: nothing more to do, as for `Connection::close`.
            Some(SendError::Closed) => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Where a batch of `drain_messages` stopped.
enum Batch {
    /// Handed out messages, or stopped for the handler's close or the write queue: go on.
    Handled,
    /// The frame at the front is not all here yet: wait for more bytes.
    Wait,
    /// A whole frame of another kind (a fragment, a compressed or control frame), read and left
    /// at the front of the buffer for `take_frame`.
    Other(FrameRef),
    /// The frame at the front breaks the protocol.
    Failed(ProtocolError),
}

impl Connection {
    /// Hand every whole text or binary message received so far to `handle`, in order, borrowed
    /// where it lies, with [`Replies`] to answer it: the zero-copy alternative to taking
    /// [`Event::Message`]s from [`next_event`](Self::next_event). It parses as `next_event`
    /// does, with the same effects (pongs queued, failures), and stops at the first event of
    /// another kind (a ping, a pong, the peer's close), which stays queued for `next_event` so
    /// that the order of everything is kept. A bad frame fails the connection only after the
    /// messages before it were handled and their replies queued.
    ///
    /// Stops early, returning [`Drained::WriteBlocked`], once the write queue is past
    /// `write_high_water`: write it out and call again.
    ///
    /// Drive it with `next_event` as one loop, after every input: drain, then take one event;
    /// repeat until both have nothing (see the [crate documentation](crate)).
    pub fn drain_messages<F>(&mut self, handle: F) -> Drained
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
    {
        self.drain_with(handle, &mut ())
    }

    /// [`drain_messages`](Self::drain_messages), adding to `counts` the messages handed out
    /// and the replies queued.
    pub fn drain_messages_counted<F>(&mut self, handle: F, counts: &mut DrainCounts) -> Drained
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
    {
        self.drain_with(handle, counts)
    }

    #[inline(always)]
    fn drain_with<F, C>(&mut self, mut handle: F, count: &mut C) -> Drained
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
        C: Count,
    {
        let mut refused = self.send_refusal();
        loop {
            let Some(w) = self.work.as_deref() else { return Drained::All };
            if let Some(front) = w.events.front() {
                // A message the general path assembled (fragmented or compressed), or one
                // `next_event` parsed: lend it from its own buffer, in its turn.
                if !matches!(front, Event::Message(_)) {
                    return Drained::All;
                }
                if self.is_write_blocked() {
                    return Drained::WriteBlocked;
                }
                let Some(Event::Message(message)) = self.work().events.pop_front() else {
                    unreachable!("the front event is a message")
                };
                // Invariant: `Event::Message` carries only text or binary (see `Message`).
                let message = MessageRef::from_message(&message).expect("a data message");
                let mut replies = Replies { writer: self.writer(), refused, close: None, sent: [0; 2] };
                let text = message.is_text();
                handle(message, &mut replies);
                count.add([u32::from(text), u32::from(!text)], replies.sent);
                if let Some(frame) = replies.close {
                    refused = self.close_from_handler(frame);
                }
                continue;
            }
            let receiving = matches!(self.state, State::Open | State::CloseSent);
            if !receiving || w.incoming.buf.bytes.is_empty() {
                return Drained::All;
            }
            if self.is_write_blocked() {
                return Drained::WriteBlocked;
            }
            match self.drain_batch(&mut handle, &mut refused, count) {
                Batch::Handled => {}
                Batch::Wait => return Drained::All,
                Batch::Other(frame) => self.take_frame(frame),
                Batch::Failed(e) => {
                    self.fail(e);
                    return Drained::All;
                }
            }
        }
    }

    /// The fast loop: hand out the whole single-frame messages at the front of the read buffer
    /// with one `Replies` and one advance of the buffer for all of them. Stops at any other
    /// frame, at a close from the handler and at the write queue's high-water mark. A failure
    /// comes after the messages before it.
    #[inline]
    fn drain_batch<F, C>(&mut self, handle: &mut F, refused: &mut Option<SendError>, count: &mut C) -> Batch
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
        C: Count,
    {
        let rules = self.rules();
        let high_water = self.config.write_high_water;
        let w = buffers::work(&mut self.work);
        let writer = Writer {
            out: &mut w.outgoing,
            deflate: self.deflate.as_deref_mut(),
            rng: self.session.as_mut().and_then(|s| s.rng.as_deref_mut()),
        };
        let mut replies = Replies { writer, refused: *refused, close: None, sent: [0; 2] };
        let incoming = &mut w.incoming;
        let mut pos = 0;
        let mut last = None;
        // Kept in a local (a register), added to `count` once per batch; gone when not counted.
        let mut received = [0u32; 2];
        let batch = loop {
            match incoming.read_frame(pos, &rules) {
                Some(frame) if frame.is_single_message() => {
                    let start = pos + frame.start();
                    pos = start + frame.len;
                    last = Some(frame.len);
                    received[usize::from(!frame.is_text())] += 1;
                    handle(MessageRef::borrowed(frame.is_text(), &incoming.buf.bytes[start..pos]), &mut replies);
                    if replies.close.is_some() || replies.buffered_amount() > high_water {
                        break Batch::Handled;
                    }
                }
                Some(frame) => break Batch::Other(frame),
                None => match incoming.take_fault() {
                    Some(e) => break Batch::Failed(e),
                    None => break Batch::Wait,
                },
            }
        };
        count.add(received, replies.sent);
        let close = replies.close;
        incoming.buf.bytes.advance(pos);
        if let Some(len) = last {
            self.sizing.took(len);
        }
        if let Some(frame) = close {
            *refused = self.close_from_handler(frame);
        }
        batch
    }

    /// Start the close a handler asked for; returns why sending is refused from now on.
    fn close_from_handler(&mut self, frame: Option<CloseFrame>) -> Option<SendError> {
        // Checked by `Replies`: a sendable code and a reason that fits.
        let _ = self.start_close(frame);
        self.send_refusal()
    }
}
