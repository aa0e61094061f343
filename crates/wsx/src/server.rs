//! [`Server`]: an accept loop with a connection cap and graceful shutdown, in the manner of
//! mini-redis.
//!
//! ```no_run
//! # async fn run() -> wsx::Result<()> {
//! let server = wsx::Server::bind("0.0.0.0:8080").await?;
//! server
//!     .serve(|mut ws, _info| async move {
//!         ws.send("ho!").await?;
//!         while let Some(msg) = ws.recv().await? {
//!             println!("Received message => {msg}");
//!         }
//!         Ok(())
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Each connection runs in its own task, owned by the server: a [`Semaphore`] caps how many
//! are open (at the cap a new connection evicts the oldest one still in its opening handshake;
//! when there is none it is answered `503 Service Unavailable`), and on shutdown every open
//! connection is sent close 1001 and given [`Builder::shutdown_timeout`] to finish before it
//! is aborted. Handler errors are logged with `tracing` and never stop the server.
//!
//! [`Builder::on_http`] answers plain HTTP requests on the same port (a page, static files, a
//! health check), so that one `Server` serves both:
//!
//! ```no_run
//! # async fn run() -> wsx::Result<()> {
//! use bytes::Bytes;
//!
//! let server = wsx::Server::builder()
//!     .on_http(|request, _peer| async move {
//!         let body = match request.uri().path() {
//!             "/health" => "ok\n",
//!             _ => "try /health, or connect a WebSocket\n",
//!         };
//!         http::Response::new(Bytes::from_static(body.as_bytes()))
//!     })
//!     .bind("127.0.0.1:8080")
//!     .await?;
//! server.serve(|mut ws, _info| async move { while ws.recv().await?.is_some() {} Ok(()) }).await
//! # }
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, ToSocketAddrs},
    sync::{OwnedSemaphorePermit, Semaphore, oneshot},
    task::{JoinError, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use wsx_proto::{Accept, Config, HandshakeError, ProtocolError, Request};

use crate::{
    Reject,
    error::{Error, Result},
    handshake::{Pending, accept_shared},
    shutdown::{DEFAULT_BUDGET, Signal},
    stream::WebSocket,
};

/// Connections over the cap that may wait at once for their request to be answered with
/// 503; past this many the socket is just closed.
pub(crate) const MAX_REFUSING: usize = 256;

/// How long an over-the-cap client gets to send its request before it is dropped.
pub(crate) const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `Retry-After` an over-the-cap client is told, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// The first pause after a failed `accept`, doubled on each failure in a row.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(5);

/// The longest pause after failed `accept`s.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The handshake callback: accept (choosing a subprotocol, adding headers) or reject.
type Decide = dyn Fn(&Request) -> std::result::Result<Accept, crate::Reject> + Send + Sync;

/// The plain-HTTP handler, from [`Builder::on_http`]: the response to a request that is not
/// a WebSocket upgrade.
type HttpHandler =
    dyn Fn(http::Request<()>, SocketAddr) -> Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send>> + Send + Sync;

/// A WebSocket server: accepts TCP connections, runs the opening handshake and hands each
/// open [`WebSocket`] to your handler in a task of its own.
///
/// Build it with [`Server::bind`], [`Server::from_listener`] or [`Server::builder`], then run
/// it with [`serve`](Self::serve) or [`serve_with_shutdown`](Self::serve_with_shutdown).
pub struct Server<T: Transport = Plain> {
    listener: TcpListener,
    transport: T,
    options: Options,
    stop: CancellationToken,
}

/// What a [`Builder`] collects besides the transport.
#[derive(Clone)]
struct Options {
    config: Config,
    max_connections: usize,
    on_request: Option<Arc<Decide>>,
    on_http: Option<Arc<HttpHandler>>,
    shutdown_timeout: Duration,
    memory_budget: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: Config::default(),
            max_connections: 10_000,
            on_request: None,
            on_http: None,
            shutdown_timeout: Duration::from_secs(10),
            memory_budget: Some(DEFAULT_BUDGET),
        }
    }
}

