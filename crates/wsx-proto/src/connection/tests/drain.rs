//! `drain_messages` must hand out the same messages, in the same order relative to every other
//! event, and produce the same bytes on the wire as the event path does with `send`, for any
//! split of the input; plus what only it has: borrowed replies, backpressure and a handler's
//! close.

use super::*;
use crate::{DeflateConfig, Drained, MessageRef, Replies};

// These tests feed `conn.receive` directly: `Side::receive` would take the messages as events
// before `drain_messages` could lend them.

/// Everything a client might send, small frames (the borrowed fast path) among frames that take
/// the general path: a ping, a fragmented message, a 64-bit length, a 16-bit one at 4 KiB, text
/// with multi-byte characters, and the close.
fn stream() -> Vec<u8> {
    let mut bytes = REQUEST.to_vec();
    bytes.extend(cframe(true, 1, "héllo wörld".as_bytes()));
    bytes.extend(cframe(true, 2, &[9; 20]));
    bytes.extend(cframe(true, 9, b"p"));
    bytes.extend(cframe(true, 2, &[]));
    bytes.extend(cframe(false, 2, &[1; 300]));
    bytes.extend(cframe(true, 10, b"unsolicited"));
    bytes.extend(cframe(true, 0, &[2; 700]));
    bytes.extend(cframe(true, 2, &[3; 70_000]));
    bytes.extend(cframe(true, 1, "x".repeat(4096).as_bytes()));
    bytes.extend(cframe(true, 2, &[4; 200]));
    bytes.extend(cframe(true, 8, &[0x03, 0xE8, b'o', b'k']));
    bytes
}

/// Feed `input` in chunks of the given sizes; echo every data message. With `borrowed`, take
/// messages through `drain_messages` and echo them through `Replies`; otherwise through
/// `next_event` and `send`. Returns the log of what the application saw, and the frames sent.
fn run(input: &[u8], chunks: &[usize], borrowed: bool, config: Config) -> (Vec<String>, Vec<u8>) {
    let now = Instant::now();
    let mut server = Connection::server(&config, now).unwrap();
    let mut log = Vec::new();
    let mut sent = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        server.receive(&rest[..n], now);
        rest = &rest[n..];
        loop {
            if borrowed {
                let drained = server.drain_messages(|m, replies| {
                    log.push(format!("message {:?}", m.to_message()));
                    replies.send(m).unwrap();
                });
                if drained == Drained::WriteBlocked {
                    sent.extend(drain(&mut server));
                    continue;
                }
            }
            let Some(event) = server.next_event() else { break };
            match event {
                Event::Request(_) => server.accept(&Accept::new()).unwrap(),
                Event::Message(m) => {
                    assert!(!borrowed, "drain_messages left a data message for next_event");
                    log.push(format!("message {m:?}"));
                    server.send(m).unwrap();
                }
                other => log.push(format!("{other:?}")),
            }
        }
        sent.extend(drain(&mut server));
    }
    (log, sent)
}

