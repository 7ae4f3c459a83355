//! This module contains a generic Vector Clock implementation.
//!
//! # Examples
//!
//! ```
//! use crdts::{Dot, VClock, CmRDT};
//!
//! let mut a = VClock::new();
//! let mut b = VClock::new();
//! a.apply(Dot::new("A", 2));
//! b.apply(Dot::new("A", 1));
//! assert!(a > b);
//! ```

use core::cmp::{self, Ordering};
use core::convert::Infallible;
use core::fmt::{self, Debug, Display};
use core::mem;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{CmRDT, CvRDT, Dot, DotRange, ResetRemove};

/// A `VClock` is a standard vector clock.
/// It contains a set of "actors" and associated counters.
/// When a particular actor witnesses a mutation, their associated
/// counter in a `VClock` is incremented. `VClock` is typically used
/// as metadata for associated application data, rather than as the
/// container for application data. `VClock` just tracks causality.
/// It can tell you if something causally descends something else,
/// or if different replicas are "concurrent" (were mutated in
/// isolation, and need to be resolved externally).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VClock<A: Ord> {
    /// dots is the mapping from actors to their associated counters
    // jujud patch: a sorted vector instead of a BTreeMap (see `Dots`).
    pub dots: Dots<A>,
}

impl<A: Ord> Default for VClock<A> {
    fn default() -> Self {
        Self { dots: Dots::new() }
    }
}

/// jujud patch: a clock's dots as a vector sorted by actor, with the part
/// of `BTreeMap`'s API that this module uses. A `BTreeMap` allocates a
/// whole node (11 slots, about 280 bytes for a 16-byte actor) even for the
/// one entry most clocks hold; this holds one entry inline (no allocation
/// at all) and more in a vector of exactly their number. Encoded exactly
/// as the `BTreeMap` was (a serde map in actor order), so nothing on disk
/// or on the wire changes.
///
/// Invariant: `Many` never holds exactly one entry (that is `One`), so a
/// clock has one shape per content; equality and hashing go through the
/// sorted slice either way.
#[derive(Debug, Clone)]
pub enum Dots<A> {
    /// Exactly one actor's counter, inline.
    One([(A, u64); 1]),
    /// None, or two or more, sorted by actor.
    Many(Vec<(A, u64)>),
}

impl<A: PartialEq> PartialEq for Dots<A> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<A: Eq> Eq for Dots<A> {}

impl<A: core::hash::Hash> core::hash::Hash for Dots<A> {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h)
    }
}

