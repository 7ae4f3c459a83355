//! Replication between managers, sans-IO: a write is applied locally, made
//! durable by the driver, then acknowledged and pushed to every live manager;
//! anti-entropy (version-vector digests, answered with only what the other
//! side lacks, or the full state when the log was compacted) repairs
//! anything missed. `--wait-replicated K` acknowledges only once K other
//! managers report holding the write.
//!
//! Owns the pending acknowledgements and what peers are known to hold.
//! Must never acknowledge a write before it is durable here, and never
//! share an own operation before it is durable (a restarted node's ids and
//! numbers would otherwise be reused).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{self, Command, Outcome, StatusView};
use super::replica::{Delta, Replica, Snapshot, Stamped, VersionVector};
use crate::core::identity::NodeId;
use crate::core::io::Time;

/// Largest state message accepted (a full state of ~100k entities fits).
pub const MAX_STATE_MSG_BYTES: usize = 256 << 20;
/// Most writes waiting for durability or replication; more are refused.
pub const MAX_PENDING_WRITES: usize = 100_000;
/// How often a manager sends a digest to one random live manager.
pub const ANTI_ENTROPY_PERIOD_MS: u64 = 250;

/// What managers send each other about state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StateMsg {
    /// New durable operations, from their author.
    Push(Vec<Stamped>),
    /// What the sender holds.
    Digest(VersionVector),
    /// What the receiver lacked.
    Delta(Delta),
    /// What the sender holds after applying a push (drives wait-replicated).
    Have(VersionVector),
}

fn msg_cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_STATE_MSG_BYTES>()
}

/// Encodes a state message for the wire.
pub fn encode_msg(msg: &StateMsg) -> Vec<u8> {
    bincode::serde::encode_to_vec(msg, msg_cfg()).expect("state messages always encode")
}

/// Decodes a state message; trailing bytes are refused.
pub fn decode_msg(bytes: &[u8]) -> Result<StateMsg, String> {
    let (msg, used) = bincode::serde::decode_from_slice(bytes, msg_cfg()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(msg)
}

/// A client's write, as the node tracks it.
#[derive(Debug)]
struct PendingWrite {
    req: u64,
    /// The last own operation of this write.
    seq: u64,
    outcome: Outcome,
    /// Other managers that must hold it before the acknowledgement.
    replicas: u32,
    deadline: Time,
}

/// The answer to a client's write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Done(Outcome),
    Refused(String),
}

/// Side effects the node must carry out.
#[derive(Debug, Default)]
pub struct SyncOut {
    /// Persist these operations durably, then report `Durable(last seq)`.
    pub persist_own: Vec<Stamped>,
    /// Persist these foreign operations (no acknowledgement waits on it).
    pub persist_remote: Vec<Stamped>,
    /// A full state was merged: the driver should write a snapshot.
    pub snapshot_needed: bool,
    pub send: Vec<(NodeId, StateMsg)>,
    pub replies: Vec<(u64, WriteResult)>,
}

/// A manager's state and its replication bookkeeping.
#[derive(Debug)]
pub struct StateSync {
    pub replica: Replica,
    pending: Vec<PendingWrite>,
    peer_vv: BTreeMap<NodeId, VersionVector>,
    /// Counters for metrics and the simulator.
    pub applied_remote: u64,
    pub full_merges: u64,
    pub refused_full: u64,
}

impl StateSync {
    pub fn new(replica: Replica) -> StateSync {
        StateSync { replica, pending: Vec::new(), peer_vv: BTreeMap::new(), applied_remote: 0, full_merges: 0, refused_full: 0 }
    }

    /// Plans and applies a client's command; the reply comes once durable
    /// (and replicated, when asked).
    pub fn command(&mut self, now: Time, req: u64, cmd: &Command, replicas: u32, timeout: Duration, out: &mut SyncOut) {
        if self.pending.len() >= MAX_PENDING_WRITES {
            out.replies.push((req, WriteResult::Refused("too many writes in flight; retry".into())));
            return;
        }
        let (changes, outcome) = match model::plan(&self.replica, cmd) {
            Ok(p) => p,
            Err(e) => return out.replies.push((req, WriteResult::Refused(e.to_string()))),
        };
        let ops = self.replica.write(&changes);
        let seq = self.replica.own_seq();
        self.pending.push(PendingWrite { req, seq, outcome, replicas, deadline: now + timeout });
        if ops.is_empty() {
            self.settle(now, out);
        }
        out.persist_own.extend(ops);
    }

