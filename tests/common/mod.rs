//! Test harness: runs real `jujud` processes on loopback, reads their JSON
//! logs in a thread each, and lets tests wait for log events (an event is
//! awaited on a condition variable; the cap is only a failure bound).
//!
//! Owns process lifetimes: every child is killed when its handle drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agent;
pub mod env;
#[allow(unused_imports)]
pub use testkit::hosts;
pub mod netns;

/// Where tests hand a join token to `jujud` (never `--token`: the command
/// line is readable by every local user).
pub const TOKEN_ENV: &str = "JUJUD_TOKEN";

/// The longest any awaited event may take before the test fails.
pub const EVENT_CAP_MS: u64 = 20_000;

pub fn jujud_bin() -> &'static str {
    env!("CARGO_BIN_EXE_jujud")
}

pub fn juju_bin() -> &'static str {
    env!("CARGO_BIN_EXE_juju")
}

/// A free loopback UDP port (bound, read, released). Another process may
/// take it before it is used: where a bind failure would fail the test,
/// hand `jujud` port 0 instead ([`any_port`]; [`Peer`] reads back the port it
/// bound) or retry on a bind failure ([`Peer::try_start_with`]).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free loopback TCP port (bound, read, released), for a TCP listener
/// such as `--metrics-listen`; as racy as [`free_port`].
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback address with port 0: `jujud` binds a port the kernel picks
/// (no window in which another process can take it) and advertises it;
/// [`Peer`] reads it back from "manager starting".
pub fn any_port() -> SocketAddr {
    local(0)
}

/// How many times a helper that picks a port tries again when another
/// process took it first.
pub const PORT_TRIES: usize = 3;

/// Log lines of one process, shared with its reader thread.
#[derive(Default)]
pub struct LogBook {
    lines: Mutex<Vec<Value>>,
    raw: Mutex<Vec<String>>,
    changed: Condvar,
    /// The process closed its stderr (it exited); set under `lines`.
    closed: std::sync::atomic::AtomicBool,
}

impl LogBook {
    /// Waits until `pred` holds over the lines read so far.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        self.wait(what, pred, false);
    }

    /// Waits until `pred` holds (`true`) or the process has closed its
    /// stderr without it holding (`false`: it exited).
    pub fn wait_for_or_exit(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> bool {
        self.wait(what, pred, true)
    }

    /// Waits until `pred` holds (`true`), or, with `until_exit`, until the
    /// process has closed its stderr (`false`); fails at the cap.
    fn wait(&self, what: &str, pred: impl Fn(&[Value]) -> bool, until_exit: bool) -> bool {
        let deadline = Instant::now() + Duration::from_millis(EVENT_CAP_MS);
        let mut lines = self.lines.lock().unwrap();
        loop {
            if pred(&lines) {
                return true;
            }
            if until_exit && self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; log:\n{}",
                self.raw.lock().unwrap().join("\n")
            );
            lines = self.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    pub fn raw(&self) -> String {
        self.raw.lock().unwrap().join("\n")
    }
}

/// The message of a JSON log line.
pub fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

/// A field of a JSON log line, as text.
pub fn field(v: &Value, name: &str) -> String {
    match &v["fields"][name] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether `lines` hold an event `msg` about `member` (any generation).
pub fn saw(lines: &[Value], msg: &str, member: &str) -> bool {
    lines.iter().any(|l| message(l) == msg && field(l, "member") == member)
}

/// Whether `lines` hold `member` coming up (or renamed) at `generation`.
pub fn saw_up_at(lines: &[Value], member: &str, generation: u64) -> bool {
    lines.iter().any(|l| {
        field(l, "member") == member
            && ((message(l) == jujud::events::MEMBER_UP
                && field(l, "generation") == generation.to_string())
                || (message(l) == jujud::events::MEMBER_RENAMED
                    && field(l, "to") == generation.to_string()))
    })
}

/// Spawns `cmd` with JSON logs on stderr read into a [`LogBook`].
pub fn spawn_logged(mut cmd: Command) -> (Child, Arc<LogBook>) {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.env("RUST_LOG", "info");
    let mut child = cmd.spawn().expect("spawn jujud");
    let log = Arc::new(LogBook::default());
    let stderr = child.stderr.take().unwrap();
    let book = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let parsed = serde_json::from_str::<Value>(&line).ok();
            book.raw.lock().unwrap().push(line);
            if let Some(v) = parsed {
                book.lines.lock().unwrap().push(v);
            }
            book.changed.notify_all();
        }
        book.raw.lock().unwrap().push("<stderr closed>".into());
        // Under `lines`, so that a waiter checks it or is woken.
        let _lines = book.lines.lock().unwrap();
        book.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        book.changed.notify_all();
    });
    (child, log)
}

