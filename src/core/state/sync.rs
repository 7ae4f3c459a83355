//! Replication between managers, sans-IO: a write is applied locally, made
//! durable by the driver, then acknowledged and pushed to every live manager;
//! anti-entropy (version-vector digests, answered with only what the other
//! side lacks, or the full state when the log was compacted) repairs
//! anything missed. `--wait-replicated K` acknowledges only once K other
//! managers report holding the write durably: a peer answers a push with
//! `Have` only once the pushed operations are synced on its own disk, and
//! digests carry what the sender holds durably.
//!
//! A client request carries an id; a manager that already holds that
//! request's record answers with the recorded outcome (once the recorded
//! write is durable here, and replicated if asked) instead of applying it
//! again.
//!
//! Owns the pending acknowledgements and what peers are known to hold.
//! Must never acknowledge a write before it is durable here, never count a
//! peer's copy that is only in its memory, and never share an own
//! operation before it is durable (a restarted node's ids and numbers
//! would otherwise be reused).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{self, Command, Outcome, StatusView};
use super::replica::{
    Actor, Change, Delta, Replica, Snapshot, Stamped, VersionVector, merge_highest,
};
use super::requests::{self, RequestId};
use crate::core::identity::NodeId;
use crate::core::time::Time;

/// Largest state message accepted (a full state of ~100k entities fits).
pub const MAX_STATE_MSG_BYTES: usize = 256 << 20;
/// Most keys a status-changes answer walks one by one; past it the whole
/// view is built instead (about what a full pass costs at 1,000 entities).
pub const MAX_CHANGED_KEYS: usize = 4_096;

/// A status view of what changed since a version, for the status history.
#[derive(Clone, Debug, Default)]
pub struct StatusChanges {
    /// The live entities among those touched (with the machines of those
    /// units), or every live entity when `touched` is `None`.
    pub view: StatusView,
    /// The machines and units touched (by [`model::entity_prefix`]); an
    /// entity touched but absent from `view` is no longer live. `None`:
    /// `view` is whole.
    pub touched: Option<std::collections::BTreeSet<String>>,
    /// The version this answer reflects: ask from it next time.
    pub version: VersionVector,
}

/// Most writes waiting for durability or replication; more are refused.
pub const MAX_PENDING_WRITES: usize = 100_000;
/// How often a manager sends a digest to one random live manager.
pub const ANTI_ENTROPY_PERIOD_MS: u64 = 250;
/// After merging a full state, a manager sends no digest of its own until
/// the snapshot that makes the merge durable is synced, for at most this
/// many anti-entropy rounds (30 s). Its digests carry only what it holds
/// durably, so until then every digest would still look behind the
/// compacted log, and each peer it reached would answer with another full
/// state (at 100,000 entities, 22 MiB encoded and a copy of the replica
/// each): a restarted manager drew dozens of them in 20 s and held 330 MiB.
pub const FULL_MERGE_DIGEST_HOLD_ROUNDS: u32 = 120;

/// What managers send each other about state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StateMsg {
    /// New durable operations, from their author.
    Push(Vec<Stamped>),
    /// What the sender holds durably (the other side answers with what it
    /// lacks; it may resend operations the sender applied but has not yet
    /// synced, which are ignored as duplicates).
    Digest(VersionVector),
    /// What the receiver lacked.
    Delta(Delta),
    /// What the sender holds durably on its disk, sent once a push's
    /// operations are synced there (drives wait-replicated).
    Have(VersionVector),
    /// Are you there? Always answered with a `ProbeAck` and nothing else
    /// (no state work: it is sent to every live manager every second).
    /// With a provider configured, every manager probes every live manager
    /// once a control tick, to know whom it is in contact with now (the HA
    /// keeper and the provisioner need it). `sent_ms` is the sender's own
    /// clock, echoed back, so a late answer can never look fresher than the
    /// probe it answers.
    Probe { sent_ms: u64 },
    /// The answer to a `Probe`, echoing its `sent_ms`.
    ProbeAck { sent_ms: u64 },
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
    if bytes.len() > MAX_STATE_MSG_BYTES {
        return Err(format!("{} bytes is over the {MAX_STATE_MSG_BYTES}-byte limit", bytes.len()));
    }
    crate::core::codec::decode_exact_bounded(bytes, MAX_STATE_MSG_BYTES).map_err(|e| e.to_string())
}

