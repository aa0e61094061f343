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
//! What `malloc_trim` does not give back: the free memory at the top of a thread's arena (each
//! runtime worker allocates from its own). It walks every arena's free chunks but shrinks the
//! top of the main heap only; a thread arena's top goes back when a block of 64 KiB or more of
//! that arena is freed and the top exceeds glibc's trim threshold, a threshold that grows to
//! twice the largest block ever freed from `mmap` (up to 64 MiB) as soon as a large buffer comes
//! and goes. The soak saw up to 0.9 MiB stay there, 5 % of a small server's RSS. So, with the
//! trim on, `wsx serve` fixes the thresholds at the most glibc's dynamic ones reach
//! ([`MMAP_THRESHOLD`], [`LOADED_TRIM_THRESHOLD`]: under load, blocks up to 32 MiB come from
//! the heaps and are reused, as glibc does anyway once one such block has come and gone) and, at
//! each trim, lowers the trim threshold to [`QUIET_TRIM_THRESHOLD`] while every worker, as it
//! next goes idle (the runtime's park hook, [`on_worker_park`]), frees a block of its own arena:
//! glibc then shrinks that arena's top. Fixed low instead, the thresholds would give the tops
//! back at every `free` under load too, at 2.2-2.8 x the server CPU per message for 256 KiB and
//! 1 MiB messages (each one's pages faulted afresh); one arena for all threads
//! (`M_ARENA_MAX=1`) cost 5-9 % for small messages on two workers (docs/performance.md).

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

/// Blocks up to this size come from the heaps, larger ones are mapped for themselves
/// (`M_MMAP_THRESHOLD`, fixed with the trim on): the most glibc's dynamic threshold reaches.
pub(crate) const MMAP_THRESHOLD: usize = 32 << 20;

/// Under load, a heap's top is given back by `free` only beyond this (`M_TRIM_THRESHOLD`, fixed
/// with the trim on): twice [`MMAP_THRESHOLD`], the most glibc's dynamic threshold reaches.
pub(crate) const LOADED_TRIM_THRESHOLD: usize = 2 * MMAP_THRESHOLD;

/// During a trim, a worker arena's top beyond this is given back: glibc's initial threshold.
pub(crate) const QUIET_TRIM_THRESHOLD: usize = 128 << 10;

/// How long a trim waits for every worker to have freed its block (idle workers are woken to).
pub(crate) const WORKER_WAIT: Duration = Duration::from_millis(200);

/// Run by each runtime worker just before it parks (goes idle; `on_thread_park`): if a trim has
/// asked for it since this thread last did, give back the top of this thread's arena. Otherwise
/// a relaxed load (and, once a trim has run, a thread-local read).
pub(crate) fn on_worker_park() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::on_worker_park();
}

