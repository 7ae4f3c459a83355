//! Cluster notices that ride foca's custom broadcasts: graceful departures
//! (so peers show "left", not "down"), replaced members, and suspicions
//! (confirmations for Lifeguard's dynamic suspicion, `node/suspicion.rs`). Join tokens and
//! their revocations are replicated state (`core/state/tokens.rs`), not
//! notices: gossip is neither durable nor acknowledged.
//!
//! Owns the notice book, shared with the node because foca offers no
//! accessor to its broadcast handler. Must never trust a notice beyond its
//! own meaning, and must never grow past `MAX_NOTICES` (a bound on members,
//! which are few, never on tokens) nor remember more than
//! `MAX_RECENT_SUSPICIONS` suspicions (the oldest are forgotten).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::identity::{Identity, NodeId};

/// Most notices the book keeps; at the bound new ones are refused (and
/// counted), never allowed to evict an older revocation.
pub const MAX_NOTICES: usize = 8_192;
/// Suspicion notices remembered so that a repeat is not gossiped again;
/// past it the oldest is forgotten (a repeat of it is then gossiped once
/// more: at worst a few more packets, never a loop, as foca sends each
/// item a bounded number of times).
pub const MAX_RECENT_SUSPICIONS: usize = 1_024;

/// One fact spread to the whole cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// The member `id` left gracefully while at `generation`.
    Departed { id: NodeId, generation: u64 },
    /// Retired (tokens are replicated state now): ignored on receipt, kept
    /// so that the encoding of the other variants does not move.
    TokenRevoked { token_id: String, expires_unix_secs: u64 },
    /// Retired, as `TokenRevoked`.
    TokenIssued { token_id: String, role: String, expires_unix_secs: u64 },
    /// The member `id` was replaced (its instance stopped): nothing it
    /// says is accepted any more, even if it comes back.
    MemberRevoked { id: NodeId },
    /// Member `by` failed to probe member `id` (at `generation`, suspected
    /// at `incarnation`) and suspects it: a confirmation for every other
    /// member that suspects it too (Lifeguard's dynamic suspicion). Gossip
    /// only: never persisted, never handed to a joiner. Nodes of an older
    /// release do not know this variant and ignore it (foca still handles
    /// the packet that carries it).
    Suspected { id: NodeId, generation: u64, incarnation: u16, by: NodeId },
}

/// A suspicion notice's identity: (suspect, generation, incarnation, by).
pub type SuspectedKey = (NodeId, u64, u16, NodeId);

/// What makes one notice replace another in foca's backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeKey {
    Departed(NodeId, u64),
    TokenRevoked(String),
    TokenIssued(String),
    MemberRevoked(NodeId),
    Suspected(SuspectedKey),
}

impl foca::Invalidates for NoticeKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (NoticeKey::Departed(a, ga), NoticeKey::Departed(b, gb)) => a == b && ga >= gb,
            (NoticeKey::TokenRevoked(a), NoticeKey::TokenRevoked(b)) => a == b,
            (NoticeKey::TokenIssued(a), NoticeKey::TokenIssued(b)) => a == b,
            (NoticeKey::MemberRevoked(a), NoticeKey::MemberRevoked(b)) => a == b,
            (NoticeKey::Suspected(a), NoticeKey::Suspected(b)) => a == b,
            _ => false,
        }
    }
}

/// Everything this node has learned from notices.
#[derive(Debug, Default)]
pub struct NoticeBook {
    /// Highest generation at which each member departed gracefully.
    pub departed: BTreeMap<NodeId, u64>,
    /// Members replaced by the HA keeper; kept for good (bounded by the
    /// book's size).
    pub revoked_members: BTreeSet<NodeId>,
    /// Notices learned since the node last drained them (bounded).
    pub fresh: Vec<Notice>,
    /// Notices refused because the book was full.
    pub refused_full: u64,
    /// Suspicion notices seen lately (at most `MAX_RECENT_SUSPICIONS`),
    /// and their order of arrival, oldest first.
    recent_suspicions: BTreeSet<SuspectedKey>,
    recent_order: VecDeque<SuspectedKey>,
}

impl NoticeBook {
    fn len(&self) -> usize {
        self.departed.len() + self.revoked_members.len()
    }

    /// Records a notice; returns whether it was news.
    pub fn learn(&mut self, notice: &Notice) -> bool {
        if let Notice::Suspected { id, generation, incarnation, by } = notice {
            return self.learn_suspicion((*id, *generation, *incarnation, *by), notice);
        }
        let news = match notice {
            Notice::Departed { id, generation } => {
                self.departed.get(id).is_none_or(|g| g < generation)
            }
            Notice::TokenRevoked { .. } | Notice::TokenIssued { .. } => false,
            Notice::MemberRevoked { id } => !self.revoked_members.contains(id),
            Notice::Suspected { .. } => unreachable!("handled above"),
        };
        if !news {
            return false;
        }
        let is_new_key = match notice {
            Notice::Departed { id, .. } => !self.departed.contains_key(id),
            Notice::TokenRevoked { .. }
            | Notice::TokenIssued { .. }
            | Notice::MemberRevoked { .. }
            | Notice::Suspected { .. } => true,
        };
        if is_new_key && self.len() >= MAX_NOTICES {
            self.refused_full += 1;
            return false;
        }
        match notice {
            Notice::Departed { id, generation } => {
                self.departed.insert(*id, *generation);
            }
            Notice::TokenRevoked { .. } | Notice::TokenIssued { .. } => return false,
            Notice::MemberRevoked { id } => {
                self.revoked_members.insert(*id);
            }
            Notice::Suspected { .. } => unreachable!("handled above"),
        }
        if self.fresh.len() < MAX_NOTICES {
            self.fresh.push(notice.clone());
        }
        true
    }