/// A client's write, as the node tracks it.
#[derive(Debug)]
struct PendingWrite {
    req: u64,
    /// The write's last operation: own, or, for a request answered from its
    /// record, the author's.
    author: Actor,
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
    /// Persist these foreign operations, then report `DurableRemote`.
    pub persist_remote: Vec<Stamped>,
    /// A full state was merged: the driver should write a snapshot (and
    /// report its version durable once synced).
    pub snapshot_needed: bool,
    pub send: Vec<(NodeId, StateMsg)>,
    /// One message for several managers (a push to every live manager):
    /// encoded once, not once per recipient.
    pub broadcast: Vec<(Vec<NodeId>, StateMsg)>,
    pub replies: Vec<(u64, WriteResult)>,
    /// Probes answered: by whom, and the probe's own send time (ms).
    pub probe_acks: Vec<(NodeId, u64)>,
}

/// A manager's state and its replication bookkeeping.
#[derive(Debug)]
pub struct StateSync {
    pub replica: Replica,
    /// Writes of own operations awaiting their answer, by last operation.
    pending: BTreeMap<u64, Vec<PendingWrite>>,
    /// Requests answered from another author's record, awaiting durability
    /// here (and replicas); few, so a plain list.
    pending_foreign: Vec<PendingWrite>,
    pending_count: usize,
    /// What each live manager reported durable on its disk (`Have`, digests).
    peer_vv: BTreeMap<NodeId, VersionVector>,
    /// Managers whose pushes were applied here but not yet answered with a
    /// `Have`: they get one once those operations are durable here.
    owed_have: BTreeMap<NodeId, VersionVector>,
    /// The live managers at the last tick: one that appears (a heal, a
    /// restart) gets a digest at once instead of waiting to be drawn.
    live_before: std::collections::BTreeSet<NodeId>,
    /// Set by a full merge: what it brought (the applied version after
    /// it), and the anti-entropy rounds left before digests resume anyway
    /// (see [`FULL_MERGE_DIGEST_HOLD_ROUNDS`]).
    digests_held: Option<(VersionVector, u32)>,
    /// Counters for metrics and the simulator.
    pub applied_remote: u64,
    pub full_merges: u64,
    /// Full states received that held nothing this replica lacked (not
    /// merged).
    pub full_skipped: u64,
    pub refused_full: u64,
    /// Full states sent to a peer that lacked compacted operations.
    pub full_sent: u64,
    /// Writes answered from a request record instead of being applied again.
    pub deduplicated: u64,
}

impl StateSync {
    /// State for a replica rebuilt from this manager's own disk: everything
    /// in it is durable here.
    pub fn new(mut replica: Replica) -> StateSync {
        replica.assume_durable();
        StateSync {
            replica,
            pending: BTreeMap::new(),
            pending_foreign: Vec::new(),
            pending_count: 0,
            peer_vv: BTreeMap::new(),
            owed_have: BTreeMap::new(),
            live_before: Default::default(),
            digests_held: None,
            applied_remote: 0,
            full_merges: 0,
            full_skipped: 0,
            refused_full: 0,
            full_sent: 0,
            deduplicated: 0,
        }
    }

    /// Plans and applies client request `id`'s command (or answers from its
    /// record if this replica holds one); the reply comes once durable here
    /// (and replicated, when asked). `id` is `None` for a writer that gave
    /// none: one is derived, unique to this write.
    #[allow(clippy::too_many_arguments)]
    pub fn command(
        &mut self,
        now: Time,
        req: u64,
        id: Option<RequestId>,
        cmd: &Command,
        replicas: u32,
        timeout: Duration,
        out: &mut SyncOut,
    ) {
        if self.pending_count >= MAX_PENDING_WRITES {
            out.replies
                .push((req, WriteResult::Refused("too many writes in flight; retry".into())));
            return;
        }
        let me = self.replica.actor();
        let id = id.unwrap_or_else(|| requests::derived_id(me, self.replica.own_seq() + 1));
        let deadline = now + timeout;
        if let Some(rec) = self.replica.request(id) {
            self.deduplicated += 1;
            let outcome = Outcome {
                ids: rec.ids.clone(),
                machines: model::created_machines(cmd, &rec.ids),
                ..Default::default()
            };
            let w =
                PendingWrite { req, author: rec.author, seq: rec.seq, outcome, replicas, deadline };
            self.pending_foreign.push(w);
            self.pending_count += 1;
            return self.settle(now, out);
        }
        let (mut changes, outcome) = match model::plan(&self.replica, id, cmd) {
            Ok(p) => p,
            Err(e) => return out.replies.push((req, WriteResult::Refused(e.to_string()))),
        };
        changes.push(Change::Record { id, ids: outcome.ids.clone() });
        let ops = self.replica.write(&changes);
        let seq = self.replica.own_seq();
        self.pending.entry(seq).or_default().push(PendingWrite {
            req,
            author: me,
            seq,
            outcome,
            replicas,
            deadline,
        });
        self.pending_count += 1;
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
        self.push_fresh(fresh, managers, out);
        self.settle(now, out);
    }

