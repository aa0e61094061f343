//! The drive contract of the crate documentation, tested as a driver would follow it: after
//! each read, take events (with `drain_messages` or without) until there are none, write out
//! `transmit`, then block. Whatever the input and however it is split, by the time the driver
//! would block every ping that has arrived is answered and every close frame echoed (or the
//! failure's close sent): nothing the connection owes the peer waits for the peer's next bytes.

use super::*;
use crate::Drained;

/// One frame a client sends.
#[derive(Debug, Clone)]
enum Piece {
    /// A text or binary message, in this many fragments.
    Data {
        text: bool,
        len: usize,
        fragments: usize,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16),
    /// A frame that breaks the protocol: a reserved opcode.
    Bad,
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => (any::<bool>(), 0usize..3000, 1usize..4).prop_map(|(text, len, fragments)| Piece::Data { text, len, fragments }),
        2 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Piece::Ping),
        1 => proptest::collection::vec(any::<u8>(), 0..10).prop_map(Piece::Pong),
        1 => (1000u16..1004).prop_map(Piece::Close),
        1 => Just(Piece::Bad),
    ]
}

/// What a piece owes the peer once it has arrived whole, if anything.
#[derive(Debug, Clone, PartialEq)]
enum Owed {
    Pong(Vec<u8>),
    Close(u16),
}

/// The client's bytes, and for each frame the offset from which it owes something, and what. Nothing is owed after a close or a bad frame (the connection stops reading).
fn encode(pieces: &[Piece]) -> (Vec<u8>, Vec<(usize, Option<Owed>)>) {
    let mut bytes = REQUEST.to_vec();
    let mut marks = Vec::new();
    for piece in pieces {
        let owed = match piece {
            Piece::Data { text, len, fragments } => {
                let payload: Vec<u8> = (0..*len).map(|i| b'a' + (i % 26) as u8).collect();
                let chunk = len.div_ceil(*fragments).max(1);
                let parts: Vec<&[u8]> = if payload.is_empty() { vec![&[]] } else { payload.chunks(chunk).collect() };
                for (i, part) in parts.iter().enumerate() {
                    let opcode = if i > 0 {
                        0
                    } else if *text {
                        1
                    } else {
                        2
                    };
                    bytes.extend(cframe(i + 1 == parts.len(), opcode, part));
                }
                None
            }
            Piece::Ping(p) => {
                bytes.extend(cframe(true, 9, p));
                Some(Owed::Pong(p.clone()))
            }
            Piece::Pong(p) => {
                bytes.extend(cframe(true, 10, p));
                None
            }
            Piece::Close(code) => {
                bytes.extend(cframe(true, 8, &code.to_be_bytes()));
                Some(Owed::Close(*code))
            }
            Piece::Bad => {
                // Refused from the first two bytes of its header.
                marks.push((bytes.len() + 2, Some(Owed::Close(CloseCode::PROTOCOL.0))));
                bytes.extend(cframe(true, 3, b"x"));
                break;
            }
        };
        let stop = matches!(owed, Some(Owed::Close(_)));
        marks.push((bytes.len(), owed));
        if stop {
            break;
        }
    }
    (bytes, marks)
}

/// Drive a server exactly as the crate documentation says, feeding `input` in `chunks`, and
/// check at every point where the driver would block that everything owed is written.
fn drive_as_documented(
    input: &[u8],
    marks: &[(usize, Option<Owed>)],
    chunks: &[usize],
    borrowed: bool,
    config: Config,
) {
    let now = Instant::now();
    let mut conn = Connection::server(&config, now).unwrap();
    let mut written = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < input.len() {
        let n = (*sizes.next().unwrap()).clamp(1, input.len() - fed);
        // 1. Input.
        conn.receive(&input[fed..fed + n], now);
        fed += n;
        // 2. Take events until there are none (draining first, if the application lends).
        loop {
            if borrowed
                && conn.drain_messages(|m, replies| {
                    let _ = replies.send(m);
                }) == Drained::WriteBlocked
            {
                written.extend(drain(&mut conn));
                continue;
            }
            match conn.next_event() {
                Some(Event::Request(_)) => conn.accept(&Accept::new()).unwrap(),
                Some(Event::Message(m)) => {
                    let _ = conn.send(m);
                }
                Some(_) => {}
                None => break,
            }
        }
        // 3. Transmit, all of it.
        written.extend(drain(&mut conn));
        // 4. The driver would block in `read` now: nothing owed may be left unwritten.
        let want: Vec<Owed> = marks.iter().filter(|(end, _)| *end <= fed).filter_map(|(_, o)| o.clone()).collect();
        let got: Vec<Owed> = frames(written.get(RESPONSE_LEN..).unwrap_or_default())
            .into_iter()
            .filter_map(|(_, _, op, p)| match op {
                OpCode::Pong => Some(Owed::Pong(p)),
                OpCode::Close => Some(Owed::Close(u16::from_be_bytes([p[0], p[1]]))),
                _ => None,
            })
            .collect();
        assert_eq!(got, want, "after {fed} of {} bytes", input.len());
        if conn.is_finished() || conn.wants_shutdown() {
            break;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn every_pong_and_close_is_written_before_the_driver_blocks(
        pieces in proptest::collection::vec(piece(), 1..24),
        chunks in proptest::collection::vec(1usize..3000, 1..12),
        borrowed in any::<bool>(),
        high_water in prop_oneof![Just(1usize), Just(1 << 20)],
    ) {
        let (input, marks) = encode(&pieces);
        drive_as_documented(&input, &marks, &chunks, borrowed, Config::default().write_high_water(high_water));
    }
}

#[test]
fn a_ping_behind_messages_in_one_read_is_answered_in_the_same_turn() {
    let pieces = [
        Piece::Data { text: true, len: 10, fragments: 1 },
        Piece::Data { text: false, len: 5000, fragments: 3 },
        Piece::Ping(b"are you there".to_vec()),
        Piece::Data { text: true, len: 3, fragments: 1 },
        Piece::Ping(vec![]),
        Piece::Close(1000),
    ];
    let (input, marks) = encode(&pieces);
    for borrowed in [false, true] {
        drive_as_documented(&input, &marks, &[usize::MAX], borrowed, Config::default());
        drive_as_documented(&input, &marks, &[1], borrowed, Config::default());
    }
}
