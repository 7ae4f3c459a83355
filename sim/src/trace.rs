//! The trace hash: a stable 64-bit FNV-1a fingerprint of everything a run
//! delivered (time, node, kind and payload of every event), so two runs of
//! the same seed and build can be compared by one number.
//!
//! Owns the hash function and the record format. Must never use std's
//! `DefaultHasher` (its algorithm is not promised across Rust versions) and
//! must never feed anything that differs between runs of one seed (wall
//! time, addresses of allocations, thread ids) into the hash.

use std::time::Duration;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A 64-bit FNV-1a hasher, written here so that its output never changes.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(FNV_OFFSET_BASIS)
    }
}

impl Fnv1a {
    /// Feeds raw bytes.
    pub fn bytes(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds a number as one 64-bit word (FNV-1a applied to words rather
    /// than bytes: eight times cheaper, just as stable).
    pub fn u64(&mut self, value: u64) {
        self.0 ^= value;
        self.0 = self.0.wrapping_mul(FNV_PRIME);
    }

    /// Feeds bytes eight at a time as little-endian words (zero-padded),
    /// then their length.
    pub fn words(&mut self, data: &[u8]) {
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.u64(u64::from_le_bytes(c.try_into().expect("chunks of 8")));
        }
        // The remainder as a little-endian word, zero-padded (built by shifts:
        // a copy of a variable length into a buffer calls memcpy).
        let tail = chunks.remainder().iter().enumerate().fold(0u64, |w, (i, b)| w | u64::from(*b) << (8 * i));
        self.u64(tail);
        self.u64(data.len() as u64);
    }

    /// The word-wise hash of one byte string (see [`Fnv1a::words`]).
    pub fn of_words(data: &[u8]) -> u64 {
        let mut h = Fnv1a::default();
        h.words(data);
        h.finish()
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The FNV-1a hash of one byte string.
    pub fn of(data: &[u8]) -> u64 {
        let mut h = Fnv1a::default();
        h.bytes(data);
        h.finish()
    }
}

/// What kind of thing a trace record describes; the tag is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceKind {
    Start = 1,
    Datagram = 2,
    Identified = 3,
    Timer = 4,
    Fault = 5,
    Event = 6,
    /// A client command handed to a manager.
    Command = 7,
    /// Own state operations reported synced.
    Durable = 8,
    /// A state message delivered.
    State = 9,
    /// A reply to a client command.
    Reply = 10,
    /// An agent session's frame or event.
    Session = 11,
    /// A workload started or reported.
    Workload = 12,
    /// A provider request, answer or action.
    Provider = 13,
    /// A membership exchange message delivered.
    Members = 14,
}

/// The running trace of one simulation.
#[derive(Debug, Default)]
pub struct Trace {
    hash: Fnv1a,
    records: u64,
}

impl Trace {
    /// Adds one record: when, which node slot, what kind, and a digest of
    /// the payload (length and content hash for datagrams).
    pub fn record(&mut self, at: Duration, slot: usize, kind: TraceKind, digest: u64) {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.hash.u64(nanos);
        self.hash.u64(slot as u64);
        self.hash.u64(kind as u64);
        self.hash.u64(digest);
        self.records += 1;
    }

    /// The hash of every record so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    /// How many records were hashed.
    pub fn records(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(Fnv1a::of(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv1a::of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv1a::of(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn trace_depends_on_order_and_content() {
        let mut a = Trace::default();
        let mut b = Trace::default();
        a.record(Duration::from_millis(1), 0, TraceKind::Timer, 7);
        a.record(Duration::from_millis(2), 1, TraceKind::Timer, 7);
        b.record(Duration::from_millis(2), 1, TraceKind::Timer, 7);
        b.record(Duration::from_millis(1), 0, TraceKind::Timer, 7);
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.records(), 2);
        assert_ne!(Fnv1a::of_words(b"abc"), Fnv1a::of_words(b"abc\0"));
        assert_ne!(Fnv1a::of_words(b"12345678x"), Fnv1a::of_words(b"12345678y"));
        // The tail is the zero-padded little-endian word of the last bytes.
        let mut h = Fnv1a::default();
        h.u64(u64::from_le_bytes(*b"12345678"));
        h.u64(u64::from_le_bytes([b'a', b'b', b'c', 0, 0, 0, 0, 0]));
        h.u64(11);
        assert_eq!(Fnv1a::of_words(b"12345678abc"), h.finish());
    }
}
