//! The vocabulary between singleton workers and a provider (the thing that
//! starts and stops instances: local processes, LXD, a cloud): commands the
//! core asks for and results the driver reports back.
//!
//! Owns the instance naming rule. Must never carry out anything itself: the
//! runtime (or the simulator) talks to the provider.

use std::net::SocketAddr;

/// Which provider, and where: read from the controller settings
/// `c/provider` and `c/provider-root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSpec {
    /// `local` is the only kind built in.
    pub kind: String,
    /// The local provider's root directory.
    pub root: String,
}

/// The name of machine `machine`'s instance at generation `generation`.
/// Derived, never chosen: two owners that both start the machine ask for
/// the same name, and the provider refuses the second.
pub fn instance_name(machine: &str, generation: u64) -> String {
    format!("m-{machine}-g{generation}")
}

/// What a worker asks the provider to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderCmd {
    /// Start `instance` for `machine`: a manager (joining through `seeds`)
    /// or an agent. The driver mints the join token, bound to `machine`.
    Start { req: u64, provider: ProviderSpec, instance: String, machine: String, manager: bool, seeds: Vec<SocketAddr> },
    /// Stop `instance`: gracefully (the process leaves the cluster) or at
    /// once (a frozen or dead manager that must never come back).
    Stop { req: u64, provider: ProviderSpec, instance: String, machine: String, graceful: bool },
}

impl ProviderCmd {
    pub fn req(&self) -> u64 {
        match self {
            ProviderCmd::Start { req, .. } | ProviderCmd::Stop { req, .. } => *req,
        }
    }
}

/// What the provider did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderResult {
    /// The instance runs; `existed` when it was already there (a second
    /// owner's start, refused as a duplicate and reported as done).
    Started { req: u64, instance: String, machine: String, address: String, existed: bool },
    Stopped { req: u64, instance: String, machine: String },
    Failed { req: u64, instance: String, machine: String, error: String },
}

impl ProviderResult {
    pub fn req(&self) -> u64 {
        match self {
            ProviderResult::Started { req, .. } | ProviderResult::Stopped { req, .. } | ProviderResult::Failed { req, .. } => *req,
        }
    }
}
