//! `cargo bench --bench fuzz`: mutational fuzzing of every decoder of input
//! from the network, a disk or a user, on stable Rust, seeded and
//! reproducible. See docs/OPERATIONS.md, "Fuzzing".
//!
//! Owns the run: one child process per target (so an input that asks for
//! more than its cap ends only its own target, and peak memory is counted
//! per target), the corpus replay, the mutation loop, catching panics per
//! input, saving failing inputs, and the summary table. Exits non-zero when
//! a target crashes or allocates above twice its frame limit, unless the
//! target is a listed known failure (then it fails when such a target
//! passes, so the list is kept true).
//!
//! Does not: read the clock or OS randomness for inputs (only the optional
//! `--secs` bound reads the clock), open a socket, or write outside
//! `target/fuzz-failures/`, its tmpfs scratch dir, and (with
//! `--seed-corpus`) `benches/fuzz/corpus/`.

mod alloc;
mod mutate;
mod targets;

use std::io::BufRead;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use targets::{KNOWN_FAILURES, Target};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Default seed (printed; `--seed` replaces it).
const DEFAULT_SEED: u64 = 0x6a75_6a75_6466_757a;
/// Default inputs per target: the full run of issue 11.
const DEFAULT_INPUTS: u64 = 10_000_000;
/// `--ci`: inputs per target and a time bound per target, so that the
/// whole step stays within about two minutes on two cores.
const CI_INPUTS: u64 = 200_000;
const CI_SECS: u64 = 6;
/// Most entries the in-memory pool grows to (the corpus plus inputs that
/// decoded); beyond it, accepted inputs are not kept.
const MAX_POOL_ENTRIES: usize = 512;
/// Most crashing inputs saved per target; later crashes are only counted.
const MAX_SAVED_CRASHES: u64 = 10;
/// Inputs between two looks at the clock (for `--secs`).
const CLOCK_EVERY_INPUTS: u64 = 1024;

struct Args {
    inputs: u64,
    secs: Option<u64>,
    seed: u64,
    jobs: usize,
    targets: Vec<String>,
    child: Option<String>,
    repro: Option<PathBuf>,
    minimize: Option<PathBuf>,
    seed_corpus: bool,
    seeds_only: bool,
    list: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        inputs: DEFAULT_INPUTS,
        secs: None,
        seed: DEFAULT_SEED,
        jobs: 1,
        targets: vec![],
        child: None,
        repro: None,
        minimize: None,
        seed_corpus: false,
        seeds_only: false,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--inputs" => {
                a.inputs = value("--inputs")?.parse().map_err(|e| format!("--inputs: {e}"))?
            }
            "--secs" => {
                a.secs = Some(value("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?)
            }
            "--seed" => a.seed = parse_seed(&value("--seed")?)?,
            "--jobs" => a.jobs = value("--jobs")?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--target" => a.targets.extend(value("--target")?.split(',').map(str::to_string)),
            "--child" => a.child = Some(value("--child")?),
            "--repro" => a.repro = Some(PathBuf::from(value("--repro")?)),
            "--minimize" => a.minimize = Some(PathBuf::from(value("--minimize")?)),
            "--ci" => {
                a.inputs = CI_INPUTS;
                a.secs = Some(CI_SECS);
                a.jobs = 2;
            }
            "--seed-corpus" => a.seed_corpus = true,
            "--seeds-only" => a.seeds_only = true,
            "--list" => a.list = true,
            "--bench" => {} // added by `cargo bench`
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("--seed: {e}"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir(target: &str) -> PathBuf {
    root().join("benches/fuzz/corpus").join(target)
}

fn failures_dir() -> PathBuf {
    root().join("target/fuzz-failures")
}

/// Where a child saves the input that asked for more than its cap.
fn over_cap_file(target: &str, seed: u64) -> PathBuf {
    failures_dir().join(format!("{target}-seed{seed:x}.over-cap.bin"))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz: {e}");
            std::process::exit(2);
        }
    };
    let all = targets::all();
    let chosen: Vec<&Target> = if args.targets.is_empty() {
        all.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in &args.targets {
            match all.iter().find(|t| t.name == name) {
                Some(t) => v.push(t),
                None => {
                    eprintln!("fuzz: no target {name} (see --list)");
                    std::process::exit(2);
                }
            }
        }
        v
    };
    let code = if args.list {
        for t in &all {
            println!("{:<14} {} = {} bytes", t.name, t.limit_name, t.limit_bytes);
        }
        0
    } else if args.seed_corpus {
        seed_corpus(&chosen)
    } else if let Some(name) = &args.child {
        run_child(chosen_one(&all, name), &args)
    } else if let Some(file) = &args.minimize {
        match chosen.as_slice() {
            [t] => minimize(t, file),
            _ => {
                eprintln!("fuzz: --minimize needs exactly one --target");
                2
            }
        }
    } else if let Some(file) = &args.repro {
        match chosen.as_slice() {
            [t] => repro(t, file),
            _ => {
                eprintln!("fuzz: --repro needs exactly one --target");
                2
            }
        }
    } else {
        run_parent(&chosen, &args)
    };
    let _ = std::fs::remove_dir_all(targets::scratch());
    std::process::exit(code);
}

fn chosen_one<'a>(all: &'a [Target], name: &str) -> &'a Target {
    all.iter().find(|t| t.name == name).expect("the parent names a known target")
}

