//! The node: a sans-IO state machine fed `(now, input)` and drained of
//! outputs. It is three parts that own their fields — membership (foca and
//! what the node adds to it, [`membership`]), the manager's side (replicated
//! state, singleton workers, served agent sessions, [`manager`]) and the
//! agent's side ([`agent`]) — and `Node` itself only routes each input to the
//! part that owns it, then runs one step, [`Node::settle`], in which the
//! parts exchange what they need as arguments and return values.
//!
//! Owns the parts, the one bounded output queue ([`Outbox`]), the counters
//! and the one random source. Must never touch a socket, a clock, a thread or
//! OS randomness: time comes in with every input, randomness from the seed in
//! [`NodeConfig`], and every effect leaves as an [`Output`]. No part reads
//! another part's fields.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::agent::role::AgentRole;
use super::agent::serve::AgentSessions;
use super::control::Controller;
use super::identity::{Identity, NodeId};
use super::io::{Input, MemberInfo, Output, Stats, Time, Timer, TimerKind};
use super::notices::Notice;
use super::state::{Replica, StateSync, StatusView};
use super::timing::Timing;

use agent::AgentSide;
use manager::Manager;
use membership::Membership;

/// Most times an update is piggybacked, however large the cluster.
pub const MAX_TRANSMISSIONS_CAP: u8 = 32;

/// First byte of every SWIM datagram; other tags are refused.
pub const SWIM_TAG: u8 = 0x01;

/// Most outputs that may wait to be drained; past it, sends are dropped and
/// counted (timers and events are never dropped).
pub const MAX_PENDING_OUTPUTS: usize = 16_384;

/// Most outputs the drained output queue keeps room for between inputs
/// (past it, a burst's room is freed when the queue is next empty).
pub const KEPT_OUTPUT_ENTRIES: usize = 256;

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node, at the generation it starts with.
    pub identity: Identity,
    /// Failure-detector timings (validated by the caller).
    pub timing: Timing,
    /// Seed for every random choice the node makes.
    pub rng_seed: u64,
    /// Addresses to join through (`--join`).
    pub seeds: Vec<SocketAddr>,
    /// Peers remembered from an earlier run, announced to at start.
    pub known_peers: Vec<Identity>,
    /// The replicated state, for managers (recovered from disk by the
    /// driver); `None` for members that hold no state.
    pub state: Option<Replica>,
    /// For machine agents: which machine this agent runs, and the address
    /// it reports. `None` on managers.
    pub agent: Option<AgentSpec>,
    /// For managers started by a provider: the controller machine this
    /// manager is (it claims it, and leaves when it is removed).
    pub controller_machine: Option<String>,
}

/// What an agent is, beyond its membership identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// The machine id its certificate names.
    pub machine: String,
    /// The address shown for the machine in `juju status`.
    pub address: String,
}

/// The node's one output queue, bounded by [`MAX_PENDING_OUTPUTS`]: past
/// it, sends are dropped and counted (`dropped_output_full`); timers and
/// events are never dropped, since a lost timer stops a loop for good.
#[derive(Default)]
pub(super) struct Outbox {
    queue: VecDeque<Output>,
}

impl Outbox {
    /// Queues one output, or drops it at the bound if it is a send.
    fn push(&mut self, stats: &mut Stats, output: Output) {
        if self.queue.is_empty() {
            // Back to the start of the ring: a queue that is drained after
            // every input otherwise walks its whole buffer, and each output
            // lands on a cache line not touched for a while.
            self.queue.clear();
        }
        if self.queue.len() >= MAX_PENDING_OUTPUTS && matches!(output, Output::Send { .. }) {
            stats.dropped_output_full += 1;
            return;
        }
        self.queue.push_back(output);
        debug_assert!(
            self.queue.len() <= MAX_PENDING_OUTPUTS
                || !matches!(self.queue.back(), Some(Output::Send { .. })),
            "a send queued past the output bound"
        );
    }

