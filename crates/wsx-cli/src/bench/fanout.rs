//! `wsx bench --fanout N`: publishers and listeners in one room of a fan-out server.
//!
//! Messages are binary, at least 20 bytes.
//! Every message a publisher sends carries its number, its sequence number and its send time
//! (nanoseconds since the run started): `[publisher u32][sequence u64][sent u64]`, big-endian,
//! padded to `--size`. Every connection — the N listeners and the publishers, which are in the
//! room too — checks each delivery: its latency (from the publisher's write to this arrival),
//! and whether it is the next of its publisher's sequence (a gap is lost messages, a step back
//! a reordered or repeated one). A publisher keeps `--pipeline` of its own messages in flight,
//! counting one as arrived when it comes back to it: paced by delivery to one subscriber.

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::JoinSet,
    time::{Instant, sleep_until},
};
use wsx::{CloseCode, Config, DeflateConfig, Message, WebSocket};

use super::{Args, Cpu, Histogram, LATENCY_MAX_NS, connect_all, meter, new_histogram};

/// The header every published message starts with.
const HEADER: usize = 20;

/// What one connection saw.
struct Seen {
    latency: Histogram<u64>,
    deliveries: u64,
    lost: u64,
    reordered: u64,
}

/// What every connection shares.
struct Run {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    size: usize,
    publishers: usize,
}

pub(super) async fn run(args: &Args, listeners: usize) -> anyhow::Result<()> {
    if args.connections == 0 || listeners == 0 {
        bail!("--fanout needs at least 1 listener and --connections at least 1 publisher");
    }
    if args.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    if args.text {
        bail!("--fanout sends binary messages (each starts with a binary header); drop --text");
    }
    let size = args.size.max(HEADER);
    let config = Config::default()
        .deflate(args.deflate.then(DeflateConfig::default))
        .max_message_size(size.max(64 << 20))
        .max_frame_size(size.max(16 << 20));
    let builder = super::client(args, config);
    let listening = connect_all(&builder, &args.url, listeners).await?;
    let publishing = connect_all(&builder, &args.url, args.connections).await?;
    // A moment for the server to subscribe the last ones before the first message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let run = Arc::new(Run {
        start,
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
        size,
        publishers: args.connections,
    });
    let plan = super::Plan {
        payload: Message::binary(Vec::new()),
        size,
        pipeline: 1,
        interval: None,
        measure_from: run.measure_from,
        end: run.end,
        received: Arc::default(),
    };
    let meter = tokio::spawn(meter(plan, args.server_pid));
    let mut tasks = JoinSet::new();
    for ws in listening {
        let run = run.clone();
        tasks.spawn(async move { listen(ws, &run).await });
    }
    for (id, ws) in publishing.into_iter().enumerate() {
        let (run, pipeline) = (run.clone(), args.pipeline as usize);
        tasks.spawn(async move { publish(ws, &run, id as u32, pipeline).await });
    }
    let mut total = Seen { latency: new_histogram(), deliveries: 0, lost: 0, reordered: 0 };
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(seen)) => {
                // Same bounds on both sides: cannot fail.
                let _ = total.latency.add(&seen.latency);
                total.deliveries += seen.deliveries;
                total.lost += seen.lost;
                total.reordered += seen.reordered;
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("connection task failed: {e}")),
        }
    }
    let cpu = meter.await.unwrap_or_default();
    report(args, listeners, &total, &cpu, errors.len());
    if let Some(first) = errors.first() {
        bail!("{} connections failed; first: {first}", errors.len());
    }
    if total.deliveries == 0 {
        bail!("no message was delivered during the measured window");
    }
    if total.lost > 0 || total.reordered > 0 {
        bail!("{} messages lost and {} reordered", total.lost, total.reordered);
    }
    Ok(())
}

