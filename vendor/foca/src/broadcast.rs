/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use bytes::BufMut;

/// A type capable of decoding a (associated) broadcast from a buffer
/// and deciding whether to keep disseminating it for other members
/// of the cluster (when it's new information) or to discard it (when
/// its outdated/stale).
pub trait BroadcastHandler<T> {
    /// A unique identifier for the broadcasts this handler manages
    ///
    /// It should be able to compare itself against an arbitrary number
    /// of other [`Self::Key`] instances and decide wether it
    /// replaces it or not so conflicting/stale information isn't
    /// disseminated.
    type Key: Invalidates;

    /// The error type that `receive_item` may emit. Will be wrapped
    /// by [`crate::Error::CustomBroadcast`].
    type Error: core::error::Error + Send + Sync + 'static;

    /// Decodes a [`Self::Key`] from a buffer and either discards
    /// it or tells Foca to persist and disseminate it.
    ///
    /// `Sender` is `None` when you're adding broadcast data directly,
    /// via [`crate::Foca::add_broadcast`], otherwise it will be the
    /// address of the member that sent the data. Notice that Foca
    /// doesn't track the origin of packets- if you need it you
    /// have to add it to the data you're broadcasting.
    ///
    /// When you receive a broadcast you have to decide whether it's
    /// new information that needs to be disseminated (`Ok(Some(...))`)
    /// or not (`Ok(None)`).
    ///
    /// Always yielding `Some(...)` is wrong because Foca will never
    /// know when to stop sending this information to other members.
    ///
    /// Example: Assume your custom broadcast is a simple Set-Key-Value
    /// operation. When you receive it you should check if your map
    /// contains the Key-Value pair; If it didn't, you yield
    /// `Some`, otherwise the operation is stale, so you yield `None`.
    ///
    /// The `data` parameter is the exact data provided to
    /// [`crate::Foca::add_broadcast`]. When Foca receives N custom
    /// broadcasts at once, this gets called N times.
    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&T>,
    ) -> Result<Option<Self::Key>, Self::Error>;

    /// Decides whether Foca should add broadcast data to the message
    /// it's about to send to active member `T`.
    ///
    /// Normally when Foca sends a message it always tries to include
    /// custom broadcasts alongside the information it actually
    /// cares about; This allows implementations to override this
    /// logic with something else.
    ///
    /// Example: You are running a heterogeneous cluster and some nodes
    /// are always very busy and you'd rather they never have to deal
    /// with the extra cpu/bandwidth cost of receiving/sending
    /// your custom broadcasts.
    ///
    /// Returning `true` tells Foca to proceed as it would normally,
    /// including broadcasts in the messages it sends when it can.
    ///
    /// Returning `false` tells Foca to not include such broadcasts
    /// in the message. It does *not* prevent the message from being
    /// sent, just keeps Foca from attaching extra data to them.
    fn should_add_broadcast_data(&self, _member: &T) -> bool {
        true
    }
}

/// A type that's able to look at another and decide wether it's
/// newer/fresher (i.e. invalidates) than it.
///
/// As you send/receive broadcasts, Foca will hold them for a while
/// as it disseminates the data to other cluster members. This trait
/// helps with replacing data that hasn't been fully disseminated
/// yet but you already know it's stale.
///
/// Example: Assume a versioned broadcast like `{key,version,...}`;
/// After you receive `{K, 0, ...}` and keep it, Foca will be
/// disseminating it. Soon after you receive `{K, 1, ...}` which
/// is a newer version for this broadcast. This trait enables
/// Foca to immediately stop disseminating the previous version,
/// even if it hasn't sent it to everyone it can yet.
pub trait Invalidates {
    /// When `item.invalidates(&other)` it means that Foca will
    /// keep `item` and discard `other` from its dissemination
    /// backlog.
    fn invalidates(&self, other: &Self) -> bool;
}

impl Invalidates for &[u8] {
    fn invalidates(&self, other: &Self) -> bool {
        self.eq(other)
    }
}

/// jujud patch (PATCHED.md, 14): what `Broadcasts::fill_retiring` asks as
/// it takes items from the backlog.
pub(crate) trait Retire<T> {
    /// Whether `item` is to be dropped from the backlog unsent.
    fn retire(&mut self, item: &T) -> bool;
    /// `item` was sent its last time and left the backlog.
    fn spent(&mut self, item: &T);
}

/// Retires nothing: `fill` as upstream (and custom broadcasts' fill).
struct KeepAll;

