//! `wsx connect`: a wscat-like client.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use clap::{ArgAction, ValueEnum};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
    time::Instant,
};
use wsx::{ClientBuilder, CloseCode, CloseFrame, Config, DeflateConfig, Message, WebSocket};

use crate::parse;

/// Connect to a WebSocket server: send the lines you type, print what arrives.
///
/// Interactive on a terminal ("< " marks incoming messages); with stdin from a pipe or file it
/// sends each line, prints the replies, and closes once the input ends and --wait has passed.
#[derive(Debug, clap::Args)]
#[command(after_help = CONNECT_HELP)]
pub(crate) struct Args {
    /// ws:// or wss:// URL.
    url: String,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse::header)]
    headers: Vec<(String, String)>,
    /// Offer this subprotocol (repeatable, most preferred first).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Send this Origin header.
    #[arg(long)]
    origin: Option<String>,
    /// Trust the certificates in this PEM file (instead of the built-in roots).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not check the server's certificate (testing only).
    #[arg(long, short = 'k')]
    insecure: bool,
    /// Input lines are binary messages in this encoding (hex or base64); binary output uses it too.
    #[arg(long, value_enum, value_name = "ENCODING")]
    binary: Option<Encoding>,
    /// Ping the server this often (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    ping_interval: Option<Duration>,
    /// Print one JSON object per event: {"dir":"in","type":"text","data":...}.
    #[arg(long)]
    json: bool,
    /// After the input ends, keep reading for this long before closing (e.g. 1s, 500ms, 10).
    #[arg(long, value_name = "SECONDS", default_value = "1s", value_parser = parse::duration)]
    wait: Duration,
    /// Give up connecting (TCP, TLS and handshake) after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse::duration)]
    connect_timeout: Duration,
    /// Offer permessage-deflate.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse::on_off, action = ArgAction::Set)]
    deflate: bool,
    /// Connect through this proxy (http://, https://, socks5://, socks5h://, with user:password@
    /// for its login), or "none". Default: from the environment (wss_proxy/ws_proxy,
    /// https_proxy, http_proxy, all_proxy, no_proxy; as curl).
    #[arg(long, value_name = "URL|none")]
    proxy: Option<String>,
    /// Follow up to N redirects of the opening handshake (never from wss:// to ws://; 0: none).
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_redirects: usize,
    /// When the connection drops (or cannot be made, for a transient reason), connect again
    /// with backoff: a random delay up to 5 s first, then growing to 60 s, each printed.
    /// Lines typed meanwhile wait (up to 64) and go out on the next connection.
    #[arg(long)]
    reconnect: bool,
    /// Open the WebSocket over HTTP/2 (RFC 8441 extended CONNECT): TLS with ALPN h2 for wss://,
    /// cleartext HTTP/2 with prior knowledge for ws://. Fails if the server does not take
    /// WebSockets over HTTP/2. No proxy and no redirects.
    #[arg(long, conflicts_with_all = ["reconnect", "proxy"])]
    http2: bool,
}

/// Commands, exit codes and examples for `wsx connect --help`.
const CONNECT_HELP: &str = "\
Commands (a line starting with \"//\" sends the rest with one \"/\" removed):
  /ping [data]            send a ping
  /close [code] [reason]  start the closing handshake (default 1000)
  /quit                   close with 1000 and exit

Exit codes:
  0  closed normally (1000/1001 from the server, or we closed: input ended, /close, /quit)
  1  other failure (I/O or protocol error, bad input line)
  2  bad arguments or URL
  3  could not connect, or the server refused the upgrade (HTTP status shown)
  4  TLS failure (certificate not trusted, name mismatch, ...)
  5  timed out (connect, handshake, ping)
  6  the server closed with another code (code and reason shown), or the connection
     dropped without a close frame (1006)
  With --reconnect, only a failure that reconnecting cannot fix (a 4xx answer, a TLS
  failure, a final close code such as 1000 or 1008) ends the run.

Examples:
  wsx connect ws://127.0.0.1:8080/
  echo hello | wsx connect --json wss://localhost:8080 --ca cert.pem
  printf '68656c6c6f\\n' | wsx connect --binary hex ws://127.0.0.1:9001
  wsx connect --proxy socks5h://user:pass@127.0.0.1:1080 --reconnect wss://example.com/feed";

/// How binary data is written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

