//! Client side of the opening handshake (RFC 6455 §4.1).

use base64::Engine as _;
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};

use super::http::{
    Head, MapError, Occurs, classify, default_port, has_token, head_window, header_map, header_slots, list_elements,
    occurrences, protocol_list, put_header, put_headers,
};
use crate::{config::Config, error::HandshakeError};

/// What the client remembers between sending its request and checking the response.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The `Sec-WebSocket-Key` sent (empty over HTTP/2 and later, which have none).
    pub(crate) key: String,
    /// The subprotocols offered, if any.
    pub(crate) protocols: Vec<String>,
    /// The HTTP version the request went over.
    pub(crate) version: Version,
}

/// The server's 101 response, as the client application sees it.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) head: http::Response<()>,
    pub(crate) protocol: Option<String>,
}

impl Response {
    /// The whole response head.
    pub fn head(&self) -> &http::Response<()> {
        &self.head
    }

    /// The status (always 101 for an accepted connection).
    pub fn status(&self) -> StatusCode {
        self.head.status()
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        self.head.headers()
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

/// What [`check_request`] found in a request: where it goes and what it offers.
struct Checked<'r> {
    host: &'r str,
    /// The default port of the URI's scheme.
    default_port: u16,
    protocols: Vec<String>,
    /// The permessage-deflate offer to add, unless the request has its own.
    extensions: Option<&'r str>,
}

/// Check `request` as a WebSocket opening handshake to send over `version`: a `ws`, `wss`,
/// `http` or `https` URI with a host; GET (over HTTP/2 and later, CONNECT too); none of the
/// headers the handshake writes; subprotocols that are tokens; a valid `extensions` offer.
fn check_request<'r>(
    request: &'r http::Request<()>,
    extensions: Option<&'r str>,
    version: Version,
) -> Result<Checked<'r>, HandshakeError> {
    let invalid = HandshakeError::InvalidRequest;
    let uri = request.uri();
    // RFC 6455 §3: "ws" and "wss" URIs; http and https are accepted as their aliases, as
    // browsers do (WHATWG WebSockets, "establish a WebSocket connection").
    let Some(default_port) = uri.scheme_str().and_then(default_port) else {
        return Err(invalid("URI scheme must be ws, wss, http or https"));
    };
    let Some(host) = uri.host().filter(|host| !host.is_empty()) else {
        return Err(invalid("URI has no host"));
    };
    // §4.1 point 2: "The method of the request MUST be GET"; RFC 8441 §4 makes it CONNECT
    // over HTTP/2.
    let connect = version >= Version::HTTP_2 && request.method() == Method::CONNECT;
    if request.method() != Method::GET && !connect {
        return Err(invalid("method must be GET"));
    }
    let headers = request.headers();
    let owned = [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_ACCEPT,
    ];
    if owned.iter().any(|name| headers.contains_key(name)) {
        return Err(invalid("request sets a header the handshake writes"));
    }
    let protocols = protocol_list(headers).ok_or(invalid("invalid Sec-WebSocket-Protocol"))?;
    let extensions = extensions.filter(|_| !headers.contains_key(header::SEC_WEBSOCKET_EXTENSIONS));
    if extensions.is_some_and(|e| HeaderValue::from_str(e).is_err()) {
        return Err(invalid("invalid Sec-WebSocket-Extensions"));
    }
    Ok(Checked { host, default_port, protocols, extensions })
}

