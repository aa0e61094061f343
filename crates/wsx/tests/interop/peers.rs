//! Finding the peers (`WSX_*` variables, `target/peers.env`, defaults) and running their
//! processes: servers that print `READY <port>`, clients that print one JSON line.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// What a whole peer run (a scenario client, a browser) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The hint every "peer missing" failure carries.
const SETUP_HINT: &str = "run `bash scripts/setup-peers` (or `bash scripts/test`, which runs it)";

// ---------------------------------------------------------------------------------------------
// Finding the peers
// ---------------------------------------------------------------------------------------------

/// The repository root (two levels above this crate).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root exists")
}

/// Where the peers are, from `WSX_*` variables, else from `target/peers.env`, else defaults.
#[derive(Debug, Clone)]
pub(crate) struct PeerEnv {
    pub(crate) peers_dir: PathBuf,
    pub(crate) node: PathBuf,
    pub(crate) node_modules: Option<PathBuf>,
    pub(crate) python: PathBuf,
    pub(crate) chromium: PathBuf,
}

/// A variable from the environment, else from `target/peers.env` (what `scripts/test` sources;
/// plain `cargo test` does not).
fn peer_var(name: &str) -> Option<String> {
    if let Ok(v) = std::env::var(name)
        && !v.is_empty()
    {
        return Some(v);
    }
    let file = std::fs::read_to_string(repo_root().join("target/peers.env")).ok()?;
    file.lines().find_map(|line| {
        let line = line.trim().strip_prefix("export ").unwrap_or(line.trim());
        let (k, v) = line.split_once('=')?;
        (k == name).then(|| v.trim_matches(|c| c == '"' || c == '\'').to_owned()).filter(|v| !v.is_empty())
    })
}

/// `program` as given if it has a slash, else the first match on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

impl PeerEnv {
    /// Look everything up; nothing is checked until a test asks for a peer.
    pub(crate) fn load() -> Self {
        let root = repo_root();
        let peers_dir = peer_var("WSX_PEERS_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("tests-peers"));
        let node = peer_var("WSX_NODE").unwrap_or_else(|| "node".into());
        let node = which(&node).unwrap_or_else(|| PathBuf::from(node));
        let node_modules = peer_var("WSX_NODE_MODULES").map(PathBuf::from);
        let python =
            peer_var("WSX_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join("target/peers-venv/bin/python"));
        let chromium = peer_var("WSX_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
        Self { peers_dir, node, node_modules, python, chromium }
    }

    fn node_modules_dir(&self) -> PathBuf {
        self.node_modules.clone().unwrap_or_else(|| self.peers_dir.join("node_modules"))
    }

    /// Fail unless Node, `ws` and the script `rel` (under `tests-peers/`) are installed.
    pub(crate) fn require_node(&self, rel: &str) -> PathBuf {
        require(self.node.is_file(), &format!("Node.js not found at {}", self.node.display()));
        require(
            self.node_modules_dir().join("ws/package.json").is_file(),
            &format!("the `ws` package is not installed in {}", self.node_modules_dir().display()),
        );
        self.require_script(rel)
    }

    /// Fail unless Node, playwright-core and Chromium are installed; the path of `run.js`.
    pub(crate) fn require_browser(&self) -> PathBuf {
        let script = self.require_node("browser/run.js");
        require(
            self.node_modules_dir().join("playwright-core/package.json").is_file(),
            &format!("playwright-core is not installed in {}", self.node_modules_dir().display()),
        );
        require(self.chromium.is_file(), &format!("Chromium not found at {}", self.chromium.display()));
        script
    }

    /// Fail unless the Python venv (with `websockets`) and the script `rel` exist.
    pub(crate) fn require_python(&self, rel: &str) -> PathBuf {
        require(
            self.python.is_file(),
            &format!("the Python with `websockets` was not found at {}", self.python.display()),
        );
        self.require_script(rel)
    }

    fn require_script(&self, rel: &str) -> PathBuf {
        let path = self.peers_dir.join(rel);
        require(path.is_file(), &format!("peer script {} is missing", path.display()));
        path
    }

    /// Start `program args` as the peer `name`, with the peer environment. Its stdin is piped
    /// and must be held open: the peer exits when it closes, so it dies with the test process
    /// even if no kill ever runs. Its stderr is collected in the background, for failure
    /// messages; the child is killed when dropped.
    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Spawned {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("WSX_PEERS_DIR", &self.peers_dir)
            .env("WSX_CHROMIUM", &self.chromium);
        if let Some(m) = &self.node_modules {
            cmd.env("WSX_NODE_MODULES", m);
        }
        let mut child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}; {SETUP_HINT}", program.display()));
        let stdin = child.stdin.take();
        let stderr = drain_stderr(&mut child);
        let stdout = child.stdout.take().expect("stdout is piped");
        Spawned { child, stdin, stderr, stdout }
    }
}

/// A peer process just started by [`PeerEnv::spawn`].
struct Spawned {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    stdout: ChildStdout,
}

fn require(ok: bool, what: &str) {
    assert!(ok, "interop peer missing: {what}; {SETUP_HINT}");
}

// ---------------------------------------------------------------------------------------------
// Peer processes
// ---------------------------------------------------------------------------------------------

/// Collect a child's stderr in the background, for failure messages.
fn drain_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let log = log.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                *log.lock().unwrap() = String::from_utf8_lossy(&buf).into_owned();
            }
        });
    }
    log
}

