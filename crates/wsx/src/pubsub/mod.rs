//! Topics: publish a message once, deliver it to every connection subscribed to a topic.
//!
//! ```no_run
//! # async fn serve(hub: wsx::pubsub::Hub, mut ws: wsx::WebSocket<tokio::net::TcpStream>) -> wsx::Result<()> {
//! use wsx::pubsub::Prepared;
//!
//! let lobby = hub.topic("lobby").expect("a short name");
//! ws.subscribe(&hub, &lobby).expect("under the subscription limit");
//! // Everything this client says goes to everyone in the lobby, itself included; what others
//! // publish goes out to it while `recv_each` drives the connection.
//! while ws.recv_each(|message, _| { hub.publish(&lobby, Prepared::from_ref(message)); }).await?.is_some() {}
//! # Ok(()) }
//! ```
//!
//! **The model.** A [`Hub`] holds topics; a connection ([`WebSocket`](crate::WebSocket) or a
//! split half) subscribes to topics of one hub, and anyone holding the hub — a connection's
//! handler, another task, another thread — publishes to them. A publish frames the message
//! once ([`Prepared`]: one allocation for any number of subscribers) and appends a reference to
//! it to each subscriber's queue, waking the subscriber's task if it was waiting; it never
//! waits on a subscriber's socket, and takes no lock shared by all topics: the topic's
//! subscriber list is read-locked for the publish, each subscriber's queue locked for the
//! append. The subscriber's task moves its queue into the connection's write queue and writes
//! all of it in one write when it next runs, so a burst of publishes costs one system call per
//! subscriber, not one per message.
//!
//! A connection's published messages go out while it is being driven: while its task is in
//! `recv`, `recv_each`, `send`, `flush` or `close` (for split halves, while the reader is
//! polled, as it must be anyway). Its subscriptions end when it ends, or when it is dropped.
//!
//! **Order.** A subscriber receives a topic's messages in the order each publisher published
//! them; messages of different publishers, or of different topics, interleave in the order the
//! publishes reached its queue. A message published to a topic is delivered once to each of
//! its subscribers; a message published to two topics that a connection both subscribes to is
//! delivered twice, once per publish.
//!
//! **Slow consumers.** Each subscriber may have at most
//! [`max_queued_bytes`](HubBuilder::max_queued_bytes) bytes of published frames waiting for its
//! socket (its queue plus what it moved into its connection's write queue; default 1 MiB).
//! A publish that would go over it either closes that connection with 1008 (policy violation)
//! and a reason ([`SlowConsumer::Close`], the default), or skips the message for it and counts
//! it ([`SlowConsumer::Drop`]): the connection's [`dropped_messages`](crate::WebSocket::dropped_messages)
//! and the hub's [`on_drop`](HubBuilder::on_drop) callback say how many it missed. Either way
//! the memory a slow subscriber can hold is bounded, and the other subscribers do not wait for it.
//!
//! **Compression.** With permessage-deflate, each message over a subscriber's threshold is
//! compressed once per publish, without reference to earlier messages, and that frame is shared
//! by every compressing subscriber (see [`Connection::send_prepared`](wsx_proto::Connection::send_prepared)).

mod broker;
mod conn;
mod inbox;
#[cfg(feature = "redis")]
pub mod redis;

use std::{
    collections::HashMap,
    fmt,
    hash::{Hash, Hasher},
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak, atomic::AtomicU64, atomic::Ordering},
};

pub use self::broker::{Broker, InvalidPosition, Position, RESYNC_REASON, Recovery, Remote, Resume, Resuming};
pub(crate) use self::inbox::Subscriber;
use self::inbox::{Inbox, Push};
pub use wsx_proto::Prepared;

/// The longest topic name by default, in bytes.
const DEFAULT_MAX_TOPIC_LEN: usize = 256;

