//! Commands: sending messages, frames, pings and the close; answering the handshake.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Connection, OutMessage, State, busy};
use crate::{
    Accept, CloseCode, CloseFrame, Frame, HandshakeError, MaskRng, Message, Role, SendError,
    deflate::Deflate,
    frame::{Header, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, RSV1},
    handshake::server,
    mask::apply_mask,
    outgoing::{COPY_THRESHOLD, Outgoing},
};

impl Connection {
    /// Server: accept the request reported by [`Event::Request`](super::Event::Request) with
    /// a 101 response, and start reading frames (including any that arrived already).
    ///
    /// Fails with `InvalidState` if there is no request to answer, or if `accept` selects a
    /// subprotocol the client did not offer.
    pub fn accept(&mut self, accept: &Accept) -> Result<(), SendError> {
        if self.state != State::AwaitAccept {
            return Err(SendError::InvalidState);
        }
        let handshake = self.handshake.as_deref_mut().ok_or(SendError::InvalidState)?;
        let request = handshake.pending_request.as_deref().ok_or(SendError::InvalidState)?;
        let extensions = handshake.pending_deflate.as_ref().map(|(_, header)| header.as_str());
        let mut head = BytesMut::new();
        server::write_accept(request, accept, extensions, &mut head)?;
        busy(&mut self.busy).out.extend(&head);
        if let (Some((params, _)), Some(cfg)) = (handshake.pending_deflate.take(), &self.config.deflate) {
            self.deflate = Some(Box::new(Deflate::new(params, Role::Server, cfg)));
        }
        if let Some(protocol) = accept.protocol.as_deref() {
            self.extras_mut().protocol = Some(protocol.into());
        }
        self.open();
        self.process();
        Ok(())
    }

