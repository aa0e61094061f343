//! Prometheus-style metrics on the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): a no-op until the application installs a recorder (for example
//! `metrics-exporter-prometheus`), and nothing at all without the feature.
//!
//! Names follow Prometheus conventions (`wsx_` prefix, `_total` counters, base units:
//! seconds and bytes); labels have a few fixed values each, never a connection, a peer or a
//! topic. Every name, type and meaning is in `docs/operations.md`.
//!
//! The hot path pays no atomic read-modify-write, per message or per read: each connection
//! counts in memory only it writes (a plain load and store), and a harvest adds what every open
//! connection counted to the recorder's counters every [`FLUSH_INTERVAL`] (one update per
//! metric, whatever the number of connections), or when you call [`flush`]; a connection that
//! ends adds its last counts itself. A scrape therefore sees open connections' traffic at most
//! a second late (exactly, after [`flush`]), and ended connections' exactly.
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

pub(crate) use imp::Counters;
#[cfg(feature = "metrics")]
pub use imp::{
    FLUSH_INTERVAL, enable, flush, record_broker_lag, record_broker_reconnect, record_deliveries, record_dropped,
    record_slow_consumer_close, set_subscriptions, set_topics,
};
#[cfg(feature = "redis")]
pub(crate) use imp::{broker_lag, broker_probing, broker_reconnected};
#[cfg(feature = "server")]
pub(crate) use imp::{handshake_failed, handshake_succeeded};
#[cfg(feature = "pubsub")]
pub(crate) use imp::{published, subscriptions_changed};

#[cfg(feature = "metrics")]
mod imp {
    use std::{
        sync::{
            Arc, Mutex, OnceLock,
            atomic::{AtomicBool, AtomicU64, Ordering},
        },
        time::{Duration, Instant},
    };

