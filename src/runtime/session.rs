//! Agent sessions on QUIC: one bidirectional stream per session, on the
//! member connection between an agent and a manager. The stream opens with
//! a `Request::AgentSession` frame; after it, each frame is one session
//! message (bincode, bounded), in either direction.
//!
//! Owns both ends' stream tasks and the table of open sessions' writers.
//! Must never let a slow peer hold unbounded data: each session's outgoing
//! queue is bounded, and a session whose queue is full is closed (the agent
//! reconnects and is sent its whole assignment again). Never decides which
//! manager to use: the core does, and this module only dials what it names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::transport::{Transport, member_role};
use super::wire::{self, MAX_API_FRAME_BYTES, Request};
use crate::core::agent::MAX_SESSION_MSG_BYTES;
use crate::core::{Input, NodeId, PeerCert, Role};
use crate::metrics::Metrics;
use crate::pki::CertRole;

/// Messages waiting to go out on one session; at the bound the session is
/// closed.
pub const MAX_SESSION_QUEUE: usize = 64;
/// How long an agent waits for a manager's first message on a new session.
pub const SESSION_OPEN_TIMEOUT_MS: u64 = 2_000;
/// Once a session frame has begun, the rest of it (at most
/// `MAX_SESSION_MSG_BYTES`) must arrive within this; past it the session is
/// closed (a peer that sends one byte and stalls holds nothing for long).
/// Between frames a session may idle: its connection's idle timeout and
/// keep-alives decide whether the peer is there.
pub const SESSION_FRAME_DEADLINE_MS: u64 = 10_000;

