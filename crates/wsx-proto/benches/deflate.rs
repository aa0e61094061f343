//! permessage-deflate: the backend (zlib-rs, as `wsx-proto` drives it, at several memory levels,
//! against miniz_oxide, flate2's pure-Rust default) on JSON-like messages of 1 KiB and 16 KiB,
//! and the whole server echo through `Connection` with several connections.
//!
//! The backend groups run the RFC 7692 §7.2 pattern: raw deflate, a 15-bit window,
//! context takeover across messages, a sync flush per message with the 00 00 ff ff trailer cut
//! off, and the trailer fed back before inflating. Output buffers are reused, so the figures
//! are the codecs' own. Before measuring, the compression ratio of every memory level is
//! printed at levels 1 and 6.
//!
//! The echo group is a server's work per message in the issue-7 benchmark (`scripts/bench-deflate`)
//! without the sockets: each of N connections in turn receives a masked client frame, compressed
//! at level 6 without context takeover (as the load generator sends them), inflates it, and
//! echoes it compressed with context takeover. With many connections the compressors' state no
//! longer fits in the caches, which a single-codec benchmark cannot show.
//!
//! `cargo bench -p wsx-proto --bench deflate [-- FILTER]`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use bytes::Buf;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use miniz_oxide::deflate::core::{CompressorOxide, create_comp_flags_from_zip_params};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZFlush};
use wsx_proto::frame::{Header, RSV1};
use wsx_proto::mask::apply_mask;
use wsx_proto::{Accept, Config, Connection, DeflateConfig, Event, OpCode};
use zlib_rs::{DeflateFlush, InflateFlush, Method, Strategy};

const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Distinct messages per size, sent in turn.
const MESSAGES: usize = 64;

/// One side of a permessage-deflate stream.
trait Codec {
    fn compress(&mut self, message: &[u8], out: &mut Vec<u8>);
    /// Inflate one message's payload (without trailer); `reset` starts a new stream.
    fn decompress(&mut self, payload: &[u8], out: &mut Vec<u8>, reset: bool);
}

struct ZlibRs {
    compress: zlib_rs::Deflate,
    decompress: zlib_rs::Inflate,
}

impl ZlibRs {
    fn new(level: i32, mem_level: i32) -> Self {
        let config = zlib_rs::DeflateConfig {
            level,
            method: Method::Deflated,
            window_bits: -15,
            mem_level,
            strategy: Strategy::Default,
        };
        Self { compress: zlib_rs::Deflate::new_with_config(config), decompress: zlib_rs::Inflate::new(false, 15) }
    }
}

/// Hand `out`'s spare capacity to `f` as uninitialized bytes and keep the `written` it reports.
fn fill(out: &mut Vec<u8>, f: impl FnOnce(&mut [MaybeUninit<u8>]) -> usize) {
    let len = out.len();
    let written = f(out.spare_capacity_mut());
    // SAFETY: zlib-rs initialized the first `written` bytes of the spare capacity, as its
    // `total_out` counts them.
    unsafe { out.set_len(len + written) };
}

impl Codec for ZlibRs {
    fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut rest = message;
        loop {
            out.reserve(rest.len() / 2 + 64);
            let (before_in, before_out) = (self.compress.total_in(), self.compress.total_out());
            let spare = out.capacity() - out.len();
            fill(out, |spare| {
                self.compress.compress_uninit(rest, spare, DeflateFlush::SyncFlush).unwrap();
                (self.compress.total_out() - before_out) as usize
            });
            rest = &rest[(self.compress.total_in() - before_in) as usize..];
            if rest.is_empty() && ((self.compress.total_out() - before_out) as usize) < spare {
                break;
            }
        }
        assert!(out.ends_with(&TRAILER));
        out.truncate(out.len() - 4);
    }

    fn decompress(&mut self, payload: &[u8], out: &mut Vec<u8>, reset: bool) {
        if reset {
            self.decompress.reset(false);
        }
        out.clear();
        for mut input in [payload, &TRAILER[..]] {
            loop {
                out.reserve(4096);
                let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
                let spare = out.capacity() - out.len();
                fill(out, |spare| {
                    self.decompress.decompress_uninit(input, spare, InflateFlush::NoFlush).unwrap();
                    (self.decompress.total_out() - before_out) as usize
                });
                input = &input[(self.decompress.total_in() - before_in) as usize..];
                if input.is_empty() && ((self.decompress.total_out() - before_out) as usize) < spare {
                    break;
                }
            }
        }
    }
}

