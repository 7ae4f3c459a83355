//! The HA blueprint's "we will know we are done when" points, on the local
//! provider with real processes: an environment started in HA mode whose
//! managers all serve clients and start instances; a default environment
//! moved to HA and back; business as usual when the primary (bootstrap)
//! manager fails, with a replacement started by nobody but the HA keeper.

mod common;

use std::process::Command;

use common::agent::{presence, unit_status, wait_status};
use common::env::Env;
use serde_json::Value;

fn managers(st: &Value, state: &str) -> usize {
    st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "manager" && m["state"] == state)
        .count()
}

#[test]
fn an_environment_started_in_ha_mode_serves_clients_from_every_manager_and_starts_instances() {
    let env = Env::bootstrap(3);
    // Bootstrap returns once every manager serves the environment: none
    // answers from a replica it has not synced yet.
    let st = common::agent::status(&env.client());
    assert_eq!(managers(&st, "alive"), 3, "{:#}", st["members"]);
    // Nor does it show a controller machine whose manager is alive and
    // serving as pending with no address (issue 16).
    let machines = st["status"]["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 3, "{machines:#?}");
    for m in machines {
        assert_eq!(m["status"], serde_json::json!(["started"]), "{m:#}");
        assert_eq!(m["addresses"].as_array().map(Vec::len), Some(1), "{m:#}");
    }
    for m in st["members"].as_array().unwrap().iter().filter(|m| m["role"] == "manager") {
        let out = common::juju(
            &env.client(),
            &["status", "--endpoint", m["addr"].as_str().unwrap(), "--format", "json"],
        );
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (
                seen["controller"]["desired"].as_u64(),
                seen["status"]["machines"].as_array().map(|a| a.len())
            ),
            (Some(3), Some(3)),
            "{m}"
        );
    }
    assert_eq!(st["controller"]["desired"], 3);
    let owners: Vec<&str> = st["controller"]["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o[0].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec!["provisioner", "ha-keeper", "cleaner"]);
    // The provisioner starts an agent instance for a new machine by itself.
    let out = env.ok(&[
        "deploy",
        "web",
        "--command",
        "echo up > \"$JUJU_STATUS_FILE\"; exec sleep 600",
        "--format",
        "json",
    ]);
    let outcome: Value = serde_json::from_str(&out).unwrap();
    let (unit, machine) = (
        outcome["ids"][0].as_str().unwrap().to_string(),
        outcome["machines"][0].as_str().unwrap().to_string(),
    );
    wait_status(&env.client(), "the unit running on a provisioned machine", |st| {
        presence(st, &machine) == "alive" && unit_status(st, &unit) == "active: up"
    });
    let agents: Vec<Value> =
        env.instances().into_iter().filter(|i| i["machine"] == machine).collect();
    assert_eq!(agents.len(), 1, "exactly one instance for the machine");
}

#[test]
fn a_default_environment_moves_to_ha_and_back() {
    let env = Env::bootstrap(1);
    let out = env.ok(&["enable-ha", "-n", "3"]);
    assert!(out.contains("HA 3/3"), "{out}");
    let st = wait_status(&env.client(), "3 alive", |st| {
        managers(st, "alive") == 3 && st["controller"]["alive"] == 3
    });
    assert_eq!(st["controller"]["desired"], 3);
    env.ok(&["enable-ha", "-n", "1", "--no-wait"]);
    // Retired managers leave gracefully: shown "left", never "down" (a
    // manager may be suspect for a moment as it goes, so this is awaited).
    let st = wait_status(&env.client(), "back to one manager, two left", |st| {
        managers(st, "alive") == 1 && managers(st, "left") == 2
    });
    assert_eq!(st["controller"]["desired"], 1);
    wait_status(&env.client(), "their instances stopped", |_| {
        env.instances().iter().filter(|i| i["state"] == "stopped").count() == 2
    });
    // A controller removed by hand: one fewer, no replacement.
    env.ok(&["enable-ha", "-n", "2"]);
    let st = wait_status(&env.client(), "2 alive", |st| managers(st, "alive") == 2);
    let second = st["status"]["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["jobs"][0] == "manage-environ")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .max()
        .unwrap();
    env.ok(&["remove-machine", &second]);
    let st = wait_status(&env.client(), "one manager after removing a controller", |st| {
        managers(st, "alive") == 1
    });
    assert_eq!(st["controller"]["desired"], 1);
}

#[test]
fn business_as_usual_when_the_bootstrap_manager_fails() {
    let env = Env::bootstrap(3);
    wait_status(&env.client(), "3 alive", |st| managers(st, "alive") == 3);
    env.ok(&["controller-config", "ha-grace-ms=2000"]);
    env.ok(&["members"]);
    let before = common::agent::status(&env.client());
    let victim_addr = env.instance("controller-0")["address"].as_str().unwrap().to_string();
    let survivor = before["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "manager" && m["addr"] != victim_addr.as_str())
        .unwrap();
    let survivor = survivor["addr"].as_str().unwrap().to_string();
    env.kill("controller-0");
    // Clients keep working through the others.
    let st = common::agent::status(&env.client());
    assert!(st["answered_by"].is_string());
    let out = env.ok(&["add-machine", "--format", "json"]);
    let machine =
        serde_json::from_str::<Value>(&out).unwrap()["machines"][0].as_str().unwrap().to_string();
    // The HA keeper replaces the dead manager by itself; the new machine is
    // provisioned meanwhile.
    let st = wait_status(&env.client(), "a replacement manager and the new machine", |st| {
        managers(st, "alive") == 3 && presence(st, &machine) == "alive"
    });
    assert!(managers(&st, "alive") == 3);
    // A survivor, which knew it, shows the dead manager as replaced (as
    // soon as its own view has caught up: it may be slow on a busy machine).
    let victim_state = || {
        let out =
            common::juju(&env.client(), &["members", "--endpoint", &survivor, "--format", "json"]);
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let m = seen["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["addr"] == victim_addr.as_str()).cloned());
        m.map(|m| m["state"].as_str().unwrap_or("").to_string()).unwrap_or_default()
    };
    wait_status(&env.client(), "the survivor showing the dead manager replaced", |_| {
        victim_state() == "replaced"
    });
    assert_eq!(env.instance("controller-0")["state"], "stopped");
    let per_machine = env.instances().iter().filter(|i| i["machine"] == machine).count();
    assert_eq!(per_machine, 1);
}

/// A join token for `role` bound to `machine`, minted from `peer`'s
/// cluster secret as the provider mints it.
fn machine_token(peer: &common::Peer, role: jujud::pki::CertRole, machine: &str) -> String {
    let secret =
        hex::decode(std::fs::read_to_string(peer.dir.join("cluster.secret")).unwrap().trim())
            .unwrap();
    let fingerprint = peer.token().split('.').nth(5).unwrap().to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    jujud::pki::issue_token(&secret, role, Some(machine), 600, now, &fingerprint)
        .unwrap()
        .to_string()
}

/// A manager started for a controller machine (its token names the
/// machine, as the provider mints it) is that machine's node from its
/// admission on, before it runs: killed before its own first claim, it is
/// healed after the grace period, not after the 30 s start grace of a
/// manager that never joined.
#[test]
fn a_manager_started_for_a_controller_machine_is_its_node_from_admission() {
    let tmp = tempfile::tempdir().unwrap();
    let first = common::Peer::start(&tmp.path().join("m0"), common::any_port(), &[]);
    let machine = common::agent::change(&first.client_file(), &["add-machine"])["machines"][0]
        .as_str()
        .unwrap()
        .to_string();
    let out = common::juju(
        &first.client_file(),
        &["tokens", "create", "--ttl-secs", "600", "--machine", &machine],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let seed = first.addr.to_string();
    let joiner = common::Peer::join(&tmp.path().join("m1"), common::any_port(), &seed, &token);
    // Asked at once: the joiner's own claim would come only at its first
    // control tick, a second after it starts.
    let st = common::agent::status(&first.client_file());
    let m = st["status"]["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == machine.as_str())
        .cloned()
        .unwrap();
    assert_eq!(m["agent"], serde_json::json!([joiner.id]), "{m:#}");
}

/// Starts `jujud agent` with `token` and `seeds` in `dir`, waits until it
/// says it asks again, checks that it still runs, and stops it.
fn assert_agent_keeps_asking(dir: &std::path::Path, seeds: &str, token: &str) {
    let mut cmd = Command::new(common::jujud_bin());
    cmd.args([
        "agent",
        "--data-dir",
        dir.to_str().unwrap(),
        "--seeds",
        seeds,
        "--log-format",
        "json",
    ])
    .env(common::TOKEN_ENV, token);
    let (mut child, log) = common::spawn_logged(cmd);
    let again = jujud::events::JOIN_RETRY;
    log.wait_for(again, |l| l.iter().any(|v| common::message(v) == again));
    assert!(child.try_wait().unwrap().is_none(), "the agent still runs, asking");
    let _ = child.kill();
    let _ = child.wait();
}

/// An agent whose machine its seeds do not know yet (created on a manager
/// whose write has not reached them) asks again instead of dying: the
/// provider starts it once, and nobody would start it again.
#[test]
fn an_agent_asks_again_while_its_machine_is_not_known_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let first = common::Peer::start(&tmp.path().join("m0"), common::any_port(), &[]);
    let token = machine_token(&first, jujud::pki::CertRole::Agent, "9-abcd");
    assert_agent_keeps_asking(&tmp.path().join("a"), &first.addr.to_string(), &token);
}

/// An agent whose seeds do not answer (an overloaded cluster looks the
/// same) keeps asking rather than dying on its first try.
#[test]
fn an_agent_keeps_asking_seeds_that_do_not_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let first = common::Peer::start(&tmp.path().join("m0"), common::any_port(), &[]);
    let token =
        common::agent::tokens(&common::agent::change(&first.client_file(), &["add-machine"]))[0]
            .1
            .clone();
    let silent = common::local(common::free_port()).to_string();
    assert_agent_keeps_asking(&tmp.path().join("a"), &silent, &token);
}

/// With a provider, the provisioner starts each new machine with a token
/// of its own, in the instance's environment: `add-machine` and `deploy`
/// show no live token and write no token file, and no process of the
/// environment has a token on its command line.
#[test]
fn with_a_provider_no_token_is_shown_or_put_on_a_command_line() {
    let env = Env::bootstrap(1);
    let out = env.ok(&["add-machine", "--format", "json"]);
    let outcome: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcome["tokens"], serde_json::json!([]), "{outcome:#}");
    let machine = outcome["machines"][0].as_str().unwrap().to_string();
    let token_dir = env.root.parent().unwrap().join("tokens");
    std::fs::create_dir(&token_dir).unwrap();
    let out = env.juju(&[
        "deploy",
        "web",
        "--command",
        "exec sleep infinity",
        "--token-dir",
        token_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("jjd1.") && !stderr.contains("jjd1."), "{stdout}\n{stderr}");
    assert!(stderr.contains("the provider starts its instance"), "{stderr}");
    assert_eq!(std::fs::read_dir(&token_dir).unwrap().count(), 0, "no token file written");
    wait_status(&env.client(), "the new machine's agent alive", |st| {
        presence(st, &machine) == "alive"
    });
    let root = env.root.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(root) {
            assert!(!line.contains("jjd1."), "a token on a command line: {line}");
        }
    }
}
