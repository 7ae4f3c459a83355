//! Invariant `wait-replicated`: a write acknowledged with `replicas = K`
//! was held by at least K other managers when the acknowledgement came
//! out. A manager is one disk: a slot's current disk, or one it lost (a
//! machine that lost its disk comes back as a new node). It holds the
//! write if:
//!
//! - its running process, paused or not, has applied the write's last
//!   operation; or
//! - its disk holds that operation synced (a manager that applied the
//!   write and then crashed with its disk kept still holds it, if the
//!   batch was synced before the crash); or
//! - it is a disk lost since, and it held the operation synced when it was
//!   lost. Losing a whole disk destroys a copy that was made; the promise
//!   is that K copies were made, and no one can keep a copy through the
//!   loss of its disk (nor learn of the loss at once).
//!
//! A copy only in the memory of a process that died before the
//! acknowledgement does not count: the peer reported holding a write that
//! it could not keep.
//!
//! Owns only counters, the durable state of lost disks, and findings. Must
//! never count the acknowledging manager itself.

use jujud::core::Role;
use jujud::core::state::VersionVector;

use super::{Checker, FaultNote, Figure, Findings, Violation, World};
use crate::workload::{AckedWrite, StateNote};

const NAME: &str = "wait-replicated";

/// The wait-replicated checker.
#[derive(Debug, Default)]
pub struct WaitReplicated {
    /// Every lost disk: its slot, and what it held durably.
    lost: Vec<(usize, VersionVector)>,
    /// Acknowledgements that waited for replicas, and the other managers
    /// that held their write at that moment, in all.
    checked: u64,
    holders: u64,
    /// Holders counted only through a disk lost since.
    through_lost_disks: u64,
    violations: Findings,
}

impl WaitReplicated {
    /// Other managers holding `w` now: (slot, whether through a disk lost
    /// since).
    fn holders(&self, world: &World<'_>, w: &AckedWrite) -> Vec<(usize, bool)> {
        let slots = &world.cluster.slots;
        let seq_in = |vv: Option<&VersionVector>| vv.and_then(|v| v.get(&w.actor).copied()).unwrap_or(0);
        let mut held: Vec<(usize, bool)> = (0..slots.len())
            .filter(|&s| s != w.slot && slots[s].role == Role::Manager)
            .filter(|&s| {
                let memory = slots[s].node().and_then(|n| n.state()).map(|st| st.replica.version());
                seq_in(memory.as_ref()) >= w.seq || slots[s].disk.state.durable_seq(world.now, &w.actor) >= w.seq
            })
            .map(|s| (s, false))
            .collect();
        let lost = self.lost.iter().filter(|(s, vv)| *s != w.slot && seq_in(Some(vv)) >= w.seq);
        held.extend(lost.map(|(s, _)| (*s, true)));
        held
    }
}

impl Checker for WaitReplicated {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_fault(&mut self, world: &World<'_>, note: &FaultNote) {
        if let FaultNote::Crash { slot, lost_disk: Some(vv), .. } | FaultNote::DiskGone { slot, lost: vv } = note
            && world.cluster.slots[*slot].role == Role::Manager
        {
            self.lost.push((*slot, vv.clone()));
        }
    }

    fn on_state(&mut self, world: &World<'_>, note: &StateNote) {
        let StateNote::Acked(w) = note else { return };
        if w.replicas == 0 {
            return;
        }
        let held = self.holders(world, w);
        self.checked += 1;
        self.holders += held.len() as u64;
        self.through_lost_disks += held.iter().filter(|h| h.1).count() as u64;
        if (held.len() as u64) < u64::from(w.replicas) {
            let slots: Vec<usize> = held.iter().map(|h| h.0).collect();
            let detail = format!(
                "write {} ({:?}) acknowledged by slot {} waiting for {} other managers, but only slots {slots:?} hold it",
                w.req, w.cmd, w.slot, w.replicas
            );
            let mut involved = vec![w.slot];
            involved.extend(slots);
            self.violations.push(Violation { invariant: NAME, at: world.now, slots: involved, detail });
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        let mean = if self.checked == 0 { 0.0 } else { self.holders as f64 / self.checked as f64 };
        let value = format!(
            "{} acknowledgements checked, {mean:.2} other holders on average, {} of them disks lost since",
            self.checked, self.through_lost_disks
        );
        vec![Figure { name: "waited for replicas".into(), value }]
    }
}
