//! The WebSocket side of `wsx serve`: one handler per client, in one of four modes.
//!
//! Messages are handled where they lie in the read buffer (`recv_each`), as `echo_server`
//! does, so that the echoes of a burst that arrived in one read go back in one write.
//!
//! An idle client costs what an idle `echo_server` client costs (issue 16 asks for 10 %; tokio
//! rounds a task up to a multiple of 128 bytes, so a few more bytes in the handler's future
//! can cost 128). So the future holds the `WebSocket` and, when messages are logged, 4 bytes:
//! - the shared [`State`] is a global, not an `Arc` in every connection;
//! - the client's address (32 bytes) is kept in a table by socket descriptor, and looked up
//!   there when a line is logged ([`Client`]); with `--quiet` the message logger is
//!   zero-sized ([`Quiet`]);
//! - the greeting is queued before the future starts, not awaited inside it;
//! - handlers are plain functions returning their future, not `async fn`s, which would keep
//!   their arguments (the upgrade request among them) for the connection's life.

#[cfg(unix)]
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::{
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll, Waker},
};

use futures_sink::Sink;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tracing::info;
use wsx::{
    CloseCode, ConnectionInfo, Message, MessageRef, Server, WebSocket,
    pubsub::{Hub, InvalidPosition, Position, Prepared},
    server::Transport,
};

use crate::log::RECEIVED;

/// What `wsx serve` does with a client's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Log them.
    Classic,
    /// Log them and send each back.
    Echo,
    /// Log them and send each to every client: one room.
    Broadcast,
    /// Log them and send each to every client in the sender's room, named by the request path.
    Rooms,
}

/// The longest room name, in bytes.
pub(crate) const MAX_ROOM_NAME: usize = 128;

/// The room a request path names in `--rooms` mode: `/room/NAME` (NAME as sent, percent-escapes
/// and all: two clients that spell a name the same way meet), or `/` for the lobby.
pub(super) fn room(path: &str) -> Option<&str> {
    if path == "/" {
        return Some("lobby");
    }
    let name = path.strip_prefix("/room/")?;
    let name = name.split_once('?').map_or(name, |(name, _)| name);
    (!name.is_empty() && name.len() <= MAX_ROOM_NAME && !name.contains('/')).then_some(name)
}

/// What every connection shares.
#[derive(Debug)]
pub(super) struct State {
    pub(super) mode: Mode,
    /// Sent to each client when it connects, unless empty.
    pub(super) greeting: String,
    /// Do not log each message.
    pub(super) quiet: bool,
    /// The rooms, in rooms and broadcast mode.
    pub(super) hub: Hub,
    /// `--resumable`: clients may resume with `?since=OFFSET:EPOCH`.
    pub(super) resumable: bool,
}

/// The position a resuming client gives in its request's query: `since=OFFSET:EPOCH`.
pub(super) fn since(query: Option<&str>) -> Option<Result<Position, InvalidPosition>> {
    let value = query?.split('&').find_map(|pair| pair.strip_prefix("since="))?;
    Some(value.parse())
}

/// The state of the one server this process runs.
static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    // Invariant: `serve` sets it before it accepts the first client.
    STATE.get().expect("the server state is set before serving")
}

/// The stream under a client's connection: plain TCP, or TLS over TCP.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket.
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Stream for wsx::tls::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// Serve clients until Ctrl-C or SIGTERM; the server then closes them with 1001.
pub(super) async fn serve<T>(server: Server<T>, shared: State) -> anyhow::Result<()>
where
    T: Transport,
    T::Stream: Stream,
{
    let (mode, quiet) = (shared.mode, shared.quiet);
    STATE.set(shared).map_err(|_| anyhow::anyhow!("a server is already running in this process"))?;
    let signal = shutdown_signal();
    // One handler type per kind of session: a client's task holds only what its session needs.
    match (mode, quiet) {
        (Mode::Classic | Mode::Echo, true) => {
            server.serve_with_shutdown(|ws, info| direct::<_, Quiet>(ws, &info), signal).await?
        }
        (Mode::Classic | Mode::Echo, false) => {
            server.serve_with_shutdown(|ws, info| direct::<_, Client>(ws, &info), signal).await?
        }
        (Mode::Broadcast | Mode::Rooms, true) => {
            server.serve_with_shutdown(|ws, info| chat::<_, Quiet>(ws, &info), signal).await?
        }
        (Mode::Broadcast | Mode::Rooms, false) => {
            server.serve_with_shutdown(|ws, info| chat::<_, Client>(ws, &info), signal).await?
        }
    }
    Ok(())
}

