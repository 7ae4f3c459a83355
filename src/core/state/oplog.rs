//! One actor's retained operations, encoded back to back in one ring
//! buffer, with an index of (operation number, where it starts): what
//! anti-entropy sends a peer that is behind, and what tells which keys
//! changed since a version.
//!
//! Owns those bytes and counts them exactly: [`OpLog::used_bytes`] (the
//! encoded operations and their index entries, what the replica's bound
//! counts) and [`OpLog::heap_bytes`] (every byte allocated, spare capacity
//! included). Encoded, an operation takes about 60 to 75 bytes plus its
//! 16-byte index entry, against about 200 bytes in three allocations as a
//! decoded `Stamped` (issue 14): the same bound holds about twice the
//! operations, and their churn leaves no scattered small allocations
//! behind. Must never decide what to keep: the replica's bounds pop the
//! oldest. Bytes here were encoded by this module from a value in memory,
//! never read from the network or a disk.

use std::collections::VecDeque;

use super::doc::DocOp;

/// One index entry: the operation's number and the absolute offset of its
/// first byte (offsets only grow; `front` maps them into the buffer).
type Entry = (u64, u64);

/// Bytes an index entry holds.
pub const INDEX_ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

/// A full log grows by a quarter plus this many bytes (and its index by a
/// quarter plus [`GROWTH_MIN_ENTRIES`]), not by doubling; it gives back
/// capacity once more than half of it is spare (see [`OpLog::shrink`]).
pub const GROWTH_MIN_BYTES: usize = 4_096;
pub const GROWTH_MIN_ENTRIES: usize = 64;

fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes an operation as the log stores it.
pub fn encode(op: &DocOp, into: &mut Vec<u8>) {
    into.clear();
    // Encoding a `DocOp` (strings, integers, enums) into a vector has no
    // failure case; one would be a bug in this module's types.
    bincode::serde::encode_into_std_write(op, into, codec())
        .expect("a document operation always encodes");
}

#[derive(Debug, Clone, Default)]
pub struct OpLog {
    /// Oldest first; numbers only grow (a full-state merge may leave a gap).
    index: VecDeque<Entry>,
    bytes: VecDeque<u8>,
    /// The absolute offset of `bytes[0]`.
    front: u64,
}

impl OpLog {
    /// Appends operation `seq`, encoded as `encoded` ([`encode`]). When full,
    /// the buffers grow by a quarter plus a minimum, but by no more than
    /// `room` bytes (or the minimum) beyond what the operation needs.
    pub fn push(&mut self, seq: u64, encoded: &[u8], room: usize) {
        assert!(self.index.back().is_none_or(|(last, _)| *last < seq), "numbers only grow");
        let need = encoded.len();
        // At least the minimum each time, room or not: growing by only
        // what one push needs would copy the log on every push.
        let mut room = room;
        if self.bytes.capacity() - self.bytes.len() < need {
            let quarter = self.bytes.len() / 4 + GROWTH_MIN_BYTES;
            let extra = quarter.min(room).max(GROWTH_MIN_BYTES);
            self.bytes.reserve_exact(need + extra);
            room = room.saturating_sub(extra);
        }
        if self.index.len() == self.index.capacity() {
            let quarter = self.index.len() / 4 + GROWTH_MIN_ENTRIES;
            let room = room / INDEX_ENTRY_BYTES;
            self.index.reserve_exact(quarter.min(room).max(GROWTH_MIN_ENTRIES));
        }
        self.index.push_back((seq, self.front + self.bytes.len() as u64));
        self.bytes.extend(encoded);
    }

    /// Drops the oldest operation; returns the bytes it used (encoded and
    /// index entry), or `None` when empty.
    pub fn pop_front(&mut self) -> Option<usize> {
        self.index.pop_front()?;
        let next = self.index.front().map_or(self.front + self.bytes.len() as u64, |e| e.1);
        let len = (next - self.front) as usize;
        self.bytes.drain(..len);
        self.front = next;
        Some(len + INDEX_ENTRY_BYTES)
    }

    /// Gives back capacity once more than half of it (plus the growth
    /// minimum) is spare, keeping a quarter spare: a log's capacity halves
    /// at most each time its length does, so the copies are amortised.
    pub fn shrink(&mut self) {
        let len = self.bytes.len();
        if self.bytes.capacity() > 2 * len + GROWTH_MIN_BYTES {
            self.bytes.shrink_to(len + len / 4 + GROWTH_MIN_BYTES);
        }
        let n = self.index.len();
        if self.index.capacity() > 2 * n + GROWTH_MIN_ENTRIES {
            self.index.shrink_to(n + n / 4 + GROWTH_MIN_ENTRIES);
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The number of the oldest operation held.
    pub fn front_seq(&self) -> Option<u64> {
        self.index.front().map(|e| e.0)
    }

    /// The encoded operations and their index entries.
    pub fn used_bytes(&self) -> usize {
        self.bytes.len() + self.index.len() * INDEX_ENTRY_BYTES
    }

    /// Every byte the log has allocated, spare capacity included.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.index.capacity() * INDEX_ENTRY_BYTES
    }

    /// The position of the first operation numbered above `after`.
    fn position_after(&self, after: u64) -> usize {
        self.index.partition_point(|e| e.0 <= after)
    }

    /// The operations numbered `after < seq <= upto`, oldest first, decoded
    /// (a binary search, then only those).
    pub fn between(&self, after: u64, upto: u64) -> impl Iterator<Item = (u64, DocOp)> + '_ {
        let start = self.position_after(after);
        (start..self.index.len())
            .map_while(move |i| (self.index[i].0 <= upto).then(|| (self.index[i].0, self.op(i))))
    }

