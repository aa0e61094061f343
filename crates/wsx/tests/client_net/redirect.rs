//! Redirects in the opening handshake, against wsx servers that answer 3xx: chains within the
//! limit and past it, the downgrade from `wss://` to `ws://`, and the credentials a cross-origin
//! hop must drop, checked on the server that receives the hop; and the proxy and TLS chosen
//! again for each hop, through a real tinyproxy.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use http::{HeaderMap, StatusCode, header};
use wsx::{Accept, ClientBuilder, Proxy, Reject, Server, ShutdownHandle, tls::ServerTls};

use crate::support::{Echo, LocalPki, Pki, ProxyProcess, round_trip, serve_echo};

/// Where a path leads: `Some(location)` answers it with `status` and that `Location`.
type Rule = dyn Fn(&str) -> Option<String> + Send + Sync;

/// A wsx echo server that redirects per `rule` and records each request's path and headers.
struct Redirector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    stop: ShutdownHandle,
}

impl Redirector {
    async fn start(tls: Option<ServerTls>, status: StatusCode, rule: Arc<Rule>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let builder = Server::builder().on_request(move |request| {
            record.lock().unwrap().push((request.path().to_owned(), request.headers().clone()));
            match rule(request.path()) {
                None => Ok(Accept::new()),
                Some(location) => {
                    let response = http::Response::builder()
                        .status(status)
                        .header(header::LOCATION, location)
                        .body(bytes::Bytes::new())
                        .unwrap();
                    Err(Reject::response(response))
                }
            }
        });
        let (addr, stop) = serve_echo(builder, tls).await;
        Self { addr, seen, stop }
    }

    /// Redirects `/hop/N` to `/hop/N-1` (relative), and accepts `/hop/0`.
    async fn countdown() -> Self {
        let rule = |path: &str| {
            let n: u32 = path.strip_prefix("/hop/")?.parse().ok()?;
            (n > 0).then(|| format!("/hop/{}", n - 1))
        };
        Self::start(None, StatusCode::FOUND, Arc::new(rule)).await
    }

    fn paths(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }

    fn request_to(&self, path: &str) -> HeaderMap {
        let seen = self.seen.lock().unwrap();
        seen.iter().find(|(p, _)| p == path).map(|(_, h)| h.clone()).unwrap_or_else(|| panic!("no request to {path}"))
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.stop.shutdown();
    }
}

fn client(url: String) -> ClientBuilder {
    ClientBuilder::new(url).proxy(Proxy::none())
}

#[tokio::test]
async fn off_by_default_a_redirect_is_the_refusal() {
    let server = Redirector::countdown().await;
    let e = client(format!("ws://{}/hop/1", server.addr)).connect().await.unwrap_err();
    assert_eq!(e.http_status(), Some(StatusCode::FOUND), "{e:?}");
    assert!(!e.is_redirect());
    assert_eq!(server.paths(), ["/hop/1"]);
}

#[tokio::test]
async fn a_chain_of_three_is_followed_and_the_final_url_reported() {
    let server = Redirector::countdown().await;
    let (mut ws, _) = client(format!("ws://{}/hop/3", server.addr)).max_redirects(3).connect().await.unwrap();
    assert_eq!(ws.get_ref().url().to_string(), format!("ws://{}/hop/0", server.addr));
    round_trip(&mut ws, "after three redirects").await;
    assert_eq!(server.paths(), ["/hop/3", "/hop/2", "/hop/1", "/hop/0"]);
}

#[tokio::test]
async fn eleven_redirects_fail_with_a_clear_error_at_ten() {
    let server = Redirector::countdown().await;
    let e = client(format!("ws://{}/hop/11", server.addr)).max_redirects(10).connect().await.unwrap_err();
    assert!(e.is_redirect() && !e.is_transient(), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("more than 10 redirects") && text.contains("/hop/0"), "{text}");
    assert_eq!(server.paths().len(), 11, "the 11th redirect is not followed");
    // Ten are fine.
    let server = Redirector::countdown().await;
    client(format!("ws://{}/hop/10", server.addr)).max_redirects(10).connect().await.unwrap();
}

#[tokio::test]
async fn wss_to_ws_is_refused() {
    let pki = Pki::local();
    let plain = Redirector::countdown().await;
    let target = format!("ws://{}/hop/0", plain.addr);
    let secure = Redirector::start(
        Some(pki.server_tls()),
        StatusCode::MOVED_PERMANENTLY,
        Arc::new(move |_: &str| Some(target.clone())),
    )
    .await;
    let e = client(format!("wss://{}/start", secure.addr))
        .root_certificates_pem(&pki.ca_pem)
        .max_redirects(5)
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_redirect(), "{e:?}");
    assert!(e.to_string().contains("refusing to downgrade"), "{e}");
    assert!(plain.paths().is_empty(), "nothing reached the ws:// server");
}

#[tokio::test]
async fn ws_to_wss_is_followed_with_the_tls_settings() {
    let pki = Pki::local();
    let secure = Redirector::countdown_tls(&pki).await;
    let target = format!("wss://{}/hop/0", secure.addr);
    let plain =
        Redirector::start(None, StatusCode::TEMPORARY_REDIRECT, Arc::new(move |_: &str| Some(target.clone()))).await;
    let (mut ws, _) = client(format!("ws://{}/start", plain.addr))
        .root_certificates_pem(&pki.ca_pem)
        .max_redirects(1)
        .connect()
        .await
        .unwrap();
    assert!(ws.get_ref().is_tls());
    round_trip(&mut ws, "upgraded to wss").await;
}

