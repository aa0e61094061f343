//! The receive path: handshake parsing, frame parsing, message assembly, control frames.

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;

use super::{Busy, Connection, Event, InFrame, InMessage, RefusedResponse, State, busy};
use crate::{
    CloseCode, CloseFrame, HandshakeError, Message, ProtocolError, Role, Utf8Bytes,
    deflate::{self, Deflate, InflateError},
    frame::{Header, OpCode, RSV1},
    handshake::{client, server},
    mask::apply_mask,
};

/// The most a read is sized for ahead of data, from the last frame's size.
const READ_HINT_MAX: usize = 256 << 10;

/// A whole small data frame found by [`small_frame`]: its payload, unmasked and validated, is
/// `buf[start..start + len]`.
pub(super) struct SmallFrame {
    pub(super) text: bool,
    pub(super) start: usize,
    pub(super) len: usize,
}

/// What [`small_frame`] found at the start of the buffer.
pub(super) enum Small {
    /// A whole small frame, unmasked and validated.
    Whole(SmallFrame),
    /// The start of one: the rest has not arrived. Nothing is unmasked or validated yet.
    Partial { text: bool },
    /// Anything else, for the general path.
    Other,
}

/// The fast path for most of what arrives: a whole text or binary frame at the start of `buf`,
/// with FIN set, no RSV bit, a 7- or 16-bit length of at most `limit` and the mask its
/// direction needs (`server`: masked). Unmasks and validates its payload in place. Anything
/// else is left to the general path, which must be the only other case a caller handles: this
/// checks the same rules as `check_header` and `handle_frame` do for such a frame (with no
/// fragmented message being assembled), and reports only invalid UTF-8 itself.
#[inline(always)]
pub(super) fn small_frame(buf: &mut [u8], server: bool, limit: usize) -> Result<Small, ProtocolError> {
    let [b0, b1, ref rest @ ..] = *buf else {
        return Ok(Small::Other);
    };
    // FIN set, RSV bits clear, opcode 0x1 (text) or 0x2 (binary).
    let text = b0 == 0x81;
    // §5.1: a client masks every frame, a server none.
    let masked = b1 & 0x80 != 0;
    if !(text || b0 == 0x82) || masked != server {
        return Ok(Small::Other);
    }
    let (len, header_len) = match (b1 & 0x7F, rest) {
        (126, [hi, lo, ..]) => (usize::from(u16::from_be_bytes([*hi, *lo])), 4),
        (126 | 127, _) => return Ok(Small::Other),
        (n, _) => (usize::from(n), 2),
    };
    let start = if masked { header_len + 4 } else { header_len };
    if len > limit {
        return Ok(Small::Other);
    }
    if buf.len() < start + len {
        return Ok(Small::Partial { text });
    }
    let frame = &mut buf[header_len..start + len];
    if let Some((key, payload)) = frame.split_first_chunk_mut::<4>().filter(|_| masked) {
        apply_mask(payload, *key, 0);
    }
    // The frame is whole, so checking it at once fails exactly where the incremental validator
    // would.
    if text && simdutf8::basic::from_utf8(&buf[start..start + len]).is_err() {
        return Err(ProtocolError::InvalidUtf8);
    }
    Ok(Small::Whole(SmallFrame { text, start, len }))
}

impl Connection {
    /// The busy state, taken if there is none (see [`Busy`]).
    #[inline]
    pub(super) fn b(&mut self) -> &mut Busy {
        busy(&mut self.busy)
    }

    /// Process whatever the read buffer holds, as far as the state allows.
    pub(super) fn process(&mut self) {
        loop {
            match self.state {
                State::Handshake => match self.role {
                    Role::Server => {
                        if !self.read_request() {
                            return;
                        }
                    }
                    Role::Client => {
                        if !self.read_response() {
                            return;
                        }
                    }
                },
                State::Refused => {
                    self.read_refused_body();
                    return;
                }
                State::Open | State::CloseSent => {
                    if let Err(e) = self.read_frames() {
                        self.fail(e);
                    }
                    return;
                }
                State::AwaitAccept => return,
                State::Closed | State::Finished => {
                    // RFC 6455 §5.5.1: after the close frame, data is discarded.
                    if let Some(b) = self.busy.as_deref_mut() {
                        b.rbuf.clear();
                    }
                    return;
                }
            }
        }
    }

