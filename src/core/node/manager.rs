//! The node's manager part: the replicated state and its replication
//! ([`StateSync`]), the singleton workers ([`Controller`]) with the contact
//! rounds and the machine-facts cache they read, and the agent sessions this
//! manager serves ([`AgentSessions`]). It turns what each of them asks for
//! into outputs, state messages addressed to live managers only.
//!
//! Owns those and nothing of membership: the live managers and this node's
//! identity come in as arguments, and the notices the workers decide on go
//! back as return values for membership to publish. Must never accept a
//! state message from a member that is not a manager by certificate, serve
//! a session to a peer whose certificate is not an agent's, or run a worker
//! on a member without state (there is no `Manager` there).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::RngExt;

use super::Ctx;
use super::membership::LiveManagers;
use crate::core::agent::serve::{AgentSessions, ServeOut};
use crate::core::agent::{SessionMsg, encode_msg};
use crate::core::control::contact::Contact;
use crate::core::control::provider::ProviderResult;
use crate::core::control::{
    CONTROL_TICK_MS, ControlEvent, ControlOut, Controller, ControllerInfo, View, owners,
};
use crate::core::identity::{Identity, NodeId, Role};
use crate::core::io::{Event, MemberInfo, MemberState, Output, PeerCert, TimerKind};
use crate::core::notices::Notice;
use crate::core::state::sync::{self, ANTI_ENTROPY_PERIOD_MS, SyncOut};
use crate::core::state::{
    Change, Command, Replica, RequestId, StateSync, StatusView, VersionVector, WriteResult,
    controllers,
};
use crate::core::time::Time;

/// The version the facts were read at, and the facts.
type FactsCache = (VersionVector, Vec<controllers::MachineFacts>);

/// A manager's own side of the node.
pub(super) struct Manager {
    sync: StateSync,
    /// The singleton workers.
    control: Controller,
    /// Agent sessions this manager serves.
    served: AgentSessions,
    /// This manager's probe rounds and who answered them (contact for the
    /// workers' majority checks).
    contact: Contact,
    /// The workers' machine facts, by the replica version they were read at.
    facts_cache: Option<FactsCache>,
    /// The replica changed during this input (assignments may have).
    state_changed: bool,
    /// When the assignment refresh timer is armed to fire, if it is.
    assign_armed: Option<Time>,
    /// The replica's applied version at the last check: no actor's count
    /// ever goes down (debug builds check it after every settle).
    #[cfg(debug_assertions)]
    applied_seen: VersionVector,
}

/// Replies to a command on a member that holds no state.
pub(super) fn refuse_command(cx: &mut Ctx<'_>, req: u64) {
    cx.push(Output::Reply {
        req,
        result: WriteResult::Refused("this member holds no state".into()),
    });
}

/// Counts and drops a state message on a member that holds no state.
pub(super) fn refuse_state(cx: &mut Ctx<'_>) {
    cx.stats.state_msgs_in += 1;
    cx.stats.state_msgs_dropped += 1;
}

/// Refuses an agent session on a member that serves none.
pub(super) fn refuse_session(cx: &mut Ctx<'_>, session: u64) {
    let (bytes, close) = refusal(session);
    cx.push(Output::SessionSend { session, bytes });
    cx.push(Output::CloseSession { session: close });
}

fn refusal(session: u64) -> (Vec<u8>, u64) {
    let reason = "only a manager serves agent sessions, and only to agents".to_string();
    (encode_msg(&SessionMsg::Refused { reason, gone: false }), session)
}

impl Manager {
    pub fn new(me: NodeId, replica: Replica, controller_machine: Option<String>) -> Manager {
        Manager {
            sync: StateSync::new(replica),
            control: Controller::new(me, controller_machine),
            served: AgentSessions::default(),
            contact: Contact::default(),
            facts_cache: None,
            state_changed: false,
            assign_armed: None,
            #[cfg(debug_assertions)]
            applied_seen: VersionVector::new(),
        }
    }

    pub fn sync(&self) -> &StateSync {
        &self.sync
    }

    /// The whole state for the snapshot on disk (see
    /// [`crate::core::state::Replica::snapshot_all_compacting`]).
    pub fn snapshot_for_disk(&mut self) -> crate::core::state::Snapshot {
        self.sync.replica.snapshot_all_compacting()
    }

    pub fn control(&self) -> &Controller {
        &self.control
    }

    pub fn served(&self) -> &AgentSessions {
        &self.served
    }

    pub fn arm_anti_entropy(&mut self, cx: &mut Ctx<'_>) {
        cx.arm(TimerKind::AntiEntropy, Duration::from_millis(ANTI_ENTROPY_PERIOD_MS));
    }

    pub fn arm_control(&mut self, cx: &mut Ctx<'_>) {
        cx.arm(TimerKind::Control, Duration::from_millis(CONTROL_TICK_MS));
    }

