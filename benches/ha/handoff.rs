//! Section 1, singleton handoff: in a fresh `bootstrap --ha 3`
//! environment, SIGKILL the provisioner's owner (as `show-controller`
//! names it, once every manager agrees), then read from the survivors' logs
//! when each declared it down (`member down`) and when the new owner logged
//! `singleton acquired` for the provisioner, both against the kill instant.
//!
//! Owns what a handoff round measures. Must never sleep to synchronise (it
//! waits on log events, capped), never count a round that hit its cap as a
//! time, and never keep an environment past its round.

use std::path::PathBuf;

use crate::env::{self, Env, Res, after_by, ms_since};

/// Cap on detection and handoff after the kill.
pub const ROUND_CAP_MS: u64 = 30_000;
pub const MANAGERS: u32 = 3;
pub const PROVISIONER: &str = "provisioner";

/// What one round measured; times in ms from the SIGKILL.
pub struct Handoff {
    pub victim: String,
    pub new_owner: String,
    /// The last survivor's `member down` for the victim.
    pub detection_ms: f64,
    /// The new owner's own `member down` for the victim.
    pub owner_detection_ms: f64,
    pub handoff_ms: f64,
    /// Survivors that logged `singleton acquired` for the provisioner after
    /// the kill (1 when the handoff had no overlap in the logs).
    pub acquirers: usize,
}

impl Handoff {
    pub fn margin_ms(&self) -> f64 {
        self.handoff_ms - self.detection_ms
    }
}

/// One round in a fresh environment under `root`.
pub fn round(root: PathBuf) -> env::Ended<Handoff> {
    env::run_env(root, MANAGERS, measure)
}

fn measure(env: &mut Env) -> Res<Handoff> {
    let (owners, managers) = env.agreed(MANAGERS as usize)?;
    let owner =
        owners.get(PROVISIONER).ok_or("show-controller names no provisioner owner")?.clone();
    let addr = managers
        .iter()
        .find(|m| m.id == owner)
        .ok_or("the provisioner's owner is not an alive manager")?
        .addr;
    let victim = env.instance_at(addr)?;
    let ids = env.node_ids();
    let survivors: Vec<String> = ids
        .iter()
        .filter(|(_, id)| **id != owner && managers.iter().any(|m| &m.id == *id))
        .map(|(n, _)| n.clone())
        .collect();
    let t0 = env.kill(&victim)?;
    let down = |e: &crate::common::Ev| e.msg == env::MSG_DOWN && e.text("member") == owner;
    let acquired =
        |e: &crate::common::Ev| e.msg == env::MSG_ACQUIRED && e.text("singleton") == PROVISIONER;
    let done = env.log.wait_until(ROUND_CAP_MS, |f| {
        survivors.iter().all(|s| after_by(f, t0, s, down).is_some())
            && survivors.iter().any(|s| after_by(f, t0, s, acquired).is_some())
    });
    if !done {
        return Err(format!(
            "no detection and handoff within {ROUND_CAP_MS} ms of killing {}",
            victim.name
        ));
    }
    let f = &env.log;
    let at = |s: &String, want: &dyn Fn(&crate::common::Ev) -> bool| {
        after_by(f, t0, s, want).and_then(|e| ms_since(e, t0))
    };
    let detection_ms = survivors.iter().filter_map(|s| at(s, &down)).fold(f64::NAN, f64::max);
    let (new_owner, handoff_ms) = survivors
        .iter()
        .filter_map(|s| at(s, &acquired).map(|t| (s.clone(), t)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or("no survivor acquired the provisioner")?;
    let owner_detection_ms = at(&new_owner, &down).unwrap_or(f64::NAN);
    let acquirers = survivors.iter().filter(|s| at(s, &acquired).is_some()).count();
    Ok(Handoff {
        victim: victim.name,
        new_owner,
        detection_ms,
        owner_detection_ms,
        handoff_ms,
        acquirers,
    })
}

/// One line per round, for the report.
pub fn describe(h: &Handoff) -> String {
    format!(
        "killed {} (provisioner owner); detection {:.0} ms (new owner's own {:.0} ms); {} acquired it at {:.0} ms; \
         handoff - detection {:+.0} ms; survivors acquiring {}",
        h.victim,
        h.detection_ms,
        h.owner_detection_ms,
        h.new_owner,
        h.handoff_ms,
        h.margin_ms(),
        h.acquirers
    )
}
