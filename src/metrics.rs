//! Prometheus metrics of a peer: the metric set, how the core's cumulative
//! [`Stats`] become monotonic counters, and a tiny `GET /metrics` endpoint.
//!
//! Why `prometheus-client`: it is the official Prometheus client for Rust
//! (github.com/prometheus/client_rust), it has no hidden global registry (the
//! [`Metrics`] value owns its registry, so tests and several nodes in one
//! process never share counters), and it encodes the text exposition format
//! that every Prometheus-compatible scraper reads.
//!
//! Why a hand-written HTTP/1.1 responder: one fixed endpoint does not justify
//! an HTTP stack (hyper, axum and their dependencies). It reads one bounded
//! request head under a timeout, answers, and closes; no keep-alive, no
//! bodies, no chunking.
//!
//! Connections are served concurrently, each with its own deadlines. At
//! [`MAX_HTTP_CONNECTIONS`], a new connection takes the place of the oldest
//! one that has not yet sent its request head (closed at once), so idle or
//! slow connections cannot keep a scraper out; only when every connection
//! is busy being answered is the new one closed.
//!
//! Must never panic on network input, never hold more than
//! [`MAX_HTTP_CONNECTIONS`] connections or [`MAX_REQUEST_HEAD_BYTES`] per
//! connection, and never let a counter go backwards. It must never change
//! node state: metrics are read-only observers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::timeout;

use crate::core::{MemberInfo, MemberState, Role, Stats};

/// The only path served; everything else is a 404.
pub const METRICS_PATH: &str = "/metrics";
/// Connections served at once. One more closes the oldest connection
/// still waiting for its request head, or, if all are being answered, is
/// itself closed without a word.
pub const MAX_HTTP_CONNECTIONS: usize = 16;
/// Longest request head (request line plus headers) read before giving up.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const REQUEST_HEAD_TIMEOUT_MS: u64 = 2_000;
/// How long a client may take to read the response.
pub const RESPONSE_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
pub const ACCEPT_RETRY_MS: u64 = 100;
/// Upper bounds of the datagram-size histogram, in bytes: small control
/// packets, then fine steps around the QUIC datagram limit (~1162-1414).
pub const DATAGRAM_SIZE_BUCKETS_BYTES: [f64; 11] = [
    64.0, 128.0, 256.0, 512.0, 768.0, 1024.0, 1100.0, 1150.0, 1200.0, 1300.0, 1400.0,
];

/// The text exposition format 0.0.4, for people and plain scrapers.
const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What `prometheus-client` really emits; sent when the scraper asks for it
/// (Prometheus does), so counter metadata is read correctly.
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    /// a join was refused.
    JoinRefused,
    /// an agent session sent a bad frame.
    SessionBadFrame,
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
}

