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
struct AppFacts {
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

/// The assignments of each machine in `machines` (every one of them gets an
/// entry, possibly empty), from one pass over the application and unit
/// keys (values read only for the fields above).
pub fn assignments(r: &Replica, machines: &BTreeSet<String>) -> BTreeMap<String, Assignments> {
    let mut apps: BTreeMap<String, AppFacts> = BTreeMap::new();
    let mut units: BTreeMap<(String, String), UnitFacts> = BTreeMap::new();
    for ((app, field), vals) in r.entries_with_prefix_where("a/", app_field) {
        let a = apps.entry(app.to_string()).or_default();
        match field {
            "life" => a.alive = !vals.is_empty() && !vals.iter().any(|v| v == "dead"),
            "command" => a.command = greatest(vals),
            _ => {
                let k = field.strip_prefix("config/").expect("app_field passed only config keys");
                if let Some(v) = greatest(vals) {
                    a.config.insert(k.to_string(), v);
                }
            }
        }
    }
    for ((app, n, field), vals) in r.entries_with_prefix_where("u/", unit_field) {
        let u = units.entry((app.to_string(), n.to_string())).or_default();
        match field {
            "life" => u.alive = !vals.is_empty() && !vals.iter().any(|v| v == "dead"),
            _ => u.machine = greatest(vals),
        }
    }
    let mut out: BTreeMap<String, Assignments> = machines
        .iter()
        .map(|m| (m.clone(), Assignments { machine: m.clone(), units: Vec::new() }))
        .collect();
    for ((app, n), u) in units {
        let Some(machine) = u.machine.filter(|m| u.alive && machines.contains(m)) else { continue };
        let Some(a) = apps.get(&app).filter(|a| a.alive) else { continue };
        let Some(command) = a.command.clone() else { continue };
        let spec = UnitSpec {
            unit: format!("{app}/{n}"),
            app: app.clone(),
            command,
            config: a.config.clone(),
        };
        out.get_mut(&machine).expect("every machine has an entry").units.push(spec);
    }
    for a in out.values_mut() {
        a.units.sort_by(|x, y| x.unit.cmp(&y.unit));
    }
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
    let life = r.get(&format!("u/{unit}/life"));
    !life.is_empty()
        && !life.iter().any(|v| v == "dead")
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
