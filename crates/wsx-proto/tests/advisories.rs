//! The published WebSocket advisories of other stacks, each replayed against wsx-proto with real
//! bytes: one test per advisory, named after it, asserting what wsx does instead (issue 16).
//! `docs/security.md` lists them with what each test asserts; the advisories about I/O (a
//! client's defaults, application-set headers) have tests in `crates/wsx/tests/advisories.rs`.
//!
//! Heap bytes are counted by `wsx_testkit::CountingAlloc` on the test's own thread, the thread
//! the sans-I/O engine runs on, so tests running in parallel do not disturb the figures.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use flate2::{Compress, Compression, FlushCompress};
use wsx_proto::{
    Accept, CloseCode, Config, Connection, DeflateConfig, Event, HandshakeError, Message, OsSeededRng, ProtocolError,
    SendError, frame::Header,
};
use wsx_testkit::{CountingAlloc, measure};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The masking key of every frame the tests send as a client.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// Frame bytes.
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A frame header: first byte `b0`, a payload of `len` bytes, masked with [`KEY`] if `masked`.
fn header(b0: u8, len: u64, masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![b0];
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&KEY);
    }
    out
}

/// A whole frame as a client sends it (masked with [`KEY`]).
fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(b0, payload.len() as u64, true);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    out
}

/// A whole frame as a server sends it (unmasked).
fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(b0, payload.len() as u64, false);
    out.extend_from_slice(payload);
    out
}

/// A valid upgrade request with `extra` header lines (each ending in CRLF).
fn request(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Everything `conn` has to send.
fn output(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    let mut transmit = conn.transmit();
    while transmit.has_remaining() {
        out.extend_from_slice(transmit.chunk());
        let n = transmit.chunk().len();
        transmit.advance(n);
    }
    out
}

/// Every event `conn` has: taking them is what parses input.
fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.next_event()).collect()
}

/// The frames in `bytes` (a whole number of them), unmasked: (first header byte, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (header, size) = Header::decode(bytes).expect("a valid frame").expect("a whole header");
        let len = usize::try_from(header.payload_len).expect("a small frame");
        let mut payload = bytes[size..size + len].to_vec();
        if let Some(key) = header.mask {
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
        }
        out.push((bytes[0], payload));
        bytes = &bytes[size + len..];
    }
    out
}

/// The code of the close frame in `frames`, if there is one.
fn close_code(frames: &[(u8, Vec<u8>)]) -> Option<u16> {
    frames
        .iter()
        .find(|(b0, _)| b0 & 0x0F == CLOSE)
        .and_then(|(_, p)| Some(u16::from_be_bytes(p.get(..2)?.try_into().ok()?)))
}

/// A server with `config` that was sent a request with `extra` headers and accepted it; the
/// 101 response has been taken from its output.
fn open_server(config: &Config, extra: &str) -> Connection {
    let now = Instant::now();
    let mut server = Connection::server(config, now).expect("a valid config");
    server.receive(&request(extra), now);
    match server.next_event() {
        Some(Event::Request(_)) => server.accept(&Accept::new()).expect("accept"),
        other => panic!("expected the upgrade request, got {other:?}"),
    }
    let response = output(&mut server);
    assert!(response.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&response));
    server
}

/// A client and a server with `config` that completed the handshake.
fn open_pair(config: &Config) -> (Connection, Connection) {
    let now = Instant::now();
    let request = http::Request::builder().uri("ws://localhost/").body(()).expect("a valid request");
    let mut client = Connection::client(config, &request, OsSeededRng::new(), now).expect("client");
    let mut server = Connection::server(config, now).expect("server");
    server.receive(&output(&mut client), now);
    match server.next_event() {
        Some(Event::Request(_)) => server.accept(&Accept::new()).expect("accept"),
        other => panic!("expected the upgrade request, got {other:?}"),
    }
    client.receive(&output(&mut server), now);
    assert!(matches!(client.next_event(), Some(Event::Opened(_))), "the client opened");
    (client, server)
}

/// Feed `conn` all of `bytes` in one call and take its events.
fn feed(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    conn.receive(bytes, Instant::now());
    events(conn)
}

/// The error the connection failed with, and the close code it sent for it.
fn failure(conn: &mut Connection) -> (ProtocolError, Option<u16>) {
    let error = conn.close_reason().and_then(|r| r.error).expect("the connection failed");
    (error, close_code(&frames(&output(conn))))
}

/// A server's answer to a refused request: its status code.
fn status(response: &[u8]) -> u16 {
    let text = std::str::from_utf8(response).expect("an ASCII response");
    text.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).and_then(|s| s.parse().ok()).expect("a status line")
}

