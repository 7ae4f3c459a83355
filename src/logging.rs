//! Process-wide logging: the [`LogFormat`] choice and installing the
//! `tracing` subscriber that writes to stderr (or, for `jujud`, to its
//! size-rotated log file and its ring of recent lines).
//!
//! Owns the default filter (`info`, with the chatty transport crates held at
//! `warn`). Must never write to stdout (it belongs to the commands' own
//! output), and must never panic, even when called twice or
//! given a malformed `RUST_LOG`.

use std::io::IsTerminal;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset, empty or malformed. quinn and
/// rustls log every connection at `info`, which drowns the membership log.
pub const DEFAULT_FILTER: &str = "info,quinn=warn,rustls=warn";

/// The environment variable read for the filter, as every Rust tool does.
pub const FILTER_ENV_VAR: &str = "RUST_LOG";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, coloured when stderr is a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The name used on the command line, in config files and in env vars.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

/// A name that is neither `human` nor `json`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown log format {0:?}: expected human or json")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat(s.to_owned())),
        }
    }
}

/// Builds the filter from the value of `RUST_LOG` (if any). A malformed
/// value falls back to [`DEFAULT_FILTER`]; the parse error is returned so
/// that it can be logged once the subscriber exists.
fn filter_from(rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    let default = || EnvFilter::new(DEFAULT_FILTER);
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (default(), None),
        Some(dirs) => match EnvFilter::try_new(dirs) {
            Ok(filter) => (filter, None),
            Err(e) => (default(), Some(format!("ignoring {FILTER_ENV_VAR}={dirs:?}: {e}"))),
        },
    }
}

/// Installs the global subscriber: stderr, the given format, and the filter
/// from `RUST_LOG` (default [`DEFAULT_FILTER`]). A second call is a no-op:
/// the first subscriber stays and nothing panics.
pub fn init(format: LogFormat) {
    let rust_log = std::env::var(FILTER_ENV_VAR).ok();
    install(format, rust_log.as_deref(), None);
}

/// Where a daemon's log goes besides the process's ring (see
/// `runtime::logs`): `file`, rotated by bytes, or stderr.
pub struct Output {
    /// Bytes of recent lines this process keeps for `juju debug-log`.
    pub ring_bytes: usize,
    /// The log file (`--log-file`), rotated past
    /// `runtime::logs::rotate::MAX_JUJUD_LOG_BYTES`; stderr when `None`.
    pub file: Option<std::path::PathBuf>,
}

/// [`init`] for `jujud`: lines also go to this process's ring, and to
/// `out.file` instead of stderr when given. If the file cannot be opened,
/// stderr is used and the reason logged.
pub fn init_daemon(format: LogFormat, out: Output) {
    crate::runtime::logs::capture::install(out.ring_bytes);
    let rust_log = std::env::var(FILTER_ENV_VAR).ok();
    install(format, rust_log.as_deref(), Some(out.file));
}

/// Installs the subscriber. `daemon`: `Some(file)` adds the ring capture
/// and writes to `file` when given. Returns whether this call installed
/// the subscriber (false: one was already installed).
fn install(
    format: LogFormat,
    rust_log: Option<&str>,
    daemon: Option<Option<std::path::PathBuf>>,
) -> bool {
    use tracing_subscriber::Layer;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, mut warning) = filter_from(rust_log);
    let file = daemon.clone().flatten();
    let (writer, ansi) = match file.as_deref().map(|p| {
        crate::runtime::logs::rotate::RotatingFile::open(
            p,
            crate::runtime::logs::rotate::MAX_JUJUD_LOG_BYTES,
            crate::runtime::logs::rotate::LOG_FILES_KEPT,
        )
    }) {
        Some(Ok(f)) => (BoxMakeWriter::new(std::sync::Mutex::new(f)), false),
        Some(Err(e)) => {
            warning = Some(format!("cannot open the log file, writing to stderr: {e}"));
            (BoxMakeWriter::new(std::io::stderr), false)
        }
        None => (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal()),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;
    let fmt: Box<dyn tracing_subscriber::Layer<Base> + Send + Sync> = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let capture = daemon.map(|_| crate::runtime::logs::capture::Capture);
    let installed = tracing_subscriber::registry().with(filter).with(fmt).with(capture).try_init();
    if installed.is_ok()
        && let Some(warning) = warning
    {
        tracing::warn!("{warning}");
    }
    installed.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_names_round_trip_everywhere() {
        for format in [LogFormat::Human, LogFormat::Json] {
            assert_eq!(format.as_str().parse::<LogFormat>(), Ok(format));
            let value = <LogFormat as clap::ValueEnum>::from_str(format.as_str(), false);
            assert_eq!(value, Ok(format));
            #[derive(Deserialize)]
            struct Wrapper {
                f: LogFormat,
            }
            let parsed: Wrapper = toml::from_str(&format!("f = {:?}", format.as_str())).unwrap();
            assert_eq!(parsed.f, format);
        }
        assert!("JSON ".parse::<LogFormat>().is_err());
    }

    #[test]
    fn malformed_filter_falls_back_to_default_with_a_warning() {
        let (filter, warning) = filter_from(Some("info,=[bad"));
        assert_eq!(filter.to_string(), EnvFilter::new(DEFAULT_FILTER).to_string());
        assert!(warning.unwrap().contains("RUST_LOG"));
        let (filter, warning) = filter_from(Some("debug"));
        assert_eq!(filter.to_string(), "debug");
        assert!(warning.is_none());
        let (filter, _) = filter_from(Some("   "));
        assert!(filter.to_string().contains("quinn=warn"));
    }

    #[test]
    fn installing_twice_does_not_panic() {
        // Filter "off": the subscriber is global to the test binary, and
        // other modules' tests should not have their events printed.
        let first = install(LogFormat::Json, Some("off"), None);
        assert!(!install(LogFormat::Human, Some("off"), None), "second install is a no-op");
        init(LogFormat::Human);
        let _ = first; // false if another test installed a subscriber first
        tracing::info!("still fine after several installs");
    }
}
