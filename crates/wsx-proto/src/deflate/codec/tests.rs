//! RFC 7692 §7.2.3 vectors, round trips, window checks against an independent decoder, limits
//! and bad input.

use bytes::BytesMut;
use proptest::prelude::*;
use wsx_testkit::{Rng, measure};

use super::{Deflate, InflateError, TRAILER};
use crate::Role;
use crate::deflate::{DeflateConfig, Params};

fn params(server_nct: bool, client_nct: bool, server_bits: u8, client_bits: u8) -> Params {
    Params {
        server_no_context_takeover: server_nct,
        client_no_context_takeover: client_nct,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    }
}

/// A client and a server that agreed on `params`.
fn pair(params: Params, config: &DeflateConfig) -> (Deflate, Deflate) {
    (Deflate::new(params, Role::Client, config), Deflate::new(params, Role::Server, config))
}

fn compress(deflate: &mut Deflate, message: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    deflate.compress(message, true, &mut out);
    out.to_vec()
}

fn decompress(deflate: &mut Deflate, payload: &[u8]) -> Result<Vec<u8>, InflateError> {
    let mut out = BytesMut::new();
    deflate.decompress(payload, true, &mut out, usize::MAX)?;
    Ok(out.to_vec())
}

/// Text-like data: words from a small vocabulary, so it compresses as JSON or prose does.
fn text(len: usize, seed: u32) -> Vec<u8> {
    const WORDS: &[&str] = &["{\"id\":", "\"name\":", "\"value\"", ", ", "true", "null", "[1,2,3]", "}\n", "wsx"];
    let mut rng = Rng::new(seed.into());
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let x = rng.next_u32();
        out.extend_from_slice(WORDS[x as usize % WORDS.len()].as_bytes());
        if x.is_multiple_of(7) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

// RFC 7692 §7.2.3: the examples, byte for byte.

#[test]
fn rfc_7_2_3_1_one_message() {
    let (mut client, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    assert_eq!(decompress(&mut client, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(), b"Hello");
    // The same message in two frames.
    let mut out = BytesMut::new();
    server.decompress(&[0xf2, 0x48, 0xcd], false, &mut out, usize::MAX).unwrap();
    server.decompress(&[0xc9, 0xc9, 0x07, 0x00], true, &mut out, usize::MAX).unwrap();
    assert_eq!(&out[..], b"Hello");
    // zlib-rs produces the RFC's bytes at any level but 0.
    for level in 1..=9 {
        let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default().level(level));
        assert_eq!(compress(&mut client, b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], "level {level}");
    }
}

#[test]
fn rfc_7_2_3_2_shared_window() {
    let first = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let second = [0xf2, 0x00, 0x11, 0x00, 0x00];
    let (mut client, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    assert_eq!(decompress(&mut server, &first).unwrap(), b"Hello");
    assert_eq!(decompress(&mut server, &second).unwrap(), b"Hello");
    // Our compressor takes context over the same way.
    // (zlib-rs codes the second message differently, but as a match into the first too.)
    assert_eq!(compress(&mut client, b"Hello"), first);
    let again = compress(&mut client, b"Hello");
    assert!(again.len() < first.len(), "{again:x?}");
    let mut reference = Reference::default();
    reference.message(&first).unwrap();
    assert_eq!(reference.message(&again).unwrap(), (b"Hello".to_vec(), 5));
    // Without context takeover, the second message is compressed on its own again.
    let (mut client, mut server) = pair(params(true, true, 15, 15), &DeflateConfig::default());
    assert_eq!(compress(&mut client, b"Hello"), first);
    assert_eq!(compress(&mut client, b"Hello"), first);
    assert_eq!(decompress(&mut server, &first).unwrap(), b"Hello");
    assert_eq!(decompress(&mut server, &first).unwrap(), b"Hello");
}

#[test]
fn rfc_7_2_3_3_stored_block() {
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let payload = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
    assert_eq!(decompress(&mut client, &payload).unwrap(), b"Hello");
    // Level 0 stores too.
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default().level(0));
    assert_eq!(compress(&mut client, b"Hello"), payload);
}

#[test]
fn rfc_7_2_3_4_bfinal() {
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let payload = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert_eq!(decompress(&mut client, &payload).unwrap(), b"Hello");
    // The ended stream is reset for the next message, in one frame or several.
    assert_eq!(decompress(&mut client, &payload).unwrap(), b"Hello");
    let mut out = BytesMut::new();
    client.decompress(&payload[..3], false, &mut out, usize::MAX).unwrap();
    client.decompress(&payload[3..], false, &mut out, usize::MAX).unwrap();
    client.decompress(&[], true, &mut out, usize::MAX).unwrap();
    assert_eq!(&out[..], b"Hello");
    assert_eq!(decompress(&mut client, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(), b"Hello");
}

#[test]
fn rfc_7_2_3_5_two_blocks() {
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let payload = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(decompress(&mut client, &payload).unwrap(), b"Hello");
}

#[test]
fn empty_messages() {
    let (mut client, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    // An empty message compresses to one byte: an empty stored block's header (§7.2.3.6).
    assert_eq!(compress(&mut client, b""), [0x00]);
    assert_eq!(decompress(&mut server, &[0x00]).unwrap(), b"");
    // A compressed message with no payload at all is taken as empty, and leaves the stream
    // ready for the next message.
    assert_eq!(decompress(&mut server, &[]).unwrap(), b"");
    let mut out = BytesMut::new();
    server.decompress(&[], false, &mut out, usize::MAX).unwrap();
    server.decompress(&[], true, &mut out, usize::MAX).unwrap();
    assert!(out.is_empty());
    let hello = compress(&mut client, b"Hello");
    assert_eq!(decompress(&mut server, &hello).unwrap(), b"Hello");
}

#[test]
fn threshold() {
    let config = DeflateConfig::default().threshold(100);
    let (client, _) = pair(params(false, false, 15, 15), &config);
    assert!(!client.should_compress(0));
    assert!(!client.should_compress(99));
    assert!(client.should_compress(100));
    let (client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default().threshold(0));
    assert!(client.should_compress(0));
}

/// Send `messages` from `from` to `to` in `pieces`-byte fragments (0: one frame), check what
/// arrives, and (unfragmented) check each payload with the reference decoder against the
/// agreed window.
/// `from`'s compressor must not have been used before.
fn exchange(from: &mut Deflate, to: &mut Deflate, messages: &[Vec<u8>], pieces: usize, window_bits: u8, reset: bool) {
    let mut reference = Reference::default();
    let mut payload = BytesMut::new();
    let mut received = BytesMut::new();
    for message in messages {
        payload.clear();
        received.clear();
        let chunks: Vec<&[u8]> =
            if pieces == 0 || message.is_empty() { vec![&message[..]] } else { message.chunks(pieces).collect() };
        for (i, chunk) in chunks.iter().enumerate() {
            let fin = i + 1 == chunks.len();
            let start = payload.len();
            from.compress(chunk, fin, &mut payload);
            // Each frame is inflated as it arrives.
            to.decompress(&payload[start..], fin, &mut received, usize::MAX).unwrap();
        }
        assert_eq!(&received[..], &message[..]);
        if pieces != 0 {
            // Fragmenting changes nothing the reference checks; spare the slow decoder.
            continue;
        }
        if reset {
            reference.history.clear();
        }
        let (decoded, max_distance) = reference.message(&payload).unwrap();
        assert_eq!(decoded, *message);
        assert!(max_distance <= 1 << window_bits, "distance {max_distance} past a {window_bits}-bit window");
    }
}

#[test]
fn round_trips() {
    let sizes = [0, 1, 1000, 100_000];
    let messages: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &len)| text(len, i as u32)).collect();
    for bits in [8, 9, 12, 15] {
        for reset in [false, true] {
            // Level 0 (stored blocks) is covered by the proptest and the §7.2.3.3 vector.
            for level in [1, 6] {
                let config = DeflateConfig::default().level(level);
                for pieces in [0, 333] {
                    let (mut client, mut server) = pair(params(reset, reset, bits, bits), &config);
                    exchange(&mut client, &mut server, &messages, pieces, bits, reset);
                    exchange(&mut server, &mut client, &messages, pieces, bits, reset);
                }
            }
        }
    }
}

/// The window the peer agreed to is the one we use, whatever the level; 8 runs as 9 and
/// still stays within 256-byte distances.
#[test]
fn distances_stay_in_the_agreed_window() {
    // Repeats at every distance from 1 to 40,000 bytes.
    let mut data = Vec::new();
    for i in 0..200u32 {
        data.extend_from_slice(&text(37 + (i as usize * 197) % 40_000, i % 11));
    }
    let data = data[..100_000].to_vec();
    for bits in 8..=15 {
        // Every level for the two windows that run as 9 bits; the main strategies otherwise.
        let levels = if bits <= 9 { &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9][..] } else { &[1, 4, 9][..] };
        for &level in levels {
            let config = DeflateConfig::default().level(level);
            let (mut client, mut server) = pair(params(false, false, 15, bits), &config);
            exchange(&mut client, &mut server, std::slice::from_ref(&data), 0, bits, false);
        }
    }
    // The compressor really uses the window it may: long repeats do reach past 16 KiB.
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default().level(9));
    let payload = compress(&mut client, &data);
    let (_, max_distance) = Reference::default().message(&payload).unwrap();
    assert!(max_distance > 1 << 14, "{max_distance}");
}

