//! Machine agents, sans-IO: what an agent is assigned (the units on its
//! machine), what it reports back (machine and unit status), the session
//! messages that carry both, the rendezvous choice of a manager, and the
//! supervision of workloads.
//!
//! Owns the vocabulary between an agent and the manager serving it. Must
//! never spawn a process, open a connection or read a clock: the runtime
//! (or the simulator) carries out [`WorkloadCmd`]s and sessions, and feeds
//! back [`WorkloadEvent`]s and session events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod choice;
pub mod role;
pub mod serve;
pub mod supervisor;

#[cfg(test)]
mod tests;

/// Largest session message accepted (an assignment of many units fits).
pub const MAX_SESSION_MSG_BYTES: usize = 1 << 20;
/// Most units one machine runs; more assigned units are not started, and
/// the agent reports it.
pub const MAX_UNITS_PER_MACHINE: usize = 256;
/// Longest status text kept or sent, in bytes; longer text is cut.
pub const MAX_STATUS_BYTES: usize = 512;

/// One unit an agent must run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSpec {
    /// `app/n`.
    pub unit: String,
    pub app: String,
    /// The workload command, run with `sh -c`.
    pub command: String,
    /// The application's config, handed to the workload as environment.
    pub config: BTreeMap<String, String>,
}

impl UnitSpec {
    /// A digest of everything that, when changed, restarts the workload.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        h.eat(self.command.as_bytes());
        for (k, v) in &self.config {
            h.eat(&[0]);
            h.eat(k.as_bytes());
            h.eat(&[1]);
            h.eat(v.as_bytes());
        }
        h.0
    }

    /// The environment the workload sees: `JUJU_UNIT`, `JUJU_APP`, and
    /// `JUJU_CONFIG_<KEY>` per config key (upper case, `.` and `-` as `_`).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("JUJU_UNIT".to_string(), self.unit.clone()),
            ("JUJU_APP".to_string(), self.app.clone()),
        ];
        for (k, v) in &self.config {
            let name: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                .collect();
            env.push((format!("JUJU_CONFIG_{name}"), v.clone()));
        }
        env
    }
}

/// Everything a machine must run, as one manager sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    pub machine: String,
    /// Sorted by unit.
    pub units: Vec<UnitSpec>,
}

impl Assignments {
    /// A digest of the whole assignment, to send only what changed.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        h.eat(self.machine.as_bytes());
        for u in &self.units {
            h.eat(u.unit.as_bytes());
            h.eat(&u.digest().to_le_bytes());
        }
        h.0
    }
}

/// What an agent tells its manager: its machine's status and, for each
/// unit whose status changed, the new status text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The machine status (for instance `started`), if it changed.
    pub machine_status: Option<String>,
    /// The address the agent is reachable at, if it changed.
    pub address: Option<String>,
    /// `(unit, status)` for every unit whose status changed.
    pub units: Vec<(String, String)>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.machine_status.is_none() && self.address.is_none() && self.units.is_empty()
    }
}

/// What travels on an agent session, in either direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionMsg {
    /// Manager to agent: the machine's assignments (whole, when changed).
    Assign(Assignments),
    /// Agent to manager: status changes.
    Report(Report),
    /// Manager to agent: the session is refused, with the reason; `gone`
    /// when the machine was removed (the agent stops its workloads).
    Refused { reason: String, gone: bool },
    /// Manager to agent, as the only message of a session it will not
    /// open now (its login rate limit): try again after `retry_after_ms`.
    Busy { retry_after_ms: u64 },
}

fn msg_cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_SESSION_MSG_BYTES>()
}

/// Encodes a session message for the wire.
pub fn encode_msg(msg: &SessionMsg) -> Vec<u8> {
    bincode::serde::encode_to_vec(msg, msg_cfg()).expect("session messages always encode")
}

/// Decodes a session message; trailing bytes are refused.
pub fn decode_msg(bytes: &[u8]) -> Result<SessionMsg, String> {
    if bytes.len() > MAX_SESSION_MSG_BYTES {
        return Err(format!(
            "{} bytes is over the {MAX_SESSION_MSG_BYTES}-byte limit",
            bytes.len()
        ));
    }
    crate::core::codec::decode_exact_bounded(bytes, MAX_SESSION_MSG_BYTES)
        .map_err(|e| e.to_string())
}

/// Cuts `text` to [`MAX_STATUS_BYTES`] on a character boundary.
pub fn clip_status(text: &str) -> String {
    if text.len() <= MAX_STATUS_BYTES {
        return text.to_string();
    }
    let mut end = MAX_STATUS_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// What the driver must do with a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadCmd {
    /// Start run `run` of `unit`: `sh -c command` with `env`.
    Start { unit: String, run: u64, command: String, env: Vec<(String, String)> },
    /// Stop run `run` of `unit` (SIGTERM, then SIGKILL after a grace).
    Stop { unit: String, run: u64 },
}

/// What became of a workload, reported by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadEvent {
    /// Run `run` of `unit` is running as process `pid`.
    Started { unit: String, run: u64, pid: u32 },
    /// Run `run` of `unit` ended: its exit code, or the signal that ended it.
    Exited { unit: String, run: u64, code: Option<i32>, signal: Option<i32> },
    /// Run `run` of `unit` could not be started at all.
    SpawnFailed { unit: String, run: u64, error: String },
    /// The workload of run `run` set its own status message.
    Message { unit: String, run: u64, text: String },
}

impl WorkloadEvent {
    pub fn unit(&self) -> &str {
        match self {
            WorkloadEvent::Started { unit, .. }
            | WorkloadEvent::Exited { unit, .. }
            | WorkloadEvent::SpawnFailed { unit, .. }
            | WorkloadEvent::Message { unit, .. } => unit,
        }
    }
}

/// FNV-1a, for digests that must be equal on every machine and build.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
