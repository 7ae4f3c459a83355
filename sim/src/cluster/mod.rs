//! The simulated cluster: one slot per machine, each running the very same
//! `jujud::core::Node` the daemon runs, wired together through the network
//! model and the event queue. Delivers datagrams, handshakes and timers;
//! crashes, restarts, pauses, resumes and graceful leaves processes.
//!
//! Managers hold replicated state: the cluster carries out its outputs
//! (persisting to the simulated disk, state streams between managers,
//! replies to client writes) in `cluster/state.rs`. Agents run with their
//! machine (`NodeConfig.agent`): their sessions with managers are carried
//! out in `sessions.rs`, their workloads in `agents.rs`; the managers'
//! provider requests go to the simulated cloud in `provider.rs`, which
//! adds slots as it starts instances. Starting, killing, pausing and
//! resuming a process is in `lifecycle.rs`.
//!
//! Owns the processes, their simulated disks and clocks, and the queue.
//! Must never decide *when* to inject a fault (the run loop and the fault
//! policy do), must never iterate a HashMap, and must never read real time.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use jujud::core::control::provider::ProviderResult;
use jujud::core::node::AgentSpec;
use jujud::core::state::VersionVector;
use jujud::core::{Event, Identity, Input, Node, NodeId, Output, PeerCert, Role, Timer, Timing};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::clock::NodeClock;
use crate::disk::StateDisk;
use crate::faults::Control;
use crate::genesis::{GENESIS_TAG, Genesis};
use crate::network::{NetParams, Network};
use crate::notes::{ExitKind, ExitWhy, SimNote};
use crate::planted::PlantedBug;
use crate::queue::{EventQueue, VTime};
use crate::trace::{Fnv1a, Trace, TraceKind};
use crate::workload::StateNote;

mod state;
pub use state::MAX_OUTSTANDING_WRITES;
use state::Request;

mod sessions;
pub use sessions::{SESSION_IDLE_TIMEOUT, SESSION_OPEN_TIMEOUT, SessionEv, SessionStats, Sessions};

mod agents;
pub use agents::{WORKLOAD_MEAN_LIFETIME_MS, WorkloadEv, Workloads, spec_digest};

mod lifecycle;

mod provider;
pub use provider::{AGENT_QUOTA_EXTRA, INSTANCE_BOOT_MAX_MS, Instance, PROVIDER_LATENCY_MAX_US, Provider};

/// Most events held for one paused process. At the bound further datagrams
/// and handshakes are dropped (a full socket buffer); timers are always kept
/// (a node has only a handful outstanding).
pub const MAX_HELD_EVENTS_PER_NODE: usize = 65_536;

/// Processes boot at a random time in this window at the start of a run.
pub const BOOT_SPREAD_MS: u64 = 1_000;

/// Largest random origin offset of a process's local clock.
pub const CLOCK_OFFSET_MAX_SECS: u64 = 86_400;

/// The port every simulated node listens on.
const LISTEN_PORT: u16 = 7_000;

