//! The client: connect to a `ws://` or `wss://` URL over TCP and, for `wss`, TLS.

use std::{fmt, io, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use wsx_proto::{Config, DeflateConfig, OsSeededRng, Response};

#[cfg(feature = "__tls")]
use crate::tls::TlsConfig;
use crate::{
    driver::now,
    error::{Error, Result},
    io::{Io, forward_io},
    proxy::{self, Proxy, ProxyUrl, Scheme},
    stream::WebSocket,
};

/// How long TCP connect and the TLS handshake may take together, by default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to `url` (`ws://` or `wss://`) with the defaults of [`ClientBuilder`]: certificates
/// checked against the `webpki-roots` Mozilla roots, permessage-deflate offered, a 10 s connect
/// timeout.
///
/// ```no_run
/// # async fn run() -> wsx::Result<()> {
/// let (mut ws, _response) = wsx::connect("wss://example.com/socket").await?;
/// ws.send("hello").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response)> {
    ClientBuilder::new(url).connect().await
}

/// Sets up a client connection: the URL, extra request headers, subprotocols, limits, TLS and
/// timeouts; then [`connect`](Self::connect).
///
/// Setters never fail: an invalid URL, header or certificate file is reported by `connect`, as
/// an error where [`Error::is_config`] holds. `connect` takes `&self`, so one builder can
/// connect again and again (to reconnect, say).
///
/// ```no_run
/// # async fn run() -> wsx::Result<()> {
/// use std::time::Duration;
///
/// let (mut ws, response) = wsx::ClientBuilder::new("wss://chat.example.com/room?id=7")
///     .protocol("chat.v2")
///     .protocol("chat.v1")
///     .origin("https://chat.example.com")
///     .header("authorization", "Bearer s3cr3t")
///     .connect_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// println!("subprotocol: {:?}", response.protocol());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    target: std::result::Result<Target, Invalid>,
    pub(crate) headers: HeaderMap,
    protocols: Vec<String>,
    pub(crate) config: Config,
    pub(crate) connect_timeout: Duration,
    #[cfg(feature = "__tls")]
    tls: Option<TlsConfig>,
    #[cfg(feature = "__tls")]
    accept_invalid_certs: bool,
    proxy: Proxy,
    max_redirects: usize,
    /// The first setter failure, reported by `connect`.
    invalid: Option<Invalid>,
}

impl ClientBuilder {
    /// Start with `url`: `ws://` or `wss://` (`http://` and `https://` mean the same, as in
    /// browsers), a host name or IP literal (`ws://[::1]:9001/`), and an optional port (80 or
    /// 443 by default), path and query. A fragment is ignored.
    ///
    /// The URL is checked now and any problem reported by [`connect`](Self::connect).
    pub fn new(url: impl AsRef<str>) -> Self {
        Self {
            target: Target::parse(url.as_ref()),
            headers: HeaderMap::new(),
            protocols: Vec::new(),
            config: Config::default().deflate(Some(DeflateConfig::default())),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            #[cfg(feature = "__tls")]
            tls: None,
            #[cfg(feature = "__tls")]
            accept_invalid_certs: false,
            proxy: Proxy::from_env(),
            max_redirects: 0,
            invalid: None,
        }
    }

