//! Workload supervision, sans-IO: given the units assigned to this machine,
//! decide which workloads to start, stop and restart (with backoff when
//! they exit), and what status each unit shows.
//!
//! Owns each unit's run number, phase, backoff and status text. Must never
//! restart a workload whose spec did not change and which did not exit:
//! a session moving to another manager re-sends the same assignments, and
//! that must change nothing. Never spawns or signals anything itself.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{MAX_UNITS_PER_MACHINE, UnitSpec, WorkloadCmd, WorkloadEvent, clip_status};
use crate::core::time::Time;

/// First wait before restarting a workload that exited.
pub const RESTART_BACKOFF_MIN_MS: u64 = 500;
/// Longest wait between restarts of a crash-looping workload.
pub const RESTART_BACKOFF_MAX_MS: u64 = 30_000;
/// A run at least this long resets the backoff: it was not a crash loop.
pub const HEALTHY_RUN_MS: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Asked to start; not yet confirmed.
    Starting {
        since: Time,
    },
    Running {
        pid: u32,
        since: Time,
    },
    /// Asked to stop; `next` is started once it has exited (a new spec).
    Stopping {
        next: Option<UnitSpec>,
    },
    /// Exited or failed to start; restarts at `until`.
    Waiting {
        until: Time,
        why: String,
    },
}

#[derive(Clone, Debug)]
struct Unit {
    spec: UnitSpec,
    digest: u64,
    /// The current run's number (unique on this node), or the last one.
    run: u64,
    phase: Phase,
    /// Consecutive runs that ended before [`HEALTHY_RUN_MS`].
    failures: u32,
    /// The workload's own status message, if it set one.
    message: Option<String>,
}

/// Counters for metrics and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SupervisorStats {
    /// Every start asked for.
    pub starts: u64,
    /// Starts after an exit or failure of the same spec.
    pub restarts_after_exit: u64,
    /// Restarts because the spec (command or config) changed.
    pub restarts_for_change: u64,
    /// Units refused because the machine already runs the most it may.
    pub refused_over_limit: u64,
}

/// The workloads of one machine.
#[derive(Debug, Default)]
pub struct Supervisor {
    units: BTreeMap<String, Unit>,
    next_run: u64,
    cmds: Vec<WorkloadCmd>,
    /// Units assigned beyond [`MAX_UNITS_PER_MACHINE`], not run.
    over_limit: BTreeSet<String>,
    pub stats: SupervisorStats,
}

fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    Duration::from_millis((RESTART_BACKOFF_MIN_MS << shift).min(RESTART_BACKOFF_MAX_MS))
}

fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(127), _) => "command not found (exit code 127)".into(),
        (Some(126), _) => "command not executable (exit code 126)".into(),
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "exited".into(),
    }
}

impl Supervisor {
    /// Takes the commands decided since the last call.
    pub fn take_cmds(&mut self) -> Vec<WorkloadCmd> {
        std::mem::take(&mut self.cmds)
    }

    /// Units currently supervised (assigned, or stopping after removal).
    pub fn units(&self) -> impl Iterator<Item = &str> {
        self.units.keys().map(String::as_str)
    }

    /// Number of workloads asked to run and not known to have stopped.
    pub fn running(&self) -> usize {
        self.units
            .values()
            .filter(|u| matches!(u.phase, Phase::Starting { .. } | Phase::Running { .. }))
            .count()
    }

    fn start(&mut self, now: Time, name: &str) {
        self.next_run += 1;
        let run = self.next_run;
        let Some(u) = self.units.get_mut(name) else { return };
        u.run = run;
        u.phase = Phase::Starting { since: now };
        u.message = None;
        self.stats.starts += 1;
        self.cmds.push(WorkloadCmd::Start {
            unit: name.to_string(),
            run,
            command: u.spec.command.clone(),
            env: u.spec.env(),
        });
    }

    /// Makes the assigned units the ones that run: new units start, units
    /// whose command or config changed restart, units no longer assigned
    /// stop. Units whose spec is unchanged are left alone.
    pub fn assign(&mut self, now: Time, specs: &[UnitSpec]) {
        let mut wanted: BTreeMap<&str, &UnitSpec> = BTreeMap::new();
        self.over_limit.clear();
        for s in specs {
            if wanted.len() < MAX_UNITS_PER_MACHINE || self.units.contains_key(&s.unit) {
                wanted.insert(s.unit.as_str(), s);
            } else if self.over_limit.insert(s.unit.clone()) {
                self.stats.refused_over_limit += 1;
            }
        }
        let gone: Vec<String> =
            self.units.keys().filter(|k| !wanted.contains_key(k.as_str())).cloned().collect();
        for name in gone {
            self.unassign(&name);
        }
        for (name, spec) in wanted {
            self.assign_one(now, name, spec);
        }
    }

