//! Status history for `juju show-status-log`: each manager reads its own
//! status view now and then ([`HISTORY_POLL_MS`], longer when building the
//! view is slow) and records, per machine and per unit, each change of
//! status, of its agent's presence, of its instance, and its addition and
//! removal, with this manager's wall-clock time.
//!
//! Owns the history's bounds: [`MAX_STATUS_LOG_PER_ENTITY`] entries per
//! entity (its oldest go first) and [`MAX_STATUS_LOG_BYTES`] in all (the
//! oldest entry of any entity goes first). Must never change node state
//! (it only reads the view), and never hold more than those bounds. A
//! restarted manager starts a new history (from the state it finds); the
//! other managers keep theirs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::state::model::StatusView;

/// Entries kept per machine or unit.
pub const MAX_STATUS_LOG_PER_ENTITY: usize = 100;
/// Bytes kept over all entities (about 100,000 entries).
pub const MAX_STATUS_LOG_BYTES: usize = 16 << 20;
/// Most entries one answer carries (`-n`).
pub const MAX_STATUS_LOG_ASKED: u32 = MAX_STATUS_LOG_PER_ENTITY as u32;
/// How often the view is read; a change faster than this may be missed.
pub const HISTORY_POLL_MS: u64 = 1_000;
/// The poll waits at least this many times the last read's duration, so
/// that a large environment (a view taking seconds to build) is not read
/// back to back.
pub const HISTORY_POLL_COST_FACTOR: u32 = 10;

/// One change of one entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// When this manager saw it, Unix ms.
    pub at_unix_ms: u64,
    /// `machine` (its status), `agent` (its agent's presence), `instance`,
    /// `workload` (a unit's status), or `life` (added, removed).
    pub kind: String,
    pub status: String,
}

impl StatusEntry {
    fn weight(&self, entity: &str) -> usize {
        48 + entity.len() + self.kind.len() + self.status.len()
    }
}

/// What an entity looked like at the last reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen(BTreeMap<&'static str, String>);

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, VecDeque<(u64, StatusEntry)>>,
    /// Every kept entry by its number: the oldest first, for the byte bound.
    order: BTreeMap<u64, String>,
    next: u64,
    bytes: usize,
    last: BTreeMap<String, Seen>,
    read_once: bool,
}

/// One manager's status history.
#[derive(Default)]
pub struct StatusHistory {
    inner: Mutex<Inner>,
}

/// The fields watched per entity.
fn seen_of(view: &StatusView) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    for m in &view.machines {
        let mut s = BTreeMap::new();
        s.insert("machine", m.status.text());
        s.insert("agent", if m.presence.is_empty() { "-".into() } else { m.presence.clone() });
        s.insert("instance", m.instance.text());
        out.insert(m.id.clone(), Seen(s));
    }
    for u in &view.units {
        let mut s = BTreeMap::new();
        s.insert("workload", u.status.text());
        s.insert("agent", if u.agent.is_empty() { "-".into() } else { u.agent.clone() });
        out.insert(u.id.clone(), Seen(s));
    }
    out
}

impl Inner {
    fn push(&mut self, entity: &str, entry: StatusEntry) {
        let seq = self.next;
        self.next += 1;
        self.bytes += entry.weight(entity);
        self.order.insert(seq, entity.to_owned());
        let list = self.entries.entry(entity.to_owned()).or_default();
        list.push_back((seq, entry));
        if list.len() > MAX_STATUS_LOG_PER_ENTITY
            && let Some((old, e)) = list.pop_front()
        {
            self.bytes -= e.weight(entity);
            self.order.remove(&old);
        }
        while self.bytes > MAX_STATUS_LOG_BYTES {
            let Some((old, who)) = self.order.pop_first() else { break };
            let list = self.entries.get_mut(&who).expect("every ordered entry is kept");
            let (first, e) = list.pop_front().expect("the oldest of an entity is first");
            assert_eq!(first, old, "an entity's entries are in order");
            self.bytes -= e.weight(&who);
            if list.is_empty() {
                self.entries.remove(&who);
            }
        }
    }
}

impl StatusHistory {
    /// Records what changed since the last reading (everything, the first
    /// time).
    pub fn observe(&self, view: &StatusView, at_unix_ms: u64) {
        let now = seen_of(view);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first = !inner.read_once;
        inner.read_once = true;
        let entry =
            |kind: &str, status: String| StatusEntry { at_unix_ms, kind: kind.into(), status };
        let last = std::mem::take(&mut inner.last);
        for (id, seen) in &now {
            let before = last.get(id);
            if before.is_none() && !first {
                inner.push(id, entry("life", "added".into()));
            }
            for (kind, value) in &seen.0 {
                if before.and_then(|b| b.0.get(kind)) != Some(value) {
                    inner.push(id, entry(kind, value.clone()));
                }
            }
        }
        for id in last.keys().filter(|id| !now.contains_key(*id)) {
            inner.push(id, entry("life", "removed".into()));
        }
        inner.last = now;
    }