    /// Postcondition of every push: no send waits past the bound (timers
    /// and events may: they are never dropped). O(queue), debug builds only.
    #[cfg(debug_assertions)]
    fn check_bound(&self) {
        let late_sends = self.queue.iter().skip(MAX_PENDING_OUTPUTS);
        let late_sends = late_sends.filter(|o| matches!(o, Output::Send { .. })).count();
        assert_eq!(late_sends, 0, "sends queued past MAX_PENDING_OUTPUTS");
    }

    fn pop(&mut self) -> Option<Output> {
        let output = self.queue.pop_front();
        if output.is_none() && self.queue.capacity() > KEPT_OUTPUT_ENTRIES {
            // Drained after a burst: its room is given back, since every
            // node of a large cluster (and a simulator of N of them) would
            // otherwise keep it for ever.
            self.queue.shrink_to(KEPT_OUTPUT_ENTRIES);
        }
        output
    }

    /// Room the queue holds, in outputs (tests check it is given back).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

/// What a part may use while it handles one input or settles: the time,
/// the node's one output queue, its counters and its one random source
/// (one source, drawn in the order the parts run, so a seed replays).
pub(super) struct Ctx<'a> {
    pub now: Time,
    pub out: &'a mut Outbox,
    pub stats: &'a mut Stats,
    pub rng: &'a mut ChaCha8Rng,
}

impl Ctx<'_> {
    /// Queues one output (see [`Outbox`] for the bound).
    pub fn push(&mut self, output: Output) {
        debug_assert!(
            !matches!(&output, Output::SetTimer(t) if t.at < self.now),
            "a timer armed in the past: {output:?}"
        );
        self.out.push(self.stats, output);
    }

    /// Arms a timer `after` from now.
    pub fn arm(&mut self, kind: TimerKind, after: std::time::Duration) {
        self.push(Output::SetTimer(Timer { at: self.now + after, kind }));
    }
}

/// One member's state machine: the parts and the queue their outputs go to.
pub struct Node {
    membership: Membership,
    /// Replicated state, workers and served sessions (managers only).
    manager: Option<Manager>,
    /// The agent's sessions and workloads (agents only).
    agent: Option<AgentSide>,
    out: Outbox,
    stats: Stats,
    rng: ChaCha8Rng,
}

/// Builds the `Ctx` for `now` from a node's own fields, leaving the parts
/// free to be borrowed beside it.
macro_rules! cx {
    ($node:ident, $now:expr) => {
        &mut Ctx { now: $now, out: &mut $node.out, stats: &mut $node.stats, rng: &mut $node.rng }
    };
}

impl Node {
    /// A node that has not yet said anything; call [`Node::start`].
    pub fn new(config: NodeConfig) -> Node {
        let mut rng = ChaCha8Rng::seed_from_u64(config.rng_seed);
        let foca_rng = ChaCha8Rng::seed_from_u64(rand::RngExt::random(&mut rng));
        let me = config.identity.id;
        let membership = Membership::new(
            config.identity,
            &config.timing,
            &config.seeds,
            &config.known_peers,
            foca_rng,
        );
        let controller_machine = config.controller_machine;
        Node {
            membership,
            manager: config.state.map(|r| Manager::new(me, r, controller_machine)),
            agent: config.agent.map(|a| AgentSide::new(me, a, config.seeds)),
            out: Outbox::default(),
            stats: Stats::default(),
            rng,
        }
    }

    /// Starts the node: arms its loops and reaches out to seeds and peers.
    /// What foca queues here leaves with the first input's flush.
    pub fn start(&mut self, now: Time) {
        let cx = cx!(self, now);
        self.membership.arm_housekeeping(cx);
        if let Some(m) = self.manager.as_mut() {
            m.arm_anti_entropy(cx);
        }
        self.membership.rejoin_round(cx);
        if let Some(a) = self.agent.as_mut() {
            a.start(cx);
        }
        if let Some(m) = self.manager.as_mut() {
            m.arm_control(cx);
        }
        self.settle(now, Drain::Later);
    }

