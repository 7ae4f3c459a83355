//! Agent sessions (part of `cluster`), carried out as the runtime's
//! `session.rs` does on QUIC streams: an agent's `OpenSession` reaches the
//! first candidate that is a running, unpaused manager (with the expected
//! node id, when one is given) and reachable both ways; that manager gets
//! `SessionOpened` (under a session id the simulator allocates for it,
//! with the machine the agent's certificate names) one stream leg later,
//! and its first frame back opens the session at the agent
//! (`SessionOpened` then `SessionData`: the agent takes the first frame as
//! proof of acceptance). If no candidate answers, the agent gets
//! `SessionClosed` after the runtime's open timeout.
//!
//! Frames travel like state messages (latency, tail, clogs), in order per
//! direction, and are never lost one by one. A frame sent on a cut path
//! stalls; the session breaks if the path is still cut, or an end still
//! frozen, one QUIC idle timeout later (then both ends get
//! `SessionClosed`), else the stalled frames go on. A crash breaks its
//! sessions: the far end learns after the idle timeout (unless its core
//! closes the session first, on SWIM's word); a graceful exit closes them
//! at once. `CloseSession` closes both ends: the far end gets
//! `SessionClosed` after the frames already sent.
//!
//! Owns the table of session links (bounded by `MAX_SESSION_LINKS`). Must
//! never deliver a frame to a process other than the one the session was
//! opened with, nor reorder the frames of one direction.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use jujud::core::{Input, NodeId, PeerCert, Role};

use super::{Cluster, Ev};
use crate::queue::VTime;
use crate::trace::{Fnv1a, TraceKind};

/// QUIC's idle timeout: a session whose path is dead this long closes.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent's open waits for a manager's first frame (the
/// runtime's `SESSION_OPEN_TIMEOUT_MS`).
pub const SESSION_OPEN_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Most session links at once; past it an open fails at once (as a
/// refused connection would).
pub const MAX_SESSION_LINKS: usize = 65_536;
/// Most frames stalled on one link behind a cut; past it the link breaks.
pub const MAX_STALLED_FRAMES: usize = 64;
/// The gap kept between two frames of one direction, so that they arrive
/// in the order they were sent.
const FRAME_GAP: Duration = Duration::from_micros(1);

/// What reaches one end of a session.
#[derive(Debug)]
pub enum SessionEv {
    /// The agent's open reached the manager.
    Accept { link: u64 },
    /// A frame; at an agent, the first one opens the session.
    Frame { link: u64, bytes: Vec<u8> },
    /// The session closed (at an agent whose open never succeeded, the
    /// open failed).
    Closed { link: u64 },
    /// No candidate answered the agent's open.
    OpenFailed { session: u64 },
}

/// One session between an agent and a manager.
#[derive(Debug)]
pub struct Link {
    pub agent: usize,
    agent_epoch: u32,
    agent_session: u64,
    pub manager: usize,
    manager_epoch: u32,
    manager_session: u64,
    /// The agent was told the session opened.
    pub agent_open: bool,
    /// The manager was told of the session.
    pub manager_open: bool,
    /// Each end is done: told it closed, closed it itself, or died.
    agent_done: bool,
    manager_done: bool,
    /// Broken or closed: nothing more travels on it.
    pub broken: bool,
    /// When the last frame of each direction arrives.
    to_agent_last: VTime,
    to_manager_last: VTime,
    /// Frames sent on a cut path, with their receiving end (true: agent).
    stalled: VecDeque<(bool, Vec<u8>)>,
    idle_check_armed: bool,
}

/// Counters for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub opens: u64,
    pub opens_unanswered: u64,
    pub frames: u64,
    pub broken_by_cut: u64,
    pub broken_by_crash: u64,
    pub closed: u64,
}

/// Every session link.
#[derive(Debug, Default)]
pub struct Sessions {
    links: BTreeMap<u64, Link>,
    next_link: u64,
    next_manager_session: u64,
    by_agent: BTreeMap<(usize, u64), u64>,
    by_manager: BTreeMap<(usize, u64), u64>,
    pub stats: SessionStats,
}

impl Sessions {
    /// Open sessions: (agent slot, manager slot), both ends told.
    pub fn open_links(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.links.values().filter(|l| l.agent_open && l.manager_open && !l.broken).map(|l| (l.agent, l.manager))
    }
}

impl Cluster {
    /// Whether messages from `a` reach `b` and back right now.
    fn both_ways(&self, a: usize, b: usize) -> bool {
        !self.network.cuts_traffic(a, b)
            && !self.network.cuts_traffic(b, a)
            && !self.cut_by_bug(a, b)
            && !self.cut_by_bug(b, a)
    }

