//! permessage-deflate negotiation (RFC 7692 §5, §7.1) over `Sec-WebSocket-Extensions`.
//!
//! The header grammar is RFC 6455 §9.1:
//!
//! ```text
//! Sec-WebSocket-Extensions = extension-list
//! extension-list = 1#extension
//! extension = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! A request may carry the header several times; the lists are read in order, as one list.
//! Every offer and answer is parsed into [`Offer`] first, so the accept/decline rules below
//! work on typed values only.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::{HeaderMap, header::SEC_WEBSOCKET_EXTENSIONS};

use super::{DeflateConfig, MAX_WINDOW_BITS, MIN_WINDOW_BITS, Params};
use crate::handshake::http::is_tchar;

/// The extension token (RFC 7692 §7).
const NAME: &str = "permessage-deflate";

/// The `Sec-WebSocket-Extensions` value a client offers.
///
/// `permessage-deflate` with the configured parameters, and always `client_max_window_bits`
/// (RFC 7692 §7.1.2.2): it tells the server it may choose our window, which servers short of
/// memory need before they accept at all. Every value 8..=15 they may pick is one we honour
/// (see the module docs on the 8-bit window).
pub(crate) fn client_offer(config: &DeflateConfig) -> String {
    Offer::from_config(config).to_header()
}

/// Server: pick the first acceptable permessage-deflate offer among the request's
/// `Sec-WebSocket-Extensions` headers. Returns the agreed parameters and the response header
/// value, or `None` to decline (no offer, or only offers the RFC says to decline).
///
/// RFC 7692 §5: the client lists offers in order of preference, and "it is recommended that a
/// server accepts PMCEs with higher preference if the server supports them". An offer is
/// declined (and the next one tried) when it has an unknown parameter, a parameter twice, or
/// an invalid value (§7.1: "a server MUST decline an extension negotiation offer" then), or when
/// the server wants a `client_max_window_bits` below 15 and the offer gives it no way to ask
/// for it. A header line that does not follow the grammar is skipped whole. Other extensions
/// are not ours to accept and are ignored.
pub(crate) fn server_negotiate(config: &DeflateConfig, headers: &HeaderMap) -> Option<(Params, String)> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|line| parse_list(line.to_str().ok()?).ok())
        .flatten()
        .filter(|extension| extension.name.eq_ignore_ascii_case(NAME))
        .find_map(|extension| {
            let offer = Offer::parse(&extension).ok()?;
            let answer = offer.accept(config)?;
            Some((answer.agreed_by_server(), answer.to_header()))
        })
}

/// Client: check the response's `Sec-WebSocket-Extensions` against the offer. `Ok(None)`: the
/// server declined. `Err(reason)`: fail the connection.
///
/// RFC 6455 §4.1: a response naming an extension the client did not offer fails the
/// connection, so any extension but one permessage-deflate is an error. RFC 7692 §7.1 holds the
/// answer to the offer: only known parameters, each once, with valid values;
/// `server_no_context_takeover` echoed when we asked for it; `server_max_window_bits` present
/// and no larger than ours when we sent one; `client_max_window_bits` with a value, and no
/// larger than ours when we sent one.
pub(crate) fn client_accept(config: &DeflateConfig, headers: &HeaderMap) -> Result<Option<Params>, &'static str> {
    let mut answer = None;
    for line in headers.get_all(SEC_WEBSOCKET_EXTENSIONS) {
        let line = line.to_str().map_err(|_| "Sec-WebSocket-Extensions is not visible ASCII")?;
        for extension in parse_list(line).map_err(|Malformed| "malformed Sec-WebSocket-Extensions")? {
            if !extension.name.eq_ignore_ascii_case(NAME) {
                return Err("server accepted an extension that was not offered");
            }
            if answer.is_some() {
                return Err("server accepted permessage-deflate twice");
            }
            answer = Some(Offer::parse(&extension)?);
        }
    }
    let Some(answer) = answer else {
        return Ok(None);
    };
    Offer::from_config(config).check_answer(&answer).map(Some)
}

