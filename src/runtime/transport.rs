//! QUIC transport for SWIM: one endpoint per node both dials and accepts;
//! every peer connection is mutual TLS, and the peer's node id and role come
//! from its certificate, never from what it says.
//!
//! Owns the connection table, dialing and the per-connection readers. Must
//! never hand the core a datagram without the sender's proven identity, and
//! never queue without a bound: past each bound a datagram is dropped and
//! counted (SWIM tolerates loss; it does not tolerate stalls).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::core::{Identity, Input, NodeId, PeerCert, Role};
use crate::metrics::Metrics;
use crate::pki::{self, CertRole};

/// How long a dial (QUIC + TLS handshake) may take.
pub const DIAL_TIMEOUT_MS: u64 = 2_000;
/// After a failed dial, wait this long before dialing that peer again.
pub const DIAL_RETRY_MS: u64 = 500;
/// Datagrams held for a peer while its connection is being dialed.
pub const MAX_QUEUED_PER_PEER: usize = 32;
/// Largest frame on the oversized-datagram fallback stream.
pub const MAX_FALLBACK_FRAME_BYTES: usize = 4_096;
/// First byte of a uni stream carrying one SWIM packet too big for a datagram.
pub const STREAM_SWIM: u8 = 0x01;
/// First byte of a uni stream carrying one replicated-state message.
pub const STREAM_STATE: u8 = 0x02;
/// First byte of a uni stream carrying one membership exchange message
/// (push-pull; at most `MAX_EXCHANGE_BYTES`).
pub const STREAM_MEMBERS: u8 = 0x03;
/// A membership exchange message (up to 1 MiB) must arrive whole within
/// this (100 KiB/s); past it the stream is dropped and the next periodic
/// exchange repairs what it would have brought.
pub const EXCHANGE_STREAM_DEADLINE_MS: u64 = 10_000;
/// Application error code: a stream (or the connection, for a state stream
/// from a member that is not a manager) refused for what it carried.
pub const STREAM_REFUSED: u32 = 4;
/// Connections without traffic close after this.
pub const IDLE_TIMEOUT_MS: u64 = 5_000;
/// Keep-alive interval, so that an idle but healthy connection stays open.
pub const KEEPALIVE_MS: u64 = 1_000;
/// A uni stream's kind byte and, for a SWIM fallback stream, its whole
/// frame must arrive within this; past it the stream is dropped.
pub const UNI_STREAM_DEADLINE_MS: u64 = 2_000;
/// A state message (up to `MAX_STATE_MSG_BYTES`) must arrive whole within
/// this (256 MiB in 60 s is about 4.5 MB/s); past it the stream is dropped
/// and anti-entropy sends again.
pub const STATE_STREAM_DEADLINE_MS: u64 = 60_000;
/// Streams any peer may open at first, before its certificate's role is
/// known to the connection's owner: an agent, an admin client or a stranger
/// on the join ALPN gets no more. A manager's connection is raised to
/// [`MANAGER_MAX_REMOTE_BIDI_STREAMS`] and [`MANAGER_MAX_REMOTE_UNI_STREAMS`]
/// once registered.
pub const INITIAL_MAX_REMOTE_BIDI_STREAMS: u32 = 16;
pub const INITIAL_MAX_REMOTE_UNI_STREAMS: u32 = 16;
/// Bytes a peer may have in flight on a connection, unread, before its
/// role is known (QUIC flow control: the peer waits past it). A manager's
/// connection is raised to [`MANAGER_RECEIVE_WINDOW_BYTES`].
pub const INITIAL_RECEIVE_WINDOW_BYTES: u32 = 4 << 20;
/// What a manager's connection to another manager allows: state messages
/// (one uni stream each) can come in bursts.
pub const MANAGER_MAX_REMOTE_BIDI_STREAMS: u32 = 64;
pub const MANAGER_MAX_REMOTE_UNI_STREAMS: u32 = 256;
pub const MANAGER_RECEIVE_WINDOW_BYTES: u32 = 64 << 20;

/// A connection whose peer proved who it is.
#[derive(Clone, Debug)]
pub struct PeerConn {
    pub conn: quinn::Connection,
    pub role: CertRole,
    pub id: NodeId,
}