    /// Add a header to the opening request (repeat for several values).
    ///
    /// The handshake's own headers (`Upgrade`, `Connection`, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version`) cannot be set; `Host` and `Sec-WebSocket-Extensions` replace
    /// the computed ones.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match header_pair(name, value) {
            Ok((name, value)) => {
                self.headers.append(name, value);
            }
            Err(e) => self.fail(e),
        }
        self
    }

    /// Offer a subprotocol (`Sec-WebSocket-Protocol`); repeat to offer several, most preferred
    /// first. The server's choice is [`Response::protocol`] and [`WebSocket::protocol`]; the
    /// connection fails if it picks one that was not offered.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Set the `Origin` header, which browsers send and servers may check (RFC 6455 §10.2).
    pub fn origin(mut self, origin: impl AsRef<str>) -> Self {
        match HeaderValue::from_str(origin.as_ref()) {
            Ok(value) => {
                self.headers.insert(header::ORIGIN, value);
            }
            Err(e) => self.fail(Invalid::Request(format!("invalid origin {:?}: {e}", origin.as_ref()))),
        }
        self
    }

    /// Use `config` for limits, timeouts (including the opening handshake's
    /// `handshake_timeout`) and compression.
    ///
    /// The default is [`Config::default`] with permessage-deflate offered, as browsers do; a
    /// config given here is used as it is, so add `.deflate(Some(DeflateConfig::default()))`
    /// to keep offering it.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Bound name resolution, TCP connect and the TLS handshake together (default 10 s), across
    /// all the addresses tried. Past it, `connect` fails with an error where
    /// [`Error::is_timeout`] holds. The WebSocket handshake that follows is bounded by the
    /// config's `handshake_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Use these TLS settings for `wss://` (default: [`TlsConfig::new`], the webpki roots).
    #[cfg(feature = "__tls")]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Trust only the root certificates in `pem` for `wss://`, instead of the built-in roots;
    /// see [`TlsConfig::with_root_certificates_pem`].
    #[cfg(feature = "__tls")]
    pub fn root_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        match TlsConfig::roots_from_pem(pem.as_ref(), "the root certificates") {
            Ok(tls) => self.tls = Some(tls),
            Err(e) => self.fail(Invalid::Tls(e)),
        }
        self
    }

    /// Trust only the root certificates in the PEM file at `path` for `wss://`; see
    /// [`TlsConfig::with_root_certificates_pem_file`]. The file is read now.
    #[cfg(feature = "__tls")]
    pub fn root_certificates_pem_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        match TlsConfig::roots_from_pem_file(path.as_ref()) {
            Ok(tls) => self.tls = Some(tls),
            Err(e) => self.fail(Invalid::Tls(e)),
        }
        self
    }

    /// Accept any certificate for any host name when `true`: **anyone on the path can read and
    /// change the connection**. Overrides the other TLS settings; for testing only (a CLI's
    /// `--insecure`). See [`TlsConfig::danger_accept_invalid_certs`].
    #[cfg(feature = "__tls")]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// Connect through `proxy` (default: [`Proxy::from_env`], curl's environment variables).
    ///
    /// The proxy is chosen again for every redirect, since the host may change; the connect
    /// timeout covers reaching the proxy and setting up the tunnel. Its credentials go to the
    /// proxy only, never to the server.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }

    /// Follow up to `max` redirects (301, 302, 303, 307, 308 with a `Location`) in the opening
    /// handshake. Default: 0, a redirect is returned as the refusal it is
    /// ([`Error::http_status`]).
    ///
    /// Each hop is a new connection, with the proxy and TLS settings chosen again for its host.
    /// A redirect from `wss://` to `ws://` is refused (it would drop TLS), and one to another
    /// origin (scheme, host or port) drops the `Authorization`, `Cookie` and
    /// `Proxy-Authorization` headers set on this builder. Past `max` the error says so
    /// ([`Error::is_redirect`]). The URL finally reached is [`MaybeTlsStream::url`].
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.max_redirects = max;
        self
    }

    /// Connect: resolve the host and try each address, run TLS for `wss://`, then the opening
    /// handshake.
    ///
    /// Errors: [`Error::is_config`] for an invalid URL, header or TLS setting;
    /// [`Error::is_io`] if no address accepted the connection (refused, unreachable, unknown
    /// host); [`Error::is_tls`] if the certificate is not trusted or not valid for the host;
    /// [`Error::is_timeout`] past the connect or handshake timeout; and
    /// [`Error::http_status`] if the server answered the upgrade with another HTTP status.
    pub async fn connect(&self) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response)> {
        let mut target = self.checked_target()?;
        let mut headers = self.headers.clone();
        let mut hops = 0;
        loop {
            let error = match self.connect_to(&target, &headers).await {
                Ok(connected) => return Ok(connected),
                Err(e) => e,
            };
            let Some(location) = redirect_location(&error) else { return Err(error) };
            if hops == self.max_redirects {
                if self.max_redirects == 0 {
                    return Err(error);
                }
                return Err(Error::redirect(format!(
                    "more than {} redirects (the last one from {} to {location})",
                    self.max_redirects, target.uri
                )));
            }
            hops += 1;
            let next = target.redirect(&location)?;
            if !next.same_origin(&target) {
                // RFC 9110 §15.4: credentials for one origin are not for another.
                for name in [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION] {
                    headers.remove(name);
                }
            }
            tracing::debug!(from = %target.uri, to = %next.uri, "following a redirect");
            target = next;
        }
    }

    /// Where to connect, once every setter has been checked.
    pub(crate) fn checked_target(&self) -> Result<Target> {
        let target = self.target.as_ref().map_err(Invalid::to_error)?.clone();
        if let Some(invalid) = &self.invalid {
            return Err(invalid.to_error());
        }
        Ok(target)
    }

    /// One connection attempt to `target`: the proxy for its host, TCP, TLS, the handshake.
    async fn connect_to(
        &self,
        target: &Target,
        headers: &HeaderMap,
    ) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response)> {
        let request = self.request(target, headers)?;
        // The connection is built (and the request and config checked) before the network is
        // touched, so that a bad header or limit is a config error rather than a connection
        // opened and dropped. Its handshake timeout counts from here.
        let conn = wsx_proto::Connection::client(&self.config, &request, OsSeededRng::new(), now())?;
        let proxy = self.proxy.resolve(&target.host, target.tls)?;
        let io = tokio::time::timeout(self.connect_timeout, self.open(target, proxy.as_deref()))
            .await
            .map_err(|_| Error::connect_timeout())??;
        crate::handshake::open(io, conn).await
    }

    /// The opening request: URI, the headers given, and the offered subprotocols.
    pub(crate) fn request(&self, target: &Target, headers: &HeaderMap) -> Result<http::Request<()>> {
        let mut request = http::Request::new(());
        *request.uri_mut() = target.uri.clone();
        *request.headers_mut() = headers.clone();
        if !self.protocols.is_empty() {
            let offer = HeaderValue::from_str(&self.protocols.join(", "))
                .map_err(|_| Error::request(format!("invalid subprotocols {:?}", self.protocols)))?;
            request.headers_mut().append(header::SEC_WEBSOCKET_PROTOCOL, offer);
        }
        Ok(request)
    }

    /// TCP to the first address that answers (the proxy's, and a tunnel through it, when there
    /// is a proxy), then TLS for `wss`.
    async fn open(&self, target: &Target, proxy: Option<&ProxyUrl>) -> Result<MaybeTlsStream<TcpStream>> {
        let Some(proxy) = proxy else {
            let tcp = connect_tcp(&target.host, target.port).await?;
            return self.over(target, tcp).await;
        };
        let tcp = connect_tcp(&proxy.host, proxy.port)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("proxy {proxy}: {e}")))?;
        let (host, port) = (target.host.as_str(), target.port);
        match proxy.scheme {
            Scheme::Http => self.over(target, proxy::http_connect(proxy, tcp, host, port).await?).await,
            Scheme::Socks5 | Scheme::Socks5h => {
                self.over(target, proxy::socks5_connect(proxy, tcp, host, port).await?).await
            }
            #[cfg(feature = "__tls")]
            Scheme::Https => {
                // TLS to the proxy, checked against the same roots as the server's; then the
                // tunnel inside it, and for wss the server's TLS inside that.
                let to_proxy = self.tls_config()?.connect(&proxy.host, tcp).await?;
                let tunnel = proxy::http_connect(proxy, to_proxy, host, port).await?;
                let inner = if target.tls {
                    Inner::TlsInProxyTls(Box::new(self.tls_config()?.connect(host, tunnel).await?))
                } else {
                    Inner::ProxyTls(Box::new(tunnel))
                };
                Ok(MaybeTlsStream { inner, url: target.uri.clone() })
            }
            #[cfg(not(feature = "__tls"))]
            Scheme::Https => Err(Error::tls(format!(
                "the proxy {proxy} needs TLS: enable the `rustls-ring` or `rustls-aws-lc-rs` feature of wsx"
            ))),
        }
    }

    /// The stream over a TCP connection to the server (or a tunnel to it): TLS for `wss`.
    async fn over(&self, target: &Target, tcp: TcpStream) -> Result<MaybeTlsStream<TcpStream>> {
        let url = target.uri.clone();
        if !target.tls {
            return Ok(MaybeTlsStream { inner: Inner::Plain(tcp), url });
        }
        #[cfg(feature = "__tls")]
        {
            let stream = self.tls_config()?.connect(&target.host, tcp).await?;
            Ok(MaybeTlsStream { inner: Inner::Tls(Box::new(stream)), url })
        }
        #[cfg(not(feature = "__tls"))]
        Err(Error::tls("wss:// needs TLS: enable the `rustls-ring` or `rustls-aws-lc-rs` feature of wsx"))
    }

    /// The TLS settings to use: insecure if asked, else those given, else the webpki roots.
    #[cfg(feature = "__tls")]
    pub(crate) fn tls_config(&self) -> Result<TlsConfig> {
        match (&self.tls, self.accept_invalid_certs) {
            (_, true) => TlsConfig::accept_any().map_err(Error::tls),
            (Some(tls), false) => Ok(tls.clone()),
            (None, false) => TlsConfig::webpki().map_err(Error::tls),
        }
    }

    fn fail(&mut self, invalid: Invalid) {
        self.invalid.get_or_insert(invalid);
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientBuilder");
        match &self.target {
            Ok(target) => d.field("uri", &target.uri),
            Err(invalid) => d.field("uri", invalid),
        };
        // Header values may hold credentials: show the names only.
        d.field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("protocols", &self.protocols)
            .field("config", &self.config)
            .field("connect_timeout", &self.connect_timeout)
            .field("proxy", &self.proxy)
            .field("max_redirects", &self.max_redirects);
        #[cfg(feature = "__tls")]
        d.field("tls", &self.tls).field("accept_invalid_certs", &self.accept_invalid_certs);
        d.finish()
    }
}

