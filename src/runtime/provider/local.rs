//! The local provider: an instance is a detached `jujud` process (a manager
//! or an agent) in its own session, with its own data dir under the
//! provider root and its own loopback address (127.0.X.Y, one per
//! instance), so a whole HA environment runs on one machine and can be
//! killed and restarted for real.
//!
//! Layout under the root: `lock` (held while starting) and
//! `instances/<name>/` with `instance.json`, `data/` (the instance's data
//! dir) and `jujud.log`. Addresses come from one machine-wide counter
//! (see [`MACHINE_DIR`]).
//!
//! Owns that layout. Must never start a second process under a name that
//! exists (the instance dir is created exclusively, under the lock, and
//! stays after a stop as a tombstone), and never signal a process that is
//! not the one it started (the start time in /proc is checked, or, for a
//! process whose starter died before recording it, its `--data-dir` is
//! the instance's own).
//!
//! A start is recorded as `starting` (with its address) before the spawn
//! and as `running` (with the pid) after it. A starter that dies between
//! the two (a manager SIGKILLed while provisioning) leaves a process no
//! record names: the next start or stop of the name finds it by its data
//! dir and adopts it, and `destroy` kills every process whose data dir is
//! under the root.

use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use super::super::datadir::{DIR_MODE, FILE_MODE};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Launch, Provider, ProviderError, Started};

/// Every instance listens on this port, on its own address.
pub const INSTANCE_PORT: u16 = 17_070;
/// Instances get addresses 127.0.1.1 upwards; this many at most.
pub const MAX_INSTANCES: u32 = 60_000;
/// A graceful stop waits this long for the process to leave, then kills it.
pub const GRACEFUL_STOP_MS: u64 = 5_000;
/// The machine-wide directory (under the temp dir) that hands out
/// addresses, so environments under different roots never collide.
pub const MACHINE_DIR: &str = "jujud-local-provider";
/// How long a stop waits for a killed process to be gone.
pub const KILL_WAIT_MS: u64 = 2_000;
/// How often a stop looks whether the process is gone.
const STOP_POLL_MS: u64 = 20;
/// The state of a record written before its spawn.
const STARTING: &str = "starting";
/// Kill passes `destroy` makes over the root's processes (a starter killed
/// in one pass may have forked a child seen only in the next).
const DESTROY_PASSES: usize = 3;

/// `instance.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    pub machine: String,
    pub address: SocketAddr,
    pub pid: i32,
    /// The process's start time (clock ticks since boot, /proc/PID/stat).
    pub start_ticks: u64,
    /// `starting` (not yet spawned, or its starter died), `running` or
    /// `stopped`.
    pub state: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Addresses {
    next: u32,
}

/// A provider rooted at a directory.
pub struct LocalProvider {
    root: PathBuf,
    /// The `jujud` binary instances run (this process's own by default).
    jujud: PathBuf,
}

fn io(path: &Path, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Io { path: path.display().to_string(), reason: e.to_string() }
}

/// The start time of `pid`, if it runs.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

