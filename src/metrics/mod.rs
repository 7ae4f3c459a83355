//! Prometheus metrics of a peer: the metric set, and how the core's
//! cumulative [`Stats`] become monotonic counters. The tiny `GET /metrics`
//! endpoint that serves them is [`http`] (re-exported as [`serve`]).
//!
//! Why `prometheus-client`: it is the official Prometheus client for Rust
//! (github.com/prometheus/client_rust), it has no hidden global registry (the
//! [`Metrics`] value owns its registry, so tests and several nodes in one
//! process never share counters), and it encodes the text exposition format
//! that every Prometheus-compatible scraper reads.
//!
//! Must never let a counter go backwards, and never change node state:
//! metrics are read-only observers.

pub mod heap;
pub mod http;

pub use http::{
    ACCEPT_RETRY_MS, MAX_HTTP_CONNECTIONS, MAX_REQUEST_HEAD_BYTES, METRICS_PATH,
    REQUEST_HEAD_TIMEOUT_MS, RESPONSE_WRITE_TIMEOUT_MS, serve,
};

use std::sync::Mutex;

use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::{MemberInfo, MemberState, Role, Stats};

/// Upper bounds of the datagram-size histogram, in bytes: small control
/// packets, then fine steps around the QUIC datagram limit (~1162-1414).
pub const DATAGRAM_SIZE_BUCKETS_BYTES: [f64; 11] =
    [64.0, 128.0, 256.0, 512.0, 768.0, 1024.0, 1100.0, 1150.0, 1200.0, 1300.0, 1400.0];

/// Why a datagram, stream or connection was dropped: the `reason` label
/// of `jujud_datagram_drops_total`. The core's reasons come from
/// [`Stats`]; the runtime counts the rest through [`Metrics::count_drop`].
/// Every reason is exported (at 0) from the start, so that dashboards and
/// `rate()` see the series before the first drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// the core: undecodable.
    Malformed,
    /// the core: over the datagram bound.
    Oversized,
    /// the core: sender claimed another id or role than its certificate.
    Spoofed,
    /// the core (foca) or the API: refused.
    Rejected,
    /// the core: its output queue was full.
    OutputFull,
    /// too large for the path.
    TooLargeForPath,
    /// no connection to the peer.
    NoConnection,
    /// the driver's inbox was full.
    QueueFull,
    /// no answer in time.
    AnswerTimeout,
    /// a QUIC handshake failed.
    HandshakeFailed,
    /// a QUIC handshake took too long.
    HandshakeTimeout,
    /// over the handshake limit.
    HandshakeLimit,
    /// one source over its share of the handshake limit.
    HandshakePerSource,
    /// a handshake answered with a stateless Retry (address unproven).
    HandshakeRetry,
    /// a join answer could not be sent.
    JoinAnswerFailed,
    /// an identify (who holds this address?) not started: one to the same
    /// address, or `MAX_IDENTIFY_IN_FLIGHT`, were in flight.
    IdentifyInFlight,
    /// a join was refused.
    JoinRefused,
    /// a join was asked to come back: every admission slot was taken.
    JoinBusy,
    /// an agent session sent a bad frame.
    SessionBadFrame,
    /// an agent session open was refused by the login rate limit.
    SessionLoginRateLimited,
    /// an agent session's queue was full.
    SessionQueueFull,
    /// an agent session write took too long.
    SessionWriteTimeout,
    /// a stream took too long.
    StreamTimeout,
    /// no valid certificate.
    Unauthenticated,
    /// a stream its role may not open.
    UnauthorisedStream,
    /// the dashboard: over its connection or event-stream bound.
    DashboardFull,
    /// the dashboard: a TLS handshake failed or took too long.
    DashboardTls,
    /// the dashboard: an unknown, used or expired login link, or an
    /// unknown or expired session cookie.
    DashboardUnauthorised,
    /// an agent's log line over its rate, naming no unit, or in a bad frame.
    LogLines,
}