    /// Operations up to `vv` (any author) are durable here: answer the
    /// `Have`s owed, share own operations a snapshot made durable, settle.
    pub fn durable_remote(
        &mut self,
        now: Time,
        vv: &VersionVector,
        managers: &[NodeId],
        out: &mut SyncOut,
    ) {
        let fresh = self.replica.mark_durable_remote(vv);
        self.push_fresh(fresh, managers, out);
        let ready: Vec<NodeId> = self
            .owed_have
            .iter()
            .filter(|(_, want)| self.holds_durably(want))
            .map(|(n, _)| *n)
            .collect();
        for n in ready {
            if let Some(want) = self.owed_have.remove(&n) {
                out.send.push((n, StateMsg::Have(self.held_of(want.into_keys()))));
            }
        }
        self.settle(now, out);
    }

    fn push_fresh(&self, fresh: Vec<Stamped>, managers: &[NodeId], out: &mut SyncOut) {
        if !fresh.is_empty() && !managers.is_empty() {
            out.broadcast.push((managers.to_vec(), StateMsg::Push(fresh)));
        }
    }

    /// Other managers known to hold `author`'s operation `seq` durably.
    /// The author itself holds its own operations (it shares them only once
    /// durable), whether or not it is still reporting.
    fn holders(&self, author: &Actor, seq: u64) -> u32 {
        let me = self.replica.actor();
        let reported = self
            .peer_vv
            .iter()
            .filter(|(n, vv)| n.0 != me.node && vv.get(author).copied().unwrap_or(0) >= seq);
        let by_author = author.node != me.node && !self.peer_vv.contains_key(&NodeId(author.node));
        reported.count() as u32 + u32::from(by_author)
    }

    /// The managers that reported what they hold but not `author`'s `seq`,
    /// as text for a refusal (empty when none did).
    fn unconfirmed(&self, author: &Actor, seq: u64) -> String {
        let me = self.replica.actor().node;
        let lacking: Vec<String> = self
            .peer_vv
            .iter()
            .filter(|(n, vv)| n.0 != me && vv.get(author).copied().unwrap_or(0) < seq)
            .map(|(n, _)| n.to_string())
            .collect();
        if lacking.is_empty() {
            String::new()
        } else {
            format!(" (not confirmed by {})", lacking.join(", "))
        }
    }

    fn state_of(&self, now: Time, w: &PendingWrite) -> Option<WriteResult> {
        let durable = self.replica.holds_durably(&w.author, w.seq);
        if durable && self.holders(&w.author, w.seq) >= w.replicas {
            return Some(WriteResult::Done(w.outcome.clone()));
        }
        if now < w.deadline {
            return None;
        }
        Some(WriteResult::Refused(if durable {
            format!(
                "durable here, but only {} of {} other managers confirmed it in time{}",
                self.holders(&w.author, w.seq),
                w.replicas,
                self.unconfirmed(&w.author, w.seq)
            )
        } else {
            "the write was not made durable in time".to_string()
        }))
    }

    /// Replies to every write that is now durable and replicated enough.
    /// Looks only at own writes up to the durable operation (the rest
    /// cannot be done), so it costs O(answered + waiting for replicas).
    fn settle(&mut self, now: Time, out: &mut SyncOut) {
        let durable = self.replica.durable_of(&self.replica.actor());
        let seqs: Vec<u64> = self.pending.range(..=durable).map(|(s, _)| *s).collect();
        for seq in seqs {
            self.settle_seq(now, seq, out);
        }
        self.settle_foreign(now, out);
    }

    fn settle_seq(&mut self, now: Time, seq: u64, out: &mut SyncOut) {
        let Some(ws) = self.pending.remove(&seq) else { return };
        let before = ws.len();
        let mut keep = Vec::new();
        for w in ws {
            match self.state_of(now, &w) {
                Some(result) => out.replies.push((w.req, result)),
                None => keep.push(w),
            }
        }
        self.pending_count -= before - keep.len();
        if !keep.is_empty() {
            self.pending.insert(seq, keep);
        }
    }