    /// The last `n` entries of `entity`, oldest first, or `None` if this
    /// manager has none.
    pub fn of(&self, entity: &str, n: usize) -> Option<Vec<StatusEntry>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let list = inner.entries.get(entity)?;
        Some(list.iter().skip(list.len().saturating_sub(n)).map(|(_, e)| e.clone()).collect())
    }

    /// (entities, entries, bytes) held.
    pub fn usage(&self) -> (usize, usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.entries.len(), inner.order.len(), inner.bytes)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads this manager's status every [`HISTORY_POLL_MS`] (or
/// [`HISTORY_POLL_COST_FACTOR`] times the last read's duration, if longer)
/// into `history`, until the node stops.
pub async fn poll(shared: Arc<super::shared::Shared>, history: Arc<StatusHistory>) {
    let mut wait = Duration::from_millis(HISTORY_POLL_MS);
    loop {
        tokio::time::sleep(wait).await;
        let started = std::time::Instant::now();
        let Some((_, view, _, _)) = shared.status().await else {
            if shared.commands.is_closed() {
                return;
            }
            continue;
        };
        history.observe(&view, unix_ms());
        let cost = started.elapsed() * HISTORY_POLL_COST_FACTOR;
        wait = cost.max(Duration::from_millis(HISTORY_POLL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::model::{MachineView, Shown, UnitView};

    fn view(unit_status: &str, presence: &str, with_unit: bool) -> StatusView {
        let machine = MachineView {
            id: "m1".into(),
            presence: presence.into(),
            status: Shown(vec!["started".into()]),
            ..Default::default()
        };
        let unit = UnitView {
            id: "web/u1".into(),
            machine: Shown(vec!["m1".into()]),
            status: Shown(vec![unit_status.into()]),
            agent: presence.into(),
        };
        StatusView {
            machines: vec![machine],
            units: if with_unit { vec![unit] } else { vec![] },
            ..Default::default()
        }
    }

    fn kinds(h: &StatusHistory, id: &str) -> Vec<(String, String)> {
        h.of(id, 1_000).unwrap().into_iter().map(|e| (e.kind, e.status)).collect()
    }

    #[test]
    fn changes_are_recorded_per_entity_newest_last() {
        let h = StatusHistory::default();
        h.observe(&view("waiting", "alive", true), 1);
        h.observe(&view("waiting", "alive", true), 2);
        h.observe(&view("active: up", "alive", true), 3);
        h.observe(&view("active: up", "down", true), 4);
        h.observe(&view("active: up", "down", false), 5);
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            kinds(&h, "web/u1"),
            [
                s("agent", "alive"),
                s("workload", "waiting"),
                s("workload", "active: up"),
                s("agent", "down"),
                s("life", "removed")
            ]
        );
        assert_eq!(kinds(&h, "m1").last().unwrap(), &s("agent", "down"));
        assert_eq!(h.of("web/u1", 2).unwrap().len(), 2);
        assert_eq!(h.of("web/u1", 2).unwrap()[1].at_unix_ms, 5, "newest last");
        assert!(h.of("nobody", 5).is_none());
    }

    #[test]
    fn each_entity_keeps_its_bound_and_all_of_them_the_byte_bound() {
        let h = StatusHistory::default();
        for i in 0..(MAX_STATUS_LOG_PER_ENTITY * 2) {
            h.observe(&view(&format!("step {i}"), "alive", true), i as u64);
        }
        assert_eq!(h.of("web/u1", 10_000).unwrap().len(), MAX_STATUS_LOG_PER_ENTITY);
        let mut inner = Inner::default();
        let big = "x".repeat(1 << 16);
        for i in 0..((MAX_STATUS_LOG_BYTES >> 16) + 50) {
            let e =
                StatusEntry { at_unix_ms: i as u64, kind: "workload".into(), status: big.clone() };
            inner.push(&format!("app/{i}"), e);
        }
        assert!(inner.bytes <= MAX_STATUS_LOG_BYTES);
        assert!(!inner.entries.contains_key("app/0"), "the oldest entity's entry went first");
        assert_eq!(inner.order.len(), inner.entries.values().map(VecDeque::len).sum::<usize>());
    }
}
