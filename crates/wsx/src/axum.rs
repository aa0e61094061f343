//! WebSockets in axum 0.8 (feature `axum`): the [`WebSocketUpgrade`] extractor, shaped like
//! axum's own `extract::ws::WebSocketUpgrade`, giving the handler a [`wsx::WebSocket`]
//! (permessage-deflate, [`recv_each`](crate::WebSocket::recv_each), [`split`](crate::WebSocket::split),
//! wsx's limits and timeouts).
//!
//! ```no_run
//! use axum::{Router, response::Response, routing::any};
//! use wsx::axum::WebSocketUpgrade;
//!
//! async fn ws(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade
//!         .config(wsx::Config::default().deflate(Some(wsx::DeflateConfig::default())))
//!         .protocols(["chat.v1"])
//!         .same_origin()
//!         .on_upgrade(|mut ws| async move {
//!             while let Ok(Some(message)) = ws.recv().await {
//!                 if ws.send(message).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         })
//! }
//!
//! // `any`, not `get`: over HTTP/2 a WebSocket is a CONNECT request (RFC 8441).
//! let app: Router = Router::new().route("/ws", any(ws));
//! ```
//!
//! It is built on `axum-core` 0.5, not on axum, so that wsx does not tie you to an axum
//! minor version. It works under `axum::serve` (over plain TCP the WebSocket gets the socket
//! itself, as on [`wsx::Server`](crate::Server)) and under [`wsx::hyper::Server`], which adds
//! TLS with HTTP/2, a connection cap covering WebSockets, and a graceful shutdown that closes
//! them with 1001 (`axum::serve`'s does not reach upgraded connections).
//!
//! [`wsx::WebSocket`]: crate::WebSocket
//! [`wsx::hyper::Server`]: crate::hyper::Server

use std::{
    future::Future,
    sync::{Arc, OnceLock},
};

use axum_core::{
    body::Body,
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{StatusCode, request::Parts};
use tracing::debug;
use wsx_proto::{Accept, Config, Request};

use crate::{
    Error, Reject, WebSocket,
    hyper::{Checked, Io, head},
};

/// The origin check: whether a request's `Origin` may open a WebSocket.
type OriginCheck = Box<dyn Fn(&str, &Request) -> bool + Send + Sync>;

/// An extractor for a WebSocket upgrade request, over HTTP/1.1 (`GET` + `Upgrade`) or HTTP/2
/// (an extended CONNECT, RFC 8441): set it up, then answer the request with
/// [`on_upgrade`](Self::on_upgrade).
///
/// Extraction checks the request with the rules of [`wsx::Server`](crate::Server) and
/// fails with [`WebSocketUpgradeRejection`] (400, 405, 426) if it is not a valid WebSocket
/// request. Mount the handler with `any(..)` (or `on(MethodFilter::GET.or(MethodFilter::CONNECT), ..)`):
/// a `get` route refuses the CONNECT of HTTP/2.
///
/// | axum's `extract::ws` | `wsx::axum` |
/// |---|---|
/// | `max_message_size`, `max_frame_size`, `write_buffer_size`, … | [`config`](Self::config) (a [`Config`]: limits, permessage-deflate, timeouts) |
/// | `protocols`, `selected_protocol`, `requested_protocols` | the same |
/// | `on_failed_upgrade`, `on_upgrade` | the same; the callback gets a [`WebSocket<Io>`] |
/// | — | [`origin`](Self::origin), [`same_origin`](Self::same_origin): 403 for other origins |
pub struct WebSocketUpgrade<F = DefaultOnFailedUpgrade> {
    checked: Checked,
    config: Arc<Config>,
    accept: Accept,
    origin: Option<OriginCheck>,
    on_failed_upgrade: F,
}

impl<F> std::fmt::Debug for WebSocketUpgrade<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("request", &self.checked.request)
            .field("protocol", &self.accept.selected_protocol())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request = head(&parts.method, &parts.uri, parts.version, &parts.headers);
        let checked = Checked::from_parts(request, &mut parts.extensions)
            .map_err(|reject| WebSocketUpgradeRejection(reject.into_response()))?;
        Ok(Self {
            checked,
            config: default_config(),
            accept: Accept::new(),
            origin: None,
            on_failed_upgrade: DefaultOnFailedUpgrade,
        })
    }
}

impl<F> WebSocketUpgrade<F> {
    /// The connection's settings: limits, permessage-deflate, timeouts. Default:
    /// [`Config::default()`]. Pass an `Arc<Config>` to share one config between connections
    /// rather than copy it for each.
    pub fn config(mut self, config: impl Into<Arc<Config>>) -> Self {
        self.config = config.into();
        self
    }

    /// The subprotocols the server speaks: the first of the client's offers, in the client's
    /// order, that is among them is selected. None is selected if none matches (the client
    /// then decides whether to go on).
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<std::borrow::Cow<'static, str>>,
    {
        let ours: Vec<std::borrow::Cow<'static, str>> = protocols.into_iter().map(Into::into).collect();
        let offered = self.checked.request.protocols();
        if let Some(chosen) = offered.iter().find(|offer| ours.iter().any(|p| p == offer.as_str())) {
            self.accept = self.accept.protocol(chosen.clone());
        }
        self
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn requested_protocols(&self) -> &[String] {
        self.checked.request.protocols()
    }

    /// The subprotocol selected so far, if any.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.accept.selected_protocol()
    }

