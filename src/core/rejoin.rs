//! The re-announce loop that heals partitions: while any peer this node has
//! known is not active (or it is alone), it announces to some of them, and
//! identifies the seeds and lost managers' addresses that no active member
//! holds, with exponential backoff.
//!
//! Owns the set of known peers and the backoff. Must never send by itself:
//! it only decides whom the node should announce to, and when.
//! This is what keeps memberlist's bug 222 (an isolated node never rejoins)
//! out of this code base.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;

use super::identity::{Identity, NodeId, Role};
use super::io::Time;

/// Most peers remembered for re-announcing; at the bound, new peers are not
/// remembered (they are still members; they just are not rejoin targets).
/// A partition heals once one member on either side announces to one on
/// the other, so a thousand peers (the first met: the seeds and the members
/// that were there at the join) are plenty; every member holding every
/// other one grew as N^2 over a cluster (4,096 peers of about 94 bytes on
/// each of 10,000 members is 3.8 GB in the simulator).
pub const MAX_KNOWN_PEERS: usize = 1_024;

/// Bits of the filter of remembered peers (a bit per hashed node id, set
/// when a peer is remembered, never cleared): at the bound, a member coming
/// up whose bit is clear is certainly not known, and is not looked up.
/// Every member comes up once on every node during a mass join (N^2
/// member-ups, nearly all at the bound past 1,024 members): the B-tree
/// lookup was 10 % of the simulator's 10,000 row. Four bits a peer: about
/// one in five unknown peers still costs a lookup; 512 bytes a node.
const KNOWN_FILTER_BITS: usize = 4 * MAX_KNOWN_PEERS;
const _: () = assert!(KNOWN_FILTER_BITS.is_power_of_two() && KNOWN_FILTER_BITS >= 64);

/// Most peers announced to in one round.
pub const ANNOUNCE_FANOUT: usize = 3;

/// Most addresses of lost managers (beyond the seeds) identified in one
/// round; above it, a random subset. A manager that lost its disk comes
/// back at its address as a new node, which an announce to its old
/// identity never reaches (foca drops what is addressed to another
/// identity): when every manager did so at once, the agents' only way back
/// is to ask who now holds those addresses. Replaced managers are revoked
/// and forgotten, so a cluster's lost managers are few.
pub const MAX_IDENTIFIED_MANAGER_ADDRS: usize = 8;

/// What one round of the loop asks the node to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Announce (foca `announce`) to these known peers.
    pub announce_to: Vec<Identity>,
    /// Identify these addresses: seeds, then lost managers' addresses, that
    /// no active member holds (a node there may have come back as a new
    /// node, unknown to every peer we know).
    pub identify: Vec<SocketAddr>,
    /// When the next round is due.
    pub next_after: Duration,
}

/// An address as plain integers (the IP's bits; the port with the family
/// above it; an IPv6 address's flow info and scope id), which compare far
/// faster than a `SocketAddr`. Two addresses have the same key exactly when
/// they are equal.
type AddrKey = (u128, u32, u64);

fn addr_key(addr: SocketAddr) -> AddrKey {
    match addr {
        SocketAddr::V4(a) => (u128::from(a.ip().to_bits()), u32::from(a.port()), 0),
        SocketAddr::V6(a) => (
            a.ip().to_bits(),
            1 << 16 | u32::from(a.port()),
            u64::from(a.flowinfo()) << 32 | u64::from(a.scope_id()),
        ),
    }
}

