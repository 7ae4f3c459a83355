//! The run loop's side of what the world did on the nodes' behalf (part of
//! `run`): slots the provider added join the ledgers, processes that
//! the provider stopped or that exited by themselves become fault notes
//! (so that the membership checkers treat them like injected faults), and
//! every note reaches the checkers. Also the desired-managers count the
//! liveness phase waits for, and the probe crash's choice of target.
//!
//! Owns no state of its own. Must never act on the cluster beyond reading
//! it, except to keep the truth's ledger as long as the slots.

use jujud::core::Role;
use jujud::core::state::controllers;

use super::Runner;
use crate::checkers::FaultNote;
use crate::cluster::Slot;
use crate::notes::{ExitKind, ExitWhy, SimNote};

/// Which node the liveness phase's probe crash may pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeTarget {
    Any,
    Manager,
    Agent,
}

impl ProbeTarget {
    pub fn parse(s: &str) -> Option<ProbeTarget> {
        match s {
            "any" => Some(ProbeTarget::Any),
            "manager" => Some(ProbeTarget::Manager),
            "agent" => Some(ProbeTarget::Agent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeTarget::Any => "any",
            ProbeTarget::Manager => "manager",
            ProbeTarget::Agent => "agent",
        }
    }

    /// Whether the probe crash may pick `slot`.
    pub fn fits(self, slot: &Slot) -> bool {
        match self {
            ProbeTarget::Any => true,
            ProbeTarget::Manager => slot.role == Role::Manager,
            ProbeTarget::Agent => slot.role == Role::Agent,
        }
    }
}

/// The desired number of managers, as the live managers' state says (the
/// largest, as the core resolves concurrent settings); `None` without a
/// provider (no HA keeper acts then).
pub fn desired_managers(cluster: &crate::cluster::Cluster) -> Option<u32> {
    crate::checkers::live_replicas(cluster)
        .filter(|(_, st)| controllers::provider(&st.replica).is_some())
        .map(|(_, st)| controllers::ha_desired(&st.replica))
        .max()
}

/// Managers running and unpaused.
pub fn live_managers(cluster: &crate::cluster::Cluster) -> usize {
    cluster.slots.iter().filter(|s| s.role == Role::Manager && s.is_live()).count()
}

impl Runner {
    /// Slots the provider added join the truth's ledger and the partition
    /// bookkeeping.
    pub(super) fn sync_slots(&mut self) {
        let now = self.cluster.now();
        while self.truth.len() < self.cluster.slots.len() {
            self.truth.add_slot(now);
            self.partition_touched.push(false);
        }
        if self.cluster.network.partition().is_some() {
            self.retouch_partition();
        }
    }

    /// Whether the live managers number the desired count (true without a
    /// provider).
    pub(super) fn managers_restored(&self) -> bool {
        desired_managers(&self.cluster).is_none_or(|d| live_managers(&self.cluster) == d as usize)
    }

    /// Hands the world's notes to every checker, after turning process
    /// ends into fault notes.
    pub(super) fn deliver_sim_notes(&mut self) {
        if self.cluster.sim_notes.is_empty() {
            return;
        }
        let notes = std::mem::take(&mut self.cluster.sim_notes);
        let mut checkers = std::mem::take(&mut self.checkers);
        for note in &notes {
            let fault = match note {
                SimNote::Exited { slot, identity, kind, why } => {
                    let what = match (kind, why) {
                        (ExitKind::Killed, _) => "provider-kill",
                        (ExitKind::Left, ExitWhy::ProviderStop) => "provider-stop",
                        (ExitKind::Left, ExitWhy::Retired) => "retired",
                        (ExitKind::Left, ExitWhy::Revoked) => "revoked",
                        (ExitKind::Left, ExitWhy::MachineGone) => "machine-gone",
                    };
                    self.trace_fault(*slot, what);
                    Some(match kind {
                        ExitKind::Killed => {
                            FaultNote::Crash { slot: *slot, identity: identity.clone(), lost_disk: None }
                        }
                        ExitKind::Left => FaultNote::Leave { slot: *slot, identity: identity.clone() },
                    })
                }
                SimNote::Booted { slot } => {
                    self.trace_fault(*slot, "instance-boot");
                    Some(FaultNote::Restart { slot: *slot })
                }
                SimNote::StoppedWhileDown { slot } => {
                    self.trace_fault(*slot, "stopped-while-down");
                    None
                }
                _ => None,
            };
            if self.log {
                println!("{:>10.3}s {}", self.cluster.now().as_secs_f64(), crate::report::describe_sim_note(note));
            }
            let gone = match note {
                SimNote::Exited { slot, .. } | SimNote::StoppedWhileDown { slot }
                    if self.cluster.slots[*slot].role == Role::Manager =>
                {
                    let lost = self.cluster.slots[*slot].disk.state.durable_at(self.cluster.now());
                    Some(FaultNote::DiskGone { slot: *slot, lost })
                }
                _ => None,
            };
            let world = self.world();
            for f in fault.iter().chain(gone.iter()) {
                for c in &mut checkers {
                    c.on_fault(&world, f);
                }
            }
            for c in &mut checkers {
                c.on_sim(&world, note);
            }
        }
        self.checkers = checkers;
    }
}
