//! `cargo bench --bench detection`: failure-detection benchmark on loopback.
//!
//! Owns the end-to-end measurement of the detection targets with 5
//! real `jujud` managers (release binaries, QUIC on 127.0.0.1): SIGKILL and
//! SIGSTOP to "member down" on every survivor, SIGCONT and restart back to
//! alive, false downs while one manager is starved of CPU, idle RSS and CPU,
//! and the same SIGKILL protocol against a 5-agent `serf` cluster as anchor.
//!
//! Timing rule: each process's stderr (JSON log lines) is read by its own
//! thread, which stamps every line with the local `Instant` it arrived at and
//! sends it down one channel. Rounds start from the `Instant` taken just
//! before the signal or spawn and end when every survivor's line has arrived;
//! waits are event driven with a cap of [`ROUND_TIMEOUT_MS`].
//!
//! Does not: judge pass/fail by exit code (verdicts are informational; it
//! exits non-zero only when the harness itself fails), or touch any state
//! outside its temporary directory.

use testkit::bench as common;
mod cluster;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster::{
    Cluster, Ev, Flavor, Kind, MANAGERS, ROUND_TIMEOUT_MS, Res, STARVE_BUSY_LOOPS, STARVE_NICE,
    busy_loops, others, schedstat, starve_threads,
};
use common::{cpu_ticks, rss_kib, sh};

const DEFAULT_ROUNDS: usize = 20;
const DEFAULT_STARVE_SECS: u64 = 60;
/// Quiet time between rounds once the cluster is all-alive again.
const SETTLE_MS: u64 = 1_000;
/// Quiet time before the idle window starts.
const IDLE_SETTLE_MS: u64 = 5_000;
const IDLE_WINDOW_SECS: u64 = 30;
/// Downs caused by starvation can surface after the busy loops stop.
const STARVE_TAIL_MS: u64 = 5_000;
const METRICS_SAMPLE_MS: u64 = 1_000;
const DETECT_MEDIAN_TARGET_MS: f64 = 1_500.0;
const DETECT_WORST_TARGET_MS: f64 = 3_000.0;
const THAW_WORST_TARGET_MS: f64 = 2_000.0;
const RESTART_WORST_TARGET_MS: f64 = 1_000.0;
const IDLE_RSS_TARGET_MIB: f64 = 25.0;
const IDLE_CPU_TARGET_PCT: f64 = 1.0;
const ALL_SCENARIOS: [&str; 6] = ["idle", "kill", "restart", "stop", "starve", "serf"];

// ---------------------------------------------------------------- results

/// One line of the final table; cells are pre-formatted.
struct Row {
    scenario: String,
    n: String,
    median: String,
    p90: String,
    worst: String,
    target: String,
    verdict: &'static str,
}

/// One sample per round in ms; `None` for a round that hit the cap.
#[derive(Default)]
struct Times {
    rounds: Vec<Option<f64>>,
}

impl Times {
    fn push(&mut self, d: Option<Duration>) {
        self.rounds.push(d.map(|d| d.as_secs_f64() * 1e3));
    }

    fn push_value(&mut self, v: f64) {
        self.rounds.push(Some(v));
    }

    fn timeouts(&self) -> usize {
        self.rounds.iter().filter(|r| r.is_none()).count()
    }

    /// The rounds in order, for the notes ("to" marks a round at the cap).
    fn detail(&self) -> String {
        let cell = |r: &Option<f64>| r.map_or("to".into(), |v| format!("{v:.0}"));
        self.rounds.iter().map(cell).collect::<Vec<_>>().join(" ")
    }

    /// (median, p90, worst) in ms over the finished rounds.
    fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.rounds.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return None;
        }
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        let p90 = v[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1];
        Some((median, p90, v[n - 1]))
    }

    fn row(&self, scenario: &str, median_max: Option<f64>, worst_max: Option<f64>) -> Row {
        let fmt = |ms: f64| format!("{:.0} ms", ms);
        let (done, timeouts) = (self.rounds.len() - self.timeouts(), self.timeouts());
        let n = if timeouts > 0 { format!("{done}+{timeouts}to") } else { done.to_string() };
        let (median, p90, worst) = self.stats().unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let mut target = Vec::new();
        if let Some(t) = median_max {
            target.push(format!("median<={}", fmt(t)));
        }
        if let Some(t) = worst_max {
            target.push(format!("worst<={}", fmt(t)));
        }
        let ok = timeouts == 0
            && done > 0
            && median_max.is_none_or(|t| median <= t)
            && worst_max.is_none_or(|t| worst <= t);
        let verdict = if target.is_empty() {
            "info"
        } else if ok {
            "meets"
        } else {
            "misses"
        };
        let worst =
            if timeouts > 0 { format!(">{}", fmt(ROUND_TIMEOUT_MS as f64)) } else { fmt(worst) };
        Row {
            scenario: scenario.into(),
            n,
            median: fmt(median),
            p90: fmt(p90),
            worst,
            target: if target.is_empty() { "-".into() } else { target.join(", ") },
            verdict,
        }
    }
}

