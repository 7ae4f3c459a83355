/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
extern crate alloc;
use alloc::vec::Vec;

use rand::{
    RngExt,
    prelude::{IteratorRandom, SliceRandom},
};

/// jujud patch (PATCHED.md, 8): pools of at least this many members are
/// sampled by random position before the reservoir walk.
const SAMPLE_BY_POSITION_MIN: usize = 64;

/// State describes how a Foca instance perceives a member of the cluster.
///
/// This is part of the Suspicion Mechanism described in section 4.2 of the
/// original SWIM paper.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum State {
    /// Member is active.
    Alive,
    /// Member is active, but at least one cluster member
    /// suspects its down. For all purposes, a `Suspect` member
    /// is treated as if it were `Alive` until either it
    /// refutes the suspicion (becoming `Alive`) or fails to
    /// do so (being declared `Down`).
    Suspect,
    /// Confirmed Down.
    /// A member that reaches this state can't join the cluster
    /// with the same identity until the cluster forgets
    /// this knowledge.
    Down,
}

/// Incarnation is a member-controlled cluster-global number attached
/// to a member identity.
/// A member M's incarnation starts with zero and can only be incremented
/// by said member M when refuting suspicion.
pub type Incarnation = u16;

/// A Cluster Member. Also often called "cluster update".
///
/// A [`Member`] represents Foca's snapshot knowledge about an
/// [`crate::Identity`]. An individual cluster update is simply a
/// serialized Member which other Foca instances receive and use to
/// update their own cluster state representation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Member<T> {
    id: T,
    incarnation: Incarnation,
    state: State,
}

impl<T> Member<T> {
    /// Initializes a new member.
    ///
    /// `id` is an identity used to uniquely identify an individual
    /// cluster member (say, a primary key).
    pub const fn new(id: T, incarnation: Incarnation, state: State) -> Self {
        Self {
            id,
            incarnation,
            state,
        }
    }

    /// Shortcut for initializing a member as [`State::Alive`].
    pub fn alive(id: T) -> Self {
        Self::new(id, Incarnation::default(), State::Alive)
    }

    #[cfg(test)]
    pub(crate) fn suspect(id: T) -> Self {
        Self::new(id, Incarnation::default(), State::Suspect)
    }

    /// Shortcut for initializing a member as [`State::Down`].
    pub fn down(id: T) -> Self {
        Self::new(id, Incarnation::default(), State::Down)
    }

    /// Getter for the member's Incarnation
    pub const fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Getter for the member's State
    pub const fn state(&self) -> State {
        self.state
    }

    /// Getter for the member's identity
    pub const fn id(&self) -> &T {
        &self.id
    }

    pub(crate) const fn is_active(&self) -> bool {
        match self.state {
            State::Alive | State::Suspect => true,
            State::Down => false,
        }
    }

    pub(crate) const fn change_state(&mut self, incarnation: Incarnation, state: State) -> bool {
        if self.can_change(incarnation, state) {
            self.state = state;
            self.incarnation = incarnation;
            true
        } else {
            false
        }
    }

    const fn can_change(&self, other_incarnation: Incarnation, other: State) -> bool {
        // This implements the order of preference of the Suspicion subprotocol
        // outlined on section 4.2 of the paper.
        match self.state {
            State::Alive => match other {
                State::Alive => other_incarnation > self.incarnation,
                State::Suspect => other_incarnation >= self.incarnation,
                State::Down => true,
            },
            State::Suspect => match other {
                State::Alive | State::Suspect => other_incarnation > self.incarnation,
                State::Down => true,
            },
            State::Down => false,
        }
    }

    pub(crate) fn into_identity(self) -> T {
        self.id
    }
}

// jujud patch (PATCHED.md, 10 and 16): the index from address to
// position. With `std`, a table holding only positions and a tag of the
// hash (6 bytes a slot), keyed by std's randomly seeded SipHash of the
// member's address (a member cannot pick addresses that collide on every
// node): a lookup costs one cache miss and the member's row, where the
// B-tree took four to six (`Members::apply` was 42% of the simulator's
// time at 3,162 members), in a fraction of the B-tree's or a `HashMap`'s
// memory (every member holds one, so this is N^2 over a pool). Only looked
// up, never iterated, so nothing foca decides depends on its order.
// Without `std`, the B-tree of patch 6. Both keep the first position of a
// duplicated address (tests only), as the walk they replace found the
// first.
/// jujud patch (PATCHED.md, 20): the hasher of member addresses, shared by
/// the members' index and the echo counts (`echo.rs`); none without `std`.
#[cfg(feature = "std")]
pub(crate) type AddrHasher = std::hash::RandomState;
#[cfg(not(feature = "std"))]
pub(crate) type AddrHasher = ();

#[cfg(feature = "std")]
struct Index<A> {
    /// Open addressing with linear probing; empty, or at least
    /// `MIN_SLOTS` long and at most four fifths taken (live and removed
    /// slots together); sized to a live load of two thirds when it grows
    /// (any length: a power of two would waste up to half of it, and
    /// every member holds one of these).
    slots: alloc::vec::Vec<Slot>,
    /// Slots holding a position.
    live: usize,
    /// Slots left by a removal (probes pass over them).
    removed: usize,
    state: std::hash::RandomState,
    addr: core::marker::PhantomData<fn(&A)>,
}

/// jujud patch (PATCHED.md, 16): one slot of the index, 6 bytes: a
/// position (plus one; 0 is empty, `u32::MAX` a removed entry) and 16
/// bits of the address's hash, so that a lookup reads one line of the
/// table and then the member's row (hashbrown read its control bytes, then
/// the slot, then the row: three cache misses a lookup, about half of
/// `Members::apply`'s time in the simulator's 3,162 row). A tag that
/// matches by chance (1 in 65,536) costs one more row read, never a wrong
/// answer: the row's address is compared.
#[cfg(feature = "std")]
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot([u16; 3]);