fn header_pair<K, V>(name: K, value: V) -> std::result::Result<(HeaderName, HeaderValue), Invalid>
where
    HeaderName: TryFrom<K>,
    <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
    HeaderValue: TryFrom<V>,
    <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
{
    let name = HeaderName::try_from(name).map_err(|e| Invalid::Request(e.into().to_string()))?;
    let value = HeaderValue::try_from(value).map_err(|e| Invalid::Request(format!("header {name}: {}", e.into())))?;
    Ok((name, value))
}

/// A setter's failure, kept until `connect` reports it ([`Error`] is not `Clone`).
#[derive(Clone, Debug)]
enum Invalid {
    Url(String),
    Request(String),
    #[cfg_attr(not(feature = "__tls"), allow(dead_code))]
    Tls(String),
}

impl Invalid {
    fn to_error(&self) -> Error {
        match self {
            Self::Url(message) => Error::url(message.clone()),
            Self::Request(message) => Error::request(message.clone()),
            Self::Tls(message) => Error::tls(message.clone()),
        }
    }
}

/// Where to connect, from the URL.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The request URI: scheme `ws` or `wss`, no user info, no fragment.
    pub(crate) uri: http::Uri,
    /// The host to resolve and to check the certificate against; IPv6 without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl Target {
    fn parse(input: &str) -> std::result::Result<Self, Invalid> {
        let invalid = |why: &str| Invalid::Url(format!("{input:?}: {why}"));
        let mut url = url::Url::parse(input)
            .map_err(|e| invalid(&format!("{e} (expected ws://host[:port][/path] or wss://…)")))?;
        // RFC 6455 §3 defines ws and wss; browsers take http and https as their aliases.
        let tls = match url.scheme() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            other => return Err(invalid(&format!("the scheme must be ws or wss, not {other:?}"))),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("user info in the URL is not sent; set an Authorization header instead"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("the URL has no host")),
        };
        // ws, wss, http and https are all "special" schemes, with a known default port.
        let port = url.port_or_known_default().ok_or_else(|| invalid("the URL has no port"))?;
        // §3: "Fragment identifiers are meaningless in the context of WebSocket URIs".
        url.set_fragment(None);
        // Switching between special schemes always succeeds; the default ports are the same.
        url.set_scheme(if tls { "wss" } else { "ws" }).map_err(|()| invalid("cannot use this scheme"))?;
        let uri = url.as_str().parse::<http::Uri>().map_err(|e| invalid(&e.to_string()))?;
        Ok(Self { uri, host, port, tls })
    }

    /// The target a redirect to `location` (absolute, or relative to this URL) leads to.
    /// Refuses a downgrade from `wss` to `ws`.
    fn redirect(&self, location: &str) -> Result<Self> {
        let base = url::Url::parse(&self.uri.to_string()).map_err(|e| Error::redirect(e.to_string()))?;
        let joined =
            base.join(location).map_err(|e| Error::redirect(format!("the Location {location:?} is not a URL: {e}")))?;
        let next = Self::parse(joined.as_str()).map_err(|e| Error::redirect(e.to_error().to_string()))?;
        if self.tls && !next.tls {
            return Err(Error::redirect(format!("refusing to downgrade from {} to {}", self.uri, next.uri)));
        }
        Ok(next)
    }

    /// Whether `other` has the same origin: scheme, host and port (RFC 6454).
    fn same_origin(&self, other: &Self) -> bool {
        self.tls == other.tls && self.port == other.port && self.host.eq_ignore_ascii_case(&other.host)
    }
}

