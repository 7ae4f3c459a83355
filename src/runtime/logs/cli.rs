//! `juju debug-log`'s arguments and output: how a line is printed (one
//! line of text, or one JSON object), and the run that follows the
//! managers' streams until the limit, the end of the backlog
//! (`--no-tail`), or Ctrl-C.
//!
//! Owns the command's flags and text format. Must never print anything
//! but log lines on stdout (notes about managers go to stderr).

use std::io::Write;

use super::follow::{self, FollowError, Options};
use super::{Level, LogFilter, LogLine, LogQuery};
use crate::runtime::clientfile::ClientFile;

/// Lines shown from the history when neither `--replay` nor `-n` is given.
pub const DEFAULT_LINES: u32 = 10;

/// `juju debug-log`'s flags (Juju's own names where they exist).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DebugLogArgs {
    /// Only lines from these machines (ids or id prefixes; repeat, or
    /// separate with commas).
    #[arg(long = "machine", value_delimiter = ',')]
    pub machines: Vec<String>,
    /// Only these units' workload output (APP/ID, the id may be a prefix).
    #[arg(long = "unit", value_delimiter = ',')]
    pub units: Vec<String>,
    /// Only these applications' units' workload output.
    #[arg(long = "application", value_delimiter = ',')]
    pub applications: Vec<String>,
    /// Only lines at this level or above: TRACE, DEBUG, INFO, WARNING, ERROR.
    #[arg(long, value_parser = parse_level)]
    pub level: Option<Level>,
    /// Only lines of modules starting with this (`jujud::runtime`, `workload`).
    #[arg(long = "include-module", value_delimiter = ',')]
    pub modules: Vec<String>,
    /// Leave out modules starting with this.
    #[arg(long = "exclude-module", value_delimiter = ',')]
    pub exclude_modules: Vec<String>,
    /// Start with every line the managers still hold, not the last few.
    #[arg(long)]
    pub replay: bool,
    /// How many of the latest lines to start with (without --replay).
    #[arg(short = 'n', long = "lines", default_value_t = DEFAULT_LINES)]
    pub lines: u32,
    /// Stop after this many lines.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Wait for new lines after the history (the default).
    #[arg(long, overrides_with = "no_tail")]
    pub tail: bool,
    /// Stop after the history.
    #[arg(long, overrides_with = "tail")]
    pub no_tail: bool,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s).ok_or_else(|| format!("{s:?}: expected TRACE, DEBUG, INFO, WARNING or ERROR"))
}

impl DebugLogArgs {
    pub fn options(&self) -> Options {
        Options {
            query: LogQuery {
                filter: LogFilter {
                    machines: self.machines.clone(),
                    units: self.units.clone(),
                    applications: self.applications.clone(),
                    modules: self.modules.clone(),
                    exclude_modules: self.exclude_modules.clone(),
                    level: self.level,
                },
                replay: self.replay,
                lines: self.lines,
                follow: !self.no_tail,
            },
            limit: self.limit,
        }
    }
}

/// `source: 2026-12-05 06:31:02.123 LEVEL module message` (UTC).
pub fn format_line(line: &LogLine) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(line.at_unix_ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (h, m, s) = at.time().as_hms();
    format!(
        "{}: {} {h:02}:{m:02}:{s:02}.{:03} {} {} {}",
        line.source,
        at.date(),
        at.millisecond(),
        line.level.as_str(),
        line.module,
        line.message.replace('\n', " "),
    )
}

/// Runs `juju debug-log` against `file`'s environment.
pub async fn run(file: &ClientFile, args: &DebugLogArgs, json: bool) -> Result<(), FollowError> {
    let stdout = std::io::stdout();
    let mut print = |line: &LogLine| {
        let text =
            if json { serde_json::to_string(line).unwrap_or_default() } else { format_line(line) };
        let mut out = stdout.lock();
        // A closed stdout (`| head`) ends nothing here; the limit does.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    };
    let note = |what: &str| eprintln!("juju: {what}");
    follow::run(file, args.options(), &mut print, &note).await
}

#[cfg(test)]
mod tests {
    use super::super::tests::line;
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DebugLogArgs,
    }

    #[test]
    fn flags_become_a_query_in_jujus_style() {
        let cli = Cli::parse_from([
            "x",
            "--machine",
            "ab,cd",
            "--level",
            "warning",
            "--replay",
            "--no-tail",
            "--limit",
            "5",
            "--include-module",
            "workload",
        ]);
        let o = cli.args.options();
        assert_eq!(o.query.filter.machines, ["ab", "cd"]);
        assert_eq!(o.query.filter.level, Some(Level::Warn));
        assert!(o.query.replay && !o.query.follow);
        assert_eq!((o.limit, o.query.filter.modules.len()), (Some(5), 1));
        let default = Cli::parse_from(["x"]).args.options();
        assert!(default.query.follow && !default.query.replay);
        assert_eq!(default.query.lines, DEFAULT_LINES);
        assert!(Cli::try_parse_from(["x", "--level", "loud"]).is_err());
    }

    #[test]
    fn a_line_prints_its_source_time_level_module_and_message_on_one_line() {
        let mut l = line("unit-web-0", 1, Level::Info, Some("web/0"));
        l.at_unix_ms = 1_764_916_262_123;
        l.message = "two\nlines".into();
        assert_eq!(format_line(&l), "unit-web-0: 2025-12-05 06:31:02.123 INFO workload two lines");
    }
}
