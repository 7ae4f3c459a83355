//! The node's side of agent sessions, for both ends: on an agent it feeds
//! membership, sessions and workload events to [`AgentRole`] and arms its
//! timer; on a manager it feeds agents' sessions to [`AgentSessions`] and
//! writes their reports into the replicated state. Also joins SWIM presence
//! into the status view.
//!
//! Owns only the glue and the two timers' tokens; it is part of [`Node`].
//! Must never serve a session on a member without state, nor accept one
//! from a peer whose certificate is not an agent's.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Node;
use crate::core::agent::role::{AgentOut, AgentRole};
use crate::core::agent::serve::{ASSIGN_REFRESH_MS, AgentSessions, ServeOut};
use crate::core::agent::{SessionMsg, WorkloadEvent, encode_msg};
use crate::core::identity::{Identity, NodeId, Role};
use crate::core::io::{MemberState, Output, PeerCert, Time, Timer, TimerKind};
use crate::core::state::StatusView;

impl Node {
    /// The agent's session and workloads, on an agent.
    pub fn agent(&self) -> Option<&AgentRole> {
        self.agent.as_ref()
    }

    /// The agent sessions this manager serves.
    pub fn served(&self) -> &AgentSessions {
        &self.served
    }

    /// Live managers' ids as foca sees them (alive or suspect), including
    /// this node when it is one; sorted.
    pub fn live_manager_ids(&self) -> Vec<NodeId> {
        self.live_managers.iter().map(|m| m.id).collect()
    }

    fn refresh_live_managers(&mut self) {
        let mut live: Vec<Identity> = self
            .swim
            .iter_members()
            .map(|m| m.id().clone())
            .filter(|i| i.role == Role::Manager)
            .collect();
        if self.identity().role == Role::Manager && !self.left {
            live.push(self.identity().clone());
        }
        live.sort_by_key(|m| m.id);
        let me = self.identity().id;
        self.peer_manager_ids = live.iter().map(|m| m.id).filter(|id| *id != me).collect();
        self.live_managers = live;
    }

    /// An agent opens its first session at once, through its seeds.
    pub(super) fn start_agent(&mut self, now: Time) {
        let mut out = AgentOut::default();
        if let Some(agent) = self.agent.as_mut() {
            agent.start(now, &mut out);
        }
        self.apply_agent_out(out);
    }

    pub(super) fn on_session_opened(
        &mut self,
        now: Time,
        session: u64,
        peer: PeerCert,
        machine: Option<String>,
    ) {
        if let Some(agent) = self.agent.as_mut() {
            let mut out = AgentOut::default();
            if peer.role == Role::Manager {
                agent.on_session_opened(now, session, peer.id, &mut out);
            } else {
                agent.on_session_closed(now, session, &mut self.rng, &mut out);
                out.close.push(session);
            }
            return self.apply_agent_out(out);
        }
        let mut out = ServeOut::default();
        match self.state.as_ref() {
            Some(st) if peer.role == Role::Agent => {
                self.served.opened(&st.replica, session, peer.id, machine, &mut out)
            }
            _ => {
                let reason = "only a manager serves agent sessions, and only to agents".to_string();
                out.send.push((session, encode_msg(&SessionMsg::Refused { reason, gone: false })));
                out.close.push(session);
            }
        }
        self.apply_serve_out(out);
    }

    pub(super) fn on_session_closed(&mut self, now: Time, session: u64) {
        if let Some(agent) = self.agent.as_mut() {
            let mut out = AgentOut::default();
            agent.on_session_closed(now, session, &mut self.rng, &mut out);
            return self.apply_agent_out(out);
        }
        self.served.closed(session);
    }

    pub(super) fn on_session_data(&mut self, now: Time, session: u64, bytes: &[u8]) {
        if let Some(agent) = self.agent.as_mut() {
            let mut out = AgentOut::default();
            agent.on_session_data(now, session, bytes, &mut out);
            return self.apply_agent_out(out);
        }
        let mut out = ServeOut::default();
        if let Some(st) = self.state.as_ref() {
            self.served.data(&st.replica, session, bytes, &mut out);
        }
        self.apply_serve_out(out);
    }

