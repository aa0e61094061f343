//! Topics shared by several hubs ("nodes") through a real `redis-server`, started by each test
//! on a free loopback port (`WSX_REDIS_SERVER`, else /usr/bin/redis-server; `bash
//! scripts/setup-peers` installs it).

mod redis_common;

use std::time::Duration;

use redis_common::*;
use wsx::{
    CloseCode, Message,
    pubsub::{
        Hub, Prepared, RESYNC_REASON, SubscribeError,
        redis::{RedisBroker, RedisConfig},
    },
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_any_node_reaches_every_subscriber_on_every_node_once_in_order() {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&redis).await);
    }
    let mut clients = Vec::new();
    for (hub, _) in &nodes {
        for _ in 0..2 {
            clients.push(subscriber(hub, &["feed"]).await.0);
        }
    }
    redis.await_subscribers("wsx:feed", 3).await;

    // The three nodes publish at once, each its own numbered sequence.
    let messages = 200;
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, (hub, _))| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..messages {
                    let report = hub.publish("feed", format!("{n} {i}"));
                    assert!(report.forwarded, "the broker took it");
                    assert_eq!(report.delivered, 2, "this node's two subscribers");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    for (c, client) in clients.iter_mut().enumerate() {
        let mut next_from = [0; 3];
        for _ in 0..3 * messages {
            let text = next_text(client).await;
            let (n, i) = text.split_once(' ').unwrap();
            let (n, i): (usize, usize) = (n.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next_from[n], "client {c}: node {n}'s messages once each, in order");
            next_from[n] += 1;
        }
        assert_eq!(next_from, [messages; 3]);
    }
    // Nothing more: the next message each client gets is this one.
    nodes[0].0.publish("feed", "end");
    for client in &mut clients {
        assert_eq!(next_text(client).await, "end", "no duplicate, no echo");
    }
    let stats = nodes[1].1.stats();
    assert_eq!((stats.published, stats.received, stats.malformed), (messages as u64, 2 * messages as u64 + 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_topics_are_subscribed_in_batches_and_left_when_the_last_subscriber_goes() {
    let redis = Redis::start().await;
    let (publisher, _) = node(&redis).await;
    let (hub, _) = node(&redis).await;
    let names: Vec<String> = (0..3000).map(|i| format!("room-{i}")).collect();
    let mut clients = Vec::new();
    for chunk in names.chunks(1000) {
        let topics: Vec<&str> = chunk.iter().map(String::as_str).collect();
        clients.push(subscriber(&hub, &topics).await);
    }
    redis.await_subscribers("wsx:room-2999", 1).await;
    redis.await_subscribers("wsx:room-0", 1).await;
    let stats = match redis.query(&["INFO", "commandstats"]).await.unwrap() {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO: {other:?}"),
    };
    let line = stats.lines().find(|l| l.starts_with("cmdstat_subscribe:")).expect("SUBSCRIBE ran");
    let calls: u64 = line.split("calls=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(calls <= 20, "3,000 topics in a few SUBSCRIBE commands, not one each: {line}");

    publisher.publish("room-2999", "hello 2999");
    assert_eq!(next_text(&mut clients[2].0).await, "hello 2999");
    // The last subscriber of 1,000 topics leaves: the node unsubscribes from them.
    let (client, serving) = clients.remove(0);
    drop(client);
    let _ = tokio::time::timeout(PATIENCE, serving).await;
    redis.await_subscribers("wsx:room-0", 0).await;
    redis.await_subscribers("wsx:room-999", 0).await;
    assert_eq!(redis.subscribers("wsx:room-1000").await, 1, "the other rooms stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_dies_subscribers_are_closed_to_resync_and_the_nodes_come_back() {
    let mut redis = Redis::start().await;
    let (a, broker_a) = node(&redis).await;
    let (b, broker_b) = node(&redis).await;
    let (mut client, _serving) = subscriber(&b, &["news"]).await;
    redis.await_subscribers("wsx:news", 1).await;
    a.publish("news", "before");
    assert_eq!(next_text(&mut client).await, "before");

    let port = redis.port;
    redis.kill();
    // The subscriber on B is told: closed with 1012, never left silently behind.
    let reason = closed(&mut client).await;
    assert_eq!(reason.code(), CloseCode::RESTART);
    assert_eq!(reason.received.unwrap().reason.as_str(), RESYNC_REASON);
    for _ in 0..200 {
        if b.subscriber_count("news") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.subscriber_count("news"), 0, "its subscription ended with it");
    // Publishing meanwhile is refused for the other nodes, and says so.
    assert!(!a.publish("news", "lost").forwarded || !broker_a.is_connected());

    // Redis is back: both nodes reconnect by themselves; a new subscriber gets messages again.
    let redis = Redis::on(port).await;
    for _ in 0..400 {
        if broker_a.is_connected() && broker_b.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(broker_a.is_connected() && broker_b.is_connected(), "reconnected");
    let (mut again, _serving) = subscriber(&b, &["news"]).await;
    redis.await_subscribers("wsx:news", 1).await;
    a.publish("news", "after");
    assert_eq!(next_text(&mut again).await, "after");
    assert!(broker_b.stats().reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub_resyncs_and_resubscribes() {
    let redis = Redis::start().await;
    let (a, _) = node(&redis).await;
    let (b, broker_b) = node(&redis).await;
    let (mut first, _s1) = subscriber(&b, &["t"]).await;
    redis.await_subscribers("wsx:t", 1).await;
    redis.query(&["CLIENT", "KILL", "TYPE", "pubsub"]).await.expect("CLIENT KILL");
    assert_eq!(closed(&mut first).await.code(), CloseCode::RESTART);
    // B reconnects and, with a new subscriber, subscribes again.
    let (mut second, _s2) = subscriber(&b, &["t"]).await;
    redis.await_subscribers("wsx:t", 1).await;
    a.publish("t", "again");
    assert_eq!(next_text(&mut second).await, "again");
    assert!(broker_b.stats().reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_not_in_wsx_format_are_dropped_and_counted() {
    let redis = Redis::start().await;
    let (a, _) = node(&redis).await;
    let (b, broker_b) = node(&redis).await;
    let (mut client, _serving) = subscriber(&b, &["t"]).await;
    redis.await_subscribers("wsx:t", 1).await;
    // Anyone with access to Redis can publish anything: a short header, another version, text
    // that is not UTF-8.
    redis.query(&["PUBLISH", "wsx:t", "garbage"]).await.unwrap();
    let mut wrong_version = vec![9u8, 0];
    wrong_version.extend_from_slice(&[0; 8]);
    wrong_version.extend_from_slice(b"x");
    let client_redis = redis::Client::open(redis.url()).unwrap();
    let mut conn = client_redis.get_multiplexed_async_connection().await.unwrap();
    let mut bad_text = vec![1u8, 1];
    bad_text.extend_from_slice(&[0; 8]);
    bad_text.extend_from_slice(&[0xff, 0xfe]);
    for bad in [&wrong_version, &bad_text] {
        let _: i64 = redis::cmd("PUBLISH").arg("wsx:t").arg(&bad[..]).query_async(&mut conn).await.unwrap();
    }
    a.publish("t", Prepared::binary([1u8, 2, 3]));
    assert_eq!(next(&mut client).await, Some(Message::binary(vec![1u8, 2, 3])), "the first message that arrives");
    for _ in 0..100 {
        if broker_b.stats().malformed == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(broker_b.stats().malformed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_are_binary_safe_prefixed_and_bounded() {
    let redis = Redis::start().await;
    let (a, _) = node(&redis).await;
    let (b, _) = node(&redis).await;
    let odd = "two words\r\nand a newline";
    let (mut client, _serving) = subscriber(&b, &[odd]).await;
    redis.await_subscribers(&format!("wsx:{odd}"), 1).await;
    a.publish(odd, "odd");
    assert_eq!(next_text(&mut client).await, "odd");
    // A client cannot reach channels outside the prefix: "wsx:" is always in front.
    assert_eq!(redis.subscribers(odd).await, 0);
    // A 10 KB name is refused before it reaches Redis.
    let long = "x".repeat(10_000);
    assert!(matches!(b.topic(&long), Err(SubscribeError::NameTooLong { .. })));
    assert!(!a.publish(long.as_str(), "too long").forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_broker_limit_stays_on_its_node() {
    let redis = Redis::start().await;
    let broker = RedisBroker::with(RedisConfig::new(redis.url()).max_message_size(1024)).await.unwrap();
    let a = Hub::builder().broker(broker.clone()).build();
    let (b, _) = node(&redis).await;
    let (mut local, _s1) = subscriber(&a, &["t"]).await;
    let (mut remote, _s2) = subscriber(&b, &["t"]).await;
    redis.await_subscribers("wsx:t", 2).await;
    let big = "y".repeat(2000);
    let report = a.publish("t", big.as_str());
    assert_eq!((report.delivered, report.forwarded), (1, false));
    a.publish("t", "small");
    assert_eq!(next_text(&mut local).await, big);
    assert_eq!(next_text(&mut local).await, "small");
    assert_eq!(next_text(&mut remote).await, "small", "the large one did not go to Redis");
    assert_eq!(broker.stats().refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_too_slow_for_redis_is_disconnected_and_resyncs_its_subscribers() {
    let redis = Redis::start().await;
    // Redis drops a pub/sub client more than 1 MB behind.
    redis.query(&["CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 512kb 1"]).await.unwrap();
    let (a, _) = node(&redis).await;
    // Node B runs on a runtime of its own, on a thread the test can stall.
    let url = redis.url();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stall_tx, stall_rx) = tokio::sync::oneshot::channel::<Duration>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let b_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let broker = RedisBroker::connect(&url).await.unwrap();
            // Room for everything Redis sent before it gave up: the local subscriber is not
            // what this test is about.
            let b = Hub::builder().max_queued_bytes(64 << 20).broker(broker.clone()).build();
            let (mut client, _serving) = subscriber(&b, &["firehose"]).await;
            ready_tx.send(()).unwrap();
            // Runs (subscribing on Redis) until told, then stalls the whole runtime: nothing
            // reads from Redis meanwhile.
            std::thread::sleep(stall_rx.await.unwrap());
            // What Redis sent before it gave up on B arrives, then the close.
            let reason = loop {
                match next(&mut client).await {
                    Some(Message::Text(_) | Message::Close(_)) => {}
                    None => break client.close_reason().expect("a close reason"),
                    Some(other) => panic!("unexpected {other:?}"),
                }
            };
            done_tx.send((reason, broker.stats())).unwrap();
        });
    });
    ready_rx.await.unwrap();
    redis.await_subscribers("wsx:firehose", 1).await;
    stall_tx.send(Duration::from_secs(2)).unwrap();
    // 8 MB while B is stalled: far over its 1 MB output buffer on Redis.
    let chunk = "z".repeat(64 << 10);
    for _ in 0..128 {
        assert!(a.publish("firehose", chunk.as_str()).forwarded);
    }
    let (reason, stats) = tokio::time::timeout(PATIENCE, done_rx).await.expect("in time").unwrap();
    assert_eq!(reason.code(), CloseCode::RESTART, "{reason:?}");
    assert!(stats.received < 128, "B was cut off: it got {} of 128", stats.received);
    b_thread.join().unwrap();
}

/// `rediss://`: nodes share topics over TLS to a `redis-server` that speaks only TLS on its
/// `--tls-port`, trusting a CA of the test's own; without that CA the connection is refused.
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_carries_topics_over_tls_with_a_ca_of_ones_own() {
    let pki = wsx_testkit::Pki::new(&["127.0.0.1"]);
    let dir = std::env::temp_dir().join(format!("wsx-rediss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (file("cert.pem", &pki.cert_pem), file("key.pem", &pki.key_pem), file("ca.pem", &pki.ca_pem));
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let args: Vec<String> = ["--tls-port", &tls_port, "--tls-cert-file", &cert, "--tls-key-file", &key]
        .into_iter()
        .chain(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"])
        .map(String::from)
        .collect();
    let server = tokio::task::spawn_blocking(move || {
        wsx_testkit::redis::RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}/");

    // The system's roots do not know this CA: refused, with a message that says TLS.
    let untrusted = RedisBroker::connect(&url).await.expect_err("an unknown CA is refused");
    assert!(untrusted.to_string().to_lowercase().contains("redis"), "{untrusted}");

    let trusted = || RedisConfig::new(url.clone()).tls_roots(pki.ca_pem.clone());
    let a = RedisBroker::with(trusted()).await.expect("rediss with our CA");
    let b = RedisBroker::with(trusted()).await.expect("rediss with our CA");
    let (hub_a, hub_b) = (Hub::builder().broker(a).build(), Hub::builder().broker(b).build());
    let (mut client, _serving) = subscriber(&hub_b, &["secure"]).await;
    let plain = Redis { port: server.port(), server };
    plain.await_subscribers("wsx:secure", 1).await;
    assert!(hub_a.publish("secure", "over tls").forwarded);
    assert_eq!(next_text(&mut client).await, "over tls");
    let _ = std::fs::remove_dir_all(&dir);
}

/// AUTH with an ACL user in the URL: nodes share topics; a wrong password is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_in_the_url_is_used_and_a_wrong_password_refused() {
    let args = ["--requirepass", "adminpass", "--user", "wsx", "on", ">s3cret", "~wsx:*", "&wsx:*", "+@all"];
    let server = tokio::task::spawn_blocking(move || wsx_testkit::redis::RedisServer::start_with(&args)).await.unwrap();
    let port = server.port();
    let wrong = RedisBroker::connect(&format!("redis://wsx:nope@127.0.0.1:{port}/")).await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let url = format!("redis://wsx:s3cret@127.0.0.1:{port}/");
    let a = RedisBroker::connect(&url).await.expect("the ACL user connects");
    let b = RedisBroker::connect(&url).await.expect("the ACL user connects");
    let (hub_a, hub_b) = (Hub::builder().broker(a).build(), Hub::builder().broker(b).build());
    let (mut client, _serving) = subscriber(&hub_b, &["acl"]).await;
    let admin = redis::Client::open(format!("redis://:adminpass@127.0.0.1:{port}/")).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..400 {
        let numsub: (String, i64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg("wsx:acl").query_async(&mut admin).await.unwrap();
        if numsub.1 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(hub_a.publish("acl", "through the acl user").forwarded);
    assert_eq!(next_text(&mut client).await, "through the acl user");
    drop(server);
}
