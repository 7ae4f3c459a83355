//! The environment's model on top of the replica's keys: machines,
//! applications, units and controller settings; the commands users give,
//! validated against this replica's view; and the status view.
//!
//! Owns the key layout and the commands (ids come from `ids.rs`, shared
//! with `controllers.rs`, which this module uses and which never uses it).
//! Must never write a change for a command that failed validation: a
//! refused command changes nothing.
//!
//! Keys (every value is text; a key with concurrent writes has siblings):
//! `m/<id>/{life,jobs,instance,addresses,status,agent}`,
//! `a/<name>/{life,command}`, `a/<name>/config/<key>`,
//! `u/<app>/<n>/{life,machine,status}`, `c/<setting>`, and join tokens
//! under `t/` (see `tokens.rs`; the status view ignores them).
//! Removal sets `life` to `dead` rather than deleting keys, so a concurrent
//! update cannot bring an entity back; the cleaner deletes dead keys later.
//!
//! Ids are derived from the request that creates the entities:
//! `<request id in base32>-<i>` for the i-th entity of that kind. A request
//! id is random (chosen by the client) or derived from the writer's actor
//! and operation number, so ids never collide without coordination, and a
//! request applied twice (a retry that reached a manager lacking the first
//! attempt) writes the very same keys and values: the copies merge into one
//! entity. Creating costs O(entities created), whatever the state's size.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use super::error::CommandError;
pub use super::ids::{MAX_PER_COMMAND, entity_ids, new_machine, request_text, tag_of};
use super::replica::{Change, Replica};
use super::requests::RequestId;

/// Longest application name.
pub const MAX_NAME_CHARS: usize = 50;
/// Longest config key, value or workload command.
pub const MAX_VALUE_BYTES: usize = 4_096;

/// A user's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    AddMachine {
        n: u32,
    },
    RemoveMachine {
        id: String,
    },
    Deploy {
        name: String,
        command: String,
        n: u32,
    },
    AddUnit {
        app: String,
        n: u32,
    },
    RemoveUnit {
        unit: String,
    },
    SetConfig {
        app: String,
        pairs: Vec<(String, String)>,
    },
    SetController {
        key: String,
        value: String,
    },
    /// Records `agent` (a node id, 16 hex) as machine `machine`'s agent
    /// when it is admitted. Managers issue it; clients may not.
    ClaimMachine {
        machine: String,
        agent: String,
    },
    /// Sets the desired number of managers (`juju enable-ha -n N`).
    EnableHa {
        n: u32,
    },
    /// Adds (or replaces) host `address` in the provider's pool; `entry` is
    /// the runtime's description of it, private key included (`juju add-host`).
    AddHost {
        address: String,
        entry: String,
    },
    /// Takes host `address` out of the pool (`juju remove-host`); refused
    /// while a machine runs or is placed there.
    RemoveHost {
        address: String,
    },
    /// Deploys an application whose units go on existing machines `to`
    /// (`juju deploy --to M1,M2`): unit `<name>/<m>` on machine `m`.
    DeployTo {
        name: String,
        command: String,
        to: Vec<String>,
    },
    /// Adds units of `app` on existing machines `to` (`juju add-unit --to`).
    AddUnitTo {
        app: String,
        to: Vec<String>,
    },
    /// Adds one machine placed on pool host `host`, whose agent the
    /// provider installs there (`juju add-machine ssh:[user@]host`).
    EnlistMachine {
        host: String,
    },
    /// The first manager's settings and machine (internal).
    Bootstrap(Box<super::controllers::Bootstrap>),
    /// Records newly minted join tokens (internal; see `tokens.rs`).
    IssueTokens(Vec<super::tokens::TokenSpec>),
    /// Revokes a join token (internal: the API issues it for an admin).
    RevokeToken {
        token_id: String,
    },
    /// Records that node `node` (16 hex) joined with `token_id`, and for an
    /// agent token claims its machine for it (internal, at admission).
    UseToken {
        token_id: String,
        node: String,
    },
    /// Removes the keys of tokens expired before `now_unix_secs` less the
    /// clock-skew margin (internal; the runtime feeds the time).
    SweepTokens {
        now_unix_secs: u64,
    },
}

impl Command {
    /// Whether only a manager may issue this command (never a client).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Command::ClaimMachine { .. }
                | Command::Bootstrap(_)
                | Command::IssueTokens(_)
                | Command::RevokeToken { .. }
                | Command::UseToken { .. }
                | Command::SweepTokens { .. }
        )
    }
}

