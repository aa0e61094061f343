//! WebSockets inside a hyper 1 service (feature `hyper`): [`upgrade`] a request to a
//! [`WebSocket`], over HTTP/1.1 (`GET` + `Upgrade`, answered 101) or HTTP/2 (an extended
//! CONNECT with `:protocol websocket`, RFC 8441, answered 200), and [`Server`], which serves a
//! hyper service over HTTP/1.1 and HTTP/2 (TLS with ALPN), with WebSockets on both.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use hyper::body::Incoming;
//!
//! async fn service(mut request: http::Request<Incoming>) -> Result<http::Response<Empty<Bytes>>, std::convert::Infallible> {
//!     let (response, upgrade) = match wsx::hyper::upgrade(&mut request, &wsx::Config::default()) {
//!         Ok(upgraded) => upgraded,
//!         // Not a WebSocket request, or a bad one: 400, 405, 426, …
//!         Err(reject) => return Ok(reject.into_response().map(|_| Empty::new())),
//!     };
//!     tokio::spawn(async move {
//!         let mut ws = upgrade.await?;
//!         while ws.recv_each(|message, replies| { let _ = replies.send(message); }).await?.is_some() {}
//!         Ok::<(), wsx::Error>(())
//!     });
//!     Ok(response)
//! }
//! ```
//!
//! The request is checked with the engine's own rules (those of [`Server`](crate::Server)),
//! and the subprotocol and permessage-deflate are agreed by the same code. When hyper served
//! the connection over plain TCP with HTTP/1.1 (hyper's `http1` builder or hyper-util's
//! `auto` builder, as `axum::serve` uses), the WebSocket gets the TCP socket back and runs
//! exactly as on `wsx::Server`; otherwise it runs over hyper's upgraded stream (see [`Io`]).
//! Bytes the client sent after its request (a first frame in the same write) are kept.
//!
//! Over HTTP/2 the WebSocket is one stream of the connection: its frames travel in DATA
//! frames, flow-controlled per stream, and the close ends the stream (END_STREAM); a stream
//! reset is not a clean close (the connection ends with 1006). A hyper server must enable
//! the connect protocol (`http2().enable_connect_protocol()`) for browsers to send WebSockets
//! over HTTP/2, and only when every WebSocket route of the service accepts CONNECT: the
//! setting is a promise (golang/go#71128 broke WebSockets behind servers that made it without
//! keeping it). [`Server`] does.
//!
//! hyper does not track upgraded connections: its graceful shutdown does not reach them, and
//! no cap or memory budget covers them. [`Server`] does: its WebSockets count against its
//! connection cap, share its memory budget, and close with 1001 when it shuts down.

#[cfg(feature = "client")]
mod client;
mod io;
mod serve;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use ::hyper::upgrade::OnUpgrade;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, Version, header};
use tokio::net::TcpStream;
use tracing::warn;
use wsx_proto::{Accept, Config, Connection, HandshakeError, Request};

pub use self::io::Io;
use self::serve::Tracked;
pub use self::serve::{Builder, HttpService, PeerAddr, Server};
use crate::{Error, Reject, Result, WebSocket, driver::now};

/// Upgrade `request` to a WebSocket with `config`, accepting any path, origin and offered
/// subprotocols: the response to send (101, or 200 over HTTP/2) and the future of the
/// WebSocket, which resolves once hyper has sent the response. Equivalent to
/// [`upgrade_with`] accepting every request.
///
/// `T` is the response body type of the service, which the response leaves empty.
pub fn upgrade<B, T: Default>(
    request: &mut http::Request<B>,
    config: &Config,
) -> std::result::Result<(http::Response<T>, UpgradeFuture), Reject> {
    upgrade_with(request, config, |_| Ok(Accept::new()))
}