struct Miniz {
    compress: Box<CompressorOxide>,
    decompress: Box<InflateState>,
}

impl Miniz {
    fn new() -> Self {
        Self {
            compress: Box::new(CompressorOxide::new(create_comp_flags_from_zip_params(1, -15, 0))),
            decompress: InflateState::new_boxed(DataFormat::Raw),
        }
    }
}

impl Codec for Miniz {
    fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut rest = message;
        loop {
            out.reserve(rest.len() / 2 + 64);
            let len = out.len();
            out.resize(out.capacity(), 0);
            let result =
                miniz_oxide::deflate::stream::deflate(&mut self.compress, rest, &mut out[len..], MZFlush::Sync);
            result.status.unwrap();
            let full = result.bytes_written == out.len() - len;
            out.truncate(len + result.bytes_written);
            rest = &rest[result.bytes_consumed..];
            if rest.is_empty() && !full {
                break;
            }
        }
        assert!(out.ends_with(&TRAILER));
        out.truncate(out.len() - 4);
    }

    fn decompress(&mut self, payload: &[u8], out: &mut Vec<u8>, reset: bool) {
        if reset {
            self.decompress.reset(DataFormat::Raw);
        }
        out.clear();
        for mut input in [payload, &TRAILER[..]] {
            loop {
                out.reserve(4096);
                let len = out.len();
                out.resize(out.capacity(), 0);
                let result =
                    miniz_oxide::inflate::stream::inflate(&mut self.decompress, input, &mut out[len..], MZFlush::None);
                let full = result.bytes_written == out.len() - len;
                out.truncate(len + result.bytes_written);
                input = &input[result.bytes_consumed..];
                if let Err(e) = result.status {
                    assert_eq!(e, miniz_oxide::MZError::Buf, "inflate failed");
                }
                if input.is_empty() && !full {
                    break;
                }
            }
        }
    }
}

/// JSON-like records, as chat or market-data messages look.
fn messages(size: usize) -> Vec<Vec<u8>> {
    let mut x = 0x2545_f491_u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    const WORDS: [&str; 12] =
        ["alpha", "bravo", "charlie", "delta", "echo", "ping", "order", "trade", "quote", "user", "room", "status"];
    (0..MESSAGES)
        .map(|_| {
            let mut out = String::from("[");
            while out.len() < size {
                let (a, b, c) = (next(), next(), next());
                out.push_str(&format!(
                    "{{\"id\":{},\"type\":\"{}\",\"user\":\"{}_{}\",\"price\":{}.{:02},\"active\":{},\"tags\":[\"{}\",\"{}\"]}},",
                    a % 100_000,
                    WORDS[(b % 12) as usize],
                    WORDS[(c % 12) as usize],
                    c % 1000,
                    b % 5000,
                    a % 100,
                    a % 2 == 0,
                    WORDS[(a % 12) as usize],
                    WORDS[(b % 7) as usize],
                ));
            }
            let mut out = out.into_bytes();
            out.truncate(size);
            out
        })
        .collect()
}

/// Compressed size of `messages` sent in turn with context takeover, over their size.
fn ratio(codec: &mut impl Codec, messages: &[Vec<u8>]) -> f64 {
    let mut out = Vec::new();
    let mut compressed = 0;
    for m in messages {
        codec.compress(m, &mut out);
        compressed += out.len();
    }
    compressed as f64 / messages.iter().map(Vec::len).sum::<usize>() as f64
}

fn bench_backend<C: Codec>(c: &mut Criterion, name: &str, new: impl Fn() -> C) {
    for (label, size) in [("1KiB", 1024), ("16KiB", 16 * 1024)] {
        let messages = messages(size);
        // The stream the decompressor replays: every message compressed in order, with context
        // takeover; it starts over (reset) at the first message.
        let mut codec = new();
        let payloads: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| {
                let mut out = Vec::new();
                codec.compress(m, &mut out);
                out
            })
            .collect();

        let mut group = c.benchmark_group(format!("deflate/compress/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut codec = new();
        let mut out = Vec::new();
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                codec.compress(black_box(&messages[i % MESSAGES]), &mut out);
                i += 1;
                black_box(out.len())
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("deflate/decompress/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut codec = new();
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let at = i % MESSAGES;
                codec.decompress(black_box(&payloads[at]), &mut out, at == 0);
                debug_assert_eq!(out, messages[at]);
                i += 1;
                black_box(out.len())
            })
        });
        group.finish();
    }
}

