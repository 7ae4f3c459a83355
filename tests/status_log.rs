//! `juju show-status-log` against a real environment (local provider): a
//! unit's status changes recorded in order, newest last, `-n`, JSON, ids
//! typed as prefixes; the machine's agent SIGKILLed shows as a presence
//! change; an unknown entity is refused.

mod common;

use std::time::{Duration, Instant};

use common::env::Env;
use serde_json::Value;

/// The failure bound of every awaited change (not a speed assertion).
const CAP: Duration = Duration::from_secs(60);

/// A unit that reports "one", waits until the file `go` exists (the test
/// creates it once "one" is in the history: a change faster than the
/// status readings may be missed, and the test must not race them), then
/// reports "two".
fn two_steps(go: &std::path::Path) -> String {
    format!(
        r#"echo one > "$JUJU_STATUS_FILE"; while [ ! -e '{}' ]; do sleep 0.1; done; echo two > "$JUJU_STATUS_FILE"; exec sleep infinity"#,
        go.display()
    )
}

impl Env {
    /// `entity`'s history, or `None` while the manager has none (a new
    /// entity is recorded at the manager's next reading, within a second).
    fn try_history(&self, entity: &str, n: u32) -> Option<Vec<(String, String)>> {
        let out = self.juju(&["show-status-log", entity, "-n", &n.to_string(), "--format", "json"]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let entries = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["kind"].as_str().unwrap().into(), e["status"].as_str().unwrap().into()))
            .collect();
        Some(entries)
    }

    fn history(&self, entity: &str, n: u32) -> Vec<(String, String)> {
        self.try_history(entity, n).expect("a history")
    }

    /// Polls `entity`'s history until `done` holds (a command to ask: no
    /// event to await).
    fn await_history(
        &self,
        entity: &str,
        done: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let started = Instant::now();
        loop {
            let h = self.try_history(entity, 100).unwrap_or_default();
            if done(&h) {
                return h;
            }
            assert!(started.elapsed() < CAP, "history of {entity} never got there: {h:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn a_units_and_a_machines_status_history_newest_last() {
    let env = Env::bootstrap(1);
    let go = env.root.with_file_name("go");
    let out = env.ok(&["deploy", "steps", "--command", &two_steps(&go), "--format", "json"]);
    let unit = serde_json::from_str::<Value>(&out).unwrap()["ids"][0].as_str().unwrap().to_string();
    let machine = unit.split_once('/').unwrap().1.to_string();
    // Typed as prefixes, as every id may be.
    let (unit_prefix, machine_prefix) =
        (format!("steps/{}", &machine[..6]), machine[..6].to_string());
    env.await_history(&unit_prefix, |h| h.iter().any(|(_, s)| s == "active: one"));
    std::fs::write(&go, b"").unwrap();
    let h = env.await_history(&unit_prefix, |h| h.iter().any(|(_, s)| s == "active: two"));
    let workload: Vec<&str> =
        h.iter().filter(|(k, _)| k == "workload").map(|(_, s)| s.as_str()).collect();
    let (one, two) = (
        workload.iter().position(|s| *s == "active: one").expect("one recorded"),
        workload.iter().position(|s| *s == "active: two").unwrap(),
    );
    assert!(one < two, "oldest first, newest last: {workload:?}");
    assert_eq!(workload.last(), Some(&"active: two"));
    let last = env.history(&unit_prefix, 1);
    assert_eq!(last, [("workload".to_string(), "active: two".to_string())]);
    let table = env.ok(&["show-status-log", &unit_prefix]);
    assert!(table.contains("active: two") && table.contains("TYPE"), "{table}");

    // The machine's agent SIGKILLed: its presence leaves "alive".
    let agent = env
        .instances()
        .into_iter()
        .find(|i| i["machine"] == machine.as_str() && i["state"] == "running")
        .expect("the machine's instance");
    // SAFETY: a process this test's environment started.
    assert_eq!(unsafe { libc::kill(agent["pid"].as_i64().unwrap() as i32, libc::SIGKILL) }, 0);
    let h = env.await_history(&machine_prefix, |h| {
        h.last().is_some_and(|(k, s)| k == "agent" && s != "alive")
    });
    assert!(h.iter().any(|(k, s)| k == "agent" && s == "alive"), "alive before: {h:?}");

    let nobody = env.juju(&["show-status-log", "zzzzzzzz-1"]);
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("zzzzzzzz-1"));
}
