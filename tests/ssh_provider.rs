//! The ssh provider on real hosts: network namespaces on a bridge, each
//! with its own sshd (testkit/src/hosts.rs). Needs root and openssh; it
//! skips with a printed reason otherwise.

mod common;

use common::hosts::Hosts;
use jujud::runtime::provider::ssh::{self, SshProvider, cloud};
use jujud::runtime::provider::{Launch, Provider, ProviderError};

/// Host `i`'s address.
fn addr(bed: &Hosts, i: usize) -> String {
    bed.hosts[i].addr.to_string()
}

/// The command lines of host `i`'s processes other than its sshd (jujud,
/// and anything jujud started: its shared ssh connections included), once
/// no warming pass visits the host (its checksum and copy run there).
fn processes(bed: &Hosts, i: usize) -> Vec<String> {
    let start = std::time::Instant::now();
    while ssh::warm::warming(&addr(bed, i)) && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bed.pids(i)
        .iter()
        .map(|p| {
            String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default(),
            )
            .replace('\0', " ")
        })
        .filter(|c| !c.is_empty() && !c.contains("sshd"))
        .collect()
}

fn provider(bed: &Hosts, hosts: &[usize], env: &str) -> SshProvider {
    let cloud_file = bed.write_cloud("cloud.yaml", hosts);
    let entries = cloud::load(&cloud_file).unwrap();
    SshProvider::new(cloud_file.display().to_string(), entries)
        .with_environment(env)
        .with_jujud(common::jujud_bin().into())
}

/// A manager that creates its own cluster (no join, no token): enough to
/// see the provider start, refuse a duplicate, stop and clean.
fn peer(name: &str) -> Launch {
    Launch {
        name: name.into(),
        machine: "1-aaaa".into(),
        args: vec!["peer".into(), "--log-format".into(), "json".into()],
        env: vec![],
        manager: true,
        host: None,
        busy: Vec::new(),
    }
}

fn jujud_running(bed: &Hosts, i: usize) -> Vec<String> {
    processes(bed, i).into_iter().filter(|c| c.contains("/bin/jujud")).collect()
}

#[test]
fn a_start_goes_on_a_free_host_once_and_a_stop_frees_it_and_leaves_nothing() {
    let Some(bed) = Hosts::for_test(2) else { return };
    let p = provider(&bed, &[0, 1], "env-a");
    let a = p.start(&peer("m-a-g1")).unwrap();
    assert!(!a.existed);
    assert_eq!(
        a.address.to_string(),
        format!("{}:17070", addr(&bed, 0)),
        "on the host's own address"
    );
    let running = jujud_running(&bed, 0);
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(running[0].contains("--listen") && !running[0].contains("jjd1"), "{running:?}");
    assert!(p.start(&peer("m-a-g1")).unwrap().existed, "a second start of one name starts nothing");
    assert_eq!(jujud_running(&bed, 0).len(), 1);
    let b = p.start(&peer("m-b-g1")).unwrap();
    assert_eq!(b.address.to_string(), format!("{}:17070", addr(&bed, 1)), "host 0's slot is taken");
    let none = p.start(&peer("m-c-g1")).unwrap_err();
    assert!(
        matches!(none, ProviderError::NoFreeHost { .. })
            && none.to_string().contains("no free host in cloud"),
        "{none}"
    );
    p.stop("m-a-g1", Some(&a.address.to_string()), true).unwrap();
    assert!(jujud_running(&bed, 0).is_empty(), "{:?}", processes(&bed, 0));
    assert!(!bed.hosts[0].dir.join("instances/m-a-g1").exists(), "its dir is removed");
    assert!(p.start(&peer("m-a-g1")).unwrap().existed, "a stopped name never starts again");
    let c = p.start(&peer("m-c-g1")).unwrap();
    assert_eq!(
        c.address.to_string(),
        format!("{}:17070", addr(&bed, 0)),
        "the freed host is used again"
    );
    p.stop("m-c-g1", None, false).unwrap();
    p.stop("m-b-g1", None, false).unwrap();
    assert!(matches!(p.stop("m-zz-g1", None, false), Err(ProviderError::NoSuchInstance(_))));
    for i in 0..2 {
        assert!(processes(&bed, i).is_empty(), "host {i}: {:?}", processes(&bed, i));
    }
    ssh::client::close_hosts(p.hosts());
}

