//! A global allocator that counts, and the regions it measures.
//!
//! Every allocation is counted twice: for the thread that makes it and for the process. Which
//! figure a test can trust depends on what else runs:
//!
//! - [`measure`] counts the calling thread only. Tests in one binary run in parallel threads
//!   (`cargo test`), so this is the figure to use for code that runs on the caller's thread,
//!   such as the sans-I/O engine and its codecs. What other threads allocate does not count;
//!   a block allocated on this thread and freed on another still counts as held here.
//! - [`measure_process`] and [`process`] count every thread: what a tokio runtime's workers
//!   hold, for example. They are exact only when nothing else runs in the process, so give
//!   such a test a binary of its own (a `tests/*.rs` file with that one test), or run it under
//!   `cargo nextest` (a process per test) or with `--test-threads=1`.
//!
//! A `realloc` is counted as a resize: the peak sees the larger of the two sizes, not their
//! sum. That is what happens to memory when the block grows in place, and with glibc for blocks
//! above its mmap threshold (at most 32 MiB), which it moves with `mremap` without copying.
//! A smaller block that has to move is copied, so both sizes are briefly held; the counts do
//! not show that.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicIsize, AtomicU64, Ordering},
};

/// The system allocator, counting the bytes held (now and at the peak) and the allocations,
/// per thread and for the process.
///
/// Install it in a test binary, then measure with [`measure`] or [`measure_process`]:
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: wsx_testkit::CountingAlloc = wsx_testkit::CountingAlloc;
///
/// fn main() {
///     assert!(wsx_testkit::is_installed());
/// }
/// ```
///
/// Sizes are the sizes requested (`Layout::size`), without the system allocator's own
/// rounding and headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

/// What a region allocated: see [`measure`] and [`measure_process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes held at the end that were not held at the start (negative when the region freed
    /// more than it allocated).
    pub retained: isize,
    /// The most bytes held at any moment of the region, above what was held at its start.
    pub peak: usize,
    /// Calls to `alloc`, `alloc_zeroed` and `realloc` in the region.
    pub allocations: u64,
}

/// The process's counts since it started: see [`process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Bytes held now.
    pub held: usize,
    /// The most bytes held at any moment.
    pub peak: usize,
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub allocations: u64,
}

/// One thread's or the process's counts.
#[derive(Debug, Clone, Copy)]
struct Counts {
    held: isize,
    peak: isize,
    allocations: u64,
}

static PROCESS_HELD: AtomicIsize = AtomicIsize::new(0);
static PROCESS_PEAK: AtomicIsize = AtomicIsize::new(0);
static PROCESS_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's counts. A `const` `Cell` of plain numbers has no destructor and needs no
    /// lazy set-up, so the allocator can reach it at any point of the thread's life without
    /// allocating.
    static THREAD: Cell<Counts> = const { Cell::new(Counts { held: 0, peak: 0, allocations: 0 }) };
}

/// Count `delta` bytes more (or fewer) held, and one allocation if `allocation`.
fn record(delta: isize, allocation: bool) {
    let held = PROCESS_HELD.fetch_add(delta, Ordering::Relaxed) + delta;
    PROCESS_PEAK.fetch_max(held, Ordering::Relaxed);
    PROCESS_ALLOCATIONS.fetch_add(u64::from(allocation), Ordering::Relaxed);
    // Fails only while the thread's locals are being torn down (never for this one, which has
    // no destructor); the process counts still hold the bytes.
    let _ = THREAD.try_with(|counts| {
        let mut c = counts.get();
        c.held += delta;
        c.peak = c.peak.max(c.held);
        c.allocations += u64::from(allocation);
        counts.set(c);
    });
}

fn size(bytes: usize) -> isize {
    // No allocation exceeds `isize::MAX` bytes (`Layout` guarantees it).
    bytes as isize
}

// SAFETY: every call goes to `System` with the caller's arguments unchanged, so `System`
// upholds the `GlobalAlloc` contract; counting touches atomics and a destructor-free
// thread-local, and neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees for `alloc`.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            record(size(layout.size()), true);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees for `alloc_zeroed`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record(size(layout.size()), true);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees for `dealloc`.
        unsafe { System.dealloc(ptr, layout) };
        record(-size(layout.size()), false);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees for `realloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            record(size(new_size) - size(layout.size()), true);
        }
        new
    }
}

fn thread_counts() -> Counts {
    THREAD.with(Cell::get)
}

/// Whether [`CountingAlloc`] is this binary's global allocator (it saw an allocation made to
/// find out). Without it every count stays zero, and a bound on memory would pass for nothing.
pub fn is_installed() -> bool {
    let before = thread_counts().allocations;
    drop(std::hint::black_box(Vec::<u8>::with_capacity(1)));
    thread_counts().allocations != before
}

fn assert_installed() {
    assert!(
        is_installed(),
        "wsx_testkit::CountingAlloc is not the global allocator of this test binary: add \
         `#[global_allocator] static ALLOCATOR: wsx_testkit::CountingAlloc = wsx_testkit::CountingAlloc;`"
    );
}

