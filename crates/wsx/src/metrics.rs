//! Prometheus-style metrics on the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): a no-op until the application installs a recorder (for example
//! `metrics-exporter-prometheus`), and nothing at all without the feature.
//!
//! Names follow Prometheus conventions (`wsx_` prefix, `_total` counters, base units:
//! seconds and bytes); labels have a few fixed values each, never a connection, a peer or a
//! topic. Every name, type and meaning is in `docs/operations.md`.
//!
//! The hot path pays no atomic per message: each connection keeps plain counters and adds them
//! to the recorder's once per read from the socket (a batch of messages) and when it ends.
//! Install the recorder, then call [`enable`] before the first connection: until then wsx
//! records nothing and connections carry no counters (an idle connection stays as small as
//! without the feature); the handles are looked up once, on the first counted connection,
//! and kept.
//!
//! What the tokio layer records by itself: server connections (whether accepted by [`Server`]
//! or by [`accept`](crate::accept)), their handshakes, messages, wire bytes, closes, deflate
//! bytes and keep-alive round trips, and the topics hub's deliveries, drops, topics and
//! subscriptions. The Redis broker records its reconnects through this module too, so that the
//! names stay in one place; `record_*` and `set_*` are for what an application counts itself.
//!
//! [`Server`]: crate::Server

#[cfg(feature = "redis")]
pub(crate) use imp::broker_reconnected;
pub(crate) use imp::{Counters, Tally, handshake_failed, handshake_succeeded};
#[cfg(feature = "metrics")]
pub use imp::{
    enable, record_broker_lag, record_broker_reconnect, record_deliveries, record_dropped, record_slow_consumer_close,
    set_subscriptions, set_topics,
};
#[cfg(feature = "pubsub")]
pub(crate) use imp::{published, subscriptions_changed};

#[cfg(feature = "metrics")]
mod imp {
    use std::{
        sync::{
            OnceLock,
            atomic::{AtomicBool, Ordering},
        },
        time::{Duration, Instant},
    };

    use metrics::{Counter, Gauge, Histogram, Unit};
    use wsx_proto::{CloseCode, CloseReason, Connection, HandshakeError, Message, ProtocolError};

    use crate::Error;

    /// The handles of the metrics counted on the hot path, looked up once.
    #[derive(Debug)]
    struct Handles {
        active: Gauge,
        accepted: Counter,
        connection_duration: Histogram,
        text_in: Counter,
        binary_in: Counter,
        text_out: Counter,
        binary_out: Counter,
        bytes_in: Counter,
        bytes_out: Counter,
        /// permessage-deflate: received compressed, received decompressed, sent uncompressed,
        /// sent compressed.
        deflate: [Counter; 4],
        ping_rtt: Histogram,
        topics: Gauge,
        subscriptions: Gauge,
    }

