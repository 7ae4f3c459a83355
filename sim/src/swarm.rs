//! Swarm testing: many independent seeds, each with randomised fault
//! parameters (and cluster size unless fixed), spread over worker threads;
//! optionally each seed twice to prove the trace is deterministic. Also
//! the fixed list of regression runs.
//!
//! Owns the worker pool and the batch verdict. Must never share anything
//! mutable between two runs (each run owns its cluster, rngs and queue, so
//! a seed's trace does not depend on the thread it ran on).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::report::RunReport;
use crate::run::{RunConfig, run};

/// Stream of the seed's generator used to draw a swarm run's size.
const STREAM_SIZE: u64 = 5;
/// Cluster sizes the swarm draws from when none is given.
pub const SWARM_MANAGERS_MAX: usize = 9;
pub const SWARM_AGENTS_MAX: usize = 12;

/// A run's configuration in the swarm: sizes drawn from the seed unless
/// given, fault parameters drawn from the seed by the `random` profile.
pub fn swarm_config(
    seed: u64,
    managers: Option<usize>,
    agents: Option<usize>,
    virtual_secs: u64,
    faults: &str,
) -> RunConfig {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(STREAM_SIZE);
    let m = managers.unwrap_or_else(|| rng.random_range(1..=SWARM_MANAGERS_MAX));
    let a = agents.unwrap_or_else(|| rng.random_range(0..=SWARM_AGENTS_MAX));
    RunConfig::new(seed, m, a, virtual_secs, faults)
}

/// The outcome of one seed in a batch.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub report: RunReport,
    /// The trace hash of the second run, when determinism was checked.
    pub rerun_hash: Option<u64>,
}

impl Outcome {
    /// Whether the second run's trace hash differs.
    pub fn nondeterministic(&self) -> bool {
        self.rerun_hash.is_some_and(|h| h != self.report.trace_hash)
    }

    pub fn passed(&self) -> bool {
        self.report.passed() && !self.nondeterministic()
    }
}

/// Runs every config on `threads` workers; results come back in input
/// order. `progress` is called (from the worker) after each run.
pub fn run_batch(
    configs: &[RunConfig],
    threads: usize,
    check_determinism: bool,
    progress: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; configs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(config) = configs.get(i) else { break };
                    let report = run(config);
                    let rerun_hash = check_determinism.then(|| run(config).trace_hash);
                    let outcome = Outcome { report, rerun_hash };
                    progress(&outcome);
                    results.lock().expect("a worker panicked")[i] = Some(outcome);
                }
            });
        }
    });
    results.into_inner().expect("a worker panicked").into_iter().map(|o| o.expect("every job ran")).collect()
}

/// Totals of a batch.
#[derive(Debug, Default)]
pub struct BatchSummary {
    pub runs: usize,
    pub failed: Vec<usize>,
    pub events: u64,
    pub virtual_time: Duration,
    pub false_downs: usize,
}

/// Adds up a batch; `failed` holds the indexes of failing outcomes.
pub fn summarize(outcomes: &[Outcome]) -> BatchSummary {
    let mut s = BatchSummary { runs: outcomes.len(), ..BatchSummary::default() };
    for (i, o) in outcomes.iter().enumerate() {
        s.events += o.report.events;
        s.virtual_time += o.report.virtual_time;
        s.false_downs += o.report.violations.iter().filter(|v| v.invariant == "false-down").count();
        if !o.passed() {
            s.failed.push(i);
        }
    }
    s
}

/// Reads the regression list: one run per line, written as command-line
/// flags (`--seed 7 --managers 5 ...`); `#` starts a comment.
pub fn read_regression_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().map(|l| l.split('#').next().unwrap_or("").trim().to_string()).filter(|l| !l.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_sizes_come_from_the_seed_unless_given() {
        let a = swarm_config(42, None, None, 10, "random");
        let b = swarm_config(42, None, None, 10, "random");
        assert_eq!((a.managers, a.agents), (b.managers, b.agents));
        assert!((1..=SWARM_MANAGERS_MAX).contains(&a.managers));
        let fixed = swarm_config(42, Some(3), Some(0), 10, "random");
        assert_eq!((fixed.managers, fixed.agents), (3, 0));
    }
}
