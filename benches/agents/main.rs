//! `cargo bench --bench agents`: the machine-agent benchmark (issue 5), with
//! three real `jujud peer` managers and twenty `jujud agent` processes
//! (release binaries, QUIC on loopback: managers on 127.0.0.1, each agent on
//! its own 127.1.x.y), each agent running one unit.
//!
//! Owns the end-to-end measurement of the agent targets: after SIGKILL of
//! the manager holding the most sessions, every one of its agents has a
//! session with another manager within detection time + 0.5 s (ten rounds,
//! the victim restarted on its data dir between them and its agents moving
//! back after `REBALANCE_SETTLE_MS`); no workload is started twice; and an
//! idle agent's RSS (target at most 10 MiB) and CPU, measured before and
//! after the rounds.
//!
//! Does not: judge by exit code, except that a workload restart (the one
//! thing the agents must never do here) or a harness failure exits non-zero;
//! fake an anchor (Juju's reconnection is quoted from its source, not run);
//! or touch anything outside its temporary directory.

use testkit::bench as common;
mod cost;
mod failover;
mod fleet;
use testkit::stats;

use std::time::Instant;

use failover::{ROUND_CAP_MS, Round, ms};
use fleet::{Fleet, MANAGERS, Res};
use jujud::core::agent::role::REBALANCE_SETTLE_MS;
use stats::Samples;

const DEFAULT_ROUNDS: usize = 10;
const DEFAULT_AGENTS: usize = 20;
/// Idle window for CPU (the brief asks for 10 to 30 s).
const DEFAULT_IDLE_SECS: u64 = 20;
/// Quiet time after settling before an idle window starts.
const IDLE_SETTLE_MS: u64 = 5_000;
/// Every moved agent re-sessions within detection plus this.
const RESESSION_MARGIN_TARGET_MS: f64 = 500.0;
const IDLE_RSS_TARGET_MIB: f64 = 10.0;

struct Args {
    rounds: usize,
    agents: usize,
    idle_secs: u64,
    keep_logs: bool,
}

fn number<T: std::str::FromStr>(name: &str, v: Option<String>) -> Res<T> {
    v.ok_or_else(|| format!("{name} needs a value"))?
        .parse()
        .map_err(|_| format!("{name}: not a number"))
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        rounds: DEFAULT_ROUNDS,
        agents: DEFAULT_AGENTS,
        idle_secs: DEFAULT_IDLE_SECS,
        keep_logs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--rounds" => a.rounds = number(&arg, it.next())?,
            "--agents" => a.agents = number(&arg, it.next())?,
            "--idle-secs" => a.idle_secs = number(&arg, it.next())?,
            "--keep-logs" => a.keep_logs = true,
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench agents -- [--rounds N] [--agents N] [--idle-secs S] [--keep-logs]"
                );
                println!(
                    "  AGENTS_BENCH_RUST_LOG=FILTER sets the processes' RUST_LOG (default info), e.g. info,jujud=debug"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if a.rounds == 0 || a.agents == 0 || a.idle_secs == 0 {
        return Err("--rounds, --agents and --idle-secs must be at least 1".into());
    }
    Ok(a)
}

fn print_header(a: &Args) {
    println!("== jujud agents benchmark");
    println!("machine: {}", common::machine());
    println!("loadavg at start: {}", common::loadavg());
    println!("commit: {}", common::commit());
    println!(
        "jujud: {} (preset lan), {MANAGERS} managers and {} agents on loopback (managers 127.0.0.1, agents 127.1.x.y)",
        env!("CARGO_BIN_EXE_jujud"),
        a.agents
    );
    println!(
        "run: {} rounds; idle window {} s after {IDLE_SETTLE_MS} ms quiet; round cap {ROUND_CAP_MS} ms; REBALANCE_SETTLE_MS {REBALANCE_SETTLE_MS}",
        a.rounds, a.idle_secs
    );
    println!(
        "anchor (quoted, not measured): Juju's agents dial every controller address in parallel, staggered by 200 ms, \
         each dial with a 3 s timeout (juju/juju source); serf has no agent sessions, so no serf run here"
    );
}

/// The final table: one row per figure.
struct Table(Vec<[String; 6]>);

impl Table {
    fn row(&mut self, figure: &str, s: &Samples, unit: &str, target: &str, verdict: &str) {
        let f = |v: f64| format!("{v:.0} {unit}");
        let f = |v: f64| if unit == "MiB" || unit == "%" { format!("{v:.2} {unit}") } else { f(v) };
        self.0.push([
            figure.into(),
            s.len().to_string(),
            f(s.median()),
            f(s.worst()),
            target.into(),
            verdict.into(),
        ]);
    }

