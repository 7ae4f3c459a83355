//! The cleaner: reclaims the instances of removed machines, through the
//! provider, gracefully (the process leaves the cluster first), and records
//! that they are stopped.
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
        let cmd = ProviderCmd::Stop { req, provider: spec.clone(), instance: instance.clone(), machine: f.id.clone(), graceful: true };
        c.fly(cmd, Singleton::Cleaner, view.now, out);
    }
}