    /// Server: try to parse the request. Returns whether to keep processing.
    fn read_request(&mut self) -> bool {
        match server::parse_request(&busy(&mut self.busy).rbuf, &self.config) {
            Ok(None) => false,
            Ok(Some((request, n))) => {
                self.b().rbuf.advance(n);
                let request = Box::new(request);
                if let Some(handshake) = self.handshake.as_mut() {
                    if let Some(cfg) = &self.config.deflate {
                        handshake.pending_deflate = deflate::server_negotiate(cfg, request.headers());
                    }
                    handshake.pending_request = Some(request.clone());
                }
                self.state = State::AwaitAccept;
                self.push_event(Event::Request(request));
                false
            }
            Err(error) => {
                let mut head = BytesMut::new();
                server::write_refusal(&error, &self.config, &mut head);
                self.b().out.extend(&head);
                self.closing_mut().error = Some(error.into());
                self.enter_closed();
                false
            }
        }
    }

    /// Client: try to parse the response. Returns whether to keep processing.
    fn read_response(&mut self) -> bool {
        let (head, n) = match client::parse_response(&busy(&mut self.busy).rbuf, &self.config) {
            Ok(None) => return false,
            Ok(Some(parsed)) => parsed,
            Err(error) => {
                self.closing_mut().error = Some(error.into());
                self.shutdown = true;
                self.finish();
                return false;
            }
        };
        self.b().rbuf.advance(n);
        if head.status() != StatusCode::SWITCHING_PROTOCOLS {
            let remaining = head
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            let (parts, ()) = head.into_parts();
            if let Some(handshake) = self.handshake.as_mut() {
                handshake.refused = Some(RefusedResponse {
                    status: parts.status,
                    headers: Box::new(parts.headers),
                    body: Vec::new(),
                    remaining,
                });
            }
            self.state = State::Refused;
            return true;
        }
        // Invariant: `pending_client` is set by `Connection::client`, the only way to get a
        // client connection, and taken only here; `handshake` is kept until the state leaves
        // `Handshake`.
        let pending = self.handshake.as_mut().and_then(|h| h.pending_client.take()).expect("client handshake pending");
        let extensions = head.headers().clone();
        let result = client::check_response(head, &pending).and_then(|response| {
            let agreed = match &self.config.deflate {
                Some(cfg) => deflate::client_accept(cfg, &extensions).map_err(HandshakeError::InvalidResponse)?,
                None if extensions.contains_key(http::header::SEC_WEBSOCKET_EXTENSIONS) => {
                    return Err(HandshakeError::InvalidResponse("server selected an extension that was not offered"));
                }
                None => None,
            };
            Ok((response, agreed))
        });
        match result {
            Ok((response, agreed)) => {
                if let (Some(params), Some(cfg)) = (agreed, &self.config.deflate) {
                    self.deflate = Some(Box::new(Deflate::new(params, Role::Client, cfg)));
                }
                if let Some(protocol) = response.protocol.as_deref() {
                    self.extras_mut().protocol = Some(protocol.into());
                }
                self.open();
                self.push_event(Event::Opened(Box::new(response)));
                true
            }
            Err(error) => {
                // §4.1: "the client MUST _Fail the WebSocket Connection_"; nothing was sent
                // on it yet, so just close.
                self.closing_mut().error = Some(error.into());
                self.shutdown = true;
                self.finish();
                false
            }
        }
    }

    /// Client: collect the body of a non-101 response, bounded by `max_header_bytes`.
    fn read_refused_body(&mut self) {
        let limit = self.config.max_header_bytes;
        let Some(r) = self.handshake.as_mut().and_then(|h| h.refused.as_mut()) else { return };
        let rbuf = &mut busy(&mut self.busy).rbuf;
        let want = r.remaining.unwrap_or(usize::MAX).min(rbuf.len());
        let keep = want.min(limit.saturating_sub(r.body.len()));
        r.body.extend_from_slice(&rbuf[..keep]);
        rbuf.advance(want);
        if let Some(rem) = r.remaining.as_mut() {
            *rem -= want;
        }
        let done = r.remaining == Some(0) || r.body.len() >= limit;
        if done {
            self.finish_refused();
            self.shutdown = true;
            self.finish();
        }
    }

    /// The handshake is done: start the keep-alive timer.
    pub(super) fn open(&mut self) {
        self.state = State::Open;
        self.handshake = None;
        if let Some(interval) = self.config.ping_interval {
            let at = self.now + interval;
            self.extras_mut().next_ping = Some(at);
        }
    }

