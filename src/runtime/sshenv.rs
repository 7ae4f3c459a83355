//! The client's side of an environment on the ssh provider: `juju
//! bootstrap --cloud FILE` (check the cloud file, start the first manager
//! on the first host allowed to manage, hand it the pool in a 0600 file,
//! fetch its client file over ssh, wait for the managers), `juju destroy`
//! (every instance on every host stopped, everything jujud put there
//! removed) and the pool's copy kept for it.
//!
//! Owns `ROOT/cloud.json` (mode 0600: the pool with its keys, the cloud's
//! name and the environment marks this environment put on hosts). Must
//! never leave a half-started first manager behind a failed bootstrap
//! (what it started is destroyed), and never touch a host marked by
//! another environment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::bootstrap::{
    BOOTSTRAP_INSTANCE, BootstrapError, FIRST_MANAGER_TIMEOUT_MS, POLL_MS, Progress,
    client_file_in, wait_for_managers,
};
use super::clientfile::ClientFile;
use super::datadir::write_atomic;
use super::provider::Launch;
use super::provider::ssh::cloud::{self, HostEntry};
use super::provider::ssh::{SshProvider, client, host};
use super::wire::{Request, Response};

/// The pool's copy in a root.
pub const CLOUD_COPY: &str = "cloud.json";

/// `ROOT/cloud.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CloudCopy {
    /// The cloud's name (the file bootstrap was given).
    pub cloud: String,
    /// The marks hosts of this environment carry (the bootstrap mark, then
    /// the CA fingerprint).
    pub environments: Vec<String>,
    pub hosts: Vec<HostEntry>,
}

pub fn cloud_copy_in(root: &Path) -> PathBuf {
    root.join(CLOUD_COPY)
}

/// The environment on `root` is on the ssh provider.
pub fn is_ssh(root: &Path) -> bool {
    cloud_copy_in(root).exists()
}

pub fn load_copy(root: &Path) -> Result<CloudCopy, BootstrapError> {
    let path = cloud_copy_in(root);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BootstrapError::Client(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| BootstrapError::Client(format!("{}: {e}", path.display())))
}

