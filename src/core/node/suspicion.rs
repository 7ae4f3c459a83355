//! Lifeguard's dynamic suspicion (arXiv 1707.00788, section IV-B; what
//! memberlist's `suspicion.go` does): a suspicion this node raises starts
//! with a long timeout, `suspicion_max_mult` times `suspect_to_down_ms`, and
//! shrinks toward `suspect_to_down_ms` as other members independently
//! suspect the same member. One slow, starved or cut-off accuser can no
//! longer declare a healthy member down on its own within half a second; a
//! member that is really gone fails every prober's probe, so the
//! confirmations come within a few probe periods and it is declared down
//! nearly as fast as before.
//!
//! Suspicions heard from others before this node's own probe failed are
//! remembered (up to [`MAX_HEARD_SUSPICIONS`]) and count as confirmations
//! from the start: a later accuser, having heard the earlier ones, reaches
//! the configured timeout at once instead of waiting for gossip to carry
//! the others' notices back to the first accuser.
//!
//! A suspicion heard of also sets a **backstop**: only an accuser arms a
//! timer that declares the member down; everyone else waits for that
//! verdict's gossip, and a member that missed all of it (about 3 % of
//! crashes at 100 members in the simulator, each copy of the verdict being
//! sent a bounded number of times) held the member suspect until its own
//! round-robin probe reached it: 17 to 44 s. When a backstop falls due
//! and the member is still suspect at that incarnation, the node probes it
//! out of turn (foca patch 13): no answer makes this node an accuser too,
//! an answer refutes the suspicion here.
//!
//! Owns the table of this node's own open suspicions and who confirmed each,
//! the suspicions heard of and their backstops. Must never look at the clock (it is told
//! `now`), never hold more than [`MAX_OPEN_SUSPICIONS`] open and
//! [`MAX_HEARD_SUSPICIONS`] heard entries and backstops or more than the expected number
//! of confirmers per entry, and never declare anyone down itself: it only says
//! when foca's own `ChangeSuspectToDown` timer is to be delivered (foca then
//! checks that the member is still suspect at that incarnation).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::core::identity::{Identity, NodeId};
use crate::core::io::Time;

/// Most suspicions this node keeps open at once. Past it a new suspicion
/// gets plain SWIM's fixed timeout (as if the feature were off), so the
/// table never grows with a storm of failures.
pub const MAX_OPEN_SUSPICIONS: usize = 1_024;
/// Most suspicions heard of (others' accusations of members this node does
/// not suspect itself) kept for a later suspicion of its own; past it the
/// oldest is forgotten (a later suspicion of that member starts with fewer
/// confirmations, so waits longer: never shorter).
pub const MAX_HEARD_SUSPICIONS: usize = 1_024;

/// Which suspicion: the member's id and generation, and the incarnation
/// it was suspected at (a refutation raises the incarnation, so a refuted
/// suspicion never matches a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SuspicionKey {
    pub id: NodeId,
    pub generation: u64,
    pub incarnation: u16,
}

impl SuspicionKey {
    /// The key of foca's `ChangeSuspectToDown` timer, if `event` is one.
    pub fn of_timer(event: &foca::Timer<Identity>) -> Option<SuspicionKey> {
        match event {
            foca::Timer::ChangeSuspectToDown { member_id, incarnation, .. } => Some(SuspicionKey {
                id: member_id.id,
                generation: member_id.generation,
                incarnation: *incarnation,
            }),
            _ => None,
        }
    }
}

/// How long after first hearing of a suspicion its backstop falls due, as a
/// multiple of the longest suspicion (`suspicion_max_mult` times
/// `suspect_to_down_ms`): by then an accuser's verdict has normally reached
/// this node by gossip, so only a member that missed it probes the suspect.
pub const BACKSTOP_MULT: u32 = 2;

/// One suspicion this node raised (its own probe of the member failed).
struct Open {
    /// foca's timer, delivered when the suspicion is due.
    event: foca::Timer<Identity>,
    started: Time,
    /// The timeout with every expected confirmation (the configured one).
    min: Duration,
    /// The timeout with none.
    max: Duration,
    /// Confirmations that bring the timeout down to `min` (at least 1).
    expected: u32,
    /// Members other than this node that suspected it too, at most
    /// `expected` of them, each once.
    confirmers: Vec<NodeId>,
    /// When it is due now; only ever moves earlier.
    due: Time,
}

