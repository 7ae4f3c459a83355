//! Invariant `no-lost-acks`: an acknowledged write is never lost while a
//! disk holds it. Precisely:
//!
//! - **Durability.** A write acknowledged by a manager is on that
//!   manager's disk (synced) from the acknowledgement on: when the manager
//!   crashes or exits with its disk kept, the disk still holds it.
//! - **Presence.** Once the state has converged after the heal, every
//!   acknowledged write's effects are in it, unless the write was *excused*:
//!   some disk that held it was lost (`crash-lose-disk`) at a moment when no
//!   other manager's disk held it. A manager's disk holds a write once the
//!   batch with its last operation is synced there (the acknowledging
//!   manager's disk holds it from the acknowledgement on). In particular a
//!   write acknowledged by a manager whose disk survived is never excused.
//!   A write only in memory elsewhere when the last disk holding it is lost
//!   is excused: remote operations are persisted without an
//!   acknowledgement, so that copy may be lost too.
//!
//! Effects are checked as keys of the model's layout, each write having
//! unique names (see `workload::effects`): a value must be among the key's
//! values; a created entity's life key must be set, and may read "dead"
//! only if the workload issued its removal.
//!
//! Owns the list of acknowledged writes. Must never excuse a write whose
//! acknowledging manager kept its disk.

use std::collections::{BTreeMap, BTreeSet};

use jujud::core::state::{Actor, Replica, VersionVector};

use super::{Checker, FaultNote, Figure, Findings, Phase, Violation, World};
use crate::workload::{AckedWrite, Expect, StateNote, effects, removal_target};

const NAME: &str = "no-lost-acks";

#[derive(Debug)]
struct Tracked {
    write: AckedWrite,
    /// Why the write may be absent, if it may.
    excused: Option<String>,
    /// Already reported lost (once is enough).
    reported: bool,
}

/// The no-lost-acks checker.
#[derive(Debug, Default)]
pub struct NoLostAcks {
    writes: Vec<Tracked>,
    /// Indexes into `writes`, per author.
    by_actor: BTreeMap<Actor, Vec<usize>>,
    /// Entities whose removal the workload issued.
    removals: BTreeSet<String>,
    presence_checked: bool,
    excused_present: usize,
    violations: Findings,
}

impl NoLostAcks {
    fn push(&mut self, world: &World<'_>, slots: Vec<usize>, detail: String) {
        self.violations.push(Violation { invariant: NAME, at: world.now, slots, detail });
    }

    /// The slot kept its disk through a crash or an exit: every write it
    /// acknowledged on this disk (same node id) must be on it.
    fn check_durable(&mut self, world: &World<'_>, slot: usize) {
        let s = &world.cluster.slots[slot];
        let mut lost = Vec::new();
        for (actor, idxs) in self.by_actor.range(Actor { node: s.disk.id.0, generation: 0 }..) {
            if actor.node != s.disk.id.0 {
                break;
            }
            let kept = s.disk.state.durable_seq(world.now, actor);
            let gone = idxs.iter().filter(|&&i| !self.writes[i].reported && self.writes[i].write.seq > kept);
            lost.extend(gone.map(|&i| (i, kept)));
        }
        for (i, kept) in lost {
            self.writes[i].reported = true;
            let w = &self.writes[i].write;
            let detail = format!(
                "slot {slot} kept its disk, which lost write {} acknowledged at {:.3}s ({:?}, operation {} of {}@{}; the disk keeps up to {kept})",
                w.req,
                w.at.as_secs_f64(),
                w.cmd,
                w.seq,
                w.actor.node,
                w.actor.generation
            );
            self.push(world, vec![slot], detail);
        }
    }

    /// The slot's disk was lost holding `lost`: the writes on it that no
    /// other disk holds are excused.
    fn on_disk_lost(&mut self, world: &World<'_>, slot: usize, lost: &VersionVector) {
        for (actor, &upto) in lost {
            let Some(idxs) = self.by_actor.get(actor) else { continue };
            let elsewhere = (0..world.cluster.slots.len())
                // A stopped instance's disk is never read again.
                .filter(|&s| s != slot && !world.cluster.slots[s].retired)
                .map(|s| world.cluster.slots[s].disk.state.durable_seq(world.now, actor))
                .max()
                .unwrap_or(0);
            for &i in idxs {
                let t = &mut self.writes[i];
                if t.excused.is_none() && t.write.seq <= upto && t.write.seq > elsewhere {
                    t.excused = Some(format!(
                        "its only disk copy was lost with slot {slot} at {:.3}s",
                        world.now.as_secs_f64()
                    ));
                }
            }
        }
    }

