//! permessage-deflate negotiation (RFC 7692 §5, §7.1) with arbitrary `Sec-WebSocket-Extensions`
//! values, in both roles, and the compressed messages the agreed parameters then carry.
//!
//! Input: `[client flags, server flags, offer lines, 0xFF, answer lines]`, lines split on `\n`
//! (at most 4 each; a line that is not a valid header value is left out). Flags make a
//! `DeflateConfig` (bit 0 server_no_context_takeover, bit 1 client_no_context_takeover, bits
//! 2-4 server_max_window_bits 8..=15, bits 5-7 client_max_window_bits 8..=15).
//!
//! Run 1, the server's side: a client sends the fuzzed offer lines instead of its own offer;
//! the server must accept the request, and answer with at most one `permessage-deflate`
//! element exactly when it turns compression on, with window bits no larger than it allows.
//! The client checks that answer against its own configuration: it opens, or fails the
//! handshake (a mismatch), never anything else. Once both are open they agree on compression,
//! and messages each way (twice, so that context takeover is used) arrive intact.
//!
//! Run 2, the client's side: a client gets a 101 whose `Sec-WebSocket-Extensions` lines are
//! the fuzzed answer. It opens only if one of them names permessage-deflate when it turns
//! compression on, or fails the handshake; once open, what it compresses inflates (with an
//! independent inflater, flate2's miniz_oxide) back to the message. Both runs end with exactly
//! one `Event::Closed` whose failure, if any, has a documented close code.
#![no_main]

use http::{HeaderValue, header::SEC_WEBSOCKET_EXTENSIONS};
use libfuzzer_sys::fuzz_target;
use wsx_fuzz::{CLIENT_URI, Clock, Events, WireCheck, drain, fixed_rng, small_config};
use wsx_proto::{Accept, Config, Connection, DeflateConfig, Event, HandshakeError, Message, ProtocolError};

fn deflate_config(flags: u8) -> DeflateConfig {
    DeflateConfig::default()
        .server_no_context_takeover(flags & 1 != 0)
        .client_no_context_takeover(flags & 2 != 0)
        .server_max_window_bits(8 + ((flags >> 2) & 7))
        .client_max_window_bits(8 + (flags >> 5))
        .threshold(0)
}

/// The lines of `part` that are valid header values, at most 4.
fn lines(part: &[u8]) -> Vec<HeaderValue> {
    part.split(|&b| b == b'\n').take(4).filter_map(|line| HeaderValue::from_bytes(line).ok()).collect()
}

/// Every `Sec-WebSocket-Extensions` value in a response head.
fn extension_lines(head: &str) -> Vec<&str> {
    head.split("\r\n")
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions").then_some(value.trim())
        })
        .collect()
}

fn is_handshake_failure(events: &Events) -> bool {
    matches!(
        events.closed.as_ref().and_then(|r| r.error.as_ref()),
        Some(ProtocolError::Handshake(HandshakeError::InvalidResponse(_)))
    )
}

/// Check a server's answer: one element, `permessage-deflate` with known parameters, window
/// bits within what `allowed` permits.
fn check_answer(answer: &str, allowed: &DeflateConfig, flags: u8) {
    let mut parts = answer.split(';').map(str::trim);
    assert_eq!(parts.next(), Some("permessage-deflate"), "{answer}");
    for part in parts {
        match part.split_once('=') {
            None => assert!(matches!(part, "server_no_context_takeover" | "client_no_context_takeover"), "{answer}"),
            Some(("server_max_window_bits", bits)) => {
                let bits: u8 = bits.parse().expect("a number");
                assert!((8..=8 + ((flags >> 2) & 7)).contains(&bits), "{answer} under {allowed:?}");
            }
            Some(("client_max_window_bits", bits)) => {
                let bits: u8 = bits.parse().expect("a number");
                assert!((8..=8 + (flags >> 5)).contains(&bits), "{answer} under {allowed:?}");
            }
            Some(_) => panic!("unknown parameter in {answer}"),
        }
    }
}

/// Deliver everything `from` writes to `to`, through the wire check.
fn deliver(from: &mut Connection, to: &mut Connection, wire: &mut WireCheck, clock: &Clock) {
    let bytes = drain(from);
    wire.feed(&bytes);
    to.receive(&bytes, clock.now);
}

/// The data messages `conn` has, in order.
fn messages(conn: &mut Connection, events: &mut Events) -> Vec<Message> {
    let mut out = Vec::new();
    events.drain(conn, |_, event| {
        if let Event::Message(message) = event {
            out.push(message.clone());
        }
    });
    out
}