    /// A member went down: its sync progress is forgotten.
    pub fn forget_peer(&mut self, id: NodeId) {
        self.sync.forget_peer(id);
    }

    /// Debug builds: the replica's version vector only grows — no actor
    /// it still names has a lower count than at the last check.
    #[cfg(debug_assertions)]
    pub fn check_invariants(&mut self) {
        let applied = self.sync.replica.applied();
        if *applied == self.applied_seen {
            return;
        }
        for (actor, seen) in &self.applied_seen {
            let now = applied.get(actor).copied().unwrap_or(u64::MAX);
            assert!(now >= *seen, "actor {actor:?} went back from {seen} to {now}");
        }
        self.applied_seen.clone_from(applied);
    }

    // ---- replicated state ----

    #[allow(clippy::too_many_arguments)]
    pub fn on_command(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        req: u64,
        id: Option<RequestId>,
        cmd: &Command,
        replicas: u32,
        timeout: Duration,
    ) {
        let mut out = SyncOut::default();
        self.sync.command(cx.now, req, id, cmd, replicas, timeout, &mut out);
        self.apply_sync_out(cx, live, out);
    }

    pub fn on_durable(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers, seq: u64) {
        let mut out = SyncOut::default();
        self.sync.durable(cx.now, seq, &live.peers, &mut out);
        self.apply_sync_out(cx, live, out);
    }

    pub fn on_durable_remote(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers, vv: &VersionVector) {
        let mut out = SyncOut::default();
        self.sync.durable_remote(cx.now, vv, &live.peers, &mut out);
        self.apply_sync_out(cx, live, out);
    }

