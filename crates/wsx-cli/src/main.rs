//! `wsx`: a WebSocket server with a browser demo page (`serve`), a wscat-like client
//! (`connect`) and a load generator (`bench`), built on the `wsx` library.

mod bench;
mod connect;
mod log;
mod parse;
mod serve;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// WebSocket swiss-army knife: serve, connect, bench.
#[derive(Debug, Parser)]
#[command(name = "wsx", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(ServeArgs),
    Connect(ConnectArgs),
    Bench(BenchArgs),
}

/// Run a WebSocket server that also answers plain HTTP on the same port.
///
/// With no options it listens on 127.0.0.1:8080, greets every client with "ho!" and prints
/// "Received message => <message>" for each text message; `GET /` serves a demo page that
/// connects back to the server. Ctrl-C or SIGTERM closes every connection with 1001.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  wsx serve                       # classic: greets \"ho!\", demo page at http://127.0.0.1:8080/\n  wsx serve --echo --port 9001\n  wsx serve --broadcast --origin http://localhost:8080\n  wsx serve --tls-self-signed     # wss:// and https:// with a development certificate"
)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is logged).
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    /// Echo every message back to its sender.
    #[arg(long, conflicts_with = "broadcast")]
    echo: bool,
    /// Send every message to every connected client (the sender included).
    #[arg(long)]
    broadcast: bool,
    /// The text sent to each client when it connects ("" for none).
    #[arg(long, value_name = "TEXT", default_value = "ho!")]
    greeting: String,
    /// Serve the files of DIR over HTTP instead of the demo page (index.html for directories).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// PEM certificate chain for wss:// and https:// (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Make a self-signed development certificate (localhost, 127.0.0.1, ::1) and serve TLS with it.
    #[arg(long)]
    tls_self_signed: bool,
    /// Where --tls-self-signed writes the certificate (the key goes next to it, as *.key.pem).
    #[arg(long, value_name = "FILE", requires = "tls_self_signed")]
    cert_out: Option<PathBuf>,
    /// The most WebSocket connections open at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// The largest message accepted (e.g. 64KiB, 1MiB, 1000000); bigger ones close with 1009.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse::size)]
    max_message_size: usize,
    /// Negotiate permessage-deflate when the client offers it.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse::on_off, action = clap::ArgAction::Set)]
    deflate: bool,
    /// A subprotocol to accept (repeatable); the first one the client offers that is listed wins.
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Ping every client this often (e.g. 30s, 500ms); a client that does not answer is dropped.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    ping_interval: Option<Duration>,
    /// Accept WebSocket connections only from this Origin (repeatable); others get 403.
    /// Protects against cross-site WebSocket hijacking. Clients that send no Origin (non-browsers) are allowed.
    #[arg(long = "origin", value_name = "ORIGIN")]
    origins: Vec<String>,
    /// How long shutdown waits for clients to finish their closing handshake.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse::duration)]
    shutdown_timeout: Duration,
    /// Do not log each received message.
    #[arg(long, short)]
    quiet: bool,
    /// Log format: human (messages on stdout, the rest on stderr) or json (one object per line on stdout).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// Connect to a WebSocket server: send the lines you type, print what arrives.
///
/// Interactive on a terminal ("< " marks incoming messages); with stdin from a pipe or file it
/// sends each line, prints the replies, and closes once the input ends and --wait has passed.
#[derive(Debug, Args)]
#[command(after_help = CONNECT_HELP)]
pub(crate) struct ConnectArgs {
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
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse::on_off, action = clap::ArgAction::Set)]
    deflate: bool,
}

/// Load-test a WebSocket echo server and report messages/s, MB/s and latency percentiles.
///
/// Each connection keeps --pipeline messages in flight and waits for their echoes (closed
/// loop), or sends at a fixed total --rate (open loop, for latency). Latency is measured from
/// the write of a message to the arrival of its whole echo.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  wsx bench ws://127.0.0.1:9001 --connections 100 --size 20 --duration 5\n  wsx bench ws://127.0.0.1:9001 --rate 10000 --json\n\nExit codes: 0 on success, 1 if a connection failed or an echo was wrong, 2 on bad arguments."
)]
pub(crate) struct BenchArgs {
    /// ws:// or wss:// URL of an echo server.
    url: String,
    /// Connections to open.
    #[arg(long, short, default_value_t = 10)]
    connections: usize,
    /// Payload size of each message (e.g. 20, 1KiB, 64KiB).
    #[arg(long, short, value_name = "SIZE", default_value = "20", value_parser = parse::size)]
    size: usize,
    /// How long to measure (e.g. 5s, 1m).
    #[arg(long, short, value_name = "DURATION", default_value = "5s", value_parser = parse::duration)]
    duration: Duration,
    /// Run this long before measuring.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse::duration)]
    warmup: Duration,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pipeline: u32,
    /// Send at this fixed total rate (messages/s over all connections) instead of as fast as possible.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// Send text messages.
    #[arg(long, conflicts_with = "binary")]
    text: bool,
    /// Send binary messages (the default).
    #[arg(long)]
    binary: bool,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
    /// Trust the certificates in this PEM file for wss://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not check the server's certificate (testing only).
    #[arg(long, short = 'k')]
    insecure: bool,
    /// Also report this process's CPU use over the measured window (e.g. the server's PID).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Worker threads (1 = a current-thread runtime, which is usually fastest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
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

Examples:
  wsx connect ws://127.0.0.1:8080/
  echo hello | wsx connect --json wss://localhost:8080 --ca cert.pem
  printf '68656c6c6f\\n' | wsx connect --binary hex ws://127.0.0.1:9001";

/// How `serve` logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

/// How binary data is written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            log::init(args.log_format);
            report(run(args.threads_hint(), serve::run(args)))
        }
        Command::Connect(args) => {
            log::init_quiet();
            match runtime(1) {
                Ok(rt) => rt.block_on(connect::run(args)),
                Err(e) => fail(&e),
            }
        }
        Command::Bench(args) => {
            log::init_quiet();
            let threads = args.threads as usize;
            report(run(threads, bench::run(args)))
        }
    }
}

impl ServeArgs {
    /// A small multi-thread runtime: the server is I/O bound.
    fn threads_hint(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    Ok(builder.enable_all().build()?)
}

fn run(threads: usize, task: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    runtime(threads)?.block_on(task)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("wsx: error: {e:#}");
    ExitCode::FAILURE
}
