//! The vocabulary between the node core and whatever drives it (the tokio
//! runtime or the simulator): inputs, outputs, timers, events and counters.
//!
//! Owns only plain data. Must never hold a socket, a clock or a thread.

use std::net::SocketAddr;
use std::time::Duration;

use super::agent::{WorkloadCmd, WorkloadEvent};
use super::control::provider::{ProviderCmd, ProviderResult};
use super::identity::{Identity, NodeId, Role};
use super::notices::Notice;
use super::state::{Command, RequestId, Stamped, VersionVector, WriteResult};

pub use super::time::Time;

/// What TLS proved about the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCert {
    pub id: NodeId,
    pub role: Role,
}

/// Everything that can happen to a node.
#[derive(Debug)]
pub enum Input {
    /// A SWIM datagram that arrived on a connection authenticated as `from`.
    Datagram { from: PeerCert, bytes: Vec<u8> },
    /// A timer the node asked for is due.
    Timer(Timer),
    /// The driver found out which node answers at a seed address.
    Identified { addr: SocketAddr, peer: PeerCert },
    /// Leave the cluster gracefully (SIGTERM, SIGINT).
    Leave,
    /// Spread a notice to the whole cluster (for instance a revocation).
    Publish(Notice),
    /// A client's command on the replicated state (managers only). The
    /// reply comes as [`Output::Reply`] once durable, and once `replicas`
    /// other managers hold it, or when `timeout` passes. With the client's
    /// request `id`, a manager that already holds the record of that
    /// request answers with its outcome instead of applying it again.
    Command { req: u64, id: Option<RequestId>, cmd: Command, replicas: u32, timeout: Duration },
    /// Own state operations up to `seq` are durable on disk.
    Durable { seq: u64 },
    /// A state message from a manager, as bytes off a stream.
    State { from: PeerCert, bytes: Vec<u8> },
    /// A membership exchange message (push-pull) from a member, as bytes
    /// off a stream (at most `MAX_EXCHANGE_BYTES`).
    Members { from: PeerCert, bytes: Vec<u8> },
    /// An agent session came up: on an agent, the one it asked for with
    /// [`Output::OpenSession`] (`peer` is the manager that answered); on a
    /// manager, one an agent opened (`machine` is what the agent's
    /// certificate names).
    SessionOpened { session: u64, peer: PeerCert, machine: Option<String> },
    /// The session closed, or (on an agent) could not be opened at all.
    SessionClosed { session: u64 },
    /// A message arrived on the session, as bytes.
    SessionData { session: u64, bytes: Vec<u8> },
    /// What became of a workload this agent asked for.
    Workload(WorkloadEvent),
    /// What the provider did with a request (managers).
    Provider(Box<ProviderResult>),
    /// State operations up to `vv` (from any author, own ones included)
    /// are durable on this node's disk: a `Persist { own: false }` batch, or
    /// a snapshot, was synced. Peers learn it through `Have`.
    DurableRemote { vv: VersionVector },
    /// (Agents) no candidate opened the session and a manager refused it
    /// for load (its login rate limit), asking to be tried again after
    /// `retry_after_ms`.
    SessionBusy { session: u64, retry_after_ms: u64 },
}

/// A timer: deliver it back as [`Input::Timer`] at `at` (or later).
#[derive(Debug, Clone)]
pub struct Timer {
    /// When the node wants it back.
    pub at: Time,
    pub(crate) kind: TimerKind,
}

#[derive(Debug, Clone)]
pub(crate) enum TimerKind {
    /// One of foca's own timers.
    Swim(foca::Timer<Identity>),
    /// The re-announce loop; stale when the token is not current.
    Rejoin(u64),
    /// Once per probe period: local-health decay, view refresh, notices.
    Housekeeping,
    /// State anti-entropy and write deadlines.
    AntiEntropy,
    /// An agent's restarts, session retries and reports; stale when the
    /// token is not current.
    Agent(u64),
    /// A manager recomputes the assignments of the agents it serves.
    Assign,
    /// A manager recomputes singleton ownership and runs its workers.
    Control,
}

/// A line of timers whose members carry a token: once the node arms a
/// timer of a line with a token, every pending timer of that line with
/// another token is a no-op when it fires (foca ignores a timer whose token
/// is not its current one; the node ignores a rejoin or agent timer whose
/// token is not current; all three tokens only move forward). A driver may
/// therefore cancel them, and should: they would pile up otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerLine {
    Swim,
    Rejoin,
    Agent,
}

