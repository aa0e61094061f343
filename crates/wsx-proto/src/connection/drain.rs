//! Borrowed receive: data messages handed to a handler in place, with a way to answer them.
//!
//! `next_event` hands every message out as an owned [`Message`]: its payload is a reference
//! counted slice of the read buffer, moved through the event queue to the application, which
//! then copies it again to answer. [`Connection::drain_messages`] instead calls a handler with
//! each message borrowed from the read buffer and a [`Replies`] that frames answers straight
//! into the write queue. For small messages that removes everything but the parsing, the
//! unmasking and the copy of the answer (measured in `docs/performance.md`).

use super::{
    Connection, Event, State, busy,
    recv::{Small, small_frame},
    send::{Payload, Writer, check_close_frame},
};
use crate::{
    CloseCode, CloseFrame, Message, MessageRef, OpCode, ProtocolError, Role, SendError, frame::MAX_CONTROL_PAYLOAD,
};

/// Why [`Connection::drain_messages`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drained {
    /// Every whole data message received so far was handed out. What remains is a partial
    /// frame or an event of another kind: take events with
    /// [`next_event`](Connection::next_event), then read more.
    All,
    /// The write queue passed `write_high_water`: write it out, then call again before taking
    /// events (a data message may be next).
    WriteBlocked,
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
            Message::Close(Some(frame)) => self.close_with(Some(frame)),
            Message::Close(None) => self.close_with(None),
        }
    }

    /// Start the closing handshake with `code` and a reason of at most 123 bytes, once the
    /// handler returns (see [`Connection::close`]). What the handler sends after this fails
    /// with [`SendError::Closed`]; messages already received are still handed out.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if code == CloseCode::NO_STATUS {
            if !reason.is_empty() {
                return Err(SendError::InvalidCloseCode(code.0));
            }
            return self.close_with(None);
        }
        self.close_with(Some(CloseFrame::new(code, reason)))
    }

    /// Bytes queued to write, these replies included.
    pub fn buffered_amount(&self) -> usize {
        bytes::Buf::remaining(&*self.writer.out)
    }

    #[inline(always)]
    fn send_data(&mut self, opcode: OpCode, payload: Payload<'_>) -> Result<(), SendError> {
        if let Some(e) = self.refused {
            return Err(e);
        }
        self.writer.write_message(opcode, payload, None);
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
        self.writer.write_control(opcode, payload);
        Ok(())
    }

    fn close_with(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        check_close_frame(frame.as_ref())?;
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

/// What the fast loop of `drain_small_frames` did.
enum Step {
    /// Handed out messages, or stopped for the handler's close or the write queue: go on.
    Handled,
    /// The frame at the front is small but not all here yet: wait for more bytes.
    Wait,
    /// The frame at the front is for the general path.
    General,
}

impl Connection {
    /// Hand every whole text or binary message received so far to `handle`, in order, borrowed
    /// where it lies, with [`Replies`] to answer it: the zero-copy alternative to taking
    /// [`Event::Message`]s from [`next_event`](Self::next_event). Events of other kinds (pings,
    /// pongs, the close) stay queued for `next_event`, and the drain stops at the first of them
    /// so that the order of everything is kept; so does a failure: messages before a bad frame
    /// are handed out (and their replies queued) before the close it causes.
    ///
    /// Stops early, returning [`Drained::WriteBlocked`], once the write queue is past
    /// `write_high_water`: write it out and call again.
    ///
    /// Once it has been called, the connection expects it after every input: from then on an
    /// input leaves a text or binary frame at the front of the read buffer to it, unparsed
    /// (anything before it is parsed at once, as usual).
    pub fn drain_messages<F>(&mut self, mut handle: F) -> Drained
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
    {
        self.drains = true;
        let mut refused = self.send_refusal();
        loop {
            let can_receive = self.can_receive();
            // With nothing in hand there is nothing to hand out (and no busy state to take).
            let Some(b) = self.busy.as_deref() else { return Drained::All };
            if self.is_write_blocked() {
                return match b.events.front() {
                    Some(Event::Message(_)) => Drained::WriteBlocked,
                    Some(_) => Drained::All,
                    None if can_receive && !b.rbuf.is_empty() => Drained::WriteBlocked,
                    None => Drained::All,
                };
            }
            if let Some(front) = b.events.front() {
                if !matches!(front, Event::Message(_)) {
                    return Drained::All;
                }
                // A message the general path assembled (fragmented, compressed or large): lend
                // it from its own buffer.
                // Invariant: `front` is this message, and `Event::Message` only carries text or
                // binary (see `Message`).
                let Some(Event::Message(message)) = self.b().events.pop_front() else {
                    unreachable!("front is a message")
                };
                let message = MessageRef::from_message(&message).expect("a data message");
                let mut replies = Replies { writer: self.writer(), refused, close: None };
                handle(message, &mut replies);
                if let Some(frame) = replies.close {
                    refused = self.close_from_handler(frame);
                }
                continue;
            }
            if !can_receive || b.rbuf.is_empty() {
                return Drained::All;
            }
            if b.frame.is_none() && self.message.is_none() {
                match self.drain_small_frames(&mut handle, &mut refused) {
                    Ok(Step::Handled) => continue,
                    Ok(Step::Wait) => return Drained::All,
                    Ok(Step::General) => {}
                    Err(e) => {
                        self.fail(e);
                        return Drained::All;
                    }
                }
            }
            // Anything else goes through the general path, which stops at its first event.
            self.process();
            if self.events_empty() {
                return Drained::All;
            }
        }
    }

    /// The fast loop: hand out the whole small frames at the front of the read buffer (see
    /// `small_frame`) with one `Replies` and one advance of the buffer for all of them. Stops at
    /// anything else, at a close from the handler and at the write queue's high-water mark. A
    /// failure comes after the messages before it.
    #[inline]
    fn drain_small_frames<F>(&mut self, handle: &mut F, refused: &mut Option<SendError>) -> Result<Step, ProtocolError>
    where
        F: FnMut(MessageRef<'_>, &mut Replies<'_>),
    {
        let server = self.role == Role::Server;
        let limit = self.config.max_frame_size.min(self.config.max_message_size);
        let high_water = self.config.write_high_water;
        let b = busy(&mut self.busy);
        let writer = Writer {
            role: self.role,
            out: &mut b.out,
            deflate: self.deflate.as_deref_mut(),
            rng: self.extras.as_mut().and_then(|e| e.rng.as_deref_mut()),
        };
        let mut replies = Replies { writer, refused: *refused, close: None };
        let mut pos = 0;
        let mut last = None;
        let result = loop {
            match small_frame(&mut b.rbuf[pos..], server, limit) {
                Ok(Small::Whole(frame)) => {
                    let start = pos + frame.start;
                    pos = start + frame.len;
                    last = Some(frame.len);
                    handle(MessageRef::borrowed(frame.text, &b.rbuf[start..pos]), &mut replies);
                    if replies.close.is_some() || replies.buffered_amount() > high_water {
                        break Ok(Step::Handled);
                    }
                }
                Ok(_) if pos > 0 => break Ok(Step::Handled),
                // The rest of a small binary frame is still to come: unmask it whole then.
                // (Text goes through the general path, which validates what has arrived, so
                // that invalid UTF-8 fails the connection without waiting for the rest.)
                Ok(Small::Partial { text: false }) => break Ok(Step::Wait),
                Ok(_) => break Ok(Step::General),
                Err(e) => break Err(e),
            }
        };
        let close = replies.close;
        bytes::Buf::advance(&mut b.rbuf, pos);
        if let Some(len) = last {
            // At most 65,535: fits a `u32`.
            self.read_hint = len as u32;
        }
        if let Some(frame) = close {
            *refused = self.close_from_handler(frame);
        }
        result
    }

    /// Why a data message cannot be sent now, if it cannot.
    fn send_refusal(&self) -> Option<SendError> {
        match self.state {
            State::Open if self.out_message.is_some() => Some(SendError::InvalidFragment),
            State::Open => None,
            State::Handshake | State::AwaitAccept | State::Refused => Some(SendError::NotOpen),
            State::CloseSent | State::Closed | State::Finished => Some(SendError::Closed),
        }
    }

    /// Start the close a handler asked for; returns why sending is refused from now on.
    fn close_from_handler(&mut self, frame: Option<CloseFrame>) -> Option<SendError> {
        // Checked by `Replies::close_with`: a sendable code and a reason that fits.
        let _ = self.start_close(frame);
        self.send_refusal()
    }
}
