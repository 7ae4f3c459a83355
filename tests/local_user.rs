//! What a local user and a machine agent can reach, with real processes:
//! tokens never on a command line (started the way the README says), token
//! files that others can read refused, an agent's certificate refused
//! everything but its session; and the client's own robustness: rounds of
//! retries through a frozen manager, a dead endpoint listed first, and a
//! bare client-config file name.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::agent::{change, presence, status, wait_status};
use common::*;
use jujud::pki::ClusterCa;
use jujud::runtime::clientfile::ClientFile;

/// Every process whose command line holds `needle`, as (pid, command line).
fn cmdlines_holding(needle: &str) -> Vec<(String, String)> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            hits.push((pid, line));
        }
    }
    hits
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A joiner started with `--token-file FILE` and an agent with the token
/// file `juju add-machine` wrote: neither token is on any process's
/// command line. `--token` itself, and a token file others can read, are
/// refused with a message that names the alternatives.
#[test]
fn no_command_line_holds_a_token_when_started_as_the_readme_says() {
    let tmp = tempfile::tempdir().unwrap();
    let m0 = Peer::start(&tmp.path().join("m0"), any_port(), &[]);
    let token = m0.token();
    let seed = m0.addr.to_string();

    let open = tmp.path().join("open.token");
    write_mode(&open, &format!("{token}\n"), 0o644);
    let d = tmp.path().join("x");
    let err = peer_fails(&[
        "--data-dir",
        d.to_str().unwrap(),
        "--join",
        &seed,
        "--token-file",
        open.to_str().unwrap(),
    ]);
    assert!(
        err.contains("readable by group or others")
            && err.contains("chmod 600")
            && !err.contains(&token),
        "{err}"
    );
    let err = peer_fails(&[
        "--data-dir",
        d.to_str().unwrap(),
        "--join",
        &seed,
        "--token",
        "jjd1.manager.x.y",
    ]);
    assert!(
        err.contains("--token is not accepted")
            && err.contains("--token-file")
            && err.contains("JUJUD_TOKEN"),
        "{err}"
    );

    let file = tmp.path().join("m1.token");
    write_mode(&file, &format!("{token}\n"), 0o600);
    let m1 = Peer::start(
        &tmp.path().join("m1"),
        any_port(),
        &["--join", &seed, "--token-file", file.to_str().unwrap()],
    );
    m0.log.wait_for("m1 up", |l| saw(l, jujud::events::MEMBER_UP, &m1.id));

    // `juju add-machine` (no provider) writes the token to a 0600 file and
    // prints the command that reads it; it never prints the token.
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let out = juju(&m0.client_file(), &["add-machine", "--token-dir", tokens.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let machine = stdout.lines().next().unwrap().trim().to_string();
    let agent_file = tokens.join(format!("{machine}.token"));
    assert_eq!(std::fs::metadata(&agent_file).unwrap().permissions().mode() & 0o777, 0o600);
    let agent_token = std::fs::read_to_string(&agent_file).unwrap().trim().to_string();
    assert!(agent_token.starts_with("jjd1.agent."), "{agent_token}");
    assert!(
        !stdout.contains("jjd1.") && !stderr.contains("jjd1."),
        "no token printed: {stdout}\n{stderr}"
    );
    assert!(stderr.contains(&format!("--token-file {}", agent_file.display())), "{stderr}");

    let mut cmd = Command::new(jujud_bin());
    cmd.args([
        "agent",
        "--data-dir",
        tmp.path().join("a").to_str().unwrap(),
        "--seeds",
        &seed,
        "--log-format",
        "json",
    ]);
    cmd.args(["--token-file", agent_file.to_str().unwrap()]);
    let (mut agent, log) = spawn_logged(cmd);
    log.wait_for("agent session", |l| {
        l.iter().any(|v| message(v) == jujud::events::AGENT_SESSION_OPENED)
    });
    wait_status(&m0.client_file(), "the agent alive", |st| presence(st, &machine) == "alive");

    for secret in [&token, &agent_token] {
        assert_eq!(cmdlines_holding(secret), Vec::new(), "a process's command line holds a token");
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// `--token-file -` reads the token from standard input.
#[test]
fn a_token_can_come_from_standard_input() {
    let c = Cluster::start(1);
    let token = c.peers[0].token();
    let mut cmd = peer_command(&c.tmp.path().join("m1"), local(free_port()));
    cmd.args(["--join", &c.peers[0].addr.to_string(), "--token-file", "-"]).stdin(Stdio::piped());
    let (mut child, log) = spawn_logged(cmd);
    // One line is enough: standard input stays open, as at a terminal.
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{token}").unwrap();
    log.wait_for("the joiner admitted", |l| {
        l.iter().any(|v| message(v) == jujud::events::MANAGER_STARTING)
    });
    assert!(!cmdlines_holding(&token).iter().any(|(pid, _)| *pid == child.id().to_string()));
    let _ = child.kill();
    let _ = child.wait();
}

/// A client file holding an agent certificate minted from the cluster's
/// own CA (what any agent has on its disk).
fn agent_client_file(peer: &Peer, dir: &Path) -> PathBuf {
    let ca = ClusterCa::from_pem(
        std::fs::read_to_string(peer.dir.join("ca.pem")).unwrap(),
        std::fs::read_to_string(peer.dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let cert = ca.issue_agent(0x00a9_e000_0000_0001, "7-abcd", 1).unwrap();
    let admin = ClientFile::load(&peer.client_file()).unwrap();
    let file = ClientFile { client_cert: cert.cert_pem, client_key: cert.key_pem, ..admin };
    let path = dir.join("agent-client.yaml");
    write_mode(&path, &file.to_yaml(), 0o600);
    path
}

/// An agent's certificate gets neither status (every application's config)
/// nor the member list, nor a change, nor the environment's logs: it may
/// only open its session (and forward its own log lines).
#[test]
fn an_agent_certificate_reads_nothing_outside_its_session() {
    let c = Cluster::start(1);
    let admin = c.peers[0].client_file();
    change(&admin, &["deploy", "db", "--command", "exec sleep infinity"]);
    assert!(juju(&admin, &["config", "db", "password=hunter2"]).status.success());
    let agent = agent_client_file(&c.peers[0], c.tmp.path());
    let debug_log = ["debug-log", "--replay", "--no-tail"];
    for args in [
        &["status", "--format", "json"][..],
        &["members"],
        &["config", "db"],
        &["add-machine"],
        &debug_log,
    ] {
        let out = juju(&agent, args);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{args:?} answered an agent: {stdout}");
        assert!(stderr.contains("may only open its agent session"), "{args:?}: {stderr}");
        assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    }
    // The admin still reads it all.
    assert!(
        String::from_utf8_lossy(&juju(&admin, &["config", "db"]).stdout)
            .contains("password=hunter2")
    );
}

/// A write sent while the only manager is frozen (SIGSTOP) is retried in
/// rounds and applied once it thaws; applied once, not twice.
#[test]
fn a_write_is_retried_through_a_frozen_manager() {
    let c = Cluster::start(1);
    let file = c.peers[0].client_file();
    c.peers[0].signal(libc::SIGSTOP);
    let mut child = Command::new(juju_bin())
        .arg("--client-config")
        .arg(&file)
        .args(["add-machine", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_millis(EVENT_CAP_MS))
        .expect("the client says it tries again");
    c.peers[0].signal(libc::SIGCONT);
    assert!(first.contains("trying again"), "{first}");
    let out = child.wait_with_output().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(out.status.success(), "gave up: {first}\n{}", rest.join("\n"));
    let st = status(&file);
    assert_eq!(st["status"]["machines"].as_array().unwrap().len(), 1, "applied once: {st:#}");
}

/// A dead endpoint listed first, and a client file named without a
/// directory: the client answers through the live one and rewrites the
/// file's endpoints without a warning.
#[test]
fn a_bare_client_file_name_is_updated_without_a_warning() {
    let c = Cluster::start(1);
    let mut file = ClientFile::load(&c.peers[0].client_file()).unwrap();
    let dead = local(free_port());
    file.endpoints.insert(0, dead);
    let dir = c.tmp.path().join("client");
    std::fs::create_dir(&dir).unwrap();
    write_mode(&dir.join("c.yaml"), &file.to_yaml(), 0o600);
    let out = Command::new(juju_bin())
        .current_dir(&dir)
        .args(["--client-config", "c.yaml", "members"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let updated = ClientFile::load(&dir.join("c.yaml")).unwrap();
    assert_eq!(updated.endpoints, vec![c.peers[0].addr], "the dead endpoint is dropped");
}