/// Start the task (on a Tokio runtime), if this platform has a glibc heap: to trim it if `trim`,
/// and to log it at debug level (`RUST_LOG=wsx::memory=debug`) either way; with neither, no task.
pub(crate) fn spawn(trim: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if trim {
            glibc::fix_thresholds();
        }
        if trim || tracing::enabled!(target: glibc::TARGET, tracing::Level::DEBUG) {
            tokio::spawn(glibc::reclaim(trim));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = trim;
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::{
        cell::Cell,
        sync::atomic::{AtomicU64, Ordering},
        time::Instant,
    };

    use tracing::{debug, warn};

    use super::{CHECK, LOADED_TRIM_THRESHOLD, MIN_FREED, MMAP_THRESHOLD, QUIET, QUIET_TRIM_THRESHOLD, WORKER_WAIT};

    /// The size of the block a worker frees so that glibc looks at its arena's top: it does when
    /// a freed block, merged with its free neighbours, is 64 KiB or more
    /// (`FASTBIN_CONSOLIDATION_THRESHOLD`).
    const POKE: usize = 64 << 10;

    /// How many trims have asked the workers to give back their arenas' tops.
    static ROUND: AtomicU64 = AtomicU64::new(0);
    /// How many times a worker has done so.
    static POKED: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        /// The last round this thread answered.
        static ANSWERED: Cell<u64> = const { Cell::new(0) };
    }

    /// Set one of glibc's `mallopt` parameters; false (and a warning) if it refused.
    fn set(param: libc::c_int, value: usize) -> bool {
        let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` only sets a parameter of the allocator, under its lock.
        let done = unsafe { libc::mallopt(param, value) } == 1;
        if !done {
            warn!(target: TARGET, param, value, "glibc refused a malloc parameter");
        }
        done
    }

    /// Fix the mmap and trim thresholds (the module's doc); setting either also stops glibc from
    /// moving them.
    pub(super) fn fix_thresholds() {
        set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        set(libc::M_TRIM_THRESHOLD, LOADED_TRIM_THRESHOLD);
    }

    /// The park hook's work ([`super::on_worker_park`]).
    pub(super) fn on_worker_park() {
        let round = ROUND.load(Ordering::Relaxed);
        if round == 0 {
            return;
        }
        // `try_with`: a thread being torn down has no locals left, and nothing to give back.
        let _ = ANSWERED.try_with(|answered| {
            if answered.get() == round {
                return;
            }
            answered.set(round);
            // SAFETY: a block this function allocates and frees at once and never reads or
            // writes; `black_box` keeps the pair from being optimised away.
            unsafe {
                let block = std::hint::black_box(libc::malloc(POKE));
                libc::free(block);
            }
            POKED.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// With the trim threshold lowered, ask every worker to free a block of its arena as it next
    /// parks (waking idle ones with empty tasks), for at most [`WORKER_WAIT`]; restore the
    /// threshold; return how many workers answered.
    async fn trim_worker_tops() -> u64 {
        let workers = tokio::runtime::Handle::current().metrics().num_workers() as u64;
        if !set(libc::M_TRIM_THRESHOLD, QUIET_TRIM_THRESHOLD) {
            return 0;
        }
        let before = POKED.load(Ordering::Relaxed);
        ROUND.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        // This task's own worker answers when it parks for the sleep; a spawned task makes the
        // runtime wake an idle worker to take it, which parks again after.
        while POKED.load(Ordering::Relaxed) - before < workers && start.elapsed() < WORKER_WAIT {
            for _ in 0..workers {
                tokio::spawn(async {});
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        set(libc::M_TRIM_THRESHOLD, LOADED_TRIM_THRESHOLD);
        POKED.load(Ordering::Relaxed) - before
    }

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
            let tops = trim_worker_tops().await;
            let after = heap();
            low = after.free;
            debug!(
                target: TARGET,
                in_use = after.in_use,
                free = after.free,
                rss_kib_before = before,
                rss_kib = rss_kib(),
                took_us = took.as_micros() as u64,
                worker_tops = tops,
                "trimmed the heap"
            );
        }
    }
    #[cfg(test)]
    mod tests {
        use super::*;

        /// Freed memory at the top of a worker's arena survives `malloc_trim`; a trim's round
        /// (the lowered threshold, the park hook) gives it back.
        #[test]
        fn a_trim_gives_back_the_top_of_a_workers_arena() {
            fix_thresholds();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .on_thread_park(super::super::on_worker_park)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                // 8 MiB in 128 KiB blocks from the worker's arena (each below MMAP_THRESHOLD),
                // all freed: they merge into the arena's top, below LOADED_TRIM_THRESHOLD.
                tokio::spawn(async {
                    let blocks: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 128 << 10]).collect();
                    drop(std::hint::black_box(blocks));
                })
                .await
                .expect("the task ran");
                // SAFETY: as in `reclaim`.
                unsafe { libc::malloc_trim(0) };
                let kept = rss_kib();
                let answered = trim_worker_tops().await;
                let after = rss_kib();
                assert_eq!(answered, 1, "the worker did not answer the trim");
                assert!(
                    kept.saturating_sub(after) >= 6 << 10,
                    "the worker's arena kept its top: RSS {kept} KiB after malloc_trim, {after} KiB after the round"
                );
            });
        }
    }
}
