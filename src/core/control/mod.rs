//! Singleton workers, sans-IO: every manager computes, from its own view of
//! the live managers, the owner of each singleton by rendezvous hash, and
//! runs the ones it owns: the provisioner (starts instances for machines),
//! the HA keeper (keeps the number of managers at the desired count, heals,
//! retires surplus), and the cleaner (stops instances of removed machines).
//!
//! Owns ownership, the provider requests in flight and the workers' memory.
//! Must never assume ownership is exclusive: two managers may both own a
//! worker for a moment after a failure, or for a whole partition. Every
//! side effect is therefore idempotent and fenced: instance names are
//! derived from the machine and its generation and the provider refuses a
//! duplicate; every action is recorded in the replicated state with the
//! owner and its generation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::core::agent::choice;
use crate::core::identity::{Identity, NodeId};
use crate::core::notices::Notice;
use crate::core::state::controllers::{self, MachineFacts};
use crate::core::state::{Change, Replica};
use crate::core::time::Time;

pub mod cleaner;
pub mod contact;
pub mod keeper;
pub mod provider;
pub mod provisioner;

#[cfg(test)]
mod tests;

use provider::{ProviderCmd, ProviderResult, ProviderSpec};

/// How often owned workers look at the state. Ownership itself is also
/// recomputed at once whenever a manager comes or goes.
pub const CONTROL_TICK_MS: u64 = 1_000;
/// The cleaner runs every this many ticks.
pub const CLEAN_EVERY_TICKS: u64 = 5;
/// A provider request without an answer this long is forgotten (and the
/// worker may ask again; the provider refuses duplicates).
pub const PROVIDER_TIMEOUT_MS: u64 = 60_000;
/// Most provider requests in flight at once, all workers together; past
/// it, workers wait for answers before asking more.
pub const MAX_PROVIDER_IN_FLIGHT: usize = 16;
/// A live manager counts toward a majority (for a heal, for adding
/// managers, for provisioning) only if it answered a probe round this node
/// sent this recently (see [`contact`]). With a provider configured, every
/// manager probes every live manager once a control tick (so a new owner
/// has its contact at once), and a side that was cut off stops counting
/// its far side within this window, long before SWIM declares the far
/// side down (its view lags the cut by up to the detection time).
pub const CONTACT_WINDOW_MS: u64 = 2_500;

/// The singleton workers, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Singleton {
    Provisioner,
    HaKeeper,
    Cleaner,
}

impl Singleton {
    pub const ALL: [Singleton; 3] =
        [Singleton::Provisioner, Singleton::HaKeeper, Singleton::Cleaner];

    pub fn name(self) -> &'static str {
        match self {
            Singleton::Provisioner => "provisioner",
            Singleton::HaKeeper => "ha-keeper",
            Singleton::Cleaner => "cleaner",
        }
    }
}

/// The owner of each singleton among `live` (manager ids), by rendezvous.
pub fn owners(live: &[NodeId]) -> BTreeMap<Singleton, NodeId> {
    Singleton::ALL
        .iter()
        .filter_map(|s| {
            Some((*s, choice::best(choice::key_of_name(s.name()), live.iter().copied())?))
        })
        .collect()
}

/// What `juju show-controller` and the head of `juju status` show, as
/// the answering manager sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControllerInfo {
    /// The desired number of managers.
    pub desired: u32,
    /// Managers alive (or suspect) in this manager's view, itself included.
    pub alive: u32,
    /// `(singleton, owner node id)` by rendezvous over the live managers.
    pub owners: Vec<(String, String)>,
    /// The provider (`local:<root>`), if one is configured.
    pub provider: Option<String>,
    /// How long a manager may be down before it is replaced.
    pub grace_ms: u64,
    /// Why fewer managers run than desired, when the provider said so (the
    /// last provisioning error of a controller machine still waiting for
    /// its instance, e.g. "no free host in cloud lab.yaml").
    pub short_because: Option<String>,
}

