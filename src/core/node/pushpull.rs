//! The full-state membership exchange (push-pull, as memberlist's): a
//! member sends its whole membership to one peer, which merges it into foca
//! (`apply_many`) and answers with its own. A joiner (and a member back
//! from isolation) does it with the member it joined through, so it sees
//! everyone at once instead of over minutes of gossip; every member repeats
//! it with one random peer at an interval that grows with the cluster.
//!
//! Owns the exchange's message, its byte bound, the schedule of periodic
//! exchanges and the bounded queue of answers. Must never touch foca
//! itself (membership feeds it what this module decoded), never send
//! anything by itself (it returns what to send) and never answer a peer
//! whose message failed to decode or came past the bound.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::codec::CodecError;
use crate::core::identity::{Identity, NodeId};
use crate::core::io::Time;

/// Largest exchange message, in bytes, either way. A membership is about
/// 25 bytes a member (a random 64-bit id, an IPv4 address), so this holds
/// some 40,000 members. Sending: members
/// past the bound are left out (alive first, then suspect, then down, so
/// what is left out is what matters least) and the cut is counted.
/// Receiving: a bigger message is refused whole (the transport stops
/// reading at the bound; the core refuses it too) and nothing changes.
pub const MAX_EXCHANGE_BYTES: usize = 1 << 20;

/// Base interval of the periodic exchange, in ms (memberlist's 30 s).
pub const PUSH_PULL_BASE_MS: u64 = 30_000;

/// Past this many members the periodic interval grows (memberlist's 32).
pub const PUSH_PULL_SCALE_THRESHOLD: usize = 32;

/// After a join's exchange, the next (with a random member) comes this
/// soon instead of a whole interval later: in a cluster that starts at
/// once, the member a joiner asked knew only who had started before it.
pub const JOIN_FOLLOW_UP_MS: u64 = 5_000;

/// Most follow-up exchanges in a row (each [`JOIN_FOLLOW_UP_MS`] after the
/// answer that asked for it). An answer that taught this node members it
/// did not know means the cluster is still converging (a mass join, a
/// healed partition: at 10,000 members booting at once, one follow-up left
/// views incomplete for 280 virtual s, until gossip or the 300 s interval
/// closed them), so it asks a random member again soon; an answer that
/// teaches nothing ends the row. At the bound the interval rules again, so
/// a cluster whose membership never stops changing costs each member at
/// most this many extra exchanges after its last quiet answer.
pub const MAX_FOLLOW_UPS: u32 = 8;

/// Most answers this node sends in one probe period (memberlist's bound
/// on concurrent push-pulls, `maxPushPullRequests`, is the same 128). Each
/// is up to [`MAX_EXCHANGE_BYTES`] held by the transport until sent, so at
/// most 128 MiB a period, about 5 MiB at 1,000 members. Requests past it
/// wait in the queue and are answered in a later period.
pub const MAX_EXCHANGE_ANSWERS_PER_PERIOD: usize = 128;

/// Most requests waiting for an answer (one per peer: a newer request
/// from the same peer replaces its older one). At the bound a request is
/// refused and counted; its sender asks again at its next periodic
/// exchange (or rejoin round), so no peer waits for ever.
pub const MAX_QUEUED_EXCHANGES: usize = 1_024;

/// One exchange message: the sender's whole membership (itself first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeMsg {
    /// A request wants this node's membership back; an answer does not.
    pub want_answer: bool,
    /// The sender's membership, itself first.
    pub members: Vec<foca::Member<Identity>>,
}

/// Why an exchange message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("exchange message of {0} bytes is over the {MAX_EXCHANGE_BYTES}-byte bound")]
    TooBig(usize),
    #[error("exchange message undecodable: {0}")]
    Decode(#[from] CodecError),
    #[error("exchange message's first member {claimed} is not its sender {proven}")]
    WrongSender { claimed: NodeId, proven: NodeId },
}

