//! Closed-loop WebSocket echo load generator that stays out of the way of the server it
//! measures.
//!
//! One thread and a raw level-triggered epoll loop drive N connections. Each connection
//! sends one pre-built masked binary frame, waits for the whole echo, checks its header (and
//! every 16th payload), and sends again. No WebSocket library runs on this side: the
//! handshake is a fixed HTTP request, frames are encoded once up front, and an echo is
//! recognised by comparing its bytes with the expected header. So the client's cost per
//! message is a `write` and a `read` or two, and the same for every server.
//!
//! ```text
//! loadgen --port 9001 --connections 100 --size 20 --warmup 1 --duration 5 \
//!         [--server-pid PID] [--label NAME] [--host 127.0.0.1] \
//!         [--deflate [--server-no-context-takeover] [--variants 64]]
//!         [--raw] [--pipeline K]
//! loadgen --idle N --port 9001 --server-pid PID [--hold 2] [--label NAME] [--raw]
//! ```
//!
//! `--raw` drives a raw TCP echo (`echo-raw`): no handshake, the same masked frames are sent,
//! and the echo expected is those very bytes (S + 6, 8 or 14 per message: 4 bytes more per
//! echo than a WebSocket server sends back). No close frames at the end.
//!
//! `--pipeline K` keeps K messages in flight per connection instead of one: K frames are written
//! at once, and for every batch of echoes read, as many new frames are written in one `write`.
//! Latency is then from queueing a frame to the end of its echo. Not with `--deflate`.
//!
//! `--idle N` measures memory instead: it reads the server's `VmRSS` (`/proc/PID/status`), opens
//! N connections (handshake only; none with `--raw`), waits `--hold` seconds, reads `VmRSS` again
//! and prints (after − baseline) / N in bytes, plus the server's open descriptors before and
//! after as a check that every connection was accepted.
//!
//! With `--deflate` the handshake offers permessage-deflate (`client_no_context_takeover;
//! client_max_window_bits`, plus `server_no_context_takeover` if asked) and requires the server
//! to accept it. The payload is then JSON text (an array of product records), `--variants`
//! different records of exactly `--size` bytes generated once; each is compressed once up front
//! (raw deflate, sync flush, trailer removed: no context takeover on our side means every
//! message stands alone) into a masked RSV1 text frame, and each connection sends them in
//! turn. Echoes are parsed frame by frame (length unknown in advance), must be FIN text frames;
//! RSV1 set or not is counted. With server context takeover every echo is inflated through
//! the connection's own decompressor (the stream needs it) and compared; without, every
//! 16th. The report adds wire bytes per message each way and the compression ratios.
//!
//! Prints one JSON object on stdout: messages/s, payload MB/s (each way), latency
//! percentiles in microseconds, the loadgen's own CPU time and share of one core, and —
//! with `--server-pid` — the server's CPU time (utime + stime from `/proc/PID/stat`, summed
//! over its threads) over exactly the measured window, per message, and the CPU other
//! processes took meanwhile (`other_cpu_share`, in cores, from `/proc/stat`), which tells a
//! clean run from a disturbed one.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use hdrhistogram::Histogram;
use wsx_bench::{Epoll, Snapshot, arg, arg_or, open_fds, vm_rss};

/// The handshake key from RFC 6455 §1.3, and the accept value it must produce.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// A fixed masking key: the server must unmask whatever it is; a constant costs nothing.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// After the window closes, how long outstanding echoes may take to arrive.
const DRAIN: Duration = Duration::from_secs(2);
/// The longest the closing handshakes may take, all connections together.
const CLOSE_BUDGET: Duration = Duration::from_secs(5);
/// Check the payload of every this-many-th echo on each connection (headers always).
const VERIFY_EVERY: u64 = 16;

struct Options {
    addr: SocketAddr,
    connections: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
    server_pid: Option<u32>,
    label: String,
    /// permessage-deflate mode (JSON text payloads, compressed frames).
    deflate: bool,
    /// In deflate mode, ask the server not to keep its compression context between messages.
    server_no_context_takeover: bool,
    /// In deflate mode, how many different payloads each connection cycles through.
    variants: usize,
    /// Raw TCP echo: no handshake; the echo is the request's own bytes.
    raw: bool,
    /// Messages in flight per connection (0: closed loop, one at a time, the original path).
    pipeline: usize,
    /// Idle-memory mode: open this many connections and measure the server's RSS.
    idle: usize,
    /// Idle mode: how long to wait with every connection open before reading the RSS.
    hold: Duration,
}

