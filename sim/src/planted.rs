//! Planted bugs: deliberate faults in the world or in a node's wrapper that
//! the ground truth does *not* know about. The simulator's own tests plant
//! one and assert that the matching checker fires; a checker that cannot
//! catch its planted bug is not checking anything.
//!
//! Owns the list of planted bugs. Must never be reachable from the command
//! line or the swarm: only tests plant bugs.

/// One deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// From the start of the liveness phase, the node in this slot drops
    /// every datagram it sends, as if it never answered nor refuted, while
    /// the truth says it is healthy: the false-down checker must fire.
    MuteSends { slot: usize },
    /// Every node swallows its `MemberDown` events (a core that never
    /// declares anyone down): the detection checker must fire.
    SwallowDowns,
    /// The network keeps this slot cut off in the liveness phase although
    /// it claims to be healed: the convergence checker must fire.
    HiddenIsolation { slot: usize },
    /// After every rename, the node also reports the old identity up again
    /// (a stale identity coming back): the generations checker must fire.
    ResurrectOld,
}
