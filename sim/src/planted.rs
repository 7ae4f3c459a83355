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
    /// The driver feeds `Durable` as soon as a batch is submitted, before
    /// its sync completes, so a crash with the disk kept can lose an
    /// acknowledged write: the no-lost-acks checker must fire.
    EarlyDurable,
    /// The network never delivers a state message: replicas never
    /// converge, and the state-convergence checker must fire.
    DropState,
    /// Recovery skips the newest synced batch on the disk (as if a
    /// complete record were taken for a torn tail), so an acknowledged
    /// write can vanish at a restart although the disk holds it: the
    /// no-lost-acks checker's presence check must fire.
    RestoreDropsTail,
    /// A lying peer: every push of new operations is dropped, and a `Have`
    /// claiming them comes back instead, so writes waiting for replicas are
    /// acknowledged while no other manager holds them: the wait-replicated
    /// checker must fire.
    ForgeHave,
    /// From the liveness phase on, managers never answer an agent's
    /// session open (as if their session listener hung): agents stay
    /// without a session, and the sessions checker must fire.
    DeafManagers,
    /// From the liveness phase on, every agent session opens with an empty
    /// assignment before the real one (a manager that does not know the
    /// units yet): workloads stop and start again with the same spec, and
    /// the workloads checker must fire.
    EmptyFirstAssign,
    /// The provider does not remember instance names for agents (a second
    /// start of a name starts a second process, and the quota is not
    /// counted), and its answers to agent starts are lost (so the
    /// provisioner asks again): the instances checker must fire.
    ProviderForgetsNames,
    /// The provider answers a manager instance's start but never boots it:
    /// the managers checker must fire.
    ProviderDropsManagerStarts,
    /// Partitions cut only the network's truth: messages still cross, so a
    /// side that the truth calls a minority sees a majority and heals: the
    /// minority checker must fire.
    LeakyPartition,
}
