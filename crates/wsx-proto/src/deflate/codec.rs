//! One connection's compressor and decompressor (RFC 7692 §7.2), on zlib-rs.
//!
//! Sending: each message is deflated with the connection's compressor and ended with a sync
//! flush, whose trailing `00 00 ff ff` is cut off (§7.2.1). Receiving: frame payloads are
//! inflated as they come, and `00 00 ff ff` is fed after the last one (§7.2.2). Both states are
//! created on first use and then reused for every message; the only allocation on the hot path
//! is growing the caller's output buffer.

use std::{cell::RefCell, mem::MaybeUninit};

use bytes::{Bytes, BytesMut};
use zlib_rs::{DeflateFlush, Inflate, InflateFlush, Method, Status, Strategy};

use super::{DeflateConfig, MAX_MEM_LEVEL, MAX_WINDOW_BITS, MIN_MEM_LEVEL, Params};
use crate::Role;

/// The end of the empty stored block a sync flush emits: cut from the end of every message we
/// compress, and fed after every message we inflate (RFC 7692 §7.2.1, §7.2.2).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Smallest window zlib-rs compresses raw deflate with, as a base-2 logarithm. An agreed 8
/// runs as 9, which zlib-rs keeps within 256-byte distances (see the module docs of `deflate`).
const MIN_BACKEND_WINDOW_BITS: u8 = 9;

/// Smallest step, in bytes, by which `decompress` grows its output buffer.
const MIN_GROW: usize = 4 << 10;

/// Why inflating failed.
#[derive(Debug)]
pub(crate) enum InflateError {
    /// The output passed the limit.
    TooBig,
    /// The compressed data is invalid.
    Invalid(String),
}

/// A connection's compressor and decompressor.
///
/// After `decompress` returns an error the decompressor is in an undefined state: the
/// connection is failing, and must not feed it again.
pub(crate) struct Deflate {
    encoder: Encoder,
    decoder: Decoder,
    threshold: usize,
    /// This side's agreed window, as a base-2 logarithm (8..=15).
    window_bits: u8,
    /// The compressed form of the frame being sent, reused from message to message; empty
    /// between calls, and released when the connection goes idle.
    pub(crate) scratch: BytesMut,
    /// Bytes compressed and decompressed since the driver last took them.
    pub(crate) stats: super::DeflateStats,
}

/// What zlib-rs's inflater holds once created (measured by the codec's `state_memory` test).
const INFLATER_BYTES: usize = 46 << 10;
/// What the compressor holds once created, at a 15-bit window and `mem_level` 5 (the default).
const COMPRESSOR_BYTES: usize = 273 << 10;

impl Deflate {
    /// About how many heap bytes the compression states hold: each counted once created, at
    /// the default settings' measured size; the scratch buffer at its capacity.
    pub(crate) fn memory_held(&self) -> usize {
        let inflater = if self.decoder.state.is_some() { INFLATER_BYTES } else { 0 };
        let compressor = if self.encoder.state.is_some() { COMPRESSOR_BYTES } else { 0 };
        inflater + compressor + self.scratch.capacity()
    }

    /// Compressor and decompressor for `role` with the agreed `params`.
    ///
    /// Allocates nothing yet: each state is created on first use (see [`DeflateConfig`] for
    /// the sizes).
    pub(crate) fn new(params: Params, role: Role, config: &DeflateConfig) -> Self {
        let (own_reset, own_bits) = match role {
            Role::Client => (params.client_no_context_takeover, params.client_max_window_bits),
            Role::Server => (params.server_no_context_takeover, params.server_max_window_bits),
        };
        let peer_resets = match role {
            Role::Client => params.server_no_context_takeover,
            Role::Server => params.client_no_context_takeover,
        };
        Self {
            encoder: Encoder::new(config, own_bits, own_reset),
            decoder: Decoder { state: None, peer_resets, has_input: false, ended: false },
            threshold: config.threshold,
            window_bits: own_bits.min(MAX_WINDOW_BITS),
            scratch: BytesMut::new(),
            stats: super::DeflateStats::default(),
        }
    }

    /// Whether a message of `len` bytes compressed at a 15-bit window with no context (see
    /// [`compress_alone`]) is valid for this connection's peer: always at the full window;
    /// with a smaller one, only if the message fits the window, since back-references then
    /// cannot reach further than the message itself.
    pub(crate) fn accepts_alone(&self, len: usize) -> bool {
        self.window_bits >= MAX_WINDOW_BITS || len <= 1 << self.window_bits
    }

