//! The opening handshake (RFC 6455 §4): the server's request parser and responses, the
//! client's request builder and response checks.
//!
//! These are pure functions over byte buffers; [`Connection`](crate::Connection) drives them
//! and feeds the bytes that follow the handshake straight into the frame parser.

pub(crate) mod client;
pub(crate) mod http;
pub(crate) mod server;

pub use client::Response;
pub use server::{Accept, Request};

/// The GUID that §1.3 appends to the key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §1.3, §4.2.2): base64 of the
/// SHA-1 of the key followed by the GUID.
pub fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
