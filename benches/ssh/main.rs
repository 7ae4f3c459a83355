//! `cargo bench --bench ssh [-- ROUNDS]`: the ssh provider across separate
//! hosts (issue 12). Each round builds six namespace hosts with their own
//! sshd (testkit/src/hosts.rs), every one allowed to run a manager, and
//! measures with the real CLI and release binaries:
//! - `juju bootstrap --ha 3 --cloud FILE` to three alive, serving managers
//!   on three hosts (target: at most 30 s);
//! - the bootstrap manager's host killed (every process SIGKILLed, link
//!   cut) to a replacement alive and serving on a free host (target: grace
//!   + 10 s; the grace alternates between 10 s and 2 s by round);
//! - a manager's host cut off (its processes keep running) until the heal,
//!   then restored: the old manager refused and stopped on its host, how
//!   often it was seen alive again (target 0), managers alive (target 3);
//! - `juju enable-ha -n 5` then `-n 3`: the hosts used and freed.
//!
//! `-- N --preset wan` runs the environment on the `wan` timing preset (the
//! heal targets are the `lan` preset's and are not checked then).
//!
//! Prints median and worst of each figure, the machine load, and exits
//! non-zero on a missed target. With `SSH_BENCH_LOGS=DIR`, each round's
//! instance logs (every host's `instances/*/jujud.log`) are copied to
//! `DIR/round-N/` before the environment is destroyed. Needs root. Touches nothing outside its
//! temporary directories, namespaces and the instances it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::hosts::Hosts;
use testkit::stats::Samples;

/// The longest any awaited state may take before the round fails.
const STEP_CAP_MS: u64 = 120_000;
/// How long a restored zombie host is watched for a rejoin.
const ZOMBIE_WATCH_MS: u64 = 15_000;

fn juju(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_juju"))
        .env("JUJUD_ROOT", root)
        .args(args)
        .output()
        .expect("run juju")
}

