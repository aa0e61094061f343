//! Issue 16, failure 3: an idle `wsx serve --echo` connection costs at most 10 % more memory
//! than one of `echo_server` (`crates/wsx/examples/echo_server.rs`, the library's own echo
//! server on `wsx::Server` and `recv_each`).
//!
//! Measured as `scripts/bench-suite` measures it, with the same tool: `loadgen --idle N`
//! (`bench/src/bin/loadgen.rs`) reads the server's `VmRSS`, opens N connections (handshake
//! only), waits, reads it again and reports (after − before) / N. Before that, a first
//! `loadgen --idle` run of [`WARM_UP`] connections (reset when it ends) warms each server up,
//! so that what is paid once (code paged in, the runtime's first slabs) is not counted per
//! connection. `loadgen` and `echo_server` are built here, with the profile this test was built
//! with, by the cargo that built it.
//!
//! `wsx serve --echo --quiet` is measured, like `echo_server`, which logs nothing per message.
//! Logging messages keeps the client's socket descriptor (4 bytes) in each session: in release
//! builds that costs nothing (tokio's task stays in the same 128-byte size class), in debug
//! builds, whose futures are laid out larger, it crosses into the next one. So the logging
//! variant is checked too when this test is built in release.
//!
//! N is `WSX_IDLE_CONNECTIONS`, 10,000 by default as in the issue: the open-file limit must
//! allow that many sockets (plus a few) in this process and in the server.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::{Proc, port_in, raise_fd_limit, serve, wsx_bin};

/// Idle connections opened against each server, unless `WSX_IDLE_CONNECTIONS` says otherwise.
const DEFAULT_CONNECTIONS: usize = 10_000;

/// Connections opened and reset before the baseline.
const WARM_UP: usize = 200;

/// The bound on one `loadgen` run (10,000 handshakes take 3-4 s against a debug build).
const LOADGEN_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound on the measurements, once the tools are built.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// How much more `wsx serve --echo` may hold per idle connection than `echo_server`.
const TOLERANCE: f64 = 0.10;

#[tokio::test]
async fn serve_echo_holds_as_little_per_idle_connection_as_echo_server() {
    let connections = std::env::var("WSX_IDLE_CONNECTIONS")
        .ok()
        .map(|n| n.parse::<usize>().expect("WSX_IDLE_CONNECTIONS is a number"))
        .unwrap_or(DEFAULT_CONNECTIONS);
    raise_fd_limit(connections as u64 + 200);
    // Building the tools can take minutes on a cold target directory: not within `bounded`.
    let tools = tokio::task::spawn_blocking(build_tools).await.expect("build thread");
    let measure = async {
        let echo_server = {
            let proc = Proc::spawn_with_env(&tools.echo_server, &[], &[("PORT", "0")]);
            let line = proc.stdout_line("echo_server to listen", |l| l.starts_with("Echoing on ")).await;
            idle_bytes(&tools.loadgen, &proc, port_in(&line), connections, "echo_server").await
        };
        let mut variants = vec![vec!["--echo", "--quiet"]];
        if !cfg!(debug_assertions) {
            variants.push(vec!["--echo"]);
        }
        for args in variants {
            let label = format!("wsx serve {}", args.join(" "));
            let (proc, port) = serve(&args).await;
            let serve_echo = idle_bytes(&tools.loadgen, &proc, port, connections, &label).await;
            eprintln!(
                "idle bytes per connection at {connections}: echo_server {echo_server:.0}, {label} {serve_echo:.0}"
            );
            assert!(
                serve_echo <= echo_server * (1.0 + TOLERANCE),
                "{label} holds {serve_echo:.0} bytes per idle connection, echo_server {echo_server:.0}: \
                 more than {:.0} % over",
                TOLERANCE * 100.0
            );
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, measure).await.expect("the measurements timed out");
}

/// `loadgen --idle` against the server `proc` listening on `port`, after a warm-up run: its
/// RSS growth per idle connection, in bytes.
async fn idle_bytes(loadgen: &Path, proc: &Proc, port: u16, connections: usize, label: &str) -> f64 {
    loadgen_idle(loadgen, proc, port, WARM_UP, "0", &format!("{label} (warm-up)")).await;
    let result = loadgen_idle(loadgen, proc, port, connections, "1", label).await;
    eprintln!("{label}: {result}");
    result["idle_bytes_per_conn"].as_f64().expect("idle_bytes_per_conn")
}

/// One `loadgen --idle` run: its JSON report.
async fn loadgen_idle(loadgen: &Path, proc: &Proc, port: u16, n: usize, hold: &str, label: &str) -> serde_json::Value {
    let (pid, port, n) = (proc.pid().to_string(), port.to_string(), n.to_string());
    let args = ["--idle", &n, "--port", &port, "--server-pid", &pid, "--hold", hold, "--label", label];
    let run = tokio::process::Command::new(loadgen).args(args).stderr(Stdio::inherit()).kill_on_drop(true).output();
    let output = tokio::time::timeout(LOADGEN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("loadgen --idle {n} against {label} timed out"))
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "loadgen failed against {label}: {stdout}");
    serde_json::from_str(stdout.trim()).expect("loadgen prints one JSON object")
}

/// The executables this test runs besides `wsx`.
struct Tools {
    loadgen: PathBuf,
    echo_server: PathBuf,
}

/// Build `loadgen` and `echo_server` with this test's profile; their paths from cargo's
/// artifact messages.
fn build_tools() -> Tools {
    // `.../target/<profile dir>/wsx`: `debug` is the dev profile.
    let profile_dir = Path::new(wsx_bin()).parent().and_then(Path::file_name).expect("a profile directory");
    let profile = match profile_dir.to_str().expect("UTF-8") {
        "debug" => "dev",
        other => other,
    };
    let manifest = common::repo_root().join("Cargo.toml");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["build", "--message-format=json-render-diagnostics", "--profile", profile, "--manifest-path"])
        .arg(&manifest)
        // With the features `wsx` has in `wsx serve` (`metrics`, compiled in but not enabled),
        // so that the two servers hold the same `WebSocket`.
        .args([
            "-p",
            "wsx-bench",
            "--bin",
            "loadgen",
            "-p",
            "wsx",
            "--features",
            "wsx/metrics",
            "--example",
            "echo_server",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(output.status.success(), "cargo build of loadgen and echo_server failed");
    let mut loadgen = None;
    let mut echo_server = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(name), Some(executable)) = (message["target"]["name"].as_str(), message["executable"].as_str())
        else {
            continue;
        };
        match name {
            "loadgen" => loadgen = Some(PathBuf::from(executable)),
            "echo_server" => echo_server = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    Tools {
        loadgen: loadgen.expect("cargo reported loadgen"),
        echo_server: echo_server.expect("cargo reported echo_server"),
    }
}
