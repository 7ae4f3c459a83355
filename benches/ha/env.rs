//! One environment of the HA benchmark, made and ended with the real CLI:
//! `juju bootstrap --ha N --root DIR` (timed), `juju ...` with `JUJUD_ROOT`,
//! the instances the local provider recorded, their logs (followed), SIGKILL
//! of one instance, and `juju destroy --root DIR` with a check that no
//! process of the environment outlives it.
//!
//! Owns the environment's lifetime: [`run_env`] destroys it at the end of
//! every round, on error paths and panics too (instances are detached and
//! would leak). Must never
//! signal a process that is not one of its own instances (or, after
//! destroy, a leftover whose command line names its root), and never wait
//! without a cap.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use jujud::runtime::provider::local::{Instance, LocalProvider, start_ticks};
use serde_json::Value;

use crate::common::Ev;

/// What every manager agreed on: singleton owners by name, and the managers.
type Agreement = (BTreeMap<String, String>, Vec<Manager>);
use crate::common::follow::Follower;

pub type Res<T> = Result<T, String>;

/// Cap on the managers agreeing (alive count and owners) after a change.
pub const AGREE_TIMEOUT_MS: u64 = 30_000;
/// How long leftovers may take to die after `juju destroy` (SIGKILL is
/// delivered asynchronously) before they count as leaked.
pub const LEAK_WAIT_MS: u64 = 3_000;
/// Pause between two probes of a condition only a request can answer.
pub const PROBE_INTERVAL_MS: u64 = 100;
/// Probes of one endpoint in flight at once: a probe of an address where
/// nothing listens yet takes the client's whole idle timeout to fail, so
/// they overlap to keep the first answer's time within one interval.
pub const PROBES_IN_FLIGHT: usize = 8;

/// Log messages the benchmark follows.
pub const MSG_DOWN: &str = jujud::events::MEMBER_DOWN;
pub const MSG_UP: &str = jujud::events::MEMBER_UP;
pub const MSG_ACQUIRED: &str = jujud::events::SINGLETON_ACQUIRED;
pub const MSG_STARTED: &str = jujud::events::INSTANCE_STARTED;
pub const MSG_HEAL: &str = jujud::events::MANAGER_REPLACED;
pub const MSG_MANAGER: &str = jujud::events::MANAGER_STARTING;

/// Runs `juju ARGS` against the environment under `root`.
pub fn juju_at(root: &Path, args: &[&str]) -> Res<Output> {
    Command::new(env!("CARGO_BIN_EXE_juju"))
        .env("JUJUD_ROOT", root)
        .args(args)
        .output()
        .map_err(|e| format!("juju: {e}"))
}

/// A manager as the managers agree on it.
#[derive(Clone, Debug)]
pub struct Manager {
    pub id: String,
    pub addr: SocketAddr,
}

/// What `juju destroy` left behind.
pub struct Teardown {
    pub took: Duration,
    /// What destroy said it stopped.
    pub said: String,
    /// Processes naming the root still running `LEAK_WAIT_MS` after destroy
    /// (then killed by the benchmark): `pid cmdline`.
    pub leaked: Vec<String>,
}

/// A bootstrapped environment, as a round sees it (see [`run_env`]).
pub struct Env {
    pub root: PathBuf,
    pub log: Follower,
}

/// What one round in one environment gave.
pub struct Ended<T> {
    pub value: Res<T>,
    /// How long `juju bootstrap` took (it returns once all are alive).
    pub bootstrap: Option<Duration>,
    /// The 1-minute load average when the round started.
    pub load1: f64,
    /// Duplicate starts the provider refused in this environment.
    pub refused: usize,
    pub teardown: Res<Teardown>,
}

/// Destroys the root when dropped unless disarmed (a panicking round).
struct Guard<'a>(&'a Path, bool);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = teardown(self.0);
        }
    }
}