#[cfg(feature = "std")]
impl Slot {
    const EMPTY: Slot = Slot([0, 0, 0]);
    const REMOVED: Slot = Slot([u16::MAX, u16::MAX, 0]);

    fn new(pos: usize, tag: u16) -> Self {
        let p = u32::try_from(pos)
            .ok()
            .and_then(|p| p.checked_add(1))
            .filter(|&p| p != u32::MAX)
            .expect("fewer than 2^32 - 1 members");
        Slot([p as u16, (p >> 16) as u16, tag])
    }

    fn field(self) -> u32 {
        u32::from(self.0[0]) | (u32::from(self.0[1]) << 16)
    }

    /// The position held, if any.
    fn pos(self) -> Option<usize> {
        match self.field() {
            0 | u32::MAX => None,
            p => Some((p - 1) as usize),
        }
    }

    fn tag(self) -> u16 {
        self.0[2]
    }
}

#[cfg(feature = "std")]
impl<A> Default for Index<A> {
    fn default() -> Self {
        Self {
            slots: alloc::vec::Vec::new(),
            live: 0,
            removed: 0,
            state: std::hash::RandomState::new(),
            addr: core::marker::PhantomData,
        }
    }
}

#[cfg(feature = "std")]
impl<A: core::hash::Hash + PartialEq> Index<A> {
    const MIN_SLOTS: usize = 16;

    fn hash(&self, addr: &A) -> u64 {
        use core::hash::BuildHasher;
        self.state.hash_one(addr)
    }

    fn hasher(&self) -> AddrHasher {
        self.state.clone()
    }

    /// Slots a hint looks at before giving up: at most two lines of the
    /// table; 98.5 % of lookups start within them after a third of the
    /// members left (`the_row_hint_names_the_member_the_lookup_finds`).
    const HINT_PROBES: usize = 16;

    // jujud patch 17 (see `Members::warm_slot`).
    fn warm_slot(&self, hash: u64) {
        if !self.slots.is_empty() {
            crate::prefetch::line(&self.slots[self.home(hash).0]);
        }
    }

    /// jujud patch 17: the position in the first slot of `hash`'s probe
    /// that carries its tag, without reading any row (a hint: it may name
    /// another member whose tag matches by chance).
    fn likely_pos(&self, hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let (mut i, tag) = self.home(hash);
        for _ in 0..Self::HINT_PROBES {
            let slot = self.slots[i];
            if slot == Slot::EMPTY {
                return None;
            }
            if slot.tag() == tag && slot.pos().is_some() {
                return slot.pos();
            }
            i = self.next(i);
        }
        None
    }

    /// The slot to start probing at (the hash's high bits scaled to the
    /// length) and the tag (its low bits), for a hash.
    fn home(&self, hash: u64) -> (usize, u16) {
        let len = self.slots.len() as u128;
        (((u128::from(hash) * len) >> 64) as usize, hash as u16)
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Slots for a table about to hold `want` positions.
    fn len_for(want: usize) -> usize {
        (want * 3 / 2 + 1).max(Self::MIN_SLOTS)
    }

    /// Walks `hash`'s probe sequence of a non-empty table: the first slot
    /// with its tag for which `hit` holds, or else the empty slot that
    /// ends the sequence.
    fn probe(&self, hash: u64, hit: impl Fn(Slot) -> bool) -> Result<usize, usize> {
        debug_assert!(!self.slots.is_empty());
        let (mut i, tag) = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == Slot::EMPTY {
                return Err(i);
            }
            if slot.tag() == tag && hit(slot) {
                return Ok(i);
            }
            i = self.next(i);
        }
    }

    /// Whether `slot` holds the member at `addr`.
    fn holds<T: crate::Identity<Addr = A>>(inner: &[Member<T>], addr: &A, slot: Slot) -> bool {
        slot.pos().is_some_and(|p| inner[p].id.addr() == *addr)
    }

    /// The position of the member at `addr`, whose hash is `hash`
    /// (jujud patch 20: the caller's, computed once an update).
    fn get<T: crate::Identity<Addr = A>>(&self, inner: &[Member<T>], addr: &A, hash: u64) -> Option<usize> {
        debug_assert_eq!(hash, self.hash(addr), "a hash from another hasher");
        if self.slots.is_empty() {
            return None;
        }
        let i = self.probe(hash, |s| Self::holds(inner, addr, s)).ok()?;
        self.slots[i].pos()
    }

