//! The driver's pending timers: ordered by due time, bounded, and
//! cancellable. A timer whose line (see [`TimerLine`]) was armed again
//! with a newer token is removed at once, since the node would ignore it
//! when it fired; so stale timers never pile up.
//!
//! Owns only the queue. Must never decide what a timer means (the core
//! says which timers a newer token makes stale), never read a clock, and
//! never hold more than [`MAX_TIMERS`] entries.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::core::{Time, Timer, TimerLine};

/// Most timers pending at once. At the bound a new timer is refused (and
/// the driver logs it): with stale timers cancelled, reaching it means a
/// leak in the core, not load.
pub const MAX_TIMERS: usize = 1_000_000;

/// Why a timer was not queued.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimerError {
    #[error("{MAX_TIMERS} timers already pending; refusing one more (a timer leak)")]
    Full,
}

/// A line's current token and the pending timers armed with it.
struct Line {
    token: u64,
    pending: BTreeSet<(Time, u64)>,
}

/// Pending timers, earliest first; ties in the order they were set.
#[derive(Default)]
pub struct TimerQueue {
    due: BTreeMap<(Time, u64), Timer>,
    lines: BTreeMap<TimerLine, Line>,
    seq: u64,
    cancelled: u64,
}

impl TimerQueue {
    /// Queues `timer`; first cancels every pending timer of its line armed
    /// with another token (stale: the node would ignore it).
    pub fn push(&mut self, timer: Timer) -> Result<(), TimerError> {
        let token = timer.token();
        if let Some((line, token)) = token {
            self.cancel_stale(line, token);
        }
        if self.due.len() >= MAX_TIMERS {
            return Err(TimerError::Full);
        }
        self.seq += 1;
        let key = (timer.at, self.seq);
        if let Some((line, token)) = token {
            self.lines
                .entry(line)
                .or_insert_with(|| Line { token, pending: BTreeSet::new() })
                .pending
                .insert(key);
        }
        self.due.insert(key, timer);
        debug_assert!(
            self.lines.values().map(|l| l.pending.len()).sum::<usize>() <= self.due.len()
        );
        Ok(())
    }

    fn cancel_stale(&mut self, line: TimerLine, token: u64) {
        let Some(current) = self.lines.get_mut(&line) else { return };
        if current.token == token {
            return;
        }
        current.token = token;
        for key in std::mem::take(&mut current.pending) {
            if self.due.remove(&key).is_some() {
                self.cancelled += 1;
            }
        }
    }

    /// The earliest due time, if any timer is pending.
    pub fn next_at(&self) -> Option<Time> {
        self.due.first_key_value().map(|((at, _), _)| *at)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Time) -> Option<Timer> {
        let entry = self.due.first_entry().filter(|e| e.key().0 <= now)?;
        let key = *entry.key();
        let timer = entry.remove();
        if let Some((line, _)) = timer.token()
            && let Some(l) = self.lines.get_mut(&line)
        {
            l.pending.remove(&key);
        }
        Some(timer)
    }

    /// Timers pending now.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Timers removed because a newer token of their line was armed.
    pub fn cancelled(&self) -> u64 {
        self.cancelled
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_first_and_only_when_due() {
        let mut q = TimerQueue::default();
        for (ms, token) in [(30, 1), (10, 1), (20, 1)] {
            q.push(Timer::test_rejoin(Duration::from_millis(ms), token)).unwrap();
        }
        assert_eq!(q.next_at(), Some(Duration::from_millis(10)));
        assert!(q.pop_due(Duration::from_millis(9)).is_none());
        let got: Vec<_> =
            std::iter::from_fn(|| q.pop_due(Duration::from_millis(25))).map(|t| t.at).collect();
        assert_eq!(got, [Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(q.len(), 1);
    }

    /// A re-armed line (rejoin, agent, foca after an identity change)
    /// leaves one live chain, not one stale timer per re-arm.
    #[test]
    fn stale_timers_do_not_pile_up() {
        let mut q = TimerQueue::default();
        for token in 0..10_000u64 {
            // Far in the future, as a slow rejoin or agent restart timer is.
            q.push(Timer::test_rejoin(Duration::from_secs(3_600 + token), token)).unwrap();
            q.push(Timer::test_swim_probe(Duration::from_secs(3_600), token as u8)).unwrap();
        }
        assert_eq!(q.len(), 2, "one live timer per line");
        assert_eq!(q.cancelled(), 2 * 9_999);
        // Same token twice: both live (the node re-arms its chain with it).
        q.push(Timer::test_rejoin(Duration::from_secs(1), 9_999)).unwrap();
        assert_eq!(q.len(), 3);
        // A popped timer leaves its line's pending set too.
        assert!(q.pop_due(Duration::from_secs(1)).is_some());
        q.push(Timer::test_rejoin(Duration::from_secs(2), 10_000)).unwrap();
        assert_eq!(q.len(), 2);
    }

    /// Timers that carry no token are never cancelled.
    #[test]
    fn untokened_timers_stay() {
        let mut q = TimerQueue::default();
        for i in 0..100 {
            q.push(Timer::test_housekeeping(Duration::from_millis(i))).unwrap();
        }
        assert_eq!(q.len(), 100);
        assert_eq!(q.cancelled(), 0);
    }
}
