//! The Redis broker's resumable mode against a real `redis-server`: numbered messages in one
//! order on every node, gaps filled from the history, connections resumed from a position on
//! any node, and subscribers told when the history cannot help.

mod redis_common;

use std::time::Duration;

use redis_common::*;
use tokio::task::JoinHandle;
use wsx::{
    CloseCode, Config,
    pubsub::{
        Hub, Position, RESYNC_REASON, Recovery,
        redis::{RedisBroker, RedisConfig, position_prefix},
    },
};

/// A resumable node: history of `size` messages, positions in front of every message.
async fn resumable(redis: &Redis, size: usize) -> (Hub, RedisBroker) {
    let config = RedisConfig::new(redis.url()).history(size, Duration::from_secs(60)).envelope(position_prefix);
    let broker = RedisBroker::with(config).await.expect("connect to redis");
    (Hub::builder().broker(broker.clone()).build(), broker)
}

/// A message as `position_prefix` frames it: its position and what was published.
fn parse(text: &str) -> (Position, String) {
    let mut parts = text.splitn(3, ':');
    let offset = parts.next().unwrap().parse().expect("an offset");
    let epoch = parts.next().expect("an epoch").to_owned();
    (Position::new(offset, epoch), parts.next().expect("a payload").to_owned())
}

async fn next_numbered(client: &mut Ws) -> (Position, String) {
    parse(&next_text(client).await)
}

/// A client whose server side resumes `topic` of `hub` from `since`, and is driven.
async fn resuming(hub: &Hub, topic: &str, since: Position) -> (Ws, Recovery, JoinHandle<Ws>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let request = http::Request::get("ws://x/").body(()).unwrap();
    let config = Config::default();
    let (client, server) = tokio::join!(wsx::handshake(a, &request, &config), wsx::accept(b));
    let mut server = server.unwrap();
    let recovery = server.resume(hub, topic, since).unwrap();
    let serving = tokio::spawn(async move {
        while let Ok(Some(_)) = server.recv().await {}
        server
    });
    let recovery = tokio::time::timeout(PATIENCE, recovery).await.expect("resumed in time");
    (client.unwrap().0, recovery, serving)
}

