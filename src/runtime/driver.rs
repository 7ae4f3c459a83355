//! The one task that owns the node core. It feeds the core `(now, input)`
//! from the transport, the timer heap and commands, and carries out its
//! outputs. Each turn serves one wake-up (inbound first, by a biased
//! select, so a busy node never times out a peer whose ack is already
//! waiting) and then, whatever woke it, one waiting store report and one
//! waiting command, the timers that are due (at most
//! [`MAX_TIMERS_PER_TURN`]) and the persistence refresh once
//! [`PERSIST_INTERVAL_MS`] has passed: a steady inbox cannot starve any of
//! them, and a pile of due timers cannot keep the inbox waiting.
//!
//! Owns the pending timers ([`TimerQueue`]) and the node's persistence triggers. Must never block:
//! disk writes go to the blocking pool, and every turn stays short.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::datadir::{DataDir, NodeFile};
use super::session::{self, SessionTable};
use super::store::{MergedReports, Store, StoreReport};
use super::timers::TimerQueue;
use super::transport::Transport;
use super::workload::Workloads;
use crate::core::state::model::{Command as StateCommand, StatusView};
use crate::core::state::tokens::{self, TokenPage, TokenQuery, TokenRecord};
use crate::core::state::{RequestId, WriteResult};
use crate::core::{Event, Identity, Input, MemberInfo, Node, Notice, Output, Time};
use crate::metrics::Metrics;

pub use super::timers::MAX_TIMERS;
/// Most inbound items handled in one turn before timers get a look.
pub const MAX_INBOUND_PER_TURN: usize = 256;
/// Most durability reports merged into one turn's input (the rest wait
/// for the next turn, which comes at once).
pub const MAX_REPORTS_PER_TURN: usize = 4_096;
/// Most due timers fired in one turn; the rest fire in the next turns,
/// after the inbound that arrived meanwhile.
pub const MAX_TIMERS_PER_TURN: usize = 64;
/// How often metrics and dirty files are refreshed.
pub const PERSIST_INTERVAL_MS: u64 = 1_000;
/// Changes of known peers that concern only agents are written to
/// `peers.json` at most this often (managers' changes at once). The file is
/// for finding the cluster again after a restart, which the managers in it
/// (and an agent's agent.conf) already do; writing it, with two fsyncs, on
/// every agent's up, down and rename cost each member one write per change
/// (measured: 7% of all CPU in a 300-agent flapping storm).
pub const AGENT_PEERS_WRITE_INTERVAL_MS: u64 = 10_000;
/// How often a manager removes expired tokens from the state (a pass over
/// the `t/` keys only, and a write only when something expired).
pub const TOKEN_SWEEP_PERIOD_MS: u64 = 60_000;
/// How long a sweep's write may take to be durable before it is dropped
/// (the next sweep removes what it did not).
pub const TOKEN_SWEEP_TIMEOUT_MS: u64 = 30_000;
/// How long a leaving node keeps its endpoint open so goodbyes go out.
pub const LEAVE_FLUSH_MS: u64 = 300;