/// Upgrade `request` to a WebSocket with `config`, letting `decide` look at the checked
/// request (path, query, headers, [`Request::origin`], offered subprotocols) and accept it —
/// choosing a subprotocol, adding response headers — or reject it with any HTTP response.
///
/// Returns the response for the service to send and the future of the [`WebSocket`]: spawn a
/// task that awaits it (it resolves only after hyper has written the response, so awaiting it
/// before returning the response never ends). Fails with the response to send instead: 400 for
/// a request that is not a valid WebSocket upgrade (for example an extended CONNECT whose
/// `:protocol` is not `websocket`, or one carrying `Sec-WebSocket-Key`), 405 for another
/// method (`GET` for HTTP/1.1, `CONNECT` for HTTP/2), 426 for another WebSocket version or a
/// connection hyper cannot upgrade (a server built without upgrades), 500 for an invalid
/// `config` or an `Accept` choosing a subprotocol the client did not offer (both logged), or
/// what `decide` returned.
pub fn upgrade_with<B, T, F>(
    request: &mut http::Request<B>,
    config: &Config,
    decide: F,
) -> std::result::Result<(http::Response<T>, UpgradeFuture), Reject>
where
    T: Default,
    F: FnOnce(&Request) -> std::result::Result<Accept, Reject>,
{
    let checked = Checked::from_request(request)?;
    let accept = decide(&checked.request)?;
    checked.accept(Arc::new(config.clone()), &accept)
}

/// A request that asks for a WebSocket and that hyper can upgrade, not answered yet.
pub(crate) struct Checked {
    pub(crate) request: Request,
    on_upgrade: OnUpgrade,
    tracked: Option<Arc<Tracked>>,
}

impl Checked {
    /// Check `request` and take its upgrade from hyper.
    pub(crate) fn from_request<B>(request: &mut http::Request<B>) -> std::result::Result<Self, Reject> {
        let head = head(request.method(), request.uri(), request.version(), request.headers());
        Self::from_parts(head, request.extensions_mut())
    }

    /// Check the request whose `head` is given, and take its upgrade from `extensions`.
    pub(crate) fn from_parts(
        head: http::Request<()>,
        extensions: &mut http::Extensions,
    ) -> std::result::Result<Self, Reject> {
        let version = head.version();
        let protocol = extensions.get::<::hyper::ext::Protocol>().map(|p| p.as_str());
        let request = Request::from_head(head, protocol).map_err(|e| refusal(&e, version))?;
        // hyper puts an `OnUpgrade` in the extensions of every request it can upgrade.
        let Some(on_upgrade) = extensions.remove::<OnUpgrade>() else {
            return Err(refusal(&not_upgradable(), version));
        };
        Ok(Self { request, on_upgrade, tracked: extensions.get::<Arc<Tracked>>().cloned() })
    }

    /// Accept with `accept`: the response head to send and the WebSocket's future.
    pub(crate) fn accept<T: Default>(
        self,
        config: Arc<Config>,
        accept: &Accept,
    ) -> std::result::Result<(http::Response<T>, UpgradeFuture), Reject> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            warn!(error = %e, "cannot accept a WebSocket upgrade: {what}");
            Reject::status(StatusCode::INTERNAL_SERVER_ERROR)
        };
        let mut conn = Connection::server_shared(config, now()).map_err(|e| internal("invalid config", &e))?;
        let head = conn.accept_upgraded(&self.request, accept).map_err(|e| internal("invalid Accept", &e))?;
        let (parts, ()) = head.into_parts();
        let version = self.request.head().version();
        let future = UpgradeFuture {
            on_upgrade: self.on_upgrade,
            pending: Some(Box::new(Opening { conn, version, tracked: self.tracked })),
        };
        Ok((http::Response::from_parts(parts, T::default()), future))
    }
}

/// The head of a request hyper read, without its body and extensions.
pub(crate) fn head(
    method: &http::Method,
    uri: &http::Uri,
    version: Version,
    headers: &http::HeaderMap,
) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = method.clone();
    *head.uri_mut() = uri.clone();
    *head.version_mut() = version;
    *head.headers_mut() = headers.clone();
    head
}

