//! Tests of the replica and the model: convergence whatever the delivery
//! order, causal buffering, compaction to full transfers, durability gating,
//! id allocation without coordination, and refused commands; then
//! replication between `StateSync`s (`Have` only once durable, finding F)
//! and request de-duplication.

use super::model::{self, Command, CommandError};
use super::replica::{Actor, Change, Delta, Replica, Stamped};
use super::requests::derived_id;

fn replica(node: u64) -> Replica {
    Replica::new(Actor { node: node << 48, generation: 1 })
}

fn set(k: &str, v: &str) -> Change {
    Change::Set { key: k.into(), value: v.into() }
}

fn run(r: &mut Replica, cmd: Command) -> Vec<Stamped> {
    let id = derived_id(r.actor(), r.own_seq() + 1);
    let (changes, _) = model::plan(r, id, &cmd).expect("command accepted");
    let ops = r.write(&changes);
    r.mark_durable(r.own_seq());
    ops
}

#[test]
fn concurrent_writes_converge_in_any_delivery_order_and_keep_siblings() {
    let (mut a, mut b, mut c) = (replica(1), replica(2), replica(3));
    let mut oa = a.write(&[set("k", "from-a"), set("x", "1")]);
    let ob = b.write(&[set("k", "from-b"), set("y", "2")]);
    oa.extend(a.write(&[Change::Remove { key: "x".into() }]));
    a.mark_durable(3);
    b.mark_durable(2);
    // c gets b's first, then a's reversed (gaps held until filled).
    c.apply_remote(ob.clone());
    let mut rev = oa.clone();
    rev.reverse();
    assert_eq!(c.apply_remote(rev).len(), 3);
    a.apply_remote(ob);
    b.apply_remote(oa.clone());
    b.apply_remote(oa);
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(a.state_hash(), c.state_hash());
    assert_eq!(
        a.get("k"),
        vec!["from-a".to_string(), "from-b".to_string()],
        "concurrent writes are siblings"
    );
    assert!(a.get("x").is_empty(), "removed");
    // A later write that saw both siblings replaces them.
    let fix = c.write(&[set("k", "settled")]);
    a.apply_remote(fix);
    assert_eq!(a.get("k"), vec!["settled".to_string()]);
}

#[test]
fn non_durable_own_ops_are_not_shared() {
    let (mut a, b) = (replica(1), replica(2));
    a.write(&[set("k", "v")]);
    assert!(a.version().is_empty());
    assert!(a.delta_for(&b.version()).is_none());
    let shared = a.mark_durable(1);
    assert_eq!(shared.len(), 1);
    assert!(matches!(a.delta_for(&b.version()), Some(Delta::Ops(ops)) if ops.len() == 1));
}

#[test]
fn a_peer_behind_the_compacted_log_gets_the_full_state() {
    let mut a = replica(1);
    let n = super::replica::MAX_RETAINED_OPS + 10;
    for i in 0..n {
        a.write(&[set(&format!("k{}", i % 100), &i.to_string())]);
    }
    a.mark_durable(n as u64);
    let mut b = replica(2);
    match a.delta_for(&b.version()).expect("b lacks everything") {
        Delta::Full(snap) => b.merge_full(*snap),
        Delta::Ops(_) => panic!("the oldest ops were compacted away"),
    }
    assert_eq!(a.state_hash(), b.state_hash());
    assert!(a.delta_for(&b.version()).is_none(), "nothing left to send");
    // New ops after the merge flow as ops again.
    let more = a.write(&[set("new", "1")]);
    a.mark_durable(a.own_seq());
    assert_eq!(b.apply_remote(more).len(), 1);
    assert_eq!(a.state_hash(), b.state_hash());
}

