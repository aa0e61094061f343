//! Echoes every message back (text as text, binary as binary), with permessage-deflate and a
//! 64 MiB message limit: the server the Autobahn conformance suite and the benchmarks run
//! against. It answers through the borrowed receive path (`WebSocket::recv_each`); with
//! `WSX_ECHO=messages`, through owned messages (`recv`, `feed`, `flush`) instead; with
//! `WSX_ECHO=split`, through split halves in two tasks joined by a channel. Built with the
//! `metrics` feature and run with `WSX_METRICS=1`, it installs a Prometheus recorder first (the
//! benchmark of the metrics' cost; nothing scrapes it).
//!
//! ```sh
//! cargo run --release -p wsx --example echo_server   # ws://127.0.0.1:9001, or set HOST/PORT
//! ```

use wsx::Server;

#[path = "shared/echo.rs"]
mod shared;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> wsx::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001u16);
    #[cfg(feature = "metrics")]
    if std::env::var_os("WSX_METRICS").is_some() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder();
        // Kept for the process's life: the recorder lives as long as its handle is reachable.
        std::mem::forget(recorder.map_err(std::io::Error::other)?);
        wsx::metrics::enable();
        println!("Prometheus recorder installed");
    }
    let server = Server::builder().config(shared::server_config()).bind((host.as_str(), port)).await?;
    println!("Echoing on ws://{}", server.local_addr()?);

    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match std::env::var("WSX_ECHO").as_deref() {
        Ok("messages") => server.serve_with_shutdown(|ws, _info| shared::echo_messages(ws), ctrl_c).await,
        Ok("split") => server.serve_with_shutdown(|ws, _info| shared::echo_split(ws), ctrl_c).await,
        _ => server.serve_with_shutdown(|ws, _info| shared::echo(ws), ctrl_c).await,
    }
}
