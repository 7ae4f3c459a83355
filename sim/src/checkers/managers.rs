//! Invariant `managers`: after the faults end, the number of live
//! managers returns to the desired count (`c/ha-desired`) within
//! `Bounds::ha_restore` of the heal, and stays there until the liveness
//! phase's probe crash (which the HA keeper may heal in turn). Runs
//! without a provider (more than seven managers) are not held to it.
//!
//! Owns the time the count last became right. Must never count a frozen
//! manager, nor a stopped instance, as live.

use super::{Checker, FaultNote, Figure, Findings, Phase, Violation, World};
use crate::queue::VTime;
use crate::run::{desired_managers, live_managers};

const NAME: &str = "managers";

/// The managers checker.
#[derive(Debug, Default)]
pub struct Managers {
    heal: Option<VTime>,
    /// Since when the count has been right, in the liveness phase.
    right_since: Option<VTime>,
    /// The probe crash came: the count is no longer watched.
    frozen: bool,
    reported: bool,
    took: Option<VTime>,
    violations: Findings,
}

impl Managers {
    fn fail(&mut self, world: &World<'_>, why: &str) {
        if self.reported {
            return;
        }
        self.reported = true;
        let desired = desired_managers(world.cluster).unwrap_or(0);
        let detail = format!(
            "{why}: {} live managers, {desired} desired (bound {:.1}s after the heal)",
            live_managers(world.cluster),
            world.bounds.ha_restore.as_secs_f64()
        );
        self.violations.push(Violation { invariant: NAME, at: world.now, slots: Vec::new(), detail });
    }
}

impl Checker for Managers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_phase(&mut self, world: &World<'_>) {
        self.heal = Some(world.now);
    }

    fn on_fault(&mut self, world: &World<'_>, note: &FaultNote) {
        if world.phase == Phase::Liveness && matches!(note, FaultNote::Crash { .. }) {
            self.frozen = true;
        }
    }

    fn on_tick(&mut self, world: &World<'_>) {
        let Some(heal) = self.heal.filter(|_| !self.frozen) else { return };
        let Some(desired) = desired_managers(world.cluster) else { return };
        let right = live_managers(world.cluster) == desired as usize;
        let deadline = heal + world.bounds.ha_restore;
        match (right, self.right_since) {
            (true, None) => {
                self.right_since = Some(world.now);
                self.took.get_or_insert(world.now - heal);
            }
            (false, Some(_)) => {
                self.right_since = None;
                if world.now > deadline {
                    self.fail(world, "the count of live managers changed after it was restored");
                }
            }
            (false, None) if world.now >= deadline => {
                self.fail(world, "the live managers did not return to the desired count")
            }
            _ => {}
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        let value = self.took.map_or("n/a".into(), |t| format!("{:.1}s", t.as_secs_f64()));
        vec![Figure { name: "desired managers live after the heal".into(), value }]
    }
}