/// What a successful command created or touched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub ids: Vec<String>,
    /// Machines the command created (each needs an agent).
    pub machines: Vec<String>,
    /// `(machine, join token)` for each created machine's agent; filled in
    /// by the API layer, which holds the cluster secret.
    pub tokens: Vec<(String, String)>,
}

fn invalid(what: &str, value: &str, rule: &str) -> CommandError {
    CommandError::Invalid { what: what.into(), value: value.into(), rule: rule.into() }
}

fn check_name(name: &str) -> Result<(), CommandError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(()).ok_or_else(|| {
        invalid(
            "application name",
            name,
            "lower-case letters, digits and '-', starting with a letter, at most 50",
        )
    })
}

fn check_count(n: u32) -> Result<(), CommandError> {
    (1..=MAX_PER_COMMAND)
        .contains(&n)
        .then_some(())
        .ok_or_else(|| invalid("count", &n.to_string(), "must be 1..=1000"))
}

fn check_value(what: &str, v: &str) -> Result<(), CommandError> {
    (v.len() <= MAX_VALUE_BYTES)
        .then_some(())
        .ok_or_else(|| invalid(what, &v[..64.min(v.len())], "at most 4096 bytes"))
}

fn check_config_key(k: &str) -> Result<(), CommandError> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    ok.then_some(())
        .ok_or_else(|| invalid("config key", k, "letters, digits, '_', '.', '-', at most 128"))
}

fn set(key: String, value: impl Into<String>) -> Change {
    Change::Set { key, value: value.into() }
}

/// Whether an entity with this life key is alive (any sibling alive and
/// none dead counts as alive; dead wins over a concurrent alive).
fn alive(r: &Replica, life_key: &str) -> bool {
    alive_values(&r.get(life_key))
}

/// Whether a life key's values say alive: present, and no sibling `dead`
/// (removal wins over a concurrent write).
pub(crate) fn alive_values(vals: &[String]) -> bool {
    !vals.is_empty() && !vals.iter().any(|v| v == "dead")
}

/// Turns request `id`'s command into changes, validated against `r`'s view.
pub fn plan(
    r: &Replica,
    id: RequestId,
    cmd: &Command,
) -> Result<(Vec<Change>, Outcome), CommandError> {
    match cmd {
        Command::AddMachine { n } => {
            check_count(*n)?;
            let ids = entity_ids(id, *n);
            let changes = ids.iter().flat_map(|id| new_machine(id)).collect();
            Ok((changes, Outcome { machines: ids.clone(), ids, ..Default::default() }))
        }
        Command::RemoveMachine { id } => remove_machine(r, id),
        Command::Deploy { name, command, n } => deploy(r, id, name, command, *n),
        Command::AddUnit { app, n } => {
            check_count(*n)?;
            if !alive(r, &format!("a/{app}/life")) {
                return Err(CommandError::UnknownApplication(app.clone()));
            }
            Ok(add_units(id, app, *n))
        }
        Command::RemoveUnit { unit } => {
            let life = format!("u/{unit}/life");
            if !unit.contains('/') || !alive(r, &life) {
                return Err(CommandError::UnknownUnit(unit.clone()));
            }
            Ok((vec![set(life, "dead")], Outcome { ids: vec![unit.clone()], ..Default::default() }))
        }
        Command::SetConfig { app, pairs } => set_config(r, app, pairs),
        Command::ClaimMachine { machine, agent } => claim_machine(r, machine, agent),
        Command::AddHost { address, entry } => {
            super::controllers::check_host(r, address, entry)?;
            Ok((
                vec![set(format!("{}{address}", super::controllers::HOST_PREFIX), entry.clone())],
                Outcome { ids: vec![address.clone()], ..Default::default() },
            ))
        }
        Command::RemoveHost { address } => {
            super::controllers::check_remove_host(r, address)?;
            let key = format!("{}{address}", super::controllers::HOST_PREFIX);
            Ok((
                vec![set(key, super::controllers::HOST_REMOVED)],
                Outcome { ids: vec![address.clone()], ..Default::default() },
            ))
        }
        Command::EnlistMachine { host } => enlist_machine(r, id, host),
        Command::DeployTo { name, command, to } => {
            check_placement(r, name, to)?;
            let (mut changes, _) = deploy(r, id, name, command, 1)?;
            // The app's own keys only: its units go on the named machines.
            changes.retain(
                |c| matches!(c, Change::Set { key, .. } if key.starts_with(&format!("a/{name}/"))),
            );
            let (more, outcome) = place_units(name, to);
            changes.extend(more);
            Ok((changes, outcome))
        }
        Command::AddUnitTo { app, to } => {
            if !alive(r, &format!("a/{app}/life")) {
                return Err(CommandError::UnknownApplication(app.clone()));
            }
            check_placement(r, app, to)?;
            Ok(place_units(app, to))
        }
        Command::EnableHa { n } => {
            super::controllers::check_desired(*n)?;
            Ok((
                vec![set(format!("c/{}", super::controllers::HA_DESIRED_KEY), n.to_string())],
                Outcome::default(),
            ))
        }
        Command::Bootstrap(b) => {
            let (changes, id) = super::controllers::plan_bootstrap(r, b)?;
            Ok((
                changes,
                Outcome { ids: vec![id.clone()], machines: vec![id], ..Default::default() },
            ))
        }
        Command::IssueTokens(specs) => {
            Ok((super::tokens::plan_issue(r, specs)?, Outcome::default()))
        }
        Command::RevokeToken { token_id } => {
            Ok((super::tokens::plan_revoke(r, token_id)?, Outcome::default()))
        }
        Command::UseToken { token_id, node } => {
            let (mut changes, machine) = super::tokens::plan_use(r, token_id, node)?;
            let Some(machine) = machine else { return Ok((changes, Outcome::default())) };
            let (claim, outcome) = claim_machine(r, &machine, node)?;
            changes.extend(claim);
            Ok((changes, outcome))
        }
        Command::SweepTokens { now_unix_secs } => {
            Ok((super::tokens::plan_sweep(r, *now_unix_secs)?, Outcome::default()))
        }
        Command::SetController { key, value } => {
            check_config_key(key)?;
            check_value("value", value)?;
            Ok((vec![set(format!("c/{key}"), value.clone())], Outcome::default()))
        }
    }
}