/// Writes each target's seeds (valid encodings of real values) as
/// `seed-N.bin`, leaving other corpus files (found inputs) alone.
fn seed_corpus(chosen: &[&Target]) -> i32 {
    for t in chosen {
        let dir = corpus_dir(t.name);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        let seeds = (t.seeds)();
        for (i, s) in seeds.iter().enumerate() {
            assert!((t.run)(s), "seed {i} of {} does not decode", t.name);
            std::fs::write(dir.join(format!("seed-{i}.bin")), s).expect("corpus write");
        }
        let claims = claims(t);
        for (i, c) in claims.iter().enumerate() {
            std::fs::write(dir.join(format!("claim-{i}.bin")), c).expect("corpus write");
        }
        println!(
            "{}: {} seeds and {} length claims in {}",
            t.name,
            seeds.len(),
            claims.len(),
            dir.display()
        );
    }
    0
}

/// Inputs whose first, second or third field claims 2^60 bytes (the
/// 13-byte join request of issue 11 is the first, framed): after zero, one
/// or two one-byte fields (a variant index, a small number).
fn claims(t: &Target) -> Vec<Vec<u8>> {
    if targets::TEXT_TARGETS.contains(&t.name) {
        return vec![];
    }
    let prefixes: [&[u8]; 4] = [&[], &[1], &[3], &[0, 1]];
    prefixes
        .iter()
        .map(|p| {
            let mut body = p.to_vec();
            mutate::varint(1 << 60, &mut body);
            if !t.framed {
                return body;
            }
            let mut framed = (body.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&body);
            framed
        })
        .collect()
}

/// The corpus of `t`, sorted by file name (so runs are reproducible).
fn load_corpus(t: &Target) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(corpus_dir(t.name)) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => vec![],
    };
    files.sort();
    let mut corpus: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    if corpus.is_empty() {
        corpus = (t.seeds)();
    }
    corpus
}

/// The last panic's message, kept by a quiet hook (one line per crash is
/// printed by the loop instead of a backtrace per input).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("{info}");
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(msg);
        }
    }));
}

/// Decodes one input under the cap; false if it panicked.
fn exec(t: &Target, input: &[u8]) -> Result<bool, ()> {
    alloc::arm(input, t.cap_bytes());
    let r = catch_unwind(AssertUnwindSafe(|| (t.run)(input)));
    alloc::disarm();
    r.map_err(|_| ())
}

fn on_crash(t: &Target, input: &[u8], seed: u64) {
    alloc::count_crash();
    let (_, crashes, _, _) = alloc::stats();
    let msg = LAST_PANIC.lock().ok().and_then(|mut m| m.take()).unwrap_or_default();
    if crashes > MAX_SAVED_CRASHES {
        return;
    }
    let file = failures_dir().join(format!("{}-{:016x}.crash.bin", t.name, fnv(input)));
    let _ = std::fs::create_dir_all(failures_dir());
    let _ = std::fs::write(&file, input);
    eprintln!("fuzz: {} (seed {seed:#x}) panicked: {msg}", t.name);
    eprintln!(
        "fuzz:   saved {}; reproduce: cargo bench --bench fuzz -- --target {} --repro {}",
        file.display(),
        t.name,
        file.display()
    );
}

