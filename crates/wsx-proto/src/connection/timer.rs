//! Deadlines: the handshake, keep-alive ping, pong, idle, send and close timeouts. The engine keeps
//! every timer; the I/O layer only keeps the clock, asks [`Connection::deadline`] when to call
//! [`Connection::handle_timeout`], and passes `now` with every input.

use std::time::{Duration, Instant};

use super::{Connection, State, buffers::Stall};
use crate::{ProtocolError, frame::OpCode, outgoing::WriteQueue};

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
                let send = self.send_deadline();
                let Some(timers) = self.timers.as_deref() else { return send };
                let idle = self.config.idle_timeout.zip(timers.last_received).map(|(d, t)| t + d);
                [timers.next_ping, timers.pong_deadline, idle, send].into_iter().flatten().min()
            }
            State::CloseSent | State::AwaitingEof => self.closing.as_ref().and_then(|c| c.deadline),
            State::Finished => None,
        }
    }

    /// Run the timers that are due at `now`: handshake, keep-alive ping, pong, idle, send and
    /// close timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        match self.state {
            State::Handshake | State::AwaitAccept | State::Refused => self.handshake_timeout(now),
            State::Open => {
                if self.send_timer(now) {
                    return;
                }
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

    /// The send deadline, while the write queue is over `write_high_water`: when its clock
    /// runs out, or at once (the last `now`) to start the clock, as commands that queue bytes
    /// bring no `now`.
    fn send_deadline(&self) -> Option<Instant> {
        let w = self.work.as_deref()?;
        if w.outgoing.len() <= self.config.write_high_water {
            return None;
        }
        let timeout = self.config.send_timeout?;
        Some(w.stall.map_or(self.now, |s| s.since + timeout))
    }

    /// The send deadline's timer: start its clock when the write queue is over the high-water
    /// mark, start it again when the peer has taken enough since (the bytes that were over the
    /// mark then, or `write_high_water` bytes, whichever is less), stop it when the queue is
    /// under the mark, and fail the connection when it runs out. Returns whether it failed.
    fn send_timer(&mut self, now: Instant) -> bool {
        let Some(timeout) = self.config.send_timeout else { return false };
        let high_water = self.config.write_high_water;
        let Some(w) = self.work.as_deref_mut() else { return false };
        let len = w.outgoing.len();
        if len <= high_water {
            w.stall = None;
            return false;
        }
        let written = w.outgoing.written();
        match w.stall {
            Some(s) if written.wrapping_sub(s.written) < s.excess.min(high_water) as u64 => {
                if now < s.since + timeout {
                    return false;
                }
            }
            _ => {
                w.stall = Some(Stall { since: now, written, excess: len - high_water });
                return false;
            }
        }
        self.fail_send_timeout();
        true
    }

    /// The peer took nothing for `send_timeout`: free what is queued for it and end at once.
    /// No close frame is sent: a peer that does not read would not see it, and it would land
    /// in the middle of a frame already partly written.
    fn fail_send_timeout(&mut self) {
        if let Some(w) = self.work.as_deref_mut() {
            w.outgoing = WriteQueue::default();
            w.stall = None;
        }
        self.deflate = None;
        self.out_message = None;
        self.record_error(ProtocolError::SendTimeout);
        self.shutdown = true;
        self.finish();
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
