//! The receive path: the one frame reader, message assembly, and what each frame makes the
//! connection do.
//!
//! Every frame goes through [`Incoming::read_frame`], which applies every rule of RFC 6455 §5
//! and the limits once, and unmasks and validates the payload as it arrives. Two consumers take
//! what it reads: [`Connection::parse_step`] (behind `next_event`), which hands messages out as
//! owned events, and `drain_messages` (`drain.rs`), which lends whole single-frame messages in
//! place and passes every other frame to [`Connection::take_frame`], as `parse_step` does.

use bytes::{Buf, Bytes, BytesMut};

use super::{Connection, Event, State};
use crate::{
    CloseCode, CloseFrame, Config, Message, ProtocolError, Role, Utf8Bytes,
    buf::Buffer,
    deflate::{Deflate, InflateError},
    frame::{OpCode, RawHeader},
    mask::apply_mask,
    utf8::Validator,
};

/// What the rules for an incoming frame depend on besides the frame: the role, the limits and
/// whether permessage-deflate was negotiated.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    server: bool,
    accept_unmasked: bool,
    deflate: bool,
    max_frame_size: usize,
    max_message_size: usize,
    max_fragments: usize,
    /// The largest uncompressed message that fits in one frame: both limits apply.
    single_frame_limit: u64,
}

impl Rules {
    #[inline]
    pub(super) fn new(role: Role, config: &Config, deflate: bool) -> Self {
        Self {
            server: role == Role::Server,
            accept_unmasked: config.accept_unmasked,
            deflate,
            max_frame_size: config.max_frame_size,
            max_message_size: config.max_message_size,
            max_fragments: config.max_fragments,
            single_frame_limit: config.max_frame_size.min(config.max_message_size) as u64,
        }
    }
}

/// A whole frame at the reading position, checked, its payload unmasked and (for text)
/// validated: the payload is `start()..end()` from that position. Small enough to pass in
/// registers.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameRef {
    pub(super) len: usize,
    /// The header's first byte: FIN, RSV and the opcode.
    b0: u8,
    pub(super) compressed: bool,
    /// The header's length (at most 14).
    header: u8,
}

impl FrameRef {
    /// Where the payload starts, from the reading position.
    pub(super) fn start(&self) -> usize {
        usize::from(self.header)
    }

    /// Where the frame ends, from the reading position.
    pub(super) fn end(&self) -> usize {
        self.start() + self.len
    }

    pub(super) fn fin(&self) -> bool {
        self.b0 & 0x80 != 0
    }

    pub(super) fn opcode(&self) -> OpCode {
        // Invariant: `RawHeader::parse` refused the opcodes `from_bits` does not know.
        OpCode::from_bits(self.b0 & 0x0F).expect("a defined opcode")
    }

    /// Whether this frame is a whole uncompressed text or binary message (FIN, no RSV bit,
    /// opcode 1 or 2): the common case, which is handed out without being assembled.
    #[inline(always)]
    pub(super) fn is_single_message(&self) -> bool {
        matches!(self.b0, 0x81 | 0x82)
    }

    /// Whether a single message is text.
    pub(super) fn is_text(&self) -> bool {
        self.b0 & 0x0F == 1
    }
}

/// A text frame whose header has been read and checked, and whose payload is still arriving:
/// what of it is unmasked and validated already. It is always at the front of the read buffer.
/// (Other frames are simply read again once whole.)
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: RawHeader,
    /// Payload bytes already unmasked and validated.
    done: usize,
}

/// What a frame's payload is, as far as reading it goes.
#[derive(Debug, Clone, Copy)]
struct PayloadKind {
    /// Part of a compressed message: inflated and validated when the message is assembled.
    compressed: bool,
    /// Uncompressed text: validated as it arrives.
    text: bool,
}

/// A fragmented or compressed message being assembled.
#[derive(Debug)]
struct InMessage {
    text: bool,
    compressed: bool,
    fragments: usize,
    data: BytesMut,
}

/// What the connection holds of what arrives: the read buffer and how far the frame at its
/// front has been read, and the message being assembled. Part of the work state that only a
/// busy connection holds (`buffers.rs`).
#[derive(Debug, Default)]
pub(super) struct Incoming {
    /// The read buffer: bytes received and not yet taken.
    pub(super) buf: Buffer,
    /// The read buffer's length when `read_buffer` last offered it (see `ReadSize`).
    pub(super) offered: Option<u32>,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    /// Validates text frames that arrive in pieces, and fragmented text messages.
    utf8: Validator,
    /// Why the last `read_frame` found no frame, when a rule was broken rather than bytes
    /// missing. Kept here rather than returned, so that what the reader returns fits in two
    /// registers.
    fault: Option<ProtocolError>,
}