#[test]
fn fragments_decode_as_one_message() {
    let message = text(50_000, 7);
    let (mut client, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let mut payload = BytesMut::new();
    let cuts = [0, 1, 2, 100, 4096, 4097, 30_000, 50_000];
    for (i, window) in cuts.windows(2).enumerate() {
        client.compress(&message[window[0]..window[1]], i + 2 == cuts.len(), &mut payload);
    }
    assert_eq!(decompress(&mut server, &payload).unwrap(), message);
    // Empty pieces, and an empty last piece.
    let mut payload = BytesMut::new();
    for piece in [&message[..10], &[], &message[10..], &[]] {
        client.compress(piece, false, &mut payload);
    }
    client.compress(&[], true, &mut payload);
    assert_eq!(decompress(&mut server, &payload).unwrap(), message);
}

#[test]
fn buffers_are_reused() {
    let message = text(20_000, 3);
    let (mut client, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let mut payload = BytesMut::new();
    let mut received = BytesMut::with_capacity(message.len());
    let mut capacities = None;
    for _ in 0..5 {
        payload.clear();
        received.clear();
        client.compress(&message, true, &mut payload);
        server.decompress(&payload, true, &mut received, usize::MAX).unwrap();
        assert_eq!(&received[..], &message[..]);
        let now = (payload.capacity(), received.capacity());
        assert_eq!(*capacities.get_or_insert(now), now);
    }
}

/// A deflate stream of `len` zeros, built by hand: a fixed-Huffman block of one literal and
/// length-258 matches at distance 1, then a sync flush's empty stored block without its
/// trailer. Some 13 bits per 258 bytes, so a 50 MB bomb is 300 KB.
fn zero_bomb(len: usize) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(0, 1); // BFINAL
    w.bits(1, 2); // BTYPE 01: fixed Huffman
    w.code(0x30, 8); // literal 0
    let mut left = len - 1;
    while left >= 258 {
        w.code(0xc5, 8); // length symbol 285: 258
        w.code(0, 5); // distance symbol 0: 1
        left -= 258;
    }
    for _ in 0..left {
        w.code(0x30, 8);
    }
    w.code(0, 7); // end of block
    w.bits(0, 3); // empty stored block header; the rest of it is the trailer
    w.finish()
}

#[test]
fn zero_bomb_is_stopped_at_the_limit() {
    let limit = 1 << 20;
    let bomb = zero_bomb(50_000_000);
    assert!(bomb.len() < 400_000);
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let mut out = BytesMut::new();
    assert!(matches!(client.decompress(&bomb, true, &mut out, limit), Err(InflateError::TooBig)));
    assert_eq!(out.len(), limit);
    assert!(out.capacity() <= limit, "{}", out.capacity());
    // Frame by frame, and after a first frame already in `out`.
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let mut out = BytesMut::new();
    let mut result = Ok(());
    for frame in bomb.chunks(1000) {
        result = client.decompress(frame, false, &mut out, limit);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(InflateError::TooBig)));
    assert!(out.capacity() <= limit, "{}", out.capacity());
}