/// Everything the queue can hold.
#[derive(Debug)]
pub enum Ev {
    /// A slot's first boot.
    Boot { slot: usize },
    /// A datagram arriving at `slot` (for the process of `epoch` only).
    Datagram { slot: usize, epoch: u32, from: PeerCert, from_slot: usize, bytes: Vec<u8> },
    /// A handshake the process of `epoch` started has completed.
    Identified { slot: usize, epoch: u32, addr: SocketAddr, peer: PeerCert },
    /// A timer the process of `epoch` asked for.
    Timer { slot: usize, epoch: u32, timer: Timer },
    /// The process of `epoch`'s own state operations up to `seq` are synced.
    Durable { slot: usize, epoch: u32, seq: u64 },
    /// The process of `epoch`'s foreign batch, or snapshot, holding up to
    /// `vv` is synced (see `cluster/state.rs`).
    DurableRemote { slot: usize, epoch: u32, vv: VersionVector },
    /// A state message (a QUIC stream in reality) arriving at `slot`.
    State { slot: usize, epoch: u32, from: PeerCert, bytes: Vec<u8> },
    /// A membership exchange message (a QUIC stream in reality) arriving
    /// at `slot`.
    Members { slot: usize, epoch: u32, from: PeerCert, bytes: Vec<u8> },
    /// A fault injection or recovery (handled by the run loop).
    Control(Control),
    /// Something for one end of an agent session (`sessions.rs`).
    Session { slot: usize, epoch: u32, what: SessionEv },
    /// A session's idle timeout after its path died (`sessions.rs`); the
    /// pause counters of its ends when it was armed.
    SessionIdle { link: u64, pauses: (u32, u32) },
    /// Something about an agent's workloads (`agents.rs`).
    Workload { slot: usize, epoch: u32, what: Box<WorkloadEv> },
    /// A manager's provider request reaches the cloud's API.
    ProviderCall { from: usize, epoch: u32, cmd: Box<jujud::core::control::provider::ProviderCmd> },
    /// The provider's answer reaches the manager that asked.
    ProviderReply { slot: usize, epoch: u32, result: Box<ProviderResult> },
}

/// What survives a crash when the disk is kept.
#[derive(Clone, Debug)]
pub struct Disk {
    pub id: NodeId,
    /// The generation of the last start or forced rejoin.
    pub generation: u64,
    /// `known_peers()` as last persisted.
    pub known_peers: Vec<Identity>,
    /// The replicated state's log (managers only).
    pub state: StateDisk,
}

/// A running process.
pub struct Process {
    pub node: Node,
    pub clock: NodeClock,
    pub paused: bool,
    held: VecDeque<Ev>,
    /// Membership changed since the last persist.
    peers_dirty: bool,
}

/// One machine.
pub struct Slot {
    pub role: Role,
    pub addr: SocketAddr,
    pub disk: Disk,
    /// Bumped on every start, crash and exit; stamps timers and datagrams
    /// so that nothing reaches a later process by mistake.
    pub epoch: u32,
    pub process: Option<Process>,
    /// When the current (or last) process started.
    pub started_at: VTime,
    /// Bumped on every pause, so a stale resume is ignored.
    pub pause: u32,
    /// When the process was last thawed (zero if never paused).
    pub resumed_at: VTime,
    /// The machine an agent runs (with state only; `None` runs a bare
    /// member, as `--no-state` does).
    pub agent: Option<AgentSpec>,
    /// A manager's controller machine.
    pub controller_machine: Option<String>,
    /// The addresses its processes join through.
    pub seeds: Vec<SocketAddr>,
    /// Stopped for good: by the provider, or the process exited by itself
    /// (retired, revoked, its machine removed). Never started again.
    pub retired: bool,
    /// The provider's instance this slot is.
    pub instance: Option<String>,
    /// The process asked to exit (after the input that said so).
    exit_due: Option<ExitWhy>,
}

impl Slot {
    fn new(role: Role, addr: SocketAddr, disk: Disk) -> Slot {
        Slot {
            role,
            addr,
            disk,
            epoch: 0,
            process: None,
            started_at: Duration::ZERO,
            pause: 0,
            resumed_at: Duration::ZERO,
            agent: None,
            controller_machine: None,
            seeds: Vec::new(),
            retired: false,
            instance: None,
            exit_due: None,
        }
    }

    /// Running and not paused.
    pub fn is_live(&self) -> bool {
        self.process.as_ref().is_some_and(|p| !p.paused)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.process.as_ref().is_some_and(|p| p.paused)
    }

    /// The running node, if any.
    pub fn node(&self) -> Option<&Node> {
        self.process.as_ref().map(|p| &p.node)
    }

    /// The current process's identity, if running.
    pub fn identity(&self) -> Option<&Identity> {
        self.node().map(Node::identity)
    }
}

