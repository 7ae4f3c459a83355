//! The client's side of an environment's life on the local provider:
//! `juju bootstrap` (start the first manager as an instance, take its client
//! file, wait until the desired managers are alive), waiting for a number
//! of managers after `juju enable-ha`, and `juju destroy`.
//!
//! Owns the default provider root and client file locations. Must never
//! bootstrap over a root whose instances still run, and never wait without
//! a bound: every wait has a cap and says what it was waiting for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::clientfile::ClientFile;
use super::datadir::write_atomic;
use super::provider::local::LocalProvider;
use super::provider::{Launch, Provider};
use super::wire::{MemberRow, Request, Response};

/// The bootstrap manager's instance name.
pub const BOOTSTRAP_INSTANCE: &str = "controller-0";
/// Longest wait for the first manager to write its client file.
pub const FIRST_MANAGER_TIMEOUT_MS: u64 = 20_000;
/// Longest wait for the desired managers to be alive.
pub const MANAGERS_TIMEOUT_MS: u64 = 120_000;
/// How often the waits look again.
pub const POLL_MS: u64 = 100;

/// Why an environment could not be bootstrapped, grown or destroyed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "{0} already holds a running environment; `juju destroy` it first, or pass another --root"
    )]
    Exists(String),
    #[error(transparent)]
    Provider(#[from] super::provider::ProviderError),
    #[error("the first manager did not start: {0}")]
    FirstManager(String),
    #[error("{0}")]
    Client(String),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
}

/// Where environments live unless `--root` says otherwise:
/// `$JUJUD_ROOT`, else `$HOME/.local/share/jujud/local`.
pub fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("JUJUD_ROOT") {
        return r.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/share/jujud/local")
}

/// The client file `juju bootstrap` writes in a root.
pub fn client_file_in(root: &Path) -> PathBuf {
    root.join("client.yaml")
}

/// The progress of a wait: managers alive of those wanted.
pub type Progress<'a> = &'a dyn Fn(usize, usize);

/// Starts the first manager of a new environment under `root` and waits
/// until `desired` managers are alive; returns the client file's path.
pub async fn bootstrap(
    root: &Path,
    desired: u32,
    preset: &str,
    progress: Progress<'_>,
) -> Result<PathBuf, BootstrapError> {
    let provider = LocalProvider::new(root.to_path_buf());
    if provider
        .list()
        .iter()
        .any(|i| super::provider::local::start_ticks(i.pid) == Some(i.start_ticks))
    {
        return Err(BootstrapError::Exists(root.display().to_string()));
    }
    super::datadir::create_private_dir(root).map_err(|e| BootstrapError::Client(e.to_string()))?;
    // Instances run elsewhere: the root they are told must be absolute.
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let launch = Launch {
        name: BOOTSTRAP_INSTANCE.into(),
        machine: "bootstrap".into(),
        args: vec![
            "peer".into(),
            "--provider-root".into(),
            abs.display().to_string(),
            "--bootstrap-instance".into(),
            BOOTSTRAP_INSTANCE.into(),
            "--ha-desired".into(),
            desired.to_string(),
            "--log-format".into(),
            "json".into(),
            "--preset".into(),
            preset.into(),
        ],
        env: Vec::new(),
        manager: true,
        host: None,
        busy: Vec::new(),
    };
    let started = provider.start(&launch)?;
    if started.existed {
        return Err(BootstrapError::Exists(root.display().to_string()));
    }
    let dir = provider.instance_dir(BOOTSTRAP_INSTANCE);
    let theirs = dir.join("data").join(super::datadir::CLIENT_FILE);
    let file = wait_for_file(&theirs, &dir.join("jujud.log")).await?;
    let ours = client_file_in(root);
    let file = ClientFile { endpoints: vec![started.address], ..file };
    write_atomic(&ours, file.to_yaml().as_bytes())
        .map_err(|e| BootstrapError::Client(e.to_string()))?;
    wait_for_managers(&ours, desired as usize, progress).await?;
    Ok(ours)
}

async fn wait_for_file(path: &Path, log: &Path) -> Result<ClientFile, BootstrapError> {
    let deadline = Instant::now() + Duration::from_millis(FIRST_MANAGER_TIMEOUT_MS);
    loop {
        if let Ok(f) = ClientFile::load(path) {
            return Ok(f);
        }
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(BootstrapError::FirstManager(format!(
                "no client file after {FIRST_MANAGER_TIMEOUT_MS} ms; its log ends:\n{}",
                tail.join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// Asks for the member list until `want` managers are alive, keeping the
/// client file's endpoints up to date, and until each of them serves the
/// environment (its replica holds the desired count: a manager that has
/// just joined answers from an empty replica until its first sync);
/// returns the last list.
pub async fn wait_for_managers(
    client_file: &Path,
    want: usize,
    progress: Progress<'_>,
) -> Result<Vec<MemberRow>, BootstrapError> {
    let deadline = Instant::now() + Duration::from_millis(MANAGERS_TIMEOUT_MS);
    loop {
        let file =
            ClientFile::load(client_file).map_err(|e| BootstrapError::Client(e.to_string()))?;
        if let Ok((_, Response::Members { members, .. })) =
            super::client::request(&file, None, Request::Members).await
        {
            let alive: Vec<SocketAddr> = members
                .iter()
                .filter(|m| m.role == "manager" && m.state == "alive")
                .map(|m| m.addr)
                .collect();
            progress(alive.len(), want);
            if !alive.is_empty() && alive.len() != file.endpoints.len() {
                let updated = ClientFile { endpoints: alive.clone(), ..file.clone() };
                let _ = write_atomic(client_file, updated.to_yaml().as_bytes());
            }
            if alive.len() == want && all_serve(&file, &alive, want).await {
                return Ok(members);
            }
        }
        if Instant::now() > deadline {
            return Err(BootstrapError::Timeout {
                what: format!("{want} managers alive and serving"),
                secs: MANAGERS_TIMEOUT_MS / 1000,
            });
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// Whether every manager in `addrs` answers a status that holds the
/// desired count `want` and sees `want` managers alive.
async fn all_serve(file: &ClientFile, addrs: &[SocketAddr], want: usize) -> bool {
    for addr in addrs {
        match super::client::request(file, Some(*addr), Request::Status).await {
            Ok((_, Response::Status { controller, .. }))
                if controller.desired as usize == want && controller.alive as usize == want => {}
            _ => return false,
        }
    }
    true
}

/// Kills every instance under `root` and removes it; returns how many
/// were running.
pub fn destroy(root: &Path) -> Result<usize, BootstrapError> {
    Ok(LocalProvider::new(root.to_path_buf()).destroy()?)
}