    /// This node's identity (its generation changes on forced rejoin).
    pub fn identity(&self) -> &Identity {
        self.membership.identity()
    }

    /// Room the node's drained buffers keep: foca's collector (entries over
    /// its three buffers) and the output queue (outputs).
    #[cfg(test)]
    pub(crate) fn buffer_capacities(&self) -> (usize, usize) {
        (self.membership.collector_capacity(), self.out.capacity())
    }

    /// Membership updates waiting to be gossiped (tests).
    #[cfg(test)]
    pub(crate) fn gossip_backlog(&self) -> usize {
        self.membership.gossip_backlog()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The local-health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.membership.health_score()
    }

    /// Whether this node has left the cluster.
    pub fn has_left(&self) -> bool {
        self.membership.has_left()
    }

    /// Peers worth remembering as seeds for the next start.
    pub fn known_peers(&self) -> Vec<Identity> {
        self.membership.known_peers()
    }

    /// Every notice this node knows, to persist or to share with a peer.
    pub fn notices(&self) -> Vec<Notice> {
        self.membership.notices()
    }

    /// Ids of the members foca sees as active (alive or suspect).
    pub fn active_ids(&self) -> BTreeSet<NodeId> {
        self.membership.active_ids()
    }

    /// A count that moves on every membership notification (a member up,
    /// down or renamed, this node idle or active) and every fresh notice:
    /// while it and [`Node::active_count`] stay the same, so does
    /// [`Node::active_ids`]. Lets an observer skip re-reading views.
    pub fn view_version(&self) -> u64 {
        self.membership.view_version()
    }

    /// How many members foca sees as active (O(1)).
    pub fn active_count(&self) -> usize {
        self.membership.active_count()
    }