    /// A suspicion notice is news once (within the recent window).
    fn learn_suspicion(&mut self, key: SuspectedKey, notice: &Notice) -> bool {
        if !self.recent_suspicions.insert(key) {
            return false;
        }
        self.recent_order.push_back(key);
        if self.recent_order.len() > MAX_RECENT_SUSPICIONS {
            let oldest = self.recent_order.pop_front().expect("over the bound, so not empty");
            self.recent_suspicions.remove(&oldest);
        }
        assert_eq!(self.recent_order.len(), self.recent_suspicions.len());
        if self.fresh.len() < MAX_NOTICES {
            self.fresh.push(notice.clone());
        }
        true
    }

    /// Forgets departures of members that are known under a newer identity.
    pub fn forget_departed(&mut self, keep: &BTreeSet<NodeId>) {
        self.departed.retain(|id, _| keep.contains(id));
    }
}

/// foca's broadcast handler over a shared [`NoticeBook`].
#[derive(Clone, Debug, Default)]
pub struct NoticeHandler {
    pub book: Arc<Mutex<NoticeBook>>,
    /// Whether suspicion notices are learned and relayed: only where
    /// dynamic suspicion is on. Where it is off they are dropped unread
    /// (neither kept nor gossiped on), so a member that floods them costs
    /// such a node nothing beyond the packet.
    pub relay_suspicions: bool,
}

impl foca::BroadcastHandler<Identity> for NoticeHandler {
    type Key = NoticeKey;
    type Error = CodecError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&Identity>,
    ) -> Result<Option<NoticeKey>, CodecError> {
        let notice: Notice = codec::decode_exact(data)?;
        if !self.relay_suspicions && matches!(notice, Notice::Suspected { .. }) {
            return Ok(None);
        }
        let mut book = self.book.lock().expect("notice book poisoned");
        if !book.learn(&notice) {
            return Ok(None);
        }
        Ok(Some(match notice {
            Notice::Departed { id, generation } => NoticeKey::Departed(id, generation),
            Notice::TokenRevoked { token_id, .. } => NoticeKey::TokenRevoked(token_id),
            Notice::TokenIssued { token_id, .. } => NoticeKey::TokenIssued(token_id),
            Notice::MemberRevoked { id } => NoticeKey::MemberRevoked(id),
            Notice::Suspected { id, generation, incarnation, by } => {
                NoticeKey::Suspected((id, generation, incarnation, by))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::BroadcastHandler;

    #[test]
    fn notices_are_news_once() {
        let mut h = NoticeHandler::default();
        let n = codec::encode(&Notice::Departed { id: NodeId(1), generation: 3 }).unwrap();
        assert!(h.receive_item(&n, None).unwrap().is_some());
        assert!(h.receive_item(&n, None).unwrap().is_none());
        let older = codec::encode(&Notice::Departed { id: NodeId(1), generation: 2 }).unwrap();
        assert!(h.receive_item(&older, None).unwrap().is_none());
        assert!(h.receive_item(&[1, 2, 3], None).is_err());
    }

    #[test]
    fn full_book_refuses_new_keys_and_token_notices_are_ignored() {
        let mut book = NoticeBook::default();
        for i in 0..MAX_NOTICES {
            assert!(book.learn(&Notice::MemberRevoked { id: NodeId(i as u64 + 1) }));
        }
        assert!(!book.learn(&Notice::MemberRevoked { id: NodeId(u64::MAX) }));
        assert_eq!(book.refused_full, 1);
        let mut fresh = NoticeBook::default();
        assert!(!fresh.learn(&Notice::TokenRevoked { token_id: "t".into(), expires_unix_secs: 9 }));
        assert!(!fresh.learn(&Notice::TokenIssued {
            token_id: "t".into(),
            role: "agent".into(),
            expires_unix_secs: 9
        }));
        assert_eq!(fresh.len(), 0);
    }

    #[test]
    fn suspicions_are_news_once_within_a_bounded_window() {
        let s = |by: u64| Notice::Suspected {
            id: NodeId(9),
            generation: 2,
            incarnation: 4,
            by: NodeId(by),
        };
        let n = codec::encode(&s(1)).unwrap();
        let mut off = NoticeHandler::default();
        assert!(
            off.receive_item(&n, None).unwrap().is_none(),
            "dynamic suspicion off: not relayed"
        );
        assert!(off.book.lock().unwrap().fresh.is_empty(), "nor kept");
        let mut h = NoticeHandler { relay_suspicions: true, ..NoticeHandler::default() };
        assert!(h.receive_item(&n, None).unwrap().is_some());
        assert!(h.receive_item(&n, None).unwrap().is_none(), "a repeat is not gossiped again");
        assert!(h.receive_item(&codec::encode(&s(2)).unwrap(), None).unwrap().is_some());
        let mut book = h.book.lock().unwrap();
        assert_eq!(book.fresh.len(), 2);
        assert_eq!(book.len(), 0, "suspicions are not counted against the book's bound");
        for by in 3..(MAX_RECENT_SUSPICIONS as u64 + 10) {
            assert!(book.learn(&s(by)));
        }
        assert_eq!(book.recent_suspicions.len(), MAX_RECENT_SUSPICIONS);
        assert!(book.learn(&s(1)), "the oldest was forgotten");
    }
}
