//! Section 4, no duplicate instances under failure: in a fresh
//! `bootstrap --ha 3` environment, 100 `juju add-machine` calls, each to
//! one manager in turn (`--endpoint`), in parallel batches; the
//! provisioner's owner is SIGKILLed as the middle batch starts. A call that
//! fails is retried on the next manager, as a client would. Then, once
//! every machine's agent is alive: machines in `juju status`, agent
//! instance directories per machine, and what the clients were told.
//!
//! Owns the calls, the kill and the tallies. Must never hide a difference
//! between what clients were told and what exists (each side is listed),
//! and never wait without a cap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::env::{self, Env, Res, juju_at};

pub const MANAGERS: u32 = 3;
pub const BATCH: usize = 10;
/// Attempts per call (the first manager, then the next ones, in turn).
pub const ATTEMPTS: usize = 6;
/// Cap on every machine's agent being alive after the last call.
pub const SETTLE_CAP_MS: u64 = 240_000;
/// Pause between two status probes while settling.
pub const SETTLE_PROBE_MS: u64 = 500;
const CONTROLLER_JOB: &str = "manage-environ";

/// One attempt of one call.
pub struct Attempt {
    pub endpoint: SocketAddr,
    /// The machines the client was told were added, or the error.
    pub result: Result<Vec<String>, String>,
}

/// What the section found.
pub struct Tally {
    pub calls: usize,
    pub victim: String,
    pub victim_addr: SocketAddr,
    pub kill_after_ms: f64,
    pub attempts: Vec<Vec<Attempt>>,
    /// Machines the clients were told about.
    pub told: BTreeSet<String>,
    /// Non-controller machines in `juju status` at the end.
    pub listed: BTreeSet<String>,
    /// Agent instance directories per machine.
    pub instances: BTreeMap<String, usize>,
    /// Listed machines whose agent is alive.
    pub alive: usize,
    /// Agent instances whose process runs.
    pub running: usize,
    pub settle_ms: f64,
    pub managers_alive: usize,
    /// Why the environment did not settle within the cap, if it did not.
    pub unsettled: Option<String>,
}

impl Tally {
    pub fn duplicated(&self) -> Vec<(&String, &usize)> {
        self.instances.iter().filter(|(_, n)| **n > 1).collect()
    }

    pub fn agent_instances(&self) -> usize {
        self.instances.values().sum()
    }
}

pub fn run(root: PathBuf, calls: usize) -> env::Ended<Tally> {
    env::run_env(root, MANAGERS, |env| measure(env, calls))
}

