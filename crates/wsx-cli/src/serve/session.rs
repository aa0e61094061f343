//! The WebSocket side of `wsx serve`: one handler per client, in one of four modes.
//!
//! Messages are handled where they lie in the read buffer (`recv_each`), as `echo_server`
//! does, so that the echoes of a burst that arrived in one read go back in one write.
//!
//! An idle client costs what an idle `echo_server` client costs (issue 16 asks for 10 %; tokio
//! rounds a task up to a multiple of 128 bytes, so a few more bytes in the handler's future
//! can cost 128). So the future holds the `WebSocket` and, when messages are logged, 4 bytes:
//! - the shared [`State`] is a global, not an `Arc` in every connection;
//! - the client's address (32 bytes) is kept in a table under a 4-byte id given to each
//!   WebSocket (not its socket: over HTTP/2 many WebSockets share one), and looked up there
//!   when a line is logged ([`Client`]); with `--quiet` the message logger is zero-sized
//!   ([`Quiet`]);
//! - the greeting is queued before the future starts, not awaited inside it;
//! - handlers are plain functions returning their future, not `async fn`s, which would keep
//!   their arguments (the upgrade request among them) for the connection's life.

use std::{
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
    task::{Context, Poll, Waker},
};

use futures_sink::Sink;
use http::Version;
use tokio::io::{AsyncRead, AsyncWrite};
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

/// The position a resuming client gives in its request's query: `since=OFFSET:EPOCH`, its `:`
/// escaped or not (`%3A`, as clients that encode query values send it).
pub(super) fn since(query: Option<&str>) -> Option<Result<Position, InvalidPosition>> {
    let value = query?.split('&').find_map(|pair| pair.strip_prefix("since="))?;
    Some(super::http::percent_decode(value).ok_or(InvalidPosition).and_then(|value| value.parse()))
}

/// The state of the one server this process runs.
static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    // Invariant: `serve` sets it before it accepts the first client.
    STATE.get().expect("the server state is set before serving")
}

/// The stream under a client's WebSocket: plain TCP, TLS over TCP, or hyper's upgraded
/// stream (HTTP/1.1 under TLS, or one HTTP/2 stream).
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for S {}

/// What a session needs to know of the request that opened its WebSocket.
#[derive(Debug)]
pub(super) struct Opened<'a> {
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// The request path, without the query.
    pub(super) path: &'a str,
    /// The request's query, if any (`since=` with --resumable).
    pub(super) query: Option<&'a str>,
    /// `HTTP_11` for a `GET` + `Upgrade`, `HTTP_2` for an extended CONNECT (RFC 8441).
    pub(super) version: Version,
}

impl<'a> From<&'a ConnectionInfo> for Opened<'a> {
    fn from(info: &'a ConnectionInfo) -> Self {
        Self { peer: info.peer_addr(), path: info.path(), query: info.query(), version: Version::HTTP_11 }
    }
}

/// The session for a WebSocket in the mode of this server: what [`serve`] runs for each client
/// of `wsx::Server`, for a WebSocket another HTTP layer (hyper, for HTTP/2) upgraded.
pub(super) async fn session<S: Stream>(ws: WebSocket<S>, opened: Opened<'_>) -> wsx::Result<()> {
    match (state().mode, state().quiet) {
        (Mode::Classic | Mode::Echo, true) => direct::<_, Quiet>(ws, &opened).await,
        (Mode::Classic | Mode::Echo, false) => direct::<_, Client>(ws, &opened).await,
        (Mode::Broadcast | Mode::Rooms, true) => chat::<_, Quiet>(ws, &opened).await,
        (Mode::Broadcast | Mode::Rooms, false) => chat::<_, Client>(ws, &opened).await,
    }
}

/// Make `shared` the state of this process's server, before it serves.
pub(super) fn init(shared: State) -> anyhow::Result<()> {
    STATE.set(shared).map_err(|_| anyhow::anyhow!("a server is already running in this process"))
}

