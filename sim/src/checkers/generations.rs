//! Invariant `generations`: identities only move forward. A node never
//! reports a member up at a lower generation than one it already saw for
//! that node id (a stale identity coming back, foca issues 31/34), a rename
//! always goes to a higher generation of the same node id, and a node's own
//! forced rejoin raises its own generation.
//!
//! Checked on every event. Owns, per running process, the highest
//! generation it reported per node id. Must never carry that memory across
//! a restart (a new process legitimately starts with no memory).

use std::collections::{BTreeMap, HashMap};

use jujud::core::{Event, NodeId};

use super::{Checker, Findings, Violation, World};

const NAME: &str = "generations";

/// What one process has reported. The highest generation per node id is
/// held compactly: a bit per node id when it is the id's first generation
/// (nearly every pair in a run without restarts), an entry only otherwise.
/// A map entry per pair was about 26 bytes, N^2 over a run of N members
/// (2.6 GB at 10,000).
#[derive(Debug, Default)]
struct Seen {
    epoch: u32,
    /// Bit `i` set: the highest generation this process reported for the
    /// id with dense index `i` is that id's first generation.
    at_first: Vec<u64>,
    /// The highest generation reported, for ids where it is not the first.
    other: BTreeMap<NodeId, u64>,
    own: u64,
}

impl Seen {
    /// The highest generation reported for `id` (dense index `i`, first
    /// generation `first`), if any.
    fn highest(&self, id: NodeId, i: usize, first: u64) -> Option<u64> {
        if let Some(g) = self.other.get(&id) {
            return Some(*g);
        }
        let bit = self.at_first.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1);
        bit.then_some(first)
    }

    fn set_highest(&mut self, id: NodeId, i: usize, first: u64, generation: u64) {
        if generation == first {
            if self.at_first.len() <= i / 64 {
                self.at_first.resize(i / 64 + 1, 0);
            }
            self.at_first[i / 64] |= 1 << (i % 64);
            self.other.remove(&id);
        } else {
            self.other.insert(id, generation);
        }
    }
}

/// The generations checker.
#[derive(Debug, Default)]
pub struct Generations {
    /// Per slot (the index), for its current process.
    seen: Vec<Seen>,
    /// Per node id ever reported: its dense index and the first generation
    /// reported for it (by any process; fixed once set). Looked up once
    /// per member-up event (N^2 of them over a mass join), never iterated:
    /// a hash lookup where the B-tree's cost 10 % of the 10,000 row's join.
    ids: HashMap<NodeId, (usize, u64)>,
    violations: Findings,
}

impl Generations {
    /// `slot`'s record, made on first use.
    fn seen_mut(&mut self, slot: usize) -> &mut Seen {
        if self.seen.len() <= slot {
            self.seen.resize_with(slot + 1, Seen::default);
        }
        &mut self.seen[slot]
    }

    fn flag(&mut self, world: &World<'_>, slot: usize, detail: String) {
        self.violations.push(Violation { invariant: NAME, at: world.now, slots: vec![slot], detail });
    }

    /// Records that `slot`'s process reported `id` at `generation`; returns
    /// the highest generation it had reported for `id` before (this one if
    /// none), as a map of the highest per id would.
    fn report(&mut self, slot: usize, id: NodeId, generation: u64) -> u64 {
        let next = self.ids.len();
        let (i, first) = *self.ids.entry(id).or_insert((next, generation));
        let seen = self.seen_mut(slot);
        let high = seen.highest(id, i, first).unwrap_or(generation);
        seen.set_highest(id, i, first, high.max(generation));
        high
    }
}

impl Checker for Generations {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_event(&mut self, world: &World<'_>, slot: usize, event: &Event) {
        let epoch = world.cluster.slots[slot].epoch;
        let seen = self.seen_mut(slot);
        if seen.epoch != epoch {
            *seen = Seen { epoch, ..Seen::default() };
        }
        let problem = match event {
            Event::MemberUp(id) | Event::MemberDown { identity: id, .. } => {
                let was = self.report(slot, id.id, id.generation);
                let stale = matches!(event, Event::MemberUp(_)) && id.generation < was;
                stale.then(|| format!("reported {}@{} up after seeing generation {was}", id.id, id.generation))
            }
            Event::Renamed { from, to } => {
                self.report(slot, to.id, to.generation);
                (from.id != to.id || to.generation <= from.generation)
                    .then(|| format!("renamed {}@{} to {}@{}", from.id, from.generation, to.id, to.generation))
            }
            Event::Rejoined(id) => {
                let seen = self.seen_mut(slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The compact record answers as a map of the highest generation per
    /// (process, id) would, whatever order generations come in.
    #[test]
    fn the_compact_record_answers_as_a_map_of_the_highest_would() {
        let mut g = Generations::default();
        let mut map: BTreeMap<(usize, NodeId), u64> = BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 7) as usize;
            let id = NodeId(x >> 8 & 0x3f);
            // Mostly the first generations, some higher, some lower.
            let generation = 5 + (x >> 20) % 4 - (x >> 30) % 3;
            let want = *map.entry((slot, id)).or_insert(generation);
            assert_eq!(g.report(slot, id, generation), want);
            map.insert((slot, id), want.max(generation));
        }
        let compact = g.seen.iter().map(|s| s.other.len()).sum::<usize>();
        assert!(compact < map.len(), "only ids past their first generation take an entry");
    }
}
