//! Randomness for masking keys and handshake nonces, injected so that tests can pin it.

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

/// A source of random bytes for masking keys (RFC 6455 §5.3: "derived from a strong source
/// of entropy") and the client's handshake key.
pub trait MaskRng: Send + 'static {
    /// Fill `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

/// The default [`MaskRng`]: ChaCha12 seeded from the operating system.
///
/// Asking the OS for four bytes per frame would cost a syscall per message; a CSPRNG seeded
/// once per connection gives unpredictable keys at the cost of a few nanoseconds.
pub struct OsSeededRng(ChaCha12Rng);

impl OsSeededRng {
    /// Seed a new generator from the operating system.
    ///
    /// Panics only if the OS has no entropy source at all, in which case no WebSocket client
    /// can run safely.
    pub fn new() -> Self {
        // Invariant: getrandom works on every platform tokio and std support.
        Self(ChaCha12Rng::try_from_os_rng().expect("the OS provides random numbers"))
    }
}

impl Default for OsSeededRng {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for OsSeededRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OsSeededRng")
    }
}

impl MaskRng for OsSeededRng {
    fn fill(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
}

impl<F: FnMut(&mut [u8]) + Send + 'static> MaskRng for F {
    fn fill(&mut self, dest: &mut [u8]) {
        self(dest)
    }
}
