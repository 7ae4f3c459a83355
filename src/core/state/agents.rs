//! The agents' part of the model: which units each machine must run (its
//! assignments), whether a machine may hold an agent session, and an
//! agent's status report turned into changes.
//!
//! Owns the keys agents touch: `m/<id>/{agent,status,addresses}` and
//! `u/<app>/<n>/status`. Must never let an agent write about a machine other
//! than its own, or about a unit not placed on its machine: the machine
//! comes from the agent's certificate, and every unit in a report is checked
//! against this replica's placement.
//!
//! A value with concurrent siblings (a conflict) is run as its greatest
//! sibling, so that every agent and every manager picks the same one;
//! `juju status` still shows the conflict.

use std::collections::{BTreeMap, BTreeSet};

use super::model::alive_values;
use super::replica::{Change, Replica};
use crate::core::agent::{Assignments, Report, UnitSpec, clip_status};

/// What a machine record says about whether it may run an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineLife {
    Alive,
    /// Removed (`juju remove-machine`): its agent should stop.
    Dead,
    /// Not in this replica (yet): perhaps created on a manager whose
    /// operations have not arrived.
    Unknown,
}

/// The life of machine `id` in `r`.
pub fn machine_life(r: &Replica, id: &str) -> MachineLife {
    let vals = r.get(&format!("m/{id}/life"));
    if vals.is_empty() {
        MachineLife::Unknown
    } else if vals.iter().any(|v| v == "dead") {
        MachineLife::Dead
    } else {
        MachineLife::Alive
    }
}

/// The node id (16 hex) recorded as `id`'s agent, if any.
pub fn machine_agent(r: &Replica, id: &str) -> Vec<String> {
    r.get(&format!("m/{id}/agent"))
}

fn greatest(vals: Vec<String>) -> Option<String> {
    vals.into_iter().max()
}

#[derive(Default)]
pub(crate) struct AppFacts {
    alive: bool,
    command: Option<String>,
    config: BTreeMap<String, String>,
}

#[derive(Default)]
struct UnitFacts {
    alive: bool,
    machine: Option<String>,
}

/// An application key's name and field (`a/<app>/<field>`), for the
/// fields assignments read: `life`, `command` and `config/<k>` (a config
/// key holding a `/` is not one).
fn app_field(key: &str) -> Option<(&str, &str)> {
    let (app, field) = key.strip_prefix("a/")?.split_once('/')?;
    let wanted = matches!(field, "life" | "command")
        || field.strip_prefix("config/").is_some_and(|k| !k.contains('/'));
    wanted.then_some((app, field))
}

/// A unit key's application, number and field (`u/<app>/<n>/<field>`),
/// for the fields assignments read: `life` and `machine`.
fn unit_field(key: &str) -> Option<(&str, &str, &str)> {
    let (app, rest) = key.strip_prefix("u/")?.split_once('/')?;
    let (n, field) = rest.split_once('/')?;
    matches!(field, "life" | "machine").then_some((app, n, field))
}

/// A lookup costs about this many keys walked: [`assignments`] looks units
/// up by key when that walks fewer keys than one pass over every key.
const LOOKUP_COST_KEYS: usize = 8;

/// The assignments of each machine in `machines` (every one of them gets an
/// entry, possibly empty). Units are found by lookup when there are few
/// machines for the applications (each unit `<app>/<x>` is placed on
/// machine `<x>`, so machine `m` can only run `<app>/<m>` units: a
/// session's open costs `O(applications)` lookups, not a walk over every
/// unit: 61 ms at 100,050 entities), else by one pass over the unit keys;
/// both give the same answer (`assignments_by_lookup` and
/// `assignments_by_scan`, tested against each other).
pub fn assignments(r: &Replica, machines: &BTreeSet<String>) -> BTreeMap<String, Assignments> {
    let apps = app_facts(r);
    let lookups = apps.len().saturating_mul(machines.len()).saturating_mul(2);
    if lookups.saturating_mul(LOOKUP_COST_KEYS) <= r.len() {
        assignments_by_lookup(r, machines, &apps)
    } else {
        assignments_by_scan(r, machines, &apps)
    }
}

/// Every application's facts, from one pass over the application keys.
fn app_facts(r: &Replica) -> BTreeMap<String, AppFacts> {
    let mut apps: BTreeMap<String, AppFacts> = BTreeMap::new();
    for ((app, field), vals) in r.entries_with_prefix_where("a/", app_field) {
        let a = apps.entry(app.to_string()).or_default();
        match field {
            "life" => a.alive = alive_values(&vals),
            "command" => a.command = greatest(vals),
            _ => {
                let k = field.strip_prefix("config/").expect("app_field passed only config keys");
                if let Some(v) = greatest(vals) {
                    a.config.insert(k.to_string(), v);
                }
            }
        }
    }
    apps
}

