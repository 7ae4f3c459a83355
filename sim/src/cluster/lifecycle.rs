//! A simulated process's life: start from its disk, crash (SIGKILL, with
//! or without the disk), graceful leave (SIGTERM), pause and resume
//! (SIGSTOP, SIGCONT), and saving known peers. Part of [`Cluster`].
//!
//! Owns no state of its own. Must never decide when any of this happens
//! (the run loop and the fault policy do), and never read real time.

use std::collections::VecDeque;
use std::time::Duration;

use jujud::core::state::VersionVector;
use jujud::core::{Identity, Input, Node, NodeConfig};
use rand::RngExt;

use super::{CLOCK_OFFSET_MAX_SECS, Cluster, Process, fresh_disk};
use crate::clock::NodeClock;
use crate::trace::TraceKind;

impl Cluster {
    /// Starts a process in `slot` from its disk: generation + 1, the last
    /// persisted known peers, the managers as seeds, a fresh clock.
    pub fn start(&mut self, slot: usize) {
        let now = self.now();
        let drift = if self.drift_max_ppm > 0 {
            self.node_rng.random_range(-self.drift_max_ppm..=self.drift_max_ppm)
        } else {
            0
        };
        let offset = Duration::from_millis(self.node_rng.random_range(0..=CLOCK_OFFSET_MAX_SECS * 1000));
        let clock = NodeClock::new(now, offset, drift);
        let rng_seed = self.node_rng.random();
        let s = &mut self.slots[slot];
        assert!(s.process.is_none(), "slot {slot} started twice");
        s.epoch += 1;
        s.disk.generation += 1;
        s.started_at = now;
        let identity = Identity { id: s.disk.id, addr: s.addr, role: s.role, generation: s.disk.generation };
        let state = self.recover_state(slot);
        let s = &mut self.slots[slot];
        let config = NodeConfig {
            identity,
            timing: self.timing.clone(),
            rng_seed,
            seeds: s.seeds.clone(),
            known_peers: s.disk.known_peers.clone(),
            state,
            agent: s.agent.clone().filter(|_| self.state_enabled),
            controller_machine: s.controller_machine.clone(),
        };
        let mut node = Node::new(config);
        node.start(clock.local(now));
        s.process = Some(Process { node, clock, paused: false, held: VecDeque::new(), peers_dirty: false });
        self.stats.starts += 1;
        self.trace.record(now, slot, TraceKind::Start, s.disk.generation);
        self.drain(slot);
    }

    /// Kills the process (SIGKILL): its timers and in-flight messages to it
    /// die with it, and so do its disk writes whose sync had not completed.
    /// Without the disk, the machine comes back as a new node; the state the
    /// lost disk held durably is returned.
    pub fn crash(&mut self, slot: usize, keep_disk: bool) -> Option<VersionVector> {
        let now = self.now();
        let s = &mut self.slots[slot];
        s.process.take()?;
        s.epoch += 1;
        s.exit_due = None;
        self.stats.disk_lost_unsynced += s.disk.state.crash(now);
        self.abandon_requests(slot);
        self.sessions_end_process(slot, false);
        self.workloads_die(slot);
        if keep_disk {
            return None;
        }
        let lost = self.slots[slot].disk.state.durable_at(now);
        let old = self.slots[slot].disk.id;
        self.by_id.remove(&old);
        let disk = fresh_disk(&mut self.node_rng, &mut self.tags);
        self.by_id.insert(disk.id, slot);
        self.slots[slot].disk = disk;
        Some(lost)
    }

    /// Graceful leave (SIGTERM): the node says goodbye, persists its peers
    /// and exits.
    pub fn leave(&mut self, slot: usize) {
        let now = self.now();
        let Some(p) = self.slots[slot].process.as_mut() else { return };
        let local = p.clock.local(now);
        p.node.handle(local, Input::Leave);
        self.drain(slot);
        let s = &mut self.slots[slot];
        if let Some(p) = s.process.take() {
            s.disk.known_peers = p.node.known_peers();
        }
        s.epoch += 1;
        // The exit waits for the syncs in flight.
        s.disk.state.flush(now);
        s.exit_due = None;
        self.abandon_requests(slot);
        self.sessions_end_process(slot, true);
        self.workloads_die(slot);
    }

    /// Freezes the process (SIGSTOP): everything for it is held.
    pub fn pause(&mut self, slot: usize) -> Option<u32> {
        let s = &mut self.slots[slot];
        let p = s.process.as_mut().filter(|p| !p.paused)?;
        p.paused = true;
        s.pause += 1;
        let pause = s.pause;
        self.sessions_disturbed(Some(slot));
        Some(pause)
    }

    /// A partition began, moved or ended: sessions on cut paths time out.
    pub fn partition_changed(&mut self) {
        self.sessions_disturbed(None);
    }

    /// Thaws the process (SIGCONT): what was held is delivered now, late,
    /// in the order it arrived.
    pub fn resume(&mut self, slot: usize) -> bool {
        let now = self.now();
        let s = &mut self.slots[slot];
        let Some(p) = s.process.as_mut().filter(|p| p.paused) else { return false };
        p.paused = false;
        s.resumed_at = now;
        let held = std::mem::take(&mut p.held);
        for ev in held {
            self.push_control_free(now, ev);
        }
        true
    }

    /// Saves every running node's known peers if they changed.
    pub fn persist(&mut self) {
        for s in &mut self.slots {
            if let Some(p) = s.process.as_mut().filter(|p| p.peers_dirty) {
                s.disk.known_peers = p.node.known_peers();
                p.peers_dirty = false;
            }
        }
    }
}
