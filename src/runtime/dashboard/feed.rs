//! What the dashboard shows, and its timeline: a poller asks the driver
//! for this manager's status every [`POLL_MS`] while a page is open (else
//! every [`IDLE_POLL_MS`]), turns it into a snapshot
//! (JSON), compares it with the previous one to add timeline events
//! (member down/up/replaced, HA n/N, singleton moves, machines, units,
//! config changes), and publishes the snapshot on a watch channel that
//! every open event stream reads.
//!
//! Owns the snapshot's shape and the bounded timeline ring. Must never
//! change node state (it only reads), and never keep more than
//! [`MAX_TIMELINE_EVENTS`] events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::core::control::ControllerInfo;
use crate::core::state::model::StatusView;
use crate::runtime::wire::MemberRow;

/// How often the poller reads the status. A manager going down reaches
/// an open dashboard within this of this manager's own SWIM event.
pub const POLL_MS: u64 = 250;
/// How often it reads the status while no page is open: the timeline's
/// times are then up to this late.
pub const IDLE_POLL_MS: u64 = 1_000;
/// Events kept in the timeline; past it the oldest is dropped.
pub const MAX_TIMELINE_EVENTS: usize = 256;

/// One timeline entry.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TimelineEvent {
    /// Wall-clock time this manager saw it, in Unix milliseconds.
    pub at_unix_ms: u64,
    /// member, ha, singleton, machine, unit, config.
    pub kind: &'static str,
    pub text: String,
}

/// What one view of the dashboard holds.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub answered_by: String,
    pub at_unix_ms: u64,
    pub controller: ControllerInfo,
    pub members: Vec<MemberRow>,
    pub status: StatusView,
    pub events: Vec<TimelineEvent>,
}

/// The timeline ring and the latest snapshot.
pub struct Feed {
    events: Mutex<VecDeque<TimelineEvent>>,
    latest: watch::Sender<Arc<String>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            events: Mutex::new(VecDeque::new()),
            latest: watch::channel(Arc::new(String::new())).0,
        }
    }
}

impl Feed {
    /// A receiver of snapshots (JSON), the current one marked unseen.
    pub fn subscribe(&self) -> watch::Receiver<Arc<String>> {
        let mut rx = self.latest.subscribe();
        rx.mark_changed();
        rx
    }

    pub fn latest(&self) -> Arc<String> {
        self.latest.borrow().clone()
    }

    fn push(&self, new: Vec<TimelineEvent>) -> Vec<TimelineEvent> {
        let mut ring = self.events.lock().unwrap_or_else(|e| e.into_inner());
        for e in new {
            if ring.len() == MAX_TIMELINE_EVENTS {
                ring.pop_front();
            }
            ring.push_back(e);
        }
        ring.iter().cloned().collect()
    }

    /// Takes one status reading: adds its changes to the timeline and
    /// publishes the snapshot if anything differs from the last one.
    pub fn observe(&self, prev: Option<&Reading>, now: &Reading, at_unix_ms: u64) {
        let events = self.push(changes(prev, now, at_unix_ms));
        let snap = Snapshot {
            answered_by: now.answered_by.clone(),
            at_unix_ms,
            controller: now.controller.clone(),
            members: now.members.clone(),
            status: now.status.clone(),
            events,
        };
        let json = serde_json::to_string(&snap).unwrap_or_default();
        self.latest.send_if_modified(|cur| {
            // The time alone changing is no news.
            let same = prev.is_some_and(|p| p == now) && !cur.is_empty();
            if !same {
                *cur = Arc::new(json);
            }
            !same
        });
    }
}

/// One status reading, as the driver answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub answered_by: String,
    pub status: StatusView,
    pub members: Vec<MemberRow>,
    pub controller: ControllerInfo,
}

fn short(id: &str) -> &str {
    id.get(..id.len().min(8)).unwrap_or(id)
}

/// The timeline events between two readings (none for the first but one
/// saying where the timeline starts).
pub fn changes(prev: Option<&Reading>, now: &Reading, at: u64) -> Vec<TimelineEvent> {
    let ev = |kind, text: String| TimelineEvent { at_unix_ms: at, kind, text };
    let Some(prev) = prev else {
        return vec![ev(
            "ha",
            format!(
                "dashboard started on {}: HA {}/{}",
                now.answered_by, now.controller.alive, now.controller.desired
            ),
        )];
    };
    let mut out = Vec::new();
    let before: BTreeMap<&str, &MemberRow> =
        prev.members.iter().map(|m| (m.id.as_str(), m)).collect();
    for m in &now.members {
        let what = if m.role == "manager" { "manager" } else { "agent" };
        match before.get(m.id.as_str()) {
            None => out.push(ev(
                "member",
                format!(
                    "{what} {} {} at {} (generation {})",
                    short(&m.id),
                    up_word(&m.state),
                    m.addr,
                    m.generation
                ),
            )),
            Some(old) if old.state != m.state || old.generation != m.generation => out.push(ev(
                "member",
                format!(
                    "{what} {}: {} -> {}{}",
                    short(&m.id),
                    old.state,
                    m.state,
                    gen_note(old.generation, m.generation)
                ),
            )),
            _ => {}
        }
    }
    let (pc, nc) = (&prev.controller, &now.controller);
    if (pc.alive, pc.desired) != (nc.alive, nc.desired) {
        out.push(ev(
            "ha",
            format!("HA {}/{} -> {}/{}", pc.alive, pc.desired, nc.alive, nc.desired),
        ));
    }
    let owners: BTreeMap<&str, &str> =
        pc.owners.iter().map(|(n, o)| (n.as_str(), o.as_str())).collect();
    for (name, owner) in &nc.owners {
        if owners.get(name.as_str()).is_some_and(|o| o != owner) {
            out.push(ev("singleton", format!("{name} moved to manager {}", short(owner))));
        }
    }
    entity_changes(prev, now, &ev, &mut out);
    out
}