impl Timer {
    /// The line this timer belongs to and its token, for timers that a
    /// newer token of the same line makes stale (see [`TimerLine`]);
    /// `None` for timers that are never stale (foca's `RemoveDown`, the
    /// periodic ticks).
    pub fn token(&self) -> Option<(TimerLine, u64)> {
        use foca::Timer as F;
        match &self.kind {
            TimerKind::Swim(
                F::ProbeRandomMember(t)
                | F::PeriodicAnnounce(t)
                | F::PeriodicAnnounceDown(t)
                | F::PeriodicGossip(t),
            ) => Some((TimerLine::Swim, u64::from(*t))),
            TimerKind::Swim(
                F::SendIndirectProbe { token, .. } | F::ChangeSuspectToDown { token, .. },
            ) => Some((TimerLine::Swim, u64::from(*token))),
            TimerKind::Swim(F::RemoveDown(_)) => None,
            TimerKind::Rejoin(t) => Some((TimerLine::Rejoin, *t)),
            TimerKind::Agent(t) => Some((TimerLine::Agent, *t)),
            TimerKind::Housekeeping
            | TimerKind::AntiEntropy
            | TimerKind::Assign
            | TimerKind::Control => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn test_rejoin(at: Time, token: u64) -> Timer {
        Timer { at, kind: TimerKind::Rejoin(token) }
    }

    #[cfg(test)]
    pub(crate) fn test_swim_probe(at: Time, token: u8) -> Timer {
        Timer { at, kind: TimerKind::Swim(foca::Timer::ProbeRandomMember(token)) }
    }

    #[cfg(test)]
    pub(crate) fn test_housekeeping(at: Time) -> Timer {
        Timer { at, kind: TimerKind::Housekeeping }
    }

    /// A stable tag for logs and traces.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            TimerKind::Swim(foca::Timer::ProbeRandomMember(_)) => "probe",
            TimerKind::Swim(foca::Timer::SendIndirectProbe { .. }) => "indirect-probe",
            TimerKind::Swim(foca::Timer::ChangeSuspectToDown { .. }) => "suspect-to-down",
            TimerKind::Swim(foca::Timer::PeriodicAnnounce(_)) => "announce",
            TimerKind::Swim(foca::Timer::PeriodicAnnounceDown(_)) => "announce-down",
            TimerKind::Swim(foca::Timer::PeriodicGossip(_)) => "gossip",
            TimerKind::Swim(foca::Timer::RemoveDown(_)) => "remove-down",
            TimerKind::Rejoin(_) => "rejoin",
            TimerKind::Housekeeping => "housekeeping",
            TimerKind::AntiEntropy => "anti-entropy",
            TimerKind::Agent(_) => "agent",
            TimerKind::Assign => "assign",
            TimerKind::Control => "control",
        }
    }
}

/// Everything a node asks of its driver.
#[derive(Debug)]
pub enum Output {
    /// Send these bytes to `to` as one datagram.
    Send { to: Identity, bytes: Vec<u8> },
    /// Find out which node answers at `addr`, then report it as
    /// [`Input::Identified`]. Failing silently is fine: the node retries.
    Identify { addr: SocketAddr },
    /// Deliver this timer back when it is due.
    SetTimer(Timer),
    /// Something worth telling the outside world.
    Event(Event),
    /// Write these state operations to the log. Once they are synced,
    /// report [`Input::Durable`] with the last seq if `own`, else
    /// [`Input::DurableRemote`] with the highest seq per author.
    Persist { ops: Vec<Stamped>, own: bool },
    /// Send this state message (bytes) to `to` on a stream.
    SendState { to: Identity, bytes: Vec<u8> },
    /// Send this membership exchange message (bytes) to `to` on a stream;
    /// report what comes back as [`Input::Members`]. Failing is fine: the
    /// next periodic exchange repairs it.
    SendMembers { to: Identity, bytes: Vec<u8> },
    /// The answer to [`Input::Command`] `req`.
    Reply { req: u64, result: WriteResult },
    /// A full state was merged; the driver should write a snapshot soon,
    /// and report its version vector as [`Input::DurableRemote`] once synced.
    SnapshotNeeded,
    /// Agents: open session `session` with the first of `candidates` that
    /// answers as a manager (with that node id, when one is given); report
    /// [`Input::SessionOpened`] or [`Input::SessionClosed`].
    OpenSession { session: u64, candidates: Vec<(SocketAddr, Option<NodeId>)> },
    /// Send these bytes as one message on the session.
    SessionSend { session: u64, bytes: Vec<u8> },
    /// Close the session (after what was sent on it has gone out).
    CloseSession { session: u64 },
    /// Agents: start or stop a workload.
    Workload(WorkloadCmd),
    /// Agents: the live managers' addresses changed; remember them (the
    /// list is never empty).
    SaveManagers(Vec<SocketAddr>),
    /// Managers: ask the provider; answer with [`Input::Provider`].
    Provider(Box<ProviderCmd>),
}