impl<A> Dots<A> {
    fn as_slice(&self) -> &[(A, u64)] {
        match self {
            Dots::One(one) => one,
            Dots::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [(A, u64)] {
        match self {
            Dots::One(one) => one,
            Dots::Many(v) => v,
        }
    }

    /// The entries as a vector (allocates for an inline one).
    fn into_vec(self) -> Vec<(A, u64)> {
        match self {
            Dots::One(one) => Vec::from(one),
            Dots::Many(v) => v,
        }
    }

    /// Back to the one shape for this content: a lone entry goes inline.
    fn from_vec(mut v: Vec<(A, u64)>) -> Self {
        if v.len() == 1 {
            if let Some(only) = v.pop() {
                return Dots::One([only]);
            }
        }
        Dots::Many(v)
    }
}

impl<A: Ord> Dots<A> {
    /// No dots.
    pub fn new() -> Self {
        Dots::Many(Vec::new())
    }

    fn find(&self, actor: &A) -> Result<usize, usize> {
        self.as_slice().binary_search_by(|(a, _)| a.cmp(actor))
    }

    /// The counter of `actor`, if it has one.
    pub fn get(&self, actor: &A) -> Option<&u64> {
        self.find(actor).ok().map(|i| &self.as_slice()[i].1)
    }

    /// Sets `actor`'s counter; returns the one it replaced. The first
    /// entry goes inline; a vector grows by exactly one slot when full
    /// (clocks are small and rarely grow).
    pub fn insert(&mut self, actor: A, counter: u64) -> Option<u64> {
        match self.find(&actor) {
            Ok(i) => Some(mem::replace(&mut self.as_mut_slice()[i].1, counter)),
            Err(i) => {
                *self = match mem::replace(self, Dots::new()) {
                    Dots::Many(v) if v.is_empty() => Dots::One([(actor, counter)]),
                    Dots::One([only]) => {
                        let mut v = Vec::with_capacity(2);
                        v.push(only);
                        v.insert(i, (actor, counter));
                        Dots::Many(v)
                    }
                    Dots::Many(mut v) => {
                        if v.len() == v.capacity() {
                            v.reserve_exact(1);
                        }
                        v.insert(i, (actor, counter));
                        Dots::Many(v)
                    }
                };
                None
            }
        }
    }

    /// Removes `actor`'s counter.
    pub fn remove(&mut self, actor: &A) -> Option<u64> {
        let i = self.find(actor).ok()?;
        let mut v = mem::replace(self, Dots::new()).into_vec();
        let (_, counter) = v.remove(i);
        *self = Dots::from_vec(v);
        Some(counter)
    }

    /// The dots in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&A, &u64)> {
        self.as_slice().iter().map(|(a, c)| (a, c))
    }

    /// Number of actors.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are no dots.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl<A: Ord> Default for Dots<A> {
    fn default() -> Self {
        Dots::new()
    }
}

impl<A: Ord> std::iter::FromIterator<(A, u64)> for Dots<A> {
    /// Later entries for one actor replace earlier ones, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (A, u64)>>(iter: I) -> Self {
        let map: BTreeMap<A, u64> = iter.into_iter().collect();
        Dots::from_vec(map.into_iter().collect())
    }
}

impl<A: Ord> std::iter::IntoIterator for Dots<A> {
    type Item = (A, u64);
    type IntoIter = std::vec::IntoIter<(A, u64)>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl<A: Ord + Serialize> Serialize for Dots<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.as_slice().iter().map(|(a, c)| (a, c)))
    }
}

impl<'de, A: Ord + Deserialize<'de>> Deserialize<'de> for Dots<A> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<A, u64>::deserialize(d)?;
        Ok(Dots::from_vec(map.into_iter().collect()))
    }
}

impl<A: Ord> PartialOrd for VClock<A> {
    fn partial_cmp(&self, other: &VClock<A>) -> Option<Ordering> {
        // This algorithm is pretty naive, I think there's a way to
        // just track if the ordering changes as we iterate over the
        // active dots zipped by actor.
        // ie. it's None if the ordering changes from Less to Greator
        //     or vice-versa.

        if self == other {
            Some(Ordering::Equal)
        } else if other.dots.iter().all(|(w, c)| self.get(w) >= *c) {
            Some(Ordering::Greater)
        } else if self.dots.iter().all(|(w, c)| other.get(w) >= *c) {
            Some(Ordering::Less)
        } else {
            None
        }
    }
}

impl<A: Ord + Display> Display for VClock<A> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "<")?;
        for (i, (actor, count)) in self.dots.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}:{}", actor, count)?;
        }
        write!(f, ">")
    }
}

impl<A: Ord> ResetRemove<A> for VClock<A> {
    /// Forget any actors that have smaller counts than the
    /// count in the given vclock
    fn reset_remove(&mut self, other: &Self) {
        for Dot { actor, counter } in other.iter() {
            if counter >= self.get(actor) {
                self.dots.remove(actor);
            }
        }
    }
}

impl<A: Ord + Clone + Debug> CmRDT for VClock<A> {
    type Op = Dot<A>;
    type Validation = DotRange<A>;