fn empty_assignments(machines: &BTreeSet<String>) -> BTreeMap<String, Assignments> {
    machines
        .iter()
        .map(|m| (m.clone(), Assignments { machine: m.clone(), units: Vec::new() }))
        .collect()
}

/// The unit `<app>/<n>` as its machine runs it, if its application is
/// alive and has a command.
fn spec(app: &str, n: &str, a: &AppFacts) -> Option<UnitSpec> {
    let command = a.command.clone().filter(|_| a.alive)?;
    Some(UnitSpec {
        unit: format!("{app}/{n}"),
        app: app.to_string(),
        command,
        config: a.config.clone(),
    })
}

fn sort_units(out: &mut BTreeMap<String, Assignments>) {
    for a in out.values_mut() {
        a.units.sort_by(|x, y| x.unit.cmp(&y.unit));
    }
}

/// [`assignments`] by looking up, for each machine `m` and application,
/// unit `<app>/<m>`: alive, and placed on `m` (its greatest placement).
pub(crate) fn assignments_by_lookup(
    r: &Replica,
    machines: &BTreeSet<String>,
    apps: &BTreeMap<String, AppFacts>,
) -> BTreeMap<String, Assignments> {
    let mut out = empty_assignments(machines);
    for (app, a) in apps.iter().filter(|(_, a)| a.alive && a.command.is_some()) {
        for (m, assigned) in out.iter_mut() {
            if !alive_values(&r.get(&format!("u/{app}/{m}/life"))) {
                continue;
            }
            if greatest(r.get(&format!("u/{app}/{m}/machine"))).as_ref() != Some(m) {
                continue;
            }
            assigned.units.extend(spec(app, m, a));
        }
    }
    sort_units(&mut out);
    out
}

/// [`assignments`] from one pass over the unit keys (values read only
/// for their life and placement).
pub(crate) fn assignments_by_scan(
    r: &Replica,
    machines: &BTreeSet<String>,
    apps: &BTreeMap<String, AppFacts>,
) -> BTreeMap<String, Assignments> {
    let mut units: BTreeMap<(String, String), UnitFacts> = BTreeMap::new();
    for ((app, n, field), vals) in r.entries_with_prefix_where("u/", unit_field) {
        let u = units.entry((app.to_string(), n.to_string())).or_default();
        match field {
            "life" => u.alive = alive_values(&vals),
            _ => u.machine = greatest(vals),
        }
    }
    let mut out = empty_assignments(machines);
    for ((app, n), u) in units {
        let Some(machine) = u.machine.filter(|m| u.alive && machines.contains(m)) else { continue };
        let Some(spec) = apps.get(&app).and_then(|a| spec(&app, &n, a)) else { continue };
        out.get_mut(&machine).expect("every machine has an entry").units.push(spec);
    }
    sort_units(&mut out);
    out
}

/// Whether a change of `key` can change any machine's assignments, or
/// whether a machine may hold a session: an application's life, command or
/// config, a unit's life or placement, a machine's life. Agents' reports
/// (statuses, addresses, claims), controller settings and the workers'
/// records cannot, and need no pass over every key.
pub fn affects_assignments(key: &str) -> bool {
    key.starts_with("a/")
        || (key.starts_with("u/") && (key.ends_with("/life") || key.ends_with("/machine")))
        || (key.starts_with("m/") && key.ends_with("/life"))
}

/// Whether any of `ops` changes a key that [`affects_assignments`].
pub fn ops_affect_assignments(ops: &[super::replica::Stamped]) -> bool {
    ops.iter().any(|s| match &s.op {
        crdts::map::Op::Up { key, .. } => affects_assignments(key),
        crdts::map::Op::Rm { keyset, .. } => keyset.iter().any(|k| affects_assignments(k)),
    })
}

/// Whether unit `unit` (`app/n`) is alive and placed on `machine`.
fn unit_on(r: &Replica, unit: &str, machine: &str) -> bool {
    alive_values(&r.get(&format!("u/{unit}/life")))
        && r.get(&format!("u/{unit}/machine")).iter().any(|m| m == machine)
}

/// Whether `key` already holds exactly `value` (no siblings).
fn holds(r: &Replica, key: &str, value: &str) -> bool {
    let vals = r.get(key);
    vals.len() == 1 && vals[0] == value
}