impl Open {
    /// Lifeguard's timeout after `confirmed` confirmations:
    /// max - (max - min) * log(c + 1) / log(k + 1), never below min.
    fn timeout(&self) -> Duration {
        let c = self.confirmers.len() as f64;
        let k = f64::from(self.expected);
        let frac = (c + 1.0).ln() / (k + 1.0).ln();
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let raw = self.max.as_secs_f64() - frac * span;
        Duration::from_secs_f64(raw.max(0.0)).max(self.min)
    }

    /// When it is due as of `now`: its timeout from its start, never
    /// before `now` (a time that has passed is due at once; foca's timer
    /// must never be armed in the past). The one rule for every due time
    /// handed out.
    fn due_at(&self, now: Time) -> Time {
        (self.started + self.timeout()).max(now)
    }
}

/// What [`Suspicions::start`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Plain SWIM: deliver foca's timer after the given timeout.
    Plain(Duration),
    /// Dynamic: deliver it at this time unless confirmations bring it
    /// earlier, and tell the cluster that this node suspects the member.
    Dynamic(Time),
}

/// This node's open suspicions.
pub struct Suspicions {
    open: BTreeMap<SuspicionKey, Open>,
    /// Accusers heard of, per suspicion not open here (at most the
    /// expected count each), and the order they were first heard in.
    heard: BTreeMap<SuspicionKey, Vec<NodeId>>,
    heard_order: VecDeque<SuspicionKey>,
    /// Suspicions heard of, in the order their backstops fall due (a
    /// constant delay after first hearing), at most
    /// [`MAX_HEARD_SUSPICIONS`]; past it a new one gets none.
    backstops: VecDeque<(Time, SuspicionKey)>,
    /// When a heard suspicion's backstop falls due, after first hearing.
    backstop_after: Duration,
    /// The longest timeout as a multiple of the configured one (1 turns
    /// the feature off).
    max_mult: u32,
    /// Confirmations that bring a suspicion down to the configured timeout
    /// (0 turns the feature off).
    confirmations: u32,
}

impl Suspicions {
    /// `suspect_to_down` is the configured (shortest) suspicion timeout.
    pub fn new(max_mult: u32, confirmations: u32, suspect_to_down: Duration) -> Suspicions {
        Suspicions {
            backstop_after: suspect_to_down.saturating_mul(max_mult.max(1) * BACKSTOP_MULT),
            open: BTreeMap::new(),
            heard: BTreeMap::new(),
            heard_order: VecDeque::new(),
            backstops: VecDeque::new(),
            max_mult,
            confirmations,
        }
    }

    /// How many suspicions are open (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }

    /// foca asked for its down timer `event` after `min` (already stretched
    /// by local health) in a cluster of `members` (this node included).
    /// As memberlist: when fewer than `confirmations` other members could
    /// confirm (members - 2, without the accuser and the suspect), or the
    /// feature is off, or the table is full, plain SWIM's timeout.
    pub fn start(
        &mut self,
        now: Time,
        event: foca::Timer<Identity>,
        min: Duration,
        members: usize,
    ) -> Start {
        let Some(key) = SuspicionKey::of_timer(&event) else { return Start::Plain(min) };
        let expected = self.confirmations;
        let could_confirm = members.saturating_sub(2);
        if self.max_mult <= 1 || expected == 0 || could_confirm < expected as usize {
            return Start::Plain(min);
        }
        if let Some(open) = self.open.get_mut(&key) {
            // foca asks again when a probe fails on a member it already
            // suspects: keep the first start and its confirmations (due
            // now if that time has passed: its timer is on its way).
            open.event = event;
            return Start::Dynamic(open.due_at(now));
        }
        if self.open.len() >= MAX_OPEN_SUSPICIONS {
            return Start::Plain(min);
        }
        let max = min.saturating_mul(self.max_mult);
        let mut confirmers = self.take_heard(&key);
        confirmers.truncate(expected as usize);
        let mut open = Open { event, started: now, min, max, expected, confirmers, due: now };
        open.due = open.due_at(now);
        let due = open.due;
        self.open.insert(key, open);
        assert!(self.open.len() <= MAX_OPEN_SUSPICIONS);
        Start::Dynamic(due)
    }

