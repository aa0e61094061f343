//! Connection tests, grouped by RFC 6455 section. No sockets: a client and a server core
//! talk through byte buffers, or a test plays the peer with hand-made frames.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use self::util::*;
use crate::{
    Accept, ClientError, CloseCode, CloseFrame, Config, Connection, Event, Frame, HandshakeError, Message, OpCode,
    ProtocolError, SendError, frame::Header,
};

mod contract;
mod drain;
mod prepared;
mod upgraded;
mod util;

/// §5.2 Base Framing Protocol.
mod framing {
    use super::*;

    #[test]
    fn reserved_opcode_fails_with_1002() {
        for op in [3, 7, 0xB, 0xF] {
            let (mut server, now) = open_server(Config::default());
            server.receive(&cframe(true, op, b""), now);
            assert_failing(&mut server, CloseCode::PROTOCOL);
        }
    }

    #[test]
    fn rsv_bits_without_extension_fail_with_1002() {
        for rsv in [1, 2, 4, 7] {
            let (mut server, now) = open_server(Config::default());
            server.receive(&frame(true, rsv, 1, Some([0; 4]), b"x"), now);
            assert_failing(&mut server, CloseCode::PROTOCOL);
        }
    }

    #[test]
    fn length_with_top_bit_fails_with_1002() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], now);
        assert_failing(&mut server, CloseCode::PROTOCOL);
    }

    #[test]
    fn all_three_length_forms_arrive_intact() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 100_000] {
            let mut pair = Pair::new(Config::default(), Config::default());
            let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
            pair.client.send(Message::Binary(data.clone())).unwrap();
            pair.server.send(Message::Binary(data.clone())).unwrap();
            pair.drive();
            assert_eq!(message(&pair.server_events()[0]), &Message::Binary(data.clone()));
            assert_eq!(message(&pair.client_events()[0]), &Message::Binary(data));
        }
    }
}

/// §5.3 Client-to-Server Masking.
mod masking {
    use super::*;

    #[test]
    fn server_fails_on_unmasked_frame() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&frame(true, 0, 1, None, b"hi"), now);
        assert_failing(&mut server, CloseCode::PROTOCOL);
    }

    #[test]
    fn server_can_be_told_to_accept_unmasked_frames() {
        let (mut server, now) = open_server(Config::default().accept_unmasked(true));
        server.receive(&frame(true, 0, 1, None, b"hi"), now);
        assert_eq!(message(&events(&mut server)[0]), &Message::text("hi"));
    }

    #[test]
    fn client_fails_on_masked_frame() {
        let mut pair = Pair::new(Config::default(), Config::default());
        pair.client.receive(&frame(true, 0, 2, Some([9, 9, 9, 9]), b"x"), pair.now);
        assert_failing(&mut pair.client, CloseCode::PROTOCOL);
    }

    #[test]
    fn client_masks_every_frame_with_a_fresh_key() {
        let mut pair = Pair::new(Config::default(), Config::default());
        pair.client.send(Message::text("a")).unwrap();
        pair.client.send(Message::text("a")).unwrap();
        pair.client.ping(Bytes::from_static(b"p")).unwrap();
        let out = drain(&mut pair.client);
        let mut keys = Vec::new();
        let mut rest = &out[..];
        while let Some((h, n)) = Header::decode(rest).unwrap() {
            keys.push(h.mask.expect("client frames are masked"));
            rest = &rest[n + h.payload_len as usize..];
        }
        assert_eq!(keys.len(), 3);
        assert!(keys[0] != keys[1] && keys[1] != keys[2]);
    }

    #[test]
    fn server_frames_are_not_masked() {
        let (mut server, _) = open_server(Config::default());
        server.send(Message::text("hi")).unwrap();
        server.send(Message::Binary(vec![7; 5000].into())).unwrap();
        let out = drain(&mut server);
        assert_eq!(&out[..4], &[0x81, 0x02, b'h', b'i']);
        assert_eq!(frames(&out[4..])[0].3, vec![7; 5000]);
    }
}

/// §5.4 Fragmentation.
mod fragmentation {
    use super::*;

    #[test]
    fn fragments_are_assembled_around_control_frames() {
        let (mut server, now) = open_server(Config::default());
        let mut bytes = cframe(false, 1, "κό".as_bytes());
        bytes.extend(cframe(true, 9, b"ping"));
        bytes.extend(cframe(false, 0, &[]));
        bytes.extend(cframe(true, 0, "σμε".as_bytes()));
        server.receive(&bytes, now);
        let ev = events(&mut server);
        assert!(matches!(&ev[0], Event::Ping(p) if &p[..] == b"ping"));
        assert_eq!(message(&ev[1]), &Message::text("κόσμε"));
        assert_sent(&mut server, &[(OpCode::Pong, b"ping")]);
    }

    #[test]
    fn utf8_character_split_across_fragments_is_valid() {
        let (mut server, now) = open_server(Config::default());
        let euro = "€".as_bytes();
        let mut bytes = cframe(false, 1, &euro[..1]);
        bytes.extend(cframe(false, 0, &euro[1..2]));
        bytes.extend(cframe(true, 0, &euro[2..]));
        server.receive(&bytes, now);
        assert_eq!(message(&events(&mut server)[0]), &Message::text("€"));
    }

