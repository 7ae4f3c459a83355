//! Section 3, healing: in a fresh `bootstrap --ha 3` environment with a
//! given `ha-grace-ms`, SIGKILL one manager (rotating over the three, the
//! bootstrap one included), then read from the logs when the survivors
//! declared it down, when the HA keeper decided to replace it, and when the
//! provider started the replacement's instance, and probe the
//! replacement's own endpoint until it answers `juju status`.
//!
//! Owns what a heal round measures and checks (the dead instance stays
//! stopped, one replacement). Must never sleep to synchronise on what a log
//! says (it waits on the events, capped), and never count a round that hit
//! its cap as a time.

use std::path::PathBuf;

use crate::common::Ev;
use crate::env::{self, Env, Res, after, after_by, ms_since};

pub const MANAGERS: u32 = 3;
/// The default `ha-grace-ms` (docs/OPERATIONS.md).
pub const DEFAULT_GRACE_MS: u64 = 10_000;
/// The target: a replacement serving within the grace period plus this.
pub const HEAL_MARGIN_TARGET_MS: f64 = 5_000.0;
/// Cap on a round beyond the grace period.
pub const ROUND_CAP_EXTRA_MS: u64 = 60_000;
/// Cap on the survivors seeing the replacement up once it answers.
pub const UP_CAP_MS: u64 = 15_000;

/// What one round measured; times in ms from the SIGKILL.
pub struct Heal {
    pub grace_ms: u64,
    pub victim: String,
    pub detection_ms: f64,
    pub keeper_ms: f64,
    pub started_ms: f64,
    pub replacement: String,
    pub answered_ms: f64,
    /// The last survivor's `member up` for the replacement (NaN if unseen).
    pub up_ms: f64,
    /// New instances started after the kill (1 is right).
    pub new_instances: usize,
    /// The victim's record says stopped and its process is gone.
    pub victim_stopped: bool,
}

impl Heal {
    pub fn margin_ms(&self) -> f64 {
        self.answered_ms - self.grace_ms as f64
    }
}

/// One round killing manager `victim_index` (of the three, by instance
/// name) with grace `grace_ms`.
pub fn round(root: PathBuf, grace_ms: u64, victim_index: usize) -> env::Ended<Heal> {
    env::run_env(root, MANAGERS, |env| measure(env, grace_ms, victim_index))
}

fn measure(env: &mut Env, grace_ms: u64, victim_index: usize) -> Res<Heal> {
    if grace_ms != DEFAULT_GRACE_MS {
        env.ok(&[
            "controller-config",
            &format!("ha-grace-ms={grace_ms}"),
            "--wait-replicated",
            &(MANAGERS - 1).to_string(),
        ])?;
    }
    let (_, managers) = env.agreed(MANAGERS as usize)?;
    let mut insts: Vec<_> = managers.iter().map(|m| env.instance_at(m.addr)).collect::<Res<_>>()?;
    insts.sort_by(|a, b| a.name.cmp(&b.name));
    let victim = insts[victim_index % insts.len()].clone();
    let vid = managers
        .iter()
        .find(|m| m.addr == victim.address)
        .map(|m| m.id.clone())
        .ok_or("victim has no id")?;
    let survivors: Vec<String> =
        insts.iter().filter(|i| i.name != victim.name).map(|i| i.name.clone()).collect();
    let t0 = env.kill(&victim)?;
    let down = |e: &Ev| e.msg == env::MSG_DOWN && e.text("member") == vid;
    let heal = |e: &Ev| e.msg == env::MSG_HEAL;
    let started = |e: &Ev| {
        e.msg == env::MSG_STARTED
            && e.fields["existed"] == false
            && e.text("instance") != victim.name
    };
    let cap = grace_ms + ROUND_CAP_EXTRA_MS;
    let seen = env.log.wait_until(cap, |f| {
        survivors.iter().all(|s| after_by(f, t0, s, down).is_some())
            && after(f, t0, heal).is_some()
            && after(f, t0, started).is_some()
    });
    if !seen {
        return Err(format!(
            "no detection, heal decision and replacement start within {cap} ms of killing {}",
            victim.name
        ));
    }
    let f = &env.log;
    let detection_ms = survivors
        .iter()
        .filter_map(|s| after_by(f, t0, s, down).and_then(|e| ms_since(e, t0)))
        .fold(f64::NAN, f64::max);
    let keeper_ms = after(f, t0, heal).and_then(|e| ms_since(e, t0)).unwrap_or(f64::NAN);
    let start = after(f, t0, started).ok_or("no start")?;
    let (started_ms, replacement) =
        (ms_since(start, t0).unwrap_or(f64::NAN), start.text("instance"));
    let addr = start
        .text("address")
        .parse()
        .map_err(|e| format!("instance started with address {:?}: {e}", start.text("address")))?;
    let answered = env::first_answer(&env.root, addr, cap)?;
    let answered_ms = answered.duration_since(t0).map_err(|e| e.to_string())?.as_secs_f64() * 1e3;
    let up_ms = replacement_up(env, t0, &survivors, &replacement);
    let new_instances =
        env.log.matching(|e| e.stamp.is_some_and(|s| s >= t0) && started(e)).count();
    let victim_stopped = env.provider().instance(&victim.name).is_ok_and(|i| i.state == "stopped")
        && !Env::running(&victim);
    Ok(Heal {
        grace_ms,
        victim: victim.name,
        detection_ms,
        keeper_ms,
        started_ms,
        replacement,
        answered_ms,
        up_ms,
        new_instances,
        victim_stopped,
    })
}

/// When the last survivor logged `member up` for the replacement.
fn replacement_up(
    env: &mut Env,
    t0: std::time::SystemTime,
    survivors: &[String],
    replacement: &str,
) -> f64 {
    let id_of = |f: &crate::common::follow::Follower| {
        after_by(f, t0, replacement, |e| e.msg == env::MSG_MANAGER).map(|e| e.text("id"))
    };
    let up = |f: &crate::common::follow::Follower, s: &String| {
        let id = id_of(f)?;
        after_by(f, t0, s, |e| e.msg == env::MSG_UP && e.text("member") == id)
            .and_then(|e| ms_since(e, t0))
    };
    env.log.wait_until(UP_CAP_MS, |f| survivors.iter().all(|s| up(f, s).is_some()));
    let all: Option<Vec<f64>> = survivors.iter().map(|s| up(&env.log, s)).collect();
    all.map_or(f64::NAN, |v| v.into_iter().fold(f64::NAN, f64::max))
}

pub fn describe(h: &Heal) -> String {
    format!(
        "grace {} ms, killed {}: detection {:.0} ms; keeper replacing it {:.0} ms; {} started {:.0} ms; it answered status {:.0} ms \
         (grace {:+.0} ms); survivors saw it up {:.0} ms; new instances {}; victim stopped {}",
        h.grace_ms,
        h.victim,
        h.detection_ms,
        h.keeper_ms,
        h.replacement,
        h.started_ms,
        h.answered_ms,
        h.margin_ms(),
        h.up_ms,
        h.new_instances,
        h.victim_stopped
    )
}
