//! fastwebsockets' `upgrade` inside an axum 0.8 handler, under `axum::serve`, echoing each text
//! or binary frame through a `FragmentCollector`, as `echo-fastws` does on hyper's `http1`.

use axum::{Router, body::Body, extract::Request, response::Response, routing::any, serve::ListenerExt};
use fastwebsockets::upgrade;

async fn echo(mut request: Request) -> Response {
    match upgrade::upgrade(&mut request) {
        Ok((response, fut)) => {
            tokio::spawn(async move {
                if let Err(e) = tokio::task::unconstrained(wsx_bench::fastws_echo(fut)).await {
                    eprintln!("echo-axum-fastws: connection error: {e}");
                }
            });
            response.map(|_| Body::empty())
        }
        Err(e) => {
            let mut response = Response::new(Body::from(e.to_string()));
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            response
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // TCP_NODELAY on every accepted socket, as the other servers set it.
    let listener = tokio::net::TcpListener::bind(wsx_bench::listen_addr()).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, Router::new().route("/", any(echo))).await
}
