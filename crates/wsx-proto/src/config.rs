//! Connection limits, timers and behaviour switches.

use std::time::Duration;

use crate::{deflate::DeflateConfig, error::ConfigError};

/// Every limit, timer and switch of a connection, for both roles.
///
/// Build it with [`Config::default()`] and the chained setters, then call
/// [`Config::validate`] (the constructors of [`Connection`](crate::Connection) do it for you).
/// Each setter documents the default, the unit and what the value costs in memory or exposes
/// to a hostile peer. The README carries the same table.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub(crate) max_message_size: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) max_fragments: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) write_high_water: usize,
    pub(crate) send_timeout: Option<Duration>,
    pub(crate) auto_pong: bool,
    pub(crate) accept_unmasked: bool,
    pub(crate) deflate: Option<DeflateConfig>,
    pub(crate) plain_http: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: 64 << 20,
            max_frame_size: 16 << 20,
            max_fragments: 1 << 17,
            max_header_bytes: 8 << 10,
            max_headers: 128,
            read_buffer_size: 8 << 10,
            close_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            ping_interval: None,
            pong_timeout: Duration::from_secs(20),
            idle_timeout: None,
            write_high_water: 1 << 20,
            send_timeout: Some(Duration::from_secs(60)),
            auto_pong: true,
            accept_unmasked: false,
            deflate: None,
            plain_http: false,
        }
    }
}

impl Config {
    /// Largest message accepted, in bytes, counted across all its fragments and after
    /// decompression. Default: 64 MiB.
    ///
    /// A message whose declared frame lengths would pass this limit is refused from the frame
    /// header with close 1009 before its payload is buffered; a compressed message is stopped
    /// the moment inflating it passes the limit. This is the main bound on the memory one
    /// connection can be made to hold.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Largest single frame payload accepted, in bytes. Default: 16 MiB.
    ///
    /// Checked against the length in the frame header (close 1009). A frame is buffered whole
    /// before it is delivered, so this bounds the read buffer. Frames of a compressed message
    /// may be 1/16 longer, because deflate lengthens incompressible data slightly; what they
    /// inflate to is bounded by [`max_message_size`](Self::max_message_size).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Most frames one message may be split into, empty continuation frames included.
    /// Default: 131,072.
    ///
    /// Without it a peer could keep a message open forever with empty fragments. The default
    /// lets 4 MiB arrive in 64-byte fragments, as the conformance suite sends it (close 1009).
    pub fn max_fragments(mut self, count: usize) -> Self {
        self.max_fragments = count;
        self
    }

    /// Most bytes of the opening handshake (request or response head). Default: 8 KiB.
    ///
    /// A server answers a longer request with 431; a client fails the connection.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Most header fields in the opening handshake. Default: 128.
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Bytes the I/O layer reads per call into the connection's read buffer. Default: 8 KiB.
    ///
    /// Larger values cut syscalls for bulk transfers; the buffer is only held while data is
    /// flowing and is released when the connection goes idle.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// How long to wait for the peer's half of the closing handshake, and then for the TCP
    /// connection to end, before giving up on it. Default: 10 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long the opening handshake may take, from the connection's start to the 101
    /// response. Default: 10 s.
    ///
    /// Protects a server from clients that send half a request and wait.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Send a ping this often while the connection is open. Default: off.
    ///
    /// A peer that does not answer within [`pong_timeout`](Self::pong_timeout) is dropped
    /// with close 1011. Keeps NAT and proxy mappings alive and finds dead peers.
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long to wait for the pong to a keep-alive ping. Default: 20 s.
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Close the connection (1001) when nothing at all arrives from the peer for this long.
    /// Default: off.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Bytes of queued outgoing data past which the I/O layer makes senders wait.
    /// Default: 1 MiB.
    ///
    /// Bounds the memory a peer that never reads can make us hold. The queue can exceed it by
    /// at most one message.
    pub fn write_high_water(mut self, bytes: usize) -> Self {
        self.write_high_water = bytes;
        self
    }