    /// Puts `pos` in the first free slot of its probe sequence (a free
    /// slot exists: the table is never full).
    fn place(&mut self, hash: u64, pos: usize) {
        let (mut i, tag) = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == Slot::EMPTY || slot == Slot::REMOVED {
                if slot == Slot::REMOVED {
                    self.removed -= 1;
                }
                self.slots[i] = Slot::new(pos, tag);
                self.live += 1;
                return;
            }
            i = self.next(i);
        }
    }

    /// Adds the member at `pos` (whose address must not be indexed yet),
    /// the hash of whose address is `hash`.
    fn insert<T: crate::Identity<Addr = A>>(&mut self, inner: &[Member<T>], pos: usize, hash: u64) {
        debug_assert_eq!(hash, self.hash(&inner[pos].id.addr()), "a hash from another hasher");
        if (self.live + self.removed + 1) * 5 > self.slots.len() * 4 {
            self.resize(inner, self.live + 1);
        }
        self.place(hash, pos);
    }

    /// A table for `want` entries, holding the positions held now.
    fn resize<T: crate::Identity<Addr = A>>(&mut self, inner: &[Member<T>], want: usize) {
        let len = Self::len_for(want);
        let old = core::mem::replace(&mut self.slots, alloc::vec![Slot::EMPTY; len]);
        (self.live, self.removed) = (0, 0);
        for pos in old.into_iter().filter_map(Slot::pos) {
            self.place(self.hash(&inner[pos].id.addr()), pos);
        }
    }

    /// The slot holding `pos` in `addr`'s probe sequence.
    fn find_pos(&self, addr: &A, pos: usize) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        self.probe(self.hash(addr), |s| s.pos() == Some(pos)).ok()
    }

    /// The member at `addr` moved from position `old` to `new`.
    fn moved(&mut self, addr: &A, old: usize, new: usize) {
        if let Some(i) = self.find_pos(addr, old) {
            self.slots[i] = Slot::new(new, self.slots[i].tag());
        }
    }

    /// The member at `addr`, at position `pos`, is gone.
    fn remove(&mut self, addr: &A, pos: usize) {
        if let Some(i) = self.find_pos(addr, pos) {
            self.slots[i] = Slot::REMOVED;
            self.live -= 1;
            self.removed += 1;
        }
    }

    fn rebuild<T: crate::Identity<Addr = A>>(&mut self, inner: &[Member<T>]) {
        self.slots = alloc::vec::Vec::new();
        (self.live, self.removed) = (0, 0);
        if inner.is_empty() {
            return;
        }
        self.slots = alloc::vec![Slot::EMPTY; Self::len_for(inner.len())];
        for (pos, member) in inner.iter().enumerate() {
            // One hash a member; a duplicated address keeps its first
            // position. A fresh table has no removed slots, so the empty
            // slot ending the probe is where `pos` goes.
            let addr = member.id.addr();
            let hash = self.hash(&addr);
            if let Err(i) = self.probe(hash, |s| Self::holds(inner, &addr, s)) {
                self.slots[i] = Slot::new(pos, self.home(hash).1);
                self.live += 1;
            }
        }
    }
}

#[cfg(not(feature = "std"))]
struct Index<A> {
    map: alloc::collections::BTreeMap<A, usize>,
}

#[cfg(not(feature = "std"))]
impl<A: Ord> Default for Index<A> {
    fn default() -> Self {
        Self { map: alloc::collections::BTreeMap::new() }
    }
}

#[cfg(not(feature = "std"))]
impl<A: Ord> Index<A> {
    // jujud patch 17: no hints without `std` (a map, not a table).
    fn hash(&self, _addr: &A) -> u64 {
        0
    }

    fn hasher(&self) -> AddrHasher {}

    fn warm_slot(&self, _hash: u64) {}

    fn likely_pos(&self, _hash: u64) -> Option<usize> {
        None
    }

    fn get<T: crate::Identity<Addr = A>>(&self, _inner: &[Member<T>], addr: &A, _hash: u64) -> Option<usize> {
        self.map.get(addr).copied()
    }

    fn insert<T: crate::Identity<Addr = A>>(&mut self, inner: &[Member<T>], pos: usize, _hash: u64) {
        self.map.insert(inner[pos].id.addr(), pos);
    }

    fn moved(&mut self, addr: &A, _old: usize, new: usize) {
        if let Some(p) = self.map.get_mut(addr) {
            *p = new;
        }
    }

    fn remove(&mut self, addr: &A, _pos: usize) {
        self.map.remove(addr);
    }

    fn rebuild<T: crate::Identity<Addr = A>>(&mut self, inner: &[Member<T>]) {
        self.map.clear();
        for (pos, member) in inner.iter().enumerate() {
            self.map.entry(member.id.addr()).or_insert(pos);
        }
    }
}

// jujud patch 6: an index from address to position, so that applying an
// update, checking a member and removing a down one cost O(log n) instead
// of a walk over every member (19% of a 1,000-member simulation). The
// index mirrors `inner` exactly; the order of `inner`, and so every
// random choice, is unchanged.
pub(crate) struct Members<T: crate::Identity> {
    pub(crate) inner: Vec<Member<T>>,
    cursor: usize,
    num_active: usize,
    index: Index<T::Addr>,
    // jujud patch (PATCHED.md, 9): counts of state changes, kept as they
    // happen so that a caller never walks every member to find them.
    transitions: Transitions,
}

/// jujud patch (PATCHED.md, 9): how many times members changed state in
/// the ways a failure detector's operator counts. Monotonic for the life
/// of a [`crate::Foca`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transitions {
    /// A member became suspect: from alive, or first learned (or renamed)
    /// as suspect.
    pub suspected: u64,
    /// A suspect member came back alive with the same identity (its
    /// suspicion was refuted).
    pub refuted: u64,
}

impl Transitions {
    fn record(&mut self, was: Option<State>, now: State, same_id: bool) {
        if now == State::Suspect && (was != Some(State::Suspect) || !same_id) {
            self.suspected = self.suspected.saturating_add(1);
        }
        if same_id && was == Some(State::Suspect) && now == State::Alive {
            self.refuted = self.refuted.saturating_add(1);
        }
    }
}

#[cfg(test)]
impl<T: crate::Identity> Members<T> {
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }
}

