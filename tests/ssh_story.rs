//! The HA blueprint's story across separate hosts, on the ssh provider:
//! six namespace hosts with their own sshd (testkit/src/hosts.rs), an
//! environment bootstrapped in HA mode on three of them, a workload on two
//! enlisted machines, then the bootstrap manager's whole host killed:
//! `juju status` keeps answering, a config change made afterwards reaches
//! the workloads, a replacement manager appears on the free host without
//! anyone acting, and `juju destroy` leaves nothing running on any host.
//!
//! Needs root; outside CI a machine without it skips with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::agent::{presence, status, unit_status};
use common::hosts::Hosts;
use serde_json::Value;

/// A workload that reports a counter and its config every 200 ms.
const TICKER: &str = r#"i=0; while true; do i=$((i+1)); echo "tick $i port=$JUJU_CONFIG_PORT" > "$JUJU_STATUS_FILE"; sleep 0.2; done"#;
/// The longest any step of the story may take (a heal is the grace period,
/// 10 s, plus an install and a start over ssh).
const STEP_CAP_MS: u64 = 90_000;

fn juju(root: &Path, args: &[&str]) -> Output {
    Command::new(common::juju_bin()).env("JUJUD_ROOT", root).args(args).output().expect("run juju")
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = juju(root, args);
    assert!(
        out.status.success(),
        "juju {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait(client: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_millis(STEP_CAP_MS);
    loop {
        let out = common::juju(client, &["status", "--format", "json"]);
        if let Ok(st) = serde_json::from_slice::<Value>(&out.stdout) {
            if pred(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last status: {st:#}");
        } else {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The IPs of the alive managers.
fn manager_hosts(st: &Value) -> Vec<String> {
    let mut v: Vec<String> = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "manager" && m["state"] == "alive")
        .map(|m| m["addr"].as_str().unwrap().rsplit_once(':').unwrap().0.to_string())
        .collect();
    v.sort();
    v
}

/// Destroys the environment even when an assertion failed first.
struct Env {
    root: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = juju(&self.root, &["destroy", "--root", self.root.to_str().unwrap()]);
    }
}

#[test]
fn the_blueprint_story_across_separate_hosts() {
    let Some(mut hosts) = Hosts::for_test(6) else { return };
    // Hosts 0, 1, 2 and 5 may run managers; 3 and 4 are machines to enlist.
    let cloud = hosts.root.join("lab.yaml");
    let yaml = hosts.cloud_yaml(&[0, 1, 2, 3, 4, 5], |i| {
        Some(if i == 3 || i == 4 { "machine" } else { "manager" })
    });
    std::fs::write(&cloud, yaml).unwrap();
    let root = hosts.root.join("env");
    let ips: Vec<String> = hosts.hosts.iter().map(|h| h.addr.to_string()).collect();
    let (h0, h3, h4, h5) = (ips[0].clone(), ips[3].clone(), ips[4].clone(), ips[5].clone());
    {
        let env = Env { root: root.clone() };
        ok(
            &env.root,
            &[
                "bootstrap",
                "--ha",
                "3",
                "--cloud",
                cloud.to_str().unwrap(),
                "--root",
                root.to_str().unwrap(),
            ],
        );
        let client = root.join("client.yaml");
        let st = status(&client);
        let on = manager_hosts(&st);
        assert_eq!(on.len(), 3, "three managers alive: {:#}", st["members"]);
        assert!(
            on.iter().all(|h| !h.starts_with("127.")),
            "managers advertise their hosts' addresses: {on:?}"
        );
        assert!(on.contains(&h0), "the bootstrap manager runs on the first manager host: {on:?}");
        assert!(
            !on.contains(&h3) && !on.contains(&h4),
            "machine-only hosts run no manager: {on:?}"
        );
        // Enlist the two machine hosts and put the workload on them.
        let mut machines = Vec::new();
        for h in [&h3, &h4] {
            let out: Value = serde_json::from_str(&ok(
                &root,
                &[
                    "--client-config",
                    client.to_str().unwrap(),
                    "add-machine",
                    &format!("ssh:root@{h}"),
                    "--format",
                    "json",
                ],
            ))
            .unwrap();
            machines
                .push(out["machines"][0].as_str().expect("the enlisted machine's id").to_string());
        }
        wait(&client, "both enlisted machines' agents alive", |st| {
            machines.iter().all(|m| presence(st, m) == "alive")
        });
        let to = machines.join(",");
        let outcome: Value = serde_json::from_str(&ok(
            &root,
            &[
                "--client-config",
                client.to_str().unwrap(),
                "deploy",
                "web",
                "--command",
                TICKER,
                "--to",
                &to,
                "--format",
                "json",
            ],
        ))
        .unwrap();
        let units: Vec<String> = outcome["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_string())
            .collect();
        assert_eq!(units.len(), 2);
        wait(&client, "both units ticking", |st| {
            units.iter().all(|u| unit_status(st, u).contains("tick"))
        });
        // The bootstrap manager's host dies: every process on it, and its link.
        hosts.kill_host(0);
        let st = status(&client);
        assert!(st["members"].is_array(), "juju status keeps answering");
        common::agent::change(&client, &["config", "web", "port=9090"]);
        wait(&client, "the config change reaching both workloads", |st| {
            units.iter().all(|u| unit_status(st, u).contains("port=9090"))
        });
        let st = wait(&client, "a replacement manager on the free host", |st| {
            manager_hosts(st).contains(&h5) && manager_hosts(st).len() == 3
        });
        assert!(!manager_hosts(&st).contains(&h0), "the dead host is not counted");
        // The dead host cannot be cleaned (nothing runs there): destroy
        // says so, naming it and no other.
        let out = juju(&root, &["destroy", "--root", root.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success() || err.contains(&h0), "destroy: {err}");
        for ip in &ips[1..6] {
            assert!(!err.contains(&format!("host {ip} ")), "a live host was not cleaned: {err}");
        }
    }
    for i in 0..6 {
        assert!(
            hosts.jujud_pids(i).is_empty(),
            "host {i} still runs jujud: {:?}",
            hosts.jujud_pids(i)
        );
    }
}
