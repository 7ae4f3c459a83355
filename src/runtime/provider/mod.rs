//! Providers: what starts and stops instances. [`Provider`] is the small
//! trait another provider (LXD, SSH to existing machines, a cloud) would
//! implement; [`local`] is the embedded default, where an instance is a
//! detached `jujud` process with its own data dir and loopback address.
//! [`ssh`] places instances on a pool of existing hosts reached over SSH.
//! [`Runner`] carries out the core's provider requests: it mints each new
//! instance's join token, calls the provider off the async threads, and
//! reports the result to the driver (a fencing stop whose host cannot be
//! reached becomes `Stopped { fenced: true }`).
//!
//! Owns the boundary to providers and their errors. Must never decide
//! what to start or stop (the singleton workers do), and never start an
//! instance under a name the provider already holds: that refusal is what
//! keeps two provisioners from starting one machine twice.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::core::Input;
use crate::core::control::provider::{ProviderCmd, ProviderResult, ProviderSpec};
use crate::pki::{self, CertRole};

pub mod local;
pub mod ssh;

/// How long a new instance's join token is valid.
pub const INSTANCE_TOKEN_TTL_SECS: u64 = 3_600;

/// Why a provider could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {0:?} is not built in (only \"local\" and \"ssh\" are)")]
    Unknown(String),
    #[error("no free host in cloud {cloud}{}", skipped_text(skipped))]
    NoFreeHost { cloud: String, skipped: Vec<String> },
    #[error("host {host} does not answer: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("host {host}: {reason}")]
    Host { host: String, reason: String },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("instance {0} does not exist")]
    NoSuchInstance(String),
    #[error("no loopback address is left in the provider's range")]
    NoAddress,
    #[error("cannot start {name}: {reason}")]
    Spawn { name: String, reason: String },
}

fn skipped_text(skipped: &[String]) -> String {
    if skipped.is_empty() { String::new() } else { format!(" (skipped: {})", skipped.join("; ")) }
}

/// What an instance runs. Its Debug shows the environment's names only
/// (the join token is one of its values).
#[derive(Clone, PartialEq, Eq)]
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
    /// A manager (else a machine agent): providers over a pool of hosts
    /// place it only on hosts allowed that role.
    pub manager: bool,
    /// Start exactly on this pool host (an enlisted machine), else the
    /// provider picks a free one.
    pub host: Option<String>,
    /// Hosts the state shows holding an instance: tried last.
    pub busy: Vec<String>,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Launch")
            .field("name", &self.name)
            .field("machine", &self.machine)
            .field("args", &self.args)
            .field("env", &env)
            .field("manager", &self.manager)
            .field("host", &self.host)
            .finish()
    }
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
    /// Stops `name`, started at `at` (`Started::address`, when the caller
    /// recorded it): `graceful` lets it leave the cluster first; otherwise
    /// it is killed at once (a frozen process included).
    fn stop(&self, name: &str, at: Option<&str>, graceful: bool) -> Result<(), ProviderError>;
}

