//! Test harness for machine agents: runs real `jujud agent` processes, and
//! reads what the managers say about them through `juju status`.
//!
//! Owns agent process lifetimes (killed when the handle drops, taking their
//! workloads with them).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;

use super::{LogBook, field, juju, jujud_bin, message, spawn_logged};

/// One running `jujud agent`.
pub struct Agent {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub log: Arc<LogBook>,
    pub id: String,
    pub machine: String,
}

fn seeds_arg(seeds: &[SocketAddr]) -> String {
    seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

impl Agent {
    /// Starts `jujud agent` (`token`, if any, in `JUJUD_TOKEN`); waits for
    /// "agent starting".
    pub fn start(dir: &Path, seeds: &[SocketAddr], token: Option<&str>) -> Agent {
        let mut cmd = Command::new(jujud_bin());
        cmd.args(["agent", "--data-dir", dir.to_str().unwrap(), "--log-format", "json"]);
        if !seeds.is_empty() {
            cmd.args(["--seeds", &seeds_arg(seeds)]);
        }
        if let Some(t) = token {
            cmd.env(super::TOKEN_ENV, t);
        }
        let (child, log) = spawn_logged(cmd);
        log.wait_for(jujud::events::AGENT_STARTING, |l| {
            l.iter().any(|v| message(v) == jujud::events::AGENT_STARTING)
        });
        let start = log
            .snapshot()
            .into_iter()
            .rev()
            .find(|v| message(v) == jujud::events::AGENT_STARTING)
            .unwrap();
        Agent {
            child: Some(child),
            dir: dir.to_path_buf(),
            log,
            id: field(&start, "id"),
            machine: field(&start, "machine"),
        }
    }

    /// The manager of the newest session, once one is open.
    pub fn wait_session(&self, what: &str) -> String {
        self.log.wait_for(what, |l| {
            l.iter().any(|v| message(v) == jujud::events::AGENT_SESSION_OPENED)
        });
        self.session_manager().unwrap()
    }

    pub fn session_manager(&self) -> Option<String> {
        self.log
            .snapshot()
            .iter()
            .rev()
            .find(|v| message(v) == jujud::events::AGENT_SESSION_OPENED)
            .map(|v| field(v, "manager"))
    }

    /// How many times each unit's workload was started, so far.
    pub fn starts(&self, unit: &str) -> usize {
        self.log
            .snapshot()
            .iter()
            .filter(|v| message(v) == jujud::events::WORKLOAD_STARTED && field(v, "unit") == unit)
            .count()
    }

    pub fn sessions_opened(&self) -> usize {
        self.log
            .snapshot()
            .iter()
            .filter(|v| message(v) == jujud::events::AGENT_SESSION_OPENED)
            .count()
    }

    /// SIGKILL and reap.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // SAFETY: signalling our own child; SIGTERM lets it stop its workloads.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// Runs `jujud agent` expecting it to fail; returns its stderr.
pub fn agent_fails(dir: &Path, seeds: &[SocketAddr], token: Option<&str>) -> String {
    let mut cmd = Command::new(jujud_bin());
    cmd.args(["agent", "--data-dir", dir.to_str().unwrap()]);
    if !seeds.is_empty() {
        cmd.args(["--seeds", &seeds_arg(seeds)]);
    }
    if let Some(t) = token {
        cmd.env(super::TOKEN_ENV, t);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run jujud agent");
    assert!(!out.status.success(), "jujud agent unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `juju status --format json`, which must succeed.
pub fn status(client_file: &Path) -> Value {
    let out = juju(client_file, &["status", "--format", "json"]);
    assert!(out.status.success(), "juju status failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A unit's status text as the answering manager shows it.
pub fn unit_status(st: &Value, unit: &str) -> String {
    st["status"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == unit)
        .map_or(String::new(), |u| u["status"][0].as_str().unwrap_or("").to_string())
}

/// A machine's agent presence as the answering manager shows it.
pub fn presence(st: &Value, machine: &str) -> String {
    st["status"]["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == machine)
        .map_or(String::new(), |m| m["presence"].as_str().unwrap_or("").to_string())
}

/// Runs a change through `juju ... --format json` and returns its outcome.
pub fn change(client_file: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out: Output = juju(client_file, &all);
    assert!(out.status.success(), "juju {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `(machine, token)` pairs of a change's outcome.
pub fn tokens(outcome: &Value) -> Vec<(String, String)> {
    outcome["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
        .collect()
}

/// Polls `juju status` until `pred` holds (each poll is a real request;
/// the cap is only a failure bound).
pub fn wait_status(client_file: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    super::poll(what, || {
        let st = status(client_file);
        if pred(&st) { Ok(st) } else { Err(format!("status {st:#}")) }
    })
}
