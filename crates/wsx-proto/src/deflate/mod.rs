//! permessage-deflate (RFC 7692): negotiation, and per-connection compressor state.
//!
//! - [`negotiate`]: the `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1), the client's offer,
//!   the server's choice among offers and the client's check of the answer (RFC 7692 §5, §7.1).
//! - [`codec`]: [`Deflate`], one compressor and one decompressor per connection (§7.2).
//!
//! # Window bits and the 8-bit window
//!
//! Both window parameters accept 8..=15 as RFC 7692 §7.1.2 requires. No deflate backend we can
//! use takes a raw window of 8 bits: zlib-rs refuses a raw `windowBits` of 8 (flate2 asserts
//! 9..=15) and turns 8 into 9 for zlib-wrapped streams (as C zlib does, "until 256-byte window
//! bug fixed"). What matters on the wire is the match distance, though, and zlib-rs (like zlib)
//! never emits a distance above `MAX_DIST = window size − 262` (checked by an always-on assert
//! in its `tally_dist`): a 9-bit compressor emits distances of at most 250, inside the 256-byte
//! window of an agreed 8. So when 8 is agreed for our direction we compress with 9 bits and
//! still honour it; `codec`'s tests decode our output with an independent decoder and check
//! every distance against the agreed window. Nothing ever needs declining for window bits,
//! which keeps Autobahn 13.3 and 13.5 (which ask for 8) compressed in both directions.
//!
//! The decompressor always runs with a 15-bit window: zlib-rs allocates the same 46 KiB for
//! every size, a larger window accepts every stream a smaller one does, and `Inflate::reset`
//! always returns to 15 bits (in place, without allocating).
//!
//! # Backend
//!
//! zlib-rs through its own API, chosen by `benches/deflate.rs`: against miniz_oxide it
//! compresses 1 KiB JSON messages about 14 times faster (miniz pays a large fixed cost per sync
//! flush) and 16 KiB ones twice as fast, and inflates them 3.5 and 1.1 times as fast.
//! miniz_oxide also always compresses with a 32 KiB window, so it could not honour a
//! `max_window_bits` below 15. We call zlib-rs directly rather than through flate2 (which it
//! replaced at no cost in speed) for `memLevel`, which flate2 does not expose: see
//! [`DeflateConfig::mem_level`].
//!
//! zlib-rs is built without its `std` feature, as flate2 built it. `std` turns on run-time CPU
//! detection (AVX2 match comparison, hash sliding and copies): inflating gets 10–20 % faster
//! and a server's 1 KiB echo takes 9 % fewer instructions, but that echo is no faster on the
//! clock, and compressing 1 KiB is about 10 % slower (an out-of-line AVX2 compare for every
//! match candidate, where most matches are short).

mod codec;
mod negotiate;

pub(crate) use codec::{Deflate, InflateError, compress_alone};
pub(crate) use negotiate::{client_accept, client_offer, server_negotiate};

use crate::error::ConfigError;

/// Bytes through permessage-deflate since they were last taken (see
/// [`Connection::take_deflate_stats`](crate::Connection::take_deflate_stats)): payload bytes
/// only, no frame headers, for compressed messages only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateStats {
    /// Received compressed messages: their payload as it arrived.
    pub received_compressed: u64,
    /// The same messages after decompression.
    pub received_decompressed: u64,
    /// Messages given to the compressor (or sent as shared pre-compressed frames): their size.
    pub sent_uncompressed: u64,
    /// What went out for them: compressed, or as they were when compression did not shrink them.
    pub sent_compressed: u64,
}

impl DeflateStats {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        (self.received_compressed | self.received_decompressed | self.sent_uncompressed | self.sent_compressed) == 0
    }
}

/// permessage-deflate settings for one side of a connection.
///
/// On a server these are the parameters it is willing to accept; on a client, what it offers.
///
/// Memory, per connection, with the defaults: the compressor takes about 273 KiB at 15 window
/// bits (147 KiB at 8 or 9; see [`server_max_window_bits`](Self::server_max_window_bits) and
/// [`mem_level`](Self::mem_level)), allocated when the first message at or above
/// [`threshold`](Self::threshold) is sent; the decompressor about 46 KiB whatever the window,
/// allocated when the first compressed message arrives. Both are then kept for the life of the
/// connection and reused for every message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    pub(crate) server_no_context_takeover: bool,
    pub(crate) client_no_context_takeover: bool,
    pub(crate) server_max_window_bits: u8,
    pub(crate) client_max_window_bits: u8,
    pub(crate) level: u32,
    pub(crate) mem_level: u8,
    pub(crate) threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
            mem_level: DEFAULT_MEM_LEVEL,
            threshold: 1024,
        }
    }
}

