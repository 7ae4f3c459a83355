//! Process plumbing for the detection benchmark: spawning `jujud` managers
//! or `serf` agents, reading their logs into timestamped events, signals,
//! and the metrics and scheduling probes (ports and /proc basics come from
//! `testkit::bench`).
//!
//! Architecture invariant: every log line is stamped with the `Instant` at
//! which its reader thread got it, and all waiting happens on one channel of
//! those events; nothing here sleeps to synchronise.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::common::free_port;

/// Managers (or serf agents) per cluster.
pub const MANAGERS: usize = 5;
/// Cap on any single wait for a round's events.
pub const ROUND_TIMEOUT_MS: u64 = 30_000;
/// Cap on forming a fresh cluster.
const FORM_TIMEOUT_MS: u64 = 60_000;
/// Quiet time after forming: members persist their peer list every 1 s, and
/// one killed before that restarts knowing nobody (a separate finding).
const FORM_SETTLE_MS: u64 = 3_000;
/// Nice value given to every thread of the starved manager.
pub const STARVE_NICE: i32 = 10;
/// Busy loops pinned with the starved manager on its core.
pub const STARVE_BUSY_LOOPS: usize = 2;

pub type Res<T> = Result<T, String>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    Jujud,
    Serf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// The process announced its own identity ("manager starting", rejoin).
    SelfGen,
    Up,
    Down,
    Left,
}

/// One parsed log line. `member` empty on `SelfGen` means "the observer".
pub struct Ev {
    pub observer: usize,
    pub at: Instant,
    pub kind: Kind,
    pub member: String,
    pub generation: u64,
}

pub type Parser = fn(&str) -> Option<(Kind, String, u64)>;

/// `"fields":{"message":..}` lines of jujud's JSON log; other lines skipped.
pub fn parse_jujud(line: &str) -> Option<(Kind, String, u64)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = v.get("fields")?;
    let text = |k: &str| f.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let num = |k: &str| f.get(k).and_then(|x| x.as_u64());
    match f.get("message")?.as_str()? {
        jujud::events::MANAGER_STARTING => Some((Kind::SelfGen, text("id")?, num("generation")?)),
        jujud::events::REJOINED => Some((Kind::SelfGen, String::new(), num("generation")?)),
        jujud::events::MEMBER_UP => Some((Kind::Up, text("member")?, num("generation")?)),
        jujud::events::MEMBER_RENAMED => Some((Kind::Up, text("member")?, num("to")?)),
        jujud::events::MEMBER_DOWN => {
            let kind = if f.get("left").and_then(|x| x.as_bool()) == Some(true) {
                Kind::Left
            } else {
                Kind::Down
            };
            Some((kind, text("member")?, num("generation")?))
        }
        _ => None,
    }
}

/// serf 0.8 agent log: `serf: EventMemberFailed: s3 127.0.0.1`.
pub fn parse_serf(line: &str) -> Option<(Kind, String, u64)> {
    if line.contains("agent: Serf agent starting") {
        return Some((Kind::SelfGen, String::new(), 0));
    }
    let rest = &line[line.find("serf: EventMember")? + "serf: EventMember".len()..];
    let (what, who) = rest.split_once(':')?;
    let name = who.split_whitespace().next()?.to_owned();
    let kind = match what {
        "Join" => Kind::Up,
        "Failed" => Kind::Down,
        "Leave" => Kind::Left,
        _ => return None,
    };
    Some((kind, name, 0))
}

/// Reads one stream line by line (lossy UTF-8), tees it to `tee`, and sends
/// every parsed line stamped with its arrival time. Ends at EOF.
pub fn read_stream(
    stream: impl Read,
    observer: usize,
    parse: Parser,
    tx: Sender<Ev>,
    mut tee: File,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let at = Instant::now();
        let line = String::from_utf8_lossy(&buf);
        let _ = tee.write_all(line.as_bytes());
        if let Some((kind, member, generation)) = parse(line.trim_end())
            && tx.send(Ev { observer, at, kind, member, generation }).is_err()
        {
            return;
        }
    }
}

pub struct Node {
    pub dir: PathBuf,
    pub port: u16,
    /// Metrics port (jujud) or RPC port (serf).
    pub aux_port: u16,
    /// jujud's 16-hex id (learnt from its log) or the serf node name.
    pub name: String,
    pub generation: u64,
    pub started: bool,
    pub stopped: bool,
    pub child: Option<Child>,
}

