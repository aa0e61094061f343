//! `wsx bench`: a load generator for echo servers, on the wsx client.
//!
//! Each connection is one task that keeps `--pipeline` messages in flight: it queues them with
//! `feed`, writes them with one `flush`, then reads every echo that has already arrived before
//! topping the pipeline up again, so a burst costs one write and one read. With `--rate` it
//! sends on a schedule instead (open loop) and never waits for echoes before sending. With
//! `--fanout N` it measures a topic instead of an echo ([`fanout`]).

mod fanout;

use std::{
    collections::VecDeque,
    io::IsTerminal,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::Semaphore,
    task::JoinSet,
    time::{Instant, sleep_until},
};
use wsx::{ClientBuilder, CloseCode, Config, DeflateConfig, Message, WebSocket};

use crate::parse;

/// Load-test a WebSocket echo server and report messages/s, MB/s and latency percentiles.
///
/// Each connection keeps --pipeline messages in flight and waits for their echoes (closed
/// loop), or sends at a fixed total --rate (open loop, for latency). Latency is measured from
/// the write of a message to the arrival of its whole echo.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wsx bench ws://127.0.0.1:9001 --connections 100 --size 20 --duration 5\n  wsx bench ws://127.0.0.1:9001 --rate 10000 --json\n  wsx bench ws://127.0.0.1:8080/room/bench --fanout 1000 --connections 1 --pipeline 16   # against wsx serve --rooms\n\nExit codes: 0 on success, 1 if a connection failed or an echo was wrong, 2 on bad arguments."
)]
pub(crate) struct Args {
    /// ws:// or wss:// URL of an echo server.
    url: String,
    /// Connections to open.
    #[arg(long, short, default_value_t = 10)]
    connections: usize,
    /// Payload size of each message (e.g. 20, 1KiB, 64KiB).
    #[arg(long, short, value_name = "SIZE", default_value = "20", value_parser = parse::size)]
    size: usize,
    /// How long to measure (e.g. 5s, 1m).
    #[arg(long, short, value_name = "DURATION", default_value = "5s", value_parser = parse::duration)]
    duration: Duration,
    /// Run this long before measuring.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse::duration)]
    warmup: Duration,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pipeline: u32,
    /// Send at this fixed total rate (messages/s over all connections) instead of as fast as possible.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// Send text messages.
    #[arg(long, conflicts_with = "binary")]
    text: bool,
    /// Send binary messages (the default).
    #[arg(long)]
    binary: bool,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
    /// Trust the certificates in this PEM file for wss://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not check the server's certificate (testing only).
    #[arg(long, short = 'k')]
    insecure: bool,
    /// Also report this process's CPU use over the measured window (e.g. the server's PID).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Worker threads (1 = a current-thread runtime, which is usually fastest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) threads: u32,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Measure fan-out instead of echo: open N more connections that only listen, to a room
    /// or broadcast server (`wsx serve --rooms`, `--broadcast`); the --connections publish
    /// (each keeping --pipeline of its own messages in flight, paced by their arrival back at
    /// it), and every connection counts deliveries, latency, lost and reordered messages.
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    fanout: Option<usize>,
}

/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;

/// Messages a connection may have in flight in `--rate` mode before it skips sends.
const MAX_RATE_IN_FLIGHT: usize = 10_000;

/// How long, after the run, connections wait for the last echoes and the closing handshake.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Latencies recorded, in nanoseconds: 1 ns to 60 s at 3 significant digits.
const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// The largest `--size` accepted.
const MAX_SIZE: usize = 256 << 20;

/// What one connection measured.
struct Stats {
    latency: Histogram<u64>,
    messages: u64,
    skipped: u64,
}

