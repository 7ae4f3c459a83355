//! The live managers as membership derives them: the one list every other
//! part of the node reads from membership, handed over as a value.
//!
//! Owns that value's shape and lookups. Must never be built anywhere but
//! in membership (`Membership::refresh_live`), so that every part sees the
//! same list.

use crate::core::identity::{Identity, NodeId};

/// The live managers as membership last derived them (alive or suspect;
/// this node too when it is one), sorted by id; the value membership hands
/// the other parts. It changes only in [`super::Node::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LiveManagers {
    /// Every live manager, sorted by id.
    pub all: Vec<Identity>,
    /// The same without this node: where state goes.
    pub peers: Vec<NodeId>,
    /// This node's id (the one entry of `all` that `peers` leaves out).
    pub me: NodeId,
}

impl LiveManagers {
    /// Live managers' ids, sorted.
    pub fn ids(&self) -> Vec<NodeId> {
        self.all.iter().map(|m| m.id).collect()
    }

    /// A live manager other than this node, by id.
    pub fn peer(&self, id: NodeId) -> Option<&Identity> {
        let i = self.all.binary_search_by_key(&id, |m| m.id).ok()?;
        Some(&self.all[i]).filter(|m| m.id != self.me)
    }
}