    #[test]
    fn continuation_without_start_fails_with_1002() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 0, b"x"), now);
        assert_failing(&mut server, CloseCode::PROTOCOL);
    }

    #[test]
    fn new_message_inside_fragmented_one_fails_with_1002() {
        let (mut server, now) = open_server(Config::default());
        let mut bytes = cframe(false, 1, b"a");
        bytes.extend(cframe(true, 2, b"b"));
        server.receive(&bytes, now);
        assert_failing(&mut server, CloseCode::PROTOCOL);
    }

    #[test]
    fn sending_fragments_checks_the_sequence() {
        let mut pair = Pair::new(Config::default(), Config::default());
        assert_eq!(pair.client.send_frame(Frame::continuation("x", true)), Err(SendError::InvalidFragment));
        pair.client.send_frame(Frame::text("he", false)).unwrap();
        assert_eq!(pair.client.send(Message::text("no")), Err(SendError::InvalidFragment));
        pair.client.ping(Bytes::new()).unwrap();
        pair.client.send_frame(Frame::continuation("llo", true)).unwrap();
        pair.drive();
        let ev = pair.server_events();
        assert!(matches!(ev[0], Event::Ping(_)));
        assert_eq!(message(&ev[1]), &Message::text("hello"));
    }
}

/// §5.5 Control Frames.
mod control {
    use super::*;

    #[test]
    fn ping_is_answered_with_the_same_payload() {
        let mut pair = Pair::new(Config::default(), Config::default());
        pair.client.ping(Bytes::from_static(b"abc")).unwrap();
        pair.drive();
        assert!(matches!(&pair.server_events()[0], Event::Ping(p) if &p[..] == b"abc"));
        assert!(matches!(&pair.client_events()[0], Event::Pong(p) if &p[..] == b"abc"));
    }

    #[test]
    fn auto_pong_can_be_switched_off() {
        let (mut server, now) = open_server(Config::default().auto_pong(false));
        server.receive(&cframe(true, 9, b"x"), now);
        assert_sent(&mut server, &[]);
        assert!(matches!(&events(&mut server)[0], Event::Ping(_)));
        server.pong(Bytes::from_static(b"x")).unwrap();
        assert_sent(&mut server, &[(OpCode::Pong, b"x")]);
    }

    #[test]
    fn pings_between_messages_are_answered_in_order() {
        let (mut server, now) = open_server(Config::default());
        let mut bytes = cframe(true, 9, b"1");
        bytes.extend(cframe(true, 1, b"m"));
        bytes.extend(cframe(true, 9, b"2"));
        server.receive(&bytes, now);
        assert_sent(&mut server, &[(OpCode::Pong, b"1"), (OpCode::Pong, b"2")]);
    }

    #[test]
    fn unsolicited_pong_is_accepted() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 0xA, b"hb"), now);
        assert!(matches!(&events(&mut server)[0], Event::Pong(p) if &p[..] == b"hb"));
        assert!(server.is_open());
    }

    #[test]
    fn long_or_fragmented_control_frames_fail_with_1002() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 9, &[0; 126]), now);
        assert_failing(&mut server, CloseCode::PROTOCOL);
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(false, 9, b""), now);
        assert_failing(&mut server, CloseCode::PROTOCOL);
    }

    #[test]
    fn control_payload_over_125_is_refused_locally() {
        let (mut server, _) = open_server(Config::default());
        assert_eq!(server.ping(Bytes::from(vec![0; 126])), Err(SendError::ControlTooLong));
        assert_eq!(server.close(CloseCode::NORMAL, &"x".repeat(124), Instant::now()), Err(SendError::ControlTooLong));
    }
}

/// §8.1 Handling Errors in UTF-8-Encoded Data.
mod utf8 {
    use super::*;

    #[test]
    fn invalid_text_fails_with_1007() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 1, &[0xCE, 0xBA, 0xFF]), now);
        assert_failing(&mut server, CloseCode::INVALID_DATA);
    }

    #[test]
    fn invalid_text_fails_as_soon_as_the_bad_byte_arrives() {
        let (mut server, now) = open_server(Config::default());
        let mut payload = b"hello ".to_vec();
        payload.push(0xF5); // never valid in UTF-8
        payload.extend_from_slice(&[b'a'; 1000]);
        let bytes = cframe(true, 1, &payload);
        // Only the header and the first 7 payload bytes arrive.
        let header_len = 2 + 2 + 4;
        server.receive(&bytes[..header_len + 7], now);
        assert_failing(&mut server, CloseCode::INVALID_DATA);
    }

    #[test]
    fn invalid_text_across_fragments_fails_before_the_end() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(false, 1, &[0xED]), now);
        assert!(server.is_open());
        server.receive(&cframe(false, 0, &[0xA0, 0x80]), now); // a surrogate
        assert_failing(&mut server, CloseCode::INVALID_DATA);
    }

    #[test]
    fn truncated_character_at_message_end_fails_with_1007() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 1, &[b'a', 0xE2, 0x82]), now);
        assert_failing(&mut server, CloseCode::INVALID_DATA);
    }

    #[test]
    fn invalid_close_reason_fails_with_1007() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 8, &[0x03, 0xE8, 0xFF]), now);
        assert_failing(&mut server, CloseCode::INVALID_DATA);
    }

    #[test]
    fn binary_is_not_validated() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 2, &[0xFF, 0xFE]), now);
        assert_eq!(message(&events(&mut server)[0]), &Message::Binary(Bytes::from_static(&[0xFF, 0xFE])));
    }
}

