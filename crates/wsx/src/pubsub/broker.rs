//! Topics shared by several servers: the [`Broker`] a hub hands its publishes to, and the
//! [`Remote`] handle through which the broker delivers what the other servers published.
//!
//! A hub with a broker delivers a publish to its own subscribers at once and hands it to the
//! broker, which sends it to the other nodes; the broker delivers what arrives from them to this
//! hub's subscribers only (never back to the broker). The broker learns which topics this node
//! needs from [`Broker::interest`] and asks the hub for the current state, so that calls from
//! different threads may arrive in any order.

use std::{fmt, sync::Weak};

use super::{HubInner, Prepared, PublishReport, read};

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
        let hub = self.0.upgrade()?;
        let Some(topic) = read(&hub.topics).get(topic).and_then(Weak::upgrade) else {
            return Some(PublishReport::default());
        };
        let report = super::deliver(&hub, &topic, message, None);
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
