//! The echo loop and settings shared by the echo examples (`echo_server`, `echo_per_core`,
//! `autobahn_client`) and the idle-memory test, so that the servers the benchmarks and the
//! conformance suite measure are one and the same. Included with `#[path]`; not an example of
//! its own (Cargo only picks up `examples/*.rs` and `examples/*/main.rs`).

use tokio::io::{AsyncRead, AsyncWrite};
use wsx::{Config, DeflateConfig, WebSocket};

/// The echo servers' settings: permessage-deflate accepted, messages up to 64 MiB.
#[allow(dead_code)] // The Autobahn client brings its own.
pub(crate) fn server_config() -> Config {
    Config::default().deflate(Some(DeflateConfig::default())).max_message_size(64 << 20)
}

/// Echo every message back (text as text, binary as binary) until the connection ends, with
/// the borrowed receive path: each message is answered where it lies in the read buffer, and
/// all the answers to one read go out in one write.
///
/// Not an `async fn`: that would keep its argument and the block's copy of the socket side by
/// side in the future for the connection's whole life (measured when this was written: 1,351
/// instead of 967 heap bytes per idle connection in `tests/idle_memory.rs`).
#[allow(clippy::manual_async_fn, dead_code)]
pub(crate) fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> impl Future<Output = wsx::Result<()>> {
    async move {
        loop {
            // Sending fails only once we are closing, when there is nobody to answer.
            match ws
                .recv_each(|message, replies| {
                    let _ = replies.send(message);
                })
                .await
            {
                // Pings are answered already; pongs and the peer's close need nothing.
                Ok(Some(_)) => {}
                Ok(None) => break,
                // A protocol failure is reported as soon as our close frame is out; keep polling
                // so the closing handshake finishes cleanly, then the stream ends.
                Err(e) if e.is_protocol() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The same echo with owned messages: `recv`, then `feed` each echo and `flush` once no other
/// message is waiting, so a burst that arrived in one read goes back in one write.
#[allow(clippy::manual_async_fn, dead_code)]
pub(crate) fn echo_messages<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
) -> impl Future<Output = wsx::Result<()>> {
    async move {
        loop {
            let message = match ws.recv().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) if e.is_protocol() => continue,
                Err(e) => return Err(e),
            };
            if message.is_data() {
                ws.feed(message).await?;
                if !ws.has_pending_messages() {
                    ws.flush().await?;
                }
            }
        }
        Ok(())
    }
}

/// The same echo as two tasks, as applications that read and write from different places are
/// written: the split reader forwards each message through a channel to a task that owns the
/// writer and sends it (feeding while more are queued, flushing when the channel is empty).
#[allow(clippy::manual_async_fn, dead_code)]
pub(crate) fn echo_split<S>(ws: WebSocket<S>) -> impl Future<Output = wsx::Result<()>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let (mut reader, mut writer) = ws.split();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<wsx::Message>(64);
        let sending = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                writer.feed(message).await?;
                if rx.is_empty() {
                    writer.flush().await?;
                }
            }
            Ok::<_, wsx::Error>(())
        });
        loop {
            match reader.recv().await {
                Ok(Some(message)) if message.is_data() => {
                    if tx.send(message).await.is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.is_protocol() => {}
                Err(e) => return Err(e),
            }
        }
        drop(tx);
        // The writer ends once the channel is empty; a send that fails after the close is not
        // an error here.
        let _ = sending.await;
        Ok(())
    }
}
