//! Client request ids and the table of recorded requests: which write a
//! request id produced (its author, its last operation, and its outcome),
//! so that a manager asked the same request again answers with that record
//! instead of applying it a second time.
//!
//! A record travels as the last operation of its write: a `DocOp` on key
//! `r/<id>` with the map dot counter 0 and an empty register clock, which
//! crdts itself treats as already seen and ignores. The replica diverts it
//! into this table instead, so records are persisted, replicated and
//! delivered in causal order like any operation, yet never enter the
//! document (no key to clean up, nothing in the status view or the hash).
//! Holding a write's record therefore means holding the whole write.
//!
//! Owns the record format and the table's bounds. Must never grow past
//! [`MAX_REQUEST_RECORDS`] records nor [`MAX_REQUEST_RECORDS_BYTES`]: the
//! oldest record is forgotten first, and a
//! request retried after its record was forgotten is applied again (see
//! docs/GUARANTEES.md).

use std::collections::{HashMap, VecDeque};

use crdts::{Dot, VClock};
use serde::{Deserialize, Serialize};

use super::doc::{Actor, DocOp};

/// Request records kept per replica; past it the oldest is forgotten. At
/// the measured peak (about 13,000 writes a second on one manager) this is
/// about 40 s of writes, far longer than a client keeps retrying
/// (`client::WRITE_RETRY_WINDOW_MS`).
pub const MAX_REQUEST_RECORDS: usize = 500_000;
/// The same bound in bytes (as [`record_bytes`] counts them): past it the
/// oldest records are forgotten too. A record lists every id its write
/// created (up to 1,000 for one command), so the count alone allowed tens
/// of GiB; at about 110 bytes for a one-id record this still keeps
/// about 150,000 records.
pub const MAX_REQUEST_RECORDS_BYTES: usize = 16 << 20;
/// Key prefix of record operations (never a key of the document).
const RECORD_PREFIX: &str = "r/";

/// A client's request id: random, chosen by the client, the same on every
/// retry of one request.
pub type RequestId = u64;

/// What a request produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The writer that applied it.
    pub author: Actor,
    /// The write's last operation (the record itself) in `author`'s sequence.
    pub seq: u64,
    /// The ids the write created or touched, as answered.
    pub ids: Vec<String>,
}

/// The record operation for request `id` with outcome `ids`, by `me`.
pub fn record_op(me: Actor, id: RequestId, ids: &[String]) -> DocOp {
    let put = crdts::mvreg::Op::Put { clock: VClock::new(), val: ids.join(" ") };
    DocOp::Up { dot: Dot::new(me, 0), key: format!("{RECORD_PREFIX}{id:016x}"), op: put }
}

/// If `op` is a record operation: its request id and outcome ids.
pub fn as_record(op: &DocOp) -> Option<(RequestId, Vec<String>)> {
    let DocOp::Up { dot, key, op: crdts::mvreg::Op::Put { val, .. } } = op else { return None };
    if dot.counter != 0 {
        return None;
    }
    let id = u64::from_str_radix(key.strip_prefix(RECORD_PREFIX)?, 16).ok()?;
    Some((id, val.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()))
}

/// A request id for a write that came without one: unique per actor and
/// operation number (actors are never reused), mixed so that ids derived
/// from it look random (splitmix64 finaliser).
pub fn derived_id(me: Actor, next_seq: u64) -> RequestId {
    let mut z =
        me.node ^ me.generation.rotate_left(32) ^ next_seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a record holds in memory, in bytes: its inline size in the ring
/// and its index entry, plus every id.
pub fn record_bytes(rec: &Recorded) -> usize {
    std::mem::size_of::<(RequestId, Recorded)>()
        + std::mem::size_of::<(RequestId, u64)>()
        + rec.ids.iter().map(|id| std::mem::size_of::<String>() + id.len()).sum::<usize>()
}

/// The bounded table of recorded requests, oldest first.
///
/// The records sit in insertion order in one ring (so forgetting the
/// oldest and copying them all for a snapshot are sequential walks), and a
/// hash index maps an id to its insertion number. The index is only ever
/// looked up, never iterated, so its hasher's random keys (which keep
/// client-chosen ids from colliding on purpose) cannot change any outcome,
/// in the simulator or anywhere.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    /// Every record held with its id, oldest first.
    records: VecDeque<(RequestId, Recorded)>,
    /// Id to insertion number; `records[n - first]` holds it.
    index: HashMap<RequestId, u64>,
    /// The insertion number of `records[0]`.
    first: u64,
    /// [`record_bytes`] of every record held.
    bytes: usize,
    /// Records forgotten at the bound.
    pub forgotten: u64,
}