fn alive(i: &Instance) -> bool {
    start_ticks(i.pid) == Some(i.start_ticks) && !is_zombie(i.pid)
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Running processes (not zombies) whose command line holds
/// `--data-dir D` with D under `data_dir_prefix`: `(pid, D)`.
fn processes_with_data_dir(data_dir_prefix: &Path) -> Vec<(i32, PathBuf)> {
    let Ok(proc) = fs::read_dir("/proc") else { return Vec::new() };
    let pids = proc.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    pids.filter_map(|pid| {
        let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        let at = args.iter().position(|a| *a == b"--data-dir")?;
        let dir = PathBuf::from(std::str::from_utf8(args.get(at + 1)?).ok()?);
        (dir.starts_with(data_dir_prefix) && !is_zombie(pid)).then_some((pid, dir))
    })
    .collect()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid whose start time we just checked.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl LocalProvider {
    pub fn new(root: PathBuf) -> LocalProvider {
        let jujud = std::env::current_exe()
            .ok()
            .filter(|p| p.file_name().is_some_and(|n| n == "jujud"))
            .unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("jujud")))
                    .unwrap_or_else(|| "jujud".into())
            });
        LocalProvider { root, jujud }
    }

    /// Uses this `jujud` binary for new instances.
    pub fn with_jujud(mut self, jujud: PathBuf) -> LocalProvider {
        self.jujud = jujud;
        self
    }

    /// The `jujud` binary instances run.
    pub fn jujud(&self) -> &Path {
        &self.jujud
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.root.join("instances").join(name)
    }

    fn lock(&self) -> Result<File, ProviderError> {
        private_dir(&self.root.join("instances"))?;
        let path = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // SAFETY: flock on a file we own; blocks until other starters finish.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&path, std::io::Error::last_os_error()));
        }
        Ok(f)
    }

    /// The next loopback address no other instance on this machine uses,
    /// whichever root it belongs to: a machine-wide counter under a
    /// machine-wide lock, skipping addresses something already listens on.
    fn next_address(&self) -> Result<SocketAddr, ProviderError> {
        let dir = std::env::temp_dir().join(MACHINE_DIR);
        private_dir(&dir)?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        // SAFETY: flock on a file we own; released when `lock` drops.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&lock_path, std::io::Error::last_os_error()));
        }
        let path = dir.join("addresses.json");
        let mut a: Addresses =
            fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        for _ in 0..MAX_INSTANCES {
            let n = a.next % MAX_INSTANCES;
            a.next = (n + 1) % MAX_INSTANCES;
            let ip = Ipv4Addr::new(127, 0, (1 + n / 250) as u8, (1 + n % 250) as u8);
            let addr = SocketAddr::new(ip.into(), INSTANCE_PORT);
            if std::net::UdpSocket::bind(addr).is_ok() {
                super::super::datadir::write_atomic(
                    &path,
                    &serde_json::to_vec(&a).expect("encodes"),
                )
                .map_err(|e| io(&path, e))?;
                return Ok(addr);
            }
        }
        Err(ProviderError::NoAddress)
    }

    /// The record of instance `name`.
    pub fn instance(&self, name: &str) -> Result<Instance, ProviderError> {
        let path = self.instance_dir(name).join("instance.json");
        let bytes = fs::read(&path).map_err(|_| ProviderError::NoSuchInstance(name.into()))?;
        serde_json::from_slice(&bytes).map_err(|e| io(&path, e))
    }

    fn record(&self, i: &Instance) -> Result<(), ProviderError> {
        let path = self.instance_dir(&i.name).join("instance.json");
        super::super::datadir::write_atomic(&path, &serde_json::to_vec_pretty(i).expect("encodes"))
            .map_err(|e| io(&path, e))
    }

    /// Every instance recorded under the root.
    pub fn list(&self) -> Vec<Instance> {
        let Ok(dir) = fs::read_dir(self.root.join("instances")) else { return Vec::new() };
        let mut out: Vec<Instance> = dir
            .flatten()
            .filter_map(|e| self.instance(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn spawn(
        &self,
        launch: &Launch,
        dir: &Path,
        address: SocketAddr,
    ) -> Result<i32, ProviderError> {
        let log_path = dir.join("jujud.log");
        // Emptied, then appended to by both the process's own rotating
        // writer (`--log-file`) and its stderr (early failures).
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&log_path)
            .map_err(|e| io(&log_path, e))?;
        let log = OpenOptions::new()
            .append(true)
            .mode(FILE_MODE)
            .open(&log_path)
            .map_err(|e| io(&log_path, e))?;
        let err = log.try_clone().map_err(|e| io(&log_path, e))?;
        let mut cmd = Command::new(&self.jujud);
        cmd.arg(&launch.args[0])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(address.to_string())
            .arg("--log-file")
            .arg(&log_path);
        if launch.manager {
            // Managers serve the dashboard over TCP on the port number
            // their QUIC (UDP) listener has.
            cmd.arg("--dashboard-listen").arg(address.to_string());
        }
        cmd.args(&launch.args[1..])
            .envs(launch.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // SAFETY: setsid is async-signal-safe; it detaches the instance
        // from whoever started it, as a machine is from its provisioner.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ProviderError::Spawn {
            name: launch.name.clone(),
            reason: e.to_string(),
        })?;
        let pid = child.id() as i32;
        // Reap it when it ends, so a stopped instance leaves no zombie.
        std::thread::spawn(move || child.wait());
        Ok(pid)
    }
}

/// Creates a dir (and missing parents) mode 0700, tightening an existing
/// one an older jujud left open to others (with a log line).
fn private_dir(dir: &Path) -> Result<(), ProviderError> {
    super::super::datadir::create_private_dir(dir).map_err(|e| io(dir, e))
}

