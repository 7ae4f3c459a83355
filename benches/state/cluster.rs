//! Process plumbing for the state benchmark: spawning `jujud` managers (on
//! loopback or each in its own network namespace), reading their JSON logs
//! into timestamped events, signals, restarts, and /proc and disk probes.
//!
//! Architecture invariant: every log line is stamped with the `Instant` its
//! reader thread got it, and all waiting on managers happens on one channel
//! of those events with a cap; nothing here sleeps to synchronise.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use jujud::metrics::heap::HeapStats;
use serde_json::Value;
use testkit::bench::{free_port, scrape_metrics};

pub type Res<T> = Result<T, String>;

/// Cap on forming a cluster, or on a member coming back.
pub const FORM_TIMEOUT_MS: u64 = 60_000;

/// The managers' program: this build's `jujud`, or `JUJUD_BENCH_BIN` (a
/// build with other features, or a wrapper that runs one manager under a
/// heap profiler; docs/ARCHITECTURE.md, "State memory").
pub fn jujud_bin() -> PathBuf {
    std::env::var_os("JUJUD_BENCH_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_jujud").into(), PathBuf::from)
}

/// One parsed log line.
pub struct Ev {
    pub who: usize,
    pub at: Instant,
    pub msg: String,
    pub fields: Value,
}

impl Ev {
    pub fn text(&self, k: &str) -> String {
        match &self.fields[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        }
    }
    pub fn num(&self, k: &str) -> Option<u64> {
        self.fields[k].as_u64()
    }
}

pub struct Manager {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub netns: Option<String>,
    pub id: String,
    pub generation: u64,
    pub started: bool,
    pub child: Option<Child>,
    /// Where it serves `/metrics` (loopback managers only).
    pub metrics: Option<SocketAddr>,
}

/// Managers plus everything they have logged.
pub struct Cluster {
    pub dir: PathBuf,
    pub managers: Vec<Manager>,
    token: String,
    tx: Sender<Ev>,
    rx: Receiver<Ev>,
    pub log: Vec<Ev>,
    /// (observer, member id) -> (alive, generation), latest event.
    view: HashMap<(usize, String), (bool, u64)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.managers.len() {
            self.signal(i, libc::SIGCONT);
            if let Some(mut c) = self.managers[i].child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Starts one manager per address (in `netns[i]` when given) and waits
    /// until all see each other alive.
    pub fn start(dir: &Path, addrs: &[SocketAddr], netns: &[Option<String>]) -> Res<Cluster> {
        let (tx, rx) = mpsc::channel();
        let mut managers: Vec<Manager> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Manager {
                dir: dir.join(format!("m{i}")),
                addr: *a,
                netns: netns.get(i).cloned().flatten(),
                id: String::new(),
                generation: 0,
                started: false,
                child: None,
                metrics: None,
            })
            .collect();
        let mut taken: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
        for m in managers.iter_mut().filter(|m| m.netns.is_none()) {
            m.metrics = Some(SocketAddr::from(([127, 0, 0, 1], free_port(&mut taken)?)));
        }
        let mut c = Cluster {
            dir: dir.to_owned(),
            managers,
            token: String::new(),
            tx,
            rx,
            log: Vec::new(),
            view: HashMap::new(),
        };
        c.spawn(0, false)?;
        c.wait_started(0)?;
        let path = c.managers[0].dir.join("join-token");
        c.token = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .trim()
            .to_owned();
        for i in 1..addrs.len() {
            c.spawn(i, true)?;
        }
        if !c.wait_until(FORM_TIMEOUT_MS, Cluster::all_alive) {
            return Err(format!(
                "cluster did not form in {FORM_TIMEOUT_MS} ms; logs in {}",
                dir.display()
            ));
        }
        Ok(c)
    }

