//! Topics shared by several servers through Redis PUB/SUB: [`RedisBroker`].
//!
//! Each node subscribes to a topic's Redis channel (`wsx:` + the topic's name, prefix
//! configurable) while it has local subscribers of the topic, in batches: a burst of interest
//! changes (thousands of rooms at start-up, or after a reconnect) costs one `SUBSCRIBE` per
//! thousand channels, not one round trip each. A publish is delivered to the local subscribers
//! by the hub and sent to Redis by the broker, tagged with the node's id so that the node skips
//! its own message when Redis sends it back: every subscriber on every node gets it once.
//!
//! **Delivery is at most once**, as Redis PUB/SUB is: what is published while a node's
//! connection to Redis is down, or while Redis is disconnecting a node that fell behind
//! (`client-output-buffer-limit pubsub`), does not reach that node. The node is never left
//! behind silently: when its connection drops, every local subscriber of a topic it was
//! receiving is closed with 1012 and [`RESYNC_REASON`](super::RESYNC_REASON) (or the hub's
//! `on_gap` callback is called), and the broker reconnects with exponential backoff and jitter
//! and subscribes again to every topic that has local subscribers.
//!
//! **On Redis**, a message is a 10-byte header — version (1), flags (bit 0: text), the
//! publishing node's id (8 bytes, big-endian) — followed by the payload as it is: no
//! serialization of application data. A message with another version, a short header or text
//! that is not UTF-8 is dropped and counted ([`RedisStats::malformed`]).
//!
//! **Resumable mode** ([`RedisConfig::history`]): each publish runs one Lua script that gives
//! the message the next offset of its topic, appends it to the topic's history (a Redis stream
//! trimmed to about `size` entries and expiring `ttl` after the last publish) and publishes
//! it, offset and epoch included. Every node, the publishing one too, delivers it when it
//! comes back from Redis, in offset order: a node that sees a gap (its connection dropped,
//! Redis disconnected it for falling behind) reads the missing offsets from the history
//! before going on, and after a reconnect reads what it missed while it was away; only when
//! the history no longer reaches back, or its epoch changed, are the topic's subscribers told
//! (1012 or `on_gap`, as above). A connection that [resumes](crate::WebSocket::resume) from a
//! [`Position`] gets the messages after it from the history, then the live ones, without a
//! gap or a duplicate. Clients learn the positions through the
//! [envelope](RedisConfig::envelope) each message is delivered in.

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::RandomState},
    fmt,
    hash::{BuildHasher, Hasher},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use self::history::Track;
use super::{Broker, Prepared, Remote, Resume, SubscriberId};

mod history;
mod resume;

/// The version byte of the header this broker writes and reads.
const VERSION: u8 = 1;
/// Header length: version, flags, node id.
const HEADER: usize = 10;
/// Flag bit: the payload is text.
const TEXT: u8 = 1;
/// Channels per `SUBSCRIBE` or `UNSUBSCRIBE` command.
const BATCH: usize = 1000;

/// Shares a hub's topics with every other node connected to the same Redis (plain PUB/SUB, at
/// most once; see the [module documentation](self)). Cheap to clone: clones share the
/// connection and the counters.
///
/// ```no_run
/// # async fn run() -> wsx::Result<()> {
/// use wsx::pubsub::{Hub, redis::RedisBroker};
///
/// let broker = RedisBroker::connect("redis://127.0.0.1:6379/").await?;
/// let hub = Hub::builder().broker(broker.clone()).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

struct Shared {
    prefix: String,
    node: u64,
    max_message_size: usize,
    max_backlog: usize,
    /// Bytes of publishes handed to the task and not yet sent.
    backlog: AtomicUsize,
    /// The task's connection to Redis is up.
    connected: AtomicBool,
    commands: mpsc::UnboundedSender<Command>,
    stats: Counters,
    /// Resumable mode's settings.
    history: Option<History>,
    envelope: Envelope,
}

/// Resumable mode's settings: see [`RedisConfig::history`].
#[derive(Debug, Clone, Copy)]
struct History {
    size: usize,
    ttl: Duration,
}

/// Makes the frame a subscriber receives from a numbered message: see [`RedisConfig::envelope`].
type Envelope = Arc<dyn Fn(&Publication<'_>) -> Prepared + Send + Sync>;

/// A message of a topic in resumable mode, as the [envelope](RedisConfig::envelope) sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Publication<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The message's offset in the topic.
    pub offset: u64,
    /// The epoch of the topic's history.
    pub epoch: &'a str,
    /// Whether it was published as text.
    pub text: bool,
    /// What was published.
    pub payload: &'a [u8],
}

