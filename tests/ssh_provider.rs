//! The ssh provider on real hosts: network namespaces on a bridge, each
//! with its own sshd (tests/common/hosts.rs). Needs root and openssh; it
//! skips with a printed reason otherwise.

mod common;


use common::hosts::Hosts;
use jujud::runtime::provider::ssh::{self, SshProvider, cloud};
use jujud::runtime::provider::{Launch, Provider, ProviderError};

fn bed(n: usize) -> Option<Hosts> {
    if let Err(why) = Hosts::available() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the hosts bed: {why}");
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Hosts::build(n))
}

/// Host `i`'s address.
fn addr(bed: &Hosts, i: usize) -> String {
    bed.hosts[i].addr.to_string()
}

/// The command lines of host `i`'s processes other than its sshd (jujud,
/// and anything jujud started: its shared ssh connections included).
fn processes(bed: &Hosts, i: usize) -> Vec<String> {
    bed.pids(i)
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default()).replace('\0', " "))
        .filter(|c| !c.is_empty() && !c.contains("sshd"))
        .collect()
}

fn provider(bed: &Hosts, hosts: &[usize], env: &str) -> SshProvider {
    let cloud_file = bed.write_cloud("cloud.yaml", hosts);
    let entries = cloud::load(&cloud_file).unwrap();
    SshProvider::new(cloud_file.display().to_string(), entries).with_environment(env).with_jujud(common::jujud_bin().into())
}

/// A manager that creates its own cluster (no join, no token): enough to
/// see the provider start, refuse a duplicate, stop and clean.
fn peer(name: &str) -> Launch {
    Launch { name: name.into(), machine: "1-aaaa".into(), args: vec!["peer".into(), "--log-format".into(), "json".into()], env: vec![], manager: true, host: None }
}

fn jujud_running(bed: &Hosts, i: usize) -> Vec<String> {
    processes(&bed, i).into_iter().filter(|c| c.contains("/bin/jujud")).collect()
}

#[test]
fn a_start_goes_on_a_free_host_once_and_a_stop_frees_it_and_leaves_nothing() {
    let Some(bed) = bed(2) else { return };
    let p = provider(&bed, &[0, 1], "env-a");
    let a = p.start(&peer("m-a-g1")).unwrap();
    assert!(!a.existed);
    assert_eq!(a.address.to_string(), format!("{}:17070", addr(&bed, 0)), "on the host's own address");
    let running = jujud_running(&bed, 0);
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(running[0].contains("--listen") && !running[0].contains("jjd1"), "{running:?}");
    assert!(p.start(&peer("m-a-g1")).unwrap().existed, "a second start of one name starts nothing");
    assert_eq!(jujud_running(&bed, 0).len(), 1);
    let b = p.start(&peer("m-b-g1")).unwrap();
    assert_eq!(b.address.to_string(), format!("{}:17070", addr(&bed, 1)), "host 0's slot is taken");
    let none = p.start(&peer("m-c-g1")).unwrap_err();
    assert!(matches!(none, ProviderError::NoFreeHost { .. }) && none.to_string().contains("no free host in cloud"), "{none}");
    p.stop("m-a-g1", Some(&a.address.to_string()), true).unwrap();
    assert!(jujud_running(&bed, 0).is_empty(), "{:?}", processes(&bed, 0));
    assert!(!bed.hosts[0].dir.join("instances/m-a-g1").exists(), "its dir is removed");
    assert!(p.start(&peer("m-a-g1")).unwrap().existed, "a stopped name never starts again");
    let c = p.start(&peer("m-c-g1")).unwrap();
    assert_eq!(c.address.to_string(), format!("{}:17070", addr(&bed, 0)), "the freed host is used again");
    p.stop("m-c-g1", None, false).unwrap();
    p.stop("m-b-g1", None, false).unwrap();
    assert!(matches!(p.stop("m-zz-g1", None, false), Err(ProviderError::NoSuchInstance(_))));
    for i in 0..2 {
        assert!(processes(&bed, i).is_empty(), "host {i}: {:?}", processes(&bed, i));
    }
    ssh::client::close_all();
}

/// Runs `juju ARGS` to its end; (success, stdout, stderr).
fn juju(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::juju_bin()).args(args).stdin(std::process::Stdio::null()).output().expect("run juju");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `juju members --format json` of the environment under `root`: the
/// alive managers' addresses.
fn alive_managers(root: &std::path::Path) -> Vec<String> {
    let cf = root.join("client.yaml").display().to_string();
    let (ok, out, err) = juju(&["--client-config", &cf, "--format", "json", "members"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["members"].as_array().unwrap().iter().filter(|m| m["role"] == "manager" && m["state"] == "alive").map(|m| m["addr"].as_str().unwrap().to_string()).collect()
}

#[test]
fn bootstrap_ha_3_runs_three_managers_on_three_hosts_and_destroy_leaves_nothing() {
    let Some(bed) = bed(4) else { return };
    let cloud_file = bed.write_cloud("cloud.yaml", &[0, 1, 2, 3]);
    let root = bed.root.join("env");
    let (c, r) = (cloud_file.display().to_string(), root.display().to_string());
    let (ok, out, err) = juju(&["bootstrap", "--ha", "3", "--cloud", &c, "--root", &r]);
    assert!(ok, "bootstrap failed: {out}\n{err}");
    let mut alive = alive_managers(&root);
    alive.sort();
    assert_eq!(alive.len(), 3, "{alive:?}");
    let hosts: std::collections::BTreeSet<&str> = alive.iter().map(|a| a.split(':').next().unwrap()).collect();
    assert_eq!(hosts.len(), 3, "three different hosts: {alive:?}");
    let bed_addrs: Vec<String> = (0..4).map(|i| addr(&bed, i)).collect();
    assert!(hosts.iter().all(|h| bed_addrs.iter().any(|b| b == h)), "host addresses, not loopback: {alive:?}");
    let meta = std::fs::metadata(root.join("cloud.json")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077, 0, "the pool copy (with keys) is private");
    let (ok, out, err) = juju(&["destroy", "--root", &r]);
    assert!(ok, "destroy failed: {out}\n{err}");
    for i in 0..4 {
        assert!(processes(&bed, i).is_empty(), "host {i} still runs {:?}", processes(&bed, i));
        assert!(!bed.hosts[i].dir.join("bin").exists(), "host {i}: the binary is removed");
    }
    assert!(!root.exists());
}
