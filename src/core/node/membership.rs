//! The node's membership part: foca (SWIM) and what the node adds to it —
//! certificate-bound senders, local health, dynamic suspicion, graceful-leave
//! notices, the partition-healing rejoin loop, suspicion and refutation counts, the
//! piggyback count scaled to the cluster's size — and the one list every
//! other part reads from membership: the live managers ([`LiveManagers`]),
//! derived here and handed to the others as a value.
//!
//! Owns foca, its collector, the notice book, local health, rejoin, the
//! incarnation and suspect set, revocations and the live-manager list. Must
//! never touch replicated state, sessions or workers (it reports a member
//! that went down and leaves the rest to [`super::Node::settle`]), and never
//! let a datagram in whose header speaks for a member other than the one its
//! certificate proved.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU8;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::Foca;
use rand_chacha::ChaCha8Rng;

mod exchange;

use super::collector::Collector;
pub(super) use super::live::LiveManagers;
use super::pushpull::PushPull;
use super::suspicion::{Start, SuspicionKey, Suspicions};
use super::{Ctx, MAX_TRANSMISSIONS_CAP, SWIM_TAG};
use crate::core::codec::{BincodeCodec, CodecError};
use crate::core::health::LocalHealth;
use crate::core::identity::{Identity, NodeId, Role};
use crate::core::io::{Event, MemberInfo, MemberState, Output, PeerCert, Time, Timer, TimerKind};
use crate::core::notices::{Notice, NoticeBook, NoticeHandler, NoticeKey};
use crate::core::rejoin::{Rejoin, Round};
use crate::core::timing::Timing;

type Swim = Foca<Identity, BincodeCodec, ChaCha8Rng, WatchedHandler>;

/// A join (an alive member at incarnation 0) queued for gossip here is
/// dropped unsent once peers' gossip has brought this node the same news
/// this many times (foca patch 14: rumour mongering with feedback; one
/// peer may count more than once), while the backlog is
/// over [`JOIN_ECHOES_OVER_BACKLOG`]. When thousands of members start at
/// once, every member otherwise relays every join it learns by gossip
/// `max_transmissions` times (16 at 10,000 members): minutes of full-rate
/// gossip after the views have converged. 5, not fewer: with 3 the
/// simulator's 1,000 row took 12 virtual s to converge instead of 7 (the
/// rumours died before reaching everyone and waited for an exchange;
/// measured while exchanges still counted as echoes, not since).
/// Suspicions, deaths and refutations are never dropped.
pub const JOIN_ECHOES: u8 = 5;

/// Joins are retired by their echoes only while the gossip backlog holds
/// more than this many updates (a mass join, about two packets' worth):
/// a lone join in a quiet cluster is always sent its full count, so no
/// member misses it for want of an echo (retiring at any backlog, a
/// manager booted into the simulator's steady 1,000-member cluster stayed
/// unknown to some members for 126 virtual s, until a periodic exchange).
pub const JOIN_ECHOES_OVER_BACKLOG: usize = 64;

/// The notice handler, raising a flag whenever foca hands it an item (in
/// `handle_data` when a packet carries broadcasts, and in `add_broadcast`):
/// only then can the book hold fresh notices, so only then does the flush
/// lock it. The flag is only ever touched from the node's own thread, so
/// plain loads and stores do (no read-modify-write).
struct WatchedHandler {
    inner: NoticeHandler,
    touched: Arc<AtomicBool>,
}

impl foca::BroadcastHandler<Identity> for WatchedHandler {
    type Key = NoticeKey;
    type Error = CodecError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Identity>,
    ) -> Result<Option<NoticeKey>, CodecError> {
        self.touched.store(true, Ordering::Relaxed);
        self.inner.receive_item(data, sender)
    }
}