impl Requests {
    /// Records `id`; the first record of an id wins (a request applied
    /// twice, on two managers that had not seen each other's, has two).
    pub fn insert(&mut self, id: RequestId, rec: Recorded) {
        if self.index.contains_key(&id) {
            return;
        }
        let add = record_bytes(&rec);
        while self.records.len() >= MAX_REQUEST_RECORDS
            || (self.bytes + add > MAX_REQUEST_RECORDS_BYTES && !self.records.is_empty())
        {
            let Some((old, r)) = self.records.pop_front() else { break };
            let removed = self.index.remove(&old);
            assert_eq!(removed, Some(self.first), "the oldest record is indexed at its number");
            self.first += 1;
            self.bytes -= record_bytes(&r);
            self.forgotten += 1;
        }
        self.bytes += add;
        self.index.insert(id, self.first + self.records.len() as u64);
        self.records.push_back((id, rec));
        debug_assert_eq!(self.index.len(), self.records.len());
    }

    /// [`record_bytes`] of every record held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, id: RequestId) -> Option<&Recorded> {
        let n = *self.index.get(&id)?;
        let (held, rec) = self.records.get(usize::try_from(n - self.first).ok()?)?;
        assert_eq!(*held, id, "the index points at the record of its id");
        Some(rec)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record, oldest first (for snapshots).
    pub fn to_vec(&self) -> Vec<(RequestId, Recorded)> {
        self.records.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_bounded_in_bytes_not_only_in_count() {
        let author = Actor { node: 1, generation: 1 };
        let ids: Vec<String> = (0..1_000).map(|i| format!("0123456789abc-{i}")).collect();
        let mut t = Requests::default();
        let one = record_bytes(&Recorded { author, seq: 1, ids: ids.clone() });
        let n = (MAX_REQUEST_RECORDS_BYTES / one + 10) as u64;
        for id in 0..n {
            t.insert(id, Recorded { author, seq: id + 1, ids: ids.clone() });
        }
        assert!(t.bytes() <= MAX_REQUEST_RECORDS_BYTES, "{} bytes held", t.bytes());
        assert!(t.len() < MAX_REQUEST_RECORDS && t.forgotten > 0, "forgotten by bytes");
        assert!(t.get(n - 1).is_some() && t.get(0).is_none(), "the oldest go first");
        assert_eq!(t.len() as u64 + t.forgotten, n);
    }

    #[test]
    fn every_held_record_is_found_after_the_oldest_are_forgotten() {
        let author = Actor { node: 7, generation: 2 };
        let ids: Vec<String> = (0..200).map(|i| format!("machine-{i}")).collect();
        let mut t = Requests::default();
        let one = record_bytes(&Recorded { author, seq: 1, ids: ids.clone() });
        let n = (MAX_REQUEST_RECORDS_BYTES / one * 2) as u64;
        // Random-looking ids, as clients choose them.
        let id_of = |i: u64| derived_id(author, i);
        for i in 0..n {
            t.insert(id_of(i), Recorded { author, seq: i, ids: ids.clone() });
            // A second record of an id is ignored: the first wins.
            t.insert(id_of(i), Recorded { author, seq: u64::MAX, ids: Vec::new() });
        }
        assert!(t.forgotten > 0 && t.len() as u64 + t.forgotten == n);
        for i in 0..n {
            let got = t.get(id_of(i)).map(|r| r.seq);
            let held = i >= t.forgotten;
            assert_eq!(got, held.then_some(i), "record {i}");
        }
        let all = t.to_vec();
        assert_eq!(all.len(), t.len());
        assert!(all.iter().zip(t.forgotten..).all(|((id, r), i)| *id == id_of(i) && r.seq == i));
    }
}
