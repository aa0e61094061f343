//! Proxies for the client: HTTP `CONNECT` (over TCP or TLS to the proxy) and SOCKS5, chosen
//! explicitly or from the environment with curl's rules.
//!
//! The environment is read the way curl reads it: for a `ws://` URL `ws_proxy`, then
//! `http_proxy`, then `all_proxy`; for `wss://` `wss_proxy`, then `https_proxy`, then
//! `all_proxy`; each name in lower case first, then upper case; `no_proxy` lists the hosts
//! that are reached directly. When `REQUEST_METHOD` is set the process is a CGI script, whose
//! `HTTP_PROXY` may come from a request's `Proxy:` header (httpoxy, CVE-2016-5385), so
//! `http_proxy` and `HTTP_PROXY` are then ignored.
//!
//! Why written here: hyper-util's `Matcher` implements the same rules, but it would pull hyper
//! into every client and it knows only `http`/`https` (not `ws_proxy`/`wss_proxy`); the rules
//! fit in this module. SOCKS5 is `tokio-socks`, maintained and small; `CONNECT` is a dozen
//! lines of HTTP/1.1 over the response parser wsx already depends on.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use base64::Engine;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::error::{Error, Result};

/// The most bytes of a proxy's answer to `CONNECT` read before giving up on it.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Which proxy, if any, a client connects through.
///
/// The default, [`Proxy::from_env`], follows curl: `wss_proxy`/`ws_proxy`, `https_proxy`,
/// `http_proxy`, `all_proxy` and `no_proxy`, in lower or upper case, read at each connect
/// (and again for each redirect, since the host changes). [`Proxy::none`] connects directly;
/// [`Proxy::url`] names one proxy for every host.
///
/// Proxy URLs: `http://[user:password@]host[:port]` (`CONNECT`, port 80 by default),
/// `https://…` (TLS to the proxy, then `CONNECT` inside it; port 443), `socks5://…` (the
/// target's name is resolved here) and `socks5h://…` (resolved by the proxy; port 1080 for
/// both). A URL without a scheme is an `http://` proxy, as curl takes it. The user and password
/// are percent-decoded and sent only to the proxy (`Proxy-Authorization: Basic` for HTTP,
/// RFC 1929 for SOCKS5), never to the server, and never appear in `Debug` output or errors.
#[derive(Clone)]
pub struct Proxy {
    choice: Choice,
}

#[derive(Clone)]
enum Choice {
    /// Read the process environment at connect time.
    Env,
    /// Variables given by the application, in place of the environment.
    Vars(Arc<Vec<(String, String)>>),
    /// Connect directly.
    Direct,
    /// This proxy for every host.
    Url(Arc<ProxyUrl>),
}

impl Proxy {
    /// Use the proxy the environment names for each URL, with curl's rules (see the type's
    /// documentation). The default.
    pub fn from_env() -> Self {
        Self { choice: Choice::Env }
    }

    /// Apply the environment rules to these variables instead of the process environment:
    /// for configuration read from elsewhere, and for tests. Names are matched as in the
    /// environment (lower case first, then upper case).
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Self { choice: Choice::Vars(Arc::new(vars)) }
    }

    /// Connect directly, whatever the environment says.
    pub fn none() -> Self {
        Self { choice: Choice::Direct }
    }

    /// Connect through this proxy, whatever the host (`no_proxy` does not apply).
    ///
    /// Fails with an error where [`Error::is_config`] holds if the URL cannot be parsed or
    /// its scheme is not `http`, `https`, `socks5` or `socks5h`.
    pub fn url(url: impl AsRef<str>) -> Result<Self> {
        let url = ProxyUrl::parse(url.as_ref()).map_err(Error::url)?;
        Ok(Self { choice: Choice::Url(Arc::new(url)) })
    }

    /// The proxy to use for `host` reached over `ws://` or (`tls`) `wss://`, if any.
    pub(crate) fn resolve(&self, host: &str, tls: bool) -> Result<Option<Arc<ProxyUrl>>> {
        match &self.choice {
            Choice::Direct => Ok(None),
            Choice::Url(url) => Ok(Some(url.clone())),
            Choice::Env => from_vars(host, tls, |name| std::env::var(name).ok()),
            Choice::Vars(vars) => {
                from_vars(host, tls, |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            }
        }
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::from_env()
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.choice {
            Choice::Env => f.write_str("Proxy::from_env()"),
            Choice::Vars(_) => f.write_str("Proxy::from_vars(..)"),
            Choice::Direct => f.write_str("Proxy::none()"),
            Choice::Url(url) => write!(f, "Proxy::url({url})"),
        }
    }
}

