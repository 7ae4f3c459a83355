//! The failover rounds of the agents benchmark: SIGKILL the manager holding
//! the most agent sessions, time detection (every surviving manager logs
//! "member down" for it) and each of its agents' re-session (the agent logs
//! "agent session opened" with another manager), then restart the victim on
//! its data dir and time its agents' return to it after the rebalance
//! settle time.
//!
//! Owns what one round measures and how it is checked. Must never sleep to
//! synchronise (it waits on log events, capped), and never count a round
//! that hit its cap as a time: such a round is reported as a timeout.

use std::time::{Duration, Instant};

use crate::fleet::{FORM_TIMEOUT_MS, Fleet, MANAGERS, MSG_DOWN, MSG_SESSION, Res};

/// Cap on one round's detection and re-sessions.
pub const ROUND_CAP_MS: u64 = 30_000;
/// Quiet time between a settled fleet and the next kill.
pub const BETWEEN_ROUNDS_MS: u64 = 1_000;

/// What one round measured. Times are from the SIGKILL (or the restart).
pub struct Round {
    pub victim: usize,
    /// Sessions each manager held just before the kill.
    pub sessions: Vec<usize>,
    /// The last surviving manager's "member down" for the victim.
    pub detection: Option<Duration>,
    /// Per agent of the victim: its new session, on another manager.
    pub resession: Vec<Option<Duration>>,
    /// Per agent of the victim: when it logged the victim down itself.
    pub agent_down: Vec<Option<Duration>>,
    /// Restart until the last of the victim's agents is back on it.
    pub back: Option<Duration>,
    /// Sessions opened by agents that were not on the victim (should be 0).
    pub stray_sessions: usize,
    /// Session opens that never opened (gaps in the agents' session ids).
    pub failed_opens: u64,
    /// 1-minute load average when the round started.
    pub load1: f64,
}

impl Round {
    /// The worst re-session minus detection, when both finished.
    pub fn margin(&self) -> Option<f64> {
        let worst =
            self.resession.iter().copied().collect::<Option<Vec<_>>>()?.into_iter().max()?;
        Some(ms(worst) - ms(self.detection?))
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn since(e: Option<&crate::common::Ev>, t0: Instant) -> Option<Duration> {
    e.map(|e| e.at.saturating_duration_since(t0))
}

/// One round; the fleet must be settled. Returns once it is settled again.
pub fn round(f: &mut Fleet) -> Res<Round> {
    let load1 = crate::common::load1();
    let sessions = f.sessions_per_manager();
    let victim =
        (0..MANAGERS).max_by_key(|&i| (sessions[i], std::cmp::Reverse(i))).ok_or("no managers")?;
    let vid = f.managers[victim].id.clone();
    let moved: Vec<usize> =
        (0..f.agents.len()).filter(|&j| f.session[j].as_deref() == Some(vid.as_str())).collect();
    let survivors: Vec<usize> = (0..MANAGERS).filter(|&i| i != victim).collect();
    let is_down = |e: &crate::common::Ev| e.msg == MSG_DOWN && e.text("member") == vid;
    let elsewhere = |e: &crate::common::Ev| e.msg == MSG_SESSION && e.text("manager") != vid;
    let mark = f.log.len();
    let t0 = Instant::now();
    f.kill_manager(victim)?;
    f.wait_until(ROUND_CAP_MS, |f| {
        survivors.iter().all(|&m| f.first_after(mark, m, is_down).is_some())
            && moved.iter().all(|&j| f.first_after(mark, MANAGERS + j, elsewhere).is_some())
    });
    let detection = survivors
        .iter()
        .map(|&m| since(f.first_after(mark, m, is_down), t0))
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let resession =
        moved.iter().map(|&j| since(f.first_after(mark, MANAGERS + j, elsewhere), t0)).collect();
    let agent_down =
        moved.iter().map(|&j| since(f.first_after(mark, MANAGERS + j, is_down), t0)).collect();
    let mark2 = f.log.len();
    let t1 = Instant::now();
    f.spawn_manager(victim, false)?;
    f.wait_or(
        FORM_TIMEOUT_MS,
        &format!("settled fleet after restarting m{victim}"),
        Fleet::settled,
    )?;
    let back_on = |e: &crate::common::Ev| e.msg == MSG_SESSION && e.text("manager") == vid;
    let back = moved
        .iter()
        .map(|&j| since(f.first_after(mark2, MANAGERS + j, back_on), t1))
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let stray_sessions = f.log[mark..]
        .iter()
        .filter(|e| {
            e.msg == MSG_SESSION && e.who >= MANAGERS && !moved.contains(&(e.who - MANAGERS))
        })
        .count();
    let failed_opens = (0..f.agents.len()).map(|j| failed_opens(f, mark, MANAGERS + j)).sum();
    Ok(Round {
        victim,
        sessions,
        detection,
        resession,
        agent_down,
        back,
        stray_sessions,
        failed_opens,
        load1,
    })
}

/// Session ids an agent used after `mark` without logging them opened: each
/// open attempt takes the next id, so a gap is an attempt that failed.
fn failed_opens(f: &Fleet, mark: usize, who: usize) -> u64 {
    let id = |e: &crate::common::Ev| {
        (e.who == who && e.msg == MSG_SESSION).then(|| e.num("session")).flatten()
    };
    let before = f.log[..mark].iter().rev().find_map(id).unwrap_or(0);
    let after: Vec<u64> = f.log[mark..].iter().filter_map(id).collect();
    after.last().map_or(0, |last| last.saturating_sub(before).saturating_sub(after.len() as u64))
}

/// `rounds` rounds, each from a settled fleet.
pub fn run(f: &mut Fleet, rounds: usize) -> (Vec<Round>, Option<String>) {
    let mut done = Vec::new();
    for r in 0..rounds {
        f.pump_for(BETWEEN_ROUNDS_MS);
        match round(f) {
            Ok(x) => {
                eprintln!("-- round {}: {}", r + 1, describe(&x));
                done.push(x);
            }
            Err(e) => return (done, Some(format!("round {}: {e}", r + 1))),
        }
    }
    (done, None)
}

fn cell(d: Option<Duration>) -> String {
    d.map_or("cap".into(), |d| format!("{:.0}", ms(d)))
}

/// One line per round, for the report.
pub fn describe(r: &Round) -> String {
    let res: Vec<String> = r.resession.iter().map(|d| cell(*d)).collect();
    let own: Vec<String> = r.agent_down.iter().map(|d| cell(*d)).collect();
    let margin = r.margin().map_or("n/a".into(), |m| format!("{m:+.0} ms"));
    format!(
        "victim m{} (sessions {:?}); detection {} ms; re-session of its {} agents (ms): {}; worst re-session - detection {margin}; \
         those agents' own \"member down\" (ms): {}; back on m{} after restart {} ms; stray sessions {}; failed session opens {}; load1 {:.2}",
        r.victim,
        r.sessions,
        cell(r.detection),
        r.resession.len(),
        res.join(" "),
        own.join(" "),
        r.victim,
        cell(r.back),
        r.stray_sessions,
        r.failed_opens,
        r.load1
    )
}