impl DropReason {
    /// Every reason, in the order exported.
    pub const ALL: [DropReason; 29] = [
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::Spoofed,
        DropReason::Rejected,
        DropReason::OutputFull,
        DropReason::TooLargeForPath,
        DropReason::NoConnection,
        DropReason::QueueFull,
        DropReason::AnswerTimeout,
        DropReason::HandshakeFailed,
        DropReason::HandshakeTimeout,
        DropReason::HandshakeLimit,
        DropReason::HandshakePerSource,
        DropReason::HandshakeRetry,
        DropReason::JoinAnswerFailed,
        DropReason::IdentifyInFlight,
        DropReason::JoinRefused,
        DropReason::JoinBusy,
        DropReason::SessionBadFrame,
        DropReason::SessionLoginRateLimited,
        DropReason::SessionQueueFull,
        DropReason::SessionWriteTimeout,
        DropReason::StreamTimeout,
        DropReason::Unauthenticated,
        DropReason::UnauthorisedStream,
        DropReason::DashboardFull,
        DropReason::DashboardTls,
        DropReason::DashboardUnauthorised,
        DropReason::LogLines,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::Spoofed => "spoofed",
            DropReason::Rejected => "rejected",
            DropReason::OutputFull => "output_full",
            DropReason::TooLargeForPath => "too_large_for_path",
            DropReason::NoConnection => "no_connection",
            DropReason::QueueFull => "queue_full",
            DropReason::AnswerTimeout => "answer_timeout",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::HandshakeTimeout => "handshake_timeout",
            DropReason::HandshakeLimit => "handshake_limit",
            DropReason::HandshakePerSource => "handshake_per_source",
            DropReason::HandshakeRetry => "handshake_retry",
            DropReason::JoinAnswerFailed => "join_answer_failed",
            DropReason::IdentifyInFlight => "identify_in_flight",
            DropReason::JoinRefused => "join_refused",
            DropReason::JoinBusy => "join_busy",
            DropReason::SessionBadFrame => "session_bad_frame",
            DropReason::SessionLoginRateLimited => "session_login_rate_limited",
            DropReason::SessionQueueFull => "session_queue_full",
            DropReason::SessionWriteTimeout => "session_write_timeout",
            DropReason::StreamTimeout => "stream_timeout",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::UnauthorisedStream => "unauthorised_stream",
            DropReason::DashboardFull => "dashboard_full",
            DropReason::DashboardTls => "dashboard_tls",
            DropReason::DashboardUnauthorised => "dashboard_unauthorised",
            DropReason::LogLines => "log_lines",
        }
    }
}

const MEMBER_STATES: [MemberState; 5] = [
    MemberState::Alive,
    MemberState::Suspect,
    MemberState::Down,
    MemberState::Left,
    MemberState::Replaced,
];
const ROLES: [Role; 2] = [Role::Manager, Role::Agent];

type StatField = fn(&Stats) -> u64;
type MemberLabels = [(&'static str, &'static str); 2];
type DropLabels = [(&'static str, &'static str); 1];

/// A bounded part of a manager's memory, reported as
/// `jujud_memory_part_bytes{part}` (the rest of the heap is the state
/// document, whose size has no cheap count, and the runtime's buffers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryPart {
    /// Operations kept for anti-entropy (`Replica::retained`).
    RetainedOps,
    /// Status history entries (`runtime::history`).
    StatusHistory,
    /// Agents' log lines kept for `juju debug-log` (`runtime::logs::hub`).
    LogRing,
}

impl MemoryPart {
    pub const ALL: [MemoryPart; 3] =
        [MemoryPart::RetainedOps, MemoryPart::StatusHistory, MemoryPart::LogRing];

    pub fn as_str(self) -> &'static str {
        match self {
            MemoryPart::RetainedOps => "retained_ops",
            MemoryPart::StatusHistory => "status_history",
            MemoryPart::LogRing => "log_ring",
        }
    }
}

