//! Helpers for the `wsx` binary's tests: spawning it (and the Node peers) as children that are
//! killed on drop, watching their output, and small raw HTTP/WebSocket clients.
//!
//! Everything binds 127.0.0.1, every wait is bounded, and a missing peer fails the test with a
//! message naming `bash scripts/setup-peers` (a skip would hide a broken setup).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

/// The bound on a whole test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound on one wait for output or a reply.
pub const WAIT: Duration = Duration::from_secs(15);

/// Run `test` within [`TEST_TIMEOUT`].
pub async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

/// Await `f` within [`WAIT`], failing with `what`.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

pub fn wsx_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wsx")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process whose output lines are collected; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Spawn `program` with `args`, stdin piped (kept open), stdout and stderr collected.
    pub fn spawn(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Self {
        Self::spawn_with_env(program, args, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables.
    pub fn spawn_with_env(program: impl AsRef<std::ffi::OsStr>, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn child process");
        let stdout = collect(child.stdout.take().expect("stdout piped"));
        let stderr = collect(child.stderr.take().expect("stderr piped"));
        Self { child, stdout, stderr }
    }

    /// Wait for a stdout line matching `pred`; returns it.
    pub async fn stdout_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stdout, &self.stderr, what, WAIT, pred).await
    }

    /// [`stdout_line`](Self::stdout_line) with a longer bound (a browser starting, say).
    pub async fn stdout_line_within(&self, wait: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stdout, &self.stderr, what, wait, pred).await
    }

    /// Wait for a stderr line matching `pred`; returns it.
    pub async fn stderr_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stderr, &self.stdout, what, WAIT, pred).await
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("child is running")
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        assert!(status.expect("run kill").success(), "kill -TERM failed");
        within("the child to exit after SIGTERM", self.child.wait()).await.expect("wait for child")
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