fn same_as_events(input: &[u8], chunks: &[usize], config: Config) {
    let (want_log, want_sent) = run(input, &[usize::MAX], false, config.clone());
    let (log, sent) = run(input, chunks, true, config);
    assert_eq!(log, want_log);
    assert!(sent == want_sent, "different bytes sent ({} against {})", sent.len(), want_sent.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_split_gives_the_same_messages_events_and_replies(chunks in proptest::collection::vec(1usize..5000, 1..20)) {
        same_as_events(&stream(), &chunks, Config::default());
    }
}

#[test]
fn whole_and_byte_by_byte() {
    same_as_events(&stream(), &[usize::MAX], Config::default());
    same_as_events(&stream(), &[1], Config::default());
}

#[test]
fn a_small_write_high_water_changes_nothing_but_when_it_stops() {
    // Blocked after every reply: the caller writes and calls again each time.
    same_as_events(&stream(), &[usize::MAX], Config::default().write_high_water(1));
    same_as_events(&stream(), &[7, 300], Config::default().write_high_water(1));
}

#[test]
fn messages_before_a_bad_frame_are_answered_before_its_close() {
    for bad in [cframe(true, 1, &[b'a', 0xFF]), cframe(true, 2, &[0; 200]), frame(true, 0, 2, None, b"x")] {
        let mut input = REQUEST.to_vec();
        input.extend(cframe(true, 1, b"one"));
        input.extend(cframe(true, 2, b"two"));
        input.extend(bad);
        input.extend(cframe(true, 1, b"never"));
        let config = Config::default().max_message_size(100);
        same_as_events(&input, &[usize::MAX], config.clone());
        let (log, sent) = run(&input, &[usize::MAX], true, config);
        assert_eq!(log, ["message Text(\"one\")", "message Binary(b\"two\")"]);
        let sent = frames(&sent[RESPONSE_LEN..]);
        assert_eq!(sent.iter().map(|f| f.2).collect::<Vec<_>>(), [OpCode::Text, OpCode::Binary, OpCode::Close]);
    }
}

#[test]
fn replies_are_framed_like_send_for_every_length_form() {
    for len in [0, 125, 126, 4095, 4096, 65535, 65536] {
        let (mut server, now) = open_server(Config::default());
        let payload = vec![b'z'; len];
        server.conn.receive(&cframe(true, 2, &payload), now);
        let mut seen = 0;
        server.drain_messages(|m, replies| {
            seen += 1;
            assert_eq!(m.as_bytes(), &payload[..]);
            replies.send_binary(m.as_bytes()).unwrap();
            replies.send_text("ok").unwrap();
        });
        assert_eq!(seen, 1, "len {len}");
        let sent = frames(&drain(&mut server));
        assert_eq!(sent, vec![(true, 0, OpCode::Binary, payload), (true, 0, OpCode::Text, b"ok".to_vec())]);
    }
}

#[test]
fn a_client_drains_unmasked_frames_and_masks_its_replies() {
    let mut pair = Pair::new(Config::default(), Config::default());
    for text in ["a", "bb", &"c".repeat(300)] {
        pair.server.send(Message::text(text)).unwrap();
    }
    pair.server.send(Message::Binary(Bytes::from(vec![5; 70_000]))).unwrap();
    let out = drain(&mut pair.server);
    pair.client.conn.receive(&out, pair.now);
    let mut got = Vec::new();
    assert_eq!(
        pair.client.drain_messages(|m, r| {
            got.push(m.to_message());
            r.send(m).unwrap();
        }),
        Drained::All
    );
    assert_eq!(got.len(), 4);
    // The server unmasks the echoes (it fails on unmasked frames) and gets them back intact.
    pair.drive();
    let back: Vec<Message> = pair.server_events().iter().map(|e| message(e).clone()).collect();
    assert_eq!(back, got);
    assert!(pair.server.is_open());
}

#[test]
fn compressed_messages_are_lent_and_replies_compressed() {
    let config = Config::default().deflate(Some(DeflateConfig::default()));
    let mut pair = Pair::new(config.clone(), config);
    let big = "{\"symbol\": \"WSX\", \"price\": 101.25} ".repeat(200);
    pair.client.send(Message::text(big.as_str())).unwrap();
    pair.client.send(Message::text("small")).unwrap();
    let out = drain(&mut pair.client);
    pair.server.conn.receive(&out, pair.now);
    let mut got = Vec::new();
    pair.server.drain_messages(|m, r| {
        got.push(m.as_text().unwrap().to_owned());
        r.send(m).unwrap();
    });
    assert_eq!(got, [big.as_str(), "small"]);
    let out = drain(&mut pair.server);
    let sent = frames(&out);
    assert_eq!(sent[0].1, crate::frame::RSV1, "over the threshold: compressed");
    assert!(sent[0].3.len() < big.len() / 4);
    assert_eq!(sent[1].1, 0, "under the threshold: not compressed");
    pair.client.receive(&out, pair.now);
    let back: Vec<Message> = pair.client_events().iter().map(|e| message(e).clone()).collect();
    assert_eq!(back, [Message::text(big), Message::text("small")]);
}

#[test]
fn write_high_water_stops_the_drain_until_the_queue_is_written() {
    let (mut server, now) = open_server(Config::default().write_high_water(100));
    let mut input = Vec::new();
    for i in 0..20u8 {
        input.extend(cframe(true, 2, &[i; 30]));
    }
    server.conn.receive(&input, now);
    let mut seen = Vec::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let drained = server.drain_messages(|m, r| {
            seen.push(m.as_bytes()[0]);
            r.send(m).unwrap();
        });
        assert!(server.buffered_amount() <= 100 + 32, "at most one reply past the mark");
        drain(&mut server);
        if drained == Drained::All {
            break;
        }
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    assert!(rounds >= 5, "stopped at the mark: {rounds} rounds");
}

#[test]
fn a_handler_can_close_and_later_messages_still_arrive() {
    let (mut server, now) = open_server(Config::default());
    let mut input = cframe(true, 1, b"hi");
    input.extend(cframe(true, 1, b"bye"));
    input.extend(cframe(true, 1, b"late"));
    server.conn.receive(&input, now);
    let mut results = Vec::new();
    server.drain_messages(|m, r| {
        let text = m.as_text().unwrap().to_owned();
        results.push((text.clone(), r.send_text(&text)));
        if text == "bye" {
            r.close(CloseCode(4000), "done").unwrap();
            results.push(("after close".into(), r.send_text("x")));
        }
    });
    assert_eq!(
        results,
        [
            ("hi".into(), Ok(())),
            ("bye".into(), Ok(())),
            ("after close".into(), Err(SendError::Closed)),
            ("late".into(), Err(SendError::Closed)),
        ]
    );
    let sent = frames(&drain(&mut server));
    assert_eq!(sent.iter().map(|f| f.2).collect::<Vec<_>>(), [OpCode::Text, OpCode::Text, OpCode::Close]);
    assert_eq!(sent[2].3, [&4000u16.to_be_bytes()[..], b"done"].concat());
    assert_eq!(server.close_reason().unwrap().sent, Some(CloseFrame::new(CloseCode(4000), "done")));
    // The peer's answer completes the handshake as after `close`.
    server.receive(&cframe(true, 8, &4000u16.to_be_bytes()), now);
    assert!(server.wants_shutdown());
}

#[test]
fn replies_refuse_what_send_refuses() {
    let (mut server, now) = open_server(Config::default());
    server.send_frame(Frame::text("part", false)).unwrap();
    server.conn.receive(&cframe(true, 1, b"hi"), now);
    let mut results = Vec::new();
    server.drain_messages(|_, r: &mut Replies<'_>| {
        results.push(r.send_text("x"));
        results.push(r.send_message(Message::Ping(Bytes::from_static(b"p"))));
        results.push(r.send_message(Message::Ping(Bytes::from(vec![0; 126]))));
        results.push(r.close(CloseCode(1005), "reason"));
        results.push(r.close(CloseCode(1006), ""));
    });
    assert_eq!(
        results,
        [
            Err(SendError::InvalidFragment),
            Ok(()),
            Err(SendError::ControlTooLong),
            Err(SendError::InvalidCloseCode(1005)),
            Err(SendError::InvalidCloseCode(1006)),
        ]
    );
}

