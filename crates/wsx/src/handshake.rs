//! The opening handshake over a stream the caller owns.

use std::{future::poll_fn, sync::Arc};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use wsx_proto::{Accept, Config, Connection, Event, HandshakeError, OsSeededRng, Request, Response};

use crate::{
    driver::{Driver, Own, now},
    error::{Error, Result},
    stream::WebSocket,
};

/// How a server refuses an upgrade request: any HTTP response but 101.
///
/// Build it from a status (`Reject::from(StatusCode::FORBIDDEN)`, with the reason phrase as
/// body) or from a whole `http::Response<Bytes>` (headers such as `WWW-Authenticate`, a body).
#[derive(Debug)]
pub struct Reject(Box<http::Response<Bytes>>);

impl Reject {
    /// Refuse with `status` and its reason phrase as a plain-text body.
    pub fn status(status: http::StatusCode) -> Self {
        let body = Bytes::from(format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or("")));
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        Self(Box::new(response))
    }

    /// Refuse with this response.
    pub fn response(response: http::Response<Bytes>) -> Self {
        Self(Box::new(response))
    }

    /// The response that will be sent.
    pub fn into_response(self) -> http::Response<Bytes> {
        *self.0
    }
}

impl From<http::StatusCode> for Reject {
    fn from(status: http::StatusCode) -> Self {
        Self::status(status)
    }
}

impl From<http::Response<Bytes>> for Reject {
    fn from(response: http::Response<Bytes>) -> Self {
        Self::response(response)
    }
}

/// Accept a WebSocket connection on `io` with the default [`Config`], whatever the request's
/// path, origin or subprotocols.
pub async fn accept<S>(io: S) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(io, &Config::default(), |_| Ok(Accept::new())).await
}

/// Accept a WebSocket connection on `io`, letting `decide` look at the request (path, query,
/// headers, origin, offered subprotocols) and accept it — choosing a subprotocol, adding
/// response headers — or reject it with any HTTP response.
///
/// Malformed requests are answered (400, 426, 431, …) without calling `decide`. The whole
/// handshake is bounded by the config's `handshake_timeout`.
pub async fn accept_with<S, F>(io: S, config: &Config, decide: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> std::result::Result<Accept, Reject>,
{
    accept_shared(io, Arc::new(config.clone()), decide).await
}

/// [`accept_with`] for a server, whose connections all share one `config`.
pub(crate) async fn accept_shared<S, F>(io: S, config: Arc<Config>, decide: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> std::result::Result<Accept, Reject>,
{
    let (pending, request) = Pending::read(io, config).await?;
    match decide(&request) {
        Ok(accept) => pending.accept(&accept).await,
        Err(reject) => Err(pending.answer(reject.into_response()).await),
    }
}

/// A server connection whose request has been read and not answered yet.
pub(crate) struct Pending<S> {
    driver: Driver<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pending<S> {
    /// Read the request on `io`. A malformed request is answered (400, 426, 431, …) and
    /// reported as the error.
    pub(crate) async fn read(io: S, config: Arc<Config>) -> Result<(Self, Box<Request>)> {
        let conn = Connection::server_shared(config, now())?;
        let mut driver = Driver::new(io, conn);
        let request = next_request(&mut driver).await?;
        Ok((Self { driver }, request))
    }

    /// Accept the request: write the 101 response.
    pub(crate) async fn accept(mut self, accept: &Accept) -> Result<WebSocket<S>> {
        self.driver.conn.accept(accept)?;
        poll_fn(|cx| self.driver.poll_flush(cx)).await?;
        self.driver.metrics.open();
        Ok(WebSocket::from_driver(self.driver))
    }

    /// Answer with `response` instead (a refusal, or the answer to a plain HTTP request), write
    /// it and close. Returns how the handshake ended: `HandshakeError::Rejected` with the
    /// response's status once it is written, or the failure that cut it short.
    pub(crate) async fn answer(mut self, response: http::Response<Bytes>) -> Error {
        if let Err(e) = self.driver.conn.reject(response) {
            return e.into();
        }
        match next_request(&mut self.driver).await {
            Err(ended) => ended,
            // The engine reports one request per connection.
            Ok(_) => HandshakeError::UnexpectedEof.into(),
        }
    }
}

/// Drive a server handshake to its request, or to its end: then write out what is queued (the
/// answer to a refused request) and return why it ended.
async fn next_request<S: AsyncRead + AsyncWrite + Unpin>(driver: &mut Driver<S>) -> Result<Box<Request>> {
    loop {
        match poll_fn(|cx| driver.poll_event(&mut Own, cx)).await {
            Some(Ok(Event::Request(request))) => return Ok(request),
            Some(Ok(Event::Closed(reason))) => {
                let error = reason.error.unwrap_or(HandshakeError::UnexpectedEof.into());
                // Write the response and close before reporting.
                let _ = poll_fn(|cx| driver.poll_flush(cx)).await;
                return Err(error.into());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(HandshakeError::UnexpectedEof.into()),
        }
    }
}

/// Run the client's opening handshake for `request` over a stream the caller connected (TCP,
/// TLS, a Unix socket, …). [`connect`](crate::connect) does the connecting too.
///
/// `request` needs a `ws`/`wss` URI (used for the `Host` header and the path) and may carry
/// extra headers and `Sec-WebSocket-Protocol` offers.
pub async fn handshake<S>(io: S, request: &http::Request<()>, config: &Config) -> Result<(WebSocket<S>, Response)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = Connection::client(config, request, OsSeededRng::new(), now())?;
    open(io, conn).await
}

/// Run a client connection's opening handshake (its request already queued) over `io`.
pub(crate) async fn open<S>(io: S, conn: Connection) -> Result<(WebSocket<S>, Response)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut driver = Driver::new(io, conn);
    loop {
        match poll_fn(|cx| driver.poll_event(&mut Own, cx)).await {
            Some(Ok(Event::Opened(response))) => return Ok((WebSocket::from_driver(driver), *response)),
            Some(Ok(Event::Closed(reason))) => {
                return Err(reason.error.unwrap_or(HandshakeError::UnexpectedEof.into()).into());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(Error::from(HandshakeError::UnexpectedEof)),
        }
    }
}
