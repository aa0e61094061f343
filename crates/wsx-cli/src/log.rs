//! Logging through `tracing`: human (the received-message lines alone on stdout, the rest on
//! stderr) or JSON (everything on stdout, one object per line). `RUST_LOG` overrides the level.

use std::{fmt, io::IsTerminal};

use clap::ValueEnum;
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::filter_fn,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// How `serve` logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// The received-message lines alone on stdout, the rest on stderr.
    Human,
    /// Everything on stdout, one JSON object per line.
    Json,
}

/// The target of the `Received message => …` events, printed bare on stdout in human mode.
pub(crate) const RECEIVED: &str = "wsx::received";

/// Logging for `serve`.
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(MessageOnly)
                    .with_writer(std::io::stdout)
                    .with_filter(filter_fn(|meta| meta.target() == RECEIVED)),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false)
                    .with_filter(filter_fn(|meta| meta.target() != RECEIVED)),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_current_span(false).with_writer(std::io::stdout))
            .try_init(),
    };
    // Only fails if a subscriber is already set, which `main` never does.
    let _ = result;
}

/// Logging for `connect` and `bench`: library errors only, on stderr, unless `RUST_LOG` says more.
pub(crate) fn init_quiet() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Writes an event's message and nothing else: no time, level or fields.
struct MessageOnly;

impl<S, N> FormatEvent<S, N> for MessageOnly
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut message = MessageField(String::new());
        event.record(&mut message);
        writeln!(writer, "{}", message.0)
    }
}

struct MessageField(String);

impl tracing::field::Visit for MessageField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use fmt::Write;
            let _ = write!(self.0, "{value:?}");
        }
    }
}
