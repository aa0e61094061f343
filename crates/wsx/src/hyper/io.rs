//! [`Io`]: the stream a WebSocket upgraded through hyper runs over.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use ::hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::serve::Tracked;

/// The most bytes gathered into one write over a stream that has no vectored writes (an
/// HTTP/2 stream): one DATA frame's worth at hyper's default `max_frame_size`.
const GATHER_MAX: usize = 16 * 1024;

/// The gathering buffer an idle connection keeps; a larger one is freed after its write.
const GATHER_KEEP: usize = 4 * 1024;

/// How long a dropped HTTP/2 WebSocket's stream is read (and what arrives discarded) waiting
/// for the peer to end it, before it is reset: see `Drop for Io`.
const H2_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The stream under a WebSocket that hyper upgraded: the TCP socket itself when hyper served
/// the connection over plain TCP with HTTP/1.1 (the fast path, the same as
/// [`Server`](crate::Server)'s), or hyper's upgraded stream otherwise (HTTP/2, where the
/// WebSocket is one stream of the connection, TLS terminated in front of hyper, custom I/O).
pub struct Io {
    inner: Inner,
    version: http::Version,
    /// The peer ended its side (a read returned nothing).
    read_eof: bool,
    /// The [`serve`](super::Server) connection this WebSocket came from: it counts against
    /// the connection cap until the WebSocket is dropped.
    _tracked: Option<Arc<Tracked>>,
}

enum Inner {
    Tcp(TcpStream),
    Upgraded {
        io: TokioIo<Upgraded>,
        /// Where a vectored write is gathered into one write when `io` has no vectored writes
        /// (an HTTP/2 stream turns each write into a DATA frame).
        gather: Vec<u8>,
    },
    /// Handed to the task that ends the stream after a drop.
    Dropped,
}

impl Io {
    pub(super) fn tcp(tcp: TcpStream, version: http::Version, tracked: Option<Arc<Tracked>>) -> Self {
        Self { inner: Inner::Tcp(tcp), version, read_eof: false, _tracked: tracked }
    }

    pub(super) fn upgraded(io: Upgraded, version: http::Version, tracked: Option<Arc<Tracked>>) -> Self {
        let inner = Inner::Upgraded { io: TokioIo::new(io), gather: Vec::new() };
        Self { inner, version, read_eof: false, _tracked: tracked }
    }

    /// The HTTP version the WebSocket was opened over: `HTTP_11` for a `GET` + `Upgrade`,
    /// `HTTP_2` for an extended CONNECT (RFC 8441).
    pub fn http_version(&self) -> http::Version {
        self.version
    }

    /// The TCP socket, when hyper's connection was plain TCP with HTTP/1.1 and the WebSocket
    /// runs on the socket itself; `None` over HTTP/2, TLS or other I/O.
    pub fn tcp_stream(&self) -> Option<&TcpStream> {
        match &self.inner {
            Inner::Tcp(tcp) => Some(tcp),
            Inner::Upgraded { .. } | Inner::Dropped => None,
        }
    }
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Tcp(_) => "tcp",
            Inner::Upgraded { .. } | Inner::Dropped => "upgraded",
        };
        f.debug_struct("Io").field("kind", &kind).field("version", &self.version).finish()
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Inner::Upgraded { io, .. } => {
                let before = buf.filled().len();
                let read = ready!(Pin::new(io).poll_read(cx, buf));
                if read.is_ok() && buf.filled().len() == before && buf.remaining() > 0 {
                    this.read_eof = true;
                }
                Poll::Ready(read)
            }
            Inner::Dropped => Poll::Ready(Err(dropped())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Inner::Upgraded { io, .. } => Pin::new(io).poll_write(cx, buf),
            Inner::Dropped => Poll::Ready(Err(dropped())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Inner::Upgraded { io, .. } if io.is_write_vectored() => Pin::new(io).poll_write_vectored(cx, bufs),
            Inner::Upgraded { io, gather } => {
                // A frame's header and payload are separate slices; written one by one they
                // would become separate DATA frames. Gather them (up to one frame's worth):
                // hyper copies each write anyway. Nothing is kept across calls, so a write
                // that is not ready is gathered again from the caller's slices next time.
                let Some(first) = bufs.iter().find(|buf| !buf.is_empty()) else { return Poll::Ready(Ok(0)) };
                if first.len() >= GATHER_KEEP {
                    return Pin::new(io).poll_write(cx, first);
                }
                gather.clear();
                for buf in bufs {
                    let room = GATHER_MAX - gather.len();
                    if room == 0 {
                        break;
                    }
                    gather.extend_from_slice(&buf[..buf.len().min(room)]);
                }
                let written = Pin::new(&mut *io).poll_write(cx, gather);
                if gather.capacity() > GATHER_KEEP {
                    *gather = Vec::new();
                }
                written
            }
            Inner::Dropped => Poll::Ready(Err(dropped())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Over an upgraded stream without them, `poll_write_vectored` gathers.
        match &self.inner {
            Inner::Tcp(tcp) => tcp.is_write_vectored(),
            Inner::Upgraded { .. } | Inner::Dropped => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Inner::Upgraded { io, .. } => Pin::new(io).poll_flush(cx),
            Inner::Dropped => Poll::Ready(Err(dropped())),
        }
    }

    /// Shut the write side: a TCP FIN, or END_STREAM on an HTTP/2 stream.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Inner::Upgraded { io, .. } => Pin::new(io).poll_shutdown(cx),
            Inner::Dropped => Poll::Ready(Err(dropped())),
        }
    }
}

/// Unreachable in use: only a dropped `Io` is `Dropped`.
fn dropped() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl Drop for Io {
    /// Over HTTP/2, dropping a stream the peer has not ended resets it (RST_STREAM), and the
    /// peer's HTTP/2 layer then throws away what it had not read yet, our close frame with it:
    /// a client still sending when the server failed the WebSocket (1009, 1013, …) saw 1006.
    /// So such a stream is handed to a task that reads it, discarding, until the peer ends it
    /// (it does once it reads our close) or [`H2_LINGER`] passes, as a TCP server's lingering
    /// close does. It still counts against the server's connection cap meanwhile.
    fn drop(&mut self) {
        if self.version != http::Version::HTTP_2 || self.read_eof {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Inner::Upgraded { mut io, .. } = std::mem::replace(&mut self.inner, Inner::Dropped) else { return };
        let tracked = self._tracked.take();
        runtime.spawn(async move {
            let _tracked = tracked;
            let mut discard = [0u8; 2048];
            let _ = tokio::time::timeout(H2_LINGER, async {
                while matches!(tokio::io::AsyncReadExt::read(&mut io, &mut discard).await, Ok(n) if n > 0) {}
            })
            .await;
        });
    }
}
