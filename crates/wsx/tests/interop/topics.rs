//! Topics with real peers: 100 Node `ws` clients (permessage-deflate negotiated) and 100 Python
//! `websockets` clients (without) subscribe to one topic of a wsx server, next to one client
//! that never reads. The test publishes a paced feed from its own task: every peer receives every
//! message, in order and intact, and the stalled client is closed with 1008 once it is
//! `LIMIT` bytes behind, without holding the others back.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use wsx::{
    CloseCode, Config, DeflateConfig,
    proto::frame::Header,
    pubsub::{Hub, Prepared},
};

use crate::{
    STEP_TIMEOUT, TEST_TIMEOUT,
    peers::{PeerEnv, RunningClient},
    within,
};

/// The subscribers' byte limit.
const LIMIT: usize = 256 << 10;
/// Messages published, their payload length, and the pace: `BURST` messages every `PAUSE`.
const MESSAGES: usize = 120;
const LEN: usize = 4000;
const BURST: usize = 4;
const PAUSE: Duration = Duration::from_millis(80);
/// Subscribers per peer process.
const PER_PEER: usize = 100;

/// Message `i`: "seq I LEN PAYLOAD", the payload `LEN` times the letter 'a' + i % 26.
fn message(i: usize) -> String {
    let letter = char::from(b'a' + (i % 26) as u8);
    format!("seq {i} {LEN} {}", letter.to_string().repeat(LEN))
}

/// A wsx server whose every client subscribes to "feed" and is greeted with "ready" once it
/// is subscribed. Accepted sockets have small send buffers, so that a client that does not
/// read is soon over its limit rather than hidden by the kernel's buffers.
async fn start(hub: &Hub) -> (SocketAddr, wsx::ShutdownHandle) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 << 10).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config::default().deflate(Some(DeflateConfig::default()));
    let server = wsx::Server::builder().config(config).max_connections(1000).from_listener(listener);
    let shutdown = server.shutdown_handle();
    let hub = hub.clone();
    tokio::spawn(server.serve(move |mut ws, _| {
        let hub = hub.clone();
        async move {
            ws.subscribe(&hub, "feed").expect("subscribe");
            ws.send("ready").await?;
            while ws.recv().await?.is_some() {}
            Ok(())
        }
    }));
    (addr, shutdown)
}

/// Start `count` subscribers in one peer process (`subscribers.js` or `subscribers.py`) on
/// `url`, each expecting `MESSAGES` messages; `extra` arguments go at the end.
fn subscribers(
    env: &PeerEnv,
    name: &str,
    program: &std::path::Path,
    script: &std::path::Path,
    url: String,
    count: usize,
    extra: &[&str],
) -> RunningClient {
    let mut args = vec![script.display().to_string(), url, "--count".into(), count.to_string(), "--expect".into()];
    args.push(MESSAGES.to_string());
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    RunningClient::start(env, name, program, &args)
}

/// A client with a 4 KiB receive buffer that completes its handshake, reads the greeting and
/// then reads nothing until told to.
async fn stalled_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 << 10).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"ready") {
        let mut byte = [0u8; 1];
        let n = within("the stalled client's greeting", STEP_TIMEOUT, tcp.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "the server closed: {}", String::from_utf8_lossy(&seen));
        seen.push(byte[0]);
    }
    tcp
}

