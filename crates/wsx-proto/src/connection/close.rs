//! The closing handshake and failing the connection (RFC 6455 §7): starting the close, echoing
//! the peer's, failing on a fault, the close timeout, the end of the TCP connection, and how the
//! connection ended.

use std::{fmt, time::Instant};

use super::{Connection, Event, State};
use crate::{
    CloseCode, CloseFrame, HandshakeError, ProtocolError, Role, SendError,
    frame::{MAX_CONTROL_PAYLOAD, OpCode},
};

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The close frame the peer sent, if one arrived.
    pub received: Option<CloseFrame>,
    /// The close frame we sent, if any.
    pub sent: Option<CloseFrame>,
    /// Why the connection failed, if it did; `None` after a complete closing handshake.
    pub error: Option<ProtocolError>,
}

impl CloseReason {
    /// The WebSocket Connection Close Code of RFC 6455 §7.1.5: the code in the peer's close
    /// frame; else the code of the failure; else 1006 (abnormal closure).
    pub fn code(&self) -> CloseCode {
        match (&self.received, &self.error) {
            (Some(frame), _) => frame.code,
            (None, Some(e)) => e.close_code(),
            (None, None) => CloseCode::ABNORMAL,
        }
    }

    /// Whether the closing handshake completed: both close frames crossed and no failure.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.received.is_some() && self.sent.is_some()
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error, &self.received) {
            (Some(e), _) => write!(f, "connection failed: {e}"),
            (None, Some(frame)) => write!(f, "closed by peer with {frame}"),
            (None, None) => write!(f, "closed"),
        }
    }
}

/// The closing handshake and how the connection ended: allocated by the first close frame,
/// failure or close timer, so that an open connection does not carry it.
#[derive(Debug, Default)]
pub(super) struct Closing {
    sent: Option<CloseFrame>,
    received: Option<CloseFrame>,
    error: Option<ProtocolError>,
    /// When to stop waiting for the peer (its close frame, or the end of TCP).
    pub(super) deadline: Option<Instant>,
}

impl Closing {
    fn reason(&self) -> CloseReason {
        CloseReason { received: self.received.clone(), sent: self.sent.clone(), error: self.error.clone() }
    }
}

/// The close frame to send for `code` and `reason`, checked: `NO_STATUS` means a close frame
/// without a code, and then no reason; otherwise a code that may appear on the wire (§7.4) and a
/// reason that fits a control frame with it.
pub(super) fn close_frame(code: CloseCode, reason: &str) -> Result<Option<CloseFrame>, SendError> {
    if code == CloseCode::NO_STATUS {
        return if reason.is_empty() { Ok(None) } else { Err(SendError::InvalidCloseCode(code.0)) };
    }
    let frame = CloseFrame::new(code, reason);
    check_close_frame(Some(&frame))?;
    Ok(Some(frame))
}

/// Whether `frame` may be sent: see [`close_frame`].
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