/// Exit codes, as documented in `wsx connect --help`.
mod exit {
    pub(super) const OTHER: u8 = 1;
    pub(super) const USAGE: u8 = 2;
    pub(super) const CONNECT: u8 = 3;
    pub(super) const TLS: u8 = 4;
    pub(super) const TIMEOUT: u8 = 5;
    pub(super) const ABNORMAL_CLOSE: u8 = 6;
}

/// Why the run ended badly: an exit code and what to tell the user.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

pub(crate) async fn run(args: Args) -> ExitCode {
    match session(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("wsx: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// One line of input, or why it could not be read.
type Line = Result<String, String>;

async fn session(args: Args) -> Result<(), Failure> {
    let out = Output { json: args.json, encoding: args.binary, interactive: std::io::stdin().is_terminal() };
    if args.reconnect {
        return reconnecting(args, out).await;
    }
    if args.http2 {
        let (ws, response) = client(&args)?.connect_http2().await.map_err(|e| connect_failure(&e))?;
        let url = args.url.clone();
        return talk(ws, &url, response.status().as_u16(), &args, &out).await;
    }
    let (ws, response) = client(&args)?.connect().await.map_err(|e| connect_failure(&e))?;
    let url = ws.get_ref().url().to_string();
    talk(ws, &url, response.status().as_u16(), &args, &out).await
}

/// Talk on `ws`, opened on `url` with `status`, until the input or the connection ends.
async fn talk<S>(mut ws: WebSocket<S>, url: &str, status: u16, args: &Args, out: &Output) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    out.opened(url, &ws, status);
    let mut lines = spawn_stdin_reader();
    let ending = converse(&mut ws, args, out, &mut lines).await?;
    if out.interactive && !out.json {
        println!();
    }
    ending.verdict()
}

/// `--reconnect`: one connection after another, until the input ends and the last connection
/// closes, or a failure reconnecting cannot fix.
async fn reconnecting(args: Args, out: Output) -> Result<(), Failure> {
    let json = args.json;
    let mut connections = wsx::Reconnecting::new(client(&args)?).on_retry(move |retry| {
        let delay = retry.delay.as_secs_f64();
        let why = retry.error.map(|e| e.to_string()).unwrap_or_else(|| "connection ended".to_owned());
        if json {
            println!("{}", json!({"type": "reconnect", "attempt": retry.attempt, "delay": delay, "reason": why}));
        } else {
            eprintln!("wsx: {why}; reconnecting in {delay:.1}s (attempt {})", retry.attempt + 1);
        }
    });
    let mut lines = spawn_stdin_reader();
    loop {
        let Some(connected) = connections.next().await else {
            return Err(Failure::new(exit::ABNORMAL_CLOSE, "the server closed with a final code: not reconnecting"));
        };
        let mut ws = connected.map_err(|e| connect_failure(&e))?;
        out.opened(&ws.get_ref().url().to_string(), &ws, 101);
        match converse(&mut ws, &args, &out, &mut lines).await {
            Ok(ending) if ending.we_closed => return Ok(()),
            // The close reason when there is one: a 1013's `retry-after=N` sets the next wait.
            Ok(ending) => match ws.close_reason() {
                Some(reason) => connections.ended_with_reason(&reason),
                None => connections.ended_with(ending.peer_close.map_or(CloseCode::ABNORMAL, |frame| frame.code)),
            },
            Err(failure) => {
                match ws.close_reason() {
                    Some(reason) => connections.ended_with_reason(&reason),
                    None => connections.ended_with(CloseCode::ABNORMAL),
                }
                if !out.json {
                    eprintln!("wsx: {}", failure.message);
                }
            }
        }
    }
}

/// The client the arguments ask for.
fn client(args: &Args) -> Result<ClientBuilder, Failure> {
    let config = Config::default()
        .deflate(args.deflate.then(DeflateConfig::default))
        .ping_interval(args.ping_interval)
        .handshake_timeout(args.connect_timeout);
    let mut builder = ClientBuilder::new(&args.url).config(config).connect_timeout(args.connect_timeout);
    for (name, value) in &args.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    for protocol in &args.subprotocols {
        builder = builder.protocol(protocol.as_str());
    }
    if let Some(origin) = &args.origin {
        builder = builder.origin(origin);
    }
    if let Some(ca) = &args.ca {
        builder = builder.root_certificates_pem_file(ca);
    }
    if args.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    let proxy = match args.proxy.as_deref() {
        None => wsx::Proxy::from_env(),
        Some("none") => wsx::Proxy::none(),
        Some(url) => wsx::Proxy::url(url).map_err(|e| Failure::new(exit::USAGE, format!("--proxy: {e}")))?,
    };
    Ok(builder.proxy(proxy).max_redirects(args.max_redirects))
}

/// How a session ended, as far as the exit code is concerned.
#[derive(Debug, Default)]
struct Ending {
    /// We started the close (the input ended, `/close`, `/quit`): a normal end.
    we_closed: bool,
    /// The server's close frame, when the server closed first.
    peer_close: Option<CloseFrame>,
}

impl Ending {
    /// Note a message from the server: its close frame, if it closes first.
    fn received(&mut self, message: &Message) {
        if let Message::Close(frame) = message
            && !self.we_closed
        {
            self.peer_close = Some(frame.clone().unwrap_or(CloseFrame::new(CloseCode::NO_STATUS, "")));
        }
    }

    /// Success, or the failure to exit with.
    fn verdict(self) -> Result<(), Failure> {
        if self.we_closed {
            return Ok(());
        }
        match self.peer_close {
            Some(frame) if frame.code == CloseCode::NORMAL || frame.code == CloseCode::AWAY => Ok(()),
            Some(frame) => Err(Failure::new(
                exit::ABNORMAL_CLOSE,
                format!("server closed the connection with code {}{}", frame.code.0, reason_suffix(&frame)),
            )),
            None => Err(Failure::new(exit::ABNORMAL_CLOSE, "connection closed without a close frame (1006)")),
        }
    }
}

/// Send the lines read from stdin and print what arrives, until the connection ends.
async fn converse<S>(
    ws: &mut WebSocket<S>,
    args: &Args,
    out: &Output,
    lines: &mut mpsc::Receiver<Line>,
) -> Result<Ending, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut input_open = true;
    let mut wait_until: Option<Instant> = None;
    let mut ending = Ending::default();
    loop {
        let wait = async {
            match wait_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = ws.recv() => match received {
                Ok(Some(message)) => {
                    ending.received(&message);
                    out.message("in", &message);
                }
                Ok(None) => return Ok(ending),
                Err(e) => return Err(connection_failure(&e)),
            },
            line = lines.recv(), if input_open && !ending.we_closed => match line {
                Some(line) => ending.we_closed |= send_line(ws, out, line, args.binary).await?,
                None => {
                    input_open = false;
                    if out.interactive {
                        // Ctrl-D: close now.
                        close(ws, out).await?;
                        ending.we_closed = true;
                    } else {
                        wait_until = Some(Instant::now() + args.wait);
                    }
                }
            },
            () = wait, if !ending.we_closed => {
                close(ws, out).await?;
                ending.we_closed = true;
            }
        }
    }
}

/// Send what an input line asks for; returns whether it started the close. A bad line, or one
/// the connection refuses (a reserved close code, say), sends nothing.
async fn send_line<S>(
    ws: &mut WebSocket<S>,
    out: &Output,
    line: Line,
    encoding: Option<Encoding>,
) -> Result<bool, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let message = match line.and_then(|line| command(&line, encoding)) {
        Ok(Some(message)) => message,
        Ok(None) => {
            out.prompt();
            return Ok(false);
        }
        Err(e) => {
            input_error(out, e)?;
            return Ok(false);
        }
    };
    let closing = matches!(message, Message::Close(_));
    match ws.send(message.clone()).await {
        Ok(()) => {}
        Err(e) if e.is_io() || e.is_protocol() || e.is_timeout() => return Err(connection_failure(&e)),
        Err(e) => {
            input_error(out, format!("cannot send: {e}"))?;
            return Ok(false);
        }
    }
    out.message("out", &message);
    out.prompt();
    Ok(closing)
}

