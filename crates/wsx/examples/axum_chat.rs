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
//! The room is a `tokio::sync::broadcast` channel: each message is copied to each member's
//! queue, and a member more than 256 messages behind skips what it missed.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    response::{Html, Response},
    routing::{any, get},
};
use tokio::sync::broadcast;
use wsx::{Config, DeflateConfig, Message, Utf8Bytes, WebSocket, axum::WebSocketUpgrade, hyper::Io};

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
    tx: broadcast::Sender<Utf8Bytes>,
}

async fn chat(State(room): State<Room>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.config(room.config.clone()).same_origin().on_upgrade(move |ws| member(ws, room.tx))
}

/// One member: what it says goes to the room, what the room says goes to it.
async fn member(mut ws: WebSocket<Io>, tx: broadcast::Sender<Utf8Bytes>) {
    let version = ws.get_ref().http_version();
    let mut rx = tx.subscribe();
    let _ = tx.send(Utf8Bytes::from(format!("* someone joined (over {version:?})")));
    loop {
        tokio::select! {
            // `recv` is cancel-safe: a message is taken whole or not at all.
            message = ws.recv() => match message {
                Ok(Some(Message::Text(text))) => {
                    let _ = tx.send(text);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            },
            said = rx.recv() => match said {
                Ok(text) => {
                    if ws.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let _ = ws.send(format!("* you missed {missed} messages")).await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let _ = tx.send(Utf8Bytes::from_static("* someone left"));
}

#[tokio::main]
async fn main() -> wsx::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000u16);
    let config = Arc::new(Config::default().deflate(Some(DeflateConfig::default())));
    let room = Room { config, tx: broadcast::channel(256).0 };
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
