//! Plumbing shared by the benchmarks (`detection`, `state`, `agents`, `ha`,
//! `attack`, `tokens`):
//! reading a child's JSON log lines into timestamped events (from its
//! stderr, or from log files with [`follow`]), finding free loopback ports,
//! scraping a peer's `/metrics`, and the /proc probes (RSS, CPU ticks, load
//! average).
//!
//! Owns only leaf helpers with no policy. Must never sleep to synchronise
//! (each log line is stamped with the `Instant` its reader thread got it, and
//! callers wait on the channel of those events), and never own a process:
//! each benchmark decides what to spawn, when to signal and when to kill.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

pub mod follow;

/// Attempts at finding one free port before giving up.
const FREE_PORT_TRIES: usize = 200;

/// One JSON log line of a `jujud` process: its message and fields.
pub struct Ev {
    /// The benchmark's index of the process that logged it.
    pub who: usize,
    /// When the reader thread got the line.
    pub at: Instant,
    /// When the process logged it (its "timestamp", on this machine's
    /// clock), if the line carried one.
    pub stamp: Option<SystemTime>,
    pub msg: String,
    pub fields: Value,
}

impl Ev {
    /// A field as text (strings unquoted, absent as empty).
    pub fn text(&self, k: &str) -> String {
        match &self.fields[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        }
    }

    pub fn num(&self, k: &str) -> Option<u64> {
        self.fields[k].as_u64()
    }
}

/// Reads `jujud --log-format json` lines from `stream` until EOF: tees every
/// line to `tee`, and sends each JSON line stamped with its arrival time.
pub fn read_json_log(stream: impl Read, who: usize, tx: Sender<Ev>, mut tee: File) {
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        let at = Instant::now();
        let _ = writeln!(tee, "{line}");
        let Some(ev) = parse_json_line(&line, who, at) else { continue };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// One `jujud --log-format json` line as an event, or None if it is not
/// JSON.
pub fn parse_json_line(line: &str, who: usize, at: Instant) -> Option<Ev> {
    let v = serde_json::from_str::<Value>(line).ok()?;
    let stamp = v.get("timestamp").and_then(|t| t.as_str()).and_then(log_stamp);
    let fields = v.get("fields").cloned().unwrap_or(Value::Null);
    let msg = fields.get("message").and_then(|m| m.as_str()).unwrap_or("").to_owned();
    Some(Ev { who, at, stamp, msg, fields })
}

/// A log line's UTC timestamp, `YYYY-MM-DDTHH:MM:SS[.frac]Z` (what
/// tracing-subscriber writes), as a point on the system clock.
pub fn log_stamp(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let nanos: u32 =
        if frac.is_empty() { 0 } else { format!("{frac:0<9}").get(..9)?.parse().ok()? };
    let secs = days_from_civil(y, mo, day) * 86_400 + h * 3_600 + mi * 60 + sec;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A loopback port free for both TCP and UDP right now (then released),
/// and not in `taken` (which it joins).
pub fn free_port(taken: &mut Vec<u16>) -> Result<u16, String> {
    for _ in 0..FREE_PORT_TRIES {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        if !taken.contains(&port) && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return Ok(port);
        }
    }
    Err("no free loopback port".into())
}

/// Every sample of a peer's `/metrics` at `addr` (series with its labels
/// -> value), or `None` if it did not answer within the deadlines.
pub fn scrape_metrics(addr: SocketAddr) -> Option<HashMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = &text[text.find("\r\n\r\n")? + 4..];
    let sample = |l: &str| {
        l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse::<f64>().ok()?)))
    };
    Some(body.lines().filter(|l| !l.starts_with('#')).filter_map(sample).collect())
}

/// `n` distinct loopback addresses on ports free right now.
pub fn loopback_addrs(n: usize) -> Result<Vec<SocketAddr>, String> {
    let mut taken = Vec::new();
    (0..n).map(|_| free_port(&mut taken).map(|p| SocketAddr::from(([127, 0, 0, 1], p)))).collect()
}

/// A `kB` line of /proc/PID/status (`VmRSS`, `RssAnon`, `RssFile`, ...).
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let prefix = format!("{key}:");
    s.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?.split_whitespace().next()?.parse().ok()
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second, for [`cpu_ticks`].
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// /proc/loadavg, trimmed.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    loadavg().split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Runs `cmd args` in the crate's directory; its trimmed stdout, or empty.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// "nproc N, kernel K, CPU model" for a benchmark's header.
pub fn machine() -> String {
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
    format!("nproc {cpus}, kernel {}, {model}", kernel.trim())
}

/// The short commit, marked when tracked files differ from it.
pub fn commit() -> String {
    let dirty = if sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (tracked files modified)"
    };
    format!("{}{dirty}", sh("git", &["rev-parse", "--short", "HEAD"]))
}
