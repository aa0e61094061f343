//! A server connection after a valid handshake (permessage-deflate negotiated when flag bit 0
//! is set), fed arbitrary bytes in chunks with `handle_timeout` and `receive_eof` in between
//! (the stepped format of `wsx_fuzz::Stepped`). Outputs and events are drained after every
//! input, as the crate docs say.
//!
//! Asserts: no panic; `transmit` never holds `TRANSMIT_BOUND` bytes or more (max_frame_size +
//! 1 MiB); what the server writes is a valid stream of unmasked frames ending at its close
//! frame; messages stay under `max_message_size` and text is UTF-8; and at the end (timeouts
//! past every deadline, then EOF) the connection is finished with exactly one `Event::Closed`
//! whose failure, if any, has a close code in the documented set (1000-1003, 1006, 1007, 1009,
//! 1011).
//!
//! Flags: bit 0 deflate, bits 1-2 which offer (`DEFLATE_OFFERS`), bit 3 echo messages back,
//! bit 4 keep-alive pings (5 s, pong timeout 3 s), bit 5 idle timeout (20 s), bit 6
//! auto-pong off, bit 7 at most 8 fragments per message.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wsx_fuzz::{
    Action, Clock, DEFLATE_OFFERS, Events, MAX_MESSAGE_SIZE, Stepped, WireCheck, drain, request, small_config,
};
use wsx_proto::{Accept, CloseCode, Connection, DeflateConfig, Event, Message};

fuzz_target!(|data: &[u8]| {
    let input = Stepped::parse(data);
    let deflate = input.flag(0);
    let mut config = small_config();
    let mut extra = String::new();
    if deflate {
        config = config.deflate(Some(DeflateConfig::default()));
        let offer = DEFLATE_OFFERS[usize::from((input.flags >> 1) & 3)];
        extra = format!("Sec-WebSocket-Extensions: {offer}\r\n");
    }
    if input.flag(4) {
        config = config.ping_interval(Some(Duration::from_secs(5))).pong_timeout(Duration::from_secs(3));
    }
    if input.flag(5) {
        config = config.idle_timeout(Some(Duration::from_secs(20)));
    }
    if input.flag(6) {
        config = config.auto_pong(false);
    }
    if input.flag(7) {
        config = config.max_fragments(8);
    }

    let mut clock = Clock::new();
    let mut conn = Connection::server(&config, clock.now).expect("valid config");
    conn.receive(&request(&extra), clock.now);
    let Some(Event::Request(_)) = conn.next_event() else { panic!("valid request refused") };
    conn.accept(&Accept::new()).expect("accept");
    let response = drain(&mut conn);
    assert!(response.starts_with(b"HTTP/1.1 101 "));
    assert_eq!(conn.is_compressed(), deflate, "deflate offer not taken");
    assert!(conn.is_open());

    let mut wire = WireCheck::new(false, deflate);
    let mut events = Events::default();
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
        wire.feed(&drain(&mut conn));
        let _ = conn.wants_shutdown();
        assert!(conn.deadline().is_none() || !conn.is_finished(), "a deadline once finished");
        events.drain(&mut conn, |conn, event| match event {
            Event::Message(message) => {
                let len = match message {
                    Message::Text(text) => {
                        assert!(std::str::from_utf8(text.as_bytes()).is_ok(), "text not UTF-8");
                        text.len()
                    }
                    Message::Binary(data) => data.len(),
                    other => panic!("a control frame as a message: {other:?}"),
                };
                assert!(len <= MAX_MESSAGE_SIZE, "a message of {len} bytes");
                if input.flag(3) {
                    match conn.send(message.clone()) {
                        Ok(()) => {}
                        Err(e) => assert!(!conn.is_open(), "send on an open connection: {e:?}"),
                    }
                }
            }
            Event::Ping(payload) | Event::Pong(payload) => assert!(payload.len() <= 125),
            Event::Closing(frame) => {
                assert!(frame.code == CloseCode::NO_STATUS || frame.code.is_sendable());
                assert!(!conn.can_receive(), "still receiving after the peer's close");
            }
            Event::Closed(_) => {}
            other => panic!("unexpected event {other:?}"),
        });
        wire.feed(&drain(&mut conn));
    }
    wire.feed(&events.finish(&mut conn, &mut clock));
});
