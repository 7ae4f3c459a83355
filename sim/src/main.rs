//! The `sim` command line: one seed, a swarm of seeds, the regression list,
//! or the scale table. It only parses arguments, calls the library and
//! prints; the exit code is non-zero when any invariant broke or any trace
//! was not deterministic.
//!
//! Must never change what a run does based on anything but its flags (the
//! only wall-clock use is picking fresh swarm seeds when none is given,
//! and that start seed is printed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

use sim::faults::PROFILE_NAMES;
use sim::report::replay_command;
use sim::run::{RunConfig, run};
use sim::scale;
use sim::swarm::{self, Outcome};

/// Default safety-phase length of a swarm run, in virtual seconds.
const SWARM_VIRTUAL_SECS: u64 = 120;

/// jemalloc, not glibc's malloc: allocation and freeing were about a
/// quarter of a run with state and writes (docs/SIMULATOR.md). It changes
/// no trace: nothing a run decides depends on where memory lies. Without
/// options it starts no thread (a run never does).
#[cfg(all(feature = "jemalloc", not(feature = "system-alloc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (`MALLOC_CONF`-style; the
/// environment's `_RJEM_MALLOC_CONF` still overrides them). A run is a
/// batch job whose heap grows to its peak and is reused, and whose large
/// rows are bound by cache and TLB misses (every member's tables of every
/// member): its memory is backed by transparent huge pages where the
/// kernel allows them on request (`thp:always`, for this machine's
/// `madvise` mode), and freed pages are never handed back to the kernel
/// (`dirty_decay_ms:-1`: returned pages were faulted in and zeroed again,
/// 14 % of the 10,000 row's join, and handing them back split the huge
/// pages). The 3,162 row: 92.5 to 98.0 s wall before, 82.8 to 84.6 after;
/// peak RSS 2.39 GB before, 2.68 after (docs/SIMULATOR.md).
#[cfg(all(feature = "jemalloc", not(feature = "system-alloc")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&'static u8> =
    Some(&b"dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always,metadata_thp:always\0"[0]);

#[derive(Parser, Debug)]
#[command(name = "sim", about = "Deterministic simulator of the jujud node core")]
struct Cli {
    /// Seed of a single run (every random choice derives from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Managers (they are the seeds every node joins through). In a swarm,
    /// drawn per seed (1..=9) unless given.
    #[arg(long)]
    managers: Option<usize>,
    /// Agents (more members running the same node core, role agent). In a
    /// swarm, drawn per seed (0..=12) unless given.
    #[arg(long)]
    agents: Option<usize>,
    /// Length of the safety phase in virtual seconds; the liveness phase
    /// follows (convergence bound + detection bound).
    #[arg(long)]
    virtual_secs: Option<u64>,
    /// Fault profile: none, calm, default, harsh, or random (drawn from
    /// the seed). Default: `default` for one seed, `random` for a swarm.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PROFILE_NAMES))]
    faults: Option<String>,
    /// Swarm: run this many seeds, starting at --start-seed.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of the swarm; fresh (from the clock, printed) if absent.
    #[arg(long)]
    start_seed: Option<u64>,
    /// Run every seed twice and fail if the trace hashes differ.
    #[arg(long)]
    check_determinism: bool,
    /// Also run the fixed regression list.
    #[arg(long)]
    regression: bool,
    /// The regression list (one run's flags per line).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/regression-seeds.txt"))]
    regression_file: PathBuf,
    /// Worker threads for swarm and regression runs (runs are independent).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the scale table (10 to `--scale-max-members`) and exit.
    #[arg(long)]
    scale_table: bool,
    /// The largest row of `--scale-table` (rows: 10, 32, 100, 316, 1,000,
    /// 3,162, 10,000 members).
    #[arg(long, default_value_t = scale::SCALE_DEFAULT_MAX_MEMBERS)]
    scale_max_members: usize,
    /// The smallest row of `--scale-table` (to run one large row alone).
    #[arg(long, default_value_t = 0)]
    scale_min_members: usize,
    /// Print every run's full summary in batches, not only failures.
    #[arg(long)]
    verbose: bool,
    /// Single run: print every node event and fault as it happens.
    #[arg(long)]
    log: bool,
    /// Override the core's `Timing::lan().max_transmissions` (how many
    /// times each update is piggybacked), to explore dissemination.
    #[arg(long)]
    max_transmissions: Option<u8>,
    /// Override the core's `Timing::lan().suspicion_confirmations`
    /// (Lifeguard's dynamic suspicion; 0 turns it off), to compare.
    #[arg(long)]
    suspicion_confirmations: Option<u32>,
    /// Override the core's `Timing::lan().suspicion_max_mult` (the longest
    /// suspicion, in multiples of `suspect_to_down_ms`; 1 turns it off).
    #[arg(long)]
    suspicion_max_mult: Option<u32>,
    /// Mean client writes per virtual second during the safety phase, on
    /// random live managers (0: state is replicated but never written).
    #[arg(long)]
    writes_per_sec: Option<u32>,
    /// Managers hold no replicated state (membership only).
    #[arg(long)]
    no_state: bool,
    /// Single run: run it again without state (`--no-state`) and print
    /// both speeds side by side (issue 14's simulator figure).
    #[arg(long)]
    beside_membership: bool,
    /// The state configures no provider: the HA keeper and the
    /// provisioner stay idle (membership, state and agents only).
    #[arg(long)]
    no_provider: bool,
    /// Which node the liveness phase's probe crash picks: any, manager or
    /// agent (a manager, to time agents' reconnection after its loss).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["any", "manager", "agent"]))]
    probe_target: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.scale_table {
        let reports = scale::run_table(
            cli.seed,
            cli.scale_min_members..=cli.scale_max_members,
            &|c| with_overrides(&cli, c),
            &|line| println!("{line}"),
        );
        return exit(reports.iter().all(|r| r.passed()));
    }
    if cli.seeds.is_none() && !cli.regression {
        let mut config = single_config(&cli);
        config.log = cli.log;
        let report = run(&config);
        print!("{}", report.summary());
        let mut ok = report.passed();
        if cli.check_determinism {
            let again = run(&config).trace_hash;
            println!(
                "determinism: second run trace hash {again:016x} ({})",
                if again == report.trace_hash { "same" } else { "DIFFERENT" }
            );
            ok &= again == report.trace_hash;
        }
        if cli.beside_membership {
            let membership = run(&RunConfig { state: false, log: false, ..config.clone() });
            println!(
                "speed: {:.0} virtual s per wall s as run; {:.0} membership only (--no-state, same seed and faults; {})",
                report.speed(),
                membership.speed(),
                if membership.passed() { "passed" } else { "FAILED" }
            );
            ok &= membership.passed();
        }
        return exit(ok);
    }
    exit(batch(&cli))
}

