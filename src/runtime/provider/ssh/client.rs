//! The system OpenSSH client, one [`Client`] per pool host: every call runs
//! `ssh` with `BatchMode` (never a prompt), a connect timeout, and a
//! shared connection (`ControlMaster`/`ControlPath`/`ControlPersist`, one
//! socket per host in a 0700 dir) so repeated calls cost one round trip.
//! The host key is pinned: before the first call the host's keys are
//! scanned (`ssh-keyscan`), the one whose `ssh-keygen -l` fingerprint is
//! the pinned one is written alone into a known_hosts file, and ssh runs
//! with `StrictHostKeyChecking=yes` against that file only.
//!
//! Why OpenSSH and not a Rust SSH crate: it is the client operators already
//! trust and configure, it brings connection sharing and every key type,
//! and it adds no crypto stack to the build.
//!
//! Owns the client's files (the private key, mode 0600; known_hosts; the
//! control socket) under the state dir. Must never put a secret on a
//! command line or in a log, and never wait without a deadline: every call
//! ends within its `deadline_ms`, a host that does not answer by then is
//! `Unreachable`.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::cloud::HostEntry;
use crate::runtime::provider::ProviderError;

/// How long ssh may take to connect before the host counts as unreachable.
pub const CONNECT_TIMEOUT_SECS: u32 = 5;
/// How long a shared connection outlives its last call.
pub const CONTROL_PERSIST_SECS: u32 = 30;
/// The default deadline of one remote call.
pub const CALL_TIMEOUT_MS: u64 = 30_000;
/// How long a host's SSH port may take to accept a TCP connection before
/// each call: a dead or cut-off host is known in this time rather than
/// after ssh's connect timeout (a fencing stop, and a start skipping it,
/// both wait on it).
pub const PROBE_TIMEOUT_MS: u64 = 1_500;
/// How long `ssh-keyscan` may take.
pub const KEYSCAN_TIMEOUT_SECS: u32 = 5;
/// Most bytes of a call's output kept (the rest is cut).
pub const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
/// How often a call looks whether ssh has ended.
const WAIT_POLL_MS: u64 = 10;

static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Where this process keeps its ssh client files: set once by a manager
/// (under its data dir, so `destroy` finds its shared connections by
/// their path); else a per-process dir under the temp dir.
pub fn set_state_dir(dir: PathBuf) {
    let _ = STATE_DIR.set(dir);
}

pub fn state_dir() -> PathBuf {
    STATE_DIR
        .get_or_init(|| std::env::temp_dir().join(format!("jujud-ssh-{}", std::process::id())))
        .clone()
}

