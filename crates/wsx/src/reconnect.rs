//! `Reconnecting`: one client connection after another, with RFC 6455 §7.2.3's backoff.
//!
//! Shaped like python-websockets' `async for websocket in connect(..)`: the application takes a
//! connection, uses it until it ends, and asks for the next one. Between them the delays follow
//! RFC 6455 §7.2.3 ("the first time a client attempts to reconnect, it SHOULD delay by a random
//! amount of time" of 0 to 5 seconds, then back off "using a method such as truncated binary
//! exponential backoff"), with full jitter on every attempt so that clients dropped together do
//! not come back together (reconnecting-websocket's single random delay caused exactly such
//! herds, django/channels#568). Reconnecting (transport) and resubscribing (state) are separate,
//! as in async-nats and redis-rs: the `on_connect` hook is where the application resumes.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures_core::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::Instant,
};
use wsx_proto::{CloseCode, CloseReason, Message};

use crate::{ClientBuilder, Error, MaybeTlsStream, Result, WebSocket};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Connect<S> = Arc<dyn Fn() -> BoxFuture<'static, Result<WebSocket<S>>> + Send + Sync>;
type OnConnect<S> = Arc<dyn for<'a> Fn(&'a mut WebSocket<S>) -> BoxFuture<'a, Result<()>> + Send + Sync>;
type RetryIf = Arc<dyn Fn(&Error) -> bool + Send + Sync>;
type OnRetry = Arc<dyn Fn(&Retry<'_>) + Send + Sync>;
/// An attempt under way: it owns the state, and gives it back with what it yields.
type Pending<S> = BoxFuture<'static, (Inner<S>, Option<Result<WebSocket<S>>>)>;

/// The longest `Retry-After` honoured; a larger one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The delays between connection attempts.
///
/// Attempt 0 (the first reconnect after a connection ended, or the first retry after the very
/// first connect failed) waits a random time up to [`initial`](Self::initial) (default 5 s,
/// RFC 6455 §7.2.3). Attempt *n* ≥ 1 waits up to `min(max, base × factor^(n-1))` (defaults
/// 1 s, ×2, 60 s), a random time in `[0, bound]` with [`Jitter::Full`] (the default, as in
/// AWS's "full jitter") or the bound itself with [`Jitter::None`]. The count restarts once a
/// connection stayed up for [`min_uptime`](Self::min_uptime) (default 5 s), so a server that
/// accepts and then drops at once still meets growing delays.
///
/// After close code 1013 (try again later: the server is overloaded), the wait is at least
/// [`try_again_later`](Self::try_again_later) (default 10 s), or the delay the server asked for
/// in the close reason (see [`Reconnecting::ended_with_reason`]), and the count does not
/// restart however long the connection was up.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    try_again_later: Duration,
    base: Duration,
    factor: u32,
    max: Duration,
    min_uptime: Duration,
    jitter: Jitter,
}

/// How much randomness [`Backoff`] puts into each delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// A uniformly random delay between zero and the bound, on every attempt (the default).
    Full,
    /// Exactly the bound: for tests and for a single client that cannot cause a herd.
    None,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            try_again_later: Duration::from_secs(10),
            base: Duration::from_secs(1),
            factor: 2,
            max: Duration::from_secs(60),
            min_uptime: Duration::from_secs(5),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// The defaults: up to 5 s, then up to 1 s, 2 s, 4 s, … 60 s, full jitter, reset after 5 s up.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bound of the first delay (default 5 s, RFC 6455 §7.2.3's 0 to 5 seconds).
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// The shortest wait after close code 1013, try again later (default 10 s): the server said
    /// it is overloaded, so coming back within the usual 0-5 s would only add to its load.
    /// Jitter still applies above the floor: the wait is the larger of the floor and the usual
    /// random delay. A delay hint in the close reason replaces the floor.
    pub fn try_again_later(mut self, floor: Duration) -> Self {
        self.try_again_later = floor;
        self
    }

    /// The bound of the second delay, multiplied by [`factor`](Self::factor) each attempt
    /// after it (default 1 s).
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// How much the bound grows per attempt (default 2; 1 keeps it at `base`).
    pub fn factor(mut self, factor: u32) -> Self {
        self.factor = factor.max(1);
        self
    }

    /// The largest delay (default 60 s).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// How long a connection must stay up for the delays to start over (default 5 s).
    pub fn min_uptime(mut self, min_uptime: Duration) -> Self {
        self.min_uptime = min_uptime;
        self
    }

    /// The randomness of each delay (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The upper bound of the delay before attempt `attempt` (0 is the first).
    pub fn bound(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return self.initial;
        }
        let growth = self.factor.checked_pow(attempt - 1).unwrap_or(u32::MAX);
        self.base.checked_mul(growth).map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before attempt `attempt`, `random` a uniformly random `u64`.
    fn delay(&self, attempt: u32, random: u64) -> Duration {
        let bound = self.bound(attempt);
        match self.jitter {
            Jitter::None => bound,
            Jitter::Full => {
                // Nanoseconds scaled by a random fraction of 2^64: uniform over [0, bound].
                let nanos = bound.as_nanos().min(u128::from(u64::MAX)) as u64;
                Duration::from_nanos(((u128::from(nanos) * u128::from(random)) >> 64) as u64)
            }
        }
    }
}