    pub fn on_state(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        from: PeerCert,
        bytes: &[u8],
    ) {
        cx.stats.state_msgs_in += 1;
        if from.role != Role::Manager {
            cx.stats.state_msgs_dropped += 1;
            return;
        }
        let msg = match sync::decode_msg(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(from = %from.id, error = %e, "dropped an undecodable state message");
                cx.stats.state_msgs_dropped += 1;
                return;
            }
        };
        let mut out = SyncOut::default();
        self.sync.on_msg(cx.now, from.id, msg, &mut out);
        for (from, sent_ms) in std::mem::take(&mut out.probe_acks) {
            self.contact.answered(from, sent_ms);
        }
        self.apply_sync_out(cx, live, out);
    }

    /// Probes every live peer manager (every manager does, once a control
    /// tick, when a provider is configured).
    fn probe_managers(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers) {
        let sent_ms = self.contact.round_sent(cx.now);
        let mut out = SyncOut::default();
        self.sync.probe(sent_ms, &live.peers, &mut out);
        self.apply_sync_out(cx, live, out);
    }

    pub fn anti_entropy(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers) {
        let ids = &live.peers;
        let target = (!ids.is_empty()).then(|| ids[cx.rng.random_range(0..ids.len())]);
        let mut out = SyncOut::default();
        self.sync.tick(cx.now, target, ids, &mut out);
        self.apply_sync_out(cx, live, out);
        self.arm_anti_entropy(cx);
    }

    /// Writes changes a part of the manager decided on (agents' reports,
    /// the workers' records) as own operations, and carries out the sync.
    fn write_internal(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut out = SyncOut::default();
        self.sync.write_internal(changes, &mut out);
        self.apply_sync_out(cx, live, out);
    }

    fn apply_sync_out(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers, out: SyncOut) {
        // Only changes that can move an assignment make the served agents'
        // assignments be recomputed (a pass over every key): most writes are
        // agents' own reports and controller settings.
        use crate::core::state::agents::ops_affect_assignments;
        self.state_changed |= ops_affect_assignments(&out.persist_own)
            || ops_affect_assignments(&out.persist_remote)
            || out.snapshot_needed;
        if !out.persist_own.is_empty() {
            cx.push(Output::Persist { ops: out.persist_own, own: true });
        }
        if !out.persist_remote.is_empty() {
            cx.push(Output::Persist { ops: out.persist_remote, own: false });
        }
        if out.snapshot_needed {
            cx.push(Output::SnapshotNeeded);
        }
        for (to, msg) in out.send {
            let Some(identity) = live.peer(to).cloned() else { continue };
            cx.stats.state_msgs_out += 1;
            cx.push(Output::SendState { to: identity, bytes: sync::encode_msg(&msg) });
        }
        for (tos, msg) in out.broadcast {
            let bytes = sync::encode_msg(&msg);
            for to in tos {
                let Some(identity) = live.peer(to).cloned() else { continue };
                cx.stats.state_msgs_out += 1;
                cx.push(Output::SendState { to: identity, bytes: bytes.clone() });
            }
        }
        for (req, result) in out.replies {
            cx.push(Output::Reply { req, result });
        }
        cx.stats.state_ops_applied = self.sync.applied_remote;
        cx.stats.state_full_sent = self.sync.full_sent;
        cx.stats.state_full_merged = self.sync.full_merges;
    }

    // ---- the singleton workers ----

    /// The live managers changed: greet the new peers, and move worker
    /// ownership now, not at the next tick. Returns notices to publish.
    pub fn on_live_managers(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        me: &Identity,
    ) -> Vec<Notice> {
        let mut out = SyncOut::default();
        self.sync.greet(&live.peers, None, &mut out);
        self.apply_sync_out(cx, live, out);
        let mut out = ControlOut::default();
        self.with_view(cx, live, me, true, &mut out, |c, view, out| c.on_membership(view, out));
        self.apply_control_out(cx, live, out)
    }

    /// The control tick. Returns notices to publish.
    pub fn on_control_tick(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        me: &Identity,
    ) -> Vec<Notice> {
        let mut out = ControlOut::default();
        self.with_view(cx, live, me, false, &mut out, |c, view, out| c.tick(view, out));
        let notices = self.apply_control_out(cx, live, out);
        // The answers keep the next ticks' contact fresh (every manager
        // probes, so that whoever owns a worker next has contact at once).
        if controllers::provider_name(&self.sync.replica).is_some() {
            self.probe_managers(cx, live);
        }
        self.arm_control(cx);
        notices
    }

    /// A provider answered. Returns notices to publish.
    pub fn on_provider(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        me: &Identity,
        result: &ProviderResult,
    ) -> Vec<Notice> {
        let mut out = ControlOut::default();
        self.with_view(cx, live, me, false, &mut out, |c, view, out| {
            c.on_provider(view, result, out)
        });
        self.apply_control_out(cx, live, out)
    }

    /// Runs `f` with the workers' view. `membership`: ownership may change
    /// in this call (so facts are read for the owners it will have).
    fn with_view(
        &mut self,
        cx: &Ctx<'_>,
        live: &LiveManagers,
        me: &Identity,
        membership: bool,
        out: &mut ControlOut,
        f: impl FnOnce(&mut Controller, &View<'_>, &mut ControlOut),
    ) {
        let who = format!("{}@{}", me.id, me.generation);
        let (control, st) = (&mut self.control, &self.sync);
        let live_ids = live.ids();
        let contact = self.contact.in_contact(cx.now, me.id, &live_ids);
        let provider = controllers::provider(&st.replica);
        if control.machine().is_none() && provider.is_some() {
            // The bootstrap manager adopts the controller machine it created.
            if let Some(m) = cached_facts(&mut self.facts_cache, &st.replica)
                .iter()
                .find(|m| m.controller && m.nodes.contains(&me.id))
            {
                control.set_machine(m.id.clone());
            }
        }
        // Facts cost a pass over the keys: only for a node that owns, or is
        // about to own, a worker that reads them now.
        let owned =
            if membership { control.owned_among(&live_ids) } else { control.owned().clone() };
        let facts: &[controllers::MachineFacts] = if control.needs_facts(&owned, provider.is_some())
        {
            cached_facts(&mut self.facts_cache, &st.replica)
        } else {
            &[]
        };
        let view = View {
            now: cx.now,
            replica: &st.replica,
            facts,
            live: &live.all,
            contact: &contact,
            who,
            provider,
        };
        f(control, &view, out);
    }

    /// Carries out what the workers decided; returns the notices they
    /// decided on, for membership to publish.
    fn apply_control_out(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        out: ControlOut,
    ) -> Vec<Notice> {
        for cmd in out.provider {
            cx.push(Output::Provider(Box::new(cmd)));
        }
        for ev in out.events {
            match ev {
                ControlEvent::Ownership { singleton, owned } => {
                    cx.push(Output::Event(Event::Singleton { name: singleton.name(), owned }))
                }
                ControlEvent::Retired => cx.push(Output::Event(Event::Retired)),
            }
        }
        self.write_internal(cx, live, &out.changes);
        out.notices
    }

    /// The controller summary.
    pub fn controller_info(&self, live: &LiveManagers) -> ControllerInfo {
        let r = &self.sync.replica;
        let live = live.ids();
        ControllerInfo {
            desired: controllers::ha_desired(r),
            alive: live.len() as u32,
            owners: owners(&live)
                .into_iter()
                .map(|(s, id)| (s.name().to_string(), id.to_string()))
                .collect(),
            provider: controllers::provider_name(r).map(|(kind, root)| format!("{kind}:{root}")),
            grace_ms: controllers::ha_grace(r).as_millis() as u64,
            short_because: controllers::why_short(r),
        }
    }

    // ---- served agent sessions ----

    pub fn on_session_opened(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        session: u64,
        peer: PeerCert,
        machine: Option<String>,
    ) {
        let mut out = ServeOut::default();
        if peer.role == Role::Agent {
            self.served.opened(&self.sync.replica, session, peer.id, machine, &mut out);
        } else {
            let (bytes, close) = refusal(session);
            out.send.push((session, bytes));
            out.close.push(close);
        }
        self.apply_serve_out(cx, live, out);
    }

    pub fn on_session_closed(&mut self, session: u64) {
        self.served.closed(session);
    }

    pub fn on_session_data(
        &mut self,
        cx: &mut Ctx<'_>,
        live: &LiveManagers,
        session: u64,
        bytes: &[u8],
    ) {
        let mut out = ServeOut::default();
        self.served.data(&self.sync.replica, session, bytes, &mut out);
        self.apply_serve_out(cx, live, out);
    }

    pub fn on_assign_timer(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers) {
        self.assign_armed = None;
        let mut out = ServeOut::default();
        self.served.refresh(&self.sync.replica, &mut out);
        self.apply_serve_out(cx, live, out);
    }

    /// At the end of every settle: a state change that can move an
    /// assignment schedules one refresh of the served agents' assignments.
    pub fn arm_assignments(&mut self, cx: &mut Ctx<'_>) {
        if std::mem::take(&mut self.state_changed) {
            self.served.mark_dirty();
        }
        // Armed again when wanted sooner than the pending one (a session
        // waiting for its first assignment); an extra firing finds nothing
        // dirty and does nothing.
        if let Some(delay) = self.served.refresh_delay_ms() {
            let at = cx.now + Duration::from_millis(delay);
            if self.assign_armed.is_none_or(|armed| at < armed) {
                self.assign_armed = Some(at);
                cx.arm(TimerKind::Assign, Duration::from_millis(delay));
            }
        }
    }

    fn apply_serve_out(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers, out: ServeOut) {
        for (session, bytes) in out.send {
            cx.push(Output::SessionSend { session, bytes });
        }
        for session in out.close {
            self.served.closed(session);
            cx.push(Output::CloseSession { session });
        }
        self.write_internal(cx, live, &out.changes);
    }

    /// The status view with each machine's agent presence (from `members`,
    /// as this node sees them) and each unit's machine presence.
    pub fn status_view(&self, members: &[MemberInfo]) -> StatusView {
        let mut view = self.sync.view();
        fill_presence(&mut view, members);
        view
    }

    /// What changed in the state since `since`, presence filled in as in
    /// [`Self::status_view`].
    pub fn status_changes(
        &self,
        members: &[MemberInfo],
        since: Option<&VersionVector>,
    ) -> sync::StatusChanges {
        let mut changes = self.sync.view_changed_since(since);
        fill_presence(&mut changes.view, members);
        changes
    }
}

