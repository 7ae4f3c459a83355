//! The cleaner: reclaims the instances of removed machines, through the
//! provider, gracefully (the process leaves the cluster first), and records
//! that they are stopped. An instance the HA keeper fenced (its host could
//! not be reached) is stopped at once, retried until its host answers:
//! only then is the host free for another instance.
//!
//! Owns nothing but the requests it has in flight (kept by the
//! controller). Must never stop the instance of a live machine.
//!
//! It does not delete a dead entity's keys: with the `crdts` map, a remove
//! can leave a stale sibling behind on a replica that got a value's
//! causal predecessors in another order (our delivery is causal per actor,
//! not across actors), and the simulator caught exactly that divergence.
//! Dead entities stay as tombstones (they are hidden everywhere, and their
//! ids are never reused) until the replica delivers causally.

use super::provider::ProviderCmd;
use super::{ControlOut, Controller, Singleton, View};

/// One round: a graceful stop for every dead machine whose instance may run.
pub fn run(c: &mut Controller, view: &View<'_>, out: &mut ControlOut) {
    let Some(spec) = &view.provider else { return };
    for f in view.facts.iter().filter(|f| f.dead && !f.instance_stopped) {
        let Some(instance) = &f.instance else { continue };
        if !c.has_room() {
            break;
        }
        if c.in_flight(&f.id, false) {
            continue;
        }
        let req = c.new_req();
        // A fenced instance's node is revoked: nothing to leave gracefully.
        let graceful = !f.instance_fenced;
        let cmd = ProviderCmd::Stop {
            req,
            provider: spec.clone(),
            instance: instance.clone(),
            machine: f.id.clone(),
            graceful,
            at: f.instance_at.clone(),
            fence: false,
        };
        c.fly(cmd, Singleton::Cleaner, view.now, out);
    }
}