/// §7 Closing the Connection.
mod closing {
    use super::*;

    #[test]
    fn peer_close_is_echoed_and_server_closes_tcp_first() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 8, &[0x0F, 0xA1, b'b', b'y', b'e']), now);
        let ev = events(&mut server);
        assert!(matches!(&ev[0], Event::Closing(f) if f.code == CloseCode(4001) && f.reason == "bye"));
        let sent = frames(&drain(&mut server));
        assert_eq!(sent, vec![(true, 0, OpCode::Close, vec![0x0F, 0xA1, b'b', b'y', b'e'])]);
        assert!(server.wants_shutdown());
        assert!(!server.is_finished());
        server.receive_eof(now);
        let Some(Event::Closed(reason)) = server.next_event() else { panic!() };
        assert!(reason.is_clean(), "{reason:?}");
        assert_eq!(reason.code(), CloseCode(4001));
    }

    #[test]
    fn close_without_status_is_echoed_empty() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 8, &[]), now);
        assert_eq!(frames(&drain(&mut server)), vec![(true, 0, OpCode::Close, vec![])]);
        let Some(Event::Closing(f)) = server.next_event() else { panic!() };
        assert_eq!(f.code, CloseCode::NO_STATUS);
    }

    #[test]
    fn invalid_close_payloads_fail_with_1002() {
        for payload in
            [&[0x03][..], &[0x03, 0xEC], &[0x03, 0xED], &[0x03, 0xEE], &[0x03, 0xF7], &[0x00, 0x00], &[0x13, 0x88]]
        {
            let (mut server, now) = open_server(Config::default());
            server.receive(&cframe(true, 8, payload), now);
            assert_failing(&mut server, CloseCode::PROTOCOL);
        }
    }

    #[test]
    fn client_initiated_close_completes_and_waits_for_server_eof() {
        let mut pair = Pair::new(Config::default(), Config::default());
        pair.client.close(CloseCode::NORMAL, "done", pair.now).unwrap();
        assert_eq!(pair.client.send(Message::text("late")), Err(SendError::Closed));
        pair.drive();
        assert!(matches!(&pair.server_events()[0], Event::Closing(f) if f.reason == "done"));
        assert!(matches!(&pair.client_events()[0], Event::Closing(f) if f.code == CloseCode::NORMAL));
        assert!(pair.server.wants_shutdown(), "server closes TCP first");
        assert!(!pair.client.wants_shutdown(), "client waits for the server");
        pair.client.receive_eof(pair.now);
        let Some(Event::Closed(reason)) = pair.client.next_event() else { panic!() };
        assert!(reason.is_clean());
        assert!(pair.client.wants_shutdown());
    }

    #[test]
    fn messages_still_arrive_after_we_sent_close() {
        let (mut server, now) = open_server(Config::default());
        server.close(CloseCode::AWAY, "", now).unwrap();
        server.receive(&cframe(true, 1, b"in flight"), now);
        assert_eq!(message(&events(&mut server)[0]), &Message::text("in flight"));
    }

    #[test]
    fn close_timeout_gives_up_on_a_silent_peer() {
        let (mut server, now) = open_server(Config::default().close_timeout(Duration::from_secs(3)));
        server.close(CloseCode::NORMAL, "", now).unwrap();
        assert_eq!(server.deadline(), Some(now + Duration::from_secs(3)));
        server.handle_timeout(now + Duration::from_secs(2));
        assert!(!server.is_finished());
        server.handle_timeout(now + Duration::from_secs(3));
        let Some(Event::Closed(reason)) = server.next_event() else { panic!() };
        assert_eq!(reason.error, Some(ProtocolError::CloseTimeout));
        assert_eq!(server.deadline(), None);
    }

    #[test]
    fn close_sent_through_send_arms_the_timer_at_the_next_input() {
        let (mut server, now) = open_server(Config::default().close_timeout(Duration::from_secs(3)));
        server.send(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))).unwrap();
        assert_eq!(server.deadline(), Some(now), "asks to be called at once");
        let later = now + Duration::from_secs(100);
        server.handle_timeout(later);
        assert_eq!(server.deadline(), Some(later + Duration::from_secs(3)));
    }

    #[test]
    fn eof_without_close_is_abnormal() {
        let (mut server, now) = open_server(Config::default());
        server.receive_eof(now);
        let Some(Event::Closed(reason)) = server.next_event() else { panic!() };
        assert_eq!(reason.error, Some(ProtocolError::UnexpectedEof));
        assert_eq!(reason.code(), CloseCode::ABNORMAL);
    }

    #[test]
    fn data_after_close_is_ignored() {
        let (mut server, now) = open_server(Config::default());
        let mut bytes = cframe(true, 8, &[0x03, 0xE8]);
        bytes.extend(cframe(true, 1, b"ignored"));
        server.receive(&bytes, now);
        let ev = events(&mut server);
        assert_eq!(ev.len(), 1, "{ev:?}");
    }

    #[test]
    fn invalid_local_close_codes_are_refused() {
        let (mut server, now) = open_server(Config::default());
        for code in [1004, 1006, 1015, 999, 5000] {
            assert_eq!(server.close(CloseCode(code), "", now), Err(SendError::InvalidCloseCode(code)));
        }
    }
}

