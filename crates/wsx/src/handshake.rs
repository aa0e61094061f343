//! The opening handshake over a stream the caller owns.

use std::future::poll_fn;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use wsx_proto::{Accept, Config, Connection, Event, HandshakeError, OsSeededRng, Request, Response};

use crate::{
    error::{Error, Result},
    stream::{Driver, WebSocket, now},
};

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
    F: FnOnce(&Request) -> std::result::Result<Accept, http::Response<Bytes>>,
{
    let conn = Connection::server(config, now())?;
    let mut driver = Driver::new(io, conn);
    let mut decide = Some(decide);
    loop {
        match poll_fn(|cx| driver.poll_event(cx)).await {
            Some(Ok(Event::Request(request))) => {
                // Invariant: the engine reports one request per connection.
                let decide = decide.take().expect("one request");
                match decide(&request) {
                    Ok(accept) => {
                        driver.conn.accept(&accept)?;
                        poll_fn(|cx| driver.poll_flush(cx)).await?;
                        return Ok(WebSocket::from_driver(driver));
                    }
                    Err(response) => {
                        driver.conn.reject(response)?;
                    }
                }
            }
            Some(Ok(Event::Closed(reason))) => {
                let error = reason.error.unwrap_or(HandshakeError::UnexpectedEof.into());
                // Write the error response and close before reporting.
                let _ = poll_fn(|cx| driver.poll_flush(cx)).await;
                return Err(error.into());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(HandshakeError::UnexpectedEof.into()),
        }
    }
}

/// Run the client handshake for `request` over a stream the caller connected (TCP, TLS, a
/// Unix socket, …). [`connect`](crate::connect) does the connecting too.
///
/// `request` needs a `ws`/`wss` URI (used for the `Host` header and the path) and may carry
/// extra headers and `Sec-WebSocket-Protocol` offers.
pub async fn client<S>(io: S, request: &http::Request<()>, config: &Config) -> Result<(WebSocket<S>, Response)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = Connection::client(config, request, OsSeededRng::new(), now())?;
    let mut driver = Driver::new(io, conn);
    loop {
        match poll_fn(|cx| driver.poll_event(cx)).await {
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