    fn answering_manager(&self, agent: usize, candidates: &[(std::net::SocketAddr, Option<NodeId>)]) -> Option<usize> {
        candidates.iter().find_map(|(addr, want)| {
            let m = *self.by_addr.get(addr)?;
            let s = &self.slots[m];
            let ok = s.role == Role::Manager && s.is_live() && want.is_none_or(|w| w == s.disk.id);
            let deaf = self.bug == Some(crate::planted::PlantedBug::DeafManagers) && self.planted_armed;
            (ok && !deaf && self.both_ways(agent, m)).then_some(m)
        })
    }

    /// `Output::OpenSession` from the agent in `slot`.
    pub(super) fn open_session(
        &mut self,
        slot: usize,
        session: u64,
        candidates: Vec<(std::net::SocketAddr, Option<NodeId>)>,
    ) {
        let now = self.now();
        self.sessions.stats.opens += 1;
        let epoch = self.slots[slot].epoch;
        let target =
            self.answering_manager(slot, &candidates).filter(|_| self.sessions.links.len() < MAX_SESSION_LINKS);
        if self.log {
            let c: Vec<String> = candidates
                .iter()
                .map(|(a, id)| format!("{a}{}", id.map_or(String::new(), |i| format!("={i}"))))
                .collect();
            println!(
                "{:>10.3}s slot {slot:>3} session {session} open -> {target:?} (candidates {})",
                now.as_secs_f64(),
                c.join(" ")
            );
        }
        let Some(m) = target else {
            self.sessions.stats.opens_unanswered += 1;
            let ev = Ev::Session { slot, epoch, what: SessionEv::OpenFailed { session } };
            self.push_control_free(now + SESSION_OPEN_TIMEOUT, ev);
            return;
        };
        let Some(at) = self.network.stream(slot, m, now, &mut self.net_rng) else { return };
        let (sessions, manager_epoch) = (&mut self.sessions, self.slots[m].epoch);
        sessions.next_link += 1;
        sessions.next_manager_session += 1;
        let (link, manager_session) = (sessions.next_link, sessions.next_manager_session);
        sessions.links.insert(
            link,
            Link {
                agent: slot,
                agent_epoch: epoch,
                agent_session: session,
                manager: m,
                manager_epoch,
                manager_session,
                agent_open: false,
                manager_open: false,
                agent_done: false,
                manager_done: false,
                broken: false,
                to_agent_last: now,
                to_manager_last: at,
                stalled: VecDeque::new(),
                idle_check_armed: false,
            },
        );
        sessions.by_agent.insert((slot, session), link);
        sessions.by_manager.insert((m, manager_session), link);
        self.push_control_free(at, Ev::Session { slot: m, epoch: manager_epoch, what: SessionEv::Accept { link } });
    }

    fn link_of(&self, slot: usize, session: u64) -> Option<u64> {
        let key = (slot, session);
        match self.slots[slot].role {
            Role::Agent => self.sessions.by_agent.get(&key).copied(),
            Role::Manager => self.sessions.by_manager.get(&key).copied(),
        }
    }

    /// `Output::SessionSend` from `slot`.
    pub(super) fn session_send(&mut self, slot: usize, session: u64, bytes: Vec<u8>) {
        let Some(id) = self.link_of(slot, session) else { return };
        let Some(l) = self.sessions.links.get(&id).filter(|l| !l.broken) else { return };
        let to_agent = l.manager == slot;
        if self.log
            && let Ok(jujud::core::agent::SessionMsg::Refused { reason, gone }) = jujud::core::agent::decode_msg(&bytes)
        {
            println!(
                "{:>10.3}s slot {slot:>3} refuses session link {id}: {reason} (gone {gone})",
                self.now().as_secs_f64()
            );
        }
        self.sessions.stats.frames += 1;
        self.trace.record(self.now(), slot, TraceKind::Session, Fnv1a::of_words(&bytes));
        self.send_frame(id, to_agent, bytes);
    }

