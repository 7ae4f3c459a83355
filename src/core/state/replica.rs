//! One manager's replica of the control-plane state: a `crdts` map of keys to
//! multi-value registers, the operations that built it numbered per actor,
//! version vectors, and the deltas anti-entropy exchanges.
//!
//! Owns causal delivery: an actor's operations are applied in order, gap-free
//! (crdts' `Map::apply` would otherwise skip an older one for good). Must
//! never hand out an own operation before it is durable, and never apply a
//! foreign operation twice.
//!
//! An actor is a node at one generation. A manager restarted on its own
//! intact disk keeps writing as the actor that disk records
//! ([`Replica::write_as`], chosen by [`writer_after_start`]), continuing
//! its operation numbers after the highest one on that disk: an own
//! operation is shared only once durable there, so no other replica can
//! hold a number the restart reuses. Any other start (a new node, a
//! restore from peers, a disk from before the writer was recorded) is a
//! new actor, so restarts do not add actors to clocks and version vectors.
//!
//! A write's register clock is the register's own clock plus the new dot,
//! not the whole map's clock: it supersedes exactly the values this replica
//! holds at that key, which is all MVReg semantics needs, and each stored
//! value then carries an entry only per actor that wrote that key, instead
//! of one per actor that ever wrote anything (every restart adds an actor).
//!
//! Also tracks what is durable on this manager's disk: own operations up to
//! `durable`, foreign ones up to `durable_remote` (reported by the driver
//! once their batch or a snapshot holding them is synced).

use std::collections::{BTreeMap, BTreeSet};

use crdts::ctx::AddCtx;
use crdts::{CmRDT, CvRDT};
use serde::{Deserialize, Serialize};

use super::oplog::{self, OpLog};
use super::requests::{self, Recorded, RequestId, Requests};

pub use super::doc::{Actor, Doc, DocOp, VersionVector};

/// Operations kept for anti-entropy before older ones are compacted away;
/// a peer that needs compacted ones gets the full state instead.
pub const MAX_RETAINED_OPS: usize = 200_000;
/// The same bound in bytes: the operations encoded as the retained log
/// holds them plus their index entries ([`OpLog::used_bytes`]); past it
/// the oldest operations are compacted away too, so a few large ones (a
/// 1,000-unit deploy's record holds every id) cannot hold the memory that
/// the count allows. At about 75 bytes per set-style operation (60 encoded,
/// 16 of index) this is about 55,000 operations: at 100 writes a second
/// (two operations each), a peer more than about four and a half minutes
/// behind gets the full state instead (about 22 MiB at 100,000 entities).
/// The logs' spare capacity comes on top, at most a quarter of a log plus
/// `oplog::GROWTH_MIN_BYTES` while it grows, less once the bound is near
/// (growth stops at it). 4 MiB: decoded, 8 MiB held about 40,000
/// operations in about 12.6 MiB of resident memory on a manager that took
/// a large load, against a budget of 120 MiB at 100,000 entities (issue
/// 14; docs/ARCHITECTURE.md, "State memory").
pub const MAX_RETAINED_OPS_BYTES: usize = 4 << 20;
/// Out-of-order operations held waiting for a gap to fill; beyond it they
/// are dropped (anti-entropy fetches them again).
pub const MAX_PENDING_OPS: usize = 100_000;
/// Most operations in one delta; anti-entropy sends the rest next round
/// (250 ms later). A set-style write is two operations (the change and its
/// request record), so this is about 10,000 writes.
pub const MAX_DELTA_OPS: usize = 20_000;

/// The actor a manager writes as after a start at membership generation
/// `generation`: the writer its disk records (`recorded`) when that disk
/// is its own and intact (`own_disk`: the state log was found, not
/// restored from peers, and read to its end with no torn tail cut, since
/// a cut record may have been synced and shared), else a new actor at
/// `generation` (which the caller records durably before the replica
/// writes anything).
///
/// Why adoption is safe: the recorded writer's operations are shared only
/// once durable on that disk, so the disk holds every one any replica may
/// hold, and numbering on after the highest reuses none. After a restore
/// from peers the old writer's last operations may exist only elsewhere
/// (or on the lost disk), so that start must not adopt.
pub fn writer_after_start(
    node: u64,
    generation: u64,
    recorded: Option<u64>,
    own_disk: bool,
) -> Actor {
    match recorded {
        Some(g) if own_disk && g <= generation => Actor { node, generation: g },
        _ => Actor { node, generation },
    }
}

