//! tokio-tungstenite echo server, written as its own `autobahn-server` example is:
//! `accept_async`, then read a message and send it back.

use futures_util::{SinkExt, StreamExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(wsx_bench::listen_addr()).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = serve(tcp).await {
                eprintln!("echo-tungstenite: connection error: {e}");
            }
        });
    }
}

async fn serve(tcp: tokio::net::TcpStream) -> tokio_tungstenite::tungstenite::Result<()> {
    let mut ws = tokio_tungstenite::accept_async(tcp).await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}
