//! The membership node: a sans-IO state machine fed `(now, input)` and
//! drained of outputs. It wraps foca (SWIM) and adds what foca lacks:
//! certificate-bound senders, local health awareness, graceful-leave notices
//! and a partition-healing rejoin loop.
//!
//! Owns one member's view of the cluster. Must never touch a socket, a clock,
//! a thread or OS randomness: time comes in with every input, randomness from
//! the seed in [`NodeConfig`], and every effect leaves as an [`Output`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{Foca, Notification, Runtime};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::agent::role::AgentRole;
use super::agent::serve::AgentSessions;
use super::codec::{BincodeCodec, CodecError};
use super::control::Controller;
use super::health::LocalHealth;
use super::identity::{Identity, NodeId, Role};
use super::io::{
    Event, Input, MemberInfo, MemberState, Output, PeerCert, Stats, Time, Timer, TimerKind,
};
use super::notices::{Notice, NoticeBook, NoticeHandler, NoticeKey};
use super::rejoin::Rejoin;
use super::state::sync::ANTI_ENTROPY_PERIOD_MS;
use super::state::{Replica, StateSync};
use super::timing::Timing;

/// Most times an update is piggybacked, however large the cluster.
pub const MAX_TRANSMISSIONS_CAP: u8 = 32;

/// First byte of every SWIM datagram; other tags are refused.
pub const SWIM_TAG: u8 = 0x01;

/// Most outputs that may wait to be drained; past it, sends are dropped and
/// counted (timers and events are never dropped).
pub const MAX_PENDING_OUTPUTS: usize = 16_384;

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

type Swim = Foca<Identity, BincodeCodec, ChaCha8Rng, WatchedHandler>;

/// The notice handler, raising a flag whenever foca hands it an item (in
/// `handle_data` when a packet carries broadcasts, and in `add_broadcast`):
/// only then can the book hold fresh notices, so only then does the flush
/// lock it. The flag is only ever touched from the node's own thread, so
/// plain loads and stores do (no read-modify-write).
struct WatchedHandler {
    inner: NoticeHandler,
    touched: Arc<AtomicBool>,
}

impl foca::BroadcastHandler<Identity> for WatchedHandler {
    type Key = NoticeKey;
    type Error = CodecError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Identity>,
    ) -> Result<Option<NoticeKey>, CodecError> {
        self.touched.store(true, Ordering::Relaxed);
        self.inner.receive_item(data, sender)
    }
}

/// Collects what foca asks for during one call.
#[derive(Default)]
struct Collector {
    sends: Vec<(Identity, Vec<u8>)>,
    timers: Vec<(foca::Timer<Identity>, Duration)>,
    notes: Vec<foca::OwnedNotification<Identity>>,
    highest_sent_incarnation: u16,
}

impl Runtime<Identity> for Collector {
    fn notify(&mut self, notification: Notification<'_, Identity>) {
        match notification {
            Notification::DataSent(header) => {
                self.highest_sent_incarnation =
                    self.highest_sent_incarnation.max(header.src_incarnation);
            }
            Notification::DataReceived(_) => {}
            other => self.notes.push(other.to_owned()),
        }
    }

    fn send_to(&mut self, to: Identity, data: &[u8]) {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(SWIM_TAG);
        bytes.extend_from_slice(data);
        self.sends.push((to, bytes));
    }

    fn submit_after(&mut self, event: foca::Timer<Identity>, after: Duration) {
        self.timers.push((event, after));
    }
}

