//! [`Server`]: a hyper service served over HTTP/1.1 and HTTP/2 (TLS with ALPN), whose
//! WebSockets, on both versions, count against its connection cap, share its memory budget and
//! close with 1001 when it shuts down.

use std::{fmt, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use ::hyper::{
    body::{Body, Incoming},
    service::Service,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, ToSocketAddrs},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    Result, ShutdownHandle,
    server::{BACKOFF_START, MAX_REFUSING, REFUSE_TIMEOUT, accept_failed, service_unavailable},
    shutdown::{DEFAULT_BUDGET, Signal, Watch},
};

/// A boxed error, as hyper takes them from services and bodies.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A hyper service a [`Server`] can serve: it answers `Request<Incoming>` with a response whose
/// body hyper can send, from any task. Implemented for every such service; a tower service
/// (an axum `Router`) goes through [`Server::serve_tower`].
pub trait HttpService:
    Service<
        http::Request<Incoming>,
        Response = http::Response<Self::ResponseBody>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The body of the service's responses.
    type ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type ResponseBody = B;
}

/// An HTTP server for a hyper service, speaking HTTP/1.1 and HTTP/2 on one port (cleartext
/// HTTP/2 with prior knowledge, or by ALPN under TLS), whose WebSockets it keeps track of.
///
/// It runs hyper-util's `auto` connection builder with upgrades, and over HTTP/2 announces
/// the extended CONNECT protocol (`SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC 8441 §3), so that
/// browsers open WebSockets over an HTTP/2 connection they already have. The service
/// upgrades requests with [`upgrade`](super::upgrade) (or `wsx::axum`'s extractor), which
/// accept both versions. If a WebSocket route of the service does not accept CONNECT (an axum
/// `get` route, another WebSocket library), turn the setting off with
/// [`Builder::connect_protocol`]: a server that announces it must serve it.
///
/// Each TCP connection, and every WebSocket upgraded from it, counts against
/// [`Builder::max_connections`], and the WebSockets share one [`Builder::memory_budget`]
/// (1013 past it), as on [`wsx::Server`](crate::Server). On shutdown the server stops accepting, tells HTTP
/// connections to finish (HTTP/2 GOAWAY, idle HTTP/1.1 connections closed), closes its
/// WebSockets with 1001, and waits up to [`Builder::shutdown_timeout`] for all of them.
///
/// ```no_run
/// # async fn run() -> wsx::Result<()> {
/// use bytes::Bytes;
/// use http_body_util::Empty;
///
/// let server = wsx::hyper::Server::bind("127.0.0.1:9001").await?;
/// let service = hyper::service::service_fn(|mut request| async move {
///     let (response, upgrade) = match wsx::hyper::upgrade(&mut request, &wsx::Config::default()) {
///         Ok(upgraded) => upgraded,
///         Err(reject) => return Ok::<_, std::convert::Infallible>(reject.into_response().map(|_| Empty::<Bytes>::new())),
///     };
///     tokio::spawn(async move {
///         let mut ws = upgrade.await?;
///         while ws.recv_each(|message, replies| { let _ = replies.send(message); }).await?.is_some() {}
///         Ok::<(), wsx::Error>(())
///     });
///     Ok(response)
/// });
/// server.serve(service).await
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    options: Options,
    stop: CancellationToken,
}

/// What a [`Builder`] collects.
#[derive(Clone)]
struct Options {
    max_connections: usize,
    shutdown_timeout: Duration,
    handshake_timeout: Duration,
    http2: bool,
    connect_protocol: bool,
    memory_budget: Option<usize>,
    #[cfg(feature = "__tls")]
    tls: Option<crate::tls::ServerTls>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            http2: true,
            connect_protocol: true,
            memory_budget: Some(DEFAULT_BUDGET),
            #[cfg(feature = "__tls")]
            tls: None,
        }
    }
}

/// Settings for a [`Server`], from [`Server::builder`].
#[derive(Clone, Default)]
pub struct Builder {
    options: Options,
}

