//! The scale table: fault-free runs of 10 to 10,000 members (a few managers
//! as seeds, the rest agents) that join, converge, then lose one member,
//! showing that per-member message load and detection time stay roughly
//! flat as the cluster grows (SWIM's promise).
//!
//! Owns the table's sizes and layout. Must never run two sizes at once
//! (wall-clock speed is part of the table, so runs are sequential).

use std::fmt::Write as _;
use std::time::Duration;

use crate::report::RunReport;
use crate::run::{RunConfig, run};

/// Member counts of the table (roughly half a decade apart).
pub const SCALE_MEMBERS: [usize; 7] = [10, 32, 100, 316, 1_000, 3_162, 10_000];

/// The largest row `--scale-table` runs unless `--scale-max-members` says
/// otherwise (the 3,162 and 10,000 rows take minutes to hours of wall time).
pub const SCALE_DEFAULT_MAX_MEMBERS: usize = 1_000;

/// Managers (the seeds) in every row; the rest are agents.
pub const SCALE_MANAGERS: usize = 5;

/// Safety-phase length of every row, in virtual seconds (no faults: this
/// is the steady state after the join over which load is measured).
pub const SCALE_VIRTUAL_SECS: u64 = 60;

/// The config of one row. Its liveness waits are the run's own bounds,
/// which grow with N (`Bounds`): a run waits for its views only as long as
/// they take to converge, and fails only past a bound. (A fixed 40 s cap
/// failed the 1,000-member row, whose last missing pairs are repaired by
/// periodic announces and probe walks that take minutes at that size.)
pub fn row_config(members: usize, seed: u64) -> RunConfig {
    let managers = SCALE_MANAGERS.min(members);
    RunConfig::new(seed, managers, members - managers, SCALE_VIRTUAL_SECS, "none")
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// One line of the table.
pub fn row(report: &RunReport) -> String {
    let det = report.sorted_samples("detection-healed");
    let median = det.get(det.len() / 2).copied();
    let worst = det.last().copied();
    let crash = report.sorted_samples("crash").first().copied();
    format!(
        "{:>7} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9} {:>8.2} {:>11.0} {}",
        report.config.members(),
        report.joined_at.map_or("never".into(), |d| format!("{:.2}", d.as_secs_f64())),
        report.steady_msgs_per_member_sec.map_or("-".into(), |r| format!("{r:.2}")),
        secs(median),
        secs(worst),
        secs(crash),
        report.events,
        report.wall.as_secs_f64(),
        report.speed(),
        if report.passed() { "ok" } else { "FAIL" }
    )
}

/// The table's header.
pub fn header() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scale table: {SCALE_MANAGERS} managers (seeds) + agents, no faults, {SCALE_VIRTUAL_SECS} s steady state, then one crash; liveness waits up to the bounds"
    );
    let _ = write!(
        s,
        "{:>7} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9} {:>8} {:>11} verdict",
        "members", "join s", "msg/m/s", "detect med", "detect max", "reconv s", "events", "wall s", "virt s/wall"
    );
    s
}

/// Runs every row in turn, printing each as it completes; returns the
/// reports.
pub fn run_table(
    seed: u64,
    members: std::ops::RangeInclusive<usize>,
    adjust: &dyn Fn(RunConfig) -> RunConfig,
    print: &dyn Fn(&str),
) -> Vec<RunReport> {
    print(&header());
    SCALE_MEMBERS
        .iter()
        .filter(|&&n| members.contains(&n))
        .map(|&members| {
            let report = run(&adjust(row_config(members, seed)));
            print(&row(&report));
            for v in report.violations.iter().take(3) {
                print(&format!("    VIOLATION {v}"));
            }
            report
        })
        .collect()
}
