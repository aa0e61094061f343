//! The wsx echo server that each peer's client runs its scenario against, logging what it saw
//! of every connection: on [`wsx::Server`], or ([`Host::Axum`]) on an axum 0.8 route with
//! `wsx::axum::WebSocketUpgrade`, under `axum::serve` (plain) or `wsx::hyper::Server` (TLS with
//! HTTP/2 by ALPN), which also serves the browser page at `/`.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    task::JoinHandle,
};
use wsx::{CloseFrame, Config, DeflateConfig, Message, WebSocket};

use crate::{axum_host, certs::TestCert, within};

/// Server configs: permessage-deflate on (as offered by the peer) or off.
pub(crate) fn server_config(deflate: bool) -> Config {
    let config = Config::default();
    if deflate { config.deflate(Some(DeflateConfig::default())) } else { config }
}

/// Where the echo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    /// `wsx::Server`.
    Native,
    /// An axum route with `wsx::axum::WebSocketUpgrade`.
    Axum,
}

/// What the echo server saw on one connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnLog {
    /// The HTTP version of the upgrade (axum host only).
    pub(crate) http_version: Option<http::Version>,
    /// The WebSocket runs on the TCP socket itself (axum host only).
    pub(crate) fast_path: bool,
    /// permessage-deflate was negotiated.
    pub(crate) compressed: bool,
    /// Data messages echoed.
    pub(crate) echoed: usize,
    /// The close frame the peer sent (`Some(None)` for one without a body).
    pub(crate) peer_close: Option<Option<CloseFrame>>,
    /// How the connection ended, per the engine.
    pub(crate) close_reason: Option<wsx::CloseReason>,
    /// The error that ended it, if any.
    pub(crate) error: Option<String>,
    /// The connection task is done.
    pub(crate) finished: bool,
}

/// A wsx echo server ([`wsx::Server`]) on `127.0.0.1:0`: echoes text and binary with their
/// type, lets the engine answer pings and closes, and logs each connection. Stopped when dropped.
pub(crate) struct EchoServer {
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<Vec<ConnLog>>>,
    shutdown: Box<dyn Fn() + Send + Sync>,
    task: JoinHandle<wsx::Result<()>>,
}

impl EchoServer {
    /// Start it on [`wsx::Server`], over TLS with `cert`'s server certificate when given.
    pub(crate) async fn start(config: Config, cert: Option<&TestCert>) -> Self {
        Self::start_on(Host::Native, config, cert).await
    }

    /// Start it on `host`, over TLS with `cert`'s server certificate when given.
    pub(crate) async fn start_on(host: Host, config: Config, cert: Option<&TestCert>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<ConnLog>>> = Arc::default();
        if host == Host::Axum {
            let (shutdown, task) = axum_host::start(listener, config, cert, log.clone());
            return Self { addr, log, shutdown, task };
        }
        let builder = wsx::Server::builder().config(config);
        let (shutdown, task) = match cert {
            None => {
                let server = builder.from_listener(listener);
                (shutdown_fn(server.shutdown_handle()), tokio::spawn(server.serve(echo_handler(log.clone()))))
            }
            Some(cert) => {
                let tls = wsx::tls::ServerTls::from_pem(&cert.cert_pem, &cert.key_pem).expect("ServerTls::from_pem");
                let server = builder.tls(tls).from_listener(listener);
                (shutdown_fn(server.shutdown_handle()), tokio::spawn(server.serve(echo_handler(log.clone()))))
            }
        };
        Self { addr, log, shutdown, task }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `ws://127.0.0.1:PORT/` or `wss://127.0.0.1:PORT/`.
    pub(crate) fn url(&self, tls: bool) -> String {
        format!("{}://127.0.0.1:{}/", if tls { "wss" } else { "ws" }, self.port())
    }

    /// A copy of the connection logs.
    pub(crate) fn logs(&self) -> Vec<ConnLog> {
        self.log.lock().unwrap().clone()
    }

    /// Wait until every connection so far has finished (the peer's close has run its course).
    pub(crate) async fn settle(&self) -> Vec<ConnLog> {
        within("the echo server's connections to finish", Duration::from_secs(15), async {
            loop {
                let logs = self.logs();
                if logs.iter().all(|l| l.finished) {
                    return logs;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// A server's shutdown as a closure.
fn shutdown_fn(handle: wsx::ShutdownHandle) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || handle.shutdown())
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        (self.shutdown)();
        self.task.abort();
    }
}

/// The handler given to [`wsx::Server::serve`]: echo and log.
fn echo_handler<S>(
    log: Arc<Mutex<Vec<ConnLog>>>,
) -> impl Fn(WebSocket<S>, wsx::ConnectionInfo) -> std::pin::Pin<Box<dyn Future<Output = wsx::Result<()>> + Send>>
+ Send
+ Sync
+ 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    move |ws, _info| {
        let log = log.clone();
        Box::pin(async move {
            log_connection(ws, &log, ConnLog::default()).await;
            Ok(())
        })
    }
}

/// Echo and log one connection, its log entry made here.
pub(crate) async fn log_connection<S>(ws: WebSocket<S>, log: &Mutex<Vec<ConnLog>>, first: ConnLog)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let index = {
        let mut log = log.lock().unwrap();
        log.push(first);
        log.len() - 1
    };
    echo_connection(ws, log, index).await;
    log.lock().unwrap()[index].finished = true;
}

async fn echo_connection<S>(mut ws: WebSocket<S>, log: &Mutex<Vec<ConnLog>>, index: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    log.lock().unwrap()[index].compressed = ws.is_compressed();
    let error = loop {
        match ws.recv().await {
            Ok(Some(m @ (Message::Text(_) | Message::Binary(_)))) => {
                if let Err(e) = ws.send(m).await {
                    break Some(format!("send: {e}"));
                }
                log.lock().unwrap()[index].echoed += 1;
            }
            Ok(Some(Message::Close(frame))) => log.lock().unwrap()[index].peer_close = Some(frame),
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(e) => break Some(format!("recv: {e}")),
        }
    };
    let mut log = log.lock().unwrap();
    log[index].error = error;
    log[index].close_reason = ws.close_reason();
}