/// The proxy for `host` by the environment rules, reading variables with `get`.
fn from_vars(host: &str, tls: bool, get: impl Fn(&str) -> Option<String>) -> Result<Option<Arc<ProxyUrl>>> {
    // Lower case first, as curl does; an empty value counts as unset.
    let var = |name: &str| {
        [name.to_owned(), name.to_ascii_uppercase()]
            .into_iter()
            .find_map(|n| get(&n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
    };
    if let Some((_, no_proxy)) = var("no_proxy")
        && NoProxy::parse(&no_proxy).matches(host)
    {
        return Ok(None);
    }
    let cgi = get("REQUEST_METHOD").is_some();
    let names: &[&str] = if tls {
        &["wss_proxy", "https_proxy", "all_proxy"]
    } else if cgi {
        // httpoxy: a CGI script's HTTP_PROXY may come from the request's `Proxy:` header.
        &["ws_proxy", "all_proxy"]
    } else {
        &["ws_proxy", "http_proxy", "all_proxy"]
    };
    let Some((name, value)) = names.iter().find_map(|n| var(n)) else { return Ok(None) };
    // The value may hold a password: name the variable, not its value.
    let url = ProxyUrl::parse(&value).map_err(|why| Error::url(format!("the proxy in ${name}: {why}")))?;
    Ok(Some(Arc::new(url)))
}

/// A `no_proxy` list: host names (matching the name and its subdomains), IP addresses, CIDR
/// blocks, or `*` for every host; separated by commas or spaces.
#[derive(Debug, Default)]
struct NoProxy {
    all: bool,
    domains: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    fn parse(list: &str) -> Self {
        let mut no = Self::default();
        for entry in list.split([',', ' ', '\t']).map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no.all = true;
            } else if let Some(net) = parse_net(entry) {
                no.nets.push(net);
            } else {
                // ".example.com" and "example.com" both cover example.com and its subdomains.
                let domain = entry.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
                if !domain.is_empty() {
                    no.domains.push(domain);
                }
            }
        }
        no
    }

    fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|&(net, bits)| in_net(ip, net, bits));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.domains.iter().any(|d| {
            host == *d
                || (host.len() > d.len()
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.')
        })
    }
}

/// An IP address (as a /32 or /128) or a CIDR block, brackets allowed around IPv6.
fn parse_net(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match entry.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let ip = addr.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        // An IPv4-mapped IPv6 address is matched as the IPv4 address.
        (IpAddr::V6(ip), IpAddr::V4(_)) => ip.to_ipv4_mapped().is_some_and(|v4| in_net(IpAddr::V4(v4), net, bits)),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// How to speak to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// HTTP `CONNECT` over TCP.
    Http,
    /// HTTP `CONNECT` over TLS to the proxy.
    Https,
    /// SOCKS5, the target's name resolved locally.
    Socks5,
    /// SOCKS5, the target's name resolved by the proxy.
    Socks5h,
}

/// A parsed proxy URL.
#[derive(Clone)]
pub(crate) struct ProxyUrl {
    pub(crate) scheme: Scheme,
    /// IPv6 without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    credentials: Option<Credentials>,
}