/// What the scenarios produced: table rows, notes, and serf/jujud medians.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    jujud_kill_median_ms: Option<f64>,
    serf_kill_median_ms: Option<f64>,
}

impl Report {
    /// Adds `t` as a table row and its rounds, in order, as a note.
    fn add(&mut self, t: &Times, scenario: &str, median_max: Option<f64>, worst_max: Option<f64>) {
        self.rows.push(t.row(scenario, median_max, worst_max));
        self.notes.push(format!(
            "{scenario}: per round, victim n(round % {MANAGERS}), ms: {}",
            t.detail()
        ));
    }
}

fn note_strays(report: &mut Report, scenario: &str, round: usize, strays: Vec<String>) {
    if !strays.is_empty() {
        report
            .notes
            .push(format!("{scenario} round {round}: unexpected downs: {}", strays.join("; ")));
    }
}

// -------------------------------------------------------------- scenarios

/// One SIGKILL round: time to down on every survivor, then restart the
/// victim and time until every survivor has its new generation alive.
fn kill_round(c: &mut Cluster, victim: usize) -> Res<(Option<Duration>, Option<Duration>)> {
    let survivors = others(victim);
    let name = c.nodes[victim].name.clone();
    let mark = c.log.len();
    let t0 = Instant::now();
    c.signal(victim, libc::SIGKILL)?;
    let down = c.wait_all_saw(mark, t0, &survivors, &|e| e.kind == Kind::Down && e.member == name);
    let mark2 = c.log.len();
    let t1 = Instant::now();
    let join = (c.flavor == Flavor::Serf).then_some(survivors[0]);
    c.spawn(victim, join)?;
    if !c.wait_until(ROUND_TIMEOUT_MS, Cluster::all_alive) {
        return Err(format!("member {victim} did not come back within {ROUND_TIMEOUT_MS} ms"));
    }
    let g = c.nodes[victim].generation;
    let back = c.all_saw(mark2, t1, &survivors, &|e| {
        e.kind == Kind::Up && e.member == name && e.generation == g
    });
    Ok((down, back))
}

fn scenario_kill(c: &mut Cluster, rounds: usize, report: &mut Report) -> Res<()> {
    let (mut down, mut back) = (Times::default(), Times::default());
    let label = if c.flavor == Flavor::Serf { "serf" } else { "kill" };
    let mut failure = None;
    for r in 0..rounds {
        let victim = r % MANAGERS;
        let mark = c.log.len();
        let (d, b) = match kill_round(c, victim) {
            Ok(times) => times,
            Err(e) => {
                failure = Some(format!("{label} round {r}: {e}"));
                break;
            }
        };
        down.push(d);
        back.push(b);
        note_strays(report, label, r, c.stray_downs(mark, victim));
        c.pump_for(SETTLE_MS);
    }
    let median = down.stats().map(|s| s.0);
    if c.flavor == Flavor::Serf {
        report.serf_kill_median_ms = median;
        report.add(&down, "serf SIGKILL -> failed on all survivors", None, None);
        report.add(&back, "serf restart after failed -> joined on all", None, None);
    } else {
        report.jujud_kill_median_ms = median;
        report.add(
            &down,
            "SIGKILL -> down on all survivors",
            Some(DETECT_MEDIAN_TARGET_MS),
            Some(DETECT_WORST_TARGET_MS),
        );
        report.add(&back, "restart after down -> alive on all", None, None);
    }
    failure.map_or(Ok(()), Err)
}

