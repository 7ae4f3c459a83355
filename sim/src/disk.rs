//! The replicated-state part of a manager's simulated disk: an append-only
//! log of operation batches and snapshots, each synced after an fsync delay
//! drawn from the seed, in submission order (group commit: an fsync never
//! completes before an earlier one).
//!
//! A crash with the disk kept keeps exactly the entries whose sync had
//! completed: an own batch not yet synced is lost, and it was never
//! acknowledged. A restart rebuilds the replica as the runtime's
//! `Store::open` does: the newest snapshot, then every batch after it
//! through `apply_remote`, under the new actor.
//!
//! Owns the log, its synced prefix and its compaction. Must never report a
//! batch as synced before its sync time, and must never reorder entries.

use std::collections::VecDeque;
use std::time::Duration;

use jujud::core::state::{Actor, Replica, Snapshot, Stamped, VersionVector};

use crate::queue::VTime;

/// Shortest simulated fsync, in microseconds.
pub const FSYNC_MIN_US: u64 = 500;
/// Longest simulated fsync, in microseconds.
pub const FSYNC_MAX_US: u64 = 5_000;

/// A snapshot is written after at least this many operations since the
/// last one, as the runtime does after `SNAPSHOT_EVERY_OPS` (100,000);
/// smaller here so that restarts from a snapshot plus a tail happen in long
/// runs. Past it, a snapshot waits for as many operations as the replica
/// holds keys (see [`StateDisk::snapshot_due`]).
pub const SNAPSHOT_EVERY_OPS: u64 = 256;

/// What one log entry holds.
#[derive(Clone, Debug)]
enum Content {
    /// A batch of operations, in the order the node produced them.
    Ops(Vec<Stamped>),
    /// The whole state, covering every entry before it.
    Snapshot(Box<Snapshot>),
}

#[derive(Clone, Debug)]
struct Entry {
    content: Content,
    /// When its fsync completes.
    synced_at: VTime,
}

/// The state log of one disk.
#[derive(Clone, Debug, Default)]
pub struct StateDisk {
    entries: VecDeque<Entry>,
    /// `entries[..folded]` are synced and folded into `durable`.
    folded: usize,
    /// What a restart would recover, per author (the synced prefix).
    durable: VersionVector,
    /// When the last submitted entry syncs.
    last_sync: VTime,
    since_snapshot: u64,
}

/// Advances `vv` over one entry the way a restore would apply it: a
/// snapshot raises every author to its version; a batch advances an author
/// only over the next operation in its sequence (batches are written in
/// the order the node applied them, so they have no gaps).
fn fold_into(vv: &mut VersionVector, content: &Content) {
    match content {
        Content::Snapshot(snap) => {
            for (actor, &seq) in &snap.vv {
                let have = vv.entry(*actor).or_insert(0);
                *have = (*have).max(seq);
            }
        }
        Content::Ops(ops) => {
            for op in ops {
                let have = vv.entry(op.actor).or_insert(0);
                if op.seq == *have + 1 {
                    *have = op.seq;
                }
            }
        }
    }
}

impl StateDisk {
    /// Appends a batch; returns when its sync completes.
    pub fn append_ops(&mut self, now: VTime, ops: Vec<Stamped>, fsync: Duration) -> VTime {
        self.since_snapshot += ops.len() as u64;
        self.append(now, Content::Ops(ops), fsync)
    }

    /// Appends a snapshot covering every entry submitted before it.
    pub fn append_snapshot(&mut self, now: VTime, snap: Snapshot, fsync: Duration) -> VTime {
        self.since_snapshot = 0;
        self.append(now, Content::Snapshot(Box::new(snap)), fsync)
    }

    fn append(&mut self, now: VTime, content: Content, fsync: Duration) -> VTime {
        self.fold(now);
        let synced_at = (now + fsync).max(self.last_sync);
        self.last_sync = synced_at;
        self.entries.push_back(Entry { content, synced_at });
        synced_at
    }

    /// Whether enough operations were written since the last snapshot, for
    /// a replica of `keys` keys: at least `SNAPSHOT_EVERY_OPS`, and at least
    /// `keys`. A snapshot costs O(keys), so this keeps its cost O(1) per
    /// operation (a fixed interval made it O(keys) per operation: a quarter
    /// of a long run's time), and the log a restart replays holds about as
    /// many operations as the snapshot before it holds keys.
    /// `keys` is asked only past the minimum (reading a replica's size
    /// clones its clock).
    pub fn snapshot_due(&self, keys: impl FnOnce() -> usize) -> bool {
        self.since_snapshot >= SNAPSHOT_EVERY_OPS && self.since_snapshot >= keys() as u64
    }

    /// Folds the entries synced by `now`; once a snapshot is synced, the
    /// entries before it are no longer needed and are dropped.
    fn fold(&mut self, now: VTime) {
        while let Some(e) = self.entries.get(self.folded).filter(|e| e.synced_at <= now) {
            fold_into(&mut self.durable, &e.content);
            if matches!(e.content, Content::Snapshot(_)) {
                self.entries.drain(..self.folded);
                self.folded = 0;
            }
            self.folded += 1;
        }
    }

    /// The crash: only the synced prefix survives. Returns how many
    /// entries were lost.
    pub fn crash(&mut self, now: VTime) -> u64 {
        self.fold(now);
        let lost = (self.entries.len() - self.folded) as u64;
        self.entries.truncate(self.folded);
        self.last_sync = self.entries.back().map_or(Duration::ZERO, |e| e.synced_at);
        lost
    }

