//! The manager's side of agent sessions, sans-IO: who is connected for which
//! machine, the assignments each was last sent, and agents' reports turned
//! into state changes.
//!
//! Owns the table of served sessions. Must never accept a report for a
//! machine other than the one the agent's certificate names, and never
//! serve a session for a removed machine (the agent is told it is gone).

use std::collections::{BTreeMap, BTreeSet};

use super::{SessionMsg, decode_msg, encode_msg};
use crate::core::identity::NodeId;
use crate::core::state::agents::{self, MachineLife};
use crate::core::state::{Change, Replica};

/// After a state change, assignments are recomputed this much later, so a
/// burst of changes costs one pass.
pub const ASSIGN_REFRESH_MS: u64 = 50;
/// A newly opened session gets its first assignment this much later: at
/// the node's next timer pass, after the inputs already queued (a pass reads
/// every unit, 70 ms at 100,000 entities, so a failover burst of opens
/// shares one pass instead of one each).
pub const FIRST_ASSIGN_DELAY_MS: u64 = 0;
/// Most sessions one manager serves; more are refused (the agent moves on).
pub const MAX_SERVED_SESSIONS: usize = 65_536;

/// One agent's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub agent: NodeId,
    pub machine: String,
    /// Digest of the assignments last sent.
    sent: Option<u64>,
}

/// Counters for metrics and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    pub sessions_accepted: u64,
    pub sessions_refused: u64,
    pub assignments_sent: u64,
    pub reports_applied: u64,
    /// Passes that computed assignments (each reads every unit).
    pub assignment_passes: u64,
    /// Report entries about units not on the agent's machine.
    pub report_units_skipped: u64,
    pub bad_messages: u64,
}

/// What the node must carry out.
#[derive(Debug, Default)]
pub struct ServeOut {
    pub send: Vec<(u64, Vec<u8>)>,
    pub close: Vec<u64>,
    /// State changes to write as this manager's own (agents' reports).
    pub changes: Vec<Change>,
}

/// The sessions a manager serves.
#[derive(Debug, Default)]
pub struct AgentSessions {
    sessions: BTreeMap<u64, Served>,
    /// The state changed in a way that can move any assignment: the next
    /// refresh is a pass over every session.
    dirty: bool,
    /// Sessions opened and not sent their first assignment yet. Without
    /// `dirty`, the next refresh computes theirs only: a full pass per open
    /// was O(sessions) per agent (O(N^2) over a manager's agents joining
    /// one by one), 14 % of the simulator's 10,000 row.
    waiting: BTreeSet<u64>,
    pub stats: ServeStats,
}

fn refuse(out: &mut ServeOut, session: u64, reason: String, gone: bool) {
    out.send.push((session, encode_msg(&SessionMsg::Refused { reason, gone })));
    out.close.push(session);
}

