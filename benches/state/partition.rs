//! The partition scenario (root only): five managers in network
//! namespaces, cut 3 | 2 for a while with writes on both sides, then healed;
//! measured from the heal until every manager holds every acknowledged
//! write of both sides.
//!
//! Owns the two-sided paced writer and the post-heal pollers. The client
//! reaches each manager through a socket opened inside that manager's
//! namespace.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::api::{self, Conn};
use crate::cluster::{Cluster, FORM_TIMEOUT_MS, Res};
use crate::net::{Net, is_root};
use crate::stats::{Report, ms};
use crate::{APP, Args, MANAGERS};

pub const HEAL_TARGET_MS: f64 = 2_000.0;
/// Writes are spread over this share of the partition, so all are sent
/// (and almost all acknowledged) before the heal.
const WRITE_SHARE_OF_PARTITION: f64 = 0.9;
/// Pause between two status requests of one post-heal poller.
const HEAL_POLL_MS: u64 = 20;
/// Cap on convergence after the heal.
const HEAL_CAP_MS: u64 = 60_000;
const LEFT: [usize; 3] = [0, 1, 2];
const RIGHT: [usize; 2] = [3, 4];

/// Sends `n` writes (keys `<prefix><i>`) round-robin over `conns`, paced
/// evenly over `span`; returns the acknowledged keys and the failures.
async fn paced_writes(
    conns: Vec<Conn>,
    prefix: &'static str,
    n: u64,
    span: Duration,
) -> (Vec<String>, u64) {
    let (acked, failed) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(start + span.mul_f64(i as f64 / n as f64)).await;
        let (conn, acked, failed) =
            (conns[i as usize % conns.len()].clone(), acked.clone(), failed.clone());
        tasks.spawn(async move {
            let key = format!("{prefix}{i}");
            match conn.write(&api::set_config(APP, &key, "1", 0)).await {
                Ok(()) => acked.lock().map(|mut v| v.push(key)).unwrap_or(()),
                Err(_) => _ = failed.fetch_add(1, Ordering::Relaxed),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let keys = acked.lock().map(|v| v.clone()).unwrap_or_default();
    (keys, failed.load(Ordering::Relaxed))
}

/// Polls `conn` until it holds every key; the time since `since`.
async fn holds_all(conn: Conn, keys: Arc<Vec<String>>, since: Instant) -> Res<Duration> {
    let cap = since + Duration::from_millis(HEAL_CAP_MS);
    loop {
        let st = conn.status().await?;
        let at = Instant::now();
        if let Some(cfg) = api::config_of(&st, APP)
            && keys.iter().all(|k| cfg.contains_key(k))
        {
            return Ok(at.saturating_duration_since(since));
        }
        if at > cap {
            return Err(format!(
                "{} still lacks writes {HEAL_CAP_MS} ms after the heal",
                conn.addr
            ));
        }
        tokio::time::sleep(Duration::from_millis(HEAL_POLL_MS)).await;
    }
}

fn sides_apart(c: &Cluster) -> bool {
    LEFT.iter().all(|&l| RIGHT.iter().all(|&r| c.sees_down(l, r) && c.sees_down(r, l)))
}

pub fn partition(rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let figure = format!(
        "{}s partition 3|2, {} writes/side: heal -> all everywhere",
        a.partition_secs, a.partition_writes
    );
    if !is_root() {
        report.row(
            &figure,
            &format!("<= {HEAL_TARGET_MS:.0} ms"),
            "skipped: needs root (network namespaces)".into(),
            None,
        );
        return Ok(());
    }
    let net = Net::build(MANAGERS)?;
    let addrs: Vec<_> = (0..MANAGERS).map(|i| net.addr(i)).collect();
    let netns: Vec<_> = (0..MANAGERS).map(|i| Some(net.ns(i))).collect();
    let mut c = Cluster::start(dir, &addrs, &netns)?;
    let (_, cfg) = api::client_config(&c.client_file())?;
    let conns: Vec<Conn> = rt.block_on(async {
        let mut v = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            v.push(Conn::open(&cfg, *addr, Some(api::socket_in(&net.ns(i))?)).await?);
        }
        Ok::<_, String>(v)
    })?;
    rt.block_on(conns[0].write(&api::deploy(APP, 1, MANAGERS as u32 - 1)))?;

    net.attach(&RIGHT, "br1")?;
    let cut = Instant::now();
    if !c.wait_until(FORM_TIMEOUT_MS, sides_apart) {
        return Err("the two sides never declared each other down".into());
    }
    let apart = cut.elapsed();
    let span = Duration::from_secs(a.partition_secs)
        .mul_f64(WRITE_SHARE_OF_PARTITION)
        .saturating_sub(apart);
    let side = |ids: &[usize]| ids.iter().map(|&i| conns[i].clone()).collect::<Vec<_>>();
    let left = rt.spawn(paced_writes(side(&LEFT), "l", a.partition_writes, span));
    let right = rt.spawn(paced_writes(side(&RIGHT), "r", a.partition_writes, span));
    let (lk, lf) = rt.block_on(left).map_err(|e| e.to_string())?;
    let (rk, rf) = rt.block_on(right).map_err(|e| e.to_string())?;
    std::thread::sleep(
        (cut + Duration::from_secs(a.partition_secs)).saturating_duration_since(Instant::now()),
    );

    net.attach(&RIGHT, "br0")?;
    let heal = Instant::now();
    let keys = Arc::new(lk.iter().chain(&rk).cloned().collect::<Vec<_>>());
    let pollers: Vec<_> =
        conns.iter().map(|conn| rt.spawn(holds_all(conn.clone(), keys.clone(), heal))).collect();
    let alive = c.wait_until(FORM_TIMEOUT_MS, Cluster::all_alive).then(|| heal.elapsed());
    let mut per = Vec::new();
    for p in pollers {
        per.push(rt.block_on(p).map_err(|e| e.to_string())?);
    }
    let times: Vec<f64> =
        per.iter().map(|r| r.as_ref().map_or(f64::INFINITY, |d| ms(*d))).collect();
    let worst = times.iter().copied().fold(0.0, f64::max);
    let measured = format!(
        "worst {worst:.0} ms; per manager {}",
        times.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join("/")
    );
    let ok = worst <= HEAL_TARGET_MS && lf == 0 && rf == 0;
    report.row(&figure, &format!("<= {HEAL_TARGET_MS:.0} ms"), measured, Some(ok));
    report.note(format!(
        "partition: sides declared each other down {:.0} ms after the cut; acked left {} (failed {lf}), right {} (failed {rf}); \
         all members alive again {} after the heal",
        ms(apart),
        lk.len(),
        rk.len(),
        alive.map_or("not".into(), |d| format!("{:.0} ms", ms(d))),
    ));
    Ok(())
}
