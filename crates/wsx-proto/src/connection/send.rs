//! Sending: the commands that queue messages, fragments and pings, and [`Writer`], the one
//! frame writer every frame the connection sends goes through.

use bytes::Bytes;

use super::{Connection, State, buffers};
use crate::{
    Frame, MaskRng, Message, Prepared, SendError,
    deflate::Deflate,
    frame::{Header, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, RSV1},
    outgoing::{Payload, WriteQueue},
};

/// A fragmented message being sent with `send_frame`.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutMessage {
    compressed: bool,
}

impl Connection {
    /// Send a message: text and binary as one frame (compressed when permessage-deflate is on
    /// and the message is over its threshold); ping, pong and close as [`ping`](Self::ping),
    /// [`pong`](Self::pong) and [`close`](Self::close) do (a close sent this way arms its timer
    /// at the next input, which brings a `now`).
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes(), None),
            Message::Binary(data) => self.send_data(OpCode::Binary, data, None),
            Message::Ping(data) => self.ping(data),
            Message::Pong(data) => self.pong(data),
            Message::Close(frame) => {
                super::close::check_close_frame(frame.as_ref())?;
                self.start_close(frame)
            }
        }
    }

    /// Send a text or binary message, choosing whether to compress it (ignored unless
    /// permessage-deflate was negotiated).
    pub fn send_compressed(&mut self, message: Message, compress: bool) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes(), Some(compress)),
            Message::Binary(data) => self.send_data(OpCode::Binary, data, Some(compress)),
            other => self.send(other),
        }
    }

    /// Send a message framed in advance, typically one of many recipients of the same
    /// [`Prepared`] message.
    ///
    /// A server sends the prepared frame itself: copied into the write queue when small (with
    /// the other frames of the same write), queued by reference when large. With
    /// permessage-deflate, a message over the threshold goes out as the prepared compressed
    /// frame, made once for all recipients (it refers to nothing sent before, which is valid
    /// whatever was negotiated; a compressor that keeps context forgets its history after it,
    /// so that its next message does not refer past it). The exception is a peer that asked for
    /// a window under 15 bits and a message larger than that window: it is compressed for this
    /// connection alone. A client masks each frame with a key of its own, so it frames the
    /// message anew.
    pub fn send_prepared(&mut self, message: &Prepared) -> Result<(), SendError> {
        if let Some(e) = self.send_refusal() {
            return Err(e);
        }
        self.writer().prepared(message);
        Ok(())
    }

    /// Send one frame of a message streamed in fragments: a text or binary frame with `fin`
    /// false starts it, continuations follow, and `fin` true ends it. Control frames may be
    /// sent in between with [`ping`](Self::ping) and friends.
    ///
    /// With permessage-deflate, a message is compressed as a whole when its first frame is
    /// over the threshold (RSV1 is set on the first frame only, RFC 7692 §6.1).
    pub fn send_frame(&mut self, frame: Frame) -> Result<(), SendError> {
        self.can_send_control()?;
        let Frame { fin, opcode, payload } = frame;
        let (compressed, first) = match (opcode, self.out_message) {
            (OpCode::Text | OpCode::Binary, None) => {
                (self.deflate.as_ref().is_some_and(|d| d.should_compress(payload.len())), true)
            }
            (OpCode::Continuation, Some(m)) => (m.compressed, false),
            _ => return Err(SendError::InvalidFragment),
        };
        self.out_message = (!fin).then_some(OutMessage { compressed });
        self.writer().data_frame(opcode, fin, compressed, first, Payload::Shared(payload));
        Ok(())
    }

    /// Send a ping with up to 125 bytes of payload.
    pub fn ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, &payload)
    }

    /// Send a pong with up to 125 bytes of payload (a heartbeat, or the answer to a ping
    /// when `auto_pong` is off).
    pub fn pong(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, &payload)
    }

    /// Bytes queued to write.
    pub fn buffered_amount(&self) -> usize {
        self.work.as_ref().map_or(0, |w| w.outgoing.len())
    }

    /// Whether the write queue is past `write_high_water`: senders should wait for it to drain.
    pub fn is_write_blocked(&self) -> bool {
        self.buffered_amount() > self.config.write_high_water
    }

    /// Why a data message cannot be sent now, if it cannot: not open yet, closing, or a
    /// fragmented message being sent with `send_frame`.
    pub(super) fn send_refusal(&self) -> Option<SendError> {
        match self.can_send_control() {
            Ok(()) if self.out_message.is_some() => Some(SendError::InvalidFragment),
            Ok(()) => None,
            Err(e) => Some(e),
        }
    }

    /// Whether a frame may be sent at all: the connection is open and our close not sent.
    fn can_send_control(&self) -> Result<(), SendError> {
        match self.state {
            State::Open => Ok(()),
            State::Handshake | State::AwaitAccept | State::Refused => Err(SendError::NotOpen),
            State::CloseSent | State::AwaitingEof | State::Finished => Err(SendError::Closed),
        }
    }

    fn send_data(&mut self, opcode: OpCode, payload: Bytes, compress: Option<bool>) -> Result<(), SendError> {
        if let Some(e) = self.send_refusal() {
            return Err(e);
        }
        self.writer().message(opcode, Payload::Shared(payload), compress);
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.can_send_control()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        self.writer().control(opcode, payload);
        Ok(())
    }

    /// The sending side, borrowed apart from the rest.
    pub(super) fn writer(&mut self) -> Writer<'_> {
        Writer {
            out: &mut buffers::work(&mut self.work).outgoing,
            deflate: self.deflate.as_deref_mut(),
            rng: self.session.as_mut().and_then(|s| s.rng.as_deref_mut()),
        }
    }
}

