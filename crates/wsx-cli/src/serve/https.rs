//! `wsx serve` over TLS: HTTP/1.1 and HTTP/2 on one port (agreed by ALPN), on
//! `wsx::hyper::Server`.
//!
//! Browsers that load the page over HTTP/2 open the page's `wss://` WebSocket on that same
//! connection, as an extended CONNECT (RFC 8441), when the server announced
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`. `wsx::hyper::Server` announces it, and every path of
//! this service that takes a WebSocket takes it over both versions, so the promise is kept.
//! The WebSockets run the same sessions as those of `wsx::Server` (cleartext), through
//! [`session::session`]; the server closes them with 1001 on shutdown.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tracing::{debug, info};
use wsx::{
    Accept, Config, Reject, Request,
    hyper::{PeerAddr, Server},
};

use super::{
    http::Site,
    session::{self, Opened, State},
};

/// What each request of the HTTPS server shares.
struct Shared<P> {
    site: Site,
    config: Config,
    policy: P,
}

/// Serve `site` and the WebSockets of `state`'s mode on `server` until Ctrl-C or SIGTERM.
pub(super) async fn serve<P>(server: Server, state: State, site: Site, config: Config, policy: P) -> anyhow::Result<()>
where
    P: Fn(&Request) -> Result<Accept, Reject> + Send + Sync + 'static,
{
    session::init(state)?;
    let shared = Arc::new(Shared { site, config, policy });
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(&shared, request).await) }
    });
    server.serve_with_shutdown(service, session::shutdown_signal()).await?;
    Ok(())
}

/// Answer one request: a WebSocket upgrade (HTTP/1.1 `GET` + `Upgrade`, or HTTP/2 extended
/// CONNECT), or a page or file.
async fn respond<P>(shared: &Shared<P>, mut request: http::Request<Incoming>) -> Response<Full<Bytes>>
where
    P: Fn(&Request) -> Result<Accept, Reject> + Send + Sync + 'static,
{
    // Invariant: `wsx::hyper::Server` puts the client's address in every request.
    let peer = request.extensions().get::<PeerAddr>().map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
    if request.method() == Method::CONNECT || request.headers().contains_key(header::UPGRADE) {
        return upgrade(shared, &mut request, peer);
    }
    let response = if request.method() == Method::GET || request.method() == Method::HEAD {
        let (parts, _body) = request.into_parts();
        let head = http::Request::from_parts(parts, ());
        let response = shared.site.respond(&head).await;
        let target = head.uri().path_and_query().map_or("/", |p| p.as_str());
        info!(%peer, status = response.status().as_u16(), http = ?head.version(), "{} {target}", head.method());
        response
    } else {
        let mut response = Reject::status(StatusCode::METHOD_NOT_ALLOWED).into_response();
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        info!(%peer, status = 405, "{} {}", request.method(), request.uri());
        response
    };
    response.map(Full::new)
}

/// Upgrade `request` to a WebSocket if the policy accepts it, and run its session.
fn upgrade<P>(shared: &Shared<P>, request: &mut http::Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>>
where
    P: Fn(&Request) -> Result<Accept, Reject> + Send + Sync + 'static,
{
    let version = request.version();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let upgraded = wsx::hyper::upgrade_with::<_, Full<Bytes>, _>(request, &shared.config, &shared.policy);
    let (response, upgrade) = match upgraded {
        Ok(upgraded) => upgraded,
        Err(reject) => {
            let response = reject.into_response();
            info!(%peer, status = response.status().as_u16(), http = ?version, path, "WebSocket request refused");
            return response.map(Full::new);
        }
    };
    tokio::spawn(async move {
        let ws = match upgrade.await {
            Ok(ws) => ws,
            Err(e) => {
                debug!(%peer, error = %e, "the upgrade did not complete");
                return;
            }
        };
        // Failures are logged by the session.
        let _ = session::session(ws, Opened { peer, path: &path, query: query.as_deref(), version }).await;
    });
    response
}