/// The bytes of one exchange, built once and shared by every connection.
struct Frames {
    /// The masked client frame sent each round (in deflate mode, one per payload variant,
    /// sent in turn).
    requests: Vec<Vec<u8>>,
    /// The unmasked header the server's echo must start with (binary mode only).
    echo_header: Vec<u8>,
    /// The payloads, to check echoes against (one per request).
    payloads: Vec<Vec<u8>>,
    /// The payload bytes of each request frame on the wire (compressed in deflate mode).
    request_payload_lens: Vec<usize>,
    deflate: bool,
    /// Pipeline mode: K + 1 copies of the request back to back, so that any run of up to K
    /// frames starting anywhere in the first copy is one contiguous slice.
    batch: Vec<u8>,
}

impl Frames {
    fn new(opts: &Options) -> Self {
        let mut frames = if opts.deflate {
            Self::deflate(opts.size, opts.variants.max(1))
        } else {
            Self::binary(opts.size, opts.raw)
        };
        if opts.pipeline > 0 {
            frames.batch = frames.requests[0].repeat(opts.pipeline + 1);
        }
        frames
    }

    /// Bytes of one echo (binary and raw modes).
    fn echo_len(&self) -> usize {
        self.echo_header.len() + self.payloads[0].len()
    }

    /// JSON text payloads, each compressed on its own (raw deflate, sync flush, without the
    /// final `00 00 ff ff`, RFC 7692 §7.2.1) into a masked text frame with RSV1 set.
    fn deflate(size: usize, variants: usize) -> Self {
        let mut requests = Vec::with_capacity(variants);
        let mut payloads = Vec::with_capacity(variants);
        let mut lens = Vec::with_capacity(variants);
        for v in 0..variants {
            let payload = json_payload(size, v as u32);
            assert_eq!(payload.len(), size);
            let mut z = Compress::new(Compression::default(), false);
            let mut out = Vec::with_capacity(2 * size + 64);
            z.compress_vec(&payload, &mut out, FlushCompress::Sync).expect("deflate");
            assert_eq!(z.total_in() as usize, size, "compressor took all input");
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush ends with an empty stored block");
            out.truncate(out.len() - 4);
            lens.push(out.len());
            let mut request = header(0xc1, out.len(), true);
            request.extend_from_slice(&MASK);
            request.extend(out.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
            requests.push(request);
            payloads.push(payload);
        }
        Self {
            requests,
            echo_header: Vec::new(),
            payloads,
            request_payload_lens: lens,
            deflate: true,
            batch: Vec::new(),
        }
    }

    /// A masked binary frame of `size` pseudo-random bytes. With `raw`, the expected echo is the
    /// request itself (a raw TCP echo returns what it got): `echo_header` is then the masked
    /// header with its key, and `payloads[0]` the masked payload.
    fn binary(size: usize, raw: bool) -> Self {
        // Pseudo-random bytes (xorshift), so that no compressor or shortcut can help.
        let mut x: u32 = 0x9e37_79b9;
        let payload: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut request = header(0x82, size, true);
        request.extend_from_slice(&MASK);
        request.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        let (echo_header, payload) = if raw {
            let h = request.len() - size;
            (request[..h].to_vec(), request[h..].to_vec())
        } else {
            (header(0x82, size, false), payload)
        };
        Self {
            requests: vec![request],
            echo_header,
            payloads: vec![payload],
            request_payload_lens: vec![size],
            deflate: false,
            batch: Vec::new(),
        }
    }

    /// The receive buffer each connection needs: one echo (binary mode: exactly; deflate mode:
    /// room for an incompressible payload plus the deflate block overhead and a header), plus 4
    /// bytes to append the sync-flush trailer in place before inflating.
    fn rbuf_len(&self, pipeline: usize) -> usize {
        let size = self.payloads[0].len();
        if self.deflate { size + size / 8 + 64 + 14 + 4 } else { self.echo_len() * pipeline.max(1) }
    }
}

/// A deterministic JSON array of product records, exactly `size` bytes (at least 256), with
/// values drawn from a PRNG seeded by `seed`: the same keys and vocabulary in every variant,
/// different ids, names, prices, quantities and timestamps. The last record's name is
/// lengthened with a fixed phrase to hit the size exactly.
fn json_payload(size: usize, seed: u32) -> Vec<u8> {
    assert!(size >= 256, "--deflate needs --size of at least 256 bytes");
    const NAMES: [&str; 12] = [
        "Widget", "Gadget", "Sprocket", "Bracket", "Lamp", "Chair", "Cable", "Adapter", "Bottle", "Filter", "Valve",
        "Panel",
    ];
    const COLOURS: [&str; 7] = ["Red", "Blue", "Green", "Black", "White", "Silver", "Oak"];
    const CATEGORIES: [&str; 8] = ["home", "garden", "office", "tools", "kitchen", "outdoor", "toys", "audio"];
    const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
    const FILLER: &str = " limited edition with extended warranty and free returns,";
    let mut x: u32 = 0x9e37_79b9 ^ seed.wrapping_mul(0x85eb_ca6b);
    let mut rnd = |n: u32| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x % n
    };
    let mut records: Vec<(String, String)> = Vec::new(); // (before the name's end, after it)
    let mut id = 100_000 + seed * 1_000;
    let mut ts = 1_795_000_000u32 + seed * 3_600; // 2026-11, seconds
    let mut len = 2; // "[" and "]"
    loop {
        id += 1 + rnd(7);
        ts += rnd(600);
        let (d, h, m, sec) = (1 + (ts / 86_400) % 28, (ts / 3_600) % 24, (ts / 60) % 60, ts % 60);
        let name = NAMES[rnd(12) as usize];
        let before = format!(
            "{{\"id\":{id},\"sku\":\"{}-{:04}\",\"name\":\"{name} {} {}",
            &name[..3].to_ascii_uppercase(),
            rnd(10_000),
            COLOURS[rnd(7) as usize],
            1 + rnd(99),
        );
        let after = format!(
            "\",\"category\":\"{}\",\"price\":{}.{:02},\"currency\":\"{}\",\"qty\":{},\"in_stock\":{},\
             \"updated_at\":\"2026-11-{d:02}T{h:02}:{m:02}:{sec:02}.{:03}Z\"}}",
            CATEGORIES[rnd(8) as usize],
            1 + rnd(500),
            rnd(100),
            CURRENCIES[rnd(3) as usize],
            rnd(50),
            rnd(5) != 0,
            rnd(1000),
        );
        let add = before.len() + after.len() + usize::from(!records.is_empty());
        if len + add > size {
            break;
        }
        len += add;
        records.push((before, after));
    }
    let fill = size - len;
    assert!(!records.is_empty() && fill < 400, "a record fits in {size} bytes");
    let filler: String = FILLER.chars().cycle().take(fill).collect();
    let last = records.len() - 1;
    records[last].0.push_str(&filler);
    let mut out = String::with_capacity(size);
    out.push('[');
    for (i, (before, after)) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(before);
        out.push_str(after);
    }
    out.push(']');
    out.into_bytes()
}