impl Connection {
    /// Start the closing handshake (RFC 6455 §7.1.2) with a code and a reason of at most
    /// 123 bytes. The connection keeps receiving until the peer's close frame arrives, and
    /// gives up after `close_timeout`.
    ///
    /// Calling it again while closing does nothing. `CloseCode::NO_STATUS` sends a close
    /// frame without a code (the reason must then be empty).
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), SendError> {
        let frame = close_frame(code, reason)?;
        self.observe(now);
        self.start_close(frame)?;
        self.observe(now);
        Ok(())
    }

    /// Fail the connection with 1013 (try again later) because the application cannot give it
    /// more memory, as a server-wide memory budget does: what is being received (the read
    /// buffer, the message being assembled) and the compression states are freed at once, a
    /// 1013 close frame is queued after what is already queued, and the connection waits for
    /// the TCP close as after any failure. Does nothing unless the connection is open or
    /// closing from our side.
    pub fn fail_overloaded(&mut self, now: Instant) {
        self.observe(now);
        if !matches!(self.state, State::Open | State::CloseSent) {
            return;
        }
        self.fail(ProtocolError::Overloaded);
        if let Some(w) = self.work.as_deref_mut() {
            w.incoming.discard();
            w.incoming.buf.free();
        }
        // Nothing more is sent but control frames, which are never compressed.
        self.deflate = None;
    }

    /// Heap bytes the connection holds for the traffic of its peer: the read buffer, the
    /// message being assembled, the write queue, and the permessage-deflate states (about 46
    /// KiB for the inflater, 273 KiB for the compressor, once created). What a server-wide
    /// memory budget counts; cheap enough to ask after every read.
    pub fn memory_held(&self) -> usize {
        let work = self.work.as_deref().map_or(0, |w| w.incoming.memory_held() + w.outgoing.len());
        work + self.deflate.as_deref().map_or(0, |d| d.memory_held())
    }

    /// How the connection ended, or is ending: available once a close frame has crossed or
    /// the connection failed.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let closing = self.closing.as_deref()?;
        if closing.sent.is_none() && closing.received.is_none() && closing.error.is_none() {
            return None;
        }
        Some(closing.reason())
    }

    /// Send our close frame, checked by the caller, and wait for the peer's. The close timer is
    /// armed with the next `now` the connection is given.
    pub(super) fn start_close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        match self.state {
            State::Open => {
                self.send_close_frame(frame);
                self.state = State::CloseSent;
                self.close_timer_pending = true;
                Ok(())
            }
            State::CloseSent | State::AwaitingEof | State::Finished => Ok(()),
            State::Handshake | State::AwaitAccept | State::Refused => Err(SendError::NotOpen),
        }
    }

    /// The peer's close frame arrived (§5.5.1, §7.1.5): echo it unless we sent ours, report it,
    /// and wait for the TCP close.
    pub(super) fn close_received(&mut self, frame: CloseFrame) {
        if self.state == State::Open {
            // §5.5.1: "the endpoint MUST send a Close frame in response ... It SHOULD do so as
            // soon as practical", "typically echoing the status code it received". The reason
            // is echoed too, as Node's `ws` and Python's `websockets` do.
            let echo = (frame.code != CloseCode::NO_STATUS).then(|| frame.clone());
            self.send_close_frame(echo);
        }
        self.closing_mut().received = Some(frame.clone());
        self.push_event(Event::Closing(frame));
        self.await_eof();
    }

    /// Fail the connection (RFC 6455 §7.1.7): send a close frame with the fault's code if
    /// none was sent yet, stop reading, and close the TCP connection.
    pub(super) fn fail(&mut self, error: ProtocolError) {
        if self.state == State::Open {
            let code = error.close_code();
            if code.is_sendable() {
                let reason = short_reason(&error);
                self.send_close_frame(Some(CloseFrame::new(code, reason.as_str())));
            }
        }
        self.record_error(error);
        self.await_eof();
        self.shutdown = true;
    }

    /// The handshake failed: record why, and end at once (nothing was opened to close).
    pub(super) fn fail_handshake(&mut self, error: HandshakeError) {
        self.record_error(error);
        self.shutdown = true;
        self.finish();
    }

    /// Refuse the opening handshake: `response` is queued, then the connection closes.
    pub(super) fn refuse(&mut self, response: &[u8], error: HandshakeError) {
        self.work().outgoing.extend(response);
        self.closing_mut().error = Some(error.into());
        self.await_eof();
        // A refused client has nothing more to say: no reason to wait for it.
        self.shutdown = true;
    }

    /// The close is decided (both close frames crossed, or the connection failed or was
    /// refused): stop reading and wait for the TCP close, up to the close timeout. RFC 6455
    /// §7.1.1: the server closes TCP first. Over an HTTP/2 stream the client ends its side at
    /// once too (END_STREAM): a server may wait for it before it ends its own (Hypercorn does).
    fn await_eof(&mut self) {
        self.state = State::AwaitingEof;
        if let Some(w) = self.work.as_deref_mut() {
            w.incoming.discard();
        }
        self.handshake = None;
        self.closing_mut().deadline = Some(self.now + self.config.close_timeout);
        self.close_timer_pending = false;
        if self.role == Role::Server || self.session.as_ref().is_some_and(|s| s.end_stream_first) {
            self.shutdown = true;
        }
    }

    /// The peer's end of the TCP connection, once everything received before it was parsed.
    pub(super) fn handle_eof(&mut self) {
        match self.state {
            State::Finished => return,
            State::Handshake | State::AwaitAccept => {
                self.record_error(HandshakeError::UnexpectedEof);
            }
            State::Refused => self.finish_refused(),
            State::Open | State::CloseSent => {
                self.record_error(ProtocolError::UnexpectedEof);
            }
            State::AwaitingEof => {}
        }
        self.shutdown = true;
        self.finish();
    }

    /// The close timer: the peer took too long to answer our close frame, or to close TCP.
    pub(super) fn close_timeout(&mut self, now: Instant) {
        if self.closing.as_ref().and_then(|c| c.deadline).is_some_and(|t| now >= t) {
            if self.state == State::CloseSent {
                self.record_error(ProtocolError::CloseTimeout);
            }
            self.shutdown = true;
            self.finish();
        }
    }

    /// Queue [`Event::Closed`]; nothing happens after it.
    pub(super) fn finish(&mut self) {
        if self.state == State::Finished {
            return;
        }
        self.state = State::Finished;
        if let Some(w) = self.work.as_deref_mut() {
            w.incoming.discard();
            w.incoming.buf.free();
        }
        self.handshake = None;
        let reason = self.closing_mut().reason();
        self.push_event(Event::Closed(Box::new(reason)));
    }

    /// Queue a close frame and remember it.
    fn send_close_frame(&mut self, frame: Option<CloseFrame>) {
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
        self.writer().control(OpCode::Close, &payload[..len]);
        self.closing_mut().sent =
            Some(frame.unwrap_or(CloseFrame { code: CloseCode::NO_STATUS, reason: Default::default() }));
    }

    /// Record why the connection failed, unless a cause was recorded already.
    pub(super) fn record_error(&mut self, error: impl Into<ProtocolError>) {
        self.closing_mut().error.get_or_insert(error.into());
    }

    /// The closing state, created on first use.
    pub(super) fn closing_mut(&mut self) -> &mut Closing {
        self.closing.get_or_insert_with(Box::default)
    }
}

/// The reason sent in a close frame for a failure: the error's text, cut at a character
/// boundary to fit the 123 bytes a close reason may have.
fn short_reason(error: &ProtocolError) -> String {
    let mut text = error.to_string();
    if text.len() > MAX_CONTROL_PAYLOAD - 2 {
        let mut end = MAX_CONTROL_PAYLOAD - 2;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
