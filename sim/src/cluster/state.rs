//! The cluster's side of replicated state (part of `cluster`): client
//! commands handed to a manager, `Persist` written to the simulated disk
//! with an fsync delay and `Durable` (own batches) or `DurableRemote`
//! (foreign batches and snapshots) fed back once synced, state messages
//! carried between managers, snapshots, and the replies.
//!
//! State messages travel on QUIC streams in reality, so the network model
//! delivers them reliably while the path is up: never lost at random nor
//! duplicated, but dropped when the path is cut or the receiver is down,
//! and subject to latency, reordering and clogs like datagrams.
//!
//! Owns the request table (bounded by `MAX_OUTSTANDING_WRITES`). Must never
//! feed `Durable` before the batch's sync completed (except the planted
//! bug that does exactly that), and never deliver a state message to a
//! process other than the one running when it was sent.

use std::collections::BTreeMap;
use std::time::Duration;

use jujud::core::state::sync::{self, StateMsg};
use jujud::core::state::{Actor, Command, Replica, Stamped, VersionVector, WriteResult};
use jujud::core::{Identity, Input, PeerCert, Role};
use rand::RngExt;

use super::{Cluster, Ev};
use crate::disk::{FSYNC_MAX_US, FSYNC_MIN_US};
use crate::planted::PlantedBug;
use crate::trace::{Trace, TraceKind};
use crate::workload::{AckedWrite, StateNote, WRITE_TIMEOUT};

/// Most client writes awaiting a reply at once; more are not issued (the
/// core itself refuses past `MAX_PENDING_WRITES`, far above this).
pub const MAX_OUTSTANDING_WRITES: usize = 10_000;

/// A client write awaiting its reply.
#[derive(Debug)]
pub(crate) struct Request {
    slot: usize,
    cmd: Command,
    replicas: u32,
    /// The writing replica's actor.
    actor: Actor,
    /// The write's last own operation, once the node persisted it; until
    /// then the last own one before it (a write with no operation waits on
    /// that one, as the core does).
    seq: u64,
}

impl Cluster {
    /// Hands a client command to the manager in `slot` (running, unpaused,
    /// holding state). Returns the request id, or `None` if it was not
    /// issued.
    pub fn command(&mut self, slot: usize, cmd: Command, replicas: u32) -> Option<u64> {
        let now = self.now();
        let p = self.slots[slot].process.as_ref().filter(|p| !p.paused)?;
        let replica = &p.node.state()?.replica;
        let (actor, seq) = (replica.actor(), replica.own_seq());
        if self.requests.len() >= MAX_OUTSTANDING_WRITES {
            self.stats.writes_skipped += 1;
            return None;
        }
        self.next_req += 1;
        let req = self.next_req;
        self.stats.writes_issued += 1;
        self.trace.record(now, slot, TraceKind::Command, req);
        self.requests.insert(req, Request { slot, cmd: cmd.clone(), replicas, actor, seq });
        self.state_notes.push(StateNote::Issued { slot, req, cmd: cmd.clone() });
        let p = self.slots[slot].process.as_mut().expect("checked above");
        let local = p.clock.local(now);
        p.node.handle(local, Input::Command { req, id: None, cmd, replicas, timeout: WRITE_TIMEOUT });
        self.issuing = Some(req);
        self.drain(slot);
        self.issuing = None;
        Some(req)
    }

