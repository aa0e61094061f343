//! Deflate backends for permessage-deflate: flate2 on zlib-rs (what `wsx-proto` uses) against
//! miniz_oxide (flate2's pure-Rust default), on JSON-like messages of 1 KiB and 16 KiB.
//!
//! Both run the RFC 7692 §7.2 pattern: raw deflate, level 1, a 15-bit window, context
//! takeover across messages, a sync flush per message with the 00 00 ff ff trailer cut off, and
//! the trailer fed back before inflating. Output buffers are reused, so the figures are the
//! codecs' own. Run with `cargo bench -p wsx-proto --bench deflate`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use miniz_oxide::deflate::core::{CompressorOxide, create_comp_flags_from_zip_params};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZFlush};

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
    compress: Compress,
    decompress: Decompress,
}

impl ZlibRs {
    fn new() -> Self {
        Self {
            compress: Compress::new_with_window_bits(Compression::new(1), false, 15),
            decompress: Decompress::new_with_window_bits(false, 15),
        }
    }
}

impl Codec for ZlibRs {
    fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut rest = message;
        loop {
            out.reserve(rest.len() / 2 + 64);
            let before = self.compress.total_in();
            let spare = out.capacity() - out.len();
            let len = out.len();
            self.compress.compress_vec(rest, out, FlushCompress::Sync).unwrap();
            rest = &rest[(self.compress.total_in() - before) as usize..];
            if rest.is_empty() && out.len() - len < spare {
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
                let before = self.decompress.total_in();
                let spare = out.capacity() - out.len();
                let len = out.len();
                self.decompress.decompress_vec(input, out, FlushDecompress::None).unwrap();
                input = &input[(self.decompress.total_in() - before) as usize..];
                if input.is_empty() && out.len() - len < spare {
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
        let ratio = payloads.iter().map(Vec::len).sum::<usize>() as f64 / (size * MESSAGES) as f64;
        eprintln!("{name} {label}: compressed to {:.1}% of the input", ratio * 100.0);

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
    let messages = messages(4096);
    let (mut zlib, mut miniz) = (ZlibRs::new(), Miniz::new());
    let (mut payload, mut out) = (Vec::new(), Vec::new());
    for (i, m) in messages.iter().enumerate() {
        zlib.compress(m, &mut payload);
        miniz.decompress(&payload, &mut out, i == 0);
        assert_eq!(&out, m);
    }
    bench_backend(c, "flate2-zlib-rs", ZlibRs::new);
    bench_backend(c, "miniz_oxide", Miniz::new);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = backends
}
criterion_main!(benches);