/// Issue 16: the output grows to the limit without ever being copied into a second buffer.
/// Below a limit that is not a power of two, the last step used to copy it, holding the old
/// buffer and the new one at once (1.5 times the limit here, up to twice in general).
#[test]
fn a_bomb_holds_no_more_than_the_limit() {
    let bomb = zero_bomb(20_000_000);
    for limit in [1 << 20, 1_000_000, 1_500_000, 3_000_000] {
        for frame_len in [bomb.len(), 100_000, 1000] {
            let (mut client, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
            // The inflater's state comes with the first message: not what is measured here.
            assert_eq!(decompress(&mut server, &compress(&mut client, b"first")).unwrap(), b"first");
            let mut out = BytesMut::new();
            let (result, usage) = measure(|| {
                for frame in bomb.chunks(frame_len) {
                    server.decompress(frame, false, &mut out, limit)?;
                }
                Ok(())
            });
            assert!(matches!(result, Err(InflateError::TooBig)), "{limit}, {frame_len}-byte frames: {result:?}");
            assert!(out.capacity() <= limit, "{limit}, {frame_len}-byte frames: capacity {}", out.capacity());
            // The buffer, and the 24-byte header `Bytes` allocates while handing it back.
            assert!(usage.peak <= limit + 64, "{limit}, {frame_len}-byte frames: peak {} bytes", usage.peak);
        }
    }
}

#[test]
fn compressed_zeros_are_stopped_at_the_limit() {
    let zeros = vec![0; 10_000_000];
    let (mut client, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default().level(9));
    let payload = compress(&mut client, &zeros);
    let mut out = BytesMut::new();
    let limit = 100_000;
    assert!(matches!(server.decompress(&payload, true, &mut out, limit), Err(InflateError::TooBig)));
    assert!(out.capacity() <= limit, "{}", out.capacity());
}

#[test]
fn limit_is_inclusive() {
    let message = text(10_000, 5);
    let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let payload = compress(&mut client, &message);
    for (limit, ok) in [(10_000, true), (9_999, false), (0, false), (usize::MAX, true)] {
        let (_, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
        let mut out = BytesMut::new();
        let result = server.decompress(&payload, true, &mut out, limit);
        assert_eq!(result.is_ok(), ok, "limit {limit}: {result:?}");
        assert!(out.len() <= limit);
    }
    // An empty message fits a zero limit.
    let (_, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    assert!(server.decompress(&[0x00], true, &mut BytesMut::new(), 0).is_ok());
    // What `out` already holds counts.
    let (_, mut server) = pair(params(false, false, 15, 15), &DeflateConfig::default());
    let mut out = BytesMut::from(&b"12345"[..]);
    let result = server.decompress(&payload, true, &mut out, 10_004);
    assert!(matches!(result, Err(InflateError::TooBig)));
}

/// Heap bytes are counted per thread ([`measure`]), so `cargo test`'s other threads do not
/// disturb what a test measures.
#[global_allocator]
static ALLOCATOR: wsx_testkit::CountingAlloc = wsx_testkit::CountingAlloc;

/// Bytes the compressor and the decompressor allocate on first use, for `config` and an agreed
/// window of `bits` in both directions.
fn state_bytes(config: &DeflateConfig, bits: u8) -> (isize, isize) {
    let (mut client, mut server) = pair(params(false, false, bits, bits), config);
    // Output buffers big enough that the codec never grows them.
    let (mut payload, mut message) = (BytesMut::with_capacity(1024), BytesMut::with_capacity(8192));
    let ((), compressor) = measure(|| client.compress(b"Hello", true, &mut payload));
    let (result, decompressor) = measure(|| server.decompress(&payload, true, &mut message, usize::MAX));
    result.unwrap();
    assert_eq!(&message[..], b"Hello");
    (compressor.retained, decompressor.retained)
}

/// The memory figures in `DeflateConfig`'s docs, measured: the compressor takes the 128 KiB
/// hash table, four bytes per window byte (the window twice over, and its hash chains), seven
/// per entry of the `2^(mem_level + 6)`-symbol block buffers, and about 3 KiB of state; the
/// decompressor 46 KiB whatever the settings. Run with `--nocapture` for the table.
#[test]
fn state_memory() {
    let kib = |bytes: isize| bytes as f64 / 1024.0;
    for bits in [15, 12, 9, 8] {
        for mem_level in 1..=9 {
            let (compressor, decompressor) = state_bytes(&DeflateConfig::default().mem_level(mem_level), bits);
            println!(
                "window bits {bits:2}, mem_level {mem_level}: compressor {:5.1} KiB, decompressor {:4.1} KiB",
                kib(compressor),
                kib(decompressor),
            );
            // An agreed 8 runs as 9.
            let window = 1 << bits.max(9);
            let tables = (128 << 10) + 4 * window + 7 * (1 << (mem_level + 6));
            assert!((tables..tables + (4 << 10)).contains(&compressor), "{bits} {mem_level}: {compressor}");
            assert!(((46 << 10)..(47 << 10)).contains(&decompressor), "{decompressor}");
        }
    }
    // The defaults, as `DeflateConfig`'s docs give them (in whole KiB).
    let (compressor, decompressor) = state_bytes(&DeflateConfig::default(), 15);
    assert_eq!(((compressor + 512) >> 10, (decompressor + 512) >> 10), (273, 46));
    let (compressor, _) = state_bytes(&DeflateConfig::default(), 8);
    assert_eq!((compressor + 512) >> 10, 147);
}

#[test]
fn garbage_is_invalid() {
    let table: &[&[u8]] = &[
        // BTYPE 11 is reserved.
        &[0xff; 16],
        // A stored block whose NLEN is not the complement of LEN.
        &[0x00, 0x05, 0x00, 0x00, 0x00],
        // Fixed Huffman, first symbol a match at distance 1 with nothing before it.
        &[0x02, 0x03],
    ];
    for payload in table {
        let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
        match decompress(&mut client, payload) {
            Err(InflateError::Invalid(why)) => assert!(!why.is_empty()),
            other => panic!("{payload:x?}: {other:?}"),
        }
    }
}

#[test]
fn garbage_in_any_frame_never_panics() {
    let mut rng = Rng::new(0x9e37_79b9);
    for _ in 0..300 {
        let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
        let mut out = BytesMut::new();
        for frame in 0..4 {
            let len = rng.below(200) as usize;
            let payload = rng.bytes(len);
            if client.decompress(&payload, frame == 3, &mut out, 1 << 16).is_err() {
                break;
            }
            assert!(out.len() <= 1 << 16);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_messages_round_trip(
        messages in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..3000),
                (0usize..20_000, any::<u32>()).prop_map(|(len, seed)| text(len, seed)),
            ],
            1..6,
        ),
        pieces in prop_oneof![Just(0usize), 1usize..5000],
        reset in any::<bool>(),
        bits in 8u8..=15,
        level in 0u32..=9,
    ) {
        let config = DeflateConfig::default().level(level);
        let (mut client, mut server) = pair(params(reset, reset, bits, bits), &config);
        exchange(&mut client, &mut server, &messages, pieces, bits, reset);
        exchange(&mut server, &mut client, &messages, pieces, bits, reset);
    }

    #[test]
    fn any_input_is_bounded(payload in proptest::collection::vec(any::<u8>(), 0..2000), limit in 0usize..5000) {
        let (mut client, _) = pair(params(false, false, 15, 15), &DeflateConfig::default());
        let mut out = BytesMut::new();
        let _ = client.decompress(&payload, true, &mut out, limit);
        prop_assert!(out.len() <= limit);
        // `Vec` never allocates fewer than 8 bytes.
        prop_assert!(out.capacity() <= limit.max(8));
    }
}

/// Writes a deflate bit stream: header fields LSB first, Huffman codes MSB first (RFC 1951
/// §3.1.1).
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    len: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u32, count: u32) {
        self.acc |= value << self.len;
        self.len += count;
        while self.len >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.len -= 8;
        }
    }

    fn code(&mut self, code: u32, count: u32) {
        let reversed = code.reverse_bits() >> (32 - count);
        self.bits(reversed, count);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.len > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// An independent, slow deflate decoder (RFC 1951) that reports the largest match distance
/// it met: the check that our compressor keeps to the agreed window.
#[derive(Default)]
struct Reference {
    /// Everything decoded so far on this stream (the peer's window is its tail).
    history: Vec<u8>,
}

impl Reference {
    /// Decode one message's payload (the trailer is appended here) and return its bytes and
    /// the largest distance used.
    fn message(&mut self, payload: &[u8]) -> Result<(Vec<u8>, usize), &'static str> {
        let data = [payload, &TRAILER[..]].concat();
        let start = self.history.len();
        let mut input = BitReader { data: &data, pos: 0 };
        let mut max_distance = 0;
        // A message ends at a block boundary, on a byte boundary, with all input used.
        while input.pos < data.len() * 8 {
            let last = input.bits(1)?;
            match input.bits(2)? {
                0 => {
                    input.pos = input.pos.div_ceil(8) * 8;
                    let len = input.bits(16)?;
                    if input.bits(16)? != !len & 0xffff {
                        return Err("bad stored length");
                    }
                    for _ in 0..len {
                        self.history.push(input.bits(8)? as u8);
                    }
                }
                kind @ (1 | 2) => {
                    let (lit, dist) = if kind == 1 { fixed_tables() } else { dynamic_tables(&mut input)? };
                    loop {
                        let symbol = lit.decode(&mut input)?;
                        match symbol {
                            0..=255 => self.history.push(symbol as u8),
                            256 => break,
                            _ => {
                                let i = usize::from(symbol - 257);
                                let len =
                                    *LEN_BASE.get(i).ok_or("bad length")? as usize + input.bits(LEN_EXTRA[i])? as usize;
                                let d = usize::from(dist.decode(&mut input)?);
                                let distance = *DIST_BASE.get(d).ok_or("bad distance")? as usize
                                    + input.bits(DIST_EXTRA[d])? as usize;
                                if distance > self.history.len() {
                                    return Err("distance too far back");
                                }
                                max_distance = max_distance.max(distance);
                                for _ in 0..len {
                                    self.history.push(self.history[self.history.len() - distance]);
                                }
                            }
                        }
                    }
                }
                _ => return Err("reserved block type"),
            }
            if last == 1 {
                break;
            }
        }
        Ok((self.history[start..].to_vec(), max_distance))
    }
}