    /// The replica a manager starts with, rebuilt from its disk as the
    /// runtime does: writing on as the disk's writer (the highest
    /// generation of this node that wrote to it; a disk here is never
    /// restored from peers, so that actor's every shared operation is on
    /// it), or as a new actor (the node id at its new generation) when the
    /// disk holds none; `None` for a member that holds no state.
    pub(super) fn recover_state(&mut self, slot: usize) -> Option<Replica> {
        let now = self.now();
        let s = &self.slots[slot];
        if !self.state_enabled || s.role != Role::Manager {
            return None;
        }
        let actor = Actor { node: s.disk.id.0, generation: s.disk.generation };
        let drop_tail = self.bug == Some(PlantedBug::RestoreDropsTail);
        let mut replica = s.disk.state.restore(actor, drop_tail);
        let recorded = replica.applied().keys().filter(|a| a.node == actor.node).map(|a| a.generation).max();
        let writer = jujud::core::state::writer_after_start(actor.node, actor.generation, recorded, true);
        // Refused only if the replay left a gap in the writer's own
        // operations; the replica then keeps the new actor.
        let _ = replica.write_as(writer);
        debug_assert!(
            drop_tail || replica.version() == s.disk.state.durable_at(now),
            "the disk model's durable version differs from what a restart recovers"
        );
        let from_snapshot = s.disk.state.has_snapshot();
        self.stats.restores_from_snapshot += u64::from(from_snapshot);
        self.stats.restores_from_log += u64::from(!from_snapshot && !s.disk.state.is_empty());
        Some(replica)
    }

    /// One fsync delay, from the seed's disk stream.
    fn fsync_delay(&mut self) -> Duration {
        Duration::from_micros(self.disk_rng.random_range(FSYNC_MIN_US..=FSYNC_MAX_US))
    }

    /// `Output::Persist`: appends the batch; for own operations, feeds
    /// `Durable` back once the sync completes.
    pub(super) fn persist_state(&mut self, slot: usize, ops: Vec<Stamped>, own: bool) {
        let Some(last) = ops.last().map(|s| s.seq) else { return };
        let now = self.now();
        if own && let Some(r) = self.issuing.and_then(|req| self.requests.get_mut(&req)) {
            r.seq = last;
        }
        let fsync = self.fsync_delay();
        let ops_vv: Vec<(Actor, u64)> = if own { Vec::new() } else { ops.iter().map(|s| (s.actor, s.seq)).collect() };
        let synced_at = self.slots[slot].disk.state.append_ops(now, ops, fsync);
        self.stats.disk_batches += 1;
        let epoch = self.slots[slot].epoch;
        if own {
            let at = if self.bug == Some(PlantedBug::EarlyDurable) { now } else { synced_at };
            self.push_control_free(at, Ev::Durable { slot, epoch, seq: last });
        } else {
            let mut vv = VersionVector::new();
            for s in &ops_vv {
                vv.insert(s.0, s.1);
            }
            self.push_control_free(synced_at, Ev::DurableRemote { slot, epoch, vv });
        }
        let s = &self.slots[slot];
        if s.disk.state.snapshot_due(|| s.node().and_then(|n| n.state()).map_or(0, |st| st.replica.len())) {
            self.snapshot_state(slot);
        }
    }

    /// `Output::SnapshotNeeded` (and the snapshot policy): writes the whole
    /// state, own operations not yet durable included, after every entry
    /// already submitted.
    pub(super) fn snapshot_state(&mut self, slot: usize) {
        let now = self.now();
        let Some(snap) = self.slots[slot].node().and_then(|n| n.state()).map(|st| st.replica.snapshot_all()) else {
            return;
        };
        let fsync = self.fsync_delay();
        let vv = snap.vv.clone();
        let synced_at = self.slots[slot].disk.state.append_snapshot(now, snap, fsync);
        self.stats.disk_snapshots += 1;
        let epoch = self.slots[slot].epoch;
        self.push_control_free(synced_at, Ev::DurableRemote { slot, epoch, vv });
    }

    /// `Output::SendState`: one stream to the node whose id is `to.id`.
    pub(super) fn send_state(&mut self, from: usize, to: Identity, bytes: Vec<u8>) {
        let now = self.now();
        self.stats.state_sends += 1;
        self.stats.state_bytes += bytes.len() as u64;
        let dest = self.by_id.get(&to.id).copied().filter(|&d| self.slots[d].is_running());
        let dest = dest.filter(|&d| !self.cut_by_bug(from, d) && self.bug != Some(PlantedBug::DropState));
        let arrival = dest.and_then(|d| self.network.stream(from, d, now, &mut self.net_rng).map(|at| (d, at)));
        let Some((dest, at)) = arrival else {
            self.stats.state_undelivered += 1;
            return;
        };
        if self.bug == Some(PlantedBug::ForgeHave) && self.forge_have(from, dest, at, &bytes) {
            return;
        }
        let cert = PeerCert { id: self.slots[from].disk.id, role: self.slots[from].role };
        let epoch = self.slots[dest].epoch;
        if self.queue.push(at, Ev::State { slot: dest, epoch, from: cert, bytes }).is_err() {
            self.stats.queue_full += 1;
        }
    }