    /// Server: refuse the request with `response` (any status but 101; a 401 with
    /// `WWW-Authenticate`, a 403 for a bad origin, …), or answer a plain HTTP request with it
    /// (without the body if the request is `HEAD`), then close.
    pub fn reject(&mut self, response: http::Response<Bytes>) -> Result<(), SendError> {
        if self.state != State::AwaitAccept || response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(SendError::InvalidState);
        }
        let request = self.handshake.as_deref().and_then(|h| h.pending_request.as_deref());
        let mut head = BytesMut::new();
        let status = server::write_answer(request, response, &mut head);
        self.transmit().extend(&head);
        self.closing_mut().error = Some(HandshakeError::Rejected { status }.into());
        self.enter_closed();
        Ok(())
    }

    /// Send a message: text and binary as one frame (compressed when permessage-deflate is on
    /// and the message is over its threshold); ping, pong and close as [`ping`](Self::ping),
    /// [`pong`](Self::pong) and [`close`](Self::close) do.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes(), None),
            Message::Binary(data) => self.send_data(OpCode::Binary, data, None),
            Message::Ping(data) => self.ping(data),
            Message::Pong(data) => self.pong(data),
            Message::Close(frame) => self.start_close(frame),
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

    /// Send one frame of a message streamed in fragments: a text or binary frame with `fin`
    /// false starts it, continuations follow, and `fin` true ends it. Control frames may be
    /// sent in between with [`ping`](Self::ping) and friends.
    ///
    /// With permessage-deflate, a message is compressed as a whole when its first frame is
    /// over the threshold (RSV1 is set on the first frame only, RFC 7692 §6.1).
    pub fn send_frame(&mut self, frame: Frame) -> Result<(), SendError> {
        self.check_can_send()?;
        let Frame { fin, opcode, payload } = frame;
        match (opcode, self.out_message) {
            (OpCode::Text | OpCode::Binary, None) => {
                let compressed = self.deflate.as_ref().is_some_and(|d| d.should_compress(payload.len()));
                if !fin {
                    self.out_message = Some(OutMessage { compressed });
                }
                self.writer().write_data_frame(opcode, fin, compressed, true, Payload::Shared(payload));
                Ok(())
            }
            (OpCode::Continuation, Some(m)) => {
                if fin {
                    self.out_message = None;
                }
                self.writer().write_data_frame(opcode, fin, m.compressed, false, Payload::Shared(payload));
                Ok(())
            }
            _ => Err(SendError::InvalidFragment),
        }
    }

    /// Send a ping with up to 125 bytes of payload.
    pub fn ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.check_control(&payload)?;
        self.send_control(OpCode::Ping, &payload);
        Ok(())
    }

    /// Send a pong with up to 125 bytes of payload (a heartbeat, or the answer to a ping
    /// when `auto_pong` is off).
    pub fn pong(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.check_control(&payload)?;
        self.send_control(OpCode::Pong, &payload);
        Ok(())
    }

    /// Start the closing handshake (RFC 6455 §7.1.2) with a code and a reason of at most
    /// 123 bytes. The connection keeps receiving until the peer's close frame arrives, and
    /// gives up after `close_timeout`.
    ///
    /// Calling it again while closing does nothing. `CloseCode::NO_STATUS` sends a close
    /// frame without a code (the reason must then be empty).
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), SendError> {
        let frame = (code != CloseCode::NO_STATUS).then(|| CloseFrame::new(code, reason));
        if frame.is_none() && !reason.is_empty() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        self.observe(now);
        self.start_close(frame)?;
        if self.close_timer_pending {
            self.close_timer_pending = false;
            self.closing_mut().deadline = Some(now + self.config.close_timeout);
        }
        Ok(())
    }

    pub(super) fn start_close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        check_close_frame(frame.as_ref())?;
        match self.state {
            State::Open => {
                self.send_close_frame(frame);
                self.state = State::CloseSent;
                // Arm the close timer at the next input, which brings a `now`.
                self.close_timer_pending = true;
                Ok(())
            }
            State::CloseSent | State::Closed | State::Finished => Ok(()),
            State::Handshake | State::AwaitAccept | State::Refused => Err(SendError::NotOpen),
        }
    }

    fn check_can_send(&self) -> Result<(), SendError> {
        match self.state {
            State::Open => Ok(()),
            State::Handshake | State::AwaitAccept | State::Refused => Err(SendError::NotOpen),
            State::CloseSent | State::Closed | State::Finished => Err(SendError::Closed),
        }
    }

    fn check_control(&self, payload: &[u8]) -> Result<(), SendError> {
        self.check_can_send()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        Ok(())
    }

    fn send_data(&mut self, opcode: OpCode, payload: Bytes, compress: Option<bool>) -> Result<(), SendError> {
        self.check_can_send()?;
        if self.out_message.is_some() {
            return Err(SendError::InvalidFragment);
        }
        self.writer().write_message(opcode, Payload::Shared(payload), compress);
        Ok(())
    }

    /// Queue a control frame (payload at most 125 bytes, checked by the caller).
    pub(super) fn send_control(&mut self, opcode: OpCode, payload: &[u8]) {
        self.writer().write_control(opcode, payload);
    }

    /// The sending side, borrowed on its own.
    pub(super) fn writer(&mut self) -> Writer<'_> {
        Writer {
            role: self.role,
            out: &mut busy(&mut self.busy).out,
            deflate: self.deflate.as_deref_mut(),
            rng: self.extras.as_mut().and_then(|e| e.rng.as_deref_mut()),
        }
    }

    /// Queue a close frame and remember it.
    pub(super) fn send_close_frame(&mut self, frame: Option<CloseFrame>) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match &frame {
            Some(f) => {
                payload[..2].copy_from_slice(&f.code.0.to_be_bytes());
                let reason = f.reason.as_bytes();
                let n = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
                payload[2..2 + n].copy_from_slice(&reason[..n]);
                2 + n
            }
            None => 0,
        };
        self.send_control(OpCode::Close, &payload[..len]);
        self.closing_mut().sent =
            Some(frame.unwrap_or(CloseFrame { code: CloseCode::NO_STATUS, reason: Default::default() }));
    }

    /// Send the keep-alive ping and start waiting for its pong.
    pub(super) fn send_keepalive_ping(&mut self, now: Instant) {
        let (pong_timeout, interval) = (self.config.pong_timeout, self.config.ping_interval);
        let extras = self.extras_mut();
        extras.ping_counter = extras.ping_counter.wrapping_add(1);
        let payload = extras.ping_counter.to_be_bytes();
        if extras.pong_deadline.is_none() {
            extras.pong_deadline = Some(now + pong_timeout);
        }
        extras.next_ping = interval.map(|d| now + d);
        self.send_control(OpCode::Ping, &payload);
    }
}

/// Whether `frame` may be sent: a code that may appear on the wire (§7.4) and a reason that fits
/// a control frame with it.
pub(super) fn check_close_frame(frame: Option<&CloseFrame>) -> Result<(), SendError> {
    let Some(f) = frame else { return Ok(()) };
    if !f.code.is_sendable() {
        return Err(SendError::InvalidCloseCode(f.code.0));
    }
    if f.reason.len() > MAX_CONTROL_PAYLOAD - 2 {
        return Err(SendError::ControlTooLong);
    }
    Ok(())
}

/// A payload to frame: shared (large ones are queued without a copy) or borrowed (copied).
pub(super) enum Payload<'p> {
    Shared(Bytes),
    Borrowed(&'p [u8]),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Shared(b) => b,
            Payload::Borrowed(b) => b,
        }
    }
}

/// The sending side of a connection: the write queue, the compressor and the client's masking
/// keys, borrowed apart from the receiving side, so that a reply can be framed while the message
/// it answers is still borrowed from the read buffer (see `Connection::drain_messages`).
pub(super) struct Writer<'a> {
    pub(super) role: Role,
    pub(super) out: &'a mut Outgoing,
    pub(super) deflate: Option<&'a mut Deflate>,
    pub(super) rng: Option<&'a mut (dyn MaskRng + 'static)>,
}

