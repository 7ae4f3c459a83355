//! The separate-hosts test bed itself (testkit/src/hosts.rs): each host is
//! its own network namespace with its own sshd, reachable from the test
//! (the operator's workstation) with the bed's key and a pinned host key;
//! a killed host leaves no process behind, and a cut link makes it silent
//! until restored. Needs root; skipped with a reason otherwise unless in CI.

mod common;

use common::hosts::Hosts;

#[test]
fn each_host_is_its_own_namespace_reached_over_ssh_and_dies_whole() {
    let Some(mut hosts) = Hosts::for_test(2) else { return };
    for i in 0..2 {
        let out = hosts.ssh(i, "ip -4 -o addr show");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let addrs = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            addrs.contains(&format!("{}/24", hosts.hosts[i].addr)),
            "runs inside host {i}: {addrs}"
        );
        assert!(!addrs.contains(&format!("{}/24", hosts.hosts[1 - i].addr)), "and only there");
        assert!(hosts.hosts[i].host_key.starts_with("SHA256:"));
    }
    let env = hosts.ssh(0, "echo \"t=$PYENV_REHASH_TIMEOUT\"");
    assert!(
        String::from_utf8_lossy(&env.stdout).contains("t=1"),
        "a stale pyenv lock costs a session 1 s, not 60"
    );
    // A process started over ssh outlives the session, as an instance does.
    let out = hosts.ssh(1, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo started");
    assert!(out.status.success());
    assert!(hosts.pids(1).len() >= 2, "sshd and the sleeper");
    hosts.link(0, false);
    assert!(!hosts.ssh(0, "true").status.success(), "a cut host does not answer");
    hosts.link(0, true);
    assert!(hosts.ssh(0, "true").status.success(), "and answers again once restored");
    hosts.kill_host(1);
    assert!(hosts.pids(1).is_empty(), "a dead host runs nothing: {:?}", hosts.pids(1));
    assert!(!hosts.ssh(1, "true").status.success());
}
