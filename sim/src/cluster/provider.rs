//! The simulated provider (part of `cluster`): a cloud API that every
//! manager reaches, whatever partitions cut the cluster's own network, a
//! few milliseconds each way. Partitions in the simulator cut the links
//! between machines, not their way to the cloud's API; a manager that
//! cannot reach the API is not modelled (docs/GUARANTEES.md does not
//! promise healing then). The API's records of instances are the truth the
//! `instances` checker reads.
//!
//! `Start` creates the instance if its name is new (else it answers
//! `Started { existed: true }`) and boots a process in a new slot: for an
//! agent machine an agent bound to the machine; for a controller machine
//! a manager with a fresh node id, that controller machine, the seeds it
//! was given and an empty state (anti-entropy fills it). `Stop` stops the
//! instance's process, gracefully (leave, then exit) or at once (SIGKILL,
//! a frozen process too), and reports `Stopped`; a stopped instance's slot
//! never runs again. Agent instances beyond the run's initial agents are
//! limited by a quota, as a cloud account is (a refused start is `Failed`,
//! and the provisioner backs off).
//!
//! Owns the instance records (bounded by `MAX_INSTANCES`). Must never start
//! a second process under a name it holds (except the planted bug), and
//! never answer a request before it reached the API.

use std::collections::BTreeMap;
use std::time::Duration;

use jujud::core::Role;
use jujud::core::control::provider::{ProviderCmd, ProviderResult};
use jujud::core::node::AgentSpec;
use rand::RngExt;

use super::{Cluster, Ev};
use crate::notes::{ExitKind, ExitWhy, SimNote};
use crate::planted::PlantedBug;
use crate::queue::VTime;
use crate::trace::{Fnv1a, TraceKind};

/// One way to the cloud's API and back, each.
pub const PROVIDER_LATENCY_MIN_US: u64 = 5_000;
pub const PROVIDER_LATENCY_MAX_US: u64 = 50_000;
/// A new instance's process starts this long after the API answered.
pub const INSTANCE_BOOT_MIN_MS: u64 = 200;
pub const INSTANCE_BOOT_MAX_MS: u64 = 1_000;
/// Running agent instances the account allows beyond the run's initial
/// agents (the workload's deploys create more machines than this).
pub const AGENT_QUOTA_EXTRA: usize = 4;
/// Most instances ever (every one is a slot; slots are never reused).
pub const MAX_INSTANCES: usize = 4_096;

/// One instance, as the cloud records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub machine: String,
    pub slot: usize,
    pub manager: bool,
    pub running: bool,
    pub started_at: VTime,
}

/// The cloud's side.
#[derive(Debug, Default)]
pub struct Provider {
    /// Every instance ever, by name.
    pub instances: BTreeMap<String, Instance>,
    /// Running agent instances allowed.
    pub agent_quota: usize,
    pub starts: u64,
    pub duplicates_refused: u64,
    pub quota_refused: u64,
    pub stops: u64,
}

impl Provider {
    /// Instances running for `machine`.
    pub fn running_for<'a>(&'a self, machine: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.values().filter(move |i| i.running && i.machine == machine)
    }

    fn running_agents(&self) -> usize {
        self.instances.values().filter(|i| i.running && !i.manager).count()
    }
}

fn latency(rng: &mut rand_chacha::ChaCha8Rng) -> Duration {
    Duration::from_micros(rng.random_range(PROVIDER_LATENCY_MIN_US..=PROVIDER_LATENCY_MAX_US))
}

impl Cluster {
    /// Records an instance that genesis created, running in `slot`.
    pub(super) fn record_instance(&mut self, name: String, machine: String, slot: usize, manager: bool) {
        self.slots[slot].instance = Some(name.clone());
        let i = Instance { name: name.clone(), machine, slot, manager, running: true, started_at: self.now() };
        self.provider.instances.insert(name, i);
    }

    /// `Output::Provider` from the manager in `slot`: the call reaches the
    /// API after a one-way latency.
    pub(super) fn provider_call(&mut self, slot: usize, cmd: ProviderCmd) {
        let now = self.now();
        self.trace.record(now, slot, TraceKind::Provider, cmd.req());
        self.sim_notes.push(SimNote::ProviderCall { slot, cmd: cmd.clone() });
        let epoch = self.slots[slot].epoch;
        let at = now + latency(&mut self.provider_rng);
        self.push_control_free(at, Ev::ProviderCall { from: slot, epoch, cmd: Box::new(cmd) });
    }

