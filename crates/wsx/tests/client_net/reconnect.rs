//! `Reconnecting`: a server killed and restarted five times, the delay policy under tokio's
//! paused clock, what is not retried, `Retry-After`, and the bounded outbox.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use tokio::{net::TcpListener, task::JoinHandle, time::Instant};
use wsx::{
    Accept, Backoff, ClientBuilder, CloseCode, Config, Jitter, Message, Proxy, Reconnecting, Reject, Server, WebSocket,
};

use crate::support::{Echo, echo, round_trip, serve_echo};

/// A short policy for tests on the real clock.
fn quick() -> Backoff {
    Backoff::new()
        .initial(Duration::from_millis(20))
        .base(Duration::from_millis(10))
        .max(Duration::from_millis(50))
        .min_uptime(Duration::from_secs(3600))
}

fn client(addr: SocketAddr) -> ClientBuilder {
    ClientBuilder::new(format!("ws://{addr}/")).proxy(Proxy::none())
}

/// An echo server that can be killed (its listener and every connection dropped at once, no
/// close frame: the client sees the TCP connection end, 1006) and restarted on the same port.
struct Killable {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Killable {
    async fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let conns = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut ws) = wsx::accept(tcp).await {
                        let _ = echo(&mut ws).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { addr, tasks }
    }

    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn server_killed_and_restarted_five_times() {
    let mut server = Killable::start("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let failed_attempts = Arc::new(AtomicU32::new(0));
    let counter = failed_attempts.clone();
    let mut connections = Reconnecting::new(client(addr)).backoff(quick()).on_retry(move |retry| {
        if retry.error.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut restart: Option<JoinHandle<Killable>> = None;
    for round in 0..6 {
        let next = tokio::time::timeout(Duration::from_secs(10), connections.next()).await;
        let mut ws = next.expect("reconnected in time").expect("the stream goes on").expect("connected");
        if let Some(restarted) = restart.take() {
            server = restarted.await.unwrap();
        }
        round_trip(&mut ws, &format!("round {round}")).await;
        if round == 5 {
            break;
        }
        server.kill();
        let end = tokio::time::timeout(Duration::from_secs(10), ws.recv()).await.expect("the end is seen");
        let code = match end {
            Err(e) => e.close_code().expect("a close code"),
            Ok(None) => ws.close_reason().expect("closed").code(),
            Ok(Some(m)) => panic!("unexpected {m:?}"),
        };
        assert_eq!(code, CloseCode::ABNORMAL, "killed, not closed");
        connections.ended_with(code);
        // Down for a while: the client's attempts meanwhile are refused and retried.
        restart = Some(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Killable::start(addr).await
        }));
    }
    let failed = failed_attempts.load(Ordering::Relaxed);
    assert!(failed >= 5, "each outage made the client retry at least once, got {failed} retries");
    server.kill();
}

/// A WebSocket over an in-memory pipe, its server end echoing in a task.
async fn in_memory() -> wsx::Result<WebSocket<tokio::io::DuplexStream>> {
    let (client_io, server_io) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        if let Ok(mut ws) = wsx::accept(server_io).await {
            let _ = echo(&mut ws).await;
        }
    });
    let request = http::Request::get("ws://memory/").body(()).unwrap();
    Ok(wsx::handshake(client_io, &request, &Config::default()).await?.0)
}