/// What [`Reconnecting::on_retry`]'s callback is told before each wait.
#[derive(Debug)]
#[non_exhaustive]
pub struct Retry<'a> {
    /// The attempt about to be made after the wait (0 is the first reconnect).
    pub attempt: u32,
    /// How long the wait is.
    pub delay: Duration,
    /// Why: the failed attempt's error, or `None` when a connection ended.
    pub error: Option<&'a Error>,
}

/// A handle to queue messages for the next connection of a [`Reconnecting`], bounded by bytes.
///
/// For messages produced while disconnected: they are sent on the next connection, after the
/// `on_connect` hook and before the connection is handed out, in order. While connected, send
/// on the [`WebSocket`] instead. Clones share one queue.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Mutex<Queue>>,
}

struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
    max_bytes: usize,
}

impl Outbox {
    fn new(max_bytes: usize) -> Self {
        Self { inner: Arc::new(Mutex::new(Queue { messages: VecDeque::new(), bytes: 0, max_bytes })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (each change is one push or
        // pop with its byte count), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue `message` for the next connection.
    ///
    /// Fails with an error where [`Error::is_queue_full`] holds, and the message is dropped,
    /// if its payload would take the queue past its byte limit
    /// ([`Reconnecting::max_queued_bytes`]).
    pub fn push(&self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        let mut queue = self.lock();
        let len = message.len();
        if queue.bytes + len > queue.max_bytes {
            return Err(Error::queue_full(queue.bytes, len, queue.max_bytes));
        }
        queue.bytes += len;
        queue.messages.push_back(message);
        Ok(())
    }

    /// The payload bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The messages queued.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().messages.is_empty()
    }

    fn pop(&self) -> Option<Message> {
        let mut queue = self.lock();
        let message = queue.messages.pop_front()?;
        queue.bytes -= message.len();
        Some(message)
    }

    fn push_front(&self, message: Message) {
        let mut queue = self.lock();
        queue.bytes += message.len();
        queue.messages.push_front(message);
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queue = self.lock();
        f.debug_struct("Outbox")
            .field("messages", &queue.messages.len())
            .field("bytes", &queue.bytes)
            .field("max_bytes", &queue.max_bytes)
            .finish()
    }
}

/// One client connection after another: connects, and once the application is done with a
/// connection and asks again, waits per the [`Backoff`] and connects again.
///
/// ```no_run
/// # async fn run() -> wsx::Result<()> {
/// let mut connections = wsx::Reconnecting::new(wsx::ClientBuilder::new("wss://example.com/feed"));
/// while let Some(ws) = connections.next().await {
///     let mut ws = ws?; // a failure that retrying cannot fix ends the loop
///     while let Ok(Some(message)) = ws.recv().await {
///         println!("{message:?}");
///     }
///     if let Some(reason) = ws.close_reason() {
///         // 1000 or 1008 stop the loop; 1001, 1012 … retry; 1013 waits longer.
///         connections.ended_with_reason(&reason);
///     }
/// }
/// # Ok(()) }
/// ```
///
/// A failed attempt is retried when [`retry_if`](Self::retry_if) says so (default
/// [`Error::is_transient`]: I/O errors, timeouts, HTTP 500/502/503/504, never a 4xx); a
/// server's `Retry-After` (seconds, up to an hour) makes the wait at least that long. A failure
/// not retried is yielded once, and the stream ends. It is also a [`Stream`] of the same
/// items.
pub struct Reconnecting<S = MaybeTlsStream<TcpStream>> {
    inner: Option<Inner<S>>,
    pending: Option<Pending<S>>,
    outbox: Outbox,
}

struct Inner<S> {
    connect: Connect<S>,
    backoff: Backoff,
    retry_if: RetryIf,
    on_connect: Option<OnConnect<S>>,
    on_retry: Option<OnRetry>,
    max_retries: Option<u32>,
    outbox: Outbox,
    rng: SplitMix64,
    /// The next attempt's number in the backoff (0: the first reconnect).
    attempt: u32,
    /// When the connection last handed out was opened; `None` before the first.
    connected_at: Option<Instant>,
    /// How the last connection ended, as the application reported it.
    ended_with: Option<CloseCode>,
    /// The server's delay hint from a 1013 close reason (`retry-after=<seconds>`).
    again_hint: Option<Duration>,
    done: bool,
}

impl Reconnecting<MaybeTlsStream<TcpStream>> {
    /// Connections made by `builder` (its URL, headers, TLS, proxy and redirect settings), with
    /// the default [`Backoff`], retry rule and a 1 MiB [`Outbox`].
    pub fn new(builder: ClientBuilder) -> Self {
        let builder = Arc::new(builder);
        Self::with_connect(move || {
            let builder = builder.clone();
            async move { builder.connect().await.map(|(ws, _)| ws) }
        })
    }
}

impl<S> Reconnecting<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Connections made by `connect`: for a transport of your own, and for tests.
    pub fn with_connect<F, Fut>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<WebSocket<S>>> + Send + 'static,
    {
        let outbox = Outbox::new(1 << 20);
        let inner = Inner {
            connect: Arc::new(move || Box::pin(connect())),
            backoff: Backoff::default(),
            retry_if: Arc::new(Error::is_transient),
            on_connect: None,
            on_retry: None,
            max_retries: None,
            outbox: outbox.clone(),
            rng: SplitMix64(RandomState::new().hash_one(0xC0FFEE_u64)),
            attempt: 0,
            connected_at: None,
            ended_with: None,
            again_hint: None,
            done: false,
        };
        Self { inner: Some(inner), pending: None, outbox }
    }

    /// The delays between attempts (default [`Backoff::new`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        if let Some(inner) = &mut self.inner {
            inner.backoff = backoff;
        }
        self
    }

