//! The virtual clock and its event queue: events ordered by (time, sequence
//! number), popped in that order, with the clock jumping straight to each
//! event's time. Nothing ticks.
//!
//! Owns global virtual time. Must never read a real clock, and must never
//! order two events by anything but their time and the order they were
//! pushed (ties are broken by the sequence number, never by the payload).
//!
//! The queue is a timing wheel: nearly every event is due within a few
//! seconds (datagrams in milliseconds, timers within a probe period or a
//! rejoin backoff), so it goes into a bucket of `BUCKET_NANOS_LOG2` width
//! on a ring spanning `WHEEL_SPAN`, and only the rare later one into a
//! binary heap. Pushing is O(1); popping finds the first occupied bucket
//! through a bitmap and takes the least key in it (a bucket holds a few
//! events). The order is exactly that of one heap keyed by (time, seq).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Virtual time since the start of a run (the simulation's origin is 0).
pub type VTime = Duration;

/// Most events the queue holds. Pushing past the bound is refused and the
/// caller decides: datagrams are dropped and counted (a full network
/// buffer), while timers and faults are few per node and never reach it.
pub const MAX_QUEUED_EVENTS: usize = 4_000_000;

/// A bucket spans 2^18 ns (about 262 µs) of virtual time.
const BUCKET_NANOS_LOG2: u32 = 18;
/// Buckets on the ring (a power of two): with the width above, the ring
/// spans about 8.6 s of virtual time.
const WHEEL_BUCKETS: usize = 1 << 15;
/// How far ahead of the wheel's cursor an event may be to go on the ring.
pub const WHEEL_SPAN: Duration = Duration::from_nanos((WHEEL_BUCKETS as u64) << BUCKET_NANOS_LOG2);
/// Words of the occupancy bitmap.
const BITMAP_WORDS: usize = WHEEL_BUCKETS / 64;
/// Marks the end of a bucket's list, and an empty bucket.
const NIL: u32 = u32::MAX;
/// Sequence numbers take the low 64 bits of a key: far more than any run
/// pushes.
const SEQ_BITS: u32 = 64;

/// The queue was at [`MAX_QUEUED_EVENTS`]; the event was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// One queued event: its key (time in ns, then sequence number) and the
/// next entry of its bucket's list.
struct Entry<T> {
    key: u128,
    next: u32,
    item: Option<T>,
}

/// Where the next event to pop sits: in ring bucket `bucket` at slab index
/// `index`, `prev` being the entry before it in the bucket's list (`NIL`
/// at the head); or on top of the overflow heap (`bucket` is `NIL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Next {
    key: u128,
    bucket: u32,
    index: u32,
    prev: u32,
}

/// A min-queue of events by (time, push order), and the current time.
pub struct EventQueue<T> {
    /// Entries, their payloads and list links; freed slots are reused.
    slab: Vec<Entry<T>>,
    free: Vec<u32>,
    /// Head of each bucket's list of slab indexes (`NIL` if empty).
    heads: Vec<u32>,
    /// One bit per bucket: set when its list is non-empty.
    occupied: Vec<u64>,
    /// Events due at or past the ring's end when pushed: (key, index).
    overflow: BinaryHeap<Reverse<(u128, u32)>>,
    /// The absolute bucket number (time >> BUCKET_NANOS_LOG2) of the
    /// cursor. Every event on the ring is in [cursor, cursor + buckets).
    cursor: u64,
    /// The next event to pop, once found (cleared when a push may precede
    /// it).
    next: Option<Next>,
    len: usize,
    next_seq: u64,
    now: VTime,
    capacity: usize,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        Self::with_capacity_bound(MAX_QUEUED_EVENTS)
    }
}

fn nanos(t: VTime) -> u64 {
    u64::try_from(t.as_nanos()).expect("virtual time beyond 584 years")
}

fn key_time(key: u128) -> VTime {
    Duration::from_nanos((key >> SEQ_BITS) as u64)
}

fn bucket_of(key: u128) -> u64 {
    ((key >> SEQ_BITS) as u64) >> BUCKET_NANOS_LOG2
}

