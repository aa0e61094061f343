//! The client against real servers on loopback: URLs, TLS, errors, handshake options.

// `accept_with`'s callbacks reject with a whole `http::Response`, by design.

use std::{net::SocketAddr, time::Duration};

use rcgen::KeyPair;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use wsx::{Accept, ClientBuilder, CloseCode, Config, DeflateConfig, Message, Request, tls::ServerTls};
use wsx_testkit::Pki;

/// What the server saw of the opening request.
#[derive(Debug)]
struct Seen {
    path: String,
    query: Option<String>,
    host: Option<String>,
    origin: Option<String>,
    protocols: Vec<String>,
    headers: http::HeaderMap,
    compressed: bool,
}

impl Seen {
    fn of(request: &Request) -> Self {
        Self {
            path: request.path().to_owned(),
            query: request.query().map(str::to_owned),
            host: request.host().map(str::to_owned),
            origin: request.origin().map(str::to_owned),
            protocols: request.protocols().to_vec(),
            headers: request.headers().clone(),
            compressed: false,
        }
    }
}

type Decide = fn(&Request) -> Result<Accept, wsx::Reject>;

fn accept_all(_: &Request) -> Result<Accept, wsx::Reject> {
    Ok(Accept::new())
}

/// Serve one connection on `listener`: optional TLS, `wsx::accept_with`, then echo data
/// messages until the client closes. Reports what the server saw of the request.
async fn serve_one(
    listener: TcpListener,
    tls: Option<ServerTls>,
    config: Config,
    decide: Decide,
) -> oneshot::Receiver<Seen> {
    let (seen_tx, seen_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match tls {
            Some(tls) => {
                // A client that rejects the certificate fails the TLS handshake: nothing to serve.
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                echo(stream, &config, decide, seen_tx).await;
            }
            None => echo(tcp, &config, decide, seen_tx).await,
        }
    });
    seen_rx
}

async fn echo<S>(io: S, config: &Config, decide: Decide, seen_tx: oneshot::Sender<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut seen = None;
    let accepted = wsx::accept_with(io, config, |request| {
        seen = Some(Seen::of(request));
        decide(request)
    })
    .await;
    let Ok(mut ws) = accepted else { return };
    let mut seen = seen.unwrap();
    seen.compressed = ws.is_compressed();
    let _ = seen_tx.send(seen);
    while let Ok(Some(message)) = ws.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_)) && ws.send(message).await.is_err() {
            break;
        }
    }
}

async fn listener_v4() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Send one text message and expect it back, then close cleanly.
async fn round_trip<S>(ws: &mut wsx::WebSocket<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(text).await.unwrap();
    match ws.recv().await.unwrap() {
        Some(Message::Text(echoed)) => assert_eq!(echoed, text),
        other => panic!("expected the echo, got {other:?}"),
    }
}

fn server_tls(pki: &Pki) -> ServerTls {
    ServerTls::from_pem(&pki.cert_pem, &pki.key_pem).unwrap()
}

#[tokio::test]
async fn ws_echo_round_trip() {
    let (listener, addr) = listener_v4().await;
    let seen = serve_one(listener, None, Config::default(), accept_all).await;
    let (mut ws, response) = wsx::connect(&format!("ws://{addr}/echo?room=1#ignored")).await.unwrap();
    assert_eq!(response.status(), 101);
    assert!(!ws.get_ref().is_tls());
    assert!(ws.get_ref().get_ref().nodelay().unwrap(), "TCP_NODELAY is on");
    round_trip(&mut ws, "hello").await;
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();
    let seen = seen.await.unwrap();
    assert_eq!(seen.path, "/echo");
    assert_eq!(seen.query.as_deref(), Some("room=1"));
    assert_eq!(seen.host, Some(addr.to_string()));
}

#[tokio::test]
async fn http_scheme_means_ws() {
    let (listener, addr) = listener_v4().await;
    let seen = serve_one(listener, None, Config::default(), accept_all).await;
    let (mut ws, _) = wsx::connect(&format!("http://{addr}")).await.unwrap();
    round_trip(&mut ws, "over http").await;
    assert_eq!(seen.await.unwrap().path, "/");
}

