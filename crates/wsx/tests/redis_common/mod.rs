//! Helpers of the tests that share topics through a real `redis-server` (scale_out, resumable).
#![allow(dead_code)]

use std::time::Duration;

use tokio::{io::DuplexStream, task::JoinHandle};
use wsx::{
    Config, Message, WebSocket,
    pubsub::{Hub, redis::RedisBroker},
};
use wsx_testkit::redis::RedisServer;

/// Give up on anything that takes longer than this.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) type Ws = WebSocket<DuplexStream>;

/// A `redis-server` of the test's own, and commands to it.
pub(crate) struct Redis {
    pub(crate) server: RedisServer,
    pub(crate) port: u16,
}

impl Redis {
    pub(crate) async fn start() -> Self {
        let server = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
        Self { port: server.port(), server }
    }

    pub(crate) async fn on(port: u16) -> Self {
        let server = tokio::task::spawn_blocking(move || RedisServer::on(port)).await.unwrap();
        Self { port, server }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    pub(crate) fn kill(&mut self) {
        self.server.kill();
    }

    /// Run one command and return its reply.
    pub(crate) async fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await
    }

    /// `PUBSUB NUMSUB channel`: how many connections (nodes) subscribe to it.
    pub(crate) async fn subscribers(&self, channel: &str) -> i64 {
        match self.query(&["PUBSUB", "NUMSUB", channel]).await.expect("PUBSUB NUMSUB") {
            redis::Value::Array(items) => match items.get(1) {
                Some(redis::Value::Int(n)) => *n,
                other => panic!("NUMSUB: {other:?}"),
            },
            other => panic!("NUMSUB: {other:?}"),
        }
    }

    /// Wait (bounded) until `channel` has `n` subscribing nodes.
    pub(crate) async fn await_subscribers(&self, channel: &str, n: i64) {
        for _ in 0..400 {
            if self.subscribers(channel).await == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{channel} never had {n} subscribing nodes (has {})", self.subscribers(channel).await);
    }
}

/// A node: a hub with a Redis broker.
pub(crate) async fn node(redis: &Redis) -> (Hub, RedisBroker) {
    let broker = RedisBroker::connect(&redis.url()).await.expect("connect to redis");
    (Hub::builder().broker(broker.clone()).build(), broker)
}

/// A client whose server side subscribes to `topics` of `hub` and is driven.
pub(crate) async fn subscriber(hub: &Hub, topics: &[&str]) -> (Ws, JoinHandle<Ws>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let request = http::Request::get("ws://x/").body(()).unwrap();
    let config = Config::default();
    let (client, server) = tokio::join!(wsx::handshake(a, &request, &config), wsx::accept(b));
    let mut server = server.unwrap();
    for topic in topics {
        server.subscribe(hub, *topic).unwrap();
    }
    let serving = tokio::spawn(async move {
        while let Ok(Some(_)) = server.recv().await {}
        server
    });
    (client.unwrap().0, serving)
}

pub(crate) async fn next(client: &mut Ws) -> Option<Message> {
    tokio::time::timeout(PATIENCE, client.recv()).await.expect("in time").ok().flatten()
}

/// Read until the connection ends; how it ended.
pub(crate) async fn closed(client: &mut Ws) -> wsx::CloseReason {
    for _ in 0..100 {
        match next(client).await {
            None => return client.close_reason().expect("a close reason"),
            Some(Message::Close(_) | Message::Ping(_) | Message::Pong(_)) => {}
            Some(other) => panic!("expected the close, got {other:?}"),
        }
    }
    panic!("the connection did not end")
}

pub(crate) async fn next_text(client: &mut Ws) -> String {
    match next(client).await {
        Some(Message::Text(text)) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}
