//! The echo on an axum 0.8 route (`wsx::axum::WebSocketUpgrade`): under `axum::serve` over
//! plain TCP, or under `wsx::hyper::Server` with TLS (ALPN `h2`, `http/1.1`), which also serves
//! the browser page (`tests-peers/browser/page.html`) at `/` so that a browser opens its
//! WebSocket on the same origin.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    response::{Html, IntoResponse, Response},
    routing::any,
};
use tokio::{net::TcpListener, task::JoinHandle};
use wsx::{
    Config,
    axum::{WebSocketUpgrade, WebSocketUpgradeRejection},
};

use crate::{
    certs::TestCert,
    echo_server::{ConnLog, log_connection},
    peers::repo_root,
};

#[derive(Clone)]
struct App {
    config: Arc<Config>,
    log: Arc<Mutex<Vec<ConnLog>>>,
}

/// `/`: the WebSocket echo for an upgrade request, the browser page for any other request.
async fn root(State(app): State<App>, upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    let Ok(upgrade) = upgrade else {
        let page = std::fs::read_to_string(repo_root().join("tests-peers/browser/page.html")).expect("page.html");
        return Html(page).into_response();
    };
    upgrade.config(app.config.clone()).on_upgrade(move |ws| async move {
        let first = ConnLog {
            http_version: Some(ws.get_ref().http_version()),
            fast_path: ws.get_ref().tcp_stream().is_some(),
            ..ConnLog::default()
        };
        log_connection(ws, &app.log, first).await;
    })
}

/// Serve the echo on `listener`: `axum::serve` without `cert`, `wsx::hyper::Server` with TLS
/// with it. Returns the shutdown and the serving task.
pub(crate) fn start(
    listener: TcpListener,
    config: Config,
    cert: Option<&TestCert>,
    log: Arc<Mutex<Vec<ConnLog>>>,
) -> (Box<dyn Fn() + Send + Sync>, JoinHandle<wsx::Result<()>>) {
    let router = Router::new().route("/", any(root)).with_state(App { config: Arc::new(config), log });
    match cert {
        None => {
            let stop = tokio_util::sync::CancellationToken::new();
            let stopped = stop.clone();
            let task = tokio::spawn(async move {
                axum::serve(listener, router).with_graceful_shutdown(stopped.cancelled_owned()).await?;
                Ok(())
            });
            (Box::new(move || stop.cancel()), task)
        }
        Some(cert) => {
            let tls = wsx::tls::ServerTls::from_pem(&cert.cert_pem, &cert.key_pem).expect("ServerTls::from_pem");
            let server = wsx::hyper::Server::builder().tls(tls).from_listener(listener);
            let handle = server.shutdown_handle();
            (Box::new(move || handle.shutdown()), tokio::spawn(server.serve_tower(router)))
        }
    }
}