/// A change that the driver may log, persist or show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member became active.
    MemberUp(Identity),
    /// A member was declared down; `left` if it had announced its departure.
    MemberDown { identity: Identity, left: bool },
    /// A member came back under a newer identity.
    Renamed { from: Identity, to: Identity },
    /// This node is known by at least one active member.
    Active,
    /// Every member this node knew is down or gone.
    Idle,
    /// This node was declared down and rejoined as a new generation; the
    /// driver must persist the generation.
    Rejoined(Identity),
    /// A notice learned from the cluster (or published here).
    Notice(Notice),
    /// This manager started (`owned`) or stopped running a singleton.
    Singleton { name: &'static str, owned: bool },
    /// This manager's controller machine was removed: it must leave.
    Retired,
    /// This node was revoked (replaced by the HA keeper): it must stop.
    Revoked,
}

/// Plain counters; the runtime exports them as Prometheus metrics and the
/// simulator prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Largest datagram this node sent, in bytes.
    pub max_datagram_bytes_out: u64,
    pub dropped_malformed: u64,
    pub dropped_oversized: u64,
    /// Datagrams whose sender claimed another id or role than its certificate.
    pub dropped_spoofed: u64,
    /// Datagrams from members revoked by the HA keeper.
    pub dropped_revoked: u64,
    /// Datagrams refused by foca itself (stale, from ourselves, etc.).
    pub dropped_rejected: u64,
    pub dropped_output_full: u64,
    pub probes: u64,
    pub probes_failed: u64,
    /// Members newly seen as suspect.
    pub suspicions: u64,
    /// Suspects that came back alive at the same generation: a suspicion
    /// that turned out false.
    pub refutations: u64,
    /// Times this node had to refute a suspicion about itself.
    pub self_refutations: u64,
    /// Other members' suspicions that confirmed one of this node's own and
    /// brought its verdict earlier (Lifeguard's dynamic suspicion).
    pub suspicion_confirmations: u64,
    /// Suspects probed out of turn because an accuser's verdict had not
    /// reached this node (`suspicion::BACKSTOP_MULT`).
    pub suspects_probed: u64,
    /// Joins dropped from this node's gossip backlog, unsent, because
    /// peers' gossip had brought it the same news `membership::JOIN_ECHOES`
    /// times.
    pub joins_retired: u64,
    pub late_timers: u64,
    pub members_up: u64,
    pub members_down: u64,
    pub rejoin_announces: u64,
    pub state_msgs_in: u64,
    pub state_msgs_out: u64,
    /// State messages refused: undecodable, or from a non-manager.
    pub state_msgs_dropped: u64,
    /// Operations from other managers applied here.
    pub state_ops_applied: u64,
    /// Full states sent to a peer that lacked compacted operations.
    pub state_full_sent: u64,
    /// Full states from a peer merged here.
    pub state_full_merged: u64,
    /// Membership exchange messages sent (requests and answers).
    pub exchanges_out: u64,
    /// Membership exchange messages merged into foca.
    pub exchanges_in: u64,
    /// Exchange messages refused: oversized, undecodable, from a revoked
    /// member or naming another sender than the certificate's.
    pub exchanges_refused: u64,
    /// Exchange requests not answered for now: the answer queue was full.
    pub exchanges_queue_full: u64,
    /// Members left out of exchange messages at the byte bound.
    pub exchange_members_cut: u64,
}

/// How a member looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
    Left,
    /// Down, and revoked: the HA keeper replaced it; it may never return.
    Replaced,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
            MemberState::Replaced => "replaced",
        }
    }
}

/// One row of `juju members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub identity: Identity,
    pub state: MemberState,
    pub incarnation: u16,
}
