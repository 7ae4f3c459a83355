/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
//! jujud patch (PATCHED.md, 14): join news retired by its echoes.
//!
//! Owns the count, per member whose *join* this node is still
//! broadcasting, of the copies of that same news heard back from others
//! since (rumour mongering with feedback, Demers et al., 1987: a node stops
//! spreading a rumour once enough of those it meets already know it). A
//! join is an alive update at incarnation 0, a member's first word about
//! an identity; every other update (suspicion, death, refutation) is never
//! tracked here and always sent its full `max_transmissions`.
//!
//! Must never hold a member whose latest news here is not its join (any
//! later update forgets it), nor outlive the broadcast it counts for (the
//! backlog forgets it when that entry is retired or spent), so it holds
//! at most one entry per queued join.
//!
//! jujud patch (PATCHED.md, 15): the joins whose count has reached the
//! limit are also held in a second, small set, so a fill asks that set
//! about each item it takes (nothing at all while it is empty) instead of
//! the table of every queued join (a cache miss per item in a large pool).
//! The set is exactly the counted joins at or past the limit: what retires
//! is unchanged.

use crate::broadcast::Retire;

/// The echo counts of queued joins, by member address.
pub(crate) struct Echoes<A> {
    counts: Counts<A>,
    /// The addresses in `counts` whose count is at or past `retire_after`
    /// (their value unused), and only those.
    due: Counts<A>,
    /// Echoes after which a queued join is dropped; `None`: never.
    retire_after: Option<core::num::NonZeroU8>,
    /// Joins are retired only while the backlog holds more entries than
    /// this: a mass event. A lone join is always sent its full count.
    over_backlog: usize,
    /// Whether the backlog was over `over_backlog` when the current fill
    /// began (`arm`).
    armed: bool,
    /// Joins dropped from the backlog by their echoes, for the life of
    /// the instance.
    retired: u64,
}

impl<A: Ord + core::hash::Hash> Echoes<A> {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_hasher(Default::default())
    }

    /// jujud patch (PATCHED.md, 20): counts keyed by the members' index's
    /// hasher (`Members::hasher`), so that an update hashed once on its
    /// way in is looked up here with that same hash.
    pub(crate) fn with_hasher(hasher: crate::member::AddrHasher) -> Self {
        Self {
            counts: Counts::with_hasher(hasher.clone()),
            due: Counts::with_hasher(hasher),
            retire_after: None,
            over_backlog: 0,
            armed: false,
            retired: 0,
        }
    }

    /// A new limit forgets the counts held (the joins queued are then sent
    /// their full count), so `due` never holds joins under the limit.
    pub(crate) fn set_retire_after(&mut self, echoes: Option<core::num::NonZeroU8>, over_backlog: usize) {
        if echoes != self.retire_after {
            self.counts.clear();
            self.due.clear();
        }
        self.retire_after = echoes;
        self.over_backlog = over_backlog;
    }

    pub(crate) const fn retired(&self) -> u64 {
        self.retired
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.counts.len()
    }

    /// A fill of a backlog of `backlog` entries begins.
    /// Also gives back the room of a mass join's counts once most are gone
    /// (the table never shrinks by itself; every member held one entry per
    /// join of a 10,000-member pool, 1.4 GB over the simulated pool).
    pub(crate) fn arm(&mut self, backlog: usize) {
        self.armed = backlog > self.over_backlog;
        self.counts.shrink_if_sparse();
        self.due.shrink_if_sparse();
    }

    /// The hash of `addr` that the methods below take (the members'
    /// index's: `Members::hash_of` gives the same).
    pub(crate) fn hash(&self, addr: &A) -> u64 {
        self.counts.hash(addr)
    }

    #[cfg(test)]
    fn track(&mut self, addr: A) {
        let hash = self.hash(&addr);
        self.track_at(addr, hash);
    }

    #[cfg(test)]
    fn forget(&mut self, addr: &A) {
        self.forget_at(addr, self.hash(addr));
    }

    #[cfg(test)]
    fn heard(&mut self, addr: A) {
        let hash = self.hash(&addr);
        self.heard_at(addr, hash);
    }

    /// This node queued `addr`'s join (`hash` its hash) for broadcast:
    /// count from zero.
    pub(crate) fn track_at(&mut self, addr: A, hash: u64) {
        if self.retire_after.is_some() {
            self.undue(&addr, hash);
            self.counts.set(addr, 0, hash);
        }
    }

    /// `addr` is no longer at or past the limit.
    fn undue(&mut self, addr: &A, hash: u64) {
        if !self.due.is_empty() {
            self.due.remove(addr, hash);
        }
    }

    /// Newer news about `addr` was applied (or the member is gone): its
    /// join is not counted any more.
    pub(crate) fn forget_at(&mut self, addr: &A, hash: u64) {
        self.counts.remove(addr, hash);
        self.undue(addr, hash);
    }

    /// A peer told this node the join it holds for `addr`, unchanged.
    pub(crate) fn heard_at(&mut self, addr: A, hash: u64) {
        let (Some(limit), Some(n)) = (self.retire_after, self.counts.bump(&addr, hash)) else {
            return;
        };
        // Saturating at 255, a count passes the limit exactly once.
        if n == limit.get() {
            self.due.set(addr, 0, hash);
        }
    }
}

