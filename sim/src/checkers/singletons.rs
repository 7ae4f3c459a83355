//! Invariant `singletons`: at most one owner per singleton worker in each
//! connected part of the cluster, once it has stabilised. A manager that
//! another live node has heard revoked is in no part: it is fenced off
//! (its traffic dropped) and being stopped. Whenever the
//! views equal the truth, the live, undisturbed managers (who then all see
//! each other) hold exactly one owner of each singleton; and in the
//! liveness phase no overlap (two live managers that reach each other
//! both owning one singleton) lasts longer than the convergence bound.
//! Measures the overlap time: how long, in all, two managers in one
//! connected part both owned a singleton, the longest such episode, and
//! how many there were.
//!
//! Owns the overlap clocks. Must never read ownership from events: it
//! reads what each manager's controller runs now.

use std::collections::BTreeMap;
use std::time::Duration;

use jujud::core::Role;
use jujud::core::control::Singleton;

use super::{Checker, Figure, Findings, Phase, Violation, World, convergence};
use crate::queue::VTime;
use crate::run::CHECK_TICK;

const NAME: &str = "singletons";

/// The singletons checker.
#[derive(Debug, Default)]
pub struct Singletons {
    /// Per singleton: since when an overlap has lasted, and whether it was
    /// reported.
    since: BTreeMap<Singleton, (VTime, bool)>,
    total: Duration,
    longest: Duration,
    episodes: u64,
    violations: Findings,
}

/// The live managers that another live node has heard revoked, by slot.
/// A revoked manager is cut off as surely as by a partition: every member
/// that heard of it drops its datagrams and exchanges and places nothing on
/// it, so it can reach no majority, and it is being stopped (the keeper
/// revokes a manager as it stops it). Until its stop lands, or it hears of
/// the revocation itself, it may still believe it owns a singleton
/// (seed 367348725: 49 ms, from a forced rejoin to its stop).
fn revoked(world: &World<'_>) -> Vec<usize> {
    let c = world.cluster;
    let heard = |slot: usize| {
        let id = world.id_of(slot);
        c.slots
            .iter()
            .enumerate()
            .any(|(other, s)| other != slot && s.is_live() && s.node().is_some_and(|n| n.has_revoked(id)))
    };
    (0..c.slots.len()).filter(|&s| c.slots[s].role == Role::Manager && c.slots[s].is_live() && heard(s)).collect()
}

/// Live managers not in `revoked`, grouped into connected parts (both
/// ways, by the truth).
fn parts(world: &World<'_>, revoked: &[usize]) -> Vec<Vec<usize>> {
    let c = world.cluster;
    let live: Vec<usize> = (0..c.slots.len())
        .filter(|&s| c.slots[s].role == Role::Manager && c.slots[s].is_live() && !revoked.contains(&s))
        .collect();
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for m in live {
        match parts.iter_mut().find(|p| c.reachable(p[0], m)) {
            Some(p) => p.push(m),
            None => parts.push(vec![m]),
        }
    }
    parts
}

fn owners(world: &World<'_>, slots: &[usize], s: Singleton) -> Vec<usize> {
    slots
        .iter()
        .copied()
        .filter(|&m| world.cluster.slots[m].node().and_then(|n| n.control()).is_some_and(|c| c.owned().contains(&s)))
        .collect()
}

impl Checker for Singletons {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_tick(&mut self, world: &World<'_>) {
        // Managers without state (`--no-state`) run no workers.
        if !world.cluster.slots.iter().any(|s| s.node().and_then(|n| n.control()).is_some()) {
            return;
        }
        let revoked = revoked(world);
        let parts = parts(world, &revoked);
        for s in Singleton::ALL {
            let overlap = parts.iter().find_map(|p| Some(owners(world, p, s)).filter(|o| o.len() > 1));
            match (overlap, self.since.contains_key(&s)) {
                (Some(o), _) => {
                    let e = self.since.entry(s).or_insert((world.now, false));
                    self.total += CHECK_TICK;
                    let lasted = world.now - e.0 + CHECK_TICK;
                    self.longest = self.longest.max(lasted);
                    if world.phase == Phase::Liveness && lasted > world.bounds.convergence && !e.1 {
                        e.1 = true;
                        let detail = format!(
                            "{} owned by slots {o:?} at once for {:.1}s in the healed cluster",
                            s.name(),
                            lasted.as_secs_f64()
                        );
                        self.violations.push(Violation { invariant: NAME, at: world.now, slots: o, detail });
                    }
                }
                (None, true) => {
                    self.episodes += 1;
                    self.since.remove(&s);
                }
                (None, false) => {}
            }
        }
        if !convergence::settled(world, Duration::ZERO, Duration::ZERO) {
            return;
        }
        let main: Vec<usize> = world
            .live_slots()
            .filter(|&m| world.cluster.slots[m].node().and_then(|n| n.control()).is_some() && !revoked.contains(&m))
            .collect();
        for s in Singleton::ALL {
            let o = owners(world, &main, s);
            if !main.is_empty() && o.len() != 1 {
                let detail = format!(
                    "{} has {} owners {o:?} among the managers that all see each other, with converged views",
                    s.name(),
                    o.len()
                );
                self.violations.push(Violation { invariant: NAME, at: world.now, slots: o, detail });
            }
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        vec![Figure {
            name: "overlap (two owners in one connected part)".into(),
            value: format!(
                "{:.1}s in all, longest {:.1}s, {} episodes (tick resolution {} ms)",
                self.total.as_secs_f64(),
                self.longest.as_secs_f64(),
                self.episodes + self.since.len() as u64,
                CHECK_TICK.as_millis()
            ),
        }]
    }
}
