//! Status history for `juju show-status-log`: each manager reads its own
//! status view now and then ([`HISTORY_POLL_MS`], longer when building the
//! view is slow) and records, per machine and per unit, each change of
//! status, of its agent's presence, of its instance, and its addition and
//! removal, with this manager's wall-clock time.
//!
//! Owns the history's bounds: [`MAX_STATUS_LOG_PER_ENTITY`] entries per
//! entity (its oldest go first) and [`MAX_STATUS_LOG_BYTES`] in all,
//! counted as the heap the entries and their entities hold (the oldest
//! entry of any entity goes first). What it remembers of the last reading
//! is a fingerprint per watched field, not the text (with the id, about
//! 100 bytes per entity the state holds). Must never change node state
//! (it only reads the view), and never hold more than those bounds. A
//! restarted manager starts a new history (from the state it finds); the
//! other managers keep theirs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::state::model::StatusView;

/// Entries kept per machine or unit.
pub const MAX_STATUS_LOG_PER_ENTITY: usize = 100;
/// Heap bytes kept over all entities and entries (about 70,000 entries
/// of short statuses), as [`Kept::bytes`] and [`ENTITY_BYTES`] count them.
pub const MAX_STATUS_LOG_BYTES: usize = 8 << 20;
/// Most entries one answer carries (`-n`).
pub const MAX_STATUS_LOG_ASKED: u32 = MAX_STATUS_LOG_PER_ENTITY as u32;
/// How often the view is read; a change faster than this may be missed.
pub const HISTORY_POLL_MS: u64 = 1_000;
/// The poll waits at least this many times the last read's duration, so
/// that a large environment (a view taking seconds to build) is not read
/// back to back.
pub const HISTORY_POLL_COST_FACTOR: u32 = 10;
/// Heap per entity with history, besides its id's bytes: its map slot
/// with B-tree slack, the list's header and the id's `Arc` header.
const ENTITY_BYTES: usize = 96;
/// Heap per entry besides its status text: its list slot and its slot in
/// the age order, with B-tree slack.
const ENTRY_BYTES: usize = 96;

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

/// The watched fields, in the order a reading records them.
const MACHINE_KINDS: [&str; 3] = ["agent", "instance", "machine"];
const UNIT_KINDS: [&str; 2] = ["agent", "workload"];

/// One kept change, compact: the kind a static name, the text a `Box<str>`.
#[derive(Debug)]
struct Kept {
    seq: u64,
    at_unix_ms: u64,
    kind: &'static str,
    status: Box<str>,
}

impl Kept {
    fn bytes(&self) -> usize {
        ENTRY_BYTES + self.status.len()
    }

    fn entry(&self) -> StatusEntry {
        StatusEntry {
            at_unix_ms: self.at_unix_ms,
            kind: self.kind.into(),
            status: self.status.to_string(),
        }
    }
}