/// Limits: checked on the declared length, before any payload is buffered.
mod limits {
    use super::*;

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let (mut server, now) = open_server(Config::default().max_frame_size(1000));
        // Only the header of a 1001-byte frame.
        server.receive(&[0x82, 0xFE, 0x03, 0xE9, 1, 2, 3, 4], now);
        assert_failing(&mut server, CloseCode::TOO_BIG);
    }

    #[test]
    fn huge_declared_length_is_refused_without_allocating() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&[0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4], now);
        assert_failing(&mut server, CloseCode::TOO_BIG);
        assert!(server.work.as_ref().is_none_or(|w| w.incoming.buf.bytes.capacity() < 1 << 16));
    }

    #[test]
    fn message_size_counts_all_fragments() {
        let (mut server, now) = open_server(Config::default().max_message_size(10));
        server.receive(&cframe(false, 2, &[0; 6]), now);
        assert!(server.is_open());
        server.receive(&[0x80, 0x85, 0, 0, 0, 0], now); // header of 5 more bytes: 11 > 10
        assert_failing(&mut server, CloseCode::TOO_BIG);
    }

    #[test]
    fn empty_continuations_count_against_max_fragments() {
        let (mut server, now) = open_server(Config::default().max_fragments(3));
        let mut bytes = cframe(false, 2, b"a");
        bytes.extend(cframe(false, 0, b""));
        bytes.extend(cframe(false, 0, b""));
        server.receive(&bytes, now);
        assert!(server.is_open());
        server.receive(&cframe(false, 0, b""), now);
        assert_failing(&mut server, CloseCode::TOO_BIG);
    }
}

/// §4 Opening Handshake, as the connection drives it.
mod handshake {
    use super::*;

    #[test]
    fn request_fed_byte_by_byte_then_frames_in_the_same_read() {
        let now = Instant::now();
        let mut server = Side::new(Connection::server(&Config::default(), now).unwrap());
        for b in REQUEST {
            assert!(server.next_event().is_none());
            server.receive(&[*b], now);
        }
        server.receive(&cframe(true, 1, b"early"), now);
        let Some(Event::Request(req)) = server.next_event() else { panic!() };
        assert_eq!(req.query(), Some("room=1"));
        assert!(server.next_event().is_none(), "frames wait for accept");
        server.accept(&Accept::new()).unwrap();
        assert_eq!(message(&server.next_event().unwrap()), &Message::text("early"));
    }

    #[test]
    fn bad_version_gets_426() {
        let now = Instant::now();
        let mut server = Side::new(Connection::server(&Config::default(), now).unwrap());
        let req = String::from_utf8(REQUEST.to_vec()).unwrap().replace("Version: 13", "Version: 8");
        server.receive(req.as_bytes(), now);
        let out = String::from_utf8(drain(&mut server)).unwrap();
        assert!(out.starts_with("HTTP/1.1 426"), "{out}");
        assert!(out.contains("Sec-WebSocket-Version: 13") || out.contains("sec-websocket-version: 13"), "{out}");
        assert!(server.wants_shutdown());
    }

    #[test]
    fn garbage_gets_400_not_a_panic() {
        let now = Instant::now();
        let mut server = Side::new(Connection::server(&Config::default(), now).unwrap());
        server.receive(b"\x00\x01\x02 hello\r\n\r\n", now);
        let out = String::from_utf8_lossy(&drain(&mut server)).to_string();
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }

    #[test]
    fn reject_sends_the_applications_response() {
        let now = Instant::now();
        let mut server = Side::new(Connection::server(&Config::default(), now).unwrap());
        server.receive(REQUEST, now);
        let _ = server.next_event();
        let response = http::Response::builder().status(403).body(Bytes::from_static(b"no")).unwrap();
        server.reject(response).unwrap();
        let out = String::from_utf8(drain(&mut server)).unwrap();
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        assert!(out.ends_with("no"));
        assert!(server.wants_shutdown());
    }

    #[test]
    fn client_reports_refusal_with_status_headers_and_body() {
        let now = Instant::now();
        let request = http::Request::get("ws://example.com/").body(()).unwrap();
        let mut client = Side::new(Connection::client(&Config::default(), &request, counter_rng(), now).unwrap());
        let sent = String::from_utf8(drain(&mut client)).unwrap();
        assert!(sent.starts_with("GET / HTTP/1.1\r\n"), "{sent}");
        client.receive(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Why: gone\r\n\r\nnot ", now);
        assert!(!client.is_finished());
        client.receive(b"here", now);
        client.receive(b"!", now);
        let Some(Event::Closed(reason)) = std::iter::from_fn(|| client.next_event()).last() else { panic!() };
        let Some(ProtocolError::Handshake(HandshakeError::Refused { status, headers, body })) = reason.error else {
            panic!("{reason:?}")
        };
        assert_eq!(status, 404);
        assert_eq!(headers["x-why"], "gone");
        assert_eq!(body, b"not here!");
    }

    #[test]
    fn handshake_timeout() {
        let now = Instant::now();
        let mut server =
            Side::new(Connection::server(&Config::default().handshake_timeout(Duration::from_secs(5)), now).unwrap());
        server.receive(&REQUEST[..20], now);
        assert_eq!(server.deadline(), Some(now + Duration::from_secs(5)));
        server.handle_timeout(now + Duration::from_secs(5));
        let Some(Event::Closed(reason)) = server.next_event() else { panic!() };
        assert!(reason.error.unwrap().is_timeout());
    }
}

/// Keep-alive and idle timers.
mod timers {
    use super::*;