/// A raw deflate stream (RFC 7692 §7.2.1: sync-flushed, `00 00 ff ff` cut) that inflates to
/// `mib` MiB of zeros, about 1 KiB per MiB: flate2's best compression of 1 MiB of zeros,
/// repeated (each copy ends byte-aligned after an empty stored block).
fn bomb(mib: usize) -> Vec<u8> {
    let mut compress = Compress::new(Compression::best(), false);
    let mut chunk = Vec::with_capacity(64 * KIB);
    compress.compress_vec(&vec![0; MIB], &mut chunk, FlushCompress::Sync).expect("deflate 1 MiB of zeros");
    assert!(chunk.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    let mut stream = chunk.repeat(mib);
    stream.truncate(stream.len() - 4);
    stream
}

/// What the inflater allocates (46 KiB, see the codec's `state_memory` test) and the engine's
/// small allocations around a failure.
const INFLATER: usize = 64 * KIB;

/// ws CVE-2016-10518: `ping(number)` sent that many bytes of uninitialised memory. wsx's
/// `ping` takes the payload bytes themselves, and what goes on the wire (the ping, and the
/// automatic pong answering one) is exactly those bytes, for every length a ping can have.
#[test]
fn ws_cve_2016_10518_ping_payload_is_never_uninitialised() {
    let (mut client, mut server) = open_pair(&Config::default());
    for len in [0, 1, 4, 64, 125] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
        server.ping(Bytes::from(payload.clone())).expect("ping");
        let wire = output(&mut server);
        assert_eq!(wire, server_frame(FIN | PING, &payload), "the server's ping of {len} bytes");
        client.ping(Bytes::from(payload.clone())).expect("ping");
        let wire = output(&mut client);
        assert_eq!(frames(&wire), vec![(FIN | PING, payload.clone())], "the client's ping of {len} bytes");
        // The server answers with a pong of exactly the ping's bytes.
        let got = feed(&mut server, &wire);
        assert!(matches!(&got[..], [Event::Ping(p)] if p[..] == payload[..]), "{got:?}");
        assert_eq!(output(&mut server), server_frame(FIN | PONG, &payload), "the pong to a {len}-byte ping");
    }
    // A payload a ping cannot carry is refused, not cut or padded.
    assert_eq!(server.ping(Bytes::from(vec![0; 126])), Err(SendError::ControlTooLong));
    assert!(output(&mut server).is_empty());
}

/// ws CVE-2016-10542: no limit on a message's size by default. wsx limits messages (64 MiB)
/// and frames (16 MiB) by default and refuses a frame whose header declares more with 1009,
/// before any of its payload is buffered.
#[test]
fn ws_cve_2016_10542_default_limits_refuse_an_oversized_frame_from_its_header() {
    for declared in [16 * MIB as u64 + 1, 64 * MIB as u64 + 1, 1 << 40] {
        let mut server = open_server(&Config::default(), "");
        let mut bytes = header(FIN | BINARY, declared, true);
        bytes.extend_from_slice(&[0; 1000]);
        let ((), usage) = measure(|| drop(feed(&mut server, &bytes)));
        let (error, code) = failure(&mut server);
        assert!(matches!(error, ProtocolError::FrameTooBig { size, .. } if size == declared), "{error:?}");
        assert_eq!(code, Some(1009));
        assert!(usage.peak < 64 * KIB, "held {} bytes for a {declared}-byte frame header", usage.peak);
    }
}

/// ws GHSA-5v72-xg48-5rpm: extension names and parameters were used as keys of a plain
/// object, so `constructor` or `__proto__` crashed the server. wsx parses
/// `Sec-WebSocket-Extensions` into typed values: such names are unknown extensions (ignored by
/// a server, refused by a client) and unknown parameters decline an offer.
#[test]
fn ws_ghsa_5v72_xg48_5rpm_extension_names_are_never_keys_of_anything() {
    let config = Config::default().deflate(Some(DeflateConfig::default()));
    let offers = "Sec-WebSocket-Extensions: constructor, __proto__; toString, hasOwnProperty=1\r\n\
                  Sec-WebSocket-Extensions: permessage-deflate; __proto__, permessage-deflate; constructor=1\r\n\
                  Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let now = Instant::now();
    let mut server = Connection::server(&config, now).expect("a valid config");
    server.receive(&request(offers), now);
    assert!(matches!(server.next_event(), Some(Event::Request(_))));
    server.accept(&Accept::new()).expect("accept");
    let response = String::from_utf8(output(&mut server)).expect("an ASCII response");
    assert!(response.contains("\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"), "{response}");
    assert!(server.is_compressed(), "the one well-formed offer is taken");

    // A client that offered permessage-deflate refuses a server that names anything else.
    for answer in ["constructor", "__proto__", "permessage-deflate; __proto__", "permessage-deflate; constructor=1"] {
        let request = http::Request::builder().uri("ws://localhost/").body(()).expect("a valid request");
        let mut client = Connection::client(&config, &request, OsSeededRng::new(), now).expect("client");
        let mut server = Connection::server(&config, now).expect("server");
        server.receive(&output(&mut client), now);
        let Some(Event::Request(req)) = server.next_event() else { panic!("no request") };
        let accept = wsx_proto::handshake::accept_key(req.key().as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {answer}\r\n\r\n"
        );
        let got = feed(&mut client, response.as_bytes());
        assert!(matches!(got.last(), Some(Event::Closed(_))), "{answer}: {got:?}");
        let error = client.close_reason().and_then(|r| r.error);
        assert!(
            matches!(error, Some(ProtocolError::Handshake(HandshakeError::InvalidResponse(_)))),
            "{answer}: {error:?}"
        );
    }
}

/// A server config whose head limit lets a 1 MiB header in, for the splitting tests.
fn huge_heads() -> Config {
    Config::default().max_header_bytes(2 * MIB)
}

