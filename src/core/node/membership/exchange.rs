//! The membership's side of the full-state exchange (push-pull): merging
//! a peer's membership into foca, answering it, and starting this node's
//! own exchanges each probe period. The message, its bound and the
//! schedule belong to `pushpull`; this part feeds foca and queues outputs.
//!
//! Must never merge a message that failed to decode, came from a revoked
//! member or speaks for another member than its certificate's, and never
//! gossip on a second-hand alive member (see `merge_exchange`).

use rand::RngExt;

use super::Membership;
use crate::core::identity::{Identity, NodeId, Role};
use crate::core::io::{Output, PeerCert};
use crate::core::node::Ctx;
use crate::core::node::pushpull::{self, Admit};

impl Membership {
    /// A member's exchange message: merged into foca (`merge_exchange` says
    /// what of it is broadcast on), and answered with this node's
    /// membership if it asked, now or, over the answer budget, in a later
    /// period. Refused whole, changing nothing, when oversized,
    /// undecodable, from a revoked member or speaking for another member
    /// than its certificate's.
    pub fn on_exchange(&mut self, cx: &mut Ctx<'_>, from: PeerCert, bytes: &[u8]) {
        if self.revoked.contains(&from.id) {
            cx.stats.exchanges_refused += 1;
            tracing::warn!(peer = %from.id, error = "sender revoked", "{}", crate::events::EXCHANGE_REFUSED);
            return;
        }
        let msg = match pushpull::decode(from.id, bytes) {
            Ok(msg) => msg,
            Err(e) => {
                cx.stats.exchanges_refused += 1;
                tracing::warn!(peer = %from.id, error = %e, "{}", crate::events::EXCHANGE_REFUSED);
                return;
            }
        };
        cx.stats.exchanges_in += 1;
        let sender = msg.members[0].id().clone();
        let known = self.swim.num_members();
        // What the requester holds, to leave out of an answer sent now.
        let held = if msg.want_answer { held_by(&msg.members) } else { Vec::new() };
        self.merge_exchange(&from.id, &sender, msg.members);
        if !msg.want_answer {
            // An answer to this node's own request.
            self.pushpull.answered(cx.now, self.swim.num_members() > known);
            return;
        }
        match self.pushpull.admit(&sender) {
            Admit::Now => self.send_members(cx, sender, false, &held),
            Admit::Queued => {}
            Admit::Refused => cx.stats.exchanges_queue_full += 1,
        }
    }

    /// Feeds an exchange's members to foca. News about the sender itself and
    /// every suspicion or death is broadcast on; a second-hand *alive*
    /// member is merged quietly. Gossip is how changes travel; a full
    /// membership already travels by exchange, and rebroadcasting it put
    /// every member of a 10,000-member mass join into every member's
    /// backlog (17 transmissions each: full-rate gossip for minutes after
    /// the views had converged). An alive member is still gossiped by those
    /// who hear of it first-hand (its join exchange, its probes, its
    /// announces) and by those who hear of it by gossip.
    fn merge_exchange(
        &mut self,
        from: &NodeId,
        sender: &Identity,
        members: Vec<foca::Member<Identity>>,
    ) {
        let revoked = &self.revoked;
        let (quiet, loud): (Vec<_>, Vec<_>) = members
            .into_iter()
            .filter(|m| !revoked.contains(&m.id().id))
            .partition(|m| m.state() == foca::State::Alive && m.id() != sender);
        for (updates, broadcast) in [(loud, true), (quiet, false)] {
            if let Err(e) =
                self.swim.apply_many(updates.into_iter(), broadcast, &mut self.collector)
            {
                tracing::debug!(peer = %from, error = %e, "exchange not fully applied");
            }
        }
    }

    /// Sends this node's whole membership to `to` (itself first, then alive,
    /// suspect and down members), cut at the byte bound.
    pub(super) fn send_exchange(&mut self, cx: &mut Ctx<'_>, to: Identity, want_answer: bool) {
        self.send_members(cx, to, want_answer, &[]);
    }

    /// Sends this node's membership but for what `held` (sorted) lists
    /// identically: an answer to a request just merged leaves out what the
    /// request itself listed. The requester's view after a mass join's
    /// first exchange is nearly whole, and a whole answer cost it an apply
    /// per member for nothing.
    fn send_members(&mut self, cx: &mut Ctx<'_>, to: Identity, want_answer: bool, held: &[Held]) {
        debug_assert!(held.is_sorted(), "held must be sorted");
        let me = foca::Member::new(self.identity().clone(), self.incarnation, foca::State::Alive);
        let mut members = Vec::with_capacity(self.swim.iter_membership_state().len() + 1);
        members.push(me);
        for state in [foca::State::Alive, foca::State::Suspect, foca::State::Down] {
            let same = self.swim.iter_membership_state().filter(|m| m.state() == state);
            members.extend(same.filter(|m| held.binary_search(&key(m)).is_err()).cloned());
        }
        let (bytes, cut) = pushpull::encode(want_answer, members);
        cx.stats.exchange_members_cut += cut as u64;
        if bytes.is_empty() {
            return;
        }
        cx.stats.exchanges_out += 1;
        cx.push(Output::SendMembers { to, bytes });
    }

    /// Once a probe period: answer the queued requests the new budget
    /// allows, and start the periodic exchange with a random active member
    /// when it is due.
    pub(super) fn exchange_period(&mut self, cx: &mut Ctx<'_>) {
        for peer in self.pushpull.new_period() {
            self.send_exchange(cx, peer, false);
        }
        let members = self.swim.num_members();
        if members == 0 || self.left || !self.pushpull.periodic_due(cx.now, members + 1) {
            return;
        }
        let pick = cx.rng.random_range(0..members);
        let peer = self.swim.iter_members().nth(pick).map(|m| m.id().clone());
        if let Some(peer) = peer {
            self.send_exchange(cx, peer, true);
        }
    }
}

/// A member as an exchange lists it: its whole identity (id, generation,
/// address, role), incarnation and state.
type Held = (NodeId, u64, std::net::SocketAddr, Role, u16, u8);

fn key(m: &foca::Member<Identity>) -> Held {
    let state = match m.state() {
        foca::State::Alive => 0,
        foca::State::Suspect => 1,
        foca::State::Down => 2,
    };
    let id = m.id();
    (id.id, id.generation, id.addr, id.role, m.incarnation(), state)
}

/// The members a request listed, sorted, to leave out of its answer.
fn held_by(members: &[foca::Member<Identity>]) -> Vec<Held> {
    let mut held: Vec<Held> = members.iter().map(key).collect();
    held.sort_unstable();
    held
}
