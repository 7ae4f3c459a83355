//! A process's recent log lines: a ring bounded in bytes, with a channel
//! that live readers follow. Lines from each source are kept once: a line
//! whose `(boot, seq)` is not after the last one kept from its source is
//! dropped (an agent resending its recent lines to a new manager).
//!
//! Owns the ring and its followers' channel. Must never hold more than its
//! byte bound, never block (a slow follower skips lines, told how many),
//! and never log through `tracing` (the capture layer calls it: a line
//! about a line would recurse).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{LogFilter, LogLine};

/// A manager's ring: its own lines and its agents' (about 60,000 lines of
/// 200 bytes).
pub const MANAGER_LOG_RING_BYTES: usize = 16 << 20;
/// An agent's ring: what it resends to a new manager comes from here.
pub const AGENT_LOG_RING_BYTES: usize = 1 << 20;
/// Lines a live follower may fall behind before it skips (and is told).
pub const FOLLOW_QUEUE_LINES: usize = 4_096;
/// Sources whose last line is remembered for deduplication; past it the
/// memory is cleared (a resent line may then be kept twice; the client
/// still shows it once).
pub const MAX_DEDUP_SOURCES: usize = 100_000;

struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
    last: BTreeMap<String, (u64, u64)>,
    dropped_old: u64,
}

/// The ring and its followers.
pub struct LogHub {
    ring: Mutex<Ring>,
    max_bytes: usize,
    live: broadcast::Sender<Arc<LogLine>>,
}

impl LogHub {
    pub fn new(max_bytes: usize) -> Arc<LogHub> {
        assert!(max_bytes > 0, "a log ring needs room");
        Arc::new(LogHub {
            ring: Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
                last: BTreeMap::new(),
                dropped_old: 0,
            }),
            max_bytes,
            live: broadcast::channel(FOLLOW_QUEUE_LINES).0,
        })
    }

    /// Keeps `line` (cut to its bounds) unless its source already gave a
    /// later one; sends it to live followers. Returns whether it was kept.
    pub fn push(&self, line: LogLine) -> bool {
        let line = Arc::new(line.bounded());
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            let key = (line.boot, line.seq);
            if ring.last.get(&line.source).is_some_and(|last| *last >= key) {
                return false;
            }
            if ring.last.len() >= MAX_DEDUP_SOURCES && !ring.last.contains_key(&line.source) {
                ring.last.clear();
            }
            ring.last.insert(line.source.clone(), key);
            ring.bytes += line.weight();
            ring.lines.push_back(line.clone());
            while ring.bytes > self.max_bytes {
                let Some(old) = ring.lines.pop_front() else { break };
                ring.bytes -= old.weight();
                ring.dropped_old += 1;
            }
            debug_assert_eq!(ring.bytes, ring.lines.iter().map(|l| l.weight()).sum::<usize>());
        }
        // No follower is no error.
        let _ = self.live.send(line);
        true
    }

    /// The retained lines `filter` matches, oldest first: all of them, or
    /// only the last `last_n`.
    pub fn backlog(&self, filter: &LogFilter, all: bool, last_n: usize) -> Vec<LogLine> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LogLine> = if all {
            ring.lines.iter().filter(|l| filter.matches(l)).map(|l| (**l).clone()).collect()
        } else {
            let mut tail: Vec<LogLine> = ring
                .lines
                .iter()
                .rev()
                .filter(|l| filter.matches(l))
                .take(last_n)
                .map(|l| (**l).clone())
                .collect();
            tail.reverse();
            tail
        };
        out.shrink_to_fit();
        out
    }

    /// The last `n` lines, whatever their source (an agent's resend).
    pub fn recent(&self, n: usize) -> Vec<LogLine> {
        self.backlog(&LogFilter::default(), false, n)
    }

    /// A live follower: every line kept from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.live.subscribe()
    }

    /// (lines held, bytes held, lines dropped for room).
    pub fn usage(&self) -> (usize, usize, u64) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (ring.lines.len(), ring.bytes, ring.dropped_old)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::line;
    use super::super::{Level, LogFilter};
    use super::*;

    #[test]
    fn the_ring_keeps_its_byte_bound_dropping_the_oldest() {
        let one = line("a", 0, Level::Info, None).weight();
        let hub = LogHub::new(one * 10 + one / 2);
        for seq in 1..=25 {
            assert!(hub.push(line("a", seq, Level::Info, None)));
        }
        let (n, bytes, dropped) = hub.usage();
        assert!(bytes <= one * 10 + one / 2, "{bytes}");
        assert_eq!((n, dropped), (10, 15));
        let all = hub.backlog(&LogFilter::default(), true, 0);
        assert_eq!(all.first().unwrap().seq, 16);
        assert_eq!(all.last().unwrap().seq, 25);
    }

    #[test]
    fn a_resent_line_is_kept_once_and_followers_see_new_lines() {
        let hub = LogHub::new(1 << 20);
        let mut rx = hub.subscribe();
        assert!(hub.push(line("machine-1", 5, Level::Info, None)));
        assert!(!hub.push(line("machine-1", 5, Level::Info, None)), "same line again");
        assert!(!hub.push(line("machine-1", 4, Level::Info, None)), "an older line");
        assert!(hub.push(line("machine-2", 1, Level::Info, None)), "another source");
        let mut rebooted = line("machine-1", 1, Level::Info, None);
        rebooted.boot = 2;
        assert!(hub.push(rebooted), "a restarted process counts from a new boot");
        assert_eq!(rx.try_recv().unwrap().seq, 5);
        assert_eq!(rx.try_recv().unwrap().source, "machine-2");
        let last_two = hub.backlog(&LogFilter::default(), false, 2);
        assert_eq!(last_two.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 1]);
        let warn = LogFilter { level: Some(Level::Warn), ..Default::default() };
        assert!(hub.backlog(&warn, true, 0).is_empty());
    }
}