/// SIGKILL then an immediate restart on the same data dir, timed from spawn
/// until every survivor logs the new generation (rename or up).
fn scenario_restart(c: &mut Cluster, rounds: usize, report: &mut Report) -> Res<()> {
    let (mut back, mut failure) = (Times::default(), None);
    for r in 0..rounds {
        let victim = r % MANAGERS;
        let survivors = others(victim);
        let name = c.nodes[victim].name.clone();
        let mark = c.log.len();
        c.signal(victim, libc::SIGKILL)?;
        let t0 = Instant::now();
        c.spawn(victim, None)?;
        if !c.wait_until(ROUND_TIMEOUT_MS, Cluster::all_alive) {
            failure = Some(format!(
                "restart round {r}: member {victim} did not come back within {ROUND_TIMEOUT_MS} ms"
            ));
            break;
        }
        let g = c.nodes[victim].generation;
        back.push(c.all_saw(mark, t0, &survivors, &|e| {
            e.kind == Kind::Up && e.member == name && e.generation == g
        }));
        let mut strays = c.stray_downs(mark, victim);
        strays.extend(
            c.log[mark..].iter().filter(|e| e.kind == Kind::Down && e.member == name).map(|e| {
                format!("n{} saw restarted {} g{} down", e.observer, e.member, e.generation)
            }),
        );
        note_strays(report, "restart", r, strays);
        c.pump_for(SETTLE_MS);
    }
    report.add(
        &back,
        "restart (kill -9 + spawn) -> alive on all",
        None,
        Some(RESTART_WORST_TARGET_MS),
    );
    failure.map_or(Ok(()), Err)
}

fn scenario_stop(c: &mut Cluster, rounds: usize, report: &mut Report) -> Res<()> {
    let (mut down, mut thaw, mut failure) = (Times::default(), Times::default(), None);
    for r in 0..rounds {
        let victim = r % MANAGERS;
        let survivors = others(victim);
        let name = c.nodes[victim].name.clone();
        let old = c.nodes[victim].generation;
        let mark = c.log.len();
        let t0 = Instant::now();
        c.signal(victim, libc::SIGSTOP)?;
        down.push(
            c.wait_all_saw(mark, t0, &survivors, &|e| e.kind == Kind::Down && e.member == name),
        );
        let mark2 = c.log.len();
        let t1 = Instant::now();
        c.signal(victim, libc::SIGCONT)?;
        thaw.push(c.wait_all_saw(mark2, t1, &survivors, &|e| {
            e.kind == Kind::Up && e.member == name && e.generation > old
        }));
        if !c.wait_until(ROUND_TIMEOUT_MS, Cluster::all_alive) {
            failure = Some(format!(
                "stop round {r}: cluster not all-alive {ROUND_TIMEOUT_MS} ms after SIGCONT"
            ));
            break;
        }
        note_strays(report, "stop", r, c.stray_downs(mark, victim));
        c.pump_for(SETTLE_MS);
    }
    report.add(
        &down,
        "SIGSTOP -> down on all survivors",
        Some(DETECT_MEDIAN_TARGET_MS),
        Some(DETECT_WORST_TARGET_MS),
    );
    report.add(&thaw, "SIGCONT -> alive (new gen) on all", None, Some(THAW_WORST_TARGET_MS));
    failure.map_or(Ok(()), Err)
}

/// Counters read from the starved manager before and after the window.
const STARVE_COUNTERS: [&str; 5] = [
    "jujud_suspicions_total",
    "jujud_refutations_total",
    "jujud_self_refutations_total",
    "jujud_late_timers_total",
    "jujud_probes_failed_total",
];