    #[test]
    fn keepalive_ping_and_pong_timeout() {
        let config =
            Config::default().ping_interval(Some(Duration::from_secs(10))).pong_timeout(Duration::from_secs(5));
        let (mut server, now) = open_server(config);
        assert_eq!(server.deadline(), Some(now + Duration::from_secs(10)));
        server.handle_timeout(now + Duration::from_secs(10));
        let sent = frames(&drain(&mut server));
        assert_eq!(sent[0].2, OpCode::Ping);
        server.handle_timeout(now + Duration::from_secs(15));
        assert_failing(&mut server, CloseCode::INTERNAL);
        assert!(server.close_reason().unwrap().error.unwrap().is_timeout());
    }

    #[test]
    fn answered_keepalive_keeps_the_connection() {
        let config =
            Config::default().ping_interval(Some(Duration::from_secs(10))).pong_timeout(Duration::from_secs(5));
        let mut pair = Pair::new(config.clone(), config);
        let start = pair.now;
        // Five rounds of pings each way, answered as the events are taken.
        pair.advance_by(Duration::from_secs(55));
        assert_eq!(pair.now, start + Duration::from_secs(55));
        assert!(pair.server.is_open() && pair.client.is_open());
        let pings = pair.server_events().iter().filter(|e| matches!(e, Event::Ping(_))).count();
        assert_eq!(pings, 5, "the client pinged every 10 s");
    }

    #[test]
    fn an_unanswered_keepalive_fails_at_the_pong_timeout() {
        let config =
            Config::default().ping_interval(Some(Duration::from_secs(10))).pong_timeout(Duration::from_secs(5));
        let mut pair = Pair::new(config, Config::default().auto_pong(false));
        let start = pair.now;
        assert_eq!(pair.advance(), Some(start + Duration::from_secs(10)));
        assert_eq!(pair.advance(), Some(start + Duration::from_secs(15)));
        let reason = pair.client.close_reason().unwrap();
        assert_eq!(reason.error, Some(ProtocolError::PongTimeout));
        assert!(pair.client.wants_shutdown());
    }

    #[test]
    fn the_keepalive_round_trip_is_timed_once_per_answer() {
        let config =
            Config::default().ping_interval(Some(Duration::from_secs(10))).pong_timeout(Duration::from_secs(5));
        let (mut server, now) = open_server(config);
        assert_eq!(server.take_ping_rtt(), None);
        server.handle_timeout(now + Duration::from_secs(10));
        let ping = frames(&drain(&mut server)).remove(0);
        assert_eq!(ping.2, OpCode::Ping);
        // A pong that answers something else is not timed.
        server.receive(&cframe(true, 0xA, b"other"), now + Duration::from_millis(10_100));
        server.settle();
        assert_eq!(server.take_ping_rtt(), None);
        server.receive(&cframe(true, 0xA, &ping.3), now + Duration::from_millis(10_250));
        server.settle();
        assert_eq!(server.take_ping_rtt(), Some(Duration::from_millis(250)));
        assert_eq!(server.take_ping_rtt(), None, "taken once");
        // The same pong again is not a second round trip.
        server.receive(&cframe(true, 0xA, &ping.3), now + Duration::from_millis(10_400));
        server.settle();
        assert_eq!(server.take_ping_rtt(), None);
    }

    #[test]
    fn no_round_trip_without_a_ping_interval() {
        let (mut server, now) = open_server(Config::default());
        server.receive(&cframe(true, 0xA, &1u32.to_be_bytes()), now);
        server.settle();
        assert_eq!(server.take_ping_rtt(), None);
    }

    #[test]
    fn idle_timeout_closes_with_1001() {
        let (mut server, now) = open_server(Config::default().idle_timeout(Some(Duration::from_secs(30))));
        server.receive(&cframe(true, 1, b"x"), now + Duration::from_secs(20));
        server.handle_timeout(now + Duration::from_secs(30));
        assert!(server.is_open(), "activity moved the deadline");
        server.handle_timeout(now + Duration::from_secs(50));
        assert_failing(&mut server, CloseCode::AWAY);
    }
}

/// The send deadline: a peer that stops taking what is sent.
mod send_timeout {
    use bytes::Buf;

    use super::*;

    const HIGH_WATER: usize = 1024;

    /// An open server with a 1 KiB high-water mark, a 30 s send deadline, and 8 KiB queued.
    fn blocked_server() -> (Side, Instant) {
        let config = Config::default().write_high_water(HIGH_WATER).send_timeout(Some(Duration::from_secs(30)));
        let (mut server, now) = open_server(config);
        server.send(Message::Binary(Bytes::from(vec![7; 8 << 10]))).unwrap();
        assert!(server.is_write_blocked());
        (server, now)
    }

    #[test]
    fn a_peer_that_never_reads_is_failed_with_1008_and_its_queue_freed() {
        let (mut server, now) = blocked_server();
        // `send` brought no `now`: the connection asks to be called at once to start the clock.
        assert_eq!(server.deadline(), Some(now));
        server.handle_timeout(now);
        assert_eq!(server.deadline(), Some(now + Duration::from_secs(30)));
        server.handle_timeout(now + Duration::from_secs(29));
        assert!(server.is_open());
        server.handle_timeout(now + Duration::from_secs(30));
        assert!(server.is_finished() && server.wants_shutdown());
        assert_eq!(server.buffered_amount(), 0, "the write queue is dropped, nothing is sent");
        let reason = server.close_reason().unwrap();
        assert_eq!(reason.error, Some(ProtocolError::SendTimeout));
        assert_eq!(reason.code(), CloseCode::POLICY);
        assert!(reason.error.unwrap().is_timeout());
        let events = events(&mut server);
        assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
        assert_eq!(server.deadline(), None);
    }