/// What the workers see at one moment.
pub struct View<'a> {
    pub now: Time,
    pub replica: &'a Replica,
    pub facts: &'a [MachineFacts],
    /// Live managers (alive or suspect), this node included.
    pub live: &'a [Identity],
    /// The live managers that answered the best probe round sent within
    /// [`CONTACT_WINDOW_MS`], this node included, sorted by id.
    pub contact: &'a [NodeId],
    /// This node as `<id>@<generation>`, recorded with every action.
    pub who: String,
    pub provider: Option<ProviderSpec>,
}

impl View<'_> {
    pub fn is_live(&self, id: NodeId) -> bool {
        self.live.iter().any(|m| m.id == id)
    }

    /// Whether `id` is a live manager in contact (see [`View::contact`]).
    pub fn in_contact(&self, id: NodeId) -> bool {
        self.contact.binary_search(&id).is_ok()
    }

    /// Whether a manager bound to this machine is in contact.
    pub fn in_contact_with(&self, f: &MachineFacts) -> bool {
        f.nodes.iter().any(|n| self.in_contact(*n))
    }

    /// Whether the managers in contact are a majority of the desired count.
    pub fn contact_majority(&self) -> bool {
        self.contact.len() as u32 * 2 > controllers::ha_desired(self.replica)
    }
}

/// Something worth telling the outside world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// This node started or stopped running a singleton.
    Ownership { singleton: Singleton, owned: bool },
    /// This node's own controller machine was removed: it must leave.
    Retired,
}

/// What the node must carry out.
#[derive(Debug, Default)]
pub struct ControlOut {
    pub provider: Vec<ProviderCmd>,
    pub changes: Vec<Change>,
    pub notices: Vec<Notice>,
    pub events: Vec<ControlEvent>,
}

/// A provider request in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flight {
    pub machine: String,
    pub instance: String,
    pub start: bool,
    pub since: Time,
    pub by: Singleton,
}

/// Counters for metrics, the simulator and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    pub starts_asked: u64,
    pub stops_asked: u64,
    /// Starts the provider refused as duplicates (another owner's).
    pub duplicates_refused: u64,
    pub provider_failures: u64,
    /// Keeper stops whose host could not be reached (the node revoked, the
    /// instance left to the cleaner).
    pub instances_fenced: u64,
    pub managers_added: u64,
    pub managers_healed: u64,
    pub managers_retired: u64,
    /// Heals or additions skipped because this side sees no majority.
    pub minority_holds: u64,
}

/// One manager's singleton workers.
#[derive(Debug)]
pub struct Controller {
    me: NodeId,
    /// This manager's own controller machine, if it has one.
    machine: Option<String>,
    owned: BTreeSet<Singleton>,
    next_req: u64,
    pub flights: BTreeMap<u64, Flight>,
    pub keeper: keeper::Keeper,
    pub provisioner: provisioner::Provisioner,
    retired: bool,
    ticks: u64,
    pub stats: ControlStats,
}

impl Controller {
    pub fn new(me: NodeId, machine: Option<String>) -> Controller {
        Controller {
            me,
            machine,
            owned: BTreeSet::new(),
            next_req: 0,
            flights: BTreeMap::new(),
            keeper: keeper::Keeper::default(),
            provisioner: provisioner::Provisioner::default(),
            retired: false,
            ticks: 0,
            stats: ControlStats::default(),
        }
    }

    /// The singletons this node runs now.
    pub fn owned(&self) -> &BTreeSet<Singleton> {
        &self.owned
    }

    /// This manager's controller machine.
    pub fn machine(&self) -> Option<&str> {
        self.machine.as_deref()
    }

    /// Adopts a controller machine (the bootstrap manager creates its own).
    pub fn set_machine(&mut self, machine: String) {
        self.machine = Some(machine);
    }

    /// Whether a tick with these owners and this provider reads the
    /// machine facts (they cost a pass over every key).
    pub fn needs_facts(&self, will_own: &BTreeSet<Singleton>, provider: bool) -> bool {
        let cleaning = will_own.contains(&Singleton::Cleaner)
            && (self.ticks + 1).is_multiple_of(CLEAN_EVERY_TICKS);
        provider && (cleaning || will_own.iter().any(|s| *s != Singleton::Cleaner))
    }