/// The envelope that adds nothing: subscribers receive what was published, as it was.
pub fn plain(publication: &Publication<'_>) -> Prepared {
    framed(publication.text, publication.payload.to_vec())
}

/// An envelope that puts the message's position in front of it: `OFFSET:EPOCH:` then the
/// payload, in a frame of the kind it was published as (`wsx serve --resumable` uses it). A
/// client keeps the last position it saw and resumes from it.
pub fn position_prefix(publication: &Publication<'_>) -> Prepared {
    let mut bytes = format!("{}:{}:", publication.offset, publication.epoch).into_bytes();
    bytes.extend_from_slice(publication.payload);
    framed(publication.text, bytes)
}

/// A frame of `bytes`, text if `text` (the caller checked the bytes are UTF-8).
fn framed(text: bool, bytes: Vec<u8>) -> Prepared {
    match String::from_utf8(bytes) {
        Ok(text_bytes) if text => Prepared::text(text_bytes),
        Ok(other) => Prepared::binary(other.into_bytes()),
        Err(e) => Prepared::binary(e.into_bytes()),
    }
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    refused: AtomicU64,
    reconnects: AtomicU64,
    recovered: AtomicU64,
    gaps: AtomicU64,
}

/// What a broker has done since it was made: see [`RedisBroker::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisStats {
    /// Messages published to Redis.
    pub published: u64,
    /// Messages from other nodes delivered to this hub.
    pub received: u64,
    /// Messages from Redis dropped because they were not in this broker's format.
    pub malformed: u64,
    /// Publishes not sent: too large, Redis down, or over the backlog limit.
    pub refused: u64,
    /// Times the connection to Redis was lost and made again.
    pub reconnects: u64,
    /// Resumable mode: messages read from the history to fill a node's gap.
    pub recovered: u64,
    /// Resumable mode: gaps the history could not fill (its subscribers were told).
    pub gaps: u64,
}

enum Command {
    Attach(Remote),
    Interest(Box<str>),
    Publish {
        channel: Box<[u8]>,
        message: Bytes,
    },
    /// Resumable mode: the head of a message to number and publish, and its payload; `seq`
    /// is this node's publish number, given by the task when it first sends it, so that Redis
    /// can tell a publish sent again after a failed connection from a new one.
    Numbered {
        topic: Box<str>,
        head: Bytes,
        payload: Bytes,
        seq: Option<u64>,
    },
    Resume(Resume),
}

impl Command {
    /// The bytes of a publish counted against the backlog.
    fn payload_len(&self) -> usize {
        match self {
            Command::Publish { message, .. } => message.len(),
            Command::Numbered { payload, .. } => payload.len(),
            _ => 0,
        }
    }
}