/// The parameters of one permessage-deflate element: an offer, or an answer to one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `server_max_window_bits=N` (a value is required, §7.1.2.1).
    server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`, with its value if it has one (§7.1.2.2).
    client_max_window_bits: Option<Option<u8>>,
}

impl Offer {
    /// The offer a client with `config` sends.
    fn from_config(config: &DeflateConfig) -> Self {
        let bits = |bits: u8| (bits < MAX_WINDOW_BITS).then_some(bits);
        Self {
            server_no_context_takeover: config.server_no_context_takeover,
            client_no_context_takeover: config.client_no_context_takeover,
            server_max_window_bits: bits(config.server_max_window_bits),
            client_max_window_bits: Some(bits(config.client_max_window_bits)),
        }
    }

    /// Read the parameters of a permessage-deflate element. Fails on an unknown parameter, a
    /// repeated one, or a value that breaks RFC 7692 §7.1 (which makes a server decline the
    /// offer and a client fail the connection).
    fn parse(extension: &Extension<'_>) -> Result<Self, &'static str> {
        let mut offer = Self::default();
        let mut seen = [false; 4];
        for (name, value) in &extension.params {
            let (index, value_ok) = if name.eq_ignore_ascii_case("server_no_context_takeover") {
                offer.server_no_context_takeover = true;
                (0, value.is_none())
            } else if name.eq_ignore_ascii_case("client_no_context_takeover") {
                offer.client_no_context_takeover = true;
                (1, value.is_none())
            } else if name.eq_ignore_ascii_case("server_max_window_bits") {
                offer.server_max_window_bits = value.as_deref().and_then(parse_window_bits);
                (2, offer.server_max_window_bits.is_some())
            } else if name.eq_ignore_ascii_case("client_max_window_bits") {
                let bits = value.as_deref().map(parse_window_bits);
                offer.client_max_window_bits = Some(bits.flatten());
                (3, bits != Some(None))
            } else {
                return Err("unknown permessage-deflate parameter");
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err("repeated permessage-deflate parameter");
            }
            if !value_ok {
                return Err("invalid permessage-deflate parameter value");
            }
        }
        Ok(offer)
    }

    /// Server: the answer to this offer under `config`, or `None` to decline it.
    ///
    /// RFC 7692 §7.1.1.1: a requested `server_no_context_takeover` MUST be in the answer; a
    /// server configured for it or for `client_no_context_takeover` always adds it. §7.1.2.1:
    /// the answer's `server_max_window_bits` is at most the requested one; the server also
    /// announces a smaller configured cap. §7.1.2.2: `client_max_window_bits` may only be
    /// answered if offered, with at most the offered value; without it the client's window is
    /// 15 bits, so a server that wants less declines.
    fn accept(&self, config: &DeflateConfig) -> Option<Self> {
        let server_bits = match self.server_max_window_bits {
            Some(requested) => requested.min(config.server_max_window_bits),
            None => config.server_max_window_bits,
        };
        let client_bits = match self.client_max_window_bits {
            None if config.client_max_window_bits < MAX_WINDOW_BITS => return None,
            None => MAX_WINDOW_BITS,
            Some(offered) => offered.unwrap_or(MAX_WINDOW_BITS).min(config.client_max_window_bits),
        };
        Some(Self {
            server_no_context_takeover: self.server_no_context_takeover || config.server_no_context_takeover,
            // The offer's flag is the client's promise (§7.1.1.2); answering it makes it binding.
            client_no_context_takeover: self.client_no_context_takeover || config.client_no_context_takeover,
            server_max_window_bits: (self.server_max_window_bits.is_some() || server_bits < MAX_WINDOW_BITS)
                .then_some(server_bits),
            client_max_window_bits: (client_bits < MAX_WINDOW_BITS).then_some(Some(client_bits)),
        })
    }

    /// Server: the parameters a server's answer (`self`) puts in force.
    fn agreed_by_server(&self) -> Params {
        Params {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            client_max_window_bits: self.client_max_window_bits.flatten().unwrap_or(MAX_WINDOW_BITS),
        }
    }

    /// Client: check the server's `answer` to this offer (RFC 7692 §7.1) and return what it
    /// puts in force.
    fn check_answer(&self, answer: &Self) -> Result<Params, &'static str> {
        if self.server_no_context_takeover && !answer.server_no_context_takeover {
            return Err("server ignored the offered server_no_context_takeover");
        }
        let server_max_window_bits = match (self.server_max_window_bits, answer.server_max_window_bits) {
            (Some(offered), Some(bits)) if bits > offered => {
                return Err("server_max_window_bits in the response is above the offered one");
            }
            (Some(_), None) => return Err("server ignored the offered server_max_window_bits"),
            (_, Some(bits)) => bits,
            (None, None) => MAX_WINDOW_BITS,
        };
        let offered_client_bits = self.client_max_window_bits.map(|bits| bits.unwrap_or(MAX_WINDOW_BITS));
        let client_max_window_bits = match (offered_client_bits, answer.client_max_window_bits) {
            (None, Some(_)) => {
                return Err("client_max_window_bits in the response was not offered");
            }
            (Some(_), Some(None)) => {
                return Err("client_max_window_bits in the response has no value");
            }
            (Some(offered), Some(Some(bits))) if bits > offered => {
                return Err("client_max_window_bits in the response is above the offered one");
            }
            (_, Some(Some(bits))) => bits,
            (offered, None) => offered.unwrap_or(MAX_WINDOW_BITS),
        };
        Ok(Params {
            server_no_context_takeover: answer.server_no_context_takeover,
            // Offering it promised the server we would not take context over (§7.1.1.2).
            client_no_context_takeover: answer.client_no_context_takeover || self.client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
        })
    }

    /// The `Sec-WebSocket-Extensions` element for these parameters.
    fn to_header(self) -> String {
        let mut out = String::from(NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            // Invariant: writing to a String cannot fail.
            write!(out, "; server_max_window_bits={bits}").expect("write to String");
        }
        match self.client_max_window_bits {
            None => {}
            Some(None) => out.push_str("; client_max_window_bits"),
            // Invariant: writing to a String cannot fail.
            Some(Some(bits)) => write!(out, "; client_max_window_bits={bits}").expect("write to String"),
        }
        out
    }
}

/// A window-bits value: a decimal integer in 8..=15 "without leading zeroes" (RFC 7692
/// §7.1.2.1).
fn parse_window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

/// One element of an extension list: a name and its parameters, in order.
#[derive(Debug, PartialEq, Eq)]
struct Extension<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

/// A header value that does not follow the RFC 6455 §9.1 grammar.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

/// Parse one `Sec-WebSocket-Extensions` value into its elements.
///
/// Optional whitespace is allowed around every separator, and empty list elements are skipped
/// (RFC 7230 §7). A quoted value is unescaped and must then be a token (RFC 6455 §9.1).
/// Allocates one `Vec` per element, bounded by the header size the handshake parser accepts.
fn parse_list(value: &str) -> Result<Vec<Extension<'_>>, Malformed> {
    let mut cursor = Cursor { rest: value };
    let mut list = Vec::new();
    loop {
        cursor.skip_whitespace();
        match cursor.peek() {
            None => return Ok(list),
            Some(b',') => {
                cursor.bump();
                continue;
            }
            Some(_) => {}
        }
        let mut extension = Extension { name: cursor.token()?, params: Vec::new() };
        loop {
            cursor.skip_whitespace();
            match cursor.peek() {
                None | Some(b',') => break,
                Some(b';') => cursor.bump(),
                Some(_) => return Err(Malformed),
            }
            cursor.skip_whitespace();
            let name = cursor.token()?;
            cursor.skip_whitespace();
            let value = if cursor.peek() == Some(b'=') {
                cursor.bump();
                cursor.skip_whitespace();
                Some(if cursor.peek() == Some(b'"') { cursor.quoted_token()? } else { Cow::Borrowed(cursor.token()?) })
            } else {
                None
            };
            extension.params.push((name, value));
        }
        list.push(extension);
    }
}

/// A position in a header value being parsed.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.rest.as_bytes().first().copied()
    }

    /// Step over the byte `peek` returned, which is ASCII.
    fn bump(&mut self) {
        self.rest = self.rest.get(1..).unwrap_or_default();
    }

    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// `token = 1*tchar` (RFC 7230 §3.2.6).
    fn token(&mut self) -> Result<&'a str, Malformed> {
        let len = self.rest.bytes().take_while(|&b| is_tchar(b)).count();
        if len == 0 {
            return Err(Malformed);
        }
        // tchar is ASCII, so `len` is a char boundary.
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(token)
    }

    /// A quoted-string (RFC 7230 §3.2.6), unescaped; it must hold a token (RFC 6455 §9.1).
    fn quoted_token(&mut self) -> Result<Cow<'a, str>, Malformed> {
        let body = self.rest.strip_prefix('"').ok_or(Malformed)?;
        let mut unescaped: Option<String> = None;
        let mut chars = body.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &body[at + 1..];
                    let value = unescaped.map_or(Cow::Borrowed(&body[..at]), Cow::Owned);
                    if value.is_empty() || !value.bytes().all(is_tchar) {
                        return Err(Malformed);
                    }
                    return Ok(value);
                }
                '\\' => {
                    let (_, escaped) = chars.next().ok_or(Malformed)?;
                    unescaped.get_or_insert_with(|| body[..at].to_owned()).push(escaped);
                }
                c => {
                    if let Some(unescaped) = &mut unescaped {
                        unescaped.push(c);
                    }
                }
            }
        }
        Err(Malformed)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// Request header lines, server config, and the answer and agreement (`None`: declined).
    type ServerCase<'a> = (&'a [&'a str], &'a DeflateConfig, Option<(&'a str, Params)>);
    /// Response header lines, client config, and what `client_accept` returns.
    type ClientCase<'a> = (&'a [&'a str], &'a DeflateConfig, Result<Option<Params>, &'a str>);

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(line).unwrap());
        }
        map
    }

    fn params(server_nct: bool, client_nct: bool, server_bits: u8, client_bits: u8) -> Params {
        Params {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        }
    }

    #[test]
    fn parse_list_grammar() {
        let list = parse_list(r#" a , , b;x; y = 1 ;z="t\ok",c "#).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0], Extension { name: "a", params: vec![] });
        assert_eq!(list[1].name, "b");
        assert_eq!(
            list[1].params,
            vec![("x", None), ("y", Some(Cow::Borrowed("1"))), ("z", Some(Cow::Owned("tok".to_owned())))]
        );
        assert_eq!(list[2], Extension { name: "c", params: vec![] });
        assert_eq!(parse_list("").unwrap(), vec![]);
        assert_eq!(parse_list(" , ").unwrap(), vec![]);
        for bad in [
            "a;",
            "a;=1",
            "a; b=",
            r#"a; b="""#,
            r#"a; b="x y""#,
            r#"a; b="x,y""#,
            r#"a; b="x"#,
            r#"a; b="x\"#,
            "a b",
            "a; b c",
            ";a",
            "a=1",
            "a; b=1=2",
            "a; b=\"1\"x",
        ] {
            assert_eq!(parse_list(bad), Err(Malformed), "{bad:?}");
        }
    }

    #[test]
    fn window_bits_values() {
        for (value, bits) in [("8", Some(8)), ("9", Some(9)), ("10", Some(10)), ("15", Some(15))] {
            assert_eq!(parse_window_bits(value), bits);
        }
        for value in ["7", "16", "08", "010", "", "+9", "9 ", "1e1", "0", "255", "256"] {
            assert_eq!(parse_window_bits(value), None, "{value:?}");
        }
    }

    /// Each request header value (one or more lines), the server config, and the expected
    /// answer and agreed parameters, or `None` for a decline.
    #[test]
    fn server_table() {
        let default = DeflateConfig::default();
        let small = DeflateConfig::default().server_max_window_bits(10).client_max_window_bits(11);
        let forced = DeflateConfig::default().server_no_context_takeover(true).client_no_context_takeover(true);
        let pmd = "permessage-deflate";
        #[rustfmt::skip]
        let table: &[ServerCase] = &[
            (&[], &default, None),
            (&["x-foo"], &default, None),
            (&[pmd], &default, Some((pmd, params(false, false, 15, 15)))),
            (&["PerMessage-Deflate"], &default, Some((pmd, params(false, false, 15, 15)))),
            (&["x-foo, permessage-deflate"], &default, Some((pmd, params(false, false, 15, 15)))),
            (&["permessage-deflate; client_max_window_bits"], &default,
                Some((pmd, params(false, false, 15, 15)))),
            (&["permessage-deflate; client_max_window_bits=10"], &default,
                Some(("permessage-deflate; client_max_window_bits=10", params(false, false, 15, 10)))),
            (&["permessage-deflate; client_max_window_bits=\"9\""], &default,
                Some(("permessage-deflate; client_max_window_bits=9", params(false, false, 15, 9)))),
            (&["permessage-deflate; server_max_window_bits=8"], &default,
                Some(("permessage-deflate; server_max_window_bits=8", params(false, false, 8, 15)))),
            (&["permessage-deflate; server_max_window_bits=15"], &default,
                Some(("permessage-deflate; server_max_window_bits=15", params(false, false, 15, 15)))),
            (&["permessage-deflate; server_no_context_takeover"], &default,
                Some(("permessage-deflate; server_no_context_takeover", params(true, false, 15, 15)))),
            // Autobahn's default offer: the client's hint is answered, which makes it binding.
            (&["permessage-deflate; client_no_context_takeover; client_max_window_bits"], &default,
                Some(("permessage-deflate; client_no_context_takeover", params(false, true, 15, 15)))),
            (&["permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=8"],
                &default,
                Some(("permessage-deflate; client_no_context_takeover; server_max_window_bits=8",
                    params(false, true, 8, 15)))),
            // Configured caps: announced, and the smaller of the two wins.
            (&["permessage-deflate; client_max_window_bits"], &small,
                Some(("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11",
                    params(false, false, 10, 11)))),
            (&["permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"], &small,
                Some(("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
                    params(false, false, 10, 9)))),
            (&["permessage-deflate; server_max_window_bits=9; client_max_window_bits=13"], &small,
                Some(("permessage-deflate; server_max_window_bits=9; client_max_window_bits=11",
                    params(false, false, 9, 11)))),
            // A server that must limit the client's window declines an offer that cannot be limited.
            (&[pmd], &small, None),
            (&["permessage-deflate, permessage-deflate; client_max_window_bits"], &small,
                Some(("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11",
                    params(false, false, 10, 11)))),
            // Forced context takeover settings are always answered.
            (&[pmd], &forced,
                Some(("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                    params(true, true, 15, 15)))),
            // Declined offers: unknown parameter, invalid value, repeated parameter.
            (&["permessage-deflate; foo"], &default, None),
            (&["permessage-deflate; server_max_window_bits"], &default, None),
            (&["permessage-deflate; server_max_window_bits=7"], &default, None),
            (&["permessage-deflate; server_max_window_bits=16"], &default, None),
            (&["permessage-deflate; server_max_window_bits=08"], &default, None),
            (&["permessage-deflate; server_max_window_bits=abc"], &default, None),
            (&["permessage-deflate; client_max_window_bits=7"], &default, None),
            (&["permessage-deflate; client_max_window_bits=\"\""], &default, None),
            (&["permessage-deflate; server_no_context_takeover=1"], &default, None),
            (&["permessage-deflate; client_no_context_takeover=x"], &default, None),
            (&["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], &default, None),
            (&["permessage-deflate; client_max_window_bits; client_max_window_bits=10"], &default, None),
            (&["permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"], &default, None),
            // Decline means: try the next offer, on the same line or the next ones.
            (&["permessage-deflate; foo, permessage-deflate; server_max_window_bits=10"], &default,
                Some(("permessage-deflate; server_max_window_bits=10", params(false, false, 10, 15)))),
            (&["permessage-deflate; server_max_window_bits=99", "x-other", "permessage-deflate; client_max_window_bits"],
                &default, Some((pmd, params(false, false, 15, 15)))),
            // The first acceptable offer wins, as the client prefers it (RFC 7692 §5).
            (&["permessage-deflate; server_no_context_takeover; server_max_window_bits=8, permessage-deflate"],
                &default,
                Some(("permessage-deflate; server_no_context_takeover; server_max_window_bits=8",
                    params(true, false, 8, 15)))),
            // A malformed line is skipped whole; well-formed lines still count.
            (&["permessage-deflate; a b"], &default, None),
            (&["permessage-deflate; a=\"b", "permessage-deflate"], &default,
                Some((pmd, params(false, false, 15, 15)))),
        ];
        for (lines, config, expected) in table {
            let got = server_negotiate(config, &headers(lines));
            let expected = expected.map(|(header, params)| (params, header.to_owned()));
            assert_eq!(got, expected, "{lines:?} with {config:?}");
        }
    }

    #[test]
    fn server_skips_non_ascii_lines() {
        let mut map = headers(&[]);
        map.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_bytes(b"permessage-deflate; x=\xff").unwrap());
        map.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("permessage-deflate"));
        let (params, header) = server_negotiate(&DeflateConfig::default(), &map).unwrap();
        assert_eq!(header, "permessage-deflate");
        assert_eq!(params.server_max_window_bits, 15);
    }

    #[test]
    fn client_offers() {
        let table = [
            (DeflateConfig::default(), "permessage-deflate; client_max_window_bits"),
            (
                DeflateConfig::default().server_max_window_bits(10).client_max_window_bits(8),
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=8",
            ),
            (
                DeflateConfig::default().server_no_context_takeover(true).client_no_context_takeover(true),
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits",
            ),
        ];
        for (config, offer) in table {
            assert_eq!(client_offer(&config), offer);
            // Every offer we make is one our own server accepts.
            assert!(server_negotiate(&DeflateConfig::default(), &headers(&[offer])).is_some());
        }
    }

    /// Each response header value (one or more lines), the client config, and the expected
    /// outcome.
    #[test]
    fn client_table() {
        let default = DeflateConfig::default();
        let small = DeflateConfig::default().server_max_window_bits(10).client_max_window_bits(11);
        let nct = DeflateConfig::default().server_no_context_takeover(true).client_no_context_takeover(true);
        #[rustfmt::skip]
        let table: &[ClientCase] = &[
            (&[], &default, Ok(None)),
            (&[""], &default, Ok(None)),
            (&["permessage-deflate"], &default, Ok(Some(params(false, false, 15, 15)))),
            (&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"], &default,
                Ok(Some(params(true, true, 15, 15)))),
            (&["permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"], &default,
                Ok(Some(params(false, false, 8, 8)))),
            (&["permessage-deflate; client_max_window_bits=\"12\""], &default,
                Ok(Some(params(false, false, 15, 12)))),
            (&["permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"], &small,
                Ok(Some(params(false, false, 10, 9)))),
            (&["permessage-deflate; server_max_window_bits=9"], &small, Ok(Some(params(false, false, 9, 11)))),
            (&["permessage-deflate; server_no_context_takeover"], &nct, Ok(Some(params(true, true, 15, 15)))),
            // Several lines form one list.
            (&["", "permessage-deflate"], &default, Ok(Some(params(false, false, 15, 15)))),
            // Errors.
            (&["permessage-deflate, permessage-deflate"], &default,
                Err("server accepted permessage-deflate twice")),
            (&["permessage-deflate", "permessage-deflate"], &default,
                Err("server accepted permessage-deflate twice")),
            (&["x-foo"], &default, Err("server accepted an extension that was not offered")),
            (&["permessage-deflate, x-foo"], &default, Err("server accepted an extension that was not offered")),
            (&["permessage-deflate; foo"], &default, Err("unknown permessage-deflate parameter")),
            (&["permessage-deflate; server_max_window_bits=16"], &default,
                Err("invalid permessage-deflate parameter value")),
            (&["permessage-deflate; server_max_window_bits"], &default,
                Err("invalid permessage-deflate parameter value")),
            (&["permessage-deflate; server_no_context_takeover=1"], &default,
                Err("invalid permessage-deflate parameter value")),
            (&["permessage-deflate; client_no_context_takeover; client_no_context_takeover"], &default,
                Err("repeated permessage-deflate parameter")),
            (&["permessage-deflate; client_max_window_bits"], &default,
                Err("client_max_window_bits in the response has no value")),
            (&["permessage-deflate; server_max_window_bits=11"], &small,
                Err("server_max_window_bits in the response is above the offered one")),
            (&["permessage-deflate"], &small, Err("server ignored the offered server_max_window_bits")),
            (&["permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"], &small,
                Err("client_max_window_bits in the response is above the offered one")),
            (&["permessage-deflate"], &nct, Err("server ignored the offered server_no_context_takeover")),
            (&["permessage-deflate; x=\"y"], &default, Err("malformed Sec-WebSocket-Extensions")),
        ];
        for (lines, config, expected) in table {
            assert_eq!(client_accept(config, &headers(lines)), *expected, "{lines:?} with {config:?}");
        }
        let mut map = headers(&[]);
        map.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_bytes(b"permessage-deflate; x=\xff").unwrap());
        assert_eq!(client_accept(&default, &map), Err("Sec-WebSocket-Extensions is not visible ASCII"));
    }

    #[test]
    fn client_rejects_unoffered_client_max_window_bits() {
        let offer = Offer { client_max_window_bits: None, ..Offer::default() };
        let answer = Offer { client_max_window_bits: Some(Some(10)), ..Offer::default() };
        assert_eq!(offer.check_answer(&answer), Err("client_max_window_bits in the response was not offered"));
    }

    /// Whatever a client with any config offers, a server with any config either declines or
    /// answers something the client accepts, and both agree on the same parameters.
    #[test]
    fn client_and_server_agree() {
        let configs = || {
            [false, true].into_iter().flat_map(|nct| {
                [8, 9, 12, 15].into_iter().flat_map(move |server| {
                    [8, 10, 15].into_iter().map(move |client| {
                        DeflateConfig::default()
                            .server_no_context_takeover(nct)
                            .client_no_context_takeover(!nct)
                            .server_max_window_bits(server)
                            .client_max_window_bits(client)
                    })
                })
            })
        };
        for client in configs() {
            let offer = client_offer(&client);
            for server in configs() {
                let Some((agreed, answer)) = server_negotiate(&server, &headers(&[&offer])) else {
                    panic!("{server:?} declined {offer:?}");
                };
                let accepted = client_accept(&client, &headers(&[&answer]));
                assert_eq!(accepted, Ok(Some(agreed)), "{offer:?} -> {answer:?}");
                assert!(
                    agreed.server_max_window_bits <= client.server_max_window_bits.min(server.server_max_window_bits)
                );
                assert!(
                    agreed.client_max_window_bits <= client.client_max_window_bits.min(server.client_max_window_bits)
                );
            }
        }
    }
}