/// The run's schedule and what every connection needs to know.
#[derive(Clone)]
struct Plan {
    payload: Message,
    size: usize,
    pipeline: usize,
    /// Time between sends on one connection, for `--rate`.
    interval: Option<Duration>,
    measure_from: Instant,
    end: Instant,
    received: Arc<AtomicU64>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(listeners) = args.fanout {
        return fanout::run(&args, listeners).await;
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.size > MAX_SIZE {
        bail!("--size must be at most {} MiB", MAX_SIZE >> 20);
    }
    if args.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    let interval = match args.rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => bail!("--rate must be a positive number"),
        Some(rate) => {
            Some(Duration::try_from_secs_f64(args.connections as f64 / rate).context("--rate is out of range")?.max(
                // Below a nanosecond per send the schedule means "as fast as possible" anyway.
                Duration::from_nanos(1),
            ))
        }
        None => None,
    };
    let config = Config::default()
        .deflate(args.deflate.then(DeflateConfig::default))
        .max_message_size(args.size.max(64 << 20))
        .max_frame_size(args.size.max(16 << 20))
        // Room for a whole pipeline of echoes, so that one read usually takes them all.
        .read_buffer_size((args.size + 14).saturating_mul(args.pipeline as usize).clamp(8 << 10, 4 << 20));
    let builder = client(&args, config);
    let sockets = connect_all(&builder, &args.url, args.connections).await?;
    let payload = payload(args.size, args.text);
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let plan = Plan {
        payload,
        size: args.size,
        pipeline: args.pipeline as usize,
        interval,
        measure_from,
        end: measure_from + args.duration,
        received: Arc::new(AtomicU64::new(0)),
    };
    let progress = progress_bar(&plan, start, args.json);
    let meter = tokio::spawn(meter(plan.clone(), args.server_pid));
    let mut tasks = JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let plan = plan.clone();
        // Spread the scheduled sends of the connections over one interval.
        let offset = interval.map(|d| d.mul_f64(i as f64 / args.connections as f64)).unwrap_or_default();
        tasks.spawn(async move { drive(ws, &plan, start + offset).await });
    }
    let mut total = Stats { latency: new_histogram(), messages: 0, skipped: 0 };
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stats)) => {
                // Same bounds on both sides: cannot fail.
                let _ = total.latency.add(&stats.latency);
                total.messages += stats.messages;
                total.skipped += stats.skipped;
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("connection task failed: {e}")),
        }
    }
    let cpu = meter.await.unwrap_or_default();
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    report(&args, &total, &cpu, &errors);
    if let Some(first) = errors.first() {
        bail!("{} of {} connections failed; first: {first}", errors.len(), args.connections);
    }
    if total.messages == 0 {
        bail!("no echo arrived during the measured window");
    }
    Ok(())
}

/// The client the connections are made with.
fn client(args: &Args, config: Config) -> ClientBuilder {
    let mut builder = ClientBuilder::new(&args.url).config(config);
    if let Some(ca) = &args.ca {
        builder = builder.root_certificates_pem_file(ca);
    }
    if args.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
}

/// Open `n` connections, a few at a time; fail on the first that cannot connect.
async fn connect_all(
    builder: &ClientBuilder,
    url: &str,
    n: usize,
) -> anyhow::Result<Vec<WebSocket<wsx::MaybeTlsStream<tokio::net::TcpStream>>>> {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let builder = builder.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            builder.connect().await.map(|(ws, _)| (i, ws))
        });
    }
    let mut sockets = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        match joined.context("connect task failed")? {
            Ok((_, ws)) => sockets.push(ws),
            Err(e) => {
                let hint = match e.http_status() {
                    Some(status) => format!(" (HTTP {status})"),
                    None => String::new(),
                };
                bail!("cannot connect to {url}: {e}{hint}");
            }
        }
    }
    Ok(sockets)
}

/// The message every connection sends: printable ASCII for text, pseudo-random bytes for binary.
fn payload(size: usize, text: bool) -> Message {
    if text {
        let pattern = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let s: String = pattern.iter().cycle().take(size).map(|&b| b as char).collect();
        Message::text(s)
    } else {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Message::binary(bytes)
    }
}