fn server_side(client_flags: u8, server_flags: u8, offer: &[u8], payload: &[u8]) {
    let client_deflate = deflate_config(client_flags);
    let server_deflate = deflate_config(server_flags);
    let client_config = small_config().deflate(Some(client_deflate));
    let server_config = small_config().deflate(Some(server_deflate.clone()));
    let mut request = http::Request::get(CLIENT_URI);
    for line in lines(offer) {
        request = request.header(SEC_WEBSOCKET_EXTENSIONS, line);
    }
    let request = request.body(()).expect("a valid request");
    let mut clock = Clock::new();
    let mut client = Connection::client(&client_config, &request, fixed_rng(), clock.now).expect("client");
    let mut server = Connection::server(&server_config, clock.now).expect("server");
    server.receive(&drain(&mut client), clock.now);
    let Some(Event::Request(_)) = server.next_event() else { panic!("the upgrade request was refused") };
    server.accept(&Accept::new()).expect("accept");
    let response = drain(&mut server);
    let head = std::str::from_utf8(&response).expect("an ASCII response");
    let answers = extension_lines(head);
    assert!(answers.len() <= 1, "{head}");
    assert_eq!(answers.len() == 1, server.is_compressed(), "{head}");
    if let Some(answer) = answers.first() {
        check_answer(answer, &server_deflate, server_flags);
    }
    client.receive(&response, clock.now);
    let (mut client_events, mut server_events) = (Events::default(), Events::default());
    let mut opened = false;
    client_events.drain(&mut client, |_, event| opened |= matches!(event, Event::Opened(_)));
    if !opened {
        assert!(is_handshake_failure(&client_events), "{:?}", client_events.closed);
        server.receive_eof(clock.now);
        server_events.finish(&mut server, &mut clock);
        return;
    }
    assert_eq!(client.is_compressed(), server.is_compressed(), "{head}");
    let compressed = client.is_compressed();
    let (mut to_server, mut to_client) = (WireCheck::new(true, compressed), WireCheck::new(false, compressed));
    let sent = vec![Message::text("hello hello hello ".repeat(4)), Message::binary(payload.to_vec())];
    for _ in 0..2 {
        for message in &sent {
            client.send(message.clone()).expect("client send");
            server.send(message.clone()).expect("server send");
        }
        deliver(&mut client, &mut server, &mut to_server, &clock);
        deliver(&mut server, &mut client, &mut to_client, &clock);
        assert_eq!(messages(&mut server, &mut server_events), sent);
        assert_eq!(messages(&mut client, &mut client_events), sent);
    }
    client.receive_eof(clock.now);
    server.receive_eof(clock.now);
    client_events.finish(&mut client, &mut clock);
    server_events.finish(&mut server, &mut clock);
}

fn client_side(client_flags: u8, answer: &[u8], payload: &[u8]) {
    let config: Config = small_config().deflate(Some(deflate_config(client_flags)));
    let request = http::Request::get(CLIENT_URI).body(()).expect("a valid request");
    let mut clock = Clock::new();
    let mut client = Connection::client(&config, &request, fixed_rng(), clock.now).expect("client");
    let upgrade = String::from_utf8(drain(&mut client)).expect("an ASCII request");
    let key = upgrade.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).expect("a key");
    let answers = lines(answer);
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        wsx_proto::handshake::accept_key(key.as_bytes())
    )
    .into_bytes();
    for line in &answers {
        response.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        response.extend_from_slice(line.as_bytes());
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"\r\n");
    client.receive(&response, clock.now);
    let mut events = Events::default();
    let mut opened = false;
    events.drain(&mut client, |_, event| opened |= matches!(event, Event::Opened(_)));
    if opened {
        let named =
            answers.iter().any(|a| a.to_str().is_ok_and(|a| a.to_ascii_lowercase().contains("permessage-deflate")));
        assert!(!client.is_compressed() || named, "compressed without an answer: {answers:?}");
        if client.is_compressed() {
            client.send(Message::binary(payload.to_vec())).expect("send");
            let frame = drain(&mut client);
            let (header, n) = wsx_proto::frame::Header::decode(&frame).expect("a frame").expect("a header");
            let key = header.mask.expect("a client masks");
            let mut stream: Vec<u8> = frame[n..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            if header.rsv != 0 {
                stream.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
                let mut out = Vec::with_capacity(payload.len() + 64);
                flate2::Decompress::new(false)
                    .decompress_vec(&stream, &mut out, flate2::FlushDecompress::Sync)
                    .expect("our compressed message inflates");
                stream = out;
            }
            assert_eq!(stream, payload, "the message did not survive compression");
        }
    } else {
        assert!(is_handshake_failure(&events), "{:?}", events.closed);
    }
    events.finish(&mut client, &mut clock);
}

fuzz_target!(|data: &[u8]| {
    let [client_flags, server_flags, rest @ ..] = data else { return };
    let (offer, answer) = match rest.iter().position(|&b| b == 0xFF) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    server_side(*client_flags, *server_flags, offer, rest);
    client_side(*client_flags, answer, rest);
});
