//! Topics over in-memory pipes: delivery and order, concurrent publishers, subscriptions that
//! end while messages are published, both slow-consumer policies with their exact close and
//! counts, and what a publish allocates. (Real peers in many processes: `tests/interop/`.)

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use proptest::prelude::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex},
    task::JoinHandle,
};
use wsx::{
    CloseCode, Config, Message, WebSocket,
    proto::frame::Header,
    pubsub::{Hub, Prepared, PublishReport, SlowConsumer, SubscribeError},
};

#[global_allocator]
static ALLOCATOR: wsx_testkit::CountingAlloc = wsx_testkit::CountingAlloc;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Give up on anything that takes longer than this.
const PATIENCE: Duration = Duration::from_secs(20);

type Ws = WebSocket<DuplexStream>;

/// A connected client and server over a pipe of `capacity` bytes each way.
async fn pair(capacity: usize, server: &Config) -> (Ws, Ws) {
    let (a, b) = duplex(capacity);
    let request = http::Request::get("ws://x/").body(()).unwrap();
    let client_config = Config::default();
    let (client, server) = tokio::join!(
        wsx::handshake(a, &request, &client_config),
        wsx::accept_with(b, server, |_| Ok(wsx::Accept::new()))
    );
    (client.unwrap().0, server.unwrap())
}

/// A server connection whose peer is the raw pipe, read only when the test says.
async fn raw_peer(capacity: usize) -> (Ws, DuplexStream) {
    let (mut raw, b) = duplex(capacity);
    raw.write_all(REQUEST).await.unwrap();
    let server = wsx::accept(b).await.unwrap();
    let mut head = vec![0; 129];
    raw.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"));
    (server, raw)
}

/// Drive a server connection until it ends (as a handler's receive loop does), and give it back.
fn serve(mut server: Ws) -> JoinHandle<Ws> {
    tokio::spawn(async move {
        while let Ok(Some(_)) = server.recv().await {}
        server
    })
}

/// `n` clients whose server sides subscribe to `topic` and are driven.
async fn subscribers(hub: &Hub, topic: &str, n: usize) -> (Vec<Ws>, Vec<JoinHandle<Ws>>) {
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..n {
        let (client, mut server) = pair(1 << 16, &Config::default()).await;
        server.subscribe(hub, topic).unwrap();
        clients.push(client);
        servers.push(serve(server));
    }
    (clients, servers)
}