    fn print(&self) {
        println!(
            "{:<52} {:>4} {:>10} {:>10}  {:<18} verdict",
            "figure", "n", "median", "worst", "target"
        );
        for r in &self.0 {
            println!("{:<52} {:>4} {:>10} {:>10}  {:<18} {}", r[0], r[1], r[2], r[3], r[4], r[5]);
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "misses" }
}

fn failover_rows(t: &mut Table, rounds: &[Round], wanted: usize) {
    let (mut det, mut res, mut margin, mut back) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default());
    let mut timeouts = 0;
    for r in rounds {
        if let Some(d) = r.detection {
            det.push(ms(d));
        }
        for d in &r.resession {
            d.map_or_else(|| timeouts += 1, |d| res.push(ms(d)));
        }
        if let Some(m) = r.margin() {
            margin.push(m);
        }
        if let Some(d) = r.back {
            back.push(ms(d));
        }
    }
    let all = rounds.len() == wanted && timeouts == 0 && margin.len() == rounds.len();
    let ok = all && margin.worst() <= RESESSION_MARGIN_TARGET_MS;
    t.row("SIGKILL -> member down on both surviving managers", &det, "ms", "-", "info");
    let capped = if timeouts > 0 { format!("info ({timeouts} at the cap)") } else { "info".into() };
    t.row("SIGKILL -> moved agent's session on another manager", &res, "ms", "-", &capped);
    t.row(
        "per round: worst re-session - detection",
        &margin,
        "ms",
        &format!("<= +{RESESSION_MARGIN_TARGET_MS:.0} ms"),
        verdict(ok),
    );
    t.row("restart -> victim's agents back on it", &back, "ms", "-", "info");
    let mut failed = Samples::default();
    rounds.iter().for_each(|r| failed.push(r.failed_opens as f64));
    t.row("per round: agents' session opens that failed", &failed, "", "-", "info");
}

fn cost_rows(t: &mut Table, c: &cost::Cost, when: &str) {
    let rss_ok = c.rss_mib.worst() <= IDLE_RSS_TARGET_MIB;
    t.row(
        &format!("agent idle VmRSS ({when})"),
        &c.rss_mib,
        "MiB",
        &format!("<= {IDLE_RSS_TARGET_MIB:.0} MiB"),
        verdict(rss_ok),
    );
    t.row(&format!("agent idle CPU ({when})"), &c.cpu_pct, "%", "-", "info");
}

/// How hard the fleet pushed the managers so far: login rate limit lines
/// (and the refusals they count), handshake guard lines, and rejoins of
/// members declared down.
fn pressure(f: &Fleet) -> String {
    let count = |msg: &str| f.log.iter().filter(|e| e.msg == msg).count();
    let refused: u64 = f
        .log
        .iter()
        .filter(|e| e.msg == jujud::events::AGENT_LOGIN_RATE_LIMITED)
        .filter_map(|e| e.num("refused"))
        .sum();
    format!(
        "pressure: {} login rate limit lines ({refused} refusals counted in them); {} handshake guard lines; {} rejoins after being declared down",
        count(jujud::events::AGENT_LOGIN_RATE_LIMITED),
        count(jujud::events::HANDSHAKES_PILE_UP),
        count(jujud::events::REJOINED)
    )
}

/// Runs everything; the notes and table are filled as far as it got.
fn run(a: &Args, dir: &std::path::Path, t: &mut Table, notes: &mut Vec<String>) -> Res<u64> {
    let started = Instant::now();
    eprintln!("-- forming {MANAGERS} managers and {} agents", a.agents);
    let mut f = Fleet::start(dir, a.agents)?;
    notes.push(format!(
        "fleet formed and settled in {:.1} s; sessions per manager {:?}",
        started.elapsed().as_secs_f64(),
        f.sessions_per_manager()
    ));
    let before = cost::measure(&mut f, IDLE_SETTLE_MS, a.idle_secs)?;
    notes.extend(cost::describe(&before, "idle before the rounds"));
    cost_rows(t, &before, "before");
    let (rounds, failure) = failover::run(&mut f, a.rounds);
    notes.extend(
        rounds
            .iter()
            .enumerate()
            .map(|(i, r)| format!("round {}: {}", i + 1, failover::describe(r))),
    );
    failover_rows(t, &rounds, a.rounds);
    let mut load = Samples::default();
    rounds.iter().for_each(|r| load.push(r.load1));
    notes.push(format!(
        "load1 at the rounds' starts: median {:.2}, worst {:.2}",
        load.median(),
        load.worst()
    ));
    notes.push(pressure(&f));
    if let Some(e) = failure {
        return Err(e);
    }
    let after = cost::measure(&mut f, IDLE_SETTLE_MS, a.idle_secs)?;
    notes.extend(cost::describe(&after, "idle after the rounds"));
    cost_rows(t, &after, "after");
    let extra: u64 = f.starts.iter().map(|s| s.saturating_sub(1)).sum();
    let (starts, exits): (u64, u64) = (f.starts.iter().sum(), f.exits.iter().sum());
    let mut s = Samples::default();
    s.push(extra as f64);
    t.row(
        "workload starts beyond the first, all rounds",
        &s,
        "",
        "0",
        verdict(extra == 0 && starts == a.agents as u64),
    );
    notes.push(format!(
        "workloads: {starts} starts and {exits} exits logged by {} agents over the whole run",
        a.agents
    ));
    Ok(extra)
}

fn main() -> std::process::ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agents: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    print_header(&a);
    let tmp = match tempfile::Builder::new().prefix("jujud-agents-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("agents: tempdir: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (mut table, mut notes) = (Table(Vec::new()), Vec::new());
    let result = run(&a, tmp.path(), &mut table, &mut notes);
    println!();
    table.print();
    println!("\nnotes:");
    notes.iter().for_each(|n| println!("  {n}"));
    println!("loadavg at end: {}", common::loadavg());
    let failed = match &result {
        Ok(0) => false,
        Ok(extra) => {
            println!("ASSERTION FAILED: {extra} workload starts beyond the first");
            true
        }
        Err(e) => {
            println!("HARNESS FAILURE: {e}");
            true
        }
    };
    if a.keep_logs || failed {
        println!("logs kept in {}", tmp.keep().display());
    }
    if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