fn claim_machine(
    r: &Replica,
    machine: &str,
    agent: &str,
) -> Result<(Vec<Change>, Outcome), CommandError> {
    if !alive(r, &format!("m/{machine}/life")) {
        return Err(CommandError::UnknownMachine(machine.into()));
    }
    let key = format!("m/{machine}/agent");
    let claimed = r.get(&key);
    if claimed.iter().any(|a| a != agent) {
        return Err(CommandError::AlreadyClaimed {
            machine: machine.into(),
            agent: claimed.join(", "),
        });
    }
    let changes = if claimed.is_empty() { vec![set(key, agent)] } else { Vec::new() };
    Ok((changes, Outcome { ids: vec![machine.into()], ..Default::default() }))
}

/// One machine placed on pool host `host`: refused unless the host is in
/// the pool and no live machine is placed there already (a host runs one
/// instance).
fn enlist_machine(
    r: &Replica,
    id: RequestId,
    host: &str,
) -> Result<(Vec<Change>, Outcome), CommandError> {
    if !super::controllers::has_host(r, host) {
        return Err(CommandError::Invalid {
            what: "host".into(),
            value: host.into(),
            rule: "not in the pool (juju add-host it first)".into(),
        });
    }
    let facts = super::controllers::machines(r);
    if let Some(f) = facts.iter().find(|f| f.alive && f.host.as_deref() == Some(host)) {
        return Err(CommandError::Invalid {
            what: "host".into(),
            value: host.into(),
            rule: format!("machine {} is enlisted there already", f.id),
        });
    }
    let ids = entity_ids(id, 1);
    let mut changes: Vec<Change> = ids.iter().flat_map(|m| new_machine(m)).collect();
    changes.extend(ids.iter().map(|m| set(format!("m/{m}/host"), host)));
    Ok((changes, Outcome { machines: ids.clone(), ids, ..Default::default() }))
}