impl<A: Ord + core::hash::Hash> Retire<crate::Addr<A>> for Echoes<A> {
    fn retire(&mut self, item: &crate::Addr<A>) -> bool {
        if self.retire_after.is_none() || !self.armed || self.due.is_empty() {
            return false;
        }
        let hash = self.hash(&item.0);
        if self.due.remove(&item.0, hash) {
            self.counts.remove(&item.0, hash);
            self.retired += 1;
            return true;
        }
        false
    }

    fn spent(&mut self, item: &crate::Addr<A>) {
        let hash = self.hash(&item.0);
        self.forget_at(&item.0, hash);
    }
}

/// Address to count: with `std` a hashbrown table keyed by std's randomly
/// seeded SipHash (as the members' index, patch 10); without, a B-tree.
/// Only looked up, never iterated, so nothing foca decides depends on its
/// order.
#[cfg(feature = "std")]
struct Counts<A> {
    table: hashbrown::HashTable<(A, u8)>,
    state: std::hash::RandomState,
}

#[cfg(feature = "std")]
impl<A> Counts<A> {
    fn with_hasher(state: std::hash::RandomState) -> Self {
        Self { table: hashbrown::HashTable::new(), state }
    }
}

#[cfg(feature = "std")]
impl<A: core::hash::Hash + PartialEq> Counts<A> {
    fn hash(&self, addr: &A) -> u64 {
        use core::hash::BuildHasher;
        self.state.hash_one(addr)
    }

