//! Invariant `no-revoked-admission`: no join is admitted with a token whose
//! revocation was acknowledged (durable) on the admitting manager before
//! the join began. A join's admission is its `UseToken` write (the runtime
//! writes it durably before answering the joiner); a revocation is a
//! `RevokeToken` write acknowledged by that manager. The manager keeps the
//! revocation through crashes with its disk kept; a manager that lost its
//! disk is a new node and owes nothing (it learns the revocation by sync,
//! which is the window GUARANTEES.md names).
//!
//! Owns only what each slot acknowledged, the joins that must be refused,
//! and findings. Must never look at a node's state: it judges from
//! acknowledgements, as a client would.

use std::collections::{BTreeMap, BTreeSet};

use jujud::core::state::Command;

use super::{Checker, FaultNote, Figure, Findings, Violation, World};
use crate::queue::VTime;
use crate::workload::StateNote;

const NAME: &str = "no-revoked-admission";

/// The no-revoked-admission checker.
#[derive(Debug, Default)]
pub struct NoRevokedAdmission {
    /// (slot, token id) -> when the slot acknowledged its revocation.
    revoked: BTreeMap<(usize, String), VTime>,
    /// Joins issued at a slot after it acknowledged the token's revocation:
    /// request -> (slot, token id, when the revocation was acknowledged).
    must_refuse: BTreeMap<u64, (usize, String, VTime)>,
    /// Such joins refused, and revocations acknowledged.
    refused: u64,
    revocations: u64,
    /// Slots whose disk was lost since (their revocations are forgotten).
    lost: BTreeSet<usize>,
    violations: Findings,
}

impl Checker for NoRevokedAdmission {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_fault(&mut self, _world: &World<'_>, note: &FaultNote) {
        let slot = match note {
            FaultNote::Crash { slot, lost_disk: Some(_), .. } | FaultNote::DiskGone { slot, .. } => *slot,
            _ => return,
        };
        self.lost.insert(slot);
        self.revoked.retain(|(s, _), _| *s != slot);
    }

    fn on_state(&mut self, world: &World<'_>, note: &StateNote) {
        match note {
            StateNote::Issued { slot, req, cmd: Command::UseToken { token_id, .. } } => {
                if let Some(at) = self.revoked.get(&(*slot, token_id.clone())) {
                    self.must_refuse.insert(*req, (*slot, token_id.clone(), *at));
                }
            }
            StateNote::Acked(w) => match &w.cmd {
                Command::RevokeToken { token_id } => {
                    self.revocations += 1;
                    self.revoked.entry((w.slot, token_id.clone())).or_insert(w.at);
                }
                Command::UseToken { token_id, .. } => {
                    if let Some((slot, _, at)) = self.must_refuse.remove(&w.req) {
                        self.violations.push(Violation {
                            invariant: NAME,
                            at: world.now,
                            slots: vec![slot],
                            detail: format!(
                                "slot {slot} admitted a join with token {token_id}, whose revocation it acknowledged at {:.3}s, before the join began",
                                at.as_secs_f64()
                            ),
                        });
                    }
                }
                _ => {}
            },
            StateNote::Refused { req, .. } if self.must_refuse.remove(req).is_some() => {
                self.refused += 1;
            }
            _ => {}
        }
    }

    fn figures(&self) -> Vec<Figure> {
        vec![Figure {
            name: NAME.into(),
            value: format!(
                "{} revocations acknowledged, {} joins with a revoked token refused",
                self.revocations, self.refused
            ),
        }]
    }

    fn findings(&self) -> &Findings {
        &self.violations
    }
}
