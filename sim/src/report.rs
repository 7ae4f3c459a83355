//! What a run reports: its outcome, figures and trace hash, the summary
//! printed for people, and the one command that replays it.
//!
//! Owns the text of reports. Must never influence a run (it is built after
//! the run ends), and must never print anything the replay command cannot
//! reproduce except the wall-clock figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::bounds::Bounds;
use crate::checkers::{Figure, Violation};
use crate::cluster::ClusterStats;
use crate::faults::FaultParams;
use crate::network::NetStats;
use crate::queue::VTime;
use crate::run::RunConfig;

/// Most violations printed in full per run (all are counted).
pub const MAX_PRINTED_VIOLATIONS: usize = 20;

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub config: RunConfig,
    pub params: FaultParams,
    pub bounds: Bounds,
    pub trace_hash: u64,
    /// Events delivered to nodes (datagrams, handshakes, timers).
    pub events: u64,
    /// Virtual time simulated.
    pub virtual_time: VTime,
    /// Wall-clock time the run took (reporting only).
    pub wall: Duration,
    /// Violations kept in full (at most `MAX_KEPT_VIOLATIONS` per checker).
    pub violations: Vec<Violation>,
    /// Every violation found, kept or not.
    pub violation_total: u64,
    pub figures: Vec<(&'static str, Figure)>,
    pub samples: Vec<(&'static str, Vec<VTime>)>,
    /// The names of the invariants checked.
    pub invariants: Vec<&'static str>,
    pub net: NetStats,
    pub cluster: ClusterStats,
    pub injected: BTreeMap<&'static str, u64>,
    /// When every member first saw every member.
    pub joined_at: Option<VTime>,
    /// Node events emitted, by kind (up, down, left, renamed, ...).
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Datagrams sent per member per virtual second over the second half
    /// of the safety phase (the steady state).
    pub steady_msgs_per_member_sec: Option<f64>,
}

impl RunReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violation_total == 0
    }

    /// Virtual seconds simulated per wall-clock second.
    pub fn speed(&self) -> f64 {
        self.virtual_time.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// The samples named `name`, sorted.
    pub fn sorted_samples(&self, name: &str) -> Vec<VTime> {
        let mut all: Vec<VTime> =
            self.samples.iter().filter(|(n, _)| *n == name).flat_map(|(_, s)| s.clone()).collect();
        all.sort_unstable();
        all
    }

    /// The command that replays this run exactly (same build).
    pub fn replay_command(&self) -> String {
        replay_command(&self.config)
    }

    /// The multi-line summary printed after a single run.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {}  managers {}  agents {}  safety phase {} s  faults {}",
            c.seed, c.managers, c.agents, c.virtual_secs, self.params
        );
        let _ = writeln!(
            s,
            "events {}  virtual {:.1} s  wall {:.3} s  speed {:.0} virtual s per wall s",
            self.events,
            self.virtual_time.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.speed()
        );
        let b = &self.bounds;
        let _ = writeln!(
            s,
            "bounds: join/convergence {:.1} s, detection {:.1} s (gossip {:.1} s, under faults {:.1} s), false-down window {:.1} s, state sync {:.1} s",
            b.convergence.as_secs_f64(),
            b.detection.as_secs_f64(),
            b.detection_gossip.as_secs_f64(),
            b.detection_under_faults.as_secs_f64(),
            b.false_down_window.as_secs_f64(),
            b.state_sync.as_secs_f64()
        );
        if let Some(rate) = self.steady_msgs_per_member_sec {
            let _ = writeln!(s, "messages per member per second (second half of the safety phase): {rate:.2}");
        }
        let faults: Vec<String> = self.injected.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "faults: {}", if faults.is_empty() { "none".into() } else { faults.join(", ") });
        if self.cluster.writes_issued > 0 || self.cluster.state_sends > 0 {
            let _ = writeln!(s, "{}", state_line(&self.cluster));
        }
        let kinds: Vec<String> = self.events_by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "node events: {}", kinds.join(", "));
        let n = &self.net;
        let _ = writeln!(
            s,
            "network: sent {} lost {} cut {} duplicated {} clogged {} tail {} reordered {}; streams {} (cut {})",
            n.sent, n.lost, n.cut, n.duplicated, n.clogged, n.tail, n.reordered, n.streams, n.streams_cut
        );
        for (checker, f) in &self.figures {
            let _ = writeln!(s, "  {checker}: {} = {}", f.name, f.value);
        }
        let _ = writeln!(s, "invariants checked: {}", self.invariants.join(", "));
        for v in self.violations.iter().take(MAX_PRINTED_VIOLATIONS) {
            let _ = writeln!(s, "VIOLATION {v}");
        }
        if self.violation_total > MAX_PRINTED_VIOLATIONS as u64 {
            let _ = writeln!(s, "... {} violations in all", self.violation_total);
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(s, "{verdict}  trace hash {:016x}", self.trace_hash);
        if !self.passed() {
            let _ = writeln!(s, "replay: {}", self.replay_command());
        }
        s
    }
}