impl Incoming {
    /// The one frame reader: the frame at `pos` in the read buffer, once all of it has arrived,
    /// checked against every rule, its payload unmasked and, for text, validated. `None` means
    /// more bytes are needed, unless a rule was broken: [`take_fault`](Self::take_fault) then
    /// says which. What has arrived of a text payload is unmasked and validated already, so
    /// that invalid text fails as soon as its bytes arrive. Nothing is consumed: the caller
    /// takes the frame with [`assemble`](Self::assemble) or by lending it, then consumes it.
    ///
    /// `pos` is 0 unless the caller has consumed nothing yet of frames it already took (the
    /// borrowed drain); a frame still arriving is only ever at 0.
    #[inline(always)]
    pub(super) fn read_frame(&mut self, pos: usize, rules: &Rules) -> Option<FrameRef> {
        // First branch, for most of what arrives: a whole frame that is a whole text or binary
        // message (FIN, no RSV bit), masked as this side requires, within both size limits, with
        // no fragmented message open. Every rule of `check_rules` lets such a frame through (the
        // build that tests run checks that on every one), so only its payload is left to do.
        if self.frame.is_none() && self.message.is_none() {
            match RawHeader::parse(&self.buf.bytes[pos..]) {
                Ok(None) => return None,
                Ok(Some(header))
                    if matches!(header.b0, 0x81 | 0x82)
                        && header.mask.is_some() == rules.server
                        && header.len <= rules.single_frame_limit =>
                {
                    debug_assert!(self.check_rules(header.b0, header.mask.is_some(), header.len, rules).is_ok());
                    // Invariant: within `single_frame_limit`, a `usize`; a header is at most 14 bytes.
                    let frame = FrameRef {
                        len: header.len as usize,
                        b0: header.b0,
                        compressed: false,
                        header: header.size as u8,
                    };
                    match self.buf.bytes.get_mut(pos + frame.start()..pos + frame.end()) {
                        Some(bytes) => {
                            if let Some(key) = header.mask {
                                apply_mask(bytes, key, 0);
                            }
                            if header.b0 == 0x81 && simdutf8::basic::from_utf8(bytes).is_err() {
                                return self.fault(ProtocolError::InvalidUtf8);
                            }
                            return Some(frame);
                        }
                        // Binary is unmasked once whole: wait for the rest. Text is validated as
                        // it arrives, by the general path.
                        None if header.b0 == 0x82 => return None,
                        None => {}
                    }
                }
                _ => {}
            }
        }
        self.read_any_frame(pos, rules)
    }

    /// [`read_frame`](Self::read_frame) for every frame, rule by rule.
    #[inline(never)]
    fn read_any_frame(&mut self, pos: usize, rules: &Rules) -> Option<FrameRef> {
        if self.frame.is_some() {
            return self.read_more(0);
        }
        let header = match RawHeader::parse(&self.buf.bytes[pos..]) {
            Ok(Some(header)) => header,
            Ok(None) => return None,
            Err(e) => return self.fault(e.into()),
        };
        let payload = match self.check_rules(header.b0, header.mask.is_some(), header.len, rules) {
            Ok(payload) => payload,
            Err(e) => return self.fault(e),
        };
        // Invariant: `check_rules` refused lengths over `max_frame_size`, a `usize`; a header
        // is at most 14 bytes.
        let frame = FrameRef {
            len: header.len as usize,
            b0: header.b0,
            compressed: payload.compressed,
            header: header.size as u8,
        };
        let Some(bytes) = self.buf.bytes.get_mut(pos + frame.start()..pos + frame.end()) else {
            // Text is unmasked and validated as it arrives, so that invalid UTF-8 fails at once;
            // anything else is read again, and unmasked in one go, once it is whole.
            if !payload.text {
                return None;
            }
            self.frame = Some(InFrame { header, done: 0 });
            return self.read_more(pos);
        };
        // The whole frame is here: unmask and validate it in one go.
        if let Some(key) = header.mask {
            apply_mask(bytes, key, 0);
        }
        if payload.text {
            // A whole single-frame message can be checked at once; a fragment continues the
            // message's validation.
            let valid = if frame.is_single_message() {
                simdutf8::basic::from_utf8(bytes).is_ok()
            } else {
                self.utf8.feed(bytes).is_ok() && (!frame.fin() || self.utf8.is_complete())
            };
            if !valid {
                return self.fault(ProtocolError::InvalidUtf8);
            }
        }
        Some(frame)
    }