    /// Make the compressor forget what it sent, if it remembers anything: called after a
    /// message compressed elsewhere went out (a shared [`Prepared`](crate::Prepared) frame), so
    /// that the next message does not refer to data the peer's window no longer ends with.
    pub(crate) fn forget_history(&mut self) {
        if self.encoder.dirty {
            self.reset_compressor();
        }
    }

    /// Whether a message of `len` bytes should be compressed (the threshold).
    pub(crate) fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Compress one piece of a message being sent and append it to `out`. `fin` ends the
    /// message: the output is then flushed and the trailing 00 00 ff ff removed (§7.2.1).
    ///
    /// A piece before the last may append nothing (the compressor holds on to input until it
    /// has a block's worth or the message ends); its frame is then sent empty, which is
    /// valid. Whatever is appended must be sent: the compressor's window now holds this data,
    /// and later messages may refer to it. Pieces of one message must not be interleaved with
    /// another message's.
    pub(crate) fn compress(&mut self, input: &[u8], fin: bool, out: &mut BytesMut) {
        self.encoder.compress(input, fin, out);
    }

    /// Forget the compressor's history, so that the next message refers to nothing sent
    /// before. Always allowed: the peer's decompressor keeps its window but is simply never
    /// referred to it again. Used when a message is sent uncompressed after all.
    pub(crate) fn reset_compressor(&mut self) {
        if let Some(state) = self.encoder.state.as_mut() {
            state.reset();
        }
        self.encoder.dirty = false;
    }

    /// Inflate one frame's payload of a received message and append it to `out`. `fin` ends
    /// the message (the 00 00 ff ff trailer is appended internally, §7.2.2). Fails with
    /// `TooBig` as soon as `out` would grow past `limit` bytes in total.
    ///
    /// `limit` bounds `out.len()`, counting what `out` held before the call: pass the same
    /// buffer for every frame of a message and the message limit. `out`'s capacity never grows
    /// past `limit` either, so a compression bomb costs at most `limit` bytes of memory.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.decoder.decompress(input, fin, out, limit)
    }
}

/// This side's compressor.
struct Encoder {
    /// Created on the first compressed message, then reused.
    state: Option<zlib_rs::Deflate>,
    /// What `state` is created with: raw deflate, the window the backend runs with (the agreed
    /// one, or 9 for an agreed 8), and the configured level and memory level.
    config: zlib_rs::DeflateConfig,
    /// This side agreed not to take context over: reset after every message (§7.1.1).
    reset: bool,
    /// The compressor's window holds data sent since it was last reset.
    dirty: bool,
}

/// Compress `input` as a whole message that refers to nothing before it, within a 15-bit
/// window, at the default level, and append it to `out` (the §7.2.1 trailer cut off). The
/// compressor is kept per thread and reset after each message.
pub(crate) fn compress_alone(input: &[u8], out: &mut BytesMut) {
    thread_local! {
        static ALONE: RefCell<Encoder> =
            RefCell::new(Encoder::new(&DeflateConfig::default(), MAX_WINDOW_BITS, true));
    }
    ALONE.with_borrow_mut(|encoder| encoder.compress(input, true, out));
}

impl Encoder {
    fn new(config: &DeflateConfig, window_bits: u8, reset: bool) -> Self {
        Self {
            state: None,
            config: zlib_rs::DeflateConfig {
                // Clamped so that zlib-rs accepts them even from an unvalidated config
                // (`DeflateConfig::validate` checks the same ranges).
                level: config.level.min(9) as i32,
                method: Method::Deflated,
                // Negative: raw deflate, no zlib header or trailer (RFC 7692 §7.2.1).
                window_bits: -i32::from(window_bits.clamp(MIN_BACKEND_WINDOW_BITS, MAX_WINDOW_BITS)),
                mem_level: i32::from(config.mem_level.clamp(MIN_MEM_LEVEL, MAX_MEM_LEVEL)),
                strategy: Strategy::Default,
            },
            reset,
            dirty: false,
        }
    }

