//! The HA keeper: keeps the number of controller machines at the desired
//! count. It adds controller machines when there are too few (the
//! provisioner then starts them), heals a manager that has been down longer
//! than the grace period (stop its instance at once through the provider,
//! revoke its node, then mark its machine dead so a replacement is added),
//! and retires surplus controllers deterministically.
//!
//! Owns the down-since clock of each controller, as this owner saw it.
//! Must never heal on a side that is not in contact with a majority of the
//! desired managers, nor add managers there while a controller is out of sight,
//! and never start a replacement before the instance it replaces was
//! stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use super::provider::ProviderCmd;
use super::{ControlOut, Controller, Singleton, View};
use crate::core::identity::NodeId;
use crate::core::notices::Notice;
use crate::core::state::controllers::{self, MachineFacts};
use crate::core::time::Time;

/// A controller that was started but whose manager never joined is
/// healed after this long (it may be slow to start).
pub const START_GRACE_MS: u64 = 30_000;

/// The keeper's memory (reset when this node becomes the owner, so a new
/// owner waits a full grace period before it heals anyone).
#[derive(Debug, Default)]
pub struct Keeper {
    down_since: BTreeMap<String, Time>,
    /// Since when this owner has been in contact with a heal majority
    /// without a break: a heal needs one held for a whole grace period (a
    /// view that flaps under a rolling or one-way cut must not kill
    /// anyone). It starts with the down-since clocks, so a new owner with
    /// contact heals after one grace, not two (every manager probes, so it
    /// has contact at once).
    majority_since: Option<Time>,
    /// Controller machines added in this step, which the replica's facts
    /// do not show yet: the provisioner, if this node owns it, starts them
    /// in the same step instead of a tick later.
    pub added: Vec<String>,
}

fn is_up(view: &View<'_>, f: &MachineFacts) -> bool {
    f.nodes.iter().any(|n| view.is_live(*n))
}

/// Whether the live managers bound to a controller machine (this node
/// counts) and in contact with it (they answered one probe round within
/// the contact window: a view that lags a cut must not count the far side)
/// are a majority of
/// the desired count: what a heal needs. A live
/// manager that has claimed no machine yet does not count: it may be the
/// very process of the machine about to be healed, back under a new
/// identity after losing its disk, and stopping it would leave the side
/// without the majority that adding the replacement needs.
fn heal_majority(c: &Controller, view: &View<'_>, ctrls: &[&MachineFacts], desired: u32) -> bool {
    let bound = |id: NodeId| id == c.me || ctrls.iter().any(|f| f.nodes.contains(&id));
    let bound = view.contact.iter().filter(|id| bound(**id)).count();
    bound as u32 * 2 > desired
}

/// One round: heal, then add or retire.
pub fn run(c: &mut Controller, view: &View<'_>, out: &mut ControlOut) {
    if view.provider.is_none() {
        return;
    }
    let desired = controllers::ha_desired(view.replica);
    let grace = controllers::ha_grace(view.replica);
    let ctrls: Vec<&MachineFacts> = view.facts.iter().filter(|f| f.alive && f.controller).collect();
    c.keeper.down_since.retain(|id, _| ctrls.iter().any(|f| &f.id == id));
    if heal_majority(c, view, &ctrls, desired) {
        c.keeper.majority_since.get_or_insert(view.now);
    } else {
        c.keeper.majority_since = None;
    }
    let steady =
        c.keeper.majority_since.is_some_and(|since| view.now.saturating_sub(since) >= grace);
    // One heal at a time: the next is judged on the view that follows it.
    let mut healing = c.healing();
    for f in &ctrls {
        if is_up(view, f)
            || (f.nodes.is_empty() && f.instance.is_none())
            || c.machine() == Some(f.id.as_str())
        {
            // Up, or not yet provisioned (the provisioner's business), or
            // this node's own machine (it runs: it came back under a new
            // identity and has yet to claim the machine).
            c.keeper.down_since.remove(&f.id);
            continue;
        }
        let since = *c.keeper.down_since.entry(f.id.clone()).or_insert(view.now);
        let limit = if f.nodes.is_empty() {
            grace.max(Duration::from_millis(START_GRACE_MS))
        } else {
            grace
        };
        if view.now.saturating_sub(since) < limit || c.in_flight(&f.id, false) {
            continue;
        }
        if !steady {
            c.stats.minority_holds += 1;
            continue;
        }
        if healing {
            continue;
        }
        heal(c, view, f, out);
        healing = true;
    }
    grow_or_retire(c, view, &ctrls, view.contact_majority(), out);
}

