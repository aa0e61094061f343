//! A close signal for many connections at once: the server fires it on shutdown, and every
//! connection watching it closes itself with 1001 (going away). The signal also carries the
//! server's memory budget, if it has one: a connection's [`Watch`] is its link to its server,
//! so the budget's per-connection state costs it no more bytes (see [`Budget`]).
//!
//! A connection's driver polls its [`Watch`] with the task that polls the connection, so an
//! idle connection is woken to send its close. The signal keeps one waker slot per watching
//! connection in a shared table (16 bytes each); a waiter on a `CancellationToken` per
//! connection would be an intrusive future boxed per connection (72 bytes). The token is still
//! there, for the handshakes' `select!`.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Waker},
};

#[cfg(feature = "server")]
use tokio_util::sync::CancellationToken;

/// The signal: fired once, watched by any number of connections.
#[cfg(feature = "server")]
#[derive(Clone, Default)]
pub(crate) struct Signal(Arc<State>);

#[derive(Default)]
struct State {
    fired: AtomicBool,
    #[cfg(feature = "server")]
    token: CancellationToken,
    wakers: Mutex<WakerSlots>,
    budget: Option<Budget>,
}

/// A server-wide memory budget: the bytes its connections hold for incomplete messages,
/// inflaters and queued output, beyond a small allowance each, counted against one limit.
///
/// Each connection charges what it holds over [`ALLOWANCE`] in [`CHUNK`]s, so that a connection
/// moving small messages never touches the shared counter, and a large message costs one
/// atomic operation per chunk it grows or shrinks by, not one per read.
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// What a connection holds without charging the budget: its read buffer at full burst size
/// (64 KiB), and a small write queue and message besides.
pub(crate) const ALLOWANCE: usize = 128 << 10;

/// The unit a connection charges the budget in.
pub(crate) const CHUNK: usize = 256 << 10;

/// The servers' default budget (`wsx::Server` and `wsx::hyper::Server`): 1 GiB.
#[cfg(feature = "server")]
pub(crate) const DEFAULT_BUDGET: usize = 1 << 30;

#[cfg(feature = "server")]
impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, used: AtomicUsize::new(0) }
    }
}

/// One slot per [`Watch`]; the slots of dropped ones are reused.
#[derive(Default)]
struct WakerSlots {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

#[cfg(feature = "server")]
impl Signal {
    /// A signal whose watches also charge a memory budget of `limit` bytes.
    pub(crate) fn with_budget(limit: Option<usize>) -> Self {
        Self(Arc::new(State { budget: limit.map(Budget::new), ..State::default() }))
    }

    /// Bytes charged to the memory budget now (0 without one).
    #[cfg(test)]
    pub(crate) fn budget_used(&self) -> usize {
        self.0.budget.as_ref().map_or(0, |b| b.used.load(Ordering::Relaxed))
    }

    /// Fire: every watch sees it, and the tasks that last polled them are woken.
    pub(crate) fn fire(&self) {
        self.0.fired.store(true, Ordering::Release);
        self.0.token.cancel();
        // Taken under the lock and woken after it. A watch that registers after this finds its
        // slot gone, and sees the flag when it checks again.
        let slots = std::mem::take(&mut self.0.lock_wakers().slots);
        for waker in slots.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Wait until the signal fires.
    pub(crate) async fn fired(&self) {
        self.0.token.cancelled().await;
    }

    /// A watch for one connection.
    pub(crate) fn watch(&self) -> Watch {
        let mut wakers = self.0.lock_wakers();
        let slot = match wakers.free.pop() {
            Some(slot) => slot,
            None => {
                wakers.slots.push(None);
                wakers.slots.len() - 1
            }
        };
        drop(wakers);
        // Slots are reused: there are never more than there are connections at once.
        let slot = u32::try_from(slot).expect("fewer than 2^32 connections");
        Watch { signal: self.0.clone(), slot, charged: 0, waker: None }
    }
}

impl State {
    fn lock_wakers(&self) -> MutexGuard<'_, WakerSlots> {
        // Every critical section leaves the table consistent, so a poisoned lock is usable.
        self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's view of a [`Signal`].
pub(crate) struct Watch {
    signal: Arc<State>,
    /// This connection's slot in the signal's waker table.
    slot: u32,
    /// The [`CHUNK`]s of the memory budget this connection holds.
    charged: u32,
    /// The waker registered in the slot, to skip the lock while it does not change.
    waker: Option<Waker>,
}

impl Watch {
    /// Whether the signal fired; does not register for a wake-up.
    pub(crate) fn is_fired(&self) -> bool {
        self.signal.fired.load(Ordering::Acquire)
    }