/// Counters of the cluster's plumbing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub events: u64,
    pub sends: u64,
    pub send_bytes: u64,
    pub to_unknown_or_down: u64,
    pub stale: u64,
    pub held_dropped: u64,
    pub queue_full: u64,
    pub handshakes: u64,
    pub starts: u64,
    /// State messages sent between managers, and their bytes.
    pub state_sends: u64,
    pub state_bytes: u64,
    /// State messages to a node that is not running, or cut off.
    pub state_undelivered: u64,
    /// Membership exchange messages sent (push-pull), and their bytes.
    pub exchange_sends: u64,
    pub exchange_bytes: u64,
    /// Client writes: handed to a manager, acknowledged, refused, and lost
    /// with their manager's process before any reply.
    pub writes_issued: u64,
    pub writes_done: u64,
    pub writes_refused: u64,
    pub writes_abandoned: u64,
    /// Writes not issued because `MAX_OUTSTANDING_WRITES` were in flight.
    pub writes_skipped: u64,
    /// Batches and snapshots written to the simulated disks, and batches a
    /// crash dropped before their sync completed.
    pub disk_batches: u64,
    pub disk_snapshots: u64,
    pub disk_lost_unsynced: u64,
    /// Manager restarts that rebuilt the replica from a snapshot (plus the
    /// batches after it), and from batches alone.
    pub restores_from_snapshot: u64,
    pub restores_from_log: u64,
    /// Processes that exited by themselves (retired, revoked, machine gone).
    pub self_exits: u64,
}

/// The seed's streams the cluster draws from, one per concern.
pub struct ClusterRngs {
    pub net: ChaCha8Rng,
    pub node: ChaCha8Rng,
    pub disk: ChaCha8Rng,
    /// Workload spawn and stop delays, lifetimes.
    pub agent: ChaCha8Rng,
    /// The provider's latencies and boot delays.
    pub provider: ChaCha8Rng,
}

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub managers: usize,
    pub agents: usize,
    pub timing: Timing,
    pub net: NetParams,
    /// Largest clock drift either way, in ppm.
    pub drift_max_ppm: i32,
    pub bug: Option<PlantedBug>,
    /// Managers hold replicated state.
    pub state: bool,
    /// Genesis configures the provider (the HA keeper and provisioner act).
    pub provider: bool,
}

/// The cluster, its network and its queue.
pub struct Cluster {
    pub slots: Vec<Slot>,
    pub queue: EventQueue<Ev>,
    pub network: Network,
    pub trace: Trace,
    pub stats: ClusterStats,
    /// Events the nodes emitted since the run loop last drained them.
    pub outbox: Vec<(usize, Event)>,
    /// What became of client writes since the run loop last drained them.
    pub state_notes: Vec<StateNote>,
    timing: Timing,
    by_id: BTreeMap<NodeId, usize>,
    by_addr: BTreeMap<SocketAddr, usize>,
    drift_max_ppm: i32,
    bug: Option<PlantedBug>,
    /// A planted isolation the truth does not know about is in force.
    hidden_isolation: Option<usize>,
    /// A planted mute node is in force.
    muted: Option<usize>,
    net_rng: ChaCha8Rng,
    node_rng: ChaCha8Rng,
    /// Draws fsync delays.
    disk_rng: ChaCha8Rng,
    agent_rng: ChaCha8Rng,
    provider_rng: ChaCha8Rng,
    /// Planted bugs of the liveness phase are in force.
    planted_armed: bool,
    pub sessions: Sessions,
    pub workloads: Workloads,
    pub provider: Provider,
    /// What the world did on the nodes' behalf since the run loop last
    /// drained it.
    pub sim_notes: Vec<SimNote>,
    /// The state the run started from (with state only).
    pub genesis: Option<Genesis>,
    /// Slots the run began with (the provider adds the rest).
    pub initial_slots: usize,
    /// Print session traffic (`--log`).
    pub log: bool,
    state_enabled: bool,
    /// Client writes awaiting a reply, by request id.
    requests: BTreeMap<u64, Request>,
    next_req: u64,
    /// The request whose command is being handled right now.
    issuing: Option<u64>,
    /// Every node-id tag (top 16 bits) ever used: the model's ids embed the
    /// tag, so none is drawn twice (see `fresh_disk`).
    tags: std::collections::BTreeSet<u16>,
}

