//! Scale-out latency: what delivery through Redis adds to a publish, against delivery on one
//! node, at a steady rate.
//!
//! ```text
//! scaleout [--rate 10000] [--size 1024] [--warmup 1] [--duration 5] [--subscribers 1]
//!          [--modes local,at-most-once,resumable] [--redis-server PATH]
//! ```
//!
//! Starts a `redis-server` of its own on a free loopback port (no persistence), then for each
//! mode: a publishing hub A and a subscribing hub B (the same hub for `local`), `--subscribers`
//! WebSocket clients connected over loopback TCP to a `wsx::Server` whose connections subscribe
//! to topic `bench` of hub B, and a publisher on hub A sending `--size`-byte binary messages at
//! `--rate` per second (in bursts of one millisecond's worth), each carrying its sequence number
//! and send time. Every client checks the sequence (a gap is a lost message, a step back a
//! reordered one) and records the latency from the send time to the read that returned it.
//! Prints a Markdown table: deliveries, lost, reordered, latency p50/p99/p99.9/max in µs, and
//! the p99 each mode adds to `local`'s.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use wsx::{
    ClientBuilder, Message, Server,
    pubsub::{
        Hub, Prepared,
        redis::{RedisBroker, RedisConfig},
    },
};

struct Args {
    rate: u64,
    size: usize,
    warmup: f64,
    duration: f64,
    subscribers: usize,
    modes: Vec<String>,
    redis_server: String,
}

fn args() -> Args {
    let mut a = Args {
        rate: 10_000,
        size: 1024,
        warmup: 1.0,
        duration: 5.0,
        subscribers: 1,
        modes: vec!["local".into(), "at-most-once".into(), "resumable".into()],
        redis_server: std::env::var("WSX_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rate" => a.rate = value.parse().expect("--rate N"),
            "--size" => a.size = value.parse().expect("--size BYTES"),
            "--warmup" => a.warmup = value.parse().expect("--warmup SECONDS"),
            "--duration" => a.duration = value.parse().expect("--duration SECONDS"),
            "--subscribers" => a.subscribers = value.parse().expect("--subscribers N"),
            "--modes" => a.modes = value.split(',').map(str::to_owned).collect(),
            "--redis-server" => a.redis_server = value,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.size >= 16, "--size must be at least 16 (sequence and send time)");
    a
}

/// A `redis-server` on a free port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(path: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(path)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
        // Owned at once, so that it is killed and waited for on every path (`Drop`).
        let redis = Self { child, port };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One mode's results.
struct Outcome {
    mode: String,
    deliveries: u64,
    lost: u64,
    reordered: u64,
    latency: Histogram<u64>,
    /// Redis's own time per command (`INFO commandstats`).
    redis: Vec<(String, u64, f64)>,
}

async fn hubs(mode: &str, redis: &Redis) -> (Hub, Hub) {
    let broker = |config: RedisConfig| async move { RedisBroker::with(config).await.expect("connect to redis") };
    let config = || {
        let c = RedisConfig::new(redis.url()).max_backlog(256 << 20);
        if mode == "resumable" { c.history(10_000, Duration::from_secs(60)) } else { c }
    };
    match mode {
        "local" => {
            let hub = Hub::new();
            (hub.clone(), hub)
        }
        "at-most-once" | "resumable" => {
            let a = Hub::builder().broker(broker(config()).await).build();
            let b = Hub::builder().broker(broker(config()).await).max_queued_bytes(64 << 20).build();
            (a, b)
        }
        other => panic!("unknown mode {other}"),
    }
}

/// `INFO commandstats` of `redis`: (command, calls, µs per call) for the commands a broker
/// sends per publish.
async fn redis_cost(redis: &Redis, reset: bool) -> Vec<(String, u64, f64)> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    if reset {
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.unwrap();
        return Vec::new();
    }
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            if !["publish", "evalsha"].contains(&name) {
                return None;
            }
            let field = |key: &str| fields.split(',').find_map(|f| f.strip_prefix(key)).map(str::to_owned);
            Some((name.to_owned(), field("calls=")?.parse().ok()?, field("usec_per_call=")?.parse().ok()?))
        })
        .collect()
}

