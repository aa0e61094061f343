//! The frame header codec (RFC 6455 §5.2) and opcodes.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use bytes::Bytes;

use crate::error::ProtocolError;

/// The longest a frame header can be: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame may carry (RFC 6455 §5.5: "All control frames MUST
/// have a payload length of 125 bytes or less").
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// What a frame carries (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: starts or answers the closing handshake.
    Close,
    /// 0x9: asks the peer for a pong.
    Ping,
    /// 0xA: answers a ping, or a one-way heartbeat.
    Pong,
}

impl OpCode {
    /// Decode the four opcode bits; `None` for the reserved values 0x3–0x7 and 0xB–0xF.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The four opcode bits.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes.
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

/// RSV1, the bit permessage-deflate uses to mark a compressed message (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// The opcodes RFC 6455 defines, as a bit set: 0x0-0x2 and 0x8-0xA.
const DEFINED_OPCODES: u16 = 0b0000_0111_0000_0111;

/// A frame header as it stands on the wire, once the rules that hold on every connection have
/// been applied: the engine's working form of [`Header`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeader {
    /// The first byte: FIN, RSV1-3 and the opcode.
    pub(crate) b0: u8,
    /// The masking key, if the MASK bit is set.
    pub(crate) mask: Option<[u8; 4]>,
    /// The payload length.
    pub(crate) len: u64,
    /// The header's own length in bytes.
    pub(crate) size: usize,
}

impl RawHeader {
    /// Parse the header at the front of `buf`: `Ok(None)` while it is incomplete. Applies the
    /// rules of RFC 6455 that depend on nothing but the header, each as soon as the bytes it
    /// needs have arrived: a reserved opcode, a 64-bit length with its most significant bit set,
    /// a fragmented or too long control frame. The rules that depend on the connection (RSV
    /// bits, masking, limits, fragment order) are the frame reader's (`connection/recv.rs`).
    #[inline(always)]
    pub(crate) fn parse(buf: &[u8]) -> Result<Option<Self>, HeaderError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        // §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the
        // WebSocket Connection_."
        let opcode = b0 & 0x0F;
        if (DEFINED_OPCODES >> opcode) & 1 == 0 {
            return Err(HeaderError::ReservedOpcode(opcode));
        }
        let (len, mut size) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    // Invariant: `get(2..10)` returned exactly 8 bytes.
                    let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                    // §5.2: "the most significant bit MUST be 0".
                    if n >> 63 != 0 {
                        return Err(HeaderError::InvalidLength);
                    }
                    (n, 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST NOT
        // be fragmented."
        if opcode & 0x8 != 0 {
            if b0 & 0x80 == 0 {
                return Err(HeaderError::FragmentedControl);
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(HeaderError::ControlTooLong);
            }
        }
        let mask = if b1 & 0x80 != 0 {
            let Some(&[k0, k1, k2, k3]) = buf.get(size..size + 4) else {
                return Ok(None);
            };
            size += 4;
            Some([k0, k1, k2, k3])
        } else {
            None
        };
        Ok(Some(Self { b0, mask, len, size }))
    }

    /// The opcode.
    pub(crate) fn opcode(&self) -> OpCode {
        // Invariant: `parse` refused the opcodes `from_bits` does not know.
        OpCode::from_bits(self.b0 & 0x0F).expect("a defined opcode")
    }

    /// The same header in its public form.
    pub(crate) fn header(&self) -> Header {
        Header {
            fin: self.b0 & 0x80 != 0,
            rsv: (self.b0 >> 4) & 0x7,
            opcode: self.opcode(),
            mask: self.mask,
            payload_len: self.len,
        }
    }
}

/// A rule a header broke, as [`RawHeader::parse`] reports it: small and plain, so that parsing
/// stays in registers; the [`ProtocolError`] it stands for is made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    ReservedOpcode(u8),
    InvalidLength,
    FragmentedControl,
    ControlTooLong,
}

impl From<HeaderError> for ProtocolError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::ReservedOpcode(opcode) => Self::ReservedOpcode(opcode),
            HeaderError::InvalidLength => Self::InvalidLength,
            HeaderError::FragmentedControl => Self::FragmentedControl,
            HeaderError::ControlTooLong => Self::ControlTooLong,
        }
    }
}