impl Writer<'_> {
    /// Whether a data message of `len` bytes would be compressed: over the permessage-deflate
    /// threshold, or as `choice` says; never without the extension.
    pub(super) fn should_compress(&self, len: usize, choice: Option<bool>) -> bool {
        match (&self.deflate, choice) {
            (None, _) => false,
            (Some(_), Some(choice)) => choice,
            (Some(d), None) => d.should_compress(len),
        }
    }

    /// Encode a whole text or binary message, compressed over the permessage-deflate threshold
    /// or as `choice` says. A server's small uncompressed replies, the common case, take a short
    /// path straight into the tail.
    #[inline(always)]
    pub(super) fn write_message(&mut self, opcode: OpCode, payload: Payload<'_>, choice: Option<bool>) {
        let compressed = self.should_compress(payload.len(), choice);
        if !compressed
            && self.role == Role::Server
            && (payload.len() < COPY_THRESHOLD || matches!(payload, Payload::Borrowed(_)))
        {
            let header = Header { fin: true, rsv: 0, opcode, mask: None, payload_len: payload.len() as u64 };
            let mut head = [0; MAX_HEADER_LEN];
            let n = header.encode(&mut head);
            self.out.extend_frame(&head[..n], &payload);
            return;
        }
        self.write_data_frame(opcode, true, compressed, true, payload);
    }

    /// Encode a data frame; compress its payload first if the message is compressed.
    ///
    /// Kept out of line: inlined, its compression path would make every caller's fast path
    /// save and restore registers and a large stack frame for it.
    #[inline(never)]
    pub(super) fn write_data_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        first: bool,
        payload: Payload<'_>,
    ) {
        if !compressed {
            self.write_frame(opcode, fin, 0, payload);
            return;
        }
        // Invariant: `compressed` is only true when deflate was negotiated.
        let deflate = self.deflate.as_deref_mut().expect("deflate negotiated");
        let mut scratch = std::mem::take(&mut deflate.scratch);
        deflate.compress(&payload, fin, &mut scratch);
        if first && fin && scratch.len() >= payload.len() {
            // Incompressible (already compressed media, random bytes): deflate would only add
            // bytes. Send it as it is, and make the compressor forget it, since the peer's
            // window will not hold it.
            deflate.reset_compressor();
            scratch.clear();
            deflate.scratch = scratch;
            self.write_frame(opcode, fin, 0, payload);
            return;
        }
        let rsv = if first { RSV1 } else { 0 };
        let len = scratch.len();
        self.write_header(opcode, fin, rsv, len, |out, mask| {
            let start = out.len();
            out.extend_from_slice(&scratch);
            if let Some(key) = mask {
                apply_mask(&mut out[start..], key, 0);
            }
        });
        scratch.clear();
        if let Some(deflate) = self.deflate.as_deref_mut() {
            deflate.scratch = scratch;
        }
    }

    /// Queue a control frame (payload at most 125 bytes, checked by the caller).
    pub(super) fn write_control(&mut self, opcode: OpCode, payload: &[u8]) {
        self.write_header(opcode, true, 0, payload.len(), |out, mask| {
            let start = out.len();
            out.extend_from_slice(payload);
            if let Some(key) = mask {
                apply_mask(&mut out[start..], key, 0);
            }
        });
    }

    /// Queue a frame: a server's large shared payloads go out without a copy.
    fn write_frame(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Payload<'_>) {
        if self.role == Role::Server {
            // No mask: the header, then the payload, copied after it into the tail if small or
            // borrowed (a burst of replies goes out in one write), or queued as it is if large.
            let len = payload.len();
            let header = Header { fin, rsv, opcode, mask: None, payload_len: len as u64 };
            let mut head = [0; MAX_HEADER_LEN];
            let n = header.encode(&mut head);
            match payload {
                Payload::Shared(bytes) if len >= COPY_THRESHOLD => {
                    self.out.extend(&head[..n]);
                    self.out.push(bytes);
                }
                payload => self.out.extend_frame(&head[..n], &payload),
            }
            return;
        }
        self.write_header(opcode, fin, rsv, payload.len(), |out, mask| {
            let start = out.len();
            out.extend_from_slice(&payload);
            if let Some(key) = mask {
                apply_mask(&mut out[start..], key, 0);
            }
        });
    }

    /// Encode a header straight into the write queue's tail, masked for a client, and let
    /// `body` append exactly `len` payload bytes after it (masking them with the key given).
    fn write_header(
        &mut self,
        opcode: OpCode,
        fin: bool,
        rsv: u8,
        len: usize,
        body: impl FnOnce(&mut BytesMut, Option<[u8; 4]>),
    ) {
        let mask = match (self.rng.as_deref_mut(), self.role) {
            (Some(rng), Role::Client) => {
                let mut key = [0; 4];
                rng.fill(&mut key);
                Some(key)
            }
            _ => None,
        };
        let header = Header { fin, rsv, opcode, mask, payload_len: len as u64 };
        let mut head = [0; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let tail = self.out.tail_mut(n + len);
        tail.put_slice(&head[..n]);
        body(tail, mask);
        self.out.commit_tail(n + len);
    }
}
