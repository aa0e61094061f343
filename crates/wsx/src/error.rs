//! The one error type of the tokio layer.

use std::{fmt, io};

use wsx_proto::{CloseCode, ConfigError, HandshakeError, ProtocolError, SendError};

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on a WebSocket, opaque so that it can grow.
///
/// Ask it what happened with the predicates ([`is_io`](Self::is_io),
/// [`is_protocol`](Self::is_protocol), [`is_timeout`](Self::is_timeout), …) or
/// [`close_code`](Self::close_code); the underlying error is its
/// [`source`](std::error::Error::source). `Display` describes only this level and its text is
/// not part of the API. A normal close is never an error: the stream just ends.
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// Reading or writing the socket failed (including TLS failures, which rustls reports as
    /// I/O errors).
    Io(io::Error),
    /// The peer broke the protocol, failed the handshake or timed out.
    Protocol(ProtocolError),
    /// The application misused the connection (sent after close, control frame too long, …).
    Send(SendError),
    /// The configuration is invalid.
    Config(ConfigError),
    /// The URL or request could not be used.
    Url(String),
    /// A header or subprotocol given for the opening handshake is invalid.
    Request(String),
    /// Connecting (TCP and TLS) took longer than the connect timeout.
    #[cfg_attr(
        not(feature = "client"),
        expect(dead_code, reason = "only the client makes it; the predicates and Display match it in every build")
    )]
    ConnectTimeout,
    /// TLS could not be set up (bad certificate file, no usable key, unknown server name).
    #[cfg_attr(
        not(any(feature = "client", feature = "__tls")),
        expect(
            dead_code,
            reason = "only the client and `tls` make it; the predicates and Display match it in every build"
        )
    )]
    Tls(String),
    /// The proxy refused the tunnel, or broke off while setting it up: what it said (the proxy
    /// named without its credentials) and its HTTP status, if it gave one.
    #[cfg_attr(
        not(feature = "client"),
        expect(dead_code, reason = "only the client makes it; the predicates and Display match it in every build")
    )]
    Proxy { message: String, status: Option<u16> },
    /// A redirect was not followed: too many, a downgrade from `wss` to `ws`, or no usable
    /// `Location`.
    #[cfg_attr(
        not(feature = "client"),
        expect(dead_code, reason = "only the client makes it; the predicates and Display match it in every build")
    )]
    Redirect(String),
    /// A message for the next connection did not fit in the reconnect queue.
    #[cfg_attr(
        not(feature = "client"),
        expect(dead_code, reason = "only the client makes it; the predicates and Display match it in every build")
    )]
    QueueFull { queued: usize, len: usize, max: usize },
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self { kind }
    }

    pub(crate) fn url(message: impl Into<String>) -> Self {
        Self::new(Kind::Url(message.into()))
    }

    pub(crate) fn request(message: impl Into<String>) -> Self {
        Self::new(Kind::Request(message.into()))
    }

    #[cfg(any(feature = "client", feature = "__tls"))]
    pub(crate) fn tls(message: impl Into<String>) -> Self {
        Self::new(Kind::Tls(message.into()))
    }

    #[cfg(feature = "client")]
    pub(crate) fn connect_timeout() -> Self {
        Self::new(Kind::ConnectTimeout)
    }

    #[cfg(feature = "client")]
    pub(crate) fn proxy(proxy: &crate::proxy::ProxyUrl, what: impl fmt::Display, status: Option<u16>) -> Self {
        Self::new(Kind::Proxy { message: format!("proxy {proxy} {what}"), status })
    }

    #[cfg(feature = "client")]
    pub(crate) fn redirect(message: impl Into<String>) -> Self {
        Self::new(Kind::Redirect(message.into()))
    }

    #[cfg(feature = "client")]
    pub(crate) fn queue_full(queued: usize, len: usize, max: usize) -> Self {
        Self::new(Kind::QueueFull { queued, len, max })
    }

    /// Whether a message for the next connection was refused because the
    /// [`Outbox`](crate::Outbox) was full.
    pub fn is_queue_full(&self) -> bool {
        matches!(self.kind, Kind::QueueFull { .. })
    }

    /// Whether the proxy refused the tunnel or broke off while setting it up (an I/O error on
    /// the way to the proxy is [`is_io`](Self::is_io) instead, and names the proxy).
    pub fn is_proxy(&self) -> bool {
        matches!(self.kind, Kind::Proxy { .. })
    }

    /// Whether a redirect was refused: more than `max_redirects`, a downgrade from `wss://` to
    /// `ws://`, or a `Location` that is not a WebSocket URL.
    pub fn is_redirect(&self) -> bool {
        matches!(self.kind, Kind::Redirect(_))
    }

    /// Whether trying again later may succeed: I/O errors, timeouts, HTTP 500, 502, 503 or
    /// 504 from the server (or a proxy), and connections closed with 1001 (going away), 1006
    /// (abnormal), 1011 (internal error), 1012 (service restart) or 1013 (try again later).
    ///
    /// Never for a 4xx answer, a TLS certificate failure, a bad URL or setting, a refused
    /// redirect, or a protocol violation: retrying those repeats them. This is
    /// [`Reconnecting`](crate::Reconnecting)'s default rule.
    pub fn is_transient(&self) -> bool {
        const STATUSES: [u16; 4] = [500, 502, 503, 504];
        const CODES: [u16; 5] = [1001, 1006, 1011, 1012, 1013];
        match &self.kind {
            _ if self.is_tls() => false,
            Kind::Io(_) | Kind::ConnectTimeout => true,
            Kind::Proxy { status, .. } => status.is_none_or(|s| STATUSES.contains(&s)),
            Kind::Protocol(ProtocolError::Handshake(HandshakeError::Refused { status, .. })) => {
                STATUSES.contains(&status.as_u16())
            }
            Kind::Protocol(e) if e.is_timeout() => true,
            // The connection dropped during the handshake; any other bad answer is not transient.
            Kind::Protocol(ProtocolError::Handshake(h)) => matches!(h, HandshakeError::UnexpectedEof),
            Kind::Protocol(e) => CODES.contains(&e.close_code().0),
            _ => false,
        }
    }

    /// For a refused handshake, how long the server asked the client to wait before trying
    /// again (`Retry-After` in seconds; an HTTP date is not understood and gives `None`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let Kind::Protocol(ProtocolError::Handshake(HandshakeError::Refused { headers, .. })) = &self.kind else {
            return None;
        };
        let seconds = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
        Some(std::time::Duration::from_secs(seconds))
    }

    /// Whether the socket failed (connection refused or reset, broken pipe, TLS alert, …).
    pub fn is_io(&self) -> bool {
        matches!(self.kind, Kind::Io(_))
    }

    /// Whether the peer broke the WebSocket protocol or failed the handshake.
    pub fn is_protocol(&self) -> bool {
        matches!(self.kind, Kind::Protocol(_))
    }

    /// Whether the opening handshake failed (refused, invalid, or timed out).
    pub fn is_handshake(&self) -> bool {
        matches!(self.kind, Kind::Protocol(ProtocolError::Handshake(_)))
    }

    /// Whether a timeout fired: connect, handshake, pong, idle or close.
    pub fn is_timeout(&self) -> bool {
        match &self.kind {
            Kind::ConnectTimeout => true,
            Kind::Protocol(e) => e.is_timeout(),
            Kind::Io(e) => e.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }

    /// Whether the application used a closed connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.kind, Kind::Send(SendError::Closed))
    }

    /// Whether the URL, request or configuration was unusable.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, Kind::Config(_) | Kind::Url(_) | Kind::Request(_) | Kind::Tls(_))
    }

    /// Whether TLS failed: setting it up, or during the handshake (certificate not trusted,
    /// name mismatch, alert from the peer).
    pub fn is_tls(&self) -> bool {
        match &self.kind {
            Kind::Tls(_) => true,
            Kind::Io(e) => e.get_ref().is_some_and(is_rustls_error),
            _ => false,
        }
    }

    /// The close code the failure was reported to the peer with, for a protocol failure.
    pub fn close_code(&self) -> Option<CloseCode> {
        match &self.kind {
            Kind::Protocol(e) => Some(e.close_code()),
            _ => None,
        }
    }

    /// For a client whose handshake the server refused: the HTTP status it answered.
    pub fn http_status(&self) -> Option<http::StatusCode> {
        match &self.kind {
            Kind::Protocol(ProtocolError::Handshake(HandshakeError::Refused { status, .. })) => Some(*status),
            _ => None,
        }
    }

    /// The protocol error, if that is what this is.
    pub fn protocol_error(&self) -> Option<&ProtocolError> {
        match &self.kind {
            Kind::Protocol(e) => Some(e),
            _ => None,
        }
    }

    /// The I/O error, if that is what this is.
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.kind {
            Kind::Io(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "__tls")]