/// Settings for [`RedisBroker::with`].
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    url: String,
    prefix: String,
    max_message_size: usize,
    max_backlog: usize,
    history: Option<History>,
    envelope: Envelope,
    /// PEM certificates of the CAs to trust for `rediss://` instead of the system's.
    #[cfg(feature = "redis-tls")]
    tls_roots: Option<Vec<u8>>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("prefix", &self.prefix)
            .field("max_message_size", &self.max_message_size)
            .field("max_backlog", &self.max_backlog)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Settings for the Redis at `url`: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://…` for TLS (feature `redis-tls`; the system's roots, or
    /// [`tls_roots`](Self::tls_roots)).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "wsx:".into(),
            max_message_size: 1 << 20,
            max_backlog: 64 << 20,
            history: None,
            envelope: Arc::new(plain),
            #[cfg(feature = "redis-tls")]
            tls_roots: None,
        }
    }

    /// For `rediss://`: trust the CA certificates in `pem` (PEM) instead of the system's roots.
    #[cfg(feature = "redis-tls")]
    pub fn tls_roots(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into());
        self
    }

    /// The client for the URL, with TLS settings for `rediss://`.
    fn client(&self) -> crate::Result<redis::Client> {
        let tls = self.url.starts_with("rediss://");
        #[cfg(feature = "redis-tls")]
        if tls && let Some(root) = &self.tls_roots {
            let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root.clone()) };
            return redis::Client::build_with_tls(self.url.as_str(), certificates).map_err(redis_error);
        }
        if tls && !cfg!(feature = "redis-tls") {
            return Err(std::io::Error::other("redis: rediss:// needs wsx's `redis-tls` feature").into());
        }
        redis::Client::open(self.url.as_str()).map_err(redis_error)
    }

    /// Resumable mode: keep each topic's last `size` messages (at least; Redis trims streams
    /// in blocks) for `ttl` after its last publish, number every message, and deliver them in
    /// that order on every node, filling gaps from the history (see the
    /// [module documentation](self)). Costs one Lua script per publish and delivers this
    /// node's own publishes when Redis returns them, not at once.
    pub fn history(mut self, size: usize, ttl: Duration) -> Self {
        self.history = Some(History { size: size.max(1), ttl: ttl.max(Duration::from_secs(1)) });
        self
    }

    /// Resumable mode: the frame subscribers receive for each message, made once per message
    /// per node. Default: [`plain`], the message as published. [`position_prefix`] puts its
    /// position in front, so that a client can resume; an application with its own format
    /// (JSON, say) writes the position into it here.
    pub fn envelope(mut self, envelope: impl Fn(&Publication<'_>) -> Prepared + Send + Sync + 'static) -> Self {
        self.envelope = Arc::new(envelope);
        self
    }

    /// The prefix of every channel name, so that clients can never address other channels.
    /// Default: `wsx:`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The largest message sent to other nodes; larger ones are delivered locally only, and
    /// counted as refused. Default: 1 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The most bytes of publishes waiting to be sent to Redis; past it, publishes are
    /// refused (delivered locally only). Default: 64 MiB.
    pub fn max_backlog(mut self, bytes: usize) -> Self {
        self.max_backlog = bytes;
        self
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.shared.prefix)
            .field("node", &format_args!("{:016x}", self.shared.node))
            .field("connected", &self.shared.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connect to the Redis at `url` with the default settings (see [`RedisConfig`]).
    pub async fn connect(url: &str) -> crate::Result<Self> {
        Self::with(RedisConfig::new(url)).await
    }

    /// Connect with `config`. Fails if the URL is invalid or Redis cannot be reached now;
    /// later outages are handled by reconnecting. Spawns the broker's task on the current
    /// tokio runtime; it ends when the hub and every clone of the broker are dropped.
    pub async fn with(config: RedisConfig) -> crate::Result<Self> {
        let client = config.client()?;
        let first = Connection::open(&client).await.map_err(redis_error)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            prefix: config.prefix,
            node: random(),
            max_message_size: config.max_message_size,
            max_backlog: config.max_backlog,
            backlog: AtomicUsize::new(0),
            connected: AtomicBool::new(true),
            commands,
            stats: Counters::default(),
            history: config.history,
            envelope: config.envelope,
        });
        let task = Task {
            shared: Arc::downgrade(&shared),
            client,
            rx,
            remote: None,
            subscribed: HashSet::new(),
            tracks: HashMap::new(),
            pending: VecDeque::new(),
            published: 0,
        };
        tokio::spawn(task.run(first));
        Ok(Self { shared })
    }

    /// What the broker has done so far.
    pub fn stats(&self) -> RedisStats {
        let c = &self.shared.stats;
        RedisStats {
            published: c.published.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
        }
    }

    /// Whether the connection to Redis is up.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// This node's id, as it tags its messages on Redis.
    pub fn node_id(&self) -> u64 {
        self.shared.node
    }
}

impl Broker for RedisBroker {
    fn attach(&self, hub: Remote) {
        let _ = self.shared.commands.send(Command::Attach(hub));
    }

    fn interest(&self, topic: &str) {
        let _ = self.shared.commands.send(Command::Interest(topic.into()));
    }

    fn publish(&self, topic: &str, message: &Prepared) -> bool {
        self.publish_except(topic, message, None)
    }

    fn orders_delivery(&self) -> bool {
        self.shared.history.is_some()
    }

    fn resume(&self, request: Resume) {
        if self.shared.history.is_none() {
            return request.join(None, false);
        }
        if let Err(mpsc::error::SendError(Command::Resume(request))) =
            self.shared.commands.send(Command::Resume(request))
        {
            request.join(None, false);
        }
    }

