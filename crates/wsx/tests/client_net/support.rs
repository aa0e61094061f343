//! What the client's network tests share: certificates, an echo server that records the
//! requests it saw, and the proxy processes (tinyproxy, microsocks) started on free ports.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::net::{TcpListener, TcpStream};
use wsx::{Accept, Message, Server, ShutdownHandle, server::Builder, tls::ServerTls};

/// How long a proxy process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The test kit's CA and leaf certificate, made for `localhost` and `127.0.0.1` here.
pub(crate) type Pki = wsx_testkit::Pki;

/// What the client's network tests do with a [`Pki`].
pub(crate) trait LocalPki {
    /// A CA and a leaf certificate it signed for `localhost` and `127.0.0.1`.
    fn local() -> Self;
    /// The server's TLS with the leaf certificate.
    fn server_tls(&self) -> ServerTls;
}

impl LocalPki for Pki {
    fn local() -> Self {
        Self::new(&["localhost", "127.0.0.1"])
    }

    fn server_tls(&self) -> ServerTls {
        ServerTls::from_pem(&self.cert_pem, &self.key_pem).unwrap()
    }
}

/// An echo server on a free loopback port that records the headers of every upgrade request.
pub(crate) struct Echo {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    stop: ShutdownHandle,
}

impl Echo {
    /// Plain `ws://`, or `wss://` with `tls`.
    pub(crate) async fn start(tls: Option<ServerTls>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let builder = Server::builder().on_request(move |request| {
            record.lock().unwrap().push(request.headers().clone());
            Ok(Accept::new())
        });
        let (addr, stop) = serve_echo(builder, tls).await;
        Self { addr, seen, stop }
    }

    /// The server's URL with `scheme` (`ws` or `wss`): by IP, which the certificate covers, so
    /// that a SOCKS5 proxy resolving `localhost` to `::1` cannot miss it.
    pub(crate) fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/echo", self.addr)
    }

    /// The headers of the last upgrade request.
    pub(crate) fn last_request(&self) -> http::HeaderMap {
        self.seen.lock().unwrap().last().cloned().expect("the server saw a request")
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.shutdown();
    }
}

/// Run an echo server built by `builder` (with `tls` for `wss://`) on a free loopback port.
pub(crate) async fn serve_echo(builder: Builder, tls: Option<ServerTls>) -> (SocketAddr, ShutdownHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = match tls {
        Some(tls) => {
            let server = builder.tls(tls).from_listener(listener);
            let stop = server.shutdown_handle();
            tokio::spawn(server.serve(|mut ws, _| async move { echo(&mut ws).await }));
            stop
        }
        None => {
            let server = builder.from_listener(listener);
            let stop = server.shutdown_handle();
            tokio::spawn(server.serve(|mut ws, _| async move { echo(&mut ws).await }));
            stop
        }
    };
    (addr, stop)
}

/// Echo data messages until the peer closes.
pub(crate) async fn echo<S>(ws: &mut wsx::WebSocket<S>) -> wsx::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = ws.recv().await? {
        if message.is_data() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

/// Send a text message and expect it back.
pub(crate) async fn round_trip<S>(ws: &mut wsx::WebSocket<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(text).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.recv()).await.expect("echo in time");
    match echoed.unwrap() {
        Some(Message::Text(t)) => assert_eq!(t, text),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// A free loopback port (bound, then released for a child process to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A scratch directory for one test, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("wsx-{tag}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A proxy program: `WSX_<NAME>` from the environment or `target/peers.env`, else `/usr/bin`.
fn program(name: &str) -> PathBuf {
    let var = format!("WSX_{}", name.to_ascii_uppercase());
    let from_env = std::env::var(&var).ok().or_else(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers.env");
        let file = std::fs::read_to_string(root).ok()?;
        file.lines().find_map(|l| l.strip_prefix(&format!("export {var}=")).map(|v| v.trim_matches('\'').to_owned()))
    });
    let path = from_env.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin").join(name));
    assert!(
        path.exists(),
        "{} not found: run `bash scripts/setup-peers` (it installs the Debian package)",
        path.display()
    );
    path
}

/// A proxy process listening on 127.0.0.1, killed on drop.
pub(crate) struct ProxyProcess {
    child: Child,
    pub(crate) port: u16,
    pub(crate) log: Option<PathBuf>,
    _dir: TempDir,
}

impl ProxyProcess {
    /// tinyproxy (HTTP CONNECT), with Basic auth if `auth` is given.
    pub(crate) async fn tinyproxy(auth: Option<(&str, &str)>) -> Self {
        let dir = TempDir::new("tinyproxy");
        let port = free_port();
        let log = dir.0.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nAllow 127.0.0.1\nLogLevel Connect\n\
             LogFile \"{}\"\nDisableViaHeader Yes\n",
            log.display()
        );
        if let Some((user, password)) = auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.0.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(program("tinyproxy"))
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        Self::ready(child, port, Some(log), dir).await
    }

    /// microsocks (SOCKS5), with a user and password if `auth` is given.
    pub(crate) async fn microsocks(auth: Option<(&str, &str)>) -> Self {
        let dir = TempDir::new("microsocks");
        let port = free_port();
        let mut command = Command::new(program("microsocks"));
        command.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((user, password)) = auth {
            command.args(["-u", user, "-P", password]);
        }
        let child =
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start microsocks");
        Self::ready(child, port, None, dir).await
    }

    /// Wait until the process accepts connections on `port`.
    async fn ready(child: Child, port: u16, log: Option<PathBuf>, dir: TempDir) -> Self {
        let mut proxy = Self { child, port, log, _dir: dir };
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return proxy;
            }
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("the proxy exited before listening: {status}");
            }
            assert!(started.elapsed() < START_TIMEOUT, "the proxy did not listen on {port} within {START_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The proxy's log so far ("" when it keeps none).
    pub(crate) fn log_text(&self) -> String {
        self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS front for a proxy (as stunnel would be): accepts TLS on a free port and relays the
/// plaintext to `backend`. Makes an `https://` proxy of tinyproxy. Stops with the runtime.
pub(crate) async fn tls_front(tls: ServerTls, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(mut front) = tls.accept(tcp).await else { return };
                let Ok(mut back) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
            });
        }
    });
    addr
}
