//! The opening handshake on a connection (RFC 6455 §4): reading the client's request or the
//! server's response, and the server's answer (`accept`, `reject`). The HTTP parsing and the
//! header rules are in [`crate::handshake`].

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};

use super::{Connection, Event, State};
use crate::{
    Accept, HandshakeError, Request, Role, SendError,
    deflate::{self, Deflate},
    handshake::{client, server},
};

/// What only the opening handshake needs: allocated with the connection and dropped when the
/// handshake ends, so that an open connection does not carry it.
#[derive(Debug)]
pub(super) struct Handshake {
    /// When the handshake times out.
    pub(super) deadline: Instant,
    /// Client: what the response must match.
    pub(super) pending_client: Option<client::Pending>,
    /// Server: the request waiting for `accept` or `reject`.
    pending_request: Option<Box<Request>>,
    /// Client: the refused (non-101) response whose body is being read.
    refused: Option<RefusedResponse>,
}

impl Handshake {
    pub(super) fn new(deadline: Instant) -> Self {
        Self { deadline, pending_client: None, pending_request: None, refused: None }
    }
}

/// A server's refusal (a response other than 101) whose body is being read.
#[derive(Debug)]
struct RefusedResponse {
    status: StatusCode,
    headers: Box<HeaderMap>,
    body: Vec<u8>,
    /// Body bytes still expected, if the response said.
    remaining: Option<usize>,
}

/// What the subprotocol, negotiated once, and a client's masking keys need for the rest of the
/// connection: boxed, since a server without subprotocols has neither.
#[derive(Default)]
pub(super) struct Session {
    /// The subprotocol agreed in the handshake.
    pub(super) protocol: Option<Box<str>>,
    /// Client: the masking keys' source.
    pub(super) rng: Option<Box<dyn crate::MaskRng>>,
    /// Client over HTTP/2 or later: end our side (END_STREAM) as soon as the close is decided,
    /// rather than wait for the server to end first as over TCP (RFC 6455 §7.1.1, whose reason,
    /// TIME_WAIT on the server, does not apply to a stream).
    pub(super) end_stream_first: bool,
}

impl Connection {
    /// Server: accept the request reported by [`Event::Request`] with a 101 response, and
    /// start reading frames (including any that arrived already).
    ///
    /// Fails with `InvalidState` if there is no request to answer, or if `accept` selects a
    /// subprotocol the client did not offer.
    pub fn accept(&mut self, accept: &Accept) -> Result<(), SendError> {
        if self.state != State::AwaitAccept {
            return Err(SendError::InvalidState);
        }
        let handshake = self.handshake.as_deref().ok_or(SendError::InvalidState)?;
        let request = handshake.pending_request.as_deref().ok_or(SendError::InvalidState)?;
        let deflate = self.negotiate_deflate(request);
        let mut head = BytesMut::new();
        server::write_accept(request, accept, deflate.as_ref().map(|(_, header)| header.as_str()), &mut head)?;
        self.work().outgoing.extend(&head);
        self.open_accepted(accept, deflate);
        Ok(())
    }

    /// Server: accept a request that another HTTP layer (hyper, …) read and checked with
    /// [`Request::from_head`], on a connection fresh from [`server`](Self::server) or
    /// [`server_shared`](Self::server_shared). Returns the response head for that layer to
    /// send: 101 with `Sec-WebSocket-Accept` for HTTP/1.1, 200 for an HTTP/2 or HTTP/3
    /// extended CONNECT, with the subprotocol, the permessage-deflate answer and `accept`'s
    /// headers. The connection is open.
    ///
    /// The subprotocol and permessage-deflate are agreed by the same code as in
    /// [`accept`](Self::accept). Then feed the connection any bytes the HTTP layer read past
    /// the request head (a client may send its first frame with the request), before what the
    /// stream brings next. Nothing of the handshake goes through [`transmit`](Self::transmit).
    ///
    /// Fails with `InvalidState`, leaving the connection as it was, if the connection is not a
    /// fresh server one (it was accepted already, or it has parsed a request itself), or if
    /// `accept` selects a subprotocol the client did not offer or sets a header the handshake
    /// writes.
    pub fn accept_upgraded(&mut self, request: &Request, accept: &Accept) -> Result<http::Response<()>, SendError> {
        if self.role != Role::Server || self.state != State::Handshake {
            return Err(SendError::InvalidState);
        }
        let deflate = self.negotiate_deflate(request);
        let head = server::accept_head(request, accept, deflate.as_ref().map(|(_, header)| header.as_str()))?;
        self.open_accepted(accept, deflate);
        Ok(head)
    }

