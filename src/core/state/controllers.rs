//! The control plane's own part of the model: the provider settings, the
//! desired number of managers and the healing grace, and the facts the
//! singleton workers read about machines (life, jobs, instance, which node
//! runs them).
//!
//! Owns the controller setting names and the machine keys that workers
//! write: `m/<id>/{instance,instance-by,instance-state,generation}`. Must
//! never decide anything: the workers in `core/control` do.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::CommandError;
use super::ids;
use super::replica::{Change, Replica};
use super::requests::RequestId;
use crate::core::control::provider::ProviderSpec;
use crate::core::identity::NodeId;

/// Controller settings (keys under `c/`).
pub const PROVIDER_KEY: &str = "provider";
pub const PROVIDER_ROOT_KEY: &str = "provider-root";
pub const HA_DESIRED_KEY: &str = "ha-desired";
pub const HA_GRACE_KEY: &str = "ha-grace-ms";
/// The pool of hosts of a provider that places on hosts: one key per host,
/// `h/<address>`, holding the runtime's entry (with the host's private key:
/// never shown by any API) or [`HOST_REMOVED`].
pub const HOST_PREFIX: &str = "h/";
/// The value of a removed host's key (keys are never deleted: see the
/// cleaner's note on tombstones).
pub const HOST_REMOVED: &str = "removed";
/// At most this many hosts in a pool (a start may look at every one).
pub const MAX_HOSTS: usize = 256;
/// Longest host address (a DNS name's limit).
pub const MAX_HOST_ADDRESS_BYTES: usize = 253;
/// Largest host entry (address, user, paths, pinned fingerprint and a
/// private key: an RSA-4096 key is about 3.3 KiB).
pub const MAX_HOST_ENTRY_BYTES: usize = 16 * 1024;
/// The job that makes a machine a controller.
pub const MANAGE_JOB: &str = "manage-environ";
/// At most this many managers (Juju's own limit: consensus and gossip both
/// grow costly past it, and nothing needs more).
pub const MAX_MANAGERS: u32 = 7;
/// How long a manager may be down before the HA keeper replaces it, unless
/// `c/ha-grace-ms` says otherwise.
pub const DEFAULT_HA_GRACE_MS: u64 = 10_000;
/// Bounds of `c/ha-grace-ms`.
pub const MIN_HA_GRACE_MS: u64 = 1_000;
pub const MAX_HA_GRACE_MS: u64 = 3_600_000;

fn setting(r: &Replica, key: &str) -> Option<String> {
    r.get(&format!("c/{key}")).into_iter().max()
}

/// The provider to start instances with, if one is configured; for a
/// provider over a pool of hosts, with the pool.
pub fn provider(r: &Replica) -> Option<ProviderSpec> {
    let (kind, root) = provider_name(r)?;
    let mut spec = ProviderSpec { kind, root, hosts: Vec::new() };
    if spec.places_on_hosts() {
        spec.hosts = hosts(r).into_iter().map(|(_, entry)| entry).collect();
    }
    Some(spec)
}

/// The configured provider's kind and root, without its pool (two setting
/// reads: what the control tick and status need, no host entry copied).
pub fn provider_name(r: &Replica) -> Option<(String, String)> {
    let kind = setting(r, PROVIDER_KEY)?;
    Some((kind, setting(r, PROVIDER_ROOT_KEY).unwrap_or_default()))
}

/// A host key's entry, unless removed: concurrent entries for one address
/// resolve to the largest (as every setting does).
fn live_entry(vals: Vec<String>) -> Option<String> {
    vals.into_iter().max().filter(|e| e != HOST_REMOVED)
}

/// The pool of hosts (`h/<address>`): `(address, entry)`, in address
/// order, removed hosts left out.
pub fn hosts(r: &Replica) -> Vec<(String, String)> {
    r.entries_with_prefix(HOST_PREFIX)
        .filter_map(|(k, vals)| Some((k[HOST_PREFIX.len()..].to_string(), live_entry(vals)?)))
        .collect()
}

/// Whether `address` is a host of the pool.
pub fn has_host(r: &Replica, address: &str) -> bool {
    live_entry(r.get(&format!("{HOST_PREFIX}{address}"))).is_some()
}

/// The host part of an instance address (`10.0.0.1:17070` -> `10.0.0.1`,
/// `[::1]:17070` -> `::1`, a bare host as it is).
pub fn host_of(at: &str) -> &str {
    match at.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() => {
            h.trim_start_matches('[').trim_end_matches(']')
        }
        _ => at,
    }
}