#[test]
fn retained_ops_are_bounded_in_bytes_not_only_in_count() {
    use super::replica::{MAX_RETAINED_OPS, MAX_RETAINED_OPS_BYTES};
    let mut a = replica(1);
    let big = "v".repeat(4_000);
    // Far fewer ops than the count bound, far more bytes than the byte bound.
    let n = MAX_RETAINED_OPS_BYTES / 4_000 + 2_000;
    assert!(n < MAX_RETAINED_OPS);
    for i in 0..n {
        a.write(&[set(&format!("k{}", i % 100), &format!("{i}{big}"))]);
    }
    a.mark_durable(n as u64);
    let (count, heap) = a.retained();
    let used = a.retained_used();
    assert!(used <= MAX_RETAINED_OPS_BYTES, "{used} bytes retained");
    assert!(count < n, "the oldest were compacted away: {count} of {n} kept");
    // Each op's bytes count, its 4,000-byte value among them; the logs'
    // capacity is counted as it is and stops growing at the bound.
    assert!(used >= count * 4_000, "{used} bytes for {count} ops");
    assert!(heap >= used && heap <= MAX_RETAINED_OPS_BYTES + 16_384, "{heap} bytes held");
    assert_eq!(a.retained_counted_from_logs(), (used, heap), "the running counts");
    // A peer lacking the compacted ones gets the full state, and converges.
    let mut b = replica(2);
    match a.delta_for(&b.version()).expect("b lacks everything") {
        Delta::Full(snap) => b.merge_full(*snap),
        Delta::Ops(_) => panic!("the oldest ops were compacted away by bytes"),
    }
    assert_eq!(a.state_hash(), b.state_hash());
    // A peer that lacks only the retained tail gets ops.
    let mut c = replica(3);
    c.merge_full(a.snapshot());
    let more = a.write(&[set("new", "1")]);
    a.mark_durable(a.own_seq());
    assert!(matches!(a.delta_for(&c.version()), Some(Delta::Ops(ops)) if ops == more));
}