/// Counters copied from the core's cumulative [`Stats`]: (name without the
/// `_total` the encoder appends, help, field).
const CORE_COUNTERS: [(&str, &str, StatField); 21] = [
    ("probes", "Probes started by the failure detector", |s| s.probes),
    ("probes_failed", "Probes that got no ack, direct or indirect", |s| s.probes_failed),
    ("suspicions", "Members newly seen as suspect", |s| s.suspicions),
    ("refutations", "Suspicions that turned out false (suspect came back alive)", |s| {
        s.refutations
    }),
    ("self_refutations", "Times this node refuted a suspicion about itself", |s| {
        s.self_refutations
    }),
    ("late_timers", "Timers delivered later than late_timer_ms (local stalls)", |s| s.late_timers),
    (
        "suspicion_confirmations",
        "Other members' suspicions that confirmed one of this node's and brought its verdict earlier",
        |s| s.suspicion_confirmations,
    ),
    (
        "suspects_probed",
        "Suspects probed out of turn because no verdict on them had reached this node",
        |s| s.suspects_probed,
    ),
    (
        "gossip_joins_retired",
        "Joins dropped from the gossip backlog unsent: peers' gossip had brought them back enough times",
        |s| s.joins_retired,
    ),
    ("datagrams_in", "SWIM datagrams received", |s| s.datagrams_in),
    ("datagrams_out", "SWIM datagrams sent", |s| s.datagrams_out),
    ("datagram_bytes_in", "Bytes of SWIM datagrams received", |s| s.bytes_in),
    ("datagram_bytes_out", "Bytes of SWIM datagrams sent", |s| s.bytes_out),
    ("membership_exchanges_in", "Membership exchanges (push-pull) merged", |s| s.exchanges_in),
    ("membership_exchanges_out", "Membership exchanges (push-pull) sent", |s| s.exchanges_out),
    (
        "membership_exchanges_refused",
        "Membership exchanges refused: oversized, undecodable, revoked or spoofed",
        |s| s.exchanges_refused,
    ),
    ("state_messages_in", "Replication messages received from other managers", |s| s.state_msgs_in),
    ("state_messages_out", "Replication messages sent to other managers", |s| s.state_msgs_out),
    ("state_ops_applied", "Operations from other managers applied here", |s| s.state_ops_applied),
    (
        "state_full_sent",
        "Full states sent to a peer that lacked operations no longer retained here",
        |s| s.state_full_sent,
    ),
    ("state_full_merged", "Full states from a peer merged here", |s| s.state_full_merged),
];

/// Drops counted by the core, by reason label.
const CORE_DROPS: [(DropReason, StatField); 5] = [
    (DropReason::Malformed, |s| s.dropped_malformed),
    (DropReason::Oversized, |s| s.dropped_oversized),
    (DropReason::Spoofed, |s| s.dropped_spoofed),
    (DropReason::Rejected, |s| s.dropped_rejected),
    (DropReason::OutputFull, |s| s.dropped_output_full),
];