fn is_rustls_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.is::<rustls::Error>()
}

#[cfg(not(feature = "__tls"))]
fn is_rustls_error(_: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    false
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("wsx::Error").field(&self.kind).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Io(e) if e.get_ref().is_some_and(is_rustls_error) => write!(f, "TLS error: {e}"),
            Kind::Io(e) => write!(f, "I/O error: {e}"),
            Kind::Protocol(ProtocolError::Handshake(e)) => write!(f, "WebSocket handshake failed: {e}"),
            Kind::Protocol(e) => write!(f, "WebSocket protocol error (close {}): {e}", e.close_code().0),
            Kind::Send(e) => write!(f, "cannot send: {e}"),
            Kind::Config(e) => write!(f, "{e}"),
            Kind::Url(e) => write!(f, "invalid URL: {e}"),
            Kind::Request(e) => write!(f, "invalid request: {e}"),
            Kind::ConnectTimeout => f.write_str("connect timed out"),
            Kind::Tls(e) => write!(f, "TLS setup failed: {e}"),
            Kind::Proxy { message, .. } => f.write_str(message),
            Kind::Redirect(e) => write!(f, "redirect not followed: {e}"),
            Kind::QueueFull { queued, len, max } => write!(
                f,
                "the reconnect queue is full: {queued} bytes queued, a {len}-byte message would pass the {max}-byte limit"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Io(e) => Some(e),
            Kind::Protocol(e) => Some(e),
            Kind::Send(e) => Some(e),
            Kind::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::new(Kind::Io(e))
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::new(Kind::Protocol(e))
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::new(Kind::Protocol(e.into()))
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Self::new(Kind::Send(e))
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::new(Kind::Config(e))
    }
}

impl From<wsx_proto::ClientError> for Error {
    fn from(e: wsx_proto::ClientError) -> Self {
        match e {
            wsx_proto::ClientError::Config(c) => c.into(),
            wsx_proto::ClientError::Request(HandshakeError::InvalidRequest(why)) => Self::request(why),
            wsx_proto::ClientError::Request(r) => Self::request(r.to_string()),
            _ => Self::url(e.to_string()),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e.kind {
            Kind::Io(io) => io,
            other => io::Error::other(Error::new(other)),
        }
    }
}