    /// Server: the permessage-deflate parameters to agree for `request`, and the header value
    /// answering its offer; `None` if off or declined.
    fn negotiate_deflate(&self, request: &Request) -> Option<(deflate::Params, String)> {
        deflate::server_negotiate(self.config.deflate.as_ref()?, request.headers())
    }

    /// Server: the request is accepted with `accept` and `deflate`: open.
    fn open_accepted(&mut self, accept: &Accept, deflate: Option<(deflate::Params, String)>) {
        if let (Some((params, _)), Some(cfg)) = (deflate, &self.config.deflate) {
            self.deflate = Some(Box::new(Deflate::new(params, Role::Server, cfg)));
        }
        if let Some(protocol) = accept.protocol.as_deref() {
            self.session.get_or_insert_default().protocol = Some(protocol.into());
        }
        self.open();
    }

    /// Server: refuse the request with `response` (any status but 101; a 401 with
    /// `WWW-Authenticate`, a 403 for a bad origin, …), or answer a plain HTTP request with it
    /// (without the body if the request is `HEAD`), then close.
    pub fn reject(&mut self, response: http::Response<Bytes>) -> Result<(), SendError> {
        if self.state != State::AwaitAccept || response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(SendError::InvalidState);
        }
        let request = self.handshake.as_deref().and_then(|h| h.pending_request.as_deref());
        let mut head = BytesMut::new();
        let status = server::write_answer(request, response, &mut head);
        self.refuse(&head, HandshakeError::Rejected { status });
        Ok(())
    }

    /// Parse what arrived of the handshake. Returns whether it did anything.
    pub(super) fn read_handshake(&mut self) -> bool {
        let Some(w) = self.work.as_deref_mut() else { return self.end_of_input() };
        if w.incoming.buf.bytes.is_empty() {
            return self.end_of_input();
        }
        match (self.state, self.role) {
            (State::Refused, _) => self.read_refused_body(),
            (_, Role::Server) => self.read_request(),
            (_, Role::Client) => self.read_response(),
        }
    }

    /// The handshake timer.
    pub(super) fn handshake_timeout(&mut self, now: Instant) {
        if self.handshake.as_ref().is_some_and(|h| now >= h.deadline) {
            if self.state == State::Refused {
                self.finish_refused();
            } else {
                self.record_error(HandshakeError::Timeout);
            }
            self.shutdown = true;
            self.finish();
        }
    }

    /// Client: report the refusal whose body was being read.
    pub(super) fn finish_refused(&mut self) {
        if let Some(r) = self.handshake.as_mut().and_then(|h| h.refused.take()) {
            let error = HandshakeError::Refused { status: r.status, headers: r.headers, body: r.body };
            self.record_error(error);
        }
    }

    /// Server: try to parse the request.
    fn read_request(&mut self) -> bool {
        let buf = &super::buffers::work(&mut self.work).incoming.buf.bytes;
        match server::parse_request(buf, &self.config) {
            Ok(None) => self.end_of_input(),
            Ok(Some((request, n))) => {
                self.work().incoming.buf.bytes.advance(n);
                let request = Box::new(request);
                if let Some(handshake) = self.handshake.as_mut() {
                    handshake.pending_request = Some(request.clone());
                }
                self.state = State::AwaitAccept;
                self.push_event(Event::Request(request));
                true
            }
            Err(error) => {
                let mut head = BytesMut::new();
                server::write_refusal(&error, &self.config, &mut head);
                self.refuse(&head, error);
                true
            }
        }
    }

    /// Client: try to parse the response.
    fn read_response(&mut self) -> bool {
        let buf = &super::buffers::work(&mut self.work).incoming.buf.bytes;
        let (head, n) = match client::parse_response(buf, &self.config) {
            Ok(None) => return self.end_of_input(),
            Ok(Some(parsed)) => parsed,
            Err(error) => {
                self.fail_handshake(error);
                return true;
            }
        };
        self.work().incoming.buf.bytes.advance(n);
        if head.status() != StatusCode::SWITCHING_PROTOCOLS {
            let remaining = head
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            let (parts, ()) = head.into_parts();
            if let Some(handshake) = self.handshake.as_mut() {
                let headers = Box::new(parts.headers);
                handshake.refused =
                    Some(RefusedResponse { status: parts.status, headers, body: Vec::new(), remaining });
            }
            self.state = State::Refused;
            return true;
        }
        self.open_response(head);
        true
    }

    /// Client: the response head to the request of
    /// [`client_upgraded`](Self::client_upgraded), as the HTTP layer that sent it received it.
    ///
    /// An input: it never fails. A 101 (HTTP/1.1) or a 2xx (HTTP/2 and later, RFC 8441 §5) that
    /// passes the checks of RFC 6455 §4.1 (the accept digest over HTTP/1.1, a subprotocol and
    /// permessage-deflate parameters only as offered) opens the connection, reported as
    /// [`Event::Opened`]; any other response fails it, reported as [`Event::Closed`] with the
    /// [`HandshakeError`] (`Refused`, without the body, which is the HTTP layer's to read, for
    /// another status). Ignored unless the connection is a client still waiting for its
    /// response.
    pub fn receive_response(&mut self, response: http::Response<()>, now: Instant) {
        self.observe(now);
        let waiting = self.handshake.as_ref().is_some_and(|h| h.pending_client.is_some());
        if self.role == Role::Client && self.state == State::Handshake && waiting {
            self.open_response(response);
        }
    }

    /// Client: check the response head against the request, and open or fail.
    fn open_response(&mut self, head: http::Response<()>) {
        // Invariant: `pending_client` is set by `Connection::client` and
        // `Connection::client_upgraded`, the only ways to get a client connection, and taken
        // only here; `handshake` is kept until the state leaves `Handshake`.
        let pending = self.handshake.as_mut().and_then(|h| h.pending_client.take()).expect("client handshake pending");
        let over_stream = pending.version >= http::Version::HTTP_2;
        let extensions = head.headers().clone();
        let result = client::check_response(head, &pending).and_then(|response| {
            let agreed = match &self.config.deflate {
                Some(cfg) => deflate::client_accept(cfg, &extensions).map_err(HandshakeError::InvalidResponse)?,
                None if extensions.contains_key(http::header::SEC_WEBSOCKET_EXTENSIONS) => {
                    return Err(HandshakeError::InvalidResponse("server selected an extension that was not offered"));
                }
                None => None,
            };
            Ok((response, agreed))
        });
        match result {
            Ok((response, agreed)) => {
                if let (Some(params), Some(cfg)) = (agreed, &self.config.deflate) {
                    self.deflate = Some(Box::new(Deflate::new(params, Role::Client, cfg)));
                }
                if let Some(protocol) = response.protocol.as_deref() {
                    self.session.get_or_insert_default().protocol = Some(protocol.into());
                }
                if over_stream {
                    self.session.get_or_insert_default().end_stream_first = true;
                }
                self.open();
                self.push_event(Event::Opened(Box::new(response)));
            }
            // §4.1: "the client MUST _Fail the WebSocket Connection_"; nothing was sent on it
            // yet, so just close.
            Err(error) => self.fail_handshake(error),
        }
    }

    /// Client: collect the body of a non-101 response, bounded by `max_header_bytes`.
    fn read_refused_body(&mut self) -> bool {
        let limit = self.config.max_header_bytes;
        let Some(r) = self.handshake.as_mut().and_then(|h| h.refused.as_mut()) else { return false };
        let rbuf = &mut super::buffers::work(&mut self.work).incoming.buf.bytes;
        let want = r.remaining.unwrap_or(usize::MAX).min(rbuf.len());
        let keep = want.min(limit.saturating_sub(r.body.len()));
        r.body.extend_from_slice(&rbuf[..keep]);
        rbuf.advance(want);
        if let Some(rem) = r.remaining.as_mut() {
            *rem -= want;
        }
        if r.remaining == Some(0) || r.body.len() >= limit {
            self.finish_refused();
            self.shutdown = true;
            self.finish();
        }
        true
    }

    /// The handshake is done: frames may flow.
    fn open(&mut self) {
        self.state = State::Open;
        self.handshake = None;
        self.start_keepalive();
    }
}
