//! The ssh provider: instances on a pool of existing Linux hosts reached
//! over SSH (Juju's "manual" cloud), one instance per host. A start picks
//! a free host allowed the role (or exactly the enlisted machine's host),
//! claims its slot atomically on the host, installs this jujud binary,
//! creates the instance's data dir, hands the join token over in a 0600
//! file and starts jujud listening on (and advertising) the host's own
//! address; a stop signals only the instance's own processes, keeps a
//! tombstone of the name and frees the host.
//!
//! Owns the pool's placement. Must never start a name twice (the slot and
//! the tombstones refuse it), never use a host another environment marked,
//! and never leave a half-started instance behind a failed start (its slot
//! is freed and its dir removed).

pub mod client;
pub mod cloud;
pub mod host;
pub mod install;
pub mod warm;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use self::client::Client;
use self::cloud::HostEntry;
use self::host::Claim;
use super::{Launch, Provider, ProviderError, Started};
use crate::core::control::provider::ProviderSpec;

/// Every instance listens on this port, on its host's address.
pub const INSTANCE_PORT: u16 = 17_070;
/// The file in an instance dir holding its join token.
pub const TOKEN_FILE: &str = "token";
/// The environment variable a launch carries the token in.
const TOKEN_ENV: &str = "JUJUD_TOKEN";
/// How long a host found unreachable is tried last by this process's
/// starts (the provider's record of unreachable hosts).
pub const UNREACHABLE_MEMORY_MS: u64 = 60_000;
/// Most hosts remembered as unreachable (the pool's own bound).
const MAX_UNREACHABLE_RECORDS: usize = crate::core::state::controllers::MAX_HOSTS;

/// Hosts this process found unreachable, and when (kept per process: a
/// provider is opened per request).
static UNREACHABLE: std::sync::Mutex<Vec<(String, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// Records whether `host` answered its last call.
fn note_reachable(host: &str, reachable: bool) {
    let mut u = UNREACHABLE.lock().expect("unreachable record");
    u.retain(|(h, at)| h != host && at.elapsed().as_millis() < u128::from(UNREACHABLE_MEMORY_MS));
    if !reachable && u.len() < MAX_UNREACHABLE_RECORDS {
        u.push((host.to_string(), std::time::Instant::now()));
    }
}

/// The hosts found unreachable within [`UNREACHABLE_MEMORY_MS`].
pub fn unreachable_hosts() -> Vec<String> {
    let u = UNREACHABLE.lock().expect("unreachable record");
    u.iter()
        .filter(|(_, at)| at.elapsed().as_millis() < u128::from(UNREACHABLE_MEMORY_MS))
        .map(|(h, _)| h.clone())
        .collect()
}

/// Placement order: the pool's order, but hosts the state shows busy
/// (`busy`: addresses or IPs) after the others, and hosts recently found
/// unreachable last: a free live host is tried before any host that would
/// cost a call to refuse, and a dead one is not waited on before it.
pub fn placement_order<'a>(
    hosts: Vec<&'a HostEntry>,
    unreachable: &[String],
    busy: &[String],
) -> Vec<&'a HostEntry> {
    let rank = |h: &HostEntry| (unreachable.contains(&h.address), is_busy(h, busy));
    let mut order = hosts;
    // Stable: the pool's order within each rank. Cached: a rank may
    // resolve the host's name.
    order.sort_by_cached_key(|h| rank(h));
    order
}

/// Whether `h` is one of `busy` (pool addresses, or the IPs the state
/// records instances at).
fn is_busy(h: &HostEntry, busy: &[String]) -> bool {
    busy.iter().any(|b| {
        *b == h.address || SshProvider::address_of(h).is_ok_and(|a| a.ip().to_string() == *b)
    })
}

/// Largest pool hosts file the bootstrap manager reads.
pub const MAX_HOSTS_FILE_BYTES: u64 = (crate::core::state::controllers::MAX_HOSTS
    * (crate::core::state::controllers::MAX_HOST_ENTRY_BYTES + 512))
    as u64;

/// Reads the bootstrap manager's pool file (`[[address, entry], ...]`,
/// JSON) and deletes it: it holds private keys, and the state keeps them
/// from now on.
pub fn read_hosts_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_HOSTS_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::remove_file(path);
    if text.len() as u64 > MAX_HOSTS_FILE_BYTES {
        return Err(format!("{}: more than {MAX_HOSTS_FILE_BYTES} bytes", path.display()));
    }
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A provider over a pool of hosts.
pub struct SshProvider {
    /// The cloud's name (the cloud file bootstrap was given), for messages.
    cloud: String,
    hosts: Vec<HostEntry>,
    /// The mark this environment puts on hosts it uses.
    environment: String,
    /// The jujud binary installed on hosts (this process's own).
    jujud: PathBuf,
}

