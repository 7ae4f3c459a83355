//! Write-path scenarios on loopback: how long a write takes to be visible
//! on every other manager at a steady 100 writes/s, and how many writes one
//! manager acknowledges per second (fsync'd, group commit) under many
//! concurrent requests, with the acknowledgement latency.
//!
//! Owns the open-loop writer and the status pollers. Visibility is timed
//! from just before the write is sent to the first status answer, on the
//! slowest other manager, that shows it (poll resolution: one status round
//! trip plus [`POLL_EVERY_MS`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::api::{self, Conn};
use crate::cluster::{Cluster, Res, cpu_micros, loopback_addrs};
use crate::stats::{Report, Samples, ms};
use crate::{APP, Args, MANAGERS};

/// Steady write rate for the visibility figure.
pub const VIS_WRITES_PER_SEC: u64 = 100;
/// Issue 14's target (an earlier issue's was 50 ms).
pub const VIS_P99_TARGET_MS: f64 = 20.0;
/// Writes cycle over this many keys; a key is rewritten every
/// `VIS_SLOTS / VIS_WRITES_PER_SEC` seconds (640 ms), long after its
/// previous write was visible, so a key's value orders its writes.
const VIS_SLOTS: u64 = 64;
/// Pause between two status requests of one poller.
pub const POLL_EVERY_MS: u64 = 1;
/// How long writes may still take to show after the last one was sent.
const VIS_DRAIN_MS: u64 = 5_000;
/// Issue 14's target (an earlier issue's was 5,000/s).
pub const THROUGHPUT_TARGET_PER_SEC: f64 = 20_000.0;
/// Client connections to the one manager under load by default (`--conns`),
/// each its own QUIC endpoint (a client process), the writers spread over
/// them (each carries at most 64 streams at once: the server's
/// `max_concurrent_bidi_streams`).
pub const THROUGHPUT_CONNS: usize = 64;
/// Machines created before the create-throughput window, so creates run
/// against a state of this many entities (finding E made each create
/// O(keys) before).
const CREATE_PRELOAD_MACHINES: u32 = 20_000;
/// Load before the measured window starts.
const THROUGHPUT_WARMUP_MS: u64 = 1_000;
/// Cap on the others catching up after the load.
const CATCH_UP_CAP_MS: u64 = 30_000;

/// Opens one connection per manager.
pub async fn open_all(cfg: &quinn::ClientConfig, c: &Cluster) -> Res<Vec<Conn>> {
    let mut out = Vec::new();
    for a in c.addrs() {
        out.push(Conn::open(cfg, a, None).await?);
    }
    Ok(out)
}

/// A 5-manager loopback cluster with `APP` deployed on all, and a
/// connection to each manager.
pub fn cluster_with_app(
    rt: &Runtime,
    dir: &Path,
) -> Res<(Cluster, quinn::ClientConfig, Vec<Conn>)> {
    let c = Cluster::start(dir, &loopback_addrs(MANAGERS)?, &[])?;
    let (_, cfg) = api::client_config(&c.client_file())?;
    let conns = rt.block_on(open_all(&cfg, &c))?;
    rt.block_on(conns[0].write(&api::deploy(APP, 1, MANAGERS as u32 - 1)))?;
    Ok((c, cfg, conns))
}

/// Per observer, per write: when a status first showed it.
type Seen = Arc<Mutex<Vec<Vec<Option<Instant>>>>>;

