//! `agent.conf` in an agent's data dir: the addresses of the live managers
//! as the agent last saw them, so that after a restart it finds the cluster
//! again even if every address it was first given is gone.
//!
//! Owns the file's format and its checks. Must never write an empty list
//! (an empty or unusable set never replaces a good one), and never panic
//! on a file that is missing, empty, truncated or not ours.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Version of the file's layout.
pub const AGENT_CONF_FORMAT: u32 = 1;
/// The file's name in the data dir.
pub const AGENT_CONF_FILE: &str = "agent.conf";
/// Largest agent.conf read.
pub const MAX_AGENT_CONF_BYTES: u64 = 64 << 10;
/// Most addresses kept.
pub const MAX_AGENT_CONF_MANAGERS: usize = 64;

/// Why agent.conf could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfError {
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{0} is empty")]
    Empty(String),
    #[error("{path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{0} names no manager")]
    NoManagers(String),
    #[error("refusing to write an agent.conf without managers")]
    WouldBeEmpty,
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// The file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConf {
    pub format: u32,
    /// Live managers' addresses, sorted.
    pub managers: Vec<SocketAddr>,
}

impl AgentConf {
    pub fn new(mut managers: Vec<SocketAddr>) -> AgentConf {
        managers.sort();
        managers.dedup();
        managers.truncate(MAX_AGENT_CONF_MANAGERS);
        AgentConf { format: AGENT_CONF_FORMAT, managers }
    }

    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<AgentConf, AgentConfError> {
        let name = path.display().to_string();
        let corrupt = |reason: String| AgentConfError::Corrupt { path: name.clone(), reason };
        let meta = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(AgentConfError::Missing(name)),
            Err(e) => return Err(corrupt(e.to_string())),
            Ok(m) => m,
        };
        if meta.len() > MAX_AGENT_CONF_BYTES {
            return Err(corrupt(format!("{} bytes is over the {MAX_AGENT_CONF_BYTES}-byte limit", meta.len())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| corrupt(e.to_string()))?;
        if text.trim().is_empty() {
            return Err(AgentConfError::Empty(name));
        }
        let conf: AgentConf = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if conf.format != AGENT_CONF_FORMAT {
            return Err(corrupt(format!("layout version {} (this jujud reads {AGENT_CONF_FORMAT})", conf.format)));
        }
        if conf.managers.is_empty() {
            return Err(AgentConfError::NoManagers(name));
        }
        Ok(conf)
    }

    /// Writes the file atomically; an empty list is refused.
    pub fn save(&self, path: &Path) -> Result<(), AgentConfError> {
        if self.managers.is_empty() {
            return Err(AgentConfError::WouldBeEmpty);
        }
        let text = serde_json::to_string_pretty(self).expect("agent.conf encodes");
        super::datadir::write_atomic(path, text.as_bytes())
            .map_err(|e| AgentConfError::Write { path: path.display().to_string(), reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_empty_missing_truncated_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AGENT_CONF_FILE);
        assert!(matches!(AgentConf::load(&path), Err(AgentConfError::Missing(_))));
        let conf = AgentConf::new(vec!["127.0.0.1:2".parse().unwrap(), "127.0.0.1:1".parse().unwrap()]);
        conf.save(&path).unwrap();
        assert_eq!(AgentConf::load(&path).unwrap(), conf);
        assert_eq!(conf.managers[0].port(), 1, "sorted");
        assert!(matches!(AgentConf::new(vec![]).save(&path), Err(AgentConfError::WouldBeEmpty)));
        assert_eq!(AgentConf::load(&path).unwrap(), conf, "a refused write leaves the good file");
        let full = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(matches!(AgentConf::load(&path), Err(AgentConfError::Corrupt { .. })));
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(AgentConf::load(&path), Err(AgentConfError::Empty(_))));
        std::fs::write(&path, r#"{"format":1,"managers":[]}"#).unwrap();
        assert!(matches!(AgentConf::load(&path), Err(AgentConfError::NoManagers(_))));
        std::fs::write(&path, r#"{"format":9,"managers":["127.0.0.1:1"]}"#).unwrap();
        assert!(matches!(AgentConf::load(&path), Err(AgentConfError::Corrupt { .. })));
    }
}
