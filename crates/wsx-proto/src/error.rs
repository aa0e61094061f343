//! What can go wrong: peer faults ([`ProtocolError`]), local misuse ([`SendError`]), settings
//! that do not fit together ([`ConfigError`]).

use http::{HeaderMap, StatusCode};

use crate::close_code::CloseCode;

/// Why a connection failed. Peer faults never come back as `Err` from an input method: they
/// close the connection with the code from [`close_code`](Self::close_code) and are reported
/// through [`Event::Closed`](crate::Event::Closed) and
/// [`Connection::close_reason`](crate::Connection::close_reason).
///
/// The `Display` text is for people and is not part of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The opening handshake failed; see [`HandshakeError`].
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A frame used a reserved opcode (§5.2).
    #[error("frame uses reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A frame set an RSV bit that no negotiated extension defines (§5.2).
    #[error("frame sets reserved bits {0:#05b} that no negotiated extension defines")]
    ReservedBits(u8),
    /// A 64-bit payload length had its most significant bit set (§5.2).
    #[error("frame length has its most significant bit set")]
    InvalidLength,
    /// A server got an unmasked frame (§5.1).
    #[error("client sent an unmasked frame")]
    UnmaskedFrame,
    /// A client got a masked frame (§5.1).
    #[error("server sent a masked frame")]
    MaskedFrame,
    /// A control frame was fragmented (§5.5).
    #[error("control frame is fragmented")]
    FragmentedControl,
    /// A control frame carried more than 125 bytes (§5.5).
    #[error("control frame payload is longer than 125 bytes")]
    ControlTooLong,
    /// A continuation frame arrived with no message to continue (§5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new data frame arrived while a fragmented message was still open (§5.4).
    #[error("new data frame while a fragmented message is open")]
    ExpectedContinuation,
    /// A text message or close reason was not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A close frame carried a 1-byte payload (§5.5.1).
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// A close frame carried a code that may not be sent (§7.4).
    #[error("close frame carries invalid code {0}")]
    InvalidCloseCode(u16),
    /// A frame was larger than `max_frame_size`.
    #[error("frame of {size} bytes exceeds the {limit}-byte frame limit")]
    FrameTooBig {
        /// The declared payload length.
        size: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A message was larger than `max_message_size` (after decompression).
    #[error("message of at least {size} bytes exceeds the {limit}-byte message limit")]
    MessageTooBig {
        /// How many bytes the message had reached.
        size: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A message had more than `max_fragments` frames.
    #[error("message exceeds the limit of {limit} fragments")]
    TooManyFragments {
        /// The limit in force.
        limit: usize,
    },
    /// A compressed message could not be inflated (RFC 7692).
    #[error("invalid compressed data: {0}")]
    InvalidCompressedData(String),
    /// The peer did not answer a keep-alive ping in time.
    #[error("no pong within the pong timeout")]
    PongTimeout,
    /// Nothing arrived from the peer within the idle timeout.
    #[error("no data within the idle timeout")]
    IdleTimeout,
    /// The peer stopped taking what we send: the write queue stayed over `write_high_water`
    /// for `send_timeout` without draining (see [`Config::send_timeout`](crate::Config::send_timeout)).
    #[error("the peer took nothing of the write queue within the send timeout")]
    SendTimeout,
    /// The application could not give the connection the memory its traffic needs (a
    /// server-wide memory budget was spent): failed with 1013, try again later.
    #[error("out of memory for this connection: try again later")]
    Overloaded,
    /// The peer did not finish the closing handshake in time.
    #[error("closing handshake timed out")]
    CloseTimeout,
    /// The TCP connection ended without a close frame.
    #[error("connection ended without a close frame")]
    UnexpectedEof,
}

impl ProtocolError {
    /// The close code this fault is reported to the peer with, per RFC 6455 §7.4.1.
    ///
    /// Handshake failures and faults that leave nothing to send report 1006 (abnormal).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Handshake(_) | Self::CloseTimeout | Self::UnexpectedEof => CloseCode::ABNORMAL,
            Self::InvalidUtf8 | Self::InvalidCompressedData(_) => CloseCode::INVALID_DATA,
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } | Self::TooManyFragments { .. } => CloseCode::TOO_BIG,
            Self::PongTimeout => CloseCode::INTERNAL,
            Self::IdleTimeout => CloseCode::AWAY,
            Self::SendTimeout => CloseCode::POLICY,
            Self::Overloaded => CloseCode::AGAIN,
            _ => CloseCode::PROTOCOL,
        }
    }

    /// Whether this is a timeout (handshake, pong, idle, send or close).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::Handshake(HandshakeError::Timeout)
                | Self::PongTimeout
                | Self::IdleTimeout
                | Self::SendTimeout
                | Self::CloseTimeout
        )
    }
}

