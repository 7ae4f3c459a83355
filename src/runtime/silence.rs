//! The agent's watch on its session's manager. A manager sends at least
//! one packet every `KEEPALIVE_MS` on each of its connections (QUIC
//! keep-alives, besides SWIM and session frames), so an agent's session
//! connection that has received nothing for [`SESSION_SILENCE_MS`] has
//! lost its manager: killed, its machine gone, or the path cut. The agent
//! then closes the session and opens another at once, without waiting for
//! SWIM to declare the manager down (gossip reaches an agent in a large or
//! loaded pool later than the managers) or for QUIC's idle timeout (5 s).
//!
//! Owns the silence rule over a count of received datagrams. Must never
//! read a clock or a socket itself (the session task feeds it both), and
//! never call a connection silent on one late look: a process the machine
//! starved may look before its endpoint has read what waited in the socket.

use std::time::{Duration, Instant};

/// How long an agent's session connection may receive nothing before the
/// agent gives its manager up: two missed keep-alives
/// (`transport::KEEPALIVE_MS`, 1 s). Shorter than the managers' detection
/// of a dead manager on this machine (median 2.6 s under the 300-agent
/// benchmark's load), so the moved agents re-session about when SWIM
/// declares it down, not after their own gossip catches up.
pub const SESSION_SILENCE_MS: u64 = 2_000;

/// How often the session task looks at its connection's receive count.
/// A silence is confirmed by a second look this much after the first that
/// found it past [`SESSION_SILENCE_MS`], so a session is given up between
/// 2.25 and 2.5 s after its last packet.
pub const SILENCE_CHECK_MS: u64 = 250;

/// What the watch has seen of one connection.
#[derive(Debug)]
pub struct SilenceWatch {
    /// The receive count at the last change.
    count: u64,
    /// When the count last changed (or the watch began).
    heard_at: Instant,
    /// Looks in a row that found the connection past the silence bound.
    silent_looks: u32,
}

impl SilenceWatch {
    /// A watch begun at `now` on a connection whose receive count is `count`.
    pub fn new(now: Instant, count: u64) -> SilenceWatch {
        SilenceWatch { count, heard_at: now, silent_looks: 0 }
    }

    /// One look at `now`, with the connection's receive count: true once
    /// it has not moved for [`SESSION_SILENCE_MS`] on two looks in a row.
    pub fn silent(&mut self, now: Instant, count: u64) -> bool {
        if count != self.count {
            self.count = count;
            self.heard_at = now;
            self.silent_looks = 0;
            return false;
        }
        if now.saturating_duration_since(self.heard_at) < Duration::from_millis(SESSION_SILENCE_MS)
        {
            return false;
        }
        self.silent_looks += 1;
        self.silent_looks >= 2
    }

    /// How long the connection has been silent at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.heard_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_connection_that_keeps_receiving_is_never_silent() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(t0, 7);
        for i in 1..100u64 {
            assert!(!w.silent(t0 + ms(i * SILENCE_CHECK_MS), 7 + i / 4));
        }
    }

    #[test]
    fn silence_is_confirmed_by_a_second_look_past_the_bound() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(t0, 3);
        assert!(!w.silent(t0 + ms(SESSION_SILENCE_MS - 1), 3));
        assert!(!w.silent(t0 + ms(SESSION_SILENCE_MS), 3), "one look is not enough");
        assert!(w.silent(t0 + ms(SESSION_SILENCE_MS + SILENCE_CHECK_MS), 3));
        assert_eq!(w.silent_for(t0 + ms(SESSION_SILENCE_MS + SILENCE_CHECK_MS)), ms(2_250));
    }

    #[test]
    fn a_starved_look_that_finds_packets_on_the_next_starts_over() {
        // The process slept 5 s: its first look comes before its endpoint
        // read the keep-alives waiting in the socket, the second after.
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(t0, 10);
        assert!(!w.silent(t0 + ms(5_000), 10));
        assert!(!w.silent(t0 + ms(5_250), 15));
        assert!(!w.silent(t0 + ms(5_250 + SESSION_SILENCE_MS), 15));
        assert!(w.silent(t0 + ms(5_500 + SESSION_SILENCE_MS), 15));
    }
}
