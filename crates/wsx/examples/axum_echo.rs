//! The echo server of `echo_server` (permessage-deflate, 64 MiB messages, `recv_each`) as an
//! axum 0.8 route with `wsx::axum::WebSocketUpgrade`, under `axum::serve`: over plain TCP the
//! WebSocket gets the socket back from hyper, so it runs as on `wsx::Server`. The Autobahn
//! conformance suite runs against it (`bash autobahn/run axum`) and the benchmarks compare it
//! with `echo_server`.
//!
//! ```sh
//! cargo run --release -p wsx --example axum_echo   # ws://127.0.0.1:9001/, or set HOST/PORT
//! ```

use std::sync::{Arc, LazyLock};

use axum::{Router, response::Response, routing::any, serve::ListenerExt};
use wsx::{Config, axum::WebSocketUpgrade};

#[path = "shared/echo.rs"]
mod shared;

/// One config for every connection, as `wsx::Server` shares its own.
static CONFIG: LazyLock<Arc<Config>> = LazyLock::new(|| Arc::new(shared::server_config()));

async fn echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.config(CONFIG.clone()).on_upgrade(|ws| async move {
        if let Err(e) = shared::echo(ws).await {
            eprintln!("WebSocket failed: {e}");
        }
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001u16);
    // `any`, not `get`: over HTTP/2 a WebSocket is a CONNECT request.
    let app = Router::new().route("/", any(echo));
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    println!("Echoing on ws://{}/ (axum)", listener.local_addr()?);
    // TCP_NODELAY, as wsx::Server sets it: small echoes must not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // Ctrl-C ends the process (valgrind's `scripts/bench-instructions` stops it with SIGINT).
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
