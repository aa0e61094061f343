//! `wsx serve`: WebSocket and plain HTTP on one port.
//!
//! `wsx::Server` speaks only WebSocket, so this runs its own accept loop: for each connection
//! it runs TLS (if configured), reads the request head (bounded in size and time), and either
//! hands the stream — head replayed through [`Prefixed`] — to `wsx::accept_with`, or answers
//! the request as HTTP (the demo page or a static folder). The connection cap, origin check,
//! subprotocol choice and graceful shutdown (close 1001) are done here for that reason.

mod cert;
mod http;
mod prefixed;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use clap::ArgAction;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, broadcast, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};
use wsx::{Accept, CloseCode, Config, DeflateConfig, Message, MessageRef, Replies, WebSocket};

use self::{
    http::{Head, HeadError},
    prefixed::Prefixed,
};
use crate::{
    log::{LogFormat, RECEIVED},
    parse,
};

/// Run a WebSocket server that also answers plain HTTP on the same port.
///
/// With no options it listens on 127.0.0.1:8080, greets every client with "ho!" and prints
/// "Received message => <message>" for each text message; `GET /` serves a demo page that
/// connects back to the server. Ctrl-C or SIGTERM closes every connection with 1001.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wsx serve                       # classic: greets \"ho!\", demo page at http://127.0.0.1:8080/\n  wsx serve --echo --port 9001\n  wsx serve --broadcast --origin http://localhost:8080\n  wsx serve --tls-self-signed     # wss:// and https:// with a development certificate"
)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is logged).
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    /// Echo every message back to its sender.
    #[arg(long, conflicts_with = "broadcast")]
    echo: bool,
    /// Send every message to every connected client (the sender included).
    #[arg(long)]
    broadcast: bool,
    /// The text sent to each client when it connects ("" for none).
    #[arg(long, value_name = "TEXT", default_value = "ho!")]
    greeting: String,
    /// Serve the files of DIR over HTTP instead of the demo page (index.html for directories).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// PEM certificate chain for wss:// and https:// (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Make a self-signed development certificate (localhost, 127.0.0.1, ::1) and serve TLS with it.
    #[arg(long)]
    tls_self_signed: bool,
    /// Where --tls-self-signed writes the certificate (the key goes next to it, as *.key.pem).
    #[arg(long, value_name = "FILE", requires = "tls_self_signed")]
    cert_out: Option<PathBuf>,
    /// The most WebSocket connections open at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// The largest message accepted (e.g. 64KiB, 1MiB, 1000000); bigger ones close with 1009.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse::size)]
    max_message_size: usize,
    /// Negotiate permessage-deflate when the client offers it.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse::on_off, action = ArgAction::Set)]
    deflate: bool,
    /// A subprotocol to accept (repeatable); the first one the client offers that is listed wins.
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Ping every client this often (e.g. 30s, 500ms); a client that does not answer is dropped.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    ping_interval: Option<Duration>,
    /// Accept WebSocket connections only from this Origin (repeatable); others get 403.
    /// Protects against cross-site WebSocket hijacking. Clients that send no Origin (non-browsers) are allowed.
    #[arg(long = "origin", value_name = "ORIGIN")]
    origins: Vec<String>,
    /// How long shutdown waits for clients to finish their closing handshake.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse::duration)]
    shutdown_timeout: Duration,
    /// Do not log each received message.
    #[arg(long, short)]
    quiet: bool,
    /// Log format: human (messages on stdout, the rest on stderr) or json (one object per line on stdout).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
}

/// How long a client has for TLS and for sending its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections still in TLS or reading their head (or being answered over HTTP) at once;
/// past this many new connections are dropped. WebSocket connections count against
/// `--max-connections` instead once upgraded.
const MAX_PENDING: usize = 1024;

/// Messages a slow client may fall behind in `--broadcast` mode before it misses some.
const BROADCAST_BUFFER: usize = 1024;

/// Anything a connection can run over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Stream = Prefixed<Box<dyn Io>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Classic,
    Echo,
    Broadcast,
}