fn scenario_starve(c: &mut Cluster, secs: u64, report: &mut Report) -> Res<()> {
    let victim = MANAGERS - 1;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = cpus - 1;
    let threads = starve_threads(c.pid(victim)?, cpu)?;
    let before = c.scrape(victim).unwrap_or_default();
    let sched0 = schedstat(c.pid(victim)?);
    let mark = c.log.len();
    let loops = busy_loops(cpu)?;
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut health_max, mut health_sum, mut health_n) = (0.0f64, 0.0, 0u32);
    while Instant::now() < end {
        c.pump_for(METRICS_SAMPLE_MS);
        if let Some(h) = c.scrape(victim).and_then(|m| m.get("jujud_local_health_score").copied()) {
            (health_max, health_sum, health_n) = (health_max.max(h), health_sum + h, health_n + 1);
        }
    }
    let sched1 = schedstat(c.pid(victim)?);
    drop(loops);
    c.pump_for(STARVE_TAIL_MS);
    let after = c.scrape(victim).unwrap_or_default();
    let downs: Vec<&Ev> = c.log[mark..].iter().filter(|e| e.kind == Kind::Down).collect();
    let rejoins = c.log[mark..].iter().filter(|e| e.kind == Kind::SelfGen).count();
    report.rows.push(Row {
        scenario: format!("false downs, n{victim} starved {secs} s"),
        n: "1".into(),
        median: "-".into(),
        p90: "-".into(),
        worst: downs.len().to_string(),
        target: "0".into(),
        verdict: if downs.is_empty() { "meets" } else { "misses" },
    });
    let delta = |k: &str| {
        after.get(k).zip(before.get(k)).map_or("n/a".into(), |(a, b)| format!("{}", a - b))
    };
    let counters: Vec<String> = STARVE_COUNTERS
        .iter()
        .map(|k| format!("{}={}", k.trim_start_matches("jujud_"), delta(k)))
        .collect();
    let slices = (sched1.2 - sched0.2).max(1);
    report.notes.push(format!(
        "starve: n{victim} ran {:.0} ms of cpu in {} timeslices; waited on the runqueue {:.0} ms in all, {:.2} ms per slice",
        (sched1.0 - sched0.0) as f64 / 1e6,
        sched1.2 - sched0.2,
        (sched1.1 - sched0.1) as f64 / 1e6,
        (sched1.1 - sched0.1) as f64 / 1e6 / slices as f64
    ));
    let mean = if health_n > 0 { health_sum / health_n as f64 } else { f64::NAN };
    report.notes.push(format!(
        "starve: n{victim} ({threads} threads) pinned to cpu {cpu} at nice {STARVE_NICE} with {STARVE_BUSY_LOOPS} busy loops; \
         local_health_score max {health_max} mean {mean:.2} over {health_n} samples; rejoins {rejoins}; {}",
        counters.join(" ")
    ));
    for e in downs.iter().take(10) {
        let at = e.at.saturating_duration_since(end - Duration::from_secs(secs)).as_secs_f64();
        report.notes.push(format!(
            "starve false down at +{at:.1} s: n{} saw {} g{} down",
            e.observer, e.member, e.generation
        ));
    }
    Ok(())
}

fn scenario_idle(c: &mut Cluster, report: &mut Report) -> Res<()> {
    c.pump_for(IDLE_SETTLE_MS);
    let pids: Vec<i32> = (0..MANAGERS).map(|i| c.pid(i)).collect::<Res<_>>()?;
    let t0 = Instant::now();
    let ticks0: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    c.pump_for(IDLE_WINDOW_SECS * 1_000);
    let wall = t0.elapsed().as_secs_f64();
    let hz = common::ticks_per_sec();
    let (mut rss, mut cpu) = (Times::default(), Times::default());
    let mut per = Vec::new();
    for (i, &p) in pids.iter().enumerate() {
        let r = rss_kib(p).ok_or_else(|| format!("no VmRSS for pid {p}"))? as f64 / 1024.0;
        let t1 = cpu_ticks(p).ok_or_else(|| format!("no stat for pid {p}"))?;
        let pct = (t1.saturating_sub(ticks0[i].unwrap_or(t1))) as f64 / hz / wall * 100.0;
        per.push(format!("n{i} {r:.1} MiB {pct:.2}%"));
        rss.push_value(r);
        cpu.push_value(pct);
    }
    report.notes.push(format!("idle over {wall:.0} s: {}", per.join(", ")));
    for (t, name, unit, target) in [
        (rss, "idle RSS per manager", "MiB", IDLE_RSS_TARGET_MIB),
        (cpu, "idle CPU per manager", "%", IDLE_CPU_TARGET_PCT),
    ] {
        let (median, p90, worst) = t.stats().unwrap_or_default();
        let f = |v: f64| format!("{v:.2} {unit}");
        let verdict = if worst <= target { "meets" } else { "misses" };
        report.rows.push(Row {
            scenario: name.into(),
            n: MANAGERS.to_string(),
            median: f(median),
            p90: f(p90),
            worst: f(worst),
            target: format!("max<={}", f(target)),
            verdict,
        });
    }
    Ok(())
}

// ------------------------------------------------------------------ main

struct Args {
    rounds: usize,
    starve_secs: u64,
    only: Vec<String>,
    keep_logs: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        rounds: DEFAULT_ROUNDS,
        starve_secs: DEFAULT_STARVE_SECS,
        only: ALL_SCENARIOS.map(String::from).to_vec(),
        keep_logs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--rounds" => {
                a.rounds = val("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?
            }
            "--starve-secs" => {
                a.starve_secs =
                    val("--starve-secs")?.parse().map_err(|e| format!("--starve-secs: {e}"))?
            }
            "--skip-serf" => a.only.retain(|s| s != "serf"),
            "--keep-logs" => a.keep_logs = true,
            "--only" => {
                a.only = val("--only")?.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = a.only.iter().find(|s| !ALL_SCENARIOS.contains(&s.as_str())) {
                    return Err(format!(
                        "--only: unknown scenario {bad:?} (known: {})",
                        ALL_SCENARIOS.join(",")
                    ));
                }
            }
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench detection -- [--rounds N] [--starve-secs S] [--skip-serf] [--only {}] [--keep-logs]",
                    ALL_SCENARIOS.join(",")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if a.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok(a)
}

