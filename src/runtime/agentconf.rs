//! `agent.conf` in an agent's data dir: the addresses of the live managers
//! as the agent last saw them, so that after a restart it finds the cluster
//! again even if every address it was first given is gone.
//!
//! Owns the file's format, its checks, and the order of its writes. Must
//! never write an empty list (an empty or unusable set never replaces a good
//! one), never let an older list overwrite a newer one, and never panic on a
//! file that is missing, empty, truncated or not ours.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentConfError::Missing(name));
            }
            Err(e) => return Err(corrupt(e.to_string())),
            Ok(m) => m,
        };
        if meta.len() > MAX_AGENT_CONF_BYTES {
            return Err(corrupt(format!(
                "{} bytes is over the {MAX_AGENT_CONF_BYTES}-byte limit",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| corrupt(e.to_string()))?;
        if text.trim().is_empty() {
            return Err(AgentConfError::Empty(name));
        }
        let conf: AgentConf = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if conf.format != AGENT_CONF_FORMAT {
            return Err(corrupt(format!(
                "layout version {} (this jujud reads {AGENT_CONF_FORMAT})",
                conf.format
            )));
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
        super::datadir::write_atomic(path, text.as_bytes()).map_err(|e| AgentConfError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// Writes agent.conf from the blocking pool, one write at a time and the
/// newest list winning. The driver takes a [`ConfWriter::ticket`] when the
/// live managers change (in its order) and writes on another thread; two
/// writes in flight at once would share the temporary file, and the older
/// list could land last (a manager lost and back within one slow fsync).
pub struct ConfWriter {
    path: PathBuf,
    /// The newest ticket handed out.
    issued: AtomicU64,
    /// The newest ticket written; held during a write, so writes never overlap.
    written: Mutex<u64>,
}

impl ConfWriter {
    pub fn new(path: PathBuf) -> ConfWriter {
        ConfWriter { path, issued: AtomicU64::new(0), written: Mutex::new(0) }
    }

    /// A ticket for the list about to be written; later tickets win.
    pub fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Writes `managers` for `ticket`, unless a newer ticket was written
    /// already; returns whether it wrote. Blocks while another write runs.
    pub fn write(&self, ticket: u64, managers: Vec<SocketAddr>) -> Result<bool, AgentConfError> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if ticket <= *written {
            return Ok(false);
        }
        AgentConf::new(managers).save(&self.path)?;
        *written = ticket;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_list_written_last_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let w = std::sync::Arc::new(ConfWriter::new(dir.path().join(AGENT_CONF_FILE)));
        let list =
            |n: u16| (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect::<Vec<_>>();
        let (older, newer) = (w.ticket(), w.ticket());
        assert!(w.write(newer, list(3)).unwrap());
        assert!(
            !w.write(older, list(1)).unwrap(),
            "the older list arrived last and must be skipped"
        );
        assert_eq!(AgentConf::load(&w.path).unwrap().managers, list(3));
        // Many writers at once, in any order: the file is whole and holds
        // the newest ticket's list.
        let tickets: Vec<u64> = (0..16).map(|_| w.ticket()).collect();
        let newest = *tickets.last().unwrap();
        let threads: Vec<_> = tickets
            .into_iter()
            .rev()
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || w.write(t, list((t % 7 + 1) as u16)).unwrap())
            })
            .collect();
        threads.into_iter().for_each(|t| _ = t.join().unwrap());
        assert_eq!(AgentConf::load(&w.path).unwrap().managers, list((newest % 7 + 1) as u16));
    }

    #[test]
    fn round_trips_and_refuses_empty_missing_truncated_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AGENT_CONF_FILE);
        assert!(matches!(AgentConf::load(&path), Err(AgentConfError::Missing(_))));
        let conf =
            AgentConf::new(vec!["127.0.0.1:2".parse().unwrap(), "127.0.0.1:1".parse().unwrap()]);
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
