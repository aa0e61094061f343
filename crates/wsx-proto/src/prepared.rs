//! [`Prepared`]: a text or binary message framed once, to be sent to many connections.
//!
//! A server's frames are not masked, so every connection it sends a message to puts the same
//! bytes on the wire: the header and the payload. Framing them once and sharing the result is
//! what makes fan-out cheap (one allocation per message, none per recipient). With
//! permessage-deflate the same holds for the compressed form, as long as it is compressed
//! without reference to anything sent before (RFC 7692 §7.2.3.2 allows a sender to do that at
//! any time, whatever was negotiated): see [`Connection::send_prepared`] for which connections
//! can use it.
//!
//! [`Connection::send_prepared`]: crate::Connection::send_prepared

use std::{fmt, sync::Arc, sync::OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    Message, MessageRef, Utf8Bytes, deflate,
    frame::{Header, MAX_HEADER_LEN, OpCode, RSV1},
};

/// A text or binary message framed once for many connections; cloning it shares the frame.
///
/// Give it to [`Connection::send_prepared`](crate::Connection::send_prepared) for each
/// recipient. A server copies a small frame into its write queue (where it joins the other
/// frames of the same write) and queues a large one by reference; a client, whose frames must
/// be masked with a key of its own, frames it anew.
///
/// ```
/// use wsx_proto::Prepared;
///
/// let update = Prepared::text("{\"price\": 101.5}");
/// assert_eq!(update.payload(), b"{\"price\": 101.5}");
/// assert_eq!(&update.frame()[..2], &[0x81, 16]); // FIN + text, unmasked, 16 bytes
/// ```
#[derive(Clone)]
pub struct Prepared(Arc<Inner>);

struct Inner {
    opcode: OpCode,
    /// Length of the header at the front of `frame`.
    head_len: u8,
    /// The unmasked frame: header, then payload.
    frame: Bytes,
    /// The frame compressed without context takeover at a 15-bit window, made on first demand;
    /// `None` when compressing does not make it smaller.
    deflated: OnceLock<Option<Bytes>>,
}