#[test]
fn a_start_warms_the_next_free_host_but_never_one_of_another_environment() {
    let Some(bed) = Hosts::for_test(4) else { return };
    std::fs::create_dir_all(&bed.hosts[1].dir).unwrap();
    std::fs::write(bed.hosts[1].dir.join("environment"), "env-other\n").unwrap();
    let p = provider(&bed, &[0, 1, 2, 3], "env-a");
    let a = p.start(&peer("m-w-g1")).unwrap();
    assert_eq!(a.address.to_string(), format!("{}:17070", addr(&bed, 0)));
    // The pass runs on its own thread: await its end (bounded).
    let start = std::time::Instant::now();
    let busy = || (1..4).any(|i| ssh::warm::warming(&addr(&bed, i)));
    while busy() && start.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!busy(), "the warming pass never ended");
    let want = ssh::install::sha256_file(std::path::Path::new(common::jujud_bin())).unwrap();
    let have = |i: usize| {
        std::fs::read(bed.hosts[i].dir.join("bin/jujud")).ok().map(|b| {
            let d = ring::digest::digest(&ring::digest::SHA256, &b);
            hex::encode(d.as_ref())
        })
    };
    assert_eq!(have(1), None, "a host of another environment is never touched");
    assert_eq!(have(2), Some(want), "the next free host got this very binary before any start");
    assert_eq!(have(3), None, "one host warmed per start (WARM_HOSTS_PER_START)");
    assert!(jujud_running(&bed, 2).is_empty(), "warming starts nothing");
    p.stop("m-w-g1", None, false).unwrap();
    ssh::client::close_hosts(p.hosts());
}

#[test]
fn a_sweep_kills_a_binary_copy_left_under_way_and_removes_the_dir() {
    let Some(bed) = Hosts::for_test(1) else { return };
    let dir = bed.hosts[0].dir.clone();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    // What a killed manager's copy leaves on the host: a process writing
    // the binary's temporary file, its connection gone.
    let tmp = dir.join("bin/.jujud.4242");
    let mut copy = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.hosts[0].ns, "sh", "-c"])
        .arg(format!("exec sleep 120 > '{}'", tmp.display()))
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !tmp.exists() && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let p = provider(&bed, &[0], "env-a");
    let c = ssh::client::Client::new(&p.hosts()[0]);
    assert_eq!(ssh::host::sweep(&c).unwrap(), 1, "the copy is killed");
    let _ = copy.wait();
    assert!(!dir.exists(), "the dir is removed");
    assert!(processes(&bed, 0).is_empty(), "{:?}", processes(&bed, 0));
    ssh::client::close_hosts(p.hosts());
}