fn backends(c: &mut Criterion) {
    // Each backend must read the other's output: the same format on the wire.
    let (mut zlib, mut miniz) = (ZlibRs::new(1, 8), Miniz::new());
    let (mut payload, mut out) = (Vec::new(), Vec::new());
    for (i, m) in messages(4096).iter().enumerate() {
        zlib.compress(m, &mut payload);
        miniz.decompress(&payload, &mut out, i == 0);
        assert_eq!(&out, m);
    }
    // A smaller memLevel shortens zlib's blocks: no loss at level 1, whose blocks use the
    // fixed codes, but more code tables per message from level 2 up.
    for size in [1024, 16 * 1024] {
        let messages = messages(size);
        for level in [1, 6] {
            let ratios: Vec<String> = (1..=9)
                .map(|mem_level| {
                    format!("{mem_level}: {:.1}%", 100.0 * ratio(&mut ZlibRs::new(level, mem_level), &messages))
                })
                .collect();
            eprintln!("zlib-rs {size} B, level {level}, compressed size by memLevel: {}", ratios.join(", "));
        }
        eprintln!("miniz_oxide {size} B, level 1: {:.1}%", 100.0 * ratio(&mut Miniz::new(), &messages));
    }
    // wsx-proto's default memory level (5) against zlib's (8), at the default level and at 6.
    for level in [1, 6] {
        for mem_level in [5, 8] {
            bench_backend(c, &format!("zlib-rs-level{level}-mem{mem_level}"), || ZlibRs::new(level, mem_level));
        }
    }
    bench_backend(c, "miniz_oxide-level1", Miniz::new);
}

/// A masked client text frame carrying `message` deflated on its own at level 6, as the load
/// generator of `scripts/bench-deflate` sends them.
fn client_frame(message: &[u8]) -> Vec<u8> {
    let mut codec = ZlibRs::new(6, 8);
    let mut payload = Vec::new();
    codec.compress(message, &mut payload);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let header =
        Header { fin: true, rsv: RSV1, opcode: OpCode::Text, mask: Some(key), payload_len: payload.len() as u64 };
    let mut head = [0; 14];
    let n = header.encode(&mut head);
    apply_mask(&mut payload, key, 0);
    [&head[..n], &payload].concat()
}

/// A server that agreed to permessage-deflate as the load generator offers it: client without
/// context takeover, server with.
fn deflate_server(config: &Config, now: Instant) -> Connection {
    let mut server = Connection::server(config, now).unwrap();
    server.receive(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits\r\n\r\n",
        now,
    );
    let _ = server.next_event();
    server.accept(&Accept::new()).unwrap();
    assert!(server.is_compressed());
    let mut out = server.transmit();
    out.advance(out.remaining());
    server
}

fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate/echo");
    group.throughput(Throughput::Elements(1));
    let frames: Vec<Vec<u8>> = messages(1024).iter().map(|m| client_frame(m)).collect();
    let now = Instant::now();
    for mem_level in [5, 8] {
        let config = Config::default().deflate(Some(DeflateConfig::default().mem_level(mem_level)));
        for connections in [10, 100] {
            let mut servers: Vec<Connection> = (0..connections).map(|_| deflate_server(&config, now)).collect();
            let mut i = 0;
            let id = format!("{connections}x1KiB/mem{mem_level}");
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    let server = &mut servers[i % connections];
                    server.receive(&frames[i / connections % MESSAGES], now);
                    let Some(Event::Message(message)) = server.next_event() else { panic!("no message") };
                    server.send(message).unwrap();
                    let mut out = server.transmit();
                    let sent = out.remaining();
                    out.advance(sent);
                    i += 1;
                    black_box(sent)
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = backends, echo
}
criterion_main!(benches);
