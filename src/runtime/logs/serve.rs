//! A manager's side of logs: the stream on which an agent forwards its
//! lines (`Request::LogSink`, agents only) and the answer to
//! `juju debug-log` (`Request::DebugLog`): the retained lines that match,
//! then, if asked, live ones.
//!
//! Owns the per-agent rate bound and the bound on live readers. Must never
//! keep an agent's line under another machine than the agent's
//! certificate names, never keep more lines from one agent than its rate
//! allows (the rest are counted and dropped), and never let a slow reader
//! hold lines back from others (it skips, and is told how many).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast};

use super::hub::LogHub;
use super::{LogFrame, LogLine, LogQuery};
use crate::metrics::{DropReason, Metrics};
use crate::runtime::wire;

/// Largest frame of lines, either way.
pub const MAX_LOG_FRAME_BYTES: usize = 256 << 10;
/// Most lines in one frame.
pub const MAX_LOG_BATCH_LINES: usize = 512;
/// Lines per second one agent may forward (its units' output included);
/// past it, lines are dropped and counted.
pub const AGENT_LOG_LINES_PER_SEC: u64 = 500;
/// Lines an agent may send at once before its rate applies.
pub const AGENT_LOG_BURST_LINES: u64 = 2_000;
/// Live `juju debug-log` readers one manager serves at once; more are
/// refused.
pub const MAX_LOG_FOLLOWERS: usize = 32;
/// How long a live reader's new lines are gathered before they are sent.
pub const LOG_FLUSH_MS: u64 = 20;
/// Most lines a reader may ask for without `--replay`.
pub const MAX_LOG_LINES_ASKED: u32 = 100_000;
/// How often a manager says it dropped an agent's lines (at most).
pub const DROP_REPORT_EVERY_MS: u64 = 10_000;

/// A token bucket over lines.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket { tokens: AGENT_LOG_BURST_LINES as f64, at: Instant::now() }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + refill * AGENT_LOG_LINES_PER_SEC as f64)
            .min(AGENT_LOG_BURST_LINES as f64);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A unit name as agents write them: `app/id`, each part of
/// `[a-z0-9-]`, not empty.
fn plausible_unit(u: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    matches!(u.split_once('/'), Some((app, n)) if ok(app) && ok(n))
}

/// An agent's line as this manager keeps it: named by the agent's
/// certificate, or `None` if its unit name is not one.
fn as_kept(mut line: LogLine, machine: &str) -> Option<LogLine> {
    line.machine = Some(machine.to_owned());
    line.source = match &line.unit {
        Some(u) if plausible_unit(u) => format!("unit-{}", u.replace('/', "-")),
        Some(_) => return None,
        None => format!("machine-{machine}"),
    };
    Some(line)
}

/// Reads the lines agent `machine` forwards until the stream ends.
pub async fn serve_sink(
    mut recv: quinn::RecvStream,
    machine: String,
    hub: Arc<LogHub>,
    metrics: Arc<Metrics>,
) {
    let mut bucket = Bucket::new();
    let (mut dropped, mut reported) = (0u64, Instant::now());
    loop {
        let lines = match wire::read_frame::<Vec<LogLine>>(&mut recv, MAX_LOG_FRAME_BYTES).await {
            Ok(lines) => lines,
            // The agent went away or restarted its stream.
            Err(wire::FrameError::Io(_)) => return,
            Err(e) => {
                metrics.count_drop(DropReason::LogLines);
                tracing::warn!(%machine, error = %e, "closing an agent's log stream: bad frame");
                return;
            }
        };
        let now = Instant::now();
        for line in lines.into_iter().take(MAX_LOG_BATCH_LINES) {
            match as_kept(line, &machine) {
                Some(line) if bucket.take(now) => {
                    hub.push(line);
                }
                _ => {
                    dropped += 1;
                    metrics.count_drop(DropReason::LogLines);
                }
            }
        }
        if dropped > 0 && reported.elapsed() >= Duration::from_millis(DROP_REPORT_EVERY_MS) {
            tracing::warn!(%machine, dropped, rate = AGENT_LOG_LINES_PER_SEC, "dropped an agent's log lines over its rate, or naming no unit");
            (dropped, reported) = (0, Instant::now());
        }
    }
}

/// Why a debug-log request is refused, if it is.
fn refusal(q: &LogQuery, hub: Option<&Arc<LogHub>>) -> Option<String> {
    if let Err(e) = q.filter.check() {
        return Some(e.to_string());
    }
    if !q.replay && q.lines > MAX_LOG_LINES_ASKED {
        return Some(format!("at most {MAX_LOG_LINES_ASKED} lines may be asked for; use --replay"));
    }
    hub.is_none().then(|| "this manager keeps no log ring".into())
}

/// Sends `lines` in frames of at most [`MAX_LOG_BATCH_LINES`] lines and
/// [`MAX_LOG_FRAME_BYTES`] bytes.
async fn send_lines(send: &mut quinn::SendStream, lines: Vec<LogLine>) -> Result<(), String> {
    let budget = MAX_LOG_FRAME_BYTES / 2;
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for line in lines {
        bytes += line.weight();
        chunk.push(line);
        if chunk.len() == MAX_LOG_BATCH_LINES || bytes >= budget {
            send_frame(send, &LogFrame::Lines(std::mem::take(&mut chunk))).await?;
            bytes = 0;
        }
    }
    if !chunk.is_empty() {
        send_frame(send, &LogFrame::Lines(chunk)).await?;
    }
    Ok(())
}

