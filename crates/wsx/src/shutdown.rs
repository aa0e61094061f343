//! A close signal for many connections at once: the server fires it on shutdown, and every
//! connection watching it closes itself with 1001 (going away).
//!
//! A connection's driver polls its [`Watch`] with the task that polls the connection, so an
//! idle connection is woken to send its close. The signal keeps one waker slot per watching
//! connection in a shared table (16 bytes each); a waiter on a `CancellationToken` per
//! connection would be an intrusive future boxed per connection (72 bytes). The token is still
//! there, for the handshakes' `select!`.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Waker},
};

use tokio_util::sync::CancellationToken;

/// The signal: fired once, watched by any number of connections.
#[derive(Clone, Default)]
pub(crate) struct Signal(Arc<State>);

#[derive(Default)]
struct State {
    fired: AtomicBool,
    token: CancellationToken,
    wakers: Mutex<WakerSlots>,
}

/// One slot per [`Watch`]; the slots of dropped ones are reused.
#[derive(Default)]
struct WakerSlots {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Signal {
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
        Watch { signal: self.0.clone(), slot, waker: None }
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
    slot: usize,
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
        if let Some(slot) = self.signal.lock_wakers().slots.get_mut(self.slot) {
            *slot = Some(waker.clone());
        }
        self.waker = Some(waker);
        // The signal may have fired (and emptied the table) before we registered.
        self.is_fired()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut wakers = self.signal.lock_wakers();
        // After the signal fired the table is empty: nothing to give back.
        if let Some(slot) = wakers.slots.get_mut(self.slot) {
            *slot = None;
            wakers.free.push(self.slot);
        }
    }
}