impl DeflateConfig {
    /// Make the server reset its compressor after every message (RFC 7692 §7.1.1.1).
    /// Default: off.
    ///
    /// A client sends `server_no_context_takeover` in its offer and fails the connection if the
    /// server does not agree. A server always sends it in its answer and resets its own
    /// compressor. Either way each server message is compressed on its own: worse ratios for
    /// streams of similar small messages, and a reset per message (zlib-rs clears its 128 KiB
    /// hash table), but no saving in memory, since the compressor state stays allocated.
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Make the client reset its compressor after every message (RFC 7692 §7.1.1.2).
    /// Default: off.
    ///
    /// A client resets its own compressor and says so in its offer. A server always sends
    /// `client_no_context_takeover` in its answer, which binds the client. Same trade-off as
    /// [`server_no_context_takeover`](Self::server_no_context_takeover), on the other side.
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Largest LZ77 window the server may compress with, as a base-2 logarithm: 8..=15
    /// (256 B to 32 KiB). Default: 15.
    ///
    /// A client below 15 offers `server_max_window_bits`, and fails the connection if the
    /// server answers a larger value. A server uses the smaller of this and the client's
    /// request, and announces it. Memory: the server's compressor takes about
    /// `4 × 2^bits + 145 KiB` at the default [`mem_level`](Self::mem_level) (273 KiB at 15,
    /// 161 KiB at 12, 147 KiB at 8 and 9, since 8 runs as 9; see the module docs). The client's
    /// decompressor takes 46 KiB whatever the value.
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits;
        self
    }

    /// Largest LZ77 window the client may compress with, as a base-2 logarithm: 8..=15
    /// (256 B to 32 KiB). Default: 15.
    ///
    /// A client always offers `client_max_window_bits` (with this value when below 15) so the
    /// server may lower it, and compresses with what the server answers. A server below 15
    /// answers with the smaller of this and the client's value, and declines offers that do not
    /// let it limit the client's window. Memory: the client's compressor as for
    /// [`server_max_window_bits`](Self::server_max_window_bits); the server's decompressor is
    /// 46 KiB whatever the value.
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits;
        self
    }

    /// Compression level of this side's compressor, 0..=9 as in zlib. Default: 1 (fastest).
    ///
    /// 0 stores the data without compressing it, 9 compresses best and slowest. Costs CPU
    /// only: the compressor's memory does not depend on it. From level 2 up, the
    /// [`mem_level`](Self::mem_level) matters too.
    pub fn level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// Memory level of this side's compressor, 1..=9 as zlib's `memLevel`. Default: 5
    /// (zlib's is 8).
    ///
    /// It sizes the compressor's block buffers, `7 × 2^(mem_level + 6)` bytes: the whole
    /// compressor then takes, at 15 window bits, 260 KiB at 1, 266 KiB at 4, 273 KiB at 5,
    /// 371 KiB at 8 and 483 KiB at 9. The rest is the window (4 bytes per window byte), about
    /// 3 KiB of state, and a 128 KiB hash table whose size zlib-rs fixes (in C zlib `memLevel`
    /// sizes it too). That table is what each message touches all over, so a lower level saves
    /// memory, not cache misses.
    ///
    /// At [`level`](Self::level) 1, messages are coded with the fixed Huffman codes, straight
    /// into the output, so output and speed are the same at every memory level. From level 2 up
    /// a block ends when the buffers fill, and each needs its own code tables: at level 6, 16 KiB
    /// JSON messages come
    /// out 1 % larger at 4 and 11 % larger at 1 than at 5, which loses nothing against 8 up to
    /// 16 KiB and 0.5–0.7 % from 64 KiB (levels 6 and 9). Those levels also clear
    /// `3 × 2^(mem_level + 6)` bytes of the buffers per message: 6 KiB at 5, 48 KiB at 8.
    pub fn mem_level(mut self, level: u8) -> Self {
        self.mem_level = level;
        self
    }

    /// Smallest message, in bytes, that this side compresses. Default: 1024.
    ///
    /// Smaller messages are sent uncompressed (RFC 7692 allows any message to be sent that
    /// way): deflate saves little on them and costs a flush and CPU per message. 0 compresses
    /// every message. A connection whose messages all stay below it never allocates a
    /// compressor.
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Check the values (window bits in 8..=15, level in 0..=9, memory level in 1..=9).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&self.server_max_window_bits) {
            return Err(ConfigError::new("deflate server_max_window_bits must be in 8..=15"));
        }
        if !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&self.client_max_window_bits) {
            return Err(ConfigError::new("deflate client_max_window_bits must be in 8..=15"));
        }
        if self.level > 9 {
            return Err(ConfigError::new("deflate level must be in 0..=9"));
        }
        if !(MIN_MEM_LEVEL..=MAX_MEM_LEVEL).contains(&self.mem_level) {
            return Err(ConfigError::new("deflate mem_level must be in 1..=9"));
        }
        Ok(())
    }
}

/// Smallest window size RFC 7692 §7.1.2 allows, as a base-2 logarithm.
const MIN_WINDOW_BITS: u8 = 8;
/// Largest window size (and the default), as a base-2 logarithm.
const MAX_WINDOW_BITS: u8 = 15;
/// Smallest memory level zlib takes.
const MIN_MEM_LEVEL: u8 = 1;
/// Largest memory level zlib takes.
const MAX_MEM_LEVEL: u8 = 9;
/// The default memory level: the smallest that costs no ratio on messages up to 16 KiB (see
/// `DeflateConfig::mem_level`).
const DEFAULT_MEM_LEVEL: u8 = 5;

/// The parameters both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) server_no_context_takeover: bool,
    pub(crate) client_no_context_takeover: bool,
    pub(crate) server_max_window_bits: u8,
    pub(crate) client_max_window_bits: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validate() {
        assert!(DeflateConfig::default().validate().is_ok());
        let all = DeflateConfig::default()
            .server_no_context_takeover(true)
            .client_no_context_takeover(true)
            .server_max_window_bits(8)
            .client_max_window_bits(8)
            .level(9)
            .mem_level(1)
            .threshold(0);
        assert!(all.validate().is_ok());
        assert!(DeflateConfig::default().server_max_window_bits(7).validate().is_err());
        assert!(DeflateConfig::default().server_max_window_bits(16).validate().is_err());
        assert!(DeflateConfig::default().client_max_window_bits(0).validate().is_err());
        assert!(DeflateConfig::default().client_max_window_bits(16).validate().is_err());
        assert!(DeflateConfig::default().level(10).validate().is_err());
        assert!(DeflateConfig::default().mem_level(9).validate().is_ok());
        assert!(DeflateConfig::default().mem_level(0).validate().is_err());
        assert!(DeflateConfig::default().mem_level(10).validate().is_err());
    }
}
