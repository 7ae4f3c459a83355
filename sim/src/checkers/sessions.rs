//! Invariant `sessions`: every live agent whose machine is alive (in the
//! state of some live manager it reaches), holds a session (open at both ends)
//! with a live manager it can reach, within `Bounds::session_reconnect` of
//! when that became required: after its manager failed (crashed, froze or
//! was cut off), after its own start or thaw, or after a partition moved.
//! A manager counts only if the agent can find it: the agent's view holds
//! it (in any state, or the agent dials it among every manager it knows), or
//! it holds the agent as an active member (its probes introduce it).
//! Also measures how long agents went without a session (all episodes,
//! and those that began with the loss of their manager), and the session
//! spread over the managers in the settled cluster before the liveness
//! phase's probe crash.
//!
//! Owns the per-agent stranding clocks. Must never read a session from the
//! agent's core alone: the simulator's link table must agree that both
//! ends are open.

use std::collections::BTreeMap;

use jujud::core::state::agents;
use jujud::core::{NodeId, Role};

use super::{Checker, FaultNote, Figure, Findings, Phase, Violation, World, median_worst};
use crate::queue::VTime;

const NAME: &str = "sessions";

/// A stranding episode: since when, and whether its manager was lost.
#[derive(Clone, Copy, Debug)]
struct Stranded {
    since: VTime,
    manager_lost: bool,
    reported: bool,
}

/// The session spread: sessions per live manager.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spread {
    pub min: usize,
    pub max: usize,
    pub mean: f64,
    pub managers: usize,
}

impl Spread {
    /// The larger deviation from the mean, in percent.
    pub fn deviation_percent(&self) -> f64 {
        if self.mean == 0.0 {
            return 0.0;
        }
        let worst = (self.max as f64 - self.mean).max(self.mean - self.min as f64);
        100.0 * worst / self.mean
    }
}

/// The sessions checker.
#[derive(Debug, Default)]
pub struct Sessions {
    stranded: BTreeMap<usize, Stranded>,
    /// The manager each agent last held a good session with.
    last_manager: BTreeMap<usize, usize>,
    reconnects: Vec<VTime>,
    after_loss: Vec<VTime>,
    spread: Option<Spread>,
    probed: bool,
    violations: Findings,
}

/// Each eligible agent's verdict: `Some(manager)` if it holds a good
/// session, `None` if it lacks one.
fn verdicts(world: &World<'_>) -> Vec<(usize, Option<usize>)> {
    let c = world.cluster;
    let open: BTreeMap<usize, usize> = c.sessions.open_links().collect();
    let managers: Vec<usize> =
        (0..c.slots.len()).filter(|&m| c.slots[m].role == Role::Manager && c.slots[m].is_live()).collect();
    let mut out = Vec::new();
    for (a, s) in c.slots.iter().enumerate() {
        let Some(agent) = s.node().and_then(|n| n.agent()).filter(|_| s.is_live() && s.agent.is_some()) else {
            continue;
        };
        if agent.is_gone() || !managers.iter().any(|&m| c.reachable(a, m)) {
            continue;
        }
        let good = agent
            .session_manager()
            .and_then(|id| c.slot_of(id))
            .filter(|&m| managers.contains(&m) && c.reachable(a, m) && open.get(&a) == Some(&m));
        // Without a session, it is owed one only if a manager it reaches
        // holds its machine alive (a machine whose only record was lost
        // with a replaced manager has no agent to serve: finding H).
        let machine = s.agent.as_ref().map(|x| x.machine.as_str()).unwrap_or_default();
        let known = |m: usize| {
            c.slots[m]
                .node()
                .and_then(|n| n.state())
                .is_some_and(|st| agents::machine_life(&st.replica, machine) == agents::MachineLife::Alive)
        };
        // Nor from a manager neither end has ever heard of: one that joined
        // and was cut off with this agent before their SWIM views met has
        // no way to be found (seen: seed 848440230, a manager booted 0.2 s
        // before a partition left it alone with two agents).
        let agent_knows: std::collections::BTreeSet<NodeId> = if good.is_none() {
            s.node().map(|n| n.members().into_iter().map(|r| r.identity.id).collect()).unwrap_or_default()
        } else {
            Default::default()
        };
        let me = s.disk.id;
        let findable = |m: usize| {
            agent_knows.contains(&c.slots[m].disk.id) || c.slots[m].node().is_some_and(|n| n.active_ids().contains(&me))
        };
        if good.is_none() && !managers.iter().any(|&m| c.reachable(a, m) && known(m) && findable(m)) {
            continue;
        }
        out.push((a, good));
    }
    out
}