impl Server<Plain> {
    /// Listen on `addr` with the default settings.
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Self> {
        Self::builder().bind(addr).await
    }

    /// Serve on a listener bound elsewhere, with the default settings.
    pub fn from_listener(listener: TcpListener) -> Self {
        Self::builder().from_listener(listener)
    }

    /// Settings for a server: config, connection cap, handshake callback, plain-HTTP handler,
    /// shutdown timeout.
    pub fn builder() -> Builder<Plain> {
        Builder { transport: Plain, options: Options::default() }
    }
}

impl<T: Transport> Server<T> {
    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// A handle that shuts the server down gracefully from elsewhere, like the signal given
    /// to [`serve_with_shutdown`](Self::serve_with_shutdown).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { stop: self.stop.clone() }
    }

    /// Accept connections and run `handler` on each until a [`ShutdownHandle`] fires, then
    /// shut down gracefully.
    ///
    /// The handler gets the open [`WebSocket`] and what the handshake said
    /// ([`ConnectionInfo`]). An `Err` it returns is logged (at debug level for peer faults:
    /// I/O errors, protocol errors, timeouts) and ends only that connection.
    pub async fn serve<H, F>(self, handler: H) -> Result<()>
    where
        H: Fn(WebSocket<T::Stream>, ConnectionInfo) -> F + Send + Sync + 'static,
        F: Future<Output = Result<()>> + Send + 'static,
    {
        self.serve_with_shutdown(handler, std::future::pending::<()>()).await
    }

    /// Like [`serve`](Self::serve), and also shut down when `signal` completes (for example
    /// `tokio::signal::ctrl_c()`).
    ///
    /// Shutting down stops accepting, sends close 1001 to every open connection and waits up
    /// to the shutdown timeout for their closing handshakes and handlers to finish; what is
    /// left is then aborted. Returns once every connection task has ended.
    ///
    /// The 1001 close is sent the next time the connection is polled (a `recv`, a split
    /// reader's `recv`, or a `feed`/`send`), so handlers should keep reading.
    pub async fn serve_with_shutdown<H, F, S>(self, handler: H, signal: S) -> Result<()>
    where
        H: Fn(WebSocket<T::Stream>, ConnectionInfo) -> F + Send + Sync + 'static,
        F: Future<Output = Result<()>> + Send + 'static,
        S: Future,
    {
        let Self { listener, transport, options, stop } = self;
        let shutdown_timeout = options.shutdown_timeout;
        let memory_budget = options.memory_budget;
        let handshake_timeout = options.config.handshake_time_limit();
        let refuse_timeout = REFUSE_TIMEOUT.min(handshake_timeout);
        let max_connections = options.max_connections.min(Semaphore::MAX_PERMITS);
        // Plain HTTP requests reach us only if someone answers them.
        let config = options.config.clone().plain_http(options.on_http.is_some());
        let shared = Arc::new(Shared {
            transport,
            handler,
            handshake_timeout,
            refuse_config: Arc::new(config.clone().handshake_timeout(refuse_timeout)),
            config: Arc::new(config),
            refuse_timeout,
            options,
            limit: Arc::new(Semaphore::new(max_connections)),
            handshaking: Handshaking::default(),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            away: Signal::with_budget(memory_budget),
        });
        let mut tasks = JoinSet::new();
        let mut backoff = BACKOFF_START;
        let signal = std::pin::pin!(signal);
        let mut stopping = std::pin::pin!(async {
            tokio::select! {
                _ = signal => {}
                () = stop.cancelled() => {}
            }
        });

        loop {
            tokio::select! {
                biased;
                () = &mut stopping => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => report_join(joined),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        backoff = BACKOFF_START;
                        dispatch(&shared, &mut tasks, tcp, peer);
                    }
                    Err(e) => {
                        if !accept_failed(&e, &mut backoff, stopping.as_mut()).await {
                            break;
                        }
                    }
                },
            }
        }

        drop(listener);
        if !tasks.is_empty() {
            info!(connections = tasks.len(), "shutting down: closing connections with 1001");
        }
        shared.away.fire();
        let drain = async {
            while let Some(joined) = tasks.join_next().await {
                report_join(joined);
            }
        };
        if tokio::time::timeout(shutdown_timeout, drain).await.is_err() {
            warn!(connections = tasks.len(), "shutdown timeout passed: aborting connections");
            tasks.shutdown().await;
        }
        Ok(())
    }
}