    fn compress(&mut self, input: &[u8], fin: bool, out: &mut BytesMut) {
        let config = self.config;
        // Invariant: zlib-rs panics only on parameters it refuses (`Deflate::new` clamped them
        // into range) or when it cannot allocate, which aborts anywhere else too.
        let state = self.state.get_or_insert_with(|| zlib_rs::Deflate::new_with_config(config));
        let start = out.len();
        let flush = if fin { DeflateFlush::SyncFlush } else { DeflateFlush::NoFlush };
        let mut rest = input;
        loop {
            if out.capacity() - out.len() < 64 {
                // About what text compresses to; the loop comes back for more if needed.
                out.reserve(rest.len() / 2 + 64);
            }
            let (offered, written, (status, consumed)) = fill_spare(out, usize::MAX, |spare| {
                let (before_in, before_out) = (state.total_in(), state.total_out());
                let status = state.compress_uninit(rest, spare, flush);
                (state.total_out() - before_out, (status, state.total_in() - before_in))
            });
            // Invariant: deflate fails only on a stream that was finished or set up with bad
            // parameters; this one is never finished and was built from checked ones. No
            // progress (nothing to flush) comes back as Ok(BufError).
            status.expect("deflate on a valid, unfinished stream");
            rest = rest.get(usize::try_from(consumed).unwrap_or(usize::MAX)..).unwrap_or_default();
            // Done once the input is in and the compressor had room to spare: with a sync
            // flush that means the flush is complete (zlib's "avail_out != 0").
            if rest.is_empty() && written < offered {
                break;
            }
        }
        if fin {
            if out[start..].ends_with(&TRAILER) {
                // §7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end."
                out.truncate(out.len() - TRAILER.len());
            } else if out.len() == start {
                // An empty message right after another: zlib has nothing to flush (Z_BUF_ERROR)
                // and writes nothing. The stream is byte-aligned after the last sync flush, so
                // send what the flush would have: an empty stored block, less the trailer.
                out.extend_from_slice(&[0x00]);
            } else {
                // A sync flush that wrote anything ends with the trailer.
                debug_assert!(false, "sync flush output without 00 00 ff ff");
            }
            if self.reset {
                state.reset();
            }
        }
        self.dirty = !(fin && self.reset);
    }
}

/// The decompressor for the peer's messages.
struct Decoder {
    /// Created on the first compressed message, then reused. Always a 15-bit window: it
    /// inflates whatever the peer's agreed window, costs zlib-rs the same memory as smaller
    /// ones, and is what zlib-rs's `Inflate::reset` returns to.
    state: Option<Inflate>,
    /// The peer agreed not to take context over: reset after every message (§7.1.1). Not
    /// required (the peer never refers back), but it is cheap and keeps a bad message from
    /// spoiling the next.
    peer_resets: bool,
    /// The current message had payload bytes (see `decompress`).
    has_input: bool,
    /// The current message's deflate stream ended with a block marked BFINAL (§7.2.3.4).
    ended: bool,
}

impl Decoder {
    fn decompress(&mut self, input: &[u8], fin: bool, out: &mut BytesMut, limit: usize) -> Result<(), InflateError> {
        // Raw deflate (no zlib header), 15-bit window.
        let state = self.state.get_or_insert_with(|| Inflate::new(false, MAX_WINDOW_BITS));
        let mut result = Ok(());
        if !input.is_empty() && !self.ended {
            self.has_input = true;
            result = inflate(state, input, out, limit, &mut self.ended);
        }
        if fin {
            // An empty compressed message has no payload at all to end: the trailer alone is
            // not a complete block and would leave the stream mid-header, so it is skipped.
            if result.is_ok() && self.has_input && !self.ended {
                result = inflate(state, &TRAILER, out, limit, &mut self.ended);
            }
            // A stream that ended (BFINAL) cannot go on; the peer starts the next message on
            // a fresh one, so context takeover is over for it anyway.
            if self.peer_resets || self.ended {
                state.reset(false);
            }
            self.has_input = false;
            self.ended = false;
        }
        result
    }
}

