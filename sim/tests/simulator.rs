//! The simulator's own tests: determinism, every checker catching a planted
//! bug, partitions healing, crashes with and without the disk, and pauses.
//! Nothing here depends on wall-clock time: every assertion is about the
//! virtual run.

use std::collections::BTreeSet;
use std::time::Duration;

use sim::faults::Plan;
use sim::network::PartitionKind;
use sim::planted::PlantedBug;
use sim::report::RunReport;
use sim::run::{RunConfig, run};
use sim::swarm::{self, run_batch};

const S: Duration = Duration::from_secs(1);

fn broken(report: &RunReport) -> BTreeSet<&'static str> {
    report.violations.iter().map(|v| v.invariant).collect()
}

fn count(report: &RunReport, kind: &str) -> u64 {
    report.events_by_kind.get(kind).copied().unwrap_or(0)
}

fn assert_passes(report: &RunReport) {
    assert!(report.passed(), "expected a clean run:\n{}", report.summary());
}

/// A quiet cluster with one scripted fault, and no provider: the HA
/// keeper would replace a manager down past the grace (see `ha()`).
fn scripted(managers: usize, agents: usize, secs: u64, script: Vec<(Duration, Plan)>) -> RunConfig {
    RunConfig { script, provider: false, ..RunConfig::new(11, managers, agents, secs, "none") }
}

#[test]
fn same_seed_gives_the_same_trace_and_another_seed_another() {
    let a = run(&RunConfig::new(7, 5, 2, 60, "default"));
    let b = run(&RunConfig::new(7, 5, 2, 60, "default"));
    let c = run(&RunConfig::new(8, 5, 2, 60, "default"));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_ne!(a.trace_hash, c.trace_hash);
    assert!(a.events > 10_000, "a minute of 7 nodes is many events: {}", a.events);
}

#[test]
fn worker_threads_do_not_change_any_trace() {
    let configs: Vec<RunConfig> = (40..46).map(|seed| swarm::swarm_config(seed, None, None, 30, "random")).collect();
    let parallel = run_batch(&configs, 2, true, &|_| {});
    for (config, outcome) in configs.iter().zip(&parallel) {
        assert!(!outcome.nondeterministic());
        assert_eq!(run(config).trace_hash, outcome.report.trace_hash);
    }
}

#[test]
fn healthy_runs_break_no_invariant() {
    for (seed, profile) in [(1, "none"), (2, "calm"), (3, "default"), (4, "default")] {
        let report = run(&RunConfig::new(seed, 5, 3, 90, profile));
        assert_passes(&report);
        assert!(report.sorted_samples("detection-healed").len() >= 6, "the probe crash was timed");
    }
}

#[test]
fn membership_only_runs_break_no_invariant() {
    // `--no-state`: managers run no singleton workers (the singletons
    // checker once demanded an owner of each there, on every tick).
    let report = run(&RunConfig { state: false, ..RunConfig::new(5, 8, 2, 60, "default") });
    assert_passes(&report);
}

#[test]
fn false_down_checker_catches_a_node_that_never_answers() {
    let config = RunConfig {
        bug: Some(PlantedBug::MuteSends { slot: 1 }),
        probe_crash: false,
        ..RunConfig::new(3, 3, 2, 20, "none")
    };
    let report = run(&config);
    let downs: Vec<_> = report.violations.iter().filter(|v| v.invariant == "false-down").collect();
    assert!(downs.iter().all(|v| v.at > 20 * S), "nothing is muted before the heal: {downs:?}");
    // The healthy nodes declare the mute one down...
    assert!(downs.iter().any(|v| v.slots[1] == 1), "{}", report.summary());
    // ...and the mute one, hearing no acks, declares healthy nodes down.
    assert!(downs.iter().any(|v| v.slots[0] == 1), "{}", report.summary());
}

#[test]
fn detection_checker_catches_a_core_that_never_declares_down() {
    let config = RunConfig { bug: Some(PlantedBug::SwallowDowns), ..RunConfig::new(4, 5, 0, 20, "none") };
    let report = run(&config);
    assert!(broken(&report).contains("detection"), "{}", report.summary());
    assert!(!broken(&report).contains("false-down"));
}

#[test]
fn convergence_checker_catches_a_node_kept_partitioned() {
    // No provider: the HA keeper would replace the manager it cannot see.
    let config = RunConfig {
        bug: Some(PlantedBug::HiddenIsolation { slot: 2 }),
        provider: false,
        ..RunConfig::new(5, 5, 0, 20, "none")
    };
    let report = run(&config);
    let v = report.violations.iter().find(|v| v.invariant == "convergence").expect("convergence must fire");
    assert!(v.detail.contains("after heal"), "{v}");
    assert_eq!(v.at, 20 * S + report.bounds.convergence, "found at the bound: {v}");
    assert!(v.slots.contains(&2), "{v}");
}