#[test]
fn snapshots_round_trip_through_bincode() {
    let mut a = replica(1);
    run(&mut a, Command::AddMachine { n: 3 });
    let snap = a.snapshot();
    let bytes = bincode::serde::encode_to_vec(&snap, bincode::config::standard()).unwrap();
    let (back, _): (super::Snapshot, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    let restored = Replica::from_snapshot(Actor { node: 1 << 48, generation: 2 }, back);
    assert_eq!(restored.state_hash(), a.state_hash());
}

#[test]
fn ids_from_two_partitioned_managers_never_collide() {
    let (mut a, mut b) = (replica(0xa1), replica(0xb2));
    let oa = run(&mut a, Command::AddMachine { n: 5 });
    let ob = run(&mut b, Command::AddMachine { n: 5 });
    a.apply_remote(ob);
    b.apply_remote(oa);
    let v = model::view(&a);
    assert_eq!(v.machines.len(), 10);
    let mut ids: Vec<_> = v.machines.iter().map(|m| m.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert_eq!(model::view(&b), v);
}

#[test]
fn deploy_config_and_removal_show_in_the_view() {
    let mut a = replica(1);
    run(&mut a, Command::Deploy { name: "web".into(), command: "sleep 1000".into(), n: 2 });
    run(
        &mut a,
        Command::SetConfig { app: "web".into(), pairs: vec![("port".into(), "80".into())] },
    );
    let v = model::view(&a);
    assert_eq!(v.applications.len(), 1);
    assert_eq!(v.applications[0].scale, 2);
    assert_eq!(v.applications[0].config["port"].text(), "80");
    assert_eq!(v.units.len(), 2);
    assert_eq!(v.machines.len(), 2);
    let unit = v.units[0].id.clone();
    let machine = v.units[0].machine.text();
    let err = model::plan(&a, 7, &Command::RemoveMachine { id: machine.clone() }).unwrap_err();
    assert!(matches!(err, CommandError::MachineInUse { .. }), "{err}");
    assert!(err.to_string().contains(&unit), "names the unit on it: {err}");
    run(&mut a, Command::RemoveUnit { unit: unit.clone() });
    run(&mut a, Command::RemoveMachine { id: machine.clone() });
    let v = model::view(&a);
    assert_eq!(v.applications[0].scale, 1);
    assert!(v.machines.iter().all(|m| m.id != machine));
    assert!(v.units.iter().all(|u| u.id != unit));
}

#[test]
fn a_removal_is_not_undone_by_a_concurrent_update() {
    let (mut a, mut b) = (replica(1), replica(2));
    let created = run(&mut a, Command::AddMachine { n: 1 });
    b.apply_remote(created);
    let id = model::view(&a).machines[0].id.clone();
    let rm = run(&mut a, Command::RemoveMachine { id: id.clone() });
    let up = b.write(&[set(&format!("m/{id}/status"), "started")]);
    b.mark_durable(b.own_seq());
    a.apply_remote(up);
    b.apply_remote(rm);
    assert!(model::view(&a).machines.is_empty());
    assert_eq!(model::view(&a), model::view(&b));
}

#[test]
fn bad_commands_are_refused_and_change_nothing() {
    let mut a = replica(1);
    run(&mut a, Command::Deploy { name: "db".into(), command: "run-db".into(), n: 1 });
    let before = a.state_hash();
    let bad = [
        Command::RemoveMachine { id: "99-0001".into() },
        Command::RemoveUnit { unit: "db/99-0001".into() },
        Command::RemoveUnit { unit: "nonsense".into() },
        Command::AddUnit { app: "nope".into(), n: 1 },
        Command::SetConfig { app: "nope".into(), pairs: vec![] },
        Command::SetConfig { app: "db".into(), pairs: vec![("bad key".into(), "v".into())] },
        Command::Deploy { name: "db".into(), command: "x".into(), n: 1 },
        Command::Deploy { name: "Bad_Name".into(), command: "x".into(), n: 1 },
        Command::Deploy { name: "ok".into(), command: "  ".into(), n: 1 },
        Command::AddMachine { n: 0 },
        Command::AddMachine { n: 1_001 },
    ];
    for cmd in bad {
        assert!(model::plan(&a, 7, &cmd).is_err(), "{cmd:?} accepted");
    }
    assert_eq!(a.state_hash(), before);
}

fn machine_set(r: &Replica) -> std::collections::BTreeSet<String> {
    model::view(r).machines.into_iter().map(|m| m.id).collect()
}

#[test]
fn ids_are_never_reused_after_a_restart_or_a_full_merge() {
    let mut a = replica(1);
    run(&mut a, Command::AddMachine { n: 3 });
    a.mark_durable(a.own_seq());
    let before = machine_set(&a);
    // A restart: the same node at the next generation, rebuilt from a snapshot.
    let mut restarted =
        Replica::from_snapshot(Actor { node: 1 << 48, generation: 2 }, a.snapshot_all());
    run(&mut restarted, Command::AddMachine { n: 3 });
    let after_restart = machine_set(&restarted);
    assert_eq!(
        after_restart.len(),
        6,
        "three new machines beside the old three: {after_restart:?}"
    );
    assert!(before.is_subset(&after_restart));
    // A full merge into a fresh replica, which then creates more.
    let mut c = replica(3);
    c.merge_full(restarted.snapshot_all());
    run(&mut c, Command::AddMachine { n: 3 });
    let after_merge = machine_set(&c);
    assert_eq!(after_merge.len(), 9, "{after_merge:?}");
    assert!(after_restart.is_subset(&after_merge));
}

#[test]
fn a_create_applied_twice_on_two_managers_is_one_entity() {
    // The same request (same id) planned on two replicas that had not seen
    // each other's copy: the keys and values are identical, so they merge.
    let (mut a, mut b) = (replica(1), replica(2));
    let cmd = Command::Deploy { name: "web".into(), command: "serve".into(), n: 2 };
    let mut copies = Vec::new();
    for r in [&mut a, &mut b] {
        let (changes, outcome) = model::plan(r, 42, &cmd).expect("accepted");
        copies.push((r.write(&changes), outcome));
        r.mark_durable(r.own_seq());
    }
    assert_eq!(copies[0].1, copies[1].1, "the same ids on both");
    a.apply_remote(copies[1].0.clone());
    b.apply_remote(copies[0].0.clone());
    let v = model::view(&a);
    assert_eq!((v.applications.len(), v.units.len(), v.machines.len()), (1, 2, 2));
    assert!(v.units.iter().all(|u| !u.status.is_conflict() && !u.machine.is_conflict()));
    assert_eq!(v, model::view(&b));
    // A retry on a replica holding only part of the first copy is not "already exists".
    let mut c = replica(3);
    c.apply_remote(copies[0].0[..3].to_vec());
    assert!(model::plan(&c, 42, &cmd).is_ok());
    assert!(matches!(model::plan(&c, 43, &cmd), Err(CommandError::AlreadyExists(_))));
}

#[test]
fn a_value_carries_clock_entries_only_for_the_actors_that_wrote_its_key() {
    // Many generations of one node, each writing its own key: the op for a
    // new key must not grow with the number of actors seen.
    let mut r = replica(1);
    let size = |ops: &[Stamped]| {
        bincode::serde::encode_to_vec(ops, bincode::config::standard()).unwrap().len()
    };
    let mut mine = r.write(&[set("k0", "v")]);
    let first = size(&mine);
    for g in 2..200u64 {
        let mut other = Replica::new(Actor { node: 9 << 48, generation: g });
        let ops = other.write(&[set(&format!("x{g}"), "v")]);
        other.mark_durable(1);
        r.apply_remote(ops);
    }
    let later = r.write(&[set("k1", "v")]);
    assert!(
        size(&later) <= first + 4,
        "an op for a fresh key grew from {first} to {} bytes with 200 actors",
        size(&later)
    );
    // A rewrite that saw the other actor's value replaces it everywhere.
    mine.extend(later);
    mine.extend(r.write(&[set("k0", "w")]));
    r.mark_durable(r.own_seq());
    let mut b = replica(2);
    assert_eq!(b.apply_remote(mine).len(), 3);
    let over = b.write(&[set("k0", "from-b")]);
    b.mark_durable(b.own_seq());
    r.apply_remote(over);
    assert_eq!(r.get("k0"), vec!["from-b".to_string()]);
}

mod replication;

#[test]
fn units_placed_with_to_go_on_existing_machines_and_bad_placements_are_refused() {
    let mut r = replica(1);
    let plan =
        |r: &Replica, cmd: Command| model::plan(r, derived_id(r.actor(), r.own_seq() + 1), &cmd);
    let (changes, o) = plan(&r, Command::AddMachine { n: 2 }).unwrap();
    r.write(&changes);
    let (m1, m2) = (o.ids[0].clone(), o.ids[1].clone());
    let deploy =
        |to: Vec<String>| Command::DeployTo { name: "web".into(), command: "run".into(), to };
    assert!(matches!(
        plan(&r, deploy(vec!["9-nope".into()])),
        Err(CommandError::UnknownMachine(_))
    ));
    assert!(plan(&r, deploy(vec![m1.clone(), m1.clone()])).is_err(), "a machine named twice");
    assert!(plan(&r, deploy(Vec::new())).is_err(), "at least one machine");
    let (changes, o) = plan(&r, deploy(vec![m1.clone()])).unwrap();
    r.write(&changes);
    assert_eq!(o.ids, vec![format!("web/{m1}")]);
    assert!(o.machines.is_empty(), "no machine is created");
    assert_eq!(r.get(&format!("u/web/{m1}/machine")), vec![m1.clone()]);
    assert_eq!(r.get("a/web/command"), vec!["run".to_string()]);
    let view = model::view(&r);
    assert_eq!(view.machines.len(), 2, "still two machines");
    assert!(
        plan(&r, Command::AddUnitTo { app: "web".into(), to: vec![m1.clone()] }).is_err(),
        "one unit of an app per machine"
    );
    let (changes, o) =
        plan(&r, Command::AddUnitTo { app: "web".into(), to: vec![m2.clone()] }).unwrap();
    r.write(&changes);
    assert_eq!(o.ids, vec![format!("web/{m2}")]);
    assert!(
        plan(&r, Command::AddUnitTo { app: "db".into(), to: vec![m2] }).is_err(),
        "unknown application"
    );
}

#[test]
fn a_clock_encodes_exactly_as_the_btreemap_it_replaced() {
    // vendor/crdts/PATCHED.md item 5: clocks hold a sorted vector now;
    // records, snapshots and state messages must keep their bytes.
    let actors = [(3u64, 1u64, 7u64), (1, 2, 9), (2, 1, 1)];
    let mut clock = crdts::VClock::<Actor>::new();
    let mut map = std::collections::BTreeMap::new();
    for (node, generation, n) in actors {
        let a = Actor { node: node << 48, generation };
        crdts::CmRDT::apply(&mut clock, crdts::Dot::new(a, n));
        map.insert(a, n);
    }
    let cfg = bincode::config::standard();
    let new = bincode::serde::encode_to_vec(&clock, cfg).unwrap();
    assert_eq!(new, bincode::serde::encode_to_vec((&map,), cfg).unwrap());
    let (back, used): (crdts::VClock<Actor>, usize) =
        bincode::serde::decode_from_slice(&new, cfg).unwrap();
    assert_eq!((back, used), (clock.clone(), new.len()));
    // Item 5's inline single entry: the empty and one-entry clocks encode
    // as their maps too, and a clock shrunk to one entry is equal (and
    // hashes equal) to one built with it.
    let one = Actor { node: 2 << 48, generation: 1 };
    let mut single = crdts::VClock::<Actor>::new();
    let empty = bincode::serde::encode_to_vec(&single, cfg).unwrap();
    assert_eq!(
        empty,
        bincode::serde::encode_to_vec((&std::collections::BTreeMap::<Actor, u64>::new(),), cfg)
            .unwrap()
    );
    crdts::CmRDT::apply(&mut single, crdts::Dot::new(one, 1));
    let one_map = std::collections::BTreeMap::from([(one, 1u64)]);
    assert_eq!(
        bincode::serde::encode_to_vec(&single, cfg).unwrap(),
        bincode::serde::encode_to_vec((&one_map,), cfg).unwrap()
    );
    let mut shrunk = clock;
    for (node, generation, _) in actors {
        if node != 2 {
            let gone =
                crdts::VClock::from(crdts::Dot::new(Actor { node: node << 48, generation }, 100));
            crdts::ResetRemove::reset_remove(&mut shrunk, &gone);
        }
    }
    assert_eq!(shrunk.get(&one), 1);
    assert_eq!(shrunk, single);
    let hash = |c: &crdts::VClock<Actor>| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        c.hash(&mut h);
        h.finish()
    };
    assert_eq!(hash(&shrunk), hash(&single));
}

/// Exchanges every durable operation between `rs` until they converge.
fn sync_all(rs: &mut [Replica]) {
    for i in 0..rs.len() {
        for j in 0..rs.len() {
            if i != j
                && let Some(Delta::Ops(ops)) = rs[i].delta_for(&rs[j].version())
            {
                rs[j].apply_remote(ops);
            }
        }
    }
}

#[test]
fn the_conflict_semantics_table_holds_with_clocks_of_many_writers() {
    // docs/GUARANTEES.md "Conflict semantics", rows 2, 5 and 6, on keys
    // whose clocks carry several writers (restarts are new actors).
    let mut rs = vec![replica(1), replica(2), replica(3)];
    run(&mut rs[0], Command::Deploy { name: "web".into(), command: "serve".into(), n: 1 });
    sync_all(&mut rs);
    for generation in 2..5 {
        let snap = rs[1].snapshot_all();
        rs[1] = Replica::from_snapshot(Actor { node: 2 << 48, generation }, snap);
        let pairs = vec![("port".into(), generation.to_string())];
        run(&mut rs[1], Command::SetConfig { app: "web".into(), pairs });
        sync_all(&mut rs);
    }
    // Row 2: different config keys written concurrently merge.
    run(
        &mut rs[0],
        Command::SetConfig { app: "web".into(), pairs: vec![("a".into(), "1".into())] },
    );
    run(
        &mut rs[2],
        Command::SetConfig { app: "web".into(), pairs: vec![("b".into(), "2".into())] },
    );
    // Row 5: concurrent add-units add up.
    run(&mut rs[0], Command::AddUnit { app: "web".into(), n: 2 });
    run(&mut rs[2], Command::AddUnit { app: "web".into(), n: 3 });
    // Row 6: a second deploy of one name elsewhere at once, other command.
    run(&mut rs[1], Command::Deploy { name: "db".into(), command: "db-a".into(), n: 1 });
    run(&mut rs[2], Command::Deploy { name: "db".into(), command: "db-b".into(), n: 1 });
    sync_all(&mut rs);
    let v = model::view(&rs[0]);
    assert_eq!(v, model::view(&rs[1]));
    assert_eq!(v, model::view(&rs[2]));
    let web = v.applications.iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web.scale, 6, "1 + 2 + 3 units");
    assert_eq!(web.config["port"].text(), "4", "a later write replaced the earlier ones");
    assert_eq!((web.config["a"].text(), web.config["b"].text()), ("1".into(), "2".into()));
    let db = v.applications.iter().find(|a| a.name == "db").unwrap();
    assert_eq!(db.command.text(), "CONFLICT(db-a | db-b)");
    assert_eq!(db.scale, 2, "both deploys' units");
}