async fn run(mode: &str, args: &Args, redis: &Redis) -> Outcome {
    redis_cost(redis, true).await;
    let (publisher, subscribers) = hubs(mode, redis).await;
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let hub = subscribers.clone();
    let serving = tokio::spawn(server.serve(move |mut ws, _| {
        let hub = hub.clone();
        async move {
            ws.subscribe(&hub, "bench").expect("subscribe");
            while ws.recv().await?.is_some() {}
            Ok(())
        }
    }));
    let start = Instant::now();
    let measuring = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..args.subscribers {
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/")).connect().await.expect("connect");
        let measuring = measuring.clone();
        clients.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let (mut next, mut deliveries, mut lost, mut reordered) = (0u64, 0u64, 0u64, 0u64);
            while let Ok(Ok(Some(message))) = tokio::time::timeout(Duration::from_secs(3), ws.recv()).await {
                let Message::Binary(data) = message else { continue };
                let seq = u64::from_le_bytes(data[0..8].try_into().unwrap());
                let sent = u64::from_le_bytes(data[8..16].try_into().unwrap());
                if seq == u64::MAX {
                    break;
                }
                match seq.cmp(&next) {
                    std::cmp::Ordering::Less => reordered += 1,
                    std::cmp::Ordering::Greater => lost += seq - next,
                    std::cmp::Ordering::Equal => {}
                }
                next = next.max(seq + 1);
                deliveries += 1;
                if measuring.load(Ordering::Relaxed) {
                    let now = start.elapsed().as_nanos() as u64;
                    latency.saturating_record((now.saturating_sub(sent) / 1000).max(1));
                }
            }
            (deliveries, lost, reordered, latency, next)
        }));
    }
    // Every subscription in place (on B and, through it, on Redis) before publishing.
    wait_until_subscribed(&subscribers, args.subscribers).await;
    let per_tick = (args.rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq = 0u64;
    let mut payload = vec![0u8; args.size];
    let warmup_end = Duration::from_secs_f64(args.warmup);
    let end = warmup_end + Duration::from_secs_f64(args.duration);
    let began = start.elapsed();
    let mut refused = 0u64;
    loop {
        tick.tick().await;
        let t = start.elapsed() - began;
        if t >= end {
            break;
        }
        measuring.store(t >= warmup_end, Ordering::Relaxed);
        for _ in 0..per_tick {
            payload[0..8].copy_from_slice(&seq.to_le_bytes());
            payload[8..16].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_le_bytes());
            let report = publisher.publish("bench", Prepared::binary(payload.clone()));
            if mode != "local" && !report.forwarded {
                refused += 1;
            }
            seq += 1;
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let mut end_marker = vec![0u8; 16];
    end_marker[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    publisher.publish("bench", Prepared::binary(end_marker));
    let mut outcome = Outcome {
        mode: mode.to_owned(),
        deliveries: 0,
        lost: refused,
        reordered: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        redis: Vec::new(),
    };
    for client in clients {
        let (deliveries, lost, reordered, latency, next) = client.await.unwrap();
        outcome.deliveries += deliveries;
        outcome.lost += lost + seq.saturating_sub(next);
        outcome.reordered += reordered;
        outcome.latency.add(&latency).unwrap();
    }
    serving.abort();
    outcome.redis = redis_cost(redis, false).await;
    outcome
}

/// Wait until the `n` clients are subscribed on `subscribers`, and its broker on Redis.
async fn wait_until_subscribed(subscribers: &Hub, n: usize) {
    for _ in 0..500 {
        if subscribers.subscriber_count("bench") == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(subscribers.subscriber_count("bench"), n, "clients subscribed");
    // The broker subscribes to Redis a moment after the first local subscriber: give it time
    // (a message published before would be missed by design, and counted as lost here).
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let redis = Redis::start(&args.redis_server);
    println!(
        "scale-out latency: {} msg/s of {} B, {} subscriber(s), {} s warm-up + {} s measured\n",
        args.rate, args.size, args.subscribers, args.warmup, args.duration
    );
    println!(
        "| mode | deliveries | lost | reordered | p50 µs | p99 µs | p99.9 µs | max µs | p99 added | Redis µs/call |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut local_p99 = None;
    let mut failed = false;
    for mode in &args.modes {
        let o = runtime.block_on(run(mode, &args, &redis));
        let p99 = o.latency.value_at_quantile(0.99);
        if o.mode == "local" {
            local_p99 = Some(p99);
        }
        let added =
            local_p99.filter(|_| o.mode != "local").map_or("".into(), |l| format!("{} µs", p99 as i64 - l as i64));
        let cost: Vec<String> = o.redis.iter().map(|(name, calls, us)| format!("{name} {us:.2} ({calls})")).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.mode,
            o.deliveries,
            o.lost,
            o.reordered,
            o.latency.value_at_quantile(0.5),
            p99,
            o.latency.value_at_quantile(0.999),
            o.latency.max(),
            added,
            cost.join(", ")
        );
        failed |= o.lost > 0 || o.reordered > 0;
    }
    if failed {
        eprintln!("scaleout: messages were lost or reordered");
        std::process::exit(1);
    }
}
