//! `wsx serve`: WebSocket and plain HTTP on one port, on `wsx::Server`.
//!
//! The library runs the accept loop, the connection cap (503 over it), the accept backoff, the
//! handshake timeout and the graceful shutdown (close 1001); plain HTTP requests reach
//! [`http::Site`] through `Builder::on_http`, read by the engine's own parser. With TLS the
//! server is `wsx::hyper::Server` instead, which speaks HTTP/2 as well ([`https`]). What is
//! left here is the command's own: the modes and the greeting ([`session`]), the demo page and
//! static files, the origin check, subprotocols, TLS setup and logging.

mod cert;
mod http;
mod https;
mod memory;
mod metrics;
mod session;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use clap::ArgAction;
use tokio::net::TcpListener;
use tracing::{info, warn};
use wsx::{
    Accept, Config, DeflateConfig, Reject, Request, Server,
    pubsub::{
        Hub,
        redis::{RedisBroker, RedisConfig, position_prefix},
    },
};

pub(crate) use self::memory::on_worker_park;
use self::{
    cert::DevCert,
    http::Site,
    session::{MAX_ROOM_NAME, Mode, State},
};
use crate::{log::LogFormat, parse};

/// Run a WebSocket server that also answers plain HTTP on the same port.
///
/// With no options it listens on 127.0.0.1:8080, greets every client with "ho!" and prints
/// "Received message => <message>" for each text message; `GET /` serves a demo page that
/// connects back to the server. With --echo it sends every message back and greets no one, as
/// an echo server's clients expect. Ctrl-C or SIGTERM closes every connection with 1001.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wsx serve                       # classic: greets \"ho!\", demo page at http://127.0.0.1:8080/\n  wsx serve --echo --port 9001\n  wsx serve --rooms               # chat rooms: ws://127.0.0.1:8080/room/<name>, two tabs of the page chat\n  wsx serve --rooms --redis redis://127.0.0.1:6379/ --port 8081   # rooms shared by every server on that Redis\n  wsx serve --broadcast --origin http://localhost:8080\n  wsx serve --tls-self-signed     # wss:// and https:// with a development certificate"
)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is logged).
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    /// Echo every message back to its sender (and send no greeting unless --greeting is given).
    #[arg(long, conflicts_with_all = ["broadcast", "rooms"])]
    echo: bool,
    /// Send every message to every connected client (the sender included): one room.
    #[arg(long, conflicts_with = "rooms")]
    broadcast: bool,
    /// Chat rooms: a client connecting to /room/NAME joins room NAME (/ joins "lobby"), and every
    /// message it sends goes to everyone in its room, itself included.
    #[arg(long)]
    rooms: bool,
    /// With --rooms or --broadcast: share the rooms with every other `wsx serve` using this Redis
    /// (redis://[user:password@]host:port/, or rediss:// for TLS with the system's roots). Delivery
    /// between servers is at most once unless --resumable: when the
    /// connection to Redis drops, the clients of the affected rooms are closed with 1012 so that
    /// they reconnect, and the server reconnects by itself.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// With --redis: resumable rooms. Every message gets a position in its room and is sent as
    /// `OFFSET:EPOCH:message`; each room keeps its last --history messages in Redis for 10
    /// minutes. A client that reconnects (to any server) with `?since=OFFSET:EPOCH` gets what it
    /// missed first, or the text `resume:lost:OFFSET:EPOCH` when that is no longer possible.
    /// A dropped connection to Redis is caught up from the history instead of closing clients.
    #[arg(long, requires = "redis")]
    resumable: bool,
    /// With --resumable: how many messages each room keeps for clients that resume.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "resumable")]
    history: usize,
    /// With --rooms or --broadcast: the most bytes of others' messages waiting for one client
    /// that does not read fast enough; past it, that client is closed with 1008.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse::size)]
    max_backlog: usize,
    /// The text sent to each client when it connects ("" for none). Default: "ho!", none with --echo.
    #[arg(long, value_name = "TEXT")]
    greeting: Option<String>,
    /// Serve the files of DIR over HTTP instead of the demo page (index.html for directories;
    /// files up to 16 MiB).
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
    /// The most connections open at once (WebSocket, handshakes and plain HTTP alike; over TLS
    /// the WebSockets of one HTTP/2 connection count once); more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// The most bytes all connections together may hold for messages being received, inflaters
    /// and queued output (e.g. 512MiB, 1GiB, 1000000000), beyond 128 KiB each that is not
    /// counted; a connection that would pass it is closed with 1013 (try again later) and the
    /// others keep working. Over HTTP/1.1 and HTTP/2, with and without TLS. `off` for no budget:
    /// then only --max-connections and the per-connection limits bound the memory.
    #[arg(long, value_name = "SIZE|off", default_value = "1GiB", value_parser = parse::size_or_off)]
    memory_budget: parse::SizeOrOff,
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
    /// Serve Prometheus metrics (connections, handshakes, messages, bytes, closes) at
    /// http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Give freed heap memory back to the system after the load drops (glibc's malloc_trim,
    /// looked at every 2 s), so that the RSS falls back once connections close.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse::on_off, action = ArgAction::Set)]
    trim_memory: bool,
    /// Log format: human (messages on stdout, the rest on stderr) or json (one object per line on stdout).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let config = connection_config(&args)?;
    if let Some(addr) = &args.metrics {
        metrics::start(addr).await?;
    }
    memory::spawn(args.trim_memory);
    let site = Site::new(args.static_dir.clone(), args.resumable)?;
    let (tls, dev_cert) = tls(&args)?;
    let mode = match (args.echo, args.broadcast, args.rooms) {
        (true, _, _) => Mode::Echo,
        (_, true, _) => Mode::Broadcast,
        (_, _, true) => Mode::Rooms,
        _ => Mode::Classic,
    };
    // An echo server's clients expect back what they sent and nothing else (`wsx bench`,
    // Autobahn, any echo test): it greets no one unless asked to.
    let greeting = args.greeting.clone().unwrap_or_else(|| if mode == Mode::Echo { "" } else { "ho!" }.to_owned());
    let mut hub = Hub::builder().max_queued_bytes(args.max_backlog).max_topic_len(MAX_ROOM_NAME);
    if let Some(url) = &args.redis {
        anyhow::ensure!(matches!(mode, Mode::Rooms | Mode::Broadcast), "--redis needs --rooms or --broadcast");
        let mut redis = RedisConfig::new(url.as_str());
        if args.resumable {
            redis = redis.history(args.history, HISTORY_TTL).envelope(position_prefix);
        }
        let broker = RedisBroker::with(redis).await.with_context(|| format!("cannot use Redis at {url}"))?;
        info!(
            redis = %url,
            node = %format_args!("{:016x}", broker.node_id()),
            resumable = args.resumable,
            "sharing rooms through Redis"
        );
        hub = hub.broker(broker);
    }
    let hub = hub.build();
    let state = State { mode, greeting, quiet: args.quiet, hub, resumable: args.resumable };
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    if let Some(tls) = tls {
        // HTTP/1.1 and HTTP/2 by ALPN: browsers that load the page over HTTP/2 open its
        // WebSocket on the same connection.
        let server = wsx::hyper::Server::builder()
            .max_connections(args.max_connections)
            .memory_budget(args.memory_budget.0)
            .shutdown_timeout(args.shutdown_timeout)
            .tls(tls)
            .from_listener(listener);
        announce(server.local_addr()?, &args, dev_cert.as_ref(), mode, true);
        https::serve(server, state, site, config, handshake_policy(&args, mode)).await?;
    } else {
        let site = Arc::new(site);
        let server = Server::builder()
            .config(config)
            .max_connections(args.max_connections)
            .memory_budget(args.memory_budget.0)
            .shutdown_timeout(args.shutdown_timeout)
            .on_request(handshake_policy(&args, mode))
            .on_http(move |request, peer| answer(site.clone(), request, peer))
            .from_listener(listener);
        announce(server.local_addr()?, &args, None, mode, false);
        session::serve(server, state).await?;
    }
    info!("stopped");
    Ok(())
}

