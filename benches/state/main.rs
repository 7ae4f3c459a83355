//! `cargo bench --bench state`: the replicated-state benchmark, with five
//! real `jujud` managers (release binaries, QUIC) on loopback, or in
//! network namespaces for the partition.
//!
//! Owns the end-to-end measurement of the state targets: write-to-visible
//! latency on every manager at 100 writes/s, sustained acknowledged
//! (fsync'd) writes on one manager, the longest write gap of a looping
//! client whose manager is SIGKILLed, convergence after a 3|2 partition
//! with writes on both sides, acknowledged writes lost to a SIGKILL under
//! load, and memory, disk and restart time at 100,000 entities. Each
//! scenario starts its own cluster; `--only` selects scenarios.
//!
//! Does not: judge by exit code (verdicts are informational; it exits
//! non-zero only when the harness itself fails), or touch anything outside
//! its temporary directory and the namespaces it names after itself.

mod api;
mod cluster;
mod failover;
mod memory;
mod million;
mod net;
mod partition;
mod scale;
mod stats;
mod writes;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cluster::Res;
use stats::Report;
use tokio::runtime::Runtime;

/// Managers per cluster.
pub const MANAGERS: usize = 5;
/// The application whose config the scenarios write.
pub const APP: &str = "bench";
/// The client's tokio worker threads.
const CLIENT_THREADS: usize = 2;
const ALL_SCENARIOS: [&str; 8] =
    ["visibility", "throughput", "failover", "killload", "partition", "scale", "memory", "million"];
/// Scenarios run only when named with `--only` (long, and large).
const OPT_IN_SCENARIOS: [&str; 1] = ["million"];
/// Units per deploy in the scale and memory scenarios (the most one
/// command may create); each brings a machine.
pub const UNITS_PER_DEPLOY: u32 = 1_000;

#[global_allocator]
static ALLOC: testkit::alloc::Counting = testkit::alloc::Counting;

pub struct Args {
    pub only: Vec<String>,
    /// Visibility run length, at 100 writes/s.
    pub vis_secs: u64,
    /// Measured window of the throughput run.
    pub load_secs: u64,
    /// Concurrent writers (throughput and kill-under-load).
    pub concurrency: usize,
    /// Client connections the throughput run spreads its writers over.
    pub conns: usize,
    pub failover_rounds: usize,
    pub kill_rounds: usize,
    pub partition_secs: u64,
    pub partition_writes: u64,
    pub entities: u64,
    pub restart_rounds: usize,
    pub keep_logs: bool,
    /// Seconds the scale scenario's cluster stays up after its figures
    /// (for a profiler or debugger to attach); 0: none.
    pub hold_secs: u64,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            only: ALL_SCENARIOS
                .iter()
                .filter(|s| !OPT_IN_SCENARIOS.contains(s))
                .map(|s| s.to_string())
                .collect(),
            vis_secs: 20,
            load_secs: 10,
            concurrency: 256,
            conns: writes::THROUGHPUT_CONNS,
            failover_rounds: 6,
            kill_rounds: 3,
            partition_secs: 30,
            partition_writes: 10_000,
            entities: 100_000,
            restart_rounds: 3,
            keep_logs: false,
            hold_secs: 0,
        }
    }
}

fn number<T: std::str::FromStr>(name: &str, v: Option<String>) -> Res<T> {
    v.ok_or_else(|| format!("{name} needs a value"))?
        .parse()
        .map_err(|_| format!("{name}: not a number"))
}

