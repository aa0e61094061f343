//! Server side of the opening handshake (RFC 6455 §4.2).
//!

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};

use super::http::{
    Head, MapError, Occurs, classify, default_port, elements, has_token, head_window, header_map, header_slots,
    occurrences, protocol_list, put_header, put_headers, trim_ows,
};
use crate::{config::Config, error::HandshakeError};

/// A client's opening handshake request, as the application sees it when it decides whether
/// to accept the connection.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) head: http::Request<()>,
    pub(crate) key: String,
    pub(crate) protocols: Vec<String>,
    /// Whether this is a WebSocket upgrade (false only with [`Config::plain_http`]).
    pub(crate) upgrade: bool,
}

impl Request {
    /// Check an upgrade request that another HTTP layer (hyper, …) has read, with the same
    /// rules as a request the engine reads itself; accept it with
    /// [`Connection::accept_upgraded`](crate::Connection::accept_upgraded).
    ///
    /// An HTTP/1.1 request must be a RFC 6455 §4.2.1 `GET` with `Host`, `Upgrade: websocket`,
    /// `Connection: Upgrade`, a valid `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`. An
    /// HTTP/2 or HTTP/3 request must be an extended CONNECT (RFC 8441 §4, RFC 9220) with
    /// `connect_protocol` — its `:protocol` pseudo-header, which `http::Request` has no field
    /// for — equal to `websocket`, an authority, `Sec-WebSocket-Version: 13` and no
    /// `Sec-WebSocket-Key`. Both may offer subprotocols and extensions, and neither may
    /// announce a body.
    ///
    /// Fails with [`HandshakeError::BadRequest`] carrying the status to answer: 400 for a
    /// missing or invalid field or an HTTP version before 1.1, 405 for another method (`GET`
    /// for HTTP/1.1, `CONNECT` for later versions), 426 for another `Sec-WebSocket-Version`.
    pub fn from_head(head: http::Request<()>, connect_protocol: Option<&str>) -> Result<Self, HandshakeError> {
        let (key, protocols) = if head.version() >= Version::HTTP_2 {
            (String::new(), check_connect(&head, connect_protocol)?)
        } else if head.method() != Method::GET {
            return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "method must be GET"));
        } else if head.version() != Version::HTTP_11 {
            return Err(refuse(StatusCode::BAD_REQUEST, "HTTP/1.1 required"));
        } else {
            check_headers(head.headers())?
        };
        Ok(Self { head, key, protocols, upgrade: true })
    }

    /// The whole request head: method, URI, version and headers.
    pub fn head(&self) -> &http::Request<()> {
        &self.head
    }

    /// The request target's path, e.g. `/chat`.
    pub fn path(&self) -> &str {
        self.head.uri().path()
    }

    /// The query string without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.head.uri().query()
    }

    /// All request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.head.headers()
    }

    /// The `Origin` header (sent by browsers; check it to stop cross-site WebSocket hijacking).
    pub fn origin(&self) -> Option<&str> {
        self.head.headers().get(http::header::ORIGIN).and_then(|v| v.to_str().ok())
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.head.headers().get(http::header::HOST).and_then(|v| v.to_str().ok())
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The client's `Sec-WebSocket-Key` (empty in a plain HTTP request, and over HTTP/2, which
    /// has none).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the request asks for a WebSocket connection; false for a plain HTTP `GET` or
    /// `HEAD`, which only a server with [`Config::plain_http`] on reports.
    ///
    /// A plain request cannot be accepted: answer it with
    /// [`Connection::reject`](crate::Connection::reject).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }

    /// The request head: method, URI, version and headers.
    pub fn into_head(self) -> http::Request<()> {
        self.head
    }
}

/// How the application accepts a request: the subprotocol it picked and any extra response
/// headers.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    pub(crate) protocol: Option<String>,
    pub(crate) headers: HeaderMap,
}

impl Accept {
    /// Accept with no subprotocol and no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Select one of the subprotocols the client offered.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Add a response header (e.g. `Set-Cookie`).
    pub fn header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The subprotocol selected, if any.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

/// Parse a request head from the front of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf` already holds `config.max_header_bytes`,
/// which is an error: 431). `Ok(Some((request, n)))`: a valid WebSocket upgrade request whose
/// head is the first `n` bytes, or with [`Config::plain_http`] a valid plain `GET` or `HEAD`
/// request ([`Request::is_upgrade`] false). `Err(BadRequest { status, reason })`: the status
/// to answer with — 400 for malformed HTTP or a missing/invalid header, 405 for a method other
/// than GET (and HEAD, for a plain request), 426 for a `Sec-WebSocket-Version` other than 13,
/// 431 for a head over the limits.
///
/// Only the first `config.max_header_bytes` bytes are ever looked at, so the answer for a
/// buffer is the answer for its first decisive prefix: feeding the same bytes in any pieces
/// gives the same result. A request that announces a body (`Transfer-Encoding`, or a
/// `Content-Length` other than 0) is refused with 400, since the bytes after the head are
/// WebSocket frames.
pub(crate) fn parse_request(buf: &[u8], config: &Config) -> Result<Option<(Request, usize)>, HandshakeError> {
    let too_large = |reason| refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason);
    let bad = |reason| refuse(StatusCode::BAD_REQUEST, reason);
    let window = head_window(buf, config);
    let mut slots = header_slots(window, config);
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match classify(parsed.parse(window), buf, config) {
        Head::Complete(len) => len,
        Head::Partial => return Ok(None),
        Head::TooLarge => return Err(too_large("request head too large")),
        Head::TooManyHeaders => return Err(too_large("too many headers")),
        Head::Malformed(reason) => return Err(bad(reason)),
    };
    // httparse fills in the request line before it reports `Complete`; the `else` arm is
    // unreachable but costs nothing.
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(bad("malformed request line"));
    };
    // Not a WebSocket handshake at all: with `plain_http`, the application answers it.
    if config.plain_http && (method == "GET" || method == "HEAD") && !asks_for_websocket(parsed.headers) {
        return plain_request(method, target, minor, parsed.headers).map(|request| Some((request, len)));
    }

    // §4.2.1 point 1: "An HTTP/1.1 or higher GET request, including a "Request-URI"".
    if method != "GET" {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "method must be GET"));
    }
    if minor != 1 {
        return Err(bad("HTTP/1.1 required"));
    }
    let uri = parse_target(target).map_err(bad)?;
    let headers = request_headers(parsed.headers)?;
    let (key, protocols) = check_headers(&headers)?;
    let head = request_head(Method::GET, uri, Version::HTTP_11, headers);
    Ok(Some((Request { head, key, protocols, upgrade: true }, len)))
}