/// An operation with its author and its number in the author's sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    pub actor: Actor,
    pub seq: u64,
    pub op: DocOp,
}

/// A change a writer asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Set {
        key: String,
        value: String,
    },
    Remove {
        key: String,
    },
    /// The record of client request `id` and its outcome; always the last
    /// change of its write (see `requests.rs`).
    Record {
        id: RequestId,
        ids: Vec<String>,
    },
}

/// What one replica sends another so it catches up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Delta {
    /// The operations the other side lacks, in per-actor order.
    Ops(Vec<Stamped>),
    /// The whole state: some operations it lacks were compacted away.
    Full(Box<Snapshot>),
}

/// The whole state, for snapshots on disk and full transfers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub doc: Doc,
    pub vv: VersionVector,
    /// Recorded requests, oldest first.
    pub requests: Vec<(RequestId, Recorded)>,
}

/// A replica.
#[derive(Debug, Clone)]
pub struct Replica {
    me: Actor,
    doc: Doc,
    /// Applied per actor (own ops count once written, durable or not).
    vv: VersionVector,
    /// Own operations up to this number are durable and may be shared.
    durable: u64,
    /// Foreign operations durable on this manager's disk, per author.
    durable_remote: VersionVector,
    /// Recorded client requests (bounded).
    requests: Requests,
    /// Operations kept for deltas, per actor, oldest first, encoded.
    log: BTreeMap<Actor, OpLog>,
    retained: usize,
    /// The bytes the logs use ([`OpLog::used_bytes`], what the bound counts).
    retained_used: usize,
    /// The bytes the logs have allocated ([`OpLog::heap_bytes`]).
    retained_heap: usize,
    /// Scratch for encoding one operation.
    encoded: Vec<u8>,
    pending: BTreeMap<Actor, BTreeMap<u64, Stamped>>,
    pending_count: usize,
    /// Operations dropped because `pending` was full.
    pub dropped_pending: u64,
}

impl Replica {
    /// An empty replica writing as `me`.
    pub fn new(me: Actor) -> Replica {
        Replica {
            me,
            doc: Doc::new(),
            vv: BTreeMap::new(),
            durable: 0,
            durable_remote: BTreeMap::new(),
            requests: Requests::default(),
            log: BTreeMap::new(),
            retained: 0,
            retained_used: 0,
            retained_heap: 0,
            encoded: Vec::new(),
            pending: BTreeMap::new(),
            pending_count: 0,
            dropped_pending: 0,
        }
    }

    /// A replica restored from a snapshot, writing as `me` (a new actor;
    /// [`Replica::write_as`] adopts the disk's writer once the log is
    /// replayed).
    pub fn from_snapshot(me: Actor, snap: Snapshot) -> Replica {
        let mut r = Replica::new(me);
        r.doc = snap.doc;
        r.vv = snap.vv;
        for (id, rec) in snap.requests {
            r.requests.insert(id, rec);
        }
        r
    }

    /// Declares everything applied so far durable (a replica rebuilt from
    /// its own disk at start), own operations of an adopted writer too.
    pub fn assume_durable(&mut self) {
        self.durable_remote = self.vv.clone();
        self.durable_remote.remove(&self.me);
        self.durable = self.own_seq();
    }

    /// Writes from now on as `writer`, continuing its operation numbers
    /// after the highest applied here. Only for a replica just rebuilt
    /// from this manager's own disk, where `writer` is the actor that disk
    /// records (every operation of it ever shared is on that disk, hence
    /// replayed here); see [`writer_after_start`]. Its operations replayed
    /// so far count as durable.
    ///
    /// Refused (false, the actor unchanged) if the replay left operations
    /// of `writer` waiting behind a gap: its own log never has one, so the
    /// disk is not what it claims, and numbering on could reuse a number.
    pub fn write_as(&mut self, writer: Actor) -> bool {
        if self.pending.get(&writer).is_some_and(|p| !p.is_empty()) {
            return false;
        }
        self.me = writer;
        self.durable = self.own_seq();
        self.durable_remote.remove(&writer);
        true
    }

