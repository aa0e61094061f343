//! A server with permessage-deflate negotiated, fed messages whose frames this target builds
//! from the input, so that the fuzzer works on the compressed payloads themselves (in the
//! `server_conn` target it must also get lengths, masks and RSV bits right).
//!
//! Input: `[flags, records...]`, each record `[control, length, length bytes]`. Control bit 0:
//! FIN; bit 1: start a new message (else a continuation); bit 2: text (else binary); bit 3:
//! the new message is not compressed (no RSV1); bit 4: feed the frame in two pieces. Flags:
//! bits 0-1 which offer (`DEFLATE_OFFERS`), bits 2-4 the message limit (1 KiB << n), bit 5 at
//! most 8 fragments a message.
//!
//! Asserts: no panic; messages stay within the limit and text is UTF-8; while each frame is
//! taken, the heap the engine holds stays within the limit, the frame limit and the
//! inflater's state (the bound of issue 16, counted by `wsx_testkit::CountingAlloc`); the first
//! compressed message, when delivered, is what an independent inflater (flate2's miniz_oxide)
//! makes of the same bytes; the run ends with exactly one `Event::Closed` whose failure, if
//! any, has a documented close code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsx_fuzz::{Clock, DEFLATE_OFFERS, Events, WireCheck, drain, request};
use wsx_proto::{Accept, Config, Connection, DeflateConfig, Event, Message};
use wsx_testkit::{CountingAlloc, measure};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const MAX_FRAME_SIZE: usize = 64 << 10;
/// The inflater (46 KiB in zlib-rs), the close frame and events, and the read buffer's class.
const SLACK: usize = 128 << 10;
const KEY: [u8; 4] = [0xa1, 0x5b, 0x03, 0xc7];

fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&KEY);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    out
}

/// What an independent inflater makes of a message's compressed bytes, if it takes them and
/// the result fits `limit`.
fn reference_inflate(stream: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut input = stream.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut out = Vec::with_capacity(limit + 1);
    let mut inflate = flate2::Decompress::new(false);
    inflate.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync).ok()?;
    // Room to spare: everything inflatable is out.
    (out.len() <= limit).then_some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut records)) = data.split_first() else { return };
    let limit = 1024usize << ((flags >> 2) & 7);
    let mut config = Config::default()
        .deflate(Some(DeflateConfig::default()))
        .max_message_size(limit)
        .max_frame_size(MAX_FRAME_SIZE);
    if flags & 0x20 != 0 {
        config = config.max_fragments(8);
    }
    let offer = DEFLATE_OFFERS[usize::from(flags & 3)];
    let mut clock = Clock::new();
    let mut conn = Connection::server(&config, clock.now).expect("a valid config");
    conn.receive(&request(&format!("Sec-WebSocket-Extensions: {offer}\r\n")), clock.now);
    let Some(Event::Request(_)) = conn.next_event() else { panic!("the upgrade request was refused") };
    conn.accept(&Accept::new()).expect("accept");
    drain(&mut conn);
    assert!(conn.is_compressed());

    let mut wire = WireCheck::new(false, true);
    let mut events = Events::default();
    // The compressed bytes of the first compressed message, while it is the one being sent.
    let mut first: Option<Vec<u8>> = None;
    let mut first_done = false;
    let mut open_compressed = false;
    for _ in 0..4096 {
        let [control, len, rest @ ..] = records else { break };
        let len = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        records = tail;
        let (fin, start) = (control & 1 != 0, control & 2 != 0);
        let compressed = start && control & 8 == 0;
        let mut b0 = if start { if control & 4 != 0 { 0x01 } else { 0x02 } } else { 0x00 };
        if fin {
            b0 |= 0x80;
        }
        if compressed {
            b0 |= 0x40;
        }
        if start {
            open_compressed = compressed;
            if compressed && !first_done && first.is_none() {
                first = Some(Vec::new());
            }
        }
        if open_compressed && let Some(stream) = first.as_mut() {
            stream.extend_from_slice(payload);
        }
        let bytes = frame(b0, payload);
        let pieces: Vec<&[u8]> =
            if control & 0x10 != 0 { vec![&bytes[..bytes.len() / 2], &bytes[bytes.len() / 2..]] } else { vec![&bytes] };
        for piece in pieces {
            let ((), usage) = measure(|| {
                conn.receive(piece, clock.now);
                events.drain(&mut conn, |_, event| {
                    let Event::Message(message) = event else { return };
                    let bytes: &[u8] = match message {
                        Message::Text(text) => text.as_bytes(),
                        Message::Binary(data) => data,
                        other => panic!("a control frame as a message: {other:?}"),
                    };
                    assert!(bytes.len() <= limit, "a message of {} bytes over the {limit}-byte limit", bytes.len());
                    if !first_done && let Some(stream) = first.take() {
                        first_done = true;
                        if let Some(reference) = reference_inflate(&stream, limit) {
                            assert_eq!(bytes, &reference[..], "inflated differently from the reference");
                        }
                    }
                });
            });
            let bound = limit + MAX_FRAME_SIZE + SLACK;
            assert!(usage.peak <= bound, "held {} bytes, over {bound}", usage.peak);
            wire.feed(&drain(&mut conn));
        }
        if fin {
            // The message ended (delivered, or refused): the first one is decided.
            if first.is_some() && open_compressed {
                first_done = true;
                first = None;
            }
            open_compressed = false;
        }
        if conn.is_finished() || !conn.can_receive() {
            break;
        }
    }
    wire.feed(&events.finish(&mut conn, &mut clock));
});