fn remove_machine(r: &Replica, id: &str) -> Result<(Vec<Change>, Outcome), CommandError> {
    if !alive(r, &format!("m/{id}/life")) {
        return Err(CommandError::UnknownMachine(id.into()));
    }
    let units = units_on(r, id);
    if !units.is_empty() {
        return Err(CommandError::MachineInUse { id: id.into(), units: units.join(", ") });
    }
    let mut changes = vec![set(format!("m/{id}/life"), "dead")];
    if super::controllers::is_controller(r, id) {
        // Removing a controller means one manager fewer, not a replacement.
        let live = super::controllers::live_controllers(r) as u32;
        if live <= 1 {
            return Err(invalid(
                "machine",
                id,
                "is the last controller; use `juju destroy` to end the environment",
            ));
        }
        let desired = super::controllers::ha_desired(r).min(live).saturating_sub(1).max(1);
        changes.push(set(format!("c/{}", super::controllers::HA_DESIRED_KEY), desired.to_string()));
    }
    Ok((changes, Outcome { ids: vec![id.into()], ..Default::default() }))
}

/// The live units placed on machine `id`, by unit id, as [`view`] shows
/// them. Unit `<app>/<x>` is placed on machine `<x>` (placement never
/// moves a unit), so this looks up `<app>/<id>` for each application: a
/// removal of a machine costs `O(applications)` lookups, not a walk over
/// every unit ([`units_on_by_scan`], which tests check it against).
pub(crate) fn units_on(r: &Replica, id: &str) -> Vec<String> {
    let apps: Vec<String> = r
        .entries_with_prefix_where("a/", app_of_life_key)
        .map(|(app, _)| app.to_string())
        .collect();
    let mut units: Vec<String> = apps
        .into_iter()
        .filter(|app| {
            alive(r, &format!("u/{app}/{id}/life"))
                && r.get(&format!("u/{app}/{id}/machine")).iter().any(|v| v == id)
        })
        .map(|app| format!("{app}/{id}"))
        .collect();
    units.sort();
    units
}

/// The application an `a/<app>/life` key names.
fn app_of_life_key(key: &str) -> Option<&str> {
    key.strip_prefix("a/")?.strip_suffix("/life").filter(|app| !app.contains('/'))
}

/// [`units_on`] by a walk over the unit keys (the reference in tests).
#[cfg(test)]
pub(crate) fn units_on_by_scan(r: &Replica, id: &str) -> Vec<String> {
    let mut units: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for (key, vals) in r.entries_with_prefix("u/") {
        let parts: Vec<&str> = key.split('/').collect();
        let ["u", app, n, field] = parts.as_slice() else { continue };
        let e = units.entry(format!("{app}/{n}")).or_default();
        match *field {
            "life" => e.0 = alive_values(&vals),
            "machine" => e.1 = vals.iter().any(|v| v == id),
            _ => {}
        }
    }
    units.into_iter().filter(|(_, (alive, on))| *alive && *on).map(|(u, _)| u).collect()
}

fn deploy(
    r: &Replica,
    id: RequestId,
    name: &str,
    command: &str,
    n: u32,
) -> Result<(Vec<Change>, Outcome), CommandError> {
    check_name(name)?;
    check_count(n)?;
    check_value("command", command)?;
    if command.trim().is_empty() {
        return Err(invalid("command", command, "must not be empty"));
    }
    // The same request again (its first attempt only partly here) is not
    // a second deploy: it writes the same keys and values once more.
    let same_request = r.get(&format!("a/{name}/request")) == [request_text(id)];
    if !r.get(&format!("a/{name}/life")).is_empty() && !same_request {
        return Err(CommandError::AlreadyExists(name.into()));
    }
    let mut changes = vec![
        set(format!("a/{name}/life"), "alive"),
        set(format!("a/{name}/command"), command),
        set(format!("a/{name}/request"), request_text(id)),
    ];
    let (more, outcome) = add_units(id, name, n);
    changes.extend(more);
    Ok((changes, outcome))
}

/// The machines a command created, from the ids it recorded (a retry
/// answered from the record reports them as the first answer did): for
/// `AddMachine` the ids themselves, for `Deploy` and `AddUnit` the machine
/// of each unit `<app>/<x>`, which is `<x>`.
pub fn created_machines(cmd: &Command, ids: &[String]) -> Vec<String> {
    match cmd {
        Command::AddMachine { .. } | Command::EnlistMachine { .. } => ids.to_vec(),
        Command::Deploy { .. } | Command::AddUnit { .. } => {
            ids.iter().filter_map(|u| u.split_once('/').map(|(_, m)| m.to_string())).collect()
        }
        _ => Vec::new(),
    }
}

