//! The client side of the Autobahn|Testsuite conformance run: echoes every case the fuzzing
//! server plays, then asks it to write its reports.
//!
//! `AUTOBAHN_URL` (default `ws://127.0.0.1:9001`) and `AUTOBAHN_AGENT` (default `wsx`) come
//! from `../shared/autobahn/run-client-suite.sh`:
//!
//! ```sh
//! cargo run --release -p wsx --example autobahn_client
//! ```

use std::time::Duration;

use tokio::net::TcpStream;
use wsx::{Config, DeflateConfig, Message, WebSocket};

#[path = "shared/echo.rs"]
mod shared;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var("AUTOBAHN_URL").unwrap_or_else(|_| "ws://127.0.0.1:9001".into());
    let agent = std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "wsx".into());

    let count = case_count(&base).await?;
    eprintln!("autobahn_client: {count} cases against {base} as {agent:?}");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        if let Err(e) = echo(&url).await {
            // Failures are what many cases test; the suite judges them, not us.
            eprintln!("case {case}: {e}");
        }
    }
    let mut ws = open(&format!("{base}/updateReports?agent={agent}")).await?;
    while ws.recv().await?.is_some() {}
    Ok(())
}

/// The suite's configuration: permessage-deflate offered, and room for its 16 MiB messages.
fn config() -> Config {
    Config::default()
        .deflate(Some(DeflateConfig::default()))
        .max_message_size(64 << 20)
        .close_timeout(Duration::from_secs(5))
}

async fn open(url: &str) -> wsx::Result<WebSocket<TcpStream>> {
    let request = http::Request::get(url).body(()).expect("a valid URL from the suite");
    let authority = request.uri().authority().expect("the URL has a host").as_str().to_owned();
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = wsx::handshake(tcp, &request, &config()).await?;
    Ok(ws)
}

async fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let mut ws = open(&format!("{base}/getCaseCount")).await?;
    let mut count = None;
    while let Some(message) = ws.recv().await? {
        if let Message::Text(text) = message {
            count = Some(text.trim().parse()?);
        }
    }
    count.ok_or_else(|| "no case count received".into())
}

/// Echo text as text and binary as binary until the connection ends.
async fn echo(url: &str) -> wsx::Result<()> {
    // The owned-message path here; the server role runs the borrowed one (`echo_server`).
    shared::echo_messages(open(url).await?).await
}
