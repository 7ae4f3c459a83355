//! Invariant `presence`: after the heal, every live manager's status view
//! shows each agent machine's presence as the truth has it: `alive` when
//! the agent's process runs and is reachable, `down` when it crashed. It
//! is checked once the views and the replicas have converged after the
//! heal (or at the state-convergence bound, whichever comes first), and
//! again once every view dropped the liveness phase's probe crash, if that
//! crashed an agent (or at the detection bound).
//!
//! Owns only its two checkpoints. Must never build status views during
//! the safety phase (a view costs a pass over every key per manager).

use std::collections::BTreeMap;

use super::{Checker, FaultNote, Figure, Findings, Phase, Violation, World, convergence};
use crate::queue::VTime;

const NAME: &str = "presence";
/// Most mismatches named in one violation.
const MAX_NAMED: usize = 5;

/// The presence checker.
#[derive(Debug, Default)]
pub struct Presence {
    /// A checkpoint: what, and its deadline.
    due: Option<(&'static str, VTime)>,
    /// When the heal came (suspicions raised before it may linger for the
    /// false-down window: presence may read `suspect` until then).
    heal: VTime,
    checked: Vec<(&'static str, usize)>,
    violations: Findings,
}

/// The presence the truth gives each agent machine, by machine id.
fn truth(world: &World<'_>) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    for (slot, s) in world.cluster.slots.iter().enumerate() {
        let Some(spec) = s.agent.as_ref().filter(|_| !s.retired) else { continue };
        // An instance the provider started whose process has not booted
        // yet (epoch 0): its machine's agent never registered, so every
        // view rightly shows it `pending`, which the truth has no word for
        // (seed 2612061368 checked one 0.5 s before its boot).
        if s.epoch == 0 {
            continue;
        }
        if s.node().and_then(|n| n.agent()).is_some_and(|a| a.is_gone()) {
            continue;
        }
        let presence = if s.is_live() && !world.truth.is_disturbed(slot) {
            "alive"
        } else if !s.is_running() {
            "down"
        } else {
            continue;
        };
        out.insert(spec.machine.clone(), presence);
    }
    out
}

impl Presence {
    fn check(&mut self, world: &World<'_>, what: &'static str) {
        let want = truth(world);
        let mut bad = Vec::new();
        let mut managers = 0;
        for (slot, s) in world.cluster.slots.iter().enumerate() {
            let Some(view) = s.node().filter(|_| s.is_live()).and_then(|n| n.status_view()) else { continue };
            managers += 1;
            for m in &view.machines {
                if let Some(w) = want.get(&m.id).filter(|w| **w != m.presence) {
                    bad.push(format!("slot {slot} shows machine {} as {} (truth: {w})", m.id, m.presence));
                }
            }
        }
        self.checked.push((what, managers));
        if !bad.is_empty() {
            let detail = format!(
                "{} wrong presences {what}: {}",
                bad.len(),
                bad.iter().take(MAX_NAMED).cloned().collect::<Vec<_>>().join("; ")
            );
            self.violations.push(Violation { invariant: NAME, at: world.now, slots: Vec::new(), detail });
        }
    }
}

impl Checker for Presence {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_phase(&mut self, world: &World<'_>) {
        self.heal = world.now;
        self.due = Some(("after the heal", world.now + world.bounds.state_convergence(0)));
    }

    fn on_fault(&mut self, world: &World<'_>, note: &FaultNote) {
        if let FaultNote::Crash { slot, .. } = note
            && world.phase == Phase::Liveness
            && world.cluster.slots[*slot].agent.is_some()
        {
            self.due = Some(("after the probe crash", world.now + world.bounds.detection));
        }
    }

    fn on_tick(&mut self, world: &World<'_>) {
        let Some((what, deadline)) = self.due else { return };
        let ready = convergence::settled(world, self.heal, world.bounds.false_down_window)
            && (what != "after the heal" || world.state.converged());
        if ready || world.now >= deadline {
            self.due = None;
            self.check(world, what);
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        self.checked
            .iter()
            .map(|(what, n)| Figure { name: format!("presence checked {what}"), value: format!("on {n} managers") })
            .collect()
    }
}