    /// The rule the last [`read_frame`](Self::read_frame) found broken, if it was that.
    pub(super) fn take_fault(&mut self) -> Option<ProtocolError> {
        self.fault.take()
    }

    #[cold]
    fn fault(&mut self, error: ProtocolError) -> Option<FrameRef> {
        self.fault = Some(error);
        None
    }

    /// Unmask and validate what has arrived of the text frame in progress, at `pos`; return the
    /// frame once it is whole.
    fn read_more(&mut self, pos: usize) -> Option<FrameRef> {
        // Invariant: the callers just set it, or found it set.
        let mut f = self.frame.take().expect("a frame in progress");
        let (size, len) = (f.header.size, f.header.len as usize);
        let buf = &mut self.buf.bytes[pos..];
        let avail = buf.len().min(size + len);
        if size + f.done < avail {
            let fresh = &mut buf[size + f.done..avail];
            if let Some(key) = f.header.mask {
                apply_mask(fresh, key, f.done);
            }
            if self.utf8.feed(fresh).is_err() {
                return self.fault(ProtocolError::InvalidUtf8);
            }
            f.done = avail - size;
        }
        if avail < size + len {
            self.frame = Some(f);
            return None;
        }
        if f.header.b0 & 0x80 != 0 && !self.utf8.is_complete() {
            return self.fault(ProtocolError::InvalidUtf8);
        }
        // Invariant: a header is at most 14 bytes; the frame is uncompressed text.
        Some(FrameRef { len, b0: f.header.b0, compressed: false, header: size as u8 })
    }

