//! Ground truth about disturbances: for every node slot, whether a fault
//! touches it now (a pause, a partition or clog on one of its paths) and
//! when the last one ended; and whether the network as a whole is lossier
//! than the false-down threshold. Checkers ask it "was this node healthy and
//! reachable for the whole window?".
//!
//! Owns only bookkeeping. Must never decide anything about the simulation,
//! and must never be told about a fault the network does not really have
//! (planted bugs bypass it on purpose, which is how tests show that the
//! checkers catch them).

use std::time::Duration;

use crate::queue::VTime;

/// Per-slot disturbance counters.
#[derive(Clone, Debug, Default)]
struct SlotTruth {
    /// Faults touching the slot right now (they may overlap).
    active: u32,
    /// When the last fault touching the slot ended.
    last_end: VTime,
}

/// The disturbance ledger of one run.
#[derive(Clone, Debug)]
pub struct Truth {
    slots: Vec<SlotTruth>,
    /// Whether the network's loss is above the false-down threshold now.
    lossy: bool,
    /// When the network last stopped being lossy.
    lossy_end: VTime,
}

impl Truth {
    pub fn new(slots: usize) -> Self {
        Truth { slots: vec![SlotTruth::default(); slots], lossy: false, lossy_end: Duration::ZERO }
    }

    /// A slot was added (an instance the provider started at `now`).
    pub fn add_slot(&mut self, now: VTime) {
        self.slots.push(SlotTruth { active: 0, last_end: now });
    }

    /// How many slots the ledger covers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A fault touching `slot` began.
    pub fn disturb(&mut self, slot: usize) {
        self.slots[slot].active += 1;
    }

    /// A fault touching `slot` ended at `now`.
    pub fn settle(&mut self, slot: usize, now: VTime) {
        let s = &mut self.slots[slot];
        assert!(s.active > 0, "slot {slot} settled more faults than it suffered");
        s.active -= 1;
        s.last_end = s.last_end.max(now);
    }

    /// The network became (or stopped being) lossier than the threshold.
    pub fn set_lossy(&mut self, lossy: bool, now: VTime) {
        if self.lossy && !lossy {
            self.lossy_end = now;
        }
        self.lossy = lossy;
    }

    /// Whether a fault touches `slot` right now.
    pub fn is_disturbed(&self, slot: usize) -> bool {
        self.slots[slot].active > 0
    }

    /// Since when `slot` has been undisturbed and the network under the
    /// loss threshold, or `None` if it is disturbed now.
    pub fn clean_since(&self, slot: usize) -> Option<VTime> {
        let s = &self.slots[slot];
        (s.active == 0 && !self.lossy).then(|| s.last_end.max(self.lossy_end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn overlapping_faults_keep_a_slot_disturbed_until_the_last_ends() {
        let mut t = Truth::new(2);
        assert_eq!(t.clean_since(0), Some(Duration::ZERO));
        t.disturb(0);
        t.disturb(0);
        t.settle(0, 3 * S);
        assert_eq!(t.clean_since(0), None);
        t.settle(0, 5 * S);
        assert_eq!(t.clean_since(0), Some(5 * S));
        t.set_lossy(true, 6 * S);
        assert_eq!(t.clean_since(1), None);
        t.set_lossy(false, 9 * S);
        assert_eq!(t.clean_since(1), Some(9 * S));
    }
}