    /// Foreign operations up to `vv` are durable here (own ones in `vv`
    /// too: a synced snapshot holds them). Returns own operations newly
    /// durable, to share.
    pub fn mark_durable_remote(&mut self, vv: &VersionVector) -> Vec<Stamped> {
        let me = self.me;
        merge_highest(
            &mut self.durable_remote,
            vv.iter().map(|(a, s)| (*a, *s)).filter(|(a, _)| *a != me),
        );
        match vv.get(&self.me) {
            Some(&s) => self.mark_durable(s),
            None => Vec::new(),
        }
    }

    /// What this manager's disk holds: own operations up to the durable
    /// one, foreign ones up to what was reported synced.
    pub fn durable_version(&self) -> VersionVector {
        let mut vv = VersionVector::new();
        for (a, &s) in &self.vv {
            let d = if *a == self.me {
                self.durable
            } else {
                self.durable_remote.get(a).copied().unwrap_or(0)
            };
            if s.min(d) > 0 {
                vv.insert(*a, s.min(d));
            }
        }
        vv
    }

    /// The highest operation of `author` durable here: `durable_version()`
    /// at one actor, without building the whole vector (this is asked per
    /// write settled and per push received).
    pub fn durable_of(&self, author: &Actor) -> u64 {
        let applied = self.vv.get(author).copied().unwrap_or(0);
        let durable = if *author == self.me {
            self.durable
        } else {
            self.durable_remote.get(author).copied().unwrap_or(0)
        };
        applied.min(durable)
    }

    /// Whether operation `seq` of `author` is durable here.
    pub fn holds_durably(&self, author: &Actor, seq: u64) -> bool {
        self.durable_of(author) >= seq
    }

    /// The record of request `id`, if this replica holds it.
    pub fn request(&self, id: RequestId) -> Option<&Recorded> {
        self.requests.get(id)
    }

    /// Request records held, and forgotten at the bound.
    pub fn request_counts(&self) -> (usize, u64) {
        (self.requests.len(), self.requests.forgotten)
    }

    pub fn actor(&self) -> Actor {
        self.me
    }

    /// What has been applied, with own operations only up to the durable one.
    pub fn version(&self) -> VersionVector {
        let mut vv = self.vv.clone();
        match self.durable {
            0 => vv.remove(&self.me),
            d => vv.insert(self.me, d),
        };
        vv
    }

    /// Number of own operations written (durable or not).
    /// Every operation applied, own ones durable or not: equal versions
    /// mean equal contents (a cache key for views derived from the state).
    pub fn applied(&self) -> &VersionVector {
        &self.vv
    }

    pub fn own_seq(&self) -> u64 {
        self.vv.get(&self.me).copied().unwrap_or(0)
    }

    /// Marks own operations up to `seq` as durable; returns the newly
    /// durable ones, to share with peers.
    pub fn mark_durable(&mut self, seq: u64) -> Vec<Stamped> {
        let from = self.durable;
        self.durable = self.durable.max(seq.min(self.own_seq()));
        debug_assert!(
            from <= self.durable && self.durable <= self.own_seq(),
            "durable only grows, never past what was written"
        );
        let actor = self.me;
        match self.log.get(&actor) {
            Some(ops) => ops
                .between(from, self.durable)
                .map(|(seq, op)| Stamped { actor, seq, op })
                .collect(),
            None => Vec::new(),
        }
    }

    /// The values at `key`, siblings sorted; empty when absent.
    pub fn get(&self, key: &str) -> Vec<String> {
        self.doc.get_ref(key).map(|r| sorted_values(r.values())).unwrap_or_default()
    }