/// The `Location` of a redirect the server answered the handshake with, if it did.
fn redirect_location(error: &Error) -> Option<String> {
    let status = error.http_status()?;
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let headers = match error.protocol_error()? {
        wsx_proto::ProtocolError::Handshake(wsx_proto::HandshakeError::Refused { headers, .. }) => headers,
        _ => return None,
    };
    headers.get(header::LOCATION)?.to_str().ok().map(str::to_owned)
}

/// Resolve `host` and connect to the first address that accepts, with `TCP_NODELAY` (frames
/// are written whole, so Nagle would only add latency).
///
/// Errors keep their [`io::ErrorKind`] and name the host or address.
pub(crate) async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?;
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last_error = Some(io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))))
}

/// A client's stream: plain TCP for `ws://`, TLS over it for `wss://`.
///
/// Reads and writes (vectored too) go straight to the inner stream.
///
/// Through a proxy, the stream is the tunnel: the TCP connection to the proxy, with TLS to the
/// proxy underneath for an `https://` proxy.
pub struct MaybeTlsStream<S> {
    inner: Inner<S>,
    /// The URL connected to: the one given, or where the redirects led.
    url: http::Uri,
}

enum Inner<S> {
    Plain(S),
    #[cfg(feature = "__tls")]
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
    /// `ws://` through an `https://` proxy: TLS to the proxy only.
    #[cfg(feature = "__tls")]
    ProxyTls(Box<tokio_rustls::client::TlsStream<S>>),
    /// `wss://` through an `https://` proxy: the server's TLS inside the proxy's.
    #[cfg(feature = "__tls")]
    TlsInProxyTls(Box<tokio_rustls::client::TlsStream<tokio_rustls::client::TlsStream<S>>>),
}