/// Adds controllers up to the desired count, or retires the surplus.
fn grow_or_retire(
    c: &mut Controller,
    view: &View<'_>,
    ctrls: &[&MachineFacts],
    majority: bool,
    out: &mut ControlOut,
) {
    let desired = controllers::ha_desired(view.replica);
    let count = ctrls.len() as u32;
    // Growing to the desired count needs no majority while every controller
    // is in contact (nothing is partitioned away); with one out of contact,
    // it does, so that a minority side never adds managers of its own.
    let all_up = ctrls
        .iter()
        .all(|f| view.in_contact_with(f) || (f.nodes.is_empty() && f.instance.is_none()));
    if count < desired {
        if !majority && !all_up {
            c.stats.minority_holds += 1;
            return;
        }
        // Derived from what was decided on: an owner with the same view
        // (two, for a moment after a failure) creates the very same machines.
        let seen: Vec<&str> =
            view.facts.iter().filter(|f| f.controller).map(|f| f.id.as_str()).collect();
        let id = crate::core::agent::choice::key_of_name(&format!(
            "ha-keeper|{desired}|{}",
            seen.join(",")
        ));
        let (changes, ids) = controllers::new_controllers(view.replica, id, desired - count);
        tracing::info!(machines = ?ids, desired, "adding controller machines");
        c.stats.managers_added += ids.len() as u64;
        out.changes.extend(changes);
        c.keeper.added.extend(ids);
    } else if count > desired {
        retire(c, view, ctrls, (count - desired) as usize, out);
    }
}

/// Stops a down manager's instance at once and revokes its node; its
/// machine is marked dead when the stop is confirmed ([`stopped`]).
fn heal(c: &mut Controller, view: &View<'_>, f: &MachineFacts, out: &mut ControlOut) {
    tracing::warn!(machine = %f.id, nodes = ?f.nodes, "{}", crate::events::MANAGER_REPLACED);
    c.stats.managers_healed += 1;
    for n in &f.nodes {
        out.notices.push(Notice::MemberRevoked { id: *n });
    }
    match (&f.instance, &view.provider) {
        (Some(instance), Some(spec)) if !f.instance_stopped => {
            let req = c.new_req();
            let (at, fence) = (f.instance_at.clone(), true);
            let cmd = ProviderCmd::Stop {
                req,
                provider: spec.clone(),
                instance: instance.clone(),
                machine: f.id.clone(),
                graceful: false,
                at,
                fence,
            };
            c.fly(cmd, Singleton::HaKeeper, view.now, out);
        }
        _ => out.changes.push(controllers::set_machine(&f.id, "life", "dead")),
    }
}

/// The keeper's stop of `machine` is done: its machine is dead now, and
/// (if this node still runs the keeper) its replacement is added at once.
pub fn stopped(c: &mut Controller, view: &View<'_>, machine: &str, out: &mut ControlOut) {
    c.keeper.down_since.remove(machine);
    out.changes.push(controllers::set_machine(machine, "life", "dead"));
    if c.owned().contains(&Singleton::HaKeeper) && view.provider.is_some() {
        let ctrls: Vec<&MachineFacts> =
            view.facts.iter().filter(|f| f.alive && f.controller && f.id != machine).collect();
        grow_or_retire(c, view, &ctrls, view.contact_majority(), out);
    }
}

/// Retires `n` controllers: down ones first, then ones never joined, then
/// the newest ids. Every owner with the same view picks the same ones.
fn retire(
    c: &mut Controller,
    view: &View<'_>,
    ctrls: &[&MachineFacts],
    n: usize,
    out: &mut ControlOut,
) {
    let mut order: Vec<&MachineFacts> = ctrls.to_vec();
    order.sort_by(|a, b| {
        let rank = |f: &MachineFacts| (is_up(view, f), !f.nodes.is_empty());
        rank(a).cmp(&rank(b)).then_with(|| id_order(&b.id).cmp(&id_order(&a.id)))
    });
    for f in order.into_iter().take(n) {
        tracing::info!(machine = %f.id, "retiring a surplus controller");
        c.stats.managers_retired += 1;
        out.changes.push(controllers::set_machine(&f.id, "life", "dead"));
    }
}

/// Machine ids sort by their counter, then their tag.
fn id_order(id: &str) -> (u64, String) {
    let (n, tag) = id.split_once('-').unwrap_or((id, ""));
    (n.parse().unwrap_or(0), tag.to_string())
}