    /// Fail the connection (close code 1008) when the peer stops taking what we send: its
    /// write queue has stayed over [`write_high_water`](Self::write_high_water) for this long
    /// while the peer took neither the bytes that were over the mark when the wait began nor
    /// `write_high_water` bytes. Default: 60 s. `None` waits forever.
    ///
    /// Without it a peer that never reads keeps its connection, and the `write_high_water` plus
    /// one message queued for it, for as long as it stays connected. When the timeout fires,
    /// the write queue and the compressor are dropped at once and the connection ends without
    /// a close frame (one could not reach a peer that does not read, and would land in the
    /// middle of a frame); [`close_reason`](crate::Connection::close_reason) reports
    /// [`ProtocolError::SendTimeout`](crate::ProtocolError::SendTimeout) with 1008 (policy
    /// violation: the peer broke the rule that it must read, the server did not fail).
    ///
    /// Why 60 s: a peer that is reading at all takes `write_high_water` (1 MiB by default) in
    /// that time at 140 kbit/s, so only a peer slower than that, and only while the application
    /// queues faster than it reads, is cut; it is far longer than the retransmission back-off
    /// of a brief network outage; and it is the send timeout nginx uses by default. A peer that
    /// never reads holds its memory for at most this long.
    pub fn send_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Answer every ping with a pong carrying the same payload (RFC 6455 §5.5.2). Default: on.
    ///
    /// When off, pings are still reported as events and the application must answer them.
    pub fn auto_pong(mut self, on: bool) -> Self {
        self.auto_pong = on;
        self
    }

    /// Let a server accept unmasked frames from clients. Default: off.
    ///
    /// RFC 6455 §5.1: "a server MUST close the connection upon receiving a frame that is not
    /// masked". Masking protects intermediaries from cache poisoning; switch this on only for
    /// trusted peers inside one host.
    pub fn accept_unmasked(mut self, on: bool) -> Self {
        self.accept_unmasked = on;
        self
    }

    /// Server: report plain HTTP requests to the application instead of refusing them.
    /// Default: off.
    ///
    /// When on, a well-formed `GET` or `HEAD` request that does not ask for a WebSocket
    /// (no `Upgrade: websocket`) comes out as [`Event::Request`](crate::Event::Request) like
    /// an upgrade request, with [`Request::is_upgrade`](crate::Request::is_upgrade) false: HTTP/1.1
    /// with one `Host` header, or HTTP/1.0, and no body. Answer it with
    /// [`Connection::reject`](crate::Connection::reject) and any response (a page, a health
    /// check); a response to `HEAD` goes out without its body. Such a request cannot be
    /// accepted. The head is read with the same parser and limits as an upgrade request.
    ///
    /// When off, such a request is refused with 400 (405 for `HEAD`), as a WebSocket-only
    /// server should.
    pub fn plain_http(mut self, on: bool) -> Self {
        self.plain_http = on;
        self
    }

    /// Offer (client) or accept (server) permessage-deflate, RFC 7692. Default: off here;
    /// the tokio client turns it on by default, as browsers do.
    ///
    /// See [`DeflateConfig`] for the memory each side's compressor state costs.
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// The configured permessage-deflate settings, if the extension is enabled.
    pub fn deflate_config(&self) -> Option<&DeflateConfig> {
        self.deflate.as_ref()
    }

    /// The largest message accepted, in bytes.
    pub fn message_size_limit(&self) -> usize {
        self.max_message_size
    }

    /// The write-queue size past which senders should wait, in bytes.
    pub fn write_high_water_mark(&self) -> usize {
        self.write_high_water
    }

    /// The opening handshake's time limit.
    pub fn handshake_time_limit(&self) -> Duration {
        self.handshake_timeout
    }

    /// The send deadline: how long the write queue may stay over the high-water mark without
    /// the peer taking from it (see [`send_timeout`](Self::send_timeout)).
    pub fn send_time_limit(&self) -> Option<Duration> {
        self.send_timeout
    }

    /// The closing handshake's time limit.
    pub fn close_time_limit(&self) -> Duration {
        self.close_timeout
    }

    /// The configured read-buffer size, in bytes.
    pub fn read_buffer_len(&self) -> usize {
        self.read_buffer_size
    }

    /// Check that the values fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_frame_size == 0 {
            return Err(ConfigError::new("max_frame_size must be at least 1"));
        }
        if self.max_message_size == 0 {
            return Err(ConfigError::new("max_message_size must be at least 1"));
        }
        if self.max_fragments == 0 {
            return Err(ConfigError::new("max_fragments must be at least 1"));
        }
        if self.max_header_bytes < 256 {
            return Err(ConfigError::new("max_header_bytes must be at least 256"));
        }
        if self.max_headers < 8 {
            return Err(ConfigError::new("max_headers must be at least 8"));
        }
        if self.read_buffer_size < 128 {
            return Err(ConfigError::new("read_buffer_size must be at least 128"));
        }
        if self.ping_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("ping_interval must not be zero"));
        }
        if self.send_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("send_timeout must not be zero"));
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("idle_timeout must not be zero"));
        }
        if let Some(deflate) = &self.deflate {
            deflate.validate()?;
        }
        Ok(())
    }
}