/// A proxy's user and password: kept out of `Debug` and `Display`.
#[derive(Clone)]
struct Credentials {
    user: String,
    password: String,
}

impl ProxyUrl {
    /// Parse a proxy URL. The error never quotes the input, which may hold a password.
    fn parse(input: &str) -> std::result::Result<Self, String> {
        let input = input.trim();
        let with_scheme;
        let input = if input.contains("://") {
            input
        } else {
            with_scheme = format!("http://{input}");
            &with_scheme
        };
        let url = url::Url::parse(input).map_err(|e| format!("invalid proxy URL: {e}"))?;
        let (scheme, default_port) = match url.scheme() {
            "http" => (Scheme::Http, 80),
            "https" => (Scheme::Https, 443),
            "socks5" => (Scheme::Socks5, 1080),
            "socks5h" => (Scheme::Socks5h, 1080),
            other => {
                return Err(format!("unsupported proxy scheme {other:?} (use http, https, socks5 or socks5h)"));
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err("the proxy URL has no host".to_owned()),
        };
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| "the proxy URL's user or password is not valid percent-encoded UTF-8".to_owned())
        };
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            Some(Credentials { user: decode(url.username())?, password: decode(url.password().unwrap_or(""))? })
        };
        Ok(Self { scheme, host, port: url.port().unwrap_or(default_port), credentials })
    }

    /// `Proxy-Authorization: Basic …` for an HTTP proxy with credentials.
    fn basic_auth(&self) -> Option<String> {
        let c = self.credentials.as_ref()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password));
        Some(format!("Basic {token}"))
    }
}

/// The proxy as it may be shown: scheme, host and port, never the credentials.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
        };
        match self.host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            Err(_) => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = if self.credentials.is_some() { " (with credentials)" } else { "" };
        write!(f, "{self}{auth}")
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Open a tunnel through an HTTP proxy to `host:port` with `CONNECT` over `io` (TCP, or TLS to
/// the proxy). Returns `io` once the proxy answered 2xx; the bytes after the answer's head
/// belong to the tunnel, so the head is read one byte at a time (a few dozen reads, once).
pub(crate) async fn http_connect<S>(proxy: &ProxyUrl, mut io: S, host: &str, port: u16) -> Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = proxy.basic_auth() {
        request.push_str("Proxy-Authorization: ");
        request.push_str(&auth);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let io_error = |e: std::io::Error| Error::from(std::io::Error::new(e.kind(), format!("proxy {proxy}: {e}")));
    io.write_all(request.as_bytes()).await.map_err(io_error)?;
    io.flush().await.map_err(io_error)?;
    drop(request);

    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_RESPONSE {
            return Err(Error::proxy(
                proxy,
                format!("answered CONNECT with more than {MAX_CONNECT_RESPONSE} bytes of headers"),
                None,
            ));
        }
        match io.read(&mut byte).await.map_err(io_error)? {
            0 => return Err(Error::proxy(proxy, "closed the connection before answering CONNECT", None)),
            _ => head.push(byte[0]),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Error::proxy(proxy, "answered CONNECT with a malformed HTTP response", None)),
    }
    let status = response.code.unwrap_or(0);
    if (200..300).contains(&status) {
        return Ok(io);
    }
    let reason = response.reason.unwrap_or("");
    // 407 is the standard answer; some proxies (tinyproxy) answer 401 to wrong credentials.
    let hint = match status {
        401 | 407 if proxy.credentials.is_some() => " (the proxy did not accept the user and password in its URL)",
        401 | 407 => " (the proxy wants a user and password: put them in its URL, user:password@host)",
        _ => "",
    };
    Err(Error::proxy(proxy, format!("refused CONNECT to {authority}: {status} {reason}{hint}"), Some(status)))
}