    /// The operations numbered above `after` as (count, whether their
    /// numbers run on from `after + 1` without a gap), without decoding.
    pub fn count_after(&self, after: u64) -> (usize, bool) {
        let at = self.position_after(after);
        let contiguous = self.index.get(at).is_some_and(|e| e.0 == after + 1);
        (self.index.len() - at, contiguous)
    }

    /// Decodes operation `i` (by position).
    fn op(&self, i: usize) -> DocOp {
        let start = (self.index[i].1 - self.front) as usize;
        let end = self.index.get(i + 1).map_or(self.bytes.len(), |e| (e.1 - self.front) as usize);
        let (a, b) = self.bytes.as_slices();
        let decoded = if end <= a.len() {
            decode(&a[start..end])
        } else if start >= a.len() {
            decode(&b[start - a.len()..end - a.len()])
        } else {
            let joined: Vec<u8> = self.bytes.range(start..end).copied().collect();
            decode(&joined)
        };
        // These bytes were encoded from an operation by `push`'s caller.
        decoded.expect("a retained operation decodes")
    }
}

fn decode(bytes: &[u8]) -> Result<DocOp, bincode::error::DecodeError> {
    let (op, used) = bincode::serde::decode_from_slice(bytes, codec())?;
    debug_assert_eq!(used, bytes.len(), "one operation per entry");
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::replica::{Actor, Change, Replica};

    fn ops(n: usize, value_len: usize) -> Vec<DocOp> {
        let mut r = Replica::new(Actor { node: 1, generation: 1 });
        (0..n)
            .flat_map(|i| {
                let value = format!("{i}{}", "v".repeat(value_len));
                r.write(&[Change::Set { key: format!("k{}", i % 7), value }])
            })
            .map(|s| s.op)
            .collect()
    }

    #[test]
    fn operations_come_back_as_pushed_across_the_ring_wrap() {
        let ops = ops(600, 40);
        let mut log = OpLog::default();
        let mut buf = Vec::new();
        let mut popped = 0;
        for (i, op) in ops.iter().enumerate() {
            encode(op, &mut buf);
            log.push(i as u64 + 1, &buf, usize::MAX);
            // Keep about 100 so the ring's head moves and wraps.
            if log.len() > 100 {
                assert!(log.pop_front().is_some());
                popped += 1;
            }
        }
        assert_eq!(log.front_seq(), Some(popped + 1));
        let back: Vec<(u64, DocOp)> = log.between(0, u64::MAX).collect();
        assert_eq!(back.len(), 100);
        for (seq, op) in back {
            assert_eq!(op, ops[seq as usize - 1], "operation {seq}");
        }
        let some: Vec<u64> = log.between(550, 560).map(|(s, _)| s).collect();
        assert_eq!(some, (551..=560).collect::<Vec<_>>());
        assert_eq!(log.count_after(550), (50, true));
        assert_eq!(log.count_after(0), (100, false), "the first 500 were popped");
    }

    #[test]
    fn bytes_are_counted_exactly_and_growth_is_bounded_by_the_room() {
        let ops = ops(2_000, 10);
        let mut log = OpLog::default();
        let mut buf = Vec::new();
        let mut used = 0;
        for (i, op) in ops.iter().enumerate() {
            encode(op, &mut buf);
            used += buf.len() + INDEX_ENTRY_BYTES;
            log.push(i as u64 + 1, &buf, 0);
            assert_eq!(log.used_bytes(), used);
        }
        // With no room, a log grows only by the minimum beyond each push.
        let most = used + 2 * GROWTH_MIN_BYTES + GROWTH_MIN_ENTRIES * INDEX_ENTRY_BYTES;
        assert!(log.heap_bytes() <= most, "{} heap for {used}", log.heap_bytes());
        while log.len() > 10 {
            used -= log.pop_front().unwrap();
            log.shrink();
        }
        assert_eq!(log.used_bytes(), used);
        assert!(log.heap_bytes() <= 3 * used + 2 * GROWTH_MIN_BYTES, "{}", log.heap_bytes());
        while log.pop_front().is_some() {}
        assert_eq!(log.used_bytes(), 0);
        assert!(log.between(0, u64::MAX).next().is_none());
    }
}