    /// Every key with its values (siblings sorted), in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&String, Vec<String>)> {
        // Borrowed (vendor/crdts/PATCHED.md): crdts' own iterator clones
        // the map's whole clock for every key.
        self.doc.entries().map(|(k, reg)| (k, sorted_values(reg.values())))
    }

    /// The keys starting with `prefix`, with their values (siblings
    /// sorted), in key order; walks only those keys.
    pub fn entries_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, Vec<String>)> + 'a {
        self.doc
            .entries_from(prefix)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, reg)| (k, sorted_values(reg.values())))
    }

    /// As [`Replica::entries_with_prefix`], but only the keys `pick`
    /// makes something of, given with what it made; the others' values
    /// are neither cloned nor sorted.
    pub fn entries_with_prefix_where<'a, T>(
        &'a self,
        prefix: &'a str,
        pick: impl Fn(&'a str) -> Option<T> + 'a,
    ) -> impl Iterator<Item = (T, Vec<String>)> + 'a {
        self.doc
            .entries_from(prefix)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter_map(move |(k, reg)| Some((pick(k)?, sorted_values(reg.values()))))
    }

    /// The document keys that operations applied after `since` touched,
    /// from the retained operations, or `None` when they cannot say: an
    /// operation after `since` was compacted away or came in a full-state
    /// merge, or more than `max_keys` keys were touched. Walks only the
    /// operations after `since` (`O(changes)`, not `O(keys)`).
    pub fn keys_changed_since(
        &self,
        since: &VersionVector,
        max_keys: usize,
    ) -> Option<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        for (actor, &top) in &self.vv {
            let from = since.get(actor).copied().unwrap_or(0);
            if top <= from {
                continue;
            }
            // Seqs in a log only grow; those after `since` must be exactly
            // from + 1 ..= top (a full-state merge leaves a gap).
            let log = self.log.get(actor)?;
            let (after, contiguous) = log.count_after(from);
            if !contiguous || after as u64 != top - from {
                return None;
            }
            for (_, op) in log.between(from, top) {
                match op {
                    crdts::map::Op::Up { key, .. } => _ = keys.insert(key),
                    crdts::map::Op::Rm { keyset, .. } => keys.extend(keyset),
                }
                if keys.len() > max_keys {
                    return None;
                }
            }
        }
        Some(keys)
    }

    /// Applies local changes as new own operations (not yet durable).
    pub fn write(&mut self, changes: &[Change]) -> Vec<Stamped> {
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let op = match change {
                Change::Set { key, value } => {
                    let dot = self.doc.read_ctx().derive_add_ctx(self.me).dot;
                    self.doc.update(
                        key.as_str(),
                        AddCtx { clock: Default::default(), dot },
                        |reg, _| {
                            // The register's own clock plus the new dot (see the module doc).
                            let mut clock = reg.read_ctx().add_clock;
                            clock.apply(dot);
                            reg.write(value.clone(), AddCtx { clock, dot })
                        },
                    )
                }
                Change::Remove { key } => {
                    let ctx = self.doc.get(key).derive_rm_ctx();
                    self.doc.rm(key.as_str(), ctx)
                }
                Change::Record { id, ids } => requests::record_op(self.me, *id, ids),
            };
            let stamped = Stamped { actor: self.me, seq: self.own_seq() + 1, op };
            self.apply_in_order(stamped.clone());
            out.push(stamped);
        }
        out
    }

    fn apply_in_order(&mut self, s: Stamped) {
        debug_assert_eq!(s.seq, self.vv.get(&s.actor).copied().unwrap_or(0) + 1, "causal order");
        oplog::encode(&s.op, &mut self.encoded);
        match requests::as_record(&s.op) {
            Some((id, ids)) => {
                self.requests.insert(id, Recorded { author: s.actor, seq: s.seq, ids })
            }
            None => self.doc.apply(s.op),
        }
        self.vv.insert(s.actor, s.seq);
        // Growth stops at the bound (beyond the minimum): capacity grown
        // past it would sit spare once compaction takes the bytes back.
        let room = MAX_RETAINED_OPS_BYTES.saturating_sub(self.retained_heap + self.encoded.len());
        let log = self.log.entry(s.actor).or_default();
        let before = log.heap_bytes();
        log.push(s.seq, &self.encoded, room);
        self.retained_heap += log.heap_bytes() - before;
        self.retained_used += self.encoded.len() + oplog::INDEX_ENTRY_BYTES;
        self.retained += 1;
        self.compact();
    }

    /// Drops the oldest retained operations past either bound, count or
    /// bytes (their effect is in the document; a peer that needs them gets
    /// the full state), from the actor whose log uses the most bytes: a
    /// writer of a few operations keeps them while another fills the bound.
    fn compact(&mut self) {
        while self.retained > MAX_RETAINED_OPS || self.retained_used > MAX_RETAINED_OPS_BYTES {
            let Some((&actor, ops)) = self.log.iter_mut().max_by_key(|(_, ops)| ops.used_bytes())
            else {
                break;
            };
            let Some(freed) = ops.pop_front() else { break };
            self.retained -= 1;
            self.retained_used -= freed;
            let before = ops.heap_bytes();
            if ops.is_empty() {
                self.retained_heap -= before;
                self.log.remove(&actor);
            } else {
                ops.shrink();
                self.retained_heap -= before - ops.heap_bytes();
            }
        }
        debug_assert!(self.retained_used <= MAX_RETAINED_OPS_BYTES);
    }

    /// The bytes the retained logs use and hold, counted from the logs
    /// themselves (tests check the running counts against them).
    #[cfg(test)]
    pub(crate) fn retained_counted_from_logs(&self) -> (usize, usize) {
        let used = self.log.values().map(OpLog::used_bytes).sum();
        (used, self.log.values().map(OpLog::heap_bytes).sum())
    }

    /// The bytes the retained operations use, encoded with their index
    /// entries (what [`MAX_RETAINED_OPS_BYTES`] bounds).
    pub fn retained_used(&self) -> usize {
        self.retained_used
    }

    /// Operations retained for anti-entropy, and the bytes their logs have
    /// allocated, spare capacity included (what the memory metric shows;
    /// [`Replica::retained_used`] is what the bound counts).
    pub fn retained(&self) -> (usize, usize) {
        (self.retained, self.retained_heap)
    }

    /// Applies operations from elsewhere; returns those newly applied (to
    /// persist), in the order applied. Duplicates are ignored; gaps wait.
    pub fn apply_remote(&mut self, ops: Vec<Stamped>) -> Vec<Stamped> {
        let mut applied = Vec::new();
        for s in ops {
            if s.actor == self.me {
                continue;
            }
            let have = self.vv.get(&s.actor).copied().unwrap_or(0);
            if s.seq <= have {
                continue;
            }
            if s.seq > have + 1 {
                self.hold(s);
                continue;
            }
            let actor = s.actor;
            applied.push(s.clone());
            self.apply_in_order(s);
            self.drain_pending(actor, &mut applied);
        }
        applied
    }

    fn hold(&mut self, s: Stamped) {
        if self.pending_count >= MAX_PENDING_OPS {
            self.dropped_pending += 1;
            return;
        }
        if self.pending.entry(s.actor).or_default().insert(s.seq, s).is_none() {
            self.pending_count += 1;
        }
    }

    fn drain_pending(&mut self, actor: Actor, applied: &mut Vec<Stamped>) {
        loop {
            let next = self.vv.get(&actor).copied().unwrap_or(0) + 1;
            let Some(s) = self.pending.get_mut(&actor).and_then(|p| p.remove(&next)) else { break };
            self.pending_count -= 1;
            applied.push(s.clone());
            self.apply_in_order(s);
        }
        self.pending.retain(|_, p| !p.is_empty());
    }

    /// What `theirs` lacks of what this replica may share.
    pub fn delta_for(&self, theirs: &VersionVector) -> Option<Delta> {
        let mine = self.version();
        let mut ops = Vec::new();
        for (actor, &upto) in &mine {
            let have = theirs.get(actor).copied().unwrap_or(0);
            if have >= upto {
                continue;
            }
            let log = self.log.get(actor);
            let oldest = log.and_then(OpLog::front_seq).unwrap_or(upto + 1);
            if oldest > have + 1 {
                return Some(Delta::Full(Box::new(self.snapshot())));
            }
            let actor = *actor;
            let wanted = log.into_iter().flat_map(|l| l.between(have, upto));
            let room = MAX_DELTA_OPS.saturating_sub(ops.len());
            ops.extend(wanted.take(room).map(|(seq, op)| Stamped { actor, seq, op }));
        }
        (!ops.is_empty()).then_some(Delta::Ops(ops))
    }

    /// Why [`Replica::delta_for`] answers `theirs` with the full state: the
    /// first actor whose operations `theirs` lacks from before the oldest
    /// one retained here, as (actor, theirs, oldest retained, applied here).
    pub fn full_state_cause(&self, theirs: &VersionVector) -> Option<(Actor, u64, u64, u64)> {
        self.version().into_iter().find_map(|(actor, upto)| {
            let have = theirs.get(&actor).copied().unwrap_or(0);
            let oldest = self.log.get(&actor).and_then(OpLog::front_seq).unwrap_or(upto + 1);
            (have < upto && oldest > have + 1).then_some((actor, have, oldest, upto))
        })
    }

    /// Whether `theirs` holds anything this replica lacks.
    pub fn lacks_from(&self, theirs: &VersionVector) -> bool {
        theirs.iter().any(|(a, &s)| *a != self.me && self.vv.get(a).copied().unwrap_or(0) < s)
    }

    /// Merges a full state from a peer.
    pub fn merge_full(&mut self, snap: Snapshot) {
        let mut theirs = snap;
        theirs.vv.remove(&self.me);
        self.doc.merge(theirs.doc);
        for (id, rec) in theirs.requests {
            self.requests.insert(id, rec);
        }
        for (a, s) in theirs.vv {
            let have = self.vv.entry(a).or_insert(0);
            if s > *have {
                *have = s;
                // Ops we never saw are in the merged doc; the log restarts after them.
                if let Some(l) = self.log.remove(&a) {
                    self.retained -= l.len();
                    self.retained_used -= l.used_bytes();
                    self.retained_heap -= l.heap_bytes();
                }
                if let Some(p) = self.pending.remove(&a) {
                    self.pending_count -= p.len();
                }
            }
        }
    }

    /// The whole state as other replicas may see it (own operations only
    /// if durable: the snapshot is taken after they were persisted).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { doc: self.doc.clone(), vv: self.version(), requests: self.requests.to_vec() }
    }

    /// The whole state including own operations not yet durable, for the
    /// local snapshot on disk (written after those operations' records).
    pub fn snapshot_all(&self) -> Snapshot {
        Snapshot { doc: self.doc.clone(), vv: self.vv.clone(), requests: self.requests.to_vec() }
    }

    /// As [`Self::snapshot_all`], and the document keeps a copy whose key
    /// index is built with full nodes (crdts patch 7) while the snapshot
    /// takes the one grown key by key: the snapshot's copy costs what a
    /// clone did, and the live document holds about a third less for its
    /// index (keys added one at a time leave nodes about half full).
    pub fn snapshot_all_compacting(&mut self) -> Snapshot {
        let compact = self.doc.compact_clone();
        debug_assert_eq!(compact.len().val, self.doc.len().val);
        let doc = std::mem::replace(&mut self.doc, compact);
        Snapshot { doc, vv: self.vv.clone(), requests: self.requests.to_vec() }
    }

    /// A canonical digest of the visible state (keys and sorted values),
    /// equal on replicas that converged, whatever the order of operations.
    pub fn state_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (k, vals) in self.entries() {
            eat(k.as_bytes());
            eat(&[0]);
            for v in vals {
                eat(v.as_bytes());
                eat(&[1]);
            }
        }
        h
    }

    /// The names of the replica's parts that [`Replica::clone_part`] copies.
    pub const PARTS: [&'static str; 5] = ["doc", "retained ops", "requests", "pending ops", "vv"];

    /// A copy of one part of the replica (see [`Replica::PARTS`]), for a
    /// benchmark that measures the heap each part holds by cloning it under
    /// a counting allocator; `None` for an unknown name.
    pub fn clone_part(&self, name: &str) -> Option<Box<dyn std::any::Any>> {
        Some(match name {
            "doc" => Box::new(self.doc.clone()),
            "retained ops" => Box::new(self.log.clone()),
            "requests" => Box::new(self.requests.clone()),
            "pending ops" => Box::new(self.pending.clone()),
            "vv" => Box::new((self.vv.clone(), self.durable_remote.clone())),
            _ => return None,
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.doc.len().val
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Raises each actor's number in `into` to at least the one given: the
/// merge of version vectors (numbers only grow).
pub fn merge_highest(into: &mut VersionVector, from: impl IntoIterator<Item = (Actor, u64)>) {
    for (a, s) in from {
        let held = into.entry(a).or_insert(0);
        *held = (*held).max(s);
    }
}

/// A register's values, sorted, duplicates dropped (siblings as shown).
fn sorted_values<'v>(values: impl Iterator<Item = &'v String>) -> Vec<String> {
    let mut vals: Vec<String> = values.cloned().collect();
    vals.sort();
    vals.dedup();
    vals
}