impl Redirector {
    async fn countdown_tls(pki: &Pki) -> Self {
        Self::start(Some(pki.server_tls()), StatusCode::FOUND, Arc::new(|_: &str| None)).await
    }
}

#[tokio::test]
async fn credentials_are_dropped_on_a_cross_origin_hop_only() {
    // B accepts everything; A sends /same to /other on itself, then /cross to B.
    let b = Redirector::start(None, StatusCode::FOUND, Arc::new(|_: &str| None)).await;
    let b_url = format!("ws://{}/landed", b.addr);
    let a = Redirector::start(
        None,
        StatusCode::SEE_OTHER,
        Arc::new(move |path: &str| match path {
            "/same" => Some("/cross".to_owned()),
            "/cross" => Some(b_url.clone()),
            _ => None,
        }),
    )
    .await;
    let (mut ws, _) = client(format!("ws://{}/same", a.addr))
        .header(header::AUTHORIZATION, "Bearer origin-a-token")
        .header(header::COOKIE, "session=a")
        .header(header::PROXY_AUTHORIZATION, "Basic cHJveHk6c2VjcmV0")
        .header("x-trace", "kept")
        .max_redirects(2)
        .connect()
        .await
        .unwrap();
    round_trip(&mut ws, "landed on B").await;
    // Same origin: kept.
    let same = a.request_to("/cross");
    assert_eq!(same.get(header::AUTHORIZATION).unwrap(), "Bearer origin-a-token");
    assert_eq!(same.get(header::COOKIE).unwrap(), "session=a");
    // Cross origin (another port): gone, on the server that received the hop.
    let landed = b.request_to("/landed");
    for name in [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION] {
        assert!(landed.get(&name).is_none(), "{name} reached the other origin: {landed:?}");
    }
    assert_eq!(landed.get("x-trace").unwrap(), "kept");
}

#[tokio::test]
async fn a_redirect_without_a_usable_location_is_refused() {
    let server = Redirector::start(None, StatusCode::FOUND, Arc::new(|_: &str| Some("http://[bad".to_owned()))).await;
    let e = client(format!("ws://{}/x", server.addr)).max_redirects(3).connect().await.unwrap_err();
    assert!(e.is_redirect(), "{e:?}");
    let server =
        Redirector::start(None, StatusCode::FOUND, Arc::new(|_: &str| Some("ftp://example.com/".to_owned()))).await;
    let e = client(format!("ws://{}/x", server.addr)).max_redirects(3).connect().await.unwrap_err();
    assert!(e.is_redirect(), "{e:?}");
}

/// Whether tinyproxy's log shows a CONNECT to `host:port`.
fn tunnelled(proxy: &ProxyProcess, host: &str, port: u16) -> bool {
    proxy.log_text().contains(&format!("CONNECT {host}:{port} "))
}

#[tokio::test]
async fn the_proxy_and_tls_are_chosen_again_for_each_hop() {
    // The environment: everything through tinyproxy, except what NO_PROXY names. Both hosts are
    // loopback; one is reached by name (`localhost`) and one by address, so that NO_PROXY can
    // tell them apart.
    let pki = Pki::local();
    let proxy = ProxyProcess::tinyproxy(None).await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let echo = Echo::start(Some(pki.server_tls())).await;
    let vars = |no_proxy: &str| Proxy::from_vars([("ALL_PROXY", proxy_url.clone()), ("NO_PROXY", no_proxy.to_owned())]);

    // Proxied hop (by address) to a hop in NO_PROXY (by name, and over TLS for that name).
    let target = format!("wss://localhost:{}/echo", echo.addr.port());
    let a = Redirector::start(None, StatusCode::FOUND, Arc::new(move |_: &str| Some(target.clone()))).await;
    let (mut ws, _) = ClientBuilder::new(format!("ws://127.0.0.1:{}/start", a.addr.port()))
        .proxy(vars("localhost"))
        .root_certificates_pem(&pki.ca_pem)
        .max_redirects(1)
        .connect()
        .await
        .unwrap();
    assert!(ws.get_ref().is_tls());
    assert_eq!(ws.get_ref().get_ref().peer_addr().unwrap(), echo.addr, "the second hop went direct");
    round_trip(&mut ws, "proxied, then direct").await;
    assert!(tunnelled(&proxy, "127.0.0.1", a.addr.port()), "the first hop went through the proxy");
    assert!(!tunnelled(&proxy, "localhost", echo.addr.port()), "{}", proxy.log_text());
    assert_eq!(a.paths(), ["/start"]);

    // The reverse: a direct hop (in NO_PROXY) to one through the proxy, TLS inside the tunnel.
    let target = format!("wss://127.0.0.1:{}/echo", echo.addr.port());
    let b = Redirector::start(None, StatusCode::FOUND, Arc::new(move |_: &str| Some(target.clone()))).await;
    let (mut ws, _) = ClientBuilder::new(format!("ws://localhost:{}/start", b.addr.port()))
        .proxy(vars("localhost"))
        .root_certificates_pem(&pki.ca_pem)
        .max_redirects(1)
        .connect()
        .await
        .unwrap();
    assert!(ws.get_ref().is_tls());
    assert_eq!(ws.get_ref().get_ref().peer_addr().unwrap(), proxy.addr(), "the second hop went through the proxy");
    round_trip(&mut ws, "direct, then proxied").await;
    assert!(tunnelled(&proxy, "127.0.0.1", echo.addr.port()), "{}", proxy.log_text());
    assert!(!tunnelled(&proxy, "localhost", b.addr.port()), "the first hop went direct");
    assert_eq!(b.paths(), ["/start"]);
}