/// Polls `conn` until `stop`, marking writes as seen by observer `o`: a
/// key showing value v means every write to that key up to v is visible.
async fn poll_visibility(
    conn: Conn,
    o: usize,
    n: u64,
    seen: Seen,
    stop: Arc<AtomicBool>,
) -> Res<()> {
    // Per key: the next write to it not yet seen.
    let mut next: Vec<u64> = (0..VIS_SLOTS).collect();
    while !stop.load(Ordering::Relaxed) {
        let st = conn.status().await?;
        let now = Instant::now();
        if let Some(cfg) = api::config_of(&st, APP) {
            let mut seen = seen.lock().map_err(|_| "poisoned")?;
            for (slot, next) in next.iter_mut().enumerate() {
                let Some(v) = cfg
                    .get(&format!("s{slot}"))
                    .and_then(|s| s.0.iter().filter_map(|x| x.parse::<u64>().ok()).max())
                else {
                    continue;
                };
                while *next <= v && *next < n {
                    seen[o][*next as usize] = Some(now);
                    *next += VIS_SLOTS;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(POLL_EVERY_MS)).await;
    }
    Ok(())
}

/// Sends write `i` (key `s{i % slots}` = i) at `start + i / rate`.
async fn open_loop_writer(
    conn: Conn,
    n: u64,
    sent: Arc<Mutex<Vec<Option<Instant>>>>,
    acks: Arc<Mutex<Samples>>,
) -> Res<u64> {
    let period = Duration::from_micros(1_000_000 / VIS_WRITES_PER_SEC);
    let start = tokio::time::Instant::now();
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(start + period * i as u32).await;
        let (conn, sent, acks, failed) = (conn.clone(), sent.clone(), acks.clone(), failed.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            if let Ok(mut s) = sent.lock() {
                s[i as usize] = Some(t0);
            }
            match conn
                .write(&api::set_config(APP, &format!("s{}", i % VIS_SLOTS), &i.to_string(), 0))
                .await
            {
                Ok(()) => acks.lock().map(|mut a| a.push(ms(t0.elapsed()))).unwrap_or(()),
                Err(_) => _ = failed.fetch_add(1, Ordering::Relaxed),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(failed.load(Ordering::Relaxed))
}

pub fn visibility(rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let (_c, _cfg, conns) = cluster_with_app(rt, dir)?;
    let n = a.vis_secs * VIS_WRITES_PER_SEC;
    let seen: Seen = Arc::new(Mutex::new(vec![vec![None; n as usize]; MANAGERS]));
    let sent = Arc::new(Mutex::new(vec![None; n as usize]));
    let acks = Arc::new(Mutex::new(Samples::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (1..MANAGERS)
        .map(|o| rt.spawn(poll_visibility(conns[o].clone(), o, n, seen.clone(), stop.clone())))
        .collect();
    let failed = rt.block_on(open_loop_writer(conns[0].clone(), n, sent.clone(), acks.clone()))?;
    let all_seen =
        |s: &Vec<Vec<Option<Instant>>>| (1..MANAGERS).all(|o| s[o].iter().all(Option::is_some));
    let drain_end = Instant::now() + Duration::from_millis(VIS_DRAIN_MS);
    while Instant::now() < drain_end && !seen.lock().map(|s| all_seen(&s)).unwrap_or(true) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        rt.block_on(p).map_err(|e| e.to_string())??;
    }
    let (seen, sent) = (seen.lock().map_err(|_| "poisoned")?, sent.lock().map_err(|_| "poisoned")?);
    let (mut vis, mut missing) = (Samples::default(), 0);
    for i in 0..n as usize {
        let last = (1..MANAGERS)
            .map(|o| seen[o][i])
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        match (sent[i], last) {
            (Some(t0), Some(t1)) => vis.push(ms(t1.saturating_duration_since(t0))),
            _ => missing += 1,
        }
    }
    let ok = missing == 0 && failed == 0 && vis.p99() <= VIS_P99_TARGET_MS;
    let measured = format!("{}; {missing} never seen", vis.summary("ms"));
    report.row(
        "write -> visible on all 4 others @100/s",
        &format!("p99 <= {VIS_P99_TARGET_MS} ms"),
        measured,
        Some(ok),
    );
    let acks = acks.lock().map_err(|_| "poisoned")?;
    report.note(format!("visibility: {n} writes over {} s to m0, {failed} failed; ack latency {}; pollers every {POLL_EVERY_MS} ms + one status round trip", a.vis_secs, acks.summary("ms")));
    Ok(())
}

/// The measured window, with acknowledged writes counted per second.
#[derive(Clone)]
struct Window {
    from: Instant,
    to: Instant,
    per_sec: Arc<Vec<AtomicU64>>,
}

/// What the workers write.
#[derive(Clone, Copy)]
enum Load {
    /// `config APP w<worker>=<n>`.
    Config,
    /// `add-machine`.
    Create,
}

/// One closed-loop worker: writes back to back; records the latency of
/// writes sent inside [from, to).
async fn throughput_worker(
    conn: Conn,
    w: usize,
    load: Load,
    window: Window,
    lat: Arc<Mutex<Samples>>,
    errors: Arc<AtomicU64>,
) -> (usize, u64) {
    let (from, to) = (window.from, window.to);
    let (mut value, mut last_acked) = (0u64, 0u64);
    let mut local = Samples::default();
    loop {
        let t0 = Instant::now();
        if t0 >= to {
            break;
        }
        value += 1;
        let req = match load {
            Load::Config => api::set_config(APP, &format!("w{w}"), &value.to_string(), 0),
            Load::Create => api::add_machine(0),
        };
        match conn.write(&req).await {
            Ok(()) => {
                last_acked = value;
                if t0 >= from {
                    local.push(ms(t0.elapsed()));
                    let sec = (t0 - from).as_secs() as usize;
                    window.per_sec.get(sec).map(|c| c.fetch_add(1, Ordering::Relaxed));
                }
            }
            Err(_) => _ = errors.fetch_add(1, Ordering::Relaxed),
        }
    }
    if let Ok(mut l) = lat.lock() {
        l.extend(&local);
    }
    (w, last_acked)
}

/// What one load run measured: latencies, acks per second, errors, each
/// worker's last acknowledged value, and the CPU time each watched
/// process used inside the window (microseconds; `None`: unreadable).
type LoadResult = (Samples, Vec<u64>, u64, Vec<(usize, u64)>, Vec<Option<u64>>);

/// The CPU time (microseconds) each of `pids` uses between `from` and
/// `to`, read from /proc at both instants.
async fn cpu_in_window(pids: Vec<i32>, from: Instant, to: Instant) -> Vec<Option<u64>> {
    tokio::time::sleep_until(from.into()).await;
    let start: Vec<_> = pids.iter().map(|&p| cpu_micros(p)).collect();
    tokio::time::sleep_until(to.into()).await;
    pids.iter().zip(start).map(|(&p, s)| Some(cpu_micros(p)?.saturating_sub(s?))).collect()
}

/// Runs `concurrency` closed-loop workers of `load` on `pool` for `secs`,
/// watching the CPU time of `cpu_pids`; see [`LoadResult`].
fn run_load(
    rt: &Runtime,
    pool: &[Conn],
    concurrency: usize,
    load: Load,
    secs: u64,
    cpu_pids: &[i32],
) -> Res<LoadResult> {
    let from = Instant::now() + Duration::from_millis(THROUGHPUT_WARMUP_MS);
    let to = from + Duration::from_secs(secs);
    let cpu = rt.spawn(cpu_in_window(cpu_pids.to_vec(), from, to));
    let window =
        Window { from, to, per_sec: Arc::new((0..secs).map(|_| AtomicU64::new(0)).collect()) };
    let (lat, errors) = (Arc::new(Mutex::new(Samples::default())), Arc::new(AtomicU64::new(0)));
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            rt.spawn(throughput_worker(
                pool[w % pool.len()].clone(),
                w,
                load,
                window.clone(),
                lat.clone(),
                errors.clone(),
            ))
        })
        .collect();
    let mut finals = Vec::new();
    for t in tasks {
        finals.push(rt.block_on(t).map_err(|e| e.to_string())?);
    }
    let lat = lat.lock().map_err(|_| "poisoned")?.clone();
    let per_sec = window.per_sec.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let cpu = rt.block_on(cpu).map_err(|e| e.to_string())?;
    Ok((lat, per_sec, errors.load(Ordering::Relaxed), finals, cpu))
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

pub fn throughput(rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let (c, cfg, conns) = cluster_with_app(rt, dir)?;
    let target = c.addrs()[0];
    let pool: Vec<Conn> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..a.conns.min(a.concurrency) {
            v.push(Conn::open(&cfg, target, None).await?);
        }
        Ok::<_, String>(v)
    })?;
    let mut pids = (0..MANAGERS).map(|i| c.pid(i)).collect::<Res<Vec<i32>>>()?;
    pids.push(std::process::id() as i32);
    let (lat, per_sec, errors, finals, cpu) =
        run_load(rt, &pool, a.concurrency, Load::Config, a.load_secs, &pids)?;
    let stopped = Instant::now();
    let rate = lat.len() as f64 / a.load_secs as f64;
    cpu_per_write(&cpu, lat.len(), report);
    let ok = rate >= THROUGHPUT_TARGET_PER_SEC;
    let measured = format!("{rate:.0} writes/s; ack {}", lat.summary("ms"));
    report.row(
        "sustained acked writes, one manager",
        &format!(">= {THROUGHPUT_TARGET_PER_SEC:.0}/s, p99 reported"),
        measured,
        Some(ok),
    );
    let caught_up = rt.block_on(wait_caught_up(&conns, &finals, stopped))?;
    report.note(format!(
        "throughput: {} concurrent writers (config set) on {} client connections to m0 for {} s (after {THROUGHPUT_WARMUP_MS} ms warm-up); acked per second {}; {errors} errors; every manager held every worker's last acked value {}",
        a.concurrency,
        pool.len(),
        a.load_secs,
        join(&per_sec),
        caught_up.map_or(format!("not within {CATCH_UP_CAP_MS} ms"), |d| format!("{:.0} ms after the load stopped", ms(d))),
    ));
    creates(rt, &conns[0], &pool, a, report)
}

/// Create throughput (`add-machine`) once the state holds
/// [`CREATE_PRELOAD_MACHINES`] machines.
fn creates(rt: &Runtime, first: &Conn, pool: &[Conn], a: &Args, report: &mut Report) -> Res<()> {
    let bulk = jujud::runtime::wire::Request::Write {
        request_id: jujud::runtime::client::new_request_id(),
        cmd: jujud::core::state::model::Command::AddMachine { n: 1_000 },
        wait_replicated: 0,
        timeout_ms: api::WRITE_DEADLINE_MS,
    };
    for _ in 0..CREATE_PRELOAD_MACHINES / 1_000 {
        let mut req = bulk.clone();
        if let jujud::runtime::wire::Request::Write { request_id, .. } = &mut req {
            *request_id = jujud::runtime::client::new_request_id();
        }
        rt.block_on(first.write(&req))?;
    }
    let secs = a.load_secs.div_ceil(2);
    let (lat, per_sec, errors, _, _) = run_load(rt, pool, a.concurrency, Load::Create, secs, &[])?;
    let rate = lat.len() as f64 / secs as f64;
    report.row(
        &format!(
            "acked creates (add-machine), one manager, {}k machines",
            CREATE_PRELOAD_MACHINES / 1_000
        ),
        "reported",
        format!("{rate:.0} creates/s; ack {}", lat.summary("ms")),
        None,
    );
    report.note(format!("creates: {} writers for {secs} s after {CREATE_PRELOAD_MACHINES} machines were made; acked per second {}; {errors} errors", a.concurrency, join(&per_sec)));
    Ok(())
}

/// Prints the CPU time per acknowledged write of the manager written to
/// (m0), of each other manager (replicating), and of this benchmark
/// process (the client): a figure that, unlike writes per second, does
/// not depend on how the two cores were shared.
fn cpu_per_write(cpu: &[Option<u64>], acked: usize, report: &mut Report) {
    let per = |us: Option<u64>| us.map(|u| u as f64 / acked.max(1) as f64);
    let Some(all) = cpu.iter().map(|&c| per(c)).collect::<Option<Vec<f64>>>() else {
        return report.note("throughput: CPU time per write not read (a process was gone)".into());
    };
    let (m0, rest) = all.split_first().expect("m0 and the client are watched");
    let (client, replicas) = rest.split_last().expect("the client is watched");
    let mut sorted = replicas.to_vec();
    sorted.sort_by(f64::total_cmp);
    let total: f64 = all.iter().sum();
    report.row(
        "CPU time per acked write (all processes, 2 cores)",
        "reported",
        format!(
            "{total:.1} us: m0 {m0:.1}, other managers {} each, client {client:.1}",
            sorted.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" / ")
        ),
        None,
    );
}

/// How long after `since` every manager showed every worker's last acked
/// value (or a later one).
async fn wait_caught_up(
    conns: &[Conn],
    finals: &[(usize, u64)],
    since: Instant,
) -> Res<Option<Duration>> {
    let cap = since + Duration::from_millis(CATCH_UP_CAP_MS);
    for conn in conns {
        loop {
            let st = conn.status().await?;
            let cfg = api::config_of(&st, APP).ok_or("app gone")?;
            let held = |w: usize| {
                cfg.get(&format!("w{w}"))
                    .and_then(|s| s.0.iter().filter_map(|x| x.parse::<u64>().ok()).max())
                    .unwrap_or(0)
            };
            if finals.iter().all(|&(w, v)| held(w) >= v) {
                break;
            }
            if Instant::now() > cap {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(Some(since.elapsed()))
}