    /// Parse and handle every complete frame in the read buffer, and unmask and validate what
    /// has arrived of the next one.
    ///
    /// Stops at the first event: the rest is parsed when the application has taken it.
    fn read_frames(&mut self) -> Result<(), ProtocolError> {
        while matches!(self.state, State::Open | State::CloseSent) && self.events_empty() {
            if self.message.is_none()
                && self.b().frame.is_none()
                && let Some(SmallFrame { text, start, len }) = self.parse_small_frame()?
            {
                let rbuf = &mut self.b().rbuf;
                rbuf.advance(start);
                let payload = rbuf.split_to(len).freeze();
                let message =
                    if text { Message::Text(Utf8Bytes::from_validated(payload)) } else { Message::Binary(payload) };
                self.push_event(Event::Message(message));
                continue;
            }
            let mut frame = match self.b().frame {
                Some(frame) => frame,
                None => {
                    let Some((header, n)) = Header::decode(&self.b().rbuf)? else {
                        return Ok(());
                    };
                    let validate = self.check_header(&header)?;
                    self.b().rbuf.advance(n);
                    InFrame { header, done: 0, validate }
                }
            };
            let b = self.b();
            // Invariant: `check_header` refused lengths over `max_frame_size`, a `usize`.
            let len = frame.header.payload_len as usize;
            let avail = b.rbuf.len().min(len);
            if frame.done < avail {
                let fresh = &mut b.rbuf[frame.done..avail];
                if let Some(key) = frame.header.mask {
                    apply_mask(fresh, key, frame.done);
                }
                if frame.validate && b.utf8.feed(fresh).is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                frame.done = avail;
            }
            if avail < len {
                b.frame = Some(frame);
                return Ok(());
            }
            b.frame = None;
            let payload = b.rbuf.split_to(len).freeze();
            // Remember the frame size so the next read can take a whole frame like it.
            // Capped: fits a `u32`.
            self.read_hint = len.min(READ_HINT_MAX) as u32;
            self.handle_frame(frame.header, payload)?;
        }
        Ok(())
    }

    /// The fast path for most of what arrives: see [`small_frame`]. Unmasks and validates the
    /// payload in place and returns where it lies in the read buffer (nothing consumed yet), or
    /// `None` to leave the frame, including every error other than invalid UTF-8, to the general
    /// path.
    pub(super) fn parse_small_frame(&mut self) -> Result<Option<SmallFrame>, ProtocolError> {
        let limit = self.config.max_frame_size.min(self.config.max_message_size);
        let server = self.role == Role::Server;
        let Small::Whole(frame) = small_frame(&mut self.b().rbuf, server, limit)? else {
            return Ok(None);
        };
        // At most 65,535: fits a `u32`.
        self.read_hint = frame.len as u32;
        Ok(Some(frame))
    }

