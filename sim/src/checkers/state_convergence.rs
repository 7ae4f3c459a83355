//! Invariant `state-convergence`: after the heal, every live manager holds
//! the same replicated state within `Bounds::state_convergence` (views
//! converge, then anti-entropy spreads every write): equal version
//! vectors, equal `state_hash()`, and equal status views. No client write
//! is issued after the heal, but managers still write for agents (their
//! reports) and for the singleton workers (instance records, heals): once
//! converged, a divergence must end within `Bounds::state_sync`, and the
//! state is converged at the end (or diverged for less than that).
//!
//! Also owns [`StateProbe`], the comparison the run loop and the checkers
//! share: the run loop samples it on the tick in the liveness phase and
//! hands it to checkers through `World::state`.
//!
//! Must never compare replicas during the safety phase (writes keep them
//! apart, and a comparison costs O(keys) per manager), and never hash
//! replicas whose version vectors already differ.

use std::collections::BTreeMap;
use std::time::Duration;

use jujud::core::state::{StateSync, StatusView, VersionVector};

use super::{Checker, Figure, Findings, Phase, Violation, World, live_replicas};
use crate::cluster::Cluster;
use crate::queue::VTime;

const NAME: &str = "state-convergence";

/// The outcome of one comparison of the live managers' replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every live manager holds the same state (or fewer than two are live).
    Converged,
    /// They differ; the detail says how, and the slots involved.
    Diverged { detail: String, slots: Vec<usize> },
}

/// One live manager's replica as last compared: its version (with own
/// operations not yet durable), hash and status view. A replica whose
/// process and version did not change holds the same state.
#[derive(Debug)]
struct Seen {
    epoch: u32,
    vv: VersionVector,
    own_seq: u64,
    hash: u64,
    view: StatusView,
}

/// Compares the live managers' replicas. Hashing and building a view is
/// O(keys x writers) per replica, so each replica's are cached until its
/// process or version changes, and computed only when every live manager
/// holds the same versions (comparing versions is cheap). Comparing two
/// views is O(keys) too, so the hash-and-view verdict is kept until a
/// replica's cache entry or the set of live managers changes.
#[derive(Debug, Default)]
pub struct StateProbe {
    seen: BTreeMap<usize, Seen>,
    /// Bumped whenever an entry of `seen` is (re)computed.
    revision: u64,
    /// The verdict of the hash-and-view comparison, with the revision and
    /// the live slots it was reached for.
    compared: Option<(u64, Vec<usize>, Verdict)>,
    verdict: Option<Verdict>,
}

impl StateProbe {
    /// The last verdict, if the probe ran.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    /// Whether the last verdict was `Converged`.
    pub fn converged(&self) -> bool {
        self.verdict() == Some(&Verdict::Converged)
    }

    /// Compares the replicas now (a read of the cluster only).
    pub fn sample(&mut self, cluster: &Cluster) {
        let live: Vec<(usize, &StateSync)> = live_replicas(cluster).collect();
        self.seen.retain(|slot, _| live.iter().any(|(s, _)| s == slot));
        self.verdict = Some(self.compare(cluster, &live));
    }

    fn compare(&mut self, cluster: &Cluster, live: &[(usize, &StateSync)]) -> Verdict {
        let Some((first, st)) = live.first() else { return Verdict::Converged };
        let vv = st.replica.version();
        for (other, theirs) in live.iter().map(|(s, t)| (*s, t.replica.version())) {
            if theirs != vv {
                let lacks = |a: &VersionVector, b: &VersionVector| -> u64 {
                    b.iter().map(|(actor, &s)| s.saturating_sub(a.get(actor).copied().unwrap_or(0))).sum()
                };
                let detail = format!(
                    "slot {first} and slot {other} hold different versions ({} operations only at slot {other}, {} only at slot {first})",
                    lacks(&vv, &theirs),
                    lacks(&theirs, &vv)
                );
                return Verdict::Diverged { detail, slots: vec![*first, other] };
            }
        }
        for (slot, st) in live {
            let epoch = cluster.slots[*slot].epoch;
            let (vv, own_seq) = (st.replica.version(), st.replica.own_seq());
            let fresh = self.seen.get(slot).is_some_and(|s| s.epoch == epoch && s.vv == vv && s.own_seq == own_seq);
            if !fresh {
                let (hash, view) = (st.replica.state_hash(), st.view());
                self.seen.insert(*slot, Seen { epoch, vv, own_seq, hash, view });
                self.revision += 1;
            }
        }
        let slots: Vec<usize> = live.iter().map(|(s, _)| *s).collect();
        if let Some((revision, compared, verdict)) = &self.compared
            && *revision == self.revision
            && *compared == slots
        {
            return verdict.clone();
        }
        let verdict = self.compare_seen(&slots);
        self.compared = Some((self.revision, slots, verdict.clone()));
        verdict
    }