/// Checks a pool host for `juju add-host` (the entry's content is the
/// runtime's; only its size is bounded here).
pub fn check_host(r: &Replica, address: &str, entry: &str) -> Result<(), CommandError> {
    let invalid = |what: &str, value: &str, rule: String| CommandError::Invalid {
        what: what.into(),
        value: value.into(),
        rule,
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    if address.is_empty() || address.len() > MAX_HOST_ADDRESS_BYTES || !address.chars().all(ok_char)
    {
        return Err(invalid(
            "host address",
            address,
            format!("1 to {MAX_HOST_ADDRESS_BYTES} letters, digits, '.', '-', ':' or '_'"),
        ));
    }
    if entry.is_empty() || entry.len() > MAX_HOST_ENTRY_BYTES || entry == HOST_REMOVED {
        return Err(invalid(
            "host entry",
            &format!("{} bytes", entry.len()),
            format!("1 to {MAX_HOST_ENTRY_BYTES} bytes"),
        ));
    }
    let pool = r.entries_with_prefix(HOST_PREFIX).filter_map(|(_, vals)| live_entry(vals)).count();
    if !has_host(r, address) && pool >= MAX_HOSTS {
        return Err(invalid("host", address, format!("the pool holds at most {MAX_HOSTS} hosts")));
    }
    Ok(())
}

/// Checks `juju remove-host`: the host is in the pool and nothing alive
/// runs on it or is placed there.
pub fn check_remove_host(r: &Replica, address: &str) -> Result<(), CommandError> {
    if !has_host(r, address) {
        return Err(CommandError::Invalid {
            what: "host".into(),
            value: address.into(),
            rule: "not in the pool".into(),
        });
    }
    let on_host = |f: &MachineFacts| {
        f.host.as_deref() == Some(address)
            || f.instance_at.as_deref().is_some_and(|at| host_of(at) == address)
    };
    // A dead machine still counts until its instance is stopped (a fenced
    // one may still run there).
    if let Some(f) = machines(r).iter().find(|f| on_host(f) && (!f.dead || !f.instance_stopped)) {
        return Err(CommandError::Invalid {
            what: "host".into(),
            value: address.into(),
            rule: format!(
                "machine {} runs there; remove it first (juju remove-machine, or enable-ha for a controller)",
                f.id
            ),
        });
    }
    Ok(())
}

/// The desired number of managers (at least 1). Concurrent settings
/// resolve to the largest.
pub fn ha_desired(r: &Replica) -> u32 {
    r.get(&format!("c/{HA_DESIRED_KEY}"))
        .iter()
        .filter_map(|v| v.parse::<u32>().ok())
        .max()
        .unwrap_or(1)
        .clamp(1, MAX_MANAGERS)
}

/// How long a manager may be down before it is replaced.
pub fn ha_grace(r: &Replica) -> Duration {
    let ms =
        setting(r, HA_GRACE_KEY).and_then(|v| v.parse::<u64>().ok()).unwrap_or(DEFAULT_HA_GRACE_MS);
    Duration::from_millis(ms.clamp(MIN_HA_GRACE_MS, MAX_HA_GRACE_MS))
}

/// What the workers know about one machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineFacts {
    pub id: String,
    pub alive: bool,
    pub dead: bool,
    /// It has the manage-environ job: a controller.
    pub controller: bool,
    pub instance: Option<String>,
    pub instance_stopped: bool,
    /// Nodes recorded as running it (its agent, or the manager itself).
    pub nodes: Vec<NodeId>,
    /// The instance generation (1 unless bumped).
    pub generation: u64,
    /// Its instance's host could not be reached on the keeper's stop: the
    /// node is revoked, but the process may still run there.
    pub instance_fenced: bool,
    /// Where its instance was started (`m/<id>/instance-at`), recorded by
    /// providers that place on hosts.
    pub instance_at: Option<String>,
    /// The pool host it was enlisted on (`juju add-machine ssh:host`).
    pub host: Option<String>,
}