    /// Select `protocol`, which must be one the client offered (else the upgrade fails with
    /// 500 and a log line).
    pub fn set_selected_protocol(&mut self, protocol: impl Into<String>) {
        self.accept = std::mem::take(&mut self.accept).protocol(protocol);
    }

    /// The checked request: path, query, headers, origin, offered subprotocols.
    pub fn request(&self) -> &Request {
        &self.checked.request
    }

    /// Refuse with 403 the requests whose `Origin` header `allow` does not accept; `allow`
    /// gets the origin and the request. Requests without `Origin` are accepted: browsers
    /// always send it, and other clients are not exposed to cross-site WebSocket hijacking.
    ///
    /// A browser page of any site can open a WebSocket to any server, with the user's cookies:
    /// a server that authenticates WebSockets by cookie must check the origin. This applies to
    /// HTTP/2 as to HTTP/1.1 (RFC 8441 has no `Sec-WebSocket-Key` either way).
    pub fn origin<C>(mut self, allow: C) -> Self
    where
        C: Fn(&str, &Request) -> bool + Send + Sync + 'static,
    {
        self.origin = Some(Box::new(allow));
        self
    }

    /// [`origin`](Self::origin) accepting only the request's own host: the authority of the
    /// `Origin` (`scheme://host[:port]`) must equal the request's `Host` (HTTP/1.1) or
    /// `:authority` (HTTP/2).
    pub fn same_origin(self) -> Self {
        self.origin(|origin, request| {
            let authority = origin.split_once("://").map_or("", |(_, authority)| authority);
            let host = request.host().or_else(|| request.head().uri().authority().map(|a| a.as_str()));
            host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
        })
    }

    /// What to do when the upgrade fails after the response was sent (the connection ended
    /// first); `callback` gets the error. Default: a debug log line.
    pub fn on_failed_upgrade<C>(self, callback: C) -> WebSocketUpgrade<C>
    where
        C: OnFailedUpgrade,
    {
        WebSocketUpgrade {
            checked: self.checked,
            config: self.config,
            accept: self.accept,
            origin: self.origin,
            on_failed_upgrade: callback,
        }
    }

    /// Accept the request and return the response (101, or 200 over HTTP/2); once hyper has
    /// sent it, `callback` runs in a task of its own with the open [`WebSocket`].
    ///
    /// Returns a refusal instead if the origin check fails (403), or 500 if the config is
    /// invalid or the selected subprotocol was not offered (logged).
    #[must_use = "the WebSocket opens only if this response is returned"]
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket<Io>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
        F: OnFailedUpgrade,
    {
        let Self { checked, config, accept, origin, on_failed_upgrade } = self;
        if let (Some(allow), Some(origin)) = (&origin, checked.request.origin())
            && !allow(origin, &checked.request)
        {
            debug!(origin, "WebSocket refused: origin not allowed");
            return reject_response(Reject::status(StatusCode::FORBIDDEN));
        }
        let (response, upgrade) = match checked.accept::<Body>(config, &accept) {
            Ok(accepted) => accepted,
            Err(reject) => return reject_response(reject),
        };
        tokio::spawn(async move {
            match upgrade.await {
                Ok(ws) => callback(ws).await,
                Err(e) => on_failed_upgrade.call(e),
            }
        });
        response
    }
}

/// What to do when an accepted upgrade fails: see [`WebSocketUpgrade::on_failed_upgrade`].
pub trait OnFailedUpgrade: Send + 'static {
    /// Handle the error.
    fn call(self, error: Error);
}

impl<C: FnOnce(Error) + Send + 'static> OnFailedUpgrade for C {
    fn call(self, error: Error) {
        self(error);
    }
}

/// The default [`OnFailedUpgrade`]: a debug log line.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DefaultOnFailedUpgrade;

impl OnFailedUpgrade for DefaultOnFailedUpgrade {
    fn call(self, error: Error) {
        debug!(error = %error, "WebSocket upgrade failed");
    }
}

/// Why a request is not a WebSocket upgrade: its response is the refusal (400 for a missing
/// or invalid field, 405 for another method, 426 for another WebSocket version or a
/// connection that cannot be upgraded), with the reason as a plain-text body.
#[derive(Debug)]
pub struct WebSocketUpgradeRejection(http::Response<Bytes>);

impl WebSocketUpgradeRejection {
    /// The status the refusal carries.
    pub fn status(&self) -> StatusCode {
        self.0.status()
    }
}

impl std::fmt::Display for WebSocketUpgradeRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a WebSocket upgrade request ({})", self.status())
    }
}

impl std::error::Error for WebSocketUpgradeRejection {}

impl IntoResponse for WebSocketUpgradeRejection {
    fn into_response(self) -> Response {
        let (parts, body) = self.0.into_parts();
        Response::from_parts(parts, Body::from(body))
    }
}

/// A refusal as an axum response.
fn reject_response(reject: Reject) -> Response {
    WebSocketUpgradeRejection(reject.into_response()).into_response()
}

/// The config of an extractor not told otherwise, shared by all of them.
fn default_config() -> Arc<Config> {
    static DEFAULT: OnceLock<Arc<Config>> = OnceLock::new();
    DEFAULT.get_or_init(|| Arc::new(Config::default())).clone()
}