/// A manager restarted on its own disk, as the runtime rebuilds it: a
/// replica from its snapshot and log under a new actor, then writing on as
/// the disk's recorded writer.
fn restart_on_own_disk(r: &Replica, generation: u64, recorded: u64) -> Replica {
    let node = r.actor().node;
    let mut back = Replica::from_snapshot(Actor { node, generation }, r.snapshot_all());
    let writer = super::replica::writer_after_start(node, generation, Some(recorded), true);
    assert!(back.write_as(writer), "no gap in the writer's own operations");
    back
}

#[test]
fn restarts_on_an_own_disk_write_on_as_one_actor_and_metadata_stays_flat() {
    let mut rs = vec![replica(1), replica(2), replica(3)];
    run(&mut rs[0], Command::Deploy { name: "web".into(), command: "serve".into(), n: 1 });
    sync_all(&mut rs);
    let mut digest_at = Vec::new();
    for generation in 2..=200 {
        rs[1] = restart_on_own_disk(&rs[1], generation, 1);
        let seq_before = rs[1].own_seq();
        let pairs = vec![("port".into(), generation.to_string())];
        let ops = run(&mut rs[1], Command::SetConfig { app: "web".into(), pairs });
        assert_eq!(ops[0].seq, seq_before + 1, "numbers continue after the highest on disk");
        sync_all(&mut rs);
        if generation == 10 || generation == 200 {
            let vv = rs[0].version();
            digest_at.push(super::sync::encode_msg(&super::sync::StateMsg::Digest(vv)).len());
        }
    }
    run(&mut rs[1], Command::AddMachine { n: 2 });
    sync_all(&mut rs);
    for r in &rs {
        assert_eq!(r.applied().len(), 2, "one actor per writing manager: {:?}", r.applied());
        assert_eq!(r.state_hash(), rs[0].state_hash());
    }
    assert_eq!(digest_at[0], digest_at[1], "a digest does not grow with restarts");
    let v = model::view(&rs[0]);
    assert_eq!(v.applications[0].config["port"].text(), "200", "no sibling from an old actor");
    assert_eq!(v.machines.len(), 3, "the deploy's machine and two new ones, none reused");
}