/// Requests from the API and the process to the node.
pub enum Command {
    Members(oneshot::Sender<(Identity, Vec<MemberInfo>)>),
    /// The state view, members and controller summary, for `juju status`.
    Status(
        oneshot::Sender<
            Option<(StatusView, Vec<MemberInfo>, crate::core::control::ControllerInfo)>,
        >,
    ),
    /// What changed in the state since a version, for the status history.
    StatusChanges {
        since: Option<crate::core::state::VersionVector>,
        reply: oneshot::Sender<Option<(crate::core::state::sync::StatusChanges, Vec<MemberInfo>)>>,
    },
    /// A state command; the reply comes when durable (and replicated).
    Write {
        cmd: StateCommand,
        replicas: u32,
        timeout: Duration,
        reply: oneshot::Sender<WriteResult>,
    },
    /// A state command with the client's request id (answered from its
    /// record if the request was already applied).
    WriteWithId {
        id: RequestId,
        cmd: StateCommand,
        replicas: u32,
        timeout: Duration,
        reply: oneshot::Sender<WriteResult>,
    },
    Publish(Notice),
    Notices(oneshot::Sender<Vec<Notice>>),
    /// What the replica holds about a token: `Err` when this member cannot
    /// judge yet (no state, or none synced), `Ok(None)` when unknown.
    TokenRecord {
        token_id: String,
        reply: oneshot::Sender<Result<Option<TokenRecord>, String>>,
    },
    /// One page of tokens (`None` on a member without state).
    TokenList {
        query: TokenQuery,
        now_unix_secs: u64,
        reply: oneshot::Sender<Option<TokenPage>>,
    },
    /// The values of one state key (empty without state).
    StateGet {
        key: String,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// The ssh provider's pool (`None` without state).
    Hosts(oneshot::Sender<Option<Vec<(String, String)>>>),
}

/// Everything the driver needs besides the node.
pub struct DriverParts {
    pub transport: Arc<Transport>,
    pub inbox: mpsc::Receiver<Input>,
    pub commands: mpsc::Receiver<Command>,
    pub dir: Arc<DataDir>,
    pub node_file: NodeFile,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    /// The durable state store (managers; `None` on agents).
    pub store: Option<Store>,
    /// Open agent sessions' writers (both ends).
    pub sessions: Arc<SessionTable>,
    /// An agent's workloads and its agent.conf (agents only).
    pub agent: Option<AgentParts>,
    /// Carries out provider requests (managers only).
    pub provider: Option<Arc<super::provider::Runner>>,
    /// Where the store reports durability (the transport's inbox).
    pub inbox_tx: mpsc::Sender<Input>,
}

/// What only an agent's driver has.
pub struct AgentParts {
    pub workloads: Workloads,
    /// Where the live managers' addresses are kept (agent.conf).
    pub conf: Arc<super::agentconf::ConfWriter>,
}

struct Driver {
    node: Node,
    origin: Instant,
    timers: TimerQueue,
    /// Timers fired and inbound items handled so far.
    timers_fired: u64,
    inbound_handled: u64,
    /// Durability reports taken, and the node inputs they became.
    reports_handled: u64,
    durability_inputs: u64,
    p: DriverParts,
    peers_dirty: bool,
    /// A manager's change is not on disk yet (its write lost the
    /// single-flight race): the next tick writes, whatever the interval.
    peers_urgent: bool,
    /// When the last write of `peers.json` started.
    last_peers_write: Instant,
    notices_dirty: bool,
    /// Clients waiting for their write's answer, by request id.
    replies: BTreeMap<u64, oneshot::Sender<WriteResult>>,
    next_req: u64,
    /// Whether a peers or notices write is in flight (one at a time each).
    peers_writing: Arc<AtomicBool>,
    notices_writing: Arc<AtomicBool>,
    /// The node asked to stop (retired or revoked).
    stop: bool,
    /// When the expired tokens were last swept (driver clock).
    last_sweep: Option<Instant>,
    /// When metrics and dirty files were last refreshed (driver clock).
    last_persist: Instant,
}

/// Runs the node until shutdown, then leaves the cluster gracefully.
pub async fn run(mut node: Node, parts: DriverParts) {
    node.start(Duration::ZERO);
    let mut d = Driver::new(node, parts, Instant::now());
    d.drain();
    d.run_loop().await;
    d.node.handle(d.now(), Input::Leave);
    d.drain();
    d.persist();
    if let Some(a) = &d.p.agent {
        a.workloads.stop_all();
    }
    tokio::time::sleep(Duration::from_millis(LEAVE_FLUSH_MS)).await;
    tracing::info!(id = %d.node.identity().id, "left the cluster");
}

impl Driver {
    fn new(node: Node, parts: DriverParts, origin: Instant) -> Driver {
        Driver {
            node,
            origin,
            timers: TimerQueue::default(),
            timers_fired: 0,
            inbound_handled: 0,
            reports_handled: 0,
            durability_inputs: 0,
            p: parts,
            peers_dirty: true,
            peers_urgent: false,
            last_peers_write: origin,
            notices_dirty: true,
            replies: BTreeMap::new(),
            next_req: 0,
            peers_writing: Arc::new(AtomicBool::new(false)),
            notices_writing: Arc::new(AtomicBool::new(false)),
            stop: false,
            last_sweep: None,
            last_persist: origin,
        }
    }

    fn now(&self) -> Time {
        self.origin.elapsed()
    }

