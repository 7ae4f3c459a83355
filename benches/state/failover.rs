//! Crash scenarios on loopback: a client writing in a loop through its
//! client file while the manager it uses is SIGKILLed (the longest gap
//! between two acknowledged writes), and SIGKILL during a heavy write load
//! followed by a restart (acknowledged writes missing, counted).
//!
//! Owns the looping client (`jujud::runtime::client::request`, exactly what
//! `juju` calls, no endpoint given) and the load with its acknowledgement
//! ledger. Failover has two kinds of rounds: the kill at a pseudo-random
//! instant (which on loopback almost always falls between two of the
//! loop's requests), and the kill while a request waits on the victim,
//! arranged with SIGSTOP as [`kill_mid_write`] describes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jujud::runtime::client;
use jujud::runtime::clientfile::ClientFile;
use jujud::runtime::wire::Response;
use tokio::runtime::Runtime;

use crate::api::{self, Conn};
use crate::cluster::{Cluster, FORM_TIMEOUT_MS, Res};
use crate::stats::{Report, Samples, ms};
use crate::writes::cluster_with_app;
use crate::{APP, Args, MANAGERS};

pub const GAP_TARGET_MS: f64 = 300.0;
/// The kill comes this long, plus up to [`KILL_JITTER_MS`], into a round.
const KILL_AFTER_MIN_MS: u64 = 700;
const KILL_JITTER_MS: u64 = 600;
/// Tries at catching a write in flight before a mid-write round gives up.
const MID_WRITE_TRIES: usize = 20;
/// A call still waiting this long after its manager froze is taken as
/// waiting on it (a write takes a few ms); the round is kept only if that
/// call then ended at least [`IN_FLIGHT_PROOF_MS`] after the freeze, which
/// only a call sent to the frozen manager does (the client's watchdog
/// gives up on it after `client::CLIENT_DEAD_AFTER_MS`).
const STUCK_MS: u64 = 30;
const IN_FLIGHT_PROOF_MS: u64 = jujud::runtime::client::CLIENT_DEAD_AFTER_MS * 9 / 10;
/// Cap on the loop starting its next call.
const CALL_START_CAP_MS: u64 = 2_000;
/// The victim freezes up to this long into the call (past its dial).
const ASK_OFFSET_MAX_MS: u64 = 20;
/// A round ends once this many writes were acknowledged after the kill...
const ACKS_AFTER_KILL: usize = 20;
/// ...or this long after it.
const ROUND_CAP_MS: u64 = 30_000;
/// Connections to the manager killed under load.
const LOAD_CONNS: usize = 8;
/// Load before the SIGKILL.
const LOAD_BEFORE_KILL_MS: u64 = 1_500;
/// Most writes in one load round (keeps `juju status` under its frame cap).
const MAX_LOAD_WRITES: u64 = 20_000;
/// Cap on the cluster holding every acknowledged write after the restart.
const CONVERGE_CAP_MS: u64 = 30_000;

