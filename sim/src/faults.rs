//! Fault profiles and the fault injector of the safety phase: named profiles
//! (`none`, `calm`, `default`, `harsh`) and randomised ones for the swarm,
//! and the choice of the next fault given which nodes are still healthy.
//!
//! Owns fault *policy* (what, where, how long). Must never apply a fault
//! itself (the run loop does, and schedules the matching recovery), and
//! must never fault more than a minority of nodes at once.

use std::fmt;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::network::{NetParams, PartitionKind};

/// Every partition kind, in the order weights are drawn.
pub const PARTITION_KINDS: [PartitionKind; 5] = [
    PartitionKind::Symmetric,
    PartitionKind::OneWay,
    PartitionKind::IsolateOne,
    PartitionKind::Halves,
    PartitionKind::Swizzle,
];

/// An inclusive range of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl MsRange {
    pub const fn new(min_ms: u64, max_ms: u64) -> Self {
        MsRange { min_ms, max_ms }
    }

    /// A uniform draw in the range.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> u64 {
        rng.random_range(self.min_ms..=self.max_ms.max(self.min_ms))
    }
}

/// Relative weights of the node and path faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultWeights {
    pub crash: u32,
    pub pause: u32,
    pub partition: u32,
    pub clog: u32,
    pub leave: u32,
}

impl FaultWeights {
    fn total(&self) -> u32 {
        self.crash + self.pause + self.partition + self.clog + self.leave
    }
}

/// Everything random about the safety phase of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultParams {
    /// Profile name, for the summary and the replay command.
    pub name: String,
    /// The network during the safety phase.
    pub net: NetParams,
    /// Mean time between two injected faults; 0 injects none.
    pub mean_interval_ms: u64,
    pub weights: FaultWeights,
    /// Chance that a crashed node keeps its data dir (else it comes back
    /// with a fresh node id, as a new machine would).
    pub keep_disk_probability: f64,
    /// How long a crashed or departed node stays down.
    pub downtime: MsRange,
    /// Chance that a pause is a short stall (CPU starvation) rather than a
    /// long freeze (SIGSTOP, a VM migration).
    pub short_pause_probability: f64,
    pub short_pause: MsRange,
    pub long_pause: MsRange,
    pub partition: MsRange,
    /// How often a swizzle moves one node across.
    pub swizzle_step: MsRange,
    pub clog: MsRange,
    /// Largest clock drift, in ppm either way (10,000 ppm = 1%).
    pub drift_max_ppm: i32,
    /// Chance that a crash, pause or leave targets a manager (when one is
    /// healthy) rather than any node: the HA scenarios.
    pub manager_share: f64,
    /// Chance that a partition is a manager-minority one.
    pub minority_partition_share: f64,
}

impl fmt::Display for FaultParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: loss {:.2}% dup {:.2}% tail {:.1}% fault every ~{} ms (crash {} pause {} partition {} clog {} leave {}) drift ±{} ppm, managers targeted {:.0}%, manager-minority partitions {:.0}%",
            self.name,
            self.net.loss * 100.0,
            self.net.duplicate_probability * 100.0,
            self.net.tail_probability * 100.0,
            self.mean_interval_ms,
            self.weights.crash,
            self.weights.pause,
            self.weights.partition,
            self.weights.clog,
            self.weights.leave,
            self.drift_max_ppm,
            self.manager_share * 100.0,
            self.minority_partition_share * 100.0
        )
    }
}

/// Profile names accepted by `--faults`.
pub const PROFILE_NAMES: [&str; 6] = ["none", "calm", "default", "harsh", "ha", "random"];

impl FaultParams {
    /// A named profile; `random` draws its parameters from `rng`.
    pub fn profile(name: &str, rng: &mut ChaCha8Rng) -> Option<FaultParams> {
        Some(match name {
            "none" => Self::none(),
            "calm" => Self::calm(),
            "default" => Self::default_profile(),
            "harsh" => Self::harsh(),
            "ha" => Self::ha(),
            "random" => Self::random(rng),
            _ => return None,
        })
    }

    /// A perfect LAN and no faults at all (no skew either).
    pub fn none() -> FaultParams {
        FaultParams {
            name: "none".into(),
            net: NetParams::lan(),
            mean_interval_ms: 0,
            weights: FaultWeights { crash: 0, pause: 0, partition: 0, clog: 0, leave: 0 },
            keep_disk_probability: 1.0,
            downtime: MsRange::new(1_000, 10_000),
            short_pause_probability: 1.0,
            short_pause: MsRange::new(50, 300),
            long_pause: MsRange::new(1_000, 5_000),
            partition: MsRange::new(2_000, 20_000),
            swizzle_step: MsRange::new(500, 3_000),
            clog: MsRange::new(100, 3_000),
            drift_max_ppm: 0,
            manager_share: 0.0,
            minority_partition_share: 0.0,
        }
    }