/// The provider a spec names.
pub fn open(spec: &ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> {
    match spec.kind.as_str() {
        "local" => Ok(Arc::new(local::LocalProvider::new(spec.root.clone().into()))),
        "ssh" => Ok(Arc::new(ssh::SshProvider::from_spec(spec)?)),
        other => Err(ProviderError::Unknown(other.into())),
    }
}

/// The provider a spec names, marking hosts it claims with environment
/// `environment` (the CA fingerprint).
pub fn open_for(
    spec: &ProviderSpec,
    environment: &str,
) -> Result<Arc<dyn Provider>, ProviderError> {
    match spec.kind.as_str() {
        "ssh" => Ok(Arc::new(ssh::SshProvider::from_spec(spec)?.with_environment(environment))),
        _ => open(spec),
    }
}

/// Carries out provider requests for one manager.
pub struct Runner {
    pub cluster_secret: Vec<u8>,
    pub ca_fingerprint: String,
    pub inbox: mpsc::Sender<Input>,
    /// The driver's command channel: each instance's token is recorded in
    /// the state (durably) before the instance starts.
    pub commands: mpsc::Sender<super::driver::Command>,
    /// This manager's timing preset, given to every instance it starts
    /// (one environment, one failure detector; single timing overrides
    /// are not passed on).
    pub preset: &'static str,
}

/// Maps a stop's outcome to its result: a fencing stop (`fence`) whose
/// host cannot be reached counts as stopped, `fenced` (the keeper revokes
/// the node and the cleaner stops the instance once the host answers);
/// any other failure stays a failure.
pub fn stop_result(
    req: u64,
    instance: &str,
    machine: &str,
    fence: bool,
    outcome: Result<(), ProviderError>,
) -> ProviderResult {
    let (instance, machine) = (instance.to_string(), machine.to_string());
    match outcome {
        Ok(()) => ProviderResult::Stopped { req, instance, machine, fenced: false },
        Err(ProviderError::Unreachable { host, reason }) if fence => {
            tracing::warn!(%instance, %host, %reason, "{}", crate::events::FENCED_UNREACHABLE);
            ProviderResult::Stopped { req, instance, machine, fenced: true }
        }
        Err(e) => ProviderResult::Failed { req, instance, machine, error: e.to_string() },
    }
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

/// The `jujud` arguments of an instance a manager starts: a manager
/// joining through `seeds`, or an agent finding managers there, with the
/// starting manager's timing preset.
pub fn instance_args(manager: bool, seeds: &[SocketAddr], preset: &str) -> Vec<String> {
    let (sub, seeds_flag) = if manager { ("peer", "--join") } else { ("agent", "--seeds") };
    [sub, seeds_flag, &seeds_arg(seeds), "--log-format", "json", "--preset", preset]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl Runner {
    /// The launch for a new manager or agent instance of `machine`.
    fn launch(
        &self,
        instance: &str,
        machine: &str,
        manager: bool,
        seeds: &[SocketAddr],
        host: Option<&str>,
        busy: &[String],
    ) -> Result<Launch, String> {
        let role = if manager { CertRole::Manager } else { CertRole::Agent };
        let token = self.record_token(role, machine)?;
        let args = instance_args(manager, seeds, self.preset);
        let env = vec![("JUJUD_TOKEN".to_string(), token.to_string())];
        Ok(Launch {
            name: instance.into(),
            machine: machine.into(),
            args,
            env,
            manager,
            host: host.map(str::to_string),
            busy: busy.to_vec(),
        })
    }

    /// Mints the instance's single-use token and records it durably (on
    /// the blocking pool: this waits for the driver's answer).
    fn record_token(&self, role: CertRole, machine: &str) -> Result<pki::JoinToken, String> {
        use crate::core::state::{Command as StateCommand, WriteResult, tokens::TokenSpec};
        for _ in 0..MAX_MINT_ATTEMPTS {
            let token = pki::issue_token(
                &self.cluster_secret,
                role,
                Some(machine),
                INSTANCE_TOKEN_TTL_SECS,
                unix_now(),
                &self.ca_fingerprint,
            )
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
            let cmd = super::driver::Command::Write {
                cmd: StateCommand::IssueTokens(vec![spec]),
                replicas: 0,
                timeout,
                reply,
            };
            self.commands
                .blocking_send(cmd)
                .map_err(|_| "the node is shutting down".to_string())?;
            match rx.blocking_recv() {
                Ok(WriteResult::Done(_)) => return Ok(token),
                Ok(WriteResult::Refused(r)) if r.starts_with("token id ") => continue,
                Ok(WriteResult::Refused(r)) => {
                    return Err(format!("could not record the instance's token: {r}"));
                }
                Err(_) => {
                    return Err("the node stopped before recording the instance's token".into());
                }
            }
        }
        Err("token ids kept colliding".into())
    }

    /// Runs `cmd` on the blocking pool and reports the result.
    pub fn execute(self: &Arc<Self>, cmd: ProviderCmd) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = this.run(&cmd);
            if this.inbox.blocking_send(Input::Provider(Box::new(result))).is_err() {
                tracing::warn!("driver gone; a provider result was dropped");
            }
        });
    }

    fn run(&self, cmd: &ProviderCmd) -> ProviderResult {
        match cmd {
            ProviderCmd::Start { req, provider, instance, machine, manager, seeds, host, busy } => {
                let failed = |error: String| ProviderResult::Failed {
                    req: *req,
                    instance: instance.clone(),
                    machine: machine.clone(),
                    error,
                };
                let launch =
                    match self.launch(instance, machine, *manager, seeds, host.as_deref(), busy) {
                        Ok(l) => l,
                        Err(e) => return failed(e),
                    };
                match open_for(provider, &self.ca_fingerprint).and_then(|p| p.start(&launch)) {
                    Ok(s) => {
                        tracing::info!(%instance, %machine, address = %s.address, existed = s.existed, "{}", crate::events::INSTANCE_STARTED);
                        ProviderResult::Started {
                            req: *req,
                            instance: instance.clone(),
                            machine: machine.clone(),
                            address: s.address.to_string(),
                            existed: s.existed,
                        }
                    }
                    Err(e) => failed(e.to_string()),
                }
            }
            ProviderCmd::Stop { req, provider, instance, machine, graceful, at, fence } => {
                let outcome = open_for(provider, &self.ca_fingerprint)
                    .and_then(|p| p.stop(instance, at.as_deref(), *graceful));
                if outcome.is_ok() {
                    tracing::info!(%instance, %machine, graceful, "instance stopped");
                }
                stop_result(*req, instance, machine, *fence, outcome)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Result<(), ProviderError> {
        Err(ProviderError::Unreachable { host: "10.0.0.1".into(), reason: "no answer".into() })
    }

    #[test]
    fn instances_run_with_the_starting_managers_preset() {
        let seeds = ["10.0.0.1:17070".parse().unwrap(), "10.0.0.2:17070".parse().unwrap()];
        assert_eq!(
            instance_args(true, &seeds, "wan"),
            [
                "peer",
                "--join",
                "10.0.0.1:17070,10.0.0.2:17070",
                "--log-format",
                "json",
                "--preset",
                "wan"
            ]
        );
        let agent = instance_args(false, &seeds[..1], "lan");
        assert_eq!(agent[..3], ["agent", "--seeds", "10.0.0.1:17070"]);
        assert_eq!(agent[5..], ["--preset", "lan"]);
    }

    #[test]
    fn a_launch_never_shows_its_token() {
        let l = Launch {
            name: "n".into(),
            machine: "m".into(),
            args: vec![],
            env: vec![("JUJUD_TOKEN".into(), "jjd1secret".into())],
            manager: false,
            host: None,
            busy: Vec::new(),
        };
        let d = format!("{l:?}");
        assert!(d.contains("JUJUD_TOKEN") && !d.contains("jjd1secret"), "{d}");
    }

    #[test]
    fn only_a_fencing_stop_of_an_unreachable_host_counts_as_stopped() {
        assert!(matches!(
            stop_result(1, "i", "m", true, unreachable()),
            ProviderResult::Stopped { fenced: true, .. }
        ));
        assert!(matches!(
            stop_result(1, "i", "m", false, unreachable()),
            ProviderResult::Failed { .. }
        ));
        let other = Err(ProviderError::Host { host: "h".into(), reason: "wrong key".into() });
        assert!(matches!(stop_result(1, "i", "m", true, other), ProviderResult::Failed { .. }));
        assert!(matches!(
            stop_result(1, "i", "m", true, Ok(())),
            ProviderResult::Stopped { fenced: false, .. }
        ));
    }
}
