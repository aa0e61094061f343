//! Fan-out load generator: publishers send sequenced, timestamped messages to a topic, and
//! subscribers check that each gets every message of every publisher, in order, and how long
//! it took.
//!
//! ```text
//! fanout --port 9001 --subscribers 100 --publishers 1 --size 20 --inflight 16 \
//!        [--pace all|one] [--warmup 1] [--duration 3] [--topic t] \
//!        [--server-pid PID] [--label NAME]
//! fanout --idle N --idle-path /sub/t --port 9001 --server-pid PID [--hold 2] [--label NAME]
//! ```
//!
//! Like `loadgen`, one thread with a raw level-triggered epoll loop and no WebSocket library:
//! the handshake is a fixed request, frames are built by hand, so the cost per delivery on
//! this side is the same for every server. The server is expected to follow the scheme of
//! `crates/wsx/examples/fanout_server.rs` and `tests-peers/node/fanout_server.js`: a
//! connection to `/sub/<topic>` subscribes, every message sent on `/pub/<topic>` is published.
//!
//! - It opens `--subscribers` connections to `/sub/<topic>`, then `--publishers` to
//!   `/pub/<topic>`, and waits until every subscriber has received a sync message (publisher 0
//!   sends one every 20 ms, at most 5 s): from then on every subscription is in place, and any
//!   message missing is a message lost.
//! - Each message is a masked binary frame of `--size` bytes (at least 20): publisher id (u32),
//!   sequence number (u64) and send time (u64 nanoseconds since the start), little-endian, then
//!   filler. Each publisher keeps at most `--inflight` K messages in flight: with `--pace all`
//!   (the default) a message is done when every subscriber has it; with `--pace one` (issue
//!   12's wording, "paced by delivery to one subscriber") when the last subscriber to connect
//!   has it. `one` bounds the queue of that subscriber only: a server that happens to serve it
//!   first (wsx's hub does: tokio runs the task woken last first) lets the others fall further
//!   behind, so `all` is the fair bound for every server. New messages are written as soon as
//!   earlier ones are done, several in one write.
//! - Every delivery is checked: the header (final binary frame, `--size` bytes), the
//!   publisher's sequence number (a gap counts as lost, a step back as reordered), and the
//!   filler of every 64th. Latency is from the publisher's send time to the read that completed
//!   the delivery (one clock reading per read), recorded for every delivery in the window.
//! - It warms up for `--warmup` s, measures `--duration` s, stops publishing, waits for what is
//!   in flight (while deliveries keep coming: until none came for 3 s, at most 15 s), and then
//!   counts every message a subscriber never got as lost.
//!   Then it sends a close frame on every connection and waits (at most 3 s) for the server to
//!   close them.
//!
//! Prints one JSON object: deliveries/s and publishes/s in the window, latency percentiles in
//! microseconds, lost and reordered counts over the whole run, errors, its own CPU share, and
//! with `--server-pid` the server's CPU time over the window, per delivery, and the CPU other
//! processes took meanwhile (`other_cpu_share`, in cores), which tells a clean run from a
//! disturbed one, and the share of the window the server's threads and this process spent
//! runnable but waiting for a CPU (`server_runq_wait_share`, `loadgen_runq_wait_share`, from
//! `/proc/PID/task/*/schedstat`): wall-clock time lost to other work.
//!
//! `--idle N` measures memory instead: the server's `VmRSS` before and after opening N
//! connections to `--idle-path` (handshake only), after `--hold` seconds; the difference per
//! connection in bytes.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use wsx_bench::{Epoll, Snapshot, arg, arg_or, open_fds, vm_rss};