/// Closes every shared connection this process opened and removes its
/// client files (a short-lived `juju` command, at its end).
pub fn close_all() {
    let dir = state_dir();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for host in rd.flatten() {
            close_dir(&host.path());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Closes the shared connections to `hosts` only and removes their client
/// files (other users of this process's connections keep theirs).
pub fn close_hosts(hosts: &[HostEntry]) {
    for h in hosts {
        let dir = Client::new(h).dir;
        close_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn close_dir(dir: &Path) {
    let cm = dir.join("cm");
    if cm.exists() {
        let _ = Command::new("ssh")
            .args(["-F", "/dev/null", "-o"])
            .arg(format!("ControlPath={}", cm.display()))
            .args(["-O", "exit", "x"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A command for an OpenSSH tool that dies with the thread that runs it
/// (`PR_SET_PDEATHSIG`): a killed jujud leaves no `ssh`, `ssh-keyscan` or
/// `ssh-keygen` of its own running on its host. (The caller waits for the
/// child on that thread, so the thread outlives every call it makes; a
/// shared connection's master is forked by ssh and does not inherit it:
/// `destroy` finds it by its control path under the data dir.)
pub fn tool(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// What a remote command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One host's client.
pub struct Client {
    entry: HostEntry,
    dir: PathBuf,
}

/// Single-quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..6])
}

impl Client {
    pub fn new(entry: &HostEntry) -> Client {
        // The pin is part of the name: a host re-pinned (add-host with a
        // new host-key) never reuses a known_hosts trusting the old key.
        let dir = state_dir().join(short_hash(&format!(
            "{}@{}:{} {}",
            entry.user, entry.address, entry.port, entry.host_key
        )));
        Client { entry: entry.clone(), dir }
    }

    pub fn entry(&self) -> &HostEntry {
        &self.entry
    }

    fn host_err(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::Host { host: self.entry.address.clone(), reason: reason.into() }
    }

    fn unreachable(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::Unreachable { host: self.entry.address.clone(), reason: reason.into() }
    }

    /// The key file (0600) and the pinned known_hosts, made once.
    fn prepare(&self) -> Result<(), ProviderError> {
        crate::runtime::datadir::create_private_dir(&self.dir)
            .map_err(|e| self.host_err(format!("client dir {}: {e}", self.dir.display())))?;
        let key = self.dir.join("key");
        if std::fs::read_to_string(&key).ok().as_deref() != Some(self.entry.key.as_str()) {
            replace_private(&key, self.entry.key.as_bytes())
                .map_err(|e| self.host_err(format!("key file: {e}")))?;
        }
        if !self.dir.join("known_hosts").exists() {
            self.pin()?;
        }
        Ok(())
    }

    /// Scans the host's keys and keeps the pinned one; refuses when none
    /// has the pinned fingerprint.
    fn pin(&self) -> Result<(), ProviderError> {
        let out = tool("ssh-keyscan")
            .args([
                "-T",
                &KEYSCAN_TIMEOUT_SECS.to_string(),
                "-p",
                &self.entry.port.to_string(),
                &self.entry.address,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.host_err(format!("ssh-keyscan: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return Err(self.unreachable(format!(
                "no SSH answer on port {} within {KEYSCAN_TIMEOUT_SECS} s",
                self.entry.port
            )));
        }
        let mut got = Vec::new();
        for line in lines {
            let fp = fingerprint(&self.dir, line).map_err(|e| self.host_err(e))?;
            if fp == self.entry.host_key {
                replace_private(&self.dir.join("known_hosts"), format!("{line}\n").as_bytes())
                    .map_err(|e| self.host_err(format!("known_hosts: {e}")))?;
                return Ok(());
            }
            got.push(fp);
        }
        Err(self.host_err(format!(
            "host key of {} changed: pinned {}, got {}",
            self.entry.address,
            self.entry.host_key,
            got.join(" or ")
        )))
    }

    fn ssh_command(&self) -> Command {
        let mut c = tool("ssh");
        let o = |k: &str, v: String| format!("{k}={v}");
        c.args(["-F", "/dev/null", "-p", &self.entry.port.to_string(), "-i"])
            .arg(self.dir.join("key"));
        for opt in [
            o("BatchMode", "yes".into()),
            o("IdentitiesOnly", "yes".into()),
            o("PasswordAuthentication", "no".into()),
            o("ConnectTimeout", CONNECT_TIMEOUT_SECS.to_string()),
            o("StrictHostKeyChecking", "yes".into()),
            o("UserKnownHostsFile", self.dir.join("known_hosts").display().to_string()),
            o("GlobalKnownHostsFile", "/dev/null".into()),
            o("ControlMaster", "auto".into()),
            o("ControlPath", self.dir.join("cm").display().to_string()),
            o("ControlPersist", CONTROL_PERSIST_SECS.to_string()),
            o("ServerAliveInterval", "2".into()),
            o("ServerAliveCountMax", "3".into()),
            o("LogLevel", "ERROR".into()),
        ] {
            c.arg("-o").arg(opt);
        }
        c.arg(format!("{}@{}", self.entry.user, self.entry.address));
        c
    }

    /// Whether the host's SSH port accepts a TCP connection within
    /// [`PROBE_TIMEOUT_MS`]; `Unreachable` if not.
    pub fn probe(&self) -> Result<(), ProviderError> {
        use std::net::ToSocketAddrs;
        let addrs: Vec<std::net::SocketAddr> = (self.entry.address.as_str(), self.entry.port)
            .to_socket_addrs()
            .map_err(|e| self.unreachable(format!("its address does not resolve: {e}")))?
            .collect();
        let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
        let mut last = String::from("no address");
        for a in addrs {
            match std::net::TcpStream::connect_timeout(&a, timeout) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(self.unreachable(format!(
            "port {} does not accept a connection within {PROBE_TIMEOUT_MS} ms: {last}",
            self.entry.port
        )))
    }

    /// Runs `script` on the host (by its login shell), feeding `stdin`,
    /// within `deadline_ms`.
    pub fn run(
        &self,
        script: &str,
        stdin: Option<Box<dyn Read + Send>>,
        deadline_ms: u64,
    ) -> Result<Output, ProviderError> {
        self.probe()?;
        self.prepare()?;
        let out = self.run_once(script, stdin, deadline_ms)?;
        if out.code == 255 && out.stderr.contains("Host key verification failed") {
            // The host's key changed since it was pinned: scan again, which
            // names the key it has now.
            let _ = std::fs::remove_file(self.dir.join("known_hosts"));
            self.pin()?;
            return Err(self.host_err("host key verification failed"));
        }
        if out.code == 255 {
            return Err(self.classify(&out.stderr));
        }
        Ok(out)
    }

    /// ssh's own failures (exit 255), by what it printed.
    fn classify(&self, stderr: &str) -> ProviderError {
        let s = stderr.trim();
        let short: String = s
            .lines()
            .last()
            .unwrap_or("ssh ended (exit 255) without a message")
            .chars()
            .take(300)
            .collect();
        if s.contains("Permission denied") {
            self.host_err(format!(
                "wrong key: {} refused the key for {}",
                self.entry.address, self.entry.user
            ))
        } else if s.contains("timed out")
            || s.contains("No route")
            || s.contains("refused")
            || s.contains("unreachable")
            || s.contains("closed by")
            || s.contains("Broken pipe")
            || s.contains("reset")
        {
            self.unreachable(short)
        } else {
            self.host_err(format!("ssh: {short}"))
        }
    }

    fn run_once(
        &self,
        script: &str,
        stdin: Option<Box<dyn Read + Send>>,
        deadline_ms: u64,
    ) -> Result<Output, ProviderError> {
        let tag = format!("{}-{:x}", std::process::id(), rand_tag());
        let (out_path, err_path) =
            (self.dir.join(format!("out.{tag}")), self.dir.join(format!("err.{tag}")));
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| self.host_err(format!("{}: {e}", p.display())))
        };
        let (out_f, err_f) = (open(&out_path)?, open(&err_path)?);
        let mut cmd = self.ssh_command();
        // Files, not pipes: a shared connection's master, forked by the
        // first call, keeps that call's output descriptors open.
        cmd.arg("--").arg(script).stdout(out_f).stderr(err_f);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let result = (|| {
            let mut child =
                cmd.spawn().map_err(|e| self.host_err(format!("cannot run ssh: {e}")))?;
            let feeder = match (stdin, child.stdin.take()) {
                (Some(mut src), Some(mut dst)) => {
                    Some(std::thread::spawn(move || std::io::copy(&mut src, &mut dst).map(|_| ())))
                }
                _ => None,
            };
            let deadline = Instant::now() + Duration::from_millis(deadline_ms);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break s,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(self.unreachable(format!("no answer within {deadline_ms} ms")));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(WAIT_POLL_MS)),
                    Err(e) => return Err(self.host_err(format!("ssh: {e}"))),
                }
            };
            if let Some(f) = feeder {
                let _ = f.join();
            }
            Ok(Output {
                code: status.code().unwrap_or(-1),
                stdout: read_capped(&out_path),
                stderr: read_capped(&err_path),
            })
        })();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        result
    }
}

/// Replaces `path` with `bytes` (mode 0600) through a temporary name of
/// its own: calls to one host from several threads (a start, a stop, a
/// warming pass) may write the same file at once, and each must rename a
/// whole file of its own, never one another thread removed or truncated.
fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}-{:x}", std::process::id(), rand_tag()));
    let written = (|| {
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn rand_tag() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn read_capped(p: &Path) -> String {
    let mut s = Vec::new();
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(MAX_OUTPUT_BYTES).read_to_end(&mut s);
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// The `SHA256:...` fingerprint of one known_hosts line, by `ssh-keygen -l`.
fn fingerprint(dir: &Path, line: &str) -> Result<String, String> {
    let tmp = dir.join(format!("scan.{}-{:x}", std::process::id(), rand_tag()));
    std::fs::write(&tmp, format!("{line}\n")).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let out = tool("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&tmp)
        .stdin(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&tmp);
    let out = out.map_err(|e| format!("ssh-keygen: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_string).ok_or_else(|| {
        format!(
            "ssh-keygen could not read a scanned key: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pin_gets_its_own_known_hosts() {
        let e = HostEntry {
            address: "h".into(),
            user: "u".into(),
            port: 22,
            key: String::new(),
            host_key: "SHA256:a".into(),
            dir: "/d".into(),
            roles: vec![],
        };
        let repinned = HostEntry { host_key: "SHA256:b".into(), ..e.clone() };
        assert_ne!(Client::new(&e).dir, Client::new(&repinned).dir);
        assert_eq!(
            Client::new(&e).dir,
            Client::new(&e.clone()).dir,
            "one host, one set of client files"
        );
    }

    #[test]
    fn threads_writing_one_client_file_at_once_all_succeed_with_whole_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let body = "k".repeat(64 * 1024);
        std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..8).map(|_| s.spawn(|| replace_private(&path, body.as_bytes()))).collect();
            for h in handles {
                h.join().unwrap().expect("every writer succeeds");
            }
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("x'; echo pwned '")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x'; echo pwned '");
    }
}