    /// Member `by` suspects `key` too, heard at `now`. When that brings
    /// this node's own suspicion due earlier, returns foca's timer and the
    /// new due time, never before `now` (a confirmation heard after the
    /// shorter wait had passed makes it due at once; the timer armed
    /// before fires later and finds it closed). A confirmation from this
    /// node, a repeat, one past the expected count, or one for a suspicion
    /// not open here changes nothing.
    pub fn confirm(
        &mut self,
        now: Time,
        key: SuspicionKey,
        by: NodeId,
        me: NodeId,
    ) -> Option<(foca::Timer<Identity>, Time)> {
        if by == me || by == key.id {
            return None;
        }
        let Some(open) = self.open.get_mut(&key) else {
            self.hear(now, key, by);
            return None;
        };
        if open.confirmers.len() >= open.expected as usize || open.confirmers.contains(&by) {
            return None;
        }
        open.confirmers.push(by);
        let due = open.due_at(now);
        if due >= open.due {
            return None;
        }
        open.due = due;
        Some((open.event.clone(), due))
    }

    /// Remembers that `by` accuses `key`, for a suspicion of this node's
    /// own that may start later (bounded, oldest forgotten first), and sets
    /// the key's backstop the first time it is heard of.
    fn hear(&mut self, now: Time, key: SuspicionKey, by: NodeId) {
        if self.confirmations == 0 || self.max_mult <= 1 {
            return;
        }
        let expected = self.confirmations as usize;
        if let Some(accusers) = self.heard.get_mut(&key) {
            if accusers.len() < expected && !accusers.contains(&by) {
                accusers.push(by);
            }
            return;
        }
        if self.heard.len() >= MAX_HEARD_SUSPICIONS {
            let oldest = self.heard_order.pop_front().expect("the order holds every heard key");
            self.heard.remove(&oldest);
        }
        self.heard.insert(key, vec![by]);
        self.heard_order.push_back(key);
        if self.backstops.len() < MAX_HEARD_SUSPICIONS {
            self.backstops.push_back((now + self.backstop_after, key));
        }
        assert!(self.heard.len() <= MAX_HEARD_SUSPICIONS);
        assert_eq!(self.heard.len(), self.heard_order.len());
    }

    /// The accusers heard of for `key`, forgotten here (a suspicion of this
    /// node's own starts with them). Walks the order (at most
    /// `MAX_HEARD_SUSPICIONS` keys) only when there was something to take,
    /// once per suspicion this node raises.
    fn take_heard(&mut self, key: &SuspicionKey) -> Vec<NodeId> {
        let Some(accusers) = self.heard.remove(key) else { return Vec::new() };
        self.heard_order.retain(|k| k != key);
        assert_eq!(self.heard.len(), self.heard_order.len());
        accusers
    }

    /// foca's down timer `event` fired at `now`: whether to hand it to
    /// foca. A suspicion that is due is closed and handed over. One not due
    /// yet is kept and the timer refused (not expected: every timer armed
    /// for it is at a due time, and due only moves earlier). A timer for no
    /// open suspicion (plain, or a later copy of one already handed over)
    /// goes to foca, which ignores it unless the member is still suspect.
    pub fn fire(&mut self, now: Time, event: &foca::Timer<Identity>) -> bool {
        let Some(key) = SuspicionKey::of_timer(event) else { return true };
        match self.open.get(&key) {
            Some(open) if now < open.due => false,
            Some(_) => {
                self.open.remove(&key);
                true
            }
            None => true,
        }
    }