/// A running cluster plus everything its members have logged so far.
pub struct Cluster {
    pub flavor: Flavor,
    bin: PathBuf,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    token: String,
    tx: Sender<Ev>,
    rx: Receiver<Ev>,
    pub log: Vec<Ev>,
    /// (observer, member) -> (alive, generation), from the latest event.
    view: HashMap<(usize, String), (bool, u64)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    pub fn start(flavor: Flavor, bin: &Path, dir: PathBuf, ports: &mut Vec<u16>) -> Res<Cluster> {
        let (tx, rx) = mpsc::channel();
        let mut nodes = Vec::new();
        for i in 0..MANAGERS {
            let (port, aux_port) = (free_port(ports)?, free_port(ports)?);
            let name = if flavor == Flavor::Serf { format!("s{i}") } else { String::new() };
            let d = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
            nodes.push(Node {
                dir: d,
                port,
                aux_port,
                name,
                generation: 0,
                started: false,
                stopped: false,
                child: None,
            });
        }
        let mut c = Cluster {
            flavor,
            bin: bin.to_owned(),
            dir,
            nodes,
            token: String::new(),
            tx,
            rx,
            log: Vec::new(),
            view: HashMap::new(),
        };
        c.spawn(0, None)?;
        if !c.wait_until(FORM_TIMEOUT_MS, |c| c.nodes[0].started) {
            return Err(format!("{flavor:?}: first member never started; see {}", c.dir.display()));
        }
        if flavor == Flavor::Jujud {
            let path = c.nodes[0].dir.join("join-token");
            c.token = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .trim()
                .to_owned();
        }
        for i in 1..MANAGERS {
            c.spawn(i, Some(0))?;
        }
        if !c.wait_until(FORM_TIMEOUT_MS, Cluster::all_alive) {
            return Err(format!(
                "{flavor:?}: cluster did not form in {FORM_TIMEOUT_MS} ms; logs in {}",
                c.dir.display()
            ));
        }
        c.pump_for(FORM_SETTLE_MS);
        Ok(c)
    }

