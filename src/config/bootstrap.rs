//! The flags `juju bootstrap` passes to the first manager it starts
//! through a provider: the provider's settings, the desired number of
//! managers, and the manager's own instance name. They matter only when
//! the data dir is new (the manager creates the cluster); a restarted
//! manager ignores them.
//!
//! Owns those flags' names and checks. Must never read the environment.

use std::path::PathBuf;

use super::ConfigError;

/// Flags of the bootstrap manager (hidden from `--help`: `juju bootstrap`
/// sets them).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapArgs {
    /// The local provider's root (enables provisioning and HA).
    #[arg(long, value_name = "DIR", hide = true)]
    pub provider_root: Option<PathBuf>,
    /// This manager's own instance name under the provider.
    #[arg(long, value_name = "NAME", hide = true, requires = "provider_root")]
    pub bootstrap_instance: Option<String>,
    /// The desired number of managers from the start.
    #[arg(long, value_name = "N", hide = true, requires = "provider_root")]
    pub ha_desired: Option<u32>,
    /// The provider: `local` (the default; the root is a directory) or
    /// `ssh` (the root is the cloud's name, the pool comes in a file).
    #[arg(long, value_name = "KIND", hide = true, requires = "provider_root")]
    pub provider_kind: Option<String>,
    /// For `ssh`: a 0600 JSON file of the pool's `[address, entry]` pairs,
    /// read once and deleted (it holds private keys).
    #[arg(long, value_name = "FILE", hide = true, requires = "provider_root")]
    pub provider_hosts_file: Option<PathBuf>,
    /// For `ssh`: where this manager's own instance runs (its address).
    #[arg(long, value_name = "ADDR", hide = true, requires = "provider_root")]
    pub instance_at: Option<String>,
}

/// The checked bootstrap settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapConfig {
    pub provider_root: PathBuf,
    pub instance: String,
    pub desired: u32,
    /// `local` or `ssh`.
    pub kind: String,
    pub hosts_file: Option<PathBuf>,
    pub instance_at: Option<String>,
}

impl BootstrapArgs {
    pub fn resolve(&self) -> Result<Option<BootstrapConfig>, ConfigError> {
        let Some(root) = &self.provider_root else { return Ok(None) };
        let desired = self.ha_desired.unwrap_or(1);
        if !(1..=crate::core::state::controllers::MAX_MANAGERS).contains(&desired) {
            return Err(ConfigError::InvalidValue {
                field: "ha_desired",
                value: desired.to_string(),
                origin: "flag --ha-desired".into(),
                expected: "1 to 7",
            });
        }
        let kind = self.provider_kind.clone().unwrap_or_else(|| "local".into());
        if kind != "local" && kind != "ssh" {
            return Err(ConfigError::InvalidValue {
                field: "provider_kind",
                value: kind,
                origin: "flag --provider-kind".into(),
                expected: "local or ssh",
            });
        }
        if kind == "ssh" && self.provider_hosts_file.is_none() {
            return Err(ConfigError::InvalidValue {
                field: "provider_hosts_file",
                value: String::new(),
                origin: "flag --provider-hosts-file".into(),
                expected: "the pool's hosts file (the ssh provider needs one)",
            });
        }
        Ok(Some(BootstrapConfig {
            provider_root: root.clone(),
            instance: self.bootstrap_instance.clone().unwrap_or_else(|| "controller-0".into()),
            desired,
            kind,
            hosts_file: self.provider_hosts_file.clone(),
            instance_at: self.instance_at.clone(),
        }))
    }
}
