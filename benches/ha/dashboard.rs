//! Section 5, the dashboard (issue 16): in a fresh `bootstrap --ha 3`
//! environment, log in through the link `juju dashboard` prints and read
//! the page's event stream (server-sent events over HTTPS, trusting the
//! cluster's CA) as a browser does; SIGKILL a manager other than the one
//! serving the page and time (a) the serving manager's `member down` for
//! it (detection) and (b) the first snapshot on the stream that shows it
//! down (not merely suspect). Also the serving manager's CPU and memory, idle,
//! without and then with one page open, and `juju debug-log`'s latency.
//!
//! Owns these measurements. Must never wait without a cap, and never leave
//! its stream reader running (it stops when its receiver is dropped).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::env::{self, Env, Res, after_by, ms_since};
use testkit::bench::{cpu_ticks, rss_kib, ticks_per_sec};
use testkit::stats::Samples;

/// The target: shown down on the page within detection + this.
pub const PAGE_MARGIN_TARGET_MS: f64 = 1_000.0;
/// The target: an idle manager with one page open uses at most this CPU.
pub const IDLE_CPU_TARGET_PERCENT: f64 = 1.0;
/// Cap on any awaited change.
pub const CAP_MS: u64 = 30_000;
/// Cap on an HTTPS answer's head.
const HEAD_CAP_BYTES: usize = 16 << 10;

/// One kill round; times in ms from the SIGKILL.
pub struct Kill {
    pub detection_ms: f64,
    pub page_ms: f64,
}

pub fn describe_kill(k: &Kill) -> String {
    format!(
        "member down {:.0} ms, page shows it {:.0} ms (margin {:.0} ms)",
        k.detection_ms,
        k.page_ms,
        k.page_ms - k.detection_ms
    )
}

/// The idle round's figures.
pub struct Idle {
    pub secs: u64,
    pub cpu_closed: f64,
    pub cpu_open: f64,
    pub rss_closed_kib: u64,
    pub rss_open_kib: u64,
    pub snapshots_while_idle: usize,
    pub debug_log_ms: Samples,
}

pub fn describe_idle(i: &Idle) -> String {
    format!(
        "idle {} s: CPU {:.2}% without a page, {:.2}% with one; RSS {} KiB -> {} KiB; {} snapshots sent while idle; debug-log median {:.1} ms worst {:.1} ms (n={})",
        i.secs,
        i.cpu_closed,
        i.cpu_open,
        i.rss_closed_kib,
        i.rss_open_kib,
        i.snapshots_while_idle,
        i.debug_log_ms.median(),
        i.debug_log_ms.worst(),
        i.debug_log_ms.len()
    )
}

/// A page's event stream: snapshots with their arrival, read in a thread.
struct Page {
    rx: mpsc::Receiver<(Instant, Value)>,
    stop: Arc<AtomicBool>,
    serving: SocketAddr,
}