impl<S> MaybeTlsStream<S> {
    /// Whether the WebSocket runs over TLS to the server (`wss://`).
    pub fn is_tls(&self) -> bool {
        match &self.inner {
            Inner::Plain(_) => false,
            #[cfg(feature = "__tls")]
            Inner::ProxyTls(_) => false,
            #[cfg(feature = "__tls")]
            Inner::Tls(_) | Inner::TlsInProxyTls(_) => true,
        }
    }

    /// The URL this connection reached: the one given to the builder, or the last redirect's.
    pub fn url(&self) -> &http::Uri {
        &self.url
    }

    /// The underlying stream: the TCP socket (to the server, or to the proxy).
    pub fn get_ref(&self) -> &S {
        match &self.inner {
            Inner::Plain(io) => io,
            #[cfg(feature = "__tls")]
            Inner::Tls(tls) | Inner::ProxyTls(tls) => tls.get_ref().0,
            #[cfg(feature = "__tls")]
            Inner::TlsInProxyTls(tls) => tls.get_ref().0.get_ref().0,
        }
    }

    /// The ALPN protocol agreed in the TLS handshake with the server, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Plain(_) => None,
            #[cfg(feature = "__tls")]
            Inner::ProxyTls(_) => None,
            #[cfg(feature = "__tls")]
            Inner::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            #[cfg(feature = "__tls")]
            Inner::TlsInProxyTls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

impl<S> fmt::Debug for MaybeTlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaybeTlsStream").field("url", &self.url).field("tls", &self.is_tls()).finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MaybeTlsStream<S> {
    fn io_mut(&mut self) -> &mut (dyn Io + '_) {
        match &mut self.inner {
            Inner::Plain(io) => io,
            #[cfg(feature = "__tls")]
            Inner::Tls(tls) | Inner::ProxyTls(tls) => tls,
            #[cfg(feature = "__tls")]
            Inner::TlsInProxyTls(tls) => tls,
        }
    }

    fn io(&self) -> &(dyn Io + '_) {
        match &self.inner {
            Inner::Plain(io) => io,
            #[cfg(feature = "__tls")]
            Inner::Tls(tls) | Inner::ProxyTls(tls) => tls,
            #[cfg(feature = "__tls")]
            Inner::TlsInProxyTls(tls) => tls,
        }
    }
}

forward_io!(MaybeTlsStream);
