//! Streams that wrap another stream and hand their I/O on to it (TLS or not, server-side TLS).

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream a connection can run over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Implement `AsyncRead` and `AsyncWrite` for a wrapper `$ty<S>` by handing every call to the
/// stream its `io_mut` and `io` methods return (`&mut dyn Io` and `&dyn Io`), vectored writes
/// included.
macro_rules! forward_io {
    ($ty:ident) => {
        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for $ty<S> {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_read(cx, buf)
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for $ty<S> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io().is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_shutdown(cx)
            }
        }
    };
}

pub(crate) use forward_io;