/// The replicated state's counters, as one summary line.
fn state_line(c: &ClusterStats) -> String {
    format!(
        "writes: issued {} done {} refused {} abandoned {} skipped {}; state messages {} ({} KiB, {} undelivered); disk batches {} snapshots {} lost unsynced {}; restarts from a snapshot {}, from the log alone {}",
        c.writes_issued,
        c.writes_done,
        c.writes_refused,
        c.writes_abandoned,
        c.writes_skipped,
        c.state_sends,
        c.state_bytes / 1024,
        c.state_undelivered,
        c.disk_batches,
        c.disk_snapshots,
        c.disk_lost_unsynced,
        c.restores_from_snapshot,
        c.restores_from_log
    )
}

/// The command line that reruns `config`.
pub fn replay_command(config: &RunConfig) -> String {
    let mut cmd = format!(
        "cargo run --release -p sim -- --seed {} --managers {} --agents {} --virtual-secs {} --faults {}",
        config.seed, config.managers, config.agents, config.virtual_secs, config.faults
    );
    let lan = jujud::core::Timing::lan();
    if config.timing.max_transmissions != lan.max_transmissions {
        let _ = write!(cmd, " --max-transmissions {}", config.timing.max_transmissions);
    }
    if config.timing.suspicion_confirmations != lan.suspicion_confirmations {
        let _ = write!(cmd, " --suspicion-confirmations {}", config.timing.suspicion_confirmations);
    }
    if config.timing.suspicion_max_mult != lan.suspicion_max_mult {
        let _ = write!(cmd, " --suspicion-max-mult {}", config.timing.suspicion_max_mult);
    }
    if config.probe_target != crate::run::ProbeTarget::Any {
        let _ = write!(cmd, " --probe-target {}", config.probe_target.as_str());
    }
    if !config.provider {
        cmd.push_str(" --no-provider");
    }
    if !config.state {
        cmd.push_str(" --no-state");
    } else if config.writes_per_sec != crate::workload::DEFAULT_WRITES_PER_SEC {
        let _ = write!(cmd, " --writes-per-sec {}", config.writes_per_sec);
    }
    assert_eq!(
        jujud::core::Timing {
            max_transmissions: lan.max_transmissions,
            suspicion_confirmations: lan.suspicion_confirmations,
            suspicion_max_mult: lan.suspicion_max_mult,
            ..config.timing.clone()
        },
        lan,
        "a timing override the replay command cannot express"
    );
    cmd
}

