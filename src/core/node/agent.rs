//! The node's agent part: it feeds sessions, workload events and the live
//! managers to [`AgentRole`], arms the agent's one timer, and turns what the
//! role asks for into outputs.
//!
//! Owns the role and its timer's token (older tokens are stale). Must never
//! keep a session open to a peer whose certificate is not a manager's, and
//! never read membership: the live managers come in as an argument.

use super::membership::LiveManagers;
use super::{AgentSpec, Ctx};
use crate::core::agent::WorkloadEvent;
use crate::core::agent::role::{AgentOut, AgentRole};
use crate::core::identity::{NodeId, Role};
use crate::core::io::{Output, PeerCert, Time, Timer, TimerKind};

/// An agent's own side of the node.
pub(super) struct AgentSide {
    role: AgentRole,
    /// The agent timer armed: when, and its token (older ones are stale).
    timer: Option<(Time, u64)>,
    token: u64,
}

impl AgentSide {
    pub fn new(me: NodeId, spec: AgentSpec, seeds: Vec<std::net::SocketAddr>) -> AgentSide {
        AgentSide {
            role: AgentRole::new(me, spec.machine, spec.address, seeds),
            timer: None,
            token: 0,
        }
    }

    pub fn role(&self) -> &AgentRole {
        &self.role
    }

    /// An agent opens its first session at once, through its seeds.
    pub fn start(&mut self, cx: &mut Ctx<'_>) {
        let mut out = AgentOut::default();
        self.role.start(cx.now, &mut out);
        self.apply(cx, out);
    }

    pub fn on_session_opened(&mut self, cx: &mut Ctx<'_>, session: u64, peer: PeerCert) {
        let mut out = AgentOut::default();
        if peer.role == Role::Manager {
            self.role.on_session_opened(cx.now, session, peer.id, &mut out);
        } else {
            self.role.on_session_closed(cx.now, session, cx.rng, &mut out);
            out.close.push(session);
        }
        self.apply(cx, out);
    }

    pub fn on_session_closed(&mut self, cx: &mut Ctx<'_>, session: u64) {
        let mut out = AgentOut::default();
        self.role.on_session_closed(cx.now, session, cx.rng, &mut out);
        self.apply(cx, out);
    }

    pub fn on_session_busy(&mut self, cx: &mut Ctx<'_>, session: u64, retry_after_ms: u64) {
        self.role.on_session_busy(cx.now, session, retry_after_ms, cx.rng);
    }

    pub fn on_session_data(&mut self, cx: &mut Ctx<'_>, session: u64, bytes: &[u8]) {
        let mut out = AgentOut::default();
        self.role.on_session_data(cx.now, session, bytes, &mut out);
        self.apply(cx, out);
    }

    pub fn on_workload(&mut self, cx: &mut Ctx<'_>, ev: &WorkloadEvent) {
        self.role.on_workload(cx.now, ev);
    }

    /// The agent timer fired; a stale token is ignored.
    pub fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        if self.timer.is_none_or(|(_, t)| t != token) {
            return;
        }
        self.timer = None;
        let mut out = AgentOut::default();
        self.role.tick(cx.now, cx.rng, &mut out);
        self.apply(cx, out);
    }

    /// The live managers changed (from the node's settle).
    pub fn set_live_managers(&mut self, cx: &mut Ctx<'_>, live: &LiveManagers) {
        let mut out = AgentOut::default();
        self.role.set_live_managers(cx.now, live.all.clone(), &mut out);
        self.apply(cx, out);
    }

    /// At the end of every settle: arms the timer for the role's next
    /// wake-up if none is armed that early (a new token makes the old
    /// timer stale).
    pub fn arm_timer(&mut self, cx: &mut Ctx<'_>) {
        if let Some(want) = self.role.next_wake()
            && self.timer.is_none_or(|(at, _)| want < at)
        {
            self.token += 1;
            self.timer = Some((want, self.token));
            let kind = TimerKind::Agent(self.token);
            cx.push(Output::SetTimer(Timer { at: want.max(cx.now), kind }));
        }
    }

    fn apply(&mut self, cx: &mut Ctx<'_>, out: AgentOut) {
        for (session, candidates) in out.open {
            cx.push(Output::OpenSession { session, candidates });
        }
        for (session, bytes) in out.send {
            cx.push(Output::SessionSend { session, bytes });
        }
        for session in out.close {
            cx.push(Output::CloseSession { session });
        }
        if let Some(addrs) = out.save_managers {
            cx.push(Output::SaveManagers(addrs));
        }
        for cmd in self.role.supervisor.take_cmds() {
            cx.push(Output::Workload(cmd));
        }
    }
}
