//! Invariant `minority-heal`: a minority side never starts a replacement.
//! Every start of a controller machine's instance, and every heal (the HA
//! keeper's stop at once of a manager's instance), was asked for by a
//! manager that could reach a majority of the desired managers at that
//! moment, by the network's truth: the live managers in its connected part
//! (itself included; both ways, transitively over every live node, as
//! SWIM's indirect probes reach) number more than half of `c/ha-desired`
//! (as its own state says) — unless it had been cut off from that majority
//! for less than the contact window (`CONTACT_WINDOW_MS`, plus
//! [`SAMPLING_SLACK_MS`]): a manager counts a majority only from managers
//! that answered one probe round it sent within that window, so no
//! decision can rest on an older view (findings G and O in
//! docs/SIMULATOR.md). Such actions are counted as "stale-view" actions;
//! one from a manager cut off longer than that is a violation.
//!
//! Owns, per manager, since when it has reached only a minority (sampled
//! on the tick). Must never trust the asking manager's view: the point is
//! that its view may lag the network.

use jujud::core::Role;
use jujud::core::control::CONTACT_WINDOW_MS;
use jujud::core::control::provider::ProviderCmd;
use jujud::core::state::controllers;

use std::collections::BTreeMap;

use super::{Checker, Figure, Findings, Violation, World};
use crate::notes::SimNote;
use crate::queue::VTime;

const NAME: &str = "minority-heal";

/// Slack on the contact window: this checker samples the cut on the
/// simulator's tick, and a node's clock may drift from the true one.
pub const SAMPLING_SLACK_MS: u64 = 500;

/// The minority-heal checker.
#[derive(Debug, Default)]
pub struct MinorityHeal {
    starts: u64,
    heals: u64,
    /// Actions from a minority cut off for less than the contact window.
    stale_view: u64,
    /// Managers reaching only a minority now, since when.
    minority_since: BTreeMap<usize, VTime>,
    violations: Findings,
}

/// Live managers in `slot`'s connected part (itself included), and the
/// desired count its state holds. The part is transitive over every live
/// node, both ways: SWIM's indirect probes go through any member, so a
/// manager that reaches another only through a third (a rolling cut)
/// rightly holds it alive.
fn reach(world: &World<'_>, slot: usize) -> Option<(u32, u32)> {
    let c = world.cluster;
    let desired = c.slots[slot].node().and_then(|n| n.state()).map(|st| controllers::ha_desired(&st.replica))?;
    if c.network.partition().is_none() {
        let n = c.slots.iter().filter(|s| s.role == Role::Manager && s.is_live()).count();
        return Some((n as u32, desired));
    }
    let live: Vec<usize> = (0..c.slots.len()).filter(|&s| c.slots[s].is_live()).collect();
    let mut seen = vec![false; c.slots.len()];
    let (mut stack, mut n) = (vec![slot], 0u32);
    seen[slot] = true;
    while let Some(a) = stack.pop() {
        n += u32::from(c.slots[a].role == Role::Manager);
        for &b in &live {
            if !seen[b] && c.reachable(a, b) {
                seen[b] = true;
                stack.push(b);
            }
        }
    }
    Some((n, desired))
}

impl Checker for MinorityHeal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_sim(&mut self, world: &World<'_>, note: &SimNote) {
        let SimNote::ProviderCall { slot, cmd } = note else { return };
        let what = match cmd {
            ProviderCmd::Start { manager: true, machine, .. } => {
                self.starts += 1;
                format!("a start of controller machine {machine}")
            }
            ProviderCmd::Stop { graceful: false, machine, .. } => {
                self.heals += 1;
                format!("a heal (stop at once) of machine {machine}")
            }
            _ => return,
        };
        let Some((reach, desired)) = reach(world, *slot) else { return };
        if reach * 2 > desired {
            return;
        }
        let since = self.minority_since.get(slot).copied().unwrap_or(world.now);
        let allowance = std::time::Duration::from_millis(CONTACT_WINDOW_MS + SAMPLING_SLACK_MS);
        if world.now - since <= allowance {
            self.stale_view += 1;
            return;
        }
        let detail = format!(
            "slot {slot} asked for {what} while it reached only {reach} of {desired} desired managers, for {:.1}s (contact window {:.1}s)",
            (world.now - since).as_secs_f64(),
            allowance.as_secs_f64()
        );
        self.violations.push(Violation { invariant: NAME, at: world.now, slots: vec![*slot], detail });
    }

    fn on_tick(&mut self, world: &World<'_>) {
        for slot in 0..world.cluster.slots.len() {
            let s = &world.cluster.slots[slot];
            let minority =
                s.role == Role::Manager && s.is_live() && reach(world, slot).is_some_and(|(r, d)| r * 2 <= d);
            if minority {
                self.minority_since.entry(slot).or_insert(world.now);
            } else {
                self.minority_since.remove(&slot);
            }
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        vec![Figure {
            name: "checked".into(),
            value: format!(
                "{} controller starts, {} heals; {} of them by a manager cut off from the majority for less than the contact window (stale view)",
                self.starts, self.heals, self.stale_view
            ),
        }]
    }
}