/// A connector that fails with "connection refused" while `fail` says so, recording the
/// (paused) time of every attempt.
fn scripted(
    fail: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> (Reconnecting<tokio::io::DuplexStream>, Arc<Mutex<Vec<Instant>>>) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let record = times.clone();
    let fail = Arc::new(fail);
    let connections = Reconnecting::with_connect(move || {
        let n = {
            let mut times = record.lock().unwrap();
            times.push(Instant::now());
            times.len() - 1
        };
        let fail = fail.clone();
        async move {
            if fail(n) {
                return Err(io::Error::from(io::ErrorKind::ConnectionRefused).into());
            }
            in_memory().await
        }
    });
    (connections, times)
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn delays_follow_the_policy_without_jitter() {
    let (connections, times) = scripted(|_| true);
    let mut connections = connections.backoff(Backoff::new().jitter(Jitter::None)).max_retries(9);
    let e = connections.next().await.unwrap().unwrap_err();
    assert!(e.is_io(), "{e:?}");
    assert!(connections.next().await.is_none(), "the stream ends after a failure it gave up on");
    let secs: Vec<u64> = gaps(&times.lock().unwrap()).iter().map(Duration::as_secs).collect();
    // RFC 6455 §7.2.3: up to 5 s first, then exponential, capped at 60 s.
    assert_eq!(secs, [5, 1, 2, 4, 8, 16, 32, 60, 60]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_under_each_bound_and_varies() {
    let (connections, times) = scripted(|_| true);
    let backoff = Backoff::new();
    let mut connections = connections.backoff(backoff.clone()).max_retries(40);
    assert!(connections.next().await.unwrap().is_err());
    let gaps = gaps(&times.lock().unwrap());
    assert_eq!(gaps.len(), 40);
    for (attempt, gap) in gaps.iter().enumerate() {
        assert!(*gap <= backoff.bound(attempt as u32), "attempt {attempt}: {gap:?}");
    }
    // Jitter: the capped attempts (60 s bounds) do not all wait the same.
    let capped = &gaps[8..];
    assert!(capped.iter().any(|g| *g != capped[0]), "{capped:?}");
    assert!(capped.iter().any(|g| *g < Duration::from_secs(50)), "{capped:?}");
}

#[tokio::test(start_paused = true)]
async fn backoff_resets_only_after_the_minimum_uptime() {
    // Attempts 0-2 fail, then every attempt connects.
    let (connections, times) = scripted(|n| n < 3);
    let mut connections = connections.backoff(Backoff::new().jitter(Jitter::None).min_uptime(Duration::from_secs(5)));
    let ws = connections.next().await.unwrap().unwrap();
    drop(ws); // Up for no time: the delays go on growing.
    let ws = connections.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop(ws); // Up for 6 s: start over.
    let _ws = connections.next().await.unwrap().unwrap();
    let secs: Vec<u64> = gaps(&times.lock().unwrap()).iter().map(Duration::as_secs).collect();
    // 5, 1, 2 for the failures; 4 after the short connection; 6 s up then 5 (the first delay again).
    assert_eq!(secs, [5, 1, 2, 4, 6 + 5]);
}

#[tokio::test(start_paused = true)]
async fn a_final_close_ends_the_stream_and_a_transient_one_reconnects() {
    let (connections, times) = scripted(|_| false);
    let mut connections = connections.backoff(Backoff::new().jitter(Jitter::None));
    let _ws = connections.next().await.unwrap().unwrap();
    connections.ended_with(CloseCode::RESTART);
    let _ws = connections.next().await.unwrap().unwrap();
    connections.ended_with(CloseCode::NORMAL);
    assert!(connections.next().await.is_none());
    assert_eq!(times.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn try_again_later_waits_at_least_the_floor_and_keeps_the_count() {
    let (connections, times) = scripted(|_| false);
    // Bounds 5 s, then 1 s, 20 s, 400 s …
    let backoff = Backoff::new().jitter(Jitter::None).factor(20).max(Duration::from_secs(600));
    let mut connections = connections.backoff(backoff.min_uptime(Duration::from_secs(5)));
    for code in [CloseCode::AGAIN, CloseCode::AGAIN, CloseCode::AGAIN, CloseCode::RESTART] {
        let ws = connections.next().await.unwrap().unwrap();
        // Up longer than the minimum uptime: only a 1013 keeps the delays from starting over.
        tokio::time::sleep(Duration::from_secs(6)).await;
        drop(ws);
        connections.ended_with(code);
    }
    let _ws = connections.next().await.unwrap().unwrap();
    let secs: Vec<u64> = gaps(&times.lock().unwrap()).iter().map(Duration::as_secs).collect();
    // 1013: the 10 s floor over the first delay's 5; 1013 again: the floor over attempt 1's 1 s;
    // and again: attempt 2's 20 s, since the count did not restart after 6 s up. 1012 after 6 s
    // up: the count starts over, 5 s.
    assert_eq!(secs, [6 + 10, 6 + 10, 6 + 20, 6 + 5]);
}

#[tokio::test(start_paused = true)]
async fn a_try_again_later_close_reason_can_name_the_delay() {
    // The server closes the first three connections with 1013 and these reasons; the fourth
    // one echoes.
    const REASONS: [&str; 3] = ["retry-after=30; busy", "overloaded", "retry-after=soon"];
    let times = Arc::new(Mutex::new(Vec::new()));
    let record = times.clone();
    let connections = Reconnecting::with_connect(move || {
        let n = {
            let mut times = record.lock().unwrap();
            times.push(Instant::now());
            times.len() - 1
        };
        async move {
            let (client_io, server_io) = tokio::io::duplex(4096);
            tokio::spawn(async move {
                let Ok(mut ws) = wsx::accept(server_io).await else { return };
                match REASONS.get(n) {
                    Some(reason) => {
                        let _ = ws.close(CloseCode::AGAIN, reason).await;
                    }
                    None => {
                        let _ = echo(&mut ws).await;
                    }
                }
            });
            let request = http::Request::get("ws://memory/").body(()).unwrap();
            Ok(wsx::handshake(client_io, &request, &Config::default()).await?.0)
        }
    });
    let mut connections = connections.backoff(Backoff::new().jitter(Jitter::None));
    for _ in REASONS {
        let mut ws = connections.next().await.unwrap().unwrap();
        while let Ok(Some(_)) = ws.recv().await {}
        let reason = ws.close_reason().unwrap();
        assert_eq!(reason.code(), CloseCode::AGAIN);
        connections.ended_with_reason(&reason);
    }
    let mut ws = connections.next().await.unwrap().unwrap();
    round_trip(&mut ws, "after trying again").await;
    let secs: Vec<u64> = gaps(&times.lock().unwrap()).iter().map(Duration::as_secs).collect();
    // The hint (30 s, over the first delay's 5), then the 10 s floor for a reason without a
    // usable hint (over attempts 1 and 2: 1 s, 2 s).
    assert_eq!(secs, [30, 10, 10]);
}

#[tokio::test(start_paused = true)]
async fn the_hook_runs_before_the_outbox_and_both_before_the_hand_over() {
    let (connections, _) = scripted(|_| false);
    let mut connections =
        connections.max_queued_bytes(10).on_connect(|ws| Box::pin(async move { ws.send("hello").await }));
    let outbox = connections.outbox();
    outbox.push("queued").unwrap();
    let e = outbox.push("12345").unwrap_err();
    assert!(e.is_queue_full(), "{e:?}");
    assert!(e.to_string().contains("10-byte limit"), "{e}");
    assert_eq!((outbox.len(), outbox.queued_bytes()), (1, 6));
    let mut ws = connections.next().await.unwrap().unwrap();
    assert!(outbox.is_empty() && outbox.queued_bytes() == 0);
    for expected in ["hello", "queued"] {
        assert_eq!(ws.recv().await.unwrap(), Some(Message::text(expected)));
    }
}

#[tokio::test]
async fn a_4xx_refusal_is_not_retried() {
    let seen = Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    let builder = Server::builder().on_request(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
        Err(Reject::status(StatusCode::FORBIDDEN))
    });
    let (addr, stop) = serve_echo(builder, None).await;
    let mut connections = Reconnecting::new(client(addr)).backoff(quick()).on_retry(|r| panic!("retried: {r:?}"));
    let e = connections.next().await.unwrap().unwrap_err();
    assert_eq!(e.http_status(), Some(StatusCode::FORBIDDEN));
    assert!(connections.next().await.is_none());
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    stop.shutdown();
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let seen = Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    let builder = Server::builder().on_request(move |_| {
        if count.fetch_add(1, Ordering::Relaxed) > 0 {
            return Ok(Accept::new());
        }
        let response = http::Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(http::header::RETRY_AFTER, "1")
            .body(bytes::Bytes::new())
            .unwrap();
        Err(Reject::response(response))
    });
    let (addr, stop) = serve_echo(builder, None).await;
    let delays = Arc::new(Mutex::new(Vec::new()));
    let record = delays.clone();
    let mut connections = Reconnecting::new(client(addr)).backoff(quick()).on_retry(move |r| {
        assert_eq!(r.error.and_then(|e| e.http_status()), Some(StatusCode::SERVICE_UNAVAILABLE));
        record.lock().unwrap().push(r.delay);
    });
    let started = std::time::Instant::now();
    let mut ws = connections.next().await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "waited {:?}", started.elapsed());
    assert_eq!(*delays.lock().unwrap(), [Duration::from_secs(1)], "the backoff's 20 ms gave way to Retry-After");
    round_trip(&mut ws, "after Retry-After").await;
    assert_eq!(seen.load(Ordering::Relaxed), 2);
    stop.shutdown();
}

#[tokio::test]
async fn a_real_server_going_away_is_reconnected() {
    // Graceful shutdown closes with 1001 (going away): transient.
    let echo_server = Echo::start(None).await;
    let mut connections = Reconnecting::new(client(echo_server.addr)).backoff(quick());
    let mut ws = connections.next().await.unwrap().unwrap();
    round_trip(&mut ws, "before").await;
    drop(echo_server);
    // The close frame comes as a message, then the end.
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await.unwrap() {
            Ok(Some(Message::Close(_))) => {}
            Ok(None) => break,
            other => panic!("{other:?}"),
        }
    }
    let code = ws.close_reason().unwrap().code();
    assert_eq!(code, CloseCode::AWAY);
    connections.ended_with(code);
    // The server is gone for good: retries until the limit, then the I/O error.
    let mut connections = connections.max_retries(3);
    let e = tokio::time::timeout(Duration::from_secs(10), connections.next()).await.unwrap().unwrap().unwrap_err();
    assert!(e.is_io(), "{e:?}");
}