    async fn run_loop(&mut self) {
        let mut persist_tick = tokio::time::interval(Duration::from_millis(PERSIST_INTERVAL_MS));
        // Agents have no store: their report channel stays empty for good.
        let (_no_store, empty) = mpsc::channel(1);
        let mut reports = match &self.p.store {
            Some(store) => match store.take_reports() {
                Some(r) => r,
                None => {
                    tracing::error!("the state store's reports were taken twice; not serving");
                    return;
                }
            },
            None => empty,
        };
        loop {
            if !self.turn(&mut reports, &mut persist_tick).await || self.stop {
                return;
            }
            if self.node.agent().is_some_and(|a| a.is_gone() && a.supervisor.running() == 0) {
                tracing::warn!(
                    "this agent's machine was removed; its workloads are stopped; leaving"
                );
                return;
            }
        }
    }

    /// One turn: the first wake-up by priority, then the due timers
    /// (bounded). Returns `false` on shutdown.
    async fn turn(
        &mut self,
        reports: &mut mpsc::Receiver<StoreReport>,
        persist_tick: &mut tokio::time::Interval,
    ) -> bool {
        let next_at = self.timers.next_at().map(|at| self.origin + at);
        let sleep = tokio::time::sleep_until(
            next_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        );
        tokio::select! {
            biased;
            _ = self.p.shutdown.changed() => return false,
            Some(first) = self.p.inbox.recv() => self.on_inbound_batch(first),
            Some(report) = reports.recv() => self.on_store_reports(report, reports),
            Some(cmd) = self.p.commands.recv() => self.on_command(cmd),
            _ = sleep, if next_at.is_some() => {}
            _ = persist_tick.tick() => self.persist(),
        }
        // Whatever woke this turn: a steady inbox must not starve the store's
        // reports, commands (one of each per turn), timers, nor the metrics
        // and dirty files.
        if let Ok(report) = reports.try_recv() {
            self.on_store_reports(report, reports);
        }
        if let Ok(cmd) = self.p.commands.try_recv() {
            self.on_command(cmd);
        }
        self.fire_due_timers();
        if self.last_persist.elapsed() >= Duration::from_millis(PERSIST_INTERVAL_MS) {
            self.persist();
        }
        true
    }

    fn on_inbound_batch(&mut self, first: Input) {
        self.on_inbound(first);
        for _ in 1..MAX_INBOUND_PER_TURN {
            match self.p.inbox.try_recv() {
                Ok(item) => self.on_inbound(item),
                Err(_) => break,
            }
        }
    }

    /// One input from the inbox (network, sessions, workloads, provider),
    /// handed to the node as it came.
    fn on_inbound(&mut self, input: Input) {
        if let Input::SessionOpened { session, peer, machine } = &input {
            match machine {
                Some(m) => {
                    tracing::info!(session, agent = %peer.id, machine = %m, "{}", crate::events::AGENT_SESSION_SERVING)
                }
                None => {
                    tracing::info!(session, manager = %peer.id, "{}", crate::events::AGENT_SESSION_OPENED)
                }
            }
        }
        self.inbound_handled += 1;
        self.node.handle(self.now(), input);
        self.drain();
    }

