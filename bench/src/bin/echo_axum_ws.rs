//! axum 0.8's own WebSocket (`axum::extract::ws`, tokio-tungstenite 0.29 underneath) echoing
//! each text or binary message, under `axum::serve`: the baseline `wsx::axum` is compared with.

use axum::{
    Router,
    extract::ws::{Message, WebSocket, WebSocketUpgrade},
    response::Response,
    routing::any,
    serve::ListenerExt,
};

async fn echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.max_message_size(64 << 20).on_upgrade(handle)
}

async fn handle(mut ws: WebSocket) {
    while let Some(Ok(message)) = ws.recv().await {
        let data = matches!(message, Message::Text(_) | Message::Binary(_));
        if matches!(message, Message::Close(_)) || (data && ws.send(message).await.is_err()) {
            break;
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // TCP_NODELAY on every accepted socket, as the other servers set it.
    let listener = tokio::net::TcpListener::bind(wsx_bench::listen_addr()).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, Router::new().route("/", any(echo))).await
}