/// A fingerprint of one field's text (a change is missed only if two texts
/// collide in 64 bits).
fn fingerprint(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The last reading of one entity: its fields' fingerprints in kind order.
type Seen = [u64; 3];

#[derive(Default)]
struct Inner {
    entries: BTreeMap<Arc<str>, VecDeque<Kept>>,
    /// Every kept entry by its number: the oldest first, for the byte bound.
    order: BTreeMap<u64, Arc<str>>,
    next: u64,
    bytes: usize,
    last: BTreeMap<Arc<str>, Seen>,
    read_once: bool,
}

impl Inner {
    fn push(&mut self, entity: &Arc<str>, at_unix_ms: u64, kind: &'static str, status: &str) {
        let seq = self.next;
        self.next += 1;
        let kept = Kept { seq, at_unix_ms, kind, status: status.into() };
        self.bytes += kept.bytes();
        let list = match self.entries.get_mut(entity) {
            Some(list) => list,
            None => {
                self.bytes += ENTITY_BYTES + entity.len();
                self.entries.entry(entity.clone()).or_default()
            }
        };
        // Most entities keep one or two entries: start at one slot, not
        // the four a `VecDeque` would, and double from there.
        if list.len() == list.capacity() {
            list.reserve_exact(list.len().max(1));
        }
        list.push_back(kept);
        self.order.insert(seq, entity.clone());
        if list.len() > MAX_STATUS_LOG_PER_ENTITY
            && let Some(old) = list.pop_front()
        {
            self.bytes -= old.bytes();
            self.order.remove(&old.seq);
        }
        while self.bytes > MAX_STATUS_LOG_BYTES {
            let Some((old, who)) = self.order.pop_first() else { break };
            let list = self.entries.get_mut(&who).expect("every ordered entry is kept");
            let first = list.pop_front().expect("the oldest of an entity is first");
            assert_eq!(first.seq, old, "an entity's entries are in order");
            self.bytes -= first.bytes();
            if list.is_empty() {
                self.entries.remove(&who);
                self.bytes -= ENTITY_BYTES + who.len();
            }
        }
    }

    /// Records one entity's reading against the last one kept; returns
    /// what to keep for the next.
    fn see(
        &mut self,
        id: &str,
        fields: &[(&'static str, &str)],
        at: u64,
        first: bool,
    ) -> (Arc<str>, Seen) {
        let (id, before) = match self.last.get_key_value(id) {
            Some((k, v)) => (k.clone(), Some(*v)),
            None => (Arc::<str>::from(id), None),
        };
        if before.is_none() && !first {
            self.push(&id, at, "life", "added");
        }
        let mut seen = [0; 3];
        for (i, (kind, value)) in fields.iter().enumerate() {
            seen[i] = fingerprint(value);
            if before.map(|b| b[i]) != Some(seen[i]) {
                self.push(&id, at, kind, value);
            }
        }
        (id, seen)
    }
}

/// The entity id a `model::entity_prefix` names: `m/ID/` is machine `ID`,
/// `u/APP/N/` is unit `APP/N`.
fn entity_of_prefix(prefix: &str) -> Option<&str> {
    let inner = prefix.strip_suffix('/')?;
    inner.strip_prefix("m/").or_else(|| inner.strip_prefix("u/"))
}

/// One manager's status history.
#[derive(Default)]
pub struct StatusHistory {
    inner: Mutex<Inner>,
}

impl StatusHistory {
    /// Records what changed since the last reading (everything, the first
    /// time), from a whole view.
    pub fn observe(&self, view: &StatusView, at_unix_ms: u64) {
        self.observe_changes(view, None, at_unix_ms);
    }

    /// Records what changed since the last reading. `touched: None`: `view`
    /// is whole, and an entity missing from it was removed. `Some`: `view`
    /// holds the live ones among the entities touched (named by
    /// `model::entity_prefix`) and maybe others; a touched entity missing
    /// from it was removed, and nothing is known of the rest.
    pub fn observe_changes(
        &self,
        view: &StatusView,
        touched: Option<&BTreeSet<String>>,
        at_unix_ms: u64,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first = !inner.read_once;
        inner.read_once = true;
        // Collected first and built in one pass: a map built key by key
        // in key order (the view is sorted) leaves every B-tree node about
        // half full, twice the nodes for the same ids (docs/ARCHITECTURE.md,
        // "State memory").
        let mut now = Vec::with_capacity(view.machines.len() + view.units.len());
        let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
        for m in &view.machines {
            let (agent, instance, status) = (dash(&m.presence), m.instance.text(), m.status.text());
            let fields = [
                (MACHINE_KINDS[0], agent.as_str()),
                (MACHINE_KINDS[1], instance.as_str()),
                (MACHINE_KINDS[2], status.as_str()),
            ];
            now.push(inner.see(&m.id, &fields, at_unix_ms, first));
        }
        for u in &view.units {
            let (agent, status) = (dash(&u.agent), u.status.text());
            let fields = [(UNIT_KINDS[0], agent.as_str()), (UNIT_KINDS[1], status.as_str())];
            now.push(inner.see(&u.id, &fields, at_unix_ms, first));
        }
        let now: BTreeMap<Arc<str>, Seen> = now.into_iter().collect();
        // Removed: for a whole reading, every entity it lacks; for a
        // partial one, each touched entity it lacks.
        let gone: Vec<Arc<str>> = match touched {
            None => inner.last.keys().filter(|id| !now.contains_key(*id)).cloned().collect(),
            Some(touched) => touched
                .iter()
                .filter_map(|p| entity_of_prefix(p))
                .filter(|id| !now.contains_key(*id))
                .filter_map(|id| inner.last.get_key_value(id).map(|(k, _)| k.clone()))
                .collect(),
        };
        for id in &gone {
            inner.last.remove(id);
            inner.push(id, at_unix_ms, "life", "removed");
        }
        match touched {
            None => inner.last = now,
            Some(_) => inner.last.extend(now),
        }
    }

    /// The last `n` entries of `entity`, oldest first, or `None` if this
    /// manager has none.
    pub fn of(&self, entity: &str, n: usize) -> Option<Vec<StatusEntry>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let list = inner.entries.get(entity)?;
        Some(list.iter().skip(list.len().saturating_sub(n)).map(Kept::entry).collect())
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

/// A fingerprint of the members' presence (id, generation, state): when
/// it moves, machines' and units' agent presence may have, so the next
/// reading is whole.
fn presence_fingerprint(members: &[crate::core::io::MemberInfo]) -> u64 {
    let mut h = DefaultHasher::new();
    for m in members {
        (m.identity.id.to_string(), m.identity.generation, m.state.as_str()).hash(&mut h);
    }
    h.finish()
}

/// Reads what changed in this manager's status every [`HISTORY_POLL_MS`]
/// (or [`HISTORY_POLL_COST_FACTOR`] times the last read's duration, if
/// longer) into `history`, until the node stops. A reading covers only the
/// machines and units whose keys changed since the last one (from the
/// retained operations); it is whole the first time, when the members'
/// presence moved, and when the changes cannot be told (see
/// `StateSync::view_changed_since`).
pub async fn poll(shared: Arc<super::shared::Shared>, history: Arc<StatusHistory>) {
    let mut wait = Duration::from_millis(HISTORY_POLL_MS);
    let (mut since, mut presence) = (None, None);
    loop {
        tokio::time::sleep(wait).await;
        let started = std::time::Instant::now();
        let Some((mut changes, mut members)) = shared.status_changes(since.clone()).await else {
            if shared.commands.is_closed() {
                return;
            }
            continue;
        };
        let mut fp = presence_fingerprint(&members);
        if changes.touched.is_some() && presence != Some(fp) {
            let Some(whole) = shared.status_changes(None).await else { continue };
            (changes, members) = whole;
            fp = presence_fingerprint(&members);
        }
        presence = Some(fp);
        history.observe_changes(&changes.view, changes.touched.as_ref(), unix_ms());
        since = Some(changes.version);
        report_usage(&shared.metrics, &history);
        let cost = started.elapsed() * HISTORY_POLL_COST_FACTOR;
        wait = cost.max(Duration::from_millis(HISTORY_POLL_MS));
    }
}

/// The history's bytes and the log ring's, for `jujud_memory_part_bytes`.
fn report_usage(metrics: &crate::metrics::Metrics, history: &StatusHistory) {
    use crate::metrics::MemoryPart;
    metrics.set_memory_part(MemoryPart::StatusHistory, history.usage().2);
    if let Some(hub) = crate::runtime::logs::capture::hub() {
        metrics.set_memory_part(MemoryPart::LogRing, hub.usage().1);
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

    /// One (kind, status) pair as [`kinds`] gives them.
    fn s(kind: &str, status: &str) -> (String, String) {
        (kind.to_string(), status.to_string())
    }

    #[test]
    fn changes_are_recorded_per_entity_newest_last() {
        let h = StatusHistory::default();
        h.observe(&view("waiting", "alive", true), 1);
        h.observe(&view("waiting", "alive", true), 2);
        h.observe(&view("active: up", "alive", true), 3);
        h.observe(&view("active: up", "down", true), 4);
        h.observe(&view("active: up", "down", false), 5);
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
            inner.push(&Arc::from(format!("app/{i}")), i as u64, "workload", &big);
        }
        assert!(inner.bytes <= MAX_STATUS_LOG_BYTES);
        let counted: usize = inner
            .entries
            .iter()
            .map(|(id, l)| ENTITY_BYTES + id.len() + l.iter().map(Kept::bytes).sum::<usize>())
            .sum();
        assert_eq!(inner.bytes, counted, "the running count is what is held");
        assert!(!inner.entries.contains_key("app/0"), "the oldest entity's entry went first");
        assert_eq!(inner.order.len(), inner.entries.values().map(VecDeque::len).sum::<usize>());
    }

    #[test]
    fn a_partial_reading_records_the_touched_and_leaves_the_rest() {
        let h = StatusHistory::default();
        h.observe(&view("waiting", "alive", true), 1);
        let touched: BTreeSet<String> = ["u/web/u1/".to_string()].into();
        let mut part = view("active: up", "alive", true);
        part.machines.clear();
        h.observe_changes(&part, Some(&touched), 2);
        let empty = StatusView::default();
        h.observe_changes(&empty, Some(&touched), 3);
        assert_eq!(
            kinds(&h, "web/u1"),
            [
                s("agent", "alive"),
                s("workload", "waiting"),
                s("workload", "active: up"),
                s("life", "removed")
            ]
        );
        assert_eq!(kinds(&h, "m1").len(), 3, "untouched and absent is not removed");
        h.observe_changes(&part, Some(&touched), 4);
        assert_eq!(kinds(&h, "web/u1").last().unwrap(), &s("workload", "active: up"));
        assert!(kinds(&h, "web/u1").contains(&s("life", "added")), "it came back");
        // A whole reading still finds what went missing.
        h.observe(&empty, 5);
        assert_eq!(kinds(&h, "m1").last().unwrap(), &s("life", "removed"));
    }
}
