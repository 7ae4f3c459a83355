//! The node's side of the singleton workers (managers only): the control
//! tick, the view the workers see, provider answers, and carrying out what
//! the workers decide (state changes, notices, provider requests, events).
//!
//! Owns only glue; it is part of [`Node`]. Must never run a worker on a
//! member without state, and never let a revoked member's traffic in.

use std::time::Duration;

use super::Node;
use crate::core::control::provider::ProviderResult;
use crate::core::control::{CONTROL_TICK_MS, ControlEvent, ControlOut, Controller, View, owners};
use crate::core::identity::NodeId;
use crate::core::io::{Event, Output, Time, TimerKind};
use crate::core::state::controllers;

impl Node {
    /// The singleton workers (managers).
    pub fn control(&self) -> Option<&Controller> {
        self.control.as_ref()
    }

    /// The controller summary (managers only).
    pub fn controller_info(&self) -> Option<crate::core::control::ControllerInfo> {
        let st = self.state.as_ref()?;
        let live = self.live_manager_ids();
        Some(crate::core::control::ControllerInfo {
            desired: controllers::ha_desired(&st.replica),
            alive: live.len() as u32,
            owners: owners(&live)
                .into_iter()
                .map(|(s, id)| (s.name().to_string(), id.to_string()))
                .collect(),
            provider: controllers::provider_name(&st.replica)
                .map(|(kind, root)| format!("{kind}:{root}")),
            grace_ms: controllers::ha_grace(&st.replica).as_millis() as u64,
            short_because: controllers::why_short(&st.replica),
        })
    }

    pub(super) fn arm_control(&mut self, now: Time) {
        if self.control.is_some() {
            self.arm(now, TimerKind::Control, Duration::from_millis(CONTROL_TICK_MS));
        }
    }

    pub(super) fn on_control_tick(&mut self, now: Time) {
        let mut out = ControlOut::default();
        self.with_view(now, false, &mut out, |c, view, out| c.tick(view, out));
        self.apply_control_out(out);
        // The answers keep the next ticks' contact fresh (every manager
        // probes, so that whoever owns a worker next has contact at once).
        if self.control.is_some()
            && self
                .state
                .as_ref()
                .is_some_and(|st| controllers::provider_name(&st.replica).is_some())
        {
            self.probe_managers(now);
        }
        self.arm_control(now);
    }

    /// A manager came or went: ownership moves now, not at the next tick.
    pub(super) fn on_manager_change(&mut self, now: Time) {
        let mut out = ControlOut::default();
        self.with_view(now, true, &mut out, |c, view, out| c.on_membership(view, out));
        self.apply_control_out(out);
    }

    pub(super) fn on_provider(&mut self, now: Time, result: &ProviderResult) {
        let mut out = ControlOut::default();
        self.with_view(now, false, &mut out, |c, view, out| c.on_provider(view, result, out));
        self.apply_control_out(out);
    }

    /// Runs `f` with the workers' view. `membership`: ownership may change
    /// in this call (so facts are read for the owners it will have).
    fn with_view(
        &mut self,
        now: Time,
        membership: bool,
        out: &mut ControlOut,
        f: impl FnOnce(&mut Controller, &View<'_>, &mut ControlOut),
    ) {
        let who = format!("{}@{}", self.identity().id, self.identity().generation);
        let me = self.swim.identity().id;
        let (Some(control), Some(st)) = (self.control.as_mut(), self.state.as_ref()) else {
            return;
        };
        let live_ids: Vec<NodeId> = self.live_managers.iter().map(|m| m.id).collect();
        let contact = self.contact.in_contact(now, me, &live_ids);
        let provider = controllers::provider(&st.replica);
        if control.machine().is_none() && provider.is_some() {
            // The bootstrap manager adopts the controller machine it created.
            if let Some(m) = cached_facts(&mut self.facts_cache, &st.replica)
                .iter()
                .find(|m| m.controller && m.nodes.contains(&me))
            {
                control.set_machine(m.id.clone());
            }
        }
        // Facts cost a pass over the keys: only for a node that owns, or is
        // about to own, a worker that reads them now.
        let owned =
            if membership { control.owned_among(&live_ids) } else { control.owned().clone() };
        let facts: &[controllers::MachineFacts] = if control.needs_facts(&owned, provider.is_some())
        {
            cached_facts(&mut self.facts_cache, &st.replica)
        } else {
            &[]
        };
        let view = View {
            now,
            replica: &st.replica,
            facts,
            live: &self.live_managers,
            contact: &contact,
            who,
            provider,
        };
        f(control, &view, out);
    }

    fn apply_control_out(&mut self, out: ControlOut) {
        for cmd in out.provider {
            self.push(Output::Provider(Box::new(cmd)));
        }
        for notice in &out.notices {
            self.publish(notice);
        }
        for ev in out.events {
            match ev {
                ControlEvent::Ownership { singleton, owned } => {
                    self.push(Output::Event(Event::Singleton { name: singleton.name(), owned }))
                }
                ControlEvent::Retired => self.push(Output::Event(Event::Retired)),
            }
        }
        self.write_internal(&out.changes);
    }
}

/// The machine facts of `r` (a pass over every key), computed again only
/// when the replica has applied something since the last time.
fn cached_facts<'a>(
    cache: &'a mut Option<FactsCache>,
    r: &crate::core::state::Replica,
) -> &'a [controllers::MachineFacts] {
    if cache.as_ref().is_none_or(|(v, _)| v != r.applied()) {
        *cache = Some((r.applied().clone(), controllers::machines(r)));
    }
    &cache.as_ref().expect("just filled").1
}

/// The version the facts were read at, and the facts.
pub(super) type FactsCache = (crate::core::state::VersionVector, Vec<controllers::MachineFacts>);