pub fn save_copy(root: &Path, copy: &CloudCopy) -> Result<(), BootstrapError> {
    let path = cloud_copy_in(root);
    write_atomic(&path, serde_json::to_string_pretty(copy).expect("encodes").as_bytes())
        .map_err(|e| BootstrapError::Client(format!("{}: {e}", path.display())))
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Bootstraps an environment on the hosts of `cloud_file`, keeping its
/// client file and pool copy under `root`; returns the client file.
pub async fn bootstrap(
    root: &Path,
    cloud_file: &Path,
    desired: u32,
    preset: &str,
    progress: Progress<'_>,
) -> Result<PathBuf, BootstrapError> {
    let hosts = cloud::load(cloud_file).map_err(|e| BootstrapError::Client(e.to_string()))?;
    if is_ssh(root) || client_file_in(root).exists() {
        return Err(BootstrapError::Exists(root.display().to_string()));
    }
    let first = hosts.iter().find(|h| h.allows(cloud::ROLE_MANAGER)).cloned().ok_or_else(|| {
        BootstrapError::Client(format!(
            "no host of {} may run a manager (roles)",
            cloud_file.display()
        ))
    })?;
    super::datadir::create_private_dir(root).map_err(|e| BootstrapError::Client(e.to_string()))?;
    let name = cloud_file.display().to_string();
    let mark = format!("bootstrap:{}", random_hex());
    let copy =
        CloudCopy { cloud: name.clone(), environments: vec![mark.clone()], hosts: hosts.clone() };
    save_copy(root, &copy)?;
    let result = bootstrap_on(root, &first, copy, desired, preset, progress).await;
    if result.is_err() {
        // Nothing half-started stays: whatever this bootstrap put on a
        // host goes, and the root with it.
        let _ = tokio::task::spawn_blocking({
            let root = root.to_path_buf();
            move || destroy(&root, &[])
        })
        .await;
    }
    client::close_all();
    result
}

async fn bootstrap_on(
    root: &Path,
    first: &HostEntry,
    mut copy: CloudCopy,
    desired: u32,
    preset: &str,
    progress: Progress<'_>,
) -> Result<PathBuf, BootstrapError> {
    let mark = copy.environments[0].clone();
    let provider = SshProvider::new(copy.cloud.clone(), copy.hosts.clone()).with_environment(&mark);
    let at = SshProvider::address_of(first)?;
    let dir = host::instance_dir(&first.dir, BOOTSTRAP_INSTANCE);
    let pool: Vec<(String, String)> =
        copy.hosts.iter().map(|h| (h.address.clone(), h.to_json())).collect();
    let launch = Launch {
        name: BOOTSTRAP_INSTANCE.into(),
        machine: "bootstrap".into(),
        #[rustfmt::skip]
        args: [
            "peer", "--provider-kind", "ssh", "--provider-root", &copy.cloud, "--provider-hosts-file", &format!("{dir}/hosts.json"),
            "--instance-at", &at.to_string(), "--bootstrap-instance", BOOTSTRAP_INSTANCE, "--ha-desired", &desired.to_string(), "--log-format", "json", "--preset", preset,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: Vec::new(),
        manager: true,
        host: Some(first.address.clone()),
        busy: Vec::new(),
    };
    let files = vec![("hosts.json", serde_json::to_vec(&pool).expect("encodes"))];
    let started = {
        let (first, launch) = (first.clone(), launch.clone());
        tokio::task::spawn_blocking(move || provider.start_on(&first, &launch, &files))
            .await
            .map_err(|e| BootstrapError::Client(e.to_string()))??
    };
    if started.existed {
        return Err(BootstrapError::Exists(format!(
            "{} (instance {BOOTSTRAP_INSTANCE} on {})",
            root.display(),
            first.address
        )));
    }
    let c = client::Client::new(first);
    let text = wait_for_client_file(&c).await?;
    let ours = client_file_in(root);
    write_atomic(&ours, text.as_bytes()).map_err(|e| BootstrapError::Client(e.to_string()))?;
    let file = ClientFile::load(&ours).map_err(|e| BootstrapError::Client(e.to_string()))?;
    let ca = crate::pki::ClusterCa::cert_fingerprint_from_pem(&file.ca_cert)
        .map_err(|e| BootstrapError::Client(e.to_string()))?;
    let file = ClientFile { endpoints: vec![started.address], ..file };
    write_atomic(&ours, file.to_yaml().as_bytes())
        .map_err(|e| BootstrapError::Client(e.to_string()))?;
    copy.environments.push(ca.clone());
    save_copy(root, &copy)?;
    tokio::task::spawn_blocking(move || host::remark(&c, &mark, &ca))
        .await
        .map_err(|e| BootstrapError::Client(e.to_string()))??;
    wait_for_managers(&ours, desired as usize, progress).await?;
    Ok(ours)
}

/// Polls the first manager's client file over ssh, within
/// [`FIRST_MANAGER_TIMEOUT_MS`]; on time out, its log's last lines.
async fn wait_for_client_file(c: &client::Client) -> Result<String, BootstrapError> {
    let deadline = Instant::now() + Duration::from_millis(FIRST_MANAGER_TIMEOUT_MS);
    let file = format!("data/{}", super::datadir::CLIENT_FILE);
    loop {
        let c2 = client::Client::new(c.entry());
        let f = file.clone();
        if let Ok(Ok(Some(text))) = tokio::task::spawn_blocking(move || {
            host::read_instance_file(&c2, BOOTSTRAP_INSTANCE, &f)
        })
        .await
        {
            return Ok(text);
        }
        if Instant::now() > deadline {
            let log = host::read_instance_file(c, BOOTSTRAP_INSTANCE, "jujud.log")
                .ok()
                .flatten()
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(BootstrapError::FirstManager(format!(
                "no client file after {FIRST_MANAGER_TIMEOUT_MS} ms; its log ends:\n{}",
                tail.join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// Longest `destroy` waits for a manager to say the pool.
pub const POOL_QUERY_TIMEOUT_MS: u64 = 10_000;

/// The pool as a live manager's replica holds it: the hosts every client
/// added, this one's and others'. `Err` says why no manager told it.
pub async fn pool_from_managers(root: &Path) -> Result<Vec<HostEntry>, String> {
    let file = ClientFile::load(&client_file_in(root)).map_err(|e| e.to_string())?;
    let ask = super::client::request(&file, None, Request::Hosts);
    let answer = tokio::time::timeout(Duration::from_millis(POOL_QUERY_TIMEOUT_MS), ask)
        .await
        .map_err(|_| format!("no answer within {POOL_QUERY_TIMEOUT_MS} ms"))?
        .map_err(|e| e.to_string())?;
    match answer {
        (_, Response::Hosts(rows)) => rows
            .iter()
            .map(|(address, entry)| {
                HostEntry::from_json(entry).map_err(|e| format!("host {address}: {e}"))
            })
            .collect(),
        (_, Response::Error(why) | Response::Unavailable(why)) => Err(why),
        (at, _) => Err(format!("{at} answered something else")),
    }
}

/// Stops every instance on every host of the environment under `root`
/// (the hosts of this client's copy and `pool`, the managers' pool, which
/// are first added to the copy so a second destroy still knows them),
/// removes what jujud installed there, then the root; returns how many
/// processes were killed. Hosts that could not be cleaned are named, and
/// the root is kept so that `destroy` can be run again.
pub fn destroy(root: &Path, pool: &[HostEntry]) -> Result<usize, BootstrapError> {
    remember_hosts(root, pool)?;
    let copy = load_copy(root)?;
    let mut killed = 0;
    let mut failed = Vec::new();
    let mut cleaned = Vec::new();
    for h in &copy.hosts {
        match host::destroy(&client::Client::new(h), &copy.environments) {
            Ok(Some(n)) => {
                killed += n;
                cleaned.push(h);
            }
            Ok(None) => {}
            Err(e) => failed.push(e.to_string()),
        }
    }
    // Every manager is gone now: a binary copy one of them had under way
    // to another host (warming, a start) is swept from the hosts this
    // environment used.
    for h in cleaned {
        match host::sweep(&client::Client::new(h)) {
            Ok(n) => killed += n,
            Err(e) => failed.push(e.to_string()),
        }
    }
    client::close_all();
    if !failed.is_empty() {
        return Err(BootstrapError::Client(format!(
            "could not clean every host (run destroy again once they answer): {}",
            failed.join("; ")
        )));
    }
    std::fs::remove_dir_all(root)
        .map_err(|e| BootstrapError::Client(format!("{}: {e}", root.display())))?;
    Ok(killed)
}

/// Adds `hosts` to the pool copy under `root` (if it holds an ssh
/// environment), so `destroy` cleans them too.
pub fn remember_hosts(root: &Path, hosts: &[HostEntry]) -> Result<(), BootstrapError> {
    if !is_ssh(root) {
        return Ok(());
    }
    let mut copy = load_copy(root)?;
    for h in hosts {
        copy.hosts.retain(|o| o.address != h.address);
        copy.hosts.push(h.clone());
    }
    save_copy(root, &copy)
}
