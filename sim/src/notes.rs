//! What the simulated world did on the nodes' behalf, for the checkers:
//! workload runs started and ended, provider calls issued, instances
//! started and stopped, and processes that ended by themselves or were
//! stopped by the provider. The cluster records them as it carries out the
//! outputs; the run loop hands them to every checker after the step.
//!
//! Owns only the vocabulary. Must never carry anything a checker could use
//! to change the run.

use jujud::core::Identity;
use jujud::core::control::provider::ProviderCmd;

/// How a process ended without a fault injected by the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// The provider killed it (SIGKILL; a frozen process too).
    Killed,
    /// It left the cluster and exited: a graceful provider stop, a retired
    /// or revoked manager, or an agent whose machine was removed.
    Left,
}

/// Why a process ended by itself, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitWhy {
    ProviderStop,
    Retired,
    Revoked,
    MachineGone,
}

/// One thing the world did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimNote {
    /// The agent in `slot` started run `run` of `unit`; `spec` digests its
    /// command and environment.
    WorkloadStarted { slot: usize, unit: String, run: u64, spec: u64 },
    /// Run `run` of `unit` ended: by itself (`spontaneous`, the simulator's
    /// random exit) or because the agent stopped it.
    WorkloadEnded { slot: usize, unit: String, run: u64, spontaneous: bool },
    /// The manager in `slot` asked the provider for `cmd` (at this moment).
    ProviderCall { slot: usize, cmd: ProviderCmd },
    /// The provider started `instance` for `machine` in the new `slot`.
    InstanceStarted { instance: String, machine: String, slot: usize, manager: bool },
    /// The provider stopped `instance`.
    InstanceStopped { instance: String, machine: String, slot: usize },
    /// A process ended without an injected fault.
    Exited { slot: usize, identity: Identity, kind: ExitKind, why: ExitWhy },
    /// A slot the provider created booted for the first time.
    Booted { slot: usize },
    /// The provider stopped the instance of `slot` while its process was
    /// down (crashed, awaiting a restart): it never runs again.
    StoppedWhileDown { slot: usize },
}