fn single_config(cli: &Cli) -> RunConfig {
    let config = RunConfig::new(
        cli.seed,
        cli.managers.unwrap_or(5),
        cli.agents.unwrap_or(0),
        cli.virtual_secs.unwrap_or(SWARM_VIRTUAL_SECS),
        cli.faults.as_deref().unwrap_or("default"),
    );
    with_overrides(cli, config)
}

/// Applies timing and state overrides from the command line.
fn with_overrides(cli: &Cli, mut config: RunConfig) -> RunConfig {
    if let Some(n) = cli.max_transmissions {
        config.timing.max_transmissions = n;
    }
    if let Some(k) = cli.suspicion_confirmations {
        config.timing.suspicion_confirmations = k;
    }
    if let Some(m) = cli.suspicion_max_mult {
        config.timing.suspicion_max_mult = m;
    }
    if let Some(rate) = cli.writes_per_sec {
        config.writes_per_sec = rate;
    }
    config.state &= !cli.no_state;
    config.provider &= !cli.no_provider;
    if let Some(t) = cli.probe_target.as_deref().and_then(sim::run::ProbeTarget::parse) {
        config.probe_target = t;
    }
    config
}

/// The regression list as configs; a malformed line is fatal.
fn regression_configs(cli: &Cli) -> Result<Vec<RunConfig>, String> {
    let lines = swarm::read_regression_lines(&cli.regression_file)
        .map_err(|e| format!("{}: {e}", cli.regression_file.display()))?;
    lines
        .iter()
        .map(|line| {
            let args = std::iter::once("sim").chain(line.split_whitespace());
            let parsed = Cli::try_parse_from(args).map_err(|e| format!("regression line {line:?}: {e}"))?;
            Ok(single_config(&parsed))
        })
        .collect()
}

fn batch(cli: &Cli) -> bool {
    let mut configs = Vec::new();
    if cli.regression {
        match regression_configs(cli) {
            Ok(list) => {
                println!("regression list: {} runs from {}", list.len(), cli.regression_file.display());
                configs.extend(list);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return false;
            }
        }
    }
    if let Some(count) = cli.seeds {
        let start = cli.start_seed.unwrap_or_else(fresh_seed);
        let faults = cli.faults.as_deref().unwrap_or("random");
        let secs = cli.virtual_secs.unwrap_or(SWARM_VIRTUAL_SECS);
        println!("swarm: {count} seeds from --start-seed {start}, faults {faults}, {secs} virtual s each");
        configs.extend((0..count).map(|i| {
            with_overrides(cli, swarm::swarm_config(start.wrapping_add(i), cli.managers, cli.agents, secs, faults))
        }));
    }
    let wall = Instant::now();
    let verbose = cli.verbose;
    let outcomes = swarm::run_batch(&configs, cli.threads, cli.check_determinism, &|o: &Outcome| {
        if verbose || !o.passed() {
            print!("{}", o.report.summary());
        }
        if o.nondeterministic() {
            println!(
                "NONDETERMINISTIC: seed {} gave {:016x} then {:016x}",
                o.report.config.seed,
                o.report.trace_hash,
                o.rerun_hash.unwrap_or(0)
            );
        }
    });
    let s = swarm::summarize(&outcomes);
    let secs = wall.elapsed().as_secs_f64();
    println!(
        "batch: {} runs{} in {:.1} s wall on {} threads, {} events, {:.0} virtual s ({:.0} virtual s per wall s), {} false downs",
        s.runs,
        if cli.check_determinism { " (each twice, hashes compared)" } else { "" },
        secs,
        cli.threads,
        s.events,
        s.virtual_time.as_secs_f64(),
        s.virtual_time.as_secs_f64() / secs.max(1e-9),
        s.false_downs
    );
    for &i in &s.failed {
        let o = &outcomes[i];
        let first = o.report.violations.first().map_or("nondeterministic trace".into(), |v| v.to_string());
        println!("FAILED seed {}: {first}\n  replay: {}", o.report.config.seed, replay_command(&o.report.config));
    }
    println!("{}", if s.failed.is_empty() { "ALL PASSED" } else { "SOME FAILED" });
    s.failed.is_empty()
}

/// A fresh swarm start seed from the wall clock (printed, so replayable).
fn fresh_seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0) % 1_000_000_000
}

fn exit(ok: bool) -> ExitCode {
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
