//! Invariant `false-down`: a healthy, reachable node is never declared
//! down. A `MemberDown` (not a graceful leave) emitted by any node about
//! identity Y is false when Y's process is running at that very generation,
//! is not paused, no fault has touched any path to or from it, the network
//! loss is at most `bounds::FALSE_DOWN_MAX_LOSS`, and all of that has held
//! for the whole `Bounds::false_down_window`; and the observer itself was
//! not frozen during that window (a frozen observer hears nothing, which
//! is the same as a cut path).
//!
//! A paused node *is* legitimately declared down once the pause outlasts
//! detection; those downs, and downs of live nodes during faults, are
//! counted as excused, never as false.
//!
//! Owns its counts and findings. Must never excuse a down for any reason
//! not written above.

use jujud::core::Event;

use super::{Checker, Figure, Findings, Violation, World};

const NAME: &str = "false-down";

/// The false-down checker.
#[derive(Debug, Default)]
pub struct FalseDown {
    /// Downs of a running, unpaused node at its current generation that a
    /// recent fault excuses.
    excused: u64,
    /// Ticks x live nodes, and how many of those the checker was armed
    /// for (the node clean for a whole window): its coverage.
    live_samples: u64,
    armed_samples: u64,
    violations: Findings,
}

impl FalseDown {
    /// How many false downs were found.
    pub fn count(&self) -> u64 {
        self.violations.total()
    }
}

impl Checker for FalseDown {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_event(&mut self, world: &World<'_>, observer: usize, event: &Event) {
        let Event::MemberDown { identity, left: false } = event else { return };
        let Some(subject) = world.cluster.slot_of(identity.id) else { return };
        let s = &world.cluster.slots[subject];
        if s.is_paused() || s.identity() != Some(identity) {
            return;
        }
        let window = world.bounds.false_down_window;
        let healthy_since = world.truth.clean_since(subject).map(|clean| clean.max(s.started_at));
        let observer_thawed = world.cluster.slots[observer].resumed_at;
        let reachable_since = healthy_since.map(|since| since.max(observer_thawed));
        match reachable_since {
            Some(since) if world.now >= since + window => {
                let detail = format!(
                    "slot {observer} declared slot {subject} ({}@{}) down, but it was running, unpaused and reachable for {:.3}s (window {:.3}s)",
                    identity.id,
                    identity.generation,
                    (world.now - since).as_secs_f64(),
                    window.as_secs_f64()
                );
                self.violations.push(Violation {
                    invariant: NAME,
                    at: world.now,
                    slots: vec![observer, subject],
                    detail,
                });
            }
            _ => self.excused += 1,
        }
    }

    fn on_tick(&mut self, world: &World<'_>) {
        // Armed when clean, started and thawed at least a window ago.
        let cutoff = world.now.checked_sub(world.bounds.false_down_window);
        for (slot, s) in world.cluster.slots.iter().enumerate().filter(|(_, s)| s.is_live()) {
            self.live_samples += 1;
            let armed = cutoff.is_some_and(|cutoff| {
                s.started_at <= cutoff
                    && s.resumed_at <= cutoff
                    && world.truth.clean_since(slot).is_some_and(|clean| clean <= cutoff)
            });
            self.armed_samples += u64::from(armed);
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure { name: "false downs".into(), value: self.violations.total().to_string() },
            Figure { name: "downs of live nodes excused by a fault".into(), value: self.excused.to_string() },
            Figure {
                name: "armed (share of live node-time it would catch a false down)".into(),
                value: format!("{:.1}%", 100.0 * self.armed_samples as f64 / self.live_samples.max(1) as f64),
            },
        ]
    }
}