impl Cluster {
    /// Builds the slots (managers first, then agents) and schedules their
    /// boots. Managers are the seeds. With state, every initial manager's
    /// disk holds the genesis state, and each slot is bound to the machine
    /// genesis made for it.
    pub fn new(config: &ClusterConfig, rngs: ClusterRngs) -> Cluster {
        let ClusterRngs { net: net_rng, node: mut node_rng, disk: disk_rng, agent: agent_rng, provider: provider_rng } =
            rngs;
        let count = config.managers + config.agents;
        let mut slots = Vec::with_capacity(count);
        let mut by_id = BTreeMap::new();
        let mut by_addr = BTreeMap::new();
        let mut tags = std::collections::BTreeSet::from([GENESIS_TAG]);
        for slot in 0..count {
            let role = if slot < config.managers { Role::Manager } else { Role::Agent };
            let addr = slot_addr(slot);
            let disk = fresh_disk(&mut node_rng, &mut tags);
            by_id.insert(disk.id, slot);
            by_addr.insert(addr, slot);
            slots.push(Slot::new(role, addr, disk));
        }
        let seeds: Vec<SocketAddr> = slots.iter().filter(|s| s.role == Role::Manager).map(|s| s.addr).collect();
        for s in &mut slots {
            s.seeds = seeds.clone();
        }
        let mut cluster = Cluster {
            slots,
            queue: EventQueue::default(),
            network: Network::new(config.net.clone()),
            trace: Trace::default(),
            stats: ClusterStats::default(),
            outbox: Vec::new(),
            state_notes: Vec::new(),
            timing: config.timing.clone(),
            by_id,
            by_addr,
            drift_max_ppm: config.drift_max_ppm,
            bug: config.bug,
            hidden_isolation: None,
            muted: None,
            net_rng,
            node_rng,
            disk_rng,
            agent_rng,
            provider_rng,
            planted_armed: false,
            sessions: Sessions::default(),
            workloads: Workloads::default(),
            provider: Provider { agent_quota: config.agents + AGENT_QUOTA_EXTRA, ..Provider::default() },
            sim_notes: Vec::new(),
            genesis: None,
            initial_slots: count,
            log: false,
            state_enabled: config.state,
            requests: BTreeMap::new(),
            next_req: 0,
            issuing: None,
            tags,
        };
        if config.state {
            cluster.lay_genesis(config.managers, config.provider);
        }
        for slot in 0..count {
            let at = Duration::from_millis(cluster.node_rng.random_range(0..=BOOT_SPREAD_MS));
            cluster.push_control_free(at, Ev::Boot { slot });
        }
        cluster
    }

    /// Writes the genesis state to every initial manager's disk and binds
    /// each slot to its machine and instance.
    fn lay_genesis(&mut self, managers: usize, provider: bool) {
        let ids: Vec<NodeId> = self.slots[..managers].iter().map(|s| s.disk.id).collect();
        let genesis = crate::genesis::build(&ids, self.slots.len() - managers, provider);
        for (slot, machine) in genesis.controllers.clone().into_iter().enumerate() {
            self.slots[slot].disk.state.append_snapshot(Duration::ZERO, genesis.snapshot.clone(), Duration::ZERO);
            self.slots[slot].controller_machine = Some(machine.clone());
            self.record_instance(jujud::core::control::provider::instance_name(&machine, 1), machine, slot, true);
        }
        for (i, machine) in genesis.agent_machines.clone().into_iter().enumerate() {
            let slot = managers + i;
            let address = self.slots[slot].addr.to_string();
            self.slots[slot].agent = Some(AgentSpec { machine: machine.clone(), address });
            self.record_instance(jujud::core::control::provider::instance_name(&machine, 1), machine, slot, false);
        }
        self.genesis = Some(genesis);
    }

