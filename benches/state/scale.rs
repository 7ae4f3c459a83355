//! The size scenario: 100,000 entities (applications with units, each
//! unit on its own machine) on five loopback managers; resident memory
//! per manager, the state on disk, whether `juju status` still answers,
//! and restart-to-serving time after SIGKILL.
//!
//! Owns the bulk loader and the "serving" probe: a restart is served once
//! the restarted manager acknowledges a write (so its state is recovered
//! and its log writable). Probes start every [`PROBE_EVERY_MS`], each on a
//! fresh connection, so the first one that can succeed is not held back
//! by QUIC's handshake retransmission timer.

use std::path::Path;
use std::time::{Duration, Instant};

use jujud::runtime::wire::{MAX_STATUS_FRAME_BYTES, Request, Response};
use tokio::runtime::Runtime;

use crate::api::{self, Conn};
use crate::cluster::{Cluster, FORM_TIMEOUT_MS, Res, heap_mib, parts_mib, rss_kib, state_bytes};
use crate::stats::{Report, Samples, ms};
use crate::writes::cluster_with_app;
use crate::{APP, Args, MANAGERS, UNITS_PER_DEPLOY};

/// Issue 14: restart (SIGKILL) to serving at 100,000 entities.
pub const RESTART_TARGET_MS: f64 = 1_000.0;
/// Issue 14: resident memory per manager at 100,000 entities.
const RSS_TARGET_MIB: f64 = 120.0;
/// Resident memory is "at rest" once no manager's moved more than this
/// between any two of [`REST_STABLE_SAMPLES`] samples in a row, taken
/// [`REST_SAMPLE_MS`] apart (3 s: with one pair of samples, a manager
/// holding a transient peak for half a second, a status view or a
/// snapshot's copy, was read as at rest)...
const REST_DELTA_MIB: f64 = 1.0;
const REST_SAMPLE_MS: u64 = 500;
const REST_STABLE_SAMPLES: usize = 6;
/// ...or when this cap passes (the row then says so).
const REST_CAP_MS: u64 = 20_000;
/// A new serving probe starts this often.
const PROBE_EVERY_MS: u64 = 20;
/// Cap on a restarted manager serving.
const SERVE_CAP_MS: u64 = 60_000;

fn mib(kib_or_bytes: f64, per_mib: f64) -> f64 {
    kib_or_bytes / per_mib
}

/// Deploys until `entities` exist; the last deploy waits for `others`
/// other managers.
pub async fn load(conn: &Conn, entities: u64, others: u32) -> Res<(u64, Duration)> {
    let per = 1 + 2 * u64::from(UNITS_PER_DEPLOY);
    let deploys = entities.div_ceil(per);
    let t0 = Instant::now();
    for i in 0..deploys {
        let wait = if i + 1 == deploys { others } else { 0 };
        conn.write(&api::deploy(&format!("scale{i}"), UNITS_PER_DEPLOY, wait)).await?;
    }
    Ok((deploys * per, t0.elapsed()))
}

/// From `t0`, the first acknowledged write of manager `addr`.
pub async fn first_served(
    cfg: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    t0: Instant,
    round: usize,
) -> Res<Duration> {
    let req = api::set_config(APP, "restarted", &round.to_string(), 0);
    let mut probes = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(PROBE_EVERY_MS));
    let cap = t0 + Duration::from_millis(SERVE_CAP_MS);
    while Instant::now() < cap {
        tokio::select! {
            _ = tick.tick() => {
                let (cfg, req) = (cfg.clone(), req.clone());
                probes.spawn(async move {
                    let conn = Conn::open(&cfg, addr, None).await?;
                    let r = conn.write(&req).await.map(|_| Instant::now());
                    conn.close();
                    r
                });
            }
            Some(done) = probes.join_next() => {
                if let Ok(Ok(at)) = done {
                    return Ok(at.saturating_duration_since(t0));
                }
            }
        }
    }
    Err(format!("{addr} served nothing within {SERVE_CAP_MS} ms"))
}

/// What a status request answers at this size.
async fn status_probe(conn: &Conn) -> String {
    let t0 = Instant::now();
    match conn.call(&Request::Status).await {
        Ok(Response::Status { status, .. }) => format!(
            "answers in {:.0} ms ({} machines, {} units)",
            ms(t0.elapsed()),
            status.machines.len(),
            status.units.len()
        ),
        Ok(other) => format!("refused: {other:?}"),
        Err(e) => format!("fails: {e} (frame cap {MAX_STATUS_FRAME_BYTES} bytes)"),
    }
}

/// Manager `i`'s resident memory, MiB.
fn rss_mib(c: &Cluster, i: usize) -> Res<f64> {
    Ok(mib(rss_kib(c.pid(i)?).ok_or("no VmRSS")? as f64, 1024.0))
}

fn memory_and_disk(c: &Cluster, report: &mut Report, entities: u64) -> Res<()> {
    let (mut rss, mut log, mut snap) = (Samples::default(), Samples::default(), Samples::default());
    for (i, m) in c.managers.iter().enumerate() {
        rss.push(rss_mib(c, i)?);
        let (l, s) = state_bytes(&m.dir);
        log.push(mib(l as f64, 1048576.0));
        snap.push(mib(s as f64, 1048576.0));
    }
    report.row(
        &format!("RSS per manager right after the load, {entities} entities"),
        "reported",
        rss.summary("MiB"),
        None,
    );
    let disk = if snap.worst() > 0.0 {
        format!("snapshot {} ; log {}", snap.summary("MiB"), log.summary("MiB"))
    } else {
        format!("no snapshot yet; log {}", log.summary("MiB"))
    };
    report.row(&format!("state on disk per manager, {entities} entities"), "reported", disk, None);
    Ok(())
}