fn reason_suffix(frame: &CloseFrame) -> String {
    if frame.reason.is_empty() { String::new() } else { format!(": {}", frame.reason.as_str()) }
}

/// Send a close frame with 1000 (the closing handshake then finishes in the receive loop).
async fn close<S>(ws: &mut WebSocket<S>, out: &Output) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let message = Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")));
    match ws.send(message.clone()).await {
        Ok(()) => {
            out.message("out", &message);
            Ok(())
        }
        // Already closing or closed: the receive loop reports how it ended.
        Err(e) if e.is_closed() => Ok(()),
        Err(e) => Err(connection_failure(&e)),
    }
}

/// A bad input line: reported and skipped on a terminal, fatal otherwise.
fn input_error(out: &Output, message: String) -> Result<(), Failure> {
    if out.interactive {
        eprintln!("wsx: {message}");
        out.prompt();
        Ok(())
    } else {
        Err(Failure::new(exit::OTHER, message))
    }
}

/// Turn an input line into a message to send: a command, binary in `encoding`, or text.
/// `Ok(None)` for a line that sends nothing (empty command output, `/help`).
fn command(line: &str, encoding: Option<Encoding>) -> Result<Option<Message>, String> {
    if let Some(rest) = line.strip_prefix("//") {
        return data(&format!("/{rest}"), encoding).map(Some);
    }
    let Some(command) = line.strip_prefix('/') else { return data(line, encoding).map(Some) };
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "ping" => Ok(Some(Message::Ping(Bytes::copy_from_slice(rest.as_bytes())))),
        "close" => {
            let rest = rest.trim_start();
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code = if code.is_empty() {
                CloseCode::NORMAL
            } else {
                CloseCode(code.parse().map_err(|_| format!("/close: {code:?} is not a close code"))?)
            };
            Ok(Some(Message::Close(Some(CloseFrame::new(code, reason)))))
        }
        "quit" | "exit" => Ok(Some(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))))),
        "help" => {
            eprintln!("/ping [data]  /close [code] [reason]  /quit  (start a line with // to send a leading /)");
            Ok(None)
        }
        other => Err(format!("unknown command /{other} (try /help; start with // to send a leading /)")),
    }
}