/// Every machine's facts, from one pass over the keys.
pub fn machines(r: &Replica) -> Vec<MachineFacts> {
    let mut out: BTreeMap<String, MachineFacts> = BTreeMap::new();
    for (key, vals) in r.entries() {
        let mut parts = key.splitn(3, '/');
        let (Some("m"), Some(id), Some(field)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let f = out.entry(id.to_string()).or_insert_with(|| MachineFacts {
            id: id.to_string(),
            generation: 1,
            ..Default::default()
        });
        match field {
            "life" => {
                f.dead = vals.iter().any(|v| v == "dead");
                f.alive = !vals.is_empty() && !f.dead;
            }
            "jobs" => f.controller = vals.iter().any(|v| v.split(',').any(|j| j == MANAGE_JOB)),
            "instance" => f.instance = vals.into_iter().max(),
            "instance-state" => {
                f.instance_stopped = vals.iter().any(|v| v == "stopped");
                f.instance_fenced = !f.instance_stopped && vals.iter().any(|v| v == "fenced");
            }
            "instance-at" => f.instance_at = vals.into_iter().max(),
            "host" => f.host = vals.into_iter().max(),
            "agent" => f.nodes = vals.iter().filter_map(|v| v.parse().ok()).collect(),
            "generation" => {
                f.generation = vals.iter().filter_map(|v| v.parse().ok()).max().unwrap_or(1)
            }
            _ => {}
        }
    }
    out.into_values().collect()
}

/// Changes creating `n` controller machines with ids derived from `id`
/// (as for any machine), and their ids. Two HA keepers that decide the same
/// addition from the same view pass the same id, and so create the same
/// machines: the copies merge into one. The replica is not read (ids
/// depend only on the request); the parameter keeps callers unchanged.
pub fn new_controllers(_r: &Replica, id: RequestId, n: u32) -> (Vec<Change>, Vec<String>) {
    if !(1..=ids::MAX_PER_COMMAND).contains(&n) {
        return (Vec::new(), Vec::new());
    }
    let ids = ids::entity_ids(id, n);
    let changes = ids
        .iter()
        .flat_map(|m| ids::new_machine(m))
        .map(|c| match c {
            Change::Set { key, .. } if key.ends_with("/jobs") => {
                Change::Set { key, value: MANAGE_JOB.into() }
            }
            other => other,
        })
        .collect();
    (changes, ids)
}

/// A change of one machine key.
pub fn set_machine(id: &str, field: &str, value: impl Into<String>) -> Change {
    Change::Set { key: format!("m/{id}/{field}"), value: value.into() }
}

/// What `juju bootstrap` asks of the first manager: the provider settings,
/// the desired number of managers, and its own controller machine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bootstrap {
    pub provider: String,
    pub root: String,
    pub desired: u32,
    /// The bootstrap manager's own instance name.
    pub instance: String,
    /// The bootstrap manager's node id (16 hex).
    pub node: String,
    /// The pool, for a provider that places on hosts: `(address, entry)`.
    pub hosts: Vec<(String, String)>,
    /// Where the bootstrap manager's own instance runs (its host).
    pub instance_at: Option<String>,
}

/// The changes of a bootstrap, and the new controller machine's id.
pub fn plan_bootstrap(r: &Replica, b: &Bootstrap) -> Result<(Vec<Change>, String), CommandError> {
    check_desired(b.desired)?;
    let id = crate::core::agent::choice::key_of_name(&format!("bootstrap|{}", b.node));
    let (mut changes, ids) = new_controllers(r, id, 1);
    let id = ids.into_iter().next().ok_or_else(|| CommandError::Invalid {
        what: "bootstrap".into(),
        value: String::new(),
        rule: "could not allocate a machine id".into(),
    })?;
    let set = |k: &str, v: &str| Change::Set { key: format!("c/{k}"), value: v.to_string() };
    changes.push(set(PROVIDER_KEY, &b.provider));
    changes.push(set(PROVIDER_ROOT_KEY, &b.root));
    changes.push(set(HA_DESIRED_KEY, &b.desired.to_string()));
    if b.hosts.len() > MAX_HOSTS {
        return Err(CommandError::Invalid {
            what: "hosts".into(),
            value: b.hosts.len().to_string(),
            rule: format!("at most {MAX_HOSTS}"),
        });
    }
    for (address, entry) in &b.hosts {
        check_host(r, address, entry)?;
        changes.push(Change::Set { key: format!("{HOST_PREFIX}{address}"), value: entry.clone() });
    }
    if let Some(at) = &b.instance_at {
        changes.push(set_machine(&id, "instance-at", at.clone()));
    }
    changes.push(set_machine(&id, "instance", b.instance.clone()));
    changes.push(set_machine(&id, "instance-by", format!("{}@bootstrap", b.node)));
    changes.push(set_machine(&id, "agent", b.node.clone()));
    changes.push(set_machine(&id, "status", "started"));
    Ok((changes, id))
}

/// The desired number of managers must be 1 to [`MAX_MANAGERS`].
pub fn check_desired(n: u32) -> Result<(), CommandError> {
    (1..=MAX_MANAGERS).contains(&n).then_some(()).ok_or_else(|| CommandError::Invalid {
        what: "number of managers".into(),
        value: n.to_string(),
        rule: format!("must be 1 to {MAX_MANAGERS} (odd numbers survive the loss of a minority)"),
    })
}

/// Why a live controller machine still has no instance: its last
/// provisioning error, if one was recorded (status and show-controller
/// say it beside the HA count).
pub fn why_short(r: &Replica) -> Option<String> {
    machines(r).iter().filter(|f| f.alive && f.controller && f.instance.is_none()).find_map(|f| {
        let status = r.get(&format!("m/{}/status", f.id)).into_iter().max()?;
        status.strip_prefix(PROVISIONING_ERROR).map(str::to_string)
    })
}

/// The prefix of a machine status the provisioner writes when a start
/// fails.
pub const PROVISIONING_ERROR: &str = "provisioning error: ";

/// Whether machine `id` is a live controller.
pub fn is_controller(r: &Replica, id: &str) -> bool {
    r.get(&format!("m/{id}/jobs")).iter().any(|v| v.split(',').any(|j| j == MANAGE_JOB))
}

/// Live controller machines.
pub fn live_controllers(r: &Replica) -> usize {
    machines(r).iter().filter(|f| f.alive && f.controller).count()
}
