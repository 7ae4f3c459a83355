//! The in-process memory scenario (`--only memory`): one replica built in
//! this process the way a manager builds it (plan, write, record, durable),
//! with `--entities` entities as the scale scenario makes them
//! (applications of 1,000 units, each unit on its own machine). Prints the
//! heap it holds, what each part of the replica holds (measured by cloning
//! the part under the counting allocator), the snapshot's encoded size, and
//! the cost of creating one entity at 1,000 entities present and at
//! `--entities`.
//!
//! Reads the counting allocator (`testkit::alloc`, installed in main.rs:
//! every allocation of this benchmark process goes through it). Does not start any
//! process or touch the disk.

use std::time::Instant;

use jujud::core::state::replica::{Change, Replica};
use jujud::core::state::sync::{StateMsg, encode_msg};
use jujud::core::state::{Actor, Command, agents, model, writer_after_start};

use crate::cluster::Res;
use crate::stats::{Report, Samples};
use crate::{Args, UNITS_PER_DEPLOY};

fn live() -> usize {
    testkit::alloc::live_bytes()
}

fn mib(b: usize) -> f64 {
    b as f64 / 1048576.0
}

/// A request id as a client picks one (random-looking, from a counter).
fn request_id(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One client command applied as `StateSync::command` applies it: planned,
/// its record appended, written, then made durable.
fn apply(r: &mut Replica, id: u64, cmd: &Command) -> Res<()> {
    let (mut changes, outcome) = model::plan(r, id, cmd).map_err(|e| e.to_string())?;
    changes.push(Change::Record { id, ids: outcome.ids });
    r.write(&changes);
    let seq = r.own_seq();
    r.mark_durable(seq);
    Ok(())
}

/// Deploys applications of [`UNITS_PER_DEPLOY`] units until at least
/// `entities` exist; returns how many do.
fn build(r: &mut Replica, entities: u64, next_id: &mut u64) -> Res<u64> {
    let per = 1 + 2 * u64::from(UNITS_PER_DEPLOY);
    let deploys = entities.div_ceil(per);
    for i in 0..deploys {
        *next_id += 1;
        let cmd = Command::Deploy {
            name: format!("scale{i}"),
            command: "exec sleep infinity".into(),
            n: UNITS_PER_DEPLOY,
        };
        apply(r, request_id(*next_id), &cmd)?;
    }
    Ok(deploys * per)
}

/// Creating one entity (`AddMachine -n 1`) `rounds` times, each timed.
/// Times the assignment pass a manager makes when an agent opens a session
/// (`AgentSessions::opened`: the assignments of that one machine), over
/// `rounds` machines of the replica. Not a target of issue 14: printed so
/// that its growth with the state shows (it reads every unit).
fn session_open_cost(r: &Replica, rounds: usize) -> Samples {
    let mut s = Samples::default();
    for i in 0..rounds {
        let one: std::collections::BTreeSet<String> = [format!("{i}")].into();
        let t = Instant::now();
        let got = agents::assignments(r, &one);
        s.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(got);
    }
    s
}

fn create_cost(r: &mut Replica, rounds: usize, next_id: &mut u64) -> Res<Samples> {
    let mut s = Samples::default();
    for _ in 0..rounds {
        *next_id += 1;
        let id = request_id(*next_id);
        let t = Instant::now();
        apply(r, id, &Command::AddMachine { n: 1 })?;
        s.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(s)
}

/// Writes in the restart measurement, whatever the number of restarts
/// (so that 10 and 1,000 restarts have the same write history, and the
/// request records it leaves, bounded by `MAX_REQUEST_RECORDS_BYTES`, are
/// the same), spread over [`RESTART_KEYS`] config keys of one application.
const RESTART_WRITES: u64 = 20_000;
const RESTART_KEYS: u64 = 100;

/// A manager restarted `restarts` times (the replica rebuilt from its
/// snapshot under a new actor, then, with `adopt`, writing on as the
/// disk's recorded writer as `jujud peer` does since issue 14; without it,
/// as the new actor, as before), [`RESTART_WRITES`] config writes in all,
/// spread evenly: (snapshot bytes per key, digest bytes, bytes per
/// operation of a push of one write).
fn after_restarts(restarts: u64, adopt: bool) -> Res<(f64, usize, f64)> {
    let mut next_id = 1_000_000;
    let node = 7 << 48;
    let mut r = Replica::new(Actor { node, generation: 1 });
    let deploy = Command::Deploy { name: "app".into(), command: "true".into(), n: 1 };
    apply(&mut r, request_id(next_id), &deploy)?;
    let mut push = Vec::new();
    for generation in 1..=restarts {
        let recorded = adopt.then_some(r.actor().generation);
        r = Replica::from_snapshot(Actor { node, generation }, r.snapshot_all());
        if !r.write_as(writer_after_start(node, generation, recorded, true)) {
            return Err("the writer's own operations have a gap".into());
        }
        let per_restart = RESTART_WRITES / restarts;
        for w in 0..per_restart {
            next_id += 1;
            let key = format!("k{}", (generation * per_restart + w) % RESTART_KEYS);
            let cmd = Command::SetConfig { app: "app".into(), pairs: vec![(key, w.to_string())] };
            let (mut changes, outcome) =
                model::plan(&r, request_id(next_id), &cmd).map_err(|e| e.to_string())?;
            changes.push(Change::Record { id: request_id(next_id), ids: outcome.ids });
            push = r.write(&changes);
            let seq = r.own_seq();
            r.mark_durable(seq);
        }
    }
    let snap = bincode::serde::encode_to_vec(r.snapshot(), bincode::config::standard())
        .map_err(|e| e.to_string())?;
    let digest = encode_msg(&StateMsg::Digest(r.version())).len();
    let push_bytes = encode_msg(&StateMsg::Push(push.clone())).len() as f64 / push.len() as f64;
    Ok((snap.len() as f64 / r.len() as f64, digest, push_bytes))
}

/// Rounds of the create-cost measurement at each size.
const CREATE_ROUNDS: usize = 2_000;
/// Session opens timed at each size (each reads every unit at 100,000).
const SESSION_OPEN_ROUNDS: usize = 20;

pub fn memory(a: &Args, report: &mut Report) -> Res<()> {
    let me = Actor { node: 0x1111_2222_3333_4444, generation: 1 };
    let mut next_id = 0;

    let mut small = Replica::new(me);
    let n_small = build(&mut small, 1_000, &mut next_id)?;
    let small_cost = create_cost(&mut small, CREATE_ROUNDS, &mut next_id)?;
    let small_open = session_open_cost(&small, SESSION_OPEN_ROUNDS);
    drop(small);

    let before = live();
    let t0 = Instant::now();
    let mut r = Replica::new(me);
    let entities = build(&mut r, a.entities, &mut next_id)?;
    let built_s = t0.elapsed().as_secs_f64();
    let held = live().saturating_sub(before);
    report.note(format!(
        "memory: {entities} entities ({} keys) built in one replica in {built_s:.1} s",
        r.len()
    ));
    report.row(
        &format!("heap held by one replica, {entities} entities"),
        "reported",
        format!("{:.1} MiB ({:.0} bytes per entity)", mib(held), held as f64 / entities as f64),
        None,
    );
    let at = live();
    let t1 = Instant::now();
    drop(r.snapshot_all_compacting());
    let compact_ms = t1.elapsed().as_secs_f64() * 1e3;
    let after = live();
    report.note(format!(
        "memory: compacting the document's index took {compact_ms:.1} ms; heap held {:.1} -> {:.1} MiB",
        mib(at.saturating_sub(before)),
        mib(after.saturating_sub(before))
    ));
    let mut parts = Vec::new();
    for name in Replica::PARTS {
        let at = live();
        let copy = r.clone_part(name).ok_or("unknown part")?;
        parts.push(format!("{name} {:.1} MiB", mib(live().saturating_sub(at))));
        drop(copy);
    }
    report.note(format!(
        "memory: parts at {entities} entities (a clone of each): {}",
        parts.join(", ")
    ));
    let snap = bincode::serde::encode_to_vec(r.snapshot(), bincode::config::standard())
        .map_err(|e| e.to_string())?;
    report.note(format!(
        "memory: snapshot encoded {:.1} MiB ({:.0} bytes per entity)",
        mib(snap.len()),
        snap.len() as f64 / entities as f64
    ));
    drop(snap);

    let big_cost = create_cost(&mut r, CREATE_ROUNDS, &mut next_id)?;
    let big_open = session_open_cost(&r, SESSION_OPEN_ROUNDS);
    drop(r);
    for adopt in [false, true] {
        let how = if adopt {
            "writing on as its recorded actor"
        } else {
            "a new actor each start (before)"
        };
        let ten = after_restarts(10, adopt)?;
        let thousand = after_restarts(1_000, adopt)?;
        for (restarts, (per_key, digest, per_op)) in [(10, ten), (1_000, thousand)] {
            report.row(
                &format!("after {restarts} restarts of one manager, {how}"),
                "1,000 within 10% of 10",
                format!(
                    "snapshot {per_key:.0} bytes per key; digest message {digest} bytes; push of one write {per_op:.0} bytes per op"
                ),
                (adopt && restarts == 1_000).then_some(
                    per_key <= ten.0 * 1.1 && digest as f64 <= ten.1 as f64 * 1.1 && per_op <= ten.2 * 1.1,
                ),
            );
        }
    }
    for (n, cost) in [(n_small, &small_open), (entities, &big_open)] {
        report.row(
            &format!("an agent's session open, assignment pass, {n} entities present"),
            "reported",
            cost.summary("us"),
            None,
        );
    }
    let ratio = big_cost.median() / small_cost.median();
    report.row(
        &format!("create 1 entity (AddMachine), {n_small} entities present"),
        "reported",
        small_cost.summary("us"),
        None,
    );
    report.row(
        &format!("create 1 entity (AddMachine), {entities} entities present"),
        "<= 2x the small one (median)",
        format!("{} ; ratio of medians {ratio:.2}", big_cost.summary("us")),
        Some(ratio <= 2.0),
    );
    Ok(())
}