    #[test]
    fn a_slow_reader_that_keeps_taking_is_not_failed() {
        let (mut server, start) = blocked_server();
        server.handle_timeout(start);
        // The peer takes the high-water mark's worth every 25 s, and the application keeps the
        // queue over the mark: ten deadlines pass without a failure.
        for i in 1..=10u64 {
            let now = start + Duration::from_secs(25 * i);
            server.transmit().advance(HIGH_WATER);
            server.send(Message::Binary(Bytes::from(vec![7; HIGH_WATER]))).unwrap();
            server.handle_timeout(now);
            assert!(server.is_open(), "round {i}");
            let deadline = server.deadline().unwrap();
            assert!(deadline > now, "round {i}: the clock started again");
        }
    }

    #[test]
    fn a_reader_that_takes_a_trickle_is_failed() {
        let (mut server, start) = blocked_server();
        server.handle_timeout(start);
        // 10 bytes every 10 s: progress, but never the bytes that were over the mark.
        for i in 1..=3u64 {
            server.transmit().advance(10);
            server.handle_timeout(start + Duration::from_secs(10 * i));
        }
        assert_eq!(server.close_reason().unwrap().error, Some(ProtocolError::SendTimeout));
    }

    #[test]
    fn draining_under_the_mark_stops_the_clock() {
        let (mut server, start) = blocked_server();
        server.handle_timeout(start);
        let rest = server.buffered_amount() - HIGH_WATER;
        server.transmit().advance(rest);
        assert_eq!(server.deadline(), None, "at the mark: no send deadline");
        server.handle_timeout(start + Duration::from_secs(3600));
        assert!(server.is_open());
    }

    #[test]
    fn off_waits_forever() {
        let config = Config::default().write_high_water(HIGH_WATER).send_timeout(None);
        let (mut server, now) = open_server(config);
        server.send(Message::Binary(Bytes::from(vec![7; 8 << 10]))).unwrap();
        assert_eq!(server.deadline(), None);
        server.handle_timeout(now + Duration::from_secs(3600));
        assert!(server.is_open());
    }
}

/// Any split of the same bytes gives the same events.
mod chunking {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut bytes = REQUEST.to_vec();
        bytes.extend(cframe(true, 1, "héllo wörld".as_bytes()));
        bytes.extend(cframe(false, 2, &[1; 300]));
        bytes.extend(cframe(true, 9, b"p"));
        bytes.extend(cframe(true, 0, &[2; 70_000]));
        bytes.extend(cframe(false, 1, "€".as_bytes()));
        bytes.extend(cframe(true, 0, "€".as_bytes()));
        bytes.extend(cframe(true, 8, &[0x03, 0xE8, b'o', b'k']));
        bytes
    }

    fn run(chunks: &[usize]) -> Vec<String> {
        let now = Instant::now();
        // Driven as the crate documentation says, by hand.
        let mut server = Connection::server(&Config::default(), now).unwrap();
        let bytes = stream();
        let mut rest = &bytes[..];
        let mut log = Vec::new();
        let mut chunk_sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*chunk_sizes.next().unwrap()).clamp(1, rest.len());
            server.receive(&rest[..n], now);
            rest = &rest[n..];
            while let Some(ev) = server.next_event() {
                if let Event::Request(_) = ev {
                    server.accept(&Accept::new()).unwrap();
                    log.push("request".to_string());
                } else {
                    log.push(format!("{ev:?}"));
                }
            }
        }
        log.push(format!("{:?}", frames(&drain(&mut server)[RESPONSE_LEN..])));
        log
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_split_gives_the_same_events(chunks in proptest::collection::vec(1usize..5000, 1..20)) {
            let whole = run(&[usize::MAX]);
            prop_assert_eq!(run(&chunks), whole);
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        assert_eq!(run(&[1]), run(&[usize::MAX]));
    }
}

/// RFC 7692 permessage-deflate, as the connection drives it.
mod deflate {
    use super::*;
    use crate::DeflateConfig;

    fn deflate_pair(limit: usize) -> Pair {
        let config = Config::default().deflate(Some(DeflateConfig::default())).max_frame_size(limit);
        let pair = Pair::new(config.clone(), config);
        assert!(pair.client.is_compressed() && pair.server.is_compressed());
        pair
    }

    fn pseudo_random(len: usize, seed: u64) -> Bytes {
        Bytes::from(wsx_testkit::Rng::new(seed).bytes(len))
    }

    #[test]
    fn messages_are_compressed_with_rsv1_on_the_first_frame_only() {
        let mut pair = deflate_pair(1 << 20);
        let text = "{\"price\": 101.25, \"symbol\": \"WSX\"} ".repeat(100);
        pair.client.send_frame(Frame::text(text.clone(), false)).unwrap();
        pair.client.send_frame(Frame::continuation(text.clone(), true)).unwrap();
        let sent = frames(&drain(&mut pair.client));
        assert_eq!(sent.iter().map(|f| f.1).collect::<Vec<_>>(), vec![crate::frame::RSV1, 0]);
        assert!(sent.iter().map(|f| f.3.len()).sum::<usize>() < text.len() / 4, "compressed");
        pair.server.receive(&sent.iter().flat_map(cframe_rsv).collect::<Vec<_>>(), pair.now);
        assert_eq!(message(&pair.server_events()[0]), &Message::text(text.repeat(2)));
    }