/// A set of topics that connections subscribe to and anyone can publish to; cloning it shares
/// the same topics.
///
/// See the [module documentation](self) for the model, ordering and slow-consumer semantics.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// Topics by name. A topic is held by its [`Topic`] handles and its subscribers' inboxes;
    /// the last one to let go removes its entry (see `TopicInner`'s `Drop`).
    topics: RwLock<HashMap<Box<str>, Weak<TopicInner>>>,
    limits: Limits,
    on_drop: Option<Box<dyn Fn(Dropped) + Send + Sync>>,
    /// Called instead of closing a topic's subscribers when messages from other nodes were lost.
    on_gap: Option<OnGap>,
    /// Where publishes go for the other nodes, and where theirs come from.
    broker: Option<Arc<dyn Broker>>,
    next_subscriber: AtomicU64,
}

/// The hub's callback for a topic whose messages from other nodes may have been lost.
type OnGap = Box<dyn Fn(&str) + Send + Sync>;

/// A hub's limits and slow-consumer policy.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_queued_bytes: usize,
    slow_consumer: SlowConsumer,
    max_subscriptions: usize,
    max_topics: usize,
    max_topic_len: usize,
}

/// What a hub does with a subscriber that has too many bytes waiting for its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// Close the connection with 1008 (policy violation) and a reason, and stop queueing for
    /// it. For feeds where a gap is worse than a reconnect (chat, order books): the client
    /// reconnects and resynchronizes.
    #[default]
    Close,
    /// Skip the message for that subscriber and count it. For feeds where the next message
    /// supersedes the last (prices, positions, dashboards).
    Drop,
}

/// Messages a hub skipped for one subscriber under [`SlowConsumer::Drop`], reported to the
/// [`on_drop`](HubBuilder::on_drop) callback once the subscriber's task runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// The subscriber that missed them.
    pub subscriber: SubscriberId,
    /// How many messages were skipped since the last report.
    pub messages: u64,
    /// How many were skipped for this subscriber in all.
    pub total: u64,
}

/// Identifies a subscribed connection within its hub (see
/// [`WebSocket::subscribe`](crate::WebSocket::subscribe) and [`Hub::publish_except`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscriber {}", self.0)
    }
}

/// What a publish did, counted over the topic's subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PublishReport {
    /// Subscribers the message was queued for.
    pub delivered: usize,
    /// Subscribers that skipped it, over their limit under [`SlowConsumer::Drop`].
    pub dropped: usize,
    /// Subscribers this publish put over their limit under [`SlowConsumer::Close`]: they are
    /// being closed with 1008.
    pub closed: usize,
    /// With a [`Broker`]: whether it took the message for the other nodes (`false` without a
    /// broker, or when it refused: see [`Broker::publish`]).
    pub forwarded: bool,
}

/// Why a subscription (or a topic name) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The topic name is longer than the hub's [`max_topic_len`](HubBuilder::max_topic_len).
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection has [`max_subscriptions`](HubBuilder::max_subscriptions) already.
    TooManySubscriptions(usize),
    /// The hub has [`max_topics`](HubBuilder::max_topics) topics already.
    TooManyTopics(usize),
    /// The connection is subscribed to topics of another hub, or the [`Topic`] belongs to
    /// another hub.
    OtherHub,
    /// The connection has ended (or is being closed as a slow consumer).
    Closed,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameTooLong { len, max } => write!(f, "topic name of {len} bytes is over the limit of {max}"),
            Self::TooManySubscriptions(max) => {
                write!(f, "connection already has the most subscriptions allowed ({max})")
            }
            Self::TooManyTopics(max) => write!(f, "hub already has the most topics allowed ({max})"),
            Self::OtherHub => f.write_str("connection or topic belongs to another hub"),
            Self::Closed => f.write_str("connection has ended"),
        }
    }
}

impl std::error::Error for SubscribeError {}