fn run_child(t: &Target, args: &Args) -> i32 {
    let _ = std::fs::create_dir_all(failures_dir());
    let over_file = over_cap_file(t.name, args.seed);
    alloc::set_fail_path(&over_file.to_string_lossy());
    quiet_panics();
    alloc::start_clock();
    let start = Instant::now();
    let deadline = args.secs.map(|s| start + Duration::from_secs(s));
    let mut pool = if args.seeds_only { (t.seeds)() } else { load_corpus(t) };
    let mut rng = mutate::Rng::new(args.seed ^ fnv(t.name.as_bytes()));
    let mut done: u64 = 0;
    for entry in pool.clone() {
        if exec(t, &entry).is_err() {
            on_crash(t, &entry, args.seed);
        }
        done += 1;
    }
    let shape = t.shape();
    let mut input = Vec::with_capacity(shape.max_input_bytes + 64);
    while done < args.inputs {
        if done.is_multiple_of(CLOCK_EVERY_INPUTS) && deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        let base = rng.below(pool.len());
        let other = rng.below(pool.len());
        mutate::mutate(&mut rng, &pool[base], &pool[other], shape, &mut input);
        match exec(t, &input) {
            Ok(true) if pool.len() < MAX_POOL_ENTRIES && rng.below(8) == 0 => {
                pool.push(input.clone())
            }
            Ok(_) => {}
            Err(()) => on_crash(t, &input, args.seed),
        }
        done += 1;
    }
    let (_, crashes, _, _) = alloc::stats();
    let mut line = String::new();
    let _ = alloc::result_line(
        &mut line,
        if crashes > 0 { "crash" } else { "ok" },
        alloc::elapsed_secs(),
        0,
    );
    print!("{line}");
    0
}

/// Decodes one saved input in this process, with the default panic hook.
fn repro(t: &Target, file: &Path) -> i32 {
    let input = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("fuzz: cannot read {}: {e}", file.display());
            return 2;
        }
    };
    alloc::set_fail_path(
        &failures_dir().join(format!("{}-repro.over-cap.bin", t.name)).to_string_lossy(),
    );
    println!(
        "fuzz: {} on {} ({} bytes), cap {} bytes",
        t.name,
        file.display(),
        input.len(),
        t.cap_bytes()
    );
    match exec(t, &input) {
        Ok(accepted) => {
            let (_, _, largest, peak) = alloc::stats();
            println!(
                "fuzz: no crash ({}); largest allocation {largest} bytes, peak live {peak} bytes",
                if accepted { "accepted" } else { "refused" }
            );
            0
        }
        Err(()) => 1,
    }
}