/// A data message from a line: text, or binary decoded from hex/base64.
fn data(line: &str, encoding: Option<Encoding>) -> Result<Message, String> {
    match encoding {
        None => Ok(Message::text(line)),
        Some(Encoding::Hex) => parse::hex_decode(line).map(Message::binary).map_err(|e| format!("bad hex line: {e}")),
        Some(Encoding::Base64) => base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .map(Message::binary)
            .map_err(|e| format!("bad base64 line: {e}")),
    }
}

/// Read stdin line by line on a thread of its own (a blocked read must not hold up the runtime
/// or its shutdown). The channel closes at the end of the input.
fn spawn_stdin_reader() -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut buf = Vec::new();
        let mut number = 0u64;
        loop {
            buf.clear();
            number += 1;
            let line = match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => return,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    String::from_utf8(buf.clone()).map_err(|_| format!("input line {number} is not UTF-8"))
                }
                Err(e) => Err(format!("cannot read stdin: {e}")),
            };
            let stop = line.is_err();
            if tx.blocking_send(line).is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Classify a failed connect: refusal, TLS, timeout, bad arguments, or unreachable.
fn connect_failure(e: &wsx::Error) -> Failure {
    if let Some(status) = e.http_status() {
        let reason = status.canonical_reason().unwrap_or("");
        return Failure::new(
            exit::CONNECT,
            format!("server refused the WebSocket upgrade: HTTP {} {reason}", status.as_u16()),
        );
    }
    if e.is_timeout() {
        return Failure::new(exit::TIMEOUT, format!("timed out: {e}"));
    }
    if e.is_tls() {
        return Failure::new(exit::TLS, format!("{e} (use --ca FILE to trust a certificate, or --insecure)"));
    }
    if e.is_config() {
        return Failure::new(exit::USAGE, e.to_string());
    }
    if e.is_io() {
        return Failure::new(exit::CONNECT, format!("cannot connect: {e}"));
    }
    if e.is_redirect() {
        return Failure::new(exit::CONNECT, format!("{e} (see --max-redirects)"));
    }
    Failure::new(exit::CONNECT, e.to_string())
}

/// Classify a connection that failed after it was open.
fn connection_failure(e: &wsx::Error) -> Failure {
    if e.is_timeout() {
        return Failure::new(exit::TIMEOUT, format!("timed out: {e}"));
    }
    if e.is_io() || e.close_code() == Some(CloseCode::ABNORMAL) {
        return Failure::new(exit::ABNORMAL_CLOSE, format!("connection lost without a close frame (1006): {e}"));
    }
    match e.close_code() {
        Some(code) => Failure::new(exit::OTHER, format!("connection failed, closed with {}: {e}", code.0)),
        None => Failure::new(exit::OTHER, e.to_string()),
    }
}