/// A plain `GET` or `HEAD` request (no `Upgrade: websocket`), for [`Config::plain_http`]:
/// HTTP/1.1 or 1.0, a valid target, `Host` as RFC 9112 requires, and no body.
fn plain_request(
    method: &str,
    target: &str,
    minor: u8,
    fields: &[httparse::Header<'_>],
) -> Result<Request, HandshakeError> {
    let bad = |reason| refuse(StatusCode::BAD_REQUEST, reason);
    let method = if method == "HEAD" { Method::HEAD } else { Method::GET };
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let uri = parse_target(target).map_err(bad)?;
    let headers = request_headers(fields)?;
    // RFC 9112 §3.2: a server "MUST respond with a 400 (Bad Request) status code to any
    // HTTP/1.1 request message that lacks a Host header field and to any such message that
    // contains more than one Host header field line". An empty one is valid (a target without
    // an authority); HTTP/1.0 requests may have none.
    match occurrences(&headers, header::HOST) {
        Occurs::Once(_) => {}
        Occurs::Absent if version == Version::HTTP_10 => {}
        Occurs::Absent => return Err(bad("missing Host")),
        Occurs::Repeated => return Err(bad("duplicate Host")),
    }
    refuse_body(&headers)?;
    let head = request_head(method, uri, version, headers);
    Ok(Request { head, key: String::new(), protocols: Vec::new(), upgrade: false })
}

/// httparse's header fields as a [`HeaderMap`], or the refusal: 431 for too many, 400 for a
/// name or value `http` refuses.
fn request_headers(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    header_map(fields).map_err(|e| match e {
        MapError::TooMany => refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers"),
        MapError::Invalid(reason) => refuse(StatusCode::BAD_REQUEST, reason),
    })
}

/// A request head from its parts.
fn request_head(method: Method, uri: Uri, version: Version, headers: HeaderMap) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = method;
    *head.uri_mut() = uri;
    *head.version_mut() = version;
    *head.headers_mut() = headers;
    head
}

/// Refuse a request that announces a body (`Transfer-Encoding`, or a `Content-Length` other
/// than 0).
///
/// Not in RFC 6455: the bytes after an upgrade request's head are frames, so a body would be
/// misread as frames; after a plain request's head nothing is read. Refuse it rather than
/// guess where it ends.
fn refuse_body(headers: &HeaderMap) -> Result<(), HandshakeError> {
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get_all(header::CONTENT_LENGTH).iter().any(|n| trim_ows(n.as_bytes()) != b"0")
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "request has a body"));
    }
    Ok(())
}

/// Check the header fields RFC 6455 §4.2.1 requires; return the key and the offered
/// subprotocols.
fn check_headers(headers: &HeaderMap) -> Result<(String, Vec<String>), HandshakeError> {
    let bad = |reason| refuse(StatusCode::BAD_REQUEST, reason);

    // Point 2: "A |Host| header field containing the server's authority." RFC 9112 §3.2: a
    // server "MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
    // message that lacks a Host header field and to any such message that contains more than
    // one Host header field line".
    match occurrences(headers, header::HOST) {
        Occurs::Once(host) if !trim_ows(host.as_bytes()).is_empty() => {}
        Occurs::Repeated => return Err(bad("duplicate Host")),
        Occurs::Absent | Occurs::Once(_) => return Err(bad("missing Host")),
    }
    // Point 3: "An |Upgrade| header field containing the value "websocket", treated as an
    // ASCII case-insensitive value."
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(bad("missing Upgrade: websocket"));
    }
    // Point 4: "A |Connection| header field that includes the token "Upgrade", treated as an
    // ASCII case-insensitive value."
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(bad("missing Connection: upgrade"));
    }
    check_version(headers)?;
    // Point 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
    // decoded, is 16 bytes in length."
    let key = match occurrences(headers, header::SEC_WEBSOCKET_KEY) {
        Occurs::Once(key) => trim_ows(key.as_bytes()),
        Occurs::Absent => return Err(bad("missing Sec-WebSocket-Key")),
        Occurs::Repeated => return Err(bad("duplicate Sec-WebSocket-Key")),
    };
    // 16 bytes encode to exactly 24 characters; checking that first bounds the decode.
    let decodes_to_16 =
        key.len() == 24 && base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|nonce| nonce.len() == 16);
    let key = match std::str::from_utf8(key) {
        Ok(key) if decodes_to_16 => key.to_owned(),
        _ => return Err(bad("invalid Sec-WebSocket-Key")),
    };
    Ok((key, offered_protocols(headers)?))
}

/// Check an HTTP/2 or HTTP/3 extended CONNECT (RFC 8441 §4 and §5, RFC 9220 §3) whose
/// `:protocol` is `connect_protocol`; return the offered subprotocols.
///
/// The WebSocket header fields are those of RFC 6455 but for `Sec-WebSocket-Key` (and
/// `Sec-WebSocket-Accept`), which RFC 8441 §5 replaces with `:protocol`: a request that
/// carries one is refused (400) rather than half-understood.
fn check_connect(head: &http::Request<()>, connect_protocol: Option<&str>) -> Result<Vec<String>, HandshakeError> {
    let bad = |reason| refuse(StatusCode::BAD_REQUEST, reason);
    if head.method() != Method::CONNECT {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "method must be CONNECT"));
    }
    // RFC 8441 §4: "On requests that contain the :protocol pseudo-header field, the :scheme
    // and :path pseudo-header fields of the target URI [...] MUST also be included"; the
    // `:authority` stands for `Host`.
    match connect_protocol {
        None => return Err(bad("CONNECT without :protocol")),
        Some(protocol) if !protocol.eq_ignore_ascii_case("websocket") => {
            return Err(bad(":protocol is not websocket"));
        }
        Some(_) => {}
    }
    if head.uri().authority().is_none_or(|a| a.as_str().is_empty()) {
        return Err(bad("missing :authority"));
    }
    if head.headers().contains_key(header::SEC_WEBSOCKET_KEY) {
        return Err(bad("Sec-WebSocket-Key in an extended CONNECT"));
    }
    check_version(head.headers())?;
    offered_protocols(head.headers())
}

