//! The idle cost of a machine agent: VmRSS of each `jujud agent` process
//! (its workload is a separate process and does not count), split into
//! anonymous and file-backed pages, its threads, the largest mappings of the
//! median agent, and its CPU use over an idle window.
//!
//! Owns only reading /proc for the fleet's agents. Must never touch the
//! processes it measures, and never measure before the fleet has settled.

use std::time::Instant;

use crate::common::{self, cpu_ticks, rss_kib, status_kib, ticks_per_sec};
use crate::fleet::{Fleet, MSG_WORKLOAD_STARTED, Res};
use crate::stats::Samples;

/// Largest mappings listed for the median agent.
const TOP_MAPPINGS: usize = 6;

/// What one idle window measured over the agents.
pub struct Cost {
    pub rss_mib: Samples,
    pub anon_mib: Samples,
    pub file_mib: Samples,
    pub threads: Samples,
    pub cpu_pct: Samples,
    /// Managers' VmRSS, for context.
    pub manager_rss_mib: Samples,
    /// Each manager's CPU over the idle window, % of one core.
    pub manager_cpu_pct: Samples,
    pub window_secs: f64,
    /// The largest mappings of the agent with the median RSS.
    pub top_mappings: String,
    /// Agents whose workload is not a live separate process (should be 0).
    pub missing_workloads: usize,
}

/// `(rss kB, mapping)` of a process's largest mappings, from smaps.
fn top_mappings(pid: i32, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return "smaps unreadable".into();
    };
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first().is_some_and(|c| c.contains('-') && !c.ends_with(':')) {
            let file = cols.get(5).map_or("[anon]", |f| f.rsplit('/').next().unwrap_or(f));
            name = format!("{file} {}", cols.get(1).unwrap_or(&""));
        } else if let ["Rss:", kb, ..] = cols[..] {
            maps.push((kb.parse().unwrap_or(0), name.clone()));
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    maps.iter().take(n).map(|(kb, m)| format!("{m} {kb} kB")).collect::<Vec<_>>().join(", ")
}

/// Whether agent `j`'s newest workload process is alive and is not the agent.
fn workload_alive(f: &Fleet, j: usize) -> bool {
    let who = crate::fleet::MANAGERS + j;
    let pid = f
        .log
        .iter()
        .rev()
        .find(|e| e.who == who && e.msg == MSG_WORKLOAD_STARTED)
        .and_then(|e| e.num("pid"));
    pid.is_some_and(|p| {
        Some(p as i32) != f.agents[j].pid() && std::path::Path::new(&format!("/proc/{p}")).exists()
    })
}

/// Waits `settle_ms` (the fleet must already be settled), then measures over
/// `window_secs` of idling.
pub fn measure(f: &mut Fleet, settle_ms: u64, window_secs: u64) -> Res<Cost> {
    f.pump_for(settle_ms);
    if !f.settled() {
        return Err("the fleet was not settled before the idle window".into());
    }
    let pids: Vec<i32> = f
        .agents
        .iter()
        .map(|a| a.pid().ok_or_else(|| "an agent is not running".to_string()))
        .collect::<Res<_>>()?;
    let t0 = Instant::now();
    let ticks0: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let mpids: Vec<i32> = f.managers.iter().filter_map(|m| m.pid()).collect();
    let mticks0: Vec<Option<u64>> = mpids.iter().map(|&p| cpu_ticks(p)).collect();
    f.pump_for(window_secs * 1_000);
    let wall = t0.elapsed().as_secs_f64();
    let mib = |kib: Option<u64>, what: &str, pid: i32| {
        kib.map(|k| k as f64 / 1024.0).ok_or(format!("no {what} for pid {pid}"))
    };
    let mut c = Cost {
        rss_mib: Samples::default(),
        anon_mib: Samples::default(),
        file_mib: Samples::default(),
        threads: Samples::default(),
        cpu_pct: Samples::default(),
        manager_rss_mib: Samples::default(),
        manager_cpu_pct: Samples::default(),
        window_secs: wall,
        top_mappings: String::new(),
        missing_workloads: (0..f.agents.len()).filter(|&j| !workload_alive(f, j)).count(),
    };
    let mut by_rss = Vec::new();
    for (i, &p) in pids.iter().enumerate() {
        let rss = mib(rss_kib(p), "VmRSS", p)?;
        by_rss.push((rss, p));
        c.rss_mib.push(rss);
        c.anon_mib.push(mib(status_kib(p, "RssAnon"), "RssAnon", p)?);
        c.file_mib.push(mib(status_kib(p, "RssFile"), "RssFile", p)?);
        c.threads.push(thread_count(p) as f64);
        let t1 = cpu_ticks(p).ok_or(format!("no stat for pid {p}"))?;
        c.cpu_pct.push(
            t1.saturating_sub(ticks0[i].unwrap_or(t1)) as f64 / ticks_per_sec() / wall * 100.0,
        );
    }
    for (i, &m) in mpids.iter().enumerate() {
        c.manager_rss_mib.push(mib(rss_kib(m), "VmRSS", m)?);
        let t1 = cpu_ticks(m).ok_or(format!("no stat for pid {m}"))?;
        c.manager_cpu_pct.push(
            t1.saturating_sub(mticks0[i].unwrap_or(t1)) as f64 / ticks_per_sec() / wall * 100.0,
        );
    }
    by_rss.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, p)) = by_rss.get(by_rss.len() / 2) {
        c.top_mappings = top_mappings(*p, TOP_MAPPINGS);
    }
    Ok(c)
}

fn thread_count(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count() as u64)
}

/// The report lines of one window, labelled `when`.
pub fn describe(c: &Cost, when: &str) -> Vec<String> {
    let f2 = |s: &Samples| format!("median {:.2} / worst {:.2}", s.median(), s.worst());
    vec![
        format!(
            "{when}: agent VmRSS MiB {} (n={}); of which RssAnon {} and RssFile {}",
            f2(&c.rss_mib),
            c.rss_mib.len(),
            f2(&c.anon_mib),
            f2(&c.file_mib)
        ),
        format!(
            "{when}: agent idle CPU % over {:.0} s {}; threads {}",
            c.window_secs,
            f2(&c.cpu_pct),
            f2(&c.threads)
        ),
        format!("{when}: median agent's largest mappings: {}", c.top_mappings),
        format!(
            "{when}: manager VmRSS MiB {}; manager CPU % {}; agents without a live workload process: {}",
            f2(&c.manager_rss_mib),
            f2(&c.manager_cpu_pct),
            c.missing_workloads
        ),
        format!("{when}: loadavg {}", common::loadavg()),
    ]
}
