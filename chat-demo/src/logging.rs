//! Where the server's logs go and how they look: stderr, filtered by
//! `RUST_LOG` (default `info`), as text for people or as JSON lines for a
//! log pipeline (`--log-format json`).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-format` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level` and `target` at the
    /// top level, the message and the event's other fields under `fields`
    /// (so a field cannot clash with those three), the innermost span under
    /// `span` and every open span, outermost first, under `spans`.
    Json,
}

/// Installs the global subscriber. Call once, first thing.
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