/// Builds a [`Hub`] with limits and a slow-consumer policy other than the defaults.
#[must_use]
pub struct HubBuilder {
    limits: Limits,
    on_drop: Option<Box<dyn Fn(Dropped) + Send + Sync>>,
    on_gap: Option<OnGap>,
    broker: Option<Arc<dyn Broker>>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("limits", &self.limits)
            .field("broker", &self.broker.is_some())
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// The most bytes of published frames a subscriber may have waiting for its socket.
    /// Default: 1 MiB. Past it, the [`slow_consumer`](Self::slow_consumer) policy applies.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_queued_bytes = bytes;
        self
    }

    /// What to do with a subscriber over its limit. Default: [`SlowConsumer::Close`].
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.limits.slow_consumer = policy;
        self
    }

    /// Call `f` when messages were dropped for a subscriber under [`SlowConsumer::Drop`]: once
    /// per streak, from the subscriber's task when it next runs, with how many it missed. Keep
    /// it short; it runs on the connection's task.
    pub fn on_drop(mut self, f: impl Fn(Dropped) + Send + Sync + 'static) -> Self {
        self.on_drop = Some(Box::new(f));
        self
    }

    /// The most topics one connection may subscribe to. Default: 1024.
    pub fn max_subscriptions(mut self, n: usize) -> Self {
        self.limits.max_subscriptions = n;
        self
    }

    /// The most topics the hub holds at once (a topic exists while it has subscribers or a
    /// [`Topic`] handle exists, and no longer). Default: 1,000,000.
    pub fn max_topics(mut self, n: usize) -> Self {
        self.limits.max_topics = n;
        self
    }

    /// The longest topic name, in bytes. Default: 256.
    pub fn max_topic_len(mut self, bytes: usize) -> Self {
        self.limits.max_topic_len = bytes;
        self
    }

    /// Share topics with other servers through `broker` (e.g. [`redis::RedisBroker`], feature
    /// `redis`): a publish on any node reaches the subscribers of every node, once.
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// With a broker: when messages of a topic from other nodes may have been lost, call `f`
    /// with the topic's name instead of closing its local subscribers with 1012 (the default;
    /// see [`Remote::lost`]).
    pub fn on_gap(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_gap = Some(Box::new(f));
        self
    }

    /// The hub.
    pub fn build(self) -> Hub {
        let broker = self.broker.clone();
        let hub = Hub {
            inner: Arc::new(HubInner {
                topics: RwLock::default(),
                limits: self.limits,
                on_drop: self.on_drop,
                on_gap: self.on_gap,
                broker: self.broker,
                next_subscriber: AtomicU64::new(1),
            }),
        };
        if let Some(broker) = broker {
            broker.attach(Remote(Arc::downgrade(&hub.inner)));
        }
        hub
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("topics", &self.topic_count()).field("limits", &self.inner.limits).finish()
    }
}