impl DropReason {
    /// Every reason, in the order exported.
    pub const ALL: [DropReason; 22] = [DropReason::Malformed, DropReason::Oversized, DropReason::Spoofed, DropReason::Rejected, DropReason::OutputFull, DropReason::TooLargeForPath, DropReason::NoConnection, DropReason::QueueFull, DropReason::AnswerTimeout, DropReason::HandshakeFailed, DropReason::HandshakeTimeout, DropReason::HandshakeLimit, DropReason::HandshakePerSource, DropReason::HandshakeRetry, DropReason::JoinAnswerFailed, DropReason::JoinRefused, DropReason::SessionBadFrame, DropReason::SessionQueueFull, DropReason::SessionWriteTimeout, DropReason::StreamTimeout, DropReason::Unauthenticated, DropReason::UnauthorisedStream];

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
            DropReason::JoinRefused => "join_refused",
            DropReason::SessionBadFrame => "session_bad_frame",
            DropReason::SessionQueueFull => "session_queue_full",
            DropReason::SessionWriteTimeout => "session_write_timeout",
            DropReason::StreamTimeout => "stream_timeout",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::UnauthorisedStream => "unauthorised_stream",
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

/// Counters copied from the core's cumulative [`Stats`]: (name without the
/// `_total` the encoder appends, help, field).
const CORE_COUNTERS: [(&str, &str, StatField); 10] = [
    ("probes", "Probes started by the failure detector", |s| {
        s.probes
    }),
    (
        "probes_failed",
        "Probes that got no ack, direct or indirect",
        |s| s.probes_failed,
    ),
    ("suspicions", "Members newly seen as suspect", |s| {
        s.suspicions
    }),
    (
        "refutations",
        "Suspicions that turned out false (suspect came back alive)",
        |s| s.refutations,
    ),
    (
        "self_refutations",
        "Times this node refuted a suspicion about itself",
        |s| s.self_refutations,
    ),
    (
        "late_timers",
        "Timers delivered later than late_timer_ms (local stalls)",
        |s| s.late_timers,
    ),
    ("datagrams_in", "SWIM datagrams received", |s| {
        s.datagrams_in
    }),
    ("datagrams_out", "SWIM datagrams sent", |s| s.datagrams_out),
    (
        "datagram_bytes_in",
        "Bytes of SWIM datagrams received",
        |s| s.bytes_in,
    ),
    ("datagram_bytes_out", "Bytes of SWIM datagrams sent", |s| {
        s.bytes_out
    }),
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
        registry.register(
            "datagram_drops",
            "Datagrams dropped, by reason",
            drops.clone(),
        );
        let local_health_score = Gauge::default();
        registry.register(
            "local_health_score",
            "Local health score (0 is healthy; timeouts stretch by 1 + score)",
            local_health_score.clone(),
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
        registry.register("code_trims", "Trims of this agent's resident code pages", code_trims.clone());
        let code_trim_failures = Counter::default();
        registry.register("code_trim_failures", "Trims of resident code pages that failed", code_trim_failures.clone());
        Metrics {
            registry,
            members,
            code_trims,
            code_trim_failures,
            core_counters,
            drops,
            local_health_score,
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
                let count = members
                    .iter()
                    .filter(|m| m.state == state && m.identity.role == role)
                    .count();
                let gauge = self.members.get_or_create(&member_labels(state, role));
                gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        self.local_health_score.set(i64::from(health_score));
        raise_to(&self.max_datagram_bytes_out, stats.max_datagram_bytes_out);
    }

    /// The whole metric set in the text exposition format.
    pub fn encode(&self) -> String {
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
    gauge
        .inner()
        .fetch_max(value, std::sync::atomic::Ordering::Relaxed);
}

/// Why one HTTP exchange ended early; logged at debug, never fatal.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed before sending a full request head")]
    Closed,
    #[error("request head not complete after {REQUEST_HEAD_TIMEOUT_MS} ms")]
    HeadTimeout,
    #[error("request head longer than {MAX_REQUEST_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("response not written within {RESPONSE_WRITE_TIMEOUT_MS} ms")]
    WriteTimeout,
}

/// Serves `GET /metrics` on `listener` until the future is dropped (which
/// also aborts the connections in flight). `refresh` runs before each
/// encoding, on a tokio worker, so it must be quick (typically it copies
/// the node's stats into `metrics` with [`Metrics::update_from`]).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
) {
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(refresh);
    let mut connections = JoinSet::new();
    // Open connections, oldest first.
    let mut slots: std::collections::VecDeque<Slot> = std::collections::VecDeque::new();
    loop {
        while connections.try_join_next().is_some() {}
        slots.retain(|s| !s.task.is_finished());
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        if slots.len() >= MAX_HTTP_CONNECTIONS {
            let Some(oldest_silent) = slots.iter().position(|s| s.waiting.load(Ordering::Relaxed)) else {
                tracing::debug!(%peer, "metrics endpoint: every connection is being answered, closing");
                continue;
            };
            if let Some(evicted) = slots.remove(oldest_silent) {
                evicted.task.abort();
                tracing::debug!(%peer, "metrics endpoint: at the connection cap, closed the oldest one without a request");
            }
        }
        let (metrics, refresh) = (metrics.clone(), refresh.clone());
        let waiting = Arc::new(AtomicBool::new(true));
        let flag = waiting.clone();
        let task = connections.spawn(async move {
            if let Err(e) = answer(stream, &metrics, refresh.as_ref(), &flag).await {
                tracing::debug!(%peer, error = %e, "metrics endpoint: request failed");
            }
        });
        slots.push_back(Slot { task, waiting });
    }
}

/// One open connection: its task, and whether it still waits for a head.
struct Slot {
    task: AbortHandle,
    waiting: Arc<AtomicBool>,
}

/// One exchange: read the head, write one response, close.
async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    refresh: &(dyn Fn() + Send + Sync),
    waiting: &AtomicBool,
) -> Result<(), HttpError> {
    let head_timeout = Duration::from_millis(REQUEST_HEAD_TIMEOUT_MS);
    let head = timeout(head_timeout, read_head(&mut stream))
        .await
        .map_err(|_| HttpError::HeadTimeout)?;
    // From here on it is being answered: no longer the one to make room.
    waiting.store(false, Ordering::Relaxed);
    let (response, outcome) = match head {
        Ok(head) => (respond(&parse_request(&head), metrics, refresh), Ok(())),
        Err(HttpError::HeadTooLarge) => (
            response("431 Request Header Fields Too Large", CONTENT_TYPE_TEXT, ""),
            Err(HttpError::HeadTooLarge),
        ),
        Err(e) => return Err(e),
    };
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    timeout(Duration::from_millis(RESPONSE_WRITE_TIMEOUT_MS), write)
        .await
        .map_err(|_| HttpError::WriteTimeout)??;
    outcome
}