#[derive(Default)]
struct Table {
    conns: BTreeMap<NodeId, quinn::Connection>,
    dialing: BTreeMap<NodeId, Vec<Bytes>>,
    failed_at: BTreeMap<NodeId, Instant>,
    identifying: IdentifyGate,
}

/// Most identifies (dials asking who holds an address) in flight at once.
/// The rejoin loop asks for its seeds and for at most
/// `core::rejoin::MAX_IDENTIFIED_MANAGER_ADDRS` lost managers' addresses a
/// round, as often as every `rejoin_backoff_min_ms` while something is
/// lost; a dead address holds its dial for `DIAL_TIMEOUT_MS`. At the bound
/// (or while one to the same address is in flight) the identify is not
/// started, counted as `identify_in_flight`; the next round asks again.
pub const MAX_IDENTIFY_IN_FLIGHT: usize = 32;

/// The addresses being identified: at most one dial per address, at most
/// [`MAX_IDENTIFY_IN_FLIGHT`] in all.
#[derive(Default)]
struct IdentifyGate {
    in_flight: std::collections::BTreeSet<SocketAddr>,
}

impl IdentifyGate {
    /// Whether an identify of `addr` may start; if so, it is in flight
    /// until [`IdentifyGate::finish`].
    fn try_start(&mut self, addr: SocketAddr) -> bool {
        if self.in_flight.len() >= MAX_IDENTIFY_IN_FLIGHT {
            return false;
        }
        self.in_flight.insert(addr)
    }

    fn finish(&mut self, addr: SocketAddr) {
        self.in_flight.remove(&addr);
    }
}

/// The node's QUIC endpoint and its peer connections.
pub struct Transport {
    pub endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    table: Mutex<Table>,
    inbox: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    self_id: NodeId,
    /// Set once at start: what to do with every member connection besides
    /// membership traffic (the server serves its API there). The transport
    /// never knows what that is.
    on_member: OnceLock<MemberHook>,
}

/// Called with each registered member connection, its certificate role and
/// machine (agents).
pub type MemberHook = Box<dyn Fn(quinn::Connection, CertRole, Option<String>) + Send + Sync>;

/// How long [`Transport::share_notices`] waits for the answer.
pub const SHARE_NOTICES_ANSWER_MS: u64 = 10_000;

/// Streams a peer may open to an agent at once. Nothing opens a
/// bidirectional stream to an agent (sessions, API calls and notices all go
/// from the agent to a manager), and unidirectional ones carry only the rare
/// SWIM packet too big for a datagram (state streams go to managers only).
pub const AGENT_MAX_REMOTE_BIDI_STREAMS: u32 = 0;
pub const AGENT_MAX_REMOTE_UNI_STREAMS: u32 = 8;
/// Datagram bytes an agent buffers per connection, each way.
pub const AGENT_DATAGRAM_BUFFER_BYTES: usize = 64 << 10;
/// Idle timeout an agent offers on its connections. QUIC takes the smaller
/// of the two ends' offers, so a connection to a manager keeps the
/// manager's [`IDLE_TIMEOUT_MS`] (and is kept open by the manager's
/// keep-alives); a connection between two agents, where neither end sends
/// keep-alives, closes after this long without a packet. Long enough that
/// the SWIM traffic between two agents in a large pool (each probes the
/// other about once every `members x probe_period_ms / 2`) mostly finds the
/// connection still open instead of paying a new handshake. An agent keeps
/// it when SWIM declares the other agent down (see the driver's
/// `keeps_connection_on_down`), so a dead peer's connection lasts this long;
/// a peer restarted at the same address resets it with its stable reset
/// key, and one renamed at a new address has it closed
/// ([`Transport::disconnect`]).
pub const AGENT_IDLE_TIMEOUT_MS: u64 = 120_000;

/// Ack-eliciting packets a manager may take from a client before it must
/// send an ACK, as clients ask (QUIC's ACK frequency extension, which
/// every quinn endpoint supports; otherwise it acknowledges every second
/// one, or after its 25 ms `max_ack_delay`, whichever comes first). A
/// manager under write load answered each request with a packet and then
/// sent about 0.4 ACK-only packets per request more, each a system call.
/// Member connections (managers, agents) keep QUIC's default: asked on
/// them too, two 300-agent failover runs had a round's slowest re-session
/// 962 and 1,290 ms after detection (at most 495 without): under load,
/// lost packets were recovered later. The delay bound still applies, so
/// an idle connection's ACK comes at most 25 ms late.
pub const ACK_ELICITING_THRESHOLD: u32 = 8;