/// The filter bit of `id`: the top bits of a Fibonacci hash (ids are
/// random, but tests and the simulator use small sequential ones).
fn filter_bit(id: NodeId) -> usize {
    const BITS: u32 = KNOWN_FILTER_BITS.trailing_zeros();
    (id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
}

impl Round {
    /// Whether this round found nothing missing, for a node that is not
    /// alone (`has_members`).
    pub fn quiet(&self, has_members: bool) -> bool {
        self.announce_to.is_empty() && self.identify.is_empty() && has_members
    }
}

#[derive(Debug, Clone)]
pub struct Rejoin {
    seeds: Vec<SocketAddr>,
    /// The seeds sorted by [`addr_key`], with their place in `seeds`: a
    /// round marks the held ones by binary search, without building a set.
    seeds_sorted: Vec<(AddrKey, usize)>,
    /// Per seed, whether a member holds it (scratch of one round).
    seed_held: Vec<bool>,
    /// The lost managers' addresses that are not seeds, sorted, with
    /// whether a member holds them (scratch of one round).
    manager_addrs: Vec<(AddrKey, SocketAddr, bool)>,
    known: BTreeMap<NodeId, Identity>,
    /// [`KNOWN_FILTER_BITS`] bits: set for every peer ever remembered.
    known_filter: Vec<u64>,
    min_backoff: Duration,
    max_backoff: Duration,
    backoff: Duration,
    /// Token of the one rejoin timer that counts; older ones are stale.
    pub token: u64,
    /// When the current timer is due.
    pub due: Time,
}

impl Rejoin {
    pub fn new(seeds: Vec<SocketAddr>, min_backoff: Duration, max_backoff: Duration) -> Self {
        let mut seeds_sorted: Vec<(AddrKey, usize)> =
            seeds.iter().map(|a| addr_key(*a)).zip(0..).collect();
        seeds_sorted.sort_unstable();
        Rejoin {
            seed_held: vec![false; seeds.len()],
            manager_addrs: Vec::new(),
            seeds_sorted,
            seeds,
            known: BTreeMap::new(),
            known_filter: vec![0; KNOWN_FILTER_BITS / 64],
            min_backoff,
            max_backoff,
            backoff: min_backoff,
            token: 0,
            due: Duration::ZERO,
        }
    }

    /// Remembers (or updates) a peer as a rejoin target.
    pub fn remember(&mut self, peer: &Identity) {
        let bit = filter_bit(peer.id);
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let full = self.known.len() >= MAX_KNOWN_PEERS;
        if full && self.known_filter[word] & mask == 0 {
            debug_assert!(!self.known.contains_key(&peer.id), "the filter missed a known peer");
            return;
        }
        if let Some(known) = self.known.get_mut(&peer.id) {
            if peer.generation >= known.generation {
                *known = peer.clone();
            }
        } else if !full {
            self.known.insert(peer.id, peer.clone());
            self.known_filter[word] |= mask;
        }
    }

    /// Forgets a peer that left gracefully or was removed for good (its
    /// filter bit stays: others may share it; it only costs a lookup).
    pub fn forget(&mut self, id: NodeId) {
        self.known.remove(&id);
    }

    /// The known peers, for persisting as future seeds.
    pub fn known(&self) -> impl Iterator<Item = &Identity> {
        self.known.values()
    }

    /// Something was lost: the next round should come soon. Returns the
    /// new due time if the timer must be re-armed (with a fresh token).
    pub fn on_loss(&mut self, now: Time) -> Option<Time> {
        self.backoff = self.min_backoff;
        let want = now + self.min_backoff;
        if self.due > want || self.due < now {
            self.token += 1;
            self.due = want;
            return Some(want);
        }
        None
    }

    /// [`Rejoin::round`] with the active members as a sorted list of ids
    /// (the tests' form).
    #[cfg(test)]
    pub fn round_sorted(
        &mut self,
        now: Time,
        active: &[NodeId],
        held: impl IntoIterator<Item = SocketAddr>,
        departed: impl Fn(&Identity) -> bool,
        rng: &mut impl RngExt,
    ) -> Round {
        assert!(active.is_sorted(), "active ids must be sorted");
        let is_active = |id: NodeId| active.binary_search(&id).is_ok();
        self.round(now, (is_active, !active.is_empty()), held, departed, rng)
    }

    /// Runs one round. `active` tells whether foca sees a member with an
    /// id as active, and whether it sees any (a lookup each: a round once
    /// collected and sorted every member's id, O(N log N) a round on every
    /// member); `held` the addresses they and this node hold, in any order;
    /// `departed` tells whether a peer left gracefully at a generation.
    pub fn round(
        &mut self,
        now: Time,
        active: (impl Fn(NodeId) -> bool, bool),
        held: impl IntoIterator<Item = SocketAddr>,
        departed: impl Fn(&Identity) -> bool,
        rng: &mut impl RngExt,
    ) -> Round {
        let (is_active, any_active) = active;
        let mut lost: Vec<Identity> =
            self.known.values().filter(|p| !is_active(p.id) && !departed(p)).cloned().collect();
        self.collect_manager_addrs(&lost, rng);
        self.seed_held.fill(false);
        for key in held.into_iter().map(addr_key) {
            let from = self.seeds_sorted.partition_point(|(s, _)| *s < key);
            for (_, i) in self.seeds_sorted[from..].iter().take_while(|(s, _)| *s == key) {
                self.seed_held[*i] = true;
            }
            if let Ok(i) = self.manager_addrs.binary_search_by_key(&key, |(k, _, _)| *k) {
                self.manager_addrs[i].2 = true;
            }
        }
        let identify = self
            .seeds
            .iter()
            .zip(&self.seed_held)
            .filter(|(_, held)| !**held)
            .map(|(a, _)| *a)
            .chain(self.manager_addrs.iter().filter(|(_, _, held)| !held).map(|(_, a, _)| *a))
            .collect();
        let mut round = Round { identify, ..Round::default() };
        for _ in 0..ANNOUNCE_FANOUT.min(lost.len()) {
            let pick = rng.random_range(0..lost.len());
            round.announce_to.push(lost.swap_remove(pick));
        }
        if round.quiet(any_active) {
            return Round { next_after: self.quiet_round(now), ..round };
        }
        round.next_after = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        self.token += 1;
        self.due = now + round.next_after;
        round
    }

    /// Fills `manager_addrs` with the addresses of the lost managers that
    /// are not seeds (each once), at most [`MAX_IDENTIFIED_MANAGER_ADDRS`]
    /// of them (a random subset above it), sorted and marked not held.
    fn collect_manager_addrs(&mut self, lost: &[Identity], rng: &mut impl RngExt) {
        self.manager_addrs.clear();
        for p in lost.iter().filter(|p| p.role == Role::Manager) {
            let key = addr_key(p.addr);
            if self.seeds_sorted.binary_search_by_key(&key, |(k, _)| *k).is_err() {
                self.manager_addrs.push((key, p.addr, false));
            }
        }
        self.manager_addrs.sort_unstable_by_key(|(k, _, _)| *k);
        self.manager_addrs.dedup_by_key(|(k, _, _)| *k);
        let n = self.manager_addrs.len();
        if n > MAX_IDENTIFIED_MANAGER_ADDRS {
            for i in 0..MAX_IDENTIFIED_MANAGER_ADDRS {
                let pick = rng.random_range(i..n);
                self.manager_addrs.swap(i, pick);
            }
            self.manager_addrs.truncate(MAX_IDENTIFIED_MANAGER_ADDRS);
            self.manager_addrs.sort_unstable_by_key(|(k, _, _)| *k);
        }
    }

    /// The bookkeeping of a round that finds nothing missing (nothing to
    /// announce to or identify, and not alone): the backoff resets and the
    /// next round comes after the cap. Returns that wait. The node calls it
    /// directly, without [`Rejoin::round`], when nothing a round reads has
    /// changed since a round that found nothing missing.
    pub fn quiet_round(&mut self, now: Time) -> Duration {
        self.backoff = self.min_backoff;
        self.token += 1;
        self.due = now + self.max_backoff;
        self.max_backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::Role;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    fn peer(n: u64) -> Identity {
        crate::core::identity::test_member(n, Role::Manager)
    }

    #[test]
    fn alone_node_identifies_seeds_and_backs_off_to_the_cap() {
        let seed: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut r = Rejoin::new(vec![seed], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let waits: Vec<_> =
            (0..5).map(|_| r.round_sorted(Duration::ZERO, &[], [], |_| false, &mut rng)).collect();
        assert!(waits.iter().all(|w| w.identify == vec![seed]));
        let gaps: Vec<_> = waits.iter().map(|w| w.next_after.as_millis()).collect();
        assert_eq!(gaps, vec![250, 500, 1000, 1000, 1000]);
    }

    #[test]
    fn lost_peers_are_announced_to_unless_departed() {
        let mut r = Rejoin::new(vec![], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in 1..=3 {
            r.remember(&peer(n));
        }
        let round =
            r.round_sorted(Duration::ZERO, &[NodeId(1)], [], |p| p.id == NodeId(3), &mut rng);
        assert_eq!(round.announce_to, vec![peer(2)]);
        assert_eq!(
            round.identify,
            vec![peer(2).addr],
            "a lost manager's address, not a departed one's"
        );
        let all: Vec<_> = (1..=3).map(NodeId).collect();
        let quiet = r.round_sorted(Duration::ZERO, &all, [], |_| false, &mut rng);
        assert!(quiet.announce_to.is_empty());
        assert_eq!(quiet.next_after, 1000 * MS);
    }

    #[test]
    fn a_seed_no_active_member_holds_is_identified_even_when_not_alone() {
        let (s1, s2): (SocketAddr, SocketAddr) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let mut r = Rejoin::new(vec![s1, s2], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        r.remember(&peer(1));
        let active = [NodeId(1)];
        let round = r.round_sorted(Duration::ZERO, &active, [s1], |_| false, &mut rng);
        assert_eq!(round.identify, vec![s2], "s2 is held by nobody active");
        assert_eq!(round.next_after, 250 * MS, "a missing seed keeps the backoff short");
        let quiet = r.round_sorted(Duration::ZERO, &active, [s2, s1, s2], |_| false, &mut rng);
        assert!(quiet.identify.is_empty());
    }

    #[test]
    fn a_lost_managers_address_is_identified_until_an_active_member_holds_it() {
        let seed: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut r = Rejoin::new(vec![seed], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let manager = peer(2);
        let agent = crate::core::identity::test_member(3, Role::Agent);
        let twin = Identity { id: NodeId(4), ..manager.clone() };
        for p in [&manager, &agent, &twin] {
            r.remember(p);
        }
        let active = [NodeId(1)];
        let round = r.round_sorted(Duration::ZERO, &active, [seed], |_| false, &mut rng);
        assert_eq!(
            round.identify,
            vec![manager.addr],
            "the lost manager's address once (two lost managers hold it); not the agent's"
        );
        let round =
            r.round_sorted(Duration::ZERO, &active, [seed, manager.addr], |_| false, &mut rng);
        assert!(round.identify.is_empty(), "a new node at that address is already a member");
        let seeded = Rejoin::new(vec![manager.addr], 250 * MS, 1000 * MS);
        let mut seeded = Rejoin { known: r.known.clone(), ..seeded };
        let round = seeded.round_sorted(Duration::ZERO, &active, [], |_| false, &mut rng);
        assert_eq!(round.identify, vec![manager.addr], "a seed is not identified twice");
    }

    #[test]
    fn at_the_bound_known_peers_are_still_updated_and_no_new_one_is_remembered() {
        let mut r = Rejoin::new(vec![], 250 * MS, 1000 * MS);
        let peer = |n: u64, generation: u64| Identity {
            id: NodeId(n),
            addr: format!("127.0.0.1:{}", 1_000 + n % 50_000).parse().unwrap(),
            role: Role::Agent,
            generation,
        };
        for n in 0..MAX_KNOWN_PEERS as u64 + 500 {
            r.remember(&peer(n, 1));
        }
        assert_eq!(r.known().count(), MAX_KNOWN_PEERS, "the first met, up to the bound");
        // Every remembered peer, filtered or not, still takes a newer generation.
        for n in 0..MAX_KNOWN_PEERS as u64 {
            r.remember(&peer(n, 2));
        }
        assert!(r.known().all(|p| p.generation == 2));
        assert!(r.known().all(|p| p.id.0 < MAX_KNOWN_PEERS as u64));
        // A forgotten peer frees a place for the next one met.
        r.forget(NodeId(3));
        r.remember(&peer(5_000, 1));
        assert!(r.known().any(|p| p.id == NodeId(5_000)));
    }

    #[test]
    fn lost_managers_addresses_identified_in_a_round_are_bounded() {
        let mut r = Rejoin::new(vec![], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in 1..=40 {
            r.remember(&peer(n));
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let round = r.round_sorted(Duration::ZERO, &[], [], |_| false, &mut rng);
            assert_eq!(round.identify.len(), MAX_IDENTIFIED_MANAGER_ADDRS);
            assert!(round.identify.is_sorted(), "{:?}", round.identify);
            seen.extend(round.identify);
        }
        assert_eq!(seen.len(), 40, "the random subset reaches every lost manager over rounds");
    }

    #[test]
    fn duplicate_seeds_are_identified_in_their_order_until_held() {
        let (s1, s2): (SocketAddr, SocketAddr) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let mut r = Rejoin::new(vec![s2, s1, s2], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let round = r.round_sorted(Duration::ZERO, &[NodeId(1)], [s1], |_| false, &mut rng);
        assert_eq!(round.identify, vec![s2, s2]);
        let round = r.round_sorted(Duration::ZERO, &[NodeId(1)], [], |_| false, &mut rng);
        assert_eq!(round.identify, vec![s2, s1, s2], "the previous round's marks are cleared");
    }

    #[test]
    fn address_keys_are_equal_exactly_when_addresses_are() {
        let addrs: Vec<SocketAddr> = [
            "10.0.0.1:7",
            "10.0.0.1:8",
            "10.0.0.2:7",
            "[::a00:1]:7",
            "[::ffff:10.0.0.1]:7",
            "[fe80::1%2]:7",
            "[fe80::1%3]:7",
            "[fe80::1]:7",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        for a in &addrs {
            for b in &addrs {
                assert_eq!(addr_key(*a) == addr_key(*b), a == b, "{a} {b}");
            }
        }
    }

    #[test]
    fn loss_rearms_the_timer_sooner() {
        let mut r = Rejoin::new(vec![], 250 * MS, 4000 * MS);
        r.due = 4000 * MS;
        let t = r.token;
        assert_eq!(r.on_loss(1000 * MS), Some(1250 * MS));
        assert_ne!(r.token, t);
        assert_eq!(r.on_loss(1100 * MS), None);
    }
}
