//! Section 2, growing: `juju enable-ha -n 3` from a one-manager
//! environment, timed as a command (it returns once three managers are
//! alive), then how long until every manager agrees on three alive and on
//! the singleton owners. `juju bootstrap --ha 3` is timed by every round
//! of the other sections, which all start that way.
//!
//! Owns what a grow round measures. Must never keep an environment past its
//! round, and never count a failed command as a time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::env::{self, Env, Res};

pub const TO_MANAGERS: u32 = 3;

/// What one round measured.
pub struct Grow {
    /// `juju enable-ha -n 3`, start to exit.
    pub enable_ha: Duration,
    /// From the start of `enable-ha` until every manager agrees.
    pub agreed: Duration,
    /// The managers' instance names afterwards.
    pub instances: Vec<String>,
}

pub fn round(root: PathBuf) -> env::Ended<Grow> {
    env::run_env(root, 1, measure)
}

fn measure(env: &mut Env) -> Res<Grow> {
    env.agreed(1)?;
    let t = Instant::now();
    let out = env.ok(&["enable-ha", "-n", &TO_MANAGERS.to_string()])?;
    let enable_ha = t.elapsed();
    if !out.contains(&format!("HA {TO_MANAGERS}/{TO_MANAGERS}")) {
        return Err(format!("enable-ha answered {out:?}"));
    }
    env.agreed(TO_MANAGERS as usize)?;
    let agreed = t.elapsed();
    let instances = env.instances().into_iter().filter(Env::running).map(|i| i.name).collect();
    Ok(Grow { enable_ha, agreed, instances })
}

pub fn describe(g: &Grow) -> String {
    format!(
        "enable-ha -n {TO_MANAGERS}: {:.0} ms; all managers agreeing: {:.0} ms; running instances {:?}",
        g.enable_ha.as_secs_f64() * 1e3,
        g.agreed.as_secs_f64() * 1e3,
        g.instances
    )
}