/// Classic and echo mode: log each message and, in echo mode, send it back.
fn direct<S: Stream, L: Logger>(
    mut ws: WebSocket<S>,
    info: &ConnectionInfo,
) -> impl Future<Output = wsx::Result<()>> + use<S, L> {
    connected(&mut ws, info);
    async move {
        loop {
            let outcome = ws
                .recv_each({
                    let log = L::of(&ws);
                    move |message, replies| {
                        log.received(&message);
                        if state().mode == Mode::Echo {
                            // Fails only once we are closing, when there is nobody to answer.
                            let _ = replies.send(message);
                        }
                    }
                })
                .await;
            // Pings are answered and the peer's close echoed already.
            if !keep_going(&ws, outcome) {
                break;
            }
        }
        disconnected(&ws);
        Ok(())
    }
}

/// Rooms and broadcast mode: publish each message to the client's room (everyone, in broadcast
/// mode), this client included. The room's other messages go out while `recv_each` drives the
/// connection; a client that falls `--max-backlog` bytes behind is closed with 1008.
fn chat<S: Stream, L: Logger>(
    mut ws: WebSocket<S>,
    info: &ConnectionInfo,
) -> impl Future<Output = wsx::Result<()>> + use<S, L> {
    let hub = &state().hub;
    let name = match state().mode {
        Mode::Rooms => room(info.path()),
        _ => Some("everyone"),
    };
    // Checked by the handshake policy: a room's path has a name the hub takes.
    let mut resuming = None;
    let joined = name.ok_or("not a room's path").and_then(|name| {
        let topic = hub.topic(name).map_err(|_| "no room for another room")?;
        // Checked by the handshake policy too: a `since` that is there parses.
        match since(info.query()).and_then(Result::ok).filter(|_| state().resumable) {
            Some(position) => resuming = Some(ws.resume(hub, &topic, position).map_err(|_| "cannot join the room")?),
            None => drop(ws.subscribe(hub, &topic).map_err(|_| "cannot join the room")?),
        }
        Ok(topic)
    });
    if joined.is_ok() {
        connected(&mut ws, info);
    }
    async move {
        let room = match joined {
            Ok(room) => room,
            Err(reason) => {
                // Try again later: the only refusal left is the hub's topic limit.
                let _ = ws.close(CloseCode::AGAIN, reason).await;
                return Ok(());
            }
        };
        // What it missed is queued before the live messages; if it could not be, say so, with
        // where the room is now.
        if let Some(resuming) = resuming {
            let recovery = resuming.await;
            if !recovery.recovered {
                let now = recovery.position.map(|p| p.to_string()).unwrap_or_default();
                ws.send(Message::text(format!("resume:lost:{now}"))).await?;
            }
        }
        loop {
            let log = L::of(&ws);
            let room = &room;
            let outcome = ws
                .recv_each(move |message, _| {
                    log.received(&message);
                    hub.publish(room, Prepared::from_ref(message));
                })
                .await;
            if !keep_going(&ws, outcome) {
                break;
            }
        }
        disconnected(&ws);
        Ok(())
    }
}

/// Log a new client and queue its greeting.
fn connected<S: Stream>(ws: &mut WebSocket<S>, info: &ConnectionInfo) {
    let peer = info.peer_addr();
    Client::of(ws).connected(peer);
    info!(%peer, path = info.path(), protocol = ws.protocol(), compressed = ws.is_compressed(), "client connected");
    let greeting = state().greeting.as_str();
    if !greeting.is_empty() {
        // Queued here and written by the first read: an await for it would make every
        // connection's future bigger. A new connection's queue is empty, so it is ready.
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok(())) = Pin::new(&mut *ws).poll_ready(&mut cx) {
            let _ = Pin::new(&mut *ws).start_send(Message::text(greeting));
        }
    }
}

