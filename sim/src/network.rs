//! The network model: per-message loss, latency with a long tail,
//! duplication, reordering, clogged paths and partitions (symmetric,
//! one-way, isolate-one, halves and a rolling swizzle).
//!
//! Owns the state of every path between node slots. Must never deliver
//! anything itself (it only answers "when, if ever, does this message
//! arrive"), and must never draw randomness from anywhere but the rng it is
//! handed. Paths are directed: `from -> to`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::queue::VTime;

/// Most clogged paths at once; at the bound new clogs are refused (the
/// fault simply does not happen).
pub const MAX_CLOGGED_PATHS: usize = 1_024;

/// Most extra delay a reordered message gets, in microseconds.
const REORDER_MAX_US: u64 = 20_000;

/// How the network behaves for each message; all probabilities are 0..=1.
#[derive(Clone, Debug, PartialEq)]
pub struct NetParams {
    /// Chance that a datagram is lost.
    pub loss: f64,
    /// Shortest one-way latency, in microseconds.
    pub latency_min_us: u64,
    /// Longest one-way latency outside the tail, in microseconds.
    pub latency_max_us: u64,
    /// Chance that a datagram takes the long tail.
    pub tail_probability: f64,
    /// Shortest tail latency, in microseconds; each further doubling
    /// happens with probability 1/2 (a heavy, geometric tail).
    pub tail_min_us: u64,
    /// Cap on the tail, in microseconds.
    pub tail_max_us: u64,
    /// Chance that a datagram is delivered twice.
    pub duplicate_probability: f64,
    /// Chance that a datagram is held back so later ones overtake it.
    pub reorder_probability: f64,
}

impl NetParams {
    /// A healthy LAN: 0.1-2 ms, 1% of datagrams at 20-160 ms, no loss,
    /// no duplication, a little reordering.
    pub fn lan() -> Self {
        NetParams {
            loss: 0.0,
            latency_min_us: 100,
            latency_max_us: 2_000,
            tail_probability: 0.01,
            tail_min_us: 20_000,
            tail_max_us: 160_000,
            duplicate_probability: 0.0,
            reorder_probability: 0.01,
        }
    }

    /// The same latencies with every fault (loss, duplication) removed.
    pub fn healed(&self) -> Self {
        NetParams { loss: 0.0, duplicate_probability: 0.0, ..self.clone() }
    }
}

/// The shapes of partition the fault injector can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionKind {
    /// A random non-empty minority cut off both ways.
    Symmetric,
    /// A random group that cannot send to the rest (it still hears them).
    OneWay,
    /// One node cut off both ways.
    IsolateOne,
    /// The cluster split into two halves.
    Halves,
    /// Halves whose membership rolls: one node crosses at every step.
    Swizzle,
    /// A minority of the managers (and some agents) cut off both ways: the
    /// HA scenario where the rest must heal and the minority must not.
    ManagerMinority,
}

impl PartitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionKind::Symmetric => "symmetric",
            PartitionKind::OneWay => "one-way",
            PartitionKind::IsolateOne => "isolate-one",
            PartitionKind::Halves => "halves",
            PartitionKind::Swizzle => "swizzle",
            PartitionKind::ManagerMinority => "manager-minority",
        }
    }
}

/// A cut between two groups of slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub kind: PartitionKind,
    /// Which side each slot is on (`true` is side A).
    pub side_a: Vec<bool>,
    /// Only A -> B is cut; B -> A still works.
    pub one_way: bool,
}

impl Partition {
    /// Draws a partition of `n` slots of the given kind (`n` >= 2).
    pub fn draw(kind: PartitionKind, n: usize, rng: &mut ChaCha8Rng) -> Partition {
        assert!(n >= 2, "a partition needs two nodes");
        let mut side_a = vec![false; n];
        match kind {
            PartitionKind::IsolateOne => side_a[rng.random_range(0..n)] = true,
            PartitionKind::Halves | PartitionKind::Swizzle => {
                for slot in pick_distinct(n, n / 2, rng) {
                    side_a[slot] = true;
                }
            }
            PartitionKind::Symmetric | PartitionKind::OneWay | PartitionKind::ManagerMinority => {
                let size = rng.random_range(1..=n / 2);
                for slot in pick_distinct(n, size, rng) {
                    side_a[slot] = true;
                }
            }
        }
        Partition { kind, side_a, one_way: kind == PartitionKind::OneWay }
    }

    /// A minority of `managers` (at least one, fewer than half), and each
    /// other slot with probability 1/4, on side A.
    pub fn manager_minority(n: usize, managers: &[usize], rng: &mut ChaCha8Rng) -> Partition {
        let mut side_a = vec![false; n];
        let size = rng.random_range(1..=(managers.len().saturating_sub(1) / 2).max(1));
        for i in pick_distinct(managers.len(), size, rng) {
            side_a[managers[i]] = true;
        }
        for (slot, a) in side_a.iter_mut().enumerate() {
            if !managers.contains(&slot) && rng.random_range(0..4) == 0 {
                *a = true;
            }
        }
        Partition { kind: PartitionKind::ManagerMinority, side_a, one_way: false }
    }