    /// A new slot for an instance the provider starts, on the given side
    /// of the current partition (if any); returns its index.
    fn add_slot(&mut self, role: Role, side: Option<bool>) -> usize {
        let slot = self.slots.len();
        let addr = slot_addr(slot);
        let disk = fresh_disk(&mut self.node_rng, &mut self.tags);
        self.by_id.insert(disk.id, slot);
        self.by_addr.insert(addr, slot);
        self.slots.push(Slot::new(role, addr, disk));
        self.network.add_slot(side.unwrap_or(false));
        slot
    }

    /// The current virtual time.
    pub fn now(&self) -> VTime {
        self.queue.now()
    }

    /// Schedules a control event. Controls are few (one per fault), so a
    /// full queue here is a simulator bug.
    pub fn schedule(&mut self, at: VTime, control: Control) {
        self.push_control_free(at, Ev::Control(control));
    }

    fn push_control_free(&mut self, at: VTime, ev: Ev) {
        self.queue.push(at, ev).expect("event queue full of non-datagram events: simulator bug");
    }

    /// Turns planted world bugs on (the liveness phase does this, so that
    /// the cluster has joined and been quiet first).
    pub fn arm_planted_bugs(&mut self) {
        self.planted_armed = true;
        match self.bug {
            Some(PlantedBug::HiddenIsolation { slot }) => self.hidden_isolation = Some(slot),
            Some(PlantedBug::MuteSends { slot }) => self.muted = Some(slot),
            _ => {}
        }
    }

    /// Handles one node-bound event popped from the queue.
    pub fn dispatch(&mut self, at: VTime, ev: Ev) {
        self.stats.events += 1;
        let slot = match ev {
            Ev::Boot { slot } => {
                if !self.slots[slot].retired && !self.slots[slot].is_running() {
                    let first = self.slots[slot].epoch == 0 && slot >= self.initial_slots;
                    self.start(slot);
                    if first {
                        self.sim_notes.push(SimNote::Booted { slot });
                    }
                }
                return;
            }
            Ev::SessionIdle { link, pauses } => return self.session_idle(link, pauses),
            Ev::ProviderCall { from, epoch, cmd } => return self.provider_arrived(from, epoch, *cmd),
            Ev::Datagram { slot, .. }
            | Ev::Identified { slot, .. }
            | Ev::Timer { slot, .. }
            | Ev::Durable { slot, .. }
            | Ev::DurableRemote { slot, .. }
            | Ev::State { slot, .. }
            | Ev::Members { slot, .. }
            | Ev::Session { slot, .. }
            | Ev::Workload { slot, .. }
            | Ev::ProviderReply { slot, .. } => slot,
            Ev::Control(_) => unreachable!("controls are handled by the run loop"),
        };
        let (epoch_now, s) = (self.slots[slot].epoch, &mut self.slots[slot]);
        let Some(process) = s.process.as_mut() else {
            self.stats.stale += 1;
            return;
        };
        if event_epoch(&ev) != epoch_now {
            self.stats.stale += 1;
            return;
        }
        if process.paused {
            let reliable = !matches!(ev, Ev::Datagram { .. } | Ev::Identified { .. });
            if process.held.len() < MAX_HELD_EVENTS_PER_NODE || reliable {
                process.held.push_back(ev);
            } else {
                self.stats.held_dropped += 1;
            }
            return;
        }
        let local = process.clock.local(at);
        let input = match ev {
            Ev::Datagram { from, bytes, .. } => {
                let digest = Fnv1a::of_words(&bytes);
                self.trace.record(at, slot, TraceKind::Datagram, digest);
                Input::Datagram { from, bytes }
            }
            Ev::Identified { addr, peer, .. } => {
                self.trace.record(at, slot, TraceKind::Identified, peer.id.0);
                Input::Identified { addr, peer }
            }
            Ev::Timer { timer, .. } => {
                self.trace.record(at, slot, TraceKind::Timer, Fnv1a::of_words(timer.kind_name().as_bytes()));
                Input::Timer(timer)
            }
            Ev::Durable { seq, .. } => {
                self.trace.record(at, slot, TraceKind::Durable, seq);
                Input::Durable { seq }
            }
            Ev::DurableRemote { vv, .. } => state::durable_remote_input(&mut self.trace, at, slot, vv),
            Ev::State { from, bytes, .. } => {
                self.trace.record(at, slot, TraceKind::State, Fnv1a::of_words(&bytes));
                Input::State { from, bytes }
            }
            Ev::Members { from, bytes, .. } => {
                self.trace.record(at, slot, TraceKind::Members, Fnv1a::of_words(&bytes));
                Input::Members { from, bytes }
            }
            Ev::Session { what, .. } => return self.deliver_session(at, slot, what),
            Ev::Workload { what, .. } => {
                let Some(ev) = self.workload_input(slot, *what) else { return };
                self.trace.record(at, slot, TraceKind::Workload, Fnv1a::of(ev.unit().as_bytes()));
                Input::Workload(ev)
            }
            Ev::ProviderReply { result, .. } => {
                self.trace.record(at, slot, TraceKind::Provider, result.req());
                Input::Provider(result)
            }
            Ev::Boot { .. } | Ev::Control(_) | Ev::SessionIdle { .. } | Ev::ProviderCall { .. } => unreachable!(),
        };
        self.handle(slot, local, input);
    }