/// The writers of every open session, by session id.
pub struct SessionTable {
    writers: Mutex<BTreeMap<u64, mpsc::Sender<Vec<u8>>>>,
    /// Ids for sessions accepted from agents (managers); agents use the
    /// core's ids.
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl SessionTable {
    pub fn new(metrics: Arc<Metrics>) -> Arc<SessionTable> {
        Arc::new(SessionTable {
            writers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    fn register(&self, id: u64) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(MAX_SESSION_QUEUE);
        self.writers.lock().expect("session table poisoned").insert(id, tx);
        rx
    }

    /// Queues one message on `session`; a full queue closes the session.
    pub fn send(&self, session: u64, bytes: Vec<u8>) {
        let mut writers = self.writers.lock().expect("session table poisoned");
        let Some(tx) = writers.get(&session) else { return };
        if tx.try_send(bytes).is_err() {
            tracing::warn!(session, "session queue full or closed; closing the session");
            self.metrics.count_drop(crate::metrics::DropReason::SessionQueueFull);
            writers.remove(&session);
        }
    }

    /// Closes `session` once what was queued on it has been written.
    pub fn close(&self, session: u64) {
        self.writers.lock().expect("session table poisoned").remove(&session);
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.writers.lock().expect("session table poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes queued messages until the queue closes, then finishes the stream.
/// A peer that does not take a frame within `SESSION_FRAME_DEADLINE_MS`
/// (flow control holds the writer) has the stream reset: the queue closes
/// with it, and so does the session, instead of holding what was queued
/// for as long as the connection lives.
async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    table: Arc<SessionTable>,
) {
    let deadline = Duration::from_millis(SESSION_FRAME_DEADLINE_MS);
    while let Some(bytes) = rx.recv().await {
        match tokio::time::timeout(
            deadline,
            wire::write_raw_frame(&mut send, &bytes, MAX_SESSION_MSG_BYTES),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    deadline_ms = SESSION_FRAME_DEADLINE_MS,
                    "session peer did not take a frame in time; resetting the session"
                );
                table.metrics.count_drop(crate::metrics::DropReason::SessionWriteTimeout);
                let _ = send.reset(super::transport::STREAM_REFUSED.into());
                return;
            }
        }
    }
    let _ = send.finish();
}

/// Reads frames into the driver until the stream ends (or a frame is bad,
/// too large or stalls), then reports the session closed.
async fn read_loop(
    mut recv: quinn::RecvStream,
    session: u64,
    table: Arc<SessionTable>,
    inbox: mpsc::Sender<Input>,
) {
    loop {
        match wire::read_raw_frame_started(
            &mut recv,
            MAX_SESSION_MSG_BYTES,
            SESSION_FRAME_DEADLINE_MS,
        )
        .await
        {
            Ok(bytes) => {
                if inbox.send(Input::SessionData { session, bytes }).await.is_err() {
                    break;
                }
            }
            Err(e @ (wire::FrameError::TooLarge { .. } | wire::FrameError::TimedOut { .. })) => {
                tracing::warn!(session, error = %e, "{}", crate::events::SESSION_BAD_FRAME);
                table.metrics.count_drop(crate::metrics::DropReason::SessionBadFrame);
                let _ = recv.stop(super::transport::STREAM_REFUSED.into());
                break;
            }
            Err(_) => break,
        }
    }
    table.close(session);
    let _ = inbox.send(Input::SessionClosed { session }).await;
}

/// Manager side: an agent opened a session stream (its first frame has
/// been read). Runs it until either side ends it.
pub async fn serve(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    agent: NodeId,
    machine: Option<String>,
    table: Arc<SessionTable>,
    inbox: mpsc::Sender<Input>,
) {
    let session = table.next_id.fetch_add(1, Ordering::Relaxed);
    let rx = table.register(session);
    let peer = PeerCert { id: agent, role: Role::Agent };
    if inbox.send(Input::SessionOpened { session, peer, machine }).await.is_err() {
        return;
    }
    tokio::spawn(write_loop(send, rx, table.clone()));
    read_loop(recv, session, table, inbox).await;
}

/// One candidate's attempt: a connection to a manager (with the expected
/// id, if given), the session frame, and the manager's first message.
async fn try_open(
    transport: Arc<Transport>,
    addr: SocketAddr,
    want: Option<NodeId>,
) -> Result<(NodeId, quinn::SendStream, quinn::RecvStream, Vec<u8>), String> {
    let conn =
        match want.and_then(|id| transport.connection(id)).filter(|c| c.close_reason().is_none()) {
            Some(c) => c,
            None => {
                let pc = transport.dial(addr).await?;
                if pc.role != CertRole::Manager || want.is_some_and(|w| w != pc.id) {
                    return Err(format!("{addr} is not the manager expected there"));
                }
                let c = pc.conn.clone();
                transport.register(pc);
                c
            }
        };
    let id = super::transport::peer_of(&conn).map(|(_, id)| id).ok_or("no peer identity")?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_frame(&mut send, &Request::AgentSession, MAX_API_FRAME_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(
        Duration::from_millis(SESSION_OPEN_TIMEOUT_MS),
        wire::read_raw_frame(&mut recv, MAX_SESSION_MSG_BYTES),
    )
    .await
    .map_err(|_| format!("{addr} sent nothing within {SESSION_OPEN_TIMEOUT_MS} ms"))?
    .map_err(|e| e.to_string())?;
    Ok((id, send, recv, first))
}

/// Agent side: opens `session` with the first candidate that answers, and
/// runs it; reports `SessionClosed` if none does.
pub fn open(
    transport: Arc<Transport>,
    table: Arc<SessionTable>,
    inbox: mpsc::Sender<Input>,
    session: u64,
    candidates: Vec<(SocketAddr, Option<NodeId>)>,
) {
    tokio::spawn(async move {
        let mut tries = tokio::task::JoinSet::new();
        for (addr, want) in candidates {
            tries.spawn(try_open(transport.clone(), addr, want));
        }
        while let Some(done) = tries.join_next().await {
            match done {
                Ok(Ok((id, send, recv, first))) => {
                    tries.abort_all();
                    let rx = table.register(session);
                    let peer = PeerCert {
                        id,
                        role: member_role(CertRole::Manager).expect("managers are members"),
                    };
                    let _ = inbox.send(Input::SessionOpened { session, peer, machine: None }).await;
                    let _ = inbox.send(Input::SessionData { session, bytes: first }).await;
                    tokio::spawn(write_loop(send, rx, table.clone()));
                    return read_loop(recv, session, table, inbox).await;
                }
                Ok(Err(e)) => tracing::debug!(session, error = %e, "session candidate failed"),
                Err(_) => {}
            }
        }
        let _ = inbox.send(Input::SessionClosed { session }).await;
    });
}