fn new_histogram() -> Histogram<u64> {
    // Valid constant bounds: cannot fail.
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

/// Run one connection until the end of the plan, then drain and close it.
async fn drive<S>(mut ws: WebSocket<S>, plan: &Plan, first_send: Instant) -> Result<Stats, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stats = Stats { latency: new_histogram(), messages: 0, skipped: 0 };
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(plan.pipeline.min(MAX_RATE_IN_FLIGHT));
    let end = sleep_until(plan.end);
    tokio::pin!(end);
    let result = match plan.interval {
        None => closed_loop(&mut ws, plan, &mut stats, &mut in_flight, end.as_mut()).await,
        Some(interval) => {
            open_loop(&mut ws, plan, &mut stats, &mut in_flight, end.as_mut(), first_send, interval).await
        }
    };
    result.map_err(|e| format!("connection failed: {e}"))?;
    // Not measured: collect the last echoes, then close.
    let finish = async {
        while !in_flight.is_empty() {
            match ws.recv().await {
                Ok(Some(m)) if m.is_data() => {
                    in_flight.pop_front();
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let _ = ws.close(CloseCode::NORMAL, "").await;
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, finish).await;
    Ok(stats)
}

/// As fast as possible with `pipeline` messages in flight.
async fn closed_loop<S>(
    ws: &mut WebSocket<S>,
    plan: &Plan,
    stats: &mut Stats,
    in_flight: &mut VecDeque<Instant>,
    mut end: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if in_flight.len() < plan.pipeline {
            let now = Instant::now();
            while in_flight.len() < plan.pipeline {
                ws.feed(plan.payload.clone()).await.map_err(|e| e.to_string())?;
                in_flight.push_back(now);
            }
            ws.flush().await.map_err(|e| e.to_string())?;
        }
        tokio::select! {
            biased;
            received = ws.recv() => on_echoes(ws, received, plan, stats, in_flight).await?,
            () = &mut end => return Ok(()),
        }
    }
}

/// At a fixed rate on a schedule, whatever the echoes do.
async fn open_loop<S>(
    ws: &mut WebSocket<S>,
    plan: &Plan,
    stats: &mut Stats,
    in_flight: &mut VecDeque<Instant>,
    mut end: std::pin::Pin<&mut tokio::time::Sleep>,
    first_send: Instant,
    interval: Duration,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = first_send;
    let tick = sleep_until(next);
    tokio::pin!(tick);
    loop {
        tokio::select! {
            biased;
            () = &mut end => return Ok(()),
            received = ws.recv() => on_echoes(ws, received, plan, stats, in_flight).await?,
            () = &mut tick => {
                let now = Instant::now();
                let mut sent = false;
                while next <= now {
                    if in_flight.len() < MAX_RATE_IN_FLIGHT {
                        ws.feed(plan.payload.clone()).await.map_err(|e| e.to_string())?;
                        in_flight.push_back(Instant::now());
                        sent = true;
                    } else if now >= plan.measure_from {
                        stats.skipped += 1;
                    }
                    next += interval;
                }
                if sent {
                    ws.flush().await.map_err(|e| e.to_string())?;
                }
                tick.as_mut().reset(next);
            }
        }
    }
}

/// Handle `received` and every echo that arrived with it (already read: no waiting). They
/// share one arrival time.
async fn on_echoes<S>(
    ws: &mut WebSocket<S>,
    received: wsx::Result<Option<Message>>,
    plan: &Plan,
    stats: &mut Stats,
    in_flight: &mut VecDeque<Instant>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let now = Instant::now();
    let before = in_flight.len();
    on_echo(received, plan, stats, in_flight, now)?;
    while ws.has_pending_messages() {
        on_echo(ws.recv().await, plan, stats, in_flight, now)?;
    }
    plan.received.fetch_add((before - in_flight.len()) as u64, Ordering::Relaxed);
    Ok(())
}

/// Check an echo and record its latency (inside the measured window).
fn on_echo(
    received: wsx::Result<Option<Message>>,
    plan: &Plan,
    stats: &mut Stats,
    in_flight: &mut VecDeque<Instant>,
    now: Instant,
) -> Result<(), String> {
    let message = match received {
        Ok(Some(message)) => message,
        Ok(None) => return Err("the server closed the connection".to_owned()),
        Err(e) => return Err(e.to_string()),
    };
    let ok = match (&message, &plan.payload) {
        (Message::Text(_), Message::Text(_)) | (Message::Binary(_), Message::Binary(_)) => message.len() == plan.size,
        (Message::Ping(_) | Message::Pong(_), _) => return Ok(()),
        (Message::Close(frame), _) => {
            let why = frame.as_ref().map(|f| format!(" ({f})")).unwrap_or_default();
            return Err(format!("the server closed the connection{why}"));
        }
        _ => false,
    };
    if !ok {
        return Err(format!("unexpected echo: {} bytes, expected {} in the same type", message.len(), plan.size));
    }
    let Some(sent) = in_flight.pop_front() else {
        return Err("an echo arrived for a message never sent".to_owned());
    };
    if now >= plan.measure_from && now < plan.end {
        let ns = now.duration_since(sent).as_nanos().min(u128::from(LATENCY_MAX_NS)) as u64;
        stats.latency.saturating_record(ns.max(1));
        stats.messages += 1;
    }
    Ok(())
}

/// CPU time over the measured window.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    /// This process: user + system seconds.
    own: f64,
    /// The `--server-pid` process, if given and readable.
    server: Option<f64>,
    wall: f64,
}

/// Snapshot CPU times at the start and the end of the measured window.
async fn meter(plan: Plan, server_pid: Option<u32>) -> Cpu {
    sleep_until(plan.measure_from).await;
    let (own0, server0, t0) = (own_cpu(), server_pid.and_then(process_cpu), Instant::now());
    sleep_until(plan.end).await;
    let (own1, server1, t1) = (own_cpu(), server_pid.and_then(process_cpu), Instant::now());
    Cpu {
        own: own1 - own0,
        server: server0.zip(server1).map(|(a, b)| b - a),
        wall: t1.duration_since(t0).as_secs_f64(),
    }
}

/// This process's user + system CPU seconds (`getrusage`).
fn own_cpu() -> f64 {
    // SAFETY: `rusage` is plain old data, so all-zero is a valid value; `getrusage` only
    // writes into the struct we pass, which lives for the whole call.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let seconds = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Another process's user + system CPU seconds, from `/proc/PID/stat` (Linux).
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): state is field 3,
    // utime field 14 and stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: `sysconf` only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// A progress bar on stderr (hidden when stderr is not a terminal), updated by a task.
fn progress_bar(plan: &Plan, start: Instant, json: bool) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || json && !std::io::stderr().is_terminal() {
        return None;
    }
    let total = plan.end.duration_since(start).as_millis() as u64;
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed:>3}/{duration} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let (handle, plan) = (bar.clone(), plan.clone());
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while Instant::now() < plan.end {
            tick.tick().await;
            let now = Instant::now();
            let count = plan.received.load(Ordering::Relaxed);
            let rate = (count - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, count);
            let phase = if now < plan.measure_from { "warming up" } else { "measuring" };
            handle.set_position(now.duration_since(start).as_millis() as u64);
            handle.set_message(format!("{phase}: {rate:.0} msg/s"));
        }
    });
    Some(bar)
}

