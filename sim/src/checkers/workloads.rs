//! Invariant `workload-restarts`: a manager's failure restarts no
//! workload. A run of a unit starts only when the agent's process starts
//! (its first run of the unit), after the unit's previous run exited by
//! itself, or when the unit's spec (command, config) changed; a start of
//! the same spec after the agent stopped the previous run, or while it
//! still runs, is a restart without cause: what a session moving to
//! another manager, or a manager that sent incomplete assignments, would
//! do. Excused (and counted apart), as the state's stated semantics: a
//! run started again with the spec it had after the agent stopped it for a
//! removal or a change that a live manager held, when the manager the
//! agent then talked to had not seen it yet (acknowledged on one manager,
//! not yet replicated; docs/SIMULATOR.md, findings M and Q).
//!
//! Owns the last run of every unit on every agent process. Must never
//! excuse a start by anything the core reports about itself: it reads the
//! starts and ends the simulator carried out.

use std::collections::{BTreeMap, BTreeSet};

use jujud::core::state::agents;

use super::{Checker, FaultNote, Figure, Findings, Violation, World};
use crate::cluster::spec_digest;
use crate::notes::SimNote;

const NAME: &str = "workload-restarts";

#[derive(Clone, Copy, Debug)]
struct Last {
    run: u64,
    spec: u64,
    /// `Some(true)`: died by itself; `Some(false)`: the agent stopped it.
    ended: Option<bool>,
    /// When the agent stopped it, some live manager's replica held the
    /// unit's removal, or a spec for it other than this run's.
    superseded: bool,
}

/// The workload-restarts checker.
#[derive(Debug, Default)]
pub struct WorkloadRestarts {
    last: BTreeMap<(usize, String), Last>,
    starts: u64,
    after_exit: u64,
    for_change: u64,
    /// Runs started again after a removal or a change by a manager that
    /// had not yet seen it (acknowledged on one manager, not yet replicated).
    after_unseen_change: u64,
    violations: Findings,
}

/// Whether some live manager's replica holds the removal of `unit` (on the
/// agent in `slot`), or gives it a spec other than `spec`.
fn superseded(world: &World<'_>, slot: usize, unit: &str, spec: u64) -> bool {
    let removal = format!("u/{unit}/life");
    let machine = world.cluster.slots[slot].agent.as_ref().map(|a| a.machine.clone());
    super::live_replicas(world.cluster).any(|(_, st)| {
        if st.replica.get(&removal).iter().any(|v| v == "dead") {
            return true;
        }
        let Some(machine) = &machine else { return false };
        let machines = BTreeSet::from([machine.clone()]);
        let specs = agents::assignments(&st.replica, &machines);
        let theirs = specs.get(machine).and_then(|a| a.units.iter().find(|u| u.unit == unit));
        theirs.is_some_and(|u| spec_digest(&u.command, &u.env()) != spec)
    })
}

impl Checker for WorkloadRestarts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_fault(&mut self, _world: &World<'_>, note: &FaultNote) {
        // A new process of the agent starts its workloads afresh.
        if let FaultNote::Crash { slot, .. } | FaultNote::Leave { slot, .. } | FaultNote::Restart { slot } = note {
            self.last.retain(|(s, _), _| s != slot);
        }
    }

    fn on_sim(&mut self, world: &World<'_>, note: &SimNote) {
        match note {
            SimNote::WorkloadStarted { slot, unit, run, spec } => {
                self.starts += 1;
                let key = (*slot, unit.clone());
                if let Some(last) = self.last.get(&key) {
                    match last.ended {
                        Some(true) => self.after_exit += 1,
                        _ if last.spec != *spec => self.for_change += 1,
                        // A removal or change acknowledged on one manager
                        // that the agent's next manager lacks: the state's
                        // own lag, not a restart caused by a manager's loss.
                        Some(false) if last.superseded => self.after_unseen_change += 1,
                        ended => {
                            let why = if ended.is_some() { "after the agent stopped it" } else { "while it still ran" };
                            let detail = format!(
                                "unit {unit} on slot {slot}: run {run} started with the same spec as run {} {why}, with no exit and no change",
                                last.run
                            );
                            self.violations.push(Violation {
                                invariant: NAME,
                                at: world.now,
                                slots: vec![*slot],
                                detail,
                            });
                        }
                    }
                }
                self.last.insert(key, Last { run: *run, spec: *spec, ended: None, superseded: false });
            }
            SimNote::WorkloadEnded { slot, unit, run, spontaneous } => {
                if let Some(last) = self.last.get_mut(&(*slot, unit.clone())).filter(|l| l.run == *run) {
                    last.ended = Some(*spontaneous);
                    last.superseded = !*spontaneous && superseded(world, *slot, unit, last.spec);
                }
            }
            _ => {}
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        vec![Figure {
            name: "workload runs".into(),
            value: format!(
                "{} started, {} of them after an exit, {} for a changed spec, {} again after a removal or change the next manager had not seen",
                self.starts, self.after_exit, self.for_change, self.after_unseen_change
            ),
        }]
    }
}
