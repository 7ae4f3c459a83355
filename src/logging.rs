//! Process-wide logging: the [`LogFormat`] choice and installing the
//! `tracing` subscriber that writes to stderr.
//!
//! Owns the default filter (`info`, with the chatty transport crates held at
//! `warn`). Must never write anywhere but stderr (stdout belongs to the
//! commands' own output), and must never panic, even when called twice or
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
    install(format, rust_log.as_deref());
}

/// [`init`] with the filter text passed in. Returns whether this call
/// installed the subscriber (false: one was already installed).
fn install(format: LogFormat, rust_log: Option<&str>) -> bool {
    let (filter, warning) = filter_from(rust_log);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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
        let first = install(LogFormat::Json, Some("off"));
        assert!(!install(LogFormat::Human, Some("off")), "second install is a no-op");
        init(LogFormat::Human);
        let _ = first; // false if another test installed a subscriber first
        tracing::info!("still fine after several installs");
    }
}