    fn settle_foreign(&mut self, now: Time, out: &mut SyncOut) {
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.pending_foreign) {
            match self.state_of(now, &w) {
                Some(result) => {
                    out.replies.push((w.req, result));
                    self.pending_count -= 1;
                }
                None => keep.push(w),
            }
        }
        self.pending_foreign = keep;
    }

    /// Refuses every write past its deadline (a full scan, once a tick).
    fn expire(&mut self, now: Time, out: &mut SyncOut) {
        let seqs: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, ws)| ws.iter().any(|w| now >= w.deadline))
            .map(|(s, _)| *s)
            .collect();
        for seq in seqs {
            self.settle_seq(now, seq, out);
        }
        self.settle_foreign(now, out);
    }

    /// Periodic: deadlines, and a digest to one live manager (`target`)
    /// and to every manager that became live since the last tick.
    pub fn tick(&mut self, now: Time, target: Option<NodeId>, live: &[NodeId], out: &mut SyncOut) {
        self.settle(now, out);
        self.expire(now, out);
        if let Some((_, rounds)) = self.digests_held.as_mut() {
            *rounds = rounds.saturating_sub(1);
        }
        if let Some(t) = target
            && let Some(digest) = self.own_digest()
        {
            out.send.push((t, digest));
        }
        self.greet(live, target, out);
    }

    /// This manager's digest (what it holds durably), or `None` while a
    /// merged full state is not yet durable (see
    /// [`FULL_MERGE_DIGEST_HOLD_ROUNDS`]).
    fn own_digest(&mut self) -> Option<StateMsg> {
        if let Some((merged, rounds)) = &self.digests_held {
            let durable = self.holds_durably(merged);
            if !durable && *rounds > 0 {
                return None;
            }
            self.digests_held = None;
        }
        Some(StateMsg::Digest(self.replica.durable_version()))
    }

    /// Whether this manager holds back its digests (a merged full state is
    /// not yet durable). For tests: the node itself reads `own_digest`.
    #[cfg(test)]
    pub fn holds_digests(&self) -> bool {
        self.digests_held.is_some()
    }

    /// Probes every manager in `peers` (each answers with a `ProbeAck`
    /// echoing `sent_ms`, the round's send time on this node's clock).
    pub fn probe(&self, sent_ms: u64, peers: &[NodeId], out: &mut SyncOut) {
        out.send.extend(peers.iter().map(|p| (*p, StateMsg::Probe { sent_ms })));
    }

    /// Sends a digest to every manager in `live` that was not live before
    /// (except `skip`, already sent one): a manager that has just joined
    /// learns the state at once, not at the next anti-entropy round (it
    /// answers clients from an empty replica until then). Called on every
    /// change of the live managers as well as on each tick.
    pub fn greet(&mut self, live: &[NodeId], skip: Option<NodeId>, out: &mut SyncOut) {
        let live: std::collections::BTreeSet<NodeId> = live.iter().copied().collect();
        let new: Vec<NodeId> = live
            .iter()
            .filter(|n| !self.live_before.contains(n) && Some(**n) != skip)
            .copied()
            .collect();
        self.live_before = live;
        for t in new {
            if let Some(digest) = self.own_digest() {
                out.send.push((t, digest));
            }
        }
    }

    /// Handles a message from manager `from`.
    pub fn on_msg(&mut self, now: Time, from: NodeId, msg: StateMsg, out: &mut SyncOut) {
        match msg {
            StateMsg::Push(ops) => {
                let mut wanted = VersionVector::new();
                merge_highest(&mut wanted, ops.iter().map(|op| (op.actor, op.seq)));
                self.apply(ops, out);
                // `Have` means durable on this disk, never only in memory.
                if self.holds_durably(&wanted) {
                    out.send.push((from, StateMsg::Have(self.held_of(wanted.into_keys()))));
                } else {
                    merge_highest(self.owed_have.entry(from).or_default(), wanted);
                }
            }
            StateMsg::Digest(theirs) => {
                self.answer_digest(from, &theirs, out);
                self.note_peer(now, from, theirs, out);
            }
            StateMsg::Probe { sent_ms } => out.send.push((from, StateMsg::ProbeAck { sent_ms })),
            StateMsg::ProbeAck { sent_ms } => out.probe_acks.push((from, sent_ms)),
            StateMsg::Delta(Delta::Ops(ops)) => self.apply(ops, out),
            StateMsg::Delta(Delta::Full(snap)) => self.merge(*snap, out),
            StateMsg::Have(theirs) => self.note_peer(now, from, theirs, out),
        }
    }

    fn answer_digest(&mut self, from: NodeId, theirs: &VersionVector, out: &mut SyncOut) {
        match self.replica.delta_for(theirs) {
            // A full state may hold own ops not yet durable: wait a round.
            Some(Delta::Full(_))
                if self.replica.durable_of(&self.replica.actor()) < self.replica.own_seq() =>
            {
                self.refused_full += 1;
            }
            Some(delta) => {
                if matches!(delta, Delta::Full(_)) {
                    self.full_sent += 1;
                    let cause = self.replica.full_state_cause(theirs);
                    let (author, theirs_at, oldest, upto) = cause
                        .map_or((String::new(), 0, 0, 0), |(a, h, o, u)| {
                            (format!("{}@{}", NodeId(a.node), a.generation), h, o, u)
                        });
                    tracing::info!(peer = %from, keys = self.replica.len(), %author,
                        theirs_at, oldest_retained = oldest, applied_here = upto,
                        "sending the full state: the peer lacks compacted operations");
                }
                out.send.push((from, StateMsg::Delta(delta)))
            }
            None => {}
        }
        if self.replica.lacks_from(theirs)
            && let Some(digest) = self.own_digest()
        {
            out.send.push((from, digest));
        }
    }

    /// Whether this disk holds every operation in `wanted`.
    fn holds_durably(&self, wanted: &VersionVector) -> bool {
        wanted.iter().all(|(a, &s)| self.replica.durable_of(a) >= s)
    }

    /// What this disk holds of `authors`' operations: a `Have` names only
    /// the authors of the push it answers (a whole vector per push cost
    /// every peer an allocation, an encoding and a decoding per actor ever
    /// seen, for every write).
    fn held_of(&self, authors: impl Iterator<Item = Actor>) -> VersionVector {
        authors.map(|a| (a, self.replica.durable_of(&a))).filter(|(_, s)| *s > 0).collect()
    }

    /// Takes what `from` reports durable on its disk. Reports only grow
    /// (a manager's disk never loses a synced operation; one that lost its
    /// disk comes back as another node), and a `Have` names only some
    /// authors, so they are merged, never replaced.
    fn note_peer(&mut self, now: Time, from: NodeId, vv: VersionVector, out: &mut SyncOut) {
        merge_highest(self.peer_vv.entry(from).or_default(), vv);
        self.settle(now, out);
    }

    fn apply(&mut self, ops: Vec<Stamped>, out: &mut SyncOut) {
        let applied = self.replica.apply_remote(ops);
        self.applied_remote += applied.len() as u64;
        out.persist_remote.extend(applied);
    }

    fn merge(&mut self, snap: Snapshot, out: &mut SyncOut) {
        if !self.replica.lacks_from(&snap.vv) {
            // Another peer's full state got here first: this one holds
            // nothing new (a state is a function of its operations).
            self.full_skipped += 1;
            tracing::debug!(
                keys = snap.doc.len().val,
                "a full state from a peer held nothing new; not merged"
            );
            return;
        }
        tracing::info!(keys = snap.doc.len().val, "merging a full state from a peer");
        self.replica.merge_full(snap);
        self.full_merges += 1;
        let mut merged = self.replica.applied().clone();
        merged.remove(&self.replica.actor());
        self.digests_held = Some((merged, FULL_MERGE_DIGEST_HOLD_ROUNDS));
        out.snapshot_needed = true;
    }

    /// Forgets what a manager that is gone was known to hold.
    pub fn forget_peer(&mut self, id: NodeId) {
        self.peer_vv.remove(&id);
        self.owed_have.remove(&id);
    }

    pub fn view(&self) -> StatusView {
        model::view(&self.replica)
    }

    /// What changed since `since` (see [`StatusChanges`]): the view of the
    /// machines and units whose keys operations after it touched, or the
    /// whole view when the retained operations cannot say, or when more
    /// than [`MAX_CHANGED_KEYS`] keys changed.
    /// `since: None` asks for the whole view.
    pub fn view_changed_since(&self, since: Option<&VersionVector>) -> StatusChanges {
        let version = self.replica.applied().clone();
        match since.and_then(|v| self.replica.keys_changed_since(v, MAX_CHANGED_KEYS)) {
            None => StatusChanges { view: self.view(), touched: None, version },
            Some(keys) => {
                let touched: std::collections::BTreeSet<String> = keys
                    .iter()
                    .filter_map(|k| model::entity_prefix(k))
                    .map(str::to_owned)
                    .collect();
                StatusChanges {
                    view: model::view_of(&self.replica, &touched),
                    touched: Some(touched),
                    version,
                }
            }
        }
    }
}