#[tokio::test]
async fn connect_future_is_send() {
    let (listener, addr) = listener_v4().await;
    let _seen = serve_one(listener, None, Config::default(), accept_all).await;
    let builder = ClientBuilder::new(format!("ws://{addr}/"));
    let task = tokio::spawn(async move {
        let (mut ws, _) = builder.connect().await?;
        ws.send("from a task").await?;
        ws.recv().await
    });
    assert!(matches!(task.await.unwrap().unwrap(), Some(Message::Text(t)) if t == "from a task"));
}

#[tokio::test]
async fn ipv6_literal() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    let addr = listener.local_addr().unwrap();
    let seen = serve_one(listener, None, Config::default(), accept_all).await;
    let (mut ws, _) = wsx::connect(&format!("ws://[::1]:{}/x?y", addr.port())).await.unwrap();
    round_trip(&mut ws, "v6").await;
    let seen = seen.await.unwrap();
    assert_eq!(seen.host, Some(format!("[::1]:{}", addr.port())));
    assert_eq!(seen.path, "/x");
    assert_eq!(seen.query.as_deref(), Some("y"));
}

#[tokio::test]
async fn wss_with_custom_root() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    for host in ["localhost", "127.0.0.1"] {
        let (listener, addr) = listener_v4().await;
        let _seen = serve_one(listener, Some(server_tls(&pki)), Config::default(), accept_all).await;
        let url = format!("wss://{host}:{}/secure", addr.port());
        let (mut ws, _) = ClientBuilder::new(&url).root_certificates_pem(&pki.ca_pem).connect().await.unwrap();
        assert!(ws.get_ref().is_tls());
        assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
        round_trip(&mut ws, "secret").await;
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }
}