    fn handles() -> &'static Handles {
        static HANDLES: OnceLock<Handles> = OnceLock::new();
        HANDLES.get_or_init(|| Handles {
            active: metrics::gauge!("wsx_connections_active"),
            accepted: metrics::counter!("wsx_connections_accepted_total"),
            connection_duration: metrics::histogram!("wsx_connection_duration_seconds"),
            text_in: metrics::counter!("wsx_messages_received_total", "kind" => "text"),
            binary_in: metrics::counter!("wsx_messages_received_total", "kind" => "binary"),
            text_out: metrics::counter!("wsx_messages_sent_total", "kind" => "text"),
            binary_out: metrics::counter!("wsx_messages_sent_total", "kind" => "binary"),
            bytes_in: metrics::counter!("wsx_bytes_received_total"),
            bytes_out: metrics::counter!("wsx_bytes_sent_total"),
            deflate: [
                metrics::counter!("wsx_deflate_bytes_total", "direction" => "received", "form" => "compressed"),
                metrics::counter!("wsx_deflate_bytes_total", "direction" => "received", "form" => "uncompressed"),
                metrics::counter!("wsx_deflate_bytes_total", "direction" => "sent", "form" => "uncompressed"),
                metrics::counter!("wsx_deflate_bytes_total", "direction" => "sent", "form" => "compressed"),
            ],
            ping_rtt: metrics::histogram!("wsx_ping_rtt_seconds"),
            topics: metrics::gauge!("wsx_pubsub_topics"),
            subscriptions: metrics::gauge!("wsx_pubsub_subscriptions"),
        })
    }

    /// Whether [`enable`] was called.
    static ENABLED: AtomicBool = AtomicBool::new(false);

    fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// Start recording: call once, after installing the recorder and before the first
    /// connection. Also describes every wsx metric (type, unit, help text) to the recorder, so
    /// that the Prometheus exporter prints `# HELP` and `# TYPE` lines.
    ///
    /// Until this is called, connections carry no counters and record nothing; once it is,
    /// each server connection carries about 110 bytes more.
    pub fn enable() {
        describe();
        ENABLED.store(true, Ordering::Relaxed);
    }

    fn describe() {
        use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
        g!("wsx_connections_active", Unit::Count, "WebSocket connections open now (server side).");
        c!("wsx_connections_accepted_total", Unit::Count, "Opening handshakes accepted (101 sent).");
        c!(
            "wsx_handshakes_failed_total",
            Unit::Count,
            "Opening handshakes that failed, by reason and HTTP status sent."
        );
        h!("wsx_handshake_duration_seconds", Unit::Seconds, "From the TCP accept to the 101 response.");
        h!("wsx_connection_duration_seconds", Unit::Seconds, "From the 101 response to the end of the connection.");
        c!("wsx_messages_received_total", Unit::Count, "Data messages received, by kind (text, binary).");
        c!("wsx_messages_sent_total", Unit::Count, "Data messages sent, by kind (text, binary).");
        c!(
            "wsx_bytes_received_total",
            Unit::Bytes,
            "Bytes read from sockets after the handshake (frames, compressed)."
        );
        c!("wsx_bytes_sent_total", Unit::Bytes, "Bytes written to sockets after the handshake (frames, compressed).");
        c!("wsx_closes_total", Unit::Count, "Connections ended, by close code class and initiator (local, remote).");
        c!(
            "wsx_deflate_bytes_total",
            Unit::Bytes,
            "permessage-deflate payload bytes by direction (received, sent) and form (compressed, uncompressed)."
        );
        h!("wsx_ping_rtt_seconds", Unit::Seconds, "From a keep-alive ping to its pong (ping_interval set).");
        g!("wsx_pubsub_topics", Unit::Count, "Topics with at least one subscriber.");
        g!("wsx_pubsub_subscriptions", Unit::Count, "Subscriptions across all topics.");
        c!("wsx_pubsub_deliveries_total", Unit::Count, "Messages queued to subscribers.");
        c!("wsx_pubsub_dropped_total", Unit::Count, "Messages dropped for slow subscribers.");
        c!("wsx_slow_consumer_closes_total", Unit::Count, "Connections closed for falling behind.");
        c!("wsx_broker_reconnects_total", Unit::Count, "Reconnections to the broker (Redis).");
        h!("wsx_broker_lag_seconds", Unit::Seconds, "Delay between publish on the broker and delivery here.");
    }

    /// Set the topics gauge: for a hub of the application's own. wsx's topics hub (`pubsub`)
    /// steps this gauge itself as subscriptions come and go.
    pub fn set_topics(topics: usize) {
        metrics::gauge!("wsx_pubsub_topics").set(topics as f64);
    }

    /// Set the subscriptions gauge: for a hub of the application's own (wsx's steps it itself).
    pub fn set_subscriptions(subscriptions: usize) {
        metrics::gauge!("wsx_pubsub_subscriptions").set(subscriptions as f64);
    }

    /// The topics hub: `n` messages queued to subscribers (one publish to 100 subscribers is
    /// 100). Call once per publish, not per subscriber.
    pub fn record_deliveries(n: u64) {
        metrics::counter!("wsx_pubsub_deliveries_total").increment(n);
    }

    /// The topics hub: `n` messages dropped for slow subscribers.
    pub fn record_dropped(n: u64) {
        metrics::counter!("wsx_pubsub_dropped_total").increment(n);
    }

    /// A connection closed because it fell behind (its queue passed the byte limit).
    pub fn record_slow_consumer_close() {
        metrics::counter!("wsx_slow_consumer_closes_total").increment(1);
    }

    /// The broker connection (Redis) was re-established.
    pub fn record_broker_reconnect() {
        metrics::counter!("wsx_broker_reconnects_total").increment(1);
    }

    /// The time between a message's publish on the broker and its delivery here.
    pub fn record_broker_lag(lag: Duration) {
        metrics::histogram!("wsx_broker_lag_seconds").record(lag.as_secs_f64());
    }

    /// The hub published once: queued for `delivered` subscribers, dropped for `dropped`, and
    /// put `closed` over their limit (they are being closed). Three counter updates per publish,
    /// none per delivery; nothing until [`enable`].
    #[cfg(feature = "pubsub")]
    pub(crate) fn published(delivered: usize, dropped: usize, closed: usize) {
        if !enabled() {
            return;
        }
        if delivered > 0 {
            record_deliveries(delivered as u64);
        }
        if dropped > 0 {
            record_dropped(dropped as u64);
        }
        if closed > 0 {
            metrics::counter!("wsx_slow_consumer_closes_total").increment(closed as u64);
        }
    }

    /// The hub's subscriptions changed by `subscriptions` (±1), and its topics with a
    /// subscriber by `topics` (±1 or 0). Gauge steps, not sets: several hubs add up.
    #[cfg(feature = "pubsub")]
    pub(crate) fn subscriptions_changed(subscriptions: i8, topics: i8) {
        if !enabled() {
            return;
        }
        let h = handles();
        h.subscriptions.increment(f64::from(subscriptions));
        if topics != 0 {
            h.topics.increment(f64::from(topics));
        }
    }

    /// The broker's connection came back.
    #[cfg(feature = "redis")]
    pub(crate) fn broker_reconnected() {
        if enabled() {
            record_broker_reconnect();
        }
    }

    /// A server handshake was answered 101, `started` at the TCP accept.
    pub(crate) fn handshake_succeeded(started: Instant) {
        if !enabled() {
            return;
        }
        metrics::histogram!("wsx_handshake_duration_seconds").record(started.elapsed().as_secs_f64());
    }

    /// A server handshake failed: `timeout`, or how `error` ended it.
    pub(crate) fn handshake_failed(error: Option<&Error>) {
        if !enabled() {
            return;
        }
        let (reason, status) = match error.and_then(Error::protocol_error) {
            None if error.is_none_or(Error::is_timeout) => ("timeout", ""),
            None => ("io", ""),
            Some(ProtocolError::Handshake(h)) => match h {
                HandshakeError::Rejected { status, .. } => ("rejected", status.as_str()),
                HandshakeError::BadRequest { status, .. } => ("bad_request", status.as_str()),
                HandshakeError::Timeout => ("timeout", ""),
                HandshakeError::UnexpectedEof => ("eof", ""),
                _ => ("bad_request", ""),
            },
            Some(e) if e.is_timeout() => ("timeout", ""),
            Some(_) => ("bad_request", ""),
        };
        // Owned: `status` borrows from the error, and the recorder keeps the label.
        metrics::counter!("wsx_handshakes_failed_total", "reason" => reason, "status" => status.to_owned())
            .increment(1);
    }

    /// A connection's counters since the last flush; `None` for connections not counted
    /// (clients, and servers until the handshake is accepted).
    #[derive(Debug, Default)]
    pub(crate) struct Counters {
        live: Option<Box<Live>>,
    }

    #[derive(Debug)]
    struct Live {
        /// The recorder's handles, looked up when the connection opened.
        handles: &'static Handles,
        opened: Instant,
        text_in: u64,
        binary_in: u64,
        text_out: u64,
        binary_out: u64,
        bytes_in: u64,
        bytes_out: u64,
        /// The application or the server's shutdown started the close.
        closing_locally: bool,
        /// (code class, initiator), once the connection ended.
        closed: Option<(&'static str, &'static str)>,
    }

    /// Messages counted outside the driver (in a `recv_each` handler), added after.
    #[derive(Debug, Default)]
    pub(crate) struct Tally {
        /// Text and binary messages received in one call of the driver (u32: a call ends
        /// long before four billion).
        received: [u32; 2],
        /// Text and binary replies queued.
        sent: [u32; 2],
    }

    impl Tally {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        #[inline(always)]
        pub(crate) fn message(&mut self, text: bool) {
            self.received[usize::from(!text)] += 1;
        }

        /// The replies a handler queued: `Replies::sent` before and after it ran.
        #[inline(always)]
        pub(crate) fn replies(&mut self, before: (u32, u32), after: (u32, u32)) {
            self.sent[0] += after.0 - before.0;
            self.sent[1] += after.1 - before.1;
        }
    }

    impl Counters {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// Whether this connection is counted (the server accepted it after [`enable`]).
        #[inline(always)]
        pub(crate) fn is_counting(&self) -> bool {
            self.live.is_some()
        }

        /// Start counting: the server accepted the handshake.
        pub(crate) fn open(&mut self) {
            if !enabled() {
                return;
            }
            let h = handles();
            h.accepted.increment(1);
            h.active.increment(1.0);
            self.live = Some(Box::new(Live {
                handles: h,
                opened: Instant::now(),
                text_in: 0,
                binary_in: 0,
                text_out: 0,
                binary_out: 0,
                bytes_in: 0,
                bytes_out: 0,
                closing_locally: false,
                closed: None,
            }));
        }

        /// `n` bytes read: a new batch, so add up the previous one (and what the engine
        /// counted for it: deflate bytes, a ping's round trip).
        #[inline(always)]
        pub(crate) fn read(&mut self, n: usize, conn: &mut Connection) {
            if let Some(live) = &mut self.live {
                live.read(n, conn);
            }
        }

        #[inline]
        pub(crate) fn wrote(&mut self, n: usize) {
            if let Some(live) = &mut self.live {
                live.bytes_out += n as u64;
            }
        }

        #[inline]
        pub(crate) fn received(&mut self, message: &Message) {
            if let Some(live) = &mut self.live {
                match message {
                    Message::Text(_) => live.text_in += 1,
                    Message::Binary(_) => live.binary_in += 1,
                    _ => {}
                }
            }
        }

        #[inline]
        pub(crate) fn received_tally(&mut self, tally: Tally) {
            if let Some(live) = &mut self.live {
                live.text_in += u64::from(tally.received[0]);
                live.binary_in += u64::from(tally.received[1]);
                live.text_out += u64::from(tally.sent[0]);
                live.binary_out += u64::from(tally.sent[1]);
            }
        }

        #[inline]
        pub(crate) fn sent(&mut self, message: &Message) {
            if let Some(live) = &mut self.live {
                match message {
                    Message::Text(_) => live.text_out += 1,
                    Message::Binary(_) => live.binary_out += 1,
                    _ => {}
                }
            }
        }

        /// This side starts the closing handshake.
        pub(crate) fn closing(&mut self) {
            if let Some(live) = &mut self.live {
                live.closing_locally = true;
            }
        }

        /// The connection ended.
        pub(crate) fn closed(&mut self, reason: &CloseReason, conn: &mut Connection) {
            if let Some(live) = &mut self.live
                && live.closed.is_none()
            {
                flush_engine(live.handles, conn);
                let code = reason.code();
                // A failure this side detected (a protocol error, a timeout) is a local close;
                // the peer's close frame or its TCP close (1006) a remote one.
                let local = live.closing_locally || (reason.error.is_some() && code != CloseCode::ABNORMAL);
                live.closed = Some((code_class(code), if local { "local" } else { "remote" }));
            }
        }
    }

    /// Add what the engine counted since the last call: deflate bytes, a ping's round trip.
    /// Two `Option` checks when the connection has neither.
    #[inline(always)]
    fn flush_engine(h: &Handles, conn: &mut Connection) {
        if let Some(mut stats) = conn.take_deflate_stats() {
            add(&h.deflate[0], &mut stats.received_compressed);
            add(&h.deflate[1], &mut stats.received_decompressed);
            add(&h.deflate[2], &mut stats.sent_uncompressed);
            add(&h.deflate[3], &mut stats.sent_compressed);
        }
        if let Some(rtt) = conn.take_ping_rtt() {
            h.ping_rtt.record(rtt.as_secs_f64());
        }
    }

    /// Add `count` to `counter` unless it is zero, and zero it.
    #[inline(always)]
    fn add(counter: &Counter, count: &mut u64) {
        if *count != 0 {
            counter.increment(std::mem::take(count));
        }
    }

    impl Live {
        /// Out of line, so that a connection not counted pays one test per read.
        #[inline(never)]
        fn read(&mut self, n: usize, conn: &mut Connection) {
            self.bytes_in += n as u64;
            self.flush();
            flush_engine(self.handles, conn);
        }

        /// Add the counts since the last flush to the recorder's: one `increment` for each
        /// count that is not zero, in straight-line code (a loop over an array of pairs, built
        /// at every read, cost 30 instructions more per flush).
        #[inline(always)]
        fn flush(&mut self) {
            let h = self.handles;
            add(&h.text_in, &mut self.text_in);
            add(&h.binary_in, &mut self.binary_in);
            add(&h.text_out, &mut self.text_out);
            add(&h.binary_out, &mut self.binary_out);
            add(&h.bytes_in, &mut self.bytes_in);
            add(&h.bytes_out, &mut self.bytes_out);
        }
    }

    impl Drop for Counters {
        fn drop(&mut self) {
            let Some(live) = &mut self.live else { return };
            live.flush();
            let h = handles();
            h.connection_duration.record(live.opened.elapsed().as_secs_f64());
            // Dropped without an end seen (the application let go of the stream): abnormal.
            let (class, initiator) = live.closed.unwrap_or(("abnormal", "local"));
            metrics::counter!("wsx_closes_total", "code_class" => class, "initiator" => initiator).increment(1);
            // Last, so that a scrape that sees the connection gone also sees how it ended.
            h.active.decrement(1.0);
        }
    }

    /// The close code's class: a handful of label values whatever codes peers send.
    fn code_class(code: CloseCode) -> &'static str {
        match code.0 {
            1000 => "normal",
            1001 => "going_away",
            1002 | 1003 | 1007 | 1009 | 1010 => "protocol_error",
            1008 => "policy",
            1005 | 1006 | 1015 => "abnormal",
            1011..=1014 => "server_error",
            3000..=3999 => "registered",
            4000..=4999 => "application",
            _ => "other",
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    //! Without the feature: the same calls, compiled to nothing.

    use std::time::Instant;

    use wsx_proto::{CloseReason, Connection, Message};

    use crate::Error;

    pub(crate) fn handshake_succeeded(_: Instant) {}
    #[cfg(feature = "pubsub")]
    pub(crate) fn subscriptions_changed(_: i8, _: i8) {}

    pub(crate) fn handshake_failed(_: Option<&Error>) {}
    #[cfg(feature = "pubsub")]
    pub(crate) fn published(_: usize, _: usize, _: usize) {}
    #[cfg(feature = "redis")]
    pub(crate) fn broker_reconnected() {}

    #[derive(Debug, Default)]
    pub(crate) struct Counters;

    #[derive(Debug, Default)]
    pub(crate) struct Tally;

    impl Tally {
        pub(crate) fn new() -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn message(&mut self, _: bool) {}
        #[inline(always)]
        pub(crate) fn replies(&mut self, _: (u32, u32), _: (u32, u32)) {}
    }

    impl Counters {
        pub(crate) fn new() -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn is_counting(&self) -> bool {
            false
        }
        #[inline(always)]
        pub(crate) fn open(&mut self) {}
        #[inline(always)]
        pub(crate) fn read(&mut self, _: usize, _: &mut Connection) {}
        #[inline(always)]
        pub(crate) fn wrote(&mut self, _: usize) {}
        #[inline(always)]
        pub(crate) fn received(&mut self, _: &Message) {}
        #[inline(always)]
        pub(crate) fn received_tally(&mut self, _: Tally) {}
        #[inline(always)]
        pub(crate) fn sent(&mut self, _: &Message) {}
        #[inline(always)]
        pub(crate) fn closing(&mut self) {}
        #[inline(always)]
        pub(crate) fn closed(&mut self, _: &CloseReason, _: &mut Connection) {}
    }
}
