//! Workload processes for a machine agent: each unit's command runs as
//! `sh -c COMMAND` in its own process group, with its environment, its
//! output read by the agent into a size-rotated log file and the agent's
//! log ring (`juju debug-log`), and a status file it may write to. The
//! core decides when to start and stop; this module only does it and
//! reports back (started, exited, could not start, status message).
//!
//! Owns the child processes and the record of their process groups in the
//! data dir, so that a restarted agent first kills what an agent killed
//! with SIGKILL left behind (no workload runs twice). Must never decide a
//! restart by itself, and never read more of a status file than its bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::core::Input;
use crate::core::agent::{MAX_STATUS_BYTES, WorkloadCmd, WorkloadEvent};
use crate::runtime::logs::rotate::{LOG_FILES_KEPT, MAX_WORKLOAD_LOG_BYTES, RotatingFile};

/// How long a stopped workload has after SIGTERM before SIGKILL.
pub const STOP_GRACE_MS: u64 = 3_000;
/// How often running workloads' status files are read.
pub const STATUS_POLL_MS: u64 = 1_000;
/// Where units live in the data dir, and the record of process groups.
pub const UNITS_DIR: &str = "units";
pub const GROUPS_FILE: &str = "workloads.json";

/// A running workload, as remembered across agent restarts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Group {
    unit: String,
    pgid: i32,
    /// The process's start time in clock ticks since boot (from
    /// /proc/PID/stat), so a reused pid is never killed by mistake.
    start_ticks: u64,
}

struct Running {
    run: u64,
    pgid: i32,
    status_file: PathBuf,
    last_status: Option<String>,
}

/// The agent's workloads.
pub struct Workloads {
    dir: PathBuf,
    inbox: mpsc::Sender<Input>,
    running: Arc<Mutex<BTreeMap<String, Running>>>,
}