    /// Applies changes the node decided itself (agents' reports): made
    /// durable, then shared, like a client's write, but nobody waits.
    pub fn write_internal(&mut self, changes: &[super::replica::Change], out: &mut SyncOut) {
        if !changes.is_empty() {
            out.persist_own.extend(self.replica.write(changes));
        }
    }

    /// Own operations up to `seq` are durable: push them and settle writes.
    pub fn durable(&mut self, now: Time, seq: u64, managers: &[NodeId], out: &mut SyncOut) {
        let fresh = self.replica.mark_durable(seq);
        if !fresh.is_empty() {
            for m in managers {
                out.send.push((*m, StateMsg::Push(fresh.clone())));
            }
        }
        self.settle(now, out);
    }

    fn holders(&self, seq: u64) -> u32 {
        let me = self.replica.actor();
        self.peer_vv.values().filter(|vv| vv.get(&me).copied().unwrap_or(0) >= seq).count() as u32
    }

    /// Replies to every write that is now durable and replicated enough,
    /// or past its deadline.
    fn settle(&mut self, now: Time, out: &mut SyncOut) {
        let durable = self.replica.version().get(&self.replica.actor()).copied().unwrap_or(0);
        let mut keep = Vec::with_capacity(self.pending.len());
        for w in std::mem::take(&mut self.pending) {
            let done = w.seq <= durable && self.holders(w.seq) >= w.replicas;
            if done {
                out.replies.push((w.req, WriteResult::Done(w.outcome)));
            } else if now >= w.deadline {
                let msg = if w.seq > durable {
                    "the write was not made durable in time".to_string()
                } else {
                    format!("durable here, but only {} of {} other managers confirmed it in time", self.holders(w.seq), w.replicas)
                };
                out.replies.push((w.req, WriteResult::Refused(msg)));
            } else {
                keep.push(w);
            }
        }
        self.pending = keep;
    }

    /// Periodic: deadlines, and a digest to one live manager.
    pub fn tick(&mut self, now: Time, target: Option<NodeId>, out: &mut SyncOut) {
        self.settle(now, out);
        if let Some(t) = target {
            out.send.push((t, StateMsg::Digest(self.replica.version())));
        }
    }

    /// Handles a message from manager `from`.
    pub fn on_msg(&mut self, now: Time, from: NodeId, msg: StateMsg, out: &mut SyncOut) {
        match msg {
            StateMsg::Push(ops) => {
                self.apply(ops, out);
                out.send.push((from, StateMsg::Have(self.replica.version())));
            }
            StateMsg::Digest(theirs) => {
                self.answer_digest(from, &theirs, out);
                self.note_peer(now, from, theirs, out);
            }
            StateMsg::Delta(Delta::Ops(ops)) => self.apply(ops, out),
            StateMsg::Delta(Delta::Full(snap)) => self.merge(*snap, out),
            StateMsg::Have(theirs) => self.note_peer(now, from, theirs, out),
        }
    }

    fn answer_digest(&mut self, from: NodeId, theirs: &VersionVector, out: &mut SyncOut) {
        match self.replica.delta_for(theirs) {
            // A full state may hold own ops not yet durable: wait a round.
            Some(Delta::Full(_)) if self.replica.version().get(&self.replica.actor()).copied().unwrap_or(0) < self.replica.own_seq() => {
                self.refused_full += 1;
            }
            Some(delta) => out.send.push((from, StateMsg::Delta(delta))),
            None => {}
        }
        if self.replica.lacks_from(theirs) {
            out.send.push((from, StateMsg::Digest(self.replica.version())));
        }
    }

    fn note_peer(&mut self, now: Time, from: NodeId, vv: VersionVector, out: &mut SyncOut) {
        self.peer_vv.insert(from, vv);
        self.settle(now, out);
    }

    fn apply(&mut self, ops: Vec<Stamped>, out: &mut SyncOut) {
        let applied = self.replica.apply_remote(ops);
        self.applied_remote += applied.len() as u64;
        out.persist_remote.extend(applied);
    }

    fn merge(&mut self, snap: Snapshot, out: &mut SyncOut) {
        self.replica.merge_full(snap);
        self.full_merges += 1;
        out.snapshot_needed = true;
    }

    /// Forgets what a manager that is gone was known to hold.
    pub fn forget_peer(&mut self, id: NodeId) {
        self.peer_vv.remove(&id);
    }

    pub fn view(&self) -> StatusView {
        model::view(&self.replica)
    }
}
