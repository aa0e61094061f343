//! Greets every client with `ho!` and prints what it sends.
//!
//! ```sh
//! cargo run --release -p wsx --example ho        # ws://0.0.0.0:8080, or set PORT
//! ```
//!
//! Ctrl-C shuts the server down gracefully: every client is sent close 1001.

use wsx::{Message, Server};

#[tokio::main]
async fn main() -> wsx::Result<()> {
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080u16);
    let server = Server::bind(("0.0.0.0", port)).await?;
    println!("Listening on ws://{}", server.local_addr()?);

    let handler = |mut ws: wsx::WebSocket<_>, info: wsx::ConnectionInfo| async move {
        println!("{} connected", info.peer_addr());
        ws.send("ho!").await?;
        while let Some(message) = ws.recv().await? {
            match message {
                Message::Text(text) => println!("Received message => {text}"),
                Message::Binary(data) => {
                    println!("Received message => <{} bytes of binary>", data.len())
                }
                _ => {}
            }
        }
        println!("{} disconnected", info.peer_addr());
        Ok(())
    };
    let ctrl_c = async {
        // If Ctrl-C cannot be watched, run until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        println!("Shutting down");
    };
    server.serve_with_shutdown(handler, ctrl_c).await
}
