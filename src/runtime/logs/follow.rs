//! `juju debug-log`'s client side: one stream to every live manager, their
//! retained lines merged in time order, then their live lines as they
//! come, each line shown once. A manager that dies only ends its stream:
//! the others go on, its agents forward to them, and managers that come up
//! later are found by asking for the members again; with none to follow
//! for [`NO_MANAGER_GIVE_UP_MS`], it gives up.
//!
//! Owns the merge and deduplication. Must never wait on a manager without
//! a deadline before the live part, never follow more than
//! [`MAX_FOLLOWED_MANAGERS`], and never show a line twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use super::serve::MAX_LOG_FRAME_BYTES;
use super::{LogFrame, LogLine, LogQuery};
use crate::runtime::client::{self, ClientError};
use crate::runtime::clientfile::ClientFile;
use crate::runtime::wire::{self, MAX_API_FRAME_BYTES, Request, Response};

/// How long the retained lines of every manager are waited for.
pub const BACKLOG_WAIT_MS: u64 = 10_000;
/// How often the members are asked again for managers not yet followed.
pub const REDISCOVER_MS: u64 = 2_000;
/// Most managers followed at once.
pub const MAX_FOLLOWED_MANAGERS: usize = 16;
/// Lines asked of a manager found after the start (it may hold lines of
/// agents that moved to it from a dead manager, resent).
pub const LATE_MANAGER_LINES: u32 = 512;
/// Sources remembered for deduplication; past it the memory is cleared.
pub const MAX_SEEN_SOURCES: usize = 100_000;
/// A following reader gives up when it has followed no manager for this
/// long (every manager dead or unreachable): it exits with an error
/// rather than wait forever.
pub const NO_MANAGER_GIVE_UP_MS: u64 = 60_000;
/// Events from the managers' streams waiting to be shown.
const EVENT_QUEUE: usize = 256;

/// Why `juju debug-log` stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no manager could be followed for {NO_MANAGER_GIVE_UP_MS} ms; giving up")]
    Abandoned,
    #[error("no manager answered:\n{}", .0.iter().map(|(a, r)| format!("  {a}: {r}")).collect::<Vec<_>>().join("\n"))]
    NoManager(Vec<(SocketAddr, String)>),
}

/// What `juju debug-log` asks for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub query: LogQuery,
    /// Stop after this many lines.
    pub limit: Option<u64>,
}

type Failures = Vec<(SocketAddr, String)>;

enum Event {
    Lines(SocketAddr, Vec<LogLine>),
    BacklogDone(SocketAddr),
    Skipped(SocketAddr, u64),
    Ended(SocketAddr, String),
}

/// The live managers' addresses, as a live manager sees them; the client
/// file's endpoints if none answers the question.
async fn managers(file: &ClientFile) -> Vec<SocketAddr> {
    let asked = tokio::time::timeout(
        Duration::from_millis(client::CLIENT_TIMEOUT_MS),
        client::request(file, None, Request::Members),
    )
    .await;
    let mut addrs: Vec<SocketAddr> = match asked {
        Ok(Ok((_, Response::Members { members, .. }))) => members
            .into_iter()
            .filter(|m| m.role == "manager" && m.state == "alive")
            .map(|m| m.addr)
            .collect(),
        _ => file.endpoints.clone(),
    };
    addrs.sort();
    addrs.dedup();
    addrs.truncate(MAX_FOLLOWED_MANAGERS);
    addrs
}

/// One manager's stream, reported as events until it ends.
async fn stream_from(file: ClientFile, addr: SocketAddr, q: LogQuery, tx: mpsc::Sender<Event>) {
    let ended = async {
        let (_endpoint, conn) =
            client::open_connection(&file, addr).await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        wire::write_frame(&mut send, &Request::DebugLog(q), MAX_API_FRAME_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let frame = wire::read_frame::<LogFrame>(&mut recv, MAX_LOG_FRAME_BYTES).await;
            let event = match frame {
                Ok(LogFrame::Lines(lines)) => Event::Lines(addr, lines),
                Ok(LogFrame::BacklogDone) => Event::BacklogDone(addr),
                Ok(LogFrame::Skipped(n)) => Event::Skipped(addr, n),
                Ok(LogFrame::Refused(why)) => return Err(format!("refused: {why}")),
                Err(wire::FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err("the stream ended".into());
                }
                Err(e) => return Err(e.to_string()),
            };
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(why) = ended {
        let _ = tx.send(Event::Ended(addr, why)).await;
    }
}

/// Shows each line once, up to the limit.
struct Shown<'a> {
    seen: BTreeMap<String, (u64, u64)>,
    count: u64,
    limit: Option<u64>,
    print: &'a mut dyn FnMut(&LogLine),
}

impl Shown<'_> {
    /// Shows `line` unless its source already showed it or a later one.
    /// Returns false once the limit is reached.
    fn show(&mut self, line: &LogLine) -> bool {
        if self.limit.is_some_and(|l| self.count >= l) {
            return false;
        }
        let key = (line.boot, line.seq);
        if self.seen.get(&line.source).is_some_and(|last| *last >= key) {
            return true;
        }
        if self.seen.len() >= MAX_SEEN_SOURCES && !self.seen.contains_key(&line.source) {
            self.seen.clear();
        }
        self.seen.insert(line.source.clone(), key);
        (self.print)(line);
        self.count += 1;
        self.limit.is_none_or(|l| self.count < l)
    }
}

/// The managers' streams: those followed, and those that answered (a
/// live manager is being followed).
struct Streams<'a> {
    file: &'a ClientFile,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    followed: BTreeSet<SocketAddr>,
    ready: BTreeSet<SocketAddr>,
}

