//! Tests of the replica and the model: convergence whatever the delivery
//! order, causal buffering, compaction to full transfers, durability gating,
//! id allocation without coordination, and refused commands. Replication
//! and request de-duplication are in `sync_tests.rs`.

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
    assert_eq!(a.get("k"), vec!["from-a".to_string(), "from-b".to_string()], "concurrent writes are siblings");
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
fn snapshots_round_trip_through_bincode() {
    let mut a = replica(1);
    run(&mut a, Command::AddMachine { n: 3 });
    let snap = a.snapshot();
    let bytes = bincode::serde::encode_to_vec(&snap, bincode::config::standard()).unwrap();
    let (back, _): (super::Snapshot, usize) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
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
    run(&mut a, Command::SetConfig { app: "web".into(), pairs: vec![("port".into(), "80".into())] });
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
    let mut restarted = Replica::from_snapshot(Actor { node: 1 << 48, generation: 2 }, a.snapshot_all());
    run(&mut restarted, Command::AddMachine { n: 3 });
    let after_restart = machine_set(&restarted);
    assert_eq!(after_restart.len(), 6, "three new machines beside the old three: {after_restart:?}");
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
    let size = |ops: &[Stamped]| bincode::serde::encode_to_vec(ops, bincode::config::standard()).unwrap().len();
    let mut mine = r.write(&[set("k0", "v")]);
    let first = size(&mine);
    for g in 2..200u64 {
        let mut other = Replica::new(Actor { node: 9 << 48, generation: g });
        let ops = other.write(&[set(&format!("x{g}"), "v")]);
        other.mark_durable(1);
        r.apply_remote(ops);
    }
    let later = r.write(&[set("k1", "v")]);
    assert!(size(&later) <= first + 4, "an op for a fresh key grew from {first} to {} bytes with 200 actors", size(&later));
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