fn up_word(state: &str) -> String {
    if state == "alive" { "up".into() } else { format!("seen {state}") }
}

fn gen_note(old: u64, new: u64) -> String {
    if old == new { String::new() } else { format!(" (generation {old} -> {new})") }
}

fn entity_changes(
    prev: &Reading,
    now: &Reading,
    ev: &dyn Fn(&'static str, String) -> TimelineEvent,
    out: &mut Vec<TimelineEvent>,
) {
    let machines: BTreeMap<&str, _> =
        prev.status.machines.iter().map(|m| (m.id.as_str(), m)).collect();
    for m in &now.status.machines {
        match machines.get(m.id.as_str()) {
            None => out.push(ev("machine", format!("machine {} added", m.id))),
            Some(o) => {
                if o.instance != m.instance {
                    out.push(ev(
                        "machine",
                        format!("machine {}: instance {} (provider)", m.id, m.instance.text()),
                    ));
                }
                if o.presence != m.presence {
                    out.push(ev(
                        "machine",
                        format!("machine {}: agent {} -> {}", m.id, o.presence, m.presence),
                    ));
                }
                if o.status != m.status {
                    out.push(ev("machine", format!("machine {}: {}", m.id, m.status.text())));
                }
            }
        }
    }
    let gone =
        prev.status.machines.iter().filter(|o| !now.status.machines.iter().any(|m| m.id == o.id));
    out.extend(gone.map(|o| ev("machine", format!("machine {} removed", o.id))));
    let units: BTreeMap<&str, _> = prev.status.units.iter().map(|u| (u.id.as_str(), u)).collect();
    for u in &now.status.units {
        match units.get(u.id.as_str()) {
            None => out.push(ev("unit", format!("unit {} added", u.id))),
            Some(o) if o.status != u.status => {
                out.push(ev("unit", format!("unit {}: {}", u.id, u.status.text())))
            }
            _ => {}
        }
    }
    let gone = prev.status.units.iter().filter(|o| !now.status.units.iter().any(|u| u.id == o.id));
    out.extend(gone.map(|o| ev("unit", format!("unit {} removed", o.id))));
    for a in &now.status.applications {
        let old = prev.status.applications.iter().find(|p| p.name == a.name).map(|p| &p.config);
        for (k, v) in &a.config {
            if old.is_some_and(|c| c.get(k) != Some(v)) {
                out.push(ev("config", format!("{} config {k}={}", a.name, v.text())));
            }
        }
    }
    for (k, v) in &now.status.controller {
        if prev.status.controller.get(k) != Some(v) {
            out.push(ev("config", format!("controller {k}={}", v.text())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, state: &str, generation: u64) -> MemberRow {
        MemberRow {
            id: id.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            role: "manager".into(),
            generation,
            state: state.into(),
            incarnation: 0,
        }
    }

    fn reading(members: Vec<MemberRow>, alive: u32) -> Reading {
        Reading {
            answered_by: "a".into(),
            status: StatusView::default(),
            members,
            controller: ControllerInfo { desired: 3, alive, ..Default::default() },
        }
    }

    #[test]
    fn a_manager_going_down_and_its_replacement_are_events() {
        let r0 = reading(
            vec![member("aaaaaaaaaaaa", "alive", 1), member("bbbbbbbbbbbb", "alive", 1)],
            2,
        );
        let r1 =
            reading(vec![member("aaaaaaaaaaaa", "alive", 1), member("bbbbbbbbbbbb", "down", 1)], 1);
        let r2 = reading(
            vec![
                member("aaaaaaaaaaaa", "alive", 1),
                member("bbbbbbbbbbbb", "replaced", 1),
                member("cccccccccccc", "alive", 1),
            ],
            2,
        );
        let texts = |p, n| changes(Some(p), n, 7).into_iter().map(|e| e.text).collect::<Vec<_>>();
        assert_eq!(texts(&r0, &r1), ["manager bbbbbbbb: alive -> down", "HA 2/3 -> 1/3"]);
        assert_eq!(
            texts(&r1, &r2),
            [
                "manager bbbbbbbb: down -> replaced",
                "manager cccccccc up at 127.0.0.1:1 (generation 1)",
                "HA 1/3 -> 2/3"
            ]
        );
        assert!(changes(Some(&r2), &r2, 7).is_empty());
    }

    #[test]
    fn the_timeline_is_bounded_and_a_quiet_reading_publishes_nothing() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        let r = reading(vec![member("a", "alive", 1)], 1);
        feed.observe(None, &r, 1);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        feed.observe(Some(&r), &r, 2);
        assert!(!rx.has_changed().unwrap(), "nothing changed, nothing sent");
        for i in 0..MAX_TIMELINE_EVENTS + 10 {
            let a = reading(vec![member("a", "alive", 1)], 1);
            let b = reading(vec![member("a", "down", 1)], 0);
            let (p, n) = if i % 2 == 0 { (a, b) } else { (b, a) };
            feed.observe(Some(&p), &n, 3);
        }
        assert_eq!(feed.events.lock().unwrap().len(), MAX_TIMELINE_EVENTS);
    }
}