/// One member's membership state machine.
pub struct Node {
    swim: Swim,
    collector: Collector,
    outputs: VecDeque<Output>,
    notices: Arc<Mutex<NoticeBook>>,
    health: LocalHealth,
    rejoin: Rejoin,
    timing: Timing,
    stats: Stats,
    rng: ChaCha8Rng,
    /// Incarnation we last announced; a rise means we refuted a suspicion.
    incarnation: u16,
    /// Whether a stall or self-refutation happened this probe period.
    troubled: bool,
    /// Members seen as suspect at the last housekeeping, with generation.
    suspects: BTreeMap<NodeId, u64>,
    left: bool,
    /// Replicated state and its replication (managers only).
    state: Option<StateSync>,
    /// foca's current piggyback count (scaled with the cluster's size).
    max_transmissions: u8,
    /// The agent's sessions and workloads (agents only).
    agent: Option<AgentRole>,
    /// The agent timer armed: when, and its token (older ones are stale).
    agent_timer: Option<(Time, u64)>,
    agent_token: u64,
    /// A manager or its membership changed: live managers are re-read.
    managers_changed: bool,
    /// Live managers (alive or suspect; this node too when it is one),
    /// sorted by id; refreshed only when `managers_changed`.
    live_managers: Vec<Identity>,
    /// The same without this node: where state goes.
    peer_manager_ids: Vec<NodeId>,
    /// This manager's probe rounds and who answered them (contact for the
    /// workers' majority checks).
    contact: crate::core::control::contact::Contact,
    /// foca's gossip timer, held while it has nothing to gossip; armed
    /// again (to fire at once) by `flush` when updates appear.
    parked_gossip: Option<foca::Timer<Identity>>,
    /// The workers' machine facts, by the replica version they were read at.
    facts_cache: Option<control::FactsCache>,
    /// Agent sessions this manager serves (empty elsewhere).
    served: AgentSessions,
    /// The replica changed during this input (assignments may have).
    state_changed: bool,
    /// The assignment refresh timer is armed.
    assign_armed: bool,
    /// The singleton workers (managers only).
    control: Option<Controller>,
    /// Members revoked by the HA keeper: their traffic is dropped.
    revoked: BTreeSet<NodeId>,
    /// The member count `max_transmissions` was last sized for (0 before
    /// the first housekeeping): the same count needs no new sizing.
    transmissions_sized_for: usize,
    /// Raised by the notice handler when foca hands it an item (see
    /// [`WatchedHandler`]); lowered by the flush that drains fresh notices.
    notices_touched: Arc<AtomicBool>,
    /// Scratch of a rejoin round: the active ids, sorted.
    active_scratch: Vec<NodeId>,
    /// Bumped on every foca notification about membership and on every
    /// fresh notice: all that can change what a rejoin round reads (the
    /// active members and their addresses, the known peers, departures).
    membership_changes: u64,
    /// `membership_changes` at the last rejoin round, if it found nothing
    /// missing: until it moves, every round finds the same, so it is not
    /// computed again (a round is O(N log N)).
    quiet_since: Option<u64>,
}

impl Node {
    /// A node that has not yet said anything; call [`Node::start`].
    pub fn new(config: NodeConfig) -> Node {
        let inner = NoticeHandler::default();
        let notices = inner.book.clone();
        let notices_touched = Arc::new(AtomicBool::new(false));
        let handler = WatchedHandler { inner, touched: notices_touched.clone() };
        let mut rng = ChaCha8Rng::seed_from_u64(config.rng_seed);
        let foca_rng = ChaCha8Rng::seed_from_u64(rand::RngExt::random(&mut rng));
        let swim = Foca::with_custom_broadcast(
            config.identity.clone(),
            config.timing.foca_config(),
            foca_rng,
            BincodeCodec,
            handler,
        );
        let t = &config.timing;
        let mut rejoin = Rejoin::new(
            config.seeds.clone(),
            Duration::from_millis(t.rejoin_backoff_min_ms),
            Duration::from_millis(t.rejoin_backoff_max_ms),
        );
        for peer in config.known_peers.iter().filter(|p| p.id != config.identity.id) {
            rejoin.remember(peer);
        }
        let holds_state = config.state.is_some();
        Node {
            swim,
            collector: Collector::default(),
            outputs: VecDeque::new(),
            notices,
            health: LocalHealth::new(t.health_max, Duration::from_millis(t.late_timer_ms)),
            rejoin,
            timing: config.timing.clone(),
            stats: Stats::default(),
            rng,
            incarnation: 0,
            troubled: false,
            suspects: BTreeMap::new(),
            left: false,
            state: config.state.map(StateSync::new),
            max_transmissions: config.timing.max_transmissions,
            agent: config.agent.map(|a| {
                AgentRole::new(config.identity.id, a.machine, a.address, config.seeds.clone())
            }),
            agent_timer: None,
            agent_token: 0,
            managers_changed: true,
            live_managers: Vec::new(),
            peer_manager_ids: Vec::new(),
            contact: Default::default(),
            parked_gossip: None,
            facts_cache: None,
            served: AgentSessions::default(),
            state_changed: false,
            assign_armed: false,
            control: holds_state
                .then(|| Controller::new(config.identity.id, config.controller_machine.clone())),
            revoked: BTreeSet::new(),
            transmissions_sized_for: 0,
            notices_touched,
            active_scratch: Vec::new(),
            membership_changes: 0,
            quiet_since: None,
        }
    }