    fn unassign(&mut self, name: &str) {
        let Some(u) = self.units.get_mut(name) else { return };
        match &u.phase {
            Phase::Starting { .. } | Phase::Running { .. } => {
                self.cmds.push(WorkloadCmd::Stop { unit: name.to_string(), run: u.run });
                u.phase = Phase::Stopping { next: None };
            }
            Phase::Stopping { .. } => u.phase = Phase::Stopping { next: None },
            Phase::Waiting { .. } => {
                self.units.remove(name);
            }
        }
    }

    fn assign_one(&mut self, now: Time, name: &str, spec: &UnitSpec) {
        let digest = spec.digest();
        let Some(u) = self.units.get_mut(name) else {
            let unit = Unit {
                spec: spec.clone(),
                digest,
                run: 0,
                phase: Phase::Waiting { until: now, why: String::new() },
                failures: 0,
                message: None,
            };
            self.units.insert(name.to_string(), unit);
            return self.start(now, name);
        };
        let changed = u.digest != digest;
        u.spec = spec.clone();
        u.digest = digest;
        match &u.phase {
            Phase::Starting { .. } | Phase::Running { .. } if changed => {
                self.cmds.push(WorkloadCmd::Stop { unit: name.to_string(), run: u.run });
                u.phase = Phase::Stopping { next: Some(spec.clone()) };
                self.stats.restarts_for_change += 1;
            }
            Phase::Stopping { .. } => u.phase = Phase::Stopping { next: Some(spec.clone()) },
            Phase::Waiting { .. } if changed => {
                u.failures = 0;
                self.stats.restarts_for_change += 1;
                self.start(now, name);
            }
            _ => {}
        }
    }

    /// Applies what the driver reports; events of an older run are ignored.
    pub fn on_event(&mut self, now: Time, ev: &WorkloadEvent) {
        let name = ev.unit().to_string();
        let Some(u) = self.units.get_mut(&name) else { return };
        let run = match ev {
            WorkloadEvent::Started { run, .. }
            | WorkloadEvent::Exited { run, .. }
            | WorkloadEvent::SpawnFailed { run, .. }
            | WorkloadEvent::Message { run, .. } => *run,
        };
        if run != u.run {
            return;
        }
        match ev {
            WorkloadEvent::Started { pid, .. } => {
                if let Phase::Starting { since } = u.phase {
                    u.phase = Phase::Running { pid: *pid, since };
                }
            }
            WorkloadEvent::Message { text, .. } => u.message = Some(clip_status(text.trim())),
            WorkloadEvent::Exited { code, signal, .. } => {
                self.ended(now, &name, describe_exit(*code, *signal))
            }
            WorkloadEvent::SpawnFailed { error, .. } => {
                self.ended(now, &name, format!("could not start: {error}"))
            }
        }
    }

    fn ended(&mut self, now: Time, name: &str, why: String) {
        let Some(u) = self.units.get_mut(name) else { return };
        match std::mem::replace(&mut u.phase, Phase::Waiting { until: now, why: String::new() }) {
            Phase::Stopping { next: Some(_) } => self.start(now, name),
            Phase::Stopping { next: None } => {
                self.units.remove(name);
            }
            Phase::Starting { since } | Phase::Running { since, .. } => {
                let ran = now.saturating_sub(since);
                u.failures =
                    if ran >= Duration::from_millis(HEALTHY_RUN_MS) { 1 } else { u.failures + 1 };
                let wait = backoff(u.failures);
                let why = format!(
                    "{why} after {:.1}s; restart {} in {:.1}s",
                    ran.as_secs_f64(),
                    u.failures,
                    wait.as_secs_f64()
                );
                u.phase = Phase::Waiting { until: now + wait, why };
            }
            waiting @ Phase::Waiting { .. } => u.phase = waiting,
        }
    }

    /// Restarts every workload whose backoff is over.
    pub fn tick(&mut self, now: Time) {
        let due: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| matches!(u.phase, Phase::Waiting { until, .. } if until <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for name in due {
            self.stats.restarts_after_exit += 1;
            self.start(now, &name);
        }
    }

    /// When the next restart is due, if any.
    pub fn next_due(&self) -> Option<Time> {
        self.units
            .values()
            .filter_map(|u| match u.phase {
                Phase::Waiting { until, .. } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Every unit's status text, as `juju status` should show it.
    pub fn statuses(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> =
            self.units.iter().map(|(k, u)| (k.clone(), status_of(u))).collect();
        for name in &self.over_limit {
            out.insert(
                name.clone(),
                format!("blocked: this machine already runs {MAX_UNITS_PER_MACHINE} units"),
            );
        }
        out
    }
}

fn status_of(u: &Unit) -> String {
    let text = match &u.phase {
        Phase::Starting { .. } => "waiting: starting".to_string(),
        Phase::Running { .. } => match &u.message {
            Some(m) if !m.is_empty() => format!("active: {m}"),
            _ => "active: running".to_string(),
        },
        Phase::Stopping { next: Some(_) } => {
            "maintenance: restarting for a new command or config".to_string()
        }
        Phase::Stopping { next: None } => "terminated: stopping".to_string(),
        Phase::Waiting { why, .. } => format!("error: {why}"),
    };
    clip_status(&text)
}
