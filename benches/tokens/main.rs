//! Tokens bench (issue 18), real processes on loopback:
//!
//! (a) `--rounds N` (default 100) rounds of: create a reusable token,
//!     revoke it, SIGKILL the one manager as soon as `juju` prints the
//!     answer, restart it on its data dir, and from the moment the new
//!     process is spawned ask it to admit a manager with the revoked token
//!     every 10 ms for 1 s. Prints the joins admitted (must be 0).
//! (b) `--calls N` (default 100) calls of `juju add-machine -n 1000` on one
//!     manager; then `juju tokens revoke` of a new token and a new
//!     manager's join (timed), the bytes kept for tokens after 1 call and
//!     after all; then the manager restarts with its clock 2 h ahead
//!     (libfaketime) so every agent token (1 h) has expired past the
//!     skew margin, and the bytes kept once the sweep is done.
//!
//! `--only a` or `--only b` runs one part. Figures: median and worst,
//! never rounded up, with the machine's load.

use testkit::bench as common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use jujud::pki::CertRole;
use jujud::runtime::join::{self, JoinError};
use jujud::runtime::wire::Refusal;

/// How long each round asks for joins after the restart, and how often.
const ATTEMPT_WINDOW_MS: u64 = 1_000;
const ATTEMPT_EVERY_MS: u64 = 10;
/// Longest wait for a log line or a sweep.
const WAIT_CAP_MS: u64 = 120_000;
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

struct Manager {
    child: Child,
    lines: Receiver<serde_json::Value>,
}

/// A loopback port free for TCP and UDP right now (`common::free_port`).
fn loopback_port() -> u16 {
    common::free_port(&mut Vec::new()).expect("a free loopback port")
}

fn start(dir: &Path, addr: SocketAddr, env: &[(&str, &str)]) -> Manager {
    start_with(dir, addr, env, &[])
}

fn start_with(dir: &Path, addr: SocketAddr, env: &[(&str, &str)], extra: &[&str]) -> Manager {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jujud"));
    cmd.args([
        "peer",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &addr.to_string(),
        "--log-format",
        "json",
    ])
    .args(extra);
    cmd.envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn jujud");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    Manager { child, lines }
}

impl Manager {
    fn wait_for(&self, message: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(WAIT_CAP_MS);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["fields"]["message"] == message => return Ok(()),
                Ok(v) if v["level"] == "ERROR" => return Err(format!("{}", v["fields"])),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "no {message:?} within {WAIT_CAP_MS} ms (or the process exited)"
                    ));
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn juju(client: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_juju"))
        .arg("--client-config")
        .arg(client)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("juju {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn bytes_kept(client: &Path) -> Result<u64, String> {
    let out = juju(client, &["tokens", "list", "--limit", "1", "--format", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v["bytes_kept"].as_u64().ok_or_else(|| format!("no bytes_kept in {out}"))
}

fn median_worst(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(f64::total_cmp);
    format!("n={} median {:.3} worst {:.3}", v.len(), v[v.len() / 2], v[v.len() - 1])
}

/// Revokes `token_id`, SIGKILLs the manager the moment `juju` prints the
/// answer; returns the gap from reading the answer to the kill (ms).
fn revoke_then_kill(client: &Path, token_id: &str, m: &mut Manager) -> Result<f64, String> {
    let mut juju = Command::new(env!("CARGO_BIN_EXE_juju"))
        .arg("--client-config")
        .arg(client)
        .args(["tokens", "revoke", token_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(juju.stdout.take().unwrap()).read_line(&mut line).map_err(|e| e.to_string())?;
    let answered = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.child.id() as i32, libc::SIGKILL) };
    let gap_ms = answered.elapsed().as_secs_f64() * 1e3;
    let _ = m.child.wait();
    let _ = juju.wait();
    if line.trim() != "done" {
        return Err(format!("revoke answered {line:?}"));
    }
    Ok(gap_ms)
}

fn part_a(tmp: &Path, rounds: usize, rt: &tokio::runtime::Runtime) -> Result<(), String> {
    let (dir, addr) = (tmp.join("a"), SocketAddr::from(([127, 0, 0, 1], loopback_port())));
    let mut m = start(&dir, addr, &[]);
    m.wait_for("first join token recorded")?;
    let client = dir.join("client.yaml");
    let (mut admitted, mut refused_revoked, mut other, mut unreachable) = (0u64, 0u64, 0u64, 0u64);
    let (mut gaps, mut first_refusal) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let token = juju(&client, &["tokens", "create", "--ttl-secs", "600", "--reusable"])?;
        let id = token.split('.').nth(2).unwrap_or_default().to_string();
        gaps.push(revoke_then_kill(&client, &id, &mut m)?);
        let spawned = Instant::now();
        m = start(&dir, addr, &[]);
        // One attempt every 10 ms from the spawn on, each on its own (an
        // attempt dialed before the listener is up waits for it).
        let outcomes = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            let attempts = ATTEMPT_WINDOW_MS / ATTEMPT_EVERY_MS;
            for i in 0..attempts {
                let (token, fake): (String, SocketAddr) =
                    (token.clone(), "127.0.0.1:1".parse().unwrap());
                let node_id = 0x1000_0000_0000_0000 | (round as u64) << 16 | i;
                set.spawn(async move {
                    let mut reached = false;
                    let r = join::join_once(
                        &[addr],
                        &token,
                        node_id,
                        fake,
                        CertRole::Manager,
                        &mut reached,
                    )
                    .await;
                    (r, spawned.elapsed())
                });
                tokio::time::sleep(Duration::from_millis(ATTEMPT_EVERY_MS)).await;
            }
            let mut out = Vec::new();
            while let Some(Ok(done)) = set.join_next().await {
                out.push(done);
            }
            out
        });
        let mut seen_refusal: Option<Duration> = None;
        for (r, at) in outcomes {
            match r {
                Ok(_) => admitted += 1,
                Err(JoinError::Refused { refusal: Refusal::Revoked, .. }) => {
                    refused_revoked += 1;
                    seen_refusal = Some(seen_refusal.map_or(at, |s| s.min(at)));
                }
                Err(JoinError::Unreachable(_)) => unreachable += 1,
                Err(e) => {
                    other += 1;
                    if other <= 3 {
                        eprintln!("round {round}: {e}");
                    }
                }
            }
        }
        if let Some(t) = seen_refusal {
            first_refusal.push(t.as_secs_f64() * 1e3);
        }
        m.wait_for(jujud::events::MANAGER_STARTING).ok();
    }
    m.kill();
    println!("(a) rounds: {rounds}; joins admitted with the revoked token: {admitted}");
    println!(
        "(a) joins refused as revoked: {refused_revoked}; other refusals: {other}; unanswered (timed out): {unreachable}"
    );
    println!("(a) answer-to-SIGKILL gap ms: {}", median_worst(gaps));
    println!("(a) process spawn to first 'revoked' refusal ms: {}", median_worst(first_refusal));
    println!("(a) load: {}", common::loadavg());
    Ok(())
}