impl Header {
    /// Decode a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` while `buf` holds less than a whole header, otherwise the header and
    /// its length in bytes. Fails on a reserved opcode, a 64-bit length with its most
    /// significant bit set (§5.2: "the most significant bit MUST be 0"), and a control frame
    /// that is fragmented or longer than 125 bytes (§5.5). RSV bits and masking depend on the
    /// connection and are checked by the caller.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        Ok(RawHeader::parse(buf)?.map(|raw| (raw.header(), raw.size)))
    }

    /// Encode the header into `out`, returning how many bytes were written (2 to 14).
    ///
    /// Uses the shortest length form, as §5.2 requires ("the minimal number of bytes MUST be
    /// used to encode the length").
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }
}

/// One frame to send with [`Connection::send_frame`](crate::Connection::send_frame), for
/// applications that stream a message in fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The unmasked payload; the connection masks it when it sends as a client.
    pub payload: Bytes,
}

impl Frame {
    /// A frame that starts a text message; `fin` false means continuations follow.
    ///
    /// The connection checks that the text message as a whole is valid UTF-8 only where it can
    /// (each frame must then hold whole characters), so prefer [`Message::Text`](crate::Message).
    pub fn text(payload: impl Into<Bytes>, fin: bool) -> Self {
        Self { fin, opcode: OpCode::Text, payload: payload.into() }
    }

    /// A frame that starts a binary message; `fin` false means continuations follow.
    pub fn binary(payload: impl Into<Bytes>, fin: bool) -> Self {
        Self { fin, opcode: OpCode::Binary, payload: payload.into() }
    }

    /// A frame that continues the message being sent; `fin` true ends it.
    pub fn continuation(payload: impl Into<Bytes>, fin: bool) -> Self {
        Self { fin, opcode: OpCode::Continuation, payload: payload.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProtocolError> {
        Header::decode(bytes)
    }

    // RFC 6455 §5.7 examples.
    #[test]
    fn rfc_examples_decode() {
        // A single-frame unmasked text message "Hello".
        let (h, n) = decode(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.mask, h.payload_len, n), (true, OpCode::Text, None, 5, 2));
        // A single-frame masked text message "Hello".
        let (h, n) = decode(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap().unwrap();
        assert_eq!((h.mask, h.payload_len, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6));
        // A fragmented unmasked text message: "Hel" then "lo".
        let (h, _) = decode(&[0x01, 0x03]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let (h, _) = decode(&[0x80, 0x02]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
        // Unmasked ping, masked pong.
        let (h, _) = decode(&[0x89, 0x05]).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Ping);
        let (h, _) = decode(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Pong);
        // 256 bytes binary message in a single unmasked frame.
        let (h, n) = decode(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        // 64KiB binary message in a single unmasked frame.
        let (h, n) = decode(&[0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn rfc_examples_encode() {
        let enc = |h: Header| {
            let mut out = [0; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            out[..n].to_vec()
        };
        let h = Header { fin: true, rsv: 0, opcode: OpCode::Text, mask: None, payload_len: 5 };
        assert_eq!(enc(h), &[0x81, 0x05]);
        let h = Header { mask: Some([0x37, 0xfa, 0x21, 0x3d]), ..h };
        assert_eq!(enc(h), &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
        let h = Header { fin: true, rsv: 0, opcode: OpCode::Binary, mask: None, payload_len: 256 };
        assert_eq!(enc(h), &[0x82, 0x7E, 0x01, 0x00]);
        let h = Header { payload_len: 65536, ..h };
        assert_eq!(enc(h), &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for end in 0..full.len() {
            assert_eq!(decode(&full[..end]).unwrap(), None, "prefix of {end} bytes");
        }
        assert_eq!(decode(&full).unwrap().unwrap().1, 14);
    }

    #[test]
    fn length_boundaries_use_the_shortest_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (u64::MAX >> 1, 10)] {
            let h = Header { fin: true, rsv: 0, opcode: OpCode::Binary, mask: None, payload_len: len };
            let mut out = [0; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            assert_eq!(n, header_len, "length {len}");
            assert_eq!(decode(&out[..n]).unwrap(), Some((h, n)));
        }
    }

    #[test]
    fn rejects_reserved_opcodes() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(decode(&[0x80 | op, 0]), Err(ProtocolError::ReservedOpcode(op)));
        }
    }

    #[test]
    fn rejects_64_bit_length_with_top_bit() {
        let b = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&b), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn rejects_bad_control_frames() {
        assert_eq!(decode(&[0x09, 0x00]), Err(ProtocolError::FragmentedControl));
        assert_eq!(decode(&[0x89, 126, 0, 126]), Err(ProtocolError::ControlTooLong));
        assert!(decode(&[0x89, 125]).unwrap().is_some());
    }

    #[test]
    fn rsv_bits_are_reported() {
        let (h, _) = decode(&[0xC1, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, RSV1);
        let (h, _) = decode(&[0xF1, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 0b111);
    }
}