fn base_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(IDLE_TIMEOUT_MS))
        .expect("idle timeout fits a VarInt");
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(Duration::from_millis(KEEPALIVE_MS)));
    t
}

/// Asks the other end of a client's connection to acknowledge only every
/// [`ACK_ELICITING_THRESHOLD`] + 1 packets (an ACK_FREQUENCY frame).
pub fn ask_for_fewer_acks(t: &mut quinn::TransportConfig) {
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(ACK_ELICITING_THRESHOLD.into());
    t.ack_frequency_config(Some(ack));
}

/// A program that sends many API requests on a few connections (the
/// benchmarks' clients): a manager's parameters, asking the manager for
/// fewer ACKs as `juju` does.
pub fn api_client_transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = member_config();
    ask_for_fewer_acks(&mut t);
    Arc::new(t)
}

/// The transport parameters every manager connection starts with: the
/// stream and flow-control allowances of a peer whose role is not known
/// yet ([`Transport::register`] raises them for a manager).
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    Arc::new(member_config())
}

fn member_config() -> quinn::TransportConfig {
    let mut t = base_config();
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.datagram_send_buffer_size(1 << 20);
    t.max_concurrent_bidi_streams(INITIAL_MAX_REMOTE_BIDI_STREAMS.into());
    t.max_concurrent_uni_streams(INITIAL_MAX_REMOTE_UNI_STREAMS.into());
    t.receive_window(INITIAL_RECEIVE_WINDOW_BYTES.into());
    t
}

/// Raises a connection's allowances to a manager's, once its certificate
/// proved it one; any other role keeps the initial ones.
fn allow_for_role(conn: &quinn::Connection, role: CertRole) {
    if role == CertRole::Manager {
        conn.set_max_concurrent_bi_streams(MANAGER_MAX_REMOTE_BIDI_STREAMS.into());
        conn.set_max_concurrent_uni_streams(MANAGER_MAX_REMOTE_UNI_STREAMS.into());
        conn.set_receive_window(MANAGER_RECEIVE_WINDOW_BYTES.into());
    }
}

/// The transport parameters of an agent's connections, to keep a small,
/// mostly idle agent small: it holds a connection to nearly every member
/// (SWIM probes everyone), so per-connection costs multiply.
pub fn agent_transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = base_config();
    // No keep-alives from an agent: with one every KEEPALIVE_MS on a
    // connection to every member it met, an idle agent's cost grew with the
    // pool (100 agents: 1.4% of a core each, most of it pings and their
    // acks). Its connections to managers stay open by the managers'
    // keep-alives; those to other agents live on SWIM traffic alone.
    t.keep_alive_interval(None);
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(AGENT_IDLE_TIMEOUT_MS))
        .expect("idle timeout fits a VarInt");
    t.max_idle_timeout(Some(idle));
    // quinn-proto's StreamsState::new allocates state for every stream the
    // peer may open, up front, on every connection: the managers' 64 + 256
    // cost about 20 KiB per connection (heaptrack: 454 KiB of a 20-agent
    // cluster's agent heap). These limits need next to nothing.
    t.max_concurrent_bidi_streams(AGENT_MAX_REMOTE_BIDI_STREAMS.into());
    t.max_concurrent_uni_streams(AGENT_MAX_REMOTE_UNI_STREAMS.into());
    // These are caps, not allocations (quinn queues datagrams as they come),
    // so they change nothing while idle; smaller caps bound what a stalled
    // agent can queue: 64 KiB holds about 45 full SWIM datagrams.
    t.datagram_receive_buffer_size(Some(AGENT_DATAGRAM_BUFFER_BYTES));
    t.datagram_send_buffer_size(AGENT_DATAGRAM_BUFFER_BYTES);
    Arc::new(t)
}

/// Reads the proven role and id from a connection's peer certificate.
pub fn peer_of(conn: &quinn::Connection) -> Option<(CertRole, NodeId)> {
    let certs =
        conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    let (role, id) = pki::peer_from_der(certs.first()?.as_ref()).ok()?;
    Some((role, NodeId(id)))
}

/// The machine an agent's certificate is bound to, if any.
pub fn machine_of(conn: &quinn::Connection) -> Option<String> {
    let certs =
        conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    pki::machine_from_der(certs.first()?.as_ref()).ok()?
}

