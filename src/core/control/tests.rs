//! Tests of the singleton workers against a replica, with the provider
//! played by the test: ownership, starts without duplicates, healing only
//! with a majority and only after the stop, retirement, and cleaning.

use std::net::SocketAddr;
use std::time::Duration;

use super::provider::{ProviderCmd, ProviderResult};
use super::*;
use crate::core::identity::Role;
use crate::core::state::controllers::{self, Bootstrap};
use crate::core::state::model::{self, Command};
use crate::core::state::{Actor, Replica};

const SEC: Duration = Duration::from_secs(1);

/// Request ids for the test's commands (any distinct values do).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn ident(n: u64) -> Identity {
    Identity {
        id: NodeId(n << 48 | n),
        addr: SocketAddr::from(([127, 0, 0, n as u8], 17070)),
        role: Role::Manager,
        generation: 1,
    }
}

fn replica_with_bootstrap(me: &Identity, desired: u32) -> Replica {
    let mut r = Replica::new(Actor { node: me.id.0, generation: 1 });
    let b = Bootstrap {
        provider: "local".into(),
        root: "/tmp/x".into(),
        desired,
        instance: "controller-0".into(),
        node: me.id.to_string(),
        hosts: Vec::new(),
        instance_at: None,
    };
    apply(&mut r, &Command::Bootstrap(Box::new(b)));
    r
}

fn apply(r: &mut Replica, cmd: &Command) -> model::Outcome {
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (changes, o) = model::plan(r, id, cmd).expect("accepted");
    r.write(&changes);
    o
}

/// Every live manager in contact, as when nothing is cut.
fn in_contact(live: &[Identity]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = live.iter().map(|m| m.id).collect();
    ids.sort();
    ids
}

