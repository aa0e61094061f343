//! Messages as the application sees them.

use std::{fmt, ops::Deref, str};

use bytes::Bytes;

use crate::close_code::CloseCode;

/// UTF-8 text held in [`Bytes`]: cloning and slicing never copy.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wrap bytes already known to be valid UTF-8.
    ///
    /// Returns the bytes back if they are not.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        match crate::utf8::validate(&bytes) {
            Ok(()) => Ok(Self(bytes)),
            Err(_) => Err(bytes),
        }
    }

    /// Wrap bytes the caller has validated.
    ///
    /// Invariant for callers: `bytes` is valid UTF-8 (checked in debug builds).
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// A `'static` string, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks (or, for `from_validated`, requires) that the bytes
        // are valid UTF-8, and `Bytes` is immutable.
        unsafe { str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Unwrap into the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        s.as_str().into()
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(s: Utf8Bytes) -> Self {
        s.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The code and reason of a close frame (RFC 6455 §5.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code; [`CloseCode::NO_STATUS`] when the frame carried none.
    pub code: CloseCode,
    /// The reason, at most 123 bytes of UTF-8; empty when none was given.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with a code and a reason.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        Self { code, reason: reason.into() }
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {:?}", self.code, self.reason.as_str())
        }
    }
}

/// A WebSocket message.
///
/// [`Event::Message`](crate::Event::Message) only ever carries `Text` and `Binary`; pings,
/// pongs and closes arrive as their own events. All five can be sent with
/// [`Connection::send`](crate::Connection::send), and the tokio layer yields all five from
/// its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, with up to 125 bytes of payload.
    Ping(Bytes),
    /// A pong, with up to 125 bytes of payload.
    Pong(Bytes),
    /// A close frame; `None` sends a close frame without a status code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// The payload as bytes (the reason, for a close).
    pub fn as_payload(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b,
            Self::Close(Some(c)) => c.reason.as_bytes(),
            Self::Close(None) => &[],
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Whether this is a text or binary message.
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::text(s)
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Self::binary(b)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(t) => f.write_str(t),
            Self::Binary(b) => write!(f, "<{} bytes of binary>", b.len()),
            Self::Ping(b) => write!(f, "<ping, {} bytes>", b.len()),
            Self::Pong(b) => write!(f, "<pong, {} bytes>", b.len()),
            Self::Close(Some(c)) => write!(f, "<close {c}>"),
            Self::Close(None) => f.write_str("<close>"),
        }
    }
}

/// A text or binary message lent by [`Connection::drain_messages`](crate::Connection::drain_messages)
/// for the length of one call of its handler, straight from the read buffer: nothing is
/// allocated, counted or copied to hand it out.
///
/// Keep what you need with [`to_message`](Self::to_message), which copies small messages and
/// shares large ones; send it back with [`Replies::send`](crate::Replies::send).
#[derive(Clone, Copy)]
pub struct MessageRef<'a> {
    text: bool,
    data: &'a [u8],
    /// The message's own buffer, when it has one (large, fragmented or compressed messages):
    /// keeping or echoing it then copies nothing.
    shared: Option<&'a Bytes>,
}

impl<'a> MessageRef<'a> {
    /// A message whose bytes are borrowed from the read buffer.
    ///
    /// Invariant for callers: `data` is valid UTF-8 when `text` is set.
    pub(crate) fn borrowed(text: bool, data: &'a [u8]) -> Self {
        debug_assert!(!text || str::from_utf8(data).is_ok());
        Self { text, data, shared: None }
    }

    /// A view of a whole text or binary [`Message`]; `None` for the other kinds.
    pub fn from_message(message: &'a Message) -> Option<Self> {
        match message {
            Message::Text(t) => Some(Self { text: true, data: t.as_bytes(), shared: Some(t.as_bytes()) }),
            Message::Binary(b) => Some(Self { text: false, data: b, shared: Some(b) }),
            _ => None,
        }
    }

    /// Whether this is a text message (its bytes are valid UTF-8).
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        !self.text
    }

    /// The payload.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&'a str> {
        // SAFETY: `text` is only set by `borrowed`, whose callers validate the bytes first, and
        // by `from_message` for a `Utf8Bytes`, which is valid UTF-8 by construction.
        self.text.then(|| unsafe { str::from_utf8_unchecked(self.data) })
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The shared buffer behind the payload, if it has one.
    pub(crate) fn shared(&self) -> Option<&'a Bytes> {
        self.shared
    }

    /// An owned [`Message`] with the same contents: a copy of a small message, a shared
    /// reference to a large one.
    pub fn to_message(&self) -> Message {
        let bytes = match self.shared {
            Some(b) => b.clone(),
            None => Bytes::copy_from_slice(self.data),
        };
        if self.text { Message::Text(Utf8Bytes::from_validated(bytes)) } else { Message::Binary(bytes) }
    }
}

impl fmt::Debug for MessageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_text() {
            Some(t) => f.debug_tuple("Text").field(&t).finish(),
            None => f.debug_tuple("Binary").field(&self.data).finish(),
        }
    }
}

impl fmt::Display for MessageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_text() {
            Some(t) => f.write_str(t),
            None => write!(f, "<{} bytes of binary>", self.data.len()),
        }
    }
}

impl PartialEq<Message> for MessageRef<'_> {
    fn eq(&self, other: &Message) -> bool {
        match other {
            Message::Text(t) => self.text && self.data == t.as_bytes().as_ref(),
            Message::Binary(b) => !self.text && self.data == b.as_ref(),
            _ => false,
        }
    }
}