/// Run `f` and return what it allocated on this thread (see the module docs for what other
/// threads do to the figures). Regions may nest.
///
/// # Panics
///
/// If [`CountingAlloc`] is not the global allocator.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    assert_installed();
    let start = thread_counts();
    THREAD.with(|counts| counts.set(Counts { peak: start.held, ..start }));
    let value = f();
    let end = thread_counts();
    // An enclosing region keeps its own peak.
    THREAD.with(|counts| counts.set(Counts { peak: start.peak.max(end.peak), ..end }));
    (value, usage(start, end))
}

/// Run `f` and return what the whole process allocated meanwhile, on every thread: exact only
/// if nothing else runs (see the module docs). Regions may nest.
///
/// # Panics
///
/// If [`CountingAlloc`] is not the global allocator.
pub fn measure_process<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    assert_installed();
    let held = PROCESS_HELD.load(Ordering::Relaxed);
    let outer_peak = PROCESS_PEAK.swap(held, Ordering::Relaxed);
    let start = Counts { held, peak: outer_peak, allocations: PROCESS_ALLOCATIONS.load(Ordering::Relaxed) };
    let value = f();
    let end = Counts {
        held: PROCESS_HELD.load(Ordering::Relaxed),
        peak: PROCESS_PEAK.fetch_max(outer_peak, Ordering::Relaxed),
        allocations: PROCESS_ALLOCATIONS.load(Ordering::Relaxed),
    };
    (value, usage(start, end))
}

fn usage(start: Counts, end: Counts) -> Usage {
    Usage {
        retained: end.held - start.held,
        // The peak was set to the held count at the start, and only rises.
        peak: usize::try_from(end.peak - start.held).unwrap_or(0),
        allocations: end.allocations - start.allocations,
    }
}

/// The process's counts since it started (every thread): for a test that samples the heap
/// while an asynchronous server runs, where no closure spans the region.
///
/// # Panics
///
/// If [`CountingAlloc`] is not the global allocator.
pub fn process() -> Totals {
    assert_installed();
    Totals {
        held: usize::try_from(PROCESS_HELD.load(Ordering::Relaxed)).unwrap_or(0),
        peak: usize::try_from(PROCESS_PEAK.load(Ordering::Relaxed)).unwrap_or(0),
        allocations: PROCESS_ALLOCATIONS.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_a_region_keeps_and_frees() {
        let (kept, usage) = measure(|| {
            let kept = vec![1u8; 1000];
            drop(std::hint::black_box(vec![2u8; 5000]));
            kept
        });
        assert_eq!(usage, Usage { retained: 1000, peak: 6000, allocations: 2 });
        let ((), usage) = measure(|| drop(kept));
        assert_eq!(usage, Usage { retained: -1000, peak: 0, allocations: 0 });
    }

    #[test]
    fn nested_regions_keep_the_outer_peak() {
        let ((), outer) = measure(|| {
            drop(std::hint::black_box(vec![0u8; 10_000]));
            let ((), inner) = measure(|| drop(std::hint::black_box(vec![0u8; 100])));
            assert_eq!(inner.peak, 100);
        });
        assert_eq!(outer.peak, 10_000);
        // The two vectors, and the inner region's check that the allocator is installed.
        assert_eq!(outer.allocations, 3);
    }

    #[test]
    fn realloc_is_a_resize() {
        let ((), usage) = measure(|| {
            let mut v = Vec::<u8>::with_capacity(1000);
            v.reserve_exact(3000);
            assert!(v.capacity() >= 3000);
            drop(std::hint::black_box(v));
        });
        assert_eq!(usage.retained, 0);
        assert_eq!(usage.allocations, 2);
        // 3000 (or the capacity the vector chose), not 1000 + 3000.
        assert!((3000..4000).contains(&usage.peak), "{usage:?}");
    }

    #[test]
    fn other_threads_count_for_the_process_only() {
        let (((), thread), process) = measure_process(|| {
            measure(|| {
                std::thread::spawn(|| drop(std::hint::black_box(vec![0u8; 1 << 20]))).join().unwrap();
            })
        });
        assert!(thread.peak < 1 << 20, "{thread:?}");
        assert!(process.peak >= 1 << 20, "{process:?}");
        assert!(super::process().peak >= 1 << 20);
    }
}