impl<T: Transport> fmt::Debug for Server<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("max_connections", &self.options.max_connections)
            .field("shutdown_timeout", &self.options.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`Server`], from [`Server::builder`].
pub struct Builder<T: Transport = Plain> {
    transport: T,
    options: Options,
}

impl<T: Transport> Builder<T> {
    /// The connection settings (limits, timers, permessage-deflate). Default:
    /// [`Config::default()`].
    ///
    /// Its `handshake_timeout` bounds the whole opening handshake (TLS included), so a client
    /// that sends half a request is dropped.
    pub fn config(mut self, config: Config) -> Self {
        self.options.config = config;
        self
    }

    /// The most connections open at once, handshakes included. Default: 10,000.
    ///
    /// At the cap, a new connection evicts the oldest connection still in its opening
    /// handshake (it has no WebSocket yet): clients that send their request slowly, or not at
    /// all, cannot keep out a client that completes its handshake promptly. When every
    /// connection is open, a client's request is answered `503 Service Unavailable` with
    /// `Retry-After`, without running the handler. Each open connection holds a task, its
    /// socket and the buffers its traffic needs.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.options.max_connections = max;
        self
    }

    /// The most bytes all connections together may hold for incomplete messages, inflaters
    /// and queued output. Default: 1 GiB; `None` for no budget.
    ///
    /// Every limit of [`Config`] is per connection, so without it 100 peers each sending a
    /// 60 MiB message slowly make the server hold 6 GB. Each connection holds up to 128 KiB
    /// without charging the budget (what moving small messages needs: no shared counter is
    /// touched for them) and charges what it holds beyond that in 256 KiB steps, as it reads.
    /// A connection that would take the budget past its limit is failed with 1013 (try again
    /// later): what it was receiving is freed at once and the others keep working. The
    /// allowance is not charged, so the server may hold up to 128 KiB × `max_connections`
    /// beyond the budget (1.25 GiB at 10,000), plus each connection's task and socket.
    ///
    /// Why 1 GiB: a fixed figure is predictable (a fraction of the machine's memory would
    /// depend on where it runs and on cgroup limits the server cannot always see); it still
    /// lets fifteen peers send a maximum-size (64 MiB) message at once, and stops the
    /// many-large-messages case well before most machines run out. Raise it on a large server.
    pub fn memory_budget(mut self, bytes: Option<usize>) -> Self {
        self.options.memory_budget = bytes;
        self
    }

    /// Look at each upgrade request (path, query, headers, origin, offered subprotocols) and
    /// accept it — choosing a subprotocol, adding response headers — or reject it with any
    /// HTTP response. Default: accept every valid request, with no subprotocol.
    ///
    /// Malformed requests are answered (400, 426, …) without calling it.
    pub fn on_request<D>(mut self, decide: D) -> Self
    where
        D: Fn(&Request) -> std::result::Result<Accept, crate::Reject> + Send + Sync + 'static,
    {
        self.options.on_request = Some(Arc::new(decide));
        self
    }

    /// Answer plain HTTP requests (`GET` and `HEAD` requests that do not ask for a WebSocket)
    /// with `handler`, on the same port: a page, static files, a health check. Default: none,
    /// and such requests are refused with 400 (405 for `HEAD`).
    ///
    /// The handler gets the request head and the client's address, and returns the whole
    /// response. For `HEAD`, return what `GET` would get: the server sends its headers and
    /// `Content-Length` without the body, as hyper does. The server owns `Content-Length`,
    /// `Connection: close` (one request per connection) and `Transfer-Encoding`, and adds
    /// `Content-Type: text/plain; charset=utf-8` when the response has none; a 1xx status is
    /// replaced by `500 Internal Server Error`.
    ///
    /// Such a request is read like an upgrade request, by the engine's parser and within the
    /// config's `max_header_bytes` and `max_headers`; one that announces a body
    /// (`Content-Length` other than 0, `Transfer-Encoding`) is refused with 400, and other
    /// methods with 405. Its connection counts against
    /// [`max_connections`](Self::max_connections) (over the cap it is answered 503), and the
    /// whole exchange (TLS, the request, the handler, writing the response) must end within
    /// the config's `handshake_timeout`, or the connection is dropped. The response is held
    /// in memory until it is written, so keep bodies to what
    /// `max_connections` × body size allows.
    ///
    /// The server switches [`Config::plain_http`] on for this; without a handler it stays off.
    pub fn on_http<H, F>(mut self, handler: H) -> Self
    where
        H: Fn(http::Request<()>, SocketAddr) -> F + Send + Sync + 'static,
        F: Future<Output = http::Response<Bytes>> + Send + 'static,
    {
        self.options.on_http = Some(Arc::new(move |request, peer| Box::pin(handler(request, peer))));
        self
    }

    /// How long a graceful shutdown waits for connections to finish their closing handshake
    /// and handlers before aborting them. Default: 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.options.shutdown_timeout = timeout;
        self
    }

    /// Listen on `addr`. Fails if the config is invalid or the address cannot be bound.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Server<T>> {
        self.options.config.validate()?;
        let listener = TcpListener::bind(addr).await?;
        Ok(self.from_listener(listener))
    }

    /// Serve on a listener bound elsewhere.
    ///
    /// An invalid config is not reported here: every handshake then fails and is logged.
    /// [`bind`](Self::bind) checks it up front.
    pub fn from_listener(self, listener: TcpListener) -> Server<T> {
        Server { listener, transport: self.transport, options: self.options, stop: CancellationToken::new() }
    }
}