    /// The HA scenarios: managers killed, frozen or cut off past the
    /// healing grace (`genesis::SIM_HA_GRACE_MS`), a fault every ~6 s,
    /// most of them on managers, and partitions that isolate a minority of
    /// the managers; 1% loss.
    pub fn ha() -> FaultParams {
        FaultParams {
            name: "ha".into(),
            net: NetParams { loss: 0.01, ..NetParams::lan() },
            mean_interval_ms: 6_000,
            weights: FaultWeights { crash: 3, pause: 3, partition: 3, clog: 1, leave: 0 },
            keep_disk_probability: 0.8,
            downtime: MsRange::new(2_000, 20_000),
            short_pause_probability: 0.2,
            long_pause: MsRange::new(3_000, 15_000),
            partition: MsRange::new(2_000, 30_000),
            drift_max_ppm: 10_000,
            manager_share: 0.8,
            minority_partition_share: 0.7,
            ..Self::none()
        }
    }

    /// 0.5% loss, rare crashes and short stalls, ±0.1% drift.
    pub fn calm() -> FaultParams {
        FaultParams {
            name: "calm".into(),
            net: NetParams { loss: 0.005, ..NetParams::lan() },
            mean_interval_ms: 30_000,
            weights: FaultWeights { crash: 3, pause: 2, partition: 0, clog: 0, leave: 1 },
            drift_max_ppm: 1_000,
            ..Self::none()
        }
    }

    /// 1% loss, 0.5% duplication, a fault every ~8 s of every kind,
    /// ±1% drift.
    pub fn default_profile() -> FaultParams {
        FaultParams {
            name: "default".into(),
            net: NetParams { loss: 0.01, duplicate_probability: 0.005, ..NetParams::lan() },
            mean_interval_ms: 8_000,
            weights: FaultWeights { crash: 3, pause: 3, partition: 3, clog: 2, leave: 1 },
            keep_disk_probability: 0.7,
            short_pause_probability: 0.6,
            drift_max_ppm: 10_000,
            manager_share: 0.3,
            minority_partition_share: 0.2,
            ..Self::none()
        }
    }

    /// 5% loss, 2% duplication, a 5% long tail, a fault every ~3 s with
    /// long partitions and freezes.
    pub fn harsh() -> FaultParams {
        FaultParams {
            name: "harsh".into(),
            net: NetParams {
                loss: 0.05,
                duplicate_probability: 0.02,
                tail_probability: 0.05,
                reorder_probability: 0.05,
                ..NetParams::lan()
            },
            mean_interval_ms: 3_000,
            weights: FaultWeights { crash: 3, pause: 3, partition: 4, clog: 3, leave: 1 },
            keep_disk_probability: 0.5,
            short_pause_probability: 0.4,
            long_pause: MsRange::new(1_000, 15_000),
            partition: MsRange::new(2_000, 40_000),
            drift_max_ppm: 10_000,
            manager_share: 0.3,
            minority_partition_share: 0.2,
            ..Self::none()
        }
    }

    /// Parameters drawn between `calm` and `harsh` (the swarm's profile).
    pub fn random(rng: &mut ChaCha8Rng) -> FaultParams {
        let permille = |rng: &mut ChaCha8Rng, max: u32| f64::from(rng.random_range(0..=max)) / 1000.0;
        let net = NetParams {
            loss: permille(rng, 50),
            duplicate_probability: permille(rng, 20),
            tail_probability: permille(rng, 50),
            reorder_probability: permille(rng, 50),
            ..NetParams::lan()
        };
        let weight = |rng: &mut ChaCha8Rng| rng.random_range(0..=4u32);
        FaultParams {
            name: "random".into(),
            net,
            mean_interval_ms: rng.random_range(2_000..=30_000),
            weights: FaultWeights {
                crash: weight(rng),
                pause: weight(rng),
                partition: weight(rng),
                clog: weight(rng),
                leave: rng.random_range(0..=1),
            },
            keep_disk_probability: permille(rng, 1000),
            short_pause_probability: permille(rng, 1000),
            long_pause: MsRange::new(1_000, rng.random_range(2_000..=15_000)),
            partition: MsRange::new(1_000, rng.random_range(2_000..=40_000)),
            drift_max_ppm: rng.random_range(0..=10_000),
            manager_share: permille(rng, 800),
            minority_partition_share: permille(rng, 700),
            ..Self::none()
        }
    }
}

/// A fault the injector wants now; the run loop applies it and schedules
/// the recovery after the given duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Crash { slot: usize, keep_disk: bool, downtime_ms: u64 },
    Leave { slot: usize, downtime_ms: u64 },
    Pause { slot: usize, duration_ms: u64 },
    Partition { kind: PartitionKind, duration_ms: u64 },
    Clog { from: usize, to: usize, duration_ms: u64 },
}

/// What the injector may touch right now.
pub struct Candidates<'a> {
    /// Slots running and not paused (may be crashed, paused or left).
    pub healthy: &'a [usize],
    /// The healthy ones that are managers.
    pub managers: &'a [usize],
    /// Total number of slots (stopped instances' too: a clog may pick any).
    pub slots: usize,
    /// Slots that may still run (not stopped for good).
    pub alive: usize,
    /// Slots currently crashed, departed or paused (and not stopped for good).
    pub faulty: usize,
    /// Whether a partition is active (only one at a time).
    pub partitioned: bool,
}

