//! Invariant `instances`: never two running instances for one machine.
//! The provider's records are the truth: after every start it carried
//! out, the machine it started has exactly one running instance. Two
//! provisioners that race, or one that asks again after a lost answer,
//! must be stopped by the derived instance name.
//!
//! Owns nothing but its findings. Must never look at the state's
//! `m/<id>/instance` records (they are what the workers believe).

use super::{Checker, Figure, Findings, Violation, World};
use crate::notes::SimNote;

const NAME: &str = "instances";

/// The instances checker.
#[derive(Debug, Default)]
pub struct Instances {
    started: u64,
    violations: Findings,
}

impl Checker for Instances {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_sim(&mut self, world: &World<'_>, note: &SimNote) {
        let SimNote::InstanceStarted { machine, .. } = note else { return };
        self.started += 1;
        let running: Vec<(String, usize)> =
            world.cluster.provider.running_for(machine).map(|i| (i.name.clone(), i.slot)).collect();
        if running.len() > 1 {
            let detail = format!("machine {machine} has {} running instances: {running:?}", running.len());
            self.violations.push(Violation {
                invariant: NAME,
                at: world.now,
                slots: running.iter().map(|r| r.1).collect(),
                detail,
            });
        }
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }

    fn figures(&self) -> Vec<Figure> {
        vec![Figure { name: "instances started by the provider".into(), value: self.started.to_string() }]
    }
}
