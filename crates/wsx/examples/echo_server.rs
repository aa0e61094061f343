//! Echoes every message back (text as text, binary as binary), with permessage-deflate and a
//! 64 MiB message limit: the server the Autobahn conformance suite and the benchmarks run
//! against.
//!
//! ```sh
//! cargo run --release -p wsx --example echo_server   # ws://127.0.0.1:9001, or set HOST/PORT
//! ```

use wsx::{Config, DeflateConfig, Server};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> wsx::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001u16);
    let config = Config::default().deflate(Some(DeflateConfig::default())).max_message_size(64 << 20);
    let server = Server::builder().config(config).bind((host.as_str(), port)).await?;
    println!("Echoing on ws://{}", server.local_addr()?);

    let handler = |mut ws: wsx::WebSocket<_>, _info| async move {
        loop {
            let message = match ws.recv().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                // A protocol failure is reported as soon as our close frame is out; keep
                // polling so the closing handshake finishes cleanly, then the stream ends.
                Err(e) if e.is_protocol() => continue,
                Err(e) => return Err(e),
            };
            if message.is_data() {
                // Queue the echo; write once no other message is already waiting, so a burst
                // that arrived in one read goes back in one write.
                ws.feed(message).await?;
                if !ws.has_pending_messages() {
                    ws.flush().await?;
                }
            }
        }
        Ok(())
    };
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    server.serve_with_shutdown(handler, ctrl_c).await
}
