//! `cargo bench --bench attack`: the network attacker's benchmark (issue
//! 11), with three real `jujud peer` managers on loopback.
//!
//! Owns two measurements against one manager (the third): during a flood
//! of half-open QUIC handshakes (captured client first flights, replayed
//! from fresh UDP sockets and never answered) at `--rate` a second,
//! `juju status` through that manager alone, `--attempts` times (latency
//! median and worst, how many within 2 s), and the manager's RSS idle and
//! peak; then `--agents` connections with agent certificates (minted from
//! the cluster's CA) each announcing `--streams` maximum-size state
//! streams, the manager's RSS idle and peak, and how many of those
//! connections the manager closed.
//!
//! Does not: judge by exit code (it exits non-zero only when the harness
//! fails), or send anything beyond loopback; every loop is bounded in count
//! and time.

use testkit::attack;
use testkit::bench as common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

/// A `juju status` must answer within this to count (the target).
const STATUS_TARGET_MS: u128 = 2_000;
/// RSS may grow this much over idle (the target).
const RSS_MARGIN_MIB: f64 = 64.0;
/// Longest wait for a manager event (start, member up).
const EVENT_CAP_MS: u64 = 30_000;
/// Quiet time before the idle RSS is read.
const IDLE_SETTLE_MS: u64 = 3_000;
/// RSS sampling interval while an attack runs.
const RSS_SAMPLE_MS: u64 = 50;
/// The flood's caps, whatever happens to the attempts.
const FLOOD_MAX_SECS: u64 = 120;
/// How long the agents' connections are watched for the manager's close.
const CLOSE_CAP_MS: u64 = 10_000;
/// Bytes of each announced state message actually sent.
const STATE_BYTES_SENT: usize = 256 << 10;
/// Flood seconds before the first attempt (so that whatever the flood
/// holds, it holds: handshake slots live 2 s).
const FLOOD_LEAD_SECS: u64 = 3;
/// Pause between two `juju status` attempts (spreads them over the flood).
const ATTEMPT_GAP_MS: u64 = 250;
/// An agent connection refused (per-source handshake cap) is tried again,
/// this many times, this far apart, as an attacker would.
const AGENT_DIAL_TRIES: usize = 50;
const AGENT_DIAL_GAP_MS: u64 = 100;

struct Args {
    rate: u64,
    attempts: usize,
    agents: usize,
    streams: usize,
}

