//! The echo server of `echo_server` (permessage-deflate, 64 MiB messages, `recv_each`) inside
//! a plain hyper service on [`wsx::hyper::Server`]: one port speaks HTTP/1.1 and cleartext
//! HTTP/2 with prior knowledge, and a WebSocket is either a `GET` + `Upgrade` or an HTTP/2
//! extended CONNECT (RFC 8441). Other requests get a line of text.
//!
//! ```sh
//! cargo run --release -p wsx --example hyper_echo   # http://127.0.0.1:9001, or set HOST/PORT
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;

#[path = "shared/echo.rs"]
mod shared;

/// Upgrade WebSocket requests and echo; answer the rest with a line of text.
async fn service(mut request: http::Request<Incoming>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let is_websocket = request.headers().contains_key(http::header::SEC_WEBSOCKET_VERSION);
    match wsx::hyper::upgrade(&mut request, &shared::server_config()) {
        Ok((response, upgrade)) => {
            let version = request.version();
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(ws) => {
                        if let Err(e) = shared::echo(ws).await {
                            eprintln!("{version:?} WebSocket failed: {e}");
                        }
                    }
                    Err(e) => eprintln!("upgrade failed: {e}"),
                }
            });
            Ok(response)
        }
        // A bad WebSocket request gets its 4xx; anything else a page.
        Err(reject) if is_websocket => Ok(reject.into_response().map(Full::new)),
        Err(_) => Ok(http::Response::new(Full::new(Bytes::from_static(b"hyper_echo: connect a WebSocket\n")))),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> wsx::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001u16);
    let server = wsx::hyper::Server::bind((host.as_str(), port)).await?;
    println!("Echoing on ws://{0} (HTTP/1.1 and HTTP/2 cleartext, http://{0})", server.local_addr()?);
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    server.serve_with_shutdown(hyper::service::service_fn(service), ctrl_c).await
}