/// Each new unit goes on a new machine (juju's default placement); unit
/// `<app>/<x>` goes on machine `<x>`.
fn add_units(id: RequestId, app: &str, n: u32) -> (Vec<Change>, Outcome) {
    let machines = entity_ids(id, n);
    let units = &machines;
    let mut changes = Vec::with_capacity(6 * n as usize);
    let mut ids = Vec::new();
    for (m, u) in machines.iter().zip(units) {
        changes.extend(new_machine(m));
        changes.push(set(format!("u/{app}/{u}/life"), "alive"));
        changes.push(set(format!("u/{app}/{u}/machine"), m.clone()));
        changes.push(set(format!("u/{app}/{u}/status"), "pending"));
        ids.push(format!("{app}/{u}"));
    }
    (changes, Outcome { ids, machines, ..Default::default() })
}

/// Placement on existing machines: 1 to 1,000 distinct live machines that
/// host units, none of which runs a unit of `app` already.
fn check_placement(r: &Replica, app: &str, to: &[String]) -> Result<(), CommandError> {
    check_count(to.len() as u32)?;
    for (i, m) in to.iter().enumerate() {
        if to[..i].contains(m) {
            return Err(invalid("placement", m, "names a machine twice"));
        }
        if !alive(r, &format!("m/{m}/life")) {
            return Err(CommandError::UnknownMachine(m.clone()));
        }
        if !r.get(&format!("m/{m}/jobs")).iter().any(|j| j.split(',').any(|j| j == "host-units")) {
            return Err(invalid("placement", m, "is a controller, which hosts no units"));
        }
        if alive(r, &format!("u/{app}/{m}/life")) {
            return Err(invalid("placement", m, "runs a unit of this application already"));
        }
    }
    Ok(())
}

/// Units `<app>/<m>` on existing machines `to`.
fn place_units(app: &str, to: &[String]) -> (Vec<Change>, Outcome) {
    let mut changes = Vec::with_capacity(3 * to.len());
    let mut ids = Vec::with_capacity(to.len());
    for m in to {
        changes.push(set(format!("u/{app}/{m}/life"), "alive"));
        changes.push(set(format!("u/{app}/{m}/machine"), m.clone()));
        changes.push(set(format!("u/{app}/{m}/status"), "pending"));
        ids.push(format!("{app}/{m}"));
    }
    (changes, Outcome { ids, ..Default::default() })
}

fn set_config(
    r: &Replica,
    app: &str,
    pairs: &[(String, String)],
) -> Result<(Vec<Change>, Outcome), CommandError> {
    if !alive(r, &format!("a/{app}/life")) {
        return Err(CommandError::UnknownApplication(app.into()));
    }
    let mut changes = Vec::new();
    for (k, v) in pairs {
        check_config_key(k)?;
        check_value("config value", v)?;
        changes.push(set(format!("a/{app}/config/{k}"), v.clone()));
    }
    Ok((changes, Outcome { ids: vec![app.into()], ..Default::default() }))
}

/// A value as shown: one value, or every sibling of a conflict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown(pub Vec<String>);

