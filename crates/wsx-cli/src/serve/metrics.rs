//! `wsx serve --metrics ADDR`: the library's metrics in Prometheus text at
//! `http://ADDR/metrics`, served by a second wsx server (plain HTTP only) on that address.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tracing::info;
use wsx::{Reject, Server};

/// Install the Prometheus recorder (before the first connection, as `wsx::metrics` asks) and
/// serve its text on `addr`. Returns the address it listens on.
pub(crate) async fn start(addr: &str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let handle = PrometheusBuilder::new().install_recorder().context("--metrics: cannot install the recorder")?;
    wsx::metrics::enable();
    let server = Server::builder()
        .on_request(|_| Err(Reject::status(::http::StatusCode::NOT_FOUND)))
        .on_http(move |request, _peer| {
            let handle = handle.clone();
            async move {
                if request.uri().path() != "/metrics" {
                    let mut response = ::http::Response::new(Bytes::from_static(b"see /metrics\n"));
                    *response.status_mut() = ::http::StatusCode::NOT_FOUND;
                    return response;
                }
                // Open connections' counts up to this moment, not up to the last harvest.
                wsx::metrics::flush();
                let mut response = ::http::Response::new(Bytes::from(handle.render()));
                response.headers_mut().insert(
                    ::http::header::CONTENT_TYPE,
                    ::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
        })
        .from_listener(listener);
    tokio::spawn(async move {
        if let Err(e) = server.serve(|_, _| async { Ok(()) }).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    info!("metrics on http://{local}/metrics");
    Ok(local)
}