    /// Feeds one input to the running process in `slot`, routes what it
    /// asked for, and carries out an exit it asked for.
    fn handle(&mut self, slot: usize, local: jujud::core::Time, input: Input) {
        let Some(p) = self.slots[slot].process.as_mut() else { return };
        p.node.handle(local, input);
        self.drain(slot);
        self.exit_if_due(slot);
    }

    fn deliver_session(&mut self, at: VTime, slot: usize, what: SessionEv) {
        if self.bug == Some(PlantedBug::EmptyFirstAssign) && self.planted_armed {
            self.plant_empty_assign(slot, &what);
        }
        for input in self.session_inputs(slot, what) {
            self.trace.record(at, slot, TraceKind::Session, 0);
            let Some(p) = self.slots[slot].process.as_ref() else { return };
            let local = p.clock.local(at);
            self.handle(slot, local, input);
        }
    }

    /// The planted bug: an agent's session opens with an empty assignment
    /// first (a manager that does not know the units yet).
    fn plant_empty_assign(&mut self, slot: usize, what: &SessionEv) {
        let SessionEv::Frame { .. } = what else { return };
        let Some(machine) = self.slots[slot].agent.as_ref().map(|a| a.machine.clone()) else { return };
        let opening = self.sessions_first_frame(slot, what);
        let Some((session, peer)) = opening else { return };
        let empty =
            jujud::core::agent::encode_msg(&jujud::core::agent::SessionMsg::Assign(jujud::core::agent::Assignments {
                machine,
                units: Vec::new(),
            }));
        let now = self.now();
        let Some(p) = self.slots[slot].process.as_ref() else { return };
        let local = p.clock.local(now);
        self.handle(slot, local, Input::SessionOpened { session, peer, machine: None });
        self.handle(slot, local, Input::SessionData { session, bytes: empty });
    }

