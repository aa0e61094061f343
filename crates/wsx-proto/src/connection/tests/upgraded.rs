//! Handshakes another HTTP layer ran: `Request::from_head` and `accept_upgraded` on the server,
//! `client_upgraded` and `receive_response` on the client, over HTTP/1.1 (RFC 6455 §4) and as an
//! HTTP/2 extended CONNECT (RFC 8441 §4, §5).

use http::{HeaderValue, Method, StatusCode, Version, header};

use super::*;
use crate::{DeflateConfig, Request, Role};

/// The RFC 6455 §1.3 request, as an HTTP layer hands it over.
fn h1_head() -> http::Request<()> {
    http::Request::get("/chat?room=1")
        .header(header::HOST, "example.com")
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .body(())
        .unwrap()
}

/// The RFC 8441 §5 example request: an extended CONNECT over HTTP/2.
fn h2_head() -> http::Request<()> {
    http::Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri("https://server.example.com/chat")
        .header(header::SEC_WEBSOCKET_PROTOCOL, "chat, superchat")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::ORIGIN, "http://www.example.com")
        .body(())
        .unwrap()
}

/// The status and reason `from_head` refuses with.
#[track_caller]
fn refused(head: http::Request<()>, protocol: Option<&str>) -> (u16, &'static str) {
    match Request::from_head(head, protocol) {
        Err(HandshakeError::BadRequest { status, reason }) => (status.as_u16(), reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `head` with `name` set to `value`, or removed when `value` is empty.
fn with(mut head: http::Request<()>, name: header::HeaderName, value: &str) -> http::Request<()> {
    if value.is_empty() {
        head.headers_mut().remove(&name);
    } else {
        head.headers_mut().insert(name, HeaderValue::from_str(value).unwrap());
    }
    head
}

/// A server accepting `head` as an HTTP layer would: the connection and the response head.
fn accept(
    config: &Config,
    head: http::Request<()>,
    protocol: Option<&str>,
    with: &Accept,
) -> (Side, http::Response<()>) {
    let request = Request::from_head(head, protocol).unwrap();
    let mut server = Connection::server(config, Instant::now()).unwrap();
    let response = server.accept_upgraded(&request, with).unwrap();
    (Side::new(server), response)
}

/// A client and a server whose handshake went through an HTTP layer over `version`, open.
fn upgraded_pair(version: Version, client: Config, server: Config) -> Pair {
    let now = Instant::now();
    let request = http::Request::get("ws://example.com/chat").version(version).body(()).unwrap();
    let (client, head) = Connection::client_upgraded(&client, &request, counter_rng(), now).unwrap();
    let protocol = (version >= Version::HTTP_2).then_some("websocket");
    let (server, response) = accept(&server, head, protocol, &Accept::new());
    let mut client = Side::new(client);
    client.receive_response(response, now);
    let Some(Event::Opened(_)) = client.next_event() else { panic!("not opened") };
    assert!(drain(&mut client).is_empty(), "nothing of the handshake goes through transmit");
    Pair { client, server, now }
}

mod server {
    use super::*;

    #[test]
    fn http11_answer_is_the_rfc_101() {
        let (server, response) = accept(&Config::default(), h1_head(), None, &Accept::new());
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        // RFC 6455 §1.3.
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(response.headers()[header::UPGRADE], "websocket");
        assert_eq!(response.headers()[header::CONNECTION], "Upgrade");
        assert!(server.is_open());
        assert_eq!(server.role(), Role::Server);
    }

    #[test]
    fn http2_answer_is_200_without_accept() {
        let chosen = Accept::new().protocol("chat").header(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        let (server, response) = accept(&Config::default(), h2_head(), Some("websocket"), &chosen);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2);
        let headers = response.headers();
        assert_eq!(headers[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        assert_eq!(headers[header::SET_COOKIE], "a=1");
        for absent in [header::SEC_WEBSOCKET_ACCEPT, header::UPGRADE, header::CONNECTION, header::CONTENT_LENGTH] {
            assert!(!headers.contains_key(&absent), "{absent} in {headers:?}");
        }
        assert_eq!(server.protocol(), Some("chat"));
    }

    /// The same offer gets the same answer from the engine's own handshake and from
    /// `accept_upgraded`: one negotiation, shared.
    #[test]
    fn negotiation_matches_the_native_handshake() {
        let config = Config::default().deflate(Some(DeflateConfig::default().server_max_window_bits(12)));
        let offer = "permessage-deflate; client_max_window_bits, x-other";
        let head = with(h1_head(), header::SEC_WEBSOCKET_EXTENSIONS, offer);
        let (upgraded, response) = accept(&config, head, None, &Accept::new());

        let now = Instant::now();
        let mut native = Side::new(Connection::server(&config, now).unwrap());
        let request = String::from_utf8(REQUEST.to_vec()).unwrap();
        let request = request.replace("\r\n\r\n", &format!("\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"));
        native.receive(request.as_bytes(), now);
        let Some(Event::Request(_)) = native.next_event() else { panic!("no request") };
        native.accept(&Accept::new()).unwrap();
        let written = String::from_utf8(drain(&mut native)).unwrap();

        let answer = response.headers()[header::SEC_WEBSOCKET_EXTENSIONS].to_str().unwrap();
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=12");
        assert!(written.contains(&format!("\r\nSec-WebSocket-Extensions: {answer}\r\n")), "{written}");
        assert!(upgraded.is_compressed() && native.is_compressed());
    }

    #[test]
    fn bytes_read_past_the_head_are_the_first_frame() {
        let request = Request::from_head(h1_head(), None).unwrap();
        let now = Instant::now();
        let mut server = Side::new(Connection::server(&Config::default(), now).unwrap());
        server.accept_upgraded(&request, &Accept::new()).unwrap();
        // The first frame came in the same read as the request head; the rest of it next.
        let next = cframe(true, 1, b"next");
        server.receive(&[cframe(true, 1, b"early").as_slice(), &next[..3]].concat(), now);
        server.receive(&next[3..], now);
        let got: Vec<_> = events(&mut server).iter().map(|e| message(e).clone()).collect();
        assert_eq!(got, [Message::text("early"), Message::text("next")]);
    }

    #[test]
    fn misuse_is_refused_and_changes_nothing() {
        let request = Request::from_head(h2_head(), Some("websocket")).unwrap();
        let now = Instant::now();
        let mut server = Connection::server(&Config::default(), now).unwrap();
        let unoffered = Accept::new().protocol("other");
        assert_eq!(server.accept_upgraded(&request, &unoffered).unwrap_err(), SendError::InvalidState);
        let owned = Accept::new().header(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("x"));
        assert_eq!(server.accept_upgraded(&request, &owned).unwrap_err(), SendError::InvalidState);
        assert!(!server.is_open());
        server.accept_upgraded(&request, &Accept::new()).unwrap();
        assert_eq!(server.accept_upgraded(&request, &Accept::new()).unwrap_err(), SendError::InvalidState);

        let client_request = http::Request::get("ws://example.com/").body(()).unwrap();
        let mut client = Connection::client(&Config::default(), &client_request, counter_rng(), now).unwrap();
        assert_eq!(client.accept_upgraded(&request, &Accept::new()).unwrap_err(), SendError::InvalidState);
    }

    #[test]
    fn a_request_the_engine_parsed_cannot_be_accepted_again() {
        let now = Instant::now();
        let mut server = Side::new(Connection::server(&Config::default(), now).unwrap());
        server.receive(REQUEST, now);
        let Some(Event::Request(request)) = server.next_event() else { panic!("no request") };
        assert_eq!(server.accept_upgraded(&request, &Accept::new()).unwrap_err(), SendError::InvalidState);
    }

    #[test]
    fn masking_is_still_required_over_http2() {
        let (mut server, _) = accept(&Config::default(), h2_head(), Some("websocket"), &Accept::new());
        server.receive(&frame(true, 0, 1, None, b"unmasked"), Instant::now());
        assert_failing(&mut server, CloseCode::PROTOCOL);
    }
}

/// `Request::from_head`: the same rules as the engine's own parser, and RFC 8441's for HTTP/2.
mod checks {
    use super::*;

    #[test]
    fn valid_requests() {
        let h1 = Request::from_head(h1_head(), None).unwrap();
        assert_eq!((h1.path(), h1.query(), h1.key()), ("/chat", Some("room=1"), "dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(h1.is_upgrade());
        let h2 = Request::from_head(h2_head(), Some("websocket")).unwrap();
        assert_eq!((h2.path(), h2.key(), h2.origin()), ("/chat", "", Some("http://www.example.com")));
        assert_eq!(h2.protocols(), ["chat", "superchat"]);
        // Upgrade tokens compare without case, as in `Upgrade: websocket`.
        Request::from_head(h2_head(), Some("WebSocket")).unwrap();
        let mut h3 = h2_head();
        *h3.version_mut() = Version::HTTP_3;
        Request::from_head(h3, Some("websocket")).unwrap();
    }

    #[test]
    fn extended_connect() {
        assert_eq!(refused(h2_head(), None), (400, "CONNECT without :protocol"));
        assert_eq!(refused(h2_head(), Some("webtransport")), (400, ":protocol is not websocket"));
        let keyed = with(h2_head(), header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(refused(keyed, Some("websocket")), (400, "Sec-WebSocket-Key in an extended CONNECT"));
        let mut get = h2_head();
        *get.method_mut() = Method::GET;
        assert_eq!(refused(get, Some("websocket")), (405, "method must be CONNECT"));
        let mut no_authority = h2_head();
        *no_authority.uri_mut() = "/chat".parse().unwrap();
        assert_eq!(refused(no_authority, Some("websocket")), (400, "missing :authority"));
        let old = with(h2_head(), header::SEC_WEBSOCKET_VERSION, "8");
        assert_eq!(refused(old, Some("websocket")), (426, "unsupported Sec-WebSocket-Version"));
        let unversioned = with(h2_head(), header::SEC_WEBSOCKET_VERSION, "");
        assert_eq!(refused(unversioned, Some("websocket")), (426, "missing Sec-WebSocket-Version"));
        let bad_protocol = with(h2_head(), header::SEC_WEBSOCKET_PROTOCOL, "a b");
        assert_eq!(refused(bad_protocol, Some("websocket")), (400, "invalid Sec-WebSocket-Protocol"));
        let body = with(h2_head(), header::CONTENT_LENGTH, "5");
        assert_eq!(refused(body, Some("websocket")), (400, "request has a body"));
    }

    #[test]
    fn http11_upgrade() {
        let mut post = h1_head();
        *post.method_mut() = Method::POST;
        assert_eq!(refused(post, None), (405, "method must be GET"));
        let mut old = h1_head();
        *old.version_mut() = Version::HTTP_10;
        assert_eq!(refused(old, None), (400, "HTTP/1.1 required"));
        assert_eq!(refused(with(h1_head(), header::UPGRADE, ""), None), (400, "missing Upgrade: websocket"));
        assert_eq!(refused(with(h1_head(), header::CONNECTION, "close"), None), (400, "missing Connection: upgrade"));
        assert_eq!(refused(with(h1_head(), header::HOST, ""), None), (400, "missing Host"));
        assert_eq!(
            refused(with(h1_head(), header::SEC_WEBSOCKET_KEY, "short"), None),
            (400, "invalid Sec-WebSocket-Key")
        );
        let old = with(h1_head(), header::SEC_WEBSOCKET_VERSION, "8");
        assert_eq!(refused(old, None), (426, "unsupported Sec-WebSocket-Version"));
    }
}

mod client {
    use super::*;

    #[test]
    fn http2_request_is_an_extended_connect() {
        let now = Instant::now();
        let config = Config::default().deflate(Some(DeflateConfig::default()));
        let request = http::Request::get("wss://example.com:8443/chat?x=1")
            .version(Version::HTTP_2)
            .header(header::SEC_WEBSOCKET_PROTOCOL, "chat")
            .body(())
            .unwrap();
        let (client, head) = Connection::client_upgraded(&config, &request, counter_rng(), now).unwrap();
        assert_eq!(head.method(), Method::CONNECT);
        assert_eq!(head.version(), Version::HTTP_2);
        assert_eq!(head.uri(), "https://example.com:8443/chat?x=1");
        let headers = head.headers();
        assert_eq!(headers[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(headers[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        assert!(headers[header::SEC_WEBSOCKET_EXTENSIONS].to_str().unwrap().starts_with("permessage-deflate"));
        for absent in [header::SEC_WEBSOCKET_KEY, header::UPGRADE, header::CONNECTION, header::HOST] {
            assert!(!headers.contains_key(&absent), "{absent} in {headers:?}");
        }
        assert!(!client.is_open());
    }

    #[test]
    fn http11_request_is_the_native_one() {
        let now = Instant::now();
        let request = http::Request::get("ws://example.com:8080/chat").body(()).unwrap();
        let (_, head) = Connection::client_upgraded(&Config::default(), &request, counter_rng(), now).unwrap();
        let mut native = Connection::client(&Config::default(), &request, counter_rng(), now).unwrap();
        let written = String::from_utf8(drain(&mut native)).unwrap();
        assert_eq!((head.method(), head.uri().path()), (&Method::GET, "/chat"));
        for (name, value) in head.headers() {
            let line = format!("\r\n{}: {}\r\n", name.as_str(), value.to_str().unwrap()).to_ascii_lowercase();
            assert!(written.to_ascii_lowercase().contains(&line), "{line:?} not in {written}");
        }
        assert_eq!(head.headers().len(), 5);
    }

    #[test]
    fn bad_requests_are_local_misuse() {
        let now = Instant::now();
        let start = |request: http::Request<()>| {
            Connection::client_upgraded(&Config::default(), &request, counter_rng(), now).map(|_| ())
        };
        let post = http::Request::post("ws://example.com/").version(Version::HTTP_2).body(()).unwrap();
        assert!(matches!(start(post), Err(ClientError::Request(HandshakeError::InvalidRequest(_)))));
        let connect = http::Request::connect("ws://example.com/").body(()).unwrap();
        assert!(matches!(start(connect), Err(ClientError::Request(HandshakeError::InvalidRequest(_)))));
        let old = http::Request::get("ws://example.com/").version(Version::HTTP_10).body(()).unwrap();
        assert!(matches!(start(old), Err(ClientError::Request(HandshakeError::InvalidRequest(_)))));
        let h2_connect = http::Request::connect("ws://example.com/").version(Version::HTTP_2).body(()).unwrap();
        start(h2_connect).unwrap();
    }

    /// What `receive_response` makes of `response` to an HTTP/2 request offering "chat".
    fn h2_outcome(response: http::Response<()>) -> Result<(), HandshakeError> {
        let now = Instant::now();
        let request = http::Request::get("ws://example.com/")
            .version(Version::HTTP_2)
            .header(header::SEC_WEBSOCKET_PROTOCOL, "chat")
            .body(())
            .unwrap();
        let (client, _) = Connection::client_upgraded(&Config::default(), &request, counter_rng(), now).unwrap();
        let mut client = Side::new(client);
        client.receive_response(response, now);
        match client.next_event() {
            Some(Event::Opened(_)) => Ok(()),
            Some(Event::Closed(reason)) => match reason.error {
                Some(ProtocolError::Handshake(e)) => Err(e),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http2_responses() {
        let response = |status: u16, protocol: Option<&str>| {
            let mut builder = http::Response::builder().status(status).version(Version::HTTP_2);
            if let Some(protocol) = protocol {
                builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
            }
            builder.body(()).unwrap()
        };
        h2_outcome(response(200, Some("chat"))).unwrap();
        h2_outcome(response(200, None)).unwrap();
        assert!(
            matches!(h2_outcome(response(403, None)), Err(HandshakeError::Refused { status, .. }) if status == 403)
        );
        assert!(matches!(h2_outcome(response(101, None)), Err(HandshakeError::Refused { .. })));
        assert!(matches!(h2_outcome(response(200, Some("other"))), Err(HandshakeError::InvalidResponse(_))));
        let mut extended = response(200, None);
        extended.headers_mut().insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("permessage-deflate"));
        assert!(matches!(h2_outcome(extended), Err(HandshakeError::InvalidResponse(_))));
    }

    #[test]
    fn http11_response_must_carry_the_accept_digest() {
        let now = Instant::now();
        let request = http::Request::get("ws://example.com/").body(()).unwrap();
        let (client, _) = Connection::client_upgraded(&Config::default(), &request, counter_rng(), now).unwrap();
        let mut client = Side::new(client);
        let response = http::Response::builder()
            .status(101)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(())
            .unwrap();
        client.receive_response(response, now);
        let Some(Event::Closed(reason)) = client.next_event() else { panic!("not failed") };
        assert!(
            matches!(reason.error, Some(ProtocolError::Handshake(HandshakeError::InvalidResponse(_)))),
            "{reason:?}"
        );
        // Once done, another response is ignored.
        client.receive_response(http::Response::new(()), now);
        assert!(client.next_event().is_none());
    }
}

/// Whole conversations over both kinds of upgraded handshake.
mod conversation {
    use super::*;

    #[test]
    fn compressed_echo_and_close_over_both_versions() {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let deflate = Config::default().deflate(Some(DeflateConfig::default().threshold(0)));
            let mut pair = upgraded_pair(version, deflate.clone(), deflate);
            assert!(pair.client.is_compressed() && pair.server.is_compressed(), "{version:?}");
            let text = "hello hello hello hello".repeat(10);
            pair.client.send(Message::text(text.clone())).unwrap();
            pair.drive();
            let got = message(&pair.server_events()[0]).clone();
            pair.server.send(got).unwrap();
            pair.drive();
            assert_eq!(message(&pair.client_events()[0]), &Message::text(text), "{version:?}");

            pair.client.close(CloseCode::NORMAL, "bye", pair.now).unwrap();
            pair.drive();
            // The server closes its side first (RFC 6455 §7.1.1): over HTTP/2 that is END_STREAM.
            assert!(pair.server.wants_shutdown(), "{version:?}");
            // Over TCP the client waits for the server's FIN; over an HTTP/2 stream it ends its
            // side at once (a server may wait for that END_STREAM before it sends its own).
            pair.client_events();
            assert_eq!(pair.client.wants_shutdown(), version >= Version::HTTP_2, "{version:?}");
            pair.client.receive_eof(pair.now);
            pair.server.receive_eof(pair.now);
            let Some(Event::Closed(reason)) = pair.client_events().pop() else { panic!("client not closed") };
            assert!(reason.is_clean(), "{reason:?}");
        }
    }
}