impl Builder {
    /// The most TCP connections open at once, the WebSockets upgraded from them included
    /// (all the WebSockets of one HTTP/2 connection count as that one connection). Default:
    /// 10,000. Past the cap, a new connection's first request is answered `503 Service
    /// Unavailable` with `Retry-After` (after the TLS handshake, if any), and the connection
    /// closed (over HTTP/2 with GOAWAY), as [`wsx::Server`](crate::Server) answers; the client
    /// has 2 s (or the handshake timeout, if shorter) for it, up to 256 such clients at once.
    /// Past those the connection is closed as soon as it is accepted.
    ///
    /// HTTP/2 also caps the streams of one connection, and so its WebSockets: hyper's default
    /// is 200 concurrent streams.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.options.max_connections = max;
        self
    }

    /// How long a graceful shutdown waits for HTTP connections and WebSockets to finish
    /// before the server's connection tasks are aborted. Default: 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.options.shutdown_timeout = timeout;
        self
    }

    /// The time a client has for the TLS handshake, and, over HTTP/1.1, to send each request
    /// head. Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.options.handshake_timeout = timeout;
        self
    }

    /// Whether to speak HTTP/2 as well as HTTP/1.1. Default: on.
    pub fn http2(mut self, on: bool) -> Self {
        self.options.http2 = on;
        self
    }

    /// Whether to announce the extended CONNECT protocol over HTTP/2 (RFC 8441 §3), which
    /// lets clients open WebSockets over HTTP/2. Default: on.
    ///
    /// Turn it off if any WebSocket route of the service answers only HTTP/1.1 `GET`
    /// requests (an axum `get` route, another WebSocket library): browsers that see the
    /// setting open their WebSockets as CONNECT requests, which such a route refuses.
    pub fn connect_protocol(mut self, on: bool) -> Self {
        self.options.connect_protocol = on;
        self
    }

    /// The most bytes all WebSockets of the server together may hold for incomplete messages,
    /// inflaters and queued output, over HTTP/1.1 and HTTP/2 alike. Default: 1 GiB; `None` for
    /// no budget.
    ///
    /// The same budget as [`wsx::Server`'s](crate::server::Builder::memory_budget), kept the
    /// same way: each WebSocket holds up to 128 KiB without charging it, charges what it holds
    /// beyond that in 256 KiB steps as it reads, and is failed with 1013 (try again later) when
    /// the budget cannot cover its next step, freeing what it was receiving. HTTP requests and
    /// responses are not charged, nor is what hyper buffers for HTTP/2 streams before the
    /// WebSockets read it: HTTP/2 flow control bounds that by the connection's receive window
    /// (hyper's server default: 1 MiB per TCP connection, however many streams it carries).
    pub fn memory_budget(mut self, bytes: Option<usize>) -> Self {
        self.options.memory_budget = bytes;
        self
    }

    /// Serve HTTPS: run the TLS handshake on every connection, within the handshake timeout,
    /// and agree HTTP/2 or HTTP/1.1 by ALPN. The server announces `h2` and `http/1.1` (only
    /// `http/1.1` with `http2(false)`) unless `tls`'s rustls config lists other protocols.
    #[cfg(feature = "__tls")]
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.options.tls = Some(tls);
        self
    }

    /// Listen on `addr`.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.from_listener(listener))
    }

    /// Serve on a listener bound elsewhere.
    pub fn from_listener(self, listener: TcpListener) -> Server {
        Server { listener, options: self.options, stop: CancellationToken::new() }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("max_connections", &self.options.max_connections)
            .field("shutdown_timeout", &self.options.shutdown_timeout)
            .field("http2", &self.options.http2)
            .field("connect_protocol", &self.options.connect_protocol)
            .field("memory_budget", &self.options.memory_budget)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Listen on `addr` with the default settings.
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Self> {
        Self::builder().bind(addr).await
    }

    /// Settings for a server: connection cap, timeouts, HTTP/2, TLS.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// A handle that shuts the server down gracefully from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(self.stop.clone())
    }

    /// Serve `service` on every connection until a [`ShutdownHandle`] fires, then shut down
    /// gracefully.
    pub async fn serve<S: HttpService>(self, service: S) -> Result<()> {
        self.serve_with_shutdown(service, std::future::pending::<()>()).await
    }

    /// Serve a tower service, such as an axum `Router`, like [`serve`](Self::serve).
    pub async fn serve_tower<S>(self, service: S) -> Result<()>
    where
        hyper_util::service::TowerToHyperService<S>: HttpService,
    {
        self.serve(hyper_util::service::TowerToHyperService::new(service)).await
    }

    /// Like [`serve`](Self::serve), and also shut down when `signal` completes (for example
    /// `tokio::signal::ctrl_c()`). Returns once every connection has ended, or the shutdown
    /// timeout has passed.
    pub async fn serve_with_shutdown<S: HttpService, F: Future>(self, service: S, signal: F) -> Result<()> {
        let Self { listener, options, stop } = self;
        // Bounded so that the shutdown can wait for every permit at once.
        let max_connections = options.max_connections.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        let shared = Arc::new(Shared {
            http: http_builder(&options),
            service,
            away: Signal::with_budget(options.memory_budget),
            limit: Arc::new(Semaphore::new(max_connections)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            #[cfg(feature = "__tls")]
            tls: options.tls.as_ref().map(|tls| tls.with_http_alpn(options.http2)),
            options,
        });
        let graceful = GracefulShutdown::new();
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
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        backoff = BACKOFF_START;
                        if let Ok(permit) = shared.limit.clone().try_acquire_owned() {
                            tasks.spawn(connection(shared.clone(), tcp, peer, permit, graceful.watcher()));
                        } else if let Ok(permit) = shared.refusing.clone().try_acquire_owned() {
                            debug!(%peer, "over the connection cap: answering 503");
                            tasks.spawn(refuse(shared.clone(), tcp, peer, permit));
                        } else {
                            debug!(%peer, "over the connection cap: closing the connection");
                        }
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
        info!("shutting down: finishing HTTP connections, closing WebSockets with 1001");
        shared.away.fire();
        let limit = shared.limit.clone();
        let drained = async {
            graceful.shutdown().await;
            // Every connection, and every WebSocket upgraded from one, holds a permit.
            // Invariant: `max_connections` is at most `u32::MAX`.
            let _all = limit.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX)).await;
        };
        if tokio::time::timeout(shared.options.shutdown_timeout, drained).await.is_err() {
            let open = max_connections - shared.limit.available_permits();
            warn!(open, "shutdown timeout passed: aborting connections");
            tasks.shutdown().await;
        }
        Ok(())
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("max_connections", &self.options.max_connections)
            .finish_non_exhaustive()
    }
}

