//! A server connection fed arbitrary request bytes in arbitrary chunks, with handshake
//! timeouts and EOF in between (the stepped format of `wsx_fuzz::Stepped`).
//!
//! Asserts, after every step: no panic; the connection has reported `Event::Request`, or has
//! written a complete 4xx response (status line, `Content-Length` matching the body), or has
//! ended by EOF or handshake timeout, or is still waiting with fewer than `max_header_bytes`
//! buffered. A request is then accepted (101 written) or rejected. Chunking invariance: the
//! same bytes in one piece give the same request or the same response. The run ends with
//! exactly one `Event::Closed` whose failure, if any, has a documented close code.
//!
//! Flags: bit 0 deflate on the server, bit 1 small limits (256 header bytes, 8 headers),
//! bit 2 reject the request, bit 3 accept the first offered subprotocol, bit 4 plain HTTP
//! requests reported too (`Config::plain_http`, what `wsx::Server::on_http` and so `wsx serve`
//! use): one is answered with a 200 whose body is left out for `HEAD`, and cannot be accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsx_fuzz::{Action, Clock, Events, Stepped, drain, small_config};
use wsx_proto::{Accept, Config, Connection, DeflateConfig, Event, HandshakeError, ProtocolError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Request {
        path: String,
        key: String,
        protocols: Vec<String>,
        headers: Vec<(String, Vec<u8>)>,
    },
    Response(Vec<u8>),
    /// Ended by EOF or the handshake timeout before deciding.
    Interrupted,
}

fn config(input: &Stepped<'_>) -> Config {
    let mut config = small_config();
    if input.flag(0) {
        config = config.deflate(Some(DeflateConfig::default()));
    }
    if input.flag(1) {
        config = config.max_header_bytes(256).max_headers(8);
    }
    if input.flag(4) {
        config = config.plain_http(true);
    }
    config
}

/// Check a refusal: `HTTP/1.1 4xx`, then a head and a body of `Content-Length` bytes.
fn check_refusal(out: &[u8]) {
    assert!(out.starts_with(b"HTTP/1.1 4"), "not a 4xx response: {:?}", String::from_utf8_lossy(out));
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    let head = std::str::from_utf8(&out[..end]).expect("an ASCII head");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .expect("a number");
    assert_eq!(out.len() - end, length, "body length");
}

/// Check the answer to a plain request: `HTTP/1.1 200`, `Content-Length: 2`, and the body
/// `ok` unless the request was `HEAD`.
fn check_plain(out: &[u8], head_request: bool) {
    assert!(out.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(out));
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    let head = std::str::from_utf8(&out[..end]).expect("an ASCII head");
    assert!(head.contains("\r\nContent-Length: 2\r\n"), "{head}");
    assert_eq!(&out[end..], if head_request { &b""[..] } else { &b"ok"[..] });
}

fn run(input: &Stepped<'_>, stepped: bool) -> Outcome {
    let config = config(input);
    let max_header_bytes = if input.flag(1) { 256 } else { 8 << 10 };
    let mut clock = Clock::new();
    let mut conn = Connection::server(&config, clock.now).expect("valid config");
    let mut events = Events::default();
    let mut outcome = Outcome::Waiting;
    let mut out = Vec::new();
    let whole = [(input.data, Action::None)];
    let chunks: Box<dyn Iterator<Item = _>> =
        if stepped { Box::new(input.chunks()) } else { Box::new(whole.into_iter()) };
    for (chunk, action) in chunks {
        conn.receive(chunk, clock.now);
        match action {
            Action::None => {}
            Action::Tick(by) => {
                clock.advance(by);
                conn.handle_timeout(clock.now);
            }
            Action::Eof => conn.receive_eof(clock.now),
        }
        // The documented loop: events first (taking them is what parses, and queues a
        // refusal), then what to transmit.
        events.drain(&mut conn, |conn, event| {
            let Event::Request(request) = event else { return };
            assert_eq!(outcome, Outcome::Waiting, "a second request");
            assert!(out.is_empty(), "wrote before the request was answered");
            let mut headers: Vec<_> =
                request.headers().iter().map(|(name, value)| (name.to_string(), value.as_bytes().to_vec())).collect();
            headers.sort();
            outcome = Outcome::Request {
                path: request.path().to_owned(),
                key: request.key().to_owned(),
                protocols: request.protocols().to_vec(),
                headers,
            };
            if conn.is_finished() {
                // A tick in the same step ran out the handshake timeout: too late to answer.
                assert!(conn.accept(&Accept::new()).is_err(), "accept after the handshake timeout");
                return;
            }
            if !request.is_upgrade() {
                assert!(input.flag(4), "a plain request without plain_http");
                let method = request.head().method().clone();
                assert!(method == http::Method::GET || method == http::Method::HEAD, "{method}");
                assert!(conn.accept(&Accept::new()).is_err(), "a plain request accepted");
                let response = http::Response::builder().status(200).body(bytes::Bytes::from_static(b"ok")).unwrap();
                conn.reject(response).expect("answer a plain request");
                check_plain(&drain(conn), method == http::Method::HEAD);
                return;
            }
            if input.flag(2) {
                let response = http::Response::builder().status(403).body(bytes::Bytes::new()).unwrap();
                conn.reject(response).expect("reject a pending request");
                check_refusal(&drain(conn));
                assert!(conn.accept(&Accept::new()).is_err(), "accept after reject");
                return;
            }
            let mut accept = Accept::new();
            if input.flag(3)
                && let Some(protocol) = request.protocols().first()
            {
                accept = accept.protocol(protocol.clone());
            }
            match conn.accept(&accept) {
                Ok(()) => {
                    let response = drain(conn);
                    assert!(response.starts_with(b"HTTP/1.1 101 "), "accept wrote {response:?}");
                    assert!(conn.accept(&accept).is_err(), "accepted twice");
                }
                // The protocol was offered and the extension answer is ours: nothing to refuse.
                Err(e) => panic!("accept of an offered protocol failed: {e:?}"),
            }
        });
        let written = drain(&mut conn);
        if outcome == Outcome::Waiting {
            out.extend_from_slice(&written);
        }
        if outcome == Outcome::Waiting {
            if !out.is_empty() {
                check_refusal(&out);
                assert!(!conn.can_receive());
                outcome = Outcome::Response(out.clone());
            } else if conn.is_finished() {
                let reason = events.closed.as_ref().expect("finished without Closed");
                match &reason.error {
                    Some(ProtocolError::Handshake(HandshakeError::UnexpectedEof | HandshakeError::Timeout)) => {}
                    other => panic!("ended during the handshake with {other:?} and no response"),
                }
                outcome = Outcome::Interrupted;
            } else {
                let buffered = conn.read_buffer().len();
                assert!(buffered < max_header_bytes, "waiting with {buffered} bytes buffered");
            }
        }
    }
    events.finish(&mut conn, &mut clock);
    outcome
}

fuzz_target!(|data: &[u8]| {
    let input = Stepped::parse(data);
    let stepped = run(&input, true);
    if stepped != Outcome::Interrupted {
        let whole = run(&input, false);
        assert_eq!(stepped, whole, "chunking changed the outcome");
    }
});
