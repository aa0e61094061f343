//! Test helpers shared by the wsx crates, so that each test does not write its own:
//!
//! - [`CountingAlloc`]: the system allocator, counting the bytes held (now and at the peak) and
//!   the allocations made, per thread and for the whole process. Install it as the
//!   `#[global_allocator]` of a test binary, then measure a region with [`measure`] (this
//!   thread only: reliable while other tests run in parallel) or [`measure_process`] (every
//!   thread: reliable only when nothing else runs in the process).
//! - [`redis::RedisServer`]: a `redis-server` of the test's own on a free loopback port.
//! - [`Rng`]: a small seeded PRNG (SplitMix64) for test data, fuzz seeds and the like: the same
//!   seed gives the same bytes on every platform and run.
//! - `Pki` (feature `pki`): a CA of the test's own and a leaf certificate it signed, as PEM.
//!
//! ```
//! use wsx_testkit::{CountingAlloc, Rng, measure};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAlloc = CountingAlloc;
//!
//! fn main() {
//!     let data = Rng::new(7).bytes(1000);
//!     let (copy, usage) = measure(|| data.clone());
//!     assert_eq!((usage.retained, usage.peak, usage.allocations), (1000, 1000, 1));
//!     # drop(copy);
//! }
//! ```
//!
//! This crate depends on nothing without the `pki` feature (rcgen), and on neither `wsx` nor
//! `wsx-proto`, so that `wsx-proto` can take it as a dev-dependency. It is never published.

#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod redis;

#[cfg(feature = "pki")]
mod pki;

mod counting;
mod rng;

pub use counting::{CountingAlloc, Totals, Usage, is_installed, measure, measure_process, process};
#[cfg(feature = "pki")]
pub use pki::Pki;
pub use rng::Rng;

/// This crate's own tests measure with the allocator they test.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;
