//! Topics shared by several servers: the [`Broker`] a hub hands its publishes to, and the
//! [`Remote`] handle through which the broker delivers what the other servers published.
//!
//! A hub with a broker delivers a publish to its own subscribers at once and hands it to the
//! broker, which sends it to the other nodes; the broker delivers what arrives from them to this
//! hub's subscribers only (never back to the broker). The broker learns which topics this node
//! needs from [`Broker::interest`] and asks the hub for the current state, so that calls from
//! different threads may arrive in any order.

use std::{fmt, sync::Weak};

use tokio::sync::oneshot;

use super::{HubInner, Prepared, PublishReport, SubscriberId, Topic, inbox::Inbox, read};

/// Carries a hub's publishes to other servers' hubs, and theirs to it: implemented by
/// [`RedisBroker`](super::redis::RedisBroker) (feature `redis`), and by anything else that
/// moves messages between processes.
///
/// Every method is called from a publisher's or a subscriber's thread and must return at once:
/// do the work on a task of your own.
pub trait Broker: Send + Sync + 'static {
    /// The hub was built: deliver what the other nodes publish through `hub`. Called once.
    fn attach(&self, hub: Remote);

    /// The local subscribers of `topic` went from none to some, or from some to none: start or
    /// stop receiving it from the other nodes. Calls may arrive in any order from several
    /// threads; [`Remote::has_subscribers`] says what is true now.
    fn interest(&self, topic: &str);

    /// Send `message`, just published to `topic` on this node, to the other nodes. Returns
    /// whether it was taken: `false` if the broker refused it (too large, or too much waiting
    /// for a broker that is down or slow).
    fn publish(&self, topic: &str, message: &Prepared) -> bool;

    /// [`publish`](Self::publish) for [`Hub::publish_except`](super::Hub::publish_except): a
    /// broker that [orders delivery](Self::orders_delivery) delivers on this node too, and skips
    /// `except` there. The default ignores `except`.
    fn publish_except(&self, topic: &str, message: &Prepared, except: Option<SubscriberId>) -> bool {
        let _ = except;
        self.publish(topic, message)
    }

    /// Whether this broker delivers every publish to this node's subscribers too, in the order
    /// it assigns (a resumable broker: each message gets its position first). The hub then
    /// leaves delivery to the broker instead of delivering at once. Default: `false`.
    fn orders_delivery(&self) -> bool {
        false
    }

    /// A connection subscribes from a [`Position`] it saw earlier (on any node): deliver what it
    /// missed, then join it to the topic ([`Resume::join`]). The default, for a broker without
    /// history: join at once, not recovered.
    fn resume(&self, request: Resume) {
        request.join(None, false);
    }
}

/// Where a message stands in its topic's history: its offset, and the epoch of that history
/// (a new epoch starts when the history is lost, e.g. Redis restarted without persistence, so
/// that offsets of the old one are never taken for offsets of the new one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The message's number in its topic, from 1.
    pub offset: u64,
    /// The history the offset counts in.
    pub epoch: String,
}

impl Position {
    /// A position.
    pub fn new(offset: u64, epoch: impl Into<String>) -> Self {
        Self { offset, epoch: epoch.into() }
    }
}

/// Reads what [`Display`](fmt::Display) writes: `OFFSET:EPOCH` (e.g. a client's `?since=`).
impl std::str::FromStr for Position {
    type Err = InvalidPosition;

    fn from_str(s: &str) -> Result<Self, InvalidPosition> {
        let (offset, epoch) = s.split_once(':').ok_or(InvalidPosition)?;
        let valid_epoch = !epoch.is_empty() && epoch.len() <= 64 && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        match offset.parse() {
            Ok(offset) if valid_epoch => Ok(Self::new(offset, epoch)),
            _ => Err(InvalidPosition),
        }
    }
}

/// A position that is not `OFFSET:EPOCH` (a decimal offset, an epoch of 1 to 64 letters and
/// digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPosition;

impl fmt::Display for InvalidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a position is OFFSET:EPOCH (a decimal offset, an epoch of 1 to 64 letters and digits)")
    }
}

impl std::error::Error for InvalidPosition {}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.offset, self.epoch)
    }
}

/// How a [`resume`](crate::WebSocket::resume) went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Every message after the position asked for was delivered (or there were none), in order,
    /// before the live ones. `false`: the epoch changed, the history no longer reaches back,
    /// the missed messages were more than the subscriber may queue, or the broker keeps no
    /// history; the connection is subscribed from now on, and the application resynchronizes
    /// it some other way (a snapshot).
    pub recovered: bool,
    /// The topic's position when the connection joined (the last message before the live ones),
    /// if the broker knows it.
    pub position: Option<Position>,
}

/// A [`resume`](crate::WebSocket::resume) under way: resolves to how it went once the
/// connection has joined the topic's live messages.
#[derive(Debug)]
#[must_use = "the recovery is under way either way; await it to learn whether it succeeded"]
pub struct Resuming(pub(super) oneshot::Receiver<Recovery>);

impl std::future::Future for Resuming {
    type Output = Recovery;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Recovery> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Recovery { recovered: false, position: None }))
    }
}