impl<T> Members<T>
where
    T: PartialEq + Clone + crate::Identity,
{
    pub(crate) const fn num_active(&self) -> usize {
        self.num_active
    }

    // jujud patch (PATCHED.md, 9).
    pub(crate) const fn transitions(&self) -> Transitions {
        self.transitions
    }

    pub(crate) fn new(inner: Vec<Member<T>>) -> Self {
        // XXX This doesn't prevent someone initializing with
        //     duplicated members... Not a problem (yet?) since
        //     inner is always empty outside of tests
        let num_active = inner.iter().filter(|member| member.is_active()).count();

        let mut members = Self {
            cursor: 0,
            num_active,
            inner,
            index: Index::default(),
            transitions: Transitions::default(),
        };
        members.reindex();
        members
    }

    // jujud patch 6: rebuilds the index after `inner` was reordered.
    // With duplicated addresses (tests only) the first position wins, as
    // the walk it replaces found the first.
    fn reindex(&mut self) {
        self.index.rebuild(&self.inner);
    }

    /// jujud patch (PATCHED.md, 20): the hasher of `hash_of`.
    pub(crate) fn hasher(&self) -> AddrHasher {
        self.index.hasher()
    }

    /// jujud patch (PATCHED.md, 17): the index's hash of `addr`, for
    /// [`Members::warm_slot`] and [`Members::warm_row`].
    pub(crate) fn hash_of(&self, addr: &T::Addr) -> u64 {
        self.index.hash(addr)
    }

    /// jujud patch (PATCHED.md, 17): hints the CPU to load the index line
    /// where the lookup of `hash` starts.
    pub(crate) fn warm_slot(&self, hash: u64) {
        self.index.warm_slot(hash);
    }

    /// jujud patch (PATCHED.md, 17): hints the CPU to load the row of the
    /// member `hash` most likely names (its index line is read; a hint
    /// only, so a tag that matches another member by chance costs a
    /// wasted load, never a wrong answer).
    pub(crate) fn warm_row(&self, hash: u64) {
        if let Some(member) = self.index.likely_pos(hash).and_then(|p| self.inner.get(p)) {
            crate::prefetch::line(member);
        }
    }

    // jujud patch 6: the position of the member at `addr`.
    fn position_of(&self, addr: &T::Addr) -> Option<usize> {
        self.position_of_hashed(addr, self.index.hash(addr))
    }

    // jujud patch 20: `position_of` with the hash of `addr` given.
    fn position_of_hashed(&self, addr: &T::Addr, hash: u64) -> Option<usize> {
        let pos = self.index.get(&self.inner, addr, hash)?;
        debug_assert!(self.inner.get(pos).is_some_and(|m| &m.id.addr() == addr));
        Some(pos)
    }

    // Next member that's considered active
    // Chosen at random (shuffle + round-robin)
    pub(crate) fn next(&mut self, mut rng: impl RngExt) -> Option<&Member<T>> {
        // Round-robin with a shuffle at the end
        if self.cursor >= self.inner.len() {
            self.inner.shuffle(&mut rng);
            self.reindex();
            self.cursor = 0;
        }

        // Find an active member from cursor..len()
        let position = self
            .inner
            .iter()
            .skip(self.cursor)
            .position(|m| m.is_active())
            // Since we skip(), position() will start counting from zero
            // this ensures it's actually the index of the chosen member
            .map(|pos| pos + self.cursor);

        // And if we don't find any: try from 0..cursor
        let position = position.or_else(|| {
            self.inner
                .iter()
                .take(self.cursor)
                .position(|m| m.is_active())
        });

        if let Some(pos) = position {
            if pos < self.cursor {
                // We wrapped around the list to find a member. A shuffle
                // is needed, so we set it to MAX. Any other value could
                // cause the shuffle to not happen since members may join
                // in-between probes
                self.cursor = usize::MAX;
            } else {
                self.cursor = pos.saturating_add(1);
            }
            self.inner.get(pos)
        } else {
            None
        }
    }

    fn choose_members<F>(
        &self,
        wanted: usize,
        output: &mut Vec<Member<T>>,
        mut rng: impl RngExt,
        picker: F,
    ) where
        F: Fn(&Member<T>) -> bool,
    {
        // jujud patch (PATCHED.md, 8): in a large pool, draw positions at
        // random and keep the distinct members the picker accepts; only
        // when that finds too few (most members rejected) fall back to the
        // reservoir walk below, which costs a random draw per member.
        if wanted > 0 && self.inner.len() >= SAMPLE_BY_POSITION_MIN && wanted * 4 < self.inner.len() {
            let start = output.len();
            for _ in 0..wanted * 8 + 16 {
                let member = &self.inner[rng.random_range(0..self.inner.len())];
                if picker(member) && !output[start..].iter().any(|m| m.id == member.id) {
                    output.push(member.clone());
                    if output.len() - start == wanted {
                        return;
                    }
                }
            }
            output.truncate(start);
        }

        // Basic reservoir sampling
        let mut num_chosen = 0;
        let mut num_seen = 0;

        for member in &self.inner {
            if !picker(member) {
                continue;
            }

            num_seen += 1;
            if num_chosen < wanted {
                num_chosen += 1;
                output.push(member.clone());
            } else {
                let replace_at = rng.random_range(0..num_seen);
                if replace_at < wanted {
                    output[replace_at] = member.clone();
                }
            }
        }
    }

    pub(crate) fn choose_down_members(
        &self,
        wanted: usize,
        output: &mut Vec<Member<T>>,
        rng: impl RngExt,
    ) {
        self.choose_members(wanted, output, rng, |member| !member.is_active());
    }

    pub(crate) fn choose_active_members<F>(
        &self,
        wanted: usize,
        output: &mut Vec<Member<T>>,
        rng: impl RngExt,
        picker: F,
    ) where
        F: Fn(&T) -> bool,
    {
        self.choose_members(wanted, output, rng, |member| {
            member.is_active() && picker(member.id())
        });
    }

    pub(crate) fn remove_if_down(&mut self, id: &T) -> Option<Member<T>> {
        let position = self
            .position_of(&id.addr())
            .filter(|&pos| &self.inner[pos].id == id && self.inner[pos].state == State::Down);

        position.map(|pos| {
            let removed = self.inner.swap_remove(pos);
            self.index.remove(&removed.id.addr(), pos);
            if let Some(moved) = self.inner.get(pos) {
                // It was the last member, at the vector's old end.
                self.index.moved(&moved.id.addr(), self.inner.len(), pos);
            }
            removed
        })
    }

    pub(crate) fn iter_active(&self) -> impl Iterator<Item = &Member<T>> {
        self.inner.iter().filter(|m| m.is_active())
    }

    /// The member known at `addr`, whatever its state (jujud patch 13).
    pub(crate) fn get(&self, addr: &T::Addr) -> Option<&Member<T>> {
        self.position_of(addr).map(|pos| &self.inner[pos])
    }

    pub(crate) fn is_active(&self, id: &T) -> bool {
        self.position_of(&id.addr())
            .is_some_and(|pos| &self.inner[pos].id == id && self.inner[pos].is_active())
    }

    pub(crate) fn apply_existing_if<F: Fn(&Member<T>) -> bool>(
        &mut self,
        update: Member<T>,
        condition: F,
    ) -> Option<ApplySummary<T>> {
        let hash = self.index.hash(&update.id().addr());
        self.apply_existing_hashed(update, hash, condition)
    }

    /// jujud patch (PATCHED.md, 20): `apply_existing_if` with the hash of
    /// the update's address given (`hash_of`).
    fn apply_existing_hashed<F: Fn(&Member<T>) -> bool>(
        &mut self,
        mut update: Member<T>,
        hash: u64,
        condition: F,
    ) -> Option<ApplySummary<T>> {
        let position = self.position_of_hashed(&update.id().addr(), hash);
        if let Some(known_member) = position.map(|pos| &mut self.inner[pos]) {
            let id_conflict = known_member.id != update.id;

            // If the update wins the conflict, the full member
            // state is replaced (it's essentially a rejoin)
            // If it doesn't, it gets discarded
            if id_conflict && known_member.id.win_addr_conflict(&update.id) {
                return Some(ApplySummary {
                    is_active_now: known_member.is_active(),
                    apply_successful: false,
                    changed_active_set: false,
                    conflict: ConflictResult::Lost,
                });
            }

            if !condition(known_member) {
                return Some(ApplySummary {
                    is_active_now: known_member.is_active(),
                    apply_successful: false,
                    changed_active_set: false,
                    conflict: if id_conflict {
                        ConflictResult::FailedCondition
                    } else {
                        ConflictResult::NoConflict
                    },
                });
            }
            let was_active = known_member.is_active();
            let was_state = known_member.state;

            let (apply_successful, conflict) = if id_conflict {
                core::mem::swap(&mut known_member.id, &mut update.id);
                known_member.state = update.state;
                known_member.incarnation = update.incarnation;
                (true, ConflictResult::Replaced(update.id))
            } else {
                (
                    known_member.change_state(update.incarnation, update.state),
                    ConflictResult::NoConflict,
                )
            };

            let is_active_now = known_member.is_active();
            let changed_active_set = is_active_now != was_active;
            if apply_successful {
                let now_state = known_member.state;
                self.transitions.record(Some(was_state), now_state, !id_conflict);
            }

            if changed_active_set {
                // XXX Overzealous checking
                if is_active_now {
                    self.num_active = self.num_active.saturating_add(1);
                } else {
                    self.num_active = self.num_active.saturating_sub(1);
                }
            }

            Some(ApplySummary {
                is_active_now,
                apply_successful,
                changed_active_set,
                conflict,
            })
        } else {
            None
        }
    }

    /// `apply_hashed`, hashing the update's address (the tests' form).
    #[cfg(test)]
    pub(crate) fn apply(&mut self, update: Member<T>, rng: impl RngExt) -> ApplySummary<T> {
        let hash = self.index.hash(&update.id().addr());
        self.apply_hashed(update, hash, rng)
    }

    /// jujud patch (PATCHED.md, 20): `apply` with the hash of the update's
    /// address given (`hash_of`): an update is hashed once on its way in,
    /// not again by each lookup it makes.
    pub(crate) fn apply_hashed(&mut self, update: Member<T>, hash: u64, mut rng: impl RngExt) -> ApplySummary<T> {
        self.apply_existing_hashed(update.clone(), hash, |_member| true)
            .unwrap_or_else(|| {
                // Unknown member, we'll register it
                let is_active_now = update.is_active();
                let update_state = update.state;

                // Insert at the end and swap with a random position.
                // Grown by an eighth, not doubled (jujud patch 7): every
                // member holds this table of every member, so a doubled
                // vector's empty half is N^2 memory over a large pool.
                if self.inner.len() == self.inner.capacity() {
                    self.inner.reserve_exact((self.inner.len() / 8).max(8));
                }
                self.inner.push(update);
                let inserted_at = self.inner.len() - 1;

                let swap_idx = (0..self.inner.len())
                    .choose(&mut rng)
                    .unwrap_or(inserted_at);

                self.inner.swap(swap_idx, inserted_at);
                if swap_idx != inserted_at {
                    // The member that was at `swap_idx` is now last; move
                    // its entry before the new member takes `swap_idx`.
                    let moved = self.inner[inserted_at].id.addr();
                    self.index.moved(&moved, swap_idx, inserted_at);
                }
                self.index.insert(&self.inner, swap_idx, hash);

                if is_active_now {
                    self.num_active = self.num_active.saturating_add(1);
                }
                self.transitions.record(None, update_state, true);

                ApplySummary {
                    is_active_now,
                    apply_successful: true,
                    // Registering a new active member changes the active set
                    changed_active_set: is_active_now,
                    conflict: ConflictResult::NoConflict,
                }
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub(crate) struct ApplySummary<T> {
    pub(crate) is_active_now: bool,
    pub(crate) apply_successful: bool,
    pub(crate) changed_active_set: bool,
    pub(crate) conflict: ConflictResult<T>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConflictResult<T> {
    NoConflict,
    Replaced(T),
    Lost,
    FailedCondition,
}

#[cfg(test)]
mod tests {

    use crate::Identity;

    use super::*;

    use alloc::vec;
    use rand::{SeedableRng, rngs::SmallRng};

    #[derive(Clone, Debug, PartialEq, Eq, Copy, PartialOrd, Ord)]
    struct Id(&'static str);
    impl crate::Identity for Id {
        type Addr = &'static str;

        fn renew(&self) -> Option<Self> {
            None
        }

        fn addr(&self) -> Self::Addr {
            self.0
        }

        fn win_addr_conflict(&self, _adversary: &Self) -> bool {
            panic!("addr is self, there'll never be a conflict");
        }
    }

    use State::*;

    #[test]
    fn alive_transitions() {
        let mut member = Member::new(Id("a"), 0, Alive);

        // Alive => Alive
        assert!(
            member.change_state(member.incarnation + 1, Alive),
            "can transition to a higher incarnation"
        );

        assert_eq!(1, member.incarnation);
        assert_eq!(Alive, member.state);

        assert!(
            !member.change_state(member.incarnation - 1, Alive),
            "cannot transition to a lower incarnation"
        );

        assert!(
            !member.change_state(member.incarnation, Alive),
            "cannot transition to same state and incarnation {:?}",
            member
        );

        // Alive => Suspect
        assert!(
            !member.change_state(member.incarnation - 1, Suspect),
            "lower suspect incarnation shouldn't transition"
        );

        assert!(
            member.change_state(member.incarnation, Suspect),
            "transition to suspect with same incarnation"
        );
        assert_eq!(Suspect, member.state);

        member = Member::new(Id("b"), 0, Alive);
        assert!(
            member.change_state(member.incarnation + 1, Suspect),
            "transition to suspect with higher incarnation"
        );
        assert_eq!(1, member.incarnation);
        assert_eq!(Suspect, member.state);

        // Alive => Down, always works
        assert!(
            Member::new("c", 1, Alive).change_state(0, Down),
            "transitions to down on lower incarnation"
        );
        assert!(
            Member::new("c", 0, Alive).change_state(0, Down),
            "transitions to down on same incarnation"
        );
        assert!(
            Member::new("c", 0, Alive).change_state(1, Down),
            "transitions to down on higher incarnation"
        );
    }

    #[test]
    fn suspect_transitions() {
        let mut member = Member::new(Id("a"), 0, Suspect);

        // Suspect => Suspect
        assert!(
            member.change_state(member.incarnation + 1, Suspect),
            "can transition to a higher incarnation"
        );

        assert_eq!(1, member.incarnation);
        assert_eq!(Suspect, member.state);

        assert!(
            !member.change_state(member.incarnation - 1, Suspect),
            "cannot transition to a lower incarnation"
        );

        assert!(
            !member.change_state(member.incarnation, Suspect),
            "cannot transition to same state and incarnation {:?}",
            member
        );

        // Suspect => Alive
        assert!(
            !member.change_state(member.incarnation - 1, Alive),
            "lower alive incarnation shouldn't transition"
        );
        assert!(
            !member.change_state(member.incarnation, Alive),
            "same alive incarnation shouldn't transition"
        );

        assert!(
            member.change_state(member.incarnation + 1, Alive),
            "can transition to alive with higher incarnation"
        );
        assert_eq!(Alive, member.state);

        // Suspect => Down, always works
        assert!(
            Member::new("c", 1, Suspect).change_state(0, Down),
            "transitions to down on lower incarnation"
        );
        assert!(
            Member::new("c", 0, Suspect).change_state(0, Down),
            "transitions to down on same incarnation"
        );
        assert!(
            Member::new("c", 0, Suspect).change_state(1, Down),
            "transitions to down on higher incarnation"
        );
    }

    #[test]
    fn down_never_transitions() {
        let mut member = Member::new("dead", 1, Down);

        for incarnation in 0..=2 {
            assert!(!member.change_state(incarnation, Alive));
            assert!(!member.change_state(incarnation, Suspect));
            assert!(!member.change_state(incarnation, Down));
        }
    }

    #[test]
    fn next_walks_sequentially_then_shuffles() {
        let ordered_ids = vec![Id("1"), Id("2"), Id("3"), Id("4"), Id("5")];
        let mut members = Members::new(ordered_ids.iter().cloned().map(Member::alive).collect());

        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        for wanted in ordered_ids.iter() {
            let got = members
                .next(&mut rng)
                .expect("Non-empty set of Alive members should always yield Some()")
                .id;
            assert_eq!(wanted, &got);
        }

        // By now we walked through all known live members so
        // the internal state should've shuffled.
        // We'll verify that by calling `next()` multiple
        // times and comparing with the original `ordered_ids`
        let mut after_shuffle = (0..ordered_ids.len())
            .map(|_| members.next(&mut rng).unwrap().id)
            .collect::<Vec<_>>();
        assert_ne!(ordered_ids, after_shuffle);

        // The shuffle only happens once the cursor walks
        // through the whole set, so `after_shuffle` should
        // contain every member, like `ordered_ids`, but in
        // a distinct order
        after_shuffle.sort_unstable();
        assert_eq!(ordered_ids, after_shuffle);
    }

    // jujud patch (PATCHED.md, 10)
    #[test]
    fn the_index_follows_every_insertion_removal_and_shuffle() {
        const NAMES: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);
        let check = |m: &Members<Id>| {
            for (pos, member) in m.inner.iter().enumerate() {
                assert_eq!(Some(pos), m.position_of(&member.id.0), "{:?}", member.id);
            }
            assert_eq!(m.index.get(&m.inner, &"zz", m.index.hash(&"zz")), None);
        };
        for name in NAMES {
            let _ = members.apply(Member::alive(Id(name)), &mut rng);
            check(&members);
        }
        for name in ["c", "h", "l", "a"] {
            let _ = members.apply(Member::down(Id(name)), &mut rng);
            assert!(members.remove_if_down(&Id(name)).is_some());
            assert_eq!(None, members.position_of(&name));
            check(&members);
        }
        for _ in 0..20 {
            let _ = members.next(&mut rng);
            check(&members);
        }
        let _ = members.apply(Member::alive(Id("c")), &mut rng);
        check(&members);
        assert_eq!(9, members.inner.len());
    }

    // jujud patch (PATCHED.md, 16): the open-addressing index against a
    // plain map, across growth, removals (and the slots they leave) and
    // moves, over thousands of random operations.
    #[test]
    fn the_index_agrees_with_a_map_over_random_operations() {
        use alloc::collections::BTreeMap;
        use alloc::string::ToString;
        let names: Vec<&'static str> =
            (0..600).map(|i| &*alloc::boxed::Box::leak(i.to_string().into_boxed_str())).collect();
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(16);
        for round in 0..20_000 {
            let name = names[rng.random_range(0..names.len())];
            if rng.random_bool(0.6) {
                let _ = members.apply(Member::alive(Id(name)), &mut rng);
            } else if members.position_of(&name).is_some() {
                let _ = members.apply(Member::down(Id(name)), &mut rng);
                assert!(members.remove_if_down(&Id(name)).is_some());
            }
            if round % 97 == 0 {
                let _ = members.next(&mut rng);
            }
            if round % 501 == 0 || round > 19_900 {
                let model: BTreeMap<&str, usize> =
                    members.inner.iter().enumerate().map(|(p, m)| (m.id.0, p)).collect();
                assert_eq!(model.len(), members.inner.len(), "no duplicated address");
                for name in &names {
                    assert_eq!(members.position_of(name), model.get(name).copied(), "{name}");
                }
            }
        }
    }

    // jujud patch (PATCHED.md, 17): the hint a batch uses to load a
    // member's row ahead names that member's position (nearly always: a
    // 16-bit tag may match another member by chance) and nothing for an
    // address not held, as the table grows and members are removed.
    #[cfg(feature = "std")]
    #[test]
    fn the_row_hint_names_the_member_the_lookup_finds() {
        use alloc::string::ToString;
        let names: Vec<&'static str> =
            (0..3_000).map(|i| &*alloc::boxed::Box::leak(i.to_string().into_boxed_str())).collect();
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(17);
        for name in &names[..2_000] {
            let _ = members.apply(Member::alive(Id(name)), &mut rng);
        }
        for name in names[..2_000].iter().step_by(3) {
            let _ = members.apply(Member::down(Id(name)), &mut rng);
            assert!(members.remove_if_down(&Id(name)).is_some());
        }
        let (mut held, mut hinted) = (0, 0);
        for name in &names {
            let hint = members.index.likely_pos(members.hash_of(name));
            match members.position_of(name) {
                Some(pos) => {
                    held += 1;
                    hinted += usize::from(hint == Some(pos));
                }
                None => assert!(hint.is_none_or(|p| members.inner[p].id.0 != *name), "{name}"),
            }
        }
        assert_eq!(held, members.len());
        assert!(hinted * 100 >= held * 97, "{hinted} of {held} rows hinted");
    }

    // jujud patch (PATCHED.md, 9)
    #[test]
    fn transitions_count_suspicions_and_refutations() {
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);
        let counts = |m: &Members<Id>| (m.transitions().suspected, m.transitions().refuted);

        let _ = members.apply(Member::alive(Id("a")), &mut rng);
        assert_eq!((0, 0), counts(&members), "a new alive member is no suspicion");

        let _ = members.apply(Member::new(Id("a"), 0, State::Suspect), &mut rng);
        assert_eq!((1, 0), counts(&members), "alive to suspect");

        let _ = members.apply(Member::new(Id("a"), 0, State::Suspect), &mut rng);
        assert_eq!((1, 0), counts(&members), "the same suspicion heard again counts once");

        let _ = members.apply(Member::new(Id("a"), 1, State::Alive), &mut rng);
        assert_eq!((1, 1), counts(&members), "refuted with a higher incarnation");

        let _ = members.apply(Member::new(Id("b"), 0, State::Suspect), &mut rng);
        assert_eq!((2, 1), counts(&members), "first learned as suspect");

        let _ = members.apply(Member::down(Id("b")), &mut rng);
        assert_eq!((2, 1), counts(&members), "suspect to down is no refutation");

        let _ = members.apply(Member::new(Id("a"), 0, State::Suspect), &mut rng);
        assert_eq!((2, 1), counts(&members), "a stale suspicion is not applied");
    }

    #[test]
    fn apply_existing_if_behaviour() {
        let mut members = Members::new(Vec::new());

        assert_eq!(
            None,
            members.apply_existing_if(Member::alive(Id("1")), |_member| true),
            "Only yield None only if member is not found"
        );

        let mut rng = SmallRng::seed_from_u64(0xF0CA);
        let _ = members.apply(Member::alive(Id("1")), &mut rng);

        assert_ne!(
            None,
            members.apply_existing_if(Member::alive(Id("1")), |_member| true),
            "Must yield Some() if existing, regardless of condition"
        );

        assert_ne!(
            None,
            members.apply_existing_if(Member::alive(Id("1")), |_member| false),
            "Must yield Some() if existing, regardless of condition"
        );
    }

    #[test]
    fn apply_summary_behaviour() {
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        // New and active member
        let res = members.apply(Member::suspect(Id("1")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: true,
                apply_successful: true,
                changed_active_set: true,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());
        assert_eq!(1, members.num_active());

        // Failed attempt to change member id=1 to alive
        // (since it's already suspect with same incarnation)
        let res = members.apply(Member::alive(Id("1")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: true,
                apply_successful: false,
                changed_active_set: false,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());

        // Successful attempt at changing member id=1 to
        // alive by using a higher incarnation
        let res = members.apply(Member::new(Id("1"), 1, State::Alive), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: true,
                apply_successful: true,
                changed_active_set: false,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());

        // Change existing member to down
        let res = members.apply(Member::down(Id("1")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: false,
                apply_successful: true,
                changed_active_set: true,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());
        assert_eq!(0, members.num_active());

        // New and inactive member
        let res = members.apply(Member::down(Id("2")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: false,
                apply_successful: true,
                changed_active_set: false,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(2, members.len());
        assert_eq!(0, members.num_active());
    }

    #[test]
    fn remove_if_down_works() {
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        assert_eq!(
            None,
            members.remove_if_down(&Id("1")),
            "cant remove member that does not exist"
        );
        let _ = members.apply(Member::alive(Id("1")), &mut rng);

        assert_eq!(
            None,
            members.remove_if_down(&Id("1")),
            "cant remove member that isnt down"
        );
        let _ = members.apply(Member::down(Id("1")), &mut rng);

        assert_eq!(
            Some(Member::down(Id("1"))),
            members.remove_if_down(&Id("1")),
            "must return the removed member"
        );
    }

    #[test]
    fn next_yields_none_with_no_active_members() {
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        assert_eq!(
            None,
            members.next(&mut rng),
            "next() should yield None when there are no members"
        );

        let _ = members.apply(Member::down(Id("-1")), &mut rng);
        let _ = members.apply(Member::down(Id("-2")), &mut rng);
        let _ = members.apply(Member::down(Id("-3")), &mut rng);

        assert_eq!(
            None,
            members.next(&mut rng),
            "next() should yield None when there are no active members"
        );

        let _ = members.apply(Member::alive(Id("1")), &mut rng);

        for _i in 0..10 {
            assert_eq!(
                Some(Id("1")),
                members.next(&mut rng).map(|m| m.id),
                "next() should yield the same member if its the only active"
            );
        }
    }

    // jujud patch (PATCHED.md, 8): a large pool is sampled by position,
    // with the same answers the reservoir walk gives: distinct members the
    // picker accepts, as many as wanted, or every one when fewer qualify.
    #[test]
    fn choose_members_in_a_large_pool() {
        let ids: Vec<Id> =
            (0..1_000).map(|i| Id(alloc::boxed::Box::leak(alloc::format!("{i}").into_boxed_str()))).collect();
        let mut all = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            all.push(if i % 10 == 0 { Member::down(*id) } else { Member::alive(*id) });
        }
        let members = Members::new(all);
        let mut rng = SmallRng::seed_from_u64(0xF0CA);
        let mut seen = alloc::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut out = Vec::new();
            members.choose_active_members(3, &mut out, &mut rng, |_| true);
            assert_eq!(3, out.len());
            assert!(out.iter().all(Member::is_active));
            let distinct: alloc::collections::BTreeSet<_> = out.iter().map(|m| m.id.0).collect();
            assert_eq!(3, distinct.len(), "distinct: {out:?}");
            seen.extend(distinct);
        }
        assert!(seen.len() > 400, "spread over the pool: {}", seen.len());
        // Few qualify: every one of them, found by the walk.
        let mut out = Vec::new();
        members.choose_active_members(3, &mut out, &mut rng, |id| id.0 == "7" || id.0 == "8");
        let mut got: Vec<_> = out.iter().map(|m| m.id.0).collect();
        got.sort_unstable();
        assert_eq!(vec!["7", "8"], got);
        // Down members are a tenth of the pool: still found.
        let mut out = Vec::new();
        members.choose_down_members(5, &mut out, &mut rng);
        assert_eq!(5, out.len());
        assert!(out.iter().all(|m| !m.is_active()));
    }

    #[test]
    fn choose_active_members_behaviour() {
        let members = Members::new(Vec::from([
            // 5 active members
            Member::alive(Id("1")),
            Member::alive(Id("2")),
            Member::alive(Id("3")),
            Member::suspect(Id("4")),
            Member::suspect(Id("5")),
            // 2 down
            Member::down(Id("6")),
            Member::down(Id("7")),
        ]));

        assert_eq!(7, members.len());
        assert_eq!(5, members.num_active());

        let mut out = Vec::new();
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        out.clear();
        members.choose_active_members(0, &mut out, &mut rng, |_| true);
        assert_eq!(0, out.len(), "Can pointlessly choose 0 members");

        out.clear();
        members.choose_active_members(10, &mut out, &mut rng, |_| false);
        assert_eq!(0, out.len(), "Filtering works");

        out.clear();
        members.choose_active_members(members.len(), &mut out, &mut rng, |_| true);
        assert_eq!(
            members.num_active(),
            out.len(),
            "Only chooses active members"
        );

        out.clear();
        members.choose_active_members(2, &mut out, &mut rng, |_| true);
        assert_eq!(2, out.len(), "Respects `wanted` even if we have more");

        out.clear();
        members.choose_active_members(usize::MAX, &mut out, &mut rng, |&member_id| {
            member_id.0.parse::<usize>().expect("number") > 4
        });
        assert_eq!(vec![Member::suspect(Id("5"))], out);

        out.clear();
        members.choose_down_members(3, &mut out, &mut rng);
        assert_eq!(2, out.len());
        assert!(out.iter().any(|m| m.id == Id("7")));
        assert!(out.iter().any(|m| m.id == Id("6")));
    }

    #[test]
    fn sets_replaced_id_on_addr_conflict() {
        let id = crate::testing::ID::new(1).rejoinable();
        let mut members = Members::new(Vec::from([
            // 5 active members
            Member::alive(id),
        ]));

        let renewed = id.renew().unwrap();
        let summary = members
            .apply_existing_if(Member::alive(renewed), |_| true)
            .expect("member found");

        assert!(summary.apply_successful);
        assert_eq!(ConflictResult::Replaced(id), summary.conflict);

        let another = renewed.renew().unwrap();
        let summary = members
            .apply_existing_if(Member::alive(another), |_| false)
            .expect("member found");

        assert!(!summary.apply_successful);
        assert_eq!(
            ConflictResult::FailedCondition,
            summary.conflict,
            "must not apply if condition fails"
        );

        // trying to go back to the past leads to
        // conflict resolution failure
        let summary = members
            .apply_existing_if(Member::alive(id), |_| true)
            .expect("member found");

        assert_eq!(ConflictResult::Lost, summary.conflict,);
        assert!(!summary.apply_successful, "must not apply if conflict lost");
    }
}
