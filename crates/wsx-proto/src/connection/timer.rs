//! Deadlines: the handshake, keep-alive ping, pong, idle and close timeouts. The engine keeps
//! every timer; the I/O layer only keeps the clock, asks [`Connection::deadline`] when to call
//! [`Connection::handle_timeout`], and passes `now` with every input.

use std::time::{Duration, Instant};

use super::{Connection, State};
use crate::{ProtocolError, frame::OpCode};

/// Keep-alive and idle timers: boxed, and allocated only for a connection configured with a
/// ping interval or an idle timeout.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// When to send the next keep-alive ping.
    next_ping: Option<Instant>,
    /// When the pong to the last keep-alive ping is due.
    pong_deadline: Option<Instant>,
    /// The payload of the last keep-alive ping, so that its pong can be recognised.
    ping_counter: u32,
    /// With an idle timeout: when something last arrived.
    last_received: Option<Instant>,
    /// When the last keep-alive ping was queued, until its pong arrives.
    ping_sent: Option<Instant>,
    /// The round trip of the last answered keep-alive ping, until taken.
    rtt: Option<Duration>,
}

impl Connection {
    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if ever.
    ///
    /// May change after any input or command, and after taking events (a close frame taken
    /// arms the close timer).
    pub fn deadline(&self) -> Option<Instant> {
        if self.close_timer_pending {
            // Ask to be called at once so the close timer can be armed with a real `now`.
            return Some(self.now);
        }
        match self.state {
            State::Handshake | State::AwaitAccept | State::Refused => self.handshake.as_ref().map(|h| h.deadline),
            State::Open => {
                let timers = self.timers.as_deref()?;
                let idle = self.config.idle_timeout.zip(timers.last_received).map(|(d, t)| t + d);
                [timers.next_ping, timers.pong_deadline, idle].into_iter().flatten().min()
            }
            State::CloseSent | State::AwaitingEof => self.closing.as_ref().and_then(|c| c.deadline),
            State::Finished => None,
        }
    }

    /// Run the timers that are due at `now`: handshake, keep-alive ping, pong, idle and close
    /// timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        match self.state {
            State::Handshake | State::AwaitAccept | State::Refused => self.handshake_timeout(now),
            State::Open => {
                let timers = self.timers.as_deref();
                // A peer that answers nothing will not answer a close either: send it, and end
                // without waiting out the close timeout.
                if timers.and_then(|t| t.pong_deadline).is_some_and(|t| now >= t) {
                    self.fail(ProtocolError::PongTimeout);
                    self.finish();
                    return;
                }
                let last = timers.and_then(|t| t.last_received);
                if self.config.idle_timeout.zip(last).is_some_and(|(d, t)| now >= t + d) {
                    self.fail(ProtocolError::IdleTimeout);
                    self.finish();
                    return;
                }
                if timers.and_then(|t| t.next_ping).is_some_and(|t| now >= t) {
                    self.send_keepalive_ping(now);
                }
            }
            State::CloseSent | State::AwaitingEof => self.close_timeout(now),
            State::Finished => {}
        }
    }

    /// The timers a new connection starts with: the idle timer counts from the start until
    /// something arrives.
    pub(super) fn start_timers(&mut self) {
        if self.config.idle_timeout.is_some() {
            self.timers.get_or_insert_default().last_received = Some(self.now);
        }
    }

    /// The connection opened: start the keep-alive timer.
    pub(super) fn start_keepalive(&mut self) {
        if let Some(interval) = self.config.ping_interval {
            self.timers.get_or_insert_default().next_ping = Some(self.now + interval);
        }
    }

    /// Record the time of an input, and arm a close timer that a command without `now` left
    /// pending.
    pub(super) fn observe(&mut self, now: Instant) {
        self.now = now;
        if self.close_timer_pending {
            self.close_timer_pending = false;
            self.closing_mut().deadline = Some(now + self.config.close_timeout);
        }
    }

    /// Bytes arrived: the idle timer starts again.
    pub(super) fn received(&mut self, now: Instant) {
        if let Some(timers) = self.timers.as_mut().filter(|_| self.config.idle_timeout.is_some()) {
            timers.last_received = Some(now);
        }
    }

    /// A pong arrived: if it answers our keep-alive ping, stop waiting for it and note the
    /// round trip.
    pub(super) fn pong_received(&mut self, payload: &[u8]) {
        let now = self.now;
        if let Some(timers) = self.timers.as_mut().filter(|t| t.pong_deadline.is_some())
            && payload == timers.ping_counter.to_be_bytes()
        {
            timers.pong_deadline = None;
            timers.rtt = timers.ping_sent.take().map(|sent| now.saturating_duration_since(sent));
        }
    }

    /// The round trip of the last keep-alive ping answered since this was last called: from
    /// the ping being queued (at the `now` of [`handle_timeout`](Self::handle_timeout)) to the
    /// `now` of the input that brought its pong. `None` without a new answer, and always
    /// without a [`ping_interval`](crate::Config::ping_interval).
    ///
    /// The time the ping waited in [`transmit`](Self::transmit) counts, as it does for the
    /// peer. Only pings the engine sends are timed; a pong to [`ping`](Self::ping) is an
    /// [`Event::Pong`](crate::Event::Pong) for the application to match.
    #[inline]
    pub fn take_ping_rtt(&mut self) -> Option<Duration> {
        self.timers.as_mut()?.rtt.take()
    }

    /// Send the keep-alive ping and start waiting for its pong.
    fn send_keepalive_ping(&mut self, now: Instant) {
        let (pong_timeout, interval) = (self.config.pong_timeout, self.config.ping_interval);
        let timers = self.timers.get_or_insert_default();
        timers.ping_counter = timers.ping_counter.wrapping_add(1);
        let payload = timers.ping_counter.to_be_bytes();
        if timers.pong_deadline.is_none() {
            timers.pong_deadline = Some(now + pong_timeout);
        }
        // The payload changes with every ping, so only the latest one's pong matches: time it.
        timers.ping_sent = Some(now);
        timers.next_ping = interval.map(|d| now + d);
        self.writer().control(OpCode::Ping, &payload);
    }
}
