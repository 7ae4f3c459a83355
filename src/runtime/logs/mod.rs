//! Logs for `juju debug-log`: the line every process keeps ([`LogLine`]),
//! the filter a reader gives ([`LogFilter`]), and the pieces that move
//! lines: capture from `tracing` ([`capture`]), a bounded ring with live
//! followers ([`hub`]), size-rotated files ([`rotate`]), an agent's
//! forwarding to a manager ([`sink`]), a manager's answers ([`serve`]) and
//! the client's merge of every manager's stream ([`follow`]).
//!
//! Where lines live: each process writes its log to a file on its own
//! machine, rotated by bytes; each process also keeps its recent lines in
//! a ring bounded in bytes. An agent forwards its lines and its units'
//! output to one live manager; a manager keeps its own and its agents'
//! lines in its ring. `juju debug-log` asks every live manager and merges
//! their answers, so a dead manager only takes its own lines with it: its
//! agents forward to another manager, resending their recent lines.
//!
//! Owns the line's shape and bounds. Must never let a line exceed
//! [`MAX_LOG_LINE_BYTES`] in its text fields, and never trust the names a
//! remote process puts in a line: a manager sets an agent's line's machine
//! from the agent's certificate.

pub mod capture;
pub mod cli;
pub mod follow;
pub mod hub;
pub mod rotate;
pub mod serve;
pub mod sink;

use serde::{Deserialize, Serialize};

/// Longest message kept in a line; a longer one is cut at a character
/// boundary and marked with `…`.
pub const MAX_LOG_LINE_BYTES: usize = 4_096;
/// Longest module, source or unit name in a line; longer is cut.
pub const MAX_LOG_NAME_BYTES: usize = 128;
/// Most names of each kind (machines, units, ...) in one filter.
pub const MAX_FILTER_NAMES: usize = 64;

/// A line's severity, lowest first (so `>=` reads "at least").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARNING",
            Level::Error => "ERROR",
        }
    }

    /// Reads a level as Juju's and tracing's names spell it, any case.
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_uppercase().as_str() {
            "TRACE" => Some(Level::Trace),
            "DEBUG" => Some(Level::Debug),
            "INFO" => Some(Level::Info),
            "WARN" | "WARNING" => Some(Level::Warn),
            "ERROR" | "CRITICAL" => Some(Level::Error),
            _ => None,
        }
    }
}

/// One log line, as kept and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Who wrote it: `manager-<id>`, `machine-<id>` or `unit-<app>-<n>`.
    pub source: String,
    /// The writing process's start time (Unix ms) and its line number
    /// there: together they name a line, so a line forwarded twice (an
    /// agent resends its recent lines to a new manager) is shown once.
    pub boot: u64,
    pub seq: u64,
    /// When it was written, Unix ms, by the writer's clock.
    pub at_unix_ms: u64,
    pub level: Level,
    /// The Rust module (`jujud::runtime::driver`) or `workload`.
    pub module: String,
    /// The machine it was written on, when known.
    pub machine: Option<String>,
    /// The unit whose workload wrote it (`app/0`), for workload output.
    pub unit: Option<String>,
    pub message: String,
}

impl LogLine {
    /// Bytes this line holds, for the rings' byte bounds.
    pub fn weight(&self) -> usize {
        64 + self.source.len()
            + self.module.len()
            + self.message.len()
            + self.machine.as_ref().map_or(0, String::len)
            + self.unit.as_ref().map_or(0, String::len)
    }

    /// The line's application: the unit's, if a unit wrote it.
    pub fn application(&self) -> Option<&str> {
        self.unit.as_deref().and_then(|u| u.split('/').next())
    }

    /// Cuts every text field to its bound.
    pub fn bounded(mut self) -> LogLine {
        cut(&mut self.message, MAX_LOG_LINE_BYTES);
        cut(&mut self.module, MAX_LOG_NAME_BYTES);
        cut(&mut self.source, MAX_LOG_NAME_BYTES);
        if let Some(m) = self.machine.as_mut() {
            cut(m, MAX_LOG_NAME_BYTES);
        }
        if let Some(u) = self.unit.as_mut() {
            cut(u, MAX_LOG_NAME_BYTES);
        }
        self
    }