/// A pending [`resume`](crate::WebSocket::resume), handed to [`Broker::resume`]: deliver the
/// missed messages with [`deliver`](Self::deliver), then [`join`](Self::join).
pub struct Resume {
    pub(super) topic: Topic,
    pub(super) since: Position,
    pub(super) inbox: Weak<Inbox>,
    pub(super) reply: Option<oneshot::Sender<Recovery>>,
}

impl fmt::Debug for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resume").field("topic", &self.topic).field("since", &self.since).finish_non_exhaustive()
    }
}

impl Resume {
    /// The topic.
    pub fn topic(&self) -> &str {
        self.topic.name()
    }

    /// The position the connection saw last.
    pub fn since(&self) -> &Position {
        &self.since
    }

    /// Whether the connection is still there and still wants the topic.
    pub fn is_wanted(&self) -> bool {
        self.inbox.upgrade().is_some_and(|inbox| inbox.wants(&self.topic))
    }

    /// Whether `bytes` more would fit in the connection's queue: if a history to replay does not,
    /// do not deliver it ([`Recovery::recovered`] `false`) rather than overflow it.
    pub fn fits(&self, bytes: usize) -> bool {
        self.inbox.upgrade().is_some_and(|inbox| inbox.fits(bytes))
    }

    /// Queue `message` (one the connection missed) for this connection only.
    pub fn deliver(&self, message: &Prepared) {
        if let Some(inbox) = self.inbox.upgrade() {
            inbox.replay(message);
        }
    }

    /// Join the connection to the topic's live messages and report how the recovery went.
    /// Call it from where the broker delivers live messages, after the missed ones, so that
    /// none falls between.
    pub fn join(mut self, position: Option<Position>, recovered: bool) {
        if let Some(inbox) = self.inbox.upgrade() {
            Inbox::join(&inbox, &self.topic);
        }
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Recovery { recovered, position });
        }
    }
}

/// The close reason given to subscribers closed with 1012 because messages of one of their
/// topics may have been lost between servers.
pub const RESYNC_REASON: &str = "resync: messages from other servers may have been lost";

/// A broker's handle on its hub: delivers what other nodes published, and says which topics
/// have local subscribers. Holds the hub weakly: once the hub is dropped, every call does
/// nothing.
#[derive(Clone)]
pub struct Remote(pub(super) Weak<HubInner>);

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").field("alive", &self.is_alive()).finish()
    }
}

impl Remote {
    /// Whether the hub still exists.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }

    /// Deliver `message`, published to `topic` on another node, to this node's subscribers
    /// (and not to the broker). `None` once the hub is gone.
    pub fn deliver(&self, topic: &str, message: &Prepared) -> Option<PublishReport> {
        self.deliver_except(topic, message, None)
    }

    /// [`deliver`](Self::deliver) to every subscriber but `except` (this node's
    /// [`publish_except`](super::Hub::publish_except), when the broker
    /// [orders delivery](Broker::orders_delivery)).
    pub fn deliver_except(
        &self,
        topic: &str,
        message: &Prepared,
        except: Option<SubscriberId>,
    ) -> Option<PublishReport> {
        let hub = self.0.upgrade()?;
        let Some(topic) = read(&hub.topics).get(topic).and_then(Weak::upgrade) else {
            return Some(PublishReport::default());
        };
        let report = super::deliver(&hub, &topic, message, except);
        crate::metrics::published(report.delivered, report.dropped, report.closed);
        Some(report)
    }

    /// Whether `topic` has subscribers on this node.
    pub fn has_subscribers(&self, topic: &str) -> bool {
        let Some(hub) = self.0.upgrade() else { return false };
        let topic = read(&hub.topics).get(topic).and_then(Weak::upgrade);
        topic.is_some_and(|t| !read(&t.subscribers).is_empty())
    }

    /// The topics with subscribers on this node (after the broker reconnects, to subscribe to
    /// all of them again).
    pub fn subscribed_topics(&self) -> Vec<String> {
        let Some(hub) = self.0.upgrade() else { return Vec::new() };
        let topics: Vec<_> = read(&hub.topics).values().filter_map(Weak::upgrade).collect();
        topics.into_iter().filter(|t| !read(&t.subscribers).is_empty()).map(|t| t.name.to_string()).collect()
    }

    /// Messages of `topic` from other nodes may have been lost (the broker's connection
    /// dropped, or it fell behind): apply the hub's policy to the topic's local subscribers —
    /// close them with 1012 (service restart) and [`RESYNC_REASON`], so that they reconnect and
    /// resynchronize, or call the hub's [`on_gap`](super::HubBuilder::on_gap) callback instead.
    /// Returns how many subscribers were closed.
    pub fn lost(&self, topic: &str) -> usize {
        let Some(hub) = self.0.upgrade() else { return 0 };
        if let Some(on_gap) = &hub.on_gap {
            on_gap(topic);
            return 0;
        }
        let Some(topic) = read(&hub.topics).get(topic).and_then(Weak::upgrade) else { return 0 };
        let subscribers = read(&topic.subscribers).clone();
        subscribers.iter().filter(|inbox| inbox.resync()).count()
    }
}
