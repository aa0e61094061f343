//! A client connection (fixed RNG, so a fixed key) fed arbitrary response bytes in chunks,
//! with timeouts and EOF in between (the stepped format of `wsx_fuzz::Stepped`). Bytes after a
//! 101 are server frames, so this also fuzzes the client's frame path and its inflater.
//!
//! Asserts: no panic; `Event::Opened` at most once and before any other event, with a
//! subprotocol only from those offered; `transmit` stays bounded; the run ends with exactly
//! one `Event::Closed` whose failure, if any, has a documented close code.
//!
//! Flags: bit 0 offer permessage-deflate, bit 1 offer subprotocols `chat` and `superchat`,
//! bit 2 small limits (256 header bytes, 8 headers), bit 3 echo messages back, bit 4
//! keep-alive pings, bit 5 close as soon as the connection opens.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wsx_fuzz::{Action, CLIENT_URI, Clock, Events, Stepped, drain, fixed_rng, small_config};
use wsx_proto::{CloseCode, Connection, DeflateConfig, Event, Message};

fuzz_target!(|data: &[u8]| {
    let input = Stepped::parse(data);
    let mut config = small_config();
    if input.flag(0) {
        config = config.deflate(Some(DeflateConfig::default()));
    }
    if input.flag(2) {
        config = config.max_header_bytes(256).max_headers(8);
    }
    if input.flag(4) {
        config = config.ping_interval(Some(Duration::from_secs(5))).pong_timeout(Duration::from_secs(3));
    }
    let mut request = http::Request::get(CLIENT_URI);
    if input.flag(1) {
        request = request.header("Sec-WebSocket-Protocol", "chat, superchat");
    }
    let request = request.body(()).expect("a valid request");
    let mut clock = Clock::new();
    let mut conn = Connection::client(&config, &request, fixed_rng(), clock.now).expect("valid client");
    let upgrade = drain(&mut conn);
    assert!(upgrade.starts_with(b"GET /chat HTTP/1.1\r\n"));
    let mut events = Events::default();
    let mut opened = false;
    let mut seen_any = false;
    for (chunk, action) in input.chunks() {
        conn.receive(chunk, clock.now);
        match action {
            Action::None => {}
            Action::Tick(by) => {
                clock.advance(by);
                conn.handle_timeout(clock.now);
            }
            Action::Eof => conn.receive_eof(clock.now),
        }
        let _ = drain(&mut conn);
        events.drain(&mut conn, |conn, event| {
            match event {
                Event::Opened(response) => {
                    assert!(!seen_any, "Opened after another event");
                    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
                    if let Some(protocol) = conn.protocol() {
                        assert!(input.flag(1) && ["chat", "superchat"].contains(&protocol), "{protocol:?}");
                    }
                    assert!(conn.is_compressed() <= input.flag(0), "deflate not offered");
                    opened = true;
                    if input.flag(5) {
                        conn.close(CloseCode::NORMAL, "bye", clock.now).expect("close an open connection");
                    }
                }
                Event::Message(message) => {
                    assert!(opened, "a message before Opened");
                    if input.flag(3) {
                        match conn.send(message.clone()) {
                            Ok(()) => assert!(conn.is_open()),
                            Err(_) => assert!(!conn.is_open()),
                        }
                    }
                    if let Message::Text(text) = message {
                        assert!(std::str::from_utf8(text.as_bytes()).is_ok());
                    }
                }
                Event::Ping(_) | Event::Pong(_) | Event::Closing(_) => assert!(opened),
                Event::Request(_) => panic!("a client reported a request"),
                _ => {}
            }
            seen_any = true;
        });
        let _ = drain(&mut conn);
    }
    events.finish(&mut conn, &mut clock);
});