/// One member's membership: foca and everything the node adds to it.
pub(super) struct Membership {
    swim: Swim,
    collector: Collector,
    notices: Arc<Mutex<NoticeBook>>,
    health: LocalHealth,
    /// This node's own suspicions and their confirmations (Lifeguard).
    suspicions: Suspicions,
    rejoin: Rejoin,
    timing: Timing,
    /// Incarnation we last announced; a rise means we refuted a suspicion.
    incarnation: u16,
    /// Whether a stall or self-refutation happened this probe period.
    troubled: bool,
    /// foca's suspicion and refutation counts already added to the stats.
    counted: foca::Transitions,
    /// foca's count of joins retired by their echoes at the last
    /// housekeeping (it counts for the life of the instance).
    joins_retired_counted: u64,
    left: bool,
    /// foca's current piggyback count (scaled with the cluster's size).
    max_transmissions: u8,
    /// A manager or its membership changed: live managers are re-read at
    /// the next settle.
    managers_changed: bool,
    /// Live managers, refreshed only when `managers_changed`.
    live: LiveManagers,
    /// foca's gossip timer, held while it has nothing to gossip; armed
    /// again (to fire at once) by `flush` when updates appear.
    parked_gossip: Option<foca::Timer<Identity>>,
    /// Members revoked by the HA keeper: their traffic is dropped.
    revoked: BTreeSet<NodeId>,
    /// The member count `max_transmissions` was last sized for (0 before
    /// the first housekeeping): the same count needs no new sizing.
    transmissions_sized_for: usize,
    /// Raised by the notice handler when foca hands it an item (see
    /// [`WatchedHandler`]); lowered by the flush that drains fresh notices.
    notices_touched: Arc<AtomicBool>,
    /// Bumped on every foca notification about membership and on every
    /// fresh notice: all that can change what a rejoin round reads (the
    /// active members and their addresses, the known peers, departures).
    membership_changes: u64,
    /// Bumped with `membership_changes` except for a member coming up:
    /// what can turn a rejoin round that found nothing missing into one
    /// that finds something (a member down or renamed, this node idle, a
    /// notice). A member up only adds to what is active and held.
    losses: u64,
    /// `losses` at the last rejoin round, if it found nothing missing:
    /// until it moves, every round finds the same, so it is not computed
    /// again (a round is O(N log N); a join brings N members up).
    quiet_since: Option<u64>,
    /// The full-state exchange's schedule and answer queue.
    pushpull: PushPull,
    /// No member is active here (at start, and after going idle): the
    /// next member that comes up is asked for the full membership.
    alone: bool,
    /// This node's generation and incarnation at the last check: both only
    /// grow (debug builds check it after every settle).
    #[cfg(debug_assertions)]
    seen: (u64, u16),
}

impl Membership {
    /// Membership for `identity`, remembering `known_peers` and joining
    /// through `seeds`; foca draws from `foca_rng`.
    pub fn new(
        identity: Identity,
        timing: &Timing,
        seeds: &[SocketAddr],
        known_peers: &[Identity],
        foca_rng: ChaCha8Rng,
    ) -> Membership {
        let inner = NoticeHandler {
            relay_suspicions: timing.suspicion_confirmations > 0 && timing.suspicion_max_mult > 1,
            ..NoticeHandler::default()
        };
        let notices = inner.book.clone();
        let notices_touched = Arc::new(AtomicBool::new(false));
        let handler = WatchedHandler { inner, touched: notices_touched.clone() };
        let me = identity.id;
        let mut swim = Foca::with_custom_broadcast(
            identity,
            timing.foca_config(),
            foca_rng,
            BincodeCodec,
            handler,
        );
        swim.set_retire_joins_after_echoes(NonZeroU8::new(JOIN_ECHOES), JOIN_ECHOES_OVER_BACKLOG);
        let mut rejoin = Rejoin::new(
            seeds.to_vec(),
            Duration::from_millis(timing.rejoin_backoff_min_ms),
            Duration::from_millis(timing.rejoin_backoff_max_ms),
        );
        for peer in known_peers.iter().filter(|p| p.id != me) {
            rejoin.remember(peer);
        }
        Membership {
            swim,
            collector: Collector::default(),
            notices,
            health: LocalHealth::new(
                timing.health_max,
                Duration::from_millis(timing.late_timer_ms),
            ),
            suspicions: Suspicions::new(
                timing.suspicion_max_mult,
                timing.suspicion_confirmations,
                Duration::from_millis(timing.suspect_to_down_ms),
            ),
            rejoin,
            timing: timing.clone(),
            incarnation: 0,
            troubled: false,
            counted: foca::Transitions::default(),
            joins_retired_counted: 0,
            left: false,
            max_transmissions: timing.max_transmissions,
            managers_changed: true,
            live: LiveManagers { all: Vec::new(), peers: Vec::new(), me },
            parked_gossip: None,
            revoked: BTreeSet::new(),
            transmissions_sized_for: 0,
            notices_touched,
            membership_changes: 0,
            losses: 0,
            quiet_since: None,
            pushpull: PushPull::new(Duration::ZERO),
            alone: true,
            #[cfg(debug_assertions)]
            seen: (0, 0),
        }
    }