    pub(super) fn on_workload(&mut self, now: Time, ev: &WorkloadEvent) {
        if let Some(agent) = self.agent.as_mut() {
            agent.on_workload(now, ev);
        }
    }

    pub(super) fn on_agent_timer(&mut self, now: Time, token: u64) {
        if self.agent_timer.is_none_or(|(_, t)| t != token) {
            return;
        }
        self.agent_timer = None;
        if let Some(agent) = self.agent.as_mut() {
            let mut out = AgentOut::default();
            agent.tick(now, &mut self.rng, &mut out);
            self.apply_agent_out(out);
        }
    }

    pub(super) fn on_assign_timer(&mut self) {
        self.assign_armed = false;
        let mut out = ServeOut::default();
        if let Some(st) = self.state.as_ref() {
            self.served.refresh(&st.replica, &mut out);
        }
        self.apply_serve_out(out);
    }

    /// After every input: an agent follows membership changes and arms its
    /// timer; a manager whose state changed schedules new assignments.
    pub(super) fn after_input(&mut self, now: Time) {
        if std::mem::take(&mut self.managers_changed) {
            self.refresh_live_managers();
            let mut out = crate::core::state::sync::SyncOut::default();
            if let Some(st) = self.state.as_mut() {
                st.greet(&self.peer_manager_ids, None, &mut out);
            }
            self.apply_sync_out(out);
            if self.control.is_some() {
                self.on_manager_change(now);
            }
            if self.agent.is_some() {
                let live = self.live_managers.clone();
                let mut out = AgentOut::default();
                if let Some(agent) = self.agent.as_mut() {
                    agent.set_live_managers(now, live, &mut out);
                }
                self.apply_agent_out(out);
            }
        }
        if let Some(want) = self.agent.as_ref().and_then(|a| a.next_wake())
            && self.agent_timer.is_none_or(|(at, _)| want < at)
        {
            self.agent_token += 1;
            self.agent_timer = Some((want, self.agent_token));
            self.push(Output::SetTimer(Timer {
                at: want.max(now),
                kind: TimerKind::Agent(self.agent_token),
            }));
        }
        if std::mem::take(&mut self.state_changed) {
            self.served.mark_dirty();
        }
        if self.served.is_dirty() && !self.assign_armed {
            self.assign_armed = true;
            self.push(Output::SetTimer(Timer {
                at: now + Duration::from_millis(ASSIGN_REFRESH_MS),
                kind: TimerKind::Assign,
            }));
        }
    }

    fn apply_agent_out(&mut self, out: AgentOut) {
        for (session, candidates) in out.open {
            self.push(Output::OpenSession { session, candidates });
        }
        for (session, bytes) in out.send {
            self.push(Output::SessionSend { session, bytes });
        }
        for session in out.close {
            self.push(Output::CloseSession { session });
        }
        if let Some(addrs) = out.save_managers {
            self.push(Output::SaveManagers(addrs));
        }
        if let Some(agent) = self.agent.as_mut() {
            for cmd in agent.supervisor.take_cmds() {
                self.push(Output::Workload(cmd));
            }
        }
    }

    fn apply_serve_out(&mut self, out: ServeOut) {
        for (session, bytes) in out.send {
            self.push(Output::SessionSend { session, bytes });
        }
        for session in out.close {
            self.served.closed(session);
            self.push(Output::CloseSession { session });
        }
        self.write_internal(&out.changes);
    }

    /// The status view with each machine's agent presence (from SWIM, as
    /// this node sees it) and each unit's machine presence; managers only.
    pub fn status_view(&self) -> Option<StatusView> {
        let st = self.state.as_ref()?;
        let mut view = st.view();
        // The newest generation of each id speaks for it: an older one may
        // linger (suspect or down) beside the one that replaced it.
        let mut states: BTreeMap<NodeId, (u64, MemberState)> = BTreeMap::new();
        for m in self.members() {
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
        Some(view)
    }
}