    /// `first` and the reports already queued behind it (at most
    /// [`MAX_REPORTS_PER_TURN`]), told to the node as one (see
    /// [`MergedReports`]): an fsync's writes make one push, not one each.
    fn on_store_reports(&mut self, first: StoreReport, reports: &mut mpsc::Receiver<StoreReport>) {
        let mut merged = MergedReports::default();
        merged.add(first);
        while merged.count < MAX_REPORTS_PER_TURN {
            match reports.try_recv() {
                Ok(report) => merged.add(report),
                Err(_) => break,
            }
        }
        self.reports_handled += merged.count as u64;
        if let Some(seq) = merged.own {
            self.durability_inputs += 1;
            self.node.handle(self.now(), Input::Durable { seq });
            self.drain();
        }
        if let Some(vv) = merged.remote {
            self.durability_inputs += 1;
            self.node.handle(self.now(), Input::DurableRemote { vv });
            self.drain();
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Members(reply) => {
                let _ = reply.send((self.node.identity().clone(), self.node.members()));
            }
            Command::Publish(notice) => {
                self.node.handle(self.now(), Input::Publish(notice));
                self.drain();
            }
            Command::Notices(reply) => {
                let _ = reply.send(self.node.notices());
            }
            Command::TokenRecord { token_id, reply } => {
                let answer = match self.node.state() {
                    Some(st) if tokens::ready(&st.replica) => {
                        Ok(tokens::record(&st.replica, &token_id))
                    }
                    _ => Err("this manager holds no state yet".to_string()),
                };
                let _ = reply.send(answer);
            }
            Command::TokenList { query, now_unix_secs, reply } => {
                let _ = reply.send(
                    self.node.state().map(|st| tokens::list(&st.replica, &query, now_unix_secs)),
                );
            }
            Command::StateGet { key, reply } => {
                let _ = reply
                    .send(self.node.state().map(|st| st.replica.get(&key)).unwrap_or_default());
            }
            Command::Hosts(reply) => {
                let _ = reply.send(
                    self.node.state().map(|st| crate::core::state::controllers::hosts(&st.replica)),
                );
            }
            Command::Status(reply) => {
                let info = self.node.controller_info().unwrap_or_default();
                let _ = reply.send(self.node.status_view().map(|v| (v, self.node.members(), info)));
            }
            Command::StatusChanges { since, reply } => {
                let _ = reply.send(self.node.status_changes(since.as_ref()));
            }
            Command::Write { cmd, replicas, timeout, reply } => {
                self.next_req += 1;
                self.replies.insert(self.next_req, reply);
                self.node.handle(
                    self.now(),
                    Input::Command { req: self.next_req, id: None, cmd, replicas, timeout },
                );
                self.drain();
            }
            Command::WriteWithId { id, cmd, replicas, timeout, reply } => {
                self.next_req += 1;
                self.replies.insert(self.next_req, reply);
                self.node.handle(
                    self.now(),
                    Input::Command { req: self.next_req, id: Some(id), cmd, replicas, timeout },
                );
                self.drain();
            }
        }
    }