/// A frame header (RFC 6455 §5.2) without the masking key.
fn header(first: u8, len: usize, masked: bool) -> Vec<u8> {
    let m = if masked { 0x80 } else { 0 };
    let mut h = vec![first];
    if len < 126 {
        h.push(m | len as u8);
    } else if len <= 0xffff {
        h.push(m | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(m | 127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h
}

struct Conn {
    tcp: TcpStream,
    /// The echo being received; exactly one echo long (deflate mode: room for one echo).
    rbuf: Box<[u8]>,
    rlen: usize,
    /// Which of `Frames::requests` is in flight.
    variant: usize,
    /// Deflate mode: the decompressor for this connection's echoes (with server context
    /// takeover, fed every echo in order), and what the last echo took.
    inflater: Option<Decompress>,
    last: EchoStats,
    /// How much of the request frame has been written.
    woff: usize,
    /// Whether EPOLLOUT is registered (a partial write is pending).
    want_out: bool,
    sent_at: Instant,
    /// Echoes received on this connection.
    echoes: u64,
    /// Waiting for an echo (a request was sent and not yet answered).
    busy: bool,
    /// Pipeline mode: when each frame in flight was queued, oldest first.
    inflight: VecDeque<Instant>,
    /// Pipeline mode: request bytes still to write, and where in the request the next byte is.
    owed: usize,
    wpos: usize,
    alive: bool,
}

/// What one echo took (deflate mode).
#[derive(Default, Clone, Copy)]
struct EchoStats {
    /// Echo frame bytes on the wire (header + payload).
    wire: usize,
    /// Echo payload bytes on the wire (compressed if RSV1).
    payload: usize,
    /// RSV1 was set.
    compressed: bool,
    /// Whether it was inflated, and the time that took.
    inflated: bool,
    inflate_time: Duration,
}

/// Window totals in deflate mode.
#[derive(Default)]
struct DeflateTotals {
    up_wire: u64,
    up_payload: u64,
    down_wire: u64,
    down_payload: u64,
    compressed: u64,
    inflated: u64,
    inflate_time: Duration,
}

/// What the server agreed to in its `Sec-WebSocket-Extensions` answer.
#[derive(Clone, Copy, Default)]
struct Agreed {
    server_context_takeover: bool,
}

fn main() {
    let opts = Options {
        addr: SocketAddr::new(arg_or("host", std::net::IpAddr::from([127, 0, 0, 1])), arg_or("port", 9001u16)),
        connections: arg_or("connections", 100usize),
        size: arg_or("size", 20usize),
        warmup: Duration::from_secs_f64(arg_or("warmup", 1.0f64)),
        duration: Duration::from_secs_f64(arg_or("duration", 5.0f64)),
        server_pid: arg("server-pid").map(|p| p.parse().expect("--server-pid: a process id")),
        label: arg("label").unwrap_or_default(),
        deflate: flag("deflate"),
        server_no_context_takeover: flag("server-no-context-takeover"),
        variants: arg_or("variants", 64usize),
        raw: flag("raw"),
        pipeline: arg_or("pipeline", 0usize),
        idle: arg_or("idle", 0usize),
        hold: Duration::from_secs_f64(arg_or("hold", 2.0f64)),
    };
    if opts.pipeline > 0 && opts.deflate {
        eprintln!("loadgen: --pipeline does not work with --deflate");
        std::process::exit(2);
    }
    if opts.raw && opts.deflate {
        eprintln!("loadgen: --raw does not work with --deflate");
        std::process::exit(2);
    }
    let result = if opts.idle > 0 { run_idle(&opts) } else { run(&opts) };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

/// Whether `--name` is among the process arguments (a flag without a value).
fn flag(name: &str) -> bool {
    let flag = format!("--{name}");
    std::env::args().skip(1).any(|a| a == flag)
}

fn run(opts: &Options) -> io::Result<()> {
    let frames = Frames::new(opts);
    let mut conns = Vec::with_capacity(opts.connections);
    let mut agreed = Agreed::default();
    for _ in 0..opts.connections {
        let (c, a) = connect(opts, &frames)?;
        agreed = a;
        conns.push(c);
    }
    let mut scratch = vec![0u8; opts.size + 1];
    let mut totals = DeflateTotals::default();
    let epoll = Epoll::new()?;
    for (i, c) in conns.iter().enumerate() {
        c.tcp.set_nonblocking(true)?;
        epoll.add(c.tcp.as_raw_fd(), i as u64)?;
    }

    let start = Instant::now();
    let window_start_at = start + opts.warmup;
    let window_end_at = window_start_at + opts.duration;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
    let mut in_window = false;
    let mut messages: u64 = 0;
    let mut errors: u64 = 0;
    let mut snap_start = Snapshot::default();
    let mut snap_end = None;

    for (i, c) in conns.iter_mut().enumerate() {
        let sent = if opts.pipeline > 0 {
            send_pipelined(c, &frames, start, &epoll, i, opts.pipeline)
        } else {
            send(c, &frames, start, &epoll, i)
        };
        if let Err(e) = sent {
            fail(c, &epoll, &mut errors, e);
        }
    }

    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        let now = Instant::now();
        if !in_window && snap_end.is_none() && now >= window_start_at {
            in_window = true;
            hist.reset();
            messages = 0;
            totals = DeflateTotals::default();
            snap_start = Snapshot::take(now, opts.server_pid);
        }
        if in_window && now >= window_end_at {
            in_window = false;
            snap_end = Some(Snapshot::take(now, opts.server_pid));
        }
        let sending = snap_end.is_none();
        let busy = conns.iter().filter(|c| c.alive && c.busy).count();
        if !sending && (busy == 0 || now >= window_end_at + DRAIN) {
            break;
        }
        if conns.iter().all(|c| !c.alive) {
            return Err(io::Error::other("every connection failed"));
        }

        let n = epoll.wait(&mut events, 50)?;
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            if !c.alive {
                continue;
            }
            if ev.events & libc::EPOLLOUT as u32 != 0 && c.want_out {
                let written = if opts.pipeline > 0 {
                    write_owed(c, &frames, &epoll, i)
                } else {
                    write_out(c, &frames, &epoll, i)
                };
                if let Err(e) = written {
                    fail(c, &epoll, &mut errors, e);
                    continue;
                }
            }
            if ev.events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                continue;
            }
            if opts.pipeline > 0 {
                match read_pipelined(c, &frames) {
                    Ok(0) => {}
                    Ok(n) => {
                        let done = Instant::now();
                        for _ in 0..n {
                            // Invariant: read_pipelined never reports more echoes than are in flight.
                            let sent_at = c.inflight.pop_front().expect("in flight");
                            if in_window {
                                messages += 1;
                                hist.saturating_record(done.duration_since(sent_at).as_nanos() as u64);
                            }
                        }
                        c.busy = !c.inflight.is_empty();
                        if sending && let Err(e) = send_pipelined(c, &frames, done, &epoll, i, n) {
                            fail(c, &epoll, &mut errors, e);
                        }
                    }
                    Err(e) => fail(c, &epoll, &mut errors, e),
                }
                continue;
            }
            let got = if frames.deflate {
                read_deflate_echo(c, &frames, agreed, &mut scratch)
            } else {
                read_echo(c, &frames)
            };
            match got {
                Ok(false) => {}
                Ok(true) => {
                    let done = Instant::now();
                    if in_window {
                        messages += 1;
                        hist.saturating_record(done.duration_since(c.sent_at).as_nanos() as u64);
                        if frames.deflate {
                            let req = &frames.requests[c.variant];
                            totals.up_wire += req.len() as u64;
                            totals.up_payload += frames.request_payload_lens[c.variant] as u64;
                            totals.down_wire += c.last.wire as u64;
                            totals.down_payload += c.last.payload as u64;
                            totals.compressed += u64::from(c.last.compressed);
                            totals.inflated += u64::from(c.last.inflated);
                            totals.inflate_time += c.last.inflate_time;
                        }
                    }
                    if sending {
                        c.variant = (c.variant + 1) % frames.requests.len();
                        if let Err(e) = send(c, &frames, done, &epoll, i) {
                            fail(c, &epoll, &mut errors, e);
                        }
                    }
                }
                Err(e) => fail(c, &epoll, &mut errors, e),
            }
        }
    }

    if !opts.raw {
        close_all(&mut conns, &epoll);
    }
    // Invariant: the loop above only breaks once the window has ended.
    let end = snap_end.expect("window ended");
    let deflate = frames.deflate.then_some((&totals, agreed));
    report(opts, &hist, messages, errors, &snap_start, &end, deflate);
    Ok(())
}

/// Open a connection and run the opening handshake with a fixed request.
fn connect(opts: &Options, frames: &Frames) -> io::Result<(Conn, Agreed)> {
    let addr = opts.addr;
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_nodelay(true)?;
    if opts.raw {
        return Ok((new_conn(tcp, opts, frames), Agreed::default()));
    }
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let extensions = if !opts.deflate {
        ""
    } else if opts.server_no_context_takeover {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits; \
         server_no_context_takeover\r\n"
    } else {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits\r\n"
    };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
    );
    tcp.write_all(request.as_bytes())?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = tcp.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("server closed during the handshake"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 8192 {
            return Err(io::Error::other("handshake response too long"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let accepted = head.starts_with("HTTP/1.1 101")
        && head.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == ACCEPT)
        });
    if !accepted || head_end != buf.len() {
        return Err(io::Error::other(format!("unexpected handshake response: {head:?}")));
    }
    let mut agreed = Agreed::default();
    if opts.deflate {
        // The server's answer: exactly one permessage-deflate, with parameters we can live
        // with (our frames are compressed with a 15-bit window).
        let ext: Vec<String> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
            .collect();
        let params: Vec<&str> = ext.iter().flat_map(|v| v.split(';')).map(str::trim).collect();
        if params.first() != Some(&"permessage-deflate") || ext.len() != 1 || ext[0].contains(',') {
            return Err(io::Error::other(format!("server did not accept permessage-deflate: {head:?}")));
        }
        let no_takeover = params.contains(&"server_no_context_takeover");
        if opts.server_no_context_takeover && !no_takeover {
            return Err(io::Error::other(format!("server ignored server_no_context_takeover: {head:?}")));
        }
        if params.iter().any(|p| p.starts_with("client_max_window_bits=") && !p.ends_with("=15")) {
            return Err(io::Error::other(format!("server limits our window below 15 bits: {head:?}")));
        }
        agreed.server_context_takeover = !no_takeover;
    }
    tcp.set_read_timeout(None)?;
    Ok((new_conn(tcp, opts, frames), agreed))
}

fn new_conn(tcp: TcpStream, opts: &Options, frames: &Frames) -> Conn {
    Conn {
        tcp,
        rbuf: vec![0; frames.rbuf_len(opts.pipeline)].into_boxed_slice(),
        rlen: 0,
        variant: 0,
        inflater: opts.deflate.then(|| Decompress::new(false)),
        last: EchoStats::default(),
        woff: 0,
        want_out: false,
        sent_at: Instant::now(),
        echoes: 0,
        busy: false,
        inflight: VecDeque::with_capacity(opts.pipeline),
        owed: 0,
        wpos: 0,
        alive: true,
    }
}

/// Start one request: reset the receive state and write the frame.
fn send(c: &mut Conn, frames: &Frames, now: Instant, epoll: &Epoll, i: usize) -> io::Result<()> {
    c.sent_at = now;
    c.woff = 0;
    c.rlen = 0;
    c.busy = true;
    write_out(c, frames, epoll, i)
}

/// Write what is left of the request; on a short write, wait for EPOLLOUT.
fn write_out(c: &mut Conn, frames: &Frames, epoll: &Epoll, i: usize) -> io::Result<()> {
    let request = &frames.requests[c.variant][..];
    while c.woff < request.len() {
        match c.tcp.write(&request[c.woff..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.woff += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !c.want_out {
                    epoll.modify(c.tcp.as_raw_fd(), i as u64, true)?;
                    c.want_out = true;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    if c.want_out {
        epoll.modify(c.tcp.as_raw_fd(), i as u64, false)?;
        c.want_out = false;
    }
    Ok(())
}

/// Pipeline mode: queue `count` more frames (all alike) and write as much as the socket takes.
fn send_pipelined(
    c: &mut Conn,
    frames: &Frames,
    now: Instant,
    epoll: &Epoll,
    i: usize,
    count: usize,
) -> io::Result<()> {
    c.inflight.extend(std::iter::repeat_n(now, count));
    c.owed += count * frames.requests[0].len();
    c.busy = !c.inflight.is_empty();
    write_owed(c, frames, epoll, i)
}

/// Pipeline mode: write the owed request bytes, in one `write` when the socket takes them; on a
/// short write, wait for EPOLLOUT.
fn write_owed(c: &mut Conn, frames: &Frames, epoll: &Epoll, i: usize) -> io::Result<()> {
    let l = frames.requests[0].len();
    while c.owed > 0 {
        // `wpos < l` and `owed <= K * l`, so this fits in the K + 1 copies of `batch`.
        let chunk = &frames.batch[c.wpos..c.wpos + c.owed];
        match c.tcp.write(chunk) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.owed -= n;
                c.wpos = (c.wpos + n) % l;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !c.want_out {
                    epoll.modify(c.tcp.as_raw_fd(), i as u64, true)?;
                    c.want_out = true;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    if c.want_out {
        epoll.modify(c.tcp.as_raw_fd(), i as u64, false)?;
        c.want_out = false;
    }
    Ok(())
}

/// Pipeline mode: read what has arrived (until the socket runs dry), check every whole echo's
/// header (and every 16th payload), keep a partial echo for later; returns how many whole
/// echoes arrived.
fn read_pipelined(c: &mut Conn, frames: &Frames) -> io::Result<usize> {
    let e = frames.echo_len();
    let h = frames.echo_header.len();
    let mut done = 0;
    loop {
        match c.tcp.read(&mut c.rbuf[c.rlen..]) {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            Ok(n) => c.rlen += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
            Err(e) => return Err(e),
        }
        let whole = c.rlen / e;
        if done + whole > c.inflight.len() {
            return Err(io::Error::other("unsolicited data from the server"));
        }
        for k in 0..whole {
            let echo = &c.rbuf[k * e..(k + 1) * e];
            if echo[..h] != frames.echo_header[..] {
                return Err(io::Error::other(format!("unexpected echo header {:02x?}", &echo[..h])));
            }
            if c.echoes.is_multiple_of(VERIFY_EVERY) && echo[h..] != frames.payloads[0][..] {
                return Err(io::Error::other("echoed payload differs"));
            }
            c.echoes += 1;
        }
        done += whole;
        c.rbuf.copy_within(whole * e..c.rlen, 0);
        c.rlen -= whole * e;
    }
}

/// Idle-memory mode: the server's RSS before and after opening `--idle` connections.
fn run_idle(opts: &Options) -> io::Result<()> {
    let pid = opts.server_pid.ok_or_else(|| io::Error::other("--idle needs --server-pid"))?;
    let frames = Frames::new(opts);
    let before = vm_rss(pid).ok_or_else(|| io::Error::other("cannot read the server's VmRSS"))?;
    let fds_before = open_fds(pid);
    let t = Instant::now();
    let mut conns = Vec::with_capacity(opts.idle);
    for _ in 0..opts.idle {
        let mut c = connect(opts, &frames)?.0;
        if opts.raw {
            // No handshake to wait for: one byte there and back instead, so that the server has
            // accepted this connection before the next comes (else the accept queue overflows
            // and a dropped SYN costs a 1 s retransmit).
            c.tcp.write_all(b"x")?;
            c.tcp.read_exact(&mut [0u8; 1])?;
        }
        conns.push(c);
    }
    let connect_s = t.elapsed().as_secs_f64();
    std::thread::sleep(opts.hold);
    let after = vm_rss(pid).ok_or_else(|| io::Error::other("cannot read the server's VmRSS"))?;
    let fds_after = open_fds(pid);
    let opt = |v: Option<usize>| v.map_or("null".to_owned(), |v| v.to_string());
    println!(
        "{{\"label\":\"{}\",\"idle_connections\":{},\"connect_s\":{connect_s:.3},\"hold_s\":{:.1},\
         \"rss_baseline_kb\":{before},\"rss_after_kb\":{after},\"idle_bytes_per_conn\":{:.1},\
         \"server_fds_before\":{},\"server_fds_after\":{}}}",
        opts.label.replace(['"', '\\'], ""),
        opts.idle,
        opts.hold.as_secs_f64(),
        (after as f64 - before as f64) * 1024.0 / opts.idle as f64,
        opt(fds_before),
        opt(fds_after),
    );
    // Reset rather than close: 10,000 client sockets in TIME_WAIT per run would soon use up
    // the ephemeral ports of 127.0.0.1 (and make later connects crawl).
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    for c in &conns {
        // SAFETY: `linger` is a valid `struct linger` of the size passed, for the call's duration.
        unsafe {
            libc::setsockopt(
                c.tcp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
    drop(conns);
    Ok(())
}

/// Read towards the expected echo; `Ok(true)` once all of it has arrived and checked out.
fn read_echo(c: &mut Conn, frames: &Frames) -> io::Result<bool> {
    let want = c.rbuf.len();
    while c.rlen < want {
        match c.tcp.read(&mut c.rbuf[c.rlen..]) {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            Ok(n) => c.rlen += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    if !c.busy {
        return Err(io::Error::other("unsolicited data from the server"));
    }
    let h = frames.echo_header.len();
    if c.rbuf[..h] != frames.echo_header[..] {
        return Err(io::Error::other(format!("unexpected echo header {:02x?}", &c.rbuf[..h])));
    }
    if c.echoes.is_multiple_of(VERIFY_EVERY) && c.rbuf[h..] != frames.payloads[0][..] {
        return Err(io::Error::other("echoed payload differs"));
    }
    c.echoes += 1;
    c.busy = false;
    Ok(true)
}

/// Deflate mode: read until one whole frame is in, check it is a final text frame, inflate it
/// when needed and compare it with what was sent; `Ok(true)` once done.
fn read_deflate_echo(c: &mut Conn, frames: &Frames, agreed: Agreed, scratch: &mut [u8]) -> io::Result<bool> {
    // The last 4 bytes of `rbuf` are kept for the trailer.
    let cap = c.rbuf.len() - 4;
    let frame_len = loop {
        if c.rlen >= 2 {
            let b1 = c.rbuf[1];
            if b1 & 0x80 != 0 {
                return Err(io::Error::other("masked frame from the server"));
            }
            let (hl, len) = match b1 & 0x7f {
                126 if c.rlen >= 4 => (4, u16::from_be_bytes([c.rbuf[2], c.rbuf[3]]) as usize),
                127 if c.rlen >= 10 => {
                    // Invariant: the slice is 8 bytes long.
                    (10, u64::from_be_bytes(c.rbuf[2..10].try_into().expect("8 bytes")) as usize)
                }
                126 | 127 => (0, 0),
                n => (2, n as usize),
            };
            if hl > 0 {
                if hl + len > cap {
                    return Err(io::Error::other(format!("echo frame of {} bytes is too long", hl + len)));
                }
                if c.rlen >= hl + len {
                    break hl + len;
                }
            }
        }
        match c.tcp.read(&mut c.rbuf[c.rlen..cap]) {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            Ok(n) => c.rlen += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    };
    if !c.busy || c.rlen != frame_len {
        return Err(io::Error::other("unsolicited data from the server"));
    }
    let b0 = c.rbuf[0];
    if b0 & 0xbf != 0x81 {
        return Err(io::Error::other(format!("unexpected echo header byte {b0:02x} (want a final text frame)")));
    }
    let compressed = b0 & 0x40 != 0;
    let hl = match c.rbuf[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let expected = &frames.payloads[c.variant];
    let must_inflate = compressed && agreed.server_context_takeover;
    let check = c.echoes.is_multiple_of(VERIFY_EVERY);
    let mut stats = EchoStats { wire: frame_len, payload: frame_len - hl, compressed, ..EchoStats::default() };
    if must_inflate || check {
        if compressed {
            let t = Instant::now();
            // Invariant: `inflater` is set in deflate mode.
            let z = c.inflater.as_mut().expect("deflate mode");
            if !agreed.server_context_takeover {
                z.reset(false);
            }
            c.rbuf[frame_len..frame_len + 4].copy_from_slice(&[0, 0, 0xff, 0xff]);
            let input = &c.rbuf[hl..frame_len + 4];
            let (in0, out0) = (z.total_in(), z.total_out());
            let st = z.decompress(input, scratch, FlushDecompress::Sync);
            let used = (z.total_in() - in0) as usize;
            let made = (z.total_out() - out0) as usize;
            if st.is_err() || used != input.len() || scratch[..made] != expected[..] {
                return Err(io::Error::other(format!(
                    "echo does not inflate to the payload sent ({st:?}, {used}/{} in, {made} out)",
                    input.len()
                )));
            }
            stats.inflated = true;
            stats.inflate_time = t.elapsed();
        } else if c.rbuf[hl..frame_len] != expected[..] {
            return Err(io::Error::other("echoed payload differs"));
        }
    }
    c.last = stats;
    c.echoes += 1;
    c.busy = false;
    Ok(true)
}

fn fail(c: &mut Conn, epoll: &Epoll, errors: &mut u64, e: io::Error) {
    if *errors < 5 {
        eprintln!("loadgen: connection error: {e}");
    }
    *errors += 1;
    c.alive = false;
    let _ = epoll.delete(c.tcp.as_raw_fd());
}

/// Send a masked close frame (1000) on every live connection and wait, within
/// `CLOSE_BUDGET` overall, for each server to answer and close.
fn close_all(conns: &mut [Conn], epoll: &Epoll) {
    let deadline = Instant::now() + CLOSE_BUDGET;
    let code = 1000u16.to_be_bytes();
    let close = [0x88, 0x82, MASK[0], MASK[1], MASK[2], MASK[3], code[0] ^ MASK[0], code[1] ^ MASK[1]];
    for c in conns.iter_mut().filter(|c| c.alive) {
        let _ = epoll.delete(c.tcp.as_raw_fd());
        let _ = c.tcp.set_nonblocking(false);
        if c.busy || c.tcp.write_all(&close).is_err() {
            continue;
        }
        let mut sink = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || c.tcp.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match c.tcp.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn report(
    opts: &Options,
    hist: &Histogram<u64>,
    messages: u64,
    errors: u64,
    start: &Snapshot,
    end: &Snapshot,
    deflate: Option<(&DeflateTotals, Agreed)>,
) {
    // Invariant: both snapshots are taken with a time.
    let secs = end.at.expect("time").duration_since(start.at.expect("time")).as_secs_f64();
    let rate = messages as f64 / secs;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let self_cpu = (end.self_cpu - start.self_cpu).as_secs_f64();
    let server_cpu = match (start.server_cpu, end.server_cpu) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
        _ => None,
    };
    // Other processes' CPU over the window, in cores: task time machine-wide minus ours and
    // the server's (only meaningful with --server-pid).
    let (others, softirq) = match (start.machine, end.machine) {
        (Some(a), Some(b)) => {
            let task = b.0.saturating_sub(a.0).as_secs_f64();
            let others = server_cpu.map(|srv| ((task - srv - self_cpu) / secs).max(0.0));
            (others, Some(b.1.saturating_sub(a.1).as_secs_f64() / secs))
        }
        _ => (None, None),
    };
    let opt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.4}"));
    // Deflate mode: bytes per message each way, frame and compressed payload, and the ratios
    // to the payload size (wire / payload).
    let deflate = match deflate {
        None => String::new(),
        Some((t, agreed)) => {
            let m = messages.max(1) as f64;
            let s = opts.size as f64;
            format!(
                ",\"deflate\":true,\"server_context_takeover\":{},\"up_wire_bytes_per_msg\":{:.1},\
                 \"up_payload_bytes_per_msg\":{:.1},\"down_wire_bytes_per_msg\":{:.1},\"down_payload_bytes_per_msg\":{:.1},\
                 \"up_ratio\":{:.4},\"down_ratio\":{:.4},\"up_frame_ratio\":{:.4},\"down_frame_ratio\":{:.4},\
                 \"compressed_echoes\":{},\"inflated_echoes\":{},\"inflate_cpu_s\":{:.4},\"inflate_share_of_loadgen\":{:.4}",
                agreed.server_context_takeover,
                t.up_wire as f64 / m,
                t.up_payload as f64 / m,
                t.down_wire as f64 / m,
                t.down_payload as f64 / m,
                t.up_payload as f64 / m / s,
                t.down_payload as f64 / m / s,
                t.up_wire as f64 / m / s,
                t.down_wire as f64 / m / s,
                t.compressed,
                t.inflated,
                t.inflate_time.as_secs_f64(),
                if self_cpu > 0.0 { t.inflate_time.as_secs_f64() / self_cpu } else { 0.0 },
            )
        }
    };
    println!(
        "{{\"label\":\"{}\",\"connections\":{},\"size\":{},\"seconds\":{:.3},\"messages\":{},\"errors\":{},\
         \"msgs_per_s\":{:.1},\"mb_per_s\":{:.3},\
         \"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\
         \"loadgen_cpu_s\":{:.4},\"loadgen_cpu_share\":{:.4},\"server_cpu_s\":{},\"server_cpu_us_per_msg\":{},\
         \"other_cpu_share\":{},\"softirq_share\":{}{}}}",
        opts.label.replace(['"', '\\'], ""),
        opts.connections,
        opts.size,
        secs,
        messages,
        errors,
        rate,
        rate * opts.size as f64 / 1e6,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0,
        hist.mean() / 1000.0,
        self_cpu,
        self_cpu / secs,
        opt(server_cpu),
        opt(server_cpu.filter(|_| messages > 0).map(|s| s * 1e6 / messages as f64)),
        opt(others),
        opt(softirq),
        deflate,
    );
}