/// Parse `head` on a fresh server with [`huge_heads`]; return the events and the time taken.
fn parse_huge(extra: &str) -> (Vec<Event>, Vec<u8>, Duration) {
    let now = Instant::now();
    let mut server = Connection::server(&huge_heads(), now).expect("a valid config");
    let start = Instant::now();
    server.receive(&request(extra), now);
    let got = events(&mut server);
    let took = start.elapsed();
    (got, output(&mut server), took)
}

/// How long a linear parse of a 1 MiB header may take. The real cost is about a millisecond
/// in a release build and tens in a debug one; the bound is a thousand times that, so that a
/// loaded machine never trips it, while the backtracking split of the advisories (quadratic
/// in the header: about 10^11 steps at 1 MiB) would take hours.
const LINEAR_BOUND: Duration = Duration::from_secs(30);

/// ws CVE-2021-32640: splitting `Sec-WebSocket-Protocol` with a backtracking regex took
/// quadratic time on a header of many spaces. wsx splits on commas and trims once, a single
/// pass: a 1 MiB header is answered at once, and the allocations do not grow with the spaces.
#[test]
fn ws_cve_2021_32640_subprotocol_list_is_split_in_linear_time() {
    // The advisory's shape: a token, a million spaces, no comma. Not a token: 400.
    let extra = format!("Sec-WebSocket-Protocol: a{}b\r\n", " ".repeat(MIB));
    let (got, response, took) = parse_huge(&extra);
    assert!(got.iter().all(|e| !matches!(e, Event::Request(_))), "{got:?}");
    assert_eq!(status(&response), 400);
    assert!(took < LINEAR_BOUND, "a 1 MiB Sec-WebSocket-Protocol took {took:?}");

    // Empty elements between the commas are skipped (RFC 9110 §5.6.1): accepted, two protocols.
    let extra = format!("Sec-WebSocket-Protocol: a,{}b\r\n", " ,".repeat(MIB / 2));
    let (got, _, took) = parse_huge(&extra);
    let Some(Event::Request(request)) = got.first() else { panic!("{got:?}") };
    assert_eq!(request.protocols(), ["a", "b"]);
    assert!(took < LINEAR_BOUND, "a 1 MiB Sec-WebSocket-Protocol took {took:?}");

    // The work is one pass: the allocations do not depend on how many separators there are.
    let allocations = |n: usize| {
        let extra = format!("Sec-WebSocket-Protocol: a,{}b\r\n", " ,".repeat(n));
        let ((), usage) = measure(|| drop(parse_huge(&extra)));
        usage.allocations
    };
    let (small, large) = (allocations(1 << 10), allocations(1 << 19));
    assert!(large <= small + 16, "{small} allocations for 1 Ki separators, {large} for 512 Ki");
}

