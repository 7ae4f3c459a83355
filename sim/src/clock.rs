//! Per-node clocks: each simulated process sees its own monotonic clock that
//! starts at a random offset when the process starts and runs a little fast
//! or slow (rate drift in parts per million). This is the clock skew model.
//!
//! The node core uses no wall time at all, only `Time` since an origin its
//! driver picks; skew therefore shows up only as timers that fire a little
//! early or late against the global clock, and as durations that disagree
//! between nodes. Owns the conversion between global virtual time and a
//! node's local time. Must never make a node's local time run backwards.

use std::time::Duration;

use crate::queue::VTime;

/// Parts-per-million scale of the drift rate.
const PPM_SCALE: i128 = 1_000_000;

/// A node process's view of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeClock {
    /// Global time at which the process started.
    started_at: VTime,
    /// Local time the process reads at `started_at` (its origin offset).
    offset: Duration,
    /// How much faster (positive) or slower its clock runs, in ppm.
    drift_ppm: i32,
}

impl NodeClock {
    /// A clock for a process started at `started_at`. `drift_ppm` must be
    /// within ±100,000 (±10%).
    pub fn new(started_at: VTime, offset: Duration, drift_ppm: i32) -> Self {
        assert!(drift_ppm.abs() <= 100_000, "drift {drift_ppm} ppm is beyond ±10%");
        NodeClock { started_at, offset, drift_ppm }
    }

    /// A perfect clock started at the origin.
    pub fn perfect() -> Self {
        NodeClock::new(Duration::ZERO, Duration::ZERO, 0)
    }

    /// The local time this process reads at global time `global`.
    pub fn local(&self, global: VTime) -> Duration {
        let since = global.saturating_sub(self.started_at);
        if self.drift_ppm == 0 {
            return self.offset + since;
        }
        let since = since.as_nanos() as i128;
        let local = since * (PPM_SCALE + i128::from(self.drift_ppm)) / PPM_SCALE;
        self.offset + Duration::from_nanos(u64::try_from(local).unwrap_or(u64::MAX))
    }

    /// The earliest global time at which this process reads `local` or
    /// later (so a timer for local time `local` is never delivered early).
    pub fn global_at(&self, local: Duration) -> VTime {
        let Some(since_local) = local.checked_sub(self.offset) else {
            return self.started_at;
        };
        if self.drift_ppm == 0 {
            return self.started_at + since_local;
        }
        let num = since_local.as_nanos() as i128 * PPM_SCALE;
        let den = PPM_SCALE + i128::from(self.drift_ppm);
        let mut since = (num + den - 1) / den;
        let mut global = self.started_at + Duration::from_nanos(u64::try_from(since).unwrap_or(u64::MAX));
        while self.local(global) < local {
            since += 1;
            global = self.started_at + Duration::from_nanos(u64::try_from(since).unwrap_or(u64::MAX));
        }
        global
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn perfect_clock_is_identity() {
        let c = NodeClock::perfect();
        assert_eq!(c.local(1234 * MS), 1234 * MS);
        assert_eq!(c.global_at(1234 * MS), 1234 * MS);
    }

    #[test]
    fn drift_and_offset_round_trip_without_firing_early() {
        for drift in [-10_000, -1, 0, 3, 10_000] {
            let c = NodeClock::new(500 * MS, 3_600_000 * MS, drift);
            for g in [500 * MS, 501 * MS, 10_000 * MS, 123_456_789 * MS / 1000] {
                let l = c.local(g);
                let back = c.global_at(l);
                assert!(back <= g, "drift {drift}: {back:?} > {g:?}");
                assert!(c.local(back) >= l);
            }
        }
        let fast = NodeClock::new(Duration::ZERO, Duration::ZERO, 10_000);
        assert_eq!(fast.local(1000 * MS), 1010 * MS);
        assert_eq!(fast.global_at(1010 * MS), 1000 * MS);
    }
}