    fn validate_op(&self, dot: &Self::Op) -> Result<(), Self::Validation> {
        let next_counter = self.get(&dot.actor) + 1;
        if dot.counter > next_counter {
            Err(DotRange {
                actor: dot.actor.clone(),
                counter_range: next_counter..dot.counter,
            })
        } else {
            Ok(())
        }
    }

    /// Monotonically adds the given actor version to
    /// this VClock.
    ///
    /// # Examples
    /// ```
    /// use crdts::{VClock, Dot, CmRDT};
    /// let mut v = VClock::new();
    ///
    /// v.apply(Dot::new("A", 2));
    ///
    /// // now all dots applied to `v` from actor `A` where
    /// // the counter is not bigger than 2 are nops.
    /// v.apply(Dot::new("A", 0));
    /// assert_eq!(v.get(&"A"), 2);
    /// ```
    fn apply(&mut self, dot: Self::Op) {
        if self.get(&dot.actor) < dot.counter {
            self.dots.insert(dot.actor, dot.counter);
        }
    }
}

impl<A: Ord + Clone + Debug> CvRDT for VClock<A> {
    type Validation = Infallible;

    fn validate_merge(&self, _other: &Self) -> Result<(), Self::Validation> {
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        for dot in other.into_iter() {
            self.apply(dot);
        }
    }
}

impl<A: Ord> VClock<A> {
    /// Returns a new `VClock` instance.
    pub fn new() -> Self {
        Default::default()
    }

    /// Returns a clone of self but with information that is older than given clock is
    /// forgotten
    pub fn clone_without(&self, base_clock: &VClock<A>) -> VClock<A>
    where
        A: Clone,
    {
        let mut cloned = self.clone();
        cloned.reset_remove(base_clock);
        cloned
    }

    /// Generate Op to increment an actor's counter.
    ///
    /// # Examples
    /// ```
    /// use crdts::{VClock, CmRDT};
    /// let mut a = VClock::new();
    ///
    /// // `a.inc()` does not mutate the vclock!
    /// let op = a.inc("A");
    /// assert_eq!(a, VClock::new());
    ///
    /// // we must apply the op to the VClock to have
    /// // its edit take effect.
    /// a.apply(op.clone());
    /// assert_eq!(a.get(&"A"), 1);
    ///
    /// // Op's can be replicated to another node and
    /// // applied to the local state there.
    /// let mut other_node = VClock::new();
    /// other_node.apply(op);
    /// assert_eq!(other_node.get(&"A"), 1);
    /// ```
    pub fn inc(&self, actor: A) -> Dot<A>
    where
        A: Clone,
    {
        self.dot(actor).inc()
    }

    /// Return the associated counter for this actor.
    /// All actors not in the vclock have an implied count of 0
    pub fn get(&self, actor: &A) -> u64 {
        self.dots.get(actor).cloned().unwrap_or(0)
    }

    /// Return the Dot for a given actor
    pub fn dot(&self, actor: A) -> Dot<A> {
        let counter = self.get(&actor);
        Dot::new(actor, counter)
    }

    /// True if two vector clocks have diverged.
    ///
    /// # Examples
    /// ```
    /// use crdts::{VClock, CmRDT};
    /// let (mut a, mut b) = (VClock::new(), VClock::new());
    /// a.apply(a.inc("A"));
    /// b.apply(b.inc("B"));
    /// assert!(a.concurrent(&b));
    /// ```
    pub fn concurrent(&self, other: &VClock<A>) -> bool {
        self.partial_cmp(other).is_none()
    }

    /// Returns `true` if this vector clock contains nothing.
    pub fn is_empty(&self) -> bool {
        self.dots.is_empty()
    }

    /// Returns the common elements (same actor and counter)
    /// for two `VClock` instances.
    pub fn intersection(left: &VClock<A>, right: &VClock<A>) -> VClock<A>
    where
        A: Clone,
    {
        let mut dots = Dots::new();
        for (left_actor, left_counter) in left.dots.iter() {
            let right_counter = right.get(left_actor);
            if right_counter == *left_counter {
                dots.insert(left_actor.clone(), *left_counter);
            }
        }
        Self { dots }
    }