/// `key` as §4.1 point 7 sends it: "a randomly selected 16-byte value that has been
/// base64-encoded".
fn encode_key(key: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The `Host` value for `host` from `uri`: with the port only when it is not the scheme's
/// default (§4.1 point 4, "/host/ plus optionally ":" followed by /port/ (when not using the
/// default port)"). `Uri::host` keeps the brackets of an IPv6 literal.
fn host_value(uri: &http::Uri, host: &str, default_port: u16) -> String {
    match uri.port_u16().filter(|&explicit| explicit != default_port) {
        Some(explicit) => format!("{host}:{explicit}"),
        None => host.to_owned(),
    }
}

/// Write the upgrade request for `request` into `out`.
///
/// `request` must have a `ws`, `wss`, `http` or `https` URI with a host; its headers are sent
/// as given, except that the handshake headers (`Host` unless set, `Upgrade`, `Connection`,
/// `Sec-WebSocket-Key`, `Sec-WebSocket-Version`, and `Sec-WebSocket-Extensions` when
/// `extensions` is `Some` and the request sets none) are filled in. `Host` carries the port
/// only when it is not the scheme's default; IPv6 literals keep their brackets. Offered
/// subprotocols are read from any `Sec-WebSocket-Protocol` headers in `request`.
/// `key` is 16 random bytes, base64-encoded by this function.
///
/// Fails with [`HandshakeError::InvalidRequest`], writing nothing, if the URI has another
/// scheme or no host, the method is not GET, the request sets `Upgrade`, `Connection`,
/// `Sec-WebSocket-Key`, `Sec-WebSocket-Version` or `Sec-WebSocket-Accept` itself, a
/// subprotocol is not a token, or `extensions` is not a valid header value.
pub(crate) fn write_request(
    request: &http::Request<()>,
    key: [u8; 16],
    extensions: Option<&str>,
    out: &mut BytesMut,
) -> Result<Pending, HandshakeError> {
    let Checked { host, default_port, protocols, extensions } = check_request(request, extensions, Version::HTTP_11)?;
    let uri = request.uri();
    let headers = request.headers();
    let key = encode_key(key);

    // §4.1 point 3: "The "Request-URI" part of the request MUST match the /resource name/
    // defined in Section 3 (a relative URI) or be an absolute http/https URI".
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(match uri.path() {
        "" => b"/",
        path => path.as_bytes(),
    });
    if let Some(query) = uri.query() {
        out.extend_from_slice(b"?");
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // §4.1 point 4: "The request MUST contain a |Host| header field".
    if !headers.contains_key(header::HOST) {
        put_header(out, b"Host", host_value(uri, host, default_port).as_bytes());
    }
    put_headers(out, headers, &[]);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
    put_header(out, b"Sec-WebSocket-Key", key.as_bytes());
    out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
    if let Some(extensions) = extensions {
        put_header(out, b"Sec-WebSocket-Extensions", extensions.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(Pending { key, protocols, version: Version::HTTP_11 })
}

/// The upgrade request for `request`, as a head for another HTTP layer to send over
/// `request.version()`: HTTP/1.1, or HTTP/2 and later (RFC 8441 §4, RFC 9220).
///
/// The URI's scheme becomes `http` or `https` (RFC 6455 §3: `ws` and `wss` stand for them) and
/// its path `/` if it has none. For HTTP/1.1 the method is GET and the headers are those
/// [`write_request`] writes (`Host` unless set, `Upgrade`, `Connection`, `Sec-WebSocket-Key`,
/// `Sec-WebSocket-Version`, the offer); over HTTP/2 and later the method is CONNECT, the
/// `:authority` stands for `Host`, and only `Sec-WebSocket-Version` and the offer are added:
/// the HTTP layer sets `:protocol` to `websocket`. Fails as [`write_request`] does (GET or
/// CONNECT are both accepted over HTTP/2), and for a version before HTTP/1.1.
pub(crate) fn upgrade_request(
    request: &http::Request<()>,
    key: [u8; 16],
    extensions: Option<&str>,
) -> Result<(http::Request<()>, Pending), HandshakeError> {
    let invalid = HandshakeError::InvalidRequest;
    let version = request.version();
    if version < Version::HTTP_11 {
        return Err(invalid("HTTP/1.1 or later required"));
    }
    let Checked { host, default_port, protocols, extensions } = check_request(request, extensions, version)?;
    let uri = request.uri();
    let uri = http::Uri::builder()
        .scheme(if default_port == 443 { "https" } else { "http" })
        .authority(uri.authority().map_or(host, |authority| authority.as_str()))
        .path_and_query(uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/"))
        .build()
        .map_err(|_| invalid("invalid URI"))?;

    let mut head = http::Request::new(());
    *head.version_mut() = version;
    *head.headers_mut() = request.headers().clone();
    let headers = head.headers_mut();
    let key = if version >= Version::HTTP_2 {
        String::new()
    } else {
        if !headers.contains_key(header::HOST) {
            let host = HeaderValue::from_str(&host_value(request.uri(), host, default_port));
            headers.insert(header::HOST, host.map_err(|_| invalid("invalid URI"))?);
        }
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let key = encode_key(key);
        // Invariant: base64 is visible ASCII, a valid header value.
        headers.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_str(&key).expect("base64 is ASCII"));
        key
    };
    headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    if let Some(extensions) = extensions {
        // Invariant: `check_request` made sure it is a valid header value.
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(extensions).expect("checked"));
    }
    if version >= Version::HTTP_2 {
        *head.method_mut() = Method::CONNECT;
    }
    *head.uri_mut() = uri;
    Ok((head, Pending { key, protocols, version }))
}

/// Parse a response head from the front of `buf`.
///
/// `Ok(None)`: incomplete (an error once `buf` holds `config.max_header_bytes`).
/// `Ok(Some((head, n)))`: a response head of `n` bytes with any status; check a 101 with
/// [`check_response`].
///
/// Errors are [`HandshakeError::MalformedHttp`]: invalid HTTP, a version other than HTTP/1.1,
/// or a head over `max_header_bytes` / `max_headers`. As on the server, only the first
/// `max_header_bytes` bytes are looked at, so any split of the input gives the same result.
pub(crate) fn parse_response(
    buf: &[u8],
    config: &Config,
) -> Result<Option<(http::Response<()>, usize)>, HandshakeError> {
    let malformed = HandshakeError::MalformedHttp;
    let window = head_window(buf, config);
    let mut slots = header_slots(window, config);
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match classify(parsed.parse(window), buf, config) {
        Head::Complete(len) => len,
        Head::Partial => return Ok(None),
        Head::TooLarge => return Err(malformed("response head too large")),
        Head::TooManyHeaders => return Err(malformed("too many headers")),
        Head::Malformed(reason) => return Err(malformed(reason)),
    };
    if parsed.version != Some(1) {
        return Err(malformed("HTTP/1.1 required"));
    }
    // httparse sets the code before it reports `Complete`; `from_u16` takes any 3 digits.
    let Some(status) = parsed.code.and_then(|code| StatusCode::from_u16(code).ok()) else {
        return Err(malformed("invalid status code"));
    };
    let headers = header_map(parsed.headers).map_err(|e| match e {
        MapError::TooMany => malformed("too many headers"),
        MapError::Invalid(reason) => malformed(reason),
    })?;

    let mut head = http::Response::new(());
    *head.status_mut() = status;
    *head.version_mut() = Version::HTTP_11;
    *head.headers_mut() = headers;
    Ok(Some((head, len)))
}

/// Check a response against what was sent (RFC 6455 §4.1, points 1–6 of the client's
/// validation): for HTTP/1.1 a 101 with `Upgrade: websocket`, `Connection: upgrade`
/// (case-insensitive token lists) and the accept digest; for HTTP/2 and later a 2xx (RFC 8441
/// §5), which carries none of them; and a subprotocol only from those offered. Extensions are
/// checked by the caller.
///
/// Any other status gives [`HandshakeError::Refused`] with the headers and an empty body:
/// a caller that wants the body must check the status first and read it itself.
pub(crate) fn check_response(head: http::Response<()>, pending: &Pending) -> Result<Response, HandshakeError> {
    let invalid = HandshakeError::InvalidResponse;
    // Point 1: "If the status code received from the server is not 101, the client handles
    // the response per HTTP procedures." RFC 8441 §5: over HTTP/2, "a 2xx status code [...]
    // indicates the WebSocket connection has been established".
    let accepted = if pending.version >= Version::HTTP_2 {
        head.status().is_success()
    } else {
        head.status() == StatusCode::SWITCHING_PROTOCOLS
    };
    if !accepted {
        let (parts, ()) = head.into_parts();
        return Err(HandshakeError::Refused {
            status: parts.status,
            headers: Box::new(parts.headers),
            body: Vec::new(),
        });
    }
    let headers = head.headers();
    if pending.version < Version::HTTP_2 {
        check_upgrade_fields(headers, &pending.key)?;
    }
    // Point 6: "If the response includes a |Sec-WebSocket-Protocol| header field and this
    // header field indicates the use of a subprotocol that was not present in the client's
    // handshake (the server has indicated a subprotocol not requested by the client), the
    // client MUST _Fail the WebSocket Connection_." §4.2.2 lets the server pick one.
    let protocol = match occurrences(headers, header::SEC_WEBSOCKET_PROTOCOL) {
        Occurs::Absent => None,
        Occurs::Repeated => return Err(invalid("more than one Sec-WebSocket-Protocol")),
        Occurs::Once(_) if pending.protocols.is_empty() => {
            return Err(invalid("server selected a subprotocol but none was offered"));
        }
        Occurs::Once(_) => {
            let mut selected = list_elements(headers, header::SEC_WEBSOCKET_PROTOCOL);
            let (Some(selected), None) = (selected.next(), selected.next()) else {
                return Err(invalid("Sec-WebSocket-Protocol must hold exactly one subprotocol"));
            };
            match pending.protocols.iter().find(|offered| offered.as_bytes() == selected) {
                Some(offered) => Some(offered.clone()),
                None => {
                    return Err(invalid("server selected a subprotocol that was not offered"));
                }
            }
        }
    };
    Ok(Response { head, protocol })
}

/// RFC 6455 §4.1 points 2–4 of the client's validation of a 101: `Upgrade`, `Connection` and
/// the accept digest for `key`.
fn check_upgrade_fields(headers: &HeaderMap, key: &str) -> Result<(), HandshakeError> {
    let invalid = HandshakeError::InvalidResponse;
    // Point 2: "If the response lacks an |Upgrade| header field or the |Upgrade| header
    // field contains a value that is not an ASCII case-insensitive match for the value
    // "websocket", the client MUST _Fail the WebSocket Connection_."
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(invalid("missing Upgrade: websocket"));
    }
    // Point 3: the same for |Connection| and the token "Upgrade".
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(invalid("missing Connection: upgrade"));
    }
    // Point 4: "If the response lacks a |Sec-WebSocket-Accept| header field or the
    // |Sec-WebSocket-Accept| contains a value other than the base64-encoded SHA-1 of the
    // concatenation of the |Sec-WebSocket-Key| (as a string, not base64-decoded) with the
    // string "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" [...] the client MUST _Fail the WebSocket
    // Connection_." §4.2.2 allows one such field.
    match occurrences(headers, header::SEC_WEBSOCKET_ACCEPT) {
        Occurs::Once(accept) if accept.as_bytes() == super::accept_key(key.as_bytes()).as_bytes() => {}
        Occurs::Once(_) => return Err(invalid("Sec-WebSocket-Accept does not match the key")),
        Occurs::Absent => return Err(invalid("missing Sec-WebSocket-Accept")),
        Occurs::Repeated => return Err(invalid("more than one Sec-WebSocket-Accept")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::{HeaderValue, StatusCode, header};
    use proptest::prelude::*;

    use super::{Pending, check_response, parse_response, write_request};
    use crate::handshake::server::{parse_request, write_accept};
    use crate::{Accept, Config, HandshakeError};

    /// The nonce of RFC 6455 §1.3: "dGhlIHNhbXBsZSBub25jZQ==" decodes to these 16 bytes.
    const RFC_NONCE: [u8; 16] = *b"the sample nonce";

    /// The server handshake of RFC 6455 §1.3.
    const RFC_RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
        Sec-WebSocket-Protocol: chat\r\n\
        \r\n";

    fn get(uri: &str) -> http::Request<()> {
        http::Request::get(uri).body(()).expect("the test URI is valid")
    }

    fn write(request: &http::Request<()>, extensions: Option<&str>) -> Result<(String, Pending), HandshakeError> {
        let mut out = BytesMut::new();
        let pending = write_request(request, RFC_NONCE, extensions, &mut out)?;
        Ok((String::from_utf8(out.to_vec()).expect("the request is UTF-8"), pending))
    }

    /// The `Host` line `write_request` produces for `uri`.
    fn host_line(uri: &str) -> String {
        let (text, _) = write(&get(uri), None).unwrap();
        text.lines().find(|l| l.starts_with("Host: ")).expect("a Host line").to_owned()
    }

    fn pending(protocols: &[&str]) -> Pending {
        Pending {
            key: "dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
            protocols: protocols.iter().map(|&p| p.to_owned()).collect(),
            version: http::Version::HTTP_11,
        }
    }

    fn parse(buf: &[u8]) -> Result<Option<(http::Response<()>, usize)>, HandshakeError> {
        parse_response(buf, &Config::default())
    }

    fn head(buf: &[u8]) -> http::Response<()> {
        let (head, len) = parse(buf).unwrap().expect("a complete response");
        assert_eq!(len, buf.len());
        head
    }

    /// `RFC_RESPONSE` with the line starting with `name` replaced by `line` (removed if empty).
    fn replace(name: &str, line: &str) -> Vec<u8> {
        let text = std::str::from_utf8(RFC_RESPONSE).expect("the RFC response is ASCII");
        let mut found = false;
        let out: String = text
            .split_inclusive("\r\n")
            .map(|l| {
                if l.starts_with(name) {
                    found = true;
                    line
                } else {
                    l
                }
            })
            .collect();
        assert!(found, "no {name} line");
        out.into_bytes()
    }

    #[track_caller]
    fn assert_invalid(buf: &[u8], protocols: &[&str], reason: &'static str) {
        let result = check_response(head(buf), &pending(protocols));
        assert_eq!(result.map(|r| r.protocol), Err(HandshakeError::InvalidResponse(reason)));
    }

    mod request_writing {
        //! RFC 6455 §4.1, the client's opening handshake.

        use super::*;

        #[test]
        fn rfc_example() {
            let mut request = get("ws://server.example.com/chat");
            let headers = request.headers_mut();
            headers.insert(header::ORIGIN, HeaderValue::from_static("http://example.com"));
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat, superchat"));
            let (text, pending) = write(&request, None).unwrap();
            assert_eq!(
                text,
                "GET /chat HTTP/1.1\r\n\
                 Host: server.example.com\r\n\
                 origin: http://example.com\r\n\
                 sec-websocket-protocol: chat, superchat\r\n\
                 Upgrade: websocket\r\n\
                 Connection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\
                 \r\n"
            );
            assert_eq!(pending.key, "dGhlIHNhbXBsZSBub25jZQ==");
            assert_eq!(pending.protocols, ["chat", "superchat"]);
        }

        #[test]
        fn request_target() {
            let target = |uri| write(&get(uri), None).unwrap().0.lines().next().unwrap().to_owned();
            assert_eq!(target("ws://h"), "GET / HTTP/1.1");
            assert_eq!(target("ws://h/"), "GET / HTTP/1.1");
            assert_eq!(target("ws://h?x=1"), "GET /?x=1 HTTP/1.1");
            assert_eq!(target("wss://h/a/b?x=1&y"), "GET /a/b?x=1&y HTTP/1.1");
            assert_eq!(target("wss://user:pw@h/a#frag"), "GET /a HTTP/1.1");
        }

        #[test]
        fn host_carries_only_a_non_default_port() {
            assert_eq!(host_line("ws://example.com/"), "Host: example.com");
            assert_eq!(host_line("ws://example.com:80/"), "Host: example.com");
            assert_eq!(host_line("ws://example.com:443/"), "Host: example.com:443");
            assert_eq!(host_line("ws://example.com:9001/"), "Host: example.com:9001");
            assert_eq!(host_line("wss://example.com:443/"), "Host: example.com");
            assert_eq!(host_line("wss://example.com:80/"), "Host: example.com:80");
            assert_eq!(host_line("http://example.com:80/"), "Host: example.com");
            assert_eq!(host_line("https://example.com:443/"), "Host: example.com");
            assert_eq!(host_line("WSS://example.com:443/"), "Host: example.com");
            assert_eq!(host_line("ws://user:pw@example.com/"), "Host: example.com");
        }

        #[test]
        fn ipv6_hosts_keep_their_brackets() {
            assert_eq!(host_line("ws://[::1]:9001/"), "Host: [::1]:9001");
            assert_eq!(host_line("ws://[::1]/"), "Host: [::1]");
            assert_eq!(host_line("wss://[2001:db8::1]:443/"), "Host: [2001:db8::1]");
        }

        #[test]
        fn user_host_is_kept() {
            let mut request = get("ws://10.0.0.1:8080/");
            request.headers_mut().insert(header::HOST, HeaderValue::from_static("example.com"));
            let (text, _) = write(&request, None).unwrap();
            assert!(text.contains("\r\nhost: example.com\r\n"));
            assert!(!text.contains("10.0.0.1"));
        }

        #[test]
        fn scheme_must_be_websocket_or_http() {
            let scheme = HandshakeError::InvalidRequest("URI scheme must be ws, wss, http or https");
            for uri in ["ftp://example.com/", "/chat", "example.com:80"] {
                assert_eq!(write(&get(uri), None).map(|_| ()), Err(scheme.clone()), "{uri}");
            }
        }

        #[test]
        fn method_must_be_get() {
            let request = http::Request::post("ws://h/").body(()).unwrap();
            let mut out = BytesMut::new();
            let result = write_request(&request, RFC_NONCE, None, &mut out).map(|_| ());
            assert_eq!(result, Err(HandshakeError::InvalidRequest("method must be GET")));
            assert!(out.is_empty());
        }

        #[test]
        fn handshake_headers_belong_to_the_handshake() {
            for name in [header::UPGRADE, header::CONNECTION, header::SEC_WEBSOCKET_KEY, header::SEC_WEBSOCKET_VERSION]
            {
                let mut request = get("ws://h/");
                request.headers_mut().insert(name, HeaderValue::from_static("x"));
                let result = write(&request, None).map(|_| ());
                assert_eq!(result, Err(HandshakeError::InvalidRequest("request sets a header the handshake writes")));
            }
        }

        #[test]
        fn extensions_unless_the_request_sets_them() {
            let (text, _) = write(&get("ws://h/"), Some("permessage-deflate; client_max_window_bits")).unwrap();
            assert!(text.ends_with(
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ));
            let mut request = get("ws://h/");
            request.headers_mut().insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("x-mine"));
            let (text, _) = write(&request, Some("permessage-deflate")).unwrap();
            assert!(text.contains("sec-websocket-extensions: x-mine\r\n"));
            assert!(!text.contains("permessage-deflate"));
            let result = write(&get("ws://h/"), Some("a\r\nb: c")).map(|_| ());
            assert_eq!(result, Err(HandshakeError::InvalidRequest("invalid Sec-WebSocket-Extensions")));
        }

        #[test]
        fn protocols_from_every_header() {
            let mut request = get("ws://h/");
            let headers = request.headers_mut();
            headers.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("a, b"));
            headers.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(" ,c"));
            assert_eq!(write(&request, None).unwrap().1.protocols, ["a", "b", "c"]);
            request.headers_mut().append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("d e"));
            let result = write(&request, None).map(|_| ());
            assert_eq!(result, Err(HandshakeError::InvalidRequest("invalid Sec-WebSocket-Protocol")));
        }
    }

    mod response_parsing {
        use super::*;

        #[test]
        fn rfc_example() {
            let head = head(RFC_RESPONSE);
            assert_eq!(head.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(head.version(), http::Version::HTTP_11);
            assert_eq!(head.headers().len(), 4);
        }

        #[test]
        fn byte_by_byte_is_incomplete_until_the_last_byte() {
            let mut buf = RFC_RESPONSE.to_vec();
            buf.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
            for end in 0..RFC_RESPONSE.len() {
                assert!(matches!(parse(&buf[..end]), Ok(None)), "prefix of {end} bytes");
            }
            for end in RFC_RESPONSE.len()..=buf.len() {
                let (_, len) = parse(&buf[..end]).unwrap().unwrap();
                assert_eq!(len, RFC_RESPONSE.len());
            }
        }

        #[test]
        fn any_status_is_returned() {
            let head = head(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(head.status(), StatusCode::FORBIDDEN);
            assert_eq!(super::head(b"HTTP/1.1 599\r\n\r\n").status().as_u16(), 599);
        }

        #[test]
        fn http_1_1_only() {
            let result = parse(b"HTTP/1.0 101 Switching Protocols\r\n\r\n").map(|_| ());
            assert_eq!(result, Err(HandshakeError::MalformedHttp("HTTP/1.1 required")));
        }

        #[test]
        fn malformed_http() {
            let result = parse(b"HTTP/1.1 10 Nope\r\n\r\n").map(|_| ());
            assert_eq!(result, Err(HandshakeError::MalformedHttp("invalid status line")));
            let result = parse(b"SSH-2.0-OpenSSH_9.6\r\n").map(|_| ());
            assert_eq!(result, Err(HandshakeError::MalformedHttp("invalid HTTP version")));
            let result = parse(b"HTTP/1.1 101 OK\r\nBad header\r\n\r\n").map(|_| ());
            assert_eq!(result, Err(HandshakeError::MalformedHttp("invalid header name")));
        }

        #[test]
        fn head_over_max_header_bytes() {
            let config = Config::default().max_header_bytes(RFC_RESPONSE.len() - 1);
            assert!(matches!(parse_response(&RFC_RESPONSE[..RFC_RESPONSE.len() - 2], &config), Ok(None)));
            for end in [RFC_RESPONSE.len() - 1, RFC_RESPONSE.len()] {
                let result = parse_response(&RFC_RESPONSE[..end], &config).map(|_| ());
                assert_eq!(result, Err(HandshakeError::MalformedHttp("response head too large")));
            }
            let config = Config::default().max_header_bytes(RFC_RESPONSE.len());
            assert!(matches!(parse_response(RFC_RESPONSE, &config), Ok(Some(_))));
        }

        #[test]
        fn too_many_headers() {
            let config = Config::default().max_headers(8);
            let mut buf = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
            for i in 0..8 {
                buf.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
            }
            let complete = [&buf[..], b"\r\n"].concat();
            assert!(matches!(parse_response(&complete, &config), Ok(Some(_))));
            buf.extend_from_slice(b"X-8: 8\r\n\r\n");
            let result = parse_response(&buf, &config).map(|_| ());
            assert_eq!(result, Err(HandshakeError::MalformedHttp("too many headers")));
        }
    }

    mod response_checks {
        //! RFC 6455 §4.1, the client's validation of the server's handshake.

        use super::*;

        #[test]
        fn rfc_example() {
            let response = check_response(head(RFC_RESPONSE), &pending(&["chat", "superchat"])).unwrap();
            assert_eq!(response.protocol(), Some("chat"));
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        }

        #[test]
        fn no_protocol() {
            let buf = replace("Sec-WebSocket-Protocol", "");
            assert_eq!(check_response(head(&buf), &pending(&[])).unwrap().protocol(), None);
            assert_eq!(check_response(head(&buf), &pending(&["chat"])).unwrap().protocol(), None);
        }

        #[test]
        fn other_status_is_refused() {
            let buf = b"HTTP/1.1 403 Forbidden\r\nX-Why: origin\r\n\r\n";
            match check_response(head(buf), &pending(&[])) {
                Err(HandshakeError::Refused { status, headers, body }) => {
                    assert_eq!(status, StatusCode::FORBIDDEN);
                    assert_eq!(headers.get("x-why").unwrap(), "origin");
                    assert!(body.is_empty());
                }
                other => panic!("expected Refused, got {other:?}"),
            }
        }

        #[test]
        fn upgrade_must_list_websocket() {
            let missing = "missing Upgrade: websocket";
            assert_invalid(&replace("Upgrade", ""), &["chat"], missing);
            assert_invalid(&replace("Upgrade", "Upgrade: h2c\r\n"), &["chat"], missing);
            assert!(check_response(head(&replace("Upgrade", "Upgrade: WebSocket\r\n")), &pending(&["chat"])).is_ok());
        }

        #[test]
        fn connection_must_list_upgrade() {
            let missing = "missing Connection: upgrade";
            assert_invalid(&replace("Connection", ""), &["chat"], missing);
            assert_invalid(&replace("Connection", "Connection: close\r\n"), &["chat"], missing);
            let buf = replace("Connection", "Connection: keep-alive\r\nConnection: upgrade\r\n");
            assert!(check_response(head(&buf), &pending(&["chat"])).is_ok());
        }

        #[test]
        fn accept_must_match_the_key() {
            let name = "Sec-WebSocket-Accept";
            assert_invalid(&replace(name, ""), &["chat"], "missing Sec-WebSocket-Accept");
            let wrong = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOO=\r\n";
            assert_invalid(&replace(name, wrong), &["chat"], "Sec-WebSocket-Accept does not match the key");
            let two = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
            assert_invalid(&replace(name, two), &["chat"], "more than one Sec-WebSocket-Accept");
        }

        #[test]
        fn protocol_must_have_been_offered() {
            assert_invalid(RFC_RESPONSE, &[], "server selected a subprotocol but none was offered");
            assert_invalid(RFC_RESPONSE, &["superchat"], "server selected a subprotocol that was not offered");
            assert_invalid(RFC_RESPONSE, &["Chat"], "server selected a subprotocol that was not offered");
            let name = "Sec-WebSocket-Protocol";
            let two = "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n";
            assert_invalid(&replace(name, two), &["chat"], "more than one Sec-WebSocket-Protocol");
            let list = "Sec-WebSocket-Protocol: chat, superchat\r\n";
            let exactly_one = "Sec-WebSocket-Protocol must hold exactly one subprotocol";
            assert_invalid(&replace(name, list), &["chat", "superchat"], exactly_one);
            assert_invalid(&replace(name, "Sec-WebSocket-Protocol: \r\n"), &["chat"], exactly_one);
        }
    }

    mod round_trip {
        use super::*;

        #[test]
        fn request_through_the_server_parser() {
            let mut request = get("wss://[::1]:9001/chat/room?id=7&x=%20");
            let headers = request.headers_mut();
            headers.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v2.chat, v1.chat"));
            headers.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("json"));
            headers.append(header::ORIGIN, HeaderValue::from_static("https://example.com"));
            let mut out = BytesMut::new();
            let pending = write_request(&request, [7; 16], Some("permessage-deflate"), &mut out).unwrap();
            let (parsed, len) = parse_request(&out, &Config::default()).unwrap().unwrap();
            assert_eq!(len, out.len());
            assert_eq!(parsed.path(), "/chat/room");
            assert_eq!(parsed.query(), Some("id=7&x=%20"));
            assert_eq!(parsed.host(), Some("[::1]:9001"));
            assert_eq!(parsed.origin(), Some("https://example.com"));
            assert_eq!(parsed.protocols(), pending.protocols);
            assert_eq!(parsed.key(), pending.key);
            assert_eq!(parsed.headers().get(header::SEC_WEBSOCKET_EXTENSIONS).unwrap(), "permessage-deflate");

            let mut out = BytesMut::new();
            write_accept(&parsed, &Accept::new().protocol("json"), Some("permessage-deflate"), &mut out).unwrap();
            let (head, len) = parse_response(&out, &Config::default()).unwrap().unwrap();
            assert_eq!(len, out.len());
            let response = check_response(head, &pending).unwrap();
            assert_eq!(response.protocol(), Some("json"));
            assert_eq!(response.headers().get(header::SEC_WEBSOCKET_EXTENSIONS).unwrap(), "permessage-deflate");
        }

        #[test]
        fn without_protocols() {
            let mut out = BytesMut::new();
            let pending = write_request(&get("ws://localhost:8080"), [0xff; 16], None, &mut out).unwrap();
            let (parsed, _) = parse_request(&out, &Config::default()).unwrap().unwrap();
            assert_eq!((parsed.path(), parsed.query(), parsed.host()), ("/", None, Some("localhost:8080")));
            assert!(parsed.protocols().is_empty());
            let mut out = BytesMut::new();
            write_accept(&parsed, &Accept::new(), None, &mut out).unwrap();
            let (head, _) = parse_response(&out, &Config::default()).unwrap().unwrap();
            assert_eq!(check_response(head, &pending).unwrap().protocol(), None);
        }
    }

    mod properties {
        use super::*;

        fn summary(result: &Result<Option<(http::Response<()>, usize)>, HandshakeError>) -> String {
            format!("{result:?}")
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_do_not_panic(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
                if let Ok(Some((head, _))) = parse(&buf) {
                    let _ = check_response(head, &pending(&["chat"]));
                }
            }

            /// Once a prefix gives an answer, every longer buffer gives the same one.
            #[test]
            fn the_first_answer_is_final(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                tail in prop::collection::vec(any::<u8>(), 0..16),
                max in 64usize..200,
            ) {
                let mut buf = [RFC_RESPONSE, &tail].concat();
                for (at, byte) in edits {
                    let at = at.index(buf.len());
                    buf[at] = byte;
                }
                let config = Config::default().max_header_bytes(max);
                let whole = summary(&parse_response(&buf, &config));
                let mut decided = None;
                for end in 0..=buf.len() {
                    let result = summary(&parse_response(&buf[..end], &config));
                    match &decided {
                        Some(first) => prop_assert_eq!(first, &result, "prefix of {} bytes", end),
                        None if result != "Ok(None)" => decided = Some(result),
                        None => {}
                    }
                }
                prop_assert_eq!(decided.unwrap_or_else(|| "Ok(None)".to_owned()), whole);
            }
        }

        proptest! {
            /// Whatever the path, query, subprotocols and nonce, the server reads back what
            /// the client wrote, and the client accepts the server's answer.
            #[test]
            fn round_trip(
                path in "(/[a-zA-Z0-9._~%-]{0,8}){0,4}",
                query in proptest::option::of("[a-zA-Z0-9=&%/?]{0,16}"),
                protocols in prop::collection::vec("[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,8}", 0..4),
                pick in any::<prop::sample::Index>(),
                nonce in any::<[u8; 16]>(),
            ) {
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                let mut request = get(&format!("ws://example.com:8080{path}{query}"));
                if !protocols.is_empty() {
                    let list = HeaderValue::from_str(&protocols.join(", ")).unwrap();
                    request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, list);
                }
                let mut out = BytesMut::new();
                let pending = write_request(&request, nonce, None, &mut out).unwrap();
                let (parsed, len) = parse_request(&out, &Config::default()).unwrap().unwrap();
                prop_assert_eq!(len, out.len());
                prop_assert_eq!(parsed.path(), request.uri().path());
                prop_assert_eq!(parsed.query(), request.uri().query());
                prop_assert_eq!(parsed.protocols(), &protocols[..]);
                prop_assert_eq!(parsed.key(), &pending.key[..]);

                let selected = (!protocols.is_empty()).then(|| protocols[pick.index(protocols.len())].clone());
                let accept = match &selected {
                    Some(protocol) => Accept::new().protocol(protocol),
                    None => Accept::new(),
                };
                let mut out = BytesMut::new();
                write_accept(&parsed, &accept, None, &mut out).unwrap();
                let (head, _) = parse_response(&out, &Config::default()).unwrap().unwrap();
                let response = check_response(head, &pending).unwrap();
                prop_assert_eq!(response.protocol(), selected.as_deref());
            }
        }
    }
}
