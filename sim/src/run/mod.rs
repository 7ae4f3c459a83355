//! One simulation run: builds the cluster from a seed, plays the safety
//! phase (random faults, invariants checked on every event), then the
//! liveness phase (faults stop, the network heals, everything restarts or
//! resumes, the cluster must converge; then one more crash must be
//! detected), and returns a report.
//!
//! Owns the run loop, the phase timeline and the application of faults.
//! Must never read real time except to report wall-clock speed, and must
//! draw every random choice from rngs derived from the one seed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jujud::core::Timing;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bounds::{Bounds, FALSE_DOWN_MAX_LOSS};
use crate::checkers::state_convergence::StateProbe;
use crate::checkers::{self, Checker, FaultNote, Phase, World};
use crate::cluster::{AGENT_QUOTA_EXTRA, Cluster, ClusterConfig, ClusterRngs, Ev};
use crate::faults::{self, Candidates, Control, FaultParams, Plan};
use crate::network::{Partition, PartitionKind};
use crate::planted::PlantedBug;
use crate::queue::VTime;
use crate::report::{RunReport, describe_event, describe_note, event_kind, fault_kind};
use crate::trace::{Fnv1a, TraceKind};
use crate::truth::Truth;
use crate::workload::{DEFAULT_WRITES_PER_SEC, Workload};

/// Checkers tick (and disks persist) this often in virtual time.
pub const CHECK_TICK: Duration = Duration::from_millis(100);

/// Known peers are persisted to the simulated disk this often.
pub const PERSIST_EVERY_TICKS: u64 = 20;

/// The "slot" of faults that touch the network rather than one node.
const NETWORK: usize = usize::MAX;

/// Streams of the seed's ChaCha8 generator, one per concern, so that a
/// change in how often one concern draws never shifts another's draws.
const STREAM_PARAMS: u64 = 1;
const STREAM_NETWORK: u64 = 2;
const STREAM_NODES: u64 = 3;
const STREAM_FAULTS: u64 = 4;
const STREAM_WORKLOAD: u64 = 6;
const STREAM_DISK: u64 = 7;
const STREAM_AGENTS: u64 = 8;
const STREAM_PROVIDER: u64 = 9;

mod ha;
pub use ha::{ProbeTarget, desired_managers, live_managers};

/// Everything that defines a run; with the build, it defines the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub seed: u64,
    pub managers: usize,
    pub agents: usize,
    /// Length of the safety phase, in virtual seconds.
    pub virtual_secs: u64,
    /// Fault profile name (see `faults::PROFILE_NAMES`).
    pub faults: String,
    pub timing: Timing,
    /// Crash one node in the liveness phase and time its detection.
    pub probe_crash: bool,
    /// A deliberate bug (tests only).
    pub bug: Option<PlantedBug>,
    /// Print every node event and fault as it happens (for replays).
    pub log: bool,
    /// Faults applied at fixed virtual times during the safety phase, on
    /// top of the profile's random ones (tests use profile `none`).
    pub script: Vec<(VTime, Plan)>,
    /// Managers hold replicated state (`--no-state` turns it off).
    pub state: bool,
    /// Mean client writes per virtual second during the safety phase.
    pub writes_per_sec: u32,
    /// Which kind of node the liveness phase's probe crash picks.
    pub probe_target: ProbeTarget,
    /// The state configures the simulated provider (`c/provider`), so the
    /// HA keeper and the provisioner act; `--no-provider` turns it off.
    pub provider: bool,
    /// The workload also issues, revokes and uses join tokens (tests
    /// only; off, the workload draws exactly as before, so traces of runs
    /// without it are unchanged).
    pub tokens: bool,
}

impl RunConfig {
    /// A run with the LAN timing and a probe crash.
    pub fn new(seed: u64, managers: usize, agents: usize, virtual_secs: u64, faults: &str) -> Self {
        RunConfig {
            seed,
            managers,
            agents,
            virtual_secs,
            faults: faults.into(),
            timing: Timing::lan(),
            probe_crash: true,
            bug: None,
            log: false,
            script: Vec::new(),
            state: true,
            writes_per_sec: DEFAULT_WRITES_PER_SEC,
            probe_target: ProbeTarget::Any,
            provider: true,
            tokens: false,
        }
    }