    /// Reduces this VClock to the greatest-lower-bound of the given
    /// VClock and itsef, as an example see the following code.
    /// ``` rust
    /// use crdts::{VClock, Dot, ResetRemove, CmRDT};
    /// let mut c = VClock::new();
    /// c.apply(Dot::new(23, 6));
    /// c.apply(Dot::new(89, 14));
    /// let c2 = c.clone();
    ///
    /// c.glb(&c2); // this is a no-op since `glb { c, c } = c`
    /// assert_eq!(c, c2);
    ///
    /// c.apply(Dot::new(43, 1));
    /// assert_eq!(c.get(&43), 1);
    /// c.glb(&c2); // should remove the 43 => 1 entry
    /// assert_eq!(c.get(&43), 0);
    /// ```
    pub fn glb(&mut self, other: &Self) {
        self.dots = mem::take(&mut self.dots)
            .into_iter()
            .filter_map(|(actor, count)| {
                // Since an actor missing from the dots map has an implied
                // counter of 0 we can save some memory, and remove the actor.
                let min_count = cmp::min(count, other.get(&actor));
                match min_count {
                    0 => None,
                    _ => Some((actor, min_count)),
                }
            })
            .collect();
    }

    /// Returns an iterator over the dots in this vclock
    pub fn iter(&self) -> impl Iterator<Item = Dot<&A>> {
        self.dots.iter().map(|(a, c)| Dot {
            actor: a,
            counter: *c,
        })
    }
}

/// Generated from calls to VClock::into_iter()
pub struct IntoIter<A: Ord> {
    btree_iter: std::vec::IntoIter<(A, u64)>,
}

impl<A: Ord> std::iter::Iterator for IntoIter<A> {
    type Item = Dot<A>;

    fn next(&mut self) -> Option<Dot<A>> {
        self.btree_iter
            .next()
            .map(|(actor, counter)| Dot::new(actor, counter))
    }
}

impl<A: Ord> std::iter::IntoIterator for VClock<A> {
    type Item = Dot<A>;
    type IntoIter = IntoIter<A>;

    /// Consumes the vclock and returns an iterator over dots in the clock
    fn into_iter(self) -> Self::IntoIter {
        IntoIter {
            btree_iter: self.dots.into_iter(),
        }
    }
}

impl<A: Ord + Clone + Debug> std::iter::FromIterator<Dot<A>> for VClock<A> {
    fn from_iter<I: IntoIterator<Item = Dot<A>>>(iter: I) -> Self {
        let mut clock = VClock::default();

        for dot in iter {
            clock.apply(dot);
        }

        clock
    }
}

impl<A: Ord + Clone + Debug> From<Dot<A>> for VClock<A> {
    fn from(dot: Dot<A>) -> Self {
        let mut clock = VClock::default();
        clock.apply(dot);
        clock
    }
}

#[cfg(feature = "quickcheck")]
use quickcheck::{Arbitrary, Gen};

#[cfg(feature = "quickcheck")]
impl<A: Ord + Clone + Debug + Arbitrary> Arbitrary for VClock<A> {
    fn arbitrary(g: &mut Gen) -> Self {
        let mut clock = VClock::default();

        for _ in 0..u8::arbitrary(g) % 10 {
            clock.apply(Dot::arbitrary(g));
        }

        clock
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let mut shrunk_clocks = Vec::default();
        for dot in self.clone().into_iter() {
            let clock_without_dot: Self = self.clone().into_iter().filter(|d| d != &dot).collect();

            for shrunk_dot in dot.shrink() {
                let mut clock = clock_without_dot.clone();
                clock.apply(shrunk_dot);
                shrunk_clocks.push(clock);
            }

            shrunk_clocks.push(clock_without_dot);
        }

        Box::new(shrunk_clocks.into_iter())
    }
}