    /// Starts the node: arms its loops and reaches out to seeds and peers.
    pub fn start(&mut self, now: Time) {
        self.arm(now, TimerKind::Housekeeping, Duration::from_millis(self.timing.probe_period_ms));
        if self.state.is_some() {
            self.arm(now, TimerKind::AntiEntropy, Duration::from_millis(ANTI_ENTROPY_PERIOD_MS));
        }
        self.rejoin_round(now);
        self.start_agent(now);
        self.arm_control(now);
        self.after_input(now);
    }

    /// This node's identity (its generation changes on forced rejoin).
    pub fn identity(&self) -> &Identity {
        self.swim.identity()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The local-health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.health.score()
    }

    /// Whether this node has left the cluster.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Peers worth remembering as seeds for the next start.
    pub fn known_peers(&self) -> Vec<Identity> {
        self.rejoin.known().cloned().collect()
    }

    /// Every notice this node knows, to persist or to share with a peer.
    pub fn notices(&self) -> Vec<Notice> {
        let book = self.notices.lock().expect("notice book poisoned");
        let departed =
            book.departed.iter().map(|(id, g)| Notice::Departed { id: *id, generation: *g });
        let members = book.revoked_members.iter().map(|id| Notice::MemberRevoked { id: *id });
        departed.chain(members).collect()
    }

    /// Ids of the members foca sees as active (alive or suspect).
    pub fn active_ids(&self) -> BTreeSet<NodeId> {
        self.swim.iter_members().map(|m| m.id().id).collect()
    }