impl SshProvider {
    pub fn new(cloud: String, hosts: Vec<HostEntry>) -> SshProvider {
        let jujud = super::local::LocalProvider::new(PathBuf::new()).jujud().to_path_buf();
        SshProvider { cloud, hosts, environment: String::new(), jujud }
    }

    /// The provider of a spec from the state (entries that do not decode
    /// are left out, with a log line).
    pub fn from_spec(spec: &ProviderSpec) -> Result<SshProvider, ProviderError> {
        let mut hosts = Vec::new();
        for text in &spec.hosts {
            match HostEntry::from_json(text) {
                Ok(h) => hosts.push(h),
                Err(e) => {
                    tracing::warn!(error = %e, "a host entry of the pool does not decode; left out")
                }
            }
        }
        Ok(SshProvider::new(spec.root.clone(), hosts))
    }

    pub fn with_environment(mut self, environment: &str) -> SshProvider {
        self.environment = environment.to_string();
        self
    }

    pub fn with_jujud(mut self, jujud: PathBuf) -> SshProvider {
        self.jujud = jujud;
        self
    }

    pub fn hosts(&self) -> &[HostEntry] {
        &self.hosts
    }

    /// The listen address of an instance on `entry`.
    pub fn address_of(entry: &HostEntry) -> Result<SocketAddr, ProviderError> {
        (entry.address.as_str(), INSTANCE_PORT)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| {
                a.find(|a| a.is_ipv4()).or_else(|| {
                    (entry.address.as_str(), INSTANCE_PORT).to_socket_addrs().ok()?.next()
                })
            })
            .ok_or_else(|| ProviderError::Host {
                host: entry.address.clone(),
                reason: "its address does not resolve".into(),
            })
    }

    /// The hosts a launch may go on, in pool order.
    fn candidates(&self, launch: &Launch) -> Result<Vec<&HostEntry>, ProviderError> {
        if let Some(want) = &launch.host {
            let bare = want.rsplit_once('@').map_or(want.as_str(), |(_, h)| h);
            return match self.hosts.iter().find(|h| h.address == bare) {
                Some(h) => Ok(vec![h]),
                None => Err(ProviderError::Host {
                    host: bare.into(),
                    reason: format!("not a host of cloud {}", self.cloud),
                }),
            };
        }
        Ok(self.of_role(launch.manager))
    }

    /// The pool hosts allowed to run a manager (or a machine agent).
    fn of_role(&self, manager: bool) -> Vec<&HostEntry> {
        let role = if manager { cloud::ROLE_MANAGER } else { cloud::ROLE_MACHINE };
        self.hosts.iter().filter(|h| h.allows(role)).collect()
    }

    /// Starts `launch` on exactly `entry`, writing `files` (name, content)
    /// into its instance dir first (mode 0600, over stdin).
    pub fn start_on(
        &self,
        entry: &HostEntry,
        launch: &Launch,
        files: &[(&str, Vec<u8>)],
    ) -> Result<Started, ProviderError> {
        let c = Client::new(entry);
        let address = Self::address_of(entry)?;
        match host::claim(&c, &launch.name, &self.environment)? {
            Claim::Claimed => {}
            Claim::Existed => return Ok(Started { address, existed: true }),
            Claim::Busy(who) => {
                return Err(ProviderError::Host {
                    host: entry.address.clone(),
                    reason: format!("busy: instance {who} runs there"),
                });
            }
        }
        match self.provision(&c, launch, address, files) {
            Ok(()) => Ok(Started { address, existed: false }),
            Err(e) => {
                host::release(&c, &launch.name);
                Err(e)
            }
        }
    }

    /// Installs the binary, in the background, on the hosts a later start
    /// of the same role would try: every candidate but `used`, the hosts
    /// the state shows busy and those found unreachable.
    fn warm_others(&self, used: &HostEntry, launch: &Launch) {
        if self.environment.is_empty() {
            return;
        }
        let down = unreachable_hosts();
        let hosts: Vec<HostEntry> = self
            .of_role(launch.manager)
            .into_iter()
            .filter(|h| h.address != used.address && !down.contains(&h.address))
            .filter(|h| !is_busy(h, &launch.busy))
            .cloned()
            .collect();
        warm::spawn(hosts, self.environment.clone(), self.jujud.clone());
    }

    /// Install, instance dir, secrets, start: the steps after a claim.
    fn provision(
        &self,
        c: &Client,
        launch: &Launch,
        address: SocketAddr,
        files: &[(&str, Vec<u8>)],
    ) -> Result<(), ProviderError> {
        let copied = install::install(c, &self.jujud)?;
        tracing::info!(host = %c.entry().address, copied, "jujud installed");
        host::make_instance_dir(c, &launch.name)?;
        let dir = host::instance_dir(&c.entry().dir, &launch.name);
        let (sub, rest) = launch.args.split_first().ok_or_else(|| ProviderError::Spawn {
            name: launch.name.clone(),
            reason: "no jujud command".into(),
        })?;
        let mut args = vec![
            sub.clone(),
            "--data-dir".into(),
            format!("{dir}/data"),
            "--listen".into(),
            address.to_string(),
        ];
        if launch.manager {
            // Managers serve the dashboard over TCP on the port number of
            // their QUIC (UDP) listener, as on the local provider.
            args.extend(["--dashboard-listen".into(), address.to_string()]);
        }
        args.extend(rest.iter().cloned());
        for (name, content) in files {
            host::write_secret(c, &launch.name, name, content.clone())?;
        }
        for (k, v) in &launch.env {
            if k == TOKEN_ENV {
                host::write_secret(c, &launch.name, TOKEN_FILE, format!("{v}\n").into_bytes())?;
                args.extend(["--token-file".into(), format!("{dir}/{TOKEN_FILE}")]);
            } else {
                tracing::warn!(instance = %launch.name, var = %k, "the ssh provider passes no environment variables; left out");
            }
        }
        host::launch(c, &launch.name, &args)
    }
}