/// How a session logs the messages it receives.
trait Logger: Copy + Send + 'static {
    /// The logger for the client of `ws`.
    fn of<S: Stream>(ws: &WebSocket<S>) -> Self;

    /// Log a text or binary message.
    fn received(self, message: &MessageRef<'_>);
}

/// `--quiet`: logs no message, and takes no room in the session.
#[derive(Debug, Clone, Copy)]
struct Quiet;

impl Logger for Quiet {
    fn of<S: Stream>(_: &WebSocket<S>) -> Self {
        Self
    }

    fn received(self, _: &MessageRef<'_>) {}
}

impl Logger for Client {
    fn of<S: Stream>(ws: &WebSocket<S>) -> Self {
        Client::of(ws)
    }

    fn received(self, message: &MessageRef<'_>) {
        match message.as_text() {
            Some(text) => info!(target: RECEIVED, peer = %self.peer(), "Received message => {text}"),
            None => info!(target: RECEIVED, peer = %self.peer(), "Received binary message => {} bytes", message.len()),
        }
    }
}

/// Whether to read on after what `recv_each` returned. A protocol failure is reported as soon
/// as our close frame is out: reading on lets the closing handshake end cleanly.
fn keep_going<S: Stream>(ws: &WebSocket<S>, received: wsx::Result<Option<Message>>) -> bool {
    match received {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(e) => {
            failed(ws, &e);
            e.is_protocol()
        }
    }
}

fn failed<S: Stream>(ws: &WebSocket<S>, e: &wsx::Error) {
    info!(peer = %Client::of(ws).peer(), error = %e, "client connection failed");
}

/// Log how the client left (how long it stayed is the time since its "client connected" line).
fn disconnected<S: Stream>(ws: &WebSocket<S>) {
    let code = ws.close_reason().map_or(CloseCode::ABNORMAL.0, |r| r.code().0);
    let client = Client::of(ws);
    info!(peer = %client.peer(), code, "client disconnected");
    client.disconnected();
}

/// A client, as its session keeps it: the 4 bytes of its socket's descriptor. Its address
/// (32 bytes) is in [`PEERS`] under that number, for the log lines.
#[derive(Debug, Clone, Copy)]
struct Client {
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
    #[cfg(not(unix))]
    peer: Option<SocketAddr>,
}

/// The addresses of the clients connected now, by socket descriptor. Descriptors are small and
/// reused, so this stays about as long as the most clients connected at once.
#[cfg(unix)]
static PEERS: Mutex<Vec<Option<SocketAddr>>> = Mutex::new(Vec::new());

#[cfg(unix)]
fn peers() -> MutexGuard<'static, Vec<Option<SocketAddr>>> {
    // Every critical section leaves the table consistent, so a poisoned lock is usable.
    PEERS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// The client of `ws`.
    fn of<S: Stream>(ws: &WebSocket<S>) -> Self {
        #[cfg(unix)]
        return Self { fd: std::os::fd::AsRawFd::as_raw_fd(ws.get_ref().tcp()) };
        #[cfg(not(unix))]
        return Self { peer: ws.get_ref().tcp().peer_addr().ok() };
    }

    /// The client has connected from `peer`.
    fn connected(self, peer: SocketAddr) {
        #[cfg(unix)]
        if let Ok(at) = usize::try_from(self.fd) {
            let mut peers = peers();
            if peers.len() <= at {
                peers.resize(at + 1, None);
            }
            peers[at] = Some(peer);
        }
        #[cfg(not(unix))]
        let _ = peer;
    }

    /// The client's address, for a log line.
    fn peer(self) -> Peer {
        #[cfg(unix)]
        return Peer(usize::try_from(self.fd).ok().and_then(|at| peers().get(at).copied().flatten()));
        #[cfg(not(unix))]
        return Peer(self.peer);
    }

    /// The client has gone: its descriptor will be another client's.
    fn disconnected(self) {
        #[cfg(unix)]
        if let Ok(at) = usize::try_from(self.fd)
            && let Some(slot) = peers().get_mut(at)
        {
            *slot = None;
        }
    }
}

/// A client's address in a log line (`-` if unknown).
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
