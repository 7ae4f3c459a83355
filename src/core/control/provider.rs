//! The vocabulary between singleton workers and a provider (the thing that
//! starts and stops instances: local processes, LXD, a cloud): commands the
//! core asks for and results the driver reports back.
//!
//! Owns the instance naming rule. Must never carry out anything itself: the
//! runtime (or the simulator) talks to the provider.

use std::net::SocketAddr;

/// Which provider, and where: read from the controller settings
/// `c/provider` and `c/provider-root`, and for a provider over a pool of
/// hosts, the pool (`h/<address>` keys).
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    /// `local` (the embedded default) or `ssh` (a pool of existing hosts).
    pub kind: String,
    /// The local provider's root directory; for `ssh`, the cloud's name
    /// (the cloud file given to bootstrap), used in messages.
    pub root: String,
    /// For `ssh`: every host entry of the pool, as the runtime wrote it
    /// (opaque here: the core never reads an entry, which holds the
    /// host's private key), in address order. Empty for `local`.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for ProviderSpec {
    /// Host entries hold private keys: only their number is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("kind", &self.kind)
            .field("root", &self.root)
            .field("hosts", &self.hosts.len())
            .finish()
    }
}

impl ProviderSpec {
    /// The kind whose instances live on pool hosts.
    pub const SSH: &'static str = "ssh";

    /// Whether instances are placed on hosts of a pool, so where each one
    /// runs must be recorded (`m/<id>/instance-at`) for its stop.
    pub fn places_on_hosts(&self) -> bool {
        self.kind == Self::SSH
    }
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
    /// `host`: the pool host an enlisted machine lives on (start exactly
    /// there), else the provider picks a free host. `busy`: the hosts the
    /// state shows holding an instance (running, or fenced and not yet
    /// cleaned), which a provider placing on a pool tries last rather than
    /// asking each one first (the state may lag, so they are not skipped).
    Start {
        req: u64,
        provider: ProviderSpec,
        instance: String,
        machine: String,
        manager: bool,
        seeds: Vec<SocketAddr>,
        host: Option<String>,
        busy: Vec<String>,
    },
    /// Stop `instance`: gracefully (the process leaves the cluster) or at
    /// once (a frozen or dead manager that must never come back). `at`:
    /// where it was started (`Started::address`, recorded as
    /// `m/<id>/instance-at` by providers that place on hosts). `fence`: a
    /// host that cannot be reached counts as stopped (`Stopped { fenced }`):
    /// the HA keeper's heal, which revokes the node at the same time; the
    /// cleaner's stops never fence, they retry until the host answers.
    Stop {
        req: u64,
        provider: ProviderSpec,
        instance: String,
        machine: String,
        graceful: bool,
        at: Option<String>,
        fence: bool,
    },
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
    Started {
        req: u64,
        instance: String,
        machine: String,
        address: String,
        existed: bool,
    },
    /// The instance is stopped; or, `fenced`, its host could not be
    /// reached on a fencing stop: its node is revoked and the instance
    /// must still be stopped (by the cleaner) before its host is reused.
    Stopped {
        req: u64,
        instance: String,
        machine: String,
        fenced: bool,
    },
    Failed {
        req: u64,
        instance: String,
        machine: String,
        error: String,
    },
}

impl ProviderResult {
    pub fn req(&self) -> u64 {
        match self {
            ProviderResult::Started { req, .. }
            | ProviderResult::Stopped { req, .. }
            | ProviderResult::Failed { req, .. } => *req,
        }
    }
}