/// Reads until the blank line that ends a request head, at most
/// [`MAX_REQUEST_HEAD_BYTES`]. Returns the head without the blank line.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HttpError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() >= MAX_REQUEST_HEAD_BYTES {
            return Err(HttpError::HeadTooLarge);
        }
    }
}

/// Where the head ends: the first empty line (CRLF or bare LF).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What we need from a request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// `GET /metrics` (a query string is ignored).
    wants_metrics: bool,
    /// The `Accept` header names the OpenMetrics format.
    accepts_openmetrics: bool,
}

fn parse_request(head: &[u8]) -> Request {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let mut request_line = lines.next().unwrap_or("").split_ascii_whitespace();
    let method = request_line.next();
    let path = request_line
        .next()
        .map(|t| t.split('?').next().unwrap_or(t));
    let accepts_openmetrics = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    });
    Request {
        wants_metrics: method == Some("GET") && path == Some(METRICS_PATH),
        accepts_openmetrics,
    }
}

fn respond(request: &Request, metrics: &Metrics, refresh: &(dyn Fn() + Send + Sync)) -> Vec<u8> {
    if !request.wants_metrics {
        return response("404 Not Found", CONTENT_TYPE_TEXT, "not found\n");
    }
    refresh();
    let content_type = if request.accepts_openmetrics {
        CONTENT_TYPE_OPENMETRICS
    } else {
        CONTENT_TYPE_TEXT
    };
    response("200 OK", content_type, &metrics.encode())
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Identity, NodeId};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn member(id: u64, role: Role, state: MemberState) -> MemberInfo {
        let addr = "127.0.0.1:7070".parse().unwrap();
        MemberInfo {
            identity: Identity {
                id: NodeId(id),
                addr,
                role,
                generation: 1,
            },
            state,
            incarnation: 0,
        }
    }

    /// The value of the sample line that starts with `series ` exactly.
    fn sample(text: &str, series: &str) -> Option<f64> {
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
            datagrams_in: n,
            datagrams_out: n,
            bytes_in: n * 100,
            bytes_out: n * 100,
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
            "jujud_datagrams_in_total",
            "jujud_datagrams_out_total",
            "jujud_datagram_bytes_in_total",
            "jujud_datagram_bytes_out_total",
            "jujud_local_health_score",
            "jujud_max_datagram_bytes_out",
            "jujud_datagram_out_size_bytes_bucket",
        ] {
            assert!(
                sample(&text, name).is_some() || text.contains(&format!("{name}{{")),
                "{name} missing:\n{text}"
            );
        }
        assert_eq!(
            sample(&text, r#"jujud_members{state="alive",role="manager"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"jujud_members{state="suspect",role="agent"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"jujud_members{state="left",role="agent"}"#),
            Some(0.0)
        );
        for reason in DropReason::ALL {
            let series = format!("jujud_datagram_drops_total{{reason=\"{}\"}}", reason.as_str());
            assert!(sample(&text, &series).is_some(), "{series} missing");
        }
        assert_eq!(
            sample(&text, r#"jujud_datagram_drops_total{reason="spoofed"}"#),
            Some(3.0)
        );
        assert_eq!(sample(&text, "jujud_local_health_score"), Some(2.0));
        assert_eq!(sample(&text, "jujud_max_datagram_bytes_out"), Some(1000.0));
        assert_eq!(
            sample(
                &text,
                r#"jujud_datagram_out_size_bytes_bucket{le="1024.0"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"jujud_datagram_out_size_bytes_bucket{le="768.0"}"#),
            Some(0.0)
        );
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
        assert_eq!(
            sample(&text, r#"jujud_datagram_drops_total{reason="malformed"}"#),
            Some(10.0)
        );
        // Runtime drops add to the same family without disturbing the core's.
        m.count_drop(DropReason::QueueFull);
        m.count_drop(DropReason::Malformed);
        m.update_from(&stats(2), &[], 0);
        let text = m.encode();
        assert_eq!(
            sample(&text, r#"jujud_datagram_drops_total{reason="queue_full"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"jujud_datagram_drops_total{reason="malformed"}"#),
            Some(11.0)
        );
    }

    #[test]
    fn member_gauges_fall_back_to_zero() {
        let m = Metrics::new();
        m.update_from(
            &Stats::default(),
            &[member(1, Role::Manager, MemberState::Suspect)],
            0,
        );
        m.update_from(
            &Stats::default(),
            &[member(1, Role::Manager, MemberState::Down)],
            0,
        );
        let text = m.encode();
        assert_eq!(
            sample(&text, r#"jujud_members{state="suspect",role="manager"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, r#"jujud_members{state="down",role="manager"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn request_heads_are_parsed_leniently() {
        let r = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\naccept: application/openmetrics-text;version=1.0.0");
        assert_eq!(
            r,
            Request {
                wants_metrics: true,
                accepts_openmetrics: true
            }
        );
        assert!(!parse_request(b"POST /metrics HTTP/1.1").wants_metrics);
        assert!(!parse_request(b"GET /metricsx HTTP/1.1").wants_metrics);
        assert!(!parse_request(b"\xff\xfe garbage").wants_metrics);
        assert!(!parse_request(b"").wants_metrics);
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nrest"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// Sends `request` and reads until the server closes. Errors (a reset
    /// after an early close) yield what was read so far.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply).await;
        String::from_utf8_lossy(&reply).into_owned()
    }

    async fn start(
        refreshes: Arc<AtomicUsize>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let task = tokio::spawn(serve(listener, metrics, move || {
            let n = refreshes.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            m.update_from(
                &Stats {
                    probes: n * 7,
                    ..Stats::default()
                },
                &[],
                0,
            );
        }));
        (addr, task)
    }

    const GUARD: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn serves_metrics_over_tcp() {
        let refreshes = Arc::new(AtomicUsize::new(0));
        let (addr, task) = start(refreshes.clone()).await;
        let reply = timeout(
            GUARD,
            exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await
        .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(
            reply.contains("Content-Type: text/plain; version=0.0.4"),
            "{reply}"
        );
        assert!(reply.contains("\r\n\r\n# HELP"), "{reply}");
        assert_eq!(sample(&reply, "jujud_probes_total"), Some(7.0));
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));

        let reply = timeout(
            GUARD,
            exchange(
                addr,
                b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
            ),
        )
        .await
        .unwrap();
        assert!(
            reply.contains("Content-Type: application/openmetrics-text"),
            "{reply}"
        );
        assert_eq!(sample(&reply, "jujud_probes_total"), Some(14.0));

        let reply = timeout(GUARD, exchange(addr, b"GET /other HTTP/1.1\r\n\r\n"))
            .await
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
        assert_eq!(
            refreshes.load(Ordering::SeqCst),
            2,
            "refresh runs only for /metrics"
        );
        task.abort();
    }

    #[tokio::test]
    async fn oversized_head_is_cut_off() {
        let (addr, task) = start(Arc::new(AtomicUsize::new(0))).await;
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        request.resize(4 * MAX_REQUEST_HEAD_BYTES, b'a');
        let reply = timeout(GUARD, exchange(addr, &request))
            .await
            .expect("server must close");
        assert!(!reply.contains("200 OK"), "{reply}");
        // The server is still serving afterwards.
        let reply = timeout(GUARD, exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"))
            .await
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        task.abort();
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_limit_do_not_block_a_scrape() {
        let (addr, task) = start(Arc::new(AtomicUsize::new(0))).await;
        let mut idle = Vec::new();
        for _ in 0..2 * MAX_HTTP_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Accepted after 32 idle ones: it takes the place of the oldest.
        let reply = timeout(GUARD, exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"))
            .await
            .expect("a scrape answers while idle connections are open");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        // The oldest idle connections were closed to make room: they read EOF.
        let mut byte = [0u8; 1];
        let n = timeout(GUARD, idle[0].read(&mut byte)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "the oldest idle connection was closed");
        drop(idle);
        task.abort();
    }
}
