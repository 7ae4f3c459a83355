//! A deterministic simulator for the jujud node core (issue #3).
//!
//! It runs managers and agents as the very same `jujud::core::Node` the
//! daemon runs, in one thread, on a virtual clock: one event queue ordered
//! by (time, sequence number), jumping from event to event. Every random
//! choice comes from one seed. A run has a safety phase (random faults,
//! invariants checked on every event) and a liveness phase (faults stop,
//! the network heals, the cluster must converge within a stated bound).
//!
//! Code map:
//! - [`queue`]: the virtual clock and the event queue.
//! - [`clock`]: per-node clocks with offset and drift (clock skew).
//! - [`network`]: loss, latency tail, duplication, reordering, clogs and
//!   partitions.
//! - [`faults`]: fault profiles and the choice of the next fault.
//! - [`cluster`]: the processes, their disks, and message routing; the
//!   replicated state's plumbing (disk writes, state streams, replies).
//! - [`disk`]: the state log of a manager's disk: fsync delays, what a
//!   crash keeps, and the replica a restart recovers.
//! - [`workload`]: random client writes on random managers during faults.
//! - [`truth`]: which nodes faults touched, and when.
//! - [`bounds`]: every time bound, derived from the timing.
//! - [`checkers`]: the invariants.
//! - [`run`]: one run, both phases; [`report`]: its summary.
//! - [`swarm`]: many seeds on all cores; [`scale`]: the scale table.
//! - [`trace`]: the trace hash.
//!
//! Architecture invariant: nothing here reads real time (except to report
//! speed), uses OS randomness, spawns a thread inside a run, or iterates a
//! HashMap; the same seed and build always give the same trace hash.

pub mod bounds;
pub mod checkers;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod faults;
pub mod genesis;
pub mod network;
pub mod notes;
pub mod planted;
pub mod queue;
pub mod report;
pub mod run;
pub mod scale;
pub mod swarm;
pub mod trace;
pub mod truth;
pub mod workload;