    pub fn members(&self) -> usize {
        self.managers + self.agents
    }
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Where a run is on its timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Random faults.
    Safety,
    /// Healed; waiting for the views to settle.
    Settling,
    /// One node was crashed at `at`; waiting for every view to drop it.
    Probed {
        at: VTime,
    },
    /// Watching the quiet cluster until `until`.
    Observing {
        until: VTime,
    },
    Done,
}

/// The mutable state of a run besides the cluster.
struct Runner {
    cluster: Cluster,
    truth: Truth,
    bounds: Bounds,
    params: FaultParams,
    checkers: Vec<Box<dyn Checker>>,
    phase: Phase,
    rng: ChaCha8Rng,
    partition_id: u32,
    /// Which slots the current partition touches.
    partition_touched: Vec<bool>,
    /// Active clogs per directed path (they may overlap).
    clogs: BTreeMap<(usize, usize), u32>,
    injected: BTreeMap<&'static str, u64>,
    joined_at: Option<VTime>,
    /// Sends counted half-way through the safety phase and at the heal.
    sends_at_half: u64,
    sends_at_heal: u64,
    ticks: u64,
    log: bool,
    script: Vec<(VTime, Plan)>,
    /// Node events seen, by kind.
    events_by_kind: BTreeMap<&'static str, u64>,
    workload: Workload,
    /// The live managers' replicas compared, on the tick after the heal.
    state_probe: StateProbe,
    /// Which kind of node the probe crash picks, and the one it picked.
    probe_target: ProbeTarget,
    probed: Option<usize>,
    /// Whether the views equal the truth, computed at most once per tick
    /// (see `World::views`); emptied at the start of every tick and after
    /// anything the run loop does to the world between two uses.
    views: std::cell::OnceCell<bool>,
    /// Each slot's last compared view (see `World::view_cache`); kept
    /// across ticks, checked against each node's view version.
    view_cache: std::cell::RefCell<crate::checkers::convergence::ViewCache>,
}

/// Runs one simulation to the end.
pub fn run(config: &RunConfig) -> RunReport {
    let wall = Instant::now();
    let params = FaultParams::profile(&config.faults, &mut stream(config.seed, STREAM_PARAMS))
        .unwrap_or_else(|| panic!("unknown fault profile {:?}", config.faults));
    let cluster_config = ClusterConfig {
        managers: config.managers,
        agents: config.agents,
        timing: config.timing.clone(),
        net: params.net.clone(),
        drift_max_ppm: params.drift_max_ppm,
        bug: config.bug,
        state: config.state,
        provider: config.provider,
    };
    let members = config.members();
    let rngs = ClusterRngs {
        net: stream(config.seed, STREAM_NETWORK),
        node: stream(config.seed, STREAM_NODES),
        disk: stream(config.seed, STREAM_DISK),
        agent: stream(config.seed, STREAM_AGENTS),
        provider: stream(config.seed, STREAM_PROVIDER),
    };
    let mut cluster = Cluster::new(&cluster_config, rngs);
    cluster.network.leaky = config.bug == Some(PlantedBug::LeakyPartition);
    cluster.log = config.log;
    // With state, the provider may start agents up to its quota and one
    // replacement manager at a time: the bounds are sized for that many.
    let bound_members = members + if config.state { AGENT_QUOTA_EXTRA + 1 } else { 0 };
    let writes = if config.state { config.writes_per_sec } else { 0 };
    let mut truth = Truth::new(members);
    truth.set_lossy(params.net.loss > FALSE_DOWN_MAX_LOSS, Duration::ZERO);
    let mut r = Runner {
        cluster,
        truth,
        bounds: Bounds::new(&config.timing, bound_members, config.managers),
        params,
        checkers: checkers::all(),
        phase: Phase::Safety,
        rng: stream(config.seed, STREAM_FAULTS),
        partition_id: 0,
        partition_touched: vec![false; members],
        clogs: BTreeMap::new(),
        injected: BTreeMap::new(),
        joined_at: None,
        sends_at_half: 0,
        sends_at_heal: 0,
        ticks: 0,
        log: config.log,
        script: config.script.clone(),
        events_by_kind: BTreeMap::new(),
        workload: Workload::new(stream(config.seed, STREAM_WORKLOAD), writes).with_tokens(config.tokens),
        state_probe: StateProbe::default(),
        views: std::cell::OnceCell::new(),
        view_cache: Default::default(),
        probe_target: config.probe_target,
        probed: None,
    };
    for (i, (at, _)) in config.script.iter().enumerate() {
        r.cluster.schedule(*at, Control::Scripted(i));
    }
    if let Some(gap) = r.workload.next_gap() {
        r.cluster.schedule(gap, Control::Write);
    }
    let heal_at = Duration::from_secs(config.virtual_secs);
    let end_at = r.play(heal_at, config.probe_crash);
    r.finish(config, wall.elapsed(), end_at)
}