impl Streams<'_> {
    /// Follows `addr` with `q` unless it is followed already or the bound
    /// is reached. Returns whether it started.
    fn start(&mut self, addr: SocketAddr, q: &LogQuery) -> bool {
        let fresh = self.followed.len() < MAX_FOLLOWED_MANAGERS && self.followed.insert(addr);
        if fresh {
            tokio::spawn(stream_from(self.file.clone(), addr, q.clone(), self.tx.clone()));
        }
        fresh
    }

    /// Every followed manager's retained lines, merged in time order
    /// (waiting at most [`BACKLOG_WAIT_MS`]); live lines that came
    /// meanwhile; the managers that failed and why.
    async fn backlog(&mut self, note: &dyn Fn(&str)) -> (Vec<LogLine>, Vec<LogLine>, Failures) {
        let mut pending = self.followed.clone();
        let (mut backlog, mut early, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(BACKLOG_WAIT_MS);
        while !pending.is_empty() {
            let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.rx.recv()).await else {
                break;
            };
            match event {
                Event::Lines(a, lines) if pending.contains(&a) => backlog.extend(lines),
                Event::Lines(_, lines) => early.extend(lines),
                Event::BacklogDone(a) => {
                    pending.remove(&a);
                    self.ready.insert(a);
                }
                Event::Skipped(..) => {}
                Event::Ended(a, why) => {
                    pending.remove(&a);
                    self.followed.remove(&a);
                    failures.push((a, why));
                }
            }
        }
        for a in pending {
            note(&format!("manager {a} sent no history within {BACKLOG_WAIT_MS} ms; going on"));
        }
        backlog.sort_by(|a, b| (a.at_unix_ms, a.key()).cmp(&(b.at_unix_ms, b.key())));
        (backlog, early, failures)
    }

    /// Shows live lines until the limit; follows managers found later;
    /// gives up after [`NO_MANAGER_GIVE_UP_MS`] without a live one.
    async fn live(
        &mut self,
        late: &LogQuery,
        shown: &mut Shown<'_>,
        note: &dyn Fn(&str),
    ) -> Result<(), FollowError> {
        let mut tick = tokio::time::interval(Duration::from_millis(REDISCOVER_MS));
        let mut alone_since = None;
        loop {
            tokio::select! {
                event = self.rx.recv() => match event {
                    Some(Event::Lines(_, lines)) if !lines.iter().all(|l| shown.show(l)) => {
                        return Ok(());
                    }
                    Some(Event::Lines(..)) => {}
                    Some(Event::Skipped(a, n)) => note(&format!("manager {a} skipped {n} lines: this reader was too slow")),
                    Some(Event::Ended(a, why)) => {
                        self.ready.remove(&a);
                        if self.followed.remove(&a) {
                            note(&format!("lost manager {a} ({why}); following the others"));
                        }
                    }
                    Some(Event::BacklogDone(a)) => _ = self.ready.insert(a),
                    None => {}
                },
                _ = tick.tick() => {
                    for addr in managers(self.file).await {
                        if self.start(addr, late) {
                            note(&format!("following manager {addr}"));
                        }
                    }
                    if !self.ready.is_empty() {
                        alone_since = None;
                    } else if alone_since.get_or_insert_with(tokio::time::Instant::now).elapsed()
                        >= Duration::from_millis(NO_MANAGER_GIVE_UP_MS)
                    {
                        return Err(FollowError::Abandoned);
                    }
                }
            }
        }
    }
}

/// Follows every live manager's log stream as `opts` asks, calling
/// `print` for each line shown; `note` hears about managers lost and
/// found. Returns when the backlog is shown and no tail was asked, when
/// the limit is reached, or (following) after [`NO_MANAGER_GIVE_UP_MS`]
/// without a live manager.
pub async fn run(
    file: &ClientFile,
    opts: Options,
    print: &mut dyn FnMut(&LogLine),
    note: &dyn Fn(&str),
) -> Result<(), FollowError> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let mut streams = Streams { file, tx, rx, followed: BTreeSet::new(), ready: BTreeSet::new() };
    for addr in managers(file).await {
        streams.start(addr, &opts.query);
    }
    let (mut backlog, early, failures) = streams.backlog(note).await;
    if streams.followed.is_empty() {
        return Err(FollowError::NoManager(failures));
    }
    if !opts.query.replay {
        // The last lines of the merge: each manager sent its own last ones.
        backlog.drain(..backlog.len().saturating_sub(opts.query.lines as usize));
    }
    let mut shown = Shown { seen: BTreeMap::new(), count: 0, limit: opts.limit, print };
    if !backlog.iter().chain(&early).all(|l| shown.show(l)) || !opts.query.follow {
        return Ok(());
    }
    let late = LogQuery { replay: false, lines: LATE_MANAGER_LINES, ..opts.query.clone() };
    streams.live(&late, &mut shown, note).await
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::super::tests::line;
    use super::*;

    #[test]
    fn a_line_is_shown_once_and_the_limit_stops_the_stream() {
        let mut out = Vec::new();
        let mut print = |l: &LogLine| out.push((l.source.clone(), l.seq));
        let mut shown =
            Shown { seen: BTreeMap::new(), count: 0, limit: Some(3), print: &mut print };
        assert!(shown.show(&line("a", 1, Level::Info, None)));
        assert!(shown.show(&line("a", 1, Level::Info, None)), "a repeat is skipped, not counted");
        assert!(shown.show(&line("b", 1, Level::Info, None)));
        assert!(!shown.show(&line("a", 2, Level::Info, None)), "the third line reaches the limit");
        assert!(!shown.show(&line("a", 3, Level::Info, None)));
        assert_eq!(out, [("a".to_string(), 1), ("b".to_string(), 1), ("a".to_string(), 2)]);
    }
}