/// A peer server process, killed by PID when dropped.
pub(crate) struct PeerServer {
    pub(crate) name: String,
    pub(crate) port: u16,
    child: Child,
    /// Kept open so that the peer's stdin watcher does not stop it.
    _stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
}

impl PeerServer {
    /// Start `program args` and wait for its `READY <port>` line.
    pub(crate) async fn spawn(env: &PeerEnv, name: &str, program: &Path, args: &[String]) -> Self {
        let Spawned { mut child, stdin, stderr, stdout } = env.spawn(name, program, args);
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let port = match line {
            Ok(Ok(Some(line))) => line
                .strip_prefix("READY ")
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or_else(|| panic!("{name}: expected `READY <port>`, got {line:?}")),
            other => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                panic!("{name} did not print READY ({other:?}); stderr:\n{}\n{SETUP_HINT}", stderr.lock().unwrap());
            }
        };
        // Keep draining stdout so that the peer never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { name: name.to_owned(), port, child, _stdin: stdin, stderr }
    }

    /// What the peer wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the process is still running (it must be, while a test uses it).
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        // SIGKILL by PID; `kill_on_drop` reaps it. Closing stdin would also stop it.
        let _ = self.child.start_kill();
    }
}

/// A finished client peer run: its exit status, JSON line and stderr.
#[derive(Debug)]
pub(crate) struct ClientRun {
    pub(crate) name: String,
    pub(crate) status: ExitStatus,
    pub(crate) json: serde_json::Value,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl ClientRun {
    /// The run, shortened, for failure messages.
    pub(crate) fn describe(&self) -> String {
        let mut stderr = self.stderr.clone();
        if stderr.len() > 4000 {
            let cut = (0..=4000).rev().find(|&i| stderr.is_char_boundary(i)).unwrap_or(0);
            stderr.truncate(cut);
            stderr.push('…');
        }
        format!("{} exited with {}; stdout: {}; stderr: {}", self.name, self.status, self.stdout.trim(), stderr)
    }

    /// A string field by JSON pointer (`/close/reason`).
    pub(crate) fn str_at(&self, pointer: &str) -> Option<&str> {
        self.json.pointer(pointer).and_then(|v| v.as_str())
    }

    /// An integer field by JSON pointer (`/close/code`).
    pub(crate) fn int_at(&self, pointer: &str) -> Option<i64> {
        self.json.pointer(pointer).and_then(|v| v.as_i64())
    }

    /// A boolean field by JSON pointer (`/close/wasClean`).
    pub(crate) fn bool_at(&self, pointer: &str) -> Option<bool> {
        self.json.pointer(pointer).and_then(|v| v.as_bool())
    }

    /// Assert that `results_pointer` (e.g. `/results`) maps each of `steps` to `"ok"`, and
    /// names every step that is not. Extra steps the peer added are checked too.
    pub(crate) fn assert_steps(&self, results_pointer: &str, steps: &[&str]) {
        let results = self
            .json
            .pointer(results_pointer)
            .and_then(|v| v.as_object())
            .unwrap_or_else(|| panic!("{}: no `{results_pointer}` object; {}", self.name, self.describe()));
        let mut failures = Vec::new();
        for step in steps {
            match results.get(*step) {
                Some(serde_json::Value::String(s)) if s == "ok" => {}
                Some(other) => failures.push(format!("step `{step}`: {other}")),
                None => failures.push(format!("step `{step}`: missing from the results")),
            }
        }
        for (step, value) in results {
            if !steps.contains(&step.as_str()) && value != "ok" {
                failures.push(format!("unexpected step `{step}`: {value}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{}: {} step(s) failed:\n  {}\n{}",
            self.name,
            failures.len(),
            failures.join("\n  "),
            self.describe()
        );
    }
}

/// Run a client peer to completion (bounded by [`RUN_TIMEOUT`]) and parse its JSON line.
pub(crate) async fn run_client(env: &PeerEnv, name: &str, program: &Path, args: &[String]) -> ClientRun {
    RunningClient::start(env, name, program, args).finish().await
}

/// A client peer still running: its stdout can be read line by line (a `READY` line) before it
/// is run to completion.
pub(crate) struct RunningClient {
    name: String,
    child: Child,
    /// Held until the child exits: a closed stdin would stop it early.
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    stdout: BufReader<ChildStdout>,
    /// The lines read so far.
    seen: String,
}

impl RunningClient {
    pub(crate) fn start(env: &PeerEnv, name: &str, program: &Path, args: &[String]) -> Self {
        let Spawned { child, stdin, stderr, stdout } = env.spawn(name, program, args);
        Self { name: name.to_owned(), child, stdin, stderr, stdout: BufReader::new(stdout), seen: String::new() }
    }

    /// The first stdout line starting with `prefix` (bounded by [`RUN_TIMEOUT`]).
    pub(crate) async fn line(&mut self, prefix: &str) -> String {
        let wait = async {
            loop {
                let mut line = String::new();
                if self.stdout.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return None;
                }
                self.seen.push_str(&line);
                if line.starts_with(prefix) {
                    return Some(line.trim_end().to_owned());
                }
            }
        };
        match tokio::time::timeout(RUN_TIMEOUT, wait).await {
            Ok(Some(line)) => line,
            other => panic!(
                "{}: no `{prefix}` line ({}); stdout: {:?}; stderr:\n{}",
                self.name,
                if other.is_err() { "timed out" } else { "stdout ended" },
                self.seen,
                self.stderr.lock().unwrap()
            ),
        }
    }

    /// Wait for the peer to exit (bounded by [`RUN_TIMEOUT`]) and parse its JSON line.
    pub(crate) async fn finish(mut self) -> ClientRun {
        let name = self.name.clone();
        let run = async {
            let mut out = std::mem::take(&mut self.seen).into_bytes();
            self.stdout.read_to_end(&mut out).await.expect("read the peer's stdout");
            let status = self.child.wait().await.expect("wait for the peer");
            (out, status)
        };
        let (out, status) = match tokio::time::timeout(RUN_TIMEOUT, run).await {
            Ok(done) => done,
            Err(_) => {
                let _ = self.child.start_kill();
                panic!("{name} did not finish within {RUN_TIMEOUT:?}; stderr:\n{}", self.stderr.lock().unwrap());
            }
        };
        drop(self.stdin.take());
        // Let the drain task see EOF.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stdout = String::from_utf8_lossy(&out).into_owned();
        let stderr = self.stderr.lock().unwrap().clone();
        let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
        let json = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "{name}: no JSON line on stdout ({e}); exit {status}; stdout: {stdout:?}; stderr:\n{stderr}\n{SETUP_HINT}"
            )
        });
        ClientRun { name, status, json, stdout, stderr }
    }
}