impl<T: Transport> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.options.config)
            .field("max_connections", &self.options.max_connections)
            .field("on_request", &self.options.on_request.is_some())
            .field("on_http", &self.options.on_http.is_some())
            .field("shutdown_timeout", &self.options.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "__tls")]
impl Builder<Plain> {
    /// Serve `wss://`: run the TLS handshake on every connection, within the handshake
    /// timeout. The handler then gets a `WebSocket<tls::TlsStream<TcpStream>>`.
    pub fn tls(self, tls: crate::tls::ServerTls) -> Builder<crate::tls::ServerTls> {
        Builder { transport: tls, options: self.options }
    }
}

/// A cloneable handle that shuts a [`Server`] down gracefully, from any task.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    stop: CancellationToken,
}

impl ShutdownHandle {
    /// A handle on `stop` (`wsx::hyper::Server`'s shutdown).
    #[cfg(feature = "hyper")]
    pub(crate) fn new(stop: CancellationToken) -> Self {
        Self { stop }
    }

    /// Start the graceful shutdown: the server stops accepting, closes its connections with
    /// 1001, and its `serve` call returns once they have ended (or the shutdown timeout has
    /// passed).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// What the opening handshake of a connection said: the peer, the request's path, query and
/// headers. The agreed subprotocol is [`WebSocket::protocol`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    peer_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    request: Request,
}

