//! Machine agents over real QUIC on loopback: the blueprint's story (the
//! bootstrap manager dies; status still answers, a config change still
//! reaches the workloads, unit statuses keep updating, no workload
//! restarts), agent.conf carrying an agent past the loss of every address
//! it was given, an agent's connection to a dead manager closed at once so
//! that its first attempt at the restarted one reaches it, and the bad
//! inputs: wrong, reused and revoked tokens, a command that does not exist,
//! a machine whose agent is gone.

mod common;

use common::agent::{
    Agent, agent_fails, change, presence, status, tokens, unit_status, wait_status,
};
use common::{Cluster, juju};

/// A workload that reports a counter and its config every 200 ms.
const TICKER: &str = r#"i=0; while true; do i=$((i+1)); echo "tick $i port=$JUJU_CONFIG_PORT" > "$JUJU_STATUS_FILE"; sleep 0.2; done"#;

fn tick(status: &str) -> u64 {
    status
        .split("tick ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_blueprint_story_bootstrap_manager_dies_and_agents_carry_on() {
    let mut c = Cluster::start(3);
    let file = c.peers[0].client_file();
    let seeds: Vec<_> = c.peers.iter().map(|p| p.addr).collect();
    // The client file learns every live manager from an answer.
    assert!(juju(&file, &["members"]).status.success());
    let outcome = change(&file, &["deploy", "web", "--command", TICKER, "-n", "2"]);
    let units: Vec<String> = outcome["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    let mut agents = Vec::new();
    for (i, (machine, token)) in tokens(&outcome).iter().enumerate() {
        let a = Agent::start(&c.tmp.path().join(format!("a{i}")), &seeds, Some(token));
        assert_eq!(&a.machine, machine);
        agents.push(a);
    }
    let before = wait_status(&file, "both units ticking", |st| {
        units.iter().all(|u| tick(&unit_status(st, u)) > 0)
    });
    for (a, u) in agents.iter().zip(&units) {
        assert_eq!(a.starts(u), 1);
        assert_eq!(presence(&before, &a.machine), "alive");
    }
    let bootstrap = c.peers[0].id.clone();
    c.peers[0].crash();
    // juju status keeps answering, through the others.
    let after = status(&file);
    assert_ne!(after["answered_by"].as_str().unwrap(), bootstrap);
    // Agents whose session was on the dead manager move to another.
    for a in &agents {
        let id = a.id.clone();
        a.log.wait_for(&format!("agent {id} on a live manager"), |l| {
            l.iter()
                .rev()
                .find(|v| common::message(v) == jujud::events::AGENT_SESSION_OPENED)
                .is_some_and(|v| common::field(v, "manager") != bootstrap)
        });
    }
    // A config change made afterwards reaches the agents and workloads.
    change(&file, &["config", "web", "port=9090"]);
    let last = wait_status(&file, "units reporting the new config", |st| {
        units.iter().all(|u| unit_status(st, u).contains("port=9090"))
    });
    // ...and the statuses keep updating.
    let first_ticks: Vec<u64> = units.iter().map(|u| tick(&unit_status(&last, u))).collect();
    wait_status(&file, "ticks advancing", |st| {
        units.iter().zip(&first_ticks).all(|(u, t)| tick(&unit_status(st, u)) > *t)
    });
    for (a, u) in agents.iter().zip(&units) {
        assert_eq!(
            a.starts(u),
            2,
            "one start, one restart for the config change; none for the manager's death"
        );
    }
}

#[test]
fn tokens_of_the_wrong_role_garbage_reused_and_revoked_are_refused_clearly() {
    let c = Cluster::start(1);
    let file = c.peers[0].client_file();
    let seeds = [c.peers[0].addr];
    let dir = |n: &str| c.tmp.path().join(n);
    let err = agent_fails(&dir("x1"), &seeds, Some(&c.peers[0].token()));
    assert!(err.contains("manager's join token"), "{err}");
    let err = agent_fails(&dir("x2"), &seeds, Some("jjd1.agent.nonsense"));
    assert!(err.contains("malformed"), "{err}");
    let outcome = change(&file, &["add-machine", "-n", "2"]);
    let toks = tokens(&outcome);
    let peer_err = common::peer_fails_with_token(
        &[
            "--data-dir",
            dir("p").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--join",
            &seeds[0].to_string(),
        ],
        Some(&toks[0].1),
    );
    assert!(peer_err.contains("run `jujud agent`"), "{peer_err}");
    let first = Agent::start(&dir("a1"), &seeds, Some(&toks[0].1));
    first.wait_session("first agent's session");
    let err = agent_fails(&dir("a2"), &seeds, Some(&toks[0].1));
    assert!(err.contains("token already used") && err.contains(&first.id), "a reused token: {err}");
    let token_id = toks[1].1.split('.').nth(2).unwrap().to_string();
    assert!(juju(&file, &["tokens", "revoke", &token_id]).status.success());
    let err = agent_fails(&dir("a3"), &seeds, Some(&toks[1].1));
    assert!(err.contains("revoked"), "{err}");
    let st = status(&file);
    assert_eq!(presence(&st, &toks[0].0), "alive");
    assert_eq!(presence(&st, &toks[1].0), "pending", "the revoked token's machine has no agent");
}

#[test]
fn agent_conf_finds_the_cluster_after_every_given_address_is_gone() {
    let mut c = Cluster::start(3);
    let file = c.peers[0].client_file();
    assert!(juju(&file, &["members"]).status.success());
    let outcome = change(&file, &["add-machine"]);
    let (_, token) = tokens(&outcome).remove(0);
    let only_seed = [c.peers[0].addr];
    let dir = c.tmp.path().join("a");
    let mut a = Agent::start(&dir, &only_seed, Some(&token));
    a.wait_session("first session");
    a.log.wait_for("agent.conf naming all three managers", |l| {
        l.iter().any(|v| {
            common::message(v) == jujud::events::AGENT_CONF_UPDATED
                && common::field(v, "managers").matches("127.0.0.1").count() == 3
        })
    });
    a.crash();
    c.peers[0].crash();
    // Restart with no --seeds at all: only agent.conf knows the others.
    let b = Agent::start(&dir, &[], None);
    let m = b.wait_session("a session through agent.conf alone");
    assert_ne!(m, c.peers[0].id);
    let st = wait_status(&file, "the agent alive again", |st| presence(st, &b.machine) == "alive");
    assert_eq!(presence(&st, &b.machine), "alive");
}

#[test]
fn a_missing_command_and_a_dead_agent_show_as_clear_statuses() {
    let c = Cluster::start(1);
    let file = c.peers[0].client_file();
    let seeds = [c.peers[0].addr];
    let outcome =
        change(&file, &["deploy", "broken", "--command", "no-such-command-here", "-n", "1"]);
    let unit = outcome["ids"][0].as_str().unwrap().to_string();
    let (_, token) = tokens(&outcome).remove(0);
    let mut a = Agent::start(&c.tmp.path().join("a"), &seeds, Some(&token));
    let st = wait_status(&file, "the error status", |st| {
        unit_status(st, &unit).starts_with("error: command not found")
    });
    assert!(unit_status(&st, &unit).contains("restart"), "{}", unit_status(&st, &unit));
    a.crash();
    let st = wait_status(&file, "the agent down", |st| presence(st, &a.machine) == "down");
    let shown = String::from_utf8_lossy(&juju(&file, &["status"]).stdout).to_string();
    assert!(shown.contains("lost (machine agent down)"), "{shown}");
    assert_eq!(st["status"]["units"][0]["agent"], "down");
    // Bad agent.conf contents never stop a restart that still has seeds.
    std::fs::write(a.dir.join("agent.conf"), "{\"format\":1,\"managers\":[").unwrap();
    let b = Agent::start(&a.dir, &[], None);
    b.wait_session("a session despite a truncated agent.conf");
}

/// The newest "agent session opened" line in `lines` as (session id, manager).
fn newest_session(lines: &[serde_json::Value]) -> Option<(u64, String)> {
    let v =
        lines.iter().rev().find(|v| common::message(v) == jujud::events::AGENT_SESSION_OPENED)?;
    Some((common::field(v, "session").parse().ok()?, common::field(v, "manager")))
}

/// Session opens by `agent` that reached the manager whose log is `lines`:
/// the ones let in, and (a lower bound) the ones its login limit refused.
fn opens_reaching(lines: &[serde_json::Value], agent: &str) -> u64 {
    lines
        .iter()
        .filter(|v| {
            matches!(
                common::message(v),
                jujud::events::AGENT_SESSION_SERVING | jujud::events::AGENT_LOGIN_RATE_LIMITED
            ) && common::field(v, "agent") == agent
        })
        .count() as u64
}

#[test]
fn an_agent_drops_its_connection_to_a_dead_manager_and_returns_on_the_first_attempt() {
    let mut c = Cluster::start(2);
    let file = c.peers[0].client_file();
    let seeds: Vec<_> = c.peers.iter().map(|p| p.addr).collect();
    let (_, token) = tokens(&change(&file, &["add-machine"])).remove(0);
    let a = Agent::start(&c.tmp.path().join("a"), &seeds, Some(&token));
    // The manager rendezvous hashing gives this agent, as its core computes it.
    let key: jujud::core::NodeId = a.id.parse().unwrap();
    let ids = c.peers.iter().map(|p| p.id.parse::<jujud::core::NodeId>().unwrap());
    let best = jujud::core::agent::choice::best(key.0, ids).unwrap().to_string();
    let i = c.peers.iter().position(|p| p.id == best).unwrap();
    a.log.wait_for("a session on the best manager", |l| {
        newest_session(l).is_some_and(|(_, m)| m == best)
    });
    c.peers[i].crash();
    let down = |l: &[serde_json::Value]| {
        l.iter()
            .find(|v| {
                common::message(v) == jujud::events::MEMBER_DOWN
                    && common::field(v, "member") == best
            })
            .cloned()
    };
    a.log.wait_for("the agent to see its manager down", |l| down(l).is_some());
    // The dead connection is closed at once, not left to the idle timeout,
    // where a restart at the same address would be sent to through it.
    assert_eq!(common::field(&down(&a.log.snapshot()).unwrap(), "closed_connection"), "true");
    a.log.wait_for("a session on the other manager", |l| {
        newest_session(l).is_some_and(|(_, m)| m != best)
    });
    let (elsewhere, _) = newest_session(&a.log.snapshot()).unwrap();
    c.restart(i);
    a.log.wait_for("the agent back on the restarted manager", |l| {
        newest_session(l).is_some_and(|(_, m)| m == best)
    });
    // Its first attempt at the restarted manager reached the new process:
    // it was dialled afresh, not sent down the dead one's connection (where
    // it would be lost, and only a later attempt would get through). The
    // agent numbers every open it tries (session ids), so each id after
    // `elsewhere` is one attempt, and every attempt at the restarted manager
    // must have reached it. An attempt the new process refused or answered
    // too late for a starved agent (who then tries again) did reach it, so
    // it counts on both sides: the move back may take more than one
    // attempt, but never one lost in an old connection.
    let lines = a.log.snapshot();
    let (back, _) = newest_session(&lines).unwrap();
    let opened_on_the_other = lines
        .iter()
        .filter(|v| common::message(v) == jujud::events::AGENT_SESSION_OPENED)
        .filter_map(|v| Some((common::field(v, "session").parse::<u64>().ok()?, v)))
        .filter(|(s, v)| *s > elsewhere && *s < back && common::field(v, "manager") != best)
        .count() as u64;
    let attempts = back - elsewhere - opened_on_the_other;
    c.peers[i].log.wait_for(
        &format!(
            "all {attempts} of the agent's session attempts since session {elsewhere} to reach \
             the restarted manager (one that did not went down the dead manager's connection)"
        ),
        |l| opens_reaching(l, &a.id) >= attempts,
    );
}