/// The member role a certificate role stands for (admins are not members).
pub fn member_role(role: CertRole) -> Option<Role> {
    match role {
        CertRole::Manager => Some(Role::Manager),
        CertRole::Agent => Some(Role::Agent),
        CertRole::Admin => None,
    }
}

impl Transport {
    pub fn new(
        endpoint: quinn::Endpoint,
        client_config: quinn::ClientConfig,
        inbox: mpsc::Sender<Input>,
        metrics: Arc<Metrics>,
        self_id: NodeId,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            endpoint,
            client_config,
            table: Mutex::new(Table::default()),
            inbox,
            metrics,
            self_id,
            on_member: OnceLock::new(),
        })
    }

    /// Hands every member connection from now on to `hook` too (set once;
    /// a second hook is ignored).
    pub fn on_member_connection(&self, hook: MemberHook) {
        let _ = self.on_member.set(hook);
    }

    /// Sends one SWIM datagram to `to`, dialing first if needed.
    pub fn send(self: &Arc<Self>, to: &Identity, bytes: Vec<u8>) {
        let bytes = Bytes::from(bytes);
        let mut table = self.table.lock().expect("transport table poisoned");
        if let Some(conn) = table.conns.get(&to.id) {
            if conn.close_reason().is_none() {
                let conn = conn.clone();
                drop(table);
                self.send_on(&conn, bytes);
                return;
            }
            table.conns.remove(&to.id);
        }
        if let Some(queue) = table.dialing.get_mut(&to.id) {
            if queue.len() < MAX_QUEUED_PER_PEER {
                queue.push(bytes);
            } else {
                self.metrics.count_drop(crate::metrics::DropReason::QueueFull);
            }
            return;
        }
        let recently_failed = table
            .failed_at
            .get(&to.id)
            .is_some_and(|t| t.elapsed() < Duration::from_millis(DIAL_RETRY_MS));
        if recently_failed {
            self.metrics.count_drop(crate::metrics::DropReason::NoConnection);
            return;
        }
        table.dialing.insert(to.id, vec![bytes]);
        drop(table);
        let this = self.clone();
        let to = to.clone();
        tokio::spawn(async move { this.dial_member(to).await });
    }

    fn send_on(self: &Arc<Self>, conn: &quinn::Connection, bytes: Bytes) {
        self.metrics.observe_datagram_out(bytes.len());
        match conn.max_datagram_size() {
            Some(max) if bytes.len() <= max => {
                if conn.send_datagram(bytes).is_err() {
                    self.metrics.count_drop(crate::metrics::DropReason::NoConnection);
                }
            }
            _ => {
                // Bigger than this path allows right now: one uni stream.
                self.metrics.count_drop(crate::metrics::DropReason::TooLargeForPath);
                let conn = conn.clone();
                tokio::spawn(async move {
                    let _ = send_uni(&conn, STREAM_SWIM, &bytes, MAX_FALLBACK_FRAME_BYTES).await;
                });
            }
        }
    }

    async fn dial_member(self: Arc<Self>, to: Identity) {
        let result = self.dial(to.addr).await;
        let conn = match result {
            Ok(pc) if pc.id == to.id => Some(pc),
            Ok(pc) => {
                tracing::warn!(addr = %to.addr, expected = %to.id, found = %pc.id, "address is held by another node");
                pc.conn.close(1u32.into(), b"not the node you dialed");
                None
            }
            Err(e) => {
                tracing::debug!(peer = %to.id, addr = %to.addr, error = %e, "dial failed");
                None
            }
        };
        let queued = {
            let mut table = self.table.lock().expect("transport table poisoned");
            let queued = table.dialing.remove(&to.id).unwrap_or_default();
            if conn.is_none() {
                table.failed_at.insert(to.id, Instant::now());
            }
            queued
        };
        match conn {
            Some(pc) => {
                let conn = pc.conn.clone();
                self.register(pc);
                for bytes in queued {
                    self.send_on(&conn, bytes);
                }
            }
            None => {
                for _ in queued {
                    self.metrics.count_drop(crate::metrics::DropReason::NoConnection);
                }
            }
        }
    }

    /// Dials `addr` and returns the connection with its proven identity.
    pub async fn dial(&self, addr: SocketAddr) -> Result<PeerConn, String> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), addr, pki::SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(Duration::from_millis(DIAL_TIMEOUT_MS), connecting)
            .await
            .map_err(|_| format!("no answer within {DIAL_TIMEOUT_MS} ms"))?
            .map_err(|e| e.to_string())?;
        let (role, id) = peer_of(&conn).ok_or("peer presented no usable certificate")?;
        if id == self.self_id {
            conn.close(1u32.into(), b"that is me");
            return Err("the address is this node itself".into());
        }
        Ok(PeerConn { conn, role, id })
    }

    /// Finds out who answers at `addr` and reports it to the driver.
    pub fn identify(self: &Arc<Self>, addr: SocketAddr) {
        let started =
            self.table.lock().expect("transport table poisoned").identifying.try_start(addr);
        if !started {
            tracing::debug!(%addr, "identify not started: one to this address, or too many, in flight");
            self.metrics.count_drop(crate::metrics::DropReason::IdentifyInFlight);
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let dialed = this.dial(addr).await;
            this.table.lock().expect("transport table poisoned").identifying.finish(addr);
            match dialed {
                Ok(pc) => {
                    let Some(role) = member_role(pc.role) else { return };
                    let peer = PeerCert { id: pc.id, role };
                    this.register(pc);
                    let _ = this.inbox.send(Input::Identified { addr, peer }).await;
                }
                Err(e) => tracing::debug!(%addr, error = %e, "seed did not answer"),
            }
        });
    }

    /// Makes `pc` the connection for its peer and starts its readers.
    /// The newest connection wins: a restarted peer dials afresh.
    pub fn register(self: &Arc<Self>, pc: PeerConn) {
        let Some(role) = member_role(pc.role) else { return };
        {
            let mut table = self.table.lock().expect("transport table poisoned");
            table.conns.insert(pc.id, pc.conn.clone());
            table.failed_at.remove(&pc.id);
        }
        allow_for_role(&pc.conn, pc.role);
        let from = PeerCert { id: pc.id, role };
        let this = self.clone();
        let conn = pc.conn.clone();
        tokio::spawn(async move { this.read_datagrams(conn, from).await });
        let this = self.clone();
        let conn = pc.conn.clone();
        tokio::spawn(async move { this.read_uni_streams(conn, from).await });
        if let Some(hook) = self.on_member.get() {
            let machine = machine_of(&pc.conn);
            hook(pc.conn, pc.role, machine);
        }
    }

    fn deliver(&self, from: PeerCert, bytes: Vec<u8>) {
        if self.inbox.try_send(Input::Datagram { from, bytes }).is_err() {
            self.metrics.count_drop(crate::metrics::DropReason::QueueFull);
        }
    }

    async fn read_datagrams(self: Arc<Self>, conn: quinn::Connection, from: PeerCert) {
        while let Ok(bytes) = conn.read_datagram().await {
            self.deliver(from, bytes.to_vec());
        }
        let mut table = self.table.lock().expect("transport table poisoned");
        if table.conns.get(&from.id).is_some_and(|c| c.stable_id() == conn.stable_id()) {
            table.conns.remove(&from.id);
        }
    }

    async fn read_uni_streams(self: Arc<Self>, conn: quinn::Connection, from: PeerCert) {
        while let Ok(recv) = conn.accept_uni().await {
            let this = self.clone();
            let conn = conn.clone();
            tokio::spawn(async move { this.read_uni(conn, recv, from).await });
        }
    }

    /// Reads one uni stream: its kind byte first, then, only if the
    /// sender's proven role may send that kind, its frame, within the
    /// kind's deadline, into a buffer that grows as bytes arrive.
    async fn read_uni(&self, conn: quinn::Connection, mut recv: quinn::RecvStream, from: PeerCert) {
        let mut kind = [0u8; 1];
        let first = tokio::time::timeout(
            Duration::from_millis(UNI_STREAM_DEADLINE_MS),
            recv.read_exact(&mut kind),
        )
        .await;
        if !matches!(first, Ok(Ok(()))) {
            self.metrics.count_drop(crate::metrics::DropReason::StreamTimeout);
            return;
        }
        let (limit, deadline_ms) = match (kind[0], from.role) {
            (STREAM_SWIM, _) => (MAX_FALLBACK_FRAME_BYTES, UNI_STREAM_DEADLINE_MS),
            (STREAM_STATE, Role::Manager) => {
                (crate::core::state::sync::MAX_STATE_MSG_BYTES, STATE_STREAM_DEADLINE_MS)
            }
            (STREAM_MEMBERS, _) => {
                // Any proven member may exchange (only members' connections
                // are registered and read here); the core refuses revoked
                // ones and senders speaking for another member.
                (crate::core::node::pushpull::MAX_EXCHANGE_BYTES, EXCHANGE_STREAM_DEADLINE_MS)
            }
            (STREAM_STATE, _) => {
                // Authorise before reading: only managers replicate state.
                tracing::warn!(peer = %from.id, role = from.role.as_str(), "refused a state stream from a member that is not a manager; closing its connection");
                self.metrics.count_drop(crate::metrics::DropReason::UnauthorisedStream);
                let _ = recv.stop(STREAM_REFUSED.into());
                conn.close(STREAM_REFUSED.into(), b"only managers send state");
                return;
            }
            _ => {
                self.metrics.count_drop(crate::metrics::DropReason::Malformed);
                let _ = recv.stop(STREAM_REFUSED.into());
                return;
            }
        };
        let frame = tokio::time::timeout(
            Duration::from_millis(deadline_ms),
            super::wire::read_raw_frame(&mut recv, limit),
        )
        .await;
        match frame {
            Ok(Ok(bytes)) if kind[0] == STREAM_SWIM => self.deliver(from, bytes),
            Ok(Ok(bytes)) if kind[0] == STREAM_MEMBERS => {
                if self.inbox.send(Input::Members { from, bytes }).await.is_err() {
                    self.metrics.count_drop(crate::metrics::DropReason::QueueFull);
                }
            }
            Ok(Err(e)) if kind[0] == STREAM_MEMBERS => {
                // Refused before the body is read when it announces more
                // than the bound: nothing was allocated, nothing changes.
                tracing::warn!(peer = %from.id, error = %e, "{}", crate::events::EXCHANGE_REFUSED);
                let reason = match e {
                    super::wire::FrameError::TooLarge { .. } => {
                        crate::metrics::DropReason::Oversized
                    }
                    _ => crate::metrics::DropReason::Malformed,
                };
                self.metrics.count_drop(reason);
                let _ = recv.stop(STREAM_REFUSED.into());
            }
            Ok(Ok(bytes)) => {
                if self.inbox.send(Input::State { from, bytes }).await.is_err() {
                    self.metrics.count_drop(crate::metrics::DropReason::QueueFull);
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %from.id, error = %e, "bad stream frame");
                self.metrics.count_drop(crate::metrics::DropReason::Malformed);
                let _ = recv.stop(STREAM_REFUSED.into());
            }
            Err(_) => {
                tracing::debug!(peer = %from.id, deadline_ms, "stream frame not complete in time; dropped");
                self.metrics.count_drop(crate::metrics::DropReason::StreamTimeout);
                let _ = recv.stop(STREAM_REFUSED.into());
            }
        }
    }

    /// Sends one membership exchange message to a member on its own uni
    /// stream, dialing if needed. Failures are dropped: the next periodic
    /// exchange repairs them.
    pub fn send_members(self: &Arc<Self>, to: &Identity, bytes: Vec<u8>) {
        let limit = crate::core::node::pushpull::MAX_EXCHANGE_BYTES;
        self.send_stream(to, STREAM_MEMBERS, bytes, limit);
    }

    /// Sends one state message to a member on its own uni stream, dialing
    /// if needed. Failures are dropped: anti-entropy repairs them.
    pub fn send_state(self: &Arc<Self>, to: &Identity, bytes: Vec<u8>) {
        let limit = crate::core::state::sync::MAX_STATE_MSG_BYTES;
        self.send_stream(to, STREAM_STATE, bytes, limit);
    }

    fn send_stream(self: &Arc<Self>, to: &Identity, kind: u8, bytes: Vec<u8>, limit: usize) {
        let this = self.clone();
        let to = to.clone();
        tokio::spawn(async move {
            let conn = match this.connection(to.id) {
                Some(c) if c.close_reason().is_none() => c,
                _ => match this.dial(to.addr).await {
                    Ok(pc) if pc.id == to.id => {
                        let c = pc.conn.clone();
                        this.register(pc);
                        c
                    }
                    _ => {
                        this.metrics.count_drop(crate::metrics::DropReason::NoConnection);
                        return;
                    }
                },
            };
            if let Err(e) = send_uni(&conn, kind, &bytes, limit).await {
                tracing::debug!(peer = %to.id, kind, error = %e, "stream message not sent");
                this.metrics.count_drop(crate::metrics::DropReason::NoConnection);
            }
        });
    }

    /// Closes and forgets the connection to `id`, which SWIM declared down:
    /// the process behind it is presumed dead. Left alone, a connection to
    /// a killed peer stays open until the idle timeout (QUIC stateless
    /// resets did not close them here), and a peer restarted at the same
    /// address before then was sent to through the dead one: an agent's
    /// session back to a restarted manager waited out
    /// `SESSION_OPEN_TIMEOUT_MS` and failed. Now the next send dials whoever
    /// answers. Returns whether a connection was open.
    pub fn disconnect(&self, id: NodeId) -> bool {
        let conn = self.table.lock().expect("transport table poisoned").conns.remove(&id);
        if let Some(c) = &conn {
            c.close(3u32.into(), b"declared down");
        }
        conn.is_some()
    }

    /// The open connections to managers, in id order (an agent forwards
    /// its log lines on one of them).
    pub fn manager_connections(&self) -> Vec<quinn::Connection> {
        let table = self.table.lock().expect("transport table poisoned");
        let mut conns: Vec<(NodeId, quinn::Connection)> = table
            .conns
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .filter(|(_, c)| peer_of(c).is_some_and(|(role, _)| role == CertRole::Manager))
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        conns.sort_by_key(|(id, _)| *id);
        conns.into_iter().map(|(_, c)| c).collect()
    }

    /// The open connection to a member, if any.
    pub fn connection(&self, id: NodeId) -> Option<quinn::Connection> {
        self.table.lock().expect("transport table poisoned").conns.get(&id).cloned()
    }
}

