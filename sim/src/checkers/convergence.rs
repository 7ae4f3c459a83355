//! Invariant `convergence`: every live node's active set (`active_ids()`
//! plus itself) equals the true live set within the stated bound: after
//! the initial join, after the heal that starts the liveness phase (views
//! converged once the false-down window has passed; the figure reported is
//! when they last became equal), and after a crash in the liveness phase.
//! Between those episodes in the liveness phase, converged views stay
//! equal to the truth (nothing may move them); and at the end every live
//! node's active members match the live identities exactly (generation
//! included).
//!
//! Owns only its episodes and findings. Must never sample views more often
//! than the tick, and stops sampling once an episode converged (views are
//! O(N) each, so a sample is O(N^2)).

use std::collections::BTreeSet;
use std::time::Duration;

use jujud::core::{Identity, MemberState, NodeId};

use super::{Checker, FaultNote, Figure, Findings, Phase, Violation, World};
use crate::queue::VTime;

const NAME: &str = "convergence";

/// Views are sampled at least this often (the run loop's tick) while an
/// episode is open...
const SAMPLE_MIN: Duration = Duration::from_millis(100);
/// ...and this often to check that converged views stay converged (a
/// divergence with no fault persists, so a coarser sample still sees it).
const STABLE_SAMPLE_MIN: Duration = Duration::from_secs(1);
/// ...and once more rarely per this many members, so that a sample (O(N^2))
/// stays affordable: every 1 s at 1,000 members. This is the resolution of
/// the reported convergence times.
const MEMBERS_PER_SAMPLE_STEP: u32 = 100;
/// ...but the join is sampled once more rarely per this many members
/// ([`joined`]).
const JOIN_MEMBERS_PER_SAMPLE_STEP: u32 = 1_000;

/// Most diverging nodes named in one violation.
const MAX_NAMED_NODES: usize = 5;

#[derive(Debug)]
struct Episode {
    what: &'static str,
    since: VTime,
    deadline: VTime,
    /// The episode closes at the first converged sample at or after this.
    /// After the heal it is the false-down window (suspicions raised before
    /// the heal may fire until then); otherwise it is `since`.
    settle_until: VTime,
    /// Since when the views have been converged, if they are: the time
    /// reported is when they last became so.
    converged_since: Option<VTime>,
}

/// The convergence checker.
#[derive(Debug, Default)]
pub struct Convergence {
    episode: Option<Episode>,
    joined_opened: bool,
    /// How long each episode took, in order.
    took: Vec<(&'static str, Duration)>,
    violations: Findings,
}

impl Convergence {
    fn open(&mut self, what: &'static str, since: VTime, bound: Duration, settle: Duration) {
        let (deadline, settle_until) = (since + bound, since + settle);
        self.episode = Some(Episode { what, since, deadline, settle_until, converged_since: None });
    }
}

impl Convergence {
    /// Opens an episode, or pushes an open one's deadline out to cover
    /// this change too (its time is then measured from its start).
    fn open_or_extend(&mut self, what: &'static str, now: VTime, bound: Duration) {
        match &mut self.episode {
            Some(ep) => {
                ep.deadline = ep.deadline.max(now + bound);
                ep.converged_since = None;
            }
            None => self.open(what, now, bound, Duration::ZERO),
        }
    }
}

/// How often views are sampled for `members` nodes while they converge.
pub fn sample_period(members: usize) -> Duration {
    SAMPLE_MIN * (members as u32 / MEMBERS_PER_SAMPLE_STEP).max(1)
}

/// The liveness phase's rule, shared with the run loop: views count as
/// settled at a sample taken at least `settle` after `since` that finds
/// them converged.
pub fn settled(world: &World<'_>, since: VTime, settle: Duration) -> bool {
    let due = world.now.as_nanos().is_multiple_of(sample_period(world.cluster.slots.len()).as_nanos());
    world.now >= since + settle && due && converged(world)
}

/// Whether the views have converged, sampled ten times as often as
/// [`settled`]: the join time the run reports (and the scale table prints)
/// at 100 ms per 1,000 members, 1 s at 10,000 instead of 10 s. A sample
/// that fails stops at the first diverging view, so sampling during a join
/// is cheap; the run asks only until the first success.
pub fn joined(world: &World<'_>) -> bool {
    let members = world.cluster.slots.len() as u32;
    let period = SAMPLE_MIN * (members / JOIN_MEMBERS_PER_SAMPLE_STEP).max(1);
    world.now.as_nanos().is_multiple_of(period.as_nanos()) && converged(world)
}

/// Whether every slot has booted and every live node's view equals the
/// true live set. Stops at the first diverging node, so it is cheap while
/// views still differ; computed once per instant (`World::views`).
pub fn converged(world: &World<'_>) -> bool {
    *world.views.get_or_init(|| matches!(diverging(world, 1), Some(bad) if bad.is_empty()))
}

/// Up to `limit` live slots whose view differs from the truth, with how
/// many members each misses and has extra; empty when converged. `None`
/// before every slot has booted.
fn diverging(world: &World<'_>, limit: usize) -> Option<Vec<(usize, usize, usize)>> {
    // Slots the provider added count from their boot (an episode opens then).
    let initial = world.cluster.initial_slots;
    if world.cluster.slots.iter().take(initial).any(|s| s.epoch == 0) {
        return None;
    }
    let live: Vec<usize> = world.live_slots().collect();
    let truth: BTreeSet<NodeId> = live.iter().map(|&s| world.id_of(s)).collect();
    let mut cache = world.view_cache.borrow_mut();
    cache.set_truth(truth);
    let mut bad = Vec::new();
    for &slot in &live {
        let Some(node) = world.cluster.slots[slot].node() else { continue };
        let (missing, extra) = cache.compare(slot, world.cluster.slots[slot].epoch, node);
        if missing + extra > 0 {
            bad.push((slot, missing, extra));
            if bad.len() >= limit {
                break;
            }
        }
    }
    Some(bad)
}

/// What one slot's view was found to miss and have extra, and for which
/// node state and which truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Compared {
    epoch: u32,
    version: u64,
    active: usize,
    truth: u64,
    missing: usize,
    extra: usize,
}