    /// Arms the housekeeping loop (at start; each run arms the next).
    pub fn arm_housekeeping(&mut self, cx: &mut Ctx<'_>) {
        cx.arm(TimerKind::Housekeeping, Duration::from_millis(self.timing.probe_period_ms));
    }

    /// This node's identity (its generation changes on forced rejoin).
    pub fn identity(&self) -> &Identity {
        self.swim.identity()
    }

    /// The local-health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.health.score()
    }

    /// Whether this node has left the cluster.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Whether this node has heard that `id` was revoked (replaced by the
    /// HA keeper): it drops that member's traffic and places nothing on it.
    pub fn has_revoked(&self, id: NodeId) -> bool {
        self.revoked.contains(&id)
    }

    /// The live managers as of the last settle.
    pub fn live(&self) -> &LiveManagers {
        &self.live
    }

    /// Peers worth remembering as seeds for the next start.
    pub fn known_peers(&self) -> Vec<Identity> {
        self.rejoin.known().cloned().collect()
    }

    /// Every notice this node knows, to persist or to share with a peer.
    pub fn notices(&self) -> Vec<Notice> {
        let book = self.notices.lock().expect("notice book poisoned");
        let departed =
            book.departed.iter().map(|(id, g)| Notice::Departed { id: *id, generation: *g });
        let members = book.revoked_members.iter().map(|id| Notice::MemberRevoked { id: *id });
        departed.chain(members).collect()
    }

    /// Ids of the members foca sees as active (alive or suspect).
    pub fn active_ids(&self) -> BTreeSet<NodeId> {
        self.swim.iter_members().map(|m| m.id().id).collect()
    }

    /// See [`super::Node::view_version`].
    pub fn view_version(&self) -> u64 {
        self.membership_changes
    }

    /// How many members foca sees as active.
    pub fn active_count(&self) -> usize {
        self.swim.num_members()
    }

    /// Every member as this node sees it, itself first, then by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        let book = self.notices.lock().expect("notice book poisoned");
        let me = self.identity().clone();
        let own = if self.left { MemberState::Left } else { MemberState::Alive };
        let mut rows = vec![MemberInfo { identity: me, state: own, incarnation: self.incarnation }];
        for m in self.swim.iter_membership_state() {
            let id = m.id();
            let state = match m.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down if self.revoked.contains(&id.id) => MemberState::Replaced,
                foca::State::Down if departed(&book, id) => MemberState::Left,
                foca::State::Down => MemberState::Down,
            };
            rows.push(MemberInfo { identity: id.clone(), state, incarnation: m.incarnation() });
        }
        rows[1..].sort_by_key(|r| r.identity.id);
        rows
    }

    pub fn on_datagram(&mut self, cx: &mut Ctx<'_>, from: PeerCert, bytes: &[u8]) {
        cx.stats.datagrams_in += 1;
        cx.stats.bytes_in += bytes.len() as u64;
        if bytes.len() > self.timing.max_packet_bytes + 1 {
            cx.stats.dropped_oversized += 1;
            return;
        }
        let Some((&SWIM_TAG, body)) = bytes.split_first() else {
            cx.stats.dropped_malformed += 1;
            return;
        };
        // foca hands over the header's sender as soon as it has decoded the
        // header, and drops the datagram unchanged unless it is the id and
        // role the certificate proved (one decode for the check and foca).
        let mut claimed = None;
        let accept = |src: &Identity| {
            let proven = src.id == from.id && src.role == from.role;
            if !proven {
                claimed = Some(src.id);
            }
            proven
        };
        if self.revoked.contains(&from.id) {
            cx.stats.dropped_revoked += 1;
            return;
        }
        match self.swim.handle_data_from(body, accept, &mut self.collector) {
            Ok(true) => {}
            Ok(false) => {
                let claimed = claimed.map(|id| id.to_string()).unwrap_or_default();
                tracing::warn!(%claimed, proven = %from.id, "{}", crate::events::SPOOFED_DATAGRAM);
                cx.stats.dropped_spoofed += 1;
            }
            Err(e) => {
                tracing::debug!(from = %from.id, error = %e, "swim refused datagram");
                match e {
                    foca::Error::Decode(_)
                    | foca::Error::MalformedPacket
                    | foca::Error::DataTooBig => cx.stats.dropped_malformed += 1,
                    _ => cx.stats.dropped_rejected += 1,
                }
            }
        }
    }

    /// Every timer, whoever owns it, tells local health how late it fired.
    pub fn note_lateness(&mut self, cx: &mut Ctx<'_>, at: Time) {
        let lateness = cx.now.saturating_sub(at);
        if self.health.on_timer_lateness(lateness) {
            cx.stats.late_timers += 1;
            self.troubled = true;
        }
    }

    /// One of foca's timers fired.
    pub fn on_swim_timer(&mut self, cx: &mut Ctx<'_>, event: foca::Timer<Identity>) {
        if matches!(event, foca::Timer::ProbeRandomMember(_)) {
            cx.stats.probes += 1;
        }
        if matches!(event, foca::Timer::PeriodicGossip(_))
            && self.swim.updates_backlog() == 0
            && self.swim.custom_broadcast_backlog() == 0
        {
            // Nothing to gossip (foca would only re-arm it): park it until
            // there is (`flush`), instead of ten idle timers a second.
            self.parked_gossip = Some(event);
            return;
        }
        if !self.suspicions.fire(cx.now, &event) {
            return;
        }
        if let Err(e) = self.swim.handle_timer(event, &mut self.collector) {
            tracing::debug!(error = %e, "swim timer refused");
        }
    }

    /// The rejoin timer fired; a stale token is ignored.
    pub fn on_rejoin_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        if token == self.rejoin.token {
            self.rejoin_round(cx);
        }
    }

    pub fn on_identified(&mut self, cx: &mut Ctx<'_>, addr: SocketAddr, peer: PeerCert) {
        if peer.id == self.identity().id {
            return;
        }
        let seed = Identity { id: peer.id, addr, role: peer.role, generation: 0 };
        cx.stats.rejoin_announces += 1;
        if let Err(e) = self.swim.announce(seed, &mut self.collector) {
            tracing::debug!(error = %e, "announce to seed failed");
        }
    }

    pub fn leave(&mut self) {
        let me = self.identity().clone();
        self.publish(&Notice::Departed { id: me.id, generation: me.generation });
        if let Err(e) = self.swim.leave_cluster(&mut self.collector) {
            tracing::warn!(error = %e, "leave failed");
        }
        self.left = true;
    }

    /// Broadcasts each notice, in order.
    pub fn publish_all(&mut self, notices: &[Notice]) {
        for notice in notices {
            self.publish(notice);
        }
    }

    /// Broadcasts a notice (it leaves with the next flush).
    pub fn publish(&mut self, notice: &Notice) {
        let Ok(data) = crate::core::codec::encode(notice) else { return };
        match self.swim.add_broadcast(&data) {
            Ok(true) => {
                if let Err(e) = self.swim.broadcast(&mut self.collector) {
                    tracing::debug!(error = %e, "broadcast failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "notice refused"),
        }
    }

    /// One round of the rejoin loop (at start, then on its timer).
    pub fn rejoin_round(&mut self, cx: &mut Ctx<'_>) {
        if self.quiet_since == Some(self.losses) {
            #[cfg(debug_assertions)]
            self.assert_still_quiet(cx);
            let next_after = self.rejoin.quiet_round(cx.now);
            cx.arm(TimerKind::Rejoin(self.rejoin.token), next_after);
            return;
        }
        let round = run_round(&self.swim, &self.notices, &mut self.rejoin, cx.now, cx.rng);
        self.quiet_since = round.quiet(self.swim.num_members() > 0).then_some(self.losses);
        for addr in round.identify {
            cx.push(Output::Identify { addr });
        }
        for peer in round.announce_to {
            cx.stats.rejoin_announces += 1;
            if let Err(e) = self.swim.announce(peer, &mut self.collector) {
                tracing::debug!(error = %e, "re-announce failed");
            }
        }
        cx.arm(TimerKind::Rejoin(self.rejoin.token), round.next_after);
    }

    /// Debug builds check the shortcut: a full round on copies finds
    /// nothing missing either.
    #[cfg(debug_assertions)]
    fn assert_still_quiet(&self, cx: &Ctx<'_>) {
        let mut rejoin = self.rejoin.clone();
        let round = run_round(&self.swim, &self.notices, &mut rejoin, cx.now, &mut cx.rng.clone());
        assert!(
            round.quiet(self.swim.num_members() > 0),
            "a rejoin round skipped as quiet would have found {round:?}"
        );
    }

    pub fn housekeeping(&mut self, cx: &mut Ctx<'_>) {
        if !self.troubled {
            self.health.on_quiet_period();
        }
        self.troubled = false;
        // Counted by foca as the changes are applied: a walk over every
        // member each period cost O(N) per member, O(N^2) over a pool.
        let now = self.swim.member_transitions();
        cx.stats.suspicions += now.suspected.saturating_sub(self.counted.suspected);
        cx.stats.refutations += now.refuted.saturating_sub(self.counted.refuted);
        self.counted = now;
        let retired = self.swim.joins_retired_by_echoes();
        cx.stats.joins_retired += retired.saturating_sub(self.joins_retired_counted);
        self.joins_retired_counted = retired;
        self.scale_transmissions();
        self.probe_missed_verdicts(cx);
        self.exchange_period(cx);
        self.arm_housekeeping(cx);
    }

    /// Suspicions heard of whose backstop fell due: a member foca still
    /// holds suspect at that incarnation is probed out of turn (this node
    /// missed the accusers' verdict, or the suspect's refutation).
    fn probe_missed_verdicts(&mut self, cx: &mut Ctx<'_>) {
        for key in self.suspicions.due_backstops(cx.now) {
            if self.swim.probe_if_suspect(&key.id, key.incarnation) {
                cx.stats.suspects_probed += 1;
            }
        }
    }

    /// Piggybacks each update more often as the cluster grows (foca's own
    /// rule, 4·log10(N+1)), never below the configured count: with a fixed
    /// count a 300-member join took 90 s in the simulator instead of 3 s.
    fn scale_transmissions(&mut self) {
        let members = self.swim.num_members() + 1;
        if members == self.transmissions_sized_for {
            return;
        }
        let by_size = (4.0 * ((members + 1) as f64).log10()).ceil() as u8;
        let want = by_size.clamp(self.timing.max_transmissions, MAX_TRANSMISSIONS_CAP);
        if want != self.max_transmissions {
            let mut cfg = self.timing.foca_config();
            cfg.max_transmissions = std::num::NonZeroU8::new(want).expect("clamped above zero");
            if self.swim.set_config(cfg).is_err() {
                return;
            }
            self.max_transmissions = want;
        }
        self.transmissions_sized_for = members;
    }

    /// Turns what foca asked for into outputs, stretching this node's own
    /// probe and suspicion timeouts by its local-health score. The
    /// collector's buffers are drained in place (their capacity is kept).
    /// Returns the members foca declared down (in order), for the parts
    /// that keep something per member.
    pub fn flush(&mut self, cx: &mut Ctx<'_>) -> Vec<NodeId> {
        if self.collector.highest_sent_incarnation > self.incarnation {
            self.incarnation = self.collector.highest_sent_incarnation;
            cx.stats.self_refutations += 1;
            self.health.on_self_refuted();
            self.troubled = true;
        }
        self.flush_sends(cx);
        if self.parked_gossip.is_some()
            && (self.swim.updates_backlog() > 0 || self.swim.custom_broadcast_backlog() > 0)
        {
            let event = self.parked_gossip.take().expect("checked");
            cx.push(Output::SetTimer(Timer { at: cx.now, kind: TimerKind::Swim(event) }));
        }
        let mut suspected = Vec::new();
        for (event, after) in self.collector.timers.drain(..) {
            let after = match event {
                foca::Timer::ProbeRandomMember(_)
                | foca::Timer::SendIndirectProbe { .. }
                | foca::Timer::ChangeSuspectToDown { .. } => self.health.stretch(after),
                _ => after,
            };
            let mut at = cx.now + after;
            if let Some(key) = SuspicionKey::of_timer(&event) {
                let members = self.swim.num_members() + 1;
                if let Start::Dynamic(due) =
                    self.suspicions.start(cx.now, event.clone(), after, members)
                {
                    at = due;
                    suspected.push(key);
                }
            }
            cx.push(Output::SetTimer(Timer { at, kind: TimerKind::Swim(event) }));
        }
        if !suspected.is_empty() {
            // Tell the cluster: each one that suspects the member too
            // counts it as a confirmation (and this node counts theirs).
            let by = self.identity().id;
            for k in suspected {
                let (id, generation, incarnation) = (k.id, k.generation, k.incarnation);
                self.publish(&Notice::Suspected { id, generation, incarnation, by });
            }
            self.flush_sends(cx);
        }
        let mut downed = Vec::new();
        if !self.collector.notes.is_empty() {
            let mut notes = std::mem::take(&mut self.collector.notes);
            for note in notes.drain(..) {
                self.on_notification(cx, note, &mut downed);
            }
            // Hand the (empty) buffer back so the next call reuses it.
            self.collector.notes = notes;
        }
        self.collector.trim();
        self.flush_notices(cx);
        downed
    }

    /// Entries foca's collector has room for (tests).
    #[cfg(test)]
    pub fn collector_capacity(&self) -> usize {
        self.collector.capacity()
    }

    /// Membership updates waiting to be gossiped (tests).
    #[cfg(test)]
    pub fn gossip_backlog(&self) -> usize {
        self.swim.updates_backlog()
    }

    /// Hands foca's datagrams to the runtime, counted.
    fn flush_sends(&mut self, cx: &mut Ctx<'_>) {
        for (to, bytes) in self.collector.sends.drain(..) {
            cx.stats.datagrams_out += 1;
            cx.stats.bytes_out += bytes.len() as u64;
            cx.stats.max_datagram_bytes_out =
                cx.stats.max_datagram_bytes_out.max(bytes.len() as u64);
            cx.push(Output::Send { to, bytes });
        }
    }

    /// Another member suspects one this node suspects: a confirmation,
    /// which may bring this node's verdict earlier (a timer at the new
    /// time; the one armed before finds the suspicion closed).
    fn on_suspected(&mut self, cx: &mut Ctx<'_>, key: SuspicionKey, by: NodeId) {
        let me = self.identity().id;
        if let Some((event, at)) = self.suspicions.confirm(cx.now, key, by, me) {
            cx.stats.suspicion_confirmations += 1;
            cx.push(Output::SetTimer(Timer { at, kind: TimerKind::Swim(event) }));
        }
    }

    /// Fresh notices: departures and revocations leave the rejoin list, a
    /// revocation's traffic is refused from now on, each one is reported.
    fn flush_notices(&mut self, cx: &mut Ctx<'_>) {
        if !self.notices_touched.load(Ordering::Relaxed) {
            return;
        }
        self.notices_touched.store(false, Ordering::Relaxed);
        let fresh = std::mem::take(&mut self.notices.lock().expect("notice book poisoned").fresh);
        if fresh.iter().any(|n| !matches!(n, Notice::Suspected { .. })) {
            self.membership_changes += 1;
            self.losses += 1;
        }
        for notice in fresh {
            if let Notice::Suspected { id, generation, incarnation, by } = notice {
                self.on_suspected(cx, SuspicionKey { id, generation, incarnation }, by);
                continue;
            }
            if let Notice::Departed { id, .. } = &notice {
                self.rejoin.forget(*id);
            }
            if let Notice::MemberRevoked { id } = &notice {
                self.revoked.insert(*id);
                self.rejoin.forget(*id);
                // A revoked manager leaves the live list at once, though
                // foca may see it alive until it is declared down: an
                // agent must not open its session there, nor a worker be
                // placed on it.
                self.managers_changed = true;
                if *id == self.swim.identity().id {
                    cx.push(Output::Event(Event::Revoked));
                }
            }
            cx.push(Output::Event(Event::Notice(notice)));
        }
    }

    fn on_notification(
        &mut self,
        cx: &mut Ctx<'_>,
        note: foca::OwnedNotification<Identity>,
        downed: &mut Vec<NodeId>,
    ) {
        use foca::OwnedNotification as N;
        if !matches!(note, N::ProbeFailed(..) | N::DataReceived(_) | N::DataSent(_)) {
            self.membership_changes += 1;
            if !matches!(note, N::MemberUp(_)) {
                self.losses += 1;
            }
        }
        let event = match note {
            N::MemberUp(id) => {
                cx.stats.members_up += 1;
                self.managers_changed |= id.role == Role::Manager;
                self.rejoin.remember(&id);
                if std::mem::take(&mut self.alone) {
                    // The member this node joined (or rejoined) through.
                    self.send_exchange(cx, id.clone(), true);
                    self.pushpull.joined(cx.now);
                }
                Event::MemberUp(id)
            }
            N::MemberDown(id) => {
                cx.stats.members_down += 1;
                self.managers_changed |= id.role == Role::Manager;
                downed.push(id.id);
                let left = departed(&self.notices.lock().expect("notice book poisoned"), &id);
                self.rearm_rejoin(cx);
                Event::MemberDown { identity: id, left }
            }
            N::Rename(from, to) => {
                self.managers_changed |= to.role == Role::Manager;
                self.rejoin.remember(&to);
                Event::Renamed { from, to }
            }
            N::Active => Event::Active,
            N::Idle => {
                self.alone = true;
                self.rearm_rejoin(cx);
                Event::Idle
            }
            N::Defunct => {
                // Unreachable with a renewing identity; recover anyway.
                tracing::warn!("declared down without renewal; reusing identity");
                let _ = self.swim.reuse_down_identity();
                return;
            }
            N::Rejoin(id) => {
                self.managers_changed = true;
                Event::Rejoined(id)
            }
            N::ProbeFailed(_, _) => {
                cx.stats.probes_failed += 1;
                return;
            }
            N::DataReceived(_) | N::DataSent(_) => return,
        };
        cx.push(Output::Event(event));
    }

    fn rearm_rejoin(&mut self, cx: &mut Ctx<'_>) {
        if let Some(at) = self.rejoin.on_loss(cx.now) {
            cx.push(Output::SetTimer(Timer { at, kind: TimerKind::Rejoin(self.rejoin.token) }));
        }
    }

    /// Re-reads the live managers if a manager came, went, was renamed or
    /// was revoked since the last call (or at the first); says whether it
    /// did (the new list is then [`Membership::live`]).
    pub fn refresh_live(&mut self) -> bool {
        if !std::mem::take(&mut self.managers_changed) {
            return false;
        }
        let me = self.identity().clone();
        let mut all: Vec<Identity> = self
            .swim
            .iter_members()
            .map(|m| m.id().clone())
            .filter(|i| i.role == Role::Manager && !self.revoked.contains(&i.id))
            .collect();
        if me.role == Role::Manager && !self.left {
            all.push(me.clone());
        }
        all.sort_by_key(|m| m.id);
        let peers: Vec<NodeId> = all.iter().map(|m| m.id).filter(|id| *id != me.id).collect();
        debug_assert!(all.windows(2).all(|w| w[0].id < w[1].id), "one live entry per manager id");
        debug_assert_eq!(
            peers.len() + usize::from(me.role == Role::Manager && !self.left),
            all.len(),
            "peers are the live managers without this node"
        );
        self.live = LiveManagers { all, peers, me: me.id };
        true
    }

    /// Debug builds: this node's generation (a forced rejoin renames it to
    /// a higher one) and the incarnation it announced only grow; the live
    /// list names this node's id.
    #[cfg(debug_assertions)]
    pub fn check_invariants(&mut self) {
        let now = (self.identity().generation, self.incarnation);
        assert!(now.0 >= self.seen.0, "generation went down: {:?} -> {now:?}", self.seen);
        assert!(
            now.0 > self.seen.0 || now.1 >= self.seen.1,
            "incarnation went down within a generation: {:?} -> {now:?}",
            self.seen
        );
        assert_eq!(self.live.me, self.identity().id, "the live list is this node's");
        self.seen = now;
    }
}

/// One rejoin round of `rejoin` over what `swim` sees now. Whether a known
/// peer is active is one lookup in foca's index (no list of every member's
/// id is built and sorted: that was O(N log N) a round, and a kept one 8
/// bytes per member pair, 800 MB over a simulated pool of 10,000).
fn run_round(
    swim: &Swim,
    notices: &Mutex<NoticeBook>,
    rejoin: &mut Rejoin,
    now: Time,
    rng: &mut ChaCha8Rng,
) -> Round {
    let active = (|id: NodeId| swim.is_active_at(&id), swim.num_members() > 0);
    let held = swim.iter_members().map(|m| m.id().addr).chain([swim.identity().addr]);
    let book = notices.lock().expect("notice book poisoned");
    rejoin.round(now, active, held, |p| departed(&book, p), rng)
}

fn departed(book: &NoticeBook, id: &Identity) -> bool {
    book.departed.get(&id.id).is_some_and(|g| *g >= id.generation)
}