    /// Sends one frame on link `id`, or stalls it behind a cut.
    fn send_frame(&mut self, id: u64, to_agent: bool, bytes: Vec<u8>) {
        let now = self.now();
        let Some(l) = self.sessions.links.get(&id) else { return };
        let (from, to) = if to_agent { (l.manager, l.agent) } else { (l.agent, l.manager) };
        if !self.both_ways(from, to) || !l.stalled.is_empty() {
            let l = self.sessions.links.get_mut(&id).expect("looked up above");
            if l.stalled.len() >= MAX_STALLED_FRAMES {
                return self.break_link(id, SESSION_IDLE_TIMEOUT);
            }
            l.stalled.push_back((to_agent, bytes));
            return self.arm_idle_check(id);
        }
        let Some(at) = self.network.stream(from, to, now, &mut self.net_rng) else { return };
        let l = self.sessions.links.get_mut(&id).expect("looked up above");
        let last = if to_agent { &mut l.to_agent_last } else { &mut l.to_manager_last };
        let at = at.max(*last + FRAME_GAP);
        *last = at;
        let (slot, epoch) = if to_agent { (l.agent, l.agent_epoch) } else { (l.manager, l.manager_epoch) };
        self.push_control_free(at, Ev::Session { slot, epoch, what: SessionEv::Frame { link: id, bytes } });
    }

    fn arm_idle_check(&mut self, id: u64) {
        let now = self.now();
        let Some(l) = self.sessions.links.get_mut(&id).filter(|l| !l.idle_check_armed) else { return };
        l.idle_check_armed = true;
        let pauses = (self.slots[l.agent].pause, self.slots[l.manager].pause);
        self.push_control_free(now + SESSION_IDLE_TIMEOUT, Ev::SessionIdle { link: id, pauses });
    }

    /// One idle timeout after a cut, a stall or a freeze: the session
    /// breaks if its path is still dead, else stalled frames go on.
    pub(super) fn session_idle(&mut self, id: u64, pauses: (u32, u32)) {
        let Some(l) = self.sessions.links.get_mut(&id) else { return };
        l.idle_check_armed = false;
        if l.broken {
            return;
        }
        let (a, m) = (l.agent, l.manager);
        let frozen = |s: &super::Slot, mark: u32| s.is_paused() && s.pause == mark;
        let dead = !self.both_ways(a, m) || frozen(&self.slots[a], pauses.0) || frozen(&self.slots[m], pauses.1);
        if dead {
            self.sessions.stats.broken_by_cut += 1;
            return self.break_link(id, Duration::ZERO);
        }
        let stalled = std::mem::take(&mut self.sessions.links.get_mut(&id).expect("present").stalled);
        for (to_agent, bytes) in stalled {
            self.send_frame(id, to_agent, bytes);
        }
    }

    /// Breaks link `id`: every end not yet done is told after `after`.
    fn break_link(&mut self, id: u64, after: Duration) {
        let now = self.now();
        let Some(l) = self.sessions.links.get_mut(&id) else { return };
        if self.log {
            println!(
                "{:>10.3}s session link {id} (agent {} manager {}) breaks, ends told after {:.3}s",
                now.as_secs_f64(),
                l.agent,
                l.manager,
                after.as_secs_f64()
            );
        }
        l.broken = true;
        l.stalled.clear();
        let mut tell = Vec::new();
        if !l.agent_done {
            tell.push((l.agent, l.agent_epoch, (now + after).max(l.to_agent_last + FRAME_GAP)));
        }
        if !l.manager_done {
            if l.manager_open {
                tell.push((l.manager, l.manager_epoch, (now + after).max(l.to_manager_last + FRAME_GAP)));
            } else {
                // Its accept is still on the way: it is dropped on arrival.
                l.manager_done = true;
            }
        }
        for (slot, epoch, at) in tell {
            self.push_control_free(at, Ev::Session { slot, epoch, what: SessionEv::Closed { link: id } });
        }
        self.forget_if_done(id);
    }

    fn forget_if_done(&mut self, id: u64) {
        let Some(l) = self.sessions.links.get(&id).filter(|l| l.agent_done && l.manager_done) else { return };
        let keys = ((l.agent, l.agent_session), (l.manager, l.manager_session));
        self.sessions.by_agent.remove(&keys.0);
        self.sessions.by_manager.remove(&keys.1);
        self.sessions.links.remove(&id);
    }

    /// `Output::CloseSession` from `slot`: the far end hears of it after
    /// the frames already sent.
    pub(super) fn close_session(&mut self, slot: usize, session: u64) {
        let Some(id) = self.link_of(slot, session) else { return };
        let now = self.now();
        let l = self.sessions.links.get_mut(&id).expect("indexed links exist");
        let agent_side = l.agent == slot;
        if agent_side {
            l.agent_done = true
        } else {
            l.manager_done = true
        }
        self.sessions.stats.closed += 1;
        if l.broken {
            return self.forget_if_done(id);
        }
        let (a, m) = (l.agent, l.manager);
        let (from, to) = if agent_side { (a, m) } else { (m, a) };
        let leg = if self.both_ways(a, m) {
            self.network.stream(from, to, now, &mut self.net_rng).map_or(SESSION_IDLE_TIMEOUT, |at| at - now)
        } else {
            SESSION_IDLE_TIMEOUT
        };
        self.break_link(id, leg);
    }