#[test]
fn a_restart_without_its_own_disk_or_with_a_gap_is_a_new_actor() {
    use super::replica::writer_after_start;
    let node = 1 << 48;
    assert_eq!(writer_after_start(node, 9, Some(4), true), Actor { node, generation: 4 });
    // A restore from peers: the old writer's last operations may be elsewhere.
    assert_eq!(writer_after_start(node, 9, Some(4), false), Actor { node, generation: 9 });
    // A disk from before the writer was recorded.
    assert_eq!(writer_after_start(node, 9, None, true), Actor { node, generation: 9 });
    // The writer's operations replayed with a hole: adoption is refused.
    let mut a = replica(1);
    let ops = a.write(&[set("a", "1"), set("b", "2")]);
    let mut back = Replica::new(Actor { node, generation: 2 });
    back.apply_remote(vec![ops[1].clone()]);
    assert!(!back.write_as(a.actor()), "a gap in the writer's own log is refused");
    assert_eq!(back.actor().generation, 2);
}

/// Small operations, encoded: the logs' used bytes stay within the bound,
/// their capacity stays near it, and the
/// bound holds far more operations than decoded ones did (about 200 bytes
/// each in three allocations: 8 MiB held about 40,000).
#[test]
fn retained_operations_are_encoded_and_their_capacity_stays_at_the_bound() {
    use super::replica::MAX_RETAINED_OPS_BYTES;
    let mut a = replica(1);
    let n = MAX_RETAINED_OPS_BYTES / 40 + 10_000;
    for i in 0..n {
        a.write(&[set(&format!("m/0b23jnb52d75k-{}/status", i % 100), "started")]);
    }
    let (count, heap) = a.retained();
    let used = a.retained_used();
    assert!(count < n, "the oldest were compacted away: {count} of {n} kept");
    assert!(used <= MAX_RETAINED_OPS_BYTES, "{used} bytes used");
    assert!(used >= MAX_RETAINED_OPS_BYTES - 200, "the bound is used: {used}");
    assert!(count >= MAX_RETAINED_OPS_BYTES / 90, "{count} ops in {used} bytes");
    // Spare capacity: the index's, left as operations grew longer (their
    // numbers take more bytes), and the growth minimum; about 1 % here.
    let slack = heap - used;
    assert!(slack <= MAX_RETAINED_OPS_BYTES / 32, "{slack} spare bytes beyond {used} used");
    assert_eq!(a.retained_counted_from_logs(), (used, heap), "the running counts");
}