/// Publish `text` on `hub`, retrying (bounded) while the broker refuses it (reconnecting).
async fn publish_until_taken(hub: &Hub, topic: &str, text: String) {
    for _ in 0..400 {
        if hub.publish(topic, text.clone()).forwarded {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the broker never took {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_on_every_node_gets_the_same_numbered_order() {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(resumable(&redis, 1000).await);
    }
    let mut clients = Vec::new();
    for (hub, _) in &nodes {
        for _ in 0..2 {
            clients.push(subscriber(hub, &["feed"]).await.0);
        }
    }
    redis.await_subscribers("wsx:feed", 3).await;
    // Three publishers at once, one per node: Redis decides one order, and every subscriber,
    // on the publishing node too, sees exactly that order, numbered 1, 2, 3, ...
    const EACH: usize = 100;
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, (hub, _))| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    assert!(hub.publish("feed", format!("{n}-{i}")).forwarded);
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let mut first: Option<Vec<String>> = None;
    for client in &mut clients {
        let mut seen = Vec::new();
        let mut epoch = None;
        for expected in 1..=(3 * EACH) as u64 {
            let (position, payload) = next_numbered(client).await;
            assert_eq!(position.offset, expected, "numbered without a gap or a duplicate");
            assert_eq!(epoch.get_or_insert_with(|| position.epoch.clone()), &position.epoch);
            seen.push(payload);
        }
        // Each publisher's own messages in its order.
        for n in 0..3 {
            let mine: Vec<_> = seen.iter().filter(|p| p.starts_with(&format!("{n}-"))).cloned().collect();
            assert_eq!(mine, (0..EACH).map(|i| format!("{n}-{i}")).collect::<Vec<_>>());
        }
        match &first {
            None => first = Some(seen),
            Some(order) => assert_eq!(&seen, order, "one order on every node"),
        }
    }
    let (_, broker) = &nodes[0];
    assert_eq!(broker.stats().gaps, 0);
}

/// Kill the Redis connections that subscribe to channels (B's, not a publisher's with none).
async fn kill_subscribing_connections(conn: &mut redis::aio::MultiplexedConnection) {
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(conn).await.unwrap();
    for line in list.lines().filter(|l| !l.contains(" sub=0 ")) {
        let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).expect("an id");
        let _: redis::Value = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(conn).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_caught_up_from_the_history_and_nobody_is_closed() {
    let redis = Redis::start().await;
    let (a, _) = resumable(&redis, 100_000).await;
    let (b, broker_b) = resumable(&redis, 100_000).await;
    let (mut client, _serving) = subscriber(&b, &["news"]).await;
    redis.await_subscribers("wsx:news", 1).await;
    // A publishes steadily while B's subscriber connection is killed until B has had to read
    // messages from the history (published while it was reconnecting); they reach B's
    // subscriber in order, and nobody is closed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (a, stop) = (a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                publish_until_taken(&a, "news", format!("m{sent}")).await;
                sent += 1;
                if sent % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            sent
        })
    };
    let client_redis = redis::Client::open(redis.url()).unwrap();
    let mut conn = client_redis.get_multiplexed_async_connection().await.unwrap();
    let mut kills = 0;
    while broker_b.stats().recovered == 0 && kills < 50 {
        kill_subscribing_connections(&mut conn).await;
        kills += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = publisher.await.unwrap();
    for i in 0..sent {
        let (position, payload) = next_numbered(&mut client).await;
        assert_eq!((position.offset, payload), (i as u64 + 1, format!("m{i}")));
    }
    let stats = broker_b.stats();
    assert!(stats.reconnects >= 1 && stats.recovered > 0, "{kills} kills: {stats:?}");
    assert_eq!(stats.gaps, 0, "{stats:?}");
    assert_eq!(b.subscriber_count("news"), 1, "still subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_exactly_what_it_missed() {
    let redis = Redis::start().await;
    let (a, _) = resumable(&redis, 1000).await;
    let (b, _) = resumable(&redis, 1000).await;
    let (mut first, serving) = subscriber(&a, &["room"]).await;
    redis.await_subscribers("wsx:room", 1).await;
    for i in 0..5 {
        publish_until_taken(&b, "room", format!("m{i}")).await;
    }
    let mut last = None;
    for i in 0..5 {
        let (position, payload) = next_numbered(&mut first).await;
        assert_eq!(payload, format!("m{i}"));
        last = Some(position);
    }
    let last = last.unwrap();
    // The client goes away; messages go on (a watcher sees them all stored); it comes back
    // on the other node, which has not received this topic so far.
    drop(first);
    serving.abort();
    let (mut watcher, _w) = subscriber(&a, &["room"]).await;
    for i in 5..12 {
        publish_until_taken(&a, "room", format!("m{i}")).await;
    }
    for _ in 5..12 {
        next_numbered(&mut watcher).await;
    }
    let (mut again, recovery, _serving) = resuming(&b, "room", last.clone()).await;
    assert!(recovery.recovered, "{recovery:?}");
    assert_eq!(recovery.position.as_ref().map(|p| p.offset), Some(12));
    publish_until_taken(&a, "room", "m12".into()).await;
    for i in 5..13u64 {
        let (position, payload) = next_numbered(&mut again).await;
        assert_eq!((position.offset, payload.as_str(), &position.epoch), (i + 1, &*format!("m{i}"), &last.epoch));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_says_when_it_cannot_recover_and_subscribes_from_now() {
    let redis = Redis::start().await;
    // A short history: Redis trims by whole blocks of about 100 entries, so 600 messages
    // leave far fewer than 600.
    let (a, _) = resumable(&redis, 10).await;
    for i in 0..600 {
        publish_until_taken(&a, "t", format!("m{i}")).await;
    }
    let (mut watcher, _s) = subscriber(&a, &["t"]).await;
    publish_until_taken(&a, "t", "probe".into()).await;
    let (now, _) = next_numbered(&mut watcher).await;
    assert_eq!(now.offset, 601);

    // Too far back.
    let (mut old, recovery, _s) = resuming(&a, "t", Position::new(1, now.epoch.clone())).await;
    assert!(!recovery.recovered, "the history no longer reaches offset 2");
    assert_eq!(recovery.position, Some(now.clone()));
    // Another epoch: a history that no longer exists.
    let (mut other, recovery, _s) = resuming(&a, "t", Position::new(600, "0000000000000000")).await;
    assert!(!recovery.recovered);
    // Ahead of the history.
    let (mut ahead, recovery, _s) = resuming(&a, "t", Position::new(5000, now.epoch.clone())).await;
    assert!(!recovery.recovered);
    // Up to date: nothing missed is a successful recovery.
    let (mut current, recovery, _s) = resuming(&a, "t", now.clone()).await;
    assert!(recovery.recovered);

    // Each is subscribed from now on, and gets no history.
    publish_until_taken(&a, "t", "live".into()).await;
    for client in [&mut old, &mut other, &mut ahead, &mut current] {
        let (position, payload) = next_numbered(client).await;
        assert_eq!((position.offset, payload.as_str()), (602, "live"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_larger_than_the_subscriber_may_queue_is_not_recovered() {
    let redis = Redis::start().await;
    let config = RedisConfig::new(redis.url()).history(1000, Duration::from_secs(60)).envelope(position_prefix);
    let broker = RedisBroker::with(config).await.unwrap();
    let hub = Hub::builder().broker(broker).max_queued_bytes(16 * 1024).build();
    let (mut watcher, _s) = subscriber(&hub, &["big"]).await;
    let payload = "x".repeat(1024);
    let mut start = None;
    for _ in 0..40 {
        publish_until_taken(&hub, "big", payload.clone()).await;
        let (position, _) = next_numbered(&mut watcher).await;
        start.get_or_insert(position);
    }
    let start = start.unwrap();
    // 39 messages of 1 KiB missed (2..=40), 16 KiB allowed: all or nothing, so nothing.
    let (mut client, recovery, _s) = resuming(&hub, "big", start.clone()).await;
    assert!(!recovery.recovered, "{recovery:?}");
    publish_until_taken(&hub, "big", "after".into()).await;
    let (position, text) = next_numbered(&mut client).await;
    assert_eq!((position.offset, text.as_str()), (41, "after"));
    // A small replay fits.
    let (mut near, recovery, _s) = resuming(&hub, "big", Position::new(39, start.epoch)).await;
    assert!(recovery.recovered);
    for offset in 40..=41 {
        assert_eq!(next_numbered(&mut near).await.0.offset, offset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_loses_its_data_subscribers_are_told_and_a_new_epoch_begins() {
    let mut redis = Redis::start().await;
    let (a, _) = resumable(&redis, 1000).await;
    let (b, broker_b) = resumable(&redis, 1000).await;
    let (mut client, _s) = subscriber(&b, &["news"]).await;
    redis.await_subscribers("wsx:news", 1).await;
    publish_until_taken(&a, "news", "before".into()).await;
    let (before, _) = next_numbered(&mut client).await;

    // Redis restarts empty (no persistence): the history and its epoch are gone, so what B
    // missed cannot be known; its subscribers are closed to resynchronize.
    let port = redis.port;
    redis.kill();
    let redis = Redis::on(port).await;
    let reason = closed(&mut client).await;
    assert_eq!(reason.code(), CloseCode::RESTART);
    assert_eq!(reason.received.unwrap().reason.as_str(), RESYNC_REASON);
    assert!(broker_b.stats().gaps >= 1);

    // Afterwards: a new epoch from offset 1; resuming from the old one is not recovered.
    let (mut fresh, recovery, _s) = resuming(&b, "news", before.clone()).await;
    assert!(!recovery.recovered);
    redis.await_subscribers("wsx:news", 1).await;
    publish_until_taken(&a, "news", "after".into()).await;
    let (after, payload) = next_numbered(&mut fresh).await;
    assert_eq!((after.offset, payload.as_str()), (1, "after"));
    assert_ne!(after.epoch, before.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_except_skips_the_sender_on_its_own_node_only() {
    let redis = Redis::start().await;
    let (a, _) = resumable(&redis, 100).await;
    let (b, _) = resumable(&redis, 100).await;
    // The sender: a connection on A whose subscriber id we keep.
    let (c, s) = tokio::io::duplex(1 << 16);
    let request = http::Request::get("ws://x/").body(()).unwrap();
    let config = Config::default();
    let (client, server) = tokio::join!(wsx::handshake(c, &request, &config), wsx::accept(s));
    let mut server = server.unwrap();
    let sender = server.subscribe(&a, "chat").unwrap();
    let _driving = tokio::spawn(async move { while let Ok(Some(_)) = server.recv().await {} });
    let mut sender_ws = client.unwrap().0;
    let (mut other_on_a, _s1) = subscriber(&a, &["chat"]).await;
    let (mut on_b, _s2) = subscriber(&b, &["chat"]).await;
    redis.await_subscribers("wsx:chat", 2).await;

    assert!(a.publish_except("chat", "hello", sender).forwarded);
    publish_until_taken(&a, "chat", "everyone".into()).await;
    for client in [&mut other_on_a, &mut on_b] {
        let (first, hello) = next_numbered(client).await;
        let (second, everyone) = next_numbered(client).await;
        assert_eq!((first.offset, hello.as_str(), second.offset, everyone.as_str()), (1, "hello", 2, "everyone"));
    }
    // The sender gets only the second; on B, the sender's id means nothing.
    let (position, payload) = next_numbered(&mut sender_ws).await;
    assert_eq!((position.offset, payload.as_str()), (2, "everyone"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_and_restarted_with_its_data_loses_nothing() {
    // Redis with an append-only file synced on every write: SIGKILL loses no acknowledged write.
    let dir = std::env::temp_dir().join(format!("wsx-aof-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap().to_owned();
    let persistent = move |port: Option<u16>| {
        let dir = dir_arg.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args = ["--appendonly", "yes", "--appendfsync", "always", "--dir", dir.as_str()];
                match port {
                    None => wsx_testkit::redis::RedisServer::start_with(&args),
                    Some(port) => wsx_testkit::redis::RedisServer::on_with(port, &args),
                }
            })
            .await
            .unwrap()
        }
    };
    let server = persistent(None).await;
    let mut redis = Redis { port: server.port(), server };
    let (a, _) = resumable(&redis, 100_000).await;
    let (b, broker_b) = resumable(&redis, 100_000).await;
    let (mut on_a, _s1) = subscriber(&a, &["feed"]).await;
    let (mut on_b, _s2) = subscriber(&b, &["feed"]).await;
    redis.await_subscribers("wsx:feed", 2).await;
    const TOTAL: usize = 400;
    let publisher = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                // Refused while A is reconnecting: retried, so every message is published once.
                publish_until_taken(&a, "feed", format!("m{i}")).await;
                if i % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let port = redis.port;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = persistent(Some(port)).await;
    let _redis = Redis { port, server };
    publisher.await.unwrap();
    for client in [&mut on_a, &mut on_b] {
        for i in 0..TOTAL {
            let (position, payload) = next_numbered(client).await;
            assert_eq!(
                (position.offset, payload),
                (i as u64 + 1, format!("m{i}")),
                "in order, nothing lost or doubled"
            );
        }
    }
    let stats = broker_b.stats();
    assert!(stats.reconnects >= 1 && stats.gaps == 0, "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_flushall_a_new_epoch_begins_and_old_positions_are_not_recovered() {
    let redis = Redis::start().await;
    let (a, _) = resumable(&redis, 100).await;
    let (mut client, _s) = subscriber(&a, &["t"]).await;
    redis.await_subscribers("wsx:t", 1).await;
    publish_until_taken(&a, "t", "old".into()).await;
    let (old, _) = next_numbered(&mut client).await;
    redis.query(&["FLUSHALL"]).await.expect("FLUSHALL");
    publish_until_taken(&a, "t", "new".into()).await;
    // The connected subscriber had everything of the old epoch: it goes on, in the new one.
    let (new, payload) = next_numbered(&mut client).await;
    assert_eq!((new.offset, payload.as_str()), (1, "new"));
    assert_ne!(new.epoch, old.epoch);
    let (_late, recovery, _s) = resuming(&a, "t", old).await;
    assert!(!recovery.recovered);
    assert_eq!(recovery.position, Some(new));
}