/// How `--repro` of `input` ends, in a child: 0 no failure, 1 panic,
/// [`alloc::EXIT_OVER_CAP`] over the cap.
fn judge(t: &Target, input: &[u8], scratch: &Path) -> Option<i32> {
    std::fs::write(scratch, input).expect("scratch write");
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new(exe)
        .args(["--target", t.name, "--repro"])
        .arg(scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn fuzz child");
    status.code()
}

/// Shrinks a failing input by deleting ranges while it fails the same way
/// (keeping a true frame length for framed targets), and adds the result
/// to the target's corpus as `min-<hash>.bin`.
fn minimize(t: &Target, file: &Path) -> i32 {
    let Ok(mut best) = std::fs::read(file) else {
        eprintln!("fuzz: cannot read {}", file.display());
        return 2;
    };
    let scratch = targets::scratch().join("minimize.bin");
    let want = judge(t, &best, &scratch);
    if want == Some(0) {
        eprintln!("fuzz: {} does not fail {}", file.display(), t.name);
        return 2;
    }
    let true_frame = |b: &[u8]| {
        t.framed
            && b.len() >= 4
            && u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize == b.len() - 4
    };
    let keep_frame = true_frame(&best);
    let mut chunk = best.len() / 2;
    while chunk >= 1 {
        let mut at = if keep_frame { 4 } else { 0 };
        while at + chunk <= best.len() {
            let mut cand = best.clone();
            cand.drain(at..at + chunk);
            if keep_frame {
                let body = (cand.len() - 4) as u32;
                cand[..4].copy_from_slice(&body.to_be_bytes());
            }
            if judge(t, &cand, &scratch) == want {
                best = cand;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    let dir = corpus_dir(t.name);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let out = dir.join(format!("min-{:016x}.bin", fnv(&best)));
    std::fs::write(&out, &best).expect("corpus write");
    println!(
        "fuzz: {} bytes -> {} bytes, fails the same way (exit {want:?}); saved {}",
        std::fs::read(file).map_or(0, |b| b.len()),
        best.len(),
        out.display()
    );
    0
}

/// What one child reported.
struct Outcome {
    status: String,
    inputs: u64,
    secs: f64,
    crashes: u64,
    largest: usize,
    peak: usize,
    over: usize,
}

fn parse_result(stdout: &[u8]) -> Option<Outcome> {
    let line = stdout.lines().map_while(Result::ok).find(|l| l.starts_with("RESULT "))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(Outcome {
        status: f.get(1)?.to_string(),
        inputs: f.get(2)?.parse().ok()?,
        secs: f.get(3)?.parse().ok()?,
        crashes: f.get(4)?.parse().ok()?,
        largest: f.get(5)?.parse().ok()?,
        peak: f.get(6)?.parse().ok()?,
        over: f.get(7)?.parse().ok()?,
    })
}

fn spawn_child(t: &Target, args: &Args) -> std::process::Child {
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--child",
        t.name,
        "--target",
        t.name,
        "--inputs",
        &args.inputs.to_string(),
        "--seed",
        &args.seed.to_string(),
    ]);
    if let Some(s) = args.secs {
        cmd.args(["--secs", &s.to_string()]);
    }
    if args.seeds_only {
        cmd.arg("--seeds-only");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn fuzz child")
}

fn run_parent(chosen: &[&Target], args: &Args) -> i32 {
    let bound = args.secs.map_or(String::new(), |s| format!(", at most {s} s"));
    println!(
        "fuzz: seed {:#x}, {} inputs per target{bound}, {} job(s)",
        args.seed,
        args.inputs,
        args.jobs.max(1)
    );
    println!(
        "fuzz: reproduce a run with: cargo bench --bench fuzz -- --seed {:#x} --inputs N --target NAME",
        args.seed
    );
    let mut results: Vec<(usize, Option<Outcome>, Option<i32>)> = Vec::new();
    let mut running: Vec<(usize, std::process::Child)> = Vec::new();
    let mut next = 0;
    while next < chosen.len() || !running.is_empty() {
        while next < chosen.len() && running.len() < args.jobs.max(1) {
            running.push((next, spawn_child(chosen[next], args)));
            next += 1;
        }
        let (i, child) = running.remove(0);
        let out = child.wait_with_output().expect("wait for fuzz child");
        results.push((i, parse_result(&out.stdout), out.status.code()));
    }
    results.sort_by_key(|r| r.0);
    report(chosen, &results, args.seed)
}

fn report(chosen: &[&Target], results: &[(usize, Option<Outcome>, Option<i32>)], seed: u64) -> i32 {
    println!(
        "{:<14} {:>12} {:>12} {:>9} {:>8} {:>14} {:>14}  verdict",
        "target", "inputs", "exec/s", "crashes", "cap", "largest alloc", "peak live"
    );
    let mut failed = 0;
    for (i, outcome, code) in results {
        let t = chosen[*i];
        let known = KNOWN_FAILURES.iter().find(|k| k.0 == t.name).map(|k| k.1);
        let (line, bad) = match outcome {
            Some(o) => {
                let rate = if o.secs > 0.0 {
                    format!("{:.0}", o.inputs as f64 / o.secs)
                } else {
                    "-".into()
                };
                let bad = o.status != "ok";
                let verdict = match o.status.as_str() {
                    "over-cap" => format!("FAIL: asked for {} bytes, over the cap", o.over),
                    "crash" => "FAIL: panicked (inputs saved in target/fuzz-failures)".into(),
                    _ => "ok".into(),
                };
                let cap = human(t.cap_bytes());
                (
                    format!(
                        "{:<14} {:>12} {:>12} {:>9} {:>8} {:>14} {:>14}  {verdict}",
                        t.name, o.inputs, rate, o.crashes, cap, o.largest, o.peak
                    ),
                    bad,
                )
            }
            None => (
                format!(
                    "{:<14} FAIL: the child died (exit {code:?}); rerun with the printed seed",
                    t.name
                ),
                true,
            ),
        };
        println!("{line}");
        if outcome.as_ref().is_some_and(|o| o.status == "over-cap") {
            let file = over_cap_file(t.name, seed);
            println!(
                "{:<14} input: {}; reproduce: cargo bench --bench fuzz -- --target {} --repro {}",
                "",
                file.display(),
                t.name,
                file.display()
            );
        }
        match (bad, known) {
            (true, Some(why)) => println!("{:<14} known failure: {why}", ""),
            (false, Some(_)) => {
                println!(
                    "{:<14} UNEXPECTED PASS: remove it from KNOWN_FAILURES in benches/fuzz/targets.rs",
                    ""
                );
                failed += 1;
            }
            (true, None) => failed += 1,
            (false, None) => {}
        }
    }
    if failed > 0 {
        println!("fuzz: {failed} target(s) failed");
        1
    } else {
        0
    }
}

fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}