/// hyper-util's `auto` builder for `options`: HTTP/1.1, and HTTP/2 with the connect protocol
/// if asked.
fn http_builder(options: &Options) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new()).header_read_timeout(options.handshake_timeout);
    http.http2().timer(TokioTimer::new());
    if options.connect_protocol {
        http.http2().enable_connect_protocol();
    }
    if options.http2 { http } else { http.http1_only() }
}

/// What every connection task of one `serve` call shares.
struct Shared<S> {
    http: auto::Builder<TokioExecutor>,
    service: S,
    options: Options,
    /// The TLS acceptor, with the ALPN protocols set.
    #[cfg(feature = "__tls")]
    tls: Option<crate::tls::ServerTls>,
    /// Fired on shutdown: WebSockets close themselves with 1001. Carries the memory budget
    /// their watches charge.
    away: Signal,
    /// One permit per TCP connection, held by its WebSockets too.
    limit: Arc<Semaphore>,
    /// One permit per over-the-cap client being answered 503.
    refusing: Arc<Semaphore>,
}

/// A connection of a [`Server`], which each of its requests carries (in its extensions) to
/// [`upgrade`](super::upgrade): the WebSockets upgraded from it hold it, so that they count
/// against the cap and close on shutdown.
pub(crate) struct Tracked {
    away: Signal,
    _permit: OwnedSemaphorePermit,
}