/// RFC 6455 §4.2.1 point 6 (`Sec-WebSocket-Version: 13`), and §4.2.2: if the version is not
/// understood, "the server MUST abort the WebSocket handshake described in this section and
/// instead send an appropriate HTTP error code (such as 426 Upgrade Required) and a
/// |Sec-WebSocket-Version| header field". A missing version gets the same answer: it tells the
/// client which version to speak.
fn check_version(headers: &HeaderMap) -> Result<(), HandshakeError> {
    match occurrences(headers, header::SEC_WEBSOCKET_VERSION) {
        Occurs::Once(version) if trim_ows(version.as_bytes()) == b"13" => Ok(()),
        Occurs::Absent => Err(refuse(StatusCode::UPGRADE_REQUIRED, "missing Sec-WebSocket-Version")),
        Occurs::Once(_) | Occurs::Repeated => {
            Err(refuse(StatusCode::UPGRADE_REQUIRED, "unsupported Sec-WebSocket-Version"))
        }
    }
}

/// RFC 6455 §4.2.1 point 8 (optional): "|Sec-WebSocket-Protocol| header field, with a list of
/// values indicating which protocols the client would like to speak, ordered by preference";
/// and no body (see [`refuse_body`]).
fn offered_protocols(headers: &HeaderMap) -> Result<Vec<String>, HandshakeError> {
    let protocols =
        protocol_list(headers).ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Protocol"))?;
    refuse_body(headers)?;
    Ok(protocols)
}

/// Parse the request target: origin-form (`/path?query`) or absolute-form
/// (`ws://host/path?query`, RFC 9112 §3.2.2). The asterisk and authority forms are refused.
fn parse_target(target: &str) -> Result<Uri, &'static str> {
    const INVALID: &str = "invalid request target";
    let uri = Uri::try_from(target).map_err(|_| INVALID)?;
    if target.starts_with('/') {
        return Ok(uri);
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(_)) if default_port(scheme).is_some() => Ok(uri),
        _ => Err(INVALID),
    }
}

/// Check that `request` may be accepted with `accept` and `extensions` (the negotiated
/// `Sec-WebSocket-Extensions` value, if any; an empty one means none), and return the
/// extensions to answer with.
///
/// Fails with [`SendError::InvalidState`](crate::SendError::InvalidState) if `request` is a
/// plain HTTP request, if `accept` selects a subprotocol the client did not offer, if
/// `extensions` is not a valid header value, or if `accept`'s headers set one of the headers
/// the handshake writes (`Upgrade`, `Connection`, `Sec-WebSocket-Accept`,
/// `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`).
fn check_accept<'e>(
    request: &Request,
    accept: &Accept,
    extensions: Option<&'e str>,
) -> Result<Option<&'e str>, crate::SendError> {
    let owned = [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ];
    // §4.2.2 point 5, /subprotocol/: "the value chosen MUST be derived from the client's
    // handshake, specifically by selecting one of the values from the
    // |Sec-WebSocket-Protocol| field". The offered values are tokens, so the selected one
    // is safe to write.
    let offered = |protocol: &String| request.protocols.contains(protocol);
    let extensions = extensions.filter(|e| !e.is_empty());
    if !request.upgrade
        || !accept.protocol.as_ref().is_none_or(offered)
        || extensions.is_some_and(|e| HeaderValue::from_str(e).is_err())
        || owned.iter().any(|name| accept.headers.contains_key(name))
    {
        return Err(crate::SendError::InvalidState);
    }
    Ok(extensions)
}

/// Write the 101 response accepting `request` into `out`.
///
/// `extensions` is the negotiated `Sec-WebSocket-Extensions` value, if any. Fails as
/// [`check_accept`] does, writing nothing.
pub(crate) fn write_accept(
    request: &Request,
    accept: &Accept,
    extensions: Option<&str>,
    out: &mut BytesMut,
) -> Result<(), crate::SendError> {
    let extensions = check_accept(request, accept, extensions)?;
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    put_header(out, b"Sec-WebSocket-Accept", super::accept_key(request.key.as_bytes()).as_bytes());
    if let Some(protocol) = &accept.protocol {
        put_header(out, b"Sec-WebSocket-Protocol", protocol.as_bytes());
    }
    if let Some(extensions) = extensions {
        put_header(out, b"Sec-WebSocket-Extensions", extensions.as_bytes());
    }
    put_headers(out, &accept.headers, &[]);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// The response head accepting `request`, for an HTTP layer to send: for HTTP/1.1 the same
/// 101 as [`write_accept`] writes; for an HTTP/2 or HTTP/3 extended CONNECT a 200 (RFC 8441
/// §5: "a 2xx status code [...] indicates the WebSocket connection has been established"),
/// with no `Sec-WebSocket-Accept`. Fails as [`check_accept`] does.
pub(crate) fn accept_head(
    request: &Request,
    accept: &Accept,
    extensions: Option<&str>,
) -> Result<http::Response<()>, crate::SendError> {
    let extensions = check_accept(request, accept, extensions)?;
    let mut head = http::Response::new(());
    *head.version_mut() = request.head.version();
    let h1 = request.head.version() <= Version::HTTP_11;
    if h1 {
        *head.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    }
    let headers = head.headers_mut();
    if h1 {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let digest = super::accept_key(request.key.as_bytes());
        // Invariant: base64 is visible ASCII, a valid header value.
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&digest).expect("base64 is ASCII"));
    }
    if let Some(protocol) = &accept.protocol {
        // Invariant: `check_accept` made sure it is one of the offered subprotocols, which
        // `protocol_list` checked are tokens.
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(protocol).expect("a token"));
    }
    if let Some(extensions) = extensions {
        // Invariant: `check_accept` made sure it is a valid header value.
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(extensions).expect("checked"));
    }
    for (name, value) in &accept.headers {
        headers.append(name, value.clone());
    }
    Ok(head)
}

