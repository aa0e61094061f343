//! The client side of WebSockets over HTTP/2 (RFC 8441): [`ClientBuilder::connect_http2`].
//!
//! hyper's HTTP/2 client carries the extended CONNECT; the engine builds the request
//! (`Connection::client_upgraded`) and checks the response, so the subprotocol and
//! permessage-deflate are agreed by the same code as over HTTP/1.1.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use ::hyper::{body::Frame, ext::Protocol};
use bytes::Bytes;
use http::Version;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::watch,
};
use tokio_util::either::Either;
use wsx_proto::{Connection, Event, HandshakeError, OsSeededRng, ProtocolError, Response};

use super::Io;
use crate::{ClientBuilder, Error, Result, WebSocket, client::connect_tcp, driver::now};

/// The ALPN name of HTTP/2 over TLS (RFC 9113 §3.2).
#[cfg(feature = "__tls")]
const ALPN_H2: &[u8] = b"h2";

impl ClientBuilder {
    /// Connect over HTTP/2: open an HTTP/2 connection (TLS with ALPN `h2` for `wss://`,
    /// cleartext HTTP/2 with prior knowledge for `ws://`) and open the WebSocket as one stream
    /// of it, an extended CONNECT with `:protocol websocket` (RFC 8441 §4). Feature `hyper`.
    ///
    /// HTTP/2 is required, not preferred: this fails if the server does not agree to `h2` by
    /// ALPN, or did not announce `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3), which a
    /// server sends only if it takes WebSockets over HTTP/2 ([`Error::is_handshake`] holds for
    /// both). A caller that only prefers HTTP/2 connects with [`connect`](Self::connect) on that
    /// error. Browsers use HTTP/2 only when they already have an HTTP/2 connection to the
    /// origin; a client that opens one connection per WebSocket gains nothing from it, so
    /// `connect` stays the default.
    ///
    /// The headers, subprotocols, limits, deflate offer, TLS settings and connect timeout of
    /// the builder apply; proxies and redirects do not (the connection goes straight to the
    /// URL's host). The WebSocket runs over the HTTP/2 stream ([`Io`]): its frames travel in
    /// DATA frames under HTTP/2 flow control, and its clean close ends the stream with
    /// END_STREAM. The connection closes when the WebSocket is dropped.
    pub async fn connect_http2(&self) -> Result<(WebSocket<Io>, Response)> {
        let target = self.checked_target()?;
        let mut request = self.request(&target, &self.headers)?;
        *request.version_mut() = Version::HTTP_2;
        let (mut conn, head) = Connection::client_upgraded(&self.config, &request, OsSeededRng::new(), now())?;
        let (mut sender, connection) = tokio::time::timeout(self.connect_timeout, async {
            let tcp = connect_tcp(&target.host, target.port).await?;
            let (settled, mut settings) = watch::channel(false);
            let io = if target.tls { Either::Left(self.tls_h2(&target.host, tcp).await?) } else { Either::Right(tcp) };
            let (mut sender, connection) = handshake(Preface::new(io, settled)).await?;
            // hyper drives the connection in a task of its own: wait until it has taken in the
            // server's SETTINGS, the first frame the server sends (RFC 9113 §3.4).
            settings.wait_for(|settled| *settled).await.map_err(|_| closed())?;
            if !connection.is_extended_connect_protocol_enabled() {
                return Err(HandshakeError::InvalidResponse(
                    "the server does not take WebSockets over HTTP/2: it did not send \
                     SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3)",
                )
                .into());
            }
            sender.ready().await.map_err(|e| Error::from(io::Error::other(e)))?;
            Ok::<_, Error>((sender, connection))
        })
        .await
        .map_err(|_| Error::connect_timeout())??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
            }
        });

        let (parts, ()) = head.into_parts();
        let mut request = http::Request::from_parts(parts, NoBody);
        request.extensions_mut().insert(Protocol::from_static("websocket"));
        let response = sender.send_request(request).await.map_err(|e| Error::from(io::Error::other(e)))?;
        // Only this WebSocket uses the connection: it ends when the WebSocket is dropped.
        drop(sender);
        let mut head = http::Response::new(());
        *head.status_mut() = response.status();
        *head.version_mut() = response.version();
        *head.headers_mut() = response.headers().clone();
        conn.receive_response(head, now());
        let opened = loop {
            match conn.next_event() {
                Some(Event::Opened(opened)) => break *opened,
                Some(Event::Closed(reason)) => return Err(reason.error.unwrap_or_else(unanswered).into()),
                Some(_) => {}
                None => return Err(unanswered().into()),
            }
        };
        let upgraded = ::hyper::upgrade::on(response).await.map_err(|e| Error::from(io::Error::other(e)))?;
        let io = Io::upgraded(upgraded, Version::HTTP_2, None);
        Ok((WebSocket::from_connection(io, conn), opened))
    }

    /// TLS to `host` over `tcp`, agreeing HTTP/2 by ALPN.
    #[cfg(feature = "__tls")]
    async fn tls_h2(&self, host: &str, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut config = rustls::ClientConfig::clone(self.tls_config()?.rustls_config());
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        let tls = crate::tls::TlsConfig::from_rustls(std::sync::Arc::new(config)).connect(host, tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(HandshakeError::InvalidResponse("the server did not agree to HTTP/2 (ALPN h2)").into());
        }
        Ok(tls)
    }

    #[cfg(not(feature = "__tls"))]
    async fn tls_h2(&self, _: &str, _: TcpStream) -> Result<TcpStream> {
        Err(Error::tls("wss:// needs TLS: enable the `rustls-ring` or `rustls-aws-lc-rs` feature of wsx"))
    }
}