/// One call: `add-machine` to `endpoints[first]`, then the next ones.
fn call(root: &Path, endpoints: &[SocketAddr], first: usize) -> Vec<Attempt> {
    let mut out = Vec::new();
    for k in 0..ATTEMPTS {
        let endpoint = endpoints[(first + k) % endpoints.len()];
        let result = juju_at(
            root,
            &["add-machine", "--endpoint", &endpoint.to_string(), "--format", "json"],
        )
        .and_then(|o| {
            if !o.status.success() {
                return Err(String::from_utf8_lossy(&o.stderr).trim().to_owned());
            }
            let v: Value =
                serde_json::from_slice(&o.stdout).map_err(|e| format!("not JSON: {e}"))?;
            Ok(v["machines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect())
        });
        let ok = result.is_ok();
        out.push(Attempt { endpoint, result });
        if ok {
            break;
        }
    }
    out
}

fn measure(env: &mut Env, calls: usize) -> Res<Tally> {
    let (owners, mut managers) = env.agreed(MANAGERS as usize)?;
    managers.sort_by_key(|m| m.addr);
    let endpoints: Vec<SocketAddr> = managers.iter().map(|m| m.addr).collect();
    let owner = owners.get("provisioner").ok_or("no provisioner owner")?;
    let victim =
        env.instance_at(managers.iter().find(|m| &m.id == owner).ok_or("owner not alive")?.addr)?;
    let kill_batch = calls.div_ceil(BATCH) / 2;
    let t_start = SystemTime::now();
    let mut attempts = Vec::new();
    let mut t_kill = None;
    for b in 0..calls.div_ceil(BATCH) {
        let handles: Vec<_> = (b * BATCH..((b + 1) * BATCH).min(calls))
            .map(|i| {
                let (root, eps) = (env.root.clone(), endpoints.clone());
                std::thread::spawn(move || call(&root, &eps, i % eps.len()))
            })
            .collect();
        if b == kill_batch {
            t_kill = Some(env.kill(&victim)?);
        }
        for h in handles {
            attempts.push(h.join().map_err(|_| "a call thread panicked")?);
        }
    }
    let kill_after_ms = t_kill
        .and_then(|t| t.duration_since(t_start).ok())
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let told: BTreeSet<String> = attempts
        .iter()
        .flatten()
        .filter_map(|a| a.result.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let settle = Instant::now();
    let (st, why_not) = settled(env, told.len());
    if why_not.is_some() {
        env::keep_logs(&env.root);
    }
    let settle_ms = settle.elapsed().as_secs_f64() * 1e3;
    env.log.pump();
    let mut t = tally(env, &st);
    (
        t.calls,
        t.victim,
        t.victim_addr,
        t.kill_after_ms,
        t.attempts,
        t.told,
        t.settle_ms,
        t.unsettled,
    ) = (calls, victim.name, victim.address, kill_after_ms, attempts, told, settle_ms, why_not);
    Ok(t)
}

/// Polls `juju status` until at least `want` non-controller machines are
/// listed, each with an instance and its agent alive, and the managers are
/// back to three; returns the last status, and why it is not settled.
fn settled(env: &Env, want: usize) -> (Value, Option<String>) {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_CAP_MS);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(st) = env.json(&["status"]) {
            let ms = workers(&st);
            let ready = ms.len() >= want
                && ms.iter().all(|m| {
                    m["presence"] == "alive"
                        && !m["instance"].as_array().is_none_or(|a| a.is_empty())
                });
            if ready && env::alive_managers(&st).len() == MANAGERS as usize {
                return (st, None);
            }
            last = st;
        }
        std::thread::sleep(Duration::from_millis(SETTLE_PROBE_MS));
    }
    let ms = workers(&last);
    let stuck: Vec<String> = ms
        .iter()
        .filter(|m| {
            m["presence"] != "alive" || m["instance"].as_array().is_none_or(|a| a.is_empty())
        })
        .map(|m| {
            format!(
                "{} ({}, instance {})",
                m["id"].as_str().unwrap_or("?"),
                m["presence"].as_str().unwrap_or("?"),
                m["instance"]
            )
        })
        .collect();
    let why = format!(
        "not settled within {SETTLE_CAP_MS} ms: {} managers alive; machines not ready: {stuck:?}",
        env::alive_managers(&last).len()
    );
    (last, Some(why))
}

/// The non-controller machines of a status answer.
fn workers(st: &Value) -> Vec<&Value> {
    let all: Vec<&Value> =
        st["status"]["machines"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    all.into_iter()
        .filter(|m| !m["jobs"].as_array().is_some_and(|j| j.iter().any(|x| x == CONTROLLER_JOB)))
        .collect()
}

fn tally(env: &Env, st: &Value) -> Tally {
    let ms = workers(st);
    let listed: BTreeSet<String> =
        ms.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect();
    let alive = ms.iter().filter(|m| m["presence"] == "alive").count();
    let all = st["status"]["machines"].as_array().cloned().unwrap_or_default();
    let controllers: BTreeSet<&str> =
        all.iter().filter(|m| !workers_has(&ms, m)).filter_map(|m| m["id"].as_str()).collect();
    let mut instances = BTreeMap::new();
    let mut running = 0;
    for i in env
        .instances()
        .iter()
        .filter(|i| i.machine != "bootstrap" && !controllers.contains(i.machine.as_str()))
    {
        // A manager replaced by the HA keeper leaves a dead controller
        // machine, no longer listed: its instance is not an agent's.
        if i.name.starts_with("m-") && is_manager(env, &i.name) {
            continue;
        }
        *instances.entry(i.machine.clone()).or_insert(0) += 1;
        running += usize::from(Env::running(i));
    }
    let managers_alive = env::alive_managers(st).len();
    Tally {
        calls: 0,
        victim: String::new(),
        victim_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        kill_after_ms: f64::NAN,
        attempts: Vec::new(),
        told: BTreeSet::new(),
        listed,
        instances,
        alive,
        running,
        settle_ms: 0.0,
        managers_alive,
        unsettled: None,
    }
}

fn workers_has(ms: &[&Value], m: &Value) -> bool {
    ms.iter().any(|w| w["id"] == m["id"])
}

/// Whether instance `name` runs (or ran) a manager: its log says so.
fn is_manager(env: &Env, name: &str) -> bool {
    env.log.log.iter().any(|e| e.msg == env::MSG_MANAGER && env.log.name(e.who) == name)
}
