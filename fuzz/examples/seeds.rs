//! Write seed corpora for every target into `fuzz/corpus/<target>/seed-*`.
//!
//! `cargo run --example seeds` from `fuzz/` (stable is fine). Seeds are valid inputs made with
//! the real engine where possible: a client's masked (and compressed) frames for
//! `server_conn`, a server's 101 and frames for `client_response`.

use std::{fs, path::Path};

use bytes::Bytes;
use wsx_fuzz::{CLIENT_URI, Clock, DEFLATE_OFFERS, Pair, Step, Stepped, drain, fixed_rng, request, small_config};
use wsx_proto::{
    Accept, CloseCode, Connection, DeflateConfig, Event, Frame, Message, OpCode,
    frame::{Header, MAX_HEADER_LEN},
};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(format!("seed-{name}")), data).expect("write a seed");
}

fn header(fin: bool, rsv: u8, opcode: OpCode, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = [0; MAX_HEADER_LEN];
    let n = Header { fin, rsv, opcode, mask, payload_len: len }.encode(&mut out);
    out[..n].to_vec()
}

fn frame_header() {
    let t = "frame_header";
    write(t, "rfc-hello", &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    write(t, "rfc-masked", &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f]);
    write(t, "rfc-256", &[0x82, 0x7E, 0x01, 0x00]);
    write(t, "rfc-64k", &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    write(t, "masked-64k", &header(true, 0, OpCode::Binary, Some([1, 2, 3, 4]), 1 << 16));
    write(t, "ping", &header(true, 0, OpCode::Ping, Some([9, 9, 9, 9]), 125));
    write(t, "close-rsv", &header(true, 0b111, OpCode::Close, None, 2));
    write(t, "nonminimal", &[0x82, 0x7E, 0x00, 0x05]);
    write(t, "top-bit", &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    write(t, "reserved-op", &[0x83, 0x00]);
}

fn handshake_request() {
    let t = "handshake_request";
    let whole = [Step::WHOLE];
    write(t, "plain", &Stepped::encode(0, &[], &request("")));
    write(
        t,
        "deflate",
        &Stepped::encode(1, &[], &request(&format!("Sec-WebSocket-Extensions: {}\r\n", DEFLATE_OFFERS[3]))),
    );
    write(
        t,
        "protocols",
        &Stepped::encode(8, &[], &request("Sec-WebSocket-Protocol: chat, superchat\r\nOrigin: http://example.com\r\n")),
    );
    write(t, "reject", &Stepped::encode(4, &[], &request("")));
    write(t, "split", &Stepped::encode(0, &[0x00, 0x07, 0x1F, 0x25], &request("")));
    write(t, "split-tick", &Stepped::encode(0, &[0x43, 0x8F, 0x3F], &request("")));
    write(t, "eof", &Stepped::encode(0, &[0x28, 0xC0], &request("")));
    let mut with_frame = request("");
    with_frame.extend_from_slice(&header(true, 0, OpCode::Text, Some([0; 4]), 2));
    with_frame.extend_from_slice(b"hi");
    write(t, "with-frame", &Stepped::encode(0, &whole, &with_frame));
    write(t, "small-limits", &Stepped::encode(2, &[], &request(&format!("X-Padding: {}\r\n", "a".repeat(200)))));
    write(
        t,
        "post",
        &Stepped::encode(
            0,
            &[],
            &request("").splitn(2, |&b| b == b' ').nth(1).map(|r| [b"POST ".as_slice(), r].concat()).unwrap(),
        ),
    );
    let v12 = String::from_utf8(request("")).unwrap().replace("Version: 13", "Version: 12");
    write(t, "version-12", &Stepped::encode(0, &[], v12.as_bytes()));
    let no_key = String::from_utf8(request("")).unwrap().replace("Sec-WebSocket-Key", "Sec-WebSocket-Kez");
    write(t, "no-key", &Stepped::encode(0, &[], no_key.as_bytes()));
    write(t, "chunked-body", &Stepped::encode(0, &[], &request("Transfer-Encoding: chunked\r\n")));
    // Plain HTTP (flag bit 4), as `wsx serve` gets for its demo page and static files.
    write(t, "plain-get", &Stepped::encode(0x10, &[], b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"));
    write(t, "plain-head", &Stepped::encode(0x10, &[0x05, 0x3F], b"HEAD /a%2e%2e/b HTTP/1.1\r\nHost: h\r\n\r\n"));
    write(t, "plain-http10", &Stepped::encode(0x10, &[], b"GET / HTTP/1.0\r\n\r\n"));
    write(t, "plain-post", &Stepped::encode(0x10, &[], b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"));
    write(t, "plain-upgrade", &Stepped::encode(0x10, &[], &request("")));
}

/// Frames a client would send: messages, a fragmented text with a ping inside, a close.
fn client_frames(client: &mut Connection) -> Vec<u8> {
    client.send(Message::Text("Hello".into())).unwrap();
    client.send(Message::Binary(Bytes::from(vec![7; 3000]))).unwrap();
    client.send(Message::Text("compress me ".repeat(200).into())).unwrap();
    client.send_frame(Frame::text("frag", false)).unwrap();
    client.ping(Bytes::from_static(b"p")).unwrap();
    client.send_frame(Frame::continuation("men", false)).unwrap();
    client.send_frame(Frame::continuation("ted ü", true)).unwrap();
    client.pong(Bytes::from_static(b"unsolicited")).unwrap();
    client.close(CloseCode::NORMAL, "bye", Clock::new().now).unwrap();
    drain(client)
}

fn server_conn() {
    let t = "server_conn";
    // No deflate: a client with default config talking to a default server.
    let mut pair = Pair::new(&small_config(), &small_config());
    let plain = client_frames(&mut pair.client);
    // Deflate with context takeover both ways (offer 0).
    let deflate = small_config().deflate(Some(DeflateConfig::default()));
    let mut pair = Pair::new(&deflate, &deflate);
    let compressed = client_frames(&mut pair.client);
    for (flags, steps, name, data) in [
        (0u8, &[][..], "plain", &plain),
        (0x08, &[], "plain-echo", &plain),
        (0x01, &[], "deflate", &compressed),
        (0x09, &[], "deflate-echo", &compressed),
        (0x0B, &[0x03, 0x25, 0x3F], "deflate-offer1-split", &compressed),
        (0x30, &[0x45, 0x85, 0x3F], "keepalive-idle-ticks", &plain),
        (0x40, &[0x07, 0x3F], "no-autopong", &plain),
        (0x80, &[0x01], "max-fragments", &plain),
    ] {
        write(t, name, &Stepped::encode(flags, steps, data));
    }
    // Faults, one per seed.
    let masked =
        |op, payload: &[u8]| [header(true, 0, op, Some([0; 4]), payload.len() as u64), payload.to_vec()].concat();
    write(t, "unmasked", &Stepped::encode(0, &[], &[0x81, 0x02, b'h', b'i']));
    write(t, "bad-utf8", &Stepped::encode(0, &[], &masked(OpCode::Text, &[0xC3, 0x28])));
    write(t, "bad-close", &Stepped::encode(0, &[], &masked(OpCode::Close, &[0x03, 0xED])));
    write(t, "huge-len", &Stepped::encode(0, &[], &header(true, 0, OpCode::Binary, Some([0; 4]), 1 << 40)));
    write(
        t,
        "rsv1-bad-deflate",
        &Stepped::encode(1, &[], &[header(true, 0b100, OpCode::Binary, Some([0; 4]), 4), vec![0xFF; 4]].concat()),
    );
}

fn server_frames(server: &mut Connection, deflate: bool) -> Vec<u8> {
    server.send(Message::Text("Hello".into())).unwrap();
    server.send(Message::Binary(Bytes::from(vec![7; 3000]))).unwrap();
    if deflate {
        server.send(Message::Text("compress me ".repeat(200).into())).unwrap();
    }
    server.send_frame(Frame::binary(vec![1, 2, 3], false)).unwrap();
    server.ping(Bytes::from_static(b"p")).unwrap();
    server.send_frame(Frame::continuation(vec![4, 5], true)).unwrap();
    server.close(CloseCode::AWAY, "going", Clock::new().now).unwrap();
    drain(server)
}

fn client_response() {
    let t = "client_response";
    for (flags, name) in [
        (0u8, "plain"),
        (1, "deflate"),
        (2, "protocols"),
        (3, "deflate-protocols"),
        (0x08, "echo"),
        (0x20, "close-on-open"),
    ] {
        let mut config = small_config();
        if flags & 1 != 0 {
            config = config.deflate(Some(DeflateConfig::default()));
        }
        let mut request = http::Request::get(CLIENT_URI);
        if flags & 2 != 0 {
            request = request.header("Sec-WebSocket-Protocol", "chat, superchat");
        }
        let now = Clock::new().now;
        let mut client = Connection::client(&config, &request.body(()).unwrap(), fixed_rng(), now).unwrap();
        let server_config = small_config().deflate(Some(DeflateConfig::default()));
        let mut server = Connection::server(&server_config, now).unwrap();
        server.receive(&drain(&mut client), now);
        let Some(Event::Request(req)) = server.next_event() else { panic!("no request") };
        let mut accept = Accept::new();
        if let Some(p) = req.protocols().first() {
            accept = accept.protocol(p.clone());
        }
        server.accept(&accept).unwrap();
        let mut bytes = drain(&mut server);
        bytes.extend(server_frames(&mut server, flags & 1 != 0));
        write(t, name, &Stepped::encode(flags, &[], &bytes));
        if flags == 0 {
            write(t, "split", &Stepped::encode(0, &[0x05, 0x20, 0x3F], &bytes));
            let mut bad = bytes.clone();
            let at = bad.windows(6).position(|w| w == b"Accept").unwrap() + 8;
            bad[at] ^= 1;
            write(t, "bad-accept", &Stepped::encode(0, &[], &bad));
        }
    }
    write(t, "404", &Stepped::encode(0, &[], b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!"));
    write(t, "404-no-length", &Stepped::encode(0, &[0x0F, 0xC0], b"HTTP/1.1 404 Not Found\r\n\r\nbody until EOF"));
    write(
        t,
        "small-limits",
        &Stepped::encode(
            4,
            &[],
            format!("HTTP/1.1 101 Switching Protocols\r\nX: {}\r\n\r\n", "a".repeat(300)).as_bytes(),
        ),
    );
}

fn ops() {
    // Any bytes are an `ops` input; a few lengths of a fixed pseudo-random stream.
    let mut x: u32 = 0x9E37_79B9;
    for len in [16, 64, 256, 1024] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        write("ops", &format!("random-{len}"), &data);
    }
}

fn deflate_negotiate() {
    let t = "deflate_negotiate";
    // Config flags: 0xFC is the default (15-bit windows both ways, context takeover).
    let answers = [
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=16",
    ];
    for (i, offer) in DEFLATE_OFFERS.iter().enumerate() {
        for (j, answer) in answers.iter().enumerate() {
            let flags = [(0xFC, 0xFC), (0x00, 0xFC), (0xFC, 0x00), (0x03, 0x6D)][(i + j) % 4];
            let data = [&[flags.0, flags.1][..], offer.as_bytes(), &[0xFF], answer.as_bytes()].concat();
            write(t, &format!("offer{i}-answer{j}"), &data);
        }
    }
    write(t, "two-lines", b"\xFC\xFCx-foo; a=1\npermessage-deflate; client_max_window_bits=8\xFFpermessage-deflate\n");
    write(t, "quoted", b"\xFC\x24permessage-deflate; client_max_window_bits=\"10\"\xFF");
}

/// A raw deflate stream of `data` as permessage-deflate sends it (sync flush, trailer cut).
fn deflated(data: &[u8]) -> Vec<u8> {
    let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    compress.compress_vec(data, &mut out, flate2::FlushCompress::Sync).expect("deflate");
    assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// `inflate` records for one message: `control` bits 2-3 (text, uncompressed), split into
/// frames of at most `piece` bytes.
fn records(payload: &[u8], control: u8, piece: usize) -> Vec<u8> {
    let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[]] } else { payload.chunks(piece).collect() };
    let mut out = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let fin = u8::from(i + 1 == pieces.len());
        let start = if i == 0 { 2 | control } else { 0 };
        out.extend_from_slice(&[fin | start, p.len() as u8]);
        out.extend_from_slice(p);
    }
    out
}

fn inflate() {
    let t = "inflate";
    let json = br#"{"id":1,"name":"wsx","tags":["a","b","c"],"text":"hello hello hello hello"}"#.repeat(8);
    let hello = deflated(b"Hello");
    write(t, "hello", &[&[0x00][..], &records(&hello, 0, 255)].concat());
    write(t, "hello-text", &[&[0x01][..], &records(&hello, 4, 255)].concat());
    write(t, "json-fragments", &[&[0x02][..], &records(&deflated(&json), 0, 40)].concat());
    write(t, "json-split-frames", &[&[0x03][..], &records(&deflated(&json), 0x10, 255)].concat());
    write(t, "uncompressed", &[&[0x00][..], &records(b"plain", 8, 255)].concat());
    write(t, "empty", &[&[0x00][..], &records(&[], 0, 255)].concat());
    let two = [records(&deflated(b"one"), 0, 255), records(&deflated(b"two"), 4, 255)].concat();
    write(t, "two-messages", &[&[0x00][..], &two].concat());
    // 64 KiB of zeros against a 1 KiB limit: refused with 1009.
    write(t, "bomb", &[&[0x00][..], &records(&deflated(&vec![0; 64 << 10]), 0, 255)].concat());
    write(t, "many-fragments", &[&[0x20][..], &records(&deflated(&json), 0, 16)].concat());
}

fn main() {
    frame_header();
    handshake_request();
    server_conn();
    client_response();
    ops();
    deflate_negotiate();
    inflate();
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