fn ok(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = juju(root, args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("juju {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// How long one manager's own status may take in a serving check: a dead
/// manager's endpoint must not hold the poll for the client's whole retry
/// window (10 s), which it did, and which the heal figures then carried.
const ENDPOINT_STATUS_MS: u64 = 2_000;

/// `juju status --endpoint ADDR`, given up (the child killed) after
/// [`ENDPOINT_STATUS_MS`].
fn endpoint_status(root: &Path, endpoint: &str) -> Option<Value> {
    let client = root.join("client.yaml");
    let args = [
        "--client-config",
        client.to_str().unwrap(),
        "status",
        "--format",
        "json",
        "--endpoint",
        endpoint,
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_juju"))
        .env("JUJUD_ROOT", root)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_millis(ENDPOINT_STATUS_MS);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take()?, &mut out).ok()?;
    serde_json::from_slice(&out).ok()
}

/// `juju status` through the client file (any manager that answers).
fn status(root: &Path) -> Option<Value> {
    let client = root.join("client.yaml");
    let args = ["--client-config", client.to_str().unwrap(), "status", "--format", "json"];
    serde_json::from_slice(&juju(root, &args).stdout).ok()
}

/// Alive managers as `(id, addr)`.
fn managers(st: &Value) -> Vec<(String, String)> {
    st["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["role"] == "manager" && m["state"] == "alive")
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or("").to_string(),
                        m["addr"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ip_of(addr: &str) -> String {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string()
}

/// Waits until `pred` holds on a status; the time it took.
fn wait(
    root: &Path,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<(Duration, Value), String> {
    let start = Instant::now();
    loop {
        let st = status(root);
        if std::env::var_os("SSH_BENCH_TRACE").is_some() {
            let seen: Vec<String> =
                st.as_ref().and_then(|s| s["members"].as_array()).map_or(vec![], |a| {
                    a.iter()
                        .map(|m| {
                            format!(
                                "{}={}",
                                m["addr"].as_str().unwrap_or(""),
                                m["state"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                });
            mark(&format!(
                "{what}: answered by {:?}: {}",
                st.as_ref().map(|s| s["controller"]["id"].clone()),
                seen.join(" ")
            ));
        }
        if let Some(st) = st.filter(|st| pred(st)) {
            return Ok((start.elapsed(), st));
        }
        if start.elapsed() > Duration::from_millis(STEP_CAP_MS) {
            return Err(format!("timed out after {STEP_CAP_MS} ms waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `want` managers alive, each answering a status that sees `want` alive.
fn serving(root: &Path, want: usize, st: &Value) -> bool {
    let ms = managers(st);
    if ms.len() != want {
        return false;
    }
    // Each manager asked at once, each within its own deadline.
    std::thread::scope(|s| {
        let asks: Vec<_> =
            ms.iter().map(|(_, a)| (a, s.spawn(move || endpoint_status(root, a)))).collect();
        asks.into_iter().fold(true, |all, (a, h)| {
            let st = h.join().ok().flatten();
            let ok = st.as_ref().is_some_and(|s| s["controller"]["alive"] == want as u64);
            if !ok {
                let alive = st.map(|s| s["controller"]["alive"].clone());
                mark(&format!("not serving yet: {a} says alive {alive:?}"));
            }
            all && ok
        })
    })
}

#[derive(Default)]
struct Figures {
    bootstrap: Samples,
    /// Heals at grace 10 s and at grace 2 s.
    heal_10: Samples,
    heal_2: Samples,
    zombie_rejoins: Vec<usize>,
    zombie_managers: Vec<usize>,
    zombie_stopped: Samples,
    grow_ok: Vec<bool>,
    shrink_ok: Vec<bool>,
}

fn round(n: usize, grace_ms: u64, preset: &str, f: &mut Figures) -> Result<(), String> {
    let mut hosts = Hosts::build(6);
    let cloud = hosts.root.join("lab.yaml");
    std::fs::write(&cloud, hosts.cloud_yaml(&[0, 1, 2, 3, 4, 5], |_| None)).unwrap();
    let root: PathBuf = hosts.root.join("env");
    let r = root.to_str().unwrap().to_string();
    let guard = Destroy(root.clone());
    let t = Instant::now();
    let cloud = cloud.to_str().unwrap();
    ok(&root, &["bootstrap", "--ha", "3", "--cloud", cloud, "--root", &r, "--preset", preset])?;
    let (_, st) = wait(&root, "3 managers serving", |st| serving(&root, 3, st))?;
    f.bootstrap.push(t.elapsed().as_secs_f64());
    let client = root.join("client.yaml");
    let cc = ["--client-config", client.to_str().unwrap()];
    ok(&root, &[&cc[..], &["controller-config", &format!("ha-grace-ms={grace_ms}")]].concat())?;
    let ips: Vec<String> = hosts.hosts.iter().map(|h| h.addr.to_string()).collect();
    let host_of = |addr: &str| ips.iter().position(|h| *h == ip_of(addr));
    // The bootstrap manager runs on the first manager host of the cloud.
    let boot = managers(&st)
        .iter()
        .find_map(|(_, a)| host_of(a).filter(|i| *i == 0))
        .ok_or("no manager on host 0")?;
    // 1. The bootstrap manager's host dies.
    hosts.kill_host(boot);
    let t = Instant::now();
    mark("host killed");
    let dead_ip = ips[boot].clone();
    let (_, st) = wait(&root, "a replacement serving", |st| {
        serving(&root, 3, st) && managers(st).iter().all(|(_, a)| ip_of(a) != dead_ip)
    })?;
    let heal = if grace_ms == 10_000 { &mut f.heal_10 } else { &mut f.heal_2 };
    heal.push(t.elapsed().as_secs_f64());
    mark("replacement serving seen");
    // 2. A manager's host stops responding (its processes run on).
    let (zid, zaddr) = managers(&st).into_iter().next().ok_or("no manager")?;
    let z = host_of(&zaddr).ok_or("zombie host unknown")?;
    hosts.link(z, false);
    wait(&root, "the zombie's replacement serving", |st| {
        serving(&root, 3, st) && managers(st).iter().all(|(id, _)| *id != zid)
    })?;
    hosts.link(z, true);
    let t = Instant::now();
    let (mut rejoins, mut stopped) = (0, None);
    while t.elapsed() < Duration::from_millis(ZOMBIE_WATCH_MS)
        || stopped.is_none() && t.elapsed() < Duration::from_millis(STEP_CAP_MS)
    {
        if let Some(st) = status(&root) {
            rejoins += managers(&st).iter().filter(|(id, _)| *id == zid).count();
        }
        if stopped.is_none() && hosts.jujud_pids(z).is_empty() {
            stopped = Some(t.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f.zombie_rejoins.push(rejoins);
    f.zombie_stopped.push(stopped.unwrap_or(f64::INFINITY));
    f.zombie_managers.push(status(&root).map_or(0, |st| managers(&st).len()));
    // 3. Grow to 5 (the free host and the cleaned zombie host), back to 3.
    ok(&root, &[&cc[..], &["enable-ha", "-n", "5"]].concat())?;
    let (_, st) = wait(&root, "5 managers serving", |st| serving(&root, 5, st))?;
    let used: Vec<usize> = managers(&st).iter().filter_map(|(_, a)| host_of(a)).collect();
    let live_hosts = (0..6).filter(|i| *i != boot).count();
    f.grow_ok.push(used.len() == 5 && !used.contains(&boot) && live_hosts == 5);
    ok(&root, &[&cc[..], &["enable-ha", "-n", "3"]].concat())?;
    let (_, st) = wait(&root, "back to 3", |st| managers(st).len() == 3)?;
    let kept: Vec<usize> = managers(&st).iter().filter_map(|(_, a)| host_of(a)).collect();
    let start = Instant::now();
    let freed = loop {
        let running: Vec<usize> = (0..6).filter(|i| !hosts.jujud_pids(*i).is_empty()).collect();
        if running.len() == 3 || start.elapsed() > Duration::from_millis(STEP_CAP_MS) {
            break running.iter().all(|i| kept.contains(i)) && running.len() == 3;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    f.shrink_ok.push(freed);
    keep_logs(&hosts, n);
    drop(guard);
    let left: usize = (0..6).map(|i| hosts.jujud_pids(i).len()).sum();
    println!(
        "round {n}: grace {grace_ms} ms, bootstrap host {boot}, zombie host {z}, jujud left after destroy {left}"
    );
    if left > 0 {
        return Err(format!("{left} jujud processes left after destroy"));
    }
    Ok(())
}

/// With `SSH_BENCH_LOGS` set, prints the wall-clock time of a step (to
/// line it up with the instances' logs).
fn mark(what: &str) {
    if std::env::var_os("SSH_BENCH_LOGS").is_some() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        println!("{:.3} {what}", t.as_secs_f64());
    }
}

/// Copies every instance log of the round to `$SSH_BENCH_LOGS/round-N/`
/// (named `<host>-<instance>.log`), when that is set.
fn keep_logs(hosts: &Hosts, n: usize) {
    let Some(dir) = std::env::var_os("SSH_BENCH_LOGS") else { return };
    let to = PathBuf::from(dir).join(format!("round-{n}"));
    let _ = std::fs::create_dir_all(&to);
    for (i, h) in hosts.hosts.iter().enumerate() {
        let Ok(rd) = std::fs::read_dir(h.dir.join("instances")) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let _ = std::fs::copy(e.path().join("jujud.log"), to.join(format!("h{i}-{name}.log")));
        }
    }
}

/// Destroys the round's environment even when it failed.
struct Destroy(PathBuf);

impl Drop for Destroy {
    fn drop(&mut self) {
        let _ = juju(&self.0, &["destroy", "--root", self.0.to_str().unwrap()]);
    }
}

/// Every sample, for the record.
fn all(s: &Samples) -> String {
    s.values().iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")
}

fn main() {
    if let Err(why) = Hosts::available() {
        eprintln!("ssh bench needs: {why}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(4);
    let preset = args
        .iter()
        .position(|a| a == "--preset")
        .and_then(|i| args.get(i + 1))
        .map_or("lan", |p| p.as_str());
    let lan = preset == "lan";
    let mut f = Figures::default();
    let mut failed = 0;
    for n in 1..=rounds {
        let grace = if n % 2 == 1 { 10_000 } else { 2_000 };
        if let Err(e) = round(n, grace, preset, &mut f) {
            println!("round {n} FAILED: {e}");
            failed += 1;
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nssh provider, 6 namespace hosts, preset {preset}, {rounds} rounds ({failed} failed); load {}",
        load.trim()
    );
    let mut missed = failed > 0;
    let (m, w) = (f.bootstrap.median(), f.bootstrap.worst());
    println!(
        "bootstrap --ha 3 to 3 serving:       median {m:.2} s, worst {w:.2} s (target <= 30 s, n={}: {})",
        f.bootstrap.len(),
        all(&f.bootstrap)
    );
    missed |= w > 30.0;
    for (grace_s, v) in [(10u64, &f.heal_10), (2, &f.heal_2)] {
        let limit = grace_s as f64 + 10.0;
        let (m, w) = (v.median(), v.worst());
        let target =
            if lan { format!("target <= {limit} s") } else { "no target for wan".to_string() };
        println!(
            "host killed -> replacement serving:  median {m:.2} s, worst {w:.2} s at grace {grace_s} s ({target}, n={}: {})",
            v.len(),
            all(v)
        );
        missed |= lan && !v.is_empty() && w > limit;
    }
    let (m, w) = (f.zombie_stopped.median(), f.zombie_stopped.worst());
    println!(
        "zombie restored -> its jujud stopped: median {m:.2} s, worst {w:.2} s (n={}: {})",
        f.zombie_stopped.len(),
        all(&f.zombie_stopped)
    );
    println!("zombie rejoins seen alive:           {:?} (target all 0)", f.zombie_rejoins);
    println!("managers alive after the zombie:     {:?} (target all 3)", f.zombie_managers);
    println!(
        "enable-ha 5 on the right hosts:      {:?}; -n 3 freed the right ones: {:?}",
        f.grow_ok, f.shrink_ok
    );
    missed |= f.zombie_rejoins.iter().any(|r| *r > 0) || f.zombie_managers.iter().any(|m| *m != 3);
    missed |= f.grow_ok.iter().chain(&f.shrink_ok).any(|ok| !ok);
    if missed {
        println!("MISSED a target");
        std::process::exit(1);
    }
}