/// The handshake key from RFC 6455 §1.3, and the accept value it must produce.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// A fixed masking key.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The publisher id of sync messages, which are not counted.
const SYNC: u32 = u32::MAX;
/// Bytes of the fields at the front of every payload.
const FIELDS: usize = 20;
/// After the window, messages in flight are waited for while they keep arriving: until none
/// has for `DRAIN_STALL`, and at most `DRAIN` in all.
const DRAIN_STALL: Duration = Duration::from_secs(3);
const DRAIN: Duration = Duration::from_secs(15);
/// The longest the sync phase and the closing handshakes may each take.
const SYNC_BUDGET: Duration = Duration::from_secs(5);
const CLOSE_BUDGET: Duration = Duration::from_secs(3);
/// Check the filler of every this-many-th delivery on each subscriber.
const VERIFY_EVERY: u64 = 64;
/// Bytes read at once from one subscriber.
const READ_CHUNK: usize = 256 * 1024;
/// Tokens at and above this are publishers (token - PUB_BASE), below it subscribers.
const PUB_BASE: u64 = 1 << 32;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Done when the last subscriber to connect has the message.
    One,
    /// Done when every subscriber has it.
    All,
}

struct Options {
    addr: SocketAddr,
    subscribers: usize,
    publishers: usize,
    size: usize,
    inflight: u64,
    pace: Pace,
    warmup: Duration,
    duration: Duration,
    topic: String,
    server_pid: Option<u32>,
    label: String,
    idle: usize,
    idle_path: String,
    hold: Duration,
}

struct Subscriber {
    tcp: TcpStream,
    /// The bytes of a frame not yet complete at the end of the last read.
    partial: Vec<u8>,
    /// Per publisher, the next sequence number expected.
    expected: Vec<u64>,
    synced: bool,
    deliveries: u64,
    alive: bool,
}

struct Publisher {
    tcp: TcpStream,
    /// Frames built but not yet written.
    out: Vec<u8>,
    /// Written up to here.
    out_pos: usize,
    /// The next sequence number to send.
    next: u64,
    /// Messages before this one are done (pacing).
    done: u64,
    /// `--pace all`: deliveries counted for each sequence number from `done` on.
    counts: VecDeque<u32>,
    /// Waiting for the socket to take more.
    blocked: bool,
    alive: bool,
}

#[derive(Default)]
struct Counts {
    deliveries: u64,
    published: u64,
    lost: u64,
    reordered: u64,
    errors: u64,
}

fn main() {
    let pace = match arg("pace").as_deref() {
        None | Some("all") => Pace::All,
        Some("one") => Pace::One,
        Some(other) => {
            eprintln!("fanout: --pace is one or all, not {other:?}");
            std::process::exit(2);
        }
    };
    let opts = Options {
        addr: SocketAddr::new(arg_or("host", std::net::IpAddr::from([127, 0, 0, 1])), arg_or("port", 9001u16)),
        subscribers: arg_or("subscribers", 100usize),
        publishers: arg_or("publishers", 1usize),
        size: arg_or("size", 20usize),
        inflight: arg_or("inflight", 16u64),
        pace,
        warmup: Duration::from_secs_f64(arg_or("warmup", 1.0f64)),
        duration: Duration::from_secs_f64(arg_or("duration", 3.0f64)),
        topic: arg("topic").unwrap_or_else(|| "t".to_owned()),
        server_pid: arg("server-pid").map(|p| p.parse().expect("--server-pid: a process id")),
        label: arg("label").unwrap_or_default(),
        idle: arg_or("idle", 0usize),
        idle_path: arg("idle-path").unwrap_or_else(|| "/sub/t".to_owned()),
        hold: Duration::from_secs_f64(arg_or("hold", 2.0f64)),
    };
    if opts.idle == 0 {
        if opts.size < FIELDS || opts.size > 65535 {
            eprintln!("fanout: --size must be 20 to 65535 bytes");
            std::process::exit(2);
        }
        if opts.subscribers == 0 || opts.publishers == 0 || opts.inflight == 0 {
            eprintln!("fanout: --subscribers, --publishers and --inflight must be at least 1");
            std::process::exit(2);
        }
    }
    let result = if opts.idle > 0 { run_idle(&opts) } else { run(&opts) };
    if let Err(e) = result {
        eprintln!("fanout: {e}");
        std::process::exit(1);
    }
}

/// Open a connection to `path` and complete the handshake (blocking).
fn connect(addr: SocketAddr, path: &str) -> io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())?;
    // Read the response byte by byte up to its end, so that nothing after it is consumed
    // (the server may publish right after the 101).
    let mut response = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        if response.len() > 8192 {
            return Err(io::Error::other("handshake response too long"));
        }
        tcp.read_exact(&mut byte)?;
        response.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&response);
    let accept_ok = text.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == ACCEPT)
    });
    if !text.starts_with("HTTP/1.1 101") || !accept_ok {
        return Err(io::Error::other(format!("handshake refused: {}", text.lines().next().unwrap_or(""))));
    }
    tcp.set_read_timeout(None)?;
    Ok(tcp)
}