async fn send_frame(send: &mut quinn::SendStream, frame: &LogFrame) -> Result<(), String> {
    wire::write_frame_within(send, frame, MAX_LOG_FRAME_BYTES, wire::ANSWER_WRITE_DEADLINE_MS)
        .await
        .map_err(|e| e.to_string())
}

/// Answers `juju debug-log` on `send`: the backlog, `BacklogDone`, then
/// (if asked) live lines until the reader goes away.
pub async fn serve_query(
    mut send: quinn::SendStream,
    q: LogQuery,
    hub: Option<Arc<LogHub>>,
    followers: Arc<Semaphore>,
    metrics: Arc<Metrics>,
) {
    let hub = match (refusal(&q, hub.as_ref()), hub) {
        (None, Some(hub)) => hub,
        (why, _) => return refuse(send, why.unwrap_or_default(), &metrics).await,
    };
    let Ok(_permit) = followers.try_acquire_owned() else {
        let why =
            format!("this manager serves {MAX_LOG_FOLLOWERS} log readers already; try another");
        return refuse(send, why, &metrics).await;
    };
    let live = hub.subscribe();
    let backlog = hub.backlog(&q.filter, q.replay, q.lines as usize);
    let sent = async {
        send_lines(&mut send, backlog).await?;
        send_frame(&mut send, &LogFrame::BacklogDone).await?;
        if q.follow { follow(&mut send, live, &q).await } else { Ok(()) }
    }
    .await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, "a log reader went away");
    }
    let _ = send.finish();
}

/// Answers a debug-log request with a refusal (counted as `rejected`).
pub async fn refuse(mut send: quinn::SendStream, why: String, metrics: &Metrics) {
    metrics.count_drop(DropReason::Rejected);
    tracing::warn!("debug-log request refused: {why}");
    let _ = send_frame(&mut send, &LogFrame::Refused(why)).await;
    let _ = send.finish();
}

/// Sends new lines that match as they come, gathered for [`LOG_FLUSH_MS`],
/// until the reader stops the stream or the connection ends.
async fn follow(
    send: &mut quinn::SendStream,
    mut live: broadcast::Receiver<Arc<LogLine>>,
    q: &LogQuery,
) -> Result<(), String> {
    loop {
        let first = tokio::select! {
            got = live.recv() => got,
            _ = send.stopped() => return Ok(()),
        };
        let mut batch = Vec::new();
        let mut skipped = 0;
        match first {
            Ok(line) if q.filter.matches(&line) => batch.push((*line).clone()),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => skipped += n,
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(LOG_FLUSH_MS);
        while batch.len() < MAX_LOG_BATCH_LINES {
            match tokio::time::timeout_at(until, live.recv()).await {
                Ok(Ok(line)) if q.filter.matches(&line) => batch.push((*line).clone()),
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => skipped += n,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        if skipped > 0 {
            send_frame(send, &LogFrame::Skipped(skipped)).await?;
        }
        if !batch.is_empty() {
            send_lines(send, batch).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::super::tests::line;
    use super::*;

    #[test]
    fn an_agents_line_is_named_by_its_certificate_and_a_bad_unit_name_is_dropped() {
        let mut l = line("manager-forged", 1, Level::Info, None);
        l.machine = Some("someone-else".into());
        let kept = as_kept(l, "m-1").unwrap();
        assert_eq!((kept.source.as_str(), kept.machine.as_deref()), ("machine-m-1", Some("m-1")));
        let unit = as_kept(line("x", 2, Level::Info, Some("web/0")), "m-1").unwrap();
        assert_eq!(unit.source, "unit-web-0");
        for bad in ["web", "/0", "web/", "we b/0", "web/0/1", "../x/0"] {
            assert!(as_kept(line("x", 3, Level::Info, Some(bad)), "m-1").is_none(), "{bad}");
        }
    }

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::new();
        let t0 = b.at;
        let burst = (0..AGENT_LOG_BURST_LINES * 2).filter(|_| b.take(t0)).count() as u64;
        assert_eq!(burst, AGENT_LOG_BURST_LINES);
        let t1 = t0 + Duration::from_millis(100);
        let more = (0..AGENT_LOG_LINES_PER_SEC).filter(|_| b.take(t1)).count() as u64;
        assert_eq!(more, AGENT_LOG_LINES_PER_SEC / 10);
    }

    #[test]
    fn an_oversized_filter_or_line_count_is_refused() {
        let hub = LogHub::new(1 << 10);
        let mut q = LogQuery { lines: MAX_LOG_LINES_ASKED + 1, ..Default::default() };
        assert!(refusal(&q, Some(&hub)).unwrap().contains("--replay"));
        q.replay = true;
        assert_eq!(refusal(&q, Some(&hub)), None);
        assert!(refusal(&q, None).is_some());
        q.filter.units = vec!["u".into(); super::super::MAX_FILTER_NAMES + 1];
        assert!(refusal(&q, Some(&hub)).is_some());
    }
}