fn part_b(tmp: &Path, calls: usize) -> Result<(), String> {
    let (dir, addr) = (tmp.join("b"), SocketAddr::from(([127, 0, 0, 1], loopback_port())));
    let mut m = start(&dir, addr, &[]);
    m.wait_for("first join token recorded")?;
    let client = dir.join("client.yaml");
    let (mut times, mut after_one) = (Vec::new(), 0);
    for call in 1..=calls {
        let t = Instant::now();
        juju(&client, &["add-machine", "-n", "1000"])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if call == 1 {
            after_one = bytes_kept(&client)?;
        }
    }
    let after_all = bytes_kept(&client)?;
    println!("(b) add-machine -n 1000 calls: {calls}; ms per call: {}", median_worst(times));
    println!(
        "(b) bytes kept for tokens: after 1 call (1,000 machines) {after_one}; after {calls} calls ({} machines) {after_all}",
        calls * 1000
    );
    let token = juju(&client, &["tokens", "create", "--ttl-secs", "600"])?;
    let t = Instant::now();
    let doomed = juju(&client, &["tokens", "create", "--ttl-secs", "600"])?;
    juju(&client, &["tokens", "revoke", doomed.split('.').nth(2).unwrap_or_default()])?;
    println!(
        "(b) create + revoke of a token with {} machines: {:.3} ms",
        calls * 1000,
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let seed = addr.to_string();
    let mut joiner = start_with(
        &tmp.join("b-join"),
        SocketAddr::from(([127, 0, 0, 1], loopback_port())),
        &[("JUJUD_TOKEN", &token)],
        &["--join", &seed],
    );
    let joined = joiner.wait_for(jujud::events::MANAGER_STARTING);
    println!(
        "(b) a new manager's join (spawn to running as a member): {:.3} ms ({joined:?})",
        t.elapsed().as_secs_f64() * 1e3
    );
    joiner.kill();
    m.kill();
    // Restart 2 h ahead: every agent token (1 h) is past expiry + margin.
    let mut m = start(&dir, addr, &[("LD_PRELOAD", FAKETIME_LIB), ("FAKETIME", "+2h")]);
    m.wait_for(jujud::events::MANAGER_STARTING)?;
    let t = Instant::now();
    let mut kept = bytes_kept(&client)?;
    while kept > after_one && t.elapsed() < Duration::from_millis(WAIT_CAP_MS) {
        std::thread::sleep(Duration::from_millis(500));
        kept = bytes_kept(&client)?;
    }
    println!(
        "(b) bytes kept once those tokens expired: {kept} (after 1 call: {after_one}); swept in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("(b) load: {}", common::loadavg());
    m.kill();
    Ok(())
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(100);
    let calls = arg("--calls").and_then(|v| v.parse().ok()).unwrap_or(100);
    let only = arg("--only");
    let tmp = tempfile::tempdir().unwrap();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("jujud: {}; load at start: {}", env!("CARGO_BIN_EXE_jujud"), common::loadavg());
    let keep: PathBuf = tmp.path().to_path_buf();
    if only.as_deref() != Some("b")
        && let Err(e) = part_a(&keep, rounds, &rt)
    {
        println!("(a) failed: {e}");
    }
    if only.as_deref() != Some("a")
        && let Err(e) = part_b(&keep, calls)
    {
        println!("(b) failed: {e}");
    }
}