/// The header of a server's (unmasked) or client's (masked) binary frame of `len` bytes.
fn header(len: usize, masked: bool) -> Vec<u8> {
    let m = if masked { 0x80 } else { 0 };
    let mut h = vec![0x82];
    if len < 126 {
        h.push(m | len as u8);
    } else {
        h.push(m | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    }
    h
}

/// The filler after the fields: a byte pattern that a check can recompute.
fn filler(i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(7)
}

/// The frames the publishers send: a template (header, mask key, masked filler) whose fields
/// are filled in per message.
struct Template {
    frame: Vec<u8>,
    /// Where the payload starts in `frame`.
    payload_at: usize,
}

impl Template {
    fn new(size: usize) -> Self {
        let mut frame = header(size, true);
        frame.extend_from_slice(&MASK);
        let payload_at = frame.len();
        frame.extend((0..size).map(|i| if i < FIELDS { 0 } else { filler(i) ^ MASK[i % 4] }));
        Self { frame, payload_at }
    }

    /// Append the frame of message `seq` of publisher `id`, sent at `ts` ns, to `out`.
    fn put(&self, out: &mut Vec<u8>, id: u32, seq: u64, ts: u64) {
        let at = out.len() + self.payload_at;
        out.extend_from_slice(&self.frame);
        let mut fields = [0u8; FIELDS];
        fields[..4].copy_from_slice(&id.to_le_bytes());
        fields[4..12].copy_from_slice(&seq.to_le_bytes());
        fields[12..].copy_from_slice(&ts.to_le_bytes());
        for (i, b) in fields.iter().enumerate() {
            out[at + i] = b ^ MASK[i % 4];
        }
    }
}

/// One run's state, shared by the event handlers.
struct Run<'a> {
    opts: &'a Options,
    start: Instant,
    template: Template,
    expect_header: Vec<u8>,
    subs: Vec<Subscriber>,
    pubs: Vec<Publisher>,
    epoll: Epoll,
    hist: Histogram<u64>,
    counts: Counts,
    in_window: bool,
    /// Publishing has stopped (the window is over).
    stopped: bool,
    synced: usize,
    /// Deliveries over the whole run.
    delivered_total: u64,
    scratch: Vec<u8>,
}

