//! The provisioner: starts an instance, through the provider, for every
//! live machine that has none, and retries with backoff when the provider
//! fails.
//!
//! Owns the per-machine retry backoff. Must never start a second instance
//! for a machine: it asks only for the derived instance name, once per
//! flight, and the provider refuses a name it already has. Must never start
//! anything on a side that sees no majority of the desired managers while a
//! controller is out of sight: the majority will replace that side's
//! managers, and what they started (its only records, and the seeds it was
//! given) would go with them, an orphaned instance that never joins.

use std::collections::BTreeMap;
use std::time::Duration;

use super::provider::{ProviderCmd, instance_name};
use super::{ControlOut, Controller, Singleton, View};
use crate::core::state::controllers::{self, MachineFacts};
use crate::core::time::Time;

/// First and longest wait before retrying a failed start.
pub const PROVISION_RETRY_MIN_MS: u64 = 1_000;
pub const PROVISION_RETRY_MAX_MS: u64 = 30_000;

/// The provisioner's memory (reset when this node becomes the owner).
#[derive(Debug, Default)]
pub struct Provisioner {
    /// Consecutive failures and when to try again, per machine.
    failures: BTreeMap<String, (u32, Time)>,
    /// The pool of hosts the failures were met with: a changed pool (a
    /// host added) is tried at once, not after the backoff.
    pool: Vec<String>,
}

impl Provisioner {
    /// A start of `machine` failed at `now`: back off before the next.
    pub fn failed(&mut self, machine: &str, now: Time) {
        let n = self.failures.get(machine).map_or(1, |(n, _)| n + 1);
        let wait = (PROVISION_RETRY_MIN_MS << (n - 1).min(16)).min(PROVISION_RETRY_MAX_MS);
        self.failures.insert(machine.to_string(), (n, now + Duration::from_millis(wait)));
    }
}

/// Whether this side may provision: it is in contact with a majority of
/// the desired managers, or with every provisioned controller (nothing is
/// cut off, as while growing from the bootstrap manager), as the HA keeper
/// requires to add managers. Contact, not SWIM's view: a side cut off by a
/// rolling partition still sees every controller alive for a while.
fn may_provision(view: &View<'_>) -> bool {
    if view.contact_majority() {
        return true;
    }
    let provisioned = |f: &&MachineFacts| {
        f.alive && f.controller && !(f.nodes.is_empty() && f.instance.is_none())
    };
    view.facts.iter().filter(provisioned).all(|f| view.in_contact_with(f))
}

/// The hosts the state shows holding an instance: a machine's recorded
/// instance address (unless the machine is dead and its instance stopped)
/// and the host a live machine is placed on. Sorted, without repeats.
pub fn busy_hosts(facts: &[MachineFacts]) -> Vec<String> {
    let mut busy: Vec<String> = facts
        .iter()
        .flat_map(|f| {
            let at = f.instance_at.as_deref().filter(|_| !(f.dead && f.instance_stopped));
            let placed = f.host.as_deref().filter(|_| f.alive);
            [at.map(controllers::host_of), placed]
        })
        .flatten()
        .map(str::to_string)
        .collect();
    busy.sort();
    busy.dedup();
    busy
}

/// One round: a start for each live machine without an instance.
pub fn run(c: &mut Controller, view: &View<'_>, out: &mut ControlOut) {
    let Some(spec) = view.provider.clone() else { return };
    if !may_provision(view) {
        c.stats.minority_holds += 1;
        return;
    }
    let seeds: Vec<std::net::SocketAddr> = view.live.iter().map(|m| m.addr).collect();
    // Walked only when a start is asked for (not on every control tick).
    let mut busy: Option<Vec<String>> = None;
    c.provisioner
        .failures
        .retain(|m, _| view.facts.iter().any(|f| &f.id == m && f.alive && f.instance.is_none()));
    if c.provisioner.pool != spec.hosts {
        c.provisioner.failures.clear();
        c.provisioner.pool = spec.hosts.clone();
    }
    // Controllers the keeper added in this very step (not in the facts yet).
    let added = std::mem::take(&mut c.keeper.added);
    let fresh: Vec<MachineFacts> = added
        .into_iter()
        .filter(|id| !view.facts.iter().any(|f| &f.id == id))
        .map(|id| MachineFacts {
            id,
            alive: true,
            controller: true,
            generation: 1,
            ..Default::default()
        })
        .collect();
    for f in view.facts.iter().chain(&fresh).filter(|f| f.alive && f.instance.is_none()) {
        if !c.has_room() {
            break;
        }
        if c.in_flight(&f.id, true)
            || c.provisioner.failures.get(&f.id).is_some_and(|(_, at)| *at > view.now)
        {
            continue;
        }
        let req = c.new_req();
        let instance = instance_name(&f.id, f.generation);
        let cmd = ProviderCmd::Start {
            req,
            provider: spec.clone(),
            instance: instance.clone(),
            machine: f.id.clone(),
            manager: f.controller,
            seeds: seeds.clone(),
            host: f.host.clone(),
            busy: busy.get_or_insert_with(|| busy_hosts(view.facts)).clone(),
        };
        c.fly(cmd, Singleton::Provisioner, view.now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, addr: &str) -> MachineFacts {
        MachineFacts {
            id: id.into(),
            alive: true,
            instance_at: Some(addr.into()),
            ..Default::default()
        }
    }

    #[test]
    fn busy_hosts_are_those_holding_an_instance_or_a_placement() {
        let running = at("0", "10.0.0.1:17070");
        // Healed: dead and fenced, its instance not stopped yet: still busy.
        let fenced = MachineFacts { alive: false, dead: true, ..at("1", "10.0.0.2:17070") };
        // Dead and stopped: its host is free again.
        let gone = MachineFacts {
            alive: false,
            dead: true,
            instance_stopped: true,
            ..at("2", "10.0.0.3:17070")
        };
        let placed = MachineFacts {
            id: "3".into(),
            alive: true,
            host: Some("10.0.0.4".into()),
            ..Default::default()
        };
        let twice = at("4", "10.0.0.1:17070");
        let busy = busy_hosts(&[running, fenced, gone, placed, twice]);
        assert_eq!(busy, ["10.0.0.1", "10.0.0.2", "10.0.0.4"]);
    }
}