async fn next_text(client: &mut Ws) -> String {
    match tokio::time::timeout(PATIENCE, client.recv()).await.expect("in time").unwrap() {
        Some(Message::Text(text)) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message_in_order() {
    let hub = Hub::new();
    let (mut clients, _servers) = subscribers(&hub, "ticks", 50).await;
    assert_eq!(hub.subscriber_count("ticks"), 50);
    for i in 0..200 {
        let report = hub.publish("ticks", format!("tick {i}"));
        assert_eq!((report.delivered, report.dropped, report.closed), (50, 0, 0));
    }
    for client in &mut clients {
        for i in 0..200 {
            assert_eq!(next_text(client).await, format!("tick {i}"));
        }
    }
    assert_eq!(hub.publish("nobody", "x"), PublishReport::default(), "a topic without subscribers");
}

#[tokio::test]
async fn a_large_message_is_shared_and_arrives_whole() {
    let hub = Hub::new();
    let (mut clients, _servers) = subscribers(&hub, "files", 3).await;
    let data = wsx_testkit::Rng::new(5).bytes(300_000);
    hub.publish("files", Prepared::binary(&data));
    for client in &mut clients {
        let got = tokio::time::timeout(PATIENCE, client.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(got, Message::binary(data.clone()));
    }
}

#[tokio::test]
async fn publish_except_skips_the_sender() {
    let hub = Hub::new();
    let (mut alice, mut alice_server) = pair(1 << 16, &Config::default()).await;
    let (mut bob, mut bob_server) = pair(1 << 16, &Config::default()).await;
    let alice_id = alice_server.subscribe(&hub, "chat").unwrap();
    let bob_id = bob_server.subscribe(&hub, "chat").unwrap();
    assert_ne!(alice_id, bob_id);
    assert_eq!(alice_server.subscriber_id(), Some(alice_id));
    let (_a, _b) = (serve(alice_server), serve(bob_server));
    hub.publish_except("chat", "from alice", alice_id);
    hub.publish_except("chat", "from bob", bob_id);
    assert_eq!(next_text(&mut bob).await, "from alice");
    assert_eq!(next_text(&mut alice).await, "from bob");
}

#[tokio::test]
async fn subscriptions_are_listed_limited_and_end_with_the_connection() {
    let hub = Hub::builder().max_subscriptions(2).max_topic_len(8).build();
    let (client, mut server) = pair(1 << 16, &Config::default()).await;
    server.subscribe(&hub, "a").unwrap();
    server.subscribe(&hub, "a").unwrap();
    server.subscribe(&hub, "b").unwrap();
    assert_eq!(server.subscribe(&hub, "c"), Err(SubscribeError::TooManySubscriptions(2)));
    assert_eq!(server.subscribe(&hub, "0123456789"), Err(SubscribeError::NameTooLong { len: 10, max: 8 }));
    let other = Hub::new();
    assert_eq!(server.subscribe(&other, "a"), Err(SubscribeError::OtherHub));
    let mut names: Vec<String> = server.subscriptions().iter().map(|t| t.name().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert!(server.unsubscribe("b"));
    assert!(!server.unsubscribe("b"));
    assert_eq!((hub.subscriber_count("a"), hub.subscriber_count("b")), (1, 0));
    assert_eq!(hub.topic_count(), 1, "a topic without subscribers or handles is forgotten");
    let held = hub.topic("held").unwrap();
    assert_eq!(hub.topic_count(), 2, "a handle keeps a topic");
    drop(held);

    // The client closes; the server's receive loop ends, and with it the subscription.
    let server = serve(server);
    drop(client);
    let server = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap();
    assert_eq!(hub.subscriber_count("a"), 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_leave_while_messages_are_published() {
    let hub = Hub::new();
    let (mut clients, servers) = subscribers(&hub, "feed", 10).await;
    let leaving: Vec<Ws> = clients.drain(5..).collect();
    let publisher = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            for i in 0..2000 {
                hub.publish("feed", format!("{i}"));
                if i == 500 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    // Leave mid-stream: the pipes break under the server side while it is delivering.
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(leaving);
    for client in &mut clients {
        for i in 0..2000 {
            assert_eq!(next_text(client).await, i.to_string());
        }
    }
    publisher.join().unwrap();
    for server in servers.into_iter().skip(5) {
        tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap();
    }
    assert_eq!(hub.subscriber_count("feed"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_while_a_thread_publishes() {
    let hub = Hub::new();
    let (mut client, server) = pair(1 << 16, &Config::default()).await;
    let (reader, mut writer) = server.split();
    let _reader = tokio::spawn(async move {
        let mut reader = reader;
        while let Ok(Some(_)) = reader.recv().await {}
    });
    let stop = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (hub, stop) = (hub.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while stop.load(Ordering::Relaxed) == 0 && i < 5_000_000 {
                hub.publish("flip", i.to_string());
                i += 1;
            }
        })
    };
    for _ in 0..200 {
        writer.subscribe(&hub, "flip").unwrap();
        tokio::task::yield_now().await;
        assert!(writer.unsubscribe("flip"));
    }
    stop.store(1, Ordering::Relaxed);
    publisher.join().unwrap();
    // No publish can reach the connection now: what arrives is what was queued before, in order,
    // and then the marker sent directly.
    assert_eq!(hub.subscriber_count("flip"), 0);
    writer.send("end").await.unwrap();
    let mut last = None;
    loop {
        let text = next_text(&mut client).await;
        if text == "end" {
            break;
        }
        let n: u64 = text.parse().unwrap();
        assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
        last = Some(n);
    }
}

/// Read every frame from a raw pipe until it ends (or `limit` bytes): (opcode bits, payload).
/// Read frames from the raw pipe until one satisfies `last` (or the pipe ends).
async fn read_frames(raw: &mut DuplexStream, last: impl Fn(u8, &[u8]) -> bool) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(PATIENCE, raw.read(&mut chunk)).await.expect("in time").unwrap();
        bytes.extend_from_slice(&chunk[..n]);
        let mut frames = Vec::new();
        let mut rest = &bytes[..];
        while let Some((header, h)) = Header::decode(rest).unwrap() {
            let len = header.payload_len as usize;
            if rest.len() < h + len {
                break;
            }
            frames.push((header.opcode.bits(), rest[h..h + len].to_vec()));
            rest = &rest[h + len..];
        }
        if n == 0 || frames.last().is_some_and(|(opcode, payload)| last(*opcode, payload)) {
            return frames;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_1008_and_the_others_get_everything() {
    let limit = 64 << 10;
    let hub = Hub::builder().max_queued_bytes(limit).build();
    let (readers, _servers) = subscribers(&hub, "fast", 3).await;
    let (mut slow, mut raw) = raw_peer(4096).await;
    slow.subscribe(&hub, "fast").unwrap();
    let slow = serve(slow);
    let mut closed = 0;
    let mut delivered = 0;
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                for i in 0..500u32 {
                    let got = tokio::time::timeout(PATIENCE, client.recv()).await.unwrap().unwrap().unwrap();
                    assert_eq!(got.as_payload()[..4], i.to_be_bytes());
                }
                client
            })
        })
        .collect();
    for i in 0..500u32 {
        let mut data = vec![0u8; 1024];
        data[..4].copy_from_slice(&i.to_be_bytes());
        let report = hub.publish("fast", data);
        closed += report.closed;
        delivered += report.delivered;
        if i % 10 == 0 {
            // Let the readers' server sides keep up, as a paced feed would (10 KiB a step, far
            // under their 64 KiB even on a loaded machine).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(closed, 1, "closed once, when it went over");
    assert!(delivered >= 3 * 500 + 60, "the slow one got about {limit} bytes first: {delivered}");
    let mut readers = Vec::new();
    for reader in reading {
        readers.push(reader.await.unwrap());
    }

    // The slow peer finally reads: in-order messages up to the limit, then the close.
    let frames = read_frames(&mut raw, |opcode, _| opcode == 0x8).await;
    let (close, messages) = frames.split_last().unwrap();
    assert_eq!(close.0, 0x8);
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1008);
    assert_eq!(std::str::from_utf8(&close.1[2..]).unwrap(), "slow consumer: over 65536 bytes queued");
    for (i, (opcode, payload)) in messages.iter().enumerate() {
        assert_eq!((*opcode, &payload[..4]), (0x2, &(i as u32).to_be_bytes()[..]));
    }
    // At most the limit was queued; what the pipe took before that is not queued.
    assert!(messages.len() * 1028 <= limit + 4096 + 1028, "{} messages", messages.len());
    drop(raw);
    let slow = tokio::time::timeout(PATIENCE, slow).await.unwrap().unwrap();
    let sent = slow.close_reason().unwrap().sent.unwrap();
    assert_eq!(sent.code, CloseCode::POLICY);
    assert_eq!(hub.subscriber_count("fast"), 3, "the readers stay");
    drop(readers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_drop_policy_a_slow_consumer_misses_messages_and_is_told_how_many() {
    let limit = 32 << 10;
    let reported = Arc::new(AtomicU64::new(0));
    let hub = Hub::builder()
        .max_queued_bytes(limit)
        .slow_consumer(SlowConsumer::Drop)
        .on_drop({
            let reported = reported.clone();
            move |d| {
                reported.fetch_add(d.messages, Ordering::Relaxed);
            }
        })
        .build();
    let (slow, mut raw) = raw_peer(4096).await;
    let (reader, mut writer) = slow.split();
    writer.subscribe(&hub, "prices").unwrap();
    let _reader = tokio::spawn(async move {
        let mut reader = reader;
        while let Ok(Some(_)) = reader.recv().await {}
    });
    let total = 300u32;
    let mut dropped = 0;
    for i in 0..total {
        let mut data = vec![0u8; 1024];
        data[..4].copy_from_slice(&i.to_be_bytes());
        let report = hub.publish("prices", data);
        assert_eq!(report.closed, 0);
        dropped += report.dropped as u64;
    }
    assert!(dropped > 200, "{dropped}");
    // The peer reads now: its server side runs again, reports the drops, and stays open. A last
    // message published once the queue has room arrives after everything queued before it.
    let reading = tokio::spawn(async move {
        let frames = read_frames(&mut raw, |_, payload| payload == b"still here").await;
        (frames, raw)
    });
    let mut refused = 0;
    for _ in 0..1000 {
        let report = hub.publish("prices", "still here");
        if report.delivered == 1 {
            break;
        }
        refused += report.dropped as u64;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (seen, _raw) = reading.await.unwrap();
    let (_, messages) = seen.split_last().unwrap();
    let numbers: Vec<u32> = messages.iter().map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap())).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order, with gaps");
    assert_eq!(numbers.len() as u64 + dropped, u64::from(total), "every message delivered or counted");
    assert_eq!(writer.dropped_messages(), dropped + refused);
    assert_eq!(reported.load(Ordering::Relaxed), dropped + refused, "the callback heard of every one");
}

#[test]
fn a_publish_allocates_the_same_for_ten_and_a_thousand_subscribers() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut usage = Vec::new();
        for n in [10, 1000] {
            let hub = Hub::new();
            let topic = hub.topic("t").unwrap();
            let (mut clients, _servers) = subscribers(&hub, "t", n).await;
            // Warm up: every subscriber's queue has held a message once.
            for round in 0..2 {
                hub.publish(&topic, format!("warm-up {round}"));
                for client in &mut clients {
                    next_text(client).await;
                }
            }
            let message = "x".repeat(100);
            let (report, measured) = wsx_testkit::measure(|| hub.publish(&topic, message.as_str()));
            assert_eq!(report.delivered, n);
            usage.push(measured.allocations);
            for client in &mut clients {
                assert_eq!(next_text(client).await, message);
            }
        }
        assert_eq!(usage[0], usage[1], "allocations for 10 and 1000 subscribers");
        assert!(usage[1] <= 2, "the frame and its shared handle: {usage:?}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Several threads publish numbered messages to one topic at once: every subscriber gets
    /// every message, and each publisher's in the order it published them.
    #[test]
    fn concurrent_publishers_keep_their_order(publishers in 1usize..5, messages in 1u32..300, subscribers_n in 1usize..6) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let hub = Hub::new();
            let (mut clients, _servers) = subscribers(&hub, "t", subscribers_n).await;
            let threads: Vec<_> = (0..publishers)
                .map(|p| {
                    let hub = hub.clone();
                    std::thread::spawn(move || {
                        for i in 0..messages {
                            hub.publish("t", format!("{p} {i}"));
                        }
                    })
                })
                .collect();
            for client in &mut clients {
                let mut next = vec![0u32; publishers];
                for _ in 0..publishers as u32 * messages {
                    let text = next_text(client).await;
                    let (p, i) = text.split_once(' ').unwrap();
                    let (p, i): (usize, u32) = (p.parse().unwrap(), i.parse().unwrap());
                    assert_eq!(i, next[p], "publisher {p}'s messages in order");
                    next[p] += 1;
                }
                assert!(next.iter().all(|&n| n == messages));
            }
            for t in threads {
                t.join().unwrap();
            }
        });
    }
}

#[test]
fn a_subscription_holds_little_memory() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let hub = Hub::new();
        let topic = hub.topic("t").unwrap();
        let mut pairs = Vec::new();
        for _ in 0..1000 {
            pairs.push(pair(1 << 12, &Config::default()).await);
        }
        // A connection's first subscription: its inbox, and its place in the topic's list.
        let ((), first) = wsx_testkit::measure(|| {
            for (_, server) in &mut pairs {
                server.subscribe(&hub, &topic).unwrap();
            }
        });
        let other = hub.topic("u").unwrap();
        let ((), second) = wsx_testkit::measure(|| {
            for (_, server) in &mut pairs {
                server.subscribe(&hub, &other).unwrap();
            }
        });
        let (first, second) = (first.retained / 1000, second.retained / 1000);
        eprintln!("heap per subscription: {first} B for a connection's first, {second} B for another");
        assert!(first <= 200, "a first subscription holds {first} bytes");
        assert!(second <= 48, "another subscription holds {second} bytes");
        assert_eq!(hub.subscriber_count(&topic), 1000);
    });
}

#[test]
fn one_runtime_per_core_with_a_publisher_on_another_thread() {
    let hub = Hub::new();
    let messages = 500u32;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let cores: Vec<_> = (0..2)
        .map(|_| {
            let hub = hub.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    let (mut clients, _servers) = subscribers(&hub, "ticks", 20).await;
                    ready.send(()).unwrap();
                    for client in &mut clients {
                        for i in 0..messages {
                            assert_eq!(next_text(client).await, i.to_string());
                        }
                    }
                });
            })
        })
        .collect();
    for _ in 0..2 {
        ready_rx.recv_timeout(PATIENCE).expect("both runtimes subscribed");
    }
    let mut delivered = 0;
    for i in 0..messages {
        delivered += hub.publish("ticks", i.to_string()).delivered;
    }
    assert_eq!(delivered, 40 * messages as usize);
    for core in cores {
        core.join().expect("every subscriber got every tick in order");
    }
}
