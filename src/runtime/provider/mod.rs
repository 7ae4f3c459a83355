//! Providers: what starts and stops instances. [`Provider`] is the small
//! trait another provider (LXD, SSH to existing machines, a cloud) would
//! implement; [`local`] is the embedded default, where an instance is a
//! detached `jujud` process with its own data dir and loopback address.
//! [`Runner`] carries out the core's provider requests: it mints each new
//! instance's join token, calls the provider off the async threads, and
//! reports the result to the driver.
//!
//! Owns the boundary to providers and their errors. Must never decide
//! what to start or stop (the singleton workers do), and never start an
//! instance under a name the provider already holds: that refusal is what
//! keeps two provisioners from starting one machine twice.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::transport::Inbound;
use crate::core::control::provider::{ProviderCmd, ProviderResult, ProviderSpec};
use crate::pki::{self, CertRole};

pub mod local;

/// How long a new instance's join token is valid.
pub const INSTANCE_TOKEN_TTL_SECS: u64 = 3_600;

/// Why a provider could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {0:?} is not built in (only \"local\" is)")]
    Unknown(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("instance {0} does not exist")]
    NoSuchInstance(String),
    #[error("no loopback address is left in the provider's range")]
    NoAddress,
    #[error("cannot start {name}: {reason}")]
    Spawn { name: String, reason: String },
}

/// What an instance runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub name: String,
    pub machine: String,
    /// `jujud` arguments after the data dir and listen address, e.g.
    /// `["peer", "--join", ...]`; the provider adds `--data-dir` and
    /// `--listen` itself.
    pub args: Vec<String>,
    /// Extra environment (the join token goes here, not on the command
    /// line, where every local user could read it).
    pub env: Vec<(String, String)>,
}

/// What a start did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub address: SocketAddr,
    /// The name was taken already: nothing was started.
    pub existed: bool,
}

/// Starts and stops instances. Implementations must refuse a second start
/// of a name (reporting it as `existed`), and make stop idempotent.
pub trait Provider: Send + Sync {
    fn start(&self, launch: &Launch) -> Result<Started, ProviderError>;
    /// Stops `name`: `graceful` lets it leave the cluster first; otherwise
    /// it is killed at once (a frozen process included).
    fn stop(&self, name: &str, graceful: bool) -> Result<(), ProviderError>;
}

/// The provider a spec names.
pub fn open(spec: &ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> {
    match spec.kind.as_str() {
        "local" => Ok(Arc::new(local::LocalProvider::new(spec.root.clone().into()))),
        other => Err(ProviderError::Unknown(other.into())),
    }
}

/// Carries out provider requests for one manager.
pub struct Runner {
    pub cluster_secret: Vec<u8>,
    pub ca_fingerprint: String,
    pub inbox: mpsc::Sender<Inbound>,
    /// The driver's command channel: each instance's token is recorded in
    /// the state (durably) before the instance starts.
    pub commands: mpsc::Sender<super::driver::Command>,
}

/// How long recording an instance's token may take.
pub const TOKEN_RECORD_TIMEOUT_MS: u64 = 10_000;
/// Times an instance's token is minted again after an id collision.
pub const MAX_MINT_ATTEMPTS: usize = 8;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn seeds_arg(seeds: &[SocketAddr]) -> String {
    seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

impl Runner {
    /// The launch for a new manager or agent instance of `machine`.
    fn launch(&self, instance: &str, machine: &str, manager: bool, seeds: &[SocketAddr]) -> Result<Launch, String> {
        let role = if manager { CertRole::Manager } else { CertRole::Agent };
        let token = self.record_token(role, machine)?;
        let args = if manager {
            vec!["peer".into(), "--join".into(), seeds_arg(seeds), "--log-format".into(), "json".into()]
        } else {
            vec!["agent".into(), "--seeds".into(), seeds_arg(seeds), "--log-format".into(), "json".into()]
        };
        let env = vec![("JUJUD_TOKEN".to_string(), token.to_string())];
        Ok(Launch { name: instance.into(), machine: machine.into(), args, env })
    }

    /// Mints the instance's single-use token and records it durably (on
    /// the blocking pool: this waits for the driver's answer).
    fn record_token(&self, role: CertRole, machine: &str) -> Result<pki::JoinToken, String> {
        use crate::core::state::{Command as StateCommand, WriteResult, tokens::TokenSpec};
        for _ in 0..MAX_MINT_ATTEMPTS {
            let token = pki::issue_token(&self.cluster_secret, role, Some(machine), INSTANCE_TOKEN_TTL_SECS, unix_now(), &self.ca_fingerprint)
                .map_err(|e| e.to_string())?;
            let spec = TokenSpec {
                token_id: token.token_id.clone(),
                role: role.as_str().into(),
                subject: Some(machine.into()),
                expires_unix_secs: token.expires_unix_secs,
                reusable: false,
            };
            let (reply, rx) = tokio::sync::oneshot::channel();
            let timeout = std::time::Duration::from_millis(TOKEN_RECORD_TIMEOUT_MS);
            let cmd = super::driver::Command::Write { cmd: StateCommand::IssueTokens(vec![spec]), replicas: 0, timeout, reply };
            self.commands.blocking_send(cmd).map_err(|_| "the node is shutting down".to_string())?;
            match rx.blocking_recv() {
                Ok(WriteResult::Done(_)) => return Ok(token),
                Ok(WriteResult::Refused(r)) if r.starts_with("token id ") => continue,
                Ok(WriteResult::Refused(r)) => return Err(format!("could not record the instance's token: {r}")),
                Err(_) => return Err("the node stopped before recording the instance's token".into()),
            }
        }
        Err("token ids kept colliding".into())
    }

    /// Runs `cmd` on the blocking pool and reports the result.
    pub fn execute(self: &Arc<Self>, cmd: ProviderCmd) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = this.run(&cmd);
            if this.inbox.blocking_send(Inbound::Provider(result)).is_err() {
                tracing::warn!("driver gone; a provider result was dropped");
            }
        });
    }

    fn run(&self, cmd: &ProviderCmd) -> ProviderResult {
        match cmd {
            ProviderCmd::Start { req, provider, instance, machine, manager, seeds, .. } => {
                let failed = |error: String| ProviderResult::Failed { req: *req, instance: instance.clone(), machine: machine.clone(), error };
                let launch = match self.launch(instance, machine, *manager, seeds) {
                    Ok(l) => l,
                    Err(e) => return failed(e),
                };
                match open(provider).and_then(|p| p.start(&launch)) {
                    Ok(s) => {
                        tracing::info!(%instance, %machine, address = %s.address, existed = s.existed, "instance started");
                        ProviderResult::Started { req: *req, instance: instance.clone(), machine: machine.clone(), address: s.address.to_string(), existed: s.existed }
                    }
                    Err(e) => failed(e.to_string()),
                }
            }
            ProviderCmd::Stop { req, provider, instance, machine, graceful, .. } => match open(provider).and_then(|p| p.stop(instance, *graceful)) {
                Ok(()) => {
                    tracing::info!(%instance, %machine, graceful, "instance stopped");
                    ProviderResult::Stopped { req: *req, instance: instance.clone(), machine: machine.clone(), fenced: false }
                }
                Err(e) => ProviderResult::Failed { req: *req, instance: instance.clone(), machine: machine.clone(), error: e.to_string() },
            },
        }
    }
}