/// Opens a uni stream, writes its kind byte and one raw frame, finishes it.
async fn send_uni(
    conn: &quinn::Connection,
    kind: u8,
    bytes: &[u8],
    limit: usize,
) -> Result<(), String> {
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    send.write_all(&[kind]).await.map_err(|e| e.to_string())?;
    super::wire::write_raw_frame(&mut send, bytes, limit).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())
}

impl Transport {
    /// Sends this node's notices to a manager that just came up, so that a
    /// member which missed a revocation while away learns it. Waits at most
    /// [`SHARE_NOTICES_ANSWER_MS`] for the answer, then gives up (the
    /// notices also travel by gossip).
    pub fn share_notices(self: &Arc<Self>, to: Identity, notices: Vec<crate::core::Notice>) {
        if notices.is_empty() {
            return;
        }
        let transport = self.clone();
        tokio::spawn(async move {
            let conn = match transport.connection(to.id) {
                Some(c) => c,
                None => match transport.dial(to.addr).await {
                    Ok(pc) if pc.id == to.id => pc.conn,
                    _ => return,
                },
            };
            let Ok((mut send, mut recv)) = conn.open_bi().await else { return };
            let req = super::wire::Request::SyncNotices(notices);
            if super::wire::write_frame(&mut send, &req, super::wire::MAX_API_FRAME_BYTES)
                .await
                .is_ok()
            {
                let _ = send.finish();
                let wait = Duration::from_millis(SHARE_NOTICES_ANSWER_MS);
                let answer = super::wire::read_frame::<super::wire::Response>(
                    &mut recv,
                    super::wire::MAX_API_FRAME_BYTES,
                );
                let _ = tokio::time::timeout(wait, answer).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_are_one_per_address_and_bounded_in_all() {
        let mut gate = IdentifyGate::default();
        let addr = |n: usize| SocketAddr::from(([127, 0, 0, 1], 7_000 + n as u16));
        assert!(gate.try_start(addr(0)));
        assert!(!gate.try_start(addr(0)), "one dial per address at a time");
        for n in 1..MAX_IDENTIFY_IN_FLIGHT {
            assert!(gate.try_start(addr(n)));
        }
        assert!(!gate.try_start(addr(MAX_IDENTIFY_IN_FLIGHT)), "the bound holds");
        gate.finish(addr(0));
        assert!(gate.try_start(addr(MAX_IDENTIFY_IN_FLIGHT)), "a finished dial frees its place");
        assert!(!gate.try_start(addr(0)));
    }
}