    /// Whether `from -> to` is cut.
    pub fn cuts(&self, from: usize, to: usize) -> bool {
        let side = |s: usize| self.side_a.get(s).copied().unwrap_or(false);
        let (a, b) = (side(from), side(to));
        a != b && (!self.one_way || a)
    }

    /// Rolls a swizzle: one random node crosses to the other side.
    pub fn swizzle_step(&mut self, rng: &mut ChaCha8Rng) {
        let slot = rng.random_range(0..self.side_a.len());
        self.side_a[slot] = !self.side_a[slot];
    }

    /// Whether this slot has any cut path.
    pub fn touches(&self, slot: usize) -> bool {
        let mine = self.side_a[slot];
        self.side_a.iter().any(|&s| s != mine)
    }
}

/// `count` distinct slots out of `n`, in a seeded random order.
fn pick_distinct(n: usize, count: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..count.min(n) {
        let j = rng.random_range(i..n);
        all.swap(i, j);
    }
    all.truncate(count.min(n));
    all
}

/// Counters of what the network did to messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub cut: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub clogged: u64,
    pub tail: u64,
    /// State messages (streams) sent, and those a cut path dropped.
    pub streams: u64,
    pub streams_cut: u64,
}

/// Every path between `n` slots.
#[derive(Debug)]
pub struct Network {
    pub params: NetParams,
    partition: Option<Partition>,
    /// The planted leaky partition: cuts hold for the truth only.
    pub leaky: bool,
    /// Directed paths held until the given time.
    clogs: BTreeMap<(usize, usize), VTime>,
    pub stats: NetStats,
}

impl Network {
    pub fn new(params: NetParams) -> Self {
        Network { params, partition: None, leaky: false, clogs: BTreeMap::new(), stats: NetStats::default() }
    }

    /// The current partition, if any.
    pub fn partition(&self) -> Option<&Partition> {
        self.partition.as_ref()
    }

    /// Installs a partition (replacing any other).
    pub fn set_partition(&mut self, partition: Option<Partition>) {
        self.partition = partition;
    }

    /// Rolls the swizzle one step, if a swizzle is active.
    pub fn swizzle_step(&mut self, rng: &mut ChaCha8Rng) {
        if let Some(p) = self.partition.as_mut().filter(|p| p.kind == PartitionKind::Swizzle) {
            p.swizzle_step(rng);
        }
    }

    /// Holds `from -> to` until `until`. Returns false at the bound.
    pub fn clog(&mut self, from: usize, to: usize, until: VTime) -> bool {
        if self.clogs.len() >= MAX_CLOGGED_PATHS && !self.clogs.contains_key(&(from, to)) {
            return false;
        }
        let entry = self.clogs.entry((from, to)).or_insert(until);
        *entry = (*entry).max(until);
        true
    }

    /// Forgets clogs that ended at or before `now`.
    pub fn expire_clogs(&mut self, now: VTime) {
        self.clogs.retain(|_, until| *until > now);
    }

    /// A slot was added (an instance the provider started): it joins the
    /// current partition, if any, on side A if `side_a`.
    pub fn add_slot(&mut self, side_a: bool) {
        if let Some(p) = self.partition.as_mut() {
            p.side_a.push(side_a);
        }
    }

    /// Removes every partition and clog (the liveness phase).
    pub fn heal(&mut self) {
        self.partition = None;
        self.clogs.clear();
    }