/// The periodic interval for a cluster of `members` (this node included):
/// `PUSH_PULL_BASE_MS × (ceil(log2(N) − log2(32)) + 1)` past 32 members,
/// the base below (memberlist's `pushPullScale`). 1,000 members: 6 × 30 s;
/// 10,000 members: 10 × 30 s.
pub fn push_pull_interval(members: usize) -> Duration {
    let base = Duration::from_millis(PUSH_PULL_BASE_MS);
    if members <= PUSH_PULL_SCALE_THRESHOLD {
        return base;
    }
    let scale = ((members as f64).log2() - (PUSH_PULL_SCALE_THRESHOLD as f64).log2()).ceil();
    base * (scale as u32 + 1)
}

/// Encodes a membership (`members`, alive first) within the byte bound;
/// returns the bytes and how many members were left out at the bound.
pub fn encode(want_answer: bool, mut members: Vec<foca::Member<Identity>>) -> (Vec<u8>, usize) {
    let total = members.len();
    loop {
        let msg = ExchangeMsg { want_answer, members };
        let cfg = bincode::config::standard();
        match bincode::serde::encode_to_vec(&msg, cfg) {
            Ok(bytes) if bytes.len() <= MAX_EXCHANGE_BYTES => {
                return (bytes, total - msg.members.len());
            }
            Ok(bytes) => {
                // Cut in proportion to the excess, at least one member.
                members = msg.members;
                let keep = members.len() * MAX_EXCHANGE_BYTES / bytes.len();
                members.truncate(keep.min(members.len().saturating_sub(1)));
            }
            Err(_) => return (Vec::new(), total),
        }
    }
}

/// Decodes an exchange message from `from`, refusing it past the bound or
/// when its first member (the sender) is not the proven sender.
pub fn decode(from: NodeId, bytes: &[u8]) -> Result<ExchangeMsg, ExchangeError> {
    if bytes.len() > MAX_EXCHANGE_BYTES {
        return Err(ExchangeError::TooBig(bytes.len()));
    }
    let msg: ExchangeMsg = crate::core::codec::decode_exact_bounded(bytes, MAX_EXCHANGE_BYTES)?;
    match msg.members.first() {
        Some(m) if m.id().id == from => Ok(msg),
        Some(m) => Err(ExchangeError::WrongSender { claimed: m.id().id, proven: from }),
        None => Err(ExchangeError::WrongSender { claimed: NodeId(0), proven: from }),
    }
}

/// The schedule and the answer queue.
#[derive(Debug)]
pub struct PushPull {
    /// When the next periodic exchange is due.
    next_at: Time,
    /// Peers waiting for an answer, in arrival order (the key is the
    /// arrival counter; `queued_peer` finds a peer's entry).
    queue: BTreeMap<u64, Identity>,
    queued_peer: BTreeMap<NodeId, u64>,
    arrivals: u64,
    /// Answers sent in the current probe period.
    answered_this_period: usize,
    /// Follow-up exchanges scheduled in a row ([`MAX_FOLLOW_UPS`]).
    follow_ups: u32,
}

/// What to do with a request that just came in.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Answer now.
    Now,
    /// Queued, answered in a later period.
    Queued,
    /// Refused: the queue is full.
    Refused,
}

impl PushPull {
    /// A schedule whose first periodic exchange is one base interval after
    /// `now` (the join's own exchange comes first).
    pub fn new(now: Time) -> PushPull {
        PushPull {
            next_at: now + Duration::from_millis(PUSH_PULL_BASE_MS),
            queue: BTreeMap::new(),
            queued_peer: BTreeMap::new(),
            arrivals: 0,
            answered_this_period: 0,
            follow_ups: 0,
        }
    }

