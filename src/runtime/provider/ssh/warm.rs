//! Warming the pool: after an instance starts, this very `jujud` binary is
//! installed, in the background, on the next free host a later start of
//! the same role would pick, so that start (a heal's replacement above
//! all) finds it in place instead of copying it first (about 3 s for the
//! 90 MB release binary on a loaded 2-core machine: the largest step of a
//! heal after the grace period).
//!
//! Owns the set of hosts being warmed in this process. Must never touch a
//! host marked by another environment (it installs only where the host's
//! mark is absent or ours; a host marked by another environment between
//! that check and the copy gets its own binary back on its next install,
//! which compares checksums), never visit a host known unreachable, and
//! never hold up the start that triggered it: it runs on its own thread,
//! one host after another, each within the install's own deadline.

use std::path::PathBuf;
use std::sync::Mutex;

use super::client::{CALL_TIMEOUT_MS, Client, quote};
use super::cloud::HostEntry;
use super::install;
use crate::runtime::provider::ProviderError;

/// Hosts warmed after one start: one is what the next start needs; more
/// would copy the binary to hosts that may never run anything.
pub const WARM_HOSTS_PER_START: usize = 1;
/// Most warming passes running at once in a process; a start beyond it
/// warms nothing (its next start will).
pub const MAX_WARM_PASSES: usize = 4;

/// Hosts being warmed now, and how many passes run.
static IN_FLIGHT: Mutex<(Vec<String>, usize)> = Mutex::new((Vec::new(), 0));

/// Whether `address` is being warmed now.
pub fn warming(address: &str) -> bool {
    IN_FLIGHT.lock().expect("warm set").0.iter().any(|h| h == address)
}

/// Starts a pass over `hosts` (in the order a start would try them; the
/// caller left out the busy and unreachable ones) that warms up to
/// [`WARM_HOSTS_PER_START`] of them. Returns whether a pass started.
pub fn spawn(hosts: Vec<HostEntry>, environment: String, jujud: PathBuf) -> bool {
    let hosts: Vec<HostEntry> = {
        let mut f = IN_FLIGHT.lock().expect("warm set");
        if f.1 >= MAX_WARM_PASSES {
            return false;
        }
        let hosts: Vec<HostEntry> =
            hosts.into_iter().filter(|h| !f.0.contains(&h.address)).collect();
        if hosts.is_empty() {
            return false;
        }
        f.0.extend(hosts.iter().map(|h| h.address.clone()));
        f.1 += 1;
        hosts
    };
    let done = |hosts: &[HostEntry]| {
        let mut f = IN_FLIGHT.lock().expect("warm set");
        f.0.retain(|h| !hosts.iter().any(|e| e.address == *h));
        f.1 -= 1;
    };
    let pass = hosts.clone();
    let spawned = std::thread::Builder::new().name("ssh-warm".into()).spawn(move || {
        let mut warmed = 0;
        for entry in &pass {
            if warmed >= WARM_HOSTS_PER_START {
                break;
            }
            warmed += usize::from(warm_one(entry, &environment, &jujud));
        }
        done(&pass);
    });
    if spawned.is_err() {
        done(&hosts);
        return false;
    }
    true
}

/// Installs the binary on one host if it is unmarked or marked by
/// `environment`. Returns whether the host holds it now; logs, never fails
/// the caller.
fn warm_one(entry: &HostEntry, environment: &str, jujud: &std::path::Path) -> bool {
    let c = Client::new(entry);
    match may_warm(&c, environment) {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            tracing::debug!(host = %entry.address, error = %e, "not warmed");
            return false;
        }
    }
    match install::install(&c, jujud) {
        Ok(copied) => {
            tracing::info!(host = %entry.address, copied, "jujud installed ahead of a start");
            true
        }
        Err(e) => {
            tracing::info!(host = %entry.address, error = %e, "warming a host failed");
            false
        }
    }
}

/// Whether the host's dir is unmarked or marked by `environment`, and its
/// slot free (a host running an instance has the binary it runs).
fn may_warm(c: &Client, environment: &str) -> Result<bool, ProviderError> {
    let script = format!(
        "D={d}; E={e}; cur=$(cat \"$D/environment\" 2>/dev/null); [ -d \"$D/slot\" ] && {{ echo BUSY; exit 0; }}; \
         if [ -z \"$cur\" ] || [ \"$cur\" = \"$E\" ]; then echo WARM; else echo OTHER; fi",
        d = quote(&c.entry().dir),
        e = quote(environment)
    );
    let out = c.run(&script, None, CALL_TIMEOUT_MS)?;
    Ok(out.stdout.trim() == "WARM")
}