/// The error a request hyper cannot upgrade gets: 426, as for a client that must upgrade.
fn not_upgradable() -> HandshakeError {
    HandshakeError::BadRequest { status: StatusCode::UPGRADE_REQUIRED, reason: "connection cannot be upgraded" }
}

/// The answer to a request [`Request::from_head`] refused: its status, the error as a
/// one-line body, `Allow` for a 405 and `Sec-WebSocket-Version` for a 426, as the engine's
/// own parser answers.
pub(crate) fn refusal(error: &HandshakeError, version: Version) -> Reject {
    let status = match error {
        HandshakeError::BadRequest { status, .. } => *status,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = http::Response::new(Bytes::from(format!("{error}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = if version >= Version::HTTP_2 { "CONNECT" } else { "GET" };
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if status == StatusCode::UPGRADE_REQUIRED {
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    Reject::response(response)
}

/// The future of an upgraded [`WebSocket`], from [`upgrade`] and [`upgrade_with`]: resolves
/// once hyper has sent the response and handed over the connection (or the HTTP/2 stream).
///
/// Fails with an I/O error if the connection ended first or hyper could not upgrade it.
#[must_use = "the WebSocket opens only when this future is awaited"]
pub struct UpgradeFuture {
    on_upgrade: OnUpgrade,
    /// Boxed so that the future stays small until it resolves; `None` once it has.
    pending: Option<Box<Opening>>,
}

/// What the WebSocket is made of, besides the stream hyper hands over.
struct Opening {
    conn: Connection,
    version: Version,
    tracked: Option<Arc<Tracked>>,
}

impl std::fmt::Debug for UpgradeFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradeFuture").finish_non_exhaustive()
    }
}

impl Future for UpgradeFuture {
    type Output = Result<WebSocket<Io>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let upgraded = ready!(Pin::new(&mut this.on_upgrade).poll(cx));
        let Some(opening) = this.pending.take() else {
            return Poll::Ready(Err(Error::from(std::io::Error::other("UpgradeFuture polled after it resolved"))));
        };
        let upgraded = upgraded.map_err(std::io::Error::other)?;
        Poll::Ready(Ok((*opening).open(upgraded)))
    }
}

impl Opening {
    /// The WebSocket over what hyper handed over: the TCP socket if it is one underneath
    /// (hyper-util's `auto` builder and hyper's `http1` builder both over `TokioIo<TcpStream>`),
    /// with the bytes read past the request fed in first; hyper's upgraded stream otherwise.
    fn open(self, upgraded: ::hyper::upgrade::Upgraded) -> WebSocket<Io> {
        let Self { mut conn, version, tracked } = self;
        type Tcp = hyper_util::rt::TokioIo<TcpStream>;
        let parts = hyper_util::server::conn::auto::upgrade::downcast::<Tcp>(upgraded)
            .map(|parts| (parts.io, parts.read_buf))
            .or_else(|upgraded| upgraded.downcast::<Tcp>().map(|parts| (parts.io, parts.read_buf)));
        let io = match parts {
            Ok((tcp, read_buf)) => {
                // A client may send its first frame with its request: hyper read it already.
                if !read_buf.is_empty() {
                    conn.receive(&read_buf, now());
                }
                Io::tcp(tcp.into_inner(), version, tracked.clone())
            }
            // hyper's upgraded stream hands out what it read past the request first.
            Err(upgraded) => Io::upgraded(upgraded, version, tracked.clone()),
        };
        let mut ws = WebSocket::from_connection(io, conn);
        // Counted as `wsx::Server` counts the connections it accepts (when metrics are on).
        ws.count_as_accepted();
        if let Some(tracked) = tracked {
            ws.close_on(tracked.watch());
        }
        ws
    }
}