fn run(opts: &Options) -> io::Result<()> {
    let t = Instant::now();
    let mut subs = Vec::with_capacity(opts.subscribers);
    let sub_path = format!("/sub/{}", opts.topic);
    for _ in 0..opts.subscribers {
        let tcp = connect(opts.addr, &sub_path)?;
        subs.push(Subscriber {
            tcp,
            partial: Vec::new(),
            expected: vec![0; opts.publishers],
            synced: false,
            deliveries: 0,
            alive: true,
        });
    }
    let pub_path = format!("/pub/{}", opts.topic);
    let mut pubs = Vec::with_capacity(opts.publishers);
    for _ in 0..opts.publishers {
        pubs.push(Publisher {
            tcp: connect(opts.addr, &pub_path)?,
            out: Vec::new(),
            out_pos: 0,
            next: 0,
            done: 0,
            counts: VecDeque::new(),
            blocked: false,
            alive: true,
        });
    }
    let connect_s = t.elapsed().as_secs_f64();
    let epoll = Epoll::new()?;
    for (i, s) in subs.iter().enumerate() {
        s.tcp.set_nonblocking(true)?;
        epoll.add(s.tcp.as_raw_fd(), i as u64)?;
    }
    for (i, p) in pubs.iter().enumerate() {
        p.tcp.set_nonblocking(true)?;
        epoll.add(p.tcp.as_raw_fd(), PUB_BASE + i as u64)?;
    }
    let mut expect_header = header(opts.size, false);
    expect_header.shrink_to_fit();
    let mut run = Run {
        opts,
        start: Instant::now(),
        template: Template::new(opts.size),
        expect_header,
        subs,
        pubs,
        epoll,
        // Invariant: valid bounds (1 ns to 60 s, 3 significant digits).
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
        counts: Counts::default(),
        in_window: false,
        stopped: false,
        synced: 0,
        delivered_total: 0,
        scratch: vec![0; READ_CHUNK + opts.size + 16],
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];

    // Sync: until every subscriber has had a sync message.
    let sync_start = Instant::now();
    let mut last_sync = None::<Instant>;
    while run.synced < run.subs.len() {
        let now = Instant::now();
        if now >= sync_start + SYNC_BUDGET {
            return Err(io::Error::other(format!(
                "only {} of {} subscribers received the sync message within {SYNC_BUDGET:?}",
                run.synced,
                run.subs.len()
            )));
        }
        if last_sync.is_none_or(|t| now >= t + Duration::from_millis(20)) {
            last_sync = Some(now);
            let ts = run.now_ns();
            let p = &mut run.pubs[0];
            run.template.put(&mut p.out, SYNC, 0, ts);
            run.flush(0);
        }
        run.poll(&mut events, 5)?;
    }
    let sync_s = sync_start.elapsed().as_secs_f64();

    // Load: warm-up, window, then drain.
    let begin = Instant::now();
    let window_start_at = begin + opts.warmup;
    let window_end_at = window_start_at + opts.duration;
    let mut snap_start = Snapshot::default();
    let mut snap_end = None;
    for i in 0..run.pubs.len() {
        run.top_up(i);
    }
    let mut progress = (0u64, Instant::now());
    loop {
        let now = Instant::now();
        if !run.in_window && snap_end.is_none() && now >= window_start_at {
            run.in_window = true;
            run.hist.reset();
            run.counts.deliveries = 0;
            run.counts.published = 0;
            snap_start = Snapshot::take(now, opts.server_pid);
        }
        if run.in_window && now >= window_end_at {
            run.in_window = false;
            run.stopped = true;
            snap_end = Some(Snapshot::take(now, opts.server_pid));
        }
        if run.delivered_total != progress.0 {
            progress = (run.delivered_total, now);
        }
        if run.stopped && (run.all_delivered() || now >= progress.1 + DRAIN_STALL || now >= window_end_at + DRAIN) {
            break;
        }
        if run.subs.iter().all(|s| !s.alive) {
            break;
        }
        run.poll(&mut events, 20)?;
    }
    // Whatever a subscriber never got is lost.
    let mut tail_lost = 0;
    for s in &run.subs {
        for (p, publisher) in run.pubs.iter().enumerate() {
            tail_lost += publisher.next.saturating_sub(s.expected[p]);
        }
    }
    run.counts.lost += tail_lost;
    let end = snap_end.unwrap_or_else(|| Snapshot::take(Instant::now(), opts.server_pid));
    report(&run, &snap_start, &end, connect_s, sync_s);
    close_all(&mut run);
    Ok(())
}