    /// Whether the periodic exchange is due at `now`; if so, the next is
    /// scheduled for a cluster of `members`.
    pub fn periodic_due(&mut self, now: Time, members: usize) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + push_pull_interval(members);
        true
    }

    /// This node just joined (and asked the member it joined through):
    /// the next periodic exchange comes [`JOIN_FOLLOW_UP_MS`] from `now`.
    pub fn joined(&mut self, now: Time) {
        self.next_at = now + Duration::from_millis(JOIN_FOLLOW_UP_MS);
        self.follow_ups = 0;
    }

    /// An answer to one of this node's requests was merged at `now`;
    /// `news`: it held members this node did not know. News brings the
    /// next exchange to [`JOIN_FOLLOW_UP_MS`] from `now` (never later than
    /// already due), at most [`MAX_FOLLOW_UPS`] times in a row; an answer
    /// without news ends the row.
    pub fn answered(&mut self, now: Time, news: bool) {
        if !news {
            self.follow_ups = 0;
            return;
        }
        if self.follow_ups >= MAX_FOLLOW_UPS {
            return;
        }
        self.follow_ups += 1;
        self.next_at = self.next_at.min(now + Duration::from_millis(JOIN_FOLLOW_UP_MS));
    }

    /// A request from `peer` came in: answer now, queue it, or refuse it.
    pub fn admit(&mut self, peer: &Identity) -> Admit {
        if self.answered_this_period < MAX_EXCHANGE_ANSWERS_PER_PERIOD
            && self.queued_peer.is_empty()
        {
            self.answered_this_period += 1;
            return Admit::Now;
        }
        if let Some(old) = self.queued_peer.remove(&peer.id) {
            self.queue.remove(&old);
        } else if self.queue.len() >= MAX_QUEUED_EXCHANGES {
            return Admit::Refused;
        }
        self.arrivals += 1;
        self.queue.insert(self.arrivals, peer.clone());
        self.queued_peer.insert(peer.id, self.arrivals);
        Admit::Queued
    }

    /// A new probe period: the answer budget is renewed and the oldest
    /// queued requests take it first; returns the peers to answer now.
    pub fn new_period(&mut self) -> Vec<Identity> {
        self.answered_this_period = 0;
        let mut due = Vec::new();
        while self.answered_this_period < MAX_EXCHANGE_ANSWERS_PER_PERIOD {
            let Some((_, peer)) = self.queue.pop_first() else { break };
            self.queued_peer.remove(&peer.id);
            self.answered_this_period += 1;
            due.push(peer);
        }
        due
    }

    /// Requests waiting for an answer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(n: u8) -> Identity {
        Identity {
            id: NodeId(u64::from(n)),
            addr: format!("127.0.0.1:{}", 1000 + u16::from(n)).parse().unwrap(),
            role: crate::core::identity::Role::Agent,
            generation: 1,
        }
    }

    #[test]
    fn interval_grows_with_log_of_size_past_32() {
        assert_eq!(push_pull_interval(10), Duration::from_secs(30));
        assert_eq!(push_pull_interval(32), Duration::from_secs(30));
        assert_eq!(push_pull_interval(33), Duration::from_secs(60));
        assert_eq!(push_pull_interval(1_000), Duration::from_secs(180));
        assert_eq!(push_pull_interval(10_000), Duration::from_secs(300));
    }

    #[test]
    fn a_join_brings_the_next_exchange_forward() {
        let mut pp = PushPull::new(Duration::ZERO);
        let at = Duration::from_secs(2);
        pp.joined(at);
        let follow_up = at + Duration::from_millis(JOIN_FOLLOW_UP_MS);
        assert!(!pp.periodic_due(follow_up - Duration::from_millis(1), 1_000));
        assert!(pp.periodic_due(follow_up, 1_000));
        // Then the interval for the cluster's size.
        assert!(!pp.periodic_due(follow_up + push_pull_interval(1_000) / 2, 1_000));
        assert!(pp.periodic_due(follow_up + push_pull_interval(1_000), 1_000));
    }

    #[test]
    fn answers_with_news_bring_follow_ups_until_quiet_or_the_bound() {
        let mut pp = PushPull::new(Duration::ZERO);
        let step = Duration::from_millis(JOIN_FOLLOW_UP_MS);
        let size = 10_000;
        let mut now = Duration::from_secs(40);
        assert!(pp.periodic_due(now, size));
        // News: the next exchange comes one follow-up later, each time, up
        // to the bound.
        for _ in 0..MAX_FOLLOW_UPS {
            pp.answered(now, true);
            assert!(!pp.periodic_due(now + step - Duration::from_millis(1), size));
            now += step;
            assert!(pp.periodic_due(now, size));
        }
        pp.answered(now, true);
        assert!(!pp.periodic_due(now + step, size), "past the bound the interval rules");
        now += push_pull_interval(size);
        assert!(pp.periodic_due(now, size));
        // A quiet answer ends the row; the next news starts a new one.
        pp.answered(now, false);
        pp.answered(now, true);
        assert!(pp.periodic_due(now + step, size));
        // Without news the interval rules.
        let mut quiet = PushPull::new(Duration::ZERO);
        assert!(quiet.periodic_due(now, size));
        quiet.answered(now, false);
        assert!(!quiet.periodic_due(now + push_pull_interval(size) / 2, size));
    }

    #[test]
    fn requests_past_the_budget_are_queued_then_answered_in_order() {
        let mut pp = PushPull::new(Duration::ZERO);
        let ident = |n: usize| {
            let mut p = ident(0);
            p.id = NodeId(n as u64);
            p
        };
        for n in 0..MAX_EXCHANGE_ANSWERS_PER_PERIOD {
            assert_eq!(pp.admit(&ident(n)), Admit::Now);
        }
        let late: Vec<Identity> =
            (1_000..1_000 + 2 * MAX_EXCHANGE_ANSWERS_PER_PERIOD).map(ident).collect();
        for p in &late {
            assert_eq!(pp.admit(p), Admit::Queued);
        }
        // A repeated request does not take a second place.
        assert_eq!(pp.admit(&late[0]), Admit::Queued);
        assert_eq!(pp.queued(), late.len());
        let first = pp.new_period();
        assert_eq!(first.len(), MAX_EXCHANGE_ANSWERS_PER_PERIOD);
        assert_eq!(first[0], late[1], "oldest first; the repeated one went to the back");
        let second = pp.new_period();
        assert_eq!(second.len(), MAX_EXCHANGE_ANSWERS_PER_PERIOD);
        assert_eq!(pp.queued(), 0, "every queued request is answered");
    }

    #[test]
    fn queue_is_bounded() {
        let mut pp = PushPull::new(Duration::ZERO);
        pp.answered_this_period = MAX_EXCHANGE_ANSWERS_PER_PERIOD;
        let mut refused = 0;
        for n in 0..(MAX_QUEUED_EXCHANGES + 5) as u32 {
            let mut p = ident(0);
            p.id = NodeId(u64::from(n) + 1_000);
            if pp.admit(&p) == Admit::Refused {
                refused += 1;
            }
        }
        assert_eq!(pp.queued(), MAX_QUEUED_EXCHANGES);
        assert_eq!(refused, 5);
    }

    #[test]
    fn oversized_and_spoofed_messages_are_refused() {
        let big = vec![0u8; MAX_EXCHANGE_BYTES + 1];
        assert!(matches!(decode(ident(1).id, &big), Err(ExchangeError::TooBig(_))));
        let me = foca::Member::alive(ident(1));
        let (bytes, cut) = encode(true, vec![me]);
        assert_eq!(cut, 0);
        assert!(decode(ident(1).id, &bytes).is_ok());
        assert!(matches!(decode(ident(2).id, &bytes), Err(ExchangeError::WrongSender { .. })));
        assert!(decode(ident(1).id, &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn encoding_cuts_at_the_bound() {
        let members: Vec<_> = (0..100_000u64)
            .map(|n| {
                let mut p = ident(0);
                p.id = NodeId(n << 40);
                foca::Member::alive(p)
            })
            .collect();
        let (bytes, cut) = encode(false, members);
        assert!(bytes.len() <= MAX_EXCHANGE_BYTES);
        assert!(cut > 0);
    }
}
