//! Micro-benchmarks of the engine's hot paths: unmasking, header decoding, UTF-8 validation,
//! and a whole server connection parsing a stream of small frames.
//!
//! `cargo bench -p wsx-proto --bench core`

#![allow(missing_docs)]

use std::{hint::black_box, time::Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsx_proto::{
    Accept, Config, Connection, Event,
    frame::{Header, OpCode},
    mask::{apply_mask, mask_naive},
    utf8::Validator,
};

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [1 << 10, 16 << 10, 1 << 20] {
        let mut data = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("words", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut data), [1, 2, 3, 4], 0))
        });
        group.bench_with_input(BenchmarkId::new("naive", size), &size, |b, _| {
            b.iter(|| mask_naive(black_box(&mut data), [1, 2, 3, 4], 0))
        });
    }
    group.finish();
}

fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("header");
    let small = [0x81u8, 0x85, 1, 2, 3, 4];
    let large = [0x82u8, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_small", |b| b.iter(|| Header::decode(black_box(&small))));
    group.bench_function("decode_64bit", |b| b.iter(|| Header::decode(black_box(&large))));
    let h = Header { fin: true, rsv: 0, opcode: OpCode::Text, mask: Some([1, 2, 3, 4]), payload_len: 20 };
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = [0u8; 14];
            black_box(black_box(h).encode(&mut out))
        })
    });
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let ascii = "The quick brown fox jumps over the lazy dog. ".repeat(16 << 10 >> 5);
    let mixed = "κόσμε, 世界, мир, 🌍 — ".repeat((16 << 10) / 32);
    for (name, text) in [("ascii", &ascii), ("mixed", &mixed)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(BenchmarkId::new("incremental", name), |b| {
            b.iter(|| {
                let mut v = Validator::new();
                // Feed in 1 KiB pieces, as reads would deliver them.
                for piece in text.as_bytes().chunks(1024) {
                    v.feed(black_box(piece)).unwrap();
                }
                v.is_complete()
            })
        });
        group.bench_function(BenchmarkId::new("std", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(text.as_bytes())).is_ok())
        });
    }
    group.finish();
}

/// A server connection parsing 1000 masked 20-byte text frames per iteration.
fn connection(c: &mut Criterion) {
    let mut group = c.benchmark_group("connection");
    let mut frames = Vec::new();
    for _ in 0..1000 {
        let payload = b"0123456789abcdefghij";
        let h = Header { fin: true, rsv: 0, opcode: OpCode::Text, mask: Some([9, 8, 7, 6]), payload_len: 20 };
        let mut head = [0u8; 14];
        let n = h.encode(&mut head);
        frames.extend_from_slice(&head[..n]);
        let start = frames.len();
        frames.extend_from_slice(payload);
        apply_mask(&mut frames[start..], [9, 8, 7, 6], 0);
    }
    let now = Instant::now();
    let mut server = Connection::server(&Config::default(), now).unwrap();
    server.receive(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        now,
    );
    let _ = server.next_event();
    server.accept(&Accept::new()).unwrap();
    let mut out = server.transmit();
    let sent = bytes::Buf::remaining(&out);
    bytes::Buf::advance(&mut out, sent);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("recv_1000_small_frames", |b| {
        b.iter(|| {
            server.receive(black_box(&frames), now);
            let mut n = 0;
            while let Some(ev) = server.next_event() {
                if let Event::Message(_) = ev {
                    n += 1;
                }
            }
            assert_eq!(n, 1000);
        })
    });
    group.finish();
}

criterion_group!(benches, mask, header, utf8, connection);
criterion_main!(benches);