impl AgentSessions {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Every session: (session id, agent, machine).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Served)> {
        self.sessions.iter().map(|(k, v)| (*k, v))
    }

    /// Something in the state changed: assignments may have.
    pub fn mark_dirty(&mut self) {
        self.dirty = !self.sessions.is_empty();
    }

    /// How soon [`AgentSessions::refresh`] is wanted, if it is: at once
    /// for a session waiting for its first assignment, else after
    /// [`ASSIGN_REFRESH_MS`].
    pub fn refresh_delay_ms(&self) -> Option<u64> {
        if !self.waiting.is_empty() {
            Some(FIRST_ASSIGN_DELAY_MS)
        } else if self.dirty {
            Some(ASSIGN_REFRESH_MS)
        } else {
            None
        }
    }

    /// An agent opened `session`; `machine` is what its certificate names.
    pub fn opened(
        &mut self,
        r: &Replica,
        session: u64,
        agent: NodeId,
        machine: Option<String>,
        out: &mut ServeOut,
    ) {
        let Some(machine) = machine else {
            self.stats.sessions_refused += 1;
            return refuse(out, session, "the agent's certificate names no machine".into(), false);
        };
        if self.sessions.len() >= MAX_SERVED_SESSIONS {
            self.stats.sessions_refused += 1;
            return refuse(
                out,
                session,
                format!("this manager serves its limit of {MAX_SERVED_SESSIONS} agents"),
                false,
            );
        }
        match agents::machine_life(r, &machine) {
            MachineLife::Dead => {
                self.stats.sessions_refused += 1;
                return refuse(out, session, format!("machine {machine} was removed"), true);
            }
            MachineLife::Unknown => {
                self.stats.sessions_refused += 1;
                return refuse(
                    out,
                    session,
                    format!("machine {machine} is not known to this manager yet"),
                    false,
                );
            }
            MachineLife::Alive => {}
        }
        let claimed = agents::machine_agent(r, &machine);
        let hex = agent.to_string();
        if !claimed.is_empty() && !claimed.contains(&hex) {
            self.stats.sessions_refused += 1;
            let reason = format!("machine {machine} belongs to agent {}", claimed.join(", "));
            return refuse(out, session, reason, false);
        }
        self.stats.sessions_accepted += 1;
        let (changes, _) = agents::plan_report(r, &machine, &hex, &Default::default());
        out.changes.extend(changes);
        // Its assignment goes out with the next refresh (at once, after
        // the inputs already queued): one pass for a burst of opens.
        self.sessions.insert(session, Served { agent, machine, sent: None });
        self.waiting.insert(session);
    }

    /// `session` closed (either side).
    pub fn closed(&mut self, session: u64) {
        self.sessions.remove(&session);
        self.waiting.remove(&session);
    }

    /// A message from the agent on `session`.
    pub fn data(&mut self, r: &Replica, session: u64, bytes: &[u8], out: &mut ServeOut) {
        let Some(served) = self.sessions.get(&session) else { return };
        match decode_msg(bytes) {
            Ok(SessionMsg::Report(report)) => {
                let (changes, skipped) =
                    agents::plan_report(r, &served.machine, &served.agent.to_string(), &report);
                self.stats.reports_applied += 1;
                self.stats.report_units_skipped += skipped as u64;
                out.changes.extend(changes);
            }
            Ok(_) => self.stats.bad_messages += 1,
            Err(e) => {
                tracing::warn!(agent = %served.agent, error = %e, "dropped an undecodable session message");
                self.stats.bad_messages += 1;
            }
        }
    }

    /// Sends every session whose assignments changed its new ones, and tells
    /// agents of removed machines that they are gone: every session after a
    /// state change (`dirty`), else only those waiting for their first.
    pub fn refresh(&mut self, r: &Replica, out: &mut ServeOut) {
        let waiting = std::mem::take(&mut self.waiting);
        let ids: Vec<u64> = if std::mem::take(&mut self.dirty) {
            self.sessions.keys().copied().collect()
        } else {
            waiting.into_iter().filter(|id| self.sessions.contains_key(id)).collect()
        };
        if ids.is_empty() {
            return;
        }
        self.stats.assignment_passes += 1;
        let machines: BTreeSet<String> =
            ids.iter().map(|id| self.sessions[id].machine.clone()).collect();
        let all = agents::assignments(r, &machines);
        let mut gone = Vec::new();
        for id in &ids {
            let s = self.sessions.get_mut(id).expect("ids are served sessions");
            if agents::machine_life(r, &s.machine) == MachineLife::Dead {
                gone.push((*id, s.machine.clone()));
                continue;
            }
            let Some(a) = all.get(&s.machine) else { continue };
            let digest = a.digest();
            if s.sent != Some(digest) {
                s.sent = Some(digest);
                self.stats.assignments_sent += 1;
                out.send.push((*id, encode_msg(&SessionMsg::Assign(a.clone()))));
            }
        }
        for (id, machine) in gone {
            self.sessions.remove(&id);
            refuse(out, id, format!("machine {machine} was removed"), true);
        }
    }
}
