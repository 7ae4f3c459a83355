//! Process plumbing of the agents benchmark: three `jujud peer` managers and
//! N `jujud agent` machine agents on loopback, their JSON logs turned into
//! timestamped events on one channel, and what those events say: who sees
//! whom alive, which manager holds each agent's session, how often each
//! workload was started.
//!
//! Owns the processes (killed when the fleet drops) and the views built from
//! their logs. Must never sleep to synchronise: every wait consumes events
//! until its condition holds, with a cap that is only a failure bound. Never
//! decides what a round measures (see `failover.rs` and `cost.rs`).

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use jujud::core::NodeId;
use jujud::core::agent::choice;
use serde_json::Value;

use crate::common::{self, Ev};

pub type Res<T> = Result<T, String>;

/// Managers in the fleet.
pub const MANAGERS: usize = 3;
/// Cap on forming the cluster, starting the agents, or settling again.
pub const FORM_TIMEOUT_MS: u64 = 90_000;
/// Agents started at once: the next batch starts once every agent of this
/// one has opened a session (or `BATCH_TIMEOUT_MS` passed), so the machine
/// is never asked for hundreds of handshakes and joins at the same moment.
pub const AGENT_BATCH: usize = 25;
/// Cap on one batch opening its sessions and the fleet going quiet; past it
/// the next batch starts anyway (the final settle wait still applies).
pub const BATCH_TIMEOUT_MS: u64 = 30_000;
/// The next batch also waits until no member was declared down and none
/// rejoined for this long: on this 2-core machine every agent shares the
/// CPU, and a batch started into the churn of the last one fed a flapping
/// storm (300 agents); on a real estate each agent has its own machine.
pub const BATCH_QUIET_MS: u64 = 3_000;
/// The application every agent runs one unit of.
pub const APP: &str = "idle";
/// Its workload: one process per unit that does nothing, for ever.
pub const WORKLOAD_CMD: &str = "exec sleep 2147483647";

/// Sets the processes' RUST_LOG instead of `info` (for diagnosis).
pub const RUST_LOG_OVERRIDE_VAR: &str = "AGENTS_BENCH_RUST_LOG";

/// Log messages the fleet follows.
pub const MSG_DOWN: &str = jujud::events::MEMBER_DOWN;
pub const MSG_SESSION: &str = jujud::events::AGENT_SESSION_OPENED;
pub const MSG_WORKLOAD_STARTED: &str = jujud::events::WORKLOAD_STARTED;
pub const MSG_WORKLOAD_EXITED: &str = jujud::events::WORKLOAD_EXITED;

/// One `jujud` process slot (restarted in place on its data dir).
pub struct Proc {
    pub dir: PathBuf,
    /// Managers listen on a fixed address; agents on their own loopback IP
    /// (`agent_listen`), any free port.
    pub addr: Option<SocketAddr>,
    /// The 16-hex node id, learnt from its "starting" line.
    pub id: String,
    pub generation: u64,
    pub started: bool,
    pub child: Option<Child>,
    /// Agents: the machine's join token (used on the first start only).
    pub token: String,
}

