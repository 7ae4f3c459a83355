//! Invariant `generations`: identities only move forward. A node never
//! reports a member up at a lower generation than one it already saw for
//! that node id (a stale identity coming back, foca issues 31/34), a rename
//! always goes to a higher generation of the same node id, and a node's own
//! forced rejoin raises its own generation.
//!
//! Checked on every event. Owns, per running process, the highest
//! generation it reported per node id. Must never carry that memory across
//! a restart (a new process legitimately starts with no memory).

use std::collections::BTreeMap;

use jujud::core::{Event, NodeId};

use super::{Checker, Findings, Violation, World};

const NAME: &str = "generations";

/// What one process has reported.
#[derive(Debug, Default)]
struct Seen {
    epoch: u32,
    highest: BTreeMap<NodeId, u64>,
    own: u64,
}

/// The generations checker.
#[derive(Debug, Default)]
pub struct Generations {
    /// Per slot, for its current process.
    seen: BTreeMap<usize, Seen>,
    violations: Findings,
}

impl Generations {
    fn flag(&mut self, world: &World<'_>, slot: usize, detail: String) {
        self.violations.push(Violation { invariant: NAME, at: world.now, slots: vec![slot], detail });
    }
}

impl Checker for Generations {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_event(&mut self, world: &World<'_>, slot: usize, event: &Event) {
        let epoch = world.cluster.slots[slot].epoch;
        let seen = self.seen.entry(slot).or_default();
        if seen.epoch != epoch {
            *seen = Seen { epoch, ..Seen::default() };
        }
        let problem = match event {
            Event::MemberUp(id) | Event::MemberDown { identity: id, .. } => {
                let high = seen.highest.entry(id.id).or_insert(id.generation);
                let stale = matches!(event, Event::MemberUp(_)) && id.generation < *high;
                let was = *high;
                *high = (*high).max(id.generation);
                stale.then(|| format!("reported {}@{} up after seeing generation {was}", id.id, id.generation))
            }
            Event::Renamed { from, to } => {
                let high = seen.highest.entry(to.id).or_insert(to.generation);
                *high = (*high).max(to.generation);
                (from.id != to.id || to.generation <= from.generation)
                    .then(|| format!("renamed {}@{} to {}@{}", from.id, from.generation, to.id, to.generation))
            }
            Event::Rejoined(id) => {
                let bad = id.generation <= seen.own || world.cluster.slots[slot].disk.id != id.id;
                let was = seen.own;
                seen.own = id.generation;
                bad.then(|| format!("rejoined as {}@{} after generation {was}", id.id, id.generation))
            }
            _ => None,
        };
        if let Some(detail) = problem {
            self.flag(world, slot, detail);
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }
}