/// Write a complete non-101 response (with `Connection: close` and `Content-Length`) into
/// `out`; for 426 it adds `Sec-WebSocket-Version: 13`.
///
/// `headers` are written as given, except `Connection`, `Content-Length` and
/// `Transfer-Encoding`, which this function owns. `Content-Type: text/plain; charset=utf-8`
/// is added unless `headers` has a `Content-Type`; `Allow: GET` is added to a 405 (RFC 9110
/// §15.5.6 requires it) and `Sec-WebSocket-Version: 13` to a 426, unless `headers` has them.
/// After writing it, close the connection.
pub(crate) fn write_response(status: StatusCode, headers: &HeaderMap, body: &[u8], out: &mut BytesMut) {
    write_response_head(status, headers, body.len(), out);
    out.extend_from_slice(body);
}

/// Write the application's answer to `request` (the request it was given, if any), as
/// [`write_response`] does, and return its status. The answer to a `HEAD` request has the
/// headers and `Content-Length` of the whole response but not its body (RFC 9110 §9.3.2: "the
/// server MUST NOT send content in the response").
pub(crate) fn write_answer(
    request: Option<&Request>,
    response: http::Response<Bytes>,
    out: &mut BytesMut,
) -> StatusCode {
    let (parts, body) = response.into_parts();
    write_response_head(parts.status, &parts.headers, body.len(), out);
    if request.is_none_or(|request| request.head.method() != Method::HEAD) {
        out.extend_from_slice(&body);
    }
    parts.status
}