/// A writer of a few operations keeps them retained although another
/// writer filled the byte bound: the bytes come from the largest log. It
/// kept only its last one before, so a peer that missed its first write
/// (down at the time) was sent the full state (22 MiB at 100,050
/// entities) instead of two operations.
#[test]
fn a_small_writer_keeps_its_operations_when_a_large_one_fills_the_bound() {
    use super::replica::{MAX_RETAINED_OPS_BYTES, VersionVector};
    let (mut big, mut small, mut r) = (replica(1), replica(2), replica(3));
    let n = MAX_RETAINED_OPS_BYTES / 60 + 10_000;
    let mut ops = Vec::new();
    for i in 0..n {
        ops.extend(big.write(&[set(&format!("k{}", i % 100), "v")]));
    }
    big.mark_durable(big.own_seq());
    r.apply_remote(ops);
    let mine: Vec<Stamped> =
        (0..3).flat_map(|i| small.write(&[set(&format!("s{i}"), "v")])).collect();
    r.apply_remote(mine);
    assert!(r.retained_used() <= MAX_RETAINED_OPS_BYTES, "{:?}", r.retained());
    // A peer holding all of big's operations and none of small's.
    let theirs: VersionVector = [(big.actor(), big.own_seq())].into_iter().collect();
    match r.delta_for(&theirs) {
        Some(Delta::Ops(ops)) => {
            assert_eq!(ops.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        }
        other => panic!(
            "expected small's three operations, got {:?}",
            other.map(|d| matches!(d, Delta::Full(_)))
        ),
    }
    let (used, heap) = r.retained_counted_from_logs();
    assert_eq!((used, heap), (r.retained_used(), r.retained().1));
    assert!(heap <= MAX_RETAINED_OPS_BYTES + 16_384, "capacity within the bound: {heap}");
}

#[test]
fn changed_keys_name_the_entities_a_partial_view_holds_and_gaps_say_none() {
    use std::collections::BTreeSet;
    let mut a = replica(1);
    run(&mut a, Command::Deploy { name: "web".into(), command: "sleep 1000".into(), n: 3 });
    let before = a.applied().clone();
    let units: Vec<String> = model::view(&a).units.iter().map(|u| u.id.clone()).collect();
    run(&mut a, Command::SetConfig { app: "web".into(), pairs: vec![("p".into(), "1".into())] });
    a.write(&[set(&format!("u/{}/status", units[0]), "active: up")]);
    a.mark_durable(a.own_seq());
    run(&mut a, Command::RemoveUnit { unit: units[1].clone() });
    let keys = a.keys_changed_since(&before, 100).expect("every op since is retained");
    let touched: BTreeSet<String> =
        keys.iter().filter_map(|k| model::entity_prefix(k)).map(str::to_owned).collect();
    let want: BTreeSet<String> = units[..2].iter().map(|u| format!("u/{u}/")).collect();
    assert_eq!(touched, want, "the app's config is no machine or unit");
    let (part, whole) = (model::view_of(&a, &touched), model::view(&a));
    assert_eq!(part.units.len(), 1, "the removed unit is not live: {:?}", part.units);
    assert_eq!(Some(&part.units[0]), whole.units.iter().find(|u| u.id == units[0]));
    assert_eq!(part.units[0].status.text(), "active: up");
    let machine = part.units[0].machine.text();
    assert!(part.machines.iter().any(|m| m.id == machine), "a unit's machine comes with it");
    assert!(part.machines.len() <= 2, "only the touched units' machines: {:?}", part.machines);
    assert!(a.keys_changed_since(&before, 2).is_none(), "more keys than asked for");
    assert_eq!(a.keys_changed_since(a.applied(), 100), Some(BTreeSet::new()));
    // A replica that got its state whole holds no operations to tell by.
    let mut c = replica(3);
    c.merge_full(a.snapshot());
    assert_eq!(c.state_hash(), a.state_hash());
    assert!(c.keys_changed_since(&Default::default(), 100).is_none(), "no ops for a full merge");
}
