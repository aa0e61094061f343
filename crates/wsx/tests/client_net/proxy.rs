//! The client through real proxies: tinyproxy (HTTP CONNECT, with and without Basic auth, and
//! behind a TLS front as an `https://` proxy) and microsocks (SOCKS5 with a user and password),
//! `ws://` and `wss://` (a custom CA) through each; the environment rules; refusals and
//! proxies that break off.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use wsx::{ClientBuilder, MaybeTlsStream, Proxy, WebSocket};

use crate::support::{Echo, LocalPki, Pki, ProxyProcess, round_trip, tls_front};

/// Connect to `echo` with `scheme` through `proxy`, trusting `pki`'s CA, and echo once.
async fn through(
    echo: &Echo,
    scheme: &str,
    pki: &Pki,
    proxy: Proxy,
) -> WebSocket<MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = ClientBuilder::new(echo.url(scheme))
        .root_certificates_pem(&pki.ca_pem)
        .proxy(proxy)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{scheme} through the proxy: {e}"));
    assert_eq!(ws.get_ref().is_tls(), scheme == "wss");
    round_trip(&mut ws, "through the proxy").await;
    ws
}

/// The client's TCP connection goes to `to`, not to the server.
fn connected_to(ws: &WebSocket<MaybeTlsStream<tokio::net::TcpStream>>, to: SocketAddr) {
    assert_eq!(ws.get_ref().get_ref().peer_addr().unwrap(), to, "the socket goes to the proxy");
}

fn no_proxy_credentials_reached(echo: &Echo) {
    let headers = echo.last_request();
    assert!(headers.get("proxy-authorization").is_none(), "the server saw proxy credentials: {headers:?}");
}

#[tokio::test]
async fn http_connect_without_auth_ws_and_wss() {
    let pki = Pki::local();
    let proxy = ProxyProcess::tinyproxy(None).await;
    for scheme in ["ws", "wss"] {
        let echo = Echo::start((scheme == "wss").then(|| pki.server_tls())).await;
        let url = format!("http://127.0.0.1:{}", proxy.port);
        let ws = through(&echo, scheme, &pki, Proxy::url(&url).unwrap()).await;
        connected_to(&ws, proxy.addr());
        no_proxy_credentials_reached(&echo);
        let log = proxy.log_text();
        assert!(log.contains(&format!("{}", echo.addr.port())), "tinyproxy logged the CONNECT: {log}");
    }
}

#[tokio::test]
async fn http_connect_with_basic_auth() {
    let pki = Pki::local();
    let proxy = ProxyProcess::tinyproxy(Some(("alice", "s3cret"))).await;
    for scheme in ["ws", "wss"] {
        let echo = Echo::start((scheme == "wss").then(|| pki.server_tls())).await;
        let url = format!("http://alice:s3cret@127.0.0.1:{}", proxy.port);
        let ws = through(&echo, scheme, &pki, Proxy::url(&url).unwrap()).await;
        connected_to(&ws, proxy.addr());
        no_proxy_credentials_reached(&echo);
    }
}

