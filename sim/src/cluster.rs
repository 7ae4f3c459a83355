//! The simulated cluster: one slot per machine, each running the very same
//! `jujud::core::Node` the daemon runs, wired together through the network
//! model and the event queue. Delivers datagrams, handshakes and timers;
//! crashes, restarts, pauses, resumes and graceful leaves processes.
//!
//! Managers hold replicated state: the cluster carries out its outputs
//! (persisting to the simulated disk, state streams between managers,
//! replies to client writes) in `cluster_state.rs`.
//!
//! Owns the processes, their simulated disks and clocks, and the queue.
//! Must never decide *when* to inject a fault (the run loop and the fault
//! policy do), must never iterate a HashMap, and must never read real time.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use jujud::core::state::VersionVector;
use jujud::core::{Event, Identity, Input, Node, NodeConfig, NodeId, Output, PeerCert, Role, Timer, Timing};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::clock::NodeClock;
use crate::disk::StateDisk;
use crate::faults::Control;
use crate::network::{NetParams, Network};
use crate::planted::PlantedBug;
use crate::queue::{EventQueue, VTime};
use crate::trace::{Fnv1a, Trace, TraceKind};
use crate::workload::StateNote;

#[path = "cluster_state.rs"]
mod cluster_state;
pub use cluster_state::MAX_OUTSTANDING_WRITES;
use cluster_state::Request;

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
    /// `vv` is synced (see `cluster_state.rs`).
    DurableRemote { slot: usize, epoch: u32, vv: VersionVector },
    /// A state message (a QUIC stream in reality) arriving at `slot`.
    State { slot: usize, epoch: u32, from: PeerCert, bytes: Vec<u8> },
    /// A fault injection or recovery (handled by the run loop).
    Control(Control),
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
}

impl Slot {
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
    seeds: Vec<SocketAddr>,
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
    /// boots. Managers are the seeds.
    pub fn new(config: &ClusterConfig, net_rng: ChaCha8Rng, mut node_rng: ChaCha8Rng, disk_rng: ChaCha8Rng) -> Cluster {
        let count = config.managers + config.agents;
        let mut slots = Vec::with_capacity(count);
        let mut by_id = BTreeMap::new();
        let mut by_addr = BTreeMap::new();
        let mut tags = std::collections::BTreeSet::new();
        for slot in 0..count {
            let role = if slot < config.managers { Role::Manager } else { Role::Agent };
            let addr = slot_addr(slot);
            let disk = fresh_disk(&mut node_rng, &mut tags);
            by_id.insert(disk.id, slot);
            by_addr.insert(addr, slot);
            slots.push(Slot {
                role,
                addr,
                disk,
                epoch: 0,
                process: None,
                started_at: Duration::ZERO,
                pause: 0,
                resumed_at: Duration::ZERO,
            });
        }
        let seeds = slots.iter().filter(|s| s.role == Role::Manager).map(|s| s.addr).collect();
        let mut cluster = Cluster {
            slots,
            queue: EventQueue::default(),
            network: Network::new(config.net.clone()),
            trace: Trace::default(),
            stats: ClusterStats::default(),
            outbox: Vec::new(),
            state_notes: Vec::new(),
            timing: config.timing.clone(),
            seeds,
            by_id,
            by_addr,
            drift_max_ppm: config.drift_max_ppm,
            bug: config.bug,
            hidden_isolation: None,
            muted: None,
            net_rng,
            node_rng,
            disk_rng,
            state_enabled: config.state,
            requests: BTreeMap::new(),
            next_req: 0,
            issuing: None,
            tags,
        };
        for slot in 0..count {
            let at = Duration::from_millis(cluster.node_rng.random_range(0..=BOOT_SPREAD_MS));
            cluster.push_control_free(at, Ev::Boot { slot });
        }
        cluster
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
        match self.bug {
            Some(PlantedBug::HiddenIsolation { slot }) => self.hidden_isolation = Some(slot),
            Some(PlantedBug::MuteSends { slot }) => self.muted = Some(slot),
            _ => {}
        }
    }