impl<T> Retire<T> for KeepAll {
    fn retire(&mut self, _item: &T) -> bool {
        false
    }

    fn spent(&mut self, _item: &T) {}
}

/// jujud patch (PATCHED.md, 5): how many backlog items in a row that do
/// not fit the buffer `fill` pops before it stops looking further.
const MAX_SKIPPED_IN_A_ROW: usize = 8;

/// jujud patch (PATCHED.md, 19): the backlog's order. An item with more
/// transmissions left goes first, then a longer one (upstream's heap
/// order); among items of one rank, the newest (memberlist's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    remaining_tx: u32,
    len: usize,
}

/// jujud patch (PATCHED.md, 19): the backlog as a pool per rank, served
/// highest rank first, instead of one binary heap. Ranks are few (a
/// transmission count times a handful of lengths), so taking an item is a
/// pop from the end of a pool's vector, not a sift through a heap of every
/// queued update: in a mass join that heap held about every member, and
/// its sifts' cache misses were half of `fill_retiring`'s time in the
/// simulator's 3,162 row. Within a rank the newest item goes first, as in
/// memberlist's queue: taken oldest first, the 10,000-member row joined in
/// 27 virtual s instead of 18 (old news that many already hold went out
/// before fresh news); drawn at random, 18 s as well, but a random read a
/// take. An empty pool is dropped, so the backlog holds no memory for
/// ranks it no longer has.
pub(crate) struct Broadcasts<V> {
    pools: BTreeMap<Rank, Vec<Entry<V>>>,
    len: usize,
    /// Items taken by the fill under way and kept, put back when it ends
    /// (so that no fill takes an item twice). Empty between fills.
    taken: Vec<Entry<V>>,
}

/// What a fill does with each item it takes.
enum Framing {
    /// The item's bytes as they are (member updates).
    Bare,
    /// The item's length as a big-endian `u16`, then its bytes (custom
    /// broadcasts).
    LenPrefixed,
}