fn spread(world: &World<'_>) -> Spread {
    let c = world.cluster;
    let mut per: BTreeMap<usize, usize> = (0..c.slots.len())
        .filter(|&m| c.slots[m].role == Role::Manager && c.slots[m].is_live())
        .map(|m| (m, 0))
        .collect();
    for (_, m) in c.sessions.open_links() {
        if let Some(n) = per.get_mut(&m) {
            *n += 1;
        }
    }
    let total: usize = per.values().sum();
    Spread {
        min: per.values().copied().min().unwrap_or(0),
        max: per.values().copied().max().unwrap_or(0),
        mean: total as f64 / per.len().max(1) as f64,
        managers: per.len(),
    }
}

impl Sessions {
    fn settle(&mut self, agent: usize, now: VTime, manager: usize) {
        if let Some(s) = self.stranded.remove(&agent) {
            self.reconnects.push(now - s.since);
            if s.manager_lost {
                self.after_loss.push(now - s.since);
            }
        }
        self.last_manager.insert(agent, manager);
    }
}

impl Checker for Sessions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_fault(&mut self, world: &World<'_>, note: &FaultNote) {
        if world.phase == Phase::Liveness && matches!(note, FaultNote::Crash { .. }) {
            self.probed = true;
        }
    }

    fn on_tick(&mut self, world: &World<'_>) {
        let now = world.now;
        let bound = world.bounds.session_reconnect;
        let verdicts = verdicts(world);
        let eligible: std::collections::BTreeSet<usize> = verdicts.iter().map(|(a, _)| *a).collect();
        self.stranded.retain(|a, _| eligible.contains(a));
        let mut all_good = true;
        for (a, good) in verdicts {
            if let Some(m) = good {
                self.settle(a, now, m);
                continue;
            }
            all_good = false;
            let c = world.cluster;
            let lost = self.last_manager.get(&a).is_some_and(|&m| !c.slots[m].is_live() || !c.reachable(a, m));
            let s = self.stranded.entry(a).or_insert(Stranded { since: now, manager_lost: lost, reported: false });
            if now - s.since > bound && !s.reported {
                s.reported = true;
                let detail = format!(
                    "agent in slot {a} has been without a session with a live, reachable manager for {:.3}s (bound {:.3}s)",
                    (now - s.since).as_secs_f64(),
                    bound.as_secs_f64()
                );
                self.violations.push(Violation { invariant: NAME, at: now, slots: vec![a], detail });
            }
        }
        if world.phase == Phase::Liveness && !self.probed && all_good && self.stranded.is_empty() {
            self.spread = Some(spread(world));
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        let mut f = vec![
            Figure {
                name: "time without a session, every episode".into(),
                value: median_worst(&mut self.reconnects.clone()),
            },
            Figure {
                name: "reconnection after the loss of the agent's manager".into(),
                value: median_worst(&mut self.after_loss.clone()),
            },
        ];
        if let Some(s) = &self.spread {
            f.push(Figure {
                name: "session spread before the probe crash".into(),
                value: format!(
                    "min {} max {} mean {:.1} sessions over {} managers ({:.1}% from even at worst)",
                    s.min,
                    s.max,
                    s.mean,
                    s.managers,
                    s.deviation_percent()
                ),
            });
        }
        f
    }

    fn samples(&self) -> Vec<(&'static str, Vec<VTime>)> {
        vec![("reconnect", self.reconnects.clone()), ("reconnect-after-manager-loss", self.after_loss.clone())]
    }
}