    /// Starts manager `i` (joining through manager 0 on its first start).
    pub fn spawn(&mut self, i: usize, join: bool) -> Res<()> {
        self.view.retain(|(o, _), _| *o != i);
        let m = &self.managers[i];
        let bin = jujud_bin();
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("peer").arg("--data-dir").arg(&m.dir).args([
            "--listen",
            &m.addr.to_string(),
            "--log-format",
            "json",
        ]);
        if let Some(a) = m.metrics {
            cmd.args(["--metrics-listen", &a.to_string()]);
        }
        if join {
            // The token in the environment, never on the command line.
            cmd.args(["--join", &self.managers[0].addr.to_string()])
                .env("JUJUD_TOKEN", &self.token);
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn jujud: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log_path = self.dir.join(format!("m{i}.log"));
        let tee = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let tx = self.tx.clone();
        std::thread::spawn(move || read_log(stderr, i, tx, tee));
        let m = &mut self.managers[i];
        (m.child, m.started) = (Some(child), false);
        Ok(())
    }

    pub fn wait_started(&mut self, i: usize) -> Res<()> {
        if self.wait_until(FORM_TIMEOUT_MS, |c| c.managers[i].started) {
            Ok(())
        } else {
            Err(format!(
                "manager {i} did not start; see {}",
                self.dir.join(format!("m{i}.log")).display()
            ))
        }
    }

    fn apply(&mut self, ev: Ev) {
        let me = ev.who;
        match ev.msg.as_str() {
            jujud::events::MANAGER_STARTING => {
                let m = &mut self.managers[me];
                (m.id, m.generation, m.started) =
                    (ev.text("id"), ev.num("generation").unwrap_or(0), true);
            }
            jujud::events::REJOINED => {
                self.managers[me].generation = ev.num("generation").unwrap_or(0)
            }
            jujud::events::MEMBER_UP => {
                _ = self
                    .view
                    .insert((me, ev.text("member")), (true, ev.num("generation").unwrap_or(0)))
            }
            jujud::events::MEMBER_RENAMED => {
                _ = self.view.insert((me, ev.text("member")), (true, ev.num("to").unwrap_or(0)))
            }
            jujud::events::MEMBER_DOWN => {
                _ = self
                    .view
                    .insert((me, ev.text("member")), (false, ev.num("generation").unwrap_or(0)))
            }
            _ => {}
        }
        self.log.push(ev);
    }

    /// Applies events until `done` holds or `cap_ms` passes; returns `done`.
    pub fn wait_until(&mut self, cap_ms: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
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

    /// Whether `observer` sees manager `m` alive at its current generation.
    pub fn sees_alive(&self, observer: usize, m: usize) -> bool {
        let t = &self.managers[m];
        t.started && self.view.get(&(observer, t.id.clone())) == Some(&(true, t.generation))
    }

    /// Whether `observer` has declared manager `m` down.
    pub fn sees_down(&self, observer: usize, m: usize) -> bool {
        matches!(self.view.get(&(observer, self.managers[m].id.clone())), Some((false, _)))
    }

    /// Every running member sees every other alive at its generation.
    pub fn all_alive(&self) -> bool {
        let running: Vec<usize> =
            (0..self.managers.len()).filter(|&i| self.managers[i].child.is_some()).collect();
        running.iter().all(|&o| running.iter().filter(|&&m| m != o).all(|&m| self.sees_alive(o, m)))
    }

    pub fn pid(&self, i: usize) -> Res<i32> {
        self.managers[i]
            .child
            .as_ref()
            .map(|c| c.id() as i32)
            .ok_or_else(|| format!("manager {i} is not running"))
    }

    /// Sends `sig`; a SIGKILL also reaps the child.
    pub fn signal(&mut self, i: usize, sig: i32) {
        let Ok(pid) = self.pid(i) else { return };
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(pid, sig) };
        if sig == libc::SIGKILL
            && let Some(mut c) = self.managers[i].child.take()
        {
            let _ = c.wait();
        }
    }

    /// SIGKILL, then start again on the same data dir; returns the instant
    /// the new process was spawned.
    pub fn kill_and_restart(&mut self, i: usize) -> Res<Instant> {
        self.signal(i, libc::SIGKILL);
        let t0 = Instant::now();
        self.spawn(i, false)?;
        Ok(t0)
    }

    pub fn client_file(&self) -> PathBuf {
        self.managers[0].dir.join("client.yaml")
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.managers.iter().map(|m| m.addr).collect()
    }

    /// The latest event of manager `i` with message `msg`.
    pub fn last_event(&self, i: usize, msg: &str) -> Option<&Ev> {
        self.log.iter().rev().find(|e| e.who == i && e.msg == msg)
    }
}

fn read_log(stream: impl std::io::Read, who: usize, tx: Sender<Ev>, mut tee: File) {
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        let at = Instant::now();
        let _ = writeln!(tee, "{line}");
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        let fields = v.get("fields").cloned().unwrap_or(Value::Null);
        let msg = fields.get("message").and_then(|m| m.as_str()).unwrap_or("").to_owned();
        if tx.send(Ev { who, at, msg, fields }).is_err() {
            return;
        }
    }
}