/// Open a tunnel through a SOCKS5 proxy, over `tcp` connected to it.
pub(crate) async fn socks5_connect(proxy: &ProxyUrl, tcp: TcpStream, host: &str, port: u16) -> Result<TcpStream> {
    use tokio_socks::tcp::Socks5Stream;

    let fail = |e: tokio_socks::Error| match e {
        tokio_socks::Error::Io(e) => Error::from(std::io::Error::new(e.kind(), format!("proxy {proxy}: {e}"))),
        tokio_socks::Error::PasswordAuthFailure(_) | tokio_socks::Error::AuthorizationRequired => {
            Error::proxy(proxy, format!("refused the user and password: {e}"), Some(407))
        }
        tokio_socks::Error::NoAcceptableAuthMethods if proxy.credentials.is_none() => {
            Error::proxy(proxy, "wants a user and password: put them in its URL, user:password@host", Some(407))
        }
        e => Error::proxy(proxy, format!("cannot reach {host}:{port}: {e}"), None),
    };
    // socks5: resolve here and hand the proxy an address; socks5h: hand it the name.
    let target: tokio_socks::TargetAddr<'_> = match (proxy.scheme, host.parse::<IpAddr>()) {
        (_, Ok(ip)) => tokio_socks::TargetAddr::Ip(SocketAddr::new(ip, port)),
        (Scheme::Socks5, Err(_)) => {
            let addr = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address")))?;
            tokio_socks::TargetAddr::Ip(addr)
        }
        (_, Err(_)) => tokio_socks::TargetAddr::Domain(host.into(), port),
    };
    let stream = match &proxy.credentials {
        Some(c) => Socks5Stream::connect_with_password_and_socket(tcp, target, &c.user, &c.password).await,
        None => Socks5Stream::connect_with_socket(tcp, target).await,
    };
    Ok(stream.map_err(fail)?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)], host: &str, tls: bool) -> Option<String> {
        let proxy = Proxy::from_vars(vars.iter().map(|(k, v)| (*k, *v)));
        proxy.resolve(host, tls).unwrap().map(|u| u.to_string())
    }

    #[test]
    fn variables_by_scheme_in_curl_order() {
        let all = [
            ("ws_proxy", "http://ws:1"),
            ("wss_proxy", "http://wss:2"),
            ("http_proxy", "http://http:3"),
            ("https_proxy", "http://https:4"),
            ("all_proxy", "socks5h://all:5"),
        ];
        assert_eq!(resolve(&all, "example.com", false).as_deref(), Some("http://ws:1"));
        assert_eq!(resolve(&all, "example.com", true).as_deref(), Some("http://wss:2"));
        assert_eq!(resolve(&all[2..], "example.com", false).as_deref(), Some("http://http:3"));
        assert_eq!(resolve(&all[2..], "example.com", true).as_deref(), Some("http://https:4"));
        assert_eq!(resolve(&all[4..], "example.com", false).as_deref(), Some("socks5h://all:5"));
        assert_eq!(resolve(&all[4..], "example.com", true).as_deref(), Some("socks5h://all:5"));
        // http_proxy is for ws only, https_proxy for wss only.
        assert_eq!(resolve(&[("http_proxy", "p:1")], "example.com", true), None);
        assert_eq!(resolve(&[("https_proxy", "p:1")], "example.com", false), None);
        assert_eq!(resolve(&[], "example.com", false), None);
    }

    #[test]
    fn lower_case_first_then_upper_case_and_empty_is_unset() {
        let vars = [("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "http://lower:2")];
        assert_eq!(resolve(&vars, "h", true).as_deref(), Some("http://lower:2"));
        assert_eq!(resolve(&vars[..1], "h", true).as_deref(), Some("http://upper:1"));
        let vars = [("https_proxy", ""), ("HTTPS_PROXY", "http://upper:1")];
        assert_eq!(resolve(&vars, "h", true).as_deref(), Some("http://upper:1"));
        assert_eq!(resolve(&[("ALL_PROXY", "socks5://s")], "h", true).as_deref(), Some("socks5://s:1080"));
    }

    #[test]
    fn request_method_set_ignores_http_proxy() {
        let vars = [("HTTP_PROXY", "http://evil:1"), ("REQUEST_METHOD", "GET")];
        assert_eq!(resolve(&vars, "h", false), None);
        let vars = [("http_proxy", "http://evil:1"), ("REQUEST_METHOD", "GET"), ("ALL_PROXY", "http://ok:2")];
        assert_eq!(resolve(&vars, "h", false).as_deref(), Some("http://ok:2"));
        // Only HTTP_PROXY is injectable: the others still apply.
        let vars = [("ws_proxy", "http://ok:3"), ("REQUEST_METHOD", "GET")];
        assert_eq!(resolve(&vars, "h", false).as_deref(), Some("http://ok:3"));
    }

    #[test]
    fn no_proxy_hosts_domains_cidr_and_star() {
        let with = |no: &str, host: &str| resolve(&[("all_proxy", "http://p:1"), ("NO_PROXY", no)], host, false);
        for (no, host) in [
            ("example.com", "example.com"),
            ("example.com", "a.b.EXAMPLE.com"),
            (".example.com", "example.com"),
            (".example.com", "www.example.com"),
            ("other, example.com", "example.com"),
            ("other example.com", "example.com"),
            ("10.0.0.0/8", "10.1.2.3"),
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("fd00::/8", "fd12::1"),
            ("*", "anything.at.all"),
            ("localhost", "localhost."),
        ] {
            assert_eq!(with(no, host), None, "NO_PROXY={no} should bypass {host}");
        }
        for (no, host) in [
            ("example.com", "notexample.com"),
            ("example.com", "example.com.evil"),
            ("10.0.0.0/8", "11.0.0.1"),
            ("127.0.0.1", "127.0.0.2"),
            ("fd00::/8", "fe80::1"),
            ("*.example.com", "www.example.com"),
        ] {
            assert!(with(no, host).is_some(), "NO_PROXY={no} should not bypass {host}");
        }
        let lower = [("all_proxy", "http://p:1"), ("no_proxy", "example.com"), ("NO_PROXY", "")];
        assert_eq!(resolve(&lower, "example.com", true), None);
    }

    #[test]
    fn proxy_urls() {
        let p = ProxyUrl::parse("http://us%40er:p%3Ass@proxy.local:3128").unwrap();
        assert_eq!(p.scheme, Scheme::Http);
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 3128));
        assert_eq!(p.basic_auth().as_deref(), Some("Basic dXNAZXI6cDpzcw=="));
        assert_eq!(format!("{p:?}"), "http://proxy.local:3128 (with credentials)");
        assert_eq!(p.to_string(), "http://proxy.local:3128");
        assert_eq!(ProxyUrl::parse("proxy:8080").unwrap().to_string(), "http://proxy:8080");
        assert_eq!(ProxyUrl::parse("https://proxy").unwrap().to_string(), "https://proxy:443");
        assert_eq!(ProxyUrl::parse("socks5h://[::1]").unwrap().to_string(), "socks5h://[::1]:1080");
        let e = ProxyUrl::parse("ftp://user:hunter2@proxy").unwrap_err();
        assert!(e.contains("unsupported proxy scheme") && !e.contains("hunter2"), "{e}");
        let e = resolve_err(&[("https_proxy", "gopher://u:hunter2@p")]);
        assert!(e.contains("$https_proxy") && !e.contains("hunter2"), "{e}");
        let proxy = Proxy::url("socks5://u:hunter2@p:1").unwrap();
        assert!(!format!("{proxy:?}").contains("hunter2"));
    }

    fn resolve_err(vars: &[(&str, &str)]) -> String {
        let proxy = Proxy::from_vars(vars.iter().map(|(k, v)| (*k, *v)));
        proxy.resolve("h", true).unwrap_err().to_string()
    }
}