#[tokio::test]
async fn wss_root_certificates_from_file() {
    let pki = Pki::new(&["localhost"]);
    let dir = std::env::temp_dir().join(format!("wsx-client-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let tls = ServerTls::from_pem_files(&cert, &key).unwrap();

    let (listener, addr) = listener_v4().await;
    let _seen = serve_one(listener, Some(tls), Config::default(), accept_all).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let (mut ws, _) = ClientBuilder::new(url).root_certificates_pem_file(&ca).connect().await.unwrap();
    round_trip(&mut ws, "from files").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn wss_untrusted_certificate_fails() {
    let pki = Pki::new(&["localhost"]);
    let (listener, addr) = listener_v4().await;
    let _seen = serve_one(listener, Some(server_tls(&pki)), Config::default(), accept_all).await;
    // The default roots are webpki's, which do not include our CA.
    let error = wsx::connect(&format!("wss://localhost:{}/", addr.port())).await.unwrap_err();
    assert!(error.is_tls(), "{error:?}");
    assert!(error.is_io(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
}

#[tokio::test]
async fn wss_wrong_hostname_fails() {
    let pki = Pki::new(&["example.com"]);
    let (listener, addr) = listener_v4().await;
    let _seen = serve_one(listener, Some(server_tls(&pki)), Config::default(), accept_all).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let error = ClientBuilder::new(url).root_certificates_pem(&pki.ca_pem).connect().await.unwrap_err();
    assert!(error.is_tls(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn wss_danger_accept_invalid_certs() {
    let pki = Pki::new(&["example.com"]);
    let (listener, addr) = listener_v4().await;
    let _seen = serve_one(listener, Some(server_tls(&pki)), Config::default(), accept_all).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let (mut ws, _) = ClientBuilder::new(url).danger_accept_invalid_certs(true).connect().await.unwrap();
    round_trip(&mut ws, "insecure").await;
}

#[tokio::test]
async fn bad_urls() {
    for (url, why) in [
        ("ftp://example.com/", "scheme"),
        ("example.com:80", "scheme"),
        ("127.0.0.1:8080", "expected ws://"),
        ("ws://", "host"),
        ("wss://:443/", "host"),
        ("ws://[::1/", "IPv6"),
        ("ws://user:secret@example.com/", "Authorization"),
        ("", "expected ws://"),
    ] {
        let error = wsx::connect(url).await.unwrap_err();
        assert!(error.is_config(), "{url}: {error:?}");
        let message = error.to_string();
        assert!(message.starts_with("invalid URL"), "{url}: {message}");
        assert!(message.contains(why), "{url}: {message}");
    }
}

#[tokio::test]
async fn bad_headers_and_tls_settings_are_config_errors() {
    let errors = [
        ClientBuilder::new("ws://127.0.0.1:1/").header("bad name", "x").connect().await.unwrap_err(),
        ClientBuilder::new("ws://127.0.0.1:1/").header("x-ok", "line\nbreak").connect().await.unwrap_err(),
        ClientBuilder::new("ws://127.0.0.1:1/").origin("bad\r\norigin").connect().await.unwrap_err(),
        ClientBuilder::new("ws://127.0.0.1:1/").header("upgrade", "h2c").connect().await.unwrap_err(),
        ClientBuilder::new("ws://127.0.0.1:1/").protocol("no spaces").connect().await.unwrap_err(),
        ClientBuilder::new("ws://127.0.0.1:1/").root_certificates_pem("not PEM").connect().await.unwrap_err(),
        ClientBuilder::new("ws://127.0.0.1:1/")
            .root_certificates_pem_file("/nonexistent/ca.pem")
            .connect()
            .await
            .unwrap_err(),
    ];
    for error in &errors {
        assert!(error.is_config(), "{error:?}");
        assert!(!error.is_io(), "nothing was connected: {error:?}");
    }
    assert!(errors[5].is_tls() && errors[5].to_string().contains("no certificates"), "{}", errors[5]);
    assert!(errors[6].to_string().contains("/nonexistent/ca.pem"), "{}", errors[6]);
}

#[tokio::test]
async fn connection_refused_is_io() {
    let (listener, addr) = listener_v4().await;
    drop(listener);
    let error = wsx::connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert!(error.is_io(), "{error:?}");
    assert!(!error.is_tls(), "{error:?}");
    assert_eq!(error.io_error().unwrap().kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn http_403_with_body() {
    let (listener, addr) = listener_v4().await;
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        read_request_head(&mut tcp).await;
        let body = "you shall not pass";
        let response = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(response.as_bytes()).await.unwrap();
        // Hold the connection open: the client must stop at Content-Length, not at EOF.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let error = wsx::connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert_eq!(error.http_status(), Some(http::StatusCode::FORBIDDEN), "{error:?}");
    assert!(error.is_handshake(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("403") && message.contains("you shall not pass"), "{message}");
}

async fn read_request_head(tcp: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "client hung up before finishing its request");
        head.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn connect_timeout_covers_tls() {
    // A server that accepts TCP but never answers the TLS hello.
    let (listener, addr) = listener_v4().await;
    tokio::spawn(async move {
        let (_tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let started = std::time::Instant::now();
    let error = ClientBuilder::new(format!("wss://{addr}/"))
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn handshake_timeout_comes_from_config() {
    // A server that accepts TCP but never answers the upgrade request.
    let (listener, addr) = listener_v4().await;
    tokio::spawn(async move {
        let (_tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let error = ClientBuilder::new(format!("ws://{addr}/"))
        .config(Config::default().handshake_timeout(Duration::from_millis(200)))
        .connect()
        .await
        .unwrap_err();
    assert!(error.is_timeout() && error.is_handshake(), "{error:?}");
}

#[tokio::test]
async fn subprotocol_negotiation() {
    fn pick_v1(request: &Request) -> Result<Accept, wsx::Reject> {
        assert_eq!(request.protocols(), ["chat.v2", "chat.v1"]);
        Ok(Accept::new().protocol("chat.v1"))
    }
    let (listener, addr) = listener_v4().await;
    let seen = serve_one(listener, None, Config::default(), pick_v1).await;
    let (mut ws, response) =
        ClientBuilder::new(format!("ws://{addr}/")).protocol("chat.v2").protocol("chat.v1").connect().await.unwrap();
    assert_eq!(response.protocol(), Some("chat.v1"));
    assert_eq!(ws.protocol(), Some("chat.v1"));
    round_trip(&mut ws, "negotiated").await;
    assert_eq!(seen.await.unwrap().protocols, ["chat.v2", "chat.v1"]);
}

#[tokio::test]
async fn no_subprotocol_offered_by_default() {
    let (listener, addr) = listener_v4().await;
    let seen = serve_one(listener, None, Config::default(), accept_all).await;
    let (ws, response) = wsx::connect(&format!("ws://{addr}/")).await.unwrap();
    assert_eq!(response.protocol(), None);
    assert_eq!(ws.protocol(), None);
    let seen = seen.await.unwrap();
    assert!(seen.protocols.is_empty());
    assert!(seen.origin.is_none());
}

#[tokio::test]
async fn headers_and_origin_reach_the_server() {
    let (listener, addr) = listener_v4().await;
    let seen = serve_one(listener, None, Config::default(), accept_all).await;
    let (_ws, _) = ClientBuilder::new(format!("ws://{addr}/"))
        .origin("https://app.example")
        .header("authorization", "Bearer t0k3n")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .connect()
        .await
        .unwrap();
    let seen = seen.await.unwrap();
    assert_eq!(seen.origin.as_deref(), Some("https://app.example"));
    assert_eq!(seen.headers["authorization"], "Bearer t0k3n");
    let multi = seen.headers.get_all("x-multi").iter().collect::<Vec<_>>();
    assert_eq!(multi, ["one", "two"]);
}

#[tokio::test]
async fn deflate_offered_by_default_and_negotiated() {
    let (listener, addr) = listener_v4().await;
    let server_config = Config::default().deflate(Some(DeflateConfig::default()));
    let seen = serve_one(listener, None, server_config, accept_all).await;
    let (mut ws, response) = wsx::connect(&format!("ws://{addr}/")).await.unwrap();
    assert!(ws.is_compressed());
    assert!(response.headers().contains_key("sec-websocket-extensions"));
    let long = "compress me ".repeat(1000);
    round_trip(&mut ws, &long).await;
    let seen = seen.await.unwrap();
    assert!(seen.compressed);
    let offer = seen.headers["sec-websocket-extensions"].to_str().unwrap();
    assert!(offer.contains("permessage-deflate"), "{offer}");
}

#[tokio::test]
async fn deflate_declined_by_a_plain_server() {
    let (listener, addr) = listener_v4().await;
    let seen = serve_one(listener, None, Config::default(), accept_all).await;
    let (mut ws, _) = wsx::connect(&format!("ws://{addr}/")).await.unwrap();
    assert!(!ws.is_compressed());
    round_trip(&mut ws, "uncompressed").await;
    assert!(!seen.await.unwrap().compressed);
}

#[tokio::test]
async fn config_replaces_the_default_offer() {
    let (listener, addr) = listener_v4().await;
    let seen = serve_one(listener, None, Config::default(), accept_all).await;
    let (_ws, _) = ClientBuilder::new(format!("ws://{addr}/")).config(Config::default()).connect().await.unwrap();
    assert!(!seen.await.unwrap().headers.contains_key("sec-websocket-extensions"));
}

#[tokio::test]
async fn builder_reconnects() {
    let (listener, addr) = listener_v4().await;
    tokio::spawn(async move {
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = wsx::accept(tcp).await.unwrap();
            ws.send("welcome").await.unwrap();
        }
    });
    let builder = ClientBuilder::new(format!("ws://{addr}/"));
    for _ in 0..2 {
        let (mut ws, _) = builder.connect().await.unwrap();
        assert!(matches!(ws.recv().await.unwrap(), Some(Message::Text(t)) if t == "welcome"));
    }
}

#[test]
fn server_tls_errors_are_clear() {
    let pki = Pki::new(&["localhost"]);
    let other = pki_key();

    let missing = ServerTls::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
    assert!(missing.is_tls() && missing.to_string().contains("/nonexistent/cert.pem"), "{missing}");

    let no_cert = ServerTls::from_pem("garbage", &pki.key_pem).unwrap_err();
    assert!(no_cert.is_tls() && no_cert.to_string().contains("no certificates"), "{no_cert}");

    let no_key = ServerTls::from_pem(&pki.cert_pem, &pki.cert_pem).unwrap_err();
    assert!(no_key.is_tls() && no_key.to_string().contains("no private key"), "{no_key}");

    let mismatch = ServerTls::from_pem(&pki.cert_pem, other).unwrap_err();
    assert!(mismatch.is_tls() && mismatch.to_string().contains("certificate and key"), "{mismatch}");
}

fn pki_key() -> String {
    KeyPair::generate().unwrap().serialize_pem()
}

#[tokio::test]
async fn server_tls_rejects_plain_http() {
    let pki = Pki::new(&["localhost"]);
    let tls = server_tls(&pki);
    let (listener, addr) = listener_v4().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tls.accept(tcp).await.map(|_| ())
    });
    // A ws:// client speaking HTTP to a TLS port.
    let _ = wsx::connect(&format!("ws://{addr}/")).await;
    let error = server.await.unwrap().unwrap_err();
    assert!(error.is_tls(), "{error:?}");
}