    /// Fires the timers due now, at most [`MAX_TIMERS_PER_TURN`]; the
    /// rest wait for the next turn (their sleep is already over, so it
    /// comes at once, after at most one batch of inbound).
    fn fire_due_timers(&mut self) {
        let now = self.now();
        if self.timers.next_at().is_none_or(|at| at > now) {
            return;
        }
        // Acks already waiting count before a timer decides a peer is late.
        for _ in 0..MAX_INBOUND_PER_TURN {
            match self.p.inbox.try_recv() {
                Ok(item) => self.on_inbound(item),
                Err(_) => break,
            }
        }
        for _ in 0..MAX_TIMERS_PER_TURN {
            let Some(timer) = self.timers.pop_due(now) else { return };
            self.timers_fired += 1;
            self.node.handle(self.now(), Input::Timer(timer));
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll() {
            match out {
                Output::Send { to, bytes } => self.p.transport.send(&to, bytes),
                Output::Identify { addr } => self.p.transport.identify(addr),
                Output::SetTimer(timer) => {
                    if let Err(e) = self.timers.push(timer) {
                        tracing::error!(error = %e, "timer refused");
                    }
                }
                Output::Event(event) => self.on_event(event),
                Output::Persist { ops, own } => match &self.p.store {
                    Some(store) => store.persist(&ops, own),
                    None => tracing::error!("a member without a store was asked to persist state"),
                },
                Output::SendState { to, bytes } => self.p.transport.send_state(&to, bytes),
                Output::SendMembers { to, bytes } => self.p.transport.send_members(&to, bytes),
                Output::Reply { req, result } => {
                    if let Some(reply) = self.replies.remove(&req) {
                        let _ = reply.send(result);
                    }
                }
                Output::SnapshotNeeded => self.snapshot(),
                Output::OpenSession { session, candidates } => session::open(
                    self.p.transport.clone(),
                    self.p.sessions.clone(),
                    self.p.inbox_tx.clone(),
                    session,
                    candidates,
                ),
                Output::SessionSend { session, bytes } => self.p.sessions.send(session, bytes),
                Output::CloseSession { session } => self.p.sessions.close(session),
                Output::Workload(cmd) => match &self.p.agent {
                    Some(a) => a.workloads.apply(cmd),
                    None => {
                        tracing::error!("a member that is not an agent was asked to run a workload")
                    }
                },
                Output::SaveManagers(addrs) => self.save_managers(addrs),
                Output::Provider(cmd) => match &self.p.provider {
                    Some(runner) => runner.execute(*cmd),
                    None => {
                        tracing::error!("a member without a provider runner was asked to use one")
                    }
                },
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match &event {
            Event::MemberUp(m) => {
                tracing::info!(member = %m.id, addr = %m.addr, generation = m.generation, role = m.role.as_str(), "{}", crate::events::MEMBER_UP)
            }
            Event::MemberDown { identity: m, left } => {
                // Its connection is presumed dead too: a restart at that
                // address must be dialed afresh. Except between two agents:
                // in a large pool most such downs are learnt by gossip, and
                // a false one (a starved machine) is followed by a rejoin on
                // the same process and connection; closing it made every
                // false down cost a handshake with each member that heard
                // of it, which starved the machine further (a 300-agent
                // flapping storm closed 90,594 connections). A dead agent's
                // connection idles out (AGENT_IDLE_TIMEOUT_MS); one restarted
                // at the same address resets it (its reset key is kept on
                // disk); one at a new address is closed on its rename.
                let keep = keeps_connection_on_down(self.p.agent.is_some(), m.role);
                let closed_connection = !keep && self.p.transport.disconnect(m.id);
                tracing::info!(member = %m.id, addr = %m.addr, generation = m.generation, left, closed_connection, "{}", crate::events::MEMBER_DOWN)
            }
            Event::Renamed { from, to } => {
                if from.addr != to.addr {
                    // Restarted elsewhere: the old connection leads nowhere.
                    self.p.transport.disconnect(to.id);
                }
                tracing::info!(member = %to.id, from = from.generation, to = to.generation, "{}", crate::events::MEMBER_RENAMED)
            }
            Event::Active => tracing::info!("active in the cluster"),
            Event::Idle => tracing::warn!("idle: no active member known; re-announcing"),
            Event::Rejoined(me) => {
                tracing::warn!(generation = me.generation, "{}", crate::events::REJOINED);
                self.p.node_file.generation = me.generation;
                self.write_node_file();
            }
            Event::Notice(n) => {
                tracing::info!(notice = ?n, "notice");
                self.notices_dirty = true;
            }
            Event::Singleton { name, owned: true } => {
                tracing::info!(singleton = name, "{}", crate::events::SINGLETON_ACQUIRED)
            }
            Event::Singleton { name, owned: false } => {
                tracing::info!(singleton = name, "singleton released")
            }
            Event::Retired => {
                tracing::warn!(
                    "this manager's controller machine was removed; leaving the cluster"
                );
                self.stop = true;
            }
            Event::Revoked => {
                tracing::error!("this node was revoked (replaced by the HA keeper); stopping");
                self.stop = true;
            }
        }
        match &event {
            // At once: a node killed right after a manager joined must
            // still find that manager when it restarts.
            Event::MemberUp(m) | Event::Renamed { to: m, .. }
                if m.role == crate::core::Role::Manager =>
            {
                self.peers_urgent = true;
                self.write_peers_now()
            }
            // Agents come and go by the hundred: the persist tick writes
            // them, at most every AGENT_PEERS_WRITE_INTERVAL_MS.
            Event::MemberUp(_) | Event::Renamed { .. } | Event::MemberDown { .. } => {
                self.peers_dirty = true
            }
            _ => {}
        }
        if let Event::MemberUp(m) = &event
            && m.role == crate::core::Role::Manager
        {
            self.p.transport.share_notices(m.clone(), self.node.notices());
        }
    }

    /// Starts writing `peers.json` unless a write is under way; then the
    /// flags stay set and a later tick catches up.
    fn write_peers_now(&mut self) {
        let (dir, peers) = (self.p.dir.clone(), self.node.known_peers());
        if single_flight(&self.peers_writing, move || dir.write_peers(&peers), "known peers") {
            (self.peers_dirty, self.peers_urgent) = (false, false);
            self.last_peers_write = Instant::now();
        } else {
            self.peers_dirty = true;
        }
    }

    fn write_node_file(&self) {
        let dir = self.p.dir.clone();
        let file = self.p.node_file.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = dir.write_node(&file) {
                tracing::error!(error = %e, "could not persist the node's generation");
            }
        });
    }

    fn snapshot(&mut self) {
        let (node, Some(store)) = (&mut self.node, &self.p.store) else { return };
        if node.state().is_some() {
            store.snapshot(|| node.snapshot_for_disk());
        }
    }

    fn save_managers(&self, addrs: Vec<std::net::SocketAddr>) {
        let Some(a) = &self.p.agent else { return };
        let (conf, ticket) = (a.conf.clone(), a.conf.ticket());
        tokio::task::spawn_blocking(move || match conf.write(ticket, addrs.clone()) {
            // Logged once on disk: a process killed after this line still
            // finds these managers when it restarts.
            Ok(true) => {
                tracing::info!(managers = ?addrs, "{}", crate::events::AGENT_CONF_UPDATED)
            }
            Ok(false) => {} // a newer list was written first
            Err(e) => tracing::error!(error = %e, "could not update agent.conf"),
        });
    }

    fn persist(&mut self) {
        self.last_persist = Instant::now();
        self.p.metrics.update_from(
            self.node.stats(),
            &self.node.members(),
            self.node.health_score(),
        );
        if let Some(r) = self.node.state() {
            let part = crate::metrics::MemoryPart::RetainedOps;
            self.p.metrics.set_memory_part(part, r.replica.retained().1);
        }
        if self.p.store.as_ref().is_some_and(Store::snapshot_due) {
            self.snapshot();
        }
        self.sweep_tokens();
        let peers_due =
            self.last_peers_write.elapsed() >= Duration::from_millis(AGENT_PEERS_WRITE_INTERVAL_MS);
        if self.peers_urgent || (self.peers_dirty && peers_due) {
            self.write_peers_now();
        }
        if self.notices_dirty {
            let (dir, notices) = (self.p.dir.clone(), self.node.notices());
            self.notices_dirty = !single_flight(
                &self.notices_writing,
                move || dir.write_notices(&notices),
                "notices",
            );
        }
    }
}

impl Driver {
    /// Every `TOKEN_SWEEP_PERIOD_MS`, removes tokens expired everywhere
    /// (only when some did: an idle sweep writes nothing). Every manager
    /// sweeps; removals of the same keys by two managers are harmless.
    fn sweep_tokens(&mut self) {
        if self
            .last_sweep
            .is_some_and(|t| t.elapsed() < Duration::from_millis(TOKEN_SWEEP_PERIOD_MS))
        {
            return;
        }
        let now_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expired = self.node.state().map_or(0, |st| {
            tokens::expired_keys(&st.replica, now_unix_secs)
                .take(tokens::MAX_SWEEP_KEYS + 1)
                .count()
        });
        // More than one sweep's worth: sweep again at the next persist tick.
        self.last_sweep = (expired <= tokens::MAX_SWEEP_KEYS).then(Instant::now);
        if expired == 0 {
            return;
        }
        // A request number nobody waits on: its answer is dropped.
        self.next_req += 1;
        let (cmd, timeout) = (
            StateCommand::SweepTokens { now_unix_secs },
            Duration::from_millis(TOKEN_SWEEP_TIMEOUT_MS),
        );
        self.node.handle(
            self.now(),
            Input::Command { req: self.next_req, id: None, cmd, replicas: 0, timeout },
        );
        self.drain();
    }
}

/// Whether a node keeps its connection to a member SWIM declared down: only
/// an agent, and only to another agent (see `Driver::on_event`).
fn keeps_connection_on_down(this_is_agent: bool, member: crate::core::Role) -> bool {
    this_is_agent && member == crate::core::Role::Agent
}

/// Runs one file write on the blocking pool unless one is already in
/// flight for the same file; returns whether it started.
fn single_flight(
    busy: &Arc<AtomicBool>,
    write: impl FnOnce() -> Result<(), super::datadir::DataDirError> + Send + 'static,
    what: &'static str,
) -> bool {
    if busy.swap(true, Ordering::AcqRel) {
        return false;
    }
    let busy = busy.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write() {
            tracing::error!(error = %e, "could not persist {what}");
        }
        busy.store(false, Ordering::Release);
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::node::NodeConfig;
    use crate::core::{NodeId, PeerCert, Role, Timing};
    use crate::pki::{self, CertRole, ClusterCa};

    /// Items waiting in the inbox when the test's turn starts: many turns'
    /// worth, as under a steady flood.
    const FLOOD_ITEMS: usize = 50 * MAX_INBOUND_PER_TURN;

    /// A lone manager's driver with real parts (a real quinn endpoint on
    /// loopback, a real data dir), its clock `ago` in the past, so that
    /// every timer the node armed at start is due.
    fn driver(
        dir: &std::path::Path,
        inbox_capacity: usize,
        ago: Duration,
    ) -> (Driver, mpsc::Sender<Input>, mpsc::Sender<Command>, watch::Sender<bool>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let me = Identity {
            id: NodeId(1),
            addr: "127.0.0.1:7001".parse().unwrap(),
            role: Role::Manager,
            generation: 1,
        };
        let config = NodeConfig {
            identity: me.clone(),
            timing: Timing::lan(),
            rng_seed: 1,
            seeds: vec![],
            known_peers: vec![],
            state: None,
            agent: None,
            controller_machine: None,
        };
        let mut node = Node::new(config);
        node.start(Duration::ZERO);
        let ca = ClusterCa::generate("driver-test").unwrap();
        let cert = ca.issue(CertRole::Manager, 1, 1).unwrap();
        let tls = pki::tls::client_config(&ca, &cert).unwrap();
        let client =
            pki::tls::quinn_client_config(tls, Arc::new(quinn::TransportConfig::default()))
                .unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let (inbox_tx, inbox) = mpsc::channel(inbox_capacity);
        let (commands_tx, commands) = mpsc::channel(1);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (data_dir, _) = DataDir::open(dir).unwrap();
        let node_file = NodeFile {
            format: 1,
            cluster_name: "driver-test".into(),
            ca_fingerprint: ca.fingerprint(),
            node_id: "1".into(),
            role: "manager".into(),
            generation: 1,
            advertise: me.addr,
            seeds: vec![],
            machine: None,
            state_log: false,
            state_writer: None,
        };
        let parts = DriverParts {
            transport: Transport::new(
                endpoint,
                client,
                inbox_tx.clone(),
                metrics.clone(),
                NodeId(1),
            ),
            inbox,
            commands,
            dir: Arc::new(data_dir),
            node_file,
            metrics: metrics.clone(),
            shutdown,
            store: None,
            sessions: SessionTable::new(metrics),
            agent: None,
            provider: None,
            inbox_tx: inbox_tx.clone(),
        };
        let origin = Instant::now().checked_sub(ago).expect("a clock older than the test's offset");
        let mut d = Driver::new(node, parts, origin);
        d.drain();
        (d, inbox_tx, commands_tx, shutdown_tx)
    }

    fn junk() -> Input {
        Input::Datagram {
            from: PeerCert { id: NodeId(2), role: Role::Manager },
            bytes: vec![0xff; 8],
        }
    }

    /// Timers fire in a turn woken by a flooded inbox: the old loop served
    /// the inbox for as long as it held anything and fired no timer.
    #[tokio::test]
    async fn timers_fire_under_a_flooded_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, inbox_tx, commands_tx, _shutdown) =
            driver(&dir.path().join("node"), FLOOD_ITEMS, Duration::from_secs(60));
        let (reply, mut answer) = oneshot::channel();
        commands_tx.try_send(Command::Members(reply)).unwrap();
        assert!(
            d.timers.next_at().is_some_and(|at| at <= d.now()),
            "the node armed timers at start, all due"
        );
        for _ in 0..FLOOD_ITEMS {
            inbox_tx.try_send(junk()).unwrap();
        }
        let (_no_store, mut reports) = mpsc::channel(1);
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.tick().await;
        assert!(d.turn(&mut reports, &mut tick).await);
        assert!(d.timers_fired > 0, "a turn under a flooded inbox fired no timer");
        assert!(answer.try_recv().is_ok(), "a turn under a flooded inbox left a command waiting");
        assert!(
            d.last_persist.elapsed() < Duration::from_secs(60),
            "a turn under a flooded inbox did not persist when due"
        );
        assert!(d.timers_fired <= MAX_TIMERS_PER_TURN as u64);
        assert!(
            d.inbound_handled <= 2 * MAX_INBOUND_PER_TURN as u64,
            "one turn handled {} inbound items",
            d.inbound_handled
        );
        assert!(
            !inbox_tx.is_closed() && inbox_tx.capacity() < FLOOD_ITEMS,
            "the flood still waits"
        );
    }