const LEN_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u32; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bits(&mut self, count: u32) -> Result<u32, &'static str> {
        let mut value = 0;
        for i in 0..count {
            let byte = self.data.get(self.pos / 8).ok_or("ran out of input")?;
            value |= u32::from(byte >> (self.pos % 8) & 1) << i;
            self.pos += 1;
        }
        Ok(value)
    }
}

/// A canonical Huffman code, decoded bit by bit (RFC 1951 §3.2.2).
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut counts = [0; 16];
        for &len in lengths {
            counts[usize::from(len)] += 1;
        }
        counts[0] = 0;
        let mut symbols = Vec::new();
        for len in 1..16 {
            for (symbol, _) in lengths.iter().enumerate().filter(|&(_, &l)| usize::from(l) == len) {
                symbols.push(symbol as u16);
            }
        }
        Self { counts, symbols }
    }

    fn decode(&self, input: &mut BitReader<'_>) -> Result<u16, &'static str> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= input.bits(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                return self.symbols.get((index + code - first) as usize).copied().ok_or("bad code");
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("bad code")
    }
}

fn fixed_tables() -> (Huffman, Huffman) {
    let mut lengths = [8u8; 288];
    lengths[144..256].fill(9);
    lengths[256..280].fill(7);
    (Huffman::new(&lengths), Huffman::new(&[5; 30]))
}