    /// Check a header against the connection's state before any of its payload is read.
    /// Returns whether its payload is uncompressed text to validate as it arrives.
    fn check_header(&mut self, header: &Header) -> Result<bool, ProtocolError> {
        // §5.2: "MUST be 0 unless an extension is negotiated that defines meanings for
        // non-zero values." RFC 7692 §6: RSV1 only on the first frame of a data message.
        let rsv_allowed =
            if self.deflate.is_some() && matches!(header.opcode, OpCode::Text | OpCode::Binary) { RSV1 } else { 0 };
        if header.rsv & !rsv_allowed != 0 {
            return Err(ProtocolError::ReservedBits(header.rsv));
        }
        // §5.1: servers MUST fail on unmasked frames, clients on masked ones.
        match (self.role, header.mask) {
            (Role::Server, None) if !self.config.accept_unmasked => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, Some(_)) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            return Ok(false);
        }
        let compressed = header.rsv & RSV1 != 0;
        let in_compressed_message = compressed
            || (header.opcode == OpCode::Continuation && self.message.as_ref().is_some_and(|m| m.compressed));
        // Deflate makes incompressible data a little longer (peers send a 16 MiB message of
        // random bytes as a 16.02 MiB frame), so compressed frames get 1/16 of slack; what they
        // inflate to is bounded by `max_message_size`.
        let frame_limit = if in_compressed_message {
            self.config.max_frame_size.saturating_add(self.config.max_frame_size / 16)
        } else {
            self.config.max_frame_size
        };
        if header.payload_len > frame_limit as u64 {
            return Err(ProtocolError::FrameTooBig { size: header.payload_len, limit: frame_limit });
        }
        match (header.opcode, &self.message) {
            // §5.4: fragments of one message arrive in order, not interleaved with another.
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            (OpCode::Continuation, Some(m)) => {
                if m.fragments >= self.config.max_fragments {
                    return Err(ProtocolError::TooManyFragments { limit: self.config.max_fragments });
                }
                let size = m.data.len() as u64 + if m.compressed { 0 } else { header.payload_len };
                if size > self.config.max_message_size as u64 {
                    return Err(ProtocolError::MessageTooBig { size, limit: self.config.max_message_size });
                }
                Ok(m.text && !m.compressed)
            }
            (_, _) => {
                // Text or Binary starting a message; control frames returned above.
                if !compressed && header.payload_len > self.config.max_message_size as u64 {
                    return Err(ProtocolError::MessageTooBig {
                        size: header.payload_len,
                        limit: self.config.max_message_size,
                    });
                }
                let text = header.opcode == OpCode::Text;
                if text {
                    self.b().utf8.reset();
                }
                Ok(text && !compressed)
            }
        }
    }

    /// Handle one complete, unmasked frame.
    fn handle_frame(&mut self, header: Header, payload: Bytes) -> Result<(), ProtocolError> {
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                let text = header.opcode == OpCode::Text;
                let compressed = header.rsv & RSV1 != 0;
                if header.fin && !compressed {
                    // The fast path: a whole message in one frame, handed out without a copy.
                    let message = if text {
                        if !self.b().utf8.is_complete() {
                            return Err(ProtocolError::InvalidUtf8);
                        }
                        Message::Text(Utf8Bytes::from_validated(payload))
                    } else {
                        Message::Binary(payload)
                    };
                    self.push_event(Event::Message(message));
                    return Ok(());
                }
                self.message = Some(Box::new(InMessage { text, compressed, fragments: 1, data: BytesMut::new() }));
                self.append(&payload, header.fin)
            }
            OpCode::Continuation => {
                if let Some(m) = self.message.as_mut() {
                    m.fragments += 1;
                }
                self.append(&payload, header.fin)
            }
            OpCode::Ping => {
                if self.config.auto_pong && self.state == State::Open {
                    self.send_control(OpCode::Pong, &payload);
                }
                self.push_event(Event::Ping(payload));
                Ok(())
            }
            OpCode::Pong => {
                if let Some(extras) = self.extras.as_mut().filter(|e| e.pong_deadline.is_some())
                    && payload[..] == extras.ping_counter.to_be_bytes()
                {
                    extras.pong_deadline = None;
                }
                self.push_event(Event::Pong(payload));
                Ok(())
            }
            OpCode::Close => self.handle_close(&payload),
        }
    }

    /// Add a data frame's payload to the message being assembled; deliver it on `fin`.
    fn append(&mut self, payload: &[u8], fin: bool) -> Result<(), ProtocolError> {
        let limit = self.config.max_message_size;
        // Invariant: `check_header` let a data frame through only with a message open or as
        // the start of one, which `handle_frame` just opened.
        let message = self.message.as_mut().expect("message being assembled");
        if message.compressed {
            // Invariant: RSV1 passes `check_header` only when deflate was negotiated.
            let deflate = self.deflate.as_mut().expect("deflate negotiated");
            let start = message.data.len();
            deflate.decompress(payload, fin, &mut message.data, limit).map_err(|e| match e {
                InflateError::TooBig => ProtocolError::MessageTooBig { size: limit as u64 + 1, limit },
                InflateError::Invalid(why) => ProtocolError::InvalidCompressedData(why),
            })?;
            if message.text && busy(&mut self.busy).utf8.feed(&message.data[start..]).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
        } else {
            message.data.extend_from_slice(payload);
        }
        if !fin {
            return Ok(());
        }
        // Invariant: checked just above.
        let message = self.message.take().expect("message being assembled");
        let data = message.data.freeze();
        let message = if message.text {
            if !self.b().utf8.is_complete() {
                return Err(ProtocolError::InvalidUtf8);
            }
            Message::Text(Utf8Bytes::from_validated(data))
        } else {
            Message::Binary(data)
        };
        self.push_event(Event::Message(message));
        Ok(())
    }

    /// The peer's close frame (§5.5.1, §7.1.5): check it, echo it, and wait for the TCP close.
    fn handle_close(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let frame = match payload {
            [] => CloseFrame { code: CloseCode::NO_STATUS, reason: Utf8Bytes::default() },
            [_] => return Err(ProtocolError::InvalidClosePayload),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(reason))
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                CloseFrame { code, reason }
            }
        };
        if self.state == State::Open {
            // §5.5.1: "the endpoint MUST send a Close frame in response ... It SHOULD do so
            // as soon as practical", "typically echoing the status code it received". The
            // reason is echoed too, as Node's `ws` and Python's `websockets` do.
            let echo = (frame.code != CloseCode::NO_STATUS).then(|| frame.clone());
            self.send_close_frame(echo);
        }
        self.closing_mut().received = Some(frame.clone());
        self.push_event(Event::Closing(frame));
        self.enter_closed();
        Ok(())
    }
}