    /// A graceful exit: the runtime waits `LEAVE_FLUSH_MS` (300 ms) before
    /// it exits, far longer than an fsync, so every entry submitted so far
    /// is synced now (no process runs on this disk until a restart).
    pub fn flush(&mut self, now: VTime) {
        for e in self.entries.iter_mut().skip(self.folded) {
            e.synced_at = e.synced_at.min(now);
        }
        self.last_sync = self.last_sync.min(now);
        self.fold(now);
    }

    /// The highest operation of `actor` that a crash at `now` would keep.
    pub fn durable_seq(&self, now: VTime, actor: &Actor) -> u64 {
        let mut seq = self.durable.get(actor).copied().unwrap_or(0);
        for e in self.entries.iter().skip(self.folded).take_while(|e| e.synced_at <= now) {
            match &e.content {
                Content::Snapshot(snap) => seq = seq.max(snap.vv.get(actor).copied().unwrap_or(0)),
                Content::Ops(ops) => {
                    for op in ops.iter().filter(|op| op.actor == *actor) {
                        if op.seq == seq + 1 {
                            seq = op.seq;
                        }
                    }
                }
            }
        }
        seq
    }

    /// Everything a crash at `now` would keep, per author.
    pub fn durable_at(&self, now: VTime) -> VersionVector {
        let mut vv = self.durable.clone();
        for e in self.entries.iter().skip(self.folded).take_while(|e| e.synced_at <= now) {
            fold_into(&mut vv, &e.content);
        }
        vv
    }

    /// The replica a restart recovers, writing as `me`: the newest
    /// snapshot, then every later batch, as `Store::open` does. Call it
    /// after [`StateDisk::crash`], when every entry left is synced.
    /// `skip_last` leaves out the newest batch (a planted bug only).
    pub fn restore(&self, me: Actor, skip_last: bool) -> Replica {
        let start = self.entries.iter().rposition(|e| matches!(e.content, Content::Snapshot(_)));
        let mut replica = match start.map(|i| &self.entries[i].content) {
            Some(Content::Snapshot(snap)) => Replica::from_snapshot(me, (**snap).clone()),
            _ => Replica::new(me),
        };
        let end = self.entries.len()
            - usize::from(skip_last && self.entries.back().is_some_and(|e| matches!(e.content, Content::Ops(_))));
        for e in self.entries.iter().take(end).skip(start.map_or(0, |i| i + 1)) {
            if let Content::Ops(ops) = &e.content {
                replica.apply_remote(ops.clone());
            }
        }
        replica
    }

    /// Whether a restart would start from a snapshot.
    pub fn has_snapshot(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.content, Content::Snapshot(_)))
    }

    /// Entries held (for the summary).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jujud::core::state::Change;

    fn actor(node: u64) -> Actor {
        Actor { node: node << 48, generation: 1 }
    }

    fn write(r: &mut Replica, key: &str) -> Vec<Stamped> {
        r.write(&[Change::Set { key: key.into(), value: "v".into() }])
    }

    #[test]
    fn a_crash_keeps_only_the_synced_prefix_and_a_restart_replays_it() {
        let ms = Duration::from_millis;
        let mut r = Replica::new(actor(1));
        let mut disk = StateDisk::default();
        disk.append_ops(ms(0), write(&mut r, "a"), ms(1));
        // Synced at 5 ms, and the next one cannot sync before it.
        disk.append_ops(ms(1), write(&mut r, "b"), ms(4));
        assert_eq!(disk.append_ops(ms(2), write(&mut r, "c"), ms(1)), ms(5));
        assert_eq!(disk.durable_seq(ms(4), &actor(1)), 1);
        assert_eq!(disk.crash(ms(4)), 2);
        let back = disk.restore(actor(2), false);
        assert_eq!(back.get("a"), vec!["v".to_string()]);
        assert!(back.get("b").is_empty());
        assert_eq!(back.version().get(&actor(1)), Some(&1));
    }

    #[test]
    fn a_snapshot_waits_for_the_minimum_and_for_as_many_operations_as_keys() {
        let mut r = Replica::new(actor(1));
        let mut disk = StateDisk::default();
        let ops: Vec<Stamped> = (0..SNAPSHOT_EVERY_OPS).flat_map(|i| write(&mut r, &format!("k{i}"))).collect();
        disk.append_ops(Duration::ZERO, ops[..ops.len() - 1].to_vec(), Duration::ZERO);
        assert!(!disk.snapshot_due(|| 0), "one operation short of the minimum");
        disk.append_ops(Duration::ZERO, ops[ops.len() - 1..].to_vec(), Duration::ZERO);
        assert!(disk.snapshot_due(|| 10));
        assert!(!disk.snapshot_due(|| 1_000), "a large replica waits for as many operations as keys");
        disk.append_snapshot(Duration::ZERO, r.snapshot_all(), Duration::ZERO);
        assert!(!disk.snapshot_due(|| 0));
    }

    #[test]
    fn a_synced_snapshot_compacts_the_log_and_restores_with_its_tail() {
        let ms = Duration::from_millis;
        let mut r = Replica::new(actor(1));
        let mut disk = StateDisk::default();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            disk.append_ops(ms(i as u64), write(&mut r, key), ms(1));
        }
        disk.append_snapshot(ms(3), r.snapshot_all(), ms(1));
        disk.append_ops(ms(4), write(&mut r, "d"), ms(1));
        disk.append_ops(ms(10), write(&mut r, "e"), ms(1));
        assert_eq!(disk.len(), 3, "the snapshot and the two batches after it");
        assert_eq!(disk.durable_at(ms(11)).get(&actor(1)), Some(&5));
        disk.crash(ms(11));
        let back = disk.restore(actor(2), false);
        assert_eq!(back.state_hash(), r.state_hash());
        assert_eq!(back.version().get(&actor(1)), Some(&5));
    }
}