/// Write the answer to a request that [`parse_request`] refused with `error`: its status (400
/// for an error other than `BadRequest`), the error as a one-line body, and for a 405 the
/// methods a request may use (`GET`, and `HEAD` with [`Config::plain_http`]).
pub(crate) fn write_refusal(error: &HandshakeError, config: &Config, out: &mut BytesMut) {
    let status = match error {
        HandshakeError::BadRequest { status, .. } => *status,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut headers = HeaderMap::new();
    if status == StatusCode::METHOD_NOT_ALLOWED && config.plain_http {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    write_response(status, &headers, format!("{error}\n").as_bytes(), out);
}

/// The head of [`write_response`], for a body of `len` bytes.
fn write_response_head(status: StatusCode, headers: &HeaderMap, len: usize, out: &mut BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    put_headers(out, headers, &[header::CONNECTION, header::CONTENT_LENGTH, header::TRANSFER_ENCODING]);
    if !headers.contains_key(header::CONTENT_TYPE) {
        put_header(out, b"Content-Type", b"text/plain; charset=utf-8");
    }
    put_header(out, b"Content-Length", len.to_string().as_bytes());
    put_header(out, b"Connection", b"close");
    if status == StatusCode::METHOD_NOT_ALLOWED && !headers.contains_key(header::ALLOW) {
        put_header(out, b"Allow", b"GET");
    }
    if status == StatusCode::UPGRADE_REQUIRED && !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        put_header(out, b"Sec-WebSocket-Version", b"13");
    }
    out.extend_from_slice(b"\r\n");
}

/// A `BadRequest` with this status and reason.
fn refuse(status: StatusCode, reason: &'static str) -> HandshakeError {
    HandshakeError::BadRequest { status, reason }
}

/// Whether httparse's header fields have `Upgrade: websocket`, as [`has_token`] reads it.
fn asks_for_websocket(fields: &[httparse::Header<'_>]) -> bool {
    let upgrade = fields.iter().filter(|field| field.name.eq_ignore_ascii_case("upgrade")).map(|field| field.value);
    elements(upgrade).any(|element| element.eq_ignore_ascii_case(b"websocket"))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::{HeaderMap, HeaderValue, StatusCode, header};
    use proptest::prelude::*;

    use super::{Accept, Request, parse_request, write_accept, write_answer, write_refusal, write_response};
    use crate::{Config, HandshakeError, SendError};

    /// The client handshake of RFC 6455 §1.3 (with the `Origin` and `Version` of §4.1's
    /// example).
    const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\
        \r\n";

    /// A request for `target` with the required headers and then `extra` header lines.
    fn request(target: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {target} HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    /// `RFC_REQUEST` with the line starting with `name` replaced by `line` (or removed if
    /// `line` is empty).
    fn replace(name: &str, line: &str) -> Vec<u8> {
        let text = std::str::from_utf8(RFC_REQUEST).expect("the RFC request is ASCII");
        let mut out = String::new();
        let mut found = false;
        for l in text.split_inclusive("\r\n") {
            if l.starts_with(name) {
                found = true;
                out.push_str(line);
            } else {
                out.push_str(l);
            }
        }
        assert!(found, "no {name} line");
        out.into_bytes()
    }

    fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
        parse_request(buf, &Config::default())
    }

    fn parse_ok(buf: &[u8]) -> Request {
        match parse(buf) {
            Ok(Some((request, len))) => {
                assert_eq!(len, buf.len());
                request
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_refused(buf: &[u8], status: u16, reason: &str) {
        match parse(buf) {
            Err(HandshakeError::BadRequest { status: s, reason: r }) => {
                assert_eq!((s.as_u16(), r), (status, reason));
            }
            other => panic!("expected {status} {reason:?}, got {other:?}"),
        }
    }

    /// A summary of a result that can be compared.
    fn summary(result: &Result<Option<(Request, usize)>, HandshakeError>) -> String {
        match result {
            Ok(Some((request, len))) => {
                format!("{len} {:?} {} {:?} {}", request.head, request.key, request.protocols, request.upgrade)
            }
            other => format!("{other:?}"),
        }
    }

    mod request_parsing {
        //! RFC 6455 §4.2.1, Reading the Client's Opening Handshake.

        use super::*;

        #[test]
        fn rfc_example() {
            let request = parse_ok(RFC_REQUEST);
            assert_eq!(request.path(), "/chat");
            assert_eq!(request.query(), None);
            assert_eq!(request.host(), Some("server.example.com"));
            assert_eq!(request.origin(), Some("http://example.com"));
            assert_eq!(request.key(), "dGhlIHNhbXBsZSBub25jZQ==");
            assert_eq!(request.protocols(), ["chat", "superchat"]);
            assert_eq!(request.head().method(), http::Method::GET);
            assert_eq!(request.head().version(), http::Version::HTTP_11);
            assert_eq!(request.headers().len(), 7);
        }

        #[test]
        fn bytes_after_the_head_are_not_consumed() {
            let mut buf = RFC_REQUEST.to_vec();
            buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4]);
            let (_, len) = parse(&buf).unwrap().unwrap();
            assert_eq!(len, RFC_REQUEST.len());
        }

        #[test]
        fn byte_by_byte_is_incomplete_until_the_last_byte() {
            for end in 0..RFC_REQUEST.len() {
                assert!(matches!(parse(&RFC_REQUEST[..end]), Ok(None)), "prefix of {end} bytes");
            }
            parse_ok(RFC_REQUEST);
        }

        #[test]
        fn bare_lf_line_endings() {
            let text = std::str::from_utf8(RFC_REQUEST).unwrap().replace("\r\n", "\n");
            parse_ok(text.as_bytes());
        }

        #[test]
        fn path_and_query() {
            let request = parse_ok(&request("/a/b?x=1&y=%20", ""));
            assert_eq!(request.path(), "/a/b");
            assert_eq!(request.query(), Some("x=1&y=%20"));
        }

        #[test]
        fn absolute_form_target() {
            let absolute = parse_ok(&request("http://example.com:8080/chat?room=1", ""));
            assert_eq!(absolute.path(), "/chat");
            assert_eq!(absolute.query(), Some("room=1"));
            assert_eq!(absolute.head().uri().authority().unwrap().as_str(), "example.com:8080");
            assert_eq!(parse_ok(&request("wss://example.com", "")).path(), "/");
        }

        #[test]
        fn asterisk_and_authority_form_are_refused() {
            assert_refused(&request("*", ""), 400, "invalid request target");
            assert_refused(&request("example.com:80", ""), 400, "invalid request target");
            assert_refused(&request("ftp://example.com/", ""), 400, "invalid request target");
        }

        #[test]
        fn method_must_be_get() {
            let buf = [b"POST", &RFC_REQUEST[3..]].concat();
            assert_refused(&buf, 405, "method must be GET");
            let buf = [b"get", &RFC_REQUEST[3..]].concat();
            assert_refused(&buf, 405, "method must be GET");
        }

        #[test]
        fn http_1_0_is_refused() {
            let buf = replace("GET", "GET /chat HTTP/1.0\r\n");
            assert_refused(&buf, 400, "HTTP/1.1 required");
        }

        #[test]
        fn other_versions_are_malformed() {
            let buf = replace("GET", "GET /chat HTTP/2.0\r\n");
            assert_refused(&buf, 400, "invalid HTTP version");
        }

        #[test]
        fn malformed_http_is_400() {
            assert_refused(b"GET /chat HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "invalid header name");
            assert_refused(b"GET /chat HTTP/1.1\r\nA: b\rc\r\n\r\n", 400, "invalid header value");
            assert_refused(b"GET /chat HTTP/1.1\r\nA: b\r\r\n", 400, "invalid header value");
            assert_refused(b"G(T /chat HTTP/1.1\r\n\r\n", 400, "invalid method or token");
            // The start of a TLS ClientHello, sent to a plain port: refused at once.
            assert_refused(b"\x16\x03\x01\x02\x00\x01", 400, "invalid method or token");
        }

        #[test]
        fn host_is_required_once() {
            assert_refused(&replace("Host", ""), 400, "missing Host");
            assert_refused(&replace("Host", "Host: \r\n"), 400, "missing Host");
            assert_refused(&replace("Host", "Host: a\r\nHost: b\r\n"), 400, "duplicate Host");
        }

        #[test]
        fn upgrade_must_list_websocket() {
            assert_refused(&replace("Upgrade", ""), 400, "missing Upgrade: websocket");
            assert_refused(&replace("Upgrade", "Upgrade: h2c\r\n"), 400, "missing Upgrade: websocket");
            assert_refused(&replace("Upgrade", "Upgrade: websockets\r\n"), 400, "missing Upgrade: websocket");
            parse_ok(&replace("Upgrade", "Upgrade: WebSocket\r\n"));
            parse_ok(&replace("Upgrade", "Upgrade: h2c ,, websocket \r\n"));
            parse_ok(&replace("Upgrade", "Upgrade: h2c\r\nUpgrade: WEBSOCKET\r\n"));
        }

        #[test]
        fn connection_must_list_upgrade() {
            assert_refused(&replace("Connection", ""), 400, "missing Connection: upgrade");
            let buf = replace("Connection", "Connection: keep-alive\r\n");
            assert_refused(&buf, 400, "missing Connection: upgrade");
            let buf = replace("Connection", "Connection: upgrade-insecure\r\n");
            assert_refused(&buf, 400, "missing Connection: upgrade");
            parse_ok(&replace("Connection", "Connection: keep-alive, upgrade\r\n"));
            parse_ok(&replace("Connection", "Connection: keep-alive\r\nConnection: UPGRADE\r\n"));
        }

        #[test]
        fn version_must_be_13() {
            let unsupported = "unsupported Sec-WebSocket-Version";
            assert_refused(&replace("Sec-WebSocket-Version", ""), 426, "missing Sec-WebSocket-Version");
            let buf = replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n");
            assert_refused(&buf, 426, unsupported);
            let buf = replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8\r\n");
            assert_refused(&buf, 426, unsupported);
            let buf = replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n");
            assert_refused(&buf, 426, unsupported);
            parse_ok(&replace("Sec-WebSocket-Version", "Sec-WebSocket-Version:13  \r\n"));
        }

        #[test]
        fn key_must_be_one_base64_nonce_of_16_bytes() {
            let key = "Sec-WebSocket-Key";
            assert_refused(&replace(key, ""), 400, "missing Sec-WebSocket-Key");
            let two = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
            assert_refused(&replace(key, two), 400, "duplicate Sec-WebSocket-Key");
            for bad in [
                "",
                "dGhlIHNhbXBsZSBub25jZQ",       // unpadded
                "dGhlIHNhbXBsZSBub25jZR==",     // non-zero trailing bits
                "dGhlIHNhbXBsZSBub25j",         // 15 bytes
                "dGhlIHNhbXBsZSBub25jZXMh",     // 18 bytes
                "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 19 bytes
                "dGhl*HNhbXBsZSBub25jZQ==",
            ] {
                let buf = replace(key, &format!("Sec-WebSocket-Key: {bad}\r\n"));
                assert_refused(&buf, 400, "invalid Sec-WebSocket-Key");
            }
            let request = parse_ok(&replace(key, "Sec-WebSocket-Key:   AAAAAAAAAAAAAAAAAAAAAA==  \r\n"));
            assert_eq!(request.key(), "AAAAAAAAAAAAAAAAAAAAAA==");
        }

        #[test]
        fn protocols_from_every_header() {
            let buf = replace(
                "Sec-WebSocket-Protocol",
                "Sec-WebSocket-Protocol: a , b,,\r\nSec-WebSocket-Protocol:\r\nSec-WebSocket-Protocol: v2.c\r\n",
            );
            assert_eq!(parse_ok(&buf).protocols(), ["a", "b", "v2.c"]);
            assert!(parse_ok(&replace("Sec-WebSocket-Protocol", "")).protocols().is_empty());
        }

        #[test]
        fn protocols_must_be_tokens() {
            let buf = replace("Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol: a b\r\n");
            assert_refused(&buf, 400, "invalid Sec-WebSocket-Protocol");
            let buf = replace("Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol: chat/1\r\n");
            assert_refused(&buf, 400, "invalid Sec-WebSocket-Protocol");
        }

        #[test]
        fn a_body_is_refused() {
            assert_refused(&request("/", "Content-Length: 5\r\n"), 400, "request has a body");
            assert_refused(&request("/", "Transfer-Encoding: chunked\r\n"), 400, "request has a body");
            parse_ok(&request("/", "Content-Length: 0\r\n"));
        }

        #[test]
        fn repeated_headers_are_kept_in_order() {
            let request = parse_ok(&request("/", "X-A: 1\r\nx-a: 2\r\n"));
            let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
            assert_eq!(values, ["1", "2"]);
        }
    }

    mod limits {
        //! `max_header_bytes` and `max_headers` (431).

        use super::*;

        #[test]
        fn head_over_max_header_bytes() {
            let config = Config::default().max_header_bytes(RFC_REQUEST.len() - 1);
            let result = parse_request(RFC_REQUEST, &config);
            assert!(matches!(
                result,
                Err(HandshakeError::BadRequest { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, .. })
            ));
            // Incomplete until the limit, then refused: same answer as the whole buffer.
            assert!(matches!(parse_request(&RFC_REQUEST[..RFC_REQUEST.len() - 2], &config), Ok(None)));
            assert_eq!(summary(&parse_request(&RFC_REQUEST[..RFC_REQUEST.len() - 1], &config)), summary(&result));
        }

        #[test]
        fn head_of_exactly_max_header_bytes() {
            let config = Config::default().max_header_bytes(RFC_REQUEST.len());
            assert!(matches!(parse_request(RFC_REQUEST, &config), Ok(Some(_))));
        }

        #[test]
        fn endless_head_is_refused_at_the_limit() {
            let mut buf = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
            buf.resize(9000, b'a');
            assert!(matches!(parse(&buf[..(8 << 10) - 1]), Ok(None)));
            assert_refused(&buf[..8 << 10], 431, "request head too large");
            assert_refused(&buf, 431, "request head too large");
        }

        #[test]
        fn too_many_headers() {
            let config = Config::default().max_headers(8);
            let extra = "X-1: a\r\nX-2: b\r\nX-3: c\r\n";
            // 5 required headers + 3 = 8: accepted; one more is refused.
            assert!(matches!(parse_request(&request("/", extra), &config), Ok(Some(_))));
            let result = parse_request(&request("/", &format!("{extra}X-4: d\r\n")), &config);
            match result {
                Err(HandshakeError::BadRequest { status, reason }) => {
                    assert_eq!((status.as_u16(), reason), (431, "too many headers"));
                }
                other => panic!("expected 431, got {other:?}"),
            }
        }

        #[test]
        fn huge_limits_allocate_by_input() {
            // No allocation proportional to `max_headers` itself.
            let config = Config::default().max_headers(usize::MAX).max_header_bytes(usize::MAX);
            assert!(matches!(parse_request(RFC_REQUEST, &config), Ok(Some(_))));
            assert!(matches!(parse_request(b"GET", &config), Ok(None)));
        }
    }

    mod responses {
        //! RFC 6455 §4.2.2, Sending the Server's Opening Handshake.

        use super::*;

        fn accept(request: &Request, accept: &Accept, extensions: Option<&str>) -> Result<String, SendError> {
            let mut out = BytesMut::new();
            write_accept(request, accept, extensions, &mut out)?;
            Ok(String::from_utf8(out.to_vec()).expect("the response is ASCII"))
        }

        #[test]
        fn rfc_example_accept() {
            let request = parse_ok(RFC_REQUEST);
            let response = accept(&request, &Accept::new().protocol("chat"), None).unwrap();
            assert_eq!(
                response,
                "HTTP/1.1 101 Switching Protocols\r\n\
                 Upgrade: websocket\r\n\
                 Connection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                 Sec-WebSocket-Protocol: chat\r\n\
                 \r\n"
            );
        }

        #[test]
        fn accept_with_extensions_and_headers() {
            let request = parse_ok(RFC_REQUEST);
            let with = Accept::new()
                .header(header::SET_COOKIE, HeaderValue::from_static("a=1"))
                .header(header::SET_COOKIE, HeaderValue::from_static("b=2"));
            let response = accept(&request, &with, Some("permessage-deflate")).unwrap();
            assert_eq!(
                response,
                "HTTP/1.1 101 Switching Protocols\r\n\
                 Upgrade: websocket\r\n\
                 Connection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate\r\n\
                 set-cookie: a=1\r\n\
                 set-cookie: b=2\r\n\
                 \r\n"
            );
            let response = accept(&request, &Accept::new(), Some("")).unwrap();
            assert!(!response.contains("Extensions"));
        }

        #[test]
        fn protocol_must_have_been_offered() {
            let request = parse_ok(RFC_REQUEST);
            let mut out = BytesMut::new();
            let result = write_accept(&request, &Accept::new().protocol("Chat"), None, &mut out);
            assert_eq!(result, Err(SendError::InvalidState));
            assert!(out.is_empty());
            let request = parse_ok(&replace("Sec-WebSocket-Protocol", ""));
            let result = write_accept(&request, &Accept::new().protocol("chat"), None, &mut out);
            assert_eq!(result, Err(SendError::InvalidState));
            assert!(out.is_empty());
        }

        #[test]
        fn handshake_headers_and_bad_extensions_are_misuse() {
            let request = parse_ok(RFC_REQUEST);
            let mut out = BytesMut::new();
            let with = Accept::new().header(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("x"));
            assert_eq!(write_accept(&request, &with, None, &mut out), Err(SendError::InvalidState));
            let with = Accept::new().header(header::CONNECTION, HeaderValue::from_static("close"));
            assert_eq!(write_accept(&request, &with, None, &mut out), Err(SendError::InvalidState));
            let result = write_accept(&request, &Accept::new(), Some("a\r\nX: y"), &mut out);
            assert_eq!(result, Err(SendError::InvalidState));
            assert!(out.is_empty());
        }

        fn response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> String {
            let mut out = BytesMut::new();
            write_response(status, headers, body, &mut out);
            String::from_utf8(out.to_vec()).expect("the response is UTF-8")
        }

        #[test]
        fn bad_request() {
            assert_eq!(
                response(StatusCode::BAD_REQUEST, &HeaderMap::new(), b"missing Host"),
                "HTTP/1.1 400 Bad Request\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 12\r\n\
                 Connection: close\r\n\
                 \r\n\
                 missing Host"
            );
        }

        #[test]
        fn upgrade_required_names_version_13() {
            assert_eq!(
                response(StatusCode::UPGRADE_REQUIRED, &HeaderMap::new(), b""),
                "HTTP/1.1 426 Upgrade Required\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 0\r\n\
                 Connection: close\r\n\
                 Sec-WebSocket-Version: 13\r\n\
                 \r\n"
            );
        }

        #[test]
        fn method_not_allowed_names_get() {
            let text = response(StatusCode::METHOD_NOT_ALLOWED, &HeaderMap::new(), b"");
            assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
            assert!(text.contains("\r\nAllow: GET\r\n"));
        }

        #[test]
        fn given_headers_win_except_framing() {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            assert_eq!(
                response(StatusCode::UNAUTHORIZED, &headers, b"<p>no</p>"),
                "HTTP/1.1 401 Unauthorized\r\n\
                 content-type: text/html\r\n\
                 www-authenticate: Basic\r\n\
                 Content-Length: 9\r\n\
                 Connection: close\r\n\
                 \r\n\
                 <p>no</p>"
            );
        }

        #[test]
        fn status_without_a_canonical_reason() {
            let status = StatusCode::from_u16(599).unwrap();
            assert!(response(status, &HeaderMap::new(), b"").starts_with("HTTP/1.1 599 \r\n"));
        }
    }

    mod plain_http {
        //! `Config::plain_http`: plain GET and HEAD requests go to the application.

        use bytes::{Buf, Bytes};
        use http::{Method, Version};

        use super::*;
        use crate::{Connection, Event};

        fn plain() -> Config {
            Config::default().plain_http(true)
        }

        fn parse_plain(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
            parse_request(buf, &plain())
        }

        #[track_caller]
        fn plain_ok(buf: &[u8]) -> Request {
            match parse_plain(buf) {
                Ok(Some((request, len))) => {
                    assert_eq!(len, buf.len());
                    assert!(!request.is_upgrade());
                    request
                }
                other => panic!("expected a plain request, got {other:?}"),
            }
        }

        #[track_caller]
        fn assert_plain_refused(buf: &[u8], status: u16, reason: &str) {
            match parse_plain(buf) {
                Err(HandshakeError::BadRequest { status: s, reason: r }) => {
                    assert_eq!((s.as_u16(), r), (status, reason))
                }
                other => panic!("expected {status} {reason:?}, got {other:?}"),
            }
        }

        #[test]
        fn off_by_default() {
            assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "missing Upgrade: websocket");
            assert_refused(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method must be GET");
        }

        #[test]
        fn get_and_head_come_out_as_they_are() {
            let request = plain_ok(b"GET /health?full=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
            assert_eq!(request.head().method(), Method::GET);
            assert_eq!((request.path(), request.query()), ("/health", Some("full=1")));
            assert_eq!(request.headers()[header::ACCEPT], "*/*");
            assert_eq!((request.key(), request.protocols()), ("", &[][..]));
            let request = plain_ok(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(request.into_head().method(), Method::HEAD);
        }

        #[test]
        fn another_upgrade_is_a_plain_request() {
            let request = plain_ok(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
            assert_eq!(request.headers()[header::UPGRADE], "h2c");
        }

        #[test]
        fn bytes_after_the_head_are_not_consumed() {
            let (_, len) = parse_plain(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next").unwrap().unwrap();
            assert_eq!(len, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".len());
        }

        #[test]
        fn host_as_rfc_9112_requires() {
            // An empty Host is what a client sends for a target without an authority.
            plain_ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
            assert_plain_refused(b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host");
            assert_plain_refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate Host");
            let request = plain_ok(b"GET / HTTP/1.0\r\n\r\n");
            assert_eq!(request.head().version(), Version::HTTP_10);
            assert_plain_refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate Host");
        }

        #[test]
        fn a_body_or_another_method_is_refused() {
            assert_plain_refused(
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                400,
                "request has a body",
            );
            assert_plain_refused(
                b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
                "request has a body",
            );
            plain_ok(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
            assert_plain_refused(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method must be GET");
            assert_plain_refused(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid request target");
        }

        #[test]
        fn upgrade_requests_are_checked_as_before() {
            let request = parse_plain(RFC_REQUEST).unwrap().unwrap().0;
            assert!(request.is_upgrade());
            assert_eq!(request.key(), "dGhlIHNhbXBsZSBub25jZQ==");
            assert_plain_refused(&replace("Sec-WebSocket-Key", ""), 400, "missing Sec-WebSocket-Key");
            let head = String::from_utf8(RFC_REQUEST.to_vec()).unwrap().replacen("GET", "HEAD", 1);
            assert_plain_refused(head.as_bytes(), 405, "method must be GET");
        }

        #[test]
        fn limits_are_the_same() {
            let config = plain().max_header_bytes(256);
            let long = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(300));
            let refused = parse_request(long.as_bytes(), &config);
            assert!(
                matches!(
                    refused,
                    Err(HandshakeError::BadRequest { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, .. })
                ),
                "{refused:?}"
            );
        }

        #[test]
        fn a_plain_request_cannot_be_accepted() {
            let request = plain_ok(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut out = BytesMut::new();
            assert_eq!(write_accept(&request, &Accept::new(), None, &mut out), Err(SendError::InvalidState));
            assert!(out.is_empty());
        }

        fn refusal(error: HandshakeError, config: &Config) -> String {
            let mut out = BytesMut::new();
            write_refusal(&error, config, &mut out);
            String::from_utf8(out.to_vec()).expect("ASCII")
        }

        #[test]
        fn method_not_allowed_names_head_too() {
            let error = parse_plain(b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
            let text = refusal(error.clone(), &plain());
            assert!(text.starts_with("HTTP/1.1 405 ") && text.contains("\r\nallow: GET, HEAD\r\n"), "{text}");
            let text = refusal(error, &Config::default());
            assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
        }

        fn answer(request: &[u8], response: http::Response<Bytes>) -> String {
            let request = plain_ok(request);
            let mut out = BytesMut::new();
            let status = write_answer(Some(&request), response, &mut out);
            assert_eq!(status, StatusCode::OK);
            String::from_utf8(out.to_vec()).expect("UTF-8")
        }

        #[test]
        fn the_answer_to_head_has_no_body() {
            let page = || http::Response::new(Bytes::from_static(b"<p>hi</p>"));
            let get = answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", page());
            assert!(get.ends_with("Content-Length: 9\r\nConnection: close\r\n\r\n<p>hi</p>"), "{get}");
            let head = answer(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", page());
            assert_eq!(head, get.strip_suffix("<p>hi</p>").unwrap());
        }

        /// The whole exchange through a server `Connection`.
        fn exchange(request: &[u8]) -> String {
            let now = std::time::Instant::now();
            let mut conn = Connection::server(&plain(), now).unwrap();
            conn.receive(request, now);
            let Some(Event::Request(request)) = conn.next_event() else { panic!("no request") };
            assert!(!request.is_upgrade());
            assert_eq!(conn.accept(&Accept::new()), Err(SendError::InvalidState));
            let mut page = http::Response::new(Bytes::from_static(b"ok\n"));
            page.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            conn.reject(page).unwrap();
            let text = String::from_utf8(written(conn.transmit())).unwrap();
            assert!(conn.wants_shutdown());
            text
        }

        /// Everything in `out`.
        fn written(mut out: impl Buf) -> Vec<u8> {
            out.copy_to_bytes(out.remaining()).to_vec()
        }

        #[test]
        fn answered_through_a_connection() {
            let get = exchange(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(
                get.starts_with("HTTP/1.1 200 OK\r\ncache-control: no-cache\r\n") && get.ends_with("\r\n\r\nok\n"),
                "{get}"
            );
            let head = exchange(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(head, get.strip_suffix("ok\n").unwrap());
        }
    }

    mod properties {
        //! No input panics, and how the input is split does not change the answer.

        use super::*;

        /// A plain HTTP request, for `Config::plain_http`.
        const PLAIN_REQUEST: &[u8] = b"HEAD /status?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

        /// `RFC_REQUEST` or `PLAIN_REQUEST` followed by frame bytes, with some bytes overwritten.
        fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
            (
                any::<bool>(),
                prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                prop::collection::vec(any::<u8>(), 0..16),
            )
                .prop_map(|(plain, edits, tail)| {
                    let mut buf = [if plain { PLAIN_REQUEST } else { RFC_REQUEST }, &tail].concat();
                    for (at, byte) in edits {
                        let at = at.index(buf.len());
                        buf[at] = byte;
                    }
                    buf
                })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_do_not_panic(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
                let _ = parse(&buf);
            }

            #[test]
            fn any_split_of_a_valid_request(tail in prop::collection::vec(any::<u8>(), 0..32), split in any::<prop::sample::Index>()) {
                let buf = [RFC_REQUEST, &tail].concat();
                let split = split.index(buf.len() + 1);
                let first = parse(&buf[..split]);
                if split < RFC_REQUEST.len() {
                    prop_assert!(matches!(first, Ok(None)));
                } else {
                    prop_assert_eq!(summary(&first), summary(&parse(RFC_REQUEST)));
                }
                let (_, len) = parse(&buf).unwrap().unwrap();
                prop_assert_eq!(len, RFC_REQUEST.len());
            }

            /// Feeding a longer and longer buffer: once a prefix gives an answer, every longer
            /// buffer gives the same one.
            #[test]
            fn the_first_answer_is_final(buf in mutated_request(), max in 64usize..400, plain_http in any::<bool>()) {
                let config = Config::default().max_header_bytes(max).plain_http(plain_http);
                let whole = summary(&parse_request(&buf, &config));
                let mut decided = None;
                for end in 0..=buf.len() {
                    let result = summary(&parse_request(&buf[..end], &config));
                    match &decided {
                        Some(first) => prop_assert_eq!(first, &result, "prefix of {} bytes", end),
                        None if result != "Ok(None)" => decided = Some(result),
                        None => {}
                    }
                }
                prop_assert_eq!(decided.unwrap_or_else(|| "Ok(None)".to_owned()), whole);
            }
        }
    }
}
