//! A fan-out server: the request path says what a connection does.
//!
//! - `/sub/<topic>`: subscribe to `<topic>`; whatever is published to it goes out on this
//!   connection. What the client sends is ignored.
//! - `/pub/<topic>`: every text or binary message the client sends is published to `<topic>`
//!   (the publisher itself does not get it back).
//! - any other path: an idle connection that is only read (the baseline for memory per
//!   subscription in `scripts/bench-fanout`).
//!
//! With the default `WSX_FANOUT=hub` it uses [`wsx::pubsub::Hub`]: a received message is
//! framed once with `Prepared::from_ref` (one copy out of the read buffer) and a reference to
//! that frame is queued for every subscriber. With `WSX_FANOUT=broadcast` it does what
//! `wsx serve --broadcast` did before the hub: one `tokio::sync::broadcast` channel of 1,024
//! messages per topic, each subscriber's task receiving a clone of each message and framing it
//! with its own `send` (a subscriber that falls 1,024 messages behind misses some). It is kept
//! for comparison in `scripts/bench-fanout`.
//!
//! ```sh
//! cargo run --release -p wsx --example fanout_server   # ws://127.0.0.1:9001, or set HOST/PORT
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::broadcast,
};
use wsx::{
    Message, Server, WebSocket,
    pubsub::{Hub, Prepared},
};

/// Messages a subscriber may fall behind in broadcast mode before it misses some (as in
/// `wsx serve --broadcast`).
const BROADCAST_BUFFER: usize = 1024;

/// What a connection does, from its request path.
enum Role<'a> {
    Subscribe(&'a str),
    Publish(&'a str),
    Idle,
}

fn role(path: &str) -> Role<'_> {
    if let Some(topic) = path.strip_prefix("/sub/") {
        Role::Subscribe(topic)
    } else if let Some(topic) = path.strip_prefix("/pub/") {
        Role::Publish(topic)
    } else {
        Role::Idle
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> wsx::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001u16);
    let server = Server::builder().bind((host.as_str(), port)).await?;
    let mode = std::env::var("WSX_FANOUT").unwrap_or_else(|_| "hub".to_owned());
    println!("Fan-out ({mode}) on ws://{}: /sub/<topic>, /pub/<topic>", server.local_addr()?);

    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match mode.as_str() {
        "hub" => {
            let hub = Hub::new();
            server.serve_with_shutdown(move |ws, info| with_hub(ws, hub.clone(), info.path().to_owned()), ctrl_c).await
        }
        "broadcast" => {
            let topics = Topics::default();
            server
                .serve_with_shutdown(move |ws, info| with_broadcast(ws, topics.clone(), info.path().to_owned()), ctrl_c)
                .await
        }
        other => {
            eprintln!("WSX_FANOUT must be hub or broadcast, not {other:?}");
            std::process::exit(2);
        }
    }
}

/// One connection with the hub.
async fn with_hub<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>, hub: Hub, path: String) -> wsx::Result<()> {
    match role(&path) {
        Role::Subscribe(name) => {
            if let Err(e) = ws.subscribe(&hub, name) {
                eprintln!("cannot subscribe to {name:?}: {e}");
                return Ok(());
            }
            drain(&mut ws, |_| {}).await
        }
        Role::Publish(name) => {
            let Ok(topic) = hub.topic(name) else { return Ok(()) };
            drain(&mut ws, |message| {
                hub.publish(&topic, Prepared::from_ref(message));
            })
            .await
        }
        Role::Idle => drain(&mut ws, |_| {}).await,
    }
}

/// Receive until the connection ends, handing each data message to `handle` (published
/// frames go out meanwhile).
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    mut handle: impl FnMut(wsx::MessageRef<'_>),
) -> wsx::Result<()> {
    loop {
        match ws.recv_each(|message, _| handle(message)).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) if e.is_protocol() => {}
            Err(e) => return Err(e),
        }
    }
}

/// Broadcast mode's topics: a channel per name.
#[derive(Clone, Default)]
struct Topics(Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>);

impl Topics {
    fn sender(&self, name: &str) -> broadcast::Sender<Message> {
        let mut topics = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        topics.entry(name.to_owned()).or_insert_with(|| broadcast::channel(BROADCAST_BUFFER).0).clone()
    }
}

/// One connection in broadcast mode, the way `wsx serve --broadcast` ran before the hub.
async fn with_broadcast<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
    topics: Topics,
    path: String,
) -> wsx::Result<()> {
    match role(&path) {
        Role::Subscribe(name) => {
            let mut inbox = topics.sender(name).subscribe();
            loop {
                tokio::select! {
                    outcome = ws.recv_each(|_, _| {}) => match outcome {
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(()),
                        Err(e) if e.is_protocol() => {}
                        Err(e) => return Err(e),
                    },
                    relayed = inbox.recv() => match relayed {
                        Ok(message) => ws.send(message).await?,
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                }
            }
        }
        Role::Publish(name) => {
            let sender = topics.sender(name);
            drain(&mut ws, |message| {
                // No subscriber yet is not a failure.
                let _ = sender.send(message.to_message());
            })
            .await
        }
        Role::Idle => drain(&mut ws, |_| {}).await,
    }
}