    /// The singletons this node owns among `live`.
    pub fn owned_among(&self, live: &[NodeId]) -> BTreeSet<Singleton> {
        owners(live).into_iter().filter(|(_, o)| *o == self.me).map(|(s, _)| s).collect()
    }

    pub(crate) fn new_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// Whether a request of this kind is in flight for `machine`.
    pub fn in_flight(&self, machine: &str, start: bool) -> bool {
        self.flights.values().any(|f| f.machine == machine && f.start == start)
    }

    /// Whether a heal (the HA keeper's stop) is in flight.
    pub fn healing(&self) -> bool {
        self.flights.values().any(|f| !f.start && f.by == Singleton::HaKeeper)
    }

    pub fn has_room(&self) -> bool {
        self.flights.len() < MAX_PROVIDER_IN_FLIGHT
    }

    /// Sends `cmd` to the provider and remembers it in flight.
    pub(crate) fn fly(&mut self, cmd: ProviderCmd, by: Singleton, now: Time, out: &mut ControlOut) {
        let (machine, instance, start) = match &cmd {
            ProviderCmd::Start { machine, instance, .. } => {
                (machine.clone(), instance.clone(), true)
            }
            ProviderCmd::Stop { machine, instance, .. } => {
                (machine.clone(), instance.clone(), false)
            }
        };
        if start {
            self.stats.starts_asked += 1;
        } else {
            self.stats.stops_asked += 1;
        }
        self.flights.insert(cmd.req(), Flight { machine, instance, start, since: now, by });
        out.provider.push(cmd);
    }

    /// Recomputes ownership and runs the owned workers (a periodic tick).
    pub fn tick(&mut self, view: &View<'_>, out: &mut ControlOut) {
        self.ticks += 1;
        let timeout = Duration::from_millis(PROVIDER_TIMEOUT_MS);
        self.flights.retain(|_, f| view.now.saturating_sub(f.since) < timeout);
        self.own_machine(view, out);
        if self.owned.contains(&Singleton::HaKeeper) {
            keeper::run(self, view, out);
        }
        if self.owned.contains(&Singleton::Provisioner) {
            provisioner::run(self, view, out);
        }
        if self.owned.contains(&Singleton::Cleaner) && self.ticks.is_multiple_of(CLEAN_EVERY_TICKS)
        {
            cleaner::run(self, view, out);
        }
        self.keeper.added.clear();
    }

    /// Membership changed: take or hand over singletons at once, and run
    /// the ones just taken.
    pub fn on_membership(&mut self, view: &View<'_>, out: &mut ControlOut) {
        let before = self.owned.clone();
        self.reown(view, out);
        if self.owned.contains(&Singleton::HaKeeper) && !before.contains(&Singleton::HaKeeper) {
            keeper::run(self, view, out);
        }
        if self.owned.contains(&Singleton::Provisioner) && !before.contains(&Singleton::Provisioner)
        {
            provisioner::run(self, view, out);
        }
    }

    fn reown(&mut self, view: &View<'_>, out: &mut ControlOut) {
        let ids: Vec<NodeId> = view.live.iter().map(|m| m.id).collect();
        let now_owned = self.owned_among(&ids);
        let changed: Vec<Singleton> =
            now_owned.symmetric_difference(&self.owned).copied().collect();
        for s in changed {
            let owned = now_owned.contains(&s);
            out.events.push(ControlEvent::Ownership { singleton: s, owned });
            if owned {
                self.reset(s);
            }
        }
        self.owned = now_owned;
    }

    fn reset(&mut self, s: Singleton) {
        match s {
            Singleton::HaKeeper => self.keeper = keeper::Keeper::default(),
            Singleton::Cleaner => {}
            Singleton::Provisioner => self.provisioner = provisioner::Provisioner::default(),
        }
    }

