//! fastwebsockets echo server, written as its own `echo_server` example is: a hyper 1
//! HTTP/1 connection with upgrades, `upgrade::upgrade`, then a `FragmentCollector` (which
//! keeps auto-close and auto-pong on, the defaults) echoing each text or binary frame.
//!
//! Unlike the example it runs on the same multi-thread runtime as the other servers, so
//! that only the WebSocket library differs.

use fastwebsockets::{WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(wsx_bench::listen_addr()).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(tcp);
            let conn = http1::Builder::new().serve_connection(io, service_fn(server_upgrade)).with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("echo-fastws: http error: {e:?}");
            }
        });
    }
}

async fn server_upgrade(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        if let Err(e) = tokio::task::unconstrained(wsx_bench::fastws_echo(fut)).await {
            eprintln!("echo-fastws: connection error: {e}");
        }
    });
    Ok(response)
}