impl<T> EventQueue<T> {
    /// A queue refusing pushes once it holds `capacity` events.
    pub fn with_capacity_bound(capacity: usize) -> Self {
        assert!(capacity < NIL as usize, "slab indexes are u32, NIL excluded");
        EventQueue {
            slab: Vec::new(),
            free: Vec::new(),
            heads: vec![NIL; WHEEL_BUCKETS],
            occupied: vec![0; BITMAP_WORDS],
            overflow: BinaryHeap::new(),
            cursor: 0,
            next: None,
            len: 0,
            next_seq: 0,
            now: Duration::ZERO,
            capacity,
        }
    }

    /// The current virtual time: the time of the last event popped.
    pub fn now(&self) -> VTime {
        self.now
    }

    /// Schedules `item` at `at`; a time in the past is clamped to now, so
    /// time never runs backwards.
    pub fn push(&mut self, at: VTime, item: T) -> Result<(), QueueFull> {
        if self.len >= self.capacity {
            return Err(QueueFull);
        }
        let key = (u128::from(nanos(at.max(self.now))) << SEQ_BITS) | u128::from(self.next_seq);
        self.next_seq += 1;
        self.len += 1;
        let entry = Entry { key, next: NIL, item: Some(item) };
        let index = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = entry;
                i
            }
            None => {
                self.slab.push(entry);
                (self.slab.len() - 1) as u32
            }
        };
        let bucket = bucket_of(key);
        if bucket - self.cursor < WHEEL_BUCKETS as u64 {
            let pos = (bucket as usize) & (WHEEL_BUCKETS - 1);
            self.slab[index as usize].next = self.heads[pos];
            self.heads[pos] = index;
            self.occupied[pos / 64] |= 1 << (pos % 64);
            // The found entry's list link may have changed (a new head).
            if self.next.is_some_and(|n| n.bucket == pos as u32) {
                self.next = None;
            }
        } else {
            self.overflow.push(Reverse((key, index)));
        }
        // A later event never displaces the one found next.
        if self.next.is_some_and(|n| key < n.key) {
            self.next = None;
        }
        Ok(())
    }

    /// The ring position of the first occupied bucket at or after the
    /// cursor, in ring order (which is time order).
    fn first_occupied(&self) -> Option<usize> {
        let start = (self.cursor as usize) & (WHEEL_BUCKETS - 1);
        let (first_word, first_bit) = (start / 64, start % 64);
        let bits = self.occupied[first_word] & (u64::MAX << first_bit);
        if bits != 0 {
            return Some(first_word * 64 + bits.trailing_zeros() as usize);
        }
        for step in 1..=BITMAP_WORDS {
            let w = (first_word + step) & (BITMAP_WORDS - 1);
            let mut bits = self.occupied[w];
            if step == BITMAP_WORDS {
                bits &= !(u64::MAX << first_bit);
            }
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
        }
        None
    }

    /// The least entry of ring bucket `pos` (which is occupied).
    fn least_in(&self, pos: usize) -> Next {
        let head = self.heads[pos];
        let mut best = Next { key: self.slab[head as usize].key, bucket: pos as u32, index: head, prev: NIL };
        let (mut prev, mut at) = (head, self.slab[head as usize].next);
        while at != NIL {
            let e = &self.slab[at as usize];
            if e.key < best.key {
                (best.key, best.index, best.prev) = (e.key, at, prev);
            }
            (prev, at) = (at, e.next);
        }
        best
    }

    /// Finds the next event (and remembers it until a push precedes it).
    fn find_next(&mut self) -> Option<Next> {
        if self.next.is_some() {
            return self.next;
        }
        let wheel = self.first_occupied().map(|pos| self.least_in(pos));
        let over =
            self.overflow.peek().map(|Reverse((key, index))| Next { key: *key, bucket: NIL, index: *index, prev: NIL });
        self.next = match (wheel, over) {
            (Some(w), Some(o)) => Some(if o.key < w.key { o } else { w }),
            (w, o) => w.or(o),
        };
        self.next
    }

    /// The time of the next event, if any.
    pub fn peek_time(&mut self) -> Option<VTime> {
        self.find_next().map(|n| key_time(n.key))
    }

    /// Pops the next event and moves the clock to its time.
    pub fn pop(&mut self) -> Option<(VTime, T)> {
        let Next { key, bucket, index, prev } = self.find_next()?;
        self.next = None;
        if bucket == NIL {
            self.overflow.pop();
        } else {
            let bucket = bucket as usize;
            let after = self.slab[index as usize].next;
            if prev == NIL {
                self.heads[bucket] = after;
            } else {
                self.slab[prev as usize].next = after;
            }
            if self.heads[bucket] == NIL {
                self.occupied[bucket / 64] &= !(1 << (bucket % 64));
            }
        }
        let time = key_time(key);
        debug_assert!(time >= self.now, "virtual time ran backwards");
        self.now = time;
        // Every event left is at or after this one, so the ring still
        // holds only buckets within the span from the new cursor.
        self.cursor = self.cursor.max(bucket_of(key));
        self.len -= 1;
        self.free.push(index);
        let item = self.slab[index as usize].item.take().expect("queued slab entry is filled");
        Some((time, item))
    }

    /// Moves the clock forward to `at` with no event (phase changes and
    /// checker ticks). Never moves it backwards.
    pub fn advance_to(&mut self, at: VTime) {
        self.now = self.now.max(at);
    }

    /// How many events are waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pops_by_time_then_push_order() {
        let mut q = EventQueue::default();
        q.push(5 * MS, "c").unwrap();
        q.push(1 * MS, "a").unwrap();
        q.push(5 * MS, "d").unwrap();
        q.push(1 * MS, "b").unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, x)| x).collect();
        assert_eq!(order, vec!["a", "b", "c", "d"]);
        assert_eq!(q.now(), 5 * MS);
    }

    #[test]
    fn past_times_are_clamped_and_the_bound_refuses() {
        let mut q = EventQueue::with_capacity_bound(2);
        q.push(10 * MS, 1).unwrap();
        q.pop();
        q.push(3 * MS, 2).unwrap();
        assert_eq!(q.peek_time(), Some(10 * MS));
        q.push(20 * MS, 3).unwrap();
        assert_eq!(q.push(30 * MS, 4), Err(QueueFull));
    }

    /// The wheel pops exactly what one heap of (time, seq) pops, with
    /// events near, on and far past the ring's span, pushed while popping.
    #[test]
    fn matches_a_plain_heap_across_the_span() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut q = EventQueue::default();
        let mut reference = BinaryHeap::new();
        let mut seq = 0u64;
        let span = nanos(WHEEL_SPAN);
        for round in 0..200_000u64 {
            if rng.random_range(0..3) > 0 || reference.is_empty() {
                let ahead = match rng.random_range(0..10) {
                    0 => rng.random_range(0..3 * span),
                    1 => span - 1 + rng.random_range(0..3),
                    2 => 0,
                    _ => rng.random_range(0..2_000_000),
                };
                let at = q.now() + Duration::from_nanos(ahead);
                if rng.random_range(0..2) == 0 {
                    // A peek caches the next event; the push must not break it.
                    q.peek_time();
                }
                q.push(at, round).unwrap();
                reference.push(Reverse((at, seq, round)));
                seq += 1;
            } else {
                let Reverse((at, _, item)) = reference.pop().unwrap();
                assert_eq!(q.peek_time(), Some(at));
                assert_eq!(q.pop(), Some((at, item)));
            }
            if rng.random_range(0..1000) == 0 {
                let to = q.now() + Duration::from_nanos(rng.random_range(0..span));
                if q.peek_time().is_none_or(|t| t >= to) {
                    q.advance_to(to);
                }
            }
        }
        while let Some(Reverse((at, _, item))) = reference.pop() {
            assert_eq!(q.pop(), Some((at, item)));
        }
        assert!(q.is_empty() && q.pop().is_none());
    }
}