    /// Re-encode a decoded frame as a client would (masked), keeping RSV bits.
    fn cframe_rsv(f: &(bool, u8, OpCode, Vec<u8>)) -> Vec<u8> {
        frame(f.0, f.1, f.2.bits(), Some([5, 6, 7, 8]), &f.3)
    }

    #[test]
    fn incompressible_messages_go_out_uncompressed_and_context_stays_in_sync() {
        let mut pair = deflate_pair(1 << 20);
        let noise = pseudo_random(50_000, 7);
        let json = Bytes::from("{\"a\": [1, 2, 3], \"b\": \"hello hello hello\"} ".repeat(200));
        for data in [json.clone(), noise.clone(), json.clone(), noise, json] {
            pair.server.send(Message::Binary(data.clone())).unwrap();
            let out = drain(&mut pair.server);
            let sent = frames(&out);
            assert_eq!(sent[0].1 != 0, sent[0].3.len() < data.len(), "RSV1 only when it saved bytes");
            pair.client.receive(&out, pair.now);
            assert_eq!(message(&pair.client_events()[0]), &Message::Binary(data));
        }
    }

    #[test]
    fn compressed_bytes_are_counted_each_way_and_taken_once() {
        let mut pair = deflate_pair(1 << 20);
        let json = Bytes::from("{\"a\": [1, 2, 3], \"b\": \"hello hello hello\"} ".repeat(200));
        let noise = pseudo_random(5_000, 3);
        pair.server.send(Message::Binary(json.clone())).unwrap();
        pair.server.send(Message::Binary(noise.clone())).unwrap();
        pair.server.send(Message::text("small, under the threshold")).unwrap();
        let out = drain(&mut pair.server);
        let sent = frames(&out);
        let stats = pair.server.take_deflate_stats().unwrap();
        assert_eq!(stats.sent_uncompressed, (json.len() + noise.len()) as u64, "the small one is not compressed");
        assert_eq!(stats.sent_compressed, (sent[0].3.len() + noise.len()) as u64, "noise went out as it was");
        assert!(sent[0].3.len() < json.len() / 4);
        assert_eq!((stats.received_compressed, stats.received_decompressed), (0, 0));
        assert_eq!(pair.server.take_deflate_stats(), None, "taken once");

        pair.client.receive(&out, pair.now);
        assert_eq!(pair.client_events().len(), 3);
        let stats = pair.client.take_deflate_stats().unwrap();
        assert_eq!(stats.received_compressed, sent[0].3.len() as u64);
        assert_eq!(stats.received_decompressed, json.len() as u64);
        assert_eq!((stats.sent_uncompressed, stats.sent_compressed), (0, 0));
    }

    #[test]
    fn no_deflate_stats_without_deflate() {
        let (mut server, _) = open_server(Config::default());
        assert_eq!(server.take_deflate_stats(), None);
    }

    #[test]
    fn compression_can_be_chosen_per_message() {
        let mut pair = deflate_pair(1 << 20);
        let big = "abc".repeat(1000); // over the 1 KiB threshold
        let small = "xyz".repeat(40); // under it, but compressible
        pair.client.send_compressed(Message::text(big.as_str()), false).unwrap();
        pair.client.send_compressed(Message::text(small.as_str()), true).unwrap();
        pair.client.send(Message::text(big.as_str())).unwrap();
        let out = drain(&mut pair.client);
        let rsv: Vec<u8> = frames(&out).iter().map(|f| f.1).collect();
        assert_eq!(rsv, vec![0, crate::frame::RSV1, crate::frame::RSV1]);
        pair.server.receive(&out, pair.now);
        let got: Vec<Event> = pair.server_events();
        assert_eq!(message(&got[0]), &Message::text(big.as_str()));
        assert_eq!(message(&got[1]), &Message::text(small));
        assert_eq!(message(&got[2]), &Message::text(big));
    }

    #[test]
    fn compressed_frames_get_slack_over_the_frame_limit() {
        // A peer that compresses incompressible data sends a frame a little over the limit.
        let mut pair = deflate_pair(1000);
        let noise = pseudo_random(1000, 3);
        let mut compressor = crate::deflate::Deflate::new(
            crate::deflate::Params {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            },
            crate::Role::Client,
            &DeflateConfig::default(),
        );
        let mut out = bytes::BytesMut::new();
        compressor.compress(&noise, true, &mut out);
        assert!(out.len() > 1000 && out.len() <= 1000 + 1000 / 16, "{}", out.len());
        pair.server.receive(&frame(true, crate::frame::RSV1, 2, Some([1, 2, 3, 4]), &out), pair.now);
        assert_eq!(message(&pair.server_events()[0]), &Message::Binary(noise));
        // Uncompressed frames get no slack.
        pair.server.receive(&cframe(true, 2, &[0; 1001]), pair.now);
        assert_failing(&mut pair.server, CloseCode::TOO_BIG);
    }