    /// Compares the cached hashes, then views, of `slots` (all in `seen`).
    fn compare_seen(&self, slots: &[usize]) -> Verdict {
        let first = &slots[0];
        let reference = &self.seen[first];
        for other in slots.iter().skip(1) {
            let theirs = &self.seen[other];
            let what = if theirs.hash != reference.hash {
                "the same versions but different state (hash)"
            } else if theirs.view != reference.view {
                "equal state hashes but different status views"
            } else {
                continue;
            };
            return Verdict::Diverged {
                detail: format!("slot {first} and slot {other} hold {what}"),
                slots: vec![*first, *other],
            };
        }
        Verdict::Converged
    }
}

/// The total number of operations in the largest live replica.
fn largest_replica_ops(world: &World<'_>) -> u64 {
    world.live_replicas().map(|(_, st)| st.replica.version().values().sum::<u64>()).max().unwrap_or(0)
}

/// The state-convergence checker.
#[derive(Debug, Default)]
pub struct StateConvergence {
    healed: bool,
    /// Since the heal, with the deadline, until first converged.
    open: Option<(VTime, VTime)>,
    /// How long after the heal the state converged.
    took: Option<Duration>,
    /// A divergence after converging was reported (once is enough).
    diverged: bool,
    /// Since when the replicas have differed again after converging.
    apart_since: Option<VTime>,
    /// The size of the largest live replica at the end.
    size: Option<String>,
    violations: Findings,
}

impl StateConvergence {
    fn report(&mut self, world: &World<'_>, what: &str) {
        let (detail, slots) = match world.state.verdict() {
            Some(Verdict::Diverged { detail, slots }) => (format!("{what}: {detail}"), slots.clone()),
            _ => (what.to_string(), Vec::new()),
        };
        self.violations.push(Violation { invariant: NAME, at: world.now, slots, detail });
    }
}

impl Checker for StateConvergence {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_phase(&mut self, world: &World<'_>) {
        let bound = world.bounds.state_convergence(largest_replica_ops(world));
        self.open = Some((world.now, world.now + bound));
        self.healed = true;
    }

    fn on_tick(&mut self, world: &World<'_>) {
        if world.phase != Phase::Liveness || !self.healed {
            return;
        }
        let converged = world.state.converged();
        match self.open {
            Some((since, _)) if converged => {
                self.took = Some(world.now - since);
                self.open = None;
            }
            Some((since, deadline)) if world.now >= deadline => {
                let what = format!(
                    "state not converged {:.3}s after heal (bound {:.3}s)",
                    (world.now - since).as_secs_f64(),
                    (deadline - since).as_secs_f64()
                );
                self.report(world, &what);
                self.open = None;
            }
            None if self.took.is_some() && converged => self.apart_since = None,
            None if self.took.is_some() && !self.diverged => {
                let since = *self.apart_since.get_or_insert(world.now);
                if world.now - since > world.bounds.state_sync {
                    self.report(
                        world,
                        "state diverged after converging, and stayed apart longer than the state-sync bound",
                    );
                    self.diverged = true;
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, world: &World<'_>) {
        let largest = world.live_replicas().max_by_key(|(_, st)| st.replica.len());
        self.size = largest.map(|(_, st)| {
            let vv = st.replica.version();
            format!("{} keys, {} operations by {} writers", st.replica.len(), vv.values().sum::<u64>(), vv.len())
        });
        let apart_long = self.apart_since.is_none_or(|s| world.now - s > world.bounds.state_sync);
        if self.healed && self.violations.total() == 0 && !world.state.converged() && apart_long {
            self.report(world, "state not converged at the end of the run");
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        let value = self.took.map_or("never".into(), |t| format!("{:.3}s", t.as_secs_f64()));
        let mut figures = vec![Figure { name: "state converged after heal".into(), value }];
        if let Some(size) = &self.size {
            figures.push(Figure { name: "largest live replica".into(), value: size.clone() });
        }
        figures
    }

    fn samples(&self) -> Vec<(&'static str, Vec<VTime>)> {
        self.took.map(|t| vec![("state-converged", vec![t])]).unwrap_or_default()
    }
}