fn report(args: &Args, total: &Stats, cpu: &Cpu, errors: &[String]) {
    let seconds = args.duration.as_secs_f64();
    let rate = total.messages as f64 / seconds;
    let mb = total.messages as f64 * args.size as f64 / 1e6 / seconds;
    let h = &total.latency;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let (p50, p90, p99, p999, max) = (us(0.5), us(0.9), us(0.99), us(0.999), h.max() as f64 / 1e3);
    let own_share = if cpu.wall > 0.0 { cpu.own / cpu.wall } else { 0.0 };
    let server_share = cpu.server.map(|s| if cpu.wall > 0.0 { s / cpu.wall } else { 0.0 });
    if args.json {
        let out = json!({
            "url": args.url,
            "connections": args.connections,
            "size": args.size,
            "type": if args.text { "text" } else { "binary" },
            "pipeline": args.pipeline,
            "rate": args.rate,
            "deflate": args.deflate,
            "warmup_s": args.warmup.as_secs_f64(),
            "duration_s": seconds,
            "messages": total.messages,
            "msgs_per_s": rate,
            "mb_per_s": mb,
            "latency_us": {"p50": p50, "p90": p90, "p99": p99, "p99_9": p999, "max": max, "mean": h.mean() / 1e3},
            "bench_cpu_share": own_share,
            "server_cpu_share": server_share,
            "skipped_sends": total.skipped,
            "errors": errors.len(),
        });
        println!("{out}");
        return;
    }
    let kind = if args.text { "text" } else { "binary" };
    let mode = match args.rate {
        Some(r) => format!("rate {r} msg/s"),
        None => format!("pipeline {}", args.pipeline),
    };
    println!(
        "{}: {} connections, {} B {kind}, {mode}, {:.1} s (+{:.1} s warm-up)",
        args.url,
        args.connections,
        args.size,
        seconds,
        args.warmup.as_secs_f64()
    );
    println!("  messages    {:>12}  ({rate:.0} msg/s)", total.messages);
    println!("  throughput  {mb:>12.2} MB/s each way");
    println!("  latency us  p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}");
    match server_share {
        Some(s) => println!("  cpu         bench {:.0}% of a core, server {:.0}%", own_share * 100.0, s * 100.0),
        None => println!("  cpu         bench {:.0}% of a core", own_share * 100.0),
    }
    if total.skipped > 0 {
        println!("  skipped     {} sends (over {MAX_RATE_IN_FLIGHT} in flight on a connection)", total.skipped);
    }
    if !errors.is_empty() {
        println!("  errors      {}", errors.len());
    }
}
