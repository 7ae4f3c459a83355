//! The agent's side of a session, sans-IO: which manager to hold a session
//! with (rendezvous over the live managers it sees in SWIM), moving at once
//! when that manager goes down or the session breaks, dialing several
//! managers in parallel with jittered backoff when it must, applying the
//! assignments it receives, and reporting status changes.
//!
//! Owns the session state, the agent's live-manager list and what it has
//! reported. Must never restart a workload because a session moved (it
//! hands the supervisor the assignments; unchanged ones change nothing),
//! never let a move for balance hand it an older assignment than the one
//! it runs (the new session takes over only once its manager's assignment
//! equals the applied one), and never offer an empty manager list to be
//! saved in agent.conf.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;

use super::supervisor::Supervisor;
use super::{Assignments, Report, SessionMsg, WorkloadEvent, choice, decode_msg, encode_msg};
use crate::core::identity::{Identity, NodeId};
use crate::core::time::Time;

/// A manager whose session failed, or that did not answer an open, is
/// passed over this long; each further failure in a row doubles it, up to
/// `SESSION_AVOID_MAX_MS` (a manager SWIM still shows live but that this
/// agent cannot reach would otherwise pull the agent off a good session
/// again and again).
pub const SESSION_AVOID_MS: u64 = 1_000;
pub const SESSION_AVOID_MAX_MS: u64 = 30_000;
/// After this many failed opens in a row, dial every known manager at once.
pub const PARALLEL_AFTER_FAILURES: u32 = 2;
/// A session that breaks sooner than this after it opened counts as one
/// more failure in the row (the agent keeps dialing everyone, and backs
/// off as before) instead of starting the row over with one candidate: on
/// a flapping network the manager that answered may be cut off again at
/// once, and a fresh row would spend `PARALLEL_AFTER_FAILURES` single
/// opens (up to `OPEN_TIMEOUT_MS` each) before dialing everyone again.
pub const SESSION_STABLE_MS: u64 = 3_000;
/// First and longest wait between failed opens (before jitter).
pub const OPEN_BACKOFF_MIN_MS: u64 = 100;
/// The longest an agent waits between failed opens (before jitter): its
/// exponential backoff stops doubling here.
pub const MAX_RECONNECT_BACKOFF_MS: u64 = 5_000;
/// The longest retry-after a manager's login refusal is honoured for; a
/// larger one is cut to this (a wrong manager cannot park an agent).
pub const MAX_HONOURED_RETRY_AFTER_MS: u64 = 10_000;
/// How long an opening session may take before it counts as failed.
pub const OPEN_TIMEOUT_MS: u64 = 3_000;
/// How long a move for balance waits, once its new session is open, for
/// the new manager's assignment to equal the one the agent runs (the new
/// manager may not yet hold a change the old one sent). At the bound the
/// move fails: the new session closes, the old one stays, and the move is
/// tried again later (the target passed over as after any failed move).
pub const MOVE_CATCH_UP_MS: u64 = 3_000;
/// A better-placed manager must have been live this long before the agent
/// moves its session there (so a flapping manager does not pull agents).
pub const REBALANCE_SETTLE_MS: u64 = 2_000;
/// Status reports go out at most this often (changes are batched).
pub const REPORT_MIN_INTERVAL_MS: u64 = 250;
/// Most manager addresses remembered for agent.conf and parallel dials.
pub const MAX_KNOWN_MANAGERS: usize = 64;

/// Where the session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Session {
    Idle,
    Opening { id: u64, since: Time },
    Open { id: u64, manager: NodeId, since: Time },
}