/// A file-system-safe name for a unit (`app/3` becomes `app-3`).
fn unit_dir_name(unit: &str) -> String {
    unit.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 counts from after the parenthesised command name.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

impl Workloads {
    /// Opens the units dir under `data_dir`, kills workloads a previous
    /// agent process left running, and starts the status poller.
    pub fn open(data_dir: &Path, inbox: mpsc::Sender<Input>) -> Workloads {
        // Absolute: workloads run in their unit's dir, and their status file
        // path must not depend on it.
        let dir = std::fs::canonicalize(data_dir)
            .unwrap_or_else(|_| data_dir.to_path_buf())
            .join(UNITS_DIR);
        if let Err(e) = super::datadir::create_private_dir(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the units dir");
        }
        let w = Workloads { dir, inbox, running: Arc::new(Mutex::new(BTreeMap::new())) };
        w.reap_leftovers();
        tokio::spawn(poll_status(w.running.clone(), w.inbox.clone()));
        w
    }

    fn reap_leftovers(&self) {
        let path = self.dir.join(GROUPS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else { return };
        let groups: Vec<Group> = serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "unreadable workload record; nothing reaped");
            Vec::new()
        });
        for g in groups {
            if start_ticks(g.pgid) == Some(g.start_ticks) {
                tracing::warn!(unit = %g.unit, pgid = g.pgid, "killing a workload left by an earlier agent process");
                signal_group(g.pgid, libc::SIGKILL);
            }
        }
        self.save();
    }

    fn save(&self) {
        let groups: Vec<Group> = {
            let running = self.running.lock().expect("workload table poisoned");
            running
                .iter()
                .filter_map(|(u, r)| {
                    Some(Group { unit: u.clone(), pgid: r.pgid, start_ticks: start_ticks(r.pgid)? })
                })
                .collect()
        };
        let bytes = serde_json::to_vec(&groups).expect("groups encode");
        if let Err(e) = super::datadir::write_atomic(&self.dir.join(GROUPS_FILE), &bytes) {
            tracing::error!(error = %e, "cannot record running workloads");
        }
    }

    /// Carries out one command of the core.
    pub fn apply(&self, cmd: WorkloadCmd) {
        match cmd {
            WorkloadCmd::Start { unit, run, command, env } => self.start(unit, run, &command, env),
            WorkloadCmd::Stop { unit, run } => self.stop(&unit, run),
        }
    }

    fn start(&self, unit: String, run: u64, command: &str, env: Vec<(String, String)>) {
        let unit_dir = self.dir.join(unit_dir_name(&unit));
        let status_file = unit_dir.join("status");
        let spawned = super::datadir::create_private_dir(&unit_dir)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                // Emptied and 0600 before the workload writes it (`>` keeps the
                // mode): an empty file is no status.
                let _ = std::fs::remove_file(&status_file);
                open_log(&status_file).map_err(|e| format!("status file: {e}"))?;
                let log = RotatingFile::open(
                    &unit_dir.join("workload.log"),
                    MAX_WORKLOAD_LOG_BYTES,
                    LOG_FILES_KEPT,
                )
                .map_err(|e| format!("log file: {e}"))?;
                let mut cmd = tokio::process::Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg(command)
                    .envs(env)
                    .env("JUJU_STATUS_FILE", &status_file)
                    .current_dir(&unit_dir);
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(false);
                // SAFETY: prctl is async-signal-safe; it only asks the kernel to
                // kill the child when this agent dies, so no workload outlives a
                // SIGKILLed agent by much (the record above covers the rest).
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let child = cmd.spawn().map_err(|e| e.to_string())?;
                Ok((child, log))
            });
        let mut child = match spawned {
            Ok((mut c, log)) => {
                let (out, err) = (c.stdout.take(), c.stderr.take());
                tokio::spawn(capture_output(unit.clone(), out, err, log));
                c
            }
            Err(error) => {
                tracing::warn!(%unit, run, %error, "workload could not start");
                return self.report(WorkloadEvent::SpawnFailed { unit, run, error });
            }
        };
        let pid = child.id().unwrap_or(0);
        self.running.lock().expect("workload table poisoned").insert(
            unit.clone(),
            Running { run, pgid: pid as i32, status_file, last_status: None },
        );
        self.save();
        tracing::info!(%unit, run, pid, "{}", crate::events::WORKLOAD_STARTED);
        self.report(WorkloadEvent::Started { unit: unit.clone(), run, pid });
        let (inbox, running) = (self.inbox.clone(), self.running.clone());
        tokio::spawn(async move {
            let (code, signal) = match child.wait().await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    (status.code(), status.signal())
                }
                Err(_) => (None, None),
            };
            // The group may hold children of the shell: end them too.
            signal_group(pid as i32, libc::SIGKILL);
            {
                let mut table = running.lock().expect("workload table poisoned");
                if table.get(&unit).is_some_and(|r| r.run == run) {
                    table.remove(&unit);
                }
            }
            tracing::info!(%unit, run, code = ?code, signal = ?signal, "{}", crate::events::WORKLOAD_EXITED);
            let _ = inbox
                .send(Input::Workload(WorkloadEvent::Exited { unit, run, code, signal }))
                .await;
        });
    }

    fn stop(&self, unit: &str, run: u64) {
        let pgid = {
            let table = self.running.lock().expect("workload table poisoned");
            match table.get(unit) {
                Some(r) if r.run == run => r.pgid,
                _ => return,
            }
        };
        signal_group(pgid, libc::SIGTERM);
        let running = self.running.clone();
        let unit = unit.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(STOP_GRACE_MS)).await;
            let still = running
                .lock()
                .expect("workload table poisoned")
                .get(&unit)
                .is_some_and(|r| r.run == run);
            if still {
                signal_group(pgid, libc::SIGKILL);
            }
        });
    }

    /// Stops every workload at once (the agent is leaving).
    pub fn stop_all(&self) {
        let table = self.running.lock().expect("workload table poisoned");
        for r in table.values() {
            signal_group(r.pgid, libc::SIGTERM);
        }
    }

    fn report(&self, ev: WorkloadEvent) {
        if self.inbox.try_send(Input::Workload(ev)).is_err() {
            tracing::warn!("driver inbox full; a workload event was dropped");
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(super::datadir::FILE_MODE).open(path)
}

/// Most bytes of one line of workload output kept as one log line; a
/// longer line is cut into pieces of this size.
pub const MAX_OUTPUT_LINE_BYTES: usize = crate::runtime::logs::MAX_LOG_LINE_BYTES;

/// Copies a workload's output, line by line, to its rotated
/// `workload.log` and to this agent's log ring (for `juju debug-log`),
/// until both pipes close (the workload and its children ended).
async fn capture_output(
    unit: String,
    out: Option<tokio::process::ChildStdout>,
    err: Option<tokio::process::ChildStderr>,
    mut log: RotatingFile,
) {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let read = |pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>, tx: mpsc::Sender<Vec<u8>>| async move {
        let mut reader = tokio::io::BufReader::new(pipe);
        loop {
            let mut line = Vec::new();
            // At most one piece per read: a line without an end is bounded.
            let mut limited = (&mut reader).take(MAX_OUTPUT_LINE_BYTES as u64);
            match limited.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    use tokio::io::AsyncReadExt;
    if let Some(out) = out {
        tokio::spawn(read(Box::new(out), tx.clone()));
    }
    if let Some(err) = err {
        tokio::spawn(read(Box::new(err), tx.clone()));
    }
    drop(tx);
    while let Some(line) = rx.recv().await {
        let _ = log.write_all(&line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            crate::runtime::logs::capture::workload_line(&unit, text.to_owned());
        }
    }
    let _ = log.flush();
}

/// Reads each running workload's status file now and then; a changed,
/// non-empty first line becomes its status message.
async fn poll_status(running: Arc<Mutex<BTreeMap<String, Running>>>, inbox: mpsc::Sender<Input>) {
    let mut tick = tokio::time::interval(Duration::from_millis(STATUS_POLL_MS));
    loop {
        tick.tick().await;
        let mut events = Vec::new();
        {
            let mut table = running.lock().expect("workload table poisoned");
            for (unit, r) in table.iter_mut() {
                let Some(text) = read_status(&r.status_file) else { continue };
                if r.last_status.as_deref() != Some(text.as_str()) {
                    r.last_status = Some(text.clone());
                    events.push(WorkloadEvent::Message { unit: unit.clone(), run: r.run, text });
                }
            }
        }
        for ev in events {
            if inbox.send(Input::Workload(ev)).await.is_err() {
                return;
            }
        }
    }
}

fn read_status(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut buf = vec![0u8; MAX_STATUS_BYTES];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text.lines().next()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}