fn print_header(a: &Args, serf: &Option<PathBuf>) {
    println!("== jujud detection benchmark");
    println!("machine: {}", common::machine());
    println!("loadavg at start: {}", common::loadavg());
    println!("commit: {}", common::commit());
    println!(
        "jujud: {} (preset lan), {MANAGERS} managers on 127.0.0.1",
        env!("CARGO_BIN_EXE_jujud")
    );
    match serf {
        Some(p) => println!(
            "serf: {} ({})",
            p.display(),
            sh(&p.to_string_lossy(), &["version"]).lines().next().unwrap_or("?")
        ),
        None if a.only.iter().any(|s| s == "serf") => {
            println!("serf: skipped: no `serf` executable on PATH")
        }
        None => println!("serf: skipped (--skip-serf or not in --only)"),
    }
    println!(
        "run: scenarios {}; rounds {}; starve {} s; round cap {ROUND_TIMEOUT_MS} ms",
        a.only.join(","),
        a.rounds,
        a.starve_secs
    );
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

fn run_scenario(
    name: &str,
    a: &Args,
    serf: &Option<PathBuf>,
    dir: &Path,
    ports: &mut Vec<u16>,
    report: &mut Report,
) -> Res<()> {
    let jujud = PathBuf::from(env!("CARGO_BIN_EXE_jujud"));
    let (flavor, bin) = match (name, serf) {
        ("serf", Some(p)) => (Flavor::Serf, p.clone()),
        ("serf", None) => return Ok(()),
        _ => (Flavor::Jujud, jujud),
    };
    let t = Instant::now();
    eprintln!("-- {name}: starting a {MANAGERS}-member cluster");
    let mut c = Cluster::start(flavor, &bin, dir.join(name), ports)?;
    match name {
        "idle" => scenario_idle(&mut c, report)?,
        "kill" | "serf" => scenario_kill(&mut c, a.rounds, report)?,
        "restart" => scenario_restart(&mut c, a.rounds, report)?,
        "stop" => scenario_stop(&mut c, a.rounds, report)?,
        "starve" => scenario_starve(&mut c, a.starve_secs, report)?,
        _ => return Err(format!("unknown scenario {name}")),
    }
    eprintln!("-- {name}: done in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

fn print_report(report: &Report) {
    println!();
    println!(
        "{:<44} {:>6} {:>10} {:>10} {:>10}  {:<32} verdict",
        "scenario", "n", "median", "p90", "worst", "target"
    );
    for r in &report.rows {
        println!(
            "{:<44} {:>6} {:>10} {:>10} {:>10}  {:<32} {}",
            r.scenario, r.n, r.median, r.p90, r.worst, r.target, r.verdict
        );
    }
    if let (Some(s), Some(j)) = (report.serf_kill_median_ms, report.jujud_kill_median_ms) {
        println!(
            "\nSIGKILL detection medians: serf {s:.0} ms, jujud {j:.0} ms, ratio serf/jujud {:.2}",
            s / j
        );
    }
    if !report.notes.is_empty() {
        println!("\nnotes:");
        report.notes.iter().for_each(|n| println!("  {n}"));
    }
    println!("loadavg at end: {}", common::loadavg());
}

fn main() -> std::process::ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("detection: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let serf = if a.only.iter().any(|s| s == "serf") { find_on_path("serf") } else { None };
    print_header(&a, &serf);
    let tmp = match tempfile::Builder::new().prefix("jujud-detection-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("detection: tempdir: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (mut report, mut ports, mut failed) = (Report::default(), Vec::new(), false);
    for name in ALL_SCENARIOS.iter().filter(|s| a.only.iter().any(|o| o == *s)) {
        if let Err(e) = run_scenario(name, &a, &serf, tmp.path(), &mut ports, &mut report) {
            println!("HARNESS FAILURE in {name}: {e}");
            failed = true;
        }
    }
    print_report(&report);
    if a.keep_logs || failed {
        println!("logs kept in {}", tmp.keep().display());
    }
    if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