/// A small generator for kill instants (xorshift64, seeded by the clock).
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Jitter(seed | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What the looping client has seen so far.
#[derive(Default)]
struct LoopState {
    acks: Vec<(Instant, SocketAddr)>,
    errors: Vec<String>,
    /// When the call now in progress started.
    calling_since: Option<Instant>,
    /// Every finished call: (start, end).
    calls: Vec<(Instant, Instant)>,
}

/// The looping client's state, shared with the scenario thread, which
/// waits on the condition variable (notified at every call start and end).
#[derive(Clone, Default)]
struct Loop {
    state: Arc<(Mutex<LoopState>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Loop {
    fn update(&self, f: impl FnOnce(&mut LoopState)) {
        let (m, cv) = &*self.state;
        if let Ok(mut st) = m.lock() {
            f(&mut st);
        }
        cv.notify_all();
    }

    /// Waits until `pred` holds or `cap_ms` passes; returns whether it holds.
    fn wait(&self, cap_ms: u64, pred: impl Fn(&LoopState) -> bool) -> bool {
        let (m, cv) = &*self.state;
        let Ok(guard) = m.lock() else { return false };
        cv.wait_timeout_while(guard, Duration::from_millis(cap_ms), |st| !pred(st))
            .map(|(st, _)| pred(&st))
            .unwrap_or(false)
    }

    fn read<T>(&self, f: impl FnOnce(&LoopState) -> T) -> Res<T> {
        self.state.0.lock().map(|st| f(&st)).map_err(|_| "poisoned".to_string())
    }
}

/// Writes `loop=<n>` through the client file until `stop`, exactly as a
/// `juju config` loop would; every answer is recorded.
async fn client_loop(file: ClientFile, l: Loop) {
    let mut n = 0u64;
    while !l.stop.load(Ordering::Relaxed) {
        n += 1;
        let req = api::set_config(APP, "loop", &n.to_string(), 0);
        l.update(|st| st.calling_since = Some(Instant::now()));
        let answer = client::request(&file, None, req).await;
        l.update(|st| {
            if let Some(t) = st.calling_since.take() {
                st.calls.push((t, Instant::now()));
            }
            match answer {
                Ok((addr, Response::Applied(_))) => st.acks.push((Instant::now(), addr)),
                Ok((_, other)) => st.errors.push(format!("{other:?}")),
                Err(e) => st.errors.push(e.to_string().replace('\n', " ")),
            }
        });
    }
}

/// Has `juju status` refresh the client file, and checks it lists all.
fn refreshed_client_file(c: &Cluster) -> Res<ClientFile> {
    let out = Command::new(env!("CARGO_BIN_EXE_juju"))
        .arg("--client-config")
        .arg(c.client_file())
        .arg("status")
        .output()
        .map_err(|e| format!("run juju: {e}"))?;
    if !out.status.success() {
        return Err(format!("juju status: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let (file, _) = api::client_config(&c.client_file())?;
    if file.endpoints.len() != MANAGERS {
        return Err(format!("client file lists {:?}, not all {MANAGERS} managers", file.endpoints));
    }
    Ok(file)
}

/// The manager answering the loop's writes, by index.
fn current_manager(c: &Cluster, l: &Loop) -> Res<usize> {
    let using = l.read(|st| st.acks.last().map(|(_, a)| *a))?.ok_or("no write acknowledged yet")?;
    c.addrs()
        .iter()
        .position(|x| *x == using)
        .ok_or_else(|| "answer from an unknown address".to_string())
}

/// Kills the loop's manager at a pseudo-random instant; returns (victim,
/// the instant the manager stopped answering).
fn kill_at_random(c: &mut Cluster, l: &Loop, jitter: &mut Jitter) -> Res<(usize, Instant)> {
    std::thread::sleep(Duration::from_millis(KILL_AFTER_MIN_MS + jitter.below(KILL_JITTER_MS)));
    let victim = current_manager(c, l)?;
    let at = Instant::now();
    c.signal(victim, libc::SIGKILL);
    Ok((victim, at))
}

/// Kills a manager while one of the loop's writes waits on it. With the
/// other managers frozen, the next call can only reach the victim; a few
/// ms into it the victim freezes too and the others thaw. A call still
/// waiting [`STUCK_MS`] later is taken to wait on the victim, so SIGKILL:
/// to the client a frozen and a dead process look the same. Otherwise
/// thaw and try again. Returns the victim, the freeze, and the call's start
/// (the round checks afterwards that the call really waited on the victim).
fn kill_mid_write(
    c: &mut Cluster,
    l: &Loop,
    jitter: &mut Jitter,
) -> Res<Option<(usize, Instant, Instant)>> {
    for _ in 0..MID_WRITE_TRIES {
        std::thread::sleep(Duration::from_millis(
            KILL_AFTER_MIN_MS / 2 + jitter.below(KILL_JITTER_MS),
        ));
        let victim = jitter.below(MANAGERS as u64) as usize;
        let others: Vec<usize> = (0..MANAGERS).filter(|&i| i != victim).collect();
        others.iter().for_each(|&o| c.signal(o, libc::SIGSTOP));
        let fenced = Instant::now();
        let began = |st: &LoopState| st.calling_since.is_some_and(|t| t > fenced);
        let call =
            if l.wait(CALL_START_CAP_MS, began) { l.read(|st| st.calling_since)? } else { None };
        std::thread::sleep(Duration::from_millis(jitter.below(ASK_OFFSET_MAX_MS)));
        c.signal(victim, libc::SIGSTOP);
        let frozen = Instant::now();
        others.iter().for_each(|&o| c.signal(o, libc::SIGCONT));
        // Waiting out the window is the test: that call must not finish.
        let finished = l.wait(STUCK_MS, |st| st.calling_since != call);
        if let (Some(call), false) = (call, finished) {
            c.signal(victim, libc::SIGKILL);
            return Ok(Some((victim, frozen, call)));
        }
        c.signal(victim, libc::SIGCONT);
    }
    Ok(None)
}

/// The gap spanning `kill` (last ack before it to first after) and the
/// round's longest gap between consecutive acks.
fn gaps(acks: &[(Instant, SocketAddr)], kill: Instant) -> (Option<Duration>, Option<Duration>) {
    let before = acks.iter().rev().find(|(t, _)| *t <= kill).map(|x| x.0);
    let after = acks.iter().find(|(t, _)| *t > kill).map(|x| x.0);
    let spanning = before.zip(after).map(|(b, a)| a - b);
    (spanning, acks.windows(2).map(|w| w[1].0.saturating_duration_since(w[0].0)).max())
}

/// One round; `mid_write` chooses how the kill is timed. Returns the gap
/// spanning the kill in ms (None if no write in flight was caught).
fn failover_round(
    c: &mut Cluster,
    rt: &Runtime,
    file: &ClientFile,
    mid_write: bool,
    jitter: &mut Jitter,
    lines: &mut Vec<String>,
) -> Res<Option<f64>> {
    let l = Loop::default();
    let writer = rt.spawn(client_loop(file.clone(), l.clone()));
    let (killed, call) = if mid_write {
        match kill_mid_write(c, &l, jitter)? {
            Some((v, at, call)) => (Some((v, at)), Some(call)),
            None => (None, None),
        }
    } else {
        (Some(kill_at_random(c, &l, jitter)?), None)
    };
    if let Some((_, at)) = killed {
        l.wait(ROUND_CAP_MS, |st| {
            st.acks.iter().filter(|(t, _)| *t > at).count() >= ACKS_AFTER_KILL
        });
    }
    l.stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).map_err(|e| e.to_string())?;
    let Some((victim, at)) = killed else {
        lines.push(format!("no write caught in flight in {MID_WRITE_TRIES} tries"));
        return Ok(None);
    };
    let (acks, errors, calls) =
        l.read(|st| (st.acks.clone(), st.errors.clone(), st.calls.clone()))?;
    let waited = call
        .and_then(|t0| calls.iter().find(|(s, _)| *s == t0))
        .map(|(_, end)| end.saturating_duration_since(at));
    if let Some(w) = waited.filter(|w| *w < Duration::from_millis(IN_FLIGHT_PROOF_MS)) {
        lines.push(format!("m{victim} killed, but its call ended {:.0} ms after the freeze: it was not waiting on m{victim}; not counted", ms(w)));
        eprintln!("   {}", lines.last().map_or("", String::as_str));
        c.spawn(victim, false)?;
        if !c.wait_until(FORM_TIMEOUT_MS, Cluster::all_alive) {
            return Err(format!("m{victim} did not come back (after an uncounted round)"));
        }
        return Ok(None);
    }
    let (spanning, longest) = gaps(&acks, at);
    let spanning_ms = spanning.map_or(f64::INFINITY, ms);
    let same = acks.windows(2).filter(|w| w[0].1 == w[1].1).count() as f64
        / acks.len().saturating_sub(1).max(1) as f64;
    lines.push(format!(
        "{} m{victim}: gap {spanning_ms:.0} ms{} (round's longest {:.0} ms), {} acks ({:.0}% by the previous write's manager), {} failed{}",
        if mid_write { "mid-write" } else { "random" },
        waited.map_or(String::new(), |w| format!(", the call in flight answered {:.0} ms after the freeze", ms(w))),
        longest.map_or(f64::NAN, ms),
        acks.len(),
        same * 100.0,
        errors.len(),
        errors.first().map_or(String::new(), |e| format!(" (first: {e})")),
    ));
    eprintln!("   {}", lines.last().map_or("", String::as_str));
    c.spawn(victim, false)?;
    if !c.wait_until(FORM_TIMEOUT_MS, Cluster::all_alive) {
        return Err(format!("m{victim} did not come back"));
    }
    Ok(Some(spanning_ms))
}

pub fn client_failover(rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let (mut c, _cfg, _conns) = cluster_with_app(rt, dir)?;
    let file = refreshed_client_file(&c)?;
    let mut jitter = Jitter::new();
    for mid_write in [false, true] {
        let (mut gaps, mut lines) = (Samples::default(), Vec::new());
        // Rounds whose kill did not catch a write in flight are not counted; up to twice as many tries.
        for _ in 0..2 * a.failover_rounds {
            if gaps.len() >= a.failover_rounds {
                break;
            }
            if let Some(g) = failover_round(&mut c, rt, &file, mid_write, &mut jitter, &mut lines)?
            {
                gaps.push(g);
            }
        }
        let how = if mid_write { "with a write in flight to it" } else { "at a random instant" };
        let ok = gaps.len() > 0 && gaps.worst() <= GAP_TARGET_MS;
        report.row(
            &format!("client loop, its manager SIGKILLed {how}: gap"),
            &format!("<= {GAP_TARGET_MS:.0} ms"),
            gaps.summary("ms"),
            Some(ok),
        );
        report.note(format!("failover ({how}): {}", lines.join("; ")));
    }
    report.note(format!("failover: the loop calls client::request with the client file ({MANAGERS} endpoints, no --endpoint); a gap runs from the last ack before the kill to the first after"));
    Ok(())
}

/// Workers writing distinct keys `r<round>-<k>` to one manager; each
/// acknowledged key is recorded; a worker stops at its first failure.
fn start_load(
    rt: &Runtime,
    pool: &[Conn],
    a: &Args,
    round: usize,
    acked: Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let counter = Arc::new(AtomicU64::new(0));
    (0..a.concurrency)
        .map(|w| {
            let (conn, counter, acked) =
                (pool[w % pool.len()].clone(), counter.clone(), acked.clone());
            rt.spawn(async move {
                loop {
                    let k = counter.fetch_add(1, Ordering::Relaxed);
                    if k >= MAX_LOAD_WRITES {
                        return;
                    }
                    let key = format!("r{round}-{k}");
                    if conn.write(&api::set_config(APP, &key, "1", 0)).await.is_err() {
                        return;
                    }
                    acked.lock().map(|mut v| v.push(key)).unwrap_or(());
                }
            })
        })
        .collect()
}

/// How many of `keys` the status of `conn` lacks.
async fn missing(conn: &Conn, keys: &[String]) -> Res<usize> {
    let st = conn.status().await?;
    let cfg = api::config_of(&st, APP).ok_or("app gone")?;
    Ok(keys.iter().filter(|k| !cfg.contains_key(*k)).count())
}

/// Polls every manager until it holds all `keys`; the most missing at the
/// end on any manager.
async fn converge(cfg: &quinn::ClientConfig, addrs: &[SocketAddr], keys: &[String]) -> Res<usize> {
    let cap = Instant::now() + Duration::from_millis(CONVERGE_CAP_MS);
    let mut worst = 0;
    for &addr in addrs {
        let conn = Conn::open(cfg, addr, None).await?;
        let mut left = missing(&conn, keys).await?;
        while left > 0 && Instant::now() < cap {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = missing(&conn, keys).await?;
        }
        worst = worst.max(left);
        conn.close();
    }
    Ok(worst)
}

pub fn kill_under_load(rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let (mut c, cfg, _conns) = cluster_with_app(rt, dir)?;
    let (mut acked_total, mut lost_local, mut lost_any, mut lines) = (0, 0, 0, Vec::new());
    for round in 0..a.kill_rounds {
        let victim = 1 + round % (MANAGERS - 1);
        let addr = c.addrs()[victim];
        let pool = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..LOAD_CONNS {
                v.push(Conn::open(&cfg, addr, None).await?);
            }
            Ok::<_, String>(v)
        })?;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let load = start_load(rt, &pool, a, round, acked.clone());
        std::thread::sleep(Duration::from_millis(LOAD_BEFORE_KILL_MS));
        c.signal(victim, libc::SIGKILL);
        load.iter().for_each(|t| t.abort());
        let keys: Vec<String> = acked.lock().map_err(|_| "poisoned")?.clone();
        // Only the victim's own disk can answer while the others are frozen.
        let others: Vec<usize> = (0..MANAGERS).filter(|&i| i != victim).collect();
        others.iter().for_each(|&o| c.signal(o, libc::SIGSTOP));
        c.spawn(victim, false)?;
        c.wait_started(victim)?;
        let local = rt.block_on(async {
            let conn = Conn::open(&cfg, addr, None).await?;
            let m = missing(&conn, &keys).await;
            conn.close();
            m
        })?;
        others.iter().for_each(|&o| c.signal(o, libc::SIGCONT));
        let recovered = c
            .last_event(victim, jujud::events::STATE_RECOVERED)
            .map(|e| e.text("ops"))
            .unwrap_or_default();
        let any = rt.block_on(converge(&cfg, &c.addrs(), &keys))?;
        if !c.wait_until(FORM_TIMEOUT_MS, Cluster::all_alive) {
            return Err(format!("cluster not all alive after round {round}"));
        }
        (acked_total, lost_local, lost_any) =
            (acked_total + keys.len(), lost_local + local, lost_any + any);
        lines.push(format!("r{round}: m{victim} killed after {} acked writes, recovered {recovered} ops from its log; missing there {local}, anywhere after sync {any}", keys.len()));
    }
    let measured = format!(
        "{lost_local} missing on the restarted manager (own log only), {lost_any} anywhere, of {acked_total} acked"
    );
    report.row(
        "SIGKILL under write load, restart: acked lost",
        "0",
        measured,
        Some(lost_local == 0 && lost_any == 0 && acked_total > 0),
    );
    report.note(format!("kill under load: {} writers on {LOAD_CONNS} connections, SIGKILL after {LOAD_BEFORE_KILL_MS} ms; {}", a.concurrency, lines.join("; ")));
    Ok(())
}