#[test]
fn generations_checker_catches_a_resurrected_identity() {
    let crash = Plan::Crash { slot: 1, keep_disk: true, downtime_ms: 3_000 };
    let config = RunConfig { bug: Some(PlantedBug::ResurrectOld), ..scripted(4, 0, 30, vec![(10 * S, crash)]) };
    let report = run(&config);
    assert!(count(&report, "renamed") > 0, "{}", report.summary());
    assert!(broken(&report).contains("generations"), "{}", report.summary());
}

#[test]
fn every_partition_kind_heals_and_converges() {
    for kind in [
        PartitionKind::IsolateOne,
        PartitionKind::Halves,
        PartitionKind::Symmetric,
        PartitionKind::OneWay,
        PartitionKind::Swizzle,
    ] {
        // The partition outlasts the safety phase: the heal ends it.
        let cut = Plan::Partition { kind, duration_ms: 600_000 };
        let report = run(&scripted(4, 3, 40, vec![(10 * S, cut)]));
        assert_passes(&report);
        assert!(count(&report, "down") > 0, "{kind:?} cut nobody off:\n{}", report.summary());
        let healed = report.sorted_samples("heal");
        assert_eq!(healed.len(), 1, "{kind:?} did not converge after the heal");
    }
}

#[test]
fn an_isolated_node_rejoins_when_its_partition_ends() {
    let cut = Plan::Partition { kind: PartitionKind::IsolateOne, duration_ms: 15_000 };
    let report = run(&scripted(5, 0, 60, vec![(10 * S, cut)]));
    assert_passes(&report);
    assert!(count(&report, "rejoined") > 0, "the isolated side never rejoined:\n{}", report.summary());
}

#[test]
fn a_crash_with_the_disk_kept_comes_back_as_a_newer_generation() {
    let crash = Plan::Crash { slot: 2, keep_disk: true, downtime_ms: 5_000 };
    let report = run(&scripted(5, 0, 40, vec![(10 * S, crash)]));
    assert_passes(&report);
    assert!(count(&report, "renamed") + count(&report, "up") > 20, "{}", report.summary());
    assert_eq!(report.sorted_samples("detection-faulty").len(), 4, "every survivor detected the crash");
}

#[test]
fn a_crash_with_the_disk_lost_comes_back_as_a_new_node() {
    let crash = Plan::Crash { slot: 2, keep_disk: false, downtime_ms: 5_000 };
    let report = run(&scripted(3, 2, 40, vec![(10 * S, crash)]));
    assert_passes(&report);
    assert_eq!(count(&report, "renamed"), 0, "a new node id is not a rename");
    assert!(count(&report, "down") >= 4, "{}", report.summary());
}

#[test]
fn a_paused_node_is_declared_down_and_that_is_not_a_false_down() {
    let pause = Plan::Pause { slot: 3, duration_ms: 5_000 };
    let report = run(&scripted(5, 0, 40, vec![(10 * S, pause)]));
    assert_passes(&report);
    assert!(count(&report, "down") >= 4, "{}", report.summary());
    assert!(count(&report, "rejoined") >= 1, "{}", report.summary());
}

#[test]
fn a_graceful_leave_is_reported_as_left_not_down() {
    let leave = Plan::Leave { slot: 1, downtime_ms: 100_000 };
    let report = run(&RunConfig { probe_crash: false, ..scripted(4, 0, 30, vec![(10 * S, leave)]) });
    assert_passes(&report);
    assert_eq!(count(&report, "left"), 3, "{}", report.summary());
    assert_eq!(count(&report, "down"), 0, "{}", report.summary());
}

/// Managers only, no faults but the scripted ones, writing at `rate`.
fn writing(managers: usize, secs: u64, rate: u32, script: Vec<(Duration, Plan)>) -> RunConfig {
    RunConfig { writes_per_sec: rate, ..scripted(managers, 0, secs, script) }
}

fn figure(report: &RunReport, checker: &str) -> String {
    report.figures.iter().filter(|(c, _)| *c == checker).map(|(_, f)| f.value.clone()).collect()
}

#[test]
fn replicas_written_on_both_sides_of_a_partition_converge_and_keep_every_ack() {
    let cut = Plan::Partition { kind: PartitionKind::Halves, duration_ms: 600_000 };
    let report = run(&writing(4, 20, 20, vec![(5 * S, cut)]));
    assert_passes(&report);
    assert!(report.cluster.writes_done > 200, "{}", report.summary());
    assert_eq!(report.sorted_samples("state-converged").len(), 1, "{}", report.summary());
    assert!(figure(&report, "no-lost-acks").contains("presence checked"), "{}", report.summary());
    assert!(!figure(&report, "wait-replicated").starts_with("0 "), "{}", report.summary());
}

