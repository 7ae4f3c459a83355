//! The node's side of replicated state: it routes commands, durability
//! reports and state messages to [`StateSync`] and turns what that asks for
//! into outputs, addressed to live managers only.
//!
//! Owns nothing of its own; it is part of [`Node`]. Must never accept a state
//! message from a member that is not a manager by certificate.

use std::time::Duration;

use rand::RngExt;

use super::Node;
use crate::core::identity::{Identity, NodeId, Role};
use crate::core::io::{Output, PeerCert, Time, TimerKind};
use crate::core::state::sync::{self, ANTI_ENTROPY_PERIOD_MS, SyncOut};
use crate::core::state::{Command, RequestId, StateSync, VersionVector, WriteResult};

impl Node {
    /// The replicated state, for managers.
    pub fn state(&self) -> Option<&StateSync> {
        self.state.as_ref()
    }

    /// Live managers other than this node.
    /// A live manager other than this node, by id (the cached list is
    /// sorted by id).
    fn live_peer_manager(&self, id: NodeId) -> Option<&Identity> {
        let i = self.live_managers.binary_search_by_key(&id, |m| m.id).ok()?;
        Some(&self.live_managers[i]).filter(|m| m.id != self.swim.identity().id)
    }

    pub(super) fn on_command(
        &mut self,
        now: Time,
        req: u64,
        id: Option<RequestId>,
        cmd: &Command,
        replicas: u32,
        timeout: Duration,
    ) {
        let mut out = SyncOut::default();
        match self.state.as_mut() {
            Some(st) => st.command(now, req, id, cmd, replicas, timeout, &mut out),
            None => {
                out.replies.push((req, WriteResult::Refused("this member holds no state".into())))
            }
        }
        self.apply_sync_out(out);
    }

    pub(super) fn on_durable(&mut self, now: Time, seq: u64) {
        let mut out = SyncOut::default();
        if let Some(st) = self.state.as_mut() {
            st.durable(now, seq, &self.peer_manager_ids, &mut out);
        }
        self.apply_sync_out(out);
    }

    pub(super) fn on_durable_remote(&mut self, now: Time, vv: &VersionVector) {
        let mut out = SyncOut::default();
        if let Some(st) = self.state.as_mut() {
            st.durable_remote(now, vv, &self.peer_manager_ids, &mut out);
        }
        self.apply_sync_out(out);
    }

    pub(super) fn on_state(&mut self, now: Time, from: PeerCert, bytes: &[u8]) {
        self.stats.state_msgs_in += 1;
        if from.role != Role::Manager || self.state.is_none() {
            self.stats.state_msgs_dropped += 1;
            return;
        }
        let msg = match sync::decode_msg(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(from = %from.id, error = %e, "dropped an undecodable state message");
                self.stats.state_msgs_dropped += 1;
                return;
            }
        };
        let mut out = SyncOut::default();
        if let Some(st) = self.state.as_mut() {
            st.on_msg(now, from.id, msg, &mut out);
        }
        for (from, sent_ms) in std::mem::take(&mut out.probe_acks) {
            self.contact.answered(from, sent_ms);
        }
        self.apply_sync_out(out);
    }

    /// Probes every live peer manager (every manager does, once a control
    /// tick, when a provider is configured).
    pub(super) fn probe_managers(&mut self, now: Time) {
        let sent_ms = self.contact.round_sent(now);
        let mut out = SyncOut::default();
        if let Some(st) = self.state.as_ref() {
            st.probe(sent_ms, &self.peer_manager_ids, &mut out);
        }
        self.apply_sync_out(out);
    }

    pub(super) fn anti_entropy(&mut self, now: Time) {
        let ids = &self.peer_manager_ids;
        let target = (!ids.is_empty()).then(|| ids[self.rng.random_range(0..ids.len())]);
        let mut out = SyncOut::default();
        if let Some(st) = self.state.as_mut() {
            st.tick(now, target, ids, &mut out);
        }
        self.apply_sync_out(out);
        self.arm(now, TimerKind::AntiEntropy, Duration::from_millis(ANTI_ENTROPY_PERIOD_MS));
    }

    /// Writes changes a part of the node decided on (agents' reports, the
    /// workers' records) as own operations, and carries out the sync.
    pub(super) fn write_internal(&mut self, changes: &[crate::core::state::Change]) {
        if changes.is_empty() {
            return;
        }
        let mut sync = SyncOut::default();
        if let Some(st) = self.state.as_mut() {
            st.write_internal(changes, &mut sync);
        }
        self.apply_sync_out(sync);
    }

    pub(super) fn apply_sync_out(&mut self, out: SyncOut) {
        // Only changes that can move an assignment make the served agents'
        // assignments be recomputed (a pass over every key): most writes are
        // agents' own reports and controller settings.
        use crate::core::state::agents::ops_affect_assignments;
        self.state_changed |= ops_affect_assignments(&out.persist_own)
            || ops_affect_assignments(&out.persist_remote)
            || out.snapshot_needed;
        if !out.persist_own.is_empty() {
            self.push(Output::Persist { ops: out.persist_own, own: true });
        }
        if !out.persist_remote.is_empty() {
            self.push(Output::Persist { ops: out.persist_remote, own: false });
        }
        if out.snapshot_needed {
            self.push(Output::SnapshotNeeded);
        }
        for (to, msg) in out.send {
            let Some(identity) = self.live_peer_manager(to).cloned() else { continue };
            self.stats.state_msgs_out += 1;
            self.push(Output::SendState { to: identity, bytes: sync::encode_msg(&msg) });
        }
        for (req, result) in out.replies {
            self.push(Output::Reply { req, result });
        }
    }
}
