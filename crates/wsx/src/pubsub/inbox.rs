//! A subscriber's side of a hub: the queue publishers append to ([`Inbox`]) and the handle its
//! connection's driver holds ([`Subscriber`]).
//!
//! Locks are taken in one order: a topic's subscriber list, then an inbox. An inbox's lock is
//! never held while a topic's is taken (leaving takes its topics out first).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    task::Waker,
};

use wsx_proto::{CloseCode, Connection};

use tokio::sync::oneshot;

use super::{
    AsTopic, Dropped, Hub, Limits, Position, Prepared, RESYNC_REASON, Recovery, Resume, Resuming, SlowConsumer,
    SubscribeError, SubscriberId, Topic,
};

/// Why the driver is to close a subscriber's connection.
#[derive(Debug, Clone, Copy)]
enum Closing {
    /// Over its limit, under [`SlowConsumer::Close`]: 1008.
    Overflow,
    /// Messages for one of its topics were lost between nodes: 1012, to resynchronize.
    Resync,
}

/// One connection's queue of published frames, and its subscriptions.
pub(super) struct Inbox {
    id: SubscriberId,
    hub: Hub,
    state: Mutex<State>,
    /// Bytes in the connection's write queue when its driver last moved frames into it or
    /// wrote: counted against the limit with the queue's own bytes.
    in_engine: AtomicUsize,
}

struct State {
    frames: VecDeque<Prepared>,
    /// Wire bytes of `frames`.
    bytes: usize,
    /// The connection's task, to wake when frames arrive in an empty queue or it overflows.
    waker: Option<Waker>,
    /// Messages dropped since the last report, and in all ([`SlowConsumer::Drop`]).
    dropped: u64,
    dropped_total: u64,
    /// The driver is to close the connection: it went over its limit under
    /// [`SlowConsumer::Close`], or messages of one of its topics were lost on the way from
    /// another node.
    closing: Option<Closing>,
    /// The connection ended or is closing: nothing more is queued.
    gone: bool,
    topics: Topics,
}

/// A subscriber's topics: the first one inline, the others in a vector. Most connections
/// subscribe to one topic, and a `Vec` of one would be an allocation of 32 bytes (48 of heap)
/// per subscriber; inline it costs 8.
#[derive(Default)]
struct Topics {
    first: Option<Topic>,
    rest: Vec<Topic>,
}

impl Topics {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn contains(&self, topic: &Topic) -> bool {
        self.first.as_ref() == Some(topic) || self.rest.contains(topic)
    }

    fn push(&mut self, topic: Topic) {
        if self.first.is_none() {
            self.first = Some(topic);
        } else {
            self.rest.push(topic);
        }
    }

    /// Take `topic` out, if it is there.
    fn remove(&mut self, topic: &Topic) -> Option<Topic> {
        if self.first.as_ref() == Some(topic) {
            let found = self.first.take();
            self.first = self.rest.pop();
            return found;
        }
        let i = self.rest.iter().position(|t| t == topic)?;
        Some(self.rest.swap_remove(i))
    }

    fn to_vec(&self) -> Vec<Topic> {
        self.first.iter().chain(&self.rest).cloned().collect()
    }

    /// Take them all out.
    fn take(&mut self) -> Vec<Topic> {
        let mut all = std::mem::take(&mut self.rest);
        all.extend(self.first.take());
        all
    }
}

/// What a publish did to one inbox.
pub(super) enum Push {
    Queued,
    Dropped,
    Overflowed,
    /// The connection is ending; nothing was done.
    Gone,
}