    /// Starts member `i`; `join` names the member to join through (first
    /// start of a jujud joiner, any serf start). jujud restarts pass `None`.
    pub fn spawn(&mut self, i: usize, join: Option<usize>) -> Res<()> {
        self.view.retain(|(o, _), _| *o != i);
        let n = &self.nodes[i];
        let mut cmd = Command::new(&self.bin);
        match self.flavor {
            Flavor::Jujud => {
                cmd.arg("peer").arg("--data-dir").arg(&n.dir);
                cmd.args(["--listen", &format!("127.0.0.1:{}", n.port), "--log-format", "json"]);
                cmd.args(["--metrics-listen", &format!("127.0.0.1:{}", n.aux_port)]);
                if let Some(j) = join {
                    cmd.args(["--join", &format!("127.0.0.1:{}", self.nodes[j].port)])
                        .env("JUJUD_TOKEN", &self.token);
                }
                cmd.env_remove("RUST_LOG");
            }
            Flavor::Serf => {
                cmd.args([
                    "agent",
                    &format!("-node={}", n.name),
                    &format!("-bind=127.0.0.1:{}", n.port),
                ]);
                cmd.arg(format!("-rpc-addr=127.0.0.1:{}", n.aux_port));
                if let Some(j) = join {
                    cmd.arg(format!("-join=127.0.0.1:{}", self.nodes[j].port));
                }
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let parse: Parser = if self.flavor == Flavor::Jujud { parse_jujud } else { parse_serf };
        let log_path = self.dir.join(format!("n{i}.log"));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let tee = File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            let tx = self.tx.clone();
            std::thread::spawn(move || read_stream(stream, i, parse, tx, tee));
        }
        let n = &mut self.nodes[i];
        (n.child, n.started, n.stopped) = (Some(child), false, false);
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Res<i32> {
        self.nodes[i]
            .child
            .as_ref()
            .map(|c| c.id() as i32)
            .ok_or_else(|| format!("member {i} is not running"))
    }

    pub fn signal(&mut self, i: usize, sig: i32) -> Res<()> {
        let pid = self.pid(i)?;
        // SAFETY: kill(2) on a child we spawned and have not reaped yet.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(format!("kill({pid}, {sig}): {}", std::io::Error::last_os_error()));
        }
        match sig {
            libc::SIGKILL => {
                if let Some(mut c) = self.nodes[i].child.take() {
                    let _ = c.wait();
                }
            }
            libc::SIGSTOP => self.nodes[i].stopped = true,
            libc::SIGCONT => self.nodes[i].stopped = false,
            _ => {}
        }
        Ok(())
    }

    pub fn apply(&mut self, ev: Ev) {
        let me = ev.observer;
        match ev.kind {
            Kind::SelfGen => {
                let n = &mut self.nodes[me];
                if !ev.member.is_empty() {
                    n.name = ev.member.clone();
                }
                (n.generation, n.started) = (ev.generation, true);
            }
            Kind::Up => _ = self.view.insert((me, ev.member.clone()), (true, ev.generation)),
            Kind::Down | Kind::Left => {
                _ = self.view.insert((me, ev.member.clone()), (false, ev.generation))
            }
        }
        self.log.push(ev);
    }

    /// Applies events until `done` holds or `cap_ms` passes; returns `done`.
    pub fn wait_until(&mut self, cap_ms: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_millis(cap_ms);
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => self.apply(ev),
                Err(RecvTimeoutError::Timeout) => return done(self),
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Keeps consuming events for `ms` (the only sleep: settling, windows).
    pub fn pump_for(&mut self, ms: u64) {
        self.wait_until(ms, |_| false);
    }

    /// Every running, unfrozen member sees every other at its own generation.
    pub fn all_alive(&self) -> bool {
        self.nodes.iter().enumerate().filter(|(_, n)| n.child.is_some() && !n.stopped).all(
            |(o, _)| {
                self.nodes.iter().enumerate().filter(|(m, _)| *m != o).all(|(_, m)| {
                    m.started && self.view.get(&(o, m.name.clone())) == Some(&(true, m.generation))
                })
            },
        )
    }

    /// Once each observer has logged an event matching `want` after log
    /// index `mark`, the latest of those first arrivals minus `t0`.
    pub fn all_saw(
        &self,
        mark: usize,
        t0: Instant,
        observers: &[usize],
        want: &dyn Fn(&Ev) -> bool,
    ) -> Option<Duration> {
        let mut latest = Duration::ZERO;
        for &o in observers {
            let ev = self.log[mark..].iter().find(|e| e.observer == o && want(e))?;
            latest = latest.max(ev.at.saturating_duration_since(t0));
        }
        Some(latest)
    }

    pub fn wait_all_saw(
        &mut self,
        mark: usize,
        t0: Instant,
        observers: &[usize],
        want: &dyn Fn(&Ev) -> bool,
    ) -> Option<Duration> {
        let mut got = None;
        self.wait_until(ROUND_TIMEOUT_MS, |c| {
            got = c.all_saw(mark, t0, observers, want);
            got.is_some()
        });
        got
    }

    /// Downs logged after `mark` about anyone but `victim`, or by the victim.
    pub fn stray_downs(&self, mark: usize, victim: usize) -> Vec<String> {
        let name = &self.nodes[victim].name;
        let stray = |e: &&Ev| e.kind == Kind::Down && (&e.member != name || e.observer == victim);
        self.log[mark..]
            .iter()
            .filter(stray)
            .map(|e| format!("n{} saw {} g{} down", e.observer, e.member, e.generation))
            .collect()
    }

    pub fn scrape(&self, i: usize) -> Option<HashMap<String, f64>> {
        crate::common::scrape_metrics(SocketAddr::from(([127, 0, 0, 1], self.nodes[i].aux_port)))
    }
}

pub fn others(victim: usize) -> Vec<usize> {
    (0..MANAGERS).filter(|&i| i != victim).collect()
}

/// (cpu ns, runqueue wait ns, timeslices) summed over a process's threads,
/// from /proc/PID/task/*/schedstat: how starved it really was.
pub fn schedstat(pid: i32) -> (u64, u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0, 0);
    };
    let mut sum = (0, 0, 0);
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        let f: Vec<u64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if let [cpu, wait, slices] = f[..] {
            sum = (sum.0 + cpu, sum.1 + wait, sum.2 + slices);
        }
    }
    sum
}

/// Pins one thread (or single-threaded process) to `cpu`.
pub fn pin(tid: i32, cpu: usize) -> Res<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity only
    // read and write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity({tid}): {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Pins every thread of `pid` to `cpu` and lowers its priority; returns how
/// many threads were changed. Threads started later inherit both.
pub fn starve_threads(pid: i32, cpu: usize) -> Res<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("/proc/{pid}/task: {e}"))?;
    let mut count = 0;
    for tid in tasks.flatten().filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok()) {
        pin(tid, cpu)?;
        // SAFETY: setpriority(2) on a thread id of our own child.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, STARVE_NICE) };
        count += 1;
    }
    Ok(count)
}

/// Busy-loop processes, killed on drop.
pub struct BusyLoops(Vec<Child>);

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn busy_loops(cpu: usize) -> Res<BusyLoops> {
    let mut loops = BusyLoops(Vec::new());
    for _ in 0..STARVE_BUSY_LOOPS {
        let c = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("sh: {e}"))?;
        let pid = c.id() as i32;
        loops.0.push(c);
        pin(pid, cpu)?;
    }
    Ok(loops)
}