/// `systemctl show` of unit `jujud-NAME` on host `i`: `KEY=value` lines.
fn unit(bed: &Hosts, i: usize, name: &str) -> String {
    let props = "-p LoadState -p ActiveState -p Restart -p NRestarts -p MainPID";
    // A few tries: one ssh connection may time out on a loaded machine.
    let mut out = bed.ssh(i, &format!("systemctl show {props} jujud-{name}"));
    for _ in 0..3 {
        if out.status.success() {
            break;
        }
        out = bed.ssh(i, &format!("systemctl show {props} jujud-{name}"));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until host `i`'s unit for `name` shows `state`.
fn wait_unit(bed: &Hosts, i: usize, name: &str, state: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let u = unit(bed, i, name);
        if u.contains(state) || start.elapsed().as_secs() > 30 {
            return u;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn on_a_host_running_systemd_an_instance_is_a_unit_that_is_never_restarted() {
    let Some(bed) = Hosts::for_test_systemd(1) else { return };
    let p = provider(&bed, &[0], "env-s");
    assert!(bed.ssh(0, "test -d /run/systemd/system").status.success(), "systemd runs there");
    let a = p.start(&peer("m-s-g1")).unwrap();
    assert_eq!(a.address.to_string(), format!("{}:17070", addr(&bed, 0)));
    let u = unit(&bed, 0, "m-s-g1");
    assert!(u.contains("ActiveState=active") && u.contains("Restart=no"), "{u}");
    let running = jujud_running(&bed, 0);
    assert_eq!(running.len(), 1, "one jujud, the unit's: {running:?}");
    // The unit's main process is the jujud, and its pid file says so.
    let main = u.lines().find_map(|l| l.strip_prefix("MainPID=")).unwrap().to_string();
    let pid_file = format!("{}/instances/m-s-g1/pid", bed.hosts[0].dir.display());
    let pid_file = bed.ssh(0, &format!("cat {pid_file}"));
    assert_eq!(String::from_utf8_lossy(&pid_file.stdout).trim(), main, "the pid file");
    let cmdline = bed.ssh(0, &format!("tr '\\0' ' ' < /proc/{main}/cmdline"));
    assert!(String::from_utf8_lossy(&cmdline.stdout).contains("/bin/jujud"), "MainPID {main}");

    // A fenced instance killed on its host stays dead: no restart policy.
    assert!(bed.ssh(0, &format!("kill -KILL {main}")).status.success());
    let u = wait_unit(&bed, 0, "m-s-g1", "ActiveState=failed");
    let dead = !u.contains("ActiveState=active") && !u.contains("ActiveState=activating");
    assert!(dead && u.contains("NRestarts=0"), "{u}");
    assert!(jujud_running(&bed, 0).is_empty(), "nothing brought it back");

    // A start after that, then a graceful stop: the unit is gone too.
    p.stop("m-s-g1", None, false).unwrap();
    let b = p.start(&peer("m-t-g1")).unwrap();
    assert!(!b.existed);
    assert!(unit(&bed, 0, "m-t-g1").contains("ActiveState=active"));
    p.stop("m-t-g1", Some(&b.address.to_string()), true).unwrap();
    for name in ["m-s-g1", "m-t-g1"] {
        let u = unit(&bed, 0, name);
        assert!(u.contains("LoadState=not-found"), "unit of {name} left behind: {u}");
    }
    assert!(jujud_running(&bed, 0).is_empty());
    ssh::client::close_hosts(p.hosts());
}

/// An environment bootstrapped on the bed: its cloud file, root (and as a
/// string, for arguments), client file and bootstrap's output.
struct Env {
    cloud: String,
    root: std::path::PathBuf,
    r: String,
    cf: String,
    out: String,
}

/// Writes cloud file `name` of `hosts` and runs `juju bootstrap --ha 3` on
/// it under the bed's `env` root, which must succeed.
fn bootstrap_ha3(bed: &Hosts, name: &str, hosts: &[usize]) -> Env {
    let cloud_file = bed.write_cloud(name, hosts);
    let root = bed.root.join("env");
    let (c, r) = (cloud_file.display().to_string(), root.display().to_string());
    let (ok, out, err) = juju(&["bootstrap", "--ha", "3", "--cloud", &c, "--root", &r]);
    assert!(ok, "bootstrap failed: {out}\n{err}");
    let cf = root.join("client.yaml").display().to_string();
    Env { cloud: c, root, r, cf, out }
}

/// No process but sshd runs on any of `hosts`.
fn assert_nothing_runs(bed: &Hosts, hosts: impl IntoIterator<Item = usize>) {
    for i in hosts {
        assert!(processes(bed, i).is_empty(), "host {i} still runs {:?}", processes(bed, i));
    }
}

/// Runs `juju ARGS` to its end; (success, stdout, stderr).
fn juju(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::juju_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run juju");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `juju members --format json` of the environment under `root`: the
/// alive managers' addresses.
fn alive_managers(root: &std::path::Path) -> Vec<String> {
    let cf = root.join("client.yaml").display().to_string();
    let (ok, out, err) = juju(&["--client-config", &cf, "--format", "json", "members"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "manager" && m["state"] == "alive")
        .map(|m| m["addr"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bootstrap_ha_3_runs_three_managers_on_three_hosts_and_destroy_leaves_nothing() {
    let Some(bed) = Hosts::for_test(4) else { return };
    let Env { root, r, out, .. } = bootstrap_ha3(&bed, "cloud.yaml", &[0, 1, 2, 3]);
    eprintln!("{}", out.lines().next().unwrap_or(""));
    let mut alive = alive_managers(&root);
    alive.sort();
    assert_eq!(alive.len(), 3, "{alive:?}");
    let hosts: std::collections::BTreeSet<&str> =
        alive.iter().map(|a| a.split(':').next().unwrap()).collect();
    assert_eq!(hosts.len(), 3, "three different hosts: {alive:?}");
    let bed_addrs: Vec<String> = (0..4).map(|i| addr(&bed, i)).collect();
    assert!(
        hosts.iter().all(|h| bed_addrs.iter().any(|b| b == h)),
        "host addresses, not loopback: {alive:?}"
    );
    let meta = std::fs::metadata(root.join("cloud.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077,
        0,
        "the pool copy (with keys) is private"
    );
    let (ok, out, err) = juju(&["destroy", "--root", &r]);
    assert!(ok, "destroy failed: {out}\n{err}");
    for i in 0..4 {
        assert!(processes(&bed, i).is_empty(), "host {i} still runs {:?}", processes(&bed, i));
        assert!(!bed.hosts[i].dir.join("bin").exists(), "host {i}: the binary is removed");
    }
    assert!(!root.exists());
}

/// Bootstraps on `cloud` (text) under a fresh root and expects a refusal
/// that says `says`; then nothing runs on any host, no slot is held, and
/// the root holds no client file.
fn bootstrap_refused(bed: &Hosts, tag: &str, cloud: &str, says: &str) {
    let file = bed.root.join(format!("{tag}.yaml"));
    std::fs::write(&file, cloud).unwrap();
    let root = bed.root.join(format!("env-{tag}"));
    let (ok, out, err) = juju(&[
        "bootstrap",
        "--cloud",
        &file.display().to_string(),
        "--root",
        &root.display().to_string(),
    ]);
    assert!(!ok, "{tag}: bootstrap must fail: {out}");
    assert!(err.contains(says), "{tag}: the error says {says:?}: {err}");
    assert!(!err.contains("panicked"), "{tag}: {err}");
    for i in 0..bed.hosts.len() {
        assert!(processes(bed, i).is_empty(), "{tag}: host {i} runs {:?}", processes(bed, i));
        assert!(!bed.hosts[i].dir.join("slot").exists(), "{tag}: host {i}'s slot is free");
        assert!(
            !bed.hosts[i].dir.join("instances/controller-0").exists(),
            "{tag}: no instance dir left on host {i}"
        );
    }
    assert!(!root.join("client.yaml").exists(), "{tag}");
}

fn cloud_text(bed: &Hosts, i: usize) -> String {
    bed.cloud_yaml(&[i], |_| None)
}

#[test]
fn each_bad_input_gets_its_clear_error_and_leaves_no_half_started_instance() {
    let Some(bed) = Hosts::for_test(2) else { return };
    let good = cloud_text(&bed, 0);
    // A missing field, named with its host.
    let missing: String =
        good.lines().filter(|l| !l.contains("host-key")).map(|l| format!("{l}\n")).collect();
    bootstrap_refused(
        &bed,
        "missing",
        &missing,
        &format!("host {}: field host-key: missing", addr(&bed, 0)),
    );
    // A changed host key: pinned is host 1's, host 0 shows its own.
    let changed = good.replace(&bed.hosts[0].host_key, &bed.hosts[1].host_key);
    bootstrap_refused(
        &bed,
        "hostkey",
        &changed,
        &format!(
            "host key of {} changed: pinned {}, got {}",
            addr(&bed, 0),
            bed.hosts[1].host_key,
            bed.hosts[0].host_key
        ),
    );
    // A wrong key: one the host does not authorise.
    let other_key = bed.root.join("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", other_key.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let wrong = good.replace(&bed.key.display().to_string(), &other_key.display().to_string());
    bootstrap_refused(&bed, "wrongkey", &wrong, "wrong key");
    // A host used by another environment.
    std::fs::create_dir_all(&bed.hosts[0].dir).unwrap();
    std::fs::write(bed.hosts[0].dir.join("environment"), "some-other-environment\n").unwrap();
    bootstrap_refused(
        &bed,
        "otherenv",
        &good,
        &format!("host {} is used by environment some-other-environment", addr(&bed, 0)),
    );
    assert!(
        bed.hosts[0].dir.join("environment").exists(),
        "another environment's mark is left alone"
    );
    std::fs::remove_file(bed.hosts[0].dir.join("environment")).unwrap();
    // A dir that is not writable (a read-only mount: root writes anywhere else).
    let ro = bed.root.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    mount(&bed, 0, &["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro.to_str().unwrap()]);
    let unwritable = good.replace(
        &format!("dir: {}", bed.hosts[0].dir.display()),
        &format!("dir: {}/jujud", ro.display()),
    );
    bootstrap_refused(&bed, "readonly", &unwritable, "is not writable");
    umount(&bed, 0, &ro);
    // No room on disk.
    let small = bed.root.join("small");
    std::fs::create_dir_all(&small).unwrap();
    mount(&bed, 0, &["-t", "tmpfs", "-o", "size=1m", "tmpfs", small.to_str().unwrap()]);
    let full = good.replace(
        &format!("dir: {}", bed.hosts[0].dir.display()),
        &format!("dir: {}/jujud", small.display()),
    );
    bootstrap_refused(&bed, "diskfull", &full, "no room on disk");
    umount(&bed, 0, &small);
    // A host that does not answer (its link cut).
    bed.link(0, false);
    bootstrap_refused(&bed, "silent", &good, &format!("host {} does not answer", addr(&bed, 0)));
    bed.link(0, true);
}

/// The pid of host `i`'s sshd: its mount namespace is the one sessions
/// see (`ip netns exec` gives each process a mount namespace of its own).
fn sshd_pid(bed: &Hosts, i: usize) -> String {
    let p = bed
        .pids(i)
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sshd"))
        })
        .expect("sshd runs");
    p.to_string()
}

fn mount(bed: &Hosts, i: usize, args: &[&str]) {
    let pid = sshd_pid(bed, i);
    let st = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "mount"])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "mount {args:?}");
}

fn umount(bed: &Hosts, i: usize, dir: &std::path::Path) {
    let pid = sshd_pid(bed, i);
    let _ = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "umount", "-l"])
        .arg(dir)
        .status();
}

/// A copy cut short (the link dropped mid-stream) never becomes the
/// binary: the checksum is verified on the host before the rename.
#[test]
fn a_binary_copy_cut_short_is_never_installed() {
    let Some(bed) = Hosts::for_test(1) else { return };
    let entries = cloud::load(&bed.write_cloud("c.yaml", &[0])).unwrap();
    let c = ssh::client::Client::new(&entries[0]);
    let bin = std::path::Path::new(common::jujud_bin());
    let sum = ssh::install::sha256_file(bin).unwrap();
    let half = std::fs::read(bin).unwrap()[..1_000_000].to_vec();
    let err = ssh::install::install_from(&c, Box::new(std::io::Cursor::new(half)), &sum)
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    let installed = bed.hosts[0].dir.join("bin/jujud");
    assert!(!installed.exists(), "no binary from a cut copy");
    let leftovers: Vec<_> = std::fs::read_dir(bed.hosts[0].dir.join("bin"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "the temporary copy is removed: {leftovers:?}");
    assert!(ssh::install::install(&c, bin).unwrap(), "a whole copy installs");
    assert_eq!(ssh::install::sha256_file(&installed).unwrap(), sum);
    assert!(!ssh::install::install(&c, bin).unwrap(), "the same binary is not copied again");
    ssh::client::close_hosts(&entries);
}

/// The alive managers' addresses, asked until `pred` holds (each ask is
/// one `juju members`; the cap is only a failure bound).
fn wait_managers(
    root: &std::path::Path,
    what: &str,
    cap_ms: u64,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(cap_ms);
    loop {
        let cf = root.join("client.yaml").display().to_string();
        let (ok, out, _) = juju(&["--client-config", &cf, "--format", "json", "members"]);
        if ok {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            let alive: Vec<String> = v["members"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|m| m["role"] == "manager" && m["state"] == "alive")
                        .map(|m| m["addr"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            if pred(&alive) {
                return alive;
            }
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A manager's host dies (the bootstrap manager's): the keeper's fencing
/// stop cannot reach it, the node is revoked and a replacement starts on
/// the free host; destroy then leaves nothing on any live host.
#[test]
fn a_dead_managers_host_is_fenced_and_replaced_on_a_free_host() {
    let Some(mut bed) = Hosts::for_test(4) else { return };
    let Env { root, r, cf, .. } = bootstrap_ha3(&bed, "cloud.yaml", &[0, 1, 2, 3]);
    let (ok, _, err) = juju(&["--client-config", &cf, "controller-config", "ha-grace-ms=2000"]);
    assert!(ok, "{err}");
    let before = alive_managers(&root);
    let dead = addr(&bed, 0);
    assert!(
        before.iter().any(|a| a.starts_with(&format!("{dead}:"))),
        "the bootstrap manager runs on host 0: {before:?}"
    );
    let killed = std::time::Instant::now();
    bed.kill_host(0);
    let after = wait_managers(&root, "3 alive managers without host 0", 90_000, |a| {
        a.len() == 3 && !a.iter().any(|x| x.starts_with(&format!("{dead}:")))
    });
    eprintln!(
        "host killed -> 3 alive managers (grace 2 s): {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        after.iter().any(|a| a.starts_with(&format!("{}:", addr(&bed, 3)))),
        "the replacement runs on the free host: {after:?}"
    );
    // The keeper's log (hosts share the filesystem) says it fenced it.
    let fenced = (1..4).any(|i| {
        std::fs::read_dir(bed.hosts[i].dir.join("instances")).into_iter().flatten().flatten().any(
            |d| {
                std::fs::read_to_string(d.path().join("jujud.log"))
                    .is_ok_and(|l| l.contains(jujud::events::FENCED_UNREACHABLE))
            },
        )
    });
    assert!(fenced, "the dead host's instance was fenced by the keeper");
    let (ok, _, err) = juju(&["destroy", "--root", &r]);
    assert!(
        !ok && err.contains("does not answer"),
        "destroy names the dead host it could not clean: {err}"
    );
    assert_nothing_runs(&bed, 1..4);
}

/// The pool grows at run time (`juju add-host`), a host of it is enlisted
/// as a machine (`juju add-machine ssh:root@HOST`: its agent starts there,
/// with its token in a 0600 file, never on its command line), and
/// `remove-machine` stops it and frees the host.
#[test]
fn an_added_host_is_enlisted_as_a_machine_and_freed_by_remove_machine() {
    let Some(bed) = Hosts::for_test(2) else { return };
    let cloud_file = bed.write_cloud("one.yaml", &[0]);
    let root = bed.root.join("env");
    let (c, r) = (cloud_file.display().to_string(), root.display().to_string());
    let (ok, out, err) = juju(&["bootstrap", "--cloud", &c, "--root", &r]);
    assert!(ok, "bootstrap failed: {out}\n{err}");
    let cf = root.join("client.yaml").display().to_string();
    let more = bed.write_cloud("more.yaml", &[1]);
    let (ok, out, err) =
        juju(&["--client-config", &cf, "add-host", &more.display().to_string(), "--root", &r]);
    assert!(ok && out.contains(&format!("added host {}", addr(&bed, 1))), "{out}{err}");
    let (ok, out, err) =
        juju(&["--client-config", &cf, "add-machine", &format!("ssh:root@{}", addr(&bed, 1))]);
    assert!(ok, "{out}{err}");
    let machine = out.lines().next().unwrap_or("").trim().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(60_000);
    let agent = loop {
        if let Some(p) = processes(&bed, 1).into_iter().find(|c| c.contains(" agent ")) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agent on host 1; host 0 runs {:?}",
            processes(&bed, 0)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        agent.contains("--token-file") && !agent.contains("jjd1"),
        "the token is in a file: {agent}"
    );
    let (ok, out, err) =
        juju(&["--client-config", &cf, "add-machine", &format!("ssh:{}", addr(&bed, 1))]);
    assert!(!ok && err.contains("enlisted there already"), "one machine per host: {out}{err}");
    let (ok, _, err) = juju(&["--client-config", &cf, "remove-host", &addr(&bed, 1)]);
    assert!(!ok && err.contains("runs there"), "a host with a machine stays in the pool: {err}");
    let (ok, out, err) = juju(&["--client-config", &cf, "remove-machine", &machine]);
    assert!(ok, "{out}{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(60_000);
    while !processes(&bed, 1).is_empty() || bed.hosts[1].dir.join("slot").exists() {
        assert!(std::time::Instant::now() < deadline, "host 1 not freed: {:?}", processes(&bed, 1));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The stop is recorded a moment after the host is freed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20_000);
    loop {
        let (ok, _, err) = juju(&["--client-config", &cf, "remove-host", &addr(&bed, 1)]);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "remove-host refused after the machine left: {err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (ok, _, err) = juju(&["destroy", "--root", &r]);
    assert!(ok, "{err}");
    assert_nothing_runs(&bed, 0..2);
}

/// A manager's host stops answering (its link cut, its processes alive):
/// it is fenced and replaced on the free host; once its link returns, its
/// old manager is stopped and its dir cleaned, it never comes back as a
/// manager, and the count stays 3.
#[test]
fn a_silent_managers_host_is_replaced_and_its_old_manager_stopped_when_it_answers() {
    let Some(bed) = Hosts::for_test(4) else { return };
    let Env { root, r, cf, .. } = bootstrap_ha3(&bed, "cloud.yaml", &[0, 1, 2, 3]);
    let (ok, _, err) = juju(&["--client-config", &cf, "controller-config", "ha-grace-ms=2000"]);
    assert!(ok, "{err}");
    let z = 1;
    let silent = addr(&bed, z);
    assert!(alive_managers(&root).iter().any(|a| a.starts_with(&format!("{silent}:"))));
    bed.link(z, false);
    wait_managers(&root, "3 alive managers without the silent host", 90_000, |a| {
        a.len() == 3 && !a.iter().any(|x| x.starts_with(&format!("{silent}:")))
    });
    assert!(!processes(&bed, z).is_empty(), "the zombie still runs while cut off");
    bed.link(z, true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(90_000);
    while processes(&bed, z).iter().any(|p| p.contains("/bin/jujud"))
        || bed.hosts[z].dir.join("slot").exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the old manager on host {z} was not stopped: {:?}",
            processes(&bed, z)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let alive = alive_managers(&root);
    assert_eq!(alive.len(), 3, "{alive:?}");
    assert!(
        !alive.iter().any(|x| x.starts_with(&format!("{silent}:"))),
        "the fenced manager never rejoins: {alive:?}"
    );
    let (ok, _, err) = juju(&["destroy", "--root", &r]);
    assert!(ok, "{err}");
    assert_nothing_runs(&bed, 0..4);
}

/// With no free host, the heal waits and `juju status` says why ("no free
/// host in cloud FILE"); a host added to the pool is used at once.
#[test]
fn with_no_free_host_status_says_so_and_an_added_host_heals() {
    let Some(mut bed) = Hosts::for_test(4) else { return };
    let Env { cloud: c, root, r, cf, .. } = bootstrap_ha3(&bed, "three.yaml", &[0, 1, 2]);
    let (ok, _, err) = juju(&["--client-config", &cf, "controller-config", "ha-grace-ms=2000"]);
    assert!(ok, "{err}");
    bed.kill_host(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(90_000);
    loop {
        let (_, out, _) = juju(&["--client-config", &cf, "status"]);
        if out.contains(&format!("no free host in cloud {c}")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never said there is no free host: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Added from another client, whose root holds no copy of this pool:
    // destroy (below, from the first client) learns of it from the managers.
    let more = bed.write_cloud("more.yaml", &[3]);
    let other = bed.root.join("another-client").display().to_string();
    let (ok, out, err) =
        juju(&["--client-config", &cf, "add-host", &more.display().to_string(), "--root", &other]);
    assert!(ok, "{out}{err}");
    let fourth = addr(&bed, 3);
    wait_managers(&root, "3 alive managers, one on the added host", 90_000, |a| {
        a.len() == 3 && a.iter().any(|x| x.starts_with(&format!("{fourth}:")))
    });
    let (_, _, err) = juju(&["destroy", "--root", &r]);
    assert!(err.contains("does not answer"), "only the dead host is left uncleaned: {err}");
    assert_nothing_runs(&bed, [0, 1, 3]);
}

/// `juju enable-ha -n 5` puts two more managers on the two free hosts;
/// `-n 3` retires two (each leaves, its instance stopped) and frees their
/// hosts: each host runs at most one jujud throughout.
#[test]
fn enable_ha_5_then_3_uses_and_frees_hosts() {
    let Some(bed) = Hosts::for_test(5) else { return };
    let Env { root, r, cf, .. } = bootstrap_ha3(&bed, "cloud.yaml", &[0, 1, 2, 3, 4]);
    let (ok, out, err) = juju(&["--client-config", &cf, "enable-ha", "-n", "5"]);
    assert!(ok, "{out}{err}");
    let running = |i: usize| processes(&bed, i).iter().filter(|p| p.contains("/bin/jujud")).count();
    assert!(
        (0..5).all(|i| running(i) == 1),
        "one manager per host: {:?}",
        (0..5).map(running).collect::<Vec<_>>()
    );
    let (ok, out, err) = juju(&["--client-config", &cf, "enable-ha", "-n", "3"]);
    assert!(ok, "{out}{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(60_000);
    loop {
        let counts: Vec<usize> = (0..5).map(running).collect();
        let slots = (0..5).filter(|i| bed.hosts[*i].dir.join("slot").exists()).count();
        if counts.iter().sum::<usize>() == 3 && slots == 3 {
            assert!(counts.iter().all(|n| *n <= 1), "{counts:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two hosts not freed: {counts:?}, {slots} slots held"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let alive = alive_managers(&root);
    assert_eq!(alive.len(), 3, "{alive:?}");
    for a in &alive {
        let i =
            (0..5).find(|i| a.starts_with(&format!("{}:", addr(&bed, *i)))).expect("on a bed host");
        assert_eq!(running(i), 1, "an alive manager's host runs it: {a}");
    }
    let (ok, _, err) = juju(&["destroy", "--root", &r]);
    assert!(ok, "{err}");
    assert_nothing_runs(&bed, 0..5);
}