/// The changes that record agent `agent` (16 hex) as `machine`'s agent
/// and apply its report; only values that differ are written, and units
/// that are not (or no longer) on `machine` are skipped and counted.
pub fn plan_report(
    r: &Replica,
    machine: &str,
    agent: &str,
    report: &Report,
) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut put = |key: String, value: String| {
        if !holds(r, &key, &value) {
            changes.push(Change::Set { key, value });
        }
    };
    put(format!("m/{machine}/agent"), agent.to_string());
    if let Some(s) = &report.machine_status {
        put(format!("m/{machine}/status"), clip_status(s));
    }
    if let Some(a) = &report.address {
        put(format!("m/{machine}/addresses"), clip_status(a));
    }
    let mut skipped = 0;
    for (unit, status) in &report.units {
        if unit.split('/').count() == 2 && unit_on(r, unit, machine) {
            put(format!("u/{unit}/status"), clip_status(status));
        } else {
            skipped += 1;
        }
    }
    (changes, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::model::{self, Command};
    use crate::core::state::replica::Actor;
    use crate::core::state::requests::derived_id;
    use rand::{RngExt, SeedableRng};

    fn run(r: &mut Replica, cmd: Command) -> Vec<String> {
        let id = derived_id(r.actor(), r.own_seq() + 1);
        let Ok((changes, outcome)) = model::plan(r, id, &cmd) else { return Vec::new() };
        r.write(&changes);
        outcome.ids
    }

    /// The lookup and the scan agree, on every subset of machines tried,
    /// through deploys, placements on existing machines, removals of
    /// units and machines, config changes and a conflicting command (two
    /// managers set it concurrently: the greatest sibling runs).
    #[test]
    fn assignments_by_lookup_and_by_scan_agree() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut r, mut other) = (
            Replica::new(Actor { node: 1 << 48, generation: 1 }),
            Replica::new(Actor { node: 2 << 48, generation: 1 }),
        );
        let mut machines: Vec<String> = run(&mut r, Command::AddMachine { n: 4 });
        let apps = ["web", "db", "web-2", "a"];
        for app in apps {
            let deploy = Command::Deploy { name: app.into(), command: "run".into(), n: 2 };
            let ids = run(&mut r, deploy.clone());
            machines.extend(model::created_machines(&deploy, &ids));
            // Every application also on the first machine: units of four
            // applications on one machine, whose ids sort otherwise than
            // their applications' names ("web-2/m" < "web/m").
            let placed =
                run(&mut r, Command::AddUnitTo { app: app.into(), to: vec![machines[0].clone()] });
            assert_eq!(placed.len(), 1, "{app} placed on {}", machines[0]);
        }
        for step in 0..60 {
            let app = apps[rng.random_range(0..apps.len())].to_string();
            let cmd = match rng.random_range(0..7) {
                0 => Command::Deploy { name: app, command: format!("run {step}"), n: 2 },
                1 => Command::AddUnit { app, n: 1 },
                2 => {
                    let to = vec![machines[rng.random_range(0..machines.len())].clone()];
                    Command::AddUnitTo { app, to }
                }
                3 => Command::SetConfig { app, pairs: vec![(format!("k{step}"), "v".into())] },
                4 => {
                    let m = &machines[rng.random_range(0..machines.len())];
                    Command::RemoveUnit { unit: format!("{app}/{m}") }
                }
                5 => Command::RemoveMachine {
                    id: machines[rng.random_range(0..machines.len())].clone(),
                },
                _ => Command::AddMachine { n: 1 },
            };
            let ids = run(&mut r, cmd.clone());
            machines.extend(model::created_machines(&cmd, &ids));
            if step == 30 {
                // Two managers set web's command concurrently: siblings.
                other.apply_remote(r.mark_durable(r.own_seq()));
                let set = |v: &str| Change::Set { key: "a/web/command".into(), value: v.into() };
                let theirs = other.write(&[set("zzz concurrent")]);
                r.write(&[set("aaa concurrent")]);
                r.apply_remote(theirs);
                assert_eq!(r.get("a/web/command").len(), 2, "a conflict");
            }
            let mut ask: BTreeSet<String> =
                machines.iter().filter(|_| rng.random_bool(0.5)).cloned().collect();
            ask.insert("no-such-machine".into());
            let facts = app_facts(&r);
            let by_lookup = assignments_by_lookup(&r, &ask, &facts);
            assert_eq!(by_lookup, assignments_by_scan(&r, &ask, &facts), "step {step}");
            assert_eq!(assignments(&r, &ask), by_lookup);
            for m in &ask {
                assert_eq!(model::units_on(&r, m), model::units_on_by_scan(&r, m), "step {step}");
            }
        }
        // What the lookup relies on: unit `<app>/<x>` is placed on `<x>`.
        for (key, vals) in r.entries_with_prefix("u/") {
            if let Some((_, n, "machine")) = unit_field(key) {
                assert_eq!(vals, vec![n.to_string()], "{key}");
            }
        }
        let all: BTreeSet<String> = machines.iter().cloned().collect();
        let assigned: usize = assignments(&r, &all).values().map(|a| a.units.len()).sum();
        assert!(assigned > 10, "the run placed units: {assigned}");
    }
}