impl Provider for SshProvider {
    fn start(&self, launch: &Launch) -> Result<Started, ProviderError> {
        if !host::valid_name(&launch.name) {
            return Err(ProviderError::Spawn {
                name: launch.name.clone(),
                reason: "not a valid instance name".into(),
            });
        }
        let candidates = self.candidates(launch)?;
        if let [only] = candidates.as_slice() {
            return self.start_on(only, launch, &[]);
        }
        let mut skipped = Vec::new();
        for entry in placement_order(candidates, &unreachable_hosts(), &launch.busy) {
            let result = self.start_on(entry, launch, &[]);
            note_reachable(
                &entry.address,
                !matches!(result, Err(ProviderError::Unreachable { .. })),
            );
            match result {
                Ok(s) => {
                    self.warm_others(entry, launch);
                    return Ok(s);
                }
                Err(ProviderError::Host { reason, .. }) if reason.starts_with("busy") => {}
                Err(e) => {
                    tracing::warn!(host = %entry.address, instance = %launch.name, error = %e, "host skipped");
                    skipped.push(e.to_string());
                }
            }
        }
        Err(ProviderError::NoFreeHost { cloud: self.cloud.clone(), skipped })
    }

    fn stop(&self, name: &str, at: Option<&str>, graceful: bool) -> Result<(), ProviderError> {
        let at_host = at.map(crate::core::state::controllers::host_of);
        let targets: Vec<&HostEntry> = match at_host {
            Some(h) => self
                .hosts
                .iter()
                .filter(|e| {
                    e.address == h || Self::address_of(e).is_ok_and(|a| a.ip().to_string() == h)
                })
                .collect(),
            None => self.hosts.iter().collect(),
        };
        let mut unreachable = None;
        for entry in targets {
            let result = host::stop(&Client::new(entry), name, graceful);
            note_reachable(
                &entry.address,
                !matches!(result, Err(ProviderError::Unreachable { .. })),
            );
            match result {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e @ ProviderError::Unreachable { .. }) if at_host.is_none() => {
                    unreachable = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        match unreachable {
            Some(e) => Err(e),
            None => Err(ProviderError::NoSuchInstance(name.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_the_state_shows_busy_are_tried_after_free_ones_before_dead_ones() {
        let hs = [host("10.0.0.1"), host("10.0.0.2"), host("10.0.0.3"), host("10.0.0.4")];
        // The state names hosts by the IP of the instance's address.
        let busy = ["10.0.0.1".to_string(), "10.0.0.2".to_string()];
        let order = placement_order(hs.iter().collect(), &["10.0.0.2".into()], &busy);
        let names: Vec<&str> = order.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(names, ["10.0.0.3", "10.0.0.4", "10.0.0.1", "10.0.0.2"]);
    }

    fn host(a: &str) -> HostEntry {
        HostEntry {
            address: a.into(),
            user: "u".into(),
            port: 22,
            key: String::new(),
            host_key: String::new(),
            dir: "/d".into(),
            roles: vec![],
        }
    }

    #[test]
    fn hosts_found_unreachable_are_tried_last_in_pool_order() {
        let hs = [host("a"), host("b"), host("c"), host("d")];
        let order = placement_order(hs.iter().collect(), &["a".into(), "c".into()], &[]);
        let names: Vec<&str> = order.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(names, ["b", "d", "a", "c"]);
        note_reachable("zz-test-host", false);
        assert!(unreachable_hosts().contains(&"zz-test-host".to_string()));
        note_reachable("zz-test-host", true);
        assert!(
            !unreachable_hosts().contains(&"zz-test-host".to_string()),
            "a host that answers again is forgotten"
        );
    }
}