    /// The rules a header must follow on this connection, checked before any of its payload
    /// is read; returns what the payload is. Those that hold whatever the connection (reserved
    /// opcodes, the 64-bit length, control frames' length and fragmentation) are
    /// [`RawHeader::parse`]'s.
    fn check_rules(&self, b0: u8, masked: bool, len: u64, rules: &Rules) -> Result<PayloadKind, ProtocolError> {
        let opcode = b0 & 0x0F;
        let rsv = b0 & 0x70;
        let starts_message = matches!(opcode, 1 | 2);
        // §5.2: RSV bits "MUST be 0 unless an extension is negotiated that defines meanings for
        // non-zero values". RFC 7692 §6: RSV1 marks a compressed message on its first frame.
        if rsv != 0 && !(rsv == 0x40 && rules.deflate && starts_message) {
            return Err(ProtocolError::ReservedBits(rsv >> 4));
        }
        // §5.1: "a client MUST mask all frames that it sends to the server"; the server "MUST
        // close the connection upon receiving a frame that is not masked", and "a client MUST
        // close a connection if it detects a masked frame".
        if masked != rules.server {
            if !rules.server {
                return Err(ProtocolError::MaskedFrame);
            }
            if !rules.accept_unmasked {
                return Err(ProtocolError::UnmaskedFrame);
            }
        }
        if opcode & 0x8 != 0 {
            return Ok(PayloadKind { compressed: false, text: false });
        }
        let compressed = rsv != 0 || (!starts_message && self.message.as_ref().is_some_and(|m| m.compressed));
        // Deflate makes incompressible data a little longer (peers send a 16 MiB message of
        // random bytes as a 16.02 MiB frame), so compressed frames get 1/16 of slack; what they
        // inflate to is bounded by `max_message_size`.
        let frame_limit = if compressed {
            rules.max_frame_size.saturating_add(rules.max_frame_size / 16)
        } else {
            rules.max_frame_size
        };
        if len > frame_limit as u64 {
            return Err(ProtocolError::FrameTooBig { size: len, limit: frame_limit });
        }
        // §5.4: the fragments of one message arrive in order, not interleaved with another
        // message's.
        match (starts_message, &self.message) {
            (false, None) => Err(ProtocolError::UnexpectedContinuation),
            (true, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            (false, Some(m)) => {
                if m.fragments >= rules.max_fragments {
                    return Err(ProtocolError::TooManyFragments { limit: rules.max_fragments });
                }
                let size = m.data.len() as u64 + if m.compressed { 0 } else { len };
                if size > rules.max_message_size as u64 {
                    return Err(ProtocolError::MessageTooBig { size, limit: rules.max_message_size });
                }
                Ok(PayloadKind { compressed, text: m.text && !compressed })
            }
            (true, None) => {
                if !compressed && len > rules.max_message_size as u64 {
                    return Err(ProtocolError::MessageTooBig { size: len, limit: rules.max_message_size });
                }
                // The validator is empty between messages: a text message leaves it so when it
                // ends whole, and a failure resets it (`discard`).
                debug_assert!(self.utf8.is_complete());
                Ok(PayloadKind { compressed, text: !compressed && opcode == 1 })
            }
        }
    }

    /// Take a fragment or compressed frame that [`read_frame`](Self::read_frame) read at the
    /// front of the buffer into the message being assembled, and consume it. Returns the
    /// message once its last frame is in.
    fn assemble(
        &mut self,
        frame: &FrameRef,
        deflate: Option<&mut Deflate>,
        limit: usize,
    ) -> Result<Option<Message>, ProtocolError> {
        let text = match frame.opcode() {
            OpCode::Text => true,
            OpCode::Binary => false,
            // Invariant: `check` let a continuation through only with a message open.
            _ => self.message.as_ref().expect("message being assembled").text,
        };
        let message = self.message.get_or_insert_with(|| InMessage {
            text,
            compressed: frame.compressed,
            fragments: 0,
            data: BytesMut::new(),
        });
        message.fragments += 1;
        let payload = &self.buf.bytes[frame.start()..frame.end()];
        if message.compressed {
            // Invariant: RSV1 passes `check` only when deflate was negotiated.
            let deflate = deflate.expect("deflate negotiated");
            let start = message.data.len();
            deflate.decompress(payload, frame.fin(), &mut message.data, limit).map_err(|e| match e {
                InflateError::TooBig => ProtocolError::MessageTooBig { size: limit as u64 + 1, limit },
                InflateError::Invalid(why) => ProtocolError::InvalidCompressedData(why),
            })?;
            deflate.stats.received_compressed += payload.len() as u64;
            deflate.stats.received_decompressed += (message.data.len() - start) as u64;
            if message.text && self.utf8.feed(&message.data[start..]).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
        } else {
            reserve_within(&mut message.data, payload.len(), limit);
            message.data.extend_from_slice(payload);
        }
        self.buf.bytes.advance(frame.end());
        if !frame.fin() {
            return Ok(None);
        }
        // Invariant: set just above.
        let message = self.message.take().expect("message being assembled");
        let data = message.data.freeze();
        if !message.text {
            return Ok(Some(Message::Binary(data)));
        }
        if !self.utf8.is_complete() {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok(Some(Message::Text(Utf8Bytes::from_validated(data))))
    }

    /// Consume the frame at the front of the buffer and return its payload, shared with the
    /// buffer (no copy).
    fn split_payload(&mut self, frame: &FrameRef) -> Bytes {
        let mut whole = self.buf.bytes.split_to(frame.end());
        whole.advance(frame.start());
        whole.freeze()
    }

    /// Whether a message is being assembled or a frame is half received: the connection is
    /// holding something that must survive until more bytes arrive.
    pub(super) fn is_mid_message(&self) -> bool {
        self.frame.is_some() || self.message.is_some()
    }

    /// Whether the frame at the front of the buffer is still arriving, and if so how many of its
    /// bytes are missing.
    pub(super) fn missing(&self) -> Option<usize> {
        let header = match &self.frame {
            Some(frame) => frame.header,
            None => RawHeader::parse(&self.buf.bytes).ok()??,
        };
        let missing = (header.size + header.len as usize).saturating_sub(self.buf.bytes.len());
        (missing > 0).then_some(missing)
    }

    /// Make a work state handed back empty ready for another connection: keep the read
    /// buffer's allocation if it can be reused.
    pub(super) fn recycle(&mut self) {
        self.buf.recycle();
        self.offered = None;
        self.utf8.reset();
    }

    /// Forget everything received: the connection stopped reading (RFC 6455 §5.5.1: "after
    /// sending a Close frame, the endpoint ... MUST NOT send any more data frames"; after
    /// receiving one, what follows is discarded).
    /// Heap bytes held for what arrives: the read buffer's and the message's capacities.
    pub(super) fn memory_held(&self) -> usize {
        self.buf.bytes.capacity() + self.message.as_ref().map_or(0, |m| m.data.capacity())
    }

    pub(super) fn discard(&mut self) {
        self.buf.bytes.clear();
        self.frame = None;
        self.message = None;
        self.utf8.reset();
    }
}

impl Connection {
    /// Parse one step of what was received: the handshake, or one frame, queueing what it
    /// makes happen (events, pongs, close frames). Returns whether it did anything; `false`
    /// means everything received has been parsed. Called by the consumers of input:
    /// [`next_event`](Self::next_event) and [`drain_messages`](Self::drain_messages).
    pub(super) fn parse_step(&mut self) -> bool {
        match self.state {
            State::Handshake | State::Refused => self.read_handshake(),
            State::Open | State::CloseSent => {
                if self.work.as_deref().is_none_or(|w| w.incoming.buf.bytes.is_empty()) {
                    return self.end_of_input();
                }
                let rules = self.rules();
                // Invariant: just checked.
                let work = self.work.as_deref_mut().expect("work state");
                if let Some(frame) = work.incoming.read_frame(0, &rules) {
                    self.take_frame(frame);
                    return true;
                }
                match work.incoming.take_fault() {
                    Some(e) => {
                        self.fail(e);
                        true
                    }
                    None => self.end_of_input(),
                }
            }
            State::AwaitAccept | State::AwaitingEof | State::Finished => self.end_of_input(),
        }
    }

    /// Nothing more can be parsed from what was received: if the peer's EOF came after it,
    /// it takes effect now. Returns whether it did.
    #[inline]
    pub(super) fn end_of_input(&mut self) -> bool {
        if !self.eof || self.state == State::Finished {
            return false;
        }
        self.handle_eof();
        true
    }

    /// The rules frames arriving on this connection must follow.
    #[inline]
    pub(super) fn rules(&self) -> Rules {
        Rules::new(self.role, &self.config, self.deflate.is_some())
    }

    /// Take a whole frame that [`Incoming::read_frame`] read at the front of the read buffer:
    /// queue the message it completes, or do what a control frame asks, and consume it.
    pub(super) fn take_frame(&mut self, frame: FrameRef) {
        self.sizing.took(frame.len);
        let limit = self.config.max_message_size;
        // Invariant: `read_frame` just read the frame from the work state's buffer.
        let work = self.work.as_deref_mut().expect("work state");
        let result = if frame.opcode().is_control() {
            let payload = work.incoming.split_payload(&frame);
            self.take_control(frame.opcode(), payload)
        } else if frame.is_single_message() {
            let payload = work.incoming.split_payload(&frame);
            let message = if frame.is_text() {
                Message::Text(Utf8Bytes::from_validated(payload))
            } else {
                Message::Binary(payload)
            };
            work.events.push_back(Event::Message(message));
            Ok(())
        } else {
            work.incoming.assemble(&frame, self.deflate.as_deref_mut(), limit).map(|message| {
                if let Some(message) = message {
                    work.events.push_back(Event::Message(message));
                }
            })
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// A ping, a pong or a close frame arrived.
    fn take_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::Ping => {
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                // response, unless it already received a Close frame."
                if self.config.auto_pong && self.state == State::Open {
                    self.writer().control(OpCode::Pong, &payload);
                }
                self.push_event(Event::Ping(payload));
            }
            OpCode::Pong => {
                self.pong_received(&payload);
                self.push_event(Event::Pong(payload));
            }
            _ => {
                let frame = close_frame(&payload)?;
                self.close_received(frame);
            }
        }
        Ok(())
    }
}

/// Make room in `data`, a message being assembled, for `additional` more bytes, growing it by
/// doubling but never its capacity past `limit` (`check_rules` held the message to it, so
/// `data.len() + additional <= limit`).
///
/// `BytesMut` doubles from whatever the first fragment's size was, so a message at the limit
/// could hold up to twice the limit (1.78 times the default 64 MiB with a 12 MiB first
/// fragment; `tests/memory_bound.rs`). The last step goes through `Vec::reserve_exact`, as the
/// inflater's `reserve_bounded` does; the buffer is never shared while it is assembled, so the
/// conversions keep its allocation.
fn reserve_within(data: &mut BytesMut, additional: usize, limit: usize) {
    let len = data.len();
    if data.capacity() - len >= additional {
        return;
    }
    let needed = len.saturating_add(additional);
    let target = len.saturating_mul(2).max(needed).min(limit.max(needed));
    if target >= data.capacity().saturating_mul(2) {
        // What doubling gives anyway, and within the limit.
        data.reserve(target - len);
        return;
    }
    let mut exact = Vec::from(std::mem::take(data));
    exact.reserve_exact(target - len);
    *data = BytesMut::from(Bytes::from(exact));
}

/// Read a close frame's payload (§5.5.1): empty, or a code that may be sent and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<CloseFrame, ProtocolError> {
    match payload {
        [] => Ok(CloseFrame { code: CloseCode::NO_STATUS, reason: Utf8Bytes::default() }),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason =
                Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(reason)).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(CloseFrame { code, reason })
        }
    }
}
