//! The re-announce loop that heals partitions: while any peer this node has
//! known is not active (or it is alone), it announces to some of them, and to
//! its seeds when alone, with exponential backoff.
//!
//! Owns the set of known peers and the backoff. Must never send by itself:
//! it only decides whom the node should announce to, and when.
//! This is what keeps memberlist's bug 222 (an isolated node never rejoins)
//! out of this code base.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;

use super::identity::{Identity, NodeId};
use super::io::Time;

/// Most peers remembered for re-announcing; at the bound, new peers are not
/// remembered (they are still members; they just are not rejoin targets).
pub const MAX_KNOWN_PEERS: usize = 4_096;

/// Most peers announced to in one round.
pub const ANNOUNCE_FANOUT: usize = 3;

/// What one round of the loop asks the node to do.
#[derive(Debug, Default)]
pub struct Round {
    /// Announce (foca `announce`) to these known peers.
    pub announce_to: Vec<Identity>,
    /// Identify these seed addresses: no active member holds them (a seed
    /// may have come back as a new node, unknown to every peer we know).
    pub identify: Vec<SocketAddr>,
    /// When the next round is due.
    pub next_after: Duration,
}

#[derive(Debug)]
pub struct Rejoin {
    seeds: Vec<SocketAddr>,
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
        Rejoin {
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

    /// Runs one round. `active` are the members foca sees as active, and
    /// `held` the addresses they and this node hold; `departed` tells
    /// whether a peer left gracefully at a generation.
    pub fn round(
        &mut self,
        now: Time,
        active: &BTreeSet<NodeId>,
        held: &BTreeSet<SocketAddr>,
        departed: impl Fn(&Identity) -> bool,
        rng: &mut impl RngExt,
    ) -> Round {
        let mut lost: Vec<Identity> =
            self.known.values().filter(|p| !active.contains(&p.id) && !departed(p)).cloned().collect();
        let mut round = Round::default();
        round.identify = self.seeds.iter().filter(|a| !held.contains(a)).copied().collect();
        for _ in 0..ANNOUNCE_FANOUT.min(lost.len()) {
            let pick = rng.random_range(0..lost.len());
            round.announce_to.push(lost.swap_remove(pick));
        }
        let nothing_missing = round.announce_to.is_empty() && round.identify.is_empty() && !active.is_empty();
        if nothing_missing {
            self.backoff = self.min_backoff;
            round.next_after = self.max_backoff;
        } else {
            round.next_after = self.backoff;
            self.backoff = (self.backoff * 2).min(self.max_backoff);
        }
        self.token += 1;
        self.due = now + round.next_after;
        round
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::Role;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    fn peer(n: u64) -> Identity {
        Identity { id: NodeId(n), addr: format!("127.0.0.1:{}", 7000 + n).parse().unwrap(), role: Role::Manager, generation: 1 }
    }

    #[test]
    fn alone_node_identifies_seeds_and_backs_off_to_the_cap() {
        let seed: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut r = Rejoin::new(vec![seed], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let none = BTreeSet::new();
        let waits: Vec<_> = (0..5).map(|_| r.round(Duration::ZERO, &none, &BTreeSet::new(), |_| false, &mut rng)).collect();
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
        let active: BTreeSet<_> = [NodeId(1)].into();
        let round = r.round(Duration::ZERO, &active, &BTreeSet::new(), |p| p.id == NodeId(3), &mut rng);
        assert_eq!(round.announce_to, vec![peer(2)]);
        assert!(round.identify.is_empty());
        let all: BTreeSet<_> = (1..=3).map(NodeId).collect();
        let quiet = r.round(Duration::ZERO, &all, &BTreeSet::new(), |_| false, &mut rng);
        assert!(quiet.announce_to.is_empty());
        assert_eq!(quiet.next_after, 1000 * MS);
    }

    #[test]
    fn a_seed_no_active_member_holds_is_identified_even_when_not_alone() {
        let (s1, s2): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let mut r = Rejoin::new(vec![s1, s2], 250 * MS, 1000 * MS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        r.remember(&peer(1));
        let active: BTreeSet<_> = [NodeId(1)].into();
        let held: BTreeSet<_> = [s1].into();
        let round = r.round(Duration::ZERO, &active, &held, |_| false, &mut rng);
        assert_eq!(round.identify, vec![s2], "s2 is held by nobody active");
        assert_eq!(round.next_after, 250 * MS, "a missing seed keeps the backoff short");
        let both: BTreeSet<_> = [s1, s2].into();
        let quiet = r.round(Duration::ZERO, &active, &both, |_| false, &mut rng);
        assert!(quiet.identify.is_empty());
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