async fn wait_line(
    lines: &Mutex<Vec<String>>,
    other: &Mutex<Vec<String>>,
    what: &str,
    wait: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| pred(l)) {
            return line.clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; output so far:\n{}\n--- other stream:\n{}",
                lines.lock().unwrap().join("\n"),
                other.lock().unwrap().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `wsx serve --port 0 ARGS`, once it listens; with its port.
pub async fn serve(args: &[&str]) -> (Proc, u16) {
    let mut all = vec!["serve", "--host", "127.0.0.1", "--port", "0"];
    all.extend_from_slice(args);
    let proc = Proc::spawn(wsx_bin(), &all);
    let line = proc.stderr_line("the server to listen", |l| l.contains("listening on ")).await;
    (proc, port_in(&line))
}

/// The development certificate `wsx serve --tls-self-signed` wrote for a test, in a temporary
/// folder of its own that is removed when this is dropped.
pub struct DevCert {
    dir: PathBuf,
    /// The certificate's PEM file (the key is next to it), for a client to trust.
    pub path: PathBuf,
}

impl DevCert {
    /// [`path`](Self::path) as a string, for command-line arguments.
    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for DevCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `wsx serve --port 0 ARGS --tls-self-signed`, once it listens, writing its certificate to a
/// temporary folder named after `name`; with its port and the certificate.
pub async fn serve_tls(name: &str, args: &[&str]) -> (Proc, u16, DevCert) {
    let dir = temp_dir(name);
    let cert = DevCert { path: dir.join("c.pem"), dir };
    let (proc, port) = serve(&[args, &["--tls-self-signed", "--cert-out", cert.path_str()]].concat()).await;
    (proc, port, cert)
}

/// Send `count` 4 KiB binary messages into a room or echo that sends them back to `talker`,
/// reading each batch of 32 back before sending the next, so that the talker's own queue stays
/// small while whoever else hears them and does not read falls behind.
pub async fn talk_in_batches<S>(talker: &mut wsx::WebSocket<S>, count: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let chunk = vec![1u8; 4 << 10];
    for _ in 0..count / 32 {
        for _ in 0..32 {
            talker.send(wsx::Message::binary(chunk.clone())).await.unwrap();
        }
        for _ in 0..32 {
            let got = within("the talker's own message", talker.recv()).await.unwrap();
            assert_eq!(got, Some(wsx::Message::binary(chunk.clone())), "the talker missed nothing");
        }
    }
}

/// The port of the first `://127.0.0.1:PORT` in `line`.
pub fn port_in(line: &str) -> u16 {
    let after = line.split("://127.0.0.1:").nth(1).unwrap_or_else(|| panic!("no address in {line:?}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no port in {line:?}"))
}

/// The result of a `wsx` run that ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `wsx ARGS` with `input` on stdin (then closed), to its end (bounded).
pub async fn run_wsx(args: &[&str], input: &str) -> Run {
    let mut cmd = Command::new(wsx_bin());
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn wsx");
    let mut stdin = child.stdin.take().expect("stdin piped");
    stdin.write_all(input.as_bytes()).await.expect("write stdin");
    drop(stdin);
    let output = within(&format!("wsx {args:?} to finish"), child.wait_with_output()).await.expect("wait for wsx");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Send a raw HTTP request and read the whole response (the server closes after it).
pub async fn http(port: u16, request: &str) -> String {
    within("an HTTP response", async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write request");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.expect("read response");
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
}

/// Where the Node peers are (see tests-peers/README.md for the variables).
pub struct Peers {
    pub dir: PathBuf,
    pub node: PathBuf,
    pub node_modules: PathBuf,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Peers {
    /// Find Node and the peers; fail if they are not installed.
    pub fn require(module: &str) -> Self {
        let dir = var("WSX_PEERS_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("tests-peers"));
        let node = var("WSX_NODE").unwrap_or_else(|| "node".into());
        let node = if node.contains('/') {
            PathBuf::from(node)
        } else {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(&node))
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from(&node))
        };
        let node_modules = var("WSX_NODE_MODULES").map(PathBuf::from).unwrap_or_else(|| dir.join("node_modules"));
        let setup = "run `bash scripts/setup-peers` (see tests-peers/README.md)";
        assert!(node.is_file(), "Node.js not found at {}: {setup}", node.display());
        assert!(
            node_modules.join(module).join("package.json").is_file(),
            "{module} is not installed in {}: {setup}",
            node_modules.display()
        );
        Self { dir, node, node_modules }
    }

    /// Spawn a Node script with the peer environment.
    pub fn node(&self, script: &Path, args: &[&str]) -> Proc {
        let mut all = vec![script.to_str().expect("UTF-8 path")];
        all.extend_from_slice(args);
        let mut cmd = Command::new(&self.node);
        cmd.args(&all)
            .env("WSX_NODE_MODULES", &self.node_modules)
            .env("WSX_PEERS_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(chromium) = var("WSX_CHROMIUM") {
            cmd.env("WSX_CHROMIUM", chromium);
        }
        let mut child = cmd.spawn().expect("spawn node");
        let stdout = collect(child.stdout.take().expect("stdout piped"));
        let stderr = collect(child.stderr.take().expect("stderr piped"));
        Proc { child, stdout, stderr }
    }

    /// The Node `ws` echo server, once ready; with its port.
    pub async fn echo_server(&self) -> (Proc, u16) {
        let proc = self.node(&self.dir.join("node/echo_server.js"), &[]);
        let line = proc.stdout_line("READY from the Node echo server", |l| l.starts_with("READY ")).await;
        let port = line["READY ".len()..].trim().parse().expect("port after READY");
        (proc, port)
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsx-cli-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Raise this process's soft limit on open files to at least `want` (up to the hard limit),
/// for tests that hold thousands of sockets; children spawned afterwards inherit it. Fails
/// the test if the hard limit is lower.
pub fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid `rlimit` for the call to fill in.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0, "getrlimit");
    assert!(limit.rlim_max >= want, "the hard open-file limit {} is below {want}: raise it", limit.rlim_max);
    if limit.rlim_cur < want {
        limit.rlim_cur = want;
        // SAFETY: `limit` is a valid `rlimit`, read just above, with a soft limit under the hard one.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");
    }
}

/// A client connection of the tests.
pub type Ws = wsx::WebSocket<wsx::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message (pings and pongs skipped), within [`WAIT`].
pub async fn next_text<S>(ws: &mut wsx::WebSocket<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match within("a message", ws.recv()).await.expect("recv") {
            Some(wsx::Message::Text(t)) => return t.as_str().to_owned(),
            Some(wsx::Message::Ping(_) | wsx::Message::Pong(_)) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The code of the next close frame (data messages, pings and pongs skipped), within [`WAIT`].
pub async fn next_close<S>(ws: &mut wsx::WebSocket<S>) -> Option<wsx::CloseCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within("the close", async {
        loop {
            match ws.recv().await {
                Ok(Some(wsx::Message::Close(frame))) => return frame.map(|f| f.code),
                Ok(Some(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
}
