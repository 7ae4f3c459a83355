//! The virtual clock and its event queue: events ordered by (time, sequence
//! number), popped in that order, with the clock jumping straight to each
//! event's time. Nothing ticks.
//!
//! Owns global virtual time. Must never read a real clock, and must never
//! order two events by anything but their time and the order they were
//! pushed (ties are broken by the sequence number, never by the payload).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Virtual time since the start of a run (the simulation's origin is 0).
pub type VTime = Duration;

/// Most events the queue holds. Pushing past the bound is refused and the
/// caller decides: datagrams are dropped and counted (a full network
/// buffer), while timers and faults are few per node and never reach it.
pub const MAX_QUEUED_EVENTS: usize = 4_000_000;

/// The queue was at [`MAX_QUEUED_EVENTS`]; the event was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A min-queue of events by (time, push order), and the current time.
///
/// The heap holds only small keys (time, sequence number, slab index); the
/// payloads sit in a slab, so sifting moves 24 bytes, never a payload.
pub struct EventQueue<T> {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<T>>,
    free: Vec<u32>,
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

impl<T> EventQueue<T> {
    /// A queue refusing pushes once it holds `capacity` events.
    pub fn with_capacity_bound(capacity: usize) -> Self {
        assert!(capacity <= u32::MAX as usize, "slab indexes are u32");
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
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
        if self.heap.len() >= self.capacity {
            return Err(QueueFull);
        }
        let at = at.max(self.now);
        let index = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(item);
                i
            }
            None => {
                self.slab.push(Some(item));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((nanos(at), self.next_seq, index)));
        self.next_seq += 1;
        Ok(())
    }

    /// The time of the next event, if any.
    pub fn peek_time(&self) -> Option<VTime> {
        self.heap.peek().map(|Reverse((at, _, _))| Duration::from_nanos(*at))
    }

    /// Pops the next event and moves the clock to its time.
    pub fn pop(&mut self) -> Option<(VTime, T)> {
        let Reverse((at, _, index)) = self.heap.pop()?;
        let at = Duration::from_nanos(at);
        debug_assert!(at >= self.now, "virtual time ran backwards");
        self.now = at;
        let item = self.slab[index as usize].take().expect("queued slab entry is filled");
        self.free.push(index);
        Some((at, item))
    }

    /// Moves the clock forward to `at` with no event (phase changes and
    /// checker ticks). Never moves it backwards.
    pub fn advance_to(&mut self, at: VTime) {
        self.now = self.now.max(at);
    }

    /// How many events are waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