    /// Every write that is not excused must have its effects in `replica`.
    fn check_presence(&mut self, world: &World<'_>, replicas: &[(usize, &Replica)]) {
        self.presence_checked = true;
        let mut missing = Vec::new();
        let mut excused_present = 0;
        for (i, t) in self.writes.iter().enumerate() {
            let absent = replicas.iter().find_map(|(slot, r)| self.absent_effect(&t.write, r).map(|e| (*slot, e)));
            match (absent, &t.excused) {
                (Some(gap), None) if !t.reported => missing.push((i, gap)),
                (None, Some(_)) => excused_present += 1,
                _ => {}
            }
        }
        self.excused_present = excused_present;
        for (i, (slot, gap)) in missing {
            let w = &self.writes[i].write;
            let detail = format!(
                "write {} acknowledged by slot {} at {:.3}s ({:?} -> {:?}) is missing from the converged state at slot {slot}: {gap}",
                w.req,
                w.slot,
                w.at.as_secs_f64(),
                w.cmd,
                w.outcome.ids
            );
            self.push(world, vec![w.slot, slot], detail);
        }
    }

    /// The first effect of `w` that `r` lacks, described.
    fn absent_effect(&self, w: &AckedWrite, r: &Replica) -> Option<String> {
        effects(w).into_iter().find_map(|(key, expect)| {
            let vals = r.get(&key);
            let ok = match &expect {
                Expect::Value(v) => vals.contains(v),
                Expect::Alive(entity) => {
                    !vals.is_empty() && (!vals.iter().any(|v| v == "dead") || self.removals.contains(entity))
                }
            };
            (!ok).then(|| format!("key {key} holds {vals:?}, expected {expect:?}"))
        })
    }
}

impl Checker for NoLostAcks {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_state(&mut self, _world: &World<'_>, note: &StateNote) {
        match note {
            StateNote::Issued { cmd, .. } => {
                if let Some(target) = removal_target(cmd) {
                    self.removals.insert(target.to_string());
                }
            }
            StateNote::Acked(w) => {
                self.by_actor.entry(w.actor).or_default().push(self.writes.len());
                self.writes.push(Tracked { write: w.clone(), excused: None, reported: false });
            }
            StateNote::Refused { .. } => {}
        }
    }

    fn on_fault(&mut self, world: &World<'_>, note: &FaultNote) {
        match note {
            FaultNote::Crash { slot, lost_disk: None, .. } | FaultNote::Leave { slot, .. } => {
                self.check_durable(world, *slot)
            }
            FaultNote::Crash { slot, lost_disk: Some(lost), .. } | FaultNote::DiskGone { slot, lost } => {
                self.on_disk_lost(world, *slot, lost)
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, world: &World<'_>) {
        if world.phase == Phase::Liveness && !self.presence_checked && world.state.converged() {
            // Converged: every live replica is the same, so one will do.
            let first: Vec<(usize, &Replica)> = world.live_replicas().take(1).map(|(s, st)| (s, &st.replica)).collect();
            if !first.is_empty() {
                self.check_presence(world, &first);
            }
        }
    }

    fn finish(&mut self, world: &World<'_>) {
        if world.phase == Phase::Liveness && !self.presence_checked {
            // Never converged (state-convergence reports that): a write is
            // lost only if every live replica lacks it.
            let all: Vec<(usize, &Replica)> = world.live_replicas().map(|(s, st)| (s, &st.replica)).collect();
            if !all.is_empty() {
                self.check_presence_any(world, &all);
            }
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        let excused = self.writes.iter().filter(|t| t.excused.is_some()).count();
        let value = format!(
            "{} acknowledged, {} excused by a lost disk ({} of those survived anyway), presence {}",
            self.writes.len(),
            excused,
            self.excused_present,
            if self.presence_checked { "checked" } else { "not checked" }
        );
        vec![Figure { name: "writes".into(), value }]
    }
}

impl NoLostAcks {
    /// Presence when the replicas differ: a write counts as present if any
    /// live replica holds all its effects.
    fn check_presence_any(&mut self, world: &World<'_>, replicas: &[(usize, &Replica)]) {
        self.presence_checked = true;
        let lost: Vec<usize> = (0..self.writes.len())
            .filter(|&i| self.writes[i].excused.is_none() && !self.writes[i].reported)
            .filter(|&i| replicas.iter().all(|(_, r)| self.absent_effect(&self.writes[i].write, r).is_some()))
            .collect();
        for i in lost {
            let w = &self.writes[i].write;
            let detail = format!(
                "write {} acknowledged by slot {} at {:.3}s ({:?}) is missing from every live replica",
                w.req,
                w.slot,
                w.at.as_secs_f64(),
                w.cmd
            );
            self.push(world, vec![w.slot], detail);
        }
    }
}