impl Hub {
    /// A hub with the default limits: 1 MiB queued per subscriber, slow subscribers closed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub with other limits or another slow-consumer policy.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            limits: Limits {
                max_queued_bytes: 1 << 20,
                slow_consumer: SlowConsumer::Close,
                max_subscriptions: 1024,
                max_topics: 1_000_000,
                max_topic_len: DEFAULT_MAX_TOPIC_LEN,
            },
            on_drop: None,
            on_gap: None,
            broker: None,
        }
    }

    /// The topic named `name`, created if it does not exist: a handle that makes publishing and
    /// subscribing skip the name lookup. The topic lives while it has subscribers or handles,
    /// and is forgotten when the last of them goes.
    pub fn topic(&self, name: &str) -> Result<Topic, SubscribeError> {
        let max = self.inner.limits.max_topic_len;
        if name.len() > max {
            return Err(SubscribeError::NameTooLong { len: name.len(), max });
        }
        if let Some(topic) = self.get(name) {
            return Ok(topic);
        }
        let mut topics = write(&self.inner.topics);
        if let Some(topic) = topics.get(name).and_then(Weak::upgrade) {
            return Ok(Topic(topic));
        }
        // A dead entry (its last holder is removing it right now) is replaced, not counted.
        if topics.len() >= self.inner.limits.max_topics && !topics.contains_key(name) {
            return Err(SubscribeError::TooManyTopics(self.inner.limits.max_topics));
        }
        let topic = Arc::new(TopicInner {
            name: name.into(),
            hub: Arc::downgrade(&self.inner),
            subscribers: RwLock::default(),
        });
        topics.insert(name.into(), Arc::downgrade(&topic));
        Ok(Topic(topic))
    }

    /// The topic named `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Topic> {
        read(&self.inner.topics).get(name).and_then(Weak::upgrade).map(Topic)
    }

    /// Publish `message` to every subscriber of `topic` (a [`Topic`] or a name). Frames it
    /// once; never waits. A topic nobody subscribes to takes the message and does nothing.
    pub fn publish(&self, topic: impl AsTopic, message: impl Into<Prepared>) -> PublishReport {
        self.publish_inner(topic, &message.into(), None)
    }

    /// Publish to every subscriber of `topic` except `sender` (a chat message the sender has
    /// already shown).
    pub fn publish_except(
        &self,
        topic: impl AsTopic,
        message: impl Into<Prepared>,
        sender: SubscriberId,
    ) -> PublishReport {
        self.publish_inner(topic, &message.into(), Some(sender))
    }

    fn publish_inner(&self, topic: impl AsTopic, message: &Prepared, except: Option<SubscriberId>) -> PublishReport {
        let ordered = self.inner.broker.as_ref().is_some_and(|b| b.orders_delivery());
        let mut report = match topic.find(self) {
            Some(found) if !ordered => deliver(&self.inner, &found.0, message, except),
            _ => PublishReport::default(),
        };
        if let Some(broker) = &self.inner.broker
            && let Some(name) = topic.name(self)
            && name.len() <= self.inner.limits.max_topic_len
        {
            report.forwarded = broker.publish_except(name, message, except);
        }
        crate::metrics::published(report.delivered, report.dropped, report.closed);
        report
    }

    /// How many connections subscribe to `topic`.
    pub fn subscriber_count(&self, topic: impl AsTopic) -> usize {
        topic.find(self).map_or(0, |t| read(&t.0.subscribers).len())
    }

    /// How many topics exist.
    pub fn topic_count(&self) -> usize {
        read(&self.inner.topics).len()
    }

    /// A new subscriber of this hub (a connection's first subscription).
    pub(crate) fn new_subscriber(&self) -> Subscriber {
        let id = SubscriberId(self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed));
        Subscriber::new(Arc::new(Inbox::new(id, self.clone())))
    }

    /// Add `inbox` to `topic`'s subscribers; tell the broker if it is the first.
    fn add(&self, topic: &Topic, inbox: &Arc<Inbox>) {
        let first = {
            let mut subscribers = write(&topic.0.subscribers);
            subscribers.push(inbox.clone());
            subscribers.len() == 1
        };
        crate::metrics::subscriptions_changed(1, i8::from(first));
        if first && let Some(broker) = &self.inner.broker {
            broker.interest(topic.name());
        }
    }

    /// Remove `inbox` from `topic`'s subscribers; tell the broker if it was the last.
    fn remove(&self, topic: &Topic, inbox: &Inbox) {
        let last = {
            let mut subscribers = write(&topic.0.subscribers);
            match subscribers.iter().position(|s| std::ptr::eq(&**s, inbox)) {
                Some(i) => {
                    subscribers.swap_remove(i);
                    subscribers.is_empty()
                }
                None => return,
            }
        };
        crate::metrics::subscriptions_changed(-1, -i8::from(last));
        if last && let Some(broker) = &self.inner.broker {
            broker.interest(topic.name());
        }
    }

    fn broker(&self) -> Option<&dyn Broker> {
        self.inner.broker.as_deref()
    }

    fn on_drop(&self, dropped: Dropped) {
        if let Some(f) = &self.inner.on_drop {
            f(dropped);
        }
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn owns(&self, topic: &Topic) -> bool {
        std::ptr::eq(topic.0.hub.as_ptr(), Arc::as_ptr(&self.inner))
    }

    fn same(&self, other: &Hub) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Queue `message` for every subscriber of `topic` but `except`.
fn deliver(hub: &HubInner, topic: &TopicInner, message: &Prepared, except: Option<SubscriberId>) -> PublishReport {
    let mut report = PublishReport::default();
    let subscribers = read(&topic.subscribers);
    for inbox in subscribers.iter() {
        if Some(inbox.id()) == except {
            continue;
        }
        match inbox.push(message, &hub.limits) {
            Push::Queued => report.delivered += 1,
            Push::Dropped => report.dropped += 1,
            Push::Overflowed => report.closed += 1,
            Push::Gone => {}
        }
    }
    report
}

/// A topic of a [`Hub`]: an interned name, cheap to clone, compared by identity.
#[derive(Clone)]
pub struct Topic(Arc<TopicInner>);

struct TopicInner {
    name: Box<str>,
    /// The hub: to refuse a topic of another hub, and to leave its map.
    hub: Weak<HubInner>,
    subscribers: RwLock<Vec<Arc<Inbox>>>,
}

impl Drop for TopicInner {
    /// The last handle or subscription is gone: remove the hub's entry, unless a new topic of
    /// the same name has replaced it meanwhile. No code drops a `Topic` while holding the map's
    /// lock.
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else { return };
        let mut topics = write(&hub.topics);
        if topics.get(&self.name).is_some_and(|entry| std::ptr::eq(entry.as_ptr(), self)) {
            topics.remove(&self.name);
        }
    }
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for Topic {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Topic {}

impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(&*self.0, state);
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Topic").field(&self.name()).finish()
    }
}