#[test]
fn message_ref_views() {
    let text = Message::text("héllo");
    let view = MessageRef::from_message(&text).unwrap();
    assert!(view.is_text() && !view.is_binary());
    assert_eq!(view.as_text(), Some("héllo"));
    assert_eq!(view.len(), 6);
    assert_eq!(view.to_string(), "héllo");
    assert_eq!(view, text);
    assert_eq!(view.to_message(), text);
    let binary = Message::binary(vec![1, 2]);
    let view = MessageRef::from_message(&binary).unwrap();
    assert_eq!(view.as_text(), None);
    assert_eq!(format!("{view:?}"), "Binary([1, 2])");
    assert!(view != text);
    assert!(MessageRef::from_message(&Message::Ping(Bytes::new())).is_none());
}

/// `drain_messages_counted` counts every message handed out and every reply queued, on the
/// batch path and on the path of messages the general parser assembled, for any split.
#[test]
fn counted_drain_counts_messages_and_replies() {
    for chunk in [1, 7, 100, 5_000, usize::MAX] {
        let now = Instant::now();
        let mut server = Connection::server(&Config::default(), now).unwrap();
        let mut counts = crate::DrainCounts::default();
        let mut rest = &stream()[..];
        while !rest.is_empty() {
            let n = chunk.min(rest.len());
            server.receive(&rest[..n], now);
            rest = &rest[n..];
            loop {
                // Echo everything; answer a text with a binary too.
                let drained = server.drain_messages_counted(
                    |m, replies| {
                        replies.send(m).unwrap();
                        if m.is_text() {
                            replies.send_binary(b"and").unwrap();
                        }
                    },
                    &mut counts,
                );
                if drained == Drained::WriteBlocked {
                    drain(&mut server);
                    continue;
                }
                match server.next_event() {
                    Some(Event::Request(_)) => server.accept(&Accept::new()).unwrap(),
                    Some(_) => {}
                    None => break,
                }
            }
            drain(&mut server);
        }
        // The stream's data messages: 2 texts, 5 binaries (one of them fragmented).
        assert_eq!(counts, crate::DrainCounts { received: [2, 5], replied: [2, 7] }, "chunks of {chunk}");
    }
}
