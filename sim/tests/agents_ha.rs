//! The simulator's tests of machine agents and HA: a clean run holds every
//! agent and HA invariant, and each of their checkers catches its planted
//! bug. Nothing here depends on wall-clock time.

use std::collections::BTreeSet;
use std::time::Duration;

use sim::faults::Plan;
use sim::network::PartitionKind;
use sim::planted::PlantedBug;
use sim::report::RunReport;
use sim::run::{ProbeTarget, RunConfig, run};

const S: Duration = Duration::from_secs(1);

fn broken(report: &RunReport) -> BTreeSet<&'static str> {
    report.violations.iter().map(|v| v.invariant).collect()
}

fn figure(report: &RunReport, checker: &str) -> String {
    report.figures.iter().filter(|(c, _)| *c == checker).map(|(_, f)| format!("{} = {}; ", f.name, f.value)).collect()
}

/// A quiet cluster with the provider on, and scripted faults.
fn ha(seed: u64, managers: usize, agents: usize, secs: u64, script: Vec<(Duration, Plan)>) -> RunConfig {
    RunConfig { script, ..RunConfig::new(seed, managers, agents, secs, "none") }
}

fn fires(report: &RunReport, invariant: &str) {
    assert!(broken(report).contains(invariant), "{invariant} must fire:\n{}", report.summary());
}

#[test]
fn a_manager_killed_past_the_grace_is_replaced_and_its_agents_move() {
    let crash = Plan::Crash { slot: 1, keep_disk: true, downtime_ms: 600_000 };
    let report = run(&RunConfig { probe_target: ProbeTarget::Agent, ..ha(21, 3, 6, 40, vec![(10 * S, crash)]) });
    assert!(report.passed(), "{}", report.summary());
    assert_eq!(
        report.injected.get("provider stop of a down instance"),
        Some(&1),
        "the dead manager's instance is stopped once"
    );
    assert!(report.injected.get("instance booted").copied().unwrap_or(0) >= 1, "a replacement booted");
    let sessions = figure(&report, "sessions");
    assert!(sessions.contains("session spread"), "{sessions}");
    assert!(!report.sorted_samples("reconnect-after-manager-loss").is_empty(), "agents of the dead manager moved");
    assert!(figure(&report, "managers").contains("desired managers live"), "{}", report.summary());
}

#[test]
fn sessions_checker_catches_managers_that_never_answer() {
    // The liveness phase's probe crash kills a manager once the managers
    // are deaf: its agents must find another, and none answers (moves for
    // balance are make before break, so without a loss no agent is ever
    // without a session).
    let config = RunConfig {
        bug: Some(PlantedBug::DeafManagers),
        probe_target: ProbeTarget::Manager,
        ..ha(22, 3, 4, 20, Vec::new())
    };
    let report = run(&config);
    fires(&report, "sessions");
    assert!(
        report.violations.iter().all(|v| v.invariant != "sessions" || v.at > 20 * S),
        "nothing is deaf before the heal"
    );
    let clean = run(&RunConfig { bug: None, ..config });
    assert!(clean.passed(), "without the bug the same manager loss is survived:\n{}", clean.summary());
}

#[test]
fn workload_restarts_checker_catches_a_manager_sending_empty_assignments_first() {
    let config = RunConfig {
        bug: Some(PlantedBug::EmptyFirstAssign),
        probe_target: ProbeTarget::Manager,
        ..ha(23, 3, 6, 20, Vec::new())
    };
    let report = run(&config);
    fires(&report, "workload-restarts");
    // Without the bug, the same manager loss restarts nothing.
    let clean = run(&RunConfig { bug: None, ..config });
    assert!(!broken(&clean).contains("workload-restarts"), "{}", clean.summary());
    assert!(!clean.sorted_samples("reconnect-after-manager-loss").is_empty(), "{}", clean.summary());
}

#[test]
fn presence_checker_catches_an_agent_that_managers_cannot_see() {
    // Slot 4 is an agent (3 managers first); the truth calls it reachable.
    let config = RunConfig { bug: Some(PlantedBug::HiddenIsolation { slot: 4 }), ..ha(24, 3, 3, 20, Vec::new()) };
    let report = run(&config);
    fires(&report, "presence");
}

#[test]
fn singletons_checker_catches_two_owners_in_one_connected_part() {
    // No provider: the HA keeper would replace the manager it cannot see.
    let config = RunConfig {
        bug: Some(PlantedBug::HiddenIsolation { slot: 1 }),
        provider: false,
        ..ha(25, 3, 0, 20, Vec::new())
    };
    let report = run(&config);
    fires(&report, "singletons");
    assert!(figure(&report, "singletons").contains("overlap"), "{}", report.summary());
}

#[test]
fn instances_checker_catches_a_provider_that_does_not_fence_names() {
    let config =
        RunConfig { bug: Some(PlantedBug::ProviderForgetsNames), writes_per_sec: 5, ..ha(26, 3, 2, 100, Vec::new()) };
    fires(&run(&config), "instances");
    assert!(!broken(&run(&RunConfig { bug: None, ..config })).contains("instances"));
}

#[test]
fn managers_checker_catches_replacements_that_never_boot() {
    let crash = Plan::Crash { slot: 1, keep_disk: true, downtime_ms: 600_000 };
    let config =
        RunConfig { bug: Some(PlantedBug::ProviderDropsManagerStarts), ..ha(27, 5, 0, 30, vec![(5 * S, crash)]) };
    fires(&run(&config), "managers");
}

#[test]
fn minority_checker_catches_a_side_that_heals_from_a_minority() {
    // The partition cuts only the truth: the nodes still see each other,
    // so whichever side owns the HA keeper heals the dead manager, even a
    // minority. Some of these seeds put the keeper's owner there. The crash
    // comes after the partition has lasted longer than SWIM's detection
    // bound under faults (87.5 s here), which excuses a stale view.
    let script = |_| {
        vec![
            (5 * S, Plan::Partition { kind: PartitionKind::Halves, duration_ms: 600_000 }),
            (100 * S, Plan::Crash { slot: 0, keep_disk: true, downtime_ms: 600_000 }),
        ]
    };
    let caught = (31..=38).any(|seed| {
        let config = RunConfig {
            bug: Some(PlantedBug::LeakyPartition),
            probe_crash: false,
            ..ha(seed, 5, 0, 120, script(seed))
        };
        broken(&run(&config)).contains("minority-heal")
    });
    assert!(caught, "no seed showed a heal from a minority side");
    for seed in 31..=38 {
        let report = run(&RunConfig { probe_crash: false, ..ha(seed, 5, 0, 120, script(seed)) });
        assert!(!broken(&report).contains("minority-heal"), "a real partition: {}", report.summary());
    }
}