impl<T> Broadcasts<T>
where
    T: Invalidates,
{
    pub(crate) fn new() -> Self {
        Self {
            pools: BTreeMap::new(),
            len: 0,
            taken: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// jujud patch (PATCHED.md, 11): queues `item` without looking for an
    /// older item it invalidates. For foca's member updates, where an
    /// older update still queued is harmless (every receiver orders a
    /// member's updates by identity, incarnation and state, as it must
    /// for datagrams that arrive out of order) and the scan was O(backlog)
    /// per update: O(N^3) over a pool of N members joining at once.
    pub(crate) fn add(&mut self, item: T, data: Vec<u8>, max_tx: usize) {
        self.push(Entry::new(item, data, max_tx));
    }

    /// jujud patch (PATCHED.md, 12): a pool grows by an eighth (at least
    /// 8 slots) when full, not doubled: every member of a pool holds a
    /// backlog of about every member during a mass join, and a doubled
    /// vector's empty half was a fifth of a 3,162-member simulation's
    /// peak heap.
    fn push(&mut self, entry: Entry<T>) {
        let pool = self.pools.entry(entry.rank()).or_default();
        if pool.len() == pool.capacity() {
            pool.reserve_exact((pool.len() / 8).max(8));
        }
        pool.push(entry);
        self.len += 1;
    }

    /// Takes the newest item of the highest rank.
    fn pop(&mut self) -> Option<Entry<T>> {
        let mut pool = self.pools.last_entry()?;
        let entry = pool.get_mut().pop().expect("an empty pool is never kept");
        if pool.get().is_empty() {
            pool.remove();
        }
        self.len -= 1;
        Some(entry)
    }

    pub(crate) fn add_or_replace(&mut self, item: T, data: Vec<u8>, max_tx: usize) {
        let mut removed = 0;
        self.pools.retain(|_, pool| {
            let before = pool.len();
            pool.retain(|node| !item.invalidates(&node.item));
            removed += before - pool.len();
            !pool.is_empty()
        });
        self.len -= removed;
        self.push(Entry::new(item, data, max_tx));
    }

    #[cfg(test)]
    pub(crate) fn fill(&mut self, buffer: impl BufMut, max_items: usize) -> usize {
        self.fill_retiring(buffer, max_items, &mut KeepAll)
    }

    /// `fill`, asking `retire` about each item taken from the backlog: an
    /// item it retires is dropped unsent (and does not count against
    /// `max_items`); `retire.spent` is told of each item sent its last
    /// time.
    pub(crate) fn fill_retiring(
        &mut self,
        buffer: impl BufMut,
        max_items: usize,
        retire: &mut impl Retire<T>,
    ) -> usize {
        self.take(buffer, max_items, Framing::Bare, retire)
    }

    pub(crate) fn fill_with_len_prefix(&mut self, buffer: impl BufMut, max_items: usize) -> usize {
        self.take(buffer, max_items, Framing::LenPrefixed, &mut KeepAll)
    }

    /// Writes up to `max_items` items into `buffer`, highest rank first
    /// (within a rank, newest first), each item at most once; an item
    /// sent its last time leaves the backlog. jujud patch (PATCHED.md, 5):
    /// stops after MAX_SKIPPED_IN_A_ROW items in a row that do not fit,
    /// instead of taking the whole backlog every time the buffer is
    /// nearly full.
    fn take(
        &mut self,
        mut buffer: impl BufMut,
        max_items: usize,
        framing: Framing,
        retire: &mut impl Retire<T>,
    ) -> usize {
        debug_assert!(self.taken.is_empty());
        let prefix = match framing {
            Framing::Bare => 0,
            Framing::LenPrefixed => 2,
        };
        let mut num_taken = 0;
        let mut skipped = 0;

        while buffer.has_remaining_mut() && num_taken < max_items && skipped < MAX_SKIPPED_IN_A_ROW {
            let Some(mut node) = self.pop() else {
                break;
            };
            debug_assert!(node.remaining_tx > 0);
            if retire.retire(&node.item) {
                continue;
            }
            if buffer.remaining_mut() < node.data.len() + prefix {
                skipped += 1;
                self.taken.push(node);
                continue;
            }
            skipped = 0;
            num_taken += 1;
            if prefix > 0 {
                debug_assert!(u16::try_from(node.data.len()).is_ok());
                buffer.put_u16(node.data.len() as u16);
            }
            buffer.put_slice(&node.data);
            node.remaining_tx -= 1;
            if node.remaining_tx > 0 {
                self.taken.push(node);
            } else {
                retire.spent(&node.item);
            }
        }

        self.put_back();
        num_taken
    }

    /// Returns the items the last fill took and kept to their pools, so
    /// that each pool's newest item is the one taken last (one that did
    /// not fit goes back on top of its pool, in its old place).
    fn put_back(&mut self) {
        let mut taken = core::mem::take(&mut self.taken);
        for node in taken.drain(..).rev() {
            self.push(node);
        }
        self.taken = taken;
    }
}

/// jujud patch (PATCHED.md, 16): an item's bytes up to this many are held
/// in its backlog entry itself. A member update is about 22 bytes (34 for
/// an IPv6 address); each held in its own allocation, a fill that took an
/// item read its bytes from a line of memory of their own: a cache miss
/// per item sent, 9 % of a 3,162-member simulation.
const INLINE_BYTES: usize = 38;

/// An item's encoded bytes: inline when short, on the heap otherwise.
#[derive(Debug, Clone)]
enum Data {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Heap(alloc::boxed::Box<[u8]>),
}

impl Data {
    fn new(data: Vec<u8>) -> Self {
        if data.len() <= INLINE_BYTES {
            let mut bytes = [0u8; INLINE_BYTES];
            bytes[..data.len()].copy_from_slice(&data);
            Data::Inline { len: data.len() as u8, bytes }
        } else {
            Data::Heap(data.into_boxed_slice())
        }
    }
}

impl core::ops::Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Data::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Data::Heap(b) => b,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry<T> {
    // jujud patch (PATCHED.md, 12): a `u32`, not a `usize`
    // (`max_transmissions` is a `u8`); patch 16: short data inline.
    remaining_tx: u32,
    data: Data,
    // not part of the rank (patch 19): within a rank, newest first
    item: T,
}

impl<T> Entry<T> {
    fn new(item: T, data: Vec<u8>, max_tx: usize) -> Self {
        debug_assert!(max_tx > 0);
        Self {
            remaining_tx: u32::try_from(max_tx).unwrap_or(u32::MAX),
            data: Data::new(data),
            item,
        }
    }

    fn rank(&self) -> Rank {
        Rank { remaining_tx: self.remaining_tx, len: self.data.len() }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    struct Key(&'static str);

    impl Invalidates for Key {
        fn invalidates(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    #[test]
    fn piggyback_behaviour() {
        let max_tx = 5;
        let mut piggyback = Broadcasts::new();

        assert!(piggyback.is_empty(), "Piggyback starts empty");

        piggyback.add_or_replace(Key("AA"), b"AAabc".to_vec(), max_tx);

        assert_eq!(1, piggyback.len());

        piggyback.add_or_replace(Key("AA"), b"AAcba".to_vec(), max_tx);

        assert_eq!(
            1,
            piggyback.len(),
            "add_or_replace with same key should replace"
        );

        let mut buf = Vec::new();

        for _i in 0..max_tx {
            buf.clear();
            let num_items = piggyback.fill(&mut buf, usize::MAX);
            assert_eq!(1, num_items);
            assert_eq!(
                b"AAcba",
                &buf[..],
                "Should transmit an item at most max_tx times"
            );
        }

        assert!(
            piggyback.is_empty(),
            "Should remove item after being used max_tx times"
        );
    }

    // jujud patch (PATCHED.md, 11)
    #[test]
    fn add_keeps_an_older_item_for_the_same_key() {
        let max_tx = 2;
        let mut piggyback = Broadcasts::new();
        piggyback.add(Key("AA"), b"AA1".to_vec(), max_tx);
        piggyback.add(Key("AA"), b"AA2".to_vec(), max_tx);
        assert_eq!(2, piggyback.len(), "add does not look for an older item");

        let mut sent = Vec::new();
        for _ in 0..max_tx {
            let mut buf = Vec::new();
            assert_eq!(2, piggyback.fill(&mut buf, usize::MAX));
            sent.extend(buf.chunks(3).map(<[u8]>::to_vec));
        }
        sent.sort();
        assert_eq!(alloc::vec![b"AA1".to_vec(), b"AA1".to_vec(), b"AA2".to_vec(), b"AA2".to_vec()], sent);
        assert!(piggyback.is_empty(), "each item goes out max_tx times, then leaves");
    }

    // jujud patch (PATCHED.md, 12)
    #[test]
    fn the_backlog_grows_by_an_eighth() {
        let mut piggyback = Broadcasts::new();
        for i in 0..1_000u32 {
            piggyback.add(Key("k"), i.to_le_bytes().to_vec(), 3);
            let len = piggyback.len();
            let cap: usize = piggyback.pools.values().map(Vec::capacity).sum();
            assert!(cap <= len + len / 8 + 8, "{len} items in {cap} slots");
        }
    }

    // jujud patch (PATCHED.md, 19)
    #[test]
    fn a_rank_is_sent_whole_before_the_next_and_no_item_twice_a_fill() {
        let mut piggyback = Broadcasts::new();
        for i in 0..20u8 {
            piggyback.add(Key("k"), alloc::vec![i], 2);
        }
        // Eight at a time: each of the twenty once (the first two fills
        // and half the third), then each once more.
        let mut sent = Vec::new();
        for _ in 0..5 {
            let mut buf = Vec::new();
            assert_eq!(8, piggyback.fill(&mut buf, 8));
            let mut seen = buf.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(8, seen.len(), "no item twice in one fill: {buf:?}");
            sent.extend(buf);
        }
        let (first, second) = sent.split_at(20);
        for round in [first, second] {
            let mut round = round.to_vec();
            round.sort_unstable();
            assert_eq!(round, (0..20).collect::<Vec<u8>>());
        }
        assert!(piggyback.is_empty(), "each item went out twice");
        assert!(piggyback.pools.is_empty(), "no queue kept for a rank no item has");

        // Room for more than the backlog: each item once, not twice.
        for i in 0..4u8 {
            piggyback.add(Key("k"), alloc::vec![i], 2);
        }
        let mut buf = Vec::new();
        assert_eq!(4, piggyback.fill(&mut buf, usize::MAX));
        buf.sort_unstable();
        assert_eq!(buf, [0, 1, 2, 3]);
        assert_eq!(4, piggyback.len());
    }

    // jujud patch (PATCHED.md, 19)
    #[test]
    fn an_item_that_does_not_fit_stays_queued() {
        let mut piggyback = Broadcasts::new();
        piggyback.add(Key("big"), alloc::vec![9; 10], 1);
        piggyback.add(Key("a"), alloc::vec![1], 1);
        piggyback.add(Key("b"), alloc::vec![2], 1);
        let mut limited = bytes::BytesMut::new().limit(5);
        assert_eq!(2, piggyback.fill(&mut limited, usize::MAX));
        let mut got = limited.get_ref().to_vec();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        let mut buf = Vec::new();
        assert_eq!(1, piggyback.fill(&mut buf, usize::MAX));
        assert_eq!(buf, alloc::vec![9; 10]);
        assert!(piggyback.is_empty());
    }

    // jujud patch (PATCHED.md, 19): within a rank, newest first; items a
    // fill sent move to the next rank down only when it ends.
    #[test]
    fn a_rank_leaves_newest_first() {
        let mut piggyback = Broadcasts::new();
        for i in 0..6u8 {
            piggyback.add(Key("k"), alloc::vec![i], 2);
        }
        let mut buf = Vec::new();
        assert_eq!(3, piggyback.fill(&mut buf, 3));
        assert_eq!(buf, [5, 4, 3]);
        piggyback.add(Key("k"), alloc::vec![6], 2);
        buf.clear();
        assert_eq!(7, piggyback.fill(&mut buf, usize::MAX));
        assert_eq!(buf, [6, 2, 1, 0, 5, 4, 3], "rank 2 newest first, then rank 1, each once");
    }

    /// Patch 16: short data is held inline, longer on the heap, and both
    /// are sent byte for byte, in the same order (by remaining count, then
    /// length) as before.
    #[test]
    fn data_inline_or_on_the_heap_is_sent_as_given() {
        let mut piggyback = Broadcasts::new();
        let sizes = [0usize, 1, INLINE_BYTES - 1, INLINE_BYTES, INLINE_BYTES + 1, 300];
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|b| (b * 7 + i) as u8).collect();
            let entry = Entry::new(Key("k"), data.clone(), 1);
            assert_eq!(&*entry.data, &data[..], "{n} bytes");
            assert_eq!(matches!(entry.data, Data::Inline { .. }), n <= INLINE_BYTES, "{n}");
            piggyback.add(Key("k"), data, 1);
        }
        let mut buf = Vec::new();
        assert_eq!(piggyback.fill(&mut buf, usize::MAX), sizes.len());
        // Largest first, each item's bytes whole.
        let mut at = 0;
        for (i, &n) in sizes.iter().enumerate().rev() {
            let data: Vec<u8> = (0..n).map(|b| (b * 7 + i) as u8).collect();
            assert_eq!(&buf[at..at + n], &data[..], "{n} bytes");
            at += n;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn fill_does_nothing_if_buffer_full() {
        let mut piggyback = Broadcasts::new();
        piggyback.add_or_replace(Key("a "), b"a super long value".to_vec(), 1);

        let buf = bytes::BytesMut::new();
        let mut limited = buf.limit(5);

        let num_items = piggyback.fill(&mut limited, usize::MAX);

        assert_eq!(0, num_items);
        assert_eq!(5, limited.remaining_mut());
        assert_eq!(1, piggyback.len());
    }

    #[test]
    fn piggyback_consumes_largest_first() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("00"), b"00hi".to_vec(), max_tx);
        piggyback.add_or_replace(Key("01"), b"01hello".to_vec(), max_tx);
        piggyback.add_or_replace(Key("02"), b"02hey".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, usize::MAX);

        assert_eq!(3, num_items);
        assert_eq!(b"01hello02hey00hi", &buf[..]);
    }

    #[test]
    fn highest_max_tx_is_consumed_first() {
        let mut piggyback = Broadcasts::new();

        // 3 items, same byte size, distinct max_tx
        piggyback.add_or_replace(Key("10"), b"100".to_vec(), 1);
        piggyback.add_or_replace(Key("20"), b"200".to_vec(), 2);
        piggyback.add_or_replace(Key("30"), b"300".to_vec(), 3);

        let mut buf = Vec::new();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200100", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300", &buf[..]);

        assert_eq!(0, piggyback.len());
    }

    #[test]
    fn piggyback_respects_limit() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("fo"), b"foo".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"bar".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"baz".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = piggyback.fill(&mut buf, 2);
        assert_eq!(2, num_items);
    }

    #[test]
    fn fill_with_len_prefix() {
        let mut bcs = Broadcasts::new();

        bcs.add_or_replace(Key("fo"), b"foo".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"barr".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"bazz".to_vec(), 10);

        let mut buf = Vec::new();
        let num_items = bcs.fill_with_len_prefix(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = bcs.fill_with_len_prefix(&mut buf, 2);
        assert_eq!(2, num_items);

        use bytes::Buf;
        let mut buf = &buf[..];
        assert_eq!(4, buf.get_u16());
        assert_eq!(&b"bazz"[..], &buf[..4]);
        buf.advance(4);
        assert_eq!(3, buf.get_u16());
        assert_eq!(&b"foo"[..], &buf[..3]);
        buf.advance(3);
        assert!(buf.is_empty());
    }
}
