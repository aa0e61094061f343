//! A chat room in axum 0.8: the page at `/`, and a WebSocket at `/chat` (`wsx::axum`) where
//! every text message is sent to everyone in the room, permessage-deflate on. It runs on
//! `wsx::hyper::Server`, which speaks HTTP/1.1 and HTTP/2 and closes the WebSockets with 1001
//! on Ctrl-C; with `TLS_CERT` and `TLS_KEY` (PEM files) it serves HTTPS, and browsers then
//! open the WebSocket over their HTTP/2 connection (RFC 8441).
//!
//! ```sh
//! cargo run -p wsx --example axum_chat   # http://127.0.0.1:3000, or set HOST/PORT
//! ```
//!
//! The room is a topic of a `wsx::pubsub::Hub`: a message is framed (and compressed) once for
//! everyone, and a member that falls 1 MiB behind is closed with 1008.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    response::{Html, Response},
    routing::{any, get},
};
use wsx::{
    Config, DeflateConfig, WebSocket,
    axum::WebSocketUpgrade,
    hyper::Io,
    pubsub::{Hub, Prepared},
};

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>wsx chat</title>
<style>body{font:15px system-ui;margin:2em}#log{height:20em;overflow:auto;border:1px solid #ccc;padding:.5em}</style>
<h1>wsx chat</h1><div id="log"></div>
<form id="f"><input id="m" autocomplete="off" size="60" placeholder="say something"> <button>send</button></form>
<script>
const log = document.getElementById('log');
const say = (t) => { const p = document.createElement('div'); p.textContent = t; log.append(p); log.scrollTop = 1e9; };
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/chat');
ws.onopen = () => say('* connected');
ws.onmessage = (e) => say(e.data);
ws.onclose = (e) => say('* closed ' + e.code);
document.getElementById('f').onsubmit = (e) => {
  e.preventDefault();
  const m = document.getElementById('m');
  if (m.value) ws.send(m.value);
  m.value = '';
};
</script>"#;

#[derive(Clone)]
struct Room {
    config: Arc<Config>,
    hub: Hub,
}

async fn chat(State(room): State<Room>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.config(room.config.clone()).same_origin().on_upgrade(move |ws| member(ws, room.hub))
}

/// One member: what it says goes to the room; what the room says goes out to it while
/// `recv_each` drives the connection.
async fn member(mut ws: WebSocket<Io>, hub: Hub) {
    let version = ws.get_ref().http_version();
    if ws.subscribe(&hub, "room").is_err() {
        return;
    }
    hub.publish("room", format!("* someone joined (over {version:?})"));
    while let Ok(Some(_)) = ws
        .recv_each(|message, _| {
            if message.as_text().is_some() {
                hub.publish("room", Prepared::from_ref(message));
            }
        })
        .await
    {}
    hub.publish("room", "* someone left");
}

#[tokio::main]
async fn main() -> wsx::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000u16);
    let config = Arc::new(Config::default().deflate(Some(DeflateConfig::default())));
    let room = Room { config, hub: Hub::new() };
    // `any`, not `get`: over HTTP/2 the WebSocket is a CONNECT request.
    let app = Router::new().route("/", get(|| async { Html(PAGE) })).route("/chat", any(chat)).with_state(room);

    let mut builder = wsx::hyper::Server::builder();
    let scheme = match (std::env::var("TLS_CERT"), std::env::var("TLS_KEY")) {
        (Ok(cert), Ok(key)) => {
            builder = builder.tls(wsx::tls::ServerTls::from_pem_files(cert, key)?);
            "https"
        }
        _ => "http",
    };
    let server = builder.bind((host.as_str(), port)).await?;
    println!("Chat on {scheme}://{}", server.local_addr()?);
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    server.serve_with_shutdown(hyper_util::service::TowerToHyperService::new(app), ctrl_c).await
}