    fn publish_except(&self, topic: &str, message: &Prepared, except: Option<SubscriberId>) -> bool {
        let shared = &self.shared;
        let len = message.len();
        if len > shared.max_message_size
            || !shared.connected.load(Ordering::Relaxed)
            || shared.backlog.load(Ordering::Relaxed) + len > shared.max_backlog
        {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if shared.history.is_some() {
            shared.backlog.fetch_add(len, Ordering::Relaxed);
            let head = history::head(shared.node, message, except);
            let payload = message.payload_bytes();
            return shared.commands.send(Command::Numbered { topic: topic.into(), head, payload, seq: None }).is_ok();
        }
        let mut encoded = BytesMut::with_capacity(HEADER + len);
        encoded.put_u8(VERSION);
        encoded.put_u8(if message.is_text() { TEXT } else { 0 });
        encoded.put_u64(shared.node);
        encoded.put_slice(message.payload());
        shared.backlog.fetch_add(encoded.len(), Ordering::Relaxed);
        let channel = channel(&shared.prefix, topic);
        shared.commands.send(Command::Publish { channel, message: encoded.freeze() }).is_ok()
    }
}

/// The Redis channel of `topic`.
/// How often a node measures its lag (with metrics on): see [`probe_channel`].
const LAG_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The channel of a node's lag probe: every [`LAG_PROBE_INTERVAL`] the node publishes the time on
/// it and reads it back from its own subscription, in turn with the topics' messages, so the
/// round trip (`wsx_broker_lag_seconds`) is Redis's latency plus how far behind the node reads
/// what Redis sends it. Outside the topics' channels: a topic's name has no NUL.
fn probe_channel(prefix: &str, node: u64) -> String {
    format!("{prefix}\0lag:{node:016x}")
}

/// The clock the probes carry: nanoseconds since the first probe of the process.
fn lag_clock() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// A probe came back: record its round trip (ignored if it is not 8 bytes: not ours).
fn probe_returned(payload: &[u8]) {
    if let Ok(sent) = <[u8; 8]>::try_from(payload) {
        let now = lag_clock().elapsed().as_nanos() as u64;
        crate::metrics::broker_lag(Duration::from_nanos(now.saturating_sub(u64::from_be_bytes(sent))));
    }
}

fn channel(prefix: &str, topic: &str) -> Box<[u8]> {
    [prefix.as_bytes(), topic.as_bytes()].concat().into_boxed_slice()
}

/// A random 64-bit number (the node id, and backoff jitter): the standard library's randomly
/// keyed hasher, seeded per call.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

fn redis_error(e: redis::RedisError) -> crate::Error {
    std::io::Error::other(format!("redis: {e}")).into()
}

/// One connection to Redis: the subscriber and a multiplexed connection for `PUBLISH` (and,
/// in resumable mode, the script and history reads).
struct Connection {
    sink: redis::aio::PubSubSink,
    stream: Pin<Box<redis::aio::PubSubStream>>,
    publisher: redis::aio::MultiplexedConnection,
    /// The publish script's SHA1, once loaded on this connection.
    script: Option<String>,
}

impl Connection {
    async fn open(client: &redis::Client) -> redis::RedisResult<Self> {
        let (sink, stream) = client.get_async_pubsub().await?.split();
        let publisher = client.get_multiplexed_async_connection().await?;
        Ok(Self { sink, stream: Box::pin(stream), publisher, script: None })
    }
}

/// The broker's task: moves publishes to Redis and messages from Redis to the hub, keeps the
/// subscriptions in step with the hub, and reconnects.
struct Task {
    shared: std::sync::Weak<Shared>,
    client: redis::Client,
    rx: mpsc::UnboundedReceiver<Command>,
    remote: Option<Remote>,
    /// Topics subscribed on the current connection.
    subscribed: HashSet<String>,
    /// Resumable mode: where this node is in each topic it receives. Kept across a reconnect,
    /// to read what was missed.
    tracks: HashMap<String, Track>,
    /// A command taken from the queue to be carried out after those before it.
    /// Commands to carry out before the queue's: one held back behind an interest change, or
    /// resumable publishes whose connection failed before Redis answered (sent again after the
    /// reconnect).
    pending: VecDeque<Command>,
    /// Resumable publishes numbered so far by this node (see `Command::Numbered`).
    published: u64,
}

/// Why a connection's loop ended.
enum End {
    /// The hub and every broker handle are gone.
    Finished,
    /// The connection failed.
    Lost(String),
}

impl Task {
    async fn run(mut self, first: Connection) {
        let mut connection = Some(first);
        let mut delay = Duration::from_millis(100);
        loop {
            let conn = match connection.take() {
                Some(conn) => conn,
                None => match Connection::open(&self.client).await {
                    Ok(conn) => {
                        self.count(|c| &c.reconnects);
                        crate::metrics::broker_reconnected();
                        delay = Duration::from_millis(100);
                        conn
                    }
                    Err(e) => {
                        debug!(error = %e, "redis: cannot reconnect yet");
                        // Full jitter: anywhere up to the delay, which doubles up to 5 s.
                        let wait = delay.mul_f64((random() % 1000) as f64 / 1000.0);
                        if !self.idle_for(wait).await {
                            return;
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            match self.serve(conn).await {
                End::Finished => return,
                End::Lost(why) => {
                    warn!(why, "redis: connection lost");
                    self.lost();
                }
            }
        }
    }

    /// A pipeline with resumable publishes failed: they go out again, first, after the
    /// reconnect (at least once: one that Redis ran before the connection broke is sent
    /// twice). The plain publishes in it, `bytes` in `publishes` messages, are dropped.
    fn retry(&mut self, numbered: Vec<Command>, bytes: usize, publishes: u64) {
        for command in numbered.into_iter().rev() {
            self.pending.push_front(command);
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.backlog.fetch_sub(bytes, Ordering::Relaxed);
            shared.stats.refused.fetch_add(publishes, Ordering::Relaxed);
        }
    }

    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        if let Some(shared) = self.shared.upgrade() {
            counter(&shared.stats).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection is gone: mark it, and tell the hub that every topic it received may have
    /// missed messages.
    fn lost(&mut self) {
        let resumable = self.shared.upgrade().is_some_and(|shared| {
            shared.connected.store(false, Ordering::Relaxed);
            shared.history.is_some()
        });
        let topics = std::mem::take(&mut self.subscribed);
        if resumable {
            // What was missed is read from the history after the reconnect; only topics whose
            // history does not reach back are reported then.
            return;
        }
        if let Some(remote) = &self.remote {
            for topic in topics {
                remote.lost(&topic);
            }
        }
    }

    /// While disconnected: wait `wait`, taking commands meanwhile (publishes are dropped:
    /// their subscribers elsewhere are being resynchronized). `false` once nobody is left.
    async fn idle_for(&mut self, wait: Duration) -> bool {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return self.shared.strong_count() > 0,
                command = self.rx.recv() => match command {
                    None => return false,
                    Some(command) => self.offline(command),
                },
            }
        }
    }

    fn offline(&mut self, command: Command) {
        match command {
            Command::Attach(remote) => self.remote = Some(remote),
            Command::Interest(topic) => {
                // A topic nobody wants any more need not be caught up on.
                if !self.remote.as_ref().is_some_and(|r| r.has_subscribers(&topic)) {
                    self.tracks.remove(&*topic);
                }
            }
            Command::Publish { message, .. } => self.sent(message.len(), false),
            // Taken while the connection was up: sent after the reconnect.
            command @ Command::Numbered { .. } => self.pending.push_back(command),
            Command::Resume(request) => {
                let position = self.tracks.get(request.topic()).and_then(Track::position);
                request.join(position, false);
            }
        }
    }

    /// A publish left the backlog: sent, or dropped.
    fn sent(&self, len: usize, ok: bool) {
        if let Some(shared) = self.shared.upgrade() {
            shared.backlog.fetch_sub(len, Ordering::Relaxed);
            let counter = if ok { &shared.stats.published } else { &shared.stats.refused };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Run one connection until it fails or nobody is left.
    async fn serve(&mut self, mut conn: Connection) -> End {
        if let Some(shared) = self.shared.upgrade() {
            shared.connected.store(true, Ordering::Relaxed);
        }
        // Every topic with local subscribers now, in batches.
        let wanted: Vec<String> = self.remote.as_ref().map(Remote::subscribed_topics).unwrap_or_default();
        if let Err(e) = self.subscribe(&mut conn, wanted).await {
            return End::Lost(e.to_string());
        }
        // With metrics on: the lag probe's channel, subscribed like a topic's.
        let probe = match self.shared.upgrade() {
            Some(shared) if crate::metrics::broker_probing() => Some(probe_channel(&shared.prefix, shared.node)),
            _ => None,
        };
        if let Some(probe) = &probe
            && let Err(e) = conn.sink.subscribe(&probe[..]).await
        {
            return End::Lost(e.to_string());
        }
        let mut probe_every = tokio::time::interval(LAG_PROBE_INTERVAL);
        probe_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(command) = self.pending.pop_front()
                && let Err(e) = self.commands(&mut conn, command).await
            {
                return End::Lost(e.to_string());
            }
            tokio::select! {
                message = std::future::poll_fn(|cx| conn.stream.as_mut().poll_next(cx)) => match message {
                    Some(message) if probe.as_deref() == Some(message.get_channel_name()) => {
                        probe_returned(message.get_payload_bytes());
                    }
                    Some(message) => {
                        if let Err(e) = self.received(&mut conn, &message).await {
                            return End::Lost(e.to_string());
                        }
                    }
                    None => return End::Lost("the subscriber connection closed".into()),
                },
                command = self.rx.recv() => {
                    let Some(command) = command else { return End::Finished };
                    if let Err(e) = self.commands(&mut conn, command).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = probe_every.tick(), if probe.is_some() => {
                    let probe = probe.as_deref().unwrap_or_default();
                    let sent = lag_clock().elapsed().as_nanos() as u64;
                    let published: redis::RedisResult<()> =
                        redis::cmd("PUBLISH").arg(probe).arg(&sent.to_be_bytes()[..]).query_async(&mut conn.publisher).await;
                    if let Err(e) = published {
                        return End::Lost(e.to_string());
                    }
                }
            }
        }
    }

    /// Carry out `first` and every command already waiting: publishes in one pipeline (one
    /// round trip, in order), interest changes in one `SUBSCRIBE` and one `UNSUBSCRIBE`.
    async fn commands(&mut self, conn: &mut Connection, first: Command) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        let mut publishes = 0;
        let mut bytes = 0;
        let mut interest = HashSet::new();
        let mut resumes = Vec::new();
        // Resumable publishes in this pipeline, to send again if the connection fails first.
        let mut numbered = Vec::new();
        let mut next = Some(first);
        // Publishes before an interest change or a resume go first, the ones after it later, so
        // that a subscriber gets every message published after it subscribed.
        let mut ordered = false;
        while let Some(command) = next.take() {
            match command {
                Command::Attach(remote) => self.remote = Some(remote),
                Command::Interest(topic) => {
                    interest.insert(topic);
                    ordered = publishes > 0;
                }
                // A publish after an interest change waits for it (the next batch).
                command @ (Command::Publish { .. } | Command::Numbered { .. }) if !interest.is_empty() => {
                    self.pending.push_front(command);
                    break;
                }
                Command::Publish { channel, message } => {
                    bytes += message.len();
                    publishes += 1;
                    pipe.cmd("PUBLISH").arg(&*channel).arg(&message[..]).ignore();
                }
                Command::Numbered { topic, head, payload, seq } => {
                    let seq = seq.unwrap_or_else(|| {
                        self.published += 1;
                        self.published
                    });
                    let result = self.numbered(conn, &mut pipe, &topic, &head, &payload, seq).await;
                    numbered.push(Command::Numbered { topic, head, payload, seq: Some(seq) });
                    if let Err(e) = result {
                        self.retry(numbered, bytes, publishes);
                        return Err(e);
                    }
                }
                Command::Resume(request) => {
                    resumes.push(request);
                    ordered = true;
                }
            }
            if publishes + (numbered.len() as u64) < 1024 && !ordered {
                next = self.pending.pop_front().or_else(|| self.rx.try_recv().ok());
            }
        }
        if publishes + (numbered.len() as u64) > 0 {
            let result: redis::RedisResult<()> = pipe.query_async(&mut conn.publisher).await;
            if result.is_err() && !numbered.is_empty() {
                self.retry(numbered, bytes, publishes);
                return result;
            }
            let publishes = publishes + numbered.len() as u64;
            bytes += numbered.iter().map(Command::payload_len).sum::<usize>();
            if let Some(shared) = self.shared.upgrade() {
                shared.backlog.fetch_sub(bytes, Ordering::Relaxed);
                let counter = if result.is_ok() { &shared.stats.published } else { &shared.stats.refused };
                counter.fetch_add(publishes, Ordering::Relaxed);
            }
            result?;
        }
        for request in resumes {
            self.resume(conn, request).await?;
        }
        if interest.is_empty() {
            return Ok(());
        }
        let Some(remote) = self.remote.clone() else { return Ok(()) };
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for topic in interest {
            let wanted = remote.has_subscribers(&topic);
            let have = self.subscribed.contains(&*topic);
            if wanted && !have {
                subscribe.push(topic.into_string());
            } else if !wanted && have {
                unsubscribe.push(topic.into_string());
            }
        }
        self.subscribe(conn, subscribe).await?;
        for chunk in unsubscribe.chunks(BATCH) {
            let prefix = self.prefix();
            conn.sink.unsubscribe(chunk.iter().map(|t| channel(&prefix, t)).collect::<Vec<_>>()).await?;
            for topic in chunk {
                self.subscribed.remove(topic);
                self.tracks.remove(topic);
            }
        }
        Ok(())
    }

    async fn subscribe(&mut self, conn: &mut Connection, topics: Vec<String>) -> redis::RedisResult<()> {
        let prefix = self.prefix();
        let resumable = self.history().is_some();
        for chunk in topics.chunks(BATCH) {
            if resumable {
                // Where each new topic stands before subscribing: what is published from here
                // on reaches the subscribers, from PUB/SUB or, until the subscription is made,
                // from the history (`sync`).
                self.baseline(conn, chunk).await?;
            }
            conn.sink.subscribe(chunk.iter().map(|t| channel(&prefix, t)).collect::<Vec<_>>()).await?;
            self.subscribed.extend(chunk.iter().cloned());
            if resumable {
                self.sync(conn, chunk).await?;
            }
        }
        Ok(())
    }

    fn history(&self) -> Option<History> {
        self.shared.upgrade().and_then(|s| s.history)
    }

    fn prefix(&self) -> String {
        self.shared.upgrade().map(|s| s.prefix.clone()).unwrap_or_default()
    }

    /// A message from Redis: decode it and deliver it to the hub, unless this node sent it (in
    /// resumable mode: in offset order, filling gaps from the history).
    async fn received(&mut self, conn: &mut Connection, message: &redis::Msg) -> redis::RedisResult<()> {
        let Some(shared) = self.shared.upgrade() else { return Ok(()) };
        let Some(topic) = message.get_channel_name().strip_prefix(shared.prefix.as_str()) else { return Ok(()) };
        if shared.history.is_some() {
            return self.received_numbered(conn, &shared, topic, message.get_payload_bytes()).await;
        }
        self.received_plain(&shared, topic, message.get_payload_bytes());
        Ok(())
    }

    fn received_plain(&self, shared: &Shared, topic: &str, data: &[u8]) {
        let Some(remote) = &self.remote else { return };
        let Some(decoded) = decode(data) else {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(topic, len = data.len(), "redis: dropped a message not in wsx's format");
            return;
        };
        let (node, prepared) = decoded;
        if node == shared.node {
            return;
        }
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        remote.deliver(topic, &prepared);
    }
}

/// A message as this broker writes it: the publishing node and the message, or `None` if it
/// is not one.
fn decode(data: &[u8]) -> Option<(u64, Prepared)> {
    if data.len() < HEADER || data[0] != VERSION || data[1] & !TEXT != 0 {
        return None;
    }
    let node = u64::from_be_bytes(data[2..HEADER].try_into().ok()?);
    let payload = &data[HEADER..];
    let prepared = if data[1] & TEXT != 0 {
        Prepared::text(std::str::from_utf8(payload).ok()?.to_owned())
    } else {
        Prepared::binary(payload)
    };
    Some((node, prepared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_what_it_did_not_write() {
        let mut good = vec![VERSION, TEXT];
        good.extend_from_slice(&7u64.to_be_bytes());
        good.extend_from_slice("héllo".as_bytes());
        let (node, message) = decode(&good).expect("a message");
        assert_eq!((node, message.payload(), message.is_text()), (7, "héllo".as_bytes(), true));
        assert!(decode(&good[..HEADER - 1]).is_none(), "a short header");
        let mut version = good.clone();
        version[0] = 2;
        assert!(decode(&version).is_none(), "another version");
        let mut flags = good.clone();
        flags[1] = 0x80;
        assert!(decode(&flags).is_none(), "unknown flags");
        let mut bad_text = good[..HEADER].to_vec();
        bad_text.extend_from_slice(&[0xff, 0xfe]);
        assert!(decode(&bad_text).is_none(), "text that is not UTF-8");
        bad_text[1] = 0;
        assert_eq!(decode(&bad_text).map(|(_, m)| m.is_text()), Some(false), "the same bytes as binary");
    }
}