/// Fills in each machine's agent presence (from `members`, as this node
/// sees them) and each unit's machine presence.
fn fill_presence(view: &mut StatusView, members: &[MemberInfo]) {
    // The newest generation of each id speaks for it: an older one may
    // linger (suspect or down) beside the one that replaced it.
    let mut states: BTreeMap<NodeId, (u64, MemberState)> = BTreeMap::new();
    for m in members {
        let e = states.entry(m.identity.id).or_insert((m.identity.generation, m.state));
        if m.identity.generation > e.0 {
            *e = (m.identity.generation, m.state);
        }
    }
    let states: BTreeMap<NodeId, MemberState> =
        states.into_iter().map(|(id, (_, s))| (id, s)).collect();
    let mut by_machine: BTreeMap<String, String> = BTreeMap::new();
    for m in &mut view.machines {
        let seen = m
            .agent
            .0
            .iter()
            .filter_map(|h| h.parse::<NodeId>().ok())
            .filter_map(|id| states.get(&id))
            .min();
        m.presence = match (m.agent.0.is_empty(), seen) {
            (true, _) => "pending".into(),
            (false, Some(s)) => s.as_str().into(),
            (false, None) => "unknown".into(),
        };
        by_machine.insert(m.id.clone(), m.presence.clone());
    }
    for u in &mut view.units {
        u.agent = u
            .machine
            .0
            .iter()
            .filter_map(|m| by_machine.get(m))
            .next()
            .cloned()
            .unwrap_or_else(|| "none".into());
    }
}

/// The machine facts of `r` (a pass over every key), computed again only
/// when the replica has applied something since the last time.
fn cached_facts<'a>(
    cache: &'a mut Option<FactsCache>,
    r: &Replica,
) -> &'a [controllers::MachineFacts] {
    if cache.as_ref().is_none_or(|(v, _)| v != r.applied()) {
        *cache = Some((r.applied().clone(), controllers::machines(r)));
    }
    &cache.as_ref().expect("just filled").1
}