/// What every connection task shares.
struct State {
    config: Config,
    mode: Mode,
    greeting: String,
    quiet: bool,
    origins: Vec<String>,
    subprotocols: Vec<String>,
    static_root: Option<PathBuf>,
    tls: Option<wsx::tls::ServerTls>,
    /// One permit per open WebSocket connection.
    limit: Arc<Semaphore>,
    /// One permit per connection not yet upgraded.
    pending: Arc<Semaphore>,
    broadcast: broadcast::Sender<Message>,
    shutdown: watch::Receiver<bool>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::default()
        .max_message_size(args.max_message_size)
        .max_frame_size(args.max_message_size.min(16 << 20))
        .deflate(args.deflate.then(DeflateConfig::default))
        .ping_interval(args.ping_interval);
    config.validate().context("invalid settings")?;
    if let Some(dir) = &args.static_dir {
        anyhow::ensure!(dir.is_dir(), "--static {}: not a directory", dir.display());
    }
    let mut dev_cert = None;
    let tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(wsx::tls::ServerTls::from_pem_files(cert, key)?)
    } else if args.tls_self_signed {
        let made = cert::make(args.cert_out.clone())?;
        let tls = wsx::tls::ServerTls::from_pem(&made.cert_pem, &made.key_pem)?;
        dev_cert = Some(made);
        Some(tls)
    } else {
        None
    };

    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let (ws, web) = if tls.is_some() { ("wss", "https") } else { ("ws", "http") };
    let mode = match (args.echo, args.broadcast) {
        (true, _) => Mode::Echo,
        (_, true) => Mode::Broadcast,
        _ => Mode::Classic,
    };
    info!(mode = ?mode, "listening on {ws}://{addr}/ (page: {web}://{addr}/)");
    if let Some(made) = &dev_cert {
        info!(cert = %made.cert_path.display(), key = %made.key_path.display(), "wrote a self-signed development certificate");
        if args.log_format == LogFormat::Human {
            let cert = made.cert_path.display();
            let port = addr.port();
            eprintln!(
                "\nSelf-signed development certificate (localhost, 127.0.0.1, ::1): {cert}\n\
                 Trust it explicitly:\n  \
                   wsx connect --ca {cert} wss://localhost:{port}/\n  \
                   curl --cacert {cert} https://localhost:{port}/\n\
                 Browsers: open https://localhost:{port}/ and accept the warning once, or import {cert}\n\
                 as a trusted authority for development only.\n"
            );
        }
    }

    let (stop, shutdown) = watch::channel(false);
    let state = Arc::new(State {
        config,
        mode,
        greeting: args.greeting,
        quiet: args.quiet,
        origins: args.origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect(),
        subprotocols: args.subprotocols,
        static_root: args.static_dir,
        tls,
        limit: Arc::new(Semaphore::new(args.max_connections.min(Semaphore::MAX_PERMITS))),
        pending: Arc::new(Semaphore::new(MAX_PENDING)),
        broadcast: broadcast::channel(BROADCAST_BUFFER).0,
        shutdown,
    });

    let mut tasks = JoinSet::new();
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            biased;
            () = &mut signal => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(pending) = state.pending.clone().try_acquire_owned() else {
                        debug!(%peer, "too many connections in their handshake: dropping");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let state = state.clone();
                    tasks.spawn(async move {
                        connection(&state, tcp, peer, pending).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }

    drop(listener);
    info!(connections = tasks.len(), "shutting down: closing connections with 1001");
    let _ = stop.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(args.shutdown_timeout, drain).await.is_err() {
        warn!(connections = tasks.len(), "shutdown timeout passed: dropping the remaining connections");
        tasks.shutdown().await;
    }
    info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Resolves once the server is shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which happens only after shutdown.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One accepted TCP connection: TLS, head, then HTTP or WebSocket.
async fn connection(state: &State, tcp: TcpStream, peer: SocketAddr, pending: tokio::sync::OwnedSemaphorePermit) {
    let mut shutdown = state.shutdown.clone();
    let setup = async {
        let mut io: Box<dyn Io> = match &state.tls {
            Some(tls) => Box::new(tls.accept(tcp).await.map_err(|e| format!("TLS handshake failed: {e}"))?),
            None => Box::new(tcp),
        };
        let head = http::read_head(&mut io).await;
        Ok::<_, String>((io, head))
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(HEAD_TIMEOUT, setup) => outcome,
        () = stopped(&mut shutdown) => return,
    };
    let (mut io, head) = match outcome {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => return debug!(%peer, "{e}"),
        Err(_) => return debug!(%peer, "timed out waiting for the request"),
    };
    let head = match head {
        Ok(head) => head,
        Err(HeadError::Io(e)) => return debug!(%peer, error = %e, "connection ended before its request"),
        Err(HeadError::TooLarge) => {
            let _ = http::write_simple(&mut io, 431, "Request Header Fields Too Large", &[], false).await;
            return;
        }
        Err(HeadError::Malformed) => {
            let _ = http::write_simple(&mut io, 400, "Bad Request", &[], false).await;
            return;
        }
    };
    if !head.upgrade {
        let answered = tokio::time::timeout(HEAD_TIMEOUT, http::respond(&mut io, &head, state.static_root.as_deref()));
        match answered.await {
            Ok(Ok(status)) => info!(%peer, status, "{} {}", head.method, head.target),
            Ok(Err(e)) => debug!(%peer, error = %e, "HTTP response failed"),
            Err(_) => debug!(%peer, "HTTP response timed out"),
        }
        return;
    }
    let Ok(_permit) = state.limit.clone().try_acquire_owned() else {
        info!(%peer, "over --max-connections: answering 503");
        let _ = http::write_simple(&mut io, 503, "Service Unavailable", &[("Retry-After", "1")], false).await;
        return;
    };
    drop(pending);
    websocket(state, io, head, peer).await;
}

/// The WebSocket handshake (origin check, subprotocol choice) and the session.
// `accept_with`'s callback returns the whole HTTP response as its `Err`.
async fn websocket(state: &State, io: Box<dyn Io>, head: Head, peer: SocketAddr) {
    let Head { bytes, target, .. } = head;
    let stream = Prefixed::new(bytes, io);
    let mut refused = None;
    let accepted = wsx::accept_with(stream, &state.config, |request| {
        if let Some(origin) = request.origin() {
            let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
            if !state.origins.is_empty() && !state.origins.contains(&normalized) {
                refused = Some(origin.to_owned());
                return Err(forbidden().into());
            }
        }
        let chosen = request.protocols().iter().find(|offered| state.subprotocols.contains(offered));
        Ok(match chosen {
            Some(protocol) => Accept::new().protocol(protocol.clone()),
            None => Accept::new(),
        })
    });
    let mut shutdown = state.shutdown.clone();
    let accepted = tokio::select! {
        accepted = accepted => accepted,
        () = stopped(&mut shutdown) => return,
    };
    let ws = match accepted {
        Ok(ws) => ws,
        Err(e) => {
            if let Some(origin) = refused {
                warn!(%peer, origin, "origin not allowed: answered 403");
            } else {
                debug!(%peer, error = %e, "WebSocket handshake failed");
            }
            return;
        }
    };
    info!(%peer, path = target, protocol = ws.protocol(), compressed = ws.is_compressed(), "client connected");
    let started = Instant::now();
    match session(state, ws, peer, shutdown).await {
        Ok(code) => info!(%peer, code, seconds = started.elapsed().as_secs_f64(), "client disconnected"),
        Err(e) => info!(%peer, error = %e, "client connection failed"),
    }
}

/// `403 Forbidden`, for a disallowed origin.
fn forbidden() -> ::http::Response<Bytes> {
    let mut response = ::http::Response::new(Bytes::from_static(b"origin not allowed\n"));
    *response.status_mut() = ::http::StatusCode::FORBIDDEN;
    response
        .headers_mut()
        .insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// One text or binary message from `peer`: log it, then echo or broadcast it as the mode says.
fn handle(state: &State, peer: SocketAddr, message: MessageRef<'_>, replies: &mut Replies<'_>) {
    if !state.quiet {
        match message.as_text() {
            Some(text) => info!(target: RECEIVED, %peer, "Received message => {text}"),
            None => info!(target: RECEIVED, %peer, "Received binary message => {} bytes", message.len()),
        }
    }
    match state.mode {
        Mode::Classic => {}
        // Fails only once we are closing, when there is nobody to answer.
        Mode::Echo => {
            let _ = replies.send(message);
        }
        // Cannot fail while this connection holds a receiver.
        Mode::Broadcast => {
            let _ = state.broadcast.send(message.to_message());
        }
    }
}

/// Run one client until it closes or the server shuts down; returns the close code.
async fn session(
    state: &State,
    mut ws: WebSocket<Stream>,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> wsx::Result<u16> {
    let mut inbox = (state.mode == Mode::Broadcast).then(|| state.broadcast.subscribe());
    if !state.greeting.is_empty() {
        ws.send(state.greeting.as_str()).await?;
    }
    loop {
        tokio::select! {
            // Data messages are handled in place, as they are parsed: echoes of a burst that
            // arrived in one read go back in one write. What comes out here is a ping (already
            // answered), a pong or the peer's close.
            received = ws.recv_each(|message, replies| handle(state, peer, message, replies)) => {
                let Some(message) = received? else { break };
                if let Message::Close(_) = message {
                    // The engine queued the close echo: write it out.
                    ws.flush().await?;
                }
            }
            relayed = async { inbox.as_mut()?.recv().await.ok() }, if inbox.is_some() => {
                match relayed {
                    Some(message) => ws.send(message).await?,
                    None => debug!(%peer, "fell behind the broadcast; some messages were skipped"),
                }
            }
            () = stopped(&mut shutdown) => {
                ws.close(CloseCode::AWAY, "server shutting down").await?;
                break;
            }
        }
    }
    Ok(ws.close_reason().map_or(CloseCode::ABNORMAL.0, |r| r.code().0))
}