impl Run<'_> {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Wait up to `timeout_ms` for events and handle them; then send what pacing allows.
    fn poll(&mut self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<()> {
        let n = self.epoll.wait(events, timeout_ms)?;
        for ev in &events[..n] {
            let token = ev.u64;
            if token >= PUB_BASE {
                let i = (token - PUB_BASE) as usize;
                if ev.events & libc::EPOLLOUT as u32 != 0 {
                    self.flush(i);
                }
                if ev.events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    self.publisher_input(i);
                }
            } else {
                self.read_subscriber(token as usize);
            }
        }
        if !self.stopped && self.synced == self.subs.len() {
            for i in 0..self.pubs.len() {
                self.top_up(i);
            }
        }
        Ok(())
    }

    /// Queue as many messages as pacing allows for publisher `i`, and write them.
    fn top_up(&mut self, i: usize) {
        let ts = self.now_ns();
        let p = &mut self.pubs[i];
        if !p.alive {
            return;
        }
        let mut queued = 0;
        while p.next < p.done + self.opts.inflight {
            self.template.put(&mut p.out, i as u32, p.next, ts);
            if self.opts.pace == Pace::All {
                p.counts.push_back(0);
            }
            p.next += 1;
            queued += 1;
        }
        if self.in_window {
            self.counts.published += queued;
        }
        if queued > 0 {
            self.flush(i);
        }
    }

    /// Write what publisher `i` has queued, as far as the socket takes it.
    fn flush(&mut self, i: usize) {
        let p = &mut self.pubs[i];
        let mut result = Ok(());
        while p.out_pos < p.out.len() {
            match p.tcp.write(&p.out[p.out_pos..]) {
                Ok(0) => {
                    result = Err(io::Error::new(io::ErrorKind::WriteZero, "publisher socket closed"));
                    break;
                }
                Ok(n) => p.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if p.out_pos == p.out.len() {
            p.out.clear();
            p.out_pos = 0;
        }
        let blocked = !p.out.is_empty();
        if result.is_ok() && blocked != p.blocked {
            p.blocked = blocked;
            result = self.epoll.modify(p.tcp.as_raw_fd(), PUB_BASE + i as u64, blocked);
        }
        if let Err(e) = result {
            self.fail_publisher(i, e);
        }
    }

    /// A publisher's socket is readable: the server sent something (it should not) or closed.
    fn publisher_input(&mut self, i: usize) {
        let mut buf = [0u8; 512];
        match self.pubs[i].tcp.read(&mut buf) {
            Ok(0) => self.fail_publisher(i, io::Error::other("server closed a publisher connection")),
            Ok(n) => {
                self.fail_publisher(i, io::Error::other(format!("unexpected {n} bytes on a publisher connection")))
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => self.fail_publisher(i, e),
        }
    }

    fn fail_publisher(&mut self, i: usize, e: io::Error) {
        if self.counts.errors < 5 {
            eprintln!("fanout: publisher {i}: {e}");
        }
        self.counts.errors += 1;
        let p = &mut self.pubs[i];
        p.alive = false;
        let _ = self.epoll.delete(p.tcp.as_raw_fd());
    }

    fn fail_subscriber(&mut self, i: usize, e: io::Error) {
        if self.counts.errors < 5 {
            eprintln!("fanout: subscriber {i}: {e}");
        }
        self.counts.errors += 1;
        let s = &mut self.subs[i];
        s.alive = false;
        let _ = self.epoll.delete(s.tcp.as_raw_fd());
    }

    /// Read what subscriber `i` has and account for every whole frame in it.
    fn read_subscriber(&mut self, i: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let outcome = self.read_subscriber_into(i, &mut scratch);
        self.scratch = scratch;
        if let Err(e) = outcome {
            self.fail_subscriber(i, e);
        }
    }

    fn read_subscriber_into(&mut self, i: usize, scratch: &mut [u8]) -> io::Result<()> {
        if !self.subs[i].alive {
            return Ok(());
        }
        let have = self.subs[i].partial.len();
        scratch[..have].copy_from_slice(&self.subs[i].partial);
        let n = loop {
            match self.subs[i].tcp.read(&mut scratch[have..have + READ_CHUNK]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed a subscriber")),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        };
        let now = self.now_ns();
        let data = &scratch[..have + n];
        let hl = self.expect_header.len();
        let frame_len = hl + self.opts.size;
        let mut at = 0;
        while data.len() - at >= 2 {
            if data[at..].len() >= hl && data[at..at + hl] == self.expect_header[..] {
                if data.len() - at < frame_len {
                    break;
                }
                self.delivered(i, &data[at + hl..at + frame_len], now)?;
                at += frame_len;
            } else if data[at] & 0x0f == 0x08 {
                let code = if data[at + 1] & 0x7f >= 2 && data.len() - at >= 4 {
                    u16::from_be_bytes([data[at + 2], data[at + 3]])
                } else {
                    0
                };
                return Err(io::Error::other(format!("server sent a close frame (code {code})")));
            } else if data[at..].len() >= hl {
                return Err(io::Error::other(format!("unexpected frame header {:02x?}", &data[at..at + hl])));
            } else {
                break;
            }
        }
        let rest = &data[at..];
        let s = &mut self.subs[i];
        s.partial.clear();
        s.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Account for one delivery to subscriber `i`.
    fn delivered(&mut self, i: usize, payload: &[u8], now: u64) -> io::Result<()> {
        let field = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(&payload[r]);
            u64::from_le_bytes(b)
        };
        let id = field(0..4) as u32;
        let seq = field(4..12);
        let ts = field(12..20);
        let s = &mut self.subs[i];
        if id == SYNC {
            if !s.synced {
                s.synced = true;
                self.synced += 1;
            }
            return Ok(());
        }
        let p = id as usize;
        if p >= self.pubs.len() {
            return Err(io::Error::other(format!("message from unknown publisher {id}")));
        }
        if s.deliveries.is_multiple_of(VERIFY_EVERY)
            && payload[FIELDS..].iter().enumerate().any(|(k, b)| *b != filler(FIELDS + k))
        {
            return Err(io::Error::other("payload differs from what was published"));
        }
        s.deliveries += 1;
        self.delivered_total += 1;
        let expected = &mut s.expected[p];
        if seq == *expected {
            *expected += 1;
        } else if seq > *expected {
            self.counts.lost += seq - *expected;
            *expected = seq + 1;
        } else {
            self.counts.reordered += 1;
        }
        if self.in_window {
            self.counts.deliveries += 1;
            let _ = self.hist.record(now.saturating_sub(ts).max(1));
        }
        let publisher = &mut self.pubs[p];
        match self.opts.pace {
            Pace::One => {
                if i == self.subs.len() - 1 && seq >= publisher.done {
                    publisher.done = seq + 1;
                }
            }
            Pace::All => {
                if seq >= publisher.done {
                    let k = (seq - publisher.done) as usize;
                    if let Some(c) = publisher.counts.get_mut(k) {
                        *c += 1;
                    }
                    let all = self.subs.len() as u32;
                    while publisher.counts.front().is_some_and(|c| *c >= all) {
                        publisher.counts.pop_front();
                        publisher.done += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every live subscriber has every message sent.
    fn all_delivered(&self) -> bool {
        self.subs.iter().filter(|s| s.alive).all(|s| s.expected.iter().zip(&self.pubs).all(|(e, p)| *e >= p.next))
    }
}

/// Send a close frame on every live connection, then wait (at most `CLOSE_BUDGET`) for the
/// server to close each.
fn close_all(run: &mut Run<'_>) {
    let code = 1000u16.to_be_bytes();
    let close = [0x88, 0x82, MASK[0], MASK[1], MASK[2], MASK[3], code[0] ^ MASK[0], code[1] ^ MASK[1]];
    let mut open: Vec<&mut TcpStream> = Vec::new();
    for s in run.subs.iter_mut().filter(|s| s.alive) {
        open.push(&mut s.tcp);
    }
    for p in run.pubs.iter_mut().filter(|p| p.alive && p.out_pos == p.out.len()) {
        open.push(&mut p.tcp);
    }
    let mut waiting = Vec::new();
    for tcp in open {
        let _ = run.epoll.delete(tcp.as_raw_fd());
        if tcp.set_nonblocking(false).is_ok() && tcp.write_all(&close).is_ok() {
            waiting.push(tcp);
        }
    }
    let deadline = Instant::now() + CLOSE_BUDGET;
    let mut sink = [0u8; 4096];
    for tcp in waiting {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match tcp.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn report(run: &Run<'_>, start: &Snapshot, end: &Snapshot, connect_s: f64, sync_s: f64) {
    let opts = run.opts;
    let secs = match (start.at, end.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let c = &run.counts;
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let us = |q: f64| run.hist.value_at_quantile(q) as f64 / 1000.0;
    let self_cpu = (end.self_cpu.saturating_sub(start.self_cpu)).as_secs_f64();
    let server_cpu = match (start.server_cpu, end.server_cpu) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
        _ => None,
    };
    let (others, softirq) = match (start.machine, end.machine) {
        (Some(a), Some(b)) if secs > 0.0 => {
            let task = b.0.saturating_sub(a.0).as_secs_f64();
            let others = server_cpu.map(|srv| ((task - srv - self_cpu) / secs).max(0.0));
            (others, Some(b.1.saturating_sub(a.1).as_secs_f64() / secs))
        }
        _ => (None, None),
    };
    // Share of the window each side spent runnable but waiting for a CPU (other work on the
    // machine): what turns a shared machine's wall-clock figures into noise.
    let wait_share = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if secs > 0.0 => Some(b.saturating_sub(a).as_secs_f64() / secs),
        _ => None,
    };
    let server_wait = wait_share(start.server_wait, end.server_wait);
    let self_wait = wait_share(start.self_wait, end.self_wait);
    let opt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.4}"));
    let total_sent: u64 = run.pubs.iter().map(|p| p.next).sum();
    let total_delivered: u64 = run.subs.iter().map(|s| s.deliveries).sum();
    println!(
        "{{\"label\":\"{}\",\"publishers\":{},\"subscribers\":{},\"size\":{},\"inflight\":{},\"pace\":\"{}\",\
         \"seconds\":{:.3},\"connect_s\":{:.3},\"sync_s\":{:.3},\"published\":{},\"deliveries\":{},\
         \"publishes_per_s\":{:.1},\"deliveries_per_s\":{:.1},\
         \"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\
         \"total_sent\":{},\"total_delivered\":{},\"lost\":{},\"reordered\":{},\"errors\":{},\
         \"loadgen_cpu_s\":{:.4},\"loadgen_cpu_share\":{:.4},\"server_cpu_s\":{},\"server_cpu_us_per_delivery\":{},\
         \"other_cpu_share\":{},\"softirq_share\":{},\"server_runq_wait_share\":{},\"loadgen_runq_wait_share\":{}}}",
        opts.label.replace(['"', '\\'], ""),
        opts.publishers,
        opts.subscribers,
        opts.size,
        opts.inflight,
        if opts.pace == Pace::One { "one" } else { "all" },
        secs,
        connect_s,
        sync_s,
        c.published,
        c.deliveries,
        per_s(c.published),
        per_s(c.deliveries),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        run.hist.max() as f64 / 1000.0,
        run.hist.mean() / 1000.0,
        total_sent,
        total_delivered,
        c.lost,
        c.reordered,
        c.errors,
        self_cpu,
        if secs > 0.0 { self_cpu / secs } else { 0.0 },
        opt(server_cpu),
        opt(server_cpu.filter(|_| c.deliveries > 0).map(|s| s * 1e6 / c.deliveries as f64)),
        opt(others),
        opt(softirq),
        opt(server_wait),
        opt(self_wait),
    );
}

/// Memory mode: the server's RSS before and after opening `--idle` connections to
/// `--idle-path`.
fn run_idle(opts: &Options) -> io::Result<()> {
    let pid = opts.server_pid.ok_or_else(|| io::Error::other("--idle needs --server-pid"))?;
    let before = vm_rss(pid).ok_or_else(|| io::Error::other("cannot read the server's VmRSS"))?;
    let fds_before = open_fds(pid);
    let t = Instant::now();
    let mut conns = Vec::with_capacity(opts.idle);
    for _ in 0..opts.idle {
        conns.push(connect(opts.addr, &opts.idle_path)?);
    }
    let connect_s = t.elapsed().as_secs_f64();
    std::thread::sleep(opts.hold);
    let after = vm_rss(pid).ok_or_else(|| io::Error::other("cannot read the server's VmRSS"))?;
    let fds_after = open_fds(pid);
    let opt = |v: Option<usize>| v.map_or("null".to_owned(), |v| v.to_string());
    println!(
        "{{\"label\":\"{}\",\"idle_connections\":{},\"idle_path\":\"{}\",\"connect_s\":{connect_s:.3},\"hold_s\":{:.1},\
         \"rss_baseline_kb\":{before},\"rss_after_kb\":{after},\"idle_bytes_per_conn\":{:.1},\
         \"server_fds_before\":{},\"server_fds_after\":{}}}",
        opts.label.replace(['"', '\\'], ""),
        opts.idle,
        opts.idle_path.replace(['"', '\\'], ""),
        opts.hold.as_secs_f64(),
        (after as f64 - before as f64) * 1024.0 / opts.idle as f64,
        opt(fds_before),
        opt(fds_after),
    );
    // Reset rather than close: thousands of sockets in TIME_WAIT per run would soon use up the
    // ephemeral ports of 127.0.0.1.
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    for c in &conns {
        // SAFETY: `linger` is a valid `struct linger` of the size passed, for the call's duration.
        unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
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