impl Drop for Page {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(ca_pem: &str, addr: SocketAddr) -> Res<Tls> {
    let ca = jujud::pki::ClusterCa { cert_pem: ca_pem.into(), key_pem: String::new() };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(jujud::pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(jujud::pki::SERVER_NAME)
        .map_err(|e| e.to_string())?;
    tls.connect(name.to_owned(), tcp).await.map_err(|e| format!("TLS: {e}"))
}

fn split_url(url: &str) -> Res<(SocketAddr, String)> {
    let rest = url.strip_prefix("https://").ok_or("not an https URL")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((host.parse().map_err(|_| format!("{host}: not IP:PORT"))?, path.to_string()))
}

/// Redeems the login link; returns the session cookie.
async fn login(ca_pem: &str, login_url: &str) -> Res<String> {
    let (addr, path) = split_url(login_url)?;
    let mut s = connect(ca_pem, addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut r = tokio::io::BufReader::new(s);
    let mut head = String::new();
    while head.len() < HEAD_CAP_BYTES {
        let mut line = String::new();
        if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| format!("no session cookie in the login answer: {head}"))
}

/// Follows `/events` with `cookie`, sending each snapshot until `stop`.
async fn follow(
    ca_pem: String,
    url: String,
    cookie: String,
    tx: mpsc::Sender<(Instant, Value)>,
    stop: Arc<AtomicBool>,
) -> Res<()> {
    let (addr, _) = split_url(&url)?;
    let mut s = connect(&ca_pem, addr).await?;
    let req = format!(
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut r = tokio::io::BufReader::new(s);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_millis(200), r.read_line(&mut line)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return Err("the event stream ended".into()),
            Ok(Ok(_)) => {}
        }
        if let Some(data) = line.strip_prefix("data:") {
            let at = Instant::now();
            if let Ok(v) = serde_json::from_str::<Value>(data.trim())
                && tx.send((at, v)).is_err()
            {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Logs in and opens the page's event stream: on the manager at `on`, or
/// the one `juju dashboard` picks.
fn open_page(env: &Env, on: Option<SocketAddr>) -> Res<Page> {
    let endpoint = on.map(|a| a.to_string());
    let link = match &endpoint {
        Some(e) => env.json(&["dashboard", "--endpoint", e])?,
        None => env.json(&["dashboard"])?,
    };
    let (url, login_url) = (
        link["url"].as_str().ok_or("no url")?.to_string(),
        link["login_url"].as_str().ok_or("no login_url")?.to_string(),
    );
    let ca_pem = jujud::runtime::clientfile::ClientFile::load(&env.root.join("client.yaml"))
        .map_err(|e| e.to_string())?
        .ca_cert;
    let (serving, _) = split_url(&url)?;
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let _ = rt.block_on(async move {
            let cookie = login(&ca_pem, &login_url).await?;
            follow(ca_pem, url, cookie, tx, flag).await
        });
    });
    Ok(Page { rx, stop, serving })
}

fn member_state(snap: &Value, id: &str) -> Option<String> {
    snap["members"].as_array()?.iter().find(|m| m["id"] == id)?["state"].as_str().map(str::to_owned)
}

/// One round: a manager other than the page's SIGKILLed.
pub fn kill_round(root: PathBuf) -> env::Ended<Kill> {
    env::run_env(root, 3, |env| {
        let (_, managers) = env.agreed(3)?;
        let page = open_page(env, None)?;
        let (_, first) = page
            .rx
            .recv_timeout(Duration::from_millis(CAP_MS))
            .map_err(|_| "no snapshot on the page")?;
        let serving = env.instance_at(page.serving)?;
        let victim_m =
            managers.iter().find(|m| m.addr != page.serving).ok_or("no other manager")?;
        if member_state(&first, &victim_m.id).as_deref() != Some("alive") {
            return Err(format!("the page does not show {} alive", victim_m.id));
        }
        let victim = env.instance_at(victim_m.addr)?;
        let t0_sys = env.kill(&victim)?;
        let t0 = Instant::now();
        let page_ms = loop {
            let left = Duration::from_millis(CAP_MS).saturating_sub(t0.elapsed());
            let (at, snap) =
                page.rx.recv_timeout(left).map_err(|_| "the page never showed the manager down")?;
            // Down, not merely suspected (the page shows suspect first).
            if member_state(&snap, &victim_m.id).is_some_and(|s| s != "alive" && s != "suspect") {
                break at.duration_since(t0).as_secs_f64() * 1e3;
            }
        };
        let down =
            |e: &crate::common::Ev| e.msg == env::MSG_DOWN && e.text("member") == victim_m.id;
        if !env.log.wait_until(CAP_MS, |f| after_by(f, t0_sys, &serving.name, down).is_some()) {
            return Err("the serving manager never logged member down".into());
        }
        let detection_ms = after_by(&env.log, t0_sys, &serving.name, down)
            .and_then(|e| ms_since(e, t0_sys))
            .ok_or("no stamp on member down")?;
        Ok(Kill { detection_ms, page_ms })
    })
}

/// CPU (% of one core) and RSS of `pid` over `secs`.
fn sample(pid: i32, secs: u64) -> Res<(f64, u64)> {
    let before = cpu_ticks(pid).ok_or("no /proc stat")?;
    std::thread::sleep(Duration::from_secs(secs)); // measuring over time: the wait is the measurement
    let after = cpu_ticks(pid).ok_or("no /proc stat")?;
    let cpu = (after - before) as f64 / ticks_per_sec() / secs as f64 * 100.0;
    Ok((cpu, rss_kib(pid).ok_or("no /proc status")?))
}

/// The idle round: the serving manager without a page, then with one; then
/// debug-log latency (`debug_log_samples` lines).
pub fn idle_round(root: PathBuf, secs: u64, debug_log_samples: usize) -> env::Ended<Idle> {
    env::run_env(root.clone(), 3, |env| {
        env.agreed(3)?;
        let link = env.json(&["dashboard"])?;
        let (serving, _) = split_url(link["url"].as_str().ok_or("no url")?)?;
        let pid = env.instance_at(serving)?.pid;
        std::thread::sleep(Duration::from_secs(2)); // let the start-up settle before sampling
        let (cpu_closed, rss_closed_kib) = sample(pid, secs)?;
        let page = open_page(env, Some(serving))?;
        page.rx
            .recv_timeout(Duration::from_millis(CAP_MS))
            .map_err(|_| "no snapshot on the page")?;
        // The page's manager must be the sampled one.
        if page.serving != serving {
            return Err("juju dashboard named another manager the second time".into());
        }
        let (cpu_open, rss_open_kib) = sample(pid, secs)?;
        let snapshots_while_idle = page.rx.try_iter().count();
        drop(page);
        let debug_log_ms = crate::debug_log::measure(&root, debug_log_samples)?;
        Ok(Idle {
            secs,
            cpu_closed,
            cpu_open,
            rss_closed_kib,
            rss_open_kib,
            snapshots_while_idle,
            debug_log_ms,
        })
    })
}
