//! Helpers of the metrics tests that count one connection's traffic (metrics_engine,
//! metrics_flush).

use tokio::{io::DuplexStream, task::JoinHandle};
use wsx::{Accept, Config, WebSocket};

/// A client and a server connected over an in-memory duplex, the client with `client_config`
/// and the server with `server_config`; the server, in a task of its own, echoes every data
/// message until the connection ends. Returns the client and that task: `Ok` after a normal
/// close, `Err` when the connection broke.
pub(crate) async fn duplex_echo(
    client_config: &Config,
    server_config: &Config,
) -> (WebSocket<DuplexStream>, JoinHandle<wsx::Result<()>>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let request = http::Request::get("ws://x/").body(()).unwrap();
    let (client, server) = tokio::join!(
        wsx::handshake(a, &request, client_config),
        wsx::accept_with(b, server_config, |_| Ok(Accept::new()))
    );
    let (client, mut server) = (client.expect("the client handshake").0, server.expect("the server handshake"));
    let echo = tokio::spawn(async move {
        while let Some(message) = server.recv().await? {
            if message.is_data() {
                server.send(message).await?;
            }
        }
        Ok(())
    });
    (client, echo)
}