    #[test]
    fn compression_bomb_stops_at_the_message_limit_with_1009() {
        let config = Config::default().deflate(Some(DeflateConfig::default())).max_message_size(1 << 20);
        let mut pair = Pair::new(config.clone(), config);
        // 64 MiB of zeros deflates to about 64 KiB.
        let mut compressor = flate2::Compress::new(flate2::Compression::best(), false);
        let zeros = vec![0u8; 1 << 20];
        let mut out = Vec::with_capacity(1 << 20);
        for _ in 0..64 {
            compressor.compress_vec(&zeros, &mut out, flate2::FlushCompress::None).unwrap();
        }
        compressor.compress_vec(&[], &mut out, flate2::FlushCompress::Sync).unwrap();
        assert!(out.len() < 200_000, "{}", out.len());
        pair.server.receive(&frame(true, crate::frame::RSV1, 2, Some([1, 2, 3, 4]), &out), pair.now);
        assert_failing(&mut pair.server, CloseCode::TOO_BIG);
        assert!(
            !pair.server.work.as_ref().is_some_and(|w| w.incoming.is_mid_message()),
            "the partial message is dropped"
        );
    }
}

/// Whole frames are read in one go, frames that arrive in pieces as they arrive: the same
/// messages and the same failures either way, in every length form.
mod pieces {
    use super::*;

    /// Feed `input` whole, then byte by byte to a second server, and return both servers.
    fn both_ways(config: Config, input: &[u8]) -> [Side; 2] {
        let (mut whole, now) = open_server(config.clone());
        whole.receive(input, now);
        let (mut pieces, now) = open_server(config);
        for b in input {
            pieces.receive(std::slice::from_ref(b), now);
        }
        [whole, pieces]
    }

    #[test]
    fn whole_and_split_frames_give_the_same_messages() {
        for len in [0, 1, 125, 126, 200, 4095, 4096, 65535, 65536] {
            for opcode in [1u8, 2] {
                let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let mut input = cframe(true, opcode, &payload);
                input.extend(cframe(true, opcode, b"next"));
                for mut conn in both_ways(Config::default(), &input) {
                    let got: Vec<Vec<u8>> = events(&mut conn)
                        .iter()
                        .map(|e| match message(e) {
                            Message::Text(t) if opcode == 1 => t.as_bytes().to_vec(),
                            Message::Binary(b) if opcode == 2 => b.to_vec(),
                            other => panic!("len {len}: unexpected {other:?}"),
                        })
                        .collect();
                    assert_eq!(got, vec![payload.clone(), b"next".to_vec()], "len {len} opcode {opcode}");
                }
            }
        }
    }

    #[test]
    fn invalid_text_fails_with_1007_in_every_length_form() {
        for len in [3, 125, 200, 70_000] {
            let mut payload = vec![b'x'; len];
            payload[len / 2] = 0xFF;
            for mut conn in both_ways(Config::default(), &cframe(true, 1, &payload)) {
                assert!(events(&mut conn).iter().all(|e| !matches!(e, Event::Message(_))), "len {len}");
                assert_failing(&mut conn, CloseCode::INVALID_DATA);
            }
        }
    }

    #[test]
    fn limits_apply_whole_or_in_pieces() {
        let config = Config::default().max_message_size(100);
        for mut conn in both_ways(config, &cframe(true, 2, &[0; 120])) {
            assert!(events(&mut conn).iter().all(|e| !matches!(e, Event::Message(_))));
            assert_failing(&mut conn, CloseCode::TOO_BIG);
        }
    }

    #[test]
    fn fragments_arrive_the_same_whole_or_in_pieces() {
        let mut input = cframe(false, 1, "h€".as_bytes());
        input.extend(cframe(false, 0, b""));
        input.extend(cframe(true, 0, b"y"));
        for mut conn in both_ways(Config::default(), &input) {
            let evs = events(&mut conn);
            assert!(matches!(message(&evs[0]), Message::Text(t) if t.as_str() == "h€y"));
        }
    }
}

mod read_sizing {
    use super::*;

    fn spare(conn: &mut Side) -> usize {
        let buf = conn.read_buffer();
        buf.capacity() - buf.len()
    }

    #[test]
    fn reads_that_fill_the_buffer_grow_and_short_ones_shrink() {
        let (mut server, now) = open_server(Config::default().read_buffer_size(8 << 10));
        server.release_buffers();
        let first = spare(&mut server);
        assert!(first >= 8 << 10, "{first}");
        // Fill exactly what was offered with whole small frames (a pipelining peer), then the
        // start of another.
        let frame = cframe(true, 2, &[7; 94]); // 100 bytes on the wire
        let mut input = Vec::new();
        while input.len() + frame.len() <= first {
            input.extend_from_slice(&frame);
        }
        input.extend_from_slice(&frame[..first - input.len()]);
        server.read_buffer().extend_from_slice(&input);
        server.receive_buffered(now);
        while server.next_event().is_some() {}
        let second = spare(&mut server);
        assert!(second >= 2 * first - 100, "after a full read: {second}, before {first}");
        // Short reads bring it back down, never below `read_buffer_size`.
        for _ in 0..8 {
            let _ = spare(&mut server);
            server.read_buffer().extend_from_slice(&cframe(true, 2, b"x"));
            server.receive_buffered(now);
            while server.next_event().is_some() {}
            server.release_buffers();
        }
        // (The buffer itself may be a larger one from the cache; the size asked for shrank.)
        assert_eq!(server.sizing.burst(), 8 << 10, "after short reads");
    }
}