impl Provider for LocalProvider {
    fn start(&self, launch: &Launch) -> Result<Started, ProviderError> {
        let _lock = self.lock()?;
        let dir = self.instance_dir(&launch.name);
        let mut address = None;
        if fs::DirBuilder::new().mode(DIR_MODE).create(&dir).is_err() {
            match self.instance(&launch.name) {
                Ok(i) if i.state != STARTING => {
                    return Ok(Started { address: i.address, existed: true });
                }
                record => {
                    let record = record.ok();
                    if let Some(i) = self.adopt(&launch.name, &launch.machine, record.as_ref()) {
                        return Ok(Started { address: i.address, existed: true });
                    }
                    // Its starter died before spawning it: nothing of it runs.
                    address = record.map(|i| i.address);
                }
            }
        }
        let address = match address {
            Some(a) => a,
            None => self.next_address()?,
        };
        let mut inst = Instance {
            name: launch.name.clone(),
            machine: launch.machine.clone(),
            address,
            pid: 0,
            start_ticks: 0,
            state: STARTING.into(),
        };
        self.record(&inst)?;
        inst.pid = self.spawn(launch, &dir, address)?;
        inst.start_ticks = start_ticks(inst.pid).unwrap_or(0);
        inst.state = "running".into();
        self.record(&inst)?;
        Ok(Started { address, existed: false })
    }

    fn stop(&self, name: &str, _at: Option<&str>, graceful: bool) -> Result<(), ProviderError> {
        let mut inst = {
            // Under the lock: a `starting` record is then one whose starter died.
            let _lock = self.lock()?;
            match self.instance(name) {
                Ok(i) if i.state != STARTING => i,
                Ok(record) => match self.adopt(name, &record.machine.clone(), Some(&record)) {
                    Some(i) => i,
                    None => return self.record(&Instance { state: "stopped".into(), ..record }),
                },
                Err(e) if !self.instance_dir(name).is_dir() => return Err(e),
                Err(_) => match self.adopt(name, "", None) {
                    Some(i) => i,
                    None => return Ok(()), // never spawned: nothing runs
                },
            }
        };
        if inst.state == "stopped" && !alive(&inst) {
            return Ok(());
        }
        if alive(&inst) {
            if graceful {
                signal(inst.pid, libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_millis(GRACEFUL_STOP_MS);
                while alive(&inst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(STOP_POLL_MS));
                }
            }
            if alive(&inst) {
                // SIGKILL works on a frozen (SIGSTOPped) process too.
                signal(inst.pid, libc::SIGKILL);
                let deadline = Instant::now() + Duration::from_millis(KILL_WAIT_MS);
                while alive(&inst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(STOP_POLL_MS));
                }
                if alive(&inst) {
                    return Err(ProviderError::Spawn {
                        name: name.into(),
                        reason: format!("still running {KILL_WAIT_MS} ms after SIGKILL"),
                    });
                }
            }
        }
        inst.state = "stopped".into();
        self.record(&inst)
    }
}