impl Inbox {
    pub(super) fn new(id: SubscriberId, hub: Hub) -> Self {
        Self {
            id,
            hub,
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                waker: None,
                dropped: 0,
                dropped_total: 0,
                closing: None,
                gone: false,
                topics: Topics::default(),
            }),
            in_engine: AtomicUsize::new(0),
        }
    }

    pub(super) fn id(&self) -> SubscriberId {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything in it can panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue `message`, or apply the slow-consumer policy if it would put the subscriber over
    /// its limit. A message larger than the limit still goes to a subscriber with nothing
    /// queued. Wakes the connection's task when the queue was empty (a busy task pulls on its
    /// own; a task blocked on its socket is woken by the socket) or on overflow.
    pub(super) fn push(&self, message: &Prepared, limits: &Limits) -> Push {
        let len = message.frame().len();
        let mut state = self.lock();
        if state.gone || state.closing.is_some() {
            return Push::Gone;
        }
        let queued = state.bytes + self.in_engine.load(Ordering::Relaxed);
        let outcome = if queued > 0 && queued + len > limits.max_queued_bytes {
            match limits.slow_consumer {
                SlowConsumer::Close => {
                    state.closing = Some(Closing::Overflow);
                    Push::Overflowed
                }
                SlowConsumer::Drop => {
                    state.dropped += 1;
                    state.dropped_total += 1;
                    return Push::Dropped;
                }
            }
        } else {
            state.frames.push_back(message.clone());
            state.bytes += len;
            if state.frames.len() > 1 {
                // The task was woken for the first frame (or was not waiting) and has not
                // pulled yet: it takes this one with it.
                return Push::Queued;
            }
            Push::Queued
        };
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }
}

impl Inbox {
    /// Whether the connection is open and subscribed to `topic`.
    pub(super) fn wants(&self, topic: &Topic) -> bool {
        let state = self.lock();
        !state.gone && state.closing.is_none() && state.topics.contains(topic)
    }

    /// Whether `bytes` more fit under the subscriber's limit.
    pub(super) fn fits(&self, bytes: usize) -> bool {
        let state = self.lock();
        state.bytes + self.in_engine.load(Ordering::Relaxed) + bytes <= self.hub.limits().max_queued_bytes
    }

    /// Queue a message from a topic's history for this subscriber only.
    pub(super) fn replay(&self, message: &Prepared) {
        self.push(message, self.hub.limits());
    }

    /// Add this subscriber to `topic`'s live messages (the end of a resume), unless it left the
    /// topic or ended meanwhile. The check comes after the add so that a concurrent
    /// unsubscribe or drop, which removes it from its topics after marking it, cannot miss it.
    pub(super) fn join(this: &Arc<Self>, topic: &Topic) {
        this.hub.add(topic, this);
        if !this.wants(topic) {
            this.hub.remove(topic, this);
        }
    }

