//! The re-announce loop that heals partitions: while any peer this node has
//! known is not active (or it is alone), it announces to some of them, and to
//! its seeds when alone, with exponential backoff.
//!
//! Owns the set of known peers and the backoff. Must never send by itself:
//! it only decides whom the node should announce to, and when.
//! This is what keeps memberlist's bug 222 (an isolated node never rejoins)
//! out of this code base.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;

use super::identity::{Identity, NodeId};
use super::io::Time;

/// Most peers remembered for re-announcing; at the bound, new peers are not
/// remembered (they are still members; they just are not rejoin targets).
/// A partition heals once one member on either side announces to one on
/// the other, so a thousand peers (the first met: the seeds and the members
/// that were there at the join) are plenty; every member holding every
/// other one grew as N^2 over a cluster (4,096 peers of about 94 bytes on
/// each of 10,000 members is 3.8 GB in the simulator).
pub const MAX_KNOWN_PEERS: usize = 1_024;

/// Most peers announced to in one round.
pub const ANNOUNCE_FANOUT: usize = 3;

/// What one round of the loop asks the node to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Announce (foca `announce`) to these known peers.
    pub announce_to: Vec<Identity>,
    /// Identify these seed addresses: no active member holds them (a seed
    /// may have come back as a new node, unknown to every peer we know).
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
    known: BTreeMap<NodeId, Identity>,
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
            seeds_sorted,
            seeds,
            known: BTreeMap::new(),
            min_backoff,
            max_backoff,
            backoff: min_backoff,
            token: 0,
            due: Duration::ZERO,
        }
    }

    /// Remembers (or updates) a peer as a rejoin target.
    pub fn remember(&mut self, peer: &Identity) {
        if let Some(known) = self.known.get_mut(&peer.id) {
            if peer.generation >= known.generation {
                *known = peer.clone();
            }
        } else if self.known.len() < MAX_KNOWN_PEERS {
            self.known.insert(peer.id, peer.clone());
        }
    }

    /// Forgets a peer that left gracefully or was removed for good.
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

    /// Runs one round. `active` are the ids of the members foca sees as
    /// active, sorted; `held` the addresses they and this node hold, in any
    /// order; `departed` tells whether a peer left gracefully at a
    /// generation.
    pub fn round(
        &mut self,
        now: Time,
        active: &[NodeId],
        held: impl IntoIterator<Item = SocketAddr>,
        departed: impl Fn(&Identity) -> bool,
        rng: &mut impl RngExt,
    ) -> Round {
        debug_assert!(active.is_sorted(), "active ids must be sorted");
        let mut lost: Vec<Identity> = self
            .known
            .values()
            .filter(|p| active.binary_search(&p.id).is_err() && !departed(p))
            .cloned()
            .collect();
        self.seed_held.fill(false);
        for key in held.into_iter().map(addr_key) {
            let from = self.seeds_sorted.partition_point(|(s, _)| *s < key);
            for (_, i) in self.seeds_sorted[from..].iter().take_while(|(s, _)| *s == key) {
                self.seed_held[*i] = true;
            }
        }
        let identify = self
            .seeds
            .iter()
            .zip(&self.seed_held)
            .filter(|(_, held)| !**held)
            .map(|(a, _)| *a)
            .collect();
        let mut round = Round { identify, ..Round::default() };
        for _ in 0..ANNOUNCE_FANOUT.min(lost.len()) {
            let pick = rng.random_range(0..lost.len());
            round.announce_to.push(lost.swap_remove(pick));
        }
        if round.quiet(!active.is_empty()) {
            return Round { next_after: self.quiet_round(now), ..round };
        }
        round.next_after = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        self.token += 1;
        self.due = now + round.next_after;
        round
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
            (0..5).map(|_| r.round(Duration::ZERO, &[], [], |_| false, &mut rng)).collect();
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
        let round = r.round(Duration::ZERO, &[NodeId(1)], [], |p| p.id == NodeId(3), &mut rng);
        assert_eq!(round.announce_to, vec![peer(2)]);
        assert!(round.identify.is_empty());
        let all: Vec<_> = (1..=3).map(NodeId).collect();
        let quiet = r.round(Duration::ZERO, &all, [], |_| false, &mut rng);
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
        let round = r.round(Duration::ZERO, &active, [s1], |_| false, &mut rng);
        assert_eq!(round.identify, vec![s2], "s2 is held by nobody active");
        assert_eq!(round.next_after, 250 * MS, "a missing seed keeps the backoff short");
        let quiet = r.round(Duration::ZERO, &active, [s2, s1, s2], |_| false, &mut rng);
        assert!(quiet.identify.is_empty());
    }

    #[test]
    fn duplicate_seeds_are_identified_in_their_order_until_held() {
        let (s1, s2): (SocketAddr, SocketAddr) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let mut r = Rejoin::new(vec![s2, s1, s2], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let round = r.round(Duration::ZERO, &[NodeId(1)], [s1], |_| false, &mut rng);
        assert_eq!(round.identify, vec![s2, s2]);
        let round = r.round(Duration::ZERO, &[NodeId(1)], [], |_| false, &mut rng);
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