/// Prints events: human lines (`< ` incoming, `> ` sent) or JSON objects.
struct Output {
    json: bool,
    encoding: Option<Encoding>,
    interactive: bool,
}

impl Output {
    /// Report the open connection: a JSON event, or on a terminal a line on how to use it.
    fn opened<S>(&self, url: &str, ws: &WebSocket<S>, status: u16)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.event(json!({"type": "open", "url": url, "status": status,
            "protocol": ws.protocol(), "compressed": ws.is_compressed()}));
        if self.interactive && !self.json {
            let protocol = ws.protocol().map(|p| format!(", subprotocol {p}")).unwrap_or_default();
            eprintln!("Connected to {url}{protocol}. Type a message; /ping, /close [code] [reason], /quit.");
            self.prompt();
        }
    }

    fn encode(&self, data: &[u8]) -> String {
        match self.encoding {
            Some(Encoding::Base64) => base64::engine::general_purpose::STANDARD.encode(data),
            Some(Encoding::Hex) => parse::hex_encode(data),
            // JSON needs a text encoding; base64 is the compact one.
            None if self.json => base64::engine::general_purpose::STANDARD.encode(data),
            None => parse::hex_encode(data),
        }
    }

    fn encoding_name(&self) -> &'static str {
        match self.encoding {
            Some(Encoding::Hex) => "hex",
            Some(Encoding::Base64) | None => "base64",
        }
    }

    fn message(&self, dir: &str, message: &Message) {
        if self.json {
            let event = match message {
                Message::Text(text) => json!({"dir": dir, "type": "text", "data": text.as_str()}),
                Message::Binary(data) => {
                    json!({"dir": dir, "type": "binary", "data": self.encode(data), "encoding": self.encoding_name()})
                }
                Message::Ping(data) => json!({"dir": dir, "type": "ping", "data": String::from_utf8_lossy(data)}),
                Message::Pong(data) => json!({"dir": dir, "type": "pong", "data": String::from_utf8_lossy(data)}),
                Message::Close(Some(frame)) => {
                    json!({"dir": dir, "type": "close", "code": frame.code.0, "reason": frame.reason.as_str()})
                }
                Message::Close(None) => json!({"dir": dir, "type": "close", "code": null, "reason": ""}),
            };
            self.event(event);
            return;
        }
        // On a terminal the user's own line is already on screen.
        if dir == "out" && (self.interactive || message.is_data()) {
            return;
        }
        let marker = if dir == "in" { "<" } else { ">" };
        let text = match message {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(data) => format!("[binary {} bytes] {}", data.len(), self.encode(data)),
            Message::Ping(data) => format!("[ping {}]", String::from_utf8_lossy(data)),
            Message::Pong(data) => format!("[pong {}]", String::from_utf8_lossy(data)),
            Message::Close(Some(frame)) => format!("[close {}{}]", frame.code.0, reason_suffix(frame)),
            Message::Close(None) => "[close]".to_owned(),
        };
        let mut stdout = std::io::stdout().lock();
        let clear = if self.interactive { "\r" } else { "" };
        let _ = writeln!(stdout, "{clear}{marker} {text}");
        let _ = stdout.flush();
        drop(stdout);
        if self.interactive && dir == "in" && !matches!(message, Message::Close(_)) {
            self.prompt();
        }
    }

    fn event(&self, event: serde_json::Value) {
        if self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{event}");
            let _ = stdout.flush();
        }
    }

    fn prompt(&self) {
        if self.interactive && !self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "> ");
            let _ = stdout.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(command("hi", None), Ok(Some(Message::text("hi"))));
        assert_eq!(command("//x", None), Ok(Some(Message::text("/x"))));
        assert_eq!(command("/ping a b", None), Ok(Some(Message::Ping(Bytes::from_static(b"a b")))));
        assert_eq!(
            command("/close 4000 bye now", None),
            Ok(Some(Message::Close(Some(CloseFrame::new(CloseCode(4000), "bye now")))))
        );
        assert_eq!(command("/close", None), Ok(Some(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))))));
        assert!(command("/close abc", None).is_err());
        assert!(command("/nope", None).is_err());
        assert_eq!(command("6869", Some(Encoding::Hex)), Ok(Some(Message::binary(&b"hi"[..]))));
        assert_eq!(command("aGk=", Some(Encoding::Base64)), Ok(Some(Message::binary(&b"hi"[..]))));
        assert!(command("zz", Some(Encoding::Hex)).is_err());
    }
}