/// A topic given by handle or by name: [`&Topic`](Topic), `Topic`, `&str`, `&String`, `String`.
pub trait AsTopic: sealed::Sealed {
    /// The topic, if it exists in `hub`.
    #[doc(hidden)]
    fn find(&self, hub: &Hub) -> Option<Topic>;
    /// The topic, created if needed.
    #[doc(hidden)]
    fn resolve(&self, hub: &Hub) -> Result<Topic, SubscribeError>;
    /// The topic's name, if it is one of `hub`'s (a name always is).
    #[doc(hidden)]
    fn name(&self, hub: &Hub) -> Option<&str>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Topic {}
    impl Sealed for &super::Topic {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for &String {}
}

impl AsTopic for &Topic {
    fn find(&self, hub: &Hub) -> Option<Topic> {
        hub.owns(self).then(|| (*self).clone())
    }

    fn name(&self, hub: &Hub) -> Option<&str> {
        hub.owns(self).then(|| Topic::name(self))
    }

    fn resolve(&self, hub: &Hub) -> Result<Topic, SubscribeError> {
        self.find(hub).ok_or(SubscribeError::OtherHub)
    }
}

impl AsTopic for Topic {
    fn find(&self, hub: &Hub) -> Option<Topic> {
        (&self).find(hub)
    }

    fn name(&self, hub: &Hub) -> Option<&str> {
        hub.owns(self).then(|| Topic::name(self))
    }

    fn resolve(&self, hub: &Hub) -> Result<Topic, SubscribeError> {
        (&self).resolve(hub)
    }
}

/// A topic given by name: looked up (or created, to subscribe) in the hub's map.
macro_rules! as_topic_by_name {
    ($($name:ty),*) => {$(
        impl AsTopic for $name {
            fn find(&self, hub: &Hub) -> Option<Topic> {
                hub.get(self)
            }

            fn name(&self, _: &Hub) -> Option<&str> {
                Some(self)
            }

            fn resolve(&self, hub: &Hub) -> Result<Topic, SubscribeError> {
                hub.topic(self)
            }
        }
    )*};
}

as_topic_by_name!(&str, String, &String);

/// Read-lock, ignoring poison: every writer leaves the data consistent before it could panic.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write-lock, ignoring poison (see [`read`]).
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}
