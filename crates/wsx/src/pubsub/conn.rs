//! Subscribing a connection: the methods of [`WebSocket`] and its split halves.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{AsTopic, Hub, Position, Resuming, SubscribeError, SubscriberId, Topic};
use crate::{
    driver::Driver,
    split::{WsReader, WsWriter},
    stream::WebSocket,
};

impl<S> Driver<S> {
    fn subscribe(&mut self, hub: &Hub, topic: impl AsTopic) -> Result<SubscriberId, SubscribeError> {
        if self.is_done() || !self.conn.is_open() {
            return Err(SubscribeError::Closed);
        }
        let subscriber = self.subscriber.get_or_insert_with(|| hub.new_subscriber());
        subscriber.subscribe(hub, topic)?;
        Ok(subscriber.id())
    }

    fn resume(&mut self, hub: &Hub, topic: impl AsTopic, since: Position) -> Result<Resuming, SubscribeError> {
        if self.is_done() || !self.conn.is_open() {
            return Err(SubscribeError::Closed);
        }
        let subscriber = self.subscriber.get_or_insert_with(|| hub.new_subscriber());
        subscriber.resume(hub, topic, since)
    }

    fn unsubscribe(&self, topic: impl AsTopic) -> bool {
        self.subscriber.as_ref().is_some_and(|s| s.unsubscribe(topic))
    }

    fn subscriptions(&self) -> Vec<Topic> {
        self.subscriber.as_ref().map_or_else(Vec::new, |s| s.topics())
    }

    fn subscriber_id(&self) -> Option<SubscriberId> {
        self.subscriber.as_ref().map(|s| s.id())
    }

    fn dropped_messages(&self) -> u64 {
        self.subscriber.as_ref().map_or(0, |s| s.dropped_total())
    }
}

/// The subscription methods, for a type with `driver_ref` and `driver_mut` accessors.
macro_rules! subscription_methods {
    () => {
        /// Subscribe this connection to `topic` (a [`Topic`] or a name) of `hub`: what is
        /// published to it goes out on this connection, in order, while the connection is
        /// driven (see the [`pubsub`](crate::pubsub) module). A connection subscribes to topics
        /// of one hub. Returns the connection's [`SubscriberId`] (for
        /// [`Hub::publish_except`]); subscribing twice to a topic is allowed and changes nothing.
        ///
        /// Fails if the connection has ended, has [`max_subscriptions`](crate::pubsub::HubBuilder::max_subscriptions)
        /// already, or the topic name is too long or one too many for the hub.
        pub fn subscribe(&mut self, hub: &Hub, topic: impl AsTopic) -> Result<SubscriberId, SubscribeError> {
            self.driver_mut(|d| d.subscribe(hub, topic))
        }

        /// Subscribe this connection to `topic` of `hub` from `since`, the position of the last
        /// message the client saw (on this server or another): with a broker that keeps
        /// history ([`RedisBroker`](crate::pubsub::redis::RedisBroker) in resumable mode), the
        /// messages after it are queued first, in order and without duplicates, then the live
        /// ones. The returned [`Resuming`] says whether that worked; the subscription is made
        /// either way (from now on if the history could not be recovered). Without such a
        /// broker it is [`subscribe`](Self::subscribe) with `recovered: false`.
        pub fn resume(&mut self, hub: &Hub, topic: impl AsTopic, since: Position) -> Result<Resuming, SubscribeError> {
            self.driver_mut(|d| d.resume(hub, topic, since))
        }

        /// End the subscription to `topic`; `false` if there was none. Messages already queued
        /// for this connection are still sent.
        pub fn unsubscribe(&mut self, topic: impl AsTopic) -> bool {
            self.driver_ref(|d| d.unsubscribe(topic))
        }

        /// The topics this connection subscribes to.
        pub fn subscriptions(&self) -> Vec<Topic> {
            self.driver_ref(|d| d.subscriptions())
        }

        /// This connection's identity within its hub, once it has subscribed.
        pub fn subscriber_id(&self) -> Option<SubscriberId> {
            self.driver_ref(|d| d.subscriber_id())
        }

        /// How many published messages were skipped for this connection because it was over its
        /// limit, under [`SlowConsumer::Drop`](crate::pubsub::SlowConsumer::Drop).
        pub fn dropped_messages(&self) -> u64 {
            self.driver_ref(|d| d.dropped_messages())
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    subscription_methods!();
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriter<S> {
    subscription_methods!();
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReader<S> {
    subscription_methods!();
}
