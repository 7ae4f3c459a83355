//! Workload processes of the simulated agents (part of `cluster`), as
//! the runtime's `workload.rs` runs them: `Workload(Start)` is `Started`
//! after a short spawn delay; `Workload(Stop)` is `Exited` (by SIGTERM)
//! after a short delay; every run may also die by itself at a random time
//! (mean `WORKLOAD_MEAN_LIFETIME_MS`) during the safety phase, so that
//! restarts with backoff are exercised. Workloads are the agent's
//! children: they die with its process (their events carry its epoch).
//!
//! Owns the table of runs (one per unit and agent slot, so bounded by the
//! units assigned). Must never report an event for a run the agent did not
//! start, nor one of a dead process.

use std::collections::BTreeMap;
use std::time::Duration;

use jujud::core::agent::{WorkloadCmd, WorkloadEvent};
use rand::RngExt;

use super::{Cluster, Ev};
use crate::notes::SimNote;
use crate::queue::VTime;
use crate::trace::{Fnv1a, TraceKind};

/// Spawning a workload takes this long (fork, exec, the shell).
pub const WORKLOAD_SPAWN_MIN_US: u64 = 1_000;
pub const WORKLOAD_SPAWN_MAX_US: u64 = 20_000;
/// A stopped workload is gone after this long (SIGTERM honoured).
pub const WORKLOAD_STOP_MIN_US: u64 = 1_000;
pub const WORKLOAD_STOP_MAX_US: u64 = 50_000;
/// A run's lifetime before it dies by itself, drawn uniformly from 0 to
/// twice this (so a 600 s run sees each workload die about twice).
pub const WORKLOAD_MEAN_LIFETIME_MS: u64 = 300_000;
/// The exit code of a workload that died by itself.
const CRASH_EXIT_CODE: i32 = 1;
/// SIGTERM, for a stopped workload.
const SIGTERM: i32 = 15;

/// What reaches an agent about its workloads.
#[derive(Debug)]
pub enum WorkloadEv {
    /// The driver's report (started, or exited after a stop).
    Report(WorkloadEvent),
    /// The run dies by itself now, if it still runs.
    Dies { unit: String, run: u64 },
}

/// One unit's current run on one agent slot.
#[derive(Clone, Debug)]
struct Run {
    run: u64,
    /// When its `Started` is delivered (an exit comes after it).
    started_at: VTime,
    /// Still running (not stopped, not dead).
    running: bool,
}

/// Every agent's workload runs.
#[derive(Debug, Default)]
pub struct Workloads {
    runs: BTreeMap<(usize, String), Run>,
    next_pid: u32,
    /// No more spontaneous deaths (the liveness phase keeps state quiet).
    pub quiet: bool,
    pub starts: u64,
    pub stops: u64,
    pub deaths: u64,
}

/// A digest of what a run runs: its command and environment.
pub fn spec_digest(command: &str, env: &[(String, String)]) -> u64 {
    let mut h = Fnv1a::default();
    h.words(command.as_bytes());
    for (k, v) in env {
        h.words(k.as_bytes());
        h.words(v.as_bytes());
    }
    h.finish()
}

impl Cluster {
    /// `Output::Workload` from the agent in `slot`.
    pub(super) fn workload_cmd(&mut self, slot: usize, cmd: WorkloadCmd) {
        let now = self.now();
        let epoch = self.slots[slot].epoch;
        match cmd {
            WorkloadCmd::Start { unit, run, command, env } => {
                self.workloads.starts += 1;
                self.workloads.next_pid += 1;
                let pid = self.workloads.next_pid;
                let spawn =
                    Duration::from_micros(self.agent_rng.random_range(WORKLOAD_SPAWN_MIN_US..=WORKLOAD_SPAWN_MAX_US));
                let started_at = now + spawn;
                let life = Duration::from_millis(self.agent_rng.random_range(1..=2 * WORKLOAD_MEAN_LIFETIME_MS));
                let spec = spec_digest(&command, &env);
                self.trace.record(now, slot, TraceKind::Workload, spec ^ run);
                self.sim_notes.push(SimNote::WorkloadStarted { slot, unit: unit.clone(), run, spec });
                self.workloads.runs.insert((slot, unit.clone()), Run { run, started_at, running: true });
                let report = WorkloadEvent::Started { unit: unit.clone(), run, pid };
                self.push_control_free(
                    started_at,
                    Ev::Workload { slot, epoch, what: Box::new(WorkloadEv::Report(report)) },
                );
                self.push_control_free(
                    started_at + life,
                    Ev::Workload { slot, epoch, what: Box::new(WorkloadEv::Dies { unit, run }) },
                );
            }
            WorkloadCmd::Stop { unit, run } => {
                let key = (slot, unit.clone());
                let Some(r) = self.workloads.runs.get_mut(&key).filter(|r| r.run == run && r.running) else { return };
                r.running = false;
                self.workloads.stops += 1;
                let stop =
                    Duration::from_micros(self.agent_rng.random_range(WORKLOAD_STOP_MIN_US..=WORKLOAD_STOP_MAX_US));
                let at = (now + stop).max(r.started_at + Duration::from_micros(1));
                self.sim_notes.push(SimNote::WorkloadEnded { slot, unit: unit.clone(), run, spontaneous: false });
                let report = WorkloadEvent::Exited { unit, run, code: None, signal: Some(SIGTERM) };
                self.push_control_free(at, Ev::Workload { slot, epoch, what: Box::new(WorkloadEv::Report(report)) });
            }
        }
    }

    /// A workload event at its agent: the node's input, or `None` when the
    /// run was stopped or replaced in the meantime.
    pub(super) fn workload_input(&mut self, slot: usize, what: WorkloadEv) -> Option<WorkloadEvent> {
        match what {
            WorkloadEv::Report(ev) => Some(ev),
            WorkloadEv::Dies { unit, run } => {
                if self.workloads.quiet {
                    return None;
                }
                let r = self.workloads.runs.get_mut(&(slot, unit.clone())).filter(|r| r.run == run && r.running)?;
                r.running = false;
                self.workloads.deaths += 1;
                self.sim_notes.push(SimNote::WorkloadEnded { slot, unit: unit.clone(), run, spontaneous: true });
                Some(WorkloadEvent::Exited { unit, run, code: Some(CRASH_EXIT_CODE), signal: None })
            }
        }
    }

    /// The agent in `slot` died: so did its workloads.
    pub(super) fn workloads_die(&mut self, slot: usize) {
        self.workloads.runs.retain(|(s, _), _| *s != slot);
    }
}