    /// Every member as this node sees it, itself first, then by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.membership.members()
    }

    /// Live managers' ids as foca sees them (alive or suspect), including
    /// this node when it is one; sorted; as of the last settle.
    pub fn live_manager_ids(&self) -> Vec<NodeId> {
        self.membership.live().ids()
    }

    /// Whether this node has heard that `id` was revoked (see
    /// [`Notice::MemberRevoked`](crate::core::notices::Notice::MemberRevoked)).
    pub fn has_revoked(&self, id: NodeId) -> bool {
        self.membership.has_revoked(id)
    }

    /// The replicated state, for managers.
    pub fn state(&self) -> Option<&StateSync> {
        self.manager.as_ref().map(Manager::sync)
    }

    /// The whole state for the snapshot on disk, managers only; the live
    /// document is compacted as it is copied (no change it can observe).
    pub fn snapshot_for_disk(&mut self) -> Option<crate::core::state::Snapshot> {
        self.manager.as_mut().map(Manager::snapshot_for_disk)
    }

    /// The singleton workers (managers).
    pub fn control(&self) -> Option<&Controller> {
        self.manager.as_ref().map(Manager::control)
    }

    /// The agent sessions this manager serves (`None` elsewhere).
    pub fn served(&self) -> Option<&AgentSessions> {
        self.manager.as_ref().map(Manager::served)
    }

    /// The agent's session and workloads, on an agent.
    pub fn agent(&self) -> Option<&AgentRole> {
        self.agent.as_ref().map(AgentSide::role)
    }

    /// The controller summary (managers only).
    pub fn controller_info(&self) -> Option<crate::core::control::ControllerInfo> {
        Some(self.manager.as_ref()?.controller_info(self.membership.live()))
    }

    /// The status view with each machine's agent presence (from SWIM, as
    /// this node sees it) and each unit's machine presence; managers only.
    pub fn status_view(&self) -> Option<StatusView> {
        let manager = self.manager.as_ref()?;
        Some(manager.status_view(&self.membership.members()))
    }

    /// What changed in the state since `since` (`None`: everything), with presence as in
    /// [`Self::status_view`], and the members it was filled from;
    /// managers only.
    pub fn status_changes(
        &self,
        since: Option<&crate::core::state::replica::VersionVector>,
    ) -> Option<(crate::core::state::sync::StatusChanges, Vec<MemberInfo>)> {
        let manager = self.manager.as_ref()?;
        let members = self.membership.members();
        Some((manager.status_changes(&members, since), members))
    }

    /// Takes the next output, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop()
    }

    /// Feeds one input at time `now`: routes it to the part that owns it,
    /// then settles.
    pub fn handle(&mut self, now: Time, input: Input) {
        if self.membership.has_left() {
            return;
        }
        let cx = cx!(self, now);
        match input {
            Input::Datagram { from, bytes } => self.membership.on_datagram(cx, from, &bytes),
            Input::Timer(timer) => self.on_timer(now, timer),
            Input::Identified { addr, peer } => self.membership.on_identified(cx, addr, peer),
            Input::Leave => self.membership.leave(),
            Input::Publish(notice) => self.membership.publish(&notice),
            Input::Command { req, id, cmd, replicas, timeout } => match self.manager.as_mut() {
                Some(m) => {
                    m.on_command(cx, self.membership.live(), req, id, &cmd, replicas, timeout)
                }
                None => manager::refuse_command(cx, req),
            },
            Input::DurableRemote { vv } => {
                if let Some(m) = self.manager.as_mut() {
                    m.on_durable_remote(cx, self.membership.live(), &vv);
                }
            }
            Input::Durable { seq } => {
                if let Some(m) = self.manager.as_mut() {
                    m.on_durable(cx, self.membership.live(), seq);
                }
            }
            Input::Members { from, bytes } => self.membership.on_exchange(cx, from, &bytes),
            Input::State { from, bytes } => match self.manager.as_mut() {
                Some(m) => m.on_state(cx, self.membership.live(), from, &bytes),
                None => manager::refuse_state(cx),
            },
            Input::SessionOpened { .. }
            | Input::SessionClosed { .. }
            | Input::SessionBusy { .. }
            | Input::SessionData { .. }
            | Input::Workload(_) => self.on_session_input(now, input),
            Input::Provider(result) => {
                if let Some(m) = self.manager.as_mut() {
                    let me = self.membership.identity();
                    let notices = m.on_provider(cx, self.membership.live(), me, &result);
                    self.membership.publish_all(&notices);
                }
            }
        }
        self.settle(now, Drain::Foca);
    }

    /// Session and workload inputs: the agent's on an agent, the served
    /// sessions' on a manager, refused on a member that is neither.
    fn on_session_input(&mut self, now: Time, input: Input) {
        let cx = cx!(self, now);
        let live = self.membership.live();
        match input {
            Input::SessionOpened { session, peer, machine } => {
                match (self.agent.as_mut(), self.manager.as_mut()) {
                    (Some(a), _) => a.on_session_opened(cx, session, peer),
                    (None, Some(m)) => m.on_session_opened(cx, live, session, peer, machine),
                    (None, None) => manager::refuse_session(cx, session),
                }
            }
            Input::SessionClosed { session } => {
                match (self.agent.as_mut(), self.manager.as_mut()) {
                    (Some(a), _) => a.on_session_closed(cx, session),
                    (None, Some(m)) => m.on_session_closed(session),
                    (None, None) => {}
                }
            }
            Input::SessionBusy { session, retry_after_ms } => {
                if let Some(a) = self.agent.as_mut() {
                    a.on_session_busy(cx, session, retry_after_ms);
                }
            }
            Input::SessionData { session, bytes } => {
                match (self.agent.as_mut(), self.manager.as_mut()) {
                    (Some(a), _) => a.on_session_data(cx, session, &bytes),
                    (None, Some(m)) => m.on_session_data(cx, live, session, &bytes),
                    (None, None) => {}
                }
            }
            Input::Workload(ev) => {
                if let Some(a) = self.agent.as_mut() {
                    a.on_workload(cx, &ev);
                }
            }
            _ => debug_assert!(false, "not a session input: {input:?}"),
        }
    }

    /// A timer fired: local health hears how late, then its owner handles it.
    fn on_timer(&mut self, now: Time, timer: Timer) {
        let cx = cx!(self, now);
        self.membership.note_lateness(cx, timer.at);
        match timer.kind {
            TimerKind::Swim(event) => self.membership.on_swim_timer(cx, event),
            TimerKind::Rejoin(token) => self.membership.on_rejoin_timer(cx, token),
            TimerKind::Housekeeping => self.membership.housekeeping(cx),
            TimerKind::AntiEntropy => {
                if let Some(m) = self.manager.as_mut() {
                    m.anti_entropy(cx, self.membership.live());
                }
            }
            TimerKind::Agent(token) => {
                if let Some(a) = self.agent.as_mut() {
                    a.on_timer(cx, token);
                }
            }
            TimerKind::Assign => {
                if let Some(m) = self.manager.as_mut() {
                    m.on_assign_timer(cx, self.membership.live());
                }
            }
            TimerKind::Control => {
                if let Some(m) = self.manager.as_mut() {
                    let me = self.membership.identity();
                    let notices = m.on_control_tick(cx, self.membership.live(), me);
                    self.membership.publish_all(&notices);
                }
            }
        }
    }

    /// The one step after every input (and after start), in this order:
    /// 1. membership turns what foca asked for into outputs (not at start:
    ///    what start queued leaves with the first input's, `Drain::Later`)
    ///    and names the members that went down; the manager forgets their
    ///    sync progress;
    /// 2. if a manager came, went or was renamed, membership hands the new
    ///    live-manager list to the manager (greeting new peers, moving
    ///    worker ownership; the notices the workers decide on are
    ///    published) and then to the agent;
    /// 3. the agent arms its timer for its next wake-up, and the manager
    ///    schedules an assignment refresh if the state changed.
    ///
    /// Parts exchange only values here: no part reads another's fields.
    fn settle(&mut self, now: Time, drain: Drain) {
        let cx = cx!(self, now);
        if drain == Drain::Foca {
            let downed = self.membership.flush(cx);
            if let Some(m) = self.manager.as_mut() {
                for id in downed {
                    m.forget_peer(id);
                }
            }
        }
        if self.membership.refresh_live() {
            if let Some(m) = self.manager.as_mut() {
                let (live, me) = (self.membership.live(), self.membership.identity());
                let notices = m.on_live_managers(cx, live, me);
                self.membership.publish_all(&notices);
            }
            if let Some(a) = self.agent.as_mut() {
                a.set_live_managers(cx, self.membership.live());
            }
        }
        if let Some(a) = self.agent.as_mut() {
            a.arm_timer(cx);
        }
        if let Some(m) = self.manager.as_mut() {
            m.arm_assignments(cx);
        }
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    /// Debug builds check, after every settle, what must hold between
    /// inputs: each part's own invariants and the output queue's bound.
    #[cfg(debug_assertions)]
    fn check_invariants(&mut self) {
        self.membership.check_invariants();
        if let Some(m) = self.manager.as_mut() {
            m.check_invariants();
        }
        if self.out.queue.len() > MAX_PENDING_OUTPUTS {
            self.out.check_bound();
        }
    }
}

/// Whether a settle drains foca's collector now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// After an input: what foca asked for becomes outputs.
    Foca,
    /// After start: it waits for the first input.
    Later,
}

mod agent;
mod collector;
mod live;
mod manager;
mod membership;
pub mod pushpull;
pub mod suspicion;

#[cfg(test)]
mod tests;