/// Counters for metrics and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub sessions_opened: u64,
    pub sessions_failed: u64,
    pub sessions_broken: u64,
    /// Moves for balance made (the new session opened, the old closed).
    pub moves_for_balance: u64,
    /// Moves for balance whose new session did not open, or whose manager
    /// did not catch up within `MOVE_CATCH_UP_MS` (the old stayed).
    pub moves_failed: u64,
    /// Moves for balance whose new session opened with an assignment that
    /// differed from the applied one, so waited for its manager to catch up.
    pub moves_waited: u64,
    pub parallel_dials: u64,
    pub reports_sent: u64,
    pub assignments_received: u64,
    pub bad_messages: u64,
    /// Opens refused by a manager's login rate limit (retry-after honoured).
    pub sessions_busy: u64,
    /// Opens given up because every manager they dialed was declared down
    /// meanwhile (a live one dialed at once instead).
    pub opens_abandoned: u64,
}

/// A session opening to a better-placed manager while the current one
/// stays open; the current one closes only once this one is open and its
/// manager's assignment equals the one applied (so the move never hands
/// the supervisor an assignment older than the one it runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moving {
    pub id: u64,
    pub to: NodeId,
    pub since: Time,
    /// When the new session opened (it then waits to catch up).
    pub opened: Option<Time>,
    /// The latest assignment the new session brought.
    pub latest: Option<Assignments>,
}

/// Addresses to dial for a session, each with the node id expected there
/// (unknown for a seed).
pub type Candidates = Vec<(SocketAddr, Option<NodeId>)>;

/// What the agent asks of its driver after a call.
#[derive(Debug, Default)]
pub struct AgentOut {
    /// Open session `id` to the first of these that answers as a manager.
    pub open: Vec<(u64, Candidates)>,
    pub send: Vec<(u64, Vec<u8>)>,
    pub close: Vec<u64>,
    /// The live managers changed: remember their addresses (never empty).
    pub save_managers: Option<Vec<SocketAddr>>,
}

/// An agent's session logic and its workloads.
#[derive(Debug)]
pub struct AgentRole {
    me: NodeId,
    machine: String,
    address: String,
    /// Live managers (active in SWIM), sorted by id.
    live: Vec<Identity>,
    /// Every manager seen, for parallel dials; bounded.
    known: BTreeMap<NodeId, Identity>,
    seeds: Vec<SocketAddr>,
    session: Session,
    next_session: u64,
    failed: BTreeMap<NodeId, Time>,
    /// Failures in a row per manager (reset when a session with it opens).
    strikes: BTreeMap<NodeId, u32>,
    /// The managers the open in progress was sent to.
    opening_to: Vec<NodeId>,
    /// Failed opens in a row, counting sessions that broke before
    /// `SESSION_STABLE_MS` (reset when a session that lasted that long
    /// breaks): picks the backoff and whether to dial everyone.
    failures: u32,
    retry_at: Option<Time>,
    rebalance_at: Option<Time>,
    /// A move for balance in progress: the new session opening beside the
    /// open one (make before break), to which manager, since when.
    moving: Option<Moving>,
    /// The digest of the assignment the supervisor was last handed.
    applied: Option<u64>,
    /// When each live manager was first seen live (for the settle time).
    live_since: BTreeMap<NodeId, Time>,
    pub supervisor: Supervisor,
    /// What the session's manager has been told, per unit.
    reported: BTreeMap<String, String>,
    machine_reported: bool,
    report_due: Option<Time>,
    last_report_at: Option<Time>,
    saved: Vec<SocketAddr>,
    gone: bool,
    pub stats: AgentStats,
}

impl AgentRole {
    /// An agent for `machine`, reachable at `address`, that found the
    /// cluster through `seeds` (its agent.conf and `--seeds`).
    pub fn new(me: NodeId, machine: String, address: String, seeds: Vec<SocketAddr>) -> AgentRole {
        AgentRole {
            me,
            machine,
            address,
            live: Vec::new(),
            known: BTreeMap::new(),
            saved: seeds.clone(),
            seeds,
            session: Session::Idle,
            next_session: 0,
            failed: BTreeMap::new(),
            strikes: BTreeMap::new(),
            opening_to: Vec::new(),
            failures: 0,
            retry_at: None,
            rebalance_at: None,
            moving: None,
            applied: None,
            live_since: BTreeMap::new(),
            supervisor: Supervisor::default(),
            reported: BTreeMap::new(),
            machine_reported: false,
            report_due: None,
            last_report_at: None,
            gone: false,
            stats: AgentStats::default(),
        }
    }

