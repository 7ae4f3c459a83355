//! Contact with the other managers: which of them answered one probe round
//! lately. The HA keeper and the provisioner act for a majority only when
//! a majority answered the same round, sent within [`CONTACT_WINDOW_MS`].
//! Being alive in SWIM's view is not enough: that view lags a cut by up
//! to the detection time. One round, not a sliding union of answers: under
//! a rolling partition a manager may hear from every other within a few
//! seconds without ever reaching a majority at once.
//!
//! Owns the last few probe rounds this node sent (their send times, on its
//! own clock, and who answered each). Must never count an answer to a
//! round it did not send, nor a round older than the window.

use std::collections::VecDeque;

use super::{CONTACT_WINDOW_MS, CONTROL_TICK_MS};
use crate::core::identity::NodeId;
use crate::core::time::Time;

/// Rounds remembered: every round the window can hold (one per control
/// tick), and one more. At the bound the oldest is forgotten.
pub const MAX_PROBE_ROUNDS: usize = (CONTACT_WINDOW_MS / CONTROL_TICK_MS) as usize + 2;
/// Answers remembered per round: more than any desired manager count. At
/// the bound further answers to that round are ignored.
pub const MAX_ANSWERS_PER_ROUND: usize = 64;

/// One probe round: when it was sent, and who answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Round {
    sent_ms: u64,
    answered: Vec<NodeId>,
}

/// The probe rounds of one manager.
#[derive(Debug, Default)]
pub struct Contact {
    rounds: VecDeque<Round>,
}

impl Contact {
    /// A round is sent now; returns its send time for the probes to carry.
    pub fn round_sent(&mut self, now: Time) -> u64 {
        let sent_ms = now.as_millis() as u64;
        if self.rounds.back().is_some_and(|r| r.sent_ms == sent_ms) {
            return sent_ms;
        }
        if self.rounds.len() == MAX_PROBE_ROUNDS {
            self.rounds.pop_front();
        }
        self.rounds.push_back(Round { sent_ms, answered: Vec::new() });
        sent_ms
    }

    /// `from` answered the round sent at `sent_ms`. An answer to a round
    /// not remembered (too old, or never sent) counts for nothing.
    pub fn answered(&mut self, from: NodeId, sent_ms: u64) -> bool {
        let Some(round) = self.rounds.iter_mut().find(|r| r.sent_ms == sent_ms) else {
            return false;
        };
        if round.answered.contains(&from) || round.answered.len() >= MAX_ANSWERS_PER_ROUND {
            return false;
        }
        round.answered.push(from);
        true
    }

    /// The managers in contact now: `me`, and the live managers (`live`,
    /// sorted) that answered the best round sent within the window (the
    /// one most of them answered; the newest among equals). Sorted.
    pub fn in_contact(&self, now: Time, me: NodeId, live: &[NodeId]) -> Vec<NodeId> {
        let oldest_ms = (now.as_millis() as u64).saturating_sub(CONTACT_WINDOW_MS);
        let counted = |r: &Round| {
            r.answered
                .iter()
                .copied()
                .filter(|id| *id != me && live.binary_search(id).is_ok())
                .collect::<Vec<NodeId>>()
        };
        let best = self
            .rounds
            .iter()
            .filter(|r| r.sent_ms >= oldest_ms)
            .map(|r| (counted(r), r.sent_ms))
            .max_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.1.cmp(&b.1)));
        let mut ids = best.map(|(ids, _)| ids).unwrap_or_default();
        ids.push(me);
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ME: NodeId = NodeId(1);
    const A: NodeId = NodeId(2);
    const B: NodeId = NodeId(3);

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    #[test]
    fn answers_to_one_round_count_and_age_out_with_the_window() {
        let mut c = Contact::default();
        let sent = c.round_sent(ms(10_000));
        assert!(c.answered(A, sent) && c.answered(B, sent));
        assert!(!c.answered(A, sent), "an answer counts once");
        assert_eq!(c.in_contact(ms(10_050), ME, &[ME, A, B]), vec![ME, A, B]);
        assert_eq!(c.in_contact(ms(10_050), ME, &[ME, A]), vec![ME, A], "only live managers count");
        assert_eq!(
            c.in_contact(ms(10_000 + CONTACT_WINDOW_MS + 1), ME, &[ME, A, B]),
            vec![ME],
            "too old"
        );
    }

    #[test]
    fn answers_to_different_rounds_are_not_added_up() {
        // A rolling cut: A answers one round, B the next, never both.
        let mut c = Contact::default();
        let first = c.round_sent(ms(1_000));
        c.answered(A, first);
        let second = c.round_sent(ms(2_000));
        c.answered(B, second);
        let seen = c.in_contact(ms(2_100), ME, &[ME, A, B]);
        assert_eq!(seen.len(), 2, "one of them, never both: {seen:?}");
        assert!(seen.contains(&B), "the newest among equals");
    }

    #[test]
    fn unknown_and_forgotten_rounds_count_for_nothing() {
        let mut c = Contact::default();
        assert!(!c.answered(A, 5), "never sent");
        let first = c.round_sent(ms(0));
        for i in 1..=MAX_PROBE_ROUNDS as u64 {
            c.round_sent(ms(i * CONTROL_TICK_MS));
        }
        assert!(!c.answered(A, first), "forgotten at the bound");
        assert_eq!(c.rounds.len(), MAX_PROBE_ROUNDS);
    }
}
