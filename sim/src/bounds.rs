//! The stated bounds every checker holds the cluster to, each derived from
//! the node's `Timing` and the cluster size, with the reasoning written next
//! to it. A bound is a promise about the protocol, not a tuning knob: never
//! loosen one to make a failing seed pass.
//!
//! Owns the arithmetic of the bounds. Must never look at a run's outcome.

use std::time::Duration;

use jujud::core::Timing;
use jujud::core::state::replica::MAX_DELTA_OPS;
use jujud::core::state::sync::ANTI_ENTROPY_PERIOD_MS;

/// Probe periods within which *some* live member probes a given crashed
/// member, with high probability. foca walks a shuffled member list round
/// robin, so each of the other N-1 members probes X once per cycle at a
/// uniformly random slot; none does so in k periods with probability at
/// most (1 - k/(N-1))^(N-1) <= e^-k, which is about 6e-6 for k = 12. Below
/// N = 7 the exact worst case, 2(N-1)-1 periods across a reshuffle, is
/// smaller and is used instead.
pub const FIRST_PROBE_PERIODS: u64 = 12;

/// Gossip rounds beyond log2(N) that a "down" update may need to reach
/// every member (8 transmissions, fanout 3, plus the latency tail).
pub const DISSEMINATION_SLACK_ROUNDS: u64 = 6;

/// Slack for messages still in flight when a fault ends: the latency
/// tail (at most 160 ms), reordering (20 ms) and handshake legs.
pub const IN_FLIGHT_SLACK_MS: u64 = 1_000;

/// Anti-entropy rounds, beyond 2·log2(M) for M managers, for every write
/// to reach every live manager once their views have converged. Every
/// period each manager sends its digest to one random live manager, and
/// the exchange is push-pull (each side gets what it lacks). After the
/// first 2·log2(M) rounds at least half the managers hold a given write
/// with high probability, and from then on a manager that lacks it pulls
/// from a holder with probability at least 1/2 per round: it still lacks
/// it after 40 more rounds with probability below 2^-40 (1e-12).
pub const STATE_SYNC_SLACK_ROUNDS: u64 = 40;

/// Loss above this makes every node "disturbed" for the false-down
/// checker: a refutation can be lost 8 times in a row at 1% only with
/// probability 1e-16, but at 5% SWIM's own suspicion is expected to err.
pub const FALSE_DOWN_MAX_LOSS: f64 = 0.01;

/// Every bound, for one cluster size and timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// From the first boot until every member sees every member.
    pub join: Duration,
    /// From the heal (start of the liveness phase) until every live
    /// member's view equals the true live set.
    pub convergence: Duration,
    /// From a crash until every healthy observer declares it down, in a
    /// healed cluster: the larger of `detection_gossip` and the observer's
    /// own round-robin walk (SWIM's time-bounded completeness).
    pub detection: Duration,
    /// From a crash until every observer hears the first prober's verdict,
    /// with high probability. Not an invariant: an observer that misses
    /// every copy of the verdict (each update is sent only
    /// `max_transmissions` times per member) falls back to its own walk.
    /// Reported as the share of detections within it.
    pub detection_gossip: Duration,
    /// The same while faults run (observers' timeouts may be stretched by
    /// local health and they may have to probe the victim themselves).
    pub detection_under_faults: Duration,
    /// How long a node must have been healthy and reachable before a
    /// `MemberDown` about it counts as false. Also how long after the heal
    /// a suspicion raised before it may still fire: the liveness phase waits
    /// this long before it calls the views settled.
    pub false_down_window: Duration,
    /// From converged views until every live manager holds the same state
    /// (see [`STATE_SYNC_SLACK_ROUNDS`]), for state of at most
    /// `MAX_DELTA_OPS` operations; [`Bounds::state_convergence`] adds one
    /// round per further `MAX_DELTA_OPS` (one delta carries at most that).
    pub state_sync: Duration,
    /// From the moment an agent is live, its machine alive and some live
    /// manager reachable, until it holds a session with a live, reachable
    /// manager (see [`session_reconnect`]).
    pub session_reconnect: Duration,
    /// From the heal until the live managers number the desired count
    /// again (see [`Bounds::new`]).
    pub ha_restore: Duration,
}