#[test]
fn writes_whose_only_disk_was_lost_are_excused_and_nothing_else_is() {
    // The two managers are cut apart, then slot 0 loses its disk: what it
    // acknowledged meanwhile was on no other disk, and is excused. What
    // slot 1 acknowledged meanwhile must survive the heal.
    let cut = Plan::Partition { kind: PartitionKind::Halves, duration_ms: 7_000 };
    let crash = Plan::Crash { slot: 0, keep_disk: false, downtime_ms: 1_000 };
    let report = run(&writing(2, 20, 50, vec![(3 * S, cut), (8 * S, crash)]));
    assert_passes(&report);
    let writes = figure(&report, "no-lost-acks");
    let excused: u64 = writes.split(", ").nth(1).and_then(|e| e.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(excused > 20, "{writes}");
    assert!(writes.contains("presence checked"), "{writes}");
}

#[test]
fn no_lost_acks_checker_catches_durable_reported_before_the_sync() {
    // A crash every 250 ms: some come while an acknowledged batch is
    // still unsynced (writes every 10 ms on average, fsyncs of 0.5-5 ms).
    let crashes: Vec<(Duration, Plan)> = (4..44)
        .map(|i| (i * S / 4 + Duration::from_millis(1), Plan::Crash { slot: 0, keep_disk: true, downtime_ms: 100 }))
        .collect();
    let config = RunConfig { bug: Some(PlantedBug::EarlyDurable), ..writing(1, 12, 100, crashes.clone()) };
    let report = run(&config);
    let lost = report.violations.iter().find(|v| v.invariant == "no-lost-acks").expect("no-lost-acks must fire");
    assert!(lost.detail.contains("kept its disk, which lost write"), "{lost}");
    // The same run without the bug keeps every acknowledged write.
    assert_passes(&run(&writing(1, 12, 100, crashes)));
}

#[test]
fn no_lost_acks_checker_catches_a_recovery_that_drops_a_synced_write() {
    // One manager: no other replica can bring the write back.
    let crashes = (1..=5).map(|i| (i * 2 * S, Plan::Crash { slot: 0, keep_disk: true, downtime_ms: 100 })).collect();
    let config = RunConfig { bug: Some(PlantedBug::RestoreDropsTail), ..writing(1, 12, 20, crashes) };
    let report = run(&config);
    let lost = report.violations.iter().find(|v| v.invariant == "no-lost-acks").expect("no-lost-acks must fire");
    assert!(lost.detail.contains("missing from the converged state"), "{lost}");
}

#[test]
fn state_convergence_checker_catches_state_messages_never_delivered() {
    let config = RunConfig { bug: Some(PlantedBug::DropState), ..writing(3, 10, 20, Vec::new()) };
    let report = run(&config);
    let v = report.violations.iter().find(|v| v.invariant == "state-convergence").expect("state-convergence must fire");
    assert!(v.detail.contains("not converged"), "{v}");
    assert!(!broken(&report).contains("convergence"), "membership is unaffected: {}", report.summary());
}

#[test]
fn wait_replicated_checker_catches_acks_on_forged_confirmations() {
    let config = RunConfig { bug: Some(PlantedBug::ForgeHave), ..writing(3, 10, 20, Vec::new()) };
    let report = run(&config);
    assert!(broken(&report).contains("wait-replicated"), "{}", report.summary());
    assert!(!broken(&report).contains("state-convergence"), "anti-entropy still spreads every write");
}

#[test]
fn no_revoked_admission_checker_catches_a_revocation_acknowledged_before_it_was_durable() {
    // A crash of the only manager every 100 ms, with its disk kept, while
    // tokens are issued, revoked and used 100 times a second: some crashes
    // come right after a revocation was acknowledged. With durability
    // reported before the sync, such a revocation is lost at the crash,
    // and the restarted manager admits a join with the revoked token.
    let crashes: Vec<(Duration, Plan)> = (10..110)
        .map(|i| (i * S / 10 + Duration::from_millis(1), Plan::Crash { slot: 0, keep_disk: true, downtime_ms: 20 }))
        .collect();
    let tokens = |c: RunConfig| RunConfig { tokens: true, ..c };
    let config = RunConfig { bug: Some(PlantedBug::EarlyDurable), ..tokens(writing(1, 12, 100, crashes.clone())) };
    let report = run(&config);
    let v = report
        .violations
        .iter()
        .find(|v| v.invariant == "no-revoked-admission")
        .expect("no-revoked-admission must fire");
    assert!(v.detail.contains("whose revocation it acknowledged"), "{v}");
    // The same run without the bug: every such join is refused.
    let report = run(&tokens(writing(1, 12, 100, crashes)));
    assert_passes(&report);
    let fig = figure(&report, "no-revoked-admission");
    assert!(!fig.contains(" 0 joins"), "joins with revoked tokens were tried: {fig}");
}