impl Shown {
    pub fn is_conflict(&self) -> bool {
        self.0.len() > 1
    }
    pub fn contains(&self, v: &String) -> bool {
        self.0.contains(v)
    }
    /// One line: the value, or `a | b` marked as a conflict.
    pub fn text(&self) -> String {
        match self.0.len() {
            0 => "-".into(),
            1 => self.0[0].clone(),
            _ => format!("CONFLICT({})", self.0.join(" | ")),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineView {
    pub id: String,
    /// The node id of the machine's agent, once one has joined.
    pub agent: Shown,
    /// The agent's presence as SWIM sees it from the answering manager:
    /// alive, suspect, down, left, or `pending` before any agent joined.
    /// Filled in by the node; empty in a bare replica view.
    pub presence: String,
    pub jobs: Shown,
    pub instance: Shown,
    pub addresses: Shown,
    pub status: Shown,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    pub command: Shown,
    pub config: BTreeMap<String, Shown>,
    /// Live units.
    pub scale: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitView {
    pub id: String,
    pub machine: Shown,
    pub status: Shown,
    /// The presence of the unit's machine agent (see
    /// [`MachineView::presence`]); filled in by the node.
    pub agent: String,
}

/// Everything `juju status` shows, live entities only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub machines: Vec<MachineView>,
    pub applications: Vec<AppView>,
    pub units: Vec<UnitView>,
    pub controller: BTreeMap<String, Shown>,
}

/// Builds the status view from every key (one pass, key order).
pub fn view(r: &Replica) -> StatusView {
    let mut b = ViewBuilder::default();
    for (key, vals) in r.entries() {
        b.add(key, vals);
    }
    b.finish()
}

/// The entity a document key belongs to: `m/ID/` for a machine's keys,
/// `u/APP/N/` for a unit's (the prefix [`view_of`] takes), `None` for any
/// other key.
pub fn entity_prefix(key: &str) -> Option<&str> {
    let depth = if key.starts_with("m/") {
        2
    } else if key.starts_with("u/") {
        3
    } else {
        return None;
    };
    let (end, _) = key.match_indices('/').nth(depth - 1)?;
    Some(&key[..=end])
}

/// The status view of some entities only (machines and units, named by
/// their [`entity_prefix`]), with the machines of those units too, so a
/// unit's agent presence can be filled in; applications and controller
/// settings are left empty. Walks only those entities' keys.
pub fn view_of(r: &Replica, entities: &BTreeSet<String>) -> StatusView {
    let mut b = ViewBuilder::default();
    let mut machines: BTreeSet<String> = BTreeSet::new();
    for prefix in entities {
        for (key, vals) in r.entries_with_prefix(prefix) {
            if prefix.starts_with("u/") && key.ends_with("/machine") {
                machines.extend(vals.iter().map(|m| format!("m/{m}/")));
            }
            b.add(key, vals);
        }
    }
    for prefix in machines.difference(entities) {
        for (key, vals) in r.entries_with_prefix(prefix) {
            b.add(key, vals);
        }
    }
    b.finish()
}

/// Entities gathered key by key (keys of one entity in any order), then
/// the live ones kept.
#[derive(Default)]
struct ViewBuilder {
    machines: BTreeMap<String, (bool, MachineView)>,
    apps: BTreeMap<String, (bool, AppView)>,
    units: BTreeMap<String, (bool, UnitView)>,
    out: StatusView,
}

fn is_live(shown: &Shown) -> bool {
    alive_values(&shown.0)
}

impl ViewBuilder {
    fn add(&mut self, key: &str, vals: Vec<String>) {
        let parts: Vec<&str> = key.split('/').collect();
        let shown = Shown(vals);
        match parts.as_slice() {
            ["m", id, field] => {
                let e = self.machines.entry(id.to_string()).or_insert_with(|| {
                    (false, MachineView { id: id.to_string(), ..Default::default() })
                });
                match *field {
                    "life" => e.0 = is_live(&shown),
                    "jobs" => e.1.jobs = shown,
                    "agent" => e.1.agent = shown,
                    "instance" => e.1.instance = shown,
                    "addresses" => e.1.addresses = shown,
                    "status" => e.1.status = shown,
                    _ => {}
                }
            }
            ["a", name, rest @ ..] => {
                let e = self.apps.entry(name.to_string()).or_insert_with(|| {
                    (false, AppView { name: name.to_string(), ..Default::default() })
                });
                match rest {
                    ["life"] => e.0 = is_live(&shown),
                    ["command"] => e.1.command = shown,
                    ["config", k] => {
                        e.1.config.insert(k.to_string(), shown);
                    }
                    _ => {}
                }
            }
            ["u", app, n, field] => {
                let id = format!("{app}/{n}");
                let e = self
                    .units
                    .entry(id.clone())
                    .or_insert_with(|| (false, UnitView { id, ..Default::default() }));
                match *field {
                    "life" => e.0 = is_live(&shown),
                    "machine" => e.1.machine = shown,
                    "status" => e.1.status = shown,
                    _ => {}
                }
            }
            ["c", setting] => {
                self.out.controller.insert(setting.to_string(), shown);
            }
            _ => {}
        }
    }

    fn finish(self) -> StatusView {
        let mut out = self.out;
        out.units = self.units.into_values().filter(|(a, _)| *a).map(|(_, u)| u).collect();
        // Live units per application, in one pass (not one per application).
        let mut scale: BTreeMap<&str, usize> = BTreeMap::new();
        for u in &out.units {
            *scale.entry(u.id.split('/').next().unwrap_or_default()).or_default() += 1;
        }
        let mut apps = self.apps;
        for (_, app) in apps.values_mut() {
            app.scale = scale.get(app.name.as_str()).copied().unwrap_or(0);
        }
        out.machines = self.machines.into_values().filter(|(a, _)| *a).map(|(_, m)| m).collect();
        out.applications = apps.into_values().filter(|(a, _)| *a).map(|(_, a)| a).collect();
        out
    }
}
