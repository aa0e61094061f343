//! Close status codes (RFC 6455 §7.4).

use std::fmt;

/// A close status code (RFC 6455 §7.4, and the IANA "WebSocket Close Code Number" registry).
///
/// A plain number rather than an enum, so codes from 3000–4999 that applications and
/// libraries define need no catch-all variant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept (for example binary where only text is).
    pub const UNSUPPORTED: Self = Self(1003);
    /// 1005: reserved; reported when a close frame carried no status code. Never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: reserved; reported when the connection ended without a close frame. Never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: message data did not match its type (invalid UTF-8 in a text message).
    pub const INVALID_DATA: Self = Self(1007);
    /// 1008: a message broke the endpoint's policy.
    pub const POLICY: Self = Self(1008);
    /// 1009: a message was too big to process.
    pub const TOO_BIG: Self = Self(1009);
    /// 1010: the client needed an extension the server did not negotiate.
    pub const EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL: Self = Self(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const RESTART: Self = Self(1012);
    /// 1013: try again later (IANA registry).
    pub const AGAIN: Self = Self(1013);
    /// 1014: a gateway got an invalid answer upstream (IANA registry).
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: reserved; reported when the TLS handshake failed. Never sent.
    pub const TLS: Self = Self(1015);

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// RFC 6455 §7.4.1 reserves 1004, 1005, 1006 and 1015 and leaves 0–999 unused; §7.4.2
    /// gives 1000–2999 to the protocol and its extensions, of which the IANA registry has
    /// assigned up to 1014, and 3000–4999 to libraries and applications.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1000 => "normal closure",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1005 => "no status received",
            1006 => "abnormal closure",
            1007 => "invalid payload data",
            1008 => "policy violation",
            1009 => "message too big",
            1010 => "mandatory extension",
            1011 => "internal error",
            1012 => "service restart",
            1013 => "try again later",
            1014 => "bad gateway",
            1015 => "TLS handshake failure",
            _ => return write!(f, "{}", self.0),
        };
        write!(f, "{} ({name})", self.0)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999] {
            assert!(CloseCode(ok).is_sendable(), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
        assert_eq!(CloseCode::TOO_BIG.to_string(), "1009 (message too big)");
    }
}