/// Serve clients until Ctrl-C or SIGTERM; the server then closes them with 1001.
pub(super) async fn serve<T>(server: Server<T>, shared: State) -> anyhow::Result<()>
where
    T: Transport,
    T::Stream: Stream,
{
    let (mode, quiet) = (shared.mode, shared.quiet);
    init(shared)?;
    let signal = shutdown_signal();
    // One handler type per kind of session: a client's task holds only what its session needs.
    match (mode, quiet) {
        (Mode::Classic | Mode::Echo, true) => {
            server.serve_with_shutdown(|ws, info| direct::<_, Quiet>(ws, &Opened::from(&info)), signal).await?
        }
        (Mode::Classic | Mode::Echo, false) => {
            server.serve_with_shutdown(|ws, info| direct::<_, Client>(ws, &Opened::from(&info)), signal).await?
        }
        (Mode::Broadcast | Mode::Rooms, true) => {
            server.serve_with_shutdown(|ws, info| chat::<_, Quiet>(ws, &Opened::from(&info)), signal).await?
        }
        (Mode::Broadcast | Mode::Rooms, false) => {
            server.serve_with_shutdown(|ws, info| chat::<_, Client>(ws, &Opened::from(&info)), signal).await?
        }
    }
    Ok(())
}

/// Classic and echo mode: log each message and, in echo mode, send it back.
fn direct<S: Stream, L: Logger>(
    mut ws: WebSocket<S>,
    opened: &Opened<'_>,
) -> impl Future<Output = wsx::Result<()>> + use<S, L> {
    let client = connected(&mut ws, opened);
    async move {
        loop {
            let outcome = ws
                .recv_each({
                    let log = L::of(client);
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
            if !keep_going(client, outcome) {
                break;
            }
        }
        disconnected(&ws, client);
        Ok(())
    }
}

/// Rooms and broadcast mode: publish each message to the client's room (everyone, in broadcast
/// mode), this client included. The room's other messages go out while `recv_each` drives the
/// connection; a client that falls `--max-backlog` bytes behind is closed with 1008.
fn chat<S: Stream, L: Logger>(
    mut ws: WebSocket<S>,
    opened: &Opened<'_>,
) -> impl Future<Output = wsx::Result<()>> + use<S, L> {
    let hub = &state().hub;
    let name = match state().mode {
        Mode::Rooms => room(opened.path),
        _ => Some("everyone"),
    };
    // Checked by the handshake policy: a room's path has a name the hub takes.
    let mut resuming = None;
    let joined = name.ok_or("not a room's path").and_then(|name| {
        let topic = hub.topic(name).map_err(|_| "no room for another room")?;
        // Checked by the handshake policy too: a `since` that is there parses.
        match since(opened.query).and_then(Result::ok).filter(|_| state().resumable) {
            Some(position) => resuming = Some(ws.resume(hub, &topic, position).map_err(|_| "cannot join the room")?),
            None => drop(ws.subscribe(hub, &topic).map_err(|_| "cannot join the room")?),
        }
        Ok(topic)
    });
    let joined = joined.map(|room| (room, connected(&mut ws, opened)));
    async move {
        let (room, client) = match joined {
            Ok(joined) => joined,
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
            let log = L::of(client);
            let room = &room;
            let outcome = ws
                .recv_each(move |message, _| {
                    log.received(&message);
                    hub.publish(room, Prepared::from_ref(message));
                })
                .await;
            if !keep_going(client, outcome) {
                break;
            }
        }
        disconnected(&ws, client);
        Ok(())
    }
}

/// Log a new client, queue its greeting, and give it its id.
fn connected<S: Stream>(ws: &mut WebSocket<S>, opened: &Opened<'_>) -> Client {
    let peer = opened.peer;
    let client = Client::connected(peer);
    info!(
        %peer,
        path = opened.path,
        http = http_version(opened.version),
        protocol = ws.protocol(),
        compressed = ws.is_compressed(),
        "client connected"
    );
    let greeting = state().greeting.as_str();
    if !greeting.is_empty() {
        // Queued here and written by the first read: an await for it would make every
        // connection's future bigger. A new connection's queue is empty, so it is ready.
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok(())) = Pin::new(&mut *ws).poll_ready(&mut cx) {
            let _ = Pin::new(&mut *ws).start_send(Message::text(greeting));
        }
    }
    client
}

/// The HTTP version a WebSocket came over, as logged.
fn http_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// How a session logs the messages it receives.
trait Logger: Copy + Send + 'static {
    /// The logger for `client`.
    fn of(client: Client) -> Self;

    /// Log a text or binary message.
    fn received(self, message: &MessageRef<'_>);
}

/// `--quiet`: logs no message, and takes no room in the session.
#[derive(Debug, Clone, Copy)]
struct Quiet;

impl Logger for Quiet {
    fn of(_: Client) -> Self {
        Self
    }

    fn received(self, _: &MessageRef<'_>) {}
}

impl Logger for Client {
    fn of(client: Client) -> Self {
        client
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
fn keep_going(client: Client, received: wsx::Result<Option<Message>>) -> bool {
    match received {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(e) => {
            info!(peer = %client.peer(), error = %e, "client connection failed");
            e.is_protocol()
        }
    }
}

/// Log how the client left (how long it stayed is the time since its "client connected" line).
fn disconnected<S: Stream>(ws: &WebSocket<S>, client: Client) {
    let code = ws.close_reason().map_or(CloseCode::ABNORMAL.0, |r| r.code().0);
    info!(peer = %client.peer(), code, "client disconnected");
    client.disconnected();
}

/// A client, as its session keeps it: a 4-byte id, given when it connects and taken back when
/// it leaves. Its address (32 bytes) is in [`CLIENTS`] under that id, for the log lines.
#[derive(Debug, Clone, Copy)]
struct Client {
    id: u32,
}

/// The addresses of the clients connected now, by id, and the ids free for reuse. Ids are
/// reused (the last freed first), so the table stays as long as the most clients connected at
/// once.
#[derive(Debug)]
struct Clients {
    peers: Vec<Option<SocketAddr>>,
    free: Vec<u32>,
}

static CLIENTS: Mutex<Clients> = Mutex::new(Clients { peers: Vec::new(), free: Vec::new() });

fn clients() -> MutexGuard<'static, Clients> {
    // Every critical section leaves the table consistent, so a poisoned lock is usable.
    CLIENTS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// A client has connected from `peer`: its id.
    fn connected(peer: SocketAddr) -> Self {
        let mut clients = clients();
        let id = match clients.free.pop() {
            Some(id) => id,
            None => {
                clients.peers.push(None);
                // More than 4 billion clients at once do not fit in memory first.
                u32::try_from(clients.peers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        if let Some(slot) = clients.peers.get_mut(id as usize) {
            *slot = Some(peer);
        }
        Self { id }
    }

    /// The client's address, for a log line.
    fn peer(self) -> Peer {
        Peer(clients().peers.get(self.id as usize).copied().flatten())
    }

    /// The client has gone: its id will be another client's.
    fn disconnected(self) {
        let mut clients = clients();
        if let Some(slot) = clients.peers.get_mut(self.id as usize)
            && slot.take().is_some()
        {
            clients.free.push(self.id);
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
pub(super) async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_the_position_escaped_or_not() {
        let expected = Position::new(12, "7cf70ebb8c8a280f");
        for query in ["since=12:7cf70ebb8c8a280f", "room=x&since=12%3A7cf70ebb8c8a280f", "since=12%3a7cf70ebb8c8a280f"]
        {
            assert_eq!(since(Some(query)), Some(Ok(expected.clone())), "{query}");
        }
        assert_eq!(since(Some("room=x")), None);
        assert_eq!(since(None), None);
        for bad in ["since=soon", "since=12%3", "since=12%3Gx", "since=12%3A", "since=%FF:1"] {
            assert_eq!(since(Some(bad)), Some(Err(InvalidPosition)), "{bad}");
        }
    }
}