    /// The heard suspicions whose backstops are due at `now`, oldest
    /// first; each is handed out once. The caller probes those foca still
    /// holds suspect at that incarnation (not those this node accuses
    /// itself: it has its own down timer).
    pub fn due_backstops(&mut self, now: Time) -> Vec<SuspicionKey> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.backstops.front() {
            if at > now {
                break;
            }
            self.backstops.pop_front();
            if !self.open.contains_key(&key) {
                due.push(key);
            }
        }
        due
    }

    /// How many members confirmed `key` (tests).
    #[cfg(test)]
    pub fn confirmed(&self, key: &SuspicionKey) -> Option<usize> {
        self.open.get(key).map(|o| o.confirmers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn member(n: u64) -> Identity {
        crate::core::identity::test_member(n, crate::core::identity::Role::Agent)
    }

    fn down_timer(n: u64, incarnation: u16) -> foca::Timer<Identity> {
        foca::Timer::ChangeSuspectToDown { member_id: member(n), incarnation, token: 0 }
    }

    /// A time before every suspicion the tests start (confirmations heard
    /// while the shortened wait has not passed).
    const T0: Duration = Duration::ZERO;

    fn key(n: u64, incarnation: u16) -> SuspicionKey {
        SuspicionKey::of_timer(&down_timer(n, incarnation)).unwrap()
    }

    #[test]
    fn a_lone_accuser_waits_the_longest_and_confirmations_bring_it_to_the_configured_timeout() {
        let mut s = Suspicions::new(6, 2, Duration::from_millis(500));
        let t0 = Duration::from_secs(10);
        let start = s.start(t0, down_timer(9, 3), 500 * MS, 100);
        assert_eq!(start, Start::Dynamic(t0 + 3_000 * MS), "unconfirmed: 6 x 500 ms");
        let me = NodeId(1);
        // One confirmation: 3 - 2.5 * ln 2 / ln 3 = 1.4227 s.
        let (event, due) = s.confirm(T0, key(9, 3), NodeId(2), me).expect("earlier");
        assert_eq!(event, down_timer(9, 3));
        let one = due - t0;
        assert!(one > 1_420 * MS && one < 1_425 * MS, "{one:?}");
        assert_eq!(s.confirm(T0, key(9, 3), NodeId(2), me), None, "a repeat counts once");
        assert_eq!(s.confirm(T0, key(9, 3), me, me), None, "this node cannot confirm itself");
        assert_eq!(s.confirm(T0, key(9, 3), NodeId(9), me), None, "nor the suspect");
        assert_eq!(
            s.confirm(T0, key(9, 4), NodeId(3), me),
            None,
            "another incarnation is not open"
        );
        let (_, due) = s.confirm(T0, key(9, 3), NodeId(3), me).expect("earlier");
        assert_eq!(due, t0 + 500 * MS, "two confirmations: the configured timeout");
        assert_eq!(s.confirm(T0, key(9, 3), NodeId(4), me), None, "past the expected count");
        assert_eq!(s.confirmed(&key(9, 3)), Some(2));
        // The early timer hands it over and closes it; the first one, at
        // 3 s, then goes to foca too (which ignores a member already down).
        assert!(s.fire(t0 + 500 * MS, &down_timer(9, 3)));
        assert_eq!(s.len(), 0);
        assert!(s.fire(t0 + 3_000 * MS, &down_timer(9, 3)));
    }

    /// A confirmation heard after the shortened wait had passed makes the
    /// suspicion due now: its timer is never armed in the past (the debug
    /// builds' timer assertion fired in the simulator's tests).
    #[test]
    fn a_late_confirmation_is_due_now_not_in_the_past() {
        let mut s = Suspicions::new(3, 1, Duration::from_millis(500));
        let t0 = Duration::from_secs(10);
        assert_eq!(s.start(t0, down_timer(4, 0), 500 * MS, 10), Start::Dynamic(t0 + 1_500 * MS));
        let late = t0 + 800 * MS;
        let (_, due) = s.confirm(late, key(4, 0), NodeId(2), NodeId(1)).expect("earlier");
        assert_eq!(due, late, "due at once, not at {:?}", t0 + 500 * MS);
        assert!(s.fire(late, &down_timer(4, 0)));
    }

    #[test]
    fn small_clusters_and_a_feature_turned_off_keep_plain_swim() {
        let t0 = Duration::from_secs(1);
        // 3 members: only one other could confirm, fewer than 2.
        let mut s = Suspicions::new(6, 2, Duration::from_millis(500));
        assert_eq!(s.start(t0, down_timer(2, 0), 500 * MS, 3), Start::Plain(500 * MS));
        assert_eq!(s.start(t0, down_timer(2, 0), 500 * MS, 4), Start::Dynamic(t0 + 3_000 * MS));
        for (mult, k) in [(1, 2), (6, 0)] {
            let mut off = Suspicions::new(mult, k, Duration::from_millis(500));
            assert_eq!(off.start(t0, down_timer(2, 0), 500 * MS, 1_000), Start::Plain(500 * MS));
            assert_eq!(off.len(), 0);
        }
    }

    #[test]
    fn a_repeated_start_keeps_its_confirmations_and_a_suspicion_not_due_is_kept() {
        let mut s = Suspicions::new(4, 3, Duration::from_millis(500));
        let t0 = Duration::from_secs(5);
        assert_eq!(s.start(t0, down_timer(7, 1), 100 * MS, 50), Start::Dynamic(t0 + 400 * MS));
        let (_, due) = s.confirm(T0, key(7, 1), NodeId(3), NodeId(1)).unwrap();
        assert_eq!(s.start(t0 + 200 * MS, down_timer(7, 1), 100 * MS, 50), Start::Dynamic(due));
        assert_eq!(s.confirmed(&key(7, 1)), Some(1));
        assert!(!s.fire(due - MS, &down_timer(7, 1)), "not due yet");
        // foca asking again once the due time has passed (its timer not yet
        // delivered) gets now, never a time in the past (CI's debug build
        // caught it in tests/partition.rs).
        let late = due + 50 * MS;
        assert_eq!(s.start(late, down_timer(7, 1), 100 * MS, 50), Start::Dynamic(late));
        assert!(s.fire(due, &down_timer(7, 1)));
    }

    #[test]
    fn a_heard_suspicion_falls_due_once_after_the_backstop_unless_accused_here() {
        // Longest suspicion 3 x 500 ms; the backstop twice that.
        let mut s = Suspicions::new(3, 2, Duration::from_millis(500));
        let me = NodeId(1);
        let after = 3_000 * MS;
        assert_eq!(s.confirm(T0, key(9, 3), NodeId(2), me), None, "heard");
        assert_eq!(s.confirm(T0 + MS, key(9, 3), NodeId(3), me), None, "heard again");
        assert_eq!(s.confirm(T0 + 2 * MS, key(8, 0), NodeId(2), me), None, "another");
        assert!(s.due_backstops(T0 + after - MS).is_empty(), "not due yet");
        assert_eq!(s.due_backstops(T0 + after), vec![key(9, 3)], "once, at its first hearing");
        assert_eq!(s.due_backstops(T0 + 2 * after), vec![key(8, 0)]);
        assert!(s.due_backstops(T0 + 3 * after).is_empty(), "each handed out once");
        // Heard, then accused here too: this node has its own down timer.
        assert_eq!(s.confirm(T0, key(7, 0), NodeId(2), me), None);
        let t = T0 + 10 * MS;
        assert!(matches!(s.start(t, down_timer(7, 0), 500 * MS, 50), Start::Dynamic(_)));
        assert!(s.due_backstops(T0 + after).is_empty(), "an accuser needs no backstop");
        // Bounded: past the heard bound a new suspicion gets no backstop.
        let mut full = Suspicions::new(3, 2, Duration::from_millis(500));
        for n in 0..(MAX_HEARD_SUSPICIONS as u64 + 10) {
            full.confirm(T0, key(100 + n, 0), NodeId(2), me);
        }
        assert_eq!(full.due_backstops(T0 + after).len(), MAX_HEARD_SUSPICIONS);
    }

    #[test]
    fn accusers_heard_before_this_node_suspects_count_from_the_start() {
        let mut s = Suspicions::new(6, 2, Duration::from_millis(500));
        let me = NodeId(1);
        assert_eq!(s.confirm(T0, key(9, 3), NodeId(2), me), None, "heard, not open");
        assert_eq!(s.confirm(T0, key(9, 3), NodeId(3), me), None);
        assert_eq!(s.confirm(T0, key(9, 3), NodeId(3), me), None);
        let t0 = Duration::from_secs(20);
        // Both heard: the configured timeout at once.
        assert_eq!(s.start(t0, down_timer(9, 3), 500 * MS, 100), Start::Dynamic(t0 + 500 * MS));
        assert_eq!(s.confirmed(&key(9, 3)), Some(2));
        // Another incarnation heard nothing: the longest.
        assert_eq!(s.start(t0, down_timer(9, 4), 500 * MS, 100), Start::Dynamic(t0 + 3_000 * MS));
        // The heard table is bounded.
        for n in 0..(MAX_HEARD_SUSPICIONS as u64 * 3) {
            s.confirm(T0, key(n + 100, 0), NodeId(2), me);
        }
        assert_eq!(s.heard.len(), MAX_HEARD_SUSPICIONS);
        assert_eq!(
            s.heard_order.len(),
            MAX_HEARD_SUSPICIONS,
            "the order holds exactly the heard keys"
        );
    }

    #[test]
    fn the_table_is_bounded_and_falls_back_to_plain_swim_when_full() {
        let mut s = Suspicions::new(6, 2, Duration::from_millis(500));
        let t0 = Duration::from_secs(1);
        for n in 0..MAX_OPEN_SUSPICIONS as u64 {
            assert!(matches!(
                s.start(t0, down_timer(n + 10, 0), 500 * MS, 5_000),
                Start::Dynamic(_)
            ));
        }
        assert_eq!(s.len(), MAX_OPEN_SUSPICIONS);
        assert_eq!(s.start(t0, down_timer(u64::MAX, 0), 500 * MS, 5_000), Start::Plain(500 * MS));
        assert_eq!(s.len(), MAX_OPEN_SUSPICIONS);
    }
}