fn parse_args() -> Res<Args> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--vis-secs" => a.vis_secs = number(&arg, it.next())?,
            "--load-secs" => a.load_secs = number(&arg, it.next())?,
            "--concurrency" => a.concurrency = number(&arg, it.next())?,
            "--conns" => a.conns = number(&arg, it.next())?,
            "--failover-rounds" => a.failover_rounds = number(&arg, it.next())?,
            "--kill-rounds" => a.kill_rounds = number(&arg, it.next())?,
            "--partition-secs" => a.partition_secs = number(&arg, it.next())?,
            "--partition-writes" => a.partition_writes = number(&arg, it.next())?,
            "--entities" => a.entities = number(&arg, it.next())?,
            "--restart-rounds" => a.restart_rounds = number(&arg, it.next())?,
            "--keep-logs" => a.keep_logs = true,
            "--hold-secs" => a.hold_secs = number(&arg, it.next())?,
            "--only" => {
                a.only = it
                    .next()
                    .ok_or("--only needs a value")?
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect();
                if let Some(bad) = a.only.iter().find(|s| !ALL_SCENARIOS.contains(&s.as_str())) {
                    return Err(format!(
                        "--only: unknown scenario {bad:?} (known: {})",
                        ALL_SCENARIOS.join(",")
                    ));
                }
            }
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench state -- [--only {}] [--vis-secs S] [--load-secs S] [--concurrency N] [--conns N] \
                     [--failover-rounds N] [--kill-rounds N] [--partition-secs S] [--partition-writes N] \
                     [--entities N] [--restart-rounds N] [--keep-logs] [--hold-secs S]",
                    ALL_SCENARIOS.join(",")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if a.vis_secs == 0
        || a.load_secs == 0
        || a.concurrency == 0
        || a.conns == 0
        || a.partition_secs == 0
        || a.partition_writes == 0
    {
        return Err("durations, counts and concurrency must be at least 1".into());
    }
    Ok(a)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn print_header(a: &Args) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let dirty = if sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (tracked files modified)"
    };
    let fs = sh("df", &["--output=fstype,source", &std::env::temp_dir().to_string_lossy()])
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    println!("== jujud replicated-state benchmark");
    println!(
        "machine: nproc {cpus}, kernel {}, {model}; {}",
        kernel.trim(),
        mem.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    println!("temp dir filesystem (data dirs, fsync): {fs}");
    println!(
        "loadavg at start: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!("commit: {}{dirty}", sh("git", &["rev-parse", "--short", "HEAD"]));
    println!("jujud: {}, {MANAGERS} managers per scenario", cluster::jujud_bin().display());
    println!(
        "run: scenarios {}; visibility {} s; load {} s x {} writers; failover rounds {}; kill rounds {}; partition {} s x {} writes/side; {} entities, {} restarts",
        a.only.join(","),
        a.vis_secs,
        a.load_secs,
        a.concurrency,
        a.failover_rounds,
        a.kill_rounds,
        a.partition_secs,
        a.partition_writes,
        a.entities,
        a.restart_rounds
    );
}

fn run_scenario(name: &str, rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let t = Instant::now();
    eprintln!("-- {name}: starting");
    match name {
        "visibility" => writes::visibility(rt, &dir, a, report)?,
        "throughput" => writes::throughput(rt, &dir, a, report)?,
        "failover" => failover::client_failover(rt, &dir, a, report)?,
        "killload" => failover::kill_under_load(rt, &dir, a, report)?,
        "partition" => partition::partition(rt, &dir, a, report)?,
        "scale" => scale::scale(rt, &dir, a, report)?,
        "memory" => memory::memory(a, report)?,
        "million" => million::million(rt, &dir, a, report)?,
        _ => return Err(format!("unknown scenario {name}")),
    }
    eprintln!("-- {name}: done in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("state: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    print_header(&a);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("state: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let tmp = match tempfile::Builder::new().prefix("jujud-state-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("state: tempdir: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (mut report, mut failed) = (Report::default(), false);
    let started = Instant::now();
    for name in ALL_SCENARIOS.iter().filter(|s| a.only.iter().any(|o| o == *s)) {
        if let Err(e) = run_scenario(name, &rt, tmp.path(), &a, &mut report) {
            println!("HARNESS FAILURE in {name}: {e}");
            failed = true;
        }
    }
    report.print();
    println!(
        "loadavg at end: {}; total {:.0} s",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        started.elapsed().as_secs_f64()
    );
    if a.keep_logs || failed {
        println!("logs kept in {}", tmp.keep().display());
    }
    if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