impl Proc {
    fn new(dir: PathBuf, addr: Option<SocketAddr>, token: String) -> Proc {
        Proc { dir, addr, id: String::new(), generation: 0, started: false, child: None, token }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

/// Managers, agents, and everything they have logged. Event `who` is the
/// manager's index, or `MANAGERS +` the agent's index.
pub struct Fleet {
    pub dir: PathBuf,
    pub managers: Vec<Proc>,
    pub agents: Vec<Proc>,
    join_token: String,
    tx: Sender<Ev>,
    rx: Receiver<Ev>,
    pub log: Vec<Ev>,
    /// (observer, member id) -> (alive, generation), from the latest event.
    view: HashMap<(usize, String), (bool, u64)>,
    /// Per agent: the manager of its newest session.
    pub session: Vec<Option<String>>,
    /// Per agent: workload starts and exits logged so far.
    pub starts: Vec<u64>,
    pub exits: Vec<u64>,
    /// When the last "member down" or rejoin line arrived (membership churn).
    last_churn: Option<Instant>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in self.managers.iter_mut().chain(self.agents.iter_mut()) {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn juju(client_file: &Path, args: &[&str]) -> Res<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_juju"))
        .arg("--client-config")
        .arg(client_file)
        .args(args)
        .args(["--format", "json"])
        .output()
        .map_err(|e| format!("juju: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "juju {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("juju {args:?}: not JSON: {e}"))
}

impl Fleet {
    /// Forms the managers, deploys one unit per agent and starts the agents;
    /// returns once every agent runs its workload on a session with its
    /// rendezvous-best manager.
    pub fn start(dir: &Path, agents: usize) -> Res<Fleet> {
        let (tx, rx) = mpsc::channel();
        let addrs = common::loopback_addrs(MANAGERS)?;
        let managers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Proc::new(dir.join(format!("m{i}")), Some(*a), String::new()))
            .collect();
        let mut f = Fleet {
            dir: dir.to_owned(),
            managers,
            agents: Vec::new(),
            join_token: String::new(),
            tx,
            rx,
            log: Vec::new(),
            view: HashMap::new(),
            session: vec![None; agents],
            starts: vec![0; agents],
            exits: vec![0; agents],
            last_churn: None,
        };
        f.spawn_manager(0, false)?;
        f.wait_or(FORM_TIMEOUT_MS, "the first manager to start", |f| f.managers[0].started)?;
        let path = f.managers[0].dir.join("join-token");
        f.join_token = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .trim()
            .to_owned();
        for i in 1..MANAGERS {
            f.spawn_manager(i, true)?;
        }
        f.wait_or(FORM_TIMEOUT_MS, "the managers to see each other", Fleet::managers_alive)?;
        for (j, token) in f.deploy(agents)?.into_iter().enumerate() {
            f.agents.push(Proc::new(dir.join(format!("a{j}")), None, token));
        }
        f.start_agents_in_batches(agents)?;
        f.wait_or(FORM_TIMEOUT_MS, "every agent running its workload on its best manager", |f| {
            f.settled() && f.starts.iter().all(|&s| s >= 1)
        })?;
        Ok(f)
    }

    /// Starts agents `AGENT_BATCH` at a time, each batch once the previous
    /// one's agents all hold a session (or `BATCH_TIMEOUT_MS` passed).
    /// Prints the time the whole fleet took to come up.
    fn start_agents_in_batches(&mut self, agents: usize) -> Res<()> {
        let t0 = Instant::now();
        let mut late = 0;
        for first in (0..agents).step_by(AGENT_BATCH) {
            let end = (first + AGENT_BATCH).min(agents);
            for j in first..end {
                self.spawn_agent(j)?;
            }
            let t = Instant::now();
            let sessions_open = self.wait_until(BATCH_TIMEOUT_MS, |f| {
                f.session[first..end].iter().all(Option::is_some)
            });
            let left = BATCH_TIMEOUT_MS.saturating_sub(t.elapsed().as_millis() as u64);
            // One batch counts once, whichever of its two waits ran out.
            if !(sessions_open && self.wait_quiet(BATCH_QUIET_MS, left)) {
                late += 1;
            }
        }
        let sessions = self.session.iter().filter(|s| s.is_some()).count();
        println!(
            "fleet up: {agents} agents in batches of {AGENT_BATCH}: {sessions} sessions open after {:.1} s ({late} batches past {BATCH_TIMEOUT_MS} ms)",
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// `juju deploy APP -n N`; the agents' tokens, in machine order.
    fn deploy(&self, n: usize) -> Res<Vec<String>> {
        let file = self.managers[0].dir.join("client.yaml");
        // The client file learns every live manager from this answer.
        juju(&file, &["members"])?;
        let outcome =
            juju(&file, &["deploy", APP, "--command", WORKLOAD_CMD, "-n", &n.to_string()])?;
        let pairs = outcome["tokens"].as_array().ok_or("deploy outcome has no tokens")?;
        let tokens: Vec<String> =
            pairs.iter().filter_map(|p| p[1].as_str().map(str::to_owned)).collect();
        if tokens.len() != n {
            return Err(format!("deploy -n {n} gave {} tokens", tokens.len()));
        }
        Ok(tokens)
    }

    fn spawn_logged(&mut self, mut cmd: Command, who: usize, name: &str) -> Res<Child> {
        let filter = std::env::var(RUST_LOG_OVERRIDE_VAR).unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {name}: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log_path = self.dir.join(format!("{name}.log"));
        let tee = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let tx = self.tx.clone();
        std::thread::spawn(move || common::read_json_log(stderr, who, tx, tee));
        Ok(child)
    }

    /// Starts manager `i`, joining through manager 0 on its first start.
    pub fn spawn_manager(&mut self, i: usize, join: bool) -> Res<()> {
        self.view.retain(|(o, _), _| *o != i);
        let m = &self.managers[i];
        let addr = m.addr.ok_or("a manager without an address")?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jujud"));
        cmd.arg("peer").arg("--data-dir").arg(&m.dir).args([
            "--listen",
            &addr.to_string(),
            "--log-format",
            "json",
        ]);
        if join {
            let seed = self.managers[0].addr.ok_or("no seed")?;
            // The token in the environment, never on the command line.
            cmd.args(["--join", &seed.to_string()]).env("JUJUD_TOKEN", &self.join_token);
        }
        let child = self.spawn_logged(cmd, i, &format!("m{i}"))?;
        let m = &mut self.managers[i];
        (m.child, m.started) = (Some(child), false);
        Ok(())
    }

    /// Starts agent `j` with every manager as a seed.
    pub fn spawn_agent(&mut self, j: usize) -> Res<()> {
        self.view.retain(|(o, _), _| *o != MANAGERS + j);
        let seeds: Vec<String> =
            self.managers.iter().filter_map(|m| m.addr).map(|a| a.to_string()).collect();
        let a = &self.agents[j];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jujud"));
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&a.dir)
            .args([
                "--listen",
                &agent_listen(j),
                "--seeds",
                &seeds.join(","),
                "--log-format",
                "json",
            ])
            .env("JUJUD_TOKEN", &a.token);
        let child = self.spawn_logged(cmd, MANAGERS + j, &format!("a{j}"))?;
        let a = &mut self.agents[j];
        (a.child, a.started) = (Some(child), false);
        Ok(())
    }

    /// SIGKILL manager `i` and reap it.
    pub fn kill_manager(&mut self, i: usize) -> Res<()> {
        let mut c =
            self.managers[i].child.take().ok_or_else(|| format!("manager {i} is not running"))?;
        c.kill().map_err(|e| format!("kill manager {i}: {e}"))?;
        let _ = c.wait();
        Ok(())
    }

    fn proc_mut(&mut self, who: usize) -> &mut Proc {
        if who < MANAGERS { &mut self.managers[who] } else { &mut self.agents[who - MANAGERS] }
    }

    fn apply(&mut self, ev: Ev) {
        let who = ev.who;
        match ev.msg.as_str() {
            jujud::events::MANAGER_STARTING | jujud::events::AGENT_STARTING => {
                let p = self.proc_mut(who);
                (p.id, p.generation, p.started) =
                    (ev.text("id"), ev.num("generation").unwrap_or(0), true);
            }
            jujud::events::REJOINED => {
                self.last_churn = Some(Instant::now());
                self.proc_mut(who).generation = ev.num("generation").unwrap_or(0)
            }
            jujud::events::MEMBER_UP => {
                _ = self
                    .view
                    .insert((who, ev.text("member")), (true, ev.num("generation").unwrap_or(0)))
            }
            jujud::events::MEMBER_RENAMED => {
                _ = self.view.insert((who, ev.text("member")), (true, ev.num("to").unwrap_or(0)))
            }
            MSG_DOWN => {
                self.last_churn = Some(Instant::now());
                _ = self
                    .view
                    .insert((who, ev.text("member")), (false, ev.num("generation").unwrap_or(0)))
            }
            MSG_SESSION if who >= MANAGERS => {
                self.session[who - MANAGERS] = Some(ev.text("manager"))
            }
            MSG_WORKLOAD_STARTED if who >= MANAGERS => self.starts[who - MANAGERS] += 1,
            MSG_WORKLOAD_EXITED if who >= MANAGERS => self.exits[who - MANAGERS] += 1,
            _ => {}
        }
        self.log.push(ev);
    }

    /// Applies events until `done` holds or `cap_ms` passes; returns `done`.
    pub fn wait_until(&mut self, cap_ms: u64, mut done: impl FnMut(&Fleet) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_millis(cap_ms);
        loop {
            while let Ok(ev) = self.rx.try_recv() {
                self.apply(ev);
            }
            if done(self) {
                return true;
            }
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(ev) => self.apply(ev),
                Err(RecvTimeoutError::Timeout) => return done(self),
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Consumes events until no membership churn (a member declared down,
    /// a rejoin) was seen for `quiet_ms`, or `cap_ms` passed; returns
    /// whether it was quiet.
    pub fn wait_quiet(&mut self, quiet_ms: u64, cap_ms: u64) -> bool {
        let deadline = Instant::now() + Duration::from_millis(cap_ms);
        let quiet = Duration::from_millis(quiet_ms);
        loop {
            let since = self.last_churn.map_or(quiet, |t| t.elapsed());
            if since >= quiet {
                return true;
            }
            let wait = (quiet - since).min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                return false;
            }
            match self.rx.recv_timeout(wait) {
                Ok(ev) => self.apply(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// [`Fleet::wait_until`], failing with `what` at the cap.
    pub fn wait_or(
        &mut self,
        cap_ms: u64,
        what: &str,
        done: impl FnMut(&Fleet) -> bool,
    ) -> Res<()> {
        if self.wait_until(cap_ms, done) {
            Ok(())
        } else {
            Err(format!("no {what} within {cap_ms} ms; logs in {}", self.dir.display()))
        }
    }

    /// Keeps consuming events for `ms` (quiet time and measuring windows).
    pub fn pump_for(&mut self, ms: u64) {
        self.wait_until(ms, |_| false);
    }

    fn running_managers(&self) -> impl Iterator<Item = &Proc> {
        self.managers.iter().filter(|m| m.child.is_some())
    }

    /// Whether `observer` sees `m` alive at its current generation.
    fn sees(&self, observer: usize, m: &Proc) -> bool {
        m.started && self.view.get(&(observer, m.id.clone())) == Some(&(true, m.generation))
    }

    /// Every running manager has started and sees every other one alive.
    pub fn managers_alive(&self) -> bool {
        (0..MANAGERS).filter(|&o| self.managers[o].child.is_some()).all(|o| {
            self.managers[o].started
                && self
                    .running_managers()
                    .filter(|m| m.id != self.managers[o].id)
                    .all(|m| self.sees(o, m))
        })
    }

    /// The manager rendezvous hashing picks for agent `j` among the running
    /// managers (what the agent's core computes from its live list).
    pub fn best_manager(&self, j: usize) -> Option<String> {
        let key: NodeId = self.agents[j].id.parse().ok()?;
        let ids = self
            .running_managers()
            .filter(|m| m.started)
            .filter_map(|m| m.id.parse::<NodeId>().ok());
        choice::best(key.0, ids).map(|id| id.to_string())
    }

    /// Managers agree; every agent sees every running manager alive and
    /// holds its session with its best manager.
    pub fn settled(&self) -> bool {
        self.managers_alive()
            && (0..self.agents.len()).all(|j| {
                let a = &self.agents[j];
                a.started
                    && self.running_managers().all(|m| self.sees(MANAGERS + j, m))
                    && self.session[j].is_some()
                    && self.session[j] == self.best_manager(j)
            })
    }

    /// The first event of `who` after log index `mark` matching `want`.
    pub fn first_after(&self, mark: usize, who: usize, want: impl Fn(&Ev) -> bool) -> Option<&Ev> {
        self.log[mark..].iter().find(|e| e.who == who && want(e))
    }

    /// Sessions held per manager, by the agents' newest session lines.
    pub fn sessions_per_manager(&self) -> Vec<usize> {
        self.managers
            .iter()
            .map(|m| self.session.iter().filter(|s| s.as_deref() == Some(m.id.as_str())).count())
            .collect()
    }
}

/// Agent `j`'s listen address: its own loopback IP (127.1.x.y, any free
/// port), as each machine has its own address in a real estate. On one IP,
/// every agent would share the per-source handshake bound
/// (`handshake::MAX_HANDSHAKES_PER_SOURCE`) meant for one remote host.
pub fn agent_listen(j: usize) -> String {
    format!("127.1.{}.{}:0", j / 250, j % 250 + 1)
}
