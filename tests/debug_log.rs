//! `juju debug-log` against a real HA environment (local provider, three
//! managers, a machine agent running a unit): every source in one merged
//! stream, each line once; filters by application, machine, level and
//! module; `--limit` ends a following stream; `-n`; and a live stream that
//! goes on, without a gap, when the managers it read from are SIGKILLed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::env::Env;
use serde_json::Value;

/// The failure bound of every awaited change (not a speed assertion).
const CAP: Duration = Duration::from_secs(60);

/// A unit that prints a numbered line five times a second.
const TICKER: &str =
    r#"echo "ticker starting" >&2; i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.2; done"#;

/// A following `juju debug-log`, killed when dropped (a failed assertion
/// included).
struct Reader(std::process::Child);

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

fn tick_of(line: &Value) -> Option<u64> {
    line["message"].as_str()?.strip_prefix("tick ")?.parse().ok()
}

impl Env {
    /// The pids of the running instances that are managers.
    fn manager_pids(&self) -> Vec<i32> {
        let members: Value =
            serde_json::from_str(&self.ok(&["members", "--format", "json"])).unwrap();
        let rows = members.get("members").unwrap_or(&members).as_array().unwrap().clone();
        // A live manager may show as suspect for a moment (a probe missed
        // on a starved machine): it is running all the same.
        let addrs: Vec<&str> = rows
            .iter()
            .filter(|m| {
                m["role"] == "manager" && (m["state"] == "alive" || m["state"] == "suspect")
            })
            .filter_map(|m| m["addr"].as_str())
            .collect();
        let pids: Vec<i32> = self
            .instances()
            .iter()
            .filter(|i| i["state"] == "running" && addrs.contains(&i["address"].as_str().unwrap()))
            .map(|i| i["pid"].as_i64().unwrap() as i32)
            .collect();
        assert_eq!(pids.len(), 3, "{members:#}");
        pids
    }

    fn log(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["debug-log", "--format", "json"];
        all.extend_from_slice(args);
        lines(&self.ok(&all))
    }
}

#[test]
fn debug_log_merges_every_source_once_filters_and_outlives_dead_managers() {
    let env = Env::bootstrap(3);
    env.ok(&["deploy", "ticker", "--command", TICKER]);
    let started = Instant::now();
    let ticks = loop {
        let got = env.log(&["--replay", "--no-tail", "--application", "ticker"]);
        if got.iter().filter_map(tick_of).count() >= 3 {
            break got;
        }
        assert!(started.elapsed() < CAP, "no ticks in debug-log: {got:?}");
        std::thread::sleep(Duration::from_millis(250)); // polling a command: no event to await
    };
    let unit = ticks[0]["unit"].as_str().unwrap().to_string();
    let machine = ticks[0]["machine"].as_str().unwrap().to_string();
    assert!(unit.starts_with("ticker/"), "{unit}");
    assert!(ticks.iter().all(|l| l["unit"] == unit.as_str() && l["module"] == "workload"));
    assert!(
        ticks.iter().any(|l| l["message"] == "ticker starting"),
        "stderr is captured too: {ticks:?}"
    );

    // Every source, each line once.
    let all = env.log(&["--replay", "--no-tail"]);
    let sources: BTreeSet<&str> = all.iter().map(|l| l["source"].as_str().unwrap()).collect();
    let managers = sources.iter().filter(|s| s.starts_with("manager-")).count();
    assert_eq!(managers, 3, "{sources:?}");
    assert!(sources.contains(format!("machine-{machine}").as_str()), "{sources:?}");
    assert!(sources.contains(format!("unit-{}", unit.replace('/', "-")).as_str()));
    let keys: BTreeSet<(String, u64, u64)> = all
        .iter()
        .map(|l| {
            (
                l["source"].as_str().unwrap().into(),
                l["boot"].as_u64().unwrap(),
                l["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len(), all.len(), "a line was shown twice");
    let times: Vec<u64> = all.iter().map(|l| l["at_unix_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "the history is merged in time order");

    // Filters.
    let on_machine = env.log(&["--replay", "--no-tail", "--machine", &machine[..6]]);
    assert!(!on_machine.is_empty() && on_machine.iter().all(|l| l["machine"] == machine.as_str()));
    let warnings = env.log(&["--replay", "--no-tail", "--level", "warning"]);
    assert!(warnings.iter().all(|l| l["level"] == "Warn" || l["level"] == "Error"), "{warnings:?}");
    let workload = env.log(&["--no-tail", "-n", "2", "--include-module", "workload"]);
    assert_eq!(workload.len(), 2);
    let not_workload = env.log(&["--replay", "--no-tail", "--exclude-module", "workload"]);
    assert!(!not_workload.is_empty() && not_workload.iter().all(|l| l["module"] != "workload"));
    // --limit ends a stream that would otherwise follow.
    assert_eq!(env.log(&["--replay", "--limit", "3"]).len(), 3);

    // Follow, then kill two of the three managers: the stream goes on from
    // the third, every tick once and none missing.
    let mut child = Reader(
        Command::new(common::juju_bin())
            .env("JUJUD_ROOT", &env.root)
            .args(["debug-log", "--format", "json", "--application", "ticker", "-n", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str::<Value>(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    let next_tick = |rx: &mpsc::Receiver<Value>| loop {
        let line = rx.recv_timeout(CAP).expect("the live stream stopped");
        if let Some(t) = tick_of(&line) {
            return t;
        }
    };
    let mut seen = vec![next_tick(&rx)];
    for pid in env.manager_pids().into_iter().take(2) {
        // SAFETY: a process this test's environment started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    }
    let killed_at = seen[0];
    // About 20 s of ticks after the kill: past detection and the move of
    // the agent's log stream to the survivor.
    while *seen.last().unwrap() < killed_at + 100 {
        seen.push(next_tick(&rx));
    }
    drop(child);
    let expected: Vec<u64> = (seen[0]..=*seen.last().unwrap()).collect();
    assert_eq!(seen, expected, "every tick once, in order, across the managers' deaths");
}