    /// The process in `slot` is gone: a crash (`graceful` false: the far
    /// ends learn after the idle timeout) or an exit (at once).
    pub(super) fn sessions_end_process(&mut self, slot: usize, graceful: bool) {
        let ids: Vec<u64> =
            self.sessions.links.iter().filter(|(_, l)| l.agent == slot || l.manager == slot).map(|(k, _)| *k).collect();
        for id in ids {
            let l = self.sessions.links.get_mut(&id).expect("listed");
            if l.agent == slot {
                l.agent_done = true;
            } else {
                l.manager_done = true;
            }
            if !l.broken {
                self.sessions.stats.broken_by_crash += u64::from(!graceful);
                let after = if graceful { Duration::from_millis(1) } else { SESSION_IDLE_TIMEOUT };
                self.break_link(id, after);
            } else {
                self.forget_if_done(id);
            }
        }
    }

    /// A partition began or moved, or `slot` froze: every session whose
    /// path is dead is checked one idle timeout from now.
    pub(super) fn sessions_disturbed(&mut self, slot: Option<usize>) {
        let ids: Vec<u64> = self
            .sessions
            .links
            .iter()
            .filter(|(_, l)| !l.broken && slot.is_none_or(|s| l.agent == s || l.manager == s))
            .filter(|(_, l)| slot.is_some() || !self.both_ways(l.agent, l.manager))
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.arm_idle_check(id);
        }
    }

    /// For the planted bug: marks the agent end of the link this frame
    /// arrives on open, and returns its session and manager, if the frame
    /// is the first.
    pub(super) fn sessions_first_frame(&mut self, slot: usize, what: &SessionEv) -> Option<(u64, PeerCert)> {
        let SessionEv::Frame { link, .. } = what else { return None };
        let l = self.sessions.links.get_mut(link).filter(|l| l.agent == slot && !l.agent_open && !l.agent_done)?;
        l.agent_open = true;
        let m = &self.slots[l.manager];
        Some((l.agent_session, PeerCert { id: m.disk.id, role: m.role }))
    }

    /// A session event at its end: the node's input(s), or `None` when
    /// stale. An agent's first frame comes with the `SessionOpened` it
    /// proves.
    pub(super) fn session_inputs(&mut self, slot: usize, what: SessionEv) -> Vec<Input> {
        let link = match &what {
            SessionEv::OpenFailed { session } => return vec![Input::SessionClosed { session: *session }],
            SessionEv::Accept { link } | SessionEv::Frame { link, .. } | SessionEv::Closed { link } => *link,
        };
        let Some(l) = self.sessions.links.get_mut(&link) else { return Vec::new() };
        let at_agent = l.agent == slot;
        if self.log && !matches!(what, SessionEv::Frame { .. }) {
            println!(
                "{:>10.3}s slot {slot:>3} session link {link}: {}",
                self.queue.now().as_secs_f64(),
                match &what {
                    SessionEv::Accept { .. } => "accept",
                    SessionEv::Closed { .. } => "closed",
                    _ => "?",
                }
            );
        }
        if (at_agent && l.agent_done) || (!at_agent && l.manager_done) {
            return Vec::new();
        }
        let cert = |s: &super::Slot| PeerCert { id: s.disk.id, role: s.role };
        match what {
            SessionEv::Accept { .. } if !l.broken => {
                l.manager_open = true;
                let machine = self.slots[l.agent].agent.as_ref().map(|a| a.machine.clone());
                let peer = cert(&self.slots[l.agent]);
                vec![Input::SessionOpened { session: l.manager_session, peer, machine }]
            }
            SessionEv::Accept { .. } => Vec::new(),
            SessionEv::Frame { bytes, .. } if at_agent => {
                let mut inputs = Vec::new();
                if !l.agent_open {
                    l.agent_open = true;
                    inputs.push(Input::SessionOpened {
                        session: l.agent_session,
                        peer: cert(&self.slots[l.manager]),
                        machine: None,
                    });
                }
                inputs.push(Input::SessionData { session: l.agent_session, bytes });
                inputs
            }
            SessionEv::Frame { bytes, .. } => vec![Input::SessionData { session: l.manager_session, bytes }],
            SessionEv::Closed { .. } => {
                let session = if at_agent { l.agent_session } else { l.manager_session };
                if at_agent {
                    l.agent_done = true
                } else {
                    l.manager_done = true
                }
                self.forget_if_done(link);
                vec![Input::SessionClosed { session }]
            }
            SessionEv::OpenFailed { .. } => unreachable!("handled above"),
        }
    }
}