/// Why the opening handshake failed (RFC 6455 §4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Server side: the request was refused with this HTTP status (400, 426, 431, …) and
    /// short reason, which were sent to the client.
    #[error("refused the request with {status}: {reason}")]
    BadRequest {
        /// The status sent.
        status: StatusCode,
        /// What was wrong with the request.
        reason: &'static str,
    },
    /// Server side: the application rejected the request with this status.
    #[error("application rejected the request with {status}")]
    Rejected {
        /// The status sent.
        status: StatusCode,
    },
    /// Client side: the server answered with a status other than 101.
    #[error("server answered {status} instead of 101 Switching Protocols{}", body_excerpt(.body))]
    Refused {
        /// The server's status.
        status: StatusCode,
        /// The server's headers.
        headers: Box<HeaderMap>,
        /// The start of the body, up to `max_header_bytes` bytes.
        body: Vec<u8>,
    },
    /// Client side: the request to send is not a WebSocket opening handshake (a URI scheme
    /// other than `ws`, `wss`, `http` or `https`, no host, a method other than GET, …). Local
    /// misuse: nothing was sent.
    #[error("invalid handshake request: {0}")]
    InvalidRequest(&'static str),
    /// Client side: a 101 answer that breaks RFC 6455 §4.1 (bad accept digest, missing
    /// Upgrade, a subprotocol or extension that was not offered, …).
    #[error("invalid handshake response: {0}")]
    InvalidResponse(&'static str),
    /// The request or response head was not valid HTTP/1.1, or was larger than
    /// `max_header_bytes` / `max_headers`.
    #[error("malformed HTTP: {0}")]
    MalformedHttp(&'static str),
    /// The peer ended the connection during the handshake.
    #[error("connection ended during the handshake")]
    UnexpectedEof,
    /// The handshake took longer than `handshake_timeout`.
    #[error("handshake timed out")]
    Timeout,
}

fn body_excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    format!(": {:?}", text.trim())
}

/// Local misuse of a [`Connection`](crate::Connection) command. Never a peer fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closing or closed; nothing more can be sent.
    #[error("connection is closed")]
    Closed,
    /// The opening handshake has not completed yet.
    #[error("handshake is not complete")]
    NotOpen,
    /// A control frame payload (ping, pong, close code plus reason) is over 125 bytes.
    #[error("control frame payload is longer than 125 bytes")]
    ControlTooLong,
    /// The close code may not be sent (§7.4).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A frame that does not fit the message being sent (a continuation with no message open,
    /// a new message while one is open, or a control opcode in `send_frame`).
    #[error("frame does not fit the fragmented message being sent")]
    InvalidFragment,
    /// The call does not apply in this role or state (e.g. `accept` on a client).
    #[error("not valid in this role or state")]
    InvalidState,
}

/// A [`Config`] whose values do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {message}")]
pub struct ConfigError {
    message: &'static str,
}

impl ConfigError {
    pub(crate) fn new(message: &'static str) -> Self {
        Self { message }
    }
}