    /// The name that orders and deduplicates lines.
    pub fn key(&self) -> (&str, u64, u64) {
        (&self.source, self.boot, self.seq)
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the cut.
pub fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

/// Which lines a reader wants. Empty lists mean "any"; a line must match
/// every non-empty list. Names match by prefix (machine ids and unit
/// numbers as typed), applications exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    pub machines: Vec<String>,
    pub units: Vec<String>,
    pub applications: Vec<String>,
    /// Module prefixes to include (`jujud::runtime`, `workload`).
    pub modules: Vec<String>,
    pub exclude_modules: Vec<String>,
    /// Lines below this level are left out.
    pub level: Option<Level>,
}

/// A filter a manager refuses to run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("a filter may name at most {MAX_FILTER_NAMES} {0}")]
    TooMany(&'static str),
    #[error("a name in a filter is longer than {MAX_LOG_NAME_BYTES} bytes")]
    TooLong,
}

impl LogFilter {
    /// Checks the filter's bounds (it comes from a client).
    pub fn check(&self) -> Result<(), FilterError> {
        let lists = [
            ("machines", &self.machines),
            ("units", &self.units),
            ("applications", &self.applications),
            ("modules", &self.modules),
            ("excluded modules", &self.exclude_modules),
        ];
        for (what, list) in lists {
            if list.len() > MAX_FILTER_NAMES {
                return Err(FilterError::TooMany(what));
            }
            if list.iter().any(|n| n.len() > MAX_LOG_NAME_BYTES) {
                return Err(FilterError::TooLong);
            }
        }
        Ok(())
    }

    pub fn matches(&self, line: &LogLine) -> bool {
        let prefixed = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|p| v.starts_with(p.as_str())))
        };
        let app = line.application();
        self.level.is_none_or(|l| line.level >= l)
            && prefixed(&self.machines, line.machine.as_deref())
            && prefixed(&self.units, line.unit.as_deref())
            && (self.applications.is_empty()
                || app.is_some_and(|a| self.applications.iter().any(|x| x == a)))
            && prefixed(&self.modules, Some(&line.module))
            && !self.exclude_modules.iter().any(|p| line.module.starts_with(p.as_str()))
    }
}

/// What a reader asks a manager (`Request::DebugLog`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    pub filter: LogFilter,
    /// Every retained line that matches, oldest first; else only the last
    /// `lines` of them.
    pub replay: bool,
    pub lines: u32,
    /// Keep the stream open and send new lines as they come.
    pub follow: bool,
}

/// One frame of a manager's answer to `Request::DebugLog`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFrame {
    /// Lines, oldest first.
    Lines(Vec<LogLine>),
    /// The retained lines have all been sent; live ones follow (if asked).
    BacklogDone,
    /// This reader was too slow: this many lines were skipped for it.
    Skipped(u64),
    /// The request was refused (why).
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn line(source: &str, seq: u64, level: Level, unit: Option<&str>) -> LogLine {
        LogLine {
            source: source.into(),
            boot: 1,
            seq,
            at_unix_ms: 1_000 + seq,
            level,
            module: if unit.is_some() {
                "workload".into()
            } else {
                "jujud::runtime::driver".into()
            },
            machine: Some("abcd1234-0".into()),
            unit: unit.map(Into::into),
            message: format!("line {seq}"),
        }
    }

    #[test]
    fn a_filter_matches_by_level_machine_unit_application_and_module() {
        let unit = line("unit-web-0", 1, Level::Info, Some("web/0"));
        let agent = line("machine-abcd1234-0", 2, Level::Warn, None);
        let any = LogFilter::default();
        assert!(any.matches(&unit) && any.matches(&agent));
        let warn = LogFilter { level: Some(Level::Warn), ..Default::default() };
        assert!(!warn.matches(&unit) && warn.matches(&agent));
        let web = LogFilter { applications: vec!["web".into()], ..Default::default() };
        assert!(web.matches(&unit) && !web.matches(&agent));
        let we = LogFilter { applications: vec!["we".into()], ..Default::default() };
        assert!(!we.matches(&unit), "applications match whole names");
        let machine = LogFilter { machines: vec!["abcd".into()], ..Default::default() };
        assert!(machine.matches(&unit) && machine.matches(&agent));
        let other = LogFilter { machines: vec!["ffff".into()], ..Default::default() };
        assert!(!other.matches(&unit));
        let u = LogFilter { units: vec!["web/".into()], ..Default::default() };
        assert!(u.matches(&unit) && !u.matches(&agent));
        let m = LogFilter { modules: vec!["jujud::runtime".into()], ..Default::default() };
        assert!(!m.matches(&unit) && m.matches(&agent));
        let x = LogFilter { exclude_modules: vec!["workload".into()], ..Default::default() };
        assert!(!x.matches(&unit) && x.matches(&agent));
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary_and_oversized_filters_refused() {
        let mut l = line("s", 1, Level::Info, None);
        l.message = "é".repeat(MAX_LOG_LINE_BYTES);
        l.module = "m".repeat(1_000);
        let l = l.bounded();
        assert!(l.message.len() <= MAX_LOG_LINE_BYTES && l.message.ends_with('…'));
        assert!(l.module.len() <= MAX_LOG_NAME_BYTES);
        let many =
            LogFilter { units: vec!["u".into(); MAX_FILTER_NAMES + 1], ..Default::default() };
        assert_eq!(many.check(), Err(FilterError::TooMany("units")));
        let long =
            LogFilter { modules: vec!["m".repeat(MAX_LOG_NAME_BYTES + 1)], ..Default::default() };
        assert_eq!(long.check(), Err(FilterError::TooLong));
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }
}