#[tokio::test]
async fn proxy_answering_407_is_a_clear_error_naming_the_proxy() {
    let proxy = ProxyProcess::tinyproxy(Some(("alice", "s3cret"))).await;
    let echo = Echo::start(None).await;
    for (url, hint) in [
        (format!("http://127.0.0.1:{}", proxy.port), "wants a user and password"),
        (format!("http://alice:wrong-password@127.0.0.1:{}", proxy.port), "did not accept the user and password"),
    ] {
        let e = ClientBuilder::new(echo.url("ws")).proxy(Proxy::url(&url).unwrap()).connect().await.unwrap_err();
        assert!(e.is_proxy(), "{e:?}");
        assert!(!e.is_transient(), "407 is not worth retrying");
        let text = e.to_string();
        let named = format!("proxy http://127.0.0.1:{}", proxy.port);
        // tinyproxy answers 407 without credentials and 401 with wrong ones.
        let status = text.contains("407") || text.contains("401");
        assert!(text.contains(&named) && status && text.contains(hint), "{text}");
        assert!(!text.contains("wrong-password") && !format!("{e:?}").contains("wrong-password"), "{text}");
    }
    assert!(echo.seen.lock().unwrap().is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn https_proxy_tls_to_the_proxy_then_tls_inside() {
    let pki = Pki::local();
    // tinyproxy's configuration takes only [A-Za-z0-9._-] in a password.
    let proxy = ProxyProcess::tinyproxy(Some(("bob", "p.ss_w0rd"))).await;
    let front = tls_front(pki.server_tls(), proxy.addr()).await;
    for scheme in ["ws", "wss"] {
        let echo = Echo::start((scheme == "wss").then(|| pki.server_tls())).await;
        // Percent-encoded in the URL, decoded for the proxy.
        let url = format!("https://b%6Fb:p%2Ess_w0rd@127.0.0.1:{}", front.port());
        let ws = through(&echo, scheme, &pki, Proxy::url(&url).unwrap()).await;
        connected_to(&ws, front);
        no_proxy_credentials_reached(&echo);
    }
}

#[tokio::test]
async fn socks5_with_auth_ws_and_wss() {
    let pki = Pki::local();
    let proxy = ProxyProcess::microsocks(Some(("carol", "hunter2"))).await;
    for scheme in ["ws", "wss"] {
        let echo = Echo::start((scheme == "wss").then(|| pki.server_tls())).await;
        for proxy_scheme in ["socks5", "socks5h"] {
            let url = format!("{proxy_scheme}://carol:hunter2@127.0.0.1:{}", proxy.port);
            let ws = through(&echo, scheme, &pki, Proxy::url(&url).unwrap()).await;
            connected_to(&ws, proxy.addr());
        }
    }
}

#[tokio::test]
async fn socks5_refusals() {
    let proxy = ProxyProcess::microsocks(Some(("carol", "hunter2"))).await;
    let echo = Echo::start(None).await;
    for url in [format!("socks5://carol:wrong@127.0.0.1:{}", proxy.port), format!("socks5://127.0.0.1:{}", proxy.port)]
    {
        let e = ClientBuilder::new(echo.url("ws")).proxy(Proxy::url(&url).unwrap()).connect().await.unwrap_err();
        assert!(e.is_proxy(), "{url}: {e:?}");
        let text = e.to_string();
        assert!(text.contains(&format!("socks5://127.0.0.1:{}", proxy.port)), "{text}");
        assert!(!text.contains("wrong"), "{text}");
    }
}

#[tokio::test]
async fn environment_rules_with_a_real_proxy() {
    let proxy = ProxyProcess::tinyproxy(None).await;
    let echo = Echo::start(None).await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let connect = |vars: Vec<(&'static str, String)>| {
        let builder = ClientBuilder::new(echo.url("ws")).proxy(Proxy::from_vars(vars));
        async move { builder.connect().await.unwrap().0 }
    };
    let direct = echo.addr;
    // HTTP_PROXY applies to ws://.
    connected_to(&connect(vec![("HTTP_PROXY", proxy_url.clone())]).await, proxy.addr());
    // ... unless the process is a CGI script (httpoxy).
    let ws = connect(vec![("HTTP_PROXY", proxy_url.clone()), ("REQUEST_METHOD", "GET".into())]).await;
    connected_to(&ws, direct);
    // NO_PROXY by address, by CIDR, and `*`.
    for no in ["127.0.0.1", "127.0.0.0/8", "*", "example.com, 127.0.0.1"] {
        let ws = connect(vec![("ALL_PROXY", proxy_url.clone()), ("NO_PROXY", no.into())]).await;
        connected_to(&ws, direct);
    }
    let ws = connect(vec![("all_proxy", proxy_url.clone()), ("no_proxy", "10.0.0.0/8".into())]).await;
    connected_to(&ws, proxy.addr());
    // Proxy::none() ignores the environment.
    let (ws, _) = ClientBuilder::new(echo.url("ws")).proxy(Proxy::none()).connect().await.unwrap();
    connected_to(&ws, direct);
}

/// A scripted proxy that reads the CONNECT request, then runs `then` on the socket.
async fn scripted_proxy<F, Fut>(then: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client sent a whole CONNECT request");
            head.extend_from_slice(&buf[..n]);
        }
        then(tcp).await;
    });
    addr
}

#[tokio::test]
async fn proxy_closing_mid_handshake_is_a_clean_error() {
    let echo = Echo::start(None).await;
    // Closed before answering CONNECT.
    let addr = scripted_proxy(|tcp| async move { drop(tcp) }).await;
    let e = ClientBuilder::new(echo.url("ws"))
        .proxy(Proxy::url(format!("http://u:pw-secret@{addr}")).unwrap())
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_proxy() && e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("closed the connection before answering CONNECT"), "{e}");
    assert!(!format!("{e} {e:?}").contains("pw-secret"));
    // Half an answer, then closed.
    let addr = scripted_proxy(|mut tcp| async move {
        tcp.write_all(b"HTTP/1.1 200 Connection established\r\nX-Half: ").await.unwrap();
    })
    .await;
    let e = ClientBuilder::new(echo.url("ws")).proxy(Proxy::url(format!("http://{addr}")).unwrap()).connect().await;
    assert!(e.unwrap_err().is_proxy());
    // Tunnel opened, then closed during the WebSocket handshake.
    let addr = scripted_proxy(|mut tcp| async move {
        tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = tcp.read(&mut buf).await;
    })
    .await;
    let e = ClientBuilder::new(echo.url("ws")).proxy(Proxy::url(format!("http://{addr}")).unwrap()).connect().await;
    let e = e.unwrap_err();
    assert!(e.is_handshake() && e.is_transient(), "{e:?}");
    assert!(echo.seen.lock().unwrap().is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn unreachable_proxy_is_an_io_error_naming_it() {
    let port = crate::support::free_port();
    let e = ClientBuilder::new("ws://127.0.0.1:9/")
        .proxy(Proxy::url(format!("socks5h://user:topsecret@127.0.0.1:{port}")).unwrap())
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_io() && e.is_transient(), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("proxy socks5h://127.0.0.1:{port}")) && !text.contains("topsecret"), "{text}");
}