/// An agent learns that its session's manager is gone within the QUIC idle
/// timeout (5 s), whatever SWIM says (SWIM is usually faster: the core
/// closes the session on `MemberDown`). It then opens at once with the next
/// manager it ranks; that one may be dead too and not yet detected, so an
/// open may fail at the core's own deadline (`OPEN_TIMEOUT_MS`, 3 s); after
/// `PARALLEL_AFTER_FAILURES` (2) failures it dials every manager it knows at
/// once, after backoffs of 0.1 and 0.2 s; the first live, reachable one
/// answers within a round trip. Plus the in-flight slack.
pub fn session_reconnect() -> Duration {
    use jujud::core::agent::role::{OPEN_BACKOFF_MIN_MS, OPEN_TIMEOUT_MS, PARALLEL_AFTER_FAILURES};
    let failures = u64::from(PARALLEL_AFTER_FAILURES);
    let backoffs = OPEN_BACKOFF_MIN_MS * ((1 << failures) - 1);
    crate::cluster::SESSION_IDLE_TIMEOUT
        + Duration::from_millis(failures * OPEN_TIMEOUT_MS + backoffs + IN_FLIGHT_SLACK_MS)
}

impl Bounds {
    /// The bounds for `members` nodes, `managers` of them, running `timing`.
    pub fn new(timing: &Timing, members: usize, managers: usize) -> Bounds {
        let ms = Duration::from_millis;
        let n = members.max(2) as u64;
        let probe = ms(timing.probe_period_ms);
        // A suspicion nobody confirms lasts longest (dynamic suspicion).
        let suspect = ms(timing.longest_suspicion_ms(members));
        let slack = ms(IN_FLIGHT_SLACK_MS);
        let stretch = 1 + timing.health_max;
        let log2_n = u64::from(64 - (n - 1).leading_zeros());
        let spread = ms(timing.gossip_period_ms) * (log2_n + DISSEMINATION_SLACK_ROUNDS) as u32;
        let first_probe = FIRST_PROBE_PERIODS.min(2 * (n - 1) - 1);
        // Some member probes the victim, waits one period for the ack (direct
        // and indirect), suspects it, declares it down, spreads the verdict.
        let detection_gossip = probe * (first_probe + 1) as u32 + suspect + spread + slack;
        // The observer's own round robin reaches the victim within 2(N-1)-1
        // periods (across a reshuffle); one more period to conclude, then the
        // suspicion timeout. foca arms that timeout even if the victim was
        // already suspect from gossip, so this needs no dissemination.
        let own_walk = probe * (2 * (n - 1)) as u32 + suspect;
        let detection = detection_gossip.max(own_walk + slack);
        // Under faults, every one of the observer's timeouts may be stretched.
        let detection_under_faults = own_walk * stretch + spread + slack;
        // A suspicion raised just before the window began resolves within one
        // probe period plus the suspicion timeout, stretched.
        let false_down_window = (probe + suspect) * stretch + slack;
        // After a heal: the rejoin loop fires within its backoff cap, a lost
        // peer is re-announced within another cap, suspicions from before the
        // heal resolve, and dead members leave every view. The join is the
        // same: a member missed by every join update still reaches everyone
        // in its own probe walk (a probe adds its sender to the receiver).
        let rejoin = ms(timing.rejoin_backoff_max_ms) * 2 + ms(timing.announce_period_ms);
        let convergence = rejoin + false_down_window + detection;
        let m = managers.max(2) as u64;
        let log2_m = u64::from(64 - (m - 1).leading_zeros());
        let state_sync = ms(ANTI_ENTROPY_PERIOD_MS) * (2 * log2_m + STATE_SYNC_SLACK_ROUNDS) as u32 + slack;
        // After the heal every view converges (`convergence`); the HA
        // keeper's owner then needs a controller to have been down a full
        // grace, at most `START_GRACE_MS` (30 s) for one started but never
        // joined; the heal's stop, the keeper's next tick adding a machine,
        // the provisioner's next tick starting it (two control ticks, two
        // provider round trips), the boot, and the new manager's join
        // (`convergence` again).
        let ha = {
            use jujud::core::control::CONTROL_TICK_MS;
            use jujud::core::control::keeper::START_GRACE_MS;
            let grace = crate::genesis::SIM_HA_GRACE_MS.max(START_GRACE_MS);
            let provider = Duration::from_micros(4 * crate::cluster::PROVIDER_LATENCY_MAX_US);
            ms(grace + 2 * CONTROL_TICK_MS + crate::cluster::INSTANCE_BOOT_MAX_MS) + provider
        };
        Bounds {
            session_reconnect: session_reconnect(),
            ha_restore: convergence * 2 + ha,
            join: convergence,
            convergence,
            detection,
            detection_gossip,
            detection_under_faults,
            false_down_window,
            state_sync,
        }
    }

