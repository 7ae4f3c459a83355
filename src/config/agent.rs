//! The flags of `jujud agent`, mapped onto the peer configuration so that
//! an agent takes its settings from the same layers as a manager (flag >
//! TOML file > `JUJUD_*` variable > preset): `--seeds` is the agent's
//! `join`, and it listens on an OS-chosen loopback port unless told.
//!
//! Owns only the agent's flag names and defaults. Must never read the
//! environment itself (the caller passes an env source).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use super::{ConfigError, EnvSource, PeerArgs, PeerConfig, Preset, TimingArgs, resolve};
use crate::logging::LogFormat;

/// Where an agent listens when no address is configured: any free port.
pub const DEFAULT_AGENT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// The flags of `jujud agent`.
#[derive(clap::Args, Clone, Default, PartialEq, Eq)]
pub struct AgentArgs {
    /// Directory for this agent's identity, certificate, agent.conf and
    /// units (required).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Managers to find the cluster through, comma separated or repeated
    /// (added to those remembered in DIR/agent.conf).
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub seeds: Vec<SocketAddr>,
    /// Refused: a token on the command line is visible to every local
    /// user. Kept (hidden) only to say so clearly.
    #[arg(long, value_name = "TOKEN", hide = true)]
    pub token: Option<String>,
    /// The machine's join token (needed only the first time), read from
    /// FILE (mode 0600, as `juju add-machine` writes it) or standard input
    /// with `-`. Or set JUJUD_TOKEN, or `token` in --config.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Address to listen on for QUIC [default: 127.0.0.1:0, any free port].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address other members should dial [default: the listen address].
    #[arg(long, value_name = "IP:PORT")]
    pub advertise: Option<SocketAddr>,
    /// TOML config file (same keys as `jujud peer`'s; `join` is the seeds).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Timing preset [default: lan].
    #[arg(long, value_name = "NAME")]
    pub preset: Option<Preset>,
    /// Log line format [default: human].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Write the log to this file instead of stderr, rotated past 16 MiB
    /// (two older files kept) [default: stderr].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics over HTTP on this address [default: off].
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub timing: TimingArgs,
}

impl AgentArgs {
    /// Merges the layers exactly as `jujud peer` does.
    pub fn resolve(&self, env: EnvSource<'_>) -> Result<PeerConfig, ConfigError> {
        let peer = PeerArgs {
            data_dir: self.data_dir.clone(),
            listen: self.listen.or_else(|| {
                env(&super::env_var_name("listen")).is_none().then_some(DEFAULT_AGENT_LISTEN)
            }),
            advertise: self.advertise,
            join: self.seeds.clone(),
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            config: self.config.clone(),
            preset: self.preset,
            log_format: self.log_format,
            log_file: self.log_file.clone(),
            metrics_listen: self.metrics_listen,
            dashboard_listen: None,
            timing: self.timing.clone(),
            bootstrap: Default::default(),
        };
        resolve(&peer, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_become_join_and_the_default_port_is_any() {
        let args = AgentArgs {
            data_dir: Some("/tmp/a".into()),
            seeds: vec!["127.0.0.1:7070".parse().unwrap(), "127.0.0.1:7070".parse().unwrap()],
            ..Default::default()
        };
        let cfg = args.resolve(&|_| None).unwrap();
        assert_eq!(cfg.join, vec!["127.0.0.1:7070".parse::<SocketAddr>().unwrap()]);
        assert_eq!(cfg.listen, DEFAULT_AGENT_LISTEN);
        let from_env =
            args.resolve(&|k| (k == "JUJUD_LISTEN").then(|| "127.0.0.2:9".to_string())).unwrap();
        assert_eq!(from_env.listen.port(), 9, "an environment listen beats the agent default");
    }
}