/// The last comparison of each slot's view with the truth. A node's
/// active set changes only with a membership notification, which moves
/// its view version, so an entry whose epoch, version, active count and
/// truth generation all match is what a fresh comparison would give.
#[derive(Debug, Default)]
pub struct ViewCache {
    truth: BTreeSet<NodeId>,
    /// Bumped whenever the truth set changes.
    truth_gen: u64,
    slots: Vec<Option<Compared>>,
}

impl ViewCache {
    fn set_truth(&mut self, truth: BTreeSet<NodeId>) {
        if truth != self.truth {
            self.truth = truth;
            self.truth_gen += 1;
        }
    }

    /// (missing, extra) of `node`'s view (its active members and itself)
    /// against the truth, from the cache when nothing moved.
    fn compare(&mut self, slot: usize, epoch: u32, node: &jujud::core::Node) -> (usize, usize) {
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        let (version, active) = (node.view_version(), node.active_count());
        if let Some(c) = self.slots[slot]
            && (c.epoch, c.version, c.active, c.truth) == (epoch, version, active, self.truth_gen)
        {
            return (c.missing, c.extra);
        }
        let mut view = node.active_ids();
        view.insert(node.identity().id);
        let (missing, extra) = if view == self.truth {
            (0, 0)
        } else {
            (self.truth.difference(&view).count(), view.difference(&self.truth).count())
        };
        let truth = self.truth_gen;
        self.slots[slot] = Some(Compared { epoch, version, active, truth, missing, extra });
        (missing, extra)
    }
}

/// An identity as (node id, generation), which orders.
fn key(identity: &Identity) -> (NodeId, u64) {
    (identity.id, identity.generation)
}

fn describe(bad: &[(usize, usize, usize)]) -> String {
    let named: Vec<String> = bad
        .iter()
        .take(MAX_NAMED_NODES)
        .map(|(slot, missing, extra)| format!("slot {slot} misses {missing} has {extra} extra"))
        .collect();
    format!("{} nodes diverge: {}", bad.len(), named.join("; "))
}

/// The live slots that the first diverging node does not see.
fn missed_by(world: &World<'_>, observer: usize) -> Vec<usize> {
    let Some(node) = world.cluster.slots[observer].node() else { return Vec::new() };
    let mut view = node.active_ids();
    view.insert(node.identity().id);
    world.live_slots().filter(|&s| !view.contains(&world.id_of(s))).take(MAX_NAMED_NODES).collect()
}

impl Checker for Convergence {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_phase(&mut self, world: &World<'_>) {
        self.open("heal", world.now, world.bounds.convergence, world.bounds.false_down_window);
    }