/// Runs one step of `c` as seen with `live`, of which `contact` was heard
/// from lately, applying its state changes (as the node does: each step's
/// changes are written before the next).
fn step(
    c: &mut Controller,
    r: &mut Replica,
    live: &[Identity],
    contact: &[NodeId],
    now: Duration,
    f: impl FnOnce(&mut Controller, &View<'_>, &mut ControlOut),
) -> ControlOut {
    let facts = controllers::machines(r);
    let view = View {
        now,
        replica: r,
        facts: &facts,
        live,
        contact,
        who: "me@1".into(),
        provider: controllers::provider(r),
    };
    let mut out = ControlOut::default();
    f(c, &view, &mut out);
    let changes = std::mem::take(&mut out.changes);
    r.write(&changes);
    out
}

/// Ownership follows membership, then the periodic tick runs.
fn tick(c: &mut Controller, r: &mut Replica, live: &[Identity], now: Duration) -> ControlOut {
    tick_in_contact(c, r, live, &in_contact(live), now)
}

/// [`tick`] with only `contact` heard from lately.
fn tick_in_contact(
    c: &mut Controller,
    r: &mut Replica,
    live: &[Identity],
    contact: &[NodeId],
    now: Duration,
) -> ControlOut {
    let mut first = step(c, r, live, contact, now, |c, v, o| c.on_membership(v, o));
    let second = step(c, r, live, contact, now, |c, v, o| c.tick(v, o));
    first.provider.extend(second.provider);
    first.notices.extend(second.notices);
    first.events.extend(second.events);
    first
}

/// Ticks until the cleaner has had its turn (it runs every few ticks).
fn clean(c: &mut Controller, r: &mut Replica, live: &[Identity], at: Duration) -> Vec<ControlOut> {
    (0..CLEAN_EVERY_TICKS).map(|i| tick(c, r, live, at + Duration::from_millis(i))).collect()
}

fn answer(
    c: &mut Controller,
    r: &mut Replica,
    live: &[Identity],
    now: Duration,
    result: ProviderResult,
) -> ControlOut {
    let facts = controllers::machines(r);
    let contact = in_contact(live);
    let view = View {
        now,
        replica: r,
        facts: &facts,
        live,
        contact: &contact,
        who: "me@1".into(),
        provider: controllers::provider(r),
    };
    let mut out = ControlOut::default();
    c.on_provider(&view, &result, &mut out);
    let changes = std::mem::take(&mut out.changes);
    r.write(&changes);
    out
}

fn starts(out: &ControlOut) -> Vec<(u64, String, String, bool)> {
    out.provider
        .iter()
        .filter_map(|p| match p {
            ProviderCmd::Start { req, instance, machine, manager, .. } => {
                Some((*req, instance.clone(), machine.clone(), *manager))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn every_singleton_has_one_owner_and_a_non_owners_loss_moves_nothing() {
    let ids: Vec<NodeId> = (1..=5).map(|n| ident(n).id).collect();
    let all = owners(&ids);
    assert_eq!(all.len(), 3);
    let spare =
        *ids.iter().find(|i| !all.values().any(|o| o == *i)).expect("5 managers, 3 singletons");
    let rest: Vec<NodeId> = ids.iter().copied().filter(|i| *i != spare).collect();
    assert_eq!(owners(&rest), all, "losing a manager that owns nothing moves nothing");
}

/// The one manager that owns everything: a single live manager.
fn solo() -> (Identity, Controller, Replica) {
    let me = ident(1);
    let r = replica_with_bootstrap(&me, 1);
    (me.clone(), Controller::new(me.id, None), r)
}

#[test]
fn the_provisioner_asks_once_per_machine_and_records_the_owner() {
    let (me, mut c, mut r) = solo();
    let live = [me.clone()];
    let o = apply(&mut r, &Command::AddMachine { n: 2 });
    let out = tick(&mut c, &mut r, &live, SEC);
    let asked = starts(&out);
    assert_eq!(asked.len(), 2, "{:?}", out.provider);
    assert!(asked.iter().all(|(_, inst, m, mgr)| inst == &provider::instance_name(m, 1) && !mgr));
    assert!(
        out.events
            .contains(&ControlEvent::Ownership { singleton: Singleton::Provisioner, owned: true })
    );
    let again = tick(&mut c, &mut r, &live, 2 * SEC);
    assert!(starts(&again).is_empty(), "no second start while the first is in flight");
    let (req, inst, m, _) = asked[0].clone();
    answer(
        &mut c,
        &mut r,
        &live,
        3 * SEC,
        ProviderResult::Started {
            req,
            instance: inst.clone(),
            machine: m.clone(),
            address: "127.0.1.1".into(),
            existed: true,
        },
    );
    assert_eq!(r.get(&format!("m/{m}/instance")), vec![inst]);
    assert_eq!(r.get(&format!("m/{m}/instance-by")), vec!["me@1".to_string()]);
    assert_eq!(c.stats.duplicates_refused, 1);
    let (req, inst, m2, _) = asked[1].clone();
    answer(
        &mut c,
        &mut r,
        &live,
        3 * SEC,
        ProviderResult::Failed {
            req,
            instance: inst,
            machine: m2.clone(),
            error: "no room".into(),
        },
    );
    assert!(starts(&tick(&mut c, &mut r, &live, 3 * SEC)).is_empty(), "failed starts back off");
    assert_eq!(starts(&tick(&mut c, &mut r, &live, 5 * SEC)).len(), 1, "and are retried");
    assert!(o.machines.contains(&m2));
}

#[test]
fn growing_to_the_desired_count_adds_controllers_and_starts_them_as_managers() {
    let (me, mut c, mut r) = solo();
    apply(&mut r, &Command::EnableHa { n: 3 });
    let live = [me.clone()];
    let out = tick(&mut c, &mut r, &live, SEC);
    assert_eq!(c.stats.managers_added, 2);
    let out2 = tick(&mut c, &mut r, &live, 2 * SEC);
    let asked: Vec<_> = starts(&out).into_iter().chain(starts(&out2)).collect();
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|s| s.3), "controller machines start as managers");
    assert_eq!(controllers::live_controllers(&r), 3);
    assert_eq!(
        tick(&mut c, &mut r, &live, 3 * SEC).provider.len(),
        0,
        "no more adds at the desired count"
    );
}

/// Three controllers (the bootstrap one plus two joined), each claimed.
fn trio() -> (Vec<Identity>, Controller, Replica, Vec<String>) {
    let ms: Vec<Identity> = (1..=3).map(ident).collect();
    let mut r = replica_with_bootstrap(&ms[0], 3);
    let (changes, ids) = controllers::new_controllers(&r, 77, 2);
    r.write(&changes);
    for (i, id) in ids.iter().enumerate() {
        r.write(&[
            controllers::set_machine(id, "instance", format!("inst-{i}")),
            controllers::set_machine(id, "agent", ms[i + 1].id.to_string()),
        ]);
    }
    let keeper = owners(&ms.iter().map(|m| m.id).collect::<Vec<_>>())[&Singleton::HaKeeper];
    (ms, Controller::new(keeper, None), r, ids)
}

#[test]
fn a_down_manager_is_stopped_revoked_then_replaced_only_with_a_majority() {
    let (ms, mut c, mut r, ids) = trio();
    let keeper = ms.iter().find(|m| c.me == m.id).unwrap().clone();
    let victim_idx = (1..3).find(|i| ms[*i].id != keeper.id).unwrap();
    let victim = ids[victim_idx - 1].clone();
    let live: Vec<Identity> = ms.iter().filter(|m| m.id != ms[victim_idx].id).cloned().collect();
    tick(&mut c, &mut r, &live, SEC);
    let early = tick(&mut c, &mut r, &live, 5 * SEC);
    assert!(early.provider.is_empty(), "not before the grace period");
    let heal = tick(&mut c, &mut r, &live, 12 * SEC);
    let stop = heal.provider.iter().find_map(|p| match p {
        ProviderCmd::Stop { req, instance, machine, graceful: false, .. } if *machine == victim => {
            Some((*req, instance.clone()))
        }
        _ => None,
    });
    let (req, instance) = stop.expect("a hard stop of the victim's instance");
    assert!(heal.notices.contains(&Notice::MemberRevoked { id: ms[victim_idx].id }));
    assert_eq!(controllers::live_controllers(&r), 3, "no replacement before the stop is confirmed");
    assert!(starts(&tick(&mut c, &mut r, &live, 13 * SEC)).is_empty());
    answer(
        &mut c,
        &mut r,
        &live,
        14 * SEC,
        ProviderResult::Stopped { req, instance, machine: victim.clone(), fenced: false },
    );
    assert_eq!(r.get(&format!("m/{victim}/life")), vec!["dead"]);
    tick(&mut c, &mut r, &live, 15 * SEC);
    assert_eq!(controllers::live_controllers(&r), 3, "a replacement was added");
    assert_eq!(c.stats.managers_added, 1);
}

#[test]
fn a_minority_side_neither_heals_nor_adds() {
    let (ms, _, mut r, _) = trio();
    let alone = ms[0].clone();
    let mut c = Controller::new(alone.id, None);
    let live = [alone];
    for s in 1..=60 {
        let out = tick(&mut c, &mut r, &live, s * SEC);
        assert!(out.provider.is_empty() && out.notices.is_empty(), "at {s}s: {:?}", out.provider);
    }
    assert_eq!(controllers::live_controllers(&r), 3);
    assert!(c.stats.minority_holds > 0);
}

#[test]
fn a_minority_side_provisions_nothing_until_it_sees_a_majority() {
    // Found by the simulator (seed 31, `--faults ha`): a minority side's
    // provisioner started an agent with the minority's managers as its only
    // seeds; the majority replaced them, and the agent never joined.
    let (ms, _, mut r, _) = trio();
    let alone = ms[0].clone();
    let mut c = Controller::new(alone.id, None);
    let o = apply(&mut r, &Command::AddMachine { n: 1 });
    for s in 1..=5 {
        let out = tick(&mut c, &mut r, std::slice::from_ref(&alone), s * SEC);
        assert!(starts(&out).is_empty(), "at {s}s, alone of 3: {:?}", out.provider);
    }
    let owner = owners(&ms.iter().map(|m| m.id).collect::<Vec<_>>())[&Singleton::Provisioner];
    let mut c = Controller::new(owner, None);
    let asked = starts(&tick(&mut c, &mut r, &ms, 6 * SEC));
    assert_eq!(
        asked.iter().map(|s| s.2.clone()).collect::<Vec<_>>(),
        o.machines,
        "with a majority it starts the machine"
    );
}

#[test]
fn a_stale_view_of_a_majority_without_contact_heals_nobody() {
    // Found by the simulator (seed 647312149, 7 managers): a manager cut
    // off from everyone still saw most of them alive (SWIM had yet to
    // declare them down), healed one of the majority side's managers, and
    // the majority was left one short of ever healing again.
    let (ms, mut c, mut r, ids) = trio();
    let keeper = ms.iter().find(|m| c.me == m.id).unwrap().clone();
    let victim_idx = (1..3).find(|i| ms[*i].id != keeper.id).unwrap();
    let live: Vec<Identity> = ms.iter().filter(|m| m.id != ms[victim_idx].id).cloned().collect();
    let alone = [keeper.id];
    for s in 1..=30 {
        let out = tick_in_contact(&mut c, &mut r, &live, &alone, s * SEC);
        assert!(
            out.provider.is_empty() && out.notices.is_empty(),
            "at {s}s, in contact with itself only: {:?}",
            out.provider
        );
    }
    assert_eq!(controllers::live_controllers(&r), 3);
    // Contact comes back: a heal waits a full grace period of it.
    let victim = &ids[victim_idx - 1];
    let healed_at = (31u32..=60).find(|s| {
        tick(&mut c, &mut r, &live, *s * SEC)
            .provider
            .iter()
            .any(|p| matches!(p, ProviderCmd::Stop { machine, .. } if machine == victim))
    });
    let grace_secs = controllers::ha_grace(&r).as_secs();
    assert!(
        healed_at.is_some_and(|s| u64::from(s) >= 31 + grace_secs),
        "healed at {healed_at:?}, grace {grace_secs}s"
    );
}

#[test]
fn a_new_keeper_owner_heals_after_one_grace_not_two() {
    // The owner itself dies: the next owner has tracked its majority all
    // along, so only the victim's down time counts.
    let (ms, old, mut r, _) = trio();
    let victim = ms.iter().find(|m| m.id == old.me).unwrap().clone();
    let rest: Vec<Identity> = ms.iter().filter(|m| m.id != victim.id).cloned().collect();
    let next = owners(&rest.iter().map(|m| m.id).collect::<Vec<_>>())[&Singleton::HaKeeper];
    let mut c = Controller::new(next, None);
    for s in 1..=20 {
        tick(&mut c, &mut r, &ms, s * SEC);
    }
    assert!(!c.owned().contains(&Singleton::HaKeeper));
    let grace_secs = controllers::ha_grace(&r).as_secs() as u32;
    let healed_at = (21u32..=60).find(|s| {
        tick(&mut c, &mut r, &rest, *s * SEC)
            .notices
            .contains(&Notice::MemberRevoked { id: victim.id })
    });
    assert_eq!(healed_at, Some(21 + grace_secs), "down at 21 s, healed one grace later");
}

#[test]
fn surplus_controllers_are_retired_down_ones_first() {
    let (ms, mut c, mut r, ids) = trio();
    apply(&mut r, &Command::EnableHa { n: 2 });
    let down = ids
        .iter()
        .zip(&ms[1..])
        .find(|(_, m)| m.id != c.me)
        .map(|(id, m)| (id.clone(), m.id))
        .unwrap();
    let live: Vec<Identity> = ms.iter().filter(|m| m.id != down.1).cloned().collect();
    tick(&mut c, &mut r, &live, SEC);
    assert_eq!(r.get(&format!("m/{}/life", down.0)), vec!["dead"], "the down one goes first");
    assert_eq!(controllers::live_controllers(&r), 2);
    assert_eq!(c.stats.managers_retired, 1);
}

#[test]
fn removed_machines_are_stopped_gracefully_and_keep_their_tombstone() {
    let (me, mut c, mut r) = solo();
    let live = [me.clone()];
    let o = apply(&mut r, &Command::AddMachine { n: 1 });
    let m = o.machines[0].clone();
    r.write(&[controllers::set_machine(&m, "instance", "i-1")]);
    apply(&mut r, &Command::RemoveMachine { id: m.clone() });
    let outs = clean(&mut c, &mut r, &live, SEC);
    let stops: Vec<u64> = outs
        .iter()
        .flat_map(|o| &o.provider)
        .filter_map(|p| match p {
            ProviderCmd::Stop { req, graceful: true, machine, .. } if *machine == m => Some(*req),
            _ => None,
        })
        .collect();
    assert_eq!(stops.len(), 1, "one graceful stop, not one per round");
    answer(
        &mut c,
        &mut r,
        &live,
        2 * SEC,
        ProviderResult::Stopped {
            req: stops[0],
            instance: "i-1".into(),
            machine: m.clone(),
            fenced: false,
        },
    );
    assert_eq!(r.get(&format!("m/{m}/instance-state")), vec!["stopped"]);
    let later = clean(&mut c, &mut r, &live, 40 * SEC);
    assert!(later.iter().all(|o| o.provider.is_empty()), "a stopped instance is not stopped again");
    assert_eq!(
        r.get(&format!("m/{m}/life")),
        vec!["dead"],
        "the tombstone stays, so the id is never reused"
    );
    assert_ne!(apply(&mut r, &Command::AddMachine { n: 1 }).machines[0], m);
}

#[test]
fn a_manager_claims_its_machine_and_leaves_when_it_is_removed() {
    let (ms, _, mut r, ids) = trio();
    r.write(&[controllers::set_machine(&ids[0], "agent", "")]);
    r.write(&[crate::core::state::Change::Remove { key: format!("m/{}/agent", ids[0]) }]);
    let mut c = Controller::new(ms[1].id, Some(ids[0].clone()));
    tick(&mut c, &mut r, &ms, SEC);
    assert_eq!(r.get(&format!("m/{}/agent", ids[0])), vec![ms[1].id.to_string()]);
    apply(&mut r, &Command::RemoveMachine { id: ids[0].clone() });
    assert_eq!(controllers::ha_desired(&r), 2, "removing a controller lowers the desired count");
    let out = tick(&mut c, &mut r, &ms, 2 * SEC);
    assert!(out.events.contains(&ControlEvent::Retired));
}

#[test]
fn a_manager_claimed_for_at_its_join_says_its_machine_is_started_and_where() {
    // trio(): the join recorded each added manager as its machine's node
    // (agent set) while the machine still shows the `pending` it was added
    // with; `juju status` showed it pending with no address.
    let (ms, _, mut r, ids) = trio();
    assert_eq!(r.get(&format!("m/{}/status", ids[0])), vec!["pending"]);
    let mut c = Controller::new(ms[1].id, Some(ids[0].clone()));
    tick(&mut c, &mut r, &ms, SEC);
    assert_eq!(r.get(&format!("m/{}/status", ids[0])), vec!["started"]);
    assert_eq!(r.get(&format!("m/{}/addresses", ids[0])), vec!["127.0.0.2"]);
    assert_eq!(r.get(&format!("m/{}/agent", ids[0])), vec![ms[1].id.to_string()]);
    let again = tick(&mut c, &mut r, &ms, 2 * SEC);
    let mine = format!("m/{}/", ids[0]);
    let rewritten = again.changes.iter().filter(
        |ch| matches!(ch, crate::core::state::Change::Set { key, .. } if key.starts_with(&mine)),
    );
    assert_eq!(rewritten.count(), 0, "nothing is written again once it holds");
    // A status someone else set (e.g. fenced) is not overwritten.
    r.write(&[controllers::set_machine(
        &ids[0],
        "status",
        "fenced: its host could not be reached",
    )]);
    tick(&mut c, &mut r, &ms, 3 * SEC);
    assert_eq!(r.get(&format!("m/{}/status", ids[0]))[0], "fenced: its host could not be reached");
}

#[test]
fn the_last_controller_cannot_be_removed_and_enable_ha_is_bounded() {
    let (_, _, mut r) = solo();
    let first = controllers::machines(&r)[0].id.clone();
    assert!(model::plan(&r, 9_999, &Command::RemoveMachine { id: first }).is_err());
    assert!(model::plan(&r, 9_999, &Command::EnableHa { n: 0 }).is_err());
    assert!(model::plan(&r, 9_999, &Command::EnableHa { n: 8 }).is_err());
    apply(&mut r, &Command::EnableHa { n: 5 });
    assert_eq!(controllers::ha_desired(&r), 5);
}

#[test]
fn a_heals_replacement_is_added_and_started_as_soon_as_the_stop_is_confirmed() {
    // Managers among which, once one is down, a single survivor runs both
    // the HA keeper and the provisioner.
    let (ms, victim_idx) = (1..=20u64)
        .flat_map(|b| (1..3).map(move |v| (b, v)))
        .map(|(b, v)| ((b..b + 3).map(ident).collect::<Vec<_>>(), v))
        .find(|(ms, v)| {
            let live: Vec<NodeId> =
                ms.iter().enumerate().filter(|(i, _)| i != v).map(|(_, m)| m.id).collect();
            let o = owners(&live);
            o[&Singleton::HaKeeper] == o[&Singleton::Provisioner]
        })
        .expect("some ids put both on one survivor");
    let mut r = replica_with_bootstrap(&ms[0], 3);
    let (changes, ids) = controllers::new_controllers(&r, 78, 2);
    r.write(&changes);
    for (i, id) in ids.iter().enumerate() {
        r.write(&[
            controllers::set_machine(id, "instance", format!("inst-{i}")),
            controllers::set_machine(id, "agent", ms[i + 1].id.to_string()),
        ]);
    }
    let live: Vec<Identity> =
        ms.iter().enumerate().filter(|(i, _)| *i != victim_idx).map(|(_, m)| m.clone()).collect();
    let mut c = Controller::new(
        owners(&live.iter().map(|m| m.id).collect::<Vec<_>>())[&Singleton::HaKeeper],
        None,
    );
    tick(&mut c, &mut r, &live, SEC);
    let heal = tick(&mut c, &mut r, &live, 12 * SEC);
    let (req, instance) = heal
        .provider
        .iter()
        .find_map(|p| match p {
            ProviderCmd::Stop { req, instance, graceful: false, .. } => {
                Some((*req, instance.clone()))
            }
            _ => None,
        })
        .expect("a hard stop");
    let victim = ids[victim_idx - 1].clone();
    let done = answer(
        &mut c,
        &mut r,
        &live,
        12 * SEC,
        ProviderResult::Stopped { req, instance, machine: victim, fenced: false },
    );
    assert_eq!(controllers::live_controllers(&r), 3, "the replacement is added at once");
    let asked = starts(&done);
    assert_eq!(asked.len(), 1, "and started in the same step: {:?}", done.provider);
    assert!(asked[0].3, "as a manager");
    assert!(starts(&tick(&mut c, &mut r, &live, 13 * SEC)).is_empty(), "once");
    assert_eq!(c.stats.managers_added, 1);
}

#[test]
fn a_manager_back_under_a_new_identity_reclaims_its_machine_and_is_not_healed() {
    // Found by the simulator (seeds 8 and 61196, desired 2): a manager
    // lost its disk and came back under a new id on the same instance; the
    // keeper counted it toward the majority, healed its machine (whose
    // recorded node was the old id) and so killed it, and then, one of two,
    // could never add the replacement.
    let ms: Vec<Identity> = (1..=2).map(ident).collect();
    let mut r = replica_with_bootstrap(&ms[0], 2);
    let (changes, ids) = controllers::new_controllers(&r, 79, 1);
    r.write(&changes);
    r.write(&[
        controllers::set_machine(&ids[0], "instance", "inst-0"),
        controllers::set_machine(&ids[0], "agent", ms[1].id.to_string()),
    ]);
    let reborn = ident(9);
    let live = vec![ms[0].clone(), reborn.clone()];
    let mut keeper = Controller::new(ms[0].id, None);
    for s in 1..=20 {
        let out = tick(&mut keeper, &mut r, &live, s * SEC);
        assert!(
            out.provider.is_empty() && out.notices.is_empty(),
            "at {s}s the unbound newcomer is no majority: {:?}",
            out.provider
        );
    }
    // The newcomer claims its machine at its first tick: it is up again.
    let mut back = Controller::new(reborn.id, Some(ids[0].clone()));
    tick(&mut back, &mut r, &live, 21 * SEC);
    assert!(r.get(&format!("m/{}/agent", ids[0])).contains(&reborn.id.to_string()));
    let out = tick(&mut keeper, &mut r, &live, 40 * SEC);
    assert!(
        out.provider.is_empty(),
        "a machine whose process is back is not healed: {:?}",
        out.provider
    );
    assert_eq!(keeper.stats.managers_healed, 0);
}

// ---- A provider over a pool of hosts (ssh): placement, fencing, the pool.

/// Turns `r`'s provider into a pool of hosts holding `hosts`.
fn on_pool(r: &mut Replica, hosts: &[&str]) {
    r.write(&[crate::core::state::Change::Set {
        key: format!("c/{}", controllers::PROVIDER_KEY),
        value: "ssh".into(),
    }]);
    for h in hosts {
        apply(
            r,
            &Command::AddHost { address: h.to_string(), entry: format!("{{\"address\":\"{h}\"}}") },
        );
    }
}

fn stops(outs: &[ControlOut]) -> Vec<(u64, String, bool, bool, Option<String>)> {
    outs.iter()
        .flat_map(|o| &o.provider)
        .filter_map(|p| match p {
            ProviderCmd::Stop { req, machine, graceful, fence, at, .. } => {
                Some((*req, machine.clone(), *graceful, *fence, at.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_manager_on_an_unreachable_host_is_fenced_replaced_then_stopped_when_its_host_answers() {
    let (ms, mut c, mut r, ids) = trio();
    on_pool(&mut r, &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    let keeper = ms.iter().find(|m| c.me == m.id).unwrap().clone();
    let victim_idx = (1..3).find(|i| ms[*i].id != keeper.id).unwrap();
    let victim = ids[victim_idx - 1].clone();
    r.write(&[controllers::set_machine(&victim, "instance-at", "10.0.0.2:17070")]);
    let live: Vec<Identity> = ms.iter().filter(|m| m.id != ms[victim_idx].id).cloned().collect();
    tick(&mut c, &mut r, &live, SEC);
    let heal = tick(&mut c, &mut r, &live, 12 * SEC);
    let (req, _, graceful, fence, at) = stops(std::slice::from_ref(&heal))
        .into_iter()
        .find(|s| s.1 == victim)
        .expect("the keeper's stop");
    assert!(!graceful && fence, "the keeper's stop is hard and fences");
    assert_eq!(at.as_deref(), Some("10.0.0.2:17070"), "it says where the instance runs");
    answer(
        &mut c,
        &mut r,
        &live,
        13 * SEC,
        ProviderResult::Stopped {
            req,
            instance: "inst".into(),
            machine: victim.clone(),
            fenced: true,
        },
    );
    assert_eq!(
        r.get(&format!("m/{victim}/life")),
        vec!["dead"],
        "fenced counts as stopped for the heal"
    );
    assert_eq!(r.get(&format!("m/{victim}/instance-state")), vec!["fenced"]);
    assert_eq!(c.stats.instances_fenced, 1);
    tick(&mut c, &mut r, &live, 14 * SEC);
    assert_eq!(controllers::live_controllers(&r), 3, "a replacement was added");
    assert!(
        controllers::check_remove_host(&r, "10.0.0.2").is_err(),
        "a fenced instance may still run there"
    );
    // The cleaner stops it at once (not gracefully: it is revoked), never
    // fencing, and again after a failure, until the host answers.
    let first = stops(&clean(&mut c, &mut r, &live, 20 * SEC));
    let (req, _, graceful, fence, _) = first
        .iter()
        .find(|s| s.1 == victim)
        .cloned()
        .expect("the cleaner stops the fenced instance");
    assert!(!graceful && !fence);
    answer(
        &mut c,
        &mut r,
        &live,
        21 * SEC,
        ProviderResult::Failed {
            req,
            instance: "inst".into(),
            machine: victim.clone(),
            error: "host 10.0.0.2 unreachable".into(),
        },
    );
    let again = stops(&clean(&mut c, &mut r, &live, 30 * SEC));
    let (req, ..) = again.iter().find(|s| s.1 == victim).cloned().expect("retried");
    answer(
        &mut c,
        &mut r,
        &live,
        31 * SEC,
        ProviderResult::Stopped {
            req,
            instance: "inst".into(),
            machine: victim.clone(),
            fenced: false,
        },
    );
    assert_eq!(r.get(&format!("m/{victim}/instance-state")), vec!["stopped"]);
    assert!(
        stops(&clean(&mut c, &mut r, &live, 40 * SEC)).iter().all(|s| s.1 != victim),
        "stopped once for good"
    );
    assert!(controllers::check_remove_host(&r, "10.0.0.2").is_ok(), "the host is free now");
}

#[test]
fn an_enlisted_machine_starts_on_its_host_which_cannot_be_removed_or_enlisted_twice() {
    let (me, mut c, mut r) = solo();
    on_pool(&mut r, &["10.0.0.7"]);
    let live = [me.clone()];
    let unknown = model::plan(&r, 900, &Command::EnlistMachine { host: "10.0.0.8".into() });
    assert!(matches!(unknown, Err(model::CommandError::Invalid { .. })), "{unknown:?}");
    let m = apply(&mut r, &Command::EnlistMachine { host: "10.0.0.7".into() }).machines[0].clone();
    assert!(
        model::plan(&r, 901, &Command::EnlistMachine { host: "10.0.0.7".into() }).is_err(),
        "one machine per host"
    );
    let out = tick(&mut c, &mut r, &live, SEC);
    let start = out.provider.iter().find_map(|p| match p {
        ProviderCmd::Start { req, machine, host, instance, manager: false, .. }
            if *machine == m =>
        {
            Some((*req, host.clone(), instance.clone()))
        }
        _ => None,
    });
    let (req, host, instance) = start.expect("the provisioner starts the enlisted machine");
    assert_eq!(host.as_deref(), Some("10.0.0.7"), "on exactly its host");
    answer(
        &mut c,
        &mut r,
        &live,
        2 * SEC,
        ProviderResult::Started {
            req,
            instance,
            machine: m.clone(),
            address: "10.0.0.7:17070".into(),
            existed: false,
        },
    );
    assert_eq!(r.get(&format!("m/{m}/instance-at")), vec!["10.0.0.7:17070"]);
    assert!(controllers::check_remove_host(&r, "10.0.0.7").is_err(), "a host in use stays");
    assert!(
        model::plan(&r, 902, &Command::RemoveHost { address: "10.0.0.9".into() }).is_err(),
        "an unknown host"
    );
}

#[test]
fn a_start_that_found_no_free_host_is_retried_at_once_when_a_host_is_added_and_status_says_why() {
    let (me, mut c, mut r) = solo();
    on_pool(&mut r, &["10.0.0.1"]);
    apply(&mut r, &Command::EnableHa { n: 3 });
    let live = [me.clone()];
    let out = tick(&mut c, &mut r, &live, SEC);
    let out2 = tick(&mut c, &mut r, &live, SEC + Duration::from_millis(1));
    let asked: Vec<_> = starts(&out).into_iter().chain(starts(&out2)).collect();
    assert_eq!(asked.len(), 2);
    for (req, instance, machine, _) in asked {
        let error = "no free host in cloud lab.yaml".to_string();
        answer(
            &mut c,
            &mut r,
            &live,
            2 * SEC,
            ProviderResult::Failed { req, instance, machine, error },
        );
    }
    assert_eq!(controllers::why_short(&r).as_deref(), Some("no free host in cloud lab.yaml"));
    assert!(
        starts(&tick(&mut c, &mut r, &live, 2 * SEC + Duration::from_millis(500))).is_empty(),
        "backing off"
    );
    apply(&mut r, &Command::AddHost { address: "10.0.0.2".into(), entry: "{}".into() });
    let retried = starts(&tick(&mut c, &mut r, &live, 2 * SEC + Duration::from_millis(600)));
    assert_eq!(retried.len(), 2, "a new host ends the backoff");
}

#[test]
fn host_entries_are_bounded_and_removed_hosts_leave_the_pool() {
    let (_, _, mut r) = solo();
    on_pool(&mut r, &["10.0.0.1", "10.0.0.2"]);
    assert_eq!(controllers::provider(&r).map(|p| p.hosts.len()), Some(2));
    let big = "x".repeat(controllers::MAX_HOST_ENTRY_BYTES + 1);
    assert!(
        model::plan(&r, 903, &Command::AddHost { address: "10.0.0.3".into(), entry: big }).is_err()
    );
    assert!(
        model::plan(&r, 904, &Command::AddHost { address: "a/b".into(), entry: "{}".into() })
            .is_err(),
        "no '/' in a key"
    );
    apply(&mut r, &Command::RemoveHost { address: "10.0.0.1".into() });
    let spec = controllers::provider(&r).expect("configured");
    assert_eq!(spec.hosts, vec!["{\"address\":\"10.0.0.2\"}".to_string()]);
    assert!(
        !format!("{spec:?}").contains("address"),
        "Debug never shows an entry (they hold keys)"
    );
    assert_eq!(controllers::host_of("10.0.0.2:17070"), "10.0.0.2");
    assert_eq!(controllers::host_of("[::1]:17070"), "::1");
}