impl Tracked {
    /// The shutdown signal, for a WebSocket to close itself with 1001.
    pub(crate) fn watch(&self) -> Watch {
        self.away.watch()
    }
}

/// One TCP connection: TLS if configured, then HTTP until it ends (or upgrades).
async fn connection<S: HttpService>(
    shared: Arc<Shared<S>>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    graceful: hyper_util::server::graceful::Watcher,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let tracked = Arc::new(Tracked { away: shared.away.clone(), _permit: permit });
    let service = WithTracked { service: shared.service.clone(), tracked, peer };
    #[cfg(feature = "__tls")]
    if let Some(tls) = &shared.tls {
        let accepted = tokio::time::timeout(shared.options.handshake_timeout, tls.accept(tcp)).await;
        match accepted {
            Ok(Ok(io)) => serve_io(&shared.http, io, service, peer, graceful).await,
            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake timed out"),
        }
        return;
    }
    serve_io(&shared.http, tcp, service, peer, graceful).await;
}

/// A client over the connection cap: TLS if configured, then `503 Service Unavailable` with
/// `Retry-After` to its first request, and the connection closed; all within the refusal
/// timeout, and given up on shutdown.
async fn refuse<S>(shared: Arc<Shared<S>>, tcp: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    let answer = async {
        #[cfg(feature = "__tls")]
        if let Some(tls) = &shared.tls {
            match tls.accept(tcp).await {
                Ok(io) => answer_unavailable(&shared.http, io, peer).await,
                Err(e) => debug!(%peer, error = %e, "refusing over the connection cap: TLS handshake failed"),
            }
            return;
        }
        answer_unavailable(&shared.http, tcp, peer).await;
    };
    let timeout = REFUSE_TIMEOUT.min(shared.options.handshake_timeout);
    tokio::select! {
        answered = tokio::time::timeout(timeout, answer) => if answered.is_err() {
            debug!(%peer, "refusing over the connection cap: timed out");
        },
        () = shared.away.fired() => {}
    }
}

/// Serve HTTP on `io` with one answer, 503, and close the connection once it is given: over
/// HTTP/1.1 with `Connection: close`, over HTTP/2 with GOAWAY (streams the client opened
/// meanwhile get 503 too).
async fn answer_unavailable<I>(http: &auto::Builder<TokioExecutor>, io: I, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let answered = Arc::new(Notify::new());
    let service = ::hyper::service::service_fn({
        let answered = answered.clone();
        move |request: http::Request<Incoming>| {
            answered.notify_one();
            let mut response = service_unavailable::<String>();
            // Requests already read behind this one (pipelined) are not answered: hyper may
            // read them before the shutdown below takes effect, but not past this header.
            // HTTP/2 has no such header (RFC 9113 §8.2.2): GOAWAY does it.
            if request.version() < http::Version::HTTP_2 {
                response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        }
    });
    let connection = http.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => {
            if let Err(e) = ended {
                debug!(%peer, error = %e, "refusing over the connection cap: HTTP error");
            }
            return;
        }
        () = answered.notified() => connection.as_mut().graceful_shutdown(),
    }
    if let Err(e) = connection.await {
        debug!(%peer, error = %e, "refusing over the connection cap: HTTP error");
    }
}

/// Serve HTTP on `io` until the connection ends, is upgraded, or shuts down gracefully.
async fn serve_io<I, S>(
    http: &auto::Builder<TokioExecutor>,
    io: I,
    service: WithTracked<S>,
    peer: SocketAddr,
    graceful: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = graceful.watch(connection.into_owned()).await {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// The address of the client a request of a [`Server`] came from, in the request's
/// extensions: `request.extensions().get::<wsx::hyper::PeerAddr>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The service, with each request carrying its connection's [`Tracked`] and [`PeerAddr`].
#[derive(Clone)]
struct WithTracked<S> {
    service: S,
    tracked: Arc<Tracked>,
    peer: SocketAddr,
}

impl<S, B> Service<http::Request<B>> for WithTracked<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.tracked.clone());
        request.extensions_mut().insert(PeerAddr(self.peer));
        self.service.call(request)
    }
}