impl LocalProvider {
    /// Kills every instance at once, recorded or not (a process whose
    /// starter died before recording it), and removes the root (`juju
    /// destroy`); returns how many processes were killed.
    pub fn destroy(&self) -> Result<usize, ProviderError> {
        let mut killed = std::collections::BTreeSet::new();
        for i in self.list().iter().filter(|i| alive(i)) {
            signal(i.pid, libc::SIGKILL);
            killed.insert(i.pid);
        }
        // Managers record their instances under the absolute root.
        let under =
            fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone()).join("instances");
        let ours = || {
            let mut v = processes_with_data_dir(&under);
            v.extend(processes_with_data_dir(&self.root.join("instances")));
            v
        };
        for _ in 0..DESTROY_PASSES {
            let found = ours();
            if found.is_empty() {
                break;
            }
            for (pid, _) in found {
                signal(pid, libc::SIGKILL);
                killed.insert(pid);
            }
            let deadline = Instant::now() + Duration::from_millis(KILL_WAIT_MS);
            while !ours().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(STOP_POLL_MS));
            }
        }
        if self.root.exists() {
            fs::remove_dir_all(&self.root).map_err(|e| io(&self.root, e))?;
        }
        Ok(killed.len())
    }

    /// The process of instance `name` that no complete record names (its
    /// starter died between spawning and recording it), found by its data
    /// dir and recorded as running.
    fn adopt(&self, name: &str, machine: &str, record: Option<&Instance>) -> Option<Instance> {
        let data = self.instance_dir(name).join("data");
        let (pid, _) = processes_with_data_dir(&data).into_iter().find(|(_, d)| *d == data)?;
        let listen = || -> Option<SocketAddr> {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            std::str::from_utf8(args.get(args.iter().position(|a| *a == b"--listen")? + 1)?)
                .ok()?
                .parse()
                .ok()
        };
        let address = record.map(|i| i.address).or_else(listen)?;
        let inst = Instance {
            name: name.into(),
            machine: machine.into(),
            address,
            pid,
            start_ticks: start_ticks(pid)?,
            state: "running".into(),
        };
        self.record(&inst).ok()?;
        tracing::warn!(instance = %name, pid, "adopted an instance whose starter died before recording it");
        Some(inst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(name: &str) -> Launch {
        Launch {
            name: name.into(),
            machine: "1-aaaa".into(),
            args: vec!["peer".into()],
            env: vec![],
            manager: true,
            host: None,
            busy: Vec::new(),
        }
    }

    /// An executable shell script `name` in `dir` with `body`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A stand-in for jujud that ignores its arguments and sleeps.
    fn fake_jujud(dir: &Path) -> PathBuf {
        script(dir, "fake-jujud", "exec sleep 30")
    }

    #[test]
    fn a_name_starts_once_gets_its_own_address_and_stops_for_good() {
        let bin = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = LocalProvider::new(tmp.path().join("root")).with_jujud(fake_jujud(bin.path()));
        let a = p.start(&sleeper("a")).unwrap();
        assert!(!a.existed);
        let again = p.start(&sleeper("a")).unwrap();
        assert!(again.existed, "a second start of one name is refused");
        assert_eq!(again.address, a.address);
        let b = p.start(&sleeper("b")).unwrap();
        assert_ne!(a.address.ip(), b.address.ip());
        let inst = p.instance("a").unwrap();
        assert!(alive(&inst));
        p.stop("a", None, false).unwrap();
        assert!(!alive(&inst), "a stop returns once the process is gone");
        assert_eq!(p.instance("a").unwrap().state, "stopped");
        assert!(p.start(&sleeper("a")).unwrap().existed, "a stopped name stays taken");
        p.stop("a", None, true).unwrap();
        assert!(matches!(p.stop("nope", None, true), Err(ProviderError::NoSuchInstance(_))));
        assert_eq!(p.destroy().unwrap(), 1);
        assert!(!tmp.path().join("root").exists());
    }

    /// A stand-in for jujud that keeps its arguments on its command line
    /// (as jujud does) and runs until killed.
    fn looping_jujud(dir: &Path) -> PathBuf {
        script(dir, "looping-jujud", "while :; do sleep 1; done")
    }

    /// The starter dies (a manager SIGKILLed while provisioning) after the
    /// spawn and before the record: the next start adopts the process
    /// instead of failing on the name for ever, and destroy kills it even
    /// when no record names it.
    #[test]
    fn a_process_whose_starter_died_before_recording_it_is_adopted_and_destroyed() {
        let bin = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = LocalProvider::new(tmp.path().join("root")).with_jujud(looping_jujud(bin.path()));
        let first = p.start(&sleeper("a")).unwrap();
        let pid = p.instance("a").unwrap().pid;
        let record = p.instance_dir("a").join("instance.json");
        fs::remove_file(&record).unwrap();
        let again = p.start(&sleeper("a")).unwrap();
        assert!(again.existed, "the running process is adopted, not started twice");
        assert_eq!((again.address, p.instance("a").unwrap().pid), (first.address, pid));
        fs::remove_file(&record).unwrap();
        // At least the instance; also a child of the stand-in caught between
        // its fork and its exec (it carries the same command line).
        assert!(p.destroy().unwrap() >= 1);
        assert!(processes_with_data_dir(tmp.path()).is_empty(), "destroy leaves no process behind");
    }

    /// The starter died after recording `starting` but before the spawn:
    /// nothing runs, so the next start spawns it, at the recorded address.
    #[test]
    fn a_start_cut_short_before_its_spawn_is_carried_out_by_the_next() {
        let bin = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = LocalProvider::new(tmp.path().join("root")).with_jujud(looping_jujud(bin.path()));
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        fs::create_dir_all(p.instance_dir("a")).unwrap();
        let starting = Instance {
            name: "a".into(),
            machine: "1-aaaa".into(),
            address,
            pid: 0,
            start_ticks: 0,
            state: STARTING.into(),
        };
        p.record(&starting).unwrap();
        let s = p.start(&sleeper("a")).unwrap();
        assert_eq!((s.existed, s.address), (false, address));
        assert!(alive(&p.instance("a").unwrap()));
        p.stop("a", None, false).unwrap();
        assert_eq!(p.instance("a").unwrap().state, "stopped");
        p.destroy().unwrap();
    }
}
