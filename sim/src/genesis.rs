//! The state a run starts from, as `juju bootstrap`, `enable-ha` and
//! `add-machine` would have left it: the provider settings (a simulated
//! cloud, see `provider.rs`), the desired number of managers (the run's
//! managers), a short healing grace, a controller machine for each initial
//! manager (recorded as running that manager, as the bootstrap records its
//! own), and a machine for each initial agent slot with one unit of the
//! application `base` on it, each with its instance recorded.
//!
//! Every initial manager's disk holds this state as one synced snapshot
//! written by a genesis actor, as if every manager had been restored from
//! the same backup. The alternative, bootstrapping one manager and letting
//! the HA keeper add the others through the provider, would start every run
//! with minutes of provisioning instead of the cluster the run asked for.
//!
//! Owns the genesis keys and ids. Must never be written after time zero,
//! and must derive every id from fixed request ids (no randomness), so that
//! a seed's ids do not depend on anything but the cluster's size.

use jujud::core::NodeId;
use jujud::core::control::provider::instance_name;
use jujud::core::state::controllers::{
    HA_DESIRED_KEY, HA_GRACE_KEY, MANAGE_JOB, MAX_MANAGERS, PROVIDER_KEY, PROVIDER_ROOT_KEY,
};
use jujud::core::state::model::entity_ids;
use jujud::core::state::{Actor, Change, Replica, Snapshot};

/// The healing grace the runs use (`c/ha-grace-ms`): short, so that HA
/// scenarios fit in a run; the core's default is 10 s.
pub const SIM_HA_GRACE_MS: u64 = 3_000;

/// The provider kind and root recorded in the state (`c/provider`).
pub const SIM_PROVIDER_KIND: &str = "sim";
pub const SIM_PROVIDER_ROOT: &str = "/sim-cloud";

/// The application every initial agent machine runs one unit of.
pub const BASE_APP: &str = "base";
pub const BASE_COMMAND: &str = "run base";

/// The genesis writer: a node id whose tag (top 16 bits) no slot ever
/// draws (the cluster reserves it).
pub const GENESIS_NODE: u64 = 0xffff_0000_0000_0001;
pub const GENESIS_TAG: u16 = 0xffff;

/// Fixed request ids the genesis machine ids derive from.
const CONTROLLERS_REQUEST: u64 = 0x5e_ed00_0000_0001;
const AGENTS_REQUEST: u64 = 0x5e_ed00_0000_0002;

/// The starting state, and what it named.
#[derive(Clone, Debug)]
pub struct Genesis {
    pub snapshot: Snapshot,
    /// Controller machine of each initial manager, in slot order.
    pub controllers: Vec<String>,
    /// Machine of each initial agent slot, in slot order.
    pub agent_machines: Vec<String>,
    /// Whether a provider is configured (only for at most `MAX_MANAGERS`
    /// managers: Juju's limit; a larger control plane runs without HA).
    pub provider: bool,
}

fn set(key: String, value: impl Into<String>) -> Change {
    Change::Set { key, value: value.into() }
}

fn machine(id: &str, jobs: &str, status: &str) -> Vec<Change> {
    vec![
        set(format!("m/{id}/life"), "alive"),
        set(format!("m/{id}/jobs"), jobs),
        set(format!("m/{id}/status"), status),
        set(format!("m/{id}/instance"), instance_name(id, 1)),
        set(format!("m/{id}/instance-by"), "genesis"),
    ]
}

/// The genesis state for managers with these node ids and `agents` agent
/// slots.
pub fn build(managers: &[NodeId], agents: usize, provider: bool) -> Genesis {
    let provider = provider && !managers.is_empty() && managers.len() <= MAX_MANAGERS as usize;
    let controllers =
        if managers.is_empty() { Vec::new() } else { entity_ids(CONTROLLERS_REQUEST, managers.len() as u32) };
    let agent_machines = if agents == 0 { Vec::new() } else { entity_ids(AGENTS_REQUEST, agents as u32) };
    let mut changes = Vec::new();
    if provider {
        changes.push(set(format!("c/{PROVIDER_KEY}"), SIM_PROVIDER_KIND));
        changes.push(set(format!("c/{PROVIDER_ROOT_KEY}"), SIM_PROVIDER_ROOT));
        changes.push(set(format!("c/{HA_DESIRED_KEY}"), managers.len().to_string()));
        changes.push(set(format!("c/{HA_GRACE_KEY}"), SIM_HA_GRACE_MS.to_string()));
    }
    for (id, node) in controllers.iter().zip(managers) {
        changes.extend(machine(id, MANAGE_JOB, "started"));
        changes.push(set(format!("m/{id}/agent"), node.to_string()));
    }
    if !agent_machines.is_empty() {
        changes.push(set(format!("a/{BASE_APP}/life"), "alive"));
        changes.push(set(format!("a/{BASE_APP}/command"), BASE_COMMAND));
    }
    for id in &agent_machines {
        changes.extend(machine(id, "host-units", "pending"));
        changes.push(set(format!("u/{BASE_APP}/{id}/life"), "alive"));
        changes.push(set(format!("u/{BASE_APP}/{id}/machine"), id.clone()));
        changes.push(set(format!("u/{BASE_APP}/{id}/status"), "pending"));
    }
    let mut replica = Replica::new(Actor { node: GENESIS_NODE, generation: 1 });
    replica.write(&changes);
    Genesis { snapshot: replica.snapshot_all(), controllers, agent_machines, provider }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_names_one_machine_per_slot_and_is_the_same_every_time() {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let g = build(&ids, 4, true);
        assert_eq!(g.controllers.len(), 3);
        assert_eq!(g.agent_machines.len(), 4);
        assert!(g.provider);
        let r = Replica::from_snapshot(Actor { node: 9, generation: 1 }, g.snapshot.clone());
        assert_eq!(r.get(&format!("m/{}/agent", g.controllers[1])), vec![NodeId(2).to_string()]);
        assert_eq!(r.get(&format!("u/base/{0}/machine", g.agent_machines[0])), vec![g.agent_machines[0].clone()]);
        assert_eq!(build(&ids, 4, true).agent_machines, g.agent_machines);
        assert!(!build(&[NodeId(1); 9], 0, true).provider, "more than 7 managers run without a provider");
        assert!(!build(&ids, 4, false).provider);
    }
}