    /// A manager or agent whose core said it must stop (retired, revoked)
    /// or an agent whose machine was removed and whose workloads are down
    /// leaves and exits, for good (the runtime's driver does the same).
    fn exit_if_due(&mut self, slot: usize) {
        let gone =
            self.slots[slot].node().and_then(Node::agent).is_some_and(|a| a.is_gone() && a.supervisor.running() == 0);
        let why = self.slots[slot].exit_due.take().or(gone.then_some(ExitWhy::MachineGone));
        let Some(why) = why else { return };
        let Some(identity) = self.slots[slot].identity().cloned() else { return };
        self.stats.self_exits += 1;
        self.slots[slot].retired = true;
        self.leave(slot);
        self.sim_notes.push(SimNote::Exited { slot, identity, kind: ExitKind::Left, why });
    }

    /// Routes everything the node in `slot` asked for, in order. Carrying
    /// out an output never makes the node produce another, so each is
    /// taken as it is routed.
    fn drain(&mut self, slot: usize) {
        loop {
            let s = &mut self.slots[slot];
            let Some(p) = s.process.as_mut() else { return };
            let Some(out) = p.node.poll() else { return };
            match out {
                // A timer fires at its local time, converted through the
                // process's clock.
                Output::SetTimer(timer) => {
                    let (at, epoch) = (p.clock.global_at(timer.at), s.epoch);
                    self.push_control_free(at, Ev::Timer { slot, epoch, timer });
                }
                Output::Send { to, bytes } => self.send(slot, to, bytes),
                Output::Identify { addr } => self.identify(slot, addr),
                Output::Event(event) => self.on_event(slot, event),
                Output::Persist { ops, own } => self.persist_state(slot, ops, own),
                Output::SendState { to, bytes } => self.send_state(slot, to, bytes),
                Output::SendMembers { to, bytes } => self.send_members(slot, to, bytes),
                Output::Reply { req, result } => self.reply(slot, req, result),
                Output::SnapshotNeeded => self.snapshot_state(slot),
                Output::OpenSession { session, candidates } => self.open_session(slot, session, candidates),
                Output::SessionSend { session, bytes } => self.session_send(slot, session, bytes),
                Output::CloseSession { session } => self.close_session(slot, session),
                Output::Workload(cmd) => self.workload_cmd(slot, cmd),
                // agent.conf: the seeds an agent restarts with.
                Output::SaveManagers(addrs) => s.seeds = addrs,
                Output::Provider(cmd) => self.provider_call(slot, *cmd),
            }
        }
    }