    fn set(&mut self, addr: A, count: u8, hash: u64) {
        use core::hash::BuildHasher;
        debug_assert_eq!(hash, self.hash(&addr), "a hash from another hasher");
        let state = &self.state;
        match self.table.entry(hash, |(a, _)| *a == addr, |(a, _)| state.hash_one(a)) {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().1 = count,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((addr, count));
            }
        }
    }

    /// The new count, if `addr` is held.
    fn bump(&mut self, addr: &A, hash: u64) -> Option<u8> {
        debug_assert_eq!(hash, self.hash(addr), "a hash from another hasher");
        let (_, n) = self.table.find_mut(hash, |(a, _)| a == addr)?;
        *n = n.saturating_add(1);
        Some(*n)
    }

    fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether `addr` was held.
    fn remove(&mut self, addr: &A, hash: u64) -> bool {
        debug_assert_eq!(hash, self.hash(addr), "a hash from another hasher");
        let found = self.table.find_entry(hash, |(a, _)| a == addr);
        found.map(|e| e.remove()).is_ok()
    }

    fn clear(&mut self) {
        self.table.clear();
    }

    fn shrink_if_sparse(&mut self) {
        use core::hash::BuildHasher;
        if self.table.capacity() > 64 && self.table.len() * 4 < self.table.capacity() {
            let state = &self.state;
            self.table.shrink_to(self.table.len() * 2, |(a, _)| state.hash_one(a));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(not(feature = "std"))]
struct Counts<A> {
    map: alloc::collections::BTreeMap<A, u8>,
}

#[cfg(not(feature = "std"))]
impl<A: Ord> Counts<A> {
    fn with_hasher(_hasher: ()) -> Self {
        Self { map: alloc::collections::BTreeMap::new() }
    }

    /// No hashing without `std` (a map).
    fn hash(&self, _addr: &A) -> u64 {
        0
    }

    fn set(&mut self, addr: A, count: u8, _hash: u64) {
        self.map.insert(addr, count);
    }

    fn bump(&mut self, addr: &A, _hash: u64) -> Option<u8> {
        let n = self.map.get_mut(addr)?;
        *n = n.saturating_add(1);
        Some(*n)
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn remove(&mut self, addr: &A, _hash: u64) -> bool {
        self.map.remove(addr).is_some()
    }

    fn clear(&mut self) {
        self.map.clear();
    }

    fn shrink_if_sparse(&mut self) {}

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Addr;

    fn echoes(after: u8) -> Echoes<u32> {
        let mut e = Echoes::new();
        e.set_retire_after(core::num::NonZeroU8::new(after), 0);
        e.arm(1);
        e
    }

    #[test]
    fn a_join_is_retired_once_echoed_enough_and_counted() {
        let mut e = echoes(2);
        e.track(7);
        e.heard(7);
        assert!(!e.retire(&Addr(7)), "one echo of two");
        e.heard(7);
        assert!(e.retire(&Addr(7)));
        assert_eq!(e.retired(), 1);
        assert_eq!(e.len(), 0, "a retired join is forgotten");
        assert!(!e.retire(&Addr(7)), "and not retired twice");
    }

    #[test]
    fn only_tracked_joins_count_and_newer_news_or_a_spent_entry_forgets() {
        let mut e = echoes(1);
        e.heard(3);
        assert!(!e.retire(&Addr(3)), "never tracked: never retired");
        e.track(3);
        e.forget(&3);
        e.heard(3);
        assert!(!e.retire(&Addr(3)), "forgotten by newer news");
        e.track(4);
        e.spent(&Addr(4));
        assert_eq!(e.len(), 0, "a spent entry is forgotten");
        e.track(5);
        e.track(5);
        assert_eq!(e.len(), 1, "one entry a member");
    }

    #[test]
    fn a_mass_joins_counts_give_their_room_back() {
        let mut e = echoes(1);
        for n in 0..10_000 {
            e.track(n);
        }
        for n in 0..9_990 {
            e.forget(&n);
        }
        e.arm(1);
        assert_eq!(e.len(), 10);
        #[cfg(feature = "std")]
        assert!(e.counts.table.capacity() < 100, "{}", e.counts.table.capacity());
    }

    #[test]
    fn off_by_default() {
        let mut e = Echoes::<u32>::new();
        e.track(1);
        e.heard(1);
        assert!(!e.retire(&Addr(1)));
        assert_eq!(e.len(), 0);
    }

    // jujud patch (PATCHED.md, 15): the due set retires exactly what the
    // counts alone did (a count at or past the limit), over a long random
    // run of every operation against a plain map.
    #[test]
    fn the_due_set_retires_exactly_what_the_counts_say() {
        let limit = 3u8;
        let mut e = echoes(limit);
        let mut model: alloc::collections::BTreeMap<u32, u8> = Default::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut retired = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = (x >> 8) as u32 % 64;
            match x % 5 {
                0 => {
                    e.track(addr);
                    model.insert(addr, 0);
                }
                1 => {
                    e.forget(&addr);
                    model.remove(&addr);
                }
                2 | 3 => {
                    e.heard(addr);
                    if let Some(n) = model.get_mut(&addr) {
                        *n = n.saturating_add(1);
                    }
                }
                _ => {
                    let want = model.get(&addr).is_some_and(|n| *n >= limit);
                    let spent = (x >> 40) % 4 == 0;
                    if !want && spent {
                        e.spent(&Addr(addr));
                        model.remove(&addr);
                        continue;
                    }
                    assert_eq!(e.retire(&Addr(addr)), want, "{addr} at {:?}", model.get(&addr));
                    if want {
                        model.remove(&addr);
                        retired += 1;
                    }
                }
            }
            assert_eq!(e.len(), model.len());
        }
        assert!(retired > 1_000, "the run retired only {retired}");
        assert_eq!(e.retired(), retired);
    }
}
