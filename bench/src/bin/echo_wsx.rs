//! wsx echo server: `wsx::accept` over a tokio `TcpListener`, echoing text and binary
//! messages. Replies are fed and flushed only when no further message is already buffered,
//! so a burst is answered with one write.

use wsx::Message;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(wsx_bench::listen_addr()).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = serve(tcp).await {
                eprintln!("echo-wsx: connection error: {e}");
            }
        });
    }
}

async fn serve(tcp: tokio::net::TcpStream) -> wsx::Result<()> {
    let mut ws = wsx::accept(tcp).await?;
    while let Some(message) = ws.recv().await? {
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            ws.feed(message).await?;
            if !ws.has_pending_messages() {
                ws.flush().await?;
            }
        }
    }
    Ok(())
}
