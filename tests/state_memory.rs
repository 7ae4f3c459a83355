//! The document's memory shape (vendor/crdts/PATCHED.md item 7), measured
//! with a counting allocator (this test binary's own global allocator):
//! a snapshot for disk leaves the live document with a compact key index,
//! and a decoded snapshot is built compact, both with the same content.
//! Also that decoding keeps serde's semantics for input no encoder of ours
//! writes (keys out of order, a key twice: the last wins).
//!
//! Heap figures here are bytes requested (not the allocator's size
//! classes), so the bounds are ratios, not absolute sizes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use jujud::core::state::Actor;
use jujud::core::state::doc::Doc;
use jujud::core::state::replica::{Change, Replica, Snapshot};

/// The tests in this binary measure one at a time (the counter is global).
static MEASURE: Mutex<()> = Mutex::new(());

#[global_allocator]
static ALLOC: testkit::alloc::Counting = testkit::alloc::Counting;

fn live() -> usize {
    testkit::alloc::live_bytes()
}

const KEYS: usize = 30_000;
const ME: Actor = Actor { node: 0x0101 << 48, generation: 1 };

/// A replica whose keys arrived one write at a time, in key order (as a
/// deploy's machines and units do).
fn grown_key_by_key() -> Replica {
    let mut r = Replica::new(ME);
    for i in 0..KEYS {
        r.write(&[Change::Set { key: format!("m/{i:08}/status"), value: "pending".into() }]);
    }
    r
}

fn cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

#[test]
fn a_snapshot_for_disk_leaves_the_document_compact_and_equal() {
    let _one = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let base = live();
    let mut r = grown_key_by_key();
    let grown = live() - base;
    let hash = r.state_hash();
    let snap = r.snapshot_all_compacting();
    drop(snap);
    let compact = live() - base;
    assert_eq!(r.state_hash(), hash, "same content after the swap");
    assert_eq!(r.len(), KEYS);
    // Grown key by key the index's nodes are about half full; rebuilt
    // they are full: at least 15% of the whole replica's heap goes.
    assert!(
        compact * 100 <= grown * 85,
        "heap {grown} bytes grown key by key, {compact} after the snapshot (want <= 85%)"
    );
    // The document still takes writes and reads as before.
    r.write(&[Change::Set { key: "m/00000001/status".into(), value: "started".into() }]);
    assert_eq!(r.get("m/00000001/status"), vec!["started".to_string()]);
}

#[test]
fn a_decoded_snapshot_is_built_compact() {
    let _one = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let r = grown_key_by_key();
    let bytes = bincode::serde::encode_to_vec(r.snapshot_all(), cfg()).unwrap();
    // Measure the grown document alone, then the decoded one.
    let base = live();
    let grown_doc = r.snapshot_all().doc;
    let grown = live() - base;
    drop(grown_doc);
    let base = live();
    let (snap, used): (Snapshot, usize) = bincode::serde::decode_from_slice(&bytes, cfg()).unwrap();
    let decoded = live() - base;
    assert_eq!(used, bytes.len());
    assert_eq!(snap, r.snapshot_all(), "decodes to the same state");
    assert!(
        decoded * 100 <= grown * 85,
        "document grown key by key {grown} bytes, decoded {decoded} (want <= 85%)"
    );
}

#[test]
fn decoding_keeps_serdes_semantics_for_keys_out_of_order_or_repeated() {
    // A document's bytes are (clock, entries, deferred removes), entries a
    // map of key to (entry clock, register). Re-encode a document's
    // entries out of order with one key twice, and compare with serde's
    // own map decoding (one insert per entry: the last of a key wins).
    type Entry = (crdts::VClock<Actor>, crdts::MVReg<String, Actor>);
    type Parts = (
        crdts::VClock<Actor>,
        Vec<(String, Entry)>,
        HashMap<crdts::VClock<Actor>, BTreeSet<String>>,
    );
    type OldWay = (
        crdts::VClock<Actor>,
        BTreeMap<String, Entry>,
        HashMap<crdts::VClock<Actor>, BTreeSet<String>>,
    );
    let mut r = Replica::new(ME);
    for (k, v) in [("b", "2"), ("a", "1"), ("c", "3")] {
        r.write(&[Change::Set { key: k.into(), value: v.into() }]);
    }
    let doc: Doc = r.snapshot_all().doc;
    let whole = bincode::serde::encode_to_vec(&doc, cfg()).unwrap();
    let ((clock, entries, deferred), _): (Parts, usize) =
        bincode::serde::decode_from_slice(&whole, cfg()).unwrap();
    let by_key: BTreeMap<String, Entry> = entries.into_iter().collect();
    let scrambled: Vec<(String, Entry)> = [("c", "c"), ("a", "b"), ("b", "b"), ("a", "a")]
        .iter()
        .map(|(k, from)| (k.to_string(), by_key[*from].clone()))
        .collect();
    let bytes = bincode::serde::encode_to_vec((&clock, &scrambled, &deferred), cfg()).unwrap();
    let (back, used): (Doc, usize) = bincode::serde::decode_from_slice(&bytes, cfg()).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(back, doc, "sorted, and the last 'a' won");
    let (old_way, _): (OldWay, usize) = bincode::serde::decode_from_slice(&bytes, cfg()).unwrap();
    assert_eq!(old_way.1, by_key, "serde's own map decoding agrees");
}

/// Units in the history test: enough that the map of last readings spans
/// thousands of B-tree nodes.
const HISTORY_UNITS: usize = 40_000;

#[test]
fn the_status_history_keeps_its_last_readings_in_a_compact_map() {
    use jujud::core::state::model::{Shown, StatusView, UnitView};
    use jujud::runtime::history::StatusHistory;
    let _one = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let units = (0..HISTORY_UNITS)
        .map(|i| UnitView {
            id: format!("app/{i:06}"),
            machine: Shown(vec![format!("{i}")]),
            status: Shown(vec!["active".into()]),
            agent: "alive".into(),
        })
        .collect();
    let view = StatusView { units, ..StatusView::default() };
    let base = live();
    let h = StatusHistory::default();
    h.observe(&view, 1);
    let held = live() - base;
    let (_, _, counted) = h.usage();
    // What the history holds besides the entries it counts against its
    // byte bound: the last reading of each entity (id and fingerprints in
    // a map). Built key by key in key order, that map's nodes are about
    // half full: measured 102 bytes per entity then, 66 built in one pass
    // (requested bytes, 40,000 units).
    let per_entity = held.saturating_sub(counted) / HISTORY_UNITS;
    eprintln!("history: {held} bytes held, {counted} counted, {per_entity} per entity besides");
    assert!(per_entity <= 85, "{per_entity} bytes per entity besides the counted entries");
}