/// hyper's HTTP/2 client handshake over `io`.
async fn handshake<S>(
    io: S,
) -> Result<(
    ::hyper::client::conn::http2::SendRequest<NoBody>,
    ::hyper::client::conn::http2::Connection<TokioIo<S>, NoBody, TokioExecutor>,
)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ::hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::from(io::Error::other(e)))
}

/// The engine did not say how the handshake ended (it always does).
fn unanswered() -> ProtocolError {
    HandshakeError::InvalidResponse("the handshake did not complete").into()
}

fn closed() -> Error {
    Error::from(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed before the server's HTTP/2 SETTINGS: does it speak HTTP/2?",
    ))
}

/// The request body of the extended CONNECT: none (the WebSocket's bytes go through the
/// upgraded stream).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoBody;

impl ::hyper::body::Body for NoBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}

/// The client's connection as hyper's HTTP/2 task drives it, watched until the server's
/// SETTINGS have been applied: the server's first frame is its SETTINGS (RFC 9113 §3.4), and
/// h2 applies them as it queues its acknowledgement, before it next writes to the connection.
/// So the first write after the first frame has been read means they are in.
struct Preface<S> {
    io: S,
    /// The first frame's header as read so far, then the bytes of it still to read.
    header: [u8; 9],
    read: usize,
    remaining: Option<usize>,
    settled: Option<watch::Sender<bool>>,
}

impl<S> Preface<S> {
    fn new(io: S, settled: watch::Sender<bool>) -> Self {
        Self { io, header: [0; 9], read: 0, remaining: None, settled: Some(settled) }
    }

    /// Account for `bytes` read from the server.
    fn saw(&mut self, mut bytes: &[u8]) {
        if self.settled.is_none() {
            return;
        }
        while !bytes.is_empty() {
            match self.remaining {
                None => {
                    let n = (self.header.len() - self.read).min(bytes.len());
                    self.header[self.read..self.read + n].copy_from_slice(&bytes[..n]);
                    self.read += n;
                    bytes = &bytes[n..];
                    if self.read == self.header.len() {
                        let [a, b, c, ..] = self.header;
                        self.remaining = Some(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
                    }
                }
                Some(left) => {
                    let n = left.min(bytes.len());
                    self.remaining = Some(left - n);
                    bytes = &bytes[n..];
                }
            }
            if self.remaining == Some(0) {
                break;
            }
        }
    }

    /// About to write: if the first frame is in, h2 has applied it.
    fn writing(&mut self) {
        if self.remaining == Some(0)
            && let Some(settled) = self.settled.take()
        {
            let _ = settled.send(true);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Preface<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Preface<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writing();
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writing();
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writing();
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
