//! Invariant `detection`: a crashed node is declared down (a `MemberDown`
//! for it, or its replacement by a newer generation of the same node) by
//! every live node that had it active at the crash, within the bound:
//! `Bounds::detection` in the healed liveness phase and
//! `Bounds::detection_under_faults` while faults run. An observer that is
//! itself crashed, paused or departs before the deadline is excused. Also
//! reports how many healed detections came within the (probabilistic)
//! gossip bound rather than by the observer's own probe walk.
//!
//! Owns the pending detections and the measured latencies. Must never
//! consult a node's internal state to decide detection: only the events it
//! emitted count (that is what the outside world sees).

use std::collections::BTreeMap;
use std::time::Duration;

use jujud::core::{Event, Identity};

use super::{Checker, FaultNote, Figure, Findings, Phase, Violation, World, median_worst};
use crate::queue::VTime;

const NAME: &str = "detection";

/// Most silent observers named in one violation.
const MAX_NAMED_NODES: usize = 8;

#[derive(Debug)]
struct Pending {
    victim: Identity,
    slot: usize,
    at: VTime,
    deadline: VTime,
    /// When the first prober's verdict should have reached everyone.
    gossip_deadline: VTime,
    healed: bool,
    /// Observer slot -> when it declared the victim down.
    observers: BTreeMap<usize, Option<VTime>>,
}

/// The detection checker.
#[derive(Debug, Default)]
pub struct Detection {
    pending: Vec<Pending>,
    /// Per-observer latencies in a healed cluster.
    healed_each: Vec<Duration>,
    /// Per-crash latency until the last observer detected, healed.
    healed_all: Vec<Duration>,
    /// Per-observer latencies while faults ran.
    faulty_each: Vec<Duration>,
    /// Healed detections, and how many came within `Bounds::detection_gossip`.
    healed_total: u64,
    healed_by_gossip: u64,
    violations: Findings,
}

impl Detection {
    fn settle(&mut self, p: Pending, now: VTime) {
        let silent: Vec<usize> =
            p.observers.iter().filter(|(_, d)| d.is_none_or(|t| t > p.deadline)).map(|(s, _)| *s).collect();
        let each = p.observers.values().flatten().filter(|t| **t <= p.deadline).map(|t| *t - p.at);
        if p.healed {
            let before = self.healed_each.len();
            self.healed_each.extend(each);
            self.healed_total += (self.healed_each.len() - before) as u64;
            let by_gossip = p.observers.values().flatten().filter(|t| **t <= p.gossip_deadline).count();
            self.healed_by_gossip += by_gossip as u64;
        } else {
            self.faulty_each.extend(each);
        }
        if silent.is_empty() {
            if let Some(last) = p.observers.values().flatten().max().filter(|_| p.healed) {
                self.healed_all.push(*last - p.at);
            }
            return;
        }
        let detail = format!(
            "slot {} ({}@{}) crashed at {:.3}s; {} of {} observers had not declared it down after {:.3}s (bound), e.g. slots {:?}",
            p.slot,
            p.victim.id,
            p.victim.generation,
            p.at.as_secs_f64(),
            silent.len(),
            p.observers.len(),
            (p.deadline - p.at).as_secs_f64(),
            &silent[..silent.len().min(MAX_NAMED_NODES)]
        );
        let mut slots = vec![p.slot];
        slots.extend(silent.iter().take(MAX_NAMED_NODES));
        self.violations.push(Violation { invariant: NAME, at: now, slots, detail });
    }
}

/// Whether `event` from an observer means it no longer holds `victim` live.
fn declares_gone(event: &Event, victim: &Identity) -> bool {
    match event {
        Event::MemberDown { identity, .. } => identity.id == victim.id && identity.generation <= victim.generation,
        Event::Renamed { from, .. } => from.id == victim.id,
        Event::MemberUp(identity) => identity.id == victim.id && identity.generation > victim.generation,
        _ => false,
    }
}

impl Checker for Detection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_event(&mut self, world: &World<'_>, slot: usize, event: &Event) {
        for p in &mut self.pending {
            if let Some(seen @ None) = p.observers.get_mut(&slot)
                && declares_gone(event, &p.victim)
            {
                *seen = Some(world.now);
            }
        }
    }

    fn on_fault(&mut self, world: &World<'_>, note: &FaultNote) {
        let gone = match note {
            FaultNote::Crash { slot, .. } | FaultNote::Leave { slot, .. } | FaultNote::Pause { slot } => *slot,
            FaultNote::Resume { .. } | FaultNote::Restart { .. } | FaultNote::DiskGone { .. } => return,
        };
        for p in &mut self.pending {
            p.observers.remove(&gone);
        }
        let FaultNote::Crash { slot, identity, .. } = note else { return };
        let observers = world
            .cluster
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != *slot && s.is_live())
            .filter(|(_, s)| s.node().is_some_and(|n| n.active_ids().contains(&identity.id)))
            .map(|(i, _)| (i, None))
            .collect();
        let healed = world.phase == Phase::Liveness;
        let bound = if healed { world.bounds.detection } else { world.bounds.detection_under_faults };
        self.pending.push(Pending {
            victim: identity.clone(),
            slot: *slot,
            at: world.now,
            deadline: world.now + bound,
            gossip_deadline: world.now + world.bounds.detection_gossip,
            healed,
            observers,
        });
    }

    fn on_phase(&mut self, world: &World<'_>) {
        // Once healed, the convergence bound applies to every old crash too:
        // converged views cannot still hold the dead identity.
        let cap = world.now + world.bounds.convergence;
        for p in &mut self.pending {
            p.deadline = p.deadline.min(cap);
        }
    }

    fn on_tick(&mut self, world: &World<'_>) {
        let now = world.now;
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| now >= p.deadline || p.observers.values().all(Option::is_some));
        self.pending = keep;
        for p in done {
            self.settle(p, now);
        }
    }

    fn finish(&mut self, world: &World<'_>) {
        self.on_tick(world);
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn samples(&self) -> Vec<(&'static str, Vec<VTime>)> {
        vec![
            ("detection-healed", self.healed_each.clone()),
            ("detection-healed-all", self.healed_all.clone()),
            ("detection-faulty", self.faulty_each.clone()),
        ]
    }

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure {
                name: "detection, healed, per observer".into(),
                value: median_worst(&mut self.healed_each.clone()),
            },
            Figure {
                name: "detection, healed, all observers".into(),
                value: median_worst(&mut self.healed_all.clone()),
            },
            Figure {
                name: "detection under faults, per observer".into(),
                value: median_worst(&mut self.faulty_each.clone()),
            },
            Figure {
                name: "healed detections within the gossip bound (the rest by the observer's own walk)".into(),
                value: format!("{} of {}", self.healed_by_gossip, self.healed_total),
            },
        ]
    }
}