pub fn scale(rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let (mut c, cfg, conns) = cluster_with_app(rt, dir)?;
    let (entities, took) = rt.block_on(load(&conns[0], a.entities, MANAGERS as u32 - 1))?;
    report.note(format!("scale: {entities} entities created on m0 in {:.1} s, the last deploy held by all {MANAGERS}", took.as_secs_f64()));
    memory_and_disk(&c, report, entities)?;
    report.note(format!(
        "scale: `juju status` at {entities} entities {}",
        rt.block_on(status_probe(&conns[1]))
    ));
    let (mut served, mut lines) = (Samples::default(), Vec::new());
    for round in 0..a.restart_rounds {
        let victim = 1 + round % (MANAGERS - 1);
        let t0 = c.kill_and_restart(victim)?;
        let d = rt.block_on(first_served(cfg.clone(), c.addrs()[victim], t0, round))?;
        served.push(ms(d));
        c.wait_started(victim)?;
        let start = c
            .last_event(victim, jujud::events::MANAGER_STARTING)
            .map_or(f64::NAN, |e| ms(e.at.saturating_duration_since(t0)));
        let ops = c
            .last_event(victim, jujud::events::STATE_RECOVERED)
            .map(|e| e.text("ops"))
            .unwrap_or_default();
        let rss = rss_kib(c.pid(victim)?).map_or(f64::NAN, |k| mib(k as f64, 1024.0));
        lines.push(format!("m{victim}: {ops} ops recovered, \"manager starting\" at {start:.0} ms, first write acked at {:.0} ms, RSS after {rss:.0} MiB", ms(d)));
        if !c.wait_until(FORM_TIMEOUT_MS, Cluster::all_alive) {
            return Err(format!("m{victim} did not rejoin after its restart"));
        }
    }
    let ok = served.worst() <= RESTART_TARGET_MS;
    report.row(
        &format!("restart (SIGKILL) -> serving, {entities} entities"),
        &format!("<= {RESTART_TARGET_MS:.0} ms"),
        served.summary("ms"),
        Some(ok),
    );
    report.note(format!("restart: {}", lines.join("; ")));
    rss_at_rest(&c, report, entities)?;
    hold(&c, a.hold_secs)
}

/// Keeps the cluster up `secs` seconds, its pids printed, for a profiler.
fn hold(c: &Cluster, secs: u64) -> Res<()> {
    if secs == 0 {
        return Ok(());
    }
    let pids: Res<Vec<String>> =
        (0..c.managers.len()).map(|i| Ok(format!("m{i}={}", c.pid(i)?))).collect();
    println!("   holding the cluster {secs} s: {}", pids?.join(" "));
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}

/// Every manager's resident memory once it stops moving (the load's
/// snapshots written and their copies handed back), read after the
/// restarts, so three of the five have replayed their logs.
fn rss_at_rest(c: &Cluster, report: &mut Report, entities: u64) -> Res<()> {
    let read = || -> Res<Vec<f64>> { (0..c.managers.len()).map(|i| rss_mib(c, i)).collect() };
    let t0 = Instant::now();
    let mut window = std::collections::VecDeque::from([read()?]);
    let settled = loop {
        std::thread::sleep(Duration::from_millis(REST_SAMPLE_MS));
        window.push_back(read()?);
        if window.len() > REST_STABLE_SAMPLES {
            window.pop_front();
        }
        // The widest swing of any manager across the window.
        let moved = (0..c.managers.len())
            .map(|i| {
                let (lo, hi) = window
                    .iter()
                    .map(|w| w[i])
                    .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
                hi - lo
            })
            .fold(0.0, f64::max);
        if window.len() == REST_STABLE_SAMPLES && moved < REST_DELTA_MIB {
            break true;
        }
        if t0.elapsed() >= Duration::from_millis(REST_CAP_MS) {
            break false;
        }
    };
    let last = window.back().cloned().unwrap_or_default();
    let mut rss = Samples::default();
    last.iter().for_each(|v| rss.push(*v));
    let each: Vec<String> = last.iter().enumerate().map(|(i, v)| format!("m{i} {v:.1}")).collect();
    report.note(format!("RSS at rest per manager (MiB): {}", each.join(", ")));
    // What that RSS is made of, as each manager's allocator counts it.
    for i in 0..c.managers.len() {
        let heap = heap_mib(c, i);
        if !heap.is_empty() {
            let parts: Vec<String> = heap.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
            report.note(format!("m{i} heap at rest (MiB, jemalloc): {}", parts.join(", ")));
        }
        let held = parts_mib(c, i);
        if !held.is_empty() {
            let parts: Vec<String> = held.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
            report.note(format!(
                "m{i} bounded parts at rest (MiB, as counted): {}",
                parts.join(", ")
            ));
        }
    }
    let how = if settled { "at rest" } else { "still moving at the cap" };
    report.row(
        &format!("RSS per manager {how}, {entities} entities"),
        &format!("<= {RSS_TARGET_MIB:.0} MiB"),
        format!("{} (after {:.1} s)", rss.summary("MiB"), t0.elapsed().as_secs_f64()),
        Some(settled && rss.worst() <= RSS_TARGET_MIB),
    );
    Ok(())
}