impl ConnectionInfo {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The local address the client connected to, if the OS reported it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The whole upgrade request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The request path, without the query.
    pub fn path(&self) -> &str {
        self.request.path()
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.request.query()
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The `Origin` header, sent by browsers.
    pub fn origin(&self) -> Option<&str> {
        self.request.origin()
    }
}

mod sealed {
    /// Keeps [`Transport`](super::Transport) implemented only here.
    pub trait Sealed {}
}

/// How an accepted TCP connection becomes the stream a [`WebSocket`] runs over: [`Plain`] TCP,
/// or TLS with `tls::ServerTls` (see `Builder::tls`). Sealed: the server provides the
/// implementations.
pub trait Transport: sealed::Sealed + Send + Sync + 'static {
    /// The stream the handler's [`WebSocket`] runs over.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Set up the stream over a fresh TCP connection (for TLS: its handshake).
    #[doc(hidden)]
    fn wrap(&self, tcp: TcpStream) -> impl Future<Output = Result<Self::Stream>> + Send;
}

/// Plain TCP (`ws://`): the handler gets a `WebSocket<TcpStream>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl sealed::Sealed for Plain {}

impl Transport for Plain {
    type Stream = TcpStream;

    async fn wrap(&self, tcp: TcpStream) -> Result<TcpStream> {
        Ok(tcp)
    }
}

#[cfg(feature = "__tls")]
impl sealed::Sealed for crate::tls::ServerTls {}

/// TLS (`wss://`), from [`Builder::tls`].
#[cfg(feature = "__tls")]
impl Transport for crate::tls::ServerTls {
    type Stream = crate::tls::TlsStream<TcpStream>;

    async fn wrap(&self, tcp: TcpStream) -> Result<Self::Stream> {
        self.accept(tcp).await
    }
}

/// What every connection task of one `serve` call shares.
struct Shared<T, H> {
    transport: T,
    handler: H,
    options: Options,
    /// The config's handshake timeout, which also bounds the transport's (TLS) handshake.
    handshake_timeout: Duration,
    /// The connections' config, shared by all of them.
    config: Arc<Config>,
    /// The config for refusing over-the-cap clients: a shorter handshake timeout.
    refuse_config: Arc<Config>,
    refuse_timeout: Duration,
    /// One permit per open connection.
    limit: Arc<Semaphore>,
    /// The connections still in their opening handshake, which a new one may evict at the cap.
    handshaking: Handshaking,
    /// One permit per over-the-cap client being answered 503.
    refusing: Arc<Semaphore>,
    /// Fired on shutdown: connections close themselves with 1001.
    away: Signal,
}

/// Hand a fresh TCP connection to a task: a connection if under the cap, a 503 if over.
fn dispatch<T, H, F>(shared: &Arc<Shared<T, H>>, tasks: &mut JoinSet<()>, tcp: TcpStream, peer: SocketAddr)
where
    T: Transport,
    H: Fn(WebSocket<T::Stream>, ConnectionInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    if let Ok(permit) = shared.limit.clone().try_acquire_owned() {
        tasks.spawn(run_connection(shared.clone(), tcp, peer, permit));
    } else if let Some(permit) = shared.handshaking.evict_oldest() {
        debug!(%peer, "at the connection cap: evicting the oldest pending handshake");
        tasks.spawn(run_connection(shared.clone(), tcp, peer, permit));
    } else if let Ok(permit) = shared.refusing.clone().try_acquire_owned() {
        debug!(%peer, "over the connection cap: answering 503");
        tasks.spawn(refuse(shared.clone(), tcp, peer, permit));
    } else {
        debug!(%peer, "over the connection cap: dropping the connection");
    }
}