/// The sending side of a connection: the write queue, the compressor and a client's masking
/// keys, borrowed apart from the receiving side, so that a reply can be framed while the message
/// it answers is still borrowed from the read buffer (see `Connection::drain_messages`).
///
/// Every frame goes out through [`frame`](Self::frame), which encodes the header once and hands
/// it to the write queue, which alone decides whether the payload is copied or queued by
/// reference ([`WriteQueue::append`]).
pub(super) struct Writer<'a> {
    pub(super) out: &'a mut WriteQueue,
    pub(super) deflate: Option<&'a mut Deflate>,
    /// A client's masking keys; `None` for a server, whose frames are not masked.
    pub(super) rng: Option<&'a mut (dyn MaskRng + 'static)>,
}

impl Writer<'_> {
    /// Queue one frame. A client masks it with a fresh key (RFC 6455 §5.3: "The masking key
    /// is a 32-bit value chosen at random by the client ... for each frame"); a server's frames
    /// are not masked.
    #[inline(always)]
    pub(super) fn frame(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Payload<'_>) {
        let mask = match self.rng.as_deref_mut() {
            // Its own arm, so that the server's frames are encoded with the mask known absent.
            None => {
                return self.put(Header { fin, rsv, opcode, mask: None, payload_len: payload.len() as u64 }, payload);
            }
            Some(rng) => {
                let mut key = [0; 4];
                rng.fill(&mut key);
                key
            }
        };
        self.put(Header { fin, rsv, opcode, mask: Some(mask), payload_len: payload.len() as u64 }, payload);
    }

    /// Encode `header` and hand it to the write queue with its payload.
    #[inline(always)]
    fn put(&mut self, header: Header, payload: Payload<'_>) {
        let mut head = [0; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        self.out.append(&head[..n], payload, header.mask);
    }

    /// Queue a whole text or binary message, compressed over the permessage-deflate threshold
    /// or as `choice` says.
    #[inline(always)]
    pub(super) fn message(&mut self, opcode: OpCode, payload: Payload<'_>, choice: Option<bool>) {
        let compress = match (&self.deflate, choice) {
            (None, _) => false,
            (Some(_), Some(choice)) => choice,
            (Some(d), None) => d.should_compress(payload.len()),
        };
        self.data_frame(opcode, true, compress, true, payload);
    }

    /// Queue a message framed in advance (see [`Connection::send_prepared`]).
    #[inline(always)]
    pub(super) fn prepared(&mut self, message: &Prepared) {
        if self.rng.is_some() {
            // A client: the frame needs this connection's masking key.
            return self.message(message.opcode(), Payload::Borrowed(message.payload()), None);
        }
        if let Some(deflate) = self.deflate.as_deref_mut()
            && deflate.should_compress(message.len())
        {
            if !deflate.accepts_alone(message.len()) {
                return self.data_frame(message.opcode(), true, true, true, Payload::Borrowed(message.payload()));
            }
            if let Some(frame) = message.deflated() {
                deflate.forget_history();
                deflate.stats.sent_uncompressed += message.len() as u64;
                deflate.stats.sent_compressed += (frame.len() - head_len(frame)) as u64;
                return self.out.append(&[], Payload::Lent(frame), None);
            }
        }
        self.out.append(&[], Payload::Lent(message.frame()), None);
    }

    /// Queue a control frame (payload at most 125 bytes, checked by the caller).
    pub(super) fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        self.frame(opcode, true, 0, Payload::Borrowed(payload));
    }

    /// Queue a data frame, the `first` of its message or not; compress its payload first if
    /// the message is compressed.
    #[inline(always)]
    pub(super) fn data_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        first: bool,
        payload: Payload<'_>,
    ) {
        if compressed {
            self.compressed_frame(opcode, fin, first, payload);
        } else {
            self.frame(opcode, fin, 0, payload);
        }
    }

    /// Compress a data frame's payload and queue it; RSV1 marks the first frame of the message
    /// (RFC 7692 §6.1).
    ///
    /// Kept out of line: inlined, the compression path would make every caller's fast path
    /// save and restore registers and a large stack frame for it.
    #[inline(never)]
    fn compressed_frame(&mut self, opcode: OpCode, fin: bool, first: bool, payload: Payload<'_>) {
        // Invariant: a message is only compressed when deflate was negotiated.
        let deflate = self.deflate.as_deref_mut().expect("deflate negotiated");
        let mut scratch = std::mem::take(&mut deflate.scratch);
        deflate.compress(&payload, fin, &mut scratch);
        deflate.stats.sent_uncompressed += payload.len() as u64;
        if first && fin && scratch.len() >= payload.len() {
            // Incompressible (already compressed media, random bytes): deflate would only add
            // bytes. Send it as it is, and make the compressor forget it, since the peer's
            // window will not hold it.
            deflate.reset_compressor();
            deflate.stats.sent_compressed += payload.len() as u64;
            scratch.clear();
            deflate.scratch = scratch;
            self.frame(opcode, fin, 0, payload);
            return;
        }
        deflate.stats.sent_compressed += scratch.len() as u64;
        let rsv = if first { RSV1 } else { 0 };
        self.frame(opcode, fin, rsv, Payload::Borrowed(&scratch));
        scratch.clear();
        if let Some(deflate) = self.deflate.as_deref_mut() {
            deflate.scratch = scratch;
        }
    }
}

/// The header length of an unmasked frame built in advance (2, 4 or 10 bytes, RFC 6455 §5.2).
fn head_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}
