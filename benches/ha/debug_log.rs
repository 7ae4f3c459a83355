//! `juju debug-log` latency: a unit writes a line holding the wall-clock
//! time of its write (nanoseconds) five times a second; a live
//! `juju debug-log --format json` reads them; each line's latency is the
//! time it was read minus the time it carries (one machine, one clock).
//!
//! Owns that measurement. Must never wait without a cap, and never leave
//! its `juju debug-log` running.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use testkit::stats::Samples;

/// How long the whole measurement may take before it gives up.
pub const DEBUG_LOG_CAP_MS: u64 = 120_000;
/// The unit's command: a stamped line every 200 ms.
const STAMPER: &str = r#"while :; do echo "stamp $(date +%s%N)"; sleep 0.2; done"#;

fn now_ns() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Deploys the stamping unit in the environment under `root` and returns
/// `samples` latencies in ms (the first 10 lines, which may come from the
/// history, are left out).
pub fn measure(root: &Path, samples: usize) -> Result<Samples, String> {
    let juju = env!("CARGO_BIN_EXE_juju");
    let out = Command::new(juju)
        .env("JUJUD_ROOT", root)
        .args(["deploy", "stamper", "--command", STAMPER])
        .output()
        .map_err(|e| format!("juju deploy: {e}"))?;
    if !out.status.success() {
        return Err(format!("juju deploy: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut child = Command::new(juju)
        .env("JUJUD_ROOT", root)
        .args(["debug-log", "--format", "json", "--application", "stamper", "-n", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("juju debug-log: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Stamped as soon as read, before parsing.
            if tx.send((now_ns(), line)).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_millis(DEBUG_LOG_CAP_MS);
    let mut got = Samples::default();
    let mut skipped = 0;
    let result = loop {
        if got.len() >= samples {
            break Ok(got);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((read_ns, line)) = rx.recv_timeout(left) else {
            break Err(format!("only {} stamped lines within {DEBUG_LOG_CAP_MS} ms", got.len()));
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let Some(written) = v["message"].as_str().and_then(|m| m.strip_prefix("stamp ")) else {
            continue;
        };
        let Ok(written_ns) = written.trim().parse::<u128>() else { continue };
        if skipped < 10 {
            skipped += 1;
            continue;
        }
        got.push(read_ns.saturating_sub(written_ns) as f64 / 1e6);
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}