/// One connection: the handshake, then the handler.
///
/// Not an `async fn`, which would keep its arguments (the socket among them) for the
/// connection's whole life. The handshake is boxed, so that its state (its timer, the
/// `accept_with` future, the shutdown wait, the `Shared` handle) is freed when it ends: the
/// task then holds the handler's future, the permit and the peer's address, and nothing else.
fn run_connection<T, H, F>(
    shared: Arc<Shared<T, H>>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static
where
    T: Transport,
    H: Fn(WebSocket<T::Stream>, ConnectionInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let handshake = Box::pin(async move {
        let (id, evicted) = shared.handshaking.register(permit);
        let opened = handshake(&shared, tcp, peer, evicted).await;
        // `None`: evicted (perhaps just as the handshake ended); the WebSocket is dropped.
        let permit = shared.handshaking.finish(id)?;
        let (ws, info) = opened?;
        Some(((shared.handler)(ws, info), permit))
    });
    async move {
        let Some((handler, permit)) = handshake.await else { return };
        if let Err(e) = handler.await {
            log_handler_error(peer, &e);
        }
        drop(permit);
    }
}

/// The connections still in their opening handshake, oldest first, each with its permit of the
/// connection cap and the sender whose drop evicts it.
///
/// At the cap, a new connection takes the permit of the oldest pending handshake, which is
/// dropped: a client that completes its handshake promptly always gets in, however many slow
/// ones hold connections open without finishing theirs (they cost the server only their
/// handshake state, and no WebSocket exists yet to be closed). A connection whose handshake is
/// done leaves the map and keeps its permit for its whole life.
#[derive(Default)]
struct Handshaking {
    pending: Mutex<PendingHandshakes>,
}

#[derive(Default)]
struct PendingHandshakes {
    next: u64,
    /// By arrival: ids only grow, so the first entry is the oldest.
    entries: BTreeMap<u64, (OwnedSemaphorePermit, oneshot::Sender<()>)>,
}

impl Handshaking {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingHandshakes> {
        // Every change under the lock is one map operation: a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A handshake starts, holding `permit`: its id, and what completes when it is evicted.
    fn register(&self, permit: OwnedSemaphorePermit) -> (u64, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let mut pending = self.lock();
        let id = pending.next;
        pending.next += 1;
        pending.entries.insert(id, (permit, evict));
        (id, evicted)
    }

    /// The handshake `id` ended: its permit back, or `None` if it was evicted.
    fn finish(&self, id: u64) -> Option<OwnedSemaphorePermit> {
        self.lock().entries.remove(&id).map(|(permit, _)| permit)
    }

    /// Evict the oldest pending handshake and hand over its permit, if there is one.
    fn evict_oldest(&self) -> Option<OwnedSemaphorePermit> {
        // Dropping the sender wakes the handshake's task, which gives up.
        self.lock().entries.pop_first().map(|(_, (permit, _))| permit)
    }
}

/// The opening handshake of a connection under the cap, within the handshake timeout: the open
/// [`WebSocket`], set to close with 1001 on shutdown, and what the request said. `None` if it
/// failed, timed out or the server is shutting down (logged), or if it was a plain HTTP
/// request, answered here.
async fn handshake<T, H>(
    shared: &Shared<T, H>,
    tcp: TcpStream,
    peer: SocketAddr,
    evicted: oneshot::Receiver<()>,
) -> Option<(WebSocket<T::Stream>, ConnectionInfo)>
where
    T: Transport,
{
    let local_addr = tcp.local_addr().ok();
    let started = std::time::Instant::now();
    let options = &shared.options;
    let handshake = async {
        let io = shared.transport.wrap(tcp).await?;
        let (pending, request) = Pending::read(io, shared.config.clone()).await?;
        if !request.is_upgrade() {
            // Boxed: kept out of the handshake's own future, which every WebSocket pays for.
            Box::pin(answer_http(options.on_http.as_deref(), pending, *request, peer)).await;
            return Ok(None);
        }
        let decided = match &options.on_request {
            Some(decide) => decide(&request),
            None => Ok(Accept::new()),
        };
        match decided {
            Ok(accept) => Ok(Some((pending.accept(&accept).await?, request))),
            Err(reject) => Err(pending.answer(reject.into_response()).await),
        }
    };
    let handshake = tokio::time::timeout(shared.handshake_timeout, handshake);
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        () = shared.away.fired() => return None,
        _ = evicted => {
            debug!(%peer, "handshake evicted: a new connection arrived at the cap");
            crate::metrics::handshake_failed(None);
            return None;
        }
    };
    let (mut ws, request) = match outcome {
        Ok(Ok(Some(opened))) => opened,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "handshake failed");
            crate::metrics::handshake_failed(Some(&e));
            return None;
        }
        Err(_) => {
            debug!(%peer, "handshake timed out");
            crate::metrics::handshake_failed(None);
            return None;
        }
    };
    crate::metrics::handshake_succeeded(started);
    ws.close_on(shared.away.watch());
    Some((ws, ConnectionInfo { peer_addr: peer, local_addr, request: *request }))
}