/// Most nodes down or paused at once: a minority (at least one when there
/// are two or more nodes).
pub fn max_faulty(slots: usize) -> usize {
    if slots < 2 { 0 } else { ((slots - 1) / 2).max(1) }
}

/// The wait before the next fault: uniform in 0..=2×mean, so the mean is
/// right without floating-point logarithms.
pub fn next_interval_ms(params: &FaultParams, rng: &mut ChaCha8Rng) -> Option<u64> {
    (params.mean_interval_ms > 0).then(|| rng.random_range(1..=2 * params.mean_interval_ms))
}

/// Picks the next fault, or `None` when the chosen kind is not possible
/// right now (too many nodes faulty, a partition already active).
pub fn choose(params: &FaultParams, c: &Candidates<'_>, rng: &mut ChaCha8Rng) -> Option<Plan> {
    let w = params.weights;
    let total = w.total();
    if total == 0 || c.slots < 2 {
        return None;
    }
    let mut pick = rng.random_range(0..total);
    let node_fault_ok = c.faulty < max_faulty(c.alive) && !c.healthy.is_empty();
    let any = |rng: &mut ChaCha8Rng| {
        if !c.managers.is_empty() && params.manager_share > 0.0 && rng.random_bool(params.manager_share) {
            c.managers[rng.random_range(0..c.managers.len())]
        } else {
            c.healthy[rng.random_range(0..c.healthy.len())]
        }
    };
    if pick < w.crash {
        return node_fault_ok.then(|| Plan::Crash {
            slot: any(rng),
            keep_disk: rng.random_bool(params.keep_disk_probability),
            downtime_ms: params.downtime.draw(rng),
        });
    }
    pick -= w.crash;
    if pick < w.pause {
        let range =
            if rng.random_bool(params.short_pause_probability) { params.short_pause } else { params.long_pause };
        return node_fault_ok.then(|| Plan::Pause { slot: any(rng), duration_ms: range.draw(rng) });
    }
    pick -= w.pause;
    if pick < w.partition {
        let minority = params.minority_partition_share > 0.0 && rng.random_bool(params.minority_partition_share);
        let kind = if minority {
            PartitionKind::ManagerMinority
        } else {
            PARTITION_KINDS[rng.random_range(0..PARTITION_KINDS.len())]
        };
        return (!c.partitioned).then(|| Plan::Partition { kind, duration_ms: params.partition.draw(rng) });
    }
    pick -= w.partition;
    if pick < w.clog {
        let from = rng.random_range(0..c.slots);
        let to = (from + rng.random_range(1..c.slots)) % c.slots;
        return Some(Plan::Clog { from, to, duration_ms: params.clog.draw(rng) });
    }
    node_fault_ok.then(|| Plan::Leave { slot: any(rng), downtime_ms: params.downtime.draw(rng) })
}

/// A scheduled step of the fault injector: the next injection, or the
/// recovery from an earlier fault. Stale recoveries (the fault was already
/// undone, e.g. by the liveness phase) are ignored by their epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Time to inject the next fault.
    NextFault,
    /// Bring a crashed or departed node back, if it is still down from the
    /// same fault (`epoch` is the slot's epoch when it went down).
    Restart { slot: usize, epoch: u32 },
    /// Thaw a paused node, if it is still in the same pause.
    Resume { slot: usize, pause: u32 },
    /// End the partition with this id, if it is still the current one.
    Heal { partition: u32 },
    /// Roll the swizzle partition with this id one step.
    Swizzle { partition: u32 },
    /// A clog on `from -> to` ends.
    Unclog { from: usize, to: usize },
    /// Apply the scripted fault with this index (`RunConfig::script`).
    Scripted(usize),
    /// Time for the workload's next client write.
    Write,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_profile_name_resolves() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for name in PROFILE_NAMES {
            assert_eq!(FaultParams::profile(name, &mut rng).unwrap().name, name);
        }
        assert!(FaultParams::profile("apocalypse", &mut rng).is_none());
    }

    #[test]
    fn never_faults_a_majority() {
        assert_eq!(max_faulty(1), 0);
        assert_eq!(max_faulty(2), 1);
        assert_eq!(max_faulty(5), 2);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let params = FaultParams {
            weights: FaultWeights { crash: 1, pause: 1, partition: 0, clog: 0, leave: 1 },
            ..FaultParams::harsh()
        };
        let c = Candidates { healthy: &[0, 1, 2], managers: &[], slots: 5, alive: 5, faulty: 2, partitioned: false };
        for _ in 0..100 {
            assert_eq!(choose(&params, &c, &mut rng), None);
        }
    }

    #[test]
    fn clogs_never_target_the_sender() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let params = FaultParams {
            weights: FaultWeights { crash: 0, pause: 0, partition: 0, clog: 1, leave: 0 },
            ..FaultParams::harsh()
        };
        let c = Candidates { healthy: &[0, 1], managers: &[], slots: 2, alive: 2, faulty: 0, partitioned: false };
        for _ in 0..100 {
            let Some(Plan::Clog { from, to, .. }) = choose(&params, &c, &mut rng) else { panic!() };
            assert_ne!(from, to);
        }
    }
}