/// Read frames until a close frame; the data frames' payloads and the close frame's payload.
async fn read_until_close(tcp: &mut TcpStream) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = within("the stalled client's backlog", STEP_TIMEOUT, tcp.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "the connection ended without a close frame");
        bytes.extend_from_slice(&chunk[..n]);
        let mut data = Vec::new();
        let mut rest = &bytes[..];
        while let Some((header, h)) = Header::decode(rest).unwrap() {
            let len = header.payload_len as usize;
            if rest.len() < h + len {
                break;
            }
            let payload = rest[h..h + len].to_vec();
            if header.opcode.bits() == 0x8 {
                return (data, payload);
            }
            data.push(payload);
            rest = &rest[h + len..];
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_node_and_python_subscribers_get_every_message_and_a_stalled_one_is_closed() {
    within("200 subscribers and a stalled one", TEST_TIMEOUT, async {
        let env = PeerEnv::load();
        let node = env.require_node("node/subscribers.js");
        let python_script = env.require_python("python/subscribers.py");
        let hub = Hub::builder().max_queued_bytes(LIMIT).build();
        let (addr, shutdown) = start(&hub).await;
        let url = format!("ws://{addr}/");
        let mut stalled = stalled_client(addr).await;

        let mut node_run = subscribers(&env, "node subscribers", &env.node, &node, url.clone(), PER_PEER, &[]);
        let mut python_run =
            subscribers(&env, "python subscribers", &env.python, &python_script, url, PER_PEER, &["--no-deflate"]);
        assert_eq!(node_run.line("READY").await, format!("READY {PER_PEER}"));
        assert_eq!(python_run.line("READY").await, format!("READY {PER_PEER}"));
        assert_eq!(hub.subscriber_count("feed"), 2 * PER_PEER + 1);

        let mut closed = 0;
        for i in 0..MESSAGES {
            let report = hub.publish("feed", Prepared::from(message(i)));
            assert_eq!(report.dropped, 0);
            closed += report.closed;
            if i % BURST == BURST - 1 {
                tokio::time::sleep(PAUSE).await;
            }
        }
        for run in [node_run.finish().await, python_run.finish().await] {
            assert!(run.status.success() && run.bool_at("/ok") == Some(true), "{}", run.describe());
            let received = run.json["received"].as_array().expect("received");
            assert_eq!(received.len(), PER_PEER);
            assert!(received.iter().all(|n| n.as_u64() == Some(MESSAGES as u64)), "{}", run.describe());
            let extensions = run.json["extensions"].to_string();
            if run.name.starts_with("node") {
                assert!(extensions.contains("permessage-deflate"), "Node negotiated deflate: {extensions}");
            } else {
                assert!(!extensions.contains("permessage-deflate"), "Python without deflate: {extensions}");
            }
        }
        assert_eq!(closed, 1, "the stalled client, once");

        // The stalled client reads at last: the feed in order up to about the limit, then 1008.
        let (data, close) = read_until_close(&mut stalled).await;
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), CloseCode::POLICY.0);
        let reason = String::from_utf8_lossy(&close[2..]).into_owned();
        assert_eq!(reason, format!("slow consumer: over {LIMIT} bytes queued"));
        for (i, payload) in data.iter().enumerate() {
            assert_eq!(payload, message(i).as_bytes(), "message {i} in order and intact");
        }
        let total: usize = data.iter().map(Vec::len).sum();
        assert!(total < MESSAGES * LEN, "cut off: {} of {MESSAGES} messages", data.len());
        assert!(total <= LIMIT + (256 << 10), "at most the limit and the kernel's buffers: {total} bytes");
        drop(stalled);
        shutdown.shutdown();
    })
    .await;
}

/// Topics across servers with real peers: Node `ws` subscribers on one node, Python
/// `websockets` subscribers on another, the feed published on a third; all three share one
/// real `redis-server`.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_python_subscribers_on_two_nodes_get_a_feed_published_on_a_third() {
    use wsx::pubsub::redis::RedisBroker;
    within("subscribers on two nodes", TEST_TIMEOUT, async {
        let env = PeerEnv::load();
        let node_script = env.require_node("node/subscribers.js");
        let python_script = env.require_python("python/subscribers.py");
        let redis = tokio::task::spawn_blocking(wsx_testkit::redis::RedisServer::start).await.unwrap();
        let mut hubs = Vec::new();
        for _ in 0..3 {
            let broker = RedisBroker::connect(&redis.url()).await.expect("redis");
            hubs.push((Hub::builder().max_queued_bytes(LIMIT).broker(broker.clone()).build(), broker));
        }
        let (addr_a, _stop_a) = start(&hubs[0].0).await;
        let (addr_b, _stop_b) = start(&hubs[1].0).await;
        let (url_a, url_b) = (format!("ws://{addr_a}/"), format!("ws://{addr_b}/"));
        let mut node_run = subscribers(&env, "node subscribers (node A)", &env.node, &node_script, url_a, 50, &[]);
        let mut python_run =
            subscribers(&env, "python subscribers (node B)", &env.python, &python_script, url_b, 50, &[]);
        assert_eq!(node_run.line("READY").await, "READY 50");
        assert_eq!(python_run.line("READY").await, "READY 50");
        // Both nodes have subscribed to the topic's channel on Redis.
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for _ in 0..400 {
            let numsub: (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg("wsx:feed").query_async(&mut conn).await.unwrap();
            if numsub.1 == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let publisher = &hubs[2].0;
        for i in 0..MESSAGES {
            let report = publisher.publish("feed", Prepared::from(message(i)));
            assert!(report.forwarded, "message {i} went to Redis");
            if i % BURST == BURST - 1 {
                tokio::time::sleep(PAUSE).await;
            }
        }
        for run in [node_run.finish().await, python_run.finish().await] {
            assert!(run.status.success() && run.bool_at("/ok") == Some(true), "{}", run.describe());
        }
        assert_eq!(hubs[0].1.stats().malformed + hubs[1].1.stats().malformed, 0);
    })
    .await;
}
