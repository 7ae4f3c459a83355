//! Rendezvous (highest-random-weight) hashing: which manager serves an
//! agent, and in which order the others follow, from nothing but the ids.
//! Every node that sees the same live managers computes the same order, so
//! agents spread evenly, and a manager's loss moves only its own agents.
//!
//! Owns the weight function. Must never depend on anything but the ids
//! (no randomness, no order of the input, no platform hashing), so that the
//! simulator, the runtime and every build agree. Also used to place
//! singleton workers on managers.

use crate::core::identity::NodeId;

/// splitmix64's finaliser: a cheap, well-mixed bijection on u64.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The weight of `candidate` for `key`; the highest weight wins.
pub fn weight(key: u64, candidate: NodeId) -> u64 {
    mix(key ^ mix(candidate.0))
}

/// The key of a named thing (a singleton worker), for [`weight`].
pub fn key_of_name(name: &str) -> u64 {
    name.bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `candidates` ordered by weight for `key`, best first (ties by id, which
/// only equal ids can produce).
pub fn rank<T: Clone>(key: u64, candidates: &[T], id: impl Fn(&T) -> NodeId) -> Vec<T> {
    let mut scored: Vec<(u64, NodeId, &T)> =
        candidates.iter().map(|c| (weight(key, id(c)), id(c), c)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, _, c)| c.clone()).collect()
}

/// The best candidate for `key`, if any.
pub fn best(key: u64, candidates: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
    candidates.into_iter().max_by(|a, b| weight(key, *a).cmp(&weight(key, *b)).then(b.cmp(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_input_does_not_matter_and_best_agrees_with_rank() {
        let ms: Vec<NodeId> = (1..=5).map(|i| NodeId(i * 0x1111)).collect();
        let mut rev = ms.clone();
        rev.reverse();
        for key in 0..200u64 {
            let a = rank(key, &ms, |m| *m);
            assert_eq!(a, rank(key, &rev, |m| *m));
            assert_eq!(Some(a[0]), best(key, ms.iter().copied()));
        }
    }

    #[test]
    fn losing_a_manager_moves_only_its_own_keys_and_spread_is_even() {
        let ms: Vec<NodeId> = (1..=5).map(|i| NodeId(0xabc0_0000_0000_0000 + i)).collect();
        let keys: Vec<u64> = (0..1_000u64).map(|k| mix(k + 7)).collect();
        let before: Vec<NodeId> =
            keys.iter().map(|k| best(*k, ms.iter().copied()).unwrap()).collect();
        let mut counts = std::collections::BTreeMap::new();
        for b in &before {
            *counts.entry(*b).or_insert(0usize) += 1;
        }
        let (lo, hi) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        assert!(*lo >= 160 && *hi <= 240, "1,000 keys over 5 managers: {counts:?}");
        let gone = ms[2];
        let rest: Vec<NodeId> = ms.iter().copied().filter(|m| *m != gone).collect();
        for (k, b) in keys.iter().zip(&before) {
            let after = best(*k, rest.iter().copied()).unwrap();
            if *b != gone {
                assert_eq!(after, *b, "a key not on the lost manager moved");
            }
        }
    }
}