/// The connection settings from the arguments.
fn connection_config(args: &Args) -> anyhow::Result<Config> {
    let config = Config::default()
        .max_message_size(args.max_message_size)
        .max_frame_size(args.max_message_size.min(16 << 20))
        .deflate(args.deflate.then(DeflateConfig::default))
        .ping_interval(args.ping_interval);
    config.validate().context("invalid settings")?;
    Ok(config)
}

/// TLS from `--tls-cert`/`--tls-key` or `--tls-self-signed` (with the certificate it made), if
/// asked for.
fn tls(args: &Args) -> anyhow::Result<(Option<wsx::tls::ServerTls>, Option<DevCert>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok((Some(wsx::tls::ServerTls::from_pem_files(cert, key)?), None));
    }
    if !args.tls_self_signed {
        return Ok((None, None));
    }
    let made = cert::make(args.cert_out.clone())?;
    let tls = wsx::tls::ServerTls::from_pem(&made.cert_pem, &made.key_pem)?;
    Ok((Some(tls), Some(made)))
}

/// Log where the server listens and, for a development certificate, how to trust it.
fn announce(addr: SocketAddr, args: &Args, dev_cert: Option<&DevCert>, mode: Mode, tls: bool) {
    let (ws, web) = if tls { ("wss", "https") } else { ("ws", "http") };
    let http = if tls { "HTTP/1.1 and HTTP/2" } else { "HTTP/1.1" };
    info!(mode = ?mode, http, "listening on {ws}://{addr}/ (page: {web}://{addr}/)");
    let Some(made) = dev_cert else { return };
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

/// How long a room's history is kept after its last message, with --resumable.
const HISTORY_TTL: Duration = Duration::from_secs(600);

/// The upgrade requests `wsx serve` accepts: from an allowed origin (or none, as non-browser
/// clients send), to a room's path in `--rooms` mode, with the first offered subprotocol that
/// is listed.
fn handshake_policy(args: &Args, mode: Mode) -> impl Fn(&Request) -> Result<Accept, Reject> + Send + Sync + 'static {
    let origins: Vec<String> = args.origins.iter().map(|o| normalize_origin(o)).collect();
    let subprotocols = args.subprotocols.clone();
    move |request| {
        if let Some(origin) = request.origin()
            && !origins.is_empty()
            && !origins.contains(&normalize_origin(origin))
        {
            warn!(origin, path = request.path(), "origin not allowed: answered 403");
            return Err(Reject::response(plain(::http::StatusCode::FORBIDDEN, "origin not allowed\n")));
        }
        if mode == Mode::Rooms && session::room(request.path()).is_none() {
            warn!(path = request.path(), "not a room: answered 404");
            let help = format!("rooms are at /room/NAME (NAME: 1 to {MAX_ROOM_NAME} bytes, no '/')\n");
            return Err(Reject::response(plain(::http::StatusCode::NOT_FOUND, &help)));
        }
        if let Some(Err(e)) = session::since(request.query()) {
            warn!(path = request.path(), "bad since: answered 400");
            return Err(Reject::response(plain(::http::StatusCode::BAD_REQUEST, &format!("since: {e}\n"))));
        }
        let chosen = request.protocols().iter().find(|offered| subprotocols.contains(offered));
        Ok(match chosen {
            Some(protocol) => Accept::new().protocol(protocol.clone()),
            None => Accept::new(),
        })
    }
}

/// An origin as compared: lower case, without a trailing slash.
fn normalize_origin(origin: &str) -> String {
    origin.trim_end_matches('/').to_ascii_lowercase()
}

/// A refusal with a short text body.
fn plain(status: ::http::StatusCode, text: &str) -> ::http::Response<Bytes> {
    let mut response = ::http::Response::new(Bytes::copy_from_slice(text.as_bytes()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Answer one plain HTTP request from the site, and log it.
async fn answer(site: Arc<Site>, request: ::http::Request<()>, peer: SocketAddr) -> ::http::Response<Bytes> {
    let response = site.respond(&request).await;
    info!(%peer, status = response.status().as_u16(), "{} {}", request.method(), request.uri());
    response
}