    /// From the heal until every live manager holds the same state, when
    /// the largest replica holds `ops` operations: the views converge
    /// (`convergence`), then anti-entropy spreads every write
    /// (`state_sync`), one more period per `MAX_DELTA_OPS` operations.
    pub fn state_convergence(&self, ops: u64) -> Duration {
        let deltas = ops.div_ceil(MAX_DELTA_OPS as u64).saturating_sub(1);
        self.convergence + self.state_sync + Duration::from_millis(ANTI_ENTROPY_PERIOD_MS) * deltas as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_bounds_for_five_and_a_thousand() {
        let plain = Timing { suspicion_confirmations: 0, ..Timing::lan() };
        let five = Bounds::new(&plain, 5, 5);
        // Gossip: 8 periods (2*4-1=7, +1) * 0.5 + 0.5 + (3+6)*0.1 + 1 = 6.4 s;
        // own walk: 8 * 0.5 + 0.5 + 1 = 5.5 s.
        assert_eq!(five.detection, Duration::from_millis(6_400));
        assert_eq!(five.false_down_window, Duration::from_millis(10_000));
        // With dynamic suspicion on (the default), the longest suspicion
        // (3 x 0.5 s, no confirmation) is the one the bounds assume:
        // (0.5 + 1.5) * 9 + 1.
        let dynamic = Timing::lan();
        assert_eq!(dynamic.suspicion_confirmations, 1);
        assert_eq!(Bounds::new(&dynamic, 5, 5).false_down_window, Duration::from_millis(19_000));
        // 2 members: no third one could confirm, so the configured 0.5 s.
        assert_eq!(Bounds::new(&dynamic, 2, 2).false_down_window, Duration::from_millis(10_000));
        let big = Bounds::new(&plain, 1_000, 5);
        // Gossip: 13 periods * 0.5 + 0.5 + (10+6)*0.1 + 1 = 9.6 s;
        // own walk: 1998 * 0.5 + 0.5 + 1 = 1000.5 s.
        assert_eq!(big.detection_gossip, Duration::from_millis(9_600));
        assert_eq!(big.detection, Duration::from_millis(1_000_500));
        assert!(big.convergence > big.detection);
        // State: (2*3 + 40) rounds * 0.25 s + 1 s = 12.5 s after the views.
        assert_eq!(five.state_sync, Duration::from_millis(12_500));
        assert_eq!(five.state_convergence(45_000), five.convergence + Duration::from_millis(13_000));
        // 5 + 2 * 3 + 0.3 + 1 = 12.3 s.
        assert_eq!(five.session_reconnect, Duration::from_millis(12_300));
        // 2 * 29.4 + 30 + 2 + 1 + 0.2 = 92 s.
        assert_eq!(five.ha_restore, Duration::from_millis(92_000));
    }
}