    /// `Output::SendMembers`: one stream to the node whose id is `to.id`
    /// (the network's stream model: delayed, lost under partitions).
    pub(super) fn send_members(&mut self, from: usize, to: Identity, bytes: Vec<u8>) {
        let now = self.now();
        self.stats.exchange_sends += 1;
        self.stats.exchange_bytes += bytes.len() as u64;
        let dest = self.by_id.get(&to.id).copied().filter(|&d| self.slots[d].is_running());
        let dest = dest.filter(|&d| !self.cut_by_bug(from, d));
        let arrival = dest.and_then(|d| self.network.stream(from, d, now, &mut self.net_rng).map(|at| (d, at)));
        let Some((dest, at)) = arrival else { return };
        let cert = PeerCert { id: self.slots[from].disk.id, role: self.slots[from].role };
        let epoch = self.slots[dest].epoch;
        if self.queue.push(at, Ev::Members { slot: dest, epoch, from: cert, bytes }).is_err() {
            self.stats.queue_full += 1;
        }
    }

    /// The planted lying peer: a push never arrives, and a `Have` claiming
    /// it comes back in its place. Returns whether the message was a push.
    fn forge_have(&mut self, from: usize, dest: usize, at: std::time::Duration, bytes: &[u8]) -> bool {
        let Ok(StateMsg::Push(ops)) = sync::decode_msg(bytes) else { return false };
        let mut vv = BTreeMap::new();
        for op in &ops {
            let seq = vv.entry(op.actor).or_insert(0);
            *seq = op.seq.max(*seq);
        }
        let lie = sync::encode_msg(&StateMsg::Have(vv));
        let cert = PeerCert { id: self.slots[dest].disk.id, role: Role::Manager };
        let epoch = self.slots[from].epoch;
        if self.queue.push(at, Ev::State { slot: from, epoch, from: cert, bytes: lie }).is_err() {
            self.stats.queue_full += 1;
        }
        true
    }

    /// `Output::Reply`: what became of request `req`.
    pub(super) fn reply(&mut self, slot: usize, req: u64, result: WriteResult) {
        let now = self.now();
        let Some(r) = self.requests.remove(&req) else { return };
        debug_assert_eq!(r.slot, slot, "a reply from another manager than the one asked");
        let done = matches!(result, WriteResult::Done(_));
        self.trace.record(now, slot, TraceKind::Reply, req.wrapping_mul(2) + u64::from(done));
        let note = match result {
            WriteResult::Done(outcome) => {
                self.stats.writes_done += 1;
                let (actor, seq, replicas) = (r.actor, r.seq, r.replicas);
                StateNote::Acked(AckedWrite { slot, req, at: now, actor, seq, replicas, cmd: r.cmd, outcome })
            }
            WriteResult::Refused(reason) => {
                self.stats.writes_refused += 1;
                StateNote::Refused { slot, req, reason }
            }
        };
        self.state_notes.push(note);
    }

    /// The process in `slot` is gone: its writes will never be answered.
    pub(super) fn abandon_requests(&mut self, slot: usize) {
        let before = self.requests.len();
        self.requests.retain(|_, r| r.slot != slot);
        self.stats.writes_abandoned += (before - self.requests.len()) as u64;
    }
}

/// `Ev::DurableRemote`, as the node's input (traced like `Durable`, with a
/// digest of the version vector).
pub(super) fn durable_remote_input(trace: &mut Trace, at: Duration, slot: usize, vv: VersionVector) -> Input {
    let digest = vv.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, (a, s)| {
        (h ^ a.node ^ a.generation.rotate_left(17) ^ s.rotate_left(40)).wrapping_mul(0x0100_0000_01b3)
    });
    trace.record(at, slot, TraceKind::Durable, digest);
    Input::DurableRemote { vv }
}
