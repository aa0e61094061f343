//! What a connection reports to the application, and the queue that holds it until taken.

use std::collections::VecDeque;

use bytes::Bytes;

use super::close::CloseReason;
use crate::{CloseFrame, Message, Request, Response};

/// What happened on a connection, in the order it happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Server: a complete, valid upgrade request. Answer it with
    /// [`Connection::accept`](super::Connection::accept) or
    /// [`Connection::reject`](super::Connection::reject); frames are not read until then.
    Request(Box<Request>),
    /// Client: the server accepted the handshake; the connection is open.
    Opened(Box<Response>),
    /// A whole text or binary message.
    Message(Message),
    /// A ping. It has already been answered unless `auto_pong` is off.
    Ping(Bytes),
    /// A pong, solicited or not.
    Pong(Bytes),
    /// The peer's close frame arrived. The echo has been queued; the connection finishes
    /// with [`Event::Closed`] once the TCP connection ends.
    Closing(CloseFrame),
    /// The connection is over: drop the socket once `transmit` is drained. The last event.
    /// (Boxed: it comes once, and keeps every other event small to move.)
    Closed(Box<CloseReason>),
}

/// Events waiting for the application. Parsing stops at the first event, so there is nearly
/// always at most one: it is kept inline, and only the rare extra ones (a close and the end,
/// say) go to a queue.
#[derive(Debug, Default)]
pub(super) struct Events {
    first: Option<Event>,
    // Boxed on purpose: a pointer inline instead of the queue's 32 bytes, in every connection.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Event>>>,
}

impl Events {
    pub(super) fn push_back(&mut self, event: Event) {
        match &mut self.rest {
            Some(rest) => rest.push_back(event),
            None if self.first.is_none() => self.first = Some(event),
            None => self.rest = Some(Box::new(VecDeque::from([event]))),
        }
    }

    /// `first`, when set, is older than everything in `rest`: it is only filled when both are
    /// empty.
    pub(super) fn pop_front(&mut self) -> Option<Event> {
        self.first.take().or_else(|| self.rest.as_mut()?.pop_front())
    }

    pub(super) fn front(&self) -> Option<&Event> {
        self.first.as_ref().or_else(|| self.rest.as_ref()?.front())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|r| r.is_empty())
    }

    /// Drop the queue's allocation when it is empty.
    pub(super) fn release(&mut self) {
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
    }
}