    /// Which failed attempts to retry (default [`Error::is_transient`]). Also applies to an
    /// error from the [`on_connect`](Self::on_connect) hook or from sending the
    /// [`Outbox`].
    pub fn retry_if(mut self, retry: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        if let Some(inner) = &mut self.inner {
            inner.retry_if = Arc::new(retry);
        }
        self
    }

    /// Give up after `max` retries in a row (default: never), yielding the last error.
    pub fn max_retries(mut self, max: u32) -> Self {
        if let Some(inner) = &mut self.inner {
            inner.max_retries = Some(max);
        }
        self
    }

    /// Run `hook` on each new connection before it is handed out (and before the
    /// [`Outbox`] is sent): log in, resubscribe, resume from the last offset.
    ///
    /// Write it as `|ws| Box::pin(async move { ws.send("resume").await })`. An error fails the
    /// attempt like a failed connect.
    pub fn on_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'a> Fn(&'a mut WebSocket<S>) -> BoxFuture<'a, Result<()>> + Send + Sync + 'static,
    {
        if let Some(inner) = &mut self.inner {
            inner.on_connect = Some(Arc::new(hook));
        }
        self
    }

    /// Call `report` before each wait, with the attempt, the delay and the error: to log
    /// reconnects.
    pub fn on_retry(mut self, report: impl Fn(&Retry<'_>) + Send + Sync + 'static) -> Self {
        if let Some(inner) = &mut self.inner {
            inner.on_retry = Some(Arc::new(report));
        }
        self
    }

    /// The most payload bytes the [`Outbox`] holds (default 1 MiB); past it
    /// [`Outbox::push`] fails.
    pub fn max_queued_bytes(self, max: usize) -> Self {
        self.outbox.lock().max_bytes = max;
        self
    }

    /// The queue for messages to send on the next connection.
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// Report how the last connection ended: its close code (from
    /// [`WebSocket::close_reason`] or [`Error::close_code`]). If the code is not transient
    /// (anything but 1001, 1006, 1011, 1012 and 1013), the next call to
    /// [`next`](Self::next) ends the stream instead of reconnecting. Without a report, the
    /// next call reconnects. After 1013 the wait is at least [`Backoff::try_again_later`].
    pub fn ended_with(&mut self, code: CloseCode) {
        if let Some(inner) = &mut self.inner {
            inner.ended_with = Some(code);
            inner.again_hint = None;
        }
    }

    /// [`ended_with`](Self::ended_with) the connection's [`CloseReason`], reading a delay hint
    /// from the server's close frame: after 1013 (try again later), a reason of the form
    /// `retry-after=<seconds>` (ASCII digits; anything after a `;` or a space is ignored, as
    /// in `retry-after=30; overloaded`) makes the next wait at least that long, up to an hour,
    /// instead of [`Backoff::try_again_later`]. The form is wsx's own: RFC 6455 gives the
    /// reason no structure, and a server that sends none gets the floor.
    pub fn ended_with_reason(&mut self, reason: &CloseReason) {
        let code = reason.code();
        self.ended_with(code);
        if code == CloseCode::AGAIN
            && let Some(inner) = &mut self.inner
        {
            inner.again_hint = reason.received.as_ref().and_then(|frame| retry_after_hint(&frame.reason));
        }
    }

    /// The next connection: at once the first time, then after the backoff delay. `None` once
    /// a non-transient failure was yielded, or after [`ended_with`](Self::ended_with) reported
    /// a final close.
    pub async fn next(&mut self) -> Option<Result<WebSocket<S>>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<S> Stream for Reconnecting<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Item = Result<WebSocket<S>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.pending.is_none() {
            let Some(inner) = self.inner.take() else { return Poll::Ready(None) };
            self.pending = Some(Box::pin(inner.next()));
        }
        // Invariant: set just above when it was `None`.
        let pending = self.pending.as_mut().expect("a pending attempt");
        let (inner, item) = std::task::ready!(pending.as_mut().poll(cx));
        self.pending = None;
        self.inner = Some(inner);
        Poll::Ready(item)
    }
}