/// `n` loopback addresses on ports free for UDP right now.
pub fn loopback_addrs(n: usize) -> Res<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    while out.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let a = l.local_addr().map_err(|e| e.to_string())?;
        if !out.contains(&a) && UdpSocket::bind(a).is_ok() {
            out.push(a);
        }
    }
    Ok(out)
}

/// Manager `i`'s `jujud_heap_bytes{kind}` series (jemalloc's counts), in
/// MiB, from its `/metrics`; empty if it serves none (another allocator,
/// or in a network namespace).
pub fn heap_mib(c: &Cluster, i: usize) -> Vec<(String, f64)> {
    let mut out = labelled_mib(c, i, "jujud_heap_bytes{kind=\"");
    // In the exporter's order (allocated, active, resident, ...).
    let rank = |k: &str| HeapStats::KINDS.iter().position(|x| *x == k);
    out.sort_by_key(|(k, _)| rank(k));
    out
}

/// Manager `i`'s `jujud_memory_part_bytes{part}` series (what its bounded
/// parts hold, as each counts it), in MiB; empty if it serves none.
pub fn parts_mib(c: &Cluster, i: usize) -> Vec<(String, f64)> {
    let mut out = labelled_mib(c, i, "jujud_memory_part_bytes{part=\"");
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Manager `i`'s series of one family with one label (`prefix` is the
/// family's name up to the label's opening quote), as (label value, MiB),
/// in the scrape's order; empty if it serves no metrics.
fn labelled_mib(c: &Cluster, i: usize, prefix: &str) -> Vec<(String, f64)> {
    let Some(samples) = c.managers[i].metrics.and_then(scrape_metrics) else { return Vec::new() };
    samples
        .into_iter()
        .filter_map(|(series, value)| {
            let label = series.strip_prefix(prefix)?.strip_suffix("\"}")?;
            Some((label.to_owned(), value / (1024.0 * 1024.0)))
        })
        .collect()
}

pub fn rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// CPU time `pid` has used so far (user + system, every thread), in
/// microseconds; `None` once it is gone.
pub fn cpu_micros(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is the first, utime the 12th and stime the 13th.
    let mut f = s.get(s.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&h| h > 0)?;
    Some(ticks * 1_000_000 / hz)
}

/// (log bytes, snapshot bytes) under `dir/state`.
pub fn state_bytes(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir.join("state")) else { return (0, 0) };
    let (mut log, mut snap) = (0, 0);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let len = e.metadata().map_or(0, |m| m.len());
        if name.starts_with("log-") {
            log += len;
        } else if name.starts_with("snapshot-") && name.ends_with(".bin") {
            snap += len;
        }
    }
    (log, snap)
}