    fn on_fault(&mut self, world: &World<'_>, note: &FaultNote) {
        if world.phase != Phase::Liveness {
            return;
        }
        // The probe crash, and what the provider and the HA keeper do in
        // the healed cluster: stops (crash or leave) and new instances.
        match note {
            FaultNote::Crash { .. } => self.open_or_extend("crash", world.now, world.bounds.detection),
            FaultNote::Leave { .. } => self.open_or_extend("exit", world.now, world.bounds.detection),
            FaultNote::Restart { .. } => self.open_or_extend("new instance", world.now, world.bounds.join),
            _ => {}
        }
    }

    fn on_tick(&mut self, world: &World<'_>) {
        if !self.joined_opened {
            self.joined_opened = true;
            self.open("join", Duration::ZERO, world.bounds.join, Duration::ZERO);
        }
        let members = world.cluster.slots.len() as u32;
        let step = (members / MEMBERS_PER_SAMPLE_STEP).max(1);
        let due = world.now.as_nanos().is_multiple_of((SAMPLE_MIN * step).as_nanos());
        let stable_due = world.now.as_nanos().is_multiple_of((STABLE_SAMPLE_MIN * step).as_nanos());
        let Some(ep) = &mut self.episode else {
            // Once converged in the liveness phase, nothing may change.
            if world.phase == Phase::Liveness && stable_due && !converged(world) {
                let bad = diverging(world, usize::MAX).unwrap_or_default();
                let detail = format!("views diverged after converging, with no fault: {}", describe(&bad));
                let slots = bad.iter().take(MAX_NAMED_NODES).map(|b| b.0).collect();
                self.violations.push(Violation { invariant: NAME, at: world.now, slots, detail });
                self.open("divergence", world.now, world.bounds.convergence, Duration::ZERO);
            }
            return;
        };
        let at_deadline = world.now >= ep.deadline;
        let settling = world.now < ep.settle_until;
        // Fine samples, but coarse ones while converged and settling (a
        // divergence that comes and goes between two coarse samples is missed;
        // the reported time can then be early by up to one coarse sample).
        let sample_now = if ep.converged_since.is_some() && settling { stable_due } else { due };
        if !at_deadline && !sample_now {
            return;
        }
        if converged(world) {
            ep.converged_since.get_or_insert(world.now);
        } else {
            ep.converged_since = None;
        }
        if let Some(since) = ep.converged_since.filter(|_| !settling) {
            self.took.push((ep.what, since - ep.since));
            self.episode = None;
        } else if at_deadline {
            let bad = diverging(world, usize::MAX).unwrap_or_default();
            let missed = bad.first().map(|b| missed_by(world, b.0)).unwrap_or_default();
            let detail = format!(
                "not converged {:.3}s after {} (bound {:.3}s): {}; the first misses live slots {missed:?}",
                (world.now - ep.since).as_secs_f64(),
                ep.what,
                (ep.deadline - ep.since).as_secs_f64(),
                describe(&bad)
            );
            let slots = bad.iter().take(MAX_NAMED_NODES).map(|b| b.0).collect();
            self.violations.push(Violation { invariant: NAME, at: world.now, slots, detail });
            self.episode = None;
        }
    }

    fn finish(&mut self, world: &World<'_>) {
        let live: Vec<usize> = world.live_slots().collect();
        let truth: BTreeSet<(NodeId, u64)> =
            live.iter().filter_map(|&s| world.cluster.slots[s].identity().map(key)).collect();
        for &slot in &live {
            let Some(node) = world.cluster.slots[slot].node() else { continue };
            let view: BTreeSet<(NodeId, u64)> = node
                .members()
                .iter()
                .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
                .map(|m| key(&m.identity))
                .collect();
            if view != truth {
                let stale: Vec<String> =
                    view.difference(&truth).take(MAX_NAMED_NODES).map(|(id, g)| format!("{id}@{g}")).collect();
                let detail = format!(
                    "at the end, slot {slot} sees {} active identities, truth has {}; not live: [{}]",
                    view.len(),
                    truth.len(),
                    stale.join(", ")
                );
                self.violations.push(Violation { invariant: NAME, at: world.now, slots: vec![slot], detail });
            }
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn samples(&self) -> Vec<(&'static str, Vec<VTime>)> {
        self.took.iter().map(|(what, took)| (*what, vec![*took])).collect()
    }

    fn figures(&self) -> Vec<Figure> {
        self.took
            .iter()
            .map(|(what, took)| Figure {
                name: format!("converged after {what}"),
                value: format!("{:.3}s", took.as_secs_f64()),
            })
            .collect()
    }
}
