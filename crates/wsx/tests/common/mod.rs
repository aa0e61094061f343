//! Shared helpers for the interop tests: finding and spawning the third-party peers of
//! `tests-peers/`, certificates, a wsx echo server, and the client scenario run by wsx against
//! every peer's echo server.
//!
//! Every test is bounded: each await that depends on a peer runs under [`within`], every
//! spawned process is killed by PID when its handle drops (and also exits by itself when its
//! piped stdin closes), and everything listens on 127.0.0.1 only.
//!
//! A missing peer fails the test with a message naming `bash scripts/setup-peers`: CI installs
//! the peers, so a skip would hide a broken setup.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, ChildStdin, Command},
    task::JoinHandle,
};
use wsx::{
    CloseCode, CloseFrame, Config, DeflateConfig, Message, WebSocket,
    proto::{Connection, Event, Frame, OsSeededRng},
};

/// What a test may wait for one peer step (a 16 MiB echo included) before it fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What a whole peer run (a scenario client, a browser) may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The hint every "peer missing" failure carries.
pub const SETUP_HINT: &str = "run `bash scripts/setup-peers` (or `bash scripts/test`, which runs it)";

/// Await `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Finding the peers
// ---------------------------------------------------------------------------------------------

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root exists")
}

/// Where the peers are, from `WSX_*` variables, else from `target/peers.env`, else defaults.
#[derive(Debug, Clone)]
pub struct PeerEnv {
    pub peers_dir: PathBuf,
    pub node: PathBuf,
    pub node_modules: Option<PathBuf>,
    pub python: PathBuf,
    pub chromium: PathBuf,
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
    pub fn load() -> Self {
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
    pub fn require_node(&self, rel: &str) -> PathBuf {
        require(self.node.is_file(), &format!("Node.js not found at {}", self.node.display()));
        require(
            self.node_modules_dir().join("ws/package.json").is_file(),
            &format!("the `ws` package is not installed in {}", self.node_modules_dir().display()),
        );
        self.require_script(rel)
    }

    /// Fail unless Node, playwright-core and Chromium are installed; the path of `run.js`.
    pub fn require_browser(&self) -> PathBuf {
        let script = self.require_node("browser/run.js");
        require(
            self.node_modules_dir().join("playwright-core/package.json").is_file(),
            &format!("playwright-core is not installed in {}", self.node_modules_dir().display()),
        );
        require(self.chromium.is_file(), &format!("Chromium not found at {}", self.chromium.display()));
        script
    }

    /// Fail unless the Python venv (with `websockets`) and the script `rel` exist.
    pub fn require_python(&self, rel: &str) -> PathBuf {
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

    /// The environment every peer process gets.
    fn apply(&self, cmd: &mut Command) {
        cmd.env("WSX_PEERS_DIR", &self.peers_dir).env("WSX_CHROMIUM", &self.chromium);
        if let Some(m) = &self.node_modules {
            cmd.env("WSX_NODE_MODULES", m);
        }
    }

    /// A command for `program` with the peer environment and the stdio every peer needs.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            // A piped stdin, kept open by the handle: the peer exits when it closes, so it
            // dies with the test process even if the kill below never runs.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        self.apply(&mut cmd);
        cmd
    }
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
pub struct PeerServer {
    pub name: String,
    pub port: u16,
    child: Child,
    /// Kept open so that the peer's stdin watcher does not stop it.
    _stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
}

impl PeerServer {
    /// Start `program args` and wait for its `READY <port>` line.
    pub async fn spawn(env: &PeerEnv, name: &str, program: &Path, args: &[String]) -> Self {
        let mut child = env
            .command(program, args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}; {SETUP_HINT}", program.display()));
        let stdin = child.stdin.take();
        let stderr = drain_stderr(&mut child);
        let stdout = child.stdout.take().expect("stdout is piped");
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

    /// `ws://127.0.0.1:PORT/` or `wss://127.0.0.1:PORT/`.
    pub fn url(&self, tls: bool) -> String {
        format!("{}://127.0.0.1:{}/", if tls { "wss" } else { "ws" }, self.port)
    }

    /// What the peer wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the process is still running (it must be, while a test uses it).
    pub fn is_running(&mut self) -> bool {
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
pub struct ClientRun {
    pub name: String,
    pub status: ExitStatus,
    pub json: serde_json::Value,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    /// The run, shortened, for failure messages.
    pub fn describe(&self) -> String {
        let mut stderr = self.stderr.clone();
        if stderr.len() > 4000 {
            let cut = (0..=4000).rev().find(|&i| stderr.is_char_boundary(i)).unwrap_or(0);
            stderr.truncate(cut);
            stderr.push('…');
        }
        format!("{} exited with {}; stdout: {}; stderr: {}", self.name, self.status, self.stdout.trim(), stderr)
    }

    /// A string field by JSON pointer (`/close/reason`).
    pub fn str_at(&self, pointer: &str) -> Option<&str> {
        self.json.pointer(pointer).and_then(|v| v.as_str())
    }

    /// An integer field by JSON pointer (`/close/code`).
    pub fn int_at(&self, pointer: &str) -> Option<i64> {
        self.json.pointer(pointer).and_then(|v| v.as_i64())
    }

    /// A boolean field by JSON pointer (`/close/wasClean`).
    pub fn bool_at(&self, pointer: &str) -> Option<bool> {
        self.json.pointer(pointer).and_then(|v| v.as_bool())
    }

    /// Assert that `results_pointer` (e.g. `/results`) maps each of `steps` to `"ok"`, and
    /// names every step that is not. Extra steps the peer added are checked too.
    pub fn assert_steps(&self, results_pointer: &str, steps: &[&str]) {
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
pub async fn run_client(env: &PeerEnv, name: &str, program: &Path, args: &[String]) -> ClientRun {
    let mut child = env
        .command(program, args)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}; {SETUP_HINT}", program.display()));
    // Held until the child exits: a closed stdin would stop it early.
    let stdin = child.stdin.take();
    let stderr = drain_stderr(&mut child);
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let run = async {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.expect("read the peer's stdout");
        let status = child.wait().await.expect("wait for the peer");
        (out, status)
    };
    let (out, status) = match tokio::time::timeout(RUN_TIMEOUT, run).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.start_kill();
            panic!("{name} did not finish within {RUN_TIMEOUT:?}; stderr:\n{}", stderr.lock().unwrap());
        }
    };
    drop(stdin);
    // Let the drain task see EOF.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stdout = String::from_utf8_lossy(&out).into_owned();
    let stderr = stderr.lock().unwrap().clone();
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    let json = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{name}: no JSON line on stdout ({e}); exit {status}; stdout: {stdout:?}; stderr:\n{stderr}\n{SETUP_HINT}"
        )
    });
    ClientRun { name: name.to_owned(), status, json, stdout, stderr }
}

/// `--ca FILE` when `cert` is set.
pub fn ca_args(cert: Option<&TestCert>) -> Vec<String> {
    cert.map(|c| vec!["--ca".to_owned(), c.ca_path.display().to_string()]).unwrap_or_default()
}

/// `--tls CERT KEY` when `cert` is set.
pub fn tls_args(cert: Option<&TestCert>) -> Vec<String> {
    cert.map(|c| vec!["--tls".to_owned(), c.cert_path.display().to_string(), c.key_path.display().to_string()])
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A throwaway CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM
/// files (for the peers) and DER (for rustls).
pub struct TestCert {
    pub dir: PathBuf,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl TestCert {
    /// Make a fresh CA and server certificate under the test target's temporary directory.
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name.push(DnType::CommonName, "wsx interop test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("sign the server certificate");

        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "interop-certs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let (ca_pem, cert_pem, key_pem) = (ca_cert.pem(), cert.pem(), key.serialize_pem());
        let ca_path = dir.join("ca.pem");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&ca_path, &ca_pem).unwrap();
        std::fs::write(&cert_path, &cert_pem).unwrap();
        std::fs::write(&key_path, &key_pem).unwrap();
        Self {
            dir,
            ca_path,
            cert_path,
            key_path,
            ca_pem,
            cert_pem,
            key_pem,
            ca_der: ca_cert.der().clone(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A rustls server config presenting the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .expect("server certificate");
        Arc::new(config)
    }

    /// A rustls client config trusting only the test CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add the test CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Connect TCP to `127.0.0.1:port` and run TLS for that IP address, trusting the test CA
    /// (for peers' servers and tokio-tungstenite; the wsx client does its own TLS).
    pub async fn connect(&self, port: u16) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("TCP connect");
        tcp.set_nodelay(true).ok();
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        connector.connect(name, tcp).await.expect("TLS handshake with the peer")
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// `len` pseudo-random bytes from `seed`: incompressible, so deflate cannot shorten an echo.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    Bytes::from(wsx_testkit::Rng::new(seed).bytes(len))
}

/// A text with 1-, 2-, 3- and 4-byte UTF-8 sequences, U+FFFD and U+10FFFF.
pub const UTF8_TEXT: &str = "wsx: héllo wörld — Ελληνικά, русский, 中文, 日本語, 한국어, 🦀🎉 \u{FFFD} \u{10FFFF}";

/// Where two payloads first differ, for failure messages that do not dump 16 MiB.
pub fn compare(what: &str, sent: &[u8], got: &[u8]) -> Result<(), String> {
    if sent == got {
        return Ok(());
    }
    let first = sent.iter().zip(got).position(|(a, b)| a != b).unwrap_or(sent.len().min(got.len()));
    Err(format!(
        "{what}: payload mismatch: sent {} bytes, got {} bytes, first difference at byte {first}",
        sent.len(),
        got.len()
    ))
}

/// A short description of a message.
pub fn describe(message: &Message) -> String {
    match message {
        Message::Text(t) if t.len() <= 64 => format!("Text({:?})", t.as_str()),
        Message::Text(t) => format!("Text({} bytes)", t.len()),
        Message::Binary(b) => format!("Binary({} bytes)", b.len()),
        Message::Ping(p) => format!("Ping({p:?})"),
        Message::Pong(p) => format!("Pong({p:?})"),
        Message::Close(c) => format!("Close({c:?})"),
    }
}

// ---------------------------------------------------------------------------------------------
// The wsx echo server
// ---------------------------------------------------------------------------------------------

/// Server configs: permessage-deflate on (as offered by the peer) or off.
pub fn server_config(deflate: bool) -> Config {
    let config = Config::default();
    if deflate { config.deflate(Some(DeflateConfig::default())) } else { config }
}

/// What the echo server saw on one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    /// permessage-deflate was negotiated.
    pub compressed: bool,
    /// Data messages echoed.
    pub echoed: usize,
    /// The close frame the peer sent (`Some(None)` for one without a body).
    pub peer_close: Option<Option<CloseFrame>>,
    /// How the connection ended, per the engine.
    pub close_reason: Option<wsx::CloseReason>,
    /// The error that ended it, if any.
    pub error: Option<String>,
    /// The connection task is done.
    pub finished: bool,
}

/// A wsx echo server ([`wsx::Server`]) on `127.0.0.1:0`: echoes text and binary with their
/// type, lets the engine answer pings and closes, and logs each connection. Stopped when dropped.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<ConnLog>>>,
    shutdown: wsx::ShutdownHandle,
    task: JoinHandle<wsx::Result<()>>,
}

impl EchoServer {
    /// Start it, over TLS with `cert`'s server certificate when given.
    pub async fn start(config: Config, cert: Option<&TestCert>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<ConnLog>>> = Arc::default();
        let builder = wsx::Server::builder().config(config);
        let (shutdown, task) = match cert {
            None => {
                let server = builder.from_listener(listener);
                (server.shutdown_handle(), tokio::spawn(server.serve(echo_handler(log.clone()))))
            }
            Some(cert) => {
                let tls = wsx::tls::ServerTls::from_pem(&cert.cert_pem, &cert.key_pem).expect("ServerTls::from_pem");
                let server = builder.tls(tls).from_listener(listener);
                (server.shutdown_handle(), tokio::spawn(server.serve(echo_handler(log.clone()))))
            }
        };
        Self { addr, log, shutdown, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `ws://127.0.0.1:PORT/` or `wss://127.0.0.1:PORT/`.
    pub fn url(&self, tls: bool) -> String {
        format!("{}://127.0.0.1:{}/", if tls { "wss" } else { "ws" }, self.port())
    }

    /// A copy of the connection logs.
    pub fn logs(&self) -> Vec<ConnLog> {
        self.log.lock().unwrap().clone()
    }

    /// Wait until every connection so far has finished (the peer's close has run its course).
    pub async fn settle(&self) -> Vec<ConnLog> {
        within("the echo server's connections to finish", Duration::from_secs(15), async {
            loop {
                let logs = self.logs();
                if logs.iter().all(|l| l.finished) {
                    return logs;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        self.task.abort();
    }
}

/// The handler given to [`wsx::Server::serve`]: echo and log.
fn echo_handler<S>(
    log: Arc<Mutex<Vec<ConnLog>>>,
) -> impl Fn(WebSocket<S>, wsx::ConnectionInfo) -> std::pin::Pin<Box<dyn Future<Output = wsx::Result<()>> + Send>>
+ Send
+ Sync
+ 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    move |ws, _info| {
        let log = log.clone();
        Box::pin(async move {
            let index = {
                let mut log = log.lock().unwrap();
                log.push(ConnLog::default());
                log.len() - 1
            };
            echo_connection(ws, &log, index).await;
            log.lock().unwrap()[index].finished = true;
            Ok(())
        })
    }
}

async fn echo_connection<S>(mut ws: WebSocket<S>, log: &Mutex<Vec<ConnLog>>, index: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    log.lock().unwrap()[index].compressed = ws.is_compressed();
    let error = loop {
        match ws.recv().await {
            Ok(Some(m @ (Message::Text(_) | Message::Binary(_)))) => {
                if let Err(e) = ws.send(m).await {
                    break Some(format!("send: {e}"));
                }
                log.lock().unwrap()[index].echoed += 1;
            }
            Ok(Some(Message::Close(frame))) => log.lock().unwrap()[index].peer_close = Some(frame),
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(e) => break Some(format!("recv: {e}")),
        }
    };
    let mut log = log.lock().unwrap();
    log[index].error = error;
    log[index].close_reason = ws.close_reason();
}

// ---------------------------------------------------------------------------------------------
// The client scenario wsx runs against every peer's echo server
// ---------------------------------------------------------------------------------------------

/// Client configs: permessage-deflate offered or not.
pub fn client_config(deflate: bool) -> Config {
    server_config(deflate)
}

/// The upgrade request for `url`.
pub fn request(url: &str) -> http::Request<()> {
    http::Request::builder().uri(url).body(()).expect("a valid request")
}

/// The step names of [`run_scenario`], in order.
pub const SCENARIO_STEPS: &[&str] = &[
    "text",
    "binary",
    "empty_text",
    "empty_binary",
    "size_125",
    "size_126",
    "size_65535",
    "size_65536",
    "size_16mib",
    "utf8_text",
    "ping",
    "fragmented",
    "fragmented_binary",
    "fragmented_compressible",
    "close",
];

/// A close reason of 124 bytes: one over the limit.
pub const LONG_REASON: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// The ping payload, with bytes that are not UTF-8.
pub const PING_PAYLOAD: &[u8] = b"wsx-ping-\x00\x01\xfe\xff";

/// Each step's outcome, by name, in the order of [`SCENARIO_STEPS`].
#[derive(Debug, Default)]
pub struct Results {
    pub steps: BTreeMap<&'static str, Result<(), String>>,
    pub timings: Vec<(&'static str, Duration)>,
}

impl Results {
    pub async fn run(&mut self, name: &'static str, fut: impl Future<Output = Result<(), String>>) {
        let start = Instant::now();
        let result = match tokio::time::timeout(STEP_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("timeout after {STEP_TIMEOUT:?}")),
        };
        self.timings.push((name, start.elapsed()));
        self.steps.insert(name, result);
    }

    /// Fail naming every step that is not ok, or missing.
    pub fn assert_all_ok(&self, peer: &str, steps: &[&str]) {
        let failures: Vec<String> = steps
            .iter()
            .filter_map(|step| match self.steps.get(step) {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(format!("step `{step}`: {e}")),
                None => Some(format!("step `{step}`: not run")),
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{peer}: {} step(s) failed:\n  {}\n(timings: {:?})",
            failures.len(),
            failures.join("\n  "),
            self.timings
        );
    }
}

/// The next text/binary message (pongs skipped), as an error text when it does not come.
async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Result<Message, String> {
    loop {
        match ws.recv().await {
            Ok(Some(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Ok(Some(Message::Pong(_) | Message::Ping(_))) => {}
            Ok(Some(m)) => return Err(format!("expected a data message, got {}", describe(&m))),
            Ok(None) => return Err(format!("connection ended ({:?})", ws.close_reason())),
            Err(e) => return Err(format!("recv failed: {e} ({:?})", ws.close_reason())),
        }
    }
}

/// Send `message` and check that the echo has the same type and payload.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, message: Message) -> Result<(), String> {
    let sent = describe(&message);
    let is_text = matches!(message, Message::Text(_));
    let payload = Bytes::copy_from_slice(message.as_payload());
    ws.send(message).await.map_err(|e| format!("send {sent}: {e}"))?;
    let got = next_data(ws).await.map_err(|e| format!("after sending {sent}: {e}"))?;
    if matches!(got, Message::Text(_)) != is_text {
        return Err(format!("sent {sent}, got {}", describe(&got)));
    }
    compare(&sent, &payload, got.as_payload())
}

/// Run the scenario on a connection from `open_ws`; the 16 MiB step gets a connection of its
/// own from `open_ws`, and the fragmented steps raw ones from `open_raw` (the handshake driven
/// on the engine, so that frames can be queued with `send_frame`). Records each step.
pub async fn run_scenario<S, W, FW, S2, R, F>(open_ws: W, open_raw: R) -> Results
where
    S: AsyncRead + AsyncWrite + Unpin,
    W: Fn() -> FW,
    FW: Future<Output = WebSocket<S>>,
    S2: AsyncRead + AsyncWrite + Unpin,
    R: Fn() -> F,
    F: Future<Output = (S2, Connection)>,
{
    let mut ws = open_ws().await;
    let mut r = Results::default();
    r.run("text", echo(&mut ws, Message::text("hello wsx"))).await;
    r.run("binary", echo(&mut ws, Message::binary((0..=255u8).collect::<Vec<u8>>()))).await;
    r.run("empty_text", echo(&mut ws, Message::text(""))).await;
    r.run("empty_binary", echo(&mut ws, Message::binary(Bytes::new()))).await;
    for (name, len) in [("size_125", 125), ("size_126", 126), ("size_65535", 65535), ("size_65536", 65536)] {
        r.run(name, echo(&mut ws, Message::binary(random_bytes(len, len as u64)))).await;
    }
    // On a connection of its own, so that a failure here does not hide the later steps.
    r.run("size_16mib", async {
        let mut big = open_ws().await;
        echo(&mut big, Message::binary(random_bytes(16 << 20, 16))).await?;
        big.close(CloseCode::NORMAL, "").await.map_err(|e| format!("close after the 16 MiB echo: {e}"))
    })
    .await;
    r.run("utf8_text", echo(&mut ws, Message::text(UTF8_TEXT))).await;
    r.run("ping", ping(&mut ws)).await;
    r.run("fragmented", fragmented(&open_raw, Fragments::Text)).await;
    r.run("fragmented_binary", fragmented(&open_raw, Fragments::Binary)).await;
    r.run("fragmented_compressible", fragmented(&open_raw, Fragments::Compressible)).await;
    r.run("close", close(&mut ws)).await;
    r
}

/// Ping with [`PING_PAYLOAD`]; the peer must pong the same payload.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Result<(), String> {
    ws.ping(Bytes::from_static(PING_PAYLOAD)).await.map_err(|e| format!("send ping: {e}"))?;
    match ws.recv().await {
        Ok(Some(Message::Pong(p))) if p == PING_PAYLOAD => Ok(()),
        Ok(Some(Message::Pong(p))) => Err(format!("pong with payload {p:?}, expected {PING_PAYLOAD:?}")),
        Ok(Some(m)) => Err(format!("expected a pong, got {}", describe(&m))),
        Ok(None) => Err("connection ended before the pong".into()),
        Err(e) => Err(format!("recv failed before the pong: {e}")),
    }
}

/// Close with 4001 "bye": the peer must answer 4001 "bye" and the closing handshake must be clean.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Result<(), String> {
    let ours = CloseFrame::new(CloseCode(4001), "bye");
    ws.send(Message::Close(Some(ours.clone()))).await.map_err(|e| format!("send close: {e}"))?;
    let mut echo = None;
    loop {
        match ws.recv().await {
            Ok(Some(Message::Close(frame))) => echo = Some(frame),
            Ok(Some(m)) => return Err(format!("after our close, got {}", describe(&m))),
            Ok(None) => break,
            Err(e) => return Err(format!("closing handshake failed: {e}; reason {:?}", ws.close_reason())),
        }
    }
    match echo {
        Some(Some(frame)) if frame == ours => {}
        Some(frame) => return Err(format!("the peer answered {frame:?}, expected 4001 \"bye\"")),
        None => return Err(format!("the stream ended without the peer's close frame ({:?})", ws.close_reason())),
    }
    let reason = ws.close_reason().ok_or("no close reason after the end")?;
    if !reason.is_clean() || reason.code() != CloseCode(4001) {
        return Err(format!("unclean close: {reason:?}"));
    }
    Ok(())
}

/// Which fragmented message to send.
#[derive(Clone, Copy, Debug)]
enum Fragments {
    /// "frag" + "men" + "ted 🦀" as text (three frames).
    Text,
    /// 0..=99 + empty + 100..=199 as binary (three frames, the middle one empty).
    Binary,
    /// Four 4 KiB text frames of a repetitive text: compressed as one message with deflate.
    Compressible,
}

/// Send one fragmented message over a fresh connection, check that it comes back whole, and
/// close. `WebSocket` cannot send frames, so the frames are queued on the engine right after
/// the handshake, before the connection is handed to a `WebSocket`.
async fn fragmented<R, F, S>(open_raw: &R, kind: Fragments) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Fn() -> F,
    F: Future<Output = (S, Connection)>,
{
    let (io, mut conn) = open_raw().await;
    let (frames, expected) = match kind {
        Fragments::Text => (
            vec![Frame::text("frag", false), Frame::continuation("men", false), Frame::continuation("ted 🦀", true)],
            Message::text("fragmented 🦀"),
        ),
        Fragments::Binary => {
            let all: Vec<u8> = (0..200u8).collect();
            (
                vec![
                    Frame::binary(all[..100].to_vec(), false),
                    Frame::continuation(Bytes::new(), false),
                    Frame::continuation(all[100..].to_vec(), true),
                ],
                Message::binary(all),
            )
        }
        Fragments::Compressible => {
            let part = "wsx fragmented and compressible; ".repeat(128);
            let parts: Vec<Frame> =
                (0..4)
                    .map(|i| {
                        if i == 0 {
                            Frame::text(part.clone(), false)
                        } else {
                            Frame::continuation(part.clone(), i == 3)
                        }
                    })
                    .collect();
            (parts, Message::text(part.repeat(4)))
        }
    };
    for frame in frames {
        conn.send_frame(frame).map_err(|e| format!("send_frame: {e}"))?;
    }
    let mut ws = WebSocket::from_connection(io, conn);
    ws.flush().await.map_err(|e| format!("flush the fragments: {e}"))?;
    let got = next_data(&mut ws).await?;
    if matches!(got, Message::Text(_)) != matches!(expected, Message::Text(_)) {
        return Err(format!("sent {:?} fragmented, got {}", kind, describe(&got)));
    }
    compare(&format!("{kind:?} fragments"), expected.as_payload(), got.as_payload())?;
    ws.close(CloseCode::NORMAL, "").await.map_err(|e| format!("close: {e}"))?;
    Ok(())
}

/// The client handshake driven on the engine by hand, leaving the connection open and the
/// engine ready for `send_frame`.
pub async fn open_raw<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, url: &str, config: &Config) -> (S, Connection) {
    let mut conn =
        Connection::client(config, &request(url), OsSeededRng::new(), Instant::now()).expect("client connection");
    loop {
        while conn.transmit().has_remaining() {
            let chunk = conn.transmit().chunk().to_vec();
            io.write_all(&chunk).await.expect("write the handshake");
            conn.transmit().advance(chunk.len());
        }
        io.flush().await.expect("flush the handshake");
        while let Some(event) = conn.next_event() {
            match event {
                Event::Opened(_) => return (io, conn),
                Event::Closed(reason) => panic!("handshake failed: {reason:?}"),
                _ => {}
            }
        }
        let n = io.read_buf(conn.read_buffer()).await.expect("read the handshake response");
        if n == 0 {
            conn.receive_eof(Instant::now());
        } else {
            conn.receive_buffered(Instant::now());
        }
    }
}

/// Connect over TCP to `127.0.0.1:port`.
pub async fn tcp(port: u16) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("TCP connect to the peer");
    tcp.set_nodelay(true).ok();
    tcp
}

/// Run the wsx client scenario against an echo server at `port`, over TLS (trusting only the
/// test CA) when `cert` is set, connecting with [`wsx::ClientBuilder`]. Returns the results
/// and whether permessage-deflate was negotiated.
pub async fn client_scenario(port: u16, cert: Option<&TestCert>, deflate: bool) -> (Results, bool) {
    let config = client_config(deflate);
    let url = format!("{}://127.0.0.1:{port}/", if cert.is_some() { "wss" } else { "ws" });
    let mut builder = wsx::ClientBuilder::new(&url).config(config.clone());
    if let Some(cert) = cert {
        builder = builder.root_certificates_pem(&cert.ca_pem);
    }
    let compressed = Arc::new(Mutex::new(None));
    let open_ws = || async {
        let (ws, _) = within("wsx::ClientBuilder::connect", STEP_TIMEOUT, builder.connect())
            .await
            .unwrap_or_else(|e| panic!("wsx client cannot connect to {url}: {e}"));
        compressed.lock().unwrap().get_or_insert(ws.is_compressed());
        ws
    };
    let results = match cert {
        None => run_scenario(open_ws, || async { open_raw(tcp(port).await, &url, &config).await }).await,
        Some(cert) => run_scenario(open_ws, || async { open_raw(cert.connect(port).await, &url, &config).await }).await,
    };
    let compressed = compressed.lock().unwrap().expect("connected at least once");
    (results, compressed)
}

/// The steps every peer client scenario (Node `ws`, Python `websockets`) reports.
pub const PEER_CLIENT_STEPS: &[&str] = &[
    "text",
    "binary",
    "empty_text",
    "empty_binary",
    "size_125",
    "size_126",
    "size_65535",
    "size_65536",
    "size_16mib",
    "utf8_text",
    "fragmented",
    "fragmented_binary",
    "ping",
    "close",
];

/// Check the echo server's view of a finished peer scenario: one connection, deflate as
/// expected, the peer's 4001 "bye" close received, a clean end.
pub fn assert_server_saw_scenario(logs: &[ConnLog], peer: &str, deflate: bool) {
    assert_eq!(logs.len(), 1, "{peer}: expected one connection, saw {logs:#?}");
    let log = &logs[0];
    assert_eq!(log.compressed, deflate, "{peer}: permessage-deflate negotiated on our side: {log:?}");
    assert!(log.error.is_none(), "{peer}: the echo connection failed: {log:?}");
    assert_eq!(
        log.peer_close,
        Some(Some(CloseFrame::new(CloseCode(4001), "bye"))),
        "{peer}: the close frame our server received"
    );
    let reason = log.close_reason.as_ref().expect("a close reason");
    assert!(reason.is_clean(), "{peer}: our server's close was not clean: {reason:?}");
    assert_eq!(reason.sent, Some(CloseFrame::new(CloseCode(4001), "bye")), "{peer}: the close frame our server echoed");
}

// ---------------------------------------------------------------------------------------------
// Scripted peers (Node `ws`, Python `websockets`): both directions
// ---------------------------------------------------------------------------------------------

/// A peer implementation with a scenario client and an echo server in `tests-peers/`.
pub struct ScriptPeer {
    pub name: &'static str,
    pub env: PeerEnv,
    /// The interpreter.
    pub program: PathBuf,
    pub client_script: PathBuf,
    pub server_script: PathBuf,
    /// The server flags for permessage-deflate on or off.
    pub server_deflate_args: fn(bool) -> Vec<String>,
}

impl ScriptPeer {
    /// Node `ws` (permessage-deflate off on its server unless `--deflate`).
    pub fn node() -> Self {
        let env = PeerEnv::load();
        let client_script = env.require_node("node/client.js");
        let server_script = env.require_node("node/echo_server.js");
        Self {
            name: "node-ws",
            program: env.node.clone(),
            env,
            client_script,
            server_script,
            server_deflate_args: |on| if on { vec!["--deflate".into()] } else { vec![] },
        }
    }

    /// Python `websockets` (permessage-deflate on on its server unless `--no-deflate`).
    pub fn python() -> Self {
        let env = PeerEnv::load();
        let client_script = env.require_python("python/client.py");
        let server_script = env.require_python("python/echo_server.py");
        Self {
            name: "python-websockets",
            program: env.python.clone(),
            env,
            client_script,
            server_script,
            server_deflate_args: |on| {
                if on { vec![] } else { vec!["--no-deflate".into()] }
            },
        }
    }

    /// Run the peer's client with `url` and `extra` arguments.
    pub async fn run_client(&self, url: &str, extra: Vec<String>) -> ClientRun {
        let mut args = vec![self.client_script.display().to_string(), url.to_owned()];
        args.extend(extra);
        run_client(&self.env, &format!("{} client", self.name), &self.program, &args).await
    }

    /// Start the peer's echo server.
    pub async fn spawn_server(&self, deflate: bool, cert: Option<&TestCert>) -> PeerServer {
        let mut args = vec![self.server_script.display().to_string()];
        args.extend((self.server_deflate_args)(deflate));
        args.extend(tls_args(cert));
        PeerServer::spawn(&self.env, &format!("{} echo server", self.name), &self.program, &args).await
    }

    /// (a) Our echo server (deflate on or off) against the peer's client scenario (which
    /// offers deflate unless `client_deflate` is false), over TLS when `tls`.
    pub async fn client_against_wsx(&self, server_deflate: bool, client_deflate: bool, tls: bool) {
        let cert = tls.then(TestCert::generate);
        let server = EchoServer::start(server_config(server_deflate), cert.as_ref()).await;
        let mut extra = ca_args(cert.as_ref());
        if !client_deflate {
            extra.push("--no-deflate".into());
        }
        let run = self.run_client(&server.url(tls), extra).await;
        let negotiated = server_deflate && client_deflate;

        run.assert_steps("/results", PEER_CLIENT_STEPS);
        assert_eq!(run.bool_at("/ok"), Some(true), "{}", run.describe());
        assert!(run.status.success(), "{}", run.describe());
        let extensions = run.str_at("/extensions").unwrap_or_else(|| panic!("no extensions: {}", run.describe()));
        assert_eq!(
            extensions.starts_with("permessage-deflate"),
            negotiated,
            "{}: Sec-WebSocket-Extensions {extensions:?} with server deflate {server_deflate}, client deflate {client_deflate}",
            self.name
        );
        assert_eq!(run.int_at("/close/code"), Some(4001), "{}", run.describe());
        assert_eq!(run.str_at("/close/reason"), Some("bye"), "{}", run.describe());
        assert_eq!(run.bool_at("/close/wasClean"), Some(true), "{}", run.describe());

        let logs = server.settle().await;
        assert_server_saw_scenario(&logs, self.name, negotiated);
        // 12 data steps, two of them fragmented: 12 echoes.
        assert_eq!(logs[0].echoed, 12, "{}: messages our server echoed", self.name);
    }

    /// (a) The peer's close-test mode against our server: it sends `code` (`"none"` for a
    /// body-less close) and `reason`, raw when its library refuses; we must answer
    /// `expected_code` (and `expected_reason` when given). An error text names what differed.
    pub async fn close_test_against_wsx(
        &self,
        code: &str,
        reason: &str,
        expected_code: u16,
        expected_reason: Option<&str>,
    ) -> Result<(), String> {
        let server = EchoServer::start(server_config(true), None).await;
        let run = self.run_client(&server.url(false), vec!["--close-test".into(), code.into(), reason.into()]).await;
        let logs = server.settle().await;
        let mut errors = Vec::new();
        if run.str_at("/echo") != Some("ok") {
            errors.push(format!("the echo before the close: {:?}", run.json.get("echo")));
        }
        if run.int_at("/close/code") != Some(i64::from(expected_code)) {
            errors.push(format!(
                "our server answered close code {:?}, expected {expected_code}",
                run.json.pointer("/close/code")
            ));
        }
        if let Some(expected) = expected_reason
            && run.str_at("/close/reason") != Some(expected)
        {
            errors.push(format!(
                "our server answered close reason {:?}, expected {expected:?}",
                run.json.pointer("/close/reason")
            ));
        }
        if !run.status.success() {
            errors.push(format!("the peer exited with {}", run.status));
        }
        match logs.as_slice() {
            [log] => match log.close_reason.as_ref().and_then(|r| r.sent.as_ref()) {
                Some(sent) if sent.code == CloseCode(expected_code) => {}
                _ => errors.push(format!("our server's own record of the close: {:?}", log.close_reason)),
            },
            _ => errors.push(format!("expected one connection, saw {logs:?}")),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            let raw = run.bool_at("/sent/raw").unwrap_or(false);
            Err(format!(
                "{} sent close {code} {:?} (raw frame: {raw}): {}; peer output: {}",
                self.name,
                if reason.len() > 20 { format!("{} bytes", reason.len()) } else { reason.to_owned() },
                errors.join("; "),
                run.stdout.trim()
            ))
        }
    }

    /// Run [`close_test_against_wsx`](Self::close_test_against_wsx) for every case and fail
    /// listing each case that did not behave.
    pub async fn close_tests_against_wsx(&self, cases: &[(&str, &str, u16, Option<&str>)]) {
        let mut failures = Vec::new();
        for (code, reason, expected_code, expected_reason) in cases {
            if let Err(e) = self.close_test_against_wsx(code, reason, *expected_code, *expected_reason).await {
                failures.push(e);
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} close cases failed:\n  {}",
            failures.len(),
            cases.len(),
            failures.join("\n  ")
        );
    }

    /// The close cases every peer runs against our server.
    pub fn close_cases() -> Vec<(&'static str, &'static str, u16, Option<&'static str>)> {
        vec![
            // Valid codes are echoed; a body-less close is answered with a body-less one (1005).
            ("4002", "hi", 4002, Some("hi")),
            ("1000", "", 1000, Some("")),
            ("none", "", 1005, Some("")),
            // Codes that must never be on the wire (RFC 6455 §7.4.1, §7.4.2): fail with 1002.
            ("1005", "bad", 1002, None),
            ("1006", "bad", 1002, None),
            ("1015", "bad", 1002, None),
            ("999", "bad", 1002, None),
            ("1004", "bad", 1002, None),
            ("2999", "bad", 1002, None),
            ("5000", "bad", 1002, None),
            // A reason over 123 bytes makes the close payload over 125 bytes (§5.5): 1002.
            ("4000", LONG_REASON, 1002, None),
        ]
    }

    /// (b) The peer's echo server against the wsx client scenario.
    pub async fn wsx_against_server(&self, deflate: bool, tls: bool) {
        let cert = tls.then(TestCert::generate);
        let mut server = self.spawn_server(deflate, cert.as_ref()).await;
        let (results, compressed) = client_scenario(server.port, cert.as_ref(), deflate).await;
        let alive = server.is_running();
        if results.steps.values().any(|r| r.is_err()) {
            eprintln!("{} stderr:\n{}", server.name, server.stderr());
        }
        results.assert_all_ok(&format!("wsx client against {}", server.name), SCENARIO_STEPS);
        assert_eq!(compressed, deflate, "{}: permessage-deflate negotiated by the wsx client", server.name);
        assert!(alive, "{} exited during the scenario: {}", server.name, server.stderr());
        eprintln!("{} timings: {:?}", server.name, results.timings);
    }
}