    /// Durability reports queued behind each other are one input to the
    /// node, not one each (each made its own push to every manager).
    #[tokio::test]
    async fn queued_durability_reports_are_one_input_in_one_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _inbox, _commands, _shutdown) =
            driver(&dir.path().join("node"), 8, Duration::ZERO);
        let (reports_tx, mut reports) = mpsc::channel(64);
        for seq in 1..=40 {
            reports_tx.try_send(StoreReport::Own(seq)).unwrap();
        }
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.tick().await;
        assert!(d.turn(&mut reports, &mut tick).await);
        assert_eq!(d.reports_handled, 40, "one turn took every queued report");
        assert_eq!(d.durability_inputs, 1, "and told the node once");
        assert!(reports.try_recv().is_err());
    }

    /// Due timers beyond the per-turn bound wait for the next turn, which
    /// comes at once and serves waiting inbound first.
    #[tokio::test]
    async fn due_timers_fire_a_bounded_number_per_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _inbox_tx, _commands_tx, _shutdown) =
            driver(&dir.path().join("node"), 16, Duration::from_secs(60));
        let now = d.now();
        for i in 0..(3 * MAX_TIMERS_PER_TURN as u32) {
            d.timers
                .push(crate::core::Timer::test_housekeeping(
                    now.saturating_sub(Duration::from_millis(u64::from(i) + 1)),
                ))
                .unwrap();
        }
        d.fire_due_timers();
        assert_eq!(d.timers_fired, MAX_TIMERS_PER_TURN as u64);
        assert!(d.timers.next_at().is_some_and(|at| at <= d.now()), "the rest still due");
    }

    fn member(id: u64, role: Role) -> Identity {
        Identity { id: NodeId(id), addr: "127.0.0.1:7002".parse().unwrap(), role, generation: 1 }
    }

    /// Waits (bounded) for the background peers.json write to finish.
    async fn peers_write_done(d: &Driver) {
        let wait = async {
            while d.peers_writing.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.expect("peers.json written");
    }

    /// An agent's up, down or rename marks peers.json dirty for a later
    /// tick, at most every AGENT_PEERS_WRITE_INTERVAL_MS; a manager's is
    /// written at once, and if a write is under way, by the next tick
    /// whatever the interval. The old driver wrote on every agent's up and
    /// rename (two fsyncs each, hundreds a second in a large pool).
    #[tokio::test]
    async fn agents_changes_write_peers_on_the_interval_and_managers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _inbox, _commands, _shutdown) =
            driver(&dir.path().join("node"), 16, Duration::from_secs(60));
        d.persist();
        peers_write_done(&d).await;
        let written = d.last_peers_write;
        assert!(!d.peers_dirty && !d.peers_urgent);

        d.on_event(Event::MemberUp(member(2, Role::Agent)));
        let renamed = Event::Renamed { from: member(2, Role::Agent), to: member(2, Role::Agent) };
        d.on_event(renamed);
        d.on_event(Event::MemberDown { identity: member(3, Role::Agent), left: false });
        d.persist();
        assert_eq!(
            d.last_peers_write, written,
            "an agent's change was written before the interval"
        );
        assert!(d.peers_dirty && !d.peers_urgent);

        d.last_peers_write = written - Duration::from_millis(AGENT_PEERS_WRITE_INTERVAL_MS);
        d.persist();
        assert!(d.last_peers_write > written, "a dirty file was not written once due");
        assert!(!d.peers_dirty);
        peers_write_done(&d).await;

        let written = d.last_peers_write;
        d.on_event(Event::MemberUp(member(4, Role::Manager)));
        assert!(d.last_peers_write > written, "a manager's arrival was not written at once");
        peers_write_done(&d).await;

        // A manager's change while a write is under way: the next tick.
        d.peers_writing.store(true, Ordering::Release);
        let written = d.last_peers_write;
        d.on_event(Event::Renamed { from: member(4, Role::Manager), to: member(4, Role::Manager) });
        assert!(d.peers_urgent && d.peers_dirty);
        d.peers_writing.store(false, Ordering::Release);
        d.persist();
        assert!(d.last_peers_write > written && !d.peers_urgent && !d.peers_dirty);
        peers_write_done(&d).await;
    }

    /// Managers close their connection to any member declared down, and
    /// agents theirs to a manager (a restarted manager must be dialed
    /// afresh); an agent keeps its connection to another agent.
    #[test]
    fn only_agents_keep_connections_to_agents_declared_down() {
        assert!(keeps_connection_on_down(true, Role::Agent));
        assert!(!keeps_connection_on_down(true, Role::Manager));
        assert!(!keeps_connection_on_down(false, Role::Agent));
        assert!(!keeps_connection_on_down(false, Role::Manager));
    }
}
