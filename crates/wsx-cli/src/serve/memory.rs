//! Giving freed heap memory back to the system once the load drops (`--trim-memory`, glibc).
//!
//! glibc's `free` returns memory to the kernel only from the top of a heap, and only once more
//! than 128 KiB is free there. After a burst of connections, one allocation still alive near
//! the top (a long-lived connection's buffer, a runtime structure) pins every page freed below
//! it: the heap in use is back where it was, the RSS stays at the peak (the soak measured
//! this; docs/security.md). `malloc_trim(0)` releases the free pages inside the heap too
//! (glibc 2.8 and later, with `MADV_DONTNEED`), in every arena.
//!
//! A task reads the heap's free bytes (`mallinfo2`) every [`CHECK`] and trims when they have
//! grown by [`MIN_FREED`] over their low since the last trim, that is when that much was freed
//! and not used again (a burst that comes and goes between two looks counts too), and the
//! server is quiet (the heap in use moved less than [`QUIET`] since the previous look: under
//! load a trim stalls workers): once after the load drops, never per connection, at most once per period, and on a blocking thread so
//! that no worker waits for it. Both calls take each arena's lock for a walk of its free
//! chunks; docs/performance.md has their measured cost (microseconds for a look, a few
//! milliseconds for a trim that gives back tens of MiB). On other platforms (and other C
//! libraries) it does nothing.
//!
//! What no trim gives back: the free memory at the top of a thread's arena (each runtime
//! worker allocates from its own). `malloc_trim` walks every arena's free chunks but shrinks the
//! top of the main heap only; a thread arena's top goes back by `free` alone, once it exceeds
//! glibc's trim threshold, which grows to twice the largest block ever freed from `mmap` (up to
//! 64 MiB) as soon as a large buffer comes and goes. The soak saw up to 0.9 MiB stay there.
//! Fixing the thresholds (`mallopt`) gives it back but costs 2.2-2.8 x the server CPU per
//! message for 256 KiB and 1 MiB messages (each is then mapped or its pages faulted afresh), one
//! arena for all threads (`M_ARENA_MAX=1`) 5-9 % for small ones on two workers
//! (docs/security.md has the figures); neither is done.

use std::time::Duration;

/// How often the task looks at the heap.
pub(crate) const CHECK: Duration = Duration::from_secs(2);

/// How much must have been freed (and not reused) since the last trim for a trim to be worth
/// it: twice glibc's own threshold for giving back the top of the heap (128 KiB), and small
/// enough that what is left untrimmed stays within a few percent of a small server's RSS (the
/// soak's TLS server kept 0.5 MiB, 2.8 %, under a 1 MiB threshold). Under a steady load that
/// frees this much between two looks, the trim runs once per look: its cost is bounded by that.
pub(crate) const MIN_FREED: usize = 256 << 10;

/// How little the heap in use may move between two looks for the server to count as quiet, the
/// only time it trims: a quarter of [`MIN_FREED`].
pub(crate) const QUIET: usize = MIN_FREED / 4;

/// Start the task (on a Tokio runtime), if this platform has a glibc heap: to trim it if `trim`,
/// and to log it at debug level (`RUST_LOG=wsx::memory=debug`) either way; with neither, no task.
pub(crate) fn spawn(trim: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if trim || tracing::enabled!(target: glibc::TARGET, tracing::Level::DEBUG) {
        tokio::spawn(glibc::reclaim(trim));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = trim;
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::time::Instant;

    use tracing::debug;

    use super::{CHECK, MIN_FREED, QUIET};

    /// The log target of the task's lines (`RUST_LOG=wsx::memory=debug` shows them).
    pub(super) const TARGET: &str = "wsx::memory";

    /// The heap as glibc's `mallinfo2` reports it, summed over all arenas.
    #[derive(Debug, Clone, Copy)]
    struct Heap {
        /// Bytes handed out by `malloc` and not freed, mmapped blocks included.
        in_use: usize,
        /// Free bytes inside the heaps (resident or not).
        free: usize,
    }

    fn heap() -> Heap {
        // SAFETY: `mallinfo2` takes no arguments and returns a struct by value; it only reads
        // the allocator's state under the arenas' locks.
        let info = unsafe { libc::mallinfo2() };
        Heap { in_use: info.uordblks + info.hblkhd, free: info.fordblks }
    }

    /// This process's resident set in KiB (`/proc/self/statm`), 0 if it cannot be read.
    fn rss_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        // SAFETY: `sysconf` only reads a configuration value.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages * u64::try_from(page).unwrap_or(4096) / 1024
    }

    /// Watch the heap and, if `trim`, trim it once [`MIN_FREED`] or more has been freed since
    /// the last trim (the module's doc).
    pub(super) async fn reclaim(trim: bool) {
        let mut tick = tokio::time::interval(CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The fewest free bytes seen since the last trim.
        let mut low = usize::MAX;
        // The heap in use at the previous look.
        let mut previous = usize::MAX;
        loop {
            tick.tick().await;
            let read = Instant::now();
            let now = heap();
            let read = read.elapsed();
            low = low.min(now.free);
            debug!(target: TARGET, in_use = now.in_use, free = now.free, rss_kib = rss_kib(), took_us = read.as_micros() as u64, "heap");
            // Only once the load is gone: a trim takes every arena's lock while it walks the
            // free chunks and hands pages back that a busy server faults in again at once;
            // under load it stalled workers (the soak's p99 went from 1.5 to 3.3 x its
            // unloaded p99). Quiet = the heap in use moved less than QUIET since the last look.
            let quiet = now.in_use.abs_diff(previous) < QUIET;
            previous = now.in_use;
            if !trim || !quiet || now.free - low < MIN_FREED {
                continue;
            }
            let before = rss_kib();
            let job = tokio::task::spawn_blocking(|| {
                let start = Instant::now();
                // SAFETY: `malloc_trim` takes a byte count and only touches the allocator's own
                // state, under its locks; 0 asks it to keep no extra pad at the heaps' tops.
                unsafe { libc::malloc_trim(0) };
                start.elapsed()
            });
            // Only fails if the runtime is shutting down.
            let Ok(took) = job.await else { continue };
            let after = heap();
            low = after.free;
            debug!(
                target: TARGET,
                in_use = after.in_use,
                free = after.free,
                rss_kib_before = before,
                rss_kib = rss_kib(),
                took_us = took.as_micros() as u64,
                "trimmed the heap"
            );
        }
    }
}
