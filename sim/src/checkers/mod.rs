//! The invariant checkers: each a named type that watches the run (node
//! events, faults, phase changes and periodic ticks) and reports which
//! invariant broke, when, and on which nodes.
//!
//! Owns the `Checker` trait and the list of checkers every run uses. Must
//! never change the simulation: checkers only read the world, so adding
//! one never changes a trace hash.
//!
//! To add an invariant: write a module here with a type implementing
//! [`Checker`], give it a unique `name()`, and add it to [`all`]. Use
//! `World::bounds` for any time bound, and add a bound there (with its
//! justification) rather than a number in the checker.

pub mod convergence;
pub mod detection;
pub mod false_down;
pub mod generations;
pub mod instances;
pub mod managers;
pub mod minority;
pub mod no_lost_acks;
pub mod presence;
pub mod revocations;
pub mod sessions;
pub mod singletons;
pub mod state_convergence;
pub mod wait_replicated;
pub mod workloads;

use std::fmt;

use jujud::core::state::{StateSync, VersionVector};
use jujud::core::{Event, Identity, NodeId};

use crate::bounds::Bounds;
use crate::cluster::Cluster;
use crate::notes::SimNote;
use crate::queue::VTime;
use crate::truth::Truth;
use crate::workload::StateNote;
use state_convergence::StateProbe;

/// The two phases of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Random faults; invariants are checked on every event.
    Safety,
    /// Faults stopped and the network healed; the cluster must converge.
    Liveness,
}

/// What the run loop did to the world, told to checkers after it is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultNote {
    /// The process in `slot`, which was `identity`, was killed. If its
    /// disk was lost too, `lost_disk` is what that disk held durably.
    Crash {
        slot: usize,
        identity: Identity,
        lost_disk: Option<VersionVector>,
    },
    /// The process in `slot` left gracefully and exited.
    Leave {
        slot: usize,
        identity: Identity,
    },
    Pause {
        slot: usize,
    },
    Resume {
        slot: usize,
    },
    Restart {
        slot: usize,
    },
    /// The manager in `slot` was stopped for good (by the provider, or
    /// it exited by itself): its disk, holding `lost` durably, is never
    /// read again, as if it were lost.
    DiskGone {
        slot: usize,
        lost: VersionVector,
    },
}

/// A read-only view of the world handed to every checker.
pub struct World<'a> {
    pub now: VTime,
    pub phase: Phase,
    pub cluster: &'a Cluster,
    pub truth: &'a Truth,
    pub bounds: &'a Bounds,
    /// Whether the live managers' replicas agree (sampled on the tick in
    /// the liveness phase only).
    pub state: &'a StateProbe,
    /// Whether every live view equals the truth, once computed at this
    /// instant: the run loop and the convergence checker ask at the same
    /// tick, and the answer is O(N^2 log N). The run loop empties it
    /// whenever the world may have changed.
    pub views: &'a std::cell::OnceCell<bool>,
    /// Per slot, the outcome of its last view comparison, reused while
    /// neither the node (epoch, view version, active count) nor the truth
    /// moved: a converged cluster's sample is then O(N), not O(N^2 log N).
    pub view_cache: &'a std::cell::RefCell<convergence::ViewCache>,
}

impl World<'_> {
    /// Slots running, not paused and not cut off: the true live set.
    pub fn live_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.cluster
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| s.is_live() && !self.truth.is_disturbed(*i))
            .map(|(i, _)| i)
    }

    /// A slot's current node id.
    pub fn id_of(&self, slot: usize) -> NodeId {
        self.cluster.slots[slot].disk.id
    }

    /// Running, unpaused managers holding state, with their state.
    pub fn live_replicas(&self) -> impl Iterator<Item = (usize, &StateSync)> + '_ {
        live_replicas(self.cluster)
    }
}