impl Prepared {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::frame_once(OpCode::Text, text.into().as_bytes())
    }

    /// A binary message.
    pub fn binary(data: impl AsRef<[u8]>) -> Self {
        Self::frame_once(OpCode::Binary, data.as_ref())
    }

    /// A copy of a message lent by [`Connection::drain_messages`](crate::Connection::drain_messages).
    pub fn from_ref(message: MessageRef<'_>) -> Self {
        let opcode = if message.is_text() { OpCode::Text } else { OpCode::Binary };
        Self::frame_once(opcode, message.as_bytes())
    }

    /// Header and payload in one buffer: the one copy of the payload, the one allocation of
    /// the frame.
    fn frame_once(opcode: OpCode, payload: &[u8]) -> Self {
        let header = Header { fin: true, rsv: 0, opcode, mask: None, payload_len: payload.len() as u64 };
        let mut head = [0; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut frame = BytesMut::with_capacity(n + payload.len());
        frame.put_slice(&head[..n]);
        frame.put_slice(payload);
        Self(Arc::new(Inner { opcode, head_len: n as u8, frame: frame.freeze(), deflated: OnceLock::new() }))
    }

    /// [`OpCode::Text`] or [`OpCode::Binary`].
    pub fn opcode(&self) -> OpCode {
        self.0.opcode
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.0.opcode == OpCode::Text
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.0.frame[usize::from(self.0.head_len)..]
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.0.frame.len() - usize::from(self.0.head_len)
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole frame as a server sends it: header and unmasked payload.
    pub fn frame(&self) -> &Bytes {
        &self.0.frame
    }

    /// The frame's payload as a shared buffer (no copy).
    pub fn payload_bytes(&self) -> Bytes {
        self.0.frame.slice(usize::from(self.0.head_len)..)
    }

    /// The frame compressed with permessage-deflate, with no reference to earlier messages and
    /// within a 15-bit window; `None` when that would not be smaller than the payload. Made once,
    /// by whichever connection asks first, and shared after that.
    pub(crate) fn deflated(&self) -> Option<&Bytes> {
        self.0.deflated.get_or_init(|| deflate_frame(self.opcode(), self.payload())).as_ref()
    }

    /// Whether the compressed form has been made.
    #[cfg(test)]
    pub(crate) fn has_deflated(&self) -> bool {
        self.0.deflated.get().is_some()
    }

    /// The same message as a [`Message`] (shares the payload).
    pub fn to_message(&self) -> Message {
        let payload = self.payload_bytes();
        match self.0.opcode {
            OpCode::Text => Message::Text(Utf8Bytes::from_validated(payload)),
            _ => Message::Binary(payload),
        }
    }
}

/// A compressed frame of `payload` (RSV1 set), or `None` if it compresses to no less.
fn deflate_frame(opcode: OpCode, payload: &[u8]) -> Option<Bytes> {
    let mut compressed = BytesMut::new();
    deflate::compress_alone(payload, &mut compressed);
    if compressed.len() >= payload.len() {
        return None;
    }
    let header = Header { fin: true, rsv: RSV1, opcode, mask: None, payload_len: compressed.len() as u64 };
    let mut head = [0; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut frame = BytesMut::with_capacity(n + compressed.len());
    frame.put_slice(&head[..n]);
    frame.put_slice(&compressed);
    Some(frame.freeze())
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared").field("opcode", &self.0.opcode).field("len", &self.len()).finish_non_exhaustive()
    }
}

impl From<&str> for Prepared {
    fn from(text: &str) -> Self {
        Self::frame_once(OpCode::Text, text.as_bytes())
    }
}

impl From<String> for Prepared {
    fn from(text: String) -> Self {
        Self::frame_once(OpCode::Text, text.as_bytes())
    }
}

impl From<Utf8Bytes> for Prepared {
    fn from(text: Utf8Bytes) -> Self {
        Self::text(text)
    }
}

impl From<Bytes> for Prepared {
    fn from(data: Bytes) -> Self {
        Self::binary(data)
    }
}

impl From<Vec<u8>> for Prepared {
    fn from(data: Vec<u8>) -> Self {
        Self::binary(data)
    }
}

impl From<&[u8]> for Prepared {
    fn from(data: &[u8]) -> Self {
        Self::binary(data)
    }
}

impl From<MessageRef<'_>> for Prepared {
    fn from(message: MessageRef<'_>) -> Self {
        Self::from_ref(message)
    }
}

impl From<&Prepared> for Prepared {
    fn from(message: &Prepared) -> Self {
        message.clone()
    }
}

impl TryFrom<Message> for Prepared {
    /// Pings, pongs and closes are given back: they belong to one connection.
    type Error = Message;

    fn try_from(message: Message) -> Result<Self, Message> {
        match message {
            Message::Text(text) => Ok(Self::text(text)),
            Message::Binary(data) => Ok(Self::binary(data)),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_the_shortest_length() {
        for (len, head) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let p = Prepared::binary(vec![7u8; len]);
            assert_eq!(p.frame().len(), head + len);
            let (header, n) = Header::decode(p.frame()).unwrap().unwrap();
            assert_eq!((n, header.payload_len, header.mask, header.opcode), (head, len as u64, None, OpCode::Binary));
            assert_eq!(p.payload(), &vec![7u8; len][..]);
        }
    }

    #[test]
    fn deflated_once_and_only_when_smaller() {
        let p = Prepared::text("a".repeat(4000));
        assert!(!p.has_deflated());
        let first = p.deflated().unwrap().clone();
        assert!(first.len() < 100);
        assert_eq!(first[0], 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
        let again = p.clone();
        assert_eq!(again.deflated().unwrap().as_ptr(), first.as_ptr(), "shared, not made again");

        let noise = wsx_testkit::Rng::new(11).bytes(4000);
        assert!(Prepared::binary(noise).deflated().is_none());
    }

    #[test]
    fn control_messages_are_given_back() {
        let ping = Message::Ping(Bytes::from_static(b"x"));
        assert_eq!(Prepared::try_from(ping.clone()).unwrap_err(), ping);
        assert_eq!(Prepared::try_from(Message::text("hi")).unwrap().to_message(), Message::text("hi"));
    }
}