impl<S> fmt::Debug for Reconnecting<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Reconnecting");
        if let Some(inner) = &self.inner {
            d.field("backoff", &inner.backoff).field("attempt", &inner.attempt).field("done", &inner.done);
        }
        d.field("outbox", &self.outbox).finish_non_exhaustive()
    }
}

impl<S> Inner<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The next connection, owning `self` so that the future is `'static` (for `Stream`).
    async fn next(mut self) -> (Self, Option<Result<WebSocket<S>>>) {
        if self.done {
            return (self, None);
        }
        if let Some(opened) = self.connected_at.take() {
            if let Some(code) = self.ended_with
                && !is_transient_close(code)
            {
                self.done = true;
                return (self, None);
            }
            let at_least = match self.ended_with.take() {
                Some(CloseCode::AGAIN) => Some(self.again_hint.take().unwrap_or(self.backoff.try_again_later)),
                _ => None,
            };
            if opened.elapsed() >= self.backoff.min_uptime && at_least.is_none() {
                self.attempt = 0;
            }
            self.wait(None, at_least).await;
        }
        let mut retries = 0u32;
        loop {
            match self.attempt_once().await {
                Ok(ws) => {
                    self.connected_at = Some(Instant::now());
                    return (self, Some(Ok(ws)));
                }
                Err(e) if (self.retry_if)(&e) && self.max_retries.is_none_or(|max| retries < max) => {
                    retries += 1;
                    let again = (e.close_code() == Some(CloseCode::AGAIN)).then_some(self.backoff.try_again_later);
                    let at_least = e.retry_after().map(|d| d.min(MAX_RETRY_AFTER)).or(again);
                    self.wait(Some(&e), at_least).await;
                }
                Err(e) => {
                    self.done = true;
                    return (self, Some(Err(e)));
                }
            }
        }
    }

    /// Wait before the next attempt, and count it.
    async fn wait(&mut self, error: Option<&Error>, at_least: Option<Duration>) {
        let mut delay = self.backoff.delay(self.attempt, self.rng.next());
        if let Some(at_least) = at_least {
            delay = delay.max(at_least);
        }
        if let Some(report) = &self.on_retry {
            report(&Retry { attempt: self.attempt, delay, error });
        }
        tracing::debug!(attempt = self.attempt, ?delay, "reconnecting after a delay");
        self.attempt = self.attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
    }

    /// Connect, run the hook, send the outbox.
    async fn attempt_once(&self) -> Result<WebSocket<S>> {
        let mut ws = (self.connect)().await?;
        if let Some(hook) = &self.on_connect {
            hook(&mut ws).await?;
        }
        while let Some(message) = self.outbox.pop() {
            if let Err(e) = ws.feed(message.clone()).await {
                self.outbox.push_front(message);
                return Err(e);
            }
        }
        ws.flush().await?;
        Ok(ws)
    }
}