    pub fn machine(&self) -> &str {
        &self.machine
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The manager holding this agent's session, if one is open.
    pub fn session_manager(&self) -> Option<NodeId> {
        match self.session {
            Session::Open { manager, .. } => Some(manager),
            _ => None,
        }
    }

    /// Whether the machine was removed (the agent should stop and exit once
    /// its workloads are down).
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// The rendezvous order of the live managers for this agent.
    pub fn ranked(&self) -> Vec<Identity> {
        choice::rank(self.me.0, &self.live, |m| m.id)
    }

    /// The earliest time this agent wants [`AgentRole::tick`] called.
    pub fn next_wake(&self) -> Option<Time> {
        [
            self.retry_at,
            self.rebalance_at,
            self.report_due,
            self.supervisor.next_due(),
            self.open_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn open_deadline(&self) -> Option<Time> {
        let timeout = Duration::from_millis(OPEN_TIMEOUT_MS);
        match self.session {
            Session::Opening { since, .. } => Some(since + timeout),
            _ => self.moving.as_ref().map(|m| match m.opened {
                Some(at) => at + Duration::from_millis(MOVE_CATCH_UP_MS),
                None => m.since + timeout,
            }),
        }
    }

    /// The move for balance in progress, if any.
    pub fn moving(&self) -> Option<&Moving> {
        self.moving.as_ref()
    }

    /// Opens the first session (through the seeds, before SWIM knows any
    /// manager).
    pub fn start(&mut self, now: Time, out: &mut AgentOut) {
        if self.session == Session::Idle {
            self.open(now, out);
        }
    }

    /// The node's view of the live managers, after any membership change.
    pub fn set_live_managers(&mut self, now: Time, mut live: Vec<Identity>, out: &mut AgentOut) {
        live.sort_by_key(|m| m.id);
        if live == self.live {
            return;
        }
        self.live_since.retain(|id, _| live.iter().any(|m| m.id == *id));
        for m in &live {
            self.live_since.entry(m.id).or_insert(now);
            if self.known.len() < MAX_KNOWN_MANAGERS || self.known.contains_key(&m.id) {
                self.known.insert(m.id, m.clone());
            }
        }
        self.live = live;
        self.save_if_changed(out);
        match self.session.clone() {
            Session::Open { id, manager, since } if !self.is_live(manager) => {
                // The manager is down (SWIM says so): move at once. As for
                // a session that closed, one that had lasted
                // `SESSION_STABLE_MS` starts the row of failures over: the
                // next open dials the best manager, not everyone at once
                // (which would spend a login on every manager, and wait on
                // the dead one's dial).
                self.stats.sessions_broken += 1;
                self.failures = self.failures_after_break(now, since);
                out.close.push(id);
                self.session = Session::Idle;
                if !self.promote_move(now, out) {
                    self.open(now, out);
                }
            }
            Session::Open { .. } => {
                if let Some(m) = self.moving.take_if(|m| !self.live.iter().any(|l| l.id == m.to)) {
                    out.close.push(m.id);
                }
                self.plan_rebalance(now);
            }
            Session::Idle => self.open(now, out),
            Session::Opening { id, .. } if self.dials_only_the_down() => {
                // Every manager this open dials is down (SWIM says so):
                // waiting out its open timeout (seconds) would gain
                // nothing. Give it up and dial a live one at once. Not a
                // failure: nothing was refused, the target died.
                self.stats.opens_abandoned += 1;
                out.close.push(id);
                self.opening_to.clear();
                self.session = Session::Idle;
                self.open(now, out);
            }
            Session::Opening { .. } => {}
        }
    }

    /// Whether the open in progress dials only managers that are not live
    /// (and at least one: an open to seed addresses alone names none).
    fn dials_only_the_down(&self) -> bool {
        !self.opening_to.is_empty()
            && !self.live.is_empty()
            && self.opening_to.iter().all(|id| !self.is_live(*id))
    }

    /// Whether manager `id` is in the node's latest view of the live ones.
    fn is_live(&self, id: NodeId) -> bool {
        self.live.iter().any(|m| m.id == id)
    }

    fn save_if_changed(&mut self, out: &mut AgentOut) {
        let mut addrs: Vec<SocketAddr> = self.live.iter().map(|m| m.addr).collect();
        addrs.sort();
        addrs.dedup();
        if !addrs.is_empty() && addrs != self.saved {
            self.saved = addrs.clone();
            out.save_managers = Some(addrs);
        }
    }

    fn plan_rebalance(&mut self, now: Time) {
        let Session::Open { manager, .. } = self.session else { return };
        let best = self.ranked().into_iter().next();
        self.rebalance_at = match best {
            Some(b) if b.id != manager => {
                let since = self.live_since.get(&b.id).copied().unwrap_or(now);
                // Not while its session failure is being passed over: the
                // move would land right back here, at once, in a loop (a
                // session broken under a manager SWIM still shows live).
                let avoided_until = self.avoided_until(b.id).unwrap_or(now);
                Some((since + Duration::from_millis(REBALANCE_SETTLE_MS)).max(avoided_until))
            }
            _ => None,
        };
    }

    /// Until when manager `id` is passed over, if it failed.
    fn avoided_until(&self, id: NodeId) -> Option<Time> {
        let strikes = self.strikes.get(&id).copied().unwrap_or(1).max(1);
        let avoid = (SESSION_AVOID_MS << (strikes - 1).min(16)).min(SESSION_AVOID_MAX_MS);
        self.failed.get(&id).map(|t| *t + Duration::from_millis(avoid))
    }

    /// Manager `id` failed this agent now.
    fn strike(&mut self, id: NodeId, now: Time) {
        self.failed.insert(id, now);
        *self.strikes.entry(id).or_insert(0) += 1;
    }

    fn candidates(&self, now: Time) -> Candidates {
        let fresh = |id: &NodeId| self.avoided_until(*id).is_none_or(|t| now >= t);
        let ranked = self.ranked();
        if self.failures < PARALLEL_AFTER_FAILURES
            && let Some(m) = ranked.iter().find(|m| fresh(&m.id))
        {
            return vec![(m.addr, Some(m.id))];
        }
        // Several failures, or nobody usable: everyone we know, at once.
        let mut all: Candidates = ranked.iter().map(|m| (m.addr, Some(m.id))).collect();
        for m in self.known.values() {
            if !all.iter().any(|(a, _)| *a == m.addr) {
                all.push((m.addr, Some(m.id)));
            }
        }
        for s in &self.seeds {
            if !all.iter().any(|(a, _)| a == s) {
                all.push((*s, None));
            }
        }
        all
    }

    fn open(&mut self, now: Time, out: &mut AgentOut) {
        if let Some(m) = self.moving.take() {
            // The session it was to replace is gone: start over.
            out.close.push(m.id);
        }
        if self.gone {
            return;
        }
        let candidates = self.candidates(now);
        if candidates.is_empty() {
            return;
        }
        if candidates.len() > 1 {
            self.stats.parallel_dials += 1;
        }
        self.next_session += 1;
        self.session = Session::Opening { id: self.next_session, since: now };
        self.opening_to = candidates.iter().filter_map(|(_, id)| *id).collect();
        self.retry_at = None;
        self.rebalance_at = None;
        out.open.push((self.next_session, candidates));
    }

    /// The driver opened session `id` with manager `peer`.
    pub fn on_session_opened(&mut self, now: Time, id: u64, peer: NodeId, out: &mut AgentOut) {
        if let Some(m) = self.moving.as_mut().filter(|m| m.id == id) {
            // The move's session is open; it takes over once its manager's
            // assignment (its first frame, next) equals the applied one.
            if m.opened.is_none() {
                m.opened = Some(now);
                m.to = peer;
            }
            return;
        }
        if !matches!(self.session, Session::Opening { id: cur, .. } if cur == id) {
            out.close.push(id);
            return;
        }
        self.take_session(now, id, peer, out);
    }

    /// Session `id` with manager `peer` becomes this agent's session.
    fn take_session(&mut self, now: Time, id: u64, peer: NodeId, out: &mut AgentOut) {
        self.stats.sessions_opened += 1;
        self.strikes.remove(&peer);
        self.session = Session::Open { id, manager: peer, since: now };
        self.reported.clear();
        self.machine_reported = false;
        self.last_report_at = None;
        self.send_report(now, out);
        self.plan_rebalance(now);
    }

    /// Session `id` closed, or could not be opened.
    pub fn on_session_closed(
        &mut self,
        now: Time,
        id: u64,
        rng: &mut impl RngExt,
        out: &mut AgentOut,
    ) {
        match self.session.clone() {
            Session::Open { id: cur, manager, since } if cur == id => {
                self.stats.sessions_broken += 1;
                self.strike(manager, now);
                self.failures = self.failures_after_break(now, since);
                self.session = Session::Idle;
                if !self.promote_move(now, out) {
                    self.open(now, out);
                }
            }
            Session::Opening { id: cur, .. } if cur == id => self.open_failed(now, rng),
            _ if self.moving.as_ref().is_some_and(|m| m.id == id) => self.move_failed(now),
            _ => {}
        }
    }

    /// The move for balance did not open: the current session stays, and
    /// the better-placed manager is passed over a while (longer each time).
    fn move_failed(&mut self, now: Time) {
        if let Some(m) = self.moving.take() {
            self.stats.moves_failed += 1;
            self.strike(m.to, now);
            self.plan_rebalance(now);
        }
    }

    /// The failures in a row once a session opened at `since` broke now:
    /// none if it had lasted `SESSION_STABLE_MS`, else one more.
    fn failures_after_break(&self, now: Time, since: Time) -> u32 {
        if now.saturating_sub(since) >= Duration::from_millis(SESSION_STABLE_MS) {
            0
        } else {
            self.failures.saturating_add(1)
        }
    }

    fn open_failed(&mut self, now: Time, rng: &mut impl RngExt) {
        self.stats.sessions_failed += 1;
        for id in std::mem::take(&mut self.opening_to) {
            self.strike(id, now);
        }
        self.failures += 1;
        self.session = Session::Idle;
        let shift = self.failures.saturating_sub(1).min(16);
        let base = (OPEN_BACKOFF_MIN_MS << shift).min(MAX_RECONNECT_BACKOFF_MS);
        // Full jitter over the upper half: a thousand agents spread out.
        let wait = base / 2 + rng.random_range(0..=base / 2);
        self.retry_at = Some(now + Duration::from_millis(wait));
    }

    /// No candidate opened session `id` and a manager refused it for load:
    /// the agent waits the retry-after (at most
    /// `MAX_HONOURED_RETRY_AFTER_MS`) plus up to a quarter more of jitter,
    /// so the refused agents do not all come back at the same moment. The
    /// manager is not struck: it is alive, only busy.
    pub fn on_session_busy(
        &mut self,
        now: Time,
        id: u64,
        retry_after_ms: u64,
        rng: &mut impl RngExt,
    ) {
        if self.moving.as_ref().is_some_and(|m| m.id == id) {
            self.stats.sessions_busy += 1;
            return self.move_failed(now);
        }
        if !matches!(self.session, Session::Opening { id: cur, .. } if cur == id) {
            return;
        }
        self.stats.sessions_busy += 1;
        self.opening_to.clear();
        self.failures += 1;
        self.session = Session::Idle;
        let wait = retry_after_ms.clamp(1, MAX_HONOURED_RETRY_AFTER_MS);
        let wait = wait + rng.random_range(0..=wait / 4);
        self.retry_at = Some(now + Duration::from_millis(wait));
    }

    /// A message arrived on session `id`.
    pub fn on_session_data(&mut self, now: Time, id: u64, bytes: &[u8], out: &mut AgentOut) {
        if self.moving.as_ref().is_some_and(|m| m.id == id && m.opened.is_some()) {
            return self.on_moving_data(now, bytes, out);
        }
        if !matches!(self.session, Session::Open { id: cur, .. } if cur == id) {
            return;
        }
        match decode_msg(bytes) {
            Ok(SessionMsg::Assign(a)) if a.machine == self.machine => {
                self.stats.assignments_received += 1;
                self.apply(now, &a);
                self.schedule_report(now);
                self.finish_move_if_caught_up(now, out);
            }
            Ok(SessionMsg::Refused { reason, gone }) => {
                tracing::warn!(machine = %self.machine, %reason, "the manager refused this agent's session");
                out.close.push(id);
                if gone {
                    self.gone = true;
                    self.supervisor.assign(now, &[]);
                    self.session = Session::Idle;
                } else if let Session::Open { manager, since, .. } = self.session {
                    self.strike(manager, now);
                    self.failures = self.failures_after_break(now, since).max(1);
                    self.session = Session::Idle;
                    self.retry_at = Some(now + Duration::from_millis(OPEN_BACKOFF_MIN_MS));
                }
            }
            Ok(_) | Err(_) => self.stats.bad_messages += 1,
        }
    }

    fn apply(&mut self, now: Time, a: &Assignments) {
        self.supervisor.assign(now, &a.units);
        self.applied = Some(a.digest());
    }

    /// A message on the move's new session, open but not yet taken over:
    /// its assignment is kept (not applied) until it equals the applied one.
    fn on_moving_data(&mut self, now: Time, bytes: &[u8], out: &mut AgentOut) {
        let Some(m) = self.moving.as_mut() else { return };
        match decode_msg(bytes) {
            Ok(SessionMsg::Assign(a)) if a.machine == self.machine => {
                self.stats.assignments_received += 1;
                if m.latest.is_none() && self.applied != Some(a.digest()) {
                    self.stats.moves_waited += 1;
                }
                m.latest = Some(a);
                self.finish_move_if_caught_up(now, out);
            }
            Ok(SessionMsg::Refused { reason, .. }) => {
                tracing::debug!(machine = %self.machine, %reason, "a manager refused a move for balance");
                out.close.push(m.id);
                self.move_failed(now);
            }
            Ok(_) | Err(_) => self.stats.bad_messages += 1,
        }
    }

    /// The move's new session takes over once its manager's latest
    /// assignment equals the applied one (or nothing was applied yet): only
    /// then does the old session close.
    fn finish_move_if_caught_up(&mut self, now: Time, out: &mut AgentOut) {
        let caught_up = self.moving.as_ref().is_some_and(|m| {
            m.latest.as_ref().is_some_and(|a| self.applied.is_none_or(|d| d == a.digest()))
        });
        if !caught_up {
            return;
        }
        let Some(m) = self.moving.take() else { return };
        if let Session::Open { id: old, .. } = self.session {
            out.close.push(old);
        }
        self.stats.moves_for_balance += 1;
        self.take_session(now, m.id, m.to, out);
    }

    /// The session broke while a move's new session was open: that one
    /// takes over at once, with the assignment it brought (a failover: its
    /// manager may not hold every change the lost one had sent). Returns
    /// whether it did.
    fn promote_move(&mut self, now: Time, out: &mut AgentOut) -> bool {
        debug_assert_eq!(self.session, Session::Idle, "promote only without a session");
        let live = |to: NodeId| self.live.iter().any(|l| l.id == to);
        let Some(m) = self.moving.take_if(|m| m.opened.is_some() && live(m.to)) else {
            return false;
        };
        if let Some(a) = &m.latest {
            self.apply(now, a);
        }
        self.take_session(now, m.id, m.to, out);
        true
    }

    /// The driver reports what became of a workload.
    pub fn on_workload(&mut self, now: Time, ev: &WorkloadEvent) {
        self.supervisor.on_event(now, ev);
        self.schedule_report(now);
    }

    fn schedule_report(&mut self, now: Time) {
        // Without a session there is nobody to tell; opening one sends all.
        if self.report_due.is_none() && matches!(self.session, Session::Open { .. }) {
            let earliest = self
                .last_report_at
                .map_or(now, |t| t + Duration::from_millis(REPORT_MIN_INTERVAL_MS));
            self.report_due = Some(earliest.max(now));
        }
    }

    /// Does whatever is due: restarts, retries, moves and reports.
    pub fn tick(&mut self, now: Time, rng: &mut impl RngExt, out: &mut AgentOut) {
        self.supervisor.tick(now);
        if self.open_deadline().is_some_and(|d| d <= now) {
            match (&self.session, &self.moving) {
                (Session::Opening { id, .. }, _) => {
                    out.close.push(*id);
                    self.open_failed(now, rng);
                }
                (_, Some(m)) => {
                    out.close.push(m.id);
                    self.move_failed(now);
                }
                _ => {}
            }
        }
        if self.retry_at.is_some_and(|t| t <= now) && self.session == Session::Idle {
            self.retry_at = None;
            self.open(now, out);
        }
        if self.rebalance_at.is_some_and(|t| t <= now) {
            self.rebalance_at = None;
            self.start_move(now, out);
        }
        if self.report_due.is_some_and(|t| t <= now) {
            self.send_report(now, out);
        }
        // Restarts just asked for changed statuses: report them soon.
        self.schedule_report_if_changed(now);
    }

    /// Opens a session to the best-ranked manager beside the open one (a
    /// move for balance: the open one closes only once the new one opens).
    fn start_move(&mut self, now: Time, out: &mut AgentOut) {
        let Session::Open { manager, .. } = self.session else { return };
        let Some(best) = self.ranked().into_iter().next().filter(|b| b.id != manager) else {
            return;
        };
        if self.moving.is_some() || self.gone {
            return;
        }
        self.next_session += 1;
        self.moving = Some(Moving {
            id: self.next_session,
            to: best.id,
            since: now,
            opened: None,
            latest: None,
        });
        out.open.push((self.next_session, vec![(best.addr, Some(best.id))]));
    }

    fn schedule_report_if_changed(&mut self, now: Time) {
        let changed =
            self.supervisor.statuses().iter().any(|(k, v)| self.reported.get(k) != Some(v));
        if changed && self.report_due.is_none() {
            self.schedule_report(now);
        }
    }

    fn send_report(&mut self, now: Time, out: &mut AgentOut) {
        self.report_due = None;
        let Session::Open { id, .. } = self.session else { return };
        let statuses = self.supervisor.statuses();
        let mut report = Report::default();
        if !self.machine_reported {
            report.machine_status = Some("started".into());
            report.address = Some(self.address.clone());
        }
        report.units = statuses
            .iter()
            .filter(|(k, v)| self.reported.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if report.is_empty() {
            return;
        }
        self.machine_reported = true;
        for (k, v) in &report.units {
            self.reported.insert(k.clone(), v.clone());
        }
        self.reported.retain(|k, _| statuses.contains_key(k));
        self.last_report_at = Some(now);
        self.stats.reports_sent += 1;
        out.send.push((id, encode_msg(&SessionMsg::Report(report))));
    }
}