    fn on_event(&mut self, slot: usize, event: Event) {
        let s = &mut self.slots[slot];
        match &event {
            Event::Rejoined(identity) => s.disk.generation = s.disk.generation.max(identity.generation),
            Event::Retired => s.exit_due = Some(ExitWhy::Retired),
            Event::Revoked => s.exit_due = Some(ExitWhy::Revoked),
            Event::MemberDown { .. } if self.bug == Some(PlantedBug::SwallowDowns) => return,
            Event::MemberUp(_) | Event::MemberDown { .. } | Event::Renamed { .. } | Event::Notice(_) => {
                if let Some(p) = s.process.as_mut() {
                    p.peers_dirty = true;
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        let resurrect = match &event {
            Event::Renamed { from, .. } if self.bug == Some(PlantedBug::ResurrectOld) => Some(from.clone()),
            _ => None,
        };
        self.outbox.push((slot, event));
        if let Some(old) = resurrect {
            self.outbox.push((slot, Event::MemberUp(old)));
        }
    }

    fn cut_by_bug(&self, from: usize, to: usize) -> bool {
        self.hidden_isolation.is_some_and(|s| s == from || s == to) || self.muted == Some(from)
    }

    fn send(&mut self, from: usize, to: Identity, bytes: Vec<u8>) {
        let now = self.now();
        self.stats.sends += 1;
        self.stats.send_bytes += bytes.len() as u64;
        let dest = self.by_id.get(&to.id).copied().filter(|&d| self.slots[d].is_running());
        let Some(dest) = dest.filter(|&d| !self.cut_by_bug(from, d)) else {
            self.stats.to_unknown_or_down += 1;
            return;
        };
        let cert = PeerCert { id: self.slots[from].disk.id, role: self.slots[from].role };
        let epoch = self.slots[dest].epoch;
        let arrivals = self.network.deliveries(from, dest, now, &mut self.net_rng);
        let copies = arrivals.iter().flatten().count();
        let mut bytes = Some(bytes);
        for (i, at) in arrivals.into_iter().flatten().enumerate() {
            let payload =
                if i + 1 == copies { bytes.take().unwrap_or_default() } else { bytes.clone().unwrap_or_default() };
            let ev = Ev::Datagram { slot: dest, epoch, from: cert, from_slot: from, bytes: payload };
            if self.queue.push(at, ev).is_err() {
                self.stats.queue_full += 1;
            }
        }
    }

    fn identify(&mut self, from: usize, addr: SocketAddr) {
        let now = self.now();
        self.stats.handshakes += 1;
        let Some(dest) = self.by_addr.get(&addr).copied() else { return };
        if dest == from || !self.slots[dest].is_live() || self.cut_by_bug(from, dest) || self.cut_by_bug(dest, from) {
            return;
        }
        let Some(at) = self.network.handshake(from, dest, now, &mut self.net_rng) else { return };
        let peer = PeerCert { id: self.slots[dest].disk.id, role: self.slots[dest].role };
        let epoch = self.slots[from].epoch;
        if self.queue.push(at, Ev::Identified { slot: from, epoch, addr, peer }).is_err() {
            self.stats.queue_full += 1;
        }
    }

    /// Whether `a` and `b` reach each other both ways, by the network's
    /// truth (what the checkers hold the nodes to; planted bugs may cut
    /// more).
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        a == b || (!self.network.is_cut(a, b) && !self.network.is_cut(b, a))
    }

    /// The slot whose current node id is `id`.
    pub fn slot_of(&self, id: NodeId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }
}

fn event_epoch(ev: &Ev) -> u32 {
    match ev {
        Ev::Datagram { epoch, .. }
        | Ev::Identified { epoch, .. }
        | Ev::Timer { epoch, .. }
        | Ev::Durable { epoch, .. }
        | Ev::DurableRemote { epoch, .. }
        | Ev::State { epoch, .. }
        | Ev::Members { epoch, .. }
        | Ev::Session { epoch, .. }
        | Ev::Workload { epoch, .. }
        | Ev::ProviderReply { epoch, .. } => *epoch,
        Ev::Boot { .. } | Ev::Control(_) | Ev::SessionIdle { .. } | Ev::ProviderCall { .. } => 0,
    }
}

/// A machine's address: 10.0.x.y:7000, unique per slot.
pub fn slot_addr(slot: usize) -> SocketAddr {
    let n = u16::try_from(slot).expect("at most 65536 slots");
    SocketAddr::from(([10, 0, (n >> 8) as u8, (n & 0xff) as u8], LISTEN_PORT))
}

/// A new machine's disk: a random node id whose tag (top 16 bits) no node
/// of the run ever had (ids the model allocates embed the tag, so a reused
/// tag would reuse entity ids; the runtime's join refuses only the tags of
/// members it can see, and a collision is about 1 in 65,536 per pair).
fn fresh_disk(rng: &mut ChaCha8Rng, tags: &mut std::collections::BTreeSet<u16>) -> Disk {
    loop {
        let id = NodeId(rng.random());
        if tags.insert((id.0 >> 48) as u16) {
            return Disk { id, generation: 0, known_peers: Vec::new(), state: StateDisk::default() };
        }
    }
}
#[cfg(test)]
mod size {
    /// Every queued event is moved in and out of the queue: a large variant
    /// (a provider command was 136 bytes inline) made every event pay for
    /// it, and the membership-only run lost a tenth of its speed to memmove.
    /// Box what is large and rare.
    #[test]
    fn a_queued_event_stays_small() {
        assert!(std::mem::size_of::<super::Ev>() <= 96, "Ev is {} bytes", std::mem::size_of::<super::Ev>());
    }
}