    use metrics::{Counter, Gauge, Histogram, Unit};
    use wsx_proto::{CloseCode, CloseReason, Connection, DrainCounts, Message};

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
        #[cfg(feature = "pubsub")]
        topics: Gauge,
        #[cfg(feature = "pubsub")]
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
            #[cfg(feature = "pubsub")]
            topics: metrics::gauge!("wsx_pubsub_topics"),
            #[cfg(feature = "pubsub")]
            subscriptions: metrics::gauge!("wsx_pubsub_subscriptions"),
        })
    }

    /// How often the counts of open connections reach the recorder (see [`flush`]). A second
    /// is far below any scrape interval (Prometheus scrapes every 15 s or more).
    pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

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
    /// each server connection carries about 270 bytes more (its counts,
    /// shared with the harvest, and its place in the list of counted connections).
    pub fn enable() {
        describe();
        ENABLED.store(true, Ordering::Relaxed);
        start_harvest();
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
        h!(
            "wsx_broker_lag_seconds",
            Unit::Seconds,
            "Round trip of the node's probe through the broker (Redis), read in turn with the topics' messages."
        );
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

    /// A broker's lag: for a broker of the application's own (wsx's `RedisBroker` measures its
    /// own with a probe, see docs/operations.md).
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

    /// Whether the broker should measure its lag (metrics are on).
    #[cfg(feature = "redis")]
    pub(crate) fn broker_probing() -> bool {
        enabled()
    }

    /// The broker's lag probe came back after `lag`.
    #[cfg(feature = "redis")]
    pub(crate) fn broker_lag(lag: Duration) {
        if enabled() {
            record_broker_lag(lag);
        }
    }

    /// A server handshake was answered 101, `started` at the TCP accept.
    #[cfg(feature = "server")]
    pub(crate) fn handshake_succeeded(started: Instant) {
        if !enabled() {
            return;
        }
        metrics::histogram!("wsx_handshake_duration_seconds").record(started.elapsed().as_secs_f64());
    }

    /// A server handshake failed: `timeout`, or how `error` ended it.
    #[cfg(feature = "server")]
    pub(crate) fn handshake_failed(error: Option<&crate::Error>) {
        use wsx_proto::{HandshakeError, ProtocolError};

        use crate::Error;

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

    /// A connection's counters: `None` for connections not counted (clients, and servers until
    /// the handshake is accepted).
    #[derive(Debug, Default)]
    pub(crate) struct Counters {
        live: Option<Box<Live>>,
    }

    #[derive(Debug)]
    struct Live {
        /// The recorder's handles, looked up when the connection opened.
        handles: &'static Handles,
        /// What the connection counted since it opened, shared with the harvest.
        counts: Arc<Counts>,
        /// Its place in [`REGISTRY`].
        slot: usize,
        opened: Instant,
        /// The application or the server's shutdown started the close.
        closing_locally: bool,
        /// (code class, initiator), once the connection ended.
        closed: Option<(&'static str, &'static str)>,
    }

    /// The counts a connection keeps, in the order of the counters in [`Handles::add`].
    const TEXT_IN: usize = 0;
    const BINARY_IN: usize = 1;
    const TEXT_OUT: usize = 2;
    const BINARY_OUT: usize = 3;
    const BYTES_IN: usize = 4;
    const BYTES_OUT: usize = 5;
    /// permessage-deflate, as in [`Handles::deflate`].
    const DEFLATE: usize = 6;
    const COUNTS: usize = 10;

    /// A connection's running totals since it opened. Only the connection writes them (its
    /// driver is owned by one task, or behind the split halves' lock), so a count is a plain
    /// load and store, not a locked read-modify-write; the harvest only reads them.
    #[derive(Debug, Default)]
    struct Counts([AtomicU64; COUNTS]);

    impl Counts {
        #[inline(always)]
        fn add(&self, i: usize, n: u64) {
            let count = &self.0[i];
            count.store(count.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }

    /// A connection's counts, with how much of them the recorder has seen.
    #[derive(Debug)]
    struct Entry {
        counts: Arc<Counts>,
        seen: [u64; COUNTS],
    }

    impl Entry {
        /// Add what the recorder has not seen to `totals`.
        fn harvest(&mut self, totals: &mut [u64; COUNTS]) {
            for ((count, seen), total) in self.counts.0.iter().zip(&mut self.seen).zip(totals) {
                let now = count.load(Ordering::Relaxed);
                *total += now.wrapping_sub(*seen);
                *seen = now;
            }
        }
    }

    /// Every counted connection open now.
    #[derive(Debug, Default)]
    struct Registry {
        entries: Vec<Option<Entry>>,
        free: Vec<usize>,
    }

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry { entries: Vec::new(), free: Vec::new() });

    fn registry() -> std::sync::MutexGuard<'static, Registry> {
        // The registry holds plain data: a panic while it was held leaves it usable.
        REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add what every open connection counted since the last flush to the recorder: a pass over
    /// the connections' counts under one lock, then one update per metric. A thread started by
    /// [`enable`] calls it every [`FLUSH_INTERVAL`]; call it yourself right before rendering a
    /// scrape to make it exact. (A connection that ends adds its last counts itself.)
    pub fn flush() {
        if !enabled() {
            return;
        }
        let mut totals = [0; COUNTS];
        {
            let mut registry = registry();
            for entry in registry.entries.iter_mut().flatten() {
                entry.harvest(&mut totals);
            }
        }
        handles().add(&totals);
    }

    /// Run [`flush`] every [`FLUSH_INTERVAL`], on a thread of its own (one per process).
    fn start_harvest() {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let spawned = std::thread::Builder::new().name("wsx-metrics".into()).spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    flush();
                }
            });
            // Without the thread, counts still reach the recorder when connections end and
            // at every `flush`.
            if let Err(e) = spawned {
                eprintln!("wsx: metrics harvest thread not started: {e}");
            }
        });
    }

    impl Handles {
        /// Add harvested `totals` to the recorder's counters, one update for each that is not zero.
        fn add(&self, totals: &[u64; COUNTS]) {
            let counters = [
                &self.text_in,
                &self.binary_in,
                &self.text_out,
                &self.binary_out,
                &self.bytes_in,
                &self.bytes_out,
                &self.deflate[0],
                &self.deflate[1],
                &self.deflate[2],
                &self.deflate[3],
            ];
            for (counter, &total) in counters.into_iter().zip(totals) {
                if total != 0 {
                    counter.increment(total);
                }
            }
        }
    }

    impl Counters {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// Start counting: the server accepted the handshake.
        pub(crate) fn open(&mut self) {
            if !enabled() {
                return;
            }
            let h = handles();
            h.accepted.increment(1);
            h.active.increment(1.0);
            let counts = Arc::new(Counts::default());
            let entry = Entry { counts: Arc::clone(&counts), seen: [0; COUNTS] };
            let slot = {
                let mut registry = registry();
                match registry.free.pop() {
                    Some(slot) => {
                        registry.entries[slot] = Some(entry);
                        slot
                    }
                    None => {
                        registry.entries.push(Some(entry));
                        registry.entries.len() - 1
                    }
                }
            };
            self.live = Some(Box::new(Live {
                handles: h,
                counts,
                slot,
                opened: Instant::now(),
                closing_locally: false,
                closed: None,
            }));
        }

        /// `n` bytes read: counted, with what the engine counted (deflate bytes, a ping's
        /// round trip).
        #[inline(always)]
        pub(crate) fn read(&mut self, n: usize, conn: &mut Connection) {
            if let Some(live) = &mut self.live {
                live.counts.add(BYTES_IN, n as u64);
                live.take_engine(conn);
            }
        }

        #[inline]
        pub(crate) fn wrote(&mut self, n: usize) {
            if let Some(live) = &mut self.live {
                live.counts.add(BYTES_OUT, n as u64);
            }
        }

        #[inline]
        pub(crate) fn received(&mut self, message: &Message) {
            if let Some(live) = &mut self.live {
                match message {
                    Message::Text(_) => live.counts.add(TEXT_IN, 1),
                    Message::Binary(_) => live.counts.add(BINARY_IN, 1),
                    _ => {}
                }
            }
        }

        /// What a drain through `recv_each` handed out and its handler queued.
        #[inline]
        pub(crate) fn drained(&mut self, counts: &DrainCounts) {
            let [text, binary] = counts.received;
            let [text_out, binary_out] = counts.replied;
            if let Some(live) = &mut self.live
                && (text | binary | text_out | binary_out) != 0
            {
                let c = &live.counts;
                c.add(TEXT_IN, u64::from(text));
                c.add(BINARY_IN, u64::from(binary));
                c.add(TEXT_OUT, u64::from(text_out));
                c.add(BINARY_OUT, u64::from(binary_out));
            }
        }

        #[inline]
        pub(crate) fn sent(&mut self, message: &Message) {
            if let Some(live) = &mut self.live {
                match message {
                    Message::Text(_) => live.counts.add(TEXT_OUT, 1),
                    Message::Binary(_) => live.counts.add(BINARY_OUT, 1),
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
                live.take_engine(conn);
                let code = reason.code();
                // A failure this side detected (a protocol error, a timeout) is a local close;
                // the peer's close frame or its TCP close (1006) a remote one.
                let local = live.closing_locally || (reason.error.is_some() && code != CloseCode::ABNORMAL);
                live.closed = Some((code_class(code), if local { "local" } else { "remote" }));
            }
        }
    }

    impl Live {
        /// Take what the engine counted since the last call: deflate bytes, a ping's round
        /// trip. Two `Option` checks when the connection has neither.
        #[inline(always)]
        fn take_engine(&mut self, conn: &mut Connection) {
            if let Some(stats) = conn.take_deflate_stats() {
                self.add_deflate(stats);
            }
            if let Some(rtt) = conn.take_ping_rtt() {
                self.handles.ping_rtt.record(rtt.as_secs_f64());
            }
        }

        #[inline(never)]
        fn add_deflate(&self, stats: wsx_proto::DeflateStats) {
            let counts = &self.counts;
            counts.add(DEFLATE, stats.received_compressed);
            counts.add(DEFLATE + 1, stats.received_decompressed);
            counts.add(DEFLATE + 2, stats.sent_uncompressed);
            counts.add(DEFLATE + 3, stats.sent_compressed);
        }
    }

    impl Drop for Counters {
        fn drop(&mut self) {
            let Some(live) = &mut self.live else { return };
            // The last counts, added by the connection itself: exact once it has ended.
            let mut totals = [0; COUNTS];
            {
                let mut registry = registry();
                if let Some(mut entry) = registry.entries.get_mut(live.slot).and_then(Option::take) {
                    entry.harvest(&mut totals);
                    registry.free.push(live.slot);
                }
            }
            let h = live.handles;
            h.add(&totals);
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

    use wsx_proto::{CloseReason, Connection, Message};

    #[cfg(feature = "server")]
    pub(crate) fn handshake_succeeded(_: std::time::Instant) {}
    #[cfg(feature = "pubsub")]
    pub(crate) fn subscriptions_changed(_: i8, _: i8) {}

    #[cfg(feature = "server")]
    pub(crate) fn handshake_failed(_: Option<&crate::Error>) {}
    #[cfg(feature = "pubsub")]
    pub(crate) fn published(_: usize, _: usize, _: usize) {}
    #[cfg(feature = "redis")]
    pub(crate) fn broker_reconnected() {}
    #[cfg(feature = "redis")]
    pub(crate) fn broker_probing() -> bool {
        false
    }
    #[cfg(feature = "redis")]
    pub(crate) fn broker_lag(_: std::time::Duration) {}

    #[derive(Debug, Default)]
    pub(crate) struct Counters;

    impl Counters {
        pub(crate) fn new() -> Self {
            Self
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
        pub(crate) fn drained(&mut self, _: &wsx_proto::DrainCounts) {}
        #[inline(always)]
        pub(crate) fn sent(&mut self, _: &Message) {}
        #[inline(always)]
        pub(crate) fn closing(&mut self) {}
        #[inline(always)]
        pub(crate) fn closed(&mut self, _: &CloseReason, _: &mut Connection) {}
    }
}