    /// Every manager, owner or not: claim its own controller machine, and
    /// leave when that machine was removed.
    fn own_machine(&mut self, view: &View<'_>, out: &mut ControlOut) {
        let Some(machine) = self.machine.clone() else { return };
        let nodes = view.replica.get(&format!("m/{machine}/agent"));
        match crate::core::state::agents::machine_life(view.replica, &machine) {
            crate::core::state::agents::MachineLife::Dead if !self.retired => {
                self.retired = true;
                out.events.push(ControlEvent::Retired);
            }
            crate::core::state::agents::MachineLife::Alive => {
                self.say_started(view, &machine, &nodes, out)
            }
            _ => {}
        }
    }

    /// Claims this manager's live controller machine, and says it is
    /// started and where: unclaimed, or claimed by an earlier identity of
    /// this process (a manager whose disk was lost comes back under a new
    /// id), or claimed for it at its join (`runtime::join` records a
    /// provider-started manager as its machine's node before it runs, which
    /// sets neither status nor address) while the machine still shows the
    /// `pending` it was added with. Writes only what differs.
    fn say_started(&self, view: &View<'_>, machine: &str, nodes: &[String], out: &mut ControlOut) {
        let me = self.me.to_string();
        let claimed = nodes.contains(&me);
        if !claimed {
            out.changes.push(controllers::set_machine(machine, "agent", me));
        }
        let status = view.replica.get(&format!("m/{machine}/status"));
        if !claimed || status.is_empty() || status.iter().any(|s| s == "pending") {
            out.changes.push(controllers::set_machine(machine, "status", "started"));
        }
        let ip = view.live.iter().find(|m| m.id == self.me).map(|m| m.addr.ip().to_string());
        if let Some(ip) = ip
            && view.replica.get(&format!("m/{machine}/addresses")) != [ip.as_str()]
        {
            out.changes.push(controllers::set_machine(machine, "addresses", ip));
        }
    }

    /// A provider answer; recorded whoever owns the worker now (the
    /// record is idempotent).
    pub fn on_provider(&mut self, view: &View<'_>, result: &ProviderResult, out: &mut ControlOut) {
        let Some(flight) = self.flights.remove(&result.req()) else { return };
        match result {
            ProviderResult::Started { instance, machine, existed, address, .. } => {
                if *existed {
                    self.stats.duplicates_refused += 1;
                }
                out.changes.push(controllers::set_machine(machine, "instance", instance.clone()));
                out.changes.push(controllers::set_machine(
                    machine,
                    "instance-by",
                    view.who.clone(),
                ));
                if view.provider.as_ref().is_some_and(|p| p.places_on_hosts()) {
                    out.changes.push(controllers::set_machine(
                        machine,
                        "instance-at",
                        address.clone(),
                    ));
                }
            }
            ProviderResult::Stopped { machine, fenced, .. } => {
                if *fenced {
                    // Revoked with the heal; the cleaner stops it for good
                    // once its host answers, and only then is it free.
                    self.stats.instances_fenced += 1;
                    tracing::warn!(%machine, "its host could not be reached: the instance is fenced (revoked) and will be stopped when the host answers");
                    out.changes.push(controllers::set_machine(machine, "instance-state", "fenced"));
                    out.changes.push(controllers::set_machine(
                        machine,
                        "status",
                        "fenced: its host could not be reached",
                    ));
                } else {
                    out.changes.push(controllers::set_machine(
                        machine,
                        "instance-state",
                        "stopped",
                    ));
                }
                // A keeper's stop is a heal: the machine dies only now, and
                // its replacement is added (and started, by this node's
                // provisioner) in the same step.
                if flight.by == Singleton::HaKeeper {
                    keeper::stopped(self, view, machine, out);
                    if self.owned.contains(&Singleton::Provisioner) {
                        provisioner::run(self, view, out);
                    }
                    self.keeper.added.clear();
                }
            }
            ProviderResult::Failed { machine, error, .. } => {
                self.stats.provider_failures += 1;
                tracing::warn!(%machine, %error, "provider request failed");
                if flight.start {
                    self.provisioner.failed(machine, view.now);
                    out.changes.push(controllers::set_machine(
                        machine,
                        "status",
                        format!(
                            "{}{}",
                            controllers::PROVISIONING_ERROR,
                            crate::core::agent::clip_status(error)
                        ),
                    ));
                }
            }
        }
    }
}