/// One running `jujud peer`.
pub struct Peer {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub log: Arc<LogBook>,
    pub id: String,
    pub generation: u64,
}

impl Peer {
    /// Starts `jujud peer` with extra args; waits for "manager starting".
    pub fn start(dir: &Path, addr: SocketAddr, extra: &[&str]) -> Peer {
        Peer::start_in(None, dir, addr, extra)
    }

    /// Starts `jujud peer --join seed`, the token handed over in the
    /// environment (never on the command line).
    pub fn join(dir: &Path, addr: SocketAddr, seed: &str, token: &str) -> Peer {
        Peer::start_with(None, dir, addr, &["--join", seed], Some(token))
    }

    /// Starts `jujud peer` inside network namespace `netns` if given.
    pub fn start_in(netns: Option<&str>, dir: &Path, addr: SocketAddr, extra: &[&str]) -> Peer {
        Peer::start_with(netns, dir, addr, extra, None)
    }

    /// Starts `jujud peer` in `netns` if given, with `token` (if any) in
    /// `JUJUD_TOKEN`; waits for "manager starting". With port 0 in `addr`
    /// the peer's address is the one `jujud` bound and advertises.
    pub fn start_with(
        netns: Option<&str>,
        dir: &Path,
        addr: SocketAddr,
        extra: &[&str],
        token: Option<&str>,
    ) -> Peer {
        Peer::try_start_with(netns, dir, addr, extra, token)
            .unwrap_or_else(|log| panic!("jujud peer exited before starting; log:\n{log}"))
    }

    /// As [`Peer::start_with`], but a `jujud` that exits before "manager
    /// starting" (a port taken, say) is an `Err` with its log, at once.
    pub fn try_start_with(
        netns: Option<&str>,
        dir: &Path,
        addr: SocketAddr,
        extra: &[&str],
        token: Option<&str>,
    ) -> Result<Peer, String> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, jujud_bin()]);
                c
            }
            None => Command::new(jujud_bin()),
        };
        cmd.args(peer_args(dir, addr));
        cmd.args(extra);
        if let Some(t) = token {
            cmd.env(TOKEN_ENV, t);
        }
        let (mut child, log) = spawn_logged(cmd);
        let started = log.wait_for_or_exit(jujud::events::MANAGER_STARTING, |l| {
            l.iter().any(|v| message(v) == jujud::events::MANAGER_STARTING)
        });
        if !started {
            let _ = child.wait();
            return Err(log.raw());
        }
        let start = log
            .snapshot()
            .into_iter()
            .rev()
            .find(|v| message(v) == jujud::events::MANAGER_STARTING)
            .unwrap();
        let id = field(&start, "id");
        let generation = field(&start, "generation").parse().unwrap();
        let addr = if addr.port() == 0 {
            field(&start, "advertise").parse().expect("an advertised address")
        } else {
            addr
        };
        Ok(Peer { child: Some(child), dir: dir.to_path_buf(), addr, log, id, generation })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// SIGKILL and reap.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn leave(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.take().unwrap().wait().unwrap()
    }

    pub fn client_file(&self) -> PathBuf {
        self.dir.join("client.yaml")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("join-token")).unwrap().trim().to_string()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // A frozen process must be thawed to die cleanly.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A first manager plus `n - 1` joiners, all seeing each other.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub peers: Vec<Peer>,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let first = Peer::start(&tmp.path().join("m0"), any_port(), &[]);
        let token = first.token();
        let seed = first.addr.to_string();
        let mut peers = vec![first];
        for i in 1..n {
            let dir = tmp.path().join(format!("m{i}"));
            peers.push(Peer::join(&dir, any_port(), &seed, &token));
        }
        let c = Cluster { tmp, peers };
        c.wait_all_up();
        c
    }

    /// Waits until every peer has seen every other come up.
    pub fn wait_all_up(&self) {
        for p in &self.peers {
            for q in self.peers.iter().filter(|q| q.id != p.id && q.child.is_some()) {
                let (id, generation) = (q.id.clone(), q.generation);
                p.log.wait_for(&format!("{} to see {} up", p.id, id), |l| {
                    saw_up_at(l, &id, generation)
                });
            }
        }
    }

    /// Restarts peer `i` on its data dir (no join flags).
    pub fn restart(&mut self, i: usize) {
        let (dir, addr) = (self.peers[i].dir.clone(), self.peers[i].addr);
        self.peers[i] = Peer::start(&dir, addr, &[]);
    }

    pub fn juju(&self, args: &[&str]) -> Output {
        juju(&self.peers[0].client_file(), args)
    }
}