fn dynamic_tables(input: &mut BitReader<'_>) -> Result<(Huffman, Huffman), &'static str> {
    const ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
    let lit_count = input.bits(5)? as usize + 257;
    let dist_count = input.bits(5)? as usize + 1;
    let code_count = input.bits(4)? as usize + 4;
    let mut code_lengths = [0u8; 19];
    for &i in &ORDER[..code_count] {
        code_lengths[i] = input.bits(3)? as u8;
    }
    let codes = Huffman::new(&code_lengths);
    let mut lengths = Vec::new();
    while lengths.len() < lit_count + dist_count {
        match codes.decode(input)? {
            len @ 0..=15 => lengths.push(len as u8),
            16 => {
                let previous = *lengths.last().ok_or("repeat with nothing before")?;
                let times = 3 + input.bits(2)?;
                lengths.extend((0..times).map(|_| previous));
            }
            17 => lengths.extend((0..3 + input.bits(3)?).map(|_| 0)),
            _ => lengths.extend((0..11 + input.bits(7)?).map(|_| 0)),
        }
    }
    if lengths.len() != lit_count + dist_count {
        return Err("code lengths overrun");
    }
    Ok((Huffman::new(&lengths[..lit_count]), Huffman::new(&lengths[lit_count..])))
}

#[test]
fn reference_decoder_reads_the_rfc_examples() {
    let mut reference = Reference::default();
    let (hello, distance) = reference.message(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap();
    assert_eq!((hello.as_slice(), distance), (&b"Hello"[..], 0));
    let (hello, distance) = reference.message(&[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap();
    assert_eq!((hello.as_slice(), distance), (&b"Hello"[..], 5));
    let bomb = zero_bomb(10_000);
    let (zeros, distance) = Reference::default().message(&bomb).unwrap();
    assert_eq!((zeros.len(), distance), (10_000, 1));
    assert!(zeros.iter().all(|&b| b == 0));
}
