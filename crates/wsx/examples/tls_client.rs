//! Connect over TLS, send `hey`, and print the first answer.
//!
//! ```text
//! WSX_CA=ca.pem cargo run -p wsx --example tls_client -- wss://localhost:8443
//! ```
//!
//! Certificates are checked against the Mozilla roots, or only against the PEM file named by
//! `WSX_CA` (for a private CA or a self-signed server).

use wsx::{ClientBuilder, CloseCode, Message};

#[tokio::main]
async fn main() -> wsx::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "wss://localhost:8443".to_owned());
    let mut client = ClientBuilder::new(&url);
    if let Some(ca) = std::env::var_os("WSX_CA") {
        client = client.root_certificates_pem_file(ca);
    }
    let (mut ws, _response) = client.connect().await?;
    println!("Connected to {url}");
    ws.send("hey").await?;
    if let Some(Message::Text(text)) = ws.recv().await? {
        println!("Received: {text}");
    }
    ws.close(CloseCode::NORMAL, "bye").await
}
