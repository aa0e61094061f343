//! Connect, send `hey`, and print what arrives for a couple of seconds.
//!
//! ```text
//! cargo run -p wsx --example client -- ws://127.0.0.1:8080
//! ```
//!
//! The URL comes from the first argument, else `WSX_URL`, else `ws://127.0.0.1:8080`.

use std::time::Duration;

use wsx::{CloseCode, Message};

#[tokio::main]
async fn main() -> wsx::Result<()> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("WSX_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:8080".to_owned());
    let (mut ws, _response) = wsx::connect(&url).await?;
    println!("Connected to {url}");
    ws.send("hey").await?;

    let linger = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(linger);
    loop {
        tokio::select! {
            message = ws.recv() => match message? {
                Some(Message::Text(text)) => println!("Received: {text}"),
                Some(Message::Binary(data)) => println!("Received: {} bytes", data.len()),
                Some(Message::Close(frame)) => println!("Received: close {frame:?}"),
                Some(_) => {}
                // The server closed and the closing handshake is done.
                None => return Ok(()),
            },
            () = &mut linger => break,
        }
    }
    ws.close(CloseCode::NORMAL, "bye").await
}