/// `jujud peer` with its data dir, listen address and JSON logs: what
/// every test manager starts with (the caller adds `--join`, tokens, ...).
pub fn peer_args(dir: &Path, addr: SocketAddr) -> [String; 7] {
    [
        "peer",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &addr.to_string(),
        "--log-format",
        "json",
    ]
    .map(str::to_string)
}

/// `jujud` [`peer_args`], ready for more arguments.
pub fn peer_command(dir: &Path, addr: SocketAddr) -> Command {
    let mut cmd = Command::new(jujud_bin());
    cmd.args(peer_args(dir, addr));
    cmd
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs `juju --client-config FILE args...`.
pub fn juju(client_file: &Path, args: &[&str]) -> Output {
    Command::new(juju_bin())
        .arg("--client-config")
        .arg(client_file)
        .args(args)
        .output()
        .expect("run juju")
}

/// `juju members --format json` rows as (id, state, generation).
pub fn members(client_file: &Path, endpoint: Option<SocketAddr>) -> Vec<(String, String, u64)> {
    let ep = endpoint.map(|e| e.to_string());
    let mut args = vec!["members", "--format", "json"];
    if let Some(ep) = &ep {
        args.extend(["--endpoint", ep.as_str()]);
    }
    let out = juju(client_file, &args);
    assert!(out.status.success(), "juju members failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
                m["generation"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Polls `f` until it is `Ok` (each poll a real request; the cap is only a
/// failure bound, and the last `Err` is the failure's message).
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_millis(EVENT_CAP_MS);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                assert!(Instant::now() < deadline, "timed out waiting for {what}; last: {last}")
            }
        }
        std::thread::sleep(Duration::from_millis(100)); // a poll of a request: no event to await
    }
}

/// [`members`] once no row is `suspect`. One probe missed on a starved
/// machine makes a member suspect until it refutes (a moment later), so an
/// exact reading of states must wait for that; a member truly lost goes on
/// to `down`, and one that refuted a down comes back as a new generation,
/// which the rows then show.
pub fn settled_members(
    client_file: &Path,
    endpoint: Option<SocketAddr>,
) -> Vec<(String, String, u64)> {
    poll("member rows with no suspect", || {
        let rows = members(client_file, endpoint);
        if rows.iter().any(|(_, state, _)| state == "suspect") {
            Err(format!("{rows:?}"))
        } else {
            Ok(rows)
        }
    })
}

/// Runs `jujud peer` expecting it to fail; returns its stderr.
pub fn peer_fails(args: &[&str]) -> String {
    peer_fails_with_token(args, None)
}

/// Runs `jujud peer` with `token` (if any) in `JUJUD_TOKEN`, expecting it
/// to fail; returns its stderr.
pub fn peer_fails_with_token(args: &[&str], token: Option<&str>) -> String {
    let mut cmd = Command::new(jujud_bin());
    if let Some(t) = token {
        cmd.env(TOKEN_ENV, t);
    }
    let mut child = cmd
        .arg("peer")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jujud");
    // A jujud that starts when it should have refused must fail the test,
    // not hang it: wait at most PEER_FAILS_DEADLINE_MS for it to exit.
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(PEER_FAILS_DEADLINE_MS);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for jujud") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "jujud did not exit within {PEER_FAILS_DEADLINE_MS} ms: it started instead of refusing"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "jujud unexpectedly succeeded");
    stderr
}

/// How long a `jujud peer` expected to refuse may take to exit (a join to
/// an unreachable seed takes up to its 5 s step, with retries).
pub const PEER_FAILS_DEADLINE_MS: u64 = 60_000;