/// A listener: record deliveries until the end.
async fn listen<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>, run: &Run) -> Result<Seen, String> {
    let mut tracker = Tracker::new(run);
    let end = sleep_until(run.end);
    tokio::pin!(end);
    loop {
        tokio::select! {
            biased;
            () = &mut end => break,
            received = ws.recv() => {
                tracker.delivered(received, None)?;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(CloseCode::NORMAL, "")).await;
    Ok(tracker.seen)
}

/// A publisher: keep `pipeline` of its own messages in flight, and record every delivery.
async fn publish<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
    run: &Run,
    id: u32,
    pipeline: usize,
) -> Result<Seen, String> {
    let mut tracker = Tracker::new(run);
    let mut payload = vec![b'x'; run.size];
    let (mut sent, mut back) = (0u64, 0u64);
    let end = sleep_until(run.end);
    tokio::pin!(end);
    loop {
        if (sent - back) < pipeline as u64 {
            while (sent - back) < pipeline as u64 {
                payload[..4].copy_from_slice(&id.to_be_bytes());
                payload[4..12].copy_from_slice(&sent.to_be_bytes());
                let at = Instant::now().duration_since(run.start).as_nanos() as u64;
                payload[12..20].copy_from_slice(&at.to_be_bytes());
                ws.feed(Message::binary(payload.clone())).await.map_err(|e| e.to_string())?;
                sent += 1;
            }
            ws.flush().await.map_err(|e| e.to_string())?;
        }
        tokio::select! {
            biased;
            () = &mut end => break,
            received = ws.recv() => {
                if tracker.delivered(received, Some(id))? {
                    back += 1;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(CloseCode::NORMAL, "")).await;
    Ok(tracker.seen)
}

/// One connection's view of every publisher's sequence.
struct Tracker<'a> {
    run: &'a Run,
    next: Vec<u64>,
    seen: Seen,
}

impl<'a> Tracker<'a> {
    fn new(run: &'a Run) -> Self {
        Self {
            run,
            next: vec![0; run.publishers],
            seen: Seen { latency: new_histogram(), deliveries: 0, lost: 0, reordered: 0 },
        }
    }

    /// Check one delivery; whether it was `own`'s.
    fn delivered(&mut self, received: wsx::Result<Option<Message>>, own: Option<u32>) -> Result<bool, String> {
        let message = match received {
            Ok(Some(message)) if message.is_data() => message,
            Ok(Some(Message::Close(frame))) => {
                let why = frame.map(|f| format!(" ({f})")).unwrap_or_default();
                return Err(format!("the server closed the connection{why}"));
            }
            Ok(Some(_)) => return Ok(false),
            Ok(None) => return Err("the server closed the connection".to_owned()),
            Err(e) => return Err(e.to_string()),
        };
        let data = message.as_payload();
        if data.len() != self.run.size || data.len() < HEADER {
            return Err(format!("a delivery of {} bytes, expected {}", data.len(), self.run.size));
        }
        let field = |at: usize, len: usize| data[at..at + len].iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
        let (publisher, sequence, at) = (field(0, 4) as usize, field(4, 8), field(12, 8));
        let Some(next) = self.next.get_mut(publisher) else {
            return Err(format!("a delivery from publisher {publisher}, who does not exist"));
        };
        match sequence.cmp(next) {
            std::cmp::Ordering::Equal => *next += 1,
            std::cmp::Ordering::Greater => {
                self.seen.lost += sequence - *next;
                *next = sequence + 1;
            }
            std::cmp::Ordering::Less => self.seen.reordered += 1,
        }
        let now = Instant::now();
        if now >= self.run.measure_from && now < self.run.end {
            let ns = now.duration_since(self.run.start).as_nanos() as u64;
            self.seen.latency.saturating_record(ns.saturating_sub(at).clamp(1, LATENCY_MAX_NS));
            self.seen.deliveries += 1;
        }
        Ok(own == Some(publisher as u32))
    }
}

fn report(args: &Args, listeners: usize, total: &Seen, cpu: &Cpu, errors: usize) {
    let seconds = args.duration.as_secs_f64();
    let rate = total.deliveries as f64 / seconds;
    let h = &total.latency;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let (p50, p99, p999, max) = (us(0.5), us(0.99), us(0.999), h.max() as f64 / 1e3);
    let server_us = cpu.server.filter(|_| total.deliveries > 0).map(|s| s * 1e6 / total.deliveries as f64);
    if args.json {
        let out = json!({
            "url": args.url,
            "mode": "fanout",
            "listeners": listeners,
            "publishers": args.connections,
            "size": args.size.max(HEADER),
            "pipeline": args.pipeline,
            "deflate": args.deflate,
            "duration_s": seconds,
            "deliveries": total.deliveries,
            "deliveries_per_s": rate,
            "latency_us": {"p50": p50, "p99": p99, "p99_9": p999, "max": max},
            "lost": total.lost,
            "reordered": total.reordered,
            "server_cpu_us_per_delivery": server_us,
            "errors": errors,
        });
        println!("{out}");
        return;
    }
    println!(
        "{}: fan-out to {listeners} listeners + {} publishers, {} B, {} in flight per publisher, {seconds:.1} s",
        args.url,
        args.connections,
        args.size.max(HEADER),
        args.pipeline
    );
    println!("  deliveries  {:>12}  ({rate:.0}/s)", total.deliveries);
    println!("  latency us  p50 {p50:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}");
    println!("  lost        {:>12}  reordered {}", total.lost, total.reordered);
    if let Some(us) = server_us {
        println!("  server cpu  {us:.2} us per delivery");
    }
    if errors > 0 {
        println!("  errors      {errors}");
    }
}