/// The delay in a 1013 close reason of the form `retry-after=<seconds>[; or space, anything]`.
fn retry_after_hint(reason: &str) -> Option<Duration> {
    let value = reason.trim_start().strip_prefix("retry-after=")?;
    let digits = value.split([';', ' ']).next()?;
    let seconds = digits.parse::<u64>().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Close codes after which reconnecting may help (see [`Error::is_transient`]).
fn is_transient_close(code: CloseCode) -> bool {
    matches!(code.0, 1001 | 1006 | 1011 | 1012 | 1013)
}

/// SplitMix64: a small, fast generator for jitter (not for anything secret).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_policy() {
        let b = Backoff::new();
        let secs: Vec<u64> = (0..10).map(|n| b.bound(n).as_secs()).collect();
        assert_eq!(secs, [5, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.bound(u32::MAX), Duration::from_secs(60), "no overflow");
        let b = Backoff::new().base(Duration::from_millis(100)).factor(3).max(Duration::from_secs(2));
        let ms: Vec<u128> = (1..6).map(|n| b.bound(n).as_millis()).collect();
        assert_eq!(ms, [100, 300, 900, 2000, 2000]);
    }

    #[test]
    fn the_retry_after_hint_of_a_close_reason() {
        let secs = |reason: &str| retry_after_hint(reason).map(|d| d.as_secs());
        assert_eq!(secs("retry-after=30"), Some(30));
        assert_eq!(secs("retry-after=30; overloaded"), Some(30));
        assert_eq!(secs("retry-after=7 busy"), Some(7));
        assert_eq!(secs("retry-after=999999"), Some(3600), "capped at an hour");
        for bad in
            ["", "overloaded", "retry-after=", "retry-after=-1", "retry-after=+5", "Retry-After=5", "retry-after=1.5"]
        {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn full_jitter_spans_zero_to_the_bound() {
        let b = Backoff::new();
        let mut rng = SplitMix64(7);
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(3, rng.next())).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(4)));
        let low = delays.iter().filter(|d| **d < Duration::from_secs(1)).count();
        let high = delays.iter().filter(|d| **d > Duration::from_secs(3)).count();
        assert!((150..350).contains(&low) && (150..350).contains(&high), "uniform: {low} low, {high} high");
        assert_eq!(b.delay(3, u64::MAX).as_millis(), 3999);
        assert_eq!(b.delay(3, 0), Duration::ZERO);
        assert_eq!(Backoff::new().jitter(Jitter::None).delay(3, 0), Duration::from_secs(4));
    }
}