/// ws CVE-2024-37890: a request with more headers than the HTTP server kept lost its
/// `Sec-WebSocket-Key`, and the upgrade code crashed reading it. wsx refuses a head with more
/// than `max_headers` fields with 431 before looking at any of them, and a request it reports
/// always has a key.
#[test]
fn ws_cve_2024_37890_too_many_headers_cannot_hide_upgrade() {
    let config = Config::default().max_headers(16);
    // 20 filler fields before the ones the handshake needs, which are then past the limit.
    let filler: String = (0..20).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let head = format!(
        "GET /chat HTTP/1.1\r\n{filler}Host: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let now = Instant::now();
    let mut server = Connection::server(&config, now).expect("a valid config");
    let got = feed(&mut server, head.as_bytes());
    assert!(got.iter().all(|e| !matches!(e, Event::Request(_))), "{got:?}");
    assert_eq!(status(&output(&mut server)), 431);

    // The same head under a limit it fits: accepted, with its key.
    let mut server = Connection::server(&Config::default().max_headers(32), now).expect("a valid config");
    let Some(Event::Request(request)) = feed(&mut server, head.as_bytes()).into_iter().next() else {
        panic!("the request fits 32 headers")
    };
    assert_eq!(request.key(), "dGhlIHNhbXBsZSBub25jZQ==");

    // Exactly one field over the limit (8): 431, whichever field is last.
    let base = String::from_utf8(request_with_fields(8)).expect("ASCII");
    let mut server = Connection::server(&Config::default().max_headers(8), now).expect("a valid config");
    assert!(matches!(feed(&mut server, base.as_bytes()).first(), Some(Event::Request(_))));
    let over = String::from_utf8(request_with_fields(9)).expect("ASCII");
    let mut server = Connection::server(&Config::default().max_headers(8), now).expect("a valid config");
    let got = feed(&mut server, over.as_bytes());
    assert!(got.iter().all(|e| !matches!(e, Event::Request(_))), "{got:?}");
    assert_eq!(status(&output(&mut server)), 431);
}

/// An upgrade request with exactly `fields` header fields (at least 5), the key last.
fn request_with_fields(fields: usize) -> Vec<u8> {
    let filler: String = (0..fields - 5).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    format!(
        "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{filler}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes()
}

/// ws CVE-2026-45736: `close(code, typedArray)` sent uninitialised memory as the reason. wsx's
/// `close` takes a `&str`; the close frame on the wire is exactly the code and those bytes,
/// the echo of a peer's close is exactly the peer's code and reason, and a reason that does
/// not fit is refused with nothing sent.
#[test]
fn ws_cve_2026_45736_close_reason_is_exactly_the_bytes_given() {
    let now = Instant::now();
    for reason in ["", "bye", &"é".repeat(61)] {
        let mut server = open_server(&Config::default(), "");
        server.close(CloseCode::NORMAL, reason, now).expect("close");
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        assert_eq!(output(&mut server), server_frame(FIN | CLOSE, &payload), "close({reason:?})");

        // The echo of a client's close carries the client's bytes and nothing else.
        let mut server = open_server(&Config::default(), "");
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        feed(&mut server, &client_frame(FIN | CLOSE, &payload));
        assert_eq!(output(&mut server), server_frame(FIN | CLOSE, &payload), "the echo of {reason:?}");
    }
    let mut server = open_server(&Config::default(), "");
    assert_eq!(server.close(CloseCode::NORMAL, &"x".repeat(124), now), Err(SendError::ControlTooLong));
    assert!(output(&mut server).is_empty(), "nothing sent for a refused close");
}

/// ws CVE-2026-48779, and ws#2331 (its incomplete fix): a message held open with tiny
/// fragments, just under every limit, pinned about 100 bytes of bookkeeping per 1-byte
/// fragment (15 times the traffic). wsx copies each fragment's payload into the one message
/// buffer as it arrives, so such a message holds its payload bytes (with the buffer's doubling
/// growth) and the read buffer, whatever the fragment count.
#[test]
fn ws_cve_2026_48779_and_ws_2331_tiny_fragments_pin_only_their_bytes() {
    // The default limit: 131,072 fragments a message.
    let fragments = 131_072;
    let mut server = open_server(&Config::default(), "");
    let mut bytes = client_frame(BINARY, b"x");
    for _ in 1..fragments {
        bytes.extend_from_slice(&client_frame(CONT, b"x"));
    }
    let (got, usage) = measure(|| {
        // In 64 KiB reads, as a socket driver would take them.
        bytes.chunks(64 * KIB).flat_map(|chunk| feed(&mut server, chunk)).collect::<Vec<_>>()
    });
    assert!(got.is_empty(), "{got:?}");
    assert!(server.is_open(), "{:?}", server.close_reason());
    let bound = 2 * fragments + 128 * KIB;
    let held = usize::try_from(usage.retained.max(0)).expect("not negative");
    assert!(held <= bound, "{fragments} one-byte fragments ({} bytes of traffic) hold {held} bytes", bytes.len());
    // One more fragment passes the limit: 1009.
    feed(&mut server, &client_frame(CONT, b"x"));
    let (error, code) = failure(&mut server);
    assert!(matches!(error, ProtocolError::TooManyFragments { limit: 131_072 }), "{error:?}");
    assert_eq!(code, Some(1009));
}

/// ws#2329: empty continuation frames were not counted against `maxFragments`, so a message
/// could be kept open forever with them. wsx counts every frame of a message, empty ones and
/// those of compressed messages included.
#[test]
fn ws_2329_empty_continuations_count_toward_max_fragments() {
    for deflate in [false, true] {
        let mut config = Config::default().max_fragments(8);
        let mut extra = "";
        let mut first = client_frame(TEXT, b"a");
        if deflate {
            config = config.deflate(Some(DeflateConfig::default()));
            extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
            // "a", deflated (a fixed Huffman block, not final).
            first = client_frame(RSV1 | TEXT, &[0x4a, 0x04, 0x00]);
        }
        let mut server = open_server(&config, extra);
        assert_eq!(server.is_compressed(), deflate);
        assert!(feed(&mut server, &first).is_empty());
        for _ in 1..8 {
            assert!(feed(&mut server, &client_frame(CONT, b"")).is_empty());
        }
        assert!(server.is_open(), "8 fragments are within the limit");
        feed(&mut server, &client_frame(CONT, b""));
        let (error, code) = failure(&mut server);
        assert!(matches!(error, ProtocolError::TooManyFragments { limit: 8 }), "deflate {deflate}: {error:?}");
        assert_eq!(code, Some(1009));
    }
}

/// ws#2333: the fragment counter of a backported fix was never reset, so a long-lived
/// connection was closed once it had received `maxFragments` frames in all. wsx counts per
/// message: a connection receives any number of messages, each up to the limit.
#[test]
fn ws_2333_fragment_counter_resets_per_message() {
    let mut server = open_server(&Config::default().max_fragments(4), "");
    let mut bytes = Vec::new();
    for i in 0..500u32 {
        bytes.extend_from_slice(&client_frame(FIN | BINARY, &i.to_be_bytes()));
        bytes.extend_from_slice(&client_frame(BINARY, b"a"));
        bytes.extend_from_slice(&client_frame(CONT, b"b"));
        bytes.extend_from_slice(&client_frame(CONT, b""));
        bytes.extend_from_slice(&client_frame(FIN | CONT, b"c"));
    }
    let got = feed(&mut server, &bytes);
    assert_eq!(got.len(), 1000, "every message delivered");
    assert!(
        got.iter().skip(1).step_by(2).all(|e| matches!(e, Event::Message(Message::Binary(b)) if b[..] == b"abc"[..]))
    );
    assert!(server.is_open(), "{:?}", server.close_reason());
}

/// tungstenite CVE-2023-43669: the request head had no size limit and was parsed again from
/// the start on every read, so a head sent in small pieces cost quadratic time without bound.
/// wsx parses at most `max_header_bytes` (8 KiB) per read and answers 431 once that much has
/// arrived without the head ending, then reads no more: the work a client can cause before
/// the refusal is at most `max_header_bytes` parses of at most `max_header_bytes` bytes.
#[test]
fn tungstenite_cve_2023_43669_handshake_work_is_bounded_by_max_header_bytes() {
    let config = Config::default();
    let limit = 8 * KIB;
    let now = Instant::now();
    let mut server = Connection::server(&config, now).expect("a valid config");
    let mut head = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nX-Long: ".to_vec();
    head.resize(MIB, b'a');
    let mut answered_at = None;
    for (i, byte) in head.iter().enumerate() {
        server.receive(std::slice::from_ref(byte), now);
        drop(events(&mut server));
        let buffered = server.read_buffer().len();
        assert!(buffered <= limit, "{buffered} bytes of request head buffered after {} bytes", i + 1);
        if answered_at.is_none() && server.buffered_amount() > 0 {
            answered_at = Some(i + 1);
        }
        if !server.can_receive() && answered_at.is_some() && i > 2 * limit {
            break;
        }
    }
    assert_eq!(answered_at, Some(limit), "answered once the limit was reached");
    assert_eq!(status(&output(&mut server)), 431);
    // What arrives after the refusal is not kept.
    server.receive(&head[..64 * KIB], now);
    drop(events(&mut server));
    assert_eq!(server.read_buffer().len(), 0);
}

/// fastwebsockets#100: the fragment collector checked each frame against the size limit but
/// not the message they add up to. wsx counts a message's size across its fragments and
/// refuses the frame that would pass the limit from its header, before its payload arrives.
#[test]
fn fastwebsockets_100_fragments_are_capped_in_aggregate() {
    let config = Config::default().max_message_size(1000).max_frame_size(400);
    let mut server = open_server(&config, "");
    assert!(feed(&mut server, &client_frame(BINARY, &[1; 400])).is_empty());
    assert!(feed(&mut server, &client_frame(CONT, &[2; 400])).is_empty());
    assert!(feed(&mut server, &client_frame(CONT, &[3; 200])).is_empty());
    assert!(server.is_open(), "1000 bytes are within the limit");
    // The header alone of one more byte fails the message.
    feed(&mut server, &header(FIN | CONT, 1, true));
    let (error, code) = failure(&mut server);
    assert!(matches!(error, ProtocolError::MessageTooBig { size: 1001, limit: 1000 }), "{error:?}");
    assert_eq!(code, Some(1009));
}

/// A server and a client with permessage-deflate and the bomb tests' limits: 1 MiB messages,
/// 64 KiB frames.
fn bomb_config() -> Config {
    Config::default().deflate(Some(DeflateConfig::default())).max_message_size(MIB).max_frame_size(64 * KIB)
}

/// uws CVE-2016-10544: the payload limit was checked on the compressed size, so a small
/// compressed frame inflated without bound. wsx applies `max_message_size` to the inflated
/// size as it inflates: a 16 MiB bomb in one 16 KiB frame fails with 1009 while the connection
/// holds at most the limit, the frame and the inflater.
#[test]
fn uws_cve_2016_10544_limit_applies_to_the_inflated_size() {
    let config = bomb_config();
    let mut server = open_server(&config, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    let frame = client_frame(FIN | RSV1 | BINARY, &bomb(16));
    assert!(frame.len() < 64 * KIB);
    let (got, usage) = measure(|| feed(&mut server, &frame));
    assert!(got.iter().all(|e| !matches!(e, Event::Message(_))), "{got:?}");
    let (error, code) = failure(&mut server);
    assert!(matches!(error, ProtocolError::MessageTooBig { limit, .. } if limit == MIB), "{error:?}");
    assert_eq!(code, Some(1009));
    let bound = MIB + frame.len() + INFLATER;
    assert!(usage.peak <= bound, "held {} bytes, bound {bound}", usage.peak);
}

/// python-websockets CVE-2018-1000518: the same bomb, spread over fragments that are each
/// small compressed and inflated. wsx counts the inflated bytes of the whole message against
/// `max_message_size`, across its fragments.
#[test]
fn python_websockets_cve_2018_1000518_fragmented_bomb_is_stopped_at_the_limit() {
    let config = bomb_config();
    let mut server = open_server(&config, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    let stream = bomb(16);
    let pieces: Vec<&[u8]> = stream.chunks(512).collect();
    let mut bytes = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let b0 = match (i, i + 1 == pieces.len()) {
            (0, _) => RSV1 | BINARY,
            (_, true) => FIN | CONT,
            _ => CONT,
        };
        bytes.extend_from_slice(&client_frame(b0, piece));
    }
    let (got, usage) = measure(|| feed(&mut server, &bytes));
    assert!(got.iter().all(|e| !matches!(e, Event::Message(_))), "{got:?}");
    let (error, code) = failure(&mut server);
    assert!(matches!(error, ProtocolError::MessageTooBig { limit, .. } if limit == MIB), "{error:?}");
    assert_eq!(code, Some(1009));
    // The whole input is in the read buffer at once here, unlike from a socket.
    let bound = MIB + bytes.len() + INFLATER;
    assert!(usage.peak <= bound, "held {} bytes, bound {bound}", usage.peak);
}

/// uWebSockets OSV-2020-1598: the compressor sent bytes of uninitialised memory. wsx's
/// compressed frames depend on nothing but the messages: the same messages give the same
/// bytes on a connection made after the heap was filled with a pattern and freed, and an
/// independent inflater (flate2) gets back exactly the messages.
#[test]
fn uwebsockets_osv_2020_1598_compressed_output_is_fully_initialised() {
    let config = Config::default().deflate(Some(DeflateConfig::default().threshold(0)));
    let messages: Vec<Vec<u8>> = [0usize, 1, 100, 4 * KIB, 100 * KIB]
        .iter()
        .map(|&len| (0..len).map(|i| b"the quick brown fox "[i % 20] ^ (i / 997) as u8).collect())
        .collect();
    let sent = |dirty: bool| {
        if dirty {
            // Fill and free blocks of the sizes the compressor and its output take.
            for size in [64 * KIB, 128 * KIB, 256 * KIB, 300 * KIB] {
                drop(std::hint::black_box(vec![0xA5u8; size]));
            }
        }
        let mut server = open_server(&config, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
        for message in &messages {
            server.send(Message::binary(message.clone())).expect("send");
        }
        output(&mut server)
    };
    let clean = sent(false);
    assert_eq!(sent(true), clean, "the compressed frames depend on the heap's old contents");
    let mut inflate = flate2::Decompress::new(false);
    let frames = frames(&clean);
    assert_eq!(frames.len(), messages.len());
    for ((b0, payload), message) in frames.into_iter().zip(&messages) {
        // A message that deflate would lengthen may go out uncompressed (RFC 7692 allows it).
        if b0 == FIN | BINARY {
            assert_eq!(&payload, message);
            continue;
        }
        assert_eq!(b0, FIN | RSV1 | BINARY);
        let mut stream = payload;
        stream.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        let mut out = Vec::with_capacity(message.len() + 64);
        inflate.decompress_vec(&stream, &mut out, flate2::FlushDecompress::Sync).expect("valid deflate");
        assert_eq!(&out, message);
    }
}

/// python-websockets CVE-2021-33880: HTTP Basic credentials were compared in non-constant
/// time. wsx offers no authentication of its own, Basic or other: an `Authorization` header is
/// handed to the application untouched and changes nothing the engine does, and no source file
/// of the library or the command reads it (the application that checks credentials must
/// compare them in constant time; `docs/security.md` says so).
#[test]
fn python_websockets_cve_2021_33880_no_basic_auth_to_time() {
    let plain = {
        let mut server = Connection::server(&Config::default(), Instant::now()).expect("a valid config");
        server.receive(&request(""), Instant::now());
        assert!(matches!(server.next_event(), Some(Event::Request(_))));
        server.accept(&Accept::new()).expect("accept");
        output(&mut server)
    };
    for credentials in ["Basic dXNlcjpwYXNz", "Basic !!!", "Bearer x"] {
        let mut server = Connection::server(&Config::default(), Instant::now()).expect("a valid config");
        server.receive(&request(&format!("Authorization: {credentials}\r\n")), Instant::now());
        let Some(Event::Request(request)) = server.next_event() else { panic!("refused {credentials:?}") };
        assert_eq!(request.headers()["authorization"], credentials);
        server.accept(&Accept::new()).expect("accept");
        assert_eq!(output(&mut server), plain, "the answer depends on {credentials:?}");
    }
    // No source of the engine, the tokio layer or the command reads credentials (the client
    // removes them from a redirect to another origin, which is not a comparison).
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for krate in ["wsx-proto", "wsx", "wsx-cli"] {
        for file in rust_files(&crates.join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for needle in [
                "get(header::AUTHORIZATION",
                "get(header::PROXY_AUTHORIZATION",
                "get_all(header::AUTHORIZATION",
                "get(\"authorization\")",
                "[\"authorization\"]",
            ] {
                assert!(!text.contains(needle), "{} mentions {needle}: check the comparison", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} source files found");
}

/// Every `.rs` file under `dir`, recursively (bounded by the tree's size).
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// rust-websocket CVE-2022-35922: a buffer was allocated from the length a peer declared, so a
/// few bytes made it allocate gigabytes. wsx never allocates ahead of what has arrived: a
/// frame declaring the frame limit (16 MiB) with 10 bytes sent costs a few KiB, and the read
/// buffer offered grows with what has arrived (a small multiple of it), not with the declaration.
#[test]
fn rust_websocket_cve_2022_35922_declared_length_allocates_nothing_ahead() {
    let declared = 16 * MIB as u64;
    let mut server = open_server(&Config::default(), "");
    let mut bytes = header(FIN | BINARY, declared, true);
    bytes.extend_from_slice(&[0; 10]);
    let ((), usage) = measure(|| {
        drop(feed(&mut server, &bytes));
        let _ = server.read_buffer();
    });
    assert!(server.is_open());
    assert!(usage.peak < 64 * KIB, "held {} bytes for a frame declaring {declared}", usage.peak);
    // Through `read_buffer`, 1 KiB at a time up to 1 MiB: the room offered follows the bytes.
    let mut arrived = bytes.len();
    while arrived < MIB {
        let buf = server.read_buffer();
        assert!(buf.capacity() <= 8 * arrived + 128 * KIB, "{} bytes offered with {arrived} arrived", buf.capacity());
        buf.extend_from_slice(&[0; KIB]);
        arrived += KIB;
        server.receive_buffered(Instant::now());
        assert!(events(&mut server).is_empty());
    }
}

/// gorilla/websocket CVE-2020-27813: the remaining-length arithmetic of fragments overflowed, so
/// a huge declared length slipped past the message limit. wsx keeps lengths as `u64` below 2^63
/// (a set top bit fails with 1002) and adds them to what the message holds without overflow.
#[test]
fn gorilla_cve_2020_27813_lengths_cannot_overflow_the_limit_checks() {
    let config = Config::default().max_message_size(1000);
    for declared in [(1u64 << 63) - 1, (1 << 63) - 10, 1 << 32, u64::from(u32::MAX) + 1] {
        let mut server = open_server(&config, "");
        assert!(feed(&mut server, &client_frame(BINARY, &[0; 10])).is_empty());
        feed(&mut server, &header(FIN | CONT, declared, true));
        let (error, code) = failure(&mut server);
        assert!(matches!(error, ProtocolError::FrameTooBig { .. } | ProtocolError::MessageTooBig { .. }), "{error:?}");
        assert_eq!(code, Some(1009), "a continuation declaring {declared}");
    }
    // The top bit set: 1002, whatever the rest.
    let mut server = open_server(&config, "");
    feed(&mut server, &header(FIN | BINARY, u64::MAX, true));
    let (error, code) = failure(&mut server);
    assert_eq!(error, ProtocolError::InvalidLength);
    assert_eq!(code, Some(1002));
    // Limits as large as they go: a declared 2^63 - 1 is a frame in progress, allocated for
    // nothing that has not arrived.
    let config = Config::default().max_message_size(usize::MAX).max_frame_size(usize::MAX);
    let mut server = open_server(&config, "");
    assert!(feed(&mut server, &client_frame(BINARY, &[0; 10])).is_empty());
    let ((), usage) = measure(|| {
        drop(feed(&mut server, &header(FIN | CONT, (1 << 63) - 1, true)));
        let _ = server.read_buffer();
    });
    assert!(server.is_open());
    assert!(usage.peak < 64 * KIB, "held {} bytes", usage.peak);
}

/// coder/websocket#291: a peer answering one ping with several pongs made the library close a
/// channel twice and panic. wsx matches a pong against the keep-alive ping it is waiting for
/// by payload: duplicates and unsolicited pongs are reported as events and change nothing, and
/// an old pong replayed never answers a newer ping (which then times out with 1011).
#[test]
fn coder_websocket_291_duplicate_pongs_are_harmless() {
    let config = Config::default().ping_interval(Some(Duration::from_secs(10))).pong_timeout(Duration::from_secs(5));
    let start = Instant::now();
    let mut server = Connection::server(&config, start).expect("a valid config");
    server.receive(&request(""), start);
    assert!(matches!(server.next_event(), Some(Event::Request(_))));
    server.accept(&Accept::new()).expect("accept");
    drop(output(&mut server));

    // The first keep-alive ping, answered a hundred times, plus unsolicited pongs.
    let t1 = start + Duration::from_secs(10);
    server.handle_timeout(t1);
    let pings = frames(&output(&mut server));
    let [(b0, first)] = &pings[..] else { panic!("{pings:?}") };
    assert_eq!(*b0, FIN | PING);
    let mut bytes = Vec::new();
    for i in 0..100u8 {
        bytes.extend_from_slice(&client_frame(FIN | PONG, first));
        bytes.extend_from_slice(&client_frame(FIN | PONG, &[i]));
    }
    server.receive(&bytes, t1);
    let got = events(&mut server);
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|e| matches!(e, Event::Pong(_))));
    assert!(server.is_open());

    // The second ping, "answered" only by replays of the first pong: it times out.
    let t2 = t1 + Duration::from_secs(10);
    server.handle_timeout(t2);
    let pings = frames(&output(&mut server));
    let [(_, second)] = &pings[..] else { panic!("{pings:?}") };
    assert_ne!(second, first);
    for _ in 0..10 {
        server.receive(&client_frame(FIN | PONG, first), t2);
    }
    drop(events(&mut server));
    assert!(server.is_open());
    server.handle_timeout(t2 + Duration::from_secs(5));
    drop(events(&mut server));
    let (error, code) = failure(&mut server);
    assert_eq!(error, ProtocolError::PongTimeout);
    assert_eq!(code, Some(1011));
}

/// undici CVE-2026-1526: a client inflated a server's compressed message without bound. A wsx
/// client applies the same limits as a server: a 16 MiB bomb fails with 1009 while it holds
/// at most the limit, the frame and the inflater. (`crates/wsx/tests/advisories.rs` checks the
/// tokio client, which offers permessage-deflate by default.)
#[test]
fn undici_cve_2026_1526_client_inflating_a_bomb_fails_with_1009() {
    let (mut client, _server) = open_pair(&bomb_config());
    assert!(client.is_compressed());
    let frame = server_frame(FIN | RSV1 | BINARY, &bomb(16));
    let (got, usage) = measure(|| feed(&mut client, &frame));
    assert!(got.iter().all(|e| !matches!(e, Event::Message(_))), "{got:?}");
    let (error, code) = failure(&mut client);
    assert!(matches!(error, ProtocolError::MessageTooBig { .. }), "{error:?}");
    assert_eq!(code, Some(1009));
    let bound = MIB + frame.len() + INFLATER;
    assert!(usage.peak <= bound, "held {} bytes, bound {bound}", usage.peak);
}

/// undici: a server answering `server_max_window_bits` out of 8..=15 made the client's zlib
/// throw out of the event loop. A wsx client checks every parameter of the answer: a value
/// out of range, malformed, or above the offer fails the handshake (a client error, no panic);
/// every value in range opens the connection.
#[test]
fn undici_server_max_window_bits_out_of_range_fails_the_handshake() {
    let config = Config::default().deflate(Some(DeflateConfig::default()));
    let answer = |extensions: &str| {
        let now = Instant::now();
        let request = http::Request::builder().uri("ws://localhost/").body(()).expect("a valid request");
        let mut client = Connection::client(&config, &request, OsSeededRng::new(), now).expect("client");
        let mut server = Connection::server(&Config::default(), now).expect("server");
        server.receive(&output(&mut client), now);
        let Some(Event::Request(req)) = server.next_event() else { panic!("no request") };
        let accept = wsx_proto::handshake::accept_key(req.key().as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
        );
        let got = feed(&mut client, response.as_bytes());
        (got, client)
    };
    for bad in
        ["0", "1", "7", "16", "99", "1000", "4294967304", "99999999999999999999", "-1", "08", "8.0", "\"\"", "\"16\""]
    {
        for param in ["server_max_window_bits", "client_max_window_bits"] {
            let extensions = format!("permessage-deflate; {param}={bad}");
            let (got, client) = answer(&extensions);
            assert!(matches!(got.last(), Some(Event::Closed(_))), "{extensions}: {got:?}");
            let error = client.close_reason().and_then(|r| r.error);
            assert!(
                matches!(error, Some(ProtocolError::Handshake(HandshakeError::InvalidResponse(_)))),
                "{extensions}: {error:?}"
            );
        }
    }
    for bits in 8..=15 {
        let (got, client) = answer(&format!("permessage-deflate; server_max_window_bits={bits}"));
        assert!(matches!(got.first(), Some(Event::Opened(_))), "{bits}: {got:?}");
        assert!(client.is_compressed());
    }
}

/// undici CVE-2026-1527: a header value set by the application (the `upgrade` option) was
/// written into the request unchecked, so CRLF in it injected header lines. Everything an
/// application puts in a wsx handshake is an `http` header value or URI, which refuse CR, LF
/// and NUL, or a subprotocol, which must be a token: nothing it sets can end a line.
#[test]
fn undici_cve_2026_1527_application_values_cannot_inject_header_lines() {
    for evil in ["chat\r\nX-Evil: 1", "chat\nX-Evil: 1", "chat\rX", "chat\0"] {
        assert!(http::HeaderValue::from_str(evil).is_err(), "{evil:?}");
        assert!(http::Uri::try_from(format!("ws://localhost/{evil}")).is_err(), "{evil:?}");
    }
    // A client's subprotocols must be tokens: a space, a quote or a separator is refused, and
    // the request is not written.
    for offer in ["chat x", "chat\tx", "\"chat\"", "chat;x", "ch@t"] {
        let request = http::Request::builder()
            .uri("ws://localhost/")
            .header("Sec-WebSocket-Protocol", offer)
            .body(())
            .expect("a valid header value");
        let result = Connection::client(&Config::default(), &request, OsSeededRng::new(), Instant::now());
        assert!(result.is_err(), "{offer:?} offered");
    }
    // A server picks only a subprotocol the client offered (tokens); anything else is refused
    // with nothing written.
    let now = Instant::now();
    let mut server = Connection::server(&Config::default(), now).expect("a valid config");
    server.receive(&request("Sec-WebSocket-Protocol: chat\r\n"), now);
    assert!(matches!(server.next_event(), Some(Event::Request(_))));
    assert_eq!(server.accept(&Accept::new().protocol("chat\r\nX-Evil: 1")), Err(SendError::InvalidState));
    assert!(output(&mut server).is_empty());
    server.accept(&Accept::new().protocol("chat")).expect("accept an offered protocol");
    let response = String::from_utf8(output(&mut server)).expect("ASCII");
    assert_eq!(response.matches("\r\n").count(), 6, "{response}");
}

/// Deno CVE-2023-26103: splitting the `Connection` header with a backtracking regex took
/// quadratic time. wsx finds the `upgrade` token in one pass over the comma-separated list: a
/// 1 MiB header is answered at once.
#[test]
fn deno_cve_2023_26103_connection_header_is_split_in_linear_time() {
    let spaces = " ".repeat(MIB);
    let request = |connection: &str| {
        format!(
            "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: {connection}\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let now = Instant::now();
    for (connection, accepted) in [
        (format!("keep-alive,{spaces}, Upgrade"), true),
        (format!("Upgrade{spaces}x"), false),
        (format!("keep-alive{}Upgrade", ",".repeat(MIB)), true),
    ] {
        let mut server = Connection::server(&huge_heads(), now).expect("a valid config");
        let start = Instant::now();
        let got = feed(&mut server, request(&connection).as_bytes());
        let took = start.elapsed();
        assert!(took < LINEAR_BOUND, "a 1 MiB Connection header took {took:?}");
        assert_eq!(matches!(got.first(), Some(Event::Request(_))), accepted, "{got:?}");
        if !accepted {
            assert_eq!(status(&output(&mut server)), 400);
        }
    }
}