    /// Messages of one of this subscriber's topics may have been lost: have its driver close it
    /// with 1012. Returns whether it was open.
    pub(super) fn resync(&self) -> bool {
        let mut state = self.lock();
        if state.gone || state.closing.is_some() {
            return false;
        }
        state.closing = Some(Closing::Resync);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

/// A connection's membership of a hub, held by its driver; dropping it ends every subscription.
pub(crate) struct Subscriber(Arc<Inbox>);

impl Subscriber {
    pub(super) fn new(inbox: Arc<Inbox>) -> Self {
        Self(inbox)
    }

    pub(crate) fn id(&self) -> SubscriberId {
        self.0.id
    }

    /// Subscribe to `topic` of `hub`. `Ok(false)` if already subscribed.
    pub(crate) fn subscribe(&self, hub: &Hub, topic: impl AsTopic) -> Result<bool, SubscribeError> {
        if !self.0.hub.same(hub) {
            return Err(SubscribeError::OtherHub);
        }
        let topic = topic.resolve(hub)?;
        {
            let mut state = self.0.lock();
            if state.gone || state.closing.is_some() {
                return Err(SubscribeError::Closed);
            }
            if state.topics.contains(&topic) {
                return Ok(false);
            }
            let max = hub.limits().max_subscriptions;
            if state.topics.len() >= max {
                return Err(SubscribeError::TooManySubscriptions(max));
            }
            state.topics.push(topic.clone());
        }
        hub.add(&topic, &self.0);
        Ok(true)
    }

    /// Subscribe to `topic` of `hub` from `since`, a position seen earlier: the hub's broker
    /// delivers what was missed, then joins the subscriber to the topic. The receiver gets how
    /// that went.
    pub(crate) fn resume(&self, hub: &Hub, topic: impl AsTopic, since: Position) -> Result<Resuming, SubscribeError> {
        if !self.0.hub.same(hub) {
            return Err(SubscribeError::OtherHub);
        }
        let topic = topic.resolve(hub)?;
        let (reply, receiver) = oneshot::channel();
        {
            let mut state = self.0.lock();
            if state.gone || state.closing.is_some() {
                return Err(SubscribeError::Closed);
            }
            if state.topics.contains(&topic) {
                // Already subscribed: its messages are flowing; nothing to recover.
                let _ = reply.send(Recovery { recovered: false, position: None });
                return Ok(Resuming(receiver));
            }
            let max = hub.limits().max_subscriptions;
            if state.topics.len() >= max {
                return Err(SubscribeError::TooManySubscriptions(max));
            }
            state.topics.push(topic.clone());
        }
        let request = Resume { topic, since, inbox: Arc::downgrade(&self.0), reply: Some(reply) };
        match hub.broker() {
            Some(broker) => broker.resume(request),
            None => request.join(None, false),
        }
        Ok(Resuming(receiver))
    }

    /// End the subscription to `topic`; `false` if there was none. Messages already queued
    /// from it are still sent.
    pub(crate) fn unsubscribe(&self, topic: impl AsTopic) -> bool {
        let Some(topic) = topic.find(&self.0.hub) else { return false };
        let found = self.0.lock().topics.remove(&topic);
        match found {
            Some(topic) => {
                self.0.hub.remove(&topic, &self.0);
                true
            }
            None => false,
        }
    }

    /// The topics subscribed to.
    pub(crate) fn topics(&self) -> Vec<Topic> {
        self.0.lock().topics.to_vec()
    }

    /// Messages dropped for this connection in all.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.0.lock().dropped_total
    }

    /// Move queued frames into `conn` while its write queue is under its high-water mark;
    /// report dropped messages. Returns the code and reason to close the connection with, if
    /// it is to be closed.
    pub(crate) fn pull(&self, conn: &mut Connection) -> Option<(CloseCode, String)> {
        let mut state = self.0.lock();
        if let Some(closing) = state.closing.take() {
            state.gone = true;
            state.frames = VecDeque::new();
            state.bytes = 0;
            return Some(match closing {
                Closing::Overflow => {
                    let limit = self.0.hub.limits().max_queued_bytes;
                    (CloseCode::POLICY, format!("slow consumer: over {limit} bytes queued"))
                }
                Closing::Resync => (CloseCode::RESTART, RESYNC_REASON.to_owned()),
            });
        }
        while !conn.is_write_blocked() {
            let Some(message) = state.frames.pop_front() else { break };
            state.bytes -= message.frame().len();
            if conn.send_prepared(&message).is_err() {
                // Closing: nothing more can go out.
                state.gone = true;
                state.frames = VecDeque::new();
                state.bytes = 0;
                break;
            }
        }
        self.0.in_engine.store(conn.buffered_amount(), Ordering::Relaxed);
        let dropped = (state.dropped > 0).then(|| {
            let messages = std::mem::take(&mut state.dropped);
            Dropped { subscriber: self.0.id, messages, total: state.dropped_total }
        });
        drop(state);
        if let Some(dropped) = dropped {
            self.0.hub.on_drop(dropped);
        }
        None
    }

    /// The connection wrote: `buffered` bytes are left in its write queue.
    pub(crate) fn written(&self, buffered: usize) {
        self.0.in_engine.store(buffered, Ordering::Relaxed);
    }

    /// Register `waker` for frames arriving in an empty queue or an overflow. Returns whether
    /// there is something to do now: an overflow, or frames to pull unless the connection's
    /// write queue is `blocked` (over its high-water mark; the socket wakes the task then).
    pub(crate) fn wait(&self, waker: &Waker, blocked: bool) -> bool {
        let mut state = self.0.lock();
        if state.gone {
            return false;
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        state.closing.is_some() || (!blocked && !state.frames.is_empty())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let topics = {
            let mut state = self.0.lock();
            state.gone = true;
            state.frames = VecDeque::new();
            state.bytes = 0;
            state.waker = None;
            state.topics.take()
        };
        for topic in &topics {
            self.0.hub.remove(topic, &self.0);
        }
    }
}