/// A node event's kind, for counting.
pub fn event_kind(event: &jujud::core::Event) -> &'static str {
    use jujud::core::Event as E;
    match event {
        E::MemberUp(_) => "up",
        E::MemberDown { left: false, .. } => "down",
        E::MemberDown { left: true, .. } => "left",
        E::Renamed { .. } => "renamed",
        E::Active => "active",
        E::Idle => "idle",
        E::Rejoined(_) => "rejoined",
        E::Notice(_) => "notice",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// One node event as a log line.
pub fn describe_event(event: &jujud::core::Event) -> String {
    use jujud::core::Event as E;
    let who = |i: &jujud::core::Identity| format!("{}@{}", i.id, i.generation);
    match event {
        E::MemberUp(i) => format!("up {}", who(i)),
        E::MemberDown { identity, left } => format!("down {}{}", who(identity), if *left { " (left)" } else { "" }),
        E::Renamed { from, to } => format!("renamed {} -> {}", who(from), who(to)),
        E::Active => "active".into(),
        E::Idle => "idle".into(),
        E::Rejoined(i) => format!("rejoined as {}", who(i)),
        E::Notice(n) => format!("notice {n:?}"),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// Groups a traced fault name into a counter name.
pub fn fault_kind(what: &str) -> &'static str {
    match what {
        "crash" => "crash (disk kept)",
        "crash-lose-disk" => "crash (disk lost)",
        "probe-crash" => "probe crash",
        "restart" => "restart",
        "leave" => "leave",
        "pause" => "pause",
        "resume" => "resume",
        "clog" => "clog",
        "swizzle" => "swizzle step",
        "heal" => "partition healed",
        "provider-kill" => "provider kill",
        "provider-stop" => "provider stop",
        "retired" => "retired",
        "revoked" => "revoked",
        "machine-gone" => "agent of a removed machine exited",
        "instance-boot" => "instance booted",
        "stopped-while-down" => "provider stop of a down instance",
        _ => "partition",
    }
}

/// What the world did on a node's behalf, as a log line.
pub fn describe_sim_note(note: &crate::notes::SimNote) -> String {
    use crate::notes::SimNote as N;
    match note {
        N::WorkloadStarted { slot, unit, run, .. } => format!("slot {slot:>3} workload {unit} run {run} started"),
        N::WorkloadEnded { slot, unit, run, spontaneous } => {
            format!("slot {slot:>3} workload {unit} run {run} {}", if *spontaneous { "died" } else { "stopped" })
        }
        N::ProviderCall { slot, cmd } => format!("slot {slot:>3} provider call {cmd:?}"),
        N::InstanceStarted { instance, machine, slot, manager } => {
            format!(
                "provider started {instance} (machine {machine}, {}) in slot {slot}",
                if *manager { "manager" } else { "agent" }
            )
        }
        N::InstanceStopped { instance, slot, .. } => format!("provider stopped {instance} (slot {slot})"),
        N::Exited { slot, identity, kind, why } => {
            format!("slot {slot:>3} {}@{} ended: {kind:?} ({why:?})", identity.id, identity.generation)
        }
        N::Booted { slot } => format!("slot {slot:>3} booted (a new instance)"),
        N::StoppedWhileDown { slot } => format!("slot {slot:>3} stopped for good while down"),
    }
}

/// What became of a client write, as a log line.
pub fn describe_note(note: &crate::workload::StateNote) -> String {
    use crate::workload::StateNote as N;
    match note {
        N::Issued { slot, req, cmd } => format!("slot {slot:>3} write {req} issued: {cmd:?}"),
        N::Acked(w) => format!(
            "slot {:>3} write {} done (operation {} of {}@{}, {} replicas): {:?}",
            w.slot, w.req, w.seq, w.actor.node, w.actor.generation, w.replicas, w.outcome.ids
        ),
        N::Refused { slot, req, reason } => format!("slot {slot:>3} write {req} refused: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replay_command;
    use crate::run::RunConfig;

    /// Every timing override the CLI takes is spelled out in the replay
    /// command (and none panics it: dynamic suspicion's did).
    #[test]
    fn the_replay_command_carries_every_timing_override() {
        let mut config = RunConfig::new(7, 3, 2, 60, "random");
        config.timing.max_transmissions = 12;
        config.timing.suspicion_confirmations = 2;
        config.timing.suspicion_max_mult = 4;
        let cmd = replay_command(&config);
        for flag in ["--max-transmissions 12", "--suspicion-confirmations 2", "--suspicion-max-mult 4"] {
            assert!(cmd.contains(flag), "{cmd} lacks {flag}");
        }
    }
}