/// Inflate `input` into `out`, keeping `out.len()` and `out.capacity()` within `limit`. Sets
/// `ended` at the end of the deflate stream; anything after it is ignored (RFC 7692 §7.2.3.4
/// has a sender pad a BFINAL block with an empty stored block header).
fn inflate(
    state: &mut Inflate,
    mut input: &[u8],
    out: &mut BytesMut,
    limit: usize,
    ended: &mut bool,
) -> Result<(), InflateError> {
    loop {
        let room = limit.saturating_sub(out.len());
        let (before_in, before_out) = (state.total_in(), state.total_out());
        let (offered, status) = if room == 0 {
            // At the limit: any further output byte makes the message too big. Probe with a
            // one-byte buffer on the stack rather than grow `out`.
            let mut probe = [MaybeUninit::uninit()];
            let status = state.decompress_uninit(input, &mut probe, InflateFlush::NoFlush);
            if state.total_out() != before_out {
                return Err(InflateError::TooBig);
            }
            (1, status)
        } else {
            reserve_bounded(out, room, input.len());
            let (offered, _, status) = fill_spare(out, room, |spare| {
                let status = state.decompress_uninit(input, spare, InflateFlush::NoFlush);
                (state.total_out() - before_out, status)
            });
            (offered, status)
        };
        // zlib's message names the fault ("invalid distance too far back", ...); a raw stream
        // never needs a dictionary, so every error is bad data.
        let status =
            status.map_err(|e| InflateError::Invalid(state.error_message().unwrap_or(e.as_str()).to_owned()))?;
        let consumed = usize::try_from(state.total_in() - before_in).unwrap_or(usize::MAX);
        let written = usize::try_from(state.total_out() - before_out).unwrap_or(usize::MAX);
        input = input.get(consumed..).unwrap_or_default();
        if status == Status::StreamEnd {
            *ended = true;
            return Ok(());
        }
        if written < offered {
            // Room to spare: everything inflatable so far is out.
            if input.is_empty() {
                return Ok(());
            }
            if consumed == 0 {
                // Input left, room to spare, no progress: cannot happen with zlib's inflate;
                // refuse rather than spin.
                return Err(InflateError::Invalid("inflate made no progress".to_owned()));
            }
        }
    }
}

/// Make sure `out` has spare capacity, never taking its capacity past `out.len() + room`.
///
/// Grows by doubling (amortized O(1) per byte), by at least [`MIN_GROW`] and four times the
/// compressed `input_len` (a typical ratio for text), and exactly up to the limit once doubling
/// would pass it. `BytesMut::reserve` may double a buffer, so that last step goes through
/// `Vec::reserve_exact`, which reallocates the same block: glibc moves a block of this size
/// with `mremap`, without copying it. (Copying into a fresh buffer held the old one and the new
/// one at once, up to twice the limit for a compression bomb; issue 16.)
fn reserve_bounded(out: &mut BytesMut, room: usize, input_len: usize) {
    let len = out.len();
    if out.capacity() > len {
        return;
    }
    let grow = len.max(input_len.saturating_mul(4)).max(MIN_GROW).min(room);
    if grow >= len {
        // Doubling gives `len + grow` at most, which fits in the room.
        out.reserve(grow);
    } else {
        // Each conversion keeps the allocation of a buffer that is not shared, as the message
        // buffer never is (a shared one would be copied, as before). Back through `Bytes`,
        // which keeps the spare capacity; it costs a 24-byte allocation, freed at once.
        let mut exact = Vec::from(std::mem::take(out));
        exact.reserve_exact(grow);
        *out = BytesMut::from(Bytes::from(exact));
    }
}

/// Let `fill` write into at most `max` bytes of `out`'s spare capacity, and extend `out` by
/// the count it returns. Returns the size offered, the count written and `fill`'s result.
///
/// `fill` must return how many bytes at the start of the slice it initialized; the deflate
/// backends report exactly that as the growth of `total_out`.
fn fill_spare<T>(
    out: &mut BytesMut,
    max: usize,
    fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> (u64, T),
) -> (usize, usize, T) {
    let spare = out.spare_capacity_mut();
    let offered = spare.len().min(max);
    let (written, result) = fill(&mut spare[..offered]);
    let written = usize::try_from(written).unwrap_or(usize::MAX).min(offered);
    let len = out.len() + written;
    // SAFETY: `len` is at most `out.len() + offered`, within the capacity, and the `written`
    // bytes past the old length were initialized by `fill` (the backend's `total_out` counts
    // the bytes it wrote to the start of the slice).
    unsafe { out.set_len(len) };
    (offered, written, result)
}

#[cfg(test)]
mod tests;