    /// Handles one node-bound event popped from the queue.
    pub fn dispatch(&mut self, at: VTime, ev: Ev) {
        self.stats.events += 1;
        let slot = match &ev {
            Ev::Boot { slot } => {
                self.start(*slot);
                return;
            }
            Ev::Datagram { slot, .. }
            | Ev::Identified { slot, .. }
            | Ev::Timer { slot, .. }
            | Ev::Durable { slot, .. }
            | Ev::DurableRemote { slot, .. }
            | Ev::State { slot, .. } => *slot,
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
            if process.held.len() < MAX_HELD_EVENTS_PER_NODE || matches!(ev, Ev::Timer { .. } | Ev::Durable { .. } | Ev::DurableRemote { .. }) {
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
            Ev::DurableRemote { vv, .. } => cluster_state::durable_remote_input(&mut self.trace, at, slot, vv),
            Ev::State { from, bytes, .. } => {
                self.trace.record(at, slot, TraceKind::State, Fnv1a::of_words(&bytes));
                Input::State { from, bytes }
            }
            Ev::Boot { .. } | Ev::Control(_) => unreachable!(),
        };
        process.node.handle(local, input);
        self.drain(slot);
    }

    /// Starts a process in `slot` from its disk: generation + 1, the last
    /// persisted known peers, the managers as seeds, a fresh clock.
    pub fn start(&mut self, slot: usize) {
        let now = self.now();
        let drift = if self.drift_max_ppm > 0 {
            self.node_rng.random_range(-self.drift_max_ppm..=self.drift_max_ppm)
        } else {
            0
        };
        let offset = Duration::from_millis(self.node_rng.random_range(0..=CLOCK_OFFSET_MAX_SECS * 1000));
        let clock = NodeClock::new(now, offset, drift);
        let rng_seed = self.node_rng.random();
        let s = &mut self.slots[slot];
        assert!(s.process.is_none(), "slot {slot} started twice");
        s.epoch += 1;
        s.disk.generation += 1;
        s.started_at = now;
        let identity = Identity { id: s.disk.id, addr: s.addr, role: s.role, generation: s.disk.generation };
        let state = self.recover_state(slot);
        let s = &mut self.slots[slot];
        let config = NodeConfig {
            identity,
            timing: self.timing.clone(),
            rng_seed,
            seeds: self.seeds.clone(),
            known_peers: s.disk.known_peers.clone(),
            state,
            agent: None,
            controller_machine: None,
        };
        let mut node = Node::new(config);
        node.start(clock.local(now));
        s.process = Some(Process { node, clock, paused: false, held: VecDeque::new(), peers_dirty: false });
        self.stats.starts += 1;
        self.trace.record(now, slot, TraceKind::Start, s.disk.generation);
        self.drain(slot);
    }

    /// Kills the process (SIGKILL): its timers and in-flight messages to it
    /// die with it, and so do its disk writes whose sync had not completed.
    /// Without the disk, the machine comes back as a new node; the state the
    /// lost disk held durably is returned.
    pub fn crash(&mut self, slot: usize, keep_disk: bool) -> Option<VersionVector> {
        let now = self.now();
        let s = &mut self.slots[slot];
        s.process.take()?;
        s.epoch += 1;
        self.stats.disk_lost_unsynced += s.disk.state.crash(now);
        self.abandon_requests(slot);
        if keep_disk {
            return None;
        }
        let lost = self.slots[slot].disk.state.durable_at(now);
        let old = self.slots[slot].disk.id;
        self.by_id.remove(&old);
        let disk = fresh_disk(&mut self.node_rng, &mut self.tags);
        self.by_id.insert(disk.id, slot);
        self.slots[slot].disk = disk;
        Some(lost)
    }

    /// Graceful leave (SIGTERM): the node says goodbye, persists its peers
    /// and exits.
    pub fn leave(&mut self, slot: usize) {
        let now = self.now();
        let Some(p) = self.slots[slot].process.as_mut() else { return };
        let local = p.clock.local(now);
        p.node.handle(local, Input::Leave);
        self.drain(slot);
        let s = &mut self.slots[slot];
        if let Some(p) = s.process.take() {
            s.disk.known_peers = p.node.known_peers();
        }
        s.epoch += 1;
        // The exit waits for the syncs in flight.
        s.disk.state.flush(now);
        self.abandon_requests(slot);
    }

    /// Freezes the process (SIGSTOP): everything for it is held.
    pub fn pause(&mut self, slot: usize) -> Option<u32> {
        let s = &mut self.slots[slot];
        let p = s.process.as_mut().filter(|p| !p.paused)?;
        p.paused = true;
        s.pause += 1;
        Some(s.pause)
    }

    /// Thaws the process (SIGCONT): what was held is delivered now, late,
    /// in the order it arrived.
    pub fn resume(&mut self, slot: usize) -> bool {
        let now = self.now();
        let s = &mut self.slots[slot];
        let Some(p) = s.process.as_mut().filter(|p| p.paused) else { return false };
        p.paused = false;
        s.resumed_at = now;
        let held = std::mem::take(&mut p.held);
        for ev in held {
            self.push_control_free(now, ev);
        }
        true
    }

    /// Saves every running node's known peers if they changed.
    pub fn persist(&mut self) {
        for s in &mut self.slots {
            if let Some(p) = s.process.as_mut().filter(|p| p.peers_dirty) {
                s.disk.known_peers = p.node.known_peers();
                p.peers_dirty = false;
            }
        }
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
                Output::Reply { req, result } => self.reply(slot, req, result),
                Output::SnapshotNeeded => self.snapshot_state(slot),
                // Agents here run membership only (no agent role yet).
                Output::OpenSession { .. } | Output::SessionSend { .. } | Output::CloseSession { .. } => {}
                Output::Workload(_) | Output::SaveManagers(_) | Output::Provider(_) => {}
            }
        }
    }

    fn on_event(&mut self, slot: usize, event: Event) {
        let s = &mut self.slots[slot];
        match &event {
            Event::Rejoined(identity) => s.disk.generation = s.disk.generation.max(identity.generation),
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
        | Ev::State { epoch, .. } => *epoch,
        Ev::Boot { .. } | Ev::Control(_) => 0,
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