/// The metric set of one peer, with its own registry. Share it as
/// `Arc<Metrics>`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    /// Owns the descriptors; encoded on every scrape.
    registry: Registry,
    /// `jujud_members{state,role}`: how many members this node sees per
    /// state and role; all 8 series always exist.
    members: Family<MemberLabels, Gauge>,
    /// Counters fed from [`Stats`], each with the field it copies.
    core_counters: Vec<(StatField, Counter)>,
    /// `jujud_datagram_drops_total{reason}`, fed by the core and the runtime.
    drops: Family<DropLabels, Counter>,
    /// `jujud_local_health_score`: Lifeguard's local-health multiplier.
    local_health_score: Gauge,
    /// `jujud_heap_bytes{kind}`: jemalloc's counts, read at each scrape;
    /// registered only where jemalloc is the allocator ([`heap::enable`]).
    heap: Option<Family<DropLabels, Gauge>>,
    /// `jujud_memory_part_bytes{part}`: what each bounded part of a manager
    /// holds, as that part counts it ([`MemoryPart`]).
    memory_parts: Family<DropLabels, Gauge>,
    /// `jujud_max_datagram_bytes_out`: the largest datagram sent so far.
    max_datagram_bytes_out: Gauge,
    /// `jujud_datagram_out_size_bytes`: the size of each datagram sent.
    datagram_out_size: Histogram,
    /// `jujud_code_trims_total` and `jujud_code_trim_failures_total`: an
    /// agent's trims of its resident code (`runtime::trim`).
    pub code_trims: Counter,
    pub code_trim_failures: Counter,
    /// The [`Stats`] seen by the last `update_from`, to turn the core's
    /// cumulative values into counter increments.
    last_stats: Mutex<Stats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jujud");
        let members = Family::<MemberLabels, Gauge>::default();
        for state in MEMBER_STATES {
            for role in ROLES {
                members.get_or_create(&member_labels(state, role)).set(0);
            }
        }
        registry.register(
            "members",
            "Members seen by this node, by state and role",
            members.clone(),
        );
        let core_counters = CORE_COUNTERS
            .iter()
            .map(|&(name, help, field)| {
                let counter = Counter::default();
                registry.register(name, help, counter.clone());
                (field, counter)
            })
            .collect();
        let drops = Family::<DropLabels, Counter>::default();
        for reason in DropReason::ALL {
            // Creating the series is the point; the guard is not needed.
            let _ = drops.get_or_create(&[("reason", reason.as_str())]);
        }
        registry.register("datagram_drops", "Datagrams dropped, by reason", drops.clone());
        let local_health_score = Gauge::default();
        registry.register(
            "local_health_score",
            "Local health score (0 is healthy; timeouts stretch by 1 + score)",
            local_health_score.clone(),
        );
        let heap = heap::read().map(|_| {
            let family = Family::<DropLabels, Gauge>::default();
            registry.register(
                "heap_bytes",
                "Heap bytes as jemalloc counts them, by kind (allocated: live objects; active: \
                 pages holding some; resident: all the allocator keeps in memory)",
                family.clone(),
            );
            family
        });
        let memory_parts = Family::<DropLabels, Gauge>::default();
        for part in MemoryPart::ALL {
            let _ = memory_parts.get_or_create(&[("part", part.as_str())]);
        }
        registry.register(
            "memory_part_bytes",
            "Bytes held by a manager's bounded parts, as each counts them (retained_ops: \
             MAX_RETAINED_OPS_BYTES; status_history: MAX_STATUS_LOG_BYTES; log_ring: \
             the agents' log lines kept for debug-log)",
            memory_parts.clone(),
        );
        let max_datagram_bytes_out = Gauge::default();
        registry.register(
            "max_datagram_bytes_out",
            "Largest datagram sent, in bytes",
            max_datagram_bytes_out.clone(),
        );
        let datagram_out_size = Histogram::new(DATAGRAM_SIZE_BUCKETS_BYTES);
        registry.register(
            "datagram_out_size_bytes",
            "Size of each datagram sent, in bytes",
            datagram_out_size.clone(),
        );
        let code_trims = Counter::default();
        registry.register(
            "code_trims",
            "Trims of this agent's resident code pages",
            code_trims.clone(),
        );
        let code_trim_failures = Counter::default();
        registry.register(
            "code_trim_failures",
            "Trims of resident code pages that failed",
            code_trim_failures.clone(),
        );
        Metrics {
            registry,
            members,
            code_trims,
            code_trim_failures,
            core_counters,
            drops,
            local_health_score,
            heap,
            memory_parts,
            max_datagram_bytes_out,
            datagram_out_size,
            last_stats: Mutex::new(Stats::default()),
        }
    }

    /// Counts one datagram (or stream, or connection) dropped by the
    /// runtime.
    /// Not named `drop`: through `Arc<Metrics>` that name resolves to
    /// `Drop::drop` of the `Arc` and does not compile.
    pub fn count_drop(&self, reason: DropReason) {
        self.drops.get_or_create(&[("reason", reason.as_str())]).inc();
    }

    /// Records the size of one datagram the runtime sent.
    pub fn observe_datagram_out(&self, bytes: usize) {
        self.datagram_out_size.observe(bytes as f64);
        raise_to(&self.max_datagram_bytes_out, bytes as u64);
    }

    /// Brings the metrics up to date with the core. `stats` is cumulative:
    /// each counter grows by the difference from the previous call. If a
    /// value went down (the core was rebuilt and its stats restarted at
    /// zero), the new value is counted as growth since that restart, so a
    /// counter never goes backwards. `members` is the node's member list.
    pub fn update_from(&self, stats: &Stats, members: &[MemberInfo], health_score: u32) {
        {
            let mut last = self.last_stats.lock().unwrap_or_else(|e| e.into_inner());
            for (field, counter) in &self.core_counters {
                counter.inc_by(increment(field(&last), field(stats)));
            }
            for (reason, field) in CORE_DROPS {
                let counter = self.drops.get_or_create(&[("reason", reason.as_str())]);
                counter.inc_by(increment(field(&last), field(stats)));
            }
            *last = stats.clone();
        }
        for state in MEMBER_STATES {
            for role in ROLES {
                let count =
                    members.iter().filter(|m| m.state == state && m.identity.role == role).count();
                let gauge = self.members.get_or_create(&member_labels(state, role));
                gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        self.local_health_score.set(i64::from(health_score));
        raise_to(&self.max_datagram_bytes_out, stats.max_datagram_bytes_out);
    }

    /// What `part` holds now, in bytes.
    pub fn set_memory_part(&self, part: MemoryPart, bytes: usize) {
        let gauge = self.memory_parts.get_or_create(&[("part", part.as_str())]);
        gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The whole metric set in the text exposition format.
    pub fn encode(&self) -> String {
        if let (Some(family), Some(h)) = (&self.heap, heap::read()) {
            for (kind, value) in heap::HeapStats::KINDS.iter().zip(h.values()) {
                family
                    .get_or_create(&[("kind", kind)])
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::new();
        if let Err(e) = encode_text(&mut text, &self.registry) {
            // Writing to a String cannot fail; keep whatever was encoded.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        text
    }
}

fn member_labels(state: MemberState, role: Role) -> MemberLabels {
    [("state", state.as_str()), ("role", role.as_str())]
}

/// How much a counter grows when the cumulative source moves from `last`
/// to `now`; a smaller `now` means the source restarted from zero.
fn increment(last: u64, now: u64) -> u64 {
    if now >= last { now - last } else { now }
}

/// Raises a max-gauge to `value` if it is larger; never lowers it.
fn raise_to(gauge: &Gauge, value: u64) {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    gauge.inner().fetch_max(value, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Identity, NodeId};

    fn member(id: u64, role: Role, state: MemberState) -> MemberInfo {
        let addr = "127.0.0.1:7070".parse().unwrap();
        MemberInfo {
            identity: Identity { id: NodeId(id), addr, role, generation: 1 },
            state,
            incarnation: 0,
        }
    }

    /// The value of the sample line that starts with `series ` exactly.
    pub(super) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split(' ').next()?.parse().ok())
    }

    fn stats(n: u64) -> Stats {
        Stats {
            probes: n,
            probes_failed: n,
            suspicions: n,
            refutations: n,
            self_refutations: n,
            late_timers: n,
            suspicion_confirmations: n,
            suspects_probed: n,
            joins_retired: n,
            datagrams_in: n,
            datagrams_out: n,
            bytes_in: n * 100,
            bytes_out: n * 100,
            state_full_sent: n,
            dropped_malformed: n,
            dropped_oversized: n,
            dropped_spoofed: n,
            dropped_rejected: n,
            dropped_output_full: n,
            max_datagram_bytes_out: 900,
            ..Stats::default()
        }
    }

    #[test]
    fn encode_names_every_metric_after_update() {
        let m = Metrics::new();
        let members = [
            member(1, Role::Manager, MemberState::Alive),
            member(2, Role::Manager, MemberState::Alive),
            member(3, Role::Agent, MemberState::Suspect),
        ];
        m.update_from(&stats(3), &members, 2);
        m.observe_datagram_out(1000);
        let text = m.encode();
        for name in [
            "jujud_probes_total",
            "jujud_probes_failed_total",
            "jujud_suspicions_total",
            "jujud_refutations_total",
            "jujud_self_refutations_total",
            "jujud_late_timers_total",
            "jujud_suspicion_confirmations_total",
            "jujud_suspects_probed_total",
            "jujud_gossip_joins_retired_total",
            "jujud_datagrams_in_total",
            "jujud_datagrams_out_total",
            "jujud_datagram_bytes_in_total",
            "jujud_datagram_bytes_out_total",
            "jujud_local_health_score",
            "jujud_max_datagram_bytes_out",
            "jujud_datagram_out_size_bytes_bucket",
            "jujud_state_messages_in_total",
            "jujud_state_messages_out_total",
            "jujud_state_ops_applied_total",
            "jujud_state_full_sent_total",
            "jujud_state_full_merged_total",
        ] {
            assert!(
                sample(&text, name).is_some() || text.contains(&format!("{name}{{")),
                "{name} missing:\n{text}"
            );
        }
        assert_eq!(sample(&text, r#"jujud_members{state="alive",role="manager"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"jujud_members{state="suspect",role="agent"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"jujud_members{state="left",role="agent"}"#), Some(0.0));
        for reason in DropReason::ALL {
            let series = format!("jujud_datagram_drops_total{{reason=\"{}\"}}", reason.as_str());
            assert!(sample(&text, &series).is_some(), "{series} missing");
        }
        assert_eq!(sample(&text, r#"jujud_datagram_drops_total{reason="spoofed"}"#), Some(3.0));
        assert_eq!(sample(&text, "jujud_local_health_score"), Some(2.0));
        assert_eq!(sample(&text, "jujud_state_full_sent_total"), Some(3.0));
        assert_eq!(sample(&text, "jujud_max_datagram_bytes_out"), Some(1000.0));
        assert_eq!(
            sample(&text, r#"jujud_datagram_out_size_bytes_bucket{le="1024.0"}"#),
            Some(1.0)
        );
        assert_eq!(sample(&text, r#"jujud_datagram_out_size_bytes_bucket{le="768.0"}"#), Some(0.0));
    }

    #[test]
    fn every_memory_part_is_exported_from_the_start_and_shows_what_was_set() {
        let m = Metrics::new();
        let text = m.encode();
        for part in MemoryPart::ALL {
            let line = format!("jujud_memory_part_bytes{{part=\"{}\"}} 0", part.as_str());
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
        m.set_memory_part(MemoryPart::RetainedOps, 8 << 20);
        m.set_memory_part(MemoryPart::RetainedOps, 3 << 20);
        let text = m.encode();
        assert!(text.contains("jujud_memory_part_bytes{part=\"retained_ops\"} 3145728"), "{text}");
    }

    #[test]
    fn counters_grow_by_deltas_and_never_go_backwards() {
        let m = Metrics::new();
        m.update_from(&stats(5), &[], 0);
        m.update_from(&stats(5), &[], 0);
        assert_eq!(sample(&m.encode(), "jujud_probes_total"), Some(5.0));
        m.update_from(&stats(8), &[], 0);
        let text = m.encode();
        assert_eq!(sample(&text, "jujud_probes_total"), Some(8.0));
        assert_eq!(sample(&text, "jujud_datagram_bytes_out_total"), Some(800.0));
        // The core restarted: its stats start again from zero.
        m.update_from(&stats(2), &[], 0);
        let text = m.encode();
        assert_eq!(sample(&text, "jujud_probes_total"), Some(10.0));
        assert_eq!(sample(&text, r#"jujud_datagram_drops_total{reason="malformed"}"#), Some(10.0));
        // Runtime drops add to the same family without disturbing the core's.
        m.count_drop(DropReason::QueueFull);
        m.count_drop(DropReason::Malformed);
        m.update_from(&stats(2), &[], 0);
        let text = m.encode();
        assert_eq!(sample(&text, r#"jujud_datagram_drops_total{reason="queue_full"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"jujud_datagram_drops_total{reason="malformed"}"#), Some(11.0));
    }

    #[test]
    fn member_gauges_fall_back_to_zero() {
        let m = Metrics::new();
        m.update_from(&Stats::default(), &[member(1, Role::Manager, MemberState::Suspect)], 0);
        m.update_from(&Stats::default(), &[member(1, Role::Manager, MemberState::Down)], 0);
        let text = m.encode();
        assert_eq!(sample(&text, r#"jujud_members{state="suspect",role="manager"}"#), Some(0.0));
        assert_eq!(sample(&text, r#"jujud_members{state="down",role="manager"}"#), Some(1.0));
    }
}