    /// Every member as this node sees it, itself first, then by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        let book = self.notices.lock().expect("notice book poisoned");
        let me = self.identity().clone();
        let own = if self.left { MemberState::Left } else { MemberState::Alive };
        let mut rows = vec![MemberInfo { identity: me, state: own, incarnation: self.incarnation }];
        for m in self.swim.iter_membership_state() {
            let id = m.id();
            let state = match m.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down if self.revoked.contains(&id.id) => MemberState::Replaced,
                foca::State::Down if departed(&book, id) => MemberState::Left,
                foca::State::Down => MemberState::Down,
            };
            rows.push(MemberInfo { identity: id.clone(), state, incarnation: m.incarnation() });
        }
        rows[1..].sort_by_key(|r| r.identity.id);
        rows
    }

    /// Takes the next output, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Feeds one input at time `now`.
    pub fn handle(&mut self, now: Time, input: Input) {
        if self.left {
            return;
        }
        match input {
            Input::Datagram { from, bytes } => self.on_datagram(from, &bytes),
            Input::Timer(timer) => self.on_timer(now, timer),
            Input::Identified { addr, peer } => self.on_identified(addr, peer),
            Input::Leave => self.leave(),
            Input::Publish(notice) => self.publish(&notice),
            Input::Command { req, id, cmd, replicas, timeout } => {
                self.on_command(now, req, id, &cmd, replicas, timeout)
            }
            Input::DurableRemote { vv } => self.on_durable_remote(now, &vv),
            Input::Durable { seq } => self.on_durable(now, seq),
            Input::State { from, bytes } => self.on_state(now, from, &bytes),
            Input::SessionOpened { session, peer, machine } => {
                self.on_session_opened(now, session, peer, machine)
            }
            Input::SessionClosed { session } => self.on_session_closed(now, session),
            Input::SessionData { session, bytes } => self.on_session_data(now, session, &bytes),
            Input::Workload(ev) => self.on_workload(now, &ev),
            Input::Provider(result) => self.on_provider(now, &result),
        }
        self.flush(now);
        self.after_input(now);
    }

    fn on_datagram(&mut self, from: PeerCert, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        if bytes.len() > self.timing.max_packet_bytes + 1 {
            self.stats.dropped_oversized += 1;
            return;
        }
        let Some((&SWIM_TAG, body)) = bytes.split_first() else {
            self.stats.dropped_malformed += 1;
            return;
        };
        // foca hands over the header's sender as soon as it has decoded the
        // header, and drops the datagram unchanged unless it is the id and
        // role the certificate proved (one decode for the check and foca).
        let mut claimed = None;
        let accept = |src: &Identity| {
            let proven = src.id == from.id && src.role == from.role;
            if !proven {
                claimed = Some(src.id);
            }
            proven
        };
        if self.revoked.contains(&from.id) {
            self.stats.dropped_revoked += 1;
            return;
        }
        match self.swim.handle_data_from(body, accept, &mut self.collector) {
            Ok(true) => {}
            Ok(false) => {
                let claimed = claimed.map(|id| id.to_string()).unwrap_or_default();
                tracing::warn!(%claimed, proven = %from.id, "dropped datagram speaking for another member");
                self.stats.dropped_spoofed += 1;
            }
            Err(e) => {
                tracing::debug!(from = %from.id, error = %e, "swim refused datagram");
                match e {
                    foca::Error::Decode(_)
                    | foca::Error::MalformedPacket
                    | foca::Error::DataTooBig => self.stats.dropped_malformed += 1,
                    _ => self.stats.dropped_rejected += 1,
                }
            }
        }
    }

    fn on_timer(&mut self, now: Time, timer: Timer) {
        let lateness = now.saturating_sub(timer.at);
        if self.health.on_timer_lateness(lateness) {
            self.stats.late_timers += 1;
            self.troubled = true;
        }
        match timer.kind {
            TimerKind::Swim(event) => {
                if matches!(event, foca::Timer::ProbeRandomMember(_)) {
                    self.stats.probes += 1;
                }
                if matches!(event, foca::Timer::PeriodicGossip(_))
                    && self.swim.updates_backlog() == 0
                    && self.swim.custom_broadcast_backlog() == 0
                {
                    // Nothing to gossip (foca would only re-arm it): park it
                    // until there is (`flush`), instead of ten idle timers a
                    // second.
                    self.parked_gossip = Some(event);
                    return;
                }
                if let Err(e) = self.swim.handle_timer(event, &mut self.collector) {
                    tracing::debug!(error = %e, "swim timer refused");
                }
            }
            TimerKind::Rejoin(token) if token == self.rejoin.token => self.rejoin_round(now),
            TimerKind::Rejoin(_) => {}
            TimerKind::Housekeeping => self.housekeeping(now),
            TimerKind::AntiEntropy => self.anti_entropy(now),
            TimerKind::Agent(token) => self.on_agent_timer(now, token),
            TimerKind::Assign => self.on_assign_timer(),
            TimerKind::Control => self.on_control_tick(now),
        }
    }

    fn on_identified(&mut self, addr: SocketAddr, peer: PeerCert) {
        if peer.id == self.identity().id {
            return;
        }
        let seed = Identity { id: peer.id, addr, role: peer.role, generation: 0 };
        self.stats.rejoin_announces += 1;
        if let Err(e) = self.swim.announce(seed, &mut self.collector) {
            tracing::debug!(error = %e, "announce to seed failed");
        }
    }

    fn leave(&mut self) {
        let me = self.identity().clone();
        self.publish(&Notice::Departed { id: me.id, generation: me.generation });
        if let Err(e) = self.swim.leave_cluster(&mut self.collector) {
            tracing::warn!(error = %e, "leave failed");
        }
        self.left = true;
    }

    fn publish(&mut self, notice: &Notice) {
        let Ok(data) = super::codec::encode(notice) else { return };
        match self.swim.add_broadcast(&data) {
            Ok(true) => {
                if let Err(e) = self.swim.broadcast(&mut self.collector) {
                    tracing::debug!(error = %e, "broadcast failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "notice refused"),
        }
    }

    fn rejoin_round(&mut self, now: Time) {
        if self.quiet_since == Some(self.membership_changes) {
            #[cfg(debug_assertions)]
            self.assert_still_quiet(now);
            let next_after = self.rejoin.quiet_round(now);
            let token = self.rejoin.token;
            self.arm(now, TimerKind::Rejoin(token), next_after);
            return;
        }
        let mut active = std::mem::take(&mut self.active_scratch);
        active.clear();
        active.extend(self.swim.iter_members().map(|m| m.id().id));
        active.sort_unstable();
        let held = self.swim.iter_members().map(|m| m.id().addr).chain([self.swim.identity().addr]);
        let book = self.notices.lock().expect("notice book poisoned");
        let round = self.rejoin.round(now, &active, held, |p| departed(&book, p), &mut self.rng);
        drop(book);
        self.quiet_since = round.quiet(!active.is_empty()).then_some(self.membership_changes);
        self.active_scratch = active;
        for addr in round.identify {
            self.push(Output::Identify { addr });
        }
        for peer in round.announce_to {
            self.stats.rejoin_announces += 1;
            if let Err(e) = self.swim.announce(peer, &mut self.collector) {
                tracing::debug!(error = %e, "re-announce failed");
            }
        }
        let token = self.rejoin.token;
        self.arm(now, TimerKind::Rejoin(token), round.next_after);
    }

    /// Debug builds check the shortcut: a full round on copies finds
    /// nothing missing either.
    #[cfg(debug_assertions)]
    fn assert_still_quiet(&self, now: Time) {
        let mut active: Vec<NodeId> = self.swim.iter_members().map(|m| m.id().id).collect();
        active.sort_unstable();
        let held = self.swim.iter_members().map(|m| m.id().addr).chain([self.swim.identity().addr]);
        let book = self.notices.lock().expect("notice book poisoned");
        let round = self.rejoin.clone().round(
            now,
            &active,
            held,
            |p| departed(&book, p),
            &mut self.rng.clone(),
        );
        assert!(
            round.quiet(!active.is_empty()),
            "a rejoin round skipped as quiet would have found {round:?}"
        );
    }

    fn housekeeping(&mut self, now: Time) {
        if !self.troubled {
            self.health.on_quiet_period();
        }
        self.troubled = false;
        let mut suspects = BTreeMap::new();
        for m in self.swim.iter_members() {
            let id = m.id();
            match m.state() {
                foca::State::Suspect => {
                    if !self.suspects.contains_key(&id.id) {
                        self.stats.suspicions += 1;
                    }
                    suspects.insert(id.id, id.generation);
                }
                _ if !self.suspects.is_empty()
                    && self.suspects.get(&id.id) == Some(&id.generation) =>
                {
                    self.stats.refutations += 1
                }
                _ => {}
            }
        }
        self.suspects = suspects;
        self.scale_transmissions();
        self.arm(now, TimerKind::Housekeeping, Duration::from_millis(self.timing.probe_period_ms));
    }

    /// Piggybacks each update more often as the cluster grows (foca's own
    /// rule, 4·log10(N+1)), never below the configured count: with a fixed
    /// count a 300-member join took 90 s in the simulator instead of 3 s.
    fn scale_transmissions(&mut self) {
        let members = self.swim.num_members() + 1;
        if members == self.transmissions_sized_for {
            return;
        }
        let by_size = (4.0 * ((members + 1) as f64).log10()).ceil() as u8;
        let want = by_size.clamp(self.timing.max_transmissions, MAX_TRANSMISSIONS_CAP);
        if want != self.max_transmissions {
            let mut cfg = self.timing.foca_config();
            cfg.max_transmissions = std::num::NonZeroU8::new(want).expect("clamped above zero");
            if self.swim.set_config(cfg).is_err() {
                return;
            }
            self.max_transmissions = want;
        }
        self.transmissions_sized_for = members;
    }

    fn arm(&mut self, now: Time, kind: TimerKind, after: Duration) {
        self.push(Output::SetTimer(Timer { at: now + after, kind }));
    }

    fn push(&mut self, output: Output) {
        push_output(&mut self.outputs, &mut self.stats, output);
    }

    /// Turns what foca asked for into outputs, stretching this node's own
    /// probe and suspicion timeouts by its local-health score. The
    /// collector's buffers are drained in place (their capacity is kept).
    fn flush(&mut self, now: Time) {
        if self.collector.highest_sent_incarnation > self.incarnation {
            self.incarnation = self.collector.highest_sent_incarnation;
            self.stats.self_refutations += 1;
            self.health.on_self_refuted();
            self.troubled = true;
        }
        for (to, bytes) in self.collector.sends.drain(..) {
            self.stats.datagrams_out += 1;
            self.stats.bytes_out += bytes.len() as u64;
            self.stats.max_datagram_bytes_out =
                self.stats.max_datagram_bytes_out.max(bytes.len() as u64);
            push_output(&mut self.outputs, &mut self.stats, Output::Send { to, bytes });
        }
        if self.parked_gossip.is_some()
            && (self.swim.updates_backlog() > 0 || self.swim.custom_broadcast_backlog() > 0)
        {
            let event = self.parked_gossip.take().expect("checked");
            push_output(
                &mut self.outputs,
                &mut self.stats,
                Output::SetTimer(Timer { at: now, kind: TimerKind::Swim(event) }),
            );
        }
        for (event, after) in self.collector.timers.drain(..) {
            let after = match event {
                foca::Timer::ProbeRandomMember(_)
                | foca::Timer::SendIndirectProbe { .. }
                | foca::Timer::ChangeSuspectToDown { .. } => self.health.stretch(after),
                _ => after,
            };
            let timer = Timer { at: now + after, kind: TimerKind::Swim(event) };
            push_output(&mut self.outputs, &mut self.stats, Output::SetTimer(timer));
        }
        if !self.collector.notes.is_empty() {
            let mut notes = std::mem::take(&mut self.collector.notes);
            for note in notes.drain(..) {
                self.on_notification(now, note);
            }
            // Hand the (empty) buffer back so the next call reuses it.
            self.collector.notes = notes;
        }
        if !self.notices_touched.load(Ordering::Relaxed) {
            return;
        }
        self.notices_touched.store(false, Ordering::Relaxed);
        let fresh = std::mem::take(&mut self.notices.lock().expect("notice book poisoned").fresh);
        if !fresh.is_empty() {
            self.membership_changes += 1;
        }
        for notice in fresh {
            if let Notice::Departed { id, .. } = &notice {
                self.rejoin.forget(*id);
            }
            if let Notice::MemberRevoked { id } = &notice {
                self.revoked.insert(*id);
                self.rejoin.forget(*id);
                if *id == self.swim.identity().id {
                    self.push(Output::Event(Event::Revoked));
                }
            }
            self.push(Output::Event(Event::Notice(notice)));
        }
    }

    fn on_notification(&mut self, now: Time, note: foca::OwnedNotification<Identity>) {
        use foca::OwnedNotification as N;
        if !matches!(note, N::ProbeFailed(..) | N::DataReceived(_) | N::DataSent(_)) {
            self.membership_changes += 1;
        }
        let event = match note {
            N::MemberUp(id) => {
                self.stats.members_up += 1;
                self.managers_changed |= id.role == Role::Manager;
                self.rejoin.remember(&id);
                Event::MemberUp(id)
            }
            N::MemberDown(id) => {
                self.stats.members_down += 1;
                self.managers_changed |= id.role == Role::Manager;
                if let Some(st) = self.state.as_mut() {
                    st.forget_peer(id.id);
                }
                let left = departed(&self.notices.lock().expect("notice book poisoned"), &id);
                self.rearm_rejoin(now);
                Event::MemberDown { identity: id, left }
            }
            N::Rename(from, to) => {
                self.managers_changed |= to.role == Role::Manager;
                self.rejoin.remember(&to);
                Event::Renamed { from, to }
            }
            N::Active => Event::Active,
            N::Idle => {
                self.rearm_rejoin(now);
                Event::Idle
            }
            N::Defunct => {
                // Unreachable with a renewing identity; recover anyway.
                tracing::warn!("declared down without renewal; reusing identity");
                let _ = self.swim.reuse_down_identity();
                return;
            }
            N::Rejoin(id) => {
                self.managers_changed = true;
                Event::Rejoined(id)
            }
            N::ProbeFailed(_, _) => {
                self.stats.probes_failed += 1;
                return;
            }
            N::DataReceived(_) | N::DataSent(_) => return,
        };
        self.push(Output::Event(event));
    }

    fn rearm_rejoin(&mut self, now: Time) {
        if let Some(at) = self.rejoin.on_loss(now) {
            let token = self.rejoin.token;
            self.push(Output::SetTimer(Timer { at, kind: TimerKind::Rejoin(token) }));
        }
    }
}

/// Queues one output; past `MAX_PENDING_OUTPUTS`, sends are dropped and
/// counted (timers and events never are).
fn push_output(outputs: &mut VecDeque<Output>, stats: &mut Stats, output: Output) {
    if outputs.is_empty() {
        // Back to the start of the ring: a queue that is drained after every
        // input otherwise walks its whole buffer, and each output lands on a
        // cache line not touched for a while.
        outputs.clear();
    }
    if outputs.len() >= MAX_PENDING_OUTPUTS && matches!(output, Output::Send { .. }) {
        stats.dropped_output_full += 1;
        return;
    }
    outputs.push_back(output);
    debug_assert!(
        outputs.len() <= MAX_PENDING_OUTPUTS
            || !matches!(outputs.back(), Some(Output::Send { .. })),
        "a send queued past the output bound"
    );
}

fn departed(book: &NoticeBook, id: &Identity) -> bool {
    book.departed.get(&id.id).is_some_and(|g| *g >= id.generation)
}

mod agent;
mod control;
mod sync;

#[cfg(test)]
mod tests;