fn parse_args() -> Res<Args> {
    let mut a = Args { rate: 1_000, attempts: 20, agents: 100, streams: 4 };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, n: &str| -> Res<u64> {
        v.ok_or(format!("{n} needs a value"))?.parse().map_err(|_| format!("{n}: not a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {}
            "--rate" => a.rate = num(it.next(), &arg)?,
            "--attempts" => a.attempts = num(it.next(), &arg)? as usize,
            "--agents" => a.agents = num(it.next(), &arg)? as usize,
            "--streams" => a.streams = num(it.next(), &arg)? as usize,
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench attack -- [--rate N/s] [--attempts N] [--agents N] [--streams N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if a.rate == 0 || a.attempts == 0 || a.rate > 20_000 || a.agents > 1_000 || a.streams > 16 {
        return Err("--rate 1..=20000, --attempts >= 1, --agents <= 1000, --streams <= 16".into());
    }
    Ok(a)
}

struct Manager {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(
    i: usize,
    root: &Path,
    addr: SocketAddr,
    metrics: SocketAddr,
    join: Option<(SocketAddr, String)>,
    tx: mpsc::Sender<common::Ev>,
) -> Res<Manager> {
    let dir = root.join(format!("m{i}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jujud"));
    cmd.args([
        "peer",
        "--data-dir",
        dir.to_str().unwrap_or_default(),
        "--listen",
        &addr.to_string(),
        "--log-format",
        "json",
    ]);
    cmd.args(["--metrics-listen", &metrics.to_string()]).env("RUST_LOG", "info");
    if let Some((seed, token)) = join {
        cmd.args(["--join", &seed.to_string()]).env("JUJUD_TOKEN", token);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn jujud: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let tee = std::fs::File::create(root.join(format!("m{i}.log"))).map_err(|e| e.to_string())?;
    std::thread::spawn(move || common::read_json_log(stderr, i, tx, tee));
    Ok(Manager { child, dir, addr, metrics })
}

/// Waits until `pred` holds over the events so far.
fn wait(
    rx: &mpsc::Receiver<common::Ev>,
    seen: &mut Vec<common::Ev>,
    what: &str,
    pred: impl Fn(&[common::Ev]) -> bool,
) -> Res<()> {
    let deadline = Instant::now() + Duration::from_millis(EVENT_CAP_MS);
    while !pred(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => seen.push(ev),
            Err(_) => return Err(format!("timed out waiting for {what}")),
        }
    }
    Ok(())
}

fn cluster(root: &Path) -> Res<(Vec<Manager>, mpsc::Receiver<common::Ev>)> {
    let addrs = common::loopback_addrs(6)?;
    let (tx, rx) = mpsc::channel();
    let mut seen = Vec::new();
    let m0 = start(0, root, addrs[0], addrs[3], None, tx.clone())?;
    wait(&rx, &mut seen, "m0 starting", |s| {
        s.iter().any(|e| e.who == 0 && e.msg == jujud::events::MANAGER_STARTING)
    })?;
    let token = std::fs::read_to_string(m0.dir.join("join-token"))
        .map_err(|e| e.to_string())?
        .trim()
        .to_string();
    let mut ms = vec![m0];
    for i in 1..3 {
        ms.push(start(
            i,
            root,
            addrs[i],
            addrs[3 + i],
            Some((addrs[0], token.clone())),
            tx.clone(),
        )?);
    }
    let ups = |s: &[common::Ev], who: usize| {
        s.iter().filter(|e| e.who == who && e.msg == jujud::events::MEMBER_UP).count()
    };
    wait(&rx, &mut seen, "every manager to see the others", |s| (0..3).all(|w| ups(s, w) >= 2))?;
    Ok((ms, rx))
}

/// Samples a process's RSS until `stop`, keeping the peak (KiB).
fn rss_sampler(
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(k) = attack::rss_kib(pid) {
                peak.fetch_max(k, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(RSS_SAMPLE_MS)); // sampling period
        }
    })
}

fn metric(addr: SocketAddr, prefix: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else { return "?".into() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("0")
        .to_string()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn flood_scenario(a: &Args, ms: &[Manager], rt: &tokio::runtime::Runtime) -> Res<()> {
    let target = &ms[2];
    let pid = target.child.id();
    std::thread::sleep(Duration::from_millis(IDLE_SETTLE_MS)); // settle before an idle reading
    let idle = attack::rss_kib(pid).ok_or("no RSS")?;
    let ca = attack::cluster_ca(&target.dir);
    let want = (a.rate * 3) as usize;
    let t = Instant::now();
    let flights = rt.block_on(attack::first_flights(want, attack::join_config(&ca)));
    println!(
        "captured {} distinct first flights (Initial, {} bytes each) in {:.1} s",
        flights.len(),
        flights.first().map_or(0, |f| f.len()),
        t.elapsed().as_secs_f64()
    );
    if flights.is_empty() {
        return Err("no first flight captured".into());
    }
    // A client file naming only the flooded manager.
    let mut file = jujud::runtime::clientfile::ClientFile::load(&ms[0].dir.join("client.yaml"))
        .map_err(|e| e.to_string())?;
    file.endpoints = vec![target.addr];
    let client = target.dir.join("flooded-client.yaml");
    std::fs::write(&client, file.to_yaml()).map_err(|e| e.to_string())?;

    let (stop, sent, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicU64::new(idle)),
    );
    let sampler = rss_sampler(pid, stop.clone(), peak.clone());
    let flooder = {
        let (stop, sent, addr, rate) = (stop.clone(), sent.clone(), target.addr, a.rate);
        std::thread::spawn(move || {
            attack::flood(
                addr,
                &flights,
                rate,
                FLOOD_MAX_SECS,
                (rate * FLOOD_MAX_SECS) as usize,
                &stop,
                &sent,
            )
        })
    };
    while sent.load(Ordering::Relaxed) < (a.rate * FLOOD_LEAD_SECS) as usize {
        std::thread::sleep(Duration::from_millis(10)); // until the lead of the flood went out
    }
    let mut lat = Vec::new();
    let mut ok = 0;
    for i in 0..a.attempts {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_juju"))
            .arg("--client-config")
            .arg(&client)
            .args(["status", "--endpoint", &target.addr.to_string()])
            .output()
            .map_err(|e| format!("juju: {e}"))?;
        let ms_taken = t.elapsed().as_secs_f64() * 1000.0;
        let good = out.status.success() && t.elapsed().as_millis() <= STATUS_TARGET_MS;
        ok += usize::from(good);
        lat.push(ms_taken);
        if !out.status.success() {
            println!(
                "  attempt {i}: failed after {ms_taken:.0} ms: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(ATTEMPT_GAP_MS)); // spacing of attempts
    }
    stop.store(true, Ordering::Relaxed);
    let report = flooder.join().map_err(|_| "flooder panicked")?;
    let _ = sampler.join();
    let alive = attack::rss_kib(pid).is_some();
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "flood: {} first flights in {:.1} s ({:.0}/s) at {}",
        report.sent,
        report.secs,
        report.sent as f64 / report.secs,
        target.addr
    );
    println!(
        "juju status through the flooded manager: {ok} of {} within {STATUS_TARGET_MS} ms; latency median {:.0} ms, worst {:.0} ms (n={})",
        a.attempts,
        percentile(&sorted, 0.5),
        sorted.last().copied().unwrap_or(f64::NAN),
        sorted.len()
    );
    println!(
        "flooded manager RSS: idle {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB (target <= {RSS_MARGIN_MIB}); alive after: {alive}",
        mib(idle),
        mib(peak),
        mib(peak) - mib(idle)
    );
    for reason in [
        "handshake_retry",
        "handshake_limit",
        "handshake_per_source",
        "handshake_timeout",
        "handshake_failed",
    ] {
        println!(
            "  drops {reason}: {}",
            metric(target.metrics, &format!("jujud_datagram_drops_total{{reason=\"{reason}\"}}"))
        );
    }
    Ok(())
}

fn agents_scenario(a: &Args, ms: &[Manager], rt: &tokio::runtime::Runtime) -> Res<()> {
    let target = &ms[2];
    let pid = target.child.id();
    std::thread::sleep(Duration::from_millis(IDLE_SETTLE_MS)); // settle before an idle reading
    let idle = attack::rss_kib(pid).ok_or("no RSS")?;
    let ca = attack::cluster_ca(&target.dir);
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(idle)));
    let sampler = rss_sampler(pid, stop.clone(), peak.clone());
    let (agents, streams, addr) = (a.agents, a.streams, target.addr);
    let (connected, closed) = rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..agents {
            let ca = ca.clone();
            tasks.spawn(async move {
                let mut conn = None;
                for _ in 0..AGENT_DIAL_TRIES {
                    match attack::agent_conn(
                        &ca,
                        addr,
                        0x0a11_ce00_0000_1000 + n as u64,
                        &format!("m-bench-{n}"),
                    )
                    .await
                    {
                        Ok(c) => {
                            conn = Some(c);
                            break;
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(AGENT_DIAL_GAP_MS)).await
                        } // an attacker's retry pace
                    }
                }
                let Some(conn) = conn else { return (false, false) };
                let mut held = Vec::new();
                for _ in 0..streams {
                    match attack::announce_state(&conn, (256 << 20) - 1, STATE_BYTES_SENT).await {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                let closed = matches!(
                    tokio::time::timeout(Duration::from_millis(CLOSE_CAP_MS), conn.closed()).await,
                    Ok(quinn::ConnectionError::ApplicationClosed(_))
                );
                drop(held);
                (true, closed)
            });
        }
        let (mut connected, mut closed) = (0, 0);
        while let Some(Ok((c, k))) = tasks.join_next().await {
            connected += usize::from(c);
            closed += usize::from(k);
        }
        (connected, closed)
    });
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "agents: {connected} of {} connected with agent certificates, {} state streams each announcing 256 MiB ({} KiB sent each)",
        a.agents,
        a.streams,
        STATE_BYTES_SENT >> 10
    );
    println!("connections the manager closed within {CLOSE_CAP_MS} ms: {closed} of {connected}");
    println!(
        "manager RSS: idle {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB (target <= {RSS_MARGIN_MIB}); alive after: {}",
        mib(idle),
        mib(peak),
        mib(peak) - mib(idle),
        attack::rss_kib(pid).is_some()
    );
    println!(
        "  drops unauthorised_stream: {}",
        metric(target.metrics, "jujud_datagram_drops_total{reason=\"unauthorised_stream\"}")
    );
    Ok(())
}

fn run() -> Res<()> {
    let a = parse_args()?;
    println!("== jujud attack benchmark");
    println!("machine: {}", common::machine());
    println!("loadavg at start: {}", common::loadavg());
    let tmp = std::env::temp_dir().join(format!("jujud-attack-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (ms, _events) = cluster(&tmp)?;
    println!("3 managers up; attacking {}", ms[2].addr);
    flood_scenario(&a, &ms, &rt)?;
    println!("loadavg after the flood: {}", common::loadavg());
    agents_scenario(&a, &ms, &rt)?;
    println!("loadavg at end: {}", common::loadavg());
    drop(ms);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("attack bench: {e}");
        std::process::exit(1);
    }
}