/// Bootstraps `ha` managers under `root` (which must not exist), runs `f`
/// in that environment, and destroys it whatever happened.
pub fn run_env<T>(root: PathBuf, ha: u32, f: impl FnOnce(&mut Env) -> Res<T>) -> Ended<T> {
    let load1 = crate::common::load1();
    let mut guard = Guard(&root, true);
    let t = Instant::now();
    let out =
        juju_at(&root, &["bootstrap", "--ha", &ha.to_string(), "--root", &root.to_string_lossy()]);
    let took = t.elapsed();
    let (mut bootstrap, mut refused) = (None, 0);
    let value = match out {
        Ok(o) if o.status.success() => {
            bootstrap = Some(took);
            Follower::start(&root.join("instances")).and_then(|log| {
                let mut env = Env { root: root.clone(), log };
                let v = f(&mut env);
                refused = env.refused_starts();
                v
            })
        }
        Ok(o) => Err(format!(
            "juju bootstrap --ha {ha} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(e),
    };
    if value.is_err() {
        keep_logs(&root);
    }
    guard.1 = false;
    Ended { value, bootstrap, load1, refused, teardown: teardown(&root) }
}

/// Copies every instance's log out of a failed round's root (which destroy
/// removes) to `ROOT.logs/`, for diagnosis.
pub fn keep_logs(root: &Path) {
    let to = root.with_extension("logs");
    let Ok(dirs) = std::fs::read_dir(root.join("instances")) else { return };
    let _ = std::fs::create_dir_all(&to);
    for d in dirs.flatten() {
        let _ = std::fs::copy(
            d.path().join(crate::common::follow::LOG_FILE),
            to.join(format!("{}.log", d.file_name().to_string_lossy())),
        );
    }
    eprintln!("ha: logs of the failed round kept in {}", to.display());
}

impl Env {
    /// `juju ARGS`; its stdout when it succeeds.
    pub fn ok(&self, args: &[&str]) -> Res<String> {
        let out = juju_at(&self.root, args)?;
        if !out.status.success() {
            return Err(format!(
                "juju {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `juju ARGS --format json`, parsed.
    pub fn json(&self, args: &[&str]) -> Res<Value> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.ok(&all)?;
        serde_json::from_str(&out).map_err(|e| format!("juju {args:?}: not JSON: {e}"))
    }

    pub fn provider(&self) -> LocalProvider {
        LocalProvider::new(self.root.clone())
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.provider().list()
    }

    pub fn instance_at(&self, addr: SocketAddr) -> Res<Instance> {
        self.instances()
            .into_iter()
            .find(|i| i.address == addr)
            .ok_or_else(|| format!("no instance at {addr}"))
    }

    /// Whether the process of `i` still runs.
    pub fn running(i: &Instance) -> bool {
        start_ticks(i.pid) == Some(i.start_ticks)
    }

    /// SIGKILLs instance `i`; returns the instant just before the signal.
    pub fn kill(&self, i: &Instance) -> Res<SystemTime> {
        if !Env::running(i) {
            return Err(format!("instance {} (pid {}) is not running", i.name, i.pid));
        }
        let t0 = SystemTime::now();
        // SAFETY: kill(2) on our own instance, its start time just checked.
        if unsafe { libc::kill(i.pid, libc::SIGKILL) } != 0 {
            return Err(format!("kill {}: {}", i.pid, std::io::Error::last_os_error()));
        }
        Ok(t0)
    }

    /// Waits until every alive manager answers `show-controller` with
    /// `want` managers alive and the same singleton owners; returns the
    /// owners and the managers.
    pub fn agreed(&self, want: usize) -> Res<(BTreeMap<String, String>, Vec<Manager>)> {
        let deadline = Instant::now() + Duration::from_millis(AGREE_TIMEOUT_MS);
        let mut last = String::new();
        loop {
            match self.agreement(want) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "managers did not agree on {want} alive within {AGREE_TIMEOUT_MS} ms: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(PROBE_INTERVAL_MS));
        }
    }

    fn agreement(&self, want: usize) -> Res<Option<Agreement>> {
        let first = self.json(&["show-controller"])?;
        let managers = alive_managers(&first);
        if managers.len() != want {
            return Ok(None);
        }
        let mut owners = None;
        for m in &managers {
            let v = self.json(&["show-controller", "--endpoint", &m.addr.to_string()])?;
            let theirs = owners_of(&v);
            if alive_managers(&v).len() != want
                || v["controller"]["alive"].as_u64() != Some(want as u64)
            {
                return Ok(None);
            }
            if owners.as_ref().is_some_and(|o| *o != theirs) {
                return Ok(None);
            }
            owners = Some(theirs);
        }
        Ok(owners.map(|o| (o, managers)))
    }

    /// The node id each instance logged at its start, by instance name.
    pub fn node_ids(&mut self) -> BTreeMap<String, String> {
        self.log.pump();
        self.log
            .matching(|e| e.msg == MSG_MANAGER)
            .map(|e| (self.log.name(e.who), e.text("id")))
            .collect()
    }

    /// Duplicate starts the provider refused so far (`existed: true`).
    pub fn refused_starts(&mut self) -> usize {
        self.log.pump();
        self.log
            .matching(|e| e.msg == MSG_STARTED && e.fields["existed"] == Value::Bool(true))
            .count()
    }
}

/// The first event logged at or after `t0` matching `want`.
pub fn after(f: &Follower, t0: SystemTime, want: impl Fn(&Ev) -> bool) -> Option<&Ev> {
    f.log.iter().find(|e| e.stamp.is_some_and(|s| s >= t0) && want(e))
}

/// The first event of instance `name` logged at or after `t0` matching `want`.
pub fn after_by<'a>(
    f: &'a Follower,
    t0: SystemTime,
    name: &str,
    want: impl Fn(&Ev) -> bool,
) -> Option<&'a Ev> {
    after(f, t0, |e| want(e) && f.name(e.who) == name)
}

/// Milliseconds from `t0` to when `e` was logged.
pub fn ms_since(e: &Ev, t0: SystemTime) -> Option<f64> {
    Some(e.stamp?.duration_since(t0).ok()?.as_secs_f64() * 1e3)
}

/// When `juju status --endpoint addr` first answered (the instant the
/// answering probe returned), probing every `PROBE_INTERVAL_MS` with up to
/// `PROBES_IN_FLIGHT` probes at once, for at most `cap_ms`.
pub fn first_answer(root: &Path, addr: SocketAddr, cap_ms: u64) -> Res<SystemTime> {
    let deadline = Instant::now() + Duration::from_millis(cap_ms);
    let (tx, rx) = std::sync::mpsc::channel::<Option<SystemTime>>();
    let (mut in_flight, mut next) = (0usize, Instant::now());
    while Instant::now() < deadline {
        if in_flight < PROBES_IN_FLIGHT && Instant::now() >= next {
            let (tx, root, ep) = (tx.clone(), root.to_owned(), addr.to_string());
            std::thread::spawn(move || {
                let out = juju_at(&root, &["status", "--endpoint", &ep, "--format", "json"]);
                let answered = out.is_ok_and(|o| {
                    o.status.success()
                        && serde_json::from_slice::<Value>(&o.stdout)
                            .is_ok_and(|v| v["answered_by"].is_string())
                });
                let _ = tx.send(answered.then(SystemTime::now));
            });
            (in_flight, next) = (in_flight + 1, next + Duration::from_millis(PROBE_INTERVAL_MS));
        }
        // Until the next probe is due (or, with all in flight, the cap):
        // an answer ends the wait.
        let until = if in_flight < PROBES_IN_FLIGHT { next.min(deadline) } else { deadline };
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Some(at)) => return Ok(at),
            Ok(None) => in_flight -= 1,
            Err(_) => {}
        }
    }
    Err(format!("{addr} did not answer juju status within {cap_ms} ms"))
}

/// Managers alive in an answer's member list.
pub fn alive_managers(v: &Value) -> Vec<Manager> {
    let rows = v["members"].as_array().cloned().unwrap_or_default();
    rows.iter()
        .filter(|m| m["role"] == "manager" && m["state"] == "alive")
        .filter_map(|m| {
            Some(Manager {
                id: m["id"].as_str()?.to_owned(),
                addr: m["addr"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}

/// `controller.owners` of a show-controller answer: singleton -> node id.
pub fn owners_of(v: &Value) -> BTreeMap<String, String> {
    let rows = v["controller"]["owners"].as_array().cloned().unwrap_or_default();
    rows.iter()
        .filter_map(|o| Some((o[0].as_str()?.to_owned(), o[1].as_str()?.to_owned())))
        .collect()
}

/// Processes whose command line names `root`: `(pid, cmdline)`.
fn processes_under(root: &Path) -> Vec<(i32, String)> {
    let needle = root.to_string_lossy().into_owned();
    let Ok(proc) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv0 = raw.split(|b| *b == 0).next()?;
            Path::new(std::str::from_utf8(argv0).ok()?)
                .file_name()
                .is_some_and(|n| n == "jujud")
                .then_some(())?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(&needle).then(|| (pid, cmd.trim().to_owned()))
        })
        .collect()
}

/// Destroys the environment under `root` and checks that nothing of it
/// runs afterwards; kills (by pid) and reports what does.
fn teardown(root: &Path) -> Res<Teardown> {
    let t = Instant::now();
    let out = juju_at(root, &["destroy", "--root", &root.to_string_lossy()])?;
    let took = t.elapsed();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let deadline = Instant::now() + Duration::from_millis(LEAK_WAIT_MS);
    let mut left = processes_under(root);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(PROBE_INTERVAL_MS));
        left = processes_under(root);
    }
    for (pid, _) in &left {
        // SAFETY: a leftover of this benchmark's own environment (its
        // command line names the root), which destroy should have ended.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    if !out.status.success() {
        return Err(format!(
            "juju destroy failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Teardown { took, said, leaked: left.into_iter().map(|(p, c)| format!("{p} {c}")).collect() })
}