    /// Whether `from -> to` is cut by the partition right now.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.partition.as_ref().is_some_and(|p| p.cuts(from, to))
    }

    /// Whether traffic on `from -> to` is cut (the truth, unless the planted
    /// leaky partition lets it through).
    pub fn cuts_traffic(&self, from: usize, to: usize) -> bool {
        !self.leaky && self.is_cut(from, to)
    }

    /// Whether the path is clogged at `now`.
    pub fn is_clogged(&self, from: usize, to: usize, now: VTime) -> bool {
        self.clogs.get(&(from, to)).is_some_and(|until| *until > now)
    }

    /// When the copies of a datagram sent now on `from -> to` arrive:
    /// none (lost or cut), one, or two (duplicated).
    pub fn deliveries(&mut self, from: usize, to: usize, now: VTime, rng: &mut ChaCha8Rng) -> [Option<VTime>; 2] {
        self.stats.sent += 1;
        if self.cuts_traffic(from, to) {
            self.stats.cut += 1;
            return [None, None];
        }
        if self.params.loss > 0.0 && rng.random_bool(self.params.loss) {
            self.stats.lost += 1;
            return [None, None];
        }
        let first = Some(self.arrival(from, to, now, rng));
        let dup = self.params.duplicate_probability > 0.0 && rng.random_bool(self.params.duplicate_probability);
        if dup {
            self.stats.duplicated += 1;
            return [first, Some(self.arrival(from, to, now, rng))];
        }
        [first, None]
    }

    /// When a message sent now on a stream `from -> to` arrives, or `None`
    /// if the path is cut. Streams are reliable (QUIC retransmits), so they
    /// are never lost at random nor duplicated; latency, reordering and
    /// clogs apply as to datagrams.
    pub fn stream(&mut self, from: usize, to: usize, now: VTime, rng: &mut ChaCha8Rng) -> Option<VTime> {
        self.stats.streams += 1;
        if self.cuts_traffic(from, to) {
            self.stats.streams_cut += 1;
            return None;
        }
        Some(self.arrival(from, to, now, rng))
    }

    /// When a connection handshake started now from `from` reaches `to` and
    /// back (two round trips), or `None` if either direction is cut.
    pub fn handshake(&mut self, from: usize, to: usize, now: VTime, rng: &mut ChaCha8Rng) -> Option<VTime> {
        if self.cuts_traffic(from, to) || self.cuts_traffic(to, from) {
            return None;
        }
        let mut at = now;
        for leg in 0..4 {
            let (a, b) = if leg % 2 == 0 { (from, to) } else { (to, from) };
            at = self.arrival(a, b, at, rng);
        }
        Some(at)
    }

    /// One message's arrival time: latency, tail, reordering and clogs.
    fn arrival(&mut self, from: usize, to: usize, now: VTime, rng: &mut ChaCha8Rng) -> VTime {
        let p = &self.params;
        let mut us = rng.random_range(p.latency_min_us..=p.latency_max_us.max(p.latency_min_us));
        if p.tail_probability > 0.0 && rng.random_bool(p.tail_probability) {
            us += tail_us(p.tail_min_us, p.tail_max_us, rng);
            self.stats.tail += 1;
        }
        if p.reorder_probability > 0.0 && rng.random_bool(p.reorder_probability) {
            us += rng.random_range(0..=REORDER_MAX_US);
            self.stats.reordered += 1;
        }
        let mut at = now + Duration::from_micros(us);
        if let Some(until) = self.clogs.get(&(from, to)).filter(|u| **u > now) {
            at = at.max(*until + Duration::from_micros(us));
            self.stats.clogged += 1;
        }
        at
    }
}

/// A heavy tail without floating point: start at `min`, double with
/// probability 1/2 until `max`, then pick uniformly in the last doubling.
fn tail_us(min_us: u64, max_us: u64, rng: &mut ChaCha8Rng) -> u64 {
    let mut high = min_us.max(1);
    while high < max_us && rng.random_bool(0.5) {
        high = (high * 2).min(max_us);
    }
    let low = (high / 2).max(min_us.min(high));
    rng.random_range(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cut_the_right_paths() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = Partition::draw(PartitionKind::IsolateOne, 5, &mut rng);
        let lone = p.side_a.iter().position(|&a| a).unwrap();
        for other in (0..5).filter(|&o| o != lone) {
            assert!(p.cuts(lone, other) && p.cuts(other, lone));
        }
        let mut one = Partition::draw(PartitionKind::OneWay, 6, &mut rng);
        one.side_a = vec![true, false, false, false, false, false];
        assert!(one.cuts(0, 1));
        assert!(!one.cuts(1, 0));
        let halves = Partition::draw(PartitionKind::Halves, 6, &mut rng);
        assert_eq!(halves.side_a.iter().filter(|&&a| a).count(), 3);
    }

    #[test]
    fn loss_and_duplication_follow_their_probabilities() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let params = NetParams { loss: 0.1, duplicate_probability: 0.05, ..NetParams::lan() };
        let mut net = Network::new(params);
        let (mut lost, mut dup) = (0, 0);
        for _ in 0..100_000 {
            match net.deliveries(0, 1, Duration::ZERO, &mut rng) {
                [None, None] => lost += 1,
                [Some(_), Some(_)] => dup += 1,
                _ => {}
            }
        }
        assert!((9_000..11_000).contains(&lost), "lost {lost}");
        assert!((4_000..5_000).contains(&dup), "dup {dup}");
    }

    #[test]
    fn clogged_paths_hold_messages_until_the_clog_ends() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut net = Network::new(NetParams::lan());
        let until = Duration::from_secs(2);
        assert!(net.clog(0, 1, until));
        let [Some(at), None] = net.deliveries(0, 1, Duration::ZERO, &mut rng) else { panic!() };
        assert!(at > until);
        let [Some(back), None] = net.deliveries(1, 0, Duration::ZERO, &mut rng) else { panic!() };
        assert!(back < until);
    }

    #[test]
    fn tail_stays_within_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..10_000 {
            let t = tail_us(20_000, 160_000, &mut rng);
            assert!((10_000..=160_000).contains(&t));
        }
    }
}