/// Running, unpaused managers holding state, with their state.
pub fn live_replicas(cluster: &Cluster) -> impl Iterator<Item = (usize, &StateSync)> + '_ {
    cluster.slots.iter().enumerate().filter(|(_, s)| s.is_live()).filter_map(|(i, s)| Some((i, s.node()?.state()?)))
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker's name.
    pub invariant: &'static str,
    /// Virtual time at which it was found.
    pub at: VTime,
    /// The slots involved (observer first where that applies).
    pub slots: Vec<usize>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at {:.3}s on slots {:?}: {}", self.invariant, self.at.as_secs_f64(), self.slots, self.detail)
    }
}

/// Most violations one checker keeps in full; past the bound they are only
/// counted (a broken invariant tends to break thousands of times).
pub const MAX_KEPT_VIOLATIONS: usize = 1_000;

/// A checker's violations: the first `MAX_KEPT_VIOLATIONS`, and a count.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    kept: Vec<Violation>,
    total: u64,
}

impl Findings {
    pub fn push(&mut self, violation: Violation) {
        self.total += 1;
        if self.kept.len() < MAX_KEPT_VIOLATIONS {
            self.kept.push(violation);
        }
    }

    pub fn kept(&self) -> &[Violation] {
        &self.kept
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A figure a checker measured, for the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: String,
}

/// An invariant watcher. Every method has a default that ignores the input.
pub trait Checker: Send {
    /// The invariant's name, as printed in reports.
    fn name(&self) -> &'static str;
    /// A node emitted `event` (called for every event, as it happens).
    fn on_event(&mut self, _world: &World<'_>, _slot: usize, _event: &Event) {}
    /// The run loop applied a fault or a recovery.
    fn on_fault(&mut self, _world: &World<'_>, _note: &FaultNote) {}
    /// Something happened to a client write (issued, acknowledged, refused).
    fn on_state(&mut self, _world: &World<'_>, _note: &StateNote) {}
    /// The world did something on a node's behalf (a workload run, a
    /// provider call or instance, a process's own exit).
    fn on_sim(&mut self, _world: &World<'_>, _note: &SimNote) {}
    /// The phase changed (to the liveness phase: faults stopped, healed).
    fn on_phase(&mut self, _world: &World<'_>) {}
    /// Called every `CHECK_TICK` of virtual time.
    fn on_tick(&mut self, _world: &World<'_>) {}
    /// The run is over.
    fn finish(&mut self, _world: &World<'_>) {}
    /// What it found so far.
    fn findings(&self) -> &Findings;
    /// Figures for the summary.
    fn figures(&self) -> Vec<Figure> {
        Vec::new()
    }
    /// Named sets of measured durations, for tables (`--scale-table`).
    fn samples(&self) -> Vec<(&'static str, Vec<VTime>)> {
        Vec::new()
    }
}

/// Every checker a run uses.
pub fn all() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(convergence::Convergence::default()),
        Box::new(detection::Detection::default()),
        Box::new(false_down::FalseDown::default()),
        Box::new(generations::Generations::default()),
        Box::new(state_convergence::StateConvergence::default()),
        Box::new(no_lost_acks::NoLostAcks::default()),
        Box::new(wait_replicated::WaitReplicated::default()),
        Box::new(sessions::Sessions::default()),
        Box::new(workloads::WorkloadRestarts::default()),
        Box::new(presence::Presence::default()),
        Box::new(singletons::Singletons::default()),
        Box::new(instances::Instances::default()),
        Box::new(managers::Managers::default()),
        Box::new(minority::MinorityHeal::default()),
        Box::new(revocations::NoRevokedAdmission::default()),
    ]
}

/// Median and worst of a list of durations, as text.
pub fn median_worst(samples: &mut [VTime]) -> String {
    if samples.is_empty() {
        return "n/a".into();
    }
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    let worst = samples[samples.len() - 1];
    format!("median {:.3}s worst {:.3}s (n={})", median.as_secs_f64(), worst.as_secs_f64(), samples.len())
}