/// Answer a plain HTTP request with the [`Builder::on_http`] handler (400 without one, which
/// cannot happen: the engine reports plain requests only when there is a handler).
async fn answer_http<S>(handler: Option<&HttpHandler>, pending: Pending<S>, request: Request, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let response = match handler {
        Some(handler) => handler(request.into_head(), peer).await,
        None => Reject::status(StatusCode::BAD_REQUEST).into_response(),
    };
    let response = if response.status().is_informational() {
        warn!(%peer, status = %response.status(), "the HTTP handler answered with a 1xx status: sending 500");
        Reject::status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
    } else {
        response
    };
    let ended = pending.answer(response).await;
    // `Rejected` is the engine's word for "answered with this response and closed".
    if !matches!(ended.protocol_error(), Some(ProtocolError::Handshake(HandshakeError::Rejected { .. }))) {
        debug!(%peer, error = %ended, "HTTP response not sent");
    }
}

/// A client over the connection cap: read its request and answer 503 with `Retry-After`.
// The handshake callback's `Err` is the whole HTTP response, as `accept_with` takes it.
async fn refuse<T, H>(shared: Arc<Shared<T, H>>, tcp: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit)
where
    T: Transport,
{
    let _permit = permit;
    let answer = async {
        let io = shared.transport.wrap(tcp).await?;
        accept_shared(io, shared.refuse_config.clone(), |_| Err(service_unavailable::<Bytes>().into())).await
    };
    let answer = tokio::time::timeout(shared.refuse_timeout, answer);
    tokio::select! {
        outcome = answer => match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "refused over the connection cap");
                crate::metrics::handshake_failed(Some(&e));
            }
            Err(_) => debug!(%peer, "refusing over the connection cap: handshake timed out"),
        },
        () = shared.away.fired() => {}
    }
}

/// `503 Service Unavailable` with `Retry-After` (also `wsx::hyper::Server`'s answer over the cap).
pub(crate) fn service_unavailable<B: From<&'static str>>() -> http::Response<B> {
    let mut response = http::Response::new(B::from("too many connections\n"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// After a failed `accept`: log it and, unless it was about one connection only, pause for
/// `backoff` (then doubled, up to [`BACKOFF_MAX`]) so as not to spin while out of file
/// descriptors or memory, and keep serving once they come back. Returns false if `stopping`
/// completed meanwhile.
pub(crate) async fn accept_failed(
    e: &io::Error,
    backoff: &mut Duration,
    stopping: Pin<&mut impl Future<Output = ()>>,
) -> bool {
    if is_per_connection(e) {
        debug!(error = %e, "accept failed");
        return true;
    }
    warn!(error = %e, retry_in = ?*backoff, "accept failed");
    let paused = tokio::select! {
        biased;
        () = stopping => false,
        () = tokio::time::sleep(*backoff) => true,
    };
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    paused
}

/// Accept errors about one connection (it went away before we took it): no need to back off.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

/// Log what a handler returned: peer faults are routine, anything else is worth a warning.
fn log_handler_error(peer: SocketAddr, e: &Error) {
    if e.is_io() || e.is_protocol() || e.is_timeout() || e.is_closed() {
        debug!(%peer, error = %e, "connection ended with an error");
    } else {
        warn!(%peer, error = %e, "connection handler failed");
    }
}

/// Log a connection task that panicked (a handler bug); the server carries on.
fn report_join(joined: std::result::Result<(), JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        error!(error = %e, "connection handler panicked");
    }
}