    /// The call reached the API: carry it out, answer after the way back.
    pub(super) fn provider_arrived(&mut self, from: usize, epoch: u32, cmd: ProviderCmd) {
        let result = match cmd {
            ProviderCmd::Start { req, instance, machine, manager, seeds, .. } => {
                self.provider_start(from, req, instance, machine, manager, seeds)
            }
            ProviderCmd::Stop { req, instance, machine, graceful, .. } => {
                self.provider_stop(req, instance, machine, graceful)
            }
        };
        let Some(result) = result else { return };
        let at = self.now() + latency(&mut self.provider_rng);
        self.push_control_free(at, Ev::ProviderReply { slot: from, epoch, result: Box::new(result) });
    }

    fn provider_start(
        &mut self,
        from: usize,
        req: u64,
        instance: String,
        machine: String,
        manager: bool,
        seeds: Vec<std::net::SocketAddr>,
    ) -> Option<ProviderResult> {
        let forgets = self.bug == Some(PlantedBug::ProviderForgetsNames) && !manager;
        if let Some(i) = self.provider.instances.get(&instance).filter(|_| !forgets) {
            self.provider.duplicates_refused += 1;
            let address = self.slots[i.slot].addr.to_string();
            return Some(ProviderResult::Started { req, instance, machine, address, existed: true });
        }
        let failed = |error: &str| ProviderResult::Failed {
            req,
            instance: instance.clone(),
            machine: machine.clone(),
            error: error.into(),
        };
        if !manager && !forgets && self.provider.running_agents() >= self.provider.agent_quota {
            self.provider.quota_refused += 1;
            return Some(failed("the account's instance quota is used up"));
        }
        if self.slots.len() >= MAX_INSTANCES.min(u16::MAX as usize) {
            return Some(failed("the cloud has no capacity left"));
        }
        self.provider.starts += 1;
        let role = if manager { Role::Manager } else { Role::Agent };
        let side = self.network.partition().map(|p| p.side_a.get(from).copied().unwrap_or(false));
        let slot = self.add_slot(role, side);
        let addr = self.slots[slot].addr;
        let s = &mut self.slots[slot];
        s.seeds = seeds;
        if manager {
            s.controller_machine = Some(machine.clone());
        } else {
            s.agent = Some(AgentSpec { machine: machine.clone(), address: addr.to_string() });
        }
        s.instance = Some(instance.clone());
        let now = self.now();
        let record = Instance {
            name: instance.clone(),
            machine: machine.clone(),
            slot,
            manager,
            running: true,
            started_at: now,
        };
        // The planted forgetful provider keeps only the newest record of a
        // name, under a unique key, so both instances stay on record.
        let key = if forgets && self.provider.instances.contains_key(&instance) {
            format!("{instance}#{slot}")
        } else {
            instance.clone()
        };
        self.provider.instances.insert(key, record);
        self.sim_notes.push(SimNote::InstanceStarted {
            instance: instance.clone(),
            machine: machine.clone(),
            slot,
            manager,
        });
        let boot = Duration::from_millis(self.provider_rng.random_range(INSTANCE_BOOT_MIN_MS..=INSTANCE_BOOT_MAX_MS));
        self.push_control_free(now + boot, Ev::Boot { slot });
        if manager && self.bug == Some(PlantedBug::ProviderDropsManagerStarts) {
            self.slots[slot].retired = true;
        }
        if forgets {
            // ...and its answers are lost, so the provisioner asks again.
            return None;
        }
        Some(ProviderResult::Started { req, instance, machine, address: addr.to_string(), existed: false })
    }

    fn provider_stop(&mut self, req: u64, instance: String, machine: String, graceful: bool) -> Option<ProviderResult> {
        let Some(i) = self.provider.instances.get_mut(&instance) else {
            let error = format!("instance {instance} does not exist");
            return Some(ProviderResult::Failed { req, instance, machine, error });
        };
        let (slot, was_running) = (i.slot, i.running);
        i.running = false;
        if was_running {
            self.provider.stops += 1;
            self.sim_notes.push(SimNote::InstanceStopped {
                instance: instance.clone(),
                machine: machine.clone(),
                slot,
            });
            self.stop_slot(slot, graceful);
        }
        Some(ProviderResult::Stopped { req, instance, machine, fenced: false })
    }

    /// Stops the process in `slot` for good: gracefully if it runs and is
    /// not frozen, else at once.
    fn stop_slot(&mut self, slot: usize, graceful: bool) {
        self.slots[slot].retired = true;
        let Some(identity) = self.slots[slot].identity().cloned() else {
            self.sim_notes.push(SimNote::StoppedWhileDown { slot });
            return;
        };
        if graceful && self.slots[slot].is_live() {
            self.leave(slot);
            self.sim_notes.push(SimNote::Exited { slot, identity, kind: ExitKind::Left, why: ExitWhy::ProviderStop });
        } else {
            self.crash(slot, true);
            self.sim_notes.push(SimNote::Exited { slot, identity, kind: ExitKind::Killed, why: ExitWhy::ProviderStop });
        }
        self.trace.record(self.now(), slot, TraceKind::Provider, Fnv1a::of(b"stop"));
    }
}
