//! Local health awareness, after Lifeguard (arXiv 1707.00788): a node that is
//! itself slow stretches its own probe and suspicion timeouts instead of
//! accusing healthy peers.
//!
//! Owns the local-health score. Must never look at the clock: the node tells
//! it how late each timer fired and when it had to refute a suspicion.
//!
//! foca has no nacks, so a failed probe is not a usable signal here (it also
//! fires for every probe of a peer that really died). We use the two signals
//! that only a slow node sees: its own timers firing late (its event loop was
//! starved or frozen), and having to refute a suspicion about itself.

use std::time::Duration;

/// The local-health score and what raises and lowers it.
#[derive(Debug, Clone)]
pub struct LocalHealth {
    /// 0 is healthy; each point stretches timeouts by one more multiple.
    score: u32,
    /// The score never goes above this; 0 turns the feature off.
    max_score: u32,
    /// Timers later than this count as a stall.
    late_threshold: Duration,
}

impl LocalHealth {
    pub fn new(max_score: u32, late_threshold: Duration) -> Self {
        LocalHealth { score: 0, max_score, late_threshold }
    }

    /// The current score, 0..=max.
    pub fn score(&self) -> u32 {
        self.score
    }

    /// A timer fired `lateness` after it was due. Returns whether this
    /// counted as a stall.
    pub fn on_timer_lateness(&mut self, lateness: Duration) -> bool {
        if lateness <= self.late_threshold {
            return false;
        }
        // A long freeze is worth more than one point: one per threshold.
        let points = (lateness.as_millis() / self.late_threshold.as_millis().max(1)).min(4) as u32;
        self.raise(points.max(1));
        true
    }

    /// This node had to refute a suspicion about itself.
    pub fn on_self_refuted(&mut self) {
        self.raise(1);
    }

    /// A probe period passed with no new sign of trouble.
    pub fn on_quiet_period(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    fn raise(&mut self, points: u32) {
        self.score = (self.score + points).min(self.max_score);
    }

    /// A timeout as this node should wait it now: `(1 + score) * base`.
    pub fn stretch(&self, base: Duration) -> Duration {
        base * (1 + self.score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn late_timers_raise_and_quiet_periods_lower() {
        let mut h = LocalHealth::new(8, 100 * MS);
        assert!(!h.on_timer_lateness(50 * MS));
        assert_eq!(h.score(), 0);
        assert!(h.on_timer_lateness(250 * MS));
        assert_eq!(h.score(), 2);
        assert_eq!(h.stretch(500 * MS), 1500 * MS);
        h.on_quiet_period();
        h.on_quiet_period();
        h.on_quiet_period();
        assert_eq!(h.score(), 0);
        assert_eq!(h.stretch(500 * MS), 500 * MS);
    }

    #[test]
    fn score_is_capped_and_zero_cap_disables() {
        let mut h = LocalHealth::new(3, 100 * MS);
        for _ in 0..10 {
            h.on_self_refuted();
        }
        assert_eq!(h.score(), 3);
        let mut off = LocalHealth::new(0, 100 * MS);
        off.on_timer_lateness(10 * 1000 * MS);
        assert_eq!(off.stretch(MS), MS);
    }
}
