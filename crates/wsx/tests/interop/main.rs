//! Interop with third-party WebSocket implementations, in both directions, over ws:// and
//! wss://: Node `ws` and Python `websockets` (the scripts in `tests-peers/`), tokio-tungstenite
//! (in process) and headless Chromium (driven by playwright-core).
//!
//! One test binary: every peer shares most of the helpers, which one binary compiles and links
//! once, and uses all of them.
//!
//! - [`peers`]: finding the peers and running their processes.
//! - [`certs`]: a throwaway CA and server certificate, for wss://.
//! - [`echo_server`]: the wsx echo server each peer's client runs its scenario against.
//! - [`scenario`]: the client scenario wsx runs against each peer's echo server, and what our
//!   echo server must have seen of a peer's scenario.
//! - [`script_peers`]: Node and Python, each driven in both directions.
//! - [`node`], [`python`], [`tungstenite`], [`browser`]: the tests, one module per peer.
//! - [`topics`]: Node and Python subscribers of one topic, many connections per process.
//! - [`axum_host`], [`http`]: the echo on an axum route (`wsx::axum`), and every peer against
//!   it, HTTP/2 included (Chromium over TLS + h2, Python `h2` over cleartext h2).
//!
//! Every test is bounded: each await that depends on a peer runs under [`within`], every
//! spawned process is killed by PID when its handle drops (and also exits by itself when its
//! piped stdin closes), and everything listens on 127.0.0.1 only.
//!
//! A missing peer fails the test with a message naming `bash scripts/setup-peers`: CI installs
//! the peers, so a skip would hide a broken setup.

mod axum_host;
mod browser;
mod certs;
mod echo_server;
mod http;
mod node;
mod peers;
mod python;
mod scenario;
mod script_peers;
mod topics;
mod tungstenite;

use std::{future::Future, time::Duration};

/// What one interop test may take, all its peer runs included.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// What a test may wait for one peer step (a 16 MiB echo included) before it fails.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Await `fut`, failing the test with `what` if it takes longer than `limit`.
pub(crate) async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}
