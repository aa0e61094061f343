//! The `ho` server over `wss://`: greets every client with `ho!` and prints what it sends.
//!
//! ```text
//! TLS_CERT=cert.pem TLS_KEY=key.pem cargo run -p wsx --example tls_server   # your certificate
//! cargo run -p wsx --example tls_server                                     # a development one
//! ```
//!
//! Without `TLS_CERT`/`TLS_KEY` it makes a self-signed certificate for localhost, 127.0.0.1
//! and ::1, writes it to `target/tls-dev/cert.pem`, and prints how to connect with the
//! `tls_client` example. Listens on 127.0.0.1:8443 (env `PORT` overrides).

use std::path::PathBuf;

use wsx::{Message, Server, tls::ServerTls};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8443);
    let tls = match (std::env::var_os("TLS_CERT"), std::env::var_os("TLS_KEY")) {
        (Some(cert), Some(key)) => ServerTls::from_pem_files(cert, key)?,
        _ => {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])?;
            let dir = PathBuf::from("target/tls-dev");
            std::fs::create_dir_all(&dir)?;
            let cert_path = dir.join("cert.pem");
            std::fs::write(&cert_path, cert.cert.pem())?;
            println!("Self-signed development certificate: {}", cert_path.display());
            println!(
                "Connect with: WSX_CA={} cargo run -p wsx --example tls_client -- wss://localhost:{port}",
                cert_path.display()
            );
            ServerTls::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem())?
        }
    };
    let server = Server::builder().tls(tls).bind(("127.0.0.1", port)).await?;
    println!("Listening on wss://{}", server.local_addr()?);
    server
        .serve(|mut ws, _info| async move {
            ws.send("ho!").await?;
            while let Some(message) = ws.recv().await? {
                if let Message::Text(text) = message {
                    println!("Received message => {text}");
                }
            }
            Ok(())
        })
        .await?;
    Ok(())
}