impl Runner {
    fn world(&self) -> World<'_> {
        World {
            now: self.cluster.now(),
            phase: self.phase,
            cluster: &self.cluster,
            truth: &self.truth,
            bounds: &self.bounds,
            state: &self.state_probe,
            views: &self.views,
            view_cache: &self.view_cache,
        }
    }

    /// The event loop: events before the next mark (a tick, or the heal)
    /// run first; at a mark, the heal runs, then the tick, which also moves
    /// the liveness phase along. Returns when the run is over.
    fn play(&mut self, heal_at: VTime, probe: bool) -> VTime {
        let mut next_tick = Duration::ZERO;
        let mut stage = Stage::Safety;
        loop {
            let mark = if stage == Stage::Safety { next_tick.min(heal_at) } else { next_tick };
            if self.cluster.queue.peek_time().is_some_and(|t| t < mark) {
                let (at, ev) = self.cluster.queue.pop().expect("peeked");
                self.step(at, ev);
                continue;
            }
            self.cluster.queue.advance_to(mark);
            if stage == Stage::Safety && mark == heal_at {
                self.heal();
                stage = Stage::Settling;
            }
            if mark == next_tick {
                // Whole seconds halve to a multiple of 500 ms, so of the tick.
                self.tick(heal_at / 2);
                next_tick += CHECK_TICK;
                stage = self.advance(stage, heal_at, probe);
                if stage == Stage::Done {
                    return mark;
                }
            }
        }
    }

    /// Moves the liveness phase on, at a tick: once the views have settled
    /// after the heal, crash one node; once the views have converged again
    /// (or the detection bound passed), watch a quiet cluster for one
    /// false-down window; then stop.
    fn advance(&mut self, stage: Stage, heal_at: VTime, probe: bool) -> Stage {
        let now = self.cluster.now();
        let window = self.bounds.false_down_window;
        match stage {
            Stage::Settling => {
                let settled = checkers::convergence::settled(&self.world(), heal_at, window);
                if !settled && now < heal_at + self.bounds.convergence {
                    return stage;
                }
                // The probe crash waits for the state too, so that the
                // acknowledged writes are checked with every manager up.
                let state_bound = self.bounds.state_convergence(self.state_ops_at_heal());
                if !self.state_probe.converged() && now < heal_at + state_bound {
                    return stage;
                }
                // And for the managers to number the desired count again.
                if !self.managers_restored() && now < heal_at + self.bounds.ha_restore {
                    return stage;
                }
                if probe && self.probe_crash() {
                    return Stage::Probed { at: now };
                }
                Stage::Observing { until: now + window }
            }
            Stage::Probed { at } => {
                // A crashed manager is replaced by the HA keeper: the views
                // must then take in the replacement too (at a thousand
                // members its join is the slow part), within the bounds of
                // detection, restoring the managers, and a join.
                let restored = self.managers_restored();
                let converged =
                    now > at && restored && checkers::convergence::settled(&self.world(), at, Duration::ZERO);
                let replaced = self.probed.is_some_and(|s| self.cluster.slots[s].role == jujud::core::Role::Manager)
                    && desired_managers(&self.cluster).is_some();
                let bound = if replaced {
                    self.bounds.detection + self.bounds.ha_restore + self.bounds.convergence
                } else {
                    self.bounds.detection
                };
                if converged || now >= at + bound {
                    return Stage::Observing { until: now + window };
                }
                stage
            }
            Stage::Observing { until } if now >= until => Stage::Done,
            other => other,
        }
    }

    fn step(&mut self, at: VTime, ev: Ev) {
        self.views.take();
        match ev {
            Ev::Control(control) => self.control(control),
            ev => self.cluster.dispatch(at, ev),
        }
        self.sync_slots();
        self.deliver_events();
        self.deliver_sim_notes();
    }

    /// Hands every event the nodes emitted, and every note about client
    /// writes, to every checker.
    fn deliver_events(&mut self) {
        if !self.cluster.state_notes.is_empty() {
            self.deliver_notes();
        }
        if self.cluster.outbox.is_empty() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.cluster.outbox);
        for (_, event) in &outbox {
            *self.events_by_kind.entry(event_kind(event)).or_default() += 1;
        }
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.world();
        for (slot, event) in &outbox {
            if self.log {
                println!("{:>10.3}s slot {slot:>3} {}", world.now.as_secs_f64(), describe_event(event));
            }
            for c in &mut checkers {
                c.on_event(&world, *slot, event);
            }
        }
        outbox.clear();
        self.cluster.outbox = outbox;
        self.checkers = checkers;
    }

    fn deliver_notes(&mut self) {
        let notes = std::mem::take(&mut self.cluster.state_notes);
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.world();
        for note in &notes {
            if self.log {
                println!("{:>10.3}s {}", world.now.as_secs_f64(), describe_note(note));
            }
            for c in &mut checkers {
                c.on_state(&world, note);
            }
        }
        for note in &notes {
            self.workload.observe(note);
        }
        self.checkers = checkers;
    }

    /// Issues the next client write on a random live manager, and schedules
    /// the one after, as long as the safety phase lasts.
    fn write(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let live: Vec<usize> = (0..self.cluster.slots.len())
            .filter(|&s| {
                self.cluster.slots[s].node().is_some_and(|n| n.state().is_some()) && self.cluster.slots[s].is_live()
            })
            .collect();
        if let Some(slot) = self.workload.pick(&live) {
            let (cmd, replicas) = self.workload.next_command();
            self.cluster.command(slot, cmd, replicas);
        }
        if let Some(gap) = self.workload.next_gap() {
            let now = self.cluster.now();
            self.cluster.schedule(now + gap, Control::Write);
        }
    }

    /// Operations in the largest live replica (sizes the state bound).
    fn state_ops_at_heal(&self) -> u64 {
        self.world().live_replicas().map(|(_, st)| st.replica.version().values().sum::<u64>()).max().unwrap_or(0)
    }

    fn note(&mut self, note: FaultNote) {
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.world();
        for c in &mut checkers {
            c.on_fault(&world, &note);
        }
        self.checkers = checkers;
    }

    fn tick(&mut self, half: VTime) {
        self.views.take();
        self.ticks += 1;
        if self.cluster.now() == half {
            self.sends_at_half = self.cluster.stats.sends;
        }
        if self.ticks.is_multiple_of(PERSIST_EVERY_TICKS) {
            self.cluster.persist();
        }
        if self.phase == Phase::Liveness {
            self.state_probe.sample(&self.cluster);
        }
        if self.joined_at.is_none() && checkers::convergence::joined(&self.world()) {
            let now = self.cluster.now();
            self.joined_at = Some(now);
            if self.phase == Phase::Safety
                && let Some(wait) = faults::next_interval_ms(&self.params, &mut self.rng)
            {
                self.cluster.schedule(now + Duration::from_millis(wait), Control::NextFault);
            }
        }
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.world();
        for c in &mut checkers {
            c.on_tick(&world);
        }
        self.checkers = checkers;
    }

    fn trace_fault(&mut self, slot: usize, what: &str) {
        let now = self.cluster.now();
        if self.log {
            match self.cluster.slots.get(slot) {
                Some(s) => {
                    let id = s.identity().map_or_else(
                        || format!("{}@{}", s.disk.id, s.disk.generation),
                        |i| format!("{}@{}", i.id, i.generation),
                    );
                    println!("{:>10.3}s slot {slot:>3} FAULT {what} {id}", now.as_secs_f64());
                }
                None => println!("{:>10.3}s network  FAULT {what}", now.as_secs_f64()),
            }
        }
        self.cluster.trace.record(now, slot, TraceKind::Fault, Fnv1a::of(what.as_bytes()));
        *self.injected.entry(fault_kind(what)).or_default() += 1;
    }

    fn control(&mut self, control: Control) {
        let now = self.cluster.now();
        match control {
            Control::NextFault => self.inject(),
            Control::Write => self.write(),
            Control::Scripted(i) => {
                if self.phase == Phase::Safety {
                    self.apply(self.script[i].1);
                }
            }
            Control::Restart { slot, epoch } => {
                let s = &self.cluster.slots[slot];
                if s.process.is_none() && s.epoch == epoch && !s.retired {
                    self.restart(slot);
                }
            }
            Control::Resume { slot, pause } => {
                if self.cluster.slots[slot].pause == pause && self.cluster.resume(slot) {
                    self.truth.settle(slot, now);
                    self.trace_fault(slot, "resume");
                    self.note(FaultNote::Resume { slot });
                }
            }
            Control::Heal { partition } if partition == self.partition_id => self.end_partition(),
            Control::Swizzle { partition }
                if partition == self.partition_id && self.cluster.network.partition().is_some() =>
            {
                self.cluster.network.swizzle_step(&mut self.rng);
                self.retouch_partition();
                self.cluster.partition_changed();
                self.trace_fault(NETWORK, "swizzle");
                let wait = self.params.swizzle_step.draw(&mut self.rng);
                self.cluster.schedule(now + Duration::from_millis(wait), Control::Swizzle { partition });
            }
            Control::Heal { .. } | Control::Swizzle { .. } => {}
            Control::Unclog { from, to } => {
                if let Some(n) = self.clogs.get_mut(&(from, to)) {
                    *n -= 1;
                    if *n == 0 {
                        self.clogs.remove(&(from, to));
                    }
                    self.cluster.network.expire_clogs(now);
                    self.truth.settle(from, now);
                    self.truth.settle(to, now);
                }
            }
        }
    }

    fn restart(&mut self, slot: usize) {
        self.cluster.start(slot);
        self.trace_fault(slot, "restart");
        self.note(FaultNote::Restart { slot });
    }

    /// Injects the next fault (if the policy finds one possible) and
    /// schedules the one after, as long as the safety phase lasts.
    fn inject(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let now = self.cluster.now();
        let healthy: Vec<usize> = (0..self.cluster.slots.len()).filter(|&s| self.cluster.slots[s].is_live()).collect();
        let managers: Vec<usize> =
            healthy.iter().copied().filter(|&s| self.cluster.slots[s].role == jujud::core::Role::Manager).collect();
        let alive = self.cluster.slots.iter().filter(|s| !s.retired).count();
        let c = Candidates {
            healthy: &healthy,
            managers: &managers,
            slots: self.cluster.slots.len(),
            alive,
            faulty: alive.saturating_sub(healthy.len()),
            partitioned: self.cluster.network.partition().is_some(),
        };
        if let Some(plan) = faults::choose(&self.params, &c, &mut self.rng) {
            self.apply(plan);
        }
        if let Some(wait) = faults::next_interval_ms(&self.params, &mut self.rng) {
            self.cluster.schedule(now + Duration::from_millis(wait), Control::NextFault);
        }
    }

    fn apply(&mut self, plan: Plan) {
        let now = self.cluster.now();
        let ms = Duration::from_millis;
        match plan {
            Plan::Crash { slot, keep_disk, downtime_ms } => {
                // An agent that lost its disk would need a new token (its
                // machine is claimed by its old node id): not modelled.
                let keep_disk = keep_disk || self.cluster.slots[slot].agent.is_some();
                // A scripted fault may name a slot that is down by now.
                let Some(identity) = self.cluster.slots[slot].identity().cloned() else { return };
                self.trace_fault(slot, if keep_disk { "crash" } else { "crash-lose-disk" });
                let lost_disk = self.cluster.crash(slot, keep_disk);
                let epoch = self.cluster.slots[slot].epoch;
                self.cluster.schedule(now + ms(downtime_ms), Control::Restart { slot, epoch });
                self.note(FaultNote::Crash { slot, identity, lost_disk });
            }
            Plan::Leave { slot, downtime_ms } => {
                let Some(identity) = self.cluster.slots[slot].identity().cloned() else { return };
                self.trace_fault(slot, "leave");
                self.cluster.leave(slot);
                self.deliver_events();
                let epoch = self.cluster.slots[slot].epoch;
                self.cluster.schedule(now + ms(downtime_ms), Control::Restart { slot, epoch });
                self.note(FaultNote::Leave { slot, identity });
            }
            Plan::Pause { slot, duration_ms } => {
                if let Some(pause) = self.cluster.pause(slot) {
                    self.truth.disturb(slot);
                    self.trace_fault(slot, "pause");
                    self.cluster.schedule(now + ms(duration_ms), Control::Resume { slot, pause });
                    self.note(FaultNote::Pause { slot });
                }
            }
            Plan::Partition { kind, duration_ms } => self.start_partition(kind, duration_ms),
            Plan::Clog { from, to, duration_ms } => {
                if self.cluster.network.clog(from, to, now + ms(duration_ms)) {
                    *self.clogs.entry((from, to)).or_default() += 1;
                    self.truth.disturb(from);
                    self.truth.disturb(to);
                    self.trace_fault(from, "clog");
                    self.cluster.schedule(now + ms(duration_ms), Control::Unclog { from, to });
                }
            }
        }
    }

    fn start_partition(&mut self, kind: PartitionKind, duration_ms: u64) {
        let now = self.cluster.now();
        let n = self.cluster.slots.len();
        let partition = if kind == PartitionKind::ManagerMinority {
            let managers: Vec<usize> = (0..n)
                .filter(|&s| self.cluster.slots[s].role == jujud::core::Role::Manager && !self.cluster.slots[s].retired)
                .collect();
            Partition::manager_minority(n, &managers, &mut self.rng)
        } else {
            Partition::draw(kind, n, &mut self.rng)
        };
        self.partition_id += 1;
        let id = self.partition_id;
        self.cluster.network.set_partition(Some(partition));
        self.retouch_partition();
        self.cluster.partition_changed();
        self.trace_fault(NETWORK, kind.as_str());
        self.cluster.schedule(now + Duration::from_millis(duration_ms), Control::Heal { partition: id });
        if kind == PartitionKind::Swizzle {
            let wait = self.params.swizzle_step.draw(&mut self.rng);
            self.cluster.schedule(now + Duration::from_millis(wait), Control::Swizzle { partition: id });
        }
    }

    /// Brings the truth in line with which slots the partition touches.
    fn retouch_partition(&mut self) {
        let now = self.cluster.now();
        for slot in 0..self.partition_touched.len() {
            let touched = self.cluster.network.partition().is_some_and(|p| p.touches(slot));
            match (self.partition_touched[slot], touched) {
                (false, true) => self.truth.disturb(slot),
                (true, false) => self.truth.settle(slot, now),
                _ => {}
            }
            self.partition_touched[slot] = touched;
        }
    }

    fn end_partition(&mut self) {
        if self.cluster.network.partition().is_some() {
            self.cluster.network.set_partition(None);
            self.retouch_partition();
            self.cluster.partition_changed();
            self.trace_fault(NETWORK, "heal");
        }
    }

    /// The liveness phase begins: faults stop, the network heals, paused
    /// nodes resume and down nodes restart.
    fn heal(&mut self) {
        self.views.take();
        let now = self.cluster.now();
        self.phase = Phase::Liveness;
        self.sends_at_heal = self.cluster.stats.sends;
        self.end_partition();
        self.cluster.network.heal();
        for ((from, to), n) in std::mem::take(&mut self.clogs) {
            for _ in 0..n {
                self.truth.settle(from, now);
                self.truth.settle(to, now);
            }
        }
        self.cluster.network.params = self.params.net.healed();
        self.truth.set_lossy(false, now);
        self.cluster.arm_planted_bugs();
        self.cluster.workloads.quiet = true;
        for slot in 0..self.cluster.slots.len() {
            if self.cluster.slots[slot].is_paused() && self.cluster.resume(slot) {
                self.truth.settle(slot, now);
                self.note(FaultNote::Resume { slot });
            } else if !self.cluster.slots[slot].is_running()
                && !self.cluster.slots[slot].retired
                && self.cluster.slots[slot].epoch > 0
            {
                self.restart(slot);
            }
            self.deliver_events();
        }
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.world();
        for c in &mut checkers {
            c.on_phase(&world);
        }
        self.checkers = checkers;
    }

    /// One more crash in the healed cluster, whose detection is timed;
    /// false if there are not two live nodes.
    fn probe_crash(&mut self) -> bool {
        let live: Vec<usize> = (0..self.cluster.slots.len())
            .filter(|&s| self.cluster.slots[s].is_live() && self.probe_target.fits(&self.cluster.slots[s]))
            .collect();
        let running = self.cluster.slots.iter().filter(|s| s.is_live()).count();
        if live.is_empty() || running < 2 {
            return false;
        }
        let slot = live[self.rng.random_range(0..live.len())];
        let identity = self.cluster.slots[slot].identity().cloned().expect("live slot runs");
        self.trace_fault(slot, "probe-crash");
        self.probed = Some(slot);
        self.cluster.crash(slot, true);
        self.views.take();
        self.note(FaultNote::Crash { slot, identity, lost_disk: None });
        true
    }

    fn finish(mut self, config: &RunConfig, wall: Duration, end_at: VTime) -> RunReport {
        let mut checkers = std::mem::take(&mut self.checkers);
        let world = self.world();
        for c in &mut checkers {
            c.finish(&world);
        }
        let members = config.members().max(1) as f64;
        let half_secs = config.virtual_secs as f64 / 2.0;
        let steady =
            (config.virtual_secs >= 2).then(|| (self.sends_at_heal - self.sends_at_half) as f64 / members / half_secs);
        RunReport {
            config: config.clone(),
            params: self.params.clone(),
            bounds: self.bounds.clone(),
            trace_hash: self.cluster.trace.hash(),
            events: self.cluster.stats.events,
            virtual_time: end_at,
            wall,
            violations: checkers.iter().flat_map(|c| c.findings().kept().iter().cloned()).collect(),
            violation_total: checkers.iter().map(|c| c.findings().total()).sum(),
            figures: checkers.iter().flat_map(|c| c.figures().into_iter().map(|f| (c.name(), f))).collect(),
            samples: checkers.iter().flat_map(|c| c.samples()).collect(),
            invariants: checkers.iter().map(|c| c.name()).collect(),
            net: self.cluster.network.stats.clone(),
            cluster: self.cluster.stats.clone(),
            injected: self.injected.clone(),
            joined_at: self.joined_at,
            events_by_kind: self.events_by_kind.clone(),
            steady_msgs_per_member_sec: steady,
        }
    }
}
