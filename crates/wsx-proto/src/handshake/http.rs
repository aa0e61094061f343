//! The HTTP/1.1 both roles of the opening handshake share: head limits, header maps, header
//! occurrence and token lists (RFC 9110 §5.6), and writing header fields.

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::Config;

/// How far a request or response head has got, once the limits are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head {
    /// The head is complete and is this many bytes long.
    Complete(usize),
    /// More bytes are needed, and the limit leaves room for them.
    Partial,
    /// The head does not end within `max_header_bytes`.
    TooLarge,
    /// The head has more than `max_headers` header fields.
    TooManyHeaders,
    /// The head is not valid HTTP/1.x.
    Malformed(&'static str),
}

/// The part of `buf` a head may occupy: its first `max_header_bytes` bytes.
///
/// Parsing only this much bounds the work per call, and makes the outcome depend only on the
/// bytes that may belong to the head, whatever follows them.
pub(super) fn head_window<'b>(buf: &'b [u8], config: &Config) -> &'b [u8] {
    &buf[..buf.len().min(config.max_header_bytes)]
}

/// Empty header slots for httparse: `max_headers`, but never more than `window` could hold.
///
/// A header line takes at least 3 bytes (`a:\n`), so `window.len() / 3 + 1` slots are more
/// than `window` can fill: running out of slots still means more than `max_headers` fields,
/// and a huge `max_headers` costs no more memory than the bytes received.
pub(super) fn header_slots<'b>(window: &[u8], config: &Config) -> Vec<httparse::Header<'b>> {
    vec![httparse::EMPTY_HEADER; config.max_headers.min(window.len() / 3 + 1)]
}

/// Apply the limits to httparse's verdict on `head_window(buf)`.
pub(super) fn classify(result: httparse::Result<usize>, buf: &[u8], config: &Config) -> Head {
    match result {
        Ok(httparse::Status::Complete(len)) => Head::Complete(len),
        Ok(httparse::Status::Partial) if buf.len() < config.max_header_bytes => Head::Partial,
        Ok(httparse::Status::Partial) => Head::TooLarge,
        Err(httparse::Error::TooManyHeaders) => Head::TooManyHeaders,
        Err(httparse::Error::HeaderName) => Head::Malformed("invalid header name"),
        Err(httparse::Error::HeaderValue) => Head::Malformed("invalid header value"),
        Err(httparse::Error::NewLine) => Head::Malformed("invalid line ending"),
        Err(httparse::Error::Status) => Head::Malformed("invalid status line"),
        Err(httparse::Error::Token) => Head::Malformed("invalid method or token"),
        Err(httparse::Error::Version) => Head::Malformed("invalid HTTP version"),
    }
}

/// Why httparse's headers did not fit in a [`HeaderMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MapError {
    /// More fields than a `HeaderMap` holds.
    TooMany,
    /// A name or value that `http` refuses.
    Invalid(&'static str),
}

/// Copy httparse's headers into a [`HeaderMap`], keeping repeated fields in order.
pub(super) fn header_map(parsed: &[httparse::Header<'_>]) -> Result<HeaderMap, MapError> {
    let mut map = HeaderMap::try_with_capacity(parsed.len()).map_err(|_| MapError::TooMany)?;
    for field in parsed {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| MapError::Invalid("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| MapError::Invalid("invalid header value"))?;
        map.try_append(name, value).map_err(|_| MapError::TooMany)?;
    }
    Ok(map)
}

/// How often a header field occurs.
pub(super) enum Occurs<'a> {
    /// Not at all.
    Absent,
    /// Exactly once, with this value.
    Once(&'a HeaderValue),
    /// More than once.
    Repeated,
}

/// How often `name` occurs in `headers`.
pub(super) fn occurrences(headers: &HeaderMap, name: HeaderName) -> Occurs<'_> {
    let mut values = headers.get_all(name).into_iter();
    match (values.next(), values.next()) {
        (None, _) => Occurs::Absent,
        (Some(value), None) => Occurs::Once(value),
        (Some(_), Some(_)) => Occurs::Repeated,
    }
}

/// The elements of the comma-separated lists in every `name` field, trimmed, empty ones
/// skipped (RFC 9110 §5.6.1: a recipient "MUST accept empty list elements").
pub(super) fn list_elements(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    elements(headers.get_all(name).into_iter().map(HeaderValue::as_bytes))
}

/// The elements of the comma-separated lists in `values`, as [`list_elements`] gives them.
pub(super) fn elements<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values.flat_map(|value| value.split(|&b| b == b',')).map(trim_ows).filter(|element| !element.is_empty())
}

/// Whether a `name` list contains `token`, compared ASCII case-insensitively.
pub(super) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

/// The subprotocols listed in every `Sec-WebSocket-Protocol` field, in order; `None` if one
/// is not a token (RFC 6455 §4.1: "elements that comprise this value MUST be non-empty
/// strings with characters in the range U+0021 to U+007E not including separator
/// characters").
pub(super) fn protocol_list(headers: &HeaderMap) -> Option<Vec<String>> {
    list_elements(headers, header::SEC_WEBSOCKET_PROTOCOL)
        .map(|element| match std::str::from_utf8(element) {
            Ok(token) if is_token(element) => Some(token.to_owned()),
            _ => None,
        })
        .collect()
}

/// Whether `s` is an RFC 9110 §5.6.2 token: one or more `tchar`s.
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A `tchar` of RFC 9110 §5.6.2: any visible ASCII character but the delimiters.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `s` without leading and trailing spaces and tabs (RFC 9110 §5.6.3 OWS).
pub(super) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |last| last + 1);
    &s[start..end]
}

/// The default port of a WebSocket or HTTP URI scheme (RFC 6455 §3), `None` for any other
/// scheme.
pub(super) fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("ws") || scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("wss") || scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// Write one `name: value` line.
pub(super) fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Write every field of `headers` except those named in `skip`, repeated fields in order.
pub(super) fn put_headers(out: &mut BytesMut, headers: &HeaderMap, skip: &[HeaderName]) {
    for (name, value) in headers {
        if !skip.contains(name) {
            put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}