    /// Wake the task that last polled this watch, if any (so that, when a connection is split,
    /// the half that did not see the signal still writes the close).
    pub(crate) fn wake(mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether the signal fired; if not, `cx` is woken when it does.
    ///
    /// Costs one atomic load when called again from the same task: the shared table is only
    /// locked when the waker changes.
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.is_fired() {
            return true;
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return false;
        }
        let waker = cx.waker().clone();
        if let Some(slot) = self.signal.lock_wakers().slots.get_mut(self.slot as usize) {
            *slot = Some(waker.clone());
        }
        self.waker = Some(waker);
        // The signal may have fired (and emptied the table) before we registered.
        self.is_fired()
    }
}

impl Watch {
    /// Charge the server's memory budget for `held` bytes (over the allowance, in chunks).
    /// Returns `false`, charging nothing more, when the budget cannot cover it: the caller
    /// must then free the connection's buffers (and charge again, to release them).
    #[inline]
    pub(crate) fn charge(&mut self, held: usize) -> bool {
        let want = held.saturating_sub(ALLOWANCE).div_ceil(CHUNK);
        let charged = self.charged as usize;
        // Shrinking by one chunk is let go, so that a size at a boundary does not flap.
        if want == charged || want + 1 == charged {
            return true;
        }
        self.recharge(want)
    }

    #[inline(never)]
    fn recharge(&mut self, want: usize) -> bool {
        let Some(budget) = &self.signal.budget else { return true };
        let charged = self.charged as usize;
        if want < charged {
            budget.used.fetch_sub((charged - want) * CHUNK, Ordering::Relaxed);
        } else {
            let more = (want - charged) * CHUNK;
            let before = budget.used.fetch_add(more, Ordering::Relaxed);
            if before + more > budget.limit {
                budget.used.fetch_sub(more, Ordering::Relaxed);
                return false;
            }
        }
        // At most `usize::MAX / CHUNK` chunks: fits a `u32` on 64-bit targets' address space
        // with room to spare (2^32 chunks are 1 PiB).
        self.charged = want.min(u32::MAX as usize) as u32;
        true
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut wakers = self.signal.lock_wakers();
        // After the signal fired the table is empty: nothing to give back.
        if let Some(slot) = wakers.slots.get_mut(self.slot as usize) {
            *slot = None;
            wakers.free.push(self.slot as usize);
        }
        drop(wakers);
        if self.charged != 0 {
            self.recharge(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_charged_in_chunks_past_the_allowance_and_released() {
        let signal = Signal::with_budget(Some(4 * CHUNK));
        let (mut a, mut b) = (signal.watch(), signal.watch());
        assert!(a.charge(ALLOWANCE), "the allowance is free");
        assert_eq!(signal.budget_used(), 0);
        assert!(a.charge(ALLOWANCE + 1));
        assert_eq!(signal.budget_used(), CHUNK, "one chunk for one byte over");
        assert!(a.charge(ALLOWANCE + 3 * CHUNK));
        assert_eq!(signal.budget_used(), 3 * CHUNK);
        assert!(!b.charge(ALLOWANCE + 2 * CHUNK), "past the budget: refused");
        assert_eq!(signal.budget_used(), 3 * CHUNK, "a refusal charges nothing");
        assert!(b.charge(ALLOWANCE + CHUNK), "what is left may still be taken");
        assert!(a.charge(ALLOWANCE + 2 * CHUNK), "one chunk less is kept (hysteresis)");
        assert_eq!(signal.budget_used(), 4 * CHUNK);
        assert!(a.charge(0));
        assert_eq!(signal.budget_used(), CHUNK, "shrinking releases");
        drop(b);
        assert_eq!(signal.budget_used(), 0, "a dropped watch releases its charge");
        drop(a);
    }

    #[test]
    fn without_a_budget_nothing_is_refused() {
        let signal = Signal::default();
        let mut watch = signal.watch();
        assert!(watch.charge(usize::MAX / 2));
        assert_eq!(signal.budget_used(), 0);
    }
}
